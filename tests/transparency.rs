//! syncgate's Merkle proofs and signed checkpoints, checked by implementations its team did not
//! write (issue 11): inclusion proofs by sigstore's RFC 6962 verifier (the function sigstore runs
//! on every Rekor entry), the checkpoint's Ed25519 signature by pyca/cryptography; and the other
//! way, a witness's C2SP co-signature made with pyca/cryptography, judged by syncgate's verifier.
//! `tests/transparency/interop.py` is the checking side; `tests/support/python_venv.sh` builds its
//! virtualenv from `tests/transparency/requirements.txt` under the target directory. It needs
//! `python3` (>= 3.10, with `venv`) and, the first time, PyPI; without them it fails loudly.

#[path = "support/python.rs"]
mod python;

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use python::{python_venv, run_to_end, tests_dir};
use serde_json::{Value, json};
use syncgate::audit::merkle::{self, Frontier, Hash, Node};
use syncgate::audit::note::{Checkpoint, CosignatureVerifier, Cosigner, Signer};

/// A tree kept as the store keeps it: the leaves' data and every perfect node.
struct Tree {
    leaves: Vec<Vec<u8>>,
    nodes: HashMap<Node, Hash>,
}

impl Tree {
    fn new(size: usize) -> Tree {
        let mut frontier = Frontier::new();
        let mut tree = Tree {
            leaves: Vec::new(),
            nodes: HashMap::new(),
        };
        for seq in 1..=size {
            // Shaped like a stored event: canonical JSON, keys sorted.
            let leaf = format!(r#"{{"kind":"received","operation":"sync_update","seq":{seq}}}"#);
            tree.nodes
                .extend(frontier.push(merkle::leaf_hash(leaf.as_bytes())));
            tree.leaves.push(leaf.into_bytes());
        }
        tree
    }

    fn hash(&self, range: std::ops::Range<u64>) -> Hash {
        merkle::range_hash(range, |n| Ok::<_, Infallible>(self.nodes[&n]))
            .unwrap()
            .unwrap()
    }

    /// One inclusion case as interop.py reads it.
    fn inclusion(&self, name: &str, index: u64, size: u64) -> Value {
        let hashes: Vec<String> = merkle::inclusion_ranges(index, size)
            .unwrap()
            .into_iter()
            .map(|r| hex::encode(self.hash(r)))
            .collect();
        json!({
            "name": name,
            "index": index,
            "size": size,
            "leaf": base64::engine::general_purpose::STANDARD.encode(&self.leaves[index as usize]),
            "hashes": hashes,
            "root": hex::encode(self.hash(0..size)),
            "valid": true,
        })
    }
}

/// The case altered by `f`, which must now fail.
fn refused(case: &Value, name: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut case = case.clone();
    f(&mut case);
    case["name"] = json!(name);
    case["valid"] = json!(false);
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_verifies_syncgates_inclusion_proofs_and_cryptography_its_checkpoint_signature() {
    let tree = Tree::new(1000);
    let mut cases = Vec::new();
    for (index, size) in [
        (0, 1),
        (0, 2),
        (1, 2),
        (6, 7),
        (3, 8),
        (0, 1000),
        (511, 1000),
        (512, 1000),
        (777, 1000),
        (999, 1000),
        (700, 777),
    ] {
        cases.push(tree.inclusion(&format!("leaf {index} of {size}"), index, size));
    }
    let good = tree.inclusion("base", 777, 1000);
    cases.push(refused(&good, "a proof hash altered", |c| {
        c["hashes"][2] = json!(hex::encode([7u8; 32]))
    }));
    cases.push(refused(&good, "another leaf", |c| {
        c["leaf"] = json!(base64::engine::general_purpose::STANDARD.encode(&tree.leaves[776]))
    }));
    cases.push(refused(&good, "another index", |c| c["index"] = json!(776)));
    cases.push(refused(&good, "a hash cut off", |c| {
        c["hashes"].as_array_mut().unwrap().pop();
    }));
    cases.push(refused(&good, "the root of another size", |c| {
        c["root"] = json!(hex::encode(tree.hash(0..999)))
    }));

    let signer = Signer::from_seed("syncgate.test/audit", &[42; 32]).unwrap();
    let checkpoint = Checkpoint {
        origin: "syncgate.test/audit".into(),
        size: 1000,
        root: tree.hash(0..1000),
        extensions: vec!["time 2026-11-30T09:30:00Z".into()],
    };
    let cases = json!({
        "inclusion": cases,
        "checkpoint": {
            "note": signer.sign(&checkpoint.text()).unwrap(),
            "name": signer.name(),
            "public_key": hex::encode(signer.public_key()),
            "size": 1000,
            "root": hex::encode(checkpoint.root),
        },
        "cosigner": {
            "name": "witness.test/w1",
            "seed": hex::encode([7u8; 32]),
            "time": 1_796_000_000u64,
        },
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&cases).unwrap()).unwrap();

    let python = python_venv("transparency/requirements.txt", "transparency-venv").await;
    let mut command = Command::new(python);
    command
        .arg(tests_dir().join("transparency/interop.py"))
        .arg(&file);
    let output = run_to_end(command, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("interop ok"), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches(": verified").count(), 11, "{stdout}");
    assert_eq!(stdout.matches(": refused").count(), 5, "{stdout}");
    assert!(
        stdout.contains("checkpoint syncgate.test/audit 1000: signature verified"),
        "{stdout}"
    );

    // The co-signature Python made verifies with the verifier key Python wrote, by syncgate's
    // code, over this checkpoint only; and Python's key is the one syncgate derives from the seed.
    let printed = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {stdout}"))
            .to_owned()
    };
    let vkey = printed("cosigner vkey ");
    let line = printed("cosignature ");
    assert_eq!(
        vkey,
        Cosigner::from_seed("witness.test/w1", &[7; 32])
            .unwrap()
            .verifier_key()
    );
    let witness = CosignatureVerifier::parse(&vkey).unwrap();
    let text = checkpoint.text();
    assert_eq!(
        witness.verify(&text, &line, 1_796_000_000),
        Ok(1_796_000_000)
    );
    let other = Checkpoint {
        size: 999,
        root: tree.hash(0..999),
        ..checkpoint.clone()
    };
    assert!(witness.verify(&other.text(), &line, 1_796_000_000).is_err());
    // And syncgate's own co-signature is byte for byte the one Python made.
    assert_eq!(
        Cosigner::from_seed("witness.test/w1", &[7; 32])
            .unwrap()
            .cosign(&text, 1_796_000_000)
            .unwrap(),
        format!("{line}\n")
    );
}
