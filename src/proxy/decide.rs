//! Decide: run the local rules on a governed change before anything is recorded or sent.
//!
//! Every rule sees the same input document (`rules::RuleInput`): the operation, the request, the
//! before-state, the state the change would produce, the actor and the time. The rule set in force
//! sits behind a [`RulesHandle`] so `SIGHUP` can swap it whole: a request decides with one version
//! from start to end, and that version is recorded with the decision.

use std::sync::{Arc, PoisonError, RwLock};

use http::HeaderValue;

use super::{Proxy, state};
use crate::audit::{Actor, Event, Snapshot};
use crate::classify::Governed;
use crate::rules::{self, Evaluation, RuleInput, RuleSet};

/// The rule set in force, replaced atomically on reload.
#[derive(Clone)]
pub struct RulesHandle(Arc<RwLock<Arc<RuleSet>>>);

impl RulesHandle {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Self(Arc::new(RwLock::new(rules)))
    }

    /// The rules a decision starting now uses.
    pub fn current(&self) -> Arc<RuleSet> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Put `rules` in force for every decision that starts after this call.
    pub fn replace(&self, rules: Arc<RuleSet>) {
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

impl Proxy {
    /// Evaluate the rules in force for this change.
    pub(crate) async fn decide(
        &self,
        governed: &Governed,
        body: Option<&serde_json::Value>,
        before: &Snapshot,
        actor: &Actor,
        authorization: Option<&HeaderValue>,
    ) -> Decided {
        let rules = self.governor.rules.current();
        // Only rules about the partner's consent settings need its document; read it only then.
        let partner_state = match (&governed.partner, rules.needs_partner_state()) {
            (Some(partner), true) => {
                let path = crate::graph::partner_path(governed.path.version, partner);
                state::read(&self.upstream, &path, authorization)
                    .await
                    .snapshot
                    .value()
                    .cloned()
            }
            _ => None,
        };
        let input = rule_input(
            governed,
            body,
            before,
            partner_state.as_ref(),
            actor,
            chrono::Utc::now(),
        );
        Decided {
            evaluation: rules.evaluate(&input),
            partner_state: input.partner_state,
        }
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
