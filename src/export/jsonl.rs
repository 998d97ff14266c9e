//! `jsonl`: every chained event of the selected operations, one JSON line each, exactly as the
//! other routes show a recorded event (`seq`, `prev_hash`, `hash`, then the event's fields), so
//! whoever receives the file can recompute each event's hash and check the links between them.

use std::io::Write;

use crate::store::FoldedOperation;

/// The operation's events, in chain order, one line each.
pub(super) fn write(op: &FoldedOperation, out: &mut Vec<u8>) -> serde_json::Result<()> {
    for recorded in &op.events {
        serde_json::to_writer(&mut *out, recorded)?;
        // Writing to a Vec cannot fail.
        let _ = out.write_all(b"\n");
    }
    Ok(())
}
