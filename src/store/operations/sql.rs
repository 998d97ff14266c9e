//! The operations query's SQL, written once for both backends (see `queries.rs`).
//!
//! Two statements: [`candidates`] picks a batch of operations by their first event, newest
//! first, narrowed by every filter SQL can apply; [`events_of`] fetches all events of that batch.
//! Every condition here is *necessary* for a match, never sufficient where the field is not a
//! column: the folded summary is checked again in Rust (`OperationFilter::matches`), so a loose
//! prefilter costs time, never a wrong row.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::OperationFilter;
use crate::store::queries::{Who, who_and_when};

/// The escape character of every `LIKE` pattern built here (not `\`, which JSON text is full of).
const LIKE_ESCAPE: char = '!';

/// `seq, operation_id` of up to `limit` operations whose first event has `seq < before`, newest
/// first, that may match `filter`.
///
/// An operation's first event is the one with no earlier event of the same operation (an index
/// probe on `(operation_id, seq)`); its seq never changes once written, so paging by it is stable
/// while events are appended. The request's attributes (partner, actor, operation kind, time)
/// are those of the first event: every event of an operation is built from the same request.
pub(crate) fn candidates<'a, DB>(
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
    let mut q =
        QueryBuilder::new("SELECT e.seq, e.operation_id FROM audit_events e WHERE e.seq < ");
    q.push_bind(before).push(
        " AND NOT EXISTS (SELECT 1 FROM audit_events p \
         WHERE p.operation_id = e.operation_id AND p.seq < e.seq)",
    );
    first_event_conditions(&mut q, filter);
    folded_conditions(&mut q, filter);
    q.push(" ORDER BY e.seq DESC LIMIT ").push_bind(limit);
    q
}

/// Exact conditions on the first event's own columns.
fn first_event_conditions<'a, DB>(q: &mut QueryBuilder<'a, DB>, filter: &OperationFilter)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
{
    who_and_when(
        q,
        "e.",
        Who {
            partner: filter.partner.as_ref(),
            actor: filter.actor.as_ref(),
            since: filter.since.as_ref(),
            until: filter.until.as_ref(),
        },
    );
    if let Some(operation) = &filter.operation {
        q.push(" AND e.operation = ")
            .push_bind(operation.as_str().to_owned());
    }
}

/// Conditions on the operation's other events: exact for drift, necessary for the rest.
fn folded_conditions<'a, DB>(q: &mut QueryBuilder<'a, DB>, filter: &OperationFilter)
where
    DB: Database,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    const SOME_EVENT: &str = " AND EXISTS (SELECT 1 FROM audit_events x \
                              WHERE x.operation_id = e.operation_id AND ";
    // `x.kind || ''` rather than `x.kind`: the subquery must find the operation's few events by
    // the `(operation_id, seq)` index. Given a bare `kind = ...` SQLite's planner may pick the
    // `(kind, seq)` index instead and walk every drift event of the log for every candidate
    // (quadratic: a `drift=true` page of a 200,000-event log ran for over 20 minutes; 0.13 s
    // this way). The concatenation keeps the meaning and rules the kind index out on both
    // backends.
    match filter.drift {
        Some(true) => {
            q.push(SOME_EVENT).push("x.kind || '' = 'drift')");
        }
        Some(false) => {
            q.push(
                " AND NOT EXISTS (SELECT 1 FROM audit_events x \
                 WHERE x.operation_id = e.operation_id AND x.kind || '' = 'drift')",
            );
        }
        None => {}
    }
    if let Some(decision) = filter.decision {
        q.push(SOME_EVENT)
            .push("x.decision = ")
            .push_bind(decision.as_str().to_owned())
            .push(")");
    }
    if let Some(status) = filter.status {
        q.push(SOME_EVENT)
            .push("x.kind || '' IN ('completed', 'denied', 'recovered') AND x.upstream_status = ")
            .push_bind(i64::from(status))
            .push(")");
    }
    // The event column is canonical JSON (no whitespace, keys as serde_json writes them), so a
    // field's value appears in it as `"key":<JSON string>`.
    if let Some(effect) = filter.effect {
        let pattern = json_member_pattern("effect", effect.as_str());
        push_like(q, SOME_EVENT, "x.event", pattern);
    }
    if let Some(rule) = &filter.rule {
        let pattern = json_member_pattern("rule", rule);
        push_like(q, SOME_EVENT, "x.event", pattern);
    }
    if let Some(needle) = filter.text.as_deref().and_then(text_pattern) {
        push_like(q, SOME_EVENT, "lower(x.event)", needle);
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
        .push(format!(" ESCAPE '{LIKE_ESCAPE}')"));
}

/// `%"key":"value"%`, with `value` JSON-escaped and then `LIKE`-escaped.
fn json_member_pattern(key: &str, value: &str) -> String {
    let member = format!("\"{key}\":{}", serde_json::Value::from(value));
    format!("%{}%", like_escape(&member))
}

/// A pattern for the display-name search on the lower-cased event text, or `None` when SQL
/// cannot narrow it safely: only printable ASCII without `"` or `\` is written into JSON
/// unchanged and lower-cased the same way by both databases. Rust still checks every match.
fn text_pattern(needle: &str) -> Option<String> {
    let plain = needle
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    (plain && !needle.is_empty())
        .then(|| format!("%{}%", like_escape(&needle.to_ascii_lowercase())))
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
        assert_eq!(
            json_member_pattern("rule", "a\"b%"),
            "%\"rule\":\"a\\\"b!%\"%"
        );
        assert_eq!(text_pattern("Fab_Rikam"), Some("%fab!_rikam%".into()));
        assert_eq!(text_pattern("Müller"), None);
        assert_eq!(text_pattern("say \"hi\""), None);
        assert_eq!(text_pattern(""), None);
    }
}
