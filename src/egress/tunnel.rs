//! A checked tunnel: the client's ClientHello must name the tunnel's host, then bytes go both
//! ways unchanged until either side closes or neither sends for the idle timeout.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::hello::{self, Hello};
use super::hosts::Target;

pub(super) struct Tunnel {
    pub(super) target: Target,
    pub(super) user: Option<String>,
    pub(super) client: SocketAddr,
    pub(super) hello_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Tunnel {
    /// Once the `200` is sent: check the ClientHello, then splice.
    pub(super) async fn run(self, upgrade: OnUpgrade, mut upstream: TcpStream) {
        let started = Instant::now();
        let mut client = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                debug!(%error, "tunnel: the client went away before its 200");
                return;
            }
        };
        let mut first = Vec::with_capacity(2048);
        let named =
            match tokio::time::timeout(self.hello_timeout, read_hello(&mut client, &mut first))
                .await
            {
                Ok(Hello::Named(name)) => name,
                Ok(Hello::Refused(why)) => return self.closed(why),
                Ok(Hello::Incomplete) => {
                    return self.closed("the client closed before its ClientHello");
                }
                Err(_) => return self.closed("no ClientHello within egress.hello_timeout"),
            };
        if named != self.target.host {
            info!(
                host = %self.target.host, sni = %named, client = %self.client, user = self.user.as_deref(),
                "tunnel closed: the ClientHello names another host than the CONNECT"
            );
            return;
        }
        if upstream.write_all(&first).await.is_err() {
            return self.closed("the host closed before the ClientHello reached it");
        }
        let counts = Arc::new(Counts::new());
        let mut client = Watched::new(client, counts.clone());
        let spliced = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(spliced);
        let idle = async {
            loop {
                let quiet = counts.quiet();
                if quiet >= self.idle_timeout {
                    return;
                }
                tokio::time::sleep(self.idle_timeout - quiet).await;
            }
        };
        let how = tokio::select! {
            done = &mut spliced => if done.is_ok() { "closed" } else { "broken" },
            () = idle => "idle",
        };
        let (up, down) = (counts.read() + first.len() as u64, counts.written());
        self.metrics.egress_tunnel_bytes(up, down);
        info!(
            host = %self.target.host,
            port = self.target.port,
            client = %self.client,
            user = self.user.as_deref(),
            bytes_up = up,
            bytes_down = down,
            duration_ms = started.elapsed().as_millis() as u64,
            end = how,
            "tunnel ended"
        );
    }

    fn closed(&self, why: &str) {
        info!(
            host = %self.target.host, client = %self.client, user = self.user.as_deref(),
            "tunnel closed before it carried anything: {why}"
        );
    }
}

/// Read until `bytes` holds a whole ClientHello, or something that is refused.
async fn read_hello<R: AsyncRead + Unpin>(reader: &mut R, bytes: &mut Vec<u8>) -> Hello {
    let mut chunk = [0u8; 4096];
    loop {
        match hello::parse(bytes) {
            Hello::Incomplete => {}
            settled => return settled,
        }
        if bytes.len() >= hello::MAX_READ {
            return Hello::Refused("the ClientHello did not end within its bound");
        }
        let room = chunk.len().min(hello::MAX_READ - bytes.len());
        match reader.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Hello::Incomplete,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What a [`Watched`] stream saw: bytes read from it and written to it, and when it last moved
/// either way.
pub(super) struct Counts {
    read: AtomicU64,
    written: AtomicU64,
    /// Milliseconds since `clock`.
    last_moved: AtomicU64,
    clock: Instant,
}

impl Counts {
    pub(super) fn new() -> Self {
        Counts {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_moved: AtomicU64::new(0),
            clock: Instant::now(),
        }
    }

    pub(super) fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// How long since a byte last moved either way.
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_moved.load(Ordering::Relaxed));
        self.clock.elapsed().saturating_sub(last)
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let now = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_moved.store(now, Ordering::Relaxed);
        }
    }
}

/// A client's stream, counted ([`Counts`]): for a tunnel, what it reads went up and what it
/// writes came down.
pub(super) struct Watched<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, counts: Arc<Counts>) -> Self {
        Watched { inner, counts }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.counts
            .moved(&self.counts.read, buf.filled().len() - before);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.moved(&self.counts.written, n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
