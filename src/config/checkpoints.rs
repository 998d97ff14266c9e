//! `[checkpoints]`: when the writer signs checkpoints of the log's Merkle tree, and with which
//! key (docs/transparency.md).
//!
//! ```toml
//! [checkpoints]
//! enabled = true            # default
//! every_events = 1000       # sign when this many events came since the last checkpoint
//! every = "60s"             # and this often when the log grew (and at shutdown)
//! key = "audit.db.checkpoint-key"   # default: beside a SQLite log; PostgreSQL: see below
//! origin = "syncgate/example"       # default: `syncgate/` and 8 bytes of the key's digest
//! ```
//!
//! The key is never in the database (whoever can write it must not be able to sign a
//! rewritten history). A PostgreSQL log's replicas share one key file, named here; by default
//! `syncgate.checkpoint-key` in the user's data folder, beside the token key's default.

use std::path::PathBuf;

use serde::Deserialize;

use super::raw::default_store_path;
use super::{ConfigError, invalid, parse_duration};
use crate::audit::note::Signer;
use crate::store::{CheckpointOptions, StoreLocation};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoints {
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    #[serde(default = "default_every_events")]
    pub every_events: u64,
    #[serde(default = "default_every")]
    pub every: String,
    /// The signing key file (created on first use, mode 0600).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The checkpoints' origin: the log's name in them and in the verifier key.
    #[serde(default)]
    pub origin: Option<String>,
}

impl Default for RawCheckpoints {
    fn default() -> Self {
        RawCheckpoints {
            enabled: default_enabled(),
            every_events: default_every_events(),
            every: default_every(),
            key: None,
            origin: None,
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_every_events() -> u64 {
    CheckpointOptions::default().every_events
}

fn default_every() -> String {
    "60s".into()
}

/// The PostgreSQL checkpoint key file when `checkpoints.key` is not set.
pub(crate) fn default_checkpoint_key() -> PathBuf {
    default_store_path().with_file_name("syncgate.checkpoint-key")
}

impl RawCheckpoints {
    /// The key file for the log at `location`: as configured, else beside a SQLite file, else
    /// the data folder's.
    pub(crate) fn key_file(&self, location: &StoreLocation) -> PathBuf {
        match (&self.key, location) {
            (Some(key), _) => key.clone(),
            (None, StoreLocation::Sqlite(db)) => crate::store::signing_key::key_path(db),
            (None, StoreLocation::Postgres(_)) => default_checkpoint_key(),
        }
    }

    pub(crate) fn options(
        &self,
        location: &StoreLocation,
    ) -> Result<CheckpointOptions, ConfigError> {
        let every = parse_duration("checkpoints.every", &self.every)?;
        if every.is_zero() {
            return Err(invalid("checkpoints.every", "must be longer than 0"));
        }
        if self.every_events == 0 {
            return Err(invalid("checkpoints.every_events", "must be at least 1"));
        }
        if let Some(origin) = &self.origin {
            // The same check the key's loading makes, before anything is opened.
            Signer::from_seed(origin, &[0; 32]).map_err(|e| {
                invalid(
                    "checkpoints.origin",
                    format!("{origin:?} cannot name a key: {e}"),
                )
            })?;
        }
        Ok(CheckpointOptions {
            enabled: self.enabled,
            key: Some(self.key_file(location)),
            origin: self.origin.clone(),
            every_events: self.every_events,
            every,
        })
    }
}
