//! The audit store: the append-only, hash-chained log of governed operations.
//!
//! One type, [`Store`], in front of a backend chosen by enum (SQLite, the embedded default, or
//! PostgreSQL when several proxy replicas share one log; see [`StoreLocation`]), so callers never
//! see which database they talk to. The SQL is written once (`queries.rs`); what is specific to a
//! backend (connections, locking the chain head, sorting errors) stays in its module
//! (`sqlite.rs`, `postgres/`).
//!
//! - Writes go through one task (`writer.rs`) that owns the process's only write connection
//!   (replicas sharing PostgreSQL have one each, and take turns at the chain head under the
//!   database's lock, so the chain stays one sequence whoever writes). Callers hand it
//!   events over a bounded queue; it takes whatever is queued as one group and appends the group
//!   in one transaction (one fsync), then acknowledges each caller. [`Store::append`] returns only
//!   once the event is on disk: the proxy records `received` before anything goes upstream, so an
//!   acknowledged event must survive a crash, and a failure must reach the caller (it answers 503
//!   and forwards nothing; see [`StoreError::is_unavailable`]).
//! - The chain rule (canonical JSON, hashing, verification) lives in `chain.rs`, shared by every
//!   backend, so a log verifies the same wherever it is stored.
//! - Reads use their own read-only connections ([`StoreReader`]) and never wait on the writer;
//!   the CLI opens a [`StoreReader`] alone, without write access and without creating anything.
//! - [`TokenHasher`] keeps the key that fingerprints bearer tokens, in a file (beside a SQLite log,
//!   or `store.token_key`), never in the database.
//! - [`copy`] moves a log between stores row for row; [`AdvisoryLocks`] are PostgreSQL's
//!   cross-replica partner locks.

mod admin_reads;
#[doc(hidden)]
pub mod bench;
pub(crate) mod chain;
mod copy;
mod location;
#[cfg(test)]
mod log_v1;
mod operations;
mod postgres;
mod private;
mod queries;
mod reads;
pub mod signing_key;
mod sqlite;
mod token_key;
mod tree;
pub(crate) mod witness;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};

use crate::audit::{Decision, Event, EventKind, Recorded, Snapshot};
use crate::graph::OperationId;
pub(crate) use admin_reads::ReadRecord;
pub(crate) use chain::Broken;
pub(crate) use token_key::TokenHasher;
pub use token_key::TokenKeyError;
pub(crate) use writer::StoreInstruments;
use writer::WriterHandle;

pub(crate) use copy::copy;
pub use location::StoreLocation;
pub(crate) use operations::OperationSummary;
#[cfg(test)]
pub(crate) use operations::TERMINAL as TERMINAL_KINDS;
pub use operations::index_check::IndexMismatch;
pub(crate) use operations::{
    Cursor, FoldedOperation, FoldedPage, MAX_LIMIT, OperationFilter, OperationsPage, RawEvent, fold,
};
pub(crate) use postgres::{AdvisoryGuard, AdvisoryLocks};

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
    #[error("cannot migrate the audit store {location}")]
    Migration {
        location: String,
        #[source]
        source: Source,
    },
    /// There is no audit log there: no file, or a database never migrated (readers never
    /// create one).
    #[error("no audit log at {location}")]
    NotFound { location: String },
    /// The token key file beside the database cannot be read or created.
    #[error(transparent)]
    TokenKey(Arc<TokenKeyError>),
    /// The checkpoint signing key file cannot be read or created.
    #[error(transparent)]
    SigningKey(Arc<signing_key::SigningKeyError>),
    /// A tree size (or an event's seq) beyond what the stored Merkle tree holds: a proof or a
    /// root of a tree that does not exist (yet).
    #[error("the log's Merkle tree holds {held} events; {size} is beyond it")]
    NotInTree { size: u64, held: u64 },
    /// An event not yet covered by a signed checkpoint, so no evidence of it can be given yet.
    #[error(
        "event seq {seq} is newer than the latest signed checkpoint ({signed} events); the \
         writer signs the next one within its interval (checkpoints.every)"
    )]
    NotYetSigned { seq: u64, signed: u64 },
    /// An approval request was not as the change to it expected (another vote, the sweeper or a
    /// replica changed it first): nothing was written; read it again and decide again.
    #[error("{context}")]
    Conflict { context: String },
    /// A question with no answer (a consistency proof from a larger tree to a smaller one).
    #[error("{context}")]
    Invalid { context: String },
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

    pub(crate) fn rejected(context: impl Into<String>) -> Self {
        StoreError::Rejected {
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
    /// PostgreSQL: the longest any statement may run (and a connection may take to open), so a
    /// hung or overloaded server turns into [`StoreError::Unavailable`] rather than a hang.
    pub(crate) statement_timeout: Duration,
    /// Apply missing migrations when opening for writing (`store.migrate`); when false, a log
    /// whose migrations were not run is refused instead.
    pub(crate) migrate: bool,
    /// The token key file; `None` puts it beside a SQLite file (`<path>.token-key`). PostgreSQL
    /// needs one named (replicas share it).
    pub(crate) token_key: Option<PathBuf>,
    /// PostgreSQL: a file holding the password (first line).
    pub(crate) password_file: Option<PathBuf>,
    /// PostgreSQL: sessions for cross-replica partner locks, the most partners this replica can
    /// change at once (a further change waits for one, within `lock_wait`).
    pub(crate) lock_connections: u32,
    /// PostgreSQL: the longest a change waits for its partner's lock before it is refused (503).
    pub(crate) lock_wait: Duration,
    /// Signed checkpoints of the Merkle tree (`[checkpoints]`).
    pub(crate) checkpoints: CheckpointOptions,
    /// Keep the Merkle tree (`tree.rs`) as events are appended. Off only in the governed
    /// benchmark, to measure what the writer cost before the tree (`Settings::without_tree`);
    /// a log written so is hashed in by the next writer that keeps it.
    pub(crate) keep_tree: bool,
}

/// When and with which key the writer signs checkpoints (docs/transparency.md).
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Sign at all.
    pub(crate) enabled: bool,
    /// The signing key file; `None` puts it beside a SQLite file (`<path>.checkpoint-key`).
    /// A PostgreSQL log without one named gets no checkpoints (the config always names one).
    pub(crate) key: Option<PathBuf>,
    /// The checkpoints' origin (the key's name); default after the public key.
    pub(crate) origin: Option<String>,
    /// Sign when this many events came since the last checkpoint.
    pub(crate) every_events: u64,
    /// Sign this often when the tree grew (and at close).
    pub(crate) every: Duration,
    /// Where each checkpoint is also sent (`witness.rs`).
    pub(crate) witnesses: Vec<witness::WitnessSpec>,
    /// The longest wait between two attempts to reach a witness that failed.
    pub(crate) retry_max: Duration,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            enabled: true,
            key: None,
            origin: None,
            every_events: 1000,
            every: Duration::from_secs(60),
            witnesses: Vec::new(),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 1024,
            max_group: 256,
            read_connections: 4,
            statement_timeout: Duration::from_secs(5),
            migrate: true,
            token_key: None,
            password_file: None,
            lock_connections: 32,
            lock_wait: Duration::from_secs(30),
            checkpoints: CheckpointOptions::default(),
            keep_tree: true,
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
    /// Where the operations index (what the auditors' queries read) first disagrees with the
    /// events it folds; checked only when the chain verified.
    pub operations_index: Option<IndexMismatch>,
    /// Where the log's own Merkle data disagrees with the events: a checkpoint stored in the
    /// log whose size it no longer reaches or whose root its events no longer have, or the
    /// stored tree's nodes. Checked only when the chain verified.
    pub tree: Option<TreeMismatch>,
    /// How many checkpoints stored in the log were checked against the events.
    pub(crate) checkpoints_checked: u64,
    /// The RFC 6962 Merkle root of the `events` that verified, leaves being their stored
    /// canonical JSON in seq order: what a signed checkpoint of that size must name
    /// (docs/transparency.md). The empty tree's root for an empty log. Hex when serialized.
    #[serde(serialize_with = "hex_hash")]
    pub(crate) tree_root: crate::audit::merkle::Hash,
    /// The tree's root at each size the caller asked for ([`StoreReader::verify_at`]) that the
    /// verified events reach.
    #[serde(skip)]
    pub(crate) roots_at: std::collections::BTreeMap<u64, crate::audit::merkle::Hash>,
}

fn hex_hash<S: serde::Serializer>(
    hash: &crate::audit::merkle::Hash,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(hash))
}

impl VerifyReport {
    /// Whether the chain verified and the operations index agrees with it.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none() && self.operations_index.is_none() && self.tree.is_none()
    }
}

/// Where the log's own Merkle data first disagrees with its events.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeMismatch {
    /// `truncated` or `rewritten` (a checkpoint stored in the log), or `tree` (the stored
    /// nodes, derived data that `syncgate audit reindex` rebuilds).
    pub(crate) kind: &'static str,
    /// The tree size concerned.
    pub(crate) size: u64,
    pub(crate) reason: String,
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
    location: Arc<StoreLocation>,
}

#[derive(Clone)]
enum ReadBackend {
    Sqlite(sqlite::SqliteReader),
    Postgres(postgres::PgReader),
}

/// Run the same call on whichever backend `$reader` holds.
macro_rules! on_backend {
    ($reader:expr, $r:ident => $call:expr) => {
        match &$reader.backend {
            ReadBackend::Sqlite($r) => $call,
            ReadBackend::Postgres($r) => $call,
        }
    };
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl StoreReader {
    /// Open an existing log read-only: never creates, migrates or writes anything, and works
    /// without write access to a SQLite file. [`StoreError::NotFound`] when there is no log.
    pub(crate) async fn open(
        location: &StoreLocation,
        options: &StoreOptions,
    ) -> Result<StoreReader, StoreError> {
        let backend = match location {
            StoreLocation::Sqlite(path) => {
                ReadBackend::Sqlite(sqlite::SqliteReader::open_existing(path, options).await?)
            }
            StoreLocation::Postgres(url) => {
                ReadBackend::Postgres(postgres::PgReader::open(url, options).await?)
            }
        };
        Ok(StoreReader {
            backend,
            location: Arc::new(location.clone()),
        })
    }

    /// Where the log is.
    pub(crate) fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Events matching `filter`, in `seq` order.
    pub(crate) async fn list(&self, filter: &Filter) -> Result<Vec<Recorded>, StoreError> {
        on_backend!(self, r => r.list(filter).await)
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
        on_backend!(self, r => r.unfinished_operations().await)
    }

    /// The after-state of the most recent `completed` or `recovered` event recorded under
    /// `state_path` (see [`Event::state_path`]), for drift detection. `None` when there is no such
    /// event or it has no after-state.
    pub(crate) async fn last_after(
        &self,
        state_path: &str,
    ) -> Result<Option<Snapshot>, StoreError> {
        on_backend!(self, r => r.last_after(state_path).await)
    }

    /// Recompute the whole chain, page by page (constant memory), and report the first break.
    pub(crate) async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_at(&[]).await
    }

    /// [`StoreReader::verify`], noting the tree's root at each of `sizes` (kept checkpoints').
    /// The log's own Merkle data is checked against the events too (`proofs.rs`): every
    /// checkpoint stored in it, and the stored tree.
    pub(crate) async fn verify_at(&self, sizes: &[u64]) -> Result<VerifyReport, StoreError> {
        self.verify_with_tree(sizes).await
    }

    /// Up to `limit` admin reads recorded after `after` (an id), oldest first.
    pub(crate) async fn admin_reads(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ReadRecord>, StoreError> {
        on_backend!(self, r => r.admin_reads(after, limit).await)
    }

    /// Up to a page of whole rows with `seq` above `after`, exactly as stored (copying a log).
    pub(crate) async fn page(&self, after: i64) -> Result<queries::Page, StoreError> {
        on_backend!(self, r => r.page(after).await)
    }

    /// The chain head: the last event's seq and hash (`None` for an empty log).
    pub(crate) async fn head(&self) -> Result<Option<chain::Head>, StoreError> {
        on_backend!(self, r => r.head().await)
    }

    /// Whether the log can be read now (readiness); the error says why not.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, r => r.ping().await)
    }

    /// Close the read connections.
    pub(crate) async fn close(&self) {
        on_backend!(self, r => r.close().await)
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
    /// Cross-replica partner locks (PostgreSQL).
    advisory: Option<AdvisoryLocks>,
    token_hasher: TokenHasher,
    /// The witnesses' delivery task and what stops it (`witness.rs`), when there are witnesses.
    witnessing: Option<(
        CancellationToken,
        tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    )>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.inner.reader.location)
            .finish_non_exhaustive()
    }
}

/// The writer's checkpoint policy, its key loaded (or created); `None` when checkpoints are
/// off, or a PostgreSQL log names no key (said in the log: nothing is signed).
fn checkpointing(
    location: &StoreLocation,
    options: &CheckpointOptions,
) -> Result<Option<writer::Checkpointing>, StoreError> {
    if !options.enabled {
        return Ok(None);
    }
    let path = match (&options.key, location) {
        (Some(path), _) => path.clone(),
        (None, StoreLocation::Sqlite(db)) => signing_key::key_path(db),
        (None, StoreLocation::Postgres(_)) => {
            tracing::warn!(
                "no checkpoint key is named for this PostgreSQL log (checkpoints.key): no \
                 checkpoint is signed"
            );
            return Ok(None);
        }
    };
    let signer = signing_key::load_or_create(&path, options.origin.as_deref())
        .map_err(|e| StoreError::SigningKey(Arc::new(e)))?;
    Ok(Some(writer::Checkpointing {
        signer,
        every_events: options.every_events.max(1),
        every: options.every,
    }))
}

impl Store {
    /// Open (creating if missing) the SQLite log at `path`; see [`Store::connect`].
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        Store::connect(&StoreLocation::Sqlite(path.to_owned()), options).await
    }

    /// Open the log at `location` for appending: create a SQLite file if missing, bring the
    /// schema up to date (unless `options.migrate` is false), load or create the token key and
    /// start the writer. Must run inside a Tokio runtime.
    pub async fn connect(
        location: &StoreLocation,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let key_path = match (&options.token_key, location) {
            (Some(path), _) => path.clone(),
            (None, StoreLocation::Sqlite(path)) => TokenHasher::key_path(path),
            (None, StoreLocation::Postgres(_)) => {
                return Err(StoreError::Internal {
                    context: "a PostgreSQL log needs a token key file (store.token_key)".into(),
                    source: None,
                });
            }
        };
        let had_key = key_path.exists();
        let token_hasher = TokenHasher::load_or_create(&key_path)
            .map_err(|e| StoreError::TokenKey(Arc::new(e)))?;
        let (write, backend, advisory) = match location {
            StoreLocation::Sqlite(path) => {
                let write = sqlite::SqliteWriter::open(path, &options).await?;
                let read = sqlite::SqliteReader::open_for_writer(path, &options).await?;
                let backends = (
                    writer::WriteBackend::Sqlite(write),
                    ReadBackend::Sqlite(read),
                );
                (backends.0, backends.1, None)
            }
            StoreLocation::Postgres(url) => {
                if options.migrate {
                    postgres::migrate(url, &options).await?;
                }
                let write = postgres::PgWriter::open(url, &options).await?;
                let read = postgres::PgReader::open(url, &options).await?;
                let locks = AdvisoryLocks::new(
                    postgres::connect_options(url, &options)?,
                    options.lock_connections.max(1),
                    options.lock_wait,
                );
                let backends = (
                    writer::WriteBackend::Postgres(write),
                    ReadBackend::Postgres(read),
                );
                (backends.0, backends.1, Some(locks))
            }
        };
        let reader = StoreReader {
            backend,
            location: Arc::new(location.clone()),
        };
        if !had_key {
            warn_if_key_replaced(&reader, &key_path).await?;
        }
        let checkpointing = checkpointing(location, &options.checkpoints)?;
        let signing = checkpointing.is_some();
        let writer = writer::spawn(write, &options, checkpointing);
        let witnesses = &options.checkpoints.witnesses;
        let witnessing = (signing && !witnesses.is_empty()).then(|| {
            let stop = CancellationToken::new();
            let task = witness::spawn(
                reader.clone(),
                writer.queue(),
                writer.signed(),
                witnesses.clone(),
                options.checkpoints.retry_max,
                writer.instruments().clone(),
                stop.clone(),
            );
            (stop, tokio::sync::Mutex::new(Some(task)))
        });
        Ok(Store {
            inner: Arc::new(Inner {
                reader,
                writer,
                advisory,
                token_hasher,
                witnessing,
            }),
        })
    }

    /// Bring the log at `location` up to date without opening it for appending (`syncgate
    /// migrate`): what `connect` does first.
    pub async fn migrate(
        location: &StoreLocation,
        options: StoreOptions,
    ) -> Result<(), StoreError> {
        match location {
            StoreLocation::Postgres(url) => {
                postgres::migrate(url, &options).await?;
                // Opening the writer folds the earlier events into the operations index.
                postgres::PgWriter::open(url, &options).await?.close().await;
                Ok(())
            }
            StoreLocation::Sqlite(path) => {
                sqlite::SqliteWriter::open(path, &options)
                    .await?
                    .close()
                    .await;
                Ok(())
            }
        }
    }

    /// Empty the log's operations index and fold every event into it again, then do the same
    /// for the Merkle tree's nodes, each in one transaction under the write lock (`syncgate
    /// audit reindex`); the seq the index holds through.
    /// For an index that verification found disagreeing with the events (the events are the
    /// evidence, the index is derived from them). Appends wait meanwhile.
    pub async fn reindex(
        location: &StoreLocation,
        options: StoreOptions,
    ) -> Result<i64, StoreError> {
        use writer::WriteBackend;
        let mut writer = match location {
            StoreLocation::Postgres(url) => {
                WriteBackend::Postgres(postgres::PgWriter::open(url, &options).await?)
            }
            StoreLocation::Sqlite(path) => {
                // Opening for writing creates a missing file: a mistyped path must not become
                // a new, empty log.
                if !path.is_file() {
                    return Err(StoreError::NotFound {
                        location: path.display().to_string(),
                    });
                }
                WriteBackend::Sqlite(sqlite::SqliteWriter::open(path, &options).await?)
            }
        };
        let through = writer.rebuild().await;
        writer.close().await;
        through
    }

    /// Append `event` to the chain. Returns once its group is committed and on disk, with the
    /// event as recorded (time truncated to microseconds, `seq`, `prev_hash`, `hash`).
    pub async fn append(&self, event: Event) -> Result<Recorded, StoreError> {
        self.inner.writer.append(event).await
    }

    /// Make `guard`'s change to the approval gate's tables and append `events` after it, in
    /// one transaction (`approvals.rs`): the events as recorded, or [`StoreError::Conflict`]
    /// when the request was not as the guard expected (then nothing was written).
    pub(crate) async fn append_guarded(
        &self,
        guard: approvals::Guard,
        events: Vec<Event>,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.inner.writer.append_guarded(guard, events).await
    }

    /// Record a webhook delivery attempt (the outbox, not the chain).
    pub(crate) async fn record_notice(
        &self,
        attempt: approvals::NoticeAttempt,
    ) -> Result<(), StoreError> {
        self.inner.writer.record_notice(attempt).await
    }

    /// Record who read the log through the admin API (`admin_reads`, not the chain); returns
    /// once the row is on disk, with its id. Goes through the writer's bounded queue.
    pub(crate) async fn record_read(&self, read: ReadRecord) -> Result<i64, StoreError> {
        self.inner.writer.record_read(read).await
    }

    /// The seq of the last event this process committed, as it changes (0 before any). Events
    /// other replicas append are not seen here: a waiter also looks at the database now and then.
    pub(crate) fn committed_head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.writer.head()
    }

    /// The read side alone, for the admin API's queries.
    pub(crate) fn read_side(&self) -> &StoreReader {
        &self.inner.reader
    }

    /// The cross-replica per-partner locks, when the log is shared by replicas (PostgreSQL);
    /// `None` when one process owns it (SQLite), where in-process locks suffice.
    pub(crate) fn advisory_locks(&self) -> Option<AdvisoryLocks> {
        self.inner.advisory.clone()
    }

    /// Fingerprints bearer tokens for [`crate::audit::Actor::token_hmac`].
    pub(crate) fn token_hasher(&self) -> &TokenHasher {
        &self.inner.token_hasher
    }

    /// The read side alone (queries), to hand to code that must never write (an export).
    pub(crate) fn reader(&self) -> &StoreReader {
        &self.inner.reader
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.writer.stats()
    }

    /// The writer's latency and group-size instruments, for `/metrics` to register.
    pub(crate) fn instruments(&self) -> &StoreInstruments {
        self.inner.writer.instruments()
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

    /// See [`StoreReader::operations`].
    pub(crate) async fn operations(
        &self,
        filter: &OperationFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<OperationsPage, StoreError> {
        self.inner.reader.operations(filter, cursor, limit).await
    }

    /// Whether the log can be reached now, for `/readyz`; the error says why not.
    pub(crate) async fn ready(&self) -> Result<(), StoreError> {
        self.inner.reader.ping().await
    }

    /// Commit everything appended before this call, stop the writer and close the connections.
    /// Appends on other clones after this fail with [`StoreError::Unavailable`]. Bounded: each
    /// queued group either commits or fails within the busy timeout.
    ///
    /// The readers close first and the writer last, after a checkpoint: a read-only connection
    /// cannot checkpoint, so only when the writer's is the last connection does SQLite delete the
    /// `-wal` and `-shm` files (unless another process still has the log open).
    pub async fn close(self) {
        // The witnesses first: their task records through the writer. A checkpoint signed at
        // the close below is delivered at the next start (it stays in the outbox).
        if let Some((stop, task)) = &self.inner.witnessing {
            stop.cancel();
            if let Some(task) = task.lock().await.take() {
                let _ = task.await;
            }
        }
        if let Some(locks) = &self.inner.advisory {
            locks.close().await;
        }
        self.inner.reader.close().await;
        self.inner.writer.close().await;
    }
}

/// A new token key was just created: say so when the log already has events, whose fingerprints
/// were made with a key now lost. Not fatal (the proxy must be able to start), but fingerprints
/// recorded under the lost key can no longer be matched with new ones.
async fn warn_if_key_replaced(reader: &StoreReader, key_path: &Path) -> Result<(), StoreError> {
    let one = Filter {
        limit: Some(1),
        ..Filter::default()
    };
    if !reader.list(&one).await?.is_empty() {
        tracing::warn!(
            key = %key_path.display(),
            "the token key file was missing for an audit log that has events; created a new \
             key, so earlier token fingerprints will not match later ones"
        );
    }
    Ok(())
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

pub(crate) mod approvals;
mod proofs;
mod quick;

#[cfg(test)]
pub(crate) mod test_log;
#[cfg(test)]
mod tests;
