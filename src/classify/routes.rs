//! The classifier's side of the route table (`crate::graph::routes`, where the table and its
//! documentation live): a row's verdict dressed as a [`Classification`], with the refusals'
//! codes and messages.

use http::Method;

use super::canonical::expands_sync;
use super::{Classification, Governed, Refusal, codes};
use crate::graph::routes::{Route, is_read, lookup};
use crate::graph::{BodyRule, CanonicalPath, OperationKind};

/// Classify a request whose path is canonical and under a governed subtree.
pub(crate) fn route(method: &Method, path: CanonicalPath, query: Option<&str>) -> Classification {
    let verdict = lookup(method, &path, &|| expands_sync(query));
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
