//! Paths: the API version, the canonical form the classifier matches and the log records, Graph's
//! documented spelling that goes upstream, and the paths an operation's state is read from.

use std::fmt;

use super::{OperationKind, TenantId};

/// The Graph API version a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// `/v1.0`
    V1_0,
    /// `/beta` (the only version with `deletedItems`)
    Beta,
}

impl ApiVersion {
    /// Both versions.
    #[cfg(test)]
    pub(crate) const ALL: [ApiVersion; 2] = [ApiVersion::V1_0, ApiVersion::Beta];

    /// The version segment as Graph documents it: `v1.0` or `beta`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1_0 => "v1.0",
            ApiVersion::Beta => "beta",
        }
    }

    /// A version segment in any ASCII case (`V1.0`, `BETA`); nothing else is a version.
    pub(crate) fn parse(segment: &str) -> Option<Self> {
        if segment.eq_ignore_ascii_case("v1.0") {
            Some(ApiVersion::V1_0)
        } else if segment.eq_ignore_ascii_case("beta") {
            Some(ApiVersion::Beta)
        } else {
            None
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A path in canonical form: every segment lower-case, keys as their own lower-case GUID
/// segment, `microsoft.graph.` prefixes stripped. The audit log stores its [`Display`](fmt::Display) form, and
/// approvals are bound to it, so one resource has exactly one canonical path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CanonicalPath {
    /// The API version (the first segment of the request path).
    pub(crate) version: ApiVersion,
    /// The segments after the version, e.g. `["policies", "crosstenantaccesspolicy", ...]`.
    pub(crate) segments: Vec<String>,
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.version)?;
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// Graph's documented spelling of every governed segment: what the SDKs send, what syncgate
/// sends upstream, and what the state paths below are written in.
const DOCUMENTED: &[&str] = &[
    "policies",
    "crossTenantAccessPolicy",
    "partners",
    "identitySynchronization",
    "deletedItems",
    "crossTenantPartners",
    "crossTenantSyncPolicyPartners",
    "restore",
    "templates",
    "multiTenantOrganizationIdentitySynchronization",
    "resetToDefaultSettings",
    "crossTenantIdentitySyncPolicy",
    "default",
];

/// The canonical path with Graph's documented casing (`crossTenantAccessPolicy`, ...), which is
/// what every SDK sends; keys stay lower-case GUIDs.
pub(crate) fn documented_path(path: &CanonicalPath) -> String {
    let mut out = format!("/{}", path.version.as_str());
    for segment in &path.segments {
        out.push('/');
        let documented = DOCUMENTED
            .iter()
            .find(|d| d.eq_ignore_ascii_case(segment))
            .copied()
            .unwrap_or(segment.as_str());
        out.push_str(documented);
    }
    out
}

/// Graph's spelling of the governed resources, for the state paths the pipeline GETs upstream.
const PARTNERS: &str = "policies/crossTenantAccessPolicy/partners";
const DELETED_PARTNERS: &str = "policies/deletedItems/crossTenantPartners";
const DELETED_SYNC_POLICIES: &str = "policies/deletedItems/crossTenantSyncPolicyPartners";
const TEMPLATE: &str =
    "policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization";

/// The partner's own document, `/{v}/policies/crossTenantAccessPolicy/partners/{k}`: what rules
/// about consent settings read (without `$expand`).
pub(crate) fn partner_path(version: ApiVersion, partner: &TenantId) -> String {
    format!("/{version}/{PARTNERS}/{partner}")
}

/// The path and query to GET upstream for the before/after state of a `kind` operation on
/// `partner`, in Graph's own spelling and with the request's API version:
///
/// - sync writes → `/{v}/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization`;
/// - partner writes → `/{v}/policies/crossTenantAccessPolicy/partners/{k}?$expand=identitySynchronization`
///   (the partner's sync policy is part of what a partner change can affect);
/// - [`PartnerRestore`](OperationKind::PartnerRestore) → the live partner, expanded (what
///   the restore brings back); [`SyncRestore`](OperationKind::SyncRestore) → the live sync policy;
/// - purges → the deleted item; [`DeletedPartnerSyncWrite`](OperationKind::DeletedPartnerSyncWrite)
///   → the deleted partner's `identitySynchronization`;
/// - template operations → the template.
///
/// `None` when the partner is not known (`PartnerCreate` before its body is read), for
/// [`LegacySyncPolicyWrite`](OperationKind::LegacySyncPolicyWrite) (always refused, never
/// read) and for [`SyncRead`](OperationKind::SyncRead) (nothing changes).
pub(crate) fn state_path(
    kind: OperationKind,
    version: ApiVersion,
    partner: Option<&TenantId>,
) -> Option<String> {
    let v = version;
    let path = match kind {
        OperationKind::SyncCreate | OperationKind::SyncUpdate | OperationKind::SyncDelete => {
            format!("/{v}/{PARTNERS}/{}/identitySynchronization", partner?)
        }
        OperationKind::PartnerCreate
        | OperationKind::PartnerUpdate
        | OperationKind::PartnerDelete
        | OperationKind::PartnerRestore => {
            format!(
                "{}?$expand=identitySynchronization",
                partner_path(v, partner?)
            )
        }
        OperationKind::SyncRestore => {
            format!("/{v}/{PARTNERS}/{}/identitySynchronization", partner?)
        }
        OperationKind::DeletedPartnerPurge => format!("/{v}/{DELETED_PARTNERS}/{}", partner?),
        OperationKind::DeletedSyncPurge => format!("/{v}/{DELETED_SYNC_POLICIES}/{}", partner?),
        OperationKind::DeletedPartnerSyncWrite => format!(
            "/{v}/{DELETED_PARTNERS}/{}/identitySynchronization",
            partner?
        ),
        OperationKind::TemplateUpdate | OperationKind::TemplateReset => {
            format!("/{v}/{TEMPLATE}")
        }
        OperationKind::LegacySyncPolicyWrite | OperationKind::SyncRead => return None,
    };
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_path_is_in_documented_spelling() {
        let k = TenantId::parse("9C5D131D-B1C3-4FC4-9E3F-C6557947D551").unwrap();
        for kind in OperationKind::ALL {
            for v in ApiVersion::ALL {
                let Some(path) = state_path(kind, v, Some(&k)) else {
                    continue;
                };
                let (path_only, _) = path.split_once('?').unwrap_or((&path, ""));
                let segments: Vec<String> = path_only
                    .split('/')
                    .skip(2)
                    .map(str::to_ascii_lowercase)
                    .collect();
                let canonical = CanonicalPath {
                    version: v,
                    segments,
                };
                assert_eq!(documented_path(&canonical), path_only, "{kind} {v}");
            }
        }
        assert_eq!(
            partner_path(ApiVersion::Beta, &k),
            "/beta/policies/crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551"
        );
    }
}
