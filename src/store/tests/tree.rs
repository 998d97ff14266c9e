use std::time::Duration;

use super::*;
use crate::audit::evidence;
use crate::audit::merkle::{self, Frontier, leaf_hash};
use crate::audit::note::{Checkpoint, Verifier};

/// The stored canonical text of every event, in seq order: the tree's leaves.
async fn leaves(log: &TestLog) -> Vec<String> {
    let reader = log.reader().await;
    let mut texts = Vec::new();
    loop {
        let page = reader.page(texts.len() as i64).await.unwrap();
        if page.is_empty() {
            break;
        }
        texts.extend(page.into_iter().map(|row| row.unwrap().event));
    }
    reader.close().await;
    texts
}

/// The root of the first `size` of `leaves`, computed here from nothing but their text.
fn root_of(leaves: &[String], size: usize) -> merkle::Hash {
    let mut tree = Frontier::new();
    for text in &leaves[..size] {
        tree.push(leaf_hash(text.as_bytes()));
    }
    tree.root()
}

/// The log's checkpoint verifier key, from the key file the writer used.
fn log_key(log: &TestLog) -> Verifier {
    let signer = signing_key::load_or_create(&log.checkpoint_key(), None).unwrap();
    Verifier::parse(&signer.verifier_key()).unwrap()
}

/// Append `n` events, some alone and some concurrently (so groups of several), and close.
async fn append_mixed(store: &Store, n: i64) {
    let mut i = 0;
    while i < n {
        let burst = (i % 4 + 1).min(n - i);
        let mut appends = tokio::task::JoinSet::new();
        for k in 0..burst {
            let store = store.clone();
            appends.spawn(async move { store.append(received(i + k)).await });
        }
        while let Some(result) = appends.join_next().await {
            result.unwrap().unwrap();
        }
        i += burst;
    }
}

async fn the_writer_keeps_the_tree_and_every_proof_verifies(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    append_mixed(&store, 37).await;
    store.close().await;
    let leaves = leaves(&log).await;
    assert_eq!(leaves.len(), 37);
    let reader = log.reader().await;
    assert_eq!(reader.tree_size().await.unwrap(), 37);
    for size in 1..=37u64 {
        let root = reader.tree_root(size).await.unwrap();
        assert_eq!(root, root_of(&leaves, size as usize), "root at {size}");
        for seq in 1..=size {
            let proof = reader.inclusion_proof(seq, size).await.unwrap();
            let leaf = leaf_hash(leaves[seq as usize - 1].as_bytes());
            assert!(
                merkle::verify_inclusion(seq - 1, size, &leaf, &proof, &root),
                "seq {seq} in {size}"
            );
        }
    }
    let new_root = root_of(&leaves, 37);
    for old in 1..=37u64 {
        let proof = reader.consistency_proof(old, 37).await.unwrap();
        let old_root = root_of(&leaves, old as usize);
        assert!(
            merkle::verify_consistency(old, 37, &old_root, &new_root, &proof),
            "{old} to 37"
        );
    }
    assert_eq!(reader.tree_root(0).await.unwrap(), merkle::empty_root());
    assert!(matches!(
        reader.inclusion_proof(38, 38).await,
        Err(StoreError::NotInTree { size: 38, held: 37 })
    ));
    assert!(matches!(
        reader.inclusion_proof(0, 37).await,
        Err(StoreError::NotInTree { .. })
    ));
    assert!(matches!(
        reader.consistency_proof(20, 10).await,
        Err(StoreError::Invalid { .. })
    ));
    // verify's own root, computed from the events, is the stored tree's.
    assert_eq!(reader.verify().await.unwrap().tree_root, new_root);
    reader.close().await;
}
on_both_backends!(the_writer_keeps_the_tree_and_every_proof_verifies);

async fn a_log_from_before_the_tree_is_hashed_in_when_the_writer_opens(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    append_mixed(&store, 12).await;
    store.close().await;
    // What a log written by an earlier version looks like after migration 0005: no nodes.
    log.tamper("DELETE FROM merkle_nodes").await;
    log.tamper("UPDATE merkle_state SET size = 0").await;
    let reader = log.reader().await;
    assert_eq!(reader.tree_size().await.unwrap(), 0);
    assert!(matches!(
        reader.tree_root(12).await,
        Err(StoreError::NotInTree { size: 12, held: 0 })
    ));
    reader.close().await;
    let store = log.open().await;
    append_mixed(&store, 3).await;
    store.close().await;
    let leaves = leaves(&log).await;
    let reader = log.reader().await;
    assert_eq!(reader.tree_size().await.unwrap(), 15);
    assert_eq!(reader.tree_root(15).await.unwrap(), root_of(&leaves, 15));
    assert_eq!(reader.tree_root(12).await.unwrap(), root_of(&leaves, 12));
    reader.close().await;
}
on_both_backends!(a_log_from_before_the_tree_is_hashed_in_when_the_writer_opens);

async fn two_writers_taking_turns_keep_one_tree(backend: Backend) {
    // Two processes on one SQLite file, or two replicas on one PostgreSQL database: each
    // writer's kept edge is stale after the other's append, and must be reloaded, not reused.
    let log = TestLog::new(backend).await;
    let first = log.open().await;
    let second = log.open().await;
    for n in 0..20 {
        let store = if n % 3 == 0 { &second } else { &first };
        store.append(received(n)).await.unwrap();
    }
    first.close().await;
    second.close().await;
    let leaves = leaves(&log).await;
    let reader = log.reader().await;
    assert_eq!(reader.tree_size().await.unwrap(), 20);
    for size in [1u64, 7, 16, 19, 20] {
        assert_eq!(
            reader.tree_root(size).await.unwrap(),
            root_of(&leaves, size as usize)
        );
    }
    // Every checkpoint either signed is of the one tree.
    for checkpoint in reader.checkpoints(u64::MAX, 100).await.unwrap() {
        assert_eq!(checkpoint.root, root_of(&leaves, checkpoint.size as usize));
    }
    reader.close().await;
}
on_both_backends!(two_writers_taking_turns_keep_one_tree);

async fn the_writer_signs_a_checkpoint_every_n_events_and_at_close(backend: Backend) {
    let log = TestLog::new(backend).await;
    let mut options = log.options();
    options.checkpoints.every_events = 5;
    options.checkpoints.every = Duration::from_secs(3600);
    let store = log.open_with(options).await;
    for n in 0..12 {
        store.append(received(n)).await.unwrap();
    }
    store.close().await;
    let leaves = leaves(&log).await;
    let key = log_key(&log);
    let reader = log.reader().await;
    let stored = reader.checkpoints(u64::MAX, 100).await.unwrap();
    let sizes: Vec<u64> = stored.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [12, 10, 5], "every 5 events, then the rest at close");
    for checkpoint in &stored {
        let body = key.open(&checkpoint.note).expect("signed by the log's key");
        let parsed = Checkpoint::parse(body).unwrap();
        assert_eq!(parsed.origin, key.name());
        assert_eq!(parsed.size, checkpoint.size);
        assert_eq!(parsed.root, root_of(&leaves, checkpoint.size as usize));
        assert_eq!(parsed.root, checkpoint.root);
        assert_eq!(parsed.extensions, [format!("time {}", checkpoint.time)]);
    }
    assert_eq!(
        reader.latest_checkpoint().await.unwrap().map(|c| c.size),
        Some(12)
    );
    assert_eq!(
        reader
            .checkpoints(11, 100)
            .await
            .unwrap()
            .iter()
            .map(|c| c.size)
            .collect::<Vec<_>>(),
        [10, 5]
    );
    reader.close().await;
    // Reopened and closed with nothing new: no second checkpoint of 12.
    log.open().await.close().await;
    let reader = log.reader().await;
    assert_eq!(reader.checkpoints(u64::MAX, 100).await.unwrap().len(), 3);
    reader.close().await;
    // The table is append-only, like the events.
    assert!(log.try_sql("DELETE FROM checkpoints").await.is_err());
    assert!(
        log.try_sql("UPDATE checkpoints SET size = 99")
            .await
            .is_err()
    );
}
on_both_backends!(the_writer_signs_a_checkpoint_every_n_events_and_at_close);

async fn the_timer_signs_a_tree_that_grew_and_only_then(backend: Backend) {
    let log = TestLog::new(backend).await;
    let mut options = log.options();
    options.checkpoints.every_events = 1000;
    options.checkpoints.every = Duration::from_millis(100);
    let store = log.open_with(options).await;
    store.append(received(0)).await.unwrap();
    store.append(received(1)).await.unwrap();
    let reader = log.reader().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reader.latest_checkpoint().await.unwrap().map(|c| c.size) != Some(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of 2 events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Several periods with nothing appended: nothing more is signed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reader.checkpoints(u64::MAX, 10).await.unwrap().len(), 1);
    store.close().await;
    assert_eq!(reader.checkpoints(u64::MAX, 10).await.unwrap().len(), 1);
    reader.close().await;
}
on_both_backends!(the_timer_signs_a_tree_that_grew_and_only_then);

async fn an_operation_s_evidence_pack_verifies_offline(backend: Backend) {
    let log = TestLog::new(backend).await;
    let store = log.open().await;
    let operation = Uuid::now_v7();
    store
        .append(sample(operation, EventKind::Received, 0))
        .await
        .unwrap();
    append_mixed(&store, 9).await;
    store.append(completed(operation, 1, true)).await.unwrap();
    append_mixed(&store, 4).await;
    let reader = log.reader().await;
    // Not signed yet: the writer signs at 1,000 events, every minute, or at close.
    assert!(matches!(
        reader.evidence(operation.into()).await,
        Err(StoreError::NotYetSigned { seq: 11, signed: 0 })
    ));
    store.close().await;
    let pack = reader
        .evidence(operation.into())
        .await
        .unwrap()
        .expect("the operation is in the log");
    assert_eq!(
        pack.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 11]
    );
    let verified = evidence::verify(&pack, &log_key(&log)).unwrap();
    assert_eq!(verified.size, 15);
    assert_eq!(
        verified
            .events
            .iter()
            .map(|e| e.1.as_str())
            .collect::<Vec<_>>(),
        ["received", "completed"]
    );
    assert!(
        reader
            .evidence(Uuid::now_v7().into())
            .await
            .unwrap()
            .is_none()
    );
    reader.close().await;
}
on_both_backends!(an_operation_s_evidence_pack_verifies_offline);

/// A log of 12 events with checkpoints stored at 5, 10 and 12.
async fn checkpointed_log(backend: Backend) -> TestLog {
    let log = TestLog::new(backend).await;
    let mut options = log.options();
    options.checkpoints.every_events = 5;
    let store = log.open_with(options).await;
    for n in 0..12 {
        store.append(received(n)).await.unwrap();
    }
    store.close().await;
    log
}

async fn verify_checks_the_checkpoints_stored_in_the_log(backend: Backend) {
    let log = checkpointed_log(backend).await;
    let report = verify(&log).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checkpoints_checked, 3);
    assert!(report.roots_at.is_empty(), "only the caller's sizes");

    // The newest event cut, as someone with write access would (the chain still verifies).
    log.tamper("DELETE FROM audit_events WHERE seq = 12").await;
    let report = verify(&log).await;
    assert_eq!(report.first_broken, None);
    assert_eq!(report.events, 11);
    let mismatch = report.tree.expect("a cut tail");
    assert_eq!((mismatch.kind, mismatch.size), ("truncated", 12));
    assert!(
        mismatch.reason.contains("from seq 12 was cut"),
        "{}",
        mismatch.reason
    );
}
on_both_backends!(verify_checks_the_checkpoints_stored_in_the_log);

async fn a_history_rewritten_after_a_stored_checkpoint_is_named(backend: Backend) {
    let log = checkpointed_log(backend).await;
    // Everything after seq 7 replaced with other events, chained afresh by the store itself.
    log.tamper("DELETE FROM audit_events WHERE seq > 7").await;
    log.tamper("DELETE FROM operation_actors").await;
    log.tamper("DELETE FROM operation_index").await;
    log.tamper("UPDATE operation_index_state SET through_seq = 0")
        .await;
    let mut options = log.options();
    options.checkpoints.enabled = false;
    let store = log.open_with(options).await;
    for n in 100..105 {
        store.append(received(n)).await.unwrap();
    }
    store.close().await;
    let report = verify(&log).await;
    assert_eq!(report.first_broken, None, "the chain itself verifies");
    assert_eq!(report.events, 12);
    let mismatch = report.tree.expect("a rewritten history");
    assert_eq!((mismatch.kind, mismatch.size), ("rewritten", 10));
    assert!(
        mismatch
            .reason
            .contains("after seq 5 and at or before seq 10"),
        "{}",
        mismatch.reason
    );
}
on_both_backends!(a_history_rewritten_after_a_stored_checkpoint_is_named);

async fn a_tampered_tree_node_is_found_and_rebuilt_by_reindex(backend: Backend) {
    let log = checkpointed_log(backend).await;
    // Node 5 is (level 1, index 1): leaves 3 and 4.
    let zero = match backend {
        Backend::Sqlite => "zeroblob(32)",
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
    };
    log.tamper(&format!(
        "UPDATE merkle_nodes SET hash = {zero} WHERE id = 5"
    ))
    .await;
    let report = verify(&log).await;
    let mismatch = report.tree.expect("a stored tree that is not the events'");
    assert_eq!((mismatch.kind, mismatch.size), ("tree", 4));
    assert!(
        mismatch
            .reason
            .contains("node over events 3 to 4 is not the events' hash")
            && mismatch.reason.contains("audit reindex"),
        "{}",
        mismatch.reason
    );
    // A proof through the bad node does not verify against the signed root.
    let reader = log.reader().await;
    let signed = reader.latest_checkpoint().await.unwrap().unwrap();
    let leaves = leaves(&log).await;
    let proof = reader.inclusion_proof(1, 12).await.unwrap();
    assert!(!merkle::verify_inclusion(
        0,
        12,
        &leaf_hash(leaves[0].as_bytes()),
        &proof,
        &signed.root
    ));
    reader.close().await;
    Store::reindex(&log.location, log.options()).await.unwrap();
    let report = verify(&log).await;
    assert!(report.ok(), "{report:?}");
}
on_both_backends!(a_tampered_tree_node_is_found_and_rebuilt_by_reindex);
