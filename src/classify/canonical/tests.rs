use super::*;

fn segs(path: &str) -> Vec<String> {
    split(path).expect("canonical split")
}

#[test]
fn split_decodes_each_segment_once_and_drops_one_trailing_slash() {
    assert_eq!(segs("/v1.0/pol%69cies/"), ["v1.0", "policies"]);
    assert_eq!(segs("/"), Vec::<String>::new());
    assert_eq!(segs("/%24batch"), ["$batch"]);
}

#[test]
fn split_reports_every_kind_of_trick_with_its_segment_number() {
    let cases = [
        ("/v1.0//policies", Trick::EmptySegment(2)),
        ("/v1.0/policies//", Trick::EmptySegment(3)),
        ("/v1.0/./policies", Trick::DotSegment(2)),
        ("/v1.0/%2e%2E/policies", Trick::DotSegment(2)),
        ("/v1.0/a%2Fb", Trick::EncodedSlash(2)),
        ("/v1.0/a%5cb", Trick::EncodedSlash(2)),
        ("/v1.0/a\\b", Trick::EncodedSlash(2)),
        ("/v1.0/%2570olicies", Trick::DoubleEncoded(2)),
        ("/v1.0/%ff", Trick::InvalidUtf8(2)),
        ("/v1.0/%u0070olicies", Trick::UnicodeEscape(2)),
        ("/v1.0/%25U0070olicies", Trick::UnicodeEscape(2)),
    ];
    for (path, trick) in cases {
        assert_eq!(split(path), Err(trick), "{path}");
    }
}

#[test]
fn a_lone_percent_sign_is_not_double_encoding() {
    assert_eq!(segs("/v1.0/100%25"), ["v1.0", "100%"]);
    assert_eq!(segs("/v1.0/%25zz"), ["v1.0", "%zz"]);
}

#[test]
fn reach_sees_policies_and_batch_through_any_encoding() {
    let governed = [
        "/v1.0/policies/crossTenantAccessPolicy",
        "/BETA/POLICIES/deletedItems",
        "/v1.0/policies",
        "/v1.0/%2570olicies/crossTenantAccessPolicy",
        "/v1.0/policies/x/../crossTenantAccessPolicy",
        "/v1.0/policies/crossTenantAccessPolicy/../authorizationPolicy",
        "/x/../v1.0/policies/crosstenantaccesspolicy",
        "//v1.0//policies//crossTenantAccessPolicy",
        "/v1.0/pol%C4%B1cies/crossTenantAccessPolicy",
        "/v1.0/policies/microsoft.graph.policyRoot/crossTenantAccessPolicy",
        "/v1.0/policies/microsoft.graph.policyRoot",
        "/v1.0/policies./crossTenantAccessPolicy;x=1",
        "/v1.0/%20policies%20/crossTenantAccessPolicy()",
        "/v1.0\\policies\\crossTenantAccessPolicy",
        "/v1.0/policies/graph.crossTenantIdentitySyncPolicy",
        "/v1.0/%u0070olicies/crossTenantAccessPolicy",
        "/v1.0/users/%C0%AE%C0%AE/policies/crossTenantAccessPolicy",
        "/v1.0/users/%E0%80%AE./policies/crossTenantAccessPolicy",
        "/v1.0/policies%C0%AFcrossTenantAccessPolicy",
        "/v1.0/policies%FFcrossTenantAccessPolicy",
    ];
    for path in governed {
        let r = reach(path, false);
        assert!(r.governed && r.policies, "{path}: {r:?}");
    }
    let forwarded = [
        "/v1.0/users",
        "/v1.0/policies/authorizationPolicy",
        "/v1.0/me/drive/root:/policies/crossTenant.txt:/content",
        "/policies/crossTenantAccessPolicy",
        "/v2.0/policies/crossTenantAccessPolicy",
        "/v1.0/users/v1.0/policies/crossTenantAccessPolicy",
    ];
    for path in forwarded {
        assert!(!reach(path, false).governed, "{path}");
    }
    assert!(reach("/v1.0/users/v1.0/policies/crossTenantAccessPolicy", true).governed);
    // A segment that is only a key or parameters vanishes for a lenient reader.
    for path in [
        "/v1.0/('9c5d131d-b1c3-4fc4-9e3f-c6557947d551')/policies/crossTenantAccessPolicy",
        "/v1.0/;x=1/policies/crossTenantAccessPolicy",
        "/v1.0/()/$batch",
    ] {
        let r = reach(path, false);
        assert!(r.governed || r.batch, "{path}: {r:?}");
    }
    assert!(reach("/v1.0/%2524batch", false).batch);
    assert!(reach("/v1.0/$BATCH", false).batch);
    assert!(!reach("/v1.0/users/$batch", false).batch);
}

#[test]
fn canonical_form_lower_cases_names_and_keys_and_strips_the_namespace() {
    let path = canonicalize(
        &segs("/V1.0/Policies/CrossTenantAccessPolicy/Partners/9C5D131D-B1C3-4FC4-9E3F-C6557947D551/microsoft.graph.IdentitySynchronization"),
        None,
    )
    .unwrap();
    assert_eq!(
        path.to_string(),
        "/v1.0/policies/crosstenantaccesspolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitysynchronization"
    );
}

#[test]
fn every_key_form_becomes_its_own_segment() {
    let k = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
    let up = k.to_ascii_uppercase();
    let cases = [
        (
            format!("/beta/policies/deletedItems/crossTenantPartners('{up}')"),
            None,
        ),
        (
            format!("/beta/policies/deletedItems/crossTenantPartners({k})"),
            None,
        ),
        (
            format!("/beta/policies/deletedItems/crossTenantPartners(tenantId='{k}')"),
            None,
        ),
        (
            format!("/beta/policies/deletedItems/crossTenantPartners(TENANTID = '{k}')"),
            None,
        ),
        (
            "/beta/policies/deletedItems/crossTenantPartners(@a)".to_owned(),
            Some(format!("@a='{k}'")),
        ),
        (
            "/beta/policies/deletedItems/crossTenantPartners(tenantId=@p)".to_owned(),
            Some(format!("x=1&@p={up}")),
        ),
        (
            format!("/beta/policies/deletedItems/crossTenantPartners/{up}"),
            None,
        ),
    ];
    for (path, query) in cases {
        let canonical = canonicalize(&segs(&path), query.as_deref()).unwrap();
        assert_eq!(
            canonical.to_string(),
            format!("/beta/policies/deleteditems/crosstenantpartners/{k}"),
            "{path}"
        );
    }
}

#[test]
fn malformed_or_missing_keys_are_bad_keys() {
    let bad = [
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners/contoso.com",
            None,
        ),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners/{9c5d131d-b1c3-4fc4-9e3f-c6557947d551}",
            None,
        ),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners/9c5d131db1c34fc49e3fc6557947d551",
            None,
        ),
        ("/v1.0/policies/crossTenantAccessPolicy/partners('x')", None),
        ("/v1.0/policies/crossTenantAccessPolicy/partners()", None),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners(id='9c5d131d-b1c3-4fc4-9e3f-c6557947d551')",
            None,
        ),
        ("/v1.0/policies/crossTenantAccessPolicy/partners(@a)", None),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
            Some("@b='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'"),
        ),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
            Some(
                "@a='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'&@a='00000000-0000-0000-0000-000000000000'",
            ),
        ),
        (
            "/v1.0/policies/crossTenantAccessPolicy/partners(@a)",
            Some(
                "@A='00000000-0000-0000-0000-000000000000'&@a='9c5d131d-b1c3-4fc4-9e3f-c6557947d551'",
            ),
        ),
    ];
    for (path, query) in bad {
        assert!(
            matches!(canonicalize(&segs(path), query), Err(CanonError::BadKey(_))),
            "{path}"
        );
    }
}

#[test]
fn system_segments_and_operations_at_the_key_position_are_not_keys() {
    let path = canonicalize(
        &segs("/v1.0/policies/crossTenantAccessPolicy/partners/$count"),
        None,
    )
    .unwrap();
    assert_eq!(path.segments.last().unwrap(), "$count");
    let path = canonicalize(
        &segs("/v1.0/policies/crossTenantAccessPolicy/partners/microsoft.graph.delta()"),
        None,
    );
    assert!(matches!(path, Err(CanonError::NotCanonical(_))));
}

#[test]
fn expand_is_recognised_with_or_without_dollar_and_in_any_case() {
    assert!(expands_sync(Some("$expand=identitySynchronization")));
    assert!(expands_sync(Some(
        "expand=IdentitySynchronization&$select=tenantId"
    )));
    assert!(expands_sync(Some("%24expand=%2A")));
    assert!(!expands_sync(Some("$select=identitySynchronization")));
    assert!(!expands_sync(None));
}
