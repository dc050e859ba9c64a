//! The compiled route table: the route index as flat arrays of numbers
//! and bytes in one buffer, which the driver builds once per config and
//! every worker uses in place, straight from the bytes it copied out of
//! shared data: no JSON parse, no validation, no index build, not even a
//! decode (loading checks the header and the section lengths, nothing
//! that grows with the config).
//!
//! Why: a config of 20,000 routes takes tens of milliseconds to parse,
//! validate and index, and a worker that did it on every change stalled
//! every request it held for that long; decoding the arrays into vectors
//! still took a worker ~25 ms in Envoy's wasm at 20,000 routes.
//!
//! What is in it ([`crate::route_index`] builds the [`TableParts`]):
//! - radix trees ([`FlatTrees`]): the path tree of each host bucket, the
//!   exact hosts, the reversed `*.suffix` patterns and the methods;
//! - per route path end, three [`Slot`]s (prefix, segment, exact), each
//!   with the first listed route for any method and per method;
//! - per route, its upstream.
//!
//! [`RouteTable::find`] follows the rule of
//! [`crate::gateway::GatewayConfig::route_position_linear`]; the property
//! test `tests/route_index.rs` and the `gateway` fuzz target compare the
//! two, on the very code workers run (a config routes through its table's
//! bytes).
//!
//! The bytes are written by this process's own driver, but every read of
//! them is checked and a walk ends within the request path's length
//! ([`Nodes`]): a truncated table or one of another layout is refused at
//! load, and numbers pointing anywhere could only misroute, never panic
//! or loop (the `published` fuzz target feeds it arbitrary bytes).

use crate::gateway::{request_path, strip_port, Reads, RequestInfo};
use crate::radix::{to_u32, FlatNode, FlatTrees, Nodes, NO_VALUE};
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

/// The table as the builder holds it, before [`TableParts::encode`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TableParts {
    pub reads: Reads,
    pub roots: Roots,
    pub trees: FlatTrees,
    /// Path tree values index these.
    pub slots: Vec<Slots>,
    /// `(method id, route)`.
    pub entries: Vec<(u32, u32)>,
    /// Per route, its upstream: `strings[start..start + len]`.
    pub upstreams: Vec<(u32, u32)>,
    pub strings: String,
}

/// Bytes per record of each section.
const NODE: usize = 20;
const SLOTS: usize = 36;
const PAIR: usize = 8;
/// Magic, format, flags, six counts, four roots.
const HEADER: usize = 4 + 4 * (2 + 6 + 4);

impl TableParts {
    /// The table as bytes: a header, then each array as little-endian
    /// `u32`s, then the edge and string bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = HEADER
            + NODE * self.trees.nodes.len()
            + SLOTS * self.slots.len()
            + PAIR * (self.entries.len() + self.upstreams.len())
            + self.trees.edges.len()
            + self.strings.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        let mut put = |n: u32| out.extend_from_slice(&n.to_le_bytes());
        put(FORMAT);
        put(u32::from(self.reads.host) | (u32::from(self.reads.method) << 1));
        for n in [
            self.trees.nodes.len(),
            self.slots.len(),
            self.entries.len(),
            self.upstreams.len(),
            self.trees.edges.len(),
            self.strings.len(),
        ] {
            put(to_u32(n));
        }
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
}

/// Where each section of the bytes starts, and how many records it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Layout {
    start: usize,
    reads: Reads,
    roots: Roots,
    nodes: Section,
    slots: Section,
    entries: Section,
    upstreams: Section,
    edges: Section,
    strings: Section,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Section {
    at: usize,
    count: usize,
}

/// A compiled route table (see the module doc): the bytes and where its
/// sections are.
#[derive(Clone, Default)]
pub struct RouteTable {
    bytes: Vec<u8>,
    at: Layout,
}

/// Two tables are equal when their encodings are.
impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        self.encoded() == other.encoded()
    }
}

impl Eq for RouteTable {}

/// Sizes only: the bytes say nothing one by one.
impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.at.upstreams.count)
            .field("nodes", &self.at.nodes.count)
            .field("bytes", &self.encoded().len())
            .field("reads", &self.at.reads)
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
    /// The header has flags this build does not know.
    Flags(u32),
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
            RouteTableError::Flags(n) => {
                write!(f, "compiled route table with unknown flags {n:#x}")
            }
        }
    }
}

impl std::error::Error for RouteTableError {}

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

impl Nodes for RouteTable {
    fn node(&self, id: u32) -> Option<FlatNode> {
        let at = self.record(self.at.nodes, id as usize, NODE)?;
        Some(FlatNode {
            edge_start: self.word(at)?,
            edge_len: self.word(at + 4)?,
            first_child: self.word(at + 8)?,
            children: self.word(at + 12)?,
            value: self.word(at + 16)?,
        })
    }

    fn edge(&self, node: &FlatNode) -> Option<&[u8]> {
        self.span(self.at.edges, node.edge_start, node.edge_len)
    }
}

impl RouteTable {
    /// Takes a table's bytes, which start at `start` in `bytes` (a worker
    /// keeps the record it copied and routes from inside it). Checks the
    /// header and that the sections fill the rest exactly; nothing else
    /// (see the module doc).
    pub fn load(bytes: Vec<u8>, start: usize) -> Result<Self, RouteTableError> {
        let table = bytes.get(start..).ok_or(RouteTableError::Length)?;
        if table.get(..4) != Some(MAGIC.as_slice()) {
            return Err(RouteTableError::Magic);
        }
        let word = |i: usize| read_word(table, 4 + 4 * i).ok_or(RouteTableError::Length);
        let format = word(0)?;
        if format != FORMAT {
            return Err(RouteTableError::Format(format));
        }
        let flags = word(1)?;
        if flags & !3 != 0 {
            return Err(RouteTableError::Flags(flags));
        }
        let count = |i: usize| word(i).map(|n| n as usize);
        let counts = [
            count(2)?,
            count(3)?,
            count(4)?,
            count(5)?,
            count(6)?,
            count(7)?,
        ];
        let sizes = [NODE, SLOTS, PAIR, PAIR, 1, 1];
        let mut sections = [Section::default(); 6];
        let mut at = start + HEADER;
        for ((section, &n), size) in sections.iter_mut().zip(&counts).zip(sizes) {
            *section = Section { at, count: n };
            at = n
                .checked_mul(size)
                .and_then(|len| at.checked_add(len))
                .ok_or(RouteTableError::Length)?;
        }
        if at != bytes.len() {
            return Err(RouteTableError::Length);
        }
        let [nodes, slots, entries, upstreams, edges, strings] = sections;
        let layout = Layout {
            start,
            reads: Reads {
                host: flags & 1 != 0,
                method: flags & 2 != 0,
            },
            roots: Roots {
                any_host: word(8)?,
                exact_hosts: word(9)?,
                wildcards: word(10)?,
                methods: word(11)?,
            },
            nodes,
            slots,
            entries,
            upstreams,
            edges,
            strings,
        };
        Ok(RouteTable { bytes, at: layout })
    }

    /// The table built from `parts`.
    pub(crate) fn from_parts(parts: &TableParts) -> Result<Self, RouteTableError> {
        RouteTable::load(parts.encode(), 0)
    }

    /// The table's bytes, as [`RouteTable::load`] takes them (what the
    /// driver publishes).
    pub fn encoded(&self) -> &[u8] {
        self.bytes.get(self.at.start..).unwrap_or_default()
    }

    fn word(&self, at: usize) -> Option<u32> {
        read_word(&self.bytes, at)
    }

    /// The byte offset of record `i` of `section`, if it has one.
    fn record(&self, section: Section, i: usize, size: usize) -> Option<usize> {
        (i < section.count).then(|| section.at + i * size)
    }

    /// `len` bytes from `start` within a byte section.
    fn span(&self, section: Section, start: u32, len: u32) -> Option<&[u8]> {
        let end = (start as usize).checked_add(len as usize)?;
        if end > section.count {
            return None;
        }
        self.bytes
            .get(section.at + start as usize..section.at + end)
    }

    fn slot(&self, slots: u32, kind: Kind) -> Option<Slot> {
        let at = self.record(self.at.slots, slots as usize, SLOTS)? + 12 * kind as usize;
        Some(Slot {
            any_method: self.word(at)?,
            entries_start: self.word(at + 4)?,
            entries_len: self.word(at + 8)?,
        })
    }

    fn pair(&self, section: Section, i: usize) -> Option<(u32, u32)> {
        let at = self.record(section, i, PAIR)?;
        Some((self.word(at)?, self.word(at + 4)?))
    }

    /// Which request attributes routing looks at, besides the path.
    pub fn reads(&self) -> Reads {
        self.at.reads
    }

    /// The upstream of the route for `req`: among routes whose host and
    /// method match, the one with the longest matching path (first listed
    /// wins a tie).
    pub fn route_upstream(&self, req: RequestInfo<'_>) -> Option<&str> {
        self.find(req).and_then(|route| self.upstream(route))
    }

    /// The upstream of the route at `position`.
    pub fn upstream(&self, position: usize) -> Option<&str> {
        let (start, len) = self.pair(self.at.upstreams, position)?;
        std::str::from_utf8(self.span(self.at.strings, start, len)?).ok()
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.at.upstreams.count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let roots = self.at.roots;
        let method = self.get(roots.methods, req.method.as_bytes());
        let mut best = Best::default();
        let mut search = |root: u32| {
            self.walk(root, path, |len, slots| {
                let mut offer = |kind: Kind| {
                    let slot = self.slot(slots, kind);
                    best.offer(len, slot.and_then(|s| self.best(&s, method)));
                };
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
        if let Some(root) = self.get(roots.exact_hosts, host.as_bytes()) {
            search(root);
        }
        if self.has_wildcards() {
            // `*.suffix` matches a host that ends in `.suffix`: backwards,
            // the suffix followed by a dot.
            let reversed: Vec<u8> = host.bytes().rev().collect();
            self.walk(roots.wildcards, &reversed, |len, root| {
                if reversed.get(len) == Some(&b'.') {
                    search(root);
                }
            });
        }
        search(roots.any_host);
        best.0.map(|(_, route)| route as usize)
    }

    fn has_wildcards(&self) -> bool {
        self.node(self.at.roots.wildcards)
            .is_some_and(|root| root.children > 0 || root.value != NO_VALUE)
    }

    /// The first listed route in `slot` that takes `method` (`None`: a
    /// method no route names): a binary search of its method entries.
    fn best(&self, slot: &Slot, method: Option<u32>) -> Option<u32> {
        let named = method.and_then(|m| {
            let (mut lo, mut hi) = (slot.entries_start as usize, slot.entries_start as usize);
            hi = hi.checked_add(slot.entries_len as usize)?;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let (id, route) = self.pair(self.at.entries, mid)?;
                match id.cmp(&m) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return Some(route),
                }
            }
            None
        });
        let any = (slot.any_method != NO_VALUE).then_some(slot.any_method);
        match (named, any) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The little-endian `u32` at `at`.
fn read_word(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
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

    fn load(bytes: &[u8]) -> Result<RouteTable, RouteTableError> {
        RouteTable::load(bytes.to_vec(), 0)
    }

    #[test]
    fn load_takes_the_bytes_as_they_were_published() {
        let t = table(ROUTES);
        let bytes = t.encoded();
        assert_eq!(load(bytes), Ok(t.clone()));
        // Inside a larger record, as a worker keeps it.
        let mut record = b"header\nconfig".to_vec();
        record.extend_from_slice(bytes);
        let inside = RouteTable::load(record, 13).unwrap();
        assert_eq!(inside, t);
        assert_eq!(inside.encoded(), bytes);
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
        assert_eq!(load(empty.encoded()), Ok(empty));
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = table(ROUTES).encoded().to_vec();
        for n in 0..bytes.len() {
            assert!(load(&bytes[..n]).is_err(), "{n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(load(&longer), Err(RouteTableError::Length));
        assert_eq!(
            RouteTable::load(bytes.clone(), bytes.len() + 1),
            Err(RouteTableError::Length)
        );
    }

    #[test]
    fn another_layout_is_named() {
        let mut bytes = table(ROUTES).encoded().to_vec();
        bytes[4] = 9;
        assert_eq!(load(&bytes), Err(RouteTableError::Format(9)));
        bytes[4] = 1;
        bytes[8] = 4;
        assert_eq!(load(&bytes), Err(RouteTableError::Flags(4)));
        assert_eq!(load(b"{\"revision\""), Err(RouteTableError::Magic));
        assert_eq!(
            RouteTableError::Format(9).to_string(),
            "compiled route table of layout 9, this build reads 1"
        );
    }

    /// Counts the bytes cannot hold are refused (and no arithmetic on
    /// them overflows).
    #[test]
    fn huge_counts_are_refused() {
        let bytes = table(ROUTES).encoded().to_vec();
        for count in 0..6 {
            let mut b = bytes.clone();
            let at = 12 + 4 * count;
            b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(load(&b), Err(RouteTableError::Length));
        }
    }

    /// Any word of the table set to nonsense: refused at load (the
    /// header), or a lookup that may misroute but never panics or loops.
    #[test]
    fn corrupted_words_are_refused_or_harmless() {
        let bytes = table(ROUTES).encoded().to_vec();
        let mut refused = 0;
        for at in (8..bytes.len() - 3).step_by(4) {
            for value in [u32::MAX, 1 << 20, 7] {
                let mut b = bytes.clone();
                b[at..at + 4].copy_from_slice(&value.to_le_bytes());
                match load(&b) {
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
