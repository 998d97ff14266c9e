//! Governed change cost: throughput of governed PATCH and PUT+DELETE through the proxy with many
//! partners in parallel, the proxy's own added latency, and the raw rate of durable single-row
//! inserts on the same machine, all in one run.
//!
//! `cargo bench --bench governed`. Knobs: `BENCH_SECS` (per case, default 5),
//! `BENCH_PARTNERS` (parallel partners, default 32).
//!
//! `cargo bench --bench governed -- --compare-tree` runs each backend twice side by side: the
//! writer as it was before issue 11 (no Merkle tree, no checkpoints) and as it is (the tree
//! kept in each group's transaction, a checkpoint signed every 1,000 events and sent to a file
//! witness), each on a log of its own: what tamper evidence costs governed writes.
//!
//! `cargo bench --bench governed -- --backend postgres` runs every case on SQLite and on
//! PostgreSQL (a database of its own on the server at `SYNCGATE_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`, created for the run and dropped after) and prints the two
//! side by side: one proxy per backend in front of the same emulator, the same partners, the same
//! direct baseline.
//!
//! A governed change costs three upstream calls (before GET, the write, after GET) plus two
//! durable log appends (`received`, `completed`). The baseline "direct" case makes the same three
//! calls straight to the emulator, so `governed − direct` is what syncgate itself adds: parsing,
//! locking, the two appends (each waiting for an fsync, shared by a group), and one extra hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, PgConnection};
use syncgate::body::{self, Body};
use syncgate::config::{RawConfig, Settings};
use syncgate::server::ServeOptions;
use tokio_util::sync::CancellationToken;

#[path = "support/postgres.rs"]
mod support;
use support::BenchDatabase;

type HttpClient = Client<HttpConnector, Body>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn partner(i: u64) -> String {
    format!("9c5d131d-b1c3-4fc4-9e3f-{i:012x}")
}

fn sync_path(p: &str) -> String {
    format!("/v1.0/policies/crossTenantAccessPolicy/partners/{p}/identitySynchronization")
}

async fn call(
    client: &HttpClient,
    token: &str,
    method: Method,
    url: String,
    body: Option<serde_json::Value>,
) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body
        .map(|b| body::full(b.to_string()))
        .unwrap_or_else(body::empty);
    let resp = client
        .request(req.body(body).unwrap())
        .await
        .expect("request failed");
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

#[derive(Clone)]
struct Figures {
    ops: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run `op(worker, iteration)` on `workers` tasks for `duration`.
async fn run<F, Fut>(workers: u64, duration: Duration, op: F) -> Figures
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let running = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, running) = (op.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while running.load(Ordering::Relaxed) {
                let t = Instant::now();
                op(w, i).await;
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    running.store(false, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        ops: all.len(),
        elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

/// Where the audit log lives for one column of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// `--backend sqlite` (the default) or `--backend postgres` (SQLite and PostgreSQL side by side).
/// Other arguments (cargo passes `--bench`) are ignored.
fn backends() -> Vec<Backend> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "--backend" => Some(args.get(i + 1).cloned().unwrap_or_default()),
        _ => a.strip_prefix("--backend=").map(str::to_owned),
    });
    match value.as_deref() {
        None | Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Sqlite, Backend::Postgres],
        Some(other) => panic!("--backend takes sqlite or postgres, not {other:?}"),
    }
}

/// `--compare-tree`: each backend without and with the Merkle tree (see the module's doc).
fn compare_tree() -> bool {
    std::env::args().any(|a| a == "--compare-tree")
}

/// One proxy's column: its backend and what it runs.
#[derive(Clone)]
struct Variant {
    backend: Backend,
    label: String,
}

/// Latencies of a single-writer loop, turned into [`Figures`].
struct Timings {
    started: Instant,
    latencies: Vec<Duration>,
}

impl Timings {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            latencies: Vec::new(),
        }
    }

    fn figures(mut self) -> Figures {
        let elapsed = self.started.elapsed();
        self.latencies.sort();
        let l = &self.latencies;
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        Figures {
            ops: l.len(),
            elapsed,
            p50: pct(0.5),
            p99: pct(0.99),
        }
    }
}

/// About the size of a governed event's JSON.
fn raw_event() -> String {
    "x".repeat(1500)
}

/// Durable single-row inserts, one transaction and fsync each, same pragmas as the log.
async fn raw_sqlite_inserts(dir: &std::path::Path, duration: Duration) -> Figures {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY, event TEXT NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let event = raw_event();
    timed_inserts(duration, async |seq| {
        sqlx::query("INSERT INTO t (seq, event, hash) VALUES (?, ?, ?)")
            .bind(seq)
            .bind(&event)
            .bind("0".repeat(64))
            .execute(&mut conn)
            .await
            .unwrap();
    })
    .await
}

/// Run `insert(seq)` for seq = 1, 2, ... until `duration` has passed, timing each.
async fn timed_inserts(duration: Duration, mut insert: impl AsyncFnMut(i64)) -> Figures {
    let mut timings = Timings::new();
    let mut seq = 0i64;
    while timings.started.elapsed() < duration {
        let t = Instant::now();
        seq += 1;
        insert(seq).await;
        timings.latencies.push(t.elapsed());
    }
    timings.figures()
}

/// The same on PostgreSQL: one autocommitted INSERT each, waiting for its WAL flush
/// (`synchronous_commit` as the server has it, `on` by default).
async fn raw_postgres_inserts(url: &str, duration: Duration) -> Figures {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query(
        "CREATE TABLE bench_raw (seq BIGINT PRIMARY KEY, event TEXT NOT NULL, hash TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let event = raw_event();
    let figures = timed_inserts(duration, async |seq| {
        sqlx::query("INSERT INTO bench_raw (seq, event, hash) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(&event)
            .bind("0".repeat(64))
            .execute(&mut conn)
            .await
            .unwrap();
    })
    .await;
    let _ = conn.close().await;
    figures
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// One backend's columns: rate, unit, p50, p99 (or blanks).
fn columns(f: Option<&Figures>, unit: &str) -> String {
    match f {
        Some(f) => format!(
            "{:>10.0} {unit:<9} {:>9} {:>9}",
            f.rate(),
            ms(f.p50),
            ms(f.p99)
        ),
        None => format!("{:>10} {:<9} {:>9} {:>9}", "", "", "", ""),
    }
}

/// A report line: the case, then one group of columns per backend.
fn row(name: &str, figures: &[Option<&Figures>], unit: &str) {
    let groups: Vec<String> = figures.iter().map(|f| columns(*f, unit)).collect();
    println!("{name:<52} {}", groups.join(" | "));
}

/// One running proxy per backend, in front of `emulator`.
struct Proxies {
    variants: Vec<Variant>,
    urls: Vec<String>,
    running: Vec<syncgate::app::RunningProxy>,
    /// One database per PostgreSQL variant (each keeps a log of its own).
    postgres: Vec<BenchDatabase>,
}

async fn start_proxies(
    backends: Vec<Backend>,
    emulator: &str,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> Proxies {
    let mut proxies = Proxies {
        variants: Vec::new(),
        urls: Vec::new(),
        running: Vec::new(),
        postgres: Vec::new(),
    };
    let compare = compare_tree();
    for backend in backends {
        let kinds: &[bool] = if compare { &[false, true] } else { &[true] };
        for (n, &tree) in kinds.iter().enumerate() {
            let settings = match backend {
                Backend::Sqlite => {
                    Settings::for_upstream(emulator, &dir.join(format!("syncgate-{n}.db"))).unwrap()
                }
                Backend::Postgres => {
                    let db = BenchDatabase::create().await;
                    let settings = postgres_settings(emulator, &db.url(), dir, n);
                    proxies.postgres.push(db);
                    settings
                }
            };
            let (settings, label) = match (compare, tree) {
                (false, _) => (settings, backend.name().to_owned()),
                (true, false) => (
                    settings.without_tree(),
                    format!("{} before (no tree)", backend.name()),
                ),
                (true, true) => (
                    settings
                        .with_file_witness(&dir.join(format!("witness-{}-{n}", backend.name()))),
                    format!("{} tree+checkpoints+witness", backend.name()),
                ),
            };
            let running = syncgate::app::start(settings, stop.clone()).await.unwrap();
            proxies.urls.push(running.url());
            proxies.running.push(running);
            proxies.variants.push(Variant { backend, label });
        }
    }
    proxies
}

/// The settings an operator would write for one replica on PostgreSQL (the config file's keys,
/// so the bench follows the documented surface).
fn postgres_settings(emulator: &str, db: &str, dir: &std::path::Path, n: usize) -> Settings {
    let key = dir.join(format!("postgres-{n}.token-key"));
    // 32 random bytes, hex.
    let hex = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&key, hex).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = dir.join(format!("postgres-{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"{emulator}\"\n[store]\nurl = \"{db}\"\ntoken_key = \"{}\"\n\
             [checkpoints]\nkey = \"{}\"\n",
            key.display(),
            dir.join(format!("postgres-{n}.checkpoint-key")).display()
        ),
    )
    .unwrap();
    RawConfig::load(&config).unwrap().validate().unwrap()
}

#[tokio::main]
async fn main() {
    syncgate::tls::install_default_provider();
    let backends = backends();
    let secs = Duration::from_secs(env_or("BENCH_SECS", 5));
    let partners = env_or("BENCH_PARTNERS", 32);
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(syncgate::emulator::run(
        listener,
        ServeOptions::default(),
        stop.clone(),
    ));
    let proxies = start_proxies(backends.clone(), &emulator, dir.path(), &stop).await;

    let token = syncgate::token::unsigned_jwt(
        &json!({"oid": "bench", "scp": "Policy.ReadWrite.CrossTenantAccess"}),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    seed(&client, &token, &emulator, partners).await;

    println!(
        "syncgate governed-change benchmark: {} s per case, {partners} partners in parallel, release build",
        secs.as_secs()
    );
    let group = format!("{:>10} {:<9} {:>9} {:>9}", "rate", "", "p50 ms", "p99 ms");
    let columns = proxies.variants.len();
    if columns > 1 {
        let names: Vec<String> = proxies
            .variants
            .iter()
            .map(|v| format!("{:<40}", v.label))
            .collect();
        println!("{:<52} {}", "", names.join(" | "));
    }
    println!("{:<52} {}", "case", vec![group; columns].join(" | "));

    // The raw insert rate of each backend, shown in each of its columns.
    let mut raw_of = Vec::new();
    for backend in &backends {
        raw_of.push(match backend {
            Backend::Sqlite => raw_sqlite_inserts(dir.path(), secs).await,
            Backend::Postgres => {
                let url = proxies.postgres[0].url();
                raw_postgres_inserts(&url, secs).await
            }
        });
    }
    let raw: Vec<Figures> = proxies
        .variants
        .iter()
        .map(|v| {
            let k = backends.iter().position(|b| *b == v.backend).unwrap();
            raw_of[k].clone()
        })
        .collect();
    let raw_name = if backends.len() > 1 {
        "raw durable single-row inserts (1 writer)"
    } else {
        "raw durable single-row SQLite inserts (1 writer)"
    };
    row(
        raw_name,
        &raw.iter().map(Some).collect::<Vec<_>>(),
        "rows/s",
    );

    for workers in [1, partners] {
        cases(
            &client, &token, &emulator, &proxies, workers, partners, secs, &raw,
        )
        .await;
    }
    stop.cancel();
    for running in proxies.running {
        running.stopped().await;
    }
    drop(proxies.postgres);
}

/// Create `2 × partners` partners, the first half with a sync policy to PATCH.
async fn seed(client: &HttpClient, token: &str, emulator: &str, partners: u64) {
    for i in 0..partners * 2 {
        let p = partner(i);
        let s = call(
            client,
            token,
            Method::POST,
            format!("{emulator}/v1.0/policies/crossTenantAccessPolicy/partners"),
            Some(json!({"tenantId": p})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        if i < partners {
            let s = call(
                client,
                token,
                Method::PUT,
                format!("{emulator}{}", sync_path(&p)),
                Some(json!({"displayName": "bench"})),
            )
            .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        }
    }
}

/// The direct baseline once, then the governed cases on each backend, printed side by side.
#[allow(clippy::too_many_arguments)]
async fn cases(
    client: &HttpClient,
    token: &str,
    emulator: &str,
    proxies: &Proxies,
    workers: u64,
    partners: u64,
    secs: Duration,
    raw: &[Figures],
) {
    let (c, e, t) = (client.clone(), emulator.to_owned(), token.to_owned());
    let direct = run(workers, secs, move |w, i| {
        let (c, e, t) = (c.clone(), e.clone(), t.clone());
        async move {
            let url = format!("{e}{}", sync_path(&partner(w)));
            call(&c, &t, Method::GET, url.clone(), None).await;
            let s = call(
                &c,
                &t,
                Method::PATCH,
                url.clone(),
                Some(json!({"displayName": format!("d{i}")})),
            )
            .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            call(&c, &t, Method::GET, url, None).await;
        }
    })
    .await;
    let mut governed = Vec::new();
    let mut create_delete = Vec::new();
    for proxy in &proxies.urls {
        let (c, p, t) = (client.clone(), proxy.clone(), token.to_owned());
        governed.push(
            run(workers, secs, move |w, i| {
                let (c, p, t) = (c.clone(), p.clone(), t.clone());
                async move {
                    let s = call(
                        &c,
                        &t,
                        Method::PATCH,
                        format!("{p}{}", sync_path(&partner(w))),
                        Some(json!({"displayName": format!("g{i}")})),
                    )
                    .await;
                    assert_eq!(s, StatusCode::NO_CONTENT);
                }
            })
            .await,
        );
        let (c, p, t) = (client.clone(), proxy.clone(), token.to_owned());
        create_delete.push(
            run(workers, secs, move |w, i| {
                let (c, p, t) = (c.clone(), p.clone(), t.clone());
                async move {
                    let url = format!("{p}{}", sync_path(&partner(partners + w)));
                    let s = call(
                        &c,
                        &t,
                        Method::PUT,
                        url.clone(),
                        Some(json!({"displayName": format!("c{i}")})),
                    )
                    .await;
                    assert_eq!(s, StatusCode::NO_CONTENT);
                    let s = call(&c, &t, Method::DELETE, url, None).await;
                    assert_eq!(s, StatusCode::NO_CONTENT);
                }
            })
            .await,
        );
    }
    println!("-- {workers} partner(s) in parallel");
    // The baseline does not depend on the backend: shown once, in the first group.
    let mut baseline = vec![Some(&direct)];
    baseline.resize(proxies.variants.len(), None);
    row(
        "direct GET+PATCH+GET to the emulator (baseline)",
        &baseline,
        "ops/s",
    );
    row(
        "governed PATCH through syncgate",
        &governed.iter().map(Some).collect::<Vec<_>>(),
        "ops/s",
    );
    row(
        "governed PUT then DELETE through syncgate (pairs)",
        &create_delete.iter().map(Some).collect::<Vec<_>>(),
        "pairs/s",
    );
    for (k, variant) in proxies.variants.iter().enumerate() {
        let name = if proxies.variants.len() > 1 {
            format!("audit log under governed PATCH ({})", variant.label)
        } else {
            "audit log under governed PATCH".to_owned()
        };
        println!(
            "{name:<52} {:>10.0} events/s = {:.2}x the raw insert rate; added latency p50 {} ms, p99 {} ms",
            governed[k].rate() * 2.0,
            governed[k].rate() * 2.0 / raw[k].rate(),
            ms(governed[k].p50.saturating_sub(direct.p50)),
            ms(governed[k].p99.saturating_sub(direct.p99)),
        );
    }
}
