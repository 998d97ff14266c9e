//! The configuration file as written: stage one of two ([`super::RawConfig::validate`] is stage
//! two). Every table is `deny_unknown_fields`, so a typo fails with the key's name and position,
//! and every key has its default here, the values `config/syncgate.toml` documents.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    pub(crate) header_read_timeout: String,
    /// Per-core workers serving the proxy's connections; absent: one per available core.
    #[serde(default)]
    pub workers: Option<usize>,
    pub tls: Option<RawListenerTls>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shutdown_grace: default_grace(),
            header_read_timeout: default_header_read_timeout(),
            workers: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuthMode,
}

/// Whether clients must present a certificate when `client_ca` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// Ask for a certificate; accept clients without one.
    #[default]
    Optional,
    /// Refuse the handshake without a valid certificate.
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default = "default_upstream")]
    pub url: String,
    pub extra_ca: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub(crate) connect_timeout: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout: String,
    #[serde(default = "default_pool_idle_timeout")]
    pub(crate) pool_idle_timeout: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: default_upstream(),
            extra_ca: None,
            connect_timeout: default_connect_timeout(),
            timeout: default_upstream_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Who may use the admin API (`[[admin.principals]]`); none: the API is closed.
    #[serde(default)]
    pub principals: Vec<RawPrincipal>,
    /// Serve the admin listener over TLS (`[admin.tls]`), optionally asking for client
    /// certificates that principals can authenticate with.
    #[serde(default)]
    pub tls: Option<RawListenerTls>,
    /// Serve `/metrics` without a principal (for a scraper that sends no key).
    #[serde(default)]
    pub metrics_public: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            principals: Vec::new(),
            tls: None,
            metrics_public: false,
        }
    }
}

/// One `[[admin.principals]]` entry as written; checked by `config/admin.rs`. It needs at least
/// one credential: `key_hash`, `cert_subject` or `cert_san`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrincipal {
    pub name: String,
    /// `auditor`, `approver`, `admin`; required, so a forgotten list fails loudly.
    pub roles: Vec<String>,
    /// The person's Entra object id (a GUID).
    #[serde(default)]
    pub oid: Option<String>,
    /// Groups the principal is in, as approval policies name them (`groups`, `one_from_each`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// `sha256:<salt hex>:<hash hex>`, as `syncgate admin new-key` prints it.
    #[serde(default)]
    pub key_hash: Option<String>,
    /// A client certificate's full subject in RFC 4514 form (`CN=ann,O=Contoso`), exactly.
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// One subject alternative name of a client certificate, with its type:
    /// `email:ann@contoso.com`, `dns:ann.contoso.com` or `uri:spiffe://contoso.com/ann`.
    #[serde(default)]
    pub cert_san: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// The SQLite file (the embedded default).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL URL (`postgres://user@host/db?sslmode=verify-full&sslrootcert=FILE`), or
    /// `sqlite://FILE`; set instead of `path`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_busy_timeout")]
    pub busy_timeout: String,
    /// PostgreSQL: the longest any store statement may run.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: String,
    /// Apply missing migrations at start (false: an operator runs `syncgate migrate`).
    #[serde(default = "default_true")]
    pub migrate: bool,
    /// The token fingerprint key file. Default: beside a SQLite file; for PostgreSQL
    /// `syncgate.token-key` in the user's data folder (replicas must share one file).
    #[serde(default)]
    pub token_key: Option<PathBuf>,
    /// PostgreSQL: a file whose first line is the password (never the URL, never a flag).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: the longest a governed change waits for its partner's cross-replica lock.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: String,
    /// PostgreSQL: sessions for partner locks (the most partners one replica changes at once).
    #[serde(default = "default_lock_connections")]
    pub lock_connections: u32,
    /// How old a `received` event without an outcome must be before crash recovery takes it
    /// for a crashed change rather than one another replica is still running.
    #[serde(default = "default_recovery_grace")]
    pub recovery_grace: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            url: None,
            busy_timeout: default_busy_timeout(),
            statement_timeout: default_statement_timeout(),
            migrate: true,
            token_key: None,
            password_file: None,
            lock_timeout: default_lock_timeout(),
            lock_connections: default_lock_connections(),
            recovery_grace: default_recovery_grace(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default)]
    pub record_reads: bool,
    #[serde(default = "default_max_body")]
    pub max_body: String,
    #[serde(default = "default_max_batch_body")]
    pub max_batch_body: String,
    pub(crate) recovery_token_file: Option<PathBuf>,
    /// Refusals per client recorded one by one within `refusal_window`; more are summarised.
    #[serde(default = "default_refusal_burst")]
    pub refusal_burst: u32,
    #[serde(default = "default_refusal_window")]
    pub refusal_window: String,
    /// Clients whose refusals are tracked at once.
    #[serde(default = "default_refusal_clients")]
    pub(crate) refusal_clients: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            record_reads: false,
            max_body: default_max_body(),
            max_batch_body: default_max_batch_body(),
            recovery_token_file: None,
            refusal_burst: default_refusal_burst(),
            refusal_window: default_refusal_window(),
            refusal_clients: default_refusal_clients(),
        }
    }
}

/// `[log]`: the access log (see [`crate::access_log`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// One JSON line per proxied request.
    #[serde(default)]
    pub access: bool,
    /// Where the lines are appended; absent: standard output.
    pub access_path: Option<PathBuf>,
}

fn default_refusal_burst() -> u32 {
    super::RefusalLimits::default().burst
}
fn default_refusal_window() -> String {
    "10s".into()
}
fn default_refusal_clients() -> usize {
    super::RefusalLimits::default().clients
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_grace() -> String {
    "30s".into()
}
fn default_header_read_timeout() -> String {
    "30s".into()
}
fn default_upstream() -> String {
    "global".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_upstream_timeout() -> String {
    "100s".into()
}
fn default_pool_idle_timeout() -> String {
    "90s".into()
}
/// `store.path` when the file does not set it: the user's data folder,
/// `$XDG_DATA_HOME/syncgate/syncgate.db`, else `~/.local/share/syncgate/syncgate.db`. Never the
/// working directory or the configuration's folder: those are often a source checkout, where the
/// log and its `.token-key` would show up in `git status`. With neither variable set (a bare
/// service environment) it is `syncgate.db`, relative like any other path.
pub(crate) fn default_store_path() -> PathBuf {
    let absolute = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let data =
        absolute("XDG_DATA_HOME").or_else(|| absolute("HOME").map(|h| h.join(".local/share")));
    match data {
        Some(dir) => dir.join("syncgate").join("syncgate.db"),
        None => "syncgate.db".into(),
    }
}
fn default_busy_timeout() -> String {
    "5s".into()
}
fn default_true() -> bool {
    true
}
fn default_statement_timeout() -> String {
    "5s".into()
}
fn default_lock_timeout() -> String {
    "30s".into()
}
fn default_lock_connections() -> u32 {
    32
}
/// Longer than a governed change can take (the upstream timeout, 100s by default, bounds its
/// write), so a change still running on another replica is never recovered.
fn default_recovery_grace() -> String {
    "2m".into()
}
fn default_max_body() -> String {
    "1MiB".into()
}

/// `audit.max_batch_body`: Graph documents no byte limit for `$batch` (docs/graph.md §6 gives
/// only the 20-request cap), but refuses request bodies of a few MB (its simple-upload and
/// attachment limits are 4 MB), so a batch Graph would accept fits in 4 MiB. Checked on the
/// stream, before parsing: a hostile batch costs at most this much memory to refuse.
pub const DEFAULT_MAX_BATCH_BODY: usize = 4 * 1024 * 1024;
fn default_max_batch_body() -> String {
    "4MiB".into()
}
