//! The `[rules]` table as written in the TOML file (stage one of two; [`RuleSet::load`] is stage
//! two).
//!
//! Every struct is `deny_unknown_fields`, so a key no rule knows fails at parse time with its line
//! and column. A built-in entry is one flat struct with a `type` tag rather than a serde enum:
//! serde's internally tagged enums buffer their content and lose TOML positions, so an unknown
//! key would be reported at the first `[[rules.builtin]]` header instead of where it is. A key
//! that exists but belongs to another type (`partners` on a `change_window`) is refused by the
//! loader, naming the entry and the keys its type takes.
//!
//! The structs also serialise: the rules' version hashes their canonical JSON (defaults filled,
//! comments and layout ignored), so only a change of meaning changes the version.
//!
//! [`RuleSet::load`]: super::RuleSet::load

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Action, Mode};

/// The `[rules]` table of the TOML config, as written.
///
/// ```toml
/// [rules]
/// rego_time_limit = "100ms"
///
/// [[rules.builtin]]
/// id = "sync-allowlist"
/// type = "partner_allowlist"
/// partners = [{ tenant_id = "…", display_name = "Fabrikam" }]
///
/// [[rules.rego]]
/// id = "group-sync-apps"
/// file = "rules/example.rego"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    /// Longest one Rego evaluation may run (`"100ms"`, units ms/s/m/h); past it the rule fails
    /// (closed). Default [`DEFAULT_REGO_TIME_LIMIT`].
    #[serde(default)]
    pub(crate) rego_time_limit: Option<String>,
    /// `[[rules.builtin]]` entries, evaluated in this order.
    #[serde(default)]
    pub builtin: Vec<RawBuiltin>,
    /// `[[rules.rego]]` entries, evaluated after the built-ins, in this order.
    #[serde(default)]
    pub rego: Vec<RawRego>,
}

/// The Rego evaluation time limit when `rules.rego_time_limit` is not set.
pub const DEFAULT_REGO_TIME_LIMIT: &str = "100ms";

/// Which built-in rule an entry is (`type = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinType {
    /// Sync may be enabled only for listed partner tenants.
    PartnerAllowlist,
    /// Tenants that may never become (or be enabled as) a sync partner.
    PartnerDenylist,
    /// A sync policy's `displayName` must be the allow-list's name for its tenant.
    DisplayName,
    /// Days and hours, in a named time zone, outside which changes are refused.
    ChangeWindow,
    /// Which apps, users and UPN patterns may make changes.
    AllowedActors,
    /// The token must carry a permission (`scp` or `roles`).
    RequiredPermission,
    /// Operation kinds refused outright.
    ForbidOperations,
    /// Inbound sync may be enabled only once the partner's automatic user consent is on.
    InboundSyncRequiresConsent,
}

impl BuiltinType {
    /// The `type` value as written in the config (and as [`RuleResult::kind`](super::RuleResult)).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BuiltinType::PartnerAllowlist => "partner_allowlist",
            BuiltinType::PartnerDenylist => "partner_denylist",
            BuiltinType::DisplayName => "display_name",
            BuiltinType::ChangeWindow => "change_window",
            BuiltinType::AllowedActors => "allowed_actors",
            BuiltinType::RequiredPermission => "required_permission",
            BuiltinType::ForbidOperations => "forbid_operations",
            BuiltinType::InboundSyncRequiresConsent => "inbound_sync_requires_consent",
        }
    }

    /// The keys this type takes besides `id`, `type`, `mode` and `action`.
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            BuiltinType::PartnerAllowlist => &["partners", "allow_template"],
            BuiltinType::PartnerDenylist => &["tenants"],
            BuiltinType::DisplayName => &["allowlist"],
            BuiltinType::ChangeWindow => &["time_zone", "days", "hours", "operations"],
            BuiltinType::AllowedActors => &[
                "operations",
                "app_ids",
                "user_oids",
                "upn_patterns",
                "allow_app_only",
            ],
            BuiltinType::RequiredPermission => &["permission", "operations"],
            BuiltinType::ForbidOperations => &["operations"],
            BuiltinType::InboundSyncRequiresConsent => &[],
        }
    }
}

/// One `[[rules.builtin]]` entry. Which of the optional keys apply depends on `type`
/// ([`BuiltinType::fields`]); the loader refuses the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuiltin {
    /// Unique among all rules (built-in and Rego): letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Which built-in rule.
    #[serde(rename = "type")]
    pub(crate) kind: BuiltinType,
    /// `enforce` (default), `warn` or `shadow`.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// `deny` (default) or `require_approval`.
    #[serde(default)]
    pub(crate) action: Action,
    /// With `require_approval`: the `[approvals.policies.NAME]` that decides (default
    /// `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) approval_policy: Option<String>,

    /// partner_allowlist: the tenants sync may be enabled for, each with its approved name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) partners: Option<Vec<RawPartner>>,
    /// partner_allowlist: whether the MTO template may enable sync (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allow_template: Option<bool>,
    /// partner_denylist: tenant ids (GUIDs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tenants: Option<Vec<String>>,
    /// display_name: the id of the partner_allowlist rule whose names apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allowlist: Option<String>,
    /// change_window: an IANA time zone name (`Europe/Zurich`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_zone: Option<String>,
    /// change_window: `mon` … `sun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) days: Option<Vec<String>>,
    /// change_window: `"HH:MM-HH:MM"`, start before end, end at most `24:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hours: Option<String>,
    /// change_window, allowed_actors, required_permission: the operation kinds the rule applies
    /// to (default: every governed write); forbid_operations: the kinds refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) operations: Option<Vec<String>>,
    /// allowed_actors: application (client) ids, matched against `appid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) app_ids: Option<Vec<String>>,
    /// allowed_actors: user object ids, matched against `oid` of delegated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user_oids: Option<Vec<String>>,
    /// allowed_actors: UPN globs (`*`, `?`; case-insensitive) for delegated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upn_patterns: Option<Vec<String>>,
    /// allowed_actors: whether app-only tokens may change at all (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allow_app_only: Option<bool>,
    /// required_permission: the permission (default `Policy.ReadWrite.CrossTenantAccess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) permission: Option<String>,
}

impl RawBuiltin {
    /// The type-specific keys that are set, by name.
    pub(crate) fn fields_set(&self) -> Vec<&'static str> {
        let set = [
            ("partners", self.partners.is_some()),
            ("allow_template", self.allow_template.is_some()),
            ("tenants", self.tenants.is_some()),
            ("allowlist", self.allowlist.is_some()),
            ("time_zone", self.time_zone.is_some()),
            ("days", self.days.is_some()),
            ("hours", self.hours.is_some()),
            ("operations", self.operations.is_some()),
            ("app_ids", self.app_ids.is_some()),
            ("user_oids", self.user_oids.is_some()),
            ("upn_patterns", self.upn_patterns.is_some()),
            ("allow_app_only", self.allow_app_only.is_some()),
            ("permission", self.permission.is_some()),
        ];
        set.into_iter()
            .filter_map(|(name, is_set)| is_set.then_some(name))
            .collect()
    }
}

/// One allow-listed partner tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartner {
    /// The partner's tenant id (a GUID, any case).
    pub(crate) tenant_id: String,
    /// The name its sync policy's `displayName` must carry (see the display_name rule).
    pub(crate) display_name: String,
}

/// One `[[rules.rego]]` entry: a Rego file answering a set of violations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRego {
    /// Unique among all rules; the default `rule` of the violations the policy answers.
    pub id: String,
    /// The `.rego` file; relative paths are resolved against the config file's folder.
    pub(crate) file: PathBuf,
    /// `enforce` (default), `warn` or `shadow`; applies to every violation of this file.
    #[serde(default)]
    pub(crate) mode: Mode,
    /// `deny` (default) or `require_approval`.
    #[serde(default)]
    pub(crate) action: Action,
    /// With `require_approval`: the `[approvals.policies.NAME]` that decides (default
    /// `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) approval_policy: Option<String>,
    /// The rule path evaluated (default [`DEFAULT_QUERY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) query: Option<String>,
    /// Set when the policy reads `input.partner_state`, so the pipeline fetches it.
    #[serde(default)]
    pub(crate) needs_partner_state: bool,
}

/// The rule a Rego entry evaluates when it names no `query`.
pub const DEFAULT_QUERY: &str = "data.syncgate.violations";
