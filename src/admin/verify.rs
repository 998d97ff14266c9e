//! `GET /api/v1/verify`: what `syncgate audit verify` answers, as JSON.
//!
//! Verification reads the whole log, so a process runs one at a time: a second caller while one
//! runs gets 429 with `Retry-After` at once rather than queueing (queued verifications would
//! each read the whole log again, and a client that gave up would leave its work behind).

use serde_json::json;

use super::operations::{bad, pairs, unavailable};
use super::record::{Answer, Failure, Limits, Served};
use crate::store::Store;

/// Seconds a refused caller is told to wait.
const RETRY_AFTER: u64 = 5;

/// Answer `GET /api/v1/verify` (no parameters).
pub(crate) async fn run(store: &Store, limits: &Limits, query: Option<&str>) -> Answer {
    if let Some((key, _)) = pairs(query)?.into_iter().next() {
        return Err(bad(&key, "is not a parameter of this route").into());
    }
    let Ok(_running) = limits.verifying.try_acquire() else {
        return Err(Failure::busy(
            "a verification of the audit log is already running; try again shortly",
            RETRY_AFTER,
        ));
    };
    let report = store.verify().await.map_err(|e| unavailable(&e))?;
    let body = json!({
        "ok": report.ok(),
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
