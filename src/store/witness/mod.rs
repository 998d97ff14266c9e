//! Delivering signed checkpoints to witnesses (issue 11; docs/transparency.md): sinks that the
//! database's owner does not control, so that cutting or rewriting the log, and its stored
//! checkpoints with it, still leaves signed evidence elsewhere.
//!
//! # The outbox
//!
//! The `checkpoints` table is the outbox: every checkpoint the writer signs is kept there, and
//! `witness_state` (migration 0006) records, per configured witness, the size of the last one
//! it took. A task of its own ([`spawn`]) wakes when the writer signs one (and when a retry is
//! due), and sends each witness the checkpoints above its mark, oldest first, each once it has
//! the one before. A witness that is down gets them all, in order, when it is back, after a
//! restart too; the governed traffic never waits for it: the task shares nothing with the
//! appenders but the writer's queue, on which it records one small row per delivery.
//!
//! Delivery is at least once: replicas sharing a PostgreSQL log each run the task, and both may
//! send one checkpoint (the mark only moves forward). Witnesses take a checkpoint they already
//! hold without harm; an HTTP witness that knows a larger size says so (409), and the mark moves.
//!
//! # Sinks (`sink.rs`)
//!
//! - `file`: the note appended to a file (created 0600; fsync'd), notes one after another, each
//!   followed by a blank line: what `syncgate audit verify --checkpoint FILE` reads.
//! - `url`: C2SP tlog-witness's `add-checkpoint` (POST: `old N`, the consistency proof from N,
//!   a blank line, the note). A 200's body is the witness's co-signature lines, stored in
//!   `checkpoint_cosignatures`.
//! - `syslog`: an RFC 5424 message (facility log audit) to a Unix datagram socket or a UDP
//!   address, the note base64'd in it so it survives syslog's one-line form.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Database, Encode, QueryBuilder, Type};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::tree::StoredCheckpoint;
use super::writer::StoreInstruments;
use super::{StoreError, StoreReader};
use crate::audit::note::CosignatureVerifier;

mod sink;

pub(crate) use sink::Sink;

/// Checkpoints read per witness per round.
const ROUND: i64 = 64;

/// One configured witness (`[[checkpoints.witness]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessSpec {
    /// Its name in `witness_state`, logs and co-signatures: `[A-Za-z0-9._-]`, unique.
    pub(crate) name: String,
    pub(crate) target: Target,
    /// The longest one delivery may take.
    pub(crate) timeout: Duration,
    /// A url witness's co-signing key: its answers are checked, and only a co-signature by
    /// this key over the checkpoint sent is stored.
    pub(crate) key: Option<CosignatureVerifier>,
}

/// Where a witness is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    File(PathBuf),
    Url(http::Uri),
    SyslogUnix(PathBuf),
    SyslogUdp(SocketAddr),
}

/// What one delivery attempt came to, recorded through the writer's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WitnessUpdate {
    pub(crate) witness: String,
    /// RFC 3339 UTC, seconds.
    pub(crate) time: String,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The witness took the checkpoint of `size` (and perhaps co-signed it).
    Delivered {
        size: u64,
        cosignature: Option<String>,
        /// What is still wrong though it was taken (kept as the witness's `last_error`).
        problem: Option<String>,
    },
    Failed {
        error: String,
    },
}

/// The statements that record `update`, in order.
pub(crate) fn record<'a, DB>(update: &WitnessUpdate) -> Vec<QueryBuilder<'a, DB>>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    Option<String>: Encode<'a, DB> + Type<DB>,
{
    let mut statements = Vec::new();
    match &update.outcome {
        Outcome::Delivered {
            size,
            cosignature,
            problem,
        } => {
            if let Some(lines) = cosignature {
                let mut q = QueryBuilder::new(
                    "INSERT INTO checkpoint_cosignatures (size, witness, time, signature) VALUES (",
                );
                q.push_bind(*size as i64)
                    .push(", ")
                    .push_bind(update.witness.clone())
                    .push(", ")
                    .push_bind(update.time.clone())
                    .push(", ")
                    .push_bind(lines.clone())
                    .push(") ON CONFLICT (size, witness) DO NOTHING");
                statements.push(q);
            }
            let mut q = QueryBuilder::new(
                "INSERT INTO witness_state (witness, delivered, attempts, last_error, \
                 last_attempt) VALUES (",
            );
            q.push_bind(update.witness.clone())
                .push(", ")
                .push_bind(*size as i64)
                .push(", 0, ")
                .push_bind(problem.clone())
                .push(", ")
                .push_bind(update.time.clone())
                .push(
                    ") ON CONFLICT (witness) DO UPDATE SET delivered = CASE \
                     WHEN excluded.delivered > witness_state.delivered \
                     THEN excluded.delivered ELSE witness_state.delivered END, \
                     attempts = 0, last_error = excluded.last_error, \
                     last_attempt = excluded.last_attempt",
                );
            statements.push(q);
        }
        Outcome::Failed { error } => {
            let mut q = QueryBuilder::new(
                "INSERT INTO witness_state (witness, delivered, attempts, last_error, \
                 last_attempt) VALUES (",
            );
            q.push_bind(update.witness.clone())
                .push(", 0, 1, ")
                .push_bind(error.clone())
                .push(", ")
                .push_bind(update.time.clone())
                .push(
                    ") ON CONFLICT (witness) DO UPDATE SET \
                     attempts = witness_state.attempts + 1, last_error = excluded.last_error, \
                     last_attempt = excluded.last_attempt",
                );
            statements.push(q);
        }
    }
    statements
}

/// Each witness's mark ([`WitnessState`]), by name.
pub(crate) const STATES: &str = "SELECT witness, delivered, attempts, last_error, last_attempt \
     FROM witness_state ORDER BY witness";

/// Up to `limit` stored checkpoints above `size`, smallest first.
pub(crate) fn checkpoints_after<'a, DB>(size: u64, limit: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(format!("{} > ", super::tree::SELECT_CHECKPOINTS));
    q.push_bind(size.min(i64::MAX as u64) as i64)
        .push(" ORDER BY size LIMIT ")
        .push_bind(limit);
    q
}

/// The co-signatures of the checkpoints `sizes`.
pub(crate) fn cosignatures_of<'a, DB>(sizes: &[i64]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::new(
        "SELECT size, witness, time, signature FROM checkpoint_cosignatures WHERE size IN ",
    );
    super::queries::push_list(&mut q, sizes);
    q.push(" ORDER BY size, witness");
    q
}

/// A witness's mark as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WitnessState {
    pub(crate) witness: String,
    pub(crate) delivered: u64,
    /// Failed attempts since the last delivery.
    pub(crate) attempts: u64,
    pub(crate) last_error: Option<String>,
    /// RFC 3339 UTC: the last attempt, delivered or not.
    pub(crate) last_attempt: Option<String>,
}

/// A stored co-signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Cosignature {
    pub(crate) size: u64,
    pub(crate) witness: String,
    pub(crate) time: String,
    pub(crate) signature: String,
}

/// The writer's queue, as the delivery task uses it: it records what each attempt came to.
pub(crate) type Recorder = mpsc::Sender<super::writer::Command>;

/// How long to wait before the `failures`-th retry: a second, doubling, at most `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(max)
}

/// One witness as the task runs it.
struct Running {
    spec: WitnessSpec,
    sink: Sink,
    /// Failures in a row, and when the next attempt is due.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Start delivering to `witnesses`; the task ends when `stop` is cancelled.
pub(crate) fn spawn(
    reader: StoreReader,
    recorder: Recorder,
    signed: watch::Receiver<u64>,
    witnesses: Vec<WitnessSpec>,
    retry_max: Duration,
    instruments: StoreInstruments,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let running = witnesses
        .into_iter()
        .map(|spec| Running {
            sink: Sink::new(&spec),
            spec,
            failures: 0,
            retry_at: None,
        })
        .collect();
    tokio::spawn(run(
        reader,
        recorder,
        signed,
        running,
        retry_max,
        instruments,
        stop,
    ))
}

async fn run(
    reader: StoreReader,
    recorder: Recorder,
    mut signed: watch::Receiver<u64>,
    mut witnesses: Vec<Running>,
    retry_max: Duration,
    instruments: StoreInstruments,
    stop: CancellationToken,
) {
    loop {
        let round = Round {
            reader: &reader,
            recorder: &recorder,
            retry_max,
            instruments: &instruments,
        };
        let more = tokio::select! {
            more = round.deliver(&mut witnesses) => more,
            () = stop.cancelled() => return,
        };
        if more {
            continue;
        }
        let next_retry = witnesses.iter().filter_map(|w| w.retry_at).min();
        tokio::select! {
            () = stop.cancelled() => return,
            changed = signed.changed() => {
                if changed.is_err() {
                    // The writer is gone: nothing more will be signed.
                    return;
                }
            }
            () = sleep_until(next_retry) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Round<'r> {
    reader: &'r StoreReader,
    recorder: &'r Recorder,
    retry_max: Duration,
    instruments: &'r StoreInstruments,
}

impl Round<'_> {
    /// One pass over the witnesses that are due; whether some have more waiting at once.
    async fn deliver(&self, witnesses: &mut [Running]) -> bool {
        let states: HashMap<String, u64> = match self.reader.witness_states().await {
            Ok(states) => states
                .into_iter()
                .map(|s| (s.witness, s.delivered))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "witnesses: cannot read how far each was delivered");
                return false;
            }
        };
        let now = Instant::now();
        let mut more = false;
        for witness in witnesses.iter_mut() {
            if witness.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let mark = states.get(&witness.spec.name).copied().unwrap_or(0);
            more |= self.deliver_to(witness, mark).await;
        }
        more
    }

    /// Send `witness` what it lacks above `mark`, in order, until one fails; whether a full
    /// round was sent (more may be waiting).
    async fn deliver_to(&self, witness: &mut Running, mut mark: u64) -> bool {
        let pending = match self.reader.checkpoints_after(mark, ROUND).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, witness = %witness.spec.name, "witnesses: cannot read the checkpoints");
                return false;
            }
        };
        let full = pending.len() as i64 == ROUND;
        for checkpoint in &pending {
            let attempt = tokio::time::timeout(
                witness.spec.timeout,
                witness.sink.deliver(self.reader, mark, checkpoint),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", witness.spec.timeout)));
            let outcome = match attempt {
                Ok(delivered) => {
                    let size = delivered.size.max(checkpoint.size);
                    mark = size;
                    witness.failures = 0;
                    witness.retry_at = None;
                    self.instruments.witness_deliveries.inc();
                    Outcome::Delivered {
                        size,
                        cosignature: delivered.cosignature,
                        problem: delivered.problem,
                    }
                }
                Err(error) => {
                    witness.failures = witness.failures.saturating_add(1);
                    let wait = backoff(witness.failures, self.retry_max);
                    witness.retry_at = Some(Instant::now() + wait);
                    self.instruments.witness_failures.inc();
                    tracing::warn!(
                        witness = %witness.spec.name,
                        size = checkpoint.size,
                        %error,
                        retry_in = ?wait,
                        "witnesses: a checkpoint was not delivered; it stays queued"
                    );
                    Outcome::Failed { error }
                }
            };
            let failed = matches!(outcome, Outcome::Failed { .. });
            let update = WitnessUpdate {
                witness: witness.spec.name.clone(),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                outcome,
            };
            if let Err(error) = send_update(self.recorder, update).await {
                tracing::warn!(%error, witness = %witness.spec.name, "witnesses: cannot record a delivery");
                witness.retry_at = Some(Instant::now() + backoff(1, self.retry_max));
                return false;
            }
            if failed {
                return false;
            }
            // A witness that knows a larger size has the ones below it.
            if mark > checkpoint.size {
                return true;
            }
        }
        full
    }
}

/// Record `update` through the writer's queue; once it is on disk.
async fn send_update(recorder: &Recorder, update: WitnessUpdate) -> Result<(), StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    recorder
        .send(super::writer::Command::Witness(Box::new(
            super::writer::WitnessJob { update, reply },
        )))
        .await
        .map_err(|_| StoreError::writer_stopped())?;
    answer.await.map_err(|_| StoreError::writer_stopped())?
}

/// What a sink says of a delivered checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// The size the witness now holds (the checkpoint's, or a larger one it already had).
    pub(crate) size: u64,
    pub(crate) cosignature: Option<String>,
    /// What is still wrong though it was taken: a witness whose co-signing key is configured
    /// said it already holds this size, so this delivery brought no co-signature.
    pub(crate) problem: Option<String>,
}

impl Delivered {
    fn of(checkpoint: &StoredCheckpoint) -> Delivered {
        Delivered {
            size: checkpoint.size,
            cosignature: None,
            problem: None,
        }
    }
}

#[cfg(test)]
mod tests;
