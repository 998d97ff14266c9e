//! Issue 11: `syncgate audit verify --checkpoint FILE... --key VKEY` against an insider who can
//! write the database but not reach the checkpoints kept elsewhere. Each move is made as such an
//! insider would make it (the append-only triggers dropped, rows deleted, new events appended
//! through the store, whose writer re-computes the chain so that it verifies), and each is
//! detected and named.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, Executor};
use syncgate::audit::note::{Checkpoint, Signer};
use syncgate::audit::{Event, EventKind};
use syncgate::store::{Store, StoreOptions, signing_key};
use tempfile::TempDir;
use uuid::Uuid;

use crate::harness::syncgate_bin;

pub(crate) struct Log {
    pub(crate) dir: TempDir,
    pub(crate) db: PathBuf,
    pub(crate) signer: Signer,
    pub(crate) vkey: String,
}

pub(crate) fn audit(db: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--db", db.to_str().unwrap()]);
    audit_without_log(&all)
}

/// `syncgate audit ARGS`, naming no log and reading no configuration: success, stdout, stderr.
pub(crate) fn audit_without_log(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(syncgate_bin())
        .arg("audit")
        .args(args)
        .env_remove("SYNCGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) async fn append(db: &Path, n: usize, label: &str) {
    let store = Store::open(db, StoreOptions::default()).await.unwrap();
    for i in 0..n {
        let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
        e.method = "PATCH".into();
        e.canonical_path = format!("/v1.0/policies/{label}/{i}");
        store.append(e).await.unwrap();
    }
    store.close().await;
}

impl Log {
    pub(crate) async fn new(events: usize) -> Log {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        append(&db, events, "first").await;
        let (ok, vkey, stderr) = audit(&db, &["key"]);
        assert!(ok, "{stderr}");
        let signer = signing_key::load_or_create(&signing_key::key_path(&db), None).unwrap();
        Log {
            dir,
            db,
            signer,
            vkey: vkey.trim().to_owned(),
        }
    }

    /// The log's size and tree root now, as `audit verify` states them.
    pub(crate) fn head(&self) -> (u64, [u8; 32]) {
        let (ok, stdout, stderr) = audit(&self.db, &["verify"]);
        assert!(ok, "{stderr}");
        let line = stdout.lines().find(|l| l.contains("tree root")).unwrap();
        let words: Vec<&str> = line.trim_end_matches('.').split(' ').collect();
        let size = words[words.len() - 4].parse().unwrap();
        let root = hex::decode(words[words.len() - 1]).unwrap();
        (size, root.try_into().unwrap())
    }

    /// A checkpoint of the log as it is now, signed by `signer`, kept in a file of its own.
    pub(crate) fn keep(&self, file: &str, signer: &Signer) -> String {
        let (size, root) = self.head();
        self.keep_as(file, signer, size, root)
    }

    fn keep_as(&self, file: &str, signer: &Signer, size: u64, root: [u8; 32]) -> String {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            root,
            extensions: vec!["time 2026-11-30T10:00:00Z".into()],
        };
        let path = self.dir.path().join(file);
        std::fs::write(&path, signer.sign(&checkpoint.text()).unwrap()).unwrap();
        path.to_str().unwrap().to_owned()
    }

    pub(crate) fn verify(&self, checkpoints: &[&str]) -> (bool, String, String) {
        let mut args = vec!["verify", "--key", &self.vkey];
        for c in checkpoints {
            args.extend(["--checkpoint", c]);
        }
        audit(&self.db, &args)
    }

    /// Run `sql` on the file with the checkpoints table's append-only triggers dropped.
    pub(crate) async fn tamper(&self, sql: &str) {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        conn.execute("DROP TRIGGER IF EXISTS checkpoints_no_delete")
            .await
            .unwrap();
        conn.execute(sql).await.unwrap();
        conn.close().await.unwrap();
    }

    /// Delete the events after `seq`, as someone with write access to the file can.
    pub(crate) async fn cut_after(&self, seq: u64) {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        conn.execute("DROP TRIGGER audit_events_no_delete")
            .await
            .unwrap();
        conn.execute(format!("DELETE FROM audit_events WHERE seq > {seq}").as_str())
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_intact_log_matches_its_kept_checkpoints() {
    let log = Log::new(5).await;
    let c5 = log.keep("c5", &log.signer);
    append(&log.db, 3, "more").await;
    let c8 = log.keep("c8", &log.signer);
    let (ok, stdout, stderr) = log.verify(&[&c5, &c8]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("c5 (5 events) matches the log"), "{stdout}");
    assert!(stdout.contains("c8 (8 events) matches the log"), "{stdout}");
    // --checkpoint without the key that must have signed it is refused by the parser.
    let (ok, _, stderr) = audit(&log.db, &["verify", "--checkpoint", &c5]);
    assert!(!ok);
    assert!(stderr.contains("--key"), "{stderr}");
}

#[tokio::test]
async fn a_cut_tail_of_one_event_or_a_hundred_is_named() {
    for (events, cut) in [(6, 1), (130, 100)] {
        let log = Log::new(events).await;
        let kept = log.keep("kept", &log.signer);
        log.cut_after((events - cut) as u64).await;
        let (ok, _, stderr) = log.verify(&[&kept]);
        assert!(!ok, "{cut}");
        assert!(stderr.contains("TRUNCATED"), "{cut}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "signed {events} events, the log holds {}: its tail from seq {} was cut",
                events - cut,
                events - cut + 1
            )),
            "{cut}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_rewrite_after_seq_k_with_a_recomputed_chain_is_named() {
    let log = Log::new(5).await;
    let c5 = log.keep("c5", &log.signer);
    append(&log.db, 3, "honest").await;
    let c8 = log.keep("c8", &log.signer);
    // The insider replaces events 7 and 8 with others; the writer re-chains them, so the chain
    // alone verifies.
    log.cut_after(6).await;
    append(&log.db, 2, "forged").await;
    let (ok, _, stderr) = audit(&log.db, &["verify"]);
    assert!(
        !stderr.contains("BROKEN"),
        "the chain alone does not see it: {ok} {stderr}"
    );
    let (ok, _, stderr) = log.verify(&[&c5, &c8]);
    assert!(!ok);
    assert!(stderr.contains("REWRITTEN"), "{stderr}");
    assert!(
        stderr.contains("first changed event is after seq 5 and at or before seq 8"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_checkpoint_signed_by_another_key_or_a_forked_history_is_named() {
    let log = Log::new(4).await;
    let (size, root) = log.head();
    // Re-signed with a key of the insider's own: refused, whatever it says.
    let impostor = Signer::from_seed(log.signer.name(), &[13; 32]).unwrap();
    let forged = log.keep("forged", &impostor);
    let (ok, _, stderr) = log.verify(&[&forged]);
    assert!(!ok);
    assert!(stderr.contains("is not accepted"), "{stderr}");
    // Its key id is not the log key's, so the note carries no signature by the log's key.
    assert!(
        stderr.contains(&format!("no signature by {}", log.signer.name())),
        "{stderr}"
    );
    // A signature line that claims the log's key but was made by another fails outright.
    let note = std::fs::read_to_string(&forged).unwrap();
    let (text, line) = note.rsplit_once("\n\n").unwrap();
    let genuine = std::fs::read_to_string(log.keep("genuine", &log.signer)).unwrap();
    let genuine_line = genuine.rsplit_once("\n\n").unwrap().1;
    let (_, forged_sig) = line.trim_end().rsplit_once(' ').unwrap();
    let (prefix, genuine_sig) = genuine_line.trim_end().rsplit_once(' ').unwrap();
    // The log key's id with the impostor's signature bytes.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut blob = b64.decode(genuine_sig).unwrap()[..4].to_vec();
    blob.extend_from_slice(&b64.decode(forged_sig).unwrap()[4..]);
    let spliced = log.dir.path().join("spliced");
    std::fs::write(
        &spliced,
        format!("{text}\n\n{prefix} {}\n", b64.encode(blob)),
    )
    .unwrap();
    let (ok, _, stderr) = log.verify(&[spliced.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("does not verify"), "{stderr}");
    // Two histories of the same size, both signed by the log's key: one shown to each auditor.
    let shown = log.keep("shown", &log.signer);
    let mut other = root;
    other[0] ^= 1;
    let elsewhere = log.keep_as("elsewhere", &log.signer, size, other);
    let (ok, _, stderr) = log.verify(&[&shown, &elsewhere]);
    assert!(!ok);
    assert!(stderr.contains("FORKED"), "{stderr}");
    assert!(
        stderr.contains(&format!("both sign {size} events")),
        "{stderr}"
    );
}

/// `audit checkpoint` signs the log as it verifies now, with the log's key, into a file that
/// `audit verify --checkpoint` then checks; a broken chain gets no checkpoint.
#[tokio::test]
async fn audit_checkpoint_signs_what_verify_later_checks() {
    let log = Log::new(7).await;
    let file = log.dir.path().join("kept-7");
    let file = file.to_str().unwrap();
    let (ok, _, stderr) = audit(&log.db, &["checkpoint", "-o", file]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("signed a checkpoint of 7 events"),
        "{stderr}"
    );
    let note = std::fs::read_to_string(file).unwrap();
    let verifier = syncgate::audit::note::Verifier::parse(&log.vkey).unwrap();
    let checkpoint = Checkpoint::parse(verifier.open(&note).unwrap()).unwrap();
    assert_eq!((checkpoint.size, checkpoint.root), log.head());
    assert!(checkpoint.extensions[0].starts_with("time "), "{note}");
    let (ok, stdout, stderr) = log.verify(&[file]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(7 events) matches the log"), "{stdout}");
    // An existing file is not replaced; to stdout, the note itself.
    let (ok, _, stderr) = audit(&log.db, &["checkpoint", "-o", file]);
    assert!(!ok);
    assert!(stderr.contains("cannot create"), "{stderr}");
    let (ok, stdout, _) = audit(&log.db, &["checkpoint"]);
    assert!(ok);
    assert!(verifier.open(&stdout).is_ok(), "{stdout}");
    // A log whose chain is broken is not signed.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", log.db.display()))
        .await
        .unwrap();
    conn.execute("DROP TRIGGER audit_events_no_update")
        .await
        .unwrap();
    conn.execute("UPDATE audit_events SET event = replace(event, 'first', 'FIRST') WHERE seq = 2")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (ok, stdout, stderr) = audit(&log.db, &["checkpoint"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("BROKEN at seq 2"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}
