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

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::classify::Governed;
use crate::graph::{OperationId, TenantId};

mod fields;

pub use fields::{EventApiVersion, Operation, RuleOutcome};

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

/// Most bytes kept of each caller-supplied text (a claim, `client-request-id`) in a refusal.
pub const CLAIM_MAX: usize = 256;
/// Most `roles`/`scp` entries kept in a refusal.
pub const CLAIMS_LIST_MAX: usize = 32;

impl Actor {
    /// The actor with every claim cut to [`CLAIM_MAX`] bytes and the permission lists to
    /// [`CLAIMS_LIST_MAX`] entries, for refusals: their tokens are unverified and may be crafted
    /// to be large, and a refusal must cost the log a bounded amount. The token fingerprint
    /// (`token_hmac`) still links it to other events by the same token.
    pub fn bounded(&self) -> Actor {
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
    pub operation_id: OperationId,
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
    pub partner_state: Option<Value>,
    pub approval_id: Option<String>,
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
    pub raw_request: Option<RawRequest>,
    /// On a `refusal_summary` event: the refusals from one client that were counted instead of
    /// recorded one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_summary: Option<RefusalSummary>,
}

/// The `operation` of a `denied` event that stands for many refusals from one client.
pub const REFUSAL_SUMMARY: Operation = Operation::RefusalSummary;

/// Most bytes of a refused request's target kept, as stored (JSON-escaped).
pub const TARGET_MAX: usize = 2048;
/// Most bytes of a refused request's body prefix kept, as stored (JSON-escaped text, or base64).
pub const BODY_PREFIX_MAX: usize = 4096;
/// Most bytes of a refused request's method kept (Graph's methods have at most 6).
pub const METHOD_MAX: usize = 32;
/// Most bytes of a refusal's detail kept (its message may quote the request).
pub const DETAIL_MAX: usize = 2048;

/// A refused request as received, in a bounded form: the target exactly as sent (cut at
/// [`TARGET_MAX`]), and for the body its length, SHA-256 and a prefix (at most
/// [`BODY_PREFIX_MAX`] stored bytes) — never the whole body. Enough for an auditor to see what was
/// tried and to match a body they hold against the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRequest {
    /// The request target as received: path and query of a top-level request, the `url` of a
    /// `$batch` sub-request.
    pub target: String,
    /// Bytes in the whole target.
    pub target_len: u64,
    /// `target` holds only the start of it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub target_truncated: bool,
    /// The body, when syncgate read it (a body refused while it was being read, for being too
    /// large, or a request refused on its head alone, has none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyDigest>,
}

/// A body in bounded form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyDigest {
    /// Bytes in the whole body.
    pub len: u64,
    /// SHA-256 of the whole body, hex.
    pub sha256: String,
    /// The first bytes of the body, as `prefix_encoding` says.
    pub prefix: String,
    pub prefix_encoding: PrefixEncoding,
    /// How many bytes of the body `prefix` holds (`len` when it holds all of it).
    pub prefix_len: u64,
}

/// How [`BodyDigest::prefix`] holds the body's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixEncoding {
    /// UTF-8 text, as sent.
    Text,
    /// Standard base64 (the bytes are not UTF-8 text, or hold control characters).
    Base64,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl RawRequest {
    /// The bounded form of a request with `target` and, when it was read, `body`.
    pub fn new(target: &str, body: Option<&[u8]>) -> Self {
        let kept = json_prefix(target, TARGET_MAX);
        RawRequest {
            target_len: target.len() as u64,
            target_truncated: kept.len() < target.len(),
            target: kept.to_owned(),
            body: body.map(BodyDigest::new),
        }
    }
}

impl BodyDigest {
    pub fn new(body: &[u8]) -> Self {
        let sha256 = hex::encode(Sha256::digest(body));
        let head = &body[..body.len().min(BODY_PREFIX_MAX)];
        // Text when the head is UTF-8 (a character cut at the end is dropped) without control
        // characters other than tab and line breaks: those cost up to six bytes each in JSON.
        let text = match std::str::from_utf8(head) {
            Ok(text) => Some(text),
            Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
            Err(_) => None,
        }
        .filter(|t| {
            !t.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        });
        let (prefix, prefix_encoding, prefix_len) = match text {
            Some(text) => {
                let kept = json_prefix(text, BODY_PREFIX_MAX);
                (kept.to_owned(), PrefixEncoding::Text, kept.len())
            }
            None => {
                // Base64 turns 3 bytes into 4.
                let raw = &body[..body.len().min(BODY_PREFIX_MAX / 4 * 3)];
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                (encoded, PrefixEncoding::Base64, raw.len())
            }
        };
        BodyDigest {
            len: body.len() as u64,
            sha256,
            prefix,
            prefix_encoding,
            prefix_len: prefix_len as u64,
        }
    }
}

/// The longest prefix of `text` whose JSON string encoding (as `serde_json` writes it, without
/// the quotes) takes at most `max` bytes.
pub fn json_prefix(text: &str, max: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + cost > max {
            return &text[..at];
        }
        used += cost;
    }
    text
}

/// Refusals from one client, counted instead of recorded one by one (see `refusal_summary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalSummary {
    /// The client: an IPv4 address, or the /64 an IPv6 address belongs to.
    pub client: String,
    /// Refusals counted.
    pub count: u64,
    /// When the first and the last of them were refused.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// How many were refused with each error code.
    pub codes: BTreeMap<String, u64>,
    /// How many used each method (a few distinct methods are named; the rest count as `other`).
    pub methods: BTreeMap<String, u64>,
}

impl Event {
    /// Cut every field a refused client could make large to a bounded size: the method
    /// ([`METHOD_MAX`]), the canonical path ([`TARGET_MAX`]), the detail, which may quote the
    /// request ([`DETAIL_MAX`]), `client-request-id` and the token's claims ([`Actor::bounded`]).
    /// With [`RawRequest`] this makes a refusal's record bounded whatever the client sent.
    pub fn bound_for_refusal(&mut self) {
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
        }
    }

    /// An event about a governed request, with what the request says filled: method, canonical
    /// path, API version, partner, operation kind, and the path its state is read from
    /// (`None` when the operation has none: reads, the legacy policy, a partner not known yet).
    pub fn governed(
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
    pub prev_hash: String,
    /// `sha256(prev_hash ‖ canonical JSON of {seq, event})`, hex.
    pub hash: String,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_len(s: &str) -> usize {
        // The JSON string without its quotes: what the event holds.
        serde_json::to_string(s).unwrap().len() - 2
    }

    #[test]
    fn a_long_target_is_cut_at_its_bound_and_marked() {
        let target = format!("/v1.0/policies/{}?x=1", "a".repeat(10_000));
        let raw = RawRequest::new(&target, None);
        assert_eq!(raw.target.len(), TARGET_MAX);
        assert!(target.starts_with(&raw.target));
        assert_eq!(raw.target_len, target.len() as u64);
        assert!(raw.target_truncated);
        assert!(raw.body.is_none());
        let short = RawRequest::new("/v1.0/$batch", None);
        assert_eq!(short.target, "/v1.0/$batch");
        assert!(!short.target_truncated);
    }

    #[test]
    fn the_bound_counts_json_escapes_and_never_splits_a_character() {
        let nasty = "\u{1}\"\\é\t".repeat(2000);
        let raw = RawRequest::new(&nasty, None);
        assert!(stored_len(&raw.target) <= TARGET_MAX);
        assert!(stored_len(&raw.target) > TARGET_MAX - 6);
        assert!(nasty.starts_with(&raw.target));
        assert_eq!(json_prefix("abc", 2), "ab");
        assert_eq!(json_prefix("é", 1), "");
        assert_eq!(json_prefix("\u{1}", 5), "");
    }

    #[test]
    fn a_body_is_kept_as_its_length_hash_and_a_bounded_prefix() {
        let body = format!("{{\"displayName\":\"{}\"}}", "x".repeat(1 << 20));
        let d = BodyDigest::new(body.as_bytes());
        assert_eq!(d.len, body.len() as u64);
        assert_eq!(d.sha256, hex::encode(Sha256::digest(body.as_bytes())));
        assert_eq!(d.prefix_encoding, PrefixEncoding::Text);
        // The three quotes in it cost two bytes each as stored.
        assert_eq!(stored_len(&d.prefix), BODY_PREFIX_MAX);
        assert_eq!(d.prefix.len(), BODY_PREFIX_MAX - 3);
        assert_eq!(d.prefix_len, d.prefix.len() as u64);
        assert!(body.starts_with(&d.prefix));

        let small = BodyDigest::new(b"{\"a\":1}\n");
        assert_eq!(
            (small.prefix.as_str(), small.prefix_len),
            ("{\"a\":1}\n", 8)
        );
    }

    #[test]
    fn a_binary_or_control_laden_body_prefix_is_base64() {
        let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let d = BodyDigest::new(&binary);
        assert_eq!(d.prefix_encoding, PrefixEncoding::Base64);
        assert!(d.prefix.len() <= BODY_PREFIX_MAX);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&d.prefix)
            .unwrap();
        assert_eq!(decoded, binary[..decoded.len()]);
        assert_eq!(d.prefix_len, decoded.len() as u64);

        let controls = BodyDigest::new("\u{1}".repeat(5000).as_bytes());
        assert_eq!(controls.prefix_encoding, PrefixEncoding::Base64);
        assert!(controls.prefix.len() <= BODY_PREFIX_MAX);
    }

    #[test]
    fn a_refusal_keeps_bounded_claims_and_the_token_fingerprint() {
        let huge = "r".repeat(100_000);
        let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
        e.actor = Actor {
            upn: Some(huge.clone()),
            roles: vec![huge.clone(); 1000],
            token_hmac: Some("ab".repeat(32)),
            caller_address: Some("192.0.2.1:1234".into()),
            ..Actor::default()
        };
        e.client_request_id = Some(huge.clone());
        e.method = huge.clone();
        e.canonical_path = huge.clone();
        e.detail = Some(huge);
        e.bound_for_refusal();
        assert_eq!(e.method.len(), METHOD_MAX);
        assert_eq!(e.canonical_path.len(), TARGET_MAX);
        assert_eq!(e.detail.as_ref().unwrap().len(), DETAIL_MAX);
        assert_eq!(e.actor.upn.as_ref().unwrap().len(), CLAIM_MAX);
        assert_eq!(e.actor.roles.len(), CLAIMS_LIST_MAX);
        assert!(e.actor.roles.iter().all(|r| r.len() == CLAIM_MAX));
        assert_eq!(
            e.actor.token_hmac.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(e.client_request_id.as_ref().unwrap().len(), CLAIM_MAX);
        assert!(serde_json::to_string(&e).unwrap().len() < 16 * 1024);
    }

    #[test]
    fn a_utf8_character_cut_by_the_prefix_bound_stays_text() {
        // 4095 ASCII bytes then a 2-byte character across the 4096 boundary.
        let body = format!("{}é and more", "a".repeat(BODY_PREFIX_MAX - 1));
        let d = BodyDigest::new(body.as_bytes());
        assert_eq!(d.prefix_encoding, PrefixEncoding::Text);
        assert_eq!(d.prefix, "a".repeat(BODY_PREFIX_MAX - 1));
    }
}
