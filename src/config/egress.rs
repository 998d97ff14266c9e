//! `[egress]`: syncgate as the network's forward proxy (`HTTPS_PROXY`), checked.
//!
//! Off unless `enabled`. When on, the proxy listener also answers `CONNECT`: a Graph host is
//! intercepted, another host is tunnelled or refused by `other_hosts` and `allow`, an IP literal
//! is refused, and `users` (when any) must authenticate with `Proxy-Authorization: Basic`. See
//! `docs/egress.md`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::UpstreamTarget;
use super::{ConfigError, invalid, parse_duration};
use crate::admin::auth::KeyHash;
use crate::egress::hosts::{GRAPH_HOSTS, HostPattern, TOKEN_HOSTS, is_host_name};
use crate::egress::mint::Minter;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// Answer `CONNECT` on the proxy listener.
    #[serde(default)]
    pub enabled: bool,
    /// Serve egress mode on a listener of its own (plain HTTP, e.g. `127.0.0.1:3128`) instead
    /// of the proxy listener, which then answers only reverse-proxy requests.
    #[serde(default)]
    pub listen: Option<String>,
    /// The hosts intercepted and governed (exact names).
    #[serde(default = "default_graph_hosts")]
    pub graph_hosts: Vec<String>,
    /// Every host that is not a Graph host: `refuse` (403) unless it matches `allow`, or
    /// `tunnel` all of them.
    #[serde(default)]
    pub other_hosts: OtherHosts,
    /// A `CONNECT` to an IP literal, or to a name that resolves to a Graph host's address:
    /// `refuse` (403), or `intercept` when its ClientHello names a Graph host (closed
    /// otherwise).
    #[serde(default)]
    pub graph_aliases: GraphAliases,
    /// Hosts tunnelled when `other_hosts = "refuse"`: exact names or `*.suffix`. Default: the
    /// clouds' token endpoints.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// How long a tunnel may carry no byte either way before it is closed.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: String,
    /// How long a client may take to send its ClientHello into a new tunnel.
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout: String,
    /// Who may use the forward proxy (`Proxy-Authorization: Basic`); none: anyone who can
    /// reach the listener.
    #[serde(default)]
    pub users: Vec<RawProxyUser>,
    /// Test use only: host → `address:port` to connect to instead of the host's DNS answer
    /// (like curl's `--resolve`), so tests can reach a local server under a public name.
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
    /// The enterprise CA that signs the certificates of intercepted Graph hosts (PEM), and its
    /// key; both or neither. Without them Graph hosts are refused.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
}

impl Default for RawEgress {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            graph_hosts: default_graph_hosts(),
            other_hosts: OtherHosts::default(),
            graph_aliases: GraphAliases::default(),
            allow: default_allow(),
            tunnel_idle_timeout: default_tunnel_idle_timeout(),
            hello_timeout: default_hello_timeout(),
            users: Vec::new(),
            resolve: BTreeMap::new(),
            ca_cert: None,
            ca_key: None,
        }
    }
}

/// What happens to a `CONNECT` to a host that is not a Graph host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherHosts {
    /// 403, unless the host matches `egress.allow`.
    #[default]
    Refuse,
    /// Tunnelled, whatever the host (the ClientHello's name is still checked).
    Tunnel,
}

/// What happens to a `CONNECT` that could lead to Graph without naming a Graph host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphAliases {
    /// 403.
    #[default]
    Refuse,
    /// Intercepted as the Graph host its ClientHello names, if it names one (and a CA is
    /// configured); closed otherwise.
    Intercept,
}

/// One `[[egress.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyUser {
    /// The user name the client sends.
    pub name: String,
    /// The hash of the password, which is a key from `syncgate admin new-key` (`sgk_…`).
    pub key_hash: String,
}

fn default_graph_hosts() -> Vec<String> {
    GRAPH_HOSTS.iter().map(|h| (*h).to_owned()).collect()
}

fn default_allow() -> Vec<String> {
    TOKEN_HOSTS.iter().map(|h| (*h).to_owned()).collect()
}

fn default_tunnel_idle_timeout() -> String {
    "5m".into()
}

fn default_hello_timeout() -> String {
    "10s".into()
}

/// `[egress]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct EgressSettings {
    pub(crate) other_hosts: OtherHosts,
    pub(crate) graph_aliases: GraphAliases,
    pub(crate) allow: Vec<HostPattern>,
    pub(crate) tunnel_idle_timeout: Duration,
    pub(crate) hello_timeout: Duration,
    /// Name and key hash; empty: no proxy authentication.
    pub(crate) users: Vec<(String, KeyHash)>,
    /// Lower-cased host → address.
    pub(crate) resolve: BTreeMap<String, SocketAddr>,
    /// The enterprise CA, loaded, when Graph hosts are intercepted.
    pub(crate) minter: Option<Arc<Minter>>,
    /// Each Graph host (lower-cased) and it as an upstream (`https://host`).
    pub(crate) graph_upstreams: Vec<(String, UpstreamTarget)>,
    /// A listener of its own; `None`: the proxy listener.
    pub(crate) listen: Option<SocketAddr>,
}

impl EgressSettings {
    /// The Graph hosts (lower-cased names).
    pub(crate) fn graph_hosts(&self) -> impl Iterator<Item = &str> {
        self.graph_upstreams.iter().map(|(host, _)| host.as_str())
    }

    /// Whether `host` (lower-cased) is a Graph host.
    pub(crate) fn is_graph_host(&self, host: &str) -> bool {
        self.graph_hosts().any(|g| g == host)
    }
}

impl RawEgress {
    /// `None` when egress mode is off.
    pub(crate) fn validate(&self) -> Result<Option<EgressSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let mut graph_hosts = Vec::new();
        for host in &self.graph_hosts {
            let lower = host.to_ascii_lowercase();
            if !is_host_name(&lower) {
                return Err(invalid(
                    "egress.graph_hosts",
                    format!("{host:?} is not a host name"),
                ));
            }
            graph_hosts.push(lower);
        }
        if graph_hosts.is_empty() {
            return Err(invalid(
                "egress.graph_hosts",
                "egress mode with no Graph host would govern nothing",
            ));
        }
        let mut allow = Vec::new();
        for text in &self.allow {
            let pattern = HostPattern::parse(text).map_err(|why| invalid("egress.allow", why))?;
            if let Some(graph) = graph_hosts.iter().find(|g| pattern.matches(g)) {
                return Err(invalid(
                    "egress.allow",
                    format!("{text:?} matches the Graph host {graph:?}, which is never tunnelled"),
                ));
            }
            allow.push(pattern);
        }
        let mut names = HashSet::new();
        let mut users = Vec::new();
        for (i, user) in self.users.iter().enumerate() {
            let entry = format!("egress.users[{i}] ({:?})", user.name);
            if user.name.is_empty()
                || user.name.contains(':')
                || user.name.chars().any(char::is_control)
            {
                return Err(invalid(
                    "egress.users.name",
                    format!("{entry}: a name must be non-empty, without ':' or control characters"),
                ));
            }
            if !names.insert(user.name.clone()) {
                return Err(invalid(
                    "egress.users.name",
                    format!("{entry}: the name is used by an earlier user"),
                ));
            }
            let hash = KeyHash::parse(&user.key_hash)
                .map_err(|e| invalid("egress.users.key_hash", format!("{entry}: {e}")))?;
            users.push((user.name.clone(), hash));
        }
        let mut resolve = BTreeMap::new();
        for (host, address) in &self.resolve {
            let address: SocketAddr = address.parse().map_err(|_| {
                invalid(
                    "egress.resolve",
                    format!("{host:?} = {address:?}: not an address:port"),
                )
            })?;
            resolve.insert(host.to_ascii_lowercase(), address);
        }
        if self.graph_aliases == GraphAliases::Intercept && self.ca_cert.is_none() {
            return Err(invalid(
                "egress.graph_aliases",
                "\"intercept\" needs egress.ca_cert and egress.ca_key",
            ));
        }
        let minter = match (&self.ca_cert, &self.ca_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(
                Minter::load(cert, key).map_err(|e| invalid("egress.ca_cert", e.to_string()))?,
            )),
            _ => {
                return Err(invalid(
                    "egress.ca_cert",
                    "egress.ca_cert and egress.ca_key go together: the CA's certificate and key",
                ));
            }
        };
        let mut graph_upstreams = Vec::new();
        for host in &graph_hosts {
            let target = UpstreamTarget::parse(&format!("https://{host}"))
                .map_err(|e| invalid("egress.graph_hosts", format!("{host:?}: {e}")))?;
            graph_upstreams.push((host.clone(), target));
        }
        let listen = self
            .listen
            .as_deref()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    invalid("egress.listen", format!("{text:?} is not an address:port"))
                })
            })
            .transpose()?;
        Ok(Some(EgressSettings {
            listen,
            minter,
            graph_upstreams,
            other_hosts: self.other_hosts,
            graph_aliases: self.graph_aliases,
            allow,
            tunnel_idle_timeout: parse_duration(
                "egress.tunnel_idle_timeout",
                &self.tunnel_idle_timeout,
            )?,
            hello_timeout: parse_duration("egress.hello_timeout", &self.hello_timeout)?,
            users,
            resolve,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(toml: &str) -> Result<Option<EgressSettings>, ConfigError> {
        let raw: RawEgress = toml::from_str(toml).expect("parses");
        raw.validate()
    }

    #[test]
    fn off_by_default_and_the_defaults_name_the_clouds() {
        assert!(egress("").unwrap().is_none());
        let on = egress("enabled = true").unwrap().unwrap();
        assert_eq!(on.graph_hosts().collect::<Vec<_>>(), GRAPH_HOSTS);
        assert_eq!(on.other_hosts, OtherHosts::Refuse);
        assert_eq!(
            on.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            TOKEN_HOSTS
        );
        assert!(on.users.is_empty());
        assert_eq!(on.tunnel_idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("enabled = true\ngraph_hosts = []", "egress.graph_hosts"),
            (
                "enabled = true\ngraph_hosts = [\"graph microsoft\"]",
                "egress.graph_hosts",
            ),
            (
                "enabled = true\nallow = [\"*.microsoft.com\"]",
                "egress.allow",
            ),
            ("enabled = true\nallow = [\"*\"]", "egress.allow"),
            (
                "enabled = true\n[[users]]\nname = \"a:b\"\nkey_hash = \"x\"",
                "egress.users.name",
            ),
            (
                "enabled = true\n[[users]]\nname = \"a\"\nkey_hash = \"x\"",
                "egress.users.key_hash",
            ),
            (
                "enabled = true\n[resolve]\n\"graph.microsoft.com\" = \"nowhere\"",
                "egress.resolve",
            ),
            (
                "enabled = true\ntunnel_idle_timeout = \"soon\"",
                "egress.tunnel_idle_timeout",
            ),
            (
                "enabled = true\ngraph_aliases = \"intercept\"",
                "egress.graph_aliases",
            ),
        ];
        for (toml, key) in cases {
            let error = egress(toml).expect_err(toml).to_string();
            assert!(error.contains(key), "{toml:?}: {error}");
        }
        assert!(toml::from_str::<RawEgress>("other_hosts = \"splice\"").is_err());
        assert!(toml::from_str::<RawEgress>("enable = true").is_err());
    }
}
