//! The accept loop shared by the proxy, the admin listener and the emulator.
//!
//! Each listener takes its `TcpListener` and a shutdown token as arguments (as in mini-redis), so a
//! test binds port 0 and stops it at will. Connections speak HTTP/1.1 or HTTP/2: over plain TCP
//! the protocol is detected from the first bytes (h2c prior knowledge), over TLS it is negotiated by
//! ALPN. The TLS handshake runs inside the connection's own task so a slow client never stalls the
//! accept loop. On shutdown the loop stops accepting, asks every connection to finish its in-flight
//! requests, and cuts whatever is still open when the grace period ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::body::Body;

/// What a handler knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address, for `X-Forwarded-For` and the audit record.
    pub remote: SocketAddr,
    /// Whether the client connected over TLS, for `X-Forwarded-Proto`.
    pub tls: bool,
    /// The client's end-entity certificate, when it presented one (mutual TLS).
    pub client_cert: Option<CertificateDer<'static>>,
}

/// A handler's way to close the connection without answering (the emulator's dropped-connection
/// fault). hyper resets the stream (HTTP/2) or closes the socket (HTTP/1.1).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct DropConnection;

/// Answers requests for one listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Result<Response<Body>, DropConnection>> + Send;
}

/// How a listener serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (ALPN set by [`crate::tls`]); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long an HTTP/1.1 client may take to send its request head.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Accept and serve connections until `shutdown` is cancelled, then drain them (see module docs).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    backoff = Duration::from_millis(10);
                    let task = serve_connection(
                        stream,
                        remote,
                        acceptor.clone(),
                        builder.clone(),
                        handler.clone(),
                        graceful.watcher(),
                    );
                    connections.spawn(task.instrument(tracing::debug_span!("conn", %remote)));
                }
                // Running out of file descriptors or similar: wait and try again rather than end
                // the server; the condition is usually transient.
                Err(error) => {
                    warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        info!(
            open,
            grace_ms = options.shutdown_grace.as_millis() as u64,
            "draining connections"
        );
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(options.shutdown_grace) => {
            warn!("shutdown grace period over; closing the remaining connections");
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<H: Handler>(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => {
            let conn = Arc::new(ConnInfo {
                remote,
                tls: false,
                client_cert: None,
            });
            drive(TokioIo::new(stream), conn, &builder, handler, watcher).await;
        }
        Some(acceptor) => {
            let tls_stream = match acceptor.accept(stream).await {
                Ok(s) => s,
                Err(error) => {
                    debug!(%error, "TLS handshake failed");
                    return;
                }
            };
            let client_cert = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.clone().into_owned());
            let conn = Arc::new(ConnInfo {
                remote,
                tls: true,
                client_cert,
            });
            drive(TokioIo::new(tls_stream), conn, &builder, handler, watcher).await;
        }
    }
}

async fn drive<I, H>(
    io: TokioIo<I>,
    conn: Arc<ConnInfo>,
    builder: &auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let service = service_fn(move |req| {
        let handler = handler.clone();
        let conn = conn.clone();
        async move { handler.handle(req, conn).await }
    });
    if let Err(error) = watcher.watch(builder.serve_connection(io, service)).await {
        debug!(%error, "connection ended with an error");
    }
}
