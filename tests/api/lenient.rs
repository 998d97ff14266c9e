//! A deliberately lenient Graph stand-in, for the bypass tests: it reads every URL and method
//! spelling a lax server plausibly might (and several it plausibly would not), and applies the
//! write. Where the emulator is strict like Graph, this one is what an attacker hopes Graph is.
//!
//! What it accepts, on top of what Graph documents:
//! - methods with surrounding whitespace (any Unicode whitespace, the no-break space included) and
//!   in any case: `" patch\u{a0}"` is `PATCH`;
//! - URLs with any `scheme:` prefix, with or without `//host`, or none; whitespace and control
//!   characters anywhere are deleted; `\` is `/`; percent-decoding repeats until nothing changes;
//!   empty and `.` segments vanish, `..` pops; segments compare case-insensitively;
//!   `microsoft.graph.` prefixes are dropped; `partners('k')` / `partners(tenantId='k')` are keys;
//!   any number of leading version segments is skipped;
//! - `$batch` with any method spelling, `requests` in any case, sub-request bodies as JSON or as
//!   base64 of JSON, nested batches run recursively;
//! - every write under a partner (`m365Capabilities`, `serviceProviderConstraints`, property
//!   paths) is applied.
//!
//! Every write it applies under `/policies` is logged in [`Lenient::applied`], so a test can
//! demand a record in syncgate's audit log for each one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use syncgate::body::{self, Body};
use syncgate::server::{ConnInfo, DropConnection, Handler, ServeOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One write the lenient server applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The method as the server understood it (upper case, trimmed).
    pub method: String,
    /// The partner the write was about (lower-case GUID), when there was one.
    pub partner: Option<String>,
    /// The normalised path (segments after the version), e.g. `policies/crosstenantaccesspolicy/...`.
    pub path: String,
    /// Whether it arrived inside a `$batch` (how deep).
    pub batch_depth: usize,
}

#[derive(Default)]
struct State {
    /// Partner configurations by tenant id.
    partners: BTreeMap<String, Value>,
    /// Sync policies by tenant id.
    sync: BTreeMap<String, Value>,
    applied: Vec<Applied>,
}

/// The running lenient server; stopped when dropped.
pub struct Lenient {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for Lenient {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Lenient {
    /// Every write applied so far.
    pub fn applied(&self) -> Vec<Applied> {
        self.state.lock().unwrap().applied.clone()
    }

    /// Add a partner directly (test setup).
    pub fn seed_partner(&self, tenant: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .partners
            .insert(tenant.to_owned(), json!({ "tenantId": tenant }));
    }

    /// The sync policy the server holds for `tenant`.
    pub fn sync_policy(&self, tenant: &str) -> Option<Value> {
        self.state.lock().unwrap().sync.get(tenant).cloned()
    }
}

/// Start a lenient server on 127.0.0.1:0.
pub async fn spawn_lenient() -> Lenient {
    spawn_lenient_with(ServeOptions::default()).await
}

/// [`spawn_lenient`] served with `options` (TLS, for egress mode's tests); `base` stays
/// `http://…` and names the address.
pub async fn spawn_lenient_with(options: ServeOptions) -> Lenient {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let state = Arc::new(Mutex::new(State::default()));
    let handler = Arc::new(LenientHandler {
        state: state.clone(),
    });
    tokio::spawn(syncgate::server::serve(
        listener,
        handler,
        options,
        stop.clone(),
    ));
    Lenient {
        base: format!("http://{addr}"),
        state,
        stop,
    }
}

struct LenientHandler {
    state: Arc<Mutex<State>>,
}

impl Handler for LenientHandler {
    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> Result<Response<Body>, DropConnection> {
        let method = req.method().as_str().to_owned();
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body = serde_json::from_slice::<Value>(&bytes).ok();
        let (status, body) = {
            let mut state = self.state.lock().unwrap();
            run(&mut state, &method, &target, body, 0)
        };
        let mut resp = Response::new(match &body {
            Some(v) => body::full(v.to_string()),
            None => body::empty(),
        });
        *resp.status_mut() = status;
        if body.is_some() {
            resp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
        }
        Ok(resp)
    }
}

/// The method as a lax server reads it.
fn lenient_method(method: &str) -> String {
    method.trim_matches(char::is_whitespace).to_uppercase()
}

/// The URL as a lax server reads it: the segments after any scheme, host and version prefixes,
/// lower-cased, with keys in their own segment. The query is returned apart.
fn lenient_url(url: &str) -> (Vec<String>, String) {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    let (path, query) = match cleaned.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (cleaned, String::new()),
    };
    // `scheme:` before the first slash, then an optional `//host`.
    let mut path = path.as_str();
    if let Some(colon) = path.find(':')
        && !path[..colon].contains('/')
    {
        path = &path[colon + 1..];
        if let Some(rest) = path.strip_prefix("//") {
            path = rest.find('/').map_or("", |slash| &rest[slash..]);
        }
    }
    let mut decoded = path.to_owned();
    for _ in 0..8 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let decoded: String = decoded
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    let mut segments: Vec<String> = Vec::new();
    for raw in decoded.split('/') {
        let lower = raw.to_lowercase();
        let lower = lower.strip_prefix("microsoft.graph.").unwrap_or(&lower);
        match lower {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                // `partners('k')`, `partners(tenantid='k')`, `partners(k)`
                if let Some((name, args)) = lower.split_once('(') {
                    let key = args
                        .trim_end_matches(')')
                        .rsplit('=')
                        .next()
                        .unwrap_or_default()
                        .trim_matches('\'');
                    segments.push(name.to_owned());
                    segments.push(key.to_owned());
                } else {
                    segments.push(lower.to_owned());
                }
            }
        }
    }
    while segments.first().is_some_and(|s| s == "v1.0" || s == "beta") {
        segments.remove(0);
    }
    (segments, query)
}

fn not_found() -> (StatusCode, Option<Value>) {
    (
        StatusCode::NOT_FOUND,
        Some(json!({"error": {"code": "Request_ResourceNotFound", "message": "not found"}})),
    )
}

/// Answer one request (top-level or inside a batch).
fn run(
    state: &mut State,
    method: &str,
    url: &str,
    body: Option<Value>,
    depth: usize,
) -> (StatusCode, Option<Value>) {
    let method = lenient_method(method);
    let (segments, query) = lenient_url(url);
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let read = method == "GET" || method == "HEAD";
    if let ["$batch"] = segs.as_slice() {
        return batch(state, body, depth);
    }
    let apply = |state: &mut State, partner: Option<&str>| {
        state.applied.push(Applied {
            method: method.clone(),
            partner: partner.map(str::to_owned),
            path: segments.join("/"),
            batch_depth: depth,
        });
    };
    match segs.as_slice() {
        ["policies", "crosstenantaccesspolicy", "partners"] if read => {
            let value: Vec<Value> = state.partners.values().cloned().collect();
            (StatusCode::OK, Some(json!({ "value": value })))
        }
        ["policies", "crosstenantaccesspolicy", "partners"] => {
            let tenant = body
                .as_ref()
                .and_then(|b| b.get("tenantId"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            state
                .partners
                .insert(tenant.clone(), body.clone().unwrap_or(Value::Null));
            apply(state, Some(&tenant));
            (StatusCode::CREATED, body)
        }
        ["policies", "crosstenantaccesspolicy", "partners", k] => {
            let k = k.to_string();
            if read {
                let Some(mut partner) = state.partners.get(&k).cloned() else {
                    return not_found();
                };
                if query.to_lowercase().contains("identitysynchronization")
                    && let Some(obj) = partner.as_object_mut()
                {
                    obj.insert(
                        "identitySynchronization".into(),
                        state.sync.get(&k).cloned().unwrap_or(Value::Null),
                    );
                }
                return (StatusCode::OK, Some(partner));
            }
            if method == "DELETE" {
                state.partners.remove(&k);
            } else if let (Some(Value::Object(patch)), Some(Value::Object(doc))) =
                (body, state.partners.get_mut(&k))
            {
                doc.extend(patch);
            }
            apply(state, Some(&k));
            (StatusCode::NO_CONTENT, None)
        }
        [
            "policies",
            "crosstenantaccesspolicy",
            "partners",
            k,
            "identitysynchronization",
        ] => {
            let k = k.to_string();
            if read {
                return match state.sync.get(&k) {
                    Some(v) => (StatusCode::OK, Some(v.clone())),
                    None => not_found(),
                };
            }
            match method.as_str() {
                "DELETE" => {
                    state.sync.remove(&k);
                }
                _ => {
                    let entry = state
                        .sync
                        .entry(k.clone())
                        .or_insert_with(|| json!({ "tenantId": k }));
                    if let (Some(Value::Object(patch)), Value::Object(doc)) = (body, entry) {
                        doc.extend(patch);
                    }
                }
            }
            apply(state, Some(&k));
            (StatusCode::NO_CONTENT, None)
        }
        ["policies", "crosstenantaccesspolicy", "partners", k, ..] => {
            if read {
                return (StatusCode::OK, Some(json!({})));
            }
            let k = k.to_string();
            apply(state, Some(&k));
            (StatusCode::NO_CONTENT, None)
        }
        ["policies", ..] if !read => {
            apply(state, None);
            (StatusCode::NO_CONTENT, None)
        }
        _ if read => (StatusCode::OK, Some(json!({ "value": [] }))),
        _ => (StatusCode::NO_CONTENT, None),
    }
}

/// A lenient `$batch`: `requests` in any case, every member name case-insensitive, nested
/// batches run recursively, base64 bodies decoded.
fn batch(state: &mut State, body: Option<Value>, depth: usize) -> (StatusCode, Option<Value>) {
    let Some(Value::Object(envelope)) = body else {
        return (StatusCode::BAD_REQUEST, None);
    };
    let Some(Value::Array(requests)) = member(&envelope, "requests") else {
        return (StatusCode::BAD_REQUEST, None);
    };
    let mut responses = Vec::new();
    for request in requests {
        let Value::Object(request) = request else {
            continue;
        };
        let text = |name: &str| {
            member(request, name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let id = member(request, "id").cloned().unwrap_or(Value::Null);
        let method = text("method").unwrap_or_default();
        let url = text("url").unwrap_or_default();
        let body = match member(request, "body").cloned() {
            Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
            other => other,
        };
        let (status, body) = run(state, &method, &url, body, depth + 1);
        responses.push(json!({ "id": id, "status": status.as_u16(), "body": body }));
    }
    (StatusCode::OK, Some(json!({ "responses": responses })))
}

/// A member by case-insensitive name (the last one wins, as many lax readers do).
fn member<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lenient_reader_sees_through_every_spelling() {
        let k = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
        let want: Vec<String> = [
            "policies",
            "crosstenantaccesspolicy",
            "partners",
            k,
            "identitysynchronization",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for url in [
            format!(
                "x:/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"
            ),
            format!(
                "https:v1.0/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"
            ),
            format!("https:/policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            format!(" /policies/crossTenantAccessPolicy/partners/{k}/identitySynchronization"),
            format!(
                "/v1.\t0/poli\tcies/crossTenantAccessPolicy/partners('{k}')/identitySynchronization"
            ),
            format!(
                "https://graph.microsoft.com/v1.0/policies/crossTenantAccessPolicy/partners/{k}/identity%2553ynchronization"
            ),
        ] {
            assert_eq!(lenient_url(&url).0, want, "{url:?}");
        }
        assert_eq!(lenient_method(" patch\u{a0}"), "PATCH");
    }
}
