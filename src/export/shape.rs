//! What the per-operation formats (CSV, directory-audit, OCSF) say about an operation, read
//! once from its events: who, from where, what kind of change, how it ended, the states before
//! and after and which properties changed. Each format only names these facts its own way, so
//! the three never disagree about an operation.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::facts::{ActorFacts, EventFacts, Operation};
use crate::audit::{Decision, Effect, EventKind, RuleOutcome, Snapshot};
use crate::graph::OperationKind;
use crate::store::StoreError;

/// The kind of change, in the vocabulary both Entra (`operationType`) and OCSF (`activity_id`)
/// share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Create,
    Read,
    Update,
    Delete,
    Other,
}

impl Verb {
    pub(super) fn of(op: &Operation) -> Verb {
        use OperationKind as K;
        match op.summary.operation.kind() {
            Some(K::SyncCreate | K::PartnerCreate | K::PartnerRestore | K::SyncRestore) => {
                Verb::Create
            }
            Some(
                K::SyncUpdate
                | K::PartnerUpdate
                | K::TemplateUpdate
                | K::TemplateReset
                | K::LegacySyncPolicyWrite,
            ) => Verb::Update,
            Some(
                K::SyncDelete | K::PartnerDelete | K::DeletedPartnerPurge | K::DeletedSyncPurge,
            ) => Verb::Delete,
            // PUT, PATCH or DELETE on the same undocumented path: the method says which.
            Some(K::DeletedPartnerSyncWrite) => match &*first(op).method {
                "PUT" => Verb::Create,
                "DELETE" => Verb::Delete,
                _ => Verb::Update,
            },
            Some(K::SyncRead) => Verb::Read,
            None => Verb::Other,
        }
    }
}

/// How the operation ended, as an auditor reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The upstream accepted it (2xx).
    Success,
    /// syncgate refused it, or the upstream did.
    Failure,
    /// No terminal event yet (in flight, or the proxy stopped mid-change and has not recovered
    /// it), or a terminal event without a status.
    Unknown,
}

impl Outcome {
    pub(super) fn of(op: &Operation) -> Outcome {
        let s = &op.summary;
        match (s.terminal, s.status) {
            (None, _) => Outcome::Unknown,
            (Some(EventKind::Denied), _) => Outcome::Failure,
            (Some(_), Some(status)) if (200..300).contains(&status) => Outcome::Success,
            (Some(_), Some(_)) => Outcome::Failure,
            (Some(_), None) => Outcome::Unknown,
        }
    }
}

/// The operation's first event: the request as it arrived (every event repeats its attributes).
pub(super) fn first<'a>(op: &'a Operation<'a>) -> &'a super::facts::Fields<'a> {
    // `Operation::read` refuses an operation without events, so the first is there.
    &op.events[0].event
}

/// The latest event's value of `f`, among the events that have one.
pub(super) fn latest<'a, T>(
    op: &'a Operation,
    f: impl Fn(&'a EventFacts) -> Option<T>,
) -> Option<T> {
    op.events.iter().rev().find_map(f)
}

/// [`latest`] for a value that is parsed when taken.
fn try_latest<'a, T>(
    op: &'a Operation<'a>,
    f: impl Fn(&'a EventFacts<'a>) -> Result<Option<T>, StoreError>,
) -> Result<Option<T>, StoreError> {
    for event in op.events.iter().rev() {
        if let Some(value) = f(event)? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

pub(super) fn actor<'a>(op: &'a Operation<'a>) -> &'a ActorFacts<'a> {
    &first(op).actor
}

/// Whether the caller used an app-only token (no signed-in user).
pub(super) fn is_app(actor: &ActorFacts) -> bool {
    match actor.idtyp.as_deref() {
        Some(kind) => kind.eq_ignore_ascii_case("app"),
        None => actor.upn.is_none() && actor.appid.is_some(),
    }
}

/// The caller's IP address, without the port the proxy recorded beside it.
pub(super) fn caller_ip(actor: &ActorFacts) -> Option<String> {
    let address = actor.caller_address.as_deref()?;
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_string())
}

/// Graph's `request-id` of the write, when the upstream answered.
pub(super) fn request_id<'a>(op: &'a Operation<'a>) -> Option<&'a str> {
    latest(op, |r| r.event.request_id.as_deref())
}

/// Why it ended as it did (a refusal's message, an upstream error, a recovery note).
pub(super) fn detail<'a>(op: &'a Operation<'a>) -> Option<&'a str> {
    latest(op, |r| r.event.detail.as_deref())
}

/// The version of the rule set that decided last.
pub(super) fn rules_version<'a>(op: &'a Operation<'a>) -> Option<&'a str> {
    latest(op, |r| r.event.rules_version.as_deref())
}

/// The Graph resource type the operation is about (Graph's own names).
pub(super) fn resource_type(op: &Operation) -> &'static str {
    use OperationKind as K;
    match op.summary.operation.kind() {
        Some(
            K::SyncCreate
            | K::SyncUpdate
            | K::SyncDelete
            | K::SyncRestore
            | K::DeletedSyncPurge
            | K::DeletedPartnerSyncWrite
            | K::SyncRead,
        ) => "crossTenantIdentitySyncPolicyPartner",
        Some(K::PartnerCreate | K::PartnerUpdate | K::PartnerDelete | K::PartnerRestore) => {
            "crossTenantAccessPolicyConfigurationPartner"
        }
        Some(K::DeletedPartnerPurge) => "crossTenantAccessPolicyConfigurationPartner",
        Some(K::TemplateUpdate | K::TemplateReset) => {
            "multiTenantOrganizationIdentitySyncPolicyTemplate"
        }
        Some(K::LegacySyncPolicyWrite) => "crossTenantIdentitySyncPolicy",
        None => "unknown",
    }
}

/// One property the change touched, with its typed values (`None`: not there).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Change {
    pub(super) property: String,
    pub(super) old: Option<Value>,
    pub(super) new: Option<Value>,
}

/// The nested values a record carries, each parsed from the one event it is taken from: the
/// state before (the first recorded), the state after, the diff and the rule results (the
/// latest recorded), and the properties that changed.
pub(super) struct Nested {
    pub(super) before: Option<Snapshot>,
    pub(super) after: Option<Snapshot>,
    pub(super) diff: Option<Value>,
    pub(super) rule_results: Option<Vec<RuleOutcome>>,
    pub(super) changes: Vec<Change>,
}

impl Nested {
    pub(super) fn of(op: &Operation) -> Result<Nested, StoreError> {
        let mut before = None;
        for event in &op.events {
            if let Some(state) = event.before()? {
                before = Some(state);
                break;
            }
        }
        let after = try_latest(op, EventFacts::after)?;
        let changes = changes(op, before.as_ref(), after.as_ref())?;
        Ok(Nested {
            before,
            after,
            diff: diff(op)?,
            rule_results: try_latest(op, |r| {
                let results = r.rule_results()?;
                Ok((!results.is_empty()).then_some(results))
            })?,
            changes,
        })
    }
}

/// An object without members, for a state that has none.
static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// The latest RFC 6902 diff recorded.
pub(super) fn diff(op: &Operation) -> Result<Option<Value>, StoreError> {
    try_latest(op, EventFacts::diff)
}

/// The top-level properties whose value differs between before and after. When the after-state
/// is unknown (the change failed or the read after it did), the request body stands for what was
/// asked; a resource that is absent on one side has every property of the other changed.
fn changes<'a>(
    op: &Operation,
    before: Option<&'a Snapshot>,
    after: Option<&'a Snapshot>,
) -> Result<Vec<Change>, StoreError> {
    let object = |s: Option<&'a Snapshot>| -> Option<&'a Map<String, Value>> {
        match s? {
            Snapshot::Present { value } => Some(value.as_object().unwrap_or(&EMPTY)),
            Snapshot::Absent => Some(&EMPTY),
            Snapshot::Unreadable { .. } => None,
        }
    };
    let old = object(before).unwrap_or(&EMPTY);
    let asked;
    let new = match object(after) {
        Some(after) => after,
        None => {
            asked = try_latest(op, |r| {
                Ok(match r.request_body()? {
                    Some(Value::Object(body)) => Some(body),
                    _ => None,
                })
            })?
            .unwrap_or_default();
            &asked
        }
    };
    let mut changes = Vec::new();
    let keys = old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(*k)));
    for key in keys {
        let (o, n) = (old.get(key), new.get(key));
        if o != n {
            changes.push(Change {
                property: key.clone(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    Ok(changes)
}

/// Milliseconds since the Unix epoch (OCSF's `timestamp_t`).
pub(super) fn epoch_ms(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// An event's place in the chain, so a record can be checked against the log.
#[derive(Serialize)]
pub(super) struct ChainLink<'a> {
    seq: i64,
    kind: &'static str,
    event_id: Uuid,
    hash: &'a str,
}

/// What syncgate knows of an operation that neither Entra nor OCSF has a field for (the
/// decision, the states, the diff, the rule results, the chain), after a format's own `extra`
/// fields: Entra's `syncgate` extension and OCSF's `unmapped` carry the same facts.
#[derive(Serialize)]
pub(super) struct SyncgateFacts<'a, X: Serialize> {
    #[serde(flatten)]
    extra: X,
    decision: Option<Decision>,
    rule: Option<&'a str>,
    effect: Option<Effect>,
    drift: bool,
    approval_id: Option<&'a str>,
    terminal: Option<EventKind>,
    before: Option<&'a Snapshot>,
    after: Option<&'a Snapshot>,
    diff: Option<&'a Value>,
    rule_results: Option<&'a [RuleOutcome]>,
    events: Vec<ChainLink<'a>>,
}

pub(super) fn syncgate_facts<'a, X: Serialize>(
    op: &'a Operation,
    nested: &'a Nested,
    extra: X,
) -> SyncgateFacts<'a, X> {
    let s = &op.summary;
    SyncgateFacts {
        extra,
        decision: s.decision,
        rule: s.rule.as_deref(),
        effect: s.effect,
        drift: s.drift,
        approval_id: s.approval_id.as_deref(),
        terminal: s.terminal,
        before: nested.before.as_ref(),
        after: nested.after.as_ref(),
        diff: nested.diff.as_ref(),
        rule_results: nested.rule_results.as_deref(),
        events: op
            .events
            .iter()
            .map(|r| ChainLink {
                seq: r.seq,
                kind: r.event.kind.as_str(),
                event_id: r.event.event_id,
                hash: r.hash,
            })
            .collect(),
    }
}
