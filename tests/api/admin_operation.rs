//! Issue 10: `GET /api/v1/operations/{id}` (one operation, whole) and `GET /api/v1/verify`.

use http::StatusCode;
use serde_json::Value;

use crate::admin_auth::assert_graph_error;
use crate::admin_log::{Backend, LogWorld};

async fn one_operation_shows_its_events_in_the_chain_its_states_and_their_diff(backend: Backend) {
    let world = LogWorld::new(backend, 2).await;
    let id = &world.operations[1];
    let (resp, body) = world
        .get(&world.auditor, &format!("/api/v1/operations/{id}"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["operation_id"], id.as_str());
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["received", "completed"], "{body}");
    for e in events {
        assert_eq!(e["operation_id"], id.as_str());
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
        assert_eq!(e["prev_hash"].as_str().unwrap().len(), 64, "{e}");
    }
    // Each event's place in the chain is the stored one: the same as the raw events route's.
    let (_, raw) = world.get(&world.auditor, "/api/v1/events").await;
    for e in events {
        let same = raw["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["seq"] == e["seq"])
            .unwrap();
        assert_eq!(same, e);
    }
    assert_eq!(body["before"]["value"]["displayName"], "change 0", "{body}");
    assert_eq!(body["after"]["value"]["displayName"], "change 1", "{body}");
    let diff = body["diff"].as_array().unwrap();
    assert!(
        diff.iter()
            .any(|op| op["path"] == "/displayName" && op["value"] == "change 1"),
        "{body}"
    );
    assert!(body["rule_results"].is_array(), "{body}");
    assert_eq!(body["approval_ids"], Value::Array(Vec::new()));
    // The summary is the row the list route shows for it.
    let (_, list) = world.get(&world.auditor, "/api/v1/operations").await;
    let row = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operation_id"] == id.as_str())
        .unwrap();
    assert_eq!(&body["summary"], row);
    world.finish().await;
}

#[tokio::test]
async fn one_operation_shows_its_events_in_the_chain_its_states_and_their_diff_on_sqlite() {
    one_operation_shows_its_events_in_the_chain_its_states_and_their_diff(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_operation_shows_its_events_in_the_chain_its_states_and_their_diff_on_postgres() {
    one_operation_shows_its_events_in_the_chain_its_states_and_their_diff(Backend::Postgres).await;
}

#[tokio::test]
async fn an_operation_id_that_is_not_a_guid_is_400_and_an_unknown_one_is_404() {
    let world = LogWorld::new(Backend::Sqlite, 1).await;
    let (resp, _) = world
        .get(&world.auditor, "/api/v1/operations/not-a-guid")
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_graph_error(&resp, "BadRequest", "not a guid");
    let unknown = uuid::Uuid::now_v7();
    let (resp, _) = world
        .get(&world.auditor, &format!("/api/v1/operations/{unknown}"))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_graph_error(&resp, "NotFound", "unknown");
    let id = &world.operations[0];
    let (resp, _) = world
        .get(
            &world.auditor,
            &format!("/api/v1/operations/{id}?expand=all"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    // An upper-case id names the same operation.
    let (resp, body) = world
        .get(
            &world.auditor,
            &format!("/api/v1/operations/{}", id.to_uppercase()),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    world.finish().await;
}

/// JSON with every object's keys sorted and no whitespace: the chain's canonical form.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

async fn verify_answers_what_audit_verify_answers(backend: Backend) {
    let world = LogWorld::new(backend, 2).await;
    let (resp, body) = world.get(&world.auditor, "/api/v1/verify").await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["events"], 4, "{body}");
    assert_eq!(body["first_broken"], Value::Null, "{body}");
    let (_, events) = world.get(&world.auditor, "/api/v1/events").await;
    let last = events["value"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(body["head"], last["hash"], "{body}");
    // The tree root is recomputable by a client from the events route alone: each event without
    // its hash and prev_hash, as canonical JSON (keys sorted, no space), is a leaf.
    let mut tree = syncgate::audit::merkle::Frontier::new();
    for event in events["value"].as_array().unwrap() {
        let mut event = event.clone();
        let object = event.as_object_mut().unwrap();
        object.remove("hash");
        object.remove("prev_hash");
        let leaf = canonical(&event);
        tree.push(syncgate::audit::merkle::leaf_hash(leaf.as_bytes()));
    }
    assert_eq!(tree.size(), 4);
    assert_eq!(body["tree_root"], hex::encode(tree.root()), "{body}");
    let (resp, _) = world.get(&world.auditor, "/api/v1/verify?full=true").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    world.finish().await;
}

#[tokio::test]
async fn verify_answers_what_audit_verify_answers_on_sqlite() {
    verify_answers_what_audit_verify_answers(Backend::Sqlite).await;
}

#[tokio::test]
async fn verify_answers_what_audit_verify_answers_on_postgres() {
    verify_answers_what_audit_verify_answers(Backend::Postgres).await;
}

#[tokio::test]
async fn verify_names_the_first_broken_event_of_an_edited_log() {
    let world = LogWorld::new(Backend::Sqlite, 2).await;
    world
        .sqlite(
            "DROP TRIGGER audit_events_no_update; \
             UPDATE audit_events SET event = replace(event, 'change 1', 'change X') WHERE seq = 3;",
        )
        .await;
    let (resp, body) = world.get(&world.auditor, "/api/v1/verify").await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    assert_eq!(body["events"], 2, "{body}");
    assert_eq!(body["first_broken"]["seq"], 3, "{body}");
    assert!(body["first_broken"]["event_id"].is_string(), "{body}");
    assert!(body["first_broken"]["reason"].is_string(), "{body}");
    world.finish().await;
}
