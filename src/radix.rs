//! A byte radix tree (a trie whose edges carry runs of bytes), the
//! building block of [`crate::route_index`].
//!
//! A lookup walks the key once from the root and reports every stored key
//! that is a prefix of it, shortest first: the cost is the key's length
//! (times a binary search among at most 256 children per node), whatever
//! the number of keys stored.

/// Keys are byte strings; each stored key holds one `V`.
#[derive(Clone)]
pub(crate) struct Radix<V> {
    /// `nodes[0]` is the root (empty edge). Nodes are only added, so an
    /// id stays valid for the tree's life.
    nodes: Vec<Node>,
    values: Vec<V>,
}

#[derive(Clone)]
struct Node {
    /// The bytes on the edge into this node (empty for the root).
    edge: Box<[u8]>,
    /// The first byte of each child's edge, sorted; `children` holds the
    /// child ids in the same order. No two children share a first byte.
    firsts: Vec<u8>,
    children: Vec<usize>,
    /// Into `values`, when a key ends here.
    value: Option<usize>,
}

impl Node {
    fn new(edge: Box<[u8]>) -> Self {
        Node {
            edge,
            firsts: Vec::new(),
            children: Vec::new(),
            value: None,
        }
    }
}

impl<V> Default for Radix<V> {
    fn default() -> Self {
        Radix {
            nodes: vec![Node::new(Box::default())],
            values: Vec::new(),
        }
    }
}

impl<V> Radix<V> {
    /// No key stored.
    pub(crate) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many nodes the tree has (for sizing reports).
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The value stored under `key`, created with `V::default()` when the
    /// key is new.
    pub(crate) fn entry(&mut self, key: &[u8]) -> &mut V
    where
        V: Default,
    {
        let node = self.insert_node(key);
        let id = match self.nodes[node].value {
            Some(id) => id,
            None => {
                let id = self.values.len();
                self.values.push(V::default());
                self.nodes[node].value = Some(id);
                id
            }
        };
        &mut self.values[id]
    }

    /// Every stored value, to finish them once all keys are in.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.iter_mut()
    }

    /// The node `key` ends at, splitting an edge or adding a leaf as
    /// needed.
    fn insert_node(&mut self, key: &[u8]) -> usize {
        let mut node = 0;
        let mut rest = key;
        while let Some(&first) = rest.first() {
            match self.nodes[node].firsts.binary_search(&first) {
                Err(pos) => {
                    let leaf = self.nodes.len();
                    self.nodes.push(Node::new(rest.into()));
                    let parent = &mut self.nodes[node];
                    parent.firsts.insert(pos, first);
                    parent.children.insert(pos, leaf);
                    return leaf;
                }
                Ok(pos) => {
                    let child = self.nodes[node].children[pos];
                    let edge = &self.nodes[child].edge;
                    let common = edge.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if let Some(&split_at) = edge.get(common) {
                        // The key leaves the edge part-way: a new node
                        // takes the shared bytes, the old child the rest.
                        let head: Box<[u8]> = edge[..common].into();
                        let tail: Box<[u8]> = edge[common..].into();
                        self.nodes[child].edge = tail;
                        let mid = self.nodes.len();
                        self.nodes.push(Node {
                            edge: head,
                            firsts: vec![split_at],
                            children: vec![child],
                            value: None,
                        });
                        self.nodes[node].children[pos] = mid;
                        node = mid;
                    } else {
                        node = child;
                    }
                    rest = &rest[common..];
                }
            }
        }
        node
    }

    /// Calls `visit(len, value)` for every stored key that is a prefix of
    /// `key` (including `key` itself), shortest first; `len` is the
    /// stored key's length.
    pub(crate) fn walk<'a>(&'a self, key: &[u8], mut visit: impl FnMut(usize, &'a V)) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut depth = 0;
        loop {
            if let Some(value) = node.value.and_then(|id| self.values.get(id)) {
                visit(depth, value);
            }
            let Some(rest) = key.get(depth..) else {
                return;
            };
            let Some(first) = rest.first() else {
                return;
            };
            let Ok(pos) = node.firsts.binary_search(first) else {
                return;
            };
            let Some(child) = node.children.get(pos).and_then(|&c| self.nodes.get(c)) else {
                return;
            };
            if !rest.starts_with(&child.edge) {
                return;
            }
            depth += child.edge.len();
            node = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(tree: &Radix<u32>, key: &str) -> Vec<(usize, u32)> {
        let mut seen = Vec::new();
        tree.walk(key.as_bytes(), |len, &v| seen.push((len, v)));
        seen
    }

    #[test]
    fn walk_reports_every_stored_prefix_shortest_first() {
        let mut t = Radix::default();
        for (i, k) in ["/echo/deep", "/echo", "/e", "/", "/echofoo", "/x"]
            .iter()
            .enumerate()
        {
            *t.entry(k.as_bytes()) = i as u32;
        }
        assert_eq!(
            prefixes(&t, "/echo/deep/er"),
            [(1, 3), (2, 2), (5, 1), (10, 0)]
        );
        assert_eq!(prefixes(&t, "/echofo"), [(1, 3), (2, 2), (5, 1)]);
        assert_eq!(prefixes(&t, "/echofoo"), [(1, 3), (2, 2), (5, 1), (8, 4)]);
        assert_eq!(prefixes(&t, "/ech"), [(1, 3), (2, 2)]);
        assert_eq!(prefixes(&t, "x"), []);
        assert_eq!(prefixes(&t, ""), []);
    }

    #[test]
    fn entry_finds_the_same_value_again() {
        let mut t: Radix<u32> = Radix::default();
        assert!(t.is_empty());
        *t.entry(b"/abc") += 1;
        *t.entry(b"/ab") += 10;
        *t.entry(b"/abc") += 1;
        assert_eq!(prefixes(&t, "/abcd"), [(3, 10), (4, 2)]);
        // The empty key lives at the root.
        *t.entry(b"") = 7;
        assert_eq!(prefixes(&t, "/a"), [(0, 7)]);
    }
}
