//! The PostgreSQL write connection, owned by the writer task (see `store/writer.rs`).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Postgres, Row};

use super::super::admin_reads::ReadRecord;

use super::super::chain::{Append, Head, Prepared, Sealed, StoredRow};
use super::super::operations::index;
use super::super::tree::{self, StoredCheckpoint};
use super::super::{StoreError, StoreOptions, queries};
use super::{CHAIN_LOCK, check_log_within, classify, connect, connect_options};
use crate::audit::merkle::Frontier;

/// One replica's write connection.
pub(crate) struct PgWriter {
    options: PgConnectOptions,
    url: String,
    timeout: Duration,
    /// `None` after a failure that may have left the connection mid-transaction or dead; the
    /// next group opens a fresh one (a new session: whatever the old one held is gone with it).
    conn: Option<PgConnection>,
    /// The Merkle tree's right edge as of this replica's last commit (`store/tree.rs`);
    /// reloaded under the chain lock whenever another replica appended since.
    tree: Option<Frontier>,
    /// `StoreOptions::keep_tree`.
    keep_tree: bool,
}

impl PgWriter {
    /// Connect and check that the database holds an audit log (migrations ran first).
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<PgWriter, StoreError> {
        let connect_options = connect_options(url, options)?;
        let mut conn = connect(&connect_options, options.statement_timeout, "writing").await?;
        check_log_within(&mut conn, url, options.statement_timeout.saturating_mul(2)).await?;
        index::catch_up_logged(catch_up_index(&mut conn).await);
        if options.keep_tree {
            tree::catch_up_logged(catch_up_tree(&mut conn).await);
        }
        Ok(PgWriter {
            options: connect_options,
            url: url.to_owned(),
            timeout: options.statement_timeout,
            conn: Some(conn),
            tree: None,
            keep_tree: options.keep_tree,
        })
    }

    /// See `rebuild_index` (`index_writes!`).
    pub(crate) async fn rebuild_index(&mut self) -> Result<i64, StoreError> {
        rebuild_index(self.connection().await?).await
    }

    /// See `rebuild_tree` (`tree_writes!`).
    pub(crate) async fn rebuild_tree(&mut self) -> Result<u64, StoreError> {
        rebuild_tree(self.connection().await?).await
    }

    /// The Merkle tree as of this replica's last commit (`None` before one, or while the
    /// stored tree is behind the log).
    pub(crate) fn tree(&self) -> Option<&Frontier> {
        self.tree.as_ref()
    }

    /// Store a signed checkpoint (kept if one of that size is there already), bounded like a
    /// group.
    pub(crate) async fn store_checkpoint(
        &mut self,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        let bound = self.timeout.saturating_mul(2);
        let conn = self.connection().await?;
        let answer = tokio::time::timeout(bound, insert_checkpoint(conn, checkpoint)).await;
        self.settle(answer, bound)
    }

    /// What a statement bounded at `bound` came to. One that never answered leaves the session
    /// in an unknown state, so it is dropped: the next use starts a new one.
    fn settle<T>(
        &mut self,
        answer: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
        bound: std::time::Duration,
    ) -> Result<T, StoreError> {
        answer.unwrap_or_else(|_| {
            self.conn = None;
            Err(StoreError::unavailable(format!(
                "PostgreSQL did not answer within {bound:?}"
            )))
        })
    }

    /// Record a witness delivery (its statements in autocommit, co-signature first), bounded
    /// like a group.
    pub(crate) async fn record_witness(
        &mut self,
        update: &super::super::witness::WitnessUpdate,
    ) -> Result<(), StoreError> {
        let statements = super::super::witness::record::<Postgres>(update);
        let bound = self.timeout.saturating_mul(2);
        let conn = self.connection().await?;
        let answer = tokio::time::timeout(bound, async move {
            for mut statement in statements {
                statement
                    .build()
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify("cannot record a witness delivery", e))?;
            }
            Ok(())
        })
        .await;
        self.settle(answer, bound)
    }

    /// Record a webhook delivery attempt, bounded like a group.
    pub(crate) async fn record_notice(
        &mut self,
        attempt: &super::super::approvals::NoticeAttempt,
    ) -> Result<(), StoreError> {
        let mut statement = super::super::approvals::notice_attempt::<Postgres>(
            &attempt.id,
            &attempt.at,
            attempt.outcome.clone(),
        );
        let bound = self.timeout.saturating_mul(2);
        let conn = self.connection().await?;
        let answer = tokio::time::timeout(bound, async move {
            statement
                .build()
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(|e| classify("cannot record a webhook delivery", e))
        })
        .await;
        self.settle(answer, bound)
    }

    /// The size of the largest checkpoint the log holds (0 for none).
    pub(crate) async fn last_checkpoint(&mut self) -> Result<u64, StoreError> {
        let bound = self.timeout.saturating_mul(2);
        let conn = self.connection().await?;
        let answer = tokio::time::timeout(bound, last_checkpoint_size(conn)).await;
        self.settle(answer, bound)
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        if self.conn.is_none() {
            let mut conn = connect(&self.options, self.timeout, "writing").await?;
            check_log_within(&mut conn, &self.url, self.timeout.saturating_mul(2)).await?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::unavailable("no write connection"))
    }

    /// Append `events` after the head in one transaction, holding the chain lock.
    pub(crate) async fn append_group(
        &mut self,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        let rows = self.append(Append::Seal(events)).await?;
        Ok(rows.into_iter().map(Sealed::from).collect())
    }

    /// Append `events` after `guard`'s changes to the approval gate's tables, in one
    /// transaction holding the chain lock: both or neither.
    pub(crate) async fn append_guarded(
        &mut self,
        guard: &super::super::approvals::Guard,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        let rows = self.append(Append::Guarded(guard, events)).await?;
        Ok(rows.into_iter().map(Sealed::from).collect())
    }

    /// Append rows exactly as given (a log copied from elsewhere), after checking that each
    /// continues the head: the copy is chained as the original was, or nothing is written.
    pub(crate) async fn append_rows(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        self.append(Append::Copy(rows)).await.map(drop)
    }

    /// Append in one transaction; all or nothing. After a failed COMMIT or ROLLBACK the
    /// connection's state is unknown (the server may be gone), so it is dropped: the next group
    /// starts a new session.
    ///
    /// The whole group is bounded on this side too, at twice the statement timeout (the chain
    /// lock alone may take one): `statement_timeout` is the server's, and cannot fire for a
    /// statement that never reached a server gone silent (a network partition, a primary that
    /// vanished). The session is then in an unknown state, so it is dropped; the server frees
    /// what it held by `idle_in_transaction_session_timeout` or when it sees the session end.
    async fn append(&mut self, append: Append<'_>) -> Result<Vec<StoredRow>, StoreError> {
        let bound = self.timeout.saturating_mul(2);
        let answer = tokio::time::timeout(bound, self.append_once(&append)).await;
        self.settle(answer, bound)
    }

    async fn append_once(&mut self, append: &Append<'_>) -> Result<Vec<StoredRow>, StoreError> {
        let fresh = self.conn.is_none();
        let cached = self.tree.take();
        let keep_tree = self.keep_tree;
        let conn = self.connection().await?;
        let mut outcome = transaction(conn, append, cached.as_ref(), keep_tree).await;
        // A connection the server closed while it sat idle (a restart, a failover, an idle
        // timeout) is only found out when it is used: BEGIN fails and nothing was written. That
        // one case is retried at once on a new session rather than failing the group.
        if !fresh && matches!(outcome, Outcome::BeginFailed) {
            self.conn = None;
            let conn = self.connection().await?;
            tracing::info!("audit store: the PostgreSQL session was lost; reconnecting");
            outcome = transaction(conn, append, cached.as_ref(), keep_tree).await;
        }
        match outcome {
            Outcome::Done(result) => result.map(|(rows, tree)| {
                self.tree = tree;
                rows
            }),
            Outcome::Unsure(error) => {
                self.conn = None;
                Err(error)
            }
            Outcome::BeginFailed => {
                self.conn = None;
                Err(StoreError::unavailable(
                    "cannot begin a transaction on the audit log",
                ))
            }
        }
    }

    /// Insert one admin read in its own statement, bounded like a group; the id it got.
    pub(crate) async fn record_read(&mut self, read: &ReadRecord) -> Result<i64, StoreError> {
        let mut insert = super::super::admin_reads::insert::<Postgres>(read);
        let bound = self.timeout.saturating_mul(2);
        let conn = self.connection().await?;
        let answer = tokio::time::timeout(bound, async move {
            insert
                .build_query_scalar()
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify("cannot record the admin read", e))
        })
        .await;
        self.settle(answer, bound)
    }

    pub(crate) async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close().await;
        }
    }
}

/// How a transaction ended.
enum Outcome {
    /// Committed, or rolled back cleanly after a failure: the connection is fine.
    Done(Result<(Vec<StoredRow>, Option<Frontier>), StoreError>),
    /// COMMIT or ROLLBACK failed: whether it happened is unknown, and so is the connection.
    Unsure(StoreError),
    /// BEGIN failed: nothing was sent that could have written anything.
    BeginFailed,
}

/// Lock the chain, read the head, insert what `append` puts after it, commit.
async fn transaction(
    conn: &mut PgConnection,
    append: &Append<'_>,
    tree: Option<&Frontier>,
    keep_tree: bool,
) -> Outcome {
    let Ok(mut tx) = conn.begin().await else {
        return Outcome::BeginFailed;
    };
    match insert_after_head(&mut tx, append, tree, keep_tree).await {
        Ok(done) => match tx.commit().await {
            Ok(()) => Outcome::Done(Ok(done)),
            Err(e) => Outcome::Unsure(classify("cannot commit to the audit log", e)),
        },
        Err(e) if tx.rollback().await.is_ok() => Outcome::Done(Err(e)),
        Err(e) => Outcome::Unsure(e),
    }
}

/// Insert what `append` puts after the head, fold it into the operations index and hash it
/// into the Merkle tree: the rows, and the tree's new edge (see `grow_tree`).
async fn insert_after_head(
    conn: &mut PgConnection,
    append: &Append<'_>,
    tree: Option<&Frontier>,
    keep_tree: bool,
) -> Result<(Vec<StoredRow>, Option<Frontier>), StoreError> {
    let head = lock_head(conn).await?;
    let head_seq = head.seq;
    if let Some(guard) = append.guard() {
        apply_guard(conn, guard).await?;
    }
    let rows = append.rows(head).map_err(StoreError::rejected)?;
    insert_rows(conn, &rows).await?;
    let events = index::appended_events(append, &rows)?;
    let events: Vec<_> = events.iter().map(|(seq, e)| (*seq, e.as_ref())).collect();
    update_index(conn, &events).await?;
    let tree = if keep_tree {
        grow_tree(conn, tree, head_seq, &rows).await?
    } else {
        None
    };
    Ok((rows, tree))
}

index::index_writes!(Postgres, PgConnection);
super::super::approvals::approval_writes!(Postgres, PgConnection);
tree::tree_writes!(Postgres, PgConnection);

/// A transaction holding the chain lock, for catching the index up.
async fn begin_locked_transaction(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| classify("cannot begin indexing the audit log", e))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(|e| classify("cannot lock the audit log's chain to index it", e))?;
    Ok(tx)
}

/// Take the chain lock for this transaction, then read the head: no other replica can append
/// until this transaction ends, and the head read after the lock sees everything committed
/// before it (each statement reads a fresh snapshot under READ COMMITTED).
async fn lock_head(conn: &mut PgConnection) -> Result<Head, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("cannot lock the audit log's chain for appending", e))?;
    let row = sqlx::query(queries::HEAD)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify("cannot read the chain head", e))?;
    let read = |e| classify("cannot read the chain head", e);
    Ok(match row {
        None => Head::empty(),
        Some(row) => Head {
            seq: row.try_get("seq").map_err(read)?,
            hash: row.try_get("hash").map_err(read)?,
        },
    })
}

/// Insert `rows` in one statement, whatever their number: one round trip per group rather than
/// one per event, with one statement text (so one prepared statement) for every group size. The
/// columns are those of `queries::insert`, passed as arrays and unnested into rows.
async fn insert_rows(conn: &mut PgConnection, rows: &[StoredRow]) -> Result<(), StoreError> {
    let text = |f: fn(&StoredRow) -> &String| rows.iter().map(f).cloned().collect::<Vec<_>>();
    let optional =
        |f: fn(&StoredRow) -> &Option<String>| rows.iter().map(f).cloned().collect::<Vec<_>>();
    sqlx::query(INSERT_ROWS)
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(text(|r| &r.columns.event_id))
        .bind(text(|r| &r.columns.operation_id))
        .bind(text(|r| &r.columns.kind))
        .bind(text(|r| &r.columns.time))
        .bind(optional(|r| &r.columns.partner_tenant_id))
        .bind(optional(|r| &r.columns.operation))
        .bind(optional(|r| &r.columns.actor_oid))
        .bind(optional(|r| &r.columns.actor_upn))
        .bind(optional(|r| &r.columns.actor_appid))
        .bind(optional(|r| &r.columns.decision))
        .bind(
            rows.iter()
                .map(|r| r.columns.upstream_status)
                .collect::<Vec<_>>(),
        )
        .bind(optional(|r| &r.columns.state_path))
        .bind(text(|r| &r.event))
        .bind(text(|r| &r.prev_hash))
        .bind(text(|r| &r.hash))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            let first = rows.first().map_or("", |r| r.columns.event_id.as_str());
            classify(
                format!("cannot insert {} events from {first}", rows.len()),
                e,
            )
        })?;
    Ok(())
}

const INSERT_ROWS: &str = "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, \
     partner_tenant_id, operation, actor_oid, actor_upn, actor_appid, decision, upstream_status, \
     state_path, event, prev_hash, hash) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], \
     $13::text[], $14::text[], $15::text[], $16::text[])";
