//! The operations query: folding, each filter, cursor paging under concurrent appends, limits.

use std::collections::HashSet;

use chrono::SubsecRound;

use super::*;
use crate::audit::RuleOutcome;

fn rule(id: &str, passed: bool) -> RuleOutcome {
    RuleOutcome {
        rule: id.into(),
        kind: "partner_allowlist".into(),
        mode: "enforce".into(),
        action: "deny".into(),
        passed,
        message: (!passed).then(|| format!("{id} failed")),
    }
}

/// Every operation on the page, newest first, from the top, with no filter.
async fn page(reader: &StoreReader, filter: &OperationFilter) -> Vec<OperationSummary> {
    let page = reader.operations(filter, None, MAX_LIMIT).await.unwrap();
    assert_eq!(page.next, None);
    page.operations
}

fn ids(summaries: &[OperationSummary]) -> Vec<Uuid> {
    summaries.iter().map(|s| s.operation_id.uuid()).collect()
}

/// The operations of the filter tests, appended oldest first: a completed change with a display
/// name, approval and drift; a refused one by another actor on partner B; a recovered one; an
/// unfinished one.
struct Fixture {
    done: Uuid,
    denied: Uuid,
    recovered: Uuid,
    open: Uuid,
}

async fn fixture(store: &Store) -> Fixture {
    let f = Fixture {
        done: Uuid::now_v7(),
        denied: Uuid::now_v7(),
        recovered: Uuid::now_v7(),
        open: Uuid::now_v7(),
    };
    let mut received = sample(f.done, EventKind::Received, 0);
    received.request_body = Some(json!({"displayName": "Fabrikam 100%_sync"}));
    store.append(received).await.unwrap();
    store
        .append(sample(f.done, EventKind::Drift, 1))
        .await
        .unwrap();
    let mut done = completed(f.done, 2, true);
    done.rule_results = vec![rule("allowlist", true)];
    done.approval_id = Some("approval-1".into());
    store.append(done).await.unwrap();

    let mut denied = sample(f.denied, EventKind::Denied, 10);
    denied.partner_tenant_id = PARTNER_B.parse().ok();
    denied.operation = "partner_delete".into();
    denied.actor = Actor {
        upn: Some("Bob@Contoso.com".into()),
        ..Actor::default()
    };
    denied.decision = Some(Decision::Deny);
    denied.rule_results = vec![rule("allowlist", true), rule("no-deletes", false)];
    // A body naming an effect: the SQL prefilter lets it through, the fold knows better.
    denied.request_body = Some(json!({"displayName": "Woodgrove", "effect": "ignored"}));
    store.append(denied).await.unwrap();

    store
        .append(sample(f.recovered, EventKind::Received, 20))
        .await
        .unwrap();
    let mut recovered = completed(f.recovered, 21, false);
    recovered.kind = EventKind::Recovered;
    recovered.upstream_status = None;
    recovered.effect = Some(Effect::AppliedDespiteError);
    store.append(recovered).await.unwrap();

    store
        .append(sample(f.open, EventKind::Received, 30))
        .await
        .unwrap();
    f
}

async fn operations_fold_each_event_kind(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let f = fixture(&store).await;
    let reader = log.reader().await;
    let all = page(&reader, &OperationFilter::default()).await;
    assert_eq!(ids(&all), vec![f.open, f.recovered, f.denied, f.done]);
    let [open, recovered, denied, done] = &all[..] else {
        panic!("{all:?}")
    };

    assert_eq!(done.first_seq, 1);
    assert_eq!(done.operation, "sync_update");
    assert_eq!(done.partner.as_ref().unwrap().as_str(), PARTNER_A);
    assert_eq!(done.actor.upn.as_deref(), Some("Alice@Contoso.com"));
    assert_eq!(done.decision, Some(Decision::Allow));
    assert_eq!(done.rule, None, "every rule passed");
    assert_eq!(done.status, Some(204));
    assert_eq!(done.effect, Some(Effect::Applied));
    assert!(done.drift);
    assert_eq!(done.approval_id.as_deref(), Some("approval-1"));
    assert_eq!(done.display_name.as_deref(), Some("Fabrikam 100%_sync"));
    // Stored to the microsecond, as every event time is.
    let micros = |n| at(n).trunc_subsecs(6);
    assert_eq!((done.first_time, done.last_time), (micros(0), micros(2)));
    assert_eq!(done.terminal, Some(EventKind::Completed));

    assert_eq!(denied.first_seq, 4);
    assert_eq!(denied.operation, "partner_delete");
    assert_eq!(denied.decision, Some(Decision::Deny));
    assert_eq!(denied.rule.as_deref(), Some("no-deletes"));
    assert_eq!((denied.status, denied.effect), (None, None));
    assert!(!denied.drift);
    assert_eq!(denied.terminal, Some(EventKind::Denied));
    assert_eq!(denied.first_time, denied.last_time);

    assert_eq!(recovered.terminal, Some(EventKind::Recovered));
    assert_eq!(recovered.effect, Some(Effect::AppliedDespiteError));
    assert_eq!(recovered.status, None);

    assert_eq!(open.terminal, None);
    assert_eq!(open.first_seq, 7);
    assert_eq!((open.status, open.effect), (None, None));
    // The index (what the page read) and a fold of each operation's events agree.
    for summary in &all {
        let events = reader.operation(summary.operation_id).await.unwrap();
        assert_eq!(fold(&events).as_ref(), Some(summary));
    }
    store.close().await;
    reader.close().await;
}
on_both_backends!(operations_fold_each_event_kind);

async fn operations_filters_each_narrow_the_rows(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let f = fixture(&store).await;
    let reader = log.reader().await;
    let base = OperationFilter::default;
    let cases: Vec<(&str, OperationFilter, Vec<Uuid>)> = vec![
        (
            "partner",
            OperationFilter {
                partner: Some(PARTNER_B.into()),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "actor upn, any case",
            OperationFilter {
                actor: Some("bob@CONTOSO.com".into()),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "actor oid",
            OperationFilter {
                actor: Some("11111111-1111-4111-8111-111111111111".into()),
                ..base()
            },
            vec![f.open, f.recovered, f.done],
        ),
        (
            "operation",
            OperationFilter {
                operation: Some("partner_delete".into()),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "decision",
            OperationFilter {
                decision: Some(Decision::Deny),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "rule",
            OperationFilter {
                rule: Some("no-deletes".into()),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "a rule that passed does not decide",
            OperationFilter {
                rule: Some("allowlist".into()),
                ..base()
            },
            vec![],
        ),
        (
            "effect",
            OperationFilter {
                effect: Some(Effect::AppliedDespiteError),
                ..base()
            },
            vec![f.recovered],
        ),
        (
            "an effect named in the body is not the operation's",
            OperationFilter {
                effect: Some(Effect::Ignored),
                ..base()
            },
            vec![],
        ),
        (
            "status",
            OperationFilter {
                status: Some(204),
                ..base()
            },
            vec![f.done],
        ),
        (
            "drift",
            OperationFilter {
                drift: Some(true),
                ..base()
            },
            vec![f.done],
        ),
        (
            "no drift",
            OperationFilter {
                drift: Some(false),
                ..base()
            },
            vec![f.open, f.recovered, f.denied],
        ),
        (
            "time range",
            OperationFilter {
                since: Some(at(10)),
                until: Some(at(30)),
                ..base()
            },
            vec![f.recovered, f.denied],
        ),
        (
            "display name, any case",
            OperationFilter {
                text: Some("woodGROVE".into()),
                ..base()
            },
            vec![f.denied],
        ),
        (
            "wildcards match literally",
            OperationFilter {
                text: Some("100%_s".into()),
                ..base()
            },
            vec![f.done],
        ),
        (
            "a wildcard is not one",
            OperationFilter {
                text: Some("Fab%ync".into()),
                ..base()
            },
            vec![],
        ),
        (
            "text outside the display name does not match",
            OperationFilter {
                text: Some("isSyncAllowed".into()),
                ..base()
            },
            vec![],
        ),
        (
            "filters combine",
            OperationFilter {
                partner: Some(PARTNER_A.into()),
                decision: Some(Decision::Allow),
                drift: Some(false),
                ..base()
            },
            vec![f.open, f.recovered],
        ),
    ];
    for (name, filter, expected) in cases {
        assert_eq!(ids(&page(&reader, &filter).await), expected, "{name}");
    }
    store.close().await;
    reader.close().await;
}
on_both_backends!(operations_filters_each_narrow_the_rows);

/// Append `n` operations concurrently (so the writer groups them), each received then completed.
async fn append_operations(store: &Store, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        tasks.spawn(async move {
            let op = Uuid::now_v7();
            store
                .append(sample(op, EventKind::Received, i as i64))
                .await
                .unwrap();
            store.append(completed(op, i as i64, true)).await.unwrap();
        });
    }
    tasks.join_all().await;
}

async fn operations_page_stably_while_a_writer_appends(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    append_operations(&store, 60).await;
    let reader = log.reader().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_operations(&store, 60).await })
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = reader
            .operations(&OperationFilter::default(), cursor.as_ref(), 7)
            .await
            .unwrap();
        assert!(page.operations.len() <= 7);
        seen.extend(page.operations);
        match page.next {
            // The cursor is opaque text to callers: round-trip it as they would.
            Some(next) => cursor = Some(Cursor::parse(&next.encode()).unwrap()),
            None => break,
        }
    }
    writer.await.unwrap();
    let seqs: Vec<i64> = seen.iter().map(|s| s.first_seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    // No gaps: every operation that began at or below the first row's seq is on some page.
    let top = seqs[0];
    let expected: Vec<i64> = {
        let mut firsts = HashSet::new();
        let mut expected = Vec::new();
        for r in all_events(&log).await {
            if firsts.insert(r.event.operation_id) && r.seq <= top {
                expected.push(r.seq);
            }
        }
        expected.reverse();
        expected
    };
    assert_eq!(seqs, expected);
    assert!(seqs.len() >= 60);
    store.close().await;
    reader.close().await;
}
on_both_backends!(
    operations_page_stably_while_a_writer_appends,
    flavor = "multi_thread"
);

async fn operations_limit_is_cut_to_its_bounds(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    append_operations(&store, MAX_LIMIT as usize + 5).await;
    let reader = log.reader().await;
    let filter = OperationFilter::default();
    let one = reader.operations(&filter, None, 0).await.unwrap();
    assert_eq!(one.operations.len(), 1, "a limit of 0 returns one row");
    assert!(one.next.is_some());
    let most = reader.operations(&filter, None, u32::MAX).await.unwrap();
    assert_eq!(most.operations.len(), MAX_LIMIT as usize);
    let rest = reader
        .operations(&filter, most.next.as_ref(), u32::MAX)
        .await
        .unwrap();
    assert_eq!(rest.operations.len(), 5);
    assert_eq!(rest.next, None);
    assert_eq!(rest.operations.last().unwrap().first_seq, 1);
    store.close().await;
    reader.close().await;
}
on_both_backends!(operations_limit_is_cut_to_its_bounds);

async fn operations_of_an_empty_log_are_none(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let reader = log.reader().await;
    let page = reader
        .operations(&OperationFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(
        page,
        OperationsPage {
            operations: vec![],
            next: None
        }
    );
    store.close().await;
    reader.close().await;
}
on_both_backends!(operations_of_an_empty_log_are_none);

async fn the_text_search_ignores_ascii_case_and_only_ascii_case(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let wanted = Uuid::now_v7();
    let mut received = sample(wanted, EventKind::Received, 0);
    received.request_body = Some(json!({"displayName": "Müller AG"}));
    store.append(received).await.unwrap();
    append_operations(&store, 35).await;
    let reader = log.reader().await;
    let search = |text: &str| OperationFilter {
        text: Some(text.into()),
        ..OperationFilter::default()
    };
    assert_eq!(
        page(&reader, &search("mÜLLER")).await,
        vec![],
        "Ü is not ASCII: its case counts"
    );
    let found = page(&reader, &search("MüLLER ag")).await;
    assert_eq!(ids(&found), vec![wanted]);
    assert_eq!(found[0].display_name.as_deref(), Some("Müller AG"));
    // LIKE's wildcards in the search are plain characters.
    assert_eq!(page(&reader, &search("m_ller")).await, vec![]);
    assert_eq!(page(&reader, &search("%")).await, vec![]);
    store.close().await;
    reader.close().await;
}
on_both_backends!(the_text_search_ignores_ascii_case_and_only_ascii_case);

async fn an_index_behind_the_log_is_refused_then_folded_when_the_log_is_opened(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    fixture(&store).await;
    let reader = log.reader().await;
    let before = page(&reader, &OperationFilter::default()).await;
    store.close().await;
    // What a log written before the index existed looks like (or one whose index was lost).
    log.try_sql(
        "DELETE FROM operation_actors; DELETE FROM operation_index; \
         UPDATE operation_index_state SET through_seq = 0",
    )
    .await
    .unwrap();
    let refused = reader
        .operations(&OperationFilter::default(), None, 10)
        .await
        .unwrap_err();
    assert!(refused.is_unavailable(), "{refused}");
    assert!(
        refused.to_string().contains("through seq 0 of 7"),
        "{refused}"
    );
    // Opening the log for writing folds every event the index does not hold.
    let store = log.open().await;
    assert_eq!(page(&reader, &OperationFilter::default()).await, before);
    let actor = OperationFilter {
        actor: Some("BOB@contoso.COM".into()),
        ..OperationFilter::default()
    };
    assert_eq!(page(&reader, &actor).await.len(), 1);
    store.close().await;
    reader.close().await;
}
on_both_backends!(an_index_behind_the_log_is_refused_then_folded_when_the_log_is_opened);

#[tokio::test]
async fn an_event_whose_fold_cannot_be_written_is_not_written_either() {
    let log = TestLog::new(Backend::Sqlite).await;
    let store = log.open().await;
    let first = Uuid::now_v7();
    store
        .append(sample(first, EventKind::Received, 0))
        .await
        .unwrap();
    log.try_sql(
        "CREATE TRIGGER no_index BEFORE UPDATE ON operation_index \
         BEGIN SELECT RAISE(ABORT, 'index refused'); END",
    )
    .await
    .unwrap();
    // The operation's second event must update its index row: refused, so not recorded.
    let refused = store.append(completed(first, 1, true)).await.unwrap_err();
    assert!(
        refused.to_string().contains("operations index"),
        "{refused}"
    );
    assert_eq!(store.operation(first).await.unwrap().len(), 1);
    log.try_sql("DROP TRIGGER no_index").await.unwrap();
    store.append(completed(first, 1, true)).await.unwrap();
    let reader = log.reader().await;
    let all = page(&reader, &OperationFilter::default()).await;
    assert_eq!(all[0].terminal, Some(EventKind::Completed));
    store.close().await;
    reader.close().await;
}

#[test]
fn a_cursor_is_opaque_text_that_round_trips() {
    for text in ["s1", "s9223372036854775807"] {
        assert_eq!(Cursor::parse(text).unwrap().encode(), text);
    }
    for junk in ["", "s", "1", "s-1", "s+1", "s1x", "s99999999999999999999"] {
        assert_eq!(Cursor::parse(junk), None, "{junk:?}");
    }
}

/// Each page follows the index chosen for it (`operations/sql.rs`), in page order, so it stops
/// after `limit` rows: SQLite must not sort (a "TEMP B-TREE") except for a time range alone,
/// which sorts the covering time index's seqs, and must never read the events.
#[tokio::test]
async fn each_filter_walks_the_index_chosen_for_it_on_sqlite() {
    use sqlx::{Connection, Row};
    let log = TestLog::new(Backend::Sqlite).await;
    log.open().await.close().await;
    let StoreLocation::Sqlite(path) = &log.location else {
        unreachable!()
    };
    let mut conn = crate::store::sqlite::raw_connection(path).await;
    let some = |f: fn(&mut OperationFilter)| {
        let mut filter = OperationFilter::default();
        f(&mut filter);
        filter
    };
    let since = at(0);
    for (filter, index) in [
        (OperationFilter::default(), "INTEGER PRIMARY KEY"),
        (
            some(|f| f.partner = Some(PARTNER_A.into())),
            "operation_index_partner",
        ),
        (
            some(|f| f.actor = Some("ann@contoso.com".into())),
            "SEARCH a USING",
        ),
        (
            some(|f| f.operation = Some("partner_delete".into())),
            "operation_index_operation",
        ),
        (
            some(|f| f.decision = Some(Decision::Deny)),
            "operation_index_decision",
        ),
        (
            some(|f| f.rule = Some("no-deletes".into())),
            "operation_index_rule",
        ),
        (
            some(|f| f.effect = Some(Effect::Ignored)),
            "operation_index_effect",
        ),
        (some(|f| f.status = Some(204)), "operation_index_status"),
        (some(|f| f.drift = Some(true)), "operation_index_drift"),
        // Open towards now: the newest operations meet it first.
        (some(|f| f.since = Some(at(0))), "INTEGER PRIMARY KEY"),
        (
            some(|f| {
                f.decision = Some(Decision::Deny);
                f.partner = Some(PARTNER_A.into());
            }),
            "operation_index_partner",
        ),
        (
            some(|f| {
                f.drift = Some(true);
                f.since = Some(at(0));
                f.actor = Some("ann@contoso.com".into());
            }),
            "SEARCH a USING",
        ),
    ] {
        let query = crate::store::operations::page::<sqlx::Sqlite>(&filter, i64::MAX, 100);
        // Unbound parameters are NULL; SQLite's plan does not depend on them.
        let sql = format!("EXPLAIN QUERY PLAN {}", query.sql());
        let rows = sqlx::query(&sql).fetch_all(&mut conn).await.unwrap();
        let detail: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        assert!(detail[0].contains(index), "{filter:?}: {detail:?}");
        assert!(
            !detail
                .iter()
                .any(|d| d.contains("TEMP B-TREE") || d.contains("audit_events")),
            "{filter:?}: {detail:?}"
        );
    }
    let month = OperationFilter {
        since: Some(since),
        until: Some(since + chrono::TimeDelta::days(30)),
        ..OperationFilter::default()
    };
    let query = crate::store::operations::page::<sqlx::Sqlite>(&month, i64::MAX, 100);
    let sql = format!("EXPLAIN QUERY PLAN {}", query.sql());
    let rows = sqlx::query(&sql).fetch_all(&mut conn).await.unwrap();
    let detail: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
    assert!(
        detail
            .iter()
            .any(|d| d.contains("COVERING INDEX operation_index_first_time")),
        "{detail:?}"
    );
    // `audit verify` reads a page's actor rows by first_seq: by an index, not a scan of the
    // whole table per page (it was one, which made a million-event verify ~1,000 scans longer).
    let query = crate::store::operations::index_check::actors_between::<sqlx::Sqlite>(1, 500);
    let sql = format!("EXPLAIN QUERY PLAN {}", query.sql());
    let rows = sqlx::query(&sql).fetch_all(&mut conn).await.unwrap();
    let detail: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
    assert!(
        detail.len() == 1 && detail[0].contains("operation_actors_first_seq"),
        "{detail:?}"
    );
    conn.close().await.unwrap();
}

/// A page's events are read as one range of the log when they are most of it, else by
/// operation id: either way each operation gets exactly its own events, in order.
async fn a_page_reads_its_events_whether_dense_or_scattered(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    // Every fourth operation is on partner B; each operation's two events interleave with the
    // next one's.
    let ids: Vec<Uuid> = (0..24).map(|_| Uuid::now_v7()).collect();
    for (n, id) in ids.iter().enumerate() {
        let mut received = sample(*id, EventKind::Received, n as i64);
        if n % 4 == 0 {
            received.partner_tenant_id = PARTNER_B.parse().ok();
        }
        store.append(received).await.unwrap();
        if n > 0 {
            let mut done = completed(ids[n - 1], n as i64, true);
            if (n - 1) % 4 == 0 {
                done.partner_tenant_id = PARTNER_B.parse().ok();
            }
            store.append(done).await.unwrap();
        }
    }
    let reader = log.reader().await;
    for filter in [
        OperationFilter::default(),
        OperationFilter {
            partner: Some(PARTNER_B.into()),
            ..OperationFilter::default()
        },
    ] {
        let page = reader.folded_operations(&filter, None, 1000).await.unwrap();
        let expected = if filter.partner.is_some() { 6 } else { 24 };
        assert_eq!(page.operations.len(), expected);
        for op in page.operations {
            let own = reader.operation(op.summary.operation_id).await.unwrap();
            let events: Vec<Recorded> = op
                .events
                .iter()
                .map(|raw| {
                    let event = serde_json::from_str(&raw.event).unwrap();
                    Recorded {
                        seq: raw.seq,
                        prev_hash: raw.prev_hash.clone(),
                        hash: raw.hash.clone(),
                        event,
                    }
                })
                .collect();
            assert_eq!(events, own, "{filter:?}");
            assert_eq!(op.summary.events, own.len() as i64);
            assert_eq!(op.summary.last_seq, own.last().unwrap().seq);
        }
    }
    store.close().await;
    reader.close().await;
}
on_both_backends!(a_page_reads_its_events_whether_dense_or_scattered);
