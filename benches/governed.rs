//! Governed change cost: throughput of governed PATCH and PUT+DELETE through the proxy with many
//! partners in parallel, the proxy's own added latency, and the raw rate of durable single-row
//! SQLite inserts on the same machine, all in one run.
//!
//! `cargo bench --bench governed`. Knobs: `BENCH_SECS` (per case, default 5),
//! `BENCH_PARTNERS` (parallel partners, default 32).
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
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use syncgate::body::{self, Body};
use syncgate::config::Settings;
use syncgate::server::ServeOptions;
use tokio_util::sync::CancellationToken;

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

/// Durable single-row inserts, one transaction and fsync each, same pragmas as the log.
async fn raw_inserts(dir: &std::path::Path, duration: Duration) -> Figures {
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
    let event = "x".repeat(1500); // about the size of a governed event's JSON
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut seq = 0i64;
    while started.elapsed() < duration {
        let t = Instant::now();
        seq += 1;
        sqlx::query("INSERT INTO t (seq, event, hash) VALUES (?, ?, ?)")
            .bind(seq)
            .bind(&event)
            .bind("0".repeat(64))
            .execute(&mut conn)
            .await
            .unwrap();
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Figures {
        ops: latencies.len(),
        elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, f: &Figures, unit: &str) {
    println!(
        "{name:<52} {:>10.0} {unit:<9} {:>9} {:>9}",
        f.rate(),
        ms(f.p50),
        ms(f.p99)
    );
}

#[tokio::main]
async fn main() {
    syncgate::tls::install_default_provider();
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
    let settings = Settings::for_upstream(&emulator, &dir.path().join("syncgate.db")).unwrap();
    let proxy = syncgate::app::start(settings, stop.clone())
        .await
        .unwrap()
        .url();

    let token = syncgate::token::unsigned_jwt(
        &json!({"oid": "bench", "scp": "Policy.ReadWrite.CrossTenantAccess"}),
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    for i in 0..partners * 2 {
        let p = partner(i);
        let s = call(
            &client,
            &token,
            Method::POST,
            format!("{emulator}/v1.0/policies/crossTenantAccessPolicy/partners"),
            Some(json!({"tenantId": p})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        if i < partners {
            let s = call(
                &client,
                &token,
                Method::PUT,
                format!("{emulator}{}", sync_path(&p)),
                Some(json!({"displayName": "bench"})),
            )
            .await;
            assert_eq!(s, StatusCode::NO_CONTENT);
        }
    }

    println!(
        "syncgate governed-change benchmark: {} s per case, {partners} partners in parallel, release build",
        secs.as_secs()
    );
    println!(
        "{:<52} {:>10} {:<9} {:>9} {:>9}",
        "case", "rate", "", "p50 ms", "p99 ms"
    );

    let raw = raw_inserts(dir.path(), secs).await;
    row(
        "raw durable single-row SQLite inserts (1 writer)",
        &raw,
        "rows/s",
    );

    for workers in [1, partners] {
        let (c, e, t) = (client.clone(), emulator.clone(), token.clone());
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
        let (c, p, t) = (client.clone(), proxy.clone(), token.clone());
        let governed = run(workers, secs, move |w, i| {
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
        .await;
        let (c, p, t) = (client.clone(), proxy.clone(), token.clone());
        let create_delete = run(workers, secs, move |w, i| {
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
        .await;
        println!("-- {workers} partner(s) in parallel");
        row(
            "direct GET+PATCH+GET to the emulator (baseline)",
            &direct,
            "ops/s",
        );
        row("governed PATCH through syncgate", &governed, "ops/s");
        row(
            "governed PUT then DELETE through syncgate (pairs)",
            &create_delete,
            "pairs/s",
        );
        println!(
            "{:<52} {:>10.0} events/s = {:.2}x the raw insert rate; added latency p50 {} ms, p99 {} ms",
            "audit log under governed PATCH",
            governed.rate() * 2.0,
            governed.rate() * 2.0 / raw.rate(),
            ms(governed.p50.saturating_sub(direct.p50)),
            ms(governed.p99.saturating_sub(direct.p99)),
        );
    }
    stop.cancel();
}
