//! syncgate beside nginx, the reference users compare an egress proxy with (issue 13): both in
//! front of the same upstream, loaded by the same generator, in alternating runs of one session,
//! with the CPU each proxy spent per request and its memory.
//!
//! The upstream is a second nginx (one worker, no access log) answering `/` with a 1 KB JSON
//! document, `/big` with a 1 MiB file, and `/upload` by storing a 1 MiB PUT (nginx's WebDAV
//! module, which reads the whole body before it answers, as Graph does). The proxy nginx is `proxy_pass` with an upstream keep-alive pool (`keepalive
//! 64`, HTTP/1.1, `Connection ""`), `worker_processes auto`, its default access log buffered 64
//! KB, and for `/big` and `/upload` no buffering either way (`proxy_buffering off`,
//! `proxy_request_buffering off`: it streams, as syncgate does, instead of spooling 1 MiB bodies
//! to temporary files). It listens for HTTP/1.1, for h2c (a port of its own: nginx 1.22 cannot
//! serve both on one), and for TLS with ALPN h2 and http/1.1. syncgate runs as shipped (`syncgate
//! serve`, logging at `info` to a file, no access log), once in plain HTTP (HTTP/1.1 and h2c on one
//! port) and once with TLS, with the same certificate (ECDSA P-256) as nginx; the load generator
//! offers the same cipher suites to both, and the one each negotiated is printed.
//!
//! Cases: HTTP/1.1 keep-alive (wrk, 32 connections, 1 KB; also straight to the upstream, the
//! ceiling), HTTP/2 (h2load, 32 streams over 4 connections), TLS with HTTP/1.1 (wrk) and with
//! HTTP/2 (h2load), 1 MiB downloads and uploads (wrk, 8 connections), and idle connections (1,000
//! and 10,000 keep-alive connections that each made one request, then the proxy's resident
//! memory). nginx, wrk and h2load are installed with apt when missing (as root; otherwise it says
//! what to install and skips this part).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::{Process, free_port, wait_for};

/// One load run: requests per second, latency percentiles, and the proxy's CPU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// CPU milliseconds the proxy spent per 1,000 requests (user + system), when known.
    pub(crate) cpu_ms_per_k: Option<f64>,
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tools, installed with apt when missing; `false` when they are not there and cannot be.
fn ensure_tools() -> bool {
    let all = || have("nginx") && have("wrk") && have("h2load");
    if all() {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "nginx, wrk or h2load is missing and this is not root: \
             apt-get install nginx wrk nghttp2-client"
        );
        return false;
    }
    eprintln!("installing nginx, wrk and nghttp2-client with apt-get...");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "nginx", "wrk", "nghttp2-client"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok && all()
}

/// The 1 KB JSON document the upstream answers (no `$`: nginx would read it as a variable).
fn document() -> String {
    let mut doc = String::from(
        r#"{"@odata.context":"https://graph.microsoft.com/v1.0/metadata#users","value":["#,
    );
    let mut i = 0;
    while doc.len() < 1000 {
        doc.push_str(&format!(
            r#"{{"id":"{i:08}-0000-4000-8000-000000000000","displayName":"User {i}"}},"#
        ));
        i += 1;
    }
    doc.pop();
    doc.push_str("]}");
    doc
}

const MIB: usize = 1024 * 1024;

struct Syncgate(Child);

impl Drop for Syncgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pid` and its children (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid)
        .chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        .collect()
}

/// User + system CPU seconds of `pid` and its children, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(11) + get(12)
    };
    let total: u64 = family(pid).into_iter().map(ticks).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    total as f64 / hz
}

/// Resident memory of `pid` and its children in MiB: `VmRSS` now, and `VmHWM` (the peak).
fn memory_mib(pid: u32) -> (f64, f64) {
    let field = |pid: u32, name: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse().ok()))
            .unwrap_or(0.0)
            / 1024.0
    };
    let pids = family(pid);
    (
        pids.iter().map(|&p| field(p, "VmRSS:")).sum(),
        pids.iter().map(|&p| field(p, "VmHWM:")).sum(),
    )
}

/// Parse one of wrk's durations (`812.00us`, `1.23ms`, `2.01s`).
fn wrk_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// The load generator of a case.
#[derive(Clone)]
enum Load {
    /// wrk: `connections` keep-alive HTTP/1.1 connections, with a Lua script when given.
    Wrk {
        connections: u32,
        script: Option<PathBuf>,
    },
    /// h2load: `connections` HTTP/2 connections with `streams` requests in flight on each.
    H2load { connections: u32, streams: u32 },
}

/// Run `load` on `url` for `secs`, with what `pid` (the proxy, when given) spent of CPU.
fn run(load: &Load, url: &str, secs: u64, pid: Option<u32>, scratch: &Path) -> Run {
    let before = pid.map(cpu_seconds);
    let (requests, rps, p50, p99) = match load {
        Load::Wrk {
            connections,
            script,
        } => wrk(url, *connections, script.as_deref(), secs),
        Load::H2load {
            connections,
            streams,
        } => h2load(url, *connections, *streams, secs, scratch),
    };
    let after = pid.map(cpu_seconds);
    let cpu_ms_per_k = match (before, after) {
        (Some(b), Some(a)) if requests > 0.0 => Some((a - b) * 1000.0 / (requests / 1000.0)),
        _ => None,
    };
    Run {
        rps,
        p50,
        p99,
        cpu_ms_per_k,
    }
}

/// wrk: (requests, requests/s, p50, p99).
fn wrk(
    url: &str,
    connections: u32,
    script: Option<&Path>,
    secs: u64,
) -> (f64, f64, Duration, Duration) {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let out = command.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", d] => p50 = wrk_duration(d),
            ["99%", d] => p99 = wrk_duration(d),
            ["Requests/sec:", r] => rps = r.parse().ok(),
            [n, "requests", "in", ..] => requests = n.parse::<f64>().ok(),
            _ => {}
        }
    }
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors against {url}:\n{text}"
    );
    (
        requests.unwrap_or(0.0),
        rps.unwrap_or_else(|| {
            panic!(
                "no Requests/sec from wrk on {url}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        p50.unwrap_or_default(),
        p99.unwrap_or_default(),
    )
}

/// h2load, with per-request times from its log file: (requests, requests/s, p50, p99).
fn h2load(
    url: &str,
    connections: u32,
    streams: u32,
    secs: u64,
    scratch: &Path,
) -> (f64, f64, Duration, Duration) {
    let log = scratch.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    let out = Command::new("h2load")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-m{streams}"),
            &format!("-D{secs}"),
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = None;
    let mut failed = true;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            // "finished in 5.00s, 61234.40 req/s, 70.12MB/s"
            ["finished", "in", _, r, "req/s,", ..] => rps = r.parse::<f64>().ok(),
            // "requests: 306172 total, 306172 started, 306172 done, 306172 succeeded, 0 failed, ..."
            ["requests:", ..] => failed = !line.contains(" 0 failed, 0 errored"),
            _ => {}
        }
    }
    assert!(!failed, "h2load saw failures against {url}:\n{text}");
    // Each line: start time (µs since epoch), status, time to the response (µs).
    let mut times: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .map_or(Duration::ZERO, |&us| Duration::from_micros(us))
    };
    (
        times.len() as f64,
        rps.unwrap_or_else(|| panic!("no req/s from h2load:\n{text}")),
        at(0.5),
        at(0.99),
    )
}

fn median(runs: &[Run]) -> Run {
    let mut by_rps = runs.to_vec();
    by_rps.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    by_rps[by_rps.len() / 2]
}

fn line(name: &str, r: &Run, mib_per_request: Option<f64>) -> String {
    let cpu = r
        .cpu_ms_per_k
        .map(|c| format!("{c:>10.1}"))
        .unwrap_or_else(|| format!("{:>10}", "-"));
    let throughput = mib_per_request
        .map(|m| format!("{:>9.0}", r.rps * m))
        .unwrap_or_else(|| format!("{:>9}", "-"));
    format!(
        "{name:<36} {:>9.0} {:>8.3} {:>8.3} {cpu} {throughput}",
        r.rps,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3
    )
}

/// A self-signed ECDSA P-256 certificate for 127.0.0.1 and localhost, written as PEM files.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// The TLS version and cipher suite a server on `port` negotiates with OpenSSL's defaults (what
/// wrk and h2load offer), as `openssl s_client` reports it.
fn negotiated(port: u16) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("openssl s_client -connect 127.0.0.1:{port} -brief </dev/null 2>&1"),
        ])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let text = text.unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    format!("{} {}", get("Protocol version:"), get("Ciphersuite:"))
}

/// Raise this process's open-file limit (children inherit it) to `want`, as far as allowed;
/// returns the soft limit in force.
fn raise_file_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a plain struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let raised = libc::rlimit {
            rlim_cur: want.max(limit.rlim_cur),
            rlim_max: want.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            // Not allowed to raise the hard limit: take the soft one up to it.
            let soft = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Open `count` keep-alive connections to `port`, each making one request (read to its end), and
/// keep them open idle.
fn idle_connections(port: u16, count: usize) -> Vec<std::net::TcpStream> {
    let request = b"GET /v1.0/users HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(request).unwrap();
        read_response(&mut stream);
        open.push(stream);
    }
    open
}

/// Read one HTTP/1.1 response with a `Content-Length` body.
fn read_response(stream: &mut std::net::TcpStream) {
    let mut buffer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed mid-response");
        buffer.extend_from_slice(&chunk[..n]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buffer.len() >= end + 4 + length {
            return;
        }
    }
}

/// Everything one comparison starts: the upstream, nginx, and syncgate in plain HTTP and TLS.
struct Rig {
    dir: tempfile::TempDir,
    _upstream: Process,
    nginx: Process,
    plain: Syncgate,
    tls: Syncgate,
    up: u16,
    /// nginx: HTTP/1.1, h2c, TLS.
    nginx_ports: [u16; 3],
    /// syncgate: plain (HTTP/1.1 and h2c), TLS.
    syncgate_ports: [u16; 2],
}

/// Idle connections the rig is sized for (syncgate's `[limits]`, nginx's `worker_connections`).
const MOST_IDLE: usize = 10_000;

impl Rig {
    /// Start everything, syncgate sized for `connections` clients at once.
    fn start(syncgate: &str, connections: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("big.json"), vec![b'x'; MIB]).unwrap();
        std::fs::create_dir(d.join("dav")).unwrap();
        let (cert, key) = certificate(d);
        let (up, px, px2, pxs, sg, sgs) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        // nginx's workers run as `nobody` unless told otherwise; as root, let them be root, so the
        // prefix (a private temporary folder) stays theirs too. SAFETY: geteuid has no
        // preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let upstream = Process::nginx(
            d,
            "upstream",
            &format!(
                "{user}worker_processes 1;\npid upstream.pid;\nerror_log upstream.err warn;\n\
                 worker_rlimit_nofile 65536;\nevents {{ worker_connections 16384; }}\n\
                 http {{ access_log off;\n server {{ listen 127.0.0.1:{up}; keepalive_requests 1000000;\n\
                 client_max_body_size 2m;\n\
                 location / {{ default_type application/json; return 200 '{doc}'; }}\n\
                 location = /big {{ default_type application/json; alias {big}; }}\n\
                 location = /upload {{ root {dav}; dav_methods PUT; client_body_buffer_size 2m; \
                 client_body_temp_path {dav}; }} }} }}\n",
                doc = document(),
                big = d.join("big.json").display(),
                dav = d.join("dav").display(),
            ),
        );
        let streaming = "proxy_pass http://up; proxy_http_version 1.1; \
                         proxy_set_header Connection \"\"; proxy_buffering off; \
                         proxy_request_buffering off;";
        let nginx = Process::nginx(
            d,
            "proxy",
            &format!(
                "{user}worker_processes auto;\npid proxy.pid;\nerror_log proxy.err warn;\n\
                 worker_rlimit_nofile 65536;\nevents {{ worker_connections 32768; }}\n\
                 http {{ access_log proxy.access.log combined buffer=64k;\n\
                 upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}\n\
                 server {{ listen 127.0.0.1:{px}; listen 127.0.0.1:{px2} http2;\n\
                 listen 127.0.0.1:{pxs} ssl http2; ssl_protocols TLSv1.3;\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 keepalive_requests 1000000; keepalive_timeout 120s; client_max_body_size 2m;\n\
                 location / {{ proxy_pass http://up; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; }}\n\
                 location = /big {{ {streaming} }}\n\
                 location = /upload {{ {streaming} }} }} }}\n",
                cert = cert.display(),
                key = key.display(),
            ),
        );
        let config = d.join("syncgate.toml");
        std::fs::write(
            &config,
            format!(
                "[proxy.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
                 [limits]\nmax_connections = {n}\nmax_connections_per_client = {n}\n",
                cert.display(),
                key.display(),
                n = connections,
            ),
        )
        .unwrap();
        let plain = Self::syncgate(syncgate, d, "plain", sg, up, None, connections);
        let tls = Self::syncgate(syncgate, d, "tls", sgs, up, Some(&config), connections);
        for port in [up, px, px2, pxs, sg, sgs] {
            wait_for(port);
        }
        Rig {
            dir,
            _upstream: upstream,
            nginx,
            plain,
            tls,
            up,
            nginx_ports: [px, px2, pxs],
            syncgate_ports: [sg, sgs],
        }
    }

    /// `syncgate serve` on `port` in front of the upstream; with `config` (TLS, limits), or only
    /// the limits when plain.
    fn syncgate(
        binary: &str,
        dir: &Path,
        name: &str,
        port: u16,
        up: u16,
        config: Option<&Path>,
        connections: usize,
    ) -> Syncgate {
        let config = match config {
            Some(config) => config.to_owned(),
            None => {
                let plain = dir.join("syncgate-plain.toml");
                std::fs::write(
                    &plain,
                    format!(
                        "[limits]\nmax_connections = {n}\nmax_connections_per_client = {n}\n",
                        n = connections
                    ),
                )
                .unwrap();
                plain
            }
        };
        let log = std::fs::File::create(dir.join(format!("syncgate-{name}.log"))).unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--upstream", &format!("http://127.0.0.1:{up}")])
            .arg("--db")
            .arg(dir.join(format!("syncgate-{name}.db")))
            // As shipped (`info`), unless BENCH_SYNCGATE_LOG says otherwise.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SYNCGATE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("HOME", dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("syncgate starts");
        let stdout = child.stdout.take().unwrap();
        let child = Syncgate(child);
        // Read to the end, not only to the line awaited: a closed pipe would end syncgate at its
        // next line of output.
        let (ready, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                if l.unwrap_or_default().contains("proxy listening") {
                    let _ = ready.send(());
                }
            }
        });
        let _ = listening.recv_timeout(Duration::from_secs(30));
        child
    }

    fn log_mib(&self) -> f64 {
        ["plain", "tls"]
            .iter()
            .map(|n| {
                std::fs::metadata(self.dir.path().join(format!("syncgate-{n}.log")))
                    .map_or(0, |m| m.len())
            })
            .sum::<u64>() as f64
            / MIB as f64
    }
}

/// One load case, run against both proxies.
struct Case {
    name: &'static str,
    load: Load,
    /// nginx's URL and syncgate's, and the process measured for syncgate.
    nginx_url: String,
    syncgate_url: String,
    syncgate_pid: u32,
    /// MiB moved per request, for a throughput column.
    mib_per_request: Option<f64>,
    /// Also run straight against the upstream (the ceiling).
    direct_url: Option<String>,
}

/// The comparison (see the module docs): every case in `rounds` alternating rounds of `secs`;
/// prints each run, the medians and the ratios, then the memory figures.
pub(crate) fn versus_nginx(syncgate: &str, secs: u64, connections: u32, rounds: usize) {
    if !ensure_tools() {
        return;
    }
    // Another build of syncgate (an earlier commit, for before/after figures) when asked.
    let other = std::env::var("BENCH_SYNCGATE_BIN").ok();
    let syncgate = other.as_deref().unwrap_or(syncgate);
    println!("\nsyncgate binary: {syncgate}");
    let limit = raise_file_limit(65_536);
    // syncgate keeps a descriptor per client connection and one for its upstream, plus 64
    // (`[limits]`); the load generator holds the client ends.
    let cap = (limit as usize).saturating_sub(64) / 2;
    let most = MOST_IDLE.min(cap.saturating_sub(100));
    let rig = Rig::start(syncgate, (most + 100).min(cap));
    let [px, px2, pxs] = rig.nginx_ports;
    let [sg, sgs] = rig.syncgate_ports;
    let (plain_pid, tls_pid) = (rig.plain.0.id(), rig.tls.0.id());
    let path = "/v1.0/users?$select=id,displayName";
    let upload = rig.dir.path().join("upload.lua");
    std::fs::write(
        &upload,
        format!(
            "wrk.method = \"PUT\"\nwrk.body = string.rep(\"x\", {MIB})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        ),
    )
    .unwrap();
    let h1 = Load::Wrk {
        connections,
        script: None,
    };
    let h2 = Load::H2load {
        connections: 4,
        streams: connections / 4,
    };
    let cases = [
        Case {
            name: "HTTP/1.1 keep-alive, 1 KB",
            load: h1.clone(),
            nginx_url: format!("http://127.0.0.1:{px}{path}"),
            syncgate_url: format!("http://127.0.0.1:{sg}{path}"),
            syncgate_pid: plain_pid,
            mib_per_request: None,
            direct_url: Some(format!("http://127.0.0.1:{}{path}", rig.up)),
        },
        Case {
            name: "HTTP/2 (h2c), 1 KB",
            load: h2.clone(),
            nginx_url: format!("http://127.0.0.1:{px2}{path}"),
            syncgate_url: format!("http://127.0.0.1:{sg}{path}"),
            syncgate_pid: plain_pid,
            mib_per_request: None,
            direct_url: None,
        },
        Case {
            name: "TLS, HTTP/1.1, 1 KB",
            load: h1,
            nginx_url: format!("https://127.0.0.1:{pxs}{path}"),
            syncgate_url: format!("https://127.0.0.1:{sgs}{path}"),
            syncgate_pid: tls_pid,
            mib_per_request: None,
            direct_url: None,
        },
        Case {
            name: "TLS, HTTP/2, 1 KB",
            load: h2,
            nginx_url: format!("https://127.0.0.1:{pxs}{path}"),
            syncgate_url: format!("https://127.0.0.1:{sgs}{path}"),
            syncgate_pid: tls_pid,
            mib_per_request: None,
            direct_url: None,
        },
        Case {
            name: "1 MiB download",
            load: Load::Wrk {
                connections: 8,
                script: None,
            },
            nginx_url: format!("http://127.0.0.1:{px}/big"),
            syncgate_url: format!("http://127.0.0.1:{sg}/big"),
            syncgate_pid: plain_pid,
            mib_per_request: Some(1.0),
            direct_url: None,
        },
        Case {
            name: "1 MiB upload",
            load: Load::Wrk {
                connections: 8,
                script: Some(upload),
            },
            nginx_url: format!("http://127.0.0.1:{px}/upload"),
            syncgate_url: format!("http://127.0.0.1:{sg}/upload"),
            syncgate_pid: plain_pid,
            mib_per_request: Some(1.0),
            direct_url: None,
        },
    ];
    println!(
        "\nsyncgate beside nginx: {secs} s per run, {rounds} alternating rounds, the same upstream \
         and load generator (wrk -t2, h2load -t2)"
    );
    println!(
        "TLS negotiated: nginx {}, syncgate {}",
        negotiated(pxs),
        negotiated(sgs)
    );
    let nginx_pid = rig.nginx.0.id();
    let scratch = rig.dir.path();
    let mut summary = Vec::new();
    for case in &cases {
        // Warm up: connections, pools, page cache, TLS sessions.
        run(&case.load, &case.nginx_url, 1, None, scratch);
        run(&case.load, &case.syncgate_url, 1, None, scratch);
        println!("\n{}", case.name);
        println!(
            "{:<36} {:>9} {:>8} {:>8} {:>10} {:>9}",
            "run", "req/s", "p50 ms", "p99 ms", "CPU ms/1k", "MiB/s"
        );
        let (mut direct, mut theirs, mut ours) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Alternate which proxy goes first, so neither always meets a warmer machine.
            let order = if round % 2 == 1 {
                [true, false]
            } else {
                [false, true]
            };
            for is_syncgate in order {
                let (who, url, pid) = if is_syncgate {
                    ("syncgate", &case.syncgate_url, case.syncgate_pid)
                } else {
                    ("nginx", &case.nginx_url, nginx_pid)
                };
                let r = run(&case.load, url, secs, Some(pid), scratch);
                println!(
                    "{}",
                    line(&format!("{who} #{round}"), &r, case.mib_per_request)
                );
                (if is_syncgate { &mut ours } else { &mut theirs }).push(r);
            }
            if let Some(url) = &case.direct_url {
                let r = run(&case.load, url, secs, None, scratch);
                println!(
                    "{}",
                    line(
                        &format!("direct to the upstream #{round}"),
                        &r,
                        case.mib_per_request
                    )
                );
                direct.push(r);
            }
        }
        if !direct.is_empty() {
            println!(
                "{}",
                line(
                    "median: direct (ceiling)",
                    &median(&direct),
                    case.mib_per_request
                )
            );
        }
        let (n, s) = (median(&theirs), median(&ours));
        println!("{}", line("median: nginx", &n, case.mib_per_request));
        println!("{}", line("median: syncgate", &s, case.mib_per_request));
        summary.push((case.name, n, s));
    }

    println!("\nsummary (medians; ratio = syncgate / nginx)");
    println!(
        "{:<28} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "case", "nginx/s", "syncgate/s", "ratio", "p99 ng", "p99 sg", "CPU ng", "CPU sg"
    );
    for (name, n, s) in &summary {
        let cpu = |r: &Run| r.cpu_ms_per_k.map_or("-".into(), |c| format!("{c:.1}"));
        println!(
            "{name:<28} {:>10.0} {:>10.0} {:>6.2}x {:>9.3} {:>9.3} {:>9} {:>9}",
            n.rps,
            s.rps,
            s.rps / n.rps,
            n.p99.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            cpu(n),
            cpu(s)
        );
    }
    let (rss, peak) = memory_mib(plain_pid);
    println!(
        "\nsyncgate (plain) after the load: resident {rss:.1} MiB, peak {peak:.1} MiB \
         (1 MiB bodies streamed by 8 connections at once)"
    );

    // Idle connections: resident memory with N keep-alive connections open, each after one request.
    println!(
        "\nidle keep-alive connections, each after one request (resident MiB, process and children)"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12}",
        "open", "nginx", "syncgate", "nginx +", "syncgate +"
    );
    let (nginx_base, _) = memory_mib(nginx_pid);
    let (syncgate_base, _) = memory_mib(plain_pid);
    for count in [1_000, MOST_IDLE] {
        let count = count.min(most);
        let n = {
            let _open = idle_connections(px, count);
            std::thread::sleep(Duration::from_millis(500));
            memory_mib(nginx_pid).0
        };
        let s = {
            let _open = idle_connections(sg, count);
            std::thread::sleep(Duration::from_millis(500));
            memory_mib(plain_pid).0
        };
        println!(
            "{count:<10} {n:>12.1} {s:>12.1} {:>12.1} {:>12.1}",
            n - nginx_base,
            s - syncgate_base
        );
        // Let both close what was just dropped before the next count.
        std::thread::sleep(Duration::from_secs(1));
    }
    if most < MOST_IDLE {
        println!("(capped at {most} connections: the open-file limit is {limit})");
    }
    println!("\nsyncgate's logs over the runs: {:.1} MiB", rig.log_mib());
}
