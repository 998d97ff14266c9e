//! Evidence packs (issue 11): one operation's events, an RFC 6962 inclusion proof for each, and
//! a checkpoint of the log signed by its key, in one JSON file that verifies offline, with no
//! database. An auditor can hand it to a regulator who never sees the rest of the log.
//!
//! # The format (`syncgate-evidence/1`)
//!
//! ```json
//! {
//!   "format": "syncgate-evidence/1",
//!   "operation_id": "…",
//!   "checkpoint": "<the signed note, exactly as signed>",
//!   "events": [
//!     {"seq": 7, "event": "<the event's canonical JSON, as a string>", "proof": ["<base64>", …]}
//!   ]
//! }
//! ```
//!
//! Each event is its stored canonical text, carried as a JSON *string* so that its bytes (the
//! leaf the tree hashed) survive any JSON tool the pack passes through; its leaf index is
//! `seq − 1`. The proof is RFC 6962's audit path for that leaf in the tree the checkpoint
//! signs, base64 hashes as in the checkpoint's root. Unknown fields are refused, not ignored.
//!
//! # What a verified pack shows, and what it cannot
//!
//! That each event is, byte for byte, the leaf at its seq in the tree of `size` events that the
//! log's key signed. It cannot show that the pack holds *every* event of the operation: a
//! Merkle proof proves membership, not absence. The events name their operation and kind, so a
//! reader sees whether the lifecycle is complete (received, decided, sent, completed); the log
//! itself, or `syncgate audit show`, answers the rest.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::merkle::{Hash, leaf_hash, verify_inclusion};
use super::note::{Checkpoint, NoteError, Verifier};

/// The `format` of the packs this code writes and reads.
pub const FORMAT: &str = "syncgate-evidence/1";

/// The largest pack `verify-evidence` reads: an operation has a handful of events, each at
/// most a few hundred kilobytes (bodies are bounded at recording), and 20 hashes of proof.
pub const MAX_PACK_BYTES: u64 = 64 * 1024 * 1024;

/// One evidence pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePack {
    pub format: String,
    pub operation_id: String,
    /// The signed checkpoint note, exactly as signed.
    pub checkpoint: String,
    pub events: Vec<EvidenceEvent>,
}

/// One event of the pack and its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceEvent {
    pub seq: u64,
    /// The event's canonical JSON text, as stored and hashed.
    pub event: String,
    /// The inclusion proof of leaf `seq − 1`, base64 hashes, leaf side first.
    pub proof: Vec<String>,
}

impl EvidenceEvent {
    /// An event and its proof as the pack carries them.
    pub fn new(seq: u64, event: String, proof: &[Hash]) -> EvidenceEvent {
        EvidenceEvent {
            seq,
            event,
            proof: proof.iter().map(|h| BASE64.encode(h)).collect(),
        }
    }
}

/// Why a pack does not verify. Each names what failed, so an edited pack is told apart from
/// a pack signed by another key or one this code cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("not an evidence pack this syncgate reads: {0}")]
    Format(String),
    #[error("the pack's checkpoint is not signed by the key given: {0}")]
    Signature(NoteError),
    #[error("the pack's checkpoint cannot be read: {0}")]
    Checkpoint(NoteError),
    #[error("the pack's checkpoint is for the log {found:?}, not {expected:?} (the key's name)")]
    Origin { found: String, expected: String },
    #[error("the pack holds no events")]
    Empty,
    #[error("event seq {seq} is not in the signed tree of {size} events")]
    OutOfTree { seq: u64, size: u64 },
    #[error("event seq {seq} comes after seq {previous}: the events must be in seq order, once")]
    Order { seq: u64, previous: u64 },
    #[error("event seq {seq}: its proof is not a list of base64 SHA-256 hashes")]
    ProofEncoding { seq: u64 },
    #[error(
        "event seq {seq} is NOT the event the log signed at that place: its text or its proof was \
         altered"
    )]
    NotIncluded { seq: u64 },
    #[error("event seq {seq} is signed but does not say so of itself: {reason}")]
    Mislabelled { seq: u64, reason: String },
}

/// What a verified pack shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub origin: String,
    /// Events in the tree the checkpoint signs.
    pub size: u64,
    pub root: Hash,
    /// The checkpoint's `time` line, when it has one.
    pub time: Option<String>,
    /// Each event's seq, kind and time, in order.
    pub events: Vec<(u64, String, String)>,
}

/// Check `pack` against the log's verifier key, offline: the checkpoint is signed by the key,
/// for its origin; every event is the leaf at its place in the signed tree, and says of itself
/// that it is that seq of that operation.
pub fn verify(pack: &EvidencePack, key: &Verifier) -> Result<Verified, EvidenceError> {
    if pack.format != FORMAT {
        return Err(EvidenceError::Format(format!(
            "format {:?}, not {FORMAT:?}",
            pack.format
        )));
    }
    let body = key
        .open(&pack.checkpoint)
        .map_err(EvidenceError::Signature)?;
    let checkpoint = Checkpoint::parse(body).map_err(EvidenceError::Checkpoint)?;
    if checkpoint.origin != key.name() {
        return Err(EvidenceError::Origin {
            found: checkpoint.origin,
            expected: key.name().to_owned(),
        });
    }
    if pack.events.is_empty() {
        return Err(EvidenceError::Empty);
    }
    let size = checkpoint.size;
    let mut previous = 0;
    let mut events = Vec::with_capacity(pack.events.len());
    for event in &pack.events {
        let seq = event.seq;
        if seq <= previous {
            return Err(EvidenceError::Order { seq, previous });
        }
        previous = seq;
        if seq == 0 || seq > size {
            return Err(EvidenceError::OutOfTree { seq, size });
        }
        let proof = event
            .proof
            .iter()
            .map(|h| {
                BASE64
                    .decode(h)
                    .ok()
                    .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
            })
            .collect::<Option<Vec<Hash>>>()
            .ok_or(EvidenceError::ProofEncoding { seq })?;
        let leaf = leaf_hash(event.event.as_bytes());
        if !verify_inclusion(seq - 1, size, &leaf, &proof, &checkpoint.root) {
            return Err(EvidenceError::NotIncluded { seq });
        }
        events.push(self_described(seq, &event.event, &pack.operation_id)?);
    }
    let time = checkpoint
        .extensions
        .iter()
        .find_map(|line| line.strip_prefix("time ").map(str::to_owned));
    Ok(Verified {
        origin: checkpoint.origin,
        size,
        root: checkpoint.root,
        time,
        events,
    })
}

/// The signed event's own seq, operation, kind and time: a pack whose label (its `seq`, its
/// `operation_id`) disagrees with the signed text is refused rather than read by its label.
fn self_described(
    seq: u64,
    text: &str,
    operation_id: &str,
) -> Result<(u64, String, String), EvidenceError> {
    let mislabelled = |reason: String| EvidenceError::Mislabelled { seq, reason };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| mislabelled(format!("it is not JSON ({e})")))?;
    let field = |name: &str| value.get(name);
    if field("seq").and_then(serde_json::Value::as_u64) != Some(seq) {
        return Err(mislabelled(format!("its own seq is {:?}", field("seq"))));
    }
    let own_operation = field("operation_id").and_then(serde_json::Value::as_str);
    if own_operation != Some(operation_id) {
        return Err(mislabelled(format!(
            "it belongs to operation {own_operation:?}, not {operation_id}"
        )));
    }
    let text_of = |name: &str| {
        field(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    Ok((seq, text_of("kind"), text_of("time")))
}

#[cfg(test)]
mod tests;
