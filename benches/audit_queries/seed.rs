//! The benchmark's log: a deterministic year of governed changes, and small measuring helpers.
//!
//! Deterministic (a fixed-seed xorshift, no clock) so every run of a given size queries the same
//! log and the cached file stays valid; shaped like production traffic so the filters select
//! what they would there: 100 partners, eight actors of different activity, most changes allowed
//! and completed, about one in eight refused by a named rule, one in ten with drift;
//! an operation being 2–4 events whose times follow each other by milliseconds.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use syncgate::audit::{Actor, Decision, Effect, Event, EventKind, RuleOutcome, Snapshot};
use uuid::Uuid;

/// xorshift64*: enough randomness for a traffic mix, reproducible from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(
            [self.next().to_le_bytes(), self.next().to_le_bytes()]
                .concat()
                .try_into()
                .unwrap_or([0; 16]),
        )
        .into_uuid()
    }
}

pub(crate) const PARTNERS: usize = 100;

pub(crate) fn partner(i: usize) -> String {
    format!("7a3c5e00-1b2c-4d5e-8f60-{i:012x}")
}

/// (upn, app id, weight): users by UPN (and object id), two automation apps by app id alone.
const ACTORS: [(Option<&str>, &str, u64); 8] = [
    (
        Some("alice@contoso.com"),
        "de8bc8b5-d9f9-48b1-a8ad-b748da725064",
        30,
    ),
    (
        Some("bob@contoso.com"),
        "de8bc8b5-d9f9-48b1-a8ad-b748da725064",
        20,
    ),
    (
        Some("carol@contoso.com"),
        "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        10,
    ),
    (
        Some("dave@contoso.com"),
        "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        8,
    ),
    (
        Some("erin@contoso.com"),
        "1950a258-227b-4e31-a9cf-717495945fc2",
        5,
    ),
    (
        Some("frank@contoso.com"),
        "1950a258-227b-4e31-a9cf-717495945fc2",
        2,
    ),
    (None, "8a7c0f2e-5a11-4d2b-9a61-3c6d1f0e9b01", 15),
    (None, "b3f1c6d4-77e0-4c59-8e2a-0d9a4c1e5f72", 10),
];

/// (operation kind, weight).
const KINDS: [(&str, u64); 5] = [
    ("sync_update", 60),
    ("partner_update", 20),
    ("partner_create", 8),
    ("sync_create", 7),
    ("partner_delete", 5),
];

fn weighted<T: Copy>(rng: &mut Rng, items: &[(T, u64)]) -> T {
    let total: u64 = items.iter().map(|(_, w)| w).sum();
    let mut pick = rng.next() % total;
    for (item, weight) in items {
        if pick < *weight {
            return *item;
        }
        pick -= weight;
    }
    items[0].0
}

fn rule(id: &str, passed: bool) -> RuleOutcome {
    RuleOutcome {
        rule: id.into(),
        kind: "partner_allowlist".into(),
        mode: "enforce".into(),
        action: "deny".into(),
        passed,
        message: (!passed).then(|| format!("{id}: the change is not allowed")),
    }
}

/// The first event of an operation: who asked what of which partner, and when.
fn request(rng: &mut Rng, operation_id: Uuid, at: DateTime<Utc>) -> (Event, &'static str) {
    let p = rng.below(PARTNERS);
    let partner = partner(p);
    let (upn, appid) = {
        let pairs: Vec<((Option<&str>, &str), u64)> =
            ACTORS.iter().map(|(u, a, w)| ((*u, *a), *w)).collect();
        weighted(rng, &pairs)
    };
    let kind = weighted(rng, &KINDS);
    let mut e = Event::new(operation_id, EventKind::Received);
    e.time = at;
    e.method = "PATCH".into();
    e.canonical_path = format!(
        "/v1.0/policies/crosstenantaccesspolicy/partners/{partner}/identitysynchronization"
    );
    e.state_path = Some(format!(
        "/v1.0/policies/crossTenantAccessPolicy/partners/{partner}/identitySynchronization"
    ));
    e.api_version = "v1.0".into();
    e.partner_tenant_id = partner.parse().ok();
    e.operation = kind.into();
    e.actor = Actor {
        oid: upn.map(|u| format!("{:08x}-1111-4111-8111-111111111111", u.len() * 7919)),
        upn: upn.map(str::to_owned),
        appid: Some(appid.to_owned()),
        app_displayname: Some(
            if upn.is_some() {
                "Graph Explorer"
            } else {
                "sync-automation"
            }
            .into(),
        ),
        tid: Some("33333333-3333-4333-8333-333333333333".into()),
        idtyp: Some(if upn.is_some() { "user" } else { "app" }.into()),
        scp: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        caller_address: Some(format!("10.0.{}.{}:5{:04}", p % 7, p, rng.below(9999))),
        token_hmac: Some(format!("{:016x}", rng.next()).repeat(4)),
        ..Actor::default()
    };
    e.client_request_id = Some(rng.uuid().to_string());
    e.request_id = Some(rng.uuid().to_string());
    e.request_body = Some(json!({
        "displayName": format!("Northwind {p} sync"),
        "userSyncInbound": {"isSyncAllowed": rng.chance(70)}
    }));
    (e, kind)
}

/// The events of one operation, in order, starting at `at`.
fn operation(rng: &mut Rng, at: DateTime<Utc>) -> Vec<Event> {
    let id = rng.uuid();
    let (first, kind) = request(rng, id, at);
    let later = |e: &Event, kind: EventKind, ms: i64| {
        let mut next = e.clone();
        next.kind = kind;
        next.event_id = Uuid::new_v4();
        next.time = e.time + TimeDelta::milliseconds(ms);
        next
    };
    let mut events = vec![first.clone()];
    if kind == "partner_delete" && rng.chance(60) || rng.chance(8) {
        let mut denied = later(&first, EventKind::Denied, 12);
        denied.decision = Some(Decision::Deny);
        let failing = if kind == "partner_delete" {
            "no-partner-deletes"
        } else {
            "sync-allowlist"
        };
        denied.rule_results = vec![rule("tenant-allowlist", true), rule(failing, false)];
        denied.upstream_status = Some(403);
        denied.effect = Some(Effect::NotApplied);
        events.push(denied);
        return events;
    }
    if rng.chance(10) {
        let mut drift = later(&first, EventKind::Drift, 40);
        drift.before = Some(Snapshot::Present {
            value: json!({"userSyncInbound": {"isSyncAllowed": false}}),
        });
        events.push(drift);
    }
    let mut done = later(&first, EventKind::Completed, 150 + rng.below(400) as i64);
    done.decision = Some(Decision::Allow);
    done.rule_results = vec![rule("tenant-allowlist", true), rule("sync-allowlist", true)];
    done.before = Some(Snapshot::Present {
        value: json!({"displayName": "Northwind", "userSyncInbound": {"isSyncAllowed": false}}),
    });
    done.after = Some(Snapshot::Present {
        value: json!({"displayName": "Northwind", "userSyncInbound": {"isSyncAllowed": true}}),
    });
    done.diff = Some(json!([
        {"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}
    ]));
    done.upstream_status = Some(204);
    done.latency_ms = Some(140);
    done.upstream_latency_ms = Some(95);
    done.effect = Some(if rng.chance(95) {
        Effect::Applied
    } else {
        Effect::Ignored
    });
    events.push(done);
    events
}

/// Operations totalling about `events` events, a year of them from 2025-01-01, oldest first.
pub(crate) fn generate(rng: &mut Rng, events: usize) -> Vec<Vec<Event>> {
    let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    // About 2.2 events per operation; the spacing makes the last one land near year's end.
    let spacing = TimeDelta::seconds(365 * 86_400) / (events as i32 * 10 / 22).max(1);
    let mut plan = Vec::new();
    let (mut total, mut at) = (0, start);
    while total < events {
        let mut op = operation(rng, at);
        op.truncate(events - total);
        total += op.len();
        plan.push(op);
        at += spacing;
    }
    plan
}

/// p50 and p99 in milliseconds.
pub(crate) fn percentiles(mut latencies: Vec<Duration>) -> (f64, f64) {
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    )
}

/// This process's resident memory (Linux; 0 elsewhere).
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time this process has used (user + system, every thread), from `getrusage`: steadier
/// than wall time on a shared machine, and what an export costs the host.
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}
