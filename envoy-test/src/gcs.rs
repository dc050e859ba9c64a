//! A GCS stack that checks what the GCS emulator does not: OAuth.
//!
//! gcp-storage-emulator serves the JSON API (media upload, `alt=media`
//! download) but checks no credentials, ignores generation preconditions,
//! sends no `x-goog-generation` and crashes on uploads typed
//! `application/json`. So the filter talks to it through two harness
//! servers:
//!
//! - [`TokenEndpoint`] (Envoy cluster `gcp_oauth`, the service account's
//!   `token_uri`): the OAuth 2.0 JWT-bearer grant. It verifies the
//!   assertion's RS256 signature with the account's PUBLIC key and its
//!   claims (`iss` = `client_email`, `aud` = `token_uri`, `exp` in the
//!   future and at most an hour after `iat`, a `scope`), and only then
//!   issues a random opaque token; otherwise 400 `invalid_grant`.
//! - [`GcsFront`] (Envoy cluster `object_storage`, `storage.endpoint`): in
//!   front of the emulator. Every request must carry `Authorization:
//!   Bearer <a token the endpoint issued and that has not expired>` (else
//!   401 `authError`, as GCS answers). It keeps, per object name, the generation the emulator gave
//!   it and when it was written, and adds what real GCS has and the
//!   emulator lacks: `ifGenerationMatch` on uploads (412 `conditionNotMet`
//!   on mismatch; 0 = must not exist), `x-goog-generation` and
//!   `Last-Modified` on downloads. An upload's `Content-Type` goes to the
//!   emulator as `application/octet-stream` (the product is not changed for
//!   the emulator) and the type sent is restored in the answer and on
//!   download. Object operations are serialised at the front, so a
//!   precondition check and its write are atomic.
//!
//! The service account is a throwaway RSA 2048 key made by
//! `openssl genpkey` once per test binary; a second key makes a "wrong
//! account" (same email and key id, another key) that the endpoint refuses.

use crate::http::{self, HttpServer, Reply, Request};
use crate::process::Proc;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The service account's email in every test.
pub const CLIENT_EMAIL: &str = "fallback-config-e2e@envoy-test.iam.gserviceaccount.com";
/// The service account key's id (the JWT header's `kid`).
pub const PRIVATE_KEY_ID: &str = "e2e-key-1";
/// The token endpoint's path (the account's `token_uri` is
/// `http://127.0.0.1:<port>/token`).
pub const TOKEN_PATH: &str = "/token";
/// The grant type the endpoint accepts.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Issued tokens and when each expires.
pub type Tokens = Arc<Mutex<HashMap<String, SystemTime>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random 64-bit value (std's per-instance SipHash keys are random).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

// ------------------------------------------------------------ accounts

/// An RSA key pair of a (fake) service account.
#[derive(Clone)]
pub struct AccountKey {
    /// PKCS#8 PEM, as in a Google JSON key file.
    pub private_pem: String,
    pub public: RsaPublicKey,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountKey(***)")
    }
}

/// A new RSA 2048 key from `openssl genpkey` (PKCS#8 PEM, like Google's
/// key files); its public half is read back with the `rsa` crate.
pub fn generate_key() -> Result<AccountKey, String> {
    let openssl = ["/usr/bin/openssl", "openssl"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).is_file())
        .unwrap_or("openssl");
    let out = std::process::Command::new(openssl)
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .map_err(|e| {
            format!("cannot run {openssl} genpkey (needed for the GCS service account): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let private_pem = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    let public = public_key_of(&private_pem)?;
    Ok(AccountKey {
        private_pem,
        public,
    })
}

/// The public key of a PKCS#8 PEM private key.
pub fn public_key_of(pem: &str) -> Result<RsaPublicKey, String> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    let key = RsaPrivateKey::from_pkcs8_der(&der)
        .map_err(|e| format!("not a PKCS#8 RSA private key: {e}"))?;
    Ok(key.to_public_key())
}

/// Two distinct keys, made once per test binary: `[trusted, wrong]`.
pub fn test_keys() -> &'static [AccountKey; 2] {
    static KEYS: OnceLock<[AccountKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let a = generate_key().unwrap_or_else(|e| panic!("{e}"));
        let b = generate_key().unwrap_or_else(|e| panic!("{e}"));
        [a, b]
    })
}

/// The `GCP_SERVICE_ACCOUNT` JSON for `key`, as Google's key files look.
pub fn service_account_json(key: &AccountKey, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "envoy-test",
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": key.private_pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

// ------------------------------------------------------- token endpoint

/// One request the token endpoint received, and what it answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub status: u16,
    /// `error_description` of a refusal.
    pub refusal: Option<String>,
}

struct TokenState {
    token_uri: String,
    /// `expires_in` of the tokens it issues.
    lifetime: Duration,
    /// client_email -> (key id, public key).
    trusted: HashMap<String, (String, RsaPublicKey)>,
    issued: Tokens,
    log: Vec<TokenRequest>,
}

/// The OAuth token endpoint of the GCS stack.
pub struct TokenEndpoint {
    server: HttpServer,
    state: Arc<Mutex<TokenState>>,
    issued: Tokens,
}

impl TokenEndpoint {
    /// Starts on `port`, trusting `key` for [`CLIENT_EMAIL`].
    pub fn start(port: u16, key: &AccountKey) -> std::io::Result<TokenEndpoint> {
        let issued = Arc::new(Mutex::new(HashMap::new()));
        let mut trusted = HashMap::new();
        trusted.insert(
            CLIENT_EMAIL.to_string(),
            (PRIVATE_KEY_ID.to_string(), key.public.clone()),
        );
        let state = Arc::new(Mutex::new(TokenState {
            token_uri: format!("http://127.0.0.1:{port}{TOKEN_PATH}"),
            lifetime: Duration::from_secs(3600),
            trusted,
            issued: issued.clone(),
            log: Vec::new(),
        }));
        let st = state.clone();
        let server =
            HttpServer::start(port, Arc::new(move |req: &Request| token_handle(&st, req)))?;
        Ok(TokenEndpoint {
            server,
            state,
            issued,
        })
    }

    /// `http://127.0.0.1:<port>/token`: the account's `token_uri`.
    pub fn token_uri(&self) -> String {
        lock(&self.state).token_uri.clone()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state).log.clone()
    }

    /// From now on, tokens live `lifetime` (`expires_in`; default one
    /// hour, like Google's); the front refuses them once expired.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.state).lifetime = lifetime;
    }

    /// Every token issued so far (to check none ends up in a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.issued).keys().cloned().collect()
    }

    /// The set of tokens the front accepts (shared with the front): other
    /// token issuers, e.g. [`crate::identity::GcpMetadata`], add theirs
    /// here so the front accepts them the same way (until they expire).
    pub fn accepted_tokens(&self) -> Tokens {
        self.issued.clone()
    }

    /// Issues a token without a request, valid for a day (for harness
    /// requests through the front).
    pub fn issue(&self) -> String {
        issue_token(&self.issued, Duration::from_secs(86400))
    }
}

fn issue_token(issued: &Mutex<HashMap<String, SystemTime>>, lifetime: Duration) -> String {
    let token = format!("ya29.e2e-{:016x}{:016x}", random_u64(), random_u64());
    lock(issued).insert(token.clone(), SystemTime::now() + lifetime);
    token
}

fn token_handle(state: &Mutex<TokenState>, req: &Request) -> Reply {
    let mut s = lock(state);
    let path = req.path.split('?').next().unwrap_or("");
    let outcome = if req.method != "POST" || path != TOKEN_PATH {
        Err((
            404,
            "not_found",
            format!("no such endpoint: {} {path}", req.method),
        ))
    } else {
        check_grant(&s, &String::from_utf8_lossy(&req.body), unix_now())
            .map_err(|d| (400, "invalid_grant", d))
    };
    let (reply, entry) = match outcome {
        Ok(()) => {
            let token = issue_token(&s.issued, s.lifetime);
            let body = json!({"access_token": token, "expires_in": s.lifetime.as_secs(),
                "token_type": "Bearer"});
            (
                Reply::new(200, "application/json", body.to_string()),
                TokenRequest {
                    status: 200,
                    refusal: None,
                },
            )
        }
        Err((status, error, description)) => {
            let body = json!({"error": error, "error_description": description});
            (
                Reply::new(status, "application/json", body.to_string()),
                TokenRequest {
                    status,
                    refusal: Some(description),
                },
            )
        }
    };
    s.log.push(entry);
    reply
}

/// Checks a token request's form body; `Err` is the `error_description`.
fn check_grant(s: &TokenState, form: &str, now: u64) -> Result<(), String> {
    let pairs = http::query_pairs(form);
    let field = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if field("grant_type") != Some(JWT_BEARER) {
        return Err(format!(
            "Invalid grant_type: {}",
            field("grant_type").unwrap_or("")
        ));
    }
    let jwt = field("assertion").ok_or("Missing required parameter: assertion")?;
    verify_jwt(jwt, &s.trusted, &s.token_uri, now)
}

fn b64_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("Invalid JWT: {what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| format!("Invalid JWT: {what} is not JSON"))
}

/// Verifies a service-account assertion: RS256 signature by the trusted
/// key of its `iss`, `kid`, `aud`, `exp`, `iat` and `scope`.
pub fn verify_jwt(
    jwt: &str,
    trusted: &HashMap<String, (String, RsaPublicKey)>,
    token_uri: &str,
    now: u64,
) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header_b64, claims_b64, sig_b64] = parts[..] else {
        return Err("Invalid JWT: not three segments".into());
    };
    let header = b64_json(header_b64, "header")?;
    let claims = b64_json(claims_b64, "claims")?;
    if header["alg"] != "RS256" {
        return Err(format!(
            "Invalid JWT: alg is {}, expected RS256",
            header["alg"]
        ));
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    let Some((kid, public)) = trusted.get(iss) else {
        return Err(format!("Invalid grant: account not found ({iss})"));
    };
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| "Invalid JWT Signature.".to_string())?;
    let digest = Sha256::digest(format!("{header_b64}.{claims_b64}").as_bytes());
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
        .map_err(|_| "Invalid JWT Signature.".to_string())?;
    if let Some(k) = header.get("kid") {
        if k != kid.as_str() {
            return Err(format!("Invalid JWT: unknown key id {k}"));
        }
    }
    if claims["aud"] != token_uri {
        return Err(format!(
            "Invalid JWT: aud is {}, expected {token_uri}",
            claims["aud"]
        ));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("Invalid JWT: iat and exp must be integers".into());
    };
    if exp <= now {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
    }
    if iat > now + 60 || exp < iat || exp - iat > 3600 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
    }
    if claims["scope"].as_str().is_none_or(|s| s.trim().is_empty()) {
        return Err("Invalid JWT: no scope".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- front

/// What the front knows of an object written through it.
#[derive(Clone, Debug)]
pub struct ObjectMeta {
    pub generation: u64,
    pub updated: SystemTime,
    pub content_type: String,
}

/// One request the front received, and its answer.
#[derive(Clone, Debug)]
pub struct FrontRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub status: u16,
}

struct FrontState {
    emulator_port: u16,
    issued: Tokens,
    /// Held across each object operation (check + write, or read + headers).
    objects: Mutex<HashMap<String, ObjectMeta>>,
    log: Mutex<Vec<FrontRequest>>,
}

/// The authenticating front of the GCS emulator.
pub struct GcsFront {
    server: HttpServer,
    state: Arc<FrontState>,
}

fn gcs_error(status: u16, message: &str, reason: &str) -> Reply {
    let body = json!({"error": {"code": status, "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    Reply::new(status, "application/json; charset=UTF-8", body.to_string())
}

/// Headers not forwarded as they are (the client and server set their own).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "connection" | "keep-alive" | "content-length" | "transfer-encoding" | "host"
    )
}

impl GcsFront {
    /// Starts on `port` in front of the emulator on `emulator_port`,
    /// accepting the tokens in `issued`.
    pub fn start(port: u16, emulator_port: u16, issued: Tokens) -> std::io::Result<GcsFront> {
        let state = Arc::new(FrontState {
            emulator_port,
            issued,
            objects: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let server =
            HttpServer::start(port, Arc::new(move |req: &Request| front_handle(&st, req)))?;
        Ok(GcsFront { server, state })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<FrontRequest> {
        lock(&self.state.log).clone()
    }

    /// The set of tokens it accepts (token -> expiry); adding one makes
    /// the front accept it until then.
    pub fn accepted_tokens(&self) -> Tokens {
        self.state.issued.clone()
    }

    /// Revokes every token issued so far (as when an account's key is
    /// disabled): the front answers 401 to them from now on.
    pub fn revoke_all_tokens(&self) {
        lock(&self.state.issued).clear();
    }

    /// The front's record of `name`.
    pub fn meta(&self, name: &str) -> Option<ObjectMeta> {
        lock(&self.state.objects).get(name).cloned()
    }

    /// Writes `name` through the front's upload path (no token needed:
    /// the harness itself), unconditionally.
    pub fn put(
        &self,
        bucket: &str,
        name: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<u64, String> {
        let path = format!(
            "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            crate::envoy::percent_encode(name)
        );
        let mut objects = lock(&self.state.objects);
        let r = upload(
            &self.state,
            &mut objects,
            &path,
            name,
            &[],
            content_type,
            body,
            None,
        );
        if r.status != 200 {
            return Err(format!(
                "upload of {name} through the front: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        objects
            .get(name)
            .map(|m| m.generation)
            .ok_or_else(|| format!("upload of {name}: no generation recorded"))
    }

    /// Deletes `name` at the emulator and forgets its generation.
    pub fn delete(&self, bucket: &str, name: &str) -> Result<(), String> {
        let mut objects = lock(&self.state.objects);
        let path = format!(
            "/storage/v1/b/{bucket}/o/{}",
            crate::envoy::percent_encode(name)
        );
        let r = http::request(self.state.emulator_port, "DELETE", &path, &[], b"")
            .map_err(|e| format!("DELETE {path} at the emulator: {e}"))?;
        objects.remove(name);
        match r.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(format!("DELETE {path} at the emulator: {}", r.summary())),
        }
    }
}

fn front_handle(state: &FrontState, req: &Request) -> Reply {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let reply = front_reply(state, req, path, query);
    lock(&state.log).push(FrontRequest {
        method: req.method.clone(),
        path: path.to_string(),
        status: reply.status,
    });
    reply
}

fn front_reply(state: &FrontState, req: &Request, path: &str, query: &str) -> Reply {
    let token = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let now = SystemTime::now();
    let valid = token.is_some_and(|t| lock(&state.issued).get(t).is_some_and(|exp| now < *exp));
    if !valid {
        return gcs_error(401, "Invalid Credentials", "authError").with_header(
            "www-authenticate",
            "Bearer realm=\"https://accounts.google.com/\"",
        );
    }
    let params = http::query_pairs(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let forwarded: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k))
        .cloned()
        .collect();
    if req.method == "POST" && path.starts_with("/upload/storage/v1/b/") {
        let Some(name) = param("name") else {
            return forward(state, req, &forwarded);
        };
        let if_match = match param("ifGenerationMatch").map(|g| g.parse::<u64>()) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(_)) => {
                return gcs_error(400, "Invalid argument for ifGenerationMatch", "invalid")
            }
        };
        let content_type = req
            .header("content-type")
            .unwrap_or("application/octet-stream");
        let mut objects = lock(&state.objects);
        return upload(
            state,
            &mut objects,
            &req.path,
            &name,
            &forwarded,
            content_type,
            &req.body,
            if_match,
        );
    }
    let download = path
        .strip_prefix("/storage/v1/b/")
        .and_then(|rest| rest.split_once("/o/"))
        .map(|(_, name)| http::percent_decode(name, false))
        .filter(|_| req.method == "GET" && param("alt").as_deref() == Some("media"));
    if let Some(name) = download {
        let objects = lock(&state.objects);
        let mut reply = forward(state, req, &forwarded);
        if let (200, Some(meta)) = (reply.status, objects.get(&name)) {
            reply.headers.retain(|(k, _)| {
                !k.eq_ignore_ascii_case("content-type") && !k.eq_ignore_ascii_case("last-modified")
            });
            reply.headers.extend([
                ("content-type".to_string(), meta.content_type.clone()),
                ("x-goog-generation".to_string(), meta.generation.to_string()),
                ("x-goog-metageneration".to_string(), "1".to_string()),
                ("last-modified".to_string(), http_date(meta.updated)),
            ]);
        }
        return reply;
    }
    forward(state, req, &forwarded)
}

/// An upload at the emulator under the objects lock: the precondition
/// first, then the write as `application/octet-stream`, then the record.
#[allow(clippy::too_many_arguments)]
fn upload(
    state: &FrontState,
    objects: &mut HashMap<String, ObjectMeta>,
    path_and_query: &str,
    name: &str,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
    if_generation_match: Option<u64>,
) -> Reply {
    let current = objects.get(name).map_or(0, |m| m.generation);
    if if_generation_match.is_some_and(|g| g != current) {
        return gcs_error(
            412,
            "At least one of the pre-conditions you specified did not hold.",
            "conditionNotMet",
        );
    }
    let mut hs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    hs.push(("content-type", "application/octet-stream"));
    let r = match http::request(state.emulator_port, "POST", path_and_query, &hs, body) {
        Ok(r) => r,
        Err(e) => return Reply::new(502, "text/plain", format!("GCS emulator: {e}")),
    };
    if r.status != 200 {
        return to_reply(r);
    }
    let mut resource = r.json();
    let generation = match &resource["generation"] {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    let Some(generation) = generation else {
        return Reply::new(
            502,
            "text/plain",
            format!(
                "GCS emulator answered an upload without a generation: {}",
                r.text()
            ),
        );
    };
    objects.insert(
        name.to_string(),
        ObjectMeta {
            generation,
            updated: SystemTime::now(),
            content_type: content_type.to_string(),
        },
    );
    if let Some(o) = resource.as_object_mut() {
        o.insert("contentType".into(), content_type.into());
        o.insert("generation".into(), generation.to_string().into());
    }
    Reply::new(200, "application/json; charset=UTF-8", resource.to_string())
}

fn forward(state: &FrontState, req: &Request, headers: &[(String, String)]) -> Reply {
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match http::request(state.emulator_port, &req.method, &req.path, &hs, &req.body) {
        Ok(r) => to_reply(r),
        Err(e) => Reply::new(502, "text/plain", format!("GCS emulator: {e}")),
    }
}

fn to_reply(r: http::Response) -> Reply {
    Reply {
        status: r.status,
        headers: r
            .headers
            .into_iter()
            .filter(|(k, _)| !hop_by_hop(k))
            .collect(),
        body: r.body,
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    fallback_config::time::Timestamp(ms).http_date()
}

// ---------------------------------------------------------------- stack

/// The emulator, the token endpoint and the front, for one bucket.
pub struct GcsStack {
    emulator: Proc,
    emulator_port: u16,
    pub token: TokenEndpoint,
    pub front: GcsFront,
    bucket: String,
    /// A token of the harness's own, for reads through the front.
    harness_token: String,
}

impl GcsStack {
    /// Starts the emulator (`bin`) with `bucket`, the token endpoint
    /// trusting the first of [`test_keys`], and the front; output of the
    /// emulator to `log`. Waits (up to 20 s) until the emulator answers.
    pub fn start(bin: &Path, log: &Path, bucket: &str) -> Result<GcsStack, String> {
        let emulator_port = crate::ports::free_port();
        let args: Vec<String> = vec![
            "start".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            emulator_port.to_string(),
            "--in-memory".into(),
            "--default-bucket".into(),
            bucket.into(),
        ];
        let mut emulator =
            Proc::spawn("gcs-emulator", bin, &args, &[], &[], log).map_err(|e| e.to_string())?;
        crate::wait::try_until(
            "the GCS emulator to answer",
            Duration::from_secs(20),
            || {
                if let Some(status) = emulator.exited() {
                    return Ok(Err(format!(
                        "the GCS emulator exited ({status}); its log:\n{}",
                        emulator.log_tail(30)
                    )));
                }
                let path = format!("/storage/v1/b/{bucket}");
                match http::get(emulator_port, &path, &[]) {
                    Ok(r) if r.status == 200 => Ok(Ok(())),
                    Ok(r) => Err(format!("GET {path}: {}", r.summary())),
                    Err(e) => Err(e.to_string()),
                }
            },
        )??;
        let keys = test_keys();
        let token = TokenEndpoint::start(crate::ports::free_port(), &keys[0])
            .map_err(|e| format!("token endpoint: {e}"))?;
        let front = GcsFront::start(
            crate::ports::free_port(),
            emulator_port,
            token.issued.clone(),
        )
        .map_err(|e| format!("GCS front: {e}"))?;
        let harness_token = token.issue();
        Ok(GcsStack {
            emulator,
            emulator_port,
            token,
            front,
            bucket: bucket.into(),
            harness_token,
        })
    }

    /// `http://127.0.0.1:<front port>`: the filter's `storage.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.front.port())
    }

    /// The emulator's port (no auth there).
    pub fn emulator_port(&self) -> u16 {
        self.emulator_port
    }

    /// The emulator process.
    pub fn emulator(&mut self) -> &mut Proc {
        &mut self.emulator
    }

    /// `GCP_SERVICE_ACCOUNT` for the account the endpoint trusts.
    pub fn service_account_json(&self) -> String {
        service_account_json(&test_keys()[0], &self.token.token_uri())
    }

    /// `GCP_SERVICE_ACCOUNT` with the same email and key id but another
    /// key: the endpoint refuses its assertions (`Invalid JWT Signature.`).
    pub fn wrong_service_account_json(&self) -> String {
        service_account_json(&test_keys()[1], &self.token.token_uri())
    }

    /// A token the front accepts, for harness requests through it.
    pub fn harness_token(&self) -> &str {
        &self.harness_token
    }

    /// The object's bytes, read straight from the emulator (so the
    /// front's request log holds the filter's requests only).
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        let path = format!(
            "/storage/v1/b/{}/o/{}?alt=media",
            self.bucket,
            crate::envoy::percent_encode(name)
        );
        let r = http::get(self.emulator_port, &path, &[])
            .unwrap_or_else(|e| panic!("GET {path} at the GCS emulator: {e}"));
        match r.status {
            200 => Some(r.body),
            404 => None,
            _ => panic!("GET {path} at the GCS emulator: {}", r.summary()),
        }
    }

    /// Requests the filter got refused: token requests the endpoint
    /// refused and object requests the front answered 401.
    pub fn auth_failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .token
            .requests()
            .into_iter()
            .filter(|r| r.status != 200)
            .map(|r| format!("token request refused: {} {:?}", r.status, r.refusal))
            .collect();
        out.extend(
            self.front
                .requests()
                .into_iter()
                .filter(|r| r.status == 401)
                .map(|r| format!("front answered 401 to {} {}", r.method, r.path)),
        );
        out
    }

    /// Writes the object through the front (recording its generation).
    pub fn write(&self, name: &str, bytes: &[u8]) {
        self.front
            .put(&self.bucket, name, bytes, "application/json")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Deletes the object.
    pub fn delete(&self, name: &str) {
        self.front
            .delete(&self.bucket, name)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// When the object was last written through the front.
    pub fn modified(&self, name: &str) -> Option<SystemTime> {
        self.front.meta(name).map(|m| m.updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fallback_config::storage::gcp_auth::{jwt_assertion, ServiceAccount};
    use fallback_config::time::Timestamp;

    fn trusted(key: &AccountKey) -> HashMap<String, (String, RsaPublicKey)> {
        let mut t = HashMap::new();
        t.insert(
            CLIENT_EMAIL.to_string(),
            (PRIVATE_KEY_ID.to_string(), key.public.clone()),
        );
        t
    }

    #[test]
    fn filter_jwts_verify_with_the_right_key_only() {
        let [good, wrong] = test_keys();
        let uri = "http://127.0.0.1:1/token";
        let now = unix_now();
        let sign = |key: &AccountKey, at: u64| {
            let account = ServiceAccount::parse(&service_account_json(key, uri)).unwrap();
            jwt_assertion(&account, Timestamp::from_secs(at))
                .unwrap()
                .expose()
                .to_string()
        };
        let jwt = sign(good, now);
        assert_eq!(verify_jwt(&jwt, &trusted(good), uri, now), Ok(()));
        assert_eq!(
            verify_jwt(&sign(wrong, now), &trusted(good), uri, now),
            Err("Invalid JWT Signature.".into())
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
        let mut claims = b64_json(&parts[1], "claims").unwrap();
        claims["scope"] = "https://www.googleapis.com/auth/cloud-platform".into();
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(
            verify_jwt(&parts.join("."), &trusted(good), uri, now),
            Err("Invalid JWT Signature.".into())
        );
        // Another audience, an expired assertion.
        let e = verify_jwt(&jwt, &trusted(good), "http://other/token", now).unwrap_err();
        assert!(e.contains("aud"), "{e}");
        let e = verify_jwt(&sign(good, now - 7200), &trusted(good), uri, now).unwrap_err();
        assert!(e.contains("short-lived"), "{e}");
        assert!(verify_jwt("a.b", &trusted(good), uri, now).is_err());
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784111777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
