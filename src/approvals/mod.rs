//! The change-approval gate (docs/approvals.md): a change a `require_approval` rule holds becomes
//! an approval request bound to that exact change; approvers vote through the admin API; the
//! requester's identical retry is forwarded once the request is approved.
//!
//! This module is the gate's vocabulary and its decisions, with no I/O: what a request is bound
//! to ([`Binding`]), the states it goes through ([`Status`]), who may vote and when a vote
//! decides ([`Approval::tally`], [`Approval::may_vote`]), and the clock deadlines are read
//! against ([`clock`]). The store keeps requests and votes (`store/approvals.rs`) and changes
//! them only under a version check, in the same transaction as the event that records the
//! change; the proxy's gate phase (`proxy/lifecycle/gate.rs`), the admin API
//! (`admin/approvals.rs`), the sweeper (`sweeper.rs`) and the webhooks' outbox (`notify.rs`)
//! act on it.

pub(crate) mod clock;
pub(crate) mod notify;
pub(crate) mod policy;
pub(crate) mod sweeper;
#[cfg(test)]
mod tests;
pub(crate) mod transitions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::{Actor, Snapshot};
use crate::store::chain::canonical_json;
pub(crate) use policy::{ApprovalSettings, Policy};
pub use policy::{RawApprovals, RawPolicy, RawWebhook};

/// Where an approval request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Waiting for votes, until its vote deadline.
    Pending,
    /// Enough approvers said yes: the requester may send the change once, until its send
    /// deadline.
    Approved,
    /// An approver said no. One rejection decides.
    Rejected,
    /// Its vote or send deadline passed.
    Expired,
    /// The partner's state changed after it was requested: it no longer describes the change.
    Void,
    /// The approved change was sent.
    Used,
}

impl Status {
    pub(crate) const ALL: [Status; 6] = [
        Status::Pending,
        Status::Approved,
        Status::Rejected,
        Status::Expired,
        Status::Void,
        Status::Used,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Void => "void",
            Status::Used => "used",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An approver's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ballot {
    Approve,
    Reject,
}

impl Ballot {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ballot::Approve => "approve",
            Ballot::Reject => "reject",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Ballot> {
        match text {
            "approve" => Some(Ballot::Approve),
            "reject" => Some(Ballot::Reject),
            _ => None,
        }
    }
}

/// Who asked for a change: the identity a request is bound to. A delegated token is its user
/// (`oid`); an app-only token is its application (`appid`), since every caller using that app's
/// credentials is the same requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Requester {
    /// `oid:<guid>` or `appid:<guid>`: what bindings compare.
    pub(crate) key: String,
    pub(crate) oid: Option<String>,
    pub(crate) appid: Option<String>,
    /// The user's UPN or the app's display name, for people reading the request.
    pub(crate) name: Option<String>,
    /// The subject of the client certificate the request came with, when there was one.
    pub(crate) client_cert_subject: Option<String>,
}

impl Requester {
    /// The requester `actor` stands for; `None` when its token names neither an `oid` nor an
    /// `appid` (nothing to bind an approval to, and nobody to tell apart from an approver).
    pub(crate) fn of(actor: &Actor) -> Option<Requester> {
        // The rules' reading of app-only: `idtyp: app`, or (older tokens) roles and no scp.
        let app_only = crate::rules::is_app_only(actor);
        let oid = actor.oid.as_deref().map(str::to_ascii_lowercase);
        let appid = actor.appid.as_deref().map(str::to_ascii_lowercase);
        let key = match (&oid, &appid) {
            (_, Some(appid)) if app_only => format!("appid:{appid}"),
            (Some(oid), _) => format!("oid:{oid}"),
            (None, Some(appid)) => format!("appid:{appid}"),
            (None, None) => return None,
        };
        let name = if app_only {
            actor.app_displayname.clone().or_else(|| actor.upn.clone())
        } else {
            actor.upn.clone().or_else(|| actor.app_displayname.clone())
        };
        Some(Requester {
            key,
            oid,
            appid,
            name,
            client_cert_subject: actor.client_cert_subject.clone(),
        })
    }

    /// How the requester is shown: its name and key.
    pub(crate) fn shown(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.key),
            None => self.key.clone(),
        }
    }
}

/// What an approval request is bound to: one exact change, from one state, by one requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    pub(crate) method: String,
    pub(crate) canonical_path: String,
    pub(crate) partner: Option<String>,
    /// [`hash_json`] of the canonical request body (`null` when there is none).
    pub(crate) body_hash: String,
    /// [`hash_json`] of the before-state as read when the request was made.
    pub(crate) before_hash: String,
    pub(crate) requester: Requester,
}

/// `sha256:<hex>` of the canonical JSON of `value` (keys sorted, no insignificant whitespace),
/// so two bodies that mean the same hash the same however the client laid them out.
pub(crate) fn hash_json(value: &Value) -> String {
    let digest = Sha256::digest(canonical_json(value).as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

/// The hash a before-state is bound by: of its document, `null` when absent.
pub(crate) fn hash_state(state: &Snapshot) -> String {
    match state {
        Snapshot::Present { value } => hash_json(value),
        Snapshot::Absent => hash_json(&Value::Null),
        // Never bound: the before phase refuses a change whose state it cannot read.
        Snapshot::Unreadable { .. } => hash_json(&serde_json::json!({"unreadable": true})),
    }
}

/// One vote as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Vote {
    pub(crate) principal: String,
    pub(crate) oid: String,
    /// The voter's groups when it voted (what "one from each group" counts).
    pub(crate) groups: Vec<String>,
    pub(crate) ballot: Ballot,
    pub(crate) comment: Option<String>,
    pub(crate) time: DateTime<Utc>,
}

/// An approval request as stored, with its votes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Approval {
    pub(crate) id: String,
    /// The held request's operation: its events, the votes' and the expiry's share its id.
    pub(crate) operation_id: String,
    pub(crate) created: DateTime<Utc>,
    pub(crate) status: Status,
    /// Bumped by every change; a change names the version it was decided on.
    #[serde(skip)]
    pub(crate) version: i64,
    /// The policy as it was when the request was made: later edits do not move its goalposts.
    pub(crate) policy: Policy,
    /// The rule that asked for approval.
    pub(crate) rule: String,
    pub(crate) binding: Binding,
    pub(crate) justification: Option<String>,
    pub(crate) ticket: Option<String>,
    pub(crate) vote_deadline: DateTime<Utc>,
    pub(crate) send_deadline: Option<DateTime<Utc>>,
    /// When it was approved, rejected, expired, voided or used.
    pub(crate) decided: Option<DateTime<Utc>>,
    /// The operation that sent the approved change.
    pub(crate) used_by: Option<String>,
    /// What the approvers look at: the request body, the before-state, the diff the change would
    /// make and the rule's message.
    pub(crate) change: Value,
    pub(crate) votes: Vec<Vote>,
}

/// Why a principal may not vote on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoVote {
    /// Voting is over: the request is no longer pending.
    NotPending(Status),
    /// The vote deadline passed (the request is expired by this vote's attempt).
    Expired,
    /// The principal has no `oid` configured, so it cannot be told apart from the requester.
    UnknownOid,
    /// The principal is the requester.
    OwnRequest,
    /// The policy does not name the principal, nor a group it is in.
    NotAnApprover,
    /// The principal voted already; a vote counts once.
    AlreadyVoted(Ballot),
}

impl NoVote {
    pub(crate) fn message(&self, approval: &Approval, principal: &str) -> String {
        let id = &approval.id;
        match self {
            NoVote::NotPending(status) => {
                format!("approval {id} is {}: voting is over.", status.as_str())
            }
            NoVote::Expired => format!(
                "approval {id} expired at {}: nobody can vote on it any more.",
                approval.vote_deadline.to_rfc3339()
            ),
            NoVote::UnknownOid => format!(
                "principal {principal:?} has no oid in the configuration, so syncgate cannot \
                 tell it apart from the requester: it cannot vote."
            ),
            NoVote::OwnRequest => format!(
                "principal {principal:?} is the requester of approval {id}: nobody votes on \
                 their own request."
            ),
            NoVote::NotAnApprover => format!(
                "policy {:?} does not name principal {principal:?} or a group it is in as an \
                 approver.",
                approval.policy.name
            ),
            NoVote::AlreadyVoted(ballot) => format!(
                "principal {principal:?} already voted ({}) on approval {id}; a vote counts once.",
                ballot.as_str()
            ),
        }
    }
}

/// The principal as a vote sees it.
#[derive(Debug, Clone)]
pub(crate) struct Voter<'a> {
    pub(crate) name: &'a str,
    pub(crate) oid: Option<&'a str>,
    pub(crate) groups: &'a [String],
    /// The RFC 4514 subject of the principal's client certificate rule, when it has one.
    pub(crate) cert_subject: Option<String>,
}

/// What the votes so far decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tally {
    /// Not decided: `approvals` distinct approvers said yes, `missing_groups` still need one.
    Open {
        approvals: u32,
        missing_groups: Vec<String>,
    },
    Approved,
    Rejected,
}

impl Approval {
    /// Whether `voter` may vote on this request at `now`.
    pub(crate) fn may_vote(&self, voter: &Voter<'_>, now: DateTime<Utc>) -> Result<(), NoVote> {
        if self.status != Status::Pending {
            return Err(NoVote::NotPending(self.status));
        }
        if now >= self.vote_deadline {
            return Err(NoVote::Expired);
        }
        let Some(oid) = voter.oid else {
            return Err(NoVote::UnknownOid);
        };
        let requester = &self.binding.requester;
        let same_cert = matches!(
            (&voter.cert_subject, &requester.client_cert_subject),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b)
        );
        if requester.oid.as_deref() == Some(oid) || same_cert {
            return Err(NoVote::OwnRequest);
        }
        if !self.policy.names(voter.name, voter.groups) {
            return Err(NoVote::NotAnApprover);
        }
        if let Some(v) = self
            .votes
            .iter()
            .find(|v| v.principal == voter.name || v.oid == oid)
        {
            return Err(NoVote::AlreadyVoted(v.ballot));
        }
        Ok(())
    }

    /// What the votes decide under the request's policy: one rejection rejects; approval needs
    /// `required` distinct approvers and, for each of `one_from_each`, one of them in it.
    pub(crate) fn tally(&self) -> Tally {
        tally(&self.policy, &self.votes)
    }

    /// How the votes stand, for messages: "1 of 2 approvals".
    pub(crate) fn progress(&self) -> String {
        match self.tally() {
            Tally::Open {
                approvals,
                missing_groups,
            } => {
                let mut text = format!("{approvals} of {} approvals", self.policy.required);
                if !missing_groups.is_empty() {
                    text.push_str(&format!(
                        ", and one from each of {}",
                        missing_groups.join(", ")
                    ));
                }
                text
            }
            Tally::Approved => "approved".into(),
            Tally::Rejected => "rejected".into(),
        }
    }

    /// The rejection that decided, when one did.
    pub(crate) fn rejection(&self) -> Option<&Vote> {
        self.votes.iter().find(|v| v.ballot == Ballot::Reject)
    }
}

fn tally(policy: &Policy, votes: &[Vote]) -> Tally {
    if votes.iter().any(|v| v.ballot == Ballot::Reject) {
        return Tally::Rejected;
    }
    let mut voters: Vec<&str> = votes
        .iter()
        .filter(|v| v.ballot == Ballot::Approve)
        .map(|v| v.oid.as_str())
        .collect();
    voters.sort_unstable();
    voters.dedup();
    let approvals = voters.len() as u32;
    let missing_groups: Vec<String> = policy
        .one_from_each
        .iter()
        .filter(|group| {
            !votes
                .iter()
                .any(|v| v.ballot == Ballot::Approve && v.groups.contains(group))
        })
        .cloned()
        .collect();
    if approvals >= policy.required && missing_groups.is_empty() {
        Tally::Approved
    } else {
        Tally::Open {
            approvals,
            missing_groups,
        }
    }
}

/// Why the gate refused a change that needs approval: the Graph error code and status the
/// caller gets, the message, and the request it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) reason: HeldReason,
    pub(crate) message: String,
    pub(crate) approval_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeldReason {
    /// Waiting for approval (a new request, or one still pending).
    Required,
    Rejected,
    Expired,
    /// The partner's state changed since the request was made.
    Void,
    /// The approval was used already.
    Used,
    /// The policy wants a justification (`x-syncgate-justification`) and none came.
    JustificationRequired,
    /// The policy wants a ticket (`x-syncgate-ticket`), and none came or it has the wrong form.
    TicketRequired,
    /// The token names no user or application to bind the request to.
    NoRequester,
    /// The requester has as many pending requests as the gate keeps for one requester.
    TooManyPending,
}

impl HeldReason {
    /// Graph's `error.code`, and whether it is the caller's input (400) rather than a hold (403).
    pub(crate) fn code(self) -> (&'static str, http::StatusCode) {
        use http::StatusCode as S;
        match self {
            HeldReason::Required => ("SyncgateApprovalRequired", S::FORBIDDEN),
            HeldReason::Rejected => ("SyncgateApprovalRejected", S::FORBIDDEN),
            HeldReason::Expired => ("SyncgateApprovalExpired", S::FORBIDDEN),
            HeldReason::Void => ("SyncgateApprovalVoid", S::FORBIDDEN),
            HeldReason::Used => ("SyncgateApprovalUsed", S::FORBIDDEN),
            HeldReason::JustificationRequired => ("SyncgateJustificationRequired", S::BAD_REQUEST),
            HeldReason::TicketRequired => ("SyncgateTicketRequired", S::BAD_REQUEST),
            HeldReason::NoRequester => ("SyncgateApprovalRequired", S::FORBIDDEN),
            HeldReason::TooManyPending => ("SyncgateTooManyApprovalRequests", S::TOO_MANY_REQUESTS),
        }
    }
}

/// The header carrying the approval id of a held change back to the client.
pub(crate) const APPROVAL_ID_HEADER: &str = "x-syncgate-approval-id";
/// The headers a requester explains a change with.
pub(crate) const JUSTIFICATION_HEADER: &str = "x-syncgate-justification";
pub(crate) const TICKET_HEADER: &str = "x-syncgate-ticket";
/// The longest justification or ticket kept (bytes); longer ones are refused, not cut.
pub(crate) const EXPLANATION_MAX: usize = 1024;
/// The longest comment a vote keeps (characters); longer ones are refused.
pub(crate) const COMMENT_MAX: usize = 2048;

/// A new approval id: a UUIDv7, so ids sort by creation.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
