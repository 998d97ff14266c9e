//! Strict JSON for governed bodies: the body syncgate decides on must be the body Graph acts on.
//!
//! Every leniency is a parser differential waiting to be used: a duplicate key (syncgate reads
//! the first, Graph the last), a mis-cased name (syncgate ignores `IsSyncAllowed`, a
//! case-insensitive reader honours it), a BOM, a UTF-16 charset, trailing data. So the rules are
//! narrow: UTF-8, no BOM, one JSON object, no duplicate names at any depth, property names exactly
//! as Graph spells them (docs/graph.md §4), values of the declared JSON type. Graph itself
//! refuses unknown and mis-cased properties with 400 `Request_BadRequest` "Invalid property 'x'."
//! (§5.2, §9), so refusing them costs callers nothing Graph would have accepted.
//!
//! The schema here is syncgate's own reading of the reference, written independently of the
//! emulator's (`emulator/schema.rs`): each catches the other's mistakes.

use serde_json::{Map, Value};

use super::{Refusal, codes};
use crate::graph::{ApiVersion, BodyRule, TenantId};

mod strict;

#[cfg(test)]
use strict::{JsonLimits, MAX_JSON_BYTES, parse_strict_within};
pub(crate) use strict::{StrictError, parse_strict};

/// Graph's message for a body it cannot read (§5.2); syncgate appends the precise reason.
const UNREADABLE: &str = "Unable to read JSON request payload. Please ensure Content-Type header \
                          is set and payload is of valid JSON format.";

/// The JSON type a property's value must have.
#[derive(Debug)]
enum Shape {
    Boolean,
    String,
    /// Read-only properties a body may only repeat as `null` (`deletedDateTime`).
    NullOnly,
    /// A complex type whose members the reference gives: checked member by member.
    Closed(&'static [Property]),
    /// A complex type whose members the reference does not give: any object.
    Open,
    /// A flags enum: comma-separated members.
    Flags(&'static [&'static str]),
}

/// One property of a Graph type.
#[derive(Debug)]
struct Property {
    name: &'static str,
    shape: Shape,
    nullable: bool,
    beta_only: bool,
}

const fn prop(name: &'static str, shape: Shape) -> Property {
    Property {
        name,
        shape,
        nullable: true,
        beta_only: false,
    }
}

const fn not_null(mut p: Property) -> Property {
    p.nullable = false;
    p
}

const fn beta(mut p: Property) -> Property {
    p.beta_only = true;
    p
}

/// `crossTenantUserSyncInbound` (§4.1).
const USER_SYNC_INBOUND: &[Property] = &[prop("isSyncAllowed", Shape::Boolean)];

/// `crossTenantGroupSyncInbound` (§4.2): `isSyncAllowed` is `Nullable="false"` in the beta CSDL.
const GROUP_SYNC_INBOUND: &[Property] = &[not_null(prop("isSyncAllowed", Shape::Boolean))];

/// `crossTenantIdentitySyncPolicyPartner` (§4.1 v1.0, §4.2 beta additions).
const SYNC: &[Property] = &[
    not_null(prop("tenantId", Shape::String)),
    prop("displayName", Shape::String),
    prop("userSyncInbound", Shape::Closed(USER_SYNC_INBOUND)),
    beta(prop("groupSyncInbound", Shape::Closed(GROUP_SYNC_INBOUND))),
    beta(prop("externalCloudAuthorizedApplicationId", Shape::String)),
    beta(prop("deletedDateTime", Shape::NullOnly)),
];

/// `crossTenantAccessPolicyInboundTrust`.
const INBOUND_TRUST: &[Property] = &[
    prop("isMfaAccepted", Shape::Boolean),
    prop("isCompliantDeviceAccepted", Shape::Boolean),
    prop("isHybridAzureADJoinedDeviceAccepted", Shape::Boolean),
];

/// `inboundOutboundPolicyConfiguration` (§4.3), also the shape of
/// `crossCloudMeetingConfiguration` in real responses (§4.3 sample).
const INBOUND_OUTBOUND: &[Property] = &[
    prop("inboundAllowed", Shape::Boolean),
    prop("outboundAllowed", Shape::Boolean),
];

/// `crossTenantAccessPolicyConfigurationPartner` (§4.3), with the undeclared properties real
/// responses carry (§3.4), so a GET → PATCH round trip passes.
const PARTNER: &[Property] = &[
    not_null(prop("tenantId", Shape::String)),
    prop("displayName", Shape::String),
    prop("inboundTrust", Shape::Closed(INBOUND_TRUST)),
    prop(
        "automaticUserConsentSettings",
        Shape::Closed(INBOUND_OUTBOUND),
    ),
    prop("b2bCollaborationInbound", Shape::Open),
    prop("b2bCollaborationOutbound", Shape::Open),
    prop("b2bDirectConnectInbound", Shape::Open),
    prop("b2bDirectConnectOutbound", Shape::Open),
    prop("tenantRestrictions", Shape::Open),
    prop(
        "crossCloudMeetingConfiguration",
        Shape::Closed(INBOUND_OUTBOUND),
    ),
    prop("protectedContentSharing", Shape::Open),
    prop("isServiceProvider", Shape::Boolean),
    prop("isInMultiTenantOrganization", Shape::Boolean),
    prop("m365CollaborationInbound", Shape::Open),
    prop("m365CollaborationOutbound", Shape::Open),
    prop("appServiceConnectInbound", Shape::Open),
    prop("identitySynchronization", Shape::Closed(SYNC)),
    beta(prop("blockServiceProviderOutboundAccess", Shape::Boolean)),
    beta(prop("deletedDateTime", Shape::NullOnly)),
];

/// `templateApplicationLevel` members (§2.5).
const TEMPLATE_APPLICATION_LEVELS: &[&str] = &[
    "none",
    "newPartners",
    "existingPartners",
    "unknownFutureValue",
];

/// `multiTenantOrganizationIdentitySyncPolicyTemplate` (§2.5).
const TEMPLATE: &[Property] = &[
    prop("id", Shape::String),
    not_null(prop(
        "templateApplicationLevel",
        Shape::Flags(TEMPLATE_APPLICATION_LEVELS),
    )),
    prop("userSyncInbound", Shape::Closed(USER_SYNC_INBOUND)),
];

/// Read and check the body of a governed request.
///
/// `Ok(None)` for [`BodyRule::Empty`] with no body (or JSON whitespace only); `Ok(Some(object))`
/// for the other rules. Refuses: a body where none is allowed (`SyncgateUnexpectedBody`); a
/// missing or non-JSON Content-Type, a non-UTF-8 charset, an empty body, invalid UTF-8, a BOM,
/// malformed JSON, comments, trailing data, duplicate names at any depth, a top level that is
/// not an object, wrong JSON types (`BadRequest`); unknown, mis-cased or version-inappropriate
/// property names (`Request_BadRequest` "Invalid property 'x'."). `@odata.*` annotations (string
/// values) are allowed at the top level; nested objects allow only `@odata.type`.
pub(crate) fn parse_body(
    rule: BodyRule,
    version: ApiVersion,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Option<serde_json::Value>, Refusal> {
    let blank = bytes.iter().all(|b| is_json_whitespace(*b));
    if rule == BodyRule::Empty {
        return if blank {
            Ok(None)
        } else {
            Err(unexpected_body())
        };
    }
    check_content_type(content_type)?;
    if blank {
        return Err(unreadable("the body is empty; a JSON object is required"));
    }
    let value = parse_strict(bytes).map_err(|problem| match problem {
        StrictError::TooLarge { .. } => too_large(&problem),
        StrictError::Invalid(reason) => unreadable(&reason),
    })?;
    check_value(rule, version, &value)?;
    Ok(Some(value))
}

/// Check a body that is already parsed (a `$batch` sub-request's, which the envelope's strict
/// parse has already checked for duplicates): the same rules as [`parse_body`] apply. A JSON
/// `null` body counts as no body.
pub(crate) fn check_body(
    rule: BodyRule,
    version: ApiVersion,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> Result<Option<Value>, Refusal> {
    let body = body.filter(|b| !b.is_null());
    match (rule, body) {
        (BodyRule::Empty, None) => Ok(None),
        (BodyRule::Empty, Some(_)) => Err(unexpected_body()),
        (_, None) => {
            check_content_type(content_type)?;
            Err(unreadable("the body is empty; a JSON object is required"))
        }
        (_, Some(value)) => {
            check_content_type(content_type)?;
            check_value(rule, version, value)?;
            Ok(Some(value.clone()))
        }
    }
}

fn check_value(rule: BodyRule, version: ApiVersion, value: &Value) -> Result<(), Refusal> {
    let schema = match rule {
        BodyRule::Empty => return Err(unexpected_body()),
        BodyRule::Sync => SYNC,
        BodyRule::Partner => PARTNER,
        BodyRule::Template => TEMPLATE,
    };
    let Value::Object(members) = value else {
        return Err(bad_request(format!(
            "The body must be a JSON object, not {}.",
            json_type(value)
        )));
    };
    check_members(members, schema, version, "")
}

/// The partner key of a `POST …/partners` body: its `tenantId`, which must be a GUID.
pub(crate) fn partner_from_body(body: &Value) -> Result<TenantId, Refusal> {
    match body.get("tenantId") {
        Some(Value::String(text)) => TenantId::parse(text).map_err(|_| {
            bad_request(format!(
                "The partner's tenantId '{text}' is not a GUID in the 36-character hyphenated form."
            ))
        }),
        Some(other) => Err(bad_request(format!(
            "The partner's tenantId must be a string, not {}.",
            json_type(other)
        ))),
        None => Err(bad_request(
            "Creating a partner requires its tenantId in the body.",
        )),
    }
}

/// Refuse a body whose `tenantId` names another tenant than `partner` (the URL key, or the key
/// of a partner being created): Graph's handling of a mismatch is undocumented (§3.4), so
/// syncgate never lets the body and the URL disagree. Checks the top level and, for partner
/// bodies, the embedded `identitySynchronization`.
pub(crate) fn check_body_tenant(body: &Value, partner: &TenantId) -> Result<(), Refusal> {
    let mut found = vec![("tenantId", body.get("tenantId"))];
    if let Some(sync) = body.get("identitySynchronization") {
        found.push(("identitySynchronization.tenantId", sync.get("tenantId")));
    }
    for (name, value) in found {
        let Some(value) = value else { continue };
        let same = value
            .as_str()
            .and_then(|text| TenantId::parse(text).ok())
            .is_some_and(|tenant| &tenant == partner);
        if !same {
            return Err(bad_request(format!(
                "The body's {name} ({value}) does not match the partner {partner} the request \
                 addresses."
            )));
        }
    }
    Ok(())
}

/// Check a Content-Type for JSON: `application/json`, any parameters, and a `charset` (if any)
/// of UTF-8. A different charset would make Graph decode other characters than syncgate did.
pub(crate) fn check_content_type(content_type: Option<&str>) -> Result<(), Refusal> {
    let Some(content_type) = content_type else {
        return Err(unreadable("the Content-Type header is missing"));
    };
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(unreadable(&format!(
            "the Content-Type '{content_type}' is not application/json"
        )));
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
                return Err(unreadable(&format!("the charset '{charset}' is not UTF-8")));
            }
        }
    }
    Ok(())
}

fn check_members(
    members: &Map<String, Value>,
    schema: &'static [Property],
    version: ApiVersion,
    parent: &str,
) -> Result<(), Refusal> {
    for (name, value) in members {
        let path = if parent.is_empty() {
            name.clone()
        } else {
            format!("{parent}.{name}")
        };
        if name.starts_with("@odata.") {
            // Below the top level only `@odata.type` is plain metadata: `@odata.id` and friends
            // in a nested object can make it an entity reference (a deep link to another
            // partner's policy), which syncgate will not second-guess.
            if !parent.is_empty() && name != "@odata.type" {
                return Err(invalid_property(name));
            }
            if !value.is_string() {
                return Err(bad_request(format!(
                    "The annotation '{path}' must be a string, not {}.",
                    json_type(value)
                )));
            }
            continue;
        }
        let property = schema
            .iter()
            .find(|p| p.name == name && (version == ApiVersion::Beta || !p.beta_only))
            .ok_or_else(|| invalid_property(name))?;
        check_property(property, value, version, &path)?;
    }
    Ok(())
}

fn check_property(
    property: &Property,
    value: &Value,
    version: ApiVersion,
    path: &str,
) -> Result<(), Refusal> {
    if value.is_null() {
        return if property.nullable {
            Ok(())
        } else {
            Err(bad_request(format!(
                "The property '{path}' cannot be null."
            )))
        };
    }
    let expected = match (&property.shape, value) {
        (Shape::Boolean, Value::Bool(_)) | (Shape::String, Value::String(_)) => return Ok(()),
        (Shape::Open, Value::Object(_)) => return Ok(()),
        (Shape::Closed(schema), Value::Object(members)) => {
            return check_members(members, schema, version, path);
        }
        (Shape::Flags(members), Value::String(text)) => return check_flags(members, text, path),
        (Shape::Boolean, _) => "a boolean or null",
        (Shape::String, _) => "a string or null",
        (Shape::NullOnly, _) => "null (it is read-only)",
        (Shape::Closed(_) | Shape::Open, _) => "an object or null",
        (Shape::Flags(_), _) => "a string of comma-separated flags",
    };
    Err(bad_request(format!(
        "The property '{path}' must be {expected}, not {}.",
        json_type(value)
    )))
}

fn check_flags(members: &[&str], text: &str, path: &str) -> Result<(), Refusal> {
    for flag in text.split(',') {
        let flag = flag.trim();
        if !members.contains(&flag) {
            return Err(bad_request(format!(
                "The property '{path}' has the value '{text}'; '{flag}' is not one of {}.",
                members.join(", ")
            )));
        }
    }
    Ok(())
}

/// How a JSON value's type reads in an error message ("a string", "an object", ...).
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn invalid_property(name: &str) -> Refusal {
    Refusal::bad_request(
        codes::INVALID_PROPERTY,
        format!("Invalid property '{name}'."),
    )
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::bad_request(codes::BAD_REQUEST, message)
}

fn unreadable(reason: &str) -> Refusal {
    bad_request(format!("{UNREADABLE} ({reason})"))
}

fn too_large(problem: &StrictError) -> Refusal {
    Refusal::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "SyncgateBodyTooLarge",
        format!("The request body is too large: {problem}."),
    )
}

fn unexpected_body() -> Refusal {
    Refusal::bad_request(
        codes::UNEXPECTED_BODY,
        "This request takes no body; syncgate refuses one rather than forward content it does \
         not govern.",
    )
}

#[cfg(test)]
mod tests;
