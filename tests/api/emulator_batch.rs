//! The Graph emulator's `$batch`: ordering, 424s, envelope errors and per-request rules.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::emulator::{OTHER, PARTNER, VERSIONS, assert_error, create_partner, create_sync, state};
use crate::helpers::{TestClient, TestEmulator, TestResponse, spawn_emulator, token_with_scopes};

fn batch_url(emulator: &TestEmulator, version: &str) -> String {
    format!("{}/{version}/$batch", emulator.base)
}

async fn batch(
    client: &TestClient,
    emulator: &TestEmulator,
    version: &str,
    requests: Value,
) -> TestResponse {
    client
        .send(
            Method::POST,
            &batch_url(emulator, version),
            Some(json!({ "requests": requests })),
        )
        .await
}

/// The sub-response with this id (Graph does not promise any order).
#[track_caller]
fn entry<'a>(response: &'a Value, id: &str) -> &'a Value {
    response["responses"]
        .as_array()
        .expect("responses")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no response {id}: {response}"))
}

fn partners_path() -> &'static str {
    "/policies/crossTenantAccessPolicy/partners"
}

fn sync_path(id: &str) -> String {
    format!("/policies/crossTenantAccessPolicy/partners/{id}/identitySynchronization")
}

#[tokio::test]
async fn a_batch_runs_its_requests_in_depends_on_order_under_the_batch_version() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for (version, id) in [("v1.0", PARTNER), ("beta", OTHER)] {
        let response = batch(
            &client,
            &emulator,
            version,
            json!([
                // Listed first but depends on the PUT, which depends on the POST.
                {"id": "read", "method": "GET", "url": sync_path(id), "dependsOn": ["put"]},
                {"id": "put", "method": "PUT", "url": sync_path(id), "dependsOn": ["create"],
                 "headers": {"Content-Type": "application/json"},
                 "body": {"displayName": "Batched", "userSyncInbound": {"isSyncAllowed": true}}},
                {"id": "create", "method": "POST", "url": partners_path().trim_start_matches('/'),
                 "headers": {"content-type": "application/json"}, "body": {"tenantId": id}},
            ]),
        )
        .await;
        assert_eq!(response.status, StatusCode::OK, "{response:?}");
        assert!(response.header("request-id").is_some());
        let body = response.json();
        assert_eq!(body["responses"].as_array().unwrap().len(), 3);
        let create = entry(&body, "create");
        assert_eq!(create["status"], 201);
        assert_eq!(create["headers"]["OData-Version"], "4.0");
        assert!(
            create["headers"]["Content-Type"]
                .as_str()
                .unwrap()
                .starts_with("application/json;odata.metadata=minimal")
        );
        assert_eq!(create["body"]["tenantId"], id);
        let put = entry(&body, "put");
        assert_eq!(put["status"], 204);
        assert!(put.get("body").is_none(), "an empty body is omitted: {put}");
        let read = entry(&body, "read");
        assert_eq!(read["status"], 200);
        assert_eq!(read["body"]["displayName"], "Batched");
        assert_eq!(
            read["body"]["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners('{id}')/identitySynchronization/$entity"
            )
        );
        assert_eq!(
            read["body"].get("groupSyncInbound").is_some(),
            version == "beta"
        );
    }
    assert_eq!(state(&client, &emulator).await["writes"], 4);
}

#[tokio::test]
async fn dependents_of_failed_requests_answer_424_transitively() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let response = batch(
        &client,
        &emulator,
        "v1.0",
        json!([
            {"id": "1", "method": "GET", "url": format!("{}/{PARTNER}", partners_path())},
            {"id": "2", "method": "PUT", "url": sync_path(PARTNER), "dependsOn": ["1"],
             "headers": {"Content-Type": "application/json"}, "body": {}},
            {"id": "3", "method": "GET", "url": partners_path(), "dependsOn": ["2"]},
            {"id": "4", "method": "GET", "url": partners_path()},
        ]),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    let missing = entry(&body, "1");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["body"]["error"]["code"], "Request_ResourceNotFound");
    assert_eq!(missing["headers"]["Content-Type"], "application/json");
    for id in ["2", "3"] {
        let failed = entry(&body, id);
        assert_eq!(failed["status"], 424, "{failed}");
        assert_eq!(failed["body"]["error"]["code"], "FailedDependency");
        assert!(failed["body"]["error"]["innerError"]["request-id"].is_string());
    }
    assert_eq!(entry(&body, "4")["status"], 200);
    assert_eq!(state(&client, &emulator).await["writes"], 0);
}

#[tokio::test]
async fn envelope_errors_fail_the_whole_batch_and_run_nothing() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let create = |id: &str| {
        json!({"id": id, "method": "POST", "url": partners_path(),
               "headers": {"Content-Type": "application/json"}, "body": {"tenantId": PARTNER}})
    };
    let too_many: Vec<Value> = (0..21).map(|i| create(&i.to_string())).collect();
    let cases = [
        json!({}),
        json!({"requests": {}}),
        json!({"requests": []}),
        json!({ "requests": too_many }),
        json!({"requests": [create("a"), create("A")]}),
        json!({"requests": [create("a"), {"id": "b", "method": "GET", "url": "/policies", "dependsOn": ["zzz"]}]}),
        json!({"requests": [
            {"id": "a", "method": "GET", "url": partners_path(), "dependsOn": ["b"]},
            {"id": "b", "method": "GET", "url": partners_path(), "dependsOn": ["a"]},
            create("c"),
        ]}),
        json!({"requests": [{"id": "a", "method": "GET"}, create("b")]}),
        json!({"requests": [{"id": 1, "method": "GET", "url": partners_path()}]}),
    ];
    for envelope in cases {
        let refused = client
            .send(
                Method::POST,
                &batch_url(&emulator, "v1.0"),
                Some(envelope.clone()),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
        assert!(
            !refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{envelope}"
        );
    }
    let absolute = batch(
        &client,
        &emulator,
        "v1.0",
        json!([create("1"), {"id": "2", "method": "GET", "url": "https://graph.microsoft.com/v1.0/policies/crossTenantAccessPolicy/partners"}]),
    )
    .await;
    assert_error(
        &absolute,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        Some("Invalid batch payload format."),
    );
    let malformed = client
        .send_raw(
            Method::POST,
            &batch_url(&emulator, "beta"),
            {
                let mut h = HeaderMap::new();
                h.insert("content-type", HeaderValue::from_static("application/json"));
                h
            },
            Bytes::from_static(b"{\"requests\": ["),
        )
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "BadRequest", None);
    assert_eq!(state(&client, &emulator).await["writes"], 0, "nothing ran");
}

#[tokio::test]
async fn sub_requests_that_repeat_the_version_are_unknown_segments() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for version in VERSIONS {
        let response = batch(
            &client,
            &emulator,
            version,
            json!([{"id": "1", "method": "GET", "url": format!("/{version}{}", partners_path())}]),
        )
        .await;
        assert_eq!(response.status, StatusCode::OK);
        let sub = entry(&response.json(), "1").clone();
        assert_eq!(sub["status"], 400);
        assert_eq!(sub["body"]["error"]["code"], "BadRequest");
        assert_eq!(
            sub["body"]["error"]["message"],
            format!("Resource not found for the segment '{version}'.")
        );
    }
}

#[tokio::test]
async fn sub_request_bodies_need_a_content_type_and_may_be_base64() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(br#"{"displayName":"From base64"}"#);
    let response = batch(
        &client,
        &emulator,
        "v1.0",
        json!([
            {"id": "bare", "method": "PUT", "url": sync_path(PARTNER), "body": {"displayName": "x"}},
            {"id": "b64", "method": "PUT", "url": sync_path(PARTNER), "dependsOn": ["bare"],
             "headers": {"Content-Type": "application/json"}, "body": encoded},
            {"id": "plain", "method": "PATCH", "url": sync_path(PARTNER),
             "headers": {"Content-Type": "text/plain"}, "body": {"displayName": "x"}},
        ]),
    )
    .await;
    let body = response.json();
    let bare = entry(&body, "bare");
    assert_eq!(bare["status"], 400);
    assert_eq!(bare["body"]["error"]["code"], "BadRequest");
    assert_eq!(entry(&body, "b64")["status"], 424, "bare failed first");
    let plain = entry(&body, "plain");
    assert_eq!(plain["status"], 400);
    assert!(
        plain["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Unable to read JSON request payload")
    );

    let response = batch(
        &client,
        &emulator,
        "v1.0",
        json!([{"id": "b64", "method": "PUT", "url": sync_path(PARTNER),
                "headers": {"Content-Type": "application/json"}, "body": encoded}]),
    )
    .await;
    assert_eq!(entry(&response.json(), "b64")["status"], 204);
    assert_eq!(
        state(&client, &emulator).await["identitySynchronization"][PARTNER]["displayName"],
        "From base64"
    );
}

#[tokio::test]
async fn nested_batches_are_refused_per_request() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let response = batch(
        &client,
        &emulator,
        "v1.0",
        json!([
            {"id": "1", "method": "POST", "url": "/$batch",
             "headers": {"Content-Type": "application/json"},
             "body": {"requests": [{"id": "a", "method": "GET", "url": partners_path()}]}},
            {"id": "2", "method": "GET", "url": partners_path()},
        ]),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    let nested = entry(&body, "1");
    assert_eq!(nested["status"], 400);
    assert_eq!(nested["body"]["error"]["code"], "BadRequest");
    assert_eq!(entry(&body, "2")["status"], 200);
}

#[tokio::test]
async fn sub_requests_are_authorised_with_the_batch_token_only() {
    let emulator = spawn_emulator().await;
    create_partner(&TestClient::new(), &emulator, PARTNER).await;
    let reader = TestClient::with_token(token_with_scopes("Policy.Read.All"));
    let admin = format!("Bearer {}", crate::helpers::admin_token());
    let response = batch(
        &reader,
        &emulator,
        "v1.0",
        json!([
            {"id": "read", "method": "GET", "url": partners_path()},
            // A sub-request's own Authorization header does not lift it above the batch's token.
            {"id": "write", "method": "PUT", "url": sync_path(PARTNER),
             "headers": {"Content-Type": "application/json", "Authorization": admin},
             "body": {}},
        ]),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    let body = response.json();
    assert_eq!(entry(&body, "read")["status"], 200);
    let write = entry(&body, "write");
    assert_eq!(write["status"], 403);
    assert_eq!(
        write["body"]["error"]["code"],
        "Authorization_RequestDenied"
    );

    let anonymous = TestClient::without_token();
    let refused = batch(
        &anonymous,
        &emulator,
        "v1.0",
        json!([{"id": "1", "method": "GET", "url": partners_path()}]),
    )
    .await;
    assert_error(
        &refused,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        None,
    );
}

#[tokio::test]
async fn sub_request_errors_are_graph_errors_with_the_batch_request_id() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({})).await;
    let response = batch(
        &client,
        &emulator,
        "beta",
        json!([
            {"id": "conflict", "method": "put", "url": sync_path(PARTNER),
             "headers": {"Content-Type": "application/json", "client-request-id": "mine"}, "body": {}},
            {"id": "method", "method": "POST", "url": "/policies/deletedItems/crossTenantPartners",
             "headers": {"Content-Type": "application/json"}, "body": {}},
        ]),
    )
    .await;
    let request_id = response.header("request-id").unwrap().to_owned();
    let body = response.json();
    let conflict = entry(&body, "conflict");
    assert_eq!(
        conflict["status"], 409,
        "methods are matched case-insensitively"
    );
    assert_eq!(
        conflict["body"]["error"]["details"][0]["code"],
        "ConflictingObjects"
    );
    assert_eq!(
        conflict["body"]["error"]["innerError"]["request-id"],
        request_id
    );
    assert_eq!(
        conflict["body"]["error"]["innerError"]["client-request-id"],
        "mine"
    );
    let method = entry(&body, "method");
    assert_eq!(method["status"], 405);
    assert_eq!(method["body"]["error"]["code"], "Request_BadRequest");
}
