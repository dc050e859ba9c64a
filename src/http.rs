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
pub const SENSITIVE_HEADERS: &[&str] = &["authorization", "x-amz-security-token"];

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
