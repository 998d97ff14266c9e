//! Per-core workers: each one a thread running its own current-thread Tokio runtime, serving the
//! connections the accept loop hands it (issue 13).
//!
//! Why: on tokio's work-stealing runtime a proxied request wakes tasks across threads several
//! times (the client connection's task, the upstream connection's task, the pool), and each
//! cross-thread wake-up is a futex and a context switch on the hot path. A connection that lives
//! on one worker for its whole life, with that worker's own upstream pool
//! ([`crate::proxy::upstream`]), is woken only by its own thread's event loop — nginx's worker
//! model. The accept loop stays on the main runtime (one place for the connection caps and
//! shedding, [`super::tracker`]) and gives each new connection to the worker with the fewest
//! connections, so a few long keep-alive connections cannot all land on one core (as they can
//! with `SO_REUSEPORT`'s hash).
//!
//! A handler that needs the main runtime (the audit log's connections live there) hops to it for
//! that request; see [`crate::proxy`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::tracker::Admitted;
use super::{Handler, Listener, serve_connection};

thread_local! {
    /// Which worker this thread is, on a worker's thread.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker whose thread this is (`0..workers`), or `None` off the workers (the
/// main runtime, tests, the admin listener). Per-worker state (the upstream pools) is picked by it.
pub(crate) fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// A connection for a worker to serve; the socket crosses threads as a std socket and is
/// registered with the worker's own event loop there.
struct Job {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    admitted: Admitted,
}

struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections this worker is serving.
    load: Arc<AtomicUsize>,
    /// Connections cut at the end of the grace period, sent when the worker has stopped.
    stopped: oneshot::Receiver<usize>,
}

/// The workers of one listener.
pub(super) struct Workers {
    workers: Vec<Worker>,
    /// Where the next tie-break starts, so equal loads take turns.
    next: AtomicUsize,
}

impl Workers {
    /// Start the listener's `options.workers` workers, named after it, each serving its
    /// connections with `shared` until `shutdown`, then draining them for `options.shutdown_grace`.
    /// A thread that cannot be started is logged and left out.
    pub(super) fn start<H: Handler>(
        shared: &Arc<Listener<H>>,
        shutdown: &CancellationToken,
    ) -> Self {
        let options = &shared.options;
        let mut workers = Vec::with_capacity(options.workers);
        for index in 0..options.workers {
            let (jobs, queue) = mpsc::unbounded_channel();
            let (done, stopped) = oneshot::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let thread_load = load.clone();
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            let started = std::thread::Builder::new()
                .name(format!("{}-{index}", options.name))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            warn!(%error, worker = index, "cannot start a worker's runtime");
                            return;
                        }
                    };
                    let cut = runtime.block_on(run(queue, thread_load, shared, shutdown));
                    let _ = done.send(cut);
                });
            match started {
                Ok(_) => workers.push(Worker {
                    jobs,
                    load,
                    stopped,
                }),
                Err(error) => warn!(%error, worker = index, "cannot start a worker thread"),
            }
        }
        Self {
            workers,
            next: AtomicUsize::new(0),
        }
    }

    /// How many workers are running.
    pub(super) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Hand a new connection to the least loaded worker. `Err` gives the connection back when no
    /// worker can take it (its thread ended), for the caller to serve itself.
    pub(super) fn dispatch(
        &self,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        admitted: Admitted,
    ) -> Result<(), (tokio::net::TcpStream, Admitted)> {
        let count = self.workers.len();
        if count == 0 {
            return Err((stream, admitted));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let worker = (0..count)
            .map(|i| &self.workers[(start + i) % count])
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        // Leaves the socket in non-blocking mode, as the worker's runtime needs it.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            // The socket could not be taken off this runtime's event loop: it is unusable.
            Err(error) => {
                tracing::debug!(%error, "connection lost while handing it to a worker");
                return Ok(());
            }
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            stream,
            remote,
            admitted,
        };
        match worker.jobs.send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(job)) => {
                worker.load.fetch_sub(1, Ordering::Relaxed);
                match tokio::net::TcpStream::from_std(job.stream) {
                    Ok(stream) => Err((stream, job.admitted)),
                    Err(_) => Ok(()),
                }
            }
        }
    }

    /// Stop handing out connections and wait until every worker has drained its own (each cuts
    /// what is still open when its grace period ends). Returns how many were cut.
    pub(super) async fn stop(self) -> usize {
        // Every worker is told first, so they drain side by side, each within one grace period.
        let stopped: Vec<_> = self
            .workers
            .into_iter()
            .map(|worker| {
                drop(worker.jobs);
                worker.stopped
            })
            .collect();
        let mut cut = 0;
        for worker in stopped {
            cut += worker.await.unwrap_or(0);
        }
        cut
    }
}

/// A worker's event loop: serve each connection handed over until the accept loop stops, then
/// drain. Returns how many connections were cut at the end of the grace period.
async fn run<H: Handler>(
    mut queue: mpsc::UnboundedReceiver<Job>,
    load: Arc<AtomicUsize>,
    shared: Arc<Listener<H>>,
    shutdown: CancellationToken,
) -> usize {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            job = queue.recv() => match job {
                Some(job) => {
                    let (load, shared, shutdown) = (load.clone(), shared.clone(), shutdown.clone());
                    let span = tracing::debug_span!("conn", remote = %job.remote);
                    connections.spawn(
                        async move {
                            if let Ok(stream) = tokio::net::TcpStream::from_std(job.stream) {
                                serve_connection(stream, job.remote, shared, job.admitted, shutdown)
                                    .await;
                            }
                            load.fetch_sub(1, Ordering::Relaxed);
                        }
                        .instrument(span),
                    );
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    super::drain_quietly(connections, shared.options.shutdown_grace).await
}
