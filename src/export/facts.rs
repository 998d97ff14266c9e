//! What the per-operation formats (CSV, directory-audit, OCSF) read of an event, and no more.
//!
//! An export of a million events used to parse every event whole into an [`Event`], building a
//! JSON tree for each request body, state, diff and rule list, most of which no record uses: a
//! record takes the states, the diff and the rule results of one event each (the first or the
//! latest that has them). [`EventFacts`] reads the short fields it needs, borrowed from the
//! stored text where they hold no escape, and keeps the nested values as their stored JSON text
//! ([`RawValue`]: checked to be JSON, not built into a tree); the accessors parse one when a
//! record asks for it, into the very types an [`Event`] holds, so a record says exactly what
//! it said when everything was parsed.
//!
//! [`Event`]: crate::audit::Event

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::audit::{EventApiVersion, EventKind, RuleOutcome, Snapshot};
use crate::store::{FoldedOperation, OperationSummary, RawEvent, StoreError};

/// One operation as the per-operation formats read it: its summary and its events' facts,
/// borrowed from the page of stored events.
pub(super) struct Operation<'a> {
    pub(super) summary: &'a OperationSummary,
    pub(super) events: Vec<EventFacts<'a>>,
}

impl<'a> Operation<'a> {
    /// The facts of one stored operation; an event that is not an event, or an operation
    /// without events (which the store refuses before, as a corrupt index), is a corrupt log.
    pub(super) fn read(op: &'a FoldedOperation<RawEvent>) -> Result<Operation<'a>, StoreError> {
        if op.events.is_empty() {
            return Err(StoreError::corrupt(format!(
                "operation {} has no events",
                op.summary.operation_id
            )));
        }
        Ok(Operation {
            summary: &op.summary,
            events: op
                .events
                .iter()
                .map(EventFacts::parse)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// An event's fields the per-operation formats write, with its place in the chain.
#[derive(Debug)]
pub(crate) struct EventFacts<'a> {
    pub(crate) seq: i64,
    pub(crate) hash: &'a str,
    pub(crate) event: Fields<'a>,
}

/// The stored event's fields, as [`Event`](crate::audit::Event) names them; every other field
/// of the stored JSON is skipped.
#[derive(Debug, Deserialize)]
pub(crate) struct Fields<'a> {
    pub(crate) event_id: Uuid,
    pub(crate) kind: EventKind,
    #[serde(borrow)]
    pub(crate) method: Text<'a>,
    #[serde(borrow)]
    pub(crate) canonical_path: Text<'a>,
    pub(crate) api_version: EventApiVersion,
    #[serde(borrow)]
    pub(crate) actor: ActorFacts<'a>,
    #[serde(borrow)]
    pub(crate) client_request_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) request_id: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) detail: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) rules_version: Option<Text<'a>>,
    #[serde(borrow)]
    request_body: Option<&'a RawValue>,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
    #[serde(borrow)]
    diff: Option<&'a RawValue>,
    #[serde(borrow)]
    rule_results: Option<&'a RawValue>,
}

/// The caller, as the formats name it (the token's permissions and fingerprint are not part of
/// any record).
#[derive(Debug, Default, PartialEq, Deserialize)]
pub(crate) struct ActorFacts<'a> {
    #[serde(borrow)]
    pub(crate) oid: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) upn: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) appid: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) app_displayname: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) idtyp: Option<Text<'a>>,
    #[serde(borrow)]
    pub(crate) caller_address: Option<Text<'a>>,
}

impl<'a> EventFacts<'a> {
    /// The facts of an event as stored; a stored event that is not an event is a corrupt log.
    fn parse(raw: &'a RawEvent) -> Result<EventFacts<'a>, StoreError> {
        let event = serde_json::from_str(&raw.event).map_err(|e| corrupt(raw.seq, e))?;
        Ok(EventFacts {
            seq: raw.seq,
            hash: &raw.hash,
            event,
        })
    }

    /// The request's JSON body, when it had one.
    pub(crate) fn request_body(&self) -> Result<Option<Value>, StoreError> {
        self.nested(self.event.request_body)
    }

    pub(crate) fn before(&self) -> Result<Option<Snapshot>, StoreError> {
        self.nested(self.event.before)
    }

    pub(crate) fn after(&self) -> Result<Option<Snapshot>, StoreError> {
        self.nested(self.event.after)
    }

    pub(crate) fn diff(&self) -> Result<Option<Value>, StoreError> {
        self.nested(self.event.diff)
    }

    /// Each rule's verdict (empty when no rule ran on this event).
    pub(crate) fn rule_results(&self) -> Result<Vec<RuleOutcome>, StoreError> {
        Ok(self.nested(self.event.rule_results)?.unwrap_or_default())
    }

    fn nested<T: DeserializeOwned>(&self, raw: Option<&RawValue>) -> Result<Option<T>, StoreError> {
        raw.map(|raw| serde_json::from_str(raw.get()).map_err(|e| corrupt(self.seq, e)))
            .transpose()
    }
}

/// A string field, borrowed from the stored text unless it holds an escape (then decoded into a
/// copy). serde borrows a `Cow` field but never one inside an `Option`; this does both.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Visit).map(Text)
    }
}

fn corrupt(seq: i64, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        context: format!("event seq {seq} does not parse"),
        source: Some(std::sync::Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    fn stored(event: &Event) -> RawEvent {
        RawEvent {
            seq: 7,
            prev_hash: "00".into(),
            hash: "ab".into(),
            event: serde_json::to_string(event).unwrap(),
        }
    }

    #[test]
    fn text_is_borrowed_from_the_stored_event_unless_it_holds_an_escape() {
        let mut event = Event::new(uuid::Uuid::now_v7(), EventKind::Denied);
        event.method = "PATCH".into();
        event.detail = Some("refused: \"displayName\" is\nnot allowed".into());
        let raw = stored(&event);
        let facts = EventFacts::parse(&raw).unwrap();
        assert!(matches!(facts.event.method.0, Cow::Borrowed("PATCH")));
        assert!(matches!(
            facts.event.detail.as_ref().unwrap().0,
            Cow::Owned(_)
        ));
        assert_eq!(facts.event.detail.as_deref(), event.detail.as_deref());
        assert_eq!((facts.seq, facts.hash), (7, "ab"));
    }

    #[test]
    fn an_event_or_an_operation_that_cannot_be_read_is_a_corrupt_log_not_a_panic() {
        let event = Event::new(uuid::Uuid::now_v7(), EventKind::Received);
        let empty = FoldedOperation {
            summary: OperationSummary::start(1, &event),
            events: Vec::new(),
        };
        let refused = Operation::read(&empty).err().unwrap();
        assert!(matches!(refused, StoreError::Corrupt { .. }), "{refused}");
        let mut edited = stored(&event);
        edited.event = edited.event.replace("\"kind\":\"received\"", "\"kind\":7");
        let refused = EventFacts::parse(&edited).unwrap_err();
        assert!(refused.to_string().contains("seq 7"), "{refused}");
    }
}
