//! Google service-account credentials, sans-IO: parse the account's JSON
//! key and sign the RS256 JWT that asks for an access token (the cache
//! that keeps the token fresh is [`super::credentials`]).
//!
//! This is the OAuth 2.0 JWT-bearer flow (RFC 7523) that Google's client
//! libraries use for service accounts: the filter signs a short assertion
//! with the account's private key, POSTs it to the account's `token_uri`,
//! and sends the returned access token as `Authorization: Bearer` on object
//! requests. [`super::credentials::CredentialCache`] runs that exchange.
//!
//! The private key, the signed assertion and the access token are
//! credentials: they are held in types whose `Debug` prints `***` and they
//! never appear in an error message.

use super::base64::{self as base64_codec, Padding};
use super::endpoint::{split_url, EndpointError, UrlScheme};
use super::rs256::RsaKey;
use crate::json::{self, Map, Value};
use crate::secret::Secret;
use crate::time::Timestamp;
use sha2::{Digest, Sha256};
use std::fmt;

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

/// The account's RSA key, with a `Debug` that prints none of it.
#[derive(Clone, PartialEq, Eq)]
struct PrivateKey(RsaKey);

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
        // Only the position of a syntax error is kept: every value may be
        // secret (the reader quotes none, but the key file's text is not
        // for logs at all).
        let value = json::parse(json.as_bytes()).map_err(|e| ServiceAccountError::NotJson {
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

    /// The scheme of [`Self::token_uri`] (the token request carries
    /// `host[:port]` only; TLS is the transport socket of the Envoy cluster
    /// that reaches the endpoint).
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

fn required<'a>(object: &'a Map, field: &'static str) -> Result<&'a str, ServiceAccountError> {
    let value = optional(object, field)?.ok_or(ServiceAccountError::Missing(field))?;
    if value.trim().is_empty() {
        return Err(ServiceAccountError::Empty(field));
    }
    Ok(value)
}

fn optional<'a>(
    object: &'a Map,
    field: &'static str,
) -> Result<Option<&'a str>, ServiceAccountError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ServiceAccountError::NotAString(field)),
    }
}

/// Decodes the key with our own PEM and DER readers rather than a
/// `pkcs8`/`pkcs1`/`der` stack: two fixed structures of which we read five
/// integers. [`RsaKey::from_components`] then checks that the numbers form
/// a key, so a misread key is refused here, not signed with.
fn parse_private_key(pem: &str) -> Result<RsaKey, KeyError> {
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
fn rsa_key_from_pkcs8(der: &[u8]) -> Result<RsaKey, &'static str> {
    let mut info = Der(Der(der).expect(DER_SEQUENCE, "expected a PrivateKeyInfo SEQUENCE")?);
    info.expect(DER_INTEGER, "expected the version INTEGER")?;
    let mut algorithm = Der(info.expect(DER_SEQUENCE, "expected the algorithm SEQUENCE")?);
    if algorithm.expect(DER_OID, "expected the algorithm OID")? != RSA_ENCRYPTION_OID {
        return Err("the key's algorithm is not RSA (rsaEncryption)");
    }
    rsa_key_from_pkcs1(info.expect(DER_OCTET_STRING, "expected the key OCTET STRING")?)
}

/// PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2): `SEQUENCE { version, n, e, d,
/// p, q, dP, dQ, qInv }`. The CRT values are not read: signing does not
/// use them.
fn rsa_key_from_pkcs1(der: &[u8]) -> Result<RsaKey, &'static str> {
    let mut key = Der(Der(der).expect(DER_SEQUENCE, "expected an RSAPrivateKey SEQUENCE")?);
    if key.expect(DER_INTEGER, "expected the version INTEGER")? != [0] {
        return Err("multi-prime RSA keys are not supported");
    }
    let (n, e, d) = (key.uint()?, key.uint()?, key.uint()?);
    let (p, q) = (key.uint()?, key.uint()?);
    RsaKey::from_components(n, e, d, p, q).ok_or("its numbers do not form a valid RSA key")
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

    /// A non-negative INTEGER: its big-endian bytes.
    fn uint(&mut self) -> Result<&'a [u8], &'static str> {
        let bytes = self.expect(DER_INTEGER, "expected an INTEGER")?;
        if bytes.first().is_none_or(|b| b & 0x80 != 0) {
            return Err("an INTEGER is empty or negative");
        }
        Ok(bytes)
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
    let der = base64_codec::decode(base64, Padding::Canonical).ok_or(KeyError::InvalidBase64)?;
    Ok((label, der))
}

/// Why the assertion could not be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// The RSA operation failed. Cannot happen with a key that
    /// [`ServiceAccount::parse`] accepted, but is reported, not assumed.
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
    // Members in name order, as serde_json wrote these objects.
    let mut header = json::Object::new();
    header.string("alg", "RS256");
    if let Some(id) = &account.private_key_id {
        header.string("kid", id);
    }
    let header = header.string("typ", "JWT").finish();
    let iat = now.as_secs();
    let claims = json::Object::new()
        .string("aud", &account.token_uri)
        .u64("exp", iat.saturating_add(ASSERTION_LIFETIME_SECS))
        .u64("iat", iat)
        .string("iss", &account.client_email)
        .string("scope", SCOPE)
        .finish();
    let signing_input = format!(
        "{}.{}",
        base64_codec::encode_url(header),
        base64_codec::encode_url(claims)
    );
    let signature = sign_rs256(&account.key.0, signing_input.as_bytes())?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        base64_codec::encode_url(signature)
    )))
}

/// RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 over SHA-256. Deterministic,
/// so no randomness source is needed in the filter.
fn sign_rs256(key: &RsaKey, input: &[u8]) -> Result<Vec<u8>, JwtError> {
    key.sign_sha256(&Sha256::digest(input).into())
        .ok_or(JwtError::Sign)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::{Pkcs1v15Sign, RsaPublicKey};
    use serde_json::{json, Value};

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

    /// The label and DER of a test PEM.
    pub(crate) fn decode_test_pem(pem: &str) -> (String, Vec<u8>) {
        let (label, der) = decode_pem(pem).unwrap();
        (label.to_string(), der)
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
        // No number of the key is printed.
        assert!(!d.contains("BoxedUint") && !d.contains("modulus"), "{d}");
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
    fn larger_keys_sign_verifiable_assertions() {
        use crate::storage::rs256::tests::{test_rsa_key, TEST_KEY_3072, TEST_KEY_4096};
        for (bits, pem) in [(3072, TEST_KEY_3072), (4096, TEST_KEY_4096)] {
            let a = ServiceAccount::parse(&account_json(pem)).unwrap();
            let jwt = jwt_assertion(&a, Timestamp::from_millis(1_700_000_000_000)).unwrap();
            let parts: Vec<&str> = jwt.expose().split('.').collect();
            let signature = b64(parts[2]);
            assert_eq!(signature.len(), bits / 8);
            let digest = Sha256::digest(format!("{}.{}", parts[0], parts[1]).as_bytes());
            test_rsa_key(bits)
                .to_public_key()
                .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &signature)
                .unwrap();
        }
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

    /// The header and claims are the bytes serde_json's `json!` wrote
    /// before `json::Object` (names sorted), with and without a `kid`,
    /// and with text that needs escaping.
    #[test]
    fn assertion_segments_are_the_bytes_serde_json_wrote() {
        let now = Timestamp::from_secs(1_700_000_000);
        let escaped = with("client_email", json!("a\"b\\c\u{1}é@x"));
        for text in [
            account_json(TEST_KEY_PKCS8),
            without("private_key_id"),
            escaped,
        ] {
            let a = ServiceAccount::parse(&text).unwrap();
            let jwt = jwt_assertion(&a, now).unwrap();
            let parts: Vec<&str> = jwt.expose().split('.').collect();
            let mut header = json!({"alg": "RS256", "typ": "JWT"});
            if let Some(id) = a.private_key_id() {
                header["kid"] = id.into();
            }
            let claims = json!({
                "iss": a.client_email(),
                "scope": SCOPE,
                "aud": a.token_uri(),
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
            });
            assert_eq!(b64(parts[0]), header.to_string().into_bytes());
            assert_eq!(b64(parts[1]), claims.to_string().into_bytes());
        }
    }
}
