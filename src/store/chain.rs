//! The hash chain: canonical JSON, sealing an event onto the head, and checking stored rows.
//!
//! Everything that decides what a hash covers lives here and nowhere else, so both backends (and
//! any future re-implementation) agree byte for byte. The rule, version 1 (`store_meta.chain_format`):
//!
//! - the hashed document is the JSON object `{"seq": n, ...every field of Event...}`;
//! - canonical form: object keys sorted by their UTF-8 bytes (recursively), no whitespace, strings
//!   and numbers exactly as `serde_json` writes them (non-ASCII kept as UTF-8, control characters
//!   escaped), arrays in their order;
//! - `hash = hex(sha256(prev_hash as 64 lower-case hex ASCII bytes ‖ canonical JSON))`, and the
//!   first event's `prev_hash` is 64 `0`s.
//!
//! The canonical JSON is also what the database stores (`audit_events.event`), so verifying needs
//! no reconstruction: re-hash the stored text, and check it re-canonicalises to itself (a row
//! edited into a different but equivalent spelling is caught too).
//!
//! The columns beside `event` are copies of some of its fields for filtering. [`Columns`] derives
//! them from the JSON, at append and at verify alike, so the two can never disagree by construction.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::Event;

/// `prev_hash` of the first event.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's last link: what the next event is sealed onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// `seq` of the last event (0 when the log is empty).
    pub(crate) seq: i64,
    /// `hash` of the last event ([`GENESIS`] when the log is empty).
    pub(crate) hash: String,
}

impl Head {
    pub(crate) fn empty() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// Why a row of `seq`, `prev_hash` and `hash`, whose link hash recomputed from its stored
    /// text ([`link_hash`]) is `recomputed`, is not the next link after this head; `Ok` when it
    /// is. The chain part of every verification (`Verifier`, and the quick pass in `quick.rs`).
    pub(crate) fn check_link(
        &self,
        seq: i64,
        prev_hash: &str,
        hash: &str,
        recomputed: &str,
    ) -> Result<(), String> {
        let expected_seq = self.seq + 1;
        if seq != expected_seq {
            return Err(if seq > expected_seq {
                format!(
                    "seq jumps from {} to {seq}: {} event(s) missing",
                    self.seq,
                    seq - expected_seq
                )
            } else {
                format!("seq {seq} where seq {expected_seq} was expected")
            });
        }
        if prev_hash != self.hash {
            return Err(format!(
                "prev_hash {prev_hash} is not the previous event's hash {}",
                self.hash
            ));
        }
        if hash != recomputed {
            return Err(format!(
                "hash {hash} does not match the stored event (recomputed {recomputed})"
            ));
        }
        Ok(())
    }

    /// Move the head onto `row` if it is the next link (the next seq, sealed onto this hash);
    /// otherwise say why not. Copying a log appends rows as they were, so it checks each.
    pub(crate) fn advance(&mut self, row: &StoredRow) -> Result<(), String> {
        if row.seq != self.seq + 1 || row.prev_hash != self.hash {
            return Err(format!(
                "event seq {} does not continue the chain whose head is seq {}",
                row.seq, self.seq
            ));
        }
        self.seq = row.seq;
        self.hash = row.hash.clone();
        Ok(())
    }
}

/// The canonical JSON text of `value` (see the module documentation).
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Strings, numbers, booleans and null exactly as `serde_json` writes them.
fn write_scalar(value: &Value, out: &mut String) {
    // Serialising a scalar `Value` cannot fail; `Display` is serde_json's compact writer.
    out.push_str(&value.to_string());
}

/// `hex(sha256(prev_hash ‖ canonical))`.
pub(crate) fn link_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

/// The filterable copies of an event's fields, as the `audit_events` columns hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Columns {
    pub(crate) event_id: String,
    pub(crate) operation_id: String,
    pub(crate) kind: String,
    /// RFC 3339 UTC, six fractional digits, `Z`: fixed width, so text order is time order.
    pub(crate) time: String,
    pub(crate) partner_tenant_id: Option<String>,
    pub(crate) operation: Option<String>,
    pub(crate) actor_oid: Option<String>,
    pub(crate) actor_upn: Option<String>,
    pub(crate) actor_appid: Option<String>,
    pub(crate) decision: Option<String>,
    pub(crate) upstream_status: Option<i64>,
    pub(crate) state_path: Option<String>,
}

/// The `time` column's format for `t` (also used to compare against it in filters).
pub(crate) fn time_column(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Columns {
    /// Derive the columns from an event document (with or without `seq`).
    pub(crate) fn from_json(doc: &Map<String, Value>) -> Result<Columns, String> {
        let text = |key: &str| -> Result<String, String> {
            doc.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("field {key} is missing or not a string"))
        };
        let optional = |v: Option<&Value>, key: &str| -> Result<Option<String>, String> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("field {key} is not a string")),
            }
        };
        let time = text("time")?;
        let time = DateTime::parse_from_rfc3339(&time)
            .map_err(|e| format!("field time is not RFC 3339: {e}"))?
            .with_timezone(&Utc);
        let actor = match doc.get("actor") {
            Some(Value::Object(actor)) => Some(actor),
            None | Some(Value::Null) => None,
            Some(_) => return Err("field actor is not an object".into()),
        };
        let actor_field = |key: &str| optional(actor.and_then(|a| a.get(key)), key);
        // `operation` is a required string in Event; an empty one (events recorded before the
        // classifier names it) is stored as NULL so filters treat it as "none".
        let operation = optional(doc.get("operation"), "operation")?.filter(|s| !s.is_empty());
        let upstream_status = match doc.get("upstream_status") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| "field upstream_status is not an integer".to_owned())?,
            ),
        };
        Ok(Columns {
            event_id: text("event_id")?,
            operation_id: text("operation_id")?,
            kind: text("kind")?,
            time: time_column(&time),
            partner_tenant_id: optional(doc.get("partner_tenant_id"), "partner_tenant_id")?,
            operation,
            actor_oid: actor_field("oid")?,
            actor_upn: actor_field("upn")?,
            actor_appid: actor_field("appid")?,
            decision: optional(doc.get("decision"), "decision")?,
            upstream_status,
            state_path: optional(doc.get("state_path"), "state_path")?,
        })
    }

    /// The first column whose value differs from `other`'s, by name.
    pub(crate) fn first_difference(&self, other: &Columns) -> Option<&'static str> {
        let pairs: [(&'static str, bool); 12] = [
            ("event_id", self.event_id == other.event_id),
            ("operation_id", self.operation_id == other.operation_id),
            ("kind", self.kind == other.kind),
            ("time", self.time == other.time),
            (
                "partner_tenant_id",
                self.partner_tenant_id == other.partner_tenant_id,
            ),
            ("operation", self.operation == other.operation),
            ("actor_oid", self.actor_oid == other.actor_oid),
            ("actor_upn", self.actor_upn == other.actor_upn),
            ("actor_appid", self.actor_appid == other.actor_appid),
            ("decision", self.decision == other.decision),
            (
                "upstream_status",
                self.upstream_status == other.upstream_status,
            ),
            ("state_path", self.state_path == other.state_path),
        ];
        pairs.into_iter().find(|(_, same)| !same).map(|(n, _)| n)
    }
}

/// An event turned into JSON and columns, ready to be sealed; done before the write transaction
/// so the transaction holds the lock only for hashing and inserting.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The event, with its time truncated to microseconds (what the `time` column can hold).
    pub(crate) event: Event,
    doc: Map<String, Value>,
    pub(crate) columns: Columns,
}

impl Prepared {
    pub(crate) fn new(mut event: Event) -> Result<Prepared, String> {
        // Truncate to what the `time` column (and PostgreSQL's timestamps) can represent, so the
        // hashed JSON, the column and what readers get back are the same instant.
        let micros = event.time.timestamp_micros();
        event.time = DateTime::from_timestamp_micros(micros).unwrap_or(event.time);
        let doc = match serde_json::to_value(&event) {
            Ok(Value::Object(doc)) => doc,
            Ok(_) => return Err("an event did not serialise to a JSON object".into()),
            Err(e) => return Err(format!("an event cannot be serialised: {e}")),
        };
        let columns = Columns::from_json(&doc)?;
        Ok(Prepared {
            event,
            doc,
            columns,
        })
    }

    /// Place the event after `head`: its seq, prev_hash, canonical JSON and hash. Advances `head`.
    pub(crate) fn seal(&self, head: &mut Head) -> Sealed {
        let seq = head.seq + 1;
        let mut doc = self.doc.clone();
        doc.insert("seq".into(), Value::from(seq));
        let canonical = canonical_json(&Value::Object(doc));
        let hash = link_hash(&head.hash, &canonical);
        let prev_hash = std::mem::replace(&mut head.hash, hash.clone());
        head.seq = seq;
        Sealed {
            seq,
            prev_hash,
            hash,
            canonical,
        }
    }
}

/// An event's place in the chain, computed inside the write transaction.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub(crate) seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    /// The canonical JSON that was hashed; stored verbatim in `audit_events.event`.
    pub(crate) canonical: String,
}

/// What one write transaction appends after the head it finds (read under the write lock).
pub(crate) enum Append<'a> {
    /// New events, sealed onto the head.
    Seal(&'a [&'a Prepared]),
    /// Rows exactly as stored elsewhere (a copied log); each must continue the head.
    Copy(&'a [StoredRow]),
    /// New events, sealed onto the head after the guard's statements changed the approval
    /// gate's tables (`approvals.rs`); a guard that finds the request changed writes nothing.
    Guarded(&'a super::approvals::Guard, &'a [&'a Prepared]),
}

impl<'a> Append<'a> {
    /// The guard to run before the events, when there is one.
    pub(crate) fn guard(&self) -> Option<&'a super::approvals::Guard> {
        match self {
            Append::Guarded(guard, _) => Some(guard),
            _ => None,
        }
    }
}

impl Append<'_> {
    /// The rows to insert after `head`, or why they cannot follow it.
    pub(crate) fn rows(&self, mut head: Head) -> Result<Vec<StoredRow>, String> {
        match self {
            Append::Seal(events) | Append::Guarded(_, events) => Ok(events
                .iter()
                .map(|event| {
                    let sealed = event.seal(&mut head);
                    StoredRow {
                        seq: sealed.seq,
                        columns: event.columns.clone(),
                        event: sealed.canonical,
                        prev_hash: sealed.prev_hash,
                        hash: sealed.hash,
                    }
                })
                .collect()),
            Append::Copy(rows) => {
                for row in rows.iter() {
                    head.advance(row)?;
                }
                Ok(rows.to_vec())
            }
        }
    }
}

impl From<StoredRow> for Sealed {
    fn from(row: StoredRow) -> Sealed {
        Sealed {
            seq: row.seq,
            prev_hash: row.prev_hash,
            hash: row.hash,
            canonical: row.event,
        }
    }
}

/// A row as read back for verification: every stored column, nothing interpreted yet.
#[derive(Debug, Clone)]
pub(crate) struct StoredRow {
    pub(crate) seq: i64,
    pub(crate) columns: Columns,
    pub(crate) event: String,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// Where the chain first breaks, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    pub(crate) seq: i64,
    /// The row's `event_id` column (it may itself be what was altered).
    pub(crate) event_id: String,
    pub(crate) reason: String,
}

/// Checks rows one at a time in `seq` order, remembering only the previous link, so a log of any
/// size is verified in constant memory.
#[derive(Debug)]
pub(crate) struct Verifier {
    head: Head,
    events: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            head: Head::empty(),
            events: 0,
        }
    }
}

impl Verifier {
    /// A verifier that continues after `head`, a link already verified (a quick verification's
    /// signed prefix, `quick.rs`).
    pub(crate) fn after(head: Head) -> Verifier {
        Verifier { head, events: 0 }
    }

    /// Check the next row; `Err` names the first thing wrong with it.
    pub(crate) fn check(&mut self, row: &StoredRow) -> Result<(), Broken> {
        let broken = |reason: String| Broken {
            seq: row.seq,
            event_id: row.columns.event_id.clone(),
            reason,
        };
        self.head
            .check_link(
                row.seq,
                &row.prev_hash,
                &row.hash,
                &link_hash(&row.prev_hash, &row.event),
            )
            .map_err(broken)?;
        let doc = match serde_json::from_str::<Value>(&row.event) {
            Ok(Value::Object(doc)) => doc,
            Ok(_) => return Err(broken("the stored event is not a JSON object".into())),
            Err(e) => return Err(broken(format!("the stored event is not JSON: {e}"))),
        };
        if canonical_json(&Value::Object(doc.clone())) != row.event {
            return Err(broken("the stored event is not in canonical form".into()));
        }
        if doc.get("seq").and_then(Value::as_i64) != Some(row.seq) {
            return Err(broken(
                "the stored event's seq differs from the row's seq".into(),
            ));
        }
        let from_json = Columns::from_json(&doc).map_err(|e| broken(format!("the event's {e}")))?;
        if let Some(column) = row.columns.first_difference(&from_json) {
            return Err(broken(format!(
                "column {column} differs from the value in the stored event"
            )));
        }
        if serde_json::from_value::<Event>(Value::Object(doc)).is_err() {
            return Err(broken("the stored event is not a valid audit event".into()));
        }
        self.head = Head {
            seq: row.seq,
            hash: row.hash.clone(),
        };
        self.events += 1;
        Ok(())
    }

    /// Rows accepted so far.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// The last accepted row's hash, `None` for an empty log.
    pub(crate) fn head(&self) -> Option<&str> {
        (self.events > 0).then_some(self.head.hash.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::audit::EventKind;

    #[test]
    fn canonical_json_sorts_keys_recursively_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "s"}, "A": 2.5});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":2.5,"a":{"c":"s","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_does_not_depend_on_insertion_order() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":1,"q":2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "y" : { "q":2, "p":1 }, "x" : 1 }"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn canonical_json_keeps_unicode_as_utf8_and_escapes_controls() {
        let v = json!({"é": "naïve — ✓ 𝄞", "ctl": "a\"b\\c\n\u{1}", "ä": 1});
        let text = canonical_json(&v);
        // Keys sorted by UTF-8 bytes: "ctl" (0x63) < "ä" (0xC3 0xA4) < "é" (0xC3 0xA9).
        assert_eq!(
            text,
            "{\"ctl\":\"a\\\"b\\\\c\\n\\u0001\",\"ä\":1,\"é\":\"naïve — ✓ 𝄞\"}"
        );
        let reparsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical_json(&reparsed), text, "a fixed point");
    }

    #[test]
    fn canonical_json_keeps_serde_json_number_forms() {
        let v: Value =
            serde_json::from_str(r#"[1, -0, 1.0, 1e20, 0.1, 18446744073709551615]"#).unwrap();
        let text = canonical_json(&v);
        assert_eq!(text, "[1,-0.0,1.0,1e+20,0.1,18446744073709551615]");
        assert_eq!(canonical_json(&serde_json::from_str(&text).unwrap()), text);
    }

    #[test]
    fn link_hash_is_sha256_of_the_prev_hash_text_then_the_json() {
        // printf '%s{}' 000…000 | sha256sum
        assert_eq!(
            link_hash(GENESIS, "{}"),
            "5508d2b710e64bc470079e1b211d9c58e21011e59d0559e422345dc19d659a75"
        );
    }

    fn event(kind: EventKind) -> Event {
        let mut e = Event::new(Uuid::now_v7(), kind);
        e.partner_tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551".parse().ok();
        e.actor.upn = Some("alice@contoso.com".into());
        e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
        e
    }

    #[test]
    fn sealing_links_each_event_to_the_previous_hash() {
        let mut head = Head::empty();
        let first = Prepared::new(event(EventKind::Received))
            .unwrap()
            .seal(&mut head);
        let second = Prepared::new(event(EventKind::Completed))
            .unwrap()
            .seal(&mut head);
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.prev_hash, GENESIS);
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(first.hash, link_hash(GENESIS, &first.canonical));
        assert_eq!(
            head,
            Head {
                seq: 2,
                hash: second.hash.clone()
            }
        );
        assert!(first.canonical.starts_with("{\"actor\":{"));
        assert!(first.canonical.contains("\"seq\":1,"));
    }

    #[test]
    fn the_time_column_is_fixed_width_microseconds_and_matches_the_json() {
        let mut e = event(EventKind::Received);
        e.time = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = Prepared::new(e).unwrap();
        assert_eq!(p.columns.time, "2025-03-04T05:06:07.123456Z");
        assert_eq!(p.event.time.timestamp_subsec_nanos(), 123_456_000);
        let mut whole = event(EventKind::Received);
        whole.time = DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            Prepared::new(whole).unwrap().columns.time,
            "2025-03-04T05:06:07.000000Z"
        );
    }

    fn stored(sealed: &Sealed, p: &Prepared) -> StoredRow {
        StoredRow {
            seq: sealed.seq,
            columns: p.columns.clone(),
            event: sealed.canonical.clone(),
            prev_hash: sealed.prev_hash.clone(),
            hash: sealed.hash.clone(),
        }
    }

    #[test]
    fn the_verifier_accepts_a_sealed_chain_and_names_the_first_bad_row() {
        let mut head = Head::empty();
        let rows: Vec<StoredRow> = (0..3)
            .map(|_| {
                let p = Prepared::new(event(EventKind::Received)).unwrap();
                stored(&p.seal(&mut head), &p)
            })
            .collect();
        let mut v = Verifier::default();
        for r in &rows {
            v.check(r).unwrap();
        }
        assert_eq!(v.events(), 3);
        assert_eq!(v.head(), Some(head.hash.as_str()));

        let mut tampered = rows.clone();
        tampered[1].event = tampered[1].event.replace("alice", "mallory");
        let mut v = Verifier::default();
        v.check(&tampered[0]).unwrap();
        let broken = v.check(&tampered[1]).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("hash"), "{}", broken.reason);

        let mut v = Verifier::default();
        v.check(&rows[0]).unwrap();
        let broken = v.check(&rows[2]).unwrap_err();
        assert!(broken.reason.contains("missing"), "{}", broken.reason);

        let mut column = rows.clone();
        column[0].columns.actor_upn = Some("mallory@contoso.com".into());
        let broken = Verifier::default().check(&column[0]).unwrap_err();
        assert!(broken.reason.contains("actor_upn"), "{}", broken.reason);
    }

    #[test]
    fn a_rehashed_but_non_canonical_event_is_refused() {
        let p = Prepared::new(event(EventKind::Received)).unwrap();
        let sealed = p.seal(&mut Head::empty());
        let mut row = stored(&sealed, &p);
        // Same document, different spelling, hash recomputed to match: still refused.
        row.event = row.event.replacen('{', "{ ", 1);
        row.hash = link_hash(GENESIS, &row.event);
        let broken = Verifier::default().check(&row).unwrap_err();
        assert!(broken.reason.contains("canonical"), "{}", broken.reason);
    }
}
