//! `directory-audit`: one record per operation shaped like Microsoft Entra's `directoryAudit`
//! resource (Graph `GET /auditLogs/directoryAudits`; Sentinel's `AuditLogs` table), so the KQL
//! and detection rules written for Entra's audit log read syncgate's unchanged, e.g.
//! `OperationName == "Update a partner cross-tenant identity sync setting"` and
//! `TargetResources[0].modifiedProperties[0].newValue contains "true"`.
//!
//! - `activityDisplayName` and `category` are Entra's own for the operations Entra logs
//!   ("Microsoft Entra audit log categories and activities": `CrossTenantIdentitySyncSettings`
//!   "Create/Update/Delete a partner cross-tenant identity sync setting";
//!   `CrossTenantAccessSettings` "Add a partner to cross-tenant access setting", "Update a partner
//!   cross-tenant access setting", "Delete partner specific cross-tenant access setting").
//!   Operations Entra has no activity for (restores, purges, the MTO template, reads, refusals
//!   of unclassified requests) get a name in the same style, and `additionalDetails` says
//!   `activityNamedBy: syncgate` for them, so nobody mistakes one for Entra's.
//! - `oldValue`/`newValue` are JSON-encoded strings, as Entra writes them (`""` when the property
//!   is absent on that side); Entra often leaves them empty, syncgate always fills them. The
//!   typed values sit beside them in the `syncgate` extension object (`changes`, `before`,
//!   `after`), with the decision, rule results and each event's place in the hash chain.
//! - `id` and `correlationId` are the operation id (the `x-syncgate-audit-id` header the client
//!   got); `loggedByService` is `syncgate`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::ExportError;
use super::facts::Operation;
use super::shape::{self, Nested, Outcome, SyncgateFacts, Verb};
use crate::cli::render::time_micros;
use crate::graph::OperationKind;

/// `(category, activityDisplayName, named by Entra)` of an operation.
fn activity(op: &Operation) -> (&'static str, &'static str, bool) {
    use OperationKind as K;
    const SYNC: &str = "CrossTenantIdentitySyncSettings";
    const ACCESS: &str = "CrossTenantAccessSettings";
    const TEMPLATE: &str = "MultiTenantOrgIdentitySyncPolicyTemplate";
    let verb = Verb::of(op);
    match op.summary.operation.kind() {
        Some(K::SyncCreate) => (
            SYNC,
            "Create a partner cross-tenant identity sync setting",
            true,
        ),
        Some(K::SyncUpdate) => (
            SYNC,
            "Update a partner cross-tenant identity sync setting",
            true,
        ),
        Some(K::SyncDelete) => (
            SYNC,
            "Delete a partner cross-tenant identity sync setting",
            true,
        ),
        Some(K::DeletedPartnerSyncWrite) => match verb {
            Verb::Create => (
                SYNC,
                "Create a partner cross-tenant identity sync setting",
                true,
            ),
            Verb::Delete => (
                SYNC,
                "Delete a partner cross-tenant identity sync setting",
                true,
            ),
            _ => (
                SYNC,
                "Update a partner cross-tenant identity sync setting",
                true,
            ),
        },
        Some(K::SyncRestore) => (
            SYNC,
            "Restore a deleted partner cross-tenant identity sync setting",
            false,
        ),
        Some(K::DeletedSyncPurge) => (
            SYNC,
            "Permanently delete a partner cross-tenant identity sync setting",
            false,
        ),
        Some(K::SyncRead) => (
            SYNC,
            "Read a partner cross-tenant identity sync setting",
            false,
        ),
        Some(K::PartnerCreate) => (ACCESS, "Add a partner to cross-tenant access setting", true),
        Some(K::PartnerUpdate) => (ACCESS, "Update a partner cross-tenant access setting", true),
        Some(K::PartnerDelete) => (
            ACCESS,
            "Delete partner specific cross-tenant access setting",
            true,
        ),
        Some(K::PartnerRestore) => (
            ACCESS,
            "Restore a deleted partner cross-tenant access setting",
            false,
        ),
        Some(K::DeletedPartnerPurge) => (
            ACCESS,
            "Permanently delete a partner cross-tenant access setting",
            false,
        ),
        Some(K::TemplateUpdate) => (
            TEMPLATE,
            "Update the multi-tenant organization identity sync policy template",
            false,
        ),
        Some(K::TemplateReset) => (
            TEMPLATE,
            "Reset the multi-tenant organization identity sync policy template",
            false,
        ),
        Some(K::LegacySyncPolicyWrite) => (
            SYNC,
            "Write the legacy cross-tenant identity sync policy",
            false,
        ),
        None => (
            "Policy",
            "Refused a cross-tenant access policy request",
            false,
        ),
    }
}

/// Entra's `operationType`.
fn operation_type(verb: Verb) -> &'static str {
    match verb {
        Verb::Create => "Add",
        Verb::Update => "Update",
        Verb::Delete => "Delete",
        Verb::Read | Verb::Other => "Other",
    }
}

/// A value as Entra's `oldValue`/`newValue` hold it: JSON text, `""` when absent.
fn encoded(value: Option<&Value>) -> String {
    value.map(Value::to_string).unwrap_or_default()
}

/// A `directoryAudit` record. Field order is the order Graph lists them in.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    id: &'a str,
    category: &'static str,
    correlation_id: &'a str,
    result: &'static str,
    result_reason: &'a str,
    activity_display_name: &'static str,
    activity_date_time: String,
    logged_by_service: &'static str,
    operation_type: &'static str,
    initiated_by: InitiatedBy<'a>,
    target_resources: [TargetResource<'a>; 1],
    additional_details: Vec<KeyValue<'a>>,
    syncgate: SyncgateFacts<'a, Extension<'a>>,
}

/// `initiatedBy`: `user` or `app`, the other `null`, as Entra writes it.
#[derive(Serialize)]
struct InitiatedBy<'a> {
    user: Option<UserIdentity<'a>>,
    app: Option<AppIdentity<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity<'a> {
    id: Option<&'a str>,
    display_name: Option<&'a str>,
    user_principal_name: Option<&'a str>,
    ip_address: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppIdentity<'a> {
    app_id: Option<&'a str>,
    display_name: Option<&'a str>,
    service_principal_id: Option<&'a str>,
    service_principal_name: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TargetResource<'a> {
    id: &'a str,
    display_name: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    user_principal_name: Option<&'a str>,
    group_type: Option<&'a str>,
    modified_properties: Vec<ModifiedProperty<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModifiedProperty<'a> {
    display_name: &'a str,
    old_value: String,
    new_value: String,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'static str,
    value: Cow<'a, str>,
}

/// The `syncgate` extension's own fields, before the facts every format carries.
#[derive(Serialize)]
struct Extension<'a> {
    operation: &'a str,
    status: Option<u16>,
    changes: Vec<TypedChange<'a>>,
}

#[derive(Serialize)]
struct TypedChange<'a> {
    property: &'a str,
    old_value: Option<&'a Value>,
    new_value: Option<&'a Value>,
}

/// The `initiatedBy` object.
fn initiated_by<'a>(op: &'a Operation<'a>) -> InitiatedBy<'a> {
    let a = shape::actor(op);
    if shape::is_app(a) {
        InitiatedBy {
            user: None,
            app: Some(AppIdentity {
                app_id: a.appid.as_deref(),
                display_name: a.app_displayname.as_deref(),
                service_principal_id: a.oid.as_deref(),
                service_principal_name: a.app_displayname.as_deref(),
            }),
        }
    } else {
        InitiatedBy {
            user: Some(UserIdentity {
                id: a.oid.as_deref(),
                display_name: None,
                user_principal_name: a.upn.as_deref(),
                ip_address: shape::caller_ip(a),
            }),
            app: None,
        }
    }
}

/// Write the record for one operation.
pub(super) fn write(op: &Operation, out: &mut Vec<u8>) -> Result<(), ExportError> {
    let s = &op.summary;
    let e = shape::first(op);
    let (category, name, by_entra) = activity(op);
    let verb = Verb::of(op);
    let nested = Nested::of(op)?;
    let result = match Outcome::of(op) {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Unknown => "unknownFutureValue",
    };
    let reason = shape::detail(op)
        .or_else(|| s.effect.map(|e| e.as_str()))
        .unwrap_or_default();
    let modified = nested
        .changes
        .iter()
        .map(|c| ModifiedProperty {
            display_name: &c.property,
            old_value: encoded(c.old.as_ref()),
            new_value: encoded(c.new.as_ref()),
        })
        .collect();
    let partner = s.partner.as_ref().map(|p| p.to_string());
    let id = s.operation_id.to_string();
    let status = s.status.map(|st| st.to_string());
    let mut details: Vec<(&'static str, Option<Cow<'_, str>>)> = vec![
        ("method", Some((&*e.method).into())),
        ("canonicalPath", Some((&*e.canonical_path).into())),
        ("apiVersion", Some(e.api_version.as_str().into())),
        (
            "client-request-id",
            e.client_request_id.as_deref().map(Cow::from),
        ),
        ("request-id", shape::request_id(op).map(Cow::from)),
        ("syncgateDecision", s.decision.map(|d| d.as_str().into())),
        ("rule", s.rule.as_deref().map(Cow::from)),
        ("effect", s.effect.map(|e| e.as_str().into())),
        ("upstreamStatus", status.as_deref().map(Cow::from)),
        ("drift", Some(if s.drift { "true" } else { "false" }.into())),
        ("approvalId", s.approval_id.as_deref().map(Cow::from)),
        ("rulesVersion", shape::rules_version(op).map(Cow::from)),
    ];
    if shape::is_app(shape::actor(op)) {
        details.push((
            "ipAddress",
            shape::caller_ip(shape::actor(op)).map(Cow::from),
        ));
    }
    if !by_entra {
        details.push(("activityNamedBy", Some("syncgate".into())));
    }
    let record = Record {
        id: &id,
        category,
        correlation_id: &id,
        result,
        result_reason: reason,
        activity_display_name: name,
        activity_date_time: time_micros(&s.first_time),
        logged_by_service: "syncgate",
        operation_type: operation_type(verb),
        initiated_by: initiated_by(op),
        target_resources: [TargetResource {
            id: partner.as_deref().unwrap_or(&e.canonical_path),
            display_name: s.display_name.as_deref(),
            kind: shape::resource_type(op),
            user_principal_name: None,
            group_type: None,
            modified_properties: modified,
        }],
        additional_details: details
            .into_iter()
            .filter_map(|(key, value)| Some(KeyValue { key, value: value? }))
            .collect(),
        syncgate: shape::syncgate_facts(
            op,
            &nested,
            Extension {
                operation: s.operation.as_str(),
                status: s.status,
                changes: nested
                    .changes
                    .iter()
                    .map(|c| TypedChange {
                        property: &c.property,
                        old_value: c.old.as_ref(),
                        new_value: c.new.as_ref(),
                    })
                    .collect(),
            },
        ),
    };
    serde_json::to_writer(out, &record)?;
    Ok(())
}
