//! Reading the log: unfinished operations, the last recorded state, list filters, readers.

use super::*;

async fn unfinished_operations_are_received_events_without_an_outcome(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let (done, denied, recovered, open_a, open_b) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for op in [done, denied, recovered, open_a, open_b] {
        store
            .append(sample(op, EventKind::Received, 0))
            .await
            .unwrap();
    }
    store.append(completed(done, 1, true)).await.unwrap();
    store
        .append(sample(denied, EventKind::Denied, 1))
        .await
        .unwrap();
    store
        .append(sample(recovered, EventKind::Recovered, 1))
        .await
        .unwrap();
    // A drift event is not an outcome: the operation is still unfinished.
    store
        .append(sample(open_b, EventKind::Drift, 1))
        .await
        .unwrap();
    let unfinished: Vec<Uuid> = store
        .unfinished_operations()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.event.kind, EventKind::Received);
            r.event.operation_id.uuid()
        })
        .collect();
    assert_eq!(unfinished, vec![open_a, open_b]);
    store.close().await;
}
on_both_backends!(unfinished_operations_are_received_events_without_an_outcome);

async fn last_after_is_the_latest_completed_or_recovered_state_of_that_resource(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    assert_eq!(store.last_after(SYNC_PATH_A).await.unwrap(), None);

    store
        .append(completed(Uuid::now_v7(), 0, true))
        .await
        .unwrap();
    let mut recovered = completed(Uuid::now_v7(), 1, false);
    recovered.kind = EventKind::Recovered;
    store.append(recovered).await.unwrap();
    // Later events that are not outcomes, or are about another resource, do not count.
    store
        .append(sample(Uuid::now_v7(), EventKind::Received, 2))
        .await
        .unwrap();
    let mut other = completed(Uuid::now_v7(), 3, true);
    other.state_path = Some("/v1.0/policies/crossTenantAccessPolicy/partners/other".into());
    other.after = Some(Snapshot::Absent);
    store.append(other).await.unwrap();

    assert_eq!(
        store.last_after(SYNC_PATH_A).await.unwrap(),
        Some(Snapshot::Present {
            value: json!({"userSyncInbound": {"isSyncAllowed": false}})
        })
    );
    assert_eq!(
        store
            .last_after("/v1.0/policies/crossTenantAccessPolicy/partners/other")
            .await
            .unwrap(),
        Some(Snapshot::Absent)
    );
    store.close().await;
}
on_both_backends!(last_after_is_the_latest_completed_or_recovered_state_of_that_resource);

/// A log with variety for the filters: returns the store and the operation ids in order.
async fn varied_log(log: &TestLog) -> (Store, Vec<Uuid>) {
    let store = log.open().await;
    let ops: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    // op0: alice on A, allowed and completed (t 0, 1)
    store
        .append(sample(ops[0], EventKind::Received, 0))
        .await
        .unwrap();
    store.append(completed(ops[0], 1, true)).await.unwrap();
    // op1: an app on B, denied (t 100)
    let mut denied = sample(ops[1], EventKind::Denied, 100);
    denied.partner_tenant_id = PARTNER_B.parse().ok();
    denied.actor = Actor {
        appid: Some("33333333-3333-4333-8333-333333333333".into()),
        ..Actor::default()
    };
    denied.decision = Some(Decision::Deny);
    store.append(denied).await.unwrap();
    // op2: bob on A, received only (t 200)
    let mut bob = sample(ops[2], EventKind::Received, 200);
    bob.actor = Actor {
        oid: Some("44444444-4444-4444-8444-444444444444".into()),
        upn: Some("bob@contoso.com".into()),
        ..Actor::default()
    };
    store.append(bob).await.unwrap();
    // op3: alice on B, completed (t 300, 301)
    let mut r = sample(ops[3], EventKind::Received, 300);
    r.partner_tenant_id = PARTNER_B.parse().ok();
    store.append(r).await.unwrap();
    let mut c = completed(ops[3], 301, false);
    c.partner_tenant_id = PARTNER_B.parse().ok();
    store.append(c).await.unwrap();
    (store, ops)
}

async fn seqs(store: &Store, filter: Filter) -> Vec<i64> {
    store
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

async fn list_filters_narrow_the_result_and_keep_seq_order(backend: Backend) {
    let log = TestLog::new(backend).await;
    let (store, ops) = varied_log(&log).await;
    let all = Filter::default;
    assert_eq!(seqs(&store, all()).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        seqs(
            &store,
            Filter {
                partner: Some(PARTNER_B.into()),
                ..all()
            }
        )
        .await,
        vec![3, 5, 6]
    );
    // Actor: upn ignoring case, oid, appid.
    for (actor, expected) in [
        ("alice@contoso.com", vec![1, 2, 5, 6]),
        ("ALICE@CONTOSO.COM", vec![1, 2, 5, 6]),
        ("44444444-4444-4444-8444-444444444444", vec![4]),
        ("33333333-3333-4333-8333-333333333333", vec![3]),
        ("22222222-2222-4222-8222-222222222222", vec![1, 2, 5, 6]),
        ("nobody", vec![]),
    ] {
        let got = seqs(
            &store,
            Filter {
                actor: Some(actor.into()),
                ..all()
            },
        )
        .await;
        assert_eq!(got, expected, "actor {actor}");
    }
    // since is inclusive, until exclusive.
    assert_eq!(
        seqs(
            &store,
            Filter {
                since: Some(at(100)),
                until: Some(at(300)),
                ..all()
            }
        )
        .await,
        vec![3, 4]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                kind: Some(EventKind::Completed),
                ..all()
            }
        )
        .await,
        vec![2, 6]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                decision: Some(Decision::Deny),
                ..all()
            }
        )
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                operation_id: Some(ops[3].into()),
                ..all()
            }
        )
        .await,
        vec![5, 6]
    );
    assert_eq!(
        seqs(
            &store,
            Filter {
                after_seq: Some(2),
                limit: Some(2),
                ..all()
            }
        )
        .await,
        vec![3, 4]
    );
    // Filters combine.
    assert_eq!(
        seqs(
            &store,
            Filter {
                partner: Some(PARTNER_A.into()),
                actor: Some("alice@contoso.com".into()),
                kind: Some(EventKind::Received),
                ..all()
            }
        )
        .await,
        vec![1]
    );
    let op = store.operation(ops[0]).await.unwrap();
    assert_eq!(
        op.iter().map(|r| r.event.kind).collect::<Vec<_>>(),
        vec![EventKind::Received, EventKind::Completed]
    );
    assert!(store.operation(Uuid::now_v7()).await.unwrap().is_empty());
    store.close().await;
}

on_both_backends!(list_filters_narrow_the_result_and_keep_seq_order);

async fn a_reader_sees_what_a_running_store_committed(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let reader = log.reader().await;
    let recorded = store.append(received(0)).await.unwrap();
    assert_eq!(
        reader.list(&Filter::default()).await.unwrap(),
        vec![recorded.clone()]
    );
    assert_eq!(
        reader.head().await.unwrap().map(|h| (h.seq, h.hash)),
        Some((1, recorded.hash))
    );
    reader.ping().await.unwrap();
    store.ready().await.unwrap();
    reader.close().await;
    store.close().await;
}
on_both_backends!(a_reader_sees_what_a_running_store_committed);
