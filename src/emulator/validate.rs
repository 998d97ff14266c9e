//! Strict request bodies, as Graph's cross-tenant APIs read them.
//!
//! Graph refuses unknown and mis-cased property names on these APIs (`Request_BadRequest`
//! "Invalid property 'b2BCollaborationInbound'.", §9), and its OData reader refuses wrong value
//! types and duplicate property names. The emulator is at least as strict, so that a proxy which
//! lets a malformed body through is caught by the tests rather than by the real service.
//! `@odata.*` annotations are accepted and dropped: SDKs send `@odata.type`.

use http::{HeaderMap, StatusCode, header};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::path::Version;
use super::schema::{Access, Kind, Property, StructuredType};
use crate::graph_error::GraphError;

/// Graph's answer to an unreadable body or a missing/non-JSON Content-Type (§5.2).
pub(crate) fn unreadable() -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
    )
}

pub(crate) fn invalid_property(name: &str) -> GraphError {
    GraphError::new(
        StatusCode::BAD_REQUEST,
        "Request_BadRequest",
        format!("Invalid property '{name}'."),
    )
}

/// Whether a Content-Type names JSON (`application/json`, any parameters, any case).
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The JSON document of a body-carrying write: the Content-Type must say JSON and the bytes
/// must be one JSON value with no duplicate property names.
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, GraphError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !is_json(content_type) {
        return Err(unreadable());
    }
    parse_strict(body)
}

/// Parse one JSON value, refusing duplicate property names (which serde_json would silently
/// collapse to the last one — a classic parser differential between a proxy and its upstream).
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, GraphError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictValue::deserialize(&mut deserializer).and_then(|v| {
        deserializer.end()?;
        Ok(v.0)
    });
    parsed.map_err(|error| {
        if !error.is_data() {
            return unreadable();
        }
        // A data error can only be ours; drop serde_json's " at line … column …" suffix.
        let text = error.to_string();
        let name = text
            .split_once(DUPLICATE_MARK)
            .map(|(_, rest)| rest.rsplit_once(" at line ").map_or(rest, |(n, _)| n))
            .unwrap_or_default();
        GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!(
                "Multiple properties with the name '{name}' were detected in an entry or a complex value. In OData, duplicate property names are not allowed."
            ),
        )
    })
}

const DUPLICATE_MARK: &str = "duplicate property: ";

/// A `serde_json::Value` whose objects had no duplicate keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE_MARK}{key}")));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Check a body against an entity type: it must be an object, every member a property of `ty`
/// in `version` (names case-sensitive) or an `@odata.` annotation, every value of the declared
/// kind. Returns the members with annotations dropped and enum values in their declared case.
/// `prefix` names where this object sits (e.g. `identitySynchronization.`) for messages.
pub(crate) fn check_entity(
    ty: &'static StructuredType,
    value: Value,
    version: Version,
    prefix: &str,
) -> Result<Map<String, Value>, GraphError> {
    match value {
        Value::Object(members) => check_members(ty, members, version, prefix),
        _ => Err(unreadable()),
    }
}

fn check_members(
    ty: &'static StructuredType,
    members: Map<String, Value>,
    version: Version,
    prefix: &str,
) -> Result<Map<String, Value>, GraphError> {
    let mut out = Map::new();
    for (name, value) in members {
        if is_annotation(ty, &name, version) {
            continue;
        }
        let property = ty
            .property(&name, version)
            .ok_or_else(|| invalid_property(&name))?;
        let path = format!("{prefix}{name}");
        out.insert(name, check_property(property, value, version, &path)?);
    }
    Ok(out)
}

/// `@odata.type`, or `prop@odata.type` on a property this type has.
fn is_annotation(ty: &StructuredType, name: &str, version: Version) -> bool {
    match name.split_once('@') {
        Some(("", term)) => term.starts_with("odata."),
        Some((prop, term)) => term.starts_with("odata.") && ty.property(prop, version).is_some(),
        None => false,
    }
}

fn check_property(
    property: &Property,
    value: Value,
    version: Version,
    path: &str,
) -> Result<Value, GraphError> {
    if value.is_null() {
        if property.nullable || property.access == Access::ReadOnly {
            return Ok(Value::Null);
        }
        let ty = property.kind.type_name();
        return Err(bad_request(format!(
            "A null value was found for the property named '{path}', which has the expected type '{ty}[Nullable=False]'. The expected type '{ty}[Nullable=False]' does not allow null values."
        )));
    }
    check_kind(&property.kind, value, version, path)
}

fn check_kind(
    kind: &Kind,
    value: Value,
    version: Version,
    path: &str,
) -> Result<Value, GraphError> {
    let mismatch = |value: &Value| {
        let literal = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        bad_request(format!(
            "Cannot convert the literal '{literal}' to the expected type '{}' of property '{path}'.",
            kind.type_name()
        ))
    };
    match kind {
        Kind::Boolean if value.is_boolean() => Ok(value),
        Kind::String if value.is_string() => Ok(value),
        Kind::DateTimeOffset => match &value {
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => Ok(value),
            _ => Err(mismatch(&value)),
        },
        Kind::Enum(e) => match value.as_str().and_then(|s| member(e.members, s)) {
            Some(canonical) => Ok(Value::String(canonical.to_owned())),
            None => Err(mismatch(&value)),
        },
        Kind::Flags(e) => {
            let members: Option<Vec<&str>> = value
                .as_str()
                .map(|s| s.split(',').map(|m| member(e.members, m.trim())).collect())
                .unwrap_or(None);
            match members {
                Some(list) if !list.is_empty() => Ok(Value::String(list.join(","))),
                _ => Err(mismatch(&value)),
            }
        }
        Kind::Complex(ty) => match value {
            Value::Object(members) => {
                check_members(ty, members, version, &format!("{path}.")).map(Value::Object)
            }
            other => Err(mismatch(&other)),
        },
        Kind::OpenComplex if value.is_object() => Ok(value),
        Kind::Collection(inner) => match value {
            Value::Array(items) => items
                .into_iter()
                .map(|item| check_kind(inner, item, version, path))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Err(mismatch(&other)),
        },
        _ => Err(mismatch(&value)),
    }
}

/// An enum member, matched case-insensitively and returned as declared.
fn member(members: &'static [&'static str], text: &str) -> Option<&'static str> {
    members
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(text))
}

fn bad_request(message: String) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::schema::{PARTNER, SYNC_POLICY, TEMPLATE};
    use serde_json::json;

    fn check(ty: &'static StructuredType, v: Value, version: Version) -> Result<Value, GraphError> {
        check_entity(ty, v, version, "").map(Value::Object)
    }

    #[test]
    fn known_properties_pass_and_annotations_are_dropped() {
        let body = json!({
            "@odata.type": "#microsoft.graph.crossTenantIdentitySyncPolicyPartner",
            "displayName": "Fabrikam",
            "userSyncInbound": {"@odata.type": "#microsoft.graph.crossTenantUserSyncInbound", "isSyncAllowed": true},
            "userSyncInbound@odata.type": "#microsoft.graph.crossTenantUserSyncInbound"
        });
        assert_eq!(
            check(&SYNC_POLICY, body, Version::V1).unwrap(),
            json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}})
        );
    }

    #[test]
    fn unknown_or_mis_cased_properties_are_invalid_at_any_depth() {
        for body in [
            json!({"DisplayName": "x"}),
            json!({"userSyncInbound": {"IsSyncAllowed": true}}),
            json!({"@microsoft.graph.conflictBehavior": "x"}),
            json!({"nope@odata.type": "x"}),
        ] {
            let err = check(&SYNC_POLICY, body.clone(), Version::Beta).unwrap_err();
            assert_eq!(err.code, "Request_BadRequest", "{body}");
            assert!(
                err.message.starts_with("Invalid property '"),
                "{}",
                err.message
            );
        }
        let err = check(
            &PARTNER,
            json!({"inboundTrust": {"isMfaAccepted": true, "isMFAAccepted": true}}),
            Version::V1,
        )
        .unwrap_err();
        assert_eq!(err.message, "Invalid property 'isMFAAccepted'.");
    }

    #[test]
    fn beta_only_properties_are_invalid_in_v1() {
        for body in [
            json!({"groupSyncInbound": {"isSyncAllowed": true}}),
            json!({"externalCloudAuthorizedApplicationId": "x"}),
        ] {
            let err = check(&SYNC_POLICY, body.clone(), Version::V1).unwrap_err();
            assert_eq!(err.code, "Request_BadRequest");
            assert!(check(&SYNC_POLICY, body, Version::Beta).is_ok());
        }
        let err = check(
            &PARTNER,
            json!({"blockServiceProviderOutboundAccess": true}),
            Version::V1,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Invalid property 'blockServiceProviderOutboundAccess'."
        );
    }

    #[test]
    fn wrong_value_types_are_bad_requests_naming_the_property() {
        let err = check(
            &SYNC_POLICY,
            json!({"userSyncInbound": {"isSyncAllowed": "yes"}}),
            Version::V1,
        )
        .unwrap_err();
        assert_eq!(err.code, "BadRequest");
        assert_eq!(
            err.message,
            "Cannot convert the literal 'yes' to the expected type 'Edm.Boolean' of property 'userSyncInbound.isSyncAllowed'."
        );
        for body in [
            json!({"userSyncInbound": true}),
            json!({"displayName": 5}),
            json!({"userSyncInbound": [1]}),
        ] {
            assert_eq!(
                check(&SYNC_POLICY, body, Version::V1).unwrap_err().code,
                "BadRequest"
            );
        }
        let err = check(
            &SYNC_POLICY,
            json!({"groupSyncInbound": {"isSyncAllowed": null}}),
            Version::Beta,
        )
        .unwrap_err();
        assert!(
            err.message.contains("does not allow null"),
            "{}",
            err.message
        );
    }

    #[test]
    fn enums_and_flags_are_checked_and_canonicalised() {
        let ok = check(
            &TEMPLATE,
            json!({"templateApplicationLevel": "NewPartners, existingPartners"}),
            Version::V1,
        )
        .unwrap();
        assert_eq!(
            ok["templateApplicationLevel"],
            "newPartners,existingPartners"
        );
        for bad in [
            "",
            "everyone",
            "newPartners,,",
            "newPartners;existingPartners",
        ] {
            assert!(
                check(
                    &TEMPLATE,
                    json!({"templateApplicationLevel": bad}),
                    Version::V1
                )
                .is_err(),
                "{bad}"
            );
        }
        let err = check(
            &PARTNER,
            json!({"b2bCollaborationInbound": {"usersAndGroups": {"accessType": "maybe"}}}),
            Version::V1,
        )
        .unwrap_err();
        assert_eq!(err.code, "BadRequest");
        let ok = check(
            &PARTNER,
            json!({"b2bCollaborationInbound": {"usersAndGroups": {"accessType": "Blocked", "targets": [{"target": "AllUsers", "targetType": "user"}]}}}),
            Version::V1,
        )
        .unwrap();
        assert_eq!(
            ok["b2bCollaborationInbound"]["usersAndGroups"]["accessType"],
            "blocked"
        );
    }

    #[test]
    fn bodies_must_be_json_objects_without_duplicate_names() {
        assert_eq!(
            check(&SYNC_POLICY, json!([]), Version::V1)
                .unwrap_err()
                .message,
            unreadable().message
        );
        assert_eq!(
            parse_strict(b"{").unwrap_err().message,
            unreadable().message
        );
        assert_eq!(
            parse_strict(b"{} x").unwrap_err().message,
            unreadable().message
        );
        assert_eq!(parse_strict(b"").unwrap_err().message, unreadable().message);
        let err = parse_strict(br#"{"a":{"displayName":1,"displayName":2}}"#).unwrap_err();
        assert_eq!(err.code, "BadRequest");
        assert!(
            err.message
                .starts_with("Multiple properties with the name 'displayName' were detected"),
            "{}",
            err.message
        );
        assert_eq!(
            parse_strict(br#"{"a":[1,{"b":null}]}"#).unwrap(),
            json!({"a":[1,{"b":null}]})
        );
    }

    #[test]
    fn content_type_must_be_json() {
        let mut headers = HeaderMap::new();
        assert!(json_body(&headers, b"{}").is_err());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(json_body(&headers, b"{}").is_err());
        headers.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(json_body(&headers, b"{}").is_ok());
    }
}
