//! A case's request, as the proxy would see it: classified by the proxy's own route table, its
//! body checked and its partner bound as the proxy does.

use http::{HeaderMap, Method};
use serde_json::Value;

use super::case::RawCase;
use crate::classify::{self, ApiVersion, Classification, Governed, OperationKind, TenantId};
use crate::proxy::bind_partner;

/// The request a case describes, as the proxy classified and checked it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CaseRequest {
    /// The change as the proxy's classifier sees it, its partner bound as the proxy binds it.
    pub(super) governed: Governed,
    /// The body, checked as the proxy checks bodies.
    pub(super) body: Option<Value>,
}

/// The case's request as the proxy sees it: its method and path classified by the proxy's own
/// route table (it must be a governed change of the case's operation), its body checked as the
/// proxy checks bodies, and its partner bound by the proxy's own [`bind_partner`] (from the
/// path, or from the body's `tenantId` for a partner create).
pub(super) fn case_request(raw: &RawCase) -> Result<CaseRequest, String> {
    let kind = OperationKind::parse(&raw.operation).ok_or_else(|| {
        let names: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
        format!(
            "unknown operation {:?} (one of: {})",
            raw.operation,
            names.join(", ")
        )
    })?;
    let partner = raw
        .partner
        .as_deref()
        .map(|p| {
            TenantId::parse(p)
                .map_err(|_| format!("partner {p:?} is not a GUID (36-character hyphenated form)"))
        })
        .transpose()?;
    let version = match raw.api_version.as_deref() {
        None => default_version(kind),
        Some(v) => ApiVersion::parse(v)
            .ok_or_else(|| format!("api_version {v:?} is neither \"v1.0\" nor \"beta\""))?,
    };
    let method = raw
        .method
        .clone()
        .unwrap_or_else(|| default_method(kind, raw.body.is_some()).to_owned());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method {method:?} is not an HTTP method"))?;
    let path = match &raw.canonical_path {
        Some(path) => path.clone(),
        None => default_path(kind, version, partner.as_ref())?,
    };
    let mut governed = governed(&method, &path, kind)?;
    if raw.api_version.is_some() && governed.path.version != version {
        return Err(format!(
            "api_version is {version} but the path is in {}",
            governed.path.version
        ));
    }
    let refused = |r: classify::Refusal| {
        format!(
            "the proxy refuses this body before the rules decide: {}",
            r.message
        )
    };
    let body = classify::check_body(
        governed.body,
        governed.path.version,
        Some("application/json"),
        raw.body.as_ref(),
    )
    .and_then(|body| bind_partner(&mut governed, body))
    .map_err(refused)?;
    match (&partner, &governed.partner) {
        (Some(given), Some(bound)) if given != bound => Err(format!(
            "partner {given} is not the partner the request is about ({bound})"
        )),
        (Some(_), None) => Err(format!(
            "a {kind} operation is about no partner; remove `partner`"
        )),
        _ => Ok(CaseRequest { governed, body }),
    }
}

/// `method path` classified by the proxy's route table: a governed change of `kind`, or why not.
pub(super) fn governed(
    method: &Method,
    path: &str,
    kind: OperationKind,
) -> Result<Governed, String> {
    let governed = match classify::classify(method, path, None, &HeaderMap::new()) {
        Classification::Governed(governed) => governed,
        Classification::Refuse(refusal) => {
            return Err(format!(
                "the proxy refuses {method} {path} before the rules decide: {}",
                refusal.message
            ));
        }
        Classification::SyncRead(_) => {
            return Err(format!(
                "{method} {path} is a read; rules decide only governed writes"
            ));
        }
        Classification::Forward | Classification::Batch(_) => {
            return Err(format!(
                "{method} {path} is not a governed change: the proxy forwards it without the rules"
            ));
        }
    };
    if governed.kind != kind {
        return Err(format!(
            "{method} {path} is a {} operation, not {kind}",
            governed.kind
        ));
    }
    Ok(governed)
}

/// `beta` for the deleted-items operations (v1.0 has no `deletedItems`), `v1.0` otherwise.
fn default_version(kind: OperationKind) -> ApiVersion {
    use OperationKind::*;
    match kind {
        PartnerRestore
        | SyncRestore
        | DeletedPartnerPurge
        | DeletedSyncPurge
        | DeletedPartnerSyncWrite => ApiVersion::Beta,
        _ => ApiVersion::V1_0,
    }
}

/// The method of an operation as Graph documents it.
fn default_method(kind: OperationKind, has_body: bool) -> &'static str {
    use OperationKind::*;
    match kind {
        SyncCreate => "PUT",
        SyncUpdate | PartnerUpdate | TemplateUpdate | LegacySyncPolicyWrite => "PATCH",
        SyncDelete | PartnerDelete | DeletedPartnerPurge | DeletedSyncPurge => "DELETE",
        PartnerCreate | PartnerRestore | SyncRestore | TemplateReset => "POST",
        DeletedPartnerSyncWrite if has_body => "PATCH",
        DeletedPartnerSyncWrite => "DELETE",
        SyncRead => "GET",
    }
}

/// The canonical path of an operation on `partner` in `version` (classification checks it).
fn default_path(
    kind: OperationKind,
    version: ApiVersion,
    partner: Option<&TenantId>,
) -> Result<String, String> {
    crate::graph::routes::canonical_path(kind, version, partner)
        .map(|path| path.to_string())
        .ok_or_else(|| format!("a {kind} operation needs `partner` (the tenant id)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    #[test]
    fn every_operation_the_rules_decide_has_a_default_request_the_proxy_classifies_as_it() {
        use OperationKind::*;
        let partner = TenantId::parse(PARTNER).unwrap();
        for kind in OperationKind::ALL {
            if matches!(kind, LegacySyncPolicyWrite | SyncRead) {
                continue;
            }
            for has_body in [false, true] {
                let method = Method::from_bytes(default_method(kind, has_body).as_bytes()).unwrap();
                let path = default_path(kind, default_version(kind), Some(&partner)).unwrap();
                match classify::classify(&method, &path, None, &HeaderMap::new()) {
                    Classification::Governed(g) => assert_eq!(g.kind, kind, "{method} {path}"),
                    other => panic!("{kind}: {method} {path} classifies as {other:?}"),
                }
            }
        }
    }
}
