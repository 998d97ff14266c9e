//! Read: the governed request's body, parsed strictly, and the partner it is about.
//!
//! This runs before anything else touches the upstream, so what is recorded and decided on is
//! exactly what is forwarded (docs/design.md "Forward only what was checked"). Every partner
//! POST/PATCH is governed, not only those touching sync: the partner document is one recorded
//! resource, and a write to it that went unrecorded would show up as drift on the next governed
//! change.

use http::header::CONTENT_TYPE;
use serde_json::Value;

use super::{Exit, Operation};
use crate::classify::{self, Governed, OperationKind, Refusal};
use crate::proxy::ProxyError;

/// Parse the body, bind the partner, and find where the state is read. On success the
/// operation holds the body and the state path, and the bound request is returned.
pub(super) fn read(op: &mut Operation) -> Result<Governed, Exit> {
    let Some(mut governed) = op.governed.clone() else {
        return Err(Exit::refused(no_partner()));
    };
    let content_type = op.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let body = op.received.body.as_deref().unwrap_or_default();
    let parsed = classify::parse_body(governed.body, governed.path.version, content_type, body)
        .and_then(|json| bind_partner(&mut governed, json));
    // The partner a POST body named belongs on the record even when the body is refused later.
    op.governed = Some(governed.clone());
    op.body = parsed.map_err(Exit::refused)?;
    op.state_path = Some(
        governed
            .state_path()
            .ok_or_else(|| Exit::refused(no_partner()))?,
    );
    Ok(governed)
}

fn no_partner() -> ProxyError {
    ProxyError::NoPartner("The request names no partner tenant.")
}

/// For a partner POST the key is in the body; for sync writes a `tenantId` in the body must name
/// the partner in the URL. The rule tools call this too, so a rule test binds a case's partner
/// exactly as the proxy would.
pub(crate) fn bind_partner(
    governed: &mut Governed,
    json: Option<Value>,
) -> Result<Option<Value>, Refusal> {
    if let Some(body) = &json {
        match governed.kind {
            OperationKind::PartnerCreate => {
                // The key comes from the body, and an embedded identitySynchronization must
                // name the same tenant, as it must name the URL's on every other write.
                let partner = classify::partner_from_body(body)?;
                classify::check_body_tenant(body, &partner)?;
                governed.partner = Some(partner);
            }
            _ => {
                if let Some(partner) = &governed.partner {
                    classify::check_body_tenant(body, partner)?;
                }
            }
        }
    }
    if governed.kind == OperationKind::PartnerCreate && governed.partner.is_none() {
        return Err(Refusal::bad_request(
            classify::codes::BAD_REQUEST,
            "Creating a partner needs a body with its tenantId.",
        ));
    }
    Ok(json)
}
