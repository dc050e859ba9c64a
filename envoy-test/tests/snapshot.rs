//! Signed and encrypted snapshots, in a real Envoy against a store that
//! verifies credentials: an exporter with `FALLBACK_CONFIG_SIGNING_KEY`
//! and `FALLBACK_CONFIG_ENCRYPTION_KEYS` writes a snapshot that holds no
//! route in clear text; a new data plane with the trusted public key and
//! the encryption key imports and serves it, and refuses, without
//! applying anything, a forged, an unsigned, an untrusted or an
//! undecryptable one, and logs no key. Key rotation (old and new keys side by side) moves
//! the stored snapshot to the new keys. Run on s3s-fs and Azurite.
//!
//! The Ed25519 keys are RFC 8032 §7.1's TEST 1 and TEST 2 (their public
//! keys are the RFC's, not derived here), so the harness needs no crypto.

use envoy_test::control_plane::{gateway_config, Route};
use envoy_test::envoy::Envoy;
use envoy_test::on_stores;
use envoy_test::plugin::PluginConfig;
use envoy_test::sha256;
use envoy_test::stack::{
    echo_config, expect_local_reply, expect_proxied, wait_status, Stack, ECHO, NO_CONFIG,
    SECRET_KEY,
};
use envoy_test::store::StoreKind;
use envoy_test::wait::{self, TIMEOUT};
use std::time::Duration;

/// RFC 8032 TEST 1 seed and public key, base64.
const SEED_1: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
const PUBLIC_1: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
/// RFC 8032 TEST 2.
const SEED_2: &str = "TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=";
const PUBLIC_2: &str = "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";
/// 32 bytes each.
const ENC_1: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const ENC_2: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

const SIGNING: &str = "FALLBACK_CONFIG_SIGNING_KEY";
const TRUSTED: &str = "FALLBACK_CONFIG_TRUSTED_KEYS";
const ENCRYPTION: &str = "FALLBACK_CONFIG_ENCRYPTION_KEYS";

#[track_caller]
fn ok<T>(r: Result<T, String>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// The store's credentials plus the given snapshot variables.
fn env(stack: &Stack, vars: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = stack.store_env();
    env.extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// An exporter whose lease stays out of the way (elections are tested
/// elsewhere).
fn exporter(stack: &Stack, node: &str) -> PluginConfig {
    let mut p = stack.exporter_plugin(node);
    p.lease_ttl_ms = Some(300_000);
    p.renew_interval_ms = Some(100_000);
    p
}

/// Exports `revision` with `vars`, waits for the write, stops the
/// exporter and returns the stored bytes.
fn export_with(stack: &Stack, revision: &str, vars: &[(&str, String)]) -> Vec<u8> {
    stack.cp.set_config(&echo_config(revision));
    stack.cp.up().expect("CP up");
    let mut envoy =
        stack.start_envoy_with_env("exporter", &exporter(stack, "backup-1"), &env(stack, vars));
    ok(envoy.wait_log(&format!("exported revision {revision}"), TIMEOUT));
    envoy.stop();
    stack.cp.down();
    stack.object().expect("the stored snapshot")
}

/// Starts an importer (CP down) with `vars`.
fn importer(stack: &Stack, name: &str, vars: &[(&str, String)]) -> Envoy {
    stack.start_envoy_with_env(name, &stack.importer_plugin(), &env(stack, vars))
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("the snapshot is JSON")
}

/// No key material in the log, at the level the filter runs.
#[track_caller]
fn expect_no_secrets(envoy: &Envoy) {
    let log = envoy.log();
    for secret in [SEED_1, SEED_2, ENC_1, ENC_2] {
        assert!(
            !log.contains(secret),
            "a key is in the log of {}",
            envoy.name()
        );
    }
}

/// An importer refuses the stored snapshot with `message` on every
/// attempt, applies nothing, and serves nothing.
#[track_caller]
fn expect_refused(envoy: &Envoy, message: &str) {
    let first = ok(envoy.wait_log(&format!("import failed: {message}"), TIMEOUT));
    assert!(first.contains("nothing applied, retrying in"), "{first}");
    // Retried as any failed import (the fast test policy), never applied.
    let needle = format!("import failed: {message}");
    ok(wait::try_until(
        &format!("a second {needle:?}"),
        TIMEOUT,
        || match envoy.log_lines(&needle).len() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} so far")),
        },
    ));
    assert!(envoy.log_lines("imported revision").is_empty());
    expect_local_reply(envoy, "GET", "/echo/x", &[], 503, NO_CONFIG);
    expect_no_secrets(envoy);
}

/// Signed and encrypted export → import with the right keys serves; the
/// stored object has no route, host or upstream name in clear text.
fn signed_and_encrypted_snapshot_is_imported_and_served(kind: StoreKind) {
    let stack = Stack::on(kind, "snapshot-protected", false);
    let stored = export_with(
        &stack,
        "r1",
        &[
            (SIGNING, format!("s1:{SEED_1}")),
            (ENCRYPTION, format!("e1:{ENC_1}")),
        ],
    );
    let text = String::from_utf8_lossy(&stored);
    for clear in ["/echo", ECHO, "routes", "upstream"] {
        assert!(!text.contains(clear), "{clear:?} in clear text: {text}");
    }
    let v = json(&stored);
    assert_eq!(v["format"], 2);
    assert_eq!(v["signature"]["key_id"], "s1");
    assert_eq!(v["encryption"]["key_id"], "e1");

    let envoy = importer(
        &stack,
        "importer",
        &[
            (TRUSTED, format!("s1:{PUBLIC_1}")),
            (ENCRYPTION, format!("e1:{ENC_1}")),
        ],
    );
    let line = ok(envoy.wait_log("imported revision r1", TIMEOUT));
    assert!(
        line.contains("signed by key \"s1\", encrypted with key \"e1\""),
        "{line}"
    );
    ok(wait_status(&envoy, "/echo/a", 200, Duration::from_secs(2)));
    expect_proxied(&envoy, "GET", "/echo/b", &[], ECHO);
    expect_no_secrets(&envoy);
}

/// Each refusal, with its own log line; nothing applied, retried.
fn forged_unsigned_untrusted_and_undecryptable_snapshots_are_refused(kind: StoreKind) {
    let stack = Stack::on(kind, "snapshot-refused", false);
    let signed = export_with(&stack, "r1", &[(SIGNING, format!("s1:{SEED_1}"))]);
    let trusting = [(TRUSTED, format!("s1:{PUBLIC_1}"))];

    // Forged: someone with write access rewrites the upstream and
    // recomputes sha256. The signature no longer verifies.
    let mut forged = json(&signed);
    let routes = forged["config"]["routes"].as_array_mut().expect("routes");
    routes[0]["upstream"] = "attacker_service".into();
    let config = serde_json::to_string(&forged["config"]).unwrap();
    forged["sha256"] = sha256::hex(config.as_bytes()).into();
    stack.write_object(serde_json::to_string(&forged).unwrap().as_bytes());
    let mut envoy = importer(&stack, "forged", &trusting);
    expect_refused(&envoy, "bad signature (key \"s1\")");
    envoy.stop();

    // Unsigned (an envelope as earlier builds wrote it), signature required.
    stack.write_envelope("r1", &echo_config("r1"));
    let mut envoy = importer(&stack, "unsigned", &trusting);
    expect_refused(&envoy, "unsigned snapshot refused");
    envoy.stop();

    // Signed by a key this importer does not trust.
    stack.write_object(&signed);
    let mut envoy = importer(&stack, "untrusted", &[(TRUSTED, format!("s2:{PUBLIC_2}"))]);
    expect_refused(&envoy, "signed by untrusted key \"s1\"");
    envoy.stop();

    // Signed but in clear, where the importer has encryption on: without
    // signatures that is what a forger without the key would write.
    stack.write_object(&signed);
    let encrypting = [trusting[0].clone(), (ENCRYPTION, format!("e1:{ENC_1}"))];
    let mut envoy = importer(&stack, "in-clear", &encrypting);
    expect_refused(&envoy, "unencrypted snapshot refused");
    envoy.stop();

    // Encrypted with a key the importer lacks.
    let encrypted = export_with(
        &stack,
        "r1",
        &[
            (SIGNING, format!("s1:{SEED_1}")),
            (ENCRYPTION, format!("e1:{ENC_1}")),
        ],
    );
    stack.write_object(&encrypted);
    let lacking = [trusting[0].clone(), (ENCRYPTION, format!("e2:{ENC_2}"))];
    let mut envoy = importer(&stack, "no-key", &lacking);
    expect_refused(&envoy, "cannot decrypt: no key \"e1\"");
    envoy.stop();

    // The genuine one is still imported by a correctly keyed node.
    let right = [trusting[0].clone(), (ENCRYPTION, format!("e1:{ENC_1}"))];
    let envoy = importer(&stack, "right", &right);
    ok(envoy.wait_log("imported revision r1", TIMEOUT));
    ok(wait_status(&envoy, "/echo/a", 200, Duration::from_secs(2)));
}

/// The README's rotation: (1) add the new keys everywhere, (2) switch the
/// exporters, which rewrite the stored snapshot under the new keys even
/// for an unchanged config, (3) remove the old keys.
fn rotation_moves_the_snapshot_to_the_new_keys(kind: StoreKind) {
    let stack = Stack::on(kind, "snapshot-rotation", false);
    let old = export_with(
        &stack,
        "r1",
        &[
            (SIGNING, format!("old:{SEED_1}")),
            (ENCRYPTION, format!("e-old:{ENC_1}")),
        ],
    );
    assert_eq!(json(&old)["signature"]["key_id"], "old");
    // Step 1: importers know both; the old snapshot still imports.
    let both = [
        (TRUSTED, format!("new:{PUBLIC_2},old:{PUBLIC_1}")),
        (ENCRYPTION, format!("e-new:{ENC_2},e-old:{ENC_1}")),
    ];
    let mut envoy = importer(&stack, "both-keys", &both);
    let line = ok(envoy.wait_log("imported revision r1", TIMEOUT));
    assert!(line.contains("signed by key \"old\""), "{line}");
    envoy.stop();
    // Step 2: the exporter signs with the new key and encrypts with the
    // new one first; the same revision is rewritten.
    let new = export_with(
        &stack,
        "r1",
        &[
            (SIGNING, format!("new:{SEED_2}")),
            both[0].clone(),
            both[1].clone(),
        ],
    );
    let v = json(&new);
    assert_eq!(
        (
            v["signature"]["key_id"].clone(),
            v["encryption"]["key_id"].clone()
        ),
        ("new".into(), "e-new".into())
    );
    // Step 3: old keys removed: the rewritten snapshot imports.
    let only_new = [
        (TRUSTED, format!("new:{PUBLIC_2}")),
        (ENCRYPTION, format!("e-new:{ENC_2}")),
    ];
    let envoy = importer(&stack, "new-keys", &only_new);
    let line = ok(envoy.wait_log("imported revision r1", TIMEOUT));
    assert!(
        line.contains("signed by key \"new\", encrypted with key \"e-new\""),
        "{line}"
    );
    ok(wait_status(&envoy, "/echo/a", 200, Duration::from_secs(2)));
    expect_no_secrets(&envoy);
}

/// What the README's log advice rests on, measured: at `-l debug` Envoy's
/// own components log the filter's outbound request headers, credentials
/// included; at `-l info` with the filter's component at `trace`, neither
/// a credential, a signature nor a key nor the config's plaintext is
/// logged, through an export and an import of an encrypted snapshot.
#[test]
fn only_envoys_own_debug_logs_show_credentials() {
    let stack = Stack::on(StoreKind::S3, "snapshot-logs", true);
    stack.cp.set_config(&echo_config("r1"));
    let vars = [
        (SIGNING, format!("s1:{SEED_1}")),
        (ENCRYPTION, format!("e1:{ENC_1}")),
        (
            "AWS_SESSION_TOKEN",
            "FwoGZXIvYXdzEXAMPLESESSIONTOKEN".to_string(),
        ),
    ];
    let start = |name: &str, plugin: &PluginConfig, level: &str, components: Option<&str>| {
        let cfg = stack.envoy_config(plugin).log_levels(level, components);
        stack.start_envoy_config(name, cfg, &env(&stack, &vars))
    };
    let mut debug = start("debug", &exporter(&stack, "backup-1"), "debug", None);
    ok(debug.wait_log("exported revision r1", TIMEOUT));
    debug.stop();
    let log = debug.log();
    assert!(
        log.contains("AWS4-HMAC-SHA256 Credential=") && log.contains("x-amz-security-token"),
        "Envoy at debug is expected to log the outbound authorization header"
    );

    let mut exporter_env = start(
        "wasm-trace-exporter",
        &exporter(&stack, "backup-1"),
        "info",
        Some("wasm:trace"),
    );
    // Names found only in the encrypted config: no log may show them.
    let hidden = gateway_config(
        "r2",
        &[Route::new(
            "hidden-route-name",
            &["/echo", "/hidden-path-prefix"],
            ECHO,
        )],
    );
    stack.cp.set_config(&hidden);
    ok(exporter_env.wait_log("exported revision r2", TIMEOUT));
    exporter_env.stop();
    stack.cp.down();
    let importer_vars = [
        (TRUSTED, format!("s1:{PUBLIC_1}")),
        (ENCRYPTION, format!("e1:{ENC_1}")),
    ];
    let cfg = stack
        .envoy_config(&stack.importer_plugin())
        .log_levels("info", Some("wasm:trace"));
    let importer =
        stack.start_envoy_config("wasm-trace-importer", cfg, &env(&stack, &importer_vars));
    ok(importer.wait_log("imported revision r2", TIMEOUT));
    ok(wait_status(
        &importer,
        "/echo/a",
        200,
        Duration::from_secs(2),
    ));
    for envoy in [&exporter_env, &importer] {
        let log = envoy.log();
        assert!(log.contains("[wasm]"), "the filter's component logs");
        for secret in [
            "AWS4-HMAC-SHA256 Credential=",
            "Signature=",
            "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
            SECRET_KEY,
            "\"paths\"",
            "hidden-route-name",
            "/hidden-path-prefix",
        ] {
            assert!(
                !log.contains(secret),
                "{secret:?} in the log of {}",
                envoy.name()
            );
        }
        expect_no_secrets(envoy);
    }
}

/// The time a 5 MB config takes to export (CP answer logged → write
/// acknowledged) and to import (import started → applied), plain and
/// signed + encrypted, side by side in one run on S3; from Envoy's log
/// time stamps (ms resolution). A measurement for the issue note, not a
/// timed assertion:
/// `cargo test -p envoy-test --test snapshot five_mb -- --ignored --nocapture`.
#[test]
#[ignore]
fn five_mb_snapshot_timings() {
    use envoy_test::control_plane::{gateway_config, Route};
    use envoy_test::envoy::log_line_time;
    let routes: Vec<Route> = (0..40_000)
        .map(|i| {
            Route::new(
                &format!("route-{i:05}"),
                &[&format!("/svc/{i:05}/api")],
                ECHO,
            )
        })
        .collect();
    let config = gateway_config("big", &routes);
    assert!(config.len() > 5_000_000, "{} bytes", config.len());
    let between = |envoy: &Envoy, from: &str, to: &str| -> f64 {
        let t = |needle: &str| {
            let line = ok(envoy.wait_log(needle, Duration::from_secs(60)));
            log_line_time(&line).expect("a time stamp")
        };
        (t(to) - t(from)) * 1000.0
    };
    for (label, exporter_vars, importer_vars) in [
        ("plain", vec![], vec![]),
        (
            "signed+encrypted",
            vec![
                (SIGNING, format!("s1:{SEED_1}")),
                (ENCRYPTION, format!("e1:{ENC_1}")),
            ],
            vec![
                (TRUSTED, format!("s1:{PUBLIC_1}")),
                (ENCRYPTION, format!("e1:{ENC_1}")),
            ],
        ),
    ] {
        let stack = Stack::on(StoreKind::S3, "snapshot-5mb", true);
        stack.cp.set_config(&config);
        let mut e = stack.start_envoy_with_env(
            "exporter",
            &exporter(&stack, "backup-1"),
            &env(&stack, &exporter_vars),
        );
        let export_ms = between(&e, "CP fetched revision big", "exported revision big");
        e.stop();
        stack.cp.down();
        let stored = stack.object().expect("stored").len();
        let i = importer(&stack, "importer", &importer_vars);
        let import_ms = between(&i, "importing fallback config", "imported revision big");
        println!(
            "{label}: config {} bytes, stored {stored} bytes; export {export_ms:.0} ms, import {import_ms:.0} ms",
            config.len()
        );
    }
}

on_stores!(signed_and_encrypted_snapshot_is_imported_and_served: s3, azure);
on_stores!(forged_unsigned_untrusted_and_undecryptable_snapshots_are_refused: s3, azure);
on_stores!(rotation_moves_the_snapshot_to_the_new_keys: s3, azure);
