//! An intercepted tunnel: syncgate terminates the client's TLS with a leaf for the Graph host
//! minted by the enterprise CA ([`super::mint`]), and serves the requests inside it with the
//! same pipeline as reverse-proxy mode, sending them to that host.
//!
//! Nothing gets past the checks:
//! - The ClientHello is read before any certificate is chosen. Its server name (SNI) must be the
//!   tunnel's host, or the tunnel is closed with no certificate shown.
//! - Every request inside must name the same host (`Host`, or `:authority` over HTTP/2), on
//!   port 443 if it names a port. Anything else is answered `421 Misdirected Request`, so a
//!   tunnel opened for one cloud cannot carry requests for another.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::mint::Minter;
use crate::body::Body;
use crate::graph_error::{GraphError, RequestIds};
use crate::proxy::Proxy;
use crate::server::{ConnInfo, DropConnection, Handler, Sessions};

/// How egress mode serves each Graph host.
pub(crate) struct Intercept {
    /// Lower-cased host → its server.
    pub(crate) hosts: Hosts,
}

/// A response to come, boxed (see [`Host`]).
pub(crate) type Answer =
    Pin<Box<dyn Future<Output = Result<Response<Body>, DropConnection>> + Send>>;

/// One Graph host's server, behind a trait object. The indirection breaks a cycle in the
/// types: a session's requests reach the proxy, whose `CONNECT` handling starts sessions, and
/// the compiler cannot prove a future `Send` through a cycle of `async fn`s.
pub(crate) trait Host: Send + Sync {
    /// Whether tunnels to this host are intercepted (a CA is configured).
    fn intercepts(&self) -> bool;

    /// The work of one tunnel to this host, once its `200` is sent (see [`run`]); only when
    /// [`Host::intercepts`].
    fn intercept(
        &self,
        upgrade: OnUpgrade,
        client: SocketAddr,
        user: Option<String>,
        hello_timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Answer one request for this host that came through the proxy in absolute form
    /// (`GET http://host/...`): the host check, then the pipeline.
    fn serve(&self, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Answer;

    /// What intercepting this host takes (the CA, the sessions), when it is intercepted.
    fn parts(&self) -> Option<(Arc<Minter>, Arc<Sessions<Intercepted>>)>;
}

/// Lower-cased Graph host → its server, shared with tunnels that learn their host from the
/// ClientHello ([`by_hello`]).
pub(crate) type Hosts = Arc<HashMap<String, Arc<dyn Host>>>;

/// [`Host`]: the CA that mints its leaf (when there is one), and the sessions served for it.
pub(crate) struct InterceptedHost {
    host: String,
    minter: Option<Arc<Minter>>,
    handler: Arc<Intercepted>,
    sessions: Arc<Sessions<Intercepted>>,
}

impl InterceptedHost {
    pub(crate) fn new(
        host: String,
        minter: Option<Arc<Minter>>,
        handler: Arc<Intercepted>,
        options: &crate::server::ServeOptions,
    ) -> Self {
        InterceptedHost {
            host,
            minter,
            sessions: Arc::new(Sessions::new(handler.clone(), options)),
            handler,
        }
    }
}

impl Host for InterceptedHost {
    fn intercepts(&self) -> bool {
        self.minter.is_some()
    }

    fn intercept(
        &self,
        upgrade: OnUpgrade,
        client: SocketAddr,
        user: Option<String>,
        hello_timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Some(minter) = self.minter.clone() else {
            return Box::pin(async {});
        };
        let expect = Expect::Host {
            host: self.host.clone(),
            minter,
            sessions: self.sessions.clone(),
        };
        Box::pin(run(upgrade, expect, client, user, hello_timeout))
    }

    fn serve(&self, req: Request<Incoming>, conn: Arc<ConnInfo>) -> Answer {
        let handler = self.handler.clone();
        Box::pin(async move { Handler::handle(&handler, req, conn).await })
    }

    fn parts(&self) -> Option<(Arc<Minter>, Arc<Sessions<Intercepted>>)> {
        Some((self.minter.clone()?, self.sessions.clone()))
    }
}

/// The work of a tunnel whose target named no Graph host but may still lead to one (an IP
/// literal, a name resolving to a Graph address, with `egress.graph_aliases = "intercept"`):
/// its ClientHello must name a Graph host this proxy intercepts, and it is then intercepted as
/// a tunnel to that host; otherwise it is closed. Only configured hosts are ever minted for.
pub(crate) fn by_hello(
    upgrade: OnUpgrade,
    hosts: Hosts,
    client: SocketAddr,
    user: Option<String>,
    hello_timeout: Duration,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(run(
        upgrade,
        Expect::Named(hosts),
        client,
        user,
        hello_timeout,
    ))
}

/// Which host an intercepted tunnel's ClientHello must name.
enum Expect {
    /// The tunnel's own (its `CONNECT` named a Graph host).
    Host {
        host: String,
        minter: Arc<Minter>,
        sessions: Arc<Sessions<Intercepted>>,
    },
    /// Any Graph host that is intercepted: the one named is the tunnel's host.
    Named(Hosts),
}

impl Expect {
    /// The host `sni` is, with what intercepting it takes, if the tunnel may go on.
    fn resolve(
        self,
        sni: Option<&str>,
    ) -> Option<(String, Arc<Minter>, Arc<Sessions<Intercepted>>)> {
        let sni = sni?;
        match self {
            Expect::Host {
                host,
                minter,
                sessions,
            } => (host == sni).then_some((host, minter, sessions)),
            Expect::Named(hosts) => {
                let (minter, sessions) = hosts.get(sni)?.parts()?;
                Some((sni.to_owned(), minter, sessions))
            }
        }
    }

    fn describe(&self) -> &str {
        match self {
            Expect::Host { host, .. } => host,
            Expect::Named(_) => "a Graph host",
        }
    }
}

/// The handler of one Graph host's intercepted sessions: the host check, then the proxy.
pub(crate) struct Intercepted {
    host: String,
    proxy: Arc<Proxy>,
}

impl Intercepted {
    pub(crate) fn new(host: String, proxy: Arc<Proxy>) -> Self {
        Intercepted { host, proxy }
    }
}

impl Handler for Intercepted {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        if let Err(named) = names_host(&req, &self.host) {
            let ids = RequestIds::from_headers(req.headers());
            info!(host = %self.host, named = %named, client = %conn.remote, "intercepted request for another host refused");
            return Ok(GraphError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "MisdirectedRequest",
                format!(
                    "this connection is for {}; the request names {named}",
                    self.host
                ),
            )
            .into_response(&ids));
        }
        Handler::handle(&self.proxy, req, conn).await
    }
}

/// Whether `req` names `host` (and no other): its `:authority` or absolute URI when it has
/// one, and its `Host` header(s), each `host` or `host:443`. The name it gives otherwise.
fn names_host<B>(req: &Request<B>, host: &str) -> Result<(), String> {
    let matches = |authority: &str| {
        let lower = authority.to_ascii_lowercase();
        let name = lower.strip_suffix(":443").unwrap_or(&lower);
        name.strip_suffix('.').unwrap_or(name) == host
    };
    let mut named = 0;
    if let Some(authority) = req.uri().authority() {
        if !matches(authority.as_str()) {
            return Err(authority.as_str().to_owned());
        }
        named += 1;
    }
    for value in req.headers().get_all(header::HOST) {
        let text = value
            .to_str()
            .map_err(|_| "a Host that is not text".to_owned())?;
        if !matches(text) {
            return Err(text.to_owned());
        }
        named += 1;
    }
    if named == 0 {
        return Err("no host".into());
    }
    Ok(())
}

/// Once the `200` is sent: read the ClientHello, check its name, present a minted leaf, then
/// serve the session.
async fn run(
    upgrade: OnUpgrade,
    expect: Expect,
    client: SocketAddr,
    user: Option<String>,
    hello_timeout: Duration,
) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let started = std::time::Instant::now();
    // Counted below TLS: the bytes the tunnel carried, handshake included.
    let counts = Arc::new(super::tunnel::Counts::new());
    let io = super::tunnel::Watched::new(TokioIo::new(upgraded), counts.clone());
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let expected = expect.describe().to_owned();
    let Some(start) = within(
        ("the ClientHello", &expected, client, hello_timeout),
        acceptor,
    )
    .await
    else {
        return;
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|name| name.trim_end_matches('.').to_ascii_lowercase());
    let Some((host, minter, sessions)) = expect.resolve(sni.as_deref()) else {
        info!(host = %expected, sni = sni.as_deref().unwrap_or(""), %client, "intercepted tunnel closed: the ClientHello names another host");
        return;
    };
    let step = |what| (what, host.as_str(), client, hello_timeout);
    let config = match minter.server_config(&host) {
        Ok(config) => config,
        Err(error) => {
            warn!(%host, %error, "intercepted tunnel closed: no certificate");
            return;
        }
    };
    let Some(tls) = within(step("the TLS handshake"), start.into_stream(config)).await else {
        return;
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    info!(%host, %client, user = user.as_deref(), "intercepted tunnel opened");
    // Shutdown and shedding cut the whole tunnel (`Handoff`); this token is never cancelled.
    sessions
        .serve(
            tls,
            alpn.as_deref(),
            client,
            user.clone(),
            &CancellationToken::new(),
        )
        .await;
    info!(
        %host,
        %client,
        user = user.as_deref(),
        bytes_up = counts.read(),
        bytes_down = counts.written(),
        duration_ms = started.elapsed().as_millis() as u64,
        "intercepted tunnel ended"
    );
}

/// The result of a step of the handshake, `None` (logged) when it failed or took longer than
/// its limit: `(what, host, client, limit)`.
async fn within<T>(
    (what, host, client, limit): (&str, &str, SocketAddr, Duration),
    step: impl Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(error)) => {
            info!(%host, %client, %error, "intercepted tunnel closed: {what} failed");
            None
        }
        Err(_) => {
            info!(%host, %client, "intercepted tunnel closed: {what} took too long");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_request_must_name_the_tunnels_host_everywhere_it_names_one() {
        let host = "graph.microsoft.com";
        assert!(names_host(&req("/v1.0/me", &["graph.microsoft.com"]), host).is_ok());
        assert!(names_host(&req("/v1.0/me", &["Graph.Microsoft.com:443"]), host).is_ok());
        assert!(names_host(&req("https://graph.microsoft.com/v1.0/me", &[]), host).is_ok());
        for (uri, hosts) in [
            ("/v1.0/me", &["graph.microsoft.us"][..]),
            ("/v1.0/me", &["graph.microsoft.com:8443"]),
            ("/v1.0/me", &["graph.microsoft.com", "graph.microsoft.us"]),
            ("/v1.0/me", &[]),
            (
                "https://graph.microsoft.us/v1.0/me",
                &["graph.microsoft.com"],
            ),
            ("https://graph.microsoft.com/v1.0/me", &["evil.example"]),
        ] {
            assert!(
                names_host(&req(uri, hosts), host).is_err(),
                "{uri} {hosts:?}"
            );
        }
    }
}
