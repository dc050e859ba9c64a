//! Fake workload-identity credential endpoints, each a small HTTP/1.1
//! server on 127.0.0.1 (the harness's [`HttpServer`]), that require what
//! the real services require and answer in their JSON shapes:
//!
//! - [`Ec2Imds`]: EC2 instance metadata, IMDSv2 (session token PUT, then
//!   the role name and the role's credentials).
//! - [`ContainerCredentials`]: the ECS / EKS Pod Identity container
//!   credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN`).
//! - [`GcpMetadata`]: the GCE metadata server's service-account token.
//! - [`EntraTokenEndpoint`]: Microsoft Entra ID's v2.0 token endpoint,
//!   client credentials grant (secret, or a federated client assertion).
//! - [`AzureImds`]: Azure IMDS managed identity tokens.
//!
//! The credentials are real where a store can check them: the AWS fakes
//! hand out STS temporary credentials from moto (a fresh AssumeRole per
//! fetch, [`AwsRoleSource`]) whose session token moto's S3 verifies; the
//! GCP token goes into the [`crate::gcs::GcsFront`]'s accepted set (so the
//! front accepts it until it expires, and nothing else); the Azure tokens
//! are JWTs that Azurite `--oauth basic` accepts (issuer
//! `https://sts.windows.net/<tenant>/`, audience the storage resource,
//! `nbf`/`iat`/`exp`), RS256-signed with a harness key (Azurite does not
//! check signatures; [`verify_azure_jwt`] does, for tests that want to).
//! See [`crate::azure::Azurite::start_https_oauth`] for what Azurite checks.
//!
//! Every fake has the same controls:
//! - a credential lifetime ([`Ec2Imds::set_lifetime`] etc., default one
//!   hour): the expiry it REPORTS (`Expiration`, `expires_in`,
//!   `expires_on`) is now + lifetime, so renewals can be tested with e.g.
//!   20 s (the GCP token and the Azure JWT `exp` really expire then; moto's
//!   STS credentials stay valid for its own hour);
//! - `down()` (the port refuses connections, open ones are cut), `up()`
//!   (back, answering normally), `fail_with(503)` (listening but answering
//!   that status to everything), `set_delay(d)` (each answer waits `d`);
//! - a request log ([`LoggedRequest`]: method, target, headers, body, status),
//!   `requests()`, `request_count()`, `clear_requests()`.

use crate::http::{self, Headers, HttpServer, Reply, Request};
use crate::moto::{Moto, Sts, TemporaryCredentials};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::gcs::{lock, unix_now};

/// The credential lifetime every fake starts with.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A random 64-bit value (std's per-instance SipHash keys are random).
fn random_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn random_hex(words: usize) -> String {
    (0..words)
        .map(|_| format!("{:016x}", random_u64()))
        .collect()
}

fn json_reply(status: u16, body: &Value) -> Reply {
    Reply::new(status, "application/json", body.to_string())
}

fn text_reply(status: u16, body: &str) -> Reply {
    Reply::new(status, "text/plain", body.to_string())
}

fn split_target(target: &str) -> (&str, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (path, http::query_pairs(query))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ------------------------------------------------------------- common

/// One request a fake received, and the status it answered.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Names lower-cased.
    pub headers: Headers,
    /// The request body as received (a form POST's fields: see
    /// [`LoggedRequest::form`]).
    pub body: Vec<u8>,
    pub status: u16,
    pub at: SystemTime,
}

impl LoggedRequest {
    /// First header with that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as `application/x-www-form-urlencoded` pairs, decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        http::query_pairs(&String::from_utf8_lossy(&self.body))
    }

    /// The value of the form field `name`, if the body has it.
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct Control {
    lifetime: Mutex<Duration>,
    outage: Mutex<Option<u16>>,
    delay: Mutex<Duration>,
    log: Mutex<Vec<LoggedRequest>>,
}

/// The server and the controls every fake shares.
struct Base {
    server: HttpServer,
    ctl: Arc<Control>,
}

impl Base {
    fn start(
        handler: impl Fn(&Request, Duration) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Base> {
        let ctl = Arc::new(Control {
            lifetime: Mutex::new(DEFAULT_LIFETIME),
            outage: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            log: Mutex::new(Vec::new()),
        });
        let c = ctl.clone();
        let server = HttpServer::start(
            crate::ports::free_port(),
            Arc::new(move |req: &Request| {
                let delay = *lock(&c.delay);
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let outage = *lock(&c.outage);
                let reply = match outage {
                    Some(status) => text_reply(status, "fake credential endpoint: outage"),
                    None => {
                        let lifetime = *lock(&c.lifetime);
                        handler(req, lifetime)
                    }
                };
                lock(&c.log).push(LoggedRequest {
                    method: req.method.clone(),
                    path: req.path.clone(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                    status: reply.status,
                    at: SystemTime::now(),
                });
                reply
            }),
        )?;
        Ok(Base { server, ctl })
    }
}

/// The controls every fake has (see the module doc).
macro_rules! fake_controls {
    () => {
        /// Its port on 127.0.0.1.
        pub fn port(&self) -> u16 {
            self.base.server.port()
        }

        /// `http://127.0.0.1:<port>`.
        pub fn endpoint(&self) -> String {
            format!("http://127.0.0.1:{}", self.port())
        }

        /// `127.0.0.1:<port>`.
        pub fn authority(&self) -> String {
            format!("127.0.0.1:{}", self.port())
        }

        /// From now on, credentials it issues are reported (and, where the
        /// fake decides, valid) for `lifetime`.
        pub fn set_lifetime(&self, lifetime: Duration) {
            *lock(&self.base.ctl.lifetime) = lifetime;
        }

        /// The current credential lifetime.
        pub fn lifetime(&self) -> Duration {
            *lock(&self.base.ctl.lifetime)
        }

        /// Goes down: the port refuses connections, open ones are cut.
        pub fn down(&self) {
            self.base.server.down();
        }

        /// Back up on the same port, answering normally (also ends a
        /// [`Self::fail_with`]).
        pub fn up(&self) -> std::io::Result<()> {
            *lock(&self.base.ctl.outage) = None;
            self.base.server.up()
        }

        /// True while listening.
        pub fn is_up(&self) -> bool {
            self.base.server.is_up()
        }

        /// Keeps listening but answers `status` (e.g. 503) to every
        /// request until [`Self::up`].
        pub fn fail_with(&self, status: u16) {
            *lock(&self.base.ctl.outage) = Some(status);
        }

        /// Every answer waits `delay` first (zero: none).
        pub fn set_delay(&self, delay: Duration) {
            *lock(&self.base.ctl.delay) = delay;
        }

        /// Every request so far, in order.
        pub fn requests(&self) -> Vec<LoggedRequest> {
            lock(&self.base.ctl.log).clone()
        }

        /// How many requests so far.
        pub fn request_count(&self) -> usize {
            lock(&self.base.ctl.log).len()
        }

        /// Forgets the request log.
        pub fn clear_requests(&self) {
            lock(&self.base.ctl.log).clear();
        }
    };
}

// ------------------------------------------------------- AWS (moto STS)

/// Where the AWS fakes get credentials: an STS AssumeRole of one role at
/// a moto server (in auth mode, [`Moto::start`]), fresh for every fetch.
#[derive(Clone, Debug)]
pub struct AwsRoleSource {
    sts: Sts,
    role_arn: String,
    role_name: String,
}

/// An inline role policy allowing every S3 action on `bucket` and its
/// objects.
pub fn s3_bucket_policy(bucket: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
        "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]}]})
}

impl AwsRoleSource {
    /// Creates role `role_name` with the inline `policy` at `moto` (e.g.
    /// [`s3_bucket_policy`]) and assumes it on every fetch.
    pub fn create(moto: &Moto, role_name: &str, policy: &Value) -> Result<AwsRoleSource, String> {
        let role_arn = moto.create_role(role_name, policy)?;
        Ok(AwsRoleSource {
            sts: moto.sts(),
            role_arn,
            role_name: role_name.into(),
        })
    }

    /// The role's ARN.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The role's name.
    pub fn role_name(&self) -> &str {
        &self.role_name
    }

    /// A fresh AssumeRole; its `expiration` replaced by now + `lifetime`
    /// (what the fakes report).
    pub fn fetch(&self, lifetime: Duration) -> Result<TemporaryCredentials, String> {
        let session = format!("envoy-test-{:08x}", random_u64() as u32);
        let mut creds = self.sts.assume_role(&self.role_arn, &session)?;
        creds.expiration = crate::envelope::format_rfc3339(SystemTime::now() + lifetime);
        Ok(creds)
    }
}

/// The JSON fields both AWS endpoints share.
fn aws_fields(creds: &TemporaryCredentials) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("AccessKeyId".into(), creds.access_key_id.clone().into());
    m.insert(
        "SecretAccessKey".into(),
        creds.secret_access_key.clone().into(),
    );
    m.insert("Token".into(), creds.session_token.clone().into());
    m.insert("Expiration".into(), creds.expiration.clone().into());
    m
}

// ------------------------------------------------------------- EC2 IMDS

/// `PUT` here for an IMDSv2 session token.
pub const IMDS_TOKEN_PATH: &str = "/latest/api/token";
/// The role list; the role's credentials are at this path + the role name.
pub const IMDS_CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
/// Request header of the token PUT: the session token's TTL (1..=21600 s).
pub const IMDS_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// Request header of metadata GETs: the session token.
pub const IMDS_TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

struct ImdsState {
    source: AwsRoleSource,
    role: String,
    /// Session token -> expiry.
    tokens: Mutex<HashMap<String, SystemTime>>,
    allow_v1: AtomicBool,
    issued: Mutex<Vec<TemporaryCredentials>>,
}

/// A fake EC2 instance metadata service, IMDSv2 required
/// (`HttpTokens=required`):
///
/// - `PUT /latest/api/token` with `x-aws-ec2-metadata-token-ttl-seconds:
///   N` (1..=21600; missing or out of range: 400; a request carrying
///   `X-Forwarded-For`: 403, as IMDS refuses proxied token requests)
///   answers a session token (`text/plain`, the TTL echoed in the same
///   header); other methods there: 405.
/// - `GET /latest/meta-data/iam/security-credentials/` with
///   `x-aws-ec2-metadata-token: <a token it issued, not expired>`
///   answers the role name; missing or unknown token: 401 (unless
///   [`Ec2Imds::allow_imdsv1`]).
/// - `GET /latest/meta-data/iam/security-credentials/<role>` (same check)
///   answers `{"Code":"Success","LastUpdated":"<now>","Type":"AWS-HMAC",
///   "AccessKeyId","SecretAccessKey","Token","Expiration":"<now +
///   lifetime, RFC 3339 Z>"}` from a fresh moto AssumeRole; another role
///   name: 404. Anything else: 404.
pub struct Ec2Imds {
    base: Base,
    state: Arc<ImdsState>,
}

impl Ec2Imds {
    /// Starts on a free port, serving `source`'s role under the name
    /// `role_name`.
    pub fn start(source: AwsRoleSource, role_name: &str) -> std::io::Result<Ec2Imds> {
        let state = Arc::new(ImdsState {
            source,
            role: role_name.into(),
            tokens: Mutex::new(HashMap::new()),
            allow_v1: AtomicBool::new(false),
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let base = Base::start(move |req, lifetime| imds_handle(&st, req, lifetime))?;
        Ok(Ec2Imds { base, state })
    }

    fake_controls!();

    /// The role name it lists.
    pub fn role_name(&self) -> &str {
        &self.state.role
    }

    /// Also answers metadata GETs without a session token (IMDSv1,
    /// `HttpTokens=optional`); a wrong token is still 401.
    pub fn allow_imdsv1(&self, allow: bool) {
        self.state.allow_v1.store(allow, Ordering::SeqCst);
    }

    /// Invalidates every session token issued so far (next GETs: 401).
    pub fn expire_session_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// The session tokens issued so far.
    pub fn session_tokens(&self) -> Vec<String> {
        lock(&self.state.tokens).keys().cloned().collect()
    }

    /// Every credential set it handed out, in order (`expiration` as
    /// reported).
    pub fn issued_credentials(&self) -> Vec<TemporaryCredentials> {
        lock(&self.state.issued).clone()
    }
}

fn imds_html(status: u16, title: &str) -> Reply {
    Reply::new(
        status,
        "text/html",
        format!("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head><title>{status} - {title}</title></head><body><h1>{status} - {title}</h1></body></html>\n"),
    )
}

fn imds_handle(s: &ImdsState, req: &Request, lifetime: Duration) -> Reply {
    let (path, _) = split_target(&req.path);
    if path == IMDS_TOKEN_PATH {
        if req.method != "PUT" {
            return imds_html(405, "Method Not Allowed");
        }
        if req.header("x-forwarded-for").is_some() {
            return imds_html(403, "Forbidden");
        }
        let ttl = req
            .header(IMDS_TTL_HEADER)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| (1..=21600).contains(t));
        let Some(ttl) = ttl else {
            return imds_html(400, "Bad Request");
        };
        let token = STANDARD.encode(format!("imds-{}", random_hex(3)));
        lock(&s.tokens).insert(token.clone(), SystemTime::now() + Duration::from_secs(ttl));
        return text_reply(200, &token).with_header(IMDS_TTL_HEADER, &ttl.to_string());
    }
    if !path.starts_with("/latest/meta-data") {
        return imds_html(404, "Not Found");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return imds_html(405, "Method Not Allowed");
    }
    match req.header(IMDS_TOKEN_HEADER) {
        Some(t) => {
            let valid = lock(&s.tokens)
                .get(t.trim())
                .is_some_and(|exp| SystemTime::now() < *exp);
            if !valid {
                return imds_html(401, "Unauthorized");
            }
        }
        None if s.allow_v1.load(Ordering::SeqCst) => {}
        None => return imds_html(401, "Unauthorized"),
    }
    if path == IMDS_CREDENTIALS_PATH || path == IMDS_CREDENTIALS_PATH.trim_end_matches('/') {
        return text_reply(200, &s.role);
    }
    match path.strip_prefix(IMDS_CREDENTIALS_PATH) {
        Some(role) if role == s.role => match s.source.fetch(lifetime) {
            Ok(creds) => {
                let mut m = serde_json::Map::new();
                m.insert("Code".into(), "Success".into());
                m.insert(
                    "LastUpdated".into(),
                    crate::envelope::format_rfc3339(SystemTime::now()).into(),
                );
                m.insert("Type".into(), "AWS-HMAC".into());
                m.extend(aws_fields(&creds));
                lock(&s.issued).push(creds);
                // IMDS answers JSON as text/plain.
                text_reply(200, &Value::Object(m).to_string())
            }
            Err(e) => text_reply(500, &format!("fake IMDS: AssumeRole failed: {e}")),
        },
        _ => imds_html(404, "Not Found"),
    }
}

// --------------------------------------------------- container credentials

struct ContainerState {
    source: AwsRoleSource,
    path: String,
    token: Mutex<Option<String>>,
    issued: Mutex<Vec<TemporaryCredentials>>,
}

/// A fake ECS / EKS Pod Identity container credentials endpoint:
///
/// - `GET <path>` (query ignored; other paths 404, other methods 405);
/// - when a token is configured, `Authorization: <token>` exactly (no
///   `Bearer`), as `AWS_CONTAINER_AUTHORIZATION_TOKEN` is sent: missing
///   401, different 403 (JSON `{"code","message"}`);
/// - answers `{"RoleArn","AccessKeyId","SecretAccessKey","Token",
///   "Expiration":"<now + lifetime, RFC 3339 Z>"}` (`application/json`)
///   from a fresh moto AssumeRole.
pub struct ContainerCredentials {
    base: Base,
    state: Arc<ContainerState>,
}

impl ContainerCredentials {
    /// Starts on a free port serving `path` (e.g. `/v2/credentials/abc`),
    /// requiring `Authorization: <token>` when `token` is given.
    pub fn start(
        source: AwsRoleSource,
        path: &str,
        token: Option<&str>,
    ) -> std::io::Result<ContainerCredentials> {
        let state = Arc::new(ContainerState {
            source,
            path: path.into(),
            token: Mutex::new(token.map(str::to_string)),
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let base = Base::start(move |req, lifetime| container_handle(&st, req, lifetime))?;
        Ok(ContainerCredentials { base, state })
    }

    fake_controls!();

    /// `http://127.0.0.1:<port><path>`: `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn full_uri(&self) -> String {
        format!("{}{}", self.endpoint(), self.state.path)
    }

    /// The path it serves (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`).
    pub fn path(&self) -> &str {
        &self.state.path
    }

    /// Changes (rotates) or removes the required token.
    pub fn set_auth_token(&self, token: Option<&str>) {
        *lock(&self.state.token) = token.map(str::to_string);
    }

    /// Every credential set it handed out, in order (`expiration` as
    /// reported).
    pub fn issued_credentials(&self) -> Vec<TemporaryCredentials> {
        lock(&self.state.issued).clone()
    }
}

fn container_handle(s: &ContainerState, req: &Request, lifetime: Duration) -> Reply {
    let (path, _) = split_target(&req.path);
    if path != s.path {
        return json_reply(
            404,
            &json!({"code": "NotFound", "message": format!("no credentials at {path}")}),
        );
    }
    if req.method != "GET" {
        return json_reply(
            405,
            &json!({"code": "MethodNotAllowed", "message": "only GET"}),
        );
    }
    if let Some(expected) = lock(&s.token).clone() {
        match req.header("authorization") {
            None => {
                return json_reply(
                    401,
                    &json!({"code": "AccessDenied", "message": "Authorization header missing"}),
                )
            }
            Some(got) if got != expected => {
                return json_reply(
                    403,
                    &json!({"code": "AccessDenied", "message": "invalid authorization token"}),
                )
            }
            Some(_) => {}
        }
    }
    match s.source.fetch(lifetime) {
        Ok(creds) => {
            let mut m = serde_json::Map::new();
            m.insert("RoleArn".into(), s.source.role_arn().into());
            m.extend(aws_fields(&creds));
            lock(&s.issued).push(creds);
            json_reply(200, &Value::Object(m))
        }
        Err(e) => json_reply(
            500,
            &json!({"code": "InternalError", "message": format!("AssumeRole failed: {e}")}),
        ),
    }
}

// ---------------------------------------------------------- GCP metadata

/// The default service account's token path.
pub const GCP_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// The account the metadata server reports.
pub const GCP_METADATA_EMAIL: &str = "fallback-config-vm@envoy-test.iam.gserviceaccount.com";

struct GcpState {
    accepted: crate::gcs::Tokens,
    issued: Mutex<Vec<String>>,
}

/// A fake GCE metadata server:
///
/// - `GET /computeMetadata/v1/instance/service-accounts/default/token`
///   (also `.../<email>/token`; query such as `scopes=` ignored) with
///   `Metadata-Flavor: Google` (else 403; `X-Forwarded-For` present:
///   403, as the real server refuses proxied requests) answers
///   `{"access_token":"ya29...","expires_in":<lifetime s>,"token_type":"Bearer"}`
///   with `Metadata-Flavor: Google`. Each request issues a NEW token and
///   adds it, expiring after the lifetime, to the accepted set given at
///   start (the [`crate::gcs::GcsFront`]'s: the front then accepts it and
///   refuses it once expired).
/// - `.../default/email` and `/computeMetadata/v1/project/project-id`
///   (same header check) answer text; `GET /` answers `computeMetadata/`
///   (the detection ping). Anything else: 404.
pub struct GcpMetadata {
    base: Base,
    state: Arc<GcpState>,
}

impl GcpMetadata {
    /// Starts on a free port, adding its tokens to `accepted` (e.g.
    /// `stack.token.accepted_tokens()` of a [`crate::gcs::GcsStack`]).
    pub fn start(accepted: crate::gcs::Tokens) -> std::io::Result<GcpMetadata> {
        let state = Arc::new(GcpState {
            accepted,
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let base = Base::start(move |req, lifetime| gcp_handle(&st, req, lifetime))?;
        Ok(GcpMetadata { base, state })
    }

    fake_controls!();

    /// `127.0.0.1:<port>`: `GCE_METADATA_HOST`.
    pub fn host(&self) -> String {
        self.authority()
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }
}

fn gcp_handle(s: &GcpState, req: &Request, lifetime: Duration) -> Reply {
    let (path, _) = split_target(&req.path);
    let flavored = |r: Reply| r.with_header("metadata-flavor", "Google");
    if path == "/" {
        return flavored(text_reply(200, "computeMetadata/\n"));
    }
    if !path.starts_with("/computeMetadata/") {
        return flavored(text_reply(404, "Not Found"));
    }
    if req.header("x-forwarded-for").is_some() || req.header("metadata-flavor") != Some("Google") {
        return flavored(Reply::new(
            403,
            "text/html; charset=UTF-8",
            format!("Your client does not have permission to get URL <code>{path}</code> from this server. Missing Metadata-Flavor:Google header."),
        ));
    }
    if req.method != "GET" {
        return flavored(text_reply(405, "Method Not Allowed"));
    }
    let account = path
        .strip_prefix("/computeMetadata/v1/instance/service-accounts/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(a, _)| *a == "default" || *a == GCP_METADATA_EMAIL);
    match (account.map(|(_, what)| what), path) {
        (Some("token"), _) => {
            let token = format!("ya29.c.e2e-metadata-{}", random_hex(2));
            lock(&s.accepted).insert(token.clone(), SystemTime::now() + lifetime);
            lock(&s.issued).push(token.clone());
            flavored(json_reply(
                200,
                &json!({"access_token": token, "expires_in": lifetime.as_secs(),
                    "token_type": "Bearer"}),
            ))
        }
        (Some("email"), _) => flavored(text_reply(200, GCP_METADATA_EMAIL)),
        (_, "/computeMetadata/v1/project/project-id") => flavored(text_reply(200, "envoy-test")),
        _ => flavored(text_reply(404, "Not Found")),
    }
}

// ------------------------------------------------------------ Azure JWTs

/// The tenant the Azure fakes use unless told otherwise.
pub const AZURE_TENANT: &str = "72f988bf-0000-4000-8000-00000000e2e0";
/// The storage resource / scope audience.
pub const AZURE_STORAGE_RESOURCE: &str = "https://storage.azure.com/";
/// The only scope the Entra fake grants.
pub const AZURE_STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// `client_assertion_type` of a federated (workload identity) assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The `kid` of the harness's Azure token signing key.
pub const AZURE_KEY_ID: &str = "envoy-test-azure-1";

struct AzureKey {
    private: RsaPrivateKey,
    public: RsaPublicKey,
}

fn azure_key() -> &'static AzureKey {
    static KEY: OnceLock<AzureKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let k = crate::gcs::generate_key().unwrap_or_else(|e| panic!("{e}"));
        let b64: String = k
            .private_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|e| panic!("generated key PEM: {e}"));
        let private =
            RsaPrivateKey::from_pkcs8_der(&der).unwrap_or_else(|e| panic!("generated key: {e}"));
        AzureKey {
            private,
            public: k.public,
        }
    })
}

/// A v1 access token as Entra issues for Azure Storage: RS256 (harness
/// key, `kid` [`AZURE_KEY_ID`]), `aud` = `audience`, `iss` =
/// `https://sts.windows.net/<tenant>/`, `iat` = `nbf` = now - 5 min (as
/// Entra does), `exp` = now + `lifetime`, `appid`/`oid`/`sub`/`tid`,
/// `idtyp: app`, `ver: 1.0`.
pub fn azure_access_token(tenant: &str, audience: &str, appid: &str, lifetime: Duration) -> String {
    let now = unix_now();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": AZURE_KEY_ID, "x5t": AZURE_KEY_ID});
    let oid = format!("{:08x}-0000-4000-8000-{:012x}", random_u64() as u32, 0xe2e);
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now - 300,
        "nbf": now - 300,
        "exp": now + lifetime.as_secs(),
        "aio": random_hex(1),
        "appid": appid,
        "appidacr": "1",
        "idp": format!("https://sts.windows.net/{tenant}/"),
        "idtyp": "app",
        "oid": oid,
        "sub": oid,
        "tid": tenant,
        "uti": random_hex(1),
        "ver": "1.0",
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let digest = Sha256::digest(signing_input.as_bytes());
    let sig = azure_key()
        .private
        .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        .unwrap_or_else(|e| panic!("RS256 signing: {e}"));
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The claims of a JWT (no verification), `None` when it is not one.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let claims = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
}

/// Verifies a token from [`azure_access_token`] (RS256 with the harness
/// key) and returns its claims.
pub fn verify_azure_jwt(token: &str) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err("not three segments".into());
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| "signature not base64url")?;
    let digest = Sha256::digest(format!("{h}.{c}").as_bytes());
    azure_key()
        .public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .map_err(|_| "bad signature".to_string())?;
    jwt_claims(token).ok_or_else(|| "claims are not JSON".into())
}

// ------------------------------------------------------------- Entra ID

struct EntraState {
    tenant: String,
    client_id: String,
    client_secret: Mutex<Option<String>>,
    assertion: Mutex<Option<String>>,
    issued: Mutex<Vec<String>>,
}

/// A fake Microsoft Entra ID v2.0 token endpoint, client credentials:
///
/// `POST /<tenant>/oauth2/v2.0/token`, `Content-Type:
/// application/x-www-form-urlencoded`, with `grant_type=client_credentials`,
/// `client_id`, `scope=https://storage.azure.com/.default` and either
/// `client_secret` or (workload identity federation) `client_assertion` +
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
/// Checks, each with Entra's error JSON (`{"error","error_description":
/// "AADSTS...","error_codes","timestamp","trace_id","correlation_id"}`):
/// another tenant: 400 `invalid_request` (AADSTS90002); not a POST, or a
/// body that is not a form: 400 `invalid_request`; a missing parameter: 400
/// `invalid_request` (AADSTS900144); another grant: 400
/// `unsupported_grant_type`; another scope: 400 `invalid_scope`;
/// another client id (AADSTS700016), a wrong or missing secret
/// (AADSTS7000215 / AADSTS7000218), an assertion not the one configured
/// (AADSTS700213): 401 `invalid_client`.
/// Success: `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,
/// "access_token":"<JWT>"}` (numbers), the JWT from
/// [`azure_access_token`] with `aud` `https://storage.azure.com` and
/// `appid` the client id: Azurite `--oauth basic` accepts it.
pub struct EntraTokenEndpoint {
    base: Base,
    state: Arc<EntraState>,
}

impl EntraTokenEndpoint {
    /// Starts on a free port for `tenant`, accepting `client_id` with
    /// `client_secret`.
    pub fn start(
        tenant: &str,
        client_id: &str,
        client_secret: &str,
    ) -> std::io::Result<EntraTokenEndpoint> {
        let state = Arc::new(EntraState {
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: Mutex::new(Some(client_secret.into())),
            assertion: Mutex::new(None),
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let base = Base::start(move |req, lifetime| entra_handle(&st, req, lifetime))?;
        Ok(EntraTokenEndpoint { base, state })
    }

    fake_controls!();

    /// `http://127.0.0.1:<port>`: the authority host (`AZURE_AUTHORITY_HOST`).
    pub fn authority_host(&self) -> String {
        self.endpoint()
    }

    /// The token path, `/<tenant>/oauth2/v2.0/token`.
    pub fn token_path(&self) -> String {
        format!("/{}/oauth2/v2.0/token", self.state.tenant)
    }

    /// `http://127.0.0.1:<port>/<tenant>/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}{}", self.endpoint(), self.token_path())
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.state.tenant
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// Changes (rotates) the accepted secret; `None`: no secret works.
    pub fn set_client_secret(&self, secret: Option<&str>) {
        *lock(&self.state.client_secret) = secret.map(str::to_string);
    }

    /// Accepts `client_assertion` equal to `assertion` (e.g. the contents
    /// of `AZURE_FEDERATED_TOKEN_FILE`); `None`: no assertion works. (Real
    /// Entra verifies the assertion against the federated issuer; this
    /// fake compares it exactly.)
    pub fn accept_client_assertion(&self, assertion: Option<&str>) {
        *lock(&self.state.assertion) = assertion.map(str::to_string);
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }
}

fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Reply {
    let trace = random_hex(2);
    let ts = crate::envelope::format_rfc3339(SystemTime::now()).replace('T', " ");
    json_reply(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Timestamp: {ts}"),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": random_hex(2),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn entra_handle(s: &EntraState, req: &Request, lifetime: Duration) -> Reply {
    let (path, _) = split_target(&req.path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [tenant, "oauth2", "v2.0", "token"] = segments[..] else {
        return text_reply(404, "Not Found");
    };
    if tenant != s.tenant {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if req.method != "POST" {
        return entra_error(
            400,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let form_type = req.header("content-type").is_some_and(|t| {
        t.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let pairs = if form_type {
        http::query_pairs(&String::from_utf8_lossy(&req.body))
    } else {
        Vec::new()
    };
    let missing = |p: &str| {
        entra_error(
            400,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{p}'."),
        )
    };
    let Some(grant) = param(&pairs, "grant_type") else {
        return missing("grant_type");
    };
    if grant != "client_credentials" {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = param(&pairs, "client_id") else {
        return missing("client_id");
    };
    let Some(scope) = param(&pairs, "scope") else {
        return missing("scope");
    };
    if client_id != s.client_id {
        return entra_error(
            401,
            "invalid_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    if scope != AZURE_STORAGE_SCOPE {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    }
    match (
        param(&pairs, "client_secret"),
        param(&pairs, "client_assertion"),
    ) {
        (Some(secret), _) => {
            if lock(&s.client_secret).as_deref() != Some(secret) {
                return entra_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                );
            }
        }
        (None, Some(assertion)) => {
            if param(&pairs, "client_assertion_type") != Some(JWT_BEARER_ASSERTION) {
                return missing("client_assertion_type");
            }
            if lock(&s.assertion).as_deref() != Some(assertion) {
                return entra_error(
                    401,
                    "invalid_client",
                    700213,
                    "No matching federated identity record found for presented assertion.",
                );
            }
        }
        (None, None) => {
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        }
    }
    let token = azure_access_token(
        &s.tenant,
        AZURE_STORAGE_RESOURCE.trim_end_matches('/'),
        client_id,
        lifetime,
    );
    lock(&s.issued).push(token.clone());
    json_reply(
        200,
        &json!({"token_type": "Bearer", "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(), "access_token": token}),
    )
}

// ------------------------------------------------------------ Azure IMDS

/// The managed identity token path.
pub const AZURE_IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The `client_id` (appid) of the system-assigned identity.
pub const AZURE_SYSTEM_IDENTITY: &str = "5a1e0000-0000-4000-8000-00000000e2e1";

struct AzureImdsState {
    tenant: String,
    client_id: Option<String>,
    issued: Mutex<Vec<String>>,
}

/// A fake Azure IMDS managed identity endpoint:
///
/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<uri>`
/// `[&client_id=<id>]` with `Metadata: true`. Refusals (400, JSON
/// `{"error":"invalid_request","error_description":...}`): no `Metadata:
/// true` ("Required metadata header not specified"), `X-Forwarded-For`
/// present, no `api-version`, no `resource`; for a user-assigned identity
/// (a `client_id` given at start) a missing or different `client_id`, and
/// for the system-assigned one any `client_id`/`object_id`/`msi_res_id`:
/// "Identity not found". Other methods 405, other paths 404.
/// Success: `{"access_token":"<JWT>","client_id","expires_in":"N",
/// "expires_on":"<unix s>","ext_expires_in":"N","not_before":"<unix s>",
/// "resource":"<as asked>","token_type":"Bearer"}` (numbers as strings, as
/// IMDS sends them); the JWT's `aud` is the resource as asked (Azurite
/// accepts `https://storage.azure.com/`).
pub struct AzureImds {
    base: Base,
    state: Arc<AzureImdsState>,
}

impl AzureImds {
    /// Starts on a free port; `client_id`: a user-assigned identity that
    /// requests must name, `None`: the system-assigned identity.
    pub fn start(client_id: Option<&str>) -> std::io::Result<AzureImds> {
        let state = Arc::new(AzureImdsState {
            tenant: AZURE_TENANT.into(),
            client_id: client_id.map(str::to_string),
            issued: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let base = Base::start(move |req, lifetime| azure_imds_handle(&st, req, lifetime))?;
        Ok(AzureImds { base, state })
    }

    fake_controls!();

    /// `<endpoint>/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F`
    /// plus `&client_id=` for a user-assigned identity.
    pub fn token_url(&self) -> String {
        let mut u = format!(
            "{}{AZURE_IMDS_TOKEN_PATH}?api-version=2018-02-01&resource={}",
            self.endpoint(),
            crate::envoy::percent_encode(AZURE_STORAGE_RESOURCE)
        );
        if let Some(id) = &self.state.client_id {
            u.push_str(&format!("&client_id={}", crate::envoy::percent_encode(id)));
        }
        u
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }
}

fn imds_error(description: &str) -> Reply {
    json_reply(
        400,
        &json!({"error": "invalid_request", "error_description": description}),
    )
}

fn azure_imds_handle(s: &AzureImdsState, req: &Request, lifetime: Duration) -> Reply {
    let (path, pairs) = split_target(&req.path);
    if path != AZURE_IMDS_TOKEN_PATH {
        return text_reply(404, "Not Found");
    }
    if req.method != "GET" {
        return text_reply(405, "Method Not Allowed");
    }
    if req.header("x-forwarded-for").is_some() {
        return imds_error("Request has X-Forwarded-For header");
    }
    if req.header("metadata") != Some("true") {
        return imds_error("Required metadata header not specified");
    }
    if param(&pairs, "api-version").is_none_or(str::is_empty) {
        return imds_error("Required query variable 'api-version' is missing");
    }
    let Some(resource) = param(&pairs, "resource").filter(|r| !r.is_empty()) else {
        return imds_error("Required audience parameter not specified");
    };
    let asked = param(&pairs, "client_id");
    let client_id = match &s.client_id {
        Some(id) if asked == Some(id.as_str()) => id.clone(),
        Some(_) => return imds_error("Identity not found"),
        None if asked.is_some()
            || param(&pairs, "object_id").is_some()
            || param(&pairs, "msi_res_id").is_some() =>
        {
            return imds_error("Identity not found")
        }
        None => AZURE_SYSTEM_IDENTITY.to_string(),
    };
    let token = azure_access_token(&s.tenant, resource, &client_id, lifetime);
    lock(&s.issued).push(token.clone());
    let now = unix_now();
    let secs = lifetime.as_secs();
    json_reply(
        200,
        &json!({
            "access_token": token,
            "client_id": client_id,
            "expires_in": secs.to_string(),
            "expires_on": (now + secs).to_string(),
            "ext_expires_in": secs.to_string(),
            "not_before": (now - 300).to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

/// moto in auth mode (log in `dir`) with `bucket` and a role `role` that
/// may use it, whose credentials the AWS fakes hand out.
pub fn moto_with_role(
    dir: &crate::workdir::WorkDir,
    bucket: &str,
    role: &str,
) -> Result<(crate::moto::Moto, AwsRoleSource), String> {
    let moto = crate::moto::Moto::start(
        &crate::moto::require_moto_server(),
        &dir.join("moto.log"),
        crate::ports::free_port(),
    )?;
    moto.create_bucket(bucket)?;
    let source = AwsRoleSource::create(&moto, role, &s3_bucket_policy(bucket))?;
    Ok((moto, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_jwts_have_the_claims_azurite_checks_and_verify() {
        let t = azure_access_token(
            AZURE_TENANT,
            "https://storage.azure.com",
            "app",
            Duration::from_secs(20),
        );
        let c = verify_azure_jwt(&t).unwrap();
        assert_eq!(c["aud"], "https://storage.azure.com");
        assert!(c["iss"]
            .as_str()
            .unwrap()
            .starts_with("https://sts.windows.net/"));
        let now = unix_now();
        assert!(c["nbf"].as_u64().unwrap() <= now && c["iat"].as_u64().is_some());
        let exp = c["exp"].as_u64().unwrap();
        assert!(exp >= now + 19 && exp <= now + 21, "{exp} {now}");
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(json!({"aud": "x"}).to_string());
        assert!(verify_azure_jwt(&parts.join(".")).is_err());
        assert!(jwt_claims("garbage").is_none());
    }
}
