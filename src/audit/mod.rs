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
//!
//! The fields are typed (`fields.rs`: the operation, the API version, rule outcomes; the tenant
//! and operation ids from `crate::graph`), but the hash chain covers the JSON they serialise to,
//! so each type writes exactly the text the untyped field held and reads back every value a log
//! may hold; `store/log_v1.rs` keeps a log written before they were typed and checks it still
//! verifies and re-seals byte for byte. Refusals' bounded records are in `refusal.rs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::classify::Governed;
use crate::graph::{OperationId, TenantId};

pub mod evidence;
mod fields;
pub mod kept;
pub mod merkle;
pub mod note;
mod refusal;

pub use fields::{EventApiVersion, Operation, RuleOutcome};
#[cfg(test)]
pub(crate) use refusal::BodyDigest;
pub(crate) use refusal::{
    CLAIM_MAX, CLAIMS_LIST_MAX, DETAIL_MAX, METHOD_MAX, RawRequest, RefusalSummary, TARGET_MAX,
    json_prefix,
};

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
    /// `received` found without an outcome (the proxy, or a replica, died mid-change), recorded
    /// by crash recovery once the state was read again.
    Recovered,
    /// The before-state differs from the last after-state recorded for this resource.
    Drift,
    /// A read of a sync policy, recorded only when `audit.record_reads` is on.
    Read,
    /// A change a `require_approval` rule held became an approval request (the held
    /// operation's terminal event; nothing went upstream).
    ApprovalRequested,
    /// An approver voted on a request (carries the held operation's id).
    ApprovalVote,
    /// A request's vote or send window closed before it was decided or used.
    ApprovalExpired,
    /// The partner's state changed after a request was made, so it no longer describes the
    /// change and cannot be used.
    ApprovalVoided,
}

impl EventKind {
    pub(crate) const ALL: [EventKind; 10] = [
        EventKind::Received,
        EventKind::Completed,
        EventKind::Denied,
        EventKind::Recovered,
        EventKind::Drift,
        EventKind::Read,
        EventKind::ApprovalRequested,
        EventKind::ApprovalVote,
        EventKind::ApprovalExpired,
        EventKind::ApprovalVoided,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Completed => "completed",
            EventKind::Denied => "denied",
            EventKind::Recovered => "recovered",
            EventKind::Drift => "drift",
            EventKind::Read => "read",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalVote => "approval_vote",
            EventKind::ApprovalExpired => "approval_expired",
            EventKind::ApprovalVoided => "approval_voided",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
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
    /// The user egress mode's proxy authentication (`[[egress.users]]`) let through, when the
    /// call came inside its tunnel. Absent otherwise, so events without it hash as they did
    /// before egress mode existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_user: Option<String>,
}

impl Actor {
    /// The actor with every claim cut to [`CLAIM_MAX`] bytes and the permission lists to
    /// [`CLAIMS_LIST_MAX`] entries, for refusals: their tokens are unverified and may be crafted
    /// to be large, and a refusal must cost the log a bounded amount. The token fingerprint
    /// (`token_hmac`) still links it to other events by the same token.
    pub(crate) fn bounded(&self) -> Actor {
        let text = |v: &Option<String>| v.as_deref().map(|s| json_prefix(s, CLAIM_MAX).to_owned());
        let list = |v: &[String]| {
            v.iter()
                .take(CLAIMS_LIST_MAX)
                .map(|s| json_prefix(s, CLAIM_MAX).to_owned())
                .collect()
        };
        Actor {
            oid: text(&self.oid),
            upn: text(&self.upn),
            appid: text(&self.appid),
            app_displayname: text(&self.app_displayname),
            tid: text(&self.tid),
            idtyp: text(&self.idtyp),
            roles: list(&self.roles),
            scp: list(&self.scp),
            caller_address: self.caller_address.clone(),
            client_cert_subject: text(&self.client_cert_subject),
            token_hmac: self.token_hmac.clone(),
            proxy_user: text(&self.proxy_user),
        }
    }
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
    pub(crate) fn value(&self) -> Option<&Value> {
        match self {
            Snapshot::Present { value } => Some(value),
            Snapshot::Absent => Some(&Value::Null),
            Snapshot::Unreadable { .. } => None,
        }
    }
}

/// Whether the after-state became what the request asked for (intent versus effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Effect {
    pub(crate) const ALL: [Effect; 6] = [
        Effect::Applied,
        Effect::Ignored,
        Effect::NotApplied,
        Effect::AppliedDespiteError,
        Effect::Diverged,
        Effect::Unknown,
    ];

    /// The name the log stores (`applied`, `not_applied`, ...), for tables and log lines.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Effect::Applied => "applied",
            Effect::Ignored => "ignored",
            Effect::NotApplied => "not_applied",
            Effect::AppliedDespiteError => "applied_despite_error",
            Effect::Diverged => "diverged",
            Effect::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// One event, as the pipeline builds it. The store adds `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// This event's id (UUIDv7).
    pub event_id: Uuid,
    /// The operation it belongs to (UUIDv7, sent to the client as `x-syncgate-audit-id`).
    pub(crate) operation_id: OperationId,
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
    /// `v1.0` or `beta`; stored as `""` when the request was refused before its path was read.
    pub api_version: EventApiVersion,
    /// The partner tenant the change is about, when there is one.
    pub partner_tenant_id: Option<TenantId>,
    /// What kind of change (`sync_create`, `partner_delete`, ...; see [`Operation`]).
    pub operation: Operation,
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
    pub rule_results: Vec<RuleOutcome>,
    /// The version (hash) of the rule set that decided.
    #[serde(default)]
    pub rules_version: Option<String>,
    /// The partner's document when a rule needed it (consent settings), so a backtest replays the
    /// decision with what the rules saw.
    #[serde(default)]
    pub(crate) partner_state: Option<Value>,
    pub(crate) approval_id: Option<String>,
    pub upstream_status: Option<u16>,
    /// Whole-operation latency, and the part spent waiting on the upstream.
    pub latency_ms: Option<u64>,
    pub upstream_latency_ms: Option<u64>,
    pub effect: Option<Effect>,
    /// Human-readable reason (refusal message, upstream error, recovery note).
    pub detail: Option<String>,
    /// A refused request as it was received, bounded (see [`RawRequest`]). Refusals carry this
    /// instead of `request_body`, so recording one costs the same whatever the client sent.
    ///
    /// Optional fields added after the first release are left out of the JSON when empty, so
    /// events written before they existed hash (and verify) exactly as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) raw_request: Option<RawRequest>,
    /// On a `refusal_summary` event: the refusals from one client that were counted instead of
    /// recorded one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refusal_summary: Option<RefusalSummary>,
    /// On the approval gate's events: what the request is bound to, the vote, the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) approval: Option<Box<ApprovalFacts>>,
}

/// What an approval event records beyond the operation's own fields: the request's binding
/// and policy (`approval_requested`), a vote and where the tally stands (`approval_vote`), the
/// status it moved to. Every field is optional and left out when empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalFacts {
    /// The request's status after this event (`pending`, `approved`, ...).
    pub(crate) status: String,
    pub(crate) policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) requester: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) before_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) vote_deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) send_deadline: Option<String>,
    /// The admin principal who voted, its vote and comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ballot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) comment: Option<String>,
    /// Distinct approvals so far, and how many the policy needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) approvals: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) required: Option<u32>,
}

/// The `operation` of a `denied` event that stands for many refusals from one client.
pub(crate) const REFUSAL_SUMMARY: Operation = Operation::RefusalSummary;

impl Event {
    /// Cut every field a refused client could make large to a bounded size: the method
    /// ([`METHOD_MAX`]), the canonical path ([`TARGET_MAX`]), the detail, which may quote the
    /// request ([`DETAIL_MAX`]), `client-request-id` and the token's claims ([`Actor::bounded`]).
    /// With [`RawRequest`] this makes a refusal's record bounded whatever the client sent.
    pub(crate) fn bound_for_refusal(&mut self) {
        fn cut(text: &mut String, max: usize) {
            let kept = json_prefix(text, max).len();
            text.truncate(kept);
        }
        self.actor = self.actor.bounded();
        cut(&mut self.method, METHOD_MAX);
        cut(&mut self.canonical_path, TARGET_MAX);
        if let Some(id) = &mut self.client_request_id {
            cut(id, CLAIM_MAX);
        }
        if let Some(detail) = &mut self.detail {
            cut(detail, DETAIL_MAX);
        }
    }

    /// A new event of `kind` for `operation_id` with everything else empty (its operation
    /// [`Operation::Unknown`]); the pipeline fills it.
    pub fn new(operation_id: impl Into<OperationId>, kind: EventKind) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            operation_id: operation_id.into(),
            kind,
            time: Utc::now(),
            method: String::new(),
            canonical_path: String::new(),
            state_path: None,
            api_version: EventApiVersion::Unnamed,
            partner_tenant_id: None,
            operation: Operation::Unknown,
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
            raw_request: None,
            refusal_summary: None,
            approval: None,
        }
    }

    /// An event about a governed request, with what the request says filled: method, canonical
    /// path, API version, partner, operation kind, and the path its state is read from
    /// (`None` when the operation has none: reads, the legacy policy, a partner not known yet).
    pub(crate) fn governed(
        operation_id: impl Into<OperationId>,
        kind: EventKind,
        governed: &Governed,
        state_path: Option<&str>,
    ) -> Self {
        let mut e = Event::new(operation_id, kind);
        e.method = governed.method.to_string();
        e.canonical_path = governed.path.to_string();
        e.api_version = governed.path.version.into();
        e.partner_tenant_id = governed.partner.clone();
        e.operation = governed.kind.into();
        e.state_path = state_path.map(str::to_owned);
        e
    }
}

/// An event as the log holds it: its place in the chain and its hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// `hash` of the previous event (64 zeros for the first).
    pub(crate) prev_hash: String,
    /// `sha256(prev_hash ‖ canonical JSON of {seq, event})`, hex.
    pub hash: String,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod effect_tests {
    use super::Effect;

    #[test]
    fn an_effect_is_named_as_the_log_stores_it() {
        for effect in Effect::ALL {
            assert_eq!(serde_json::to_value(effect).unwrap(), effect.as_str());
        }
    }
}
