//! Crash recovery: at start-up, every operation whose `received` event has no `completed` (the
//! proxy died between recording and completing) gets a `recovered` event holding the state read
//! again from the upstream, so the log says what happened to it. It runs beside live traffic, so
//! a slow or unreachable upstream never keeps the proxy from starting; each re-read holds the
//! partner's lock, so a new change to that partner waits until its recovery is recorded.
//!
//! The caller's token is gone (only its hash was kept), so the re-read uses the token in
//! `audit.recovery_token_file`, kept fresh by the operator's token agent. Without one the
//! `recovered` event says the state could not be read; the next governed change on that resource
//! then shows any difference as `drift`.

use std::path::Path;

use http::HeaderValue;
use tracing::{info, warn};

use super::lifecycle::following;
use super::locks::Locks;
use super::state;
use super::upstream::Upstream;
use crate::audit::{EventKind, Snapshot};
use crate::store::{Store, StoreError};

/// Record `recovered` for every unfinished operation; returns how many there were.
pub(crate) async fn recover(
    store: &Store,
    upstream: &Upstream,
    locks: &Locks,
    token_file: Option<&Path>,
) -> Result<usize, StoreError> {
    let unfinished = store.unfinished_operations().await?;
    if unfinished.is_empty() {
        return Ok(0);
    }
    warn!(
        count = unfinished.len(),
        "found changes a previous run did not complete; re-reading their state"
    );
    let token = token_file.map(|path| {
        std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    });
    for record in &unfinished {
        let received = &record.event;
        // The same key the pipeline locks (`Governed::lock_key`).
        let kind = received.operation.kind();
        let lock_key = kind
            .and_then(|k| crate::classify::lock_key(k, received.partner_tenant_id.as_deref()))
            .or_else(|| received.state_path.clone())
            .unwrap_or_default();
        let _lock = locks.lock(&lock_key).await;
        let mut event = following(received, EventKind::Recovered);
        let after = match (&received.state_path, &token) {
            (None, _) => unreadable("the received event names no state to read"),
            (_, None) => unreadable("no audit.recovery_token_file is configured"),
            (_, Some(Err(e))) => unreadable(e),
            (Some(path), Some(Ok(token))) => {
                match HeaderValue::from_str(&format!("Bearer {token}")) {
                    Ok(auth) => state::read(upstream, path, Some(&auth)).await.snapshot,
                    Err(_) => unreadable("the recovery token is not a valid header value"),
                }
            }
        };
        if let (Some(before), Some(kind)) = (&received.before, kind) {
            event.diff = state::diff(before, &after);
            event.effect = Some(state::effect(
                kind,
                received.request_body.as_ref(),
                None,
                before,
                &after,
            ));
        }
        event.after = Some(after);
        event.detail = Some(
            "syncgate stopped before this change completed; the state was read again at start-up"
                .into(),
        );
        store.append(event).await?;
    }
    info!(count = unfinished.len(), "recorded recovered events");
    Ok(unfinished.len())
}

fn unreadable(error: &str) -> Snapshot {
    Snapshot::Unreadable {
        status: None,
        error: error.to_owned(),
    }
}
