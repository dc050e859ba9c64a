//! Google service-account credentials, sans-IO: parse the account's JSON
//! key, sign the RS256 JWT that asks for an access token, and keep the
//! token fresh.
//!
//! This is the OAuth 2.0 JWT-bearer flow (RFC 7523) that Google's client
//! libraries use for service accounts: the filter signs a short assertion
//! with the account's private key, POSTs it to the account's `token_uri`,
//! and sends the returned access token as `Authorization: Bearer` on object
//! requests. [`TokenCache`] is the state machine around that exchange; the
//! caller feeds it the time and the answers and dispatches what it asks
//! for, so the whole flow runs (and is tested) without a network or clock.
//!
//! The private key, the signed assertion and the access token are
//! credentials: they are held in types whose `Debug` prints `***` and they
//! never appear in an error message.

use super::endpoint::{split_url, EndpointError, UrlScheme};
use crate::clock::{Instant, Now};
use crate::http::{HttpRequest, HttpResponse};
use crate::secret::Secret;
use crate::time::Timestamp;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// Read and write objects, nothing more (least privilege: the filter never
/// needs to change bucket settings or ACLs).
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Where Google's own libraries send the assertion when the key file names
/// no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How long a signed assertion is valid. Google refuses more than an hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// Google issues 2048-bit keys; anything smaller is not a Google key and
/// too weak to sign with.
const MIN_KEY_BITS: usize = 2048;

/// The form field that selects the JWT-bearer grant, already form-encoded.
const GRANT_TYPE_FIELD: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

/// Lifetime assumed when the token endpoint omits `expires_in` (optional in
/// RFC 6749): Google's tokens live an hour.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Longer lifetimes are counted as this: Google's longest is 12 hours, and
/// the cap keeps the renewal arithmetic far from overflow.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Renew this long before expiry at the latest (unless that is earlier
/// than half the lifetime, see [`TokenCache`]).
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Stop using a token this long before it expires, so that it does not
/// expire between leaving the filter and reaching the store.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// First and longest wait after a failed token request.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A request in flight longer than its timeout plus this is considered
/// lost, so that one answer the host never delivers cannot stop renewals
/// for good. (The controller normally reports such a loss first, as a
/// status-0 answer.)
const STUCK_GRACE: Duration = Duration::from_secs(60);

/// A Google service account, parsed from its JSON key (the
/// `GCP_SERVICE_ACCOUNT` secret). The RSA key is decoded and validated once,
/// here, so that a bad key is refused at configure time rather than at the
/// first token request.
///
/// `Debug` masks the private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    /// The token endpoint, split from `token_uri`.
    token_scheme: UrlScheme,
    token_authority: String,
    token_path: String,
    key: PrivateKey,
}

/// The account's RSA key. A newtype because `rsa`'s own `Debug` prints the
/// key's numbers.
#[derive(Clone, PartialEq, Eq)]
struct PrivateKey(RsaPrivateKey);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(***)")
    }
}

/// Why `GCP_SERVICE_ACCOUNT` was refused. Each message names the field at
/// fault; none includes the private key or any part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAccountError {
    /// Not JSON at all. Only the position is kept: the text is a secret.
    NotJson { line: usize, column: usize },
    /// JSON, but not an object.
    NotAnObject,
    /// A required field is absent (or `null`).
    Missing(&'static str),
    /// A field is present but not a string.
    NotAString(&'static str),
    /// A required field is an empty string.
    Empty(&'static str),
    /// `type` is not `service_account` (e.g. `authorized_user`, a person's
    /// credentials, which cannot sign assertions).
    NotServiceAccount { found: String },
    /// `token_uri` is not an `http(s)://host/path` URL.
    InvalidTokenUri(EndpointError),
    /// `private_key` is not a usable RSA private key.
    InvalidKey(KeyError),
}

impl fmt::Display for ServiceAccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAME: &str = "GCP_SERVICE_ACCOUNT";
        match self {
            ServiceAccountError::NotJson { line, column } => write!(
                f,
                "{NAME} is not valid JSON (line {line}, column {column}); it must be the service account's JSON key"
            ),
            ServiceAccountError::NotAnObject => write!(
                f,
                "{NAME} must be a JSON object (the service account's JSON key)"
            ),
            ServiceAccountError::Missing(field) => write!(f, "{NAME}: `{field}` is missing"),
            ServiceAccountError::NotAString(field) => {
                write!(f, "{NAME}: `{field}` must be a string")
            }
            ServiceAccountError::Empty(field) => write!(f, "{NAME}: `{field}` is empty"),
            ServiceAccountError::NotServiceAccount { found } => write!(
                f,
                "{NAME}: `type` is `{found}`, expected `service_account`"
            ),
            ServiceAccountError::InvalidTokenUri(e) => write!(f, "{NAME}: `token_uri` {e}"),
            ServiceAccountError::InvalidKey(e) => write!(f, "{NAME}: `private_key` {e}"),
        }
    }
}

impl std::error::Error for ServiceAccountError {}

/// Why `private_key` could not be used. The texts complete "`private_key` …".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// No `-----BEGIN …-----` / `-----END …-----` block.
    NotPem,
    /// A PEM block of another kind (`EC PRIVATE KEY`, `CERTIFICATE`, …).
    UnsupportedLabel(String),
    /// Password-protected; Google's key files never are.
    Encrypted,
    /// The PEM body is not base64.
    InvalidBase64,
    /// The DER inside is not an RSA key of the announced format.
    Malformed {
        format: &'static str,
        reason: &'static str,
    },
    /// Smaller than 2048 bits (Google issues nothing smaller).
    TooSmall { bits: usize },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotPem => f.write_str(
                "is not a PEM private key (expected -----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----)",
            ),
            KeyError::UnsupportedLabel(label) => write!(
                f,
                "is a PEM `{label}`, expected `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1)"
            ),
            KeyError::Encrypted => f.write_str("is encrypted; an unencrypted key is needed"),
            KeyError::InvalidBase64 => f.write_str("has a PEM body that is not valid base64"),
            KeyError::Malformed { format, reason } => {
                write!(f, "is not a valid RSA key in {format} form: {reason}")
            }
            KeyError::TooSmall { bits } => write!(
                f,
                "is a {bits}-bit RSA key; at least {MIN_KEY_BITS} bits are needed"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl ServiceAccount {
    /// Parses the service account's JSON key as downloaded from Google
    /// (`type`, `client_email`, `private_key`, optional `private_key_id`
    /// and `token_uri`; other fields are ignored).
    ///
    /// The key may be PKCS#8 (`BEGIN PRIVATE KEY`, what Google issues) or
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`, what older tools write). Newlines
    /// escaped twice (a literal `\n` left by shell quoting) are accepted.
    pub fn parse(json: &str) -> Result<ServiceAccount, ServiceAccountError> {
        // Parse to a `Value` rather than a typed struct: serde's type errors
        // quote the offending value, and here every value may be secret.
        let value: Value =
            serde_json::from_str(json).map_err(|e| ServiceAccountError::NotJson {
                line: e.line(),
                column: e.column(),
            })?;
        let object = value.as_object().ok_or(ServiceAccountError::NotAnObject)?;
        let kind = required(object, "type")?;
        if kind != "service_account" {
            return Err(ServiceAccountError::NotServiceAccount {
                found: kind.chars().take(40).collect(),
            });
        }
        let client_email = required(object, "client_email")?.to_string();
        let key = parse_private_key(required(object, "private_key")?)
            .map_err(ServiceAccountError::InvalidKey)?;
        let private_key_id = optional(object, "private_key_id")?
            .filter(|id| !id.is_empty())
            .map(str::to_string);
        let token_uri = optional(object, "token_uri")?
            .filter(|uri| !uri.is_empty())
            .unwrap_or(DEFAULT_TOKEN_URI)
            .trim()
            .to_string();
        let endpoint = split_url(&token_uri).map_err(ServiceAccountError::InvalidTokenUri)?;
        let token_scheme = endpoint.scheme;
        let token_authority = endpoint.authority.to_string();
        let token_path = match endpoint.path {
            "" => "/",
            path => path,
        }
        .to_string();
        Ok(ServiceAccount {
            client_email,
            private_key_id,
            token_scheme,
            token_authority,
            token_path,
            token_uri,
            key: PrivateKey(key),
        })
    }

    /// The account's identity, for log lines ("token for x@y refused").
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Which of the account's keys this is (the JWT's `kid`), if known.
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// The token endpoint as written in the key file (the JWT's `aud`).
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The scheme of [`Self::token_uri`]: kept, not yet acted on (the token
    /// request carries `host[:port]` only; TLS is the transport socket of
    /// the Envoy cluster that reaches the endpoint).
    pub fn token_scheme(&self) -> UrlScheme {
        self.token_scheme
    }

    /// `host[:port]` of [`Self::token_uri`]: the `:authority` of the token
    /// request. The Envoy cluster that reaches it is configured separately.
    pub fn token_authority(&self) -> &str {
        &self.token_authority
    }

    /// Path (and query) of [`Self::token_uri`], `/` if it has none.
    pub fn token_path(&self) -> &str {
        &self.token_path
    }
}

fn required<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, ServiceAccountError> {
    let value = optional(object, field)?.ok_or(ServiceAccountError::Missing(field))?;
    if value.trim().is_empty() {
        return Err(ServiceAccountError::Empty(field));
    }
    Ok(value)
}

fn optional<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ServiceAccountError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ServiceAccountError::NotAString(field)),
    }
}

/// Decodes the key with our own PEM and DER readers rather than `rsa`'s
/// `pkcs8`/`pkcs1`/`der` stack: that stack is about a third of the wasm
/// that RSA signing adds, for two fixed structures of which we read five
/// integers. `rsa` then validates the numbers, so a misread key is refused
/// here, not signed with.
fn parse_private_key(pem: &str) -> Result<RsaPrivateKey, KeyError> {
    let pem = pem.replace("\\n", "\n");
    let (label, der) = decode_pem(&pem)?;
    let (format, parsed) = match label {
        "PRIVATE KEY" => ("PKCS#8", rsa_key_from_pkcs8(&der)),
        "RSA PRIVATE KEY" => ("PKCS#1", rsa_key_from_pkcs1(&der)),
        "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
        other => return Err(KeyError::UnsupportedLabel(other.to_string())),
    };
    let key = parsed.map_err(|reason| KeyError::Malformed { format, reason })?;
    let bits = key.size() * 8;
    if bits < MIN_KEY_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(key)
}

const DER_INTEGER: u8 = 0x02;
const DER_OCTET_STRING: u8 = 0x04;
const DER_OID: u8 = 0x06;
const DER_SEQUENCE: u8 = 0x30;
/// 1.2.840.113549.1.1.1, DER-encoded contents.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const TRUNCATED: &str = "the DER is truncated";

/// PKCS#8 `PrivateKeyInfo` (RFC 5208): `SEQUENCE { version, SEQUENCE {
/// algorithm OID, parameters }, OCTET STRING <PKCS#1 key>, … }`.
fn rsa_key_from_pkcs8(der: &[u8]) -> Result<RsaPrivateKey, &'static str> {
    let mut info = Der(Der(der).expect(DER_SEQUENCE, "expected a PrivateKeyInfo SEQUENCE")?);
    info.expect(DER_INTEGER, "expected the version INTEGER")?;
    let mut algorithm = Der(info.expect(DER_SEQUENCE, "expected the algorithm SEQUENCE")?);
    if algorithm.expect(DER_OID, "expected the algorithm OID")? != RSA_ENCRYPTION_OID {
        return Err("the key's algorithm is not RSA (rsaEncryption)");
    }
    rsa_key_from_pkcs1(info.expect(DER_OCTET_STRING, "expected the key OCTET STRING")?)
}

/// PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2): `SEQUENCE { version, n, e, d,
/// p, q, dP, dQ, qInv }`. `rsa` recomputes the CRT values itself.
fn rsa_key_from_pkcs1(der: &[u8]) -> Result<RsaPrivateKey, &'static str> {
    let mut key = Der(Der(der).expect(DER_SEQUENCE, "expected an RSAPrivateKey SEQUENCE")?);
    if key.expect(DER_INTEGER, "expected the version INTEGER")? != [0] {
        return Err("multi-prime RSA keys are not supported");
    }
    let (n, e, d) = (key.uint()?, key.uint()?, key.uint()?);
    let primes = vec![key.uint()?, key.uint()?];
    RsaPrivateKey::from_components(n, e, d, primes)
        .map_err(|_| "its numbers do not form a valid RSA key")
}

/// Reads DER elements one after the other. Only what the two key formats
/// use: single-byte tags and definite lengths.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents.
    fn next(&mut self) -> Result<(u8, &'a [u8]), &'static str> {
        let (&tag, rest) = self.0.split_first().ok_or(TRUNCATED)?;
        let (&first, mut rest) = rest.split_first().ok_or(TRUNCATED)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err("the DER has an unsupported length form");
            }
            let (bytes, after) = rest.split_at_checked(count).ok_or(TRUNCATED)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        let (contents, after) = rest.split_at_checked(len).ok_or(TRUNCATED)?;
        self.0 = after;
        Ok((tag, contents))
    }

    fn expect(&mut self, tag: u8, otherwise: &'static str) -> Result<&'a [u8], &'static str> {
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(otherwise),
        }
    }

    /// A non-negative INTEGER.
    fn uint(&mut self) -> Result<BigUint, &'static str> {
        let bytes = self.expect(DER_INTEGER, "expected an INTEGER")?;
        if bytes.first().is_none_or(|b| b & 0x80 != 0) {
            return Err("an INTEGER is empty or negative");
        }
        Ok(BigUint::from_bytes_be(bytes))
    }
}

/// The label and decoded body of the first PEM block (RFC 7468).
fn decode_pem(text: &str) -> Result<(&str, Vec<u8>), KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text.find(BEGIN).ok_or(KeyError::NotPem)? + BEGIN.len();
    let rest = text.get(start..).ok_or(KeyError::NotPem)?;
    let label_len = rest.find(DASHES).ok_or(KeyError::NotPem)?;
    let label = rest.get(..label_len).ok_or(KeyError::NotPem)?;
    if label.contains('\n') {
        return Err(KeyError::NotPem);
    }
    let body = rest
        .get(label_len + DASHES.len()..)
        .ok_or(KeyError::NotPem)?;
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or(KeyError::NotPem)?;
    let body = body.get(..end).ok_or(KeyError::NotPem)?;
    // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`) mark an encrypted PKCS#1 key.
    if body.contains(':') {
        return Err(KeyError::Encrypted);
    }
    let base64: String = body.split_ascii_whitespace().collect();
    let der = STANDARD
        .decode(base64)
        .map_err(|_| KeyError::InvalidBase64)?;
    Ok((label, der))
}

/// Why the assertion could not be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// The RSA operation failed. Cannot happen with a key that
    /// [`ServiceAccount::parse`] accepted, but is reported, not assumed.
    /// (`rsa`'s reason is not kept: formatting its error type would pull
    /// its whole ASN.1 error vocabulary into the wasm.)
    Sign,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Sign => f.write_str("cannot sign the token request JWT (RSA signing failed)"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The signed JWT (RS256) that asks the token endpoint for an access token
/// with [`SCOPE`], valid for an hour from `now`.
///
/// Header `{"alg":"RS256","typ":"JWT","kid":<private_key_id>}` (no `kid`
/// when the key file has none); claims `iss` = `client_email`, `scope`,
/// `aud` = `token_uri`, `iat` = `now`, `exp` = `now` + 3600 s. Segments are
/// base64url without padding (RFC 7515). `iat` is our clock: a host clock
/// that is far off makes Google refuse the assertion (`invalid_grant`,
/// "Token must be a short-lived token … in a reasonable timeframe"), and
/// the [`TokenError`] says so.
pub fn jwt_assertion(account: &ServiceAccount, now: Timestamp) -> Result<Secret, JwtError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let (Some(id), Some(fields)) = (&account.private_key_id, header.as_object_mut()) {
        fields.insert("kid".into(), Value::String(id.clone()));
    }
    let iat = now.as_secs();
    let claims = json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": iat,
        "exp": iat.saturating_add(ASSERTION_LIFETIME_SECS),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign_rs256(&account.key.0, signing_input.as_bytes())?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    )))
}

/// DER `DigestInfo` header for SHA-256 (RFC 8017 §9.2, note 1). Spelled
/// out instead of `Pkcs1v15Sign::new::<Sha256>()`, which builds it at run
/// time with `der` and `const-oid` code that would otherwise stay out of
/// the wasm.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 over SHA-256. Deterministic,
/// so no randomness source is needed in the filter.
fn sign_rs256(key: &RsaPrivateKey, input: &[u8]) -> Result<Vec<u8>, JwtError> {
    let padding = Pkcs1v15Sign {
        hash_len: Some(32),
        prefix: Box::new(SHA256_DIGEST_INFO),
    };
    key.sign(padding, &Sha256::digest(input))
        .map_err(|_| JwtError::Sign)
}

/// Why no access token came of a token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The endpoint answered an error status (status 0: no answer at all,
    /// the proxy's or controller's reason in `detail`). `error` and
    /// `description` are the OAuth error fields (`invalid_grant`, `Invalid
    /// JWT Signature.`); `detail` is a body excerpt when the body was not
    /// an OAuth error (e.g. the proxy's own `upstream connect error`).
    Refused {
        status: u16,
        error: Option<String>,
        description: Option<String>,
        detail: Option<String>,
    },
    /// A 200 whose body is not a usable token response.
    Malformed(MalformedToken),
    /// The assertion could not be signed.
    Jwt(JwtError),
}

/// What was wrong with a 200 token response. The body itself is never
/// quoted: it holds the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MalformedToken {
    NotJson,
    NoAccessToken,
    /// `token_type` is not `Bearer` (the only kind we can send).
    NotBearer(String),
    /// `expires_in` is not a positive number of seconds.
    BadExpiry,
}

impl fmt::Display for MalformedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedToken::NotJson => f.write_str("the body is not JSON"),
            MalformedToken::NoAccessToken => f.write_str("`access_token` is missing or empty"),
            MalformedToken::NotBearer(found) => {
                write!(f, "`token_type` is `{found}`, expected `Bearer`")
            }
            MalformedToken::BadExpiry => {
                f.write_str("`expires_in` is not a positive number of seconds")
            }
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Refused {
                status,
                error,
                description,
                detail,
            } => {
                if *status == 0 {
                    f.write_str("no answer from the token endpoint")?;
                } else {
                    write!(f, "token endpoint answered {status}")?;
                }
                let mut sep = ": ";
                for part in [error, description, detail].into_iter().flatten() {
                    write!(f, "{sep}{part}")?;
                    sep = ": ";
                }
                Ok(())
            }
            TokenError::Malformed(why) => {
                write!(f, "token endpoint answered 200 but {why}")
            }
            TokenError::Jwt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TokenError {}

/// The access token for one service account, kept fresh without ever
/// making a storage request wait.
///
/// A sans-IO state machine: the caller asks [`TokenCache::next_request`]
/// on every tick and dispatches what it returns, passes the answer to
/// [`TokenCache::on_response`], and takes [`TokenCache::token`] for each
/// object request. Time is always an input.
///
/// Policy:
/// - A token is requested when there is none, or when the current one
///   enters its renewal window: at 80 % of its lifetime or 5 minutes
///   before expiry, whichever is earlier, but never before half its
///   lifetime (so a short-lived token from a test endpoint cannot cause a
///   request storm). For Google's 1-hour tokens that is after 48 minutes.
/// - While a renewal is in flight (or failing), the old token keeps being
///   served until 30 s before it expires (a tenth of its lifetime before,
///   for tokens shorter than 5 minutes).
/// - One request at a time; after a failure, wait 1 s, 2 s, 4 s … up to
///   60 s before the next. A success resets the backoff.
///
/// `Debug` masks the token and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCache {
    account: ServiceAccount,
    cluster: String,
    timeout: Duration,
    token: Option<AccessToken>,
    /// When the outstanding request was made.
    in_flight_since: Option<Now>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// No new request before this (backoff).
    retry_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AccessToken {
    value: Secret,
    renew_at: Instant,
    /// Last instant at which the token is handed out.
    usable_until: Instant,
    /// By the wall clock, for log lines.
    expires_at: Timestamp,
}

impl AccessToken {
    /// `issued` is when the request was sent: the lifetime started no
    /// earlier, so expiry is counted conservatively.
    fn new(value: Secret, issued: Instant, issued_wall: Timestamp, lifetime: Duration) -> Self {
        let renew_after = (lifetime * 4 / 5)
            .min(lifetime.saturating_sub(RENEW_BEFORE_EXPIRY))
            .max(lifetime / 2);
        let expires_at = issued_wall.plus(lifetime);
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        AccessToken {
            value,
            renew_at: issued.plus(renew_after),
            usable_until: issued.plus(lifetime.saturating_sub(margin)),
            expires_at,
        }
    }
}

impl TokenCache {
    /// `cluster` is the proxy cluster that reaches the account's
    /// `token_uri`; `timeout` bounds each token request.
    pub fn new(account: ServiceAccount, cluster: impl Into<String>, timeout: Duration) -> Self {
        TokenCache {
            account,
            cluster: cluster.into(),
            timeout,
            token: None,
            in_flight_since: None,
            failures: 0,
            retry_at: Instant::ZERO,
        }
    }

    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// The token request to dispatch now, if one is due (see the policy on
    /// [`TokenCache`]). `Ok(None)`: nothing to do. An error (signing
    /// failed) counts as a failed request for the backoff, so it is not
    /// retried on every tick.
    pub fn next_request(&mut self, now: Now) -> Result<Option<HttpRequest>, TokenError> {
        if let Some(since) = self.in_flight_since {
            if now.mono < since.mono.plus(self.timeout).plus(STUCK_GRACE) {
                return Ok(None);
            }
            // The host never answered; allow a new request.
            self.in_flight_since = None;
        }
        if now.mono < self.retry_at {
            return Ok(None);
        }
        if self.token.as_ref().is_some_and(|t| now.mono < t.renew_at) {
            return Ok(None);
        }
        // JWT claims are wall-clock times (the token endpoint checks them).
        let assertion = match jwt_assertion(&self.account, now.wall) {
            Ok(jwt) => jwt,
            Err(e) => {
                self.note_failure(now.mono);
                return Err(TokenError::Jwt(e));
            }
        };
        let body = format!("{GRANT_TYPE_FIELD}&assertion={}", assertion.expose());
        self.in_flight_since = Some(now);
        Ok(Some(HttpRequest {
            cluster: self.cluster.clone(),
            method: "POST".into(),
            path: self.account.token_path.clone(),
            authority: self.account.token_authority.clone(),
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: Some(body.into_bytes()),
            timeout: self.timeout,
        }))
    }

    /// The answer to the request from [`Self::next_request`]. Status 0
    /// (the controller's "no answer") and every other failure start or
    /// extend the backoff; the current token, if still valid, stays in use.
    pub fn on_response(&mut self, response: HttpResponse, now: Now) -> Result<(), TokenError> {
        let issued = self.in_flight_since.take().unwrap_or(now);
        match parse_token_response(&response) {
            Ok((value, lifetime)) => {
                self.failures = 0;
                self.retry_at = Instant::ZERO;
                let at = issued.mono.min(now.mono);
                self.token = Some(AccessToken::new(value, at, issued.wall, lifetime));
                Ok(())
            }
            Err(e) => {
                self.note_failure(now.mono);
                Err(e)
            }
        }
    }

    /// The token to send now, if there is a valid one. Renewal never takes
    /// it away early: only expiry (less the margin in the policy above) or
    /// [`Self::invalidate`] does.
    pub fn token(&self, now: Instant) -> Option<&Secret> {
        self.token
            .as_ref()
            .filter(|t| now < t.usable_until)
            .map(|t| &t.value)
    }

    /// When the current token expires, for log lines.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.token.as_ref().map(|t| t.expires_at)
    }

    /// Forgets the current token, e.g. after the store answered 401 with
    /// it (revoked, or the account's key rotated): the next
    /// [`Self::next_request`] asks for a new one, backoff permitting.
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    fn note_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(6);
        let delay = (FIRST_BACKOFF * (1u32 << doublings)).min(MAX_BACKOFF);
        self.retry_at = now.plus(delay);
    }
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 / §5.2).
fn parse_token_response(response: &HttpResponse) -> Result<(Secret, Duration), TokenError> {
    if response.status != 200 {
        return Err(refusal(response));
    }
    let body: Value = serde_json::from_slice(&response.body)
        .map_err(|_| TokenError::Malformed(MalformedToken::NotJson))?;
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Malformed(MalformedToken::NoAccessToken))?;
    if let Some(kind) = body.get("token_type") {
        let kind = kind.as_str().unwrap_or("?");
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Malformed(MalformedToken::NotBearer(
                kind.chars().take(20).collect(),
            )));
        }
    }
    let lifetime = match body.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME,
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).unwrap_or_default(),
        // Some servers send the number as a string.
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Duration::from_secs)
            .unwrap_or_default(),
        Some(_) => Duration::ZERO,
    };
    if lifetime.is_zero() {
        return Err(TokenError::Malformed(MalformedToken::BadExpiry));
    }
    Ok((Secret::new(token), lifetime.min(MAX_TOKEN_LIFETIME)))
}

/// An error answer: the OAuth `error` / `error_description` when the body
/// has them (or a Google API error object's `status` / `message`), else
/// (the proxy's own text, a status-0 reason) an excerpt.
fn refusal(response: &HttpResponse) -> TokenError {
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    let text = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let error_field = body.as_ref().and_then(|b| b.get("error"));
    let (error, description) = match error_field {
        Some(Value::Object(e)) => (text(e.get("status")), text(e.get("message"))),
        _ => (
            text(error_field),
            text(body.as_ref().and_then(|b| b.get("error_description"))),
        ),
    };
    let detail = (error.is_none() && !response.body.is_empty()).then(|| response.body_excerpt(200));
    TokenError::Refused {
        status: response.status,
        error,
        description,
        detail,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::RsaPublicKey;

    // TEST-ONLY throwaway key pair, generated for these tests with
    // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`
    // (PKCS#1 copy: `openssl pkey -traditional`). It protects nothing.
    pub(crate) const TEST_KEY_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDIRuIJiOv+qdzH\n\
2/ItR/XdKSIfrg7X9YGRdK/1PRbG2mkH5p4JsmvAIv1Zm6eI5DFswJBR7o8CIUyn\n\
CHXnLmIFJBr8jlw34WgJyv/IFe1dfjky1WEZQMmkQBlT4hOaCMTc4yIJhZcPPxSh\n\
X6p8CZH3cSujpSxfHuE2DTWIuyABVV41nFDenNto81XpjworHDv0rRuvfNKjI/hg\n\
EOQAC2OO2dXVV/N2iJ60etZYc/cMnRQ7hqh3Jc+p7geHa3ZZApwd+R1G56zZyGZ5\n\
ilN0Q+0JAo/+ikXipx2Y6qj2KqAizufX2aL9LbuuVNSZsLrAiFzh2mrE0RTccXh1\n\
gaSTB2xLAgMBAAECggEAH/DOE982ZAMLJwS49ufHGmJ5ArxruZ158Iy/k0kO3N/w\n\
aEYrZjiCXr410Zi1e2uJRmLfoXF+dUSCSRFcXGZVU6SSeTzrEC5uvUEW0f5NQN/k\n\
l2rYdYKTphJi97HSlnpXizLeNs6LbO8Ohz4OnoGYOfJel1a8YN8347rvksLlM9D0\n\
/KIbsYe5/JTiPfVdvJWofxD0pbBajsu8PwwgJe6FyA4jrpWFJOioM8d8ItUjxKPL\n\
dyQzDskRHdnO/fNKM5rN+rC2P/NRmqXacRb+O1HfYFM4N3ZCVMYXoQSs9wyA7p/k\n\
RBqe0V1/3g9guZR+ELGRSeJ3tJr3Jw4bgOVZzi78wQKBgQD7Jd7VfCHaPwKeI67P\n\
JjWMCxHPJX3kTyLgDJpyMy0HZ4ql1caKYNsgyIpnNOfCm3BWdAUsHRko6qP7wWgs\n\
0JD780ARPGzDCF8xNI5oj4n9FLcrhKEM4wea9VHna5Ke+omsj9q2OEuF2oMVkpYS\n\
W7Mvt46GmOeev8rdqQXHcJZEuQKBgQDMJWoAiXzHpZu1Dt/Ym5is24+lufo458mR\n\
i/u0qh8HPzdjBhpImLg91mShcIWszkIxzcjBWUM5VuC0rrzXhWHQO/93NKrho2Co\n\
aX4KYjm5bZ4qUDZhYvS8XbxFawLLS1L5itb6lVwOjTNB/g+YflB5Zo4UycbiIAyH\n\
0RFNa+a/IwKBgBVPhFYHH3Q+boFus7GeI2MLuWojW0hZMrNiPmS8VPDQ52Hk/uDV\n\
ESL6AUx6n8PSnrinRZ0VpwHizyFYqvdKh1LptCECSJRQDIvHUuIqc+IGtPg7W9MV\n\
HJsYf+esKBfXWIFM/5kAs9/ax863zoYmQ9EjuTNQnC7LRXKDmhrvQcD5AoGAUSki\n\
vnnqoNjnUZFLTyt1BGv57RJGN693BKVZeZcU5OWuGHFJq8kDnpoIweIhUvVhfblp\n\
ce0R+87dYRgDPc/qdkYUJ4lJ0pEIkYv3LxukBWNeOUZQiGE2GVlOy25i2v3kTA91\n\
roQI6EQct8TQ4Hh/d/Rc0kjyB95j/O8SaOxX/W8CgYEAjHiM2vbjj2w1rsmWh6rI\n\
+xD6flkDX7SSUwt6+69H5llA+sFyioCFdALQg0w2F6M2NcxBuFn/PPtaYr/7R624\n\
+NbtFgow16Kbzv34qydXE/tEwbX2E50qzc76wcNXmEH9XeP1RdnyLL7NZRYI1B/j\n\
RyELfA2l/0jXwT9SkCXb+lk=\n\
-----END PRIVATE KEY-----";
    const TEST_KEY_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEAyEbiCYjr/qncx9vyLUf13SkiH64O1/WBkXSv9T0WxtppB+ae\n\
CbJrwCL9WZuniOQxbMCQUe6PAiFMpwh15y5iBSQa/I5cN+FoCcr/yBXtXX45MtVh\n\
GUDJpEAZU+ITmgjE3OMiCYWXDz8UoV+qfAmR93Ero6UsXx7hNg01iLsgAVVeNZxQ\n\
3pzbaPNV6Y8KKxw79K0br3zSoyP4YBDkAAtjjtnV1VfzdoietHrWWHP3DJ0UO4ao\n\
dyXPqe4Hh2t2WQKcHfkdRues2chmeYpTdEPtCQKP/opF4qcdmOqo9iqgIs7n19mi\n\
/S27rlTUmbC6wIhc4dpqxNEU3HF4dYGkkwdsSwIDAQABAoIBAB/wzhPfNmQDCycE\n\
uPbnxxpieQK8a7mdefCMv5NJDtzf8GhGK2Y4gl6+NdGYtXtriUZi36FxfnVEgkkR\n\
XFxmVVOkknk86xAubr1BFtH+TUDf5Jdq2HWCk6YSYvex0pZ6V4sy3jbOi2zvDoc+\n\
Dp6BmDnyXpdWvGDfN+O675LC5TPQ9PyiG7GHufyU4j31XbyVqH8Q9KWwWo7LvD8M\n\
ICXuhcgOI66VhSToqDPHfCLVI8Sjy3ckMw7JER3Zzv3zSjOazfqwtj/zUZql2nEW\n\
/jtR32BTODd2QlTGF6EErPcMgO6f5EQantFdf94PYLmUfhCxkUnid7Sa9ycOG4Dl\n\
Wc4u/MECgYEA+yXe1Xwh2j8CniOuzyY1jAsRzyV95E8i4AyacjMtB2eKpdXGimDb\n\
IMiKZzTnwptwVnQFLB0ZKOqj+8FoLNCQ+/NAETxswwhfMTSOaI+J/RS3K4ShDOMH\n\
mvVR52uSnvqJrI/atjhLhdqDFZKWEluzL7eOhpjnnr/K3akFx3CWRLkCgYEAzCVq\n\
AIl8x6WbtQ7f2JuYrNuPpbn6OOfJkYv7tKofBz83YwYaSJi4PdZkoXCFrM5CMc3I\n\
wVlDOVbgtK6814Vh0Dv/dzSq4aNgqGl+CmI5uW2eKlA2YWL0vF28RWsCy0tS+YrW\n\
+pVcDo0zQf4PmH5QeWaOFMnG4iAMh9ERTWvmvyMCgYAVT4RWBx90Pm6BbrOxniNj\n\
C7lqI1tIWTKzYj5kvFTw0Odh5P7g1REi+gFMep/D0p64p0WdFacB4s8hWKr3SodS\n\
6bQhAkiUUAyLx1LiKnPiBrT4O1vTFRybGH/nrCgX11iBTP+ZALPf2sfOt86GJkPR\n\
I7kzUJwuy0Vyg5oa70HA+QKBgFEpIr556qDY51GRS08rdQRr+e0SRjevdwSlWXmX\n\
FOTlrhhxSavJA56aCMHiIVL1YX25aXHtEfvO3WEYAz3P6nZGFCeJSdKRCJGL9y8b\n\
pAVjXjlGUIhhNhlZTstuYtr95EwPda6ECOhEHLfE0OB4f3f0XNJI8gfeY/zvEmjs\n\
V/1vAoGBAIx4jNr2449sNa7JloeqyPsQ+n5ZA1+0klMLevuvR+ZZQPrBcoqAhXQC\n\
0INMNhejNjXMQbhZ/zz7WmK/+0etuPjW7RYKMNeim879+KsnVxP7RMG19hOdKs3O\n\
+sHDV5hB/V3j9UXZ8iy+zWUWCNQf40chC3wNpf9I18E/UpAl2/pZ\n\
-----END RSA PRIVATE KEY-----";
    const TEST_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyEbiCYjr/qncx9vyLUf1\n\
3SkiH64O1/WBkXSv9T0WxtppB+aeCbJrwCL9WZuniOQxbMCQUe6PAiFMpwh15y5i\n\
BSQa/I5cN+FoCcr/yBXtXX45MtVhGUDJpEAZU+ITmgjE3OMiCYWXDz8UoV+qfAmR\n\
93Ero6UsXx7hNg01iLsgAVVeNZxQ3pzbaPNV6Y8KKxw79K0br3zSoyP4YBDkAAtj\n\
jtnV1VfzdoietHrWWHP3DJ0UO4aodyXPqe4Hh2t2WQKcHfkdRues2chmeYpTdEPt\n\
CQKP/opF4qcdmOqo9iqgIs7n19mi/S27rlTUmbC6wIhc4dpqxNEU3HF4dYGkkwds\n\
SwIDAQAB\n\
-----END PUBLIC KEY-----";
    /// TEST-ONLY 1024-bit key, to check that small keys are refused.
    const TEST_SMALL_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIICdAIBADANBgkqhkiG9w0BAQEFAASCAl4wggJaAgEAAoGBAMBCkglkwu20BrzC\n\
InxwTYFbY6s3M/WuxpXubMX7LHkMfrI7Gz0pjDbm7RrXz14+D0VPJIoag0qxzpvv\n\
v4lbJ2yeUdrMMcMkqQMb/LeIF7jVj/m3D5J86tFtrNtoEa2R54qigsjc4o6Zkggl\n\
ndK3eE3tbVWalHvu1nQklS9H/n27AgMBAAECfw/FZjVfDp5xJhxV0H5kt/bkiEiD\n\
Pr/olmG2LTYQZJWJcNst/g4GWnomd0y8Z0ZT0OzekSDDDAIUk942zH93+sPJoz/2\n\
LnCrm6MxzstBUgo+YGyURnnAkfq8JGdS9uUIJkAiY8syloDrfHdSNzst9+UhLFNv\n\
B7+ghd7FKKffmQkCQQD1gk3Ny5PAFPIKtEmoIXAL+DXHhGejihbB/KH0TmVFEQKg\n\
EUe9TDdMuw/gRGlg0UdyVGQ3o2DiKJCNwSs5A983AkEAyHnCo88AcC7KVP9tG4T4\n\
xINvI/g2tD9tzsbqoAnCQBw7aFoADr6OEAMGz1KtqY28JO7Rm41cLfD4ZbZxYTiv\n\
nQJAUBh706kYAfGTaaSZ5y1Jhc4rlXT/7t3NQOpv1+l/poG/LoOUuRBVdkYNDuii\n\
zIBaY9VegLxfjkkXp/eeZ1J5DwJAXnxEqD/fzP/AjN715Yp+VOA9eY56+ekLL/HA\n\
kz0GOIEV3tDMRia5fgJvKzekcc1DZ4THdbDiSSTRbd7XASNeYQJBAM/5rQk+PKsB\n\
cWduH37DdZdBF95iZypUJuJRAu4W0PCzZSEO4BiAw1u9TARsngok2wYDxA1OF8ML\n\
TPiZBOQK84U=\n\
-----END PRIVATE KEY-----";
    /// TEST-ONLY P-256 key in PKCS#8: right PEM label, wrong algorithm.
    const TEST_EC_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFzUIZpqvV5Msu1w4\n\
flRNdSH+qeE2rMfJM2B1dXRXGiKhRANCAAQR2gyhIDhcs++RZEq/N918JbFbjokF\n\
iVI76jXKLtllfQz7oiKByvxNtl8w8HlB1G5uRj/3fXQM0Vyc/qNf2sGF\n\
-----END PRIVATE KEY-----";
    /// `openssl dgst -sha256 -sign` of [`KAT_INPUT`] with the test key,
    /// base64url: an independent implementation's RS256 signature.
    const KAT_INPUT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJ0ZXN0QGV4YW1wbGUuaWFtLmdzZXJ2aWNlYWNjb3VudC5jb20ifQ";
    const KAT_SIGNATURE: &str = "WulTuBR3IZbbwBIrVXhQI-VmWH-8meP5hu-uj0uMxu-NIW3zFPeEdwYJfqlY9YlphtA2c5ulBRlbfmb7dnkbERc85ukHQgz2P57V6XeDyGf-wnkglI3NBVuZTE9jijVZMfAdb78wU3UvDmNOvX9ZH-v8hk6zY7Hpx_Qvezcvl98HPOV0nsVicp_InMSuZiIbdrqrjlYu2KlKO9Df7IGvMuAPdOhAZbhsc47xx3XzWXcM2Iu1k2lszd6fAEh2NT84Ceeg4MLB4yFuz80YJTh7RPzj4y-kTiixU46_xz05O3bazaQgINF9KUjEK9cgzNYMDZcbrbc5YGjhh33xGSohyg";

    const EMAIL: &str = "exporter@proj.iam.gserviceaccount.com";
    const TOKEN_URI: &str = "http://127.0.0.1:9024/oauth2/token";

    pub(crate) fn account_json(key: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "kid-123",
            "private_key": key,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": TOKEN_URI,
        })
        .to_string()
    }

    fn account() -> ServiceAccount {
        ServiceAccount::parse(&account_json(TEST_KEY_PKCS8)).unwrap()
    }

    fn without(field: &str) -> String {
        let mut v: Value = serde_json::from_str(&account_json(TEST_KEY_PKCS8)).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    fn with(field: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(&account_json(TEST_KEY_PKCS8)).unwrap();
        v.as_object_mut().unwrap().insert(field.into(), value);
        v.to_string()
    }

    fn public_key() -> RsaPublicKey {
        let (label, der) = decode_pem(TEST_PUBLIC_KEY).unwrap();
        assert_eq!(label, "PUBLIC KEY");
        RsaPublicKey::from_public_key_der(&der).unwrap()
    }

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// Splits a JWT, checks its signature with the public key, and returns
    /// the decoded header and claims.
    fn verify(jwt: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        assert!(!jwt.contains('='), "base64url without padding: {jwt}");
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        let digest = Sha256::digest(signing_input.as_bytes());
        public_key()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &b64(parts[2]))
            .expect("RS256 signature verifies with the public key");
        (
            serde_json::from_slice(&b64(parts[0])).unwrap(),
            serde_json::from_slice(&b64(parts[1])).unwrap(),
        )
    }

    /// A fragment of the key's base64 that must never show in any text.
    const KEY_FRAGMENT: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC";

    #[test]
    fn parses_a_google_key_file() {
        let a = account();
        assert_eq!(a.client_email(), EMAIL);
        assert_eq!(a.private_key_id(), Some("kid-123"));
        assert_eq!(a.token_uri(), TOKEN_URI);
        assert_eq!(a.token_scheme(), UrlScheme::Http);
        assert_eq!(a.token_authority(), "127.0.0.1:9024");
        assert_eq!(a.token_path(), "/oauth2/token");
        // PKCS#1 gives the same key.
        let pkcs1 = ServiceAccount::parse(&account_json(TEST_KEY_PKCS1)).unwrap();
        assert_eq!(pkcs1, a);
        // Newlines escaped twice (`\\n` in the JSON) still parse.
        let flat = TEST_KEY_PKCS8.replace('\n', "\\n");
        assert_eq!(ServiceAccount::parse(&account_json(&flat)).unwrap(), a);
        // Defaults: Google's token endpoint; no kid.
        let a = ServiceAccount::parse(&without("token_uri")).unwrap();
        assert_eq!(a.token_uri(), DEFAULT_TOKEN_URI);
        assert_eq!(a.token_scheme(), UrlScheme::Https);
        assert_eq!(a.token_authority(), "oauth2.googleapis.com");
        assert_eq!(a.token_path(), "/token");
        let a = ServiceAccount::parse(&without("private_key_id")).unwrap();
        assert_eq!(a.private_key_id(), None);
        let a = ServiceAccount::parse(&with("token_uri", json!("https://t.example"))).unwrap();
        assert_eq!((a.token_authority(), a.token_path()), ("t.example", "/"));
        // The path is kept as written: its query, a trailing `/`.
        let a = ServiceAccount::parse(&with(
            "token_uri",
            json!(" https://gw.example:8443/oauth/token/?tenant=a "),
        ))
        .unwrap();
        assert_eq!(
            a.token_uri(),
            "https://gw.example:8443/oauth/token/?tenant=a"
        );
        assert_eq!(
            (a.token_scheme(), a.token_authority(), a.token_path()),
            (
                UrlScheme::Https,
                "gw.example:8443",
                "/oauth/token/?tenant=a"
            )
        );
    }

    #[test]
    fn refuses_bad_files_naming_the_field() {
        let err = |json: &str| ServiceAccount::parse(json).unwrap_err().to_string();
        let cases = [
            (
                without("client_email"),
                "GCP_SERVICE_ACCOUNT: `client_email` is missing",
            ),
            (
                without("private_key"),
                "GCP_SERVICE_ACCOUNT: `private_key` is missing",
            ),
            (without("type"), "GCP_SERVICE_ACCOUNT: `type` is missing"),
            (
                with("client_email", json!("")),
                "GCP_SERVICE_ACCOUNT: `client_email` is empty",
            ),
            (
                with("client_email", json!(42)),
                "GCP_SERVICE_ACCOUNT: `client_email` must be a string",
            ),
            (
                with("type", json!("authorized_user")),
                "GCP_SERVICE_ACCOUNT: `type` is `authorized_user`, expected `service_account`",
            ),
            (
                with("token_uri", json!("oauth2.googleapis.com/token")),
                "GCP_SERVICE_ACCOUNT: `token_uri` must start with http:// or https://",
            ),
            (
                with("token_uri", json!("https://oauth2.googleapis.com/token#x")),
                "GCP_SERVICE_ACCOUNT: `token_uri` must not have a fragment (#)",
            ),
            (
                "[1]".to_string(),
                "GCP_SERVICE_ACCOUNT must be a JSON object (the service account's JSON key)",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(err(&json), expected);
        }
        // Broken JSON: only the position is reported, never the text.
        let broken = account_json(TEST_KEY_PKCS8).replace("\"type\"", "type");
        let e = err(&broken);
        assert!(
            e.starts_with("GCP_SERVICE_ACCOUNT is not valid JSON (line 1, column"),
            "{e}"
        );
        // A raw newline inside the key (pasted unescaped) is a JSON error too.
        let raw = account_json(TEST_KEY_PKCS8).replace("\\n", "\n");
        let e = err(&raw);
        assert!(
            e.contains("not valid JSON") && !e.contains(KEY_FRAGMENT),
            "{e}"
        );
    }

    #[test]
    fn refuses_bad_keys_without_quoting_them() {
        let key_err = |pem: &str| ServiceAccount::parse(&account_json(pem)).unwrap_err();
        assert_eq!(
            key_err("not a key"),
            ServiceAccountError::InvalidKey(KeyError::NotPem)
        );
        assert_eq!(
            key_err("-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n"),
            ServiceAccountError::InvalidKey(KeyError::UnsupportedLabel("EC PRIVATE KEY".into()))
        );
        assert_eq!(
            key_err(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMHc=\n-----END ENCRYPTED PRIVATE KEY-----"
            ),
            ServiceAccountError::InvalidKey(KeyError::Encrypted)
        );
        let proc_type = TEST_KEY_PKCS1.replace(
            "-----\n",
            "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
        );
        assert_eq!(
            key_err(&proc_type),
            ServiceAccountError::InvalidKey(KeyError::Encrypted)
        );
        assert_eq!(
            key_err(&TEST_KEY_PKCS8.replace("MII", "M*I")),
            ServiceAccountError::InvalidKey(KeyError::InvalidBase64)
        );
        // No END line.
        assert_eq!(
            key_err(&TEST_KEY_PKCS8[..TEST_KEY_PKCS8.len() - 10]),
            ServiceAccountError::InvalidKey(KeyError::NotPem)
        );
        assert_eq!(
            key_err(TEST_SMALL_KEY),
            ServiceAccountError::InvalidKey(KeyError::TooSmall { bits: 1024 })
        );
        // A PKCS#1 body under a PKCS#8 label, a truncated body, an EC key.
        let swapped = TEST_KEY_PKCS1.replace("RSA PRIVATE KEY", "PRIVATE KEY");
        let truncated = {
            let lines: Vec<&str> = TEST_KEY_PKCS8.lines().collect();
            let mut kept = lines[..10].to_vec();
            kept.push(lines[lines.len() - 1]);
            kept.join("\n")
        };
        for (pem, reason) in [
            (swapped.as_str(), "expected the algorithm SEQUENCE"),
            (&truncated, "the DER is truncated"),
            (
                TEST_EC_KEY,
                "the key's algorithm is not RSA (rsaEncryption)",
            ),
        ] {
            let e = key_err(pem);
            assert_eq!(
                e,
                ServiceAccountError::InvalidKey(KeyError::Malformed {
                    format: "PKCS#8",
                    reason
                })
            );
            let text = e.to_string();
            assert_eq!(
                text,
                format!("GCP_SERVICE_ACCOUNT: `private_key` is not a valid RSA key in PKCS#8 form: {reason}")
            );
        }
        // Inconsistent numbers: flip a bit of the private exponent d.
        let (_, mut der) = decode_pem(TEST_KEY_PKCS1).unwrap();
        der[300] ^= 1;
        assert!(rsa_key_from_pkcs1(&der).is_err());
    }

    #[test]
    fn der_reader_never_panics_on_damaged_keys() {
        for pem in [TEST_KEY_PKCS8, TEST_KEY_PKCS1] {
            let (label, der) = decode_pem(pem).unwrap();
            let parse = |der: &[u8]| match label {
                "PRIVATE KEY" => rsa_key_from_pkcs8(der),
                _ => rsa_key_from_pkcs1(der),
            };
            assert!(parse(&der).is_ok());
            // Every truncation of the header area and some further in.
            for len in (0..64).chain((64..der.len()).step_by(97)) {
                assert!(parse(&der[..len]).is_err(), "{label} cut at {len}");
            }
            // Damaged structure bytes (tags and lengths near the start).
            for i in 0..40 {
                for bit in [0x01, 0x80, 0xff] {
                    let mut damaged = der.clone();
                    damaged[i] ^= bit;
                    let _ = parse(&damaged);
                }
            }
        }
        let mut der = Der(&[0x30, 0x85, 1, 0, 0, 0, 0]);
        assert_eq!(der.next(), Err("the DER has an unsupported length form"));
        let mut der = Der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(der.next(), Err(TRUNCATED));
        let mut der = Der(&[0x02, 0x01, 0x80]);
        assert!(der.uint().is_err());
        let mut der = Der(&[0x02, 0x00]);
        assert!(der.uint().is_err());
    }

    #[test]
    fn debug_masks_the_key() {
        let a = account();
        let d = format!("{a:?}");
        assert!(d.contains("PrivateKey(***)") && d.contains(EMAIL), "{d}");
        // `rsa`'s own Debug would print the modulus and private exponent.
        assert!(!d.contains("BigUint") && !d.contains("primes"), "{d}");
    }

    #[test]
    fn digest_info_is_rsas_own() {
        assert_eq!(
            &*Pkcs1v15Sign::new::<Sha256>().prefix,
            &SHA256_DIGEST_INFO[..]
        );
    }

    #[test]
    fn rs256_matches_openssl() {
        let sig = sign_rs256(&account().key.0, KAT_INPUT.as_bytes()).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(sig), KAT_SIGNATURE);
        let (header, claims) = verify(&format!("{KAT_INPUT}.{KAT_SIGNATURE}"));
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT"}));
        assert_eq!(
            claims,
            json!({"iss": "test@example.iam.gserviceaccount.com"})
        );
    }

    #[test]
    fn assertion_is_a_verifiable_jwt() {
        let now = Timestamp::from_millis(1_700_000_000_999);
        let jwt = jwt_assertion(&account(), now).unwrap();
        assert_eq!(format!("{jwt:?}"), "Secret(***)");
        let (header, claims) = verify(jwt.expose());
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "kid": "kid-123"})
        );
        assert_eq!(
            claims,
            json!({
                "iss": EMAIL,
                "scope": "https://www.googleapis.com/auth/devstorage.read_write",
                "aud": TOKEN_URI,
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            })
        );
        // A tampered claim no longer verifies.
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            claims
                .to_string()
                .replace(EMAIL, "attacker@proj.iam.gserviceaccount.com"),
        );
        let digest = Sha256::digest(format!("{}.{forged}", parts[0]).as_bytes());
        assert!(public_key()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &b64(parts[2]))
            .is_err());
        // No kid when the key file has none.
        let a = ServiceAccount::parse(&without("private_key_id")).unwrap();
        let (header, _) = verify(jwt_assertion(&a, now).unwrap().expose());
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT"}));
    }

    // ---- token cache ----

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> Now {
        Now {
            mono: Instant::from_millis(secs * 1000),
            wall: Timestamp::from_secs(T0 + secs),
        }
    }

    fn cache() -> TokenCache {
        TokenCache::new(account(), "gcp_token", Duration::from_secs(5))
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

    fn tok(c: &TokenCache, secs: u64) -> Option<&str> {
        c.token(at(secs).mono).map(Secret::expose)
    }

    #[test]
    fn first_request_has_the_token_endpoint_shape() {
        let mut c = cache();
        assert_eq!(c.token(at(0).mono), None);
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
            .strip_prefix(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
            )
            .unwrap();
        let (_, claims) = verify(assertion);
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
        assert_eq!(
            fail(answer(503, "upstream connect error or\n disconnect")),
            "token endpoint answered 503: upstream connect error or disconnect"
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
        assert!(
            !d.contains(KEY_FRAGMENT) && d.contains("PrivateKey(***)"),
            "{d}"
        );
    }
}
