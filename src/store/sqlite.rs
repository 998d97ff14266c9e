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

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, Sqlite};

use super::admin_reads::ReadRecord;
use super::chain::{Append, Head, Prepared, Sealed, StoredRow};
use super::operations::index;
use super::queries;
use super::tree::{self, StoredCheckpoint};
use super::{StoreError, StoreOptions};
use crate::audit::merkle::Frontier;

mod read;

pub(crate) use read::SqliteReader;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

use super::CHAIN_FORMAT;

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
        // sqlx steps SQLite on a thread of its own and hands rows over a channel of this many;
        // at its default (50) a page of events was handed over in dozens of sleeps and
        // wake-ups of both threads, which cost more than SQLite's own work (an export ran a
        // fifth faster with 1,024). The reads collect their rows whole anyway, so a longer
        // channel lets the thread run ahead without holding more in the end.
        .row_buffer_size(1024)
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
    /// The Merkle tree's right edge as of this writer's last commit (`store/tree.rs`); `None`
    /// until the first, or while the stored tree is behind the log.
    tree: Option<Frontier>,
    /// `StoreOptions::keep_tree`.
    keep_tree: bool,
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
                        location: path.display().to_string(),
                        source: Arc::new(other),
                    },
                }
            }
            e => StoreError::Migration {
                location: path.display().to_string(),
                source: Arc::new(e),
            },
        })?;
        check_chain_format(&mut conn, path).await?;
        index::catch_up_logged(catch_up_index(&mut conn).await);
        if options.keep_tree {
            tree::catch_up_logged(catch_up_tree(&mut conn).await);
        }
        Ok(SqliteWriter {
            options: connect_options,
            path: path.to_owned(),
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

    /// The Merkle tree as of this writer's last commit (`None` before one, or while the stored
    /// tree is behind the log).
    pub(crate) fn tree(&self) -> Option<&Frontier> {
        self.tree.as_ref()
    }

    /// Store a signed checkpoint (autocommit; kept if one of that size is there already).
    pub(crate) async fn store_checkpoint(
        &mut self,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), StoreError> {
        insert_checkpoint(self.connection().await?, checkpoint).await
    }

    /// The size of the largest checkpoint the log holds (0 for none).
    pub(crate) async fn last_checkpoint(&mut self) -> Result<u64, StoreError> {
        last_checkpoint_size(self.connection().await?).await
    }

    /// Record a witness delivery (its statements in autocommit, co-signature first).
    pub(crate) async fn record_witness(
        &mut self,
        update: &super::witness::WitnessUpdate,
    ) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        for mut statement in super::witness::record::<Sqlite>(update) {
            statement
                .build()
                .execute(&mut *conn)
                .await
                .map_err(|e| classify("cannot record a witness delivery", e))?;
        }
        Ok(())
    }

    /// Record a webhook delivery attempt (autocommit).
    pub(crate) async fn record_notice(
        &mut self,
        attempt: &super::approvals::NoticeAttempt,
    ) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        super::approvals::notice_attempt::<Sqlite>(
            &attempt.id,
            &attempt.at,
            attempt.outcome.clone(),
        )
        .build()
        .execute(&mut *conn)
        .await
        .map_err(|e| classify("cannot record a webhook delivery", e))?;
        Ok(())
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
        let rows = self.append(Append::Seal(events)).await?;
        Ok(rows.into_iter().map(Sealed::from).collect())
    }

    /// Append `events` after `guard`'s changes to the approval gate's tables, in one
    /// transaction: both or neither ([`StoreError::Conflict`] when the guard finds the request
    /// changed).
    pub(crate) async fn append_guarded(
        &mut self,
        guard: &super::approvals::Guard,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        let rows = self.append(Append::Guarded(guard, events)).await?;
        Ok(rows.into_iter().map(Sealed::from).collect())
    }

    /// Append rows exactly as given (a log copied from elsewhere), each checked to continue the
    /// head, in one transaction: the copy is chained as the original was, or nothing is written.
    pub(crate) async fn append_rows(&mut self, rows: &[StoredRow]) -> Result<(), StoreError> {
        self.append(Append::Copy(rows)).await.map(drop)
    }

    /// One `BEGIN IMMEDIATE` transaction (the write lock is taken before the head is read):
    /// all or nothing.
    async fn append(&mut self, append: Append<'_>) -> Result<Vec<StoredRow>, StoreError> {
        let cached = self.tree.take();
        let keep_tree = self.keep_tree;
        let conn = self.connection().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| classify("cannot lock the audit log for writing", e))?;
        let (result, healthy) =
            match insert_after_head(&mut tx, &append, cached.as_ref(), keep_tree).await {
                Ok((rows, tree)) => match tx.commit().await {
                    Ok(()) => {
                        self.tree = tree;
                        (Ok(rows), true)
                    }
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

    /// Insert one admin read in its own (autocommit) statement; the id SQLite gave it.
    pub(crate) async fn record_read(&mut self, read: &ReadRecord) -> Result<i64, StoreError> {
        let conn = self.connection().await?;
        let id = super::admin_reads::insert::<Sqlite>(read)
            .build_query_scalar()
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| classify("cannot record the admin read", e))?;
        Ok(id)
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

/// Insert what `append` puts after the head, fold it into the operations index and hash it
/// into the Merkle tree: the rows, and the tree's new edge (see `grow_tree`).
async fn insert_after_head(
    conn: &mut SqliteConnection,
    append: &Append<'_>,
    tree: Option<&Frontier>,
    keep_tree: bool,
) -> Result<(Vec<StoredRow>, Option<Frontier>), StoreError> {
    let head = read_head(conn).await?;
    let head_seq = head.seq;
    if let Some(guard) = append.guard() {
        apply_guard(conn, guard).await?;
    }
    let rows = append.rows(head).map_err(StoreError::rejected)?;
    for row in &rows {
        insert_row(conn, row).await?;
    }
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

index::index_writes!(Sqlite, SqliteConnection);
super::approvals::approval_writes!(Sqlite, SqliteConnection);
tree::tree_writes!(Sqlite, SqliteConnection);

/// A transaction holding the write lock (`BEGIN IMMEDIATE`), for catching the index up.
async fn begin_locked_transaction(
    conn: &mut SqliteConnection,
) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
    conn.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify("cannot lock the audit log to index it", e))
}

/// The chain head, read inside the write transaction.
async fn read_head(conn: &mut SqliteConnection) -> Result<Head, StoreError> {
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

/// Insert one row exactly as given (appending, and copying a log from elsewhere).
pub(crate) async fn insert_row(
    conn: &mut SqliteConnection,
    row: &StoredRow,
) -> Result<(), StoreError> {
    queries::insert::<Sqlite>(row)
        .build()
        .execute(&mut *conn)
        .await
        .map_err(|e| classify(format!("cannot insert event {}", row.columns.event_id), e))?;
    Ok(())
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
            .busy_timeout(std::time::Duration::from_secs(10)),
    )
    .await
    .expect("raw test connection")
}
