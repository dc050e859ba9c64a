//! The route index chooses what the linear reference chooses.
//!
//! Random configs (up to a few hundred routes over a small vocabulary of
//! path segments, so prefixes overlap; exact, wildcard and ported hosts in
//! mixed case; methods; every `path_match` kind; copies of earlier routes
//! so that ties happen) and random requests built from the configs' own
//! paths plus suffixes and queries. Compared by position in `routes`.
//!
//! `lookup_cost` (ignored) prints ns per lookup, index against linear:
//! `cargo test -p fallback-config --test route_index -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fallback_config::gateway::{GatewayConfig, RequestInfo};
use fallback_config::route_table::RouteTable;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

/// Few and overlapping: `echo` and `echofoo`, `a` and `ab`, an empty
/// segment for `//`.
const SEGMENTS: &[&str] = &["a", "ab", "b", "api", "v1", "echo", "echofoo", "x", ""];
const DOMAINS: &[&str] = &[
    "example.org",
    "a.example.org",
    "b.a.example.org",
    "x.com",
    "[::1]",
];
const METHODS: &[&str] = &["GET", "post", "Put", "DELETE", "get"];
const KINDS: &[Option<&str>] = &[None, Some("prefix"), Some("segment"), Some("exact")];
/// What follows a config path in a request.
const SUFFIXES: &[&str] = &[
    "", "", "/", "x", "/x", "foo", "?q=1", "#f", "/a?b", "?", "/echo/x", "b/c",
];
const SUBDOMAINS: &[&str] = &["", "", "a.", "x.y.", ".", "b.a."];

#[derive(Clone, Debug)]
struct RouteSpec {
    paths: Vec<String>,
    hosts: Vec<String>,
    methods: Vec<&'static str>,
    kind: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct RequestSpec {
    /// A config path to start from, or `random` when `None`.
    from_config: Option<Index>,
    random: String,
    suffix: &'static str,
    subdomain: &'static str,
    domain: &'static str,
    host_case: u64,
    port: bool,
    method: &'static str,
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(select(SEGMENTS), 0..4), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/{}", segs.join("/"));
        if slash && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

/// Upper-cases the letters whose bit is set in `mask`.
fn mixed_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn host_pattern() -> impl Strategy<Value = String> {
    (select(DOMAINS), 0..8u8, any::<u64>()).prop_map(|(domain, shape, mask)| {
        let host = match shape {
            0..=2 => domain.to_string(),
            3..=5 => format!("*.{domain}"),
            // A port in the config: it never matches (the request's is stripped).
            6 => format!("{domain}:8080"),
            _ => "*.".to_string(),
        };
        mixed_case(&host, mask)
    })
}

fn route() -> impl Strategy<Value = RouteSpec> {
    let hosts = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(host_pattern(), 1..3),
    ];
    let methods = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(select(METHODS), 1..3),
    ];
    (
        prop::collection::vec(path(), 1..4),
        hosts,
        methods,
        select(KINDS),
    )
        .prop_map(|(paths, hosts, methods, kind)| RouteSpec {
            paths,
            hosts,
            methods,
            kind,
        })
}

/// Routes, then copies of some of them put elsewhere (ties).
fn routes() -> impl Strategy<Value = Vec<RouteSpec>> {
    (
        prop::collection::vec(route(), 1..300),
        prop::collection::vec((any::<Index>(), any::<Index>()), 0..30),
    )
        .prop_map(|(mut routes, copies)| {
            for (from, to) in copies {
                let copy = from.get(&routes).clone();
                let at = to.index(routes.len() + 1);
                routes.insert(at, copy);
            }
            routes
        })
}

fn request() -> impl Strategy<Value = RequestSpec> {
    (
        prop_oneof![4 => any::<Index>().prop_map(Some), 1 => Just(None)],
        path(),
        select(SUFFIXES),
        select(SUBDOMAINS),
        select(DOMAINS),
        any::<u64>(),
        any::<bool>(),
        select(&["GET", "POST", "PUT", "DELETE", "get", "PATCH"][..]),
    )
        .prop_map(
            |(from_config, random, suffix, subdomain, domain, host_case, port, method)| {
                RequestSpec {
                    from_config,
                    random,
                    suffix,
                    subdomain,
                    domain,
                    host_case,
                    port,
                    method,
                }
            },
        )
}

fn config_json(routes: &[RouteSpec]) -> Vec<u8> {
    let routes: Vec<_> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut route = json!({
                "name": format!("r{i}"),
                "paths": r.paths,
                "upstream": format!("u{i}"),
            });
            if !r.hosts.is_empty() {
                route["hosts"] = json!(r.hosts);
            }
            if !r.methods.is_empty() {
                route["methods"] = json!(r.methods);
            }
            if let Some(kind) = r.kind {
                route["path_match"] = json!(kind);
            }
            route
        })
        .collect();
    serde_json::to_vec(&json!({ "revision": "r", "routes": routes })).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_chooses_what_the_linear_scan_chooses(
        specs in routes(),
        requests in prop::collection::vec(request(), 1..64),
    ) {
        let config = GatewayConfig::parse(&config_json(&specs)).unwrap();
        let paths: Vec<&str> = config.routes.iter().flat_map(|r| r.paths.iter().map(String::as_str)).collect();
        for r in &requests {
            let base = match &r.from_config {
                Some(i) => i.get(&paths),
                None => r.random.as_str(),
            };
            let path = format!("{base}{}", r.suffix);
            let mut host = mixed_case(&format!("{}{}", r.subdomain, r.domain), r.host_case);
            if r.port {
                host.push_str(":443");
            }
            let req = RequestInfo { method: r.method, host: &host, path: &path };
            prop_assert_eq!(
                config.route_position(req),
                config.route_position_linear(req),
                "{} {} {}", r.method, host, path
            );
        }
    }
}

/// A config of `n` routes shaped like a real one: distinct first
/// segments (`/svc<i>/...`), a tenth under one shared prefix
/// (`/shared/<i>`), every seventh restricted to a host or a wildcard,
/// every fifth to methods.
fn realistic(n: usize) -> GatewayConfig {
    let routes: Vec<_> = (0..n)
        .map(|i| {
            let path = if i % 10 == 0 {
                format!("/shared/{i}")
            } else {
                format!("/svc{i}/v1")
            };
            let mut route = json!({
                "name": format!("r{i}"),
                "paths": [path],
                "upstream": format!("u{i}"),
            });
            if i % 7 == 0 {
                route["hosts"] = if i % 2 == 0 {
                    json!([format!("api{}.example.com", i % 50)])
                } else {
                    json!([format!("*.tenant{}.example.org", i % 20)])
                };
            }
            if i % 5 == 0 {
                route["methods"] = json!(["GET", "POST"]);
            }
            if i % 11 == 0 {
                route["path_match"] = json!("segment");
            }
            route
        })
        .collect();
    let mut routes = routes;
    routes.push(json!({"name": "root", "paths": ["/"], "upstream": "default"}));
    GatewayConfig::parse(&serde_json::to_vec(&json!({"revision": "r", "routes": routes})).unwrap())
        .unwrap()
}

/// Requests over the whole config: hits at every depth, wildcard hosts,
/// misses that fall to `/`.
/// `(host, path, method)`.
fn realistic_requests(n: usize) -> Vec<(String, String, &'static str)> {
    (0..256)
        .map(|k| {
            let i = (k * 7919) % n;
            let path = match k % 4 {
                0 => format!("/svc{i}/v1/items/{k}?page=2"),
                1 => format!("/shared/{i}/deep/er"),
                2 => format!("/svc{i}/v2/other"),
                _ => format!("/nothing/{k}"),
            };
            let host = match k % 3 {
                0 => format!("api{}.example.com:443", i % 50),
                1 => format!("x.Tenant{}.example.org", i % 20),
                _ => "www.example.net".to_string(),
            };
            let method = if k % 2 == 0 { "GET" } else { "DELETE" };
            (host, path, method)
        })
        .collect()
}

fn ns_per_call(
    config: &GatewayConfig,
    requests: &[(String, String, &str)],
    f: fn(&GatewayConfig, RequestInfo<'_>) -> Option<usize>,
) -> f64 {
    let reqs: Vec<RequestInfo<'_>> = requests
        .iter()
        .map(|(host, path, method)| RequestInfo { method, host, path })
        .collect();
    // About 0.3 s per measurement, whatever the cost of one call.
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed().as_millis() < 300 {
        for &r in &reqs {
            black_box(f(black_box(config), black_box(r)));
        }
        rounds += 1;
    }
    start.elapsed().as_nanos() as f64 / (rounds as f64 * reqs.len() as f64)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn lookup_cost() {
    println!(
        "routes    parse+index ms   worker load ms   table KB   index ns/call   linear ns/call"
    );
    for n in [10, 1_000, 20_000] {
        let start = Instant::now();
        let config = realistic(n);
        let build = start.elapsed().as_secs_f64() * 1e3;
        // What a worker does per change: decode (and check) the table.
        let bytes = config.table().encoded().to_vec();
        let kb = bytes.len() / 1024;
        let start = Instant::now();
        let table = black_box(RouteTable::load(black_box(bytes), 0).unwrap());
        let load = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(&table, config.table());
        let requests = realistic_requests(n);
        for (host, path, method) in &requests {
            let req = RequestInfo { method, host, path };
            assert_eq!(
                config.route_position(req),
                config.route_position_linear(req)
            );
        }
        let index = ns_per_call(&config, &requests, GatewayConfig::route_position);
        let linear = ns_per_call(&config, &requests, GatewayConfig::route_position_linear);
        println!("{n:>6} {build:>16.1} {load:>16.2} {kb:>10} {index:>15.0} {linear:>16.0}");
    }
}
