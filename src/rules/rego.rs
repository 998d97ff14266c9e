//! Custom rules in Rego (regorus): one file per `[[rules.rego]]` entry, compiled once at load.
//!
//! Each entry gets its own [`regorus::Engine`], so two files may declare the same package without
//! meeting. The engine is *prepared* at load (parsed, analysed, its query evaluated once against a
//! sample input, which also proves the package and rule exist) and kept read-only; every
//! evaluation clones it, sets `input` and evaluates the query.
//!
//! Why a clone rather than regorus's `CompiledPolicy::eval_with_input(&self)`: the two cost the
//! same (measured at about 14 µs per evaluation of the example policy in a debug build, the clone
//! itself about 1 µs; a prepared engine's clone shares the parsed modules through `Arc` and resets
//! only evaluation state), but `CompiledPolicy` builds a fresh engine per call that ignores the
//! per-engine execution timer and only honours regorus's process-wide fallback timer. The clone
//! keeps this rule's own limit and leaves global state alone.
//!
//! The time limit is cooperative: regorus checks the clock between units of work, so a single
//! built-in call that is slow on its own (building `numbers.range(1, 1e9)`) runs to its end before
//! the limit is noticed. A rule that breaks the limit fails (closed) like any runtime error.
//!
//! `print()` output is gathered and dropped: it could carry bodies or claims, which are never
//! logged.

use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::Engine;
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value;

use super::raw::{DEFAULT_QUERY, RawRego};
use super::{Action, Mode, RulesError};

/// How many units of work regorus does between two looks at the clock.
const TIMER_CHECK_INTERVAL: u32 = 64;

/// One loaded Rego entry.
#[derive(Clone)]
pub(crate) struct RegoRule {
    pub(crate) id: String,
    pub(crate) mode: Mode,
    pub(crate) action: Action,
    /// The approval policy a `require_approval` failure is held under (`None`: `default`).
    pub(crate) approval_policy: Option<String>,
    pub(crate) needs_partner_state: bool,
    /// The file as shown in messages (the config's folder joined with `file`).
    pub(crate) path: PathBuf,
    query: String,
    /// Prepared and never evaluated in place: cloned per evaluation.
    engine: Engine,
}

impl std::fmt::Debug for RegoRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoRule")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// One violation a policy answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    /// The `rule` member, when the policy named one.
    pub(crate) rule: Option<String>,
    pub(crate) message: String,
}

/// `rules.rego[0] (id "x")`.
pub(crate) fn place(index: usize, id: &str) -> String {
    format!("rules.rego[{index}] (id {id:?})")
}

impl RegoRule {
    /// Read, compile and prepare entry `index`; also returns the file's bytes (for the version).
    pub fn load(
        index: usize,
        raw: &RawRego,
        base_dir: &Path,
        time_limit: Duration,
        sample: &regorus::Value,
    ) -> Result<(Self, Vec<u8>), RulesError> {
        let place = place(index, &raw.id);
        let path = base_dir.join(&raw.file);
        let bytes = std::fs::read(&path).map_err(|source| RulesError::ReadPolicy {
            place: place.clone(),
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| RulesError::ReadPolicy {
            place: place.clone(),
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        let shown = path.display().to_string();
        let mut engine = Engine::new();
        engine.set_gather_prints(true);
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: time_limit,
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        engine
            .add_policy(shown.clone(), text)
            .map_err(|e| RulesError::Rego {
                place: place.clone(),
                message: summarise(&e),
            })?;
        let query = raw
            .query
            .clone()
            .unwrap_or_else(|| DEFAULT_QUERY.to_owned());
        if !query.starts_with("data.") {
            return Err(RulesError::Invalid {
                place,
                message: format!(
                    "query {query:?} must be a rule path starting with \"data.\", like \
                     \"{DEFAULT_QUERY}\""
                ),
            });
        }
        let mut rule = Self {
            id: raw.id.clone(),
            mode: raw.mode,
            action: raw.action,
            approval_policy: super::approval_policy(raw.action, raw.approval_policy.as_deref())
                .map_err(|message| RulesError::Invalid {
                    place: place.clone(),
                    message,
                })?,
            needs_partner_state: raw.needs_partner_state,
            path,
            query,
            engine,
        };
        // Prepares the engine (analysis happens on first evaluation) and proves the query names a
        // rule of this file and answers violations.
        rule.engine.set_input(sample.clone());
        let answer = rule.engine.eval_rule(rule.query.clone());
        let checked = answer
            .map_err(|e| summarise(&e))
            .and_then(|value| violations(&value));
        if let Err(why) = checked {
            return Err(RulesError::Invalid {
                place,
                message: format!(
                    "query {} in {shown} failed on a sample input: {why} (does the file declare \
                     the package and rule the query names?)",
                    rule.query
                ),
            });
        }
        Ok((rule, bytes))
    }

    /// Evaluate against `input`: the violations, or why evaluation failed.
    pub(crate) fn evaluate(&self, input: &regorus::Value) -> Result<Vec<Violation>, String> {
        let run = catch_unwind(AssertUnwindSafe(|| {
            let mut engine = self.engine.clone();
            engine.set_input(input.clone());
            engine.eval_rule(self.query.clone())
        }));
        match run {
            Ok(Ok(value)) => violations(&value),
            Ok(Err(e)) => Err(summarise(&e)),
            Err(_) => Err("the Rego engine panicked".to_owned()),
        }
    }
}

/// The violations in a query's answer: a set or array of `{"rule"?: string, "message": string}`
/// objects or bare message strings; undefined means none.
fn violations(answer: &regorus::Value) -> Result<Vec<Violation>, String> {
    if *answer == regorus::Value::Undefined {
        return Ok(Vec::new());
    }
    let json = serde_json::to_value(answer).map_err(|e| e.to_string())?;
    let Value::Array(items) = json else {
        return Err(format!(
            "the query must answer a set or array of violations, not {}",
            crate::classify::json_type(&json)
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(message) => Ok(Violation {
                rule: None,
                message,
            }),
            Value::Object(ref fields) => {
                let message = fields.get("message").and_then(Value::as_str);
                let rule = fields.get("rule").map(|r| r.as_str().ok_or(()));
                match (message, rule) {
                    (Some(message), None | Some(Ok(_))) => Ok(Violation {
                        rule: fields
                            .get("rule")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        message: message.to_owned(),
                    }),
                    _ => Err(format!(
                        "violation {item} needs a string \"message\" (and, optionally, a string \
                         \"rule\")"
                    )),
                }
            }
            other => Err(format!(
                "violation {other} is neither a message string nor an object with a \"message\""
            )),
        })
        .collect()
}

/// regorus errors read `\n--> file:12:5\n  |\n12 | …\n  |     ^\nerror: what`; turn that into
/// `file:12:5: what`. Other errors pass through, on one line.
pub(crate) fn summarise(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let location = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .map(str::trim);
    let message = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::trim);
    match (location, message) {
        (Some(location), Some(message)) => format!("{location}: {message}"),
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}
