//! The PostgreSQL backend against the real server on this machine (127.0.0.1:5432, user
//! `postgres`, trust auth; `SYNCGATE_TEST_POSTGRES` overrides the server URL). Each test creates
//! its own database and drops it at the end.

use std::path::Path;
use std::process::Command;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::governed::{PARTNER, seed_partner, sync_url};
use crate::harness::{TestProxy, spawn_proxy, syncgate_bin};
use crate::helpers::{TestClient, spawn_emulator};

/// The server's URL, without a database.
pub(crate) fn server() -> String {
    std::env::var("SYNCGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of its own for one test, dropped with it: by `drop_now`, or when the value is
/// dropped (a test that panicked), so a failing run leaves nothing behind on the server.
pub(crate) struct TestDatabase {
    pub(crate) name: String,
    dropped: bool,
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
        TestDatabase {
            name,
            dropped: false,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    pub(crate) async fn drop_now(mut self) {
        self.dropped = true;
        drop_database(&self.name).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // This may run inside the test's runtime, which cannot be blocked on: a thread of its
        // own with its own runtime drops the database.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_database(&name));
        })
        .join();
    }
}

/// `DROP DATABASE name WITH (FORCE)` from the admin database (ends any session still on it).
async fn drop_database(name: &str) {
    let Ok(mut admin) = PgConnection::connect(&format!("{}/test", server())).await else {
        return;
    };
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
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

/// `syncgate <args>`: whether it succeeded, stdout, stderr.
fn syncgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(syncgate_bin())
        .args(args)
        .env_remove("SYNCGATE_CONFIG")
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A SQLite log written by a real proxy: `changes` governed changes of the sync policy (the
/// first creates it), each `received` + `completed`. The proxy has stopped; its file is closed.
async fn proxy_log(changes: usize) -> TestProxy {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    for n in 0..changes {
        let (method, body) = if n == 0 {
            (Method::PUT, json!({"displayName": "Fabrikam"}))
        } else {
            (Method::PATCH, json!({"displayName": format!("change {n}")}))
        };
        let resp = client.send(method, &url, Some(body)).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    }
    // Stopped, not dropped: the proxy holds the folder the log is in.
    let mut proxy = proxy;
    proxy.stop.cancel();
    proxy.take_running().stopped().await;
    proxy
}

/// `audit verify --db <db>`'s verdict line, which names the head.
fn verify_line(db: &str) -> String {
    let (ok, stdout, stderr) = syncgate(&["audit", "verify", "--db", db]);
    assert!(ok, "verify {db}: {stderr}");
    assert!(stdout.contains("head "), "{stdout}");
    stdout
}

/// `audit list --format json --db <db>`.
fn listed(db: &str) -> Vec<Value> {
    let (ok, stdout, stderr) = syncgate(&["audit", "list", "--format", "json", "--db", db]);
    assert!(ok, "list {db}: {stderr}");
    serde_json::from_str::<Value>(&stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `audit copy --from sqlite:<db> --to <url>`.
fn copy_to(db: &Path, url: &str) -> (bool, String, String) {
    let from = format!("sqlite:{}", db.display());
    syncgate(&["audit", "copy", "--from", &from, "--to", url])
}

#[tokio::test]
async fn a_proxys_sqlite_log_copied_to_postgres_verifies_to_the_same_head_and_lists_alike() {
    let proxy = proxy_log(3).await;
    let file = proxy.db_path.display().to_string();
    let db = TestDatabase::create().await;
    let url = db.url();

    let (ok, stdout, stderr) = copy_to(&proxy.db_path, &url);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("copied 6 events"), "{stdout}");
    let head = verify_line(&file);
    assert!(head.contains("6 events"), "{head}");
    assert_eq!(verify_line(&url), head);
    let events = listed(&url);
    assert_eq!(events, listed(&file));
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["received", "completed"].repeat(3));

    // Run again: nothing left to copy, the head unchanged.
    let (ok, stdout, stderr) = copy_to(&proxy.db_path, &url);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("copied 0 events") && stdout.contains("6 were already there"),
        "{stdout}"
    );
    assert_eq!(verify_line(&url), head);
    db.drop_now().await;
}

#[tokio::test]
async fn copying_into_a_database_holding_a_different_log_is_refused() {
    let (first, second) = (proxy_log(2).await, proxy_log(2).await);
    let db = TestDatabase::create().await;
    let url = db.url();
    let (ok, _, stderr) = copy_to(&first.db_path, &url);
    assert!(ok, "{stderr}");
    let before = verify_line(&url);
    let (ok, _, stderr) = copy_to(&second.db_path, &url);
    assert!(!ok);
    assert!(stderr.contains("different log"), "{stderr}");
    assert_eq!(
        verify_line(&url),
        before,
        "the refused copy changed nothing"
    );
    db.drop_now().await;
}

#[tokio::test]
async fn migrate_takes_the_log_and_its_settings_from_the_configuration() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\nstatement_timeout = \"3s\"\n",
            db.url()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = syncgate(&["migrate", "--config", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&db.url()), "{stdout}");
    let (ok, stdout, stderr) = syncgate(&["audit", "verify", "--db", &db.url()]);
    assert!(ok && stdout.contains("0 events"), "{stdout}{stderr}");
    // A configuration that cannot be used is refused before anything is touched.
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\nstatement_timeout = \"0s\"\n",
            db.url()
        ),
    )
    .unwrap();
    let (ok, _, stderr) = syncgate(&["migrate", "--config", config.to_str().unwrap()]);
    assert!(!ok && stderr.contains("statement_timeout"), "{stderr}");
    db.drop_now().await;
}
