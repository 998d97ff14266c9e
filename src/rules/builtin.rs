//! The built-in rules: validated from their `[[rules.builtin]]` entries once, checked against
//! every input.
//!
//! Each check answers `Ok(())` or the reason the change breaks the rule, worded for the person
//! who sent the request (the caller prefixes `rule '<id>': `). The sync rules look at the state the
//! change *leaves* ([`Facts::sync_after`]), not at the body alone: a PATCH that renames an
//! already-enabled policy of an unlisted partner is refused too, while any change that disables
//! sync passes. Where syncgate cannot tell what a change leaves (a restore whose deleted item was
//! not read), the sync rules fail closed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::input::{Facts, SyncAfter, carries_sync_policy, enabled_members};
use super::raw::{BuiltinType, RawBuiltin};
use super::window::Window;
use super::{Action, Mode};
use crate::classify::OperationKind;

mod load;

/// The permission `required_permission` asks for when the entry names none.
pub(crate) const DEFAULT_PERMISSION: &str = "Policy.ReadWrite.CrossTenantAccess";

/// One validated built-in rule.
#[derive(Debug, Clone)]
pub(crate) struct BuiltinRule {
    pub(crate) id: String,
    pub(crate) kind: BuiltinType,
    pub(crate) mode: Mode,
    pub(crate) action: Action,
    /// The approval policy a `require_approval` failure is held under (`None`: `default`).
    pub(crate) approval_policy: Option<String>,
    check: Check,
}

/// The operation kinds a rule applies to: `None` is every governed write (every kind but
/// `sync_read`).
#[derive(Debug, Clone)]
struct Scope(Option<Vec<OperationKind>>);

impl Scope {
    fn applies(&self, kind: Option<OperationKind>) -> bool {
        match &self.0 {
            None => kind != Some(OperationKind::SyncRead),
            Some(kinds) => kind.is_some_and(|k| kinds.contains(&k)),
        }
    }
}

#[derive(Debug, Clone)]
enum Check {
    PartnerAllowlist {
        /// tenant id (lower case) → approved display name.
        partners: BTreeMap<String, String>,
        allow_template: bool,
    },
    PartnerDenylist {
        tenants: BTreeSet<String>,
    },
    DisplayName {
        allowlist: String,
        names: BTreeMap<String, String>,
    },
    ChangeWindow {
        window: Window,
        scope: Scope,
    },
    AllowedActors {
        scope: Scope,
        app_ids: BTreeSet<String>,
        user_oids: BTreeSet<String>,
        /// Lower-cased globs.
        upn_patterns: Vec<String>,
        allow_app_only: bool,
    },
    RequiredPermission {
        permission: String,
        scope: Scope,
    },
    ForbidOperations {
        operations: Vec<OperationKind>,
    },
    InboundSyncRequiresConsent,
}

/// `rules.builtin[2] (id "window")`: where an error is, as the rule author sees it.
pub(crate) fn place(index: usize, id: &str) -> String {
    format!("rules.builtin[{index}] (id {id:?})")
}

impl BuiltinRule {
    /// Validate entry `index` of `all` (the whole list, so `display_name` can find its
    /// allow-list). Errors are `(message)`; the caller adds the place.
    pub(crate) fn load(raw: &RawBuiltin, all: &[RawBuiltin]) -> Result<Self, String> {
        load::no_foreign_keys(raw)?;
        let check = match raw.kind {
            BuiltinType::PartnerAllowlist => load::partner_allowlist(raw)?,
            BuiltinType::PartnerDenylist => load::partner_denylist(raw)?,
            BuiltinType::DisplayName => load::display_name(raw, all)?,
            BuiltinType::ChangeWindow => load::change_window(raw)?,
            BuiltinType::AllowedActors => load::allowed_actors(raw)?,
            BuiltinType::RequiredPermission => load::required_permission(raw)?,
            BuiltinType::ForbidOperations => load::forbid_operations(raw)?,
            BuiltinType::InboundSyncRequiresConsent => Check::InboundSyncRequiresConsent,
        };
        Ok(Self {
            id: raw.id.clone(),
            kind: raw.kind,
            mode: raw.mode,
            action: raw.action,
            approval_policy: super::approval_policy(raw.action, raw.approval_policy.as_deref())?,
            check,
        })
    }

    /// Whether this rule reads `partner_state`.
    pub(crate) fn needs_partner_state(&self) -> bool {
        matches!(self.check, Check::InboundSyncRequiresConsent)
    }

    /// `Ok(())` when the input keeps the rule, else why not.
    pub(crate) fn check(&self, facts: &Facts<'_>) -> Result<(), String> {
        match &self.check {
            Check::PartnerAllowlist {
                partners,
                allow_template,
            } => allowlist(facts, partners, *allow_template),
            Check::PartnerDenylist { tenants } => denylist(facts, tenants),
            Check::DisplayName { allowlist, names } => display_name(facts, allowlist, names),
            Check::ChangeWindow { window, scope } => {
                if !scope.applies(facts.kind) {
                    return Ok(());
                }
                window.check(facts.input.time).map_err(|local| {
                    format!(
                        "{} changes are allowed only {}; it is {local} there",
                        facts.operation(),
                        window.describe()
                    )
                })
            }
            Check::AllowedActors {
                scope,
                app_ids,
                user_oids,
                upn_patterns,
                allow_app_only,
            } => {
                if !scope.applies(facts.kind) {
                    return Ok(());
                }
                actors(facts, app_ids, user_oids, upn_patterns, *allow_app_only)
            }
            Check::RequiredPermission { permission, scope } => {
                if !scope.applies(facts.kind) {
                    return Ok(());
                }
                let actor = &facts.input.actor;
                let held = actor.scp.iter().chain(&actor.roles);
                if held.clone().any(|p| p.eq_ignore_ascii_case(permission)) {
                    return Ok(());
                }
                let held: Vec<&str> = held.map(String::as_str).collect();
                Err(format!(
                    "the token does not carry {permission} (in scp or roles); {}",
                    if held.is_empty() {
                        "it carries no permissions".to_owned()
                    } else {
                        format!("it carries {}", held.join(", "))
                    }
                ))
            }
            Check::ForbidOperations { operations } => {
                match facts.kind.filter(|k| operations.contains(k)) {
                    Some(kind) => Err(format!("{kind} operations are forbidden by local policy")),
                    None => Ok(()),
                }
            }
            Check::InboundSyncRequiresConsent => consent(facts),
        }
    }
}

fn allowlist(
    facts: &Facts<'_>,
    partners: &BTreeMap<String, String>,
    allow_template: bool,
) -> Result<(), String> {
    if facts.kind.is_some_and(OperationKind::is_template) {
        if allow_template || facts.sync_after != SyncAfter::Enabled {
            return Ok(());
        }
        return Err(
            "the MTO sync template may not allow inbound sync: it would enable sync for \
                    future multitenant-organization partners that are not on the sync allow-list"
                .to_owned(),
        );
    }
    if facts.sync_after == SyncAfter::Disabled {
        return Ok(());
    }
    let Some(partner) = &facts.partner else {
        return Err("the change allows inbound sync but names no partner tenant".to_owned());
    };
    if partners.contains_key(partner) {
        return Ok(());
    }
    Err(match facts.sync_after {
        SyncAfter::Unknown => format!(
            "partner {partner} is not on the sync allow-list, and syncgate cannot tell whether \
             the restored sync policy allows sync"
        ),
        _ => format!(
            "partner {partner} is not on the sync allow-list; {} may be true only for listed \
             partners",
            members(facts)
        ),
    })
}

fn denylist(facts: &Facts<'_>, tenants: &BTreeSet<String>) -> Result<(), String> {
    use OperationKind::*;
    let Some(partner) = facts.partner.as_ref().filter(|p| tenants.contains(*p)) else {
        return Ok(());
    };
    let creates = match facts.kind {
        Some(SyncCreate | PartnerCreate | SyncRestore | PartnerRestore) => true,
        Some(DeletedPartnerSyncWrite) => !facts.input.method.eq_ignore_ascii_case("DELETE"),
        // A partner PATCH carrying a sync policy creates or changes one, whatever it says.
        Some(PartnerUpdate) => carries_sync_policy(facts.input.request_body.as_ref()),
        _ => false,
    };
    if creates || facts.sync_after != SyncAfter::Disabled {
        return Err(format!(
            "partner {partner} is on the sync deny-list: it may never be a sync partner, so {} \
             is refused",
            facts.operation()
        ));
    }
    Ok(())
}

fn display_name(
    facts: &Facts<'_>,
    allowlist: &str,
    names: &BTreeMap<String, String>,
) -> Result<(), String> {
    use OperationKind::*;
    let body = facts.input.request_body.as_ref();
    let applies = match facts.kind {
        Some(SyncCreate | SyncUpdate) => true,
        Some(PartnerCreate | PartnerUpdate) => carries_sync_policy(body),
        _ => false,
    };
    if !applies {
        return Ok(());
    }
    let policy = facts
        .policy_after
        .or_else(|| body.and_then(|b| super::input::sync_policy(facts.kind, b)));
    let name = policy
        .and_then(|p| p.get("displayName"))
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty());
    let wanted = facts.partner.as_ref().and_then(|p| names.get(p));
    match (name, wanted) {
        (Some(name), Some(wanted)) if name == wanted => Ok(()),
        (Some(_), None) => Ok(()),
        (Some(name), Some(wanted)) => Err(format!(
            "displayName {name:?} is not the name allow-list '{allowlist}' gives {}: set it to \
             {wanted:?} (exact match)",
            facts.subject()
        )),
        (None, Some(wanted)) => Err(format!(
            "the sync policy needs a displayName: set it to {wanted:?}, the name allow-list \
             '{allowlist}' gives {}",
            facts.subject()
        )),
        (None, None) => Err("the sync policy needs a non-empty displayName".to_owned()),
    }
}

fn actors(
    facts: &Facts<'_>,
    app_ids: &BTreeSet<String>,
    user_oids: &BTreeSet<String>,
    upn_patterns: &[String],
    allow_app_only: bool,
) -> Result<(), String> {
    let actor = &facts.input.actor;
    let app_only = is_app_only(actor);
    let appid = actor.appid.as_deref().map(str::to_ascii_lowercase);
    if app_only && !allow_app_only {
        return Err(format!(
            "app-only tokens may not make {} changes (the token is app {}); sign in as a user",
            facts.operation(),
            appid.as_deref().unwrap_or("<no appid>")
        ));
    }
    let by_app = appid.as_ref().is_some_and(|a| app_ids.contains(a));
    let by_user = !app_only
        && (actor
            .oid
            .as_deref()
            .is_some_and(|o| user_oids.contains(&o.to_ascii_lowercase()))
            || actor.upn.as_deref().is_some_and(|upn| {
                let upn = upn.to_lowercase();
                upn_patterns.iter().any(|p| glob(p, &upn))
            }));
    if by_app || by_user {
        return Ok(());
    }
    Err(format!(
        "{} may not make {} changes: not one of the allowed apps, users or UPN patterns",
        who(actor, app_only),
        facts.operation()
    ))
}

/// App-only: the token says `idtyp: app`, or (older tokens) it has `roles` and no `scp`.
pub(crate) fn is_app_only(actor: &crate::audit::Actor) -> bool {
    match actor.idtyp.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("app") => true,
        Some(t) if t.eq_ignore_ascii_case("user") => false,
        _ => actor.scp.is_empty() && !actor.roles.is_empty(),
    }
}

/// `user alice@contoso.com (oid …) via app …`, for messages.
fn who(actor: &crate::audit::Actor, app_only: bool) -> String {
    let app = actor.appid.as_deref().unwrap_or("<no appid>");
    if app_only {
        return format!("app {app} (app-only token)");
    }
    let user = match (&actor.upn, &actor.oid) {
        (Some(upn), Some(oid)) => format!("user {upn} (oid {oid})"),
        (Some(upn), None) => format!("user {upn}"),
        (None, Some(oid)) => format!("user oid {oid}"),
        (None, None) => "an unidentified caller".to_owned(),
    };
    format!("{user} via app {app}")
}

fn consent(facts: &Facts<'_>) -> Result<(), String> {
    if facts.kind.is_some_and(OperationKind::is_template)
        || facts.sync_after == SyncAfter::Disabled
        || facts.sync_before
    {
        return Ok(());
    }
    let subject = facts.subject();
    let needed = "set the partner's automaticUserConsentSettings.inboundAllowed to true first (a \
                  separate PATCH of the partner), then enable inbound sync";
    let Some(state) = &facts.input.partner_state else {
        return Err(format!(
            "could not read {subject}'s configuration to check automaticUserConsentSettings; \
             {needed}"
        ));
    };
    if state.is_null() {
        return Err(format!(
            "{subject} has no partner configuration yet; {needed}"
        ));
    }
    let inbound = state
        .get("automaticUserConsentSettings")
        .and_then(|c| c.get("inboundAllowed"))
        .unwrap_or(&Value::Null);
    if inbound.as_bool() == Some(true) {
        return Ok(());
    }
    Err(format!(
        "{subject} has automaticUserConsentSettings.inboundAllowed = {inbound}; {needed}"
    ))
}

/// `userSyncInbound.isSyncAllowed` (and `groupSyncInbound.isSyncAllowed`), for messages.
fn members(facts: &Facts<'_>) -> String {
    let names = facts.policy_after.map(enabled_members).unwrap_or_default();
    if names.is_empty() {
        return "isSyncAllowed".to_owned();
    }
    names
        .iter()
        .map(|n| format!("{n}.isSyncAllowed"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Operation names, each validated against [`OperationKind`].
pub(crate) fn operations(names: &[String]) -> Result<Vec<OperationKind>, String> {
    names
        .iter()
        .map(|name| {
            OperationKind::parse(name).ok_or_else(|| {
                let valid: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown operation {name:?} in operations; valid names: {}",
                    valid.join(", ")
                )
            })
        })
        .collect()
}

/// Case is the caller's business: both sides are lower-cased before matching. `*` matches any
/// run of characters (also none), `?` exactly one; everything else matches itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_strings() {
        assert!(glob("*@contoso.com", "alice@contoso.com"));
        assert!(!glob("*@contoso.com", "alice@contoso.com.evil.net"));
        assert!(!glob("*@contoso.com", "alice@evilcontoso.com"));
        assert!(glob("admin-?@*", "admin-1@fabrikam.com"));
        assert!(!glob("admin-?@*", "admin-12@fabrikam.com"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("exact@x.com", "exact@x.com"));
        assert!(!glob("exact@x.com", "exact@x.co"));
    }
}
