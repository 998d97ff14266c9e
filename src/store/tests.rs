//! The store's behaviour through its public API, on SQLite. Tests that tamper with the file use a
//! raw connection, as an attacker with write access to the database would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use uuid::Uuid;

use super::StoreLocation;
use super::*;
use crate::audit::{Actor, Effect, Snapshot};

const PARTNER_A: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const PARTNER_B: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";
const SYNC_PATH_A: &str = "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization";

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("audit.db")
}

async fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).await.unwrap()
}

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

async fn raw(path: &Path) -> sqlx::SqliteConnection {
    super::sqlite::raw_connection(path).await
}

async fn drop_triggers(conn: &mut sqlx::SqliteConnection) {
    conn.execute("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
        .await
        .unwrap();
}

/// A closed log of five events (seq 1..=5), for tampering.
async fn five_event_log(dir: &TempDir) -> PathBuf {
    let path = db_in(dir);
    let store = open(&path).await;
    for n in 0..5 {
        store
            .append(sample(Uuid::now_v7(), EventKind::Received, n))
            .await
            .unwrap();
    }
    store.close().await;
    path
}

async fn verify_file(path: &Path) -> VerifyReport {
    let reader = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let report = reader.verify().await.unwrap();
    reader.close().await;
    report
}

#[tokio::test]
async fn appended_events_form_a_contiguous_verified_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let op = Uuid::now_v7();
    let first = store
        .append(sample(op, EventKind::Received, 0))
        .await
        .unwrap();
    let second = store.append(completed(op, 1, true)).await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.prev_hash, chain::GENESIS);
    assert_eq!(second.prev_hash, first.hash);

    let report = store.verify().await.unwrap();
    assert_eq!(
        report,
        VerifyReport {
            events: 2,
            head: Some(second.hash.clone()),
            first_broken: None
        }
    );
    // What is read back is exactly what append returned (time truncated to microseconds).
    let listed = store.list(&Filter::default()).await.unwrap();
    assert_eq!(listed, vec![first.clone(), second]);
    assert_eq!(first.event.time.timestamp_subsec_nanos(), 123_456_000);
    store.close().await;
}

#[tokio::test]
async fn an_empty_log_verifies_with_no_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let report = store.verify().await.unwrap();
    assert_eq!(report.events, 0);
    assert_eq!(report.head, None);
    assert_eq!(report.first_broken, None);
    store.close().await;
}

#[tokio::test]
async fn the_chain_continues_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let first = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    store.close().await;
    let store = open(&path).await;
    let second = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 1))
        .await
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev_hash, first.hash);
    assert!(store.verify().await.unwrap().first_broken.is_none());
    store.close().await;
}

// Current-thread runtime: every spawned appender queues its event before the writer task gets
// to run again, so grouping is deterministic rather than a matter of timing.
#[tokio::test]
async fn concurrent_appends_commit_in_fewer_groups_than_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let events = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..events {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(sample(Uuid::now_v7(), EventKind::Received, n))
                .await
        });
    }
    let mut seqs: Vec<i64> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=events).collect::<Vec<_>>());
    let stats = store.stats();
    assert_eq!(stats.events_committed, events as u64);
    assert!(
        stats.groups_committed < events as u64 / 10,
        "{} groups for {events} events",
        stats.groups_committed
    );
    let report = store.verify().await.unwrap();
    assert_eq!(report.events, events as u64);
    assert!(report.first_broken.is_none(), "{report:?}");
    store.close().await;
}

#[tokio::test]
async fn a_group_never_exceeds_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_group: 16,
        ..StoreOptions::default()
    };
    let store = Store::open(&db_in(&dir), options).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(sample(Uuid::now_v7(), EventKind::Received, n))
                .await
        });
    }
    for r in tasks.join_all().await {
        r.unwrap();
    }
    assert!(store.stats().groups_committed >= 7, "{:?}", store.stats());
    assert!(store.verify().await.unwrap().first_broken.is_none());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_many_threads_stay_contiguous_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..25 {
                let e = sample(Uuid::now_v7(), EventKind::Received, t * 100 + n);
                seqs.push(store.append(e).await.unwrap().seq);
            }
            seqs
        });
    }
    let mut seqs: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert!(store.verify().await.unwrap().first_broken.is_none());
    store.close().await;
}

#[tokio::test]
async fn a_duplicate_event_id_fails_alone_and_spares_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let original = sample(Uuid::now_v7(), EventKind::Received, 0);
    store.append(original.clone()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=5 {
        let store = store.clone();
        let event = if n == 3 {
            original.clone()
        } else {
            sample(Uuid::now_v7(), EventKind::Received, n)
        };
        tasks.spawn(async move { (n, store.append(event).await) });
    }
    for (n, result) in tasks.join_all().await {
        match result {
            Ok(_) => assert_ne!(n, 3),
            Err(e) => {
                assert_eq!(n, 3, "{e}");
                assert!(matches!(e, StoreError::Rejected { .. }), "{e:?}");
            }
        }
    }
    let report = store.verify().await.unwrap();
    assert_eq!(report.events, 5);
    assert!(report.first_broken.is_none());
    store.close().await;
}

#[tokio::test]
async fn triggers_refuse_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    let update = conn
        .execute("UPDATE audit_events SET actor_upn = 'mallory' WHERE seq = 2")
        .await
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = conn
        .execute("DELETE FROM audit_events WHERE seq = 5")
        .await
        .unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    conn.close().await.unwrap();
    assert_eq!(verify_file(&path).await.events, 5);
}

#[tokio::test]
async fn verify_names_an_event_whose_json_was_edited() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    conn.execute(
        "UPDATE audit_events SET event = replace(event, '\"isSyncAllowed\":true', \
         '\"isSyncAllowed\":false') WHERE seq = 3",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    let report = verify_file(&path).await;
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("hash"), "{}", broken.reason);
    assert_eq!(report.events, 2);
}

#[tokio::test]
async fn verify_names_an_event_whose_indexed_column_alone_was_edited() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    conn.execute("UPDATE audit_events SET actor_upn = 'someone@else.com' WHERE seq = 4")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!(broken.seq, 4);
    assert!(broken.reason.contains("actor_upn"), "{}", broken.reason);
}

#[tokio::test]
async fn verify_names_a_column_changed_to_another_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    conn.execute("UPDATE audit_events SET upstream_status = 'two hundred' WHERE seq = 2")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!(broken.seq, 2);
    assert!(
        broken.reason.contains("upstream_status"),
        "{}",
        broken.reason
    );
}

#[tokio::test]
async fn verify_detects_a_deleted_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    conn.execute("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("missing"), "{}", broken.reason);
}

#[tokio::test]
async fn verify_detects_swapped_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    conn.execute(
        "UPDATE audit_events SET hash = CASE seq \
           WHEN 2 THEN (SELECT hash FROM audit_events WHERE seq = 3) \
           ELSE (SELECT hash FROM audit_events WHERE seq = 2) END \
         WHERE seq IN (2, 3)",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!(broken.seq, 2);
}

#[tokio::test]
async fn verify_detects_a_forged_event_with_a_recomputed_hash() {
    // Rewriting one event and its own hash is caught by the next event's prev_hash.
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    drop_triggers(&mut conn).await;
    let (prev, event): (String, String) =
        sqlx::query_as("SELECT prev_hash, event FROM audit_events WHERE seq = 2")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let forged = event.replace("Alice@Contoso.com", "Bob@Contoso.com");
    let forged_hash = chain::link_hash(&prev, &forged);
    sqlx::query(
        "UPDATE audit_events SET event = ?, hash = ?, actor_upn = 'Bob@Contoso.com' WHERE seq = 2",
    )
    .bind(&forged)
    .bind(&forged_hash)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("prev_hash"), "{}", broken.reason);
}

#[tokio::test]
async fn unfinished_operations_are_received_events_without_an_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    let (done, denied, recovered, open_a, open_b) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for op in [done, denied, recovered, open_a, open_b] {
        store
            .append(sample(op, EventKind::Received, 0))
            .await
            .unwrap();
    }
    store.append(completed(done, 1, true)).await.unwrap();
    store
        .append(sample(denied, EventKind::Denied, 1))
        .await
        .unwrap();
    store
        .append(sample(recovered, EventKind::Recovered, 1))
        .await
        .unwrap();
    // A drift event is not an outcome: the operation is still unfinished.
    store
        .append(sample(open_b, EventKind::Drift, 1))
        .await
        .unwrap();
    let unfinished: Vec<Uuid> = store
        .unfinished_operations()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.event.kind, EventKind::Received);
            r.event.operation_id.uuid()
        })
        .collect();
    assert_eq!(unfinished, vec![open_a, open_b]);
    store.close().await;
}

#[tokio::test]
async fn last_after_is_the_latest_completed_or_recovered_state_of_that_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_in(&dir)).await;
    assert_eq!(store.last_after(SYNC_PATH_A).await.unwrap(), None);

    store
        .append(completed(Uuid::now_v7(), 0, true))
        .await
        .unwrap();
    let mut recovered = completed(Uuid::now_v7(), 1, false);
    recovered.kind = EventKind::Recovered;
    store.append(recovered).await.unwrap();
    // Later events that are not outcomes, or are about another resource, do not count.
    store
        .append(sample(Uuid::now_v7(), EventKind::Received, 2))
        .await
        .unwrap();
    let mut other = completed(Uuid::now_v7(), 3, true);
    other.state_path = Some("/v1.0/policies/crossTenantAccessPolicy/partners/other".into());
    other.after = Some(Snapshot::Absent);
    store.append(other).await.unwrap();

    assert_eq!(
        store.last_after(SYNC_PATH_A).await.unwrap(),
        Some(Snapshot::Present {
            value: json!({"userSyncInbound": {"isSyncAllowed": false}})
        })
    );
    assert_eq!(
        store
            .last_after("/v1.0/policies/crossTenantAccessPolicy/partners/other")
            .await
            .unwrap(),
        Some(Snapshot::Absent)
    );
    store.close().await;
}

/// A log with variety for the filters: returns the store and the operation ids in order.
async fn varied_log(dir: &TempDir) -> (Store, Vec<Uuid>) {
    let store = open(&db_in(dir)).await;
    let ops: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    // op0: alice on A, allowed and completed (t 0, 1)
    store
        .append(sample(ops[0], EventKind::Received, 0))
        .await
        .unwrap();
    store.append(completed(ops[0], 1, true)).await.unwrap();
    // op1: an app on B, denied (t 100)
    let mut denied = sample(ops[1], EventKind::Denied, 100);
    denied.partner_tenant_id = PARTNER_B.parse().ok();
    denied.actor = Actor {
        appid: Some("33333333-3333-4333-8333-333333333333".into()),
        ..Actor::default()
    };
    denied.decision = Some(Decision::Deny);
    store.append(denied).await.unwrap();
    // op2: bob on A, received only (t 200)
    let mut bob = sample(ops[2], EventKind::Received, 200);
    bob.actor = Actor {
        oid: Some("44444444-4444-4444-8444-444444444444".into()),
        upn: Some("bob@contoso.com".into()),
        ..Actor::default()
    };
    store.append(bob).await.unwrap();
    // op3: alice on B, completed (t 300, 301)
    let mut r = sample(ops[3], EventKind::Received, 300);
    r.partner_tenant_id = PARTNER_B.parse().ok();
    store.append(r).await.unwrap();
    let mut c = completed(ops[3], 301, false);
    c.partner_tenant_id = PARTNER_B.parse().ok();
    store.append(c).await.unwrap();
    (store, ops)
}

async fn seqs(store: &Store, filter: Filter) -> Vec<i64> {
    store
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test]
async fn list_filters_narrow_the_result_and_keep_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ops) = varied_log(&dir).await;
    let all = Filter::default;
    assert_eq!(seqs(&store, all()).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        seqs(
            &store,
            Filter {
                partner: Some(PARTNER_B.into()),
                ..all()
            }
        )
        .await,
        vec![3, 5, 6]
    );
    // Actor: upn ignoring case, oid, appid.
    for (actor, expected) in [
        ("alice@contoso.com", vec![1, 2, 5, 6]),
        ("ALICE@CONTOSO.COM", vec![1, 2, 5, 6]),
        ("44444444-4444-4444-8444-444444444444", vec![4]),
        ("33333333-3333-4333-8333-333333333333", vec![3]),
        ("22222222-2222-4222-8222-222222222222", vec![1, 2, 5, 6]),
        ("nobody", vec![]),
    ] {
        let got = seqs(
            &store,
            Filter {
                actor: Some(actor.into()),
                ..all()
            },
        )
        .await;
        assert_eq!(got, expected, "actor {actor}");
    }
    // since is inclusive, until exclusive.
    assert_eq!(
        seqs(
            &store,
            Filter {
                since: Some(at(100)),
                until: Some(at(300)),
                ..all()
            }
        )
        .await,
        vec![3, 4]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                kind: Some(EventKind::Completed),
                ..all()
            }
        )
        .await,
        vec![2, 6]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                decision: Some(Decision::Deny),
                ..all()
            }
        )
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                operation_id: Some(ops[3].into()),
                ..all()
            }
        )
        .await,
        vec![5, 6]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                after_seq: Some(2),
                limit: Some(2),
                ..all()
            }
        )
        .await,
        vec![3, 4]
    );
    // Filters combine.
    assert_eq!(
        seqs(
            &store,
            Filter {
                partner: Some(PARTNER_A.into()),
                actor: Some("alice@contoso.com".into()),
                kind: Some(EventKind::Received),
                ..all()
            }
        )
        .await,
        vec![1]
    );
    let op = store.operation(ops[0]).await.unwrap();
    assert_eq!(
        op.iter().map(|r| r.event.kind).collect::<Vec<_>>(),
        vec![EventKind::Received, EventKind::Completed]
    );
    assert!(store.operation(Uuid::now_v7()).await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn a_locked_database_fails_appends_promptly_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let busy = Duration::from_millis(200);
    let store = Store::open(
        &path,
        StoreOptions {
            busy_timeout: busy,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();

    let mut holder = raw(&path).await;
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    let started = Instant::now();
    let error = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 1))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        waited >= busy / 2 && waited < busy * 10,
        "failed after {waited:?} with a busy timeout of {busy:?}"
    );
    // Reads are not blocked by the writer's lock.
    assert_eq!(store.list(&Filter::default()).await.unwrap().len(), 1);
    holder.execute("COMMIT").await.unwrap();

    let next = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 2))
        .await
        .unwrap();
    assert_eq!(next.seq, 2, "the failed append wrote nothing");
    holder.close().await.unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(report.events, 2);
    assert!(report.first_broken.is_none());
    store.close().await;
}

#[tokio::test]
async fn a_failed_commit_writes_nothing_and_the_writer_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let first = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    // A deferred foreign key is checked at COMMIT: an insert of a "poison" event passes, its
    // transaction's COMMIT fails. This is the path a full disk or an I/O error takes.
    let mut conn = raw(&path).await;
    conn.execute(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
         CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED); \
         CREATE TRIGGER poison AFTER INSERT ON audit_events WHEN NEW.operation = 'poison' \
         BEGIN INSERT INTO child VALUES (42); END;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    let mut poison = sample(Uuid::now_v7(), EventKind::Received, 1);
    poison.operation = "poison".into();
    let error = store.append(poison).await.unwrap_err();
    assert!(error.to_string().contains("commit"), "{error}");

    let next = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 2))
        .await
        .unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(next.prev_hash, first.hash);
    let report = store.verify().await.unwrap();
    assert_eq!(report.events, 2);
    assert!(report.first_broken.is_none(), "{report:?}");
    store.close().await;
}

#[tokio::test]
async fn verify_sees_a_row_slipped_in_below_the_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = five_event_log(&dir).await;
    let mut conn = raw(&path).await;
    conn.execute(
        "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, event, prev_hash, hash) \
         SELECT 0, 'forged', operation_id, kind, time, event, prev_hash, hash \
         FROM audit_events WHERE seq = 1",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    let broken = verify_file(&path).await.first_broken.unwrap();
    assert_eq!((broken.seq, broken.event_id.as_str()), (0, "forged"));
}

#[tokio::test]
async fn close_commits_what_was_queued_and_later_appends_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let other = store.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .append(sample(Uuid::now_v7(), EventKind::Received, n))
                .await
        });
    }
    // Let every appender enqueue before closing (current-thread runtime: they run in order).
    tokio::task::yield_now().await;
    store.close().await;
    for r in tasks.join_all().await {
        r.unwrap();
    }
    let refused = other
        .append(sample(Uuid::now_v7(), EventKind::Received, 99))
        .await
        .unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");
    drop(other);
    assert_eq!(verify_file(&path).await.events, 20);
}

#[tokio::test]
async fn the_token_key_is_private_and_stable_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let fingerprint = store.token_hasher().hash("eyJhbGciOi.example.token");
    store.close().await;
    let key_file = dir.path().join("audit.db.token-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = open(&path).await;
    assert_eq!(
        store.token_hasher().hash("eyJhbGciOi.example.token"),
        fingerprint
    );
    assert_ne!(fingerprint, "eyJhbGciOi.example.token");
    store.close().await;
}

#[tokio::test]
async fn a_reader_on_a_missing_file_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let error = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains("audit.db"), "{error}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_reader_refuses_a_database_that_is_not_an_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let mut conn = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    conn.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
    conn.close().await.unwrap();
    let error = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not a syncgate audit log"),
        "{error}"
    );

    std::fs::write(&path, "plain text, not a database at all").unwrap();
    let error = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("not a syncgate audit log"),
        "{error}"
    );
}

#[tokio::test]
async fn a_reader_sees_what_a_running_store_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let reader = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let recorded = store
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    assert_eq!(
        reader.list(&Filter::default()).await.unwrap(),
        vec![recorded]
    );
    reader.close().await;
    store.close().await;
}

#[test]
fn store_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StoreReader>();
    assert_send_sync::<StoreError>();
    let _ = Arc::new(());
}

/// `-wal` or `-shm` beside `path`.
fn sidecar_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_its_wal_and_shm_and_the_token_key_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let files = [
        path.clone(),
        sidecar_file(&path, "-wal"),
        sidecar_file(&path, "-shm"),
        TokenHasher::key_path(&path),
    ];
    for file in &files {
        assert_eq!(mode(file), 0o600, "{} after open", file.display());
    }
    for n in 0..50 {
        store
            .append(sample(Uuid::now_v7(), EventKind::Received, n))
            .await
            .unwrap();
    }
    assert_eq!(store.list(&Filter::default()).await.unwrap().len(), 50);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{} after writes", file.display());
    }
    store.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn files_left_readable_by_others_are_tightened_when_the_store_opens() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let first = open(&path).await;
    first
        .append(sample(Uuid::now_v7(), EventKind::Received, 0))
        .await
        .unwrap();
    let files = [
        path.clone(),
        sidecar_file(&path, "-wal"),
        sidecar_file(&path, "-shm"),
        TokenHasher::key_path(&path),
    ];
    // As an earlier version (SQLite's default 0644) or a careless restore would have left them.
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = open(&path).await;
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    second.close().await;
    first.close().await;
}

#[tokio::test]
async fn closing_the_store_checkpoints_and_leaves_no_wal_or_shm_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let reader = store.reader().clone();
    for n in 0..30 {
        store
            .append(sample(Uuid::now_v7(), EventKind::Received, n))
            .await
            .unwrap();
    }
    // Readers hold connections of their own; they must be closed too.
    assert_eq!(reader.list(&Filter::default()).await.unwrap().len(), 30);
    assert_eq!(store.verify().await.unwrap().events, 30);
    assert!(sidecar_file(&path, "-wal").exists());
    store.close().await;
    assert!(!sidecar_file(&path, "-wal").exists(), "-wal left behind");
    assert!(!sidecar_file(&path, "-shm").exists(), "-shm left behind");
    // Everything is in the database file itself.
    assert_eq!(verify_file(&path).await.events, 30);
}

/// Canonical JSON and hash of a `denied` event as written by syncgate before `raw_request` and
/// `refusal_summary` existed (captured from that version's code).
const OLD_DENIED_EVENT: &str = r#"{"actor":{"app_displayname":null,"appid":null,"caller_address":null,"client_cert_subject":null,"idtyp":null,"oid":null,"roles":[],"scp":[],"tid":null,"token_hmac":null,"upn":null},"after":null,"api_version":"","approval_id":null,"before":null,"canonical_path":"/v1.0/policies/crosstenantaccesspolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitysynchronization","client_request_id":null,"decision":"deny","detail":"BadRequest: no","diff":null,"effect":null,"event_id":"01890a5d-ac96-774b-bcce-b302099a8058","kind":"denied","latency_ms":null,"method":"PATCH","operation":"sync_update","operation_id":"01890a5d-ac96-774b-bcce-b302099a8057","partner_state":null,"partner_tenant_id":null,"request_body":{"displayName":"x"},"request_id":null,"rule_results":[],"rules_version":null,"seq":1,"state_path":null,"time":"2025-03-04T05:06:07.123456Z","upstream_latency_ms":null,"upstream_status":null}"#;
const OLD_DENIED_HASH: &str = "6174d80f8965e783363380ecbbfb24e0f6a25b0e64911047f3152811f2bf1699";

#[tokio::test]
async fn events_written_before_the_refusal_fields_existed_hash_and_verify_as_before() {
    // The same event built by today's code seals to the same bytes and hash.
    let mut e = Event::new(
        Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap(),
        EventKind::Denied,
    );
    e.event_id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8058").unwrap();
    e.time = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456Z")
        .unwrap()
        .with_timezone(&Utc);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER_A}/identitysynchronization"
    );
    e.operation = "sync_update".into();
    e.request_body = Some(json!({"displayName": "x"}));
    e.decision = Some(Decision::Deny);
    e.detail = Some("BadRequest: no".into());
    let sealed = chain::Prepared::new(e)
        .unwrap()
        .seal(&mut chain::Head::empty());
    assert_eq!(sealed.canonical, OLD_DENIED_EVENT);
    assert_eq!(sealed.hash, OLD_DENIED_HASH);

    // A log holding the old row verifies, reads back, and takes new events after it.
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    open(&path).await.close().await;
    let mut conn = raw(&path).await;
    sqlx::query(
        "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, operation, decision, \
         event, prev_hash, hash) VALUES (1, ?, ?, 'denied', '2025-03-04T05:06:07.123456Z', \
         'sync_update', 'deny', ?, ?, ?)",
    )
    .bind("01890a5d-ac96-774b-bcce-b302099a8058")
    .bind("01890a5d-ac96-774b-bcce-b302099a8057")
    .bind(OLD_DENIED_EVENT)
    .bind(chain::GENESIS)
    .bind(OLD_DENIED_HASH)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let store = open(&path).await;
    let mut refusal = sample(Uuid::now_v7(), EventKind::Denied, 1);
    refusal.request_body = None;
    refusal.raw_request = Some(crate::audit::RawRequest::new("/v1.0/x", Some(b"{}")));
    store.append(refusal).await.unwrap();
    let events = store.list(&Filter::default()).await.unwrap();
    assert_eq!(events[0].event.raw_request, None);
    assert_eq!(
        events[0].event.request_body,
        Some(json!({"displayName": "x"}))
    );
    assert_eq!(
        events[1].event.raw_request.as_ref().unwrap().target,
        "/v1.0/x"
    );
    let report = store.verify().await.unwrap();
    assert_eq!((report.events, report.first_broken), (2, None));
    store.close().await;
}
