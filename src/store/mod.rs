//! The audit store: the append-only, hash-chained log of governed operations.
//!
//! One type, [`Store`], in front of a backend chosen by enum (SQLite today, PostgreSQL when
//! several proxy replicas share one log), so callers never see which database they talk to and
//! no backend-specific SQL leaves its module (`sqlite.rs`).
//!
//! - Writes go through one task (`writer.rs`) that owns the only write connection. Callers hand it
//!   events over a bounded queue; it takes whatever is queued as one group and appends the group
//!   in one transaction (one fsync), then acknowledges each caller. [`Store::append`] returns only
//!   once the event is on disk: the proxy records `received` before anything goes upstream, so an
//!   acknowledged event must survive a crash, and a failure must reach the caller (it answers 503
//!   and forwards nothing; see [`StoreError::is_unavailable`]).
//! - The chain rule (canonical JSON, hashing, verification) lives in `chain.rs`, shared by every
//!   backend, so a log verifies the same wherever it is stored.
//! - Reads use their own read-only connections ([`StoreReader`]) and never wait on the writer;
//!   the CLI opens a [`StoreReader`] alone, without write access and without creating anything.
//! - [`TokenHasher`] keeps the key that fingerprints bearer tokens, in a file beside the database.

mod chain;
#[cfg(test)]
mod log_v1;
mod postgres;
mod private;
mod sqlite;
mod token_key;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::audit::{Decision, Event, EventKind, Recorded, Snapshot};
use crate::graph::OperationId;
pub(crate) use chain::Broken;
pub(crate) use token_key::TokenHasher;
pub use token_key::TokenKeyError;
use writer::WriterHandle;

pub(crate) use postgres::{
    AdvisoryGuard, AdvisoryLocks, is_postgres_url, migrate as migrate_postgres,
};

/// The only `chain_format` (see `chain.rs`) this code writes and verifies, on every backend.
const CHAIN_FORMAT: i64 = 1;

/// An error's cause, shared: a failed group hands the same error to every caller in it.
pub(crate) type Source = Arc<dyn std::error::Error + Send + Sync>;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot take or serve the request now (locked past the busy timeout, I/O
    /// error, disk full, read-only, writer stopped). Nothing was written; a retry may succeed.
    /// The proxy answers 503 and forwards nothing.
    #[error("the audit store is unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The database refused this event (a duplicate `event_id`, an event that cannot be
    /// serialised); other events are unaffected.
    #[error("the audit store refused the event: {context}")]
    Rejected {
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The database holds something this code cannot read: not an audit log, an event that does
    /// not parse, a malformed page.
    #[error("the audit store is corrupt: {context}")]
    Corrupt {
        context: String,
        #[source]
        source: Option<Source>,
    },
    /// The schema could not be brought up to date (or is newer than this binary).
    #[error("cannot migrate the audit store {path}")]
    Migration {
        path: PathBuf,
        #[source]
        source: Source,
    },
    /// There is no audit log at that path (readers never create one).
    #[error("no audit log at {path}")]
    NotFound { path: PathBuf },
    /// The token key file beside the database cannot be read or created.
    #[error(transparent)]
    TokenKey(Arc<TokenKeyError>),
    /// A database error that fits none of the above (a bug, or a schema this code does not expect).
    #[error("audit store error: {context}")]
    Internal {
        context: String,
        #[source]
        source: Option<Source>,
    },
}

impl StoreError {
    /// Whether the store is (perhaps temporarily) unable to record: the proxy's 503 decision.
    #[cfg(test)]
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    pub(crate) fn unavailable(context: impl Into<String>) -> Self {
        StoreError::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn corrupt(context: impl Into<String>) -> Self {
        StoreError::Corrupt {
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn writer_stopped() -> Self {
        StoreError::unavailable("the audit writer has stopped")
    }
}

/// How to open a store. `Default` is what the proxy uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a write waits for a lock held by another connection before failing with
    /// [`StoreError::Unavailable`]; bounds how long an append can hang on a locked database.
    pub(crate) busy_timeout: Duration,
    /// Events that may wait for the writer; further appenders wait for room (backpressure).
    pub(crate) queue_capacity: usize,
    /// Most events committed in one transaction.
    pub(crate) max_group: usize,
    /// Read-only connections for queries.
    pub(crate) read_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            max_group: 256,
            read_connections: 4,
        }
    }
}

/// Which events [`StoreReader::list`] returns; every field set narrows the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    /// Partner tenant id (lower-case GUID, as the pipeline records it).
    pub(crate) partner: Option<String>,
    /// Matches the actor's `oid`, `upn` or `appid`, ignoring ASCII case.
    pub(crate) actor: Option<String>,
    /// Events at or after this instant.
    pub(crate) since: Option<DateTime<Utc>>,
    /// Events strictly before this instant.
    pub(crate) until: Option<DateTime<Utc>>,
    pub(crate) kind: Option<EventKind>,
    pub(crate) decision: Option<Decision>,
    pub(crate) operation_id: Option<OperationId>,
    /// At most this many events.
    pub(crate) limit: Option<u32>,
    /// Events with `seq` greater than this (paging: pass the last seq seen).
    pub(crate) after_seq: Option<i64>,
}

/// What [`StoreReader::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Events that verified (all of them when `first_broken` is `None`).
    pub(crate) events: u64,
    /// Hash of the last event that verified; `None` for an empty log. Record it elsewhere: a
    /// later verify whose chain no longer contains it shows the log was cut or rewritten.
    pub(crate) head: Option<String>,
    /// The first event that breaks the chain; verification stops there.
    pub first_broken: Option<Broken>,
}

/// Counters from the writer, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (each one fsync).
    pub groups_committed: u64,
    pub(crate) events_committed: u64,
    /// Events waiting for the writer right now.
    pub(crate) queued: usize,
}

/// Read access to an audit log; cheap to clone.
#[derive(Clone)]
pub(crate) struct StoreReader {
    backend: ReadBackend,
    path: Arc<PathBuf>,
}

#[derive(Clone)]
enum ReadBackend {
    Sqlite(sqlite::SqliteReader),
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StoreReader {
    /// Open an existing log read-only: never creates, migrates or writes anything, and works
    /// without write access to the file. [`StoreError::NotFound`] when there is no file.
    pub(crate) async fn open(
        path: &Path,
        options: &StoreOptions,
    ) -> Result<StoreReader, StoreError> {
        let reader = sqlite::SqliteReader::open_existing(path, options).await?;
        Ok(StoreReader {
            backend: ReadBackend::Sqlite(reader),
            path: Arc::new(path.to_owned()),
        })
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Events matching `filter`, in `seq` order.
    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Recorded>, StoreError> {
        match &self.backend {
            ReadBackend::Sqlite(r) => r.list(filter).await,
        }
    }

    /// Every event of one operation, in `seq` order (empty when the id is unknown).
    pub(crate) async fn operation(
        &self,
        operation_id: impl Into<OperationId>,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.list(&Filter {
            operation_id: Some(operation_id.into()),
            ..Filter::default()
        })
        .await
    }

    /// The `received` events whose operation has no `completed`, `recovered` or `denied` event:
    /// changes the proxy may have sent upstream without recording the outcome (crash recovery).
    pub(crate) async fn unfinished_operations(&self) -> Result<Vec<Recorded>, StoreError> {
        match &self.backend {
            ReadBackend::Sqlite(r) => r.unfinished_operations().await,
        }
    }

    /// The after-state of the most recent `completed` or `recovered` event recorded under
    /// `state_path` (see [`Event::state_path`]), for drift detection. `None` when there is no such
    /// event or it has no after-state.
    pub(crate) async fn last_after(
        &self,
        state_path: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        match &self.backend {
            ReadBackend::Sqlite(r) => r.last_after(state_path).await,
        }
    }

    /// Recompute the whole chain, page by page (constant memory), and report the first break.
    pub(crate) async fn verify(&self) -> Result<VerifyReport, StoreError> {
        match &self.backend {
            ReadBackend::Sqlite(r) => r.verify().await,
        }
    }

    /// Close the read connections.
    pub(crate) async fn close(&self) {
        match &self.backend {
            ReadBackend::Sqlite(r) => r.close().await,
        }
    }
}

/// The audit log, open for appending and reading. Cheap to clone; every clone shares one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    reader: StoreReader,
    /// The queue to the writer task, the only holder of the write connection.
    writer: WriterHandle,
    token_hasher: TokenHasher,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.reader.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (creating if missing) the SQLite log at `path`, bring its schema up to date, load or
    /// create the token key beside it and start the writer. Must run inside a Tokio runtime.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let had_key = TokenHasher::key_path(path).exists();
        let token_hasher =
            TokenHasher::load_or_create(path).map_err(|e| StoreError::TokenKey(Arc::new(e)))?;
        let write = sqlite::SqliteWriter::open(path, &options).await?;
        let reader = sqlite::SqliteReader::open_for_writer(path, &options).await?;
        if !had_key {
            let one = Filter {
                limit: Some(1),
                ..Filter::default()
            };
            if !reader.list(&one).await?.is_empty() {
                // Not fatal (the proxy must be able to start), but fingerprints recorded under
                // the lost key can no longer be matched with new ones.
                tracing::warn!(
                    key = %TokenHasher::key_path(path).display(),
                    "the token key file was missing for an audit log that has events; created a \
                     new key, so earlier token fingerprints will not match later ones"
                );
            }
        }
        let writer = writer::spawn(writer::WriteBackend::Sqlite(write), &options);
        Ok(Store {
            inner: Arc::new(Inner {
                reader: StoreReader {
                    backend: ReadBackend::Sqlite(reader),
                    path: Arc::new(path.to_owned()),
                },
                writer,
                token_hasher,
            }),
        })
    }

    /// Append `event` to the chain. Returns once its group is committed and on disk, with the
    /// event as recorded (time truncated to microseconds, `seq`, `prev_hash`, `hash`).
    pub async fn append(&self, event: Event) -> Result<Recorded, StoreError> {
        self.inner.writer.append(event).await
    }

    /// The cross-replica per-partner locks, when the log is shared by replicas (PostgreSQL);
    /// `None` when one process owns it (SQLite), where in-process locks suffice.
    pub(crate) fn advisory_locks(&self) -> Option<AdvisoryLocks> {
        None
    }

    /// Fingerprints bearer tokens for [`crate::audit::Actor::token_hmac`].
    pub(crate) fn token_hasher(&self) -> &TokenHasher {
        &self.inner.token_hasher
    }

    /// The read side alone (queries), to hand to code that must never write.
    #[cfg(test)]
    pub(crate) fn reader(&self) -> &StoreReader {
        &self.inner.reader
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.writer.stats()
    }

    /// See [`StoreReader::list`].
    #[cfg(test)]
    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Recorded>, StoreError> {
        self.inner.reader.list(filter).await
    }

    /// See [`StoreReader::operation`].
    pub(crate) async fn operation(
        &self,
        operation_id: impl Into<OperationId>,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.inner.reader.operation(operation_id).await
    }

    /// See [`StoreReader::unfinished_operations`].
    pub(crate) async fn unfinished_operations(&self) -> Result<Vec<Recorded>, StoreError> {
        self.inner.reader.unfinished_operations().await
    }

    /// See [`StoreReader::last_after`].
    pub(crate) async fn last_after(
        &self,
        state_path: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.reader.last_after(state_path).await
    }

    /// See [`StoreReader::verify`].
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.reader.verify().await
    }

    /// Commit everything appended before this call, stop the writer and close the connections.
    /// Appends on other clones after this fail with [`StoreError::Unavailable`]. Bounded: each
    /// queued group either commits or fails within the busy timeout.
    ///
    /// The readers close first and the writer last, after a checkpoint: a read-only connection
    /// cannot checkpoint, so only when the writer's is the last connection does SQLite delete the
    /// `-wal` and `-shm` files (unless another process still has the log open).
    pub async fn close(self) {
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }
}

/// Rebuild a [`Recorded`] from the stored columns (shared by every backend).
fn recorded(
    seq: i64,
    prev_hash: String,
    hash: String,
    event: &str,
) -> Result<Recorded, StoreError> {
    let event: Event = serde_json::from_str(event).map_err(|e| StoreError::Corrupt {
        context: format!("event seq {seq} does not parse"),
        source: Some(Arc::new(e)),
    })?;
    Ok(Recorded {
        seq,
        prev_hash,
        hash,
        event,
    })
}

#[cfg(test)]
mod tests;
