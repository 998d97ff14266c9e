//! The typed fields of an event whose stored form is plain text or a plain object.
//!
//! Each type serialises to exactly the JSON that the untyped field held before issue 8 (the
//! hash chain covers those bytes; `store/log_v1.rs` proves a log written then still verifies and
//! re-seals identically), and each reads back every value the code then could store: what it
//! does not recognise it keeps as text (`Other`) rather than failing, so an old log always reads.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::graph::{ApiVersion, OperationKind};

/// An event's `operation`: a governed operation's kind, or one of the two names refusals use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A request the route table names (`sync_update`, `partner_delete`, ...).
    Kind(OperationKind),
    /// `unknown`: a refusal of a request that was refused before it could be classified (a
    /// non-canonical URL, a method override, ...).
    Unknown,
    /// `refusal_summary`: a `denied` event standing for many refusals from one client.
    RefusalSummary,
    /// Any other text, as stored (`""` in events recorded before the classifier named every
    /// operation). Never written by this version.
    Other(String),
}

impl Operation {
    /// The stored name.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Operation::Kind(kind) => kind.as_str(),
            Operation::Unknown => "unknown",
            Operation::RefusalSummary => "refusal_summary",
            Operation::Other(text) => text,
        }
    }

    /// The operation kind, when the event is about one.
    pub(crate) fn kind(&self) -> Option<OperationKind> {
        match self {
            Operation::Kind(kind) => Some(*kind),
            _ => None,
        }
    }
}

impl From<OperationKind> for Operation {
    fn from(kind: OperationKind) -> Self {
        Operation::Kind(kind)
    }
}

/// Reads a stored name; never fails (see [`Operation::Other`]).
impl From<&str> for Operation {
    fn from(name: &str) -> Self {
        match name {
            "unknown" => Operation::Unknown,
            "refusal_summary" => Operation::RefusalSummary,
            _ => OperationKind::parse(name)
                .map(Operation::Kind)
                .unwrap_or_else(|| Operation::Other(name.to_owned())),
        }
    }
}

impl PartialEq<str> for Operation {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Operation {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Operation::from(text.as_str()))
    }
}

/// An event's `api_version`: the request's Graph version, or none (stored as `""`: a refusal
/// before the path was read, such as an `unknown` operation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum EventApiVersion {
    /// No version (`""`).
    #[default]
    Unnamed,
    /// `v1.0` or `beta`.
    Graph(ApiVersion),
    /// Any other text, as stored. Never written by this version.
    Other(String),
}

impl EventApiVersion {
    /// The stored text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            EventApiVersion::Unnamed => "",
            EventApiVersion::Graph(v) => v.as_str(),
            EventApiVersion::Other(text) => text,
        }
    }

    /// The Graph version, when there is one.
    #[cfg(test)]
    pub(crate) fn version(&self) -> Option<ApiVersion> {
        match self {
            EventApiVersion::Graph(v) => Some(*v),
            _ => None,
        }
    }
}

impl From<ApiVersion> for EventApiVersion {
    fn from(v: ApiVersion) -> Self {
        EventApiVersion::Graph(v)
    }
}

/// Reads stored text; never fails. Only the exact spellings `v1.0` and `beta` (what this code
/// writes) are Graph versions, so every value re-serialises to itself.
impl From<&str> for EventApiVersion {
    fn from(text: &str) -> Self {
        match text {
            "" => EventApiVersion::Unnamed,
            "v1.0" => EventApiVersion::Graph(ApiVersion::V1_0),
            "beta" => EventApiVersion::Graph(ApiVersion::Beta),
            other => EventApiVersion::Other(other.to_owned()),
        }
    }
}

impl PartialEq<&str> for EventApiVersion {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for EventApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventApiVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventApiVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(EventApiVersion::from(text.as_str()))
    }
}

/// One rule's verdict as the event records it (`rule_results`): the rules module's
/// `RuleResult`, with its mode and action kept as the text stored, so a result recorded by a
/// version with other modes still reads. `rules::RuleResult::from_outcome` turns it back into a
/// result the rules can weigh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOutcome {
    /// The rule's id (for Rego, the violation's own `rule` when it names one).
    pub rule: String,
    /// The built-in type (`partner_allowlist`, …) or `rego`.
    pub kind: String,
    /// `enforce`, `warn` or `shadow`.
    pub mode: String,
    /// `deny` or `require_approval`.
    pub action: String,
    /// Whether the change keeps the rule.
    pub passed: bool,
    /// Why it does not (`None` when passed).
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_name_reads_back_and_writes_the_same_text() {
        let mut names: Vec<String> = OperationKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        names.extend(["unknown", "refusal_summary", "", "sync_upsert"].map(String::from));
        for name in names {
            let op: Operation = serde_json::from_value(name.clone().into()).unwrap();
            assert_eq!(serde_json::to_value(&op).unwrap(), name.as_str());
        }
        assert_eq!(
            Operation::from("sync_update").kind(),
            Some(OperationKind::SyncUpdate)
        );
        assert_eq!(Operation::from(""), Operation::Other(String::new()));
        for text in ["", "v1.0", "beta", "V1.0", "v2"] {
            let v: EventApiVersion = serde_json::from_value(text.into()).unwrap();
            assert_eq!(serde_json::to_value(&v).unwrap(), text);
        }
        assert_eq!(
            EventApiVersion::from("beta").version(),
            Some(ApiVersion::Beta)
        );
    }
}
