//! Importer scenarios: an Envoy with import on whose first CP fetch fails
//! reads `<prefix>/0.1.0/config.json` from the object store, verifies it
//! and serves it until the CP answers; a failed import is retried (with
//! the harness's fast policy, [`Stack::importer_plugin`]) until a config
//! is applied or the CP answers. The fault matrix is in
//! `tests/import_faults.rs`. Scenarios taking a `StoreKind`
//! run on every store (s3s-fs, Azurite, the GCS stack: tests
//! `<scenario>::s3`, `::azure`, `::gcs`); the others are S3-only.
//! Needs ENVOY_BIN, S3S_FS_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and
//! FALLBACK_CONFIG_WASM.

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::envelope::{self, VERSION};
use envoy_test::envoy::Envoy;
use envoy_test::on_every_store;
use envoy_test::probe::WORKER_LAG;
use envoy_test::stack::{
    echo_config, expect_healthy, expect_local_reply, expect_proxied, expect_store_auth_ok,
    wait_status, Stack, ECHO, NO_CONFIG, OTHER, POLL_INTERVAL, RETRY_MAX,
};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::Duration;

const NO_ROUTE: &str = "no Route matched with those values";

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

#[track_caller]
fn storage_rq_stays(envoy: &Envoy, expected: u64, period: Duration) {
    wait::holds_for(
        &format!("object_storage upstream_rq_total == {expected}"),
        period,
        || match envoy.upstream_rq_total("object_storage") {
            n if n == expected => Ok(()),
            n => Err(format!("it is {n}")),
        },
    );
}

/// Waits for the import, then: the first request is answered by the
/// upstream (allowing ~2 s for the config to reach every worker), and so
/// are the next ten.
#[track_caller]
fn expect_serves_after_import(envoy: &Envoy, revision: &str) {
    ok(envoy.wait_log(&format!("imported revision {revision}"), TIMEOUT));
    let r = ok(wait_status(
        envoy,
        "/echo/first",
        200,
        Duration::from_secs(2),
    ));
    assert_eq!(r.text(), "echo_service /echo/first");
    for i in 0..10 {
        expect_proxied(envoy, "GET", &format!("/echo/{i}"), &[], ECHO);
    }
}

/// Scenarios 3 and 4: CP down -> import once -> serve; CP back with a new
/// revision -> the CP config replaces the imported one; storage read once
/// (GCS: the token request goes to `gcp_oauth`, not `object_storage`).
fn importer_with_cp_down_serves_stored_config_then_cp_config(kind: StoreKind) {
    let stack = Stack::on(kind, "import-then-cp", false);
    stack.write_envelope("r1", &echo_config("r1"));
    let mut envoy = stack.start_envoy("importer", &stack.importer_plugin());

    ok(envoy.wait_log("CP unavailable", TIMEOUT));
    ok(envoy.wait_log(
        &format!("importing fallback config from {}", stack.object_url()),
        TIMEOUT,
    ));
    expect_serves_after_import(&envoy, "r1");
    assert!(stack.echo.request_count() >= 11);
    assert_eq!(envoy.upstream_rq_total("object_storage"), 1);
    if kind == StoreKind::Gcs {
        let tokens = stack.store.gcs().token.requests();
        assert_eq!(
            (envoy.upstream_rq_total("gcp_oauth"), tokens.len()),
            (1, 1),
            "one token request, through gcp_oauth: {tokens:?}"
        );
    }
    storage_rq_stays(&envoy, 1, POLL_INTERVAL * 5);
    // The filter keeps polling the (down) CP. upstream_rq_total does not
    // count requests that never got a connection; pending_total does.
    wait::until(
        "the filter to keep polling the down CP",
        TIMEOUT,
        || match envoy.upstream_rq_attempts("control_plane") {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} CP request attempts")),
        },
    );
    expect_proxied(&envoy, "GET", "/echo/still", &[], ECHO);

    // Scenario 4: the CP comes back with r2 (/v2 only).
    let r2 = gateway_config("r2", &[Route::new("v2", &["/v2"], ECHO)]);
    stack.cp.set_config(&r2);
    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision r2", TIMEOUT));
    wait::until_settled("/v2 -> 200 and /echo -> 404", TIMEOUT, WORKER_LAG, || {
        let a = envoy.get("/v2/x", &[]).map_err(|e| e.to_string())?;
        let b = envoy.get("/echo", &[]).map_err(|e| e.to_string())?;
        if a.status == 200 && b.status == 404 {
            Ok(())
        } else {
            Err(format!("/v2/x: {}; /echo: {}", a.summary(), b.summary()))
        }
    });
    for _ in 0..5 {
        expect_proxied(&envoy, "GET", "/v2/x", &[], ECHO);
        expect_local_reply(&envoy, "GET", "/echo", &[], 404, NO_ROUTE);
    }
    assert_eq!(
        envoy.upstream_rq_total("object_storage"),
        1,
        "storage read again after the CP came back"
    );
    assert_eq!(envoy.log_lines("importing fallback config").len(), 1);
    expect_store_auth_ok(&stack);
    expect_healthy(&mut envoy);
}
on_every_store!(importer_with_cp_down_serves_stored_config_then_cp_config);

/// The end-to-end story: an exporter stores the CP config; later, with the
/// CP down, a brand-new importer Envoy serves it.
#[test]
fn fresh_importer_serves_what_an_exporter_stored() {
    let stack = Stack::new("export-then-import", true);
    {
        let mut exporter = stack.start_envoy("exporter", &stack.exporter_plugin("node-exp"));
        ok(stack.wait_envelope("r1", TIMEOUT));
        expect_healthy(&mut exporter);
    }
    stack.cp.down();
    let mut importer = stack.start_envoy("importer", &stack.importer_plugin());
    expect_serves_after_import(&importer, "r1");
    assert_eq!(importer.upstream_rq_total("object_storage"), 1);
    expect_healthy(&mut importer);
}

/// Scenario 5: with the CP up, the importer never reads storage (even
/// though the bucket holds a valid, different config).
fn importer_with_cp_up_never_reads_storage(kind: StoreKind) {
    let stack = Stack::on(kind, "import-cp-up", true);
    stack.write_envelope(
        "stored",
        &gateway_config("stored", &[Route::new("stored", &["/stored"], OTHER)]),
    );
    let mut envoy = stack.start_envoy("importer", &stack.importer_plugin());
    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    ok(wait_status(&envoy, "/echo/x", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/x", &[], ECHO);
    expect_local_reply(&envoy, "GET", "/stored", &[], 404, NO_ROUTE);
    storage_rq_stays(&envoy, 0, POLL_INTERVAL * 5);
    assert!(envoy.log_lines("importing fallback config").is_empty());
    assert_eq!(stack.other.request_count(), 0);
    if kind == StoreKind::Gcs {
        // The token is fetched ahead of any import (so an import never
        // waits for it), but no object is read.
        assert_eq!(stack.store.gcs().front.requests().len(), 0);
    }
    expect_healthy(&mut envoy);
}
on_every_store!(importer_with_cp_up_never_reads_storage);

/// The filter's import counters and Envoy's count of storage requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ImportStats {
    attempts: u64,
    failures: u64,
    storage_rq: u64,
}

fn import_stats(envoy: &Envoy) -> Result<ImportStats, String> {
    let s = envoy_test::election::ImportStats::read(envoy)?;
    Ok(ImportStats {
        attempts: s.import_attempts_total,
        failures: s.import_failures_total,
        storage_rq: s.storage_cluster_rq_total,
    })
}

/// Scenario 6 and its variants: the import fails -> `import failed:
/// <reason> (<url>); nothing applied, retrying in N ms, still polling the
/// CP`, clients get only the 503 JSON (a client-sent upstream header
/// changes nothing), Envoy stays alive, and the import is RETRIED: a
/// second failure line, and the store is asked `per_attempt` more
/// requests per attempt (1: the GET; 2: the GET and the LIST of the
/// versions when this version's snapshot is absent; 0 when no credentials
/// could be had). Then the CP comes up -> 200, and storage is never asked
/// again.
fn import_fails_with(
    stack: &Stack,
    env: &[(String, String)],
    reasons: &[&str],
    per_attempt: u64,
) -> Envoy {
    let mut envoy = stack.start_envoy_with_env("importer", &stack.importer_plugin(), env);
    let line = ok(envoy.wait_log("import failed:", TIMEOUT));
    for reason in reasons {
        assert!(
            line.contains(reason),
            "expected reason {reason:?} in: {line}"
        );
    }
    assert!(
        line.contains(&format!(
            "({}); nothing applied, retrying in ",
            stack.object_url()
        )) && line.contains(" ms, still polling the CP"),
        "{line}"
    );
    eprintln!("info: {:?}: {line}", stack.kind());
    expect_local_reply(&envoy, "GET", "/echo", &[], 503, NO_CONFIG);
    // A client cannot pick an upstream itself while there is no config.
    expect_local_reply(
        &envoy,
        "GET",
        "/echo",
        &[("x-fallback-upstream", ECHO)],
        503,
        NO_CONFIG,
    );
    assert_eq!(stack.echo.request_count(), 0);
    expect_healthy(&mut envoy);

    // Retried: a second failure, for the same reason; the store asked
    // once more per attempt.
    let second = ok(wait::try_until(
        "a second `import failed` line",
        TIMEOUT,
        || match envoy.log_lines("import failed:").as_slice() {
            [_, second, ..] => Ok(second.clone()),
            lines => Err(format!("{} line(s)", lines.len())),
        },
    ));
    for reason in reasons {
        assert!(second.contains(reason), "expected {reason:?} in: {second}");
    }
    // With no credentials (per_attempt 0) no attempt goes out at all: the
    // counters stay at 0 (they count attempts sent), the lines go on.
    let steady = ok(wait::try_until(
        &format!("{per_attempt} storage request(s) per attempt, no attempt in flight"),
        TIMEOUT,
        || {
            let s = import_stats(&envoy)?;
            let settled = match per_attempt {
                0 => {
                    s == ImportStats {
                        attempts: 0,
                        failures: 0,
                        storage_rq: 0,
                    }
                }
                n => s.failures >= 2 && s.storage_rq == n * s.failures && s.attempts == s.failures,
            };
            if settled {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    ));
    eprintln!("info: {:?}: {steady:?}", stack.kind());
    expect_local_reply(&envoy, "GET", "/echo", &[], 503, NO_CONFIG);
    assert_eq!(stack.echo.request_count(), 0);

    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    ok(wait_status(&envoy, "/echo/back", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/back", &[], ECHO);
    // No storage request once the CP answered (an attempt already out
    // then is counted already): the count holds for more than the
    // longest retry wait.
    let after_cp = envoy.upstream_rq_total("object_storage");
    storage_rq_stays(&envoy, after_cp, RETRY_MAX * 2 + POLL_INTERVAL);
    // Every attempt failed with its `per_attempt` requests, but the last
    // one may have been out when the CP answered: then its answer is
    // dropped (not a failure) and its follow-up (the LIST) never sent.
    let end = ok(import_stats(&envoy));
    if end.failures == end.attempts {
        assert_eq!(end.storage_rq, per_attempt * end.attempts, "{end:?}");
    } else {
        assert_eq!(end.failures + 1, end.attempts, "{end:?}");
        let cut_short = end.storage_rq - per_attempt * end.failures;
        assert!((1..=per_attempt).contains(&cut_short), "{end:?}");
    }
    if per_attempt > 0 {
        assert!(end.failures >= 2, "{end:?}");
    }
    expect_healthy(&mut envoy);
    envoy
}

/// [`import_fails_with`] on a store holding `object` (or nothing), with the
/// right credentials.
fn import_fails(
    kind: StoreKind,
    test: &str,
    object: Option<Vec<u8>>,
    reason: &str,
    per_attempt: u64,
) {
    let stack = Stack::on(kind, test, false);
    if let Some(bytes) = &object {
        stack.write_object(bytes);
    }
    import_fails_with(&stack, &stack.store_env(), &[reason], per_attempt);
    expect_store_auth_ok(&stack);
}

/// Absent object, and no older version under the prefix either: each
/// attempt is the GET of this version's snapshot (404) and the LIST of
/// the version folders.
fn import_fails_when_bucket_is_empty(kind: StoreKind) {
    import_fails(
        kind,
        "import-empty",
        None,
        "no snapshot for version 0.1.0, and none for an older version",
        2,
    );
}
on_every_store!(import_fails_when_bucket_is_empty);

#[test]
fn import_fails_when_object_is_not_json() {
    let valid = envelope::build(
        VERSION,
        "r1",
        "t",
        "2026-01-01T00:00:00Z",
        &echo_config("r1"),
    );
    let truncated = valid.as_bytes()[..valid.len() / 2].to_vec();
    import_fails(
        StoreKind::S3,
        "import-corrupt",
        Some(truncated),
        "does not parse",
        1,
    );
}

/// Bad object: a valid envelope whose config was changed after hashing.
fn import_fails_when_sha256_does_not_match(kind: StoreKind) {
    let valid = envelope::build(
        VERSION,
        "r1",
        "t",
        "2026-01-01T00:00:00Z",
        &echo_config("r1"),
    );
    let tampered = valid.replace("\"/echo\"", "\"/ech0\"");
    assert_ne!(valid, tampered);
    import_fails(
        kind,
        "import-sha",
        Some(tampered.into_bytes()),
        "sha256 mismatch",
        1,
    );
}
on_every_store!(import_fails_when_sha256_does_not_match);

#[test]
fn import_fails_when_version_differs() {
    let other = envelope::build(
        "9.9.9",
        "r1",
        "t",
        "2026-01-01T00:00:00Z",
        &echo_config("r1"),
    );
    import_fails(
        StoreKind::S3,
        "import-version",
        Some(other.into_bytes()),
        "version mismatch",
        1,
    );
}

/// Wrong credentials with the CP down and a valid object stored: every
/// attempt fails with a line naming the store's refusal (S3, Azure: the
/// status and error code of the GET, one GET per attempt; GCS: the
/// refused token request, then no object request at all, and the token
/// request is retried), nothing is applied, and the CP's config is served
/// once it answers.
fn import_fails_with_wrong_credentials(kind: StoreKind) {
    let stack = Stack::on(kind, "import-bad-credentials", false);
    stack.write_envelope("r1", &echo_config("r1"));
    let env = stack.wrong_store_env();
    let evidence: Vec<&str> = stack
        .store
        .wrong_credentials_evidence()
        .iter()
        .copied()
        .filter(|e| *e != "failed")
        .collect();
    let per_attempt = match kind {
        StoreKind::Gcs => 0,
        _ => 1,
    };
    let envoy = import_fails_with(&stack, &env, &evidence, per_attempt);
    if kind == StoreKind::Gcs {
        let gcs = stack.store.gcs();
        assert!(
            gcs.front.requests().is_empty(),
            "object requests without a token: {:?}",
            gcs.front.requests()
        );
        let tokens = gcs.token.requests();
        assert!(
            tokens.len() >= 2 && tokens.iter().all(|t| t.status == 400),
            "the refused token request is retried: {tokens:?}"
        );
        assert!(envoy.upstream_rq_total("gcp_oauth") >= 2);
    }
}
on_every_store!(import_fails_with_wrong_credentials);

/// Routing by the CP config: longest path prefix, hosts, methods; no route
/// -> 404 JSON; a client-sent x-fallback-upstream does not override the
/// filter's choice.
#[test]
fn routes_by_longest_prefix_host_and_method() {
    let stack = Stack::new("routing", true);
    stack.cp.set_config(&gateway_config(
        "routes-1",
        &[
            Route::new("api", &["/api"], ECHO),
            Route::new("api-v2", &["/api/v2"], OTHER),
            Route::new("admin", &["/host"], OTHER).hosts(&["admin.example.com"]),
            Route::new("post", &["/post"], OTHER).methods(&["POST"]),
        ],
    ));
    let mut envoy = stack.start_envoy("router", &stack.plugin());
    ok(envoy.wait_log("CP fetched revision routes-1", TIMEOUT));
    ok(wait_status(&envoy, "/api/x", 200, TIMEOUT));
    expect_proxied(&envoy, "GET", "/api/x", &[], ECHO);
    expect_proxied(&envoy, "GET", "/api/v2/x", &[], OTHER);
    expect_proxied(
        &envoy,
        "GET",
        "/host/a",
        &[("host", "admin.example.com")],
        OTHER,
    );
    expect_local_reply(
        &envoy,
        "GET",
        "/host/a",
        &[("host", "www.example.com")],
        404,
        NO_ROUTE,
    );
    expect_proxied(&envoy, "POST", "/post/a", &[], OTHER);
    expect_local_reply(&envoy, "GET", "/post/a", &[], 404, NO_ROUTE);
    expect_local_reply(&envoy, "GET", "/nothing", &[], 404, NO_ROUTE);
    // The filter's choice wins over a header sent by the client.
    expect_proxied(
        &envoy,
        "GET",
        "/api/y",
        &[("x-fallback-upstream", OTHER)],
        ECHO,
    );
    expect_local_reply(
        &envoy,
        "GET",
        "/nothing",
        &[("x-fallback-upstream", ECHO)],
        404,
        NO_ROUTE,
    );
    expect_healthy(&mut envoy);
}

/// `path_match` in real Envoy, and the paths the filter sees normalised
/// by the connection manager first (as `wasm/envoy.yaml` does): a `..`
/// or a doubled or escaped slash cannot take a request past a route's
/// prefix to another upstream.
#[test]
fn path_match_kinds_on_normalised_paths() {
    let stack = Stack::new("path-match", true);
    stack.cp.set_config(&gateway_config(
        "paths-1",
        &[
            Route::new("echo", &["/echo"], ECHO),
            Route::new("api", &["/api"], OTHER).path_match("segment"),
            Route::new("health", &["/healthz"], OTHER).path_match("exact"),
        ],
    ));
    let cfg = stack.envoy_config(&stack.plugin()).normalized_paths();
    let mut envoy = stack.start_envoy_config("paths", cfg, &stack.store_env());
    ok(envoy.wait_log("CP fetched revision paths-1", TIMEOUT));
    ok(wait_status(&envoy, "/echo", 200, TIMEOUT));
    // prefix: /echo also matches /echofoo (as Kong's and Envoy's prefix).
    expect_proxied(&envoy, "GET", "/echofoo", &[], ECHO);
    // segment: /api and below, not /apix.
    expect_proxied(&envoy, "GET", "/api", &[], OTHER);
    expect_proxied(&envoy, "GET", "/api/users?x=1", &[], OTHER);
    expect_local_reply(&envoy, "GET", "/apix", &[], 404, NO_ROUTE);
    // exact: the path alone, a query allowed.
    expect_proxied(&envoy, "GET", "/healthz?probe=1", &[], OTHER);
    expect_local_reply(&envoy, "GET", "/healthz/x", &[], 404, NO_ROUTE);
    // Normalised before the filter matches: the upstream gets the clean path.
    for (sent, upstream, seen) in [
        ("/echo/../api/x", OTHER, "/api/x"),
        ("/api/./../echo/y", ECHO, "/echo/y"),
        ("//echo//z", ECHO, "/echo/z"),
    ] {
        let r = ok(envoy.request("GET", sent, &[]).map_err(|e| e.to_string()));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("{upstream} {seen}")),
            "GET {sent}"
        );
    }
    // An escaped slash is unescaped and redirected, never matched raw.
    let r = ok(envoy
        .request("GET", "/echo%2F..%2Fapi", &[])
        .map_err(|e| e.to_string()));
    assert!(
        (300..400).contains(&r.status),
        "GET /echo%2F..%2Fapi: {}",
        r.summary()
    );
    expect_healthy(&mut envoy);
}

/// A CP that accepts connections but never answers counts as unavailable
/// (after the CP timeout): the importer imports, then switches to the CP
/// once it answers again.
#[test]
fn importer_imports_when_cp_hangs() {
    let stack = Stack::new("import-cp-hangs", true);
    stack.cp.set_hang(true);
    stack.write_envelope("stored-1", &echo_config("stored-1"));
    let mut envoy = stack.start_envoy("importer", &stack.importer_plugin());
    ok(envoy.wait_log("CP unavailable", TIMEOUT));
    expect_serves_after_import(&envoy, "stored-1");
    assert_eq!(envoy.upstream_rq_total("object_storage"), 1);

    stack.cp.set_hang(false);
    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/cp", &[], ECHO);
    assert_eq!(envoy.upstream_rq_total("object_storage"), 1);
    expect_healthy(&mut envoy);
}

/// Storage that accepts connections but never answers (s3s-fs SIGSTOPped):
/// each attempt fails after the storage timeout (`timed out`), Envoy keeps
/// running and answers 503, the import is retried (one GET per attempt);
/// once the store answers again the next attempt imports, and the CP
/// config replaces it later without another storage read.
#[test]
fn import_fails_when_storage_does_not_answer() {
    let mut stack = Stack::new("import-storage-hangs", false);
    stack.write_envelope("r1", &echo_config("r1"));
    stack.s3_mut().process().pause().unwrap();
    let mut envoy = stack.start_envoy("importer", &stack.importer_plugin());
    let line = ok(envoy.wait_log("import failed:", TIMEOUT));
    assert!(
        line.contains("import failed: timed out (the proxy's upstream request timeout)"),
        "{line}"
    );
    expect_local_reply(&envoy, "GET", "/echo", &[], 503, NO_CONFIG);
    expect_healthy(&mut envoy);
    // Retried while the store still hangs: a second GET, a second timeout.
    wait::until("a second attempt", TIMEOUT, || {
        match envoy.upstream_rq_attempts("object_storage") {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} storage request(s)")),
        }
    });
    expect_local_reply(&envoy, "GET", "/echo", &[], 503, NO_CONFIG);
    stack.s3_mut().process().resume().unwrap();
    expect_serves_after_import(&envoy, "r1");
    let reads = envoy.upstream_rq_attempts("object_storage");
    let failures = envoy.log_lines("import failed:").len() as u64;
    assert_eq!(reads, failures + 1, "one GET per attempt");

    stack.cp.up().unwrap();
    ok(envoy.wait_log("CP fetched revision r1", TIMEOUT));
    expect_proxied(&envoy, "GET", "/echo/x", &[], ECHO);
    storage_rq_stays(&envoy, reads, POLL_INTERVAL * 4);
    expect_healthy(&mut envoy);
}
