//! Copying a log between backends (`syncgate audit copy`): the chain and its head intact,
//! resumable, and never into a database that holds a different log.

use super::*;

fn other(backend: Backend) -> Backend {
    match backend {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }
}

/// A closed log on `backend` with `events` events.
async fn log_of(backend: Backend, events: i64) -> TestLog {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    for n in 0..events {
        store.append(received(n)).await.unwrap();
    }
    store.close().await;
    log
}

async fn a_copy_to_the_other_backend_keeps_the_head_and_resumes(backend: Backend) {
    let source = log_of(backend, 12).await;
    let destination = TestLog::new(other(backend)).await;
    let from = source.reader().await;
    let expected = verify(&source).await;
    let report = copy(&from, &destination.location, &destination.options())
        .await
        .unwrap();
    assert_eq!(
        (report.copied, report.already_there, &report.head),
        (12, 0, &expected.head)
    );
    assert_eq!(verify(&destination).await, expected);
    assert_eq!(all_events(&destination).await, all_events(&source).await);

    // More events on the source: a second run copies only those; a third copies nothing.
    let store = source.open().await;
    store.append(received(12)).await.unwrap();
    store.close().await;
    let again = copy(&from, &destination.location, &destination.options())
        .await
        .unwrap();
    assert_eq!((again.copied, again.already_there), (1, 12));
    let rerun = copy(&from, &destination.location, &destination.options())
        .await
        .unwrap();
    assert_eq!((rerun.copied, rerun.already_there), (0, 13));
    assert_eq!(verify(&destination).await, verify(&source).await);
    from.close().await;
}
on_both_backends!(a_copy_to_the_other_backend_keeps_the_head_and_resumes);

async fn a_copy_into_a_different_log_is_refused_and_changes_nothing(backend: Backend) {
    let source = log_of(backend, 5).await;
    // A destination with a history of its own, shorter and then longer than the source's.
    for (events, why) in [(3, "different log"), (8, "more than the source")] {
        let destination = log_of(other(backend), events).await;
        let before = verify(&destination).await;
        let from = source.reader().await;
        let refused = copy(&from, &destination.location, &destination.options())
            .await
            .unwrap_err();
        from.close().await;
        assert!(
            matches!(refused, StoreError::Rejected { .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains(why), "{refused}");
        assert_eq!(verify(&destination).await, before);
    }
}
on_both_backends!(a_copy_into_a_different_log_is_refused_and_changes_nothing);

#[tokio::test]
async fn concurrent_appends_on_postgres_chain_without_gaps_and_copy_to_sqlite_and_back() {
    let pg = TestLog::new(Backend::Postgres).await;
    let store = pg.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..40 {
        let store = store.clone();
        tasks.spawn(async move { store.append(received(n)).await.unwrap() });
    }
    let acknowledged = tasks.join_all().await;
    store.close().await;
    let report = assert_whole_chain(&pg, &acknowledged).await;
    assert_eq!(report.events, 40);

    // PostgreSQL → SQLite → a second PostgreSQL database: the head never changes.
    let file = TestLog::new(Backend::Sqlite).await;
    let again = TestLog::new(Backend::Postgres).await;
    let source = pg.reader().await;
    let copied = copy(&source, &file.location, &file.options())
        .await
        .unwrap();
    assert_eq!(
        (copied.copied, copied.head.clone()),
        (40, report.head.clone())
    );
    let back = copy(&file.reader().await, &again.location, &again.options())
        .await
        .unwrap();
    assert_eq!(back.head, report.head);
    assert_eq!(verify(&again).await, report);
    source.close().await;
}
