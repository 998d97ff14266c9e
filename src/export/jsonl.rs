//! `jsonl`: every chained event of the selected operations, one JSON line each: the event's
//! stored canonical JSON (the text that was hashed, `seq` inside) with `hash` and `prev_hash`
//! added in front. The same fields as a `Recorded` anywhere else, so whoever receives the file
//! can check each link: drop `hash` and `prev_hash` from a line, write the rest as canonical
//! JSON (keys sorted, no whitespace; it already is), and `hash` is
//! `sha256(prev_hash || that text)`.
//!
//! The text is copied, never parsed and written again: that was most of an export's cost, and
//! an event recorded by an older syncgate is then exported exactly as it was hashed.

use crate::store::{FoldedOperation, RawEvent, StoreError};

/// The operation's events, in chain order, one line each.
pub(super) fn write(op: &FoldedOperation<RawEvent>, out: &mut Vec<u8>) -> Result<(), StoreError> {
    for event in &op.events {
        // The stored text is canonical JSON: an object, with every control character escaped.
        // Anything else (a row edited in the database) is refused rather than copied, so it
        // cannot break the file's one-record-per-line framing.
        let body = event
            .event
            .strip_prefix('{')
            .filter(|rest| rest.len() > 1 && rest.ends_with('}'))
            .filter(|rest| !rest.bytes().any(|b| b == b'\n' || b == b'\r'))
            .ok_or_else(|| {
                StoreError::corrupt(format!(
                    "event seq {} is not stored as canonical JSON",
                    event.seq
                ))
            })?;
        out.extend_from_slice(b"{\"hash\":");
        push_hex_string(out, &event.hash, event.seq)?;
        out.extend_from_slice(b",\"prev_hash\":");
        push_hex_string(out, &event.prev_hash, event.seq)?;
        out.push(b',');
        out.extend_from_slice(body.as_bytes());
        out.push(b'\n');
    }
    Ok(())
}

/// A hash as a JSON string; hashes are hex, so nothing needs escaping (anything else is
/// refused).
fn push_hex_string(out: &mut Vec<u8>, hex: &str, seq: i64) -> Result<(), StoreError> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::corrupt(format!(
            "event seq {seq} has a hash that is not hex"
        )));
    }
    out.push(b'"');
    out.extend_from_slice(hex.as_bytes());
    out.push(b'"');
    Ok(())
}
