//! `GET /api/v1/operations/{id}`: everything the log holds about one governed operation, for an
//! auditor reconstructing it: every event with its place in the chain (seq, prev_hash, hash:
//! the stored `Recorded`), the folded summary (the row `/api/v1/operations` shows), the state
//! before and after, the RFC 6902 diff between them, the rule results and the approval ids.
//!
//! One indexed query (`audit_events (operation_id, seq)`), however long the log.

use http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::operations::{bad, pairs, unavailable};
use super::record::{Answer, Failure, Served};
use crate::audit::Recorded;
use crate::store::{Store, fold};

/// Answer `GET /api/v1/operations/{id}` (`id` as it appeared in the path).
pub(crate) async fn show(store: &Store, id: &str, query: Option<&str>) -> Answer {
    let id = operation_id(id, query)?;
    let events = store.operation(id).await.map_err(|e| unavailable(&e))?;
    let body = detail(&events).ok_or_else(|| {
        Failure::from((
            StatusCode::NOT_FOUND,
            "NotFound".to_owned(),
            format!("no operation {id} in the audit log"),
        ))
    })?;
    Ok(Served {
        body,
        rows: events.len() as u64,
    })
}

/// The operation id of a `/api/v1/operations/{id}...` route, whose query must be empty.
pub(crate) fn operation_id(id: &str, query: Option<&str>) -> Result<Uuid, Failure> {
    if let Some((key, _)) = pairs(query)?.into_iter().next() {
        return Err(bad(&key, "is not a parameter of this route").into());
    }
    Uuid::try_parse(id).map_err(|_| {
        Failure::from((
            StatusCode::BAD_REQUEST,
            "BadRequest".to_owned(),
            format!("the operation id {id:?} is not a GUID"),
        ))
    })
}

/// The route's body for one operation's events (in seq order); `None` when there are none.
fn detail(events: &[Recorded]) -> Option<Value> {
    let summary = fold(events)?;
    let before = events.iter().find_map(|r| r.event.before.clone());
    let after = events.iter().rev().find_map(|r| r.event.after.clone());
    // Recomputed from the states shown beside it; the recorded diff of the last event that has
    // one stands in when a state could not be read.
    let diff = before
        .as_ref()
        .zip(after.as_ref())
        .and_then(|(b, a)| crate::proxy::state::diff(b, a))
        .or_else(|| events.iter().rev().find_map(|r| r.event.diff.clone()));
    let rule_results = events
        .iter()
        .rev()
        .find(|r| !r.event.rule_results.is_empty())
        .map(|r| r.event.rule_results.clone())
        .unwrap_or_default();
    let mut approval_ids: Vec<&str> = Vec::new();
    for id in events.iter().filter_map(|r| r.event.approval_id.as_deref()) {
        if !approval_ids.contains(&id) {
            approval_ids.push(id);
        }
    }
    Some(json!({
        "operation_id": summary.operation_id,
        "summary": summary,
        "events": events,
        "before": before,
        "after": after,
        "diff": diff,
        "rule_results": rule_results,
        "approval_ids": approval_ids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, EventKind, Snapshot};

    fn recorded(seq: i64, event: Event) -> Recorded {
        Recorded {
            seq,
            prev_hash: "0".repeat(64),
            hash: format!("{seq:064}"),
            event,
        }
    }

    #[test]
    fn the_detail_shows_the_first_before_the_last_after_and_their_diff() {
        let operation = Uuid::now_v7();
        let mut received = Event::new(operation, EventKind::Received);
        received.before = Some(Snapshot::Present {
            value: json!({"displayName": "old"}),
        });
        received.approval_id = Some("a1".into());
        let mut completed = Event::new(operation, EventKind::Completed);
        completed.after = Some(Snapshot::Present {
            value: json!({"displayName": "new"}),
        });
        completed.approval_id = Some("a1".into());
        let body = detail(&[recorded(1, received), recorded(2, completed)]).unwrap();
        assert_eq!(body["before"]["value"]["displayName"], "old", "{body}");
        assert_eq!(body["after"]["value"]["displayName"], "new", "{body}");
        assert_eq!(
            body["diff"],
            json!([{"op": "replace", "path": "/displayName", "value": "new"}])
        );
        assert_eq!(body["approval_ids"], json!(["a1"]));
        assert_eq!(body["events"][1]["seq"], 2);
        assert_eq!(body["events"][0]["prev_hash"], "0".repeat(64));
        assert_eq!(body["summary"]["first_seq"], 1);
        assert!(detail(&[]).is_none());
    }
}
