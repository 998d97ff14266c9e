//! One `[[case]]` of a rules test suite: as written, validated, turned into the rules' input,
//! and checked against what the rules decided.

use std::fmt::Write as _;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::pattern::MessagePattern;
use super::request::{CaseRequest, case_request};
use crate::audit::{Actor, Snapshot};
use crate::cli::rules::{Outcome, deciding, reason};
use crate::proxy::rule_input;
use crate::rules::{RuleInput, RuleResult, RuleSet, Verdict};

/// One `[[case]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCase {
    pub(super) name: String,
    /// An operation kind name (`sync_update`, …).
    pub(super) operation: String,
    /// Default: the operation's method (a `deleted_partner_sync_write` without a body: DELETE).
    pub(super) method: Option<String>,
    /// Default: the operation's path for the partner, in `api_version`.
    pub(super) canonical_path: Option<String>,
    /// Default: `beta` for deleted-item operations, `v1.0` otherwise.
    pub(super) api_version: Option<String>,
    pub(super) partner: Option<String>,
    pub(super) body: Option<Value>,
    /// Absent: the resource does not exist (`null`).
    pub(super) before: Option<Value>,
    /// Absent: not read (or unreadable).
    pub(super) partner_state: Option<Value>,
    #[serde(default)]
    pub(super) actor: CaseActor,
    /// RFC 3339, as a string or a TOML date-time with an offset.
    pub(super) time: Option<toml::Value>,
    pub(super) expect: Outcome,
    /// The rule that decides (for `warn`: one of the rules that warn).
    pub(super) rule: Option<String>,
    /// A regular expression the deciding rule's message must match.
    pub(super) message: Option<String>,
}

/// The actor of a case: [`Actor`]'s fields, but strict, so a misspelt claim is an error rather
/// than a silently empty claim.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseActor {
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
    /// Egress mode's proxy user, for rules that look at it.
    proxy_user: Option<String>,
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
            proxy_user: a.proxy_user,
        }
    }
}

/// One validated case.
pub(super) struct Case {
    pub(super) name: String,
    /// Where the case starts in its file (1-based).
    pub(super) line: usize,
    request: CaseRequest,
    /// The before-state: absent when the case gives none.
    before: Snapshot,
    partner_state: Option<Value>,
    actor: Actor,
    time: DateTime<Utc>,
    expect: Outcome,
    rule: Option<String>,
    message: Option<MessagePattern>,
}

/// A case's time when it names none: Monday 2026-01-05 10:00 UTC, inside ordinary business
/// hours across Europe, and the same on every run.
fn default_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

impl Case {
    pub(super) fn from_raw(table: toml::Table, line: usize) -> Result<Case, String> {
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
            before: match raw.before {
                Some(value) => Snapshot::Present { value },
                None => Snapshot::Absent,
            },
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
    pub(super) fn input(&self, rules: &RuleSet) -> RuleInput {
        rule_input(
            &self.request.governed,
            self.request.body.as_ref(),
            &self.before,
            self.partner_state_seen(rules),
            &self.actor,
            self.time,
        )
    }

    fn partner_state_seen(&self, rules: &RuleSet) -> Option<&Value> {
        self.partner_state
            .as_ref()
            .filter(|_| rules.needs_partner_state() && self.request.governed.partner.is_some())
    }

    /// Why the case fails, one line each; empty when it passes.
    pub(super) fn check(&self, verdict: &Verdict, rules: &RuleSet) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::classify::OperationKind;

    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

    fn case(toml_text: &str) -> Result<Case, String> {
        let table: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Case::from_raw(table, 1)
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
        let governed = &c.request.governed;
        assert_eq!(governed.kind, OperationKind::SyncUpdate);
        assert_eq!(governed.method.as_str(), "PATCH");
        assert_eq!(
            governed.path.to_string(),
            format!(
                "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
            )
        );
        assert_eq!(governed.path.version.as_str(), "v1.0");
        assert_eq!(governed.partner.as_ref().map(|p| p.as_str()), Some(PARTNER));
        assert_eq!(
            c.request.body,
            Some(json!({"userSyncInbound": {"isSyncAllowed": true}}))
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
        assert_eq!(
            c.request.governed.partner.as_ref().map(|p| p.as_str()),
            Some(PARTNER)
        );
        assert_eq!(c.request.governed.method.as_str(), "POST");
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
}
