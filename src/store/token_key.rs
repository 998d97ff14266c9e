//! The key that turns bearer tokens into linkable, non-reversible fingerprints.
//!
//! Events carry `HMAC-SHA256(key, token)` so an auditor can tell that two changes were made with
//! the same token without the log ever holding a token (a plain hash of a JWT could be confirmed
//! by anyone holding the token; a keyed one only by someone holding the key too). The key is 32
//! random bytes, hex, in a file of its own, mode 0600, created on first open and reused after, so
//! fingerprints stay comparable across restarts: `<db path>.token-key` beside a SQLite log, and
//! `store.token_key` with PostgreSQL (replicas that share a log share that file too, or their
//! fingerprints of one token differ). It is deliberately not in the database: a copy of the log
//! handed to an auditor does not carry it.

use std::io;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::private::SECRET_LEN as KEY_LEN;

/// Keyed fingerprints of bearer tokens.
#[derive(Clone)]
pub(crate) struct TokenHasher {
    /// The MAC initialised with the key; cloned per token.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(..)")
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("cannot read or create the token key file {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the token key file {path} does not hold {KEY_LEN} hex-encoded bytes")]
    Malformed { path: PathBuf },
}

impl TokenHasher {
    /// `<db path>.token-key`.
    pub(crate) fn key_path(db_path: &Path) -> PathBuf {
        let mut name = db_path.as_os_str().to_owned();
        name.push(".token-key");
        PathBuf::from(name)
    }

    /// Load the key in the file at `path`, creating it (0600) if there is none.
    pub(crate) fn load_or_create(path: &Path) -> Result<TokenHasher, TokenKeyError> {
        match super::private::load_or_create_secret(path) {
            Ok(Some(key)) => Self::from_key(path, &key),
            Ok(None) => Err(TokenKeyError::Malformed {
                path: path.to_owned(),
            }),
            Err(source) => Err(TokenKeyError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn from_key(path: &Path, key: &[u8]) -> Result<TokenHasher, TokenKeyError> {
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| TokenKeyError::Malformed {
                path: path.to_owned(),
            })?;
        Ok(TokenHasher { mac })
    }

    /// `hex(HMAC-SHA256(key, token))`.
    pub(crate) fn hash(&self, token: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn the_key_file_is_created_private_and_reused_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let first = TokenHasher::load_or_create(&TokenHasher::key_path(&db)).unwrap();
        let key_file = dir.path().join("audit.db.token-key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(fs::read_to_string(&key_file).unwrap().trim().len(), 64);
        let again = TokenHasher::load_or_create(&key_file).unwrap();
        assert_eq!(first.hash("eyJ0eXAi.token"), again.hash("eyJ0eXAi.token"));
        assert_ne!(first.hash("eyJ0eXAi.token"), first.hash("eyJ0eXAi.other"));
        assert_eq!(first.hash("x").len(), 64);
        // Nothing but the key file was left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn different_stores_fingerprint_the_same_token_differently() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenHasher::load_or_create(&dir.path().join("a.key")).unwrap();
        let b = TokenHasher::load_or_create(&dir.path().join("b.key")).unwrap();
        assert_ne!(a.hash("same token"), b.hash("same token"));
    }

    #[test]
    fn a_malformed_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        fs::write(TokenHasher::key_path(&db), "not hex\n").unwrap();
        let err = TokenHasher::load_or_create(&TokenHasher::key_path(&db)).unwrap_err();
        assert!(matches!(err, TokenKeyError::Malformed { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(TokenHasher::key_path(&db)).unwrap(),
            "not hex\n"
        );
    }
}
