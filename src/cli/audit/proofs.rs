//! `syncgate audit evidence|verify-evidence|prove-consistency`: what the log's Merkle tree and
//! signed checkpoints prove, as files an auditor hands on (docs/transparency.md).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use uuid::Uuid;

use crate::audit::evidence::{self, EvidencePack, MAX_PACK_BYTES};
use crate::audit::kept::{Kept, read_notes};
use crate::audit::merkle::{self, Hash};
use crate::audit::note::{Checkpoint, Verifier};
use crate::store::StoreReader;

/// Write the evidence pack of one operation to `output` (created, never replaced) or stdout.
pub(super) async fn run_evidence(
    reader: &StoreReader,
    operation_id: Uuid,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let pack = reader
        .evidence(operation_id.into())
        .await
        .with_context(|| format!("cannot gather the evidence of operation {operation_id}"))?
        .ok_or_else(|| anyhow!("the log holds no operation {operation_id}"))?;
    let mut text = serde_json::to_string_pretty(&pack)?;
    text.push('\n');
    match output {
        None => print!("{text}"),
        Some(path) => {
            write_new(path, text.as_bytes())?;
            eprintln!(
                "syncgate: wrote the evidence of operation {operation_id} ({} events, each with \
                 its inclusion proof in a signed checkpoint) to {}.",
                pack.events.len(),
                path.display()
            );
        }
    }
    Ok(())
}

/// `--key`, parsed.
pub(super) fn verifier(key: &str) -> anyhow::Result<Verifier> {
    Verifier::parse(key).context("--key is not a verifier key")
}

/// Check an evidence pack offline against the log's verifier key: no database is opened.
pub(super) fn run_verify_evidence(file: &Path, key: &str) -> anyhow::Result<()> {
    let verifier = verifier(key)?;
    let text = read_bounded(file, MAX_PACK_BYTES)?;
    let pack: EvidencePack = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an evidence pack", file.display()))?;
    let verified = evidence::verify(&pack, &verifier)
        .with_context(|| format!("the evidence in {} does NOT verify", file.display()))?;
    println!(
        "syncgate: evidence OK: {} events of operation {} are in the log {} as its key signed \
         it at {} events (root {}{}).",
        verified.events.len(),
        pack.operation_id,
        verified.origin,
        verified.size,
        hex::encode(verified.root),
        verified
            .time
            .as_deref()
            .map(|t| format!(", signed {t}"))
            .unwrap_or_default()
    );
    for (seq, kind, time) in &verified.events {
        println!("syncgate:   seq {seq}  {time}  {kind}.");
    }
    Ok(())
}

/// One end of a consistency proof: a tree size, or a signed checkpoint file (then its root is
/// checked too).
#[derive(Debug, Clone)]
pub(crate) enum End {
    Size(u64),
    File(PathBuf),
}

pub(crate) fn parse_end(s: &str) -> Result<End, String> {
    match s.parse::<u64>() {
        Ok(size) => Ok(End::Size(size)),
        Err(_) => Ok(End::File(PathBuf::from(s))),
    }
}

/// Print the consistency proof from the tree of OLD events to the tree of NEW (C2SP
/// tlog-witness's form: `old <size>`, then one base64 hash per line). When both are signed
/// checkpoints, also check the proof against their roots: a log that rewrote anything up to
/// OLD's size cannot produce one.
pub(super) async fn run_prove_consistency(
    reader: &StoreReader,
    old: &End,
    new: &End,
    key: Option<&str>,
) -> anyhow::Result<()> {
    let verifier = key.map(verifier).transpose()?;
    let (old_size, old_root) = end(old, verifier.as_ref())?;
    let (new_size, new_root) = end(new, verifier.as_ref())?;
    let proof = reader
        .consistency_proof(old_size, new_size)
        .await
        .with_context(|| format!("cannot prove {old_size} events consistent with {new_size}"))?;
    let mut out = format!("old {old_size}\n");
    for hash in &proof {
        out.push_str(&BASE64.encode(hash));
        out.push('\n');
    }
    if let (Some(old_root), Some(new_root)) = (old_root, new_root) {
        if !merkle::verify_consistency(old_size, new_size, &old_root, &new_root, &proof) {
            return Err(anyhow!(
                "the log's tree does NOT link the two checkpoints: the log was rewritten at or \
                 before its first {old_size} events, or the checkpoints are of two histories"
            ));
        }
        print!("{out}");
        eprintln!(
            "syncgate: the checkpoint of {old_size} events is a prefix of the one of {new_size} \
             (the proof verified against both signed roots)."
        );
    } else {
        print!("{out}");
    }
    Ok(())
}

/// A size and, for a checkpoint file, its signed root.
fn end(end: &End, key: Option<&Verifier>) -> anyhow::Result<(u64, Option<Hash>)> {
    match end {
        End::Size(size) => Ok((*size, None)),
        End::File(path) => {
            let key = key.ok_or_else(|| {
                anyhow!(
                    "{} is a checkpoint file: name the key it must be signed with (--key)",
                    path.display()
                )
            })?;
            let checkpoint = read_checkpoint(path, key)?;
            Ok((checkpoint.size, Some(checkpoint.root)))
        }
    }
}

/// The largest file of kept checkpoints read (a file witness's, a few hundred bytes a note).
const MAX_CHECKPOINT_FILE: u64 = 256 * 1024 * 1024;

/// The one checkpoint in the signed note `path`, signed by `key` for the log `key` names.
pub(super) fn read_checkpoint(path: &Path, key: &Verifier) -> anyhow::Result<Checkpoint> {
    let mut all = read_checkpoints(path, key)?;
    match all.len() {
        1 => Ok(all.remove(0).checkpoint),
        n => Err(anyhow!(
            "{} holds {n} checkpoints: name a file of one here",
            path.display()
        )),
    }
}

/// Every checkpoint in `path`: one signed note, or several one after another (what a file
/// witness appends), each signed by `key` for the log `key` names.
pub(super) fn read_checkpoints(path: &Path, key: &Verifier) -> anyhow::Result<Vec<Kept>> {
    let text = read_bounded(path, MAX_CHECKPOINT_FILE)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{} is not a signed checkpoint", path.display()))?;
    Ok(read_notes(&text, key, &path.display().to_string())?)
}

/// A file's bytes, refused beyond `limit` (a pack or note is small; a huge file is a mistake
/// or an attack, not something to read whole).
pub(super) fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(anyhow!(
            "{} is larger than {limit} bytes: not one this command reads",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Create `path` (never replacing a file) with `bytes`, on disk when this returns.
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `syncgate audit verify --quick --key VKEY [--checkpoint FILE...]`: the log against what the
/// key signed (`store/quick.rs`).
pub(super) async fn run_verify_quick(
    reader: &StoreReader,
    verifier: &Verifier,
    kept: Vec<Kept>,
) -> anyhow::Result<()> {
    let kept_count = kept.len();
    let verified = reader
        .verify_signed(verifier, kept)
        .await
        .with_context(|| format!("cannot verify {}", reader.location()))?;
    let pass = &verified.pass;
    if let Some(broken) = &pass.first_broken {
        return Err(anyhow!(
            "audit log BROKEN at seq {}: {}; {} events before it verified",
            broken.seq,
            broken.reason,
            pass.events
        ));
    }
    if !verified.forged.is_empty() {
        return Err(anyhow!(
            "the log stores checkpoints the key did not sign (sizes {:?}): forged, or signed \
             with another key",
            verified.forged
        ));
    }
    let problems = crate::audit::kept::problems(&verified.findings);
    if !problems.is_empty() {
        return Err(anyhow!(
            "the chain holds ({} events), but not against the signed checkpoints: {}",
            pass.events,
            problems.join("; ")
        ));
    }
    let (tail, broken) = &verified.tail;
    if let Some(broken) = broken {
        return Err(anyhow!(
            "audit log BROKEN at seq {} (after the {} signed events): {}",
            broken.seq,
            verified.covered,
            broken.reason
        ));
    }
    println!(
        "syncgate: audit log OK (quick): {} events, head {}.",
        pass.events,
        if pass.events == 0 {
            "(empty log)"
        } else {
            pass.head.hash.as_str()
        }
    );
    println!(
        "syncgate: events 1 to {} are exactly what the key signed ({} checkpoints kept \
         elsewhere and {} stored in the log match); the {tail} after them were verified in full.",
        verified.covered, kept_count, verified.stored
    );
    println!(
        "syncgate: not checked: the filter columns of the signed events and the operations \
         index (run audit verify without --quick)."
    );
    Ok(())
}
