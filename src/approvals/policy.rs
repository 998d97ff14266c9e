//! `[approvals]` in the configuration: the policies `require_approval` rules name, the webhooks
//! told about requests and decisions, and the sweeper's period; checked against the admin
//! principals, so a policy nobody can satisfy fails at start rather than holding changes
//! forever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::auth::{Principals, Role};
use crate::config::{ConfigError, invalid, parse_duration};

/// The policy a `require_approval` rule uses when it names none.
pub(crate) const DEFAULT_POLICY: &str = "default";

/// `[approvals]` as written.
///
/// ```toml
/// [approvals]
/// link = "https://syncgate-admin.contoso.com"
///
/// [approvals.policies.default]
/// required = 2
/// approvers = ["ann", "bob", "carol"]
/// vote_window = "24h"
/// send_window = "1h"
///
/// [[approvals.webhooks]]
/// name = "teams"
/// url = "https://contoso.webhook.office.com/..."
/// format = "teams"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// The admin API's address as approvers reach it, for the links in notifications
    /// (default: the admin listener's own address).
    #[serde(default)]
    pub link: Option<String>,
    /// How often expired requests are looked for (default 30s).
    #[serde(default)]
    pub sweep_every: Option<String>,
    /// The most requests one requester may have pending at once (default 10): a caller Graph
    /// accepts cannot flood approvers, the log and the webhooks with requests.
    #[serde(default)]
    pub max_pending_per_requester: Option<u32>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// One `[approvals.policies.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// How many distinct approvers must say yes (M of N; default 1).
    #[serde(default)]
    pub required: Option<u32>,
    /// Admin principals (by name) who may approve.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Principals in any of these groups may approve too.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Among the approvals, at least one from each of these groups.
    #[serde(default)]
    pub one_from_each: Vec<String>,
    /// How long a request waits for votes (default 24h).
    #[serde(default)]
    pub vote_window: Option<String>,
    /// How long an approved change may wait to be sent (default 1h).
    #[serde(default)]
    pub send_window: Option<String>,
    #[serde(default)]
    pub require_justification: bool,
    #[serde(default)]
    pub require_ticket: bool,
    /// The form a ticket must have (a regular expression matched against the whole header).
    #[serde(default)]
    pub ticket_pattern: Option<String>,
}

/// One `[[approvals.webhooks]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Unique; names the webhook in `/metrics` and the outbox.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// `json` (syncgate's own document, default), `teams` or `slack`.
    #[serde(default)]
    pub format: Option<String>,
    /// Longest one delivery may take (default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// A policy, validated. Kept whole with every request (as JSON), so a request is decided by
/// the policy it was made under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) required: u32,
    /// Empty with `groups` empty too: any principal with the approver role.
    pub(crate) approvers: Vec<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) one_from_each: Vec<String>,
    pub(crate) vote_window_seconds: u64,
    pub(crate) send_window_seconds: u64,
    pub(crate) require_justification: bool,
    pub(crate) require_ticket: bool,
    pub(crate) ticket_pattern: Option<String>,
}

impl Policy {
    /// Whether the policy names the principal `name` in `groups` as an approver.
    pub(crate) fn names(&self, name: &str, groups: &[String]) -> bool {
        (self.approvers.is_empty() && self.groups.is_empty())
            || self.approvers.iter().any(|a| a == name)
            || self.groups.iter().any(|g| groups.contains(g))
    }

    pub(crate) fn vote_window(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.vote_window_seconds.min(i64::MAX as u64) as i64)
    }

    pub(crate) fn send_window(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.send_window_seconds.min(i64::MAX as u64) as i64)
    }
}

/// What a notification looks like on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookFormat {
    Json,
    Teams,
    Slack,
}

#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) name: String,
    pub(crate) url: http::Uri,
    pub(crate) format: WebhookFormat,
    pub(crate) timeout: Duration,
}

/// `[approvals]`, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApprovalSettings {
    policies: BTreeMap<String, (Arc<Policy>, Option<regex::Regex>)>,
    pub(crate) webhooks: Vec<Webhook>,
    pub(crate) link: Option<String>,
    pub(crate) sweep_every: Duration,
    /// The most pending requests one requester may have.
    pub(crate) max_pending_per_requester: u32,
}

impl ApprovalSettings {
    /// The policy named `name`, with its compiled ticket pattern.
    pub(crate) fn policy(&self, name: &str) -> Option<(&Arc<Policy>, Option<&regex::Regex>)> {
        self.policies.get(name).map(|(p, re)| (p, re.as_ref()))
    }

    pub(crate) fn has_policy(&self, name: &str) -> bool {
        self.policies.contains_key(name)
    }

    /// The link to approval `id` for people reading a notification.
    pub(crate) fn link_to(&self, id: &str) -> Option<String> {
        self.link
            .as_deref()
            .map(|base| format!("{}/api/v1/approvals/{id}", base.trim_end_matches('/')))
    }
}

impl RawApprovals {
    /// Check every policy against `principals` and every webhook; `admin_link` is the admin
    /// listener's address, the links' default.
    pub(crate) fn validate(
        &self,
        principals: &Principals,
        admin_link: String,
    ) -> Result<ApprovalSettings, ConfigError> {
        let mut policies = BTreeMap::new();
        for (name, raw) in &self.policies {
            let (policy, pattern) = raw.validate(name, principals)?;
            policies.insert(name.clone(), (Arc::new(policy), pattern));
        }
        let mut webhooks = Vec::new();
        for (i, raw) in self.webhooks.iter().enumerate() {
            let hook = raw.validate(i)?;
            if webhooks.iter().any(|w: &Webhook| w.name == hook.name) {
                return Err(invalid(
                    "approvals.webhooks.name",
                    format!(
                        "approvals.webhooks[{i}]: the name {:?} is used twice",
                        hook.name
                    ),
                ));
            }
            webhooks.push(hook);
        }
        let sweep_every = match &self.sweep_every {
            Some(text) => parse_duration("approvals.sweep_every", text)?,
            None => Duration::from_secs(30),
        };
        if sweep_every.is_zero() {
            return Err(invalid("approvals.sweep_every", "must be longer than 0"));
        }
        let max_pending_per_requester = self.max_pending_per_requester.unwrap_or(10);
        if max_pending_per_requester == 0 {
            return Err(invalid(
                "approvals.max_pending_per_requester",
                "must be at least 1 (0 would refuse every change a rule holds)",
            ));
        }
        Ok(ApprovalSettings {
            policies,
            webhooks,
            link: Some(self.link.clone().unwrap_or(admin_link)),
            sweep_every,
            max_pending_per_requester,
        })
    }
}

impl RawPolicy {
    fn validate(
        &self,
        name: &str,
        principals: &Principals,
    ) -> Result<(Policy, Option<regex::Regex>), ConfigError> {
        let place = format!("approvals.policies.{name}");
        let bad = |key: &'static str, why: String| invalid(key, format!("{place}: {why}"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "approvals.policies",
                "a policy's name is letters, digits, '-', '_' and '.'".into(),
            ));
        }
        let required = self.required.unwrap_or(1);
        if required == 0 {
            return Err(bad(
                "approvals.policies.required",
                "must be at least 1 (a policy that needs nobody is no approval)".into(),
            ));
        }
        let window = |key: &'static str, text: &Option<String>, default: u64| {
            let d = match text {
                Some(text) => parse_duration(key, text)?,
                None => Duration::from_secs(default),
            };
            if d.as_secs() == 0 {
                return Err(bad(key, "must be at least 1s".into()));
            }
            Ok(d.as_secs())
        };
        let vote_window = window("approvals.policies.vote_window", &self.vote_window, 86_400)?;
        let send_window = window("approvals.policies.send_window", &self.send_window, 3_600)?;
        let pattern = match &self.ticket_pattern {
            None => None,
            Some(text) => Some(
                regex::Regex::new(&format!("^(?:{text})$"))
                    .map_err(|e| bad("approvals.policies.ticket_pattern", e.to_string()))?,
            ),
        };
        let policy = Policy {
            name: name.to_owned(),
            required,
            approvers: self.approvers.clone(),
            groups: self.groups.clone(),
            one_from_each: self.one_from_each.clone(),
            vote_window_seconds: vote_window,
            send_window_seconds: send_window,
            require_justification: self.require_justification,
            require_ticket: self.require_ticket || self.ticket_pattern.is_some(),
            ticket_pattern: self.ticket_pattern.clone(),
        };
        // Who can vote under this policy: approvers with an oid (one without cannot vote).
        let eligible: Vec<_> = principals
            .iter()
            .filter(|p| p.has(Role::Approver) && p.oid.is_some())
            .filter(|p| policy.names(&p.name, &p.groups))
            .collect();
        for approver in &self.approvers {
            let Some(p) = principals.iter().find(|p| &p.name == approver) else {
                return Err(bad(
                    "approvals.policies.approvers",
                    format!("{approver:?} is not an admin principal ([[admin.principals]])"),
                ));
            };
            if !p.has(Role::Approver) {
                return Err(bad(
                    "approvals.policies.approvers",
                    format!("principal {approver:?} does not have the approver role"),
                ));
            }
            if p.oid.is_none() {
                return Err(bad(
                    "approvals.policies.approvers",
                    format!(
                        "principal {approver:?} has no oid, so it cannot be told apart from a \
                         requester and could never vote"
                    ),
                ));
            }
        }
        if (eligible.len() as u64) < u64::from(required) {
            return Err(bad(
                "approvals.policies.required",
                format!(
                    "needs {required} approvers but only {} principal(s) with the approver role \
                     and an oid are named by it: no request could ever be approved",
                    eligible.len()
                ),
            ));
        }
        for group in &policy.one_from_each {
            if !eligible.iter().any(|p| p.groups.contains(group)) {
                return Err(bad(
                    "approvals.policies.one_from_each",
                    format!("no approver of this policy is in group {group:?}"),
                ));
            }
        }
        Ok((policy, pattern))
    }
}

impl RawWebhook {
    fn validate(&self, index: usize) -> Result<Webhook, ConfigError> {
        let place = format!("approvals.webhooks[{index}]");
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "approvals.webhooks.name",
                format!("{place}: a webhook's name is letters, digits, '-', '_' and '.'"),
            ));
        }
        let url: http::Uri = self.url.parse().map_err(|e| {
            invalid(
                "approvals.webhooks.url",
                format!("{place}: {:?} is not a URL: {e}", self.url),
            )
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(invalid(
                "approvals.webhooks.url",
                format!("{place}: {:?} is not an http:// or https:// URL", self.url),
            ));
        }
        let format = match self.format.as_deref().unwrap_or("json") {
            "json" => WebhookFormat::Json,
            "teams" => WebhookFormat::Teams,
            "slack" => WebhookFormat::Slack,
            other => {
                return Err(invalid(
                    "approvals.webhooks.format",
                    format!("{place}: unknown format {other:?} (expected json, teams or slack)"),
                ));
            }
        };
        let timeout = match &self.timeout {
            Some(text) => parse_duration("approvals.webhooks.timeout", text)?,
            None => Duration::from_secs(10),
        };
        Ok(Webhook {
            name: self.name.clone(),
            url,
            format,
            timeout,
        })
    }
}
