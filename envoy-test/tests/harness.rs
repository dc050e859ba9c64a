//! Self-tests of the harness itself, WITHOUT the wasm filter: they prove the
//! servers, the generated Envoy config (clusters, `cluster_header` routing)
//! and the stats/log readers work, so a scenario failure points at the
//! filter, not at the harness. Needs ENVOY_BIN and S3S_FS_BIN only.

use envoy_test::http;
use envoy_test::stack::{Stack, BUCKET, ECHO, OTHER};
use envoy_test::wait;
use std::time::Duration;

#[test]
fn s3s_fs_starts_and_requires_signatures() {
    let stack = Stack::without_wasm("harness-s3", true);
    assert!(http::tcp_open(stack.s3.port()));
    let key = stack.object_key();
    stack.write_object(b"{}");
    assert_eq!(stack.object().as_deref(), Some(&b"{}"[..]));
    // An unsigned GET is refused by s3s-fs: it is a real, verifying S3 server.
    let r = http::get(stack.s3.port(), &format!("/{BUCKET}/{key}"), &[]).unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    assert!(r.text().contains("AccessDenied"), "{}", r.summary());
    assert!(stack
        .s3
        .object_path(BUCKET, &key)
        .ends_with("gateways/e2e/0.1.0/config.json"));

    // Restart on the same port (tests use it to change the accepted secret).
    let mut stack = stack;
    let port = stack.s3.port();
    stack.s3.restart_with_secret("another-secret").unwrap();
    assert_eq!(stack.s3.port(), port);
    assert_eq!(stack.s3.secret_key(), "another-secret");
    let r = http::get(port, &format!("/{BUCKET}/{key}"), &[]).unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    // SIGSTOP: it still accepts TCP connections (kernel backlog) but answers nothing.
    stack.s3.process().pause().unwrap();
    assert!(http::tcp_open(port));
    stack.s3.process().resume().unwrap();
    assert_eq!(http::get(port, "/", &[]).unwrap().status, 403);
}

#[test]
fn envoy_without_filter_routes_by_cluster_header() {
    let stack = Stack::without_wasm("harness-envoy", true);
    let cfg = stack.envoy_config(&stack.plugin());
    assert!(cfg.wasm.is_none());
    let mut envoy = stack.start_envoy_config("plain", cfg, &stack.aws_env());
    envoy.check_alive().unwrap();

    // The header picks the cluster; the upstream proves it was reached.
    let r = envoy
        .get("/echo/x", &[("x-fallback-upstream", ECHO)])
        .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, "echo_service /echo/x".to_string()),
        "{}",
        r.summary()
    );
    let r = envoy.get("/y", &[("x-fallback-upstream", OTHER)]).unwrap();
    assert_eq!((r.status, r.text()), (200, "other_service /y".to_string()));
    assert_eq!(stack.echo.request_count(), 1);
    assert_eq!(stack.other.request_count(), 1);
    assert_eq!(envoy.upstream_rq_total(ECHO), 1);
    assert_eq!(envoy.upstream_rq_total("object_storage"), 0);
    assert_eq!(envoy.stat("cluster.no_such.upstream_rq_total"), None);

    // No header: Envoy itself answers (no cluster), nothing reaches upstreams.
    let r = envoy.get("/echo", &[]).unwrap();
    assert!(r.status >= 400, "{}", r.summary());
    assert_eq!(stack.echo.request_count(), 1);

    // The CP through Envoy: up, down (Envoy gets connection refused -> 503), up again.
    let via_cp = |envoy: &envoy_test::envoy::Envoy| {
        envoy
            .get("/v1/config", &[("x-fallback-upstream", "control_plane")])
            .unwrap()
    };
    let r = via_cp(&envoy);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["revision"], "r1");
    assert!(r.header("etag").is_some());
    stack.cp.down();
    let (sent, attempts) = (
        envoy.upstream_rq_total("control_plane"),
        envoy.upstream_rq_attempts("control_plane"),
    );
    let r = via_cp(&envoy);
    assert_eq!(r.status, 503, "{}", r.summary());
    // A request to a down upstream is not in upstream_rq_total, only in
    // upstream_rq_pending_total (what upstream_rq_attempts reads).
    assert_eq!(envoy.upstream_rq_total("control_plane"), sent);
    assert_eq!(envoy.upstream_rq_attempts("control_plane"), attempts + 1);
    stack.cp.up().unwrap();
    wait::until(
        "CP reachable through Envoy again",
        Duration::from_secs(10),
        || {
            let r = via_cp(&envoy);
            if r.status == 200 {
                Ok(())
            } else {
                Err(r.summary())
            }
        },
    );
    assert!(stack.cp.request_count() >= 2);

    // object_storage cluster reaches s3s-fs (unsigned -> 403 from s3s-fs).
    let r = envoy
        .get(
            &format!("/{BUCKET}/x"),
            &[("x-fallback-upstream", "object_storage")],
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    assert_eq!(envoy.upstream_rq_total("object_storage"), 1);

    // The log is readable and has Envoy's startup lines.
    assert!(envoy
        .wait_log("starting main dispatch loop", Duration::from_secs(5))
        .is_ok());
    assert!(envoy.wasm_crash_lines().is_empty());
}

#[test]
fn envoy_start_failure_reports_log() {
    let stack = Stack::without_wasm("harness-bad-envoy", true);
    let mut cfg = stack.envoy_config(&stack.plugin());
    cfg.wasm = Some(envoy_test::envoy::WasmFilter {
        path: stack.dir.join("missing.wasm"),
        plugin_json: "{}".into(),
    });
    let err = envoy_test::envoy::Envoy::start(
        &envoy_test::bins::require_envoy(),
        "bad",
        cfg,
        stack.dir.path(),
        &[],
    )
    .err()
    .expect("Envoy must refuse a missing wasm file");
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("missing.wasm"), "{err}");
}
