//! The proxy: every request that reaches the proxy listener goes through [`Proxy::handle`].
//!
//! `handle` classifies the request ([`crate::classify`]) and takes one of four branches:
//! - not governed: forwarded, streaming both ways ([`forward`]);
//! - a governed write: the lifecycle in [`govern`] (read → lock → before → decide → record →
//!   forward → after → complete), the local rules in [`decide`];
//! - a `$batch`: parsed, then unbatched through the same lifecycle when it holds a governed
//!   sub-request, or else forwarded as one batch rebuilt from the parsed form ([`batch`]);
//! - refused: a Graph-shaped error and a `denied` event, without reading the body.
//!
//! What syncgate parsed to decide on (a governed write, a `$batch`) goes upstream rebuilt from
//! the parsed form with allow-listed headers, never as the client's bytes ([`forward`]).

mod actor;
mod batch;
mod decide;
mod error;
pub mod forward;
mod govern;
pub(crate) mod locks;
mod read;
pub(crate) mod recovery;
mod refusals;
mod state;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{Instrument, info, warn};
use uuid::Uuid;

use crate::audit::{Decision, EventKind};
use crate::body::Body;
use crate::classify::{self, Classification, Governed};
use crate::graph_error::RequestIds;
use crate::server::{ConnInfo, DropConnection, Handler};
use crate::store::Store;
pub use decide::RulesHandle;
#[allow(unused_imports)] // the rule tools move onto these (issue 8)
pub(crate) use decide::rule_input;
pub use error::ProxyError;
#[allow(unused_imports)]
pub(crate) use govern::bind_partner;
use govern::{Audit, ChangeRequest, Received};
pub use refusals::RefusalLimits;
use upstream::Upstream;

/// What governing needs besides the upstream.
pub struct Governor {
    /// The audit log every governed operation is recorded in.
    pub store: Store,
    /// One governed change per partner at a time (shared with start-up recovery).
    locks: Arc<locks::Locks>,
    /// Record GETs of sync policies as `read` events.
    pub record_reads: bool,
    /// Largest governed request body (413 above).
    pub max_body: usize,
    /// Largest `$batch` body, checked before any of it is parsed (413 above).
    pub max_batch_body: usize,
    /// The local rules in force (swapped whole on reload).
    pub rules: RulesHandle,
    /// The body memory budget and stall timeout every governed and `$batch` body read shares.
    body_limits: Arc<read::BodyLimits>,
    /// Refusals per client, summarised above a rate.
    refusals: refusals::Refusals,
}

impl Governor {
    pub fn new(store: Store, rules: RulesHandle, record_reads: bool, max_body: usize) -> Self {
        Self {
            store,
            locks: Arc::default(),
            record_reads,
            max_body,
            max_batch_body: crate::config::DEFAULT_MAX_BATCH_BODY,
            rules,
            body_limits: Arc::default(),
            refusals: refusals::Refusals::new(RefusalLimits::default()),
        }
    }

    /// Hold at most `memory` bytes of governed and `$batch` bodies at once (a read waits up to
    /// `wait` for room, then gets 503), and refuse a body that stalls for `stall` with 408.
    pub fn with_body_limits(mut self, memory: usize, wait: Duration, stall: Duration) -> Self {
        self.body_limits = Arc::new(read::BodyLimits::new(memory, wait, stall));
        self
    }

    /// Summarise refusals above `limits` instead of the default.
    pub fn with_refusal_limits(mut self, limits: RefusalLimits) -> Self {
        self.refusals = refusals::Refusals::new(limits);
        self
    }
}

/// The proxy listener's handler.
pub struct Proxy {
    upstream: Upstream,
    governor: Governor,
}

impl Proxy {
    pub fn new(upstream: Upstream, governor: Governor) -> Self {
        Self { upstream, governor }
    }

    /// Record `recovered` for the changes a crash interrupted (see [`recovery`]). Runs beside
    /// live traffic: each re-read holds its partner's lock, so it cannot interleave with a new
    /// change to the same partner.
    pub async fn recover(
        &self,
        token_file: Option<&std::path::Path>,
    ) -> Result<usize, crate::store::StoreError> {
        recovery::recover(
            &self.governor.store,
            &self.upstream,
            &self.governor.locks,
            token_file,
        )
        .await
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
        let upstream_req = forward::to_upstream(req, self.upstream.target(), conn)?;
        let resp = self.upstream.send(upstream_req).await?;
        Ok(forward::to_client(resp))
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let classification = classify::classify(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
        );
        match classification {
            Classification::Forward => self.pass_through(req, conn, ids).await,
            Classification::SyncRead(governed) => self.read(req, governed, conn, ids).await,
            Classification::Governed(governed) => {
                let operation_id = Uuid::now_v7();
                let actor = actor::actor(req.headers(), conn, self.governor.store.token_hasher());
                let target = req.uri().to_string();
                let (parts, incoming) = req.into_parts();
                let body = match read::bounded(incoming, self.governor.max_body).await {
                    Ok(body) => body,
                    Err(refusal) => {
                        let audit = Audit::new(operation_id, &actor, &parts.headers);
                        let received = Received::new(parts.method.as_str(), &target, None);
                        return self
                            .refuse(&audit, Some(&governed), received, refusal, ids)
                            .await;
                    }
                };
                let change = ChangeRequest {
                    governed,
                    headers: parts.headers,
                    body,
                    actor,
                    target,
                };
                self.change(operation_id, change, conn, ids).await
            }
            Classification::Batch(version) => self.batch(req, version, conn, ids).await,
            Classification::Refuse(refusal) => {
                let actor = actor::actor(req.headers(), conn, self.governor.store.token_hasher());
                let audit = Audit::new(Uuid::now_v7(), &actor, req.headers());
                let governed = refusal.governed.as_deref().cloned();
                let target = req.uri().to_string();
                let received = Received::new(req.method().as_str(), &target, None);
                self.refuse(&audit, governed.as_ref(), received, refusal, ids)
                    .await
            }
        }
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
        let actor = actor::actor(req.headers(), conn, self.governor.store.token_hasher());
        let audit = Audit::new(Uuid::now_v7(), &actor, req.headers());
        let started = Instant::now();
        let resp = self.pass_through(req, conn, ids).await;
        let mut event = audit.event(EventKind::Read, &governed, "");
        event.upstream_status = Some(resp.status().as_u16());
        event.request_id = resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        event.decision = Some(Decision::Allow);
        event.latency_ms = Some(started.elapsed().as_millis() as u64);
        // Reads keep flowing when the log is down (DESIGN failure table); the gap is logged.
        if let Err(error) = self.governor.store.append(event).await {
            warn!(%error, "could not record a read");
        }
        audit.tag(resp)
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
            let response = read::scoped(limits, self.route(req, &conn, &ids)).await;
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
