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

use serde::Serialize;

use super::ExportError;
use super::facts::Operation;
use super::shape::{self, Nested, Outcome, SyncgateFacts, Verb};

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

/// An API Activity event; fields in the order the schema lists them.
#[derive(Serialize)]
struct Record<'a> {
    activity_id: u32,
    activity_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    class_uid: u32,
    class_name: &'static str,
    type_uid: u32,
    type_name: String,
    severity_id: u32,
    severity: &'static str,
    time: i64,
    start_time: i64,
    end_time: i64,
    status_id: u32,
    status: &'static str,
    status_code: Option<String>,
    status_detail: Option<&'a str>,
    metadata: Metadata<'a>,
    actor: Actor<'a>,
    api: Api<'a>,
    src_endpoint: Endpoint,
    http_request: HttpRequest<'a>,
    resources: [Resource<'a>; 1],
    unmapped: SyncgateFacts<'a, Unmapped<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    product: Product,
    version: &'static str,
    uid: &'a str,
    correlation_uid: &'a str,
    logged_time: i64,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

/// The caller: a `user` when the token names one (a person or a service principal), and the
/// client application; each only when known.
#[derive(Serialize)]
struct Actor<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_name: Option<&'a str>,
}

#[derive(Serialize)]
struct User<'a> {
    uid: Option<&'a str>,
    name: Option<&'a str>,
    type_id: u32,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Api<'a> {
    operation: &'a str,
    version: &'a str,
    service: Named,
    request: Uid<'a>,
    response: Response<'a>,
}

#[derive(Serialize)]
struct Named {
    name: &'static str,
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Response<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

#[derive(Serialize)]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
}

#[derive(Serialize)]
struct HttpRequest<'a> {
    http_method: &'a str,
    url: Path<'a>,
    uid: Option<&'a str>,
}

#[derive(Serialize)]
struct Path<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct Resource<'a> {
    uid: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    name: Option<&'a str>,
}

/// `unmapped`'s own field, before the facts every format carries.
#[derive(Serialize)]
struct Unmapped<'a> {
    graph_request_id: Option<&'a str>,
}

fn actor<'a>(op: &'a Operation<'a>) -> Actor<'a> {
    let a = shape::actor(op);
    let user = (a.oid.is_some() || a.upn.is_some()).then(|| {
        let (type_id, kind) = if shape::is_app(a) {
            (99, "Service Principal")
        } else {
            (1, "User")
        };
        User {
            uid: a.oid.as_deref(),
            name: a.upn.as_deref().or(a.app_displayname.as_deref()),
            type_id,
            kind,
        }
    });
    Actor {
        user,
        app_uid: a.appid.as_deref(),
        app_name: a.app_displayname.as_deref(),
    }
}

/// Write the record for one operation.
pub(super) fn write(op: &Operation, out: &mut Vec<u8>) -> Result<(), ExportError> {
    let s = &op.summary;
    let e = shape::first(op);
    let nested = Nested::of(op)?;
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
    let id = s.operation_id.to_string();
    let record = Record {
        activity_id,
        activity_name,
        category_uid: CATEGORY_UID,
        category_name: "Application Activity",
        class_uid: CLASS_UID,
        class_name: "API Activity",
        type_uid: CLASS_UID * 100 + activity_id,
        type_name: format!("API Activity: {activity_name}"),
        severity_id,
        severity,
        time: shape::epoch_ms(&s.first_time),
        start_time: shape::epoch_ms(&s.first_time),
        end_time: shape::epoch_ms(&s.last_time),
        status_id,
        status,
        status_code: s.status.map(|c| c.to_string()),
        status_detail: shape::detail(op),
        metadata: Metadata {
            product: Product {
                name: "syncgate",
                vendor_name: "syncgate",
                version: env!("CARGO_PKG_VERSION"),
            },
            version: SCHEMA_VERSION,
            uid: &id,
            correlation_uid: &id,
            logged_time: shape::epoch_ms(&s.last_time),
        },
        actor: actor(op),
        api: Api {
            operation: s.operation.as_str(),
            version: e.api_version.as_str(),
            service: Named {
                name: "Microsoft Graph",
            },
            request: Uid { uid: &id },
            response: Response {
                code: s.status,
                message: shape::detail(op),
            },
        },
        src_endpoint: Endpoint {
            ip: shape::caller_ip(&e.actor),
        },
        http_request: HttpRequest {
            http_method: &e.method,
            url: Path {
                path: &e.canonical_path,
            },
            uid: e.client_request_id.as_deref(),
        },
        resources: [Resource {
            uid: s.partner.as_ref().map(|p| p.to_string()),
            kind: shape::resource_type(op),
            name: s.display_name.as_deref(),
        }],
        unmapped: shape::syncgate_facts(
            op,
            &nested,
            Unmapped {
                graph_request_id: shape::request_id(op),
            },
        ),
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.push(b'\n');
    Ok(())
}
