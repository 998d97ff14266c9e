//! `GET /api/v1/events?after_seq=N&limit=L&wait=30s`: the raw chained events after `seq` N, in
//! seq order, for a SIEM shipper tailing the log.
//!
//! With `wait`, an empty answer is held (a long poll) until an event arrives or the wait ends;
//! events already there are answered at once. A waiter wakes when this process's writer commits
//! (the store's watch of the committed head: no polling for the common case), and also looks at
//! the database every [`RECHECK`], since another replica sharing PostgreSQL may append events
//! this process never sees committed. Waiting is bounded three ways: [`MAX_WAIT`] per request,
//! [`MAX_WAITERS`](super::record::MAX_WAITERS) at once (then 429), and shutdown, which answers
//! every waiter at once with what it has (an empty page), so draining never waits on a poll.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::operations::{bad, limit, pairs, unavailable};
use super::record::{Answer, Failure, Limits, Served};
use crate::audit::Recorded;
use crate::store::{Filter, Store};

/// Events per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest page.
const MAX_LIMIT: u32 = 1000;
/// The longest `wait`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a waiter looks at the database for events other replicas appended.
const RECHECK: Duration = Duration::from_millis(500);
/// Seconds a caller refused for too many waiters is told to wait.
const RETRY_AFTER: u64 = 1;

/// What the query string asked for.
#[derive(Debug, PartialEq)]
struct Query {
    after_seq: i64,
    limit: u32,
    wait: Duration,
    /// The query without `after_seq`, for the next page's link.
    rest: Vec<(String, String)>,
}

fn parse(query: Option<&str>) -> Result<Query, Failure> {
    let mut q = Query {
        after_seq: 0,
        limit: DEFAULT_LIMIT,
        wait: Duration::ZERO,
        rest: Vec::new(),
    };
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "after_seq" => {
                q.after_seq = digits(&value).ok_or_else(|| bad(&key, "is not a seq (0 or more)"))?
            }
            "limit" => q.limit = limit(&key, &value, MAX_LIMIT)?,
            "wait" => q.wait = wait(&key, &value)?,
            _ => return Err(bad(&key, "is not a parameter of this route").into()),
        }
        if key != "after_seq" {
            q.rest.push((key, value));
        }
    }
    Ok(q)
}

/// A number written as plain digits (no sign, no spaces), as `i64`.
pub(super) fn digits(value: &str) -> Option<i64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `30s` or `30`: whole seconds, at most [`MAX_WAIT`].
fn wait(key: &str, value: &str) -> Result<Duration, Failure> {
    let seconds = digits(value.strip_suffix('s').unwrap_or(value))
        .ok_or_else(|| bad(key, "is not a number of seconds (30 or 30s)"))?;
    let wait = Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX));
    if wait > MAX_WAIT {
        return Err(bad(key, format!("must be at most {}s", MAX_WAIT.as_secs())).into());
    }
    Ok(wait)
}

/// Answer `GET /api/v1/events?query`; `shutdown` ends a wait early.
pub(crate) async fn page(
    store: &Store,
    limits: &Limits,
    shutdown: &CancellationToken,
    query: Option<&str>,
) -> Answer {
    let q = parse(query)?;
    let deadline = Instant::now() + q.wait;
    // Subscribed before the first look, so a commit between the look and the wait still wakes.
    let mut committed = store.committed_head();
    committed.borrow_and_update();
    let mut permit = None;
    let events = loop {
        let events = read(store, &q).await?;
        if !events.is_empty() || Instant::now() >= deadline || shutdown.is_cancelled() {
            break events;
        }
        if permit.is_none() {
            let Ok(p) = limits.waiters.clone().try_acquire_owned() else {
                return Err(Failure::busy(
                    "too many clients are waiting for events; try again shortly",
                    RETRY_AFTER,
                ));
            };
            permit = Some(p);
        }
        let recheck = tokio::time::sleep_until(deadline.min(Instant::now() + RECHECK));
        tokio::select! {
            changed = committed.changed() => {
                if changed.is_err() {
                    // The writer stopped (closing): the wait ends with what there is.
                    break Vec::new();
                }
            }
            () = recheck => {}
            () = shutdown.cancelled() => break Vec::new(),
        }
    };
    Ok(answer(&q, events))
}

async fn read(store: &Store, q: &Query) -> Result<Vec<Recorded>, Failure> {
    let filter = Filter {
        after_seq: Some(q.after_seq),
        limit: Some(q.limit),
        ..Filter::default()
    };
    store
        .read_side()
        .list(&filter)
        .await
        .map_err(|e| unavailable(&e).into())
}

fn answer(q: &Query, events: Vec<Recorded>) -> Served {
    let last_seq = events.last().map_or(q.after_seq, |r| r.seq);
    let rows = events.len() as u64;
    let full = events.len() == q.limit as usize;
    let mut body = json!({ "value": events, "last_seq": last_seq });
    if full {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("after_seq", &last_seq.to_string());
        link.extend_pairs(q.rest.iter());
        body["@odata.nextLink"] = Value::String(format!("/api/v1/events?{}", link.finish()));
    }
    Served { body, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn the_events_query_is_read_strictly() {
        let q = parse(Some("after_seq=7&limit=5&wait=30s")).unwrap();
        assert_eq!(
            (q.after_seq, q.limit, q.wait),
            (7, 5, Duration::from_secs(30))
        );
        assert_eq!(
            parse(Some("wait=12")).unwrap().wait,
            Duration::from_secs(12)
        );
        let q = parse(None).unwrap();
        assert_eq!(
            (q.after_seq, q.limit, q.wait),
            (0, DEFAULT_LIMIT, Duration::ZERO)
        );
        for refused in [
            "after_seq=-1",
            "after_seq=+3",
            "after_seq=x",
            "after_seq=",
            "limit=0",
            "limit=1001",
            "wait=61s",
            "wait=1m",
            "wait=",
            "wait=s",
            "after=3",
            "limit=1&limit=2",
        ] {
            let error = parse(Some(refused)).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{refused}");
        }
    }

    #[test]
    fn a_full_page_links_to_the_next_one_and_keeps_its_other_parameters() {
        let q = parse(Some("limit=1&wait=5s&after_seq=3")).unwrap();
        let event =
            crate::audit::Event::new(uuid::Uuid::now_v7(), crate::audit::EventKind::Received);
        let one = Recorded {
            seq: 4,
            prev_hash: String::new(),
            hash: String::new(),
            event,
        };
        let served = answer(&q, vec![one]);
        assert_eq!(served.body["last_seq"], 4);
        assert_eq!(
            served.body["@odata.nextLink"],
            "/api/v1/events?after_seq=4&limit=1&wait=5s"
        );
        let empty = answer(&q, Vec::new());
        assert_eq!(empty.body["last_seq"], 3);
        assert!(empty.body.get("@odata.nextLink").is_none());
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = Store::open(&path, crate::store::StoreOptions::default())
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_waiter_beyond_the_bound_is_told_to_retry_but_available_events_are_served() {
        let (_dir, store) = store().await;
        let full = Limits {
            waiters: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            ..Limits::default()
        };
        let never = CancellationToken::new();
        let refused = page(&store, &full, &never, Some("wait=30s"))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(RETRY_AFTER));
        let event =
            crate::audit::Event::new(uuid::Uuid::now_v7(), crate::audit::EventKind::Received);
        store.append(event).await.unwrap();
        let served = page(&store, &full, &never, Some("wait=30s"))
            .await
            .ok()
            .unwrap();
        assert_eq!(served.rows, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_wait_ends_when_an_event_is_committed_or_at_shutdown() {
        let (_dir, store) = store().await;
        let limits = Limits::default();
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let waiting = page(&store, &limits, &shutdown, Some("wait=60s"));
        let appending = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let event =
                crate::audit::Event::new(uuid::Uuid::now_v7(), crate::audit::EventKind::Received);
            store.append(event).await.unwrap();
        };
        let (served, ()) = tokio::join!(waiting, appending);
        assert_eq!(served.ok().unwrap().rows, 1);
        assert!(started.elapsed() < Duration::from_secs(10));

        let waiting = page(&store, &limits, &shutdown, Some("after_seq=1&wait=60s"));
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.cancel();
        };
        let started = Instant::now();
        let (served, ()) = tokio::join!(waiting, stopping);
        let served = served.ok().unwrap();
        assert_eq!(
            (served.rows, served.body["last_seq"].as_i64()),
            (0, Some(1))
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            limits.waiters.available_permits(),
            super::super::record::MAX_WAITERS
        );
        store.close().await;
    }
}
