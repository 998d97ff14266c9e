//! Replaying one recorded decision through new rules, and how the outcome differs.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use http::{HeaderMap, Method};

use super::{Difference, Differing, Side, SkipReason};
use crate::audit::{Event, EventKind, Recorded, Snapshot};
use crate::classify::{self, Classification, Governed, OperationKind, TenantId};
use crate::cli::render::actor_name;
use crate::cli::rules::{Outcome, deciding, reason};
use crate::config::RawConfig;
use crate::proxy::{bind_partner, rule_input};
use crate::rules::{BuiltinType, Change, Evaluation, RuleInput, RuleResult, RuleSet, Verdict};

/// What replaying one event gave.
pub(super) enum Replay {
    /// Not a decision (`completed`, `drift`, ...): nothing to replay.
    NotADecision,
    Skipped(SkipReason, String),
    Replayed {
        was: Verdict,
        now: Verdict,
    },
}

/// Replays recorded decisions through one rule set.
pub(super) struct Replayer<'a> {
    rules: &'a RuleSet,
    /// Ids of the rules that read the partner's document (the consent built-ins and Rego entries
    /// with `needs_partner_state`), whose failures are not trusted when the event lacks it.
    partner_state_rules: BTreeSet<String>,
}

impl<'a> Replayer<'a> {
    pub(super) fn new(raw: &RawConfig, rules: &'a RuleSet) -> Self {
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
    pub(super) fn replay(&self, event: &Event) -> Replay {
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
        let Some(before) = event.before.as_ref().filter(|b| b.value().is_some()) else {
            return Replay::Skipped(
                SkipReason::NoBeforeState,
                "the event holds no readable before-state".to_owned(),
            );
        };
        let evaluation = self.rules.evaluate(&input(event, kind, before));
        self.trusted(event, &recorded, &evaluation, was)
    }

    /// The replayed outcome, unless it rests on the partner's document the event lacks. The
    /// proxy records that document only when its rules read it. If they did not and the new rules
    /// do, the rules that read it fail closed on the replay: trust the outcome only when it is
    /// the same without their failures.
    fn trusted(
        &self,
        event: &Event,
        recorded: &Evaluation,
        evaluation: &Evaluation,
        was: Verdict,
    ) -> Replay {
        let now = evaluation.verdict();
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

/// The input the rules decide on for a recorded change: the proxy's own [`rule_input`] for the
/// change the event records, at the event's own time, with the partner's document the rules saw
/// then (if they read it).
///
/// An event that does not map to a [`Governed`] today is replayed on the fields it recorded,
/// through the same [`RuleInput::for_change`] the proxy's builder uses: there is no request
/// left to classify, only its record, and a log may outlive the route table that wrote it (an
/// event from a syncgate whose classifier spelt or bound the change differently must still
/// replay as it was decided, not be dropped).
fn input(event: &Event, kind: OperationKind, before: &Snapshot) -> RuleInput {
    if let Some(governed) = governed(event, kind) {
        return rule_input(
            &governed,
            event.request_body.as_ref(),
            before,
            event.partner_state.as_ref(),
            &event.actor,
            event.time,
        );
    }
    RuleInput::for_change(Change {
        kind,
        method: &event.method,
        canonical_path: &event.canonical_path,
        api_version: event.api_version.as_str(),
        partner: event.partner_tenant_id.as_deref(),
        request_body: event.request_body.as_ref(),
        before: before.value(),
        partner_state: event.partner_state.as_ref(),
        actor: &event.actor,
        time: event.time,
    })
}

/// The change `event` records, classified by the proxy's route table and its partner bound by
/// the proxy's [`bind_partner`] from the recorded body; `None` unless that gives back exactly
/// the operation, path, version and partner the event recorded.
fn governed(event: &Event, kind: OperationKind) -> Option<Governed> {
    let method = Method::from_bytes(event.method.as_bytes()).ok()?;
    let classified = classify::classify(&method, &event.canonical_path, None, &HeaderMap::new());
    let Classification::Governed(mut governed) = classified else {
        return None;
    };
    bind_partner(&mut governed, event.request_body.clone()).ok()?;
    let partner = governed.partner.as_ref().map(TenantId::as_str);
    let same = governed.kind == kind
        && governed.path.to_string() == event.canonical_path
        && governed.path.version.as_str() == event.api_version.as_str()
        && partner == event.partner_tenant_id.as_deref();
    same.then_some(governed)
}

/// How `now` differs from `was`, if it does in a way a rule author must see: refused or allowed
/// the other way round, or a rule warning that did not warn. A refusal by another rule is still a
/// refusal, and fewer warnings change nothing the caller relies on.
pub(super) fn difference(was: &Verdict, now: &Verdict) -> Option<Difference> {
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

pub(super) fn differing(
    recorded: &Recorded,
    change: Difference,
    was: &Verdict,
    now: &Verdict,
) -> Differing {
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::rules::{Action, Mode};

    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    fn result(rule: &str, mode: Mode, action: Action, passed: bool) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            kind: "partner_allowlist".into(),
            mode,
            action,
            passed,
            message: (!passed).then(|| format!("rule '{rule}': no")),
            approval_policy: None,
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

    #[test]
    fn a_recorded_change_is_replayed_on_the_input_the_proxy_builds() {
        let event = recorded_event(EventKind::Received);
        let before = event.before.clone().unwrap();
        let change = governed(&event, OperationKind::SyncUpdate).expect("maps to a change");
        assert_eq!(change.partner.as_ref().map(TenantId::as_str), Some(PARTNER));
        let proxy = rule_input(
            &change,
            event.request_body.as_ref(),
            &before,
            None,
            &event.actor,
            event.time,
        );
        assert_eq!(input(&event, OperationKind::SyncUpdate, &before), proxy);
        assert_eq!(
            proxy.expected_after,
            Some(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}}))
        );
        // A partner create is bound from its recorded body, as the proxy binds it.
        let mut create = recorded_event(EventKind::Received);
        create.operation = "partner_create".into();
        create.method = "POST".into();
        create.canonical_path = "/v1.0/policies/crosstenantaccesspolicy/partners".into();
        create.request_body = Some(json!({"tenantId": PARTNER}));
        let bound = governed(&create, OperationKind::PartnerCreate).expect("binds the body");
        assert_eq!(bound.partner.as_ref().map(TenantId::as_str), Some(PARTNER));
    }

    #[test]
    fn an_event_todays_route_table_does_not_map_replays_on_what_it_recorded() {
        let mut event = recorded_event(EventKind::Received);
        event.canonical_path = "/v1.0/policies/someretiredroute".into();
        assert!(governed(&event, OperationKind::SyncUpdate).is_none());
        let before = event.before.clone().unwrap();
        let replayed = input(&event, OperationKind::SyncUpdate, &before);
        assert_eq!(replayed.canonical_path, event.canonical_path);
        assert_eq!(replayed.partner.as_deref(), Some(PARTNER));
        // A recorded partner that the path does not name is not the change the path describes.
        let mut other = recorded_event(EventKind::Received);
        other.partner_tenant_id = "0a1b2c3d-0000-4000-8000-00000000beef".parse().ok();
        assert!(governed(&other, OperationKind::SyncUpdate).is_none());
    }
}
