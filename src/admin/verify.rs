//! `GET /api/v1/verify`: what `syncgate audit verify` answers, as JSON.
//!
//! Verification reads the whole log, so a process runs one at a time: a second caller while one
//! runs gets 429 with `Retry-After` at once rather than queueing (queued verifications would
//! each read the whole log again, and a client that gave up would leave its work behind).

use serde_json::json;

use super::operations::{bad, pairs, unavailable};
use super::record::{Answer, Failure, Limits, Served};
use crate::audit::kept::{self, Finding, Kept};
use crate::audit::note::Verifier;
use crate::store::Store;

/// Seconds a refused caller is told to wait.
const RETRY_AFTER: u64 = 5;

/// Answer `GET /api/v1/verify[?key=VKEY&checkpoints=NOTES]`: with kept checkpoints (signed
/// notes one after another, as a file witness keeps them, signed by `key`), the log is also
/// checked against each, as `syncgate audit verify --checkpoint` does.
pub(crate) async fn run(store: &Store, limits: &Limits, query: Option<&str>) -> Answer {
    let kept = kept_checkpoints(query)?;
    let Ok(_running) = limits.verifying.try_acquire() else {
        return Err(Failure::busy(
            "a verification of the audit log is already running; try again shortly",
            RETRY_AFTER,
        ));
    };
    let sizes: Vec<u64> = kept.iter().map(|k| k.checkpoint.size).collect();
    let report = store
        .reader()
        .verify_at(&sizes)
        .await
        .map_err(|e| unavailable(&e))?;
    let findings = if report.first_broken.is_none() {
        kept::assess(&kept, report.events, &report.roots_at)
    } else {
        Vec::new()
    };
    let kept_ok = findings.iter().all(Finding::is_match);
    let findings: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            json!({
                "checkpoint": f.name(),
                "size": f.size(),
                "finding": f.kind(),
                "message": f.to_string(),
            })
        })
        .collect();
    let body = json!({
        "ok": report.ok() && kept_ok,
        "checkpoints": findings,
        "events": report.events,
        "head": report.head,
        "first_broken": report.first_broken,
        "operations_index": report.operations_index,
        "tree": report.tree,
        "checkpoints_checked": report.checkpoints_checked,
        "tree_root": hex::encode(report.tree_root),
    });
    Ok(Served {
        body,
        rows: report.events,
    })
}

/// The most text `checkpoints` may hold: a few hundred bytes a note, so thousands of them.
const MAX_KEPT_TEXT: usize = 1 << 20;

/// The kept checkpoints the query names (`key` and `checkpoints` together, or neither).
fn kept_checkpoints(query: Option<&str>) -> Result<Vec<Kept>, Failure> {
    let (mut key, mut notes) = (None, None);
    for (name, value) in pairs(query)? {
        match name.as_str() {
            "key" => key = Some(value),
            "checkpoints" => notes = Some(value),
            _ => return Err(bad(&name, "is not a parameter of this route").into()),
        }
    }
    let (key, notes) = match (key, notes) {
        (None, None) => return Ok(Vec::new()),
        (Some(key), Some(notes)) => (key, notes),
        (None, Some(_)) => return Err(bad("key", "is needed with checkpoints").into()),
        (Some(_), None) => return Err(bad("checkpoints", "is needed with key").into()),
    };
    if notes.len() > MAX_KEPT_TEXT {
        return Err(bad(
            "checkpoints",
            format!("is longer than {MAX_KEPT_TEXT} bytes"),
        )
        .into());
    }
    let key =
        Verifier::parse(&key).map_err(|e| bad("key", format!("is not a verifier key: {e}")))?;
    kept::read_notes(&notes, &key, "checkpoint").map_err(|e| bad("checkpoints", e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_verification_while_one_runs_is_told_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.db"), Default::default())
            .await
            .unwrap();
        let limits = Limits::default();
        let served = run(&store, &limits, None).await.ok().unwrap();
        assert_eq!(served.body["ok"], true);
        assert_eq!(served.body["first_broken"], serde_json::Value::Null);
        let running = limits.verifying.try_acquire().unwrap();
        let refused = run(&store, &limits, None).await.err().unwrap();
        assert_eq!(refused.status, http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(RETRY_AFTER));
        drop(running);
        assert!(run(&store, &limits, Some("x=1")).await.is_err());
        store.close().await;
    }
}
