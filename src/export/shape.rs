//! What the per-operation formats (CSV, directory-audit, OCSF) say about an operation, read
//! once from its events: who, from where, what kind of change, how it ended, the states before
//! and after and which properties changed. Each format only names these facts its own way, so
//! the three never disagree about an operation.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::audit::{Actor, Event, EventKind, Recorded, Snapshot};
use crate::graph::OperationKind;
use crate::store::FoldedOperation;

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
    pub(super) fn of(op: &FoldedOperation) -> Verb {
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
            Some(K::DeletedPartnerSyncWrite) => match first(op).event.method.as_str() {
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
    pub(super) fn of(op: &FoldedOperation) -> Outcome {
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
pub(super) fn first(op: &FoldedOperation) -> &Recorded {
    op.events.first().unwrap_or(&NO_EVENT)
}

/// Stands for the first event of an operation without events, which the store never returns
/// (`fold` refuses one), so a record is still written rather than the export failing.
static NO_EVENT: LazyLock<Recorded> = LazyLock::new(|| Recorded {
    seq: 0,
    prev_hash: String::new(),
    hash: String::new(),
    event: Event::new(uuid::Uuid::nil(), EventKind::Received),
});

/// The latest event that has a value for `f`.
pub(super) fn latest<'a, T>(
    op: &'a FoldedOperation,
    f: impl Fn(&'a Recorded) -> Option<T>,
) -> Option<T> {
    op.events.iter().rev().find_map(f)
}

pub(super) fn actor(op: &FoldedOperation) -> &Actor {
    &first(op).event.actor
}

/// Whether the caller used an app-only token (no signed-in user).
pub(super) fn is_app(actor: &Actor) -> bool {
    match actor.idtyp.as_deref() {
        Some(kind) => kind.eq_ignore_ascii_case("app"),
        None => actor.upn.is_none() && actor.appid.is_some(),
    }
}

/// The caller's IP address, without the port the proxy recorded beside it.
pub(super) fn caller_ip(actor: &Actor) -> Option<String> {
    let address = actor.caller_address.as_deref()?;
    address
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| address.parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_string())
}

/// The state before the change: the first recorded.
pub(super) fn before(op: &FoldedOperation) -> Option<&Snapshot> {
    op.events.iter().find_map(|r| r.event.before.as_ref())
}

/// The state after the change: the last recorded.
pub(super) fn after(op: &FoldedOperation) -> Option<&Snapshot> {
    latest(op, |r| r.event.after.as_ref())
}

/// Graph's `request-id` of the write, when the upstream answered.
pub(super) fn request_id(op: &FoldedOperation) -> Option<&str> {
    latest(op, |r| r.event.request_id.as_deref())
}

/// Why it ended as it did (a refusal's message, an upstream error, a recovery note).
pub(super) fn detail(op: &FoldedOperation) -> Option<&str> {
    latest(op, |r| r.event.detail.as_deref())
}

/// The Graph resource type the operation is about (Graph's own names).
pub(super) fn resource_type(op: &FoldedOperation) -> &'static str {
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

/// The top-level properties whose value differs between before and after. When the after-state
/// is unknown (the change failed or the read after it did), the request body stands for what was
/// asked; a resource that is absent on one side has every property of the other changed.
pub(super) fn changes(op: &FoldedOperation) -> Vec<Change> {
    let empty = Map::new();
    let object = |s: Option<&Snapshot>| -> Option<Map<String, Value>> {
        match s? {
            Snapshot::Present { value } => Some(value.as_object().unwrap_or(&empty).clone()),
            Snapshot::Absent => Some(Map::new()),
            Snapshot::Unreadable { .. } => None,
        }
    };
    let old = object(before(op)).unwrap_or_default();
    let new = match object(after(op)) {
        Some(after) => after,
        None => {
            latest(op, |r| r.event.request_body.as_ref()?.as_object().cloned()).unwrap_or_default()
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
    changes
}

/// Milliseconds since the Unix epoch (OCSF's `timestamp_t`).
pub(super) fn epoch_ms(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// Each event's place in the chain, so a record can be checked against the log.
pub(super) fn chain(op: &FoldedOperation) -> Value {
    Value::Array(
        op.events
            .iter()
            .map(|r| {
                serde_json::json!({
                    "seq": r.seq,
                    "kind": r.event.kind.as_str(),
                    "event_id": r.event.event_id,
                    "hash": r.hash,
                })
            })
            .collect(),
    )
}

/// What syncgate knows of an operation that neither Entra nor OCSF has a field for (the
/// decision, the states, the diff, the rule results, the chain), with a format's own `extra`
/// fields first: Entra's `syncgate` extension and OCSF's `unmapped` carry the same facts.
pub(super) fn syncgate_facts(op: &FoldedOperation, extra: Value) -> Value {
    let s = &op.summary;
    let mut facts = match extra {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    let common = serde_json::json!({
        "decision": s.decision,
        "rule": s.rule,
        "effect": s.effect,
        "drift": s.drift,
        "approval_id": s.approval_id,
        "terminal": s.terminal,
        "before": before(op),
        "after": after(op),
        "diff": latest(op, |r| r.event.diff.as_ref()),
        "rule_results": latest(op, |r| {
            (!r.event.rule_results.is_empty()).then_some(&r.event.rule_results)
        }),
        "events": chain(op),
    });
    if let Value::Object(common) = common {
        facts.extend(common);
    }
    Value::Object(facts)
}
