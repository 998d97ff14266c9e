//! Before: the state the change will meet, read upstream with the caller's own token while the
//! partner's lock is held, and compared with the last state syncgate recorded (drift).

use tracing::warn;

use super::{Exit, Operation};
use crate::audit::{EventKind, Snapshot};
use crate::classify::Governed;
use crate::proxy::ProxyError;
use crate::proxy::state;
use crate::proxy::upstream::Upstream;
use crate::store::Store;

/// Read the before-state into the operation. Graph refusing the caller the read, or the read
/// failing, ends the operation: nothing is forwarded (docs/design.md "Failure behaviour").
pub(super) async fn read(upstream: &Upstream, op: &mut Operation, path: &str) -> Result<(), Exit> {
    let read = state::read(upstream, path, op.authorization()).await;
    op.before = Some(read.snapshot.clone());
    if let Some(refused) = read.refused {
        return Err(Exit::ReadRefusedUpstream(Box::new(refused)));
    }
    if let Snapshot::Unreadable { error, .. } = &read.snapshot {
        return Err(Exit::refused(ProxyError::BeforeStateUnavailable {
            error: error.clone(),
            cause: read.error,
        }));
    }
    Ok(())
}

/// The partner's document, for the rules that read its consent settings; `None` when the rules
/// in force do not need it (it is then not read) or it cannot be read (those rules fail closed).
pub(super) async fn partner_document(
    upstream: &Upstream,
    op: &Operation,
    governed: &Governed,
    needed: bool,
) -> Option<serde_json::Value> {
    let partner = governed.partner.as_ref().filter(|_| needed)?;
    let path = crate::graph::partner_path(governed.path.version, partner);
    state::read(upstream, &path, op.authorization())
        .await
        .snapshot
        .value()
        .cloned()
}

/// A `drift` event when the before-state differs from the last after-state recorded for the
/// same resource: something changed it without going through syncgate. A log that cannot be
/// read only skips the check (logged); the change itself goes on. True when drift was found
/// (recorded or not).
pub(super) async fn record_drift(store: &Store, op: &Operation, path: &str) -> bool {
    let Some(before) = &op.before else {
        return false;
    };
    let last = match store.last_after(path).await {
        Ok(Some(last)) => last,
        Ok(None) => return false,
        Err(error) => {
            warn!(%error, "could not read the last recorded state; drift not checked");
            return false;
        }
    };
    if last.value().is_none() || last.value() == before.value() {
        return false;
    }
    let mut drift = op.event(EventKind::Drift);
    drift.diff = state::diff(&last, before);
    drift.before = Some(last);
    drift.after = Some(before.clone());
    drift.detail = Some(
        "the state changed since syncgate last recorded it (a change made around the proxy)".into(),
    );
    if let Err(error) = store.append(drift).await {
        warn!(%error, "could not record drift");
    }
    true
}
