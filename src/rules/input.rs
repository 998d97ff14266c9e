//! The one input document every rule sees, and what it says about sync.
//!
//! [`RuleInput`] is built by the pipeline after the before-state is read; built-in rules read it
//! through the helpers here, and Rego policies read its JSON form as `input`. Keeping a single
//! document means `syncgate rules test` cases and the backtest (which rebuilds inputs from audit
//! events) exercise exactly what the proxy evaluates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::Actor;
use crate::classify::{OperationKind, TenantId};

/// The input document of every rule (and, as JSON, Rego's `input`).
///
/// `None` and JSON `null` mean the same thing in `before`, `request_body` and in Rego: nothing.
/// `expected_after` is the exception the built-ins care about: `None` means *unknown* (a restore
/// whose deleted item was not read), while `Some(Value::Null)` means *the resource will be gone*.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// The operation kind ([`OperationKind::as_str`]), e.g. `sync_update`.
    pub(crate) operation: String,
    /// The HTTP method, upper case.
    #[serde(default)]
    pub method: String,
    /// The canonical path (`/v1.0/policies/crosstenantaccesspolicy/partners/<k>/identitysynchronization`).
    #[serde(default)]
    pub canonical_path: String,
    /// `v1.0` or `beta`.
    #[serde(default)]
    pub api_version: String,
    /// The partner tenant id (lower-case GUID); `None` for the MTO template.
    #[serde(default)]
    pub partner: Option<String>,
    /// The request's JSON body, if it had one.
    #[serde(default)]
    pub request_body: Option<Value>,
    /// The resource's current state as read upstream; `null` when it does not exist. For partner
    /// operations it is the partner with `identitySynchronization` expanded.
    #[serde(default)]
    pub before: Option<Value>,
    /// The state if the change applies ([`expected_after`]).
    #[serde(default)]
    pub expected_after: Option<Value>,
    /// The partner configuration (`GET …/partners/{k}`) as it is before the change, with
    /// `automaticUserConsentSettings`; read only when [`RuleSet::needs_partner_state`]. `None`:
    /// not read (or unreadable); `null`: the partner does not exist.
    ///
    /// [`RuleSet::needs_partner_state`]: super::RuleSet::needs_partner_state
    #[serde(default)]
    pub partner_state: Option<Value>,
    /// Who asked: token claims (unverified), caller address, client certificate subject.
    #[serde(default)]
    pub actor: Actor,
    /// When the request arrived (UTC); change windows convert it to their own time zone.
    pub(crate) time: DateTime<Utc>,
}

impl RuleInput {
    /// An input for `operation` at `time`, everything else empty; for tests and tools.
    pub fn new(operation: OperationKind, time: DateTime<Utc>) -> Self {
        Self {
            operation: operation.as_str().to_owned(),
            method: String::new(),
            canonical_path: String::new(),
            api_version: String::new(),
            partner: None,
            request_body: None,
            before: None,
            expected_after: None,
            partner_state: None,
            actor: Actor::default(),
            time,
        }
    }
}

/// One governed change as the decide step sees it. The proxy fills it from the classified
/// request, `syncgate rules test` from a case, and the backtest from a recorded event (whose fields
/// the pipeline wrote from the same request); [`RuleInput::for_change`] turns each into the same
/// input document.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// What kind of change.
    pub(crate) kind: OperationKind,
    /// The HTTP method, upper case.
    pub(crate) method: &'a str,
    /// The canonical path (`CanonicalPath`'s display form).
    pub(crate) canonical_path: &'a str,
    /// `v1.0` or `beta`.
    pub(crate) api_version: &'a str,
    /// The partner tenant id (lower-case GUID); `None` for the MTO template.
    pub(crate) partner: Option<&'a str>,
    /// The request's JSON body, if it had one.
    pub(crate) request_body: Option<&'a Value>,
    /// The before-state's value (`Snapshot::value`): JSON `null` when the resource does not
    /// exist, `None` when it could not be read.
    pub(crate) before: Option<&'a Value>,
    /// The partner's document when a rule needs it ([`RuleInput::partner_state`]).
    pub(crate) partner_state: Option<&'a Value>,
    /// Who asked.
    pub(crate) actor: &'a Actor,
    /// When the request arrived.
    pub(crate) time: DateTime<Utc>,
}

impl RuleInput {
    /// The input document for `change`, with [`expected_after`] derived from its before-state
    /// and body: the one way an input is built, so the proxy, rule tests and the backtest
    /// evaluate the same document for the same change.
    pub(crate) fn for_change(change: Change<'_>) -> Self {
        Self {
            operation: change.kind.as_str().to_owned(),
            method: change.method.to_owned(),
            canonical_path: change.canonical_path.to_owned(),
            api_version: change.api_version.to_owned(),
            partner: change.partner.map(str::to_owned),
            request_body: change.request_body.cloned(),
            before: change.before.cloned(),
            expected_after: expected_after(change.kind, change.before, change.request_body),
            partner_state: change.partner_state.cloned(),
            actor: change.actor.clone(),
            time: change.time,
        }
    }
}

/// What the state will be if the change applies, as far as syncgate can tell from the
/// before-state and the body (the same merge the emulator implements):
///
/// - `PUT` create ([`SyncCreate`](OperationKind::SyncCreate)) and `POST` create
///   ([`PartnerCreate`](OperationKind::PartnerCreate)): the body.
/// - `PATCH` ([`SyncUpdate`](OperationKind::SyncUpdate), [`PartnerUpdate`](OperationKind::PartnerUpdate),
///   [`TemplateUpdate`](OperationKind::TemplateUpdate)): the body merged recursively onto
///   `before` — objects merge member by member, anything else (scalars, arrays, `null`)
///   replaces. A partner body's `identitySynchronization` thus merges into the expanded sync
///   policy, and `identitySynchronization: null` removes it. An absent `before` merges onto `{}`.
/// - [`DeletedPartnerSyncWrite`](OperationKind::DeletedPartnerSyncWrite) (undocumented): with a
///   body, the merge as for `PATCH` (a `PUT` onto an absent item gives the body); without one it
///   is a `DELETE`: `null`.
/// - deletes and purges: `null`.
/// - restores: `before` when it is present (restoring over a live object fails, so the state
///   stays), otherwise `None`: unknown, because the state path of a restore is the live object
///   and the deleted item it brings back is not part of the before-state. A pipeline that reads
///   the deleted item may set [`RuleInput::expected_after`] to it; without it the sync rules
///   treat a sync-policy restore as possibly enabling sync (fail closed).
/// - [`TemplateReset`](OperationKind::TemplateReset), the legacy path and reads: `None` (unknown
///   or nothing changes).
pub fn expected_after(
    kind: OperationKind,
    before: Option<&Value>,
    body: Option<&Value>,
) -> Option<Value> {
    use OperationKind::*;
    let present = before.filter(|b| !b.is_null());
    match kind {
        SyncCreate | PartnerCreate => Some(body.cloned().unwrap_or(Value::Null)),
        SyncUpdate | PartnerUpdate | TemplateUpdate => Some(merged(present, body)),
        DeletedPartnerSyncWrite => Some(match body {
            Some(_) => merged(present, body),
            None => Value::Null,
        }),
        SyncDelete | PartnerDelete | DeletedPartnerPurge | DeletedSyncPurge => Some(Value::Null),
        PartnerRestore | SyncRestore => present.cloned(),
        TemplateReset | LegacySyncPolicyWrite | SyncRead => None,
    }
}

fn merged(before: Option<&Value>, body: Option<&Value>) -> Value {
    let mut doc = before.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(body) = body {
        merge(&mut doc, body);
    }
    doc
}

/// JSON merge of `patch` onto `target`: objects member by member, everything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(current), Value::Object(part)) => {
            for (name, value) in part {
                match current.get_mut(name) {
                    Some(slot) => merge(slot, value),
                    None => {
                        current.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The sync policy inside a document of `kind`: the document itself for sync and template
/// operations, its `identitySynchronization` member for partner operations.
pub(crate) fn sync_policy(kind: Option<OperationKind>, doc: &Value) -> Option<&Value> {
    use OperationKind::*;
    let policy = match kind {
        Some(
            PartnerCreate | PartnerUpdate | PartnerDelete | PartnerRestore | DeletedPartnerPurge,
        ) => doc.get("identitySynchronization")?,
        _ => doc,
    };
    (!policy.is_null()).then_some(policy)
}

/// Whether a partner body carries a sync policy to create or change (`identitySynchronization`
/// present and not `null`).
pub(crate) fn carries_sync_policy(body: Option<&Value>) -> bool {
    body.and_then(|b| b.get("identitySynchronization"))
        .is_some_and(|s| !s.is_null())
}

/// Whether a sync policy (or template) allows inbound sync of anything: any `…SyncInbound`
/// member (`userSyncInbound`, beta `groupSyncInbound`, and any later sibling) with
/// `isSyncAllowed: true`.
pub(crate) fn allows_sync(policy: &Value) -> bool {
    policy.as_object().is_some_and(|members| {
        members.iter().any(|(name, value)| {
            name.ends_with("SyncInbound")
                && value.get("isSyncAllowed").and_then(Value::as_bool) == Some(true)
        })
    })
}

/// The members of a sync policy that allow sync, for messages (`userSyncInbound`, ...).
pub(crate) fn enabled_members(policy: &Value) -> Vec<&str> {
    policy
        .as_object()
        .map(|members| {
            members
                .iter()
                .filter(|(name, value)| {
                    name.ends_with("SyncInbound")
                        && value.get("isSyncAllowed").and_then(Value::as_bool) == Some(true)
                })
                .map(|(name, _)| name.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether sync is allowed after the change, as the built-ins see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncAfter {
    /// The expected after-state (or the body itself) allows sync.
    Enabled,
    /// It does not (or the change does not touch sync).
    Disabled,
    /// Cannot tell: a restore whose restored item is unknown.
    Unknown,
}

/// Facts about one input, computed once per evaluation and shared by the built-ins.
pub(crate) struct Facts<'a> {
    pub(crate) input: &'a RuleInput,
    /// `None` when the operation name is unknown (a hand-written test case): rules scoped to
    /// operation lists then do not apply, every other rule does.
    pub(crate) kind: Option<OperationKind>,
    /// The partner, lower-cased (a valid GUID when the pipeline built the input).
    pub(crate) partner: Option<String>,
    /// Whether sync is allowed after the change. Partner writes without
    /// `identitySynchronization` count as [`SyncAfter::Disabled`]: they do not change sync.
    pub(crate) sync_after: SyncAfter,
    /// Whether the before-state allows sync.
    pub(crate) sync_before: bool,
    /// The sync policy the change leaves (for display names and messages).
    pub(crate) policy_after: Option<&'a Value>,
}

impl<'a> Facts<'a> {
    pub(crate) fn new(input: &'a RuleInput) -> Self {
        let kind = OperationKind::parse(&input.operation);
        let partner = input.partner.as_deref().map(|p| match TenantId::parse(p) {
            Ok(id) => id.as_str().to_owned(),
            Err(_) => p.to_ascii_lowercase(),
        });
        let in_body = input
            .request_body
            .as_ref()
            .and_then(|b| sync_policy(kind, b))
            .is_some_and(allows_sync);
        let policy_after = input
            .expected_after
            .as_ref()
            .and_then(|a| sync_policy(kind, a));
        // A partner write that does not carry `identitySynchronization` leaves the sync policy
        // as it is: the sync rules judge changes to sync, not unrelated partner settings of a
        // partner whose sync was enabled some other way (drift records that).
        let untouched = matches!(
            kind,
            Some(OperationKind::PartnerCreate | OperationKind::PartnerUpdate)
        ) && !carries_sync_policy(input.request_body.as_ref());
        let sync_after = match &input.expected_after {
            _ if in_body => SyncAfter::Enabled,
            _ if untouched => SyncAfter::Disabled,
            Some(_) if policy_after.is_some_and(allows_sync) => SyncAfter::Enabled,
            Some(_) => SyncAfter::Disabled,
            None if matches!(
                kind,
                Some(OperationKind::SyncRestore | OperationKind::DeletedPartnerSyncWrite)
            ) =>
            {
                SyncAfter::Unknown
            }
            None => SyncAfter::Disabled,
        };
        let sync_before = input
            .before
            .as_ref()
            .and_then(|b| sync_policy(kind, b))
            .is_some_and(allows_sync);
        Self {
            input,
            kind,
            partner,
            sync_after,
            sync_before,
            policy_after,
        }
    }

    /// The operation name, for messages.
    pub(crate) fn operation(&self) -> &str {
        &self.input.operation
    }

    /// `partner 1234…` or `the MTO template`, for messages.
    pub(crate) fn subject(&self) -> String {
        match &self.partner {
            Some(p) => format!("partner {p}"),
            None => "the request (it names no partner)".to_owned(),
        }
    }
}
