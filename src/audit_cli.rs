//! `syncgate audit list|show|verify`: the auditor's view of the log, from the command line.
//!
//! Every command opens the log read-only through [`StoreReader`]: it never creates a missing file,
//! needs no write access, and runs safely beside a live proxy (WAL readers do not block the
//! writer). The database comes from `--db`, else `store.path` in `--config`, else the default.
//! Output goes to stdout in the chosen format; a closed pipe (`| head`) ends quietly.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{Decision, Effect, Event, EventKind, Recorded, Snapshot};
use crate::config::RawConfig;
use crate::store::{Filter, StoreOptions, StoreReader};

/// `syncgate audit`: where the log is, and what to do with it.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The audit log's SQLite file (wins over --config).
    #[arg(long, value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,
    /// Configuration file whose store.path names the audit log.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "SYNCGATE_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List events, oldest first; every option narrows the list.
    List(ListArgs),
    /// Every event of one operation: who, what, when, the states before and after, the changes.
    Show {
        /// The operation id (the x-syncgate-audit-id response header).
        operation_id: Uuid,
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
    },
    /// Recompute the hash chain; exit 0 when it holds, non-zero naming the first broken event.
    Verify,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this partner tenant (GUID).
    #[arg(long, value_name = "GUID", value_parser = parse_guid)]
    pub partner: Option<String>,
    /// Only this actor: object id, UPN (any case) or application id.
    #[arg(long, value_name = "ID")]
    pub actor: Option<String>,
    /// From this time on: RFC 3339 (2025-06-01T08:00:00Z) or a UTC date (2025-06-01).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Before this time: RFC 3339, or a UTC date (that whole day included).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,
    /// Only this kind: received, completed, denied, recovered, drift, read.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<EventKind>,
    /// Only this decision: allow or deny.
    #[arg(long, value_name = "DECISION", value_parser = parse_decision)]
    pub decision: Option<Decision>,
    /// At most this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only events after this seq (to continue a previous listing).
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// Output formats of `audit list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns for reading.
    Table,
    /// One JSON array of events.
    Json,
    /// One JSON event per line.
    Jsonl,
    /// A header and one row per event; nested values as JSON text.
    Csv,
}

/// Output formats of `audit show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
}

fn parse_guid(s: &str) -> Result<String, String> {
    Uuid::parse_str(s)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("{s:?} is not a GUID"))
}

fn parse_time(s: &str, date_offset_days: u64) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.checked_add_days(chrono::Days::new(date_offset_days)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("{s:?} is neither RFC 3339 (2025-06-01T08:00:00Z) nor a date (2025-06-01)")
        })
}

pub(crate) fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s, 0)
}

/// A date means "until the end of that day": the start of the next one, exclusive.
pub(crate) fn parse_until(s: &str) -> Result<DateTime<Utc>, String> {
    parse_time(s, 1)
}

fn parse_kind(s: &str) -> Result<EventKind, String> {
    EventKind::parse(s).ok_or_else(|| {
        let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?} (one of: {})", kinds.join(", "))
    })
}

fn parse_decision(s: &str) -> Result<Decision, String> {
    Decision::parse(s).ok_or_else(|| format!("unknown decision {s:?} (allow or deny)"))
}

/// Run one `syncgate audit` command.
pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let path = match (args.db, args.config) {
        (Some(db), _) => db,
        (None, Some(config)) => RawConfig::load(&config)?.store.path,
        (None, None) => RawConfig::default().store.path,
    };
    let reader = StoreReader::open(&path, &StoreOptions::default()).await?;
    let result = match args.command {
        AuditCommand::List(list) => run_list(&reader, list).await,
        AuditCommand::Show {
            operation_id,
            format,
        } => run_show(&reader, operation_id, format).await,
        AuditCommand::Verify => run_verify(&reader).await,
    };
    reader.close().await;
    result
}

/// Events per query while listing: the output streams, memory stays flat.
const PAGE: u32 = 500;

async fn run_list(reader: &StoreReader, args: ListArgs) -> anyhow::Result<()> {
    let mut filter = Filter {
        partner: args.partner,
        actor: args.actor,
        since: args.since,
        until: args.until,
        kind: args.kind,
        decision: args.decision,
        operation_id: None,
        limit: None,
        after_seq: args.after,
    };
    let mut remaining = args.limit;
    let mut out = Output::new(args.format);
    loop {
        let page = remaining.map_or(PAGE, |r| r.min(PAGE));
        if page == 0 {
            break;
        }
        filter.limit = Some(page);
        let events = reader
            .list(&filter)
            .await
            .with_context(|| format!("cannot list {}", reader.path().display()))?;
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

/// `Ok(false)` when stdout was closed by the reader (stop quietly), errors otherwise.
pub(crate) fn ignore_closed_pipe(result: io::Result<()>) -> anyhow::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes pages of events in one format.
struct Output {
    format: ListFormat,
    out: BufWriter<io::Stdout>,
    /// Events written so far.
    written: usize,
    /// Table column widths: they only grow, so later pages stay aligned with earlier ones.
    widths: Vec<usize>,
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

impl Output {
    fn new(format: ListFormat) -> Self {
        Output {
            format,
            out: BufWriter::new(io::stdout()),
            written: 0,
            widths: TABLE_HEADER.iter().map(|h| h.len()).collect(),
        }
    }

    fn page(&mut self, events: &[Recorded]) -> io::Result<()> {
        match self.format {
            ListFormat::Table => {
                let rows: Vec<[String; 10]> = events.iter().map(table_row).collect();
                grow_widths(&mut self.widths, &rows);
                if self.written == 0 {
                    let header = TABLE_HEADER.map(str::to_owned);
                    write_aligned(&mut self.out, &header, &self.widths)?;
                }
                for row in &rows {
                    write_aligned(&mut self.out, row, &self.widths)?;
                }
            }
            ListFormat::Json => {
                for event in events {
                    self.out
                        .write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
                    serde_json::to_writer_pretty(&mut self.out, event)?;
                    self.written += 1;
                }
            }
            ListFormat::Jsonl => {
                for event in events {
                    serde_json::to_writer(&mut self.out, event)?;
                    self.out.write_all(b"\n")?;
                }
            }
            ListFormat::Csv => {
                if self.written == 0 {
                    write_csv_row(&mut self.out, CSV_HEADER.iter().map(|h| h.to_string()))?;
                }
                for event in events {
                    write_csv_row(&mut self.out, csv_row(event))?;
                }
            }
        }
        if self.format != ListFormat::Json {
            self.written += events.len();
        }
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.format {
            ListFormat::Json if self.written == 0 => self.out.write_all(b"[]\n")?,
            ListFormat::Json => self.out.write_all(b"\n]\n")?,
            ListFormat::Table if self.written == 0 => self.out.write_all(b"no events\n")?,
            _ => {}
        }
        self.out.flush()
    }
}

/// Events as the `audit list` table, header included (for the demo and other one-shot output).
pub fn render_table(events: &[Recorded]) -> String {
    let rows: Vec<[String; 10]> = events.iter().map(table_row).collect();
    let mut widths: Vec<usize> = TABLE_HEADER.iter().map(|h| h.len()).collect();
    grow_widths(&mut widths, &rows);
    let mut out = Vec::new();
    let header = TABLE_HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        // Writing to a Vec cannot fail.
        let _ = write_aligned(&mut out, row, &widths);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Widen columns to fit `rows`.
fn grow_widths(widths: &mut [usize], rows: &[[String; 10]]) {
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
}

pub(crate) fn dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".to_owned(),
    }
}

fn effect_name(effect: Effect) -> String {
    serde_json::to_value(effect)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Who, in one word: the UPN, else the application id, else the object id.
pub(crate) fn actor_name(event: &Event) -> String {
    let a = &event.actor;
    dash(a.upn.as_deref().or(a.appid.as_deref()).or(a.oid.as_deref()))
}

fn table_row(r: &Recorded) -> [String; 10] {
    let e = &r.event;
    [
        r.seq.to_string(),
        e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
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

pub(crate) fn write_aligned(
    out: &mut impl Write,
    row: &[String],
    widths: &[usize],
) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<width$}  ");
        }
    }
    writeln!(out, "{}", line.trim_end())
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
        e.time.to_rfc3339_opts(SecondsFormat::Micros, true),
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

/// RFC 4180: quote a field holding a comma, quote, CR or LF (or edge spaces), doubling quotes.
fn csv_field(field: &str) -> String {
    let needs_quotes =
        field.contains([',', '"', '\n', '\r']) || field.starts_with(' ') || field.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fn write_csv_row(out: &mut impl Write, fields: impl IntoIterator<Item = String>) -> io::Result<()> {
    let line: Vec<String> = fields.into_iter().map(|f| csv_field(&f)).collect();
    out.write_all(line.join(",").as_bytes())?;
    out.write_all(b"\r\n")
}

async fn run_show(
    reader: &StoreReader,
    operation_id: Uuid,
    format: ShowFormat,
) -> anyhow::Result<()> {
    let events = reader
        .operation(operation_id)
        .await
        .with_context(|| format!("cannot read {}", reader.path().display()))?;
    if events.is_empty() {
        return Err(anyhow!(
            "no operation {operation_id} in {}",
            reader.path().display()
        ));
    }
    let text = match format {
        ShowFormat::Json => serde_json::to_string_pretty(&events)? + "\n",
        ShowFormat::Text => render_operation(&events),
    };
    let mut out = io::stdout().lock();
    ignore_closed_pipe(out.write_all(text.as_bytes()).and_then(|()| out.flush())).map(|_| ())
}

fn time_micros(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One operation, readable at a glance: a header, its events, the states, the changes.
pub fn render_operation(events: &[Recorded]) -> String {
    let mut s = String::new();
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return s;
    };
    let e = &first.event;
    // The latest event that says something wins for the outcome fields.
    let latest =
        |f: &dyn Fn(&Event) -> Option<String>| events.iter().rev().find_map(|r| f(&r.event));
    let line = |s: &mut String, label: &str, value: String| {
        let _ = writeln!(s, "{label:<12}{value}");
    };
    line(&mut s, "operation", e.operation_id.to_string());
    line(
        &mut s,
        "change",
        format!(
            "{}  {} {}",
            dash(Some(e.operation.as_str())),
            dash(Some(&e.method)),
            dash(Some(&e.canonical_path))
        ),
    );
    if let Some(raw) = events.iter().find_map(|r| r.event.raw_request.as_ref()) {
        // A refusal: the target as the client sent it, and what is known of its body.
        let cut = if raw.target_truncated {
            format!(" (first {} of {} bytes)", raw.target.len(), raw.target_len)
        } else {
            String::new()
        };
        line(&mut s, "target", format!("{}{cut}", raw.target));
        if let Some(body) = &raw.body {
            line(
                &mut s,
                "body",
                format!(
                    "{} bytes, sha256 {}, first {} bytes kept",
                    body.len, body.sha256, body.prefix_len
                ),
            );
        }
    }
    if let Some(summary) = events.iter().find_map(|r| r.event.refusal_summary.as_ref()) {
        line(
            &mut s,
            "refusals",
            format!(
                "{} from {} between {} and {}",
                summary.count,
                summary.client,
                time_micros(&summary.first),
                time_micros(&summary.last)
            ),
        );
    }
    line(&mut s, "partner", dash(e.partner_tenant_id.as_deref()));
    line(&mut s, "actor", describe_actor(e));
    let span = last.event.time - first.event.time;
    line(
        &mut s,
        "time",
        if events.len() == 1 {
            time_micros(&e.time)
        } else {
            format!(
                "{} → {} ({})",
                time_micros(&e.time),
                time_micros(&last.event.time),
                human_duration(span)
            )
        },
    );
    line(
        &mut s,
        "kind",
        events
            .iter()
            .map(|r| r.event.kind.as_str())
            .collect::<Vec<_>>()
            .join(" → "),
    );
    line(
        &mut s,
        "decision",
        dash(latest(&|e| e.decision.map(|d| d.as_str().to_owned())).as_deref()),
    );
    line(
        &mut s,
        "status",
        dash(latest(&|e| e.upstream_status.map(|s| s.to_string())).as_deref()),
    );
    line(
        &mut s,
        "effect",
        dash(latest(&|e| e.effect.map(effect_name)).as_deref()),
    );
    if let Some(latency) = latest(&|e| e.latency_ms.map(|l| l.to_string())) {
        let upstream = latest(&|e| e.upstream_latency_ms.map(|l| l.to_string()))
            .map(|u| format!(" (upstream {u} ms)"))
            .unwrap_or_default();
        line(&mut s, "latency", format!("{latency} ms{upstream}"));
    }
    for (label, value) in [
        ("approval", latest(&|e| e.approval_id.clone())),
        ("request-id", latest(&|e| e.request_id.clone())),
        ("client-req", e.client_request_id.clone()),
        ("detail", latest(&|e| e.detail.clone())),
    ] {
        if let Some(value) = value {
            line(&mut s, label, value);
        }
    }

    s.push_str("\nevents\n");
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|r| {
            [
                r.seq.to_string(),
                time_micros(&r.event.time),
                r.event.kind.as_str().to_owned(),
                dash(r.event.decision.map(Decision::as_str)),
                dash(r.event.upstream_status.map(|s| s.to_string()).as_deref()),
                dash(r.event.detail.as_deref()),
            ]
        })
        .collect();
    let header = ["seq", "time", "kind", "decision", "status", "detail"].map(str::to_owned);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut table = Vec::new();
    for row in std::iter::once(&header).chain(&rows) {
        let _ = write_aligned(&mut table, row, &widths);
    }
    for l in String::from_utf8_lossy(&table).lines() {
        let _ = writeln!(s, "  {l}");
    }

    if let Some(body) = events.iter().find_map(|r| r.event.request_body.as_ref()) {
        s.push_str("\nrequest body\n");
        indent_json(&mut s, body);
    }
    let before = events.iter().find_map(|r| r.event.before.as_ref());
    let after = events.iter().rev().find_map(|r| r.event.after.as_ref());
    if let Some(before) = before {
        s.push_str("\nbefore\n");
        describe_snapshot(&mut s, before);
    }
    if let Some(after) = after {
        s.push_str("\nafter\n");
        describe_snapshot(&mut s, after);
    }
    if let Some(diff) = events.iter().rev().find_map(|r| r.event.diff.as_ref()) {
        s.push_str("\nchanges\n");
        let ops = diff.as_array().map(Vec::as_slice).unwrap_or_default();
        if ops.is_empty() {
            s.push_str("  (none: the state did not change)\n");
        }
        for op in ops {
            let _ = writeln!(
                s,
                "  {}",
                describe_patch_op(op, before.and_then(Snapshot::value))
            );
        }
    }
    // The rules that decided, as the last event that carries them recorded them.
    if let Some(decider) = events
        .iter()
        .rev()
        .find(|r| !r.event.rule_results.is_empty())
    {
        let version = decider.event.rules_version.as_deref().unwrap_or("-");
        let _ = writeln!(s, "\nrules (version {})", &version[..version.len().min(12)]);
        for result in &decider.event.rule_results {
            let passed = result.passed;
            let _ = write!(
                s,
                "  {:<5} {} ({}, {})",
                if passed { "ok" } else { "FAIL" },
                result.rule,
                result.mode,
                result.action
            );
            match result.message.as_deref() {
                Some(message) if !passed => {
                    let _ = writeln!(s, ": {message}");
                }
                _ => s.push('\n'),
            }
        }
    }
    s
}

/// `850 ms`, `12.4 s`, `3 min 20 s`, `26 h 5 min`.
fn human_duration(d: chrono::TimeDelta) -> String {
    let ms = d.num_milliseconds();
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

fn describe_actor(e: &Event) -> String {
    let a = &e.actor;
    let mut parts = vec![actor_name(e)];
    if let Some(oid) = &a.oid
        && a.upn.is_some()
    {
        parts.push(format!("oid {oid}"));
    }
    if let Some(appid) = &a.appid
        && (a.upn.is_some() || a.oid.is_some())
    {
        parts.push(format!("app {appid}"));
    }
    if let Some(name) = &a.app_displayname {
        parts.push(format!("({name})"));
    }
    if let Some(addr) = &a.caller_address {
        parts.push(format!("from {addr}"));
    }
    if let Some(subject) = &a.client_cert_subject {
        parts.push(format!("cert {subject}"));
    }
    parts.join("  ")
}

fn indent_json(s: &mut String, value: &Value) {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    for l in pretty.lines() {
        let _ = writeln!(s, "  {l}");
    }
}

fn describe_snapshot(s: &mut String, snapshot: &Snapshot) {
    match snapshot {
        Snapshot::Present { value } => indent_json(s, value),
        Snapshot::Absent => s.push_str("  (absent: the resource did not exist)\n"),
        Snapshot::Unreadable { status, error } => {
            let status = status.map(|c| format!("status {c}: ")).unwrap_or_default();
            let _ = writeln!(s, "  (unreadable: {status}{error})");
        }
    }
}

/// One RFC 6902 operation on one line, e.g. `replace /userSyncInbound/isSyncAllowed: false → true`.
fn describe_patch_op(op: &Value, before: Option<&Value>) -> String {
    let field = |k: &str| op.get(k).and_then(Value::as_str).unwrap_or_default();
    let compact = |v: Option<&Value>| v.map_or_else(|| "?".to_owned(), Value::to_string);
    let path = field("path");
    let shown = if path.is_empty() {
        "(whole document)"
    } else {
        path
    };
    let old = before.and_then(|b| b.pointer(path));
    match field("op") {
        "replace" => format!(
            "replace {shown}: {} → {}",
            compact(old),
            compact(op.get("value"))
        ),
        "add" => format!("add {shown}: {}", compact(op.get("value"))),
        "remove" => match old {
            Some(old) => format!("remove {shown} (was {old})"),
            None => format!("remove {shown}"),
        },
        "move" | "copy" => format!("{} {} → {shown}", field("op"), field("from")),
        "test" => format!("test {shown}: {}", compact(op.get("value"))),
        other => format!("{other} {shown} {}", compact(op.get("value"))),
    }
}

async fn run_verify(reader: &StoreReader) -> anyhow::Result<()> {
    let report = reader
        .verify()
        .await
        .with_context(|| format!("cannot verify {}", reader.path().display()))?;
    match report.first_broken {
        None => {
            println!(
                "syncgate: audit log OK: {} events, head {}",
                report.events,
                report.head.as_deref().unwrap_or("(empty log)")
            );
            Ok(())
        }
        Some(broken) => Err(anyhow!(
            "audit log BROKEN at seq {} (event {}): {}; {} events before it verified",
            broken.seq,
            if broken.event_id.is_empty() {
                "?"
            } else {
                &broken.event_id
            },
            broken.reason,
            report.events
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dates_cover_whole_days_and_rfc3339_is_taken_as_is() {
        assert_eq!(
            parse_since("2025-06-01").unwrap().to_rfc3339(),
            "2025-06-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_until("2025-06-01").unwrap().to_rfc3339(),
            "2025-06-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_until("2025-06-01T08:30:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2025-06-01T06:30:00+00:00"
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn durations_read_in_the_largest_sensible_unit() {
        let d = chrono::TimeDelta::milliseconds;
        assert_eq!(human_duration(d(850)), "850 ms");
        assert_eq!(human_duration(d(12_400)), "12.4 s");
        assert_eq!(human_duration(d(200_000)), "3 min 20 s");
        assert_eq!(human_duration(d(3_600_000)), "1 h 0 min");
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn patch_operations_read_as_one_line_each() {
        let before = json!({"userSyncInbound": {"isSyncAllowed": false}, "name": "x"});
        let op = json!({"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true});
        assert_eq!(
            describe_patch_op(&op, Some(&before)),
            "replace /userSyncInbound/isSyncAllowed: false → true"
        );
        let op = json!({"op": "remove", "path": "/name"});
        assert_eq!(
            describe_patch_op(&op, Some(&before)),
            "remove /name (was \"x\")"
        );
        let op = json!({"op": "add", "path": "/extra", "value": {"a": 1}});
        assert_eq!(describe_patch_op(&op, None), "add /extra: {\"a\":1}");
        let op = json!({"op": "replace", "path": "", "value": {"a": 1}});
        assert_eq!(
            describe_patch_op(&op, Some(&Value::Null)),
            "replace (whole document): null → {\"a\":1}"
        );
    }
}
