//! Pass-through cost, in one run: first syncgate beside nginx on the same upstream
//! (`passthrough/nginx.rs`: HTTP/1.1, HTTP/2, TLS, 1 MiB bodies, idle connections; wrk and h2load,
//! installed with apt when missing), then the same load sent straight to the emulator and through
//! an in-process proxy, side by side.
//!
//! `cargo bench --bench passthrough` (release build). Knobs, as environment variables:
//! `BENCH_SECS` (measured seconds per run, default 5), `BENCH_CONCURRENCY` (requests in flight,
//! default 32), `BENCH_NGINX=0` (skip the comparison with nginx), `BENCH_ROUNDS` (its alternating
//! rounds, default 3), `BENCH_SYNCGATE_LOG` (syncgate's `RUST_LOG` there, default `info` as
//! shipped), `BENCH_SYNCGATE_BIN` (another syncgate binary there, e.g. an earlier commit's, for
//! before/after figures). Each case warms up for one second first. The load generator shares the machine with
//! the servers, so absolute figures understate a dedicated proxy; the ratios are the point.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use syncgate::body::{self, Body};
use syncgate::config::Settings;
use syncgate::server::ServeOptions;
use tokio_util::sync::CancellationToken;

#[path = "support/processes.rs"]
mod processes;

#[path = "passthrough/nginx.rs"]
mod nginx;

const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one case measured.
struct Figures {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    bytes: u64,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64()
    }
}

#[derive(Clone)]
struct Case {
    method: Method,
    path: String,
    body: Bytes,
}

async fn drive(
    client: &Client<HttpConnector, Body>,
    base: &str,
    token: &str,
    case: &Case,
    concurrency: u64,
    duration: Duration,
) -> Figures {
    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = format!("{base}{}", case.path);
        let token = token.to_owned();
        let case = case.clone();
        let running = running.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            while running.load(Ordering::Relaxed) {
                let req = Request::builder()
                    .method(case.method.clone())
                    .uri(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/octet-stream")
                    .body(body::full(case.body.clone()))
                    .unwrap();
                let t = Instant::now();
                let resp = client.request(req).await.expect("request failed");
                assert_eq!(resp.status(), StatusCode::OK);
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                latencies.push(t.elapsed());
                bytes += (got.len() + case.body.len()) as u64;
            }
            (latencies, bytes)
        }));
    }
    tokio::time::sleep(duration).await;
    running.store(false, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut bytes = 0;
    for w in workers {
        let (l, b) = w.await.unwrap();
        all.extend(l);
        bytes += b;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        bytes,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    syncgate::tls::install_default_provider();
    let secs = env_or("BENCH_SECS", 5);
    let concurrency = env_or("BENCH_CONCURRENCY", 32);
    // syncgate beside nginx first (issue 13), on a quiet machine; BENCH_NGINX=0 skips it.
    if env_or("BENCH_NGINX", 1) == 1 {
        let rounds = env_or("BENCH_ROUNDS", 3) as usize;
        tokio::task::spawn_blocking(move || {
            nginx::versus_nginx(
                env!("CARGO_BIN_EXE_syncgate"),
                secs,
                concurrency as u32,
                rounds,
            )
        })
        .await
        .unwrap();
    }
    let stop = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(syncgate::emulator::run(
        listener,
        ServeOptions::default(),
        stop.clone(),
    ));
    let db_dir = std::env::temp_dir().join(format!("syncgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&db_dir).unwrap();
    let settings = Settings::for_upstream(&emulator, &db_dir.join("syncgate.db")).unwrap();
    let proxy = syncgate::app::start(settings, stop.clone()).await.unwrap();
    let proxy = proxy.url();

    let token = syncgate::token::unsigned_jwt(
        &json!({"oid": "bench", "scp": "Policy.ReadWrite.CrossTenantAccess"}),
    );
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    // A partner with a sync policy, so the read case is a real Graph document.
    for (method, path, body) in [
        (
            Method::POST,
            "/v1.0/policies/crossTenantAccessPolicy/partners".to_string(),
            json!({"tenantId": PARTNER}),
        ),
        (
            Method::PUT,
            format!(
                "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
            ),
            json!({"displayName": "Fabrikam", "userSyncInbound": {"isSyncAllowed": true}}),
        ),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("{emulator}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body::full(body.to_string()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert!(
            resp.status().is_success(),
            "seeding failed: {}",
            resp.status()
        );
    }

    let cases = [
        (
            "GET identitySynchronization (small JSON)",
            Case {
                method: Method::GET,
                path: format!(
                    "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
                ),
                body: Bytes::new(),
            },
        ),
        (
            "POST 1 MiB echo (streamed both ways)",
            Case {
                method: Method::POST,
                path: "/_emulator/echo".into(),
                body: Bytes::from(vec![7u8; 1024 * 1024]),
            },
        ),
    ];

    println!(
        "syncgate pass-through benchmark: {secs} s per case, {concurrency} requests in flight, release build"
    );
    println!(
        "{:<42} {:<8} {:>10} {:>9} {:>9} {:>9}",
        "case", "target", "req/s", "p50 ms", "p99 ms", "MiB/s"
    );
    for (name, case) in &cases {
        let mut results = Vec::new();
        for (target, base) in [("direct", &emulator), ("proxy", &proxy)] {
            drive(
                &client,
                base,
                &token,
                case,
                concurrency,
                Duration::from_secs(1),
            )
            .await;
            let f = drive(
                &client,
                base,
                &token,
                case,
                concurrency,
                Duration::from_secs(secs),
            )
            .await;
            println!(
                "{:<42} {:<8} {:>10.0} {:>9} {:>9} {:>9.1}",
                name,
                target,
                f.rps(),
                ms(f.p50),
                ms(f.p99),
                f.mib_per_s()
            );
            results.push(f);
        }
        let (direct, proxied) = (&results[0], &results[1]);
        println!(
            "{:<42} {:<8} {:>9.2}x {:>8.2}x {:>8.2}x   (proxy / direct; throughput ratio, latency ratios)",
            name,
            "ratio",
            proxied.rps() / direct.rps(),
            proxied.p50.as_secs_f64() / direct.p50.as_secs_f64(),
            proxied.p99.as_secs_f64() / direct.p99.as_secs_f64(),
        );
    }
    stop.cancel();
}
