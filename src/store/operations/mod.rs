//! The operations query: one row per governed operation, its events folded, paged by cursor.
//!
//! # Design
//!
//! Folding happens in Rust, over all events of the operations selected for a page, in two
//! statements (`sql.rs`): pick a batch of operation ids, then fetch their events. Why not
//! `GROUP BY` with conditional aggregates in SQL: several summary fields are not columns (the
//! effect, the deciding rule inside `rule_results`, the approval id, the display name in the
//! request body), and extracting them in SQL means JSON functions that differ between SQLite and
//! PostgreSQL; the fold written once in Rust (with [`Event`]'s own types) reads every log the
//! same way on both, including logs written before any new column existed.
//!
//! Why no new columns: `chain.rs` derives the indexed columns from the event JSON and `verify`
//! checks them, so a column added now would be empty (or need back-filling, which the
//! append-only triggers forbid) in every existing log, and verify would have to know which rows
//! predate it. Filters on fields that are not columns are applied instead as a *necessary*
//! condition in SQL (`LIKE` on the canonical JSON text, wildcards escaped) and exactly in Rust
//! on the folded summary ([`OperationFilter::matches`]). A later step may add columns in a 0002
//! migration if the benchmark shows the `LIKE` prefilter is too slow; the API would not change.
//!
//! # Order and cursor
//!
//! Newest first by the seq of the operation's first event. That seq never changes and a new
//! operation's first event always has a larger seq, so events appended while a client pages
//! never shift an older page: the cursor is "first seq below this", and the next page starts
//! exactly after the last row returned (no duplicates, no gaps). An operation's later events
//! (its `completed`, say) do change its summary, but not its place.
//!
//! # Bounded work
//!
//! A page scans at most [`SCAN_MAX`] candidate operations. When the Rust-only part of a filter
//! rejects that many, the page comes back short (possibly empty) with a cursor to continue from:
//! a caller pages until `next` is `None`, never assuming a short page is the last.

mod sql;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::chain::time_column;
use super::{ReadBackend, StoreError, StoreReader};
use crate::audit::{Decision, Effect, Event, EventKind, Operation, Recorded};
use crate::graph::{OperationId, TenantId};

pub(crate) use sql::{candidates, events_of};

/// The most operations one page may hold; larger limits are cut to this.
pub(crate) const MAX_LIMIT: u32 = 1000;

/// The most candidate operations one page examines before it returns, short, with a cursor.
pub(crate) const SCAN_MAX: usize = 10_000;

/// Candidates fetched per statement, at least: a page with a selective Rust-side filter should
/// not cost one round trip per row.
const MIN_BATCH: i64 = 100;

/// Which operations [`StoreReader::operations`] returns; every field set narrows the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OperationFilter {
    /// Partner tenant id (lower-case GUID, as recorded).
    pub(crate) partner: Option<String>,
    /// The actor's `oid`, `upn` or `appid`, ignoring ASCII case.
    pub(crate) actor: Option<String>,
    /// The operation's kind (`sync_update`, ...).
    pub(crate) operation: Option<Operation>,
    /// The operation's decision (its latest event's that has one).
    pub(crate) decision: Option<Decision>,
    /// The deciding rule: the first failing rule of the operation's rule results.
    pub(crate) rule: Option<String>,
    pub(crate) effect: Option<Effect>,
    /// The upstream status of the terminal event.
    pub(crate) status: Option<u16>,
    /// Whether a drift event belongs to the operation.
    pub(crate) drift: Option<bool>,
    /// Operations whose first event is at or after this instant.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Operations whose first event is strictly before this instant.
    pub(crate) until: Option<DateTime<Utc>>,
    /// A substring of the request body's `displayName`, ignoring ASCII case.
    pub(crate) text: Option<String>,
}

/// Where the next page starts: below the first seq of the last operation returned. Callers treat
/// it as an opaque string ([`Cursor::encode`], [`Cursor::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    before_seq: i64,
}

impl Cursor {
    /// The cursor as callers see it.
    pub(crate) fn encode(self) -> String {
        format!("s{}", self.before_seq)
    }

    /// A cursor from [`Cursor::encode`]'s text; `None` when it is not one.
    pub(crate) fn parse(text: &str) -> Option<Cursor> {
        let digits = text.strip_prefix('s')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let before_seq = digits.parse().ok()?;
        Some(Cursor { before_seq })
    }
}

/// The actor's identifiers, as the operation's first event recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ActorIds {
    pub(crate) oid: Option<String>,
    pub(crate) upn: Option<String>,
    pub(crate) appid: Option<String>,
}

/// One governed operation, its events folded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OperationSummary {
    pub(crate) operation_id: OperationId,
    /// The operation's kind (`sync_update`, ...).
    pub(crate) operation: Operation,
    pub(crate) partner: Option<TenantId>,
    pub(crate) actor: ActorIds,
    /// The latest decision recorded.
    pub(crate) decision: Option<Decision>,
    /// The first failing rule of the latest event that carries rule results.
    pub(crate) rule: Option<String>,
    /// The upstream status of the terminal event.
    pub(crate) status: Option<u16>,
    /// The latest effect recorded.
    pub(crate) effect: Option<Effect>,
    pub(crate) drift: bool,
    pub(crate) approval_id: Option<String>,
    /// The request body's `displayName`, when it has one.
    pub(crate) display_name: Option<String>,
    pub(crate) first_time: DateTime<Utc>,
    pub(crate) last_time: DateTime<Utc>,
    /// The latest `completed`, `denied` or `recovered` event's kind; `None` while unfinished.
    pub(crate) terminal: Option<EventKind>,
    /// The seq of the operation's first event: its place in the order.
    pub(crate) first_seq: i64,
}

/// A page of operations, newest first, and where the next one starts (`None`: no more).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OperationsPage {
    pub(crate) operations: Vec<OperationSummary>,
    pub(crate) next: Option<Cursor>,
}

fn is_terminal(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Completed | EventKind::Denied | EventKind::Recovered
    )
}

/// The value `f` finds in the latest event that has one.
fn latest<T>(events: &[Recorded], f: impl Fn(&Event) -> Option<T>) -> Option<T> {
    events.iter().rev().find_map(|r| f(&r.event))
}

/// Fold one operation's events (in seq order, at least one) into its summary.
pub(crate) fn fold(events: &[Recorded]) -> Option<OperationSummary> {
    let first = events.first()?;
    let e = &first.event;
    let terminal = events.iter().rev().find(|r| is_terminal(r.event.kind));
    let rule = events
        .iter()
        .rev()
        .find(|r| !r.event.rule_results.is_empty())
        .and_then(|r| r.event.rule_results.iter().find(|o| !o.passed))
        .map(|o| o.rule.clone());
    let display_name = events.iter().find_map(|r| {
        r.event
            .request_body
            .as_ref()?
            .get("displayName")?
            .as_str()
            .map(str::to_owned)
    });
    Some(OperationSummary {
        operation_id: e.operation_id,
        operation: e.operation.clone(),
        partner: e.partner_tenant_id.clone(),
        actor: ActorIds {
            oid: e.actor.oid.clone(),
            upn: e.actor.upn.clone(),
            appid: e.actor.appid.clone(),
        },
        decision: latest(events, |e| e.decision),
        rule,
        status: terminal.and_then(|r| r.event.upstream_status),
        effect: latest(events, |e| e.effect),
        drift: events.iter().any(|r| r.event.kind == EventKind::Drift),
        approval_id: latest(events, |e| e.approval_id.clone()),
        display_name,
        first_time: e.time,
        last_time: events.iter().map(|r| r.event.time).max().unwrap_or(e.time),
        terminal: terminal.map(|r| r.event.kind),
        first_seq: first.seq,
    })
}

/// `haystack` contains `needle`, ignoring ASCII case.
fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl OperationFilter {
    /// Whether the folded operation matches every field set (the exact check; SQL only narrows).
    pub(crate) fn matches(&self, s: &OperationSummary) -> bool {
        let same = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        let partner = s.partner.as_ref().map(|p| p.as_str());
        // Times compare as the SQL does, in the column's format (microseconds), so a bound with
        // nanoseconds selects the same rows in both places.
        let first_time = time_column(&s.first_time);
        self.partner.as_deref().is_none_or(|p| partner == Some(p))
            && self.actor.as_deref().is_none_or(|a| {
                same(s.actor.oid.as_deref(), a)
                    || same(s.actor.upn.as_deref(), a)
                    || same(s.actor.appid.as_deref(), a)
            })
            && self.operation.as_ref().is_none_or(|o| *o == s.operation)
            && self.decision.is_none_or(|d| s.decision == Some(d))
            && self
                .rule
                .as_deref()
                .is_none_or(|r| s.rule.as_deref() == Some(r))
            && self.effect.is_none_or(|e| s.effect == Some(e))
            && self.status.is_none_or(|st| s.status == Some(st))
            && self.drift.is_none_or(|d| s.drift == d)
            && self.since.is_none_or(|t| first_time >= time_column(&t))
            && self.until.is_none_or(|t| first_time < time_column(&t))
            && self.text.as_deref().is_none_or(|t| {
                s.display_name
                    .as_deref()
                    .is_some_and(|name| contains_ignoring_ascii_case(name, t))
            })
    }
}

/// One operation with every event it holds, in seq order: what an export writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoldedOperation {
    pub(crate) summary: OperationSummary,
    pub(crate) events: Vec<Recorded>,
}

/// A page of operations with their events, newest first, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoldedPage {
    pub(crate) operations: Vec<FoldedOperation>,
    pub(crate) next: Option<Cursor>,
}

impl StoreReader {
    /// Up to `limit` (cut to `1..=MAX_LIMIT`) operations matching `filter`, newest first,
    /// starting after `cursor` (from the top when `None`). See the module documentation.
    pub(crate) async fn operations(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<OperationsPage, StoreError> {
        self.operations_scanning(filter, cursor, limit, SCAN_MAX)
            .await
    }

    /// [`StoreReader::operations`] examining at most `scan_max` candidates (tests lower it).
    pub(super) async fn operations_scanning(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
        scan_max: usize,
    ) -> Result<OperationsPage, StoreError> {
        let page = self
            .folded_scanning(filter, cursor, limit, scan_max)
            .await?;
        Ok(OperationsPage {
            operations: page.operations.into_iter().map(|o| o.summary).collect(),
            next: page.next,
        })
    }

    /// [`StoreReader::operations`] with each operation's events kept beside its summary, for
    /// exports: the same selection, order and cursor, so an export and the listing agree.
    pub(crate) async fn folded_operations(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<FoldedPage, StoreError> {
        self.folded_scanning(filter, cursor, limit, SCAN_MAX).await
    }

    async fn folded_scanning(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
        scan_max: usize,
    ) -> Result<FoldedPage, StoreError> {
        let limit = limit.clamp(1, MAX_LIMIT) as usize;
        let batch = (limit as i64).max(MIN_BATCH).min(scan_max.max(1) as i64);
        let mut before = cursor.map_or(i64::MAX, |c| c.before_seq);
        let mut operations = Vec::new();
        let mut scanned = 0;
        loop {
            let candidates = self.operation_candidates(filter, before, batch).await?;
            let last_batch = (candidates.len() as i64) < batch;
            let mut events = self.events_by_operation(&candidates).await?;
            for (i, (seq, id)) in candidates.iter().enumerate() {
                before = *seq;
                scanned += 1;
                let events = events.remove(id).unwrap_or_default();
                let summary = fold(&events)
                    .ok_or_else(|| StoreError::corrupt(format!("operation {id} has no events")))?;
                if !filter.matches(&summary) {
                    continue;
                }
                operations.push(FoldedOperation { summary, events });
                if operations.len() == limit {
                    let more = !last_batch || i + 1 < candidates.len();
                    let next = more.then_some(Cursor { before_seq: *seq });
                    return Ok(FoldedPage { operations, next });
                }
            }
            if last_batch {
                return Ok(FoldedPage {
                    operations,
                    next: None,
                });
            }
            if scanned >= scan_max {
                let next = Some(Cursor { before_seq: before });
                return Ok(FoldedPage { operations, next });
            }
        }
    }

    async fn operation_candidates(
        &self,
        filter: &OperationFilter,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Uuid)>, StoreError> {
        let rows = match &self.backend {
            ReadBackend::Sqlite(r) => r.operation_candidates(filter, before, limit).await?,
            ReadBackend::Postgres(r) => r.operation_candidates(filter, before, limit).await?,
        };
        rows.into_iter()
            .map(|(seq, id)| {
                let id = Uuid::parse_str(&id).map_err(|_| {
                    StoreError::corrupt(format!("event seq {seq} has a malformed operation id"))
                })?;
                Ok((seq, id))
            })
            .collect()
    }

    /// The events of `candidates`' operations, grouped by operation, each in seq order.
    async fn events_by_operation(
        &self,
        candidates: &[(i64, Uuid)],
    ) -> Result<HashMap<Uuid, Vec<Recorded>>, StoreError> {
        if candidates.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = candidates
            .iter()
            .map(|(_, id)| id.hyphenated().to_string())
            .collect();
        let events = match &self.backend {
            ReadBackend::Sqlite(r) => r.operation_events(&ids).await?,
            ReadBackend::Postgres(r) => r.operation_events(&ids).await?,
        };
        let mut grouped: HashMap<Uuid, Vec<Recorded>> = HashMap::new();
        for recorded in events {
            let id = recorded.event.operation_id.uuid();
            grouped.entry(id).or_default().push(recorded);
        }
        Ok(grouped)
    }
}
