//! Pass-through: bodies and headers intact both ways, streaming, HTTP/2, TLS, failure mapping,
//! graceful shutdown, and the admin listener.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use serde_json::{Value, json};
use syncgate::body::{self, Body};

use crate::harness::*;
use crate::helpers::*;
use crate::pki::TestPki;

const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

fn echo_headers(resp: &TestResponse) -> Value {
    serde_json::from_str(resp.header("x-echo-headers").expect("x-echo-headers")).unwrap()
}

#[tokio::test]
async fn bodies_and_end_to_end_headers_pass_through_unchanged_both_ways() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    // Not valid JSON, not UTF-8: the proxy must not care.
    let payload = Bytes::from_static(b"\x00\xffbinary \r\n payload{\"a\":1}\x7f");
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-custom"),
    );
    headers.insert(
        "client-request-id",
        HeaderValue::from_static("c0ffee00-0000-4000-8000-000000000001"),
    );
    headers.insert("x-custom-header", HeaderValue::from_static("kept as sent"));
    headers.insert("connection", HeaderValue::from_static("x-hop-only"));
    headers.insert("x-hop-only", HeaderValue::from_static("dropped"));
    headers.insert(
        "proxy-authorization",
        HeaderValue::from_static("Basic c2VjcmV0"),
    );
    headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.9"));
    headers.insert("x-original-url", HeaderValue::from_static("/v1.0/users"));
    let resp = client
        .send_raw(
            Method::PUT,
            &format!("{}/_emulator/echo/some/path?q=1&x=%20y", proxy.url),
            headers,
            payload.clone(),
        )
        .await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.body, payload,
        "body must arrive byte-identical, both ways"
    );
    assert_eq!(resp.header("x-echo-method"), Some("PUT"));
    assert_eq!(
        resp.header("x-echo-uri"),
        Some("/_emulator/echo/some/path?q=1&x=%20y")
    );
    assert_eq!(resp.header("content-type"), Some("application/x-custom"));
    let seen = echo_headers(&resp);
    let token = client.token.clone().unwrap();
    assert_eq!(seen["authorization"], json!([format!("Bearer {token}")]));
    assert_eq!(
        seen["client-request-id"],
        json!(["c0ffee00-0000-4000-8000-000000000001"])
    );
    assert_eq!(seen["x-custom-header"], json!(["kept as sent"]));
    assert_eq!(seen["x-forwarded-for"], json!(["192.0.2.9, 127.0.0.1"]));
    assert_eq!(seen["x-forwarded-proto"], json!(["http"]));
    assert_eq!(
        seen["host"],
        json!([emulator.addr.to_string()]),
        "Host names the upstream"
    );
    assert_eq!(seen["content-length"], json!([payload.len().to_string()]));
    for hop in [
        "connection",
        "x-hop-only",
        "proxy-authorization",
        "te",
        "keep-alive",
    ] {
        assert!(
            seen.get(hop).is_none(),
            "{hop} must not be forwarded: {seen}"
        );
    }
}

#[tokio::test]
async fn graph_responses_reach_the_client_with_graphs_headers_and_body() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    let url = format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/partners",
        proxy.url
    );
    let created = client
        .send(Method::POST, &url, Some(json!({ "tenantId": PARTNER })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.json()["tenantId"], PARTNER);
    for header in [
        "request-id",
        "client-request-id",
        "x-ms-ags-diagnostic",
        "odata-version",
    ] {
        assert!(
            created.header(header).is_some(),
            "{header} missing: {:?}",
            created.headers
        );
    }
    assert!(
        created
            .header("content-type")
            .unwrap()
            .starts_with("application/json;odata.metadata=minimal")
    );

    // The same read straight from the emulator and through the proxy gives the same document.
    let direct = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}",
            emulator.base
        ))
        .await;
    let proxied = client.get(&format!("{url}/{PARTNER}")).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(proxied.body, direct.body);
    let state = client
        .get(&format!("{}/_emulator/state", emulator.base))
        .await
        .json();
    assert!(state["partners"][PARTNER].is_object(), "{state}");

    // Graph's own errors pass through untouched, status and body.
    let missing = client
        .get(&format!("{url}/00000000-0000-0000-0000-000000000001"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "Request_ResourceNotFound");
}

#[tokio::test]
async fn throttling_responses_keep_status_retry_after_and_body() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    let fault = client
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(json!({"path": "/v1.0/policies", "status": 429, "retryAfter": 7, "count": 1})),
        )
        .await;
    assert_eq!(fault.status, StatusCode::CREATED);
    let url = format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/partners",
        proxy.url
    );
    let throttled = client.get(&url).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("7"));
    assert_eq!(throttled.error_code(), "TooManyRequests");
    assert_eq!(
        client.get(&url).await.status,
        StatusCode::OK,
        "the fault was for one request"
    );
}

/// 50 MiB up and down through a proxy running as its own process, whose peak memory is read
/// from /proc: a proxy that buffered the body would grow by at least its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_stream_through_with_bounded_memory() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let emulator = spawn_emulator().await;
    let proxy = spawn_child_proxy(&emulator.base, &[]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Body>();
    // Warm up: one small request so the baseline includes the runtime and pools.
    let warm = Request::get(format!("{}/_emulator/bytes?size=1024", proxy.url))
        .body(body::empty())
        .unwrap();
    request(&client, warm).await.unwrap();
    let baseline = proxy.memory_kib("VmRSS");

    let upload = Request::post(format!("{}/_emulator/echo", proxy.url))
        .header("content-type", "application/octet-stream")
        .body(body::stream(PatternBody::new(SIZE)))
        .unwrap();
    let resp = client.request(upload).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (len, sha) = hash_body(resp.into_body()).await;
    assert_eq!(len, SIZE);
    assert_eq!(
        sha,
        pattern_sha256(SIZE),
        "echoed body differs from what was sent"
    );

    let download = Request::get(format!("{}/_emulator/bytes?size={SIZE}", proxy.url))
        .body(body::empty())
        .unwrap();
    let resp = client.request(download).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (len, sha) = hash_body(resp.into_body()).await;
    assert_eq!(len, SIZE);
    assert_eq!(sha, pattern_sha256(SIZE));

    let peak = proxy.memory_kib("VmHWM");
    eprintln!(
        "proxy memory: baseline RSS {baseline} KiB, peak RSS {peak} KiB after 2 x 50 MiB \
         (growth {} KiB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak < baseline + 16 * 1024,
        "peak RSS {peak} KiB grew more than 16 MiB over the {baseline} KiB baseline"
    );
}

/// Open `count` keep-alive connections to `addr`, each after one pass-through request read to
/// its end, and keep them open.
fn idle_after_one_request(addr: std::net::SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    (0..count)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /_emulator/bytes?size=512 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then the 512 bytes its Content-Length announces.
            while !got.windows(4).any(|w| w == b"\r\n\r\n")
                || got.len() < got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + 512
            {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "closed mid-response");
                got.extend_from_slice(&chunk[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200"));
            stream
        })
        .collect()
}

/// An idle keep-alive connection costs the proxy a few KiB, not the size of the governed
/// lifecycle: hyper keeps one slot per connection as large as the handler's future, and before
/// the governed path was boxed (issue 13) that slot was ~64 KiB, ~90 KiB of RSS per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_costs_a_few_kib() {
    const COUNT: usize = 400;
    let emulator = spawn_emulator().await;
    let proxy = spawn_child_proxy(&emulator.base, &[]);
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();
    // Warm up (pools, allocator arenas), then measure the growth for COUNT more connections.
    let warm = tokio::task::spawn_blocking(move || idle_after_one_request(addr, 50))
        .await
        .unwrap();
    let before = proxy.memory_kib("VmRSS");
    let open = tokio::task::spawn_blocking(move || idle_after_one_request(addr, COUNT))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = proxy.memory_kib("VmRSS");
    let per_connection = after.saturating_sub(before) / COUNT as u64;
    eprintln!(
        "idle connections: {before} KiB before, {after} KiB with {COUNT} more: {per_connection} KiB each"
    );
    // ~12 KiB, in this debug build as in a release one (11.5 before the proxy served CONNECT
    // for egress mode; hyper-util's way to serve upgrades measured 24, see `Builders` in
    // src/server.rs). 23 when hyper-util's auto builder read
    // the first bytes of every connection to tell HTTP/1.1 from HTTP/2, which left hyper's read
    // buffer doubled to 16 KiB (see `Speaks` in src/server.rs); ~97 with the governed future
    // inline.
    assert!(
        per_connection < 16,
        "{per_connection} KiB of RSS per idle connection ({before} KiB -> {after} KiB)"
    );
    drop((warm, open));
}

/// jemalloc reads the options src/main.rs gives it (a misspelt symbol would leave it on its
/// defaults without a word): its one background thread, which gives freed memory back within
/// about a second, runs in a serving syncgate.
#[tokio::test]
async fn the_allocator_runs_with_its_options() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_child_proxy(&emulator.base, &[]);
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    let background = threads
        .iter()
        .filter(|n| n.starts_with("jemalloc_bg"))
        .count();
    assert_eq!(background, 1, "{threads:?}");
}

/// A plain connection whose first bytes are only part of the HTTP/2 preface is not decided by
/// what was peeked: it waits for the rest, and is served as HTTP/2.
#[tokio::test]
async fn an_http2_preface_sent_in_pieces_is_still_http2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("the server's SETTINGS in time")
        .unwrap();
    assert_eq!(head[3], 4, "the server's first frame is SETTINGS: {head:?}");
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = h2c_client();
    let req = Request::get(format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/partners",
        proxy.url
    ))
    .header("authorization", format!("Bearer {}", admin_token()))
    .body(body::empty())
    .unwrap();
    let (resp, version) = request(&client, req).await.unwrap();
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.body());
    // The HTTP/1.1-only upstream got an HTTP/1.1 request with a Host header.
    let req = Request::post(format!("{}/_emulator/echo", proxy.url))
        .body(body::full("h2 body"))
        .unwrap();
    let (resp, _) = request(&client, req).await.unwrap();
    assert_eq!(resp.body().as_ref(), b"h2 body");
    let seen: Value =
        serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
    assert_eq!(seen["host"], json!([emulator.addr.to_string()]));
}

fn tls_proxy_config(
    upstream: &str,
    pki: &TestPki,
    client_auth: Option<&str>,
) -> syncgate::config::RawConfig {
    let mut raw = proxy_config(upstream);
    raw.proxy.tls = Some(syncgate::config::RawListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: client_auth.map(|_| pki.ca_cert.clone()),
        client_auth: match client_auth {
            Some("required") => syncgate::config::ClientAuthMode::Required,
            _ => syncgate::config::ClientAuthMode::Optional,
        },
    });
    raw
}

#[tokio::test]
async fn tls_clients_negotiate_http2_or_http1_by_alpn() {
    let pki = TestPki::generate();
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy_with(tls_proxy_config(&emulator.base, &pki, None)).await;
    assert!(proxy.url.starts_with("https://"));
    let url = format!("{}/_emulator/echo", proxy.url);

    let (resp, version) = request(
        &tls_client(&pki, false),
        Request::post(&url).body(body::full("over h2")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(resp.body().as_ref(), b"over h2");
    let seen: Value =
        serde_json::from_str(resp.headers()["x-echo-headers"].to_str().unwrap()).unwrap();
    assert_eq!(seen["x-forwarded-proto"], json!(["https"]));

    // An HTTP/1.1-only TLS client.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(syncgate::tls::load_certs(&pki.ca_cert).unwrap().remove(0))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(syncgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let h1 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Body>(https);
    let (resp, version) = request(
        &h1,
        Request::post(&url).body(body::full("over h1")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(resp.body().as_ref(), b"over h1");
}

#[tokio::test]
async fn required_client_certificates_are_enforced() {
    let pki = TestPki::generate();
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy_with(tls_proxy_config(&emulator.base, &pki, Some("required"))).await;
    let url = format!("{}/_emulator/echo", proxy.url);

    let refused = request(
        &tls_client(&pki, false),
        Request::get(&url).body(body::empty()).unwrap(),
    )
    .await;
    assert!(
        refused.is_err(),
        "a client without a certificate must be refused"
    );
    let (resp, _) = request(
        &tls_client(&pki, true),
        Request::get(&url).body(body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn optional_client_certificates_let_clients_without_one_in() {
    let pki = TestPki::generate();
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy_with(tls_proxy_config(&emulator.base, &pki, Some("optional"))).await;
    let url = format!("{}/_emulator/echo", proxy.url);
    for with_cert in [false, true] {
        let (resp, _) = request(
            &tls_client(&pki, with_cert),
            Request::get(&url).body(body::empty()).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

/// The emulator serves TLS with a certificate from a private CA; the proxy reaches it only when
/// `upstream.extra_ca` trusts that CA, and then speaks HTTP/2 to it (ALPN).
#[tokio::test]
async fn tls_upstream_is_trusted_through_the_extra_ca() {
    let pki = TestPki::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let options = syncgate::server::ServeOptions {
        tls: Some(syncgate::tls::server_config(&pki.server_cert, &pki.server_key, None).unwrap()),
        ..Default::default()
    };
    tokio::spawn(syncgate::emulator::run(listener, options, stop.clone()));
    let upstream = format!("https://{addr}");
    let client = TestClient::new();

    let untrusted = spawn_proxy(&upstream).await;
    let resp = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            untrusted.url
        ))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{:?}", resp.body);
    assert_eq!(resp.error_code(), "SyncgateUpstreamUnreachable");

    let mut raw = proxy_config(&upstream);
    raw.upstream.extra_ca = Some(pki.ca_cert.clone());
    let trusted = spawn_proxy_with(raw).await;
    let resp = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            trusted.url
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let resp = client
        .send_raw(
            Method::POST,
            &format!("{}/_emulator/echo", trusted.url),
            HeaderMap::new(),
            Bytes::from_static(b"tls up"),
        )
        .await;
    assert_eq!(resp.body.as_ref(), b"tls up");
    assert_eq!(
        resp.header("x-echo-version"),
        Some("HTTP/2.0"),
        "the upstream hop should use h2"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_a_graph_shaped_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = spawn_proxy(&format!("http://{addr}")).await;
    let mut headers = HeaderMap::new();
    headers.insert("client-request-id", HeaderValue::from_static("my-id"));
    let resp = TestClient::new()
        .send_raw(
            Method::GET,
            &format!("{}/v1.0/me", proxy.url),
            headers,
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.error_code(), "SyncgateUpstreamUnreachable");
    let v = resp.json();
    assert_eq!(v["error"]["innerError"]["client-request-id"], "my-id");
    assert_eq!(resp.header("client-request-id"), Some("my-id"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("refused"),
        "{v}"
    );
}

#[tokio::test]
async fn slow_upstream_is_a_graph_shaped_504() {
    let emulator = spawn_emulator().await;
    let mut raw = proxy_config(&emulator.base);
    raw.upstream.timeout = "300ms".into();
    let proxy = spawn_proxy_with(raw).await;
    let client = TestClient::new();
    client
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(json!({"delayMs": 5000, "count": 1})),
        )
        .await;
    let resp = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            proxy.url
        ))
        .await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.error_code(), "SyncgateUpstreamTimeout");
}

#[tokio::test]
async fn a_connection_the_upstream_drops_is_a_graph_shaped_502() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    client
        .send(
            Method::POST,
            &format!("{}/_emulator/faults", emulator.base),
            Some(json!({"drop": true, "count": 1})),
        )
        .await;
    let resp = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            proxy.url
        ))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.error_code(), "SyncgateUpstreamFailed");
}

#[tokio::test]
async fn connect_tunnels_are_refused() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            b"CONNECT graph.microsoft.com:443 HTTP/1.1\r\nHost: graph.microsoft.com:443\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
}

/// Starts a request whose body the test feeds by hand, so the test knows the request is in
/// flight (the echoed head has arrived) before it stops the proxy; then finishes the body.
async fn in_flight_echo(
    url: &str,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    http::Response<hyper::body::Incoming>,
) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"first half, ")).await.unwrap();
    let req = Request::post(format!("{url}/_emulator/echo"))
        .body(body::stream(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    (tx, resp)
}

/// With several workers, each drains its own connections at the same time: a shutdown takes one
/// grace period, not one per worker (they were once told one after the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_drain_side_by_side_within_one_grace_period() {
    const GRACE: Duration = Duration::from_secs(2);
    let emulator = spawn_emulator().await;
    let mut raw = proxy_config(&emulator.base);
    raw.proxy.workers = Some(2);
    raw.proxy.shutdown_grace = "2s".into();
    let mut proxy = spawn_proxy_with(raw).await;
    // Two connections (one per worker: each goes to the least loaded), each with a request that
    // never finishes.
    let stuck = [
        in_flight_echo(&proxy.url).await,
        in_flight_echo(&proxy.url).await,
    ];
    let started = std::time::Instant::now();
    proxy.stop.cancel();
    tokio::time::timeout(GRACE * 3, proxy.take_running().stopped())
        .await
        .expect("the proxy stopped");
    let took = started.elapsed();
    assert!(took >= GRACE, "cut before the grace period: {took:?}");
    assert!(
        took < GRACE * 7 / 4,
        "the workers drained one after the other: {took:?}"
    );
    drop(stuck);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let emulator = spawn_emulator().await;
    let mut proxy = spawn_proxy(&emulator.base).await;
    let (tx, resp) = in_flight_echo(&proxy.url).await;

    proxy.stop.cancel();
    let running = proxy.take_running();
    let stopped = tokio::spawn(running.stopped());
    // Draining: no new connections, and readiness says so.
    let ready = TestClient::new()
        .get(&format!("http://{}/readyz", proxy.admin_addr))
        .await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refuses_connections(proxy.addr).await);

    tx.send(Bytes::from_static(b"second half")).await.unwrap();
    drop(tx);
    use http_body_util::BodyExt;
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.as_ref(), b"first half, second half");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let emulator = spawn_emulator().await;
    let mut proxy = spawn_child_proxy(&emulator.base, &[]);
    let (tx, resp) = in_flight_echo(&proxy.url).await;
    proxy.signal("TERM");
    tx.send(Bytes::from_static(b"second half")).await.unwrap();
    drop(tx);
    use http_body_util::BodyExt;
    let echoed = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.as_ref(), b"first half, second half");
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.child.wait().unwrap();
        (status, proxy.stderr())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit {:?}; stderr:\n{}",
        status.0,
        status.1
    );
}

#[tokio::test]
async fn admin_listener_reports_health_and_readiness() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::without_token();
    let admin = format!("http://{}", proxy.admin_addr);
    let health = client.get(&format!("{admin}/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let ready = client.get(&format!("{admin}/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(
        client.get(&format!("{admin}/nope")).await.status,
        StatusCode::NOT_FOUND
    );
    // The admin endpoints are not on the proxy port: there they go to the upstream.
    let via_proxy = client.get(&format!("{}/healthz", proxy.url)).await;
    assert_ne!(via_proxy.body, health.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_never_reach_the_logs_even_at_trace_level() {
    let emulator = spawn_emulator().await;
    let token = syncgate::token::unsigned_jwt(
        &json!({"oid": "secret-owner", "scp": "Policy.ReadWrite.CrossTenantAccess"}),
    );
    let proxy = spawn_child_proxy_env(
        &emulator.base,
        &["--log-format", "json"],
        &[("RUST_LOG", "trace")],
    );
    let client = TestClient::with_token(token.clone());
    let url = format!(
        "{}/v1.0/policies/crossTenantAccessPolicy/partners",
        proxy.url
    );
    assert_eq!(client.get(&url).await.status, StatusCode::OK);
    let created = client
        .send(Method::POST, &url, Some(json!({"tenantId": PARTNER})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    // Over HTTP/2 too, whose header codec logs at trace level.
    let req = Request::get(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(body::empty())
        .unwrap();
    let (resp, _) = request(&h2c_client(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop(client);
    proxy.signal("TERM");
    let logs = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        proxy.child.wait().unwrap();
        proxy.stderr()
    })
    .await
    .unwrap();
    assert!(
        logs.contains("answered"),
        "the proxy logged its requests: {logs}"
    );
    let signature_free = token.rsplit_once('.').unwrap().0;
    for needle in [
        token.as_str(),
        signature_free,
        token.split('.').nth(1).unwrap(),
    ] {
        assert!(!logs.contains(needle), "a token part appears in the logs");
    }
}
