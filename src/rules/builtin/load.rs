//! Validating one `[[rules.builtin]]` entry into its [`Check`], one function per rule type, so
//! that [`BuiltinRule::load`] reads as "no foreign keys, then the type's own fields". Errors are
//! messages for the rule author; the caller adds the place ([`super::place`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{BuiltinRule, Check, DEFAULT_PERMISSION, Scope, operations};
use crate::classify::TenantId;
use crate::rules::raw::{BuiltinType, RawBuiltin};
use crate::rules::window::Window;

/// The first key set on `raw` that its rule type does not take, as an error naming the keys it
/// does take.
pub(super) fn no_foreign_keys(raw: &RawBuiltin) -> Result<(), String> {
    let allowed = raw.kind.fields();
    if let Some(extra) = raw.fields_set().into_iter().find(|f| !allowed.contains(f)) {
        let takes = if allowed.is_empty() {
            "it takes no keys besides id, type, mode and action".to_owned()
        } else {
            format!("it takes: {}", allowed.join(", "))
        };
        return Err(format!(
            "`{extra}` does not apply to a {} rule ({takes})",
            raw.kind.as_str()
        ));
    }
    Ok(())
}

/// `partner_allowlist`: the listed partners, each tenant once, each with a display name.
pub(super) fn partner_allowlist(raw: &RawBuiltin) -> Result<Check, String> {
    let entries = raw
        .partners
        .as_ref()
        .ok_or("needs partners = [{ tenant_id = \"…\", display_name = \"…\" }, …]")?;
    let mut partners = BTreeMap::new();
    for (i, p) in entries.iter().enumerate() {
        let id = guid(&p.tenant_id).map_err(|e| format!("partners[{i}].tenant_id: {e}"))?;
        if p.display_name.trim().is_empty() {
            return Err(format!("partners[{i}].display_name is empty"));
        }
        if partners
            .insert(id.clone(), p.display_name.clone())
            .is_some()
        {
            return Err(format!("partners[{i}]: tenant {id} is listed twice"));
        }
    }
    Ok(Check::PartnerAllowlist {
        partners,
        allow_template: raw.allow_template.unwrap_or(false),
    })
}

/// `partner_denylist`: the listed tenants.
pub(super) fn partner_denylist(raw: &RawBuiltin) -> Result<Check, String> {
    let tenants = raw
        .tenants
        .as_ref()
        .ok_or("needs tenants = [\"<GUID>\", …]")?;
    let tenants = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| guid(t).map_err(|e| format!("tenants[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Check::PartnerDenylist { tenants })
}

/// `display_name`: the display names of the `partner_allowlist` rule it names (validated as
/// that rule is).
pub(super) fn display_name(raw: &RawBuiltin, all: &[RawBuiltin]) -> Result<Check, String> {
    let name = raw
        .allowlist
        .as_ref()
        .ok_or("needs allowlist = \"<id of a partner_allowlist rule>\"")?;
    let target = all.iter().find(|r| &r.id == name).ok_or_else(|| {
        let known: Vec<String> = all
            .iter()
            .filter(|r| r.kind == BuiltinType::PartnerAllowlist)
            .map(|r| format!("{:?}", r.id))
            .collect();
        format!(
            "allowlist {name:?} names no rule (partner_allowlist rules: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })?;
    if target.kind != BuiltinType::PartnerAllowlist {
        return Err(format!(
            "allowlist {name:?} is a {} rule, not a partner_allowlist",
            target.kind.as_str()
        ));
    }
    let names = match BuiltinRule::load(target, all)?.check {
        Check::PartnerAllowlist { partners, .. } => partners,
        _ => BTreeMap::new(),
    };
    Ok(Check::DisplayName {
        allowlist: name.clone(),
        names,
    })
}

/// `change_window`: a time zone, days and hours, and the operations it applies to.
pub(super) fn change_window(raw: &RawBuiltin) -> Result<Check, String> {
    let zone = raw
        .time_zone
        .as_deref()
        .ok_or("needs time_zone = \"Europe/Zurich\"")?;
    let days = raw.days.as_deref().ok_or("needs days = [\"mon\", …]")?;
    let hours = raw
        .hours
        .as_deref()
        .ok_or("needs hours = \"08:00-18:00\"")?;
    Ok(Check::ChangeWindow {
        window: Window::parse(zone, days, hours)?,
        scope: scope(raw.operations.as_deref())?,
    })
}

/// `allowed_actors`: at least one app id, user object id or UPN pattern.
pub(super) fn allowed_actors(raw: &RawBuiltin) -> Result<Check, String> {
    let ids = |list: &Option<Vec<String>>, key: &str| -> Result<BTreeSet<String>, String> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, v)| guid(v).map_err(|e| format!("{key}[{i}]: {e}")))
            .collect()
    };
    let app_ids = ids(&raw.app_ids, "app_ids")?;
    let user_oids = ids(&raw.user_oids, "user_oids")?;
    let mut upn_patterns = Vec::new();
    for (i, p) in raw.upn_patterns.iter().flatten().enumerate() {
        if p.trim().is_empty() {
            return Err(format!("upn_patterns[{i}] is empty"));
        }
        upn_patterns.push(p.trim().to_lowercase());
    }
    if app_ids.is_empty() && user_oids.is_empty() && upn_patterns.is_empty() {
        return Err(
            "lists no app_ids, user_oids or upn_patterns, so it would refuse \
             every caller"
                .to_owned(),
        );
    }
    Ok(Check::AllowedActors {
        scope: scope(raw.operations.as_deref())?,
        app_ids,
        user_oids,
        upn_patterns,
        allow_app_only: raw.allow_app_only.unwrap_or(true),
    })
}

/// `required_permission`: one permission name (by default [`DEFAULT_PERMISSION`]).
pub(super) fn required_permission(raw: &RawBuiltin) -> Result<Check, String> {
    let permission = raw
        .permission
        .clone()
        .unwrap_or_else(|| DEFAULT_PERMISSION.to_owned());
    if permission.trim().is_empty() || permission.contains(char::is_whitespace) {
        return Err(format!(
            "permission {permission:?} is not a permission name like \
             \"{DEFAULT_PERMISSION}\""
        ));
    }
    Ok(Check::RequiredPermission {
        permission,
        scope: scope(raw.operations.as_deref())?,
    })
}

/// `forbid_operations`: a non-empty list of operation kinds.
pub(super) fn forbid_operations(raw: &RawBuiltin) -> Result<Check, String> {
    let list = raw
        .operations
        .as_deref()
        .ok_or("needs operations = [\"sync_delete\", …]")?;
    if list.is_empty() {
        return Err("operations is empty: list the operation kinds to refuse".into());
    }
    Ok(Check::ForbidOperations {
        operations: operations(list)?,
    })
}

/// A GUID in any case, lower-cased.
fn guid(text: &str) -> Result<String, String> {
    TenantId::parse(text)
        .map(|id| id.as_str().to_owned())
        .map_err(|_| format!("{text:?} is not a GUID (36-character hyphenated form)"))
}

fn scope(list: Option<&[String]>) -> Result<Scope, String> {
    list.map(operations).transpose().map(Scope)
}
