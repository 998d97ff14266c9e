//! The admin listener: health and readiness now; the audit API and `/metrics` join it later.
//! It is never the proxy port, so a Graph client can never reach it by accident.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::graph_error::{GraphError, RequestIds};
use crate::server::{ConnInfo, DropConnection, Handler};

/// Answers `/healthz` (the process is up) and `/readyz` (it accepts new proxy traffic).
pub(crate) struct Admin {
    /// The proxy's shutdown token: once cancelled the proxy is draining and not ready.
    shutdown: CancellationToken,
}

impl Admin {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown }
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

impl Handler for Admin {
    async fn handle(
        &self,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/readyz") if self.shutdown.is_cancelled() => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "draining"}),
            ),
            (&Method::GET, "/readyz") => {
                json(StatusCode::OK, serde_json::json!({"status": "ready"}))
            }
            (_, path) => GraphError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no admin endpoint {path}"),
            )
            .into_response(&RequestIds::from_headers(req.headers())),
        };
        Ok(resp)
    }
}
