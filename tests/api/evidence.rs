//! Issue 11: the checkpoints the writer signs, the proofs built from the Merkle tree it keeps,
//! and evidence packs, through the admin API (both backends) and the CLI, checked by code that
//! holds nothing but the log's verifier key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::StatusCode;
use serde_json::Value;
use syncgate::audit::evidence::{self, EvidencePack};
use syncgate::audit::merkle::{self, Hash};
use syncgate::audit::note::{Checkpoint, CosignatureVerifier, Cosigner, Signer, Verifier};
use syncgate::audit::{Event, EventKind};
use syncgate::store::{Store, StoreOptions, signing_key};
use uuid::Uuid;

use crate::admin_auth::assert_graph_error;
use crate::admin_log::{Backend, LogWorld};
use crate::checkpoints::{Log, append, audit, audit_without_log};

fn hash(value: &Value) -> Hash {
    let bytes = BASE64.decode(value.as_str().unwrap()).unwrap();
    bytes.try_into().unwrap()
}

fn hashes(value: &Value) -> Vec<Hash> {
    value.as_array().unwrap().iter().map(hash).collect()
}

async fn the_api_serves_signed_checkpoints_proofs_and_evidence(backend: Backend) {
    // Signed after every third event: two changes are events 1–4, so the checkpoint of 3
    // covers the first change but not the second's `completed`.
    let world = LogWorld::configured(backend, 2, |raw| {
        raw.checkpoints.every_events = 3;
        raw.checkpoints.every = "1h".into();
    })
    .await;
    let key_file = world.raw.checkpoints.key.clone().unwrap();
    let signer = signing_key::load_or_create(&key_file, None).unwrap();
    let key = Verifier::parse(&signer.verifier_key()).unwrap();

    let (resp, body) = world.get(&world.auditor, "/api/v1/checkpoints").await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    let listed = body["value"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    assert_eq!(listed[0]["size"], 3);
    let signed = Checkpoint::parse(key.open(listed[0]["note"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!((signed.size, signed.root), (3, hash(&listed[0]["root"])));

    // The first change's evidence: both its events, in the signed tree of 3.
    let first = &world.operations[0];
    let (resp, body) = world
        .get(
            &world.auditor,
            &format!("/api/v1/operations/{first}/evidence"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    let pack: EvidencePack = serde_json::from_value(body).unwrap();
    let verified = evidence::verify(&pack, &key).unwrap();
    assert_eq!(verified.size, 3);
    let seqs: Vec<u64> = verified.events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, [1, 2]);
    // The second's `completed` (seq 4) is newer than any checkpoint: 409, said so.
    let second = &world.operations[1];
    let (resp, _) = world
        .get(
            &world.auditor,
            &format!("/api/v1/operations/{second}/evidence"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT);
    assert_graph_error(&resp, "SyncgateNotYetSigned", "evidence of seq 4");

    // An inclusion proof in the latest checkpoint, with its note.
    let (resp, body) = world
        .get(&world.auditor, "/api/v1/proofs/inclusion?seq=2")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["size"].as_u64(), body["leaf_index"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(body["checkpoint"], listed[0]["note"]);
    assert_eq!(hash(&body["root"]), signed.root);
    let leaf = merkle::leaf_hash(pack.events[1].event.as_bytes());
    assert!(merkle::verify_inclusion(
        1,
        3,
        &leaf,
        &hashes(&body["proof"]),
        &signed.root
    ));

    // The whole log's root (what verify states) and a consistency proof from the signed 3.
    let (_, verified_log) = world.get(&world.auditor, "/api/v1/verify").await;
    assert_eq!(verified_log["ok"], true, "{verified_log}");
    assert_eq!(verified_log["checkpoints_checked"], 1, "{verified_log}");
    let root_4: Hash = hex::decode(verified_log["tree_root"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let (resp, body) = world
        .get(&world.auditor, "/api/v1/proofs/consistency?old=3&new=4")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert!(merkle::verify_consistency(
        3,
        4,
        &signed.root,
        &root_4,
        &hashes(&body["proof"])
    ));
    let (resp, body) = world
        .get(&world.auditor, "/api/v1/proofs/inclusion?seq=4&size=4")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["checkpoint"], Value::Null);
    assert_eq!(hash(&body["root"]), root_4);

    // The API's verify against a checkpoint kept elsewhere: the one listed matches; one of a
    // different history of the same size, signed by the same key, is named.
    let kept = listed[0]["note"].as_str().unwrap();
    let encode = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let verify_kept = |notes: String| {
        format!(
            "/api/v1/verify?key={}&checkpoints={}",
            encode(&signer.verifier_key()),
            encode(&notes)
        )
    };
    let (resp, body) = world
        .get(&world.auditor, &verify_kept(kept.to_owned()))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["checkpoints"][0]["finding"], "matches", "{body}");
    let other = signer
        .sign(
            &Checkpoint {
                root: [7; 32],
                ..signed.clone()
            }
            .text(),
        )
        .unwrap();
    let (resp, body) = world
        .get(&world.auditor, &verify_kept(format!("{kept}\n{other}")))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], false, "{body}");
    let findings: Vec<&str> = body["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding"].as_str().unwrap())
        .collect();
    assert_eq!(findings, ["matches", "forked"], "{body}");
    // A checkpoint by another key, or a key without checkpoints: 400.
    let impostor = Signer::from_seed(signer.name(), &[5; 32]).unwrap();
    let (resp, _) = world
        .get(
            &world.auditor,
            &format!(
                "/api/v1/verify?key={}&checkpoints={}",
                encode(&signer.verifier_key()),
                encode(&impostor.sign(&signed.text()).unwrap())
            ),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let (resp, _) = world
        .get(
            &world.auditor,
            &format!("/api/v1/verify?key={}", encode(&signer.verifier_key())),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);

    // Questions with no answer are the client's: 400, Graph-shaped.
    // A tree the log does not reach is no resource: 404.
    for missing in [
        "/api/v1/proofs/inclusion?seq=5&size=5",
        "/api/v1/proofs/inclusion?seq=4&size=3",
        "/api/v1/proofs/consistency?old=3&new=5",
    ] {
        let (resp, body) = world.get(&world.auditor, missing).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert_graph_error(&resp, "NotFound", missing);
    }
    for bad in [
        "/api/v1/proofs/inclusion?seq=0&size=4",
        "/api/v1/proofs/inclusion",
        "/api/v1/proofs/inclusion?seq=1&size=-1",
        "/api/v1/proofs/inclusion?seq=1&sise=4",
        "/api/v1/proofs/consistency?old=4&new=3",
        "/api/v1/proofs/consistency?old=0&new=3",
        "/api/v1/proofs/consistency?old=1",
        "/api/v1/checkpoints?limit=0",
        "/api/v1/checkpoints?limit=101",
        "/api/v1/operations/not-a-guid/evidence",
    ] {
        let (resp, body) = world.get(&world.auditor, bad).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_graph_error(&resp, "BadRequest", bad);
    }
    let unknown = Uuid::now_v7();
    let (resp, _) = world
        .get(
            &world.auditor,
            &format!("/api/v1/operations/{unknown}/evidence"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    world.finish().await;
}

#[tokio::test]
async fn the_api_serves_signed_checkpoints_proofs_and_evidence_on_sqlite() {
    the_api_serves_signed_checkpoints_proofs_and_evidence(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_api_serves_signed_checkpoints_proofs_and_evidence_on_postgres() {
    the_api_serves_signed_checkpoints_proofs_and_evidence(Backend::Postgres).await;
}

/// `syncgate audit verify-evidence FILE --key VKEY`, with no database named or reachable.
fn verify_evidence(file: &Path, key: &str) -> (bool, String, String) {
    audit_without_log(&["verify-evidence", file.to_str().unwrap(), "--key", key])
}

#[tokio::test]
async fn an_evidence_pack_verifies_offline_and_an_edited_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let operation = Uuid::now_v7();
    {
        let store = Store::open(&db, StoreOptions::default()).await.unwrap();
        append_events(&store, 3, "before").await;
        for kind in [EventKind::Received, EventKind::Completed] {
            let mut e = Event::new(operation, kind);
            e.method = "PATCH".into();
            e.canonical_path = "/v1.0/policies/crosstenantaccesspolicy/partners/x".into();
            store.append(e).await.unwrap();
            append_events(&store, 2, "between").await;
        }
        // The writer signs the log at close.
        store.close().await;
    }
    let (ok, vkey, stderr) = audit(&db, &["key"]);
    assert!(ok, "{stderr}");
    let vkey = vkey.trim().to_owned();
    let elsewhere = tempfile::tempdir().unwrap();
    let pack_file = elsewhere.path().join("pack.json");
    let id = operation.to_string();
    let (ok, _, stderr) = audit(&db, &["evidence", &id, "-o", pack_file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("(2 events"), "{stderr}");
    // An existing file is never replaced.
    let (ok, _, stderr) = audit(&db, &["evidence", &id, "-o", pack_file.to_str().unwrap()]);
    assert!(!ok && stderr.contains("cannot create"), "{stderr}");

    // The log is gone: the pack alone, and the key, are enough.
    drop(dir);
    let (ok, stdout, stderr) = verify_evidence(&pack_file, &vkey);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("evidence OK: 2 events of operation {id}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("seq 4") && stdout.contains("seq 7"),
        "{stdout}"
    );
    assert!(stdout.contains("signed it at 9 events"), "{stdout}");

    // One event edited (its method), as someone handing the pack on might.
    let text = std::fs::read_to_string(&pack_file).unwrap();
    let mut pack: Value = serde_json::from_str(&text).unwrap();
    let event = pack["events"][1]["event"].as_str().unwrap().to_owned();
    assert!(event.contains("\"PATCH\""), "{event}");
    pack["events"][1]["event"] = Value::String(event.replacen("\"PATCH\"", "\"DELETE\"", 1));
    let edited = elsewhere.path().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&pack).unwrap()).unwrap();
    let (ok, _, stderr) = verify_evidence(&edited, &vkey);
    assert!(!ok);
    assert!(
        stderr.contains("does NOT verify")
            && stderr.contains("event seq 7 is NOT the event the log signed"),
        "{stderr}"
    );

    // The same pack checked with another log's key, and a pack with a field of its own.
    let other = Signer::from_seed(Verifier::parse(&vkey).unwrap().name(), &[9; 32]).unwrap();
    let (ok, _, stderr) = verify_evidence(&pack_file, &other.verifier_key());
    assert!(
        !ok && stderr.contains("not signed by the key given"),
        "{stderr}"
    );
    let mut pack: Value = serde_json::from_str(&text).unwrap();
    pack["verified"] = Value::Bool(true);
    std::fs::write(&edited, serde_json::to_vec(&pack).unwrap()).unwrap();
    let (ok, _, stderr) = verify_evidence(&edited, &vkey);
    assert!(!ok && stderr.contains("not an evidence pack"), "{stderr}");
}

async fn append_events(store: &Store, n: usize, label: &str) {
    for i in 0..n {
        let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
        e.method = "PATCH".into();
        e.canonical_path = format!("/v1.0/policies/{label}/{i}");
        store.append(e).await.unwrap();
    }
}

#[tokio::test]
async fn prove_consistency_links_kept_checkpoints_and_a_rewritten_log_cannot() {
    let log = Log::new(5).await;
    let c5 = log.keep("c5", &log.signer);
    append(&log.db, 3, "more").await;
    let c8 = log.keep("c8", &log.signer);
    let (ok, stdout, stderr) = audit(
        &log.db,
        &["prove-consistency", &c5, &c8, "--key", &log.vkey],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("5 events is a prefix of the one of 8"),
        "{stderr}"
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("old 5"));
    let proof: Vec<&str> = lines.collect();
    assert!(!proof.is_empty() && proof.len() <= 4, "{stdout}");
    // Sizes alone: the proof, checked against nothing.
    let (ok, by_size, stderr) = audit(&log.db, &["prove-consistency", "5", "8"]);
    assert!(ok, "{stderr}");
    assert_eq!(by_size, stdout);
    // A checkpoint file needs the key it must be signed with.
    let (ok, _, stderr) = audit(&log.db, &["prove-consistency", &c5, "8"]);
    assert!(!ok && stderr.contains("--key"), "{stderr}");

    // The insider rewrites everything after seq 3, its own checkpoints and tree included,
    // re-chains it, and signs the new history with the log's key (held by the same insider).
    log.cut_after(3).await;
    log.tamper("DELETE FROM checkpoints").await;
    append(&log.db, 5, "rewritten").await;
    let (ok, _, stderr) = audit(&log.db, &["reindex"]);
    assert!(ok, "{stderr}");
    let c8b = log.keep("c8b", &log.signer);
    let (ok, _, stderr) = audit(
        &log.db,
        &["prove-consistency", &c5, &c8b, "--key", &log.vkey],
    );
    assert!(!ok);
    assert!(
        stderr.contains("does NOT link the two checkpoints"),
        "{stderr}"
    );
    // And the kept c8 names the rewrite.
    let (ok, _, stderr) = log.verify(&[&c5, &c8]);
    assert!(!ok && stderr.contains("REWRITTEN"), "{stderr}");
}

/// What the test witness has taken: each checkpoint's size, and the tree it last holds.
#[derive(Default)]
struct WitnessBook {
    taken: Vec<u64>,
    holds: Option<(u64, Hash)>,
    refused: Vec<String>,
}

/// A C2SP tlog-witness `add-checkpoint` endpoint on `listener`, as a witness the log's owner
/// does not run would act: it takes a checkpoint only when signed by the log's key and proved
/// consistent with the one it holds, and co-signs it.
fn serve_witness(
    listener: tokio::net::TcpListener,
    log_key: Verifier,
    book: std::sync::Arc<std::sync::Mutex<WitnessBook>>,
    witness: Cosigner,
) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let witness = std::sync::Arc::new(witness);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log_key, book, witness) = (log_key.clone(), book.clone(), witness.clone());
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (log_key, book, witness) = (log_key.clone(), book.clone(), witness.clone());
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let text = String::from_utf8(body.to_vec()).unwrap();
                        let (status, answer) = take(&text, &log_key, &book, &witness);
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The witness's judgement of one `add-checkpoint` body.
fn take(
    text: &str,
    log_key: &Verifier,
    book: &std::sync::Mutex<WitnessBook>,
    witness: &Cosigner,
) -> (StatusCode, String) {
    let mut book = book.lock().unwrap();
    let refuse = |book: &mut WitnessBook, why: String| {
        book.refused.push(why.clone());
        (StatusCode::BAD_REQUEST, why)
    };
    let (head, note) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let old: u64 = lines
        .next()
        .unwrap()
        .strip_prefix("old ")
        .unwrap()
        .parse()
        .unwrap();
    let proof: Vec<Hash> = lines
        .map(|l| BASE64.decode(l).unwrap().try_into().unwrap())
        .collect();
    let Ok(body) = log_key.open(note) else {
        return refuse(&mut book, "not signed by the log's key".into());
    };
    let checkpoint = Checkpoint::parse(body).unwrap();
    let held = book.holds.map_or(0, |(size, _)| size);
    if old != held {
        return (StatusCode::CONFLICT, format!("{held}\n"));
    }
    if let Some((size, root)) = book.holds {
        if !merkle::verify_consistency(size, checkpoint.size, &root, &checkpoint.root, &proof) {
            return refuse(
                &mut book,
                format!("{size} to {} is not consistent", checkpoint.size),
            );
        }
    }
    book.taken.push(checkpoint.size);
    book.holds = Some((checkpoint.size, checkpoint.root));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (StatusCode::OK, witness.cosign(body, now).unwrap())
}

#[tokio::test]
async fn a_witness_that_is_down_gets_every_checkpoint_when_it_returns_and_co_signs_them() {
    // Ports nothing listens on yet.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, other_port) = (free_port(), free_port());
    let witness = || Cosigner::from_seed("witness.example/a", &[42; 32]).unwrap();
    // witness-b is configured with a key its server does not co-sign with.
    let expected_of_b = Cosigner::from_seed("witness.example/b", &[43; 32]).unwrap();
    let witness_at = |name: &str, port: u16, key: String| syncgate::config::RawWitness {
        name: name.into(),
        file: None,
        url: Some(format!("http://127.0.0.1:{port}/add-checkpoint")),
        syslog: None,
        timeout: "2s".into(),
        key: Some(key),
    };
    let mut world = LogWorld::configured(Backend::Sqlite, 0, |raw| {
        raw.checkpoints.every_events = 2;
        raw.checkpoints.retry_max = "200ms".into();
        raw.checkpoints.witnesses = vec![
            witness_at("witness-a", port, witness().verifier_key()),
            witness_at("witness-b", other_port, expected_of_b.verifier_key()),
        ];
    })
    .await;
    // Governed changes go through while the witness is down.
    let url = world.proxy.url.clone();
    for _ in 0..4 {
        world.change(&url).await;
    }
    // The writer signs right after it answers the group's appends: wait for the fourth.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let (_, body) = world.get(&world.auditor, "/api/v1/checkpoints").await;
        let signed: Vec<u64> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["size"].as_u64().unwrap())
            .rev()
            .collect();
        if signed == [2, 4, 6, 8] {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["cosignatures"] == serde_json::json!([]))
    );

    // The witness comes up on that port.
    let key_file = world.raw.checkpoints.key.clone().unwrap();
    let log_key = Verifier::parse(
        &signing_key::load_or_create(&key_file, None)
            .unwrap()
            .verifier_key(),
    )
    .unwrap();
    let book = std::sync::Arc::new(std::sync::Mutex::new(WitnessBook::default()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    serve_witness(listener, log_key.clone(), book.clone(), witness());
    let book_of_b = std::sync::Arc::new(std::sync::Mutex::new(WitnessBook::default()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", other_port))
        .await
        .unwrap();
    let impostor = Cosigner::from_seed("witness.example/b", &[44; 32]).unwrap();
    serve_witness(listener, log_key, book_of_b.clone(), impostor);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, body) = world.get(&world.auditor, "/api/v1/checkpoints").await;
        let cosigned = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["cosignatures"].as_array().is_some_and(|s| s.len() == 1));
        if cosigned {
            // Only witness-a's, each a C2SP co-signature of the very checkpoint.
            let key = CosignatureVerifier::parse(&witness().verifier_key()).unwrap();
            for c in body["value"].as_array().unwrap() {
                let cosignature = &c["cosignatures"][0];
                assert_eq!(cosignature["witness"], "witness-a");
                let line = cosignature["signature"].as_str().unwrap();
                assert!(line.starts_with("— witness.example/a "), "{cosignature}");
                let note = c["note"].as_str().unwrap();
                let text = &note[..note.rfind("\n\n").unwrap() + 1];
                key.verify(text, line, u64::MAX / 2).unwrap();
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never co-signed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    {
        let book = book.lock().unwrap();
        assert_eq!(
            book.taken,
            [2, 4, 6, 8],
            "in order, each proved from the one before"
        );
        assert!(book.refused.is_empty(), "{:?}", book.refused);
    }
    // witness-b took them too, but its answers do not verify with its configured key: each
    // attempt failed, and the retry that found the witness already holding the checkpoint
    // moved on saying no co-signature came. Nothing of witness-b's is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (resp, body) = world.get(&world.auditor, "/api/v1/witnesses").await;
        assert_eq!(resp.status, StatusCode::OK, "{body}");
        let witnesses = body["value"].as_array().unwrap();
        if witnesses.len() == 2 && witnesses[1]["delivered"] == 8 {
            let (a, b) = (&witnesses[0], &witnesses[1]);
            assert_eq!(a["witness"], "witness-a");
            assert_eq!(a["delivered"], 8);
            assert_eq!(a["failed_attempts"], 0);
            assert_eq!(a["last_error"], Value::Null);
            assert_eq!(b["witness"], "witness-b");
            assert_eq!(
                b["last_error"],
                "the witness holds 8 events; no co-signature by witness.example/b of checkpoint 8 \
                 was received",
                "{b}"
            );
            assert!(
                b["last_attempt"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{b}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(book_of_b.lock().unwrap().taken, [2, 4, 6, 8]);
    // The refused co-signatures were failures, in the metrics.
    let (resp, _) = world.get(&world.auditor, "/metrics").await;
    assert_eq!(resp.status, StatusCode::OK);
    let metrics = String::from_utf8_lossy(&resp.body);
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("syncgate_witness_failures_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failures >= Some(4), "{metrics}");
    let (_, body) = world.get(&world.auditor, "/api/v1/checkpoints").await;
    assert!(!body.to_string().contains("witness-b"), "{body}");
    // And the next one goes at once, proved from 8.
    world.change(&url).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while book.lock().unwrap().taken.last() != Some(&10) {
        assert!(std::time::Instant::now() < deadline, "10 never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    world.finish().await;
}

#[tokio::test]
async fn quick_verification_trusts_what_the_key_signed_and_nothing_else() {
    // 5 events signed at close, 3 more signed at the next close: stored checkpoints of 5 and 8.
    let log = Log::new(5).await;
    append(&log.db, 3, "more").await;
    let quick = |extra: &[&str]| {
        let mut args = vec!["verify", "--quick", "--key", &log.vkey];
        args.extend(extra);
        audit(&log.db, &args)
    };
    let (ok, stdout, stderr) = quick(&[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("audit log OK (quick): 8 events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("events 1 to 8 are exactly what the key signed (0 checkpoints kept elsewhere and 2 stored in the log match); the 0 after them"),
        "{stdout}"
    );
    // --quick needs the key.
    let (ok, _, stderr) = audit(&log.db, &["verify", "--quick"]);
    assert!(!ok && stderr.contains("--key"), "{stderr}");

    // Events the writer has not signed yet are checked in full: an edit to the text of one
    // (its chain recomputed by hand would still need the stored text canonical) is BROKEN.
    log.tamper("DROP TRIGGER audit_events_no_update").await;
    log.tamper("DELETE FROM checkpoints WHERE size = 8").await;
    log.tamper(
        "UPDATE audit_events SET event = replace(event, '\"PATCH\"', '\"PATCH\" ') WHERE seq = 7",
    )
    .await;
    let (ok, _, stderr) = quick(&[]);
    assert!(!ok);
    assert!(stderr.contains("BROKEN at seq 7"), "{stderr}");
}

#[tokio::test]
async fn quick_verification_names_a_rewrite_a_cut_and_a_forged_stored_checkpoint() {
    let log = Log::new(5).await;
    let c5 = log.keep("c5", &log.signer);
    append(&log.db, 3, "honest").await;
    // Rewritten after seq 6 and re-chained by the writer; the stored checkpoint of 8 is the
    // honest history's.
    log.cut_after(6).await;
    append(&log.db, 2, "forged").await;
    let (ok, _, stderr) = audit(&log.db, &["verify", "--quick", "--key", &log.vkey]);
    assert!(!ok);
    assert!(
        stderr.contains("REWRITTEN") && stderr.contains("stored in the log at 8 events"),
        "{stderr}"
    );
    // A kept checkpoint still matches: it is named as such, the stored one as rewritten.
    let (ok, _, stderr) = audit(
        &log.db,
        &["verify", "--quick", "--key", &log.vkey, "--checkpoint", &c5],
    );
    assert!(!ok && stderr.contains("REWRITTEN"), "{stderr}");

    // The insider also replaces the stored checkpoints with one of their own making (and
    // rebuilds the tree, which is derived).
    log.tamper("DELETE FROM checkpoints").await;
    let (ok, _, stderr) = audit(&log.db, &["reindex"]);
    assert!(ok, "{stderr}");
    let impostor = Signer::from_seed(log.signer.name(), &[13; 32]).unwrap();
    let (size, root) = log.head();
    let body = Checkpoint {
        origin: log.signer.name().to_owned(),
        size,
        root,
        extensions: vec![],
    };
    let note = impostor.sign(&body.text()).unwrap();
    log.tamper(&format!(
        "INSERT INTO checkpoints (size, root, time, note) VALUES ({size}, x'{}', '2026-11-30T10:00:00Z', '{note}')",
        hex::encode(root)
    ))
    .await;
    let (ok, _, stderr) = audit(&log.db, &["verify", "--quick", "--key", &log.vkey]);
    assert!(
        !ok && stderr.contains("checkpoints the key did not sign (sizes [8])"),
        "{stderr}"
    );
    // With them all gone, the kept checkpoint of 5 still tells.
    log.tamper("DELETE FROM checkpoints").await;
    let (ok, stdout, stderr) = audit(
        &log.db,
        &["verify", "--quick", "--key", &log.vkey, "--checkpoint", &c5],
    );
    assert!(ok, "the first 5 events are the signed ones: {stderr}");
    assert!(
        stdout.contains("events 1 to 5 are exactly what the key signed"),
        "{stdout}"
    );
}
