//! The driver as a singleton bootstrap service on Envoy's main thread
//! (`role: driver`), the filter's roots on the worker threads only serving
//! (`role: worker`): the recipe that keeps polling, import, export and
//! validation off the threads that serve requests (README: "Driver on the
//! main thread").

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::ok;
use envoy_test::stack::{echo_config, expect_proxied, wait_status, Stack, ECHO};
use envoy_test::wait::{self, TIMEOUT};
use std::time::Duration;

/// The thread id in an Envoy log line: `[date time][tid][level][logger]`.
fn thread_of(line: &str) -> Option<u32> {
    line.split('[').nth(2)?.split(']').next()?.parse().ok()
}

/// CP down at start: the service imports and publishes; the workers, whose
/// plugin JSON holds nothing but their role, serve it. Exactly one root
/// ever drives, on the main thread (its thread id is the process id). The
/// CP's config then replaces the import on every worker.
#[test]
fn a_bootstrap_service_drives_on_the_main_thread_and_workers_serve() {
    let stack = Stack::new("service", false);
    stack.write_envelope("r1", &echo_config("r1"));
    let service = stack.importer_plugin().with_role("driver").to_json();
    let mut cfg = stack
        .envoy_config(&stack.importer_plugin())
        .service(&service)
        .log_levels("info", Some("wasm:debug"));
    if let Some(filter) = cfg.wasm.as_mut() {
        filter.plugin_json = r#"{"role": "worker"}"#.into();
    }
    let mut envoy = stack.start_envoy_config("service", cfg, &stack.store_env());
    ok(envoy.wait_log("imported revision r1", TIMEOUT));
    let r = ok(wait_status(&envoy, "/echo/first", 200, TIMEOUT));
    assert_eq!(r.text(), "echo_service /echo/first");
    for i in 0..10 {
        expect_proxied(&envoy, "GET", &format!("/echo/{i}"), &[], ECHO);
    }

    let r2 = gateway_config("r2", &[Route::new("v2", &["/v2"], ECHO)]);
    stack.cp.set_config(&r2);
    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision r2", TIMEOUT));
    ok(wait_status(&envoy, "/echo/x", 404, TIMEOUT));
    expect_proxied(&envoy, "GET", "/v2/x", &[], ECHO);
    // Longer than a driver lease: a worker that could drive would have.
    wait::holds_for("one driver", Duration::from_secs(3), || {
        match envoy.log_lines("now drives this process").len() {
            1 => Ok(()),
            n => Err(format!("{n} roots took the driver lease")),
        }
    });
    let drives = envoy.log_lines("now drives this process");
    let pid = envoy.process().pid();
    assert_eq!(
        drives.first().and_then(|l| thread_of(l)),
        Some(pid),
        "the driver runs on the main thread (tid = pid {pid}): {drives:?}"
    );
    // The workers' roots were configured on their own threads.
    let configured = envoy.log_lines("configured: import=");
    let elsewhere = configured
        .iter()
        .filter(|l| thread_of(l).is_some_and(|t| t != pid))
        .count();
    assert!(elsewhere >= 2, "roots on the workers: {configured:?}");
    envoy.check_alive().unwrap();
}

/// The filter as `role: worker` and no bootstrap service: nothing drives,
/// so the workers answer 503 and, 10 s after start, each of the filter's
/// root contexts (main thread and workers: they cannot agree without a
/// driver) says why in the log, once.
#[test]
fn workers_without_a_driver_say_so() {
    let stack = Stack::new("service-no-driver", true);
    let mut cfg = stack
        .envoy_config(&stack.importer_plugin())
        .log_levels("info", Some("wasm:debug"));
    if let Some(filter) = cfg.wasm.as_mut() {
        filter.plugin_json = r#"{"role": "worker"}"#.into();
    }
    let started = std::time::Instant::now();
    let mut envoy = stack.start_envoy_config("service-no-driver", cfg, &stack.store_env());
    ok(wait_status(&envoy, "/echo/1", 503, TIMEOUT));
    let line = ok(envoy.wait_log("no driver in this Envoy", Duration::from_secs(30)));
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "warned after {:?}: {line}",
        started.elapsed()
    );
    assert!(line.contains(r#"{"role": "driver"}"#), "{line}");
    // Once per root: the main thread's and the two workers'.
    wait::holds_for(
        "one warning per root",
        Duration::from_secs(2),
        || match envoy.log_lines("no driver in this Envoy").len() {
            1..=3 => Ok(()),
            n => Err(format!("{n} warnings")),
        },
    );
    assert_eq!(envoy.log_lines("now drives this process").len(), 0);
    envoy.check_alive().unwrap();
}
