//! Logs written today must still verify: `tests/fixtures/log-v1.jsonl` is a log written by the
//! store before the audit event's fields were typed (issue 8), one stored row a line
//! (`seq`, `prev_hash`, `hash`, and `event`, the canonical JSON text exactly as the database holds
//! it). It covers every event kind and every field shape the pipeline writes: received,
//! completed with diff, effect, rule results, rules version and partner state, denied by a rule,
//! denied by a refusal with its bounded raw request (text and base64 body prefixes), an
//! `unknown` operation, a `refusal_summary`, drift, recovered, read, events with and without a
//! state path.
//!
//! The test loads those rows into a fresh SQLite log and has the store verify the chain, then
//! parses every event into the typed [`Event`] and seals it again: the canonical bytes and the
//! hash must come out identical. Any change to `Event` that would alter what is hashed fails here.
//!
//! `write_log_v1_fixture` (ignored) is the program that wrote the fixture; it is kept to show how
//! the fixture was made, not to be run again: the point of the fixture is that it was written by
//! the old code.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Connection;

use super::StoreLocation;
use super::chain::{Columns, Head, Prepared, StoredRow};
use super::{Filter, Store, StoreOptions, StoreReader};
use crate::audit::Event;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log-v1.jsonl");

/// One stored row of the fixture.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    seq: i64,
    prev_hash: String,
    hash: String,
    /// The canonical JSON text as stored in `audit_events.event`.
    event: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/log-v1.jsonl");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a fixture row"))
        .collect()
}

/// Insert the rows as the store's append would have, columns derived from the event text.
async fn load(path: &Path, rows: &[Row]) {
    Store::open(path, StoreOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = super::sqlite::raw_connection(path).await;
    for row in rows {
        let Value::Object(doc) = serde_json::from_str::<Value>(&row.event).unwrap() else {
            panic!("seq {} is not an object", row.seq)
        };
        let c = Columns::from_json(&doc).unwrap();
        let stored = StoredRow {
            seq: row.seq,
            columns: c,
            event: row.event.clone(),
            prev_hash: row.prev_hash.clone(),
            hash: row.hash.clone(),
        };
        super::sqlite::insert_row(&mut conn, &stored).await.unwrap();
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_log_written_before_events_were_typed_still_verifies_and_reads() {
    let rows = rows();
    assert!(rows.len() >= 15, "the fixture covers every shape");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    load(&path, &rows).await;

    let reader = StoreReader::open(
        &StoreLocation::Sqlite(path.to_owned()),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let report = reader.verify().await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(report.events, rows.len() as u64);
    assert_eq!(
        report.head.as_deref(),
        Some(rows.last().unwrap().hash.as_str())
    );
    let listed = reader.list(&Filter::default()).await.unwrap();
    assert_eq!(listed.len(), rows.len());
    reader.close().await;

    // Read into the typed event and sealed again: the same bytes, the same hash.
    for (row, recorded) in rows.iter().zip(&listed) {
        let Value::Object(mut doc) = serde_json::from_str::<Value>(&row.event).unwrap() else {
            unreachable!()
        };
        doc.remove("seq");
        let event: Event = serde_json::from_value(Value::Object(doc)).unwrap();
        assert_eq!(&event, &recorded.event, "seq {}", row.seq);
        let mut head = Head {
            seq: row.seq - 1,
            hash: row.prev_hash.clone(),
        };
        let sealed = Prepared::new(event).unwrap().seal(&mut head);
        assert_eq!(sealed.canonical, row.event, "seq {} re-serialised", row.seq);
        assert_eq!(sealed.hash, row.hash, "seq {} re-hashed", row.seq);
        assert_eq!((sealed.seq, &sealed.prev_hash), (row.seq, &row.prev_hash));
    }
}

/// How the fixture was written (by the code before issue 8): run with
/// `cargo test --lib write_log_v1_fixture -- --ignored`, which overwrites the fixture.
#[tokio::test]
#[ignore = "writes tests/fixtures/log-v1.jsonl; the fixture must stay as the old code wrote it"]
async fn write_log_v1_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    for event in writer::events() {
        store.append(event).await.unwrap();
    }
    store.close().await;
    let mut conn = super::sqlite::raw_connection(&path).await;
    let stored: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT seq, prev_hash, hash, event FROM audit_events ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let mut out = String::new();
    for (seq, prev_hash, hash, event) in stored {
        let row = Row {
            seq,
            prev_hash,
            hash,
            event,
        };
        out.push_str(&serde_json::to_string(&row).unwrap());
        out.push('\n');
    }
    std::fs::write(FIXTURE, out).unwrap();
}

/// The events of the fixture, built as the pipeline builds them.
mod writer {
    use chrono::{DateTime, Duration, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use crate::audit::{
        Actor, BodyDigest, Decision, Effect, Event, EventKind, REFUSAL_SUMMARY, RawRequest,
        RefusalSummary, Snapshot,
    };
    use crate::rules::{Action, Mode, RuleResult};

    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
    const OTHER: &str = "4a2f0e6b-7c1d-4e8a-9b3f-0d5e6f7a8b9c";

    fn at(n: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::milliseconds(n * 1500)
    }

    fn alice() -> Actor {
        Actor {
            oid: Some("11111111-1111-4111-8111-111111111111".into()),
            upn: Some("Alice@Contoso.com".into()),
            appid: Some("22222222-2222-4222-8222-222222222222".into()),
            app_displayname: Some("Graph Explorer".into()),
            tid: Some("33333333-3333-4333-8333-333333333333".into()),
            idtyp: Some("user".into()),
            roles: Vec::new(),
            scp: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
            caller_address: Some("192.0.2.10:51234".into()),
            client_cert_subject: None,
            token_hmac: Some("ab".repeat(32)),
            proxy_user: None,
        }
    }

    fn app() -> Actor {
        Actor {
            appid: Some("44444444-4444-4444-8444-444444444444".into()),
            app_displayname: Some("sync-bot".into()),
            tid: Some("33333333-3333-4333-8333-333333333333".into()),
            idtyp: Some("app".into()),
            roles: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
            caller_address: Some("[2001:db8::7]:443".into()),
            client_cert_subject: Some("CN=sync-bot,O=Contoso".into()),
            token_hmac: Some("cd".repeat(32)),
            ..Actor::default()
        }
    }

    fn sync_path(v: &str, partner: &str) -> String {
        format!("/{v}/policies/crossTenantAccessPolicy/partners/{partner}/identitySynchronization")
    }

    fn canonical_sync(v: &str, partner: &str) -> String {
        format!("/{v}/policies/crosstenantaccesspolicy/partners/{partner}/identitysynchronization")
    }

    /// Like `proxy::govern::Audit::event`: the common fields of a governed operation's event.
    fn governed(op: Uuid, kind: EventKind, n: i64, operation: &str, state_path: bool) -> Event {
        let mut e = Event::new(op, kind);
        e.time = at(n);
        e.method = "PATCH".into();
        e.canonical_path = canonical_sync("v1.0", PARTNER);
        e.api_version = "v1.0".into();
        e.partner_tenant_id = PARTNER.parse().ok();
        e.operation = operation.into();
        e.actor = alice();
        e.client_request_id = Some("7f1c0b7e-client-request".into());
        if state_path {
            e.state_path = Some(sync_path("v1.0", PARTNER));
        }
        e
    }

    fn result(
        rule: &str,
        kind: &str,
        mode: Mode,
        action: Action,
        fail: Option<&str>,
    ) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            kind: kind.into(),
            mode,
            action,
            passed: fail.is_none(),
            message: fail.map(|m| format!("rule '{rule}': {m}")),
            approval_policy: None,
        }
    }

    fn results(list: &[RuleResult]) -> Vec<crate::audit::RuleOutcome> {
        list.iter().map(RuleResult::outcome).collect()
    }

    fn sync(inbound: bool) -> serde_json::Value {
        json!({"tenantId": PARTNER, "displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": inbound}})
    }

    pub(super) fn events() -> Vec<Event> {
        let mut out = Vec::new();
        let rules_version = "5f0c".repeat(16);
        let passing = results(&[
            result(
                "sync-allowlist",
                "partner_allowlist",
                Mode::Enforce,
                Action::Deny,
                None,
            ),
            result(
                "office-hours",
                "change_window",
                Mode::Warn,
                Action::Deny,
                Some("changes are allowed 08:00-18:00 Europe/Berlin"),
            ),
            result(
                "rego-consent",
                "rego",
                Mode::Shadow,
                Action::RequireApproval,
                None,
            ),
        ]);

        // 1. An allowed change: drift found first, then received, then completed.
        let op = Uuid::now_v7();
        let mut drift = governed(op, EventKind::Drift, 0, "sync_update", true);
        drift.before = Some(Snapshot::Present { value: sync(false) });
        drift.after = Some(Snapshot::Present { value: sync(true) });
        drift.diff = Some(
            json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}]),
        );
        drift.detail = Some(
            "the state changed since syncgate last recorded it (a change made around the proxy)"
                .into(),
        );
        out.push(drift);
        let mut received = governed(op, EventKind::Received, 1, "sync_update", true);
        received.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": false}}));
        received.before = Some(Snapshot::Present { value: sync(true) });
        received.decision = Some(Decision::Allow);
        received.rule_results = passing.clone();
        received.rules_version = Some(rules_version.clone());
        received.partner_state = Some(
            json!({"tenantId": PARTNER, "inboundTrust": null, "automaticUserConsentSettings": {"inboundAllowed": true, "outboundAllowed": false}}),
        );
        out.push(received.clone());
        let mut completed = received;
        completed.event_id = Uuid::now_v7();
        completed.kind = EventKind::Completed;
        completed.time = at(2);
        completed.after = Some(Snapshot::Present { value: sync(false) });
        completed.diff = Some(
            json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": false}]),
        );
        completed.request_id = Some("0a8f6e1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b".into());
        completed.upstream_status = Some(204);
        completed.latency_ms = Some(183);
        completed.upstream_latency_ms = Some(151);
        completed.effect = Some(Effect::Applied);
        out.push(completed);

        // 2. Other effects and snapshots: a create on beta (absent before), a delete whose
        // after-state could not be read, a change the upstream ignored.
        for (n, (method, operation, effect, before, after, status)) in [
            (
                "PUT",
                "sync_create",
                Effect::Diverged,
                Snapshot::Absent,
                Snapshot::Present {
                    value: json!({"userSyncInbound": {"isSyncAllowed": "weird"}, "n": 1.5e300}),
                },
                Some(201),
            ),
            (
                "DELETE",
                "sync_delete",
                Effect::Unknown,
                Snapshot::Present { value: sync(true) },
                Snapshot::Unreadable {
                    status: Some(503),
                    error: "ServiceUnavailable: try later".into(),
                },
                Some(204),
            ),
            (
                "PATCH",
                "sync_update",
                Effect::Ignored,
                Snapshot::Present { value: sync(true) },
                Snapshot::Present { value: sync(true) },
                Some(204),
            ),
            (
                "PATCH",
                "sync_update",
                Effect::NotApplied,
                Snapshot::Present { value: sync(true) },
                Snapshot::Present { value: sync(true) },
                Some(400),
            ),
            (
                "PATCH",
                "sync_update",
                Effect::AppliedDespiteError,
                Snapshot::Present { value: sync(true) },
                Snapshot::Present { value: sync(false) },
                None,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let n = 3 + n as i64 * 2;
            let op = Uuid::now_v7();
            let mut e = governed(op, EventKind::Received, n, operation, true);
            e.method = method.into();
            e.api_version = "beta".into();
            e.canonical_path = canonical_sync("beta", OTHER);
            e.state_path = Some(sync_path("beta", OTHER));
            e.partner_tenant_id = OTHER.parse().ok();
            e.actor = app();
            e.client_request_id = None;
            e.before = Some(before);
            e.decision = Some(Decision::Allow);
            if method != "DELETE" {
                e.request_body =
                    Some(json!({"userSyncInbound": {"isSyncAllowed": false}, "note": "é ✓ \u{1}"}));
            }
            out.push(e.clone());
            let mut c = e;
            c.event_id = Uuid::now_v7();
            c.kind = EventKind::Completed;
            c.time = at(n + 1);
            c.after = Some(after);
            c.upstream_status = status;
            c.effect = Some(effect);
            c.latency_ms = Some(40);
            c.upstream_latency_ms = status.map(|_| 31);
            if status.is_none() {
                c.detail = Some("the upstream did not answer within 30s".into());
            }
            out.push(c);
        }

        // 3. A partner create: received before the partner's state path was known (no
        // state_path), then a template reset with its own path.
        let op = Uuid::now_v7();
        let mut e = governed(op, EventKind::Received, 20, "partner_create", false);
        e.method = "POST".into();
        e.canonical_path = "/v1.0/policies/crosstenantaccesspolicy/partners".into();
        e.request_body = Some(json!({"tenantId": OTHER}));
        e.decision = Some(Decision::Allow);
        out.push(e);
        let op = Uuid::now_v7();
        let mut e = governed(op, EventKind::Received, 21, "template_reset", true);
        e.method = "POST".into();
        e.partner_tenant_id = None;
        e.canonical_path = "/v1.0/policies/crosstenantaccesspolicy/templates/multitenantorganizationidentitysynchronization/resettodefaultsettings".into();
        e.state_path = Some("/v1.0/policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization".into());
        e.decision = Some(Decision::Allow);
        out.push(e);

        // 4. Denied by a rule: the parsed body, the before-state, every result, the version.
        let op = Uuid::now_v7();
        let mut e = governed(op, EventKind::Denied, 22, "sync_update", true);
        e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
        e.before = Some(Snapshot::Present { value: sync(false) });
        e.decision = Some(Decision::Deny);
        let message = format!("partner {PARTNER} is not on the allow-list");
        e.detail = Some(format!("rule 'sync-allowlist': {message}"));
        e.rule_results = results(&[
            result(
                "sync-allowlist",
                "partner_allowlist",
                Mode::Enforce,
                Action::Deny,
                Some(&message),
            ),
            result(
                "office-hours",
                "change_window",
                Mode::Warn,
                Action::Deny,
                None,
            ),
        ]);
        e.rules_version = Some(rules_version);
        e.partner_state = Some(json!(null));
        out.push(e);

        // 5. Refused once governed (the read was refused): bounded raw request, binary body
        // (base64 prefix), a target cut at its bound.
        let op = Uuid::now_v7();
        let mut e = governed(op, EventKind::Denied, 23, "sync_update", true);
        e.before = Some(Snapshot::Unreadable {
            status: Some(403),
            error: "Authorization_RequestDenied: Insufficient privileges".into(),
        });
        e.decision = Some(Decision::Deny);
        e.detail = Some("Authorization_RequestDenied: Insufficient privileges".into());
        let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let long_target = format!("{}?x={}", sync_path("v1.0", PARTNER), "a".repeat(3000));
        e.raw_request = Some(RawRequest::new(&long_target, Some(&binary)));
        e.bound_for_refusal();
        out.push(e);

        // 6. Refused before classification: operation `unknown`, no version, no state path, a
        // text body prefix, an empty body, a body never read.
        for (n, (method, target, body)) in [
            (
                "PATCH",
                "/v1.0/policies/crossTenantAccessPolicy/partners/not-a-guid",
                Some(&b"{\"a\":\"\\u0041\",\n\t\"b\":1}"[..]),
            ),
            ("POST", "/v1.0/$batch", Some(&b""[..])),
            ("GET", "/v1.0/policies/%2e%2e/crossTenantAccessPolicy", None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
            e.time = at(24 + n as i64);
            e.actor = alice();
            e.method = method.into();
            e.canonical_path = if n == 2 {
                String::new()
            } else {
                target.to_lowercase()
            };
            e.operation = "unknown".into();
            e.raw_request = Some(RawRequest::new(target, body));
            e.decision = Some(Decision::Deny);
            e.detail = Some("BadRequest: Invalid request".into());
            e.bound_for_refusal();
            out.push(e);
        }
        // A refusal of a governed kind without a state path (the legacy policy: always refused).
        let mut e = governed(
            Uuid::now_v7(),
            EventKind::Denied,
            27,
            "legacy_sync_policy_write",
            false,
        );
        e.canonical_path = "/beta/policies/crosstenantidentitysyncpolicy".into();
        e.api_version = "beta".into();
        e.partner_tenant_id = None;
        e.raw_request = Some(RawRequest {
            body: Some(BodyDigest::new(b"{}")),
            ..RawRequest::new("/beta/policies/crossTenantIdentitySyncPolicy", None)
        });
        e.decision = Some(Decision::Deny);
        e.detail = Some("Forbidden: the legacy sync policy is read-only through syncgate".into());
        e.bound_for_refusal();
        out.push(e);

        // 7. A refusal summary, as `proxy::refusals` writes one.
        let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
        e.time = at(30);
        e.method = "PATCH".into();
        e.canonical_path = canonical_sync("v1.0", PARTNER);
        e.api_version = "v1.0".into();
        e.actor = Actor {
            roles: Vec::new(),
            scp: Vec::new(),
            ..alice()
        };
        e.decision = Some(Decision::Deny);
        e.operation = REFUSAL_SUMMARY;
        e.raw_request = Some(RawRequest::new(&sync_path("v1.0", PARTNER), None));
        e.detail = Some("1042 refusals from 192.0.2.10 counted, not recorded one by one".into());
        e.refusal_summary = Some(RefusalSummary {
            client: "2001:db8::/64".into(),
            count: 1042,
            first: at(25),
            last: at(30),
            codes: [
                ("BadRequest".to_owned(), 1000),
                ("Forbidden".to_owned(), 42),
            ]
            .into(),
            methods: [("PATCH".to_owned(), 1040), ("other".to_owned(), 2)].into(),
        });
        out.push(e);

        // 8. Recovered at start-up, as `proxy::recovery` writes it.
        let op = Uuid::now_v7();
        let mut e = governed(op, EventKind::Received, 31, "partner_delete", true);
        e.method = "DELETE".into();
        e.canonical_path = format!("/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}");
        e.state_path = Some(format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}?$expand=identitySynchronization"
        ));
        e.before = Some(Snapshot::Present {
            value: json!({"tenantId": PARTNER}),
        });
        e.decision = Some(Decision::Allow);
        out.push(e.clone());
        let mut r = e;
        r.event_id = Uuid::now_v7();
        r.kind = EventKind::Recovered;
        r.time = at(40);
        r.actor = Actor::default();
        r.client_request_id = None;
        r.decision = None;
        r.after = Some(Snapshot::Absent);
        r.effect = Some(Effect::AppliedDespiteError);
        r.detail = Some("found at start-up without a completed event".into());
        out.push(r);

        // 9. A read, when reads are recorded (no state path).
        let mut e = governed(Uuid::now_v7(), EventKind::Read, 41, "sync_read", false);
        e.method = "GET".into();
        e.upstream_status = Some(200);
        e.latency_ms = Some(12);
        out.push(e);
        out
    }
}
