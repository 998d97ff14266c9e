//! What a refusal costs the audit log, and what it leaves in it: every refusal records its method
//! and raw target; its body only as length, SHA-256 and a bounded prefix; above a per-client rate
//! refusals are counted into one summary; the log's files are private, and a graceful shutdown
//! leaves only the database file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use syncgate::config::RawConfig;

use crate::governed::{PARTNER, audit_events, seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;

fn audit_id(resp: &TestResponse) -> String {
    resp.header("x-syncgate-audit-id")
        .unwrap_or_else(|| panic!("no x-syncgate-audit-id: {:?} {:?}", resp.status, resp.body))
        .to_owned()
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

/// A proxy with its database at `db` (kept across restarts), refusals summarised per `burst`
/// and `window`.
async fn proxy_at(upstream: &str, db: &Path, burst: u32, window: &str) -> TestProxy {
    let mut raw: RawConfig = proxy_config(upstream);
    raw.store.path = db.to_owned();
    raw.audit.refusal_burst = burst;
    raw.audit.refusal_window = window.into();
    spawn_proxy_with(raw).await
}

/// The path part of a proxy URL.
fn path_of(url: &str, base: &str) -> String {
    url.strip_prefix(base).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_refused_unauthenticated_one_mib_changes_grow_the_log_by_a_bounded_amount() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("syncgate.db");

    // The log as it is before the flood, checkpointed by a graceful shutdown.
    proxy_at(&emulator.base, &db, 1000, "10s")
        .await
        .shutdown()
        .await;
    let mut size = std::fs::metadata(&db).unwrap().len();

    // Valid JSON just under audit.max_body (1 MiB), without a token: Graph refuses the
    // before-read, so syncgate refuses the change. First with every refusal recorded one by one
    // (burst above 50: the cost of one record), then with the default burst of 20 (the rest
    // counted into one summary).
    let filler = "x".repeat((1 << 20) - 64);
    let body = Bytes::from(json!({ "displayName": filler }).to_string());
    assert!(body.len() <= 1 << 20 && body.len() > (1 << 20) - 100);
    let digest = hex::encode(Sha256::digest(&body));
    let client = TestClient::without_token();
    for (burst, one_by_one) in [(1000, 50), (20, 20)] {
        let proxy = proxy_at(&emulator.base, &db, burst, "1h").await;
        let url = sync_url(&proxy.url, "v1.0", PARTNER);
        let target = path_of(&url, &proxy.url);
        let mut ids = Vec::new();
        for _ in 0..50 {
            let resp = client
                .send_raw(Method::PATCH, &url, json_headers(), body.clone())
                .await;
            assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{:?}", resp.body);
            ids.push(audit_id(&resp));
        }
        proxy.shutdown().await;
        assert!(!sidecar(&db, "-wal").exists(), "-wal left behind");
        assert!(!sidecar(&db, "-shm").exists(), "-shm left behind");
        let after = std::fs::metadata(&db).unwrap().len();
        let growth = after - size;
        size = after;
        eprintln!(
            "burst {burst}: 50 refusals of {} byte bodies grew the log by {growth} bytes \
             ({} per refusal)",
            body.len(),
            growth / 50
        );
        // Bound: 50 records of at most 2 KiB of target, 4 KiB of prefix and the fixed fields
        // each, in 4 KiB pages. Before the fix each refusal stored its whole body: 50 MiB.
        assert!(growth < 1 << 20, "the log grew by {growth} bytes");

        let events = audit_events(&db);
        let mut distinct = ids.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), one_by_one + usize::from(one_by_one < 50));
        let mut summaries = 0;
        for id in &distinct {
            let of_id: Vec<&Value> = events
                .iter()
                .filter(|e| e["operation_id"] == id.as_str())
                .collect();
            assert!(!of_id.is_empty(), "no event for {id}");
            for event in of_id {
                assert_eq!(event["kind"], "denied");
                assert_eq!(event["method"], "PATCH");
                assert_eq!(event["request_body"], Value::Null, "never the whole body");
                let raw = &event["raw_request"];
                assert_eq!(raw["target"], target.as_str());
                if event["operation"] == "refusal_summary" {
                    assert_eq!(event["refusal_summary"]["count"], 50 - one_by_one);
                    summaries += 1;
                    continue;
                }
                assert_eq!(raw["body"]["len"], body.len());
                assert_eq!(raw["body"]["sha256"], digest.as_str());
                assert_eq!(raw["body"]["prefix_encoding"], "text");
                let prefix = raw["body"]["prefix"].as_str().unwrap();
                assert!(prefix.len() <= 4096 && prefix.starts_with("{\"displayName\":\"xxx"));
                let stored = serde_json::to_string(event).unwrap().len();
                assert!(stored < 8 * 1024, "one refusal event is {stored} bytes");
                if Some(id) == distinct.first() {
                    eprintln!("one refusal event: {stored} bytes of JSON");
                }
            }
        }
        assert_eq!(summaries, usize::from(one_by_one < 50));
    }
}

#[tokio::test]
async fn every_refusal_records_its_method_and_the_target_as_sent() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("syncgate.db");
    let proxy = proxy_at(&emulator.base, &db, 1000, "10s").await;
    let client = TestClient::new();
    let base = &proxy.url;
    let mut expected: Vec<(String, &str, String)> = Vec::new();

    // Non-canonical paths: refused on the head, no canonical path to record.
    for path in [
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%2553ynchronization?a=%2F"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}//identitySynchronization"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/./identitySynchronization"
        ),
    ] {
        let resp = client
            .send(Method::DELETE, &format!("{base}{path}"), None)
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{path}");
        expected.push((audit_id(&resp), "DELETE", path));
    }

    // A governed body over audit.max_body: refused while reading, so no body digest.
    let url = sync_url(base, "v1.0", PARTNER);
    let resp = client
        .send_raw(
            Method::PUT,
            &url,
            json_headers(),
            Bytes::from(vec![b' '; (1 << 20) + 1]),
        )
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    expected.push((audit_id(&resp), "PUT", path_of(&url, base)));

    // A $batch syncgate cannot read: the batch's own target, and its body's digest.
    let bad_batch = json!({"value": []}).to_string();
    let resp = client
        .send_raw(
            Method::POST,
            &format!("{base}/v1.0/$batch"),
            json_headers(),
            Bytes::from(bad_batch.clone()),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    expected.push((audit_id(&resp), "POST", "/v1.0/$batch".into()));

    // A refused sub-request: its own method and url as the batch carried them.
    let sub_url =
        format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%2553ynchronization");
    let batch = json!({"requests": [
        {"id": "1", "method": "PATCH", "url": sub_url, "headers": {"content-type": "application/json"}, "body": {"displayName": "y"}},
        {"id": "2", "method": "PUT", "url": format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"), "headers": {"content-type": "application/json"}, "body": {"displayName": "z"}},
    ]});
    let resp = client
        .send(Method::POST, &format!("{base}/v1.0/$batch"), Some(batch))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let sub = resp.json()["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "1")
        .cloned()
        .unwrap();
    assert_eq!(sub["status"], 400, "{sub}");
    let sub_id = sub["body"]["error"]["innerError"]["syncgate-audit-id"]
        .as_str()
        .unwrap()
        .to_owned();
    expected.push((sub_id, "PATCH", sub_url));

    proxy.shutdown().await;
    let events = audit_events(&db);
    for (id, method, target) in &expected {
        let denied: Vec<&Value> = events
            .iter()
            .filter(|e| e["operation_id"] == id.as_str())
            .collect();
        assert_eq!(denied.len(), 1, "{method} {target}: {denied:?}");
        let e = denied[0];
        assert_eq!(e["kind"], "denied");
        assert_eq!(e["method"], *method, "{target}");
        assert_eq!(e["raw_request"]["target"], target.as_str(), "{method}");
        assert_eq!(e["request_body"], Value::Null);
    }
    let batch_refusal = events
        .iter()
        .find(|e| e["operation_id"] == expected[4].0.as_str())
        .unwrap();
    assert_eq!(
        batch_refusal["raw_request"]["body"]["sha256"],
        hex::encode(Sha256::digest(bad_batch.as_bytes()))
    );
    let too_large = events
        .iter()
        .find(|e| e["operation_id"] == expected[3].0.as_str())
        .unwrap();
    assert_eq!(too_large["raw_request"]["body"], Value::Null);
}

#[tokio::test]
async fn refusals_above_the_rate_are_counted_into_one_summary_recorded_at_shutdown() {
    let emulator = spawn_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("syncgate.db");
    let proxy = proxy_at(&emulator.base, &db, 5, "1h").await;
    let client = TestClient::without_token();
    let mut ids = Vec::new();
    for i in 0..12 {
        let path = format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}//identitySynchronization?n={i}"
        );
        let resp = client
            .send(Method::PATCH, &format!("{}{path}", proxy.url), None)
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "every client still gets its refusal"
        );
        let id = audit_id(&resp);
        assert_eq!(
            resp.json()["error"]["innerError"]["syncgate-audit-id"],
            id.as_str()
        );
        ids.push(id);
    }
    // The first five have their own operations; the other seven share the summary's.
    let individual: std::collections::HashSet<&String> = ids[..5].iter().collect();
    assert_eq!(individual.len(), 5);
    assert!(ids[5..].iter().all(|id| *id == ids[5]));
    assert!(!individual.contains(&ids[5]));
    // The sixth is recorded in full under the summary's id: every id resolves at once.
    let events = audit_events(&db);
    assert_eq!(events.len(), 6, "the summary waits for its window to close");
    let opener = events.last().unwrap();
    assert_eq!(opener["operation_id"], ids[5].as_str());
    assert_eq!(opener["method"], "PATCH");
    assert!(
        opener["raw_request"]["target"]
            .as_str()
            .unwrap()
            .ends_with("//identitySynchronization?n=5")
    );
    assert!(
        opener["detail"]
            .as_str()
            .unwrap()
            .contains("further refusals from 127.0.0.1 until"),
        "{opener}"
    );

    proxy.shutdown().await;
    let events = audit_events(&db);
    assert_eq!(
        events.len(),
        7,
        "shutdown records the summary: nothing counted is lost"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["operation_id"], ids[5].as_str());
    assert_eq!(summary["kind"], "denied");
    assert_eq!(summary["operation"], "refusal_summary");
    assert_eq!(summary["method"], "PATCH");
    assert_eq!(
        summary["raw_request"]["target"],
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}//identitySynchronization?n=5"
        )
    );
    let counted = &summary["refusal_summary"];
    assert_eq!(counted["client"], "127.0.0.1");
    assert_eq!(counted["count"], 7);
    assert_eq!(counted["methods"], json!({"PATCH": 7}));
    assert_eq!(
        counted["codes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        7
    );
    assert!(
        summary["detail"]
            .as_str()
            .unwrap()
            .starts_with("7 refusals from 127.0.0.1 between"),
        "{summary}"
    );

    // `audit show` names the target and the count.
    let out = std::process::Command::new(syncgate_bin())
        .args(["audit", "show", &ids[5], "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("target") && l.ends_with("//identitySynchronization?n=5")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("refusals") && l.contains("7 from 127.0.0.1")),
        "{text}"
    );
}

#[tokio::test]
async fn a_summary_is_recorded_once_its_window_closes_while_the_proxy_runs() {
    let emulator = spawn_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("syncgate.db");
    let proxy = proxy_at(&emulator.base, &db, 1, "200ms").await;
    let client = TestClient::without_token();
    let path = format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}//identitySynchronization",
        proxy.url
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(audit_id(&client.send(Method::PATCH, &path, None).await));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let events = audit_events(&db);
        if let Some(s) = events.iter().find(|e| e["operation"] == "refusal_summary") {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no summary recorded: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(summary["operation_id"], ids[1].as_str());
    assert_eq!(ids[1], ids[2]);
    assert_eq!(summary["refusal_summary"]["count"], 2);
    proxy.shutdown().await;
    assert_eq!(
        audit_events(&db).len(),
        3,
        "one refusal, the first counted one, and the summary"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_log_files_are_private_and_a_graceful_shutdown_leaves_no_wal_or_shm() {
    use std::os::unix::fs::PermissionsExt;
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("syncgate.db");
    let proxy = proxy_at(&emulator.base, &db, 20, "10s").await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "Fabrikam"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let files = [
        db.clone(),
        sidecar(&db, "-wal"),
        sidecar(&db, "-shm"),
        sidecar(&db, ".token-key"),
    ];
    for file in &files {
        let mode = std::fs::metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    proxy.shutdown().await;
    assert!(!sidecar(&db, "-wal").exists(), "-wal left behind");
    assert!(!sidecar(&db, "-shm").exists(), "-shm left behind");
    let kinds: Vec<Value> = audit_events(&db)
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("received"), json!("completed")]);
}
