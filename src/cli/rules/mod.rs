//! `syncgate rules test|backtest`: the rule author's tools, to try rules before they are enforced.
//!
//! - `rules test FILE...` runs suites of cases — a change, the state before it, who asks and when
//!   → the decision expected — in the spirit of `opa test` and `gator verify`: one line per case, a
//!   summary, and exit 0 only when every case of every file passes.
//! - `rules backtest --config NEW.toml` replays every change the audit log holds a rule decision
//!   for (a `received` event: allowed; a `denied` event refused by a rule) through NEW's rules,
//!   and reports each one they would decide differently.
//!
//! Neither guesses how the proxy builds the rules' input. A case's request goes through the
//! proxy's own classification and body checks, so a request the proxy would refuse before the
//! rules is a broken case rather than a passing one; its partner is bound by the proxy's own
//! [`bind_partner`](crate::proxy::bind_partner); the partner's document reaches the rules only
//! when the proxy would read it; and both tools build the input with the decide step's own
//! [`rule_input`](crate::proxy::rule_input). A case's time is part of the case (a fixed
//! Monday morning unless it says otherwise, never "now") and the backtest uses each event's own
//! time, so both answer the same on every run. The backtest opens the log read-only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use super::render::{parse_since, parse_until};
use crate::config::RawConfig;
use crate::rules::{RuleResult, RuleSet, Verdict};

mod backtest;
mod test;

/// `syncgate rules`: test rules against cases, or replay the audit log through new rules.
#[derive(Debug, Args)]
pub(crate) struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Run suites of cases (a change, its before-state, who and when → the decision expected);
    /// exit 0 only when every case passes.
    Test(TestArgs),
    /// Replay the changes recorded in the audit log through new rules and report every one they
    /// would decide differently (read-only).
    Backtest(BacktestArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Suite files: TOML with `config = "…"` and `[[case]]` tables (see
    /// config/rules/example-tests.toml).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// The configuration whose rules are tested, instead of each suite's own `config`.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BacktestArgs {
    /// The configuration holding the new rules; its `[store]` names the audit log unless --db
    /// is given.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    /// The audit log: a SQLite file or a `postgres://` URL (wins over the configuration).
    #[arg(long, value_name = "PATH|URL")]
    db: Option<String>,
    /// Only changes from this time on: RFC 3339 (2025-06-01T08:00:00Z), a UTC date, or a time
    /// ago (90s, 30m, 1h, 7d, 2w).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Only changes before this time: RFC 3339, a UTC date (that whole day included), or a time
    /// ago (30m).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = BacktestFormat::Table)]
    format: BacktestFormat,
    /// Exit 1 when any change would be decided differently (for CI).
    #[arg(long)]
    fail_on_change: bool,
}

/// Output formats of `rules backtest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BacktestFormat {
    /// The changes that would differ, aligned, then a summary.
    Table,
    /// One JSON document: the summary, the changes that would differ, the skipped ones;
    /// indented on a terminal, on one line through a pipe.
    Json,
}

/// Run one `syncgate rules` command.
pub(crate) async fn run(args: RulesArgs) -> anyhow::Result<()> {
    match args.command {
        RulesCommand::Test(args) => test::run(args),
        RulesCommand::Backtest(args) => backtest::run(args).await,
    }
}

/// The rules of a configuration file's `[rules]` table, compiled as the proxy compiles them.
pub(crate) fn load_rules(config: &Path) -> anyhow::Result<(RawConfig, RuleSet)> {
    let raw = RawConfig::load(config)?;
    let rules = raw
        .load_rules()
        .with_context(|| format!("cannot load the rules in {}", config.display()))?;
    Ok((raw, rules))
}

/// What the rules decided about one change, in the words of a case's `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Allowed, no rule warned.
    Allow,
    /// Allowed, with at least one `warn` rule failing.
    Warn,
    /// Refused by an enforced `deny` rule.
    Deny,
    /// Refused (held) by an enforced `require_approval` rule.
    RequireApproval,
}

impl Outcome {
    pub(crate) fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Allow { warnings } if warnings.is_empty() => Outcome::Allow,
            Verdict::Allow { .. } => Outcome::Warn,
            Verdict::Deny(_) => Outcome::Deny,
            Verdict::NeedsApproval(_) => Outcome::RequireApproval,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
        }
    }

    /// Whether the change is refused (a change needing approval is refused until approved).
    pub(crate) fn refuses(self) -> bool {
        matches!(self, Outcome::Deny | Outcome::RequireApproval)
    }
}

/// The results behind a verdict: the refusing rule, or the warnings.
pub(crate) fn deciding(verdict: &Verdict) -> Vec<&RuleResult> {
    match verdict {
        Verdict::Allow { warnings } => warnings.iter().collect(),
        Verdict::Deny(result) | Verdict::NeedsApproval(result) => vec![result],
    }
}

/// A result's message without the `rule '<id>': ` prefix evaluation gives it, for places that
/// show the rule apart.
pub(crate) fn reason(result: &RuleResult) -> &str {
    let message = result.message.as_deref().unwrap_or("failed");
    message
        .strip_prefix(&format!("rule '{}': ", result.rule))
        .unwrap_or(message)
}
