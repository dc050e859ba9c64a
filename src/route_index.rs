//! The route index: picks the route
//! [`GatewayConfig::route_position_linear`](crate::gateway::GatewayConfig::route_position_linear)
//! picks, at a cost that depends on the request and not on how many
//! routes the config has.
//!
//! Three levels, each answering in time bounded by the request:
//! 1. **Host buckets.** Routes without `hosts` go to one "any host" tree;
//!    exact hosts to a hash map of trees; `*.suffix` hosts to a tree per
//!    suffix, found by walking the request host backwards through a radix
//!    tree of reversed suffixes (so a host with many labels costs its
//!    length, not one hash per label). A request searches at most its
//!    exact host's tree, the trees of the wildcards it matches, and the
//!    any-host tree.
//! 2. **Path tree.** Each bucket is a [`Radix`] over route path bytes;
//!    one walk along the request path meets every route path that is a
//!    prefix of it.
//! 3. **Slots.** Where a route path ends, one [`Slot`] per
//!    [`PathMatch`] kind holds, per method, the first listed route with
//!    that path: since a tie goes to the first listed, no later route
//!    with the same path, kind and method can ever win, and need not be
//!    kept.
//!
//! The winner is the longest match over all visited slots, ties to the
//! smallest route position, which is the linear rule: a route's match
//! length is its longest matching path, and the route whose longest
//! match is longest wins.

use crate::gateway::{request_path, strip_port, PathMatch, RequestInfo, Route};
use crate::radix::Radix;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Built once per config by [`RouteIndex::build`].
#[derive(Clone, Default)]
pub(crate) struct RouteIndex {
    /// Routes without `hosts`.
    any_host: PathTree,
    /// Exact (lower-cased) hosts.
    exact_hosts: HashMap<Box<str>, PathTree>,
    /// `*.suffix` patterns: the suffix's bytes reversed → an id in
    /// `wildcard_trees`.
    wildcard_suffixes: Radix<Option<usize>>,
    wildcard_trees: Vec<PathTree>,
    /// Every method some route names → a small id the slots key on.
    method_ids: HashMap<Box<str>, u32>,
}

type PathTree = Radix<Slots>;

/// What ends at one route path in one host bucket, by kind.
#[derive(Clone, Default)]
struct Slots {
    /// Prefix matches, and segment matches of paths ending in `/`.
    prefix: Slot,
    segment: Slot,
    exact: Slot,
}

/// The first listed route for each method, and for any method.
#[derive(Clone, Default)]
struct Slot {
    /// The first listed route without `methods`.
    any_method: Option<usize>,
    /// `(method id, first listed route naming it)`, sorted by id; only
    /// routes listed before `any_method` (the others cannot win).
    by_method: Vec<(u32, usize)>,
}

impl Slot {
    fn add(&mut self, route: usize, methods: &[u32]) {
        if methods.is_empty() {
            self.any_method = Some(self.any_method.map_or(route, |r| r.min(route)));
            return;
        }
        for &m in methods {
            match self.by_method.binary_search_by_key(&m, |&(id, _)| id) {
                Ok(pos) => {
                    if let Some(entry) = self.by_method.get_mut(pos) {
                        entry.1 = entry.1.min(route);
                    }
                }
                Err(pos) => self.by_method.insert(pos, (m, route)),
            }
        }
    }

    /// Drops method entries an any-method route listed earlier beats.
    fn finish(&mut self) {
        if let Some(any) = self.any_method {
            self.by_method.retain(|&(_, r)| r < any);
        }
        self.by_method.shrink_to_fit();
    }

    /// The first listed route here that takes `method` (`None`: a method
    /// no route names).
    fn best(&self, method: Option<u32>) -> Option<usize> {
        let named = method.and_then(|m| {
            self.by_method
                .binary_search_by_key(&m, |&(id, _)| id)
                .ok()
                .and_then(|pos| self.by_method.get(pos))
                .map(|&(_, r)| r)
        });
        match (named, self.any_method) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Slots {
    fn slot_mut(&mut self, kind: PathMatch, path: &str) -> &mut Slot {
        match kind {
            PathMatch::Prefix => &mut self.prefix,
            // `/a/` as a segment: whatever follows it follows a `/`.
            PathMatch::Segment if path.ends_with('/') => &mut self.prefix,
            PathMatch::Segment => &mut self.segment,
            PathMatch::Exact => &mut self.exact,
        }
    }

    fn finish(&mut self) {
        self.prefix.finish();
        self.segment.finish();
        self.exact.finish();
    }
}

/// The best match so far: longest, then first listed.
#[derive(Default)]
struct Best(Option<(usize, usize)>);

impl Best {
    fn offer(&mut self, len: usize, route: Option<usize>) {
        let Some(route) = route else { return };
        let better = match self.0 {
            None => true,
            Some((l, r)) => len > l || (len == l && route < r),
        };
        if better {
            self.0 = Some((len, route));
        }
    }
}

impl RouteIndex {
    /// Indexes `routes` as [`crate::gateway::GatewayConfig::parse`]
    /// normalised them (hosts lower-case, methods upper-case).
    pub(crate) fn build(routes: &[Route]) -> Self {
        let mut index = RouteIndex::default();
        for (i, route) in routes.iter().enumerate() {
            let mut methods: Vec<u32> = route
                .methods
                .iter()
                .map(|m| {
                    let next = u32::try_from(index.method_ids.len()).unwrap_or(u32::MAX);
                    *index.method_ids.entry(m.as_str().into()).or_insert(next)
                })
                .collect();
            methods.sort_unstable();
            methods.dedup();
            if route.hosts.is_empty() {
                add_route(&mut index.any_host, i, route, &methods);
            }
            for host in &route.hosts {
                let tree = match host.strip_prefix("*.") {
                    Some(suffix) => {
                        let reversed: Vec<u8> = suffix.bytes().rev().collect();
                        let slot = index.wildcard_suffixes.entry(&reversed);
                        let id = *slot.get_or_insert(index.wildcard_trees.len());
                        if id == index.wildcard_trees.len() {
                            index.wildcard_trees.push(PathTree::default());
                        }
                        index.wildcard_trees.get_mut(id)
                    }
                    None => Some(index.exact_hosts.entry(host.as_str().into()).or_default()),
                };
                if let Some(tree) = tree {
                    add_route(tree, i, route, &methods);
                }
            }
        }
        let trees = std::iter::once(&mut index.any_host)
            .chain(index.exact_hosts.values_mut())
            .chain(index.wildcard_trees.iter_mut());
        for tree in trees {
            tree.values_mut().for_each(Slots::finish);
        }
        index
    }

    /// The position of the route for `req`, as
    /// [`crate::gateway::GatewayConfig::route_position_linear`] finds it.
    pub(crate) fn find(&self, req: RequestInfo<'_>) -> Option<usize> {
        let path = request_path(req.path).as_bytes();
        // Config hosts are lower-case; most request hosts already are.
        let host = strip_port(req.host);
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let method = self.method_ids.get(req.method).copied();
        let mut best = Best::default();
        let mut search = |tree: &PathTree| {
            tree.walk(path, |len, slots: &Slots| {
                best.offer(len, slots.prefix.best(method));
                match path.get(len) {
                    None => {
                        best.offer(len, slots.exact.best(method));
                        best.offer(len, slots.segment.best(method));
                    }
                    Some(b'/') => best.offer(len, slots.segment.best(method)),
                    Some(_) => {}
                }
            })
        };
        if let Some(tree) = self.exact_hosts.get(host.as_ref()) {
            search(tree);
        }
        if !self.wildcard_suffixes.is_empty() {
            // `*.suffix` matches a host that ends in `.suffix`: backwards,
            // the suffix followed by a dot.
            let reversed: Vec<u8> = host.bytes().rev().collect();
            self.wildcard_suffixes.walk(&reversed, |len, &id| {
                if reversed.get(len) == Some(&b'.') {
                    if let Some(tree) = id.and_then(|id| self.wildcard_trees.get(id)) {
                        search(tree);
                    }
                }
            });
        }
        search(&self.any_host);
        best.0.map(|(_, route)| route)
    }
}

fn add_route(tree: &mut PathTree, i: usize, route: &Route, methods: &[u32]) {
    for path in &route.paths {
        tree.entry(path.as_bytes())
            .slot_mut(route.path_match, path)
            .add(i, methods);
    }
}

/// Sizes only: the routes are in the config beside it.
impl fmt::Debug for RouteIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = std::iter::once(&self.any_host)
            .chain(self.exact_hosts.values())
            .chain(&self.wildcard_trees)
            .map(Radix::node_count)
            .sum::<usize>();
        f.debug_struct("RouteIndex")
            .field("exact_hosts", &self.exact_hosts.len())
            .field("wildcard_suffixes", &self.wildcard_trees.len())
            .field("methods", &self.method_ids.len())
            .field("path_nodes", &nodes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! One test per rule of a match. Each asks both the index and the
    //! linear reference, and checks they agree.
    use crate::gateway::{GatewayConfig, RequestInfo};

    fn config(routes: &str) -> GatewayConfig {
        GatewayConfig::parse(format!(r#"{{"revision":"r","routes":[{routes}]}}"#).as_bytes())
            .unwrap()
    }

    /// The chosen route's name, after checking index == reference.
    fn pick<'a>(c: &'a GatewayConfig, method: &str, host: &str, path: &str) -> Option<&'a str> {
        let req = RequestInfo { method, host, path };
        let indexed = c.route_position(req);
        assert_eq!(
            indexed,
            c.route_position_linear(req),
            "{method} {host} {path}"
        );
        indexed.map(|i| c.routes[i].name.as_str())
    }

    #[test]
    fn longest_matching_path_wins() {
        let c = config(
            r#"{"name":"root","paths":["/"],"upstream":"u"},
               {"name":"a","paths":["/a"],"upstream":"u"},
               {"name":"abc","paths":["/a/b/c"],"upstream":"u"},
               {"name":"ab","paths":["/a/b"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a/b/c/d"), Some("abc"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/"), Some("ab"));
        assert_eq!(pick(&c, "GET", "h", "/a/x"), Some("a"));
        assert_eq!(pick(&c, "GET", "h", "/b"), Some("root"));
        assert_eq!(pick(&c, "GET", "h", "b"), None);
        assert_eq!(pick(&c, "GET", "h", ""), None);
    }

    #[test]
    fn a_route_counts_by_its_longest_matching_path() {
        let c = config(
            r#"{"name":"one","paths":["/x","/a/b/c"],"upstream":"u"},
               {"name":"two","paths":["/a/b"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a/b/c"), Some("one"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/d"), Some("two"));
        assert_eq!(pick(&c, "GET", "h", "/x/b/c"), Some("one"));
    }

    #[test]
    fn the_first_listed_wins_a_tie() {
        let c = config(
            r#"{"name":"first","paths":["/a"],"methods":["GET"],"upstream":"u"},
               {"name":"second","paths":["/a"],"upstream":"u"},
               {"name":"third","paths":["/b","/a"],"upstream":"u"},
               {"name":"exact","paths":["/c"],"path_match":"exact","upstream":"u"},
               {"name":"prefix","paths":["/c"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a"), Some("first"));
        assert_eq!(pick(&c, "POST", "h", "/a"), Some("second"));
        assert_eq!(pick(&c, "POST", "h", "/b"), Some("third"));
        // Same length, different kinds: still the first listed.
        assert_eq!(pick(&c, "GET", "h", "/c"), Some("exact"));
        assert_eq!(pick(&c, "GET", "h", "/cd"), Some("prefix"));
        // Listed the other way round, an any-method route first beats a
        // later route naming the method.
        let c = config(
            r#"{"name":"any","paths":["/a"],"upstream":"u"},
               {"name":"get","paths":["/a"],"methods":["GET"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a"), Some("any"));
    }

    #[test]
    fn query_and_fragment_are_not_part_of_the_path() {
        let c = config(
            r#"{"name":"short","paths":["/a"],"upstream":"u"},
               {"name":"q","paths":["/a?x"],"upstream":"u"},
               {"name":"exact","paths":["/a/b"],"path_match":"exact","upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a?x=1"), Some("short"));
        assert_eq!(pick(&c, "GET", "h", "/a/b?x=1"), Some("exact"));
        assert_eq!(pick(&c, "GET", "h", "/a/b#frag?x"), Some("exact"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/?x=1"), Some("short"));
        assert_eq!(pick(&c, "GET", "h", "?/a"), None);
    }

    #[test]
    fn hosts_ignore_case_and_port() {
        let c = config(
            r#"{"name":"api","paths":["/"],"hosts":["API.Example.com"],"upstream":"u"},
               {"name":"v6","paths":["/"],"hosts":["[::1]"],"upstream":"u"},
               {"name":"ported","paths":["/"],"hosts":["p.example.com:8080"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "api.example.com", "/"), Some("api"));
        assert_eq!(pick(&c, "GET", "ApI.ExAmPlE.CoM:8443", "/"), Some("api"));
        assert_eq!(pick(&c, "GET", "[::1]:80", "/"), Some("v6"));
        assert_eq!(pick(&c, "GET", "api.example.com.", "/"), None);
        assert_eq!(pick(&c, "GET", "", "/"), None);
        // The request's port is stripped before matching, so a config
        // host with a port matches nothing, not even its own spelling.
        assert_eq!(pick(&c, "GET", "p.example.com:8080", "/"), None);
        assert_eq!(pick(&c, "GET", "p.example.com", "/"), None);
    }

    #[test]
    fn a_wildcard_matches_subdomains_not_the_apex() {
        let c = config(
            r#"{"name":"wild","paths":["/"],"hosts":["*.Example.org"],"upstream":"u"},
               {"name":"deeper","paths":["/"],"hosts":["*.b.example.org"],"upstream":"u"},
               {"name":"dot","paths":["/"],"hosts":["*."],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "a.example.org", "/"), Some("wild"));
        assert_eq!(pick(&c, "GET", "x.A.B.EXAMPLE.ORG:1", "/"), Some("wild"));
        assert_eq!(pick(&c, "GET", "b.example.org", "/"), Some("wild"));
        assert_eq!(pick(&c, "GET", "example.org", "/"), None);
        assert_eq!(pick(&c, "GET", "aexample.org", "/"), None);
        // Byte-wise, as today: an empty label still ends in `.example.org`.
        assert_eq!(pick(&c, "GET", ".example.org", "/"), Some("wild"));
        // `*.` is a suffix of nothing: it matches hosts ending in a dot.
        assert_eq!(pick(&c, "GET", "example.org.", "/"), Some("dot"));
        // `*` alone is no wildcard: the host `*`.
        let c = config(r#"{"name":"star","paths":["/"],"hosts":["*"],"upstream":"u"}"#);
        assert_eq!(pick(&c, "GET", "a.com", "/"), None);
        assert_eq!(pick(&c, "GET", "*", "/"), Some("star"));
    }

    #[test]
    fn a_host_restricted_route_competes_by_length() {
        let c = config(
            r#"{"name":"any","paths":["/api"],"upstream":"u"},
               {"name":"host","paths":["/api/v1"],"hosts":["a.com","*.a.com"],"upstream":"u"},
               {"name":"short","paths":["/"],"hosts":["a.com"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "a.com", "/api/v1/x"), Some("host"));
        assert_eq!(pick(&c, "GET", "x.a.com", "/api/v1/x"), Some("host"));
        assert_eq!(pick(&c, "GET", "b.com", "/api/v1/x"), Some("any"));
        assert_eq!(pick(&c, "GET", "a.com", "/api"), Some("any"));
        assert_eq!(pick(&c, "GET", "a.com", "/other"), Some("short"));
        assert_eq!(pick(&c, "GET", "b.com", "/other"), None);
    }

    #[test]
    fn methods_are_upper_cased_in_the_config_only() {
        let c = config(
            r#"{"name":"post","paths":["/a/b"],"methods":["post","Put"],"upstream":"u"},
               {"name":"any","paths":["/a"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "POST", "h", "/a/b"), Some("post"));
        assert_eq!(pick(&c, "PUT", "h", "/a/b"), Some("post"));
        assert_eq!(pick(&c, "GET", "h", "/a/b"), Some("any"));
        // Methods are case-sensitive (RFC 9110): a request's is compared
        // as sent.
        assert_eq!(pick(&c, "post", "h", "/a/b"), Some("any"));
        assert_eq!(pick(&c, "", "h", "/a/b"), Some("any"));
    }

    #[test]
    fn prefix_matches_inside_a_segment() {
        let c = config(r#"{"name":"echo","paths":["/echo"],"path_match":"prefix","upstream":"u"}"#);
        assert_eq!(pick(&c, "GET", "h", "/echo"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo/a"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echofoo"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/ech"), None);
    }

    #[test]
    fn segment_matches_whole_segments() {
        let c = config(
            r#"{"name":"echo","paths":["/echo"],"path_match":"segment","upstream":"u"},
               {"name":"slash","paths":["/dir/"],"path_match":"segment","upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/echo"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo/"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo/a?q"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo?q"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echofoo"), None);
        // Ending in `/`, a segment path matches as a prefix does.
        assert_eq!(pick(&c, "GET", "h", "/dir/x"), Some("slash"));
        assert_eq!(pick(&c, "GET", "h", "/dir/"), Some("slash"));
        assert_eq!(pick(&c, "GET", "h", "/dir"), None);
    }

    #[test]
    fn exact_matches_the_path_only() {
        let c = config(r#"{"name":"echo","paths":["/echo"],"path_match":"exact","upstream":"u"}"#);
        assert_eq!(pick(&c, "GET", "h", "/echo"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo?x#y"), Some("echo"));
        assert_eq!(pick(&c, "GET", "h", "/echo/"), None);
        assert_eq!(pick(&c, "GET", "h", "/echofoo"), None);
    }

    #[test]
    fn every_kind_competes_by_length() {
        let c = config(
            r#"{"name":"prefix","paths":["/a"],"upstream":"u"},
               {"name":"exact","paths":["/a/b"],"path_match":"exact","upstream":"u"},
               {"name":"segment","paths":["/a/b/c"],"path_match":"segment","upstream":"u"},
               {"name":"long-prefix","paths":["/a/b/"],"upstream":"u"}"#,
        );
        assert_eq!(pick(&c, "GET", "h", "/a/b"), Some("exact"));
        assert_eq!(pick(&c, "GET", "h", "/a/bc"), Some("prefix"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/x"), Some("long-prefix"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/c/d"), Some("segment"));
        assert_eq!(pick(&c, "GET", "h", "/a/b/cd"), Some("long-prefix"));
    }

    /// The examples of the README's route section.
    #[test]
    fn readme_examples() {
        let c = config(
            r#"{"name":"root","paths":["/"],"upstream":"default"},
               {"name":"echo","paths":["/echo"],"upstream":"echo_service"},
               {"name":"users","paths":["/api/users"],"path_match":"segment",
                "hosts":["api.example.com","*.example.org"],"methods":["GET","POST"],"upstream":"users"},
               {"name":"health","paths":["/healthz"],"path_match":"exact","upstream":"health"}"#,
        );
        for (method, host, path, route) in [
            ("GET", "x.com", "/echo/1", "echo"),
            ("GET", "x.com", "/echofoo", "echo"),
            ("GET", "api.example.com", "/api/users/7?full=1", "users"),
            ("DELETE", "api.example.com", "/api/users/7", "root"),
            ("GET", "example.org", "/api/users", "root"),
            ("GET", "a.example.org", "/api/usersx", "root"),
            ("GET", "a.example.org", "/api/users", "users"),
            ("GET", "x.com", "/healthz?probe=1", "health"),
            ("GET", "x.com", "/healthz/deep", "root"),
        ] {
            assert_eq!(
                pick(&c, method, host, path),
                Some(route),
                "{method} {host} {path}"
            );
        }
    }

    #[test]
    fn an_empty_config_routes_nothing() {
        let c = GatewayConfig::parse(br#"{"revision":"r","routes":[]}"#).unwrap();
        assert_eq!(pick(&c, "GET", "h", "/"), None);
    }
}
