//! Strict bodies: what passes, and every way a body is refused, with Graph's codes.

use http::StatusCode;
use serde_json::json;

use super::*;

const JSON: Option<&str> = Some("application/json");
const K: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

fn parse(rule: BodyRule, version: ApiVersion, body: &str) -> Result<Option<Value>, Refusal> {
    parse_body(rule, version, JSON, body.as_bytes())
}

fn refused(rule: BodyRule, version: ApiVersion, body: &str) -> Refusal {
    match parse(rule, version, body) {
        Err(r) => r,
        Ok(v) => panic!("{body}: expected a refusal, got {v:?}"),
    }
}

fn tenant(text: &str) -> TenantId {
    TenantId::parse(text).expect("tenant id")
}

#[test]
fn documented_sync_bodies_pass_in_both_versions() {
    let bodies = [
        r#"{ "displayName": "Fabrikam", "userSyncInbound": { "isSyncAllowed": true } }"#,
        r#"{ "userSyncInbound": { "isSyncAllowed": false } }"#,
        r#"{ "userSyncInbound": { "isSyncAllowed": null } }"#,
        r#"{ "userSyncInbound": null, "displayName": null }"#,
        r#"{ "userSyncInbound": {} }"#,
        r#"{}"#,
        r##"{"@odata.type": "#microsoft.graph.crossTenantIdentitySyncPolicyPartner", "tenantId": "9c5d131d-b1c3-4fc4-9e3f-c6557947d551"}"##,
        r##"{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#x", "userSyncInbound": {"@odata.type": "#microsoft.graph.crossTenantUserSyncInbound", "isSyncAllowed": true}}"##,
        "\n\t {\"userSync\\u0049nbound\": {\"isSyncAllowed\": true}} \r\n",
    ];
    for version in [ApiVersion::V1_0, ApiVersion::Beta] {
        for body in bodies {
            let value = parse(BodyRule::Sync, version, body)
                .unwrap_or_else(|r| panic!("{body}: {r}"))
                .expect("a body");
            assert!(value.is_object());
        }
    }
}

#[test]
fn beta_sync_properties_pass_in_beta_and_are_invalid_in_v1() {
    let cases = [
        (
            "groupSyncInbound",
            r#"{"groupSyncInbound": {"isSyncAllowed": true}}"#,
        ),
        (
            "externalCloudAuthorizedApplicationId",
            r#"{"externalCloudAuthorizedApplicationId": "abc"}"#,
        ),
        ("deletedDateTime", r#"{"deletedDateTime": null}"#),
    ];
    for (name, body) in cases {
        assert!(
            parse(BodyRule::Sync, ApiVersion::Beta, body).is_ok(),
            "{body}"
        );
        let r = refused(BodyRule::Sync, ApiVersion::V1_0, body);
        assert_eq!(r.code, codes::INVALID_PROPERTY);
        assert_eq!(r.message, format!("Invalid property '{name}'."));
    }
}

#[test]
fn unknown_and_mis_cased_properties_are_invalid_at_any_depth_as_graph_says() {
    let cases = [
        (
            BodyRule::Sync,
            r#"{"UserSyncInbound": {"isSyncAllowed": true}}"#,
            "UserSyncInbound",
        ),
        (
            BodyRule::Sync,
            r#"{"usersyncinbound": {"isSyncAllowed": true}}"#,
            "usersyncinbound",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": {"IsSyncAllowed": true}}"#,
            "IsSyncAllowed",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": {"isSyncAllowed": true, "x": 1}}"#,
            "x",
        ),
        (
            BodyRule::Sync,
            r#"{"roleEnabledGroupSyncInbound": {"isSyncAllowed": true}}"#,
            "roleEnabledGroupSyncInbound",
        ),
        (BodyRule::Sync, r#"{"id": "x"}"#, "id"),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound@odata.bind": "x"}"#,
            "userSyncInbound@odata.bind",
        ),
        (
            BodyRule::Sync,
            r#"{"@microsoft.graph.conflictBehavior": "replace"}"#,
            "@microsoft.graph.conflictBehavior",
        ),
        (
            BodyRule::Partner,
            r#"{"B2BCollaborationInbound": {}}"#,
            "B2BCollaborationInbound",
        ),
        (
            BodyRule::Partner,
            r#"{"b2BCollaborationInbound": {}}"#,
            "b2BCollaborationInbound",
        ),
        (
            BodyRule::Partner,
            r#"{"automaticUserConsentSettings": {"InboundAllowed": true}}"#,
            "InboundAllowed",
        ),
        (
            BodyRule::Partner,
            r#"{"inboundTrust": {"isMfaAccepted": true, "isDeviceAccepted": true}}"#,
            "isDeviceAccepted",
        ),
        (
            BodyRule::Partner,
            r#"{"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": true, "IsSyncAllowed": false}}}"#,
            "IsSyncAllowed",
        ),
        (
            BodyRule::Partner,
            r#"{"identitySynchronization": {"groupSyncInbound": {"isSyncAllowed": true}}}"#,
            "groupSyncInbound",
        ),
        (
            BodyRule::Partner,
            r#"{"blockServiceProviderOutboundAccess": true}"#,
            "blockServiceProviderOutboundAccess",
        ),
        (
            BodyRule::Partner,
            r#"{"invitationRedemptionIdentityProviderConfiguration": null}"#,
            "invitationRedemptionIdentityProviderConfiguration",
        ),
        (
            BodyRule::Partner,
            r#"{"identitySynchronization@odata.bind": "x"}"#,
            "identitySynchronization@odata.bind",
        ),
        (
            BodyRule::Partner,
            r#"{"identitySynchronization": {"@odata.id": "partners('x')/identitySynchronization"}}"#,
            "@odata.id",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": {"@odata.context": "x"}}"#,
            "@odata.context",
        ),
        (
            BodyRule::Template,
            r#"{"TemplateApplicationLevel": "none"}"#,
            "TemplateApplicationLevel",
        ),
        (
            BodyRule::Template,
            r#"{"groupSyncInbound": null}"#,
            "groupSyncInbound",
        ),
    ];
    for (rule, body, name) in cases {
        let r = refused(rule, ApiVersion::V1_0, body);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.code, codes::INVALID_PROPERTY, "{body}");
        assert_eq!(r.message, format!("Invalid property '{name}'."), "{body}");
    }
}

#[test]
fn wrong_json_types_are_bad_requests_naming_the_property() {
    let cases = [
        (
            BodyRule::Sync,
            r#"{"displayName": 1}"#,
            "'displayName' must be a string or null, not a number",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": true}"#,
            "'userSyncInbound' must be an object or null, not a boolean",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": [{"isSyncAllowed": true}]}"#,
            "'userSyncInbound' must be an object or null, not an array",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": {"isSyncAllowed": "true"}}"#,
            "'userSyncInbound.isSyncAllowed' must be a boolean or null, not a string",
        ),
        (
            BodyRule::Sync,
            r#"{"userSyncInbound": {"isSyncAllowed": 1}}"#,
            "'userSyncInbound.isSyncAllowed' must be a boolean or null, not a number",
        ),
        (
            BodyRule::Sync,
            r#"{"tenantId": null}"#,
            "'tenantId' cannot be null",
        ),
        (
            BodyRule::Sync,
            r#"{"tenantId": 5}"#,
            "'tenantId' must be a string or null, not a number",
        ),
        (
            BodyRule::Sync,
            r#"{"@odata.type": 5}"#,
            "annotation '@odata.type' must be a string",
        ),
        (
            BodyRule::Partner,
            r#"{"b2bCollaborationInbound": []}"#,
            "'b2bCollaborationInbound' must be an object or null, not an array",
        ),
        (
            BodyRule::Partner,
            r#"{"isServiceProvider": "yes"}"#,
            "'isServiceProvider' must be a boolean or null, not a string",
        ),
        (
            BodyRule::Partner,
            r#"{"identitySynchronization": {"userSyncInbound": {"isSyncAllowed": 0}}}"#,
            "'identitySynchronization.userSyncInbound.isSyncAllowed' must be a boolean",
        ),
        (
            BodyRule::Template,
            r#"{"templateApplicationLevel": null}"#,
            "'templateApplicationLevel' cannot be null",
        ),
        (
            BodyRule::Template,
            r#"{"templateApplicationLevel": 3}"#,
            "must be a string of comma-separated flags, not a number",
        ),
        (
            BodyRule::Template,
            r#"{"templateApplicationLevel": "NewPartners"}"#,
            "'NewPartners' is not one of",
        ),
        (
            BodyRule::Template,
            r#"{"templateApplicationLevel": ""}"#,
            "'' is not one of",
        ),
        (
            BodyRule::Template,
            r#"{"templateApplicationLevel": "newPartners,,existingPartners"}"#,
            "'' is not one of",
        ),
        (
            BodyRule::Template,
            r#"{"id": 1}"#,
            "'id' must be a string or null, not a number",
        ),
    ];
    for (rule, body, expected) in cases {
        let r = refused(rule, ApiVersion::V1_0, body);
        assert_eq!(r.code, codes::BAD_REQUEST, "{body}");
        assert!(r.message.contains(expected), "{body}: {}", r.message);
    }
    let r = refused(
        BodyRule::Sync,
        ApiVersion::Beta,
        r#"{"deletedDateTime": "2025-06-18T23:14:25Z"}"#,
    );
    assert!(
        r.message
            .contains("'deletedDateTime' must be null (it is read-only)"),
        "{}",
        r.message
    );
    let r = refused(
        BodyRule::Sync,
        ApiVersion::Beta,
        r#"{"groupSyncInbound": {"isSyncAllowed": null}}"#,
    );
    assert!(
        r.message
            .contains("'groupSyncInbound.isSyncAllowed' cannot be null"),
        "{}",
        r.message
    );
}

#[test]
fn malformed_json_is_refused_with_a_precise_reason() {
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"userSyncInbound": {"isSyncAllowed": true}, "userSyncInbound": null}"#,
            "duplicate member 'userSyncInbound' in the object at $",
        ),
        (
            br#"{"userSyncInbound": {"isSyncAllowed": true, "isSyncAllowed": false}}"#,
            "duplicate member 'isSyncAllowed' in the object at $.userSyncInbound",
        ),
        (
            br#"{"userSyncInbound": null, "userSync\u0049nbound": {}}"#,
            "duplicate member 'userSyncInbound'",
        ),
        (
            br#"{"b2bCollaborationInbound": {"a": [{"x": 1, "x": 2}]}}"#,
            "duplicate member 'x' in the object at $.b2bCollaborationInbound.a[0]",
        ),
        (
            br#"{"displayName": "x"} {"displayName": "y"}"#,
            "unexpected data after the JSON value, starting at line 1 column 22",
        ),
        (
            b"{\"displayName\": \"x\"}\n  x",
            "unexpected data after the JSON value, starting at line 2 column 3",
        ),
        (
            br#"{"displayName": "x"} // a comment"#,
            "unexpected data after the JSON value",
        ),
        (br#"{/* c */ "displayName": "x"}"#, "invalid JSON"),
        (br#"{"displayName": "x",}"#, "invalid JSON"),
        (br#"{'displayName': 'x'}"#, "invalid JSON"),
        (br#"{"displayName": NaN}"#, "invalid JSON"),
        (br#"{"displayName": "\ud800"}"#, "invalid JSON"),
        (br#"{"displayName": 1e400}"#, "invalid JSON"),
        (br#"{"displayName": "x""#, "invalid JSON"),
        (
            b"{\"displayName\": \"\xff\"}",
            "not valid UTF-8 (invalid byte at offset 17)",
        ),
        (b"\xef\xbb\xbf{}", "byte-order mark"),
        (b"[]", "must be a JSON object, not an array"),
        (b"\"{}\"", "must be a JSON object, not a string"),
        (b"null", "must be a JSON object, not null"),
        (b"", "the body is empty"),
        (b"  \r\n", "the body is empty"),
    ];
    for (body, expected) in cases {
        let r = parse_body(BodyRule::Sync, ApiVersion::V1_0, JSON, body).expect_err("refused");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.code,
            codes::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(
            r.message.contains(expected),
            "{}: {}",
            String::from_utf8_lossy(body),
            r.message
        );
    }
}

#[test]
fn deeply_nested_bodies_are_refused_rather_than_overflowing() {
    let deep = format!(
        "{{\"b2bCollaborationInbound\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = parse_body(BodyRule::Partner, ApiVersion::V1_0, JSON, deep.as_bytes())
        .expect_err("refused");
    assert_eq!(r.code, codes::BAD_REQUEST);
}

#[test]
fn the_content_type_must_be_json_in_utf8() {
    let body = br#"{"userSyncInbound": {"isSyncAllowed": true}}"#;
    for ok in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=\"UTF-8\"",
        "application/json; odata.metadata=minimal; charset=utf8",
    ] {
        assert!(
            parse_body(BodyRule::Sync, ApiVersion::V1_0, Some(ok), body).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        None,
        Some("text/plain"),
        Some("application/jsonx"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/mixed; boundary=x"),
        Some("application/json; charset=utf-16"),
        Some("application/json; charset=iso-8859-1"),
        Some(""),
    ] {
        let r = parse_body(BodyRule::Sync, ApiVersion::V1_0, bad, body).expect_err("refused");
        assert_eq!(r.code, codes::BAD_REQUEST, "{bad:?}");
        assert!(
            r.message
                .starts_with("Unable to read JSON request payload."),
            "{}",
            r.message
        );
    }
}

#[test]
fn requests_that_take_no_body_accept_only_whitespace() {
    for ok in [&b""[..], b" ", b"\r\n\t "] {
        assert_eq!(
            parse_body(BodyRule::Empty, ApiVersion::Beta, None, ok),
            Ok(None)
        );
    }
    for bad in [&b"{}"[..], b"null", b"x", b"\x00", b"\xc2\xa0"] {
        let r = parse_body(BodyRule::Empty, ApiVersion::Beta, JSON, bad).expect_err("refused");
        assert_eq!(r.code, codes::UNEXPECTED_BODY);
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
    }
}

#[test]
fn partner_bodies_from_the_docs_and_a_get_round_trip_pass() {
    let bodies = [
        json!({"tenantId": K}),
        json!({"inboundTrust": null, "automaticUserConsentSettings": {"inboundAllowed": true}}),
        json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#policies/crossTenantAccessPolicy/partners/$entity",
            "tenantId": K,
            "isServiceProvider": null,
            "inboundTrust": null,
            "b2bCollaborationOutbound": null,
            "b2bCollaborationInbound": {"usersAndGroups": {"accessType": "allowed", "targets": [{"target": "AllUsers", "targetType": "user"}]}},
            "b2bDirectConnectOutbound": null,
            "b2bDirectConnectInbound": null,
            "tenantRestrictions": null,
            "crossCloudMeetingConfiguration": {"inboundAllowed": null, "outboundAllowed": null},
            "automaticUserConsentSettings": {"inboundAllowed": null, "outboundAllowed": null},
            "protectedContentSharing": {"x": 1},
            "isInMultiTenantOrganization": false,
            "m365CollaborationInbound": null,
            "m365CollaborationOutbound": {},
            "appServiceConnectInbound": null,
            "displayName": "Fabrikam",
            "identitySynchronization": {"tenantId": K, "displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}
        }),
    ];
    for body in bodies {
        let text = body.to_string();
        for version in [ApiVersion::V1_0, ApiVersion::Beta] {
            assert_eq!(
                parse(BodyRule::Partner, version, &text),
                Ok(Some(body.clone())),
                "{text}"
            );
        }
    }
    let beta = r#"{"blockServiceProviderOutboundAccess": true, "deletedDateTime": null, "identitySynchronization": {"groupSyncInbound": {"isSyncAllowed": false}}}"#;
    assert!(parse(BodyRule::Partner, ApiVersion::Beta, beta).is_ok());
}

#[test]
fn template_bodies_take_flags_of_documented_members() {
    for body in [
        r#"{"templateApplicationLevel": "newPartners,existingPartners", "userSyncInbound": {"isSyncAllowed": true}}"#,
        r#"{"templateApplicationLevel": "newPartners, existingPartners"}"#,
        r#"{"templateApplicationLevel": "none"}"#,
        r#"{"id": "x", "userSyncInbound": null}"#,
    ] {
        assert!(
            parse(BodyRule::Template, ApiVersion::V1_0, body).is_ok(),
            "{body}"
        );
    }
}

#[test]
fn a_partner_create_takes_its_key_from_the_body() {
    assert_eq!(
        partner_from_body(&json!({"tenantId": K.to_uppercase()})),
        Ok(tenant(K))
    );
    for (body, expected) in [
        (json!({}), "requires its tenantId"),
        (json!({"tenantId": null}), "must be a string, not null"),
        (json!({"tenantId": 1}), "must be a string, not a number"),
        (
            json!({"tenantId": "contoso.com"}),
            "'contoso.com' is not a GUID",
        ),
    ] {
        let r = partner_from_body(&body).expect_err("refused");
        assert_eq!(r.code, codes::BAD_REQUEST);
        assert!(r.message.contains(expected), "{body}: {}", r.message);
    }
}

#[test]
fn a_body_tenant_id_must_name_the_partner_the_url_names() {
    let partner = tenant(K);
    for ok in [
        json!({}),
        json!({"tenantId": K}),
        json!({"tenantId": K.to_uppercase()}),
        json!({"tenantId": K, "identitySynchronization": {"tenantId": K}}),
        json!({"identitySynchronization": {"userSyncInbound": null}}),
        json!({"identitySynchronization": null}),
    ] {
        assert_eq!(check_body_tenant(&ok, &partner), Ok(()), "{ok}");
    }
    let other = "00000000-0000-0000-0000-000000000001";
    for (bad, name) in [
        (json!({"tenantId": other}), "tenantId"),
        (json!({"tenantId": "contoso.com"}), "tenantId"),
        (json!({"tenantId": 1}), "tenantId"),
        (
            json!({"tenantId": K, "identitySynchronization": {"tenantId": other}}),
            "identitySynchronization.tenantId",
        ),
    ] {
        let r = check_body_tenant(&bad, &partner).expect_err("refused");
        assert_eq!(r.code, codes::BAD_REQUEST);
        assert!(
            r.message.contains(&format!("body's {name} (")),
            "{}",
            r.message
        );
    }
}

#[test]
fn an_already_parsed_body_is_checked_by_the_same_rules() {
    let sync = json!({"userSyncInbound": {"isSyncAllowed": true}});
    assert_eq!(
        check_body(BodyRule::Sync, ApiVersion::V1_0, JSON, Some(&sync)),
        Ok(Some(sync.clone()))
    );
    assert_eq!(
        check_body(BodyRule::Empty, ApiVersion::V1_0, None, None),
        Ok(None)
    );
    assert_eq!(
        check_body(BodyRule::Empty, ApiVersion::V1_0, None, Some(&Value::Null)),
        Ok(None)
    );
    let r =
        check_body(BodyRule::Empty, ApiVersion::V1_0, JSON, Some(&json!({}))).expect_err("refused");
    assert_eq!(r.code, codes::UNEXPECTED_BODY);
    let r = check_body(BodyRule::Sync, ApiVersion::V1_0, JSON, None).expect_err("refused");
    assert!(r.message.contains("the body is empty"));
    let r = check_body(
        BodyRule::Sync,
        ApiVersion::V1_0,
        Some("text/plain"),
        Some(&sync),
    )
    .expect_err("refused");
    assert!(r.message.contains("not application/json"));
    let r = check_body(
        BodyRule::Sync,
        ApiVersion::V1_0,
        JSON,
        Some(&json!({"groupSyncInbound": null})),
    )
    .expect_err("refused");
    assert_eq!(r.code, codes::INVALID_PROPERTY);
}

/// The column serde_json reports in an error: how far the parse got before it stopped.
fn error_column(message: &str) -> usize {
    let (_, column) = message.rsplit_once("column ").expect("a column");
    column.trim().parse().expect("a number")
}

#[test]
fn a_huge_flat_array_is_refused_once_it_passes_the_value_limit_without_reading_on() {
    let mut flat = String::with_capacity(20 * 1024 * 1024);
    flat.push('[');
    while flat.len() < 20 * 1024 * 1024 {
        flat.push_str("0,");
    }
    flat.push_str("0]");
    let roomy = JsonLimits {
        max_bytes: 32 * 1024 * 1024,
        ..JsonLimits::DEFAULT
    };
    let started = std::time::Instant::now();
    let StrictError::Invalid(message) =
        parse_strict_within(flat.as_bytes(), roomy).expect_err("refused")
    else {
        panic!("refused for its values, not its size");
    };
    assert!(
        message.contains("the JSON has more than 10000 values (at $[9999])"),
        "{message}"
    );
    // The refused value (the array's 10,000th element) begins at column 20,000: the parse
    // stopped there, 20 MiB short of the end.
    assert!(error_column(&message) < 20_010, "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // Under the default limits the same bytes are refused for their size, unread.
    assert_eq!(
        parse_strict(flat.as_bytes()),
        Err(StrictError::TooLarge {
            size: flat.len(),
            max: MAX_JSON_BYTES
        })
    );
}

#[test]
fn deep_nesting_is_refused_at_the_depth_limit_without_reading_on() {
    let deep = "[".repeat(20 * 1024 * 1024);
    let roomy = JsonLimits {
        max_bytes: 32 * 1024 * 1024,
        ..JsonLimits::DEFAULT
    };
    let StrictError::Invalid(message) =
        parse_strict_within(deep.as_bytes(), roomy).expect_err("refused")
    else {
        panic!("refused for its depth, not its size");
    };
    assert!(
        message.contains("the JSON nests deeper than 32 levels (at $[0]"),
        "{message}"
    );
    assert_eq!(error_column(&message), 33, "{message}");

    let objects = format!("{}{}", r#"{"a":"#.repeat(40), "}".repeat(40));
    let StrictError::Invalid(message) = parse_strict(objects.as_bytes()).expect_err("refused")
    else {
        panic!("refused for its depth");
    };
    assert!(
        message.contains("nests deeper than 32 levels (at $.a.a."),
        "{message}"
    );
}

#[test]
fn documents_exactly_at_the_limits_are_read() {
    let deepest = format!("{}{}", "[".repeat(32), "]".repeat(32));
    assert!(parse_strict(deepest.as_bytes()).is_ok());
    let deeper = format!("{}{}", "[".repeat(33), "]".repeat(33));
    assert!(parse_strict(deeper.as_bytes()).is_err());

    // The array itself is one value: 9,999 elements make 10,000.
    let fullest = format!("[{}0]", "0,".repeat(9_998));
    assert!(parse_strict(fullest.as_bytes()).is_ok());
    let fuller = format!("[{}0]", "0,".repeat(9_999));
    assert!(parse_strict(fuller.as_bytes()).is_err());

    // Members count by their values; names cost nothing extra but their bytes.
    let members: Vec<String> = (0..4_999).map(|i| format!("\"k{i}\":[]")).collect();
    let object = format!("{{{}}}", members.join(","));
    assert!(parse_strict(object.as_bytes()).is_ok());
}

#[test]
fn a_governed_body_over_the_value_limit_is_a_400_naming_the_limit() {
    let body = format!(
        r#"{{"b2bCollaborationInbound": {{"x": [{}0]}}}}"#,
        "0,".repeat(20_000)
    );
    let r = parse_body(BodyRule::Partner, ApiVersion::V1_0, JSON, body.as_bytes())
        .expect_err("refused");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code, codes::BAD_REQUEST);
    assert!(
        r.message
            .contains("more than 10000 values (at $.b2bCollaborationInbound.x[9997])"),
        "{}",
        r.message
    );
    assert!(!r.message.contains("invalid JSON"), "{}", r.message);
}

#[test]
fn a_governed_body_over_the_byte_ceiling_is_a_413() {
    let body = format!(r#"{{"displayName": "{}"}}"#, "x".repeat(MAX_JSON_BYTES));
    let r =
        parse_body(BodyRule::Sync, ApiVersion::V1_0, JSON, body.as_bytes()).expect_err("refused");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code, "SyncgateBodyTooLarge");
}
