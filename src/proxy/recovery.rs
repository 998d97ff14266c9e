//! Crash recovery: every operation whose `received` event has no outcome (`completed`, `denied`,
//! `recovered`) — the replica died between recording and completing — gets a `recovered` event
//! holding the state read again from the upstream, so the log says what happened to it.
//!
//! With replicas sharing one log, any of them may find another's unfinished change, so:
//! - only `received` events older than `store.recovery_grace` are candidates: a younger one is
//!   most likely a change another replica is still running (the grace also absorbs clock skew
//!   between replicas, whose clocks stamp the events);
//! - each candidate is recovered under its partner's lock, the same lock the pipeline holds from
//!   before the `received` event to after the terminal one, and only if, inside the lock, the
//!   operation still has no outcome. A replica still running the change holds the lock, so the
//!   check sees its outcome; two replicas recovering at once take turns, and the second sees the
//!   first's `recovered`. Exactly one `recovered` per operation, whatever the interleaving;
//! - it runs at start and then periodically (`spawn_recovery` in `app.rs`), so a replica that
//!   died and never comes back is recovered by another.
//!
//! It runs beside live traffic, so a slow or unreachable upstream never keeps the proxy from
//! starting; a new change to a partner being recovered waits until its recovery is recorded.
//!
//! The caller's token is gone (only its hash was kept), so the re-read uses the token in
//! `audit.recovery_token_file`, kept fresh by the operator's token agent. Without one the
//! `recovered` event says the state could not be read; the next governed change on that resource
//! then shows any difference as `drift`.

use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use tracing::{info, warn};

use super::lifecycle::following;
use super::locks::Locks;
use super::state;
use super::upstream::Upstream;
use crate::audit::{Event, EventKind, Snapshot};
use crate::graph::OperationId;
use crate::store::{Store, StoreError};

/// What one recovery pass needs besides the store.
pub(crate) struct Recovery<'a> {
    pub(crate) upstream: &'a Upstream,
    /// The pipeline's per-partner locks (cross-replica when the log is shared).
    pub(crate) locks: &'a Locks,
    pub(crate) token_file: Option<&'a Path>,
    /// How old an unfinished `received` must be to count as crashed.
    pub(crate) grace: Duration,
}

/// The recovery token as read for one pass, or why it could not be.
type Token = Option<Result<String, String>>;

/// What became of one candidate.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Recovered,
    /// Its outcome was recorded between the listing and the lock (it was not crashed, or another
    /// replica recovered it first).
    Finished,
    /// Its partner's lock could not be had (held past the wait limit, PostgreSQL down): left to
    /// the next pass.
    Busy,
}

impl Recovery<'_> {
    /// One pass: record `recovered` for every unfinished operation older than the grace; returns
    /// how many this pass recorded.
    pub(crate) async fn run(&self, store: &Store) -> Result<usize, StoreError> {
        let candidates = candidates(store, self.grace).await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        warn!(
            count = candidates.len(),
            "found changes that never completed; re-reading their state"
        );
        let token = self.token();
        let (mut recovered, mut busy) = (0, 0);
        for received in &candidates {
            match self.recover(store, received, &token).await? {
                Outcome::Recovered => recovered += 1,
                Outcome::Finished => {}
                Outcome::Busy => busy += 1,
            }
        }
        info!(
            count = recovered,
            finished_meanwhile = candidates.len() - recovered - busy,
            left_for_next_pass = busy,
            "recorded recovered events"
        );
        Ok(recovered)
    }

    fn token(&self) -> Token {
        self.token_file.map(|path| {
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        })
    }

    /// Recover one candidate under its partner's lock, if it still has no outcome there.
    async fn recover(
        &self,
        store: &Store,
        received: &Event,
        token: &Token,
    ) -> Result<Outcome, StoreError> {
        // The same key the pipeline locks (`Governed::lock_key`).
        let kind = received.operation.kind();
        let lock_key = kind
            .and_then(|k| crate::classify::lock_key(k, received.partner_tenant_id.as_deref()))
            .or_else(|| received.state_path.clone())
            .unwrap_or_default();
        let _lock = match self.locks.lock(&lock_key).await {
            Ok(lock) => lock,
            Err(error) => {
                warn!(%error, audit_id = %received.operation_id, "cannot recover a change now; the next pass retries");
                return Ok(Outcome::Busy);
            }
        };
        if finished(store, received.operation_id).await? {
            return Ok(Outcome::Finished);
        }
        let mut event = following(received, EventKind::Recovered);
        let after = match (&received.state_path, token) {
            (None, _) => unreadable("the received event names no state to read"),
            (_, None) => unreadable("no audit.recovery_token_file is configured"),
            (_, Some(Err(e))) => unreadable(e),
            (Some(path), Some(Ok(token))) => {
                match HeaderValue::from_str(&format!("Bearer {token}")) {
                    Ok(auth) => state::read(self.upstream, path, Some(&auth)).await.snapshot,
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
            "syncgate stopped before this change completed; the state was read again afterwards"
                .into(),
        );
        store.append(event).await?;
        Ok(Outcome::Recovered)
    }
}

/// The `received` events without an outcome recorded more than `grace` ago.
async fn candidates(store: &Store, grace: Duration) -> Result<Vec<Event>, StoreError> {
    let cutoff = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|grace| chrono::Utc::now().checked_sub_signed(grace));
    let Some(cutoff) = cutoff else {
        return Ok(Vec::new());
    };
    Ok(store
        .unfinished_operations()
        .await?
        .into_iter()
        .map(|record| record.event)
        .filter(|received| received.time <= cutoff)
        .collect())
}

/// Whether `operation` has its outcome recorded (read again under the lock).
async fn finished(store: &Store, operation: OperationId) -> Result<bool, StoreError> {
    Ok(store.operation(operation).await?.iter().any(|r| {
        matches!(
            r.event.kind,
            EventKind::Completed | EventKind::Denied | EventKind::Recovered
        )
    }))
}

fn unreadable(error: &str) -> Snapshot {
    Snapshot::Unreadable {
        status: None,
        error: error.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::store::StoreOptions;

    const PARTNERS: [&str; 2] = [
        "9c5d131d-b1c3-4fc4-9e3f-c6557947d551",
        "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c",
    ];

    /// A `received` event for a change to `partner`'s sync policy, recorded `age` ago.
    fn received(partner: &str, age: Duration) -> Event {
        let mut e = Event::new(Uuid::now_v7(), EventKind::Received);
        e.time = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap();
        e.method = "PUT".into();
        e.api_version = "v1.0".into();
        e.partner_tenant_id = partner.parse().ok();
        e.operation = "sync_update".into();
        e.state_path = Some(format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{partner}/identitySynchronization"
        ));
        e
    }

    struct World {
        _dir: tempfile::TempDir,
        store: Store,
        /// Never reached: without a recovery token nothing is re-read.
        upstream: Upstream,
        locks: Locks,
    }

    impl World {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("audit.db");
            let store = Store::open(&db, StoreOptions::default()).await.unwrap();
            let settings =
                crate::config::Settings::for_upstream("http://127.0.0.1:9", &db).unwrap();
            World {
                _dir: dir,
                store,
                upstream: Upstream::new(&settings),
                locks: Locks::default(),
            }
        }

        fn recovery(&self, grace: Duration) -> Recovery<'_> {
            Recovery {
                upstream: &self.upstream,
                locks: &self.locks,
                token_file: None,
                grace,
            }
        }

        async fn append(&self, event: Event) -> OperationId {
            self.store.append(event).await.unwrap().event.operation_id
        }

        /// The `recovered` events of `operation`.
        async fn recovered(&self, operation: OperationId) -> usize {
            let events = self.store.operation(operation).await.unwrap();
            events
                .iter()
                .filter(|r| r.event.kind == EventKind::Recovered)
                .count()
        }
    }

    const GRACE: Duration = Duration::from_secs(120);

    #[tokio::test]
    async fn only_changes_older_than_the_grace_are_recovered() {
        let world = World::new().await;
        let old = world.append(received(PARTNERS[0], GRACE * 5)).await;
        let young = world.append(received(PARTNERS[1], GRACE / 12)).await;
        assert_eq!(world.recovery(GRACE).run(&world.store).await.unwrap(), 1);
        assert_eq!(
            (world.recovered(old).await, world.recovered(young).await),
            (1, 0)
        );
        // Once it is old enough (here: no grace), the young one is recovered too, and only it.
        assert_eq!(
            world
                .recovery(Duration::ZERO)
                .run(&world.store)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            (world.recovered(old).await, world.recovered(young).await),
            (1, 1)
        );
        assert_eq!(
            world
                .recovery(Duration::ZERO)
                .run(&world.store)
                .await
                .unwrap(),
            0
        );
        // A grace too long for any clock recovers nothing rather than failing.
        assert_eq!(
            world
                .recovery(Duration::MAX)
                .run(&world.store)
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_change_whose_outcome_lands_after_the_listing_is_not_recovered() {
        let world = World::new().await;
        let operation = world.append(received(PARTNERS[0], GRACE * 2)).await;
        // Two replicas list the same candidate; the first records `recovered`.
        let listed = candidates(&world.store, GRACE).await.unwrap();
        assert_eq!(listed.len(), 1);
        let (first, second) = (world.recovery(GRACE), world.recovery(GRACE));
        assert_eq!(
            first
                .recover(&world.store, &listed[0], &None)
                .await
                .unwrap(),
            Outcome::Recovered
        );
        // The second, with its stale list, sees the outcome once it holds the lock.
        assert_eq!(
            second
                .recover(&world.store, &listed[0], &None)
                .await
                .unwrap(),
            Outcome::Finished
        );
        assert_eq!(world.recovered(operation).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_recoveries_at_once_record_exactly_one_recovered_per_operation() {
        let world = Arc::new(World::new().await);
        let mut operations = Vec::new();
        for i in 0..20 {
            let event = received(PARTNERS[i % 2], GRACE * 2);
            operations.push(world.append(event).await);
        }
        let pass = |world: Arc<World>| async move { world.recovery(GRACE).run(&world.store).await };
        let (one, two) = tokio::join!(
            tokio::spawn(pass(world.clone())),
            tokio::spawn(pass(world.clone()))
        );
        assert_eq!(
            one.unwrap().unwrap() + two.unwrap().unwrap(),
            operations.len()
        );
        for operation in operations {
            assert_eq!(world.recovered(operation).await, 1, "{operation:?}");
        }
    }
}
