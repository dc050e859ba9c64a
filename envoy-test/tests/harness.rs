//! Self-tests of the harness itself, WITHOUT the wasm filter: they prove the
//! servers (and that each store really refuses wrong credentials), the
//! generated Envoy config (clusters, `cluster_header` routing) and the
//! stats/log readers work, so a scenario failure points at the filter, not
//! at the harness. Needs ENVOY_BIN, S3S_FS_BIN, AZURITE_BIN and
//! GCS_EMULATOR_BIN (no wasm).

use envoy_test::http;
use envoy_test::stack::{Stack, BUCKET, ECHO, OTHER};
use envoy_test::store::StoreKind;
use envoy_test::wait;
use std::time::Duration;

#[test]
fn s3s_fs_starts_and_requires_signatures() {
    let stack = Stack::without_wasm("harness-s3", true);
    assert!(http::tcp_open(stack.s3().port()));
    let key = stack.object_key();
    stack.write_object(b"{}");
    assert_eq!(stack.object().as_deref(), Some(&b"{}"[..]));
    // An unsigned GET is refused by s3s-fs: it is a real, verifying S3 server.
    let r = http::get(stack.s3().port(), &format!("/{BUCKET}/{key}"), &[]).unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    assert!(r.text().contains("AccessDenied"), "{}", r.summary());
    assert!(stack
        .s3()
        .object_path(BUCKET, &key)
        .ends_with("gateways/e2e/0.1.0/config.json"));

    // Restart on the same port (tests use it to change the accepted secret).
    let mut stack = stack;
    let port = stack.s3().port();
    stack
        .s3_mut()
        .restart_with_secret("another-secret")
        .unwrap();
    assert_eq!(stack.s3().port(), port);
    assert_eq!(stack.s3().secret_key(), "another-secret");
    let r = http::get(port, &format!("/{BUCKET}/{key}"), &[]).unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    // SIGSTOP: it still accepts TCP connections (kernel backlog) but answers nothing.
    stack.s3_mut().process().pause().unwrap();
    assert!(http::tcp_open(port));
    stack.s3_mut().process().resume().unwrap();
    assert_eq!(http::get(port, "/", &[]).unwrap().status, 403);
}

#[test]
fn envoy_without_filter_routes_by_cluster_header() {
    let stack = Stack::without_wasm("harness-envoy", true);
    let cfg = stack.envoy_config(&stack.plugin());
    assert!(cfg.wasm.is_none());
    let mut envoy = stack.start_envoy_config("plain", cfg, &stack.store_env());
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

/// Azurite really verifies what the Azure scenarios rely on: SharedKey
/// (a wrong key is refused with the code the scenarios look for), account
/// SAS tokens, and the conditional writes of the election.
#[test]
fn azurite_verifies_shared_key_sas_and_conditions() {
    use envoy_test::azure::{account_sas, BlobClient, ACCOUNT_KEY, WRONG_ACCOUNT_KEY};
    use fallback_config::storage::azure::AzureCredentials;
    use fallback_config::storage::PutMode;
    use std::time::SystemTime;

    let stack = Stack::without_wasm_on(StoreKind::Azure, "harness-azurite", true);
    let (server, client) = stack.store.azure();
    let key = stack.object_key();
    stack.write_object(b"{\"a\":1}");
    assert_eq!(stack.object().as_deref(), Some(&b"{\"a\":1}"[..]));
    let blob = client.get(&key).unwrap().expect("blob");
    let etag = blob.etag.clone().expect("ETag");
    assert!(blob.last_modified.is_some());

    // Unsigned: refused.
    let r = http::get(
        server.port(),
        &format!("/devstoreaccount1/{BUCKET}/{key}"),
        &[],
    )
    .unwrap();
    assert!(r.status == 403 || r.status == 404, "{}", r.summary());
    // Signed with another key: 403 with the code the scenarios expect.
    let wrong = BlobClient::new(
        server.port(),
        BUCKET,
        AzureCredentials::shared_key(WRONG_ACCOUNT_KEY).unwrap(),
    );
    let r = wrong
        .put_response(&key, b"{}", &PutMode::Overwrite)
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());
    let evidence = stack.store.wrong_credentials_evidence();
    assert_eq!(
        r.header("x-ms-error-code"),
        Some(evidence[evidence.len() - 1]),
        "{}",
        r.summary()
    );
    assert!(wrong.get(&key).is_err());

    // An account SAS (the filter's other Azure credential) reads and writes;
    // one signed with another key is refused.
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let sas = account_sas(ACCOUNT_KEY, "rwac", expiry);
    let with_sas = BlobClient::new(server.port(), BUCKET, AzureCredentials::sas(&sas).unwrap());
    with_sas.put("sas/x.json", b"{\"sas\":true}").unwrap();
    assert_eq!(
        with_sas.get("sas/x.json").unwrap().map(|b| b.body),
        Some(b"{\"sas\":true}".to_vec())
    );
    let bad_sas = account_sas(WRONG_ACCOUNT_KEY, "rwac", expiry);
    let refused = BlobClient::new(
        server.port(),
        BUCKET,
        AzureCredentials::sas(&bad_sas).unwrap(),
    );
    let r = refused
        .put_response("sas/y.json", b"{}", &PutMode::Overwrite)
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.summary());

    // Conditional writes: create-if-absent on an existing blob -> 409
    // BlobAlreadyExists; a stale If-Match -> 412; the current one -> 201.
    let r = client.put_response(&key, b"{}", &PutMode::Create).unwrap();
    assert_eq!(
        (r.status, r.header("x-ms-error-code")),
        (409, Some("BlobAlreadyExists")),
        "{}",
        r.summary()
    );
    let update = PutMode::Update { etag: etag.clone() };
    let r = client.put_response(&key, b"{\"a\":2}", &update).unwrap();
    assert_eq!(r.status, 201, "{}", r.summary());
    let r = client.put_response(&key, b"{\"a\":3}", &update).unwrap();
    assert_eq!(r.status, 412, "{}", r.summary());
    assert_eq!(stack.object().as_deref(), Some(&b"{\"a\":2}"[..]));
    stack.store.delete(BUCKET, &key);
    assert_eq!(stack.object(), None);
}

/// The GCS stack really checks what the emulator does not: the token
/// endpoint grants a token only for an assertion signed with the trusted
/// key, the front accepts only tokens it issued, and generation
/// preconditions hold. Requests are built with the filter's own code.
#[test]
fn gcs_stack_verifies_tokens_and_generations() {
    use fallback_config::clock::{Instant, Now};
    use fallback_config::http::HttpResponse;
    use fallback_config::storage::credentials::{Credential, CredentialCache, Provider};
    use fallback_config::storage::gcp_auth::ServiceAccount;
    use fallback_config::storage::gcs::{self, GcsSettings};
    use fallback_config::storage::{PutMode, StorageError, Via};
    use fallback_config::time::Timestamp;

    let stack = Stack::without_wasm_on(StoreKind::Gcs, "harness-gcs", true);
    let g = stack.store.gcs();
    let wall = Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let now = Now {
        mono: Instant::from_millis(1_000),
        wall,
    };
    let send = |port: u16, req: &fallback_config::http::HttpRequest| {
        let r = http::send(port, req).unwrap();
        HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    };
    let token_for = |json: &str| {
        let mut cache = CredentialCache::new(
            Provider::GcpServiceAccount {
                account: Box::new(ServiceAccount::parse(json).unwrap()),
                cluster: "gcp_oauth".into(),
            },
            Duration::from_secs(5),
        );
        let req = cache.next_request(now).unwrap().expect("a token request");
        let r = send(g.token.port(), &req);
        (r.clone(), cache.on_response(r, now).map(|()| cache))
    };
    // The trusted account gets a token; the same account with another key
    // is refused as Google refuses it.
    let (r, cache) = token_for(&g.service_account_json());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cache = cache.unwrap();
    let Some(Credential::Bearer(token)) = cache.credential(now.mono).cloned() else {
        panic!("a bearer token")
    };
    let (r, refused) = token_for(&g.wrong_service_account_json());
    assert_eq!(r.status, 400);
    let e = refused.expect_err("refused").to_string();
    assert!(
        e.contains("invalid_grant") && e.contains("Invalid JWT Signature."),
        "{e}"
    );
    assert_eq!(
        g.token
            .requests()
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        vec![200, 400]
    );

    let settings = GcsSettings::new(Some(&g.endpoint())).unwrap();
    let via = Via {
        cluster: "object_storage",
        timeout: Duration::from_secs(5),
        credential: None,
    };
    let key = stack.object_key();
    let put = |mode: &PutMode, body: &[u8], token: Option<&fallback_config::secret::Secret>| {
        let req = gcs::put(
            &settings,
            via,
            BUCKET,
            &key,
            body.to_vec(),
            "application/json",
            mode,
            token,
        );
        gcs::write_result(&send(g.front.port(), &req))
    };
    let get = |token: Option<&fallback_config::secret::Secret>| {
        gcs::read_result(send(
            g.front.port(),
            &gcs::get(&settings, via, BUCKET, &key, token),
        ))
    };
    // No token, or one the endpoint never issued: 401 authError.
    for bad in [
        None,
        Some(fallback_config::secret::Secret::new("ya29.forged")),
    ] {
        match get(bad.as_ref()) {
            Err(StorageError::Status {
                status: 401,
                code: Some(code),
                ..
            }) => assert_eq!(code, "authError"),
            other => panic!("expected 401 authError, got {other:?}"),
        }
    }
    assert!(matches!(
        put(&PutMode::Create, b"{}", None),
        Err(StorageError::Status { status: 401, .. })
    ));
    let t = Some(&token);
    assert!(matches!(get(t), Err(StorageError::NotFound { .. })));
    // Create (ifGenerationMatch=0) works once; the JSON content type is
    // stored as sent (the emulator itself would crash on it).
    let g1 = put(&PutMode::Create, b"{\"a\":1}", t)
        .unwrap()
        .expect("generation");
    assert_eq!(
        put(&PutMode::Create, b"{}", t),
        Err(StorageError::PreconditionFailed)
    );
    let o = get(t).unwrap();
    assert_eq!(o.body, b"{\"a\":1}");
    assert_eq!(o.etag.as_deref(), Some(g1.as_str()));
    assert!(o.last_modified.is_some() && o.date.is_some(), "{o:?}");
    // Update on the current generation works; on a stale one: 412.
    let update = PutMode::Update { etag: g1.clone() };
    let g2 = put(&update, b"{\"a\":2}", t).unwrap().expect("generation");
    assert_ne!(g1, g2);
    assert_eq!(
        put(&update, b"{\"a\":3}", t),
        Err(StorageError::PreconditionFailed)
    );
    assert_eq!(get(t).unwrap().etag.as_deref(), Some(g2.as_str()));
    assert_eq!(stack.object().as_deref(), Some(&b"{\"a\":2}"[..]));
    assert_eq!(
        g.front.meta(&key).map(|m| m.content_type),
        Some("application/json".into())
    );
    let statuses: Vec<u16> = g.front.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![401, 401, 401, 404, 200, 412, 200, 200, 412, 200]
    );
    stack.store.delete(BUCKET, &key);
    assert_eq!(stack.object(), None);
}
