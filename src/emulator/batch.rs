//! JSON batching (`POST /{v1.0|beta}/$batch`, §6).
//!
//! The envelope is checked as a whole first — any problem with it fails the batch with 400 and
//! runs nothing. Then each sub-request is rebuilt as an ordinary [`GraphRequest`] (the batch's
//! version prefixed, the outer `Authorization` attached) and sent through the same
//! [`api::dispatch`] as top-level requests, in `dependsOn` order. A sub-request whose dependency
//! failed is not run and answers 424.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value, json};

use super::Emulator;
use super::api::{self, GraphRequest, Nesting};
use super::odata::{Outcome, Reply};
use super::path::Version;
use super::validate;
use crate::graph_error::{GraphError, RequestIds};

use crate::graph::MAX_BATCH_REQUESTS as MAX_REQUESTS;

/// One entry of `requests`, as checked.
#[derive(Debug)]
struct SubRequest {
    id: String,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Value>,
    depends_on: Vec<String>,
}

/// Run a batch whose body parsed as `envelope`.
pub(crate) fn run(
    emulator: &Emulator,
    version: Version,
    outer: &GraphRequest,
    envelope: Value,
) -> Outcome {
    let requests = parse(envelope)?;
    let order = execution_order(&requests)?;
    let mut statuses: Vec<Option<StatusCode>> = vec![None; requests.len()];
    let mut responses: Vec<Value> = vec![Value::Null; requests.len()];
    for index in order {
        let sub = &requests[index];
        let ids = RequestIds {
            request_id: outer.ids.request_id.clone(),
            client_request_id: sub
                .headers
                .get("client-request-id")
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| outer.ids.client_request_id.clone(), str::to_owned),
        };
        let failed = sub.depends_on.iter().find(|dep| {
            position(&requests, dep)
                .and_then(|i| statuses[i])
                .is_some_and(|s| s.as_u16() >= 400)
        });
        let outcome = match failed {
            Some(dep) => Err(GraphError::new(
                StatusCode::FAILED_DEPENDENCY,
                "FailedDependency",
                format!("The request depends on request '{dep}', which failed."),
            )
            .into()),
            None => match rebuild(version, outer, sub, ids.clone()) {
                Ok(request) => api::dispatch(emulator, &request, Nesting::InBatch),
                Err(error) => Err(error.into()),
            },
        };
        statuses[index] = Some(super::odata::status_of(&outcome));
        responses[index] = response_entry(&sub.id, outcome, &ids);
    }
    Ok(Reply::json(
        StatusCode::OK,
        &json!({ "responses": responses }),
    ))
}

fn invalid(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Check the envelope: shape, limits, ids, dependencies. Any problem fails the whole batch.
fn parse(envelope: Value) -> Result<Vec<SubRequest>, GraphError> {
    let Some(Value::Array(entries)) = envelope.get("requests").cloned() else {
        return Err(invalid(
            "The batch payload must be a JSON object with a 'requests' array.",
        ));
    };
    if entries.is_empty() {
        return Err(invalid(
            "The batch payload must contain at least one request.",
        ));
    }
    if entries.len() > MAX_REQUESTS {
        return Err(invalid(format!(
            "The batch payload contains {} requests; the limit is {MAX_REQUESTS}.",
            entries.len()
        )));
    }
    let mut requests: Vec<SubRequest> = Vec::with_capacity(entries.len());
    for entry in entries {
        let sub = parse_entry(entry)?;
        if position(&requests, &sub.id).is_some() {
            return Err(invalid(format!(
                "The batch payload contains more than one request with the id '{}'; ids are case-insensitive and must be unique.",
                sub.id
            )));
        }
        requests.push(sub);
    }
    for sub in &requests {
        if let Some(dep) = sub
            .depends_on
            .iter()
            .find(|dep| position(&requests, dep).is_none())
        {
            return Err(invalid(format!(
                "Request '{}' depends on '{dep}', which is not in the batch.",
                sub.id
            )));
        }
    }
    Ok(requests)
}

fn parse_entry(entry: Value) -> Result<SubRequest, GraphError> {
    let Value::Object(mut entry) = entry else {
        return Err(invalid("Each entry of 'requests' must be a JSON object."));
    };
    let mut text = |name: &str| match entry.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!(
            "Each batch request needs a non-empty string '{name}'."
        ))),
    };
    let id = text("id")?;
    let method = text("method")?;
    let url = text("url")?;
    // Graph refuses absolute sub-request URLs with exactly this message (§6).
    if url.contains("://") {
        return Err(invalid("Invalid batch payload format."));
    }
    // Methods in batch entries are matched case-insensitively; SDKs send them upper-case.
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| invalid(format!("Request '{id}' has an invalid method '{method}'.")))?;
    let headers = match entry.remove("headers") {
        None | Some(Value::Null) => HeaderMap::new(),
        Some(Value::Object(members)) => header_map(&id, members)?,
        Some(_) => {
            return Err(invalid(format!(
                "The headers of request '{id}' must be a JSON object."
            )));
        }
    };
    let depends_on = match entry.remove("dependsOn") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(invalid(format!(
                    "The dependsOn of request '{id}' must be an array of ids."
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(format!(
                "The dependsOn of request '{id}' must be an array of ids."
            )));
        }
    };
    Ok(SubRequest {
        id,
        method,
        url,
        headers,
        body: entry.remove("body"),
        depends_on,
    })
}

fn header_map(id: &str, members: Map<String, Value>) -> Result<HeaderMap, GraphError> {
    let mut headers = HeaderMap::new();
    for (name, value) in members {
        let parsed = value.as_str().and_then(|v| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        });
        let Some((name, value)) = parsed else {
            return Err(invalid(format!(
                "Request '{id}' has an invalid header '{name}'."
            )));
        };
        headers.append(name, value);
    }
    Ok(headers)
}

/// The index of the request with this id (ids are case-insensitive).
fn position(requests: &[SubRequest], id: &str) -> Option<usize> {
    requests.iter().position(|r| r.id.eq_ignore_ascii_case(id))
}

/// A topological order of the requests, earliest array position first among those ready; a
/// cycle fails the batch.
fn execution_order(requests: &[SubRequest]) -> Result<Vec<usize>, GraphError> {
    let mut done = vec![false; requests.len()];
    let mut order = Vec::with_capacity(requests.len());
    while order.len() < requests.len() {
        let ready = (0..requests.len()).find(|&i| {
            !done[i]
                && requests[i]
                    .depends_on
                    .iter()
                    .all(|dep| position(requests, dep).is_some_and(|d| done[d]))
        });
        let Some(next) = ready else {
            return Err(invalid(
                "The dependsOn references of the batch requests form a cycle.",
            ));
        };
        done[next] = true;
        order.push(next);
    }
    Ok(order)
}

/// The sub-request as a top-level request would have been: `/{version}` + its relative URL
/// (with or without a leading slash), its headers, the batch's bearer token, its body as bytes.
fn rebuild(
    version: Version,
    outer: &GraphRequest,
    sub: &SubRequest,
    ids: RequestIds,
) -> Result<GraphRequest, GraphError> {
    let relative = sub.url.strip_prefix('/').unwrap_or(&sub.url);
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (relative, None),
    };
    let mut headers = sub.headers.clone();
    // Sub-requests are authorised with the batch's own token, whatever they carry.
    headers.remove(header::AUTHORIZATION);
    if let Some(token) = outer.headers.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, token.clone());
    }
    let body = match &sub.body {
        None => Bytes::new(),
        Some(body) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if content_type.is_none() {
                return Err(invalid(
                    "A batch request with a body must carry a Content-Type header.",
                ));
            }
            match body {
                // A string body is base64 (§6); for JSON content types that is how binary-safe
                // clients send a JSON document.
                Value::String(encoded) => STANDARD
                    .decode(encoded)
                    .or_else(|_| URL_SAFE.decode(encoded))
                    .map(Bytes::from)
                    .map_err(|_| validate::unreadable())?,
                other => Bytes::from(serde_json::to_vec(other).unwrap_or_default()),
            }
        }
    };
    Ok(GraphRequest {
        method: sub.method.clone(),
        path: format!("/{version}/{path}"),
        query,
        headers,
        body,
        ids,
    })
}

/// `{id, status, headers, body?}` for one sub-request.
fn response_entry(id: &str, outcome: Outcome, ids: &RequestIds) -> Value {
    let (status, headers, body) = match outcome {
        Ok(reply) => {
            let body = if reply.body.is_empty() {
                None
            } else {
                let is_json = validate::is_json(
                    reply
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok()),
                );
                Some(match serde_json::from_slice::<Value>(&reply.body) {
                    Ok(value) if is_json => value,
                    _ => Value::String(STANDARD.encode(&reply.body)),
                })
            };
            (reply.status, reply.headers, body)
        }
        Err(failure) => {
            let mut headers = failure.headers;
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let body = failure.error.to_json(ids);
            (failure.error.status, headers, Some(body))
        }
    };
    let headers: Map<String, Value> = headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some((
                display_name(name).to_owned(),
                Value::String(value.to_owned()),
            ))
        })
        .collect();
    let mut entry = Map::new();
    entry.insert("id".into(), Value::String(id.to_owned()));
    entry.insert("status".into(), Value::from(status.as_u16()));
    entry.insert("headers".into(), Value::Object(headers));
    if let Some(body) = body {
        entry.insert("body".into(), body);
    }
    Value::Object(entry)
}

/// Header names as Graph writes them inside batch responses (`Content-Type`, `OData-Version`).
fn display_name(name: &HeaderName) -> &str {
    match name.as_str() {
        "content-type" => "Content-Type",
        "cache-control" => "Cache-Control",
        "odata-version" => "OData-Version",
        "retry-after" => "Retry-After",
        "www-authenticate" => "WWW-Authenticate",
        "location" => "Location",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(v: Value) -> Result<Vec<SubRequest>, GraphError> {
        parse(json!({ "requests": v }))
    }

    #[test]
    fn envelope_problems_fail_the_whole_batch() {
        let one = json!({"id": "1", "method": "GET", "url": "/policies"});
        assert!(parse(json!({})).is_err());
        assert!(requests(json!([])).is_err());
        assert!(requests(json!(vec![one.clone(); 21])).is_err());
        let err = requests(json!([one, {"id": "1", "method": "GET", "url": "/x"}])).unwrap_err();
        assert!(
            err.message.contains("more than one request"),
            "{}",
            err.message
        );
        let err = requests(json!([{"id": "A", "method": "GET", "url": "/x"}, {"id": "a", "method": "GET", "url": "/x"}])).unwrap_err();
        assert!(err.message.contains("case-insensitive"));
        let err = requests(
            json!([{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/x"}]),
        )
        .unwrap_err();
        assert_eq!(err.message, "Invalid batch payload format.");
        let err = requests(json!([{"id": "1", "method": "GET", "url": "/x", "dependsOn": ["9"]}]))
            .unwrap_err();
        assert!(err.message.contains("not in the batch"));
        assert!(requests(json!([{"id": 1, "method": "GET", "url": "/x"}])).is_err());
    }

    #[test]
    fn dependencies_run_first_and_cycles_are_refused() {
        let reqs = requests(json!([
            {"id": "1", "method": "GET", "url": "/x", "dependsOn": ["3"]},
            {"id": "2", "method": "GET", "url": "/x"},
            {"id": "3", "method": "GET", "url": "/x", "dependsOn": ["2"]},
        ]))
        .unwrap();
        assert_eq!(execution_order(&reqs).unwrap(), vec![1, 2, 0]);
        let cyclic = requests(json!([
            {"id": "1", "method": "GET", "url": "/x", "dependsOn": ["2"]},
            {"id": "2", "method": "GET", "url": "/x", "dependsOn": ["1"]},
        ]))
        .unwrap();
        assert!(execution_order(&cyclic).is_err());
    }
}
