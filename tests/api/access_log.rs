//! `[log] access = true`: one JSON line per proxied request, pass-through and governed alike,
//! never a credential.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::governed::{PARTNER, seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;

/// The lines written so far, waiting up to 10 s for at least `count`.
async fn lines(path: &std::path::Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} lines: {text}", lines.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn each_request_gets_a_line_without_its_token_or_secret_query_values() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut raw = proxy_config(&emulator.base);
    raw.log.access = true;
    raw.log.access_path = Some(log.clone());
    let proxy = spawn_proxy_with(raw).await;
    let token = admin_token();
    let client = TestClient::with_token(token.clone());

    let mut headers = HeaderMap::new();
    headers.insert("client-request-id", HeaderValue::from_static("trace-42"));
    headers.insert(
        "user-agent",
        HeaderValue::from_static("access-log-test/1.0"),
    );
    let read = client
        .send_raw(
            Method::GET,
            &format!(
                "{}/v1.0/policies/crossTenantAccessPolicy/partners?$select=tenantId&access_token=hunter2",
                proxy.url
            ),
            headers,
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let write = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "Logged"})),
        )
        .await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);

    let lines = lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (first, second) = (&lines[0], &lines[1]);
    assert_eq!(first["method"], "GET");
    assert_eq!(
        first["target"],
        "/v1.0/policies/crossTenantAccessPolicy/partners?$select=tenantId&access_token=REDACTED"
    );
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "pass_through");
    assert_eq!(first["remote"], "127.0.0.1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["tls"], false);
    assert_eq!(first["client_request_id"], "trace-42");
    assert_eq!(first["user_agent"], "access-log-test/1.0");
    // Graph's own request-id, from the emulator's answer.
    assert_eq!(
        first["request_id"].as_str(),
        read.header("request-id"),
        "{first}"
    );
    assert!(first["latency_us"].as_u64().is_some());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(second["method"], "PUT");
    assert_eq!(second["route"], "governed");
    assert_eq!(second["status"], 204);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&token), "the bearer token was logged");
    assert!(!text.contains("hunter2"), "a secret query value was logged");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_path_without_access_true_is_refused_and_an_unwritable_one_fails_the_start() {
    let emulator = spawn_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = proxy_config(&emulator.base);
    raw.log.access_path = Some(dir.path().join("access.log"));
    let Err(error) = raw.validate() else {
        panic!("a lone access_path was accepted")
    };
    let error = error.to_string();
    assert!(error.contains("log.access_path"), "{error}");

    let mut raw = proxy_config(&emulator.base);
    raw.log.access = true;
    raw.log.access_path = Some(dir.path().join("no-such-folder").join("access.log"));
    raw.store.path = dir.path().join("syncgate.db");
    let settings = raw.validate().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let Err(error) = syncgate::app::start(settings, stop).await else {
        panic!("started with an access log it cannot write")
    };
    assert!(error.to_string().contains("access log"), "{error}");
}
