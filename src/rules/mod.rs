//! Local rules: the *decide* step of the lifecycle (docs/design.md "The request lifecycle",
//! "Local rules"). Given one governed change — what it is, the state before it, the state it would
//! leave, who asks and when — every rule says whether the change keeps it, and
//! [`Evaluation::verdict`] turns the answers into allow, deny or "needs approval".
//!
//! The module is pure: no I/O after [`RuleSet::load`], no clock (the time is part of the input),
//! so the proxy, `syncgate rules test` and the backtest all get the same answer for the same
//! [`RuleInput`].
//!
//! - `raw`: the `[rules]` TOML table as written ([`RawRules`]);
//! - `input`: the input document ([`RuleInput`]) and [`expected_after`];
//! - `builtin`: the eight built-in rules; `window`: change windows;
//! - `rego`: custom rules in Rego.
//!
//! Fail closed: a rule that cannot be evaluated (a Rego runtime error or time-out, a missing
//! partner state, a restore whose content is unknown) counts as a violation of that rule, never as
//! a pass. Each rule has a mode — `enforce` refuses, `warn` forwards and reports, `shadow` only
//! records — and an action for when an enforced rule fails: `deny`, or `require_approval`.

mod builtin;
pub(crate) use builtin::is_app_only;
mod input;
mod raw;
mod rego;
mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use input::{Change, RuleInput, expected_after};
pub use raw::{
    BuiltinType, DEFAULT_QUERY, DEFAULT_REGO_TIME_LIMIT, RawBuiltin, RawPartner, RawRego, RawRules,
};

use builtin::BuiltinRule;
use input::Facts;
use rego::RegoRule;

/// What a failing rule does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Refuse the change (or hold it for approval, per the rule's [`Action`]).
    #[default]
    Enforce,
    /// Forward it, record the violation and tell the client in a response header.
    Warn,
    /// Forward it and only record the violation (to try a rule before enforcing it).
    Shadow,
}

impl Mode {
    /// `enforce`, `warn` or `shadow`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Shadow => "shadow",
        }
    }
}

/// What an enforced, failing rule asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Refuse the change.
    #[default]
    Deny,
    /// Hold the change until approvers accept it (the approval gate; refused until it exists).
    RequireApproval,
}

impl Action {
    /// `deny` or `require_approval`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::RequireApproval => "require_approval",
        }
    }
}

/// One rule's answer about one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule's id (for Rego, the violation's own `rule` when it names one).
    pub(crate) rule: String,
    /// The built-in type (`partner_allowlist`, …) or `rego`.
    pub(crate) kind: String,
    /// The rule's mode (for Rego, the entry's).
    pub(crate) mode: Mode,
    /// The rule's action (for Rego, the entry's).
    pub(crate) action: Action,
    /// Whether the change keeps the rule.
    pub(crate) passed: bool,
    /// Why it does not, for the person who sent the request: `rule 'x': …`. `None` when passed.
    pub(crate) message: Option<String>,
    /// With `require_approval`: the policy the change is held under (`None`: `default`). Not
    /// recorded: the approval request names the policy it was made under.
    #[serde(skip)]
    pub(crate) approval_policy: Option<String>,
}

impl RuleResult {
    /// The result a recorded outcome (an audit event's `rule_results`) stands for; `None` when
    /// its mode or action is not one this version knows.
    pub(crate) fn from_outcome(outcome: &crate::audit::RuleOutcome) -> Option<RuleResult> {
        let mode = [Mode::Enforce, Mode::Warn, Mode::Shadow]
            .into_iter()
            .find(|m| m.as_str() == outcome.mode)?;
        let action = [Action::Deny, Action::RequireApproval]
            .into_iter()
            .find(|a| a.as_str() == outcome.action)?;
        Some(RuleResult {
            rule: outcome.rule.clone(),
            kind: outcome.kind.clone(),
            mode,
            action,
            passed: outcome.passed,
            message: outcome.message.clone(),
            approval_policy: None,
        })
    }

    /// This result as an audit event records it.
    pub(crate) fn outcome(&self) -> crate::audit::RuleOutcome {
        crate::audit::RuleOutcome {
            rule: self.rule.clone(),
            kind: self.kind.clone(),
            mode: self.mode.as_str().to_owned(),
            action: self.action.as_str().to_owned(),
            passed: self.passed,
            message: self.message.clone(),
        }
    }
}

/// Every rule's answer about one change, and the version of the rules that gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// [`RuleSet::version`] of the rules evaluated; record it with the decision.
    pub(crate) version: String,
    /// Built-in rules in config order, then Rego rules in config order (a Rego entry gives one
    /// result per violation, or one passing result).
    pub results: Vec<RuleResult>,
}

/// The decision the results add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward the change; `warnings` are the failing `warn` rules, for the response header.
    Allow {
        /// The failing `warn` results, in order.
        warnings: Vec<RuleResult>,
    },
    /// Refuse it: the first failing enforced `deny` rule.
    Deny(RuleResult),
    /// Hold it for approval: the first failing enforced `require_approval` rule (only when no
    /// enforced `deny` rule fails).
    NeedsApproval(RuleResult),
}

impl Evaluation {
    /// The decision. A failing enforced `deny` rule wins over a failing enforced
    /// `require_approval` rule wherever they are in the list (an approval cannot lift a denial,
    /// so asking approvers first would only waste their time); among rules of one action, the
    /// first in order decides. Otherwise the change is allowed, with the failing `warn` rules as
    /// warnings. Failing `shadow` rules only appear in [`results`](Self::results).
    pub(crate) fn verdict(&self) -> Verdict {
        let enforced = |action: Action| {
            self.results
                .iter()
                .find(|r| !r.passed && r.mode == Mode::Enforce && r.action == action)
        };
        if let Some(r) = enforced(Action::Deny) {
            return Verdict::Deny(r.clone());
        }
        if let Some(r) = enforced(Action::RequireApproval) {
            return Verdict::NeedsApproval(r.clone());
        }
        Verdict::Allow {
            warnings: self
                .results
                .iter()
                .filter(|r| !r.passed && r.mode == Mode::Warn)
                .cloned()
                .collect(),
        }
    }

    /// The results as JSON objects (`rule`, `kind`, `mode`, `action`, `passed`, `message`), for
    /// the audit event's `rule_results`.
    #[cfg(test)]
    pub(crate) fn results_json(&self) -> Vec<serde_json::Value> {
        self.results
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    /// The results as the audit event records them (`rule_results`).
    pub(crate) fn outcomes(&self) -> Vec<crate::audit::RuleOutcome> {
        self.results.iter().map(RuleResult::outcome).collect()
    }

    /// The failing results, in order.
    pub fn violations(&self) -> impl Iterator<Item = &RuleResult> {
        self.results.iter().filter(|r| !r.passed)
    }
}

/// Why rules could not be loaded. Each message names the entry (`rules.builtin[2] (id "x")`) and,
/// for Rego, the file and `line:column`.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// An entry is invalid: a bad tenant id, time zone, hours, operation name, unknown
    /// allow-list, duplicate id, a key that does not apply to its type, a Rego query that does not
    /// answer violations, ...
    #[error("{place}: {message}")]
    Invalid {
        /// The entry (`rules.builtin[2] (id "window")`), or `rules` for the table's own keys.
        place: String,
        /// What is wrong and, where it helps, what would be right.
        message: String,
    },
    /// A Rego file could not be read (missing, unreadable, not UTF-8).
    #[error("{place}: cannot read {}", path.display())]
    ReadPolicy {
        /// The entry (`rules.rego[0] (id "x")`).
        place: String,
        /// The file, as resolved against the config file's folder.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A Rego file does not compile; `message` is `file:line:col: what`.
    #[error("{place}: {message}")]
    Rego {
        /// The entry (`rules.rego[0] (id "x")`).
        place: String,
        /// `file:line:col: what`, from the Rego compiler.
        message: String,
    },
}

/// Rules loaded, validated and compiled once. Cloning is cheap (an `Arc`); it is `Send + Sync`,
/// so one set is shared by every request, and a reload swaps in a whole new set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    version: String,
    builtins: Vec<BuiltinRule>,
    rego: Vec<RegoRule>,
    needs_partner_state: bool,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<RuleSet>();
};

impl RuleSet {
    /// Validate and compile `raw`. `base_dir` (the config file's folder) resolves relative Rego
    /// paths. Nothing is half-loaded: any error leaves the caller with its previous set.
    pub fn load(raw: &RawRules, base_dir: &Path) -> Result<RuleSet, RulesError> {
        let time_limit = {
            let text = raw
                .rego_time_limit
                .as_deref()
                .unwrap_or(DEFAULT_REGO_TIME_LIMIT);
            crate::units::duration("rules.rego_time_limit", text).map_err(|e| {
                RulesError::Invalid {
                    place: "rules".into(),
                    message: e.to_string(),
                }
            })?
        };
        let mut ids = BTreeSet::new();
        let mut builtins = Vec::with_capacity(raw.builtin.len());
        for (index, entry) in raw.builtin.iter().enumerate() {
            let place = builtin::place(index, &entry.id);
            check_id(&entry.id, &mut ids).map_err(|message| RulesError::Invalid {
                place: place.clone(),
                message,
            })?;
            let rule = BuiltinRule::load(entry, &raw.builtin)
                .map_err(|message| RulesError::Invalid { place, message })?;
            builtins.push(rule);
        }
        let sample = sample_input();
        let mut rego = Vec::with_capacity(raw.rego.len());
        let mut files = Vec::with_capacity(raw.rego.len());
        for (index, entry) in raw.rego.iter().enumerate() {
            check_id(&entry.id, &mut ids).map_err(|message| RulesError::Invalid {
                place: rego::place(index, &entry.id),
                message,
            })?;
            let (rule, bytes) = RegoRule::load(index, entry, base_dir, time_limit, &sample)?;
            rego.push(rule);
            files.push(bytes);
        }
        let needs_partner_state = builtins.iter().any(BuiltinRule::needs_partner_state)
            || rego.iter().any(|r| r.needs_partner_state);
        Ok(RuleSet {
            inner: Arc::new(Inner {
                version: version(raw, &files),
                builtins,
                rego,
                needs_partner_state,
            }),
        })
    }

    /// No rules: every change is allowed. Its version is that of an empty `[rules]` table.
    #[cfg(test)]
    pub(crate) fn empty() -> RuleSet {
        RuleSet {
            inner: Arc::new(Inner {
                version: version(&RawRules::default(), &[]),
                builtins: Vec::new(),
                rego: Vec::new(),
                needs_partner_state: false,
            }),
        }
    }

    /// Hex SHA-256 over the canonical JSON of the rule config (defaults filled in, layout and
    /// comments ignored) and every Rego file's bytes, in order. Record it with every decision.
    pub(crate) fn version(&self) -> &str {
        &self.inner.version
    }

    /// Whether a rule reads [`RuleInput::partner_state`] (the consent rule, or a Rego entry with
    /// `needs_partner_state = true`): the pipeline then reads the partner before deciding.
    pub(crate) fn needs_partner_state(&self) -> bool {
        self.inner.needs_partner_state
    }

    /// Every `require_approval` rule's id and the approval policy it names (`default` when it
    /// names none), for the configuration to check they exist.
    pub(crate) fn approval_policies(&self) -> Vec<(&str, &str)> {
        fn policy(p: &Option<String>) -> &str {
            p.as_deref()
                .unwrap_or(crate::approvals::policy::DEFAULT_POLICY)
        }
        let inner = &*self.inner;
        let builtins = inner
            .builtins
            .iter()
            .filter(|r| r.action == Action::RequireApproval)
            .map(|r| (r.id.as_str(), policy(&r.approval_policy)));
        let rego = inner
            .rego
            .iter()
            .filter(|r| r.action == Action::RequireApproval)
            .map(|r| (r.id.as_str(), policy(&r.approval_policy)));
        builtins.chain(rego).collect()
    }

    /// Whether there are no rules at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.builtins.is_empty() && self.inner.rego.is_empty()
    }

    /// Evaluate every rule against `input`. Never panics; a rule that cannot be evaluated fails
    /// with a message starting `evaluation failed:`.
    pub fn evaluate(&self, input: &RuleInput) -> Evaluation {
        let inner = &*self.inner;
        let facts = Facts::new(input);
        let mut results = Vec::with_capacity(inner.builtins.len() + inner.rego.len());
        for rule in &inner.builtins {
            let outcome = rule.check(&facts);
            results.push(RuleResult {
                rule: rule.id.clone(),
                kind: rule.kind.as_str().to_owned(),
                mode: rule.mode,
                action: rule.action,
                approval_policy: rule.approval_policy.clone(),
                passed: outcome.is_ok(),
                message: outcome
                    .err()
                    .map(|why| format!("rule '{}': {why}", rule.id)),
            });
        }
        if !inner.rego.is_empty() {
            let document = serde_json::to_value(input)
                .map(regorus::Value::from)
                .map_err(|e| format!("the input could not be converted: {e}"));
            for rule in &inner.rego {
                let outcome = document.clone().and_then(|doc| rule.evaluate(&doc));
                push_rego(&mut results, rule, outcome);
            }
        }
        Evaluation {
            version: inner.version.clone(),
            results,
        }
    }
}

/// An entry's `approval_policy`, which only a `require_approval` rule may name.
pub(crate) fn approval_policy(
    action: Action,
    policy: Option<&str>,
) -> Result<Option<String>, String> {
    match (action, policy) {
        (Action::Deny, Some(_)) => {
            Err("approval_policy applies only to a rule with action = \"require_approval\"".into())
        }
        (_, policy) => Ok(policy.map(str::to_owned)),
    }
}

/// One result per violation of `rule`, one passing result when there are none, one failing
/// result when evaluation failed.
fn push_rego(
    results: &mut Vec<RuleResult>,
    rule: &RegoRule,
    outcome: Result<Vec<rego::Violation>, String>,
) {
    let result = |name: &str, passed: bool, message: Option<String>| RuleResult {
        rule: name.to_owned(),
        kind: "rego".to_owned(),
        mode: rule.mode,
        action: rule.action,
        approval_policy: rule.approval_policy.clone(),
        passed,
        message,
    };
    match outcome {
        Ok(violations) if violations.is_empty() => results.push(result(&rule.id, true, None)),
        Ok(violations) => {
            for v in violations {
                let name = v.rule.as_deref().unwrap_or(&rule.id);
                results.push(result(
                    name,
                    false,
                    Some(format!("rule '{name}': {}", v.message)),
                ));
            }
        }
        Err(why) => results.push(result(
            &rule.id,
            false,
            Some(format!(
                "rule '{}': evaluation failed: {why} (policy {})",
                rule.id,
                rule.path.display()
            )),
        )),
    }
}

/// Ids are unique, non-empty, and plain (they travel in messages, headers and the audit log).
fn check_id(id: &str, seen: &mut BTreeSet<String>) -> Result<(), String> {
    if id.is_empty() {
        return Err("id is empty".to_owned());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "id {id:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    if !seen.insert(id.to_owned()) {
        return Err(format!(
            "id {id:?} is used by another rule; ids must be unique"
        ));
    }
    Ok(())
}

/// The input each Rego query is tried on at load: every field present, as empty as it can be.
fn sample_input() -> regorus::Value {
    let mut input = RuleInput::new(
        crate::classify::OperationKind::SyncUpdate,
        chrono::DateTime::UNIX_EPOCH,
    );
    input.method = "PATCH".into();
    input.api_version = "v1.0".into();
    serde_json::to_value(&input)
        .map(regorus::Value::from)
        .unwrap_or(regorus::Value::Null)
}

/// sha256 over a domain tag, the config's canonical JSON and each file, each length-prefixed so
/// no two different inputs hash alike.
fn version(raw: &RawRules, files: &[Vec<u8>]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"syncgate-rules-v1\0");
    let config = serde_json::to_vec(raw).unwrap_or_default();
    for part in std::iter::once(&config).chain(files) {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}
