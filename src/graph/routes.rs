//! The route table, forward and reverse: which canonical paths and methods under the governed subtrees are governed
//! operations, which are forwarded, and which are refused. It is the single source of these
//! decisions; `docs/governed-routes.md` explains them for operators.
//!
//! It covers every item of docs/graph.md §8 points 1–6. The rule for anything not listed:
//! reads (GET, HEAD) are forwarded, writes are refused as "unknown governed path" (default
//! deny). Exactly one row forwards writes, and says why. Rows, in the order of the match below:
//!
//! | canonical path (after `/{v}/policies`) | method | decision |
//! |---|---|---|
//! | `crosstenantidentitysyncpolicy[/…]` | any write | refused 403 (§2.6: never shipped; match and deny) |
//! | `crosstenantaccesspolicy` | write | refused: a PATCH here sets `allowedCloudEndpoints`, the precondition of cross-cloud sync, and could deep-update `partners`; no operation kind models it yet |
//! | `crosstenantaccesspolicy/default[/…]` | write | **forwarded** (the only forwarded write): the default configuration has no `identitySynchronization`, its `automaticUserConsentSettings` is read-only (always false), it has no navigation to a partner, and nothing in it reaches a partner's sync policy |
//! | `…/partners` | POST | `PartnerCreate` (every partner write is governed: the partner document is one recorded resource) |
//! | `…/partners/{k}` | PATCH / DELETE | `PartnerUpdate` (same rule) / `PartnerDelete` |
//! | `…/partners/{k}/identitysynchronization` | PUT / PATCH / DELETE | `SyncCreate` / `SyncUpdate` / `SyncDelete` |
//! | `…/partners/{k}/identitysynchronization/…` | write | refused (property paths such as `…/userSyncInbound` are writes to the sync policy) |
//! | `…/partners/{k}/m365capabilities[/…]`, `…/serviceproviderconstraints[/…]` | write | refused: navigations of the partner that syncgate has no schema for, so it can neither check their bodies strictly nor know what they change on the partner; a write under a partner is governed or refused, never forwarded |
//! | `…/partners/{k}/…` (property paths, `$ref`, any other navigation) | write | refused (`PUT …/automaticUserConsentSettings` would bypass the partner rule) |
//! | `…/templates/multitenantorganizationidentitysynchronization` | PATCH | `TemplateUpdate`; PUT/DELETE refused (documented verb is PATCH) |
//! | `…/multitenantorganizationidentitysynchronization/resettodefaultsettings` | POST | `TemplateReset` |
//! | `…/templates/multitenantorganizationpartnerconfiguration[/…]` | write | refused: it carries `automaticUserConsentSettings`, which MTO applies to partners (an indirect sync change with no operation kind yet) |
//! | `deleteditems[/…]` in v1.0 | write | refused: v1.0 has no `deletedItems` (§1) |
//! | beta `deleteditems/crosstenantpartners/{k}/restore` | POST | `PartnerRestore` |
//! | beta `deleteditems/crosstenantsyncpolicypartners/{k}/restore` | POST | `SyncRestore` |
//! | beta `deleteditems/crosstenantpartners/{k}/identitysynchronization` | PUT / PATCH / DELETE | `DeletedPartnerSyncWrite` (D9) |
//! | beta `deleteditems/crosstenantpartners/{k}/identitysynchronization/restore` | POST | `SyncRestore` (D9) |
//! | beta `deleteditems/crosstenantpartners/{k}` | DELETE | `DeletedPartnerPurge` (D7) |
//! | beta `deleteditems/crosstenantsyncpolicypartners/{k}` | DELETE | `DeletedSyncPurge` (D8) |
//! | beta `deleteditems/…` anything else (POST/PUT on collections and items, D10) | write | refused |
//! | `/policies` itself, casts (`policies/policyroot/…`) | write | refused: a deep update of the root could reach the subtree |
//!
//! Reads that return sync content are [`Classification::SyncRead`]: `…/identitysynchronization`
//! (live or deleted) and anything below it, partners (live or deleted) with
//! `$expand=identitySynchronization` (or `*`), and deleted sync policies. Other reads are
//! forwarded.

use http::Method;

use super::{ApiVersion, BodyRule, CanonicalPath, OperationKind, TenantId};

/// Whether the request's query expands `identitySynchronization` (the classifier reads queries;
/// asked only for reads of partners, where it matters).
pub(crate) type Expands<'a> = &'a dyn Fn() -> bool;

/// GET and HEAD are reads; every other method (including unknown ones and lower-case spellings,
/// which some servers accept as their upper-case equivalents) is a write.
pub(crate) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// A row's verdict; the classifier dresses it as a `Classification`.
#[derive(Debug)]
pub(crate) enum Route {
    /// A governed write.
    Write(OperationKind, Option<TenantId>, BodyRule),
    /// A read returning sync content.
    SyncRead(Option<TenantId>),
    /// Not governed: forwarded for any method. Only rows documented as forwarded writes
    /// return it; reads of non-sync content are forwarded whatever their row says.
    Forward,
    /// Under `/policies/crossTenantIdentitySyncPolicy` (refused for writes).
    Legacy(Option<TenantId>),
    /// A write the table does not know (or a read of something that is not sync content).
    Unknown(&'static str),
}

/// The row `method` on `path` (canonical, under a governed subtree) falls in.
pub(crate) fn lookup(method: &Method, path: &CanonicalPath, expands: Expands<'_>) -> Route {
    let segments: Vec<&str> = path.segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["policies", "crosstenantidentitysyncpolicy", rest @ ..] => legacy(rest),
        ["policies", "crosstenantaccesspolicy", rest @ ..] => access_policy(rest, method, expands),
        ["policies", "deleteditems", rest @ ..] => {
            deleted_items(path.version, rest, method, expands)
        }
        ["policies"] => Route::Unknown("the policy root is not a governed route"),
        _ => Route::Unknown("the path is not a known cross-tenant route"),
    }
}

fn key(segment: &str) -> Option<TenantId> {
    TenantId::parse(segment).ok()
}

/// `/policies/crossTenantIdentitySyncPolicy[/partners/{k}[/...]]` (§2.6).
fn legacy(rest: &[&str]) -> Route {
    let partner = match rest {
        ["partners", k, ..] => key(k),
        _ => None,
    };
    Route::Legacy(partner)
}

/// `/policies/crossTenantAccessPolicy/...`
fn access_policy(rest: &[&str], method: &Method, expands: Expands<'_>) -> Route {
    let read = is_read(method);
    match rest {
        [] if read => expanded_read(expands, None),
        [] => Route::Unknown("writes to crossTenantAccessPolicy itself are not governed routes"),
        ["default", ..] => Route::Forward,
        ["partners"] => match *method {
            _ if read => expanded_read(expands, None),
            Method::POST => Route::Write(OperationKind::PartnerCreate, None, BodyRule::Partner),
            _ => Route::Unknown("the partners collection takes only POST"),
        },
        ["partners", k, nav @ ..] => {
            let Some(k) = key(k) else {
                return Route::Unknown("no partner key");
            };
            partner(k, nav, method, expands)
        }
        [
            "templates",
            "multitenantorganizationidentitysynchronization",
        ] => match *method {
            _ if read => Route::Forward,
            Method::PATCH => Route::Write(OperationKind::TemplateUpdate, None, BodyRule::Template),
            _ => Route::Unknown("the sync template takes only PATCH"),
        },
        [
            "templates",
            "multitenantorganizationidentitysynchronization",
            "resettodefaultsettings",
        ] => match *method {
            Method::POST => Route::Write(OperationKind::TemplateReset, None, BodyRule::Empty),
            _ => Route::Unknown("resetToDefaultSettings is an action (POST)"),
        },
        [
            "templates",
            "multitenantorganizationpartnerconfiguration",
            ..,
        ] => {
            Route::Unknown("the MTO partner template sets automaticUserConsentSettings on partners")
        }
        _ => Route::Unknown("not a governed crossTenantAccessPolicy route"),
    }
}

/// `/policies/crossTenantAccessPolicy/partners/{k}/...`
fn partner(k: TenantId, nav: &[&str], method: &Method, expands: Expands<'_>) -> Route {
    let read = is_read(method);
    match nav {
        [] => match *method {
            _ if read => expanded_read(expands, Some(k)),
            Method::PATCH => Route::Write(OperationKind::PartnerUpdate, Some(k), BodyRule::Partner),
            Method::DELETE => Route::Write(OperationKind::PartnerDelete, Some(k), BodyRule::Empty),
            _ => Route::Unknown("a partner takes PATCH and DELETE"),
        },
        ["identitysynchronization"] => match *method {
            _ if read => Route::SyncRead(Some(k)),
            Method::PUT => Route::Write(OperationKind::SyncCreate, Some(k), BodyRule::Sync),
            Method::PATCH => Route::Write(OperationKind::SyncUpdate, Some(k), BodyRule::Sync),
            Method::DELETE => Route::Write(OperationKind::SyncDelete, Some(k), BodyRule::Empty),
            _ => Route::Unknown("identitySynchronization takes PUT, PATCH and DELETE"),
        },
        ["identitysynchronization", ..] if read => Route::SyncRead(Some(k)),
        ["identitysynchronization", ..] => {
            Route::Unknown("writes below identitySynchronization are not governed routes")
        }
        ["m365capabilities" | "serviceproviderconstraints", ..] => Route::Unknown(
            "writes to a partner's m365Capabilities and serviceProviderConstraints are refused: \
             syncgate has no schema to check their bodies against, and every write under a \
             partner is governed or refused",
        ),
        _ => Route::Unknown(
            "not a governed partner route: every write under a partner is governed or refused",
        ),
    }
}

/// `/policies/deletedItems/...` (beta only, §2.4).
fn deleted_items(
    version: ApiVersion,
    rest: &[&str],
    method: &Method,
    expands: Expands<'_>,
) -> Route {
    let read = is_read(method);
    if version == ApiVersion::V1_0 {
        return Route::Unknown("v1.0 has no policies/deletedItems");
    }
    match rest {
        ["crosstenantpartners"] if read => expanded_read(expands, None),
        ["crosstenantpartners", k, nav @ ..] => {
            let Some(k) = key(k) else {
                return Route::Unknown("no partner key");
            };
            deleted_partner(k, nav, method, expands)
        }
        ["crosstenantsyncpolicypartners"] if read => Route::SyncRead(None),
        ["crosstenantsyncpolicypartners", k, nav @ ..] => {
            let Some(k) = key(k) else {
                return Route::Unknown("no partner key");
            };
            match (nav, method.clone()) {
                ([], _) if read => Route::SyncRead(Some(k)),
                ([], Method::DELETE) => {
                    Route::Write(OperationKind::DeletedSyncPurge, Some(k), BodyRule::Empty)
                }
                (["restore"], Method::POST) => {
                    Route::Write(OperationKind::SyncRestore, Some(k), BodyRule::Empty)
                }
                _ => Route::Unknown("not a governed deleted sync policy route"),
            }
        }
        _ => Route::Unknown("POST and PUT on deletedItems collections and items are refused"),
    }
}

/// `/policies/deletedItems/crossTenantPartners/{k}/...`
fn deleted_partner(k: TenantId, nav: &[&str], method: &Method, expands: Expands<'_>) -> Route {
    let read = is_read(method);
    match (nav, method.clone()) {
        ([], _) if read => expanded_read(expands, Some(k)),
        ([], Method::DELETE) => {
            Route::Write(OperationKind::DeletedPartnerPurge, Some(k), BodyRule::Empty)
        }
        (["restore"], Method::POST) => {
            Route::Write(OperationKind::PartnerRestore, Some(k), BodyRule::Empty)
        }
        (["identitysynchronization", ..], _) if read => Route::SyncRead(Some(k)),
        (["identitysynchronization"], Method::PUT | Method::PATCH) => Route::Write(
            OperationKind::DeletedPartnerSyncWrite,
            Some(k),
            BodyRule::Sync,
        ),
        (["identitysynchronization"], Method::DELETE) => Route::Write(
            OperationKind::DeletedPartnerSyncWrite,
            Some(k),
            BodyRule::Empty,
        ),
        (["identitysynchronization", "restore"], Method::POST) => {
            Route::Write(OperationKind::SyncRestore, Some(k), BodyRule::Empty)
        }
        _ => Route::Unknown("not a governed deleted partner route"),
    }
}

/// A read of partners: sync content only when `identitySynchronization` is expanded.
fn expanded_read(expands: Expands<'_>, partner: Option<TenantId>) -> Route {
    if expands() {
        Route::SyncRead(partner)
    } else {
        Route::Forward
    }
}

/// The reverse of the table: the canonical path of a `kind` operation on `partner` in
/// `version`, the row [`lookup`] maps back to that kind (with the kind's documented method).
/// `None` when the kind needs a partner and none is given. Deleted-item kinds exist only in
/// beta; built for v1.0 the path is one the table refuses, as Graph would.
pub(crate) fn canonical_path(
    kind: OperationKind,
    version: ApiVersion,
    partner: Option<&TenantId>,
) -> Option<CanonicalPath> {
    use OperationKind::*;
    let key = partner.map(|k| k.as_str());
    let access = ["policies", "crosstenantaccesspolicy"];
    let deleted = ["policies", "deleteditems"];
    let template = [
        "policies",
        "crosstenantaccesspolicy",
        "templates",
        "multitenantorganizationidentitysynchronization",
    ];
    let tail: Vec<&str> = match kind {
        SyncCreate | SyncUpdate | SyncDelete | SyncRead => {
            [&access[..], &["partners", key?, "identitysynchronization"]].concat()
        }
        PartnerCreate => [&access[..], &["partners"]].concat(),
        PartnerUpdate | PartnerDelete => [&access[..], &["partners", key?]].concat(),
        PartnerRestore => [&deleted[..], &["crosstenantpartners", key?, "restore"]].concat(),
        SyncRestore => [
            &deleted[..],
            &["crosstenantsyncpolicypartners", key?, "restore"],
        ]
        .concat(),
        DeletedPartnerPurge => [&deleted[..], &["crosstenantpartners", key?]].concat(),
        DeletedSyncPurge => [&deleted[..], &["crosstenantsyncpolicypartners", key?]].concat(),
        DeletedPartnerSyncWrite => [
            &deleted[..],
            &["crosstenantpartners", key?, "identitysynchronization"],
        ]
        .concat(),
        TemplateUpdate => template.to_vec(),
        TemplateReset => [&template[..], &["resettodefaultsettings"]].concat(),
        LegacySyncPolicyWrite => [
            "policies",
            "crosstenantidentitysyncpolicy",
            "partners",
            key?,
        ]
        .to_vec(),
    };
    Some(CanonicalPath {
        version,
        segments: tail.into_iter().map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The method Graph documents for each kind (one of them, where several map to it).
    fn method_of(kind: OperationKind) -> Method {
        use OperationKind::*;
        match kind {
            SyncCreate => Method::PUT,
            SyncUpdate | PartnerUpdate | TemplateUpdate | DeletedPartnerSyncWrite => Method::PATCH,
            SyncDelete | PartnerDelete | DeletedPartnerPurge | DeletedSyncPurge => Method::DELETE,
            LegacySyncPolicyWrite => Method::PATCH,
            PartnerCreate | PartnerRestore | SyncRestore | TemplateReset => Method::POST,
            SyncRead => Method::GET,
        }
    }

    #[test]
    fn the_reverse_lookup_leads_back_to_each_kind() {
        let k = TenantId::parse("9c5d131d-b1c3-4fc4-9e3f-c6557947d551").unwrap();
        for kind in OperationKind::ALL {
            let deleted_items = kind.as_str().starts_with("deleted")
                || matches!(
                    kind,
                    OperationKind::PartnerRestore | OperationKind::SyncRestore
                );
            for version in ApiVersion::ALL {
                let path = canonical_path(kind, version, Some(&k)).unwrap();
                let route = lookup(&method_of(kind), &path, &|| false);
                match route {
                    Route::Write(found, partner, _) => {
                        assert!(!(deleted_items && version == ApiVersion::V1_0), "{kind}");
                        assert_eq!(found, kind, "{path}");
                        let keyed = !matches!(
                            kind,
                            OperationKind::PartnerCreate
                                | OperationKind::TemplateUpdate
                                | OperationKind::TemplateReset
                        );
                        assert_eq!(partner.as_ref(), keyed.then_some(&k), "{path}");
                    }
                    Route::SyncRead(partner) => {
                        assert_eq!(kind, OperationKind::SyncRead);
                        assert_eq!(partner, Some(k.clone()));
                    }
                    Route::Legacy(partner) => {
                        assert_eq!(kind, OperationKind::LegacySyncPolicyWrite);
                        assert_eq!(partner, Some(k.clone()));
                    }
                    Route::Unknown(_) => {
                        assert!(
                            deleted_items && version == ApiVersion::V1_0,
                            "{kind} {path}"
                        )
                    }
                    Route::Forward => panic!("{kind} {path} is forwarded"),
                }
            }
        }
        let needs_key = canonical_path(OperationKind::SyncUpdate, ApiVersion::V1_0, None);
        assert_eq!(needs_key, None);
        let template = canonical_path(OperationKind::TemplateReset, ApiVersion::Beta, None);
        assert_eq!(
            template.unwrap().to_string(),
            "/beta/policies/crosstenantaccesspolicy/templates/\
             multitenantorganizationidentitysynchronization/resettodefaultsettings"
        );
    }
}
