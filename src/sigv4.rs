//! AWS Signature Version 4, header form, as pure functions.
//!
//! The filter signs its object-store requests itself because a proxy-wasm
//! module cannot link an AWS SDK (no threads, no clock, no sockets of its
//! own). Everything here is deterministic: the caller passes the time as a
//! [`Timestamp`], the request as borrowed parts ([`SignableRequest`]), and
//! gets back the headers to add ([`SigningOutput`]). Nothing mutates a
//! request, so the shell decides how the headers reach the wire and the
//! core can be tested byte for byte against the official AWS test suite
//! (`tests/sigv4_suite.rs`) and the worked examples in the S3 docs.
//!
//! Only what the filter needs is implemented: header signing with a
//! single-chunk payload. Presigned URLs, chunked (streaming) uploads and
//! SigV4a are out of scope.

use std::collections::BTreeMap;
use std::fmt;

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::time::Timestamp;

/// The only algorithm this module speaks.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Terminator of the credential scope, fixed by the SigV4 specification.
const SCOPE_TERMINATOR: &str = "aws4_request";
/// Payload hash sentinel telling S3 the body is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const HEADER_AUTHORIZATION: &str = "authorization";
const HEADER_DATE: &str = "x-amz-date";
const HEADER_CONTENT_SHA256: &str = "x-amz-content-sha256";
const HEADER_SECURITY_TOKEN: &str = "x-amz-security-token";

/// Long-lived or temporary AWS credentials.
///
/// `Debug` is derived on purpose: both secret fields are [`Secret`]s, whose
/// `Debug` prints `***`, so logging a `Credentials` cannot leak them. The
/// access key id is an identifier, not a secret (it travels in clear in
/// every `Authorization` header), so it is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Present for temporary (STS) credentials; sent as
    /// `x-amz-security-token`.
    pub session_token: Option<Secret>,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: Secret) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key,
            session_token: None,
        }
    }

    #[must_use]
    pub fn with_session_token(mut self, token: Secret) -> Self {
        self.session_token = Some(token);
        self
    }
}

/// How the path becomes the canonical URI.
///
/// AWS services disagree here and the signature breaks on any mismatch:
/// S3 signs the path exactly as sent (the object key is encoded once, by
/// the caller), every other service URI-encodes the already-encoded path a
/// second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriEncoding {
    /// The path is used as given; it must already be in canonical encoded
    /// form (see [`uri_encode`]). Required by S3.
    Single,
    /// The path is URI-encoded once more (`%20` becomes `%2520`). What all
    /// non-S3 services, and the official test suite, expect.
    Double,
}

/// Whether dot segments and duplicate slashes are removed from the path
/// before encoding.
///
/// S3 object keys may legitimately contain `//`, `./` or `../`, so S3 must
/// never normalise: doing so would sign (and address) a different object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathNormalization {
    Enabled,
    Disabled,
}

/// Where the payload hash on the last line of the canonical request comes
/// from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PayloadHash<'a> {
    /// Hash this body (hex SHA-256).
    Body(&'a [u8]),
    /// A hash the caller already has (e.g. computed while buffering), or
    /// another S3 sentinel. Must be printable ASCII without spaces.
    Precomputed(&'a str),
    /// [`UNSIGNED_PAYLOAD`]: the body is not covered. Only S3 accepts it.
    Unsigned,
}

impl fmt::Debug for PayloadHash<'_> {
    /// Shows the body length, not the body: bodies can be large and may
    /// carry data that does not belong in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadHash::Body(body) => write!(f, "Body({} bytes)", body.len()),
            PayloadHash::Precomputed(hash) => f.debug_tuple("Precomputed").field(hash).finish(),
            PayloadHash::Unsigned => f.write_str("Unsigned"),
        }
    }
}

/// Whether to send the payload hash as an `x-amz-content-sha256` header.
///
/// S3 rejects requests without it; other services do not need it, and the
/// official suite only adds it for its `sign_body` cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentSha256Header {
    Add,
    Omit,
}

/// Everything about a signature that is not the request itself.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    pub service: &'a str,
    /// The signing instant; becomes `x-amz-date` and the scope's day.
    pub time: Timestamp,
    pub uri_encoding: UriEncoding,
    pub normalization: PathNormalization,
    pub payload: PayloadHash<'a>,
    pub content_sha256: ContentSha256Header,
    /// Whether `x-amz-security-token` (sent whenever the credentials have
    /// a session token) is covered by the signature. Almost every service,
    /// S3 included, wants `true`; a few legacy ones (and the suite's
    /// `omit_session_token` cases) sign without it and expect the header to
    /// be added afterwards.
    pub session_token_in_signature: bool,
}

impl<'a> SigningParams<'a> {
    /// Settings S3 requires: single encoding, no normalisation,
    /// `x-amz-content-sha256` sent, session token signed.
    pub fn s3(
        credentials: &'a Credentials,
        region: &'a str,
        time: Timestamp,
        payload: PayloadHash<'a>,
    ) -> Self {
        SigningParams {
            credentials,
            region,
            service: "s3",
            time,
            uri_encoding: UriEncoding::Single,
            normalization: PathNormalization::Disabled,
            payload,
            content_sha256: ContentSha256Header::Add,
            session_token_in_signature: true,
        }
    }

    /// Settings for every other service: double encoding, normalisation,
    /// no `x-amz-content-sha256`, session token signed.
    pub fn standard(
        credentials: &'a Credentials,
        region: &'a str,
        service: &'a str,
        time: Timestamp,
        payload: PayloadHash<'a>,
    ) -> Self {
        SigningParams {
            credentials,
            region,
            service,
            time,
            uri_encoding: UriEncoding::Double,
            normalization: PathNormalization::Enabled,
            payload,
            content_sha256: ContentSha256Header::Omit,
            session_token_in_signature: true,
        }
    }
}

/// The parts of an HTTP request that SigV4 covers, borrowed.
#[derive(Clone, Copy)]
pub struct SignableRequest<'a> {
    /// HTTP method, e.g. `GET`; used verbatim.
    pub method: &'a str,
    /// The path exactly as it will be sent, starting with `/` (empty means
    /// `/`). With [`UriEncoding::Single`] it must already be encoded; build
    /// S3 object paths with [`uri_encode`].
    pub path: &'a str,
    /// The raw query string without the leading `?` (empty if none).
    pub query: &'a str,
    /// Every header that will be sent and must be signed, including `host`.
    /// Names are matched case-insensitively. Pass only headers that reach
    /// the server unchanged: a hop that rewrites a signed header breaks the
    /// signature. HTTP/2 pseudo-headers (`:authority`) are not headers here;
    /// pass `host` instead.
    pub headers: &'a [(String, String)],
}

impl fmt::Debug for SignableRequest<'_> {
    /// Header values are left out: a caller may pass credentials-bearing
    /// headers, and this type is easy to log by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SignableRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("header_names", &names)
            .finish()
    }
}

/// What the caller must do to the request, plus the intermediate strings.
///
/// The intermediates are returned because a `SignatureDoesNotMatch` from
/// AWS echoes the canonical request and string to sign it computed:
/// comparing them with ours is the only practical way to debug a mismatch.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningOutput {
    /// Headers to ADD to the request, names lowercase, in this order:
    /// `x-amz-date`, `x-amz-content-sha256` (if requested),
    /// `x-amz-security-token` (if the credentials have one),
    /// `authorization`.
    pub headers: Vec<(String, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lowercase hex HMAC-SHA256, as in the `Authorization` header.
    pub signature: String,
}

impl SigningOutput {
    /// The value of one added header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for SigningOutput {
    /// Masks the session token, which appears both as an added header and,
    /// when signed, as a line of the canonical request. The signature is
    /// shown: it is derived, short-lived and needed to debug mismatches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                if n.eq_ignore_ascii_case(HEADER_SECURITY_TOKEN) {
                    (n.as_str(), "***")
                } else {
                    (n.as_str(), v.as_str())
                }
            })
            .collect();
        let prefix = format!("{HEADER_SECURITY_TOKEN}:");
        let canonical_request: Vec<&str> = self
            .canonical_request
            .split('\n')
            .map(|line| {
                if line.starts_with(&prefix) {
                    "x-amz-security-token:***"
                } else {
                    line
                }
            })
            .collect();
        f.debug_struct("SigningOutput")
            .field("headers", &headers)
            .field("canonical_request", &canonical_request.join("\n"))
            .field("string_to_sign", &self.string_to_sign)
            .field("signature", &self.signature)
            .finish()
    }
}

/// Why a request could not be signed. Each variant is a caller bug or a
/// configuration error: signing such a request would only earn a 403 later,
/// far from the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningError {
    /// No `host` header: SigV4 requires it to be signed.
    MissingHost,
    /// More than one `host` header.
    DuplicateHost,
    /// The request already carries a header the signer adds itself
    /// (lowercase name given). Signing would produce a duplicate.
    ReservedHeader(&'static str),
    /// A header name that is not an HTTP token (empty, contains `:` or
    /// whitespace, or is an HTTP/2 pseudo-header).
    InvalidHeaderName(String),
    /// A header value with control characters (name given, value withheld).
    InvalidHeaderValue(String),
    /// The method is empty or not an HTTP token.
    InvalidMethod(String),
    /// The path is neither empty nor starts with `/`.
    PathNotAbsolute,
    /// With [`UriEncoding::Single`], the path has a byte at `index` that
    /// is not unreserved, `/` or an uppercase `%XX` escape: it was not
    /// built with [`uri_encode`].
    PathNotEncoded { index: usize },
    /// The query has a `%` at `index` not followed by two hex digits.
    InvalidQueryEscape { index: usize },
    /// Region or service is empty or has characters outside
    /// `A-Z a-z 0-9 - _ .` (a `/` would corrupt the credential scope).
    InvalidScope { field: &'static str },
    /// An empty or malformed credential field (which one is given, never
    /// its value).
    InvalidCredentials { field: &'static str },
    /// A precomputed payload hash that is empty or not printable ASCII.
    InvalidPayloadHash,
}

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningError::MissingHost => f.write_str("sigv4: request has no host header"),
            SigningError::DuplicateHost => f.write_str("sigv4: request has more than one host header"),
            SigningError::ReservedHeader(name) => write!(
                f,
                "sigv4: request already has a {name} header; the signer adds it"
            ),
            SigningError::InvalidHeaderName(name) => {
                write!(f, "sigv4: invalid header name {name:?}")
            }
            SigningError::InvalidHeaderValue(name) => {
                write!(f, "sigv4: header {name:?} has control characters in its value")
            }
            SigningError::InvalidMethod(method) => write!(f, "sigv4: invalid HTTP method {method:?}"),
            SigningError::PathNotAbsolute => f.write_str("sigv4: path must start with '/'"),
            SigningError::PathNotEncoded { index } => write!(
                f,
                "sigv4: path byte {index} is not URI-encoded; single-encoding services (S3) need the path built with uri_encode"
            ),
            SigningError::InvalidQueryEscape { index } => write!(
                f,
                "sigv4: query has a malformed percent escape at byte {index}"
            ),
            SigningError::InvalidScope { field } => write!(
                f,
                "sigv4: {field} must be non-empty and use only A-Z a-z 0-9 - _ ."
            ),
            SigningError::InvalidCredentials { field } => {
                write!(f, "sigv4: credentials field {field} is empty or malformed")
            }
            SigningError::InvalidPayloadHash => {
                f.write_str("sigv4: precomputed payload hash must be non-empty printable ASCII")
            }
        }
    }
}

impl std::error::Error for SigningError {}

/// Signs `req` and returns the headers to add.
///
/// Fails only on input that could never produce a valid signature (see
/// [`SigningError`]); it never panics and never reads a clock.
pub fn sign(
    req: &SignableRequest<'_>,
    params: &SigningParams<'_>,
) -> Result<SigningOutput, SigningError> {
    validate_params(params)?;
    if !is_token(req.method) {
        return Err(SigningError::InvalidMethod(req.method.to_owned()));
    }

    let amz_date = params.time.amz_date();
    let day = params.time.amz_day();
    let payload_hash = payload_hash(params.payload)?;
    let token = params.credentials.session_token.as_ref();

    // Headers the signer adds, in the order they are returned.
    let mut added: Vec<(String, String)> = Vec::with_capacity(4);
    added.push((HEADER_DATE.to_owned(), amz_date.clone()));
    if params.content_sha256 == ContentSha256Header::Add {
        added.push((HEADER_CONTENT_SHA256.to_owned(), payload_hash.clone()));
    }
    let token_signed = params.session_token_in_signature;
    if let (Some(token), true) = (token, token_signed) {
        added.push((HEADER_SECURITY_TOKEN.to_owned(), token.expose().to_owned()));
    }

    let mut reserved: Vec<&'static str> = vec![HEADER_AUTHORIZATION, HEADER_DATE];
    if params.content_sha256 == ContentSha256Header::Add {
        reserved.push(HEADER_CONTENT_SHA256);
    }
    if token.is_some() {
        reserved.push(HEADER_SECURITY_TOKEN);
    }

    let headers = canonical_headers(req.headers, &added, &reserved)?;
    let signed_headers = headers
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";");
    let mut header_block = String::new();
    for (name, values) in &headers {
        header_block.push_str(name);
        header_block.push(':');
        header_block.push_str(&values.join(","));
        header_block.push('\n');
    }

    let path = canonical_path(req.path, params.uri_encoding, params.normalization)?;
    let query = canonical_query(req.query)?;

    let canonical_request = format!(
        "{method}\n{path}\n{query}\n{header_block}\n{signed_headers}\n{payload_hash}",
        method = req.method,
    );

    let scope = format!(
        "{day}/{}/{}/{SCOPE_TERMINATOR}",
        params.region, params.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );

    let key = signing_key(
        &params.credentials.secret_access_key,
        &day,
        params.region,
        params.service,
    );
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));

    if let (Some(token), false) = (token, token_signed) {
        added.push((HEADER_SECURITY_TOKEN.to_owned(), token.expose().to_owned()));
    }
    added.push((
        HEADER_AUTHORIZATION.to_owned(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            params.credentials.access_key_id
        ),
    ));

    Ok(SigningOutput {
        headers: added,
        canonical_request,
        string_to_sign,
        signature,
    })
}

/// URI-encodes `input` the way SigV4 defines `UriEncode()`: every UTF-8
/// byte except the RFC 3986 unreserved set (`A-Z a-z 0-9 - _ . ~`) becomes
/// `%XX` with uppercase hex; `/` is kept when `encode_slash` is false.
///
/// Use it with `encode_slash = false` to turn an S3 object key into the
/// path to send (`/bucket/` + key): S3 signs the path as sent, so the key
/// must be encoded exactly this way, once. Note that `+` becomes `%2B` and
/// space `%20`, never `+`.
#[must_use]
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    encode_bytes(input.as_bytes(), encode_slash)
}

fn encode_bytes(bytes: &[u8], encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) || (b == b'/' && !encode_slash) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// RFC 7230 `token`: what header names and methods are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn validate_params(params: &SigningParams<'_>) -> Result<(), SigningError> {
    let scope_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !scope_ok(params.region) {
        return Err(SigningError::InvalidScope { field: "region" });
    }
    if !scope_ok(params.service) {
        return Err(SigningError::InvalidScope { field: "service" });
    }
    let creds = params.credentials;
    // The key id is embedded in `Credential=<id>/<scope>, ...`: a `/`, `,`
    // or space would make the header ambiguous.
    let id_ok = !creds.access_key_id.is_empty()
        && creds
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',');
    if !id_ok {
        return Err(SigningError::InvalidCredentials {
            field: "access_key_id",
        });
    }
    if creds.secret_access_key.expose().is_empty() {
        return Err(SigningError::InvalidCredentials {
            field: "secret_access_key",
        });
    }
    if let Some(token) = &creds.session_token {
        let t = token.expose();
        if t.is_empty() || t.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(SigningError::InvalidCredentials {
                field: "session_token",
            });
        }
    }
    Ok(())
}

fn payload_hash(payload: PayloadHash<'_>) -> Result<String, SigningError> {
    match payload {
        PayloadHash::Body(body) => Ok(hex::encode(Sha256::digest(body))),
        PayloadHash::Precomputed(hash) => {
            if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_graphic()) {
                Err(SigningError::InvalidPayloadHash)
            } else {
                Ok(hash.to_owned())
            }
        }
        PayloadHash::Unsigned => Ok(UNSIGNED_PAYLOAD.to_owned()),
    }
}

/// Lowercased name -> canonical values in order of appearance. A
/// `BTreeMap` gives the byte-wise name order SigV4 requires.
fn canonical_headers(
    request: &[(String, String)],
    added: &[(String, String)],
    reserved: &[&'static str],
) -> Result<BTreeMap<String, Vec<String>>, SigningError> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request {
        if !is_token(name) {
            return Err(SigningError::InvalidHeaderName(name.clone()));
        }
        let lower = name.to_ascii_lowercase();
        if let Some(r) = reserved.iter().find(|r| **r == lower) {
            return Err(SigningError::ReservedHeader(r));
        }
        // Tab, CR and LF are allowed: they are the whitespace of an
        // obs-fold continuation, which canonicalisation collapses.
        if value
            .chars()
            .any(|c| c.is_ascii_control() && !matches!(c, '\t' | '\r' | '\n'))
        {
            return Err(SigningError::InvalidHeaderValue(name.clone()));
        }
        map.entry(lower).or_default().push(canonical_value(value));
    }
    match map.get("host").map(Vec::len) {
        None => return Err(SigningError::MissingHost),
        Some(1) => {}
        Some(_) => return Err(SigningError::DuplicateHost),
    }
    for (name, value) in added {
        map.entry(name.clone()).or_default().push(value.clone());
    }
    Ok(map)
}

/// Trims the value and collapses every run of whitespace (including the
/// line breaks of a folded multi-line value) to one space.
fn canonical_value(value: &str) -> String {
    value
        .split([' ', '\t', '\r', '\n'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn canonical_path(
    path: &str,
    encoding: UriEncoding,
    normalization: PathNormalization,
) -> Result<String, SigningError> {
    let path = if path.is_empty() { "/" } else { path };
    if !path.starts_with('/') {
        return Err(SigningError::PathNotAbsolute);
    }
    let path = match normalization {
        PathNormalization::Enabled => normalize_path(path),
        PathNormalization::Disabled => path.to_owned(),
    };
    match encoding {
        UriEncoding::Double => Ok(uri_encode(&path, false)),
        UriEncoding::Single => {
            check_encoded_path(&path)?;
            Ok(path)
        }
    }
}

/// Removes `.` and `..` segments and empty segments (duplicate slashes),
/// as RFC 3986 `remove_dot_segments` does plus slash collapsing. A path
/// that ended in a directory (`/`, `/.`, `/..`) keeps its trailing slash,
/// as the suite expects (`//example//` -> `/example/`). `..` above the
/// root is dropped.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    let directory = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if directory && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// With single encoding the path is signed verbatim, so it has to be in
/// the canonical encoded form already; anything else (a raw space, a `?`,
/// lowercase hex) would be signed differently by the server.
fn check_encoded_path(path: &str) -> Result<(), SigningError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if is_unreserved(b) || b == b'/' {
            i += 1;
            continue;
        }
        let upper_hex =
            |x: Option<&u8>| x.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c));
        if b == b'%' && upper_hex(bytes.get(i + 1)) && upper_hex(bytes.get(i + 2)) {
            i += 3;
        } else {
            return Err(SigningError::PathNotEncoded { index: i });
        }
    }
    Ok(())
}

/// Decodes each key and value, re-encodes it canonically, and sorts by
/// encoded key, then encoded value. Decoding first makes already-encoded
/// and raw input sign the same (`%E1%88%B4` and `ሴ` both become
/// `%E1%88%B4`). `+` is taken literally (`%2B`), not as a space: SigV4
/// has no form-encoding, so callers must send spaces as `%20`.
fn canonical_query(query: &str) -> Result<String, SigningError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut offset = 0;
    for part in query.split('&') {
        let start = offset;
        offset += part.len() + 1;
        if part.is_empty() {
            continue;
        }
        let (key, value, value_start) = match part.split_once('=') {
            Some((k, v)) => (k, v, start + k.len() + 1),
            None => (part, "", start + part.len()),
        };
        let key = percent_decode(key)
            .map_err(|i| SigningError::InvalidQueryEscape { index: start + i })?;
        let value = percent_decode(value).map_err(|i| SigningError::InvalidQueryEscape {
            index: value_start + i,
        })?;
        pairs.push((encode_bytes(&key, true), encode_bytes(&value, true)));
    }
    crate::sort::sort_small(&mut pairs);
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

/// `%XX` to bytes; `Err(index)` of a `%` not followed by two hex digits.
fn percent_decode(s: &str) -> Result<Vec<u8>, usize> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hi = bytes.get(i + 1).and_then(|c| hex_value(*c));
        let lo = bytes.get(i + 2).and_then(|c| hex_value(*c));
        match (hi, lo) {
            (Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => return Err(i),
        }
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region),
/// service), "aws4_request")`.
fn signing_key(secret: &Secret, day: &str, region: &str, service: &str) -> [u8; 32] {
    let k_secret = format!("AWS4{}", secret.expose());
    let k_date = hmac_sha256(k_secret.as_bytes(), day.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes())
}

/// HMAC-SHA256 without a fallible constructor.
///
/// `Hmac::new_from_slice` returns a `Result` although HMAC accepts keys of
/// any length; to stay free of `unwrap` and of an error variant that can
/// never occur, the key is brought to block size here exactly as RFC 2104
/// prescribes (hashed if longer than a block, then zero-padded) and passed
/// through the infallible fixed-size constructor. A unit test checks this
/// against `new_from_slice`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block: Key<Hmac<Sha256>> = Default::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block
            .iter_mut()
            .zip(digest.iter())
            .for_each(|(d, s)| *d = *s);
    } else {
        block.iter_mut().zip(key.iter()).for_each(|(d, s)| *d = *s);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2013-05-24T00:00:00Z, the instant of the S3 documentation examples.
    const S3_DOC_TIME: Timestamp = Timestamp::from_secs(1_369_353_600);
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn doc_credentials() -> Credentials {
        Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        )
    }

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a [(String, String)],
    ) -> SignableRequest<'a> {
        SignableRequest {
            method,
            path,
            query,
            headers,
        }
    }

    fn canonical_uri_line(out: &SigningOutput) -> &str {
        out.canonical_request.split('\n').nth(1).unwrap()
    }

    fn canonical_query_line(out: &SigningOutput) -> &str {
        out.canonical_request.split('\n').nth(2).unwrap()
    }

    // ---- S3 documentation examples ("Signature Calculations for the
    // Authorization Header: Transferring Payload in a Single Chunk"). ----

    #[test]
    fn s3_doc_get_object() {
        assert_eq!(S3_DOC_TIME.amz_date(), "20130524T000000Z");
        let creds = doc_credentials();
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
        ]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Body(b""));
        let out = sign(&request("GET", "/test.txt", "", &h), &params).unwrap();
        assert_eq!(
            out.canonical_request,
            "GET\n/test.txt\n\n\
             host:examplebucket.s3.amazonaws.com\n\
             range:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\n\
             host;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            out.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            out.signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert_eq!(
            out.header("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
        assert_eq!(out.header("x-amz-date"), Some("20130524T000000Z"));
        assert_eq!(out.header("x-amz-content-sha256"), Some(EMPTY_SHA256));
        let names: Vec<&str> = out.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["x-amz-date", "x-amz-content-sha256", "authorization"]
        );
    }

    #[test]
    fn s3_doc_put_object() {
        let creds = doc_credentials();
        let h = headers(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]);
        let path = uri_encode("/test$file.text", false);
        assert_eq!(path, "/test%24file.text");
        let body = b"Welcome to Amazon S3.";
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Body(body));
        let out = sign(&request("PUT", &path, "", &h), &params).unwrap();
        assert_eq!(
            out.canonical_request,
            "PUT\n/test%24file.text\n\n\
             date:Fri, 24 May 2013 00:00:00 GMT\n\
             host:examplebucket.s3.amazonaws.com\n\
             x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
             x-amz-date:20130524T000000Z\n\
             x-amz-storage-class:REDUCED_REDUNDANCY\n\n\
             date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
             44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        assert_eq!(
            out.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
        );
        assert_eq!(
            out.signature,
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );

        // The same hash given precomputed signs identically.
        let params = SigningParams::s3(
            &creds,
            "us-east-1",
            S3_DOC_TIME,
            PayloadHash::Precomputed(
                "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
            ),
        );
        let again = sign(&request("PUT", &path, "", &h), &params).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn s3_doc_get_bucket_lifecycle() {
        let creds = doc_credentials();
        let h = headers(&[("Host", "examplebucket.s3.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Body(b""));
        let out = sign(&request("GET", "/", "lifecycle", &h), &params).unwrap();
        assert_eq!(
            out.canonical_request,
            "GET\n/\nlifecycle=\n\
             host:examplebucket.s3.amazonaws.com\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\n\
             host;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(out
            .string_to_sign
            .ends_with("9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"));
        assert_eq!(
            out.signature,
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
    }

    #[test]
    fn s3_doc_list_objects() {
        let creds = doc_credentials();
        let h = headers(&[("Host", "examplebucket.s3.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Body(b""));
        // Given out of order: the canonical query sorts it.
        let out = sign(&request("GET", "", "prefix=J&max-keys=2", &h), &params).unwrap();
        assert_eq!(canonical_uri_line(&out), "/");
        assert_eq!(canonical_query_line(&out), "max-keys=2&prefix=J");
        assert!(out
            .string_to_sign
            .ends_with("df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"));
        assert_eq!(
            out.signature,
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    // ---- S3 object keys: encoded once by uri_encode, signed verbatim. ----

    #[test]
    fn s3_object_keys_are_single_encoded() {
        let creds = doc_credentials();
        let h = headers(&[("host", "bucket.s3.eu-west-1.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "eu-west-1", S3_DOC_TIME, PayloadHash::Unsigned);
        let cases = [
            ("a key with spaces.json", "/a%20key%20with%20spaces.json"),
            ("plus+sign", "/plus%2Bsign"),
            ("k=v&x", "/k%3Dv%26x"),
            ("tilde~ok-_.", "/tilde~ok-_."),
            ("unicode/ü/ሴ/😀", "/unicode/%C3%BC/%E1%88%B4/%F0%9F%98%80"),
            ("percent%20literal", "/percent%2520literal"),
        ];
        for (key, expected) in cases {
            let path = format!("/{}", uri_encode(key, false));
            assert_eq!(path, expected, "{key}");
            let out = sign(&request("GET", &path, "", &h), &params).unwrap();
            assert_eq!(canonical_uri_line(&out), expected, "{key}");
        }
    }

    #[test]
    fn s3_paths_are_not_normalized() {
        let creds = doc_credentials();
        let h = headers(&[("host", "bucket.s3.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Unsigned);
        for key in ["a//b", "./a", "a/./b/../c", "../up", "trailing/", "a/."] {
            let path = format!("/{}", uri_encode(key, false));
            let out = sign(&request("GET", &path, "", &h), &params).unwrap();
            assert_eq!(canonical_uri_line(&out), path, "{key}");
        }
    }

    #[test]
    fn single_encoding_rejects_unencoded_paths() {
        let creds = doc_credentials();
        let h = headers(&[("host", "bucket.s3.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Unsigned);
        let cases = [
            ("/a b", 2),
            ("/a?b", 2),
            ("/a+b", 2),
            ("/%2b", 1),
            ("/%2", 1),
            ("/ü", 1),
        ];
        for (path, index) in cases {
            let err = sign(&request("GET", path, "", &h), &params).unwrap_err();
            assert_eq!(err, SigningError::PathNotEncoded { index }, "{path}");
        }
    }

    #[test]
    fn double_encoding_encodes_the_encoded_path_again() {
        let creds = doc_credentials();
        let h = headers(&[("host", "example.amazonaws.com")]);
        let params = SigningParams::standard(
            &creds,
            "us-east-1",
            "service",
            S3_DOC_TIME,
            PayloadHash::Body(b""),
        );
        let out = sign(&request("GET", "/a%20b/c d", "", &h), &params).unwrap();
        assert_eq!(canonical_uri_line(&out), "/a%2520b/c%20d");
    }

    #[test]
    fn uri_encode_rules() {
        assert_eq!(
            uri_encode("AZaz09-_.~", true),
            "AZaz09-_.~",
            "unreserved characters stay"
        );
        assert_eq!(uri_encode("a/b", false), "a/b");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(
            uri_encode(" !*'()+,;:@&=$?#[]%", true),
            "%20%21%2A%27%28%29%2B%2C%3B%3A%40%26%3D%24%3F%23%5B%5D%25"
        );
        assert_eq!(uri_encode("é", true), "%C3%A9");
        assert_eq!(uri_encode("", true), "");
    }

    #[test]
    fn normalization() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../c", "/a/c"),
            ("/../../a", "/a"),
            ("/a..b/.c/..d", "/a..b/.c/..d"),
            ("/example space/", "/example space/"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_path(input), expected, "{input}");
        }
    }

    #[test]
    fn query_canonicalization() {
        let cases = [
            ("", ""),
            ("b=2&a=1", "a=1&b=2"),
            ("a=2&a=1&a=10", "a=1&a=10&a=2"),
            ("flag", "flag="),
            ("flag=", "flag="),
            ("=v", "=v"),
            ("a=1&&b", "a=1&b="),
            ("p=a b", "p=a%20b"),
            ("p=a+b", "p=a%2Bb"),
            ("p=a%2bb", "p=a%2Bb"),
            ("p=%7E", "p=~"),
            ("k=a=b", "k=a%3Db"),
            ("ሴ=bar", "%E1%88%B4=bar"),
            (
                "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
                "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
            ),
            ("p=%FF", "p=%FF"),
        ];
        for (input, expected) in cases {
            assert_eq!(canonical_query(input).unwrap(), expected, "{input}");
        }
        assert_eq!(
            canonical_query("a=1&b=%zz"),
            Err(SigningError::InvalidQueryEscape { index: 6 })
        );
        assert_eq!(
            canonical_query("%4"),
            Err(SigningError::InvalidQueryEscape { index: 0 })
        );
    }

    #[test]
    fn header_canonicalization() {
        let creds = doc_credentials();
        let h = headers(&[
            ("Host", "example.amazonaws.com"),
            ("My-Header1", "  a   b\t c  "),
            ("my-header1", "value2"),
            ("MY-HEADER1", "line1\r\n   line2"),
            ("Empty", ""),
        ]);
        let params = SigningParams::standard(
            &creds,
            "us-east-1",
            "service",
            S3_DOC_TIME,
            PayloadHash::Body(b""),
        );
        let out = sign(&request("GET", "/", "", &h), &params).unwrap();
        assert!(out.canonical_request.contains(
            "\nempty:\nhost:example.amazonaws.com\nmy-header1:a b c,value2,line1 line2\nx-amz-date:20130524T000000Z\n\nempty;host;my-header1;x-amz-date\n"
        ));
        assert_eq!(out.header("x-amz-content-sha256"), None);
    }

    #[test]
    fn session_token_signed_or_appended() {
        let token = "FQoGZXIvYXdzEXAMPLETOKEN";
        let creds = doc_credentials().with_session_token(Secret::new(token));
        let h = headers(&[("host", "bucket.s3.amazonaws.com")]);
        let mut params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Unsigned);

        let signed = sign(&request("GET", "/k", "", &h), &params).unwrap();
        assert!(signed
            .canonical_request
            .contains(&format!("x-amz-security-token:{token}\n")));
        assert!(signed
            .header("authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
        assert_eq!(signed.header("x-amz-security-token"), Some(token));

        params.session_token_in_signature = false;
        let after = sign(&request("GET", "/k", "", &h), &params).unwrap();
        assert!(!after.canonical_request.contains(token));
        assert_eq!(after.header("x-amz-security-token"), Some(token));
        assert_ne!(after.signature, signed.signature);
        let names: Vec<&str> = after.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
                "authorization"
            ]
        );

        // Neither the secret key nor the token reaches a Debug string.
        for text in [
            format!("{creds:?}"),
            format!("{signed:?}"),
            format!("{after:?}"),
            format!("{params:?}"),
        ] {
            assert!(!text.contains(token), "{text}");
            assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        }
        assert!(format!("{signed:?}").contains(&signed.signature));
    }

    #[test]
    fn rejects_bad_requests() {
        let creds = doc_credentials();
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Unsigned);
        let host = ("host", "b.s3.amazonaws.com");
        let err = |method: &str, path: &str, query: &str, list: &[(&str, &str)]| {
            let h = headers(list);
            sign(&request(method, path, query, &h), &params).unwrap_err()
        };
        assert_eq!(err("GET", "/", "", &[]), SigningError::MissingHost);
        assert_eq!(
            err("GET", "/", "", &[host, ("Host", "x")]),
            SigningError::DuplicateHost
        );
        assert_eq!(
            err("GET", "/", "", &[host, ("Authorization", "x")]),
            SigningError::ReservedHeader("authorization")
        );
        assert_eq!(
            err("GET", "/", "", &[host, ("X-Amz-Date", "x")]),
            SigningError::ReservedHeader("x-amz-date")
        );
        assert_eq!(
            err("GET", "/", "", &[host, ("x-amz-content-sha256", "x")]),
            SigningError::ReservedHeader("x-amz-content-sha256")
        );
        assert_eq!(
            err("GET", "/", "", &[host, (":authority", "x")]),
            SigningError::InvalidHeaderName(":authority".into())
        );
        assert_eq!(
            err("GET", "/", "", &[host, ("bad name", "x")]),
            SigningError::InvalidHeaderName("bad name".into())
        );
        assert_eq!(
            err("GET", "/", "", &[host, ("x-a", "nul\0")]),
            SigningError::InvalidHeaderValue("x-a".into())
        );
        assert_eq!(
            err("", "/", "", &[host]),
            SigningError::InvalidMethod(String::new())
        );
        assert_eq!(
            err("G T", "/", "", &[host]),
            SigningError::InvalidMethod("G T".into())
        );
        assert_eq!(
            err("GET", "key", "", &[host]),
            SigningError::PathNotAbsolute
        );
        assert_eq!(
            err("GET", "/", "a=%", &[host]),
            SigningError::InvalidQueryEscape { index: 2 }
        );

        // Without a session token, a caller-supplied x-amz-security-token
        // is just another signed header; with ContentSha256Header::Omit so
        // is x-amz-content-sha256.
        let mut params = SigningParams::standard(
            &creds,
            "us-east-1",
            "service",
            S3_DOC_TIME,
            PayloadHash::Body(b""),
        );
        let h = headers(&[
            host,
            ("x-amz-security-token", "t"),
            ("x-amz-content-sha256", "abc"),
        ]);
        let out = sign(&request("GET", "/", "", &h), &params).unwrap();
        assert!(out.canonical_request.contains("x-amz-security-token:t\n"));
        assert_eq!(out.header("x-amz-security-token"), None);

        let h = headers(&[host]);
        let req = request("GET", "/", "", &h);
        params.region = "";
        assert_eq!(
            sign(&req, &params),
            Err(SigningError::InvalidScope { field: "region" })
        );
        params.region = "us-east-1/x";
        assert_eq!(
            sign(&req, &params),
            Err(SigningError::InvalidScope { field: "region" })
        );
        params.region = "us-east-1";
        params.service = "s 3";
        assert_eq!(
            sign(&req, &params),
            Err(SigningError::InvalidScope { field: "service" })
        );
        params.service = "s3";
        params.payload = PayloadHash::Precomputed("");
        assert_eq!(sign(&req, &params), Err(SigningError::InvalidPayloadHash));
        params.payload = PayloadHash::Precomputed("a b");
        assert_eq!(sign(&req, &params), Err(SigningError::InvalidPayloadHash));
        params.payload = PayloadHash::Unsigned;

        let bad_credentials = [
            (Credentials::new("", Secret::new("s")), "access_key_id"),
            (Credentials::new("AK/ID", Secret::new("s")), "access_key_id"),
            (
                Credentials::new("AKID", Secret::new("")),
                "secret_access_key",
            ),
            (
                Credentials::new("AKID", Secret::new("s")).with_session_token(Secret::new("")),
                "session_token",
            ),
            (
                Credentials::new("AKID", Secret::new("s")).with_session_token(Secret::new("a\nb")),
                "session_token",
            ),
        ];
        for (bad, field) in &bad_credentials {
            params.credentials = bad;
            assert_eq!(
                sign(&req, &params),
                Err(SigningError::InvalidCredentials { field })
            );
        }
    }

    #[test]
    fn unsigned_payload_sentinel() {
        let creds = doc_credentials();
        let h = headers(&[("host", "b.s3.amazonaws.com")]);
        let params = SigningParams::s3(&creds, "us-east-1", S3_DOC_TIME, PayloadHash::Unsigned);
        let out = sign(&request("GET", "/k", "", &h), &params).unwrap();
        assert!(out.canonical_request.ends_with("\nUNSIGNED-PAYLOAD"));
        assert_eq!(out.header("x-amz-content-sha256"), Some(UNSIGNED_PAYLOAD));
    }

    #[test]
    fn errors_display_without_values() {
        let e = SigningError::InvalidHeaderValue("x-secret".into());
        assert_eq!(
            e.to_string(),
            "sigv4: header \"x-secret\" has control characters in its value"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(SigningError::MissingHost);
        assert_eq!(boxed.to_string(), "sigv4: request has no host header");
    }

    #[test]
    fn hmac_matches_the_hmac_crate_for_all_key_lengths() {
        for len in [0usize, 1, 20, 44, 63, 64, 65, 131, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut reference = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            reference.update(b"message");
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            assert_eq!(hmac_sha256(&key, b"message"), expected, "key length {len}");
        }
    }

    #[test]
    fn hmac_rfc4231_test_case_2() {
        // RFC 4231 section 4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
