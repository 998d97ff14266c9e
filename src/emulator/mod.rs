//! A local stand-in for Microsoft Graph's cross-tenant partner and `identitySynchronization`
//! APIs, faithful enough that the Graph SDKs work against it unchanged — so syncgate, and its
//! users' automation, can be tested without a tenant.
//!
//! Everything it does is specified by `docs/graph.md` (§§2–6, §10); where that reference
//! marks real behaviour as unknown ([I]), the choice made is noted at the code that makes it.
//!
//! Map of the module:
//!
//! - [`path`] reads a URL path into a version and a resource (its own parser, never the proxy's);
//! - [`auth`] checks the bearer token and the permissions its claims grant;
//! - [`odata`] holds the response shapes: Graph's headers, `@odata.context`, `$select`/`$expand`;
//! - [`schema`] describes the stored types; [`validate`] checks bodies against them strictly;
//! - [`state`] holds the tenant's objects and the rules between them;
//! - [`api`] routes a request to an operation and runs it; [`batch`] runs `$batch` through it;
//! - [`faults`] queues injected failures; [`control`] serves the `/_emulator/*` test endpoints.
//!
//! One [`Emulator`] serves one tenant (`tid` claims are ignored). Its state sits behind
//! `std::sync::Mutex`es that are never held across an `.await`.

// Every fallible step here returns the crate's `GraphError` (152 bytes) because that is what
// the response is made of; it is built at most once per request, so boxing it would cost
// readability for no measurable gain.
#![allow(
    clippy::result_large_err,
    reason = "GraphError is the response itself, built once per failing request"
)]

pub(crate) mod api;
mod auth;
mod batch;
mod control;
mod faults;
mod odata;
pub(crate) mod path;
mod schema;
mod state;
mod validate;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::api::{GraphRequest, Nesting};
use self::faults::{Fault, Faults};
use self::odata::Outcome;
use self::state::State;
use crate::body::Body;
use crate::graph_error::{GraphError, RequestIds};
use crate::server::{self, ConnInfo, DropConnection, Handler, ServeOptions};

/// How many Graph requests `/_emulator/requests` remembers (the oldest are forgotten first).
const REQUEST_LOG_CAPACITY: usize = 10_000;

/// The largest Graph request body read; Graph itself refuses bodies of a few MB.
const MAX_GRAPH_BODY: usize = 4 * 1024 * 1024;

/// The emulator: one tenant's state, the fault queue, and the request router.
#[derive(Default)]
pub(crate) struct Emulator {
    /// The tenant's partners, sync policies, deleted items and MTO template.
    state: Mutex<State>,
    /// Failures tests asked for, consumed by the next matching Graph requests.
    faults: Mutex<Faults>,
    /// Graph requests received, oldest first, so a test can prove what reached "Graph".
    requests: Mutex<VecDeque<LoggedRequest>>,
}

/// One Graph request as `/_emulator/requests` lists it.
#[derive(Debug, Clone, Serialize)]
struct LoggedRequest {
    method: String,
    /// Path and query exactly as received.
    path: String,
    /// `None` when a fault dropped the connection without an answer.
    status: Option<u16>,
}

impl Emulator {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    // A panic while a lock is held leaves the data as consistent as any single step left it;
    // keep serving rather than turn every later request into a panic.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn requests(&self) -> MutexGuard<'_, VecDeque<LoggedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Back to a fresh emulator: empty state, no faults, no request log.
    fn reset(&self) {
        *self.state() = State::default();
        self.faults().clear();
        self.requests().clear();
    }

    fn request_log(&self) -> Vec<LoggedRequest> {
        self.requests().iter().cloned().collect()
    }

    fn clear_request_log(&self) {
        self.requests().clear();
    }

    fn log(&self, method: &Method, path: &str, status: Option<StatusCode>) {
        let mut log = self.requests();
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(LoggedRequest {
            method: method.to_string(),
            path: path.to_owned(),
            status: status.map(|s| s.as_u16()),
        });
    }

    /// A Graph request: faults first, then the router; logged either way.
    async fn graph(&self, req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
        let ids = RequestIds::from_headers(req.headers());
        let method = req.method().clone();
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());

        let fault = self.faults().take(&method, &target);
        if let Some(fault) = &fault {
            tracing::debug!(fault = fault.id, "injecting a fault");
            if fault.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            }
            if fault.drop {
                self.log(&method, &target, None);
                return Err(DropConnection);
            }
            if fault.ignore_write {
                let outcome: Outcome = Ok(odata::Reply::no_content());
                self.log(&method, &target, Some(odata::status_of(&outcome)));
                return Ok(odata::into_response(outcome, &ids));
            }
            if !fault.apply_then_fail
                && let Some(failure) = fault.failure()
            {
                let outcome: Outcome = Err(failure);
                self.log(&method, &target, Some(odata::status_of(&outcome)));
                return Ok(odata::into_response(outcome, &ids));
            }
        }
        let fail_after = fault
            .as_ref()
            .filter(|f| f.apply_then_fail)
            .and_then(Fault::failure);

        let (parts, incoming) = req.into_parts();
        let outcome = match read_body(incoming).await {
            Ok(body) => {
                let request = GraphRequest {
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().map(str::to_owned),
                    headers: parts.headers,
                    body,
                    ids: ids.clone(),
                };
                api::dispatch(self, &request, Nesting::TopLevel)
            }
            Err(error) => Err(error.into()),
        };
        // The request ran (and changed state); the caller still sees the injected error.
        let outcome = match fail_after {
            Some(failure) => Err(failure),
            None => outcome,
        };
        let status = odata::status_of(&outcome);
        tracing::Span::current().record("status", status.as_u16());
        self.log(&method, &target, Some(status));
        if let Some(f) = fault.as_ref().filter(|f| f.delay_response_ms > 0) {
            tokio::time::sleep(Duration::from_millis(f.delay_response_ms)).await;
        }
        Ok(odata::into_response(outcome, &ids))
    }
}

/// Read a Graph request body whole (they are small JSON documents), bounded.
async fn read_body(incoming: Incoming) -> Result<Bytes, GraphError> {
    match Limited::new(incoming, MAX_GRAPH_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(GraphError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds {MAX_GRAPH_BODY} bytes."),
        )),
        Err(_) => Err(validate::unreadable()),
    }
}

impl Handler for Emulator {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        if control::is_control(req.uri().path()) {
            return Ok(control::handle(self, req).await);
        }
        // Never the query: it is harmless here, but the habit of logging paths only is kept.
        let span = tracing::debug_span!(
            "graph_request",
            method = %req.method(),
            path = %req.uri().path(),
            status = tracing::field::Empty,
        );
        self.graph(req).instrument(span).await
    }
}

/// Serve the emulator on `listener` until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, options: ServeOptions, shutdown: CancellationToken) {
    server::serve(listener, Arc::new(Emulator::new()), options, shutdown).await;
}
