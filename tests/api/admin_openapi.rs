//! Issue 10: `GET /api/openapi.json` is open and is OpenAPI 3.1; the fixes schemathesis asked for
//! (405 with `Allow` for a served path's other methods, strict `kind`, `partner` and `status`).
//! `tests/openapi.rs` checks the document against the live API itself.

use http::{Method, StatusCode};

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::harness::{proxy_config, spawn_proxy_with};
use crate::helpers::TestClient;

/// The upstream is never contacted by these tests: the admin listener answers on its own.
const UNUSED_UPSTREAM: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn the_openapi_document_is_served_to_anyone_who_reaches_the_admin_listener() {
    let (_, hash) = make_key();
    let mut with_principals = proxy_config(UNUSED_UPSTREAM);
    with_principals.admin.principals = vec![principal("ann", &["auditor"], None, hash)];
    for raw in [with_principals, proxy_config(UNUSED_UPSTREAM)] {
        let proxy = spawn_proxy_with(raw).await;
        let url = format!("http://{}/api/openapi.json", proxy.admin_addr);
        let resp = TestClient::without_token().get(&url).await;
        assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let doc = resp.json();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{doc}"
        );
        assert!(doc["paths"]["/api/v1/operations"]["get"].is_object());
    }
}

#[tokio::test]
async fn another_method_on_a_served_path_is_a_405_with_allow_once_authenticated() {
    let (key, hash) = make_key();
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    raw.admin.principals = vec![principal("ann", &["auditor"], None, hash)];
    let proxy = spawn_proxy_with(raw).await;
    let url = |path: &str| format!("http://{}{path}", proxy.admin_addr);
    let anonymous = TestClient::without_token();
    let ann = TestClient::with_token(key);
    let cases = [
        (
            &anonymous,
            Method::POST,
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &anonymous,
            Method::DELETE,
            "/readyz",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &anonymous,
            Method::PUT,
            "/api/openapi.json",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        // The API's own paths authenticate first: nothing is learnt of them without a key.
        (
            &anonymous,
            Method::POST,
            "/api/v1/operations",
            StatusCode::UNAUTHORIZED,
        ),
        (
            &ann,
            Method::POST,
            "/api/v1/operations",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &ann,
            Method::PATCH,
            "/api/v1/whoami",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &ann,
            Method::POST,
            "/api/v1/nothing-here",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (client, method, path, expected) in cases {
        let resp = client.send(method.clone(), &url(path), None).await;
        assert_eq!(resp.status, expected, "{method} {path}");
        if expected == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(resp.header("allow"), Some("GET"), "{method} {path}");
            assert_graph_error(&resp, "Request_BadRequest", path);
        }
    }
}

#[tokio::test]
async fn a_filter_value_the_log_never_holds_is_a_400_not_an_empty_page() {
    let (key, hash) = make_key();
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    raw.admin.principals = vec![principal("ann", &["auditor"], None, hash)];
    let proxy = spawn_proxy_with(raw).await;
    let ann = TestClient::with_token(key);
    let url = format!("http://{}/api/v1/operations", proxy.admin_addr);
    for query in [
        "kind=sync_upsert",
        "partner=%7B9c5d131d-b1c3-4fc4-9e3f-c6557947d551%7D",
        "partner=9c5d131db1c34fc49e3fc6557947d551",
        "status=600",
        "status=0",
    ] {
        let resp = ann.get(&format!("{url}?{query}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_graph_error(&resp, "BadRequest", query);
    }
    for query in [
        "kind=sync_update",
        "status=204",
        "partner=9C5D131D-B1C3-4FC4-9E3F-C6557947D551",
    ] {
        let resp = ann.get(&format!("{url}?{query}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{query}: {:?}", resp.body);
    }
}
