//! A fresh audit log on either backend, for the store's tests: a SQLite file in a temporary
//! folder, or a PostgreSQL database of its own on the server the tests use
//! (`SYNCGATE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432`, trust auth), created
//! for the test and dropped after it, even when the test panics.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

use super::{Store, StoreLocation, StoreOptions, StoreReader};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use, without a database.
pub(crate) fn postgres_server() -> String {
    std::env::var("SYNCGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// One test's log: where it is, and the folder for its files (the token key, a SQLite file).
pub(crate) struct TestLog {
    pub(crate) location: StoreLocation,
    pub(crate) dir: TempDir,
    /// The PostgreSQL database to drop at the end.
    database: Option<String>,
}

impl TestLog {
    pub(crate) async fn new(backend: Backend) -> TestLog {
        let dir = tempfile::tempdir().unwrap();
        let (location, database) = match backend {
            Backend::Sqlite => (StoreLocation::Sqlite(dir.path().join("audit.db")), None),
            Backend::Postgres => {
                let name = format!("syncgate_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = admin_connection().await;
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let _ = admin.close().await;
                let url = format!("{}/{name}", postgres_server());
                (StoreLocation::Postgres(url), Some(name))
            }
        };
        TestLog {
            location,
            dir,
            database,
        }
    }

    /// Options with the token key in the test's folder.
    pub(crate) fn options(&self) -> StoreOptions {
        StoreOptions {
            token_key: Some(self.token_key()),
            checkpoints: super::CheckpointOptions {
                key: Some(self.checkpoint_key()),
                ..super::CheckpointOptions::default()
            },
            ..StoreOptions::default()
        }
    }

    pub(crate) fn token_key(&self) -> PathBuf {
        self.dir.path().join("token-key")
    }

    /// The checkpoint signing key, in the test's folder on both backends.
    pub(crate) fn checkpoint_key(&self) -> PathBuf {
        self.dir.path().join("checkpoint-key")
    }

    pub(crate) async fn open(&self) -> Store {
        self.open_with(self.options()).await
    }

    pub(crate) async fn open_with(&self, options: StoreOptions) -> Store {
        Store::connect(&self.location, options).await.unwrap()
    }

    pub(crate) async fn reader(&self) -> StoreReader {
        StoreReader::open(&self.location, &self.options())
            .await
            .unwrap()
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub(crate) fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// Run `sql` on a plain connection, the append-only triggers in force: what an ordinary
    /// client of the database may or may not do. The error as text when the database refuses.
    pub(crate) async fn try_sql(&self, sql: &str) -> Result<(), String> {
        let result = match &self.location {
            StoreLocation::Sqlite(path) => {
                let mut conn = super::sqlite::raw_connection(path).await;
                let result = conn.execute(sql).await.map(drop);
                let _ = conn.close().await;
                result
            }
            StoreLocation::Postgres(url) => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                let result = conn.execute(sql).await.map(drop);
                let _ = conn.close().await;
                result
            }
        };
        result.map_err(|e| e.to_string())
    }

    /// Run `sql` as someone with direct write access to the database would, the append-only
    /// triggers switched off (tampering tests).
    pub(crate) async fn tamper(&self, sql: &str) {
        match &self.location {
            StoreLocation::Sqlite(path) => {
                let mut conn = super::sqlite::raw_connection(path).await;
                conn.execute(
                    "DROP TRIGGER IF EXISTS audit_events_no_update; \
                     DROP TRIGGER IF EXISTS audit_events_no_delete; \
                     DROP TRIGGER IF EXISTS checkpoints_no_update; \
                     DROP TRIGGER IF EXISTS checkpoints_no_delete;",
                )
                .await
                .unwrap();
                conn.execute(sql).await.unwrap();
                let _ = conn.close().await;
            }
            StoreLocation::Postgres(url) => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                // A superuser can skip ordinary triggers for its session.
                conn.execute("SET session_replication_role = replica")
                    .await
                    .unwrap();
                conn.execute(sql).await.unwrap();
                let _ = conn.close().await;
            }
        }
    }
}

/// A connection to the server's `test` database, for what a test does to its own database from
/// outside it (terminating sessions, refusing connections).
pub(crate) async fn admin_connection() -> PgConnection {
    PgConnection::connect(&format!("{}/test", postgres_server()))
        .await
        .expect("PostgreSQL for the store tests (127.0.0.1:5432; .ci/run starts it)")
}

impl Drop for TestLog {
    fn drop(&mut self) {
        let Some(name) = self.database.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread of its own
        // with its own runtime drops the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = admin_connection().await;
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                let _ = admin.close().await;
            });
        });
        let _ = dropped.join();
    }
}
