//! The tamper-evidence routes (docs/transparency.md): the checkpoints the writer signed, RFC
//! 6962 inclusion and consistency proofs from the stored Merkle tree, and evidence packs.
//!
//! - `GET /api/v1/checkpoints[?limit=N&at_most=SIZE]`: signed checkpoints, largest first.
//! - `GET /api/v1/proofs/inclusion?seq=N[&size=S]`: event `seq`'s audit path in the tree of `S`
//!   events (default: the latest signed checkpoint's size, whose note comes with it).
//! - `GET /api/v1/proofs/consistency?old=M&new=N`: the tree of `M` events is a prefix of `N`'s.
//! - `GET /api/v1/witnesses`: how far each witness was delivered, and its last failure.
//! - `GET /api/v1/operations/{id}/evidence`: the operation's evidence pack, as `syncgate audit
//!   evidence` writes it, for `syncgate audit verify-evidence` to check offline.
//!
//! Hashes are base64, as in the checkpoints' notes. A proof reads at most one stored node per
//! level for each of its ranges: a handful of rows, whatever the log's size.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::StatusCode;
use serde_json::{Value, json};

use super::operations::{Refusal, bad, pairs, unavailable};
use super::record::{Answer, Failure, Served};
use crate::audit::merkle::Hash;
use crate::store::{Store, StoreError};

/// Checkpoints per page at most, and by default.
const MAX_CHECKPOINTS: i64 = 100;
const DEFAULT_CHECKPOINTS: i64 = 10;

/// How a store error reads to a client of these routes: a tree size (or seq) the log does not
/// reach is a resource that does not exist (404), a question with no answer is the client's
/// (400), evidence not yet signed is a 409; the rest 503.
fn refusal(error: &StoreError) -> Failure {
    let (status, code) = match error {
        StoreError::NotInTree { .. } => (StatusCode::NOT_FOUND, "NotFound"),
        StoreError::Invalid { .. } => (StatusCode::BAD_REQUEST, "BadRequest"),
        StoreError::NotYetSigned { .. } => (StatusCode::CONFLICT, "SyncgateNotYetSigned"),
        _ => return unavailable(error).into(),
    };
    Failure::from((status, code.to_owned(), error.to_string()))
}

fn hashes(proof: &[Hash]) -> Value {
    Value::Array(
        proof
            .iter()
            .map(|h| Value::String(BASE64.encode(h)))
            .collect(),
    )
}

/// A query's parameters as unsigned integers, each named in `known`; any other is refused.
fn numbers(query: Option<&str>, known: &[&str]) -> Result<Vec<Option<u64>>, Refusal> {
    let mut values = vec![None; known.len()];
    for (key, value) in pairs(query)? {
        let Some(i) = known.iter().position(|k| *k == key) else {
            return Err(bad(&key, "is not a parameter of this route"));
        };
        let number = value
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| bad(&key, "must be a whole number of at least 0"))?;
        values[i] = Some(number);
    }
    Ok(values)
}

/// `GET /api/v1/checkpoints`.
pub(crate) async fn checkpoints(store: &Store, query: Option<&str>) -> Answer {
    let [limit, at_most] = numbers(query, &["limit", "at_most"])?[..] else {
        unreachable!("two names, two values")
    };
    let limit = match limit {
        None => DEFAULT_CHECKPOINTS,
        Some(n) if (1..=MAX_CHECKPOINTS as u64).contains(&n) => n as i64,
        Some(_) => return Err(bad("limit", format!("must be 1 to {MAX_CHECKPOINTS}")).into()),
    };
    let found = store
        .reader()
        .checkpoints(at_most.unwrap_or(u64::MAX), limit)
        .await
        .map_err(|e| refusal(&e))?;
    let sizes: Vec<u64> = found.iter().map(|c| c.size).collect();
    let cosignatures = store
        .reader()
        .cosignatures(&sizes)
        .await
        .map_err(|e| refusal(&e))?;
    let value: Vec<Value> = found
        .iter()
        .map(|c| {
            let cosigned: Vec<Value> = cosignatures
                .iter()
                .filter(|s| s.size == c.size)
                .map(|s| json!({"witness": s.witness, "time": s.time, "signature": s.signature}))
                .collect();
            json!({
                "size": c.size,
                "root": BASE64.encode(c.root),
                "time": c.time,
                "note": c.note,
                "cosignatures": cosigned,
            })
        })
        .collect();
    Ok(Served {
        rows: value.len() as u64,
        body: json!({ "value": value }),
    })
}

/// `GET /api/v1/witnesses`: every witness any replica delivered to (or tried), by name.
pub(crate) async fn witnesses(store: &Store, query: Option<&str>) -> Answer {
    numbers(query, &[])?;
    let states = store
        .reader()
        .witness_states()
        .await
        .map_err(|e| refusal(&e))?;
    let value: Vec<Value> = states
        .iter()
        .map(|s| {
            json!({
                "witness": s.witness,
                "delivered": s.delivered,
                "failed_attempts": s.attempts,
                "last_error": s.last_error,
                "last_attempt": s.last_attempt,
            })
        })
        .collect();
    Ok(Served {
        rows: value.len() as u64,
        body: json!({ "value": value }),
    })
}

/// `GET /api/v1/proofs/inclusion`.
pub(crate) async fn inclusion(store: &Store, query: Option<&str>) -> Answer {
    let [seq, size] = numbers(query, &["seq", "size"])?[..] else {
        unreachable!("two names, two values")
    };
    let seq = seq
        .filter(|s| *s >= 1)
        .ok_or_else(|| bad("seq", "is required, a seq of at least 1"))?;
    let reader = store.reader();
    let (size, note) = match size {
        Some(size) => (size, Value::Null),
        None => match reader.latest_checkpoint().await.map_err(|e| refusal(&e))? {
            Some(c) => (c.size, Value::String(c.note)),
            None => {
                return Err(refusal(&StoreError::NotYetSigned { seq, signed: 0 }));
            }
        },
    };
    let proof = reader
        .inclusion_proof(seq, size)
        .await
        .map_err(|e| refusal(&e))?;
    let root = reader.tree_root(size).await.map_err(|e| refusal(&e))?;
    Ok(Served {
        rows: 1,
        body: json!({
            "seq": seq,
            "leaf_index": seq - 1,
            "size": size,
            "root": BASE64.encode(root),
            "proof": hashes(&proof),
            "checkpoint": note,
        }),
    })
}

/// `GET /api/v1/proofs/consistency`.
pub(crate) async fn consistency(store: &Store, query: Option<&str>) -> Answer {
    let [old, new] = numbers(query, &["old", "new"])?[..] else {
        unreachable!("two names, two values")
    };
    let old = old.ok_or_else(|| bad("old", "is required"))?;
    let new = new.ok_or_else(|| bad("new", "is required"))?;
    let proof = store
        .reader()
        .consistency_proof(old, new)
        .await
        .map_err(|e| refusal(&e))?;
    Ok(Served {
        rows: 1,
        body: json!({ "old": old, "new": new, "proof": hashes(&proof) }),
    })
}

/// `GET /api/v1/operations/{id}/evidence`.
pub(crate) async fn evidence(store: &Store, id: &str, query: Option<&str>) -> Answer {
    let id = super::operation::operation_id(id, query)?;
    let pack = store
        .reader()
        .evidence(id.into())
        .await
        .map_err(|e| refusal(&e))?
        .ok_or_else(|| {
            Failure::from((
                StatusCode::NOT_FOUND,
                "NotFound".to_owned(),
                format!("no operation {id} in the audit log"),
            ))
        })?;
    let rows = pack.events.len() as u64;
    let body = serde_json::to_value(&pack).map_err(|e| unavailable(&e))?;
    Ok(Served { body, rows })
}
