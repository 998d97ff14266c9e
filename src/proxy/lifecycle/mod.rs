//! The governed lifecycle (docs/design.md "Lifecycle"), as named phases over one per-operation
//! context ([`Operation`]), the way pingora runs a request through its phases:
//!
//! | phase    | module        | what it does                                         | needs      |
//! |----------|---------------|------------------------------------------------------|------------|
//! | read     | [`read`]      | parse the body strictly, bind the partner            | —          |
//! | lock     | `locks`       | one change per partner in all replicas, until after  | locks      |
//! | before   | [`before`]    | read the state the change meets; drift               | upstream, store |
//! | decide   | [`decide`]    | run the local rules                                  | rules      |
//! | gate     | [`gate`]      | a held change: its approval, or a request for one    | store      |
//! | record   | [`record`]    | `received`, durable before anything goes upstream    | store      |
//! | forward  | [`forward`]   | send the rebuilt write                               | upstream   |
//! | after    | [`after`]     | read the state the change left                       | upstream   |
//! | complete | [`complete`]  | the one terminal event and the answer                | store      |
//!
//! Each phase gets only what it needs; a phase that ends the operation returns an [`Exit`], and
//! [`Proxy::change`] hands every exit, success or not, to the terminal step, so every governed
//! operation leaves exactly one terminal event (`completed`, `denied`, or `approval_requested`
//! for a change the gate turned into an approval request). The invariants that
//! make the log trustworthy follow from the order: what is recorded is what was parsed and is
//! what is forwarded; the lock spans before to after; `received` is durable before the write.

mod after;
mod before;
pub(crate) mod complete;
pub(crate) mod decide;
mod forward;
pub(crate) mod gate;
mod operation;
mod read;
mod record;

use bytes::Bytes;
use http::Response;

use super::{Proxy, ProxyError};
use crate::audit::Snapshot;
use crate::body::Body;
use crate::graph_error::RequestIds;
use crate::server::ConnInfo;
pub(crate) use complete::{Recorder, finish};
pub(crate) use operation::{Operation, Received, following};
pub(crate) use read::bind_partner;

/// How an operation ended: what the terminal step records and answers.
pub(crate) enum Exit {
    /// syncgate refused it (a check, the before-read, a rule, the log); nothing was forwarded.
    /// Recorded as `denied`.
    Refused(ProxyError),
    /// The gate made an approval request of the change: its terminal event
    /// (`approval_requested`) is recorded already; the refusal is only answered.
    Held(ProxyError),
    /// Graph refused the caller the before-read; its answer is relayed. Recorded as `denied`.
    ReadRefusedUpstream(Box<Response<Bytes>>),
    /// The write went upstream: its answer (or failure) and the after-state. Recorded as
    /// `completed`.
    Completed(Box<Forwarded>),
}

/// A write that went upstream: its answer (or failure) and the after-state.
pub(crate) struct Forwarded {
    pub(crate) answer: forward::Answer,
    pub(crate) after: Snapshot,
}

impl Exit {
    pub(crate) fn refused(error: impl Into<ProxyError>) -> Self {
        Exit::Refused(error.into())
    }
}

/// Every way a governed operation can end, for the test that drives each one and counts its
/// terminal events (`tests/api/lifecycle.rs`). Not used by the proxy itself.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// The classifier refused it (bad path, forbidden method, ...).
    Unclassifiable,
    /// The body could not be read (too large, stalled, broken).
    BodyUnreadable,
    /// The body failed the strict parse or named another partner.
    BadBody,
    /// Graph refused the caller the before-read.
    ReadRefusedUpstream,
    /// The before-state could not be read.
    BeforeStateUnavailable,
    /// A rule denied it.
    PolicyViolation,
    /// A rule requires approval.
    ApprovalRequired,
    /// The log could not take `received`.
    AuditUnavailable,
    /// The write went upstream and Graph answered.
    Completed,
    /// The write went upstream and failed there.
    CompletedWithUpstreamFailure,
}

impl ExitKind {
    pub const ALL: [ExitKind; 10] = [
        ExitKind::Unclassifiable,
        ExitKind::BodyUnreadable,
        ExitKind::BadBody,
        ExitKind::ReadRefusedUpstream,
        ExitKind::BeforeStateUnavailable,
        ExitKind::PolicyViolation,
        ExitKind::ApprovalRequired,
        ExitKind::AuditUnavailable,
        ExitKind::Completed,
        ExitKind::CompletedWithUpstreamFailure,
    ];
}

impl Proxy {
    /// Run one governed change to its end; always answers (Graph-shaped errors carrying the
    /// operation's id when syncgate refused it).
    pub(crate) async fn change(
        &self,
        mut op: Operation,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let exit = match self.run(&mut op, conn).await {
            Ok(exit) | Err(exit) => exit,
        };
        finish(self.recorder(), op, exit, ids).await
    }

    /// The phases, in order; the first to end the operation returns its exit.
    async fn run(&self, op: &mut Operation, conn: &ConnInfo) -> Result<Exit, Exit> {
        let governed = read::read(op)?;
        let state_path = op.state_path.clone().unwrap_or_default();
        // A lock that cannot be had across replicas (PostgreSQL down) ends the change like a log
        // that cannot take `received`: 503, nothing forwarded.
        let key = lock_key(&governed, &state_path);
        let lock = self.governor.locks.lock(&key).await;
        op.lock = Some(lock.map_err(|e| Exit::refused(ProxyError::AuditUnavailable(e)))?);
        before::read(&self.upstream, op, &state_path).await?;
        if before::record_drift(&self.governor.store, op, &state_path).await {
            self.governor.metrics.drift_detected();
        }
        let rules = self.governor.rules.current();
        let partner_state =
            before::partner_document(&self.upstream, op, &governed, rules.needs_partner_state())
                .await;
        let decided = decide::decide(&rules, op, &governed, partner_state);
        if let Some(decided) = &op.decided {
            self.governor.metrics.decided(&decided.evaluation);
        }
        if let Some(held) = decided? {
            let (store, approvals) = (&self.governor.store, &*self.governor.approvals);
            let gated = gate::gate(approvals, store, op, &governed, &held).await;
            if gated.is_err() {
                // A new request, an expiry or a voiding may have written notices: send them now
                // rather than at the delivery task's next look.
                self.governor.notify.notify_one();
            }
            gated?;
        }
        record::received(&self.governor.store, op).await?;
        let answer = forward::write(&self.upstream, conn, op, &governed).await;
        let after = after::read(&self.upstream, op, &state_path).await;
        Ok(Exit::Completed(Box::new(Forwarded { answer, after })))
    }

    /// Where terminal events go.
    pub(crate) fn recorder(&self) -> Recorder<'_> {
        Recorder {
            metrics: &self.governor.metrics,
            store: &self.governor.store,
            refusals: &self.governor.refusals,
        }
    }
}

/// The key that serialises changes to one resource: the partner (or the template), else the
/// state path.
fn lock_key(governed: &crate::classify::Governed, state_path: &str) -> String {
    governed.lock_key().unwrap_or_else(|| state_path.to_owned())
}
