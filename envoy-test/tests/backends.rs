//! What only one backend has, in real Envoy: Azure's SAS credentials and
//! `AZURE_STORAGE_ENDPOINT`; GCS's `gs://` alias and the renewal of its
//! OAuth access token. The scenarios every backend shares (export, import,
//! CP first, bad or absent object, wrong credentials, election) are in
//! `export.rs`, `import.rs` and `election.rs`, run once per store.
//! Needs ENVOY_BIN, AZURITE_BIN, GCS_EMULATOR_BIN and FALLBACK_CONFIG_WASM.

use envoy_test::azure::{account_sas, ACCOUNT_KEY, WRONG_ACCOUNT_KEY};
use envoy_test::stack::{echo_config, expect_healthy, expect_proxied, wait_status, Stack, ECHO};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::{Duration, Instant, SystemTime};

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// The `sig=` value of a SAS token, decoded as the log would show it if
/// it leaked.
fn sas_sig(sas: &str) -> String {
    let enc = sas.split("sig=").nth(1).unwrap_or_default();
    envoy_test::http::percent_decode(enc, false)
}

/// Azure with a SAS token instead of the account key, and the endpoint
/// from `AZURE_STORAGE_ENDPOINT` instead of `storage.endpoint`: an exporter
/// stores the CP config (lease create, `config.json` read and conditional
/// write: read, write, add, create permissions), then with the CP down a
/// new importer with the same SAS imports it while one with a SAS signed by
/// another key fails with Azurite's 403 (and retries, one GET per attempt).
/// The SAS never appears in a log.
#[test]
fn azure_sas_token_exports_and_imports() {
    let stack = Stack::on(StoreKind::Azure, "azure-sas", true);
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let sas = account_sas(ACCOUNT_KEY, "rwac", expiry);
    let bad_sas = account_sas(WRONG_ACCOUNT_KEY, "rwac", expiry);
    let endpoint = stack.store.endpoint();
    let env = |token: &str| {
        vec![
            ("AZURE_STORAGE_SAS_TOKEN".to_string(), token.to_string()),
            ("AZURE_STORAGE_ENDPOINT".to_string(), endpoint.clone()),
        ]
    };
    let without_endpoint = |mut p: envoy_test::plugin::PluginConfig| {
        p.storage_endpoint = None;
        p
    };

    let mut exporter = stack.start_envoy_with_env(
        "exporter",
        &without_endpoint(stack.exporter_plugin("sas-exporter")),
        &env(&sas),
    );
    let stored = ok(stack.wait_envelope("r1", TIMEOUT));
    assert_eq!(stored.exporter, "sas-exporter");
    ok(exporter.wait_log("exported revision r1", TIMEOUT));
    expect_healthy(&mut exporter);
    let exporter_log = exporter.log();
    exporter.stop();

    stack.cp.down();
    let importer_plugin = without_endpoint(stack.importer_plugin());
    let mut good = stack.start_envoy_with_env("importer", &importer_plugin, &env(&sas));
    let mut bad = stack.start_envoy_with_env("importer-bad-sas", &importer_plugin, &env(&bad_sas));
    ok(good.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(&good, "/echo/sas", 200, Duration::from_secs(2)));
    expect_proxied(&good, "GET", "/echo/sas", &[], ECHO);
    assert_eq!(good.upstream_rq_total("object_storage"), 1);

    let line = ok(bad.wait_log("import failed:", TIMEOUT));
    eprintln!("info: SAS signed with another key: {line}");
    assert!(
        line.contains("403") && line.contains(&stack.object_url()),
        "{line}"
    );
    // The refused import is retried, one GET per attempt.
    let retried = ok(wait::try_until(
        "a retried import, one GET per attempt",
        TIMEOUT,
        || {
            let s = envoy_test::election::ImportStats::read(&bad)?;
            if s.import_failures_total >= 2 && s.storage_cluster_rq_total == s.import_failures_total
            {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        },
    ));
    eprintln!("info: bad SAS: {retried:?}");

    for (name, log) in [
        ("exporter", exporter_log),
        ("importer", good.log()),
        ("importer-bad-sas", bad.log()),
    ] {
        for secret in [sas_sig(&sas), sas_sig(&bad_sas)] {
            assert!(
                !log.contains(&secret),
                "Envoy {name} logged a SAS signature"
            );
        }
    }
    expect_healthy(&mut good);
    expect_healthy(&mut bad);
}

/// GCS with tokens that live 4 s: the filter fetches a token, keeps using
/// it, and renews it ahead of expiry (at half its lifetime for such short
/// tokens) while the exporter's lease traffic goes on every second: over
/// ~9 s the front never sees an expired or unknown token, no request waits
/// for a token, and the token endpoint is asked a few times (not once per
/// request). Then every token is revoked: the store's 401 makes the filter
/// drop its token and fetch a new one at once, soon enough for the lease
/// retry 1 s later to succeed (the leader keeps its term; lease TTL 5 s),
/// and a new revision is still exported. The storage URL uses the `gs://` alias. Neither the private
/// key nor a token is logged.
#[test]
fn gcs_tokens_are_renewed_ahead_of_expiry_and_after_a_401() {
    const LIFETIME: Duration = Duration::from_secs(4);
    let stack = Stack::on(StoreKind::Gcs, "gcs-token-renewal", true);
    let gcs = stack.store.gcs();
    gcs.token.set_token_lifetime(LIFETIME);
    let mut plugin = stack.exporter_plugin("gcs-renewer");
    plugin.storage_url = plugin.storage_url.replacen("gcs://", "gs://", 1);
    plugin.lease_ttl_ms = Some(5000);
    plugin.renew_interval_ms = Some(1000);
    let mut envoy = stack.start_envoy("exporter", &plugin);
    let r1 = ok(stack.wait_envelope("r1", TIMEOUT));
    let started = Instant::now();

    // 1. Renewal ahead of expiry.
    wait::holds_for(
        "every GCS request authorised",
        Duration::from_secs(9),
        || {
            let failures = stack.store.auth_failures();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        },
    );
    let elapsed = started.elapsed().as_secs_f64();
    let tokens = gcs.token.requests();
    let objects = gcs.front.requests();
    eprintln!(
        "info: {elapsed:.1} s with {LIFETIME:?} tokens: {} token requests, {} object requests",
        tokens.len(),
        objects.len()
    );
    assert!(tokens.iter().all(|t| t.status == 200), "{tokens:?}");
    // Renewed: one token cannot have served the whole run.
    let lifetimes = (elapsed / LIFETIME.as_secs_f64()).floor() as usize;
    assert!(
        tokens.len() > lifetimes,
        "{} token requests in {elapsed:.1} s of {LIFETIME:?} tokens",
        tokens.len()
    );
    // Cached: not one per object request (about one per half lifetime).
    assert!(
        tokens.len() <= (elapsed / (LIFETIME.as_secs_f64() / 2.0)).ceil() as usize + 2,
        "{} token requests in {elapsed:.1} s: renewed too often",
        tokens.len()
    );
    assert!(
        tokens.len() < objects.len(),
        "{} object requests, {} token requests",
        objects.len(),
        tokens.len()
    );
    for needle in ["no credentials yet", "cannot get credentials", "failed"] {
        let lines: Vec<String> = envoy
            .log_lines(needle)
            .into_iter()
            .filter(|l| l.contains("wasm log"))
            .collect();
        assert!(lines.is_empty(), "{}", lines.join("\n"));
    }

    // 2. Revocation: a 401, then a new token at once. First a long-lived
    // token, so that no renewal can replace the revoked one before the
    // filter next uses it.
    gcs.token.set_token_lifetime(Duration::from_secs(3600));
    let renewed = tokens.len();
    wait::until("a long-lived token", TIMEOUT, || {
        match gcs.token.requests().len() {
            n if n > renewed => Ok(()),
            n => Err(format!("{n} token requests")),
        }
    });
    let (tokens_before, objects_before) = (gcs.token.requests().len(), gcs.front.requests().len());
    gcs.front.revoke_all_tokens();
    let revoked_at = Instant::now();
    let recovered = wait::until(
        "a 401, a new token, then a granted request",
        TIMEOUT,
        || {
            let objects = gcs.front.requests();
            let after = &objects[objects_before..];
            let first_401 = after.iter().position(|r| r.status == 401);
            let granted_after =
                first_401.and_then(|i| after[i..].iter().position(|r| r.status != 401));
            match (
                first_401,
                granted_after,
                gcs.token.requests().len() > tokens_before,
            ) {
                (Some(_), Some(_), true) => Ok(revoked_at.elapsed()),
                state => Err(format!("{state:?}: {after:?}")),
            }
        },
    );
    let after: Vec<_> = gcs.front.requests()[objects_before..].to_vec();
    let unauthorised = after.iter().filter(|r| r.status == 401).count();
    eprintln!(
        "info: tokens revoked: {unauthorised} request(s) answered 401, recovered after {:.2} s",
        recovered.as_secs_f64()
    );
    assert!(
        unauthorised <= 2,
        "{unauthorised} requests answered 401 after the revocation: the token was not dropped: {after:?}"
    );
    let line = ok(envoy.wait_log("storage answered 401", TIMEOUT));
    assert!(line.contains("authError"), "{line}");

    // The exporter still leads, in the same term, and exports r2 with the
    // new token.
    stack.cp.set_config(&echo_config("r2"));
    let r2 = ok(stack.wait_envelope("r2", TIMEOUT));
    assert_eq!(
        (r2.exporter.as_str(), r2.term),
        ("gcs-renewer", r1.term),
        "the leader lost its term over one 401"
    );
    let lost = envoy.log_lines("lost leadership");
    assert!(lost.is_empty(), "{}", lost.join("\n"));
    assert_eq!(
        envoy.upstream_rq_total("gcp_oauth"),
        gcs.token.requests().len() as u64,
        "token requests go through the gcp_oauth cluster"
    );
    assert!(gcs.token.requests().iter().all(|t| t.status == 200));
    let log = envoy.log();
    for t in gcs.token.issued_tokens() {
        assert!(!log.contains(&t), "an access token was logged");
    }
    let key_line = envoy_test::gcs::test_keys()[0]
        .private_pem
        .lines()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    assert!(
        key_line.len() > 20 && !log.contains(&key_line),
        "the private key was logged"
    );
    ok(wait_status(&envoy, "/echo/t", 200, TIMEOUT));
    expect_healthy(&mut envoy);
}
