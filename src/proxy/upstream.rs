//! The pooled upstream client: rustls (webpki roots plus an optional extra CA), HTTP/2 when the
//! upstream offers it by ALPN, HTTP/1.1 otherwise, with connect and response-head timeouts.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::{Settings, UpstreamTarget};
use crate::metrics::{Metrics, UpstreamFailure};

/// Why the upstream gave no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection could be made (refused, DNS, TLS handshake, connect timeout): nothing was sent.
    #[error("cannot connect to the upstream")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The response head did not arrive in time; the request may have been processed.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed after the request was (partly) sent.
    #[error("the upstream connection failed")]
    Failed(#[source] hyper_util::client::legacy::Error),
}

type Pooled = Client<HttpsConnector<HttpConnector<Resolver>>, Body>;

/// Name resolution for upstream connections: the system's, except for the names
/// `egress.resolve` maps (tests reaching a local server under a Graph host's name).
#[derive(Clone)]
pub(crate) struct Resolver {
    fixed: Arc<BTreeMap<String, SocketAddr>>,
    system: GaiResolver,
}

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Resolving {
        if let Some(address) = self.fixed.get(&name.as_str().to_ascii_lowercase()) {
            let address = *address;
            return Box::pin(async move { Ok(vec![address].into_iter()) });
        }
        let looking_up = self.system.call(name);
        Box::pin(async move { Ok(looking_up.await?.collect::<Vec<_>>().into_iter()) })
    }
}

/// A pooled client for one upstream: one pool for the main runtime and one per proxy worker
/// ([`crate::server::workers`]), so a worker's requests go out on connections its own event loop
/// drives, and no pool lock or connection is shared between cores.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// `[0]` for the main runtime, `[1 + i]` for worker `i`.
    clients: Arc<[Pooled]>,
    target: UpstreamTarget,
    timeout: Duration,
    /// Where response times and failures are counted.
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub(crate) fn new(settings: &Settings) -> Self {
        let resolver = Resolver {
            fixed: Arc::new(
                settings
                    .egress
                    .as_ref()
                    .map(|e| e.resolve.clone())
                    .unwrap_or_default(),
            ),
            system: GaiResolver::new(),
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        // Lets the HTTPS connector hand `https://` URIs to this plain connector.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(settings.client_tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            // Without a pool timer idle connections are only reaped at checkout.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .timer(TokioTimer::new());
        let clients = (0..=settings.workers)
            .map(|_| builder.build(https.clone()))
            .collect();
        Self {
            clients,
            target: settings.upstream.clone(),
            timeout: settings.upstream_timeout,
            metrics: Arc::new(Metrics::new(None)),
        }
    }

    /// Count response times and failures into `metrics` (the running syncgate's).
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn target(&self) -> &UpstreamTarget {
        &self.target
    }

    /// The same clients (and pools) sending to `target` instead: egress mode's intercepted
    /// Graph hosts.
    pub(crate) fn with_target(&self, target: UpstreamTarget) -> Upstream {
        Upstream {
            target,
            ..self.clone()
        }
    }

    /// Send a request whose URI is already absolute (see [`super::forward::to_upstream`]).
    pub(crate) async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let started = Instant::now();
        let client = match crate::server::workers::current() {
            Some(worker) if worker + 1 < self.clients.len() => &self.clients[worker + 1],
            _ => &self.clients[0],
        };
        let sent = match tokio::time::timeout(self.timeout, client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(e)),
            Ok(Err(e)) => Err(UpstreamError::Failed(e)),
        };
        match &sent {
            Ok(_) => self.metrics.upstream_answered(started.elapsed()),
            Err(error) => self.metrics.upstream_failed(match error {
                UpstreamError::Connect(_) => UpstreamFailure::Connect,
                UpstreamError::Timeout(_) => UpstreamFailure::Timeout,
                UpstreamError::Failed(_) => UpstreamFailure::Failed,
            }),
        }
        sent
    }
}
