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

async fn the_quick_pass_covers_every_page_and_names_an_edit_and_a_gap(backend: Backend) {
    // 37 events: several of the quick pass's pages on either backend (7 rows a page in tests on
    // PostgreSQL; SQLite's are larger, and the same code reads them all).
    let log = TestLog::new(backend).await;
    let mut options = log.options();
    options.checkpoints.every_events = 10;
    let store = log.open_with(options).await;
    append_mixed(&store, 37).await;
    store.close().await;
    let leaves = leaves(&log).await;
    let key = log_key(&log);
    let reader = log.reader().await;
    let signed = reader.verify_signed(&key, Vec::new()).await.unwrap();
    assert!(signed.ok(), "{signed:?}");
    assert_eq!(signed.pass.events, 37);
    assert_eq!(signed.covered, 37);
    let stored = reader.checkpoints(u64::MAX, 100).await.unwrap();
    assert_eq!(signed.stored, stored.len());
    assert!(
        stored.len() >= 4,
        "every 10 events and at close: {stored:?}"
    );
    for checkpoint in &stored {
        let size = checkpoint.size;
        assert_eq!(
            signed.pass.roots_at[&size], checkpoint.root,
            "root at {size}"
        );
        assert_eq!(checkpoint.root, root_of(&leaves, size as usize));
    }
    let report = reader.verify_quickly(&[14, 21]).await.unwrap();
    assert_eq!(report.first_broken, None);
    assert_eq!(report.roots_at[&14], root_of(&leaves, 14));
    assert_eq!(report.roots_at[&21], root_of(&leaves, 21));
    reader.close().await;

    // One character of event 15 changed: named at its seq, whichever page it is in.
    log.tamper("UPDATE audit_events SET event = replace(event, '\"received\"', '\"receivEd\"') WHERE seq = 15")
        .await;
    let reader = log.reader().await;
    let signed = reader.verify_signed(&key, Vec::new()).await.unwrap();
    assert!(!signed.ok());
    let broken = signed.pass.first_broken.expect("an edited event");
    assert_eq!(broken.seq, 15, "{}", broken.reason);
    assert!(
        broken.reason.contains("does not match"),
        "{}",
        broken.reason
    );
    reader.close().await;

    // A row deleted from the middle of a page: the next one does not follow.
    log.tamper("UPDATE audit_events SET event = replace(event, '\"receivEd\"', '\"received\"') WHERE seq = 15")
        .await;
    log.tamper("DELETE FROM audit_events WHERE seq = 25").await;
    let reader = log.reader().await;
    let report = reader.verify_quickly(&[]).await.unwrap();
    let broken = report.first_broken.expect("a gap");
    assert_eq!(broken.seq, 26, "{}", broken.reason);
    // The same words as the full verification's (one check of a link for both).
    assert!(
        broken
            .reason
            .contains("seq jumps from 24 to 26: 1 event(s) missing"),
        "{}",
        broken.reason
    );
    assert_eq!(report.events, 24);
    // And a pass stopped early leaves the reader usable (on PostgreSQL its connection, with a
    // COPY half read, was closed rather than pooled).
    assert_eq!(reader.tree_size().await.unwrap(), 37);
    reader.close().await;
}
on_both_backends!(the_quick_pass_covers_every_page_and_names_an_edit_and_a_gap);

/// How far the one witness was delivered.
async fn delivered(reader: &StoreReader) -> Option<u64> {
    reader
        .witness_states()
        .await
        .unwrap()
        .first()
        .map(|s| s.delivered)
}

/// Poll `check` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_file_witness_gets_every_checkpoint_in_order_across_restarts(backend: Backend) {
    use crate::audit::note::split_notes;
    use crate::store::witness::{Target, WitnessSpec};
    let log = TestLog::new(backend).await;
    let file = log.dir.path().join("other-volume").join("checkpoints");
    std::fs::create_dir(file.parent().unwrap()).unwrap();
    let mut options = log.options();
    options.checkpoints.every_events = 3;
    options.checkpoints.witnesses = vec![WitnessSpec {
        name: "other-volume".into(),
        target: Target::File(file.clone()),
        timeout: Duration::from_secs(5),
        key: None,
    }];
    let store = log.open_with(options.clone()).await;
    for n in 0..9 {
        store.append(received(n)).await.unwrap();
    }
    let sizes_in_file = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let key = log_key(&log);
        split_notes(&text)
            .into_iter()
            .map(|note| Checkpoint::parse(key.open(note).unwrap()).unwrap().size)
            .collect::<Vec<u64>>()
    };
    eventually("3 checkpoints in the file", async || {
        sizes_in_file() == [3, 6, 9]
    })
    .await;
    let reader = log.reader().await;
    eventually("the mark at 9", async || {
        delivered(&reader).await == Some(9)
    })
    .await;
    store.append(received(9)).await.unwrap();
    // Closed before the next checkpoint was due: the one signed at close waits in the outbox.
    store.close().await;
    assert_eq!(sizes_in_file(), [3, 6, 9]);
    assert_eq!(
        reader.latest_checkpoint().await.unwrap().map(|c| c.size),
        Some(10)
    );
    let store = log.open_with(options).await;
    eventually(
        "the checkpoint of 10 delivered after the restart",
        async || sizes_in_file() == [3, 6, 9, 10],
    )
    .await;
    store.close().await;
    let state = reader.witness_states().await.unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!((state[0].delivered, state[0].attempts), (10, 0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    reader.close().await;
}
on_both_backends!(a_file_witness_gets_every_checkpoint_in_order_across_restarts);

#[tokio::test]
async fn a_witness_that_fails_is_retried_and_never_holds_up_the_appends() {
    use crate::store::witness::{Target, WitnessSpec};
    let log = TestLog::new(Backend::Sqlite).await;
    // A file in a folder that does not exist yet: every delivery fails until it does.
    let folder = log.dir.path().join("mounted-later");
    let file = folder.join("checkpoints");
    let mut options = log.options();
    options.checkpoints.every_events = 2;
    options.checkpoints.retry_max = Duration::from_millis(100);
    options.checkpoints.witnesses = vec![WitnessSpec {
        name: "later".into(),
        target: Target::File(file.clone()),
        timeout: Duration::from_secs(5),
        key: None,
    }];
    let store = log.open_with(options).await;
    let started = std::time::Instant::now();
    for n in 0..10 {
        store.append(received(n)).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let reader = log.reader().await;
    eventually("failures recorded", async || {
        reader
            .witness_states()
            .await
            .unwrap()
            .first()
            .is_some_and(|s| s.attempts >= 2 && s.delivered == 0 && s.last_error.is_some())
    })
    .await;
    assert!(store.instruments().witness_failures.get() >= 2);
    std::fs::create_dir(&folder).unwrap();
    eventually("all five delivered once the folder is there", async || {
        delivered(&reader).await == Some(10)
    })
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(crate::audit::note::split_notes(&text).len(), 5);
    store.close().await;
    reader.close().await;
}

#[tokio::test]
async fn a_syslog_witness_gets_one_rfc_5424_line_per_checkpoint() {
    use crate::store::witness::{Target, WitnessSpec};
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let log = TestLog::new(Backend::Sqlite).await;
    let mut options = log.options();
    options.checkpoints.every_events = 2;
    options.checkpoints.witnesses = vec![WitnessSpec {
        name: "syslog".into(),
        target: Target::SyslogUdp(collector.local_addr().unwrap()),
        timeout: Duration::from_secs(5),
        key: None,
    }];
    let store = log.open_with(options).await;
    store.append(received(0)).await.unwrap();
    store.append(received(1)).await.unwrap();
    let mut buffer = vec![0; 8192];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), collector.recv_from(&mut buffer))
        .await
        .expect("a syslog message")
        .unwrap();
    let message = std::str::from_utf8(&buffer[..n]).unwrap();
    assert!(message.starts_with("<110>1 "), "{message}");
    assert!(
        message.contains(" syncgate - checkpoint - size=2 "),
        "{message}"
    );
    use base64::Engine;
    let note = base64::engine::general_purpose::STANDARD
        .decode(message.rsplit("note=").next().unwrap())
        .unwrap();
    let note = String::from_utf8(note).unwrap();
    let parsed = Checkpoint::parse(log_key(&log).open(&note).unwrap()).unwrap();
    assert_eq!(parsed.size, 2);
    store.close().await;
}
