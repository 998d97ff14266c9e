//! Strict JSON for governed bodies: the body syncgate decides on must be the body Graph acts on.
//!
//! Every leniency is a parser differential waiting to be used: a duplicate key (syncgate reads
//! the first, Graph the last), a mis-cased name (syncgate ignores `IsSyncAllowed`, a
//! case-insensitive reader honours it), a BOM, a UTF-16 charset, trailing data. So the rules are
//! narrow: UTF-8, no BOM, one JSON object, no duplicate names at any depth, property names exactly
//! as Graph spells them (graph-reference §4), values of the declared JSON type. Graph itself
//! refuses unknown and mis-cased properties with 400 `Request_BadRequest` "Invalid property 'x'."
//! (§5.2, §9), so refusing them costs callers nothing Graph would have accepted.
//!
//! The schema here is syncgate's own reading of the reference, written independently of the
//! emulator's (`emulator/schema.rs`): each catches the other's mistakes.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Refusal, codes};
use crate::graph::{ApiVersion, BodyRule, TenantId};

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
pub fn parse_body(
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
pub fn check_body(
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
pub fn partner_from_body(body: &Value) -> Result<TenantId, Refusal> {
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
pub fn check_body_tenant(body: &Value, partner: &TenantId) -> Result<(), Refusal> {
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

/// What one strict parse may build. Enforced *while* parsing, so a hostile document is refused
/// after at most `max_values` values and `max_depth` levels, never after building the whole tree
/// (a 20 MiB `[0,0,…]` would otherwise become a Vec of ten million `Value`s, ~40 bytes each,
/// before anything looked at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JsonLimits {
    /// Largest document read. Configured body caps (`audit.max_body`,
    /// `audit.max_batch_body`) are enforced earlier, on the stream, and may not exceed this.
    pub(crate) max_bytes: usize,
    /// Deepest nesting of arrays and objects. Graph's documented bodies nest 3 levels; a
    /// `$batch` envelope adds 3 more.
    pub(crate) max_depth: usize,
    /// Most values (scalars, arrays and objects, each counted once) in one document. A governed
    /// body has a few dozen; twenty batch sub-requests with ordinary bodies a few thousand.
    pub(crate) max_values: usize,
}

impl JsonLimits {
    pub(crate) const DEFAULT: JsonLimits = JsonLimits {
        max_bytes: MAX_JSON_BYTES,
        max_depth: 32,
        max_values: 10_000,
    };
}

/// The largest JSON document syncgate parses, whatever the configuration says.
pub(crate) const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Why [`parse_strict`] refused a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StrictError {
    /// More bytes than [`JsonLimits::max_bytes`]: refused before reading any of it (413).
    #[error("the JSON document is {size} bytes; syncgate reads at most {max}")]
    TooLarge { size: usize, max: usize },
    /// Not one strict JSON value, or more nesting or values than the limits allow (400). The
    /// text says where and what.
    #[error("{0}")]
    Invalid(String),
}

impl From<StrictError> for String {
    fn from(error: StrictError) -> String {
        error.to_string()
    }
}

/// Parse `bytes` as exactly one JSON value within [`JsonLimits::DEFAULT`]: UTF-8 without a BOM,
/// no duplicate object member names at any depth, nothing but whitespace after it. The error is
/// a precise, human-readable reason (where, and what).
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, StrictError> {
    parse_strict_within(bytes, JsonLimits::DEFAULT)
}

/// [`parse_strict`] with other limits.
pub(crate) fn parse_strict_within(bytes: &[u8], limits: JsonLimits) -> Result<Value, StrictError> {
    if bytes.len() > limits.max_bytes {
        return Err(StrictError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        StrictError::Invalid(format!(
            "the body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    if text.starts_with('\u{feff}') {
        return Err(StrictError::Invalid(
            "the body starts with a byte-order mark".into(),
        ));
    }
    let budget = Budget {
        limits,
        values: Cell::new(0),
        exceeded: Cell::new(false),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = Strict {
        budget: &budget,
        at: At::Root,
        depth: 0,
    };
    let value = seed.deserialize(&mut deserializer).map_err(|e| {
        StrictError::Invalid(if budget.exceeded.get() {
            e.to_string()
        } else {
            format!("invalid JSON: {e}")
        })
    })?;
    deserializer.end().map_err(|e| {
        StrictError::Invalid(format!(
            "unexpected data after the JSON value, starting at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}

/// The counters one parse shares across all its values.
struct Budget {
    limits: JsonLimits,
    /// Values begun so far.
    values: Cell<usize>,
    /// A limit (not the syntax) ended the parse: the message needs no "invalid JSON".
    exceeded: Cell<bool>,
}

impl Budget {
    fn exceed<E: de::Error>(&self, message: String) -> E {
        self.exceeded.set(true);
        E::custom(message)
    }
}

/// Where a value is (`$.userSyncInbound`, `$.a[0]`), as a chain of borrowed steps: written out
/// only when an error names it, so a well-formed document costs no path strings.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Index(&'a At<'a>, usize),
    Member(&'a At<'a>, &'a str),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => f.write_str("$"),
            At::Index(parent, index) => write!(f, "{parent}[{index}]"),
            At::Member(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// A [`Value`] deserializer that refuses duplicate member names, naming the member and where it
/// is, and stops as soon as the document has more values or deeper nesting than its budget.
struct Strict<'a> {
    budget: &'a Budget,
    at: At<'a>,
    /// Arrays and objects enclosing this value.
    depth: usize,
}

impl Strict<'_> {
    /// The depth of the array or object this value opens, refused beyond the limit.
    fn open<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        let max = self.budget.limits.max_depth;
        if depth > max {
            return Err(self.budget.exceed(format!(
                "the JSON nests deeper than {max} levels (at {})",
                self.at
            )));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let values = self.budget.values.get() + 1;
        let max = self.budget.limits.max_values;
        if values > max {
            return Err(self.budget.exceed(format!(
                "the JSON has more than {max} values (at {})",
                self.at
            )));
        }
        self.budget.values.set(values);
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the number at {} is not finite", self.at)))
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.open()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict {
            budget: self.budget,
            at: At::Index(&self.at, items.len()),
            depth,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let depth = self.open()?;
        let mut members = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "duplicate member '{name}' in the object at {}",
                    self.at
                )));
            }
            let value = access.next_value_seed(Strict {
                budget: self.budget,
                at: At::Member(&self.at, &name),
                depth,
            })?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests;
