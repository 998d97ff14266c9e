//! The accept loop shared by the proxy, the admin listener and the emulator.
//!
//! A listener configured with workers (the proxy's, `proxy.workers`) hands each accepted
//! connection to one of its per-core workers ([`workers`]), which serves it for its whole life;
//! otherwise connections are served on the runtime that runs the accept loop.
//!
//! Each listener takes its `TcpListener` and a shutdown token as arguments (as in mini-redis), so a
//! test binds port 0 and stops it at will. Connections speak HTTP/1.1 or HTTP/2: over plain TCP
//! the protocol is detected from the first bytes (h2c prior knowledge), over TLS it is negotiated by
//! ALPN. The TLS handshake runs inside the connection's own task so a slow client never stalls the
//! accept loop. On shutdown the loop stops accepting, asks every connection to finish its in-flight
//! requests, and cuts whatever is still open when the grace period ends.
//!
//! Nothing a client does holds a connection open for free (issue 7): a socket that sends nothing is
//! closed after `first_byte_timeout`, a TLS handshake that does not finish after
//! `tls_handshake_timeout`, an HTTP/1.1 head after `header_read_timeout`, a connection with no
//! request in flight after `idle_timeout` (HTTP/2 peers are also pinged, and dropped when they stop
//! answering). The number of open connections is capped in total and per client address, below the
//! process's file limit, by [`tracker`]: at a cap the connection idle the longest is shed, so a flood
//! of idle sockets from one address cannot lock out another.

mod tracker;
pub(crate) mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::body::{Body, BoxError};
use tracker::{Admitted, Conn, InFlight, Tracker};

/// What a handler knows of the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address, for `X-Forwarded-For` and the audit record.
    pub(crate) remote: SocketAddr,
    /// Whether the client connected over TLS, for `X-Forwarded-Proto`.
    pub(crate) tls: bool,
    /// The client's end-entity certificate, when it presented one (mutual TLS). Always verified:
    /// rustls exposes a client chain only after the listener's verifier accepted it against the
    /// configured client CA (a certificate it rejects ends the handshake), so the admin API may
    /// take it as a credential.
    pub(crate) client_cert: Option<CertificateDer<'static>>,
    /// Work a request hands off to outlive its response on this connection (a `CONNECT`
    /// tunnel).
    pub(crate) handoff: Handoff,
    /// Inside an intercepted egress tunnel: the user proxy authentication let through.
    pub(crate) proxy_user: Option<String>,
}

/// Work that outlives its request on the same connection: a `CONNECT` tunnel, which carries
/// bytes after its `200` until either side closes.
///
/// The connection stays open and counted until the work ends (`serve_connection` waits for
/// it), and it counts as a request in flight meanwhile, so the cap never sheds it as idle: a
/// tunnel has its own idle timeout. Shedding the connection and shutdown end the work.
#[derive(Clone, Default)]
pub(crate) struct Handoff {
    /// `None` outside a listener (unit tests): the work is then simply spawned.
    conn: Option<Arc<Conn>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self
            .conn
            .as_ref()
            .and_then(|c| c.any_handed_off())
            .map_or(0, |t| t.len());
        f.debug_struct("Handoff")
            .field("running", &running)
            .finish_non_exhaustive()
    }
}

impl Handoff {
    fn new(conn: Arc<Conn>, shutdown: CancellationToken) -> Self {
        Handoff {
            conn: Some(conn),
            shutdown,
        }
    }

    /// Run `work` until it ends or the connection must close; false (and `work` is not run)
    /// when the connection is already being closed.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let Some(conn) = &self.conn else {
            tokio::spawn(work);
            return true;
        };
        let Some(in_flight) = conn.start_request() else {
            return false;
        };
        let tasks = conn.handed_off();
        if tasks.is_closed() || self.shutdown.is_cancelled() {
            return false;
        }
        let (shed, shutdown) = (conn.shed().clone(), self.shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = shed.cancelled() => debug!("handed-off work cut: the connection was shed"),
                _ = shutdown.cancelled() => debug!("handed-off work cut: shutting down"),
            }
            drop(in_flight);
        });
        true
    }

    /// After HTTP on the connection ended: wait for the work handed off, if any (shedding
    /// and shutdown end it).
    async fn finish(&self) {
        if let Some(tasks) = self.conn.as_ref().and_then(|c| c.any_handed_off()) {
            tasks.close();
            tasks.wait().await;
        }
    }
}

/// A handler's way to close the connection without answering (the emulator's dropped-connection
/// fault). hyper resets the stream (HTTP/2) or closes the socket (HTTP/1.1).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct DropConnection;

/// Answers requests for one listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: &Arc<Self>,
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
    /// How long a new connection may stay silent before its first byte.
    pub first_byte_timeout: Duration,
    /// How long a TLS handshake may take, counted from its first byte.
    pub tls_handshake_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How often HTTP/2 peers are pinged.
    pub h2_keep_alive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed; also how long a
    /// connection closed for idleness gets to finish its goodbye (GOAWAY) before it is cut.
    pub h2_keep_alive_timeout: Duration,
    /// Connections open at once; at the cap the connection idle the longest is shed.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// What the log calls this listener ("proxy", "admin", "emulator"), so shutdown messages say
    /// which one is draining and which has stopped.
    pub name: &'static str,
    /// Kept at the listener's open connection count (`/metrics`); `None`: not reported.
    pub open_connections: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Serve connections on this many per-core workers ([`workers`]), each a thread with its own
    /// current-thread runtime; 0 serves them on the caller's runtime.
    pub workers: usize,
}

impl Default for ServeOptions {
    /// Generous values for the emulator and tests; syncgate's own listeners are configured from
    /// `[limits]` (see [`crate::app`]).
    fn default() -> Self {
        Self {
            tls: None,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Duration::from_secs(30),
            h2_keep_alive_timeout: Duration::from_secs(20),
            max_connections: 1024,
            max_connections_per_client: 1024,
            name: "emulator",
            open_connections: None,
            workers: 0,
        }
    }
}

/// What every connection task of one listener shares.
struct Listener<H> {
    builders: Builders,
    acceptor: Option<TlsAcceptor>,
    handler: Arc<H>,
    options: ServeOptions,
}

/// HTTP on connections that do not come from a listener's accept loop: the TLS sessions egress
/// mode intercepts inside `CONNECT` tunnels ([`crate::egress`]).
///
/// They are served exactly as a listener's connections are: the same builders, header and idle
/// timeouts, and HTTP/2 keep-alive. Each is counted by a tracker of its own, for idleness
/// only. The caps count the tunnel's own connection, which a session lives inside.
pub(crate) struct Sessions<H> {
    shared: Arc<Listener<H>>,
    tracker: Arc<Tracker>,
}

impl<H: Handler> Sessions<H> {
    /// Serve sessions with `handler`, under the timeouts of `options` (the listener's).
    pub(crate) fn new(handler: Arc<H>, options: &ServeOptions) -> Self {
        let options = ServeOptions {
            tls: None,
            open_connections: None,
            workers: 0,
            ..options.clone()
        };
        Sessions {
            shared: Arc::new(Listener {
                builders: Builders::new(&options),
                acceptor: None,
                handler,
                options,
            }),
            tracker: Arc::new(Tracker::new(usize::MAX, usize::MAX)),
        }
    }

    /// Serve one session (TLS already terminated, `alpn` what it chose, `user` who proxy
    /// authentication let through) until it ends, stays idle for the idle timeout, or `stop` is
    /// cancelled (then drained gracefully).
    pub(crate) async fn serve<I>(
        &self,
        io: I,
        alpn: Option<&[u8]>,
        remote: SocketAddr,
        user: Option<String>,
        stop: &CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(admitted) = self.tracker.admit(remote.ip()) else {
            return;
        };
        let conn = admitted.conn().clone();
        let info = Arc::new(ConnInfo {
            remote,
            tls: true,
            client_cert: None,
            handoff: Handoff::default(),
            proxy_user: user,
        });
        let speaks = Speaks::from_alpn(alpn);
        drive(TokioIo::new(io), speaks, info, &self.shared, &conn, stop).await;
        drop(admitted);
    }
}

/// Answer to a connection refused at the caps, written without waiting (plain HTTP listeners only:
/// over TLS nothing readable can be sent before a handshake, so the socket is just closed).
/// The longest the accept loop waits for shed connections to close their sockets.
const SHED_CLOSE_WAIT: Duration = Duration::from_secs(1);

const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Length: 0\r\n\r\n";

/// Accept and serve connections until `shutdown` is cancelled, then drain them (see module docs).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let builders = Builders::new(&options);
    let mut tracker = Tracker::new(options.max_connections, options.max_connections_per_client);
    if let Some(gauge) = &options.open_connections {
        tracker = tracker.reporting_to(gauge.clone());
    }
    let tracker = Arc::new(tracker);
    let shared = Arc::new(Listener {
        builders,
        acceptor: options.tls.clone().map(TlsAcceptor::from),
        handler,
        options,
    });
    let workers = workers::Workers::start(&shared, &shutdown);
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);

    loop {
        // Shed connections hold their sockets until their tasks close them; accepting more before
        // they do could spend descriptors beyond the budget (see `tracker`).
        if tracker.closing() > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tracker.settle(SHED_CLOSE_WAIT) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    backoff = Duration::from_millis(10);
                    let admitted = match tracker.admit(remote.ip()) {
                        Ok(admitted) => admitted,
                        Err(cap) => {
                            debug!(%remote, ?cap, open = tracker.open(), "connection refused at the cap");
                            if shared.acceptor.is_none() {
                                let _ = stream.try_write(BUSY_RESPONSE);
                            }
                            continue;
                        }
                    };
                    let (stream, admitted) = match workers.dispatch(stream, remote, admitted) {
                        Ok(()) => continue,
                        // No worker (none configured, or their threads are gone): served here.
                        Err(back) => back,
                    };
                    let task = serve_connection(stream, remote, shared.clone(), admitted, shutdown.clone());
                    connections.spawn(task.instrument(tracing::debug_span!("conn", %remote)));
                }
                // Running out of file descriptors or similar: wait and try again rather than end
                // the server; the condition is usually transient (and rare below the caps).
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
    let (name, grace) = (shared.options.name, shared.options.shutdown_grace);
    // Logged once per listener, however many workers drain it (several listeners share one
    // shutdown, so each line names its listener).
    info!(
        listener = name,
        open = tracker.open(),
        workers = workers.len(),
        grace_ms = grace.as_millis() as u64,
        "stopped accepting; draining connections"
    );
    let (here, on_workers) = tokio::join!(drain_quietly(connections, grace), workers.stop());
    let cut = here + on_workers;
    if cut > 0 {
        warn!(
            listener = name,
            cut, "shutdown grace period over; the remaining connections were closed"
        );
    }
    info!(listener = name, cut, "listener stopped");
}

/// Let the connections of a listener that stopped accepting finish their in-flight requests for at
/// most `grace`, then cut the rest; returns how many were cut.
async fn drain_quietly(mut connections: JoinSet<()>, grace: Duration) -> usize {
    // Every connection task watches `shutdown` too: it is finishing its in-flight requests.
    let drained = async { while connections.join_next().await.is_some() {} };
    let cut = match tokio::time::timeout(grace, drained).await {
        Err(_) => connections.len(),
        Ok(()) => 0,
    };
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    cut
}

/// One connection, from accept to close: the first byte, the TLS handshake, then HTTP. Before HTTP
/// starts there is nothing to drain, so shedding and shutdown simply close the socket.
async fn serve_connection<H: Handler>(
    stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Listener<H>>,
    admitted: Admitted,
    shutdown: CancellationToken,
) {
    let conn = admitted.conn().clone();
    let handoff = Handoff::new(conn.clone(), shutdown.clone());
    let opening = async {
        let _ = stream.set_nodelay(true);
        // Peeked, not read: hyper (or rustls) reads the bytes again. As many as the HTTP/2
        // preface, so a plain connection's protocol is known without reading (see `Speaks`).
        let mut probe = [0u8; PREFACE.len()];
        let first = before_http(
            stream.peek(&mut probe),
            shared.options.first_byte_timeout,
            &shutdown,
        );
        let peeked = match first.await {
            Some(Ok(n)) if n > 0 => n,
            _ => {
                debug!("closed: no first byte");
                return;
            }
        };
        match &shared.acceptor {
            None => {
                let info = Arc::new(ConnInfo {
                    remote,
                    tls: false,
                    client_cert: None,
                    handoff: handoff.clone(),
                    proxy_user: None,
                });
                let speaks = Speaks::from_first_bytes(&probe[..peeked]);
                let io = TokioIo::new(stream);
                drive(io, speaks, info, &shared, &conn, &shutdown).await;
            }
            // Boxed: the TLS state (rustls's connection, the handshake) would otherwise make every
            // connection's task as large as a TLS one, plain ones included.
            Some(acceptor) => {
                Box::pin(async {
                    let handshake = before_http(
                        acceptor.accept(stream),
                        shared.options.tls_handshake_timeout,
                        &shutdown,
                    );
                    let tls_stream = match handshake.await {
                        Some(Ok(s)) => s,
                        Some(Err(error)) => {
                            debug!(%error, "TLS handshake failed");
                            return;
                        }
                        None => {
                            debug!("closed: TLS handshake timed out or shutdown began");
                            return;
                        }
                    };
                    let session = tls_stream.get_ref().1;
                    let speaks = Speaks::from_alpn(session.alpn_protocol());
                    let client_cert = session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| c.clone().into_owned());
                    let info = Arc::new(ConnInfo {
                        remote,
                        tls: true,
                        client_cert,
                        handoff: handoff.clone(),
                        proxy_user: None,
                    });
                    let io = TokioIo::new(tls_stream);
                    drive(io, speaks, info, &shared, &conn, &shutdown).await;
                })
                .await
            }
        }
    };
    tokio::select! {
        _ = opening => {}
        _ = conn.shed().cancelled() => debug!("closed: shed at the connection cap"),
    }
    // A tunnel the connection handed off holds it open until it ends (shedding and shutdown
    // end it too).
    handoff.finish().await;
    // Uncounted only now, when the socket is closed (unless it was shed, which uncounts at once).
    drop(admitted);
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), which a client speaking HTTP/2 without TLS
/// ("prior knowledge") sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP a connection speaks, as far as it is known before hyper reads from it.
///
/// When it is known, hyper serves that protocol directly. Only when it is not does hyper-util's
/// auto builder read the first bytes to tell (its `ReadVersion`). That reading costs memory on
/// every HTTP/1.1 connection for as long as the connection lives: it hands hyper the first 24
/// bytes alone, hyper's 8 KiB read buffer then cannot fit a full read after them and doubles to
/// 16 KiB, and the buffer stays that size while the connection idles (measured with heaptrack:
/// 16.4 KiB per idle connection, half the connection's heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
    /// Not yet known: let the auto builder read the first bytes.
    Unknown,
}

impl Speaks {
    /// From the first bytes a plain connection sent (peeked, at least one): the full preface is
    /// HTTP/2; bytes that cannot begin it are HTTP/1.1; a part of it (the rest not yet arrived)
    /// is left to the auto builder, which waits for the rest.
    fn from_first_bytes(peeked: &[u8]) -> Self {
        if peeked.starts_with(PREFACE) {
            Speaks::Http2
        } else if PREFACE.starts_with(peeked) {
            Speaks::Unknown
        } else {
            Speaks::Http1
        }
    }

    /// From the protocol a TLS client chose by ALPN: a client that chose one must speak it
    /// (RFC 7301); one that chose none may send either, so the auto builder tells.
    fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Speaks::Http2,
            Some(b"http/1.1") => Speaks::Http1,
            _ => Speaks::Unknown,
        }
    }
}

/// One builder per [`Speaks`], all with the listener's settings.
///
/// HTTP/1.1 is served by hyper's own builder, not hyper-util's: hyper-util's way to serve
/// upgrades (which `CONNECT` needs, [`Handoff`]) always reads the first bytes to tell the
/// protocol, even when it is told HTTP/1.1 only, and that read is what doubled hyper's buffer
/// (see [`Speaks`]).
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: auto::Builder<TokioExecutor>,
    either: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(options: &ServeOptions) -> Self {
        let configured = || {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(options.h2_keep_alive_interval)
                .keep_alive_timeout(options.h2_keep_alive_timeout);
            builder
        };
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout);
        Self {
            http1,
            http2: configured().http2_only(),
            either: configured(),
        }
    }
}

/// A connection hyper serves, as [`serve_until_done`] drives it: to its end, or asked to close
/// gracefully.
trait Serving: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S> Serving for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Error = hyper::Error;
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// [`Serving`] for hyper-util's two auto connections, which differ only in upgrades (and so in
/// needing a `Send` connection).
macro_rules! serving_auto {
    ($($connection:ident),*) => {$(
        impl<I, S, B> Serving for auto::$connection<'_, I, S, TokioExecutor>
        where
            S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
            S::Future: Send + 'static,
            S::Error: Into<BoxError>,
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
            I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        {
            type Error = BoxError;
            fn close_gracefully(self: Pin<&mut Self>) {
                self.graceful_shutdown();
            }
        }
    )*};
}
serving_auto!(Connection, UpgradeableConnection);

/// One step before HTTP starts (the first byte, the TLS handshake): `None` when it takes longer
/// than `limit` or shutdown begins, since there is no request to let finish yet.
async fn before_http<T>(
    step: impl Future<Output = T>,
    limit: Duration,
    shutdown: &CancellationToken,
) -> Option<T> {
    tokio::select! {
        done = tokio::time::timeout(limit, step) => done.ok(),
        _ = shutdown.cancelled() => None,
    }
}

/// Serve HTTP on an established connection until it ends, is drained at shutdown, or stays idle
/// for `idle_timeout`.
async fn drive<I, H>(
    io: TokioIo<I>,
    speaks: Speaks,
    info: Arc<ConnInfo>,
    shared: &Listener<H>,
    conn: &Arc<Conn>,
    shutdown: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let handler = shared.handler.clone();
    let tracked = conn.clone();
    let service = service_fn(move |req| {
        let handler = handler.clone();
        let info = info.clone();
        let tracked = tracked.clone();
        async move {
            // A shed connection is being closed; the request goes with it, as on any connection
            // closed by the server between requests.
            let in_flight = tracked.start_request().ok_or(DropConnection)?;
            let response = handler.handle(req, info).await?;
            Ok::<_, DropConnection>(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let options = &shared.options;
    let builders = &shared.builders;
    // With upgrades where HTTP/1.1 may be spoken: a `CONNECT` answered 200 hands the connection
    // to its tunnel (`Handoff`), and hyper gives the socket up for that rather than reading on.
    match speaks {
        Speaks::Http1 => {
            let connection = builders.http1.serve_connection(io, service).with_upgrades();
            serve_until_done(connection, conn, options, shutdown).await;
        }
        Speaks::Http2 => {
            let connection = builders.http2.serve_connection(io, service);
            Box::pin(serve_until_done(connection, conn, options, shutdown)).await;
        }
        Speaks::Unknown => {
            let connection = builders.either.serve_connection_with_upgrades(io, service);
            Box::pin(serve_until_done(connection, conn, options, shutdown)).await;
        }
    }
}

/// Drive `connection` until it ends, is drained at shutdown, or stays idle for
/// `idle_timeout`.
async fn serve_until_done(
    connection: impl Serving,
    conn: &Arc<Conn>,
    options: &ServeOptions,
    shutdown: &CancellationToken,
) {
    tokio::pin!(connection);
    let idle_check = tokio::time::sleep(options.idle_timeout);
    tokio::pin!(idle_check);
    let mut draining = false;
    // Armed once the connection was asked to close for idleness: the deadline for its goodbye.
    let closing = tokio::time::sleep(options.h2_keep_alive_timeout);
    tokio::pin!(closing);
    let mut closing_armed = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().close_gracefully();
            }
            _ = idle_check.as_mut(), if !closing_armed => match conn.idle_for() {
                Some(idle) if idle >= options.idle_timeout => {
                    debug!(idle_ms = idle.as_millis() as u64, "closing an idle connection");
                    connection.as_mut().close_gracefully();
                    closing_armed = true;
                    closing
                        .as_mut()
                        .reset(tokio::time::Instant::now() + options.h2_keep_alive_timeout);
                }
                idle => {
                    let wait = options.idle_timeout - idle.unwrap_or_default();
                    idle_check.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            },
            _ = closing.as_mut(), if closing_armed => {
                debug!("idle connection did not close in time; cut");
                return;
            }
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent (or dropped), so
/// a long download is never taken for an idle connection.
struct Tracked {
    body: Body,
    /// Held for its `Drop`: the request stops counting when the body is done.
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_http2_only_by_the_whole_preface() {
        assert_eq!(Speaks::from_first_bytes(PREFACE), Speaks::Http2);
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x12\x04");
        assert_eq!(Speaks::from_first_bytes(&more), Speaks::Http2);
        // A part of the preface: the rest may still come, so it is not decided here.
        for end in 1..PREFACE.len() {
            assert_eq!(Speaks::from_first_bytes(&PREFACE[..end]), Speaks::Unknown);
        }
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"G",
            b"PRI * HTTP/1.1\r\n",
            b"P\n",
            b"\r\n",
        ] {
            assert_eq!(Speaks::from_first_bytes(first), Speaks::Http1, "{first:?}");
        }
    }

    #[test]
    fn alpn_decides_only_when_a_protocol_was_chosen() {
        assert_eq!(Speaks::from_alpn(Some(b"h2")), Speaks::Http2);
        assert_eq!(Speaks::from_alpn(Some(b"http/1.1")), Speaks::Http1);
        assert_eq!(Speaks::from_alpn(None), Speaks::Unknown);
        assert_eq!(Speaks::from_alpn(Some(b"h3")), Speaks::Unknown);
    }
}
