//! Tampering: the append-only triggers refuse ordinary edits, and `verify` names the first row
//! of a log edited by someone who got past them (an attacker with direct write access: the
//! triggers dropped on SQLite, `session_replication_role = replica` on PostgreSQL).

use super::super::chain;
use super::*;

async fn triggers_refuse_update_and_delete(backend: Backend) {
    let log = five_event_log(backend).await;
    for statement in [
        "UPDATE audit_events SET actor_upn = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 5",
    ] {
        let refused = log.try_sql(statement).await.expect_err(statement);
        assert!(refused.contains("append-only"), "{statement}: {refused}");
    }
    assert_eq!(assert_whole_chain(&log, &[]).await.events, 5);
}
on_both_backends!(triggers_refuse_update_and_delete);

async fn verify_names_an_event_whose_json_was_edited(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper(
        "UPDATE audit_events SET event = replace(event, '\"isSyncAllowed\":true', \
         '\"isSyncAllowed\":false') WHERE seq = 3",
    )
    .await;
    let report = verify(&log).await;
    let broken = report.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("hash"), "{}", broken.reason);
    assert_eq!(report.events, 2);
}
on_both_backends!(verify_names_an_event_whose_json_was_edited);

async fn verify_names_an_event_whose_indexed_column_alone_was_edited(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper("UPDATE audit_events SET actor_upn = 'someone@else.com' WHERE seq = 4")
        .await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!(broken.seq, 4);
    assert!(broken.reason.contains("actor_upn"), "{}", broken.reason);
}
on_both_backends!(verify_names_an_event_whose_indexed_column_alone_was_edited);

/// A PostgreSQL column holds only values of its declared type, so the closest honest equivalent
/// of SQLite's text in an integer column is an attacker who also changes the column's type (DDL
/// on a database they control): the value read back is then not an integer either.
fn wrong_type_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "UPDATE audit_events SET upstream_status = 'two hundred' WHERE seq = 2",
        Backend::Postgres => {
            "ALTER TABLE audit_events ALTER COLUMN upstream_status TYPE TEXT; \
             UPDATE audit_events SET upstream_status = 'two hundred' WHERE seq = 2"
        }
    }
}

async fn verify_names_a_column_changed_to_another_type(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper(wrong_type_sql(backend)).await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!(broken.seq, 2);
    assert!(
        broken.reason.contains("upstream_status") && broken.reason.contains("wrong type"),
        "{}",
        broken.reason
    );
}
on_both_backends!(verify_names_a_column_changed_to_another_type);

/// On PostgreSQL the nearest thing to a wrong type in one row: a NULL in a column that must hold
/// text (the attacker dropped the NOT NULL first). SQLite cannot drop a NOT NULL in place.
#[tokio::test]
async fn verify_names_a_null_where_text_must_be_on_postgres() {
    let log = five_event_log(Backend::Postgres).await;
    log.tamper(
        "ALTER TABLE audit_events ALTER COLUMN kind DROP NOT NULL; \
         UPDATE audit_events SET kind = NULL WHERE seq = 3",
    )
    .await;
    let report = verify(&log).await;
    let broken = report.first_broken.unwrap();
    assert_eq!((broken.seq, report.events), (3, 2));
    assert!(broken.reason.contains("kind"), "{}", broken.reason);
}

async fn verify_detects_a_deleted_event(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper("DELETE FROM audit_events WHERE seq = 2").await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("missing"), "{}", broken.reason);
}
on_both_backends!(verify_detects_a_deleted_event);

async fn verify_detects_swapped_hashes(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper(
        "UPDATE audit_events SET hash = CASE seq \
           WHEN 2 THEN (SELECT hash FROM audit_events WHERE seq = 3) \
           ELSE (SELECT hash FROM audit_events WHERE seq = 2) END \
         WHERE seq IN (2, 3)",
    )
    .await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!(broken.seq, 2);
}
on_both_backends!(verify_detects_swapped_hashes);

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn verify_detects_a_forged_event_with_a_recomputed_hash(backend: Backend) {
    // Rewriting one event and its own hash is caught by the next event's prev_hash.
    let log = five_event_log(backend).await;
    let reader = log.reader().await;
    let row = reader.page(1).await.unwrap().remove(0).unwrap();
    reader.close().await;
    assert_eq!(row.seq, 2);
    let forged = row.event.replace("Alice@Contoso.com", "Bob@Contoso.com");
    assert_ne!(forged, row.event);
    let forged_hash = chain::link_hash(&row.prev_hash, &forged);
    log.tamper(&format!(
        "UPDATE audit_events SET event = {}, hash = {}, actor_upn = 'Bob@Contoso.com' \
         WHERE seq = 2",
        literal(&forged),
        literal(&forged_hash)
    ))
    .await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("prev_hash"), "{}", broken.reason);
}
on_both_backends!(verify_detects_a_forged_event_with_a_recomputed_hash);

async fn verify_sees_a_row_slipped_in_below_the_first_seq(backend: Backend) {
    let log = five_event_log(backend).await;
    log.tamper(
        "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, event, prev_hash, hash) \
         SELECT 0, 'forged', operation_id, kind, time, event, prev_hash, hash \
         FROM audit_events WHERE seq = 1",
    )
    .await;
    let broken = verify(&log).await.first_broken.unwrap();
    assert_eq!((broken.seq, broken.event_id.as_str()), (0, "forged"));
}
on_both_backends!(verify_sees_a_row_slipped_in_below_the_first_seq);

/// Canonical JSON and hash of a `denied` event as written by syncgate before `raw_request` and
/// `refusal_summary` existed (captured from that version's code).
const OLD_DENIED_EVENT: &str = r#"{"actor":{"app_displayname":null,"appid":null,"caller_address":null,"client_cert_subject":null,"idtyp":null,"oid":null,"roles":[],"scp":[],"tid":null,"token_hmac":null,"upn":null},"after":null,"api_version":"","approval_id":null,"before":null,"canonical_path":"/v1.0/policies/crosstenantaccesspolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitysynchronization","client_request_id":null,"decision":"deny","detail":"BadRequest: no","diff":null,"effect":null,"event_id":"01890a5d-ac96-774b-bcce-b302099a8058","kind":"denied","latency_ms":null,"method":"PATCH","operation":"sync_update","operation_id":"01890a5d-ac96-774b-bcce-b302099a8057","partner_state":null,"partner_tenant_id":null,"request_body":{"displayName":"x"},"request_id":null,"rule_results":[],"rules_version":null,"seq":1,"state_path":null,"time":"2025-03-04T05:06:07.123456Z","upstream_latency_ms":null,"upstream_status":null}"#;
const OLD_DENIED_HASH: &str = "6174d80f8965e783363380ecbbfb24e0f6a25b0e64911047f3152811f2bf1699";

#[test]
fn an_event_built_today_seals_like_one_written_before_the_refusal_fields_existed() {
    let mut e = Event::new(
        Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap(),
        EventKind::Denied,
    );
    e.event_id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8058").unwrap();
    e.time = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456Z")
        .unwrap()
        .with_timezone(&Utc);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER_A}/identitysynchronization"
    );
    e.operation = "sync_update".into();
    e.request_body = Some(json!({"displayName": "x"}));
    e.decision = Some(Decision::Deny);
    e.detail = Some("BadRequest: no".into());
    let sealed = chain::Prepared::new(e)
        .unwrap()
        .seal(&mut chain::Head::empty());
    assert_eq!(sealed.canonical, OLD_DENIED_EVENT);
    assert_eq!(sealed.hash, OLD_DENIED_HASH);
}

async fn a_log_holding_an_event_from_before_the_refusal_fields_verifies_and_grows(
    backend: Backend,
) {
    let log = TestLog::new(backend).await;
    log.open().await.close().await;
    log.tamper(&format!(
        "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, operation, decision, \
         event, prev_hash, hash) VALUES (1, '01890a5d-ac96-774b-bcce-b302099a8058', \
         '01890a5d-ac96-774b-bcce-b302099a8057', 'denied', '2025-03-04T05:06:07.123456Z', \
         'sync_update', 'deny', {}, {}, {})",
        literal(OLD_DENIED_EVENT),
        literal(chain::GENESIS),
        literal(OLD_DENIED_HASH)
    ))
    .await;
    let store = log.open().await;
    let mut refusal = sample(Uuid::now_v7(), EventKind::Denied, 1);
    refusal.request_body = None;
    refusal.raw_request = Some(crate::audit::RawRequest::new("/v1.0/x", Some(b"{}")));
    store.append(refusal).await.unwrap();
    let events = store.list(&Filter::default()).await.unwrap();
    assert_eq!(events[0].event.raw_request, None);
    assert_eq!(
        events[0].event.request_body,
        Some(json!({"displayName": "x"}))
    );
    assert_eq!(
        events[1].event.raw_request.as_ref().unwrap().target,
        "/v1.0/x"
    );
    store.close().await;
    assert_eq!(assert_whole_chain(&log, &[]).await.events, 2);
}
on_both_backends!(a_log_holding_an_event_from_before_the_refusal_fields_verifies_and_grows);

/// The operations index carries no hash (it is updated in place), so anyone who can write the
/// database can edit it without touching a trigger. Verify re-folds every operation from the
/// verified events and names the first row that disagrees: an edit meant to hide a change from
/// the auditors' queries is caught like an edit of the log itself. `audit reindex` then folds
/// the events again into exactly the index the writer kept.
async fn verify_names_an_operations_index_that_no_longer_agrees_with_the_events(backend: Backend) {
    let untouched = five_event_log(backend).await;
    let report = verify(&untouched).await;
    assert!(report.ok(), "{report:?}");
    for (statement, first_seq, reason) in [
        (
            "UPDATE operation_index SET decision = 'deny' WHERE first_seq = 3",
            3,
            "decision",
        ),
        (
            "UPDATE operation_index SET partner_tenant_id = \
             '0b1c2d3e-0000-4000-8000-000000000000' WHERE first_seq = 2",
            2,
            "partner",
        ),
        (
            "UPDATE operation_index SET display_name = 'x', display_name_folded = 'x' \
             WHERE first_seq = 5",
            5,
            "display_name",
        ),
        (
            "DELETE FROM operation_index WHERE first_seq = 4",
            4,
            "operation_actors has a stray row",
        ),
        (
            "DELETE FROM operation_actors WHERE first_seq = 1",
            1,
            "operation_actors lacks",
        ),
        (
            "INSERT INTO operation_actors (actor, first_seq) VALUES ('mallory', 99)",
            0,
            "operation_actors holds 16 rows",
        ),
        (
            "DELETE FROM operation_actors WHERE first_seq = 5; \
             DELETE FROM operation_index WHERE first_seq = 5",
            0,
            "the log holds 5 operations, the index 4",
        ),
        (
            "UPDATE operation_index_state SET through_seq = 4",
            0,
            "through seq 4",
        ),
    ] {
        let log = five_event_log(backend).await;
        let kept = index_rows(&log).await;
        log.try_sql(statement).await.unwrap();
        let report = verify(&log).await;
        assert_eq!(
            report.first_broken, None,
            "{statement}: the chain is intact"
        );
        assert!(!report.ok(), "{statement}");
        let mismatch = report.operations_index.expect(statement);
        assert_eq!(mismatch.first_seq, first_seq, "{statement}: {mismatch:?}");
        assert!(
            mismatch.reason.contains(reason),
            "{statement}: {mismatch:?}"
        );
        let through = Store::reindex(&log.location, log.options()).await.unwrap();
        assert_eq!(through, 5, "{statement}");
        let report = verify(&log).await;
        assert!(report.ok(), "{statement}: after reindex {report:?}");
        assert_eq!(index_rows(&log).await, kept, "{statement}");
    }
}
on_both_backends!(verify_names_an_operations_index_that_no_longer_agrees_with_the_events);

/// Every operation the index holds, as the operations query returns them (the whole summary),
/// and the actors it is found under.
async fn index_rows(log: &TestLog) -> (Vec<OperationSummary>, Vec<Vec<OperationSummary>>) {
    let reader = log.reader().await;
    let all = reader
        .operations(&OperationFilter::default(), None, 1000)
        .await
        .unwrap()
        .operations;
    let mut by_actor = Vec::new();
    for actor in ["alice@contoso.com", "mallory"] {
        let filter = OperationFilter {
            actor: Some(actor.into()),
            ..OperationFilter::default()
        };
        by_actor.push(
            reader
                .operations(&filter, None, 1000)
                .await
                .unwrap()
                .operations,
        );
    }
    reader.close().await;
    (all, by_actor)
}

/// An older log read as it is (no index yet: a copy handed to an auditor) verifies on its chain
/// alone; the index is checked only where it exists.
async fn a_log_without_the_index_verifies_on_its_chain(backend: Backend) {
    let log = five_event_log(backend).await;
    log.try_sql(
        "DELETE FROM _sqlx_migrations WHERE version = 4; DROP TABLE operation_actors; \
         DROP TABLE operation_index; DROP TABLE operation_index_state",
    )
    .await
    .unwrap();
    let report = verify(&log).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 5);
}
on_both_backends!(a_log_without_the_index_verifies_on_its_chain);
