//! `syncgate rules backtest`: replay the decisions the audit log holds through new rules and
//! report every change they would decide differently.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{BacktestArgs, BacktestFormat, Outcome, deciding, load_rules, reason};
use crate::cli::render::{
    FIXED, JsonLayout, dash, fitted_table, json_document, print, short_version, terminal_columns,
    time_secs,
};
use crate::rules::Verdict;
use crate::store::{Filter, StoreLocation, StoreReader};

mod replay;

use replay::{Replay, Replayer, difference, differing};

/// Why a recorded decision was not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SkipReason {
    /// A `denied` event without a failing enforced rule: refused before the rules (invalid
    /// input, an unreadable before-state, Graph refusing the read).
    RefusedBeforeRules,
    /// An operation name the rules do not decide (`unknown`, or a name from a newer syncgate).
    UnknownOperation,
    /// No readable before-state was recorded, so the input cannot be rebuilt.
    NoBeforeState,
    /// The outcome depends on rules reading the partner's document, which the event lacks (the
    /// rules in force then did not read it).
    PartnerStateNotRecorded,
}

impl SkipReason {
    fn describe(self) -> &'static str {
        match self {
            SkipReason::RefusedBeforeRules => {
                "refused before the rules were consulted (an invalid request, or a before-state \
                 that could not be read)"
            }
            SkipReason::UnknownOperation => "not an operation the rules decide",
            SkipReason::NoBeforeState => "no readable before-state was recorded",
            SkipReason::PartnerStateNotRecorded => {
                "the outcome depends on rules that read the partner's state, which was not \
                 recorded (the rules in force then did not read it)"
            }
        }
    }

    fn key(self) -> &'static str {
        match self {
            SkipReason::RefusedBeforeRules => "refused_before_rules",
            SkipReason::UnknownOperation => "unknown_operation",
            SkipReason::NoBeforeState => "no_before_state",
            SkipReason::PartnerStateNotRecorded => "partner_state_not_recorded",
        }
    }
}

/// How a replayed change's outcome differs from the recorded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) enum Difference {
    /// Allowed then, refused (or held for approval) now.
    #[serde(rename = "newly_refused")]
    Refused,
    /// Refused then, allowed now.
    #[serde(rename = "newly_allowed")]
    Allowed,
    /// Allowed then and now, but a rule that did not warn then warns now.
    #[serde(rename = "newly_warning")]
    Warning,
}

/// One side of a differing change: the outcome and the rules behind it.
#[derive(Debug, Serialize)]
pub(super) struct Side {
    outcome: Outcome,
    /// The refusing rule, or the warning rules.
    rules: Vec<RuleNote>,
}

#[derive(Debug, Serialize)]
struct RuleNote {
    rule: String,
    message: String,
}

impl Side {
    fn of(verdict: &Verdict) -> Self {
        Side {
            outcome: Outcome::of(verdict),
            rules: deciding(verdict)
                .into_iter()
                .map(|r| RuleNote {
                    rule: r.rule.clone(),
                    message: reason(r).to_owned(),
                })
                .collect(),
        }
    }
}

/// A recorded change the new rules would decide differently.
#[derive(Debug, Serialize)]
pub(super) struct Differing {
    seq: i64,
    operation_id: Uuid,
    time: DateTime<Utc>,
    operation: String,
    partner: Option<String>,
    actor: String,
    change: Difference,
    /// What was recorded.
    was: Side,
    /// What the new rules decide.
    now: Side,
    /// The report's sentence: "would now be refused by rule X: …".
    summary: String,
}

#[derive(Debug, Serialize)]
struct Skipped {
    seq: i64,
    operation_id: Uuid,
    operation: String,
    reason: SkipReason,
    detail: String,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Decisions found (`received` events, and `denied` events).
    considered: usize,
    /// Decisions replayed through the new rules (considered minus skipped).
    replayed: usize,
    unchanged: usize,
    newly_refused: usize,
    newly_allowed: usize,
    newly_warning: usize,
    skipped: usize,
    skipped_by_reason: BTreeMap<&'static str, usize>,
}

impl Summary {
    fn changed(&self) -> usize {
        self.newly_refused + self.newly_allowed + self.newly_warning
    }
}

/// The whole report, as `--format json` prints it.
#[derive(Debug, Serialize)]
struct Backtest {
    config: String,
    db: String,
    rules_version: String,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    summary: Summary,
    changes: Vec<Differing>,
    skipped: Vec<Skipped>,
}

/// Events per query while scanning the log.
const PAGE: u32 = 500;

pub(super) async fn run(args: BacktestArgs) -> anyhow::Result<()> {
    let (raw, rules) = load_rules(&args.config)?;
    let mut store = raw.store.clone();
    if let Some(db) = &args.db {
        store.set_location(&StoreLocation::parse(db));
    }
    let db = store.location()?;
    let replayer = Replayer::new(&raw, &rules);
    let reader = StoreReader::open(&db, &store.options()?).await?;
    let scanned = scan(&reader, &replayer, &args).await;
    reader.close().await;
    let (summary, changes, skipped) = scanned?;
    let report = Backtest {
        config: args.config.display().to_string(),
        db: db.to_string(),
        rules_version: rules.version().to_owned(),
        since: args.since,
        until: args.until,
        summary,
        changes,
        skipped,
    };
    let text = match args.format {
        BacktestFormat::Json => json_document(&report, JsonLayout::for_stdout())?,
        BacktestFormat::Table => {
            render_backtest(&report, short_version(rules.version()), terminal_columns())
        }
    };
    print(&text)?;
    let changed = report.summary.changed();
    if args.fail_on_change && changed > 0 {
        bail!(
            "{changed} recorded change{} would be decided differently (--fail-on-change)",
            if changed == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Page through the log in `seq` order and replay every decision in the time range.
async fn scan(
    reader: &StoreReader,
    replayer: &Replayer<'_>,
    args: &BacktestArgs,
) -> anyhow::Result<(Summary, Vec<Differing>, Vec<Skipped>)> {
    let mut filter = Filter {
        since: args.since,
        until: args.until,
        limit: Some(PAGE),
        ..Filter::default()
    };
    let mut summary = Summary::default();
    let (mut changes, mut skipped) = (Vec::new(), Vec::new());
    loop {
        let events = reader
            .list(&filter)
            .await
            .with_context(|| format!("cannot read {}", reader.location()))?;
        for recorded in &events {
            let event = &recorded.event;
            match replayer.replay(event) {
                Replay::NotADecision => continue,
                Replay::Skipped(reason, detail) => {
                    summary.considered += 1;
                    summary.skipped += 1;
                    *summary.skipped_by_reason.entry(reason.key()).or_default() += 1;
                    skipped.push(Skipped {
                        seq: recorded.seq,
                        operation_id: event.operation_id.uuid(),
                        operation: event.operation.to_string(),
                        reason,
                        detail,
                    });
                }
                Replay::Replayed { was, now } => {
                    summary.considered += 1;
                    summary.replayed += 1;
                    let Some(change) = difference(&was, &now) else {
                        summary.unchanged += 1;
                        continue;
                    };
                    match change {
                        Difference::Refused => summary.newly_refused += 1,
                        Difference::Allowed => summary.newly_allowed += 1,
                        Difference::Warning => summary.newly_warning += 1,
                    }
                    changes.push(differing(recorded, change, &was, &now));
                }
            }
        }
        match events.last() {
            Some(last) if events.len() as u32 == PAGE => filter.after_seq = Some(last.seq),
            _ => break,
        }
    }
    Ok((summary, changes, skipped))
}

const BACKTEST_HEADER: [&str; 7] = [
    "SEQ",
    "TIME",
    "OPERATION",
    "PARTNER",
    "ACTOR",
    "OPERATION ID",
    "OUTCOME",
];

/// How narrow each column may be cut on a terminal (see the `audit list` table); the outcome
/// sentence is cut last but may be cut, `--format json` keeps it whole.
const BACKTEST_FLOORS: [usize; 7] = [FIXED, FIXED, 9, 9, 8, 12, 30];

/// The table of differing changes (cut to fit `columns`, a terminal's width), then the summary.
fn render_backtest(report: &Backtest, version: &str, columns: Option<usize>) -> String {
    let mut text = String::new();
    if report.changes.is_empty() {
        text.push_str("no recorded change would be decided differently.\n");
    } else {
        let rows: Vec<[String; 7]> = report
            .changes
            .iter()
            .map(|c| {
                [
                    c.seq.to_string(),
                    time_secs(&c.time),
                    c.operation.clone(),
                    dash(c.partner.as_deref()),
                    c.actor.clone(),
                    c.operation_id.to_string(),
                    c.summary.clone(),
                ]
            })
            .collect();
        text.push_str(&fitted_table(
            &BACKTEST_HEADER,
            &rows,
            &BACKTEST_FLOORS,
            columns,
        ));
    }
    let s = &report.summary;
    let _ = writeln!(
        text,
        "\nchanges replayed  {}  (through the rules of {}, version {version})",
        s.replayed, report.config
    );
    for (label, n) in [
        ("unchanged", s.unchanged),
        ("newly refused", s.newly_refused),
        ("newly allowed", s.newly_allowed),
        ("newly warning", s.newly_warning),
        ("skipped", s.skipped),
    ] {
        let _ = writeln!(text, "{label:<18}{n}");
    }
    let mut reasons: BTreeMap<SkipReason, usize> = BTreeMap::new();
    for skip in &report.skipped {
        *reasons.entry(skip.reason).or_default() += 1;
    }
    for (reason, n) in reasons {
        let _ = writeln!(text, "  {n:>4}  {}", reason.describe());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtest_table_fits_a_terminal_and_keeps_every_value_through_a_pipe() {
        let side = |outcome| Side {
            outcome,
            rules: Vec::new(),
        };
        let summary = "would now be refused by rule sync-allowlist: partner \
                       9c5d131d-b1c3-4fc4-9e3f-c6557947d551 is not on the sync allow-list";
        let report = Backtest {
            config: "new.toml".into(),
            db: "audit.db".into(),
            rules_version: "ab".repeat(32),
            since: None,
            until: None,
            summary: Summary::default(),
            changes: vec![Differing {
                seq: 12,
                operation_id: Uuid::now_v7(),
                time: Utc::now(),
                operation: "sync_update".into(),
                partner: Some("9c5d131d-b1c3-4fc4-9e3f-c6557947d551".into()),
                actor: "33333333-3333-4333-8333-333333333333".into(),
                change: Difference::Refused,
                was: side(Outcome::Allow),
                now: side(Outcome::Deny),
                summary: summary.into(),
            }],
            skipped: Vec::new(),
        };
        let piped = render_backtest(&report, "abababababab", None);
        assert!(piped.contains(summary), "{piped}");
        let shown = render_backtest(&report, "abababababab", Some(100));
        let rows: Vec<&str> = shown.lines().take(2).collect();
        for row in &rows {
            assert!(row.chars().count() <= 100, "{row}");
        }
        assert!(rows[1].contains("would now be refused by rule"), "{shown}");
        assert!(rows[1].ends_with('…'), "{shown}");
    }
}
