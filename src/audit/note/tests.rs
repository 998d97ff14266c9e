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
