//! Who may call: bearer token presence, readability, and permissions (§2.1, §5.2).
//!
//! Signatures are not checked — the emulator has no keys to check them with, and tests mint
//! unsigned tokens (`token::unsigned_jwt`). A token that carries neither `scp` nor `roles` is let
//! through for everything, so quick manual calls need no crafted claims; a token that carries
//! either is held to the documented permissions.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::odata::Failure;
use crate::graph_error::GraphError;
use crate::token::{self, TokenError};

/// Read-only or state-changing: decides which permissions suffice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Which permission family an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// Partners, sync policies, deleted items, the access policy.
    CrossTenantAccess,
    /// The MTO template, which the permissions map also grants to `MultiTenantOrganization.*`
    /// while its learn page lists `Policy.ReadWrite.CrossTenantAccess` (§2.1): both are accepted.
    MultiTenantTemplate,
}

const READ_WRITE: &str = "Policy.ReadWrite.CrossTenantAccess";
const READ_ALL: &str = "Policy.Read.All";
const MTO_READ: &str = "MultiTenantOrganization.Read.All";
const MTO_READ_WRITE: &str = "MultiTenantOrganization.ReadWrite.All";

/// The permissions a caller's token grants; `None` when it carries no `scp`/`roles` claim.
#[derive(Debug)]
pub(crate) struct Caller {
    permissions: Option<Vec<String>>,
}

/// The caller behind `Authorization`, or Graph's 401.
pub(crate) fn authenticate(headers: &HeaderMap) -> Result<Caller, Failure> {
    let token = token::bearer(headers).map_err(|_| unauthenticated("Access token is empty."))?;
    let claims = token::claims(token).map_err(|e| match e {
        TokenError::Missing => unauthenticated("Access token is empty."),
        TokenError::NotJwt | TokenError::BadPayload => {
            unauthenticated("CompactToken parsing failed with error code: 80049217")
        }
    })?;
    Ok(Caller {
        permissions: token::permissions(&claims),
    })
}

/// Whether the caller may perform an operation of this access in this area.
pub(crate) fn authorize(caller: &Caller, access: Access, area: Area) -> Result<(), GraphError> {
    let Some(granted) = &caller.permissions else {
        return Ok(());
    };
    let sufficient: &[&str] = match (area, access) {
        (Area::CrossTenantAccess, Access::Read) => &[READ_WRITE, READ_ALL],
        (Area::CrossTenantAccess, Access::Write) => &[READ_WRITE],
        (Area::MultiTenantTemplate, Access::Read) => {
            &[READ_WRITE, READ_ALL, MTO_READ, MTO_READ_WRITE]
        }
        (Area::MultiTenantTemplate, Access::Write) => &[READ_WRITE, MTO_READ_WRITE],
    };
    let allowed = granted
        .iter()
        .any(|g| sufficient.iter().any(|s| s.eq_ignore_ascii_case(g)));
    if allowed {
        Ok(())
    } else {
        Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ))
    }
}

/// Graph's 401, with the challenge clients use to find the authority.
fn unauthenticated(message: &str) -> Failure {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#,
        ),
    );
    Failure {
        error: GraphError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        ),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(claims: serde_json::Value) -> Caller {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", token::unsigned_jwt(&claims));
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        authenticate(&headers).unwrap()
    }

    #[test]
    fn read_all_reads_but_cannot_write() {
        let c = caller(json!({"scp": "Policy.Read.All"}));
        assert!(authorize(&c, Access::Read, Area::CrossTenantAccess).is_ok());
        let err = authorize(&c, Access::Write, Area::CrossTenantAccess).unwrap_err();
        assert_eq!(err.code, "Authorization_RequestDenied");
    }

    #[test]
    fn application_roles_count_like_scopes() {
        let c = caller(json!({"roles": ["Policy.ReadWrite.CrossTenantAccess"]}));
        assert!(authorize(&c, Access::Write, Area::CrossTenantAccess).is_ok());
        let c = caller(json!({"roles": ["MultiTenantOrganization.ReadWrite.All"]}));
        assert!(authorize(&c, Access::Write, Area::MultiTenantTemplate).is_ok());
        assert!(authorize(&c, Access::Read, Area::CrossTenantAccess).is_err());
    }

    #[test]
    fn tokens_without_permission_claims_may_do_anything() {
        let c = caller(json!({"oid": "x"}));
        assert!(authorize(&c, Access::Write, Area::CrossTenantAccess).is_ok());
    }

    #[test]
    fn missing_and_garbled_tokens_are_told_apart() {
        let failure = authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(failure.error.message, "Access token is empty.");
        assert!(failure.headers.contains_key(header::WWW_AUTHENTICATE));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer not-a-jwt".parse().unwrap());
        let failure = authenticate(&headers).unwrap_err();
        assert_eq!(
            failure.error.message,
            "CompactToken parsing failed with error code: 80049217"
        );
    }
}
