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
//! rules is a broken case rather than a passing one; the partner's document reaches the rules
//! only when the proxy would read it; and both tools build the input with
//! [`RuleInput::for_change`], as the decide step does. A case's time is part of the case (a fixed
//! Monday morning unless it says otherwise, never "now") and the backtest uses each event's own
//! time, so both answer the same on every run. The backtest opens the log read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use clap::{Args, Subcommand, ValueEnum};
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::audit::{Actor, Event, EventKind, Recorded, Snapshot};
use crate::audit_cli::{
    actor_name, dash, ignore_closed_pipe, parse_since, parse_until, write_aligned,
};
use crate::classify::{self, ApiVersion, Classification, OperationKind, TenantId};
use crate::config::RawConfig;
use crate::rules::{BuiltinType, Change, Evaluation, RuleInput, RuleResult, RuleSet, Verdict};
use crate::store::{Filter, StoreOptions, StoreReader};

/// `syncgate rules`: test rules against cases, or replay the audit log through new rules.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Run suites of cases (a change, its before-state, who and when → the decision expected);
    /// exit 0 only when every case passes.
    Test(TestArgs),
    /// Replay the changes recorded in the audit log through new rules and report every one they
    /// would decide differently (read-only).
    Backtest(BacktestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Suite files: TOML with `config = "…"` and `[[case]]` tables (see
    /// config/rules/example-tests.toml).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The configuration whose rules are tested, instead of each suite's own `config`.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The configuration holding the new rules; its store.path names the audit log unless --db
    /// is given.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The audit log's SQLite file (wins over the configuration's store.path).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Only changes from this time on: RFC 3339 (2025-06-01T08:00:00Z) or a UTC date.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only changes before this time: RFC 3339, or a UTC date (that whole day included).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = BacktestFormat::Table)]
    pub format: BacktestFormat,
    /// Exit 1 when any change would be decided differently (for CI).
    #[arg(long)]
    pub fail_on_change: bool,
}

/// Output formats of `rules backtest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BacktestFormat {
    /// The changes that would differ, aligned, then a summary.
    Table,
    /// One JSON document: the summary, the changes that would differ, the skipped ones.
    Json,
}

/// Run one `syncgate rules` command.
pub async fn run(args: RulesArgs) -> anyhow::Result<()> {
    match args.command {
        RulesCommand::Test(args) => run_test(args),
        RulesCommand::Backtest(args) => run_backtest(args).await,
    }
}

/// The rules of a configuration file's `[rules]` table, compiled as the proxy compiles them.
fn load_rules(config: &Path) -> anyhow::Result<(RawConfig, RuleSet)> {
    let raw = RawConfig::load(config)?;
    let rules = raw
        .load_rules()
        .with_context(|| format!("cannot load the rules in {}", config.display()))?;
    Ok((raw, rules))
}

/// The first 12 characters of a rules version: enough to tell versions apart in a report.
fn short_version(rules: &RuleSet) -> &str {
    let version = rules.version();
    version.get(..12).unwrap_or(version)
}

/// Write a report to stdout; a closed pipe (`| head`) ends quietly.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    ignore_closed_pipe(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )?;
    Ok(())
}

/// What the rules decided about one change, in the words of a case's `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
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
    fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Allow { warnings } if warnings.is_empty() => Outcome::Allow,
            Verdict::Allow { .. } => Outcome::Warn,
            Verdict::Deny(_) => Outcome::Deny,
            Verdict::NeedsApproval(_) => Outcome::RequireApproval,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
            Outcome::RequireApproval => "require_approval",
        }
    }

    /// Whether the change is refused (a change needing approval is refused until approved).
    fn refuses(self) -> bool {
        matches!(self, Outcome::Deny | Outcome::RequireApproval)
    }
}

/// The results behind a verdict: the refusing rule, or the warnings.
fn deciding(verdict: &Verdict) -> Vec<&RuleResult> {
    match verdict {
        Verdict::Allow { warnings } => warnings.iter().collect(),
        Verdict::Deny(result) | Verdict::NeedsApproval(result) => vec![result],
    }
}

/// A result's message without the `rule '<id>': ` prefix evaluation gives it, for places that
/// show the rule apart.
fn reason(result: &RuleResult) -> &str {
    let message = result.message.as_deref().unwrap_or("failed");
    message
        .strip_prefix(&format!("rule '{}': ", result.rule))
        .unwrap_or(message)
}

// ---------------------------------------------------------------------------------------------
// rules test
// ---------------------------------------------------------------------------------------------

/// A suite file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    /// The configuration whose rules are tested, relative to the suite file.
    config: Option<PathBuf>,
    /// Keys every case takes unless it sets them itself (see [`DEFAULTABLE`]).
    #[serde(default)]
    defaults: toml::Table,
    /// The cases, with where each starts in the file.
    #[serde(default)]
    case: Vec<toml::Spanned<toml::Table>>,
}

/// The case keys `[defaults]` may set: the change's context, never what a case expects.
const DEFAULTABLE: [&str; 10] = [
    "operation",
    "method",
    "canonical_path",
    "api_version",
    "partner",
    "body",
    "before",
    "partner_state",
    "actor",
    "time",
];

/// One `[[case]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    /// An operation kind name (`sync_update`, …).
    operation: String,
    /// Default: the operation's method (a `deleted_partner_sync_write` without a body: DELETE).
    method: Option<String>,
    /// Default: the operation's path for the partner, in `api_version`.
    canonical_path: Option<String>,
    /// Default: `beta` for deleted-item operations, `v1.0` otherwise.
    api_version: Option<String>,
    partner: Option<String>,
    body: Option<Value>,
    /// Absent: the resource does not exist (`null`).
    before: Option<Value>,
    /// Absent: not read (or unreadable).
    partner_state: Option<Value>,
    #[serde(default)]
    actor: CaseActor,
    /// RFC 3339, as a string or a TOML date-time with an offset.
    time: Option<toml::Value>,
    expect: Outcome,
    /// The rule that decides (for `warn`: one of the rules that warn).
    rule: Option<String>,
    /// A regular expression the deciding rule's message must match.
    message: Option<String>,
}

/// The actor of a case: [`Actor`]'s fields, but strict, so a misspelt claim is an error rather
/// than a silently empty claim.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseActor {
    oid: Option<String>,
    upn: Option<String>,
    appid: Option<String>,
    app_displayname: Option<String>,
    tid: Option<String>,
    idtyp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Vec<String>,
    caller_address: Option<String>,
    client_cert_subject: Option<String>,
    token_hmac: Option<String>,
}

impl From<CaseActor> for Actor {
    fn from(a: CaseActor) -> Self {
        Actor {
            oid: a.oid,
            upn: a.upn,
            appid: a.appid,
            app_displayname: a.app_displayname,
            tid: a.tid,
            idtyp: a.idtyp,
            roles: a.roles,
            scp: a.scp,
            caller_address: a.caller_address,
            client_cert_subject: a.client_cert_subject,
            token_hmac: a.token_hmac,
        }
    }
}

/// A suite, validated: its rules' configuration and its cases.
struct Suite {
    path: PathBuf,
    config: PathBuf,
    cases: Vec<Case>,
}

/// One validated case.
struct Case {
    name: String,
    /// Where the case starts in its file (1-based).
    line: usize,
    request: CaseRequest,
    /// The before-state's value; `null` when the resource does not exist.
    before: Value,
    partner_state: Option<Value>,
    actor: Actor,
    time: DateTime<Utc>,
    expect: Outcome,
    rule: Option<String>,
    message: Option<MessagePattern>,
}

/// The request a case describes, as the proxy classified and checked it.
#[derive(Debug, Clone, PartialEq)]
struct CaseRequest {
    kind: OperationKind,
    method: String,
    canonical_path: String,
    api_version: &'static str,
    partner: Option<String>,
    body: Option<Value>,
}

/// A case's time when it names none: Monday 2026-01-05 10:00 UTC, inside ordinary business
/// hours across Europe, and the same on every run.
fn default_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

impl Suite {
    /// Read and validate `path`; `config` (from the command line) wins over the suite's own.
    fn load(path: &Path, config: Option<&Path>) -> anyhow::Result<Suite> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let raw: RawSuite = toml::from_str(&text)
            .with_context(|| format!("invalid rules test suite {}", path.display()))?;
        let shown = path.display();
        let config = match (config, &raw.config) {
            (Some(config), _) => config.to_owned(),
            (None, Some(own)) => path.parent().unwrap_or(Path::new(".")).join(own),
            (None, None) => bail!(
                "{shown}: names no rules to test: add config = \"<configuration file>\" (relative \
                 to the suite) or pass --config"
            ),
        };
        if let Some(key) = raw
            .defaults
            .keys()
            .find(|k| !DEFAULTABLE.contains(&k.as_str()))
        {
            bail!(
                "{shown}: [defaults]: unknown key `{key}` (defaults may set: {})",
                DEFAULTABLE.join(", ")
            );
        }
        if raw.case.is_empty() {
            bail!("{shown}: has no [[case]] tables");
        }
        let mut names = BTreeSet::new();
        let mut cases = Vec::with_capacity(raw.case.len());
        for (index, spanned) in raw.case.into_iter().enumerate() {
            let line = text
                .get(..spanned.span().start)
                .map_or(0, |before| before.matches('\n').count())
                + 1;
            let mut table = spanned.into_inner();
            let name = table
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned);
            let place = match &name {
                Some(name) => format!("{shown}: case {} {name:?} (line {line})", index + 1),
                None => format!("{shown}: case {} (line {line})", index + 1),
            };
            for (key, value) in &raw.defaults {
                table.entry(key).or_insert_with(|| value.clone());
            }
            let case = Case::from_raw(table, line).map_err(|why| anyhow!("{place}: {why}"))?;
            if !names.insert(case.name.clone()) {
                bail!("{place}: another case has the same name; names identify failures");
            }
            cases.push(case);
        }
        Ok(Suite {
            path: path.to_owned(),
            config,
            cases,
        })
    }
}

impl Case {
    fn from_raw(table: toml::Table, line: usize) -> Result<Case, String> {
        let raw: RawCase = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
        if raw.name.trim().is_empty() {
            return Err("name is empty".to_owned());
        }
        if raw.expect == Outcome::Allow && (raw.rule.is_some() || raw.message.is_some()) {
            return Err(
                "`rule` and `message` name the rule that decides or warns; with expect = \
                 \"allow\" no rule does"
                    .to_owned(),
            );
        }
        let time = match &raw.time {
            None => default_time(),
            Some(toml::Value::String(text)) => parse_case_time(text)?,
            Some(toml::Value::Datetime(datetime)) => parse_case_time(&datetime.to_string())?,
            Some(other) => {
                return Err(format!(
                    "time must be an RFC 3339 date-time (\"2026-01-05T10:00:00Z\"), not a {}",
                    other.type_str()
                ));
            }
        };
        let message = raw
            .message
            .as_deref()
            .map(MessagePattern::new)
            .transpose()?;
        Ok(Case {
            request: case_request(&raw)?,
            name: raw.name,
            line,
            before: raw.before.unwrap_or(Value::Null),
            partner_state: raw.partner_state,
            actor: raw.actor.into(),
            time,
            expect: raw.expect,
            rule: raw.rule,
            message,
        })
    }

    /// The input the proxy would give the rules for this case. Like the proxy, it reads the
    /// partner's document only when a rule needs it, and only for a change about a partner.
    fn input(&self, rules: &RuleSet) -> RuleInput {
        let request = &self.request;
        RuleInput::for_change(Change {
            kind: request.kind,
            method: &request.method,
            canonical_path: &request.canonical_path,
            api_version: request.api_version,
            partner: request.partner.as_deref(),
            request_body: request.body.as_ref(),
            before: Some(&self.before),
            partner_state: self.partner_state_seen(rules),
            actor: &self.actor,
            time: self.time,
        })
    }

    fn partner_state_seen(&self, rules: &RuleSet) -> Option<&Value> {
        self.partner_state
            .as_ref()
            .filter(|_| rules.needs_partner_state() && self.request.partner.is_some())
    }

    /// Why the case fails, one line each; empty when it passes.
    fn check(&self, verdict: &Verdict, rules: &RuleSet) -> Vec<String> {
        let got = Outcome::of(verdict);
        let candidates: Vec<&RuleResult> = deciding(verdict)
            .into_iter()
            .filter(|r| self.rule.as_ref().is_none_or(|rule| &r.rule == rule))
            .collect();
        let matched = match &self.message {
            None => !candidates.is_empty(),
            Some(pattern) => candidates
                .iter()
                .any(|r| pattern.is_match(r.message.as_deref().unwrap_or_default())),
        };
        if got == self.expect && (self.expect == Outcome::Allow || matched) {
            return Vec::new();
        }
        let mut expected = self.expect.as_str().to_owned();
        if let Some(rule) = &self.rule {
            let _ = write!(expected, " by rule '{rule}'");
        }
        if let Some(pattern) = &self.message {
            let _ = write!(expected, " with a message matching /{}/", pattern.text);
        }
        let mut lines = vec![format!("expected  {expected}")];
        let results = deciding(verdict);
        if results.is_empty() {
            lines.push(format!("got       {}", got.as_str()));
        }
        for (i, r) in results.iter().enumerate() {
            let label = if i == 0 { "got" } else { "" };
            let what = if i == 0 { got.as_str() } else { "and" };
            lines.push(format!(
                "{label:<10}{what} by rule '{}': {}",
                r.rule,
                reason(r)
            ));
        }
        if self.partner_state.is_some() && self.partner_state_seen(rules).is_none() {
            lines.push(
                "note      partner_state was not given to the rules: the proxy reads it only \
                 for a partner, and only when a rule needs it (needs_partner_state = true on a \
                 Rego entry)"
                    .to_owned(),
            );
        }
        lines
    }
}

fn parse_case_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("time {text:?} is not RFC 3339 with an offset, like \"2026-01-05T10:00:00Z\"")
        })
}

/// The case's request as the proxy sees it: its method and path classified by the proxy's own
/// route table (it must be a governed change of the case's operation), its body checked as the
/// proxy checks bodies, and its partner bound as the proxy binds it (from the path, or from the
/// body's `tenantId` for a partner create).
fn case_request(raw: &RawCase) -> Result<CaseRequest, String> {
    let kind = OperationKind::parse(&raw.operation).ok_or_else(|| {
        let names: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
        format!(
            "unknown operation {:?} (one of: {})",
            raw.operation,
            names.join(", ")
        )
    })?;
    let partner = raw
        .partner
        .as_deref()
        .map(|p| {
            TenantId::parse(p)
                .map_err(|_| format!("partner {p:?} is not a GUID (36-character hyphenated form)"))
        })
        .transpose()?;
    let version = match raw.api_version.as_deref() {
        None => default_version(kind),
        Some(v) => ApiVersion::parse(v)
            .ok_or_else(|| format!("api_version {v:?} is neither \"v1.0\" nor \"beta\""))?,
    };
    let method = raw
        .method
        .clone()
        .unwrap_or_else(|| default_method(kind, raw.body.is_some()).to_owned());
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("method {method:?} is not an HTTP method"))?;
    let path = match &raw.canonical_path {
        Some(path) => path.clone(),
        None => default_path(kind, version, partner.as_ref())?,
    };
    let governed = match classify::classify(&method, &path, None, &HeaderMap::new()) {
        Classification::Governed(governed) => governed,
        Classification::Refuse(refusal) => {
            return Err(format!(
                "the proxy refuses {method} {path} before the rules decide: {}",
                refusal.message
            ));
        }
        Classification::SyncRead(_) => {
            return Err(format!(
                "{method} {path} is a read; rules decide only governed writes"
            ));
        }
        Classification::Forward | Classification::Batch(_) => {
            return Err(format!(
                "{method} {path} is not a governed change: the proxy forwards it without the rules"
            ));
        }
    };
    if governed.kind != kind {
        return Err(format!(
            "{method} {path} is a {} operation, not {kind}",
            governed.kind
        ));
    }
    if raw.api_version.is_some() && governed.path.version != version {
        return Err(format!(
            "api_version is {version} but the path is in {}",
            governed.path.version
        ));
    }
    let refused = |r: classify::Refusal| {
        format!(
            "the proxy refuses this body before the rules decide: {}",
            r.message
        )
    };
    let body = classify::check_body(
        governed.body,
        governed.path.version,
        Some("application/json"),
        raw.body.as_ref(),
    )
    .map_err(refused)?;
    let bound = match (kind, &body) {
        (OperationKind::PartnerCreate, Some(body)) => {
            Some(classify::partner_from_body(body).map_err(refused)?)
        }
        _ => governed.partner.clone(),
    };
    if let (Some(body), Some(bound)) = (&body, &bound) {
        classify::check_body_tenant(body, bound).map_err(refused)?;
    }
    match (&partner, &bound) {
        (Some(given), Some(bound)) if given != bound => {
            return Err(format!(
                "partner {given} is not the partner the request is about ({bound})"
            ));
        }
        (Some(_), None) => {
            return Err(format!(
                "a {kind} operation is about no partner; remove `partner`"
            ));
        }
        _ => {}
    }
    Ok(CaseRequest {
        kind,
        method: governed.method.to_string(),
        canonical_path: governed.path.to_string(),
        api_version: governed.path.version.as_str(),
        partner: bound.map(|p| p.as_str().to_owned()),
        body,
    })
}

/// `beta` for the deleted-items operations (v1.0 has no `deletedItems`), `v1.0` otherwise.
fn default_version(kind: OperationKind) -> ApiVersion {
    use OperationKind::*;
    match kind {
        PartnerRestore
        | SyncRestore
        | DeletedPartnerPurge
        | DeletedSyncPurge
        | DeletedPartnerSyncWrite => ApiVersion::Beta,
        _ => ApiVersion::V1_0,
    }
}

/// The method of an operation as Graph documents it.
fn default_method(kind: OperationKind, has_body: bool) -> &'static str {
    use OperationKind::*;
    match kind {
        SyncCreate => "PUT",
        SyncUpdate | PartnerUpdate | TemplateUpdate | LegacySyncPolicyWrite => "PATCH",
        SyncDelete | PartnerDelete | DeletedPartnerPurge | DeletedSyncPurge => "DELETE",
        PartnerCreate | PartnerRestore | SyncRestore | TemplateReset => "POST",
        DeletedPartnerSyncWrite if has_body => "PATCH",
        DeletedPartnerSyncWrite => "DELETE",
        SyncRead => "GET",
    }
}

/// The canonical path of an operation on `partner` in `version` (classification checks it).
fn default_path(
    kind: OperationKind,
    version: ApiVersion,
    partner: Option<&TenantId>,
) -> Result<String, String> {
    crate::graph::routes::canonical_path(kind, version, partner)
        .map(|path| path.to_string())
        .ok_or_else(|| format!("a {kind} operation needs `partner` (the tenant id)"))
}

/// A case's `message`: a regular expression, unanchored, in the dialect Rego's `regex.match`
/// uses (Rust's `regex` syntax), evaluated by the same engine as the Rego rules.
struct MessagePattern {
    text: String,
    /// Prepared with [`MATCHER`]; cloned per match.
    engine: regorus::Engine,
}

const MATCHER: &str = "package syncgate_rules_test\n\n\
                       valid := regex.is_valid(input.pattern)\n\n\
                       matches := regex.match(input.pattern, input.text)\n";

impl MessagePattern {
    fn new(text: &str) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("matcher.rego".to_owned(), MATCHER.to_owned())
            .map_err(|e| format!("cannot prepare the message matcher: {e}"))?;
        let pattern = Self {
            text: text.to_owned(),
            engine,
        };
        match pattern.eval("valid", "") {
            Some(true) => Ok(pattern),
            _ => Err(format!(
                "message {text:?} is not a valid regular expression"
            )),
        }
    }

    fn is_match(&self, message: &str) -> bool {
        self.eval("matches", message) == Some(true)
    }

    fn eval(&self, rule: &str, message: &str) -> Option<bool> {
        let mut engine = self.engine.clone();
        let input = serde_json::json!({ "pattern": self.text, "text": message });
        engine.set_input(regorus::Value::from(input));
        engine
            .eval_rule(format!("data.syncgate_rules_test.{rule}"))
            .ok()
            .and_then(|v| v.as_bool().ok().copied())
    }
}

fn run_test(args: TestArgs) -> anyhow::Result<()> {
    let suites = args
        .files
        .iter()
        .map(|file| Suite::load(file, args.config.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loaded: BTreeMap<PathBuf, RuleSet> = BTreeMap::new();
    for suite in &suites {
        if !loaded.contains_key(&suite.config) {
            let (_, rules) = load_rules(&suite.config).with_context(|| match &args.config {
                Some(_) => "the rules given with --config".to_owned(),
                None => format!("the rules {} names", suite.path.display()),
            })?;
            loaded.insert(suite.config.clone(), rules);
        }
    }
    let mut out = String::new();
    let (mut total, mut failed) = (0usize, 0usize);
    for suite in &suites {
        let Some(rules) = loaded.get(&suite.config) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{}  (rules {}, version {})",
            suite.path.display(),
            suite.config.display(),
            short_version(rules)
        );
        for case in &suite.cases {
            total += 1;
            let verdict = rules.evaluate(&case.input(rules)).verdict();
            let problems = case.check(&verdict, rules);
            if problems.is_empty() {
                let _ = writeln!(out, "  ok    {}", case.name);
                continue;
            }
            failed += 1;
            let _ = writeln!(out, "  FAIL  {} (line {})", case.name, case.line);
            for line in problems {
                let _ = writeln!(out, "          {line}");
            }
        }
    }
    let files = match suites.len() {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    };
    let _ = writeln!(
        out,
        "{total} cases: {} passed, {failed} failed ({files})",
        total - failed
    );
    print(&out)?;
    if failed > 0 {
        bail!("{failed} of {total} rule test cases failed");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rules backtest
// ---------------------------------------------------------------------------------------------

/// Why a recorded decision was not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum SkipReason {
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
enum Difference {
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

/// What replaying one event gave.
enum Replay {
    /// Not a decision (`completed`, `drift`, ...): nothing to replay.
    NotADecision,
    Skipped(SkipReason, String),
    Replayed {
        was: Verdict,
        now: Verdict,
    },
}

/// One side of a differing change: the outcome and the rules behind it.
#[derive(Debug, Serialize)]
struct Side {
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
struct Differing {
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

async fn run_backtest(args: BacktestArgs) -> anyhow::Result<()> {
    let (raw, rules) = load_rules(&args.config)?;
    let db = args.db.clone().unwrap_or_else(|| raw.store.path.clone());
    let replayer = Replayer::new(&raw, &rules);
    let reader = StoreReader::open(&db, &StoreOptions::default()).await?;
    let scanned = scan(&reader, &replayer, &args).await;
    reader.close().await;
    let (summary, changes, skipped) = scanned?;
    let report = Backtest {
        config: args.config.display().to_string(),
        db: db.display().to_string(),
        rules_version: rules.version().to_owned(),
        since: args.since,
        until: args.until,
        summary,
        changes,
        skipped,
    };
    let text = match args.format {
        BacktestFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        BacktestFormat::Table => render_backtest(&report, short_version(&rules)),
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
            .with_context(|| format!("cannot read {}", reader.path().display()))?;
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

/// Replays recorded decisions through one rule set.
struct Replayer<'a> {
    rules: &'a RuleSet,
    /// Ids of the rules that read the partner's document (the consent built-ins and Rego entries
    /// with `needs_partner_state`), whose failures are not trusted when the event lacks it.
    partner_state_rules: BTreeSet<String>,
}

impl<'a> Replayer<'a> {
    fn new(raw: &RawConfig, rules: &'a RuleSet) -> Self {
        let builtins = raw
            .rules
            .builtin
            .iter()
            .filter(|b| b.kind == BuiltinType::InboundSyncRequiresConsent)
            .map(|b| b.id.clone());
        let rego = raw
            .rules
            .rego
            .iter()
            .filter(|r| r.needs_partner_state)
            .map(|r| r.id.clone());
        Replayer {
            rules,
            partner_state_rules: builtins.chain(rego).collect(),
        }
    }

    /// Replay `event` when it records a decision the rules made: `received` (allowed) or
    /// `denied` by a failing enforced rule.
    fn replay(&self, event: &Event) -> Replay {
        let recorded = Evaluation {
            version: event.rules_version.clone().unwrap_or_default(),
            results: event
                .rule_results
                .iter()
                .filter_map(RuleResult::from_outcome)
                .collect(),
        };
        let was = match (event.kind, recorded.verdict()) {
            (EventKind::Received, allowed @ Verdict::Allow { .. }) => allowed,
            // A received event was allowed, whatever its results say.
            (EventKind::Received, _) => Verdict::Allow {
                warnings: Vec::new(),
            },
            (EventKind::Denied, Verdict::Allow { .. }) => {
                return Replay::Skipped(
                    SkipReason::RefusedBeforeRules,
                    event.detail.clone().unwrap_or_default(),
                );
            }
            (EventKind::Denied, refused) => refused,
            _ => return Replay::NotADecision,
        };
        let Some(kind) = event.operation.kind() else {
            return Replay::Skipped(
                SkipReason::UnknownOperation,
                format!("operation {:?}", event.operation.as_str()),
            );
        };
        let Some(before) = event.before.as_ref().and_then(Snapshot::value) else {
            return Replay::Skipped(
                SkipReason::NoBeforeState,
                "the event holds no readable before-state".to_owned(),
            );
        };
        let input = RuleInput::for_change(Change {
            kind,
            method: &event.method,
            canonical_path: &event.canonical_path,
            api_version: event.api_version.as_str(),
            partner: event.partner_tenant_id.as_deref(),
            request_body: event.request_body.as_ref(),
            before: Some(before),
            partner_state: event.partner_state.as_ref(),
            actor: &event.actor,
            time: event.time,
        });
        let evaluation = self.rules.evaluate(&input);
        let now = evaluation.verdict();
        // The proxy records the partner's document only when its rules read it. If they did not
        // and the new rules do, the rules that read it fail closed on the replay: trust the
        // outcome only when it is the same without their failures.
        let state_was_read = event.rules_version.as_deref() == Some(self.rules.version())
            || recorded
                .results
                .iter()
                .any(|r| r.kind == BuiltinType::InboundSyncRequiresConsent.as_str());
        let unrecorded = self.rules.needs_partner_state()
            && event.partner_tenant_id.is_some()
            && event.partner_state.is_none()
            && !state_was_read;
        let untrusted: Vec<&str> = evaluation
            .violations()
            .filter(|r| self.partner_state_rules.contains(&r.rule))
            .map(|r| r.rule.as_str())
            .collect();
        if !unrecorded || untrusted.is_empty() {
            return Replay::Replayed { was, now };
        }
        let without = Evaluation {
            version: evaluation.version.clone(),
            results: evaluation
                .results
                .iter()
                .filter(|r| r.passed || !self.partner_state_rules.contains(&r.rule))
                .cloned()
                .collect(),
        }
        .verdict();
        if Outcome::of(&without) != Outcome::of(&now) {
            return Replay::Skipped(
                SkipReason::PartnerStateNotRecorded,
                format!(
                    "rule {} reads the partner's state, which this event does not hold",
                    untrusted.join(", ")
                ),
            );
        }
        Replay::Replayed { was, now: without }
    }
}

/// How `now` differs from `was`, if it does in a way a rule author must see: refused or allowed
/// the other way round, or a rule warning that did not warn. A refusal by another rule is still a
/// refusal, and fewer warnings change nothing the caller relies on.
fn difference(was: &Verdict, now: &Verdict) -> Option<Difference> {
    match (Outcome::of(was).refuses(), Outcome::of(now).refuses()) {
        (false, true) => Some(Difference::Refused),
        (true, false) => Some(Difference::Allowed),
        (true, true) => None,
        (false, false) => {
            let warned: BTreeSet<&str> = deciding(was).iter().map(|r| r.rule.as_str()).collect();
            deciding(now)
                .iter()
                .any(|r| !warned.contains(r.rule.as_str()))
                .then_some(Difference::Warning)
        }
    }
}

fn differing(recorded: &Recorded, change: Difference, was: &Verdict, now: &Verdict) -> Differing {
    let event = &recorded.event;
    let by = |results: &[&RuleResult]| {
        results
            .iter()
            .map(|r| format!("rule {}: {}", r.rule, reason(r)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let summary = match (change, now) {
        (Difference::Refused, Verdict::NeedsApproval(r)) => format!(
            "would now be refused (approval required) by rule {}: {}",
            r.rule,
            reason(r)
        ),
        (Difference::Refused, _) => format!("would now be refused by {}", by(&deciding(now))),
        (Difference::Allowed, _) => {
            let then: Vec<&str> = deciding(was).iter().map(|r| r.rule.as_str()).collect();
            let mut text = format!(
                "would now be allowed (refused then by rule {})",
                then.join(", ")
            );
            let warnings = deciding(now);
            if !warnings.is_empty() {
                let _ = write!(text, ", with a warning from {}", by(&warnings));
            }
            text
        }
        (Difference::Warning, _) => {
            let warned: BTreeSet<&str> = deciding(was).iter().map(|r| r.rule.as_str()).collect();
            let new: Vec<&RuleResult> = deciding(now)
                .into_iter()
                .filter(|r| !warned.contains(r.rule.as_str()))
                .collect();
            format!("would now warn by {}", by(&new))
        }
    };
    Differing {
        seq: recorded.seq,
        operation_id: event.operation_id.uuid(),
        time: event.time,
        operation: event.operation.to_string(),
        partner: event.partner_tenant_id.as_deref().map(str::to_owned),
        actor: actor_name(event),
        change,
        was: Side::of(was),
        now: Side::of(now),
        summary,
    }
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

/// The table of differing changes, then the summary.
fn render_backtest(report: &Backtest, version: &str) -> String {
    let mut out = Vec::new();
    if report.changes.is_empty() {
        out.extend_from_slice(b"no recorded change would be decided differently\n");
    } else {
        let rows: Vec<[String; 7]> = report
            .changes
            .iter()
            .map(|c| {
                [
                    c.seq.to_string(),
                    c.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                    c.operation.clone(),
                    dash(c.partner.as_deref()),
                    c.actor.clone(),
                    c.operation_id.to_string(),
                    c.summary.clone(),
                ]
            })
            .collect();
        let header = BACKTEST_HEADER.map(str::to_owned);
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            // Writing to a Vec cannot fail.
            let _ = write_aligned(&mut out, row, &widths);
        }
    }
    let s = &report.summary;
    let mut text = String::from_utf8_lossy(&out).into_owned();
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
    use serde_json::json;

    use super::*;
    use crate::rules::{Action, Mode};

    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    fn case(toml_text: &str) -> Result<Case, String> {
        let table: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Case::from_raw(table, 1)
    }

    #[test]
    fn every_operation_the_rules_decide_has_a_default_request_the_proxy_classifies_as_it() {
        use OperationKind::*;
        let partner = TenantId::parse(PARTNER).unwrap();
        for kind in OperationKind::ALL {
            if matches!(kind, LegacySyncPolicyWrite | SyncRead) {
                continue;
            }
            for has_body in [false, true] {
                let method = Method::from_bytes(default_method(kind, has_body).as_bytes()).unwrap();
                let path = default_path(kind, default_version(kind), Some(&partner)).unwrap();
                match classify::classify(&method, &path, None, &HeaderMap::new()) {
                    Classification::Governed(g) => assert_eq!(g.kind, kind, "{method} {path}"),
                    other => panic!("{kind}: {method} {path} classifies as {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_case_builds_the_input_the_proxy_would() {
        let c = case(&format!(
            r#"
            name = "enable"
            operation = "sync_update"
            partner = "{}"
            body = {{ userSyncInbound = {{ isSyncAllowed = true }} }}
            before = {{ displayName = "Fabrikam", userSyncInbound = {{ isSyncAllowed = false }} }}
            expect = "allow"
            "#,
            PARTNER.to_uppercase()
        ))
        .unwrap();
        assert_eq!(
            c.request,
            CaseRequest {
                kind: OperationKind::SyncUpdate,
                method: "PATCH".into(),
                canonical_path: format!(
                    "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
                ),
                api_version: "v1.0",
                partner: Some(PARTNER.into()),
                body: Some(json!({"userSyncInbound": {"isSyncAllowed": true}})),
            }
        );
        assert_eq!(c.time, default_time());
        assert_eq!(c.time.to_rfc3339(), "2026-01-05T10:00:00+00:00");
        let input = c.input(&RuleSet::empty());
        assert_eq!(
            input.expected_after,
            Some(json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}))
        );
    }

    #[test]
    fn cases_the_proxy_would_refuse_before_the_rules_are_errors() {
        let err = |text: &str| {
            case(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"))
        };
        let sync = format!("name = \"x\"\nexpect = \"deny\"\npartner = \"{PARTNER}\"\n");
        assert!(
            err(&format!("{sync}operation = \"sync_create\"\n")).contains("body is empty"),
            "a PUT needs a body"
        );
        assert!(
            err(&format!(
                "{sync}operation = \"sync_update\"\nbody = {{ groupSyncInbound = {{ isSyncAllowed = true }} }}\n"
            ))
            .contains("groupSyncInbound"),
            "group sync is beta only"
        );
        assert!(
            err(&format!("{sync}operation = \"legacy_sync_policy_write\"\n")).contains("refuses")
        );
        assert!(err(&format!("{sync}operation = \"sync_read\"\n")).contains("read"));
        assert!(err(&format!("{sync}operation = \"template_reset\"\n")).contains("no partner"));
        assert!(err(&format!("{sync}operation = \"sync_frobnicate\"\n")).contains("sync_create"));
        assert!(
            err(&format!("{sync}operation = \"sync_delete\"\ncolour = 1\n")).contains("colour")
        );
        assert!(
            err(&format!(
                "{sync}operation = \"sync_delete\"\nactor = {{ upm = \"a\" }}\n"
            ))
            .contains("upm")
        );
        assert!(
            err("name = \"x\"\nexpect = \"allow\"\noperation = \"sync_delete\"\npartner = \"nope\"\n")
                .contains("not a GUID")
        );
    }

    #[test]
    fn a_partner_create_takes_its_partner_from_the_body() {
        let c = case(&format!(
            "name = \"x\"\nexpect = \"allow\"\noperation = \"partner_create\"\nbody = {{ tenantId = \"{PARTNER}\" }}\n"
        ))
        .unwrap();
        assert_eq!(c.request.partner.as_deref(), Some(PARTNER));
        assert_eq!(c.request.method, "POST");
    }

    #[test]
    fn times_are_rfc3339_strings_or_toml_datetimes_with_an_offset() {
        let base = format!(
            "name = \"x\"\nexpect = \"allow\"\noperation = \"sync_delete\"\npartner = \"{PARTNER}\"\n"
        );
        let saturday = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
        assert_eq!(
            case(&format!("{base}time = \"2026-01-10T10:00:00+01:00\"\n"))
                .unwrap()
                .time,
            saturday
        );
        assert_eq!(
            case(&format!("{base}time = 2026-01-10T09:00:00Z\n"))
                .unwrap()
                .time,
            saturday
        );
        assert!(
            case(&format!("{base}time = 2026-01-10T09:00:00\n"))
                .err()
                .unwrap()
                .contains("offset")
        );
    }

    #[test]
    fn message_patterns_are_unanchored_regular_expressions() {
        let p = MessagePattern::new("not on the (sync )?allow-list").unwrap();
        assert!(p.is_match("rule 'a': partner x is not on the sync allow-list; ..."));
        assert!(!p.is_match("rule 'a': partner x is on the deny-list"));
        assert!(MessagePattern::new("unclosed (group").is_err());
    }

    fn result(rule: &str, mode: Mode, action: Action, passed: bool) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            kind: "partner_allowlist".into(),
            mode,
            action,
            passed,
            message: (!passed).then(|| format!("rule '{rule}': no")),
        }
    }

    fn verdict(results: Vec<RuleResult>) -> Verdict {
        Evaluation {
            version: String::new(),
            results,
        }
        .verdict()
    }

    #[test]
    fn differences_are_refusals_either_way_round_and_new_warnings() {
        use {Action::*, Mode::*};
        let allowed = verdict(vec![]);
        let denied = verdict(vec![result("a", Enforce, Deny, false)]);
        let held = verdict(vec![result("b", Enforce, RequireApproval, false)]);
        let warned = verdict(vec![result("w", Warn, Deny, false)]);
        let shadowed = verdict(vec![result("s", Shadow, Deny, false)]);
        assert_eq!(difference(&allowed, &denied), Some(Difference::Refused));
        assert_eq!(difference(&allowed, &held), Some(Difference::Refused));
        assert_eq!(difference(&held, &warned), Some(Difference::Allowed));
        assert_eq!(difference(&allowed, &warned), Some(Difference::Warning));
        assert_eq!(difference(&warned, &warned), None);
        assert_eq!(difference(&warned, &allowed), None);
        assert_eq!(difference(&denied, &held), None);
        assert_eq!(difference(&allowed, &shadowed), None);
    }

    fn recorded_event(kind: EventKind) -> Event {
        let mut e = Event::new(Uuid::now_v7(), kind);
        e.operation = "sync_update".into();
        e.method = "PATCH".into();
        e.api_version = "v1.0".into();
        e.canonical_path = format!(
            "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
        );
        e.partner_tenant_id = PARTNER.parse().ok();
        e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
        e.before = Some(Snapshot::Present {
            value: json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": false}}),
        });
        e
    }

    fn rules_from(toml_text: &str) -> (RawConfig, RuleSet) {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        let rules = raw.load_rules().unwrap();
        (raw, rules)
    }

    #[test]
    fn a_missing_partner_state_skips_only_changes_whose_outcome_depends_on_it() {
        let (raw, rules) = rules_from(
            "[[rules.builtin]]\nid = \"consent\"\ntype = \"inbound_sync_requires_consent\"\n",
        );
        let replayer = Replayer::new(&raw, &rules);
        let enabling = recorded_event(EventKind::Received);
        assert!(matches!(
            replayer.replay(&enabling),
            Replay::Skipped(SkipReason::PartnerStateNotRecorded, _)
        ));
        let mut disabling = recorded_event(EventKind::Received);
        disabling.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": false}}));
        assert!(matches!(
            replayer.replay(&disabling),
            Replay::Replayed { .. }
        ));
        let mut recorded_state = recorded_event(EventKind::Received);
        recorded_state.partner_state =
            Some(json!({"automaticUserConsentSettings": {"inboundAllowed": false}}));
        match replayer.replay(&recorded_state) {
            Replay::Replayed { now, .. } => assert_eq!(Outcome::of(&now), Outcome::Deny),
            _ => panic!("a recorded partner state is replayed"),
        }
    }

    #[test]
    fn refusals_the_rules_did_not_make_and_other_events_are_not_replayed() {
        let (raw, rules) = rules_from("");
        let replayer = Replayer::new(&raw, &rules);
        let mut invalid = recorded_event(EventKind::Denied);
        invalid.detail = Some("BadRequest: Invalid property 'x'.".into());
        assert!(matches!(
            replayer.replay(&invalid),
            Replay::Skipped(SkipReason::RefusedBeforeRules, _)
        ));
        assert!(matches!(
            replayer.replay(&recorded_event(EventKind::Completed)),
            Replay::NotADecision
        ));
        let mut by_rule = recorded_event(EventKind::Denied);
        by_rule.rule_results = vec![result("a", Mode::Enforce, Action::Deny, false).outcome()];
        match replayer.replay(&by_rule) {
            Replay::Replayed { was, now } => {
                assert_eq!(difference(&was, &now), Some(Difference::Allowed))
            }
            _ => panic!("a refusal by a rule is replayed"),
        }
    }
}
