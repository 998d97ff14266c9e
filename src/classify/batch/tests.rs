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
        "id": "a", "method": "PATCH", "url": sync_url(),
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
            "request '1' has the method 'GE T'",
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

/// A refusal of the whole batch with `code`, naming request `id`.
fn refused_with(requests: Value, code: &str, id: &str) -> Refusal {
    let body = json!({ "requests": requests }).to_string();
    let r = parse_batch(ApiVersion::V1_0, JSON, body.as_bytes())
        .expect_err(&format!("refused: {requests}"));
    assert_eq!(r.code, code, "{requests}: {}", r.message);
    assert!(
        r.message.contains(&format!("request '{id}'")),
        "{requests}: the refusal names the request: {}",
        r.message
    );
    r
}

#[test]
fn sub_request_methods_must_be_exact_upper_case_graph_methods() {
    let with_body = |method: &str| {
        json!([{"id": "m", "method": method, "url": sync_url(),
            "headers": {"Content-Type": "application/json"}, "body": {"userSyncInbound": null}}])
    };
    let refused = [
        "GET ",
        " GET",
        "\tGET",
        "GET\n",
        "G ET",
        "get",
        "Get",
        "patch",
        "Patch",
        "PATCH ",
        "PATCH\u{a0}",
        "\u{a0}PATCH",
        "PAT\u{a0}CH",
        "DELETE\u{200b}",
        "ＰＡＴＣＨ",
        "HEAD",
        "HEAD ",
        "OPTIONS",
        "TRACE",
        "MERGE",
        "CONNECT",
        "PROPFIND",
        "",
        "POST\0",
    ];
    for method in refused {
        let r = refused_with(with_body(method), codes::BAD_BATCH, "m");
        assert!(
            r.message
                .contains("must be exactly one of GET, POST, PUT, PATCH or DELETE"),
            "{method:?}: {}",
            r.message
        );
    }
    for method in BATCH_METHODS {
        let request = one(json!({"id": "1", "method": method.as_str(), "url": "/me"}));
        assert_eq!(request.method, method);
    }
}

#[test]
fn sub_request_urls_a_lenient_parser_reads_differently_refuse_the_whole_batch() {
    let tail = sync_url();
    let urls = [
        // Issue 7's shapes: a scheme without `//`, one-slash schemes, a leading space,
        // TAB/CR/LF inside a segment or the version.
        format!("x:/v1.0{tail}"),
        format!("https:v1.0{tail}"),
        format!("https:/v1.0{tail}"),
        format!("HTTPS:/v1.0{tail}"),
        format!(" {tail}"),
        format!(" /v1.0{tail}"),
        format!("/v1.\t0{tail}"),
        format!("/v1.0\t{tail}"),
        format!("/v1.0/poli\ncies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/policies/crossTenant\rAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/policies%09/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1%2E0%0A{tail}"),
        // The class: other whitespace, invisible and non-ASCII characters, backslashes, hosts.
        format!("\u{a0}{tail}"),
        format!("{tail}\u{a0}"),
        format!("/pol\u{200b}icies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/\u{ff50}olicies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/pol%C4%B1cies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/users\\..\\{}", tail.trim_start_matches('/')),
        format!("/users%5C..%5C{}", tail.trim_start_matches('/')),
        format!("https://evil.example/v1.0{tail}"),
        format!("https://graph.microsoft.com@evil.example/v1.0{tail}"),
        format!("ftp://graph.microsoft.com/v1.0{tail}"),
        format!("{tail}#x"),
        format!("/users#/../{}", tail.trim_start_matches('/')),
        format!("{tail}?x=%0D%0A"),
        // And for ordinary requests too: the batch is re-sent from what syncgate read.
        "/me\t".to_owned(),
        " /me".to_owned(),
        "/users/caf%C3%A9@x.com".to_owned(),
        "/me/drive/root:/a%20b.txt:/content".to_owned(),
        "x:/me".to_owned(),
        "//graph.microsoft.com/v1.0/me".to_owned(),
        "\\\\graph.microsoft.com/v1.0/me".to_owned(),
        "/\\graph.microsoft.com/v1.0/me".to_owned(),
    ];
    for url in urls {
        for method in ["PATCH", "GET"] {
            let r = refused_with(
                json!([{"id": "u", "method": method, "url": url}]),
                codes::NON_CANONICAL_URL,
                "u",
            );
            assert_eq!(r.status, http::StatusCode::BAD_REQUEST, "{url:?}");
        }
    }
}

#[test]
fn a_nested_batch_behind_any_trick_refuses_the_whole_batch() {
    let body = json!({"requests": [{"id": "i", "method": "DELETE", "url": sync_url()}]});
    for url in [
        "x:/v1.0/$batch",
        "https:/v1.0/$batch",
        "https:v1.0/$batch",
        " /$batch",
        "/$batch ",
        "/$ba\tch",
        "/$batch\r\n",
        "/%24batch%09",
        "/%20$batch",
        "/\u{ff04}batch",
        "/%EF%BC%84batch",
        "/$batch#",
        "https://evil.example/v1.0/$batch",
    ] {
        let requests = json!([{"id": "n", "method": "POST", "url": url,
            "headers": {"Content-Type": "application/json"}, "body": body}]);
        refused_with(requests, codes::NON_CANONICAL_URL, "n");
    }
    for url in [
        "/$batch;x=1",
        "/$batch()",
        "/v1.0/./$batch",
        "$BATCH",
        "/beta/$batch/",
    ] {
        let requests = json!([{"id": "n", "method": "POST", "url": url}]);
        let r = refused_with(requests, codes::BAD_BATCH, "n");
        assert!(r.message.contains("nested $batch"), "{url}: {}", r.message);
    }
}

#[test]
fn two_spellings_of_authorization_content_type_or_encoding_refuse_the_batch() {
    for (a, b) in [
        ("Authorization", "authorization"),
        ("Content-Type", "CONTENT-TYPE"),
        ("Content-Encoding", "content-encoding"),
    ] {
        let requests = json!([{"id": "h", "method": "PATCH", "url": sync_url(),
            "headers": {a: "identity", b: "identity"}}]);
        let r = refused_with(requests, codes::BAD_BATCH, "h");
        assert!(
            r.message.contains(&format!("more than one {a} header")),
            "{}",
            r.message
        );
    }
    for encoding in ["gzip", "deflate", "br", "x"] {
        let requests = json!([{"id": "z", "method": "PATCH", "url": sync_url(),
            "headers": {"Content-Type": "application/json", "Content-Encoding": encoding},
            "body": {"userSyncInbound": null}}]);
        let r = refused_with(requests, codes::UNSUPPORTED_CONTENT_ENCODING, "z");
        assert_eq!(r.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let identity = one(json!({"id": "1", "method": "GET", "url": "/me",
        "headers": {"content-encoding": "IDENTITY", "Authorization": "Bearer x"}}));
    assert_eq!(identity.classification, Classification::Forward);
}

#[test]
fn partner_navigation_writes_inside_a_batch_are_refused_like_top_level_ones() {
    let p = format!("/policies/crossTenantAccessPolicy/partners/{K}");
    let parsed = batch(json!([
        {"id": "1", "method": "PATCH", "url": format!("{p}/m365Capabilities"),
            "headers": {"Content-Type": "application/json"}, "body": {}},
        {"id": "2", "method": "PUT", "url": format!("{p}/serviceProviderConstraints"),
            "headers": {"Content-Type": "application/json"}, "body": {}},
        {"id": "3", "method": "DELETE", "url": format!("{p}/someOtherNavigation")},
        {"id": "4", "method": "GET", "url": format!("{p}/m365Capabilities")},
    ]))
    .unwrap();
    for request in &parsed.requests[..3] {
        match &request.classification {
            Classification::Refuse(r) => {
                assert_eq!(r.code, codes::UNKNOWN_GOVERNED_PATH, "{}", request.id)
            }
            other => panic!("{}: expected a refusal, got {other:?}", request.id),
        }
    }
    assert_eq!(parsed.requests[3].classification, Classification::Forward);
    assert!(parsed.is_governed());
}

#[test]
fn the_normalized_url_is_exactly_what_was_classified_and_can_be_sent() {
    let tail = sync_url();
    let urls = [
        tail.clone(),
        tail.trim_start_matches('/').to_owned(),
        format!("/v1.0{tail}"),
        format!("https://graph.microsoft.com/beta{tail}?$select=tenantId"),
        "users?$select=id,displayName&$filter=city eq null&$count=true".to_owned(),
        "/users?$search=\"displayName:wa\"&$filter=a <> b".to_owned(),
        "/me?$select=displayName ".to_owned(),
        format!("/Policies/CrossTenantAccessPolicy/Partners('{K}')/IdentitySynchronization?x=1"),
        "/me/drive/root:/a.txt:/content".to_owned(),
    ];
    for url in urls {
        for method in ["GET", "PATCH"] {
            let request = one(json!({"id": "1", "method": method, "url": url}));
            let normalized = &request.normalized_url;
            assert!(normalized.starts_with("/v1.0/"), "{url}: {normalized}");
            let sent = http::uri::PathAndQuery::try_from(&normalized["/v1.0".len()..])
                .unwrap_or_else(|e| panic!("{url}: {normalized} cannot be sent: {e}"));
            let again = classify(
                &request.method,
                &format!("/v1.0{}", sent.path()),
                sent.query(),
                &HeaderMap::new(),
            );
            assert_eq!(again, request.classification, "{url}: {normalized}");
        }
    }
}

#[test]
fn generated_sub_request_urls_are_refused_or_read_cleanly_and_classified_as_sent() {
    use super::super::alias_tests::{PIECES, Rng};
    use super::super::tests::GOVERNED_ROUTES;
    let mut rng = Rng(0x5EED_0BA7_C4ED_0007);
    let prefixes = [
        "",
        "",
        "/",
        "/v1.0",
        "https://graph.microsoft.com/v1.0",
        "https:",
        "x:",
        " ",
        "\t",
    ];
    let methods = [
        "GET",
        "PATCH",
        "PUT",
        "DELETE",
        "POST",
        "patch",
        "GET ",
        "\u{a0}PUT",
    ];
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..5_000 {
        let (_, template, _, _, _, _) = GOVERNED_ROUTES[rng.below(GOVERNED_ROUTES.len())];
        let tail = template.trim_start_matches("/{v}").replace("{k}", K);
        let mut url: Vec<char> = format!("{}{tail}", rng.pick(&prefixes)).chars().collect();
        for _ in 0..rng.below(3) {
            let at = rng.below(url.len() + 1);
            // Batch URLs are strings: a `#` or a second `?` can be anywhere.
            let piece = if rng.one_in(20) {
                rng.pick(&["#", "?"])
            } else {
                rng.pick(PIECES)
            };
            url.splice(at..at, piece.chars());
        }
        let url: String = url.into_iter().collect();
        let method = rng.pick(&methods);
        let body = json!({"requests": [{"id": "g", "method": method, "url": url}]}).to_string();
        let request = match parse_batch(ApiVersion::Beta, JSON, body.as_bytes()) {
            Ok(mut batch) => batch.requests.remove(0),
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        parsed += 1;
        let before_query = url.split('?').next().unwrap_or_default();
        assert!(
            before_query
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '\\' && c != '#'),
            "{url:?} was read although readers disagree on it"
        );
        assert!(
            BATCH_METHODS.iter().any(|m| m.as_str() == method),
            "{method:?} was accepted"
        );
        let normalized = &request.normalized_url;
        let sent = http::uri::PathAndQuery::try_from(&normalized["/beta".len()..])
            .unwrap_or_else(|e| panic!("{url:?}: {normalized} cannot be sent: {e}"));
        let again = classify(
            &request.method,
            &format!("/beta{}", sent.path()),
            sent.query(),
            &HeaderMap::new(),
        );
        assert_eq!(again, request.classification, "{url:?}: {normalized}");
    }
    assert!(
        parsed > 500 && refused > 500,
        "{parsed} parsed, {refused} refused"
    );
}
