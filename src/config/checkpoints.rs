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
//!
//! [[checkpoints.witness]]   # any number; each has a unique name and one of file, url, syslog
//! name = "witness-1"
//! url = "https://witness.example/add-checkpoint"
//! key = "witness.example/w1+1c4a2a3b+BD...="   # its co-signing key (type 0x04): checked
//! ```
//!
//! The key is never in the database (whoever can write it must not be able to sign a
//! rewritten history). A PostgreSQL log's replicas share one key file, named here; by default
//! `syncgate.checkpoint-key` in the user's data folder, beside the token key's default.

use std::path::PathBuf;

use serde::Deserialize;

use super::raw::default_store_path;
use super::{ConfigError, invalid, parse_duration};
use crate::audit::note::{CosignatureVerifier, Signer};
use crate::store::witness::{Target, WitnessSpec};
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
    /// The longest wait between two attempts to reach a witness that failed.
    #[serde(default = "default_retry_max")]
    pub retry_max: String,
    /// Where each checkpoint is also sent.
    #[serde(default, rename = "witness")]
    pub witnesses: Vec<RawWitness>,
}

/// `[[checkpoints.witness]]`: exactly one of `file`, `url`, `syslog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWitness {
    pub name: String,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub url: Option<String>,
    /// A Unix datagram socket's path (`/dev/log`) or `udp://HOST:PORT`.
    #[serde(default)]
    pub syslog: Option<String>,
    #[serde(default = "default_witness_timeout")]
    pub timeout: String,
    /// An HTTP witness's co-signing key (`<name>+<key id>+<base64(0x04 ‖ key)>`): its
    /// co-signatures are checked when they arrive, and only a valid one is stored.
    #[serde(default)]
    pub key: Option<String>,
}

impl Default for RawCheckpoints {
    fn default() -> Self {
        RawCheckpoints {
            enabled: default_enabled(),
            every_events: default_every_events(),
            every: default_every(),
            key: None,
            origin: None,
            retry_max: default_retry_max(),
            witnesses: Vec::new(),
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

fn default_retry_max() -> String {
    "5m".into()
}

fn default_witness_timeout() -> String {
    "10s".into()
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
        let retry_max = parse_duration("checkpoints.retry_max", &self.retry_max)?;
        if retry_max.is_zero() {
            return Err(invalid("checkpoints.retry_max", "must be longer than 0"));
        }
        let mut witnesses: Vec<WitnessSpec> = Vec::with_capacity(self.witnesses.len());
        for raw in &self.witnesses {
            let spec = raw.spec()?;
            if witnesses.iter().any(|w| w.name == spec.name) {
                return Err(invalid(
                    "checkpoints.witness.name",
                    format!("{:?} names two witnesses", spec.name),
                ));
            }
            witnesses.push(spec);
        }
        Ok(CheckpointOptions {
            enabled: self.enabled,
            key: Some(self.key_file(location)),
            origin: self.origin.clone(),
            every_events: self.every_events,
            every,
            witnesses,
            retry_max,
        })
    }
}

impl RawWitness {
    fn spec(&self) -> Result<WitnessSpec, ConfigError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(invalid(
                "checkpoints.witness.name",
                format!(
                    "{:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'",
                    self.name
                ),
            ));
        }
        let target = match (&self.file, &self.url, &self.syslog) {
            (Some(file), None, None) => Target::File(file.clone()),
            (None, Some(url), None) => {
                let uri: http::Uri = url.parse().map_err(|e| {
                    invalid(
                        "checkpoints.witness.url",
                        format!("{url:?} is not a URL: {e}"),
                    )
                })?;
                if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                    return Err(invalid(
                        "checkpoints.witness.url",
                        format!("{url:?} must be an http:// or https:// URL with a host"),
                    ));
                }
                Target::Url(uri)
            }
            (None, None, Some(syslog)) => match syslog.strip_prefix("udp://") {
                Some(addr) => Target::SyslogUdp(addr.parse().map_err(|e| {
                    invalid(
                        "checkpoints.witness.syslog",
                        format!("{syslog:?} is not udp://IP:PORT: {e}"),
                    )
                })?),
                None if syslog.starts_with('/') => Target::SyslogUnix(PathBuf::from(syslog)),
                None => {
                    return Err(invalid(
                        "checkpoints.witness.syslog",
                        format!("{syslog:?} is neither a socket's path nor udp://IP:PORT"),
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    "checkpoints.witness",
                    format!(
                        "witness {:?} must name exactly one of file, url, syslog",
                        self.name
                    ),
                ));
            }
        };
        let timeout = parse_duration("checkpoints.witness.timeout", &self.timeout)?;
        if timeout.is_zero() {
            return Err(invalid(
                "checkpoints.witness.timeout",
                "must be longer than 0",
            ));
        }
        let key = match (&self.key, &target) {
            (None, _) => None,
            (Some(vkey), Target::Url(_)) => {
                Some(CosignatureVerifier::parse(vkey).map_err(|e| {
                    invalid(
                        "checkpoints.witness.key",
                        format!("witness {:?}: {e}", self.name),
                    )
                })?)
            }
            (Some(_), _) => {
                return Err(invalid(
                    "checkpoints.witness.key",
                    format!(
                        "witness {:?}: only a url witness answers with a co-signature",
                        self.name
                    ),
                ));
            }
        };
        Ok(WitnessSpec {
            name: self.name.clone(),
            target,
            timeout,
            key,
        })
    }
}
