//! Egress mode: syncgate as the network's forward proxy (`HTTPS_PROXY`).
//!
//! A client pointed at syncgate as its proxy asks for each HTTPS host with `CONNECT host:443`.
//! [`Egress::connect`] answers it:
//! - **Proxy authentication** first, when `[[egress.users]]` lists any (`407` without valid
//!   `Proxy-Authorization: Basic`).
//! - **The target is read strictly** ([`hosts::Target`]): `host:port`, nothing else (`400`).
//! - **A Graph host** (`egress.graph_hosts`) is never tunnelled. With `egress.ca_cert` and
//!   `egress.ca_key` it is intercepted ([`intercept`]): TLS is terminated with a leaf minted for
//!   it ([`mint`]), and its requests go through the same classify → govern → forward pipeline
//!   as in reverse-proxy mode, sent to that host. Without them it is refused (`403`).
//! - **An IP literal** is refused: it would name no host to check. With
//!   `egress.graph_aliases = "intercept"` it is intercepted as the Graph host its ClientHello
//!   names, and closed if it names none ([`intercept::by_hello`]).
//! - **Another host** is tunnelled when `other_hosts = "tunnel"` or it matches `egress.allow`,
//!   and refused (`403`) otherwise.
//! - **A tunnel is checked before it carries anything.** Its address must not be one of a
//!   Graph host's addresses (refused, or intercepted by its hello as above; refused too when no
//!   Graph host resolves, since nothing could be checked). The client's first bytes must be a
//!   TLS ClientHello whose server name (SNI) is the tunnel's own host ([`hello`]). Only then
//!   are they passed on ([`tunnel`]).
//! - **A request in absolute form** (`GET http://host/…`) for a Graph host goes through the
//!   pipeline in front of that host; for any other host it is refused.

pub(crate) mod hello;
pub(crate) mod hosts;
pub(crate) mod intercept;
pub(crate) mod mint;
pub(crate) mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::admin::auth::ApiKey;
use crate::body::Body;
use crate::config::egress::{EgressSettings, GraphAliases, OtherHosts};
use crate::graph_error::{GraphError, RequestIds};
use crate::metrics::{EgressOutcome, Metrics};
use crate::server::{ConnInfo, DropConnection};
use hosts::Target;

/// How long a Graph host's addresses are kept before they are looked up again.
const GRAPH_ADDRESSES_TTL: Duration = Duration::from_secs(60);

/// How long a name lookup or a connection to a tunnel's host may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The challenge a `407` carries.
const PROXY_REALM: &str = "Basic realm=\"syncgate\", charset=\"UTF-8\"";

/// What egress mode does with one `CONNECT`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A Graph host: governed, which needs interception.
    Graph,
    /// Tunnelled, once its address and ClientHello are checked.
    Tunnel,
    /// Refused, with the reason the client is told.
    Refuse(String),
    /// Possibly Graph under another name (an IP literal): intercepted as the Graph host its
    /// ClientHello names, closed otherwise (`egress.graph_aliases = "intercept"`).
    Alias,
}

/// Egress mode's settings, how it serves Graph hosts, and the Graph addresses it has looked up.
pub(crate) struct Egress {
    settings: EgressSettings,
    /// Each Graph host's server; its tunnels are refused without `egress.ca_cert`.
    intercept: intercept::Intercept,
    graph_addresses: tokio::sync::Mutex<Option<(Instant, Vec<IpAddr>)>>,
    metrics: Arc<Metrics>,
}

impl Egress {
    pub(crate) fn new(settings: EgressSettings, intercept: intercept::Intercept) -> Self {
        Egress {
            settings,
            intercept,
            graph_addresses: tokio::sync::Mutex::new(None),
            metrics: Arc::new(Metrics::new(None)),
        }
    }

    /// Count into `metrics` (the running syncgate's) instead of a registry nobody scrapes.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// What to do with a `CONNECT` to `target`, by name alone.
    pub(crate) fn decide(&self, target: &Target) -> Decision {
        if self.settings.is_graph_host(&target.host) {
            return Decision::Graph;
        }
        if target.literal.is_some() {
            if self.settings.graph_aliases == GraphAliases::Intercept && target.port == 443 {
                return Decision::Alias;
            }
            return Decision::Refuse(format!(
                "{} is an IP address: egress mode tunnels only named hosts, so that the name \
                 can be checked",
                target.host
            ));
        }
        let allowed = match self.settings.other_hosts {
            OtherHosts::Tunnel => true,
            OtherHosts::Refuse => self.settings.allow.iter().any(|p| p.matches(&target.host)),
        };
        if allowed {
            Decision::Tunnel
        } else {
            Decision::Refuse(format!(
                "{} is not a host this proxy tunnels to (egress.allow)",
                target.host
            ))
        }
    }

    /// The user `Proxy-Authorization` proves to be, `Some("")` when no users are configured,
    /// `None` when it proves nobody.
    fn authenticate(&self, headers: &http::HeaderMap) -> Option<String> {
        if self.settings.users.is_empty() {
            return Some(String::new());
        }
        let mut values = headers.get_all(header::PROXY_AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let encoded = value.to_str().ok()?.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        let key = ApiKey::parse(password)?;
        // Every configured hash is checked, so the time taken does not say which names exist.
        let mut found = None;
        for (user, hash) in &self.settings.users {
            if hash.matches(&key) && user == name {
                found = Some(user.clone());
            }
        }
        found
    }

    /// Where a tunnel to `target` connects: `egress.resolve`, else DNS.
    async fn addresses(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Some(address) = self.settings.resolve.get(host) {
            return vec![*address];
        }
        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => found.collect(),
            _ => Vec::new(),
        }
    }

    /// The addresses the Graph hosts resolve to now (kept for a minute).
    async fn graph_addresses(&self) -> Vec<IpAddr> {
        let mut cached = self.graph_addresses.lock().await;
        if let Some((at, addresses)) = cached.as_ref() {
            if at.elapsed() < GRAPH_ADDRESSES_TTL {
                return addresses.clone();
            }
        }
        let mut addresses = Vec::new();
        for host in self.settings.graph_hosts() {
            let found = self.addresses(host, 443).await;
            if found.is_empty() {
                warn!(
                    host = %host,
                    "a Graph host does not resolve here: tunnels cannot be checked against its \
                     addresses"
                );
            }
            for address in found {
                if !addresses.contains(&address.ip()) {
                    addresses.push(address.ip());
                }
            }
        }
        *cached = Some((Instant::now(), addresses.clone()));
        addresses
    }

    /// Whether `req` is a request in absolute form (`GET http://host/…`, HTTP/1.x through the
    /// proxy), which [`Egress::absolute_form`] answers.
    pub(crate) fn is_absolute_form<B>(req: &Request<B>) -> bool {
        req.version() <= http::Version::HTTP_11 && req.uri().scheme().is_some()
    }

    /// Answer a request in absolute form: one for a Graph host goes through the pipeline in
    /// front of that host (proxy authentication first, the user recorded as with a tunnel); any
    /// other host is refused, since a plain-HTTP relay to anywhere is not what this proxy is
    /// for.
    pub(crate) async fn absolute_form(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, DropConnection> {
        let ids = RequestIds::from_headers(req.headers());
        let Some(user) = self.authenticate(req.headers()) else {
            return Ok(proxy_authentication_required(&ids));
        };
        let host = req.uri().host().unwrap_or_default().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
        let Some(server) = self.intercept.hosts.get(&host) else {
            return Ok(GraphError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{host:?} is not a Graph host: this proxy relays plain-HTTP requests only to \
                     Graph hosts"
                ),
            )
            .into_response(&ids));
        };
        let conn = Arc::new(ConnInfo {
            proxy_user: (!user.is_empty()).then_some(user),
            ..conn.clone()
        });
        server.serve(req, conn).await
    }

    /// Answer a `CONNECT`, counted in `syncgate_egress_connects_total`.
    pub(crate) async fn connect(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let response = self.answer(req, conn).await;
        let outcome = match response.extensions().get::<EgressOutcome>() {
            Some(opened) => *opened,
            None => match response.status() {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED => EgressOutcome::Unauthenticated,
                StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => {
                    EgressOutcome::BadRequest
                }
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => EgressOutcome::Unreachable,
                _ => EgressOutcome::Refused,
            },
        };
        self.metrics.egress_connect(outcome);
        response
    }

    /// The `200` that opens a tunnel of `kind`, and the work it hands off, kept in the gauge of
    /// open ones while it runs.
    fn opened(
        &self,
        conn: &ConnInfo,
        kind: EgressOutcome,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<Response<Body>> {
        let open = OpenGauge::new(self.metrics.egress_open(kind));
        let counted = async move {
            work.await;
            drop(open);
        };
        if !conn.handoff.spawn(counted) {
            return None;
        }
        let mut response = Response::new(crate::body::empty());
        response.extensions_mut().insert(kind);
        Some(response)
    }

    async fn answer(&self, mut req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let ids = RequestIds::from_headers(req.headers());
        let refuse = |status: StatusCode, code: &str, message: String| {
            GraphError::new(status, code, message).into_response(&ids)
        };
        if req.version() != http::Version::HTTP_11 && req.version() != http::Version::HTTP_10 {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "CONNECT is answered over HTTP/1.1 only".into(),
            );
        }
        let Some(user) = self.authenticate(req.headers()) else {
            return proxy_authentication_required(&ids);
        };
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        let target = match authority.as_deref().map(Target::parse) {
            Some(Ok(target)) => target,
            Some(Err(why)) => {
                return refuse(StatusCode::BAD_REQUEST, "BadRequest", why.into());
            }
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "CONNECT needs a host:port target".into(),
                );
            }
        };
        let who = if user.is_empty() {
            None
        } else {
            Some(user.as_str())
        };
        match self.decide(&target) {
            Decision::Graph => {
                let host = self
                    .intercept
                    .hosts
                    .get(&target.host)
                    .filter(|h| h.intercepts());
                if let Some(host) = host {
                    if target.port != 443 {
                        return refuse(
                            StatusCode::FORBIDDEN,
                            "Forbidden",
                            format!("{} serves Graph on port 443 only", target.host),
                        );
                    }
                    let work = host.intercept(
                        hyper::upgrade::on(&mut req),
                        conn.remote,
                        who.map(str::to_owned),
                        self.settings.hello_timeout,
                    );
                    return self
                        .opened(conn, EgressOutcome::Intercepted, work)
                        .unwrap_or_else(|| closing(&ids));
                }
                info!(host = %target.host, user = who, client = %conn.remote, "CONNECT to a Graph host refused: interception is not set up");
                return refuse(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "{} is a Graph host: this proxy does not tunnel it, and cannot intercept \
                         it without egress.ca_cert and egress.ca_key",
                        target.host
                    ),
                );
            }
            Decision::Refuse(why) => {
                info!(host = %target.host, user = who, client = %conn.remote, "CONNECT refused: {why}");
                return refuse(StatusCode::FORBIDDEN, "Forbidden", why);
            }
            Decision::Alias => return self.alias(req, conn, who, &ids),
            Decision::Tunnel => {}
        }
        let addresses = self.addresses(&target.host, target.port).await;
        if addresses.is_empty() {
            return refuse(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                format!("{} does not resolve", target.host),
            );
        }
        let graph = self.graph_addresses().await;
        // Nothing to check against: refused rather than let through unchecked. (When no Graph
        // host resolves here, syncgate could not reach Graph either.)
        if graph.is_empty() {
            warn!(host = %target.host, "CONNECT refused: no Graph host resolves, so the tunnel cannot be checked");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "no Graph host resolves here, so this tunnel cannot be checked against Graph's \
                 addresses"
                    .into(),
            );
        }
        if let Some(shared) = addresses.iter().find(|a| graph.contains(&a.ip())) {
            if self.settings.graph_aliases == GraphAliases::Intercept && target.port == 443 {
                info!(host = %target.host, address = %shared, client = %conn.remote, "CONNECT to a name with a Graph address: intercepted by its ClientHello");
                return self.alias(req, conn, who, &ids);
            }
            info!(host = %target.host, address = %shared, client = %conn.remote, "CONNECT refused: the host resolves to a Graph address");
            return refuse(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} resolves to {}, an address of a Graph host: it is not tunnelled",
                    target.host,
                    shared.ip()
                ),
            );
        }
        let upstream =
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addresses[..])).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    warn!(host = %target.host, %error, "tunnel: cannot connect");
                    return refuse(
                        StatusCode::BAD_GATEWAY,
                        "BadGateway",
                        format!("cannot connect to {}:{}", target.host, target.port),
                    );
                }
                Err(_) => {
                    return refuse(
                        StatusCode::GATEWAY_TIMEOUT,
                        "GatewayTimeout",
                        format!("connecting to {}:{} timed out", target.host, target.port),
                    );
                }
            };
        let _ = upstream.set_nodelay(true);
        let upgrade = hyper::upgrade::on(&mut req);
        let tunnel = tunnel::Tunnel {
            target,
            user: who.map(str::to_owned),
            client: conn.remote,
            hello_timeout: self.settings.hello_timeout,
            idle_timeout: self.settings.tunnel_idle_timeout,
            metrics: self.metrics.clone(),
        };
        self.opened(
            conn,
            EgressOutcome::Tunnelled,
            tunnel.run(upgrade, upstream),
        )
        .unwrap_or_else(|| closing(&ids))
    }
}

impl Egress {
    /// A tunnel that may lead to Graph under another name: `200`, then intercepted as the Graph
    /// host its ClientHello names ([`intercept::by_hello`]).
    fn alias(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        who: Option<&str>,
        ids: &RequestIds,
    ) -> Response<Body> {
        let work = intercept::by_hello(
            hyper::upgrade::on(&mut req),
            self.intercept.hosts.clone(),
            conn.remote,
            who.map(str::to_owned),
            self.settings.hello_timeout,
        );
        self.opened(conn, EgressOutcome::Intercepted, work)
            .unwrap_or_else(|| closing(ids))
    }
}

/// `503`: the connection a `CONNECT` came on is already closing.
fn closing(ids: &RequestIds) -> Response<Body> {
    GraphError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "the connection is closing",
    )
    .into_response(ids)
}

/// Holds a gauge one higher for as long as it lives (a tunnel cut by shutdown included).
struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl OpenGauge {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        OpenGauge(gauge)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `407` with the challenge.
fn proxy_authentication_required(ids: &RequestIds) -> Response<Body> {
    let mut response = GraphError::new(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "ProxyAuthenticationRequired",
        "this proxy needs Proxy-Authorization: Basic with a configured user and key",
    )
    .into_response(ids);
    response.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static(PROXY_REALM),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::egress::RawEgress;

    fn egress(toml: &str) -> Egress {
        let raw: RawEgress = toml::from_str(&format!("enabled = true\n{toml}")).unwrap();
        let intercept = intercept::Intercept {
            hosts: Arc::default(),
        };
        Egress::new(raw.validate().unwrap().unwrap(), intercept)
    }

    fn decide(egress: &Egress, target: &str) -> Decision {
        egress.decide(&Target::parse(target).unwrap())
    }

    #[test]
    fn graph_hosts_are_never_tunnelled_and_literals_never_pass() {
        let e = egress("other_hosts = \"tunnel\"");
        assert_eq!(decide(&e, "GRAPH.microsoft.com.:443"), Decision::Graph);
        assert_eq!(decide(&e, "dod-graph.microsoft.us:443"), Decision::Graph);
        assert_eq!(decide(&e, "example.org:443"), Decision::Tunnel);
        assert!(matches!(
            decide(&e, "20.190.128.1:443"),
            Decision::Refuse(_)
        ));
        assert!(matches!(
            decide(&e, "[2603:1006::1]:443"),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn by_default_only_the_token_endpoints_are_tunnelled() {
        let e = egress("");
        assert_eq!(
            decide(&e, "login.microsoftonline.com:443"),
            Decision::Tunnel
        );
        assert!(matches!(decide(&e, "example.org:443"), Decision::Refuse(_)));
        let e = egress("allow = [\"*.example.org\"]");
        assert_eq!(decide(&e, "a.example.org:443"), Decision::Tunnel);
        assert!(matches!(
            decide(&e, "login.microsoftonline.com:443"),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn proxy_authorization_must_name_a_user_and_that_users_key() {
        let key = ApiKey::generate().unwrap();
        let hash = crate::admin::auth::KeyHash::new(&key).unwrap();
        let e = egress(&format!(
            "[[users]]\nname = \"ann\"\nkey_hash = \"{hash}\"\n[[users]]\nname = \"bob\"\nkey_hash = \"{}\"",
            crate::admin::auth::KeyHash::new(&ApiKey::generate().unwrap()).unwrap()
        ));
        let basic = |text: &str| {
            let mut h = http::HeaderMap::new();
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            );
            h.insert(header::PROXY_AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert_eq!(
            e.authenticate(&basic(&format!("ann:{}", key.reveal()))),
            Some("ann".into())
        );
        assert_eq!(
            e.authenticate(&basic(&format!("bob:{}", key.reveal()))),
            None
        );
        assert_eq!(e.authenticate(&basic("ann:sgk_wrong")), None);
        assert_eq!(e.authenticate(&basic("ann")), None);
        assert_eq!(e.authenticate(&http::HeaderMap::new()), None);
        let mut two = basic(&format!("ann:{}", key.reveal()));
        two.append(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        assert_eq!(e.authenticate(&two), None, "two headers are ambiguous");
        // No users: anyone.
        assert_eq!(
            egress("").authenticate(&http::HeaderMap::new()),
            Some(String::new())
        );
    }
}
