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

use serde_json::{Value, json};

use super::shape::{self, Outcome, Verb};
use crate::cli::render::time_micros;
use crate::graph::OperationKind;
use crate::store::FoldedOperation;

/// `(category, activityDisplayName, named by Entra)` of an operation.
fn activity(op: &FoldedOperation) -> (&'static str, &'static str, bool) {
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

/// The `initiatedBy` object: `user` or `app`, the other `null`, as Entra writes it.
fn initiated_by(op: &FoldedOperation) -> Value {
    let a = shape::actor(op);
    if shape::is_app(a) {
        json!({
            "user": null,
            "app": {
                "appId": a.appid,
                "displayName": a.app_displayname,
                "servicePrincipalId": a.oid,
                "servicePrincipalName": a.app_displayname,
            },
        })
    } else {
        json!({
            "user": {
                "id": a.oid,
                "displayName": null,
                "userPrincipalName": a.upn,
                "ipAddress": shape::caller_ip(a),
            },
            "app": null,
        })
    }
}

/// The record for one operation.
pub(super) fn record(op: &FoldedOperation) -> Value {
    let s = &op.summary;
    let e = &shape::first(op).event;
    let (category, name, by_entra) = activity(op);
    let verb = Verb::of(op);
    let outcome = Outcome::of(op);
    let changes = shape::changes(op);
    let result = match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Unknown => "unknownFutureValue",
    };
    let reason = shape::detail(op)
        .map(str::to_owned)
        .or_else(|| s.effect.map(|e| e.as_str().to_owned()))
        .unwrap_or_default();
    let modified: Vec<Value> = changes
        .iter()
        .map(|c| {
            json!({
                "displayName": c.property,
                "oldValue": encoded(c.old.as_ref()),
                "newValue": encoded(c.new.as_ref()),
            })
        })
        .collect();
    let target_id = s
        .partner
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| e.canonical_path.clone());
    let mut details = vec![
        ("method", Some(e.method.clone())),
        ("canonicalPath", Some(e.canonical_path.clone())),
        ("apiVersion", Some(e.api_version.to_string())),
        ("client-request-id", e.client_request_id.clone()),
        ("request-id", shape::request_id(op).map(str::to_owned)),
        (
            "syncgateDecision",
            s.decision.map(|d| d.as_str().to_owned()),
        ),
        ("rule", s.rule.clone()),
        ("effect", s.effect.map(|e| e.as_str().to_owned())),
        ("upstreamStatus", s.status.map(|st| st.to_string())),
        ("drift", Some(s.drift.to_string())),
        ("approvalId", s.approval_id.clone()),
        (
            "rulesVersion",
            shape::latest(op, |r| r.event.rules_version.clone()),
        ),
    ];
    if shape::is_app(shape::actor(op)) {
        details.push(("ipAddress", shape::caller_ip(shape::actor(op))));
    }
    if !by_entra {
        details.push(("activityNamedBy", Some("syncgate".to_owned())));
    }
    let additional: Vec<Value> = details
        .into_iter()
        .filter_map(|(key, value)| Some(json!({"key": key, "value": value?})))
        .collect();
    let typed_changes: Vec<Value> = changes
        .iter()
        .map(|c| json!({"property": c.property, "old_value": c.old, "new_value": c.new}))
        .collect();
    json!({
        "id": s.operation_id.to_string(),
        "category": category,
        "correlationId": s.operation_id.to_string(),
        "result": result,
        "resultReason": reason,
        "activityDisplayName": name,
        "activityDateTime": time_micros(&s.first_time),
        "loggedByService": "syncgate",
        "operationType": operation_type(verb),
        "initiatedBy": initiated_by(op),
        "targetResources": [{
            "id": target_id,
            "displayName": s.display_name,
            "type": shape::resource_type(op),
            "userPrincipalName": null,
            "groupType": null,
            "modifiedProperties": modified,
        }],
        "additionalDetails": additional,
        "syncgate": shape::syncgate_facts(op, json!({
            "operation": s.operation.as_str(),
            "status": s.status,
            "changes": typed_changes,
        })),
    })
}
