//! What the per-operation formats (CSV, directory-audit, OCSF) read of an event, and no more.
//!
//! An export of a million events used to parse every event whole into an [`Event`], building a
//! JSON tree for each request body, state, diff and rule list, most of which no record uses: a
//! record takes the states, the diff and the rule results of one event each (the first or the
//! latest that has them). [`EventFacts`] reads the short fields it needs and keeps the nested
//! values as their stored JSON text ([`RawValue`]: checked to be JSON, not built into a tree);
//! the accessors parse one when a record asks for it, into the very types an [`Event`] holds,
//! so a record says exactly what it said when everything was parsed.
//!
//! [`Event`]: crate::audit::Event

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::audit::{EventApiVersion, EventKind, RuleOutcome, Snapshot};
use crate::store::{FoldedOperation, RawEvent, StoreError};

/// One operation as the per-operation formats read it.
pub(super) type Operation = FoldedOperation<EventFacts>;

/// An event's fields the per-operation formats write, with its place in the chain.
#[derive(Debug, Clone)]
pub(crate) struct EventFacts {
    pub(crate) seq: i64,
    pub(crate) hash: String,
    pub(crate) event: Fields,
}

/// The stored event's fields, as [`Event`](crate::audit::Event) names them; every other field
/// of the stored JSON is skipped.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Fields {
    pub(crate) event_id: Uuid,
    pub(crate) kind: EventKind,
    pub(crate) method: String,
    pub(crate) canonical_path: String,
    pub(crate) api_version: EventApiVersion,
    pub(crate) actor: ActorFacts,
    pub(crate) client_request_id: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) detail: Option<String>,
    pub(crate) rules_version: Option<String>,
    request_body: Option<Box<RawValue>>,
    before: Option<Box<RawValue>>,
    after: Option<Box<RawValue>>,
    diff: Option<Box<RawValue>>,
    rule_results: Option<Box<RawValue>>,
}

/// The caller, as the formats name it (the token's permissions and fingerprint are not part of
/// any record).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct ActorFacts {
    pub(crate) oid: Option<String>,
    pub(crate) upn: Option<String>,
    pub(crate) appid: Option<String>,
    pub(crate) app_displayname: Option<String>,
    pub(crate) idtyp: Option<String>,
    pub(crate) caller_address: Option<String>,
}

impl EventFacts {
    /// The facts of an event as stored; a stored event that is not an event is a corrupt log.
    pub(crate) fn parse(raw: RawEvent) -> Result<EventFacts, StoreError> {
        let event = serde_json::from_str(&raw.event).map_err(|e| corrupt(raw.seq, e))?;
        Ok(EventFacts {
            seq: raw.seq,
            hash: raw.hash,
            event,
        })
    }

    /// The request's JSON body, when it had one.
    pub(crate) fn request_body(&self) -> Result<Option<Value>, StoreError> {
        self.nested(&self.event.request_body)
    }

    pub(crate) fn before(&self) -> Result<Option<Snapshot>, StoreError> {
        self.nested(&self.event.before)
    }

    pub(crate) fn after(&self) -> Result<Option<Snapshot>, StoreError> {
        self.nested(&self.event.after)
    }

    pub(crate) fn diff(&self) -> Result<Option<Value>, StoreError> {
        self.nested(&self.event.diff)
    }

    /// Each rule's verdict (empty when no rule ran on this event).
    pub(crate) fn rule_results(&self) -> Result<Vec<RuleOutcome>, StoreError> {
        Ok(self.nested(&self.event.rule_results)?.unwrap_or_default())
    }

    fn nested<T: DeserializeOwned>(
        &self,
        raw: &Option<Box<RawValue>>,
    ) -> Result<Option<T>, StoreError> {
        raw.as_deref()
            .map(|raw| serde_json::from_str(raw.get()).map_err(|e| corrupt(self.seq, e)))
            .transpose()
    }
}

fn corrupt(seq: i64, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        context: format!("event seq {seq} does not parse"),
        source: Some(std::sync::Arc::new(e)),
    }
}
