//! Start-up: bind the proxy and admin listeners from validated [`Settings`] and run them until a
//! shutdown token is cancelled. The CLI, the demo and the tests all start syncgate through here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::Settings;
use crate::metrics::{ListenerLabel, Metrics};
use crate::proxy::upstream::Upstream;
use crate::proxy::{Governor, Proxy, RulesHandle};
use crate::server::{self, ServeOptions};
use crate::store::{Store, StoreError};

/// Connections the admin listener keeps open at once. Health probes and metrics scrapes need a
/// handful; the cap is not per client because probes usually come from one address, and idle ones
/// are shed first anyway. Counted in [`crate::config::FD_RESERVE`].
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 16;

/// Why syncgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the audit log's folder {path}")]
    StoreFolder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the audit log {location}")]
    Store {
        location: crate::store::StoreLocation,
        source: StoreError,
    },
    #[error("cannot open the access log {}", path.display())]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A started proxy: its bound addresses and the task serving it.
pub struct RunningProxy {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Egress mode's own listener (`egress.listen`), when it has one.
    pub egress_addr: Option<SocketAddr>,
    /// Whether clients reach the proxy over TLS.
    pub tls: bool,
    /// Whether the admin listener serves TLS (`[admin.tls]`).
    pub admin_tls: bool,
    /// The local rules in force; `replace` puts a reloaded set in force.
    pub(crate) rules: RulesHandle,
    /// The approval policies in force (fixed at start; reloaded rules must name them).
    pub(crate) approvals: Arc<crate::approvals::ApprovalSettings>,
    task: JoinHandle<()>,
}

impl RunningProxy {
    /// The base URL Graph clients use instead of `https://graph.microsoft.com`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.proxy_addr)
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        let scheme = if self.admin_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.admin_addr)
    }

    /// Wait until the proxy has drained and stopped (after its shutdown token is cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Open the audit log, bind both listeners and start serving; changes a crash interrupted get their
/// `recovered` events in the background. Returns once the ports are bound, so callers can print or use the addresses
/// (port 0 picks free ones).
pub async fn start(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<RunningProxy, StartError> {
    let store = open_audit_log(&settings).await?;
    // This syncgate's own registry: never shared with another instance in the process.
    let metrics = Arc::new(Metrics::new(Some(&store)));
    let upstream = Upstream::new(&settings).with_metrics(metrics.clone());
    let listeners = Listeners::bind(&settings).await?;
    let tls = settings.tls.is_some();
    let admin_tls = settings.admin_tls.is_some();
    let rules = RulesHandle::new(settings.rules.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let settings_approvals = settings.approvals.clone();
    let governor = governor(&settings, store.clone(), rules.clone())
        .with_metrics(metrics.clone())
        .with_approvals(settings.approvals.clone(), wake.clone());
    let mut proxy = Proxy::new(upstream.clone(), governor);
    if let Some(destination) = &settings.access_log {
        let log = AccessLog::start(destination, metrics.access_log_dropped.clone()).map_err(
            |source| StartError::AccessLog {
                path: match destination {
                    crate::access_log::Destination::File(path) => path.clone(),
                    crate::access_log::Destination::Stdout => "-".into(),
                },
                source,
            },
        )?;
        proxy = proxy.with_access_log(log);
    }
    let (mut proxy_options, admin_options) = serve_options(&settings, &metrics);
    if settings.egress.as_ref().is_some_and(|e| e.listen.is_some()) {
        // Two listeners share the descriptors `limits.max_connections` was sized for (one per
        // client connection and one for its upstream): each gets half.
        let half = (proxy_options.max_connections / 2).max(1);
        proxy_options.max_connections = half;
        proxy_options.max_connections_per_client =
            proxy_options.max_connections_per_client.min(half);
    }
    // Egress mode on the proxy listener, or on a listener of its own serving a proxy that shares
    // this one's governor (the proxy listener then answers reverse-proxy requests only).
    let mut egress_proxy = None;
    if let Some(egress) = &settings.egress {
        let intercept = interception(&proxy, &upstream, egress, &proxy_options);
        let forward =
            crate::egress::Egress::new(egress.clone(), intercept).with_metrics(metrics.clone());
        if egress.listen.is_some() {
            egress_proxy = Some(Arc::new(
                proxy.for_upstream(upstream.clone()).with_egress(forward),
            ));
        } else {
            proxy = proxy.with_egress(forward);
        }
    }
    let proxy = Arc::new(proxy);
    let approvals = ApprovalTasks::spawn(&settings, &store, &metrics, wake);
    let summaries = Summaries::spawn(&proxy);
    spawn_recovery(&proxy, &settings, &store, shutdown.clone());
    let (proxy_addr, admin_addr) = (listeners.proxy_addr, listeners.admin_addr);
    let egress_addr = listeners.egress.as_ref().map(|(_, addr)| *addr);
    let serving = Serving {
        listeners,
        proxy,
        egress_proxy,
        admin: Arc::new(
            Admin::new(
                shutdown.clone(),
                store.clone(),
                settings.admin_principals.clone(),
            )
            .with_metrics(metrics, settings.admin_metrics_public)
            .with_approvals(settings.approvals.clone(), approvals.wake.clone()),
        ),
        proxy_options,
        admin_options,
        summaries,
        approvals,
        store,
    };
    let task = tokio::spawn(serving.run(shutdown));
    Ok(RunningProxy {
        proxy_addr,
        admin_addr,
        egress_addr,
        tls,
        admin_tls,
        rules,
        approvals: settings_approvals,
        task,
    })
}

/// Create the audit log's folder if the settings ask for it, and open the log.
async fn open_audit_log(settings: &Settings) -> Result<Store, StartError> {
    settings
        .create_store_folder()
        .map_err(|source| StartError::StoreFolder {
            path: settings.store_folder_to_create.clone().unwrap_or_default(),
            source,
        })?;
    Store::connect(&settings.store, settings.store_options.clone())
        .await
        .map_err(|source| StartError::Store {
            location: settings.store.clone(),
            source,
        })
}

/// The proxy and admin listeners (and egress mode's own, when configured), bound, with the
/// addresses they got (port 0 picks a free one).
struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
    egress: Option<(TcpListener, SocketAddr)>,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Listeners {
    async fn bind(settings: &Settings) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy = bind(settings.listen).await?;
        let admin = bind(settings.admin_listen).await?;
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy_addr = local(&proxy, settings.listen)?;
        let admin_addr = local(&admin, settings.admin_listen)?;
        let egress = match settings.egress.as_ref().and_then(|e| e.listen) {
            Some(addr) => {
                let listener = bind(addr).await?;
                let bound = local(&listener, addr)?;
                Some((listener, bound))
            }
            None => None,
        };
        Ok(Self {
            proxy,
            admin,
            egress,
            proxy_addr,
            admin_addr,
        })
    }
}

/// The governed pipeline's settings: audit log, rules, body and refusal limits (logged once).
fn governor(settings: &Settings, store: Store, rules: RulesHandle) -> Governor {
    let limits = &settings.limits;
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_client = limits.max_connections_per_client,
        open_file_limit = limits.open_file_limit,
        body_memory = limits.body_memory,
        "client limits"
    );
    let mut governor = Governor::new(store, rules, settings.record_reads, settings.max_body)
        .with_body_limits(
            limits.body_memory,
            limits.body_memory_wait,
            limits.body_stall_timeout,
        )
        .with_refusal_limits(settings.refusal_limits);
    governor.max_batch_body = settings.max_batch_body;
    governor
}

/// The task that records refusal summaries as their windows close; stopped (and drained) after
/// the proxy's drain.
struct Summaries {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Summaries {
    fn spawn(proxy: &Arc<Proxy>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.summarise_refusals(stop).await }
        });
        Self { stop, task }
    }
}

/// The approval gate's background work: the sweeper that expires overdue requests and the
/// webhooks' delivery from the outbox; stopped before the log closes.
struct ApprovalTasks {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// Wakes the delivery when notices were written.
    wake: Arc<tokio::sync::Notify>,
}

impl ApprovalTasks {
    fn spawn(
        settings: &Settings,
        store: &Store,
        metrics: &Metrics,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let stop = CancellationToken::new();
        let tasks = vec![
            crate::approvals::sweeper::spawn(
                store.clone(),
                settings.approvals.clone(),
                wake.clone(),
                stop.clone(),
            ),
            crate::approvals::notify::spawn(
                store.clone(),
                settings.approvals.webhooks.clone(),
                wake.clone(),
                metrics.approvals.clone(),
                stop.clone(),
            ),
        ];
        Self { stop, tasks, wake }
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Shortest time between two recovery passes, however short the grace.
const MIN_RECOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Record `recovered` events for the changes a crash interrupted, in the background: at start,
/// then every half grace (so a replica that died and never comes back is recovered by another),
/// until `shutdown`.
///
/// A log this process owns alone (SQLite) has no other replica mid-change, so the first pass
/// takes every unfinished change at once; a shared one waits for the grace.
fn spawn_recovery(
    proxy: &Arc<Proxy>,
    settings: &Settings,
    store: &Store,
    shutdown: CancellationToken,
) {
    let grace = settings.recovery_grace;
    let first_grace = match store.advisory_locks() {
        Some(_) => grace,
        None => Duration::ZERO,
    };
    tokio::spawn(recover_periodically(
        proxy.clone(),
        settings.recovery_token_file.clone(),
        [first_grace, grace],
        (grace / 2).max(MIN_RECOVERY_INTERVAL),
        shutdown,
    ));
}

/// Recovery passes, the first with `first_grace` and the others with `grace`, `every` apart,
/// until `shutdown` (which also abandons a pass under way: what it recorded stays recorded, the
/// rest is left to the next start or another replica).
async fn recover_periodically(
    proxy: Arc<Proxy>,
    token_file: Option<std::path::PathBuf>,
    [first_grace, grace]: [Duration; 2],
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut pass_grace = first_grace;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            done = proxy.recover(token_file.as_deref(), pass_grace) => {
                if let Err(error) = done {
                    tracing::error!(%error, "could not record recovered events; the next pass retries");
                }
            }
        }
        pass_grace = grace;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How the proxy and the admin listener serve connections: the admin listener shares the
/// proxy's timeouts and accept path but has its own TLS (`[admin.tls]`) and small connection cap.
/// Each reports its open connections to `metrics`.
/// How egress mode serves Graph hosts: for each, this proxy in front of that host, serving its
/// absolute-form requests and (with a CA) the sessions of the tunnels to it under the proxy
/// listener's timeouts.
fn interception(
    proxy: &Proxy,
    upstream: &Upstream,
    egress: &crate::config::egress::EgressSettings,
    options: &ServeOptions,
) -> crate::egress::intercept::Intercept {
    use crate::egress::intercept::{Host, Intercept, Intercepted, InterceptedHost};
    let hosts = egress
        .graph_upstreams
        .iter()
        .map(|(host, target)| {
            let proxy = Arc::new(proxy.for_upstream(upstream.with_target(target.clone())));
            let handler = Arc::new(Intercepted::new(host.clone(), proxy));
            let served: Arc<dyn Host> = Arc::new(InterceptedHost::new(
                host.clone(),
                egress.minter.clone(),
                handler,
                options,
            ));
            (host.clone(), served)
        })
        .collect::<std::collections::HashMap<_, _>>();
    Intercept {
        hosts: Arc::new(hosts),
    }
}

fn serve_options(settings: &Settings, metrics: &Metrics) -> (ServeOptions, ServeOptions) {
    let limits = &settings.limits;
    let proxy_options = ServeOptions {
        tls: settings.tls.clone(),
        shutdown_grace: settings.shutdown_grace,
        header_read_timeout: settings.header_read_timeout,
        first_byte_timeout: limits.first_byte_timeout,
        tls_handshake_timeout: limits.tls_handshake_timeout,
        idle_timeout: limits.idle_timeout,
        h2_keep_alive_interval: limits.h2_keepalive_interval,
        h2_keep_alive_timeout: limits.h2_keepalive_timeout,
        max_connections: limits.max_connections,
        max_connections_per_client: limits.max_connections_per_client,
        name: "proxy",
        open_connections: Some(metrics.open_connections(ListenerLabel::Proxy)),
        workers: settings.workers,
    };
    let admin_options = ServeOptions {
        tls: settings.admin_tls.clone(),
        max_connections: ADMIN_MAX_CONNECTIONS,
        max_connections_per_client: ADMIN_MAX_CONNECTIONS,
        name: "admin",
        open_connections: Some(metrics.open_connections(ListenerLabel::Admin)),
        // Rare requests, on the main runtime beside the audit log they read.
        workers: 0,
        ..proxy_options.clone()
    };
    (proxy_options, admin_options)
}

/// Everything the serving task owns, from start-up until syncgate has stopped.
struct Serving {
    listeners: Listeners,
    proxy: Arc<Proxy>,
    /// The proxy egress mode's own listener serves (`egress.listen`).
    egress_proxy: Option<Arc<Proxy>>,
    admin: Arc<Admin>,
    proxy_options: ServeOptions,
    admin_options: ServeOptions,
    summaries: Summaries,
    approvals: ApprovalTasks,
    store: Store,
}

impl Serving {
    /// Serve until `shutdown` is cancelled, then drain and close the audit log.
    async fn run(self, shutdown: CancellationToken) {
        // The admin listener outlives the proxy's drain so `/readyz` can say "draining".
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(server::serve(
            self.listeners.admin,
            self.admin,
            self.admin_options,
            admin_stop.clone(),
        ));
        // Plain HTTP, whatever [proxy.tls] says: clients reach a forward proxy in the clear and
        // open their own TLS inside the tunnel.
        let egress_task =
            self.listeners
                .egress
                .zip(self.egress_proxy)
                .map(|((listener, _), proxy)| {
                    let options = ServeOptions {
                        tls: None,
                        name: "egress",
                        open_connections: None,
                        ..self.proxy_options.clone()
                    };
                    tokio::spawn(server::serve(listener, proxy, options, shutdown.clone()))
                });
        server::serve(
            self.listeners.proxy,
            self.proxy,
            self.proxy_options,
            shutdown,
        )
        .await;
        if let Some(task) = egress_task {
            let _ = task.await;
        }
        admin_stop.cancel();
        let _ = admin_task.await;
        // Every in-flight request has finished: record the refusals still counted, then flush
        // what the writer holds and close the log (which removes its -wal and -shm files).
        self.summaries.stop.cancel();
        let _ = self.summaries.task.await;
        self.approvals.stop().await;
        self.store.close().await;
        tracing::info!("audit log closed; syncgate stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::audit::{Event, EventKind};
    use crate::graph::OperationId;

    /// Append a `received` event without an outcome, as a replica that died would leave it.
    async fn crashed_change(store: &Store) -> OperationId {
        let mut event = Event::new(uuid::Uuid::now_v7(), EventKind::Received);
        event.partner_tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551".parse().ok();
        event.operation = "sync_update".into();
        store.append(event).await.unwrap().event.operation_id
    }

    async fn until_recovered(store: &Store, operation: OperationId) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = store.operation(operation).await.unwrap();
            if events.iter().any(|r| r.event.kind == EventKind::Recovered) {
                return;
            }
            assert!(Instant::now() < deadline, "never recovered: {events:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn recovery_runs_again_while_syncgate_runs_and_stops_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let settings = Settings::for_upstream("http://127.0.0.1:9", &db).unwrap();
        let store = Store::open(&db, crate::store::StoreOptions::default())
            .await
            .unwrap();
        let rules = RulesHandle::new(settings.rules.clone());
        let proxy = Arc::new(Proxy::new(
            Upstream::new(&settings),
            governor(&settings, store.clone(), rules),
        ));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(recover_periodically(
            proxy,
            None,
            [Duration::ZERO; 2],
            Duration::from_millis(20),
            shutdown.clone(),
        ));
        let first = crashed_change(&store).await;
        until_recovered(&store, first).await;
        // Appended after a pass recorded the first, so only a later pass can find it.
        let second = crashed_change(&store).await;
        until_recovered(&store, second).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("recovery stops with syncgate")
            .unwrap();
        store.close().await;
    }
}
