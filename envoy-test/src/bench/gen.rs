//! Gateway configs and request paths shaped like a real API gateway's, so
//! that route matching is measured on realistic work: many teams' services
//! under a few API prefixes, some routes restricted to partner hosts or to
//! some methods, a few broad team-level fallbacks that longer routes win
//! over, and requests that hit random routes and routes near the end of
//! the list (the worst case of a linear scan).
//!
//! Everything is deterministic (a fixed-seed generator): every run and
//! every module is given the same configs and the same requests.

use envoy_test::control_plane::{gateway_config, Route};

/// The one Envoy cluster every route points at (nginx, see `tools`).
pub const UPSTREAM: &str = "bench_upstream";

const TEAMS: [&str; 12] = [
    "orders",
    "payments",
    "catalog",
    "users",
    "search",
    "inventory",
    "shipping",
    "billing",
    "reviews",
    "cart",
    "identity",
    "media",
];

/// xorshift64*: small, deterministic, good enough to spread requests.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

fn team(i: usize) -> &'static str {
    TEAMS[i % TEAMS.len()]
}

fn api_version(i: usize) -> usize {
    1 + (i / TEAMS.len()) % 3
}

/// Routes restricted to partner hosts: every 10th.
fn host_restricted(i: usize) -> bool {
    i % 10 == 7
}

/// Routes restricted to write methods: every 9th (requests are GETs).
fn write_only(i: usize) -> bool {
    i % 9 == 4
}

/// Route `i` of a config: two paths (the public API and an internal one),
/// a legacy third on every other route, a partner host list on every
/// 10th, a method list on some, and on every 100th a team-level prefix
/// that the service routes are longer than.
pub fn route(i: usize) -> Route {
    let t = team(i);
    let v = api_version(i);
    let mut paths = vec![
        format!("/api/v{v}/{t}/svc{i:05}"),
        format!("/internal/{t}/svc{i:05}/"),
    ];
    if i.is_multiple_of(2) {
        paths.push(format!("/legacy/{t}/svc{i:05}-v{v}"));
    }
    if i.is_multiple_of(100) {
        paths.push(format!("/api/v{v}/{t}/"));
    }
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut r = Route::new(&format!("{t}-svc{i:05}"), &refs, UPSTREAM);
    if host_restricted(i) {
        let a = format!("partner{:03}.example.com", i % 997);
        let b = format!("*.partner{:03}.example.net", i % 997);
        r = r.hosts(&[&a, &b]);
    }
    if write_only(i) {
        r = r.methods(&["POST", "PUT", "PATCH", "DELETE"]);
    } else if i % 4 == 1 {
        r = r.methods(&["GET", "HEAD", "POST"]);
    }
    r
}

/// The first `n` routes.
pub fn routes(n: usize) -> Vec<Route> {
    (0..n).map(route).collect()
}

/// The gateway config JSON of `n` routes (as the CP serves it).
pub fn config(revision: &str, n: usize) -> String {
    gateway_config(revision, &routes(n))
}

/// A config rendered once whose revision can be changed cheaply: a CP
/// that publishes a new 5 MB revision every second must not spend that
/// second (on the load generator's core) rendering JSON.
pub struct Template {
    head: String,
    tail: String,
}

impl Template {
    const MARK: &'static str = "@@bench-revision@@";

    /// The config of `n` routes with a revision to fill in.
    pub fn new(n: usize) -> Template {
        let full = config(Template::MARK, n);
        let (head, tail) = full.split_once(Template::MARK).unwrap_or((&full, ""));
        Template {
            head: head.to_string(),
            tail: tail.to_string(),
        }
    }

    /// The config with `revision`.
    pub fn render(&self, revision: &str) -> String {
        let mut s = String::with_capacity(self.head.len() + revision.len() + self.tail.len());
        s.push_str(&self.head);
        s.push_str(revision);
        s.push_str(&self.tail);
        s
    }
}

/// Whether a GET without a partner host can reach route `i`.
fn reachable(i: usize) -> bool {
    !host_restricted(i) && !write_only(i)
}

/// A reachable route at or before `i` (route 0 is always reachable).
fn reachable_at_or_before(mut i: usize) -> usize {
    while i > 0 && !reachable(i) {
        i -= 1;
    }
    i
}

/// `count` request paths for a config of `n` routes: half of them hit a
/// random route, half a route among the last 2 % of the list; each is a
/// realistic path under the route's prefix (items, details with a query,
/// a search, the bare prefix), public or internal. Shuffled.
pub fn request_paths(n: usize, count: usize) -> Vec<String> {
    let mut rng = Rng::new(0x5eed_0000 + n as u64);
    let tail = (n / 50).max(1);
    (0..count)
        .map(|k| {
            let pick = if k.is_multiple_of(2) {
                rng.below(n)
            } else {
                n - 1 - rng.below(tail)
            };
            let i = reachable_at_or_before(pick);
            let t = team(i);
            let v = api_version(i);
            let id = 1000 + rng.below(9_000_000);
            match rng.below(5) {
                0 => format!("/api/v{v}/{t}/svc{i:05}/items/{id}"),
                1 => format!(
                    "/api/v{v}/{t}/svc{i:05}/items/{id}/details?expand=owner&fields=id,name"
                ),
                2 => format!(
                    "/api/v{v}/{t}/svc{i:05}/search?q=blue+shoes&page={}",
                    1 + id % 20
                ),
                3 => format!("/internal/{t}/svc{i:05}/health"),
                _ => format!("/api/v{v}/{t}/svc{i:05}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_path_hits_its_own_reachable_route() {
        for n in [10, 1000] {
            let routes = routes(n);
            for p in request_paths(n, 200) {
                let path = p.split('?').next().unwrap_or("");
                let best = routes
                    .iter()
                    .enumerate()
                    .filter(|(i, r)| reachable(*i) && r.paths.iter().any(|x| path.starts_with(x)))
                    .max_by_key(|(_, r)| {
                        r.paths
                            .iter()
                            .filter(|x| path.starts_with(*x))
                            .map(|x| x.len())
                            .max()
                    });
                let (i, _) = best.unwrap_or_else(|| panic!("{p} matches no route"));
                assert!(path.contains(&format!("svc{i:05}")), "{p} -> route {i}");
            }
        }
    }

    #[test]
    fn template_renders_the_config() {
        let t = Template::new(30);
        assert_eq!(t.render("r7"), config("r7", 30));
    }
}
