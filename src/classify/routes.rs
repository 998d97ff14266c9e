//! The route table: which canonical paths and methods under the governed subtrees are governed
//! operations, which are forwarded, and which are refused. It is the single source of these
//! decisions; `docs/governed-routes.md` explains them for operators.
//!
//! It covers every item of graph-reference.md §8 points 1–6. The rule for anything not listed:
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

use super::canonical::expands_sync;
use super::{
    ApiVersion, BodyRule, CanonicalPath, Classification, Governed, OperationKind, Refusal,
    TenantId, codes, is_read,
};

/// A row's verdict, before it is dressed as a [`Classification`].
#[derive(Debug)]
enum Route {
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

/// Classify a request whose path is canonical and under a governed subtree.
pub(crate) fn route(method: &Method, path: CanonicalPath, query: Option<&str>) -> Classification {
    let segments: Vec<&str> = path.segments.iter().map(String::as_str).collect();
    let verdict = match segments.as_slice() {
        ["policies", "crosstenantidentitysyncpolicy", rest @ ..] => legacy(rest),
        ["policies", "crosstenantaccesspolicy", rest @ ..] => access_policy(rest, method, query),
        ["policies", "deleteditems", rest @ ..] => deleted_items(path.version, rest, method, query),
        ["policies"] => Route::Unknown("the policy root is not a governed route"),
        _ => Route::Unknown("the path is not a known cross-tenant route"),
    };
    let read = is_read(method);
    let governed = |kind, partner, body| Governed {
        kind,
        method: method.clone(),
        path: path.clone(),
        partner,
        body,
    };
    match verdict {
        // Reads of anything that is not sync content, and the documented ungoverned writes.
        Route::Forward => Classification::Forward,
        Route::SyncRead(partner) if read => {
            Classification::SyncRead(governed(OperationKind::SyncRead, partner, BodyRule::Empty))
        }
        _ if read => Classification::Forward,
        Route::Write(kind, partner, body) => {
            Classification::Governed(governed(kind, partner, body))
        }
        Route::Legacy(partner) => {
            let body = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                BodyRule::Sync
            } else {
                BodyRule::Empty
            };
            Classification::Refuse(
                Refusal::new(
                    http::StatusCode::FORBIDDEN,
                    codes::LEGACY_PATH_REFUSED,
                    "The /policies/crossTenantIdentitySyncPolicy API never shipped; syncgate \
                     refuses every write to it. Use PUT or PATCH \
                     /policies/crossTenantAccessPolicy/partners/{id}/identitySynchronization.",
                )
                .about(governed(
                    OperationKind::LegacySyncPolicyWrite,
                    partner,
                    body,
                )),
            )
        }
        // A write the table has no row for; a sync-read row reached by a write is one too.
        Route::Unknown(reason) => unknown(method, &path, reason),
        Route::SyncRead(_) => unknown(method, &path, "the route is read-only"),
    }
}

/// The refusal of a write under a governed subtree that the table does not govern.
fn unknown(method: &Method, path: &CanonicalPath, reason: &str) -> Classification {
    let mut refusal = Refusal::bad_request(
        codes::UNKNOWN_GOVERNED_PATH,
        format!(
            "Unknown governed path: {method} {path} ({reason}). syncgate refuses writes under \
             the cross-tenant policy paths that it does not govern."
        ),
    );
    refusal.canonical = Some(path.to_string());
    Classification::Refuse(refusal)
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
fn access_policy(rest: &[&str], method: &Method, query: Option<&str>) -> Route {
    let read = is_read(method);
    match rest {
        [] if read => expanded_read(query, None),
        [] => Route::Unknown("writes to crossTenantAccessPolicy itself are not governed routes"),
        ["default", ..] => Route::Forward,
        ["partners"] => match *method {
            _ if read => expanded_read(query, None),
            Method::POST => Route::Write(OperationKind::PartnerCreate, None, BodyRule::Partner),
            _ => Route::Unknown("the partners collection takes only POST"),
        },
        ["partners", k, nav @ ..] => {
            let Some(k) = key(k) else {
                return Route::Unknown("no partner key");
            };
            partner(k, nav, method, query)
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
fn partner(k: TenantId, nav: &[&str], method: &Method, query: Option<&str>) -> Route {
    let read = is_read(method);
    match nav {
        [] => match *method {
            _ if read => expanded_read(query, Some(k)),
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
    query: Option<&str>,
) -> Route {
    let read = is_read(method);
    if version == ApiVersion::V1_0 {
        return Route::Unknown("v1.0 has no policies/deletedItems");
    }
    match rest {
        ["crosstenantpartners"] if read => expanded_read(query, None),
        ["crosstenantpartners", k, nav @ ..] => {
            let Some(k) = key(k) else {
                return Route::Unknown("no partner key");
            };
            deleted_partner(k, nav, method, query)
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
fn deleted_partner(k: TenantId, nav: &[&str], method: &Method, query: Option<&str>) -> Route {
    let read = is_read(method);
    match (nav, method.clone()) {
        ([], _) if read => expanded_read(query, Some(k)),
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
fn expanded_read(query: Option<&str>, partner: Option<TenantId>) -> Route {
    if expands_sync(query) {
        Route::SyncRead(partner)
    } else {
        Route::Forward
    }
}
