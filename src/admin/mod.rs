//! The admin listener: health and readiness, the authenticated admin API under `/api/`
//! (`auth`: principals, API keys, roles), and `/metrics` (`metrics`: readers only, unless
//! `admin.metrics_public`). The routes that read the log (`record.rs`: operations, one
//! operation, events, verify, reads, export) record every answer in `admin_reads` before
//! sending it.
//! It is never the proxy port, so a Graph client can never reach it by accident.
//!
//! The listener may serve TLS (`[admin.tls]`, the same acceptor as the proxy's), and then a
//! principal may authenticate by client certificate (`cert`, `dn`).
//!
//! `/healthz` and `/readyz` stay open (load balancers probe them), and so does the API's
//! description, `/api/openapi.json` (`openapi`: it holds no data). Every other route needs a
//! principal when principals are configured; with none configured, `/api/` answers 403 (the API
//! is closed by default, never open). A path served for another method answers 405 with `Allow`.

mod approvals;
pub(crate) mod auth;
pub(crate) mod cert;
pub(crate) mod dn;
mod events;
mod export;
mod metrics;
mod openapi;
mod operation;
pub(crate) mod operations;
mod proofs;
mod reads;
mod record;
mod verify;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::graph_error::{GraphError, RequestIds, method_not_allowed};
use crate::metrics::Metrics;
use crate::server::{ConnInfo, DropConnection, Handler};
use crate::store::Store;
use auth::Principals;

/// How long one look at the audit store answers `/readyz`: a load balancer polling every
/// replica (or anyone who can reach the admin port) costs the database at most one query per
/// second per replica.
const STORE_CHECK_TTL: Duration = Duration::from_secs(1);

/// Every path the admin listener serves for `GET`, as `openapi.json` spells it (`{name}`
/// stands for one path segment); [`POST_ROUTES`] are the ones served for `POST`. Another method
/// on one of them is a 405 with `Allow`;
/// a route added to `Admin::handle` or `Admin::api` is added here and to `openapi.json`
/// (a unit test compares the two).
pub(crate) const ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/api/openapi.json",
    "/api/v1/whoami",
    "/api/v1/operations",
    "/api/v1/operations/{id}",
    "/api/v1/operations/{id}/evidence",
    "/api/v1/events",
    "/api/v1/verify",
    "/api/v1/reads",
    "/api/v1/export",
    "/api/v1/checkpoints",
    "/api/v1/witnesses",
    "/api/v1/proofs/inclusion",
    "/api/v1/proofs/consistency",
    "/api/v1/approvals",
    "/api/v1/approvals/{id}",
    "/metrics",
];

/// The paths served for `POST` only (votes).
pub(crate) const POST_ROUTES: &[&str] = &[
    "/api/v1/approvals/{id}/approve",
    "/api/v1/approvals/{id}/reject",
];

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
    /// Bounds shared by the routes that read the log (long-poll waiters, one verify at a time,
    /// `export::MAX_CONCURRENT` exports).
    log_limits: record::Limits,
    /// This syncgate's counters, rendered by `/metrics`.
    metrics: Arc<Metrics>,
    /// Who may read `/metrics`.
    metrics_access: metrics::Access,
    /// The approval gate's policies (for votes and links).
    approvals: Arc<crate::approvals::ApprovalSettings>,
    /// Wakes the webhooks' delivery after a vote wrote notices.
    wake: Arc<tokio::sync::Notify>,
}

impl Admin {
    pub(crate) fn new(shutdown: CancellationToken, store: Store, principals: Principals) -> Self {
        Self {
            shutdown,
            store,
            last_check: Mutex::new(None),
            principals,
            log_limits: record::Limits::default(),
            metrics: Arc::new(Metrics::new(None)),
            metrics_access: metrics::Access::Readers,
            approvals: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// Serve the approval gate's routes under `approvals`' policies; `wake` wakes the webhooks'
    /// delivery after a vote.
    pub(crate) fn with_approvals(
        mut self,
        approvals: Arc<crate::approvals::ApprovalSettings>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        self.approvals = approvals;
        self.wake = wake;
        self
    }

    /// Serve `metrics` on `/metrics`, to anyone when `public`, else to readers.
    pub(crate) fn with_metrics(mut self, metrics: Arc<Metrics>, public: bool) -> Self {
        self.metrics = metrics;
        self.metrics_access = if public {
            metrics::Access::Public
        } else {
            metrics::Access::Readers
        };
        self
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
    async fn api(&self, req: &Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        if let (&Method::GET, Some(route)) = (req.method(), record::LogRoute::of(req.uri().path()))
        {
            return self.log_read(req, conn, route).await;
        }
        let answered = match (req.method(), req.uri().path()) {
            (&Method::GET, "/api/v1/whoami") => self
                .principals
                .require_any_role(req)
                .map(|principal| json(StatusCode::OK, principal.to_json())),
            _ => self.principals.require_any_role(req).map(|_| unrouted(req)),
        };
        answered.unwrap_or_else(|refused| refused)
    }
}

/// Whether `path` is one of [`ROUTES`] or [`POST_ROUTES`].
fn is_route(path: &str) -> bool {
    ROUTES
        .iter()
        .chain(POST_ROUTES)
        .any(|route| matches_route(route, path))
}

/// Whether `path` is `route`, where a `{name}` segment of the route stands for any non-empty one.
fn matches_route(route: &str, path: &str) -> bool {
    let (mut want, mut given) = (route.split('/'), path.split('/'));
    loop {
        match (want.next(), given.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The answer to a request no route took: 405 when the path is served for another method,
/// else 404.
fn unrouted<B>(req: &Request<B>) -> Response<Body> {
    if !is_route(req.uri().path()) {
        return not_found(req);
    }
    let mut resp = method_not_allowed().into_response(&RequestIds::from_headers(req.headers()));
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    resp
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
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        // Only the handshake's verified certificate becomes a credential (see `cert`).
        if let Some(der) = &conn.client_cert {
            let identity = cert::ClientIdentity::from_der(der);
            req.extensions_mut()
                .insert(cert::VerifiedClientCert(identity));
        }
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readiness().await,
            (&Method::GET, "/metrics") => {
                metrics::answer(&self.metrics, self.metrics_access, &self.principals, &req)
            }
            (&Method::GET, "/api/openapi.json") => openapi::response(),
            // The open paths' methods are no secret: they are in the open document.
            (_, "/healthz" | "/readyz" | "/api/openapi.json") => unrouted(&req),
            (_, "/metrics") if self.metrics_access == metrics::Access::Public => unrouted(&req),
            (_, path) if approvals::ApprovalRoute::of(path).is_some() => {
                let path = path.to_owned();
                match approvals::ApprovalRoute::of(&path) {
                    Some(route) => self.approvals(req, &conn, route).await,
                    None => not_found(&req),
                }
            }
            (_, path) if path == "/api" || path.starts_with("/api/") => self.api(&req, &conn).await,
            _ if self.principals.is_empty() => not_found(&req),
            // Unknown routes are checked too, so a caller without a key learns nothing of them;
            // a served path (`/metrics`) for another method is then a 405.
            _ => match self.principals.require_any_role(&req) {
                Ok(_) => unrouted(&req),
                Err(refused) => refused,
            },
        };
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_template_matches_one_nonempty_segment_per_name() {
        let route = "/api/v1/operations/{id}";
        assert!(matches_route(route, "/api/v1/operations/0190"));
        for other in [
            "/api/v1/operations",
            "/api/v1/operations/",
            "/api/v1/operations/0190/x",
            "/api/v1/operation/0190",
        ] {
            assert!(!matches_route(route, other), "{other}");
        }
        assert!(matches_route("/healthz", "/healthz"));
        assert!(!matches_route("/healthz", "/healthz/"));
    }

    #[test]
    fn another_method_on_a_served_path_is_a_405_naming_get_and_an_unknown_path_a_404() {
        let req = Request::post("/api/v1/operations").body(()).unwrap();
        let resp = unrouted(&req);
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let req = Request::get("/api/v1/nothing").body(()).unwrap();
        assert_eq!(unrouted(&req).status(), StatusCode::NOT_FOUND);
    }
}
