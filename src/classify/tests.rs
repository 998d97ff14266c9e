//! Tables of requests and what `classify` must make of them: governed routes, their aliases,
//! encoding tricks, bad keys, method overrides, reads, unknown writes, the legacy path, `$batch`,
//! and ordinary traffic that must pass untouched.

use http::{HeaderName, HeaderValue};

use super::*;

pub(super) const K: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
pub(super) const KU: &str = "9C5D131D-B1C3-4FC4-9E3F-C6557947D551";

/// A row of [`GOVERNED_ROUTES`].
pub(super) type Route = (
    &'static str,
    &'static str,
    OperationKind,
    bool,
    BodyRule,
    &'static [&'static str],
);

/// Every governed write of the route table, in its documented spelling (`{v}` = version,
/// `{k}` = partner key): method, path, kind, whether the path names the partner, body rule,
/// and the versions it exists in.
pub(super) const GOVERNED_ROUTES: &[Route] = &[
    (
        "PUT",
        "/{v}/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
        OperationKind::SyncCreate,
        true,
        BodyRule::Sync,
        BOTH,
    ),
    (
        "PATCH",
        "/{v}/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
        OperationKind::SyncUpdate,
        true,
        BodyRule::Sync,
        BOTH,
    ),
    (
        "DELETE",
        "/{v}/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
        OperationKind::SyncDelete,
        true,
        BodyRule::Empty,
        BOTH,
    ),
    (
        "POST",
        "/{v}/policies/crossTenantAccessPolicy/partners",
        OperationKind::PartnerCreate,
        false,
        BodyRule::Partner,
        BOTH,
    ),
    (
        "PATCH",
        "/{v}/policies/crossTenantAccessPolicy/partners/{k}",
        OperationKind::PartnerUpdate,
        true,
        BodyRule::Partner,
        BOTH,
    ),
    (
        "DELETE",
        "/{v}/policies/crossTenantAccessPolicy/partners/{k}",
        OperationKind::PartnerDelete,
        true,
        BodyRule::Empty,
        BOTH,
    ),
    (
        "PATCH",
        "/{v}/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
        OperationKind::TemplateUpdate,
        false,
        BodyRule::Template,
        BOTH,
    ),
    (
        "POST",
        "/{v}/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings",
        OperationKind::TemplateReset,
        false,
        BodyRule::Empty,
        BOTH,
    ),
    (
        "POST",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}/restore",
        OperationKind::PartnerRestore,
        true,
        BodyRule::Empty,
        BETA,
    ),
    (
        "POST",
        "/{v}/policies/deletedItems/crossTenantSyncPolicyPartners/{k}/restore",
        OperationKind::SyncRestore,
        true,
        BodyRule::Empty,
        BETA,
    ),
    (
        "PUT",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization",
        OperationKind::DeletedPartnerSyncWrite,
        true,
        BodyRule::Sync,
        BETA,
    ),
    (
        "PATCH",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization",
        OperationKind::DeletedPartnerSyncWrite,
        true,
        BodyRule::Sync,
        BETA,
    ),
    (
        "DELETE",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization",
        OperationKind::DeletedPartnerSyncWrite,
        true,
        BodyRule::Empty,
        BETA,
    ),
    (
        "POST",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization/restore",
        OperationKind::SyncRestore,
        true,
        BodyRule::Empty,
        BETA,
    ),
    (
        "DELETE",
        "/{v}/policies/deletedItems/crossTenantPartners/{k}",
        OperationKind::DeletedPartnerPurge,
        true,
        BodyRule::Empty,
        BETA,
    ),
    (
        "DELETE",
        "/{v}/policies/deletedItems/crossTenantSyncPolicyPartners/{k}",
        OperationKind::DeletedSyncPurge,
        true,
        BodyRule::Empty,
        BETA,
    ),
];

const BOTH: &[&str] = &["v1.0", "beta"];
const BETA: &[&str] = &["beta"];

pub(super) fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

/// Classify `target` (path, optionally `?query`) with no headers.
pub(super) fn run(method_name: &str, target: &str) -> Classification {
    run_with(method_name, target, &[])
}

fn run_with(method_name: &str, target: &str, headers: &[(&str, &str)]) -> Classification {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    classify(&method(method_name), path, query, &map)
}

pub(super) fn fill(template: &str, version: &str, key: &str) -> String {
    template.replace("{v}", version).replace("{k}", key)
}

fn governed(c: Classification, what: &str) -> Governed {
    match c {
        Classification::Governed(g) => g,
        other => panic!("{what}: expected Governed, got {other:?}"),
    }
}

fn sync_read(c: Classification, what: &str) -> Governed {
    match c {
        Classification::SyncRead(g) => g,
        other => panic!("{what}: expected SyncRead, got {other:?}"),
    }
}

fn refusal(c: Classification, what: &str) -> Refusal {
    match c {
        Classification::Refuse(r) => r,
        other => panic!("{what}: expected Refuse, got {other:?}"),
    }
}

/// The canonical spelling of a documented path.
fn canonical(path: &str) -> String {
    path.to_ascii_lowercase()
}

#[test]
fn every_governed_route_classifies_to_its_kind_partner_and_body_rule() {
    for (m, template, kind, has_partner, rule, versions) in GOVERNED_ROUTES {
        for version in *versions {
            let path = fill(template, version, K);
            let g = governed(run(m, &path), &path);
            assert_eq!(g.kind, *kind, "{m} {path}");
            assert_eq!(g.method, method(m), "{m} {path}");
            assert_eq!(g.path.to_string(), canonical(&path), "{m} {path}");
            assert_eq!(g.path.version.as_str(), *version);
            assert_eq!(g.partner.is_some(), *has_partner, "{m} {path}");
            if *has_partner {
                assert_eq!(g.partner.as_ref().map(TenantId::as_str), Some(K));
            }
            assert_eq!(g.body, *rule, "{m} {path}");
        }
    }
}

#[test]
fn documented_alias_spellings_classify_like_the_plain_path() {
    let sync = "/v1.0/policies/crosstenantaccesspolicy/partners/{K}/identitysynchronization";
    let restore = "/beta/policies/deleteditems/crosstenantpartners/{K}/restore";
    let cases: &[(&str, &str, &str)] = &[
        (
            "PUT",
            "/V1.0/Policies/CrossTenantAccessPolicy/Partners/{KU}/IdentitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/POLICIES/CROSSTENANTACCESSPOLICY/PARTNERS/{K}/IDENTITYSYNCHRONIZATION/",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners('{K}')/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners('{KU}')/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners({K})/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners(tenantId='{K}')/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/Partners(TenantId='{KU}')/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners(@a)/identitySynchronization?@a='{K}'",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners(tenantId=@t)/identitySynchronization?$select=x&@t={KU}",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners%28%27{K}%27%29/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/%70olicies/cross%54enantAccessPolicy/partners/{K}/identity%53ynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners/%39c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/%761.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization",
            sync,
        ),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners/{K}/microsoft.graph.identitySynchronization",
            sync,
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners/{K}/microsoft.graph.restore",
            restore,
        ),
        (
            "POST",
            "/BETA/policies/deletedItems/crossTenantPartners/{K}/Microsoft.Graph.Restore",
            restore,
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners/{K}/graph.restore",
            restore,
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners('{KU}')/restore/",
            restore,
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners(tenantId='{K}')/restore",
            restore,
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners(@p)/restore?@p='{K}'",
            restore,
        ),
    ];
    for (m, alias, plain) in cases {
        let alias = alias.replace("{K}", K).replace("{KU}", KU);
        let plain = plain.replace("{K}", K);
        let a = governed(run(m, &alias), &alias);
        let p = governed(run(m, &plain), &plain);
        assert_eq!(a, p, "{alias}");
    }
}

#[test]
fn sync_restore_through_either_deleted_collection_names_the_same_partner() {
    let a = governed(
        run(
            "POST",
            &format!(
                "/beta/policies/deletedItems/crossTenantSyncPolicyPartners('{KU}')/microsoft.graph.restore"
            ),
        ),
        "sync policy restore",
    );
    let b = governed(
        run(
            "POST",
            &format!(
                "/beta/policies/deletedItems/crossTenantPartners/{K}/identitySynchronization/restore"
            ),
        ),
        "deleted partner sync restore",
    );
    assert_eq!(a.kind, OperationKind::SyncRestore);
    assert_eq!(b.kind, OperationKind::SyncRestore);
    assert_eq!(a.partner, b.partner);
    assert_eq!(a.state_path(), b.state_path());
}

/// Ways to spell a path that a lenient stack may resolve into the same resource.
fn tricks(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let join = |parts: &[&str]| parts.join("/");
    let mut out = Vec::new();
    for i in 2..segments.len() {
        let (head, tail) = segments.split_at(i);
        out.push(join(&[join(head).as_str(), "", join(tail).as_str()])); // `//`
        out.push(join(&[join(head).as_str(), ".", join(tail).as_str()])); // `/./`
        out.push(join(&[join(head).as_str(), "%2e", join(tail).as_str()]));
        out.push(join(&[join(head).as_str(), "x", "..", join(tail).as_str()])); // `/x/../`
        out.push(join(&[
            join(head).as_str(),
            "x",
            "%2E%2E",
            join(tail).as_str(),
        ]));
        out.push(format!("{}%2F{}", join(head), join(tail))); // an encoded separator
        out.push(format!("{}%2f{}", join(head), join(tail)));
        out.push(format!("{}\\{}", join(head), join(tail))); // a backslash separator
        out.push(format!("{}%5C{}", join(head), join(tail)));
        // Double encoding of the first letter of segment i (`%2570` for `p`).
        let segment = segments[i];
        if let Some(first) = segment.chars().next() {
            let rest = &segment[first.len_utf8()..];
            let doubled = format!("%25{:02X}{rest}", first as u32);
            let mut parts = segments.clone();
            parts[i] = &doubled;
            out.push(join(&parts));
        }
    }
    out
}

#[test]
fn encoding_tricks_on_governed_routes_are_refused_whatever_the_method() {
    for (m, template, _, _, _, versions) in GOVERNED_ROUTES {
        for version in *versions {
            let path = fill(template, version, K);
            for trick in tricks(&path) {
                // A backslash, raw or encoded, is a character the URL reader refuses before
                // any segment is read.
                let code = if trick.contains('\\') || trick.contains("%5C") {
                    codes::NON_CANONICAL_URL
                } else {
                    codes::NON_CANONICAL_PATH
                };
                for m in [*m, "GET", "HEAD"] {
                    let r = refusal(run(m, &trick), &format!("{m} {trick}"));
                    assert_eq!(r.code, code, "{m} {trick}");
                    assert_eq!(r.status, StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}

#[test]
fn tricks_that_climb_out_of_another_path_into_a_governed_one_are_refused() {
    let sync = format!("policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    let cases = [
        format!("/v1.0/users/../{sync}"),
        format!(
            "/v1.0/policies/authorizationPolicy/../crossTenantAccessPolicy/partners/{K}/identitySynchronization"
        ),
        format!("/beta/../v1.0/{sync}"),
        format!("//v1.0/{sync}"),
        format!("/v1.0/me/..%2F..%2Fv1.0/{sync}"),
        format!("/v1.0/users%2F..%2F{sync}"),
        format!("/v1.0/%252E%252E/{sync}"),
    ];
    for path in cases {
        let r = refusal(run("PATCH", &path), &path);
        assert_eq!(r.code, codes::NON_CANONICAL_PATH, "{path}");
    }
}

#[test]
fn non_guid_keys_on_governed_subtrees_are_refused_for_reads_and_writes() {
    let keys = [
        "contoso.onmicrosoft.com",
        "{9c5d131d-b1c3-4fc4-9e3f-c6557947d551}",
        "9c5d131db1c34fc49e3fc6557947d551",
        "9c5d131d-b1c3-4fc4-9e3f-c6557947d55",
        "9c5d131d-b1c3-4fc4-9e3f-c6557947d551x",
        "9c5d131d_b1c3_4fc4_9e3f_c6557947d551",
        "9c5d131d-b1c3-4fc4-9e3f-c6557947d55g",
    ];
    for key in keys {
        for path in [
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{key}/identitySynchronization"
            ),
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners('{key}')/identitySynchronization"
            ),
            format!("/v1.0/policies/crossTenantAccessPolicy/partners(tenantId='{key}')"),
            format!("/beta/policies/deletedItems/crossTenantPartners/{key}/restore"),
            format!("/beta/policies/deletedItems/crossTenantSyncPolicyPartners('{key}')"),
        ] {
            let path = path.replace('{', "%7B").replace('}', "%7D");
            for m in ["PUT", "PATCH", "DELETE", "POST", "GET"] {
                let r = refusal(run(m, &path), &format!("{m} {path}"));
                assert_eq!(r.code, codes::INVALID_KEY, "{m} {path}");
            }
        }
    }
    let undefined_alias =
        "/v1.0/policies/crossTenantAccessPolicy/partners(@a)/identitySynchronization";
    assert_eq!(
        refusal(run("PUT", undefined_alias), "alias").code,
        codes::INVALID_KEY
    );
}

#[test]
fn method_overrides_are_refused_on_policies_and_batch_paths_in_any_case() {
    let sync =
        format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    for header in [
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-METHOD-OVERRIDE",
        "x-Http-Method-Override",
    ] {
        let r = refusal(run_with("PATCH", &sync, &[(header, "PUT")]), header);
        assert_eq!(r.code, codes::METHOD_OVERRIDE_REFUSED, "{header}");
        let about = r.governed.expect("what the request was about");
        assert_eq!(about.kind, OperationKind::SyncUpdate);
        let r = refusal(run_with("GET", &sync, &[(header, "DELETE")]), header);
        assert_eq!(r.code, codes::METHOD_OVERRIDE_REFUSED, "GET with {header}");
    }
    for target in [
        format!("{sync}?x-http-method-override=DELETE"),
        format!("{sync}?X-HTTP-Method=DELETE"),
        format!("{sync}?_method=DELETE"),
    ] {
        assert_eq!(
            refusal(run("POST", &target), &target).code,
            codes::METHOD_OVERRIDE_REFUSED
        );
    }
    for (m, path) in [
        ("POST", "/v1.0/$batch"),
        ("PATCH", "/v1.0/policies/authorizationPolicy"),
        ("GET", "/beta/policies"),
        ("POST", "/v1.0/policies//crossTenantAccessPolicy"),
    ] {
        let r = refusal(
            run_with(m, path, &[("X-HTTP-Method-Override", "PUT")]),
            path,
        );
        assert_eq!(r.code, codes::METHOD_OVERRIDE_REFUSED, "{m} {path}");
    }
    assert_eq!(
        run_with(
            "POST",
            "/v1.0/users",
            &[("X-HTTP-Method-Override", "PATCH")]
        ),
        Classification::Forward
    );
}

#[test]
fn url_override_headers_to_or_from_policies_paths_are_refused() {
    let sync =
        format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    for (m, path, header, value) in [
        ("PATCH", "/v1.0/me", "X-Original-URL", sync.as_str()),
        (
            "PATCH",
            "/v1.0/me",
            "x-rewrite-url",
            "/v1.0/%70olicies/crossTenantAccessPolicy?x=1",
        ),
        ("POST", "/v1.0/me", "X-Original-URL", "v1.0/$batch"),
        ("GET", sync.as_str(), "X-Original-URL", "/v1.0/me"),
        ("POST", "/beta/$batch", "X-Rewrite-URL", "/beta/me"),
    ] {
        let r = refusal(
            run_with(m, path, &[(header, value)]),
            &format!("{header}: {value}"),
        );
        assert_eq!(
            r.code,
            codes::URL_OVERRIDE_REFUSED,
            "{m} {path} {header}: {value}"
        );
    }
    assert_eq!(
        run_with("GET", "/v1.0/me", &[("X-Original-URL", "/v1.0/users")]),
        Classification::Forward
    );
}

#[test]
fn reads_of_sync_content_are_sync_reads_and_other_reads_are_forwarded() {
    let p = "/v1.0/policies/crossTenantAccessPolicy/partners";
    let d = "/beta/policies/deletedItems";
    let sync_reads: &[(&str, &str, Option<&str>)] = &[
        ("GET", &format!("{p}/{K}/identitySynchronization"), Some(K)),
        ("HEAD", &format!("{p}/{K}/identitySynchronization"), Some(K)),
        (
            "GET",
            &format!("{p}('{KU}')/identitySynchronization?$select=userSyncInbound"),
            Some(K),
        ),
        (
            "GET",
            &format!("{p}/{K}/identitySynchronization/userSyncInbound"),
            Some(K),
        ),
        ("GET", &format!("{p}?$expand=identitySynchronization"), None),
        (
            "GET",
            &format!("{p}?$select=tenantId&$expand=identitySynchronization"),
            None,
        ),
        ("GET", &format!("{p}?$expand=*"), None),
        (
            "GET",
            &format!("{p}/{K}?$expand=identitySynchronization"),
            Some(K),
        ),
        (
            "GET",
            "/beta/policies/crossTenantAccessPolicy/partners?expand=identitySynchronization",
            None,
        ),
        (
            "GET",
            "/v1.0/policies/crossTenantAccessPolicy?$expand=partners($expand=identitySynchronization)",
            None,
        ),
        ("GET", &format!("{d}/crossTenantSyncPolicyPartners"), None),
        ("GET", &format!("{d}/crossTenantSyncPolicyPartners/"), None),
        (
            "GET",
            &format!("{d}/crossTenantSyncPolicyPartners/{K}"),
            Some(K),
        ),
        (
            "GET",
            &format!("{d}/crossTenantPartners/{K}/identitySynchronization"),
            Some(K),
        ),
        (
            "GET",
            &format!("{d}/crossTenantPartners/{K}?$expand=identitySynchronization"),
            Some(K),
        ),
        (
            "GET",
            &format!("{d}/crossTenantPartners?$expand=identitySynchronization"),
            None,
        ),
    ];
    for (m, target, partner) in sync_reads {
        let g = sync_read(run(m, target), target);
        assert_eq!(g.kind, OperationKind::SyncRead);
        assert_eq!(g.method, method(m));
        assert_eq!(
            g.partner.as_ref().map(TenantId::as_str),
            *partner,
            "{target}"
        );
        assert_eq!(g.body, BodyRule::Empty);
        assert_eq!(g.state_path(), None);
    }
    let forwarded = [
        p.to_owned(),
        format!("{p}/"),
        format!("{p}/{K}"),
        format!("{p}/{K}?$select=tenantId,inboundTrust"),
        format!("{p}/$count"),
        format!("{p}/{K}/m365Capabilities"),
        "/v1.0/policies/crossTenantAccessPolicy".to_owned(),
        "/v1.0/policies/crossTenantAccessPolicy/default".to_owned(),
        "/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization".to_owned(),
        "/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationPartnerConfiguration".to_owned(),
        format!("{d}/crossTenantPartners"),
        format!("{d}/crossTenantPartners/{K}"),
        "/beta/policies/crossTenantIdentitySyncPolicy/partners".to_owned(),
        "/v1.0/policies".to_owned(),
        format!("/v1.0/policies/crossTenantAccessPolicy;x/partners/{K}/identitySynchronization"),
    ];
    for target in forwarded {
        for m in ["GET", "HEAD"] {
            assert_eq!(run(m, &target), Classification::Forward, "{m} {target}");
        }
    }
}

#[test]
fn writes_the_route_table_does_not_know_are_refused_as_unknown_governed_paths() {
    let p = format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}");
    let d = "/beta/policies/deletedItems";
    let t = "/v1.0/policies/crossTenantAccessPolicy/templates";
    let unknown: Vec<(&str, String)> = vec![
        ("POST", format!("{p}/identitySynchronization")),
        (
            "PATCH",
            format!("{p}/identitySynchronization/userSyncInbound"),
        ),
        (
            "PUT",
            format!("{p}/identitySynchronization/userSyncInbound/isSyncAllowed/$value"),
        ),
        ("DELETE", format!("{p}/identitySynchronization/$ref")),
        (
            "PATCH",
            format!(
                "{p}/identitySynchronization/microsoft.graph.crossTenantIdentitySyncPolicyPartner"
            ),
        ),
        ("PUT", p.clone()),
        ("POST", p.clone()),
        ("PUT", format!("{p}/automaticUserConsentSettings")),
        ("PATCH", format!("{p}/automaticUserConsentSettings")),
        ("DELETE", format!("{p}/$ref")),
        ("POST", format!("{p}/microsoft.graph.restore")),
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners".to_owned(),
        ),
        (
            "PATCH",
            "/v1.0/policies/crossTenantAccessPolicy/partners".to_owned(),
        ),
        (
            "DELETE",
            "/v1.0/policies/crossTenantAccessPolicy/partners".to_owned(),
        ),
        (
            "DELETE",
            "/v1.0/policies/crossTenantAccessPolicy/partners/$count".to_owned(),
        ),
        ("PATCH", "/v1.0/policies/crossTenantAccessPolicy".to_owned()),
        ("PUT", "/v1.0/policies/crossTenantAccessPolicy".to_owned()),
        ("PATCH", "/v1.0/policies".to_owned()),
        (
            "PATCH",
            "/v1.0/policies/microsoft.graph.policyRoot".to_owned(),
        ),
        (
            "PATCH",
            format!(
                "/v1.0/policies/microsoft.graph.policyRoot/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
            ),
        ),
        (
            "PATCH",
            format!(
                "/v1.0/policies/crossTenantAccessPolicy()/partners/{K}/identitySynchronization"
            ),
        ),
        (
            "PATCH",
            format!(
                "/v1.0/policies/crossTenantAccessPolicy;a=b/partners/{K}/identitySynchronization"
            ),
        ),
        ("PATCH", format!("{p}/identitySynchronization;a=b")),
        ("PATCH", format!("{p}/identitySynchronization.")),
        ("POST", format!("{d}/crossTenantPartners/{K}/restore()")),
        (
            "POST",
            format!("{d}/crossTenantPartners/{K}/microsoft.graph.microsoft.graph.restore"),
        ),
        (
            "PUT",
            format!("{t}/multiTenantOrganizationIdentitySynchronization"),
        ),
        (
            "DELETE",
            format!("{t}/multiTenantOrganizationIdentitySynchronization"),
        ),
        (
            "POST",
            format!("{t}/multiTenantOrganizationIdentitySynchronization"),
        ),
        (
            "PATCH",
            format!("{t}/multiTenantOrganizationIdentitySynchronization/userSyncInbound"),
        ),
        (
            "PATCH",
            format!("{t}/multiTenantOrganizationPartnerConfiguration"),
        ),
        (
            "POST",
            format!("{t}/multiTenantOrganizationPartnerConfiguration/resetToDefaultSettings"),
        ),
        ("PATCH", t.to_owned()),
        (
            "POST",
            format!("/v1.0/policies/deletedItems/crossTenantPartners/{K}/restore"),
        ),
        (
            "DELETE",
            format!("/v1.0/policies/deletedItems/crossTenantSyncPolicyPartners/{K}"),
        ),
        ("PATCH", "/v1.0/policies/deletedItems".to_owned()),
        ("PATCH", "/beta/policies/deletedItems".to_owned()),
        ("POST", format!("{d}/crossTenantPartners")),
        ("PUT", format!("{d}/crossTenantPartners/{K}")),
        ("PATCH", format!("{d}/crossTenantPartners/{K}")),
        ("POST", format!("{d}/crossTenantPartners/{K}")),
        ("POST", format!("{d}/crossTenantSyncPolicyPartners")),
        ("PUT", format!("{d}/crossTenantSyncPolicyPartners/{K}")),
        ("PATCH", format!("{d}/crossTenantSyncPolicyPartners/{K}")),
        (
            "POST",
            format!("{d}/crossTenantSyncPolicyPartners/{K}/identitySynchronization"),
        ),
        (
            "POST",
            format!("{d}/crossTenantPartners/{K}/identitySynchronization"),
        ),
        ("DELETE", format!("{d}/crossTenantPartners/{K}/restore")),
        (
            "POST",
            format!("{d}/crossTenantPartners/{K}/serviceProviderConstraints/restore"),
        ),
        (
            "PATCH",
            format!("{d}/crossTenantPartners/{K}/m365Capabilities"),
        ),
        ("POST", format!("{d}/somethingElse")),
        // Every other navigation under a partner: no schema, so no write is forwarded.
        ("PATCH", format!("{p}/m365Capabilities")),
        ("PUT", format!("{p}/m365Capabilities")),
        ("POST", format!("{p}/m365Capabilities")),
        ("DELETE", format!("{p}/m365Capabilities")),
        ("PATCH", format!("{p}/serviceProviderConstraints")),
        ("PUT", format!("{p}/serviceProviderConstraints")),
        ("POST", format!("{p}/serviceProviderConstraints")),
        ("DELETE", format!("{p}/serviceProviderConstraints")),
        ("PATCH", format!("{p}/m365Capabilities/anything")),
        ("POST", format!("{p}/serviceProviderConstraints/$ref")),
        (
            "PATCH",
            format!(
                "/beta/policies/crossTenantAccessPolicy/partners('{KU}')/serviceProviderConstraints"
            ),
        ),
        ("PATCH", format!("{p}/microsoft.graph.m365Capabilities")),
        ("PATCH", format!("{p}/someFutureNavigation")),
        ("PUT", format!("{p}/someFutureNavigation/x/y")),
        // Methods other than GET and HEAD are writes, whatever their spelling.
        ("put", format!("{p}/identitySynchronization")),
        ("Patch", format!("{p}/identitySynchronization")),
        ("get", format!("{p}/identitySynchronization")),
        ("MERGE", format!("{p}/identitySynchronization")),
        ("OPTIONS", format!("{p}/identitySynchronization")),
        ("TRACE", p.clone()),
    ];
    for (m, path) in unknown {
        let r = refusal(run(m, &path), &format!("{m} {path}"));
        assert_eq!(r.code, codes::UNKNOWN_GOVERNED_PATH, "{m} {path}");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.governed.is_none());
    }
}

#[test]
fn unknown_governed_refusals_name_the_canonical_path_when_there_is_one() {
    let path = format!(
        "/v1.0/policies/crossTenantAccessPolicy/Partners('{KU}')/AutomaticUserConsentSettings"
    );
    let r = refusal(run("PUT", &path), &path);
    let expected =
        format!("/v1.0/policies/crosstenantaccesspolicy/partners/{K}/automaticuserconsentsettings");
    assert_eq!(r.canonical.as_deref(), Some(expected.as_str()));
    assert!(r.message.contains(&expected), "{}", r.message);
}

#[test]
fn writes_that_cannot_change_a_sync_policy_are_forwarded() {
    // The route table's only forwarded writes: the default configuration (no sync policy, no
    // navigation to a partner).
    let forwarded = [
        ("PATCH", "/v1.0/policies/crossTenantAccessPolicy/default"),
        ("PUT", "/beta/policies/crossTenantAccessPolicy/Default"),
        (
            "POST",
            "/beta/policies/crossTenantAccessPolicy/default/resetToSystemDefault",
        ),
        (
            "POST",
            "/v1.0/policies/crossTenantAccessPolicy/default/microsoft.graph.resetToSystemDefault",
        ),
    ];
    for (m, path) in forwarded {
        assert_eq!(run(m, path), Classification::Forward, "{m} {path}");
    }
}

#[test]
fn reads_of_other_partner_navigations_are_forwarded_and_writes_refused() {
    let p = format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}");
    for nav in [
        "m365Capabilities",
        "serviceProviderConstraints",
        "anythingElse",
    ] {
        let path = format!("{p}/{nav}");
        assert_eq!(run("GET", &path), Classification::Forward, "{path}");
        for m in ["PATCH", "PUT", "POST", "DELETE", "MERGE"] {
            let r = refusal(run(m, &path), &format!("{m} {path}"));
            assert_eq!(r.code, codes::UNKNOWN_GOVERNED_PATH, "{m} {path}");
            assert!(r.message.contains("governed or refused"), "{}", r.message);
        }
    }
}

#[test]
fn writes_to_the_legacy_sync_policy_path_are_refused_with_403_and_what_they_were_about() {
    let cases: &[(&str, String, Option<&str>, BodyRule)] = &[
        (
            "POST",
            "/beta/policies/crossTenantIdentitySyncPolicy/partners".to_owned(),
            None,
            BodyRule::Sync,
        ),
        (
            "PATCH",
            format!("/beta/policies/crossTenantIdentitySyncPolicy/partners/{KU}"),
            Some(K),
            BodyRule::Sync,
        ),
        (
            "DELETE",
            format!("/beta/policies/crossTenantIdentitySyncPolicy/partners/{K}/$ref"),
            Some(K),
            BodyRule::Empty,
        ),
        (
            "PUT",
            format!("/v1.0/policies/CrossTenantIdentitySyncPolicy/partners('{K}')"),
            Some(K),
            BodyRule::Sync,
        ),
        (
            "POST",
            "/v1.0/policies/crossTenantIdentitySyncPolicy".to_owned(),
            None,
            BodyRule::Sync,
        ),
        (
            "PATCH",
            "/beta/policies/microsoft.graph.crossTenantIdentitySyncPolicy/".to_owned(),
            None,
            BodyRule::Sync,
        ),
    ];
    for (m, path, partner, rule) in cases {
        let r = refusal(run(m, path), path);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(r.code, codes::LEGACY_PATH_REFUSED);
        let g = r.governed.expect("governed");
        assert_eq!(g.kind, OperationKind::LegacySyncPolicyWrite);
        assert_eq!(g.method, method(m));
        assert_eq!(g.partner.as_ref().map(TenantId::as_str), *partner, "{path}");
        assert_eq!(g.body, *rule);
        assert_eq!(r.canonical, Some(g.path.to_string()));
        assert_eq!(g.state_path(), None);
    }
    assert_eq!(
        run(
            "GET",
            "/beta/policies/crossTenantIdentitySyncPolicy/partners"
        ),
        Classification::Forward
    );
}

#[test]
fn ordinary_graph_traffic_passes_untouched_however_it_is_encoded() {
    let cases = [
        ("GET", "/v1.0/me"),
        ("POST", "/v1.0/users"),
        ("PATCH", "/v1.0/users/abc%2Fdef"),
        ("DELETE", "/v1.0/groups/x//y"),
        ("GET", "/v1.0/me/drive/root:/a%2520b:/content"),
        (
            "PUT",
            "/v1.0/me/drive/root:/policies/crossTenantAccessPolicy.txt:/content",
        ),
        (
            "PUT",
            "/v1.0/me/drive/root:/v1.0/policies/crossTenantAccessPolicy/x:/content",
        ),
        ("PATCH", "/v1.0/policies/authorizationPolicy"),
        ("PATCH", "/v1.0/policies/authorizationPolicy/"),
        ("PATCH", "/v1.0/policies//authorizationPolicy"),
        ("POST", "/beta/policies/conditionalAccessPolicies"),
        ("DELETE", "/v1.0/identity/conditionalAccess/policies/abc"),
        (
            "POST",
            "/v1.0/tenantRelationships/multiTenantOrganization/tenants",
        ),
        ("GET", "/"),
        ("GET", "*"),
        ("GET", "/v1.0/$metadata"),
        ("POST", "/v1.0/users/$batch"),
        (
            "PATCH",
            "/v2.0/policies/crossTenantAccessPolicy/partners/x/identitySynchronization",
        ),
        (
            "PATCH",
            "/policies/crossTenantAccessPolicy/partners/x/identitySynchronization",
        ),
        ("POST", "/v1.0/me/sendMail"),
        ("GET", "/v1.0/users/%ff%fe"),
        ("OPTIONS", "/v1.0/users"),
    ];
    for (m, path) in cases {
        assert_eq!(run(m, path), Classification::Forward, "{m} {path}");
    }
}

#[test]
fn batch_is_recognised_in_any_alias_form_and_only_for_post() {
    let batches = [
        ("/v1.0/$batch", ApiVersion::V1_0),
        ("/v1.0/%24batch", ApiVersion::V1_0),
        ("/V1.0/$BATCH", ApiVersion::V1_0),
        ("/beta/$Batch/", ApiVersion::Beta),
        ("/BETA/%24BATCH", ApiVersion::Beta),
    ];
    for (path, version) in batches {
        assert_eq!(run("POST", path), Classification::Batch(version), "{path}");
        // Any other method, whatever its case, is refused rather than forwarded unparsed: an
        // upstream reading methods case-insensitively would run `post` as a batch.
        for m in [
            "post", "Post", "pOST", "GET", "get", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS",
            "BATCH", "MERGE", "POST2",
        ] {
            let r = refusal(run(m, path), &format!("{m} {path}"));
            assert_eq!(r.code, codes::BAD_BATCH, "{m} {path}");
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(r.message.contains(&format!("'{m}'")), "{}", r.message);
        }
    }
    for path in [
        "/v1.0/%2524batch",
        "/v1.0//$batch",
        "/v1.0/./$batch",
        "/v1.0/$batch;x=y",
        "/v1.0/$batch()",
        "/v1.0/users/../$batch",
    ] {
        for m in ["POST", "post", "GET", "PUT"] {
            let r = refusal(run(m, path), &format!("{m} {path}"));
            assert_eq!(r.code, codes::NON_CANONICAL_PATH, "{m} {path}");
        }
    }
    for path in ["/v1.0/%20$batch", "/v1.0/$batch%09", "/v1.0/$ba%0Atch"] {
        for m in ["POST", "GET"] {
            let r = refusal(run(m, path), &format!("{m} {path}"));
            assert_eq!(r.code, codes::NON_CANONICAL_URL, "{m} {path}");
        }
    }
}

#[test]
fn targets_readers_disagree_on_are_refused_where_they_could_reach_policies_or_batch() {
    let sync = format!("policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    let refused = [
        // Whitespace and controls, encoded (hyper refuses them raw) or raw (other callers).
        format!("/%20v1.0/{sync}"),
        format!("/v1.0/%20{sync}"),
        format!("/v1.0/{sync}%20"),
        format!("/v1.0/{sync}%00"),
        format!("/v1%09.0/{sync}"),
        format!("/v1.0/pol%0Dicies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1.0/policies/crossTenant%0AAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1.0/{sync}%C2%A0"),
        format!("/v1%A0.0/{sync}"),
        format!("/v1.0/{sync}%E3%80%80"),
        format!(
            "/v1.0/pol%E2%80%8Bicies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
        ),
        format!("/v1.0/pol\ticies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!(" /v1.0/{sync}")
            .trim_start()
            .replacen('/', "/\u{a0}", 1),
        // Non-ASCII that folds or normalises to a governed name.
        format!("/v1.0/pol%C4%B1cies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1.0/policies/crossTenantAcce%C5%BFsPolicy/partners/{K}/identitySynchronization"),
        format!(
            "/v1.0/%EF%BD%90olicies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
        ),
        format!(
            "/v1.0/\u{ff50}olicies/crossTenantAccessPolicy/partners/{K}/identitySynchronization"
        ),
        "/v1.0/%EF%BC%84batch".to_owned(),
        "/v1.0/%EF%BC%85%EF%BC%92%EF%BC%94batch".to_owned(),
        // Backslashes, `?` and `#` hidden in escapes, malformed escapes.
        format!("/v1.0/users%5C..%5C{sync}"),
        format!("/v1.0/policies%3Fx/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1.0/policies%23x/crossTenantAccessPolicy/partners/{K}/identitySynchronization"),
        format!("/v1.0/{sync}%"),
        format!("/v1.0/{sync}%zz"),
        // Only /policies (not a governed subtree) is enough for the reader to apply.
        "/v1.0/policies/authorization%20Policy".to_owned(),
    ];
    for path in refused {
        for m in ["PATCH", "GET"] {
            let r = refusal(run(m, &path), &format!("{m} {path:?}"));
            assert_eq!(r.code, codes::NON_CANONICAL_URL, "{m} {path:?}");
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
        }
    }
    // The query is read by the same reader on those paths.
    for query in [
        "x=%09",
        "%0Ax-http-method-override=DELETE",
        "x=%C2%A0",
        "x=%A0",
    ] {
        let target = format!("/v1.0/{sync}?{query}");
        let r = refusal(run("PATCH", &target), &target);
        assert_eq!(r.code, codes::NON_CANONICAL_URL, "{target}");
    }
    let target = format!("/v1.0/{sync}?$select=tenantId&$filter=a%20eq%20'caf%C3%A9'");
    assert!(matches!(run("GET", &target), Classification::SyncRead(_)));
}

#[test]
fn ordinary_targets_with_odd_but_valid_encodings_are_not_read_strictly() {
    for (m, path) in [
        ("GET", "/v1.0/users/caf%C3%A9@x.com"),
        ("PATCH", "/v1.0/users/caf\u{e9}@x.com"),
        (
            "GET",
            "/v1.0/me/drive/root:/My%20Documents/a%09b.txt:/content",
        ),
        ("PUT", "/v1.0/me/drive/root:/%E3%80%80x.txt:/content"),
        ("GET", "/v1.0/users?$filter=displayName%20eq%20'%C2%A0'"),
        ("GET", "/v1.0/users/a%5Cb"),
        ("GET", "/v1.0/users/100%"),
    ] {
        assert_eq!(run(m, path), Classification::Forward, "{m} {path}");
    }
}

#[test]
fn duplicated_authorization_content_type_or_encoding_is_refused_near_policies_and_batch() {
    let sync =
        format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    let paths = [
        sync.as_str(),
        "/v1.0/policies/authorizationPolicy",
        "/v1.0/$batch",
        "/beta/%24batch",
    ];
    for name in ["Authorization", "Content-Type", "Content-Encoding"] {
        for path in paths {
            let value = if name == "Content-Encoding" {
                "identity"
            } else {
                "x"
            };
            let headers = [(name, value), (&*name.to_ascii_lowercase(), value)];
            let r = refusal(run_with("PATCH", path, &headers), &format!("{name} {path}"));
            assert_eq!(r.code, codes::DUPLICATE_HEADER, "{name} {path}");
            assert_eq!(r.status, StatusCode::BAD_REQUEST);
            assert!(
                r.message.contains(&name.to_ascii_lowercase()),
                "{}",
                r.message
            );
        }
        let ordinary = [(name, "identity"), (name, "identity")];
        assert_eq!(
            run_with("PATCH", "/v1.0/users/x", &ordinary),
            Classification::Forward,
            "{name}: ordinary traffic is not read for headers"
        );
    }
    // What the request would have been is kept for the denied event.
    let twice = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")];
    let r = refusal(run_with("PATCH", &sync, &twice), &sync);
    assert_eq!(r.governed.map(|g| g.kind), Some(OperationKind::SyncUpdate));
    // One of each is fine.
    let once = [
        ("Authorization", "Bearer a"),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "Identity"),
    ];
    assert!(matches!(
        run_with("PATCH", &sync, &once),
        Classification::Governed(_)
    ));
}

#[test]
fn a_content_encoding_other_than_identity_is_refused_near_policies_and_batch() {
    let sync =
        format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}/identitySynchronization");
    for path in [
        sync.as_str(),
        "/v1.0/$batch",
        "/v1.0/policies/authorizationPolicy",
    ] {
        for encoding in ["gzip", "deflate", "br", "identity, gzip", "x-gzip", ""] {
            let r = refusal(
                run_with("PATCH", path, &[("Content-Encoding", encoding)]),
                &format!("{path} {encoding}"),
            );
            assert_eq!(
                r.code,
                codes::UNSUPPORTED_CONTENT_ENCODING,
                "{path} {encoding}"
            );
            assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let identity = run_with("PATCH", path, &[("Content-Encoding", " identity ")]);
        assert!(
            !matches!(&identity, Classification::Refuse(r) if r.code == codes::UNSUPPORTED_CONTENT_ENCODING),
            "{path}: {identity:?}"
        );
    }
    assert_eq!(
        run_with("POST", "/v1.0/users", &[("Content-Encoding", "gzip")]),
        Classification::Forward
    );
}

#[test]
fn state_paths_and_lock_keys_follow_each_kind() {
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        (
            "PUT",
            "/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
            Some("/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "PATCH",
            "/beta/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
            Some("/beta/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "DELETE",
            "/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization",
            Some("/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "POST",
            "/v1.0/policies/crossTenantAccessPolicy/partners",
            None,
            None,
        ),
        (
            "PATCH",
            "/v1.0/policies/crossTenantAccessPolicy/partners/{k}",
            Some(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{k}?$expand=identitySynchronization",
            ),
            Some(K),
        ),
        (
            "DELETE",
            "/beta/policies/crossTenantAccessPolicy/partners/{k}",
            Some(
                "/beta/policies/crossTenantAccessPolicy/partners/{k}?$expand=identitySynchronization",
            ),
            Some(K),
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners/{k}/restore",
            Some(
                "/beta/policies/crossTenantAccessPolicy/partners/{k}?$expand=identitySynchronization",
            ),
            Some(K),
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantSyncPolicyPartners/{k}/restore",
            Some("/beta/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "POST",
            "/beta/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization/restore",
            Some("/beta/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "DELETE",
            "/beta/policies/deletedItems/crossTenantPartners/{k}",
            Some("/beta/policies/deletedItems/crossTenantPartners/{k}"),
            Some(K),
        ),
        (
            "DELETE",
            "/beta/policies/deletedItems/crossTenantSyncPolicyPartners/{k}",
            Some("/beta/policies/deletedItems/crossTenantSyncPolicyPartners/{k}"),
            Some(K),
        ),
        (
            "PATCH",
            "/beta/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization",
            Some("/beta/policies/deletedItems/crossTenantPartners/{k}/identitySynchronization"),
            Some(K),
        ),
        (
            "PATCH",
            "/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
            Some(
                "/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
            ),
            Some("template"),
        ),
        (
            "POST",
            "/beta/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings",
            Some(
                "/beta/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization",
            ),
            Some("template"),
        ),
    ];
    for (m, path, state, lock) in cases {
        // Spelled with an upper-case key in parentheses: the state path is canonical anyway.
        let spelled = path.replace("/{k}", &format!("('{KU}')"));
        let g = governed(run(m, &spelled), &spelled);
        let expected = state.map(|s| s.replace("{k}", K));
        assert_eq!(g.state_path(), expected, "{m} {path}");
        assert_eq!(g.lock_key().as_deref(), *lock, "{m} {path}");
    }
}

#[test]
fn a_partner_create_gets_its_state_path_and_lock_once_the_partner_is_known() {
    let g = governed(
        run("POST", "/v1.0/policies/crossTenantAccessPolicy/partners"),
        "create",
    );
    assert_eq!(g.state_path(), None);
    assert_eq!(g.lock_key(), None);
    let g = g.with_partner(TenantId::parse(KU).unwrap());
    assert_eq!(
        g.state_path().as_deref(),
        Some(format!("/v1.0/policies/crossTenantAccessPolicy/partners/{K}?$expand=identitySynchronization").as_str())
    );
    assert_eq!(g.lock_key().as_deref(), Some(K));
}

#[test]
fn operation_kind_names_are_stable_snake_case_and_round_trip() {
    let names: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "sync_create",
            "sync_update",
            "sync_delete",
            "partner_create",
            "partner_update",
            "partner_delete",
            "partner_restore",
            "sync_restore",
            "deleted_partner_purge",
            "deleted_sync_purge",
            "deleted_partner_sync_write",
            "template_update",
            "template_reset",
            "legacy_sync_policy_write",
            "sync_read",
        ]
    );
    for kind in OperationKind::ALL {
        assert_eq!(OperationKind::parse(kind.as_str()), Some(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(OperationKind::parse("SyncCreate"), None);
}

#[test]
fn tenant_ids_are_hyphenated_guids_stored_lower_case() {
    let t = TenantId::parse(KU).unwrap();
    assert_eq!(t.as_str(), K);
    assert_eq!(t.to_string(), K);
    assert_eq!(K.parse::<TenantId>().unwrap(), t);
    for bad in [
        "",
        "x",
        &K[1..],
        &format!("{{{K}}}"),
        &K.replace('-', ""),
        &format!("{K} "),
        "9c5d131d+b1c3-4fc4-9e3f-c6557947d551",
    ] {
        assert!(TenantId::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn api_versions_parse_in_any_case_and_print_as_graph_spells_them() {
    assert_eq!(ApiVersion::parse("V1.0"), Some(ApiVersion::V1_0));
    assert_eq!(ApiVersion::parse("Beta"), Some(ApiVersion::Beta));
    assert_eq!(ApiVersion::parse("v1"), None);
    assert_eq!(ApiVersion::parse("v2.0"), None);
    assert_eq!(ApiVersion::V1_0.to_string(), "v1.0");
    assert_eq!(ApiVersion::Beta.as_str(), "beta");
}

#[test]
fn a_refusal_becomes_a_graph_error_with_its_status_code_and_message() {
    let r = refusal(
        run("PATCH", "/v1.0/policies/crossTenantAccessPolicy"),
        "patch",
    );
    let message = r.message.clone();
    let e = r.into_graph_error();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert_eq!(e.code, codes::UNKNOWN_GOVERNED_PATH);
    assert_eq!(e.message, message);
}
