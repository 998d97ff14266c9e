//! The same log on both backends: appends chain alike, and a copy keeps the head.

use uuid::Uuid;

use super::test_log::{Backend, TestLog};
use super::*;

fn event(n: i64) -> Event {
    let mut e = Event::new(Uuid::now_v7(), EventKind::Received);
    e.method = "PATCH".into();
    e.operation = "sync_update".into();
    e.detail = Some(format!("event {n}"));
    e
}

#[tokio::test]
async fn concurrent_appends_on_postgres_chain_without_gaps_and_copy_to_sqlite_and_back() {
    let pg = TestLog::new(Backend::Postgres).await;
    let store = pg.open().await;
    let appends = (0..40).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.append(event(n)).await.unwrap().seq })
    });
    let mut seqs = Vec::new();
    for append in appends {
        seqs.push(append.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    let report = store.verify().await.unwrap();
    assert_eq!((report.events, &report.first_broken), (40, &None));
    store.close().await;

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
    assert_eq!(again.reader().await.verify().await.unwrap(), report);
    // Running it again copies nothing and changes nothing.
    let rerun = copy(&source, &file.location, &file.options())
        .await
        .unwrap();
    assert_eq!((rerun.copied, rerun.already_there), (0, 40));
}
