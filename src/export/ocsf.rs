//! `ocsf`: one OCSF 1.3.0 event per operation, one JSON line each.
//!
//! Class: API Activity (`class_uid` 6003, category 6 Application Activity), not Entity
//! Management (3004). What syncgate observes is an API call: an actor, the address it came from,
//! the operation on Graph's API, its request id and the response code. API Activity requires
//! exactly those (`actor`, `api`, `src_endpoint`) and carries the changed object in `resources`,
//! the way CloudTrail's records (the nearest analogue: a recorded control-plane call) are mapped.
//! Entity Management has no place for the source address or the response, and is meant for an
//! IAM system's own managed entities rather than a call made through a proxy.
//!
//! Field names are the OCSF schema's (`events/application/api_activity.json` and the base
//! event): `activity_id` (1 Create, 2 Read, 3 Update, 4 Delete, 99 Other), `type_uid` =
//! `class_uid * 100 + activity_id`, `time` in epoch milliseconds (the request's arrival),
//! `severity_id` (1 Informational; 3 Medium for a refused change; 4 High when the change found
//! drift, a change made outside syncgate), `status_id` (1 Success, 2 Failure, 0 Unknown),
//! `metadata.version` the schema version. What OCSF has no attribute for (the decision, rule
//! results, the states, the diff, the chain) is under `unmapped`.

use serde_json::{Value, json};

use super::shape::{self, Outcome, Verb};
use crate::store::FoldedOperation;

/// The OCSF schema version the records follow.
pub(super) const SCHEMA_VERSION: &str = "1.3.0";
pub(super) const CLASS_UID: u32 = 6003;
pub(super) const CATEGORY_UID: u32 = 6;

fn activity(verb: Verb) -> (u32, &'static str) {
    match verb {
        Verb::Create => (1, "Create"),
        Verb::Read => (2, "Read"),
        Verb::Update => (3, "Update"),
        Verb::Delete => (4, "Delete"),
        Verb::Other => (99, "Other"),
    }
}

fn actor(op: &FoldedOperation) -> Value {
    let a = shape::actor(op);
    let mut actor = serde_json::Map::new();
    if a.oid.is_some() || a.upn.is_some() {
        let name = a.upn.clone().or_else(|| a.app_displayname.clone());
        let (type_id, kind) = if shape::is_app(a) {
            (99, "Service Principal")
        } else {
            (1, "User")
        };
        actor.insert(
            "user".into(),
            json!({"uid": a.oid, "name": name, "type_id": type_id, "type": kind}),
        );
    }
    if let Some(appid) = &a.appid {
        actor.insert("app_uid".into(), json!(appid));
    }
    if let Some(name) = &a.app_displayname {
        actor.insert("app_name".into(), json!(name));
    }
    Value::Object(actor)
}

/// The record for one operation.
pub(super) fn record(op: &FoldedOperation) -> Value {
    let s = &op.summary;
    let e = &shape::first(op).event;
    let (activity_id, activity_name) = activity(Verb::of(op));
    let (status_id, status) = match Outcome::of(op) {
        Outcome::Success => (1, "Success"),
        Outcome::Failure => (2, "Failure"),
        Outcome::Unknown => (0, "Unknown"),
    };
    let (severity_id, severity) = if s.drift {
        (4, "High")
    } else if s.decision == Some(crate::audit::Decision::Deny) {
        (3, "Medium")
    } else {
        (1, "Informational")
    };
    let mut response = json!({});
    if let Some(code) = s.status {
        response["code"] = json!(code);
    }
    if let Some(detail) = shape::detail(op) {
        response["message"] = json!(detail);
    }
    let mut src_endpoint = json!({});
    if let Some(ip) = shape::caller_ip(&e.actor) {
        src_endpoint["ip"] = json!(ip);
    }
    json!({
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("API Activity: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity,
        "time": shape::epoch_ms(&s.first_time),
        "start_time": shape::epoch_ms(&s.first_time),
        "end_time": shape::epoch_ms(&s.last_time),
        "status_id": status_id,
        "status": status,
        "status_code": s.status.map(|c| c.to_string()),
        "status_detail": shape::detail(op),
        "metadata": {
            "product": {
                "name": "syncgate",
                "vendor_name": "syncgate",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "version": SCHEMA_VERSION,
            "uid": s.operation_id.to_string(),
            "correlation_uid": s.operation_id.to_string(),
            "logged_time": shape::epoch_ms(&s.last_time),
        },
        "actor": actor(op),
        "api": {
            "operation": s.operation.as_str(),
            "version": e.api_version.as_str(),
            "service": {"name": "Microsoft Graph"},
            "request": {"uid": s.operation_id.to_string()},
            "response": response,
        },
        "src_endpoint": src_endpoint,
        "http_request": {
            "http_method": e.method,
            "url": {"path": e.canonical_path},
            "uid": e.client_request_id,
        },
        "resources": [{
            "uid": s.partner.as_ref().map(|p| p.to_string()),
            "type": shape::resource_type(op),
            "name": s.display_name,
        }],
        "unmapped": shape::syncgate_facts(op, json!({
            "graph_request_id": shape::request_id(op),
        })),
    })
}
