//! The Merkle tree over the audit log's events, as RFC 6962 (and RFC 9162, section 2.1) defines
//! it, so that transparency tooling written for Certificate Transparency and Sigstore checks
//! syncgate's proofs unchanged (issue 11).
//!
//! - A leaf is `SHA-256(0x00 ‖ the event's canonical JSON)`, an inner node
//!   `SHA-256(0x01 ‖ left ‖ right)`; the domain bytes keep a leaf from passing for a node.
//! - The tree of `n` leaves splits at the largest power of two below `n`: its left part is always
//!   a *perfect* subtree (a power-of-two number of leaves, aligned on a multiple of its size).
//!   Every hash a proof needs is therefore a perfect subtree's root, or the hash of a right edge
//!   made of a few of them. Stored, the tree is just its perfect nodes: node `(level, index)`
//!   covers leaves `index·2^level .. (index+1)·2^level` and never changes once complete.
//! - [`Frontier`] appends leaves and says which perfect nodes each append completes (what the
//!   writer stores); [`inclusion_ranges`] and [`consistency_ranges`] say which leaf ranges a
//!   proof is made of, [`perfect_nodes`] which stored nodes make up a range and [`range_hash`]
//!   combines them. Proofs are thus built from `O(log n)` stored nodes, never from the leaves.
//! - [`verify_inclusion`] and [`verify_consistency`] are RFC 9162's verification algorithms
//!   (sections 2.1.3.2 and 2.1.4.2), used by `audit verify` and by an evidence pack's offline
//!   check.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf's, a node's or a tree's root.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n` ≥ 2): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A perfect subtree: `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

impl Node {
    /// The leaves it covers.
    pub fn leaves(self) -> Range<u64> {
        (self.index << self.level)..((self.index + 1) << self.level)
    }
}

/// The perfect subtrees whose roots make up the hash of the leaf range `range`, left to right,
/// as RFC 6962 splits it: the range's hash is theirs folded from the right
/// (`H(n1, H(n2, ... H(n_{k-1}, n_k)))`, see [`range_hash`]). Every range a proof names
/// ([`inclusion_ranges`], [`consistency_ranges`]) starts on a multiple of a power of two at
/// least its length, so its left parts are perfect; an empty range has none.
pub fn perfect_nodes(range: Range<u64>) -> Vec<Node> {
    let mut nodes = Vec::new();
    let (mut start, end) = (range.start, range.end);
    while start < end {
        let n = end - start;
        // The largest power of two that is ≤ n; when n is not a power of two it is the split.
        let size = if n.is_power_of_two() { n } else { split(n) };
        debug_assert!(start % size == 0, "{start}..{end} is not aligned");
        nodes.push(Node {
            level: size.trailing_zeros(),
            index: start / size,
        });
        start += size;
    }
    nodes
}

/// The hash of the leaves `range`, from the roots of its [`perfect_nodes`] (`lookup` gives a
/// node's hash). `None` for an empty range, which has no hash of its own.
pub fn range_hash<E>(
    range: Range<u64>,
    mut lookup: impl FnMut(Node) -> Result<Hash, E>,
) -> Result<Option<Hash>, E> {
    let nodes = perfect_nodes(range);
    let mut hash: Option<Hash> = None;
    for node in nodes.into_iter().rev() {
        let h = lookup(node)?;
        hash = Some(match hash {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
    }
    Ok(hash)
}

/// The leaf ranges whose hashes make up the inclusion proof of leaf `index` in the tree of
/// `size` leaves, in proof order (RFC 6962's `PATH(m, D[n])`, leaf side first). `None` when
/// the leaf is not in the tree.
pub fn inclusion_ranges(index: u64, size: u64) -> Option<Vec<Range<u64>>> {
    if index >= size {
        return None;
    }
    let mut path = Vec::new();
    // Walk down from the whole tree to the leaf, noting each sibling; the proof lists them
    // from the leaf up.
    let (mut start, mut end) = (0, size);
    while end - start > 1 {
        let k = split(end - start);
        if index < start + k {
            path.push(start + k..end);
            end = start + k;
        } else {
            path.push(start..start + k);
            start += k;
        }
    }
    path.reverse();
    Some(path)
}

/// The leaf ranges whose hashes make up the consistency proof from the tree of `old` leaves to
/// the tree of `new` leaves, in proof order (RFC 6962's `PROOF(m, D[n])`). `None` unless
/// `0 < old ≤ new`; empty when `old == new`.
pub fn consistency_ranges(old: u64, new: u64) -> Option<Vec<Range<u64>>> {
    if old == 0 || old > new {
        return None;
    }
    let mut proof = Vec::new();
    // SUBPROOF(m, D[start..end], b), unrolled: going down, each level adds one hash, listed
    // from the bottom up.
    let (mut start, mut end, mut m, mut whole) = (0, new, old, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(start..end);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            proof.push(start + k..end);
            end = start + k;
        } else {
            proof.push(start..start + k);
            start += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Some(proof)
}

/// The leaves appended so far and the right edge of the tree: the roots of its largest perfect
/// subtrees, one per set bit of the size, left to right. Appending a leaf completes a node at
/// level 0 and then one per level it merges; the writer stores each of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    edge: Vec<(Node, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The frontier of a stored tree of `size` leaves, from its nodes (`lookup`).
    pub fn restore<E>(
        size: u64,
        mut lookup: impl FnMut(Node) -> Result<Hash, E>,
    ) -> Result<Frontier, E> {
        let edge = perfect_nodes(0..size)
            .into_iter()
            .map(|node| Ok((node, lookup(node)?)))
            .collect::<Result<_, E>>()?;
        Ok(Frontier { size, edge })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf (its [`leaf_hash`]); the perfect nodes this completes, lowest first (the
    /// leaf itself is the first).
    pub fn push(&mut self, leaf: Hash) -> Vec<(Node, Hash)> {
        let mut done = vec![(
            Node {
                level: 0,
                index: self.size,
            },
            leaf,
        )];
        let mut top = done[0];
        while let Some(&(left, left_hash)) = self.edge.last() {
            if left.level != top.0.level {
                break;
            }
            self.edge.pop();
            top = (
                Node {
                    level: left.level + 1,
                    index: left.index / 2,
                },
                node_hash(&left_hash, &top.1),
            );
            done.push(top);
        }
        self.edge.push(top);
        self.size += 1;
        done
    }

    /// The tree's root ([`empty_root`] when it has no leaves).
    pub fn root(&self) -> Hash {
        let mut hashes = self.edge.iter().rev().map(|(_, h)| *h);
        match hashes.next() {
            None => empty_root(),
            Some(last) => hashes.fold(last, |right, left| node_hash(&left, &right)),
        }
    }
}

/// RFC 9162 §2.1.3.2: whether `proof` shows the leaf `leaf` at `index` in the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `old` leaves with root `old_root` to be
/// a prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if proof.is_empty() {
        return false;
    }
    let path: Vec<Hash> = if old.is_power_of_two() {
        std::iter::once(*old_root)
            .chain(proof.iter().copied())
            .collect()
    } else {
        proof.to_vec()
    };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
mod tests;
