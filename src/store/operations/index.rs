//! The operations index (migration 0004): one row per operation, its events folded, kept by
//! the writer in the transaction that appends the events, and read by every operations query.
//!
//! # Why a table kept by the writer
//!
//! Folding at query time (read a batch of candidate operations, fetch all their events, parse
//! and fold each, filter) cost every page a hundred or more JSON parses and made filters on
//! folded fields (decision, rule, effect, status, drift, display name) a `LIKE` over event text
//! followed by a check in Rust: 30–200 ms a page at 200,000 events, and an export bound by the
//! same work. Folding once, when the events are written, makes a page one index range scan and
//! every filter exact in SQL, and costs the writer three or four statements per group.
//!
//! # What keeps it honest
//!
//! - The one fold: rows are built by [`OperationSummary::start`] and
//!   [`OperationSummary::apply`], which the per-operation read ([`super::fold`]) uses too.
//! - Same transaction: an event and its fold commit together or not at all, on both backends,
//!   so in any snapshot `operation_index_state.through_seq` equals the chain head.
//! - Catch-up: a log written before the index existed is folded at the writer's open
//!   (`catch_up_index` in [`index_writes`], page by page, each page its own transaction under
//!   the write lock).
//! - Readers check `through_seq` against the head in the same statement ([`FRESHNESS`]) and
//!   refuse an index that is behind rather than answer from it.
//! - It is not evidence: `syncgate audit verify` re-folds every operation from the hashed
//!   events and reports the first row that disagrees (`index_check.rs`), since anyone who can
//!   write the database can write this table, which carries no hash.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::{ActorIds, OperationSummary};
use crate::audit::{Decision, Effect, Event, EventKind, Operation};
use crate::graph::{OperationId, TenantId};
use crate::store::StoreError;
use crate::store::chain::{Append, StoredRow};

/// The index's columns, in the order [`upsert`] writes and [`summary_from_row`] reads them.
pub(crate) const COLUMNS: &str = "first_seq, operation_id, operation, partner_tenant_id, \
    actor_oid, actor_upn, actor_appid, decision, rule, status, effect, drift, approval_id, \
    display_name, display_name_folded, first_time, last_time, terminal, last_seq, events";

/// [`COLUMNS`] with the `o.` alias the page query gives the table.
pub(super) fn aliased_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Empty the index: what `syncgate audit reindex` runs before folding the whole log again.
pub(crate) const CLEAR: [&str; 3] = [
    "DELETE FROM operation_actors",
    "DELETE FROM operation_index",
    "UPDATE operation_index_state SET through_seq = 0",
];

/// The last seq folded into the index and the chain head (0 for an empty log), read in one
/// statement so both come from the same snapshot.
pub(crate) const FRESHNESS: &str = "SELECT s.through_seq, \
    COALESCE((SELECT MAX(seq) FROM audit_events), 0) AS head \
    FROM operation_index_state s WHERE s.id = 1";

/// Rows per statement when writing summaries: far below SQLite's and PostgreSQL's limits on
/// bound parameters (20 per row).
const UPSERT_CHUNK: usize = 500;

/// `text` with ASCII letters lower-cased and nothing else changed: what the actor and
/// free-text filters compare, exactly as [`str::eq_ignore_ascii_case`] would.
pub(crate) fn ascii_folded(text: &str) -> String {
    text.to_ascii_lowercase()
}

/// What one transaction writes to the index.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Update {
    /// Every operation the events touched, folded through the last of them.
    pub(crate) summaries: Vec<OperationSummary>,
    /// `(identifier, first_seq)` for the actors of operations new in this update.
    pub(crate) actors: Vec<(String, i64)>,
    /// The seq of the last event folded in.
    pub(crate) through: Option<i64>,
}

/// Fold `events` (seq and event, in seq order) into the summaries the index already holds for
/// their operations (`existing`; an operation absent from it starts with its event here).
pub(crate) fn plan<'e>(
    existing: Vec<OperationSummary>,
    events: impl IntoIterator<Item = (i64, &'e Event)>,
) -> Update {
    let mut order: Vec<OperationId> = Vec::new();
    let mut by_id: HashMap<OperationId, OperationSummary> =
        existing.into_iter().map(|s| (s.operation_id, s)).collect();
    let mut actors = Vec::new();
    let mut through = None;
    for (seq, event) in events {
        through = Some(seq);
        let id = event.operation_id;
        if !order.contains(&id) {
            order.push(id);
        }
        match by_id.get_mut(&id) {
            Some(summary) => summary.apply(seq, event),
            None => {
                let summary = OperationSummary::start(seq, event);
                actors.extend(actor_keys(&summary.actor).into_iter().map(|a| (a, seq)));
                by_id.insert(id, summary);
            }
        }
    }
    let summaries = order.iter().filter_map(|id| by_id.remove(id)).collect();
    Update {
        summaries,
        actors,
        through,
    }
}

/// The distinct ASCII-lower-cased identifiers an actor filter may name.
pub(super) fn actor_keys(actor: &ActorIds) -> Vec<String> {
    let mut keys: Vec<String> = [&actor.oid, &actor.upn, &actor.appid]
        .into_iter()
        .flatten()
        .map(|id| ascii_folded(id))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The index rows of the given operations (ids as stored: hyphenated lower-case).
pub(crate) fn select_by_id<'a, DB>(operation_ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM operation_index WHERE operation_id IN "
    ));
    super::sql::push_list(&mut q, operation_ids);
    q
}

/// Insert or overwrite the rows of `summaries` (at most [`UPSERT_CHUNK`]; see [`chunks`]).
/// A conflict on `first_seq` is the same operation folded further; the columns of its first
/// event never change.
pub(crate) fn upsert<'a, DB>(summaries: &[OperationSummary]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("INSERT INTO operation_index ({COLUMNS}) "));
    q.push_values(summaries, |mut row, s| {
        row.push_bind(s.first_seq)
            .push_bind(s.operation_id.uuid().hyphenated().to_string())
            .push_bind(s.operation.as_str().to_owned())
            .push_bind(s.partner.as_ref().map(|p| p.as_str().to_owned()))
            .push_bind(s.actor.oid.clone())
            .push_bind(s.actor.upn.clone())
            .push_bind(s.actor.appid.clone())
            .push_bind(s.decision.map(|d| d.as_str().to_owned()))
            .push_bind(s.rule.clone())
            .push_bind(s.status.map(i64::from))
            .push_bind(s.effect.map(|e| e.as_str().to_owned()))
            .push_bind(i64::from(s.drift))
            .push_bind(s.approval_id.clone())
            .push_bind(s.display_name.clone())
            .push_bind(s.display_name.as_deref().map(ascii_folded))
            .push_bind(s.first_time.timestamp_micros())
            .push_bind(s.last_time.timestamp_micros())
            .push_bind(s.terminal.map(|k| k.as_str().to_owned()))
            .push_bind(s.last_seq)
            .push_bind(s.events);
    });
    q.push(
        " ON CONFLICT (first_seq) DO UPDATE SET decision = excluded.decision, \
         rule = excluded.rule, status = excluded.status, effect = excluded.effect, \
         drift = excluded.drift, approval_id = excluded.approval_id, \
         display_name = excluded.display_name, \
         display_name_folded = excluded.display_name_folded, \
         last_time = excluded.last_time, terminal = excluded.terminal, \
         last_seq = excluded.last_seq, events = excluded.events",
    );
    q
}

/// `items` in slices a statement can bind.
pub(crate) fn chunks<T>(items: &[T]) -> std::slice::Chunks<'_, T> {
    items.chunks(UPSERT_CHUNK)
}

/// Insert `(identifier, first_seq)` rows into `operation_actors`.
pub(crate) fn insert_actors<'a, DB>(actors: &[(String, i64)]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("INSERT INTO operation_actors (actor, first_seq) ");
    q.push_values(actors, |mut row, (actor, seq)| {
        row.push_bind(actor.clone()).push_bind(*seq);
    });
    q
}

/// Record that the index holds every event through `seq`.
pub(crate) fn set_through<'a, DB>(seq: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE operation_index_state SET through_seq = ");
    q.push_bind(seq).push(" WHERE id = 1");
    q
}

/// A summary from an index row ([`COLUMNS`]); a value this code would never write is
/// [`StoreError::Corrupt`], naming the row.
pub(crate) fn summary_from_row<R>(
    row: &R,
    classify: fn(String, sqlx::Error) -> StoreError,
) -> Result<OperationSummary, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let first_seq: i64 = row
        .try_get("first_seq")
        .map_err(|e| classify("cannot read the operations index".into(), e))?;
    let bad = |column: &str| {
        StoreError::corrupt(format!(
            "the operations index row of first seq {first_seq} has a bad {column}"
        ))
    };
    let text = |column: &str| -> Result<Option<String>, StoreError> {
        row.try_get::<Option<String>, _>(column)
            .map_err(|e| classify(format!("cannot read operation_index.{column}"), e))
    };
    let required = |column: &str| text(column)?.ok_or_else(|| bad(column));
    let time = |column: &str| -> Result<DateTime<Utc>, StoreError> {
        let micros: i64 = row
            .try_get(column)
            .map_err(|e| classify(format!("cannot read operation_index.{column}"), e))?;
        DateTime::from_timestamp_micros(micros).ok_or_else(|| bad(column))
    };
    let number = |column: &str| -> Result<i64, StoreError> {
        row.try_get(column)
            .map_err(|e| classify(format!("cannot read operation_index.{column}"), e))
    };
    let status: Option<i64> = row
        .try_get("status")
        .map_err(|e| classify("cannot read operation_index.status".into(), e))?;
    let drift: i64 = row
        .try_get("drift")
        .map_err(|e| classify("cannot read operation_index.drift".into(), e))?;
    Ok(OperationSummary {
        operation_id: OperationId::from_str(&required("operation_id")?)
            .map_err(|_| bad("operation_id"))?,
        operation: Operation::from(required("operation")?.as_str()),
        partner: text("partner_tenant_id")?
            .map(|p| TenantId::parse(&p).map_err(|_| bad("partner_tenant_id")))
            .transpose()?,
        actor: ActorIds {
            oid: text("actor_oid")?,
            upn: text("actor_upn")?,
            appid: text("actor_appid")?,
        },
        decision: named(text("decision")?, Decision::parse, || bad("decision"))?,
        rule: text("rule")?,
        status: status
            .map(|s| u16::try_from(s).map_err(|_| bad("status")))
            .transpose()?,
        effect: named(text("effect")?, Effect::parse, || bad("effect"))?,
        drift: match drift {
            0 => false,
            1 => true,
            _ => return Err(bad("drift")),
        },
        approval_id: text("approval_id")?,
        display_name: text("display_name")?,
        first_time: time("first_time")?,
        last_time: time("last_time")?,
        terminal: named(text("terminal")?, EventKind::parse, || bad("terminal"))?,
        first_seq,
        last_seq: number("last_seq")?,
        events: number("events")?,
    })
}

/// The events of rows an append just inserted, with their seqs: the prepared events of new
/// ones, parsed from the stored text for a copied log.
pub(crate) fn appended_events<'a>(
    append: &Append<'a>,
    rows: &[StoredRow],
) -> Result<Vec<(i64, Cow<'a, Event>)>, StoreError> {
    match append {
        Append::Seal(prepared) | Append::Guarded(_, prepared) => Ok(rows
            .iter()
            .zip(prepared.iter())
            .map(|(row, p)| (row.seq, Cow::Borrowed(&p.event)))
            .collect()),
        Append::Copy(_) => rows
            .iter()
            .map(|row| parsed(row).map(|(seq, e)| (seq, Cow::Owned(e))))
            .collect(),
    }
}

/// A stored row's event, for folding; an event this code cannot read cannot be folded.
pub(crate) fn parsed(row: &StoredRow) -> Result<(i64, Event), StoreError> {
    serde_json::from_str(&row.event)
        .map(|event| (row.seq, event))
        .map_err(|e| StoreError::Rejected {
            context: format!(
                "event seq {} does not parse, so the operations index cannot fold it",
                row.seq
            ),
            source: Some(std::sync::Arc::new(e)),
        })
}

/// The functions that write the index on one backend's connection, inside the caller's
/// transaction: the same code on both, as a macro for the reason `reads.rs` gives. Expects
/// `classify(context, sqlx::Error) -> StoreError` in scope.
macro_rules! index_writes {
    ($db:ty, $conn:ty) => {
        /// Fold `events` (rows just inserted, in seq order) into the operations index.
        pub(crate) async fn update_index(
            conn: &mut $conn,
            events: &[(i64, &$crate::audit::Event)],
        ) -> Result<(), $crate::store::StoreError> {
            use $crate::store::operations::index;
            if events.is_empty() {
                return Ok(());
            }
            let mut ids: Vec<String> = events
                .iter()
                .map(|(_, e)| e.operation_id.uuid().hyphenated().to_string())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut existing = Vec::with_capacity(ids.len());
            for chunk in index::chunks(&ids) {
                let rows = index::select_by_id::<$db>(chunk)
                    .build()
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(|e| classify("cannot read the operations index", e))?;
                for row in &rows {
                    existing.push(index::summary_from_row(row, |c, e| classify(c, e))?);
                }
            }
            let update = index::plan(existing, events.iter().map(|(seq, e)| (*seq, *e)));
            let write = |e| classify("cannot update the operations index", e);
            for chunk in index::chunks(&update.summaries) {
                let mut q = index::upsert::<$db>(chunk);
                q.build().execute(&mut *conn).await.map_err(write)?;
            }
            for chunk in index::chunks(&update.actors) {
                let mut q = index::insert_actors::<$db>(chunk);
                q.build().execute(&mut *conn).await.map_err(write)?;
            }
            if let Some(through) = update.through {
                let mut q = index::set_through::<$db>(through);
                q.build().execute(&mut *conn).await.map_err(write)?;
            }
            Ok(())
        }

        /// Fold the next page of events the index does not hold yet (a log written before it
        /// existed); the seq it now holds through, `None` when it was already current. The
        /// caller holds the write lock and commits.
        pub(crate) async fn catch_up_index_page(
            conn: &mut $conn,
        ) -> Result<Option<i64>, $crate::store::StoreError> {
            use sqlx::Row;
            use $crate::store::operations::index;
            let state = sqlx::query(index::FRESHNESS)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the operations index's state", e))?;
            let read = |e| classify("cannot read the operations index's state", e);
            let through: i64 = state.try_get("through_seq").map_err(read)?;
            let head: i64 = state.try_get("head").map_err(read)?;
            if through >= head {
                return Ok(None);
            }
            let rows = $crate::store::queries::page::<$db>(through)
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| classify("cannot read the audit log", e))?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let row = $crate::store::queries::stored_row(row).map_err(|broken| {
                    $crate::store::StoreError::corrupt(format!(
                        "event seq {} cannot be read: {}",
                        broken.seq, broken.reason
                    ))
                })?;
                events.push(index::parsed(&row)?);
            }
            let borrowed: Vec<(i64, &$crate::audit::Event)> =
                events.iter().map(|(seq, e)| (*seq, e)).collect();
            update_index(conn, &borrowed).await?;
            Ok(Some(borrowed.last().map_or(through, |(seq, _)| *seq)))
        }

        /// Empty the operations index and fold the whole log into it again (`syncgate audit
        /// reindex`), in one transaction holding the write lock: readers see the old index or
        /// the new one, never a part, and no event is appended meanwhile (an append waits for
        /// the lock, and is refused when its wait runs out). The seq it then holds through.
        pub(crate) async fn rebuild_index(
            conn: &mut $conn,
        ) -> Result<i64, $crate::store::StoreError> {
            let mut tx = begin_locked_transaction(conn).await?;
            for statement in $crate::store::operations::index::CLEAR {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify("cannot empty the operations index", e))?;
            }
            let mut through = 0;
            while let Some(reached) = catch_up_index_page(&mut tx).await? {
                through = reached;
            }
            tx.commit()
                .await
                .map_err(|e| classify("cannot commit the rebuilt operations index", e))?;
            Ok(through)
        }

        /// Fold into the operations index whatever events it does not hold yet (a log
        /// written before it existed), a page per transaction holding the write lock
        /// (`begin_locked_transaction`), so other writers (another process, other replicas
        /// starting together) take turns and wait at most one page. The seq the index then
        /// holds through, when it had to move.
        async fn catch_up_index(
            conn: &mut $conn,
        ) -> Result<Option<i64>, $crate::store::StoreError> {
            let mut reached = None;
            loop {
                let mut tx = begin_locked_transaction(conn).await?;
                let Some(through) = catch_up_index_page(&mut tx).await? else {
                    tx.rollback()
                        .await
                        .map_err(|e| classify("cannot end a read of the operations index", e))?;
                    return Ok(reached);
                };
                tx.commit()
                    .await
                    .map_err(|e| classify("cannot commit to the operations index", e))?;
                reached = Some(through);
            }
        }
    };
}

pub(crate) use index_writes;

/// Say what catching up did: the index now holds the log through a seq, or could not be
/// built. Not fatal: the proxy must start and record whatever happened to a derived table;
/// the operations queries refuse an index that is behind, with this reason in the log.
pub(crate) fn catch_up_logged(result: Result<Option<i64>, StoreError>) {
    match result {
        Ok(None) => {}
        Ok(Some(through)) => {
            tracing::info!(
                through,
                "operations index: folded the events it did not hold"
            )
        }
        Err(error) => tracing::warn!(
            %error,
            "operations index: cannot fold the log's earlier events; the operations queries \
             refuse to answer until it can"
        ),
    }
}

/// A stored name parsed; a name this code does not know is a row it did not write.
fn named<T>(
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
    bad: impl FnOnce() -> StoreError,
) -> Result<Option<T>, StoreError> {
    value.map(|v| parse(&v).ok_or_else(bad)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, RuleOutcome};

    fn event(op: OperationId, kind: EventKind) -> Event {
        let mut e = Event::new(op, kind);
        e.actor = Actor {
            oid: Some("0A1B".into()),
            upn: Some("Ann@Contoso.com".into()),
            appid: Some("0a1b".into()),
            ..Actor::default()
        };
        e
    }

    #[test]
    fn a_plan_folds_each_operation_once_and_lists_new_actors_once() {
        let (a, b) = (OperationId::default(), OperationId::default());
        let received = event(a, EventKind::Received);
        let mut denied = event(a, EventKind::Denied);
        denied.decision = Some(Decision::Deny);
        denied.rule_results = vec![RuleOutcome {
            rule: "no-deletes".into(),
            kind: "k".into(),
            mode: "enforce".into(),
            action: "deny".into(),
            passed: false,
            message: None,
        }];
        let other = event(b, EventKind::Received);
        let update = plan(Vec::new(), [(7, &received), (8, &other), (9, &denied)]);
        assert_eq!(update.through, Some(9));
        assert_eq!(update.summaries.len(), 2);
        let first = &update.summaries[0];
        assert_eq!((first.first_seq, first.operation_id), (7, a));
        assert_eq!(first.decision, Some(Decision::Deny));
        assert_eq!(first.rule.as_deref(), Some("no-deletes"));
        assert_eq!(first.terminal, Some(EventKind::Denied));
        // The oid and the app id fold to the same key: listed once per operation.
        assert_eq!(
            update.actors,
            vec![
                ("0a1b".to_owned(), 7),
                ("ann@contoso.com".to_owned(), 7),
                ("0a1b".to_owned(), 8),
                ("ann@contoso.com".to_owned(), 8),
            ]
        );
        // An operation the index already holds is folded further, its actors not listed again.
        let again = plan(vec![first.clone()], [(10, &event(a, EventKind::Drift))]);
        assert!(again.actors.is_empty());
        assert!(again.summaries[0].drift);
        assert_eq!(again.summaries[0].first_seq, 7);
    }
}
