//! The signed-note format against the reference vector of Go's `golang.org/x/mod/sumdb/note`
//! (the key and note of its documentation): Ed25519 is deterministic, so signing the same text
//! with the same key must give the very note Go's implementation gives.

use super::*;

const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn peter() -> Signer {
    // PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>; the base64 may hold a '+'.
    let typed = BASE64.decode(SKEY.splitn(5, '+').nth(4).unwrap()).unwrap();
    assert_eq!(typed[0], ED25519_TYPE);
    Signer::from_seed("PeterNeumann", typed[1..].try_into().unwrap()).unwrap()
}

#[test]
fn signing_reproduces_gos_reference_note_and_key() {
    let signer = peter();
    assert_eq!(signer.verifier_key(), VKEY);
    assert_eq!(signer.sign(TEXT).unwrap(), NOTE);
    assert_eq!(Verifier::parse(VKEY).unwrap().open(NOTE).unwrap(), TEXT);
}

#[test]
fn a_note_opens_only_with_its_key_and_unaltered() {
    let peter = Verifier::parse(VKEY).unwrap();
    let altered = NOTE.replace("cryptography", "cryptographY");
    assert_eq!(
        peter.open(&altered),
        Err(NoteError::BadSignature("PeterNeumann".into()))
    );
    let other = Signer::from_seed("PeterNeumann", &[7; 32]).unwrap();
    let other = Verifier::parse(&other.verifier_key()).unwrap();
    assert_eq!(
        other.open(NOTE),
        Err(NoteError::Unsigned("PeterNeumann".into()))
    );
    // A co-signature by a key the verifier does not know is ignored.
    let witness = Signer::from_seed("witness.example", &[9; 32]).unwrap();
    let cosigned = witness.sign(TEXT).unwrap();
    let line = cosigned.rsplit_once("\n\n").unwrap().1;
    let both = format!("{NOTE}{line}");
    assert_eq!(peter.open(&both).unwrap(), TEXT);
    let witness = Verifier::parse(&witness.verifier_key()).unwrap();
    assert_eq!(witness.open(&both).unwrap(), TEXT);
    for broken in [
        "",
        TEXT,
        &NOTE.replace("\u{2014} ", "-- "),
        &NOTE[..NOTE.len() - 1],
        &NOTE.replace("x08go", "x08g!"),
        &format!("{TEXT}\n\n{}", &NOTE[TEXT.len() + 1..]),
    ] {
        assert!(peter.open(broken).is_err(), "{broken:?}");
    }
}

#[test]
fn verifier_keys_are_read_strictly() {
    assert!(Verifier::parse(VKEY).is_ok());
    assert!(Verifier::parse(&format!("{VKEY}\n")).is_ok());
    for bad in [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        "PeterNeumann+c74f20a3+!!!",
    ] {
        assert!(Verifier::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_checkpoint_round_trips_and_is_parsed_strictly() {
    let checkpoint = Checkpoint {
        origin: "syncgate.example/audit".into(),
        size: 1_000_000,
        root: crate::audit::merkle::leaf_hash(b"x"),
        extensions: vec!["time 2026-11-30T09:30:00Z".into()],
    };
    let text = checkpoint.text();
    assert!(
        text.starts_with("syncgate.example/audit\n1000000\n"),
        "{text}"
    );
    assert_eq!(Checkpoint::parse(&text).unwrap(), checkpoint);
    let signer = Signer::from_seed("syncgate.example/audit", &[1; 32]).unwrap();
    let note = signer.sign(&text).unwrap();
    let opened = Verifier::parse(&signer.verifier_key())
        .unwrap()
        .open(&note)
        .unwrap();
    assert_eq!(Checkpoint::parse(opened).unwrap(), checkpoint);
    let root = BASE64.encode(checkpoint.root);
    for bad in [
        "".to_owned(),
        format!("origin\n10\n{root}"),
        format!("\n10\n{root}\n"),
        format!("origin\n010\n{root}\n"),
        format!("origin\n-1\n{root}\n"),
        format!("origin\n99999999999999999999\n{root}\n"),
        format!("origin\n10\n{}\n", &root[..root.len() - 4]),
        "origin\n10\n\n".to_owned(),
    ] {
        assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_file_of_notes_splits_into_each_note_whole() {
    let signer = Signer::from_seed("example.com/log", &[3; 32]).unwrap();
    let one = signer.sign("example.com/log\n5\nAAAA\n").unwrap();
    let two = signer
        .sign("example.com/log\n8\nBBBB\ntime 2026-11-30T10:00:00Z\n")
        .unwrap();
    let file = format!("{one}\n{two}\n");
    assert_eq!(split_notes(&file), [one.as_str(), two.as_str()]);
    // One note without the trailing blank line, and a co-signed note (two signature lines).
    assert_eq!(split_notes(&one), [one.as_str()]);
    let witness = Signer::from_seed("witness.example", &[4; 32]).unwrap();
    let cosigned = format!(
        "{one}{}",
        witness
            .sign("example.com/log\n5\nAAAA\n")
            .unwrap()
            .rsplit("\n\n")
            .next()
            .unwrap()
    );
    let file = format!("{cosigned}\n{two}");
    assert_eq!(split_notes(&file), [cosigned.as_str(), two.as_str()]);
    let key = Verifier::parse(&signer.verifier_key()).unwrap();
    for note in split_notes(&file) {
        key.open(note).unwrap();
    }
    // Text with no signature is no note; a cut note is what it is, for open to refuse.
    assert!(split_notes("example.com/log\n5\nAAAA\n").is_empty());
    let cut = &file[..file.len() - 10];
    let notes = split_notes(cut);
    assert_eq!(notes.len(), 2);
    assert!(key.open(notes[1]).is_err());
}

/// A checkpoint's text, as the log signs it.
const CHECKPOINT: &str =
    "syncgate.test/audit\n1000\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const NOW: u64 = 1_796_000_000;

fn witness() -> Cosigner {
    Cosigner::from_seed("witness.example/w1", &[5; 32]).unwrap()
}

#[test]
fn a_cosignature_verifies_with_its_key_over_the_exact_text_and_time() {
    let witness = witness();
    let key = CosignatureVerifier::parse(&witness.verifier_key()).unwrap();
    assert_eq!(key.name(), "witness.example/w1");
    let line = witness.cosign(CHECKPOINT, NOW - 60).unwrap();
    assert!(line.starts_with("\u{2014} witness.example/w1 ") && line.ends_with('\n'));
    // key id ‖ time ‖ signature.
    let blob = BASE64
        .decode(line.trim_end().rsplit_once(' ').unwrap().1)
        .unwrap();
    assert_eq!(blob.len(), 76);
    assert_eq!(
        u64::from_be_bytes(blob[4..12].try_into().unwrap()),
        NOW - 60
    );
    assert_eq!(key.verify(CHECKPOINT, &line, NOW), Ok(NOW - 60));

    // Among other lines (the log's own signature, another witness's), it is found.
    let log = Signer::from_seed("syncgate.test/audit", &[1; 32]).unwrap();
    let note = log.sign(CHECKPOINT).unwrap();
    let other = Cosigner::from_seed("witness.example/w2", &[6; 32]).unwrap();
    let lines = format!(
        "{}{}{line}",
        note.rsplit_once("\n\n").unwrap().1,
        other.cosign(CHECKPOINT, NOW).unwrap()
    );
    assert_eq!(key.verify(CHECKPOINT, &lines, NOW), Ok(NOW - 60));
    assert_eq!(note_text(&format!("{note}{line}")), Some(CHECKPOINT));

    let bad = Err(NoteError::BadSignature("witness.example/w1".into()));
    // Another checkpoint's text, or the time moved in the line.
    assert_eq!(
        key.verify(&CHECKPOINT.replace("1000", "1001"), &line, NOW),
        bad
    );
    let mut moved = blob.clone();
    moved[11] ^= 1;
    let moved = format!("\u{2014} witness.example/w1 {}\n", BASE64.encode(&moved));
    assert_eq!(key.verify(CHECKPOINT, &moved, NOW), bad);
    // Cut short.
    let short = format!(
        "\u{2014} witness.example/w1 {}\n",
        BASE64.encode(&blob[..70])
    );
    assert_eq!(key.verify(CHECKPOINT, &short, NOW), bad);
    // Not there at all: no line, another key under the same name, a log signature (0x01).
    let unsigned = Err(NoteError::Unsigned("witness.example/w1".into()));
    assert_eq!(key.verify(CHECKPOINT, "", NOW), unsigned);
    let impostor = Cosigner::from_seed("witness.example/w1", &[7; 32]).unwrap();
    assert_eq!(
        key.verify(CHECKPOINT, &impostor.cosign(CHECKPOINT, NOW).unwrap(), NOW),
        unsigned
    );
    let as_log = Signer::from_seed("witness.example/w1", &[5; 32]).unwrap();
    let as_log = as_log.sign(CHECKPOINT).unwrap();
    assert_eq!(
        key.verify(CHECKPOINT, as_log.rsplit_once("\n\n").unwrap().1, NOW),
        unsigned
    );
    // Dated past the allowed skew.
    let future = witness.cosign(CHECKPOINT, NOW + 301).unwrap();
    assert_eq!(
        key.verify(CHECKPOINT, &future, NOW),
        Err(NoteError::FutureCosignature("witness.example/w1".into()))
    );
    assert_eq!(
        key.verify(
            CHECKPOINT,
            &witness.cosign(CHECKPOINT, NOW + 300).unwrap(),
            NOW
        ),
        Ok(NOW + 300)
    );
}

#[test]
fn a_cosignature_key_and_a_log_key_are_not_mistaken_for_each_other() {
    let vkey = witness().verifier_key();
    assert!(CosignatureVerifier::parse(&vkey).is_ok());
    assert_eq!(
        Verifier::parse(&vkey),
        Err(NoteError::Key("not an Ed25519 key (type 0x01)"))
    );
    assert_eq!(
        CosignatureVerifier::parse(VKEY),
        Err(NoteError::Key(
            "not a timestamped Ed25519 co-signature key (type 0x04)"
        ))
    );
    // The id covers the type: the same key with its type byte changed does not parse.
    let (head, key) = vkey.rsplit_once('+').unwrap();
    let mut typed = BASE64.decode(key).unwrap();
    typed[0] = ED25519_TYPE;
    assert!(Verifier::parse(&format!("{head}+{}", BASE64.encode(typed))).is_err());
}
