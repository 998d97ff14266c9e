//! `syncgate audit list`: the log page by page, as a table, JSON, JSON lines or CSV, so a long
//! log streams to stdout with flat memory.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, anyhow};

use super::{ListArgs, ListFormat, parse_kind};
use crate::audit::{Decision, Recorded};
use crate::cli::render::{
    FIXED, JsonArray, JsonLayout, Layout, actor_name, dash, effect_name, grow_widths,
    ignore_closed_pipe, terminal_columns, time_micros, time_secs, write_aligned,
};
use crate::export::write_csv_row;
use crate::store::{Filter, StoreReader};

/// Events per query while listing: the output streams, memory stays flat.
const PAGE: u32 = 500;

pub(super) async fn run(reader: &StoreReader, args: ListArgs) -> anyhow::Result<()> {
    let kind = args
        .kind
        .as_deref()
        .map(parse_kind)
        .transpose()
        .map_err(|e| anyhow!("invalid value for '--kind <KIND>': {e}"))?;
    let mut filter = Filter {
        partner: args.partner,
        actor: args.actor,
        since: args.since,
        until: args.until,
        kind,
        decision: args.decision,
        operation_id: None,
        limit: None,
        after_seq: args.after,
    };
    let mut remaining = args.limit;
    let mut out = Output::<Recorded>::new(args.format);
    loop {
        let page = remaining.map_or(PAGE, |r| r.min(PAGE));
        if page == 0 {
            break;
        }
        filter.limit = Some(page);
        let events = reader
            .list(&filter)
            .await
            .with_context(|| format!("cannot list {}", reader.location()))?;
        let Some(last) = events.last() else { break };
        filter.after_seq = Some(last.seq);
        if let Some(r) = &mut remaining {
            *r -= events.len() as u32;
        }
        if !ignore_closed_pipe(out.page(&events))? {
            return Ok(());
        }
        if (events.len() as u32) < page {
            break;
        }
    }
    ignore_closed_pipe(out.finish()).map(|_| ())
}

const TABLE_HEADER: [&str; 10] = [
    "SEQ",
    "TIME",
    "KIND",
    "OPERATION",
    "PARTNER",
    "ACTOR",
    "DECISION",
    "STATUS",
    "EFFECT",
    "OPERATION ID",
];

/// How narrow each table column may be cut on a terminal: at least a GUID's first eight
/// characters for ids, never for times, kinds, decisions and statuses. A typical log then fits
/// in 100 columns; `--format json` (or a pipe) shows every value in full.
const TABLE_FLOORS: [usize; 10] = [FIXED, FIXED, FIXED, 9, 9, 8, FIXED, FIXED, 7, 12];

const CSV_HEADER: [&str; 39] = [
    "seq",
    "time",
    "kind",
    "operation_id",
    "event_id",
    "operation",
    "method",
    "canonical_path",
    "state_path",
    "api_version",
    "partner_tenant_id",
    "actor_oid",
    "actor_upn",
    "actor_appid",
    "actor_app_displayname",
    "actor_tid",
    "actor_idtyp",
    "actor_roles",
    "actor_scp",
    "actor_caller_address",
    "actor_client_cert_subject",
    "actor_token_hmac",
    "client_request_id",
    "request_id",
    "decision",
    "upstream_status",
    "effect",
    "latency_ms",
    "upstream_latency_ms",
    "approval_id",
    "detail",
    "request_body",
    "before",
    "after",
    "diff",
    "rule_results",
    "raw_request",
    "refusal_summary",
    "hash",
];

/// A kind of row `audit list` prints: an event, or (`--operations`) a folded operation. Both
/// go through one [`Output`], so the four formats behave alike for either.
pub(super) trait Listed: serde::Serialize {
    const TABLE_HEADER: &'static [&'static str];
    /// How narrow each table column may be cut on a terminal.
    const TABLE_FLOORS: &'static [usize];
    const CSV_HEADER: &'static [&'static str];
    /// What an empty table says.
    const NONE: &'static str;
    fn table_row(&self) -> Vec<String>;
    fn csv_row(&self) -> Vec<String>;
}

impl Listed for Recorded {
    const TABLE_HEADER: &'static [&'static str] = &TABLE_HEADER;
    const TABLE_FLOORS: &'static [usize] = &TABLE_FLOORS;
    const CSV_HEADER: &'static [&'static str] = &CSV_HEADER;
    const NONE: &'static str = "no events.\n";
    fn table_row(&self) -> Vec<String> {
        table_row(self).into()
    }
    fn csv_row(&self) -> Vec<String> {
        csv_row(self)
    }
}

/// Writes pages of rows in one format.
pub(super) struct Output<R> {
    format: ListFormat,
    out: BufWriter<io::Stdout>,
    /// Rows written so far.
    written: usize,
    /// Table column widths: they only grow, so later pages stay aligned with earlier ones.
    widths: Vec<usize>,
    /// The `json` array being written.
    json: JsonArray,
    /// The terminal's width, if the table goes to one.
    columns: Option<usize>,
    rows: std::marker::PhantomData<fn(&R)>,
}

impl<R: Listed> Output<R> {
    pub(super) fn new(format: ListFormat) -> Self {
        Output {
            format,
            out: BufWriter::new(io::stdout()),
            written: 0,
            widths: R::TABLE_HEADER.iter().map(|h| h.len()).collect(),
            json: JsonArray::new(JsonLayout::for_stdout()),
            columns: terminal_columns(),
            rows: std::marker::PhantomData,
        }
    }

    pub(super) fn page(&mut self, rows: &[R]) -> io::Result<()> {
        match self.format {
            ListFormat::Table => {
                let cells: Vec<Vec<String>> = rows.iter().map(R::table_row).collect();
                grow_widths(&mut self.widths, &cells);
                let layout = Layout::fit(&self.widths, R::TABLE_FLOORS, self.columns);
                if self.written == 0 {
                    let header: Vec<String> =
                        R::TABLE_HEADER.iter().map(|h| (*h).to_owned()).collect();
                    write_aligned(&mut self.out, &header, &layout)?;
                }
                for row in &cells {
                    write_aligned(&mut self.out, row, &layout)?;
                }
            }
            ListFormat::Json => {
                for row in rows {
                    self.json.item(&mut self.out, row)?;
                }
            }
            ListFormat::Jsonl => {
                for row in rows {
                    serde_json::to_writer(&mut self.out, row)?;
                    self.out.write_all(b"\n")?;
                }
            }
            ListFormat::Csv => {
                if self.written == 0 {
                    write_csv_row(&mut self.out, R::CSV_HEADER.iter().map(|h| h.to_string()))?;
                }
                for row in rows {
                    write_csv_row(&mut self.out, row.csv_row())?;
                }
            }
        }
        self.written += rows.len();
        self.out.flush()
    }

    pub(super) fn finish(&mut self) -> io::Result<()> {
        match self.format {
            ListFormat::Json => self.json.finish(&mut self.out)?,
            ListFormat::Table if self.written == 0 => self.out.write_all(R::NONE.as_bytes())?,
            _ => {}
        }
        self.out.flush()
    }
}

pub(super) fn table_row(r: &Recorded) -> [String; 10] {
    let e = &r.event;
    [
        r.seq.to_string(),
        time_secs(&e.time),
        e.kind.as_str().to_owned(),
        dash(Some(e.operation.as_str())),
        dash(e.partner_tenant_id.as_deref()),
        actor_name(e),
        dash(e.decision.map(Decision::as_str)),
        dash(e.upstream_status.map(|s| s.to_string()).as_deref()),
        dash(e.effect.map(effect_name).as_deref()),
        e.operation_id.to_string(),
    ]
}

fn json_text<T: serde::Serialize>(value: &Option<T>) -> String {
    match value {
        None => String::new(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

fn csv_row(r: &Recorded) -> Vec<String> {
    let e = &r.event;
    let a = &e.actor;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let number = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    vec![
        r.seq.to_string(),
        time_micros(&e.time),
        e.kind.as_str().to_owned(),
        e.operation_id.to_string(),
        e.event_id.to_string(),
        e.operation.to_string(),
        e.method.clone(),
        e.canonical_path.clone(),
        text(&e.state_path),
        e.api_version.to_string(),
        text(&e.partner_tenant_id.as_ref().map(|p| p.to_string())),
        text(&a.oid),
        text(&a.upn),
        text(&a.appid),
        text(&a.app_displayname),
        text(&a.tid),
        text(&a.idtyp),
        serde_json::to_string(&a.roles).unwrap_or_default(),
        serde_json::to_string(&a.scp).unwrap_or_default(),
        text(&a.caller_address),
        text(&a.client_cert_subject),
        text(&a.token_hmac),
        text(&e.client_request_id),
        text(&e.request_id),
        e.decision
            .map(|d| d.as_str().to_owned())
            .unwrap_or_default(),
        number(e.upstream_status.map(u64::from)),
        e.effect.map(effect_name).unwrap_or_default(),
        number(e.latency_ms),
        number(e.upstream_latency_ms),
        text(&e.approval_id),
        text(&e.detail),
        json_text(&e.request_body),
        json_text(&e.before),
        json_text(&e.after),
        json_text(&e.diff),
        serde_json::to_string(&e.rule_results).unwrap_or_default(),
        json_text(&e.raw_request),
        json_text(&e.refusal_summary),
        r.hash.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::fitted_table;

    /// The 183-column table: a completed change by an application, with every id a GUID.
    fn wide_events() -> Vec<Recorded> {
        use crate::audit::{Effect, Event, EventKind};
        let operation = uuid::Uuid::now_v7();
        let mut events = Vec::new();
        for (seq, kind) in [(998, EventKind::Received), (999, EventKind::Completed)] {
            let mut e = Event::new(operation, kind);
            e.operation = "deleted_partner_sync_write".into();
            e.partner_tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551".parse().ok();
            e.actor.appid = Some("33333333-3333-4333-8333-333333333333".into());
            e.decision = Some(Decision::Allow);
            if kind == EventKind::Completed {
                e.upstream_status = Some(204);
                e.effect = Some(Effect::Applied);
            }
            events.push(Recorded {
                seq,
                prev_hash: String::new(),
                hash: String::new(),
                event: e,
            });
        }
        events
    }

    #[test]
    fn the_list_table_fits_a_normal_terminal_and_keeps_every_value_through_a_pipe() {
        let events = wide_events();
        let rows: Vec<[String; 10]> = events.iter().map(table_row).collect();
        let piped = fitted_table(&TABLE_HEADER, &rows, &TABLE_FLOORS, None);
        assert!(piped.lines().any(|l| l.chars().count() > 150), "{piped}");
        assert!(piped.contains(&events[0].event.operation_id.to_string()));
        let terminal = fitted_table(&TABLE_HEADER, &rows, &TABLE_FLOORS, Some(100));
        for line in terminal.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        let completed = terminal.lines().nth(2).unwrap();
        for whole in [
            "999",
            "completed",
            "allow",
            "204",
            "applied",
            "9c5d131d…",
            "3333333…",
        ] {
            assert!(completed.contains(whole), "{whole} in {completed}");
        }
        assert!(terminal.starts_with("SEQ TIME "), "{terminal}");
        assert!(
            terminal.lines().next().unwrap().ends_with("OPERATION ID"),
            "{terminal}"
        );
    }
}
