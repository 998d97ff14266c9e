//! Appending: the chain, groups, duplicates, closing, and the token key.

use super::*;

async fn appended_events_form_a_contiguous_verified_chain(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let op = Uuid::now_v7();
    let first = store
        .append(sample(op, EventKind::Received, 0))
        .await
        .unwrap();
    let second = store.append(completed(op, 1, true)).await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.prev_hash, super::super::chain::GENESIS);
    assert_eq!(second.prev_hash, first.hash);

    let report = store.verify().await.unwrap();
    assert_eq!(
        report,
        VerifyReport {
            events: 2,
            head: Some(second.hash.clone()),
            first_broken: None,
            operations_index: None,
            tree: None,
            checkpoints_checked: 0,
            tree_root: tree_root(&[first.clone(), second.clone()]),
            roots_at: Default::default(),
        }
    );
    // What is read back is exactly what append returned (time truncated to microseconds).
    let listed = store.list(&Filter::default()).await.unwrap();
    assert_eq!(listed, vec![first.clone(), second]);
    assert_eq!(first.event.time.timestamp_subsec_nanos(), 123_456_000);
    store.close().await;
}
on_both_backends!(appended_events_form_a_contiguous_verified_chain);

async fn an_empty_log_verifies_with_no_head(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let report = store.verify().await.unwrap();
    assert_eq!(
        report,
        VerifyReport {
            events: 0,
            head: None,
            first_broken: None,
            operations_index: None,
            tree: None,
            checkpoints_checked: 0,
            tree_root: crate::audit::merkle::empty_root(),
            roots_at: Default::default(),
        }
    );
    store.close().await;
}
on_both_backends!(an_empty_log_verifies_with_no_head);

async fn the_chain_continues_across_reopening(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let first = store.append(received(0)).await.unwrap();
    store.close().await;
    let store = log.open().await;
    let second = store.append(received(1)).await.unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.prev_hash, first.hash);
    store.close().await;
    assert_whole_chain(&log, &[first, second]).await;
}
on_both_backends!(the_chain_continues_across_reopening);

// Current-thread runtime: every spawned appender queues its event before the writer task gets
// to run again, so grouping is deterministic rather than a matter of timing.
async fn concurrent_appends_commit_in_fewer_groups_than_events(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let events = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..events {
        let store = store.clone();
        tasks.spawn(async move { store.append(received(n)).await });
    }
    let acknowledged: Vec<Recorded> = tasks
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let stats = store.stats();
    assert_eq!(stats.events_committed, events as u64);
    assert!(
        stats.groups_committed < events as u64 / 10,
        "{} groups for {events} events",
        stats.groups_committed
    );
    store.close().await;
    let report = assert_whole_chain(&log, &acknowledged).await;
    assert_eq!(report.events, events as u64);
}
on_both_backends!(concurrent_appends_commit_in_fewer_groups_than_events);

async fn a_group_never_exceeds_the_configured_size(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log
        .open_with(StoreOptions {
            max_group: 16,
            ..log.options()
        })
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let store = store.clone();
        tasks.spawn(async move { store.append(received(n)).await });
    }
    for r in tasks.join_all().await {
        r.unwrap();
    }
    assert!(store.stats().groups_committed >= 7, "{:?}", store.stats());
    store.close().await;
    assert_eq!(assert_whole_chain(&log, &[]).await.events, 100);
}
on_both_backends!(a_group_never_exceeds_the_configured_size);

async fn appends_from_many_threads_stay_contiguous_and_verifiable(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..25 {
                acknowledged.push(store.append(received(t * 100 + n)).await.unwrap());
            }
            acknowledged
        });
    }
    let acknowledged: Vec<Recorded> = tasks.join_all().await.into_iter().flatten().collect();
    store.close().await;
    assert_eq!(assert_whole_chain(&log, &acknowledged).await.events, 200);
}
on_both_backends!(
    appends_from_many_threads_stay_contiguous_and_verifiable,
    flavor = "multi_thread",
    worker_threads = 2
);

async fn a_duplicate_event_id_fails_alone_and_spares_its_group(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let original = received(0);
    store.append(original.clone()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=5 {
        let store = store.clone();
        let event = if n == 3 {
            original.clone()
        } else {
            received(n)
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
    store.close().await;
    assert_eq!(assert_whole_chain(&log, &[]).await.events, 5);
}
on_both_backends!(a_duplicate_event_id_fails_alone_and_spares_its_group);

/// SQL that makes the COMMIT of a transaction holding an event with operation `poison` fail:
/// a deferred foreign key is only checked at COMMIT, the path a full disk or an I/O error takes.
fn poison_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED); \
             CREATE TRIGGER poison AFTER INSERT ON audit_events WHEN NEW.operation = 'poison' \
             BEGIN INSERT INTO child VALUES (42); END;"
        }
        Backend::Postgres => {
            "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED); \
             CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO child VALUES (42); RETURN NEW; END; $$; \
             CREATE TRIGGER poison AFTER INSERT ON audit_events FOR EACH ROW \
             WHEN (NEW.operation = 'poison') EXECUTE FUNCTION poison();"
        }
    }
}

async fn a_failed_commit_writes_nothing_and_the_writer_keeps_serving(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let first = store.append(received(0)).await.unwrap();
    log.try_sql(poison_sql(backend)).await.unwrap();

    let mut poison = received(1);
    poison.operation = "poison".into();
    let error = store.append(poison).await.unwrap_err();
    assert!(error.to_string().contains("commit"), "{error}");

    let next = store.append(received(2)).await.unwrap();
    assert_eq!(next.seq, 2);
    assert_eq!(next.prev_hash, first.hash);
    store.close().await;
    assert_eq!(assert_whole_chain(&log, &[first, next]).await.events, 2);
}
on_both_backends!(a_failed_commit_writes_nothing_and_the_writer_keeps_serving);

async fn close_commits_what_was_queued_and_later_appends_are_unavailable(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let other = store.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.append(received(n)).await });
    }
    // Let every appender enqueue before closing (current-thread runtime: they run in order).
    tokio::task::yield_now().await;
    store.close().await;
    let acknowledged: Vec<Recorded> = tasks
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let refused = other.append(received(99)).await.unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");
    drop(other);
    assert_eq!(assert_whole_chain(&log, &acknowledged).await.events, 20);
}
on_both_backends!(close_commits_what_was_queued_and_later_appends_are_unavailable);

async fn the_token_key_is_private_and_stable_across_reopening(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let fingerprint = store.token_hasher().hash("eyJhbGciOi.example.token");
    store.close().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(log.token_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = log.open().await;
    assert_eq!(
        store.token_hasher().hash("eyJhbGciOi.example.token"),
        fingerprint
    );
    assert_ne!(fingerprint, "eyJhbGciOi.example.token");
    store.close().await;
}
on_both_backends!(the_token_key_is_private_and_stable_across_reopening);
