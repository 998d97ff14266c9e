//! Configuration: one TOML file, read in two stages.
//!
//! [`RawConfig`] mirrors the file (`raw`: every table `deny_unknown_fields`, so a typo fails loudly
//! with the key's name and position); [`RawConfig::validate`] turns it into [`Settings`], where
//! addresses are parsed, the upstream is resolved (`upstream`), TLS files are loaded, durations are
//! typed and the client limits derived (`limits`). Nothing starts until validation passes, and
//! `syncgate check-config` runs exactly the same validation. `config/syncgate.toml` is the
//! commented reference for every key.
//!
//! The `[rules]` table is the rules' own business: this module only carries it
//! ([`crate::rules::RawRules`]) and asks [`crate::rules::RuleSet::load`] to validate it; the rules
//! never import the configuration (durations and sizes are read by the leaf module
//! [`crate::units`]).

mod admin;
mod checkpoints;
pub mod egress;
mod limits;
mod raw;
mod store;
mod upstream;

/// `audit.refusal_*`: when refusals from one client stop being recorded one by one and are
/// summarised instead (see `proxy/refusals.rs`). Plain settings, so the proxy reads them from
/// here rather than the configuration importing the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefusalLimits {
    /// Refusals per client recorded one by one within a window; further ones are summarised.
    pub(crate) burst: u32,
    /// How long a client's window lasts, from its first refusal.
    pub(crate) window: Duration,
    /// Clients tracked at once; a new one evicts the oldest (recording its summary).
    pub(crate) clients: usize,
}

impl Default for RefusalLimits {
    fn default() -> Self {
        RefusalLimits {
            burst: 20,
            window: Duration::from_secs(10),
            clients: 1024,
        }
    }
}

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::store::{StoreLocation, StoreOptions};
use crate::tls::{self, ClientAuth, TlsError};
use crate::units::{self, InvalidValue};

pub use checkpoints::{RawCheckpoints, RawWitness};
#[cfg(test)]
pub(crate) use limits::DEFAULT_MAX_CONNECTIONS_CEILING;
pub(crate) use limits::{Limits, RawLimits};
pub(crate) use raw::default_store_path;
pub use raw::{
    ClientAuthMode, DEFAULT_MAX_BATCH_BODY, RawAdmin, RawAudit, RawListenerTls, RawLog,
    RawPrincipal, RawProxy, RawStore, RawUpstream,
};
use store::default_token_key;
pub(crate) use upstream::UpstreamTarget;

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key}")]
    Tls { key: &'static str, source: TlsError },
    #[error("{}invalid rules", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Rules {
        /// The configuration file the rules came from, when they came from one.
        file: Option<PathBuf>,
        source: crate::rules::RulesError,
    },
}

impl From<InvalidValue> for ConfigError {
    fn from(e: InvalidValue) -> Self {
        ConfigError::Invalid {
            key: e.key,
            message: e.message,
        }
    }
}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl RawListenerTls {
    /// The listener's TLS configuration (the one builder both listeners share, [`tls`]); errors
    /// name `table` (`proxy.tls`, `admin.tls`).
    fn load(
        &self,
        table: &'static str,
        client_auth_key: &'static str,
    ) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let client_auth = match (&self.client_ca, self.client_auth) {
            (Some(ca), mode) => Some(ClientAuth {
                ca: ca.clone(),
                required: mode == ClientAuthMode::Required,
            }),
            (None, ClientAuthMode::Required) => {
                return Err(invalid(
                    client_auth_key,
                    format!("\"required\" needs {table}.client_ca"),
                ));
            }
            (None, ClientAuthMode::Optional) => None,
        };
        tls::server_config(&self.cert, &self.key, client_auth.as_ref())
            .map_err(|source| ConfigError::Tls { key: table, source })
    }
}

/// The file as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub rules: crate::rules::RawRules,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub checkpoints: checkpoints::RawCheckpoints,
    /// The change-approval gate: policies, webhooks.
    #[serde(default)]
    pub approvals: crate::approvals::RawApprovals,
    /// The access log.
    #[serde(default)]
    pub log: raw::RawLog,
    /// Egress mode: the forward proxy (`CONNECT`).
    #[serde(default)]
    pub egress: egress::RawEgress,
    /// The folder relative paths are resolved against (the config file's folder, or the working
    /// directory); Rego files are loaded from it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this configuration was read from, for error messages.
    #[serde(skip)]
    pub(crate) file: Option<PathBuf>,
}

/// Values given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) listen: Option<String>,
    pub(crate) upstream: Option<String>,
    /// `--db`: a SQLite file or a `postgres://` URL.
    pub(crate) db: Option<String>,
    pub(crate) admin_listen: Option<String>,
}

impl RawConfig {
    /// Read and parse a file; relative paths inside it are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut raw: RawConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if let Some(dir) = path.parent() {
            raw.resolve_paths(dir);
            raw.base_dir = dir.to_owned();
        }
        raw.file = Some(path.to_owned());
        Ok(raw)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for tls in [&mut self.proxy.tls, &mut self.admin.tls]
            .into_iter()
            .flatten()
        {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
        if let Some(ca) = &mut self.upstream.extra_ca {
            fix(ca);
        }
        if let Some(path) = &mut self.log.access_path {
            fix(path);
        }
        for file in [&mut self.egress.ca_cert, &mut self.egress.ca_key]
            .into_iter()
            .flatten()
        {
            fix(file);
        }
        fix(&mut self.store.path);
        // A relative `sqlite://FILE` is in the config folder too, as `store.path` is.
        if let Some(url) = &mut self.store.url {
            if let StoreLocation::Sqlite(path) = StoreLocation::parse(url) {
                if path.is_relative() && !path.as_os_str().is_empty() {
                    *url = format!("sqlite://{}", dir.join(path).display());
                }
            }
        }
        for file in [
            &mut self.store.token_key,
            &mut self.store.password_file,
            &mut self.checkpoints.key,
        ]
        .into_iter()
        .flatten()
        {
            fix(file);
        }
        for witness in &mut self.checkpoints.witnesses {
            if let Some(file) = &mut witness.file {
                fix(file);
            }
        }
        if let Some(token) = &mut self.audit.recovery_token_file {
            fix(token);
        }
    }

    pub(crate) fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.listen {
            self.proxy.listen = v;
        }
        if let Some(v) = o.upstream {
            self.upstream.url = v;
        }
        if let Some(v) = o.db {
            self.store.set_location(&StoreLocation::parse(&v));
        }
        if let Some(v) = o.admin_listen {
            self.admin.listen = v;
        }
    }

    /// Check every value and load the TLS material: the second stage.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let (listen, admin_listen) = self.listen_addrs()?;
        let admin_principals = self.admin.principals(admin_listen)?;
        let scheme = if self.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let approvals = self
            .approvals
            .validate(&admin_principals, format!("{scheme}://{admin_listen}"))?;
        let admin_tls = self.admin.tls()?;
        let tls = self.proxy_tls()?;
        let upstream = UpstreamTarget::parse(&self.upstream.url)?;
        let client_tls =
            tls::client_config(self.upstream.extra_ca.as_deref()).map_err(|source| {
                ConfigError::Tls {
                    key: "upstream.extra_ca",
                    source,
                }
            })?;
        let store_folder_to_create = self.store_folder()?;
        let max_body = parse_size("audit.max_body", &self.audit.max_body)?;
        let max_batch_body = parse_size("audit.max_batch_body", &self.audit.max_batch_body)?;
        let largest_body = if max_batch_body > max_body {
            ("audit.max_batch_body", max_batch_body)
        } else {
            ("audit.max_body", max_body)
        };
        let proxy = &self.proxy;
        let up = &self.upstream;
        Ok(Settings {
            listen,
            admin_listen,
            admin_principals,
            admin_tls,
            admin_metrics_public: self.admin.metrics_public,
            tls,
            shutdown_grace: parse_duration("proxy.shutdown_grace", &proxy.shutdown_grace)?,
            header_read_timeout: parse_duration(
                "proxy.header_read_timeout",
                &proxy.header_read_timeout,
            )?,
            workers: proxy_workers(proxy.workers)?,
            access_log: self.access_log()?,
            upstream,
            client_tls,
            connect_timeout: parse_duration("upstream.connect_timeout", &up.connect_timeout)?,
            upstream_timeout: parse_duration("upstream.timeout", &up.timeout)?,
            pool_idle_timeout: parse_duration("upstream.pool_idle_timeout", &up.pool_idle_timeout)?,
            store: self.store.location()?,
            store_options: self.store_options()?,
            store_folder_to_create,
            recovery_grace: parse_duration("store.recovery_grace", &self.store.recovery_grace)?,
            record_reads: self.audit.record_reads,
            max_body,
            max_batch_body,
            recovery_token_file: self.audit.recovery_token_file.clone(),
            refusal_limits: self.refusal_limits()?,
            rules: Arc::new(self.load_rules_for(&approvals)?),
            approvals: Arc::new(approvals),
            limits: self.limits.validate(largest_body)?,
            egress: self.egress.validate()?,
        })
    }

    /// `[store]`'s options with `[checkpoints]`'.
    pub(crate) fn store_options(&self) -> Result<StoreOptions, ConfigError> {
        let mut options = self.store.options()?;
        options.checkpoints = self.checkpoints.options(&self.store.location()?)?;
        Ok(options)
    }

    fn listen_addrs(&self) -> Result<(SocketAddr, SocketAddr), ConfigError> {
        let listen = parse_addr("proxy.listen", &self.proxy.listen)?;
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(invalid(
                "admin.listen",
                "must differ from proxy.listen (the admin API never shares the proxy port)",
            ));
        }
        Ok((listen, admin_listen))
    }

    /// `[proxy.tls]`, loaded: the certificate, its key and the client CA when one is set.
    fn proxy_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        self.proxy
            .tls
            .as_ref()
            .map(|t| t.load("proxy.tls", "proxy.tls.client_auth"))
            .transpose()
    }

    /// The audit log's folder must exist when `store.path` is configured (a typo should not
    /// scatter logs); the default folder is created at start, so it is returned to create.
    fn store_folder(&self) -> Result<Option<PathBuf>, ConfigError> {
        let (key, file) = match (&self.store.location()?, &self.store.token_key) {
            (StoreLocation::Sqlite(path), _) => ("store.path", path.clone()),
            (StoreLocation::Postgres(_), Some(key)) => ("store.token_key", key.clone()),
            (StoreLocation::Postgres(_), None) => ("store.token_key", default_token_key()),
        };
        let Some(dir) = file.parent() else {
            return Ok(None);
        };
        if dir.as_os_str().is_empty() || dir.is_dir() {
            return Ok(None);
        }
        if file == default_store_path() || file == default_token_key() {
            return Ok(Some(dir.to_owned()));
        }
        Err(invalid(
            key,
            format!("folder {} does not exist", dir.display()),
        ))
    }

    fn refusal_limits(&self) -> Result<RefusalLimits, ConfigError> {
        let window = parse_duration("audit.refusal_window", &self.audit.refusal_window)?;
        if window.is_zero() {
            return Err(invalid("audit.refusal_window", "must be longer than 0"));
        }
        if self.audit.refusal_clients == 0 {
            return Err(invalid("audit.refusal_clients", "must be at least 1"));
        }
        Ok(RefusalLimits {
            burst: self.audit.refusal_burst,
            window,
            clients: self.audit.refusal_clients,
        })
    }

    /// Validate and compile the `[rules]` table (also what a SIGHUP reload runs).
    pub(crate) fn load_rules(&self) -> Result<crate::rules::RuleSet, ConfigError> {
        crate::rules::RuleSet::load(&self.rules, &self.base_dir).map_err(|source| {
            ConfigError::Rules {
                file: self.file.clone(),
                source,
            }
        })
    }

    /// [`RawConfig::load_rules`], and every `require_approval` rule's policy must be one of
    /// `approvals`' (a rule naming none uses `default`): a held change must have a way out.
    pub(crate) fn load_rules_for(
        &self,
        approvals: &crate::approvals::ApprovalSettings,
    ) -> Result<crate::rules::RuleSet, ConfigError> {
        let rules = self.load_rules()?;
        for (rule, policy) in rules.approval_policies() {
            if !approvals.has_policy(policy) {
                return Err(invalid(
                    "rules.approval_policy",
                    format!(
                        "rule '{rule}' requires approval under policy '{policy}', but \
                         [approvals.policies.{policy}] is not configured"
                    ),
                ));
            }
        }
        Ok(rules)
    }
}

/// Validated settings, ready to start from.
#[derive(Clone)]
pub struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    /// Who may use the admin API beyond health and readiness.
    pub(crate) admin_principals: crate::admin::auth::Principals,
    /// The admin listener's TLS (`[admin.tls]`); plain HTTP when `None`.
    pub(crate) admin_tls: Option<Arc<rustls::ServerConfig>>,
    /// `/metrics` answers without a principal.
    pub(crate) admin_metrics_public: bool,
    /// `[egress]`, when egress mode is on.
    pub(crate) egress: Option<egress::EgressSettings>,
    /// The proxy listener's TLS; plain HTTP (HTTP/1.1 and h2c) when `None`.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) header_read_timeout: Duration,
    /// Per-core workers serving the proxy listener's connections (0: the main runtime serves
    /// them); see [`crate::server::workers`].
    pub(crate) workers: usize,
    /// Where the access log goes (`[log]`); `None`: no access log.
    pub(crate) access_log: Option<crate::access_log::Destination>,
    pub(crate) upstream: UpstreamTarget,
    /// Roots (webpki plus `upstream.extra_ca`) the upstream client trusts.
    pub(crate) client_tls: rustls::ClientConfig,
    pub(crate) connect_timeout: Duration,
    /// Longest wait for the upstream's response head.
    pub(crate) upstream_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    /// Where the audit log is.
    pub(crate) store: StoreLocation,
    /// How to open it (timeouts, migrations, token key, password file).
    pub(crate) store_options: StoreOptions,
    /// The default audit log folder, when it does not exist yet: created (private) at start by
    /// [`Settings::create_store_folder`]. A configured `store.path`'s folder must exist.
    pub(crate) store_folder_to_create: Option<PathBuf>,
    /// How old an unfinished change must be before crash recovery records it `recovered`.
    pub(crate) recovery_grace: Duration,
    /// Record GETs of sync policies as `read` events.
    pub(crate) record_reads: bool,
    /// Largest governed request body read (413 above).
    pub(crate) max_body: usize,
    /// Largest `$batch` body read, before parsing (413 above).
    pub(crate) max_batch_body: usize,
    /// A file holding a bearer token for crash recovery's re-reads of the state.
    pub(crate) recovery_token_file: Option<PathBuf>,
    /// When refusals from one client are summarised instead of recorded one by one.
    pub(crate) refusal_limits: RefusalLimits,
    /// The local rules, compiled.
    pub(crate) rules: Arc<crate::rules::RuleSet>,
    /// The change-approval gate's policies and webhooks.
    pub(crate) approvals: Arc<crate::approvals::ApprovalSettings>,
    /// Timeouts, connection caps and the body memory budget (`[limits]`).
    pub(crate) limits: Limits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("tls", &self.tls.is_some())
            .field("admin_tls", &self.admin_tls.is_some())
            .field("upstream", &self.upstream.to_string())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings for a proxy in front of `upstream` with every default, on loopback port 0, with
    /// its audit log at `db`.
    pub fn for_upstream(upstream: &str, db: &Path) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        raw.proxy.listen = "127.0.0.1:0".into();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.upstream.url = upstream.into();
        raw.store.path = db.to_owned();
        raw.validate()
    }

    /// For the governed benchmark's "before" column: no Merkle tree kept and no checkpoint
    /// signed, as the writer was before issue 11. Not a configuration an operator can choose.
    #[doc(hidden)]
    pub fn without_tree(mut self) -> Self {
        self.store_options.keep_tree = false;
        self.store_options.checkpoints.enabled = false;
        self
    }

    /// For the governed benchmark: also send every checkpoint to a file witness at `path`.
    #[doc(hidden)]
    pub fn with_file_witness(mut self, path: &Path) -> Self {
        self.store_options
            .checkpoints
            .witnesses
            .push(crate::store::witness::WitnessSpec {
                name: "bench-file".into(),
                target: crate::store::witness::Target::File(path.to_owned()),
                timeout: std::time::Duration::from_secs(10),
                key: None,
            });
        self
    }

    /// Create the default audit log folder when it is missing, readable by its owner only (the
    /// log and its token key are private).
    pub(crate) fn create_store_folder(&self) -> std::io::Result<()> {
        let Some(dir) = &self.store_folder_to_create else {
            return Ok(());
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not an address like 127.0.0.1:8080: {e}"),
        )
    })
}

impl RawConfig {
    /// `[log]`: an access log only when asked for; a path without `access = true` is a mistake
    /// worth naming rather than a log silently not written.
    fn access_log(&self) -> Result<Option<crate::access_log::Destination>, ConfigError> {
        use crate::access_log::Destination;
        match (&self.log.access, &self.log.access_path) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(invalid(
                "log.access_path",
                "is set but log.access is false; set access = true to write the access log",
            )),
            (true, None) => Ok(Some(Destination::Stdout)),
            (true, Some(path)) => Ok(Some(Destination::File(path.clone()))),
        }
    }
}

/// Most per-core workers `proxy.workers` may ask for: more threads than this only add switches.
const MAX_WORKERS: usize = 256;

/// `proxy.workers`: as configured (0 serves connections on the main runtime), or one per core the
/// process may use (`available_parallelism` follows CPU affinity and cgroup quotas).
fn proxy_workers(configured: Option<usize>) -> Result<usize, ConfigError> {
    match configured {
        Some(n) if n > MAX_WORKERS => Err(invalid(
            "proxy.workers",
            format!("{n} is more than {MAX_WORKERS}; one per core is plenty"),
        )),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` (see [`crate::units`]).
pub(crate) fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    Ok(units::duration(key, value)?)
}

/// `"1048576"`, `"512KiB"`, `"1MiB"` (see [`crate::units`]).
pub(crate) fn parse_size(key: &'static str, value: &str) -> Result<usize, ConfigError> {
    Ok(units::size(key, value)?)
}
