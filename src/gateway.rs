//! The gateway configuration the control plane serves, and route matching.
//!
//! A config is parsed and validated once per revision ([`GatewayConfig::parse`])
//! and then matched against many requests ([`GatewayConfig::route`]); the
//! request path never parses JSON.

use serde::Deserialize;
use std::fmt;

/// A validated gateway config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub revision: String,
    pub routes: Vec<Route>,
}

/// One route: a request matches when one of `paths` is a prefix of its path
/// and, when given, its host is one of `hosts` and its method one of
/// `methods`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub upstream: String,
}

/// Why a gateway config was refused. Names the offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayConfigError {
    /// Not JSON, or not of the config's shape (serde's message names the
    /// field, and may quote a value: see [`GatewayConfigError::redacted`]).
    Parse {
        message: String,
        line: usize,
        column: usize,
    },
    /// A field has a value we cannot route with.
    Invalid { field: String, reason: &'static str },
}

impl fmt::Display for GatewayConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConfigError::Parse { message, .. } => {
                write!(f, "gateway config does not parse: {message}")
            }
            GatewayConfigError::Invalid { field, reason } => {
                write!(f, "gateway config field `{field}` {reason}")
            }
        }
    }
}

impl std::error::Error for GatewayConfigError {}

impl GatewayConfigError {
    /// The message without anything taken from the config's text: serde
    /// quotes the values it cannot use, which must not reach a log when
    /// the config was encrypted. Field paths and reasons hold no values.
    pub fn redacted(&self) -> String {
        match self {
            GatewayConfigError::Parse { line, column, .. } => format!(
                "gateway config does not parse at line {line} column {column} (details withheld: the config was encrypted)"
            ),
            GatewayConfigError::Invalid { .. } => self.to_string(),
        }
    }
}

/// The request attributes a route is chosen by.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// `:authority` / Host, possibly with a port.
    pub host: &'a str,
    /// `:path`, possibly with a query string.
    pub path: &'a str,
}

impl GatewayConfig {
    /// Parses and validates the JSON the control plane sent.
    pub fn parse(bytes: &[u8]) -> Result<Self, GatewayConfigError> {
        let mut config: GatewayConfig =
            serde_json::from_slice(bytes).map_err(|e| GatewayConfigError::Parse {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            })?;
        config.validate()?;
        // Normalise once so matching is cheap.
        for route in &mut config.routes {
            for h in &mut route.hosts {
                *h = h.to_ascii_lowercase();
            }
            for m in &mut route.methods {
                *m = m.to_ascii_uppercase();
            }
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), GatewayConfigError> {
        let invalid = |field: String, reason| Err(GatewayConfigError::Invalid { field, reason });
        if self.revision.trim().is_empty() {
            return invalid("revision".into(), "must not be empty");
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.name.trim().is_empty() {
                return invalid(format!("routes[{i}].name"), "must not be empty");
            }
            if r.upstream.trim().is_empty() {
                return invalid(format!("routes[{i}].upstream"), "must not be empty");
            }
            if r.paths.is_empty() {
                return invalid(format!("routes[{i}].paths"), "must list at least one path");
            }
            for (j, p) in r.paths.iter().enumerate() {
                if !p.starts_with('/') {
                    return invalid(format!("routes[{i}].paths[{j}]"), "must start with '/'");
                }
            }
            for (j, h) in r.hosts.iter().enumerate() {
                if h.is_empty() {
                    return invalid(format!("routes[{i}].hosts[{j}]"), "must not be empty");
                }
            }
            for (j, m) in r.methods.iter().enumerate() {
                if m.is_empty() {
                    return invalid(format!("routes[{i}].methods[{j}]"), "must not be empty");
                }
            }
        }
        Ok(())
    }

    /// The route for a request: among routes whose host and method match,
    /// the one with the longest matching path prefix (first listed wins a tie).
    pub fn route(&self, req: RequestInfo<'_>) -> Option<&Route> {
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let host = strip_port(req.host);
        let mut best: Option<(&Route, usize)> = None;
        for route in &self.routes {
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == req.method) {
                continue;
            }
            if !route.hosts.is_empty() && !route.hosts.iter().any(|h| host_matches(h, host)) {
                continue;
            }
            let Some(len) = route
                .paths
                .iter()
                .filter(|p| path.starts_with(p.as_str()))
                .map(|p| p.len())
                .max()
            else {
                continue;
            };
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((route, len));
            }
        }
        best.map(|(r, _)| r)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Exact match (case-insensitive), or a leading `*.` wildcard matching any
/// subdomain: `*.example.com` matches `a.example.com`, not `example.com`.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len().checked_sub(suffix.len() + 1).is_some_and(|cut| {
            host.as_bytes().get(cut) == Some(&b'.')
                && host
                    .get(cut + 1..)
                    .is_some_and(|h| h.eq_ignore_ascii_case(suffix))
        }),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(method: &'a str, host: &'a str, path: &'a str) -> RequestInfo<'a> {
        RequestInfo { method, host, path }
    }

    const CONFIG: &str = r#"{"revision":"r1","routes":[
        {"name":"root","paths":["/"],"upstream":"default"},
        {"name":"echo","paths":["/echo"],"upstream":"echo_service"},
        {"name":"echo-deep","paths":["/echo/deep","/other"],"upstream":"deep"},
        {"name":"posts","paths":["/echo"],"methods":["post"],"hosts":["API.example.com","*.wild.io"],"upstream":"writer"}
    ]}"#;

    #[test]
    fn longest_prefix_wins() {
        let c = GatewayConfig::parse(CONFIG.as_bytes()).unwrap();
        let up = |r: RequestInfo| c.route(r).map(|r| r.upstream.as_str());
        assert_eq!(up(req("GET", "x", "/echo")), Some("echo_service"));
        assert_eq!(up(req("GET", "x", "/echo/deep/er?q=1")), Some("deep"));
        assert_eq!(up(req("GET", "x", "/other")), Some("deep"));
        assert_eq!(up(req("GET", "x", "/nothing")), Some("default"));
    }

    #[test]
    fn hosts_and_methods_restrict() {
        let c = GatewayConfig::parse(CONFIG.as_bytes()).unwrap();
        let up = |r: RequestInfo| c.route(r).map(|r| r.upstream.as_str());
        // Same path length: the first listed matching route wins.
        assert_eq!(
            up(req("POST", "api.example.com:443", "/echo")),
            Some("echo_service")
        );
        let c2 = GatewayConfig::parse(
            br#"{"revision":"r","routes":[
                {"name":"posts","paths":["/echo"],"methods":["post"],"hosts":["API.example.com","*.wild.io"],"upstream":"writer"}]}"#,
        )
        .unwrap();
        let up2 = |r: RequestInfo| c2.route(r).map(|r| r.upstream.as_str());
        assert_eq!(
            up2(req("POST", "api.example.com:443", "/echo")),
            Some("writer")
        );
        assert_eq!(up2(req("POST", "a.b.wild.io", "/echo")), Some("writer"));
        assert_eq!(up2(req("POST", "wild.io", "/echo")), None);
        assert_eq!(up2(req("GET", "api.example.com", "/echo")), None);
        assert_eq!(up2(req("POST", "other.com", "/echo")), None);
    }

    #[test]
    fn no_route_is_none() {
        let c = GatewayConfig::parse(
            br#"{"revision":"r","routes":[{"name":"a","paths":["/a"],"upstream":"u"}]}"#,
        )
        .unwrap();
        assert!(c.route(req("GET", "h", "/b")).is_none());
        assert!(c.route(req("GET", "h", "")).is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| GatewayConfig::parse(s.as_bytes()).unwrap_err().to_string();
        assert!(e("nope").contains("does not parse"));
        assert!(e(r#"{"revision":"","routes":[]}"#).contains("`revision`"));
        assert!(
            e(r#"{"revision":"r","routes":[{"name":"a","paths":["x"],"upstream":"u"}]}"#)
                .contains("`routes[0].paths[0]`")
        );
        assert!(
            e(r#"{"revision":"r","routes":[{"name":"a","paths":[],"upstream":"u"}]}"#)
                .contains("`routes[0].paths`")
        );
        assert!(
            e(r#"{"revision":"r","routes":[{"name":"a","paths":["/"],"upstream":""}]}"#)
                .contains("`routes[0].upstream`")
        );
        assert!(e(r#"{"revision":"r","routes":[],"extra":1}"#).contains("extra"));
        assert!(e(r#"{"routes":[]}"#).contains("revision"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
