//! The approval gate's tables (migration 0008), written once for both backends: the statements
//! a guarded append runs before its events, and the queries the gate, the admin API, the
//! sweeper and the webhooks' delivery read.
//!
//! A change to a request is decided on a version of it read beforehand, and written only if the
//! row still has that version ([`Change`]): two votes, a vote and the sweeper, or two replicas
//! racing one another cannot both act on the same state. The statements run in the transaction
//! that appends the events recording the change, after the chain lock, so the table and the
//! log never disagree: both are written or neither.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, QueryBuilder, Row, Type};

use super::chain::time_column;
use super::{ReadBackend, StoreError};
use crate::approvals::{Approval, Ballot, Binding, Policy, Requester, Status, Vote};

/// A change to the gate's tables, made only if the request is still as it was read.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A new request, unless its requester has `max_pending` pending already.
    Insert {
        approval: Box<Approval>,
        max_pending: i64,
    },
    /// A vote on request `id` at `version`, moving it to `decided` when the vote decides.
    Vote {
        id: String,
        version: i64,
        vote: Vote,
        decided: Option<Decided>,
    },
    /// Request `id` at `version` with status `from` moves to `decided`.
    Status {
        id: String,
        version: i64,
        from: Status,
        decided: Decided,
    },
}

/// A request's new status and what comes with it.
#[derive(Debug, Clone)]
pub(crate) struct Decided {
    pub(crate) status: Status,
    pub(crate) at: DateTime<Utc>,
    /// Set when approved.
    pub(crate) send_deadline: Option<DateTime<Utc>>,
    /// Set when used: the operation that sent the change.
    pub(crate) used_by: Option<String>,
}

/// A notification to put in the outbox with the change.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) id: String,
    pub(crate) approval_id: String,
    pub(crate) webhook: String,
    pub(crate) body: String,
    pub(crate) created: DateTime<Utc>,
}

/// What a guarded append writes before its events.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    pub(crate) change: Change,
    pub(crate) notices: Vec<Notice>,
}

/// One statement of a guard and what it must do: `Some(why)` when it must change exactly one
/// row, the conflict's message otherwise.
pub(crate) struct Step<'a, DB: Database> {
    pub(crate) query: QueryBuilder<'a, DB>,
    pub(crate) conflict: Option<String>,
}

impl Guard {
    /// The statements, in order.
    pub(crate) fn steps<'a, DB>(&self) -> Vec<Step<'a, DB>>
    where
        DB: Database,
        DB::Arguments<'a>: Default,
        i64: Encode<'a, DB> + Type<DB>,
        String: Encode<'a, DB> + Type<DB>,
        Option<String>: Encode<'a, DB> + Type<DB>,
    {
        let mut steps = Vec::new();
        match &self.change {
            Change::Insert {
                approval,
                max_pending,
            } => steps.push(Step {
                query: insert(approval, *max_pending),
                conflict: Some(format!(
                    "{} has {max_pending} approval requests pending already",
                    approval.binding.requester.key
                )),
            }),
            Change::Vote {
                id,
                version,
                vote,
                decided,
            } => {
                let mut q = QueryBuilder::new(
                    "INSERT INTO approval_votes (approval_id, principal, oid, groups, ballot, \
                     comment, time) VALUES (",
                );
                let mut values = q.separated(", ");
                values
                    .push_bind(id.clone())
                    .push_bind(vote.principal.clone())
                    .push_bind(vote.oid.clone())
                    .push_bind(serde_json::to_string(&vote.groups).unwrap_or_default())
                    .push_bind(vote.ballot.as_str().to_owned())
                    .push_bind(vote.comment.clone())
                    .push_bind(time_column(&vote.time));
                values.push_unseparated(") ON CONFLICT DO NOTHING");
                steps.push(Step {
                    query: q,
                    conflict: Some(format!(
                        "{} has already voted on approval {id}",
                        vote.principal
                    )),
                });
                steps.push(Step {
                    query: update(id, *version, Status::Pending, decided.as_ref()),
                    conflict: Some(format!("approval {id} changed while the vote was cast")),
                });
            }
            Change::Status {
                id,
                version,
                from,
                decided,
            } => steps.push(Step {
                query: update(id, *version, *from, Some(decided)),
                conflict: Some(format!("approval {id} changed in the meantime")),
            }),
        }
        for notice in &self.notices {
            let mut q = QueryBuilder::new(
                "INSERT INTO approval_outbox (id, created, approval_id, webhook, body, attempts, \
                 next_attempt, delivered, last_error) VALUES (",
            );
            let created = time_column(&notice.created);
            let mut values = q.separated(", ");
            values
                .push_bind(notice.id.clone())
                .push_bind(created.clone())
                .push_bind(notice.approval_id.clone())
                .push_bind(notice.webhook.clone())
                .push_bind(notice.body.clone())
                .push_bind(0i64)
                .push_bind(created)
                .push_bind(None::<String>)
                .push_bind(None::<String>);
            values.push_unseparated(")");
            steps.push(Step {
                query: q,
                conflict: None,
            });
        }
        steps
    }
}

/// Insert `a` if its requester has fewer than `max_pending` requests pending: checked in the
/// statement, under the chain lock every guarded append holds, so concurrent requests cannot
/// both slip under the cap.
fn insert<'a, DB>(a: &Approval, max_pending: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
{
    let b = &a.binding;
    let mut q = QueryBuilder::new(format!("INSERT INTO approvals ({COLUMNS}) SELECT "));
    let mut values = q.separated(", ");
    values
        .push_bind(a.id.clone())
        .push_bind(a.operation_id.clone())
        .push_bind(time_column(&a.created))
        .push_bind(a.status.as_str().to_owned())
        .push_bind(a.version)
        .push_bind(serde_json::to_string(&a.policy).unwrap_or_default())
        .push_bind(a.rule.clone())
        .push_bind(b.method.clone())
        .push_bind(b.canonical_path.clone())
        .push_bind(b.partner.clone())
        .push_bind(b.requester.key.clone())
        .push_bind(serde_json::to_string(&b.requester).unwrap_or_default())
        .push_bind(b.body_hash.clone())
        .push_bind(b.before_hash.clone())
        .push_bind(a.justification.clone())
        .push_bind(a.ticket.clone())
        .push_bind(time_column(&a.vote_deadline))
        .push_bind(a.send_deadline.as_ref().map(time_column))
        .push_bind(a.decided.as_ref().map(time_column))
        .push_bind(a.used_by.clone())
        .push_bind(a.change.to_string());
    q.push(" WHERE (SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND requester = ")
        .push_bind(b.requester.key.clone())
        .push(") < ")
        .push_bind(max_pending);
    q
}

/// Bump request `id` from `version` (when its status is `from`), setting `decided` if given.
fn update<'a, DB>(
    id: &str,
    version: i64,
    from: Status,
    decided: Option<&Decided>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE approvals SET version = version + 1");
    if let Some(d) = decided {
        q.push(", status = ")
            .push_bind(d.status.as_str().to_owned())
            .push(", decided = ")
            .push_bind(time_column(&d.at));
        if let Some(deadline) = &d.send_deadline {
            q.push(", send_deadline = ")
                .push_bind(time_column(deadline));
        }
        if let Some(used_by) = &d.used_by {
            q.push(", used_by = ").push_bind(used_by.clone());
        }
    }
    q.push(" WHERE id = ")
        .push_bind(id.to_owned())
        .push(" AND version = ")
        .push_bind(version)
        .push(" AND status = ")
        .push_bind(from.as_str().to_owned());
    q
}

/// The columns of `approvals`, in the order [`insert`] writes them.
const COLUMNS: &str = "id, operation_id, created, status, version, policy, rule, method, \
    canonical_path, partner_tenant_id, requester, requester_doc, body_hash, before_hash, \
    justification, ticket, vote_deadline, send_deadline, decided, used_by, change";

/// Request `id`.
pub(crate) fn by_id<'a, DB>(id: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM approvals WHERE id = "));
    q.push_bind(id.to_owned());
    q
}

/// The latest request of `binding`'s requester for the same change (method, path, body),
/// whatever its before-state.
pub(crate) fn latest_for<'a, DB>(binding: &Binding) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM approvals WHERE requester = "
    ));
    q.push_bind(binding.requester.key.clone())
        .push(" AND canonical_path = ")
        .push_bind(binding.canonical_path.clone())
        .push(" AND method = ")
        .push_bind(binding.method.clone())
        .push(" AND body_hash = ")
        .push_bind(binding.body_hash.clone())
        .push(" ORDER BY created DESC, id DESC LIMIT 1");
    q
}

/// The latest approved request for `method` on `canonical_path`, by anyone.
pub(crate) fn latest_approved<'a, DB>(method: &str, canonical_path: &str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM approvals WHERE status = 'approved' AND canonical_path = "
    ));
    q.push_bind(canonical_path.to_owned())
        .push(" AND method = ")
        .push_bind(method.to_owned())
        .push(" ORDER BY created DESC, id DESC LIMIT 1");
    q
}

/// Requests newest first, `status` when given, older than `before` (an id) when given.
pub(crate) fn list<'a, DB>(
    status: Option<Status>,
    before: Option<&str>,
    limit: i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM approvals WHERE 1 = 1"));
    if let Some(status) = status {
        q.push(" AND status = ")
            .push_bind(status.as_str().to_owned());
    }
    if let Some(before) = before {
        q.push(" AND id < ").push_bind(before.to_owned());
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q
}

/// Requests whose window closed at `now`: pending past the vote deadline, approved past the
/// send deadline; at most `limit`, oldest first.
pub(crate) fn overdue<'a, DB>(now: &DateTime<Utc>, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
{
    let now = time_column(now);
    let mut q = QueryBuilder::new(format!(
        "SELECT {COLUMNS} FROM approvals WHERE (status = 'pending' AND vote_deadline <= "
    ));
    q.push_bind(now.clone())
        .push(") OR (status = 'approved' AND send_deadline <= ")
        .push_bind(now)
        .push(") ORDER BY created LIMIT ")
        .push_bind(limit);
    q
}

/// The votes on the requests `ids`.
pub(crate) fn votes_of<'a, DB>(ids: &[String]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT approval_id, principal, oid, groups, ballot, comment, time FROM approval_votes \
         WHERE approval_id IN ",
    );
    super::queries::push_list(&mut q, ids);
    q.push(" ORDER BY time, principal");
    q
}

/// How many requests are pending (for `/metrics`).
pub(crate) const COUNT_PENDING: &str =
    "SELECT COUNT(*) AS n FROM approvals WHERE status = 'pending'";

/// The head of each webhook's queue (its oldest undelivered notice) when it is due at `now`:
/// a webhook gets its notices in the order they were written, a later one never overtaking one
/// that is waiting out a failure.
pub(crate) fn due_notices<'a, DB>(now: &DateTime<Utc>, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT o.id, o.approval_id, o.webhook, o.body, o.attempts, o.next_attempt \
         FROM approval_outbox o WHERE o.id IN (SELECT MIN(id) FROM approval_outbox \
         WHERE delivered IS NULL GROUP BY webhook) AND o.next_attempt <= ",
    );
    q.push_bind(time_column(now))
        .push(" ORDER BY o.id LIMIT ")
        .push_bind(limit);
    q
}

/// The earliest next attempt of an undelivered notice, and how many wait (for `/metrics`).
pub(crate) const OUTBOX_STATE: &str = "SELECT COUNT(*) AS n, MIN(next_attempt) AS next \
    FROM approval_outbox WHERE delivered IS NULL";

/// Record a delivery attempt of notice `id`: delivered at `at`, or failed with `error` and due
/// again at `next`.
pub(crate) fn notice_attempt<'a, DB>(
    id: &str,
    at: &DateTime<Utc>,
    outcome: Result<(), (String, DateTime<Utc>)>,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new("UPDATE approval_outbox SET attempts = attempts + 1, ");
    match outcome {
        Ok(()) => {
            q.push("delivered = ")
                .push_bind(time_column(at))
                .push(", last_error = ")
                .push_bind(None::<String>);
        }
        Err((error, next)) => {
            q.push("last_error = ")
                .push_bind(error)
                .push(", next_attempt = ")
                .push_bind(time_column(&next));
        }
    }
    q.push(" WHERE id = ").push_bind(id.to_owned());
    q
}

/// A delivery attempt of notice `id` to record.
#[derive(Debug, Clone)]
pub(crate) struct NoticeAttempt {
    pub(crate) id: String,
    pub(crate) at: DateTime<Utc>,
    /// `Err((error, next attempt))` when it failed.
    pub(crate) outcome: Result<(), (String, DateTime<Utc>)>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredNotice {
    pub(crate) id: String,
    pub(crate) approval_id: String,
    pub(crate) webhook: String,
    pub(crate) body: String,
    pub(crate) attempts: i64,
}

fn parse_time(text: &str, column: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::corrupt(format!("{column} {text:?}: {e}")))
}

/// How a backend names a database error.
type Classify = fn(String, sqlx::Error) -> StoreError;

/// Column `name` of `row` (from `table`), decoded as `T`.
fn column<R, T>(row: &R, table: &str, name: &str, classify: Classify) -> Result<T, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name)
        .map_err(|e| classify(format!("cannot read {table}.{name}"), e))
}

/// A JSON column of `table` parsed as `T`.
fn json_column<T: serde::de::DeserializeOwned>(
    text: &str,
    table: &str,
    name: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(format!("{table}.{name} does not parse: {e}")))
}

/// A request from a row of [`COLUMNS`] (its votes are added by the caller).
pub(crate) fn approval_from_row<R>(row: &R, classify: Classify) -> Result<Approval, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |name: &str| column::<R, String>(row, "approvals", name, classify);
    let optional = |name: &str| column::<R, Option<String>>(row, "approvals", name, classify);
    let status_text = text("status")?;
    let status = Status::parse(&status_text)
        .ok_or_else(|| StoreError::corrupt(format!("approvals.status {status_text:?}")))?;
    let time = |name: &str| parse_time(&text(name)?, &format!("approvals.{name}"));
    let optional_time = |name: &str| {
        optional(name)?
            .map(|t| parse_time(&t, &format!("approvals.{name}")))
            .transpose()
    };
    Ok(Approval {
        id: text("id")?,
        operation_id: text("operation_id")?,
        created: time("created")?,
        status,
        version: column(row, "approvals", "version", classify)?,
        policy: json_column::<Policy>(&text("policy")?, "approvals", "policy")?,
        rule: text("rule")?,
        binding: Binding {
            method: text("method")?,
            canonical_path: text("canonical_path")?,
            partner: optional("partner_tenant_id")?,
            body_hash: text("body_hash")?,
            before_hash: text("before_hash")?,
            requester: json_column::<Requester>(
                &text("requester_doc")?,
                "approvals",
                "requester_doc",
            )?,
        },
        justification: optional("justification")?,
        ticket: optional("ticket")?,
        vote_deadline: time("vote_deadline")?,
        send_deadline: optional_time("send_deadline")?,
        decided: optional_time("decided")?,
        used_by: optional("used_by")?,
        change: json_column(&text("change")?, "approvals", "change")?,
        votes: Vec::new(),
    })
}

/// A vote, and the request it is on, from a row of [`votes_of`].
pub(crate) fn vote_from_row<R>(row: &R, classify: Classify) -> Result<(String, Vote), StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |name: &str| column::<R, String>(row, "approval_votes", name, classify);
    let ballot_text = text("ballot")?;
    let ballot = Ballot::parse(&ballot_text)
        .ok_or_else(|| StoreError::corrupt(format!("approval_votes.ballot {ballot_text:?}")))?;
    Ok((
        text("approval_id")?,
        Vote {
            principal: text("principal")?,
            oid: text("oid")?,
            groups: json_column(&text("groups")?, "approval_votes", "groups")?,
            ballot,
            comment: column(row, "approval_votes", "comment", classify)?,
            time: parse_time(&text("time")?, "approval_votes.time")?,
        },
    ))
}

/// An outbox row from a row of [`due_notices`].
pub(crate) fn notice_from_row<R>(row: &R, classify: Classify) -> Result<StoredNotice, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |name: &str| column::<R, String>(row, "approval_outbox", name, classify);
    Ok(StoredNotice {
        id: text("id")?,
        approval_id: text("approval_id")?,
        webhook: text("webhook")?,
        body: text("body")?,
        attempts: column(row, "approval_outbox", "attempts", classify)?,
    })
}

/// `apply_guard(conn, guard)` for a backend: run a guard's steps, failing with
/// [`StoreError::Conflict`] at the first that does not change exactly the one row it must.
/// The caller's transaction rolls back on any error.
macro_rules! approval_writes {
    ($db:ty, $conn:ty) => {
        pub(crate) async fn apply_guard(
            conn: &mut $conn,
            guard: &$crate::store::approvals::Guard,
        ) -> Result<(), $crate::store::StoreError> {
            for mut step in guard.steps::<$db>() {
                let done = step
                    .query
                    .build()
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify("cannot record an approval", e))?;
                if let Some(conflict) = step.conflict {
                    if done.rows_affected() != 1 {
                        return Err($crate::store::StoreError::Conflict { context: conflict });
                    }
                }
            }
            Ok(())
        }
    };
}
pub(crate) use approval_writes;

impl super::StoreReader {
    /// Request `id` with its votes.
    pub(crate) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        Ok(on_backend!(self, r => r.approvals_where(by_id(id)).await)?
            .into_iter()
            .next())
    }

    /// The latest request for the same change as `binding` by the same requester.
    pub(crate) async fn latest_approval_for(
        &self,
        binding: &Binding,
    ) -> Result<Option<Approval>, StoreError> {
        Ok(
            on_backend!(self, r => r.approvals_where(latest_for(binding)).await)?
                .into_iter()
                .next(),
        )
    }

    /// The latest approved request for `method` on `canonical_path`, by anyone.
    pub(crate) async fn latest_approved(
        &self,
        method: &str,
        canonical_path: &str,
    ) -> Result<Option<Approval>, StoreError> {
        Ok(
            on_backend!(self, r => r.approvals_where(latest_approved(method, canonical_path)).await)?
                .into_iter()
                .next(),
        )
    }

    /// Requests newest first.
    pub(crate) async fn approvals(
        &self,
        status: Option<Status>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        on_backend!(self, r => r.approvals_where(list(status, before, limit)).await)
    }

    /// Requests whose window closed at `now`.
    pub(crate) async fn overdue_approvals(
        &self,
        now: &DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        on_backend!(self, r => r.approvals_where(overdue(now, limit)).await)
    }

    /// Webhook notices due at `now`, oldest first.
    pub(crate) async fn notices_due(
        &self,
        now: &DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<StoredNotice>, StoreError> {
        on_backend!(self, r => r.due_notices(now, limit).await)
    }

    /// Requests pending; notices waiting, and the earliest next attempt among them.
    pub(crate) async fn approval_gauges(&self) -> Result<(i64, i64, Option<String>), StoreError> {
        on_backend!(self, r => r.approval_gauges().await)
    }
}
