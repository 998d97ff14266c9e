//! The key that signs the log's checkpoints (issue 11): an Ed25519 key whose 32-byte seed is
//! kept, hex, in a file of its own, mode 0600, created on first use and reused after, like the
//! token key (`private::load_or_create_secret`): `<db path>.checkpoint-key` beside a SQLite log.
//! Like the token key it is never in the database, so whoever can write the database cannot
//! sign a rewritten history with it; `syncgate audit key` prints its verifier key for auditors
//! and witnesses.
//!
//! The key's name (the checkpoints' origin) defaults to `syncgate/` and the first 8 bytes of
//! SHA-256 of the public key, hex: stable for the key's life and distinct between logs, as the
//! C2SP checkpoint format asks of an origin.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::audit::note::{NoteError, Signer};

/// Why the signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read or create the checkpoint signing key file {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the checkpoint signing key file {path} does not hold 32 hex-encoded bytes")]
    Malformed { path: PathBuf },
    #[error("the checkpoint origin {origin:?} cannot name a key: {source}")]
    Origin { origin: String, source: NoteError },
}

/// `<db path>.checkpoint-key`.
pub fn key_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push(".checkpoint-key");
    PathBuf::from(name)
}

/// The signer whose seed is in the file at `path` (created if there is none), named `origin`,
/// or by default after its public key.
pub fn load_or_create(path: &Path, origin: Option<&str>) -> Result<Signer, SigningKeyError> {
    let seed = match super::private::load_or_create_secret(path) {
        Ok(Some(seed)) => seed,
        Ok(None) => {
            return Err(SigningKeyError::Malformed {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(SigningKeyError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let origin = match origin {
        Some(origin) => origin.to_owned(),
        None => {
            // The name does not enter the public key, so any name gives the same key.
            let public = Signer::from_seed("syncgate", &seed)
                .map_err(|source| SigningKeyError::Origin {
                    origin: "syncgate".into(),
                    source,
                })?
                .public_key();
            format!("syncgate/{}", hex::encode(&Sha256::digest(public)[..8]))
        }
    };
    Signer::from_seed(&origin, &seed).map_err(|source| SigningKeyError::Origin { origin, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::Verifier;

    #[test]
    fn the_signing_key_is_created_private_reused_and_named_after_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(&dir.path().join("audit.db"));
        assert!(path.ends_with("audit.db.checkpoint-key"));
        let first = load_or_create(&path, None).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = load_or_create(&path, None).unwrap();
        assert_eq!(first.verifier_key(), again.verifier_key());
        assert!(first.name().starts_with("syncgate/"), "{}", first.name());
        assert_eq!(first.name().len(), "syncgate/".len() + 16);
        let named = load_or_create(&path, Some("audit.example.com/syncgate")).unwrap();
        assert_eq!(named.public_key(), first.public_key());
        let note = named
            .sign("audit.example.com/syncgate\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n");
        let verifier = Verifier::parse(&named.verifier_key()).unwrap();
        assert!(verifier.open(&note.unwrap()).is_ok());
        // Another log's key is another key.
        let other = load_or_create(&key_path(&dir.path().join("other.db")), None).unwrap();
        assert_ne!(other.public_key(), first.public_key());
        assert_ne!(other.name(), first.name());
    }

    #[test]
    fn a_malformed_key_file_or_origin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            load_or_create(&path, None),
            Err(SigningKeyError::Malformed { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex\n");
        let fresh = dir.path().join("fresh");
        assert!(matches!(
            load_or_create(&fresh, Some("two words")),
            Err(SigningKeyError::Origin { .. })
        ));
    }
}
