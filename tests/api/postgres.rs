//! The PostgreSQL backend against the real server on this machine (127.0.0.1:5432, user
//! `postgres`, trust auth; `SYNCGATE_TEST_POSTGRES` overrides the server URL). Each test creates
//! its own database and drops it at the end.

use std::process::Command;

use sqlx::{Connection, PgConnection};

use crate::harness::syncgate_bin;

/// The server's URL, without a database.
pub(crate) fn server() -> String {
    std::env::var("SYNCGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped with it.
pub(crate) struct TestDatabase {
    pub(crate) name: String,
}

impl TestDatabase {
    pub(crate) async fn create() -> Self {
        let name = format!("syncgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{}/test", server()))
            .await
            .expect("PostgreSQL at 127.0.0.1:5432 (the tests need it; .ci/run starts it)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        TestDatabase { name }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    pub(crate) async fn drop_now(self) {
        let mut admin = PgConnection::connect(&format!("{}/test", server()))
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

fn migrate(db: &str) -> std::process::Output {
    Command::new(syncgate_bin())
        .args(["migrate", "--db", db])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap()
}

const ROW: &str = "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, event, \
                   prev_hash, hash) VALUES (1, 'e', 'o', 'received', 't', '{}', 'p', 'h')";

#[tokio::test]
async fn migrate_creates_an_append_only_log_on_postgres_and_can_run_again() {
    let db = TestDatabase::create().await;
    for run in 0..2 {
        let out = migrate(&db.url());
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = PgConnection::connect(&db.url()).await.unwrap();
    let (application, format): (String, i32) =
        sqlx::query_as("SELECT application, chain_format FROM store_meta")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((application.as_str(), format), ("syncgate audit log", 1));
    sqlx::query(ROW).execute(&mut conn).await.unwrap();
    for statement in [
        "UPDATE audit_events SET hash = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE store_meta SET chain_format = 2",
        "DELETE FROM store_meta",
        "TRUNCATE store_meta",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the row is still there");
    conn.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test]
async fn a_password_in_the_database_url_is_refused() {
    let db = TestDatabase::create().await;
    let with_password = db.url().replacen("postgres@", "postgres:secret@", 1);
    let out = migrate(&with_password);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PGPASSWORD"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is not echoed: {stderr}"
    );
    db.drop_now().await;
}

#[test]
fn migrate_creates_a_sqlite_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    for db in [
        path.display().to_string(),
        format!("sqlite://{}", path.display()),
    ] {
        let out = migrate(&db);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let verify = Command::new(syncgate_bin())
        .args(["audit", "verify", "--db"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
