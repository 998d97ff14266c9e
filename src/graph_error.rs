//! Microsoft Graph's error shape, for every response syncgate (proxy or emulator) makes itself.
//!
//! Graph SDKs turn `{"error":{"code","message","innerError":{...}}}` into their ordinary error type
//! (`ODataError` in the Python SDK), so a client sees a refusal from syncgate exactly as it would see
//! one from Graph. See docs/graph.md §5.1: `date` is UTC without fractional seconds or `Z`;
//! `client-request-id` echoes the caller's header, else repeats the `request-id`.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::body::{Body, full};

/// The request and correlation ids every Graph response carries.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    /// Server-side id of this request (a GUID Graph calls `request-id`).
    pub(crate) request_id: String,
    /// The caller's `client-request-id`, or the `request-id` when the caller sent none.
    pub(crate) client_request_id: String,
}

impl RequestIds {
    /// A fresh `request-id`, with the caller's `client-request-id` when it sent a usable one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        Self::for_client(headers.get("client-request-id"))
    }

    /// Ids for a request whose `client-request-id` header was `client_request_id`.
    pub(crate) fn for_client(client_request_id: Option<&HeaderValue>) -> Self {
        let request_id = Uuid::new_v4().to_string();
        let client_request_id = client_request_id
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| request_id.clone());
        Self {
            request_id,
            client_request_id,
        }
    }

    /// Set `request-id` and `client-request-id` on a response's headers.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("request-id", &self.request_id),
            ("client-request-id", &self.client_request_id),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
    }
}

/// A Graph error: status, code, message and optional `details`.
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    /// Graph's optional `details: [{code, message, target?}]`.
    pub(crate) details: Vec<Value>,
    /// Extra members of `innerError` beyond date and ids (e.g. syncgate's audit id).
    pub(crate) inner_extra: serde_json::Map<String, Value>,
}

impl GraphError {
    pub(crate) fn new(
        status: StatusCode,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: Vec::new(),
            inner_extra: serde_json::Map::new(),
        }
    }

    pub(crate) fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    /// The JSON document Graph sends for this error.
    pub(crate) fn to_json(&self, ids: &RequestIds) -> Value {
        let mut inner = serde_json::Map::new();
        inner.insert("date".into(), json!(graph_date_now()));
        inner.insert("request-id".into(), json!(ids.request_id));
        inner.insert("client-request-id".into(), json!(ids.client_request_id));
        inner.extend(self.inner_extra.clone());
        let mut error = serde_json::Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        if !self.details.is_empty() {
            error.insert("details".into(), Value::Array(self.details.clone()));
        }
        error.insert("innerError".into(), Value::Object(inner));
        json!({ "error": error })
    }

    /// A complete HTTP response: status, `application/json`, ids, body.
    pub(crate) fn into_response(self, ids: &RequestIds) -> Response<Body> {
        let body = serde_json::to_vec(&self.to_json(ids)).unwrap_or_default();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        ids.apply(headers);
        response
    }
}

/// Graph's 405 (the `$batch` doc sample, docs/graph.md §5.2).
pub(crate) fn method_not_allowed() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

/// `date` as Graph writes it in `innerError`: UTC, seconds precision, no zone suffix.
pub(crate) fn graph_date_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_id_is_echoed_or_defaults_to_request_id() {
        let mut headers = HeaderMap::new();
        let ids = RequestIds::from_headers(&headers);
        assert_eq!(ids.request_id, ids.client_request_id);
        headers.insert("client-request-id", HeaderValue::from_static("abc"));
        let ids = RequestIds::from_headers(&headers);
        assert_eq!(ids.client_request_id, "abc");
        assert_ne!(ids.request_id, "abc");
    }

    #[test]
    fn error_json_has_graph_shape() {
        let ids = RequestIds {
            request_id: "r".into(),
            client_request_id: "c".into(),
        };
        let err = GraphError::new(StatusCode::FORBIDDEN, "Authorization_RequestDenied", "no");
        let v = err.to_json(&ids);
        assert_eq!(v["error"]["code"], "Authorization_RequestDenied");
        assert_eq!(v["error"]["message"], "no");
        assert_eq!(v["error"]["innerError"]["request-id"], "r");
        assert_eq!(v["error"]["innerError"]["client-request-id"], "c");
        let date = v["error"]["innerError"]["date"].as_str().unwrap();
        assert_eq!(date.len(), "2025-02-13T10:17:06".len());
        assert!(!date.ends_with('Z'));
        assert!(v["error"].get("details").is_none());
    }
}
