//! `syncgate audit list --operations`: one row per governed operation, its events folded, newest
//! first, with the admin API's filters, read straight from the database.
//!
//! Auditors ask about changes, not events ("who changed partner X last quarter, who approved
//! it"); this is `GET /api/v1/operations` for the machine the log is on, through the very same
//! query (`StoreReader::operations`), so the two never disagree on what a filter selects. It pages
//! through the store (flat memory for any log) and, when `--limit` stops it early, says on stderr
//! which `--cursor` continues the listing.

use anyhow::Context;

use super::ListArgs;
use super::list::{Listed, Output};
use crate::audit::{Decision, EventKind, Operation};
use crate::cli::render::{FIXED, dash, effect_name, ignore_closed_pipe, time_micros, time_secs};
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
    let mut out = Output::<OperationSummary>::new(args.format);
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

impl Listed for OperationSummary {
    const TABLE_HEADER: &'static [&'static str] = &TABLE_HEADER;
    const TABLE_FLOORS: &'static [usize] = &TABLE_FLOORS;
    const CSV_HEADER: &'static [&'static str] = &CSV_HEADER;
    const NONE: &'static str = "no operations.\n";
    fn table_row(&self) -> Vec<String> {
        table_row(self).into()
    }
    fn csv_row(&self) -> Vec<String> {
        csv_row(self)
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
