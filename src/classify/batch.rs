//! `$batch` envelopes (docs/graph.md §6, docs/design.md "$batch"): read one exactly as Graph would,
//! or refuse it.
//!
//! A batch is a bypass channel if syncgate reads it differently from Graph or from a lenient
//! upstream: a sub-request it misses, a URL or method it normalises differently, a body it
//! cannot see (base64), an envelope with two spellings of `requests`. So the envelope is parsed
//! with the same strictness as governed bodies (no duplicate names, no mis-cased or unknown
//! members), every limit Graph documents is enforced, methods must be exact upper-case tokens
//! ([`BATCH_METHODS`]), every URL goes through the strict URL reader (`canonical/url.rs`), and
//! each sub-request is classified with [`classify`] exactly as if it had been sent alone, after
//! an accidental version prefix or a Graph host is stripped. [`BatchRequest::normalized_url`] is
//! what was classified and what may be sent. Whether a sub-request is then governed, forwarded
//! or refused is the pipeline's business; only envelope problems (including a URL, method or
//! header the reader refuses) refuse the whole batch here.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::body::{check_content_type, parse_strict};
use super::canonical;
use super::{Classification, Refusal, check_body, classify, codes};
use crate::graph::ApiVersion;

pub(crate) use crate::graph::MAX_BATCH_REQUESTS;

/// Members of the envelope and of each request, as Graph documents them.
const ENVELOPE_MEMBERS: [&str; 1] = ["requests"];
const REQUEST_MEMBERS: [&str; 6] = ["id", "method", "url", "headers", "body", "dependsOn"];

/// A parsed `$batch` envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// The batch's API version, inherited by every sub-request.
    pub(crate) version: ApiVersion,
    /// The sub-requests, in the order sent.
    pub(crate) requests: Vec<BatchRequest>,
    /// Indices into `requests` in an execution order that honours `dependsOn` (stable: among
    /// requests whose dependencies are met, the earliest sent comes first).
    pub(crate) order: Vec<usize>,
}

impl Batch {
    /// Whether any sub-request needs the pipeline: anything but [`Classification::Forward`] and
    /// [`Classification::SyncRead`] (a refused sub-request counts: it must be answered by
    /// syncgate, not sent to Graph).
    pub(crate) fn is_governed(&self) -> bool {
        self.requests.iter().any(|r| {
            !matches!(
                r.classification,
                Classification::Forward | Classification::SyncRead(_)
            )
        })
    }

    /// The index of the request with `id` (ids are case-insensitive).
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        let wanted = fold_id(id);
        self.requests.iter().position(|r| fold_id(&r.id) == wanted)
    }
}

/// One sub-request of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchRequest {
    /// The id as sent (a number id is kept as its decimal text).
    pub(crate) id: String,
    /// The method: exactly one of [`BATCH_METHODS`] as sent (nothing else is accepted).
    pub(crate) method: Method,
    /// The URL as sent.
    pub(crate) url: String,
    /// The path and query that [`classify`] saw, exactly: `/{version}` then the URL's path
    /// (Graph host and accidental version prefixes stripped) and `?query` (raw spaces, `"`,
    /// `<`, `>` percent-encoded). Every character is printable ASCII accepted by `http::Uri`, so
    /// the part after `/{version}` can be sent upstream as the sub-request's URL.
    pub(crate) normalized_url: String,
    /// The headers as sent.
    pub(crate) headers: Map<String, Value>,
    /// The body: as sent, except a base64 string with a JSON Content-Type, which is decoded and
    /// parsed strictly. `None` when absent or `null`.
    pub(crate) body: Option<Value>,
    /// The ids this request depends on, as sent.
    pub(crate) depends_on: Vec<String>,
    /// [`classify`] of the normalised sub-request with its own headers.
    pub(crate) classification: Classification,
}

impl BatchRequest {
    /// The sub-request's Content-Type header (names compare case-insensitively).
    pub(crate) fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .and_then(|(_, value)| value.as_str())
    }

    /// For a governed sub-request, its body checked against the operation's [`BodyRule`]
    /// (see [`check_body`]); `Ok(None)` for a sub-request that is not governed.
    ///
    /// [`BodyRule`]: super::BodyRule
    pub(crate) fn checked_body(&self) -> Result<Option<Value>, Refusal> {
        match &self.classification {
            Classification::Governed(g) => check_body(
                g.body,
                g.path.version,
                self.content_type(),
                self.body.as_ref(),
            )
            .map_err(|refusal| refusal.about(g.clone())),
            _ => Ok(None),
        }
    }
}

/// The methods a sub-request may have: Graph's documented write and read verbs, spelled exactly.
/// HEAD and OPTIONS are refused: Graph's batching documentation (docs/graph.md §6) shows none,
/// a HEAD inside a batch gains nothing (the response is a JSON member either way), and a "read"
/// that carries a body is exactly the shape an upstream could run as something else.
pub(crate) const BATCH_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Parse a `$batch` body. Refuses (400 `SyncgateBadBatch`) a non-JSON Content-Type (multipart
/// batches included), malformed JSON (with the strictness of governed bodies), an envelope
/// other than `{"requests": [...]}`, no requests or more than 20, duplicate ids
/// (case-insensitive), missing or mistyped id/method/url, a method that is not exactly one of
/// [`BATCH_METHODS`], unknown or mis-cased members, `dependsOn` naming unknown ids or forming a
/// cycle, nested `$batch` requests, a body without a Content-Type header, two spellings of
/// `Authorization`, `Content-Type` or `Content-Encoding` in one request's headers, and a
/// JSON-typed string body that is not base64 of strict JSON. Refuses with
/// `SyncgateNonCanonicalUrl` a sub-request URL the strict reader refuses (`canonical/url.rs`),
/// and with 415 `SyncgateUnsupportedContentEncoding` a sub-request `Content-Encoding` other than
/// `identity`. Every refusal is of the whole batch and names the request.
///
/// The parsed document is taken apart by value: headers and bodies are moved into the
/// [`BatchRequest`]s, never copied.
pub(crate) fn parse_batch(
    version: ApiVersion,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<Batch, Refusal> {
    check_content_type(content_type).map_err(|_| {
        bad_batch(format!(
            "the batch must be JSON (Content-Type: application/json), not {}; multipart batches \
             are refused",
            content_type.map_or_else(|| "missing".to_owned(), |c| format!("'{c}'"))
        ))
    })?;
    let envelope = parse_strict(bytes).map_err(bad_batch)?;
    let Value::Object(mut envelope) = envelope else {
        return Err(bad_batch("the batch must be a JSON object"));
    };
    check_member_names(&envelope, &ENVELOPE_MEMBERS, "the batch")?;
    let entries = match envelope.remove("requests") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(bad_batch("'requests' must be an array")),
        None => return Err(bad_batch("'requests' is missing")),
    };
    if entries.is_empty() {
        return Err(bad_batch("'requests' is empty"));
    }
    if entries.len() > MAX_BATCH_REQUESTS {
        return Err(bad_batch(format!(
            "the batch has {} requests; Graph allows at most {MAX_BATCH_REQUESTS}",
            entries.len()
        )));
    }
    let mut requests: Vec<BatchRequest> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let request = parse_request(version, index, entry)?;
        if let Some(other) = requests
            .iter()
            .find(|r| fold_id(&r.id) == fold_id(&request.id))
        {
            return Err(bad_batch(format!(
                "the ids '{}' and '{}' are the same (ids are case-insensitive)",
                other.id, request.id
            )));
        }
        requests.push(request);
    }
    let order = execution_order(&requests)?;
    Ok(Batch {
        version,
        requests,
        order,
    })
}

fn parse_request(version: ApiVersion, index: usize, entry: Value) -> Result<BatchRequest, Refusal> {
    let Value::Object(mut entry) = entry else {
        return Err(bad_batch(format!("requests[{index}] must be an object")));
    };
    let at = format!("requests[{index}]");
    check_member_names(&entry, &REQUEST_MEMBERS, &at)?;
    let id = match entry.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(_) => return Err(bad_batch(format!("{at}.id must be a non-empty string"))),
        None => return Err(bad_batch(format!("{at}.id is missing"))),
    };
    let at = format!("request '{id}'");
    let method = request_method(entry.remove("method"), &at)?;
    let url = match entry.remove("url") {
        Some(Value::String(u)) if !u.trim().is_empty() => u,
        Some(Value::String(_)) => return Err(bad_batch(format!("{at}: 'url' is empty"))),
        Some(_) => return Err(bad_batch(format!("{at}: 'url' must be a string"))),
        None => return Err(bad_batch(format!("{at}: 'url' is missing"))),
    };
    let headers = match entry.remove("headers") {
        Some(Value::Object(h)) => h,
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(bad_batch(format!("{at}: 'headers' must be an object"))),
    };
    let header_map = header_map(&headers, &at)?;
    let content_type = single_header(&headers, "Content-Type", &at)?;
    single_header(&headers, "Authorization", &at)?;
    if let Some(encoding) = single_header(&headers, "Content-Encoding", &at)?
        && !super::is_identity(encoding.as_bytes())
    {
        return Err(super::unsupported_encoding(&at));
    }
    let body = match entry.remove("body") {
        None | Some(Value::Null) => None,
        Some(body) => {
            let Some(content_type) = content_type else {
                return Err(bad_batch(format!(
                    "{at} has a body but no Content-Type header"
                )));
            };
            Some(decode_body(body, content_type, &at)?)
        }
    };
    let depends_on = depends_on(entry.remove("dependsOn"), &at)?;
    let (path, query) = normalize_url(version, &url, &at)?;
    // Seen loosely, through every decoding, anywhere in the path: a batch inside a batch would
    // run unparsed.
    if canonical::reach(&path, true).batch {
        return Err(bad_batch(format!(
            "{at} is a nested $batch; batches cannot contain batches"
        )));
    }
    let classification = classify(&method, &path, query.as_deref(), &header_map);
    let normalized_url = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    Ok(BatchRequest {
        id,
        method,
        url,
        normalized_url,
        headers,
        body,
        depends_on,
        classification,
    })
}

/// A sub-request's `method`: exactly one of [`BATCH_METHODS`].
fn request_method(method: Option<Value>, at: &str) -> Result<Method, Refusal> {
    match method {
        Some(Value::String(m)) => exact_method(&m).ok_or_else(|| {
            bad_batch(format!(
                "{at} has the method '{}'; a sub-request's method must be exactly one of GET, \
                 POST, PUT, PATCH or DELETE (upper case, nothing around it)",
                m.chars().take(32).collect::<String>().escape_debug()
            ))
        }),
        Some(_) => Err(bad_batch(format!("{at}: 'method' must be a string"))),
        None => Err(bad_batch(format!("{at}: 'method' is missing"))),
    }
}

/// A sub-request's `dependsOn`: a list of ids (strings, or integers as Graph accepts them).
fn depends_on(ids: Option<Value>, at: &str) -> Result<Vec<String>, Refusal> {
    match ids {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|d| match d {
                Value::String(s) => Ok(s),
                Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
                _ => Err(bad_batch(format!("{at}: 'dependsOn' must list ids"))),
            })
            .collect(),
        Some(_) => Err(bad_batch(format!("{at}: 'dependsOn' must be an array"))),
    }
}

/// The method when `text` is exactly one of [`BATCH_METHODS`].
fn exact_method(text: &str) -> Option<Method> {
    BATCH_METHODS.iter().find(|m| m.as_str() == text).cloned()
}

/// Refuse member names that are unknown, or that differ from a known one only by case (a
/// case-insensitive reader, as ASP.NET's JSON options often are, would take `Requests` or `URL`
/// for the real thing).
fn check_member_names(
    members: &Map<String, Value>,
    known: &[&str],
    at: &str,
) -> Result<(), Refusal> {
    for name in members.keys() {
        if known.contains(&name.as_str()) {
            continue;
        }
        return Err(match known.iter().find(|k| k.eq_ignore_ascii_case(name)) {
            Some(k) => bad_batch(format!("{at} has '{name}'; the member is spelled '{k}'")),
            None => bad_batch(format!("{at} has the unknown member '{name}'")),
        });
    }
    Ok(())
}

/// The sub-request's headers as a [`HeaderMap`], for [`classify`] (method overrides).
fn header_map(headers: &Map<String, Value>, at: &str) -> Result<HeaderMap, Refusal> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let Value::String(text) = value else {
            return Err(bad_batch(format!(
                "{at}: the header '{name}' must be a string"
            )));
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad_batch(format!("{at}: '{name}' is not a valid header name")))?;
        let value = HeaderValue::from_str(text)
            .map_err(|_| bad_batch(format!("{at}: the header '{name}' has an invalid value")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// The value of the header `name`, refusing two spellings of it (names compare
/// case-insensitively: which one would the upstream use?). Values are strings ([`header_map`]
/// has checked).
fn single_header<'a>(
    headers: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<&'a str>, Refusal> {
    let mut found = headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name));
    let first = found.next();
    if found.next().is_some() {
        return Err(bad_batch(format!("{at} has more than one {name} header")));
    }
    Ok(first.and_then(|(_, v)| v.as_str()))
}

/// A JSON-typed string body is base64 of the JSON document (§6): decode it and parse it
/// strictly, so a governed body cannot hide behind base64. Other bodies are kept as sent.
fn decode_body(body: Value, content_type: &str, at: &str) -> Result<Value, Refusal> {
    let Value::String(text) = &body else {
        return Ok(body);
    };
    if check_content_type(Some(content_type)).is_err() {
        return Ok(body);
    }
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text.trim()).ok())
        .ok_or_else(|| {
            bad_batch(format!(
                "{at} has a JSON Content-Type and a string body that is not base64"
            ))
        })?;
    parse_strict(&bytes).map_err(|problem| bad_batch(format!("{at}: the base64 body: {problem}")))
}

/// The path and query classification sees: the batch's version, then the sub-request's path
/// as the strict URL reader returns it (a Graph host's `https://host` removed), with any
/// accidental version prefix (`/v1.0/...`, `/beta/...`) removed. Graph itself rejects the last
/// two, but they must not hide a governed request from syncgate. The result is what syncgate
/// classifies and what it sends: printable ASCII that `http::Uri` accepts.
fn normalize_url(
    version: ApiVersion,
    url: &str,
    at: &str,
) -> Result<(String, Option<String>), Refusal> {
    let (path, query) = canonical::read_url(url).map_err(|problem| {
        let mut refusal = super::non_canonical_url(&problem);
        refusal.message = format!("Invalid batch payload: {at}: {}", refusal.message);
        refusal
    })?;
    let mut rest = path.trim_start_matches('/');
    loop {
        let (first, after) = rest.split_once('/').unwrap_or((rest, ""));
        if !canonical::is_loose_version(first) {
            break;
        }
        rest = after;
    }
    let leading_slashes = path.len() - path.trim_start_matches('/').len();
    // Keep extra leading slashes (`https://host//x`) visible to classify() as an empty segment.
    let extra = "/".repeat(leading_slashes.saturating_sub(1));
    Ok((format!("/{version}/{extra}{rest}"), query))
}

/// A topological order of the requests (Kahn's algorithm, earliest index first), refusing
/// unknown dependency ids and cycles.
fn execution_order(requests: &[BatchRequest]) -> Result<Vec<usize>, Refusal> {
    let folded: Vec<String> = requests.iter().map(|r| fold_id(&r.id)).collect();
    let mut dependencies: Vec<Vec<usize>> = Vec::with_capacity(requests.len());
    for request in requests {
        let mut deps = Vec::new();
        for dep in &request.depends_on {
            let index = folded
                .iter()
                .position(|id| *id == fold_id(dep))
                .ok_or_else(|| {
                    bad_batch(format!(
                        "request '{}' depends on '{dep}', which is not in the batch",
                        request.id
                    ))
                })?;
            if !deps.contains(&index) {
                deps.push(index);
            }
        }
        dependencies.push(deps);
    }
    let mut done = vec![false; requests.len()];
    let mut order = Vec::with_capacity(requests.len());
    while order.len() < requests.len() {
        let next = (0..requests.len())
            .find(|&i| !done[i] && dependencies[i].iter().all(|&d| done[d]))
            .ok_or_else(|| {
                let stuck: Vec<&str> = (0..requests.len())
                    .filter(|&i| !done[i])
                    .map(|i| requests[i].id.as_str())
                    .collect();
                bad_batch(format!(
                    "the dependsOn of requests {} form a cycle",
                    stuck.join(", ")
                ))
            })?;
        done[next] = true;
        order.push(next);
    }
    Ok(order)
}

/// Ids compare case-insensitively (§6), with the same folding .NET's ordinal-ignore-case uses.
fn fold_id(id: &str) -> String {
    id.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

fn bad_batch(message: impl Into<String>) -> Refusal {
    Refusal::bad_request(
        codes::BAD_BATCH,
        format!("Invalid batch payload: {}.", message.into()),
    )
}

#[cfg(test)]
mod tests;
