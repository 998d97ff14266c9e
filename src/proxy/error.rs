//! Every way the proxy answers a request itself, and the one place each becomes a response.
//!
//! Failures are split by source (as pingora does): the caller's request (a check refused it, its
//! body broke), the upstream (unreachable, slow, broken), a local rule, or syncgate itself (its
//! audit log). [`ProxyError::into_response`] is the only function on the proxy's side that turns
//! one into a status, a Graph error code and a Graph-shaped body, so SDK clients see an ordinary
//! `ODataError`, and the same failure is answered the same way whichever phase met it. The checks
//! that refuse a request (the classifier, the body reader) name their own status and code in a
//! [`Refusal`], since they are the ones that know what was wrong with it.

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body_read::Unread;
use super::upstream::UpstreamError;
use crate::body::{Body, ClientBodyError};
use crate::classify::Refusal;
use crate::graph_error::{GraphError, RequestIds};
use crate::store::StoreError;

/// What `Retry-After` says when syncgate itself (its log, a before-read) is why a change waits.
const RETRY_AFTER_SECONDS: &str = "5";

/// Why syncgate answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// A check refused the request (the classifier, the body reader, the read phase).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// The request's body could not be read (too large, stalled, broken, or no memory for it).
    #[error(transparent)]
    Body(#[from] Unread),
    /// The governed request names no partner tenant (none in the URL, none in the POST body).
    #[error("{0}")]
    NoPartner(&'static str),
    /// The caller asked for something syncgate does not do (e.g. CONNECT tunnelling).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The client's own request body broke while it was streamed upstream (see
    /// [`crate::body::from_client`]): the caller's fault, whatever the upstream made of it.
    #[error("the request body could not be read")]
    ClientBody(#[source] UpstreamError),
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The upstream's response body broke off or was too large to relay.
    #[error("the upstream response could not be read: {0}")]
    UpstreamBody(String),
    /// The before-state of a governed change could not be read (`cause` when the upstream could
    /// not be reached at all): nothing was forwarded.
    #[error(
        "syncgate could not read the current state before the change ({error}); nothing was sent \
         to Microsoft Graph. Retry later."
    )]
    BeforeStateUnavailable {
        error: String,
        cause: Option<UpstreamError>,
    },
    /// A rule in enforce mode refused the change.
    #[error("{0}")]
    PolicyViolation(String),
    /// The approval gate held the change: waiting for approval, or an approval that does not
    /// cover it (rejected, expired, void, used), or a justification or ticket missing.
    #[error("{}", .0.message)]
    Held(crate::approvals::Held),
    /// The change could not be recorded before it would have gone upstream, so it did not.
    #[error(
        "syncgate cannot record this change in its audit log, so it was not sent to Microsoft \
         Graph. Retry later."
    )]
    AuditUnavailable(#[source] StoreError),
    /// A `$batch` sub-request whose `dependsOn` names one that failed (Graph's 424).
    #[error("A request this request depends on failed.")]
    FailedDependency,
    /// A request could not be rebuilt for the upstream (should not happen for a parsed request).
    #[error("cannot build the upstream request")]
    Internal(#[from] http::Error),
    /// A parsed body could not be serialised again (should not happen for a parsed `Value`).
    #[error("cannot serialise the request body")]
    Serialize(#[from] serde_json::Error),
    /// A parsed request could not be rebuilt as it was classified (should not happen).
    #[error("cannot rebuild the request: {0}")]
    Rebuild(String),
}

impl From<UpstreamError> for ProxyError {
    /// An upstream request that failed because the client's body did is the client's failure.
    fn from(error: UpstreamError) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = cause {
            if current.is::<ClientBodyError>() {
                return ProxyError::ClientBody(error);
            }
            cause = current.source();
        }
        ProxyError::Upstream(error)
    }
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> Self {
        ProxyError::Refused(refusal)
    }
}

/// An upstream failure's status and code, wherever in the lifecycle it happened.
fn upstream_failure(error: &UpstreamError) -> (StatusCode, &'static str) {
    match error {
        UpstreamError::Connect(_) => (StatusCode::BAD_GATEWAY, "SyncgateUpstreamUnreachable"),
        UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "SyncgateUpstreamTimeout"),
        UpstreamError::Failed(_) => (StatusCode::BAD_GATEWAY, "SyncgateUpstreamFailed"),
    }
}

impl ProxyError {
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// Graph's `error.code` for this failure.
    pub(crate) fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::Refused(refusal) => (refusal.status, refusal.code),
            ProxyError::Body(unread) => match unread {
                Unread::TooLarge { .. } | Unread::OverBudget { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "SyncgateBodyTooLarge")
                }
                Unread::Stalled { .. } => (StatusCode::REQUEST_TIMEOUT, "SyncgateRequestTimeout"),
                Unread::Busy => (StatusCode::SERVICE_UNAVAILABLE, "SyncgateBusy"),
                Unread::Broken(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            },
            ProxyError::NoPartner(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ProxyError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "Request_BadRequest")
            }
            ProxyError::ClientBody(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ProxyError::Upstream(error) => upstream_failure(error),
            ProxyError::UpstreamBody(_) => (StatusCode::BAD_GATEWAY, "SyncgateUpstreamFailed"),
            ProxyError::BeforeStateUnavailable {
                cause: Some(error), ..
            } => upstream_failure(error),
            ProxyError::BeforeStateUnavailable { cause: None, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SyncgateBeforeStateUnavailable",
            ),
            ProxyError::PolicyViolation(_) => (StatusCode::FORBIDDEN, "SyncgatePolicyViolation"),
            ProxyError::Held(held) => {
                let (code, status) = held.reason.code();
                (status, code)
            }
            ProxyError::AuditUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "SyncgateAuditUnavailable")
            }
            ProxyError::FailedDependency => (StatusCode::FAILED_DEPENDENCY, "FailedDependency"),
            ProxyError::Internal(_) | ProxyError::Serialize(_) | ProxyError::Rebuild(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "SyncgateInternalError")
            }
        }
    }

    /// The message the caller reads. syncgate's own answers to a request (refusals, rule
    /// decisions) are written for the caller as they are; failures name themselves and their
    /// innermost cause (refused, DNS, TLS, ...): the layers between (hyper-util's "client error
    /// (Connect)") add nothing for the caller.
    fn message(&self) -> String {
        match self {
            ProxyError::Refused(refusal) => return refusal.message.clone(),
            ProxyError::Body(unread) => return unread.to_string(),
            ProxyError::NoPartner(message) => return (*message).to_owned(),
            ProxyError::PolicyViolation(message) => return message.clone(),
            ProxyError::Held(held) => return held.message.clone(),
            ProxyError::BeforeStateUnavailable { .. }
            | ProxyError::AuditUnavailable(_)
            | ProxyError::FailedDependency => return self.to_string(),
            _ => {}
        }
        let mut cause: &dyn std::error::Error = self;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if std::ptr::addr_eq(cause, self) {
            format!("syncgate: {self}")
        } else {
            format!("syncgate: {self}: {cause}")
        }
    }

    /// The response: status, Graph's error body with `ids`, and `Retry-After` when waiting is
    /// the remedy (syncgate's log or the before-read was unavailable).
    pub(crate) fn into_response(self, ids: &RequestIds) -> Response<Body> {
        respond(self.to_graph_error(), ids)
    }

    /// This failure as Graph's error document, and whether the answer says when to retry.
    pub(crate) fn to_graph_error(&self) -> (GraphError, bool) {
        let (status, code) = self.status_and_code();
        let retry = matches!(
            self,
            ProxyError::AuditUnavailable(_) | ProxyError::BeforeStateUnavailable { .. }
        );
        let mut error = GraphError::new(status, code, self.message());
        if let ProxyError::Held(crate::approvals::Held {
            approval_id: Some(id),
            ..
        }) = self
        {
            error
                .inner_extra
                .insert("syncgate-approval-id".into(), id.clone().into());
        }
        (error, retry)
    }

    /// The approval request a refusal is about, for the `x-syncgate-approval-id` header.
    pub(crate) fn approval_id(&self) -> Option<&str> {
        match self {
            ProxyError::Held(held) => held.approval_id.as_deref(),
            _ => None,
        }
    }
}

/// Build the response for a Graph error (with `Retry-After` when `retry`).
pub(crate) fn respond((error, retry): (GraphError, bool), ids: &RequestIds) -> Response<Body> {
    let mut resp = error.into_response(ids);
    if retry {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    resp
}
