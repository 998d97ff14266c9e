//! `syncgate audit list --operations`: one row per governed operation, its events folded, newest
//! first, with the admin API's filters, read straight from the database.
//!
//! Auditors ask about changes, not events ("who changed partner X last quarter, who approved
//! it"); this is `GET /api/v1/operations` for the machine the log is on, through the very same
//! query (`StoreReader::operations`), so the two never disagree on what a filter selects. It pages
//! through the store (flat memory for any log) and, when `--limit` stops it early, says on stderr
//! which `--cursor` continues the listing.

use std::io::{self, BufWriter, Write};

use anyhow::Context;

use super::{ListArgs, ListFormat};
use crate::audit::{Decision, EventKind, Operation};
use crate::cli::render::{
    FIXED, JsonArray, JsonLayout, Layout, dash, effect_name, grow_widths, ignore_closed_pipe,
    terminal_columns, time_micros, time_secs, write_aligned,
};
use crate::export::write_csv_row;
use crate::store::{MAX_LIMIT, OperationFilter, OperationSummary, StoreReader};

pub(super) async fn run(reader: &StoreReader, args: ListArgs) -> anyhow::Result<()> {
    let filter = OperationFilter {
        partner: args.partner,
        actor: args.actor,
        operation: args.kind.as_deref().map(Operation::from),
        decision: args.decision,
        rule: args.rule,
        effect: args.effect,
        status: args.status,
        drift: args.drift,
        since: args.since,
        until: args.until,
        text: args.text,
    };
    let mut cursor = args.cursor;
    let mut remaining = args.limit;
    let mut out = Output::new(args.format);
    loop {
        let page = remaining.map_or(MAX_LIMIT, |r| r.min(MAX_LIMIT));
        if page == 0 {
            break;
        }
        let found = reader
            .operations(&filter, cursor.as_ref(), page)
            .await
            .with_context(|| format!("cannot list the operations of {}", reader.location()))?;
        if let Some(r) = &mut remaining {
            *r -= found.operations.len() as u32;
        }
        if !ignore_closed_pipe(out.page(&found.operations))? {
            return Ok(());
        }
        cursor = found.next;
        let Some(next) = cursor else { break };
        if remaining == Some(0) {
            eprintln!(
                "syncgate: more operations match; continue with --cursor {}.",
                next.encode()
            );
            break;
        }
    }
    ignore_closed_pipe(out.finish()).map(|_| ())
}

const TABLE_HEADER: [&str; 11] = [
    "STARTED",
    "OPERATION",
    "PARTNER",
    "ACTOR",
    "DECISION",
    "RULE",
    "STATUS",
    "EFFECT",
    "DRIFT",
    "OUTCOME",
    "OPERATION ID",
];

/// Ids may be cut to a GUID's first eight characters on a terminal; times, decisions, statuses
/// and outcomes never are.
const TABLE_FLOORS: [usize; 11] = [FIXED, 9, 9, 8, FIXED, 8, FIXED, 7, FIXED, FIXED, 12];

const CSV_HEADER: [&str; 17] = [
    "operation_id",
    "operation",
    "partner_tenant_id",
    "actor_oid",
    "actor_upn",
    "actor_appid",
    "decision",
    "rule",
    "status",
    "effect",
    "drift",
    "approval_id",
    "display_name",
    "first_time",
    "last_time",
    "terminal",
    "first_seq",
];

/// Writes pages of operations in one format.
struct Output {
    format: ListFormat,
    out: BufWriter<io::Stdout>,
    written: usize,
    /// Table column widths: they only grow, so later pages stay aligned with earlier ones.
    widths: Vec<usize>,
    json: JsonArray,
    columns: Option<usize>,
}

impl Output {
    fn new(format: ListFormat) -> Self {
        Output {
            format,
            out: BufWriter::new(io::stdout()),
            written: 0,
            widths: TABLE_HEADER.iter().map(|h| h.len()).collect(),
            json: JsonArray::new(JsonLayout::for_stdout()),
            columns: terminal_columns(),
        }
    }

    fn page(&mut self, operations: &[OperationSummary]) -> io::Result<()> {
        match self.format {
            ListFormat::Table => {
                let rows: Vec<[String; 11]> = operations.iter().map(table_row).collect();
                grow_widths(&mut self.widths, &rows);
                let layout = Layout::fit(&self.widths, &TABLE_FLOORS, self.columns);
                if self.written == 0 {
                    write_aligned(&mut self.out, &TABLE_HEADER.map(str::to_owned), &layout)?;
                }
                for row in &rows {
                    write_aligned(&mut self.out, row, &layout)?;
                }
            }
            ListFormat::Json => {
                for operation in operations {
                    self.json.item(&mut self.out, operation)?;
                }
            }
            ListFormat::Jsonl => {
                for operation in operations {
                    serde_json::to_writer(&mut self.out, operation)?;
                    self.out.write_all(b"\n")?;
                }
            }
            ListFormat::Csv => {
                if self.written == 0 {
                    write_csv_row(&mut self.out, CSV_HEADER.map(str::to_owned))?;
                }
                for operation in operations {
                    write_csv_row(&mut self.out, csv_row(operation))?;
                }
            }
        }
        self.written += operations.len();
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.format {
            ListFormat::Json => self.json.finish(&mut self.out)?,
            ListFormat::Table if self.written == 0 => self.out.write_all(b"no operations.\n")?,
            _ => {}
        }
        self.out.flush()
    }
}

fn actor(s: &OperationSummary) -> String {
    let a = &s.actor;
    dash(a.upn.as_deref().or(a.oid.as_deref()).or(a.appid.as_deref()))
}

fn table_row(s: &OperationSummary) -> [String; 11] {
    [
        time_secs(&s.first_time),
        dash(Some(s.operation.as_str())),
        dash(s.partner.as_deref()),
        actor(s),
        dash(s.decision.map(Decision::as_str)),
        dash(s.rule.as_deref()),
        dash(s.status.map(|st| st.to_string()).as_deref()),
        dash(s.effect.map(effect_name).as_deref()),
        if s.drift { "drift" } else { "-" }.to_owned(),
        dash(s.terminal.map(EventKind::as_str)),
        s.operation_id.to_string(),
    ]
}

fn csv_row(s: &OperationSummary) -> Vec<String> {
    let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
    vec![
        s.operation_id.to_string(),
        s.operation.to_string(),
        text(s.partner.as_deref()),
        text(s.actor.oid.as_deref()),
        text(s.actor.upn.as_deref()),
        text(s.actor.appid.as_deref()),
        text(s.decision.map(Decision::as_str)),
        text(s.rule.as_deref()),
        s.status.map(|st| st.to_string()).unwrap_or_default(),
        s.effect.map(effect_name).unwrap_or_default(),
        s.drift.to_string(),
        text(s.approval_id.as_deref()),
        text(s.display_name.as_deref()),
        time_micros(&s.first_time),
        time_micros(&s.last_time),
        text(s.terminal.map(EventKind::as_str)),
        s.first_seq.to_string(),
    ]
}
