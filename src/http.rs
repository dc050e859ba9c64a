//! Outbound HTTP as data.
//!
//! The core describes the calls it wants ([`HttpRequest`]) and receives what
//! came back ([`HttpResponse`]); the shell maps them to
//! `dispatch_http_call` and its callback. A native client could drive the
//! same core with the same types.

use std::fmt;
use std::time::Duration;

/// One outbound call: which upstream cluster, what to send, how long to wait.
///
/// `Debug` masks credential-bearing headers ([`SENSITIVE_HEADERS`]) and the
/// query string, and prints only the body's length.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The proxy's upstream cluster that carries the call.
    pub cluster: String,
    pub method: String,
    /// Path and query, already percent-encoded.
    pub path: String,
    pub authority: String,
    /// Extra headers (lower-case names); pseudo-headers are built by the shell.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Headers whose values are credentials (a signature is as good as the
/// key for replaying the request; a session token is a key).
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-security-token",
    // The EC2 IMDSv2 session token.
    "x-aws-ec2-metadata-token",
];

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let masked = SENSITIVE_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.as_str(), if masked { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("cluster", &self.cluster)
            .field("method", &self.method)
            .field("path", &masked_query(&self.path))
            .field("authority", &self.authority)
            .field("headers", &headers)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The path with its query replaced by `***`: a query may carry a
/// credential (an Azure SAS token's `sig`).
pub fn masked_query(path: &str) -> String {
    match path.split_once('?') {
        Some((p, _)) => format!("{p}?***"),
        None => path.to_string(),
    }
}

/// What came back. Transport failures reach us as synthetic statuses (Envoy
/// answers 503 for connect errors and 504 for timeouts), so the core treats
/// every non-success status alike and reports the body in its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text for a log line: at most `max` bytes, lossy UTF-8,
    /// one line.
    pub fn body_excerpt(&self, max: usize) -> String {
        let end = self.body.len().min(max);
        let text = String::from_utf8_lossy(&self.body[..end]);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A call that failed on the way rather than being answered by the
/// server: what the proxy reported, classified so log lines say what
/// happened instead of a bare status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The proxy gave up waiting (Envoy: 504 `upstream request timeout`).
    Timeout,
    /// No connection to the upstream (Envoy: 503 `upstream connect error
    /// ...`), with the proxy's reason.
    Unreachable(String),
    /// The connection broke before a complete answer (Envoy reports it
    /// with no status at all), with the host's reason.
    Reset(String),
    /// The answer's body is shorter than its `Content-Length`.
    Truncated { got: usize, expected: usize },
    /// The body is larger than the configured limit.
    TooLarge { size: usize, limit: u64 },
    /// No answer came at all, for the reason given.
    NoAnswer(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Timeout => {
                f.write_str("timed out (the proxy's upstream request timeout)")
            }
            TransportError::Unreachable(why) => {
                write!(f, "the proxy got no answer from the upstream: {why}")
            }
            TransportError::Reset(why) => write!(
                f,
                "the call broke before a complete answer (host: {why}): a truncated or stalled \
                 body, or a body over the proxy's buffer for a filter's calls (Envoy: runtime \
                 key http.async_response_buffer_limit, 32 MiB by default)"
            ),
            TransportError::Truncated { got, expected } => write!(
                f,
                "truncated body: {got} of {expected} bytes (Content-Length)"
            ),
            TransportError::TooLarge { size, limit } => {
                write!(f, "body of {size} bytes is over the limit of {limit} bytes")
            }
            TransportError::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

impl HttpResponse {
    /// What went wrong on the way, if this is not a server's complete
    /// answer of at most `limit` bytes.
    pub fn transport_error(&self, limit: u64) -> Option<TransportError> {
        let text = || self.body_excerpt(200);
        let starts = |p: &str| self.body.starts_with(p.as_bytes());
        match self.status {
            0 if starts(RESET_PREFIX) => {
                return Some(TransportError::Reset(
                    String::from_utf8_lossy(&self.body[RESET_PREFIX.len()..]).into_owned(),
                ))
            }
            0 => return Some(TransportError::NoAnswer(text())),
            504 if starts("upstream request timeout") => return Some(TransportError::Timeout),
            503 if starts("upstream connect error") || starts("no healthy upstream") => {
                return Some(TransportError::Unreachable(text()))
            }
            _ => {}
        }
        if let Some(expected) = self
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if expected != self.body.len() {
                return Some(TransportError::Truncated {
                    got: self.body.len(),
                    expected,
                });
            }
        }
        let size = self.body.len();
        (u64::try_from(size).unwrap_or(u64::MAX) > limit)
            .then_some(TransportError::TooLarge { size, limit })
    }

    /// A broken call as the shell reports it: status 0 and the host's
    /// reason after [`RESET_PREFIX`].
    pub fn reset(reason: &str) -> HttpResponse {
        HttpResponse {
            status: 0,
            headers: Vec::new(),
            body: format!("{RESET_PREFIX}{reason}").into_bytes(),
        }
    }

    /// For a log line about a body that is not what was expected: its
    /// content type and first 80 bytes.
    pub fn describe_body(&self) -> String {
        let kind = self.header("content-type").unwrap_or("no content type");
        format!("{kind}: {:?}", self.body_excerpt(80))
    }
}

/// How the shell marks a call the host reports as broken (see
/// [`HttpResponse::reset`]).
pub const RESET_PREFIX: &str = "reset: ";

/// Decodes `%XX` escapes (and, when `plus_is_space`, `+` as a space, as
/// in form bodies); malformed escapes are kept as they
/// are. Lenient on purpose: it reads what others sent (Azure's signed
/// query, a test server's form bodies); SigV4 has its own strict decoder,
/// which must refuse malformed escapes.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|&b| char::from(b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_credentials() {
        let r = HttpRequest {
            cluster: "c".into(),
            method: "GET".into(),
            path: "/p?sv=1&sig=s3cr3t".into(),
            authority: "a".into(),
            headers: vec![
                (
                    "Authorization".into(),
                    "AWS4-HMAC-SHA256 Signature=deadbeef".into(),
                ),
                ("x-amz-security-token".into(), "tok3n".into()),
                ("x-amz-date".into(), "20260101T000000Z".into()),
            ],
            body: Some(b"secret-ish body".to_vec()),
            timeout: Duration::from_secs(1),
        };
        let d = format!("{r:?}");
        assert!(
            !d.contains("deadbeef")
                && !d.contains("tok3n")
                && !d.contains("secret-ish")
                && !d.contains("s3cr3t"),
            "{d}"
        );
        assert!(
            d.contains("20260101T000000Z")
                && d.contains("body_len: Some(15)")
                && d.contains("/p?***"),
            "{d}"
        );
    }

    #[test]
    fn header_lookup_ignores_case() {
        let r = HttpResponse {
            status: 200,
            headers: vec![("ETag".into(), "\"a\"".into())],
            body: b"x\n  y".to_vec(),
        };
        assert_eq!(r.header("etag"), Some("\"a\""));
        assert_eq!(r.header("date"), None);
        assert_eq!(r.body_excerpt(100), "x y");
        assert_eq!(r.body_excerpt(1), "x");
        assert_eq!(percent_decode("a%2Fb+c%zz%2", false), "a/b+c%zz%2");
        assert_eq!(percent_decode("a+b%41", true), "a bA");
    }
}
