//! Byte radix trees (tries whose edges carry runs of bytes) as flat
//! arrays of numbers, the building block of [`crate::route_index`] and
//! [`crate::route_table`].
//!
//! A lookup walks the key once from the root and reports every stored key
//! that is a prefix of it, shortest first: the cost is the key's length
//! (times a binary search among at most 256 children per node), whatever
//! the number of keys stored.
//!
//! A tree is built in one go from its sorted keys ([`FlatTrees::build`]),
//! straight into the flat form: no node is ever split or moved, and
//! building costs a sort plus one pass per level over the keys, without an
//! allocation per node.

/// A `usize` that is known to fit (node and byte counts of a config that
/// itself fits in memory); saturates rather than wraps otherwise.
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A node's `value` when no key ends there.
pub(crate) const NO_VALUE: u32 = u32::MAX;

/// One node of a flattened tree: plain numbers, so a set of trees is a
/// few flat arrays that can be copied as bytes and used in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlatNode {
    /// Its edge: `edges[edge_start..edge_start + edge_len]`.
    pub edge_start: u32,
    pub edge_len: u32,
    /// Its children are the nodes `first_child..first_child + children`,
    /// sorted by the first byte of their edge.
    pub first_child: u32,
    pub children: u32,
    /// [`NO_VALUE`], or what the tree stores for the key ending here.
    pub value: u32,
}

impl FlatNode {
    /// A node with this edge, no children and no value yet.
    fn leaf(edge_start: u32, edge_len: u32) -> Self {
        FlatNode {
            edge_start,
            edge_len,
            first_child: 0,
            children: 0,
            value: NO_VALUE,
        }
    }
}

/// Any number of flattened trees sharing two arrays; a tree is named by
/// its root's id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlatTrees {
    pub nodes: Vec<FlatNode>,
    pub edges: Vec<u8>,
}

impl FlatTrees {
    /// Adds the tree of `keys` (sorted, no two equal) and returns its
    /// root's id; `value(i)` is what the tree stores for `keys[i]`.
    ///
    /// Breadth-first: each node's children are added together, right
    /// after each other, and after it (what [`FlatTrees::walk`] relies
    /// on). A node covers a run of keys sharing its path; its children
    /// split that run by the next byte, and each child's edge runs to the
    /// longest prefix its keys share (that of its run's first and last
    /// key, the keys being sorted).
    pub(crate) fn build<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
        mut value: impl FnMut(usize) -> u32,
    ) -> u32 {
        let key = |i: usize| keys.get(i).map_or(&[][..], AsRef::as_ref);
        let root = self.nodes.len();
        self.nodes.push(FlatNode::leaf(0, 0));
        // (node, its keys `lo..hi`, its path's length)
        let mut queue = vec![(root, 0, keys.len(), 0)];
        let mut next = 0;
        while let Some(&(id, mut lo, hi, depth)) = queue.get(next) {
            next += 1;
            let mut here = NO_VALUE;
            // Sorted: the key that ends at this node, if any, comes first.
            if lo < hi && key(lo).len() == depth {
                here = value(lo);
                lo += 1;
            }
            let first_child = self.nodes.len();
            while lo < hi {
                let byte = key(lo).get(depth).copied();
                let end = lo
                    + keys.get(lo..hi).map_or(0, |run| {
                        run.partition_point(|k| k.as_ref().get(depth).copied() <= byte)
                    });
                let (first, last) = (key(lo), key(end.max(lo + 1) - 1));
                let shared = first.iter().zip(last).take_while(|(a, b)| a == b).count();
                let edge = first.get(depth..shared).unwrap_or_default();
                self.nodes
                    .push(FlatNode::leaf(to_u32(self.edges.len()), to_u32(edge.len())));
                self.edges.extend_from_slice(edge);
                queue.push((self.nodes.len() - 1, lo, end.max(lo + 1), shared));
                lo = end.max(lo + 1);
            }
            let children = to_u32(self.nodes.len() - first_child);
            if let Some(node) = self.nodes.get_mut(id) {
                node.first_child = to_u32(first_child);
                node.children = children;
                node.value = here;
            }
        }
        to_u32(root)
    }
}

/// Read access to flattened trees, wherever their nodes are kept: the
/// builder's arrays, or the bytes of a published table
/// ([`crate::route_table::RouteTable`]). Every access is checked, and a
/// walk ends after at most the key's length in steps, whatever the
/// numbers say: trees from bytes need no check before use.
pub(crate) trait Nodes {
    fn node(&self, id: u32) -> Option<FlatNode>;

    /// A node's edge bytes.
    fn edge(&self, node: &FlatNode) -> Option<&[u8]>;

    /// Calls `visit(len, value)` for every key stored in the tree at
    /// `root` that is a prefix of `key` (including `key` itself), shortest
    /// first; `len` is the stored key's length. The cost is `key`'s
    /// length (times a binary search among at most 256 children per
    /// node), whatever the number of keys stored.
    fn walk(&self, root: u32, key: &[u8], mut visit: impl FnMut(usize, u32)) {
        let Some(mut node) = self.node(root) else {
            return;
        };
        let mut depth = 0;
        loop {
            if node.value != NO_VALUE {
                visit(depth, node.value);
            }
            let Some(&first) = key.get(depth) else {
                return;
            };
            let Some(child) = self.child(&node, first) else {
                return;
            };
            let edge = self.edge(&child).unwrap_or_default();
            // An empty edge would not move the walk on.
            if edge.is_empty() || !key.get(depth..).is_some_and(|rest| rest.starts_with(edge)) {
                return;
            }
            depth += edge.len();
            node = child;
        }
    }

    /// The child of `node` whose edge starts with `first`: a binary
    /// search, the children being sorted by that byte.
    fn child(&self, node: &FlatNode, first: u8) -> Option<FlatNode> {
        let mut lo = u64::from(node.first_child);
        let mut hi = lo + u64::from(node.children);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let child = self.node(u32::try_from(mid).ok()?)?;
            let byte = *self.edge(&child)?.first()?;
            match byte.cmp(&first) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(child),
            }
        }
        None
    }

    /// The value stored under exactly `key` in the tree at `root`.
    fn get(&self, root: u32, key: &[u8]) -> Option<u32> {
        let mut found = None;
        self.walk(root, key, |len, value| {
            if len == key.len() {
                found = Some(value);
            }
        });
        found
    }
}

#[cfg(test)]
impl Nodes for FlatTrees {
    fn node(&self, id: u32) -> Option<FlatNode> {
        self.nodes.get(id as usize).copied()
    }

    fn edge(&self, node: &FlatNode) -> Option<&[u8]> {
        let start = node.edge_start as usize;
        self.edges
            .get(start..start.checked_add(node.edge_len as usize)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the tree of `keys` (value: the key's position in the
    /// list), after another one so that ids do not start at 0, and walks
    /// it as a lookup does.
    fn prefixes(keys: &[&str], key: &str) -> Vec<(usize, u32)> {
        let mut sorted: Vec<(&str, u32)> = keys.iter().copied().zip(0..).collect();
        sorted.sort();
        let mut flat = FlatTrees::default();
        flat.build(&["/other", "/x"], |_| 99);
        let names: Vec<&str> = sorted.iter().map(|&(k, _)| k).collect();
        let root = flat.build(&names, |i| sorted[i].1);
        let mut seen = Vec::new();
        flat.walk(root, key.as_bytes(), |len, v| seen.push((len, v)));
        seen
    }

    const KEYS: [&str; 6] = ["/echo/deep", "/echo", "/e", "/", "/echofoo", "/x"];

    #[test]
    fn walk_reports_every_stored_prefix_shortest_first() {
        let p = |key| prefixes(&KEYS, key);
        assert_eq!(p("/echo/deep/er"), [(1, 3), (2, 2), (5, 1), (10, 0)]);
        assert_eq!(p("/echofo"), [(1, 3), (2, 2), (5, 1)]);
        assert_eq!(p("/echofoo"), [(1, 3), (2, 2), (5, 1), (8, 4)]);
        assert_eq!(p("/ech"), [(1, 3), (2, 2)]);
        assert_eq!(p("x"), []);
        assert_eq!(p(""), []);
    }

    #[test]
    fn the_empty_key_lives_at_the_root() {
        assert_eq!(prefixes(&["", "/ab"], "/a"), [(0, 0)]);
        assert_eq!(prefixes(&["", "/ab"], "/abc"), [(0, 0), (3, 1)]);
        assert_eq!(prefixes(&[], "/a"), []);
    }

    #[test]
    fn get_finds_exact_keys_only() {
        let mut flat = FlatTrees::default();
        let keys = ["GET", "POST", "PUT"];
        let root = flat.build(&keys, |i| i as u32);
        assert_eq!(flat.get(root, b"PUT"), Some(2));
        assert_eq!(flat.get(root, b"POST"), Some(1));
        assert_eq!(flat.get(root, b"PU"), None);
        assert_eq!(flat.get(root, b"PUTS"), None);
        // Shared prefixes make one node each: P, then OST and UT.
        assert_eq!(flat.nodes.len(), 5);
    }

    /// Every tree built from random sorted keys agrees with a plain
    /// "which keys are prefixes" scan.
    #[test]
    fn built_trees_agree_with_a_scan() {
        let mut rng = 0x2545_f491_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..300 {
            let mut keys: Vec<Vec<u8>> = (0..next() % 12)
                .map(|_| {
                    (0..next() % 5)
                        .map(|_| b"ab/"[(next() % 3) as usize])
                        .collect()
                })
                .collect();
            keys.sort();
            keys.dedup();
            let mut flat = FlatTrees::default();
            let root = flat.build(&keys, |i| i as u32);
            for _ in 0..20 {
                let probe: Vec<u8> = (0..next() % 6)
                    .map(|_| b"ab/"[(next() % 3) as usize])
                    .collect();
                let mut seen = Vec::new();
                flat.walk(root, &probe, |len, v| seen.push((len, v)));
                let want: Vec<(usize, u32)> = (0..keys.len())
                    .filter(|&i| probe.starts_with(&keys[i]))
                    .map(|i| (keys[i].len(), i as u32))
                    .collect();
                assert_eq!(seen, want, "{keys:?} {probe:?}");
            }
        }
    }

    /// Numbers that point anywhere (a corrupted table) make a walk
    /// stop or go astray, never loop or panic.
    #[test]
    fn walks_of_nonsense_end() {
        let mut flat = FlatTrees::default();
        flat.build(&["/a", "/ab", "/b"], |i| i as u32);
        let good = flat.clone();
        for i in 0..good.nodes.len() {
            for field in 0..5 {
                for value in [0, 1, 2, 99, u32::MAX] {
                    let mut bad = good.clone();
                    let n = &mut bad.nodes[i];
                    *[
                        &mut n.edge_start,
                        &mut n.edge_len,
                        &mut n.first_child,
                        &mut n.children,
                        &mut n.value,
                    ][field] = value;
                    for key in ["", "/", "/ab", "/abc", "/b"] {
                        bad.walk(0, key.as_bytes(), |len, _| assert!(len <= key.len()));
                    }
                }
            }
        }
    }
}
