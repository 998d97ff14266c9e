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

/// One operation's row.
pub(super) fn write(op: &Operation, out: &mut Vec<u8>) -> Result<(), StoreError> {
    // Writing to a Vec cannot fail.
    let _ = write_csv_row(out, row(op)?);
    Ok(())
}

fn row(op: &Operation) -> Result<Vec<String>, StoreError> {
    let s = &op.summary;
    let e = shape::first(op);
    let a = &e.actor;
    let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
    let outcome = match Outcome::of(op) {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Unknown => "unknown",
    };
    let diff = shape::diff(op)?.map(|d| d.to_string()).unwrap_or_default();
    Ok(vec![
        s.operation_id.to_string(),
        time_micros(&s.first_time),
        time_micros(&s.last_time),
        s.operation.to_string(),
        text(s.partner.as_ref().map(|p| p.as_str())),
        text(s.display_name.as_deref()),
        text(a.oid.as_deref()),
        text(a.upn.as_deref()),
        text(a.appid.as_deref()),
        text(a.app_displayname.as_deref()),
        shape::caller_ip(a).unwrap_or_default(),
        e.method.to_string(),
        e.canonical_path.to_string(),
        e.api_version.to_string(),
        text(s.decision.map(|d| d.as_str())),
        text(s.rule.as_deref()),
        s.status.map(|st| st.to_string()).unwrap_or_default(),
        outcome.to_owned(),
        text(s.effect.map(|e| e.as_str())),
        s.drift.to_string(),
        text(s.approval_id.as_deref()),
        text(s.terminal.map(|k| k.as_str())),
        text(shape::detail(op)),
        text(e.client_request_id.as_deref()),
        text(shape::request_id(op)),
        op.events.len().to_string(),
        s.first_seq.to_string(),
        text(op.events.last().map(|r| r.hash)),
        diff,
    ])
}

/// One cell: neutralised if a spreadsheet would run it (see the module documentation), then
/// quoted as RFC 4180 asks when it holds a comma, quote, CR or LF (or edge spaces, which some
/// readers trim).
pub(crate) fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    let needs_quotes =
        field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// One row, CRLF-terminated.
pub(crate) fn write_csv_row(
    out: &mut impl Write,
    fields: impl IntoIterator<Item = String>,
) -> io::Result<()> {
    let line: Vec<String> = fields.into_iter().map(|f| csv_field(&f)).collect();
    out.write_all(line.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}
