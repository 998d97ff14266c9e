//! The operations query's SQL, written once for both backends (see `queries.rs`).
//!
//! Two statements: [`page`] reads a page of summaries from the operations index (`index.rs`),
//! every filter exact; [`events_of`] fetches all events of a page's operations (exports).

use sqlx::{Database, Encode, QueryBuilder, Type};

pub(crate) use crate::store::queries::push_list;

use super::OperationFilter;
use super::index::{aliased_columns, ascii_folded};

/// The escape character of every `LIKE` pattern built here.
const LIKE_ESCAPE: char = '!';

/// An equality filter on an indexed column of the operations index.
enum Equal {
    Text(&'static str, String),
    Number(&'static str, i64),
}

/// The filter's equalities, most selective first, as logs usually are: 100 partners, a few
/// dozen rules, a handful of statuses and kinds, two decisions.
fn equalities(filter: &OperationFilter) -> Vec<Equal> {
    let text = |column, value: Option<&str>| value.map(|v| Equal::Text(column, v.to_owned()));
    [
        text("partner_tenant_id", filter.partner.as_deref()),
        text("rule", filter.rule.as_deref()),
        filter.status.map(|s| Equal::Number("status", i64::from(s))),
        text("operation", filter.operation.as_ref().map(|o| o.as_str())),
        text("effect", filter.effect.map(|e| e.as_str())),
        text("decision", filter.decision.map(|d| d.as_str())),
        filter.drift.map(|d| Equal::Number("drift", i64::from(d))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Up to `limit` summaries of operations whose first event has `seq < before` and that match
/// `filter`, newest first.
///
/// The first seq never changes once written, so paging by it is stable while events are
/// appended. Every filter is exact; which index the walk follows is chosen here rather than
/// left to the planner, which has no statistics on SQLite and, given two equalities, may walk
/// the two-valued `decision` index instead of the hundred-valued partner one (40 ms instead of
/// 3 at a million events):
/// - an actor filter leads: the walk follows `operation_actors` (one row per identifier and
///   operation) in seq order, so a rare actor costs only its own operations;
/// - otherwise the most selective equality leads ([`equalities`]), its index ordered like the
///   page, so the walk stops after `limit` matches;
/// - the other conditions are written so that no index serves them (`column || ''`,
///   `column + 0`: same value, not an indexed column any more), and are checked on each row the
///   walk reaches;
/// - a time range with an end (`until`) alone is answered in two steps: the page's seqs from
///   the covering `(first_time, first_seq)` index, sorted, then their rows (walking every
///   operation newer than the range instead took 160 ms for a month in the middle of a year);
///   a range open towards now (`since` alone) walks the newest operations, which meet it first.
pub(crate) fn page<'a, DB>(
    filter: &OperationFilter,
    before: i64,
    limit: i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let columns = aliased_columns();
    let mut q = QueryBuilder::new(format!("SELECT {columns} FROM operation_index o"));
    let mut equalities = equalities(filter).into_iter();
    let (key, lead) = match &filter.actor {
        Some(actor) => {
            q.push(" JOIN operation_actors a ON a.first_seq = o.first_seq AND a.actor = ")
                .push_bind(ascii_folded(actor));
            ("a.first_seq", None)
        }
        None => ("o.first_seq", equalities.next()),
    };
    // A range that ends (`until`) leads; one open towards now is met by the newest operations
    // first, so walking them is quicker than sorting every operation since `since`.
    let time_leads = filter.actor.is_none() && lead.is_none() && filter.until.is_some();
    if time_leads {
        // `first_seq + 0`: the primary key must not serve the inner query. Planners that
        // assume matches are spread evenly (PostgreSQL's) would otherwise walk it backwards
        // hoping for an early hit, while times grow with seqs, so a range in the past is met
        // only after every newer operation (650 ms for a month at a million events).
        q.push(
            " WHERE o.first_seq IN (SELECT t.first_seq FROM operation_index t \
             WHERE t.first_seq + 0 < ",
        )
        .push_bind(before);
        time_range(&mut q, filter, "t.first_time");
        text_search(&mut q, filter, "t");
        q.push(" ORDER BY t.first_seq + 0 DESC LIMIT ")
            .push_bind(limit)
            .push(") ORDER BY o.first_seq DESC");
        return q;
    }
    q.push(format!(" WHERE {key} < ")).push_bind(before);
    if let Some(lead) = lead {
        push_equal(&mut q, lead, true);
    }
    for other in equalities {
        push_equal(&mut q, other, false);
    }
    time_range(&mut q, filter, "o.first_time + 0");
    text_search(&mut q, filter, "o");
    q.push(format!(" ORDER BY {key} DESC LIMIT "))
        .push_bind(limit);
    q
}

/// `AND o.<column> = value`; unless `indexed`, the column is written as an expression no
/// index serves.
fn push_equal<'a, DB>(q: &mut QueryBuilder<'a, DB>, equal: Equal, indexed: bool)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    match equal {
        Equal::Text(column, value) => {
            let wrap = if indexed { "" } else { " || ''" };
            q.push(format!(" AND o.{column}{wrap} = ")).push_bind(value);
        }
        Equal::Number(column, value) => {
            let wrap = if indexed { "" } else { " + 0" };
            q.push(format!(" AND o.{column}{wrap} = ")).push_bind(value);
        }
    }
}

/// The time range's conditions on `column` (the first event's time in microseconds since the
/// epoch, or an expression of it). A bound finer than a microsecond is cut to one, as the
/// recorded times are.
fn time_range<'a, DB>(q: &mut QueryBuilder<'a, DB>, filter: &OperationFilter, column: &str)
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    if let Some(since) = &filter.since {
        q.push(format!(" AND {column} >= "))
            .push_bind(since.timestamp_micros());
    }
    if let Some(until) = &filter.until {
        q.push(format!(" AND {column} < "))
            .push_bind(until.timestamp_micros());
    }
}

/// The free-text search over display names, on the table aliased `alias`. Both sides are
/// ASCII-lower-cased; LIKE then compares the rest byte for byte on both backends (SQLite's
/// LIKE would also fold ASCII case, which changes nothing here).
fn text_search<'a, DB>(q: &mut QueryBuilder<'a, DB>, filter: &OperationFilter, alias: &str)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    if let Some(needle) = &filter.text {
        let pattern = format!("%{}%", like_escape(&ascii_folded(needle)));
        push_like(q, " AND ", &format!("{alias}.display_name_folded"), pattern);
    }
}

fn push_like<'a, DB>(q: &mut QueryBuilder<'a, DB>, prefix: &str, column: &str, pattern: String)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    q.push(prefix)
        .push(column)
        .push(" LIKE ")
        .push_bind(pattern)
        .push(format!(" ESCAPE '{LIKE_ESCAPE}'"));
}

/// `text` with `LIKE`'s wildcards and the escape character escaped, so it matches literally.
pub(super) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' || c == '_' || c == LIKE_ESCAPE {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out
}

/// Every event of the given operations, in `seq` order (columns as `recorded_from_row` reads,
/// and the operation id).
pub(crate) fn events_of<'a, DB>(operation_ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, prev_hash, hash, event, operation_id FROM audit_events \
         WHERE operation_id IN ",
    );
    push_list(&mut q, operation_ids);
    q.push(" ORDER BY seq");
    q
}

/// Every event with a seq in `low..=high`, in seq order (the columns of [`events_of`]).
pub(crate) fn events_between<'a, DB>(low: i64, high: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, prev_hash, hash, event, operation_id FROM audit_events WHERE seq >= ",
    );
    q.push_bind(low)
        .push(" AND seq <= ")
        .push_bind(high)
        .push(" ORDER BY seq");
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_their_text_literally() {
        assert_eq!(like_escape("50%_off!"), "50!%!_off!!");
        assert_eq!(like_escape("plain"), "plain");
    }
}
