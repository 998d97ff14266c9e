//! Issue 10: `GET /api/v1/operations` — one row per governed operation, filtered and paged, for
//! auditors only.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::governed::{PARTNER, seed_partner, sync_url};
use crate::harness::{TestProxy, proxy_config, spawn_proxy_with};
use crate::helpers::{TestClient, TestEmulator, spawn_emulator};

/// A proxy with three governed changes recorded, the keys of an auditor and an approver, and its
/// upstream (kept alive with the proxy).
async fn proxy_with_changes() -> (TestProxy, String, String, TestEmulator) {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let (auditor, auditor_hash) = make_key();
    let (approver, approver_hash) = make_key();
    let mut raw = proxy_config(&emulator.base);
    raw.admin.principals = vec![
        principal("ann", &["auditor"], None, auditor_hash),
        principal("abe", &["approver"], None, approver_hash),
    ];
    let proxy = spawn_proxy_with(raw).await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    for n in 0..3 {
        // The policy must exist before it can be patched.
        let method = if n == 0 { Method::PUT } else { Method::PATCH };
        let body = json!({"displayName": format!("change {n}")});
        let resp = client.send(method, &url, Some(body)).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    }
    (proxy, auditor, approver, emulator)
}

async fn get(proxy: &TestProxy, key: &str, path_and_query: &str) -> (StatusCode, Value) {
    let resp = TestClient::with_token(key.to_owned())
        .get(&format!("http://{}{path_and_query}", proxy.admin_addr))
        .await;
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, body)
}

#[tokio::test]
async fn an_auditor_pages_through_the_operations_newest_first_with_filters() {
    let (proxy, auditor, _, _upstream) = proxy_with_changes().await;
    let (status, all) = get(&proxy, &auditor, "/api/v1/operations").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let rows = all["value"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{all}");
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["display_name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["change 2", "change 1", "change 0"], "{all}");
    assert!(all.get("@odata.nextLink").is_none());

    // One per page, following the links: the same three, in the same order.
    let mut seen = Vec::new();
    let mut next = Some(format!("/api/v1/operations?partner={PARTNER}&limit=1"));
    while let Some(link) = next {
        let (status, page) = get(&proxy, &auditor, &link).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for row in page["value"].as_array().unwrap() {
            seen.push(row["display_name"].as_str().unwrap().to_owned());
        }
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
        assert!(seen.len() <= 3, "the links never end: {seen:?}");
    }
    assert_eq!(seen, names);

    // A filter that matches nothing, and a free-text one that matches one.
    let (_, none) = get(&proxy, &auditor, "/api/v1/operations?decision=deny").await;
    assert_eq!(none["value"].as_array().unwrap().len(), 0, "{none}");
    let (_, one) = get(&proxy, &auditor, "/api/v1/operations?q=CHANGE%201").await;
    assert_eq!(one["value"].as_array().unwrap().len(), 1, "{one}");
}

#[tokio::test]
async fn the_operations_route_is_for_auditors_and_reads_its_query_strictly() {
    let (proxy, auditor, approver, _upstream) = proxy_with_changes().await;
    let url = format!("http://{}/api/v1/operations", proxy.admin_addr);
    let resp = TestClient::without_token().get(&url).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = TestClient::with_token(approver).get(&url).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_graph_error(&resp, "Authorization_RequestDenied", "an approver");
    for query in [
        "colour=red",
        "limit=0",
        "partner=nope",
        "drift=maybe",
        "q=a&q=b",
    ] {
        let resp = TestClient::with_token(auditor.clone())
            .get(&format!("{url}?{query}"))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_graph_error(&resp, "BadRequest", query);
    }
}
