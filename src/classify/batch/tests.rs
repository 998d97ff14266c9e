//! `$batch` envelopes: normalisation and classification of sub-requests, ordering, and every
//! refusal.

use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::super::{BodyRule, Governed, OperationKind};
use super::*;

const K: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const JSON: Option<&str> = Some("application/json");

fn sync_url() -> String {
    format!("/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization")
}

fn batch(requests: Value) -> Result<Batch, Refusal> {
    let body = json!({ "requests": requests }).to_string();
    parse_batch(ApiVersion::V1_0, JSON, body.as_bytes())
}

fn one(request: Value) -> BatchRequest {
    let mut parsed = batch(json!([request])).unwrap_or_else(|r| panic!("{r}"));
    parsed.requests.remove(0)
}

fn governed(c: &Classification) -> &Governed {
    match c {
        Classification::Governed(g) => g,
        other => panic!("expected Governed, got {other:?}"),
    }
}

fn refused(body: &[u8], content_type: Option<&str>) -> Refusal {
    let r = parse_batch(ApiVersion::Beta, content_type, body).expect_err("refused");
    assert_eq!(r.code, codes::BAD_BATCH, "{}", r.message);
    assert_eq!(r.status, http::StatusCode::BAD_REQUEST);
    assert!(
        r.message.starts_with("Invalid batch payload: "),
        "{}",
        r.message
    );
    r
}

fn refused_requests(requests: Value) -> Refusal {
    refused(json!({ "requests": requests }).to_string().as_bytes(), JSON)
}

#[test]
fn a_batch_of_ordinary_requests_is_not_governed() {
    let parsed = batch(json!([
        {"id": "1", "method": "GET", "url": "/me"},
        {"id": "2", "method": "GET", "url": "users?$select=id"},
        {"id": "3", "method": "POST", "url": "/groups", "headers": {"Content-Type": "application/json"}, "body": {"displayName": "x"}},
    ]))
    .unwrap();
    assert_eq!(parsed.version, ApiVersion::V1_0);
    assert_eq!(parsed.order, [0, 1, 2]);
    assert!(!parsed.is_governed());
    assert!(
        parsed
            .requests
            .iter()
            .all(|r| r.classification == Classification::Forward)
    );
    assert_eq!(parsed.requests[1].normalized_url, "/v1.0/users?$select=id");
    assert_eq!(parsed.requests[2].body, Some(json!({"displayName": "x"})));
    assert_eq!(parsed.position("3"), Some(2));
}

#[test]
fn a_governed_sub_request_is_classified_as_if_sent_alone_with_the_batch_version() {
    let request = one(json!({
        "id": "a", "method": "patch", "url": sync_url(),
        "headers": {"content-type": "application/json"},
        "body": {"userSyncInbound": {"isSyncAllowed": true}}
    }));
    assert_eq!(request.method, Method::PATCH);
    assert_eq!(request.url, sync_url());
    assert_eq!(request.normalized_url, format!("/v1.0{}", sync_url()));
    let g = governed(&request.classification);
    assert_eq!(g.kind, OperationKind::SyncUpdate);
    assert_eq!(g.path.version, ApiVersion::V1_0);
    assert_eq!(g.body, BodyRule::Sync);
    assert_eq!(request.content_type(), Some("application/json"));
    assert_eq!(
        request.checked_body(),
        Ok(Some(json!({"userSyncInbound": {"isSyncAllowed": true}})))
    );
}

#[test]
fn sub_request_urls_are_normalised_before_matching() {
    let plain = one(json!({"id": "1", "method": "DELETE", "url": sync_url()}));
    let expected = governed(&plain.classification).clone();
    let tail = sync_url();
    let forms = [
        tail.trim_start_matches('/').to_owned(),
        format!("/v1.0{tail}"),
        format!("v1.0{tail}"),
        format!("/beta{tail}"),
        format!("/V1.0{tail}"),
        format!("/%761.0{tail}"),
        format!("/v1.0/v1.0{tail}"),
        format!("https://graph.microsoft.com/v1.0{tail}"),
        format!("HTTPS://GRAPH.MICROSOFT.COM/beta{tail}"),
        format!("https://graph.microsoft.us{tail}"),
        format!("http://localhost:8080/v1.0{tail}"),
        format!("  {tail}  "),
        format!("{tail}#fragment"),
        "/Policies/CrossTenantAccessPolicy/Partners('9C5D131D-B1C3-4FC4-9E3F-C6557947D551')/IdentitySynchronization".to_owned(),
    ];
    for url in forms {
        let request = one(json!({"id": "1", "method": "DELETE", "url": url}));
        assert_eq!(governed(&request.classification), &expected, "{url}");
        assert_eq!(request.url, url, "the url is kept as sent");
    }
}

#[test]
fn sub_requests_get_every_classification_a_top_level_request_can() {
    let parsed = batch(json!([
        {"id": "read", "method": "GET", "url": sync_url()},
        {"id": "override", "method": "PATCH", "url": sync_url(), "headers": {"X-HTTP-Method-Override": "DELETE"}},
        {"id": "legacy", "method": "POST", "url": "/policies/crossTenantIdentitySyncPolicy/partners"},
        {"id": "unknown", "method": "PUT", "url": format!("/policies/crossTenantAccessPolicy/partners/{K}/automaticUserConsentSettings")},
        {"id": "trick", "method": "PATCH", "url": format!("/policies/crossTenantAccessPolicy/partners/{K}/identity%2553ynchronization")},
        {"id": "climb", "method": "PATCH", "url": format!("/users/../policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization")},
        {"id": "badkey", "method": "DELETE", "url": "/policies/crossTenantAccessPolicy/partners/contoso.com"},
    ]))
    .unwrap();
    assert!(matches!(
        parsed.requests[0].classification,
        Classification::SyncRead(_)
    ));
    let codes: Vec<&str> = parsed.requests[1..]
        .iter()
        .map(|r| match &r.classification {
            Classification::Refuse(refusal) => refusal.code,
            other => panic!("{}: expected Refuse, got {other:?}", r.id),
        })
        .collect();
    assert_eq!(
        codes,
        [
            codes::METHOD_OVERRIDE_REFUSED,
            codes::LEGACY_PATH_REFUSED,
            codes::UNKNOWN_GOVERNED_PATH,
            codes::NON_CANONICAL_PATH,
            codes::NON_CANONICAL_PATH,
            codes::INVALID_KEY,
        ]
    );
    assert!(parsed.is_governed());
    let reads_only = batch(json!([{"id": "read", "method": "GET", "url": sync_url()}])).unwrap();
    assert!(
        !reads_only.is_governed(),
        "a sync read alone does not make a batch governed"
    );
}

#[test]
fn base64_json_bodies_are_decoded_and_parsed_strictly() {
    let encoded = STANDARD.encode(br#"{"userSyncInbound": {"isSyncAllowed": true}}"#);
    let request = one(json!({
        "id": "1", "method": "PUT", "url": sync_url(),
        "headers": {"Content-Type": "application/json; charset=utf-8"}, "body": encoded
    }));
    assert_eq!(
        request.body,
        Some(json!({"userSyncInbound": {"isSyncAllowed": true}}))
    );
    assert!(request.checked_body().is_ok());

    let duplicated = STANDARD
        .encode(br#"{"userSyncInbound": null, "userSyncInbound": {"isSyncAllowed": true}}"#);
    let r = refused_requests(json!([{"id": "1", "method": "PUT", "url": sync_url(),
        "headers": {"Content-Type": "application/json"}, "body": duplicated}]));
    assert!(
        r.message.contains("duplicate member 'userSyncInbound'"),
        "{}",
        r.message
    );

    let r = refused_requests(json!([{"id": "1", "method": "PUT", "url": sync_url(),
        "headers": {"Content-Type": "application/json"}, "body": "{\"userSyncInbound\": null}"}]));
    assert!(r.message.contains("not base64"), "{}", r.message);

    let image = one(
        json!({"id": "1", "method": "PUT", "url": "/me/photo/$value",
        "headers": {"Content-Type": "image/jpeg"}, "body": "/9j/4AAQ"}),
    );
    assert_eq!(image.body, Some(json!("/9j/4AAQ")));
}

#[test]
fn a_governed_sub_request_body_is_checked_against_its_schema() {
    let request = one(json!({
        "id": "1", "method": "PATCH", "url": sync_url(),
        "headers": {"Content-Type": "application/json"},
        "body": {"UserSyncInbound": {"isSyncAllowed": true}}
    }));
    let r = request.checked_body().expect_err("refused");
    assert_eq!(r.code, codes::INVALID_PROPERTY);
    assert_eq!(r.governed.map(|g| g.kind), Some(OperationKind::SyncUpdate));

    let restore = parse_batch(
        ApiVersion::Beta,
        JSON,
        json!({"requests": [{"id": "1", "method": "POST",
            "url": format!("/policies/deletedItems/crossTenantPartners/{K}/restore"),
            "headers": {"Content-Type": "application/json"}, "body": {}}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let r = restore.requests[0].checked_body().expect_err("refused");
    assert_eq!(r.code, codes::UNEXPECTED_BODY);
    let plain = one(json!({"id": "1", "method": "GET", "url": "/me"}));
    assert_eq!(plain.checked_body(), Ok(None));
}

#[test]
fn the_execution_order_honours_depends_on_case_insensitively() {
    let parsed = batch(json!([
        {"id": "c", "method": "GET", "url": "/me", "dependsOn": ["B"]},
        {"id": "b", "method": "GET", "url": "/me", "dependsOn": ["a", "A"]},
        {"id": "a", "method": "GET", "url": "/me"},
        {"id": "d", "method": "GET", "url": "/me"},
    ]))
    .unwrap();
    assert_eq!(parsed.order, [2, 1, 0, 3]);
    assert_eq!(parsed.requests[0].depends_on, ["B"]);
    let numeric = batch(json!([
        {"id": 2, "method": "GET", "url": "/me", "dependsOn": [1]},
        {"id": 1, "method": "GET", "url": "/me"},
    ]))
    .unwrap();
    assert_eq!(numeric.requests[0].id, "2");
    assert_eq!(numeric.order, [1, 0]);
}

#[test]
fn envelopes_syncgate_cannot_read_exactly_as_graph_would_are_refused() {
    let ok = br#"{"requests": [{"id": "1", "method": "GET", "url": "/me"}]}"#;
    for (content_type, expected) in [
        (None, "not missing"),
        (
            Some("multipart/mixed; boundary=batch_1"),
            "multipart batches are refused",
        ),
        (Some("text/plain"), "not 'text/plain'"),
        (Some("application/json; charset=utf-16"), "must be JSON"),
    ] {
        let r = refused(ok, content_type);
        assert!(
            r.message.contains(expected),
            "{content_type:?}: {}",
            r.message
        );
    }
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"requests": [], "requests": [{"id": "1", "method": "GET", "url": "/me"}]}"#,
            "duplicate member 'requests'",
        ),
        (
            br#"{"requests": [{"id": "1", "id": "2", "method": "GET", "url": "/me"}]}"#,
            "duplicate member 'id' in the object at $.requests[0]",
        ),
        (
            br#"{"requests": [{"id": "1", "method": "GET", "url": "/me"}]} x"#,
            "unexpected data after the JSON value",
        ),
        (b"{\"requests\": [\xff]}", "not valid UTF-8"),
        (br#"[]"#, "must be a JSON object"),
        (br#"{}"#, "'requests' is missing"),
        (br#"{"requests": {}}"#, "'requests' must be an array"),
        (br#"{"requests": []}"#, "'requests' is empty"),
        (
            br#"{"Requests": [{"id": "1", "method": "GET", "url": "/me"}]}"#,
            "has 'Requests'; the member is spelled 'requests'",
        ),
        (
            br#"{"requests": [{"id": "1", "method": "GET", "url": "/me"}], "atomicityGroup": "g"}"#,
            "the unknown member 'atomicityGroup'",
        ),
    ];
    for (body, expected) in cases {
        let r = refused(body, JSON);
        assert!(
            r.message.contains(expected),
            "{}: {}",
            String::from_utf8_lossy(body),
            r.message
        );
    }
}

#[test]
fn requests_that_break_the_documented_rules_are_refused() {
    let me = |id: &str| json!({"id": id, "method": "GET", "url": "/me"});
    let too_many: Vec<Value> = (0..21).map(|i| me(&i.to_string())).collect();
    let twenty: Vec<Value> = (0..20).map(|i| me(&i.to_string())).collect();
    assert!(batch(Value::Array(twenty)).is_ok());
    let cases: Vec<(Value, &str)> = vec![
        (
            Value::Array(too_many),
            "the batch has 21 requests; Graph allows at most 20",
        ),
        (
            json!([me("a"), me("A")]),
            "the ids 'a' and 'A' are the same",
        ),
        (
            json!([me("1"), me("1")]),
            "the ids '1' and '1' are the same",
        ),
        (
            json!([{"method": "GET", "url": "/me"}]),
            "requests[0].id is missing",
        ),
        (
            json!([{"id": "", "method": "GET", "url": "/me"}]),
            "requests[0].id must be a non-empty string",
        ),
        (
            json!([{"id": {"x": 1}, "method": "GET", "url": "/me"}]),
            "requests[0].id must be a non-empty string",
        ),
        (
            json!([{"id": "1", "url": "/me"}]),
            "request '1': 'method' is missing",
        ),
        (
            json!([{"id": "1", "method": 1, "url": "/me"}]),
            "'method' must be a string",
        ),
        (
            json!([{"id": "1", "method": "GE T", "url": "/me"}]),
            "invalid method 'GE T'",
        ),
        (json!([{"id": "1", "method": "GET"}]), "'url' is missing"),
        (
            json!([{"id": "1", "method": "GET", "url": " "}]),
            "'url' is empty",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": 5}]),
            "'url' must be a string",
        ),
        (
            json!([{"id": "1", "method": "GET", "URL": "/me"}]),
            "has 'URL'; the member is spelled 'url'",
        ),
        (
            json!([{"id": "1", "Method": "DELETE", "method": "GET", "url": "/me"}]),
            "has 'Method'; the member is spelled 'method'",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "DependsOn": []}]),
            "has 'DependsOn'",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "atomicityGroup": "g"}]),
            "the unknown member 'atomicityGroup'",
        ),
        (json!(["x"]), "requests[0] must be an object"),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "headers": []}]),
            "'headers' must be an object",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "headers": {"a": 1}}]),
            "the header 'a' must be a string",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "headers": {"a b": "c"}}]),
            "'a b' is not a valid header name",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "headers": {"a": "c\nd"}}]),
            "the header 'a' has an invalid value",
        ),
        (
            json!([{"id": "1", "method": "PATCH", "url": sync_url(), "headers": {"Content-Type": "application/json", "content-type": "text/plain"}, "body": {}}]),
            "more than one Content-Type header",
        ),
        (
            json!([{"id": "1", "method": "PATCH", "url": sync_url(), "body": {"userSyncInbound": null}}]),
            "has a body but no Content-Type header",
        ),
        (
            json!([{"id": "1", "method": "PATCH", "url": sync_url(), "headers": {"Accept": "application/json"}, "body": {}}]),
            "has a body but no Content-Type header",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]}]),
            "request '1' depends on '2', which is not in the batch",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "dependsOn": "2"}]),
            "'dependsOn' must be an array",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "dependsOn": [true]}]),
            "'dependsOn' must list ids",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["1"]}]),
            "the dependsOn of requests 1 form a cycle",
        ),
        (
            json!([
                {"id": "a", "method": "GET", "url": "/me", "dependsOn": ["b"]},
                {"id": "b", "method": "GET", "url": "/me", "dependsOn": ["c"]},
                {"id": "c", "method": "GET", "url": "/me", "dependsOn": ["A"]},
                {"id": "d", "method": "GET", "url": "/me"},
            ]),
            "the dependsOn of requests a, b, c form a cycle",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "//graph.microsoft.com/v1.0/me"}]),
            "scheme-relative URL",
        ),
        (
            json!([{"id": "1", "method": "GET", "url": "\\\\graph.microsoft.com/v1.0/me"}]),
            "scheme-relative URL",
        ),
    ];
    for (requests, expected) in cases {
        let r = refused_requests(requests.clone());
        assert!(r.message.contains(expected), "{requests}: {}", r.message);
    }
}

#[test]
fn nested_batches_are_refused_in_every_spelling() {
    for url in [
        "/$batch",
        "$batch",
        "/%24batch",
        "/$BATCH/",
        "/v1.0/$batch",
        "/beta/%24batch",
        "https://graph.microsoft.com/v1.0/$batch",
        "/%2524batch",
        "/./$batch",
    ] {
        for method in ["POST", "GET"] {
            let r = refused_requests(json!([{"id": "1", "method": method, "url": url}]));
            assert!(r.message.contains("nested $batch"), "{url}: {}", r.message);
        }
    }
    assert!(batch(json!([{"id": "1", "method": "POST", "url": "/users/$batch"}])).is_ok());
}
