//! Issue 10: `GET /api/v1/export` and `syncgate audit export` — the same records from the API and
//! the command line, streamed to a slow reader, for auditors only, and a client that leaves
//! frees its export.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use syncgate::audit::{Actor, Decision, Effect, Event, EventKind, Snapshot};
use syncgate::store::{Store, StoreOptions};
use tempfile::TempDir;
use uuid::Uuid;

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::harness::{TestProxy, proxy_config, spawn_proxy_with, syncgate_bin};
use crate::helpers::TestClient;

const PARTNER_A: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const PARTNER_B: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";
/// The upstream is never contacted: the admin listener answers on its own.
const UNUSED_UPSTREAM: &str = "http://127.0.0.1:9";

fn event(op: Uuid, kind: EventKind, n: usize, padding: usize) -> Event {
    let partner = if n % 3 == 0 { PARTNER_B } else { PARTNER_A };
    let mut e = Event::new(op, kind);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{partner}/identitysynchronization"
    );
    e.api_version = "v1.0".into();
    e.partner_tenant_id = partner.parse().ok();
    e.operation = "sync_update".into();
    e.actor = Actor {
        oid: Some("11111111-1111-4111-8111-111111111111".into()),
        upn: Some("alice@contoso.com".into()),
        caller_address: Some("127.0.0.1:50000".into()),
        ..Actor::default()
    };
    e.request_body = Some(
        json!({"displayName": format!("change, \"{n}\""), "userSyncInbound": {"isSyncAllowed": true}}),
    );
    if padding > 0 {
        e.detail = Some("x".repeat(padding));
    }
    e.decision = Some(if n % 5 == 0 {
        Decision::Deny
    } else {
        Decision::Allow
    });
    e.before = Some(Snapshot::Present {
        value: json!({"userSyncInbound": {"isSyncAllowed": false}}),
    });
    if kind == EventKind::Completed {
        e.upstream_status = Some(204);
        e.after = Some(Snapshot::Present {
            value: json!({"userSyncInbound": {"isSyncAllowed": true}}),
        });
        e.effect = Some(Effect::Applied);
    }
    e
}

/// A log of `operations` operations of two events each (received, then completed or denied),
/// each event carrying `padding` bytes more, written concurrently so the writer groups them.
async fn seeded_log(dir: &TempDir, operations: usize, padding: usize) -> PathBuf {
    let db = dir.path().join("syncgate.db");
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let mut appends = tokio::task::JoinSet::new();
    for n in 0..operations {
        let store = store.clone();
        appends.spawn(async move {
            let op = Uuid::now_v7();
            store
                .append(event(op, EventKind::Received, n, padding))
                .await?;
            let last = if n % 5 == 0 {
                EventKind::Denied
            } else {
                EventKind::Completed
            };
            store.append(event(op, last, n, padding)).await
        });
    }
    while let Some(appended) = appends.join_next().await {
        appended.unwrap().unwrap();
    }
    store.close().await;
    db
}

/// A proxy on `db` whose admin API knows an auditor and an approver; their keys.
async fn proxy_on(db: &Path) -> (TestProxy, String, String) {
    let (auditor, auditor_hash) = make_key();
    let (approver, approver_hash) = make_key();
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    raw.store.path = db.to_owned();
    raw.admin.principals = vec![
        principal("ann", &["auditor"], None, auditor_hash),
        principal("abe", &["approver"], None, approver_hash),
    ];
    (spawn_proxy_with(raw).await, auditor, approver)
}

fn cli_export(db: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(syncgate_bin())
        .args(["audit", "export", "--db", db.to_str().unwrap()])
        .args(args)
        .env_remove("SYNCGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_api_and_the_cli_export_the_same_records_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_log(&dir, 40, 0).await;
    let (proxy, auditor, _) = proxy_on(&db).await;
    let client = TestClient::with_token(auditor);
    let cases = [
        ("jsonl", "application/x-ndjson", "syncgate-audit.jsonl"),
        ("csv", "text/csv; charset=utf-8", "syncgate-audit.csv"),
        (
            "directory-audit",
            "application/json",
            "syncgate-audit.directory-audit.json",
        ),
        ("ocsf", "application/x-ndjson", "syncgate-audit.ocsf.jsonl"),
    ];
    for (format, content_type, file_name) in cases {
        let url = format!("http://{}/api/v1/export?format={format}", proxy.admin_addr);
        let api = client.get(&url).await;
        assert_eq!(api.status, StatusCode::OK, "{format}: {:?}", api.body);
        assert_eq!(api.header("content-type"), Some(content_type));
        assert_eq!(
            api.header("content-disposition"),
            Some(format!("attachment; filename=\"{file_name}\"").as_str())
        );
        let (ok, cli, stderr) = cli_export(&db, &["--format", format]);
        assert!(ok, "{format}: {stderr}");
        assert_eq!(api.body, Bytes::from(cli), "{format}: API and CLI differ");
        assert!(stderr.is_empty(), "no progress bar into a pipe: {stderr:?}");

        // The same filters, as a query string and as options.
        let filtered = client
            .get(&format!("{url}&partner={PARTNER_B}&decision=allow"))
            .await;
        let (ok, cli, stderr) = cli_export(
            &db,
            &[
                "--format",
                format,
                "--partner",
                PARTNER_B,
                "--decision",
                "allow",
            ],
        );
        assert!(ok, "{format}: {stderr}");
        assert_eq!(
            filtered.body,
            Bytes::from(cli),
            "{format}: filtered exports differ"
        );
        assert!(
            filtered.body.len() < api.body.len(),
            "{format}: the filter selected"
        );
    }

    // Counted: 40 operations, 80 events; the partner-B, allowed ones only when filtered.
    let jsonl = client
        .get(&format!(
            "http://{}/api/v1/export?format=jsonl",
            proxy.admin_addr
        ))
        .await;
    assert_eq!(
        jsonl
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        80
    );
    let csv = client
        .get(&format!(
            "http://{}/api/v1/export?format=csv&partner={PARTNER_B}&decision=allow",
            proxy.admin_addr
        ))
        .await;
    let mut reader = csv::Reader::from_reader(csv.body.as_ref());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let expected = (0..40).filter(|n| n % 3 == 0 && n % 5 != 0).count();
    assert_eq!(rows.len(), expected);
    assert!(rows.iter().all(|r| r[4] == *PARTNER_B && r[14] == *"allow"));

    // --output writes the same bytes to a file and says so on stderr.
    let file = dir.path().join("export.ocsf.jsonl");
    let (ok, stdout, stderr) = cli_export(
        &db,
        &["--format", "ocsf", "--output", file.to_str().unwrap()],
    );
    assert!(ok && stdout.is_empty(), "{stderr}");
    assert!(
        stderr.contains("exported 40 operations (80 events)"),
        "{stderr}"
    );
    let api = client
        .get(&format!(
            "http://{}/api/v1/export?format=ocsf",
            proxy.admin_addr
        ))
        .await;
    assert_eq!(std::fs::read(&file).unwrap(), api.body.to_vec());

    let (ok, _, stderr) = cli_export(&db, &["--format", "csv", "--partner", "nope"]);
    assert!(!ok && stderr.contains("--partner"), "{stderr}");
}

#[tokio::test]
async fn the_export_route_is_for_auditors_and_reads_its_query_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_log(&dir, 2, 0).await;
    let (proxy, auditor, approver) = proxy_on(&db).await;
    let url = format!("http://{}/api/v1/export?format=jsonl", proxy.admin_addr);
    let resp = TestClient::without_token().get(&url).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.header("www-authenticate").is_some());
    let resp = TestClient::with_token(approver).get(&url).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_graph_error(&resp, "Authorization_RequestDenied", "an approver");
    let base = format!("http://{}/api/v1/export", proxy.admin_addr);
    for query in [
        "",
        "?format=xml",
        "?format=csv&format=jsonl",
        "?format=csv&limit=10",
        "?format=csv&colour=red",
        "?format=csv&partner=nope",
    ] {
        let resp = TestClient::with_token(auditor.clone())
            .get(&format!("{base}{query}"))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_graph_error(&resp, "BadRequest", query);
    }
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, syncgate::body::Body>;

async fn start_export(
    client: &Http,
    proxy: &TestProxy,
    key: &str,
) -> http::Response<hyper::body::Incoming> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!(
            "http://{}/api/v1/export?format=jsonl",
            proxy.admin_addr
        ))
        .header("authorization", format!("Bearer {key}"))
        .body(syncgate::body::empty())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("no answer")
        .expect("request failed")
}

#[tokio::test]
async fn a_slow_reader_gets_a_few_thousand_operations_streamed_in_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_log(&dir, 3000, 0).await;
    let (proxy, auditor, _) = proxy_on(&db).await;
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let resp = start_export(&client, &proxy, &auditor).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("content-length").is_none(),
        "streamed, not sized up front"
    );
    let mut body = resp.into_body();
    let (mut frames, mut lines, mut rest) = (0, 0, Vec::new());
    while let Some(frame) = body.frame().await {
        let data = frame
            .expect("the stream broke")
            .into_data()
            .unwrap_or_default();
        frames += 1;
        rest.extend_from_slice(&data);
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = rest.drain(..=end).collect();
            let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert!(event["hash"].is_string());
            lines += 1;
        }
        // A slow reader: the producer waits for it rather than racing ahead.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(rest.is_empty());
    assert_eq!(lines, 6000);
    assert!(
        frames > 1,
        "one page at a time, not one body: {frames} frames"
    );
}

#[tokio::test]
async fn exports_are_bounded_and_a_client_that_leaves_frees_its_export() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than the queue, hyper and the sockets hold: 8 pages of about 4 MB.
    let db = seeded_log(&dir, 4000, 4000).await;
    let (proxy, auditor, _) = proxy_on(&db).await;
    let client: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    // Four exports started and not read: the producers wait on their full queues.
    let mut unread = Vec::new();
    for _ in 0..4 {
        let resp = start_export(&client, &proxy, &auditor).await;
        assert_eq!(resp.status(), StatusCode::OK);
        unread.push(resp);
    }
    let busy = start_export(&client, &proxy, &auditor).await;
    assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(busy.headers()["retry-after"], "5");
    drop(busy);
    // The readers go away; their exports stop and a new one may start.
    drop(unread);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = start_export(&client, &proxy, &auditor).await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            Instant::now() < deadline,
            "the exports of gone clients never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
