//! Unit tests pinning what each oracle flags.

use http::{HeaderMap, Method};

use super::body::check_json_agrees;
use super::loose::{Version, WriteTarget, write_target};
use super::*;
use crate::classify::{self, ApiVersion, Classification, OperationKind};

const K: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

fn governed(method: &str, url: &str, version: Version) -> bool {
    matches!(
        write_target(method, url, version),
        Some(WriteTarget::Governed(_))
    )
}

#[test]
fn the_loose_reading_sees_governed_writes_through_the_issues_tricks() {
    let required = [
        format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        "/v1.0/policies/cross\ttenantAccessPolicy/partners/x".to_owned(),
        "/v1.0/poli\r\ncies/crossTenantAccessPolicy".to_owned(),
        "/V1.0./%2570olicies/crossTenantAccessPolicy(x)/partners".to_owned(),
        "/x/../v1.0/policies/microsoft.graph.policyRoot/deletedItems".to_owned(),
        "//host/v1.0/policies/crossTenantIdentitySyncPolicy".to_owned(),
        "/v1.0/%u0070olicies/crossTenantAccessPolicy%20/partners".to_owned(),
        format!("/beta/policies/crossTenantAccessPolicy/partners/{K}/m365Capabilities"),
    ];
    for url in &required {
        assert!(governed("PATCH", url, Version::Required), "{url}");
    }
    let optional = [
        "x:/v1.0/policies/crossTenantAccessPolicy/partners/x",
        "https:v1.0/policies/crossTenantAccessPolicy/partners/x",
        "https:/v1.0/policies/crossTenantAccessPolicy/partners/x",
        " /policies/crossTenantAccessPolicy/partners/x",
        "policies/crossTenantAccessPolicy/partners/x",
        "v1.0/beta/policies/deletedItems/crossTenantPartners/x/restore",
    ];
    for url in optional {
        assert!(governed("POST", url, Version::Optional), "{url}");
    }
}

#[test]
fn the_loose_reading_leaves_ordinary_and_deliberately_forwarded_requests_alone() {
    let cases = [
        ("PATCH", "/v1.0/users/x"),
        ("PATCH", "/v1.0/policies/authorizationPolicy"),
        ("PATCH", "/v1.0/policies/crossTenantAccessPolicy/default"),
        ("PATCH", "/v1.0/users/v1.0/policies/crossTenantAccessPolicy"),
        ("PATCH", "/policies/crossTenantAccessPolicy"),
        ("GET", "/v1.0/policies/crossTenantAccessPolicy/partners"),
        ("HEAD", "/v1.0/$batch"),
    ];
    for (method, url) in cases {
        assert_eq!(
            write_target(method, url, Version::Required),
            None,
            "{method} {url}"
        );
    }
}

#[test]
fn methods_other_than_exact_get_and_head_count_as_writes() {
    let url = "/v1.0/$batch";
    for method in ["post", "GET ", " GET", "GET\u{a0}", "get", "HEAD\t"] {
        assert_eq!(
            write_target(method, url, Version::Required),
            Some(WriteTarget::Batch),
            "{method:?}"
        );
    }
}

#[test]
fn the_emulator_reading_names_operation_partner_and_version() {
    let up = K.to_ascii_uppercase();
    let expected = emulated(
        &Method::PATCH,
        &format!("/BETA/policies/crossTenantAccessPolicy/partners('{up}')/identitySynchronization"),
    );
    assert_eq!(
        expected,
        Some(Emulated::Write(
            OperationKind::SyncUpdate,
            Some(K.to_owned()),
            ApiVersion::Beta
        ))
    );
    let below = emulated(
        &Method::PATCH,
        &format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/m365Capabilities"),
    );
    assert_eq!(
        below,
        Some(Emulated::BelowPartner(K.to_owned(), ApiVersion::V1_0))
    );
    assert_eq!(
        emulated(&Method::POST, "/v1.0/$batch"),
        Some(Emulated::Batch(ApiVersion::V1_0))
    );
    // The emulator's methods are case-sensitive, and reads change nothing.
    let partner = format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}");
    assert_eq!(
        emulated(&Method::from_bytes(b"patch").unwrap(), &partner),
        None
    );
    assert_eq!(emulated(&Method::GET, &partner), None);
}

#[test]
fn compare_flags_forwarded_and_misattributed_writes_and_accepts_refusals() {
    let write = Emulated::Write(
        OperationKind::SyncUpdate,
        Some(K.to_owned()),
        ApiVersion::V1_0,
    );
    assert_eq!(
        compare(Some(&write), &Classification::Forward),
        Err("differential-write-forwarded")
    );
    let refusal = classify::Refusal::bad_request("x", "y");
    assert_eq!(
        compare(Some(&write), &Classification::Refuse(refusal)),
        Ok(())
    );
    let other = "00000000-0000-0000-0000-000000000000";
    let verdict = classify::classify(
        &Method::PATCH,
        &format!("/v1.0/policies/crossTenantAccessPolicy/partners/{other}/identitySynchronization"),
        None,
        &HeaderMap::new(),
    );
    assert!(matches!(verdict, Classification::Governed(_)));
    assert_eq!(
        compare(Some(&write), &verdict),
        Err("differential-mismatch")
    );
    let below = Emulated::BelowPartner(K.to_owned(), ApiVersion::V1_0);
    assert_eq!(
        compare(Some(&below), &Classification::Forward),
        Err("partner-subnav-forwarded")
    );
    assert_eq!(compare(None, &Classification::Forward), Ok(()));
}

#[test]
fn the_body_oracle_refuses_duplicates_and_agrees_on_values() {
    let value = serde_json::json!({"a": 1});
    assert!(check_json_agrees(br#"{"a":1}"#, &value).is_ok());
    assert!(check_json_agrees(br#"{"a":1,"a":1}"#, &value).is_err());
    assert!(
        check_json_agrees(
            br#"{"a":{"b":1,"\u0062":1}}"#,
            &serde_json::json!({"a":{"b":1}})
        )
        .is_err()
    );
    assert!(check_json_agrees(br#"{"a":2}"#, &value).is_err());
    assert!(check_json_agrees(b"{\"a\":1} x", &value).is_err());
}

#[test]
fn valid_examples_pass_every_target() {
    let sync = format!(
        "PATCH\0/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
    );
    assert_eq!(check_canonicaliser(sync.as_bytes()), Ok(()));
    assert_eq!(check_differential(sync.as_bytes()), Ok(()));
    assert_eq!(
        check_body_reader(br#"1{"userSyncInbound":{"isSyncAllowed":true}}"#),
        Ok(())
    );
    let batch = format!(
        r#"0{{"requests":[{{"id":"1","method":"PATCH","url":"/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization","headers":{{"Content-Type":"application/json"}},"body":{{"userSyncInbound":{{"isSyncAllowed":false}}}}}}]}}"#
    );
    assert_eq!(check_batch_parser(batch.as_bytes()), Ok(()));
}
