//! The Graph emulator's resources, spoken to directly: partners, sync policies, deleted items,
//! the MTO template, URL forms, strict bodies, tokens and Graph's headers, in v1.0 and beta.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestClient, TestEmulator, TestResponse, spawn_emulator, token_with_scopes};

pub const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
pub const OTHER: &str = "90e29127-71ad-49c7-9ce8-db3f41ea06f1";
pub const VERSIONS: [&str; 2] = ["v1.0", "beta"];

const ODATA_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";
const UNREADABLE: &str = "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.";

pub fn partners_url(emulator: &TestEmulator, version: &str) -> String {
    format!(
        "{}/{version}/policies/crossTenantAccessPolicy/partners",
        emulator.base
    )
}

pub fn partner_url(emulator: &TestEmulator, version: &str, id: &str) -> String {
    format!("{}/{id}", partners_url(emulator, version))
}

pub fn sync_url(emulator: &TestEmulator, version: &str, id: &str) -> String {
    format!(
        "{}/identitySynchronization",
        partner_url(emulator, version, id)
    )
}

fn template_url(emulator: &TestEmulator, version: &str) -> String {
    format!(
        "{}/{version}/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
        emulator.base
    )
}

fn deleted_url(emulator: &TestEmulator, rest: &str) -> String {
    format!("{}/beta/policies/deletedItems/{rest}", emulator.base)
}

pub async fn create_partner(client: &TestClient, emulator: &TestEmulator, id: &str) {
    let created = client
        .send(
            Method::POST,
            &partners_url(emulator, "v1.0"),
            Some(json!({ "tenantId": id })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
}

pub async fn create_sync(client: &TestClient, emulator: &TestEmulator, id: &str, body: Value) {
    let put = client
        .send(Method::PUT, &sync_url(emulator, "v1.0", id), Some(body))
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{put:?}");
}

pub async fn state(client: &TestClient, emulator: &TestEmulator) -> Value {
    client
        .get(&format!("{}/_emulator/state", emulator.base))
        .await
        .json()
}

/// A Graph error with exactly this status, code and (when given) message.
#[track_caller]
pub fn assert_error(
    response: &TestResponse,
    status: StatusCode,
    code: &str,
    message: Option<&str>,
) {
    assert_eq!(
        response.status,
        status,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    if let Some(message) = message {
        assert_eq!(body["error"]["message"], message, "{body}");
    }
    assert!(
        body["error"]["innerError"]["request-id"].is_string(),
        "{body}"
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

fn not_found_message(id: &str) -> String {
    format!(
        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
    )
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

// ---------------------------------------------------------------------------------------------
// Partners

#[tokio::test]
async fn posting_a_partner_returns_201_with_every_property_and_the_entity_context() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for (version, id) in [("v1.0", PARTNER), ("beta", OTHER)] {
        let created = client
            .send(
                Method::POST,
                &partners_url(&emulator, version),
                Some(json!({ "tenantId": id })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
        let doc = created.json();
        let mut expected = vec![
            "@odata.context",
            "tenantId",
            "isServiceProvider",
            "isInMultiTenantOrganization",
            "inboundTrust",
            "b2bCollaborationOutbound",
            "b2bCollaborationInbound",
            "b2bDirectConnectOutbound",
            "b2bDirectConnectInbound",
            "tenantRestrictions",
            "m365CollaborationOutbound",
            "m365CollaborationInbound",
            "appServiceConnectInbound",
            "crossCloudMeetingConfiguration",
            "automaticUserConsentSettings",
        ];
        if version == "beta" {
            expected.extend(["blockServiceProviderOutboundAccess", "deletedDateTime"]);
        }
        assert_eq!(keys(&doc), expected, "{version}");
        assert_eq!(
            doc["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners/$entity"
            )
        );
        assert_eq!(doc["tenantId"], id);
        assert_eq!(doc["inboundTrust"], Value::Null);
        let unset = json!({"inboundAllowed": null, "outboundAllowed": null});
        assert_eq!(doc["automaticUserConsentSettings"], unset);
        assert_eq!(doc["crossCloudMeetingConfiguration"], unset);
    }
}

#[tokio::test]
async fn posting_a_partner_with_settings_stores_them_and_lower_cases_the_tenant_id() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let created = client
        .send(
            Method::POST,
            &partners_url(&emulator, "v1.0"),
            Some(json!({
                "@odata.type": "#microsoft.graph.crossTenantAccessPolicyConfigurationPartner",
                "tenantId": PARTNER.to_ascii_uppercase(),
                "inboundTrust": {"isMfaAccepted": true},
                "b2bCollaborationInbound": {"usersAndGroups": {"accessType": "allowed", "targets": [{"target": "AllUsers", "targetType": "user"}]}},
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let doc = created.json();
    assert_eq!(doc["tenantId"], PARTNER);
    assert_eq!(
        doc["inboundTrust"],
        json!({"isMfaAccepted": true, "isCompliantDeviceAccepted": null, "isHybridAzureADJoinedDeviceAccepted": null})
    );
    assert_eq!(
        doc["b2bCollaborationInbound"]["usersAndGroups"]["targets"][0]["targetType"],
        "user"
    );
    let read = client.get(&partner_url(&emulator, "v1.0", PARTNER)).await;
    assert_eq!(read.json()["inboundTrust"]["isMfaAccepted"], true);
}

#[tokio::test]
async fn posting_a_partner_twice_or_while_it_is_soft_deleted_conflicts() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let message = "Another object with the same value for property tenantId already exists.";
    for version in VERSIONS {
        let again = client
            .send(
                Method::POST,
                &partners_url(&emulator, version),
                Some(json!({ "tenantId": PARTNER.to_ascii_uppercase() })),
            )
            .await;
        assert_error(
            &again,
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            Some(message),
        );
    }
    let deleted = client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "v1.0", PARTNER),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let recreate = client
        .send(
            Method::POST,
            &partners_url(&emulator, "v1.0"),
            Some(json!({ "tenantId": PARTNER })),
        )
        .await;
    assert_error(
        &recreate,
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
        Some(message),
    );
}

#[tokio::test]
async fn posting_a_partner_needs_a_guid_tenant_id() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for body in [
        json!({}),
        json!({"tenantId": "contoso.com"}),
        json!({"tenantId": null}),
    ] {
        let refused = client
            .send(
                Method::POST,
                &partners_url(&emulator, "v1.0"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let not_guid = client
        .send(
            Method::POST,
            &partners_url(&emulator, "v1.0"),
            Some(json!({"tenantId": "contoso.com"})),
        )
        .await;
    assert_eq!(not_guid.error_code(), "Request_BadRequest");
    assert_eq!(state(&client, &emulator).await["writes"], 0);
}

#[tokio::test]
async fn listing_partners_returns_a_value_array_with_select_and_expand() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_partner(&client, &emulator, OTHER).await;
    create_sync(
        &client,
        &emulator,
        PARTNER,
        json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
    )
    .await;
    for version in VERSIONS {
        let list = client.get(&partners_url(&emulator, version)).await;
        assert_eq!(list.status, StatusCode::OK);
        let body = list.json();
        assert_eq!(keys(&body), ["@odata.context", "value"]);
        assert_eq!(
            body["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners"
            )
        );
        assert_eq!(body["value"].as_array().unwrap().len(), 2);
        assert!(body["value"][0].get("identitySynchronization").is_none());

        let expanded = client
            .get(&format!(
                "{}?$select=tenantId&$expand=identitySynchronization",
                partners_url(&emulator, version)
            ))
            .await
            .json();
        assert_eq!(
            expanded["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners(tenantId)"
            )
        );
        let value = expanded["value"].as_array().unwrap();
        let with_sync = value.iter().find(|p| p["tenantId"] == PARTNER).unwrap();
        let without = value.iter().find(|p| p["tenantId"] == OTHER).unwrap();
        assert_eq!(keys(with_sync), ["tenantId", "identitySynchronization"]);
        assert_eq!(
            with_sync["identitySynchronization"]["userSyncInbound"],
            json!({"isSyncAllowed": true})
        );
        assert_eq!(
            with_sync["identitySynchronization"]
                .get("groupSyncInbound")
                .is_some(),
            version == "beta"
        );
        assert_eq!(without["identitySynchronization"], Value::Null);
    }
}

#[tokio::test]
async fn getting_a_partner_supports_select_and_expand_with_a_projected_context() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    for version in VERSIONS {
        let url = partner_url(&emulator, version, PARTNER);
        let full = client.get(&url).await;
        assert_eq!(full.status, StatusCode::OK);
        assert_eq!(
            full.json()["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners/$entity"
            )
        );
        let selected = client
            .get(&format!(
                "{url}?$select=tenantId,automaticUserConsentSettings&$expand=identitySynchronization"
            ))
            .await
            .json();
        assert_eq!(
            selected["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners(tenantId,automaticUserConsentSettings)/$entity"
            )
        );
        assert_eq!(
            keys(&selected),
            [
                "@odata.context",
                "tenantId",
                "automaticUserConsentSettings",
                "identitySynchronization"
            ]
        );
        assert_eq!(selected["identitySynchronization"], Value::Null);
    }
}

#[tokio::test]
async fn patching_a_partner_merges_complex_values_and_answers_204() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    // ENTRA-CFG step 3: inboundTrust null plus a partial automaticUserConsentSettings.
    let patched = client
        .send(
            Method::PATCH,
            &partner_url(&emulator, "v1.0", PARTNER),
            Some(json!({"inboundTrust": null, "automaticUserConsentSettings": {"inboundAllowed": true}})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    assert!(patched.body.is_empty());
    let patched = client
        .send(
            Method::PATCH,
            &partner_url(&emulator, "beta", PARTNER),
            Some(json!({"automaticUserConsentSettings": {"outboundAllowed": false}, "blockServiceProviderOutboundAccess": true})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let doc = client
        .get(&partner_url(&emulator, "beta", PARTNER))
        .await
        .json();
    assert_eq!(
        doc["automaticUserConsentSettings"],
        json!({"inboundAllowed": true, "outboundAllowed": false})
    );
    assert_eq!(doc["blockServiceProviderOutboundAccess"], true);
    let v1 = client
        .get(&partner_url(&emulator, "v1.0", PARTNER))
        .await
        .json();
    assert!(v1.get("blockServiceProviderOutboundAccess").is_none());
}

#[tokio::test]
async fn a_partners_tenant_id_is_read_only_in_a_patch() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let url = partner_url(&emulator, "v1.0", PARTNER);
    let same = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"tenantId": PARTNER.to_ascii_uppercase(), "isServiceProvider": true})),
        )
        .await;
    assert_eq!(same.status, StatusCode::NO_CONTENT);
    let other = client
        .send(Method::PATCH, &url, Some(json!({"tenantId": OTHER})))
        .await;
    assert_error(
        &other,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        Some("Property 'tenantId' is read-only and cannot be changed."),
    );
    let deleted_at = client
        .send(
            Method::PATCH,
            &partner_url(&emulator, "beta", PARTNER),
            Some(json!({"deletedDateTime": "2025-01-01T00:00:00Z"})),
        )
        .await;
    assert_error(
        &deleted_at,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        None,
    );
}

#[tokio::test]
async fn unknown_partners_are_request_resource_not_found() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for version in VERSIONS {
        let url = partner_url(&emulator, version, PARTNER);
        for (method, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"isServiceProvider": true}))),
            (Method::DELETE, None),
        ] {
            let missing = client.send(method.clone(), &url, body).await;
            assert_error(
                &missing,
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                Some(&not_found_message(PARTNER)),
            );
        }
    }
}

#[tokio::test]
async fn a_partner_with_a_sync_policy_cannot_be_deleted() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({})).await;
    for version in VERSIONS {
        let refused = client
            .send(
                Method::DELETE,
                &partner_url(&emulator, version, PARTNER),
                None,
            )
            .await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            None,
        );
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("identitySynchronization"),
        );
    }
    let removed = client
        .send(Method::DELETE, &sync_url(&emulator, "v1.0", PARTNER), None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let deleted = client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "v1.0", PARTNER),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = client.get(&partner_url(&emulator, "v1.0", PARTNER)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deep_insert_on_partner_post_creates_the_sync_policy() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for (version, id) in [("v1.0", PARTNER), ("beta", OTHER)] {
        let created = client
            .send(
                Method::POST,
                &partners_url(&emulator, version),
                Some(json!({
                    "tenantId": id,
                    "identitySynchronization": {"displayName": "Deep", "userSyncInbound": {"isSyncAllowed": true}},
                })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        assert_eq!(
            created.json()["identitySynchronization"]["displayName"],
            "Deep"
        );
        let sync = client.get(&sync_url(&emulator, version, id)).await;
        assert_eq!(sync.status, StatusCode::OK);
        assert_eq!(
            sync.json()["userSyncInbound"],
            json!({"isSyncAllowed": true})
        );
    }
    assert_eq!(state(&client, &emulator).await["writes"], 2);
}

#[tokio::test]
async fn deep_update_on_partner_patch_merges_creates_or_deletes_the_sync_policy() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let url = partner_url(&emulator, "v1.0", PARTNER);

    let create = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"identitySynchronization": {"displayName": "Via partner"}})),
        )
        .await;
    assert_eq!(create.status, StatusCode::NO_CONTENT);
    let merge = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true}}})),
        )
        .await;
    assert_eq!(merge.status, StatusCode::NO_CONTENT);
    let sync = client
        .get(&sync_url(&emulator, "v1.0", PARTNER))
        .await
        .json();
    assert_eq!(sync["displayName"], "Via partner");
    assert_eq!(sync["userSyncInbound"]["isSyncAllowed"], true);

    let delete = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"identitySynchronization": null})),
        )
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    let after = client.get(&sync_url(&emulator, "v1.0", PARTNER)).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert!(state(&client, &emulator).await["deletedSyncPolicies"][PARTNER].is_object());
}

#[tokio::test]
async fn deep_insert_bodies_are_checked_like_sync_bodies() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let cases = [
        (
            json!({"tenantId": PARTNER, "identitySynchronization": {"bogus": 1}}),
            "Request_BadRequest",
        ),
        (
            json!({"tenantId": PARTNER, "identitySynchronization": {"groupSyncInbound": {"isSyncAllowed": true}}}),
            "Request_BadRequest",
        ),
        (
            json!({"tenantId": PARTNER, "identitySynchronization": {"tenantId": OTHER}}),
            "Request_BadRequest",
        ),
        (
            json!({"tenantId": PARTNER, "identitySynchronization": {"userSyncInbound": {"isSyncAllowed": "yes"}}}),
            "BadRequest",
        ),
        (
            json!({"tenantId": PARTNER, "IdentitySynchronization": {}}),
            "Request_BadRequest",
        ),
    ];
    for (body, code) in cases {
        let refused = client
            .send(
                Method::POST,
                &partners_url(&emulator, "v1.0"),
                Some(body.clone()),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, code, None);
    }
    let s = state(&client, &emulator).await;
    assert_eq!(s["partners"], json!({}), "nothing was created: {s}");
    assert_eq!(s["identitySynchronization"], json!({}));
}

// ---------------------------------------------------------------------------------------------
// identitySynchronization

#[tokio::test]
async fn a_sync_policy_can_be_put_read_patched_and_deleted_in_both_versions() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for (version, id) in [("v1.0", PARTNER), ("beta", OTHER)] {
        create_partner(&client, &emulator, id).await;
        let url = sync_url(&emulator, version, id);
        let put = client
            .send(
                Method::PUT,
                &url,
                Some(
                    json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
                ),
            )
            .await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        assert!(put.body.is_empty());

        let read = client.get(&url).await;
        assert_eq!(read.status, StatusCode::OK);
        let doc = read.json();
        assert_eq!(
            doc["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/partners('{id}')/identitySynchronization/$entity"
            )
        );
        assert_eq!(doc["tenantId"], id);
        assert_eq!(doc["displayName"], "Fabrikam");

        let patch = client
            .send(
                Method::PATCH,
                &url,
                Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
            )
            .await;
        assert_eq!(patch.status, StatusCode::NO_CONTENT);
        let doc = client.get(&url).await.json();
        assert_eq!(doc["userSyncInbound"]["isSyncAllowed"], false);
        assert_eq!(doc["displayName"], "Fabrikam", "PATCH merges");

        let delete = client.send(Method::DELETE, &url, None).await;
        assert_eq!(delete.status, StatusCode::NO_CONTENT);
        let gone = client.get(&url).await;
        assert_error(
            &gone,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            Some(&not_found_message(id)),
        );
    }
}

#[tokio::test]
async fn v1_sync_documents_hide_beta_properties_and_beta_shows_them_in_order() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let put = client
        .send(
            Method::PUT,
            &sync_url(&emulator, "beta", PARTNER),
            Some(json!({
                "displayName": "Fabrikam",
                "userSyncInbound": {"isSyncAllowed": true},
                "groupSyncInbound": {"isSyncAllowed": false},
                "externalCloudAuthorizedApplicationId": "app",
            })),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let v1 = client
        .get(&sync_url(&emulator, "v1.0", PARTNER))
        .await
        .json();
    assert_eq!(
        keys(&v1),
        [
            "@odata.context",
            "tenantId",
            "displayName",
            "userSyncInbound"
        ]
    );
    let beta = client
        .get(&sync_url(&emulator, "beta", PARTNER))
        .await
        .json();
    assert_eq!(
        keys(&beta),
        [
            "@odata.context",
            "tenantId",
            "displayName",
            "deletedDateTime",
            "externalCloudAuthorizedApplicationId",
            "userSyncInbound",
            "groupSyncInbound"
        ]
    );
    assert_eq!(beta["groupSyncInbound"], json!({"isSyncAllowed": false}));
    assert_eq!(beta["deletedDateTime"], Value::Null);
}

#[tokio::test]
async fn beta_only_sync_properties_are_invalid_in_v1() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    for (property, value) in [
        ("groupSyncInbound", json!({"isSyncAllowed": true})),
        ("externalCloudAuthorizedApplicationId", json!("x")),
        ("deletedDateTime", json!(null)),
    ] {
        let refused = client
            .send(
                Method::PUT,
                &sync_url(&emulator, "v1.0", PARTNER),
                Some(json!({ property: value })),
            )
            .await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            Some(&format!("Invalid property '{property}'.")),
        );
    }
}

#[tokio::test]
async fn putting_an_existing_sync_policy_conflicts_with_conflicting_objects_details() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({})).await;
    for version in VERSIONS {
        let again = client
            .send(
                Method::PUT,
                &sync_url(&emulator, version, PARTNER),
                Some(json!({})),
            )
            .await;
        let message = "A conflicting object with one or more of the specified property values is present in the directory.";
        assert_error(
            &again,
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            Some(message),
        );
        assert_eq!(
            again.json()["error"]["details"],
            json!([{"code": "ConflictingObjects", "message": message}])
        );
    }
}

#[tokio::test]
async fn putting_a_sync_policy_for_a_missing_partner_is_not_found() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for version in VERSIONS {
        let refused = client
            .send(
                Method::PUT,
                &sync_url(&emulator, version, PARTNER),
                Some(json!({})),
            )
            .await;
        assert_error(
            &refused,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            Some(&not_found_message(PARTNER)),
        );
    }
}

#[tokio::test]
async fn patching_a_missing_sync_policy_is_directory_object_not_found() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    for version in VERSIONS {
        let refused = client
            .send(
                Method::PATCH,
                &sync_url(&emulator, version, PARTNER),
                Some(json!({"userSyncInbound": {"isSyncAllowed": true}})),
            )
            .await;
        assert_error(
            &refused,
            StatusCode::NOT_FOUND,
            "Directory_ObjectNotFound",
            Some("Unable to read the company information from the directory."),
        );
        let delete = client
            .send(Method::DELETE, &sync_url(&emulator, version, PARTNER), None)
            .await;
        assert_error(
            &delete,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            None,
        );
    }
}

#[tokio::test]
async fn reading_a_sync_policy_supports_select_with_a_projected_context() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(
        &client,
        &emulator,
        PARTNER,
        json!({"displayName": "Fabrikam"}),
    )
    .await;
    let url = format!(
        "{}?$select=displayName,tenantId",
        sync_url(&emulator, "v1.0", PARTNER)
    );
    let doc = client.get(&url).await.json();
    assert_eq!(
        doc["@odata.context"],
        format!(
            "https://graph.microsoft.com/v1.0/$metadata#policies/crossTenantAccessPolicy/partners('{PARTNER}')/identitySynchronization(displayName,tenantId)/$entity"
        )
    );
    assert_eq!(keys(&doc), ["@odata.context", "tenantId", "displayName"]);
}

#[tokio::test]
async fn a_sync_bodys_tenant_id_must_repeat_the_url_key() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let url = sync_url(&emulator, "v1.0", PARTNER);
    let mismatch = client
        .send(Method::PUT, &url, Some(json!({"tenantId": OTHER})))
        .await;
    assert_error(
        &mismatch,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        None,
    );
    let same = client
        .send(
            Method::PUT,
            &url,
            Some(json!({"tenantId": PARTNER.to_ascii_uppercase()})),
        )
        .await;
    assert_eq!(same.status, StatusCode::NO_CONTENT);
    let patch = client
        .send(Method::PATCH, &url, Some(json!({"tenantId": OTHER})))
        .await;
    assert_error(&patch, StatusCode::BAD_REQUEST, "Request_BadRequest", None);
}

// ---------------------------------------------------------------------------------------------
// Strict bodies

#[tokio::test]
async fn unknown_and_mis_cased_properties_are_invalid_at_any_depth() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let partner = partner_url(&emulator, "v1.0", PARTNER);
    let sync = sync_url(&emulator, "v1.0", PARTNER);
    let cases = [
        (
            &partner,
            Method::PATCH,
            json!({"B2BCollaborationInbound": null}),
            "B2BCollaborationInbound",
        ),
        (
            &partner,
            Method::PATCH,
            json!({"b2BCollaborationInbound": null}),
            "b2BCollaborationInbound",
        ),
        (
            &partner,
            Method::PATCH,
            json!({"inboundTrust": {"isMFAAccepted": true}}),
            "isMFAAccepted",
        ),
        (
            &partner,
            Method::PATCH,
            json!({"automaticUserConsentSettings": {"inbound": true}}),
            "inbound",
        ),
        (
            &sync,
            Method::PUT,
            json!({"userSyncInbound": {"IsSyncAllowed": true}}),
            "IsSyncAllowed",
        ),
        (
            &sync,
            Method::PUT,
            json!({"displayname": "x"}),
            "displayname",
        ),
    ];
    for (url, method, body, property) in cases {
        let refused = client.send(method, url, Some(body)).await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            Some(&format!("Invalid property '{property}'.")),
        );
    }
    let beta_group = client
        .send(
            Method::PUT,
            &sync_url(&emulator, "beta", PARTNER),
            Some(json!({"groupSyncInbound": {"isSyncAllowed": true, "extra": 1}})),
        )
        .await;
    assert_error(
        &beta_group,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        Some("Invalid property 'extra'."),
    );
    assert_eq!(state(&client, &emulator).await["writes"], 1);
}

#[tokio::test]
async fn odata_annotations_are_accepted_in_bodies() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let put = client
        .send(
            Method::PUT,
            &sync_url(&emulator, "v1.0", PARTNER),
            Some(json!({
                "@odata.type": "#microsoft.graph.crossTenantIdentitySyncPolicyPartner",
                "userSyncInbound": {"@odata.type": "#microsoft.graph.crossTenantUserSyncInbound", "isSyncAllowed": true},
            })),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{put:?}");
    let doc = client
        .get(&sync_url(&emulator, "v1.0", PARTNER))
        .await
        .json();
    assert_eq!(doc["userSyncInbound"], json!({"isSyncAllowed": true}));
}

#[tokio::test]
async fn wrong_json_types_are_bad_requests_naming_the_property() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let sync = sync_url(&emulator, "v1.0", PARTNER);
    let yes = client
        .send(
            Method::PUT,
            &sync,
            Some(json!({"userSyncInbound": {"isSyncAllowed": "yes"}})),
        )
        .await;
    assert_error(
        &yes,
        StatusCode::BAD_REQUEST,
        "BadRequest",
        Some(
            "Cannot convert the literal 'yes' to the expected type 'Edm.Boolean' of property 'userSyncInbound.isSyncAllowed'.",
        ),
    );
    for body in [
        json!({"displayName": 3}),
        json!({"userSyncInbound": true}),
        json!({"userSyncInbound": {"isSyncAllowed": 1}}),
    ] {
        let refused = client.send(Method::PUT, &sync, Some(body.clone())).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
    }
    let partner = client
        .send(
            Method::PATCH,
            &partner_url(&emulator, "v1.0", PARTNER),
            Some(
                json!({"b2bCollaborationInbound": {"usersAndGroups": {"accessType": "sometimes"}}}),
            ),
        )
        .await;
    assert_error(&partner, StatusCode::BAD_REQUEST, "BadRequest", None);
}

#[tokio::test]
async fn malformed_json_or_a_missing_content_type_cannot_be_read() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let sync = sync_url(&emulator, "v1.0", PARTNER);
    let valid = Bytes::from_static(br#"{"displayName":"x"}"#);
    let mut text_plain = HeaderMap::new();
    text_plain.insert("content-type", HeaderValue::from_static("text/plain"));
    let cases = [
        (json_headers(), Bytes::from_static(b"{\"displayName\":")),
        (json_headers(), Bytes::from_static(b"")),
        (json_headers(), Bytes::from_static(b"[]")),
        (json_headers(), Bytes::from_static(b"{} {}")),
        (HeaderMap::new(), valid.clone()),
        (text_plain, valid.clone()),
    ];
    for (headers, body) in cases {
        for (method, url) in [
            (Method::PUT, sync.clone()),
            (Method::PATCH, partner_url(&emulator, "v1.0", PARTNER)),
            (Method::POST, partners_url(&emulator, "beta")),
        ] {
            let refused = client
                .send_raw(method, &url, headers.clone(), body.clone())
                .await;
            assert_error(
                &refused,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                Some(UNREADABLE),
            );
        }
    }
}

#[tokio::test]
async fn duplicate_property_names_are_refused() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let refused = client
        .send_raw(
            Method::PUT,
            &sync_url(&emulator, "v1.0", PARTNER),
            json_headers(),
            Bytes::from_static(
                br#"{"userSyncInbound":{"isSyncAllowed":false,"isSyncAllowed":true}}"#,
            ),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'isSyncAllowed'")
    );
}

// ---------------------------------------------------------------------------------------------
// Soft delete, restore, permanent delete (beta)

#[tokio::test]
async fn deleted_partners_and_sync_policies_are_listed_and_fetched_in_beta() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(
        &client,
        &emulator,
        PARTNER,
        json!({"displayName": "Fabrikam"}),
    )
    .await;
    // Deleted through v1.0: the same directory object, so beta sees it under deletedItems.
    for url in [
        sync_url(&emulator, "v1.0", PARTNER),
        partner_url(&emulator, "v1.0", PARTNER),
    ] {
        let deleted = client.send(Method::DELETE, &url, None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    }
    let partners = client
        .get(&deleted_url(&emulator, "crossTenantPartners/"))
        .await;
    assert_eq!(partners.status, StatusCode::OK);
    let partners = partners.json();
    assert_eq!(
        partners["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#policies/deletedItems/crossTenantPartners"
    );
    assert_eq!(partners["value"][0]["tenantId"], PARTNER);
    assert!(partners["value"][0]["deletedDateTime"].is_string());

    let policies = client
        .get(&deleted_url(&emulator, "crossTenantSyncPolicyPartners"))
        .await
        .json();
    assert_eq!(
        policies["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#policies/deletedItems/crossTenantSyncPolicyPartners"
    );
    assert_eq!(policies["value"][0]["displayName"], "Fabrikam");
    assert!(policies["value"][0]["deletedDateTime"].is_string());

    let one = client
        .get(&deleted_url(
            &emulator,
            &format!("crossTenantSyncPolicyPartners/{PARTNER}"),
        ))
        .await
        .json();
    assert_eq!(
        one["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#policies/deletedItems/crossTenantSyncPolicyPartners/$entity"
    );
    let partner = client
        .get(&deleted_url(
            &emulator,
            &format!("crossTenantPartners/{PARTNER}"),
        ))
        .await
        .json();
    assert_eq!(
        partner["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#policies/deletedItems/crossTenantPartners/$entity"
    );
    let missing = client
        .get(&deleted_url(
            &emulator,
            &format!("crossTenantPartners/{OTHER}"),
        ))
        .await;
    assert_error(
        &missing,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        Some(&not_found_message(OTHER)),
    );
}

#[tokio::test]
async fn restoring_a_partner_brings_it_back_and_returns_it() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "beta", PARTNER),
            None,
        )
        .await;
    let restored = client
        .send(
            Method::POST,
            &deleted_url(&emulator, &format!("crossTenantPartners/{PARTNER}/restore")),
            None,
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{restored:?}");
    let doc = restored.json();
    assert_eq!(
        doc["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#microsoft.graph.crossTenantAccessPolicyConfigurationPartner"
    );
    assert_eq!(doc["tenantId"], PARTNER);
    assert!(
        doc["deletedDateTime"].is_string(),
        "as in the documented sample"
    );
    let live = client.get(&partner_url(&emulator, "beta", PARTNER)).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json()["deletedDateTime"], Value::Null);
    let again = client
        .send(
            Method::POST,
            &deleted_url(&emulator, &format!("crossTenantPartners/{PARTNER}/restore")),
            None,
        )
        .await;
    assert_error(
        &again,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        None,
    );
}

#[tokio::test]
async fn restoring_a_sync_policy_needs_its_partner_and_a_free_slot() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({"displayName": "Old"})).await;
    let sync = sync_url(&emulator, "beta", PARTNER);
    let restore = deleted_url(
        &emulator,
        &format!("crossTenantSyncPolicyPartners/{PARTNER}/microsoft.graph.restore"),
    );
    client.send(Method::DELETE, &sync, None).await;
    // Re-created while the old one sits in deletedItems: restoring would collide.
    create_sync(&client, &emulator, PARTNER, json!({"displayName": "New"})).await;
    let occupied = client.send(Method::POST, &restore, None).await;
    assert_error(
        &occupied,
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
        None,
    );
    // The new one deleted too replaces the old deleted copy.
    client.send(Method::DELETE, &sync, None).await;
    client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "beta", PARTNER),
            None,
        )
        .await;
    let orphan = client.send(Method::POST, &restore, None).await;
    assert_error(
        &orphan,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        None,
    );

    let partner_back = client
        .send(
            Method::POST,
            &deleted_url(&emulator, &format!("crossTenantPartners/{PARTNER}/restore")),
            None,
        )
        .await;
    assert_eq!(partner_back.status, StatusCode::OK);
    let restored = client.send(Method::POST, &restore, None).await;
    assert_eq!(restored.status, StatusCode::OK, "{restored:?}");
    let doc = restored.json();
    assert_eq!(
        doc["@odata.context"],
        "https://graph.microsoft.com/beta/$metadata#microsoft.graph.crossTenantIdentitySyncPolicyPartner"
    );
    assert_eq!(doc["displayName"], "New");
    assert_eq!(
        client
            .get(&sync_url(&emulator, "v1.0", PARTNER))
            .await
            .json()["displayName"],
        "New"
    );
}

#[tokio::test]
async fn permanently_deleting_items_frees_the_tenant_id() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({})).await;
    client
        .send(Method::DELETE, &sync_url(&emulator, "v1.0", PARTNER), None)
        .await;
    client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "v1.0", PARTNER),
            None,
        )
        .await;
    for rest in [
        format!("crossTenantSyncPolicyPartners/{PARTNER}"),
        format!("crossTenantPartners('{PARTNER}')"),
    ] {
        let purged = client
            .send(Method::DELETE, &deleted_url(&emulator, &rest), None)
            .await;
        assert_eq!(purged.status, StatusCode::NO_CONTENT, "{rest}");
        let again = client
            .send(Method::DELETE, &deleted_url(&emulator, &rest), None)
            .await;
        assert_error(
            &again,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            None,
        );
    }
    let s = state(&client, &emulator).await;
    assert_eq!(s["deletedPartners"], json!({}));
    assert_eq!(s["deletedSyncPolicies"], json!({}));
    create_partner(&client, &emulator, PARTNER).await;
}

#[tokio::test]
async fn a_deleted_partners_identity_synchronization_is_never_found() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    client
        .send(
            Method::DELETE,
            &partner_url(&emulator, "beta", PARTNER),
            None,
        )
        .await;
    let base = deleted_url(
        &emulator,
        &format!("crossTenantPartners/{PARTNER}/identitySynchronization"),
    );
    let get = client.get(&base).await;
    assert_error(
        &get,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        Some(&not_found_message(PARTNER)),
    );
    let restore = client
        .send(Method::POST, &format!("{base}/restore"), None)
        .await;
    assert_error(
        &restore,
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        None,
    );
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::POST] {
        let refused = client.send(method.clone(), &base, Some(json!({}))).await;
        assert_error(
            &refused,
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            Some("Specified HTTP method is not allowed for the request target."),
        );
    }
}

#[tokio::test]
async fn posting_or_putting_on_deleted_collections_is_not_allowed() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for rest in [
        "crossTenantPartners".to_owned(),
        "crossTenantSyncPolicyPartners".to_owned(),
        format!("crossTenantPartners/{PARTNER}"),
        format!("crossTenantSyncPolicyPartners/{PARTNER}"),
    ] {
        for method in [Method::POST, Method::PUT, Method::PATCH] {
            let refused = client
                .send(
                    method.clone(),
                    &deleted_url(&emulator, &rest),
                    Some(json!({"tenantId": PARTNER})),
                )
                .await;
            assert_error(
                &refused,
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                Some("Specified HTTP method is not allowed for the request target."),
            );
        }
    }
}

#[tokio::test]
async fn deleted_items_do_not_exist_in_v1() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for rest in ["crossTenantPartners", "crossTenantSyncPolicyPartners"] {
        let refused = client
            .get(&format!(
                "{}/v1.0/policies/deletedItems/{rest}",
                emulator.base
            ))
            .await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            Some("Resource not found for the segment 'deletedItems'."),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// MTO template and the policy singleton

#[tokio::test]
async fn the_mto_template_can_be_read_patched_and_reset_in_both_versions() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for version in VERSIONS {
        let url = template_url(&emulator, version);
        let initial = client.get(&url).await;
        assert_eq!(initial.status, StatusCode::OK);
        let doc = initial.json();
        assert_eq!(
            keys(&doc),
            [
                "@odata.context",
                "id",
                "templateApplicationLevel",
                "userSyncInbound"
            ]
        );
        assert_eq!(
            doc["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization/$entity"
            )
        );
        assert_eq!(
            doc["templateApplicationLevel"],
            "newPartners,existingPartners"
        );
        assert_eq!(doc["userSyncInbound"], json!({"isSyncAllowed": null}));

        let patched = client
            .send(
                Method::PATCH,
                &url,
                Some(json!({"templateApplicationLevel": "newPartners", "userSyncInbound": {"isSyncAllowed": true}})),
            )
            .await;
        assert_eq!(patched.status, StatusCode::NO_CONTENT);
        let doc = client.get(&url).await.json();
        assert_eq!(doc["templateApplicationLevel"], "newPartners");
        assert_eq!(doc["userSyncInbound"]["isSyncAllowed"], true);

        for action in [
            "resetToDefaultSettings",
            "microsoft.graph.resetToDefaultSettings",
        ] {
            let reset = client
                .send(Method::POST, &format!("{url}/{action}"), None)
                .await;
            assert_eq!(reset.status, StatusCode::NO_CONTENT);
        }
        let doc = client.get(&url).await.json();
        assert_eq!(
            doc["templateApplicationLevel"],
            "newPartners,existingPartners"
        );
        assert_eq!(doc["userSyncInbound"], json!({"isSyncAllowed": null}));
    }
}

#[tokio::test]
async fn template_application_level_is_validated_as_a_flags_enum() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let url = template_url(&emulator, "v1.0");
    for bad in [
        "everyone",
        "",
        "newPartners;existingPartners",
        "newPartners,",
    ] {
        let refused = client
            .send(
                Method::PATCH,
                &url,
                Some(json!({"templateApplicationLevel": bad})),
            )
            .await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
    }
    for good in ["none", "existingPartners,newPartners", "unknownFutureValue"] {
        let ok = client
            .send(
                Method::PATCH,
                &url,
                Some(json!({"templateApplicationLevel": good})),
            )
            .await;
        assert_eq!(ok.status, StatusCode::NO_CONTENT, "{good}");
    }
    let unknown = client
        .send(Method::PATCH, &url, Some(json!({"groupSyncInbound": null})))
        .await;
    assert_error(
        &unknown,
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        None,
    );
    let id = client
        .send(Method::PATCH, &url, Some(json!({"id": "other"})))
        .await;
    assert_error(&id, StatusCode::BAD_REQUEST, "Request_BadRequest", None);
}

#[tokio::test]
async fn the_cross_tenant_access_policy_singleton_is_readable() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for version in VERSIONS {
        let url = format!(
            "{}/{version}/policies/crossTenantAccessPolicy",
            emulator.base
        );
        let read = client.get(&url).await;
        assert_eq!(read.status, StatusCode::OK);
        let doc = read.json();
        assert_eq!(
            keys(&doc),
            [
                "@odata.context",
                "id",
                "displayName",
                "allowedCloudEndpoints"
            ]
        );
        assert_eq!(
            doc["@odata.context"],
            format!(
                "https://graph.microsoft.com/{version}/$metadata#policies/crossTenantAccessPolicy/$entity"
            )
        );
        let patch = client
            .send(Method::PATCH, &url, Some(json!({"displayName": "x"})))
            .await;
        assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}

// ---------------------------------------------------------------------------------------------
// URLs and query options

#[tokio::test]
async fn url_aliases_reach_the_same_objects() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(
        &client,
        &emulator,
        PARTNER,
        json!({"displayName": "Fabrikam"}),
    )
    .await;
    let upper = PARTNER.to_ascii_uppercase();
    let base = &emulator.base;
    for path in [
        format!(
            "/V1.0/Policies/CrossTenantAccessPolicy/Partners/{PARTNER}/IdentitySynchronization"
        ),
        format!("/BETA/policies/crosstenantaccesspolicy/partners/{upper}/identitysynchronization"),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization/"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners('{PARTNER}')/identitySynchronization"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners(tenantId='{upper}')/identitySynchronization"
        ),
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners(%27{PARTNER}%27)/identity%53ynchronization"
        ),
        format!(
            "/v1.0/%70olicies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
    ] {
        let read = client.get(&format!("{base}{path}")).await;
        assert_eq!(read.status, StatusCode::OK, "{path}: {read:?}");
        assert_eq!(read.json()["displayName"], "Fabrikam", "{path}");
        // Context URLs are canonical whatever form was used.
        assert!(
            read.json()["@odata.context"]
                .as_str()
                .unwrap()
                .contains(&format!("partners('{PARTNER}')/identitySynchronization")),
            "{path}"
        );
    }
    // Writes honour aliases too, and keys are stored lower-case.
    let patch = client
        .send(
            Method::PATCH,
            &format!("{base}/v1.0/policies/crossTenantAccessPolicy/partners('{upper}')/IDENTITYSYNCHRONIZATION"),
            Some(json!({"displayName": "Aliased"})),
        )
        .await;
    assert_eq!(patch.status, StatusCode::NO_CONTENT);
    let s = state(&client, &emulator).await;
    assert_eq!(
        s["identitySynchronization"][PARTNER]["displayName"],
        "Aliased"
    );
}

#[tokio::test]
async fn keys_that_are_not_guids_are_refused() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for key in [
        "contoso.com",
        "1234",
        "%7B9c5d131d-b1c3-4fc4-9e3f-c6557947d551%7D",
    ] {
        let refused = client.get(&partner_url(&emulator, "v1.0", key)).await;
        assert_error(
            &refused,
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            None,
        );
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("GUID"),
            "{key}"
        );
    }
}

#[tokio::test]
async fn unknown_segments_and_versions_are_bad_requests() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let base = &emulator.base;
    let cases = [
        ("/me", "Invalid version."),
        ("/", "Invalid version."),
        ("/v2.0/policies", "Invalid version."),
        (
            "/beta/policies/crossTenantIdentitySyncPolicy/partners",
            "Resource not found for the segment 'crossTenantIdentitySyncPolicy'.",
        ),
        (
            "/v1.0/policies/crossTenantIdentitySyncPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551",
            "Resource not found for the segment 'crossTenantIdentitySyncPolicy'.",
        ),
        ("/v1.0/users", "Resource not found for the segment 'users'."),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partnerz",
            "Resource not found for the segment 'partnerz'.",
        ),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization/x",
            "Resource not found for the segment 'x'.",
        ),
    ];
    for (path, message) in cases {
        for method in [Method::GET, Method::POST] {
            let refused = client
                .send(method.clone(), &format!("{base}{path}"), Some(json!({})))
                .await;
            assert_error(
                &refused,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                Some(message),
            );
        }
    }
}

#[tokio::test]
async fn wrong_methods_on_known_targets_are_405() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let cases = [
        (Method::PUT, partners_url(&emulator, "v1.0")),
        (Method::DELETE, partners_url(&emulator, "beta")),
        (Method::POST, partner_url(&emulator, "v1.0", PARTNER)),
        (Method::PUT, partner_url(&emulator, "v1.0", PARTNER)),
        (Method::POST, sync_url(&emulator, "v1.0", PARTNER)),
        (Method::PUT, template_url(&emulator, "beta")),
        (
            Method::GET,
            format!("{}/resetToDefaultSettings", template_url(&emulator, "v1.0")),
        ),
        (Method::GET, format!("{}/v1.0/$batch", emulator.base)),
        (Method::HEAD, partners_url(&emulator, "v1.0")),
    ];
    for (method, url) in cases {
        let refused = client.send(method.clone(), &url, None).await;
        assert_eq!(
            refused.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url}"
        );
        if method != Method::HEAD {
            assert_error(
                &refused,
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                Some("Specified HTTP method is not allowed for the request target."),
            );
        }
    }
}

#[tokio::test]
async fn resources_the_emulator_does_not_model_answer_501() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    for path in [
        "/v1.0/policies",
        "/v1.0/policies/crossTenantAccessPolicy/default",
        "/beta/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationPartnerConfiguration",
    ] {
        let answer = client.get(&format!("{}{path}", emulator.base)).await;
        assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "NotImplemented", None);
    }
}

#[tokio::test]
async fn unsupported_query_options_and_unknown_select_properties_are_refused() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let list = partners_url(&emulator, "v1.0");
    for query in [
        "$filter=tenantId%20eq%20'x'",
        "$top=1",
        "$count=true",
        "$orderby=tenantId",
        "$select=nope",
        "$select=groupSyncInbound",
        "$select=deletedDateTime",
        "$expand=m365Capabilities",
        "$expand=identitySynchronization($select=tenantId)",
        "$select=tenantId&$select=isServiceProvider",
    ] {
        let refused = client.get(&format!("{list}?{query}")).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "BadRequest", None);
        assert!(
            !refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{query}"
        );
    }
    create_sync(&client, &emulator, PARTNER, json!({})).await;
    let sync_expand = client
        .get(&format!(
            "{}?$expand=identitySynchronization",
            sync_url(&emulator, "v1.0", PARTNER)
        ))
        .await;
    assert_error(&sync_expand, StatusCode::BAD_REQUEST, "BadRequest", None);
    // A v1.0 name without `$` is a custom option, ignored as OData ignores them.
    let custom = client.get(&format!("{list}?select=nope&foo=bar")).await;
    assert_eq!(custom.status, StatusCode::OK);
}

#[tokio::test]
async fn beta_accepts_query_options_without_the_dollar() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let list = client
        .get(&format!(
            "{}?select=tenantId&expand=identitySynchronization",
            partners_url(&emulator, "beta")
        ))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let body = list.json();
    assert_eq!(
        keys(&body["value"][0]),
        ["tenantId", "identitySynchronization"]
    );
    let filter = client
        .get(&format!("{}?filter=x", partners_url(&emulator, "beta")))
        .await;
    assert_error(&filter, StatusCode::BAD_REQUEST, "BadRequest", None);
}

// ---------------------------------------------------------------------------------------------
// Tokens and permissions

#[tokio::test]
async fn requests_without_a_token_are_401_with_a_challenge() {
    let emulator = spawn_emulator().await;
    let client = TestClient::without_token();
    for version in VERSIONS {
        let refused = client.get(&partners_url(&emulator, version)).await;
        assert_error(
            &refused,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            Some("Access token is empty."),
        );
        assert!(
            refused
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer ")
        );
    }
    let mut empty = HeaderMap::new();
    empty.insert("authorization", HeaderValue::from_static("Bearer "));
    let refused = client
        .send_raw(
            Method::GET,
            &partners_url(&emulator, "v1.0"),
            empty,
            Bytes::new(),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        Some("Access token is empty."),
    );
}

#[tokio::test]
async fn unparseable_tokens_are_401_compact_token_errors() {
    let emulator = spawn_emulator().await;
    for token in ["garbage", "a.b", "a.!!!.c"] {
        let client = TestClient::with_token(token.to_owned());
        let refused = client.get(&partners_url(&emulator, "v1.0")).await;
        assert_error(
            &refused,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            Some("CompactToken parsing failed with error code: 80049217"),
        );
        assert!(refused.header("www-authenticate").is_some());
    }
}

#[tokio::test]
async fn a_read_only_token_can_read_but_not_write() {
    let emulator = spawn_emulator().await;
    create_partner(&TestClient::new(), &emulator, PARTNER).await;
    let reader = TestClient::with_token(token_with_scopes("Policy.Read.All"));
    for version in VERSIONS {
        assert_eq!(
            reader.get(&partners_url(&emulator, version)).await.status,
            StatusCode::OK
        );
        assert_eq!(
            reader.get(&template_url(&emulator, version)).await.status,
            StatusCode::OK
        );
        for (method, url) in [
            (Method::PUT, sync_url(&emulator, version, PARTNER)),
            (Method::PATCH, partner_url(&emulator, version, PARTNER)),
            (Method::DELETE, partner_url(&emulator, version, PARTNER)),
            (Method::POST, partners_url(&emulator, version)),
            (Method::PATCH, template_url(&emulator, version)),
        ] {
            let refused = reader.send(method, &url, Some(json!({}))).await;
            assert_error(
                &refused,
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                Some("Insufficient privileges to complete the operation."),
            );
        }
    }
    let restore = reader
        .send(
            Method::POST,
            &deleted_url(&emulator, &format!("crossTenantPartners/{PARTNER}/restore")),
            None,
        )
        .await;
    assert_eq!(restore.status, StatusCode::FORBIDDEN);
    assert_eq!(state(&reader, &emulator).await["writes"], 1);
}

#[tokio::test]
async fn tokens_without_the_policy_permissions_are_forbidden() {
    let emulator = spawn_emulator().await;
    let client = TestClient::with_token(token_with_scopes("User.Read Directory.Read.All"));
    let read = client.get(&partners_url(&emulator, "v1.0")).await;
    assert_error(
        &read,
        StatusCode::FORBIDDEN,
        "Authorization_RequestDenied",
        Some("Insufficient privileges to complete the operation."),
    );
    let app = TestClient::with_token(syncgate::token::unsigned_jwt(
        &json!({"roles": ["Policy.ReadWrite.CrossTenantAccess"]}),
    ));
    create_partner(&app, &emulator, PARTNER).await;
}

#[tokio::test]
async fn tokens_without_permission_claims_may_do_everything() {
    let emulator = spawn_emulator().await;
    let client = TestClient::with_token(syncgate::token::unsigned_jwt(&json!({"oid": "o"})));
    create_partner(&client, &emulator, PARTNER).await;
    create_sync(&client, &emulator, PARTNER, json!({})).await;
}

#[tokio::test]
async fn the_mto_template_also_accepts_multi_tenant_organization_permissions() {
    let emulator = spawn_emulator().await;
    let client = TestClient::with_token(token_with_scopes("MultiTenantOrganization.ReadWrite.All"));
    let url = template_url(&emulator, "v1.0");
    assert_eq!(client.get(&url).await.status, StatusCode::OK);
    let patched = client
        .send(
            Method::PATCH,
            &url,
            Some(json!({"templateApplicationLevel": "none"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let partners = client.get(&partners_url(&emulator, "v1.0")).await;
    assert_eq!(partners.status, StatusCode::FORBIDDEN);
}

// ---------------------------------------------------------------------------------------------
// Graph's headers

#[tokio::test]
async fn every_graph_response_carries_graphs_headers() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    create_partner(&client, &emulator, PARTNER).await;
    let ok = client.get(&partner_url(&emulator, "v1.0", PARTNER)).await;
    let no_content = client
        .send(
            Method::PATCH,
            &partner_url(&emulator, "v1.0", PARTNER),
            Some(json!({})),
        )
        .await;
    let error = client.get(&partner_url(&emulator, "beta", OTHER)).await;
    let unauthenticated = TestClient::without_token()
        .get(&partners_url(&emulator, "v1.0"))
        .await;
    for response in [&ok, &no_content, &error, &unauthenticated] {
        let request_id = response.header("request-id").expect("request-id");
        assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
        assert_eq!(response.header("client-request-id"), Some(request_id));
        let diagnostic: Value =
            serde_json::from_str(response.header("x-ms-ags-diagnostic").unwrap()).unwrap();
        assert!(diagnostic["ServerInfo"]["DataCenter"].is_string());
        assert_eq!(
            response.header("strict-transport-security"),
            Some("max-age=31536000")
        );
        assert_eq!(response.header("x-ms-resource-unit"), Some("1"));
        assert_eq!(response.header("cache-control"), Some("no-cache"));
        assert!(response.header("date").is_some());
    }
    assert_eq!(ok.header("content-type"), Some(ODATA_JSON));
    assert_eq!(ok.header("odata-version"), Some("4.0"));
    assert_eq!(error.header("content-type"), Some("application/json"));
    assert_eq!(
        error.json()["error"]["innerError"]["request-id"],
        error.header("request-id").unwrap()
    );
}

#[tokio::test]
async fn client_request_id_is_echoed_in_headers_and_errors() {
    let emulator = spawn_emulator().await;
    let client = TestClient::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        "client-request-id",
        HeaderValue::from_static("e70c5c1b-8b47-68c0-3171-3d22f5e0bd54"),
    );
    let missing = client
        .send_raw(
            Method::GET,
            &partner_url(&emulator, "v1.0", PARTNER),
            headers,
            Bytes::new(),
        )
        .await;
    assert_eq!(
        missing.header("client-request-id"),
        Some("e70c5c1b-8b47-68c0-3171-3d22f5e0bd54")
    );
    assert_ne!(
        missing.header("request-id"),
        missing.header("client-request-id")
    );
    let inner = &missing.json()["error"]["innerError"];
    assert_eq!(
        inner["client-request-id"],
        "e70c5c1b-8b47-68c0-3171-3d22f5e0bd54"
    );
    let date = inner["date"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S").is_ok(),
        "{date}"
    );
}
