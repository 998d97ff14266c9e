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

/// The test server's host, port and user.
fn test_server() -> (String, u16, String) {
    let server: sqlx::postgres::PgConnectOptions =
        super::super::test_log::postgres_server().parse().unwrap();
    (
        server.get_host().to_owned(),
        server.get_port(),
        server.get_username().to_owned(),
    )
}

/// A TCP relay to the test server that can go silent: while frozen it passes nothing on and
/// closes nothing, as a network partition or a server that vanished looks from the client.
struct Relay {
    port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let (host, server_port, _) = test_server();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect((host.as_str(), server_port))
                    .await
                    .unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, watch.clone()));
                tokio::spawn(pump(server_read, client_write, watch.clone()));
            }
        });
        Relay { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

/// Copy `from` to `to`, holding whatever arrives while the relay is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err()
            || to.write_all(&buffer[..n]).await.is_err()
        {
            return;
        }
    }
}

#[tokio::test]
async fn a_server_gone_silent_fails_appends_within_the_timeout_and_they_resume_after() {
    let log = TestLog::new(Backend::Postgres).await;
    let relay = Relay::start().await;
    let through_relay = StoreLocation::Postgres(format!(
        "postgres://{}@127.0.0.1:{}/{}",
        test_server().2,
        relay.port,
        log.database().unwrap()
    ));
    let timeout = Duration::from_millis(500);
    let store = Store::connect(
        &through_relay,
        StoreOptions {
            statement_timeout: timeout,
            ..log.options()
        },
    )
    .await
    .unwrap();
    let first = store.append(received(0)).await.unwrap();

    relay.freeze(true);
    let started = Instant::now();
    let answer = tokio::time::timeout(timeout * 20, store.append(received(1))).await;
    let waited = started.elapsed();
    let error = answer
        .unwrap_or_else(|_| panic!("the append hung past {:?}", timeout * 20))
        .unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(waited < timeout * 6, "failed after {waited:?}");
    let not_ready = tokio::time::timeout(timeout * 20, store.ready())
        .await
        .expect("readiness answers while the server is silent");
    assert!(not_ready.unwrap_err().is_unavailable());

    // The partition heals: the writer's next group runs on a new session.
    relay.freeze(false);
    let next = store.append(received(2)).await.unwrap();
    store.ready().await.unwrap();
    store.close().await;
    let report = assert_whole_chain(&log, &[first, next]).await;
    // The cut-off append either never reached the server or committed before the silence.
    assert!((2..=3).contains(&report.events), "{report:?}");
}

#[tokio::test]
async fn opening_a_log_on_a_server_gone_silent_fails_instead_of_hanging() {
    let log = TestLog::new(Backend::Postgres).await;
    log.open().await.close().await;
    let relay = Relay::start().await;
    let through_relay = StoreLocation::Postgres(format!(
        "postgres://{}@127.0.0.1:{}/{}",
        test_server().2,
        relay.port,
        log.database().unwrap()
    ));
    let timeout = Duration::from_millis(500);
    let options = StoreOptions {
        statement_timeout: timeout,
        migrate: false,
        ..log.options()
    };
    // Connected, then silent: the start-up check of the log and the reader's first query.
    relay.freeze(true);
    let started = Instant::now();
    let opened = tokio::time::timeout(timeout * 20, Store::connect(&through_relay, options))
        .await
        .unwrap_or_else(|_| panic!("opening hung past {:?}", timeout * 20));
    let error = opened.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        started.elapsed() < timeout * 8,
        "failed after {:?}",
        started.elapsed()
    );
}
