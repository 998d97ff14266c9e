//! The store's contract, through its public API, on both backends from one body.
//!
//! A test about the contract is an `async fn name(backend: Backend)` followed by
//! `on_both_backends!(name)`, which emits `name::sqlite` and `name::postgres`; each run gets a
//! fresh log of its own ([`TestLog`]: a file in a temporary folder, or a PostgreSQL database
//! created for it and dropped after). Tests of what only one backend has use the same helpers:
//!
//! - `admin_reads.rs`: who read the log (migration 0002), the committed-head watch.
//! - `appending.rs`: appending, groups, duplicates, a failed commit, closing, the token key.
//! - `tamper.rs`: the append-only triggers, and verify naming each kind of tampered row.
//! - `reads.rs`: unfinished operations, `last_after`, list filters, readers.
//! - `operations.rs`: the operations query (folding, filters, cursor paging, limits).
//! - `copying.rs`: copying a log between backends, chain intact.
//! - `sqlite_only.rs`: SQLite's file, its `-wal`/`-shm` and their modes, its locks, files that
//!   are missing or not databases.
//! - `postgres_only.rs`: TRUNCATE, databases without a log or with someone else's, migrations
//!   run separately, two replicas on one log, credentials, TLS.
//! - `tree.rs`: the Merkle tree the writer keeps (proofs, catching up, two writers), the
//!   checkpoints it signs, evidence packs.
//! - `postgres_session.rs`: the server going away under a running store (sessions killed,
//!   connections refused, the chain lock held, the server gone silent).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use super::test_log::{Backend, TestLog};
use super::*;
use crate::audit::{Actor, Effect, Snapshot};

mod admin_reads;
mod appending;
mod copying;
mod operations;
mod postgres_only;
mod postgres_session;
mod reads;
mod sqlite_only;
mod tamper;
mod tree;

/// Emit `#[tokio::test]`s `$test::sqlite` and `$test::postgres`, each calling
/// `$test(Backend::…)`; an optional runtime flavour is passed on to `tokio::test`.
macro_rules! on_both_backends {
    ($test:ident $(, $($flavor:tt)+)?) => {
        mod $test {
            use super::Backend;

            #[tokio::test $(($($flavor)+))?]
            async fn sqlite() {
                super::$test(Backend::Sqlite).await
            }

            #[tokio::test $(($($flavor)+))?]
            async fn postgres() {
                super::$test(Backend::Postgres).await
            }
        }
    };
}
pub(crate) use on_both_backends;

const PARTNER_A: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const PARTNER_B: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";
const SYNC_PATH_A: &str = "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization";

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + secs, 123_456_789)
        .unwrap()
}

/// An event of a sync-policy change by alice on partner A, one second apart per `n`.
fn sample(operation_id: Uuid, kind: EventKind, n: i64) -> Event {
    let mut e = Event::new(operation_id, kind);
    e.time = at(n);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER_A}/identitysynchronization"
    );
    e.state_path = Some(SYNC_PATH_A.into());
    e.api_version = "v1.0".into();
    e.partner_tenant_id = PARTNER_A.parse().ok();
    e.operation = "sync_update".into();
    e.actor = Actor {
        oid: Some("11111111-1111-4111-8111-111111111111".into()),
        upn: Some("Alice@Contoso.com".into()),
        appid: Some("22222222-2222-4222-8222-222222222222".into()),
        ..Actor::default()
    };
    e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
    e.decision = Some(Decision::Allow);
    e
}

/// A `received` event of its own operation.
fn received(n: i64) -> Event {
    sample(Uuid::now_v7(), EventKind::Received, n)
}

fn completed(operation_id: Uuid, n: i64, allowed: bool) -> Event {
    let mut e = sample(operation_id, EventKind::Completed, n);
    e.upstream_status = Some(204);
    e.before = Some(Snapshot::Present {
        value: json!({"userSyncInbound": {"isSyncAllowed": !allowed}}),
    });
    e.after = Some(Snapshot::Present {
        value: json!({"userSyncInbound": {"isSyncAllowed": allowed}}),
    });
    e.effect = Some(Effect::Applied);
    e
}

/// A closed log of five events (seq 1..=5), for tampering.
async fn five_event_log(backend: Backend) -> TestLog {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    for n in 0..5 {
        store.append(received(n)).await.unwrap();
    }
    store.close().await;
    log
}

/// The RFC 6962 root of `events` as stored: each one's canonical JSON, `seq` inside.
fn tree_root(events: &[Recorded]) -> crate::audit::merkle::Hash {
    use crate::audit::merkle::{Frontier, leaf_hash};
    let mut tree = Frontier::new();
    for r in events {
        let mut doc = serde_json::to_value(&r.event).unwrap();
        doc["seq"] = serde_json::json!(r.seq);
        tree.push(leaf_hash(super::chain::canonical_json(&doc).as_bytes()));
    }
    tree.root()
}

/// Verify the log with a reader of its own, as `syncgate audit verify` does.
async fn verify(log: &TestLog) -> VerifyReport {
    let reader = log.reader().await;
    let report = reader.verify().await.unwrap();
    reader.close().await;
    report
}

/// Every event in the log, in seq order.
async fn all_events(log: &TestLog) -> Vec<Recorded> {
    let reader = log.reader().await;
    let events = reader.list(&Filter::default()).await.unwrap();
    reader.close().await;
    events
}

/// The chain is whole: seqs 1..=n without a gap, verified to the end, and every acknowledged
/// event is in it exactly as `append` returned it.
async fn assert_whole_chain(log: &TestLog, acknowledged: &[Recorded]) -> VerifyReport {
    let events = all_events(log).await;
    let seqs: Vec<i64> = events.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    for recorded in acknowledged {
        assert_eq!(
            events.get(recorded.seq as usize - 1),
            Some(recorded),
            "acknowledged event seq {} is in the log as returned",
            recorded.seq
        );
    }
    let report = verify(log).await;
    assert_eq!(report.first_broken, None, "{report:?}");
    assert_eq!(report.events, events.len() as u64);
    report
}

#[test]
fn store_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StoreReader>();
    assert_send_sync::<StoreError>();
}
