//! Configuration: one TOML file, read in two stages.
//!
//! [`RawConfig`] mirrors the file (every table `deny_unknown_fields`, so a typo fails loudly with the
//! key's name and position); [`RawConfig::validate`] turns it into [`Settings`], where addresses are
//! parsed, the upstream is resolved, TLS files are loaded and durations are typed. Nothing starts
//! until validation passes, and `syncgate check-config` runs exactly the same validation.
//! `config/syncgate.toml` is the commented reference for every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use serde::Deserialize;

use crate::tls::{self, ClientAuth, TlsError};

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

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// The folder relative paths are resolved against (the config file's folder, or the working
    /// directory); Rego files are loaded from it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this configuration was read from, for error messages.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_grace")]
    pub shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    pub tls: Option<RawListenerTls>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            shutdown_grace: default_grace(),
            header_read_timeout: default_header_read_timeout(),
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
    pub connect_timeout: String,
    #[serde(default = "default_upstream_timeout")]
    pub timeout: String,
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: String,
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
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default = "default_db")]
    pub path: PathBuf,
    #[serde(default = "default_busy_timeout")]
    pub busy_timeout: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: default_db(),
            busy_timeout: default_busy_timeout(),
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
    pub recovery_token_file: Option<PathBuf>,
    /// Refusals per client recorded one by one within `refusal_window`; more are summarised.
    #[serde(default = "default_refusal_burst")]
    pub refusal_burst: u32,
    #[serde(default = "default_refusal_window")]
    pub refusal_window: String,
    /// Clients whose refusals are tracked at once.
    #[serde(default = "default_refusal_clients")]
    pub refusal_clients: usize,
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

fn default_refusal_burst() -> u32 {
    crate::proxy::RefusalLimits::default().burst
}
fn default_refusal_window() -> String {
    "10s".into()
}
fn default_refusal_clients() -> usize {
    crate::proxy::RefusalLimits::default().clients
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
fn default_db() -> PathBuf {
    "syncgate.db".into()
}
fn default_busy_timeout() -> String {
    "5s".into()
}
fn default_max_body() -> String {
    "1MiB".into()
}

/// `audit.max_batch_body`: Graph documents no byte limit for `$batch` (graph-reference §6 gives
/// only the 20-request cap), but refuses request bodies of a few MB (its simple-upload and
/// attachment limits are 4 MB), so a batch Graph would accept fits in 4 MiB. Checked on the
/// stream, before parsing: a hostile batch costs at most this much memory to refuse.
pub const DEFAULT_MAX_BATCH_BODY: usize = 4 * 1024 * 1024;
fn default_max_batch_body() -> String {
    "4MiB".into()
}

/// Values given on the command line, which win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub db: Option<PathBuf>,
    pub admin_listen: Option<String>,
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
        if let Some(tls) = &mut self.proxy.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
        if let Some(ca) = &mut self.upstream.extra_ca {
            fix(ca);
        }
        fix(&mut self.store.path);
        if let Some(token) = &mut self.audit.recovery_token_file {
            fix(token);
        }
    }

    pub fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.listen {
            self.proxy.listen = v;
        }
        if let Some(v) = o.upstream {
            self.upstream.url = v;
        }
        if let Some(v) = o.db {
            self.store.path = v;
        }
        if let Some(v) = o.admin_listen {
            self.admin.listen = v;
        }
    }

    /// Check every value and load the TLS material: the second stage.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = parse_addr("proxy.listen", &self.proxy.listen)?;
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(invalid(
                "admin.listen",
                "must differ from proxy.listen (the admin API never shares the proxy port)",
            ));
        }
        let tls = match &self.proxy.tls {
            None => None,
            Some(t) => {
                let client_auth = match (&t.client_ca, t.client_auth) {
                    (Some(ca), mode) => Some(ClientAuth {
                        ca: ca.clone(),
                        required: mode == ClientAuthMode::Required,
                    }),
                    (None, ClientAuthMode::Required) => {
                        return Err(invalid(
                            "proxy.tls.client_auth",
                            "\"required\" needs proxy.tls.client_ca",
                        ));
                    }
                    (None, ClientAuthMode::Optional) => None,
                };
                Some(
                    tls::server_config(&t.cert, &t.key, client_auth.as_ref()).map_err(
                        |source| ConfigError::Tls {
                            key: "proxy.tls",
                            source,
                        },
                    )?,
                )
            }
        };
        let upstream = UpstreamTarget::parse(&self.upstream.url)?;
        let client_tls =
            tls::client_config(self.upstream.extra_ca.as_deref()).map_err(|source| {
                ConfigError::Tls {
                    key: "upstream.extra_ca",
                    source,
                }
            })?;
        if let Some(dir) = self.store.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(invalid(
                "store.path",
                format!("folder {} does not exist", dir.display()),
            ));
        }
        let max_body = parse_size("audit.max_body", &self.audit.max_body)?;
        let max_batch_body = parse_size("audit.max_batch_body", &self.audit.max_batch_body)?;
        let largest_body = if max_batch_body > max_body {
            ("audit.max_batch_body", max_batch_body)
        } else {
            ("audit.max_body", max_body)
        };
        Ok(Settings {
            listen,
            admin_listen,
            tls,
            shutdown_grace: parse_duration("proxy.shutdown_grace", &self.proxy.shutdown_grace)?,
            header_read_timeout: parse_duration(
                "proxy.header_read_timeout",
                &self.proxy.header_read_timeout,
            )?,
            upstream,
            client_tls,
            connect_timeout: parse_duration(
                "upstream.connect_timeout",
                &self.upstream.connect_timeout,
            )?,
            upstream_timeout: parse_duration("upstream.timeout", &self.upstream.timeout)?,
            pool_idle_timeout: parse_duration(
                "upstream.pool_idle_timeout",
                &self.upstream.pool_idle_timeout,
            )?,
            db_path: self.store.path.clone(),
            busy_timeout: parse_duration("store.busy_timeout", &self.store.busy_timeout)?,
            record_reads: self.audit.record_reads,
            max_body,
            max_batch_body,
            recovery_token_file: self.audit.recovery_token_file.clone(),
            refusal_limits: crate::proxy::RefusalLimits {
                burst: self.audit.refusal_burst,
                window: match parse_duration("audit.refusal_window", &self.audit.refusal_window)? {
                    d if d.is_zero() => {
                        return Err(invalid("audit.refusal_window", "must be longer than 0"));
                    }
                    d => d,
                },
                clients: match self.audit.refusal_clients {
                    0 => return Err(invalid("audit.refusal_clients", "must be at least 1")),
                    n => n,
                },
            },
            rules: Arc::new(self.load_rules()?),
            limits: self.limits.validate(largest_body)?,
        })
    }

    /// Validate and compile the `[rules]` table (also what a SIGHUP reload runs).
    pub fn load_rules(&self) -> Result<crate::rules::RuleSet, ConfigError> {
        crate::rules::RuleSet::load(&self.rules, &self.base_dir).map_err(|source| {
            ConfigError::Rules {
                file: self.file.clone(),
                source,
            }
        })
    }
}

/// Validated settings, ready to start from.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The proxy listener's TLS; plain HTTP (HTTP/1.1 and h2c) when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub upstream: UpstreamTarget,
    /// Roots (webpki plus `upstream.extra_ca`) the upstream client trusts.
    pub client_tls: rustls::ClientConfig,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response head.
    pub upstream_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// The audit log's SQLite file.
    pub db_path: PathBuf,
    /// How long a write waits for a locked database before the change is refused with 503.
    pub busy_timeout: Duration,
    /// Record GETs of sync policies as `read` events.
    pub record_reads: bool,
    /// Largest governed request body read (413 above).
    pub max_body: usize,
    /// Largest `$batch` body read, before parsing (413 above).
    pub max_batch_body: usize,
    /// A file holding a bearer token for re-reading state at start-up after a crash.
    pub recovery_token_file: Option<PathBuf>,
    /// When refusals from one client are summarised instead of recorded one by one.
    pub refusal_limits: crate::proxy::RefusalLimits,
    /// The local rules, compiled.
    pub rules: Arc<crate::rules::RuleSet>,
    /// Timeouts, connection caps and the body memory budget (`[limits]`).
    pub limits: Limits,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("tls", &self.tls.is_some())
            .field("upstream", &self.upstream.to_string())
            .field("db_path", &self.db_path)
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
}

/// Where requests are forwarded: scheme and authority only (the client's path is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl std::fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// Graph's national clouds by name (graph-reference.md §7).
pub const CLOUDS: &[(&str, &str)] = &[
    ("global", "https://graph.microsoft.com"),
    ("usgov", "https://graph.microsoft.us"),
    ("dod", "https://dod-graph.microsoft.us"),
    ("china", "https://microsoftgraph.chinacloudapi.cn"),
];

impl UpstreamTarget {
    /// A cloud name from [`CLOUDS`] or an `http(s)://host[:port]` URL with no path.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        const KEY: &str = "upstream.url";
        let url = CLOUDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
            .map(|(_, url)| *url)
            .unwrap_or(value);
        let uri: http::Uri = url
            .parse()
            .map_err(|e| invalid(KEY, format!("{value:?} is not a cloud name or URL: {e}")))?;
        let names = CLOUDS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(invalid(
                KEY,
                format!("{value:?} is neither a cloud name ({names}) nor an absolute URL"),
            ));
        };
        if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
            return Err(invalid(
                KEY,
                format!("scheme must be http or https, not {scheme}"),
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                KEY,
                "give scheme and host only; the client's path (/v1.0/..., /beta/...) is kept",
            ));
        }
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
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

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| invalid(key, format!("{value:?} needs a unit: ms, s, m or h")))?;
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not a duration like \"30s\"")))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(invalid(
                key,
                format!("{value:?}: unit must be ms, s, m or h"),
            ));
        }
    };
    Ok(d)
}

/// `"1048576"`, `"512KiB"`, `"1MiB"`.
pub fn parse_size(key: &'static str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| invalid(key, format!("{value:?} is not a size like \"1MiB\"")))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => {
            return Err(invalid(
                key,
                format!("{value:?}: unit must be B, KiB or MiB"),
            ));
        }
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(invalid(
            key,
            format!("{value:?} must be between 1 byte and usize::MAX"),
        )),
        Some(size) => Ok(size),
    }
}

// ---- [limits]: what one client may hold of syncgate's time, descriptors and memory -------------
//
// Every value here bounds something an unauthenticated client controls: how long a socket may stay
// silent, how many sockets it may hold, how many body bytes syncgate keeps in memory for it. The
// connection caps are derived from the process's open-file limit when not configured, because
// running out of descriptors stops *every* client (accept fails), which is exactly what a flood of
// silent sockets aims for.

/// Descriptors kept back from the connection caps: the admin listener's connections (capped at
/// [`crate::app::ADMIN_MAX_CONNECTIONS`]), the audit log's database, `-wal` and `-shm` files, the
/// listeners, stdio and the runtime's own (epoll, eventfd), with room to spare.
pub const FD_RESERVE: u64 = 64;

/// The largest default total connection cap, whatever the file limit: each idle connection costs
/// buffers (tens of KiB with TLS), so a huge file limit should not invite a huge idle population.
pub const DEFAULT_MAX_CONNECTIONS_CEILING: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: String,
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout: String,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "default_h2_keepalive_interval")]
    pub h2_keepalive_interval: String,
    #[serde(default = "default_h2_keepalive_timeout")]
    pub h2_keepalive_timeout: String,
    #[serde(default = "default_body_stall_timeout")]
    pub body_stall_timeout: String,
    #[serde(default = "default_body_memory")]
    pub body_memory: String,
    #[serde(default = "default_body_memory_wait")]
    pub body_memory_wait: String,
    /// Derived from the open-file limit when absent.
    pub max_connections: Option<usize>,
    /// A quarter of `max_connections` when absent.
    pub max_connections_per_client: Option<usize>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            first_byte_timeout: default_first_byte_timeout(),
            tls_handshake_timeout: default_tls_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            h2_keepalive_interval: default_h2_keepalive_interval(),
            h2_keepalive_timeout: default_h2_keepalive_timeout(),
            body_stall_timeout: default_body_stall_timeout(),
            body_memory: default_body_memory(),
            body_memory_wait: default_body_memory_wait(),
            max_connections: None,
            max_connections_per_client: None,
        }
    }
}

fn default_first_byte_timeout() -> String {
    "10s".into()
}
fn default_tls_handshake_timeout() -> String {
    "10s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_h2_keepalive_interval() -> String {
    "30s".into()
}
fn default_h2_keepalive_timeout() -> String {
    "20s".into()
}
fn default_body_stall_timeout() -> String {
    "10s".into()
}
fn default_body_memory() -> String {
    "64MiB".into()
}
fn default_body_memory_wait() -> String {
    "2s".into()
}

/// Validated `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A new connection that sends nothing for this long is closed.
    pub first_byte_timeout: Duration,
    /// A TLS handshake that has not finished after this long is abandoned.
    pub tls_handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive and
    /// HTTP/2 alike).
    pub idle_timeout: Duration,
    /// How often an HTTP/2 peer is pinged.
    pub h2_keepalive_interval: Duration,
    /// An HTTP/2 peer that does not answer a ping within this long is disconnected.
    pub h2_keepalive_timeout: Duration,
    /// A governed or `$batch` body that makes no progress for this long is refused with 408.
    pub body_stall_timeout: Duration,
    /// Bytes of governed and `$batch` bodies held in memory at once, across all requests.
    pub body_memory: usize,
    /// How long a body read waits for room in `body_memory` before it is refused with 503.
    pub body_memory_wait: Duration,
    /// Client connections open at once on the proxy listener.
    pub max_connections: usize,
    /// Client connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// The soft open-file limit the caps were checked against.
    pub open_file_limit: u64,
}

impl RawLimits {
    /// `largest_body` is the largest body a request may have read whole (`audit.max_body`,
    /// `audit.max_batch_body`): the budget must hold at least one of them.
    fn validate(&self, largest_body: (&'static str, usize)) -> Result<Limits, ConfigError> {
        let (body_key, max_body) = largest_body;
        let positive = |key: &'static str, value: &str| {
            let d = parse_duration(key, value)?;
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0"));
            }
            Ok(d)
        };
        let body_memory = parse_size("limits.body_memory", &self.body_memory)?;
        if body_memory < max_body {
            return Err(invalid(
                "limits.body_memory",
                format!(
                    "{body_memory} bytes is less than {body_key} ({max_body} bytes): a body of the \
                     allowed size could never be read"
                ),
            ));
        }
        let open_file_limit = open_file_limit();
        let (max_connections, max_connections_per_client) = connection_caps(
            open_file_limit,
            self.max_connections,
            self.max_connections_per_client,
        )?;
        Ok(Limits {
            first_byte_timeout: positive("limits.first_byte_timeout", &self.first_byte_timeout)?,
            tls_handshake_timeout: positive(
                "limits.tls_handshake_timeout",
                &self.tls_handshake_timeout,
            )?,
            idle_timeout: positive("limits.idle_timeout", &self.idle_timeout)?,
            h2_keepalive_interval: positive(
                "limits.h2_keepalive_interval",
                &self.h2_keepalive_interval,
            )?,
            h2_keepalive_timeout: positive(
                "limits.h2_keepalive_timeout",
                &self.h2_keepalive_timeout,
            )?,
            body_stall_timeout: positive("limits.body_stall_timeout", &self.body_stall_timeout)?,
            body_memory,
            body_memory_wait: parse_duration("limits.body_memory_wait", &self.body_memory_wait)?,
            max_connections,
            max_connections_per_client,
            open_file_limit,
        })
    }
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`); `u64::MAX` when unlimited or unknown
/// (then the caps fall back to their ceiling).
pub fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the whole call.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if status != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// The total and per-client connection caps for a process allowed `nofile` open files.
///
/// Every proxied request may need an upstream connection as well as its client connection, so at
/// most half of what is left after [`FD_RESERVE`] goes to client connections. A configured cap
/// above that is refused rather than trimmed: the operator asked for something the process cannot
/// honour, and would otherwise find out when accept() starts failing for everyone.
fn connection_caps(
    nofile: u64,
    total: Option<usize>,
    per_client: Option<usize>,
) -> Result<(usize, usize), ConfigError> {
    let room = usize::try_from(nofile.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
    let total = match total {
        Some(0) => return Err(invalid("limits.max_connections", "must be at least 1")),
        Some(n) if n > room => {
            return Err(invalid(
                "limits.max_connections",
                format!(
                    "{n} is more than the open-file limit allows: with {nofile} files, {FD_RESERVE} \
                     kept for syncgate itself and one upstream connection per client connection, \
                     at most {room} client connections fit. Raise the limit (ulimit -n, systemd \
                     LimitNOFILE) or lower limits.max_connections"
                ),
            ));
        }
        Some(n) => n,
        None if room == 0 => {
            return Err(invalid(
                "limits.max_connections",
                format!(
                    "the open-file limit ({nofile}) leaves no room for client connections after \
                     the {FD_RESERVE} syncgate keeps for itself; raise it (ulimit -n, systemd \
                     LimitNOFILE)"
                ),
            ));
        }
        None => room.min(DEFAULT_MAX_CONNECTIONS_CEILING),
    };
    let per_client = match per_client {
        Some(0) => {
            return Err(invalid(
                "limits.max_connections_per_client",
                "must be at least 1",
            ));
        }
        Some(n) if n > total => {
            return Err(invalid(
                "limits.max_connections_per_client",
                format!("{n} is more than limits.max_connections ({total})"),
            ));
        }
        Some(n) => n,
        None => (total / 4).max(1),
    };
    Ok((total, per_client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/syncgate.toml");
        let raw = RawConfig::load(&path).unwrap();
        let settings = raw.validate().unwrap();
        assert_eq!(settings.upstream.to_string(), "https://graph.microsoft.com");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<RawConfig>("[proxy]\nlisen = \"1.2.3.4:5\"\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
        let err = toml::from_str::<RawConfig>("[proxi]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `proxi`"), "{err}");
    }

    #[test]
    fn clouds_resolve_by_name_and_urls_must_not_carry_a_path() {
        assert_eq!(
            UpstreamTarget::parse("usgov").unwrap().to_string(),
            "https://graph.microsoft.us"
        );
        assert_eq!(
            UpstreamTarget::parse("DOD").unwrap().to_string(),
            "https://dod-graph.microsoft.us"
        );
        assert_eq!(
            UpstreamTarget::parse("china").unwrap().authority.host(),
            "microsoftgraph.chinacloudapi.cn"
        );
        assert!(UpstreamTarget::parse("http://127.0.0.1:9000/").is_ok());
        assert!(UpstreamTarget::parse("https://graph.microsoft.com/v1.0").is_err());
        assert!(UpstreamTarget::parse("ftp://x").is_err());
        assert!(UpstreamTarget::parse("moon").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("k", "512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("k", "100").unwrap(), 100);
        assert!(parse_size("k", "1MB").is_err());
        assert!(parse_size("k", "0").is_err());
        assert!(parse_size("k", "MiB").is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(
            parse_duration("k", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("k", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("k", "30").is_err());
        assert!(parse_duration("k", "s").is_err());
        assert!(parse_duration("k", "3d").is_err());
    }

    #[test]
    fn overrides_win_over_the_file() {
        let mut raw = RawConfig::default();
        raw.apply(Overrides {
            listen: Some("127.0.0.1:1".into()),
            upstream: Some("china".into()),
            db: Some("x.db".into()),
            admin_listen: Some("127.0.0.1:2".into()),
        });
        let s = raw.validate().unwrap();
        assert_eq!(s.listen.port(), 1);
        assert_eq!(s.admin_listen.port(), 2);
        assert_eq!(s.db_path, PathBuf::from("x.db"));
        assert_eq!(
            s.upstream.authority.host(),
            "microsoftgraph.chinacloudapi.cn"
        );
    }

    #[test]
    fn required_client_auth_needs_a_ca() {
        let raw: RawConfig = toml::from_str(
            "[proxy.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"required\"\n",
        )
        .unwrap();
        let err = raw.validate().err().unwrap();
        assert!(
            err.to_string().starts_with("proxy.tls.client_auth"),
            "{err}"
        );
    }
    #[test]
    fn connection_caps_stay_under_the_open_file_limit() {
        // Defaults: half of what the reserve leaves, a quarter of that per client.
        assert_eq!(connection_caps(1024, None, None).unwrap(), (480, 120));
        assert_eq!(connection_caps(128, None, None).unwrap(), (32, 8));
        assert_eq!(
            connection_caps(u64::MAX, None, None).unwrap(),
            (
                DEFAULT_MAX_CONNECTIONS_CEILING,
                DEFAULT_MAX_CONNECTIONS_CEILING / 4
            )
        );
        assert_eq!(
            connection_caps(1024, Some(100), Some(100)).unwrap(),
            (100, 100)
        );
        let err = connection_caps(1024, Some(481), None).unwrap_err();
        assert!(err.to_string().contains("at most 480"), "{err}");
        let err = connection_caps(64, None, None).unwrap_err();
        assert!(err.to_string().contains("no room"), "{err}");
        assert!(connection_caps(1024, Some(10), Some(11)).is_err());
        assert!(connection_caps(1024, Some(0), None).is_err());
        assert!(connection_caps(1024, None, Some(0)).is_err());
    }

    #[test]
    fn limits_refuse_zero_timeouts_and_a_budget_below_the_body_cap() {
        let raw: RawConfig = toml::from_str("[limits]\nidle_timeout = \"0s\"\n").unwrap();
        let err = raw.validate().err().unwrap();
        assert!(err.to_string().starts_with("limits.idle_timeout"), "{err}");
        let raw: RawConfig =
            toml::from_str("[audit]\nmax_body = \"2MiB\"\n[limits]\nbody_memory = \"1MiB\"\n")
                .unwrap();
        let err = raw.validate().err().unwrap();
        assert!(err.to_string().starts_with("limits.body_memory"), "{err}");
        let raw: RawConfig = toml::from_str(
            "[audit]\nmax_batch_body = \"8MiB\"\n[limits]\nbody_memory = \"4MiB\"\n",
        )
        .unwrap();
        let err = raw.validate().err().unwrap().to_string();
        assert!(err.contains("audit.max_batch_body"), "{err}");
        let limits = RawConfig::default().validate().unwrap().limits;
        assert_eq!(limits.body_memory, 64 << 20);
        assert!(limits.max_connections as u64 <= limits.open_file_limit);
    }
}
