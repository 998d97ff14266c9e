//! `$batch`: a batch with no governed sub-request is forwarded as one batch, *rebuilt* from the
//! parsed envelope; one with any is *unbatched* — each sub-request runs on its own, in
//! `dependsOn` order, governed ones through the governed lifecycle and the rest as plain
//! requests, dependents of a failed request answer 424, and the batch response is assembled by
//! `id` (docs/design.md "$batch").
//!
//! Unbatching is what makes a batch impossible to use as a bypass: every governed sub-request gets
//! its own before-read, `received` event, lock and after-read, exactly as if it had come alone.
//! Rebuilding is what makes classification hold: the envelope the upstream receives is serialised
//! from the parsed requests, each on the URL syncgate classified, with the allowed headers only
//! (docs/design.md "Forward only what was checked"), so an upstream that reads JSON or URLs more
//! leniently than syncgate has nothing else to read. The body is capped (`audit.max_batch_body`)
//! before any of it is parsed.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::forward::{Outbound, RebuiltBody};
use super::lifecycle::{Operation, Received};
use super::{Proxy, ProxyError, body_read, forward};
use crate::body::{self, Body};
use crate::classify::{self, ApiVersion, Batch, BatchRequest, Classification};
use crate::graph_error::RequestIds;
use crate::server::ConnInfo;

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
        let actor = self.actor(req.headers(), conn);
        let (parts, incoming) = req.into_parts();
        let refused = |body: Option<Bytes>| {
            let received = Received::new(parts.method.as_str(), &parts.uri.to_string(), body);
            Operation::new(actor.clone(), parts.headers.clone(), received, None)
        };
        let bytes = match body_read::bounded(incoming, self.governor.max_batch_body).await {
            Ok(bytes) => bytes,
            Err(refusal) => return self.refuse(refused(None), refusal, ids).await,
        };
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let batch = match classify::parse_batch(version, content_type, &bytes) {
            Ok(batch) => batch,
            Err(refusal) => return self.refuse(refused(Some(bytes)), refusal, ids).await,
        };
        // Everything from here on works from the parsed batch; the client's bytes are done with.
        drop(bytes);
        if !batch.is_governed() {
            // Nothing in it can change a sync policy: Graph runs it, as syncgate read it.
            return match self.forward_batch(&batch, &parts.headers, conn).await {
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
                    .sub_request(sub, &parts.headers, &actor, conn, ids)
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

    /// Send a batch with no governed sub-request upstream as one batch, rebuilt (see
    /// [`rebuilt_envelope`]).
    async fn forward_batch(
        &self,
        batch: &Batch,
        headers: &HeaderMap,
        conn: &ConnInfo,
    ) -> Result<Response<Incoming>, ProxyError> {
        let envelope = rebuilt_envelope(batch)?;
        let req = Outbound::Rebuilt {
            method: Method::POST,
            path_and_query: &format!("/{}/$batch", batch.version.as_str()),
            client: headers,
            body: RebuiltBody::Bytes(HeaderValue::from_static("application/json"), envelope),
        }
        .build(self.upstream.target(), Some(conn))?;
        Ok(self.upstream.send(req).await?)
    }

    /// Run one sub-request as a top-level request of its own.
    async fn sub_request(
        &self,
        sub: &BatchRequest,
        outer: &HeaderMap,
        actor: &crate::audit::Actor,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let headers = sub_headers(sub, outer);
        let received = Received::sub_request(sub.method.as_str(), &sub.url, sub.body.as_ref());
        // Graph refuses these forms inside a batch (docs/graph.md §6); so does the unbatcher,
        // rather than run a request Graph itself would not.
        if let Some(refusal) = malformed_url(&sub.url) {
            let governed = match &sub.classification {
                Classification::Governed(g) | Classification::SyncRead(g) => Some(g.clone()),
                _ => None,
            };
            let op = Operation::new(actor.clone(), headers, received, governed);
            return self.refuse(op, refusal, ids).await;
        }
        match &sub.classification {
            Classification::Governed(governed) => {
                let mut op =
                    Operation::new(actor.clone(), headers, received, Some(governed.clone()));
                // The lifecycle parses the body it records: the batch's JSON, serialised.
                op.received.body = Some(op.received.body.take().unwrap_or_default());
                self.change(op, conn, ids).await
            }
            Classification::Refuse(refusal) => {
                let governed = refusal.governed.as_deref().cloned();
                let mut op = Operation::new(actor.clone(), headers, received, governed);
                op.canonical = refusal.canonical.clone();
                self.refuse(op, refusal.clone(), ids).await
            }
            // Plain requests, and nested batches (which parse_batch already refuses).
            Classification::Forward | Classification::SyncRead(_) | Classification::Batch(_) => {
                // Rebuilt on the URL classify() saw, never on the URL as sent.
                let result = async {
                    let req = Outbound::Rebuilt {
                        method: sub.method.clone(),
                        path_and_query: &sub.normalized_url,
                        client: &headers,
                        body: plain_body(sub)?,
                    }
                    .build(self.upstream.target(), Some(conn))?;
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

/// The batch as it goes upstream: a new envelope serialised from the parsed requests, in the
/// order sent, each with its id, its method as parsed, the URL classify() saw (relative to the
/// version, as Graph wants it), the allowed headers, its body as parsed, and its `dependsOn`.
/// Bodies are borrowed, not copied.
fn rebuilt_envelope(batch: &Batch) -> Result<Bytes, ProxyError> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        requests: Vec<SubRequest<'a>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SubRequest<'a> {
        id: &'a str,
        method: &'a str,
        url: &'a str,
        #[serde(skip_serializing_if = "Map::is_empty")]
        headers: Map<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Cow<'a, Value>>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        depends_on: &'a [String],
    }
    let root = format!("/{}/", batch.version.as_str());
    let requests = batch
        .requests
        .iter()
        .map(|sub| {
            // What classify() saw is "/{version}/" + the relative URL; anything else would mean
            // sending something that was not classified.
            let url = sub
                .normalized_url
                .strip_prefix(root.as_str())
                .map(|_| &sub.normalized_url[root.len() - 1..])
                .ok_or_else(|| {
                    ProxyError::Rebuild(format!(
                        "sub-request '{}' was classified on '{}', outside {root}",
                        sub.id, sub.normalized_url
                    ))
                })?;
            let (body, content_type) = match envelope_body(sub)? {
                Some((body, content_type)) => (Some(body), Some(content_type)),
                None => (None, None),
            };
            let mut headers = allowed_sub_headers(sub);
            if let Some(content_type) = content_type {
                headers.insert("Content-Type".into(), Value::String(content_type));
            }
            Ok(SubRequest {
                id: &sub.id,
                method: sub.method.as_str(),
                url,
                headers,
                body,
                depends_on: &sub.depends_on,
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    Ok(Bytes::from(serde_json::to_vec(&Envelope { requests })?))
}

/// A sub-request's allowed headers (see [`forward::FORWARDED`]) for the rebuilt envelope, named
/// as Graph documents them. Names are matched case-insensitively; two spellings of one header
/// become one comma-separated value, as two header lines would (RFC 9110 §5.3).
/// `Authorization` is never among them: Graph authorises sub-requests with the batch's token.
fn allowed_sub_headers(sub: &BatchRequest) -> Map<String, Value> {
    let mut headers = Map::new();
    for name in forward::FORWARDED {
        let values: Vec<&str> = sub
            .headers
            .iter()
            .filter(|(sent, _)| sent.eq_ignore_ascii_case(name))
            .filter_map(|(_, value)| value.as_str())
            .collect();
        if !values.is_empty() {
            headers.insert((*name).to_owned(), Value::String(values.join(", ")));
        }
    }
    headers
}

/// A sub-request's body for the rebuilt envelope, and its Content-Type. With a JSON
/// Content-Type parse_batch decoded a base64 string body, so the parsed value is what Graph
/// would have read: an object is sent as the object; any other JSON value as base64 of its
/// serialisation again (a bare JSON string would otherwise be read as base64). Other bodies
/// are binary or text Graph reads from base64 or as sent: they go as they came, with their own
/// Content-Type.
type EnvelopeBody<'a> = Option<(Cow<'a, Value>, String)>;

fn envelope_body(sub: &BatchRequest) -> Result<EnvelopeBody<'_>, ProxyError> {
    let Some(body) = sub.body.as_ref() else {
        return Ok(None);
    };
    let content_type = sub.content_type().unwrap_or("application/json");
    if !is_json(content_type) {
        return Ok(Some((Cow::Borrowed(body), content_type.to_owned())));
    }
    let body = match body {
        Value::Object(_) => Cow::Borrowed(body),
        other => Cow::Owned(Value::String(STANDARD.encode(serde_json::to_vec(other)?))),
    };
    Ok(Some((body, "application/json".to_owned())))
}

/// The body of an unbatched plain sub-request as its own request: JSON serialised from the
/// parsed value for a JSON Content-Type; for another type, the bytes a base64 string stands
/// for (a string that is not base64 is sent as its text), or the value's JSON.
fn plain_body(sub: &BatchRequest) -> Result<RebuiltBody, ProxyError> {
    let Some(body) = &sub.body else {
        return Ok(RebuiltBody::None);
    };
    let content_type = sub.content_type().unwrap_or("application/json");
    if is_json(content_type) {
        return Ok(RebuiltBody::json(body)?);
    }
    let bytes = match body {
        Value::String(text) => STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from(text.clone())),
        other => Bytes::from(serde_json::to_vec(other)?),
    };
    let content_type = HeaderValue::from_str(content_type)
        .map_err(|_| ProxyError::Rebuild(format!("the Content-Type of '{}'", sub.id)))?;
    Ok(RebuiltBody::Bytes(content_type, bytes))
}

/// Whether parse_batch read a sub-request's body as JSON (and so decoded a base64 string body):
/// the same Content-Type rule parse_batch applies.
fn is_json(content_type: &str) -> bool {
    classify::check_content_type(Some(content_type)).is_ok()
}

/// Absolute URLs and version-prefixed URLs inside a batch, as Graph answers them.
fn malformed_url(url: &str) -> Option<classify::Refusal> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(classify::Refusal::bad_request(
            classify::codes::BAD_REQUEST,
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
        classify::Refusal::bad_request(
            classify::codes::BAD_REQUEST,
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
            headers.append(name, value);
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
    let (error, _) = ProxyError::FailedDependency.to_graph_error();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (
        error.status,
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
            let (error, _) = ProxyError::UpstreamBody(reason).to_graph_error();
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let ids = RequestIds::from_headers(&parts.headers);
            (
                error.status,
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
            header_map.insert(
                graph_header_name(name.as_str()).into_owned(),
                Value::String(v.to_owned()),
            );
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

/// Response header names as Graph spells them inside batch responses (docs/graph.md §5.3,
/// §6): clients read sub-response headers from a JSON object, where names are case-sensitive
/// (the JavaScript client's `BatchResponseContent` looks for `Content-Type`, and reads no body
/// without it). `request-id` and `client-request-id` are lower-case in Graph; syncgate's own
/// headers keep their documented lower-case names.
const GRAPH_HEADER_NAMES: &[&str] = &[
    "Content-Type",
    "Content-Location",
    "Content-Encoding",
    "Content-Language",
    "OData-Version",
    "OData-EntityId",
    "Cache-Control",
    "request-id",
    "client-request-id",
    "x-ms-ags-diagnostic",
    "x-ms-resource-unit",
    "x-ms-throttle-limit-percentage",
    "x-ms-throttle-scope",
    "x-ms-throttle-information",
    "Location",
    "Retry-After",
    "ETag",
    "Preference-Applied",
    "WWW-Authenticate",
    "Link",
    "Vary",
    "Expires",
    "Pragma",
    "Last-Modified",
    "Allow",
    super::AUDIT_ID_HEADER,
    super::WARNING_HEADER,
    crate::approvals::APPROVAL_ID_HEADER,
];

/// A response header's name as Graph writes it (see [`GRAPH_HEADER_NAMES`]); an unknown name in
/// the conventional form, each hyphen-separated word capitalised (`X-Custom-Thing`).
fn graph_header_name(name: &str) -> Cow<'static, str> {
    if let Some(known) = GRAPH_HEADER_NAMES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
    {
        return Cow::Borrowed(known);
    }
    let words: Vec<String> = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect();
    Cow::Owned(words.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(envelope: &str) -> Batch {
        classify::parse_batch(
            ApiVersion::V1_0,
            Some("application/json"),
            envelope.as_bytes(),
        )
        .expect("a valid batch")
    }

    fn rebuilt(envelope: &str) -> Value {
        let bytes = rebuilt_envelope(&parse(envelope)).expect("rebuilt");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn a_rebuilt_envelope_holds_exactly_what_was_parsed_and_classified() {
        let sent = r#"{ "requests" : [
            { "url" : "users?$select=id" , "method" : "GET" , "id" : 1 ,
              "headers" : { "ConsistencyLevel" : "eventual", "X-Evil": "1",
                            "authorization": "Bearer other", "accept": "application/json" } },
            { "id": "two", "method": "PATCH", "url": "/me", "dependsOn": [1],
              "headers": {"content-type": "application/json; charset=utf-8", "If-Match": "*",
                          "Content-Encoding": "identity"},
              "body": "eyJjaXR5IjogIlJlZG1vbmQifQ==" },
            { "id": "3", "method": "POST", "url": "/me/photo/$value",
              "headers": {"Content-Type": "image/png"}, "body": "iVBORw0KGgo=" },
            { "id": "4", "method": "POST", "url": "/groups",
              "headers": {"Content-Type": "application/json", "prefer": "a", "Prefer": "b"},
              "body": {"displayName" : "x"} },
            { "id": "5", "method": "POST", "url": "/groups",
              "headers": {"Content-Type": "application/json"},
              "body": "ImEgc3RyaW5nIg==" }
        ] }"#;
        assert_eq!(
            rebuilt(sent),
            json!({"requests": [
                {"id": "1", "method": "GET", "url": "/users?$select=id",
                 "headers": {"Accept": "application/json", "ConsistencyLevel": "eventual"}},
                {"id": "two", "method": "PATCH", "url": "/me",
                 "headers": {"If-Match": "*", "Content-Type": "application/json"},
                 "body": {"city": "Redmond"}, "dependsOn": ["1"]},
                {"id": "3", "method": "POST", "url": "/me/photo/$value",
                 "headers": {"Content-Type": "image/png"}, "body": "iVBORw0KGgo="},
                {"id": "4", "method": "POST", "url": "/groups",
                 "headers": {"Prefer": "a, b", "Content-Type": "application/json"},
                 "body": {"displayName": "x"}},
                // A base64 JSON string stays base64: sent bare, Graph would decode it again.
                {"id": "5", "method": "POST", "url": "/groups",
                 "headers": {"Content-Type": "application/json"},
                 "body": STANDARD.encode(br#""a string""#)},
            ]})
        );
    }

    #[test]
    fn the_rebuilt_envelope_is_compact_canonical_json() {
        let bytes = rebuilt_envelope(&parse(
            r#"{"requests":[ {"id":"a","method":"GET","url":"me"} ]}"#,
        ))
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"requests":[{"id":"a","method":"GET","url":"/me"}]}"#
        );
    }

    fn bytes_of(body: RebuiltBody) -> Option<(HeaderValue, Bytes)> {
        match body {
            RebuiltBody::None => None,
            RebuiltBody::Bytes(content_type, bytes) => Some((content_type, bytes)),
        }
    }

    #[test]
    fn an_unbatched_plain_body_is_sent_as_graph_would_read_it() {
        let batch = parse(
            r#"{"requests": [
                {"id": "1", "method": "POST", "url": "/groups",
                 "headers": {"Content-Type": "application/json"}, "body": "eyJhIjoxfQ=="},
                {"id": "2", "method": "PUT", "url": "/me/photo/$value",
                 "headers": {"Content-Type": "image/png"}, "body": "AAEC"},
                {"id": "3", "method": "GET", "url": "/me"}
            ]}"#,
        );
        let (ct, bytes) = bytes_of(plain_body(&batch.requests[0]).unwrap()).unwrap();
        assert_eq!(
            (ct.to_str().unwrap(), &bytes[..]),
            ("application/json", &br#"{"a":1}"#[..])
        );
        let (ct, bytes) = bytes_of(plain_body(&batch.requests[1]).unwrap()).unwrap();
        assert_eq!(
            (ct.to_str().unwrap(), &bytes[..]),
            ("image/png", &[0u8, 1, 2][..])
        );
        assert!(bytes_of(plain_body(&batch.requests[2]).unwrap()).is_none());
    }

    #[test]
    fn json_content_types_are_recognised_as_parse_batch_reads_them() {
        for yes in [
            "application/json",
            "Application/JSON ; odata.metadata=minimal",
            "application/json; charset=\"UTF-8\"",
            "application/json;charset=utf8",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "application/json; charset=latin1",
            "text/json",
            "application/jsonx",
            "image/png",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn sub_response_header_names_are_spelled_as_graph_spells_them() {
        for (sent, graph) in [
            ("content-type", "Content-Type"),
            ("odata-version", "OData-Version"),
            ("cache-control", "Cache-Control"),
            ("request-id", "request-id"),
            ("client-request-id", "client-request-id"),
            ("x-ms-ags-diagnostic", "x-ms-ags-diagnostic"),
            ("location", "Location"),
            ("retry-after", "Retry-After"),
            ("etag", "ETag"),
            ("preference-applied", "Preference-Applied"),
            ("www-authenticate", "WWW-Authenticate"),
            ("x-syncgate-audit-id", "x-syncgate-audit-id"),
            ("x-syncgate-approval-id", "x-syncgate-approval-id"),
            ("x-custom-thing", "X-Custom-Thing"),
            ("odd--name", "Odd--Name"),
        ] {
            assert_eq!(graph_header_name(sent), graph, "{sent}");
        }

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("odata-version", HeaderValue::from_static("4.0"));
        headers.insert("request-id", HeaderValue::from_static("r"));
        headers.insert("content-length", HeaderValue::from_static("2"));
        let entry = sub_response("1", StatusCode::OK, &headers, &Bytes::from_static(b"{}"));
        assert_eq!(
            entry,
            json!({"id": "1", "status": 200, "body": {},
                   "headers": {"Content-Type": "application/json", "OData-Version": "4.0",
                               "request-id": "r"}})
        );
    }
}
