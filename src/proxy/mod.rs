//! The proxy: every request that reaches the proxy listener goes through [`Proxy::handle`].
//!
//! The lifecycle (DESIGN.md) is classify → read → decide → record → forward → complete. The spine
//! implements the pass-through branch: every request is forwarded, streaming both ways. Governed
//! routes (identitySynchronization changes) branch off in `handle` before `forward`.

mod error;
pub mod forward;
pub mod upstream;

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{Instrument, info, warn};

use crate::body::Body;
use crate::graph_error::RequestIds;
use crate::server::{ConnInfo, DropConnection, Handler};
pub use error::ProxyError;
use upstream::Upstream;

/// The proxy listener's handler.
pub struct Proxy {
    upstream: Upstream,
}

impl Proxy {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

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
            let response = match self.forward(req, &conn).await {
                Ok(resp) => resp,
                Err(error) => {
                    warn!(%error, request_id = %ids.request_id, "request failed");
                    error.into_response(&ids)
                }
            };
            let span = tracing::Span::current();
            span.record("status", response.status().as_u16());
            span.record("latency_ms", started.elapsed().as_millis() as u64);
            info!("forwarded");
            Ok(response)
        }
        .instrument(span)
        .await
    }
}
