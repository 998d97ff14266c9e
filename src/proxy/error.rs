//! Every way a proxied request can fail, and the one place each becomes a response.
//!
//! Failures are split by source (as pingora does): the caller's request, the upstream, or syncgate
//! itself. Each maps to one status and a Graph-shaped body, so SDK clients see an ordinary
//! `ODataError`.

use http::{Response, StatusCode};

use super::upstream::UpstreamError;
use crate::body::{Body, ClientBodyError};
use crate::graph_error::{GraphError, RequestIds};

/// Why syncgate answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
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

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) | ProxyError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) | ProxyError::Serialize(_) | ProxyError::Rebuild(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ProxyError::MethodNotAllowed(_) => "Request_BadRequest",
            ProxyError::ClientBody(_) => "BadRequest",
            ProxyError::Upstream(UpstreamError::Connect(_)) => "SyncgateUpstreamUnreachable",
            ProxyError::Upstream(UpstreamError::Timeout(_)) => "SyncgateUpstreamTimeout",
            ProxyError::Upstream(UpstreamError::Failed(_)) | ProxyError::UpstreamBody(_) => {
                "SyncgateUpstreamFailed"
            }
            ProxyError::Internal(_) | ProxyError::Serialize(_) | ProxyError::Rebuild(_) => {
                "SyncgateInternalError"
            }
        }
    }

    pub fn into_response(self, ids: &RequestIds) -> Response<Body> {
        // Name the failure and its innermost cause (refused, DNS, TLS, ...); the layers between
        // (hyper-util's "client error (Connect)") add nothing for the caller.
        let mut cause: &dyn std::error::Error = &self;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let message = if std::ptr::addr_eq(cause, &self) {
            format!("syncgate: {self}")
        } else {
            format!("syncgate: {self}: {cause}")
        };
        GraphError::new(self.status(), self.code(), message).into_response(ids)
    }
}
