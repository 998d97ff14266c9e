//! syncgate beside nginx, the reference users compare an egress proxy with: both in front of the
//! same upstream, loaded by the same generator (wrk), in alternating runs of one session, with
//! the CPU each proxy spent per request.
//!
//! The upstream is a second nginx answering every path with the same 1 KB JSON document (no
//! access log): neutral, and fast enough that the proxies, not it, are what is measured. The
//! proxy nginx is `proxy_pass` with an upstream keep-alive pool (`keepalive 64`, HTTP/1.1,
//! `Connection ""`), `worker_processes auto`, and its default access log (buffered 64 KB), as a
//! production egress proxy would log; syncgate runs as shipped (`syncgate serve`, logs at `info`
//! to a file). The direct case (wrk straight to the upstream) is the ceiling for this machine.
//!
//! nginx, wrk and h2load are installed with apt when missing (as root; otherwise it says what to
//! install and skips this part).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One wrk run: requests per second and latency percentiles.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// CPU seconds the proxy spent per 1,000 requests (user + system), when known.
    pub(crate) cpu_ms_per_k: Option<f64>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tools, installed with apt when missing; `false` when they are not there and cannot be.
fn ensure_tools() -> bool {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("nginx") && have("wrk") {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("nginx or wrk is missing and this is not root: apt-get install nginx wrk");
        return false;
    }
    eprintln!("installing nginx, wrk and nghttp2-client with apt-get...");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "nginx", "wrk", "nghttp2-client"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok && have("nginx") && have("wrk")
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

/// An nginx started with `conf` (its prefix `dir`), in the foreground; killed on drop.
struct Nginx(Child);

impl Nginx {
    fn start(dir: &Path, name: &str, conf: &str) -> Nginx {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Nginx(child)
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would leave them running).
    fn drop(&mut self) {
        // SAFETY: kill has no preconditions; the pid is our child's, not yet reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Syncgate(Child);

impl Drop for Syncgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until `port` takes connections.
fn wait_for(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User + system CPU seconds of `pid` and its children (nginx's workers), from /proc.
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
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut total = ticks(pid);
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        total += ticks(child);
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    total as f64 / hz
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

/// `wrk` with `connections` keep-alive connections on `url` for `secs`, and what `pid` (the
/// proxy, when given) spent of CPU meanwhile.
fn wrk(url: &str, connections: u32, secs: u64, pid: Option<u32>) -> Run {
    let before = pid.map(cpu_seconds);
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk runs");
    let after = pid.map(cpu_seconds);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    let mut requests = None;
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
    let cpu_ms_per_k = match (before, after, requests) {
        (Some(b), Some(a), Some(n)) if n > 0.0 => Some((a - b) * 1000.0 / (n / 1000.0)),
        _ => None,
    };
    Run {
        rps: rps.unwrap_or_else(|| panic!("no Requests/sec from wrk:\n{text}")),
        p50: p50.unwrap_or_default(),
        p99: p99.unwrap_or_default(),
        cpu_ms_per_k,
    }
}

fn median(runs: &[Run]) -> Run {
    let mut by_rps = runs.to_vec();
    by_rps.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    by_rps[by_rps.len() / 2]
}

fn line(name: &str, r: &Run) -> String {
    let cpu = r
        .cpu_ms_per_k
        .map(|c| format!("{c:>9.1}"))
        .unwrap_or_else(|| format!("{:>9}", "-"));
    format!(
        "{name:<34} {:>10.0} {:>9.3} {:>9.3} {cpu}",
        r.rps,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3
    )
}

/// The HTTP/1.1 keep-alive case: `rounds` alternating runs of syncgate and nginx (and the
/// direct upstream), `secs` each, `connections` connections; prints every run and the medians.
pub(crate) fn versus_nginx(syncgate: &str, secs: u64, connections: u32, rounds: usize) {
    if !ensure_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (up, px, sg) = (free_port(), free_port(), free_port());
    // nginx's workers run as `nobody` unless told otherwise; as root, let them be root, so the
    // prefix (a private temporary folder) stays theirs too. SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    let _upstream = Nginx::start(
        dir.path(),
        "upstream",
        &format!(
            "{user}worker_processes 1;\npid upstream.pid;\nerror_log upstream.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n server {{ listen 127.0.0.1:{up}; keepalive_requests 1000000;\n\
             location / {{ default_type application/json; return 200 '{}'; }} }} }}\n",
            document()
        ),
    );
    let proxy = Nginx::start(
        dir.path(),
        "proxy",
        &format!(
            "{user}worker_processes auto;\npid proxy.pid;\nerror_log proxy.err warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log proxy.access.log combined buffer=64k;\n\
             upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{px}; keepalive_requests 1000000;\n\
             location / {{ proxy_pass http://up; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; }} }} }}\n"
        ),
    );
    let log = std::fs::File::create(dir.path().join("syncgate.log")).unwrap();
    let mut child = Command::new(syncgate)
        .args(["serve", "--listen", &format!("127.0.0.1:{sg}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--upstream", &format!("http://127.0.0.1:{up}")])
        .arg("--db")
        .arg(dir.path().join("syncgate.db"))
        // As shipped (`info`), unless BENCH_SYNCGATE_LOG says otherwise (to see what logging costs).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SYNCGATE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("syncgate starts");
    let stdout = child.stdout.take().unwrap();
    let syncgate_child = Syncgate(child);
    for l in BufReader::new(stdout).lines() {
        if l.unwrap_or_default().contains("proxy listening") {
            break;
        }
    }
    for port in [up, px, sg] {
        wait_for(port);
    }
    let path = "/v1.0/users?$select=id,displayName";
    let (direct_url, nginx_url, syncgate_url) = (
        format!("http://127.0.0.1:{up}{path}"),
        format!("http://127.0.0.1:{px}{path}"),
        format!("http://127.0.0.1:{sg}{path}"),
    );
    let (nginx_pid, syncgate_pid) = (proxy.0.id(), syncgate_child.0.id());
    // Warm up: connections, pools, page cache.
    wrk(&nginx_url, connections, 1, None);
    wrk(&syncgate_url, connections, 1, None);
    println!(
        "\nsyncgate beside nginx: HTTP/1.1 keep-alive, {connections} connections, 1 KB JSON, wrk -t2, \
         {secs} s per run, {rounds} alternating rounds"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9}",
        "run", "req/s", "p50 ms", "p99 ms", "CPU ms/1k"
    );
    let (mut direct, mut nginx, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which proxy goes first, so neither always meets a warmer machine.
        let order: [&str; 2] = if round % 2 == 1 {
            ["syncgate", "nginx"]
        } else {
            ["nginx", "syncgate"]
        };
        for who in order {
            let run = match who {
                "syncgate" => wrk(&syncgate_url, connections, secs, Some(syncgate_pid)),
                _ => wrk(&nginx_url, connections, secs, Some(nginx_pid)),
            };
            println!("{}", line(&format!("{who} #{round}"), &run));
            if who == "syncgate" {
                ours.push(run)
            } else {
                nginx.push(run)
            }
        }
        let run = wrk(&direct_url, connections, secs, None);
        println!(
            "{}",
            line(&format!("direct to the upstream #{round}"), &run)
        );
        direct.push(run);
    }
    let (d, n, s) = (median(&direct), median(&nginx), median(&ours));
    println!("{}", line("median: direct (ceiling)", &d));
    println!("{}", line("median: nginx proxy_pass", &n));
    println!("{}", line("median: syncgate", &s));
    println!(
        "syncgate / nginx: {:.2}x requests/s, p99 {:.2}x{}",
        s.rps / n.rps,
        s.p99.as_secs_f64() / n.p99.as_secs_f64().max(1e-9),
        match (s.cpu_ms_per_k, n.cpu_ms_per_k) {
            (Some(a), Some(b)) if b > 0.0 => format!(", CPU per request {:.2}x", a / b),
            _ => String::new(),
        }
    );
    let log_size = std::fs::metadata(dir.path().join("syncgate.log")).map_or(0, |m| m.len());
    println!(
        "syncgate's log over the runs: {:.1} MiB",
        log_size as f64 / (1024.0 * 1024.0)
    );
}
