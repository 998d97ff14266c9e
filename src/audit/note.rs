//! Signed checkpoints in the formats transparency tooling reads (issue 11): C2SP `signed-note`
//! (text, a blank line, then `— <key name> <base64(key id ‖ signature)>` lines) around a C2SP
//! `tlog-checkpoint` body (origin, tree size, base64 root hash, then extension lines).
//!
//! Ed25519 only (signature type `0x01`), through `ring`, which rustls already builds. The key id
//! is the first four bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`; a verifier key is
//! shared as `<name>+<hex key id>+<base64(0x01 ‖ public key)>`, the form Go's `sumdb/note`,
//! Sigsum and the witness network use. Parsing is strict: anything the specifications do not
//! allow is refused, never guessed at.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// Ed25519's signature type byte in key ids and verifier keys.
const ED25519_TYPE: u8 = 0x01;
/// A timestamped Ed25519 co-signature's type byte (C2SP `tlog-cosignature`, `cosignature/v1`).
const COSIGNATURE_TYPE: u8 = 0x04;
/// What a co-signature signs before the checkpoint's text: its header line and `time `.
const COSIGNATURE_HEADER: &str = "cosignature/v1\ntime ";
/// What starts a signature line: an em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The most signature lines a note may carry (Go's `sumdb/note` refuses more).
const MAX_SIGNATURES: usize = 100;
/// The largest note read: a checkpoint is a few hundred bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// Why a note, key or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed key: {0}")]
    Key(&'static str),
    #[error("no signature by {0} on the note")]
    Unsigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(&'static str),
    #[error("the co-signature by {0} is dated in the future")]
    FutureCosignature(String),
}

/// Whether `name` may name a key: not empty, no space of any kind, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The key id of an Ed25519 key called `name`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    typed_key_id(name, ED25519_TYPE, public_key)
}

/// The key id of a key of signature type `kind`: the first four bytes of
/// `SHA-256(name ‖ 0x0A ‖ kind ‖ public key)`.
fn typed_key_id(name: &str, kind: u8, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// `<name>+<hex key id>+<base64(kind ‖ public key)>`.
fn format_vkey(name: &str, kind: u8, public_key: &[u8; 32]) -> String {
    let mut typed = vec![kind];
    typed.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(typed_key_id(name, kind, public_key)),
        BASE64.encode(typed)
    )
}

/// A verifier key of signature type `kind`, parsed strictly: its name, key id and public key.
fn parse_vkey(vkey: &str, kind: u8) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    let mut parts = vkey.trim_end_matches('\n').splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Key("not <name>+<key id>+<key>"));
    };
    if !valid_name(name) {
        return Err(NoteError::Key("the name is empty or holds a space or a +"));
    }
    if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(NoteError::Key("the key id is not 8 lower-case hex digits"));
    }
    let typed = BASE64
        .decode(key)
        .map_err(|_| NoteError::Key("the key is not base64"))?;
    match typed.split_first() {
        Some((&k, _)) if k == kind => {}
        _ if kind == COSIGNATURE_TYPE => {
            return Err(NoteError::Key(
                "not a timestamped Ed25519 co-signature key (type 0x04)",
            ));
        }
        _ => return Err(NoteError::Key("not an Ed25519 key (type 0x01)")),
    }
    let public_key: [u8; 32] = typed[1..]
        .try_into()
        .map_err(|_| NoteError::Key("an Ed25519 key is 32 bytes"))?;
    let expected = typed_key_id(name, kind, &public_key);
    if hex::encode(expected) != id {
        return Err(NoteError::Key("the key id is not this key's"));
    }
    Ok((name.to_owned(), expected, public_key))
}

/// A signing key: a name and an Ed25519 key pair.
pub struct Signer {
    name: String,
    key: Ed25519KeyPair,
}

impl Signer {
    /// The key called `name` whose private half is the 32-byte Ed25519 `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Key("the name is empty or holds a space or a +"));
        }
        let key = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| NoteError::Key("not an Ed25519 seed"))?;
        Ok(Signer {
            name: name.to_owned(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut key = [0; 32];
        key.copy_from_slice(self.key.public_key().as_ref());
        key
    }

    /// The verifier key to hand out: `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        format_vkey(&self.name, ED25519_TYPE, &self.public_key())
    }

    /// `text` signed: the text, a blank line and this key's signature line. The text must be
    /// what a note may hold (see [`check_text`]).
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let public = self.public_key();
        let mut blob = key_id(&self.name, &public).to_vec();
        blob.extend_from_slice(self.key.sign(text.as_bytes()).as_ref());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(blob)
        ))
    }
}

/// A key that checks signatures, parsed from its verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    public_key: [u8; 32],
}

impl Verifier {
    /// Parse `<name>+<hex key id>+<base64(0x01 ‖ public key)>`; the id must be the key's own.
    pub fn parse(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, id, public_key) = parse_vkey(vkey, ED25519_TYPE)?;
        Ok(Verifier {
            name,
            id,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note's text, when this key signed it. A note with no line by this key is
    /// [`NoteError::Unsigned`]; a line that names this key but does not verify is
    /// [`NoteError::BadSignature`], whatever other lines say. Lines by other keys are
    /// ignored (a witness's co-signature, say).
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let (text, signatures) = split(note)?;
        for (name, blob) in signatures {
            if name != self.name || blob[..4] != self.id[..] {
                continue;
            }
            let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
            return match key.verify(text.as_bytes(), &blob[4..]) {
                Ok(()) => Ok(text),
                Err(_) => Err(NoteError::BadSignature(self.name.clone())),
            };
        }
        Err(NoteError::Unsigned(self.name.clone()))
    }
}

/// A witness's co-signing key (C2SP `tlog-cosignature`, Ed25519, type `0x04`): its line
/// carries `key id ‖ u64 timestamp (big-endian) ‖ signature`, and the signature covers
/// `cosignature/v1`, `time <timestamp>` and the checkpoint's text, each line ending in a
/// newline. A co-signature says: at that time, this was the largest tree the witness had seen
/// consistent with every earlier one it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: [u8; 4],
    public_key: [u8; 32],
}

/// How far in the future a co-signature's time may be (clocks differ a little).
const COSIGNATURE_SKEW_SECONDS: u64 = 300;

impl CosignatureVerifier {
    /// Parse `<name>+<hex key id>+<base64(0x04 ‖ public key)>`; the id must be the key's own.
    pub fn parse(vkey: &str) -> Result<CosignatureVerifier, NoteError> {
        let (name, id, public_key) = parse_vkey(vkey, COSIGNATURE_TYPE)?;
        Ok(CosignatureVerifier {
            name,
            id,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time (POSIX seconds) of this key's co-signature of the note text `text`, found among
    /// `lines` (signature lines, each `— <name> <base64>` and a newline, as a witness answers
    /// or a note carries them; lines by other keys are skipped). Refused: no line by this key
    /// ([`NoteError::Unsigned`]), one that does not verify or is malformed
    /// ([`NoteError::BadSignature`]), or one dated more than five minutes after `now`.
    pub fn verify(&self, text: &str, lines: &str, now: u64) -> Result<u64, NoteError> {
        self.find(text, lines, now).map(|(time, _)| time)
    }

    /// As [`verify`](Self::verify), with the line that verified (without its newline).
    pub fn find<'l>(
        &self,
        text: &str,
        lines: &'l str,
        now: u64,
    ) -> Result<(u64, &'l str), NoteError> {
        check_text(text)?;
        for line in lines.lines() {
            let Some((name, blob)) = line
                .strip_prefix(SIGNATURE_PREFIX)
                .and_then(|rest| rest.split_once(' '))
            else {
                continue;
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = BASE64.decode(blob) else {
                continue;
            };
            if blob.len() < 4 || blob[..4] != self.id[..] {
                continue;
            }
            let bad = || NoteError::BadSignature(self.name.clone());
            if blob.len() != 4 + 8 + 64 {
                return Err(bad());
            }
            let time = u64::from_be_bytes(blob[4..12].try_into().map_err(|_| bad())?);
            if time > i64::MAX as u64 {
                return Err(bad());
            }
            let message = format!("{COSIGNATURE_HEADER}{time}\n{text}");
            let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
            key.verify(message.as_bytes(), &blob[12..])
                .map_err(|_| bad())?;
            if time > now.saturating_add(COSIGNATURE_SKEW_SECONDS) {
                return Err(NoteError::FutureCosignature(self.name.clone()));
            }
            return Ok((time, line));
        }
        Err(NoteError::Unsigned(self.name.clone()))
    }
}

/// A witness's co-signing key, to sign with: what a test witness (or a built-in one) uses. The
/// same Ed25519 key pair as a [`Signer`], signing another message under another type.
pub struct Cosigner(Signer);

impl Cosigner {
    /// The co-signer called `name` whose private half is the 32-byte Ed25519 `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        Signer::from_seed(name, seed).map(Cosigner)
    }

    /// `<name>+<hex key id>+<base64(0x04 ‖ public key)>`.
    pub fn verifier_key(&self) -> String {
        format_vkey(&self.0.name, COSIGNATURE_TYPE, &self.0.public_key())
    }

    /// The co-signature line (newline-terminated) of the note text `text` at `time`.
    pub fn cosign(&self, text: &str, time: u64) -> Result<String, NoteError> {
        check_text(text)?;
        let Cosigner(signer) = self;
        let message = format!("{COSIGNATURE_HEADER}{time}\n{text}");
        let mut blob = typed_key_id(&signer.name, COSIGNATURE_TYPE, &signer.public_key()).to_vec();
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(signer.key.sign(message.as_bytes()).as_ref());
        Ok(format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            signer.name,
            BASE64.encode(blob)
        ))
    }
}

/// The text of a signed note (what its signatures cover), or `None` when it is not one.
pub fn note_text(note: &str) -> Option<&str> {
    split(note).ok().map(|(text, _)| text)
}

/// Whether `text` may be a note's text: not empty, ends with a newline, no blank line, no
/// control character but the newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text must end with a newline"));
    }
    if text.contains("\n\n") {
        return Err(NoteError::Malformed("the text holds a blank line"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("the text holds a control character"));
    }
    Ok(())
}

/// A signature line: the key's name and `key id ‖ signature`.
type SignatureLine<'n> = (&'n str, Vec<u8>);

/// A note's text and its signature lines.
fn split(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::Malformed("larger than a note may be"));
    }
    let Some(blank) = note.rfind("\n\n") else {
        return Err(NoteError::Malformed("no blank line before the signatures"));
    };
    let (text, lines) = (&note[..blank + 1], &note[blank + 2..]);
    check_text(text)?;
    let Some(lines) = lines.strip_suffix('\n') else {
        return Err(NoteError::Malformed(
            "the signatures must end with a newline",
        ));
    };
    let mut signatures = Vec::new();
    for line in lines.split('\n') {
        let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
            return Err(NoteError::Malformed(
                "a signature line must start with an em dash",
            ));
        };
        let Some((name, blob)) = rest.split_once(' ') else {
            return Err(NoteError::Malformed(
                "a signature line is <name> <signature>",
            ));
        };
        if !valid_name(name) {
            return Err(NoteError::Malformed("a signature names an invalid key"));
        }
        let blob = BASE64
            .decode(blob)
            .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
        if blob.len() < 5 {
            return Err(NoteError::Malformed("a signature is too short"));
        }
        signatures.push((name, blob));
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed("more than 100 signatures"));
    }
    Ok((text, signatures))
}

/// The notes of a file holding several one after another, each followed by a blank line (what a
/// file witness appends; a file of one note without it is one note too). Each note ends after
/// its last signature line; the text between is kept as it is, so [`Verifier::open`] judges
/// it. Empty when the text holds no signature line.
pub fn split_notes(text: &str) -> Vec<&str> {
    let mut notes = Vec::new();
    let mut start = 0;
    let mut in_signatures = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let is_signature = line.starts_with(SIGNATURE_PREFIX);
        if in_signatures && !is_signature {
            notes.push(&text[start..offset]);
            in_signatures = false;
            start = offset;
        }
        if !in_signatures && start == offset && line.trim_end_matches('\n').is_empty() {
            // Blank lines between notes.
            start = offset + line.len();
        }
        if is_signature && offset > start && text[..offset].ends_with("\n\n") {
            in_signatures = true;
        }
        offset += line.len();
    }
    if in_signatures {
        notes.push(&text[start..]);
    }
    notes
}

/// A checkpoint's body (C2SP `tlog-checkpoint`): the log's origin, its size and root, then
/// extension lines (syncgate writes the time it signed as one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The body's text, every line ending in a newline.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parse a body (a note's text, once its signature verified).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        check_text(text).map_err(|_| NoteError::Checkpoint("not a note's text"))?;
        let mut lines = text[..text.len() - 1].split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let (Some(origin), Some(size), Some(root)) = (origin, lines.next(), lines.next()) else {
            return Err(NoteError::Checkpoint(
                "origin, size and root hash come first",
            ));
        };
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::Checkpoint("the size is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| NoteError::Checkpoint("the size is too large"))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::Checkpoint(
                "the root is not a base64 SHA-256 hash",
            ))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: lines.map(str::to_owned).collect(),
        })
    }
}

#[cfg(test)]
mod tests;
