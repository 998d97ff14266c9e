//! The writer task: the one owner of the write connection, committing appends in groups.
//!
//! Why one task: the chain is a sequence. Every event's `seq` and `prev_hash` depend on the one
//! before, so appends must be serialised somewhere; doing it in a task that owns the connection
//! (rather than a mutex around it) lets that task batch. Whatever is queued when it becomes free
//! is committed as one group, in one transaction, with one fsync: under load the cost of a
//! durable write is shared by everyone waiting, and with one caller it is one transaction each.
//!
//! Every caller gets exactly one answer: its `Recorded` after the commit, or the error. A failed
//! transaction writes nothing (the backend rolls back and reads the head again next time), and the
//! task keeps serving: the next group tries again. If the task is gone, callers see
//! [`StoreError::Unavailable`] because their reply channel closes, never a hang or a panic.
//!
//! The same queue carries the admin API's read records (`admin_reads.rs`), each inserted on its
//! own after the group it arrived with, and the task publishes the last committed seq on a watch
//! channel, which long-polling readers of `/api/v1/events` wait on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot, watch};

use super::admin_reads::ReadRecord;
use super::approvals::{Guard, NoticeAttempt};
use super::chain::{Prepared, Sealed};
use super::tree::StoredCheckpoint;
use super::witness::WitnessUpdate;
use super::{StoreError, StoreOptions, StoreStats, postgres, sqlite};
use crate::audit::merkle::Frontier;
use crate::audit::note::{Checkpoint, Signer};
use crate::audit::{Event, Recorded};

/// The write connection, whichever database it is.
pub(crate) enum WriteBackend {
    Sqlite(sqlite::SqliteWriter),
    Postgres(postgres::PgWriter),
}

/// `$body` with `$w` bound to the writer, whichever database it is.
macro_rules! on_writer {
    ($backend:expr, $w:ident => $body:expr) => {
        match $backend {
            WriteBackend::Sqlite($w) => $body,
            WriteBackend::Postgres($w) => $body,
        }
    };
}

impl WriteBackend {
    /// Append `events` after the current head in one transaction; all or nothing.
    async fn append_group(&mut self, events: &[&Prepared]) -> Result<Vec<Sealed>, StoreError> {
        on_writer!(self, w => w.append_group(events).await)
    }

    /// Insert one admin read (its own statement, outside any group); the id it got.
    async fn record_read(&mut self, read: &ReadRecord) -> Result<i64, StoreError> {
        on_writer!(self, w => w.record_read(read).await)
    }

    pub(crate) async fn close(self) {
        on_writer!(self, w => w.close().await)
    }

    /// The Merkle tree as of this writer's last commit.
    fn tree(&self) -> Option<&Frontier> {
        on_writer!(self, w => w.tree())
    }

    async fn store_checkpoint(&mut self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        on_writer!(self, w => w.store_checkpoint(checkpoint).await)
    }

    async fn last_checkpoint(&mut self) -> Result<u64, StoreError> {
        on_writer!(self, w => w.last_checkpoint().await)
    }

    async fn record_witness(&mut self, update: &WitnessUpdate) -> Result<(), StoreError> {
        on_writer!(self, w => w.record_witness(update).await)
    }

    async fn record_notice(&mut self, attempt: &NoticeAttempt) -> Result<(), StoreError> {
        on_writer!(self, w => w.record_notice(attempt).await)
    }

    /// Append `events` after `guard`'s changes, in one transaction of their own.
    async fn append_guarded(
        &mut self,
        guard: &Guard,
        events: &[&Prepared],
    ) -> Result<Vec<Sealed>, StoreError> {
        on_writer!(self, w => w.append_guarded(guard, events).await)
    }

    /// Rebuild the operations index, then the Merkle tree's nodes (`audit reindex`): the seq
    /// the index reaches.
    pub(crate) async fn rebuild(&mut self) -> Result<i64, StoreError> {
        let through = on_writer!(self, w => w.rebuild_index().await)?;
        on_writer!(self, w => w.rebuild_tree().await)?;
        Ok(through)
    }
}

/// The writer's signing of checkpoints (issue 11): every `every_events` events, every `every`
/// when the tree grew, and at close, the tree as the writer's last commit left it is signed
/// (C2SP checkpoint with a `time` line) and stored in the log.
///
/// Signing here rather than in a task of its own: the writer is the one place that knows a tree
/// size and root that are committed, and an Ed25519 signature (tens of microseconds) and one
/// INSERT per thousand events do not slow its groups measurably (`benches/governed`). A failure
/// to store one is logged and counted, never passed to appenders: their events are committed.
pub(crate) struct Checkpointing {
    pub(crate) signer: Signer,
    pub(crate) every_events: u64,
    pub(crate) every: Duration,
}

struct Checkpointer {
    policy: Checkpointing,
    /// The size of the last checkpoint stored (by anyone: read at start).
    signed: u64,
}

impl Checkpointer {
    /// Sign the tree as the last commit left it, if it grew since the last checkpoint and
    /// `due` says so.
    async fn sign(
        &mut self,
        backend: &mut WriteBackend,
        counters: &Counters,
        signed: &watch::Sender<u64>,
        due: Due,
    ) {
        let Some(tree) = backend.tree() else {
            return;
        };
        let size = tree.size();
        let due = match due {
            Due::IfGrown => size > self.signed,
            Due::IfFull => size >= self.signed.saturating_add(self.policy.every_events),
        };
        if !due {
            return;
        }
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let body = Checkpoint {
            origin: self.policy.signer.name().to_owned(),
            size,
            root: tree.root(),
            extensions: vec![format!("time {time}")],
        };
        let note = match self.policy.signer.sign(&body.text()) {
            Ok(note) => note,
            Err(error) => {
                counters.instruments.checkpoint_failures.inc();
                tracing::warn!(%error, size, "audit store: cannot sign a checkpoint");
                return;
            }
        };
        let stored = StoredCheckpoint {
            size,
            root: body.root,
            time,
            note,
        };
        match backend.store_checkpoint(&stored).await {
            Ok(()) => {
                self.signed = size;
                counters.instruments.checkpoints.inc();
                // Wakes the witnesses' delivery (`witness.rs`).
                signed.send_replace(size);
            }
            Err(error) => {
                counters.instruments.checkpoint_failures.inc();
                tracing::warn!(%error, size, "audit store: cannot store a signed checkpoint");
            }
        }
    }
}

/// When a checkpoint is due.
#[derive(Clone, Copy)]
enum Due {
    /// Whenever the tree grew since the last one (the timer, the close).
    IfGrown,
    /// When `every_events` events came since the last one.
    IfFull,
}

/// One caller's event and where its answer goes.
pub(crate) struct Job {
    event: Prepared,
    reply: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// One witness delivery to record and where the answer goes.
pub(crate) struct WitnessJob {
    pub(crate) update: WitnessUpdate,
    pub(crate) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A guarded append (an approval request's change and the events recording it) and where the
/// answer goes.
pub(crate) struct GuardedJob {
    guard: Guard,
    events: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
}

/// A webhook delivery attempt to record and where the answer goes.
type NoticeJob = (Box<NoticeAttempt>, oneshot::Sender<Result<(), StoreError>>);

/// One admin read to record and where its id goes.
pub(crate) struct ReadJob {
    read: ReadRecord,
    reply: oneshot::Sender<Result<i64, StoreError>>,
}

pub(crate) enum Command {
    /// Boxed: an event is over a kilobyte, and every queue slot would be that size.
    Append(Box<Job>),
    /// Record who read the log (`admin_reads`): the same queue, so the same bound.
    Read(Box<ReadJob>),
    /// Record what a witness delivery came to (`witness.rs`).
    Witness(Box<WitnessJob>),
    /// Change the approval gate's tables and append the events that record it.
    Guarded(Box<GuardedJob>),
    /// Record a webhook delivery attempt (`approvals/notify.rs`).
    Notice(Box<NoticeAttempt>, oneshot::Sender<Result<(), StoreError>>),
    /// Commit what came before, stop, then answer.
    Close(oneshot::Sender<()>),
}

struct Counters {
    groups: AtomicU64,
    events: AtomicU64,
    instruments: StoreInstruments,
}

/// What `/metrics` shows of the writer; each store has its own (never a process-wide registry),
/// and a clone shares the values.
#[derive(Clone, Debug)]
pub(crate) struct StoreInstruments {
    /// Seconds from a caller's append to its answer: the queue wait plus the group's commit.
    pub(crate) append_seconds: Histogram,
    /// Events per committed group (transaction).
    pub(crate) group_size: Histogram,
    /// Appends answered with an error (the event is not in the log).
    pub(crate) append_failures: Counter,
    /// Checkpoints signed and stored by this writer.
    pub(crate) checkpoints: Counter,
    /// Checkpoints due that could not be signed or stored.
    pub(crate) checkpoint_failures: Counter,
    /// Checkpoints delivered to a witness, and delivery attempts that failed (the checkpoint
    /// stays queued).
    pub(crate) witness_deliveries: Counter,
    pub(crate) witness_failures: Counter,
}

impl Default for StoreInstruments {
    fn default() -> Self {
        Self {
            // 0.25 ms to about 4 s: an fsync on a fast disk to a stalled database.
            append_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            // 1 to 512 events: a lone append up to more than a full group (`max_group`).
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            append_failures: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_failures: Counter::default(),
            witness_deliveries: Counter::default(),
            witness_failures: Counter::default(),
        }
    }
}

/// The callers' side of the queue.
pub(crate) struct WriterHandle {
    queue: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    /// The seq of the last event this process committed (0 before any): long-polling readers
    /// wake on it instead of polling the database.
    head: watch::Receiver<i64>,
    /// The size of the last checkpoint this process's writer stored: the witnesses' delivery
    /// wakes on it.
    signed: watch::Receiver<u64>,
}

/// Start the writer task on the current runtime.
pub(crate) fn spawn(
    backend: WriteBackend,
    options: &StoreOptions,
    checkpointing: Option<Checkpointing>,
) -> WriterHandle {
    let (queue, commands) = mpsc::channel(options.queue_capacity.max(1));
    let counters = Arc::new(Counters {
        groups: AtomicU64::new(0),
        events: AtomicU64::new(0),
        instruments: StoreInstruments::default(),
    });
    let (committed, head) = watch::channel(0);
    let (signed_tx, signed) = watch::channel(0);
    tokio::spawn(run(
        backend,
        commands,
        Shared {
            counters: counters.clone(),
            committed,
            signed: signed_tx,
        },
        options.max_group.max(1),
        checkpointing,
    ));
    WriterHandle {
        queue,
        counters,
        head,
        signed,
    }
}

/// What the task shares with the handles.
struct Shared {
    counters: Arc<Counters>,
    committed: watch::Sender<i64>,
    signed: watch::Sender<u64>,
}

impl WriterHandle {
    pub(crate) async fn append(&self, event: Event) -> Result<Recorded, StoreError> {
        let started = Instant::now();
        let answer = self.queue_and_wait(event).await;
        let instruments = &self.counters.instruments;
        match &answer {
            Ok(_) => instruments
                .append_seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(_) => {
                instruments.append_failures.inc();
            }
        }
        answer
    }

    async fn queue_and_wait(&self, event: Event) -> Result<Recorded, StoreError> {
        // Serialise in the caller's task, so callers share that work and the writer only hashes.
        let event = Prepared::new(event).map_err(|context| StoreError::Rejected {
            context,
            source: None,
        })?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Append(Box::new(Job { event, reply })))
            .await
            .map_err(|_| StoreError::writer_stopped())?;
        answer.await.map_err(|_| StoreError::writer_stopped())?
    }

    /// Make `guard`'s change and append `events` after it, in one transaction: the events as
    /// recorded, or [`StoreError::Conflict`] when the request was not as the guard expected.
    pub(crate) async fn append_guarded(
        &self,
        guard: Guard,
        events: Vec<Event>,
    ) -> Result<Vec<Recorded>, StoreError> {
        let events = events
            .into_iter()
            .map(Prepared::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::rejected)?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Guarded(Box::new(GuardedJob {
                guard,
                events,
                reply,
            })))
            .await
            .map_err(|_| StoreError::writer_stopped())?;
        answer.await.map_err(|_| StoreError::writer_stopped())?
    }

    /// Record a webhook delivery attempt, once it is on disk.
    pub(crate) async fn record_notice(&self, attempt: NoticeAttempt) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Notice(Box::new(attempt), reply))
            .await
            .map_err(|_| StoreError::writer_stopped())?;
        answer.await.map_err(|_| StoreError::writer_stopped())?
    }

    /// Record an admin read; the id it got, once it is on disk.
    pub(crate) async fn record_read(&self, read: ReadRecord) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Command::Read(Box::new(ReadJob { read, reply })))
            .await
            .map_err(|_| StoreError::writer_stopped())?;
        answer.await.map_err(|_| StoreError::writer_stopped())?
    }

    /// The queue itself, for the witnesses' delivery to record its attempts on.
    pub(crate) fn queue(&self) -> mpsc::Sender<Command> {
        self.queue.clone()
    }

    /// Changes to the size of the last checkpoint this process's writer stored.
    pub(crate) fn signed(&self) -> watch::Receiver<u64> {
        self.signed.clone()
    }

    /// Changes to the seq of the last event committed by this process.
    pub(crate) fn head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            groups_committed: self.counters.groups.load(Ordering::Relaxed),
            events_committed: self.counters.events.load(Ordering::Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
        }
    }

    pub(crate) fn instruments(&self) -> &StoreInstruments {
        &self.counters.instruments
    }

    pub(crate) async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.queue.send(Command::Close(done)).await.is_ok() {
            // An error here means the task already stopped: nothing left to wait for.
            let _ = stopped.await;
        }
    }
}

async fn run(
    mut backend: WriteBackend,
    mut commands: mpsc::Receiver<Command>,
    shared: Shared,
    max_group: usize,
    checkpointing: Option<Checkpointing>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(max_group);
    let mut reads: Vec<ReadJob> = Vec::new();
    let mut witnessed: Vec<WitnessJob> = Vec::new();
    let mut guarded: Vec<GuardedJob> = Vec::new();
    let mut notices: Vec<NoticeJob> = Vec::new();
    let mut closers: Vec<oneshot::Sender<()>> = Vec::new();
    let mut checkpointer = match checkpointing {
        None => None,
        Some(policy) => {
            // Unknown (the database is down at start): the first checkpoint is signed on the
            // first commit or tick, and a duplicate size is kept once.
            let signed = backend.last_checkpoint().await.unwrap_or(0);
            Some(Checkpointer { policy, signed })
        }
    };
    // Never zero: tokio's interval panics on it, and config refuses it anyway.
    let period = checkpointer
        .as_ref()
        .map_or(Duration::from_secs(3600), |c| {
            c.policy.every.max(Duration::from_millis(1))
        });
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            command = commands.recv() => command,
            _ = ticker.tick(), if checkpointer.is_some() => {
                if let Some(c) = checkpointer.as_mut() {
                    c.sign(&mut backend, &shared.counters, &shared.signed, Due::IfGrown).await;
                }
                continue;
            }
        };
        // `None`: every handle was dropped without close; stop all the same.
        let Some(first) = first else {
            break;
        };
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append(job) => group.push(*job),
                Command::Read(job) => reads.push(*job),
                Command::Witness(job) => witnessed.push(*job),
                Command::Guarded(job) => guarded.push(*job),
                Command::Notice(attempt, reply) => notices.push((attempt, reply)),
                Command::Close(done) => {
                    closers.push(done);
                    break;
                }
            }
            if group.len() + reads.len() + witnessed.len() + guarded.len() + notices.len()
                < max_group
            {
                next = commands.try_recv().ok();
            }
        }
        if !group.is_empty() {
            commit(&mut backend, std::mem::take(&mut group), &shared).await;
            if let Some(c) = checkpointer.as_mut() {
                c.sign(&mut backend, &shared.counters, &shared.signed, Due::IfFull)
                    .await;
            }
        }
        for job in guarded.drain(..) {
            commit_guarded(&mut backend, job, &shared).await;
        }
        for (attempt, reply) in notices.drain(..) {
            let _ = reply.send(backend.record_notice(&attempt).await);
        }
        for job in reads.drain(..) {
            let _ = job.reply.send(backend.record_read(&job.read).await);
        }
        for job in witnessed.drain(..) {
            let _ = job.reply.send(backend.record_witness(&job.update).await);
        }
        if !closers.is_empty() {
            break;
        }
    }
    // Refuse what arrived after the close; the queue accepts nothing more from here on.
    commands.close();
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Append(job) => {
                let _ = job.reply.send(Err(StoreError::writer_stopped()));
            }
            Command::Read(job) => {
                let _ = job.reply.send(Err(StoreError::writer_stopped()));
            }
            Command::Witness(job) => {
                let _ = job.reply.send(Err(StoreError::writer_stopped()));
            }
            Command::Guarded(job) => {
                let _ = job.reply.send(Err(StoreError::writer_stopped()));
            }
            Command::Notice(_, reply) => {
                let _ = reply.send(Err(StoreError::writer_stopped()));
            }
            Command::Close(done) => closers.push(done),
        }
    }
    if let Some(c) = checkpointer.as_mut() {
        c.sign(&mut backend, &shared.counters, &shared.signed, Due::IfGrown)
            .await;
    }
    backend.close().await;
    for done in closers {
        let _ = done.send(());
    }
}

/// Commit `jobs` as one group and answer each caller.
async fn commit(backend: &mut WriteBackend, jobs: Vec<Job>, shared: &Shared) {
    let counters = &shared.counters;
    let events: Vec<&Prepared> = jobs.iter().map(|j| &j.event).collect();
    match backend.append_group(&events).await {
        Ok(sealed) => {
            if let Some(last) = sealed.last() {
                shared.committed.send_replace(last.seq);
            }
            counters.groups.fetch_add(1, Ordering::Relaxed);
            counters.instruments.group_size.observe(jobs.len() as f64);
            counters
                .events
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            for (job, sealed) in jobs.into_iter().zip(sealed) {
                answer(job, Ok(sealed));
            }
        }
        // One event the database refuses (a duplicate event id) must not sink the others with
        // it: retry them one by one, each in its own transaction. Rare, so the cost is fine.
        Err(StoreError::Rejected { .. }) if jobs.len() > 1 => {
            for job in jobs {
                let result = backend.append_group(&[&job.event]).await;
                if let Ok(sealed) = &result {
                    counters.groups.fetch_add(1, Ordering::Relaxed);
                    counters.instruments.group_size.observe(1.0);
                    counters.events.fetch_add(1, Ordering::Relaxed);
                    if let Some(last) = sealed.last() {
                        shared.committed.send_replace(last.seq);
                    }
                }
                let result = result.and_then(|sealed| {
                    sealed
                        .into_iter()
                        .next()
                        .ok_or_else(|| StoreError::Internal {
                            context: "the backend sealed no event".into(),
                            source: None,
                        })
                });
                answer(job, result);
            }
        }
        Err(error) => {
            tracing::warn!(%error, events = jobs.len(), "audit store: group not committed");
            for job in jobs {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Commit one guarded append in a transaction of its own and answer its caller.
async fn commit_guarded(backend: &mut WriteBackend, job: GuardedJob, shared: &Shared) {
    let GuardedJob {
        guard,
        events,
        reply,
    } = job;
    let prepared: Vec<&Prepared> = events.iter().collect();
    let result = backend.append_guarded(&guard, &prepared).await;
    let counters = &shared.counters;
    let result = result.map(|sealed| {
        if let Some(last) = sealed.last() {
            shared.committed.send_replace(last.seq);
            counters.groups.fetch_add(1, Ordering::Relaxed);
            counters.instruments.group_size.observe(sealed.len() as f64);
            counters
                .events
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        }
        sealed
            .into_iter()
            .zip(events)
            .map(|(s, p)| Recorded {
                seq: s.seq,
                prev_hash: s.prev_hash,
                hash: s.hash,
                event: p.event,
            })
            .collect()
    });
    if let Err(error) = &result {
        if !matches!(error, StoreError::Conflict { .. }) {
            counters.instruments.append_failures.inc();
            tracing::warn!(%error, "audit store: an approval change was not committed");
        }
    }
    let _ = reply.send(result);
}

fn answer(job: Job, result: Result<Sealed, StoreError>) {
    let Job { event, reply } = job;
    let result = result.map(|s| Recorded {
        seq: s.seq,
        prev_hash: s.prev_hash,
        hash: s.hash,
        event: event.event,
    });
    // The caller may have gone (its request was cancelled); the event is recorded regardless.
    let _ = reply.send(result);
}
