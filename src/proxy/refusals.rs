//! Refusals per client, summarised above a rate: one hostile client must not be able to fill the
//! audit log (and a full disk turns every governed change into 503).
//!
//! Each refusal is already cheap to record (a bounded [`RawRequest`](crate::audit::RawRequest),
//! never the whole body). On top of that, within a window (`audit.refusal_window`) the first
//! `audit.refusal_burst` refusals from one client are recorded one by one; the rest are counted
//! under one operation. The first of them is recorded in full under that operation's id (its
//! detail says that further refusals are counted there); then one `denied` event with operation
//! [`REFUSAL_SUMMARY`], under the same id, stands for them all: a [`RefusalSummary`] (how many,
//! when, which codes and methods) and the first one's method and target. The summary is
//! recorded when the window closes: at the client's next refusal, by the sweeper (every half
//! window), when the client is evicted from the tracker, or at shutdown, so no counted refusal
//! goes unrecorded. Each counted refusal's response carries that operation id, which resolves to
//! a record at once.
//!
//! A "client" is an IPv4 address, or the /64 an IPv6 address belongs to (one host usually owns a
//! whole /64, and could otherwise rotate addresses within it). The tracker holds at most
//! `audit.refusal_clients` clients; a new one evicts the client whose window began first, and
//! that client's summary is recorded then. Memory is bounded by that cap times one sample event:
//! its target is at most 2 KiB, its claims 256 bytes each, and it keeps no body and no permission
//! lists (about 5 KiB at most, so 5 MiB for the default 1024 clients).
//!
//! Rule denials are not summarised: they come from callers Graph authenticated (the before-read
//! used their token) and each carries the rule results an auditor needs one by one.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::Proxy;
use crate::audit::{Event, EventKind, REFUSAL_SUMMARY, RefusalSummary};
use crate::config::RefusalLimits;
use crate::store::Store;

/// Distinct error codes and methods named in one summary; the rest count under [`OTHER`].
const MAX_NAMED: usize = 16;
const OTHER: &str = "other";

/// What to do with one refusal.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Record this refusal's event (otherwise it was only counted into a summary).
    pub(crate) record: bool,
    /// The operation id the refusal is recorded under: its own, or its summary's.
    pub(crate) operation_id: Uuid,
    /// Summaries whose window closed meanwhile, to record now (oldest first).
    pub(crate) due: Vec<Event>,
}

/// The per-client windows. Pure bookkeeping (time is passed in), so it is tested without clocks.
#[derive(Debug)]
pub(crate) struct RefusalTracker {
    limits: RefusalLimits,
    clients: HashMap<String, Window>,
}

#[derive(Debug)]
struct Window {
    start: DateTime<Utc>,
    recorded: u32,
    pending: Option<Pending>,
}

/// Refusals counted in one window, and the first of them as the sample.
#[derive(Debug)]
struct Pending {
    sample: Event,
    summary: RefusalSummary,
}

impl Pending {
    fn new(client: &str, now: DateTime<Utc>, event: &Event) -> Self {
        let mut sample = Event::new(Uuid::now_v7(), EventKind::Denied);
        sample.method = event.method.clone();
        sample.canonical_path = event.canonical_path.clone();
        sample.api_version = event.api_version.clone();
        // Who, without the permission lists: the sample is held in memory per client.
        sample.actor = crate::audit::Actor {
            roles: Vec::new(),
            scp: Vec::new(),
            ..event.actor.clone()
        };
        sample.decision = event.decision;
        sample.operation = REFUSAL_SUMMARY.to_owned();
        // The target, not the body: the sample is held in memory until the window closes.
        sample.raw_request = event.raw_request.clone().map(|mut raw| {
            raw.body = None;
            raw
        });
        Pending {
            sample,
            summary: RefusalSummary {
                client: client.to_owned(),
                count: 0,
                first: now,
                last: now,
                codes: BTreeMap::new(),
                methods: BTreeMap::new(),
            },
        }
    }

    fn count(&mut self, now: DateTime<Utc>, code: &str, method: &str) {
        let s = &mut self.summary;
        s.count += 1;
        s.last = s.last.max(now);
        bump(&mut s.codes, code);
        bump(&mut s.methods, method);
    }

    /// The summary event, stamped `now`.
    fn into_event(self, now: DateTime<Utc>) -> Event {
        let Pending {
            mut sample,
            summary,
        } = self;
        sample.event_id = Uuid::now_v7();
        sample.time = now;
        let codes = summary
            .codes
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        sample.detail = Some(format!(
            "{} refusals from {} between {} and {} were counted instead of recorded one by one \
             (codes {{{codes}}}); method and target are the first one's",
            summary.count,
            summary.client,
            summary.first.to_rfc3339(),
            summary.last.to_rfc3339(),
        ));
        sample.refusal_summary = Some(summary);
        sample
    }
}

/// Count `key` in a map that names at most [`MAX_NAMED`] keys.
fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    let key = if map.contains_key(key) || map.len() < MAX_NAMED {
        crate::audit::json_prefix(key, crate::audit::METHOD_MAX)
    } else {
        OTHER
    };
    *map.entry(key.to_owned()).or_default() += 1;
}

/// The client a caller address belongs to: the IPv4 address, or the IPv6 /64.
pub(crate) fn client_key(caller_address: Option<&str>) -> String {
    let Some(address) = caller_address else {
        return "unknown".to_owned();
    };
    let ip = match address.parse::<SocketAddr>() {
        Ok(socket) => socket.ip(),
        Err(_) => match address.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return address.to_owned(),
        },
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl RefusalTracker {
    pub(crate) fn new(limits: RefusalLimits) -> Self {
        RefusalTracker {
            limits,
            clients: HashMap::new(),
        }
    }

    fn window_length(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.limits.window).unwrap_or(chrono::TimeDelta::MAX)
    }

    fn closed(&self, window: &Window, now: DateTime<Utc>) -> bool {
        now.signed_duration_since(window.start) >= self.window_length()
    }

    /// Decide about one refusal `event` from `client` at `now`, refused with `code`. The first
    /// refusal above the burst is moved to the summary's operation (its id and detail change).
    pub(crate) fn admit(
        &mut self,
        client: &str,
        now: DateTime<Utc>,
        code: &str,
        event: &mut Event,
    ) -> Admission {
        let length = self.window_length();
        let mut due = Vec::new();
        let closed = self.clients.get(client).map(|w| self.closed(w, now));
        match closed {
            Some(false) => {}
            Some(true) => {
                if let Some(pending) = self.clients.remove(client).and_then(|w| w.pending) {
                    due.push(pending.into_event(now));
                }
            }
            None => {}
        }
        if !self.clients.contains_key(client) {
            if self.clients.len() >= self.limits.clients.max(1) {
                due.extend(self.evict_oldest(now));
            }
            self.clients.insert(
                client.to_owned(),
                Window {
                    start: now,
                    recorded: 0,
                    pending: None,
                },
            );
        }
        let burst = self.limits.burst;
        let Some(window) = self.clients.get_mut(client) else {
            // Just inserted; unreachable, but recording is the safe answer.
            return Admission {
                record: true,
                operation_id: event.operation_id.uuid(),
                due,
            };
        };
        if window.recorded < burst {
            window.recorded += 1;
            return Admission {
                record: true,
                operation_id: event.operation_id.uuid(),
                due,
            };
        }
        let opens = window.pending.is_none();
        let window_end = window.start + length;
        let pending = window
            .pending
            .get_or_insert_with(|| Pending::new(client, now, event));
        pending.count(now, code, &event.method);
        let summary_id = pending.sample.operation_id.uuid();
        if opens {
            // The first refusal above the burst is recorded in full, under the summary's
            // operation id, and says so: every id a client was given resolves to a record at
            // once, and the summary that follows under the same id gives the count.
            event.operation_id = summary_id.into();
            let note = format!(
                "; further refusals from {client} until {} are counted under this operation",
                window_end.to_rfc3339()
            );
            event.detail = Some(event.detail.take().unwrap_or_default() + &note);
        }
        Admission {
            record: opens,
            operation_id: summary_id,
            due,
        }
    }

    /// Drop the client whose window began first; its summary, if it has one.
    fn evict_oldest(&mut self, now: DateTime<Utc>) -> Option<Event> {
        // A linear scan: the map is capped, and eviction happens only when it is full.
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(_, w)| w.start)
            .map(|(k, _)| k.clone())?;
        self.clients
            .remove(&oldest)
            .and_then(|w| w.pending)
            .map(|p| p.into_event(now))
    }

    /// Summaries of windows that have closed by `now`; those clients are forgotten.
    pub(crate) fn due(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let closed: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, w)| self.closed(w, now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut due: Vec<Event> = closed
            .into_iter()
            .filter_map(|k| self.clients.remove(&k))
            .filter_map(|w| w.pending)
            .map(|p| p.into_event(now))
            .collect();
        due.sort_by_key(|e| e.refusal_summary.as_ref().map(|s| s.first));
        due
    }

    /// Every pending summary, whether its window closed or not (shutdown).
    pub(crate) fn drain(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let mut due: Vec<Event> = self
            .clients
            .drain()
            .filter_map(|(_, w)| w.pending)
            .map(|p| p.into_event(now))
            .collect();
        due.sort_by_key(|e| e.refusal_summary.as_ref().map(|s| s.first));
        due
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// The tracker shared by every request.
#[derive(Debug)]
pub(crate) struct Refusals {
    limits: RefusalLimits,
    tracker: Mutex<RefusalTracker>,
}

impl Refusals {
    pub(crate) fn new(limits: RefusalLimits) -> Self {
        Refusals {
            limits,
            tracker: Mutex::new(RefusalTracker::new(limits)),
        }
    }

    fn tracker(&self) -> MutexGuard<'_, RefusalTracker> {
        // The lock is never held across an await or a panic-prone call; a poisoned one still
        // holds consistent counts.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn admit(&self, code: &str, event: &mut Event) -> Admission {
        let client = client_key(event.actor.caller_address.as_deref());
        self.tracker().admit(&client, Utc::now(), code, event)
    }
}

/// Append summaries; a failure is logged (the refusals themselves were answered).
pub(crate) async fn record_summaries(store: &Store, events: Vec<Event>) {
    for event in events {
        let count = event.refusal_summary.as_ref().map_or(0, |s| s.count);
        if let Err(error) = store.append(event).await {
            warn!(%error, refusals = count, "could not record a refusal summary");
        }
    }
}

impl Proxy {
    /// Record the summaries of closed windows every half window until `stop`, then every pending
    /// one (shutdown: nothing counted is lost).
    pub(crate) async fn summarise_refusals(&self, stop: CancellationToken) {
        let period = (self.governor.refusals.limits.window / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {
                    let due = self.governor.refusals.tracker().due(Utc::now());
                    record_summaries(&self.governor.store, due).await;
                }
            }
        }
        let rest = self.governor.refusals.tracker().drain(Utc::now());
        record_summaries(&self.governor.store, rest).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::RawRequest;

    fn limits(burst: u32, clients: usize) -> RefusalLimits {
        RefusalLimits {
            burst,
            window: Duration::from_secs(10),
            clients,
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_750_000_000_000 + ms).unwrap()
    }

    fn refusal(method: &str, target: &str) -> Event {
        let mut e = Event::new(Uuid::now_v7(), EventKind::Denied);
        e.method = method.into();
        e.raw_request = Some(RawRequest::new(target, Some(&[b'x'; 10_000])));
        e
    }

    #[test]
    fn refusals_above_the_burst_are_counted_into_one_summary_when_the_window_closes() {
        let mut t = RefusalTracker::new(limits(3, 16));
        let mut own = 0;
        let mut summary_ids = Vec::new();
        let mut opener = None;
        for i in 0..10 {
            let code = if i % 2 == 0 {
                "BadRequest"
            } else {
                "SyncgateBodyTooLarge"
            };
            let mut e = refusal("PATCH", &format!("/v1.0/policies/x{i}"));
            let id = e.operation_id;
            let a = t.admit("10.0.0.1", at(i * 100), code, &mut e);
            assert!(a.due.is_empty());
            if a.operation_id == id {
                assert!(a.record);
                own += 1;
            } else {
                summary_ids.push(a.operation_id);
                if a.record {
                    assert!(
                        opener.is_none(),
                        "only the first above the burst is recorded"
                    );
                    opener = Some(e);
                }
            }
        }
        assert_eq!(own, 3, "the burst is recorded one by one");
        assert_eq!(summary_ids.len(), 7);
        assert!(summary_ids.iter().all(|id| *id == summary_ids[0]));
        // The first refusal above the burst is recorded under the summary's id, and says so.
        let opener = opener.expect("the first refusal above the burst is recorded");
        assert_eq!(opener.operation_id, summary_ids[0]);
        assert_eq!(
            opener.raw_request.as_ref().unwrap().target,
            "/v1.0/policies/x3"
        );
        assert!(
            opener
                .detail
                .as_deref()
                .unwrap()
                .contains("further refusals from 10.0.0.1 until"),
            "{:?}",
            opener.detail
        );
        // Another client has its own window.
        assert!(
            t.admit("10.0.0.2", at(950), "BadRequest", &mut refusal("GET", "/x"))
                .record
        );
        // Nothing is due inside the window.
        assert!(t.due(at(9_999)).is_empty());

        let due = t.due(at(10_000));
        assert_eq!(due.len(), 1, "one summary, and 10.0.0.2 counted nothing");
        let s = &due[0];
        assert_eq!(s.kind, EventKind::Denied);
        assert_eq!(s.operation, REFUSAL_SUMMARY);
        assert_eq!(s.operation_id, summary_ids[0]);
        assert_eq!(s.method, "PATCH");
        let raw = s.raw_request.as_ref().unwrap();
        assert_eq!(
            raw.target, "/v1.0/policies/x3",
            "the first counted refusal is the sample"
        );
        assert!(raw.body.is_none(), "the sample keeps no body");
        let summary = s.refusal_summary.as_ref().unwrap();
        assert_eq!(summary.client, "10.0.0.1");
        assert_eq!(summary.count, 7);
        assert_eq!((summary.first, summary.last), (at(300), at(900)));
        assert_eq!(summary.codes["BadRequest"], 3);
        assert_eq!(summary.codes["SyncgateBodyTooLarge"], 4);
        assert_eq!(summary.methods["PATCH"], 7);
        assert!(
            s.detail
                .as_deref()
                .unwrap()
                .starts_with("7 refusals from 10.0.0.1 between")
        );
        assert_eq!(t.tracked(), 1, "10.0.0.1's closed window is forgotten");
        assert!(t.due(at(10_950)).is_empty());
        assert_eq!(t.tracked(), 0);
        assert!(t.drain(at(20_000)).is_empty());
    }

    #[test]
    fn the_next_refusal_after_the_window_records_its_summary_and_starts_afresh() {
        let mut t = RefusalTracker::new(limits(1, 16));
        assert!(t.admit("c", at(0), "A", &mut refusal("PUT", "/a")).record);
        assert!(t.admit("c", at(1), "A", &mut refusal("PUT", "/b")).record);
        assert!(!t.admit("c", at(2), "A", &mut refusal("PUT", "/b")).record);
        let mut third = refusal("PUT", "/c");
        let a = t.admit("c", at(10_001), "A", &mut third);
        assert!(a.record, "a new window records its burst again");
        assert_eq!(a.operation_id, third.operation_id);
        assert_eq!(a.due.len(), 1);
        assert_eq!(a.due[0].refusal_summary.as_ref().unwrap().count, 2);
    }

    #[test]
    fn a_full_tracker_evicts_the_oldest_client_and_records_its_summary() {
        let mut t = RefusalTracker::new(limits(0, 2));
        let mut a = refusal("GET", "/a");
        let first = t.admit("a", at(0), "X", &mut a);
        assert_eq!(
            (first.record, first.operation_id == a.operation_id),
            (true, true),
            "burst 0: the first refusal opens the summary"
        );
        assert!(!t.admit("a", at(1), "X", &mut refusal("GET", "/a")).record);
        t.admit("b", at(1), "X", &mut refusal("GET", "/b"));
        let third = t.admit("c", at(2), "X", &mut refusal("GET", "/c"));
        assert_eq!(t.tracked(), 2);
        assert_eq!(third.due.len(), 1);
        let evicted = &third.due[0];
        assert_eq!(evicted.operation_id, first.operation_id);
        assert_eq!(evicted.refusal_summary.as_ref().unwrap().client, "a");
        let rest = t.drain(at(3));
        assert_eq!(
            rest.iter()
                .map(|e| e.refusal_summary.as_ref().unwrap().client.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn summaries_name_a_bounded_number_of_methods_and_codes() {
        let mut t = RefusalTracker::new(limits(0, 4));
        for i in 0..100 {
            let method = format!("M{i}{}", "X".repeat(100));
            t.admit("a", at(i), &format!("C{i}"), &mut refusal(&method, "/"));
        }
        let s = t.drain(at(100)).remove(0).refusal_summary.unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.methods.len(), MAX_NAMED + 1);
        assert_eq!(s.methods[OTHER], 100 - MAX_NAMED as u64);
        assert!(
            s.methods
                .keys()
                .all(|m| m.len() <= crate::audit::METHOD_MAX)
        );
        assert_eq!(s.codes.len(), MAX_NAMED + 1);
    }

    #[test]
    fn clients_are_ipv4_addresses_or_ipv6_slash_64s() {
        assert_eq!(client_key(Some("192.0.2.7:5123")), "192.0.2.7");
        assert_eq!(client_key(Some("[::ffff:192.0.2.7]:1")), "192.0.2.7");
        assert_eq!(
            client_key(Some("[2001:db8:1:2:aaaa::1]:443")),
            client_key(Some("[2001:db8:1:2:bbbb::9]:80"))
        );
        assert_eq!(
            client_key(Some("[2001:db8:1:2::1]:443")),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            client_key(Some("[2001:db8:1:2::1]:1")),
            client_key(Some("[2001:db8:1:3::1]:1"))
        );
        assert_eq!(client_key(None), "unknown");
    }
}
