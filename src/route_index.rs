//! The route index: built once per config from the validated routes, and
//! compiled into the [`RouteTable`] that routes requests. It picks the
//! route
//! [`GatewayConfig::route_position_linear`](crate::gateway::GatewayConfig::route_position_linear)
//! picks, at a cost that depends on the request and not on how many
//! routes the config has.
//!
//! Three levels, each answering in time bounded by the request:
//! 1. **Host buckets.** Routes without `hosts` go to one "any host" tree;
//!    exact hosts to a tree each, found through a radix tree of hosts;
//!    `*.suffix` hosts to a tree per suffix, found by walking the request
//!    host backwards through a radix tree of reversed suffixes (so a host
//!    with many labels costs its length, not one lookup per label). A
//!    request searches at most its exact host's tree, the trees of the
//!    wildcards it matches, and the any-host tree.
//! 2. **Path tree.** Each bucket is a [`Radix`] over route path bytes;
//!    one walk along the request path meets every route path that is a
//!    prefix of it.
//! 3. **Slots.** Where a route path ends, one slot per
//!    [`PathMatch`] kind holds, per method, the first listed route with
//!    that path: since a tie goes to the first listed, no later route
//!    with the same path, kind and method can ever win, and need not be
//!    kept.
//!
//! The winner is the longest match over all visited slots, ties to the
//! smallest route position, which is the linear rule: a route's match
//! length is its longest matching path, and the route whose longest
//! match is longest wins.
//!
//! The trees are built from sorted keys straight into the table's flat
//! arrays ([`FlatTrees::build`]): each route path becomes an entry tagged
//! with its host bucket, the entries are sorted by bucket and path, and
//! each run of equal paths becomes one set of slots.

use crate::gateway::{PathMatch, Reads, Route};
use crate::radix::{to_u32, FlatTrees, NO_VALUE};
use crate::route_table::{Kind, Roots, Slot, Slots, TableParts};
use crate::sort::{sort_small, sorted};

/// The host bucket a route path goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Bucket<'a> {
    /// Routes without `hosts`.
    AnyHost,
    /// An exact (lower-cased) host.
    Exact(&'a str),
    /// A `*.suffix` pattern's suffix.
    Wildcard(&'a str),
}

/// One route path in one bucket.
struct Entry<'a> {
    bucket: Bucket<'a>,
    path: &'a str,
    kind: Kind,
    route: u32,
}

fn kind(path_match: PathMatch, path: &str) -> Kind {
    match path_match {
        PathMatch::Prefix => Kind::Prefix,
        // `/a/` as a segment: whatever follows it follows a `/`.
        PathMatch::Segment if path.ends_with('/') => Kind::Prefix,
        PathMatch::Segment => Kind::Segment,
        PathMatch::Exact => Kind::Exact,
    }
}

/// Indexes `routes` as [`crate::gateway::GatewayConfig::parse`]
/// normalised them (hosts lower-case, methods upper-case) and compiles
/// the table's parts.
pub(crate) fn build(routes: &[Route]) -> TableParts {
    // Method ids: positions in the sorted list of every method named.
    let methods: Vec<&str> = routes
        .iter()
        .flat_map(|r| r.methods.iter().map(String::as_str))
        .collect();
    let mut methods = sorted(methods, &|a, b| a.cmp(b));
    methods.dedup();
    // Each route's method ids, sorted: `method_ids[start..end]` by
    // `RouteMethods`, one array for all routes (no allocation per route).
    let mut method_ids = Vec::new();
    let mut ranges = Vec::with_capacity(routes.len());
    for r in routes {
        let start = method_ids.len();
        method_ids.extend(
            r.methods
                .iter()
                .filter_map(|m| methods.binary_search(&m.as_str()).ok())
                .map(to_u32),
        );
        if let Some(ids) = method_ids.get_mut(start..) {
            sort_small(ids);
        }
        dedup_tail(&mut method_ids, start, |&a, &b| a == b);
        ranges.push((start, method_ids.len()));
    }
    let route_methods = RouteMethods {
        ids: &method_ids,
        ranges: &ranges,
    };

    let mut entries = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let any = route.hosts.is_empty().then_some(Bucket::AnyHost);
        let hosts = route.hosts.iter().map(|h| match h.strip_prefix("*.") {
            Some(suffix) => Bucket::Wildcard(suffix),
            None => Bucket::Exact(h),
        });
        for bucket in any.into_iter().chain(hosts) {
            entries.extend(route.paths.iter().map(|path| Entry {
                bucket,
                path,
                kind: kind(route.path_match, path),
                route: to_u32(i),
            }));
        }
    }
    // The one sort here that grows with the config: the standard one
    // (its code costs the module a few KB; `sort::sorted` would cost a
    // config of 10 MB over 30 ms more in Envoy).
    entries.sort_unstable_by(|a, b| (a.bucket, a.path).cmp(&(b.bucket, b.path)));
    let mut upstreams = Vec::with_capacity(routes.len());
    let mut strings = String::new();
    for route in routes {
        upstreams.push((to_u32(strings.len()), to_u32(route.upstream.len())));
        strings.push_str(&route.upstream);
    }
    let mut table = TableParts {
        reads: Reads {
            host: routes.iter().any(|r| !r.hosts.is_empty()),
            method: routes.iter().any(|r| !r.methods.is_empty()),
        },
        upstreams,
        strings,
        ..TableParts::default()
    };

    // One path tree per bucket, in bucket order.
    let mut any_host = None;
    let mut exact = Vec::new();
    let mut wildcards = Vec::new();
    for run in entries.chunk_by(|a, b| a.bucket == b.bucket) {
        let Some(first) = run.first() else { continue };
        let root = path_tree(&mut table, run, &route_methods);
        match first.bucket {
            Bucket::AnyHost => any_host = Some(root),
            Bucket::Exact(host) => exact.push((host.as_bytes().to_vec(), root)),
            Bucket::Wildcard(suffix) => wildcards.push((suffix.bytes().rev().collect(), root)),
        }
    }
    let any_host = any_host.unwrap_or_else(|| table.trees.build(&[] as &[&[u8]], |_| NO_VALUE));
    let hosts = |trees: &mut FlatTrees, list: Vec<(Vec<u8>, u32)>| {
        let list = sorted(list, &|a, b| a.cmp(b));
        let keys: Vec<&[u8]> = list.iter().map(|(k, _)| k.as_slice()).collect();
        trees.build(&keys, |i| list.get(i).map_or(NO_VALUE, |&(_, root)| root))
    };
    let exact_hosts = hosts(&mut table.trees, exact);
    let wildcards = hosts(&mut table.trees, wildcards);
    let methods = table.trees.build(&methods, to_u32);
    table.roots = Roots {
        any_host,
        exact_hosts,
        wildcards,
        methods,
    };
    table
}

/// The path tree of one bucket's entries (sorted by path): one set of
/// slots per distinct path.
fn path_tree(table: &mut TableParts, run: &[Entry<'_>], route_methods: &RouteMethods<'_>) -> u32 {
    let paths: Vec<&[Entry<'_>]> = run.chunk_by(|a, b| a.path == b.path).collect();
    let keys: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.first())
        .map(|e| e.path)
        .collect();
    let first_slots = table.slots.len();
    for same_path in &paths {
        let slots: Slots = [Kind::Prefix, Kind::Segment, Kind::Exact]
            .map(|k| slot(&mut table.entries, same_path, k, route_methods));
        table.slots.push(slots);
    }
    table.trees.build(&keys, |i| to_u32(first_slots + i))
}

/// The slot of `kind` for the routes with one path: the first listed
/// route for any method, and per method the first listed route naming it
/// when it comes before that (a later one can never win).
fn slot(
    entries: &mut Vec<(u32, u32)>,
    same_path: &[Entry<'_>],
    kind: Kind,
    route_methods: &RouteMethods<'_>,
) -> Slot {
    let of_kind = || same_path.iter().filter(move |e| e.kind == kind);
    let any = of_kind()
        .filter(|e| route_methods.of(e.route).is_empty())
        .map(|e| e.route)
        .min()
        .unwrap_or(NO_VALUE);
    let start = entries.len();
    entries.extend(
        of_kind()
            .filter(|e| e.route < any)
            .flat_map(|e| route_methods.of(e.route).iter().map(move |&m| (m, e.route))),
    );
    if let Some(named) = entries.get_mut(start..) {
        sort_small(named);
    }
    // Sorted by (method, route): the first of each method is its earliest.
    dedup_tail(entries, start, |a, b| a.0 == b.0);
    Slot {
        any_method: any,
        entries_start: to_u32(start),
        entries_len: to_u32(entries.len() - start),
    }
}

/// Every route's method ids, in one array.
struct RouteMethods<'a> {
    ids: &'a [u32],
    /// Per route, its ids' range in `ids`.
    ranges: &'a [(usize, usize)],
}

impl RouteMethods<'_> {
    fn of(&self, route: u32) -> &[u32] {
        self.ranges
            .get(route as usize)
            .and_then(|&(start, end)| self.ids.get(start..end))
            .unwrap_or_default()
    }
}

/// Drops the elements of `items[start..]` that `same` says equal the one
/// kept before them (as `Vec::dedup_by` does, on the tail only).
fn dedup_tail<T: Copy>(items: &mut Vec<T>, start: usize, same: impl Fn(&T, &T) -> bool) {
    let mut kept = start;
    for read in start..items.len() {
        let (Some(&item), last) = (items.get(read), kept.checked_sub(1).filter(|&k| k >= start))
        else {
            continue;
        };
        let repeat = last
            .and_then(|k| items.get(k))
            .is_some_and(|prev| same(prev, &item));
        if !repeat {
            if let Some(slot) = items.get_mut(kept) {
                *slot = item;
            }
            kept += 1;
        }
    }
    items.truncate(kept);
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
