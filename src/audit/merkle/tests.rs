//! The tree against RFC 6962's reference vectors (the leaves and roots of Certificate
//! Transparency's own tests), and exhaustively against a direct reading of RFC 6962's
//! definitions for every small tree.

use std::collections::HashMap;
use std::convert::Infallible;

use super::*;

/// Certificate Transparency's test leaves (`testonly/constants.go`).
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// The roots of the trees of the first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(hex: &str) -> Hash {
    hex::decode(hex).unwrap().try_into().unwrap()
}

/// A tree held in memory as the store will hold it: every perfect node the frontier completed.
struct Stored {
    frontier: Frontier,
    nodes: HashMap<Node, Hash>,
}

impl Stored {
    fn of(leaves: impl IntoIterator<Item = Hash>) -> Stored {
        let mut stored = Stored {
            frontier: Frontier::new(),
            nodes: HashMap::new(),
        };
        for leaf in leaves {
            stored.nodes.extend(stored.frontier.push(leaf));
        }
        stored
    }

    fn hash(&self, range: Range<u64>) -> Hash {
        range_hash(range, |node| Ok::<_, Infallible>(self.nodes[&node]))
            .unwrap()
            .unwrap()
    }

    fn inclusion(&self, index: u64, size: u64) -> Vec<Hash> {
        inclusion_ranges(index, size)
            .unwrap()
            .into_iter()
            .map(|r| self.hash(r))
            .collect()
    }

    fn consistency(&self, old: u64, new: u64) -> Vec<Hash> {
        consistency_ranges(old, new)
            .unwrap()
            .into_iter()
            .map(|r| self.hash(r))
            .collect()
    }
}

/// RFC 6962's `MTH`, read literally: the reference the stored tree is checked against.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

#[test]
fn roots_are_certificate_transparencys_for_its_test_leaves() {
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut frontier = Frontier::new();
    let mut nodes = HashMap::new();
    for (i, leaf) in LEAVES.iter().enumerate() {
        nodes.extend(frontier.push(leaf_hash(leaf)));
        assert_eq!(hex::encode(frontier.root()), ROOTS[i], "{} leaves", i + 1);
        let stored = range_hash(0..i as u64 + 1, |n| Ok::<_, Infallible>(nodes[&n]));
        assert_eq!(stored.unwrap().unwrap(), h(ROOTS[i]));
    }
}

#[test]
fn proofs_are_certificate_transparencys_for_its_test_leaves() {
    let tree = Stored::of(LEAVES.iter().map(|l| leaf_hash(l)));
    let path_0_8 = [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ];
    let path_5_8 = [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ];
    let consistency_6_8 = [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ];
    let hashes = |v: &[&str]| v.iter().map(|x| h(x)).collect::<Vec<_>>();
    assert_eq!(tree.inclusion(0, 8), hashes(&path_0_8));
    assert_eq!(tree.inclusion(5, 8), hashes(&path_5_8));
    assert!(tree.inclusion(0, 1).is_empty());
    // Consistency from the one-leaf tree is the first leaf's inclusion path.
    assert_eq!(tree.consistency(1, 8), hashes(&path_0_8));
    assert_eq!(tree.consistency(6, 8), hashes(&consistency_6_8));
    assert!(tree.consistency(8, 8).is_empty());
    let root = h(ROOTS[7]);
    assert!(verify_inclusion(
        5,
        8,
        &leaf_hash(LEAVES[5]),
        &hashes(&path_5_8),
        &root
    ));
    assert!(verify_consistency(
        6,
        8,
        &h(ROOTS[5]),
        &root,
        &hashes(&consistency_6_8)
    ));
}

#[test]
fn every_small_tree_proves_every_leaf_and_every_prefix_and_nothing_else() {
    let all = leaves(70);
    let tree = Stored::of(all.iter().copied());
    for size in 1..=70u64 {
        let root = mth(&all[..size as usize]);
        assert_eq!(tree.hash(0..size), root, "size {size}");
        assert_eq!(
            Frontier::restore(size, |n| Ok::<_, Infallible>(tree.nodes[&n]))
                .unwrap()
                .root(),
            root,
            "size {size}"
        );
        for index in 0..size {
            let leaf = all[index as usize];
            let proof = tree.inclusion(index, size);
            assert!(proof.len() <= 7, "size {size}: {} hashes", proof.len());
            assert!(
                verify_inclusion(index, size, &leaf, &proof, &root),
                "{index} of {size}"
            );
            // Any other leaf, place or root, and any altered or cut proof, fails. (The same
            // proof can hold for another size with *this* root: a root is only ever checked
            // with the size a checkpoint signed beside it.)
            let other = all[((index + 1) % 70) as usize];
            assert!(!verify_inclusion(index, size, &other, &proof, &root));
            if size < 70 {
                let bigger = mth(&all[..size as usize + 1]);
                assert!(!verify_inclusion(index, size + 1, &leaf, &proof, &bigger));
            }
            assert!(!verify_inclusion(size, size, &leaf, &proof, &root));
            assert!(!verify_inclusion(index, size, &leaf, &proof, &all[0]) || size == 1);
            for i in 0..proof.len() {
                let mut bent = proof.clone();
                bent[i][0] ^= 1;
                assert!(!verify_inclusion(index, size, &leaf, &bent, &root));
                assert!(!verify_inclusion(index, size, &leaf, &proof[..i], &root));
            }
            if index + 1 < size {
                assert!(
                    !verify_inclusion(index + 1, size, &leaf, &proof, &root) || proof.is_empty()
                );
            }
        }
        for old in 1..=size {
            let old_root = mth(&all[..old as usize]);
            let proof = tree.consistency(old, size);
            assert!(
                verify_consistency(old, size, &old_root, &root, &proof),
                "{old} → {size}"
            );
            if old < size {
                // A history that is not a prefix: another root of the old size.
                let forked = mth(&all[1..=old as usize]);
                assert!(!verify_consistency(old, size, &forked, &root, &proof));
                assert!(!verify_consistency(old, size, &old_root, &forked, &proof));
                assert!(!verify_consistency(old, size, &old_root, &root, &[]));
                for i in 0..proof.len() {
                    let mut bent = proof.clone();
                    bent[i][31] ^= 0x80;
                    assert!(!verify_consistency(old, size, &old_root, &root, &bent));
                }
            }
        }
    }
}

#[test]
fn a_proof_at_a_million_leaves_names_at_most_twenty_stored_nodes_per_hash() {
    let size = 1_000_000u64;
    for index in [0, 1, 499_999, 524_287, 524_288, 999_998, 999_999] {
        let ranges = inclusion_ranges(index, size).unwrap();
        assert!(ranges.len() <= 20, "{index}: {} hashes", ranges.len());
        let nodes: usize = ranges.into_iter().map(|r| perfect_nodes(r).len()).sum();
        assert!(nodes <= 40, "{index}: {nodes} nodes");
    }
    assert_eq!(inclusion_ranges(size, size), None);
    assert_eq!(consistency_ranges(0, size), None);
    assert_eq!(consistency_ranges(size + 1, size), None);
}
