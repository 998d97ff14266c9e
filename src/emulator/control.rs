//! `/_emulator/*`: the test-support endpoints, outside Graph's URL space and needing no token.
//!
//! - `faults` (GET, POST, DELETE): queue failures for the next matching Graph requests;
//! - `state` (GET), `reset` (POST): see or wipe everything the emulator holds;
//! - `requests` (GET, DELETE): the Graph requests received, to prove what reached "Graph";
//! - `echo[/…]` (any method): the request streamed back, with its method, URI, HTTP version and
//!   headers in `x-echo-*` response headers, to prove a proxy keeps bodies and headers intact;
//! - `bytes?size=N` (GET): N patterned bytes, streamed, to test large downloads.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::Emulator;
use super::api::method_not_allowed;
use super::faults::FaultSpec;
use crate::body::{self, Body};
use crate::graph_error::{GraphError, RequestIds};

/// The prefix of every control endpoint.
const PREFIX: &str = "/_emulator";

/// Size of each chunk `bytes` sends.
const CHUNK: usize = 64 * 1024;

/// Bytes `bytes` produces repeat with this period: byte i is `i % 251`. A prime period makes
/// an offset or a dropped chunk show up in a comparison.
const PERIOD: usize = 251;

/// Largest fault body read (a fault is a few fields).
const MAX_FAULT_BODY: usize = 64 * 1024;

/// Whether a request is for the control plane rather than for Graph.
pub(crate) fn is_control(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

pub(crate) async fn handle(emulator: &Emulator, req: Request<Incoming>) -> Response<Body> {
    let ids = RequestIds::from_headers(req.headers());
    let rest = req.uri().path().strip_prefix(PREFIX).unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let endpoint = rest.strip_suffix('/').unwrap_or(rest).to_owned();
    if endpoint == "echo" || endpoint.starts_with("echo/") {
        return echo(req);
    }
    let result = match (endpoint.as_str(), req.method().as_str()) {
        ("faults", "GET") => Ok(json_response(
            StatusCode::OK,
            &json!({ "value": emulator.faults().list() }),
        )),
        ("faults", "POST") => add_fault(emulator, req).await,
        ("faults", "DELETE") => {
            emulator.faults().clear();
            Ok(no_content())
        }
        ("state", "GET") => Ok(json_response(StatusCode::OK, &emulator.state().dump())),
        ("reset", "POST") => {
            emulator.reset();
            Ok(no_content())
        }
        ("requests", "GET") => Ok(json_response(
            StatusCode::OK,
            &json!({ "value": emulator.request_log() }),
        )),
        ("requests", "DELETE") => {
            emulator.clear_request_log();
            Ok(no_content())
        }
        ("bytes", "GET") => patterned_bytes(req.uri().query()),
        ("faults" | "state" | "reset" | "requests" | "bytes", _) => Err(method_not_allowed()),
        _ => Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The Graph emulator has no control endpoint '{PREFIX}/{endpoint}'."),
        )),
    };
    result.unwrap_or_else(|error| error.into_response(&ids))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn bad_request(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

async fn add_fault(
    emulator: &Emulator,
    req: Request<Incoming>,
) -> Result<Response<Body>, GraphError> {
    let bytes = Limited::new(req.into_body(), MAX_FAULT_BODY)
        .collect()
        .await
        .map_err(|_| bad_request("The fault body could not be read or is too large."))?
        .to_bytes();
    let spec: FaultSpec =
        serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("Invalid fault: {e}.")))?;
    let fault = emulator
        .faults()
        .add(spec)
        .map_err(|e| bad_request(format!("Invalid fault: {e}.")))?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::to_value(fault).unwrap_or_default(),
    ))
}

/// The request streamed back as it came (see the module docs).
fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut response = Response::new(body::stream(incoming));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-echo-method", parts.method.as_str());
    set("x-echo-uri", &uri);
    // `HTTP/1.1`, `HTTP/2.0`: lets a proxy test see which protocol its upstream hop used.
    set("x-echo-version", &format!("{:?}", parts.version));
    set("x-echo-headers", &headers_json(&parts.headers));
    response
}

/// `{"name": ["value", …]}` with names lower-case, values as received (lossily decoded), and
/// the JSON kept to characters a header value may hold.
fn headers_json(headers: &HeaderMap) -> String {
    let mut object = Map::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        object.insert(name.as_str().to_owned(), Value::Array(values));
    }
    let text = Value::Object(object).to_string();
    // serde_json leaves DEL and non-ASCII as they are; escape them so the header is valid.
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn patterned_bytes(query: Option<&str>) -> Result<Response<Body>, GraphError> {
    let size = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "size")
        .map(|(_, value)| value.parse::<u64>())
        .ok_or_else(|| bad_request("Query parameter 'size' is required."))?
        .map_err(|_| bad_request("Query parameter 'size' must be a non-negative integer."))?;
    let mut response = Response::new(body::stream(Pattern { sent: 0, size }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    Ok(response)
}

/// One period-aligned buffer long enough to slice any chunk from: chunks are views into it,
/// so `bytes` never allocates in proportion to `size`.
fn pattern_buffer() -> &'static Bytes {
    static BUFFER: OnceLock<Bytes> = OnceLock::new();
    BUFFER.get_or_init(|| {
        (0..CHUNK + PERIOD)
            .map(|i| (i % PERIOD) as u8)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// The body of `bytes`: `size` bytes of the pattern, in chunks of [`CHUNK`].
struct Pattern {
    sent: u64,
    size: u64,
}

impl http_body::Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let left = this.size - this.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let len = left.min(CHUNK as u64) as usize;
        let offset = (this.sent % PERIOD as u64) as usize;
        this.sent += len as u64;
        let chunk = pattern_buffer().slice(offset..offset + len);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.size
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.size - self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths_are_recognised_exactly() {
        assert!(is_control("/_emulator"));
        assert!(is_control("/_emulator/state"));
        assert!(!is_control("/_emulatorx"));
        assert!(!is_control("/v1.0/_emulator/state"));
    }

    #[tokio::test]
    async fn the_pattern_body_streams_exactly_size_bytes() {
        let size = CHUNK as u64 * 2 + 7;
        let collected = Pattern { sent: 0, size }
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(collected.len() as u64, size);
        assert!(
            collected
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % PERIOD) as u8)
        );
    }

    #[test]
    fn echoed_headers_stay_valid_header_values() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert("x-b", HeaderValue::from_bytes("é".as_bytes()).unwrap());
        let text = headers_json(&headers);
        assert!(HeaderValue::from_str(&text).is_ok());
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json!({"x-a": ["1", "2"], "x-b": ["é"]}));
    }
}
