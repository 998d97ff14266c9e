//! PostgreSQL going away under a running store: its sessions killed, the database refusing
//! connections, the chain lock held past the statement timeout. Every append fails promptly
//! with [`StoreError::Unavailable`] (the proxy's 503) or succeeds, nothing acknowledged is lost,
//! the chain never forks, and the store recovers by itself.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use super::super::postgres::CHAIN_LOCK;
use super::super::test_log::admin_connection;
use super::*;

/// Terminate every session the store holds on `log`'s database (its writer and its readers,
/// all named `syncgate`), waiting until they are gone; how many there were.
async fn terminate_store_sessions(log: &TestLog) -> i64 {
    let mut admin = admin_connection().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'syncgate') AS t",
    )
    .bind(log.database().unwrap())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    killed
}

/// Allow or refuse new connections to `log`'s database.
async fn allow_connections(log: &TestLog, allow: bool) {
    let mut admin = admin_connection().await;
    admin
        .execute(
            format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                log.database().unwrap()
            )
            .as_str(),
        )
        .await
        .unwrap();
    admin.close().await.unwrap();
}

/// An append's outcome when the server may just have dropped the session: recorded, or
/// refused as Unavailable (never another error, never a hang).
fn recorded_or_unavailable(result: Result<Recorded, StoreError>) -> Option<Recorded> {
    match result {
        Ok(recorded) => Some(recorded),
        Err(e) => {
            assert!(e.is_unavailable(), "{e:?}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writers_session_loses_nothing_and_the_writer_reconnects() {
    let log = TestLog::new(Backend::Postgres).await;
    let store = log.open().await;
    let mut acknowledged = Vec::new();
    for n in 0..3 {
        acknowledged.push(store.append(received(n)).await.unwrap());
    }

    // Between appends: the writer finds its session gone at the next BEGIN, before anything of
    // that group was sent, and carries on on a new one.
    assert!(terminate_store_sessions(&log).await >= 1);
    for n in 3..6 {
        acknowledged.push(store.append(received(n)).await.unwrap());
    }

    // In the middle of groups: appenders in flight while the sessions are killed. A group cut
    // off fails as Unavailable; none is half-written.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut results = Vec::new();
            for n in 0..60 {
                results.push(store.append(received(1000 * t + n)).await);
            }
            results
        });
    }
    let before = store.stats().events_committed;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().events_committed < before + 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at_kill = store.stats().events_committed - before;
    assert!(terminate_store_sessions(&log).await >= 1);
    let after_kill = store.stats().events_committed - before;
    let in_flight: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    let failed = in_flight.iter().filter(|r| r.is_err()).count();
    acknowledged.extend(in_flight.into_iter().filter_map(recorded_or_unavailable));
    eprintln!(
        "{failed} of 480 in-flight appends failed when their session was killed \
         ({at_kill} committed before, {after_kill} when it returned)"
    );

    // The writer has reconnected.
    for n in 9000..9003 {
        acknowledged.push(store.append(received(n)).await.unwrap());
    }
    store.ready().await.unwrap();
    store.close().await;
    // A failed append may still have committed (its COMMIT went through, the answer was lost):
    // the log may hold more than was acknowledged, never less, and never a fork.
    let report = assert_whole_chain(&log, &acknowledged).await;
    assert!(report.events >= acknowledged.len() as u64);
}

#[tokio::test]
async fn a_database_refusing_connections_fails_appends_promptly_until_it_accepts_them_again() {
    let log = TestLog::new(Backend::Postgres).await;
    let timeout = Duration::from_millis(500);
    let store = log
        .open_with(StoreOptions {
            statement_timeout: timeout,
            ..log.options()
        })
        .await;
    let first = store.append(received(0)).await.unwrap();

    allow_connections(&log, false).await;
    terminate_store_sessions(&log).await;
    for n in 1..3 {
        let started = Instant::now();
        let error = store.append(received(n)).await.unwrap_err();
        let waited = started.elapsed();
        assert!(error.is_unavailable(), "{error:?}");
        assert!(waited < timeout * 4, "failed after {waited:?}");
    }
    let not_ready = store.ready().await.unwrap_err();
    assert!(not_ready.is_unavailable(), "{not_ready:?}");

    allow_connections(&log, true).await;
    let next = store.append(received(3)).await.unwrap();
    assert_eq!(next.seq, 2, "the refused appends wrote nothing");
    store.ready().await.unwrap();
    store.close().await;
    assert_whole_chain(&log, &[first, next]).await;
}

#[tokio::test]
async fn a_chain_lock_held_past_the_statement_timeout_fails_the_append_then_it_succeeds() {
    let log = TestLog::new(Backend::Postgres).await;
    let timeout = Duration::from_millis(500);
    let store = log
        .open_with(StoreOptions {
            statement_timeout: timeout,
            ..log.options()
        })
        .await;
    let first = store.append(received(0)).await.unwrap();

    // Another replica stuck mid-group, as far as this one can tell.
    let StoreLocation::Postgres(url) = &log.location else {
        unreachable!()
    };
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let error = store.append(received(1)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        waited >= timeout / 2 && waited < timeout * 4,
        "failed after {waited:?} with a statement timeout of {timeout:?}"
    );
    // Reads do not take the chain lock.
    assert_eq!(
        store.list(&Filter::default()).await.unwrap(),
        std::slice::from_ref(&first)
    );
    holder.execute("COMMIT").await.unwrap();
    holder.close().await.unwrap();

    let next = store.append(received(2)).await.unwrap();
    assert_eq!(next.seq, 2, "the failed append wrote nothing");
    store.close().await;
    assert_whole_chain(&log, &[first, next]).await;
}
