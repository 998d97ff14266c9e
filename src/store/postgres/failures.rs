//! PostgreSQL failing the way a production database does: a failover that leaves syncgate on a
//! read-only server, and a server out of connections. Appends must fail promptly as
//! [`StoreError::Unavailable`] (the proxy's 503, nothing forwarded), `ready()` must say so, and
//! both must recover by themselves once the database does, with the chain intact.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use super::super::test_log::{Backend, TestLog, postgres_server};
use super::super::{Event, EventKind, StoreError, StoreLocation, StoreOptions};

fn event() -> Event {
    let mut e = Event::new(Uuid::now_v7(), EventKind::Received);
    e.method = "PATCH".into();
    e.operation = "sync_update".into();
    e
}

fn database(log: &TestLog) -> String {
    match &log.location {
        StoreLocation::Postgres(url) => url.rsplit('/').next().unwrap().to_owned(),
        StoreLocation::Sqlite(_) => unreachable!("a PostgreSQL log"),
    }
}

/// Run `sql` from the server's `test` database, then end every session on `database` so the
/// change applies to the next one (as a failover or a restart would).
async fn as_admin_then_cut(database: &str, sql: &str) {
    let mut admin = PgConnection::connect(&format!("{}/test", postgres_server()))
        .await
        .unwrap();
    admin.execute(sql).await.unwrap();
    admin
        .execute(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let _ = admin.close().await;
}

fn short() -> StoreOptions {
    StoreOptions {
        statement_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    }
}

/// Appends fail with Unavailable within the statement timeout (plus slack), and `ready()` agrees.
async fn assert_unavailable(store: &super::super::Store) {
    let started = Instant::now();
    let error = store.append(event()).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Unavailable { .. }),
        "expected Unavailable, got {error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let problem = store.ready().await.unwrap_err();
    assert!(
        matches!(problem, StoreError::Unavailable { .. }),
        "{problem:?}"
    );
}

/// Appends succeed again within a few seconds (the writer opens a new session by itself).
async fn assert_recovers(store: &super::super::Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.append(event()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e:?}"),
        }
    }
    store.ready().await.unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(report.first_broken, None);
}

/// Appends work; `cut` (run as an administrator, every session of the database then ended)
/// makes them fail as Unavailable with readiness agreeing; `restore` makes both recover, with
/// nothing written by the failed appends.
async fn outage(cut: &str, restore: &str) {
    let log = TestLog::new(Backend::Postgres).await;
    let store = log
        .open_with(StoreOptions {
            token_key: Some(log.token_key()),
            ..short()
        })
        .await;
    store.append(event()).await.unwrap();
    let db = database(&log);
    as_admin_then_cut(&db, &cut.replace("{db}", &db)).await;
    assert_unavailable(&store).await;
    as_admin_then_cut(&db, &restore.replace("{db}", &db)).await;
    assert_recovers(&store).await;
    assert_eq!(store.verify().await.unwrap().events, 2);
    store.close().await;
}

/// A failover that leaves syncgate on a standby, or a database set read-only.
#[tokio::test]
async fn a_read_only_server_fails_appends_as_unavailable_until_it_is_writable_again() {
    outage(
        "ALTER DATABASE {db} SET default_transaction_read_only = on",
        "ALTER DATABASE {db} SET default_transaction_read_only = off",
    )
    .await;
}

/// CONNECTION LIMIT 0 refuses every new session of ordinary roles; the test role is a superuser,
/// which the limit does not bind, so the database refuses connections outright as well.
#[tokio::test]
async fn a_server_out_of_connections_fails_appends_as_unavailable_then_recovers() {
    outage(
        "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false CONNECTION LIMIT 0",
        "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1",
    )
    .await;
}
