//! The label values `/metrics` may show, each from a fixed set, so a time series never carries a
//! path, a tenant id or a token, and the number of series stays bounded whatever clients send.
//!
//! Enums encode themselves as their `snake_case` names without allocating. The one label that
//! comes from outside the code, a rule's id, is interned ([`RuleNames`]): ids come from the
//! configuration, but a Rego violation may name its own `rule`, so the number of distinct ids is
//! capped and the rest are counted under [`OTHER_RULE`].

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::audit::Effect;
use crate::rules::Mode;

/// Implements [`EncodeLabelValue`] by the type's `as_str`.
macro_rules! label_value_by_name {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

/// Which branch of the proxy answered a request (see [`crate::proxy`]): how the classifier named
/// it, never its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RouteClass {
    /// Not governed: streamed through.
    PassThrough,
    /// A read of sync policy content.
    SyncRead,
    /// A governed write, through the lifecycle.
    Governed,
    /// A `$batch`.
    Batch,
    /// Refused by the classifier before anything was forwarded.
    Refused,
}

impl RouteClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteClass::PassThrough => "pass_through",
            RouteClass::SyncRead => "sync_read",
            RouteClass::Governed => "governed",
            RouteClass::Batch => "batch",
            RouteClass::Refused => "refused",
        }
    }
}

/// How egress mode answered a `CONNECT` (see [`crate::egress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EgressOutcome {
    /// A Graph host, intercepted.
    Intercepted,
    /// Another host, tunnelled (once its ClientHello names it).
    Tunnelled,
    /// Refused by policy: a Graph host without a CA, an IP literal, a host not allowed, one
    /// resolving to a Graph address.
    Refused,
    /// No valid `Proxy-Authorization` (407).
    Unauthenticated,
    /// A target that is not `host:port`, or `CONNECT` not over HTTP/1.1.
    BadRequest,
    /// The host could not be resolved or reached.
    Unreachable,
}

impl EgressOutcome {
    pub(crate) const ALL: [EgressOutcome; 6] = [
        EgressOutcome::Intercepted,
        EgressOutcome::Tunnelled,
        EgressOutcome::Refused,
        EgressOutcome::Unauthenticated,
        EgressOutcome::BadRequest,
        EgressOutcome::Unreachable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EgressOutcome::Intercepted => "intercepted",
            EgressOutcome::Tunnelled => "tunnelled",
            EgressOutcome::Refused => "refused",
            EgressOutcome::Unauthenticated => "unauthenticated",
            EgressOutcome::BadRequest => "bad_request",
            EgressOutcome::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct EgressLabels {
    pub(crate) outcome: EgressOutcome,
}

/// Which way a tunnel's bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// From the client to the host.
    Up,
    /// From the host to the client.
    Down,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DirectionLabels {
    pub(crate) direction: Direction,
}

/// What the rules decided for a governed change, as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DecisionLabel {
    Allow,
    Deny,
    RequireApproval,
}

impl DecisionLabel {
    pub(crate) const ALL: [DecisionLabel; 3] = [
        DecisionLabel::Allow,
        DecisionLabel::Deny,
        DecisionLabel::RequireApproval,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Allow => "allow",
            DecisionLabel::Deny => "deny",
            DecisionLabel::RequireApproval => "require_approval",
        }
    }
}

/// Whether one rule kept the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RuleOutcome {
    Pass,
    Fail,
}

impl RuleOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuleOutcome::Pass => "pass",
            RuleOutcome::Fail => "fail",
        }
    }
}

/// Why the upstream gave no response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamFailure {
    Connect,
    Timeout,
    Failed,
}

impl UpstreamFailure {
    pub(crate) const ALL: [UpstreamFailure; 3] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Failed => "failed",
        }
    }
}

/// Which listener a connection is open on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ListenerLabel {
    Proxy,
    Admin,
}

impl ListenerLabel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ListenerLabel::Proxy => "proxy",
            ListenerLabel::Admin => "admin",
        }
    }
}

label_value_by_name!(
    RouteClass,
    DecisionLabel,
    RuleOutcome,
    UpstreamFailure,
    ListenerLabel,
    Mode,
    Effect,
    EgressOutcome,
    Direction
);

/// An HTTP status code as a label: the three digits, or `other` for a code outside 100–599 (so
/// an upstream inventing codes cannot add series beyond HTTP's own classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StatusLabel(u16);

impl StatusLabel {
    pub(crate) fn new(status: http::StatusCode) -> Self {
        let code = status.as_u16();
        Self(if (100..600).contains(&code) { code } else { 0 })
    }
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            0 => encoder.write_str("other"),
            code => write!(encoder, "{code}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) route: RouteClass,
    pub(crate) status: StatusLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) decision: DecisionLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    pub(crate) rule: Arc<str>,
    pub(crate) mode: Mode,
    pub(crate) result: RuleOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct EffectLabels {
    pub(crate) effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamFailureLabels {
    pub(crate) reason: UpstreamFailure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: ListenerLabel,
}

/// The `rule` label for ids beyond [`MAX_RULE_NAMES`].
pub(crate) const OTHER_RULE: &str = "_other";

/// Distinct rule ids given their own series; a configuration has a handful.
pub(crate) const MAX_RULE_NAMES: usize = 64;

/// Rule ids seen so far, shared so a label costs a reference count, not an allocation.
#[derive(Debug, Default)]
pub(crate) struct RuleNames(Mutex<HashSet<Arc<str>>>);

impl RuleNames {
    /// The label for rule `id`: the id itself while fewer than [`MAX_RULE_NAMES`] are known,
    /// else [`OTHER_RULE`].
    pub(crate) fn label(&self, id: &str) -> Arc<str> {
        let mut names = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = names.get(id) {
            return known.clone();
        }
        let name: Arc<str> = if names.len() < MAX_RULE_NAMES {
            Arc::from(id)
        } else {
            Arc::from(OTHER_RULE)
        };
        if names.len() < MAX_RULE_NAMES || !names.contains(OTHER_RULE) {
            names.insert(name.clone());
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_beyond_the_cap_share_one_label() {
        let names = RuleNames::default();
        let first = names.label("allow-list");
        assert!(Arc::ptr_eq(&first, &names.label("allow-list")));
        for n in 1..MAX_RULE_NAMES {
            assert_eq!(&*names.label(&format!("rule-{n}")), format!("rule-{n}"));
        }
        assert_eq!(&*names.label("one-too-many"), OTHER_RULE);
        assert_eq!(&*names.label("and-another"), OTHER_RULE);
        // Ids known before the cap keep their own series.
        assert_eq!(&*names.label("rule-3"), "rule-3");
        assert!(names.0.lock().unwrap().len() <= MAX_RULE_NAMES + 1);
    }

    #[test]
    fn statuses_outside_http_classes_are_other() {
        let label = |code: u16| StatusLabel::new(http::StatusCode::from_u16(code).unwrap());
        assert_eq!(label(204), StatusLabel(204));
        assert_eq!(label(599), StatusLabel(599));
        assert_eq!(label(600), StatusLabel(0));
        assert_eq!(label(999), label(700));
    }
}
