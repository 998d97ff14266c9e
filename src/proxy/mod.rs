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
    governor: Governor,
}

impl Proxy {
    pub(crate) fn new(upstream: Upstream, governor: Governor) -> Self {
        Self { upstream, governor }
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
                "CONNECT is not supported: point the Graph base URL at syncgate instead of \
                 tunnelling through it"
                    .into(),
            ));
        }
        let upstream_req =
            forward::Outbound::Stream(req).build(self.upstream.target(), Some(conn))?;
        let resp = self.upstream.send(upstream_req).await?;
        Ok(forward::to_client(resp))
    }

    /// Answer `req` by its classification; also says which class it was, for the metrics.
    async fn route(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> (RouteClass, Response<Body>) {
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
        let response = match classification {
            Classification::Forward => self.pass_through(req, conn, ids).await,
            Classification::SyncRead(governed) => self.read(req, governed, conn, ids).await,
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
        };
        (class, response)
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

    async fn pass_through(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        match self.forward(req, conn).await {
            Ok(resp) => resp,
            Err(error) => {
                warn!(%error, request_id = %ids.request_id, "request failed");
                error.into_response(ids)
            }
        }
    }

    /// A read of sync policy content: forwarded, and recorded as a `read` event when configured.
    async fn read(
        &self,
        req: Request<Incoming>,
        governed: Governed,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        if !self.governor.record_reads {
            return self.pass_through(req, conn, ids).await;
        }
        let actor = self.actor(req.headers(), conn);
        let received = Received::new(req.method().as_str(), "", None);
        let op = Operation::new(actor, req.headers().clone(), received, Some(governed));
        let started = Instant::now();
        let resp = self.pass_through(req, conn, ids).await;
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

impl Handler for Proxy {
    async fn handle(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
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
            let mut class = RouteClass::PassThrough;
            let routed = async {
                let (routed_as, response) = self.route(req, &conn, &ids).await;
                class = routed_as;
                response
            };
            let response = body_read::scoped(limits, routed).await;
            self.governor.metrics.request(class, response.status());
            let span = tracing::Span::current();
            span.record("status", response.status().as_u16());
            span.record("latency_ms", started.elapsed().as_millis() as u64);
            info!("answered");
            Ok(response)
        }
        .instrument(span)
        .await
    }
}
