//! Auditors' queries on a log of a million events: a filtered operations page (≤ 20 ms), one
//! operation's events (≤ 5 ms), every export format over the whole log (≥ 100,000 events/s,
//! memory flat), the event stream and verify, on SQLite and PostgreSQL side by side, with a
//! "raw" line per query (the same SELECT through plain sqlx, nothing decoded) so the store
//! layer's own cost shows.
//!
//! `cargo bench --bench audit_queries`. Options (after `--`): `--events N` (default 1,000,000),
//! `--cases pages,exports,quick,proofs,verify,raw` (the parts to run; all by default: `quick` is
//! `audit verify --quick` against the checkpoints the seeding writer signed; `quick-cold`, not
//! in the default, the same after emptying the OS page cache, as root only; `proofs` times
//! inclusion proofs at the log's size),
//! `--runs R` (timed repetitions per query, default 40), `--backend sqlite` (skip PostgreSQL),
//! `--formats jsonl,csv,...` (the export formats; all by default), `--export-runs K` (each export
//! run K times, the median reported: this machine's figures vary by a tenth from run to run).
//!
//! Seeding goes through the store's real paths so the chain is valid: `Store::append` with many
//! appends in flight (the writer commits them in groups), then `audit copy`'s path to PostgreSQL
//! (a database of the run's own at `SYNCGATE_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`, dropped after). The seeded SQLite file is kept under
//! `target/audit-bench/` keyed by N and the seeding concurrency, so later runs skip the minutes of seeding; it is migrated on
//! every run, so new indexes apply to it.
//!
//! The log: 100 partners, a year of changes spread evenly, a realistic mix (most changes allowed
//! and completed, some refused by a rule, some with drift), eight actors
//! (users and apps). An operation is 2–4 events.

mod seed;
#[path = "../support/postgres.rs"]
mod support;

use std::time::Instant;

use seed::{Rng, cpu_time, generate, partner, percentiles, rss_kib};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, PgConnection, Row};
use support::BenchDatabase;
use syncgate::store::bench::Reader;
use syncgate::store::{Store, StoreLocation, StoreOptions};
use uuid::Uuid;

/// Operations in flight at once while seeding: every wave's first events, then their middles,
/// then their ends, so an operation's events lie among those of at most this many others, as in
/// a proxy's log (governed changes are rare and take milliseconds). Seeds of before 2026-11-30
/// used 4,000, which scattered each operation's events over thousands of others' while its
/// times said they were milliseconds apart.
const WAVE: usize = 64;
/// Events per page when streaming the log.
const STREAM_PAGE: u32 = 1000;

struct Args {
    events: usize,
    runs: usize,
    postgres: bool,
    /// Which parts to run: `pages` (operations pages, one operation, the event stream),
    /// `exports`, `verify`, `raw`; all by default.
    cases: Vec<String>,
    formats: Vec<String>,
    export_runs: usize,
}

impl Args {
    fn runs(&self, part: &str) -> bool {
        self.cases.iter().any(|c| c == part)
    }
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let number = |name: &str, default: usize| {
        value(name).map_or(default, |v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
    };
    Args {
        events: number("--events", 1_000_000),
        runs: number("--runs", 40).max(2),
        postgres: value("--backend").as_deref() != Some("sqlite"),
        cases: value("--cases")
            .unwrap_or_else(|| "pages,exports,quick,proofs,verify,raw".into())
            .split(',')
            .map(str::to_owned)
            .collect(),
        formats: value("--formats")
            .unwrap_or_else(|| "jsonl,csv,directory-audit,ocsf".into())
            .split(',')
            .map(str::to_owned)
            .collect(),
        export_runs: number("--export-runs", 1).max(1),
    }
}

/// The seeded SQLite log for `events`, seeding it first when no complete one is cached.
async fn seeded_sqlite(events: usize) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("audit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("log-{events}-w{WAVE}.db"));
    let _ = SQLITE_PATH.set(path.clone());
    let done = dir.join(format!("log-{events}-w{WAVE}.done"));
    if done.exists() {
        println!("seed: reusing {}", path.display());
        // Brings the schema (new indexes) up to date.
        Store::open(&path, StoreOptions::default())
            .await
            .unwrap()
            .close()
            .await;
        return path;
    }
    for stale in [
        &path,
        &path.with_extension("db-wal"),
        &path.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let started = Instant::now();
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    let mut rng = Rng(0x005e_ed0f_a0d1_7106);
    let plan = generate(&mut rng, events);
    let mut appended = 0usize;
    for wave in plan.chunks(WAVE) {
        // An operation's events in order: the k-th event of every operation of the wave is
        // appended (concurrently) only after all (k-1)-th ones are recorded.
        let depth = wave.iter().map(Vec::len).max().unwrap_or(0);
        for k in 0..depth {
            let mut tasks = tokio::task::JoinSet::new();
            for op in wave {
                if let Some(event) = op.get(k) {
                    let (store, event) = (store.clone(), event.clone());
                    tasks.spawn(async move { store.append(event).await.unwrap() });
                    appended += 1;
                }
            }
            tasks.join_all().await;
        }
        if appended % 100_000 < WAVE * 4 {
            println!(
                "seed: {appended} events, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let groups = store.stats().groups_committed;
    store.close().await;
    println!(
        "seed: {appended} events in {groups} groups, {:.0} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        appended as f64 / started.elapsed().as_secs_f64()
    );
    std::fs::write(&done, b"").unwrap();
    path
}

/// One line of the table: a figure per backend.
struct Line {
    case: String,
    target: &'static str,
    figures: Vec<String>,
}

/// Run `$body` (an expression that may `.await`) once to warm up, then `$runs` times timed, with
/// `$i` the run's number (0 for the warm-up); p50 and p99 in ms.
macro_rules! timed {
    ($runs:expr, |$i:ident| $body:expr) => {{
        let mut latencies = Vec::with_capacity($runs);
        for $i in 0..=$runs {
            let t = Instant::now();
            $body;
            if $i > 0 {
                latencies.push(t.elapsed());
            }
        }
        percentiles(latencies)
    }};
}

fn p50_p99((p50, p99): (f64, f64)) -> String {
    format!("{p50:7.2} / {p99:7.2}")
}

/// The filters of the operations-page cases: (name, query string).
fn filters(events: usize) -> Vec<(String, String)> {
    let deep = events as i64 * 9 / 10;
    vec![
        ("no filter".into(), String::new()),
        ("partner".into(), format!("partner={}", partner(42))),
        ("actor (upn)".into(), "actor=carol%40contoso.com".into()),
        ("decision=deny".into(), "decision=deny".into()),
        ("rule".into(), "rule=no-partner-deletes".into()),
        (
            "since/until (a month)".into(),
            "since=2025-06-01&until=2025-07-01".into(),
        ),
        (
            "since (the log's last month)".into(),
            "since=2025-12-01".into(),
        ),
        ("q text".into(), "q=northwind%2017".into()),
        ("drift=true".into(), "drift=true".into()),
        (
            "partner+deny".into(),
            format!("partner={}&decision=deny", partner(7)),
        ),
        (
            "deep: no filter, cursor 10% from the start".into(),
            format!("cursor=s{}", events as i64 - deep),
        ),
        (
            "deep: partner, cursor 10% from the start".into(),
            format!("partner={}&cursor=s{}", partner(42), events as i64 - deep),
        ),
    ]
}

/// What one backend measured, in table order.
async fn measure(name: &str, location: &StoreLocation, args: &Args) -> Vec<Line> {
    let reader = Reader::open(location).await.unwrap();
    let mut lines = Vec::new();
    if args.runs("pages") {
        lines.extend(pages(name, &reader, args).await);
    }
    if args.runs("exports") {
        lines.extend(exports(name, &reader, args).await);
    }
    if args.runs("quick") {
        lines.extend(quick(name, &reader, location, false).await);
    }
    if args.runs("quick-cold") {
        lines.extend(quick(name, &reader, location, true).await);
    }
    if args.runs("proofs") {
        lines.extend(proofs(name, &reader, args.runs.max(1000)).await);
    }
    if args.runs("verify") {
        let started = Instant::now();
        let (ok, verified) = reader.verify().await.unwrap();
        assert!(ok, "the seeded log verifies");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name}: verify (chain and operations index): {verified} events in {seconds:.1} s"
        );
        lines.push(Line {
            case: "verify chain + operations index".into(),
            target: "",
            figures: vec![format!("{seconds:>9.1} s")],
        });
    }
    reader.close().await;
    if args.runs("raw") {
        lines.extend(raw(name, location, args.runs).await);
    }
    lines
}

/// `syncgate audit verify --quick`: the log against the checkpoints it stores, signed by the
/// key the seeding writer made (beside the SQLite file; the PostgreSQL copy has the same ones).
async fn quick(name: &str, reader: &Reader, location: &StoreLocation, cold: bool) -> Vec<Line> {
    // Cold: the OS's page cache emptied first (root only), so the log is read from disk.
    // PostgreSQL's own shared buffers (128 MB by default) stay as they are.
    if cold {
        let dropped = std::process::Command::new("sync")
            .status()
            .is_ok_and(|s| s.success())
            && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok();
        if !dropped {
            println!(
                "{name}: verify --quick, cold: skipped (cannot drop the page cache: not root?)"
            );
            return Vec::new();
        }
    }
    let sqlite = match location {
        StoreLocation::Sqlite(path) => path.clone(),
        StoreLocation::Postgres(_) => sqlite_twin(),
    };
    let key_file = syncgate::store::signing_key::key_path(&sqlite);
    let vkey = syncgate::store::signing_key::load_or_create(&key_file, None)
        .unwrap()
        .verifier_key();
    let started = Instant::now();
    let cpu_started = cpu_time();
    let (ok, events, covered) = reader.verify_quick(&vkey).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_started).as_secs_f64();
    assert!(ok, "the seeded log verifies against its checkpoints");
    println!(
        "{name}: verify --quick: {events} events ({covered} covered by a signed checkpoint) in \
         {seconds:.2} s, CPU {cpu:.2} s"
    );
    vec![Line {
        case: format!(
            "verify --quick ({covered} of {events} signed){}",
            if cold { ", cold cache" } else { "" }
        ),
        target: "≤ 5 s",
        figures: vec![format!("{seconds:>9.2} s")],
    }]
}

/// Where the SQLite log of this run is (the PostgreSQL copy's key is its key).
fn sqlite_twin() -> std::path::PathBuf {
    SQLITE_PATH
        .get()
        .cloned()
        .expect("the SQLite log is seeded first")
}

static SQLITE_PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Inclusion proofs of random events in the latest signed checkpoint: time and size.
async fn proofs(name: &str, reader: &Reader, runs: usize) -> Vec<Line> {
    let size = reader.latest_checkpoint().await.unwrap();
    assert!(size > 0, "the seeded log has a signed checkpoint");
    let mut rng = Rng(11);
    let picks: Vec<u64> = (0..=runs)
        .map(|_| 1 + rng.below(size as usize) as u64)
        .collect();
    let mut largest = 0;
    let figures = timed!(runs, |i| {
        let proof = reader.inclusion_proof(picks[i], size).await.unwrap();
        largest = largest.max(proof.len());
    });
    // As the admin API sends it: base64 hashes in a JSON array.
    let json_bytes = largest * (44 + 3);
    println!(
        "{name}: inclusion proof in the tree of {size}: p50/p99 {} ms, at most {largest} hashes \
         = {} bytes ({json_bytes} bytes as base64 JSON)",
        p50_p99(figures),
        largest * 32
    );
    vec![
        Line {
            case: format!("inclusion proof in the tree of {size} (ms)"),
            target: "≤ 1 ms",
            figures: vec![p50_p99(figures)],
        },
        Line {
            case: "  its size: hashes, bytes raw / as base64 JSON".into(),
            target: "≤ 1 KiB",
            figures: vec![format!("{largest} = {} / {json_bytes} B", largest * 32)],
        },
    ]
}

/// Operations pages under each filter, one operation's events, the deserialized event stream.
async fn pages(name: &str, reader: &Reader, args: &Args) -> Vec<Line> {
    let (events, runs) = (args.events, args.runs);
    let mut lines = Vec::new();
    let mut sample_ids = Vec::new();
    for (case, query) in filters(events) {
        let query = if query.is_empty() {
            "limit=100".to_owned()
        } else {
            format!("{query}&limit=100")
        };
        let mut rows = 0;
        let figures = timed!(runs, |_i| {
            let page = reader.operations(&query).await.unwrap();
            rows = page.rows;
            if sample_ids.len() < 10_000 {
                sample_ids.extend(page.ids);
            }
        });
        println!(
            "{name}: operations page, {case}: {rows} rows, p50/p99 {} ms",
            p50_p99(figures)
        );
        lines.push(Line {
            case: format!("ops page: {case} ({rows} rows)"),
            target: "≤ 20 ms",
            figures: vec![p50_p99(figures)],
        });
    }
    // Spread the sampled operations over the log.
    let mut rng = Rng(7);
    let picks: Vec<Uuid> = (0..runs + 1)
        .map(|_| sample_ids[rng.below(sample_ids.len())])
        .collect();
    let figures = timed!(runs, |i| {
        let events = reader.operation_events(picks[i]).await.unwrap();
        assert!(!events.is_empty());
    });
    println!(
        "{name}: one operation's events: p50/p99 {} ms",
        p50_p99(figures)
    );
    lines.push(Line {
        case: "one operation's events".into(),
        target: "≤ 5 ms",
        figures: vec![p50_p99(figures)],
    });
    let (rate, rss) = stream(reader, |_| {}).await;
    println!("{name}: stream: {rate:.0} events/s, {rss}");
    lines.push(Line {
        case: "stream all events (deserialized)".into(),
        target: "≥ 100,000/s",
        figures: vec![format!("{rate:>10.0}/s")],
    });
    lines.push(Line {
        case: "  resident memory start → peak".into(),
        target: "flat",
        figures: vec![rss],
    });
    lines
}

/// Every export format over the whole log: events per second (the median of the runs) and
/// resident memory (start of the first run → peak of all).
async fn exports(name: &str, reader: &Reader, args: &Args) -> Vec<Line> {
    let mut lines = Vec::new();
    for format in &args.formats {
        let start_rss = rss_kib();
        let mut peak = start_rss;
        let mut rates = Vec::new();
        for _ in 0..args.export_runs {
            let mut bytes = 0usize;
            let started = Instant::now();
            let cpu_started = cpu_time();
            let mut chunks = 0usize;
            let events = reader
                .export(format, "", |chunk| {
                    bytes += chunk.len();
                    chunks += 1;
                    if chunks % 20 == 0 {
                        peak = peak.max(rss_kib());
                    }
                })
                .await
                .unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let cpu = (cpu_time() - cpu_started).as_secs_f64() * 1e6 / events.max(1) as f64;
            let rate = events as f64 / seconds;
            println!(
                "{name}: export {format}: {events} events, {} MiB in {seconds:.1} s: \
                 {rate:.0} events/s, {cpu:.1} µs CPU per event, memory {} → {} MiB",
                bytes >> 20,
                start_rss / 1024,
                peak / 1024
            );
            rates.push((rate, cpu));
        }
        rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, cpu) = rates[rates.len() / 2];
        lines.push(Line {
            case: format!("export {format} (whole log)"),
            target: "≥ 100,000/s",
            figures: vec![format!("{rate:>10.0}/s")],
        });
        lines.push(Line {
            case: "  CPU per event (all threads)".into(),
            target: "",
            figures: vec![format!("{cpu:>8.1} µs")],
        });
        lines.push(Line {
            case: "  resident memory start → peak".into(),
            target: "flat",
            figures: vec![format!("{} → {} MiB", start_rss / 1024, peak / 1024)],
        });
    }
    // A filtered export: one partner's operations (a hundredth of the log), whose events are
    // scattered over it, so they are looked up by operation rather than read as one range.
    let started = Instant::now();
    let cpu_started = cpu_time();
    let filter = format!("partner={}", partner(42));
    let events = reader.export("csv", &filter, |_| {}).await.unwrap();
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_started).as_secs_f64() * 1e6 / events.max(1) as f64;
    println!(
        "{name}: export csv, one partner: {events} events: {rate:.0} events/s, {cpu:.1} µs CPU per event"
    );
    lines.push(Line {
        case: "export csv, one partner (scattered events)".into(),
        target: "",
        figures: vec![format!("{rate:>10.0}/s")],
    });
    lines
}

/// Stream the whole log in seq pages through the store, handing each event to `each` (an export
/// format is one more caller of this); events per second and resident memory start → peak.
async fn stream(
    reader: &Reader,
    mut each: impl FnMut(&syncgate::audit::Recorded),
) -> (f64, String) {
    let start_rss = rss_kib();
    let mut peak = start_rss;
    let started = Instant::now();
    let (mut after, mut count) = (0i64, 0usize);
    loop {
        let page = reader.events_after(after, STREAM_PAGE).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        count += page.len();
        page.iter().for_each(&mut each);
        peak = peak.max(rss_kib());
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, format!("{} → {} MiB", start_rss / 1024, peak / 1024))
}

/// The raw reference: the store's SELECTs through plain sqlx, rows left undecoded (no JSON, no
/// summary built), so `store − raw` is the store layer's own cost.
async fn raw(name: &str, location: &StoreLocation, runs: usize) -> Vec<Line> {
    sqlx::any::install_default_drivers();
    let (url, dollar) = match location {
        StoreLocation::Sqlite(path) => (format!("sqlite://{}?mode=ro", path.display()), false),
        StoreLocation::Postgres(url) => (url.clone(), true),
    };
    let pool: AnyPool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let p = |n: usize| {
        if dollar {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    // Operations spread over the log, one per timed run.
    let spread = sqlx::query("SELECT operation_id FROM operation_index WHERE first_seq % 50 = 0")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut rng = Rng(11);
    let picks: Vec<String> = (0..=runs)
        .map(|_| spread[rng.below(spread.len())].get::<String, _>(0))
        .collect();
    // The page query's statement with nothing decoded: the operations index, newest first.
    let page_sql = format!(
        "SELECT * FROM operation_index WHERE first_seq < {} ORDER BY first_seq DESC LIMIT 101",
        p(1)
    );
    let mut lines = Vec::new();
    let figures = timed!(runs, |_i| {
        sqlx::query(&page_sql)
            .bind(i64::MAX)
            .fetch_all(&pool)
            .await
            .unwrap();
    });
    println!(
        "{name}: raw ops page, no filter: p50/p99 {} ms",
        p50_p99(figures)
    );
    lines.push(Line {
        case: "raw: ops page, no filter".into(),
        target: "",
        figures: vec![p50_p99(figures)],
    });
    let one = format!(
        "SELECT seq, prev_hash, hash, event FROM audit_events WHERE operation_id = {} ORDER BY seq",
        p(1)
    );
    let figures = timed!(runs, |i| {
        let id = picks[i].clone();
        sqlx::query(&one).bind(id).fetch_all(&pool).await.unwrap();
    });
    println!("{name}: raw one operation: p50/p99 {} ms", p50_p99(figures));
    lines.push(Line {
        case: "raw: one operation's events".into(),
        target: "",
        figures: vec![p50_p99(figures)],
    });
    let page = format!(
        "SELECT seq, prev_hash, hash, event FROM audit_events WHERE seq > {} ORDER BY seq LIMIT {STREAM_PAGE}",
        p(1)
    );
    let started = Instant::now();
    let (mut after, mut count) = (0i64, 0usize);
    loop {
        let rows = sqlx::query(&page)
            .bind(after)
            .fetch_all(&pool)
            .await
            .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        count += rows.len();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!("{name}: raw stream: {rate:.0} events/s");
    lines.push(Line {
        case: "raw: stream all events".into(),
        target: "",
        figures: vec![format!("{rate:>10.0}/s")],
    });
    pool.close().await;
    lines
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let path = seeded_sqlite(args.events).await;
    let sqlite = StoreLocation::Sqlite(path);
    let mut columns = vec![("sqlite", measure("sqlite", &sqlite, &args).await)];
    if args.postgres {
        let db = BenchDatabase::create().await;
        let pg = StoreLocation::Postgres(db.url());
        let started = Instant::now();
        let reader = Reader::open(&sqlite).await.unwrap();
        let copied = reader.copy_to(&pg).await.unwrap();
        reader.close().await;
        // What autovacuum would have done by the time a log this size is queried (the copy
        // updated each operation's index row once or twice, leaving dead tuples).
        let mut conn = PgConnection::connect(&db.url()).await.unwrap();
        sqlx::query("VACUUM ANALYZE")
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        println!(
            "seed: copied {copied} events to PostgreSQL in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        columns.push(("postgres", measure("postgres", &pg, &args).await));
    }
    print_table(args.events, args.runs, &columns);
}

fn print_table(events: usize, runs: usize, columns: &[(&str, Vec<Line>)]) {
    println!();
    println!("audit queries on {events} events, {runs} runs each (ms: p50 / p99)");
    print!("{:<52} {:>12}", "case", "target");
    for (name, _) in columns {
        print!("  {name:>19}");
    }
    println!();
    let first = &columns[0].1;
    for (i, line) in first.iter().enumerate() {
        print!("{:<52} {:>12}", line.case, line.target);
        for (_, lines) in columns {
            let figure = lines.get(i).map_or("", |l| l.figures[0].as_str());
            print!("  {figure:>19}");
        }
        println!();
    }
}
