//! Outbound HTTP as data.
//!
//! The core describes the calls it wants ([`HttpRequest`]) and receives what
//! came back ([`HttpResponse`]); the shell maps them to
//! `dispatch_http_call` and its callback. A native client could drive the
//! same core with the same types.

use std::time::Duration;

/// One outbound call: which upstream cluster, what to send, how long to wait.
#[derive(Clone, Debug, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
