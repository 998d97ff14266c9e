//! Record: the `received` event, durable before anything goes upstream. If the log cannot take
//! it, the change ends here with 503 and nothing is sent (docs/design.md "Failure behaviour").
//!
//! A change sent under an approval marks the approval used in the same transaction as its
//! `received` event: of two identical retries racing, one gets the approval and the other finds
//! it used, on either backend (the guard checks the request's version under the chain lock).

use super::{Exit, Operation};
use crate::approvals::{Held, HeldReason, Status, clock};
use crate::audit::{Decision, EventKind};
use crate::proxy::ProxyError;
use crate::store::approvals::{Change, Decided, Guard};
use crate::store::{Store, StoreError};

pub(super) async fn received(store: &Store, op: &Operation) -> Result<(), Exit> {
    let mut event = op.event(EventKind::Received);
    event.request_body = op.body.clone();
    event.before = op.before.clone();
    event.decision = Some(Decision::Allow);
    if let Some(decided) = &op.decided {
        decided.stamp(&mut event);
    }
    let appended = match &op.granted {
        None => store.append(event).await.map(drop),
        Some(granted) => {
            let now = clock::now();
            let guard = Guard {
                change: Change::Status {
                    id: granted.id.clone(),
                    version: granted.version,
                    from: Status::Approved,
                    decided: Decided {
                        status: Status::Used,
                        at: now,
                        send_deadline: None,
                        used_by: Some(op.id.to_string()),
                    },
                },
                notices: Vec::new(),
            };
            store.append_guarded(guard, vec![event]).await.map(drop)
        }
    };
    match appended {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict { .. }) => {
            let id = op.granted.as_ref().map(|g| g.id.clone());
            Err(Exit::refused(ProxyError::Held(Held {
                reason: HeldReason::Used,
                message: format!(
                    "Approval {} was used or changed by another request at the same moment; \
                     this change was not sent.",
                    id.as_deref().unwrap_or("-")
                ),
                approval_id: id,
            })))
        }
        Err(error) => Err(Exit::refused(ProxyError::AuditUnavailable(error))),
    }
}
