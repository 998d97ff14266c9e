//! `csv`: one row per operation, RFC 4180 (quoted only where needed, quotes doubled, CRLF line
//! ends, a header row), UTF-8, for a spreadsheet.
//!
//! A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as
//! a formula, and every text cell here can come from a caller (a display name, a UPN, a refusal
//! message quoting the request). As OWASP's "CSV Injection" page advises, such a cell gets a
//! leading `'`, which spreadsheets read as "text" and do not show; a program reading the CSV sees
//! the `'`. Nested values (the diff) are JSON text, which never starts with one of those.

use std::io::{self, Write};

use super::facts::Operation;
use super::shape::{self, Outcome};
use crate::cli::render::time_micros;
use crate::store::StoreError;

/// The header row, in column order.
pub(super) const HEADER: [&str; 29] = [
    "operation_id",
    "first_time",
    "last_time",
    "operation",
    "partner_tenant_id",
    "display_name",
    "actor_oid",
    "actor_upn",
    "actor_appid",
    "actor_app_displayname",
    "caller_ip",
    "method",
    "canonical_path",
    "api_version",
    "decision",
    "rule",
    "status",
    "outcome",
    "effect",
    "drift",
    "approval_id",
    "terminal",
    "detail",
    "client_request_id",
    "request_id",
    "events",
    "first_seq",
    "last_hash",
    "diff",
];

pub(super) fn header(out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = write_csv_row(out, HEADER.iter().map(|h| (*h).to_owned()));
}

/// One operation's row, written cell by cell into `out`.
pub(super) fn write(op: &Operation, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let s = &op.summary;
    let e = shape::first(op);
    let a = &e.actor;
    let outcome = match Outcome::of(op) {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Unknown => "unknown",
    };
    let diff = shape::diff(op)?.map(|d| d.to_string());
    let caller_ip = shape::caller_ip(a);
    let status = s.status.map(|c| c.to_string());
    let (events, first_seq) = (op.events.len().to_string(), s.first_seq.to_string());
    let cells: [Option<&str>; 29] = [
        Some(&s.operation_id.to_string()),
        Some(&time_micros(&s.first_time)),
        Some(&time_micros(&s.last_time)),
        Some(s.operation.as_str()),
        s.partner.as_ref().map(|p| p.as_str()),
        s.display_name.as_deref(),
        a.oid.as_deref(),
        a.upn.as_deref(),
        a.appid.as_deref(),
        a.app_displayname.as_deref(),
        caller_ip.as_deref(),
        Some(&*e.method),
        Some(&*e.canonical_path),
        Some(e.api_version.as_str()),
        s.decision.map(|d| d.as_str()),
        s.rule.as_deref(),
        status.as_deref(),
        Some(outcome),
        s.effect.map(|e| e.as_str()),
        Some(if s.drift { "true" } else { "false" }),
        s.approval_id.as_deref(),
        s.terminal.map(|k| k.as_str()),
        shape::detail(op),
        e.client_request_id.as_deref(),
        shape::request_id(op),
        Some(&events),
        Some(&first_seq),
        op.events.last().map(|r| r.hash),
        diff.as_deref(),
    ];
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_csv_field(out, cell.unwrap_or_default());
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// One cell, appended to `out`: neutralised if a spreadsheet would run it (see the module
/// documentation), then quoted as RFC 4180 asks when it holds a comma, quote, CR or LF (or edge
/// spaces, which some readers trim).
pub(crate) fn push_csv_field(out: &mut Vec<u8>, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let needs_quotes = field.contains([',', '"', '\n', '\r'])
        || (!formula && field.starts_with(' '))
        || field.ends_with(' ');
    if needs_quotes {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    if needs_quotes {
        for (i, part) in field.split('"').enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(part.as_bytes());
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

/// One cell as text (see [`push_csv_field`]).
#[cfg(test)]
pub(crate) fn csv_field(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len() + 2);
    push_csv_field(&mut out, field);
    // Only ASCII bytes were added around and inside valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// One row, CRLF-terminated.
pub(crate) fn write_csv_row(
    out: &mut impl Write,
    fields: impl IntoIterator<Item = String>,
) -> io::Result<()> {
    let mut line = Vec::new();
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        push_csv_field(&mut line, &field);
    }
    line.extend_from_slice(b"\r\n");
    out.write_all(&line)
}
