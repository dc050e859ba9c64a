//! Exporter scenarios: an Envoy with export on stores every newly applied
//! CP revision in the object store, which verifies the credentials:
//! s3s-fs (SigV4), Azurite (SharedKey, SAS) or the GCS stack (OAuth token
//! from a verified service-account JWT). Scenarios taking a `StoreKind` run
//! on every store (`on_every_store!`: tests `<scenario>::s3`, `::azure`,
//! `::gcs`); the others are S3-only: what they test does not depend on
//! the cloud.
//! Needs ENVOY_BIN, S3S_FS_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and
//! FALLBACK_CONFIG_WASM.

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::election::FilterStats;
use envoy_test::envelope::{now_unix, parse_rfc3339};
use envoy_test::envoy::log_line_time;
use envoy_test::on_every_store;
use envoy_test::plugin::PluginConfig;
use envoy_test::sha256;
use envoy_test::stack::{
    expect_healthy, expect_proxied, expect_store_auth_ok, wait_status, Stack, ECHO, POLL_INTERVAL,
    SECRET_KEY,
};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::{Duration, Instant};

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Exporter whose lease traffic stays out of this file's measurement
/// windows: with no other node, it takes the absent lease at once and
/// would renew only after 100 s. (Elections are tested in
/// `tests/election.rs`.)
fn quiet_exporter(stack: &Stack, node_id: &str) -> PluginConfig {
    let mut p = stack.exporter_plugin(node_id);
    p.lease_ttl_ms = Some(300_000);
    p.renew_interval_ms = Some(100_000);
    p
}

/// Scenario 1: the stored envelope has the right fields and the CP's bytes
/// (read back from the store by the harness).
fn exporter_stores_envelope_of_cp_config(kind: StoreKind) {
    let stack = Stack::on(kind, "export-envelope", true);
    let started = now_unix();
    let mut envoy = stack.start_envoy("exporter", &stack.exporter_plugin("node-export-1"));

    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    let env = ok(stack.wait_envelope("r1", TIMEOUT));
    ok(envoy.wait_log("exported revision r1", TIMEOUT));

    let served = stack.cp.config().expect("CP config");
    assert_eq!(env.format, serde_json::json!(2), "format");
    assert_eq!(env.version, "0.1.0", "version");
    assert_eq!(env.revision, "r1", "revision");
    assert_eq!(
        env.exporter, "node-export-1",
        "exporter must be the configured node_id"
    );
    assert_eq!(
        env.config_raw,
        served.trim(),
        "config must be the CP's bytes verbatim (not re-serialised)"
    );
    assert_eq!(
        env.sha256,
        sha256::hex(served.trim().as_bytes()),
        "sha256 of the config bytes"
    );
    let t = parse_rfc3339(&env.exported_at)
        .unwrap_or_else(|| panic!("exported_at {:?} is not RFC 3339", env.exported_at));
    assert!(
        env.exported_at.ends_with('Z') || env.exported_at.ends_with("+00:00"),
        "exported_at {:?} is not UTC",
        env.exported_at
    );
    assert!(
        t >= started - 2.0 && t <= now_unix() + 2.0,
        "exported_at {} is not recent (test started at {started})",
        env.exported_at
    );

    // The exporter serves traffic from the CP config meanwhile.
    ok(wait_status(&envoy, "/echo/a", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/a", &[], ECHO);
    assert!(envoy.upstream_rq_total("control_plane") >= 1);
    if kind == StoreKind::Gcs {
        // The upload went through the front with a token the endpoint
        // issued, typed as the filter sent it.
        let gcs = stack.store.gcs();
        let meta = gcs
            .front
            .meta(&stack.object_key())
            .expect("the front recorded the upload");
        assert_eq!(meta.content_type, "application/json");
        assert!(envoy.upstream_rq_total("gcp_oauth") >= 1);
    }
    expect_store_auth_ok(&stack);
    expect_healthy(&mut envoy);
}
on_every_store!(exporter_stores_envelope_of_cp_config);

/// Scenario 2: a new revision is exported; the same content under a new
/// ETag is not written again.
#[test]
fn exporter_writes_new_revision_and_skips_unchanged_content() {
    let stack = Stack::new("export-revisions", true);
    let mut envoy = stack.start_envoy("exporter", &quiet_exporter(&stack, "node-export-2"));
    ok(stack.wait_envelope("r1", TIMEOUT));

    let r2 = gateway_config(
        "r2",
        &[
            Route::new("echo", &["/echo"], ECHO),
            Route::new("v2", &["/v2"], ECHO),
        ],
    );
    stack.cp.set_config(&r2);
    let env = ok(stack.wait_envelope("r2", TIMEOUT));
    ok(envoy.wait_log("exported revision r2", TIMEOUT));
    assert_eq!(env.config_raw, r2.trim());
    assert_eq!(env.sha256, sha256::hex(r2.trim().as_bytes()));
    assert_eq!(env.exporter, "node-export-2");

    // Steady state after r2: remember what is stored and how many storage
    // requests the filter made.
    let bytes = stack.object();
    let mtime = stack.object_mtime();
    let storage_rq = envoy.upstream_rq_total("object_storage");
    let served_200 = stack.cp.count_status(200);

    // The CP re-publishes identical content under a new ETag.
    let new_etag = stack.cp.bump_etag();
    wait::until(
        "the filter to fetch the re-published config",
        TIMEOUT,
        || {
            if stack.cp.count_status(200) > served_200 {
                Ok(())
            } else {
                Err(format!("CP requests: {:?}", stack.cp.requests().last()))
            }
        },
    );
    wait::holds_for(
        "no storage request and no rewrite for identical content",
        POLL_INTERVAL * 5,
        || {
            let rq = envoy.upstream_rq_total("object_storage");
            if rq != storage_rq {
                return Err(format!(
                    "object_storage upstream_rq_total {storage_rq} -> {rq}"
                ));
            }
            if stack.object() != bytes {
                return Err("stored object changed".into());
            }
            let m = stack.object_mtime();
            if m != mtime {
                return Err(format!("object mtime changed {mtime:?} -> {m:?}"));
            }
            Ok(())
        },
    );
    let exports = envoy.log_lines("exported revision r2");
    assert_eq!(
        exports.len(),
        1,
        "revision r2 exported more than once:\n{}",
        exports.join("\n")
    );
    // The filter keeps polling after that (it is not stuck).
    let n = stack.cp.request_count();
    wait::until("more CP polls", TIMEOUT, || {
        if stack.cp.request_count() > n {
            Ok(())
        } else {
            Err(format!("{n} CP requests"))
        }
    });
    eprintln!(
        "info: CP answered {} x 304 (If-None-Match {} used)",
        stack.cp.count_status(304),
        new_etag
    );
    expect_healthy(&mut envoy);
}

/// A new exporter process finding the same content already stored does
/// not rewrite it, also once it leads (it may GET it once to compare).
#[test]
fn restarted_exporter_does_not_rewrite_unchanged_object() {
    let stack = Stack::new("export-restart", true);
    // Short lease: exporter-b takes over from the dead exporter-a quickly.
    let plugin = |node: &str| {
        let mut p = stack.exporter_plugin(node);
        p.lease_ttl_ms = Some(3000);
        p.renew_interval_ms = Some(1000);
        p
    };
    let mut first = stack.start_envoy("exporter-a", &plugin("node-a"));
    let env = ok(stack.wait_envelope("r1", TIMEOUT));
    assert_eq!(env.exporter, "node-a");
    expect_healthy(&mut first);
    first.stop();

    let bytes = stack.object();
    let mtime = stack.object_mtime();
    let mut second = stack.start_envoy("exporter-b", &plugin("node-b"));
    ok(second.wait_log("CP fetched revision r1", TIMEOUT));
    let unchanged = || {
        let m = stack.object_mtime();
        if stack.object() != bytes || m != mtime {
            Err(format!(
                "object rewritten by exporter-b: {:?}",
                stack
                    .envelope()
                    .map(|e| e.map(|e| (e.exporter, e.exported_at)))
            ))
        } else {
            Ok(())
        }
    };
    // It becomes the leader, so it may write; it must not.
    wait::until("exporter-b to lead", TIMEOUT, || {
        unchanged()?;
        match FilterStats::read(&second)? {
            s if s.is_leader == 1 => Ok(()),
            s => Err(format!("{s:?}")),
        }
    });
    wait::holds_for("stored object unchanged", POLL_INTERVAL * 6, unchanged);
    let s = ok(FilterStats::read(&second));
    assert_eq!(
        (s.is_leader, s.exports_total),
        (1, 0),
        "exporter-b leads and never wrote config.json: {s:?}"
    );
    assert!(second.log_lines("exported revision r1").is_empty());
    expect_healthy(&mut second);
}

/// `cluster_fallback_config_export_delay` postpones the export.
#[test]
fn export_waits_for_export_delay() {
    let stack = Stack::new("export-delay", true);
    let mut plugin = stack.exporter_plugin("node-delay");
    plugin.export_delay = 3;
    let mut envoy = stack.start_envoy("exporter", &plugin);
    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    let fetched = Instant::now();
    wait::holds_for(
        "no object during the export delay",
        Duration::from_millis(1500),
        || match stack.object() {
            None => Ok(()),
            Some(_) => Err("object already stored".into()),
        },
    );
    ok(stack.wait_envelope("r1", TIMEOUT));
    let waited = fetched.elapsed();
    assert!(
        waited >= Duration::from_millis(2000),
        "exported {waited:?} after the CP fetch, export_delay is 3 s"
    );
    expect_healthy(&mut envoy);
}

/// Scenario 7: wrong credentials (S3: another secret; Azure: another
/// account key; GCS: a service account whose key the token endpoint does
/// not trust) -> a clear failure line with the store's status and code (GCS:
/// the refused token request), nothing stored, no crash, traffic still
/// served from the CP config.
fn exporter_with_wrong_credentials_logs_the_store_error_and_keeps_serving(kind: StoreKind) {
    let stack = Stack::on(kind, "export-bad-credentials", true);
    let mut envoy = stack.start_envoy_with_env(
        "exporter",
        &stack.exporter_plugin("node-bad"),
        &stack.wrong_store_env(),
    );
    // The first storage request an exporter sends is the election's read
    // of the lease (GCS: the token request before it); whichever it is,
    // its failure line names the status and the store's code.
    let evidence = stack.store.wrong_credentials_evidence();
    let line = wait::until(
        &format!("a log line with all of {evidence:?}"),
        TIMEOUT,
        || {
            envoy
                .log_lines(evidence[evidence.len() - 1])
                .into_iter()
                .find(|l| evidence.iter().all(|e| l.contains(e)))
                .ok_or_else(|| format!("log tail:\n{}", envoy.log_tail(10)))
        },
    );
    eprintln!("info: {kind:?} with wrong credentials: {line}");
    assert!(
        stack.object().is_none() && stack.lease().is_none(),
        "an object was stored with wrong credentials"
    );
    assert!(envoy.log_lines("exported revision r1").is_empty());
    if kind == StoreKind::Gcs {
        // No token, no object request: the filter never sends one
        // unauthenticated.
        let gcs = stack.store.gcs();
        assert!(
            gcs.token.requests().iter().all(|r| r.status == 400),
            "{:?}",
            gcs.token.requests()
        );
        assert_eq!(gcs.front.requests().len(), 0, "{:?}", gcs.front.requests());
        assert_eq!(envoy.upstream_rq_total("object_storage"), 0);
    }
    ok(wait_status(&envoy, "/echo/b", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/b", &[], ECHO);
    expect_healthy(&mut envoy);
}
on_every_store!(exporter_with_wrong_credentials_logs_the_store_error_and_keeps_serving);

/// Export failures are retried with growing delays, and the export
/// succeeds once storage accepts the signature. The exporter first leads
/// (r1 stored); then s3s-fs rotates its secret and the CP publishes r2.
#[test]
fn export_failures_are_retried_with_backoff_until_storage_accepts() {
    let mut stack = Stack::new("export-retry", true);
    let mut envoy = stack.start_envoy("exporter", &quiet_exporter(&stack, "node-retry"));
    ok(stack.wait_envelope("r1", TIMEOUT));
    // s3s-fs now expects another secret than the one Envoy has.
    ok(stack.s3_mut().restart_with_secret("rotated-secret"));
    stack.cp.set_config(&envoy_test::stack::echo_config("r2"));
    let failures = wait::until("three failed export attempts", TIMEOUT, || {
        let lines = envoy.log_lines("export of revision r2 failed:");
        if lines.len() >= 3 {
            Ok(lines)
        } else {
            Err(format!("{} so far", lines.len()))
        }
    });
    for l in &failures {
        assert!(
            l.contains("403") && l.contains("SignatureDoesNotMatch"),
            "{l}"
        );
    }
    let t: Vec<f64> = failures[..3]
        .iter()
        .map(|l| log_line_time(l).unwrap_or_else(|| panic!("no time stamp in {l}")))
        .collect();
    let (gap1, gap2) = (t[1] - t[0], t[2] - t[1]);
    assert!(
        gap1 >= 0.8,
        "retried after {gap1:.2}s: no backoff\n{}",
        failures.join("\n")
    );
    assert!(
        gap2 > gap1 + 0.4,
        "retry delays {gap1:.2}s then {gap2:.2}s do not grow\n{}",
        failures.join("\n")
    );
    assert_eq!(ok(stack.envelope().expect("config.json")).revision, "r1");

    // Storage accepts the filter's secret again: the next retry succeeds.
    ok(stack.s3_mut().restart_with_secret(SECRET_KEY));
    let env = ok(stack.wait_envelope("r2", TIMEOUT));
    assert_eq!(env.exporter, "node-retry");
    ok(envoy.wait_log("exported revision r2", TIMEOUT));
    expect_healthy(&mut envoy);
}
