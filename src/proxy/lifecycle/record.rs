//! Record: the `received` event, durable before anything goes upstream. If the log cannot take
//! it, the change ends here with 503 and nothing is sent (docs/design.md "Failure behaviour").

use super::{Exit, Operation};
use crate::audit::{Decision, EventKind};
use crate::proxy::ProxyError;
use crate::store::Store;

pub(super) async fn received(store: &Store, op: &Operation) -> Result<(), Exit> {
    let mut event = op.event(EventKind::Received);
    event.request_body = op.body.clone();
    event.before = op.before.clone();
    event.decision = Some(Decision::Allow);
    if let Some(decided) = &op.decided {
        decided.stamp(&mut event);
    }
    match store.append(event).await {
        Ok(_) => Ok(()),
        Err(error) => Err(Exit::refused(ProxyError::AuditUnavailable(error))),
    }
}
