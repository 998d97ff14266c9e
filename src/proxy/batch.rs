//! `$batch`: a batch with no governed sub-request is forwarded as it came; one with any is
//! *unbatched* — each sub-request runs on its own, in `dependsOn` order, governed ones through the
//! governed lifecycle and the rest as plain requests, dependents of a failed request answer 424,
//! and the batch response is assembled by `id` (DESIGN.md "$batch").
//!
//! Unbatching is what makes a batch impossible to use as a bypass: every governed sub-request gets
//! its own before-read, `received` event, lock and after-read, exactly as if it had come alone.

use std::collections::HashSet;

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::govern::{Audit, ChangeRequest, Received};
use super::{Proxy, ProxyError, actor, forward, read};
use crate::body::{self, Body};
use crate::classify::{self, ApiVersion, BatchRequest, Classification};
use crate::graph_error::{GraphError, RequestIds};
use crate::server::ConnInfo;

/// Graph allows 20 sub-requests; a batch body is bounded by that many governed bodies.
const MAX_SUB_REQUESTS: usize = 20;

/// Largest sub-response body kept for the assembled batch response.
const MAX_SUB_RESPONSE: usize = 4 * 1024 * 1024;

impl Proxy {
    pub(crate) async fn batch(
        &self,
        req: Request<Incoming>,
        version: ApiVersion,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let actor = actor::actor(req.headers(), conn, self.governor.store.token_hasher());
        let (parts, incoming) = req.into_parts();
        let max = self.governor.max_body.saturating_mul(MAX_SUB_REQUESTS);
        let bytes = match read::bounded(incoming, max).await {
            Ok(bytes) => bytes,
            Err(refusal) => {
                let audit = Audit::new(Uuid::now_v7(), &actor, &parts.headers);
                return self
                    .refuse(
                        &audit,
                        None,
                        Received::new(parts.method.as_str(), &parts.uri.to_string(), None),
                        refusal,
                        ids,
                    )
                    .await;
            }
        };
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let batch = match classify::parse_batch(version, content_type, &bytes) {
            Ok(batch) => batch,
            Err(refusal) => {
                let audit = Audit::new(Uuid::now_v7(), &actor, &parts.headers);
                return self
                    .refuse(
                        &audit,
                        None,
                        Received::new(parts.method.as_str(), &parts.uri.to_string(), Some(&bytes)),
                        refusal,
                        ids,
                    )
                    .await;
            }
        };
        if !batch.is_governed() {
            // Nothing in it can change a sync policy: Graph runs it as sent.
            let mut headers = parts.headers;
            forward::upstream_headers(&mut headers, conn);
            let result = async {
                let uri = forward::upstream_uri(
                    self.upstream.target(),
                    parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                )?;
                let mut req = Request::builder()
                    .method(parts.method)
                    .uri(uri)
                    .body(body::full(bytes))?;
                *req.headers_mut() = headers;
                Ok::<_, ProxyError>(self.upstream.send(req).await?)
            }
            .await;
            return match result {
                Ok(resp) => forward::to_client(resp),
                Err(error) => error.into_response(ids),
            };
        }

        let mut responses: Vec<Option<Value>> = vec![None; batch.requests.len()];
        let mut failed: HashSet<String> = HashSet::new();
        for &index in &batch.order {
            let sub = &batch.requests[index];
            let (status, headers, body) = if sub
                .depends_on
                .iter()
                .any(|d| failed.contains(&d.to_lowercase()))
            {
                failed_dependency(ids)
            } else {
                let resp = self
                    .sub_request(version, sub, &parts.headers, &actor, conn, ids)
                    .await;
                collect(resp).await
            };
            if status.as_u16() >= 400 {
                failed.insert(sub.id.to_lowercase());
            }
            responses[index] = Some(sub_response(&sub.id, status, &headers, &body));
        }
        let document = json!({ "responses": responses.into_iter().flatten().collect::<Vec<_>>() });
        let mut resp = Response::new(body::full(document.to_string()));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        ids.apply(headers);
        resp
    }

    /// Run one sub-request as a top-level request of its own.
    async fn sub_request(
        &self,
        version: ApiVersion,
        sub: &BatchRequest,
        outer: &HeaderMap,
        actor: &crate::audit::Actor,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let headers = sub_headers(sub, outer);
        let audit = Audit::new(Uuid::now_v7(), actor, &headers);
        // Graph refuses these forms inside a batch (graph-reference §6); so does the unbatcher,
        // rather than run a request Graph itself would not.
        if let Some(refusal) = malformed_url(&sub.url) {
            let governed = match &sub.classification {
                Classification::Governed(g) | Classification::SyncRead(g) => Some(g.clone()),
                _ => None,
            };
            return self
                .refuse(
                    &audit,
                    governed.as_ref(),
                    Received::sub_request(sub.method.as_str(), &sub.url, sub.body.as_ref()),
                    refusal,
                    ids,
                )
                .await;
        }
        let body = match &sub.body {
            Some(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Bytes::new(),
        };
        match &sub.classification {
            Classification::Governed(governed) => {
                let change = ChangeRequest {
                    governed: governed.clone(),
                    headers,
                    body,
                    actor: actor.clone(),
                    target: sub.url.clone(),
                };
                self.change(audit.operation_id, change, conn, ids).await
            }
            Classification::Refuse(refusal) => {
                let governed = refusal.governed.as_deref().cloned();
                self.refuse(
                    &audit,
                    governed.as_ref(),
                    Received::sub_request(sub.method.as_str(), &sub.url, sub.body.as_ref()),
                    refusal.clone(),
                    ids,
                )
                .await
            }
            // Plain requests, and nested batches (which parse_batch already refuses).
            Classification::Forward | Classification::SyncRead(_) | Classification::Batch(_) => {
                let path = format!("/{}/{}", version.as_str(), sub.url.trim_start_matches('/'));
                let result = async {
                    let uri = forward::upstream_uri(self.upstream.target(), path.as_str())?;
                    let mut headers = headers;
                    forward::upstream_headers(&mut headers, conn);
                    if !body.is_empty() {
                        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                    }
                    let mut req = Request::builder()
                        .method(sub.method.clone())
                        .uri(uri)
                        .body(body::full(body))?;
                    *req.headers_mut() = headers;
                    Ok::<_, ProxyError>(self.upstream.send(req).await?)
                }
                .await;
                match result {
                    Ok(resp) => forward::to_client(resp),
                    Err(error) => error.into_response(ids),
                }
            }
        }
    }
}

/// Absolute URLs and version-prefixed URLs inside a batch, as Graph answers them.
fn malformed_url(url: &str) -> Option<classify::Refusal> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(classify::Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid batch payload format.",
        ));
    }
    let first = lower
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    (first == "v1.0" || first == "beta").then(|| {
        let original = url
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        classify::Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{original}'."),
        )
    })
}

/// The sub-request's own headers, with the batch's `Authorization` (sub-requests are authorised
/// with the batch's token, as Graph does).
fn sub_headers(sub: &BatchRequest, outer: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &sub.headers {
        let (Ok(name), Some(value)) = (HeaderName::from_bytes(name.as_bytes()), value.as_str())
        else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    headers.remove(http::header::AUTHORIZATION);
    if let Some(auth) = outer.get(http::header::AUTHORIZATION) {
        headers.insert(http::header::AUTHORIZATION, auth.clone());
    }
    if sub.body.is_some() && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers
}

fn failed_dependency(ids: &RequestIds) -> (StatusCode, HeaderMap, Bytes) {
    let error = GraphError::new(
        StatusCode::FAILED_DEPENDENCY,
        "FailedDependency",
        "A request this request depends on failed.",
    );
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (
        StatusCode::FAILED_DEPENDENCY,
        headers,
        Bytes::from(error.to_json(ids).to_string()),
    )
}

/// A sub-response, read whole. A body that breaks off or exceeds the cap becomes a 502 entry, so
/// the batch response never claims a result syncgate did not fully see.
async fn collect(resp: Response<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    let failure = loop {
        match body.frame().await {
            None => break None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                    if bytes.len() > MAX_SUB_RESPONSE {
                        break Some(format!("the response exceeds {MAX_SUB_RESPONSE} bytes"));
                    }
                }
            }
            Some(Err(error)) => break Some(error.to_string()),
        }
    };
    match failure {
        None => (parts.status, parts.headers, Bytes::from(bytes)),
        Some(reason) => {
            let error = GraphError::new(
                StatusCode::BAD_GATEWAY,
                "SyncgateUpstreamFailed",
                format!("syncgate: the upstream response could not be read: {reason}"),
            );
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let ids = RequestIds::from_headers(&parts.headers);
            (
                StatusCode::BAD_GATEWAY,
                headers,
                Bytes::from(error.to_json(&ids).to_string()),
            )
        }
    }
}

/// One entry of the batch response: `{id, status, headers, body}` (body as JSON when it is JSON,
/// base64 otherwise, omitted when empty).
fn sub_response(id: &str, status: StatusCode, headers: &HeaderMap, body: &Bytes) -> Value {
    const SKIP: &[&str] = &[
        "content-length",
        "date",
        "strict-transport-security",
        "transfer-encoding",
        "connection",
    ];
    let mut header_map = Map::new();
    for (name, value) in headers {
        if SKIP.contains(&name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            header_map.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let mut entry = Map::new();
    entry.insert("id".into(), Value::String(id.to_owned()));
    entry.insert("status".into(), json!(status.as_u16()));
    entry.insert("headers".into(), Value::Object(header_map));
    if !body.is_empty() {
        let is_json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let value = match is_json.then(|| serde_json::from_slice::<Value>(body)) {
            Some(Ok(v)) => v,
            _ => Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        };
        entry.insert("body".into(), value);
    }
    Value::Object(entry)
}
