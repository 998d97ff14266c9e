//! Governed changes end to end: every identitySynchronization change through the proxy lands with
//! `received` + `completed` events or is refused with a `denied` event, and the emulator's state
//! never changes without a matching record. The log is read back with `syncgate audit list`, as an
//! auditor would.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;
use crate::helpers::*;

pub const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const OTHER: &str = "0a1b2c3d-0000-4000-8000-00000000beef";

/// Every event in the log, oldest first, via the CLI.
pub fn audit_events(db: &Path) -> Vec<Value> {
    let out = Command::new(syncgate_bin())
        .args([
            "audit", "list", "--format", "json", "--limit", "1000000", "--db",
        ])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The events of one operation, by its `x-syncgate-audit-id`.
pub fn operation(db: &Path, id: &str) -> Vec<Value> {
    audit_events(db)
        .into_iter()
        .filter(|e| e["operation_id"] == id)
        .collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

pub fn partners(base: &str) -> String {
    format!("{base}/v1.0/policies/crossTenantAccessPolicy/partners")
}

pub fn sync_url(base: &str, version: &str, partner: &str) -> String {
    format!(
        "{base}/{version}/policies/crossTenantAccessPolicy/partners/{partner}/identitySynchronization"
    )
}

/// An emulator holding partner [`PARTNER`], and a proxy with no rules in front of it.
async fn seeded_proxy() -> (TestEmulator, TestProxy) {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = spawn_proxy(&emulator.base).await;
    (emulator, proxy)
}

/// Create the partner straight at the emulator (setup, not under test).
pub async fn seed_partner(emulator: &TestEmulator, partner: &str) {
    let resp = TestClient::new()
        .send(
            Method::POST,
            &partners(&emulator.base),
            Some(json!({ "tenantId": partner })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{:?}", resp.body);
}

async fn state(emulator: &TestEmulator) -> Value {
    TestClient::new()
        .get(&format!("{}/_emulator/state", emulator.base))
        .await
        .json()
}

/// Non-GET requests the emulator received.
async fn writes_received(emulator: &TestEmulator) -> Vec<Value> {
    let log = TestClient::new()
        .get(&format!("{}/_emulator/requests", emulator.base))
        .await
        .json();
    log["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] != "GET")
        .cloned()
        .collect()
}

/// The response's operation left exactly one `denied` event.
fn assert_denied(db: &Path, resp: &TestResponse) {
    assert_eq!(
        kinds(&operation(db, &audit_id(resp))),
        ["denied"],
        "{:?}",
        resp.body
    );
}

/// Nothing but the test's seeding POST reached the emulator as a write.
async fn assert_only_seeding_written(emulator: &TestEmulator) {
    let writes = writes_received(emulator).await;
    assert_eq!(writes.len(), 1, "only the seeding POST: {writes:?}");
}

fn audit_id(resp: &TestResponse) -> String {
    resp.header("x-syncgate-audit-id")
        .unwrap_or_else(|| panic!("no x-syncgate-audit-id: {:?} {:?}", resp.status, resp.body))
        .to_owned()
}

#[tokio::test]
async fn a_sync_policy_created_through_the_proxy_is_recorded_before_and_after() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let body = json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}});
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "client-request-id",
        HeaderValue::from_static("5d2c8e9a-0000-4000-8000-000000000001"),
    );
    let resp = client
        .send_raw(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            headers,
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let id = audit_id(&resp);

    let events = operation(&proxy.db_path, &id);
    assert_eq!(kinds(&events), ["received", "completed"]);
    let (received, completed) = (&events[0], &events[1]);
    assert!(received["seq"].as_i64() < completed["seq"].as_i64());
    for e in &events {
        assert_eq!(e["operation"], "sync_create");
        assert_eq!(e["method"], "PUT");
        assert_eq!(e["partner_tenant_id"], PARTNER);
        assert_eq!(e["api_version"], "v1.0");
        assert_eq!(
            e["canonical_path"],
            format!(
                "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
            )
        );
        assert_eq!(e["actor"]["upn"], "admin@contoso.example");
        assert_eq!(e["actor"]["oid"], "11111111-1111-1111-1111-111111111111");
        assert_eq!(
            e["actor"]["scp"],
            json!(["Policy.ReadWrite.CrossTenantAccess"])
        );
        assert!(
            e["actor"]["token_hmac"]
                .as_str()
                .is_some_and(|h| h.len() == 64)
        );
        assert!(
            e["actor"]["caller_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
        assert_eq!(
            e["client_request_id"],
            "5d2c8e9a-0000-4000-8000-000000000001"
        );
        assert_eq!(e["request_body"], body);
        assert_eq!(e["before"], json!({"state": "absent"}));
        assert_eq!(e["decision"], "allow");
    }
    assert_eq!(completed["upstream_status"], 204);
    assert_eq!(completed["effect"], "applied");
    assert!(
        completed["request_id"].is_string(),
        "Graph's request-id is kept"
    );
    assert_eq!(completed["after"]["state"], "present");
    assert_eq!(completed["after"]["value"]["displayName"], "Fabrikam");
    assert_eq!(
        completed["after"]["value"]["userSyncInbound"],
        json!({"isSyncAllowed": true})
    );
    assert!(completed["after"]["value"].get("@odata.context").is_none());
    assert_eq!(completed["diff"][0]["op"], "replace");
    assert_eq!(completed["diff"][0]["path"], "");

    let s = state(&emulator).await;
    assert_eq!(
        s["identitySynchronization"][PARTNER]["displayName"],
        "Fabrikam"
    );
}

#[tokio::test]
async fn a_patch_records_an_rfc6902_diff_of_exactly_what_changed() {
    let (_emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let created = client
        .send(
            Method::PUT,
            &url,
            Some(json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": false}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT);
    let resp = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"userSyncInbound": {"isSyncAllowed": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    let completed = events.iter().find(|e| e["kind"] == "completed").unwrap();
    assert_eq!(completed["operation"], "sync_update");
    assert_eq!(completed["effect"], "applied");
    assert_eq!(
        completed["diff"],
        json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}])
    );
    assert_eq!(
        completed["before"]["value"]["userSyncInbound"]["isSyncAllowed"],
        false
    );
    assert_eq!(
        completed["after"]["value"]["userSyncInbound"]["isSyncAllowed"],
        true
    );
}

#[tokio::test]
async fn graph_errors_are_relayed_and_recorded_as_not_applied() {
    let (_emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    // PATCH before the policy exists: Graph's Directory_ObjectNotFound.
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "x"})))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.error_code(), "Directory_ObjectNotFound");
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["received", "completed"]);
    assert_eq!(events[1]["upstream_status"], 404);
    assert_eq!(events[1]["effect"], "not_applied");
    assert_eq!(events[1]["after"], json!({"state": "absent"}));
}

/// Every alias form of docs/graph.md §7 reaches the same governed route: each lands with its
/// events (or is refused with one), and the emulator never changes without a record.
#[tokio::test]
async fn every_alias_form_of_a_sync_change_is_governed() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    seed_partner(&emulator, PARTNER).await;
    let through = crate::egress::Through::ReverseProxy {
        client: TestClient::new(),
        base: proxy.url.clone(),
    };
    let expected_writes = every_alias_form_is_governed(&through, &proxy.db_path).await;
    let through_proxy: Vec<_> = writes_received(&emulator)
        .await
        .into_iter()
        .filter(|w| {
            w["path"]
                .as_str()
                .unwrap()
                .contains("identitySynchronization")
        })
        .collect();
    assert_eq!(through_proxy.len(), expected_writes);
}

/// Create, change and delete [`PARTNER`]'s policy through every alias form, `through` syncgate
/// (reverse-proxy mode, or egress mode's intercepted tunnel), and check each write's events in
/// the log at `db`; the number of writes made.
pub(crate) async fn every_alias_form_is_governed(
    through: &crate::egress::Through,
    db: &Path,
) -> usize {
    let upper = PARTNER.to_uppercase();
    let forms = [
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
        format!(
            "/V1.0/Policies/CrossTenantAccessPolicy/Partners/{PARTNER}/IdentitySynchronization"
        ),
        format!("/v1.0/POLICIES/crosstenantaccesspolicy/partners/{upper}/identitysynchronization"),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization/"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners('{PARTNER}')/identitySynchronization"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners(tenantId='{PARTNER}')/identitySynchronization"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%53ynchronization"
        ),
        format!(
            "/v1.0/%70olicies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
        format!(
            "/beta/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
        format!(
            "/BETA/policies/crossTenantAccessPolicy/partners('{upper}')/identitySynchronization/"
        ),
    ];
    let mut expected_writes = 0;
    for (i, form) in forms.iter().enumerate() {
        // Create, change and delete through the same alias.
        let put = through
            .send(Method::PUT, form, Some(json!({"displayName": format!("form {i}"), "userSyncInbound": {"isSyncAllowed": true}})))
            .await;
        assert_eq!(
            put.status,
            StatusCode::NO_CONTENT,
            "PUT via {form}: {:?}",
            put.body
        );
        let patch = through
            .send(
                Method::PATCH,
                form,
                Some(json!({"displayName": format!("form {i}!")})),
            )
            .await;
        assert_eq!(patch.status, StatusCode::NO_CONTENT, "PATCH via {form}");
        let delete = through.send(Method::DELETE, form, None).await;
        assert_eq!(delete.status, StatusCode::NO_CONTENT, "DELETE via {form}");
        expected_writes += 3;
        for (resp, kind) in [
            (&put, "sync_create"),
            (&patch, "sync_update"),
            (&delete, "sync_delete"),
        ] {
            let events = operation(db, &audit_id(resp));
            assert_eq!(kinds(&events), ["received", "completed"], "{form}");
            assert_eq!(events[1]["operation"], kind, "{form}");
            assert_eq!(events[1]["effect"], "applied", "{form}: {:?}", events[1]);
            assert_eq!(events[1]["partner_tenant_id"], PARTNER);
        }
    }
    let received = audit_events(db)
        .into_iter()
        .filter(|e| {
            e["kind"] == "received"
                && e["canonical_path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/identitysynchronization"))
        })
        .count();
    assert_eq!(received, expected_writes, "one received event per write");
    expected_writes
}

#[tokio::test]
async fn malformed_and_strange_paths_under_the_governed_tree_are_refused_and_recorded() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let body = Some(json!({"displayName": "x"}));
    let cases = [
        (Method::PATCH, format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%2553ynchronization")),
        (Method::PATCH, format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/./identitySynchronization")),
        (Method::PATCH, format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}//identitySynchronization")),
        (Method::PATCH, "/v1.0/policies/crossTenantAccessPolicy/partners/fabrikam.example/identitySynchronization".to_string()),
        (Method::PATCH, format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization/somethingNew")),
        (Method::POST, "/beta/policies/crossTenantIdentitySyncPolicy/partners".to_string()),
    ];
    for (method, path) in cases {
        let resp = client
            .send(
                method.clone(),
                &format!("{}{path}", proxy.url),
                body.clone(),
            )
            .await;
        assert!(
            resp.status == StatusCode::BAD_REQUEST || resp.status == StatusCode::FORBIDDEN,
            "{method} {path}: {} {:?}",
            resp.status,
            resp.body
        );
        assert!(
            resp.error_code().starts_with("Syncgate") || resp.error_code().contains("BadRequest"),
            "{path}"
        );
        let events = operation(&proxy.db_path, &audit_id(&resp));
        assert_eq!(kinds(&events), ["denied"], "{path}");
        assert_eq!(events[0]["decision"], "deny");
    }
    assert!(
        writes_received(&emulator)
            .await
            .iter()
            .all(|w| w["method"] == "POST" && w["path"].as_str().unwrap().ends_with("/partners")),
        "nothing but the seeding POST reached the emulator"
    );
}

#[tokio::test]
async fn method_override_headers_on_policies_paths_are_refused() {
    let (emulator, proxy) = seeded_proxy().await;
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "x-http-method-override",
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_static("DELETE"),
        );
        let resp = TestClient::new()
            .send_raw(
                Method::GET,
                &sync_url(&proxy.url, "v1.0", PARTNER),
                headers,
                Bytes::new(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{header}");
        assert_eq!(resp.error_code(), "SyncgateMethodOverrideRefused");
    }
    assert_only_seeding_written(&emulator).await;
}

#[tokio::test]
async fn strictly_invalid_bodies_are_refused_before_anything_goes_upstream() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let bodies: [&[u8]; 7] = [
        br#"{"displayName":"a","displayName":"b"}"#,
        br#"{"displayName":"a"} {"x":1}"#,
        b"{\"displayName\":\"\xff\xfe\"}",
        br#"{"displayname":"a"}"#,
        br#"{"userSyncInbound":{"IsSyncAllowed":true}}"#,
        br#"{"userSyncInbound":{"isSyncAllowed":"yes"}}"#,
        br#"{"groupSyncInbound":{"isSyncAllowed":true}}"#, // beta-only in v1.0
    ];
    for body in bodies {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "client-request-id",
            HeaderValue::from_static("c1d2e3f4-0000-4000-8000-000000000042"),
        );
        let resp = client
            .send_raw(Method::PUT, &url, headers, Bytes::from_static(body))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_denied(&proxy.db_path, &resp);
        let events = operation(&proxy.db_path, &audit_id(&resp));
        assert_eq!(
            events[0]["client_request_id"], "c1d2e3f4-0000-4000-8000-000000000042",
            "a refusal keeps the caller's client-request-id"
        );
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let huge = format!(r#"{{"displayName":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let resp = client
        .send_raw(Method::PUT, &url, headers, Bytes::from(huge))
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_only_seeding_written(&emulator).await;
    assert!(
        state(&emulator).await["identitySynchronization"]
            .as_object()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn partner_changes_that_touch_sync_are_governed_and_others_pass() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    // Deep insert: a partner POST carrying identitySynchronization.
    let resp = client
        .send(Method::POST, &partners(&proxy.url), Some(json!({
            "tenantId": PARTNER,
            "identitySynchronization": {"displayName": "Deep", "userSyncInbound": {"isSyncAllowed": true}}
        })))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{:?}", resp.body);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["received", "completed"]);
    assert_eq!(events[1]["operation"], "partner_create");
    assert_eq!(events[1]["partner_tenant_id"], PARTNER);
    assert_eq!(
        events[1]["after"]["value"]["identitySynchronization"]["displayName"],
        "Deep"
    );

    // automaticUserConsentSettings is what makes sync silent: governed.
    let url = format!("{}/{PARTNER}", partners(&proxy.url));
    let resp = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"automaticUserConsentSettings": {"inboundAllowed": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(events[1]["operation"], "partner_update");
    assert_eq!(events[1]["effect"], "applied");

    // Every partner write is governed, B2B settings included: the partner document is one
    // recorded resource, so an unrecorded write to it would look like drift later.
    let resp = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"inboundTrust": {"isMfaAccepted": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["received", "completed"]);
    assert_eq!(
        events[1]["diff"],
        json!([{"op": "replace", "path": "/inboundTrust", "value": {"isMfaAccepted": true, "isCompliantDeviceAccepted": null, "isHybridAzureADJoinedDeviceAccepted": null}}])
    );

    // Deleting a partner is governed (Graph refuses while a sync policy exists: recorded too).
    let resp = client.send(Method::DELETE, &url, None).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(
        kinds(&events),
        ["received", "completed"],
        "no drift: every earlier write was recorded"
    );
    assert_eq!(events[1]["operation"], "partner_delete");
    assert_eq!(events[1]["effect"], "not_applied");
}

#[tokio::test]
async fn beta_soft_delete_restore_and_purge_are_governed() {
    let (_emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "beta", PARTNER);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(json!({"displayName": "F"})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client.send(Method::DELETE, &url, None).await.status,
        StatusCode::NO_CONTENT
    );
    let deleted = format!(
        "{}/beta/policies/deletedItems/crossTenantSyncPolicyPartners/{PARTNER}",
        proxy.url
    );
    for (method, url, kind, effect) in [
        (
            Method::POST,
            format!("{deleted}/microsoft.graph.restore"),
            "sync_restore",
            "applied",
        ),
        (Method::DELETE, url.clone(), "sync_delete", "applied"),
        (
            Method::DELETE,
            deleted.clone(),
            "deleted_sync_purge",
            "applied",
        ),
    ] {
        let resp = client.send(method.clone(), &url, None).await;
        assert!(
            resp.status.is_success(),
            "{method} {url}: {} {:?}",
            resp.status,
            resp.body
        );
        let events = operation(&proxy.db_path, &audit_id(&resp));
        assert_eq!(kinds(&events), ["received", "completed"]);
        assert_eq!(events[1]["operation"], kind);
        assert_eq!(events[1]["effect"], effect, "{kind}: {:?}", events[1]);
    }
    // Writes Graph's SDKs could generate on deleted collections are refused, never forwarded.
    let resp = client
        .send(
            Method::POST,
            &format!(
                "{}/beta/policies/deletedItems/crossTenantPartners",
                proxy.url
            ),
            Some(json!({})),
        )
        .await;
    assert!(resp.status.is_client_error());
    assert_denied(&proxy.db_path, &resp);
}

#[tokio::test]
async fn the_mto_template_is_governed() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    let url = format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
        proxy.url
    );
    let resp = client.send(Method::PATCH, &url, Some(json!({"templateApplicationLevel": "newPartners", "userSyncInbound": {"isSyncAllowed": true}}))).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(events[1]["operation"], "template_update");
    assert_eq!(events[1]["effect"], "applied");
    let resp = client
        .send(Method::POST, &format!("{url}/resetToDefaultSettings"), None)
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert_eq!(
        operation(&proxy.db_path, &audit_id(&resp))[1]["operation"],
        "template_reset"
    );
}

#[tokio::test]
async fn a_change_made_around_the_proxy_is_recorded_as_drift() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(
                Method::PUT,
                &url,
                Some(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": false}}))
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Someone changes the policy straight at Graph.
    let direct = sync_url(&emulator.base, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(
                Method::PATCH,
                &direct,
                Some(json!({"userSyncInbound": {"isSyncAllowed": true}}))
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "G"})))
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["drift", "received", "completed"]);
    assert_eq!(
        events[0]["diff"],
        json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}])
    );
}

#[tokio::test]
async fn concurrent_changes_to_one_partner_are_serialised() {
    let (_emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(json!({"displayName": "0"})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let mut tasks = Vec::new();
    for i in 1..=12 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            client
                .send(
                    Method::PATCH,
                    &url,
                    Some(json!({"displayName": i.to_string()})),
                )
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::NO_CONTENT);
    }
    // Each change's before is exactly the previous change's after: nothing interleaved.
    let completed: Vec<Value> = audit_events(&proxy.db_path)
        .into_iter()
        .filter(|e| e["kind"] == "completed")
        .collect();
    assert_eq!(completed.len(), 13);
    for pair in completed.windows(2) {
        assert_eq!(pair[1]["before"], pair[0]["after"]);
    }
    assert!(
        audit_events(&proxy.db_path)
            .iter()
            .all(|e| e["kind"] != "drift")
    );
}

#[tokio::test]
async fn sync_reads_are_forwarded_and_recorded_only_when_asked() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let client = TestClient::new();
    assert_eq!(
        client
            .send(
                Method::PUT,
                &sync_url(&emulator.base, "v1.0", PARTNER),
                Some(json!({"displayName": "F"}))
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let quiet = spawn_proxy(&emulator.base).await;
    assert_eq!(
        client
            .get(&sync_url(&quiet.url, "v1.0", PARTNER))
            .await
            .status,
        StatusCode::OK
    );
    assert!(audit_events(&quiet.db_path).is_empty());

    let mut raw = proxy_config(&emulator.base);
    raw.audit.record_reads = true;
    let recording = spawn_proxy_with(raw).await;
    let resp = client.get(&sync_url(&recording.url, "v1.0", PARTNER)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["displayName"], "F");
    let events = operation(&recording.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["read"]);
    assert_eq!(events[0]["upstream_status"], 200);
    assert_eq!(events[0]["actor"]["upn"], "admin@contoso.example");
}

#[tokio::test]
async fn a_caller_graph_refuses_gets_graphs_answer_and_nothing_is_written() {
    let (emulator, proxy) = seeded_proxy().await;
    let reader = TestClient::with_token(token_with_scopes("User.Read"));
    let resp = reader
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.error_code(), "Authorization_RequestDenied");
    assert_denied(&proxy.db_path, &resp);
    assert_only_seeding_written(&emulator).await;
}

#[tokio::test]
async fn a_before_read_that_fails_sends_nothing_upstream() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    client
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(json!({"method": "GET", "status": 503, "retryAfter": 3, "count": 1})),
        )
        .await;
    let resp = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F"})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        resp.body
    );
    assert_eq!(resp.error_code(), "SyncgateBeforeStateUnavailable");
    assert!(resp.header("retry-after").is_some());
    assert_denied(&proxy.db_path, &resp);
    assert_only_seeding_written(&emulator).await;
}

#[tokio::test]
async fn a_locked_audit_log_refuses_governed_writes_with_503_and_lets_other_traffic_through() {
    use sqlx::Connection;
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let mut raw = proxy_config(&emulator.base);
    raw.store.busy_timeout = "200ms".into();
    let proxy = spawn_proxy_with(raw).await;
    let client = TestClient::new();

    // Another process holds the database's write lock: the log cannot be written.
    let url = format!("sqlite://{}", proxy.db_path.display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let resp = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F"})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        resp.body
    );
    assert_eq!(resp.error_code(), "SyncgateAuditUnavailable");
    assert_eq!(resp.header("retry-after"), Some("5"));
    assert_eq!(
        writes_received(&emulator).await.len(),
        1,
        "the write was not sent"
    );
    assert!(
        state(&emulator).await["identitySynchronization"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    // Ungoverned traffic keeps flowing.
    assert_eq!(
        client.get(&partners(&proxy.url)).await.status,
        StatusCode::OK
    );

    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);
    let resp = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F"})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::NO_CONTENT,
        "the log is writable again"
    );
}

#[tokio::test]
async fn a_batch_mixing_plain_governed_and_dependent_requests_is_unbatched() {
    let (emulator, proxy) = seeded_proxy().await;
    let through = crate::egress::Through::ReverseProxy {
        client: TestClient::new(),
        base: proxy.url.clone(),
    };
    a_mixed_batch_is_unbatched(&through, &proxy.db_path).await;
    assert_eq!(
        state(&emulator).await["identitySynchronization"][PARTNER]["displayName"],
        "Batched 2"
    );
}

/// A `$batch` of a read, two dependent changes to [`PARTNER`] and two to a partner that does not
/// exist, `through` syncgate in either mode: unbatched, each governed change recorded, Graph's
/// own errors and 424 relayed, the failed one's dependent never run.
pub(crate) async fn a_mixed_batch_is_unbatched(through: &crate::egress::Through, db: &Path) {
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/policies/crossTenantAccessPolicy/partners"},
        {"id": "2", "method": "PUT", "url": format!("policies/crossTenantAccessPolicy/partners('{}')/identitySynchronization", PARTNER.to_uppercase()),
         "headers": {"Content-Type": "application/json"}, "body": {"displayName": "Batched", "userSyncInbound": {"isSyncAllowed": true}}},
        {"id": "3", "method": "PATCH", "url": format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"),
         "headers": {"Content-Type": "application/json"}, "body": {"displayName": "Batched 2"}, "dependsOn": ["2"]},
        {"id": "4", "method": "PATCH", "url": format!("/policies/crossTenantAccessPolicy/partners/{OTHER}/identitySynchronization"),
         "headers": {"Content-Type": "application/json"}, "body": {"displayName": "nope"}},
        {"id": "5", "method": "DELETE", "url": format!("/policies/crossTenantAccessPolicy/partners/{OTHER}/identitySynchronization"), "dependsOn": ["4"]}
    ]});
    let resp = through
        .send(Method::POST, "/v1.0/$batch", Some(batch))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let responses = resp.json()["responses"].as_array().unwrap().clone();
    let by_id = |id: &str| responses.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("2")["status"], 204);
    assert_eq!(by_id("3")["status"], 204);
    assert_eq!(
        by_id("4")["status"],
        404,
        "no partner {OTHER}: Graph's own error"
    );
    assert_eq!(by_id("5")["status"], 424, "depends on a failed request");
    // Header names as Graph spells them in a batch response, syncgate's own as documented.
    assert_eq!(by_id("1")["headers"]["OData-Version"], "4.0");
    assert!(by_id("4")["headers"]["Content-Type"].is_string());
    assert!(by_id("4")["headers"].get("content-type").is_none());
    for id in ["2", "3", "4"] {
        let audit = by_id(id)["headers"]["x-syncgate-audit-id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            kinds(&operation(db, &audit)),
            ["received", "completed"],
            "sub-request {id}"
        );
    }
    let received = audit_events(db)
        .iter()
        .filter(|e| {
            e["kind"] == "received"
                && e["canonical_path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/identitysynchronization"))
        })
        .count();
    assert_eq!(received, 3, "the 424'd request never ran");
}

#[tokio::test]
async fn a_batch_without_governed_requests_is_forwarded_as_one_batch() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let batch = json!({"requests": [
        {"id": "a", "method": "GET", "url": "/policies/crossTenantAccessPolicy/partners"},
        {"id": "b", "method": "GET", "url": format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization")}
    ]});
    let resp = TestClient::new()
        .send(
            Method::POST,
            &format!("{}/beta/$batch", proxy.url),
            Some(batch),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json()["responses"].as_array().unwrap().len(), 2);
    assert!(audit_events(&proxy.db_path).is_empty());
    let batches = TestClient::new()
        .get(&format!("{}/_emulator/requests", emulator.base))
        .await
        .json();
    assert!(
        batches["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/beta/$batch"),
        "the emulator saw the batch itself"
    );
}

#[tokio::test]
async fn malformed_batches_are_refused_with_400() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    let put = |id: &str| json!({"id": id, "method": "PUT", "url": format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"), "headers": {"content-type": "application/json"}, "body": {}});
    let too_many: Vec<Value> = (0..21).map(|i| put(&i.to_string())).collect();
    let cases = [
        json!({"requests": too_many}),
        json!({"requests": [put("x"), put("X")]}),
        json!({"requests": [{"id": "n", "method": "POST", "url": "/$batch", "headers": {"content-type": "application/json"}, "body": {"requests": []}}, put("m")]}),
        json!({"requests": [put("a"), {"id": "b", "method": "GET", "url": "/users", "dependsOn": ["zzz"]}]}),
        json!({"value": []}),
    ];
    for case in cases {
        let resp = client
            .send(
                Method::POST,
                &format!("{}/v1.0/$batch", proxy.url),
                Some(case.clone()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{case}");
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("multipart/mixed; boundary=b"),
    );
    let resp = client
        .send_raw(
            Method::POST,
            &format!("{}/v1.0/$batch", proxy.url),
            headers,
            Bytes::from_static(b"--b\r\n\r\n--b--"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(writes_received(&emulator).await.is_empty());
}

pub async fn fault(emulator: &TestEmulator, spec: Value) {
    let resp = TestClient::new()
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(spec),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{:?}", resp.body);
}

#[tokio::test]
async fn a_5xx_whose_change_landed_anyway_is_recorded_as_applied_despite_error() {
    let (emulator, proxy) = seeded_proxy().await;
    fault(
        &emulator,
        json!({"method": "PUT", "status": 500, "applyThenFail": true}),
    )
    .await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the client sees Graph's error"
    );
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(events[1]["upstream_status"], 500);
    assert_eq!(events[1]["effect"], "applied_despite_error");
    assert_eq!(events[1]["after"]["value"]["displayName"], "F");
}

#[tokio::test]
async fn a_write_graph_silently_ignored_is_recorded_as_ignored() {
    let (emulator, proxy) = seeded_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(
                Method::PUT,
                &url,
                Some(json!({"userSyncInbound": {"isSyncAllowed": false}}))
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    fault(&emulator, json!({"method": "PATCH", "ignoreWrite": true})).await;
    let resp = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"userSyncInbound": {"isSyncAllowed": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(events[1]["effect"], "ignored");
    assert_eq!(events[1]["diff"], json!([]));
}

#[tokio::test]
async fn an_upstream_timeout_after_the_write_records_the_state_read_again() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let mut raw = proxy_config(&emulator.base);
    raw.upstream.timeout = "300ms".into();
    let proxy = spawn_proxy_with(raw).await;
    fault(&emulator, json!({"method": "PUT", "delayMs": 1500})).await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "Slow"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.error_code(), "SyncgateUpstreamTimeout");
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(kinds(&events), ["received", "completed"]);
    assert!(events[1]["upstream_status"].is_null());
    assert!(
        events[1]["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
    // The write was still delayed at the emulator when the after-read ran.
    assert_eq!(events[1]["effect"], "not_applied");
}

/// Kill the proxy (SIGKILL) while governed changes are in flight: every change the emulator
/// received has its `received` event on disk, and the next start records `recovered` with the
/// state read again. Three changes have landed at the emulator when the proxy dies (their answers
/// are held back); two are still held before they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_leaves_every_sent_change_recorded_and_recovers_on_restart() {
    let emulator = spawn_emulator().await;
    let landed: Vec<String> = (0..3)
        .map(|i| format!("9c5d131d-b1c3-4fc4-9e3f-c6557947d55{i}"))
        .collect();
    let held: Vec<String> = (3..5)
        .map(|i| format!("9c5d131d-b1c3-4fc4-9e3f-c6557947d55{i}"))
        .collect();
    for t in landed.iter().chain(&held) {
        seed_partner(&emulator, t).await;
    }
    for t in &landed {
        let path =
            format!("/v1.0/policies/crossTenantAccessPolicy/partners/{t}/identitySynchronization");
        fault(
            &emulator,
            json!({"method": "PUT", "path": path, "delayResponseMs": 30000}),
        )
        .await;
    }
    for t in &held {
        let path =
            format!("/v1.0/policies/crossTenantAccessPolicy/partners/{t}/identitySynchronization");
        fault(
            &emulator,
            json!({"method": "PUT", "path": path, "delayMs": 30000}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("recovery-token");
    std::fs::write(&token_file, admin_token()).unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        format!(
            "[audit]\nrecovery_token_file = {:?}\n",
            token_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let proxy = spawn_child_proxy(&emulator.base, &["--config", config.to_str().unwrap()]);
    let db = proxy.dir.path().join("syncgate.db");

    let client = TestClient::new();
    let mut in_flight = Vec::new();
    for t in landed.iter().chain(&held) {
        let (client, url) = (client.clone(), sync_url(&proxy.url, "v1.0", t));
        in_flight.push(tokio::spawn(async move {
            client
                .try_send_raw(
                    Method::PUT,
                    &url,
                    json_headers(),
                    Bytes::from_static(br#"{"displayName":"in flight"}"#),
                )
                .await
        }));
    }
    // Sync points, no sleeps: the emulator logs a write once it has run it, and the proxy's
    // received events are durable before the writes leave it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let applied = writes_received(&emulator)
            .await
            .iter()
            .filter(|w| w["method"] == "PUT")
            .count();
        let received = audit_events(&db)
            .iter()
            .filter(|e| e["kind"] == "received")
            .count();
        if applied == landed.len() && received == landed.len() + held.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "changes never reached the emulator: {applied} applied, {received} received"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    proxy.signal("KILL");
    let proxy = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        let _ = proxy.child.wait();
        proxy
    })
    .await
    .unwrap();
    for task in in_flight {
        assert!(
            task.await.unwrap().is_err(),
            "no client got an answer from a killed proxy"
        );
    }

    let events = audit_events(&db);
    assert!(
        events.iter().all(|e| e["kind"] != "completed"),
        "the proxy died before any answer"
    );
    let received: Vec<&Value> = events.iter().filter(|e| e["kind"] == "received").collect();
    let applied: Vec<Value> = writes_received(&emulator)
        .await
        .into_iter()
        .filter(|w| w["method"] == "PUT")
        .collect();
    assert_eq!(applied.len(), landed.len());
    for write in &applied {
        let path = write["path"].as_str().unwrap().to_lowercase();
        assert!(
            received
                .iter()
                .any(|e| path.contains(e["partner_tenant_id"].as_str().unwrap())),
            "the emulator ran {path} with no received event"
        );
    }

    // Restart on the same database while the upstream is slow to answer the first recovery
    // re-read: the proxy serves at once, and every unfinished change gets `recovered`, with what
    // the emulator holds now, once its re-read returns.
    let prefix = format!(
        "/v1.0/policies/crossTenantAccessPolicy/partners/{}",
        &landed[0][..30]
    );
    fault(
        &emulator,
        json!({"method": "GET", "path": prefix, "delayMs": 5000, "count": 1}),
    )
    .await;
    let restarted = spawn_child_proxy(
        &emulator.base,
        &[
            "--config",
            config.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ],
    );
    let listed = client.get(&partners(&restarted.url)).await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "recovery does not hold up traffic"
    );
    assert!(
        audit_events(&db).iter().all(|e| e["kind"] != "recovered"),
        "the held re-read has not returned yet"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while audit_events(&db)
        .iter()
        .filter(|e| e["kind"] == "recovered")
        .count()
        < landed.len() + held.len()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "recovery never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let now = state(&emulator).await;
    let events = audit_events(&db);
    let recovered: Vec<&Value> = events.iter().filter(|e| e["kind"] == "recovered").collect();
    assert_eq!(recovered.len(), landed.len() + held.len(), "{events:#?}");
    for r in &recovered {
        let partner = r["partner_tenant_id"].as_str().unwrap();
        if now["identitySynchronization"].get(partner).is_some() {
            assert_eq!(r["after"]["state"], "present", "{r}");
            assert_eq!(r["after"]["value"]["displayName"], "in flight");
            assert_eq!(r["effect"], "applied_despite_error");
        } else {
            assert_eq!(r["after"], json!({"state": "absent"}), "{r}");
            assert_eq!(r["effect"], "not_applied");
        }
    }
    for t in &landed {
        assert!(recovered.iter().any(
            |r| r["partner_tenant_id"] == t.as_str() && r["effect"] == "applied_despite_error"
        ));
    }
    drop(restarted);
    let verify = Command::new(syncgate_bin())
        .args(["audit", "verify", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    drop(proxy); // holds the database's folder
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bearer_token_appears_in_the_database_file_or_the_logs() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let token = syncgate::token::unsigned_jwt(&json!({
        "oid": "22222222-2222-2222-2222-222222222222", "upn": "secret@contoso.example",
        "scp": "Policy.ReadWrite.CrossTenantAccess"
    }));
    let mut proxy = spawn_child_proxy_env(
        &emulator.base,
        &["--log-format", "json"],
        &[("RUST_LOG", "trace")],
    );
    let client = TestClient::with_token(token.clone());
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(json!({"displayName": "F"})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client
            .send(Method::PATCH, &url, Some(json!({"displayName": "G"})))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let refused = client
        .send(Method::PATCH, &url, Some(json!({"bogus": 1})))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    proxy.signal("TERM");
    let proxy = tokio::task::spawn_blocking(move || {
        proxy.child.wait().unwrap();
        proxy
    })
    .await
    .unwrap();
    let db = proxy.dir.path().join("syncgate.db");
    let events = audit_events(&db);
    assert!(events.len() >= 5);
    assert!(
        events
            .iter()
            .all(|e| e["actor"]["upn"] == "secret@contoso.example")
    );
    let mut haystacks = vec![proxy.stderr().into_bytes()];
    for entry in std::fs::read_dir(proxy.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("syncgate.db")
        {
            haystacks.push(std::fs::read(&path).unwrap());
        }
    }
    let parts: Vec<&str> = token.split('.').filter(|p| p.len() > 8).collect();
    for hay in &haystacks {
        let text = String::from_utf8_lossy(hay);
        assert!(!text.contains(&token));
        for part in &parts {
            assert!(!text.contains(part), "a token part is stored or logged");
        }
    }
}

#[tokio::test]
async fn the_client_certificate_subject_is_recorded_with_the_actor() {
    let pki = crate::pki::TestPki::generate();
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let mut raw = proxy_config(&emulator.base);
    raw.proxy.tls = Some(syncgate::config::RawListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: Some(pki.ca_cert.clone()),
        client_auth: syncgate::config::ClientAuthMode::Required,
    });
    let proxy = spawn_proxy_with(raw).await;
    let req = http::Request::put(sync_url(&proxy.url, "v1.0", PARTNER))
        .header("authorization", format!("Bearer {}", admin_token()))
        .header("content-type", "application/json")
        .body(syncgate::body::full(r#"{"displayName":"F"}"#))
        .unwrap();
    let (resp, _) = request(&tls_client(&pki, true), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let id = resp.headers()["x-syncgate-audit-id"].to_str().unwrap();
    for event in operation(&proxy.db_path, id) {
        assert_eq!(
            event["actor"]["client_cert_subject"], "CN=automation-client",
            "{event}"
        );
    }
}

/// A governed change runs to its terminal event even when its client hangs up while it is
/// upstream (issue 13 moved governed handling to a task of its own): the log says `completed`
/// now, not `recovered` at some later start.
#[tokio::test]
async fn a_change_whose_client_hangs_up_still_records_its_outcome() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = spawn_proxy(&emulator.base).await;
    let path = format!(
        "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
    );
    fault(
        &emulator,
        json!({"method": "PUT", "path": path, "delayResponseMs": 1500, "count": 1}),
    )
    .await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let call = tokio::spawn(async move {
        client
            .send(Method::PUT, &url, Some(json!({"displayName": "Gone"})))
            .await
    });
    // Hang up once the write has landed upstream (its answer is held back by the fault).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !writes_received(&emulator)
        .await
        .iter()
        .any(|w| w["method"] == "PUT")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never landed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    call.abort();
    let _ = call.await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = audit_events(&proxy.db_path);
        let written: Vec<&str> = events
            .iter()
            .filter(|e| e["operation"] != "read")
            .filter_map(|e| e["kind"].as_str())
            .collect();
        if written.contains(&"completed") {
            let completed = events.iter().find(|e| e["kind"] == "completed").unwrap();
            assert_eq!(completed["upstream_status"], 204, "{completed}");
            assert_eq!(completed["effect"], "applied", "{completed}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no terminal event after the client hung up: {written:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
