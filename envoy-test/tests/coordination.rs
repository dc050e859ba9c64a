//! One poll per interval per process, whatever Envoy's thread count.
//! Needs ENVOY_BIN, S3S_FS_BIN and FALLBACK_CONFIG_WASM.

use envoy_test::stack::{expect_healthy, Stack, POLL_INTERVAL};
use envoy_test::wait::TIMEOUT;

/// Envoy runs `--concurrency 2`: three long-lived root contexts (main
/// thread + two workers), each ticking. Only the driver polls, so the CP
/// sees one request per interval, not three.
#[test]
fn one_cp_poll_per_interval_per_process() {
    let stack = Stack::new("one-poll-per-interval", true);
    let mut envoy = stack.start_envoy("importer", &stack.importer_plugin());
    if let Err(e) = envoy.wait_log("CP fetched revision r1", TIMEOUT) {
        panic!("{e}");
    }
    let before = stack.cp.request_count();
    let t0 = std::time::Instant::now();
    std::thread::sleep(POLL_INTERVAL * 8);
    let polls = stack.cp.request_count() - before;
    // Measured, not assumed: a loaded machine sleeps longer.
    let intervals = t0.elapsed().as_secs_f64() / POLL_INTERVAL.as_secs_f64();
    // The driver polls every interval (tick resolution 200 ms): one per
    // interval, ± 1. Three independent pollers would make three times that.
    assert!(
        (polls as f64 - intervals).abs() <= 1.5,
        "{polls} CP requests in {intervals:.2} poll intervals"
    );
    // Storage was never read: the CP answered.
    assert_eq!(envoy.upstream_rq_attempts("object_storage"), 0);
    // The host behaviours the process protocol relies on, as Envoy shows
    // them: one root took the driver record once (created by the CAS that
    // only an absent key passes), and timers run on the WASI monotonic
    // clock.
    let drivers = envoy.log_lines("now drives this process");
    assert_eq!(drivers.len(), 1, "{drivers:#?}");
    assert!(
        drivers[0].contains("timers on the host monotonic clock"),
        "{}",
        drivers[0]
    );
    assert!(envoy
        .log_lines("checks a shared-data CAS against absent keys")
        .is_empty());
    expect_healthy(&mut envoy);
}
