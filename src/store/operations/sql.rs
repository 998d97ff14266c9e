//! The operations query's SQL, written once for both backends (see `queries.rs`).
//!
//! Two statements: [`page`] reads a page of summaries from the operations index (`index.rs`),
//! every filter exact; [`events_of`] fetches all events of a page's operations (exports).

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::OperationFilter;
use super::index::{aliased_columns, ascii_folded};
use crate::store::chain::time_column;

/// The escape character of every `LIKE` pattern built here.
const LIKE_ESCAPE: char = '!';

/// Up to `limit` summaries of operations whose first event has `seq < before` and that match
/// `filter`, newest first.
///
/// The first seq never changes once written, so paging by it is stable while events are
/// appended. With an actor filter the walk starts from `operation_actors` (one row per
/// identifier and operation), ordered by the same seq, so a rare actor does not cost a scan of
/// every operation; otherwise from the index table itself or the filter's own index.
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
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM operation_index o",
        aliased_columns()
    ));
    let key = match &filter.actor {
        Some(actor) => {
            q.push(" JOIN operation_actors a ON a.first_seq = o.first_seq AND a.actor = ")
                .push_bind(ascii_folded(actor));
            "a.first_seq"
        }
        None => "o.first_seq",
    };
    q.push(format!(" WHERE {key} < ")).push_bind(before);
    let text = |value: Option<&str>| value.map(str::to_owned);
    for (column, value) in [
        ("partner_tenant_id", filter.partner.clone()),
        (
            "operation",
            text(filter.operation.as_ref().map(|o| o.as_str())),
        ),
        ("decision", text(filter.decision.map(|d| d.as_str()))),
        ("rule", filter.rule.clone()),
        ("effect", text(filter.effect.map(|e| e.as_str()))),
    ] {
        if let Some(value) = value {
            q.push(format!(" AND o.{column} = ")).push_bind(value);
        }
    }
    if let Some(status) = filter.status {
        q.push(" AND o.status = ").push_bind(i64::from(status));
    }
    if let Some(drift) = filter.drift {
        q.push(" AND o.drift = ").push_bind(i64::from(drift));
    }
    if let Some(since) = &filter.since {
        q.push(" AND o.first_time >= ")
            .push_bind(time_column(since));
    }
    if let Some(until) = &filter.until {
        q.push(" AND o.first_time < ").push_bind(time_column(until));
    }
    if let Some(needle) = &filter.text {
        // Both sides ASCII-lower-cased; LIKE then compares the rest byte for byte on both
        // backends (SQLite's LIKE would also fold ASCII case, which changes nothing here).
        let pattern = format!("%{}%", like_escape(&ascii_folded(needle)));
        push_like(&mut q, " AND ", "o.display_name_folded", pattern);
    }
    q.push(format!(" ORDER BY {key} DESC LIMIT "))
        .push_bind(limit);
    q
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

/// Every event of the given operations, in `seq` order (columns as `recorded_from_row` reads).
pub(crate) fn events_of<'a, DB>(operation_ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT seq, prev_hash, hash, event FROM audit_events WHERE operation_id IN (",
    );
    let mut ids = q.separated(", ");
    for id in operation_ids {
        ids.push_bind(id.clone());
    }
    ids.push_unseparated(") ORDER BY seq");
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
