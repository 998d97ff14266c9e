//! What group commit buys: durable single-row inserts (one transaction and one fsync each) next to
//! `Store::append` with 1, 16 and 128 concurrent appenders, in one run, side by side.
//!
//! `cargo bench --bench store` (release build). Knob: `BENCH_SECS` (measured seconds per case,
//! default 3). Every case writes a fresh database under the target folder (a real disk, not a
//! tmpfs, so fsync costs what it costs) with the store's pragmas: WAL, `synchronous=FULL`.
//! The events are realistic `completed` events (~1 KiB of canonical JSON) so hashing and JSON
//! work are included in the append figures.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection};
use syncgate::audit::{Actor, Decision, Effect, Event, EventKind, Snapshot};
use syncgate::store::{Store, StoreOptions};
use uuid::Uuid;

const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";

fn bench_secs() -> Duration {
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

fn sample_event() -> Event {
    let mut e = Event::new(Uuid::now_v7(), EventKind::Completed);
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
    );
    e.state_path = Some(format!(
        "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
    ));
    e.api_version = "v1.0".into();
    e.partner_tenant_id = PARTNER.parse().ok();
    e.operation = "sync_update".into();
    e.actor = Actor {
        oid: Some("11111111-1111-4111-8111-111111111111".into()),
        upn: Some("alice@contoso.com".into()),
        appid: Some("22222222-2222-4222-8222-222222222222".into()),
        app_displayname: Some("Graph Explorer".into()),
        tid: Some("33333333-3333-4333-8333-333333333333".into()),
        idtyp: Some("user".into()),
        scp: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        caller_address: Some("10.0.0.7:53211".into()),
        token_hmac: Some("ab".repeat(32)),
        ..Actor::default()
    };
    e.client_request_id = Some(Uuid::new_v4().to_string());
    e.request_id = Some(Uuid::new_v4().to_string());
    e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
    e.before = Some(Snapshot::Present {
        value: json!({"tenantId": PARTNER, "displayName": "Fabrikam",
                      "userSyncInbound": {"isSyncAllowed": false}}),
    });
    e.after = Some(Snapshot::Present {
        value: json!({"tenantId": PARTNER, "displayName": "Fabrikam",
                      "userSyncInbound": {"isSyncAllowed": true}}),
    });
    e.diff = Some(json!([
        {"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}
    ]));
    e.decision = Some(Decision::Allow);
    e.upstream_status = Some(204);
    e.latency_ms = Some(140);
    e.upstream_latency_ms = Some(95);
    e.effect = Some(Effect::Applied);
    e
}

struct Figures {
    events: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    groups: Option<u64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

/// One transaction (and fsync) per row, the store's schema and pragmas, no group commit.
async fn raw_inserts(dir: &Path, secs: Duration) -> Figures {
    let path = dir.join("raw.db");
    // The store creates the schema; then it steps aside.
    Store::open(&path, StoreOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let event_json = serde_json::to_string(&sample_event()).unwrap();
    let hash = "0".repeat(64);
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut seq = 0i64;
    while started.elapsed() < secs {
        seq += 1;
        let t = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query(
            "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, \
             partner_tenant_id, operation, actor_upn, decision, upstream_status, event, \
             prev_hash, hash) VALUES (?, ?, ?, 'completed', ?, ?, 'sync_update', \
             'alice@contoso.com', 'allow', 204, ?, ?, ?)",
        )
        .bind(seq)
        .bind(Uuid::now_v7().to_string())
        .bind(Uuid::now_v7().to_string())
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(PARTNER)
        .bind(&event_json)
        .bind(&hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    conn.close().await.unwrap();
    let (p50, p99) = percentiles(latencies);
    Figures {
        events: seq as usize,
        elapsed,
        p50,
        p99,
        groups: None,
    }
}

/// `appenders` tasks appending as fast as the store acknowledges, for `secs`.
async fn appends(dir: &Path, appenders: usize, secs: Duration) -> Figures {
    let path = dir.join(format!("append-{appenders}.db"));
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    // Warm up: statement cache, file growth.
    for _ in 0..20 {
        store.append(sample_event()).await.unwrap();
    }
    let warm = store.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..appenders {
        let store = store.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let event = sample_event();
                let t = Instant::now();
                store.append(event).await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    tokio::time::sleep(secs).await;
    stop.store(true, Ordering::Relaxed);
    let latencies: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    let stats = store.stats();
    let report = store.verify().await.unwrap();
    assert!(report.first_broken.is_none(), "{report:?}");
    store.close().await;
    let events = latencies.len();
    let (p50, p99) = percentiles(latencies);
    Figures {
        events,
        elapsed,
        p50,
        p99,
        groups: Some(stats.groups_committed - warm.groups_committed),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let secs = bench_secs();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    println!(
        "store bench: {} s per case, database under {}",
        secs.as_secs(),
        dir.path().display()
    );
    let raw = raw_inserts(dir.path(), secs).await;
    let mut rows = vec![("durable single-row inserts".to_owned(), raw)];
    for appenders in [1, 16, 128] {
        let figures = appends(dir.path(), appenders, secs).await;
        rows.push((format!("Store::append x{appenders}"), figures));
    }
    let base = rows[0].1.rate();
    println!(
        "{:<28} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "case", "events", "events/s", "vs raw", "p50", "p99", "per group"
    );
    for (name, f) in &rows {
        let per_group = f
            .groups
            .filter(|g| *g > 0)
            .map(|g| format!("{:.1}", f.events as f64 / g as f64))
            .unwrap_or_else(|| "1".into());
        println!(
            "{:<28} {:>8} {:>10.0} {:>7.2}x {:>10} {:>10} {:>10}",
            name,
            f.events,
            f.rate(),
            f.rate() / base,
            ms(f.p50),
            ms(f.p99),
            per_group
        );
    }
}
