//! Issue 14, first step: egress mode's `CONNECT`: proxy authentication, the target read
//! strictly, Graph hosts and IP literals never tunnelled, other hosts tunnelled only when
//! allowed, and a tunnel that carries bytes only after a ClientHello naming its own host.
//!
//! The "other host" is a TLS echo server on 127.0.0.2, reached under the name
//! `login.microsoftonline.com` through `egress.resolve`; clients speak raw HTTP/1.1 `CONNECT`
//! and then TLS (rustls) over the same socket, as an `HTTPS_PROXY` client does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use syncgate::config::RawConfig;
use syncgate::config::egress::{OtherHosts, RawEgress, RawProxyUser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::{proxy_config, spawn_proxy_with};
use crate::pki::TestPki;

const TOKEN_HOST: &str = "login.microsoftonline.com";

/// A TLS server that echoes whatever it receives, for the names it has a certificate for.
async fn echo_server(pki: &TestPki, bind: &str) -> SocketAddr {
    let (cert, key) = pki.issue_server("echo", &[TOKEN_HOST, "graph.microsoft.com"]);
    let config = syncgate::tls::server_config(&cert, &key, None).unwrap();
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A plain TCP server that records whether anything ever connected.
async fn tripwire(bind: &str) -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let touched = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = touched.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        }
    });
    (addr, touched)
}

struct Setup {
    proxy: crate::harness::TestProxy,
    pki: TestPki,
    /// Where the tripwire standing in for Graph listens; it must never be reached.
    graph_touched: Arc<std::sync::atomic::AtomicBool>,
    echo: SocketAddr,
}

async fn setup(configure: impl FnOnce(&mut RawEgress)) -> Setup {
    let pki = TestPki::generate();
    let echo = echo_server(&pki, "127.0.0.2:0").await;
    let (graph, graph_touched) = tripwire("127.0.0.3:0").await;
    let mut raw: RawConfig = proxy_config("http://127.0.0.1:9");
    raw.egress.enabled = true;
    raw.egress
        .resolve
        .insert(TOKEN_HOST.into(), echo.to_string());
    raw.egress
        .resolve
        .insert("graph.microsoft.com".into(), graph.to_string());
    // Another name for the Graph host's address.
    raw.egress.resolve.insert(
        "fronted.example".into(),
        format!("127.0.0.3:{}", graph.port() + 1),
    );
    raw.egress.tunnel_idle_timeout = "30s".into();
    raw.admin.metrics_public = true;
    configure(&mut raw.egress);
    let proxy = spawn_proxy_with(raw).await;
    Setup {
        proxy,
        pki,
        graph_touched,
        echo,
    }
}

/// What the proxy answered a `CONNECT`, and the socket (open when it answered 200).
struct Connected {
    status: u16,
    head: String,
    body: String,
    stream: TcpStream,
}

async fn connect(proxy: SocketAddr, target: &str, extra: &str) -> Connected {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The head, a byte at a time, so nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer to CONNECT")
            .unwrap();
        assert!(n == 1, "closed before the end of the head: {head:?}");
        head.push(byte[0]);
        assert!(head.len() < 16 * 1024);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .map_or(0, |l| l.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; if status == 200 { 0 } else { length }];
    stream.read_exact(&mut body).await.unwrap();
    Connected {
        status,
        head,
        body: String::from_utf8(body).unwrap(),
        stream,
    }
}

fn tls_connector(ca: &Path) -> TlsConnector {
    let config = crate::harness::tls_config_trusting(ca).with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn server_name(name: &str) -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap()
}

/// A tunnel to the token host, its TLS session with the echo server open.
async fn tunnel_to_token_host(s: &Setup) -> tokio_rustls::client::TlsStream<TcpStream> {
    let c = connect(s.proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 200, "{}", c.head);
    tls_connector(&s.pki.ca_cert)
        .connect(server_name(TOKEN_HOST), c.stream)
        .await
        .unwrap()
}

/// Whether `stream` is closed by the far end within a few seconds, having sent nothing.
async fn closed_without_a_byte(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_tunnel_to_an_allowed_host_carries_its_tls_both_ways_unchanged() {
    let s = setup(|_| {}).await;
    let c = connect(s.proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 200, "{}", c.head);
    assert!(
        !c.head.to_ascii_lowercase().contains("content-length"),
        "{}",
        c.head
    );
    let mut tls = tls_connector(&s.pki.ca_cert)
        .connect(server_name(TOKEN_HOST), c.stream)
        .await
        .expect("the echo server's own certificate, through the tunnel");
    // 1 MiB of varied bytes, written while the echo is read.
    let sent: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut r, mut w) = tokio::io::split(&mut tls);
    let writing = async {
        w.write_all(&sent).await.unwrap();
        w.flush().await.unwrap();
    };
    let mut echoed = vec![0u8; sent.len()];
    let reading = r.read_exact(&mut echoed);
    let (_, read) = tokio::join!(writing, reading);
    read.unwrap();
    assert!(echoed == sent, "the bytes came back changed");
    assert!(!s.graph_touched.load(std::sync::atomic::Ordering::SeqCst));
    let _ = s.echo;
}

#[tokio::test]
async fn a_client_hello_naming_another_host_is_cut_before_anything_is_passed_on() {
    let s = setup(|_| {}).await;
    for sni in ["graph.microsoft.com", "other.example"] {
        let c = connect(s.proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
        assert_eq!(c.status, 200);
        let handshake = tls_connector(&s.pki.ca_cert)
            .connect(server_name(sni), c.stream)
            .await;
        assert!(
            handshake.is_err(),
            "a handshake for {sni} went through the tunnel"
        );
    }
}

#[tokio::test]
async fn plain_http_inside_a_tunnel_is_cut() {
    let s = setup(|_| {}).await;
    let mut c = connect(s.proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 200);
    c.stream
        .write_all(b"GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_without_a_byte(&mut c.stream).await);
}

#[tokio::test]
async fn graph_hosts_ip_literals_and_hosts_not_allowed_are_refused() {
    let s = setup(|_| {}).await;
    let cases = [
        ("graph.microsoft.com:443", 403, "Graph host"),
        ("GRAPH.Microsoft.com.:443", 403, "Graph host"),
        ("dod-graph.microsoft.us:443", 403, "Graph host"),
        ("127.0.0.2:443", 403, "IP address"),
        ("[::1]:443", 403, "IP address"),
        ("example.org:443", 403, "egress.allow"),
        ("login.microsoftonline.com", 400, "port"),
        ("login.microsoftonline.com:0", 400, "port"),
        ("127.1:443", 400, "IPv4"),
    ];
    for (target, status, says) in cases {
        let c = connect(s.proxy.addr, target, "").await;
        assert_eq!(c.status, status, "{target}: {}", c.head);
        assert!(c.body.contains(says), "{target}: {}", c.body);
        assert!(c.body.contains("\"error\""), "Graph-shaped: {}", c.body);
    }
    assert!(!s.graph_touched.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test]
async fn a_name_that_resolves_to_a_graph_address_is_not_tunnelled() {
    let s = setup(|e| e.other_hosts = OtherHosts::Tunnel).await;
    let c = connect(s.proxy.addr, "fronted.example:443", "").await;
    assert_eq!(c.status, 403, "{}", c.head);
    assert!(c.body.contains("address of a Graph host"), "{}", c.body);
    // The same setting tunnels a host that is not Graph's.
    let c = connect(s.proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 200);
}

#[tokio::test]
async fn proxy_authentication_is_asked_for_and_checked() {
    let key = crate::admin_auth::make_key();
    let s = setup(|e| {
        e.users = vec![RawProxyUser {
            name: "ann".into(),
            key_hash: key.1.clone(),
        }]
    })
    .await;
    let target = format!("{TOKEN_HOST}:443");
    let basic = |credentials: &str| {
        format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    for extra in [
        String::new(),
        basic("ann:sgk_not_the_key"),
        basic(&format!("bob:{}", key.0)),
        format!("Proxy-Authorization: Bearer {}\r\n", key.0),
    ] {
        let c = connect(s.proxy.addr, &target, &extra).await;
        assert_eq!(c.status, 407, "{extra:?}: {}", c.head);
        assert!(
            c.head
                .to_ascii_lowercase()
                .contains("proxy-authenticate: basic"),
            "{}",
            c.head
        );
    }
    let c = connect(s.proxy.addr, &target, &basic(&format!("ann:{}", key.0))).await;
    assert_eq!(c.status, 200, "{}", c.head);
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_its_hello_timeout_and_an_idle_one_after_its_idle_timeout()
{
    let s = setup(|e| {
        e.hello_timeout = "300ms".into();
        e.tunnel_idle_timeout = "400ms".into();
    })
    .await;
    let target = format!("{TOKEN_HOST}:443");
    let mut silent = connect(s.proxy.addr, &target, "").await;
    assert_eq!(silent.status, 200);
    let started = Instant::now();
    assert!(closed_without_a_byte(&mut silent.stream).await);
    assert!(started.elapsed() < Duration::from_secs(3));

    let c = connect(s.proxy.addr, &target, "").await;
    let mut tls = tls_connector(&s.pki.ca_cert)
        .connect(server_name(TOKEN_HOST), c.stream)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    let started = Instant::now();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the idle tunnel stayed open");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn shutdown_ends_open_tunnels() {
    let s = setup(|_| {}).await;
    let mut tls = tunnel_to_token_host(&s).await;
    let started = Instant::now();
    s.proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited for the tunnel"
    );
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the tunnel outlived the proxy");
}

#[tokio::test]
async fn without_egress_mode_connect_is_405() {
    let proxy = spawn_proxy_with(proxy_config("http://127.0.0.1:9")).await;
    let c = connect(proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 405, "{}", c.head);
    assert!(c.body.contains("egress"), "{}", c.body);
}

/// A plain-HTTP request through the proxy (absolute form) to a host that is not Graph's is
/// refused, never relayed; one for a Graph host goes through the pipeline to that host (not to
/// the configured upstream, which here answers nothing), with or without a CA; proxy
/// authentication applies to both.
#[tokio::test]
async fn absolute_form_requests_go_only_to_graph() {
    let pki = TestPki::generate();
    let (emulator, _stop) = graph_emulator(&pki).await;
    let key = crate::admin_auth::make_key();
    let mut raw: RawConfig = proxy_config("http://127.0.0.1:9");
    raw.upstream.extra_ca = Some(pki.ca_cert.clone());
    raw.egress
        .resolve
        .insert("graph.microsoft.com".into(), emulator.to_string());
    raw.egress.enabled = true;
    raw.egress.users = vec![RawProxyUser {
        name: "ann".into(),
        key_hash: key.1.clone(),
    }];
    let proxy = spawn_proxy_with(raw).await;
    let auth = format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("ann:{}", key.0))
    );
    let send = |target: &'static str, extra: String| async move {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let host = target.split('/').nth(2).unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n{extra}\r\n",
            crate::helpers::admin_token()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let refused = send("http://example.org/v1.0/me", auth.clone()).await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let unauthenticated = send(
        "http://graph.microsoft.com/v1.0/policies/crossTenantAccessPolicy/partners",
        String::new(),
    )
    .await;
    assert!(
        unauthenticated.starts_with("HTTP/1.1 407"),
        "{unauthenticated}"
    );
    let served = send(
        "http://graph.microsoft.com/v1.0/policies/crossTenantAccessPolicy/partners",
        auth,
    )
    .await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

/// The emulator served over TLS as `graph.microsoft.com` (a certificate from `pki`), and a
/// proxy in egress mode that intercepts it with `pki`'s CA; its reverse-proxy upstream is the
/// same host, so the partner can be seeded through it.
struct Intercepting {
    proxy: crate::harness::TestProxy,
    pki: TestPki,
    _emulator: tokio_util::sync::CancellationToken,
}

/// The emulator over TLS as `graph.microsoft.com` (a certificate from `pki`): its address, and
/// what stops it.
async fn graph_emulator(pki: &TestPki) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    let (cert, key) = pki.issue_server("graph", &["graph.microsoft.com"]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let options = syncgate::server::ServeOptions {
        tls: Some(syncgate::tls::server_config(&cert, &key, None).unwrap()),
        ..Default::default()
    };
    tokio::spawn(syncgate::emulator::run(listener, options, stop.clone()));
    (emulator, stop)
}

/// Egress mode in `raw`, intercepting with `pki`'s CA, and `graph.microsoft.com` served at
/// `address` (TLS under a certificate from `pki`, which syncgate then trusts).
pub(crate) fn intercept_graph_at(raw: &mut RawConfig, pki: &TestPki, address: String) {
    raw.upstream.extra_ca = Some(pki.ca_cert.clone());
    raw.egress.enabled = true;
    raw.egress.ca_cert = Some(pki.ca_cert.clone());
    raw.egress.ca_key = Some(pki.ca_key.clone());
    raw.egress
        .resolve
        .insert("graph.microsoft.com".into(), address);
}

async fn intercepting() -> Intercepting {
    intercepting_with(|_| {}).await
}

/// [`intercepting`], with `configure` applied to the configuration last.
async fn intercepting_with(configure: impl FnOnce(&mut RawConfig)) -> Intercepting {
    let pki = TestPki::generate();
    let (emulator, stop) = graph_emulator(&pki).await;
    let mut raw: RawConfig = proxy_config("https://graph.microsoft.com");
    intercept_graph_at(&mut raw, &pki, emulator.to_string());
    configure(&mut raw);
    let proxy = spawn_proxy_with(raw).await;
    // Seeded through the reverse-proxy listener: creating a partner without sync settings passes.
    let seeded = crate::helpers::TestClient::new()
        .send(
            http::Method::POST,
            &crate::governed::partners(&proxy.url),
            Some(serde_json::json!({ "tenantId": crate::governed::PARTNER })),
        )
        .await;
    assert_eq!(
        seeded.status,
        http::StatusCode::CREATED,
        "{:?}",
        seeded.body
    );
    Intercepting {
        proxy,
        pki,
        _emulator: stop,
    }
}

/// curl with `-x` and `--cacert`: what it printed (`-i`: head and body) and its exit status.
async fn curl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20"])
            .args(&args)
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

/// The last response's header `name` in curl's `-i` output (after any `200 Connection
/// established` head of the proxy).
fn header_of(text: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_an_intercepted_tunnel_is_governed_on_http1_and_http2() {
    let s = intercepting().await;
    let proxy = format!("http://{}", s.proxy.addr);
    let sync = crate::governed::sync_url(
        "https://graph.microsoft.com",
        "v1.0",
        crate::governed::PARTNER,
    );
    // Created over HTTP/1.1, then changed over HTTP/2.
    for (version, method, inbound) in [("--http1.1", "PUT", true), ("--http2", "PATCH", false)] {
        let body = serde_json::json!({"userSyncInbound": {"isSyncAllowed": inbound}}).to_string();
        let (ok, out) = curl(vec![
            version.into(),
            "-x".into(),
            proxy.clone(),
            "--cacert".into(),
            s.pki.ca_cert.display().to_string(),
            "-X".into(),
            method.into(),
            "-H".into(),
            format!("Authorization: Bearer {}", crate::helpers::admin_token()),
            "-H".into(),
            "Content-Type: application/json".into(),
            "-d".into(),
            body,
            sync.clone(),
        ])
        .await;
        assert!(ok, "{version}: {out}");
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "the CONNECT's answer first: {out}"
        );
        let expected = if version == "--http2" {
            "HTTP/2 204"
        } else {
            "HTTP/1.1 204"
        };
        assert!(out.contains(expected), "{version}: {out}");
        let id = header_of(&out, "x-syncgate-audit-id").expect("an audit id");
        let events = crate::governed::operation(&s.proxy.db_path, &id);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["received", "completed"], "{version}");
        assert_eq!(
            events[1]["after"]["value"]["userSyncInbound"]["isSyncAllowed"],
            inbound
        );
    }
    // A read passes through the tunnel and comes back as Graph sent it.
    let (ok, out) = curl(vec![
        "-x".into(),
        proxy,
        "--cacert".into(),
        s.pki.ca_cert.display().to_string(),
        "-H".into(),
        format!("Authorization: Bearer {}", crate::helpers::admin_token()),
        sync,
    ])
    .await;
    assert!(ok && out.contains("isSyncAllowed"), "{out}");
}

#[tokio::test]
async fn an_intercepted_tunnel_shows_no_certificate_to_a_hello_for_another_host() {
    let s = intercepting().await;
    for sni in ["graph.microsoft.us", "login.microsoftonline.com"] {
        let c = connect(s.proxy.addr, "graph.microsoft.com:443", "").await;
        assert_eq!(c.status, 200);
        let handshake = tls_connector(&s.pki.ca_cert)
            .connect(server_name(sni), c.stream)
            .await;
        assert!(handshake.is_err(), "{sni} got a session");
    }
}

#[tokio::test]
async fn a_request_inside_an_intercepted_tunnel_must_name_its_host() {
    let s = intercepting().await;
    let c = connect(s.proxy.addr, "graph.microsoft.com:443", "").await;
    assert_eq!(c.status, 200);
    let mut tls = tls_connector(&s.pki.ca_cert)
        .connect(server_name("graph.microsoft.com"), c.stream)
        .await
        .expect("the minted certificate is trusted for graph.microsoft.com");
    let request = format!(
        "GET /v1.0/policies/crossTenantAccessPolicy/partners HTTP/1.1\r\nHost: graph.microsoft.us\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        crate::helpers::admin_token()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
}

#[tokio::test]
async fn a_graph_host_on_another_port_is_refused() {
    let s = intercepting().await;
    let c = connect(s.proxy.addr, "graph.microsoft.com:8443", "").await;
    assert_eq!(c.status, 403, "{}", c.head);
}

/// How a test reaches Graph through syncgate, so one test can run in both modes.
// One per test: the size of the reverse-proxy variant's client does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Through {
    /// Reverse-proxy mode: the client's base URL is syncgate's.
    ReverseProxy {
        client: crate::helpers::TestClient,
        base: String,
    },
    /// Egress mode: `CONNECT graph.microsoft.com:443` to the proxy, TLS trusting `ca`, then the
    /// request as a client with `HTTPS_PROXY` sends it (a tunnel per request).
    Egress {
        proxy: SocketAddr,
        ca: std::path::PathBuf,
    },
}

impl Through {
    /// Send `method` on `path` (and query) with the admin token and `body` as JSON.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> crate::helpers::TestResponse {
        match self {
            Through::ReverseProxy { client, base } => {
                client.send(method, &format!("{base}{path}"), body).await
            }
            Through::Egress { proxy, ca } => {
                use http_body_util::BodyExt;
                let mut sender = tunnel_sender(*proxy, ca).await;
                let bytes = body.map_or_else(Vec::new, |v| serde_json::to_vec(&v).unwrap());
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", "graph.microsoft.com")
                    .header(
                        "authorization",
                        format!("Bearer {}", crate::helpers::admin_token()),
                    );
                if !bytes.is_empty() {
                    req = req.header("content-type", "application/json");
                }
                let req = req
                    .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
                    .unwrap();
                let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
                    .await
                    .expect("an answer in time")
                    .expect("an answer");
                let (parts, body) = resp.into_parts();
                crate::helpers::TestResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.collect().await.unwrap().to_bytes(),
                }
            }
        }
    }
}

/// An HTTP/1.1 connection to `graph.microsoft.com` through a `CONNECT` tunnel to `proxy`
/// (egress mode, intercepting with a CA in the bundle `ca`).
async fn tunnel_sender<B>(
    proxy: SocketAddr,
    ca: &Path,
) -> hyper::client::conn::http1::SendRequest<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let c = connect(proxy, "graph.microsoft.com:443", "").await;
    assert_eq!(c.status, 200, "{}", c.head);
    let mut config = crate::harness::tls_config_trusting(ca).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name("graph.microsoft.com"), c.stream)
        .await
        .expect("the intercepted tunnel's TLS");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// 50 MiB up and down through an intercepted tunnel of a proxy running as its own process:
/// streamed, so its peak memory grows far less than the bodies (as in reverse-proxy mode,
/// `proxy::fifty_mebibytes_stream_through_with_bounded_memory`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_stream_through_an_intercepted_tunnel_with_bounded_memory() {
    use crate::harness::{PatternBody, hash_body, pattern_sha256};
    const SIZE: u64 = 50 * 1024 * 1024;
    let pki = TestPki::generate();
    let (emulator, stop) = graph_emulator(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("egress.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nextra_ca = {:?}\n[egress]\nenabled = true\nca_cert = {:?}\nca_key = {:?}\n\
             [egress.resolve]\n\"graph.microsoft.com\" = \"{emulator}\"\n",
            pki.ca_cert, pki.ca_cert, pki.ca_key
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let proxy =
        crate::harness::spawn_child_proxy("https://graph.microsoft.com", &["--config", &config]);
    let addr: SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();
    let ca = pki.ca_cert.clone();
    let send = |req: http::Request<syncgate::body::Body>| {
        let ca = ca.clone();
        async move {
            let mut sender = tunnel_sender(addr, &ca).await;
            sender.send_request(req).await.unwrap()
        }
    };
    let warm = http::Request::get("/_emulator/bytes?size=1024")
        .header("host", "graph.microsoft.com")
        .body(syncgate::body::empty())
        .unwrap();
    assert_eq!(send(warm).await.status(), 200);
    let baseline = proxy.memory_kib("VmRSS");
    let upload = http::Request::post("/_emulator/echo")
        .header("host", "graph.microsoft.com")
        .header("content-type", "application/octet-stream")
        .body(syncgate::body::stream(PatternBody::new(SIZE)))
        .unwrap();
    let resp = send(upload).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        hash_body(resp.into_body()).await,
        (SIZE, pattern_sha256(SIZE))
    );
    let download = http::Request::get(format!("/_emulator/bytes?size={SIZE}"))
        .header("host", "graph.microsoft.com")
        .body(syncgate::body::empty())
        .unwrap();
    let resp = send(download).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        hash_body(resp.into_body()).await,
        (SIZE, pattern_sha256(SIZE))
    );
    let peak = proxy.memory_kib("VmHWM");
    eprintln!("egress proxy memory: baseline RSS {baseline} KiB, peak {peak} KiB after 2 x 50 MiB");
    assert!(
        peak < baseline + 16 * 1024,
        "peak RSS {peak} KiB grew more than 16 MiB over the {baseline} KiB baseline"
    );
    stop.cancel();
}

/// The alias forms of the reverse-proxy test, through an intercepted tunnel: governed alike.
#[tokio::test]
async fn every_alias_form_through_an_intercepted_tunnel_is_governed_as_in_reverse_proxy_mode() {
    let s = intercepting().await;
    let through = Through::Egress {
        proxy: s.proxy.addr,
        ca: s.pki.ca_cert.clone(),
    };
    let writes = crate::governed::every_alias_form_is_governed(&through, &s.proxy.db_path).await;
    assert_eq!(writes, 30);
}

/// The mixed `$batch` of the reverse-proxy test, through an intercepted tunnel: unbatched and
/// governed alike.
#[tokio::test]
async fn a_batch_through_an_intercepted_tunnel_is_unbatched_and_governed_as_in_reverse_proxy_mode()
{
    let s = intercepting().await;
    let through = Through::Egress {
        proxy: s.proxy.addr,
        ca: s.pki.ca_cert.clone(),
    };
    crate::governed::a_mixed_batch_is_unbatched(&through, &s.proxy.db_path).await;
}

/// `GET /metrics` on the admin listener, as text.
async fn metrics(admin: SocketAddr) -> String {
    let resp = crate::helpers::TestClient::without_token()
        .get(&format!("http://{admin}/metrics"))
        .await;
    assert_eq!(resp.status, http::StatusCode::OK);
    String::from_utf8(resp.body.to_vec()).unwrap()
}

/// The value of the sample `series` (name and labels, as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn tunnels_and_refusals_are_counted_in_the_metrics() {
    let s = setup(|_| {}).await;
    let mut tls = tunnel_to_token_host(&s).await;
    tls.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong).await.unwrap();
    let open = metrics(s.proxy.admin_addr).await;
    assert_eq!(
        sample(&open, "syncgate_egress_open{outcome=\"tunnelled\"}"),
        1.0
    );
    drop(tls);
    assert_eq!(
        connect(s.proxy.addr, "graph.microsoft.com:443", "")
            .await
            .status,
        403
    );
    assert_eq!(
        connect(s.proxy.addr, "example.org:443", "").await.status,
        403
    );
    assert_eq!(connect(s.proxy.addr, "nope", "").await.status, 400);
    // The tunnel's task counts its bytes once it has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = metrics(s.proxy.admin_addr).await;
        if sample(&text, "syncgate_egress_open{outcome=\"tunnelled\"}") == 0.0
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let count = |outcome: &str| {
        sample(
            &text,
            &format!("syncgate_egress_connects_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("tunnelled"), 1.0);
    assert_eq!(count("refused"), 2.0);
    assert_eq!(count("bad_request"), 1.0);
    assert_eq!(count("intercepted"), 0.0);
    assert_eq!(
        sample(&text, "syncgate_egress_open{outcome=\"tunnelled\"}"),
        0.0
    );
    // The ClientHello and "ping" went up; the server's handshake and "ping" came down.
    assert!(
        sample(
            &text,
            "syncgate_egress_tunnel_bytes_total{direction=\"up\"}"
        ) > 4.0
    );
    assert!(
        sample(
            &text,
            "syncgate_egress_tunnel_bytes_total{direction=\"down\"}"
        ) > 4.0
    );
}

/// `egress.listen`: CONNECT is answered on egress mode's own listener only; the proxy listener
/// keeps reverse-proxy mode alone (and answers CONNECT 405).
#[tokio::test]
async fn egress_mode_on_a_listener_of_its_own_leaves_the_proxy_listener_reverse_only() {
    let pki = TestPki::generate();
    let echo = echo_server(&pki, "127.0.0.2:0").await;
    let dir = tempfile::tempdir().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut raw: RawConfig = proxy_config("http://127.0.0.1:9");
    raw.store.path = dir.path().join("syncgate.db");
    raw.egress.enabled = true;
    raw.egress.listen = Some("127.0.0.1:0".into());
    raw.egress
        .resolve
        .insert(TOKEN_HOST.into(), echo.to_string());
    raw.egress
        .resolve
        .insert("graph.microsoft.com".into(), "127.0.0.3:1".into());
    let running = syncgate::app::start(raw.validate().unwrap(), stop.clone())
        .await
        .unwrap();
    let egress = running.egress_addr.expect("an egress listener");
    assert_ne!(egress, running.proxy_addr);
    let target = format!("{TOKEN_HOST}:443");
    assert_eq!(connect(egress, &target, "").await.status, 200);
    let on_proxy = connect(running.proxy_addr, &target, "").await;
    assert_eq!(on_proxy.status, 405, "{}", on_proxy.head);
    stop.cancel();
    running.stopped().await;
}

/// A user proxy authentication let through is part of the actor of every change made inside
/// the tunnel; a reverse-proxy request's actor has none.
#[tokio::test]
async fn the_proxy_user_is_recorded_with_the_changes_made_through_its_tunnel() {
    let pki = TestPki::generate();
    let (emulator, _stop) = graph_emulator(&pki).await;
    let key = crate::admin_auth::make_key();
    let mut raw: RawConfig = proxy_config("https://graph.microsoft.com");
    intercept_graph_at(&mut raw, &pki, emulator.to_string());
    raw.egress.users = vec![RawProxyUser {
        name: "build-agent".into(),
        key_hash: key.1.clone(),
    }];
    let proxy = spawn_proxy_with(raw).await;
    let partner = crate::governed::PARTNER;
    let client = crate::helpers::TestClient::new();
    let seeded = client
        .send(
            http::Method::POST,
            &crate::governed::partners(&proxy.url),
            Some(serde_json::json!({ "tenantId": partner })),
        )
        .await;
    assert_eq!(seeded.status, http::StatusCode::CREATED);
    let (ok, out) = curl(vec![
        "-x".into(),
        format!("http://{}", proxy.addr),
        "--proxy-user".into(),
        format!("build-agent:{}", key.0),
        "--cacert".into(),
        pki.ca_cert.display().to_string(),
        "-X".into(),
        "PUT".into(),
        "-H".into(),
        format!("Authorization: Bearer {}", crate::helpers::admin_token()),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-d".into(),
        r#"{"userSyncInbound":{"isSyncAllowed":true}}"#.into(),
        crate::governed::sync_url("https://graph.microsoft.com", "v1.0", partner),
    ])
    .await;
    assert!(ok, "{out}");
    let id = header_of(&out, "x-syncgate-audit-id").expect("an audit id");
    for event in crate::governed::operation(&proxy.db_path, &id) {
        assert_eq!(event["actor"]["proxy_user"], "build-agent", "{event}");
    }
    let seed_events = crate::governed::audit_events(&proxy.db_path);
    let seed = seed_events
        .iter()
        .find(|e| e["method"] == "POST")
        .expect("the seeding POST's events");
    assert!(seed["actor"].get("proxy_user").is_none(), "{seed}");
}

/// When no Graph host resolves, a tunnel cannot be checked against Graph's addresses: it is
/// refused, not let through unchecked.
#[tokio::test]
async fn without_any_resolvable_graph_host_tunnels_are_refused() {
    let pki = TestPki::generate();
    let echo = echo_server(&pki, "127.0.0.2:0").await;
    let mut raw: RawConfig = proxy_config("http://127.0.0.1:9");
    raw.egress.enabled = true;
    // A name that never resolves (RFC 6761 `.invalid`), so the check has nothing to go on.
    raw.egress.graph_hosts = vec!["graph.invalid".into()];
    raw.egress
        .resolve
        .insert(TOKEN_HOST.into(), echo.to_string());
    let proxy = spawn_proxy_with(raw).await;
    let c = connect(proxy.addr, &format!("{TOKEN_HOST}:443"), "").await;
    assert_eq!(c.status, 503, "{}", c.head);
    assert!(c.body.contains("cannot be checked"), "{}", c.body);
}

/// `egress.graph_aliases = "intercept"`: a CONNECT to an IP literal, or to a name that resolves
/// to a Graph address, is intercepted as the Graph host its ClientHello names (a leaf for that
/// host, the request governed), and closed when the ClientHello names anything else.
#[tokio::test]
async fn graph_aliases_are_intercepted_by_the_graph_host_their_hello_names() {
    use syncgate::config::egress::{GraphAliases, OtherHosts};
    let s = intercepting_with(|raw| {
        raw.egress.graph_aliases = GraphAliases::Intercept;
        raw.egress.other_hosts = OtherHosts::Tunnel;
        // Another name for the emulator's (Graph's) address.
        raw.egress
            .resolve
            .insert("fronted.example".into(), "127.0.0.1:1".into());
    })
    .await;
    for target in ["127.0.0.1:443", "[::1]:443", "fronted.example:443"] {
        let c = connect(s.proxy.addr, target, "").await;
        assert_eq!(c.status, 200, "{target}: {}", c.head);
        let mut tls = tls_connector(&s.pki.ca_cert)
            .connect(server_name("graph.microsoft.com"), c.stream)
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let request = format!(
            "GET /v1.0/policies/crossTenantAccessPolicy/partners HTTP/1.1\r\nHost: graph.microsoft.com\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            crate::helpers::admin_token()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        // A hello naming anything but a Graph host gets no session.
        let c = connect(s.proxy.addr, target, "").await;
        assert_eq!(c.status, 200);
        let other = tls_connector(&s.pki.ca_cert)
            .connect(server_name("login.microsoftonline.com"), c.stream)
            .await;
        assert!(
            other.is_err(),
            "{target}: a hello for another host got a session"
        );
    }
    // Not on another port.
    assert_eq!(
        connect(s.proxy.addr, "127.0.0.1:8443", "").await.status,
        403
    );
}
