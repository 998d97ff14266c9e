//! The strict JSON reader every governed body and `$batch` envelope goes through: exactly one
//! value, UTF-8 without a BOM, no duplicate member names at any depth, nothing after it, and a
//! budget of values and depth enforced while parsing (see the parent module for why each
//! leniency would be a parser differential).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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
