//! What only SQLite has: a file and its `-wal`/`-shm` companions, their modes, SQLite's own
//! locks, and files that are missing or are not databases. (PostgreSQL's equivalents, a held
//! lock and a database without a log, are in `postgres_only.rs`.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use super::*;

/// The log's file.
fn file(log: &TestLog) -> &Path {
    match &log.location {
        StoreLocation::Sqlite(path) => path,
        StoreLocation::Postgres(_) => unreachable!("a SQLite test on PostgreSQL"),
    }
}

/// The store as `syncgate serve` opens a file: the token key beside it.
async fn open_default(log: &TestLog) -> Store {
    Store::open(file(log), StoreOptions::default())
        .await
        .unwrap()
}

/// `-wal` or `-shm` beside `path`.
fn sidecar_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[tokio::test]
async fn a_locked_database_fails_appends_promptly_then_recovers() {
    let log = TestLog::new(Backend::Sqlite).await;
    let busy = Duration::from_millis(200);
    let store = log
        .open_with(StoreOptions {
            busy_timeout: busy,
            ..log.options()
        })
        .await;
    let first = store.append(received(0)).await.unwrap();

    let mut holder = super::super::sqlite::raw_connection(file(&log)).await;
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    let started = Instant::now();
    let error = store.append(received(1)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        waited >= busy / 2 && waited < busy * 10,
        "failed after {waited:?} with a busy timeout of {busy:?}"
    );
    // Reads are not blocked by the writer's lock.
    assert_eq!(store.list(&Filter::default()).await.unwrap().len(), 1);
    holder.execute("COMMIT").await.unwrap();

    let next = store.append(received(2)).await.unwrap();
    assert_eq!(next.seq, 2, "the failed append wrote nothing");
    holder.close().await.unwrap();
    store.close().await;
    assert_whole_chain(&log, &[first, next]).await;
}

#[tokio::test]
async fn a_reader_on_a_missing_file_is_not_found_and_creates_nothing() {
    let log = TestLog::new(Backend::Sqlite).await;
    let error = StoreReader::open(&log.location, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains("audit.db"), "{error}");
    assert_eq!(std::fs::read_dir(log.dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_reader_refuses_a_database_that_is_not_an_audit_log() {
    let log = TestLog::new(Backend::Sqlite).await;
    let path = file(&log);
    let mut conn = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    conn.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
    conn.close().await.unwrap();
    let error = StoreReader::open(&log.location, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not a syncgate audit log"),
        "{error}"
    );

    std::fs::write(path, "plain text, not a database at all").unwrap();
    let error = StoreReader::open(&log.location, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not a syncgate audit log"),
        "{error}"
    );
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

/// The database file, its `-wal` and `-shm`, and the token key beside it.
fn log_files(path: &Path) -> [PathBuf; 4] {
    [
        path.to_owned(),
        sidecar_file(path, "-wal"),
        sidecar_file(path, "-shm"),
        TokenHasher::key_path(path),
    ]
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_its_wal_and_shm_and_the_token_key_are_private() {
    let log = TestLog::new(Backend::Sqlite).await;
    let store = open_default(&log).await;
    let files = log_files(file(&log));
    for file in &files {
        assert_eq!(mode(file), 0o600, "{} after open", file.display());
    }
    for n in 0..50 {
        store.append(received(n)).await.unwrap();
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
    let log = TestLog::new(Backend::Sqlite).await;
    let first = open_default(&log).await;
    first.append(received(0)).await.unwrap();
    let files = log_files(file(&log));
    // As an earlier version (SQLite's default 0644) or a careless restore would have left them.
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = open_default(&log).await;
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    second.close().await;
    first.close().await;
}

#[tokio::test]
async fn closing_the_store_checkpoints_and_leaves_no_wal_or_shm_behind() {
    let log = TestLog::new(Backend::Sqlite).await;
    let path = file(&log);
    let store = open_default(&log).await;
    let reader = store.reader().clone();
    for n in 0..30 {
        store.append(received(n)).await.unwrap();
    }
    // Readers hold connections of their own; they must be closed too.
    assert_eq!(reader.list(&Filter::default()).await.unwrap().len(), 30);
    assert_eq!(store.verify().await.unwrap().events, 30);
    assert!(sidecar_file(path, "-wal").exists());
    store.close().await;
    assert!(!sidecar_file(path, "-wal").exists(), "-wal left behind");
    assert!(!sidecar_file(path, "-shm").exists(), "-shm left behind");
    // Everything is in the database file itself.
    assert_eq!(verify(&log).await.events, 30);
}
