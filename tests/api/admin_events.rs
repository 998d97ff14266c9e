//! Issue 10: `GET /api/v1/events` (the raw chained events, paged, long-polled) and `syncgate
//! audit tail` (the same stream from the database, on the command line).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::admin_auth::assert_graph_error;
use crate::admin_log::{Backend, LogWorld};
use crate::harness::{spawn_proxy_with, syncgate_bin};

fn seqs(page: &Value) -> Vec<i64> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

async fn the_events_come_in_seq_order_page_by_page_with_their_chain(backend: Backend) {
    let world = LogWorld::new(backend, 2).await;
    let (resp, all) = world.get(&world.auditor, "/api/v1/events").await;
    assert_eq!(resp.status, StatusCode::OK, "{all}");
    assert_eq!(seqs(&all), [1, 2, 3, 4]);
    assert_eq!(all["last_seq"], 4);
    assert!(all.get("@odata.nextLink").is_none(), "{all}");
    let events = all["value"].as_array().unwrap();
    for pair in events.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "the chain links");
    }
    // Pages of three, by the links: the same events, no repeats.
    let (_, first) = world.get(&world.auditor, "/api/v1/events?limit=3").await;
    assert_eq!(seqs(&first), [1, 2, 3]);
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert_eq!(next, "/api/v1/events?after_seq=3&limit=3");
    let (_, second) = world.get(&world.auditor, next).await;
    assert_eq!(seqs(&second), [4]);
    assert!(second.get("@odata.nextLink").is_none());
    // Nothing after the head: an empty page at once, last_seq unchanged.
    let (_, empty) = world
        .get(&world.auditor, "/api/v1/events?after_seq=4")
        .await;
    assert_eq!(
        (seqs(&empty), &empty["last_seq"]),
        (vec![], &Value::from(4))
    );
    world.finish().await;
}

#[tokio::test]
async fn the_events_come_in_seq_order_page_by_page_with_their_chain_on_sqlite() {
    the_events_come_in_seq_order_page_by_page_with_their_chain(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_events_come_in_seq_order_page_by_page_with_their_chain_on_postgres() {
    the_events_come_in_seq_order_page_by_page_with_their_chain(Backend::Postgres).await;
}

#[tokio::test]
async fn the_events_query_is_read_strictly() {
    let world = LogWorld::new(Backend::Sqlite, 0).await;
    for query in [
        "after_seq=-1",
        "after_seq=one",
        "limit=0",
        "limit=1001",
        "wait=61s",
        "wait=soon",
        "since=1d",
        "after_seq=1&after_seq=2",
    ] {
        let (resp, _) = world
            .get(&world.auditor, &format!("/api/v1/events?{query}"))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_graph_error(&resp, "BadRequest", query);
    }
    world.finish().await;
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_answers_an_empty_page_when_the_wait_ends() {
    let world = LogWorld::new(Backend::Sqlite, 1).await;
    let started = Instant::now();
    let (resp, page) = world
        .get(&world.auditor, "/api/v1/events?after_seq=2&wait=1s")
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{page}");
    assert_eq!((seqs(&page), &page["last_seq"]), (vec![], &Value::from(2)));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    world.finish().await;
}

/// Long-poll for events after seq 2 while a change goes through the proxy at `via`: the poll
/// answers with the change's first event, well before its 60 s wait ends.
async fn poll_while_changing(world: &mut LogWorld, via: &str) {
    let url = world.url("/api/v1/events?after_seq=2&wait=60s");
    let client = crate::helpers::TestClient::with_token(world.auditor.clone());
    let started = Instant::now();
    let (resp, _) = tokio::join!(client.get(&url), world.change(via));
    assert_eq!(resp.status, StatusCode::OK);
    let page: Value = resp.json();
    assert_eq!(seqs(&page)[0], 3, "{page}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_change_is_recorded() {
    let mut world = LogWorld::new(Backend::Sqlite, 1).await;
    let proxy_url = world.proxy.url.clone();
    poll_while_changing(&mut world, &proxy_url).await;
    world.finish().await;
}

/// Another replica's commits are not seen by this process's writer: the periodic look at the
/// database is what wakes the waiter.
#[tokio::test]
async fn a_long_poll_sees_events_another_replica_appends_to_the_shared_log() {
    let mut world = LogWorld::new(Backend::Postgres, 1).await;
    let other = spawn_proxy_with(world.raw.clone()).await;
    poll_while_changing(&mut world, &other.url.clone()).await;
    other.shutdown().await;
    world.finish().await;
}

/// The lines `audit tail` prints, as they come (a thread reads the child's stdout).
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn next_seq(lines: &mpsc::Receiver<String>) -> i64 {
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("audit tail printed an event");
    let event: Value = serde_json::from_str(&line).unwrap();
    event["seq"].as_i64().unwrap()
}

#[tokio::test]
async fn audit_tail_prints_events_as_they_are_appended_until_interrupted() {
    let mut world = LogWorld::new(Backend::Sqlite, 1).await;
    let db = world.proxy.db_path.to_str().unwrap().to_owned();
    let mut child = Command::new(syncgate_bin())
        .args([
            "audit",
            "tail",
            "--db",
            &db,
            "--after-seq",
            "0",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    assert_eq!((next_seq(&lines), next_seq(&lines)), (1, 2));
    let proxy_url = world.proxy.url.clone();
    world.change(&proxy_url).await;
    assert_eq!((next_seq(&lines), next_seq(&lines)), (3, 4));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    world.finish().await;
}

#[tokio::test]
async fn audit_tail_prints_a_line_per_event_as_text() {
    let world = LogWorld::new(Backend::Sqlite, 1).await;
    let db = world.proxy.db_path.to_str().unwrap().to_owned();
    let mut child = Command::new(syncgate_bin())
        .args(["audit", "tail", "--db", &db, "--after-seq", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(line.starts_with("2  "), "{line}");
    assert!(
        line.contains("completed") && line.contains(&world.operations[0]),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
    world.finish().await;
}
