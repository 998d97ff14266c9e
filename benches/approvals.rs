//! What the change-approval gate costs: one held change taken through its whole life, over and
//! over, step by step, beside an allowed governed change and the same write made straight to
//! the emulator, in one run.
//!
//! `cargo bench --bench approvals` (SQLite), `-- --backend postgres` for both backends side by
//! side (a database of its own on `SYNCGATE_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`, dropped after). Knob: `BENCH_CYCLES` (default 300).
//!
//! Each cycle uses a partner of its own, one request at a time:
//! - **hold**: the change is held; the gate reads the requester's latest request and writes a new
//!   one with its `approval_requested` event (one guarded transaction, with an outbox notice);
//! - **vote**: one approver's vote through the admin API (a read, then a guarded transaction:
//!   the vote, the request's new status and the `approval_vote` event);
//! - **send**: the same change again, sent under the approval (a read, the guarded `received`
//!   that marks the approval used, the write, `completed`).
//!
//! The references: an allowed governed PATCH of another partner's policy (no gate), and the same
//! PATCH straight to the emulator. (hold and send are PUTs creating a policy: the same three
//! upstream calls as a PATCH.)

use std::time::{Duration, Instant};

use base64::Engine;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use syncgate::body::{self, Body};
use syncgate::config::RawConfig;
use syncgate::server::ServeOptions;
use tokio_util::sync::CancellationToken;

#[path = "support/postgres.rs"]
mod support;
use support::BenchDatabase;

type HttpClient = Client<HttpConnector, Body>;

const LISTED: &str = "9c5d131d-b1c3-4fc4-9e3f-000000000001";

fn partner(i: u64) -> String {
    format!("6b1e5a2c-7d4f-4e8a-9c3b-{i:012x}")
}

fn sync_path(p: &str) -> String {
    format!("/v1.0/policies/crossTenantAccessPolicy/partners/{p}/identitySynchronization")
}

fn enable(name: &str) -> Value {
    json!({"displayName": name, "userSyncInbound": {"isSyncAllowed": true}})
}

/// Send one request; its status and body.
async fn call(
    client: &HttpClient,
    token: &str,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
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
    let resp = client.request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Latencies of one step over the cycles.
#[derive(Default)]
struct Step(Vec<Duration>);

impl Step {
    fn push(&mut self, since: Instant) {
        self.0.push(since.elapsed());
    }

    fn columns(&mut self) -> String {
        self.0.sort();
        let pct = |p: f64| self.0[((self.0.len() as f64 * p) as usize).min(self.0.len() - 1)];
        let total: Duration = self.0.iter().sum();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{:>9.3} {:>9.3} {:>9.0}",
            ms(pct(0.5)),
            ms(pct(0.99)),
            self.0.len() as f64 / total.as_secs_f64()
        )
    }
}

/// An approver's API key and the `[[admin.principals]]` hash of it.
fn approver_key() -> (String, String) {
    let bytes = |n: usize| -> Vec<u8> {
        (0..n.div_ceil(16))
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .take(n)
            .collect()
    };
    let (key, salt) = (bytes(32), bytes(16));
    let hash = Sha256::new()
        .chain_update(&salt)
        .chain_update(&key)
        .finalize();
    (
        format!(
            "sgk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key)
        ),
        format!("sha256:{}:{}", hex::encode(salt), hex::encode(hash)),
    )
}

/// The figures of one backend: hold, vote, send, allowed (no gate).
struct Run {
    label: &'static str,
    steps: [Step; 4],
}

#[allow(clippy::too_many_arguments)]
async fn run_backend(
    label: &'static str,
    postgres: Option<&BenchDatabase>,
    emulator: &str,
    client: &HttpClient,
    token: &str,
    cycles: u64,
    offset: u64,
    stop: &CancellationToken,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (key, hash) = approver_key();
    let config = format!(
        r#"
[[rules.builtin]]
id = "new-partners"
type = "partner_allowlist"
action = "require_approval"
partners = [{{ tenant_id = "{LISTED}", display_name = "Listed" }}]

[approvals.policies.default]
required = 1

[[admin.principals]]
name = "ann"
roles = ["approver"]
oid = "aaaaaaaa-0000-4000-8000-000000000001"
key_hash = "{hash}"
"#
    );
    let mut raw: RawConfig = toml::from_str(&config).unwrap();
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = emulator.to_owned();
    match postgres {
        Some(db) => {
            raw.store.url = Some(db.url());
            raw.store.token_key = Some(dir.path().join("token-key"));
            raw.checkpoints.key = Some(dir.path().join("checkpoint-key"));
        }
        None => raw.store.path = dir.path().join("syncgate.db"),
    }
    let running = syncgate::app::start(raw.validate().unwrap(), stop.clone())
        .await
        .unwrap();
    let (proxy, admin) = (running.url(), running.admin_url());
    let mut steps: [Step; 4] = Default::default();
    for i in 0..cycles {
        let p = partner(offset + i);
        let url = format!("{proxy}{}", sync_path(&p));
        let t = Instant::now();
        let (s, body) = call(client, token, Method::PUT, &url, Some(enable("New"))).await;
        steps[0].push(t);
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        let id = body["error"]["innerError"]["syncgate-approval-id"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = Instant::now();
        let vote = format!("{admin}/api/v1/approvals/{id}/approve");
        let (s, body) = call(
            client,
            &key,
            Method::POST,
            &vote,
            Some(json!({"comment": "ok"})),
        )
        .await;
        steps[1].push(t);
        assert_eq!(s, StatusCode::OK, "{body}");
        let t = Instant::now();
        let (s, body) = call(client, token, Method::PUT, &url, Some(enable("New"))).await;
        steps[2].push(t);
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
        let t = Instant::now();
        let listed = format!("{proxy}{}", sync_path(LISTED));
        let rename = json!({"displayName": format!("Listed {i}")});
        let (s, body) = call(client, token, Method::PATCH, &listed, Some(rename)).await;
        steps[3].push(t);
        assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    }
    drop(running);
    Run { label, steps }
}

#[tokio::main]
async fn main() {
    syncgate::tls::install_default_provider();
    let cycles: u64 = std::env::var("BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let postgres = std::env::args().any(|a| a == "postgres");
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(syncgate::emulator::run(
        listener,
        ServeOptions::default(),
        stop.clone(),
    ));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let token = syncgate::token::unsigned_jwt(&json!({
        "oid": "11111111-1111-1111-1111-111111111111", "idtyp": "user",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
    }));
    let backends = if postgres { 2 } else { 1 };
    for i in 0..cycles * backends {
        let (s, _) = call(
            &client,
            &token,
            Method::POST,
            &format!("{emulator}/v1.0/policies/crossTenantAccessPolicy/partners"),
            Some(json!({"tenantId": partner(i)})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    call(
        &client,
        &token,
        Method::POST,
        &format!("{emulator}/v1.0/policies/crossTenantAccessPolicy/partners"),
        Some(json!({"tenantId": LISTED})),
    )
    .await;
    // The reference: the same PUT straight to the emulator.
    let mut direct = Step::default();
    let listed = format!("{emulator}{}", sync_path(LISTED));
    for _ in 0..cycles {
        let t = Instant::now();
        call(
            &client,
            &token,
            Method::PUT,
            &listed,
            Some(enable("Listed")),
        )
        .await;
        direct.push(t);
    }
    let mut runs =
        vec![run_backend("sqlite", None, &emulator, &client, &token, cycles, 0, &stop).await];
    let db;
    if postgres {
        db = BenchDatabase::create().await;
        runs.push(
            run_backend(
                "postgres",
                Some(&db),
                &emulator,
                &client,
                &token,
                cycles,
                cycles,
                &stop,
            )
            .await,
        );
    }
    println!(
        "syncgate approval-gate benchmark: {cycles} cycles, one request at a time, release build"
    );
    let head = format!("{:>9} {:>9} {:>9}", "p50 ms", "p99 ms", "ops/s");
    let labels: Vec<String> = runs.iter().map(|r| format!("{:<29}", r.label)).collect();
    println!("{:<50} {}", "", labels.join(" | "));
    println!("{:<50} {}", "step", vec![head; runs.len()].join(" | "));
    let direct_columns = direct.columns();
    println!(
        "{:<50} {}",
        "direct PATCH to the emulator (reference)", direct_columns
    );
    let names = [
        "hold: held change, new approval request",
        "vote: approve through the admin API",
        "send: the same change, under the approval",
        "allowed governed PATCH, no gate (reference)",
    ];
    for (k, name) in names.iter().enumerate() {
        let columns: Vec<String> = runs.iter_mut().map(|r| r.steps[k].columns()).collect();
        println!("{name:<50} {}", columns.join(" | "));
    }
    stop.cancel();
}
