//! Target 2: the strict body reader, and the independent JSON oracle (serde_json, plus a walk
//! that refuses repeated member names) that the `$batch` target shares.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Finding, finding, lossy, report};
use crate::classify::{self, ApiVersion, BodyRule};

/// The Content-Types the body and batch targets choose from; the first three are JSON.
const BODY_CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("Application/JSON;charset=\"UTF8\""),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-16"),
];

/// One selector byte (rule = `s % 4`, version = `s / 4 % 2`, Content-Type = `s / 8 % 6`; so
/// `'0'`…`'7'` are every rule × version with `application/json`), then the body.
/// [`classify::parse_body`] never panics; whatever it accepts is one JSON object that serde_json
/// reads to the same value with no duplicate member names, that re-parses identically from its
/// serialisation, and that [`classify::check_body`] accepts unchanged.
pub fn body_reader(data: &[u8]) {
    report(check_body_reader(data));
}

/// [`body_reader`], returning the finding instead of panicking.
pub fn check_body_reader(data: &[u8]) -> Result<(), Finding> {
    let Some((&selector, body)) = data.split_first() else {
        return Ok(());
    };
    let rule = [
        BodyRule::Empty,
        BodyRule::Sync,
        BodyRule::Partner,
        BodyRule::Template,
    ][usize::from(selector % 4)];
    let version = if selector / 4 % 2 == 0 {
        ApiVersion::V1_0
    } else {
        ApiVersion::Beta
    };
    let content_index = usize::from(selector / 8) % BODY_CONTENT_TYPES.len();
    let content_type = BODY_CONTENT_TYPES[content_index];
    let about = || format!("{rule:?} {version} {content_type:?} {:?}", lossy(body));
    let value = match classify::parse_body(rule, version, content_type, body) {
        Err(_) => return Ok(()),
        Ok(None) if rule == BodyRule::Empty => {
            if body
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                return Ok(());
            }
            return Err(finding(
                "body-empty-rule-accepted-content",
                format!("{}: accepted as no body", about()),
            ));
        }
        Ok(None) => {
            return Err(finding(
                "body-missing-accepted",
                format!("{}: accepted as no body", about()),
            ));
        }
        Ok(Some(value)) => value,
    };
    if rule == BodyRule::Empty || content_index > 2 || !value.is_object() {
        return Err(finding(
            "body-accepted-wrongly",
            format!("{}: accepted as {value}", about()),
        ));
    }
    check_json_agrees(body, &value).map_err(|why| finding("body-json-disagrees", why))?;
    let serialised = serde_json::to_vec(&value).unwrap_or_default();
    match classify::parse_body(rule, version, content_type, &serialised) {
        Ok(Some(again)) if again == value => {}
        other => {
            // serde_json's default float parser is not correctly rounded: a float may re-parse
            // one unit in the last place away from the value it was serialised from.
            let class = if has_float(&value) {
                "body-not-reparsable/float"
            } else {
                "body-not-reparsable"
            };
            return Err(finding(
                class,
                format!(
                    "{}: accepted as {value}, but its serialisation re-parses as {other:?}",
                    about()
                ),
            ));
        }
    }
    match classify::check_body(rule, version, content_type, Some(&value)) {
        Ok(Some(checked)) if checked == value => Ok(()),
        other => Err(finding(
            "body-check-disagrees",
            format!(
                "{}: parse_body accepted {value}, check_body answered {other:?}",
                about()
            ),
        )),
    }
}

/// Whether a JSON value holds a number that is neither an i64 nor a u64.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => !(n.is_i64() || n.is_u64()),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(members) => members.values().any(has_float),
        _ => false,
    }
}

/// serde_json reads `bytes` as valid JSON, to `value`, and no object in it repeats a member name.
pub(super) fn check_json_agrees(bytes: &[u8], value: &Value) -> Result<(), String> {
    let independent: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("accepted {:?}, which serde_json refuses: {e}", lossy(bytes)))?;
    if &independent != value {
        return Err(format!(
            "accepted {:?} as {value}, serde_json reads {independent}",
            lossy(bytes)
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match NoDuplicates.deserialize(&mut deserializer) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "accepted {:?}, which repeats a member name",
            lossy(bytes)
        )),
        Err(e) => Err(format!(
            "accepted {:?}, which serde_json cannot walk: {e}",
            lossy(bytes)
        )),
    }
}

/// A serde visitor answering "does no object anywhere repeat a member name?".
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut unique = true;
        while let Some(item) = seq.next_element_seed(NoDuplicates)? {
            unique &= item;
        }
        Ok(unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = HashSet::new();
        let mut unique = true;
        while let Some(name) = map.next_key::<String>()? {
            unique &= seen.insert(name);
            unique &= map.next_value_seed(NoDuplicates)?;
        }
        Ok(unique)
    }
}
