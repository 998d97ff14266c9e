//! What only PostgreSQL has: TRUNCATE, a server database that may hold no log or someone
//! else's, migrations run separately, several replicas on one log, credentials and TLS.

use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::super::test_log::admin_connection;
use super::*;

#[tokio::test]
async fn truncate_of_the_log_and_any_change_to_store_meta_are_refused() {
    let log = five_event_log(Backend::Postgres).await;
    for statement in [
        "TRUNCATE audit_events",
        "UPDATE store_meta SET chain_format = 2",
        "DELETE FROM store_meta",
        "TRUNCATE store_meta",
    ] {
        let refused = log.try_sql(statement).await.expect_err(statement);
        assert!(refused.contains("append-only"), "{statement}: {refused}");
    }
    assert_eq!(assert_whole_chain(&log, &[]).await.events, 5);
    log.open().await.close().await;
}

#[tokio::test]
async fn a_database_without_a_log_is_not_found_and_someone_elses_is_corrupt() {
    let log = TestLog::new(Backend::Postgres).await;
    let error = StoreReader::open(&log.location, &log.options())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    assert!(
        error.to_string().contains(log.database().unwrap()),
        "{error}"
    );

    log.try_sql(
        "CREATE TABLE store_meta (id INTEGER PRIMARY KEY, application TEXT NOT NULL, \
         chain_format INTEGER NOT NULL); \
         INSERT INTO store_meta VALUES (1, 'another application', 1)",
    )
    .await
    .unwrap();
    let error = StoreReader::open(&log.location, &log.options())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("another application"), "{error}");
}

#[tokio::test]
async fn a_log_in_an_unknown_chain_format_is_refused_for_reading_and_writing() {
    let log = five_event_log(Backend::Postgres).await;
    log.tamper("UPDATE store_meta SET chain_format = 2").await;
    let error = StoreReader::open(&log.location, &log.options())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("format 2"), "{error}");
    let error = Store::connect(&log.location, log.options())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
}

#[tokio::test]
async fn without_migrate_an_empty_database_is_refused_until_migrations_run() {
    let log = TestLog::new(Backend::Postgres).await;
    let options = StoreOptions {
        migrate: false,
        ..log.options()
    };
    let error = Store::connect(&log.location, options.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    // Nothing was created: a reader still finds no log.
    let error = StoreReader::open(&log.location, &options)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");

    Store::migrate(&log.location, log.options()).await.unwrap();
    let store = log.open_with(options).await;
    let first = store.append(received(0)).await.unwrap();
    store.close().await;
    assert_whole_chain(&log, &[first]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_append_concurrently_to_one_contiguous_chain() {
    let log = TestLog::new(Backend::Postgres).await;
    let replicas = [log.open().await, log.open().await];
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..120 {
        let store = replicas[n as usize % 2].clone();
        tasks.spawn(async move { store.append(received(n)).await.unwrap() });
    }
    let acknowledged = tasks.join_all().await;
    for store in replicas {
        assert!(store.stats().groups_committed > 0, "{:?}", store.stats());
        store.close().await;
    }
    assert_eq!(assert_whole_chain(&log, &acknowledged).await.events, 120);
}

#[tokio::test]
async fn a_password_in_the_url_is_refused_without_echoing_it() {
    let log = TestLog::new(Backend::Postgres).await;
    let StoreLocation::Postgres(url) = &log.location else {
        unreachable!()
    };
    let with_password = StoreLocation::Postgres(url.replacen("postgres@", "postgres:s3cret@", 1));
    assert_ne!(&with_password, &log.location);
    let refused = Store::connect(&with_password, log.options())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("password"), "{refused}");
    assert!(!format!("{refused:?}").contains("s3cret"), "{refused:?}");
    let refused = StoreReader::open(&with_password, &log.options())
        .await
        .unwrap_err();
    assert!(!format!("{refused:?}").contains("s3cret"), "{refused:?}");
}

/// Play a PostgreSQL server that asks for a clear-text password, and return the password the
/// client sent. The server on this machine trusts every local connection, so it would accept
/// any password (or none) without looking: only a server that asks shows what is sent.
async fn password_sent_to(listener: TcpListener) -> String {
    let (mut socket, _) = listener.accept().await.unwrap();
    // The startup message, after an SSLRequest (refused with 'N') if the client asks for TLS.
    loop {
        let len = socket.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        socket.read_exact(&mut body).await.unwrap();
        if body[..4] == 80_877_103_i32.to_be_bytes() {
            socket.write_all(b"N").await.unwrap();
            continue;
        }
        break;
    }
    // AuthenticationCleartextPassword, then the client's PasswordMessage.
    socket
        .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
        .await
        .unwrap();
    assert_eq!(socket.read_u8().await.unwrap(), b'p');
    let len = socket.read_i32().await.unwrap() as usize;
    let mut password = vec![0; len - 4];
    socket.read_exact(&mut password).await.unwrap();
    assert_eq!(password.pop(), Some(0), "the password ends with a NUL");
    String::from_utf8(password).unwrap()
}

#[tokio::test]
async fn the_password_file_is_what_the_server_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "from the file\nnot this line\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(password_sent_to(listener));
    let location = StoreLocation::Postgres(format!(
        "postgres://syncgate@127.0.0.1:{port}/audit?sslmode=disable"
    ));
    let options = StoreOptions {
        token_key: Some(dir.path().join("token-key")),
        password_file: Some(password_file),
        statement_timeout: Duration::from_secs(5),
        ..StoreOptions::default()
    };
    // The pretend server hangs up after the password: the connection fails, as it should.
    let error = Store::connect(&location, options).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(server.await.unwrap(), "from the file");
}

/// Whether the server on this machine has TLS on (`SHOW ssl`).
async fn server_has_ssl() -> bool {
    let mut admin = admin_connection().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    ssl == "on"
}

/// How many of the store's sessions on `log`'s database are encrypted.
async fn encrypted_sessions(log: &TestLog) -> i64 {
    let mut admin = admin_connection().await;
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = $1 AND a.application_name = 'syncgate' AND s.ssl",
    )
    .bind(log.database().unwrap())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    count
}

#[tokio::test]
async fn sslmode_require_uses_tls_and_verify_full_without_the_servers_ca_is_refused() {
    let log = TestLog::new(Backend::Postgres).await;
    let StoreLocation::Postgres(url) = &log.location else {
        unreachable!()
    };
    let with = |mode: &str| StoreLocation::Postgres(format!("{url}?sslmode={mode}"));
    if !server_has_ssl().await {
        eprintln!(
            "the PostgreSQL server has ssl off: only checking that sslmode=require is refused"
        );
        let refused = Store::connect(&with("require"), log.options()).await;
        assert!(refused.is_err());
        return;
    }
    let store = Store::connect(&with("require"), log.options())
        .await
        .unwrap();
    let first = store.append(received(0)).await.unwrap();
    assert!(encrypted_sessions(&log).await >= 1);
    store.close().await;
    assert_whole_chain(&log, &[first]).await;

    // The server's certificate is not signed by a CA this client was given (none was).
    let refused = Store::connect(&with("verify-full"), log.options())
        .await
        .unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");
    let reason = format!("{refused:?}").to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("tls"),
        "{refused:?}"
    );
}
