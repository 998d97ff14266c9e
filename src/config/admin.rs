//! `[admin]`'s principals, checked: known roles, unique names and keys, well-formed hashes and
//! object ids, and never on an address other machines reach without TLS.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{ConfigError, RawAdmin, RawPrincipal, invalid};
use crate::admin::auth::{KeyHash, Principal, Principals, Role};

impl RawAdmin {
    /// The principals, validated. Each error names the key and which entry (index and name).
    pub(crate) fn principals(&self, listen: SocketAddr) -> Result<Principals, ConfigError> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut list = Vec::with_capacity(self.principals.len());
        for (i, raw) in self.principals.iter().enumerate() {
            let entry = format!("admin.principals[{i}] ({:?})", raw.name);
            let principal = principal(raw, &entry)?;
            if !names.insert(principal.name.clone()) {
                return Err(invalid(
                    "admin.principals.name",
                    format!("{entry}: the name is used by an earlier principal"),
                ));
            }
            if !hashes.insert(principal.key_hash.to_string()) {
                return Err(invalid(
                    "admin.principals.key_hash",
                    format!("{entry}: the same key_hash as an earlier principal (one key each)"),
                ));
            }
            list.push(principal);
        }
        // API keys cross the network in clear on a plain listener other machines can reach.
        if !list.is_empty() && !listen.ip().is_loopback() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address and the admin listener has no TLS, so \
                     admin API keys would cross the network in clear: bind admin.listen to \
                     loopback or configure admin TLS (admin TLS comes in a later version)"
                ),
            ));
        }
        Ok(Principals::new(list))
    }
}

fn principal(raw: &RawPrincipal, entry: &str) -> Result<Principal, ConfigError> {
    if raw.name.trim().is_empty() {
        return Err(invalid(
            "admin.principals.name",
            format!("{entry}: must not be empty"),
        ));
    }
    let mut roles = Vec::with_capacity(raw.roles.len());
    for name in &raw.roles {
        let role = Role::parse(name).ok_or_else(|| {
            invalid(
                "admin.principals.roles",
                format!("{entry}: unknown role {name:?} (expected auditor, approver or admin)"),
            )
        })?;
        roles.push(role);
    }
    roles.sort();
    roles.dedup();
    let oid = raw
        .oid
        .as_deref()
        .map(|oid| {
            parse_oid(oid).ok_or_else(|| {
                invalid(
                    "admin.principals.oid",
                    format!(
                        "{entry}: {oid:?} is not an Entra object id (a GUID like \
                         11111111-2222-3333-4444-555555555555)"
                    ),
                )
            })
        })
        .transpose()?;
    let key_hash = KeyHash::parse(&raw.key_hash)
        .map_err(|e| invalid("admin.principals.key_hash", format!("{entry}: {e}")))?;
    Ok(Principal {
        name: raw.name.clone(),
        roles,
        oid,
        key_hash,
    })
}

/// A GUID in its hyphenated form, lower-cased (Entra writes object ids that way; tokens carry
/// them lower-case, so comparisons with a token's `oid` are plain string equality).
fn parse_oid(text: &str) -> Option<String> {
    if text.len() != 36 {
        return None;
    }
    let id = uuid::Uuid::try_parse(text).ok()?;
    Some(id.hyphenated().to_string())
}
