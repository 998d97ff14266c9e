//! Bearer tokens as Graph clients send them: JWTs whose claims syncgate reads but never verifies.
//!
//! Graph access tokens cannot be verified by third parties (their signing keys and audience are
//! Graph's), so claims decoded here describe who the caller *says* it is; the upstream's status says
//! whether Graph accepted the token. The token itself is never logged or stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use serde_json::{Map, Value};

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not a JWT (header.payload.signature)")]
    NotJwt,
    #[error("the token payload is not base64url-encoded JSON")]
    BadPayload,
}

/// The bearer token in `Authorization`, if the header holds one (`Bearer` is case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, TokenError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(TokenError::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(TokenError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// The claims of a JWT, without checking its signature.
pub(crate) fn claims(token: &str) -> Result<Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::BadPayload)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::BadPayload),
    }
}

/// Permissions a token grants: delegated `scp` (space-separated) and application `roles` (array).
/// `None` when the token carries neither claim.
pub(crate) fn permissions(claims: &Map<String, Value>) -> Option<Vec<String>> {
    let scp = claims.get("scp").and_then(Value::as_str);
    let roles = claims.get("roles").and_then(Value::as_array);
    if scp.is_none() && roles.is_none() {
        return None;
    }
    let mut out: Vec<String> = scp
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    out.extend(
        roles
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned),
    );
    Some(out)
}

/// An unsigned JWT with these claims (`alg: none`), for tests, the demo and the benchmark.
pub fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"none"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.sig")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_round_trip_through_an_unsigned_jwt() {
        let token = unsigned_jwt(&json!({"oid": "o", "scp": "Policy.Read.All User.Read"}));
        let c = claims(&token).unwrap();
        assert_eq!(c["oid"], "o");
        assert_eq!(
            permissions(&c).unwrap(),
            vec!["Policy.Read.All".to_string(), "User.Read".to_string()]
        );
    }

    #[test]
    fn bearer_requires_the_scheme_and_a_value() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Err(TokenError::Missing));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), Err(TokenError::Missing));
        h.insert("authorization", "bearer   ".parse().unwrap());
        assert_eq!(bearer(&h), Err(TokenError::Missing));
        h.insert("authorization", "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&h), Ok("a.b.c"));
    }

    #[test]
    fn garbage_tokens_are_refused() {
        assert_eq!(claims("abc"), Err(TokenError::NotJwt));
        assert_eq!(claims("a.b.c.d"), Err(TokenError::NotJwt));
        assert_eq!(claims("a.!!!.c"), Err(TokenError::BadPayload));
        let not_object = URL_SAFE_NO_PAD.encode("[1]");
        assert_eq!(
            claims(&format!("a.{not_object}.c")),
            Err(TokenError::BadPayload)
        );
    }

    #[test]
    fn tokens_without_scp_or_roles_have_no_permission_list() {
        assert_eq!(permissions(&Map::new()), None);
        let c = json!({"roles": ["Policy.ReadWrite.CrossTenantAccess"]});
        assert_eq!(
            permissions(c.as_object().unwrap()).unwrap(),
            vec!["Policy.ReadWrite.CrossTenantAccess".to_string()]
        );
    }
}
