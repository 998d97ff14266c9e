//! The admin listener: health and readiness, and the authenticated admin API under `/api/`
//! (`auth`: principals, API keys, roles); the audit routes and `/metrics` join it later.
//! It is never the proxy port, so a Graph client can never reach it by accident.
//!
//! `/healthz` and `/readyz` stay open (load balancers probe them). Every other route needs a
//! principal when principals are configured; with none configured, `/api/` answers 403 (the API
//! is closed by default, never open).

pub(crate) mod auth;
pub(crate) mod operations;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::graph_error::{GraphError, RequestIds};
use crate::server::{ConnInfo, DropConnection, Handler};
use crate::store::Store;
use auth::Principals;

/// How long one look at the audit store answers `/readyz`: a load balancer polling every
/// replica (or anyone who can reach the admin port) costs the database at most one query per
/// second per replica.
const STORE_CHECK_TTL: Duration = Duration::from_secs(1);

/// The longest a readiness check waits for the store (a hung database is "not ready", promptly).
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers `/healthz` (the process is up) and `/readyz` (it accepts new proxy traffic: not
/// draining, and the audit store answers, since without it every governed change gets 503).
pub(crate) struct Admin {
    /// The proxy's shutdown token: once cancelled the proxy is draining and not ready.
    shutdown: CancellationToken,
    store: Store,
    /// The last store check: when, and why it failed (`None`: it answered).
    last_check: Mutex<Option<(Instant, Option<String>)>>,
    /// Who may use the routes beyond health and readiness (`[[admin.principals]]`).
    principals: Principals,
}

impl Admin {
    pub(crate) fn new(shutdown: CancellationToken, store: Store, principals: Principals) -> Self {
        Self {
            shutdown,
            store,
            last_check: Mutex::new(None),
            principals,
        }
    }

    /// Why the audit store cannot be used now, if it cannot (cached for [`STORE_CHECK_TTL`]).
    async fn store_problem(&self) -> Option<String> {
        let cached = |now: Instant| {
            let last = self
                .last_check
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            last.as_ref()
                .filter(|(at, _)| now.duration_since(*at) < STORE_CHECK_TTL)
                .map(|(_, problem)| problem.clone())
        };
        if let Some(problem) = cached(Instant::now()) {
            return problem;
        }
        let problem = match tokio::time::timeout(STORE_CHECK_TIMEOUT, self.store.ready()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(with_causes(&e)),
            Err(_) => Some(format!(
                "the audit store did not answer within {STORE_CHECK_TIMEOUT:?}"
            )),
        };
        *self
            .last_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), problem.clone()));
        problem
    }

    async fn readiness(&self) -> Response<Body> {
        if self.shutdown.is_cancelled() {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "draining"}),
            );
        }
        match self.store_problem().await {
            None => json(
                StatusCode::OK,
                serde_json::json!({"status": "ready", "store": "ok"}),
            ),
            Some(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "unavailable", "store": "unavailable", "reason": reason}),
            ),
        }
    }
}

impl Admin {
    /// The admin API: every route asks for the role it needs before doing anything
    /// ([`Principals::require`]); an unknown route still needs a principal, then 404s.
    async fn api(&self, req: &Request<Incoming>) -> Response<Body> {
        let answered = match (req.method(), req.uri().path()) {
            (&Method::GET, "/api/v1/whoami") => self
                .principals
                .require_any_role(req)
                .map(|principal| json(StatusCode::OK, principal.to_json())),
            (&Method::GET, "/api/v1/operations") => {
                match self.principals.require(req, auth::Role::Auditor) {
                    Ok(_) => Ok(
                        match operations::list(&self.store, req.uri().query()).await {
                            Ok((status, body)) => json(status, body),
                            Err((status, code, message)) => GraphError::new(status, &code, message)
                                .into_response(&RequestIds::from_headers(req.headers())),
                        },
                    ),
                    Err(refused) => Err(refused),
                }
            }
            _ => self
                .principals
                .require_any_role(req)
                .map(|_| not_found(req)),
        };
        answered.unwrap_or_else(|refused| refused)
    }
}

fn not_found<B>(req: &Request<B>) -> Response<Body> {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no admin endpoint {}", req.uri().path()),
    )
    .into_response(&RequestIds::from_headers(req.headers()))
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

/// `error: cause: cause...`, so the reason says what the database said (never a secret: the
/// store's URL holds no password).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

impl Handler for Admin {
    async fn handle(
        &self,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readiness().await,
            (_, path) if path == "/api" || path.starts_with("/api/") => self.api(&req).await,
            _ if self.principals.is_empty() => not_found(&req),
            // Unknown routes are checked too, so a caller without a key learns nothing of them.
            _ => match self.principals.require_any_role(&req) {
                Ok(_) => not_found(&req),
                Err(refused) => refused,
            },
        };
        Ok(resp)
    }
}
