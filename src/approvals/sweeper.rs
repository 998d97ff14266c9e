//! The sweeper: every `approvals.sweep_every`, requests whose vote or send window closed are
//! expired (`approval_expired`, with notices), so the log and the webhooks say so even when
//! nobody comes back for them. Expiry is also enforced wherever a request is used or voted on,
//! so the sweeper's period is about promptness, never about safety. Every replica sweeps; the
//! version check lets one of them close each request.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ApprovalSettings, Status, clock, transitions};
use crate::store::Store;

/// Requests closed per look.
const BATCH: i64 = 100;

/// Expire what is overdue now; how many requests were closed.
pub(crate) async fn sweep(store: &Store, settings: &ApprovalSettings) -> usize {
    let mut closed = 0;
    loop {
        let now = clock::now();
        let overdue = match store.reader().overdue_approvals(&now, BATCH).await {
            Ok(overdue) => overdue,
            Err(error) => {
                tracing::warn!(%error, "approvals: cannot look for expired requests");
                return closed;
            }
        };
        let count = overdue.len();
        for a in overdue {
            match transitions::close(store, settings, &a, Status::Expired, now).await {
                Ok(()) => closed += 1,
                Err(error) => {
                    tracing::warn!(%error, approval = %a.id, "approvals: cannot expire a request");
                    return closed;
                }
            }
        }
        if (count as i64) < BATCH {
            return closed;
        }
    }
}

/// Sweep every `settings.sweep_every` until `stop`; `wake` wakes the notices' delivery after a
/// sweep that closed something.
pub(crate) fn spawn(
    store: Store,
    settings: Arc<ApprovalSettings>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = settings.sweep_every.max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if sweep(&store, &settings).await > 0 {
                wake.notify_one();
            }
        }
    })
}
