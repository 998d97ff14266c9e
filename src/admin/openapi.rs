//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the admin listener.
//!
//! The document is a JSON file kept in the repository (`openapi.json`), not generated, so the
//! contract a change makes shows in its diff and a reviewer reads it there. It is served as is,
//! open like `/healthz`: it describes the API and holds no data.
//!
//! Two things keep it true. The unit tests below compare it with the code cheaply: it parses and
//! is OpenAPI 3.1, every `$ref` resolves, it names exactly the listener's routes and the
//! operations route's query parameters, its enums are the Rust types' own, and an operations row
//! has exactly the documented fields. `tests/openapi.rs` then runs schemathesis against a live
//! admin listener, which checks every response (status, headers, body) against it and sends
//! invalid input that must be refused. docs/admin-api.md says how to add a route.

use http::{Response, StatusCode, header};

use crate::body::{Body, full};

/// The document, as reviewed.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

pub(crate) fn response() -> Response<Body> {
    let mut resp = Response::new(full(DOCUMENT));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::admin::auth::Role;
    use crate::admin::{POST_ROUTES, ROUTES, operations};
    use crate::audit::{Decision, Effect, EventKind, Operation};
    use crate::graph::{OperationId, OperationKind, TenantId};
    use crate::store::OperationSummary;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// The document's JSON Schema `enum` at `pointer`, as a set.
    fn documented_enum(doc: &Value, pointer: &str) -> BTreeSet<String> {
        doc.pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no enum at {pointer}"))
            .iter()
            .map(|v| v.as_str().expect("enum values are strings").to_owned())
            .collect()
    }

    fn names(list: impl IntoIterator<Item = impl Into<String>>) -> BTreeSet<String> {
        list.into_iter().map(Into::into).collect()
    }

    /// Every `$ref` under `value`, with where it was found.
    fn refs(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        found.push((at.to_owned(), v.as_str().unwrap_or_default().to_owned()));
                    }
                    refs(v, &format!("{at}/{k}"), found);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document();
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "openapi: {version:?}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut found = Vec::new();
        refs(&doc, "", &mut found);
        assert!(!found.is_empty());
        for (at, reference) in found {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: {reference} is not local"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: {reference} resolves to nothing"
            );
        }
    }

    #[test]
    fn the_document_names_exactly_the_routes_the_listener_serves_each_for_its_method() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(
            names(paths.keys().cloned()),
            names(ROUTES.iter().chain(POST_ROUTES).copied()),
            "openapi.json's paths and admin::ROUTES and POST_ROUTES differ"
        );
        for (path, item) in paths {
            let methods: Vec<&String> = item.as_object().expect("path item").keys().collect();
            let method = if POST_ROUTES.contains(&path.as_str()) {
                "post"
            } else {
                "get"
            };
            assert_eq!(methods, [method], "{path}: served for {method} only");
        }
    }

    #[test]
    fn the_operations_route_documents_exactly_the_parameters_it_reads() {
        let doc = document();
        let documented = doc["paths"]["/api/v1/operations"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                let pointer = p["$ref"].as_str().expect("a $ref").trim_start_matches('#');
                let parameter = doc.pointer(pointer).expect("resolves");
                assert_eq!(parameter["in"], "query");
                parameter["name"].as_str().expect("a name").to_owned()
            });
        assert_eq!(
            names(documented),
            names(operations::PARAMETERS.iter().copied())
        );
    }

    /// Every variant, listed through a `match` so a new one fails to compile here.
    fn every_effect() -> Vec<Effect> {
        let all = [
            Effect::Applied,
            Effect::Ignored,
            Effect::NotApplied,
            Effect::AppliedDespiteError,
            Effect::Diverged,
            Effect::Unknown,
        ];
        for e in all {
            match e {
                Effect::Applied
                | Effect::Ignored
                | Effect::NotApplied
                | Effect::AppliedDespiteError
                | Effect::Diverged
                | Effect::Unknown => {}
            }
        }
        all.to_vec()
    }

    #[test]
    fn the_documented_enums_are_the_rust_types_own() {
        let doc = document();
        let schemas = "/components/schemas";
        let mut kinds = names(OperationKind::ALL.map(|k| k.as_str()));
        kinds.extend(names(
            [Operation::Unknown, Operation::RefusalSummary].map(|o| o.to_string()),
        ));
        assert_eq!(
            documented_enum(&doc, &format!("{schemas}/OperationKind/enum")),
            kinds
        );
        assert_eq!(
            documented_enum(&doc, &format!("{schemas}/Effect/enum")),
            names(every_effect().into_iter().map(Effect::as_str))
        );
        assert_eq!(
            documented_enum(&doc, &format!("{schemas}/Decision/enum")),
            names([Decision::Allow, Decision::Deny].map(Decision::as_str))
        );
        assert_eq!(
            documented_enum(
                &doc,
                &format!("{schemas}/Principal/properties/roles/items/enum")
            ),
            names(Role::ALL.map(Role::as_str))
        );
        assert_eq!(
            documented_enum(&doc, &format!("{schemas}/TerminalKind/enum")),
            names(crate::store::TERMINAL_KINDS.map(EventKind::as_str))
        );
    }

    #[test]
    fn an_operations_row_has_exactly_the_documented_fields() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["OperationSummary"];
        let summary = OperationSummary {
            operation_id: OperationId::new(),
            operation: OperationKind::SyncUpdate.into(),
            partner: Some(TenantId::parse("9c5d131d-b1c3-4fc4-9e3f-c6557947d551").unwrap()),
            actor: Default::default(),
            decision: Some(Decision::Allow),
            rule: None,
            status: Some(204),
            effect: Some(Effect::Applied),
            drift: false,
            approval_id: None,
            display_name: Some("Contoso".into()),
            first_time: chrono::Utc::now(),
            last_time: chrono::Utc::now(),
            terminal: Some(EventKind::Completed),
            first_seq: 1,
            last_seq: 2,
            events: 2,
        };
        let row = serde_json::to_value(&summary).unwrap();
        let fields = names(row.as_object().unwrap().keys().cloned());
        let documented = names(schema["properties"].as_object().unwrap().keys().cloned());
        assert_eq!(
            fields, documented,
            "OperationSummary's JSON and its schema differ"
        );
        let required = schema["required"].as_array().unwrap();
        assert_eq!(
            names(required.iter().map(|v| v.as_str().unwrap())),
            documented,
            "every field is always present (null when unknown)"
        );
        let actor = names(row["actor"].as_object().unwrap().keys().cloned());
        let documented_actor = doc["components"]["schemas"]["ActorIds"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned();
        assert_eq!(actor, names(documented_actor));
    }

    /// The property names of the object schema `name` in `components/schemas`, and its required.
    fn properties(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let schema = &doc["components"]["schemas"][name];
        let props = schema["properties"].as_object().expect("an object schema");
        let required = schema["required"].as_array().expect("with required fields");
        (
            names(props.keys().cloned()),
            names(required.iter().map(|v| v.as_str().unwrap())),
        )
    }

    #[test]
    fn a_stored_event_has_exactly_the_documented_fields_and_only_the_late_ones_may_be_absent() {
        use crate::audit::{RawRequest, Recorded, RefusalSummary};
        let doc = document();
        let mut event = crate::audit::Event::new(OperationId::new(), EventKind::Denied);
        let plain = serde_json::to_value(Recorded {
            seq: 1,
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
            event: event.clone(),
        })
        .unwrap();
        event.raw_request = Some(RawRequest::new("/v1.0/x", Some(b"{}")));
        event.approval = Some(Box::default());
        event.refusal_summary = Some(RefusalSummary {
            client: "192.0.2.1".into(),
            count: 2,
            first: chrono::Utc::now(),
            last: chrono::Utc::now(),
            codes: Default::default(),
            methods: Default::default(),
        });
        let full = serde_json::to_value(Recorded {
            seq: 2,
            prev_hash: "1".repeat(64),
            hash: "2".repeat(64),
            event,
        })
        .unwrap();
        let (documented, required) = properties(&doc, "Recorded");
        assert_eq!(names(full.as_object().unwrap().keys().cloned()), documented);
        assert_eq!(
            names(plain.as_object().unwrap().keys().cloned()),
            required,
            "the fields left out when empty are exactly the ones not required"
        );
        let (actor, actor_required) = properties(&doc, "Actor");
        assert_eq!(
            names(full["actor"].as_object().unwrap().keys().cloned()),
            actor
        );
        assert_eq!(actor_required, actor);
        let (approval, _) = properties(&doc, "ApprovalFacts");
        let facts = serde_json::to_value(crate::audit::ApprovalFacts {
            status: "pending".into(),
            policy: "default".into(),
            requester: Some("oid:x".into()),
            body_hash: Some("sha256:x".into()),
            before_hash: Some("sha256:x".into()),
            justification: Some("j".into()),
            ticket: Some("t".into()),
            vote_deadline: Some("2026-01-01T00:00:00Z".into()),
            send_deadline: Some("2026-01-01T00:00:00Z".into()),
            principal: Some("ann".into()),
            ballot: Some("approve".into()),
            comment: Some("c".into()),
            approvals: Some(1),
            required: Some(2),
        })
        .unwrap();
        assert_eq!(names(facts.as_object().unwrap().keys().cloned()), approval);
        let (summary, _) = properties(&doc, "RefusalSummary");
        let given = full["refusal_summary"].as_object().unwrap().keys().cloned();
        assert_eq!(names(given), summary);
        assert_eq!(
            documented_enum(&doc, "/components/schemas/Recorded/properties/kind/enum"),
            names(EventKind::ALL.map(EventKind::as_str))
        );
    }

    #[test]
    fn the_export_documents_its_formats_and_the_operations_filters_without_paging() {
        let doc = document();
        let export = &doc["paths"]["/api/v1/export"]["get"];
        let formats = crate::export::Format::ALL.map(crate::export::Format::as_str);
        let parameters = export["parameters"].as_array().unwrap();
        let format = parameters
            .iter()
            .find(|p| p["name"] == "format")
            .expect("format is documented");
        assert_eq!(format["required"], true);
        let documented = format["schema"]["enum"].as_array().unwrap();
        assert_eq!(
            names(documented.iter().map(|v| v.as_str().unwrap())),
            names(formats)
        );
        let filters = parameters.iter().filter_map(|p| {
            let name = p["$ref"]
                .as_str()?
                .strip_prefix("#/components/parameters/")?;
            Some(name.to_owned())
        });
        let mut expected = names(operations::PARAMETERS.iter().copied());
        expected.remove("limit");
        expected.remove("cursor");
        assert_eq!(names(filters), expected);
    }

    #[tokio::test]
    async fn the_served_document_is_the_file_as_json() {
        use http_body_util::BodyExt;
        let resp = response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, DOCUMENT.as_bytes());
    }
}
