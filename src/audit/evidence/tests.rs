use std::collections::HashMap;

use super::*;
use crate::audit::merkle::{Frontier, Node, inclusion_ranges, range_hash};
use crate::audit::note::Signer;

const OPERATION: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const OTHER: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";

/// A log of `n` events, every third one of [`OPERATION`], with every perfect node kept.
struct Log {
    events: Vec<String>,
    nodes: HashMap<Node, Hash>,
    frontier: Frontier,
}

impl Log {
    fn new(n: u64) -> Log {
        let mut log = Log {
            events: Vec::new(),
            nodes: HashMap::new(),
            frontier: Frontier::new(),
        };
        for seq in 1..=n {
            let operation = if seq % 3 == 0 { OPERATION } else { OTHER };
            let text = format!(
                r#"{{"kind":"received","operation_id":"{operation}","seq":{seq},"time":"2026-11-30T10:00:00.000000Z"}}"#
            );
            log.nodes
                .extend(log.frontier.push(leaf_hash(text.as_bytes())));
            log.events.push(text);
        }
        log
    }

    fn proof(&self, seq: u64) -> Vec<Hash> {
        inclusion_ranges(seq - 1, self.frontier.size())
            .unwrap()
            .into_iter()
            .map(|range| {
                range_hash(range, |node| self.nodes.get(&node).copied().ok_or(()))
                    .unwrap()
                    .unwrap()
            })
            .collect()
    }

    fn pack(&self, signer: &Signer) -> EvidencePack {
        let checkpoint = Checkpoint {
            origin: signer.name().to_owned(),
            size: self.frontier.size(),
            root: self.frontier.root(),
            extensions: vec!["time 2026-11-30T10:00:01Z".into()],
        };
        EvidencePack {
            format: FORMAT.into(),
            operation_id: OPERATION.into(),
            checkpoint: signer.sign(&checkpoint.text()).unwrap(),
            events: (1..=self.frontier.size())
                .filter(|seq| seq % 3 == 0)
                .map(|seq| {
                    EvidenceEvent::new(seq, self.events[seq as usize - 1].clone(), &self.proof(seq))
                })
                .collect(),
        }
    }
}

fn signer(name: &str, seed: u8) -> Signer {
    Signer::from_seed(name, &[seed; 32]).unwrap()
}

fn key(signer: &Signer) -> Verifier {
    Verifier::parse(&signer.verifier_key()).unwrap()
}

#[test]
fn an_honest_pack_verifies_at_every_tree_size() {
    let signer = signer("syncgate/test", 7);
    for n in [3, 4, 5, 17, 64, 100] {
        let pack = Log::new(n).pack(&signer);
        let verified = verify(&pack, &key(&signer)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(verified.size, n);
        assert_eq!(verified.origin, "syncgate/test");
        assert_eq!(verified.time.as_deref(), Some("2026-11-30T10:00:01Z"));
        let seqs: Vec<u64> = verified.events.iter().map(|e| e.0).collect();
        assert_eq!(seqs, (1..=n).filter(|s| s % 3 == 0).collect::<Vec<_>>());
        assert!(verified.events.iter().all(|e| e.1 == "received"));
        // Through JSON and back: the pack is a file.
        let text = serde_json::to_string_pretty(&pack).unwrap();
        let read: EvidencePack = serde_json::from_str(&text).unwrap();
        assert_eq!(read, pack);
        // At a million leaves a proof would be 20 hashes; here at most 7.
        assert!(pack.events.iter().all(|e| e.proof.len() <= 7));
    }
}

#[test]
fn an_edited_event_is_named_by_its_seq() {
    let signer = signer("syncgate/test", 7);
    let mut pack = Log::new(40).pack(&signer);
    // One character of the second event: a different actor, a different status.
    let edited = &mut pack.events[1];
    edited.event = edited.event.replace("received", "rEceived");
    assert_eq!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::NotIncluded { seq: 6 })
    );
}

#[test]
fn a_bent_proof_or_a_moved_event_is_refused() {
    let signer = signer("syncgate/test", 7);
    let log = Log::new(40);
    let mut pack = log.pack(&signer);
    pack.events[0].proof[0] = BASE64.encode([0u8; 32]);
    assert_eq!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::NotIncluded { seq: 3 })
    );
    let mut pack = log.pack(&signer);
    pack.events[0].proof.pop();
    assert_eq!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::NotIncluded { seq: 3 })
    );
    // Another event of the log, with its own valid proof, under this seq.
    let mut pack = log.pack(&signer);
    pack.events[0].event = log.events[3].clone();
    assert_eq!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::NotIncluded { seq: 3 })
    );
    let mut pack = log.pack(&signer);
    pack.events[0].proof[0] = "not base64!".into();
    assert_eq!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::ProofEncoding { seq: 3 })
    );
}

#[test]
fn a_signed_event_of_another_operation_cannot_be_passed_off() {
    let signer = signer("syncgate/test", 7);
    let log = Log::new(40);
    let mut pack = log.pack(&signer);
    // Seq 1 is OTHER's, and genuinely in the tree: its proof verifies, its label does not.
    pack.events.insert(
        0,
        EvidenceEvent::new(1, log.events[0].clone(), &log.proof(1)),
    );
    assert!(matches!(
        verify(&pack, &key(&signer)),
        Err(EvidenceError::Mislabelled { seq: 1, .. })
    ));
}

#[test]
fn another_key_another_log_or_a_doubled_event_is_refused() {
    let signer_a = signer("syncgate/test", 7);
    let insider = signer("syncgate/test", 8);
    let pack = Log::new(12).pack(&insider);
    assert!(matches!(
        verify(&pack, &key(&signer_a)),
        Err(EvidenceError::Signature(_))
    ));
    let elsewhere = signer("syncgate/other", 7);
    let pack = Log::new(12).pack(&elsewhere);
    assert!(matches!(
        verify(&pack, &key(&signer_a)),
        Err(EvidenceError::Signature(_))
    ));
    let mut pack = Log::new(12).pack(&signer_a);
    let first = pack.events[0].clone();
    pack.events.push(first);
    assert_eq!(
        verify(&pack, &key(&signer_a)),
        Err(EvidenceError::Order {
            seq: 3,
            previous: 12
        })
    );
    let mut pack = Log::new(12).pack(&signer_a);
    pack.events.clear();
    assert_eq!(verify(&pack, &key(&signer_a)), Err(EvidenceError::Empty));
    let mut pack = Log::new(12).pack(&signer_a);
    pack.format = "syncgate-evidence/2".into();
    assert!(matches!(
        verify(&pack, &key(&signer_a)),
        Err(EvidenceError::Format(_))
    ));
}

#[test]
fn unknown_fields_are_refused_not_ignored() {
    let signer = signer("syncgate/test", 7);
    let pack = Log::new(6).pack(&signer);
    let mut value = serde_json::to_value(&pack).unwrap();
    value["events"][0]["verified"] = serde_json::Value::Bool(true);
    assert!(serde_json::from_value::<EvidencePack>(value).is_err());
    let mut value = serde_json::to_value(&pack).unwrap();
    value["tree_size"] = 6.into();
    assert!(serde_json::from_value::<EvidencePack>(value).is_err());
}
