//! After: the state the change left, read again while the lock is still held, so the recorded
//! before and after belong to this change alone; what it shows is compared with what was asked
//! (intent versus effect) by the terminal step.

use super::Operation;
use crate::audit::Snapshot;
use crate::proxy::state;
use crate::proxy::upstream::Upstream;

pub(super) async fn read(upstream: &Upstream, op: &Operation, path: &str) -> Snapshot {
    state::read(upstream, path, op.authorization())
        .await
        .snapshot
}
