//! The compiled route table: the route index as a few flat arrays of
//! numbers and bytes, which the driver builds once per config and every
//! worker loads from shared data with one copy and a range check, no
//! JSON parse, no validation and no index build.
//!
//! Why: a config of 20,000 routes takes tens of milliseconds to parse,
//! validate and index, and a worker that did it on every change stalled
//! every request it held for that long. Loading this form costs a pass
//! over its arrays (about a millisecond for 20,000 routes), and a lookup
//! reads it in place.
//!
//! What is in it ([`crate::route_index`] builds it):
//! - radix trees ([`FlatTrees`]): the path tree of each host bucket, the
//!   exact hosts, the reversed `*.suffix` patterns and the methods;
//! - per route path end, three [`Slot`]s (prefix, segment, exact), each
//!   with the first listed route for any method and per method;
//! - per route, its upstream.
//!
//! [`RouteTable::find`] follows the rule of
//! [`crate::gateway::GatewayConfig::route_position_linear`]; the property
//! test `tests/route_index.rs` and the `gateway` fuzz target compare the
//! two, and [`RouteTable::decode`] of [`RouteTable::encode`] gives back an
//! equal table.
//!
//! The bytes are written by this process's own driver, but a worker still
//! checks every index in them before use ([`RouteTable::decode`]) and a
//! lookup reads with checked accesses: a record of another layout or a
//! truncated one is refused, never a panic.

use crate::gateway::{request_path, strip_port, Reads, RequestInfo};
use crate::radix::{FlatNode, FlatTreeError, FlatTrees, NO_VALUE};
use std::borrow::Cow;
use std::fmt;

/// The first bytes of an encoded table, and its layout's number: a
/// worker refuses a table of any other layout.
const MAGIC: &[u8; 4] = b"FCRT";
const FORMAT: u32 = 1;

/// The first listed route, for any method and per method, among those
/// whose path ends at one node of a path tree with one match kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The first listed route without `methods`, or [`NO_VALUE`].
    pub any_method: u32,
    /// Its `(method id, route)` pairs: `entries[start..start + len]`,
    /// sorted by method id, each route listed before `any_method`.
    pub entries_start: u32,
    pub entries_len: u32,
}

/// What ends at one route path in one host bucket, by [`Kind`].
pub(crate) type Slots = [Slot; 3];

/// A slot's match kind, its index in [`Slots`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Prefix matches, and segment matches of paths ending in `/`.
    Prefix = 0,
    Segment = 1,
    Exact = 2,
}

/// The roots of the four kinds of tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Roots {
    /// The path tree of routes without `hosts`.
    pub any_host: u32,
    /// Exact (lower-cased) hosts → the root of their path tree.
    pub exact_hosts: u32,
    /// `*.suffix` patterns, the suffix reversed → the root of their path
    /// tree.
    pub wildcards: u32,
    /// Every method some route names → its id in the slots.
    pub methods: u32,
}

/// A compiled, validated route table (see the module doc).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub(crate) reads: Reads,
    pub(crate) roots: Roots,
    pub(crate) trees: FlatTrees,
    /// Path tree values index these.
    pub(crate) slots: Vec<Slots>,
    /// `(method id, route)`.
    pub(crate) entries: Vec<(u32, u32)>,
    /// Per route, its upstream: `strings[start..start + len]`.
    pub(crate) upstreams: Vec<(u32, u32)>,
    pub(crate) strings: String,
}

/// Sizes only: the arrays are large and say nothing one by one.
impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.upstreams.len())
            .field("nodes", &self.trees.nodes.len())
            .field("slots", &self.slots.len())
            .field("reads", &self.reads)
            .finish()
    }
}

/// Why bytes are not a route table this build can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTableError {
    /// Not a table: the first bytes differ.
    Magic,
    /// A table of another layout (a record written by another version of
    /// the filter sharing the VM id).
    Format(u32),
    /// The bytes end before the table does, or go on after it.
    Length,
    /// An index points outside what it indexes.
    Range(&'static str),
    /// The upstream names are not UTF-8.
    Utf8,
}

impl fmt::Display for RouteTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTableError::Magic => f.write_str("not a compiled route table"),
            RouteTableError::Format(n) => {
                write!(
                    f,
                    "compiled route table of layout {n}, this build reads {FORMAT}"
                )
            }
            RouteTableError::Length => f.write_str("compiled route table of the wrong length"),
            RouteTableError::Range(what) => {
                write!(f, "compiled route table has an out-of-range {what}")
            }
            RouteTableError::Utf8 => f.write_str("compiled route table has non-UTF-8 upstreams"),
        }
    }
}

impl std::error::Error for RouteTableError {}

impl From<FlatTreeError> for RouteTableError {
    fn from(e: FlatTreeError) -> Self {
        RouteTableError::Range(match e {
            FlatTreeError::Edge(_) => "tree edge",
            FlatTreeError::Children(_) => "tree child",
        })
    }
}

/// The best match so far: longest, then first listed.
#[derive(Default)]
struct Best(Option<(usize, u32)>);

impl Best {
    fn offer(&mut self, len: usize, route: Option<u32>) {
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

impl RouteTable {
    /// Which request attributes routing looks at, besides the path.
    pub fn reads(&self) -> Reads {
        self.reads
    }

    /// The upstream of the route for `req`: among routes whose host and
    /// method match, the one with the longest matching path (first listed
    /// wins a tie).
    pub fn route_upstream(&self, req: RequestInfo<'_>) -> Option<&str> {
        self.find(req).and_then(|route| self.upstream(route))
    }

    /// The upstream of the route at `position`.
    pub fn upstream(&self, position: usize) -> Option<&str> {
        let &(start, len) = self.upstreams.get(position)?;
        let start = start as usize;
        self.strings.get(start..start.checked_add(len as usize)?)
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The position of the route for `req`, as
    /// [`crate::gateway::GatewayConfig::route_position_linear`] finds it.
    pub fn find(&self, req: RequestInfo<'_>) -> Option<usize> {
        let path = request_path(req.path).as_bytes();
        // Config hosts are lower-case; most request hosts already are.
        let host = strip_port(req.host);
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let method = self.trees.get(self.roots.methods, req.method.as_bytes());
        let mut best = Best::default();
        let mut search = |root: u32| {
            self.trees.walk(root, path, |len, slots| {
                let Some(slots) = self.slots.get(slots as usize) else {
                    return;
                };
                let mut offer =
                    |kind: Kind| best.offer(len, self.best(&slots[kind as usize], method));
                offer(Kind::Prefix);
                match path.get(len) {
                    None => {
                        offer(Kind::Exact);
                        offer(Kind::Segment);
                    }
                    Some(b'/') => offer(Kind::Segment),
                    Some(_) => {}
                }
            })
        };
        if let Some(root) = self.trees.get(self.roots.exact_hosts, host.as_bytes()) {
            search(root);
        }
        if self.has_wildcards() {
            // `*.suffix` matches a host that ends in `.suffix`: backwards,
            // the suffix followed by a dot.
            let reversed: Vec<u8> = host.bytes().rev().collect();
            self.trees
                .walk(self.roots.wildcards, &reversed, |len, root| {
                    if reversed.get(len) == Some(&b'.') {
                        search(root);
                    }
                });
        }
        search(self.roots.any_host);
        best.0.map(|(_, route)| route as usize)
    }

    fn has_wildcards(&self) -> bool {
        self.trees
            .nodes
            .get(self.roots.wildcards as usize)
            .is_some_and(|root| root.children > 0 || root.value != NO_VALUE)
    }

    /// The first listed route in `slot` that takes `method` (`None`: a
    /// method no route names).
    fn best(&self, slot: &Slot, method: Option<u32>) -> Option<u32> {
        let start = slot.entries_start as usize;
        let named = method.and_then(|m| {
            let entries = self
                .entries
                .get(start..start.checked_add(slot.entries_len as usize)?)?;
            let pos = entries.binary_search_by_key(&m, |&(id, _)| id).ok()?;
            entries.get(pos).map(|&(_, route)| route)
        });
        let any = (slot.any_method != NO_VALUE).then_some(slot.any_method);
        match (named, any) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The table as bytes, for the published record: a header, then each
    /// array as little-endian `u32`s, then the edge and string bytes.
    pub fn encode(&self) -> Vec<u8> {
        let words = 2
            + 6
            + 4
            + 5 * self.trees.nodes.len()
            + 9 * self.slots.len()
            + 2 * (self.entries.len() + self.upstreams.len());
        let mut out = Vec::with_capacity(4 * words + self.trees.edges.len() + self.strings.len());
        out.extend_from_slice(MAGIC);
        let mut put = |n: u32| out.extend_from_slice(&n.to_le_bytes());
        put(FORMAT);
        put(u32::from(self.reads.host) | (u32::from(self.reads.method) << 1));
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        put(len(self.trees.nodes.len()));
        put(len(self.slots.len()));
        put(len(self.entries.len()));
        put(len(self.upstreams.len()));
        put(len(self.trees.edges.len()));
        put(len(self.strings.len()));
        let r = self.roots;
        for root in [r.any_host, r.exact_hosts, r.wildcards, r.methods] {
            put(root);
        }
        for n in &self.trees.nodes {
            for w in [n.edge_start, n.edge_len, n.first_child, n.children, n.value] {
                put(w);
            }
        }
        for slots in &self.slots {
            for s in slots {
                for w in [s.any_method, s.entries_start, s.entries_len] {
                    put(w);
                }
            }
        }
        for &(a, b) in self.entries.iter().chain(&self.upstreams) {
            put(a);
            put(b);
        }
        out.extend_from_slice(&self.trees.edges);
        out.extend_from_slice(self.strings.as_bytes());
        out
    }

    /// Reads [`RouteTable::encode`]'s bytes back, checking every index a
    /// lookup follows.
    pub fn decode(bytes: &[u8]) -> Result<Self, RouteTableError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(RouteTableError::Magic);
        }
        let format = r.u32()?;
        if format != FORMAT {
            return Err(RouteTableError::Format(format));
        }
        let flags = r.u32()?;
        if flags & !3 != 0 {
            return Err(RouteTableError::Range("flag"));
        }
        let mut count = || r.u32().map(|n| n as usize);
        let (nodes, slots, entries, upstreams) = (count()?, count()?, count()?, count()?);
        let (edges, strings) = (count()?, count()?);
        let roots = Roots {
            any_host: r.u32()?,
            exact_hosts: r.u32()?,
            wildcards: r.u32()?,
            methods: r.u32()?,
        };
        // Before allocating anything by these counts: do they fit?
        let need = [
            (nodes, 20),
            (slots, 36),
            (entries, 8),
            (upstreams, 8),
            (edges, 1),
            (strings, 1),
        ]
        .iter()
        .try_fold(0usize, |sum, &(n, size)| {
            sum.checked_add(n.checked_mul(size)?)
        });
        if need != Some(r.0.len()) {
            return Err(RouteTableError::Length);
        }
        let table = RouteTable {
            reads: Reads {
                host: flags & 1 != 0,
                method: flags & 2 != 0,
            },
            roots,
            trees: FlatTrees {
                nodes: r.many(nodes, |r| {
                    Ok(FlatNode {
                        edge_start: r.u32()?,
                        edge_len: r.u32()?,
                        first_child: r.u32()?,
                        children: r.u32()?,
                        value: r.u32()?,
                    })
                })?,
                edges: Vec::new(),
            },
            slots: r.many(slots, |r| {
                let mut slot = || -> Result<Slot, RouteTableError> {
                    Ok(Slot {
                        any_method: r.u32()?,
                        entries_start: r.u32()?,
                        entries_len: r.u32()?,
                    })
                };
                Ok([slot()?, slot()?, slot()?])
            })?,
            entries: r.many(entries, |r| Ok((r.u32()?, r.u32()?)))?,
            upstreams: r.many(upstreams, |r| Ok((r.u32()?, r.u32()?)))?,
            strings: String::new(),
        };
        let table = RouteTable {
            trees: FlatTrees {
                edges: r.take(edges)?.to_vec(),
                ..table.trees
            },
            strings: String::from_utf8(r.take(strings)?.to_vec())
                .map_err(|_| RouteTableError::Utf8)?,
            ..table
        };
        table.check()?;
        Ok(table)
    }

    /// What [`RouteTable::decode`] checks beyond the layout: every index
    /// in range, so a lookup never finds a dangling one (it would still
    /// not panic: every access is checked; it would route wrongly).
    fn check(&self) -> Result<(), RouteTableError> {
        self.trees.check()?;
        let nodes = self.trees.nodes.len();
        let range = |what| Err(RouteTableError::Range(what));
        let r = self.roots;
        if [r.any_host, r.exact_hosts, r.wildcards, r.methods]
            .iter()
            .any(|&root| root as usize >= nodes)
        {
            return range("tree root");
        }
        let routes = self.upstreams.len();
        let route_ok = |route: u32| route == NO_VALUE || (route as usize) < routes;
        for slot in self.slots.iter().flatten() {
            let start = slot.entries_start as usize;
            let entries = start
                .checked_add(slot.entries_len as usize)
                .and_then(|end| self.entries.get(start..end));
            if entries.is_none() || !route_ok(slot.any_method) {
                return range("slot");
            }
        }
        if self
            .entries
            .iter()
            .any(|&(_, route)| route as usize >= routes)
        {
            return range("route in a slot");
        }
        if (0..routes).any(|i| self.upstream(i).is_none()) {
            return range("upstream");
        }
        Ok(())
    }
}

/// Reads the encoding front to back; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RouteTableError> {
        if self.0.len() < n {
            return Err(RouteTableError::Length);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, RouteTableError> {
        let bytes = self.take(4)?;
        let mut word = [0; 4];
        word.copy_from_slice(bytes);
        Ok(u32::from_le_bytes(word))
    }

    fn many<T>(
        &mut self,
        n: usize,
        mut one: impl FnMut(&mut Self) -> Result<T, RouteTableError>,
    ) -> Result<Vec<T>, RouteTableError> {
        (0..n).map(|_| one(self)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::GatewayConfig;

    fn table(routes: &str) -> RouteTable {
        let json = format!(r#"{{"revision":"r","routes":[{routes}]}}"#);
        GatewayConfig::parse(json.as_bytes())
            .unwrap()
            .table()
            .clone()
    }

    const ROUTES: &str = r#"{"name":"a","paths":["/a","/b/"],"hosts":["A.com","*.w.org"],"upstream":"ua"},
        {"name":"g","paths":["/a"],"methods":["GET"],"path_match":"exact","upstream":"ug"},
        {"name":"s","paths":["/s"],"path_match":"segment","upstream":"u\u00e9"}"#;

    #[test]
    fn decode_gives_back_what_encode_wrote() {
        let t = table(ROUTES);
        let bytes = t.encode();
        assert_eq!(RouteTable::decode(&bytes), Ok(t.clone()));
        let req = |method, host, path| RequestInfo { method, host, path };
        assert_eq!(t.route_upstream(req("GET", "a.com", "/a")), Some("ua"));
        assert_eq!(t.route_upstream(req("GET", "x.com", "/a")), Some("ug"));
        assert_eq!(t.route_upstream(req("GET", "x.W.org", "/b/c")), Some("ua"));
        assert_eq!(
            t.route_upstream(req("PUT", "x.com", "/s/1")),
            Some("u\u{e9}")
        );
        assert_eq!(t.route_upstream(req("PUT", "x.com", "/sx")), None);
        assert_eq!(
            t.reads(),
            Reads {
                host: true,
                method: true
            }
        );
        assert_eq!(t.len(), 3);
        let empty = table("");
        assert!(empty.is_empty());
        assert_eq!(RouteTable::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = table(ROUTES).encode();
        for n in 0..bytes.len() {
            assert!(RouteTable::decode(&bytes[..n]).is_err(), "{n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RouteTable::decode(&longer), Err(RouteTableError::Length));
    }

    #[test]
    fn another_layout_is_named() {
        let mut bytes = table(ROUTES).encode();
        bytes[4] = 9;
        assert_eq!(RouteTable::decode(&bytes), Err(RouteTableError::Format(9)));
        assert_eq!(
            RouteTable::decode(b"{\"revision\""),
            Err(RouteTableError::Magic)
        );
        assert_eq!(
            RouteTableError::Format(9).to_string(),
            "compiled route table of layout 9, this build reads 1"
        );
    }

    /// A counted array that the bytes cannot hold is refused before
    /// anything is allocated for it.
    #[test]
    fn huge_counts_are_refused_up_front() {
        let mut bytes = table(ROUTES).encode();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(RouteTable::decode(&bytes), Err(RouteTableError::Length));
    }

    /// Flipping any single index word either keeps the table usable or
    /// is refused; a lookup on whatever decodes never panics.
    #[test]
    fn corrupted_indexes_are_refused_or_harmless() {
        let bytes = table(ROUTES).encode();
        let mut refused = 0;
        for at in (8..bytes.len() - 3).step_by(4) {
            for value in [u32::MAX, 1 << 20, 7] {
                let mut b = bytes.clone();
                b[at..at + 4].copy_from_slice(&value.to_le_bytes());
                match RouteTable::decode(&b) {
                    Err(_) => refused += 1,
                    Ok(t) => {
                        for path in ["/a", "/b/c", "/s", "/"] {
                            let _ = t.route_upstream(RequestInfo {
                                method: "GET",
                                host: "x.w.org",
                                path,
                            });
                        }
                    }
                }
            }
        }
        assert!(refused > 0);
    }
}
