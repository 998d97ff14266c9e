//! Proxy-side test plumbing: start syncgate in-process or as a child process, TLS and HTTP/2
//! clients, and streaming bodies that neither side has to hold in memory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use syncgate::body::{Body, BoxError};
use syncgate::config::RawConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::pki::TestPki;

/// A proxy running in this process, with its own audit log; stopped when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub url: String,
    pub stop: CancellationToken,
    /// The audit log's file.
    pub db_path: std::path::PathBuf,
    running: Option<syncgate::app::RunningProxy>,
    /// Holds the database folder when the test did not choose one.
    _dir: Option<tempfile::TempDir>,
}

impl TestProxy {
    /// Begin a graceful shutdown and wait until the proxy has stopped.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            r.stopped().await;
        }
    }

    /// The stopping proxy, to await separately from cancelling it.
    pub fn take_running(&mut self) -> syncgate::app::RunningProxy {
        self.running.take().unwrap()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The defaults, on loopback port 0, in front of `upstream`.
pub fn proxy_config(upstream: &str) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = upstream.into();
    raw
}

pub async fn spawn_proxy(upstream: &str) -> TestProxy {
    spawn_proxy_with(proxy_config(upstream)).await
}

/// Start a proxy from `raw`; unless the test chose a database (a path or a URL), it gets a fresh
/// SQLite file in a temporary folder.
pub async fn spawn_proxy_with(mut raw: RawConfig) -> TestProxy {
    let chosen = raw.store.url.is_some() || raw.store.path != RawConfig::default().store.path;
    let dir = (!chosen).then(|| {
        let dir = tempfile::tempdir().unwrap();
        raw.store.path = dir.path().join("syncgate.db");
        dir
    });
    let db_path = raw.store.path.clone();
    let settings = raw.validate().expect("test config is valid");
    let stop = CancellationToken::new();
    let running = syncgate::app::start(settings, stop.clone()).await.unwrap();
    TestProxy {
        addr: running.proxy_addr,
        admin_addr: running.admin_addr,
        url: running.url(),
        stop,
        db_path,
        running: Some(running),
        _dir: dir,
    }
}

/// `syncgate` run as a child process, as a user would; killed when dropped.
pub struct ChildProxy {
    pub child: Child,
    pub url: String,
    pub admin_url: String,
    pub dir: tempfile::TempDir,
}

impl ChildProxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -<signal> <pid>`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
    pub fn memory_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid(), field)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub fn syncgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_syncgate")
}

/// Start `syncgate serve --upstream <upstream> <extra args>` on free ports and wait for its
/// "listening" lines.
pub fn spawn_child_proxy(upstream: &str, extra: &[&str]) -> ChildProxy {
    spawn_child_proxy_env(upstream, extra, &[])
}

/// [`spawn_child_proxy`] with extra environment variables (e.g. `RUST_LOG`).
pub fn spawn_child_proxy_env(upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> ChildProxy {
    spawn_child_proxy_limited(upstream, extra, env, None)
}

/// [`spawn_child_proxy_env`], with the child's open-file limit (soft and hard) lowered to `nofile`
/// when given, as `ulimit -n` would.
pub fn spawn_child_proxy_limited(
    upstream: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> ChildProxy {
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let db = dir.path().join("syncgate.db");
    let mut command = Command::new(syncgate_bin());
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--upstream", upstream]);
    // A test that names its own database (a restart) keeps it.
    if !extra.contains(&"--db") {
        command.arg("--db").arg(&db);
    }
    if let Some(nofile) = nofile {
        limit_open_files(&mut command, nofile);
    }
    let mut child = command
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut admin_url = None;
    while url.is_none() || admin_url.is_none() {
        let line = lines
            .next()
            .expect("syncgate exited before it listened")
            .unwrap();
        if let Some(rest) = line.strip_prefix("syncgate: proxy listening on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("syncgate: admin listening on ") {
            admin_url = Some(rest.trim().to_owned());
        }
    }
    ChildProxy {
        child,
        url: url.unwrap(),
        admin_url: admin_url.unwrap(),
        dir,
    }
}

/// Lower the open-file limit (soft and hard) of the process `command` starts, as `ulimit -n`.
pub fn limit_open_files(command: &mut Command, nofile: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: nofile,
        rlim_max: nofile,
    };
    // SAFETY: between fork and exec the closure only calls setrlimit, which is async-signal-safe,
    // on a value it owns.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// An HTTP/2-only (prior knowledge, h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A TLS client trusting the test CA, offering h2 and http/1.1, with an optional client cert.
pub fn tls_client(pki: &TestPki, with_client_cert: bool) -> HttpsClient {
    let identity =
        with_client_cert.then_some((pki.client_cert.as_path(), pki.client_key.as_path()));
    tls_client_with(&pki.ca_cert, identity)
}

/// A TLS client trusting the CA bundle `ca`, offering h2 and http/1.1, presenting the client
/// certificate and key files `identity` when given.
pub fn tls_client_with(ca: &Path, identity: Option<(&Path, &Path)>) -> HttpsClient {
    let builder = tls_config_trusting(ca);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                syncgate::tls::load_certs(cert).unwrap(),
                syncgate::tls::load_key(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// A rustls client configuration that trusts only the CA bundle `ca`, before its client
/// identity is chosen.
pub fn tls_config_trusting(
    ca: &Path,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in syncgate::tls::load_certs(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(syncgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

/// Send a request and read the whole response; also returns the HTTP version used.
pub async fn request<C>(
    client: &Client<C, Body>,
    req: Request<Body>,
) -> Result<(Response<Bytes>, Version), hyper_util::client::legacy::Error>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")?;
    let version = resp.version();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body failed").to_bytes();
    Ok((Response::from_parts(parts, bytes), version))
}

/// The deterministic byte pattern the emulator's `/_emulator/bytes` serves: byte i = i % 251.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// SHA-256 of the first `len` bytes of the pattern, computed in chunks.
pub fn pattern_sha256(len: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(64 * 1024);
        hasher.update(pattern_chunk(offset, n as usize));
        offset += n;
    }
    hasher.finalize().into()
}

fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

/// A request body producing `len` pattern bytes in 64 KiB frames, never held whole.
pub struct PatternBody {
    offset: u64,
    len: u64,
}

impl PatternBody {
    pub fn new(len: u64) -> Self {
        Self { offset: 0, len }
    }
}

impl HttpBody for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(64 * 1024) as usize;
        let chunk = pattern_chunk(self.offset, n);
        self.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.len - self.offset)
    }
}

/// A request body fed chunk by chunk from the test (ends when the sender is dropped).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

pub fn channel_body() -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx })
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Read a streaming response body, hashing it; returns (bytes read, sha256).
pub async fn hash_body(mut body: Incoming) -> (u64, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body stream failed").into_data() {
            total += data.len() as u64;
            hasher.update(&data);
        }
    }
    (total, hasher.finalize().into())
}

/// Whether a TCP connection to `addr` is refused.
pub async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

pub fn assert_graph_error(resp: &Response<Bytes>, status: StatusCode, code: &str) {
    assert_eq!(
        resp.status(),
        status,
        "body: {}",
        String::from_utf8_lossy(resp.body())
    );
    let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    let inner = &v["error"]["innerError"];
    assert!(
        inner["request-id"].is_string() && inner["date"].is_string(),
        "{v}"
    );
    assert_eq!(
        resp.headers()["request-id"].to_str().unwrap(),
        inner["request-id"].as_str().unwrap()
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub type SharedPki = Arc<TestPki>;
