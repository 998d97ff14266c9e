//! A refusal's record, bounded: whatever a refused client sends, its `denied` event costs the
//! log a bounded amount. The request is kept as [`RawRequest`] (target cut at a bound, body as
//! length, hash and a prefix) instead of its body; claims, method, path and detail are cut by
//! `Actor::bounded` and `Event::bound_for_refusal`; refusals above a client's rate are counted
//! into one [`RefusalSummary`] instead of recorded one by one.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most bytes kept of each caller-supplied text (a claim, `client-request-id`) in a refusal.
pub(crate) const CLAIM_MAX: usize = 256;
/// Most `roles`/`scp` entries kept in a refusal.
pub(crate) const CLAIMS_LIST_MAX: usize = 32;
/// Most bytes of a refused request's target kept, as stored (JSON-escaped).
pub(crate) const TARGET_MAX: usize = 2048;
/// Most bytes of a refused request's body prefix kept, as stored (JSON-escaped text, or base64).
pub(crate) const BODY_PREFIX_MAX: usize = 4096;
/// Most bytes of a refused request's method kept (Graph's methods have at most 6).
pub(crate) const METHOD_MAX: usize = 32;
/// Most bytes of a refusal's detail kept (its message may quote the request).
pub(crate) const DETAIL_MAX: usize = 2048;

/// A refused request as received, in a bounded form: the target exactly as sent (cut at
/// [`TARGET_MAX`]), and for the body its length, SHA-256 and a prefix (at most
/// [`BODY_PREFIX_MAX`] stored bytes) — never the whole body. Enough for an auditor to see what was
/// tried and to match a body they hold against the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RawRequest {
    /// The request target as received: path and query of a top-level request, the `url` of a
    /// `$batch` sub-request.
    pub(crate) target: String,
    /// Bytes in the whole target.
    pub(crate) target_len: u64,
    /// `target` holds only the start of it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) target_truncated: bool,
    /// The body, when syncgate read it (a body refused while it was being read, for being too
    /// large, or a request refused on its head alone, has none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<BodyDigest>,
}

/// A body in bounded form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BodyDigest {
    /// Bytes in the whole body.
    pub(crate) len: u64,
    /// SHA-256 of the whole body, hex.
    pub(crate) sha256: String,
    /// The first bytes of the body, as `prefix_encoding` says.
    pub(crate) prefix: String,
    pub(crate) prefix_encoding: PrefixEncoding,
    /// How many bytes of the body `prefix` holds (`len` when it holds all of it).
    pub(crate) prefix_len: u64,
}

/// How [`BodyDigest::prefix`] holds the body's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PrefixEncoding {
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
    pub(crate) fn new(target: &str, body: Option<&[u8]>) -> Self {
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
    pub(crate) fn new(body: &[u8]) -> Self {
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
pub(crate) fn json_prefix(text: &str, max: usize) -> &str {
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
pub(crate) struct RefusalSummary {
    /// The client: an IPv4 address, or the /64 an IPv6 address belongs to.
    pub(crate) client: String,
    /// Refusals counted.
    pub(crate) count: u64,
    /// When the first and the last of them were refused.
    pub(crate) first: DateTime<Utc>,
    pub(crate) last: DateTime<Utc>,
    /// How many were refused with each error code.
    pub(crate) codes: BTreeMap<String, u64>,
    /// How many used each method (a few distinct methods are named; the rest count as `other`).
    pub(crate) methods: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Event, EventKind};
    use uuid::Uuid;

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
