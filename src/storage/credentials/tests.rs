//! The cache's policy, on the service-account source (as before it was
//! shared), and every source's requests and answers.

use super::*;
use crate::storage::gcp_auth::tests::{account_json, TEST_KEY_PKCS8};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> Now {
    Now {
        mono: Instant::from_millis(secs * 1000),
        wall: Timestamp::from_secs(T0 + secs),
    }
}

fn account() -> ServiceAccount {
    ServiceAccount::parse(&account_json(TEST_KEY_PKCS8)).unwrap()
}

fn cache() -> CredentialCache {
    CredentialCache::new(
        Provider::GcpServiceAccount {
            account: Box::new(account()),
            cluster: "gcp_token".into(),
        },
        Duration::from_secs(5),
    )
}

fn granted(token: &str, expires_in: u64) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})
            .to_string()
            .into_bytes(),
    }
}

fn answer(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn tok(c: &CredentialCache, secs: u64) -> Option<&str> {
    match c.credential(at(secs).mono) {
        Some(Credential::Bearer(t)) => Some(t.expose()),
        _ => None,
    }
}

#[test]
fn first_request_has_the_token_endpoint_shape() {
    let mut c = cache();
    assert_eq!(c.credential(at(0).mono), None);
    let r = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.cluster, "gcp_token");
    assert_eq!(r.authority, "127.0.0.1:9024");
    assert_eq!(r.path, "/oauth2/token");
    assert_eq!(r.timeout, Duration::from_secs(5));
    assert!(r.headers.contains(&(
        "content-type".into(),
        "application/x-www-form-urlencoded".into()
    )));
    let body = String::from_utf8(r.body.clone().unwrap()).unwrap();
    let assertion = body
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(assertion.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iat"], json!(T0));
    // The assertion never shows in the request's Debug.
    let d = format!("{r:?}");
    assert!(!d.contains(assertion) && !d.contains("eyJ"), "{d}");
}

#[test]
fn fetches_once_reuses_and_renews_in_the_background() {
    let mut c = cache();
    assert!(c.next_request(at(0)).unwrap().is_some());
    // One request at a time.
    assert_eq!(c.next_request(at(1)), Ok(None));
    assert_eq!(c.on_response(granted("tok-1", 3600), at(1)), Ok(()));
    assert_eq!(tok(&c, 1), Some("tok-1"));
    assert_eq!(c.expires_at(), Some(at(3600).wall));
    // Reused, no request, until 80 % of the lifetime (48 min, counted
    // from when the request was sent).
    assert_eq!(c.next_request(at(2879)), Ok(None));
    assert_eq!(tok(&c, 2879), Some("tok-1"));
    let renewal = c.next_request(at(2880)).unwrap();
    assert!(renewal.is_some());
    // While it is in flight the old token is still served.
    assert_eq!(c.next_request(at(2881)), Ok(None));
    assert_eq!(tok(&c, 2884), Some("tok-1"));
    c.on_response(granted("tok-2", 3600), at(2885)).unwrap();
    assert_eq!(tok(&c, 2885), Some("tok-2"));
    assert_eq!(c.expires_at(), Some(at(2880 + 3600).wall));
    assert_eq!(c.next_request(at(2886)), Ok(None));
}

#[test]
fn renewal_window_follows_the_lifetime() {
    // (lifetime, renewal after): 80 %, 5 minutes before expiry, or
    // half the lifetime, as the policy says.
    for (lifetime, renew) in [(3600, 2880), (1200, 900), (600, 300), (200, 100)] {
        let mut c = cache();
        c.next_request(at(0)).unwrap().unwrap();
        c.on_response(granted("t", lifetime), at(0)).unwrap();
        assert_eq!(c.next_request(at(renew - 1)), Ok(None), "{lifetime}");
        assert!(c.next_request(at(renew)).unwrap().is_some(), "{lifetime}");
    }
}

#[test]
fn token_expires_when_renewals_fail() {
    let mut c = cache();
    c.next_request(at(0)).unwrap().unwrap();
    c.on_response(granted("tok-1", 3600), at(0)).unwrap();
    let mut now = 2880;
    while now < 3600 {
        if c.next_request(at(now)).unwrap().is_some() {
            let e = c.on_response(answer(503, "upstream connect error"), at(now));
            assert!(e.is_err());
        }
        // Served until 30 s before expiry, never after.
        assert_eq!(tok(&c, now).is_some(), now < 3570, "{now}");
        now += 1;
    }
    // A later success brings a token back.
    c.on_response(granted("tok-2", 3600), at(3600)).unwrap();
    assert_eq!(tok(&c, 3600), Some("tok-2"));
}

#[test]
fn failures_back_off_exponentially_up_to_a_minute() {
    let mut c = cache();
    let mut now = 0;
    let mut gaps = Vec::new();
    let mut last = 0;
    for _ in 0..9 {
        while c.next_request(at(now)).unwrap().is_none() {
            now += 1;
        }
        gaps.push(now - last);
        last = now;
        c.on_response(answer(500, ""), at(now)).unwrap_err();
    }
    assert_eq!(gaps, [0, 1, 2, 4, 8, 16, 32, 60, 60]);
    // A success resets the backoff.
    while c.next_request(at(now)).unwrap().is_none() {
        now += 1;
    }
    c.on_response(granted("t", 3600), at(now)).unwrap();
    c.invalidate();
    assert_eq!(tok(&c, now), None);
    assert!(c.next_request(at(now)).unwrap().is_some());
    c.on_response(answer(500, ""), at(now)).unwrap_err();
    assert_eq!(c.next_request(at(now)), Ok(None));
    assert!(c.next_request(at(now + 1)).unwrap().is_some());
}

#[test]
fn errors_say_what_the_endpoint_said() {
    let mut c = cache();
    let mut fail = |response: HttpResponse| {
        c.next_request(at(0)).unwrap();
        let e = c.on_response(response, at(0)).unwrap_err();
        c.retry_at = Instant::ZERO;
        e.to_string()
    };
    assert_eq!(
        fail(answer(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
        )),
        "token endpoint answered 400: invalid_grant: Invalid JWT Signature."
    );
    assert_eq!(
        fail(answer(401, r#"{"error":"invalid_client"}"#)),
        "token endpoint answered 401: invalid_client"
    );
    assert_eq!(
        fail(answer(
            403,
            r#"{"error":{"code":403,"status":"PERMISSION_DENIED","message":"denied"}}"#
        )),
        "token endpoint answered 403: PERMISSION_DENIED: denied"
    );
    // Envoy's own 503: the endpoint was never reached.
    assert_eq!(
        fail(answer(503, "upstream connect error or\n disconnect")),
        "no answer from the token endpoint: the proxy got no answer from the upstream: upstream connect error or disconnect"
    );
    assert_eq!(
        fail(answer(503, "a store's own 503")),
        "token endpoint answered 503: a store's own 503"
    );
    assert_eq!(
        fail(answer(0, "no answer from the proxy")),
        "no answer from the token endpoint: no answer from the proxy"
    );
    assert_eq!(fail(answer(502, "")), "token endpoint answered 502");
    assert_eq!(
        fail(answer(200, "<html>")),
        "token endpoint answered 200 but the body is not JSON"
    );
    assert_eq!(
        fail(answer(200, r#"{"access_token":"","expires_in":3600}"#)),
        "token endpoint answered 200 but `access_token` is missing or empty"
    );
    assert_eq!(
        fail(answer(
            200,
            r#"{"access_token":"sekrit","token_type":"MAC"}"#
        )),
        "token endpoint answered 200 but `token_type` is `MAC`, expected `Bearer`"
    );
    let e = fail(answer(200, r#"{"access_token":"sekrit","expires_in":0}"#));
    assert_eq!(
        e,
        "token endpoint answered 200 but `expires_in` is not a positive number of seconds"
    );
}

#[test]
fn lenient_about_optional_token_fields() {
    for body in [
        r#"{"access_token":"t"}"#,
        r#"{"access_token":"t","expires_in":"3600","token_type":"bearer"}"#,
    ] {
        let mut c = cache();
        c.next_request(at(0)).unwrap();
        c.on_response(answer(200, body), at(0)).unwrap();
        assert_eq!(c.expires_at(), Some(at(3600).wall), "{body}");
    }
    // Absurd lifetimes are capped (and do not overflow).
    let mut c = cache();
    c.next_request(at(0)).unwrap();
    c.on_response(granted("t", u64::MAX), at(0)).unwrap();
    assert_eq!(c.expires_at(), Some(at(12 * 3600).wall));
}

#[test]
fn a_lost_request_does_not_block_renewals_forever() {
    let mut c = cache();
    c.next_request(at(0)).unwrap().unwrap();
    // Timeout 5 s plus the 60 s grace.
    assert_eq!(c.next_request(at(64)), Ok(None));
    assert!(c.next_request(at(65)).unwrap().is_some());
}

#[test]
fn debug_masks_tokens() {
    let mut c = cache();
    c.next_request(at(0)).unwrap();
    c.on_response(granted("ya29.sekrit-token", 3600), at(0))
        .unwrap();
    let d = format!("{c:?}");
    assert!(!d.contains("sekrit") && d.contains("Secret(***)"), "{d}");
    assert!(d.contains("PrivateKey(***)"), "{d}");
}

// ---- the sources ----

fn imds() -> CredentialCache {
    CredentialCache::new(
        Provider::AwsImds(ImdsSource {
            cluster: "aws_imds".into(),
            authority: "169.254.169.254".into(),
        }),
        Duration::from_secs(2),
    )
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn aws_json(key: &str, expires_in_s: u64) -> String {
    json!({
        "Code": "Success",
        "LastUpdated": "2023-11-14T22:13:20Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": key,
        "SecretAccessKey": "wJalrXUtnFEMI-secret",
        "Token": "IQoJb3JpZ2luX2VjE-session",
        "Expiration": at(expires_in_s).wall.rfc3339(),
    })
    .to_string()
}

fn aws_key(c: &CredentialCache, secs: u64) -> Option<String> {
    match c.credential(at(secs).mono) {
        Some(Credential::Aws(a)) => Some(a.access_key_id.clone()),
        _ => None,
    }
}

/// IMDSv2 as the SDKs do it: a session token by PUT with its TTL, then
/// with that token the role name and the role's credentials.
#[test]
fn imdsv2_takes_a_session_token_then_the_role_then_its_credentials() {
    let mut c = imds();
    let put = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        (put.method.as_str(), put.path.as_str(), put.cluster.as_str()),
        ("PUT", "/latest/api/token", "aws_imds")
    );
    assert_eq!(put.authority, "169.254.169.254");
    assert_eq!(
        header(&put, "x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(c.next_request(at(0)), Ok(None), "one request at a time");
    c.on_response(answer(200, "AQAEA-session-token"), at(0))
        .unwrap();
    // The next step goes out at once, without waiting for a tick's due time.
    let role = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        (role.method.as_str(), role.path.as_str()),
        ("GET", "/latest/meta-data/iam/security-credentials/")
    );
    assert_eq!(
        header(&role, "x-aws-ec2-metadata-token"),
        Some("AQAEA-session-token")
    );
    assert!(!format!("{role:?}").contains("AQAEA"), "{role:?}");
    c.on_response(answer(200, "fleet-role\n"), at(0)).unwrap();
    assert_eq!(aws_key(&c, 0), None);
    let creds = c.next_request(at(1)).unwrap().unwrap();
    assert_eq!(
        creds.path,
        "/latest/meta-data/iam/security-credentials/fleet-role"
    );
    assert_eq!(
        header(&creds, "x-aws-ec2-metadata-token"),
        Some("AQAEA-session-token")
    );
    c.on_response(answer(200, &aws_json("ASIA1", 6 * 3600)), at(1))
        .unwrap();
    assert_eq!(aws_key(&c, 1).as_deref(), Some("ASIA1"));
    let Some(Credential::Aws(a)) = c.credential(at(1).mono) else {
        panic!("AWS credentials")
    };
    assert_eq!(
        a.session_token.as_ref().map(Secret::expose),
        Some("IQoJb3JpZ2luX2VjE-session")
    );
    // The lifetime is what was left at the answer (t=1), counted from when
    // the fetch began (t=0): one second early, never late.
    assert_eq!(c.expires_at(), Some(at(6 * 3600 - 1).wall));
    // Renewed at 80 % (4 h 48 min), the whole flow again.
    assert_eq!(c.next_request(at(17_279)), Ok(None));
    let again = c.next_request(at(17_280)).unwrap().unwrap();
    assert_eq!(again.method, "PUT");
    // Served while the renewal runs.
    assert_eq!(aws_key(&c, 17_300).as_deref(), Some("ASIA1"));
    let d = format!("{c:?}");
    assert!(!d.contains("wJalrXUtnFEMI") && !d.contains("IQoJb3"), "{d}");
}

#[test]
fn imds_failures_name_the_step_and_start_the_flow_over() {
    let mut c = imds();
    c.next_request(at(0)).unwrap().unwrap();
    let e = c.on_response(answer(403, ""), at(0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "EC2 instance metadata service (IMDSv2) answered 403"
    );
    // Backoff, then from the session token again.
    assert_eq!(c.next_request(at(0)), Ok(None));
    assert_eq!(c.next_request(at(1)).unwrap().unwrap().method, "PUT");
    c.on_response(answer(200, "tok"), at(1)).unwrap();
    c.next_request(at(1)).unwrap().unwrap();
    let e = c.on_response(answer(404, "Not Found"), at(1)).unwrap_err();
    assert_eq!(e.failure, Failure::Malformed(Malformed::NoRole));
    assert!(e.to_string().contains("no IAM role is attached"), "{e}");
    c.retry_at = Instant::ZERO;
    assert_eq!(c.next_request(at(2)).unwrap().unwrap().method, "PUT");
    c.on_response(answer(200, ""), at(2)).unwrap_err();
    c.retry_at = Instant::ZERO;
    c.next_request(at(3)).unwrap().unwrap();
    c.on_response(answer(200, "tok"), at(3)).unwrap();
    c.next_request(at(3)).unwrap().unwrap();
    c.on_response(answer(200, "r"), at(3)).unwrap();
    c.next_request(at(3)).unwrap().unwrap();
    let failed = json!({"Code": "AssumeRoleUnauthorizedAccess", "Message": "denied"}).to_string();
    let e = c.on_response(answer(200, &failed), at(3)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "EC2 instance metadata service (IMDSv2) answered 200 but `Code` is `AssumeRoleUnauthorizedAccess`, not `Success`"
    );
}

fn container(token: Option<&str>) -> CredentialCache {
    CredentialCache::new(
        Provider::AwsContainer(ContainerSource {
            cluster: "aws_container_credentials".into(),
            authority: "169.254.170.2".into(),
            path: "/v2/credentials/task-1?x=y".into(),
            authorization: token.map(Secret::new),
        }),
        Duration::from_secs(2),
    )
}

#[test]
fn container_credentials_carry_the_authorization_token() {
    let mut c = container(Some("pod-identity-token"));
    let r = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.authority.as_str()),
        ("GET", "/v2/credentials/task-1?x=y", "169.254.170.2")
    );
    assert_eq!(header(&r, "authorization"), Some("pod-identity-token"));
    assert!(!format!("{c:?}").contains("pod-identity-token"));
    assert!(
        !format!("{c:?}").contains("x=y"),
        "the query stays out of Debug"
    );
    let body = json!({
        "AccessKeyId": "ASIA2",
        "SecretAccessKey": "s",
        "Token": "t",
        "Expiration": at(900).wall.rfc3339(),
    });
    c.on_response(answer(200, &body.to_string()), at(0))
        .unwrap();
    assert_eq!(aws_key(&c, 0).as_deref(), Some("ASIA2"));
    let plain = container(None).next_request(at(0)).unwrap().unwrap();
    assert_eq!(header(&plain, "authorization"), None);
}

#[test]
fn aws_credential_answers_are_checked_field_by_field() {
    for (body, expected) in [
        (
            json!({"SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}),
            "`AccessKeyId` is missing or empty",
        ),
        (
            json!({"AccessKeyId":"a","Token":"t","Expiration":"2030-01-01T00:00:00Z"}),
            "`SecretAccessKey` is missing or empty",
        ),
        (
            json!({"AccessKeyId":"a","SecretAccessKey":"s","Expiration":"2030-01-01T00:00:00Z"}),
            "`Token` is missing or empty",
        ),
        (
            json!({"AccessKeyId":"a","SecretAccessKey":"s","Token":"t","Expiration":"soon"}),
            "`Expiration` is not an RFC 3339 time in the future",
        ),
        (
            json!({"AccessKeyId":"a","SecretAccessKey":"s","Token":"t","Expiration":"2001-01-01T00:00:00Z"}),
            "`Expiration` is not an RFC 3339 time in the future",
        ),
    ] {
        let mut c = container(None);
        c.next_request(at(0)).unwrap().unwrap();
        let e = c
            .on_response(answer(200, &body.to_string()), at(0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("container credentials endpoint answered 200 but {expected}")
        );
        assert!(!e.to_string().contains("\"s\""));
    }
    let mut c = container(None);
    c.next_request(at(0)).unwrap().unwrap();
    let e = c
        .on_response(
            answer(401, r#"{"Code":"AccessDenied","Message":"bad token"}"#),
            at(0),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "container credentials endpoint answered 401: AccessDenied: bad token"
    );
}

#[test]
fn gcp_metadata_asks_for_the_default_accounts_token() {
    let mut c = CredentialCache::new(
        Provider::GcpMetadata(GcpMetadata {
            cluster: "gcp_metadata".into(),
            authority: "metadata.google.internal".into(),
        }),
        Duration::from_secs(2),
    );
    let r = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.cluster.as_str()),
        (
            "GET",
            "/computeMetadata/v1/instance/service-accounts/default/token",
            "gcp_metadata"
        )
    );
    assert_eq!(header(&r, "metadata-flavor"), Some("Google"));
    c.on_response(granted("ya29.meta", 3599), at(0)).unwrap();
    assert_eq!(tok(&c, 0), Some("ya29.meta"));
    let e = {
        c.invalidate();
        c.next_request(at(0)).unwrap().unwrap();
        c.on_response(answer(503, "down"), at(0)).unwrap_err()
    };
    assert_eq!(e.to_string(), "GCP metadata server answered 503: down");
}

#[test]
fn entra_id_client_credentials_grant() {
    let mut c = CredentialCache::new(
        Provider::AzureClientSecret(AzureClientSecret {
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222".into(),
            secret: Secret::new("s3cr&t=~x"),
            cluster: "azure_login".into(),
            authority: "login.microsoftonline.com".into(),
        }),
        Duration::from_secs(2),
    );
    let r = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.authority.as_str()),
        (
            "POST",
            "/contoso.onmicrosoft.com/oauth2/v2.0/token",
            "login.microsoftonline.com"
        )
    );
    let body = String::from_utf8(r.body.clone().unwrap()).unwrap();
    assert_eq!(
        body,
        "grant_type=client_credentials&client_id=11111111-2222&client_secret=s3cr%26t%3D~x&scope=https%3A%2F%2Fstorage.azure.com%2F.default"
    );
    let d = format!("{c:?} {r:?}");
    assert!(!d.contains("s3cr"), "{d}");
    let e = c
        .on_response(
            answer(
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
            ),
            at(0),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Microsoft Entra ID token endpoint answered 401: invalid_client: AADSTS7000215: Invalid client secret provided."
    );
}

#[test]
fn azure_managed_identity_through_imds() {
    let source = |client_id: Option<&str>| {
        CredentialCache::new(
            Provider::AzureManagedIdentity(AzureManagedIdentity {
                client_id: client_id.map(str::to_string),
                cluster: "azure_imds".into(),
                authority: "169.254.169.254".into(),
            }),
            Duration::from_secs(2),
        )
    };
    let mut c = source(None);
    let r = c.next_request(at(0)).unwrap().unwrap();
    assert_eq!(
        r.path,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F"
    );
    assert_eq!(header(&r, "metadata"), Some("true"));
    // IMDS sends `expires_in` as a string.
    let body = json!({"access_token":"eyJ.mi","expires_in":"3599","expires_on":"1700003599",
        "resource":"https://storage.azure.com/","token_type":"Bearer"});
    c.on_response(answer(200, &body.to_string()), at(0))
        .unwrap();
    assert_eq!(tok(&c, 0), Some("eyJ.mi"));
    assert_eq!(c.expires_at(), Some(at(3599).wall));
    let user = source(Some("abc-123"))
        .next_request(at(0))
        .unwrap()
        .unwrap();
    assert!(user.path.ends_with("&client_id=abc-123"), "{}", user.path);
}
