//! The routes that read the audit log, and the rule they share: every answer is recorded
//! (`admin_reads`: who, what, when, from where) before it is sent, and an answer that cannot be
//! recorded is not sent (503). Nothing read through the API goes unrecorded.
//!
//! The record is written after the route has its answer, so it holds the status and the number
//! of rows returned; a long poll is recorded once, when it answers. See `store/admin_reads.rs`
//! for why reads are a table of their own rather than events in the chain.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::Value;
use tokio::sync::Semaphore;

use super::auth::{Principal, Role};
use super::{Admin, events, export, json, operation, operations, proofs, reads, verify};
use crate::body::Body;
use crate::graph_error::{GraphError, RequestIds};
use crate::server::ConnInfo;
use crate::store::ReadRecord;

/// The longest recording a read may take before the read is refused (503): the writer's queue
/// is bounded, and a caller must not hang behind a store that stopped answering.
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// Long polls waiting at once on `/api/v1/events`; one more is answered 429.
pub(crate) const MAX_WAITERS: usize = 256;

/// A route's successful answer: its body and how many rows it holds.
pub(crate) struct Served {
    pub(crate) body: Value,
    pub(crate) rows: u64,
}

/// A route's refusal, in Graph's error shape.
#[derive(Debug, PartialEq)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    /// Seconds for `Retry-After` (429).
    pub(crate) retry_after: Option<u64>,
}

impl From<(StatusCode, String, String)> for Failure {
    fn from((status, code, message): (StatusCode, String, String)) -> Self {
        Failure {
            status,
            code,
            message,
            retry_after: None,
        }
    }
}

impl Failure {
    pub(crate) fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        Failure {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TooManyRequests".to_owned(),
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }
}

/// The routes' answer: served or refused.
pub(crate) type Answer = Result<Served, Failure>;

/// What a log route sends once its read is recorded.
enum Reply {
    Json(Served),
    /// A streamed body (the export), its status and headers already set.
    Stream(Response<Body>),
}

/// What limits the log routes share across requests.
pub(crate) struct Limits {
    /// Permits for long polls waiting at once ([`MAX_WAITERS`]).
    pub(crate) waiters: Arc<Semaphore>,
    /// One verification at a time: it reads the whole log.
    pub(crate) verifying: Semaphore,
    /// Exports running at once ([`export::MAX_CONCURRENT`]).
    pub(crate) exports: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            waiters: Arc::new(Semaphore::new(MAX_WAITERS)),
            verifying: Semaphore::new(1),
            exports: export::permits(),
        }
    }
}

/// A route that reads the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogRoute<'p> {
    Operations,
    /// `/api/v1/operations/{id}`, the id as given.
    Operation(&'p str),
    Events,
    Verify,
    Reads,
    /// `/api/v1/operations/{id}/evidence`, the id as given.
    Evidence(&'p str),
    Checkpoints,
    Witnesses,
    InclusionProof,
    ConsistencyProof,
    /// `/api/v1/export`: streamed, so its record is written when the first page is ready, before
    /// any byte is sent, and counts no rows (they are not known yet).
    Export,
}

impl<'p> LogRoute<'p> {
    /// The log route at `path`, if it is one.
    pub(crate) fn of(path: &'p str) -> Option<Self> {
        Some(match path {
            "/api/v1/operations" => LogRoute::Operations,
            "/api/v1/events" => LogRoute::Events,
            "/api/v1/verify" => LogRoute::Verify,
            "/api/v1/reads" => LogRoute::Reads,
            "/api/v1/export" => LogRoute::Export,
            "/api/v1/checkpoints" => LogRoute::Checkpoints,
            "/api/v1/witnesses" => LogRoute::Witnesses,
            "/api/v1/proofs/inclusion" => LogRoute::InclusionProof,
            "/api/v1/proofs/consistency" => LogRoute::ConsistencyProof,
            _ => {
                let rest = path.strip_prefix("/api/v1/operations/")?;
                let (id, evidence) = match rest.split_once('/') {
                    Some((id, "evidence")) => (id, true),
                    Some(_) => return None,
                    None => (rest, false),
                };
                if id.is_empty() {
                    return None;
                }
                if evidence {
                    LogRoute::Evidence(id)
                } else {
                    LogRoute::Operation(id)
                }
            }
        })
    }

    fn role(self) -> Role {
        match self {
            LogRoute::Reads => Role::Admin,
            _ => Role::Auditor,
        }
    }
}

impl Admin {
    /// Serve a log route to a principal holding its role, and record the read.
    pub(super) async fn log_read<B>(
        &self,
        req: &Request<B>,
        conn: &ConnInfo,
        route: LogRoute<'_>,
    ) -> Response<Body> {
        let principal = match self.principals.require(req, route.role()) {
            Ok(principal) => principal,
            Err(refused) => return refused,
        };
        let query = req.uri().query();
        let answer = match route {
            LogRoute::Operations => operations::list(&self.store, query)
                .await
                .map(|(_, body)| {
                    let rows = body["value"].as_array().map_or(0, Vec::len) as u64;
                    Reply::Json(Served { body, rows })
                })
                .map_err(Failure::from),
            LogRoute::Operation(id) => operation::show(&self.store, id, query)
                .await
                .map(Reply::Json),
            LogRoute::Events => events::page(&self.store, &self.log_limits, &self.shutdown, query)
                .await
                .map(Reply::Json),
            LogRoute::Verify => verify::run(&self.store, &self.log_limits, query)
                .await
                .map(Reply::Json),
            LogRoute::Reads => reads::list(&self.store, query).await.map(Reply::Json),
            LogRoute::Evidence(id) => proofs::evidence(&self.store, id, query)
                .await
                .map(Reply::Json),
            LogRoute::Checkpoints => proofs::checkpoints(&self.store, query)
                .await
                .map(Reply::Json),
            LogRoute::Witnesses => proofs::witnesses(&self.store, query).await.map(Reply::Json),
            LogRoute::InclusionProof => {
                proofs::inclusion(&self.store, query).await.map(Reply::Json)
            }
            LogRoute::ConsistencyProof => proofs::consistency(&self.store, query)
                .await
                .map(Reply::Json),
            LogRoute::Export => export::respond(&self.store, query, &self.log_limits.exports)
                .await
                .map(Reply::Stream),
        };
        self.record_and_send(req, conn, &principal, answer).await
    }

    /// Record a read of something other than the log itself that people may only see on the
    /// record (the approval gate's requests, which carry the changes' bodies and states), then
    /// send it, as [`Admin::log_read`] does.
    pub(super) async fn recorded_read<B>(
        &self,
        req: &Request<B>,
        conn: &ConnInfo,
        principal: &Principal,
        answer: Answer,
    ) -> Response<Body> {
        self.record_and_send(req, conn, principal, answer.map(Reply::Json))
            .await
    }

    /// Record the read, then send its answer; an answer whose read cannot be recorded is
    /// replaced by a 503.
    async fn record_and_send<B>(
        &self,
        req: &Request<B>,
        conn: &ConnInfo,
        principal: &Principal,
        answer: Result<Reply, Failure>,
    ) -> Response<Body> {
        let query = req.uri().query();
        let (status, rows) = match &answer {
            Ok(Reply::Json(served)) => (StatusCode::OK, served.rows),
            Ok(Reply::Stream(resp)) => (resp.status(), 0),
            Err(failure) => (failure.status, 0),
        };
        let read = ReadRecord {
            id: 0,
            time: chrono::Utc::now(),
            principal: principal.name.clone(),
            principal_oid: principal.oid.clone(),
            method: req.method().to_string(),
            route: req.uri().path().to_owned(),
            query: query.map(str::to_owned),
            status: status.as_u16(),
            rows_returned: rows,
            remote_addr: conn.remote.to_string(),
        };
        let ids = RequestIds::from_headers(req.headers());
        match tokio::time::timeout(RECORD_TIMEOUT, self.store.record_read(read)).await {
            Ok(Ok(_)) => {}
            recorded => {
                let why = match recorded {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("recording took longer than {RECORD_TIMEOUT:?}"),
                };
                tracing::warn!(route = %req.uri().path(), reason = %why, "admin read not recorded; refused");
                return GraphError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SyncgateAuditUnavailable",
                    format!("this read cannot be recorded, so it is not served: {why}"),
                )
                .into_response(&ids);
            }
        }
        match answer {
            Ok(Reply::Json(served)) => json(StatusCode::OK, served.body),
            Ok(Reply::Stream(resp)) => resp,
            Err(failure) => {
                let mut resp = GraphError::new(failure.status, &failure.code, failure.message)
                    .into_response(&ids);
                if let Some(seconds) = failure.retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                resp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_routes_are_told_apart_by_path_and_an_operation_id_is_one_segment() {
        assert_eq!(LogRoute::of("/api/v1/events"), Some(LogRoute::Events));
        assert_eq!(
            LogRoute::of("/api/v1/operations/abc"),
            Some(LogRoute::Operation("abc"))
        );
        assert_eq!(LogRoute::of("/api/v1/operations/"), None);
        assert_eq!(LogRoute::of("/api/v1/operations/a/b"), None);
        assert_eq!(
            LogRoute::of("/api/v1/operations/abc/evidence"),
            Some(LogRoute::Evidence("abc"))
        );
        assert_eq!(LogRoute::of("/api/v1/operations//evidence"), None);
        assert_eq!(LogRoute::of("/api/v1/operations/abc/evidence/x"), None);
        assert_eq!(
            LogRoute::of("/api/v1/proofs/inclusion"),
            Some(LogRoute::InclusionProof)
        );
        assert_eq!(LogRoute::Checkpoints.role(), Role::Auditor);
        assert_eq!(LogRoute::of("/api/v1/whoami"), None);
        assert_eq!(LogRoute::Reads.role(), Role::Admin);
        assert_eq!(LogRoute::Verify.role(), Role::Auditor);
    }
}
