//! The operations query: one row per governed operation, its events folded, paged by cursor.
//!
//! # Design
//!
//! Operations are folded once, when their events are written: the writer keeps one row per
//! operation in the operations index (`index.rs`, migration 0004) in the same transaction as
//! the events, with [`OperationSummary::start`] and [`OperationSummary::apply`], the same fold
//! [`fold`] runs over one operation's events when it is read on its own. A page is then one
//! statement on that table (`sql.rs`): every filter is exact in SQL, each has an index that
//! yields rows in page order, and no event is parsed. Exports add one statement for the page's
//! events. The fold is in Rust rather than in SQL because several summary fields live inside
//! the event JSON (the deciding rule in `rule_results`, the effect, the display name in the
//! request body), which SQLite's and PostgreSQL's JSON functions would read differently.
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
//! A page is at most [`MAX_LIMIT`] rows of an index walk in page order. The one filter no
//! index serves, the free-text search over display names, scans the index table (one short
//! row per operation), never the events.

pub(crate) mod index;
pub(crate) mod index_check;
mod sql;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{ReadBackend, StoreError, StoreReader};
use crate::audit::{Decision, Effect, Event, EventKind, Operation, Recorded};
use crate::graph::{OperationId, TenantId};

pub(crate) use sql::{events_between, events_of, page};

/// The most operations one page may hold; larger limits are cut to this.
pub(crate) const MAX_LIMIT: u32 = 1000;

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
    /// The latest terminal event's kind ([`TERMINAL`]); `None` while unfinished.
    pub(crate) terminal: Option<EventKind>,
    /// The seq of the operation's first event: its place in the order.
    pub(crate) first_seq: i64,
    /// The seq of its latest event, and how many it has: where its events lie in the log, so
    /// a page's events can be read as one range (see [`StoreReader::folded_operations`]). Not
    /// part of the API's row.
    #[serde(skip)]
    pub(crate) last_seq: i64,
    #[serde(skip)]
    pub(crate) events: i64,
}

/// A page of operations, newest first, and where the next one starts (`None`: no more).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OperationsPage {
    pub(crate) operations: Vec<OperationSummary>,
    pub(crate) next: Option<Cursor>,
}

/// The kinds that end an operation: the upstream answered, syncgate refused it, crash recovery
/// finished it, or the approval gate made an approval request of it.
pub(crate) const TERMINAL: [EventKind; 4] = [
    EventKind::Completed,
    EventKind::Denied,
    EventKind::Recovered,
    EventKind::ApprovalRequested,
];

fn is_terminal(kind: EventKind) -> bool {
    TERMINAL.contains(&kind)
}

/// Fold one operation's events (in seq order, at least one) into its summary.
pub(crate) fn fold(events: &[Recorded]) -> Option<OperationSummary> {
    let (first, rest) = events.split_first()?;
    let mut summary = OperationSummary::start(first.seq, &first.event);
    for recorded in rest {
        summary.apply(recorded.seq, &recorded.event);
    }
    Some(summary)
}

impl OperationSummary {
    /// The summary of an operation whose first event (at `seq`) is `e`. The one fold: reading
    /// an operation's events ([`fold`]) and keeping the operations index (`index.rs`) both
    /// start here and go on with [`OperationSummary::apply`], so they cannot disagree.
    pub(crate) fn start(seq: i64, e: &Event) -> OperationSummary {
        let mut summary = OperationSummary {
            operation_id: e.operation_id,
            operation: e.operation.clone(),
            partner: e.partner_tenant_id.clone(),
            actor: ActorIds {
                oid: e.actor.oid.clone(),
                upn: e.actor.upn.clone(),
                appid: e.actor.appid.clone(),
            },
            decision: None,
            rule: None,
            status: None,
            effect: None,
            drift: false,
            approval_id: None,
            display_name: None,
            first_time: e.time,
            last_time: e.time,
            terminal: None,
            first_seq: seq,
            last_seq: seq,
            events: 0,
        };
        summary.apply(seq, e);
        summary
    }

    /// Fold in the operation's next event (events come in seq order). Every field is "the
    /// latest event that has one", "the first that has one", "any" or "the latest time", so a
    /// summary needs nothing but itself to take the next event.
    pub(crate) fn apply(&mut self, seq: i64, e: &Event) {
        self.last_seq = self.last_seq.max(seq);
        self.events += 1;
        if let Some(decision) = e.decision {
            self.decision = Some(decision);
        }
        if !e.rule_results.is_empty() {
            self.rule = e
                .rule_results
                .iter()
                .find(|o| !o.passed)
                .map(|o| o.rule.clone());
        }
        if is_terminal(e.kind) {
            self.terminal = Some(e.kind);
            self.status = e.upstream_status;
        }
        if let Some(effect) = e.effect {
            self.effect = Some(effect);
        }
        self.drift |= e.kind == EventKind::Drift;
        if let Some(approval) = &e.approval_id {
            self.approval_id = Some(approval.clone());
        }
        if self.display_name.is_none() {
            self.display_name = e
                .request_body
                .as_ref()
                .and_then(|body| body.get("displayName")?.as_str())
                .map(str::to_owned);
        }
        self.last_time = self.last_time.max(e.time);
    }
}

/// One operation with every event it holds, in seq order: what an export writes. The store
/// reads the events as stored ([`RawEvent`]); an export reads what it needs of them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoldedOperation<E> {
    pub(crate) summary: OperationSummary,
    pub(crate) events: Vec<E>,
}

/// A page of operations with their events, newest first, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FoldedPage<E> {
    pub(crate) operations: Vec<FoldedOperation<E>>,
    pub(crate) next: Option<Cursor>,
}

/// An event exactly as stored: its place in the chain and the canonical JSON that was hashed
/// (with `seq` inside), not parsed. What an export that only copies events needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
    pub(crate) event: String,
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
        let limit = limit.clamp(1, MAX_LIMIT) as usize;
        let before = cursor.map_or(i64::MAX, |c| c.before_seq);
        // One row more than asked says whether there is a next page.
        let wanted = limit as i64 + 1;
        let mut operations = match &self.backend {
            ReadBackend::Sqlite(r) => r.operation_page(filter, before, wanted).await?,
            ReadBackend::Postgres(r) => r.operation_page(filter, before, wanted).await?,
        };
        let next = (operations.len() > limit).then(|| {
            operations.truncate(limit);
            Cursor {
                before_seq: operations.last().map_or(before, |s| s.first_seq),
            }
        });
        Ok(OperationsPage { operations, next })
    }

    /// [`StoreReader::operations`] with each operation's events kept beside its summary, as
    /// stored (unparsed), for exports: the same selection, order and cursor, so an export and
    /// the listing agree.
    pub(crate) async fn folded_operations(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<FoldedPage<RawEvent>, StoreError> {
        let page = self.operations(filter, cursor, limit).await?;
        let events = self.raw_events(&page).await?;
        attach(page, events)
    }

    /// The events of a page's operations as stored, grouped by operation, in seq order. Read
    /// as one range of the log when they make up at least half of it (an unfiltered page:
    /// sequential reads, about twice as fast as looking each operation up), else by operation
    /// id (a filtered page's operations are scattered over the log).
    async fn raw_events(
        &self,
        page: &OperationsPage,
    ) -> Result<HashMap<Uuid, Vec<RawEvent>>, StoreError> {
        let ids = page_ids(page);
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = match events_range(page) {
            Some((low, high)) => match &self.backend {
                ReadBackend::Sqlite(r) => r.raw_events_between(low, high).await?,
                ReadBackend::Postgres(r) => r.raw_events_between(low, high).await?,
            },
            None => {
                let ids = stored_ids(&ids);
                match &self.backend {
                    ReadBackend::Sqlite(r) => r.operation_raw_events(&ids).await?,
                    ReadBackend::Postgres(r) => r.operation_raw_events(&ids).await?,
                }
            }
        };
        let wanted: std::collections::HashSet<Uuid> = ids.into_iter().collect();
        let mut events: HashMap<Uuid, Vec<RawEvent>> = HashMap::new();
        for (id, event) in rows {
            let id = Uuid::parse_str(&id).map_err(|_| {
                StoreError::corrupt(format!(
                    "event seq {} has a malformed operation id",
                    event.seq
                ))
            })?;
            if wanted.contains(&id) {
                events.entry(id).or_default().push(event);
            }
        }
        Ok(events)
    }
}

/// The range of seqs holding every event of the page's operations, when those events are at
/// least half of it.
fn events_range(page: &OperationsPage) -> Option<(i64, i64)> {
    let low = page.operations.iter().map(|s| s.first_seq).min()?;
    let high = page.operations.iter().map(|s| s.last_seq).max()?;
    let wanted: i64 = page.operations.iter().map(|s| s.events).sum();
    (high - low < 2 * wanted).then_some((low, high))
}

/// The ids of a page's operations, in page order.
fn page_ids(page: &OperationsPage) -> Vec<Uuid> {
    page.operations
        .iter()
        .map(|s| s.operation_id.uuid())
        .collect()
}

/// Operation ids as the tables store them (hyphenated, lower case).
fn stored_ids(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(|id| id.hyphenated().to_string()).collect()
}

/// Each operation of `page` with its events; an operation the index holds but the log has no
/// event of is a corrupt index.
fn attach<E>(
    page: OperationsPage,
    mut events: HashMap<Uuid, Vec<E>>,
) -> Result<FoldedPage<E>, StoreError> {
    let operations = page
        .operations
        .into_iter()
        .map(|summary| {
            let id = summary.operation_id.uuid();
            match events.remove(&id) {
                Some(events) => Ok(FoldedOperation { summary, events }),
                None => Err(StoreError::corrupt(format!(
                    "the operations index holds operation {id}, which has no events"
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(FoldedPage {
        operations,
        next: page.next,
    })
}
