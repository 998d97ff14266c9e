//! Verifying the operations index (`index.rs`) against the events it folds: what
//! `syncgate audit verify` does once the chain holds. The table is updated in place and carries
//! no hash, so anyone who can write the database could edit it, for example to hide a change
//! from the auditors' filters and exports; re-folding every operation from the verified events
//! and comparing catches that like an edit of the log itself.

use std::collections::{HashMap, HashSet};

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::OperationSummary;
use super::index::{COLUMNS, actor_keys};
use crate::audit::Recorded;
use crate::graph::OperationId;

/// Rows per page when verifying the index.
pub(crate) const VERIFY_PAGE: i64 = 500;

/// Index rows with `first_seq` above `after`, in order, a page at a time (verifying).
pub(crate) fn rows_after<'a, DB>(after: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM operation_index WHERE first_seq > "
    ));
    q.push_bind(after)
        .push(" ORDER BY first_seq LIMIT ")
        .push_bind(VERIFY_PAGE);
    q
}

/// `operation_actors` rows with `first_seq` in `[low, high]` (verifying a page of the index).
pub(crate) fn actors_between<'a, DB>(low: i64, high: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q =
        QueryBuilder::new("SELECT actor, first_seq FROM operation_actors WHERE first_seq >= ");
    q.push_bind(low).push(" AND first_seq <= ").push_bind(high);
    q
}

/// 1 when the index's migration (0004) has run on this log, else 0.
pub(crate) const HAS_INDEX: &str =
    "SELECT COUNT(*) AS migrated FROM _sqlx_migrations WHERE version = 4 AND success";

/// How many operations the log holds and how many actor rows the index has, in one snapshot.
pub(crate) const COUNTS: &str = "SELECT \
    (SELECT COUNT(DISTINCT operation_id) FROM audit_events) AS operations, \
    (SELECT COUNT(*) FROM operation_actors) AS actors";

/// Where the operations index first disagrees with the events it folds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexMismatch {
    /// The first seq of the operation whose row disagrees (0 when the disagreement is a count).
    pub(crate) first_seq: i64,
    pub(crate) operation_id: Option<String>,
    pub(crate) reason: String,
}

/// Checks the index page by page against a fold of each operation's events (see `verify`).
#[derive(Debug, Default)]
pub(crate) struct IndexCheck {
    after: i64,
    operations: i64,
    actors: i64,
}

impl IndexCheck {
    /// Where the next page starts.
    pub(crate) fn after(&self) -> i64 {
        self.after
    }

    /// The index must hold the log up to its head.
    pub(crate) fn freshness(through: i64, head: i64) -> Option<IndexMismatch> {
        (through != head).then(|| IndexMismatch {
            first_seq: 0,
            operation_id: None,
            reason: format!("the index holds the log through seq {through}, its head is {head}"),
        })
    }

    /// Check one page: each row against the fold of its operation's events (all of them, in
    /// seq order), and the page's actor rows against its rows' actors.
    pub(crate) fn page(
        &mut self,
        rows: &[OperationSummary],
        events: Vec<Recorded>,
        actors: Vec<(String, i64)>,
    ) -> Option<IndexMismatch> {
        let mut by_operation: HashMap<OperationId, Vec<Recorded>> = HashMap::new();
        for recorded in events {
            by_operation
                .entry(recorded.event.operation_id)
                .or_default()
                .push(recorded);
        }
        let mut expected_actors = Vec::new();
        for row in rows {
            let mismatch = |reason: String| IndexMismatch {
                first_seq: row.first_seq,
                operation_id: Some(row.operation_id.to_string()),
                reason,
            };
            let events = by_operation.remove(&row.operation_id).unwrap_or_default();
            let Some(folded) = super::fold(&events) else {
                return Some(mismatch("the log holds no event of this operation".into()));
            };
            if folded != *row {
                return Some(mismatch(format!(
                    "the row differs from its events in {}",
                    differing_fields(row, &folded)
                )));
            }
            expected_actors.extend(
                actor_keys(&row.actor)
                    .into_iter()
                    .map(|a| (a, row.first_seq)),
            );
            self.after = row.first_seq;
        }
        self.operations += rows.len() as i64;
        self.actors += actors.len() as i64;
        // The first (by seq) actor row that is missing or stray.
        let (actors, expected): (HashSet<_>, HashSet<_>) = (
            actors.into_iter().collect(),
            expected_actors.into_iter().collect(),
        );
        let first_stray = actors
            .symmetric_difference(&expected)
            .min_by_key(|(_, seq)| *seq);
        if let Some((actor, seq)) = first_stray {
            let what = if expected.contains(&(actor.clone(), *seq)) {
                "lacks"
            } else {
                "has a stray"
            };
            return Some(IndexMismatch {
                first_seq: *seq,
                operation_id: None,
                reason: format!("operation_actors {what} row for {actor:?} at first seq {seq}"),
            });
        }
        None
    }

    /// After the last page: every operation of the log has a row, and no actor row is stray.
    pub(crate) fn totals(&self, operations: i64, actors: i64) -> Option<IndexMismatch> {
        let count = |reason: String| IndexMismatch {
            first_seq: 0,
            operation_id: None,
            reason,
        };
        if operations != self.operations {
            return Some(count(format!(
                "the log holds {operations} operations, the index {}",
                self.operations
            )));
        }
        (actors != self.actors).then(|| {
            count(format!(
                "operation_actors holds {actors} rows, {} belong to the index's operations",
                self.actors
            ))
        })
    }
}

/// The names of the summary fields where `a` and `b` differ.
fn differing_fields(a: &OperationSummary, b: &OperationSummary) -> String {
    let (a, b) = (serde_json::to_value(a), serde_json::to_value(b));
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) else {
        return "its fields".into();
    };
    let names: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    names.join(", ")
}
