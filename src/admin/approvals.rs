//! The approval gate's routes (docs/approvals.md):
//!
//! - `GET /api/v1/approvals?status=&limit=&before=` (auditor or approver): requests, newest first;
//! - `GET /api/v1/approvals/{id}` (auditor or approver): one request, its change and its votes;
//! - `POST /api/v1/approvals/{id}/approve` and `/reject` (approver), with an optional JSON body
//!   `{"comment": "..."}`: a vote, recorded as an `approval_vote` event; the answer is the
//!   request after it.
//!
//! A vote is refused with 403 when the principal may not vote on the request (its own, not
//! named by the policy, no `oid` configured) and 409 when voting is over or it voted already.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::auth::{Principal, Role};
use super::operations::{bad, limit, pairs, unavailable};
use super::record::{Answer, Failure, Served};
use super::{Admin, json as json_response};
use crate::approvals::transitions::{self, VoteError};
use crate::approvals::{Approval, ApprovalSettings, Ballot, COMMENT_MAX, NoVote, Status, Voter};
use crate::body::Body;
use crate::graph_error::{GraphError, RequestIds};
use crate::server::ConnInfo;
use crate::store::{Store, StoreError};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// The largest vote body read: a comment of [`COMMENT_MAX`] characters, each escaped as a
/// JSON surrogate pair (12 bytes), and the JSON around it.
const MAX_VOTE_BODY: usize = 32 * 1024;
/// The longest a client may take to send a vote's body.
const VOTE_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `/api/v1/approvals...` a request is for.
pub(super) enum ApprovalRoute<'a> {
    List,
    One(&'a str),
    Vote(&'a str, Ballot),
}

impl<'a> ApprovalRoute<'a> {
    pub(super) fn of(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/api/v1/approvals")?;
        if rest.is_empty() {
            return Some(ApprovalRoute::List);
        }
        let rest = rest.strip_prefix('/')?;
        match rest.split_once('/') {
            None if !rest.is_empty() => Some(ApprovalRoute::One(rest)),
            Some((id, "approve")) if !id.is_empty() => {
                Some(ApprovalRoute::Vote(id, Ballot::Approve))
            }
            Some((id, "reject")) if !id.is_empty() => Some(ApprovalRoute::Vote(id, Ballot::Reject)),
            _ => None,
        }
    }
}

/// The JSON of request `a`, as every route answers it.
pub(crate) fn to_json(a: &Approval, settings: &ApprovalSettings) -> Value {
    let b = &a.binding;
    json!({
        "id": a.id,
        "status": a.status.as_str(),
        "operation_id": a.operation_id,
        "created": a.created.to_rfc3339(),
        "policy": a.policy,
        "rule": a.rule,
        "method": b.method,
        "canonical_path": b.canonical_path,
        "partner_tenant_id": b.partner,
        "requester": b.requester,
        "body_hash": b.body_hash,
        "before_hash": b.before_hash,
        "justification": a.justification,
        "ticket": a.ticket,
        "vote_deadline": a.vote_deadline.to_rfc3339(),
        "send_deadline": a.send_deadline.map(|t| t.to_rfc3339()),
        "decided": a.decided.map(|t| t.to_rfc3339()),
        "used_by": a.used_by,
        "progress": a.progress(),
        "votes": a.votes,
        "change": a.change,
        "link": settings.link_to(&a.id),
    })
}

fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    ids: &RequestIds,
) -> Response<Body> {
    GraphError::new(status, code, message.into()).into_response(ids)
}

fn refusal(r: (StatusCode, String, String), ids: &RequestIds) -> Response<Body> {
    error(r.0, &r.1, r.2, ids)
}

impl Admin {
    /// Answer an approvals route for `req` (any method; the route decides what it serves).
    pub(super) async fn approvals(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        route: ApprovalRoute<'_>,
    ) -> Response<Body> {
        let ids = RequestIds::from_headers(req.headers());
        match (req.method().clone(), route) {
            (http::Method::GET, ApprovalRoute::List) => {
                let principal = match self.approvals_reader(&req) {
                    Ok(p) => p,
                    Err(refused) => return *refused,
                };
                let answer = list(&self.store, &self.approvals, req.uri().query()).await;
                self.recorded_read(&req, conn, &principal, answer).await
            }
            (http::Method::GET, ApprovalRoute::One(id)) => {
                let principal = match self.approvals_reader(&req) {
                    Ok(p) => p,
                    Err(refused) => return *refused,
                };
                let answer = match self.store.reader().approval(id).await {
                    Ok(Some(a)) => Ok(Served {
                        body: to_json(&a, &self.approvals),
                        rows: 1,
                    }),
                    Ok(None) => Err(Failure::from((
                        StatusCode::NOT_FOUND,
                        "NotFound".to_owned(),
                        format!("no approval request {id}"),
                    ))),
                    Err(e) => Err(unavailable(e).into()),
                };
                self.recorded_read(&req, conn, &principal, answer).await
            }
            (http::Method::POST, ApprovalRoute::Vote(id, ballot)) => {
                let principal = match self.principals.require(&req, Role::Approver) {
                    Ok(p) => p,
                    Err(refused) => return refused,
                };
                let id = id.to_owned();
                self.vote(req, &principal, &id, ballot, &ids).await
            }
            (_, route) => {
                if let Err(refused) = self.principals.require_any_role(&req) {
                    return refused;
                }
                let allow = match route {
                    ApprovalRoute::Vote(..) => "POST",
                    _ => "GET",
                };
                let mut resp = crate::graph_error::method_not_allowed().into_response(&ids);
                resp.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                resp
            }
        }
    }

    /// Approvals are read by auditors and approvers alike; anyone else gets the refusal.
    fn approvals_reader<B>(&self, req: &Request<B>) -> Result<Principal, Box<Response<Body>>> {
        self.principals
            .require_one_of(req, &[Role::Approver, Role::Auditor])
            .map_err(Box::new)
    }

    async fn vote(
        &self,
        req: Request<Incoming>,
        principal: &Principal,
        id: &str,
        ballot: Ballot,
        ids: &RequestIds,
    ) -> Response<Body> {
        let comment = match read_comment(req).await {
            Ok(comment) => comment,
            Err(message) => return error(StatusCode::BAD_REQUEST, "BadRequest", message, ids),
        };
        let voter = Voter {
            name: &principal.name,
            oid: principal.oid.as_deref(),
            groups: &principal.groups,
            cert_subject: principal.cert.subject.as_ref().map(ToString::to_string),
        };
        let voted =
            transitions::vote(&self.store, &self.approvals, &voter, id, ballot, comment).await;
        self.wake.notify_one();
        match voted {
            Ok(a) => json_response(StatusCode::OK, to_json(&a, &self.approvals)),
            Err(VoteError::NotFound) => not_found(id, ids),
            Err(VoteError::Refused(no, message)) => {
                let (status, code) = match no {
                    NoVote::UnknownOid | NoVote::OwnRequest | NoVote::NotAnApprover => {
                        (StatusCode::FORBIDDEN, "SyncgateVoteRefused")
                    }
                    NoVote::NotPending(_) | NoVote::Expired | NoVote::AlreadyVoted(_) => {
                        (StatusCode::CONFLICT, "SyncgateVoteRefused")
                    }
                };
                error(status, code, message, ids)
            }
            // Another vote (or the sweeper, or a replica) kept changing the request under this
            // one: nothing was recorded, and voting again decides on what it is now.
            Err(VoteError::Store(StoreError::Conflict { context })) => error(
                StatusCode::CONFLICT,
                "SyncgateVoteRefused",
                format!("{context}; the vote was not counted: vote again"),
                ids,
            ),
            Err(VoteError::Store(e)) => refusal(unavailable(e), ids),
        }
    }
}

fn not_found(id: &str, ids: &RequestIds) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("no approval request {id}"),
        ids,
    )
}

/// `GET /api/v1/approvals?status=&limit=&before=`.
async fn list(store: &Store, settings: &ApprovalSettings, query: Option<&str>) -> Answer {
    let (mut status, mut page, mut before) = (None, DEFAULT_LIMIT, None);
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "status" => {
                status = Some(Status::parse(&value).ok_or_else(|| {
                    bad(
                        &key,
                        "is not a status (pending, approved, rejected, expired, void, used)",
                    )
                })?);
            }
            "limit" => page = limit(&key, &value, MAX_LIMIT)?,
            "before" => {
                if uuid::Uuid::try_parse(&value).is_err() {
                    return Err(bad(&key, "is not an approval id").into());
                }
                before = Some(value);
            }
            _ => return Err(bad(&key, "is not a parameter of this route").into()),
        }
    }
    let approvals = store
        .reader()
        .approvals(status, before.as_deref(), i64::from(page))
        .await
        .map_err(unavailable)?;
    let value: Vec<Value> = approvals.iter().map(|a| to_json(a, settings)).collect();
    let mut body = json!({ "value": value });
    if approvals.len() == page as usize {
        if let Some(last) = approvals.last() {
            let status = status
                .map(|s| format!("status={}&", s.as_str()))
                .unwrap_or_default();
            body["@odata.nextLink"] = Value::String(format!(
                "/api/v1/approvals?{status}before={}&limit={page}",
                last.id
            ));
        }
    }
    let rows = approvals.len() as u64;
    Ok(Served { body, rows })
}

/// A vote's body: empty, or `{"comment": "..."}` (nothing else).
async fn read_comment(req: Request<Incoming>) -> Result<Option<String>, String> {
    let body = tokio::time::timeout(
        VOTE_BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_VOTE_BODY).collect(),
    )
    .await
    .map_err(|_| format!("the body did not arrive within {VOTE_BODY_TIMEOUT:?}"))?
    .map_err(|e| format!("the body could not be read (at most {MAX_VOTE_BODY} bytes): {e}"))?
    .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct VoteBody {
        comment: Option<String>,
    }
    let parsed: VoteBody = serde_json::from_slice(&body)
        .map_err(|e| format!("the body must be a JSON object {{\"comment\": \"...\"}}: {e}"))?;
    let comment = parsed
        .comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    if let Some(c) = &comment {
        if c.chars().count() > COMMENT_MAX {
            return Err(format!(
                "the comment is longer than {COMMENT_MAX} characters"
            ));
        }
        if c.chars()
            .any(|ch| ch.is_control() && ch != '\n' && ch != '\t')
        {
            return Err("the comment holds control characters".into());
        }
    }
    Ok(comment)
}
