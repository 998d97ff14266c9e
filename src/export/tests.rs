//! Every format written from a real log (SQLite and PostgreSQL) and read back by a parser of its
//! own kind (a JSON reader per line, the `csv` crate, a JSON document), field by field.
//!
//! The published fields checked:
//! - directoryAudit (Microsoft Graph v1.0 `directoryAudit`, `targetResource`,
//!   `modifiedProperty`, `userIdentity`, `appIdentity`, `keyValue`): `id`, `category`,
//!   `correlationId`, `result`, `resultReason`, `activityDisplayName`, `activityDateTime`,
//!   `loggedByService`, `operationType`, `initiatedBy.user.{id, displayName, userPrincipalName,
//!   ipAddress}`, `initiatedBy.app.{appId, displayName, servicePrincipalId,
//!   servicePrincipalName}`, `targetResources[].{id, displayName, type, userPrincipalName,
//!   groupType, modifiedProperties[].{displayName, oldValue, newValue}}`,
//!   `additionalDetails[].{key, value}`; strings where Graph says String.
//! - OCSF 1.3.0 API Activity (6003) and the base event: `activity_id`, `category_uid`,
//!   `class_uid`, `type_uid` (= class_uid × 100 + activity_id), `severity_id`, `time` (epoch ms,
//!   an integer), `status_id`, `status`, `metadata.{product.{name, vendor_name, version},
//!   version}`, `actor.{user.{uid, name}, app_uid}`, `api.{operation, request.uid,
//!   response.code}`, `src_endpoint.ip`, `resources[].uid`, `unmapped`.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Export, Format};
use crate::audit::{Actor, Decision, Effect, Event, EventKind, Recorded, Snapshot};
use crate::store::test_log::{Backend, TestLog};
use crate::store::{Filter, OperationFilter, Store, StoreReader};

const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const OTHER_PARTNER: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";
const ALICE_OID: &str = "11111111-1111-4111-8111-111111111111";
const APP_ID: &str = "22222222-2222-4222-8222-222222222222";
const APP_SP: &str = "33333333-3333-4333-8333-333333333333";

fn event(op: Uuid, kind: EventKind) -> Event {
    let mut e = Event::new(op, kind);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
    );
    e.api_version = "v1.0".into();
    e.partner_tenant_id = PARTNER.parse().ok();
    e.operation = "sync_update".into();
    e.actor = Actor {
        oid: Some(ALICE_OID.into()),
        upn: Some("alice@contoso.com".into()),
        idtyp: Some("user".into()),
        caller_address: Some("10.1.2.3:4455".into()),
        ..Actor::default()
    };
    e.client_request_id = Some("c1".into());
    e.request_body =
        Some(json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}));
    e.decision = Some(Decision::Allow);
    e
}

/// Two operations, oldest first: Alice's allowed sync update, and an app's refused partner
/// delete whose refusal message would be a formula in a spreadsheet.
struct Fixture {
    update: Uuid,
    refused: Uuid,
}

async fn fixture(store: &Store) -> Fixture {
    let f = Fixture {
        update: Uuid::now_v7(),
        refused: Uuid::now_v7(),
    };
    let mut received = event(f.update, EventKind::Received);
    received.before = Some(Snapshot::Present {
        value: json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": false}}),
    });
    store.append(received).await.unwrap();
    let mut completed = event(f.update, EventKind::Completed);
    completed.upstream_status = Some(204);
    completed.request_id = Some("graph-req-1".into());
    completed.after = Some(Snapshot::Present {
        value: json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
    });
    completed.diff =
        Some(json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}]));
    completed.effect = Some(Effect::Applied);
    store.append(completed).await.unwrap();

    let mut denied = event(f.refused, EventKind::Denied);
    denied.method = "DELETE".into();
    denied.canonical_path =
        format!("/v1.0/policies/crosstenantaccesspolicy/partners/{OTHER_PARTNER}");
    denied.partner_tenant_id = OTHER_PARTNER.parse().ok();
    denied.operation = "partner_delete".into();
    denied.actor = Actor {
        oid: Some(APP_SP.into()),
        appid: Some(APP_ID.into()),
        app_displayname: Some("Sync Robot".into()),
        idtyp: Some("app".into()),
        caller_address: Some("[2001:db8::7]:443".into()),
        ..Actor::default()
    };
    denied.request_body = None;
    denied.decision = Some(Decision::Deny);
    denied.detail = Some("=HYPERLINK(\"http://evil\") partner deletes are refused".into());
    store.append(denied).await.unwrap();
    f
}

async fn export(reader: &StoreReader, filter: OperationFilter, format: Format) -> Vec<u8> {
    let mut export = Export::new(reader.clone(), filter, format);
    let mut out = Vec::new();
    while let Some(chunk) = export.next_chunk().await.unwrap() {
        out.extend(chunk);
    }
    out
}

async fn every_format_reads_back_field_by_field(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let f = fixture(&store).await;
    let reader = store.reader().clone();
    let all = OperationFilter::default();

    // jsonl: every event, newest operation first, each exactly as recorded.
    let recorded = reader.list(&Filter::default()).await.unwrap();
    let text = String::from_utf8(export(&reader, all.clone(), Format::Jsonl).await).unwrap();
    let lines: Vec<Recorded> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: Vec<Recorded> = [&recorded[2..], &recorded[..2]].concat();
    assert_eq!(lines, expected);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for chained in ["seq", "prev_hash", "hash", "event_id", "operation_id"] {
        assert!(first.get(chained).is_some(), "{chained} in {first}");
    }
    // Each line re-verifies on its own: without `hash` and `prev_hash` it is the hashed text.
    for line in text.lines() {
        let (hash, rest) = line
            .strip_prefix("{\"hash\":\"")
            .and_then(|l| l.split_once("\",\"prev_hash\":\""))
            .unwrap();
        let (prev_hash, body) = rest.split_once("\",").unwrap();
        use sha2::Digest;
        let mut sha = sha2::Sha256::new();
        sha.update(prev_hash.as_bytes());
        sha.update(format!("{{{body}").as_bytes());
        assert_eq!(hex::encode(sha.finalize()), hash, "{line}");
    }

    // csv, through a real RFC 4180 reader.
    let bytes = export(&reader, all.clone(), Format::Csv).await;
    let mut csv = ::csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, super::csv::HEADER);
    let rows: Vec<::csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let cell = |row: usize, name: &str| -> String {
        let i = header.iter().position(|h| h == name).unwrap();
        rows[row][i].to_owned()
    };
    assert_eq!(cell(0, "operation_id"), f.refused.to_string());
    assert_eq!(cell(0, "decision"), "deny");
    assert_eq!(cell(0, "outcome"), "failure");
    assert_eq!(cell(0, "caller_ip"), "2001:db8::7");
    assert!(
        cell(0, "detail").starts_with("'=HYPERLINK"),
        "a formula is neutralised: {}",
        cell(0, "detail")
    );
    assert_eq!(cell(1, "operation_id"), f.update.to_string());
    assert_eq!(cell(1, "display_name"), "Fabrikam");
    assert_eq!(cell(1, "actor_upn"), "alice@contoso.com");
    assert_eq!(cell(1, "status"), "204");
    assert_eq!(cell(1, "effect"), "applied");
    assert_eq!(cell(1, "events"), "2");
    assert_eq!(cell(1, "last_hash"), recorded[1].hash);
    let diff: Value = serde_json::from_str(&cell(1, "diff")).unwrap();
    assert_eq!(diff[0]["path"], "/userSyncInbound/isSyncAllowed");

    // directory-audit: one JSON document, Graph's collection shape.
    let doc: Value =
        serde_json::from_slice(&export(&reader, all.clone(), Format::DirectoryAudit).await)
            .unwrap();
    let records = doc["value"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let (refused, update) = (&records[0], &records[1]);
    for record in records {
        for string in [
            "id",
            "category",
            "correlationId",
            "result",
            "resultReason",
            "activityDisplayName",
            "activityDateTime",
            "loggedByService",
            "operationType",
        ] {
            assert!(record[string].is_string(), "{string} in {record}");
        }
        for detail in record["additionalDetails"].as_array().unwrap() {
            assert!(
                detail["key"].is_string() && detail["value"].is_string(),
                "{detail}"
            );
        }
        let target = &record["targetResources"][0];
        for field in [
            "id",
            "displayName",
            "type",
            "userPrincipalName",
            "groupType",
            "modifiedProperties",
        ] {
            assert!(target.get(field).is_some(), "{field} in {target}");
        }
    }
    assert_eq!(update["id"], f.update.to_string());
    assert_eq!(update["correlationId"], f.update.to_string());
    assert_eq!(update["category"], "CrossTenantIdentitySyncSettings");
    assert_eq!(
        update["activityDisplayName"],
        "Update a partner cross-tenant identity sync setting"
    );
    assert_eq!(update["operationType"], "Update");
    assert_eq!(update["result"], "success");
    assert_eq!(update["loggedByService"], "syncgate");
    let when =
        chrono::DateTime::parse_from_rfc3339(update["activityDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(when, recorded[0].event.time);
    let user = &update["initiatedBy"]["user"];
    assert_eq!(user["id"], ALICE_OID);
    assert_eq!(user["userPrincipalName"], "alice@contoso.com");
    assert_eq!(user["ipAddress"], "10.1.2.3");
    assert!(user.get("displayName").is_some());
    assert!(update["initiatedBy"]["app"].is_null());
    let target = &update["targetResources"][0];
    assert_eq!(target["id"], PARTNER);
    assert_eq!(target["displayName"], "Fabrikam");
    assert_eq!(target["type"], "crossTenantIdentitySyncPolicyPartner");
    let modified = target["modifiedProperties"].as_array().unwrap();
    assert_eq!(modified.len(), 1, "only the changed property: {modified:?}");
    assert_eq!(modified[0]["displayName"], "userSyncInbound");
    // JSON-encoded strings, as Entra writes them, with the typed values beside them.
    let old: Value = serde_json::from_str(modified[0]["oldValue"].as_str().unwrap()).unwrap();
    let new: Value = serde_json::from_str(modified[0]["newValue"].as_str().unwrap()).unwrap();
    assert_eq!(
        (old.clone(), new.clone()),
        (
            json!({"isSyncAllowed": false}),
            json!({"isSyncAllowed": true})
        )
    );
    let typed = &update["syncgate"]["changes"][0];
    assert_eq!((&typed["old_value"], &typed["new_value"]), (&old, &new));
    assert_eq!(
        update["syncgate"]["after"]["value"]["userSyncInbound"]["isSyncAllowed"],
        true
    );
    assert_eq!(update["syncgate"]["events"][1]["hash"], recorded[1].hash);
    let detail = |record: &Value, key: &str| -> Option<Value> {
        record["additionalDetails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == key)
            .map(|d| d["value"].clone())
    };
    assert_eq!(detail(update, "request-id"), Some(json!("graph-req-1")));
    assert_eq!(detail(update, "activityNamedBy"), None, "Entra's own name");

    assert_eq!(refused["category"], "CrossTenantAccessSettings");
    assert_eq!(
        refused["activityDisplayName"],
        "Delete partner specific cross-tenant access setting"
    );
    assert_eq!(refused["operationType"], "Delete");
    assert_eq!(refused["result"], "failure");
    assert!(
        refused["resultReason"]
            .as_str()
            .unwrap()
            .contains("partner deletes are refused")
    );
    let app = &refused["initiatedBy"]["app"];
    assert_eq!(app["appId"], APP_ID);
    assert_eq!(app["displayName"], "Sync Robot");
    assert_eq!(app["servicePrincipalId"], APP_SP);
    assert_eq!(app["servicePrincipalName"], "Sync Robot");
    assert!(refused["initiatedBy"]["user"].is_null());
    assert_eq!(detail(refused, "ipAddress"), Some(json!("2001:db8::7")));

    // ocsf: one event per line.
    let text = String::from_utf8(export(&reader, all.clone(), Format::Ocsf).await).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["category_uid"], 6);
        let activity = e["activity_id"].as_u64().unwrap();
        assert_eq!(e["type_uid"].as_u64().unwrap(), 6003 * 100 + activity);
        assert!(e["severity_id"].is_u64() && e["status_id"].is_u64() && e["status"].is_string());
        assert!(e["time"].is_i64(), "epoch milliseconds: {}", e["time"]);
        assert_eq!(e["metadata"]["version"], "1.3.0");
        assert_eq!(e["metadata"]["product"]["name"], "syncgate");
        assert_eq!(e["metadata"]["product"]["vendor_name"], "syncgate");
        assert_eq!(
            e["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(e["unmapped"].is_object());
    }
    let (refused, update) = (&events[0], &events[1]);
    assert_eq!(update["activity_id"], 3);
    assert_eq!(update["time"], recorded[0].event.time.timestamp_millis());
    assert_eq!(
        (&update["status_id"], &update["status"]),
        (&json!(1), &json!("Success"))
    );
    assert_eq!(update["severity_id"], 1);
    assert_eq!(update["actor"]["user"]["uid"], ALICE_OID);
    assert_eq!(update["actor"]["user"]["name"], "alice@contoso.com");
    assert_eq!(update["api"]["operation"], "sync_update");
    assert_eq!(update["api"]["request"]["uid"], f.update.to_string());
    assert_eq!(update["api"]["response"]["code"], 204);
    assert_eq!(update["src_endpoint"]["ip"], "10.1.2.3");
    assert_eq!(update["resources"][0]["uid"], PARTNER);
    assert_eq!(update["unmapped"]["effect"], "applied");
    assert_eq!(refused["activity_id"], 4);
    assert_eq!(refused["type_uid"], 600304);
    assert_eq!(
        (&refused["status_id"], &refused["status"]),
        (&json!(2), &json!("Failure"))
    );
    assert_eq!(refused["severity_id"], 3);
    assert_eq!(refused["actor"]["app_uid"], APP_ID);
    assert_eq!(refused["actor"]["app_name"], "Sync Robot");
    assert_eq!(refused["src_endpoint"]["ip"], "2001:db8::7");

    // Filters select as the operations listing does.
    let denied_only = OperationFilter {
        decision: Some(Decision::Deny),
        ..OperationFilter::default()
    };
    for format in Format::ALL {
        let text = String::from_utf8(export(&reader, denied_only.clone(), format).await).unwrap();
        assert!(text.contains(&f.refused.to_string()), "{format:?}: {text}");
        assert!(!text.contains(&f.update.to_string()), "{format:?}: {text}");
    }
    store.close().await;
}

mod every_format {
    use super::*;

    #[tokio::test]
    async fn reads_back_field_by_field_on_sqlite() {
        every_format_reads_back_field_by_field(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn reads_back_field_by_field_on_postgres() {
        every_format_reads_back_field_by_field(Backend::Postgres).await;
    }
}

#[tokio::test]
async fn an_export_spans_many_pages_with_every_operation_once_newest_first() {
    let log = TestLog::new(Backend::Sqlite).await;
    let store = log.open().await;
    let operations = super::PAGE_OPERATIONS as usize * 2 + 7;
    let mut appends = tokio::task::JoinSet::new();
    for _ in 0..operations {
        let store = store.clone();
        appends.spawn(async move {
            store
                .append(event(Uuid::now_v7(), EventKind::Received))
                .await
        });
    }
    while let Some(appended) = appends.join_next().await {
        appended.unwrap().unwrap();
    }
    let reader = store.reader().clone();
    let text = String::from_utf8(export(&reader, OperationFilter::default(), Format::Jsonl).await)
        .unwrap();
    let seqs: Vec<i64> = text
        .lines()
        .map(|l| serde_json::from_str::<Recorded>(l).unwrap().seq)
        .collect();
    let expected: Vec<i64> = (1..=operations as i64).rev().collect();
    assert_eq!(seqs, expected);
    let doc: Value = serde_json::from_slice(
        &export(&reader, OperationFilter::default(), Format::DirectoryAudit).await,
    )
    .unwrap();
    assert_eq!(doc["value"].as_array().unwrap().len(), operations);
    store.close().await;
}

#[test]
fn csv_cells_are_quoted_when_needed_and_formulas_neutralised() {
    use super::csv::csv_field;
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    assert_eq!(csv_field(""), "");
    for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
        let cell = csv_field(formula);
        assert!(
            cell.starts_with("'") || cell.starts_with("\"'"),
            "{formula:?} → {cell:?}"
        );
    }
    assert_eq!(csv_field("=a,b"), "\"'=a,b\"");
}

#[test]
fn each_format_has_its_content_type_and_file_name() {
    for format in Format::ALL {
        assert_eq!(Format::parse(format.as_str()), Some(format));
        assert!(format.file_name().starts_with("syncgate-audit."));
    }
    assert_eq!(Format::Csv.content_type(), "text/csv; charset=utf-8");
    assert_eq!(Format::Jsonl.content_type(), "application/x-ndjson");
    assert_eq!(Format::DirectoryAudit.content_type(), "application/json");
}

/// The export rate on a seeded SQLite log, per format (a measurement, not a check):
/// `cargo test --release --lib export_rate -- --ignored --nocapture`; the log's size comes from
/// `SYNCGATE_EXPORT_OPERATIONS` (default 50,000 operations of two events).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement; run it in release"]
async fn export_rate() {
    let operations: usize = std::env::var("SYNCGATE_EXPORT_OPERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let log = TestLog::new(Backend::Sqlite).await;
    let store = log.open().await;
    let seeding = std::time::Instant::now();
    let mut appends = tokio::task::JoinSet::new();
    for chunk in 0..64 {
        let store = store.clone();
        appends.spawn(async move {
            for _ in (chunk..operations).step_by(64) {
                let op = Uuid::now_v7();
                store.append(event(op, EventKind::Received)).await.unwrap();
                let mut done = event(op, EventKind::Completed);
                done.upstream_status = Some(204);
                done.after = Some(Snapshot::Present {
                    value: json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
                });
                store.append(done).await.unwrap();
            }
        });
    }
    while let Some(done) = appends.join_next().await {
        done.unwrap();
    }
    println!(
        "seeded {} events in {:?}",
        operations * 2,
        seeding.elapsed()
    );
    let reader = store.reader().clone();
    for format in Format::ALL {
        let started = std::time::Instant::now();
        let mut export = Export::new(reader.clone(), OperationFilter::default(), format);
        let mut bytes = 0;
        while let Some(chunk) = export.next_chunk().await.unwrap() {
            bytes += chunk.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:>16}: {} events in {secs:.2} s = {:.0} events/s, {} MB",
            format.as_str(),
            export.events,
            export.events as f64 / secs,
            bytes / 1_000_000
        );
    }
    store.close().await;
}

/// A stored event edited to hold a raw line break would split a jsonl record in two: the
/// export refuses it instead of copying it.
#[tokio::test]
async fn a_jsonl_export_refuses_a_stored_event_that_is_not_canonical_json() {
    let log = TestLog::new(Backend::Sqlite).await;
    let store = log.open().await;
    fixture(&store).await;
    let reader = store.reader().clone();
    log.tamper(
        "UPDATE audit_events SET event = replace(event, '\"seq\":', '\n\"seq\":') WHERE seq = 2",
    )
    .await;
    let mut export = Export::new(reader, OperationFilter::default(), Format::Jsonl);
    let error = loop {
        match export.next_chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the export copied an event with a line break"),
            Err(e) => break e,
        }
    };
    assert!(error.to_string().contains("seq 2"), "{error}");
    store.close().await;
}
