//! `[admin]`'s principals and TLS, checked: known roles, at least one credential each, unique
//! names, keys and certificate rules, well-formed hashes, subjects, SANs and object ids; never on
//! an address other machines reach without TLS, and never a certificate principal without a CA
//! to verify certificates against.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{ConfigError, RawAdmin, RawPrincipal, invalid};
use crate::admin::auth::{KeyHash, Principal, Principals, Role};
use crate::admin::cert::{CertRule, DistinguishedName, SanEntry};

impl RawAdmin {
    /// The principals, validated. Each error names the key and which entry (index and name).
    pub(crate) fn principals(&self, listen: SocketAddr) -> Result<Principals, ConfigError> {
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        let mut cert_rules = HashSet::new();
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
            if let Some(hash) = &principal.key_hash {
                if !hashes.insert(hash.to_string()) {
                    return Err(invalid(
                        "admin.principals.key_hash",
                        format!(
                            "{entry}: the same key_hash as an earlier principal (one key each)"
                        ),
                    ));
                }
            }
            if let Some(rule) = principal.cert.key() {
                if !cert_rules.insert(rule) {
                    return Err(invalid(
                        "admin.principals.cert_subject",
                        format!(
                            "{entry}: the same cert_subject and cert_san as an earlier principal \
                             (one certificate stands for one principal)"
                        ),
                    ));
                }
                if self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                    return Err(invalid(
                        "admin.tls.client_ca",
                        format!(
                            "{entry} authenticates by client certificate, which needs \
                             [admin.tls] with client_ca (the CA bundle client certificates must \
                             chain to)"
                        ),
                    ));
                }
            }
            list.push(principal);
        }
        // API keys cross the network in clear on a plain listener other machines can reach.
        if !list.is_empty() && !listen.ip().is_loopback() && self.tls.is_none() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address and the admin listener has no TLS, so \
                     admin API keys would cross the network in clear: bind admin.listen to \
                     loopback or configure [admin.tls] (cert and key)"
                ),
            ));
        }
        Ok(Principals::new(list))
    }

    /// `[admin.tls]`, loaded with the proxy's TLS builder; `None`: plain HTTP.
    pub(crate) fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        self.tls
            .as_ref()
            .map(|t| t.load("admin.tls", "admin.tls.client_auth"))
            .transpose()
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
    let key_hash = optional(
        raw.key_hash.as_deref(),
        "admin.principals.key_hash",
        entry,
        KeyHash::parse,
    )?;
    let cert = CertRule {
        subject: optional(
            raw.cert_subject.as_deref(),
            "admin.principals.cert_subject",
            entry,
            DistinguishedName::parse,
        )?,
        san: optional(
            raw.cert_san.as_deref(),
            "admin.principals.cert_san",
            entry,
            SanEntry::parse,
        )?,
    };
    if key_hash.is_none() && !cert.is_set() {
        return Err(invalid(
            "admin.principals",
            format!(
                "{entry}: no credential: set key_hash (an API key), cert_subject or cert_san \
                 (a client certificate)"
            ),
        ));
    }
    let mut groups = raw.groups.clone();
    if groups.iter().any(|g| g.trim().is_empty()) {
        return Err(invalid(
            "admin.principals.groups",
            format!("{entry}: a group's name must not be empty"),
        ));
    }
    groups.sort();
    groups.dedup();
    Ok(Principal {
        name: raw.name.clone(),
        roles,
        oid,
        groups,
        key_hash,
        cert,
    })
}

/// An optional credential key parsed, its error naming `key` and the entry.
fn optional<T, E: std::fmt::Display>(
    text: Option<&str>,
    key: &'static str,
    entry: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ConfigError> {
    text.map(parse)
        .transpose()
        .map_err(|e| invalid(key, format!("{entry}: {e}")))
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

#[cfg(test)]
mod tests;
