//! The readiness status (`status_path`) and the import metrics, through a
//! real Envoy: what the status answers before a config (503, `waiting`,
//! then `import_failed`), after an import (200, `storage`, the snapshot's
//! revision, version, export time and age) and after the CP answers (200,
//! `control_plane`); that a request for the status path is answered by the
//! filter and never reaches an upstream, whatever the client sends; and
//! the `wasmcustom.fallback_config.*` stats at each stage.
//! Needs ENVOY_BIN, S3S_FS_BIN and FALLBACK_CONFIG_WASM.

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::election::{ImportStats, CONFIG_SOURCE};
use envoy_test::envelope::{self, VERSION};
use envoy_test::envoy::Envoy;
use envoy_test::faults::Fault;
use envoy_test::http::Response;
use envoy_test::probe::{Answer, Probe, WORKER_LAG};
use envoy_test::stack::{
    expect_healthy, expect_proxied, wait_status, Stack, ECHO, OTHER, POLL_INTERVAL, STATUS_PATH,
};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::{Duration, SystemTime};

/// The keys every status answer has, before and after a config.
const KEYS: [&str; 8] = [
    "state",
    "source",
    "revision",
    "version",
    "exported_at",
    "age_s",
    "leader",
    "term",
];
/// The config-describing keys, `null` until a config is served.
const CONFIG_KEYS: [&str; 5] = ["source", "revision", "version", "exported_at", "age_s"];

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Checks the shape of a status body: exactly [`KEYS`], and for a 503
/// (no config yet) every config key `null`, not leading.
#[track_caller]
fn expect_shape(status: u16, body: &serde_json::Value, text: &str) {
    let keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("status body is not a JSON object: {text}"))
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = KEYS.to_vec();
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "status keys: {text}");
    if status == 503 {
        for k in CONFIG_KEYS {
            assert!(
                body[k].is_null(),
                "{k} should be null before a config: {text}"
            );
        }
        assert_eq!(body["leader"], false, "{text}");
        assert!(body["term"].is_null(), "{text}");
    }
}

/// A status request answered by the filter: the JSON body, its shape
/// checked, and no upstream involved.
#[track_caller]
fn status_of(r: &Response) -> serde_json::Value {
    assert!(
        r.header("x-upstream").is_none(),
        "the status request reached an upstream: {}",
        r.summary()
    );
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "status content type: {:?}",
        r.header("content-type")
    );
    let v = r.json();
    expect_shape(r.status, &v, &r.text());
    v
}

#[track_caller]
fn get_status(envoy: &Envoy, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let r = envoy
        .get(STATUS_PATH, headers)
        .unwrap_or_else(|e| panic!("GET {STATUS_PATH}: {e}"));
    let v = status_of(&r);
    (r.status, v)
}

/// The state of a status answer the probe saw, its shape checked.
#[track_caller]
fn state_of(a: &Answer) -> (u16, String) {
    let status = a
        .status
        .unwrap_or_else(|| panic!("status request failed: {}", a.summary()));
    assert!(a.upstream.is_none(), "reached an upstream: {}", a.summary());
    let v = a.json();
    expect_shape(status, &v, &a.body);
    (status, v["state"].as_str().unwrap_or("?").to_string())
}

/// CP down; the first attempt hangs past the storage timeout (1 s), the
/// second gets a 503, the third imports r1 (exported 100 s ago). The
/// status, probed all along, goes `waiting` (503) until the first attempt
/// failed, then `import_failed` (503), then `serving` (200) from
/// `storage` with the snapshot's revision, version, `exported_at` and
/// age; after the CP answers with r2, `serving` from `control_plane`. The
/// metrics follow: `config_source` 0 → 2 → 1, `cp_reachable` 0 → 1,
/// `import_attempts_total` 3 and `import_failures_total` 2,
/// `config_age_seconds` the snapshot's age, then the CP answer's.
#[test]
fn status_and_metrics_follow_waiting_import_failed_storage_then_control_plane() {
    let stack = Stack::with_faults(StoreKind::S3, "status-lifecycle", false);
    let age = Duration::from_secs(100);
    let written = SystemTime::now();
    let stored = stack.write_snapshot(VERSION, "r1", written - age);
    let exported_at = ok(envelope::parse(stored.as_bytes())).exported_at;
    let timeout = Duration::from_millis(1000);
    stack.faults().push_for(
        "config.json",
        Fault::hang(timeout + Duration::from_millis(500)),
    );
    stack.faults().push_for("config.json", Fault::unavailable());
    let mut p = stack.importer_plugin();
    p.status_path = Some(STATUS_PATH.into());
    p.storage_timeout_ms = timeout.as_millis() as u64;
    let mut envoy = stack.start_envoy("importer", &p);
    let probe = Probe::start(envoy.port(), STATUS_PATH, &[], Duration::from_millis(25));

    // Before anything was applied.
    wait::until("the CP to be found down", TIMEOUT, || {
        match envoy.log_lines("CP unavailable").len() {
            0 => Err("no `CP unavailable` yet".into()),
            _ => Ok(()),
        }
    });
    let early = ok(ImportStats::read(&envoy));
    assert_eq!(
        (
            early.config_source,
            early.cp_reachable,
            early.import_failures_total
        ),
        (0, 0, 0),
        "{early:?}"
    );

    ok(envoy.wait_log("imported revision r1 (version 0.1.0)", TIMEOUT));
    ok(probe.wait_for("three 200 status answers", 3, TIMEOUT, |a| {
        a.status == Some(200)
    }));
    let all = probe.stop();
    // A worker that has not loaded the imported config yet (it does at
    // its next tick, within `WORKER_LAG` of the first that did) answers
    // `waiting`, whatever the driver's state: that is accurate, and the
    // only `waiting` allowed after `import_failed`.
    let first_ok = all
        .iter()
        .find(|a| a.status == Some(200))
        .map(|a| a.sent)
        .unwrap_or_else(|| panic!("never 200"));
    let lagging = |a: &Answer| {
        a.json()["state"] == "waiting"
            && a.sent + WORKER_LAG >= first_ok
            && a.sent <= first_ok + WORKER_LAG
    };
    let answers: Vec<Answer> = all.iter().filter(|a| !lagging(a)).cloned().collect();
    let states: Vec<(u16, String)> = answers.iter().map(state_of).collect();
    let mut phases: Vec<(u16, String)> = Vec::new();
    for s in &states {
        if phases.last() != Some(s) {
            phases.push(s.clone());
        }
    }
    assert_eq!(
        phases,
        [
            (503, "waiting".to_string()),
            (503, "import_failed".to_string()),
            (200, "serving".to_string())
        ],
        "status phases; answers:\n{}",
        answers
            .iter()
            .map(Answer::summary)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // `waiting` until the first attempt timed out, not after.
    let log = stack.faults().log();
    let first_failed = answers
        .iter()
        .find(|a| a.json()["state"] == "import_failed")
        .map(|a| a.at)
        .unwrap_or_else(|| panic!("never import_failed"));
    assert!(
        first_failed >= log[0].received + timeout - Duration::from_millis(20),
        "import_failed {:?} after the first GET, before its timeout {timeout:?}",
        first_failed.duration_since(log[0].received)
    );
    for a in &answers {
        if a.json()["state"] == "waiting" {
            assert!(a.sent < log[0].received + timeout + Duration::from_millis(50));
        }
    }

    // Serving the imported snapshot.
    let (code, s) = get_status(&envoy, &[]);
    assert_eq!(code, 200, "{s}");
    let most = (age + written.elapsed().unwrap_or_default()).as_secs() + 1;
    assert_eq!(
        (
            s["state"].as_str(),
            s["source"].as_str(),
            s["revision"].as_str(),
            s["version"].as_str(),
            s["exported_at"].as_str(),
        ),
        (
            Some("serving"),
            Some("storage"),
            Some("r1"),
            Some(VERSION),
            Some(exported_at.as_str())
        ),
        "{s}"
    );
    let age_s = s["age_s"].as_u64().unwrap_or_else(|| panic!("age_s: {s}"));
    assert!(
        (age.as_secs()..=most).contains(&age_s),
        "age_s {age_s} not in [{}, {most}]: {s}",
        age.as_secs()
    );
    assert_eq!(
        (s["leader"].as_bool(), s["term"].is_null()),
        (Some(false), true)
    );
    let imported = ok(wait::try_until(
        "config_source 2 and the snapshot's age",
        Duration::from_secs(3),
        || {
            let m = ImportStats::read(&envoy)?;
            if m.config_source == 2 && m.config_age_seconds >= age.as_secs() {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
    ));
    let most = (age + written.elapsed().unwrap_or_default()).as_secs() + 1;
    assert!(imported.config_age_seconds <= most, "{imported:?}");
    assert_eq!(
        (
            imported.import_attempts_total,
            imported.import_failures_total,
            imported.cp_reachable,
            imported.storage_cluster_rq_total
        ),
        (3, 2, 0, 3),
        "{imported:?}"
    );
    // Any method, and a query string, get the same answer.
    for (method, path) in [
        ("POST", STATUS_PATH),
        ("GET", &format!("{STATUS_PATH}?x=1")),
    ] {
        let r = envoy
            .request(method, path, &[])
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200, "{method} {path}: {}", r.summary());
        assert_eq!(status_of(&r)["source"], "storage");
    }

    // The CP answers with r2.
    stack.cp.set_config(&gateway_config(
        "r2",
        &[Route::new("echo", &["/echo"], ECHO)],
    ));
    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision r2", TIMEOUT));
    let cp = ok(wait::try_until(
        "the status to name the CP",
        TIMEOUT,
        || match get_status(&envoy, &[]) {
            (200, s) if s["source"] == "control_plane" => Ok(s),
            (code, s) => Err(format!("{code} {s}")),
        },
    ));
    assert_eq!(
        (
            cp["state"].as_str(),
            cp["revision"].as_str(),
            cp["version"].as_str()
        ),
        (Some("serving"), Some("r2"), Some(VERSION)),
        "{cp}"
    );
    assert!(
        cp["exported_at"].is_null(),
        "a CP config was not exported: {cp}"
    );
    // Counted from the CP's last answer: polled every 500 ms.
    let cp_age = cp["age_s"].as_u64().unwrap_or(u64::MAX);
    assert!(cp_age <= 1, "{cp}");
    // The age gauge follows at the filter's next tick.
    let m = ok(wait::try_until(
        "config_source 1, cp_reachable 1, config_age_seconds <= 1",
        TIMEOUT,
        || {
            let m = ImportStats::read(&envoy)?;
            if (m.config_source, m.cp_reachable) == (1, 1) && m.config_age_seconds <= 1 {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
    ));
    assert_eq!(
        (m.import_attempts_total, m.import_failures_total),
        (3, 2),
        "{m:?}"
    );
    // Envoy's Prometheus output carries the gauge too.
    let prom = envoy
        .admin_get("/stats/prometheus")
        .unwrap_or_else(|e| panic!("/stats/prometheus: {e}"))
        .text();
    let gauge = CONFIG_SOURCE
        .trim_start_matches("wasmcustom.")
        .replace('.', "_");
    assert!(
        prom.lines()
            .any(|l| l.starts_with(&gauge) && l.trim_end().ends_with(" 1")),
        "no `{gauge} 1` in the Prometheus output: {:?}",
        prom.lines()
            .filter(|l| l.contains("fallback_config"))
            .collect::<Vec<_>>()
    );
    expect_proxied(&envoy, "GET", "/echo/cp", &[], ECHO);
    expect_healthy(&mut envoy);
}

/// The status path is answered by the filter, never routed: with the CP
/// down and no import, and later with a CP config whose catch-all route
/// `/` sends everything else to the echo upstream, a status request (any
/// method, a query string, a client-sent `x-fallback-upstream` naming an
/// upstream) never reaches an upstream: the upstreams' request counts do
/// not move. Only exactly that path: `<path>/x` and `<path>x` are routed.
#[test]
fn status_path_is_answered_by_the_filter_and_never_routed() {
    let stack = Stack::new("status-never-routed", false);
    stack.cp.set_config(&gateway_config(
        "catch-all",
        &[Route::new("all", &["/"], ECHO)],
    ));
    let mut p = stack.plugin();
    p.status_path = Some(STATUS_PATH.into());
    let mut envoy = stack.start_envoy("router", &p);
    ok(envoy.wait_log("CP unavailable", TIMEOUT));
    let upstream_headers: [&[(&str, &str)]; 3] = [
        &[],
        &[("x-fallback-upstream", ECHO)],
        &[("x-fallback-upstream", OTHER)],
    ];
    let probe_all = |want: u16| {
        for headers in upstream_headers {
            for (method, path) in [
                ("GET", STATUS_PATH.to_string()),
                ("POST", STATUS_PATH.to_string()),
                ("GET", format!("{STATUS_PATH}?from=client")),
            ] {
                let r = envoy
                    .request(method, &path, headers)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                assert_eq!(
                    r.status,
                    want,
                    "{method} {path} {headers:?}: {}",
                    r.summary()
                );
                let s = status_of(&r);
                let state = if want == 200 { "serving" } else { "waiting" };
                assert_eq!(s["state"], state, "{method} {path} {headers:?}: {s}");
            }
        }
    };
    probe_all(503);
    assert_eq!(
        (stack.echo.request_count(), stack.other.request_count()),
        (0, 0)
    );

    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision catch-all", TIMEOUT));
    ok(wait_status(&envoy, "/anything", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/anything", &[], ECHO);
    let before = (stack.echo.request_count(), stack.other.request_count());
    probe_all(200);
    assert_eq!(
        (stack.echo.request_count(), stack.other.request_count()),
        before,
        "a status request reached an upstream"
    );
    // Not the status path: routed by the catch-all.
    for path in [format!("{STATUS_PATH}/x"), format!("{STATUS_PATH}x")] {
        expect_proxied(&envoy, "GET", &path, &[], ECHO);
    }
    assert_eq!(stack.echo.request_count(), before.0 + 2);
    // The CP keeps being polled; the status stays 200 meanwhile.
    wait::holds_for("status 200", POLL_INTERVAL * 2, || {
        match get_status(&envoy, &[]) {
            (200, _) => Ok(()),
            (code, s) => Err(format!("{code} {s}")),
        }
    });
    assert_eq!(stack.echo.request_count(), before.0 + 2);
    expect_healthy(&mut envoy);
}
