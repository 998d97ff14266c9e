//! Issue 10: the admin routes that read the log — shared setup, who may call each route, and
//! the record every read leaves in `admin_reads` (`GET /api/v1/reads`).

use http::{Method, StatusCode};
use serde_json::{Value, json};
use syncgate::config::RawConfig;

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::governed::{PARTNER, seed_partner, sync_url};
use crate::harness::{TestProxy, proxy_config, spawn_proxy_with};
use crate::helpers::{TestClient, TestEmulator, TestResponse, spawn_emulator};
use crate::postgres::TestDatabase;

/// Which database the proxy's log is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A proxy with governed changes recorded, and keys for an auditor (`ann`, with an oid), an
/// approver (`abe`) and an admin (`ada`).
pub(crate) struct LogWorld {
    pub(crate) proxy: TestProxy,
    pub(crate) auditor: String,
    pub(crate) approver: String,
    pub(crate) admin: String,
    /// The operation ids of the changes made (the `x-syncgate-audit-id` headers), in order.
    pub(crate) operations: Vec<String>,
    /// The upstream, kept alive as long as the proxy.
    pub(crate) _emulator: TestEmulator,
    /// The proxy's configuration, to start a second replica on the same log.
    pub(crate) raw: RawConfig,
    pub(crate) db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

pub(crate) const ANN_OID: &str = "aaaaaaaa-1111-2222-3333-444444444444";

impl LogWorld {
    pub(crate) async fn new(backend: Backend, changes: usize) -> LogWorld {
        LogWorld::configured(backend, changes, |_| {}).await
    }

    /// [`LogWorld::new`] with the proxy's configuration changed by `configure` first.
    pub(crate) async fn configured(
        backend: Backend,
        changes: usize,
        configure: impl FnOnce(&mut RawConfig),
    ) -> LogWorld {
        let emulator = spawn_emulator().await;
        seed_partner(&emulator, PARTNER).await;
        let (auditor, auditor_hash) = make_key();
        let (approver, approver_hash) = make_key();
        let (admin, admin_hash) = make_key();
        let dir = tempfile::tempdir().unwrap();
        let mut raw = proxy_config(&emulator.base);
        raw.admin.principals = vec![
            principal("ann", &["auditor"], Some(ANN_OID), auditor_hash),
            principal("abe", &["approver"], None, approver_hash),
            principal("ada", &["admin"], None, admin_hash),
        ];
        let db = match backend {
            Backend::Sqlite => {
                raw.store.path = dir.path().join("syncgate.db");
                None
            }
            Backend::Postgres => {
                let db = TestDatabase::create().await;
                raw.store.url = Some(db.url());
                raw.store.token_key = Some(dir.path().join("token-key"));
                Some(db)
            }
        };
        raw.checkpoints.key = Some(dir.path().join("checkpoint-key"));
        configure(&mut raw);
        let proxy = spawn_proxy_with(raw.clone()).await;
        let mut world = LogWorld {
            proxy,
            auditor,
            approver,
            admin,
            operations: Vec::new(),
            _emulator: emulator,
            raw,
            db,
            _dir: dir,
        };
        for _ in 0..changes {
            world.change(&world.proxy.url.clone()).await;
        }
        world
    }

    /// One governed change through the proxy at `url` (the policy is created by the first).
    pub(crate) async fn change(&mut self, url: &str) -> String {
        let n = self.operations.len();
        let method = if n == 0 { Method::PUT } else { Method::PATCH };
        let body = json!({"displayName": format!("change {n}")});
        let resp = TestClient::new()
            .send(method, &sync_url(url, "v1.0", PARTNER), Some(body))
            .await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
        let id = resp.header("x-syncgate-audit-id").unwrap().to_owned();
        self.operations.push(id.clone());
        id
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.proxy.admin_addr)
    }

    /// `GET` an admin path with `key`: the response and its JSON body (`null` if none).
    pub(crate) async fn get(&self, key: &str, path_and_query: &str) -> (TestResponse, Value) {
        let resp = TestClient::with_token(key.to_owned())
            .get(&self.url(path_and_query))
            .await;
        let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp, body)
    }

    /// Run `sql` on the SQLite log as someone with write access to the file would.
    pub(crate) async fn sqlite(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.proxy.db_path)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        conn.execute(sql).await.unwrap();
        conn.close().await.unwrap();
    }

    pub(crate) async fn finish(self) {
        self.proxy.shutdown().await;
        if let Some(db) = self.db {
            db.drop_now().await;
        }
    }
}

/// Each route this part of issue 10 adds, and a principal of the wrong role for it.
#[tokio::test]
async fn every_log_route_refuses_a_missing_key_with_401_and_a_wrong_role_with_403() {
    let world = LogWorld::new(Backend::Sqlite, 1).await;
    let operation = format!("/api/v1/operations/{}", world.operations[0]);
    let evidence = format!("{operation}/evidence");
    let routes = [
        (operation.as_str(), &world.approver),
        (evidence.as_str(), &world.approver),
        ("/api/v1/checkpoints", &world.approver),
        ("/api/v1/proofs/inclusion?seq=1", &world.approver),
        ("/api/v1/proofs/consistency?old=1&new=2", &world.approver),
        ("/api/v1/events", &world.approver),
        ("/api/v1/events?wait=30s", &world.approver),
        ("/api/v1/verify", &world.approver),
        ("/api/v1/reads", &world.auditor),
    ];
    for (route, wrong) in routes {
        let resp = TestClient::without_token().get(&world.url(route)).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{route}");
        assert!(resp.header("www-authenticate").is_some(), "{route}");
        let resp = TestClient::with_token("sgk_not-a-key".into())
            .get(&world.url(route))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{route}");
        let (resp, _) = world.get(wrong, route).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{route}");
        assert_graph_error(&resp, "Authorization_RequestDenied", route);
    }
    // An admin may do what an auditor may.
    let (resp, body) = world.get(&world.admin, "/api/v1/verify").await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    world.finish().await;
}

async fn every_read_of_the_log_is_recorded_with_who_what_and_where(backend: Backend) {
    let world = LogWorld::new(backend, 2).await;
    let operation = format!("/api/v1/operations/{}", world.operations[1]);
    let asked = [
        ("/api/v1/operations?limit=1", StatusCode::OK, 1),
        (operation.as_str(), StatusCode::OK, 2),
        ("/api/v1/events?after_seq=1&limit=2", StatusCode::OK, 2),
        ("/api/v1/verify", StatusCode::OK, 4),
        ("/api/v1/events?colour=red", StatusCode::BAD_REQUEST, 0),
        // Streamed: recorded before the first byte, when its rows are not known yet.
        ("/api/v1/export?format=csv", StatusCode::OK, 0),
    ];
    for (path, status, _) in asked {
        let (resp, body) = world.get(&world.auditor, path).await;
        assert_eq!(resp.status, status, "{path}: {body}");
    }
    let (resp, reads) = world.get(&world.admin, "/api/v1/reads").await;
    assert_eq!(resp.status, StatusCode::OK, "{reads}");
    let rows = reads["value"].as_array().unwrap();
    assert_eq!(rows.len(), asked.len(), "{reads}");
    for (row, (path, status, count)) in rows.iter().zip(asked) {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        assert_eq!(row["principal"], "ann", "{row}");
        assert_eq!(row["principal_oid"], ANN_OID, "{row}");
        assert_eq!(row["method"], "GET", "{row}");
        assert_eq!(row["route"], route, "{row}");
        assert_eq!(row["query"].as_str().unwrap_or(""), query, "{row}");
        assert_eq!(row["status"], status.as_u16(), "{row}");
        assert_eq!(row["rows_returned"], count, "{row}");
        assert!(
            row["remote_addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{row}"
        );
        assert!(row["time"].as_str().unwrap().ends_with('Z'), "{row}");
    }
    // The read of /reads was recorded too, and pages by id.
    let last = rows.last().unwrap()["id"].as_i64().unwrap();
    let (_, later) = world
        .get(&world.admin, &format!("/api/v1/reads?after={last}&limit=1"))
        .await;
    let later = later["value"].as_array().unwrap().clone();
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0]["principal"].as_str(), later[0]["route"].as_str()),
        (Some("ada"), Some("/api/v1/reads"))
    );
    // Reads are not events: the chain holds only the two changes.
    let (_, verify) = world.get(&world.auditor, "/api/v1/verify").await;
    assert_eq!(verify["events"], 4, "{verify}");
    world.finish().await;
}

#[tokio::test]
async fn every_read_of_the_log_is_recorded_with_who_what_and_where_on_sqlite() {
    every_read_of_the_log_is_recorded_with_who_what_and_where(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_read_of_the_log_is_recorded_with_who_what_and_where_on_postgres() {
    every_read_of_the_log_is_recorded_with_who_what_and_where(Backend::Postgres).await;
}

#[tokio::test]
async fn the_reads_route_reads_its_query_strictly() {
    let world = LogWorld::new(Backend::Sqlite, 0).await;
    for query in [
        "after=-1",
        "after=x",
        "limit=0",
        "limit=1001",
        "before=3",
        "limit=1&limit=2",
    ] {
        let (resp, _) = world
            .get(&world.admin, &format!("/api/v1/reads?{query}"))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_graph_error(&resp, "BadRequest", query);
    }
    world.finish().await;
}

/// "Nothing silently passed through": when the read cannot be recorded, the events are not sent.
#[tokio::test]
async fn a_read_that_cannot_be_recorded_is_refused_with_503_and_shows_nothing() {
    let world = LogWorld::new(Backend::Sqlite, 1).await;
    world
        .sqlite(
            "CREATE TRIGGER admin_reads_broken BEFORE INSERT ON admin_reads \
             BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
        )
        .await;
    let (resp, body) = world.get(&world.auditor, "/api/v1/events").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_graph_error(&resp, "SyncgateAuditUnavailable", "unrecorded read");
    let text = String::from_utf8_lossy(&resp.body);
    assert!(!text.contains(&world.operations[0]), "{text}");
    // A streamed export too: refused before any record is sent.
    let (resp, _) = world
        .get(&world.auditor, "/api/v1/export?format=jsonl")
        .await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_graph_error(&resp, "SyncgateAuditUnavailable", "unrecorded export");
    let text = String::from_utf8_lossy(&resp.body);
    assert!(!text.contains(&world.operations[0]), "{text}");
    world.finish().await;
}
