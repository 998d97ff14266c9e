//! Who read the log through the admin API: the `admin_reads` table (migration 0002).
//!
//! Why a table of its own and not events in the chain: a SIEM shipper long-polling
//! `/api/v1/events` would otherwise append an event describing each of its reads, then read that
//! event, forever; and the operations views would drown in reads. The table is append-only (the
//! same triggers as `audit_events`) but not hash-chained.
//!
//! Rows are written by the writer task (`writer.rs`), on the one write connection, through the
//! same bounded queue as events: recording a read never opens a second writer, and a caller that
//! fills the queue waits like any appender. A read that cannot be recorded is not served (the
//! admin API answers 503): nothing passes through unrecorded.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::StoreError;
use super::chain::time_column;

/// One answered request that read the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReadRecord {
    /// The order reads were recorded in; `0` until recorded.
    pub(crate) id: i64,
    pub(crate) time: DateTime<Utc>,
    /// The principal's configured name.
    pub(crate) principal: String,
    /// The principal's Entra object id, when configured.
    pub(crate) principal_oid: Option<String>,
    pub(crate) method: String,
    /// The path asked for (`/api/v1/events`).
    pub(crate) route: String,
    /// The query string as sent, if any.
    pub(crate) query: Option<String>,
    /// The status answered.
    pub(crate) status: u16,
    /// How many rows (events, operations, reads) the answer held.
    pub(crate) rows_returned: u64,
    /// The caller's address.
    pub(crate) remote_addr: String,
}

/// The only INSERT into `admin_reads`; the database assigns `id`.
pub(crate) fn insert<'a, DB>(read: &ReadRecord) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO admin_reads (time, principal, principal_oid, method, route, query, status, \
         rows_returned, remote_addr) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(time_column(&read.time))
        .push_bind(read.principal.clone())
        .push_bind(read.principal_oid.clone())
        .push_bind(read.method.clone())
        .push_bind(read.route.clone())
        .push_bind(read.query.clone())
        .push_bind(i64::from(read.status))
        .push_bind(i64::try_from(read.rows_returned).unwrap_or(i64::MAX))
        .push_bind(read.remote_addr.clone());
    values.push_unseparated(") RETURNING id");
    q
}

/// Up to `limit` reads with `id` above `after`, oldest first.
pub(crate) fn list<'a, DB>(after: i64, limit: u32) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT id, time, principal, principal_oid, method, route, query, status, \
         rows_returned, remote_addr FROM admin_reads WHERE id > ",
    );
    q.push_bind(after)
        .push(" ORDER BY id LIMIT ")
        .push_bind(i64::from(limit));
    q
}

/// A [`ReadRecord`] from a row of [`list`].
pub(crate) fn from_row<R>(
    row: &R,
    classify: fn(String, sqlx::Error) -> StoreError,
) -> Result<ReadRecord, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let read = |name: &str, e| classify(format!("cannot read admin_reads.{name}"), e);
    let text = |name: &str| row.try_get::<String, _>(name).map_err(|e| read(name, e));
    let number = |name: &str| row.try_get::<i64, _>(name).map_err(|e| read(name, e));
    let optional = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(|e| read(name, e))
    };
    let id = number("id")?;
    let time = text("time")?;
    let time = DateTime::parse_from_rfc3339(&time)
        .map_err(|_| StoreError::corrupt(format!("admin read {id} has a malformed time")))?
        .with_timezone(&Utc);
    Ok(ReadRecord {
        id,
        time,
        principal: text("principal")?,
        principal_oid: optional("principal_oid")?,
        method: text("method")?,
        route: text("route")?,
        query: optional("query")?,
        status: u16::try_from(number("status")?).unwrap_or(0),
        rows_returned: u64::try_from(number("rows_returned")?).unwrap_or(0),
        remote_addr: text("remote_addr")?,
    })
}
