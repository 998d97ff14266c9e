//! The Graph emulator's `/_emulator/*` endpoints: injected faults, state, request log, echo and
//! streamed bytes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::emulator::{
    OTHER, PARTNER, assert_error, create_partner, create_sync, partner_url, partners_url, state,
    sync_url,
};
use crate::helpers::{TestClient, TestEmulator, TestResponse, spawn_emulator};

async fn add_fault(client: &TestClient, emulator: &TestEmulator, fault: Value) -> TestResponse {
    client
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(fault),
        )
        .await
}

async fn request_log(client: &TestClient, emulator: &TestEmulator) -> Vec<Value> {
    client
        .get(&format!("{}/_emulator/requests", emulator.base))
        .await
        .json()["value"]
        .as_array()
        .expect("a value array")
        .clone()
}

#[tokio::test]
async fn status_faults_answer_with_graph_errors_and_retry_after() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let cases = [
        (429, "TooManyRequests"),
        (503, "serviceNotAvailable"),
        (500, "generalException"),
        (409, "Directory_ConcurrencyViolation"),
    ];
    for (status, code) in cases {
        let added = add_fault(
            &client,
            &emulator,
            json!({"status": status, "retryAfter": 5, "path": "/v1.0/policies"}),
        )
        .await;
        assert_eq!(added.status, StatusCode::CREATED);
        let fault = added.json();
        assert!(fault["id"].is_number(), "{fault}");
        assert_eq!(fault["status"], status);
        assert_eq!(fault["count"], 1);

        let hit = client.get(&partners_url(&emulator, "v1.0")).await;
        assert_error(&hit, StatusCode::from_u16(status).unwrap(), code, None);
        assert_eq!(hit.header("retry-after"), Some("5"));
        assert!(hit.header("x-ms-ags-diagnostic").is_some());
        assert!(hit.header("request-id").is_some());
    }
    let without_retry_after = add_fault(&client, &emulator, json!({"status": 503})).await;
    assert_eq!(without_retry_after.status, StatusCode::CREATED);
    let hit = client.get(&partners_url(&emulator, "beta")).await;
    assert_eq!(hit.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(hit.header("retry-after").is_none());
}

#[tokio::test]
async fn faults_match_method_and_path_prefix_and_are_used_up_after_count() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let added = add_fault(
        &client,
        &emulator,
        json!({"method": "put", "path": "/V1.0/POLICIES/crossTenantAccessPolicy/partners", "count": 2, "status": 429}),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED);
    // Wrong method, wrong version: untouched.
    assert_eq!(
        client
            .get(&sync_url(&emulator, "v1.0", PARTNER))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let beta_put = client
        .send(
            Method::PUT,
            &sync_url(&emulator, "beta", OTHER),
            Some(json!({})),
        )
        .await;
    assert_eq!(beta_put.status, StatusCode::NOT_FOUND);
    for _ in 0..2 {
        let hit = client
            .send(
                Method::PUT,
                &sync_url(&emulator, "v1.0", PARTNER),
                Some(json!({})),
            )
            .await;
        assert_eq!(hit.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let through = client
        .send(
            Method::PUT,
            &sync_url(&emulator, "v1.0", PARTNER),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        through.status,
        StatusCode::NO_CONTENT,
        "the fault is used up"
    );
    let pending = client
        .get(&format!("{}/_emulator/faults", emulator.base))
        .await
        .json();
    assert_eq!(pending["value"], json!([]));
}

#[tokio::test]
async fn a_delay_fault_delays_then_answers_normally() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let added = add_fault(&client, &emulator, json!({"delayMs": 300, "method": "GET"})).await;
    assert_eq!(added.status, StatusCode::CREATED);
    let started = Instant::now();
    let slow = client.get(&partners_url(&emulator, "v1.0")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(slow.status, StatusCode::OK);

    let added = add_fault(&client, &emulator, json!({"delayMs": 200, "status": 503})).await;
    assert_eq!(added.status, StatusCode::CREATED);
    let started = Instant::now();
    let slow_error = client.get(&partners_url(&emulator, "v1.0")).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(slow_error.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_drop_fault_closes_the_connection_without_an_answer() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let added = add_fault(
        &client,
        &emulator,
        json!({"drop": true, "path": "/v1.0/policies/crossTenantAccessPolicy/partners"}),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let dropped = client
        .try_send_raw(
            Method::POST,
            &partners_url(&emulator, "v1.0"),
            headers,
            Bytes::from(json!({"tenantId": PARTNER}).to_string()),
        )
        .await;
    assert!(dropped.is_err(), "expected no answer, got {dropped:?}");
    assert_eq!(state(&client, &emulator).await["partners"], json!({}));
    let log = request_log(&client, &emulator).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], Value::Null);
    // The next request is answered normally.
    create_partner(&client, &emulator, PARTNER).await;
}

#[tokio::test]
async fn faults_can_be_listed_and_cleared_and_never_hit_control_endpoints() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    add_fault(&client, &emulator, json!({"status": 500, "count": 3})).await;
    add_fault(&client, &emulator, json!({"drop": true, "path": "/beta"})).await;
    let listed = client
        .get(&format!("{}/_emulator/faults", emulator.base))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let faults = listed.json()["value"].as_array().unwrap().clone();
    assert_eq!(faults.len(), 2);
    assert_eq!(faults[0]["count"], 3);
    assert_eq!(faults[1]["drop"], true);
    // A fault with no path would match anything, yet control endpoints are never faulted.
    assert_eq!(state(&client, &emulator).await["writes"], 0);
    let cleared = client
        .send(
            Method::DELETE,
            &format!("{}/_emulator/faults", emulator.base),
            None,
        )
        .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert_eq!(
        client.get(&partners_url(&emulator, "beta")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn invalid_faults_are_refused() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for fault in [
        json!({"Status": 500}),
        json!({"status": 500, "retry_after": 1}),
        json!({"status": 200}),
        json!({"status": 500, "count": 0}),
        json!({"path": "/v1.0"}),
        json!({"status": "500"}),
        json!({"delayMs": 10_000_000}),
    ] {
        let refused = add_fault(&client, &emulator, fault.clone()).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid fault"),
            "{fault}"
        );
    }
    let pending = client
        .get(&format!("{}/_emulator/faults", emulator.base))
        .await
        .json();
    assert_eq!(pending["value"], json!([]));
}

#[tokio::test]
async fn the_state_dump_shows_every_collection_and_counts_writes() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let empty = state(&client, &emulator).await;
    assert_eq!(
        empty
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [
            "partners",
            "identitySynchronization",
            "deletedPartners",
            "deletedSyncPolicies",
            "mtoTemplate",
            "writes"
        ]
    );
    assert_eq!(empty["writes"], 0);
    assert_eq!(
        empty["mtoTemplate"]["templateApplicationLevel"],
        "newPartners,existingPartners"
    );

    create_partner(&client, &emulator, PARTNER).await;
    create_partner(&client, &emulator, OTHER).await;
    create_sync(
        &client,
        &emulator,
        PARTNER,
        json!({"displayName": "Fabrikam"}),
    )
    .await;
    client
        .send(Method::DELETE, &partner_url(&emulator, "v1.0", OTHER), None)
        .await;
    // Reads and failed writes do not count.
    client.get(&partners_url(&emulator, "v1.0")).await;
    client
        .send(Method::DELETE, &partner_url(&emulator, "v1.0", OTHER), None)
        .await;

    let s = state(&client, &emulator).await;
    assert_eq!(s["writes"], 4);
    assert_eq!(s["partners"][PARTNER]["tenantId"], PARTNER);
    assert!(s["partners"].get(OTHER).is_none());
    // The stored shape is beta's, the superset.
    assert!(s["partners"][PARTNER].get("deletedDateTime").is_some());
    assert_eq!(
        s["identitySynchronization"][PARTNER]["displayName"],
        "Fabrikam"
    );
    assert!(s["deletedPartners"][OTHER]["deletedDateTime"].is_string());
    assert_eq!(s["deletedSyncPolicies"], json!({}));
}

#[tokio::test]
async fn reset_returns_the_emulator_to_empty() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    add_fault(&client, &emulator, json!({"status": 500, "path": "/beta"})).await;
    let reset = client
        .send(
            Method::POST,
            &format!("{}/_emulator/reset", emulator.base),
            None,
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    let s = state(&client, &emulator).await;
    assert_eq!(s["partners"], json!({}));
    assert_eq!(s["writes"], 0);
    assert!(request_log(&client, &emulator).await.is_empty());
    assert_eq!(
        client.get(&partners_url(&emulator, "beta")).await.status,
        StatusCode::OK,
        "faults are gone too"
    );
}

#[tokio::test]
async fn the_request_log_lists_graph_requests_only_with_their_status() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    assert!(request_log(&client, &emulator).await.is_empty());
    create_partner(&client, &emulator, PARTNER).await;
    client
        .get(&format!(
            "{}?$select=tenantId",
            partners_url(&emulator, "beta")
        ))
        .await;
    client.get(&format!("{}/me", emulator.base)).await;
    state(&client, &emulator).await;
    let log = request_log(&client, &emulator).await;
    assert_eq!(
        log,
        [
            json!({"method": "POST", "path": "/v1.0/policies/crossTenantAccessPolicy/partners", "status": 201}),
            json!({"method": "GET", "path": "/beta/policies/crossTenantAccessPolicy/partners?$select=tenantId", "status": 200}),
            json!({"method": "GET", "path": "/me", "status": 400}),
        ]
    );
    let cleared = client
        .send(
            Method::DELETE,
            &format!("{}/_emulator/requests", emulator.base),
            None,
        )
        .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(request_log(&client, &emulator).await.is_empty());
}

#[tokio::test]
async fn echo_streams_the_body_back_with_method_uri_and_headers() {
    let emulator = spawn_emulator().await;
    let client = TestClient::without_token();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/csv"));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    let body = Bytes::from(
        (0..100_000u32)
            .map(|i| (i % 256) as u8)
            .collect::<Vec<u8>>(),
    );
    let echoed = client
        .send_raw(
            Method::PATCH,
            &format!("{}/_emulator/echo/any/path?q=1&x=%20y", emulator.base),
            headers,
            body.clone(),
        )
        .await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.body, body);
    assert_eq!(echoed.header("content-type"), Some("text/csv"));
    assert_eq!(echoed.header("x-echo-method"), Some("PATCH"));
    assert_eq!(echoed.header("x-echo-version"), Some("HTTP/1.1"));
    assert_eq!(
        echoed.header("x-echo-uri"),
        Some("/_emulator/echo/any/path?q=1&x=%20y")
    );
    let seen: Value = serde_json::from_str(echoed.header("x-echo-headers").unwrap()).unwrap();
    assert_eq!(seen["x-multi"], json!(["one", "two"]));
    assert_eq!(seen["content-type"], json!(["text/csv"]));
    assert_eq!(seen["host"], json!([emulator.addr.to_string()]));

    let bare = client
        .send_raw(
            Method::POST,
            &format!("{}/_emulator/echo", emulator.base),
            HeaderMap::new(),
            Bytes::from_static(b"abc"),
        )
        .await;
    assert_eq!(bare.body, "abc");
    assert_eq!(
        bare.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(bare.header("x-echo-method"), Some("POST"));
}

#[tokio::test]
async fn bytes_streams_the_requested_pattern() {
    let emulator = spawn_emulator().await;
    let client = TestClient::without_token();
    let size = 3 * 64 * 1024 + 5;
    let response = client
        .get(&format!("{}/_emulator/bytes?size={size}", emulator.base))
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(response.body.len(), size);
    assert!(
        response
            .body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
    let empty = client
        .get(&format!("{}/_emulator/bytes?size=0", emulator.base))
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.is_empty());
    for query in ["", "?size=-1", "?size=lots"] {
        let refused = client
            .get(&format!("{}/_emulator/bytes{query}", emulator.base))
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
    }
}

#[tokio::test]
async fn unknown_control_endpoints_are_404_and_wrong_methods_405() {
    let emulator = spawn_emulator().await;
    let client = TestClient::without_token();
    let missing = client
        .get(&format!("{}/_emulator/nothing", emulator.base))
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "NotFound", None);
    for (method, endpoint) in [
        (Method::POST, "state"),
        (Method::GET, "reset"),
        (Method::PUT, "faults"),
        (Method::POST, "bytes"),
    ] {
        let refused = client
            .send(
                method,
                &format!("{}/_emulator/{endpoint}", emulator.base),
                None,
            )
            .await;
        assert_error(
            &refused,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            None,
        );
    }
}
