//! Forward only what was checked: a governed write and a `$batch` reach the upstream rebuilt from
//! what syncgate parsed (re-serialised JSON, the URL it classified, allow-listed headers), never as
//! the client's bytes. A tap between the proxy and the emulator records the exact bytes and
//! headers the upstream received.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::governed::{PARTNER, operation, seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        names
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }
}

/// A recording hop in front of the emulator: every request is logged with its raw body and
/// headers, then relayed.
struct Tap {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Tap {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests received for `target` with `method`.
    fn find(&self, method: &Method, target: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.target == target)
            .collect()
    }
}

async fn spawn_tap(upstream: &str) -> Tap {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let upstream = upstream.to_owned();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (client, upstream, log) = (client.clone(), upstream.clone(), log.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let target = parts.uri.path_and_query().unwrap().as_str().to_owned();
                    log.lock().unwrap().push(Seen {
                        method: parts.method.clone(),
                        target: target.clone(),
                        headers: parts.headers.clone(),
                        body: body.clone(),
                    });
                    let mut relay = Request::builder()
                        .method(parts.method)
                        .uri(format!("{upstream}{target}"))
                        .body(Full::new(body))
                        .unwrap();
                    *relay.headers_mut() = parts.headers;
                    relay.headers_mut().remove("host");
                    let resp = client.request(relay).await.unwrap();
                    let (parts, body) = resp.into_parts();
                    let body = body.collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::from_parts(parts, Full::new(body)))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Tap { base, seen }
}

/// An emulator holding [`PARTNER`], a tap in front of it, and a proxy in front of the tap.
async fn tapped_proxy() -> (TestEmulator, Tap, TestProxy) {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let tap = spawn_tap(&emulator.base).await;
    let proxy = spawn_proxy(&tap.base).await;
    (emulator, tap, proxy)
}

/// The sync policy of [`PARTNER`] on Graph's documented path, as a rebuilt write is sent.
fn documented_sync_path() -> String {
    format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization")
}

/// Create [`PARTNER`]'s sync policy through the proxy (setup).
async fn create_sync_policy(client: &TestClient, proxy: &TestProxy) {
    let created = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "A"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT, "{:?}", created.body);
}

/// The headers a rebuilt request may carry upstream when the client sent all of these.
const REBUILT_HEADERS: &[&str] = &[
    "authorization",
    "client-request-id",
    "content-length",
    "content-type",
    "host",
    "prefer",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// Client headers a lenient upstream might act on, which syncgate never read.
fn hostile_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json; charset=utf-8"),
        ("x-evil", "1"),
        ("cookie", "session=abc"),
        ("accept-encoding", "gzip"),
        ("x-ms-foo", "bar"),
        ("prefer", "return=representation"),
        ("client-request-id", "5d2c8e9a-0000-4000-8000-00000000abcd"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
}

#[tokio::test]
async fn a_governed_write_reaches_the_upstream_as_the_recorded_json_with_allowed_headers_only() {
    let (_emulator, tap, proxy) = tapped_proxy().await;
    let client = TestClient::new();
    // Odd but valid JSON: whitespace everywhere, an escaped name, members in the client's order.
    let sent = "\n{ \"displayName\"\t:  \"Fab\\u0072ikam\" ,\r\n \"userSyncInbound\" : { \"isSyncAllowed\" : true } }  \n";
    let resp = client
        .send_raw(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            hostile_headers(),
            Bytes::from_static(sent.as_bytes()),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);

    let path = documented_sync_path();
    let writes = tap.find(&Method::PUT, &path);
    assert_eq!(writes.len(), 1, "{:?}", tap.seen());
    let write = &writes[0];
    let canonical = br#"{"displayName":"Fabrikam","userSyncInbound":{"isSyncAllowed":true}}"#;
    assert_eq!(
        std::str::from_utf8(&write.body).unwrap(),
        std::str::from_utf8(canonical).unwrap(),
        "the upstream got the parsed body re-serialised, not the client's bytes"
    );
    assert_eq!(write.header_names(), REBUILT_HEADERS);
    assert_eq!(write.all("content-type"), ["application/json"]);
    assert_eq!(
        write.all("content-length"),
        [canonical.len().to_string().as_str()]
    );
    assert_eq!(write.all("authorization").len(), 1);
    assert_eq!(write.all("prefer"), ["return=representation"]);

    // What was recorded is what was sent.
    let audit_id = resp.header("x-syncgate-audit-id").unwrap();
    let events = operation(&proxy.db_path, audit_id);
    let received = events.iter().find(|e| e["kind"] == "received").unwrap();
    assert_eq!(
        received["request_body"],
        serde_json::from_slice::<Value>(&write.body).unwrap()
    );
}

#[tokio::test]
async fn a_governed_patch_on_an_alias_path_goes_up_rebuilt_on_the_documented_path() {
    let (_emulator, tap, proxy) = tapped_proxy().await;
    let client = TestClient::new();
    create_sync_policy(&client, &proxy).await;
    let alias = format!(
        "{}/v1.0/policies/crosstenantaccesspolicy/partners('{}')/identitysynchronization",
        proxy.url,
        PARTNER.to_uppercase()
    );
    let resp = client
        .send_raw(
            Method::PATCH,
            &alias,
            hostile_headers(),
            Bytes::from_static(b"{ \"displayName\" : \"B\" }"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let path = documented_sync_path();
    let patches = tap.find(&Method::PATCH, &path);
    assert_eq!(patches.len(), 1, "{:?}", tap.seen());
    assert_eq!(&patches[0].body[..], br#"{"displayName":"B"}"#);
    assert_eq!(patches[0].header_names(), REBUILT_HEADERS);
}

#[tokio::test]
async fn a_governed_delete_goes_up_without_a_body_or_the_clients_content_headers() {
    let (_emulator, tap, proxy) = tapped_proxy().await;
    let client = TestClient::new();
    create_sync_policy(&client, &proxy).await;
    let resp = client
        .send_raw(
            Method::DELETE,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            hostile_headers(),
            Bytes::from_static(b"  "),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let path = documented_sync_path();
    let deletes = tap.find(&Method::DELETE, &path);
    assert_eq!(deletes.len(), 1, "{:?}", tap.seen());
    assert!(deletes[0].body.is_empty());
    assert!(deletes[0].headers.get("content-type").is_none());
    assert!(deletes[0].headers.get("x-evil").is_none());
}

#[tokio::test]
async fn a_batch_without_governed_requests_reaches_the_upstream_as_a_rebuilt_envelope() {
    let (_emulator, tap, proxy) = tapped_proxy().await;
    let sent = format!(
        r#"  {{ "requests" : [
            {{ "url" : "policies/crossTenantAccessPolicy/partners?$select=tenantId" , "method" : "GET" , "id" : 1 ,
               "headers" : {{ "X-Evil" : "1", "ConsistencyLevel" : "eventual" }} }} ,
            {{ "id" : "b", "method" : "GET", "dependsOn" : [ 1 ],
               "url" : "/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization" }}
        ] }}  "#
    );
    let resp = TestClient::new()
        .send_raw(
            Method::POST,
            &format!("{}/beta/$batch", proxy.url),
            hostile_headers(),
            Bytes::from(sent),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(resp.json()["responses"].as_array().unwrap().len(), 2);

    let batches = tap.find(&Method::POST, "/beta/$batch");
    assert_eq!(batches.len(), 1, "{:?}", tap.seen());
    let expected = format!(
        concat!(
            r#"{{"requests":["#,
            r#"{{"id":"1","method":"GET","url":"/policies/crossTenantAccessPolicy/partners?$select=tenantId","headers":{{"ConsistencyLevel":"eventual"}}}},"#,
            r#"{{"id":"b","method":"GET","url":"/policies/crossTenantAccessPolicy/partners/{}/identitySynchronization","dependsOn":["1"]}}"#,
            r#"]}}"#
        ),
        PARTNER
    );
    assert_eq!(std::str::from_utf8(&batches[0].body).unwrap(), expected);
    assert_eq!(batches[0].header_names(), REBUILT_HEADERS);
    assert_eq!(batches[0].all("content-type"), ["application/json"]);
    assert_eq!(
        batches[0].all("content-length"),
        [expected.len().to_string().as_str()]
    );
}

#[tokio::test]
async fn plain_requests_of_an_unbatched_batch_go_up_on_the_classified_url_with_allowed_headers() {
    let (_emulator, tap, proxy) = tapped_proxy().await;
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "policies/crossTenantAccessPolicy/partners",
         "headers": {"X-Evil": "1", "Prefer": "odata.maxpagesize=5"}},
        {"id": "2", "method": "PUT",
         "url": format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"),
         "headers": {"Content-Type": "application/json", "X-Evil": "1"},
         "body": {"displayName": "Batched"}}
    ]});
    let resp = TestClient::new()
        .send(
            Method::POST,
            &format!("{}/v1.0/$batch", proxy.url),
            Some(batch),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let responses = resp.json()["responses"].as_array().unwrap().clone();
    let plain = responses.iter().find(|r| r["id"] == "1").unwrap();
    assert_eq!(plain["status"], 200);
    // Sub-response headers are named as Graph names them (the JavaScript client needs this).
    assert_eq!(plain["headers"]["OData-Version"], "4.0", "{plain}");
    assert!(plain["headers"]["Content-Type"].is_string(), "{plain}");
    assert!(plain["headers"].get("content-type").is_none(), "{plain}");

    let gets = tap.find(
        &Method::GET,
        "/v1.0/policies/crossTenantAccessPolicy/partners",
    );
    assert_eq!(gets.len(), 1, "{:?}", tap.seen());
    assert!(gets[0].headers.get("x-evil").is_none());
    assert_eq!(gets[0].all("prefer"), ["odata.maxpagesize=5"]);
    let puts = tap.find(&Method::PUT, &documented_sync_path());
    assert_eq!(puts.len(), 1, "{:?}", tap.seen());
    assert_eq!(&puts[0].body[..], br#"{"displayName":"Batched"}"#);
    assert!(puts[0].headers.get("x-evil").is_none());
}

#[tokio::test]
async fn a_batch_over_the_batch_cap_is_refused_with_413_before_anything_goes_upstream() {
    let emulator = spawn_emulator().await;
    let tap = spawn_tap(&emulator.base).await;
    let mut raw = proxy_config(&tap.base);
    raw.audit.max_batch_body = "64KiB".into();
    let proxy = spawn_proxy_with(raw).await;
    // Valid JSON, just big: the cap applies to bytes, before parsing.
    let padding = " ".repeat(70 * 1024);
    let body = format!(r#"{{"requests":[{{"id":"1","method":"GET","url":"/me"}}]{padding}}}"#);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let resp = TestClient::new()
        .send_raw(
            Method::POST,
            &format!("{}/v1.0/$batch", proxy.url),
            headers,
            Bytes::from(body),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        resp.body
    );
    assert!(tap.seen().is_empty(), "{:?}", tap.seen());
}

/// Send raw bytes to `addr` and read until the peer closes or a response head and `min_body`
/// more bytes arrived.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the proxy answered");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&received);
        if text.contains("\r\n\r\n") && text.contains("\"error\"") && text.trim_end().ends_with('}')
        {
            break;
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_malformed_chunked_body_on_a_pass_through_request_is_the_clients_400_not_a_502() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let request = format!(
        "POST /v1.0/users HTTP/1.1\r\nHost: graph\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\n{{\"a\":\r\nzz\r\n",
        admin_token()
    );
    let answer = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "the client's broken body is its own fault: {answer}"
    );
    assert!(answer.contains(r#""code":"BadRequest""#), "{answer}");
    assert!(
        answer.contains("the request body could not be read"),
        "{answer}"
    );
}
