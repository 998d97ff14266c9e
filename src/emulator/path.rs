//! The emulator's own reading of a Graph URL path: version, resource, key.
//!
//! It is deliberately separate from the proxy's canonicaliser: the emulator stands in for Graph, so
//! it has to accept the aliases Graph plausibly accepts (docs/graph.md §7) and the proxy must
//! be tested against a backend that honours them. Sharing one parser would let a bug in it hide on
//! both sides at once. What it accepts, every one an [I] in the reference:
//!
//! - segments compared case-insensitively, the version segment included (`V1.0`, `BETA`);
//! - each segment percent-decoded once, after splitting, so `%2F` never creates a segment;
//! - one trailing slash;
//! - keys as a segment (`partners/k`), in parentheses (`partners('k')`) or named
//!   (`partners(tenantId='k')`); keys must be GUIDs and are stored lower-case;
//! - bound actions with or without their namespace (`restore`, `microsoft.graph.restore`).
//!
//! Anything else is an unknown segment, as Graph reports it: 400 "Resource not found for the
//! segment '<seg>'.", naming the segment as the client sent it.

use std::fmt;

use http::StatusCode;
use percent_encoding::percent_decode_str;

use crate::graph_error::GraphError;

/// The API version a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    Beta,
}

impl Version {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1.0",
            Version::Beta => "beta",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A partner tenant id: the key of partners and sync policies, a lower-case hyphenated GUID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts the 36-character hyphenated form in any case; Graph's handling of braces or the
    /// 32-digit form is unknown, so they are refused rather than guessed at.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let well_formed = bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
        well_formed.then(|| Self(text.to_ascii_lowercase()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a path names, before the method is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    /// `/$batch`
    Batch,
    /// `/policies/crossTenantAccessPolicy`
    AccessPolicy,
    /// `/policies/crossTenantAccessPolicy/partners`
    Partners,
    Partner(TenantId),
    /// `…/partners/{id}/identitySynchronization`
    PartnerSync(TenantId),
    /// `…/templates/multiTenantOrganizationIdentitySynchronization`
    Template,
    /// `…/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings`
    TemplateReset,
    /// beta `/policies/deletedItems/crossTenantPartners`
    DeletedPartners,
    DeletedPartner(TenantId),
    DeletedPartnerRestore(TenantId),
    /// beta `…/deletedItems/crossTenantPartners/{id}/identitySynchronization` (SDK-generated only)
    DeletedPartnerSync(TenantId),
    DeletedPartnerSyncRestore(TenantId),
    /// beta `/policies/deletedItems/crossTenantSyncPolicyPartners`
    DeletedSyncPolicies,
    DeletedSyncPolicy(TenantId),
    DeletedSyncPolicyRestore(TenantId),
    /// A resource Graph has but the emulator does not model (the service root, `/policies`,
    /// `…/default`, `…/m365Capabilities`, …): answered 501 rather than with a made-up 400.
    NotEmulated,
}

/// The decoded segments of a raw (still percent-encoded) path, one trailing slash dropped.
pub(crate) fn segments(raw_path: &str) -> Result<Vec<String>, GraphError> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|raw| {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| unknown_segment(raw))
        })
        .collect()
}

/// The version named by the first segment; Graph answers "Invalid version." for anything else.
pub(crate) fn version(first: Option<&str>) -> Result<Version, GraphError> {
    match first {
        Some(s) if s.eq_ignore_ascii_case("v1.0") => Ok(Version::V1),
        Some(s) if s.eq_ignore_ascii_case("beta") => Ok(Version::Beta),
        _ => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid version.",
        )),
    }
}

/// The resource named by the segments after the version.
pub(crate) fn resource(version: Version, segs: &[String]) -> Result<Resource, GraphError> {
    let mut rest = Segments(segs);
    let Some(first) = rest.next() else {
        return Ok(Resource::NotEmulated);
    };
    if first.eq_ignore_ascii_case("$batch") {
        return rest.end(Resource::Batch);
    }
    if !first.eq_ignore_ascii_case("policies") {
        return Err(unknown_segment(first));
    }
    let Some(seg) = rest.next() else {
        return Ok(Resource::NotEmulated);
    };
    if seg.eq_ignore_ascii_case("crossTenantAccessPolicy") {
        access_policy(rest)
    } else if seg.eq_ignore_ascii_case("deletedItems") && version == Version::Beta {
        deleted_items(rest)
    } else {
        // `crossTenantIdentitySyncPolicy` lands here too: it never shipped (§2.6).
        Err(unknown_segment(seg))
    }
}

/// `/policies/crossTenantAccessPolicy/…`
fn access_policy(mut rest: Segments<'_>) -> Result<Resource, GraphError> {
    let Some(seg) = rest.next() else {
        return Ok(Resource::AccessPolicy);
    };
    if let Some(key) = collection_key(seg, "partners", &mut rest)? {
        let Some(id) = key else {
            return Ok(Resource::Partners);
        };
        let Some(nav) = rest.next() else {
            return Ok(Resource::Partner(id));
        };
        if nav.eq_ignore_ascii_case("identitySynchronization") {
            return rest.end(Resource::PartnerSync(id));
        }
        if nav.eq_ignore_ascii_case("m365Capabilities")
            || nav.eq_ignore_ascii_case("serviceProviderConstraints")
        {
            return Ok(Resource::NotEmulated);
        }
        return Err(unknown_segment(nav));
    }
    if seg.eq_ignore_ascii_case("default") {
        return Ok(Resource::NotEmulated);
    }
    if seg.eq_ignore_ascii_case("templates") {
        let Some(template) = rest.next() else {
            return Ok(Resource::NotEmulated);
        };
        if template.eq_ignore_ascii_case("multiTenantOrganizationIdentitySynchronization") {
            return match rest.next() {
                None => Ok(Resource::Template),
                Some(action) if is_action(action, "resetToDefaultSettings") => {
                    rest.end(Resource::TemplateReset)
                }
                Some(other) => Err(unknown_segment(other)),
            };
        }
        if template.eq_ignore_ascii_case("multiTenantOrganizationPartnerConfiguration") {
            return Ok(Resource::NotEmulated);
        }
        return Err(unknown_segment(template));
    }
    Err(unknown_segment(seg))
}

/// beta `/policies/deletedItems/…`
fn deleted_items(mut rest: Segments<'_>) -> Result<Resource, GraphError> {
    let Some(seg) = rest.next() else {
        return Ok(Resource::NotEmulated);
    };
    if let Some(key) = collection_key(seg, "crossTenantPartners", &mut rest)? {
        let Some(id) = key else {
            return Ok(Resource::DeletedPartners);
        };
        return match rest.next() {
            None => Ok(Resource::DeletedPartner(id)),
            Some(s) if is_action(s, "restore") => rest.end(Resource::DeletedPartnerRestore(id)),
            Some(s) if s.eq_ignore_ascii_case("identitySynchronization") => match rest.next() {
                None => Ok(Resource::DeletedPartnerSync(id)),
                Some(a) if is_action(a, "restore") => {
                    rest.end(Resource::DeletedPartnerSyncRestore(id))
                }
                Some(other) => Err(unknown_segment(other)),
            },
            Some(other) => Err(unknown_segment(other)),
        };
    }
    if let Some(key) = collection_key(seg, "crossTenantSyncPolicyPartners", &mut rest)? {
        let Some(id) = key else {
            return Ok(Resource::DeletedSyncPolicies);
        };
        return match rest.next() {
            None => Ok(Resource::DeletedSyncPolicy(id)),
            Some(s) if is_action(s, "restore") => rest.end(Resource::DeletedSyncPolicyRestore(id)),
            Some(other) => Err(unknown_segment(other)),
        };
    }
    Err(unknown_segment(seg))
}

/// The remaining segments of a path.
struct Segments<'a>(&'a [String]);

impl<'a> Segments<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// `resource` when no segment is left, else the first extra one is unknown.
    fn end(mut self, resource: Resource) -> Result<Resource, GraphError> {
        match self.next() {
            None => Ok(resource),
            Some(extra) => Err(unknown_segment(extra)),
        }
    }
}

/// Whether `seg` names the collection `name`, and if so the key it addresses: in parentheses on
/// the segment itself, else the next segment, else none (the collection).
/// `Ok(None)` means "not this collection"; `Ok(Some(None))` means "the collection itself".
fn collection_key(
    seg: &str,
    name: &str,
    rest: &mut Segments<'_>,
) -> Result<Option<Option<TenantId>>, GraphError> {
    if seg.eq_ignore_ascii_case(name) {
        return match rest.next() {
            None => Ok(Some(None)),
            Some(key) => tenant_key(key).map(|id| Some(Some(id))),
        };
    }
    let Some(inner) = seg
        .strip_suffix(')')
        .and_then(|s| s.split_once('('))
        .filter(|(head, _)| head.eq_ignore_ascii_case(name))
        .map(|(_, inner)| inner)
    else {
        return Ok(None);
    };
    // `tenantId='k'` names the key property; the bare form `'k'` is the usual one.
    let literal = match inner.split_once('=') {
        Some((prop, value)) if prop.trim().eq_ignore_ascii_case("tenantId") => value.trim(),
        Some(_) => return Err(unknown_segment(seg)),
        None => inner.trim(),
    };
    // tenantId is an Edm.String key, so its literal is quoted; an unquoted one is not a string.
    let Some(key) = literal
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
    else {
        return Err(bad_key(literal));
    };
    tenant_key(key).map(|id| Some(Some(id)))
}

fn tenant_key(key: &str) -> Result<TenantId, GraphError> {
    TenantId::parse(key).ok_or_else(|| bad_key(key))
}

/// A bound action segment, with or without the `microsoft.graph.` namespace.
fn is_action(seg: &str, action: &str) -> bool {
    let bare = match seg.get(..16) {
        Some(prefix) if prefix.eq_ignore_ascii_case("microsoft.graph.") => &seg[16..],
        _ => seg,
    };
    bare.eq_ignore_ascii_case(action)
}

pub(crate) fn unknown_segment(seg: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Resource not found for the segment '{seg}'."),
    )
}

/// The directory's answer to an identifier that is not a GUID.
fn bad_key(key: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        format!("Invalid object identifier '{key}'. The tenant ID must be a GUID."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    fn parse(path: &str) -> Result<(Version, Resource), GraphError> {
        let segs = segments(path)?;
        let version = version(segs.first().map(String::as_str))?;
        Ok((version, resource(version, &segs[1..])?))
    }

    fn tid() -> TenantId {
        TenantId::parse(ID).unwrap()
    }

    fn message(path: &str) -> String {
        parse(path).unwrap_err().message
    }

    #[test]
    fn documented_paths_are_recognised_under_both_versions() {
        for v in ["v1.0", "beta"] {
            let base = format!("/{v}/policies/crossTenantAccessPolicy");
            assert_eq!(parse(&base).unwrap().1, Resource::AccessPolicy);
            assert_eq!(
                parse(&format!("{base}/partners")).unwrap().1,
                Resource::Partners
            );
            assert_eq!(
                parse(&format!("{base}/partners/{ID}")).unwrap().1,
                Resource::Partner(tid())
            );
            assert_eq!(
                parse(&format!("{base}/partners/{ID}/identitySynchronization"))
                    .unwrap()
                    .1,
                Resource::PartnerSync(tid())
            );
            assert_eq!(
                parse(&format!(
                    "{base}/templates/multiTenantOrganizationIdentitySynchronization"
                ))
                .unwrap()
                .1,
                Resource::Template
            );
            assert_eq!(
                parse(&format!(
                    "{base}/templates/multiTenantOrganizationIdentitySynchronization/resetToDefaultSettings"
                ))
                .unwrap()
                .1,
                Resource::TemplateReset
            );
            assert_eq!(parse(&format!("/{v}/$batch")).unwrap().1, Resource::Batch);
        }
    }

    /// Graph's vocabulary (`crate::graph`), written for the proxy, names only paths the emulator
    /// (with its own, independent parser) models: every governed operation's documented path and
    /// every state path the pipeline reads.
    #[test]
    fn every_governed_and_state_path_of_the_proxy_is_emulated() {
        use crate::graph::{self, ApiVersion, OperationKind};
        let k = graph::TenantId::parse(ID).unwrap();
        for kind in OperationKind::ALL {
            if kind == OperationKind::LegacySyncPolicyWrite {
                continue; // never shipped by Graph; the proxy refuses it
            }
            for v in ApiVersion::ALL {
                let deleted = graph::routes::canonical_path(kind, v, Some(&k))
                    .unwrap()
                    .segments
                    .contains(&"deleteditems".to_owned());
                if deleted && v == ApiVersion::V1_0 {
                    continue; // v1.0 has no deletedItems
                }
                let path = graph::documented_path(
                    &graph::routes::canonical_path(kind, v, Some(&k)).unwrap(),
                );
                let state = graph::state_path(kind, v, Some(&k));
                for path in std::iter::once(path).chain(state) {
                    let path = path.split('?').next().unwrap().to_owned();
                    match parse(&path) {
                        Ok((_, Resource::NotEmulated)) | Err(_) => {
                            panic!("{kind} {v}: {path} is not emulated")
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    #[test]
    fn aliases_reach_the_same_resource() {
        let upper = ID.to_ascii_uppercase();
        for path in [
            format!("/V1.0/POLICIES/crosstenantaccesspolicy/Partners/{ID}/IDENTITYSYNCHRONIZATION"),
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{upper}/identitySynchronization/"
            ),
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners('{ID}')/identitySynchronization"
            ),
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners(tenantId='{upper}')/identitySynchronization"
            ),
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners(%27{ID}%27)/identity%53ynchronization"
            ),
        ] {
            assert_eq!(
                parse(&path).unwrap(),
                (Version::V1, Resource::PartnerSync(tid())),
                "{path}"
            );
        }
    }

    #[test]
    fn beta_deleted_items_and_namespaced_actions_are_recognised() {
        let base = "/BETA/policies/deletedItems";
        let cases = [
            (
                format!("{base}/crossTenantPartners/"),
                Resource::DeletedPartners,
            ),
            (
                format!("{base}/crossTenantPartners/{ID}"),
                Resource::DeletedPartner(tid()),
            ),
            (
                format!("{base}/crossTenantPartners/{ID}/microsoft.graph.restore"),
                Resource::DeletedPartnerRestore(tid()),
            ),
            (
                format!("{base}/crossTenantPartners('{ID}')/identitySynchronization"),
                Resource::DeletedPartnerSync(tid()),
            ),
            (
                format!("{base}/crossTenantPartners/{ID}/identitySynchronization/restore"),
                Resource::DeletedPartnerSyncRestore(tid()),
            ),
            (
                format!("{base}/crossTenantSyncPolicyPartners"),
                Resource::DeletedSyncPolicies,
            ),
            (
                format!("{base}/crossTenantSyncPolicyPartners/{ID}/Microsoft.Graph.Restore"),
                Resource::DeletedSyncPolicyRestore(tid()),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(parse(&path).unwrap().1, expected, "{path}");
        }
        assert_eq!(
            parse(
                "/beta/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization/microsoft.graph.resetToDefaultSettings"
            )
            .unwrap()
            .1,
            Resource::TemplateReset
        );
    }

    #[test]
    fn deleted_items_do_not_exist_in_v1() {
        assert_eq!(
            message("/v1.0/policies/deletedItems/crossTenantPartners"),
            "Resource not found for the segment 'deletedItems'."
        );
    }

    #[test]
    fn unknown_segments_are_named_as_sent() {
        assert_eq!(
            message("/beta/policies/crossTenantIdentitySyncPolicy/partners"),
            "Resource not found for the segment 'crossTenantIdentitySyncPolicy'."
        );
        assert_eq!(
            message(&format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{ID}/x"
            )),
            "Resource not found for the segment 'x'."
        );
        assert_eq!(
            message("/v1.0/v1.0/policies"),
            "Resource not found for the segment 'v1.0'."
        );
        assert_eq!(
            message("/v1.0/policies/crossTenantAccessPolicy//partners"),
            "Resource not found for the segment ''."
        );
        assert_eq!(
            message("/v1.0/policies/crossTenantAccessPolicy/partners/../partners"),
            "Invalid object identifier '..'. The tenant ID must be a GUID."
        );
        let err = parse("/v1.0/policies/crossTenantAccessPolicy/partners%2Fx").unwrap_err();
        assert_eq!(
            err.message,
            "Resource not found for the segment 'partners/x'."
        );
    }

    #[test]
    fn a_missing_or_unknown_version_is_invalid() {
        for path in ["/", "/me", "/v2.0/policies", "/v1/policies"] {
            assert_eq!(message(path), "Invalid version.", "{path}");
        }
    }

    #[test]
    fn keys_must_be_quoted_guids() {
        for key in [
            "abc",
            "{9c5d131d-b1c3-4fc4-9e3f-c6557947d551}",
            "9c5d131db1c34fc49e3fc6557947d551",
        ] {
            let err = parse(&format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{key}"
            ))
            .unwrap_err();
            assert_eq!(err.code, "Request_BadRequest", "{key}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
        let unquoted = parse(&format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners({ID})"
        ))
        .unwrap_err();
        assert_eq!(unquoted.code, "Request_BadRequest");
        let wrong_name = parse(&format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners(id='{ID}')"
        ))
        .unwrap_err();
        assert_eq!(wrong_name.code, "BadRequest");
    }

    #[test]
    fn resources_graph_has_but_the_emulator_lacks_are_not_emulated() {
        for path in [
            "/v1.0",
            "/v1.0/policies",
            "/v1.0/policies/crossTenantAccessPolicy/default",
            "/beta/policies/deletedItems",
        ] {
            assert_eq!(parse(path).unwrap().1, Resource::NotEmulated, "{path}");
        }
    }

    #[test]
    fn tenant_ids_are_stored_lower_case() {
        let id = TenantId::parse(&ID.to_ascii_uppercase()).unwrap();
        assert_eq!(id.as_str(), ID);
    }
}
