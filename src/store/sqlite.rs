//! The SQLite backend: the embedded default, one file and no server.
//!
//! All of the store's SQLite-specific SQL and settings live here:
//! - WAL with `synchronous=FULL`: a commit is on disk (one fsync of the WAL) when it returns, and
//!   readers never block the writer nor the writer them.
//! - The writer takes the lock with `BEGIN IMMEDIATE` and reads the chain head inside that
//!   transaction, so even another process appending to the same file cannot fork the chain, and a
//!   failed transaction leaves no in-memory state to repair.
//! - `busy_timeout` bounds every wait for another connection's lock, so a locked database turns
//!   into a prompt [`StoreError::Unavailable`], not a hang.
//! - Readers open the file read-only and never create it.
//! - The log is private (0600): the writer creates the file with that mode before SQLite opens it,
//!   and SQLite gives the `-wal` and `-shm` files it creates the database file's mode. Files left
//!   wider by an earlier version or by hand are tightened at open, with a warning.
//! - Closing checkpoints the WAL into the database (`TRUNCATE`); when the writer's connection is
//!   the last one, SQLite then deletes the `-wal` and `-shm` files, so a clean shutdown leaves the
//!   database file alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};

use super::chain::{self, Columns, Head, Prepared, Sealed, StoredRow, Verifier};
use super::{Filter, StoreError, StoreOptions, VerifyReport, recorded};
use crate::audit::{Recorded, Snapshot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The only `chain_format` (see `chain.rs`) this code writes and verifies.
const CHAIN_FORMAT: i64 = 1;

/// Rows per page when verifying.
const VERIFY_PAGE: i64 = 1000;

// SQLite primary result codes (the low byte of an extended code).
const SQLITE_ERROR: i32 = 1;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;
const SQLITE_CONSTRAINT: i32 = 19;
const SQLITE_NOTADB: i32 = 26;

/// The primary result code of a database error, if it is one.
fn primary_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    }
}

/// Sort a sqlx error into the store's categories, keeping it as the source.
fn classify(context: impl Into<String>, e: sqlx::Error) -> StoreError {
    let context = context.into();
    let kind = match primary_code(&e) {
        Some(
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_READONLY | SQLITE_IOERR
            | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_PROTOCOL,
        ) => Kind::Unavailable,
        Some(SQLITE_CORRUPT | SQLITE_NOTADB) => Kind::Corrupt,
        Some(SQLITE_CONSTRAINT) => Kind::Rejected,
        Some(_) => Kind::Internal,
        None => match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => Kind::Unavailable,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Kind::Corrupt,
            _ => Kind::Internal,
        },
    };
    let source = Some(Arc::new(e) as super::Source);
    match kind {
        Kind::Unavailable => StoreError::Unavailable { context, source },
        Kind::Corrupt => StoreError::Corrupt { context, source },
        Kind::Rejected => StoreError::Rejected { context, source },
        Kind::Internal => StoreError::Internal { context, source },
    }
}

enum Kind {
    Unavailable,
    Corrupt,
    Rejected,
    Internal,
}

fn write_options(path: &Path, options: &StoreOptions) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout)
}

fn read_options(path: &Path, options: &StoreOptions) -> SqliteConnectOptions {
    // No journal_mode: setting it needs write access; WAL is a property of the file once set.
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(true)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout)
}

/// The write connection, owned by the writer task.
pub(crate) struct SqliteWriter {
    options: SqliteConnectOptions,
    path: PathBuf,
    /// `None` after a failure that may have left the connection mid-transaction; the next group
    /// opens a fresh one (closing a connection rolls back whatever it had open).
    conn: Option<SqliteConnection>,
}

impl SqliteWriter {
    /// Open or create the file and bring the schema up to date.
    pub(crate) async fn open(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<SqliteWriter, StoreError> {
        make_private(path)?;
        let connect_options = write_options(path, options);
        let mut conn = SqliteConnection::connect_with(&connect_options)
            .await
            .map_err(|e| classify(format!("cannot open {}", path.display()), e))?;
        MIGRATOR.run(&mut conn).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) if primary_code(&e).is_some() => {
                match classify(format!("cannot migrate {}", path.display()), e) {
                    unavailable @ StoreError::Unavailable { .. } => unavailable,
                    other => StoreError::Migration {
                        path: path.to_owned(),
                        source: Arc::new(other),
                    },
                }
            }
            e => StoreError::Migration {
                path: path.to_owned(),
                source: Arc::new(e),
            },
        })?;
        check_chain_format(&mut conn, path).await?;
        Ok(SqliteWriter {
            options: connect_options,
            path: path.to_owned(),
            conn: Some(conn),
        })
    }

    async fn connection(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        if self.conn.is_none() {
            let conn = SqliteConnection::connect_with(&self.options)
                .await
                .map_err(|e| classify(format!("cannot reopen {}", self.path.display()), e))?;
            self.conn = Some(conn);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::unavailable("no write connection"))
    }

    /// Append `events` after the head, in one `BEGIN IMMEDIATE` transaction.
    pub(crate) async fn append_group(
        &mut self,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        let conn = self.connection().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| classify("cannot lock the audit log for writing", e))?;
        let (result, healthy) = match insert_group(&mut tx, events).await {
            Ok(sealed) => match tx.commit().await {
                Ok(()) => (Ok(sealed), true),
                Err(e) => (Err(classify("cannot commit to the audit log", e)), false),
            },
            Err(e) => {
                let rolled_back = tx.rollback().await.is_ok();
                (Err(e), rolled_back)
            }
        };
        if !healthy {
            // After a failed COMMIT or ROLLBACK, SQLite may or may not still hold the transaction
            // (it rolls back by itself on a full disk or an I/O error), and sqlx may believe the
            // opposite. A new connection is the one state we can be sure of.
            self.conn = None;
        }
        result
    }

    /// Checkpoint the WAL into the database and close. Call it after the readers closed: the last
    /// connection to close is the one that deletes `-wal` and `-shm`.
    pub(crate) async fn close(self) {
        if let Some(mut conn) = self.conn {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(error = %e, "could not checkpoint the audit log at close");
            }
            let _ = conn.close().await;
        }
    }
}

/// Create the database file (0600) if it is missing, and tighten it and its `-wal`/`-shm` files
/// to 0600 if they are wider, before SQLite opens them. SQLite creates `-wal` and `-shm` with the
/// database file's mode, so they are private from then on.
fn make_private(path: &Path) -> Result<(), StoreError> {
    let unavailable = |e: std::io::Error, what: &Path| StoreError::Unavailable {
        context: format!("cannot make {} private", what.display()),
        source: Some(Arc::new(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| unavailable(e, path))?;
    }
    for file in [
        path.to_owned(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
    ] {
        super::private::tighten(&file).map_err(|e| unavailable(e, &file))?;
    }
    Ok(())
}

async fn insert_group(
    conn: &mut SqliteConnection,
    events: &[&Prepared],
) -> Result<Vec<Sealed>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify("cannot read the chain head", e))?;
    let mut head = match row {
        None => Head::empty(),
        Some(row) => Head {
            seq: row
                .try_get("seq")
                .map_err(|e| classify("cannot read the chain head", e))?,
            hash: row
                .try_get("hash")
                .map_err(|e| classify("cannot read the chain head", e))?,
        },
    };
    let mut sealed = Vec::with_capacity(events.len());
    for event in events {
        let s = event.seal(&mut head);
        let c = &event.columns;
        sqlx::query(
            "INSERT INTO audit_events (seq, event_id, operation_id, kind, time, \
             partner_tenant_id, operation, actor_oid, actor_upn, actor_appid, decision, \
             upstream_status, state_path, event, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.seq)
        .bind(&c.event_id)
        .bind(&c.operation_id)
        .bind(&c.kind)
        .bind(&c.time)
        .bind(&c.partner_tenant_id)
        .bind(&c.operation)
        .bind(&c.actor_oid)
        .bind(&c.actor_upn)
        .bind(&c.actor_appid)
        .bind(&c.decision)
        .bind(c.upstream_status)
        .bind(&c.state_path)
        .bind(&s.canonical)
        .bind(&s.prev_hash)
        .bind(&s.hash)
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(format!("cannot insert event {}", c.event_id), e))?;
        sealed.push(s);
    }
    Ok(sealed)
}

/// Refuse a file that is not an audit log, or one written under a chain rule we do not know.
async fn check_chain_format(conn: &mut SqliteConnection, path: &Path) -> Result<(), StoreError> {
    let not_a_log =
        || StoreError::corrupt(format!("{} is not a syncgate audit log", path.display()));
    let row = sqlx::query("SELECT chain_format FROM store_meta WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match primary_code(&e) {
            Some(SQLITE_ERROR | SQLITE_NOTADB) => not_a_log(),
            _ => classify(format!("cannot read {}", path.display()), e),
        })?
        .ok_or_else(not_a_log)?;
    let format: i64 = row.try_get(0).map_err(|_| not_a_log())?;
    if format != CHAIN_FORMAT {
        return Err(StoreError::corrupt(format!(
            "{} uses chain format {format}; this syncgate knows only {CHAIN_FORMAT}",
            path.display()
        )));
    }
    Ok(())
}

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

/// `<path><suffix>`, e.g. the `-wal` file beside a database.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A plain connection to `path`, for tests that tamper with the file the way an attacker with
/// write access would.
#[cfg(test)]
pub(crate) async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("raw test connection")
}
