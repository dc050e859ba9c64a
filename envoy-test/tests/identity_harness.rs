//! The identity harness itself, without the filter: each fake credential
//! endpoint requires what the real service requires, and what it hands out
//! is accepted by the store that checks it (moto's S3 for STS credentials,
//! the GCS front for metadata tokens, Azurite over HTTPS with `--oauth
//! basic` for Entra / IMDS JWTs), while made-up credentials are refused.
//! Envoy (router only) reaches HTTPS Azurite through a TLS cluster with the
//! right CA and fails with the other CA or another SAN.

use envoy_test::azure::Azurite;
use envoy_test::envoy::{self, Envoy, EnvoyConfig};
use envoy_test::gcs::GcsStack;
use envoy_test::http::{self, Response};
use envoy_test::identity::{
    self, AzureImds, ContainerCredentials, Ec2Imds, EntraTokenEndpoint, GcpMetadata, AZURE_TENANT,
    IMDS_TOKEN_HEADER, IMDS_TTL_HEADER,
};
use envoy_test::moto::{Moto, TemporaryCredentials};
use envoy_test::ports::free_port;
use envoy_test::tls::{self, TestPki};
use envoy_test::workdir::WorkDir;
use fallback_config::secret::Secret;
use fallback_config::sigv4::Credentials;
use serde_json::Value;
use std::time::{Duration, SystemTime};

const BUCKET: &str = "identity-bucket";

use envoy_test::{io, ok};

/// The credentials of an AWS credentials JSON answer.
fn creds_of(body: &Value) -> TemporaryCredentials {
    let f = |k: &str| {
        body[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {body}"))
            .to_string()
    };
    TemporaryCredentials {
        access_key_id: f("AccessKeyId"),
        secret_access_key: f("SecretAccessKey"),
        session_token: f("Token"),
        expiration: f("Expiration"),
    }
}

/// Expiration is now + `lifetime` (± 3 s), RFC 3339 with `Z`.
#[track_caller]
fn assert_expires_in(expiration: &str, lifetime: Duration) {
    assert!(expiration.ends_with('Z'), "{expiration}");
    let at = envoy_test::envelope::parse_rfc3339(expiration)
        .unwrap_or_else(|| panic!("not RFC 3339: {expiration}"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let d = at - now - lifetime.as_secs_f64();
    assert!(
        d.abs() < 3.0,
        "Expiration {expiration} is not now + {lifetime:?}"
    );
}

/// PUT then GET of an object with `creds` at moto: both must succeed.
#[track_caller]
fn s3_roundtrip(moto: &Moto, creds: &Credentials, key: &str) {
    let path = format!("/{BUCKET}/{key}");
    let r = ok(moto.s3_with(creds, "PUT", &path, "", &[], b"{\"a\":1}"));
    assert_eq!(r.status, 200, "PUT with STS credentials: {}", r.summary());
    let r = ok(moto.s3_with(creds, "GET", &path, "", &[], b""));
    assert_eq!(r.status, 200, "GET with STS credentials: {}", r.summary());
    assert_eq!(r.body, b"{\"a\":1}");
}

/// The same credentials with another session token are refused.
#[track_caller]
fn wrong_session_token_refused(moto: &Moto, c: &TemporaryCredentials) {
    let wrong = Credentials::new(
        c.access_key_id.clone(),
        Secret::new(c.secret_access_key.clone()),
    )
    .with_session_token(Secret::new(format!("{}x", c.session_token)));
    let r = ok(moto.s3_with(&wrong, "GET", &format!("/{BUCKET}/k"), "", &[], b""));
    assert!(
        matches!(r.status, 400 | 403),
        "a wrong session token was accepted: {}",
        r.summary()
    );
    // Without the token at all: also refused.
    let none = Credentials::new(
        c.access_key_id.clone(),
        Secret::new(c.secret_access_key.clone()),
    );
    let r = ok(moto.s3_with(&none, "GET", &format!("/{BUCKET}/k"), "", &[], b""));
    assert!(
        matches!(r.status, 400 | 403),
        "a missing session token was accepted: {}",
        r.summary()
    );
}

#[test]
fn imdsv2_flow_gives_credentials_moto_s3_verifies() {
    let dir = WorkDir::new("identity-imds");
    let (moto, source) = ok(identity::moto_with_role(&dir, BUCKET, "ec2-role"));
    let imds = io(Ec2Imds::start(source, "ec2-role"));
    imds.set_lifetime(Duration::from_secs(20));
    let port = imds.port();
    let creds_path = "/latest/meta-data/iam/security-credentials/";

    // IMDSv2 is required: no token, a made-up token, a PUT without TTL.
    assert_eq!(io(http::get(port, creds_path, &[])).status, 401);
    assert_eq!(
        io(http::get(
            port,
            creds_path,
            &[(IMDS_TOKEN_HEADER, "made-up")]
        ))
        .status,
        401
    );
    assert_eq!(
        io(http::request(port, "PUT", "/latest/api/token", &[], b"")).status,
        400
    );
    assert_eq!(
        io(http::request(
            port,
            "PUT",
            "/latest/api/token",
            &[(IMDS_TTL_HEADER, "0")],
            b""
        ))
        .status,
        400
    );
    let r = io(http::request(
        port,
        "PUT",
        "/latest/api/token",
        &[(IMDS_TTL_HEADER, "21600")],
        b"",
    ));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header(IMDS_TTL_HEADER), Some("21600"));
    let token = r.text();
    let auth = [(IMDS_TOKEN_HEADER, token.as_str())];

    let r = io(http::get(port, creds_path, &auth));
    assert_eq!((r.status, r.text().as_str()), (200, "ec2-role"));
    assert_eq!(
        io(http::get(port, &format!("{creds_path}other-role"), &auth)).status,
        404
    );
    let r = io(http::get(port, &format!("{creds_path}ec2-role"), &auth));
    assert_eq!(r.status, 200, "{}", r.summary());
    let body = r.json();
    assert_eq!(body["Code"], "Success");
    assert_eq!(body["Type"], "AWS-HMAC");
    assert!(body["LastUpdated"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    let c1 = creds_of(&body);
    assert_expires_in(&c1.expiration, Duration::from_secs(20));
    s3_roundtrip(&moto, &c1.credentials(), "imds-1");
    wrong_session_token_refused(&moto, &c1);

    // A fresh AssumeRole per fetch, both sets valid.
    let c2 = creds_of(&io(http::get(port, &format!("{creds_path}ec2-role"), &auth)).json());
    assert_ne!(c1.access_key_id, c2.access_key_id);
    s3_roundtrip(&moto, &c2.credentials(), "imds-2");
    assert_eq!(imds.issued_credentials().len(), 2);

    // Session tokens invalidated: 401 again.
    imds.expire_session_tokens();
    assert_eq!(io(http::get(port, creds_path, &auth)).status, 401);

    // Down (refused), 503, back up.
    imds.down();
    assert!(http::get(port, creds_path, &[]).is_err());
    io(imds.up());
    imds.fail_with(503);
    assert_eq!(
        io(http::request(
            port,
            "PUT",
            "/latest/api/token",
            &[(IMDS_TTL_HEADER, "60")],
            b""
        ))
        .status,
        503
    );
    io(imds.up());
    let r = io(http::request(
        port,
        "PUT",
        "/latest/api/token",
        &[(IMDS_TTL_HEADER, "60")],
        b"",
    ));
    assert_eq!(r.status, 200);

    // The log: every answered request, with method, path and headers.
    let log = imds.requests();
    assert_eq!(log.len(), imds.request_count());
    assert_eq!(log.len(), 12, "{log:#?}");
    assert_eq!(log[0].status, 401);
    assert_eq!(log[4].method, "PUT");
    assert_eq!(log[4].header(IMDS_TTL_HEADER), Some("21600"));
    assert_eq!(log[10].status, 503);
    assert_eq!(log[6].path, format!("{creds_path}other-role"));
}

#[test]
fn container_credentials_require_the_token_and_moto_s3_verifies_them() {
    let dir = WorkDir::new("identity-container");
    let (moto, source) = ok(identity::moto_with_role(&dir, BUCKET, "task-role"));
    let path = "/v2/credentials/abc";
    let ecs = io(ContainerCredentials::start(
        source.clone(),
        path,
        Some("tok-1"),
    ));
    ecs.set_lifetime(Duration::from_secs(20));
    assert_eq!(
        ecs.full_uri(),
        format!("http://127.0.0.1:{}{path}", ecs.port())
    );
    let port = ecs.port();
    assert_eq!(io(http::get(port, path, &[])).status, 401);
    assert_eq!(
        io(http::get(port, path, &[("authorization", "tok-2")])).status,
        403
    );
    assert_eq!(
        io(http::get(port, path, &[("authorization", "Bearer tok-1")])).status,
        403
    );
    assert_eq!(
        io(http::get(
            port,
            "/v2/credentials/other",
            &[("authorization", "tok-1")]
        ))
        .status,
        404
    );
    let r = io(http::get(port, path, &[("authorization", "tok-1")]));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["RoleArn"], source.role_arn());
    let c = creds_of(&body);
    assert_expires_in(&c.expiration, Duration::from_secs(20));
    s3_roundtrip(&moto, &c.credentials(), "ecs-1");
    wrong_session_token_refused(&moto, &c);

    // Token rotation, then an outage.
    ecs.set_auth_token(Some("tok-2"));
    assert_eq!(
        io(http::get(port, path, &[("authorization", "tok-1")])).status,
        403
    );
    assert_eq!(
        io(http::get(port, path, &[("authorization", "tok-2")])).status,
        200
    );
    ecs.fail_with(503);
    assert_eq!(
        io(http::get(port, path, &[("authorization", "tok-2")])).status,
        503
    );
    ecs.down();
    assert!(!ecs.is_up() && !http::tcp_open(port));
    io(ecs.up());
    assert_eq!(
        io(http::get(port, path, &[("authorization", "tok-2")])).status,
        200
    );
    assert_eq!(ecs.issued_credentials().len(), 3);
    assert_eq!(ecs.request_count(), 9);

    // Without a token configured (the ECS relative-URI form).
    let open = io(ContainerCredentials::start(source, "/creds", None));
    let r = io(http::get(open.port(), "/creds", &[]));
    assert_eq!(r.status, 200, "{}", r.summary());
    s3_roundtrip(&moto, &creds_of(&r.json()).credentials(), "ecs-2");
}

#[test]
fn gcp_metadata_tokens_are_accepted_by_the_gcs_front_until_they_expire() {
    let dir = WorkDir::new("identity-gcp");
    let stack = ok(GcsStack::start(
        &envoy_test::bins::require_gcs_emulator(),
        &dir.join("gcs.log"),
        BUCKET,
    ));
    let md = io(GcpMetadata::start(stack.token.accepted_tokens()));
    md.set_lifetime(Duration::from_secs(20));
    let port = md.port();
    let path = identity::GCP_TOKEN_PATH;
    assert_eq!(io(http::get(port, path, &[])).status, 403);
    assert_eq!(
        io(http::get(port, path, &[("metadata-flavor", "google-ish")])).status,
        403
    );
    let flavor = [("metadata-flavor", "Google")];
    let r = io(http::get(port, &format!("{path}?scopes=x"), &flavor));
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 20);
    let token = body["access_token"].as_str().unwrap().to_string();

    let list = format!("/storage/v1/b/{BUCKET}/o");
    let front = stack.front.port();
    let bearer = |t: &str| format!("Bearer {t}");
    let r = io(http::get(
        front,
        &list,
        &[("authorization", &bearer(&token))],
    ));
    assert_eq!(r.status, 200, "{}", r.summary());
    let r = io(http::get(
        front,
        &list,
        &[("authorization", "Bearer ya29.made-up")],
    ));
    assert_eq!(r.status, 401, "{}", r.summary());

    // A short-lived one stops working once expired.
    md.set_lifetime(Duration::from_secs(1));
    let short = io(http::get(port, path, &flavor)).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(short, token);
    assert_eq!(
        io(http::get(
            front,
            &list,
            &[("authorization", &bearer(&short))]
        ))
        .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        io(http::get(
            front,
            &list,
            &[("authorization", &bearer(&short))]
        ))
        .status,
        401
    );
    assert_eq!(md.issued_tokens().len(), 2);
    assert_eq!(md.request_count(), 4);
    md.down();
    assert!(http::get(port, path, &flavor).is_err());
}

#[test]
fn entra_and_azure_imds_jwts_are_accepted_by_azurite_over_https() {
    let dir = WorkDir::new("identity-azure");
    let pki = ok(TestPki::create(dir.path(), &[]));
    let azurite = ok(Azurite::start_https_oauth(
        &envoy_test::bins::require_azurite(),
        &dir.join("azurite.log"),
        free_port(),
        &pki.server.cert_path,
        &pki.server.key_path,
    ));
    assert!(azurite.endpoint().starts_with("https://"));
    let list = "/devstoreaccount1?comp=list";
    let ca = pki.ca_path();
    let azure =
        |token: &str| -> Response { io(azurite.bearer_request(ca, "GET", list, token, b"")) };

    // Entra ID client credentials.
    let entra = io(EntraTokenEndpoint::start(AZURE_TENANT, "app-1", "s3cret"));
    entra.set_lifetime(Duration::from_secs(20));
    let form = |id: &str, secret: &str, scope: &str| {
        format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}&scope={}",
            envoy::percent_encode(scope)
        )
    };
    let post = |path: &str, body: &str| {
        io(http::request(
            entra.port(),
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        ))
    };
    let scope = identity::AZURE_STORAGE_SCOPE;
    let r = post(&entra.token_path(), &form("app-1", "wrong", scope));
    assert_eq!(r.status, 401, "{}", r.summary());
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));
    let r = post(&entra.token_path(), &form("app-2", "s3cret", scope));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, "invalid_client".into())
    );
    let r = post(
        &entra.token_path(),
        &form("app-1", "s3cret", "https://x/.default"),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, "invalid_scope".into())
    );
    let r = post(
        "/other-tenant/oauth2/v2.0/token",
        &form("app-1", "s3cret", scope),
    );
    assert_eq!(r.status, 400);
    let r = post(&entra.token_path(), &form("app-1", "s3cret", scope));
    assert_eq!(r.status, 200, "{}", r.summary());
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 20);
    assert_eq!(body["ext_expires_in"], 20);
    let entra_token = body["access_token"].as_str().unwrap().to_string();
    let claims = ok(identity::verify_azure_jwt(&entra_token));
    assert_eq!(claims["appid"], "app-1");
    assert_eq!(claims["tid"], AZURE_TENANT);
    let r = azure(&entra_token);
    assert_eq!(
        r.status,
        200,
        "List Containers with the Entra token: {}",
        r.summary()
    );

    // A federated assertion (workload identity) instead of a secret.
    entra.accept_client_assertion(Some("federated.jwt.value"));
    let assertion = |a: &str| {
        format!(
            "grant_type=client_credentials&client_id=app-1&scope={}&client_assertion_type={}&client_assertion={a}",
            envoy::percent_encode(scope),
            envoy::percent_encode(identity::JWT_BEARER_ASSERTION)
        )
    };
    assert_eq!(
        post(&entra.token_path(), &assertion("other.jwt.value")).status,
        401
    );
    assert_eq!(
        post(&entra.token_path(), &assertion("federated.jwt.value")).status,
        200
    );

    // Azure IMDS, user-assigned identity.
    let imds = io(AzureImds::start(Some("uami-1")));
    imds.set_lifetime(Duration::from_secs(20));
    let base = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F";
    let good = format!("{base}&client_id=uami-1");
    let md = [("metadata", "true")];
    assert!(imds.token_url().ends_with(&good), "{}", imds.token_url());
    let r = io(http::get(imds.port(), &good, &[]));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_description"],
        "Required metadata header not specified"
    );
    assert_eq!(io(http::get(imds.port(), base, &md)).status, 400);
    assert_eq!(
        io(http::get(
            imds.port(),
            &format!("{base}&client_id=other"),
            &md
        ))
        .status,
        400
    );
    let r = io(http::get(imds.port(), &good, &md));
    assert_eq!(r.status, 200, "{}", r.summary());
    let body = r.json();
    assert_eq!(body["expires_in"], "20");
    assert_eq!(body["resource"], "https://storage.azure.com/");
    assert_eq!(body["token_type"], "Bearer");
    let on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(on >= now + 18 && on <= now + 22, "{on} {now}");
    let imds_token = body["access_token"].as_str().unwrap().to_string();
    let r = azure(&imds_token);
    assert_eq!(
        r.status,
        200,
        "List Containers with the IMDS token: {}",
        r.summary()
    );

    // Refused: garbage, a v2 issuer, another audience, an expired token.
    for (what, token) in [
        ("garbage", "not-a-jwt".to_string()),
        (
            "made-up JWT",
            format!(
                "{}.{}.",
                "eyJhbGciOiJub25lIn0",
                base64_url(
                    r#"{"aud":"https://storage.azure.com","iss":"https://login.microsoftonline.com/t/v2.0","iat":1,"nbf":1,"exp":99999999999}"#
                )
            ),
        ),
        (
            "other audience",
            identity::azure_access_token(
                AZURE_TENANT,
                "https://vault.azure.net",
                "a",
                Duration::from_secs(60),
            ),
        ),
    ] {
        let r = azure(&token);
        assert_eq!(r.status, 403, "{what} accepted: {}", r.summary());
        assert!(
            r.text().contains("AuthenticationFailed"),
            "{what}: {}",
            r.summary()
        );
    }
    imds.set_lifetime(Duration::from_secs(1));
    let short = io(http::get(imds.port(), &good, &md)).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(azure(&short).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let r = azure(&short);
    assert_eq!(
        r.status,
        403,
        "an expired token was accepted: {}",
        r.summary()
    );
    assert!(r.text().contains("expired"), "{}", r.summary());

    // The system-assigned identity refuses a client_id.
    let system = io(AzureImds::start(None));
    assert_eq!(io(http::get(system.port(), &good, &md)).status, 400);
    assert_eq!(io(http::get(system.port(), base, &md)).status, 200);

    // The HTTPS client itself refuses the unrelated CA.
    let e = tls::https_request(
        azurite.port(),
        "localhost",
        pki.other_ca_path(),
        "GET",
        list,
        &[],
        b"",
    )
    .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn envoy_tls_cluster_verifies_the_azurite_certificate() {
    let dir = WorkDir::new("identity-envoy-tls");
    let pki = ok(TestPki::create(dir.path(), &["blob.envoy-test.internal"]));
    let azurite = ok(Azurite::start_https_oauth(
        &envoy_test::bins::require_azurite(),
        &dir.join("azurite.log"),
        free_port(),
        &pki.server.cert_path,
        &pki.server.key_path,
    ));
    let port = azurite.port();
    let config = EnvoyConfig::new()
        .cluster("azure_good", port)
        .cluster_tls(
            "azure_good",
            pki.ca_path(),
            "blob.envoy-test.internal",
            &["blob.envoy-test.internal"],
        )
        .cluster("azure_wrong_ca", port)
        .cluster_tls(
            "azure_wrong_ca",
            pki.other_ca_path(),
            "localhost",
            &["localhost"],
        )
        .cluster("azure_wrong_san", port)
        .cluster_tls(
            "azure_wrong_san",
            pki.ca_path(),
            "localhost",
            &["not-this.example"],
        );
    let envoy_bin = envoy_test::bins::require_envoy();
    let yaml = dir.join("validate.yaml");
    std::fs::write(&yaml, config.to_yaml()).unwrap();
    let (valid, out) = envoy::validate(&envoy_bin, &yaml, dir.path());
    assert!(valid, "envoy --mode validate: {out}");
    let envoy = ok(Envoy::start(&envoy_bin, "envoy", config, dir.path(), &[]));

    let token = identity::azure_access_token(
        AZURE_TENANT,
        "https://storage.azure.com",
        "app",
        Duration::from_secs(60),
    );
    let auth = format!("Bearer {token}");
    let host = format!("127.0.0.1:{port}");
    let date = fallback_config::time::Timestamp(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
    .http_date();
    let send = |cluster: &str| {
        io(envoy.get(
            "/devstoreaccount1?comp=list",
            &[
                ("host", &host),
                ("x-fallback-upstream", cluster),
                ("authorization", &auth),
                ("x-ms-version", envoy_test::azure::OAUTH_API_VERSION),
                ("x-ms-date", &date),
            ],
        ))
    };
    let r = send("azure_good");
    assert_eq!(r.status, 200, "through the TLS cluster: {}", r.summary());
    assert!(r.text().contains("EnumerationResults"), "{}", r.summary());

    // Envoy 1.40 answers 503 "... reset reason: remote connection failure"
    // (no TLS detail in the body); the stats name the verification failure.
    let r = send("azure_wrong_ca");
    assert_eq!(r.status, 503, "{}", r.summary());
    assert!(
        r.text().contains("upstream connect error"),
        "{}",
        r.summary()
    );
    assert_eq!(
        envoy.cluster_stat("azure_wrong_ca", "ssl.fail_verify_error"),
        1
    );
    assert_eq!(envoy.cluster_stat("azure_wrong_ca", "ssl.handshake"), 0);

    let r = send("azure_wrong_san");
    assert_eq!(r.status, 503, "{}", r.summary());
    assert_eq!(
        envoy.cluster_stat("azure_wrong_san", "ssl.fail_verify_san"),
        1
    );
    assert_eq!(envoy.cluster_stat("azure_wrong_san", "ssl.handshake"), 0);
    assert_eq!(envoy.cluster_stat("azure_good", "ssl.handshake"), 1);
    assert_eq!(envoy.cluster_stat("azure_good", "ssl.fail_verify_error"), 0);
}
