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
            max_body: parse_size("audit.max_body", &self.audit.max_body)?,
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
    /// A file holding a bearer token for re-reading state at start-up after a crash.
    pub recovery_token_file: Option<PathBuf>,
    /// When refusals from one client are summarised instead of recorded one by one.
    pub refusal_limits: crate::proxy::RefusalLimits,
    /// The local rules, compiled.
    pub rules: Arc<crate::rules::RuleSet>,
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
}
