//! `GET /metrics`: this syncgate's counters for a Prometheus scraper (see `docs/metrics.md`).
//!
//! It needs a principal who may read (an auditor or an admin), like the rest of the API, unless
//! `admin.metrics_public = true` opens it: scrapers often send no credentials, and the numbers
//! hold no path, tenant or person (only rule ids, statuses and counts). With no principals and
//! the flag off it is closed, as the API is, and the 403 says which of the two settings opens it.

use http::{HeaderValue, Request, Response, StatusCode, header};

use super::auth::{Principals, Role};
use super::operations::no_parameters;
use crate::body::{Body, full};
use crate::graph_error::{GraphError, RequestIds};
use crate::metrics::{Format, Metrics};

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Auditors and admins, by API key.
    Readers,
    /// Anyone who reaches the admin listener (`admin.metrics_public = true`).
    Public,
}

/// Answer `GET /metrics`.
pub(super) fn answer<B>(
    metrics: &Metrics,
    access: Access,
    principals: &Principals,
    req: &Request<B>,
) -> Response<Body> {
    let ids = || RequestIds::from_headers(req.headers());
    if access == Access::Readers {
        if principals.is_empty() {
            return GraphError::new(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "/metrics is closed: no principals are configured ([[admin.principals]]) and \
                 admin.metrics_public is false; configure a principal for the scraper or set \
                 admin.metrics_public = true",
            )
            .into_response(&ids());
        }
        if let Err(refused) = principals.require(req, Role::Auditor) {
            return refused;
        }
    }
    if let Err((status, code, message)) = no_parameters(req.uri().query()) {
        return GraphError::new(status, &code, message).into_response(&ids());
    }
    let format = Format::negotiate(req.headers().get(header::ACCEPT));
    let mut resp = Response::new(full(metrics.render(format)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}
