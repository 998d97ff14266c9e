//! The audit event: what the log records about every governed operation.
//!
//! An *operation* is one governed request (one identitySynchronization change, partner change,
//! restore, ...). It leaves several events in the log, all carrying its `operation_id`:
//! `received` (durable before anything goes upstream), then `completed`, or `denied` when syncgate
//! refused it; `recovered` when a crash left it without `completed`; `drift` when its before-state
//! differs from the last after-state syncgate recorded for the same resource.
//!
//! Events are values: the pipeline builds them, the store appends them to the hash chain, the CLI
//! and admin API read them back. Timestamps are UTC; ids are UUIDv7 (time-ordered).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What happened, in the lifecycle of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The request was accepted for forwarding; written before anything goes upstream.
    Received,
    /// The upstream answered (or failed) and the after-state was read.
    Completed,
    /// syncgate refused the request; nothing went upstream.
    Denied,
    /// Found at start-up: `received` without `completed` (the proxy died mid-change).
    Recovered,
    /// The before-state differs from the last after-state recorded for this resource.
    Drift,
    /// A read of a sync policy, recorded only when `audit.record_reads` is on.
    Read,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Received,
        EventKind::Completed,
        EventKind::Denied,
        EventKind::Recovered,
        EventKind::Drift,
        EventKind::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Completed => "completed",
            EventKind::Denied => "denied",
            EventKind::Recovered => "recovered",
            EventKind::Drift => "drift",
            EventKind::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// syncgate's decision about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Decision::Allow),
            "deny" => Some(Decision::Deny),
            _ => None,
        }
    }
}

/// Who asked: the token's claims (decoded, never verified), where the call came from, and a keyed
/// hash of the token so two events by the same token can be linked without storing it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub oid: Option<String>,
    pub upn: Option<String>,
    pub appid: Option<String>,
    pub app_displayname: Option<String>,
    pub tid: Option<String>,
    /// `app` for app-only tokens, `user` for delegated ones (when the token says).
    pub idtyp: Option<String>,
    /// Application permissions (`roles` claim).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Delegated permissions (`scp` claim, space-separated in the token).
    #[serde(default)]
    pub scp: Vec<String>,
    /// The caller's socket address as the proxy saw it.
    pub caller_address: Option<String>,
    /// Subject of the client's TLS certificate, when it presented one.
    pub client_cert_subject: Option<String>,
    /// HMAC-SHA256 of the bearer token under the store's key, hex.
    pub token_hmac: Option<String>,
}

/// A resource's state as read from the upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Snapshot {
    /// The resource exists; `value` is its JSON without `@odata.*` annotations.
    Present { value: Value },
    /// The upstream answered 404: the resource does not exist.
    Absent,
    /// The read failed; the state is unknown.
    Unreadable { status: Option<u16>, error: String },
}

impl Snapshot {
    /// The JSON value the diff compares: the document, or `null` when absent.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Snapshot::Present { value } => Some(value),
            Snapshot::Absent => Some(&Value::Null),
            Snapshot::Unreadable { .. } => None,
        }
    }
}

/// Whether the after-state became what the request asked for (intent versus effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The upstream accepted the change and the after-state shows it.
    Applied,
    /// The upstream said success but the after-state does not show the change (silently ignored).
    Ignored,
    /// The upstream refused or failed and the state did not change.
    NotApplied,
    /// The upstream refused, failed or never answered (a timeout, a crash), yet the after-state
    /// shows the requested change.
    AppliedDespiteError,
    /// The after-state differs from both the before-state and what was asked.
    Diverged,
    /// The after-state could not be read.
    Unknown,
}

/// One event, as the pipeline builds it. The store adds `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// This event's id (UUIDv7).
    pub event_id: Uuid,
    /// The operation it belongs to (UUIDv7, sent to the client as `x-syncgate-audit-id`).
    pub operation_id: Uuid,
    pub kind: EventKind,
    pub time: DateTime<Utc>,
    /// HTTP method of the governed request (`PATCH`, ...), as the upstream saw it.
    pub method: String,
    /// The canonical path (lower-case segments, GUID keys, `/v1.0` or `/beta` prefix).
    pub canonical_path: String,
    /// The path the resource's state is read from (`before`/`after`), e.g.
    /// `/v1.0/policies/crossTenantAccessPolicy/partners/<k>/identitySynchronization`, when the
    /// operation changes one resource. The store indexes it: drift detection compares a new
    /// change's before-state with the last after-state recorded under the same `state_path`.
    #[serde(default)]
    pub state_path: Option<String>,
    /// `v1.0` or `beta`.
    pub api_version: String,
    /// The partner tenant the change is about, when there is one.
    pub partner_tenant_id: Option<String>,
    /// What kind of change (`sync_create`, `partner_delete`, ...; see `OperationKind`).
    pub operation: String,
    pub actor: Actor,
    pub client_request_id: Option<String>,
    /// Graph's `request-id` of the write, when the upstream answered.
    pub request_id: Option<String>,
    /// The request's JSON body, when it had one.
    pub request_body: Option<Value>,
    pub before: Option<Snapshot>,
    pub after: Option<Snapshot>,
    /// RFC 6902 patch turning the before-value into the after-value.
    pub diff: Option<Value>,
    pub decision: Option<Decision>,
    /// Each rule's verdict for this change.
    #[serde(default)]
    pub rule_results: Vec<Value>,
    /// The version (hash) of the rule set that decided.
    #[serde(default)]
    pub rules_version: Option<String>,
    /// The partner's document when a rule needed it (consent settings), so a backtest replays the
    /// decision with what the rules saw.
    #[serde(default)]
    pub partner_state: Option<Value>,
    pub approval_id: Option<String>,
    pub upstream_status: Option<u16>,
    /// Whole-operation latency, and the part spent waiting on the upstream.
    pub latency_ms: Option<u64>,
    pub upstream_latency_ms: Option<u64>,
    pub effect: Option<Effect>,
    /// Human-readable reason (refusal message, upstream error, recovery note).
    pub detail: Option<String>,
}

impl Event {
    /// A new event of `kind` for `operation_id` with everything else empty; the pipeline fills it.
    pub fn new(operation_id: Uuid, kind: EventKind) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            operation_id,
            kind,
            time: Utc::now(),
            method: String::new(),
            canonical_path: String::new(),
            state_path: None,
            api_version: String::new(),
            partner_tenant_id: None,
            operation: String::new(),
            actor: Actor::default(),
            client_request_id: None,
            request_id: None,
            request_body: None,
            before: None,
            after: None,
            diff: None,
            decision: None,
            rule_results: Vec::new(),
            rules_version: None,
            partner_state: None,
            approval_id: None,
            upstream_status: None,
            latency_ms: None,
            upstream_latency_ms: None,
            effect: None,
            detail: None,
        }
    }
}

/// An event as the log holds it: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// `hash` of the previous event (64 zeros for the first).
    pub prev_hash: String,
    /// `sha256(prev_hash ‖ canonical JSON of {seq, event})`, hex.
    pub hash: String,
    #[serde(flatten)]
    pub event: Event,
}
