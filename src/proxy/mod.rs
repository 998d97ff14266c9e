//! The proxy: every request that reaches the proxy listener goes through [`Proxy::handle`].
//!
//! `handle` classifies the request ([`crate::classify`]) and takes one of four branches:
//! - not governed: forwarded, streaming both ways ([`forward`]);
//! - a governed write: the lifecycle in [`lifecycle`] (read → lock → before → decide → record →
//!   forward → after → complete), one phase per module, every exit ending in its terminal step;
//! - a `$batch`: parsed, then unbatched through the same lifecycle when it holds a governed
//!   sub-request, or else forwarded as one batch rebuilt from the parsed form ([`batch`]);
//! - refused: a Graph-shaped error and a `denied` event, without reading the body.
//!
//! What syncgate parsed to decide on (a governed write, a `$batch`) goes upstream rebuilt from
//! the parsed form with allow-listed headers, never as the client's bytes ([`forward`]).

mod actor;
mod batch;
mod body_read;
mod error;
pub(crate) mod forward;
mod lifecycle;
pub(crate) mod locks;
pub(crate) mod recovery;
mod refusals;
pub(crate) mod state;
pub(crate) mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{Instrument, info, warn};

use crate::access_log::{AccessLog, Entry};
use crate::audit::{Decision, EventKind};
use crate::body::Body;
use crate::classify::{self, Classification, Governed};
pub(crate) use crate::config::RefusalLimits;
use crate::graph_error::RequestIds;
use crate::metrics::{Metrics, RouteClass};
use crate::server::{ConnInfo, DropConnection, Handler};
use crate::store::Store;
pub(crate) use error::ProxyError;
#[doc(hidden)]
pub use lifecycle::ExitKind;
pub(crate) use lifecycle::bind_partner;
pub(crate) use lifecycle::complete::{AUDIT_ID_HEADER, WARNING_HEADER};
pub(crate) use lifecycle::decide::RulesHandle;
pub(crate) use lifecycle::decide::rule_input;
use lifecycle::{Exit, Operation, Received};
use upstream::Upstream;

/// What governing needs besides the upstream.
pub(crate) struct Governor {
    /// The audit log every governed operation is recorded in.
    pub(crate) store: Store,
    /// One governed change per partner at a time (shared with start-up recovery).
    locks: Arc<locks::Locks>,
    /// Record GETs of sync policies as `read` events.
    pub(crate) record_reads: bool,
    /// Largest governed request body (413 above).
    pub(crate) max_body: usize,
    /// Largest `$batch` body, checked before any of it is parsed (413 above).
    pub(crate) max_batch_body: usize,
    /// The local rules in force (swapped whole on reload).
    pub(crate) rules: RulesHandle,
    /// The body memory budget and stall timeout every governed and `$batch` body read shares.
    body_limits: Arc<body_read::BodyLimits>,
    /// Refusals per client, summarised above a rate.
    refusals: refusals::Refusals,
    /// This syncgate's counters (requests, decisions, drift, effects, refusals).
    pub(crate) metrics: Arc<Metrics>,
    /// The change-approval gate's policies and webhooks.
    pub(crate) approvals: Arc<crate::approvals::ApprovalSettings>,
    /// Wakes the webhooks' delivery when a new request put notices in the outbox.
    pub(crate) notify: Arc<tokio::sync::Notify>,
}

impl Governor {
    pub(crate) fn new(
        store: Store,
        rules: RulesHandle,
        record_reads: bool,
        max_body: usize,
    ) -> Self {
        Self {
            locks: Arc::new(locks::Locks::new(store.advisory_locks())),
            store,
            record_reads,
            max_body,
            max_batch_body: crate::config::DEFAULT_MAX_BATCH_BODY,
            rules,
            body_limits: Arc::default(),
            refusals: refusals::Refusals::new(RefusalLimits::default()),
            metrics: Arc::new(Metrics::new(None)),
            approvals: Arc::default(),
            notify: Arc::default(),
        }
    }

    /// Hold changes `require_approval` rules fail under `approvals`' policies; `notify` wakes
    /// the webhooks' delivery.
    pub(crate) fn with_approvals(
        mut self,
        approvals: Arc<crate::approvals::ApprovalSettings>,
        notify: Arc<tokio::sync::Notify>,
    ) -> Self {
        self.approvals = approvals;
        self.notify = notify;
        self
    }

    /// Count into `metrics` (the running syncgate's) instead of a registry nobody scrapes.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Hold at most `memory` bytes of governed and `$batch` bodies at once (a read waits up to
    /// `wait` for room, then gets 503), and refuse a body that stalls for `stall` with 408.
    pub(crate) fn with_body_limits(
        mut self,
        memory: usize,
        wait: Duration,
        stall: Duration,
    ) -> Self {
        self.body_limits = Arc::new(body_read::BodyLimits::new(memory, wait, stall));
        self
    }

    /// Summarise refusals above `limits` instead of the default.
    pub(crate) fn with_refusal_limits(mut self, limits: RefusalLimits) -> Self {
        self.refusals = refusals::Refusals::new(limits);
        self
    }
}

/// The proxy listener's handler.
pub(crate) struct Proxy {
    upstream: Upstream,
    /// Shared with the proxies egress mode serves intercepted Graph hosts with
    /// ([`Proxy::for_upstream`]): one log, one set of locks, one set of rules.
    governor: Arc<Governor>,
    /// The runtime the proxy was made on, where the audit log's connections and background tasks
    /// live: every request that is not plain pass-through is handled there, whichever worker
    /// ([`crate::server::workers`]) its connection is on. `None` outside a runtime.
    home: Option<tokio::runtime::Handle>,
    /// One line per answered request, when `[log] access` asks for it.
    access_log: Option<AccessLog>,
    /// Egress mode (`CONNECT`), when `[egress]` turns it on.
    egress: Option<Arc<crate::egress::Egress>>,
}

impl Proxy {
    pub(crate) fn new(upstream: Upstream, governor: Governor) -> Self {
        Self {
            upstream,
            governor: Arc::new(governor),
            home: tokio::runtime::Handle::try_current().ok(),
            access_log: None,
            egress: None,
        }
    }

    /// This proxy (its governor, access log and home runtime) in front of another upstream:
    /// how egress mode serves each intercepted Graph host. It answers no `CONNECT` itself.
    pub(crate) fn for_upstream(&self, upstream: Upstream) -> Proxy {
        Proxy {
            upstream,
            governor: self.governor.clone(),
            home: self.home.clone(),
            access_log: self.access_log.clone(),
            egress: None,
        }
    }

    /// Answer `CONNECT` as egress mode's forward proxy.
    pub(crate) fn with_egress(mut self, egress: crate::egress::Egress) -> Self {
        self.egress = Some(Arc::new(egress));
        self
    }

    /// Write a line for each answered request to `log`.
    pub(crate) fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// One recovery pass: record `recovered` for the changes a crash interrupted more than
    /// `grace` ago (see [`recovery`]). Runs beside live traffic: each re-read holds its partner's
    /// lock, so it cannot interleave with a change to the same partner, in any replica.
    pub(crate) async fn recover(
        &self,
        token_file: Option<&std::path::Path>,
        grace: Duration,
    ) -> Result<usize, crate::store::StoreError> {
        let recovery = recovery::Recovery {
            upstream: &self.upstream,
            locks: &self.governor.locks,
            token_file,
            grace,
        };
        recovery.run(&self.governor.store).await
    }

    /// Pass-through: stream the request up and the response down.
    async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(
                "CONNECT is answered only in egress mode ([egress] enabled = true); otherwise \
                 point the Graph base URL at syncgate instead of tunnelling through it"
                    .into(),
            ));
        }
        let upstream_req =
            forward::Outbound::Stream(req).build(self.upstream.target(), Some(conn))?;
        let resp = self.upstream.send(upstream_req).await?;
        Ok(forward::to_client(resp))
    }

    /// Answer `req`, a request that is not plain pass-through, by its classification.
    async fn route(
        &self,
        req: Request<Incoming>,
        classification: Classification,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        match classification {
            Classification::Forward => self.pass_through(req, conn).await,
            Classification::SyncRead(governed) => self.read(req, governed, conn).await,
            Classification::Governed(governed) => {
                let (parts, incoming) = req.into_parts();
                let actor = self.actor(&parts.headers, conn);
                let received = Received::new(parts.method.as_str(), &parts.uri.to_string(), None);
                let mut op = Operation::new(actor, parts.headers, received, Some(governed));
                match body_read::bounded(incoming, self.governor.max_body).await {
                    Ok(body) => {
                        op.received.body = Some(body);
                        self.change(op, conn, ids).await
                    }
                    Err(refusal) => self.refuse(op, refusal, ids).await,
                }
            }
            Classification::Batch(version) => self.batch(req, version, conn, ids).await,
            Classification::Refuse(refusal) => {
                let actor = self.actor(req.headers(), conn);
                let received = Received::new(req.method().as_str(), &req.uri().to_string(), None);
                let governed = refusal.governed.as_deref().cloned();
                let (parts, _) = req.into_parts();
                let mut op = Operation::new(actor, parts.headers, received, governed);
                op.canonical = refusal.canonical.clone();
                self.refuse(op, refusal, ids).await
            }
        }
    }

    /// Who is asking, as the log records it.
    fn actor(&self, headers: &http::HeaderMap, conn: &ConnInfo) -> crate::audit::Actor {
        actor::actor(headers, conn, self.governor.store.token_hasher())
    }

    /// End `op` refused by a check: its `denied` event and Graph's error.
    async fn refuse(
        &self,
        op: Operation,
        error: impl Into<ProxyError>,
        ids: &RequestIds,
    ) -> Response<Body> {
        lifecycle::finish(self.recorder(), op, Exit::refused(error), ids).await
    }

    /// Forward a request nothing governs, streaming; a failure is answered with Graph's error
    /// shape (its ids are made only then: a fresh `request-id` costs a random number).
    async fn pass_through(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let client_request_id = req.headers().get("client-request-id").cloned();
        match self.forward(req, conn).await {
            Ok(resp) => resp,
            Err(error) => {
                let ids = RequestIds::for_client(client_request_id.as_ref());
                warn!(%error, request_id = %ids.request_id, "request failed");
                error.into_response(&ids)
            }
        }
    }

    /// A read of sync policy content: forwarded, and recorded as a `read` event when configured.
    async fn read(
        &self,
        req: Request<Incoming>,
        governed: Governed,
        conn: &ConnInfo,
    ) -> Response<Body> {
        if !self.governor.record_reads {
            return self.pass_through(req, conn).await;
        }
        let actor = self.actor(req.headers(), conn);
        let received = Received::new(req.method().as_str(), "", None);
        let op = Operation::new(actor, req.headers().clone(), received, Some(governed));
        let started = Instant::now();
        let resp = self.pass_through(req, conn).await;
        let mut event = op.event(EventKind::Read);
        // A read is recorded against its own path, not a state path.
        event.state_path = None;
        event.upstream_status = Some(resp.status().as_u16());
        event.request_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        event.decision = Some(Decision::Allow);
        event.latency_ms = Some(started.elapsed().as_millis() as u64);
        // Reads keep flowing when the log is down (docs/design.md "Failure behaviour"); the gap
        // is logged.
        if let Err(error) = self.governor.store.append(event).await {
            warn!(%error, "could not record a read");
        }
        lifecycle::complete::tag(op.id, resp)
    }
}

impl Proxy {
    /// A request that is not plain pass-through: governed, a `$batch`, a recorded read, a refusal.
    /// Logged at `info` with its outcome (these are rare, and each one is in the audit log too).
    async fn govern(
        &self,
        req: Request<Incoming>,
        classification: Classification,
        conn: Arc<ConnInfo>,
    ) -> Response<Body> {
        let started = Instant::now();
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        async move {
            // Ids for a locally made error; forwarded responses carry the upstream's own.
            let ids = RequestIds::from_headers(req.headers());
            let limits = self.governor.body_limits.clone();
            let routed = self.route(req, classification, &conn, &ids);
            let response = body_read::scoped(limits, routed).await;
            let span = tracing::Span::current();
            span.record("status", response.status().as_u16());
            span.record("latency_ms", started.elapsed().as_millis() as u64);
            info!("answered");
            response
        }
        .instrument(span)
        .await
    }
}

impl Handler for Proxy {
    /// In egress mode, what only a forward proxy gets (`CONNECT`, a plain-HTTP request for
    /// another host) is answered by [`crate::egress`]; everything else goes to
    /// [`Proxy::serve`].
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        if let Some(egress) = &self.egress {
            // Boxed, like the governed path, so that every connection's handler future does not
            // grow by what egress mode needs (name lookups, a connect, another proxy's future).
            if req.method() == Method::CONNECT {
                let answered = Box::pin(egress.connect(req, &conn)).await;
                self.governor
                    .metrics
                    .request(RouteClass::PassThrough, answered.status());
                return Ok(answered);
            }
            if crate::egress::Egress::is_absolute_form(&req) {
                return Box::pin(egress.absolute_form(req, &conn)).await;
            }
        }
        self.serve(req, conn).await
    }
}

impl Proxy {
    /// A request for the pipeline (reverse-proxy mode, or a Graph request in egress mode).
    ///
    /// Plain pass-through is answered on the connection's own worker, with no span, log line or
    /// id of its own (the access log, when enabled, records it); everything else is handled on
    /// the proxy's home runtime (see [`Proxy::home`]).
    async fn serve(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        let classification = classify::classify(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        );
        let class = match &classification {
            Classification::Forward => RouteClass::PassThrough,
            Classification::SyncRead(_) => RouteClass::SyncRead,
            Classification::Governed(_) => RouteClass::Governed,
            Classification::Batch(_) => RouteClass::Batch,
            Classification::Refuse(_) => RouteClass::Refused,
        };
        // What the access line needs of the request, taken before the request is handed on.
        let access = self.access_log.as_ref().map(|_| {
            let headers = req.headers();
            let entry = Entry {
                at: std::time::SystemTime::now(),
                remote: conn.remote.ip(),
                tls: conn.tls,
                version: req.version(),
                method: req.method().clone(),
                target: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
                status: http::StatusCode::OK,
                class,
                latency: Duration::ZERO,
                user_agent: headers.get(http::header::USER_AGENT).cloned(),
                client_request_id: headers.get("client-request-id").cloned(),
                request_id: None,
                response_length: None,
            };
            (Instant::now(), entry)
        });
        let response = match classification {
            Classification::Forward => self.pass_through(req, &conn).await,
            Classification::SyncRead(_) if !self.governor.record_reads => {
                self.pass_through(req, &conn).await
            }
            classification => {
                // Boxed: hyper keeps one slot per connection the size of this handler's future,
                // and the governed lifecycle's state is tens of KiB; inline, every idle
                // connection would hold (and every request move) that much (issue 13).
                let this = Arc::clone(self);
                let governed =
                    Box::pin(async move { this.govern(req, classification, conn).await });
                match &self.home {
                    // Spawned, not awaited in place: a governed change runs to its terminal
                    // event even if its client goes away meanwhile.
                    Some(home) => match home.spawn(governed).await {
                        Ok(response) => response,
                        Err(error) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        // The home runtime is shutting down.
                        Err(_) => return Err(DropConnection),
                    },
                    None => governed.await,
                }
            }
        };
        self.governor.metrics.request(class, response.status());
        if let (Some(log), Some((started, mut entry))) = (&self.access_log, access) {
            entry.latency = started.elapsed();
            entry.status = response.status();
            let headers = response.headers();
            entry.request_id = headers.get("request-id").cloned();
            entry.response_length = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            log.record(entry);
        }
        Ok(response)
    }
}
