//! The two identifiers every event carries: the partner tenant an operation is about, and the
//! operation itself.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A text that is not a hyphenated GUID, offered as a partner tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a tenant id: a tenant id is a GUID in the 36-character hyphenated form")]
pub struct InvalidTenantId(pub String);

/// A partner tenant id: the key of partners and sync policies. Always a lower-case hyphenated
/// GUID, so two spellings of one tenant compare, lock and audit as one.
///
/// Serialised as that text; deserialising parses it (the audit log has only ever stored the
/// lower-case form, which parses to itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// Accepts the 36-character hyphenated form in any case. Braces, the 32-digit form and
    /// domain names are refused: how Graph reads them is unknown, and a key syncgate reads
    /// differently from Graph is a bypass.
    pub(crate) fn parse(text: &str) -> Result<Self, InvalidTenantId> {
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if well_formed {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(InvalidTenantId(text.to_owned()))
        }
    }

    /// The lower-case hyphenated GUID.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Read as the text it is (the lower-case GUID), e.g. `partner.as_deref()` on an optional id.
impl std::ops::Deref for TenantId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TenantId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One governed operation's id: a UUIDv7 (time-ordered) that all of its audit events share and
/// that the client gets back as `x-syncgate-audit-id`. Serialised as the bare UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub Uuid);

impl OperationId {
    /// A new id, now.
    pub(crate) fn new() -> Self {
        OperationId(Uuid::now_v7())
    }

    /// The UUID.
    pub(crate) fn uuid(self) -> Uuid {
        self.0
    }
}

impl Default for OperationId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for OperationId {
    fn from(id: Uuid) -> Self {
        OperationId(id)
    }
}

impl From<OperationId> for Uuid {
    fn from(id: OperationId) -> Self {
        id.0
    }
}

impl PartialEq<Uuid> for OperationId {
    fn eq(&self, other: &Uuid) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OperationId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(OperationId)
    }
}

impl PartialEq<OperationId> for Uuid {
    fn eq(&self, other: &OperationId) -> bool {
        *self == other.0
    }
}
