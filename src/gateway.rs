//! The gateway configuration the control plane serves, and route matching.
//!
//! A config is parsed and validated once per revision ([`GatewayConfig::parse`])
//! and then matched against many requests ([`GatewayConfig::route`]); the
//! request path never parses JSON, and never looks at every route either:
//! `parse` builds a route index whose lookup cost depends on the request
//! (its path and host), not on the number of routes, compiled into the
//! [`RouteTable`] that workers load from shared data as it is.
//!
//! The rules of a match are written once, plainly, in
//! [`GatewayConfig::route_position_linear`] (and the helpers below it): the
//! index must choose exactly what that linear scan chooses, which the
//! property test `tests/route_index.rs` and the fuzz target check.

use crate::json::{self, Reader};
use crate::route_table::RouteTable;
use std::fmt;
use std::sync::Arc;

/// A validated gateway config.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub revision: String,
    /// In the order the CP listed them: the first listed wins a tie.
    /// Read-only after [`GatewayConfig::parse`]: the table was built from
    /// these, and [`GatewayConfig::route`] answers from the table.
    pub routes: Vec<Route>,
    /// Immutable once built, so clones share it (and the config stays
    /// small to move around).
    table: Arc<RouteTable>,
}

/// The index is a function of the routes: equal routes, equal configs.
impl PartialEq for GatewayConfig {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision && self.routes == other.routes
    }
}

impl Eq for GatewayConfig {}

/// One route: a request matches when one of `paths` matches its path (as
/// `path_match` says) and, when given, its host is one of `hosts` and its
/// method one of `methods`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub paths: Vec<String>,
    /// How each of `paths` is compared with the request's path.
    pub path_match: PathMatch,
    /// Lower-cased; `*.suffix` matches any subdomain of `suffix`.
    pub hosts: Vec<String>,
    /// Upper-cased; compared with the request's method as it is.
    pub methods: Vec<String>,
    pub upstream: String,
}

/// How a route's path is compared with the request's path (without its
/// query and fragment). Whatever the kind, a match counts by the length of
/// the route's path, so the longest match wins across kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The path starts with it: `/echo` matches `/echo`, `/echo/a` and
    /// `/echofoo` (as Kong's paths and Envoy's `prefix`).
    #[default]
    Prefix,
    /// The path is it, or continues with `/` after it: `/echo` matches
    /// `/echo` and `/echo/a`, not `/echofoo`. A path ending in `/` has
    /// nothing to add, so it matches as `Prefix` does.
    Segment,
    /// The path is exactly it.
    Exact,
}

impl PathMatch {
    /// The names the config uses.
    pub const NAMES: [(&'static str, PathMatch); 3] = [
        ("prefix", PathMatch::Prefix),
        ("segment", PathMatch::Segment),
        ("exact", PathMatch::Exact),
    ];

    /// `"prefix"`, `"segment"` or `"exact"` (lower case only).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, kind)| kind)
    }

    /// Whether `pattern` (a route path) matches `path` (the request path
    /// without query or fragment).
    pub fn matches(self, pattern: &str, path: &str) -> bool {
        match self {
            PathMatch::Prefix => path.starts_with(pattern),
            PathMatch::Exact => path == pattern,
            PathMatch::Segment => {
                path.starts_with(pattern)
                    && (pattern.ends_with('/')
                        || matches!(path.as_bytes().get(pattern.len()), None | Some(b'/')))
            }
        }
    }
}

/// The JSON as the CP sends it, before validation. Read as serde's
/// derive read it: unknown and duplicate fields are refused, `hosts`,
/// `methods` and `path_match` may be left out.
struct RawConfig {
    revision: String,
    routes: Vec<RawRoute>,
}

/// A route as sent: `path_match` is a string here so that a bad value is
/// refused by validation, naming `routes[i].path_match`, as every other
/// bad value is.
struct RawRoute {
    name: String,
    paths: Vec<String>,
    /// `null` counts as absent.
    path_match: Option<String>,
    hosts: Vec<String>,
    methods: Vec<String>,
    upstream: String,
}

impl RawConfig {
    const FIELDS: &'static [&'static str] = &["revision", "routes"];

    fn read(bytes: &[u8]) -> Result<RawConfig, json::Error> {
        let mut r = Reader::new(bytes);
        let (mut revision, mut routes) = (None, None);
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "revision" => r.once(&mut revision, "revision", Reader::owned_string)?,
                "routes" => r.once(&mut routes, "routes", RawRoute::read_all)?,
                other => return Err(r.unknown_field(other, Self::FIELDS)),
            }
        }
        let config = RawConfig {
            revision: r.required(revision, "revision")?,
            routes: r.required(routes, "routes")?,
        };
        r.end()?;
        Ok(config)
    }
}

impl RawRoute {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "paths",
        "path_match",
        "hosts",
        "methods",
        "upstream",
    ];

    fn read_all(r: &mut Reader<'_>) -> Result<Vec<RawRoute>, json::Error> {
        let mut routes = Vec::new();
        r.array()?;
        while r.next_item()? {
            routes.push(RawRoute::read(r)?);
        }
        Ok(routes)
    }

    fn read(r: &mut Reader<'_>) -> Result<RawRoute, json::Error> {
        let (mut name, mut paths, mut path_match, mut hosts, mut methods, mut upstream) =
            (None, None, None, None, None, None);
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "name" => r.once(&mut name, "name", Reader::owned_string)?,
                "paths" => r.once(&mut paths, "paths", strings)?,
                "path_match" => r.once(&mut path_match, "path_match", |r| {
                    r.opt(Reader::owned_string)
                })?,
                "hosts" => r.once(&mut hosts, "hosts", strings)?,
                "methods" => r.once(&mut methods, "methods", strings)?,
                "upstream" => r.once(&mut upstream, "upstream", Reader::owned_string)?,
                other => return Err(r.unknown_field(other, Self::FIELDS)),
            }
        }
        Ok(RawRoute {
            name: r.required(name, "name")?,
            paths: r.required(paths, "paths")?,
            path_match: path_match.flatten(),
            hosts: hosts.unwrap_or_default(),
            methods: methods.unwrap_or_default(),
            upstream: r.required(upstream, "upstream")?,
        })
    }
}

/// An array of strings.
fn strings(r: &mut Reader<'_>) -> Result<Vec<String>, json::Error> {
    let mut items = Vec::new();
    r.array()?;
    while r.next_item()? {
        items.push(r.owned_string()?);
    }
    Ok(items)
}

/// Why a gateway config was refused. Names the offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayConfigError {
    /// Not JSON, or not of the config's shape (the message may name a
    /// field the config has: see [`GatewayConfigError::redacted`]).
    Parse(json::Error),
    /// A field has a value we cannot route with.
    Invalid { field: String, reason: &'static str },
}

impl fmt::Display for GatewayConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConfigError::Parse(e) => write!(f, "gateway config does not parse: {e}"),
            GatewayConfigError::Invalid { field, reason } => {
                write!(f, "gateway config field `{field}` {reason}")
            }
        }
    }
}

impl std::error::Error for GatewayConfigError {}

impl GatewayConfigError {
    /// The message without anything taken from the config's text, for a
    /// config that was encrypted: a parse error may name an unknown field
    /// the config has (values are never quoted). Field paths and reasons
    /// of validation hold no text of the config.
    pub fn redacted(&self) -> String {
        match self {
            GatewayConfigError::Parse(e) => format!(
                "gateway config does not parse at line {} column {} (details withheld: the config was encrypted)",
                e.line(),
                e.column()
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

/// The request attributes a config routes by, besides the path (see
/// [`GatewayConfig::reads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub host: bool,
    pub method: bool,
}

impl GatewayConfig {
    /// Parses and validates the JSON the control plane sent, and builds
    /// the route index.
    pub fn parse(bytes: &[u8]) -> Result<Self, GatewayConfigError> {
        let raw = RawConfig::read(bytes).map_err(GatewayConfigError::Parse)?;
        let revision = raw.revision.clone();
        let routes = validate(raw)?;
        let table = RouteTable::from_parts(&crate::route_index::build(&routes)).map_err(|_| {
            GatewayConfigError::Invalid {
                field: "routes".into(),
                reason: "are too many to index",
            }
        })?;
        let table = Arc::new(table);
        Ok(GatewayConfig {
            revision,
            routes,
            table,
        })
    }

    /// The compiled table, as workers route with it
    /// ([`RouteTable::encoded`] is what the driver publishes).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The route for a request: among routes whose host and method match,
    /// the one with the longest matching path (first listed wins a tie).
    /// Answered by the index; [`GatewayConfig::route_position_linear`] is
    /// the same rule as a scan.
    pub fn route(&self, req: RequestInfo<'_>) -> Option<&Route> {
        self.route_position(req).and_then(|i| self.routes.get(i))
    }

    /// Which request attributes routing looks at: a config whose routes
    /// name no host (or no method) chooses the same route whatever the
    /// request's host (or method) is, so it need not be read.
    /// Worked out once, by [`GatewayConfig::parse`].
    pub fn reads(&self) -> Reads {
        self.table.reads()
    }

    /// The position in [`GatewayConfig::routes`] of the route for a
    /// request, from the table.
    pub fn route_position(&self, req: RequestInfo<'_>) -> Option<usize> {
        self.table.find(req)
    }

    /// The reference matcher: the position of the route for a request by
    /// looking at every route in order. Its cost grows with the config;
    /// it exists to define the rule the index must follow (tests and the
    /// fuzz target compare the two).
    pub fn route_position_linear(&self, req: RequestInfo<'_>) -> Option<usize> {
        let path = request_path(req.path);
        let host = strip_port(req.host);
        let mut best: Option<(usize, usize)> = None;
        for (i, route) in self.routes.iter().enumerate() {
            if !route.methods.is_empty() && !route.methods.iter().any(|m| m == req.method) {
                continue;
            }
            if !route.hosts.is_empty() && !route.hosts.iter().any(|h| host_matches(h, host)) {
                continue;
            }
            let Some(len) = route
                .paths
                .iter()
                .filter(|p| route.path_match.matches(p, path))
                .map(|p| p.len())
                .max()
            else {
                continue;
            };
            // Strictly longer only: the first listed keeps a tie.
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((i, len));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Checks every field and returns the routes normalised for matching
/// (hosts lower-cased, methods upper-cased, `path_match` resolved).
/// Takes `raw` by value: its strings move into the routes (a config of
/// 20,000 routes would otherwise allocate every one of them twice, on
/// every worker, at every change).
fn validate(raw: RawConfig) -> Result<Vec<Route>, GatewayConfigError> {
    let invalid = |field: String, reason| Err(GatewayConfigError::Invalid { field, reason });
    if raw.revision.trim().is_empty() {
        return invalid("revision".into(), "must not be empty");
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
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
        let path_match = match r.path_match.as_deref() {
            None => PathMatch::default(),
            Some(name) => match PathMatch::from_name(name) {
                Some(kind) => kind,
                None => {
                    return invalid(
                        format!("routes[{i}].path_match"),
                        "must be \"prefix\", \"segment\" or \"exact\"",
                    )
                }
            },
        };
        // Normalised once so matching is cheap.
        let (mut hosts, mut methods) = (r.hosts, r.methods);
        hosts.iter_mut().for_each(|h| h.make_ascii_lowercase());
        methods.iter_mut().for_each(|m| m.make_ascii_uppercase());
        routes.push(Route {
            name: r.name,
            paths: r.paths,
            path_match,
            hosts,
            methods,
            upstream: r.upstream,
        });
    }
    Ok(routes)
}

/// The part of `:path` routes match on: without the query (`?`) or the
/// fragment (`#`).
pub(crate) fn request_path(path: &str) -> &str {
    path.find(['?', '#']).map_or(path, |cut| &path[..cut])
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`. Anything
/// after the last `:` goes, so a config host with a port never matches.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Exact match (case-insensitive), or a leading `*.` wildcard matching any
/// subdomain: `*.example.com` matches `a.example.com`, not `example.com`.
/// (Byte-wise: it matches any host ending in `.example.com`, so also
/// `a.b.example.com` and `.example.com`.)
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
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

    /// The config's reader before `RawConfig::read`: serde's derive.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SerdeConfig {
        revision: String,
        routes: Vec<SerdeRoute>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SerdeRoute {
        name: String,
        paths: Vec<String>,
        #[serde(default)]
        path_match: Option<String>,
        #[serde(default)]
        hosts: Vec<String>,
        #[serde(default)]
        methods: Vec<String>,
        upstream: String,
    }

    /// What serde's derive accepted, read alike; what it refused, refused
    /// with its message (but never a value).
    #[test]
    fn configs_are_read_as_serdes_derive_read_them() {
        let route = r#""name":"a","paths":["/a"],"upstream":"u""#;
        let config = |routes: &str| format!(r#"{{"revision":"r","routes":[{routes}]}}"#);
        for (text, error) in [
            (config(&format!("{{{route}}}")), None),
            (
                config(&format!(
                    r#"{{{route},"path_match":null,"hosts":[],"methods":["GET"]}},{{{route}}}"#
                )),
                None,
            ),
            (format!(" {} ", config("")), None),
            (config(&format!(r#"{{{route},"hosts":null}}"#)), Some("invalid type: null, expected a sequence")),
            (config(&format!(r#"{{{route},"hosts":[1]}}"#)), Some("invalid type: integer")),
            (config(&format!(r#"{{{route},"name":"b"}}"#)), Some("duplicate field `name`")),
            (
                config(&format!(r#"{{{route},"weight":1}}"#)),
                Some("unknown field `weight`, expected one of `name`, `paths`, `path_match`, `hosts`, `methods`, `upstream`"),
            ),
            (config(r#"{"name":"a","paths":["/a"]}"#), Some("missing field `upstream`")),
            (config("1"), Some("invalid type: integer")),
            (r#"{"revision":"r","routes":{}}"#.into(), Some("invalid type: map")),
            (r#"{"revision":"r","routes":[],"routes":[]}"#.into(), Some("duplicate field `routes`")),
            (r#"{"revision":null,"routes":[]}"#.into(), Some("invalid type: null, expected a string")),
            (r#"{"revision":"r","routes":[]} []"#.into(), Some("trailing characters")),
            ("{}".into(), Some("missing field `revision`")),
        ] {
            let ours = RawConfig::read(text.as_bytes());
            let theirs = serde_json::from_str::<SerdeConfig>(&text);
            match (&ours, &theirs, error) {
                (Ok(o), Ok(t), None) => {
                    assert_eq!(o.revision, t.revision);
                    assert_eq!(o.routes.len(), t.routes.len());
                    for (o, t) in o.routes.iter().zip(&t.routes) {
                        assert_eq!(
                            (&o.name, &o.paths, &o.path_match, &o.hosts, &o.methods, &o.upstream),
                            (&t.name, &t.paths, &t.path_match, &t.hosts, &t.methods, &t.upstream)
                        );
                    }
                }
                (Err(o), Err(t), Some(message)) => {
                    assert!(o.to_string().starts_with(message), "{text}: {o}");
                    assert!(t.to_string().starts_with(message), "{text}: {t}");
                }
                _ => panic!("{text}: ours {:?}, serde's {:?}", ours.err(), theirs.err()),
            }
        }
        // The one difference, on purpose: serde's derive also took a
        // struct as the array of its fields in order, which no CP sends.
        let as_array = config(r#"["a",["/a"],null,[],[],"u"]"#);
        assert!(serde_json::from_str::<SerdeConfig>(&as_array).is_ok());
        assert!(RawConfig::read(as_array.as_bytes()).is_err_and(|e| e
            .to_string()
            .starts_with("invalid type: sequence, expected a map")));
    }

    #[test]
    fn path_match_is_checked() {
        let route = |kind: &str| {
            format!(
                r#"{{"revision":"r","routes":[{{"name":"a","paths":["/"],"upstream":"u"}},
                {{"name":"b","paths":["/b"],"path_match":{kind},"upstream":"u"}}]}}"#
            )
        };
        let kind = |json: &str| {
            GatewayConfig::parse(route(json).as_bytes()).map(|c| c.routes[1].path_match)
        };
        assert_eq!(kind(r#""prefix""#), Ok(PathMatch::Prefix));
        assert_eq!(kind(r#""segment""#), Ok(PathMatch::Segment));
        assert_eq!(kind(r#""exact""#), Ok(PathMatch::Exact));
        assert_eq!(kind("null"), Ok(PathMatch::Prefix));
        let c = GatewayConfig::parse(CONFIG.as_bytes()).unwrap();
        assert!(c.routes.iter().all(|r| r.path_match == PathMatch::Prefix));
        for bad in [r#""Exact""#, r#""regex""#, r#""""#] {
            let e = GatewayConfig::parse(route(bad).as_bytes()).unwrap_err();
            assert_eq!(
                e,
                GatewayConfigError::Invalid {
                    field: "routes[1].path_match".into(),
                    reason: "must be \"prefix\", \"segment\" or \"exact\""
                },
                "{bad}"
            );
            assert!(!e.redacted().contains("regex"));
        }
        // Not a string: a parse error, as for any field of the wrong type.
        assert!(matches!(
            GatewayConfig::parse(route("1").as_bytes()),
            Err(GatewayConfigError::Parse(_))
        ));
    }

    #[test]
    fn configs_compare_by_revision_and_routes() {
        let a = GatewayConfig::parse(CONFIG.as_bytes()).unwrap();
        assert_eq!(a, a.clone());
        let b = GatewayConfig::parse(
            br#"{"revision":"r1","routes":[{"name":"root","paths":["/"],"upstream":"default"}]}"#,
        )
        .unwrap();
        assert_ne!(a, b);
        assert!(format!("{a:?}").contains("RouteTable"));
    }

    #[test]
    fn path_match_kinds() {
        use PathMatch::*;
        assert!(Prefix.matches("/echo", "/echofoo"));
        assert!(!Segment.matches("/echo", "/echofoo"));
        assert!(Segment.matches("/echo", "/echo/foo"));
        assert!(Segment.matches("/echo", "/echo"));
        assert!(Segment.matches("/echo/", "/echo/foo"));
        assert!(!Segment.matches("/echo/", "/echo"));
        assert!(Exact.matches("/echo", "/echo"));
        assert!(!Exact.matches("/echo", "/echo/"));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
