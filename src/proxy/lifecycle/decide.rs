//! Decide: run the local rules on a governed change before anything is recorded or sent.
//!
//! Every rule sees the same input document (`rules::RuleInput`): the operation, the request, the
//! before-state, the state the change would produce, the actor and the time. The rule set in force
//! sits behind a [`RulesHandle`] so `SIGHUP` can swap it whole: a request decides with one version
//! from start to end, and that version is recorded with the decision.

use std::sync::{Arc, PoisonError, RwLock};

use super::{Exit, Operation};
use crate::audit::{Actor, Event, Snapshot};
use crate::classify::Governed;
use crate::proxy::ProxyError;
use crate::rules::{self, Evaluation, RuleInput, RuleResult, RuleSet, Verdict};

/// The rule set in force, replaced atomically on reload.
#[derive(Clone)]
pub(crate) struct RulesHandle(Arc<RwLock<Arc<RuleSet>>>);

impl RulesHandle {
    pub(crate) fn new(rules: Arc<RuleSet>) -> Self {
        Self(Arc::new(RwLock::new(rules)))
    }

    /// The rules a decision starting now uses.
    pub(crate) fn current(&self) -> Arc<RuleSet> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Put `rules` in force for every decision that starts after this call.
    pub(crate) fn replace(&self, rules: Arc<RuleSet>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = rules;
    }
}

/// A decision: every rule's result, and the partner document when a rule needed it.
pub(crate) struct Decided {
    pub(crate) evaluation: Evaluation,
    pub(crate) partner_state: Option<serde_json::Value>,
}

impl Decided {
    /// Record what decided on an event of this change: the results, the rules' version, and the
    /// partner document the rules saw (so a backtest can replay the same input).
    pub(crate) fn stamp(&self, event: &mut Event) {
        event.rule_results = self.evaluation.outcomes();
        event.rules_version = Some(self.evaluation.version.clone());
        event.partner_state = self.partner_state.clone();
    }
}

/// Evaluate `rules` for the operation (its body and before-state) and keep the decision in it.
/// The partner's document, when a rule needs it, was read by the before phase: deciding does no
/// I/O. A failing enforced `deny` rule ends the operation with 403 `SyncgatePolicyViolation`;
/// a failing enforced `require_approval` rule (and no denial) hands the change to the gate:
/// the rule's result is returned.
pub(super) fn decide(
    rules: &RuleSet,
    op: &mut Operation,
    governed: &Governed,
    partner_state: Option<serde_json::Value>,
) -> Result<Option<RuleResult>, Exit> {
    let absent = Snapshot::Absent;
    let input = rule_input(
        governed,
        op.body.as_ref(),
        op.before.as_ref().unwrap_or(&absent),
        partner_state.as_ref(),
        &op.actor,
        chrono::Utc::now(),
    );
    let decided = Decided {
        evaluation: rules.evaluate(&input),
        partner_state: input.partner_state,
    };
    let verdict = decided.evaluation.verdict();
    op.decided = Some(decided);
    match verdict {
        Verdict::Allow { .. } => Ok(None),
        Verdict::Deny(result) => Err(Exit::refused(ProxyError::PolicyViolation(
            result
                .message
                .clone()
                .unwrap_or_else(|| format!("rule '{}' refused the change", result.rule)),
        ))),
        Verdict::NeedsApproval(result) => Ok(Some(result)),
    }
}

/// The document every rule decides on for `governed`, exactly as the proxy builds it; the rule
/// tools (`syncgate rules test|backtest`) call this too, so they never guess.
pub(crate) fn rule_input(
    governed: &Governed,
    body: Option<&serde_json::Value>,
    before: &Snapshot,
    partner_state: Option<&serde_json::Value>,
    actor: &Actor,
    time: chrono::DateTime<chrono::Utc>,
) -> RuleInput {
    let canonical_path = governed.path.to_string();
    RuleInput::for_change(rules::Change {
        kind: governed.kind,
        method: governed.method.as_str(),
        canonical_path: &canonical_path,
        api_version: governed.path.version.as_str(),
        partner: governed.partner.as_ref().map(|p| p.as_str()),
        request_body: body,
        before: before.value(),
        partner_state,
        actor,
        time,
    })
}
