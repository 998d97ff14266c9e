//! The SQLite backend's read side: read-only connections for queries and verification, which
//! never wait on the writer and never create or change the file (see the parent module).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::super::chain::{self, Columns, StoredRow, Verifier};
use super::super::{Filter, StoreError, StoreOptions, VerifyReport, recorded};
use super::{
    SQLITE_CANTOPEN, SQLITE_READONLY, VERIFY_PAGE, check_chain_format, classify, primary_code,
    read_options, sidecar,
};
use crate::audit::{Recorded, Snapshot};

/// Read-only connections for queries.
#[derive(Clone)]
pub(crate) struct SqliteReader {
    pool: SqlitePool,
}

fn pool_options(options: &StoreOptions) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .min_connections(0)
        .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)) * 2)
}

impl SqliteReader {
    /// Readers beside a writer that has just created and migrated the file.
    pub(crate) async fn open_for_writer(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteReader, StoreError> {
        let pool = pool_options(options)
            .connect_with(read_options(path, options))
            .await
            .map_err(|e| classify(format!("cannot open {} for reading", path.display()), e))?;
        Ok(SqliteReader { pool })
    }

    /// Readers on an existing file, without creating or writing anything.
    pub(crate) async fn open_existing(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteReader, StoreError> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(StoreError::NotFound {
                    path: path.to_owned(),
                });
            }
            Err(e) => {
                return Err(StoreError::Unavailable {
                    context: format!("cannot access {}", path.display()),
                    source: Some(Arc::new(e)),
                });
            }
        }
        let read_only = read_options(path, options);
        let pool = match pool_options(options).connect_with(read_only.clone()).await {
            Ok(pool) => pool,
            // A WAL database opened read-only needs its `-shm` file, which SQLite creates beside
            // it: impossible in a folder we may not write. With no `-wal` file there is nothing
            // uncommitted to miss, so reading the file as immutable is exact.
            Err(e)
                if matches!(primary_code(&e), Some(SQLITE_CANTOPEN | SQLITE_READONLY))
                    && !sidecar(path, "-wal").exists() =>
            {
                pool_options(options)
                    .connect_with(read_only.immutable(true))
                    .await
                    .map_err(|e| classify(format!("cannot open {}", path.display()), e))?
            }
            Err(e) => return Err(classify(format!("cannot open {}", path.display()), e)),
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| classify(format!("cannot open {}", path.display()), e))?;
        check_chain_format(&mut conn, path).await?;
        drop(conn);
        Ok(SqliteReader { pool })
    }

    /// Close every read connection; when this returns, none is open.
    pub(crate) async fn close(&self) {
        // sqlx's `close` can return while a connection that was just being given back sits in
        // the idle queue, still open (it is queued before its permit is released, and `close`
        // stops once it holds every permit). That connection would keep the `-wal` and `-shm`
        // files alive after the writer closes; closing again closes it (no connection can be
        // checked out of a closed pool, so the second pass finds them all).
        for _ in 0..3 {
            self.pool.close().await;
            if self.pool.size() == 0 {
                break;
            }
        }
    }

    async fn fetch_recorded(
        &self,
        mut query: QueryBuilder<'_, Sqlite>,
        context: &str,
    ) -> Result<Vec<Recorded>, StoreError> {
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify(context.to_owned(), e))?;
        rows.iter().map(recorded_from_row).collect()
    }

    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Recorded>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT seq, prev_hash, hash, event FROM audit_events WHERE 1 = 1",
        );
        if let Some(partner) = &filter.partner {
            q.push(" AND partner_tenant_id = ")
                .push_bind(partner.clone());
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND (lower(actor_oid) = lower(")
                .push_bind(actor.clone())
                .push(") OR lower(actor_upn) = lower(")
                .push_bind(actor.clone())
                .push(") OR lower(actor_appid) = lower(")
                .push_bind(actor.clone())
                .push("))");
        }
        if let Some(since) = &filter.since {
            q.push(" AND time >= ").push_bind(chain::time_column(since));
        }
        if let Some(until) = &filter.until {
            q.push(" AND time < ").push_bind(chain::time_column(until));
        }
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(decision) = filter.decision {
            q.push(" AND decision = ").push_bind(decision.as_str());
        }
        if let Some(operation_id) = filter.operation_id {
            q.push(" AND operation_id = ")
                .push_bind(operation_id.uuid().hyphenated().to_string());
        }
        if let Some(after) = filter.after_seq {
            q.push(" AND seq > ").push_bind(after);
        }
        q.push(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(i64::from(limit));
        }
        self.fetch_recorded(q, "cannot list audit events").await
    }

    pub(crate) async fn unfinished_operations(&self) -> Result<Vec<Recorded>, StoreError> {
        let q = QueryBuilder::new(
            "SELECT r.seq, r.prev_hash, r.hash, r.event FROM audit_events r \
             WHERE r.kind = 'received' AND NOT EXISTS ( \
               SELECT 1 FROM audit_events t WHERE t.operation_id = r.operation_id \
               AND t.kind IN ('completed', 'recovered', 'denied')) \
             ORDER BY r.seq",
        );
        self.fetch_recorded(q, "cannot list unfinished operations")
            .await
    }

    pub(crate) async fn last_after(
        &self,
        state_path: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        let mut q = QueryBuilder::new(
            "SELECT seq, prev_hash, hash, event FROM audit_events WHERE state_path = ",
        );
        q.push_bind(state_path.to_owned())
            .push(" AND kind IN ('completed', 'recovered') ORDER BY seq DESC LIMIT 1");
        let last = self
            .fetch_recorded(q, "cannot read the last recorded state")
            .await?;
        Ok(last.into_iter().next().and_then(|r| r.event.after))
    }

    pub(crate) async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut verifier = Verifier::default();
        // From the very bottom: a row slipped in with seq 0 or below must be seen, not skipped.
        let mut last_seq = i64::MIN;
        loop {
            // Pages by seq rather than one long cursor: no read transaction is held open for
            // the whole log, and events appended meanwhile are verified too.
            let rows = sqlx::query(
                "SELECT seq, event_id, operation_id, kind, time, partner_tenant_id, operation, \
                 actor_oid, actor_upn, actor_appid, decision, upstream_status, state_path, \
                 event, prev_hash, hash \
                 FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?",
            )
            .bind(last_seq)
            .bind(VERIFY_PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify("cannot read the audit log", e))?;
            let Some(last) = rows.last() else { break };
            last_seq = last
                .try_get("seq")
                .map_err(|e| classify("cannot read the audit log", e))?;
            for row in &rows {
                let checked = stored_row(row).and_then(|stored| verifier.check(&stored));
                if let Err(broken) = checked {
                    return Ok(VerifyReport {
                        events: verifier.events(),
                        head: verifier.head().map(str::to_owned),
                        first_broken: Some(broken),
                    });
                }
            }
        }
        Ok(VerifyReport {
            events: verifier.events(),
            head: verifier.head().map(str::to_owned),
            first_broken: None,
        })
    }
}

fn recorded_from_row(row: &SqliteRow) -> Result<Recorded, StoreError> {
    let get = |name: &str| -> Result<String, StoreError> {
        row.try_get(name)
            .map_err(|e| classify(format!("cannot read column {name}"), e))
    };
    let seq: i64 = row
        .try_get("seq")
        .map_err(|e| classify("cannot read column seq", e))?;
    recorded(seq, get("prev_hash")?, get("hash")?, &get("event")?)
}

/// A row exactly as stored; a column of the wrong type is itself a break, not an error.
fn stored_row(row: &SqliteRow) -> Result<StoredRow, chain::Broken> {
    let seq: i64 = row.try_get("seq").unwrap_or(-1);
    let event_id: Option<String> = row.try_get("event_id").ok();
    let broken = |column: &str| chain::Broken {
        seq,
        event_id: event_id.clone().unwrap_or_default(),
        reason: format!("column {column} has a value of the wrong type"),
    };
    let text = |column: &'static str| -> Result<String, chain::Broken> {
        row.try_get::<String, _>(column).map_err(|_| broken(column))
    };
    let optional = |column: &'static str| -> Result<Option<String>, chain::Broken> {
        row.try_get::<Option<String>, _>(column)
            .map_err(|_| broken(column))
    };
    Ok(StoredRow {
        seq,
        columns: Columns {
            event_id: text("event_id")?,
            operation_id: text("operation_id")?,
            kind: text("kind")?,
            time: text("time")?,
            partner_tenant_id: optional("partner_tenant_id")?,
            operation: optional("operation")?,
            actor_oid: optional("actor_oid")?,
            actor_upn: optional("actor_upn")?,
            actor_appid: optional("actor_appid")?,
            decision: optional("decision")?,
            upstream_status: row
                .try_get::<Option<i64>, _>("upstream_status")
                .map_err(|_| broken("upstream_status"))?,
            state_path: optional("state_path")?,
        },
        event: text("event")?,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}
