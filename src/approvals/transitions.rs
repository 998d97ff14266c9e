//! The changes to a request after it was made, each with the event that records it and the
//! notices that announce it, written together ([`Store::append_guarded`]): a vote, an expiry
//! or a voiding. Each is decided on the request as read and written only if it is still that
//! version; a vote that meets a changed request reads it again and decides again.

use chrono::{DateTime, Utc};

use super::notify::{self, Announce};
use super::{Approval, ApprovalSettings, Ballot, NoVote, Status, Tally, Vote, Voter, clock};
use crate::audit::{ApprovalFacts, Event, EventKind};
use crate::store::approvals::{Change, Decided, Guard};
use crate::store::{Store, StoreError};

/// An event about request `a`, under its held operation's id and with the request's subject.
pub(crate) fn event(a: &Approval, kind: EventKind, status: Status, detail: String) -> Event {
    let operation_id = uuid::Uuid::parse_str(&a.operation_id).unwrap_or_else(|_| uuid::Uuid::nil());
    let mut event = Event::new(operation_id, kind);
    let b = &a.binding;
    event.method = b.method.clone();
    event.canonical_path = b.canonical_path.clone();
    let version = b
        .canonical_path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    event.api_version = version.into();
    event.partner_tenant_id = b.partner.as_deref().and_then(|p| p.parse().ok());
    // The held change's kind (`sync_create`, ...), so the request's events read as its own.
    if let Some(operation) = a
        .change
        .get("operation")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
    {
        event.operation = operation;
    }
    event.approval_id = Some(a.id.clone());
    event.detail = Some(detail);
    event.approval = Some(Box::new(ApprovalFacts {
        status: status.as_str().to_owned(),
        policy: a.policy.name.clone(),
        requester: Some(b.requester.key.clone()),
        ..ApprovalFacts::default()
    }));
    event
}

/// Expire or void request `a` at `now`: its status and an `approval_expired` or
/// `approval_voided` event under the held operation's id, with notices. A request someone else
/// changed first is left as they left it.
pub(crate) async fn close(
    store: &Store,
    settings: &ApprovalSettings,
    a: &Approval,
    to: Status,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let kind = if to == Status::Void {
        EventKind::ApprovalVoided
    } else {
        EventKind::ApprovalExpired
    };
    let detail = match (to, a.status) {
        (Status::Void, _) => format!(
            "approval {} voided: the partner's state changed since it was requested",
            a.id
        ),
        (_, Status::Approved) => format!(
            "approval {} expired: the approved change was not sent within the send window",
            a.id
        ),
        _ => format!(
            "approval {} expired: not decided within the vote window ({})",
            a.id,
            a.progress()
        ),
    };
    let event = event(a, kind, to, detail);
    let mut closed = a.clone();
    closed.status = to;
    closed.decided = Some(now);
    let guard = Guard {
        change: Change::Status {
            id: a.id.clone(),
            version: a.version,
            from: a.status,
            decided: Decided {
                status: to,
                at: now,
                send_deadline: None,
                used_by: None,
            },
        },
        notices: notify::notices(settings, Announce::Decided, &closed, now),
    };
    match store.append_guarded(guard, vec![event]).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a vote was not counted.
#[derive(Debug)]
pub(crate) enum VoteError {
    NotFound,
    /// The principal may not vote (the message says why).
    Refused(NoVote, String),
    Store(StoreError),
}

/// The most times a vote is decided again after meeting a request changed under it.
const VOTE_ATTEMPTS: usize = 5;

/// Count `voter`'s `ballot` on request `id`: the request as it stands after the vote.
pub(crate) async fn vote(
    store: &Store,
    settings: &ApprovalSettings,
    voter: &Voter<'_>,
    id: &str,
    ballot: Ballot,
    comment: Option<String>,
) -> Result<Approval, VoteError> {
    let mut last = None;
    for _ in 0..VOTE_ATTEMPTS {
        let a = store
            .reader()
            .approval(id)
            .await
            .map_err(VoteError::Store)?
            .ok_or(VoteError::NotFound)?;
        let now = clock::now();
        if let Err(no) = a.may_vote(voter, now) {
            if no == NoVote::Expired {
                close(store, settings, &a, Status::Expired, now)
                    .await
                    .map_err(VoteError::Store)?;
            }
            let message = no.message(&a, voter.name);
            return Err(VoteError::Refused(no, message));
        }
        let vote = Vote {
            principal: voter.name.to_owned(),
            oid: voter.oid.unwrap_or_default().to_owned(),
            groups: voter.groups.to_vec(),
            ballot,
            comment: comment.clone(),
            time: now,
        };
        let mut after = a.clone();
        after.votes.push(vote.clone());
        after.version += 1;
        let decided = match after.tally() {
            Tally::Approved => Some(Decided {
                status: Status::Approved,
                at: now,
                send_deadline: Some(now + a.policy.send_window()),
                used_by: None,
            }),
            Tally::Rejected => Some(Decided {
                status: Status::Rejected,
                at: now,
                send_deadline: None,
                used_by: None,
            }),
            Tally::Open { .. } => None,
        };
        if let Some(d) = &decided {
            after.status = d.status;
            after.decided = Some(now);
            after.send_deadline = d.send_deadline;
        }
        let approvals = after
            .votes
            .iter()
            .filter(|v| v.ballot == Ballot::Approve)
            .count() as u32;
        let detail = format!(
            "{} voted {} on approval {} ({})",
            voter.name,
            ballot.as_str(),
            a.id,
            after.progress()
        );
        let mut event = event(&a, EventKind::ApprovalVote, after.status, detail);
        if let Some(facts) = event.approval.as_deref_mut() {
            facts.principal = Some(voter.name.to_owned());
            facts.ballot = Some(ballot.as_str().to_owned());
            facts.comment = comment.clone();
            facts.approvals = Some(approvals);
            facts.required = Some(a.policy.required);
            facts.send_deadline = after.send_deadline.map(|t| t.to_rfc3339());
        }
        event.actor.oid = Some(vote.oid.clone());
        let notices = if decided.is_some() {
            notify::notices(settings, Announce::Decided, &after, now)
        } else {
            Vec::new()
        };
        let guard = Guard {
            change: Change::Vote {
                id: a.id.clone(),
                version: a.version,
                vote,
                decided,
            },
            notices,
        };
        match store.append_guarded(guard, vec![event]).await {
            Ok(_) => return Ok(after),
            Err(StoreError::Conflict { context }) => last = Some(context),
            Err(e) => return Err(VoteError::Store(e)),
        }
    }
    Err(VoteError::Store(StoreError::Conflict {
        context: last.unwrap_or_else(|| format!("approval {id} kept changing")),
    }))
}
