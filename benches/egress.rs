//! Egress mode's cost, in one run: requests/s and latency through an intercepted `CONNECT`
//! tunnel, next to syncgate in reverse-proxy mode with TLS and nginx terminating TLS, on the same
//! upstream with the same client.
//!
//! `cargo bench --bench egress` (release build; nginx is installed with apt when missing).
//! Knobs: `BENCH_SECS` (measured seconds per run, default 5), `BENCH_CONCURRENCY` (connections,
//! each with one request in flight, default 32), `BENCH_ROUNDS` (alternating rounds, default 3;
//! the median is printed).
//!
//! The setup, all on loopback:
//! - The upstream is nginx serving a 1 KB JSON document over TLS as `graph.microsoft.com`,
//!   under a certificate from a CA made for the run.
//! - Every proxy reaches it over TLS with keep-alive and verifies that certificate:
//!   - nginx: `proxy_pass https://` with `proxy_ssl_verify`;
//!   - syncgate: `upstream.extra_ca`, and `egress.resolve` for the name.
//! - The three cases are:
//!   - **nginx TLS**: TLS to nginx, which proxies.
//!   - **syncgate TLS**: TLS to syncgate in reverse-proxy mode (`[proxy.tls]`).
//!   - **syncgate egress**: `CONNECT graph.microsoft.com:443` to syncgate in egress mode, then TLS
//!     inside the tunnel with the leaf syncgate minted, then the same requests, as an
//!     `HTTPS_PROXY` client sends them.
//! - The client is this process, on its own runtime: one keep-alive HTTP/1.1 connection per
//!   concurrent request. It shares the machine with the servers, so the ratios are the point,
//!   not the absolute figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "support/processes.rs"]
mod processes;

use processes::{Process, free_port, wait_for};

const HOST: &str = "graph.microsoft.com";
const PATH: &str = "/v1.0/me";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's CA (certificate and key files) and a server certificate for `HOST`, `localhost`
/// and 127.0.0.1 signed by it.
struct Pki {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, KeyPair::from_pem(&ca_key.serialize_pem()).unwrap());
    let server =
        CertificateParams::new(vec![HOST.into(), "localhost".into(), "127.0.0.1".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca_cert: write("ca.crt", ca_cert.pem()),
        ca_key: write("ca.key", ca_key.serialize_pem()),
        cert: write("server.crt", cert.pem()),
        key: write("server.key", key.serialize_pem()),
    }
}

fn ensure_nginx() {
    if Command::new("nginx").arg("-v").output().is_ok() {
        return;
    }
    eprintln!("nginx is missing: installing it with apt-get");
    let ok = Command::new("sh")
        .args(["-c", "apt-get install -y -qq nginx >/dev/null 2>&1"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot install nginx");
}

fn syncgate(dir: &Path, name: &str, config: &str) -> Process {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    Process(
        Command::new(env!("CARGO_BIN_EXE_syncgate"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("syncgate starts"),
    )
}

/// Where the client sends, and how it gets there.
#[derive(Clone, Copy)]
enum Route {
    /// TLS straight to a server on this port.
    Tls(u16),
    /// `CONNECT HOST:443` to a proxy on this port, then TLS inside the tunnel.
    Tunnel(u16),
}

/// One keep-alive HTTP/1.1 connection over `route`.
async fn open(
    route: Route,
    tls: &TlsConnector,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let stream = match route {
        Route::Tls(port) => TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        Route::Tunnel(port) => {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            stream
                .write_all(
                    format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "CONNECT answered");
                head.push(byte[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            stream
        }
    };
    stream.set_nodelay(true).unwrap();
    let tls = tls.connect(name, stream).await.expect("TLS");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// What one run measured.
struct Figures {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` connections over `route`, each sending requests back to back: a second of
/// warm-up, then `secs` measured.
async fn load(route: Route, tls: &TlsConnector, concurrency: usize, secs: u64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut sender = open(route, tls).await;
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(PATH)
                    .header("host", HOST)
                    .header("authorization", "Bearer bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let started = Instant::now();
                let resp = sender.send_request(req).await.expect("a response");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn main() {
    syncgate::tls::install_default_provider();
    ensure_nginx();
    let secs = env_or("BENCH_SECS", 5);
    let concurrency = env_or("BENCH_CONCURRENCY", 32) as usize;
    let rounds = env_or("BENCH_ROUNDS", 3) as usize;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let (up, nginx_tls, sg_tls, sg_egress) = (free_port(), free_port(), free_port(), free_port());
    let doc = format!("{{\"value\":\"{}\"}}", "x".repeat(1000));
    let _upstream = Process::nginx(
        d,
        "upstream",
        &format!(
            "{user}worker_processes 1;\npid upstream.pid;\nerror_log upstream.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n server {{ listen 127.0.0.1:{up} ssl; ssl_protocols TLSv1.3;\n\
             ssl_certificate {cert}; ssl_certificate_key {key}; keepalive_requests 1000000;\n\
             location / {{ default_type application/json; return 200 '{doc}'; }} }} }}\n",
            cert = p.cert.display(),
            key = p.key.display(),
        ),
    );
    let _nginx = Process::nginx(
        d,
        "proxy",
        &format!(
            "{user}worker_processes auto;\npid proxy.pid;\nerror_log proxy.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{nginx_tls} ssl; ssl_protocols TLSv1.3;\n\
             ssl_certificate {cert}; ssl_certificate_key {key}; keepalive_requests 1000000;\n\
             location / {{ proxy_pass https://up; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host {HOST};\n\
             proxy_ssl_protocols TLSv1.3; proxy_ssl_server_name on; proxy_ssl_name {HOST};\n\
             proxy_ssl_verify on;\n\
             proxy_ssl_trusted_certificate {ca}; proxy_ssl_session_reuse on; }} }} }}\n",
            cert = p.cert.display(),
            key = p.key.display(),
            ca = p.ca_cert.display(),
        ),
    );
    let common = format!(
        "[upstream]\nurl = \"https://{HOST}\"\nextra_ca = {ca:?}\n\
         [egress.resolve]\n\"{HOST}\" = \"127.0.0.1:{up}\"\n",
        ca = p.ca_cert
    );
    let _reverse = syncgate(
        d,
        "reverse",
        &format!(
            "[proxy]\nlisten = \"127.0.0.1:{sg_tls}\"\n[proxy.tls]\ncert = {cert:?}\nkey = {key:?}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {db:?}\n{common}\
             [egress]\nenabled = true\n",
            cert = p.cert,
            key = p.key,
            db = d.join("reverse.db"),
        ),
    );
    let _egress = syncgate(
        d,
        "egress",
        &format!(
            "[proxy]\nlisten = \"127.0.0.1:{sg_egress}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {db:?}\n{common}\
             [egress]\nenabled = true\nca_cert = {ca:?}\nca_key = {cakey:?}\n",
            db = d.join("egress.db"),
            ca = p.ca_cert,
            cakey = p.ca_key,
        ),
    );
    for port in [up, nginx_tls, sg_tls, sg_egress] {
        wait_for(port);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in syncgate::tls::load_certs(&p.ca_cert).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(syncgate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsConnector::from(Arc::new(client));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: [(&str, Route); 3] = [
        ("nginx TLS (reference)", Route::Tls(nginx_tls)),
        ("syncgate TLS, reverse-proxy mode", Route::Tls(sg_tls)),
        (
            "syncgate egress, intercepted tunnel",
            Route::Tunnel(sg_egress),
        ),
    ];
    // Each case answers before anything is measured; if not, the servers' error logs say why.
    for (name, route) in &cases {
        let status = runtime.block_on(async {
            let mut sender = open(*route, &tls).await;
            let req = http::Request::get(PATH)
                .header("host", HOST)
                .header("authorization", "Bearer bench")
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender.send_request(req).await.unwrap().status()
        });
        if status != 200 {
            for log in ["upstream.err", "proxy.err"] {
                eprintln!(
                    "--- {log}\n{}",
                    std::fs::read_to_string(d.join(log)).unwrap_or_default()
                );
            }
            panic!("{name} answered {status}");
        }
    }
    println!(
        "egress benchmark: {concurrency} connections, HTTP/1.1 over TLS 1.3, GET of a 1 KB JSON \
         document, {rounds} alternating rounds of {secs} s (median shown); upstream over TLS"
    );
    let mut runs: Vec<Vec<Figures>> = cases.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, route)) in cases.iter().enumerate() {
            let figures = runtime.block_on(load(*route, &tls, concurrency, secs));
            runs[i].push(figures);
        }
    }
    let medians: Vec<&Figures> = runs
        .iter_mut()
        .map(|r| {
            r.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
            &r[r.len() / 2]
        })
        .collect();
    let reference = medians[0].rps();
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>9}",
        "case", "req/s", "p50 ms", "p99 ms", "vs nginx"
    );
    for ((name, _), f) in cases.iter().zip(&medians) {
        println!(
            "{:<40} {:>10.0} {:>9.2} {:>9.2} {:>8.2}x",
            name,
            f.rps(),
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.rps() / reference
        );
    }
    for ((name, _), r) in cases.iter().zip(&runs) {
        let each: Vec<String> = r.iter().map(|f| format!("{:.0}", f.rps())).collect();
        println!("  {name}: every round {}", each.join(", "));
    }
}
