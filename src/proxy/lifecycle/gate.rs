//! Gate: a change a `require_approval` rule holds is sent only under an approval of that exact
//! change (docs/approvals.md).
//!
//! Runs after decide, under the partner's lock and with the before-state just read, so what it
//! compares (the request's body, the state it meets, its requester) is what would be recorded
//! and forwarded. The requester's latest request for the same change decides:
//!
//! | latest request                         | the change                                      |
//! |----------------------------------------|-------------------------------------------------|
//! | approved, in its send window, same state | goes on; `record` marks the approval used     |
//! | approved, state changed since          | refused; the request is voided (`approval_voided`) |
//! | pending, in its vote window            | refused, same approval id (no second request)   |
//! | rejected (until its vote window ends)  | refused, naming who rejected it                 |
//! | used (until its send window ends)      | refused: an approval sends one change           |
//! | a window passed                        | refused; the request expires (`approval_expired`) |
//! | none, expired, void, or old            | a new request (`approval_requested`), refused   |
//!
//! A new request is the held operation's terminal event; every other refusal is a `denied`
//! event carrying the approval id.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Exit, Operation};
use crate::approvals::{
    self, Approval, ApprovalSettings, Binding, Held, HeldReason, Policy, Requester, Status, clock,
    notify, transitions,
};
use crate::audit::{ApprovalFacts, Decision, EventKind, Snapshot};
use crate::classify::Governed;
use crate::proxy::ProxyError;
use crate::rules::RuleResult;
use crate::store::approvals::{Change, Guard};
use crate::store::{Store, StoreError};

/// The approval a change is sent under: `record` marks it used with the `received` event.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    pub(crate) id: String,
    pub(crate) version: i64,
}

/// Let the change through under an approval of it, or end it: a new request, or a refusal
/// saying why the latest request does not cover it.
pub(super) async fn gate(
    settings: &ApprovalSettings,
    store: &Store,
    op: &mut Operation,
    governed: &Governed,
    held: &RuleResult,
) -> Result<(), Exit> {
    let policy_name = held
        .approval_policy
        .as_deref()
        .unwrap_or(approvals::policy::DEFAULT_POLICY);
    let Some((policy, ticket_pattern)) = settings.policy(policy_name) else {
        return Err(refuse(
            HeldReason::Required,
            format!(
                "{}This change needs approval under policy '{policy_name}', which is not \
                 configured ([approvals.policies.{policy_name}]), so it was refused.",
                because(held)
            ),
            None,
        ));
    };
    let Some(requester) = Requester::of(&op.actor) else {
        return Err(refuse(
            HeldReason::NoRequester,
            format!(
                "{}This change needs approval, but the token names no user (oid) or application \
                 (appid) to bind an approval to, so it was refused.",
                because(held)
            ),
            None,
        ));
    };
    let binding = binding(op, governed, requester);
    let now = clock::now();
    let latest = store
        .reader()
        .latest_approval_for(&binding)
        .await
        .map_err(unavailable)?;
    let previous = match latest {
        Some(a) if a.status == Status::Approved => {
            let send_deadline = a.send_deadline.unwrap_or(a.created);
            if now >= send_deadline {
                close(store, settings, &a, Status::Expired, now).await?;
                return Err(refused_for(
                    op,
                    &a,
                    HeldReason::Expired,
                    format!(
                        "Approval {} expired at {}: it was approved, but the change was not sent \
                     within the policy's send window. Send it again to ask for a new approval.",
                        a.id,
                        send_deadline.to_rfc3339()
                    ),
                ));
            }
            if a.binding.before_hash != binding.before_hash {
                close(store, settings, &a, Status::Void, now).await?;
                return Err(refused_for(
                    op,
                    &a,
                    HeldReason::Void,
                    format!(
                        "Approval {} is void: the partner's state changed since it was requested \
                     (its before-state no longer matches), so the change it approved is not \
                     this one. Send the change again to ask for a new approval.",
                        a.id
                    ),
                ));
            }
            op.approval_id = Some(a.id.clone());
            op.granted = Some(Granted {
                id: a.id,
                version: a.version,
            });
            return Ok(());
        }
        Some(a) if a.status == Status::Pending => {
            if now >= a.vote_deadline {
                close(store, settings, &a, Status::Expired, now).await?;
                return Err(refused_for(
                    op,
                    &a,
                    HeldReason::Expired,
                    format!(
                        "Approval {} expired at {} before enough approvers voted. Send the change \
                     again to ask for a new approval.",
                        a.id,
                        a.vote_deadline.to_rfc3339()
                    ),
                ));
            }
            let mut message = format!(
                "{}This change is waiting for approval {} ({} so far, until {}); it was not \
                 sent. Send it again once it is approved.",
                because(held),
                a.id,
                a.progress(),
                a.vote_deadline.to_rfc3339()
            );
            if a.binding.before_hash != binding.before_hash {
                message.push_str(
                    " Note: the partner's state changed since the request was made, so even \
                     approved it will not cover this change.",
                );
            }
            return Err(refused_for(op, &a, HeldReason::Required, message));
        }
        Some(a) if a.status == Status::Rejected && now < a.vote_deadline => {
            let by = a
                .rejection()
                .map(|v| match &v.comment {
                    Some(c) => format!(" by {}: {c}", v.principal),
                    None => format!(" by {}", v.principal),
                })
                .unwrap_or_default();
            return Err(refused_for(
                op,
                &a,
                HeldReason::Rejected,
                format!(
                    "Approval {} was rejected{by}. The same change cannot be requested again until \
                 {}.",
                    a.id,
                    a.vote_deadline.to_rfc3339()
                ),
            ));
        }
        Some(a)
            if a.status == Status::Used
                && a.send_deadline.is_some_and(|deadline| now < deadline) =>
        {
            return Err(refused_for(
                op,
                &a,
                HeldReason::Used,
                format!(
                    "Approval {} was already used{}: an approval sends one change, once.",
                    a.id,
                    a.used_by
                        .as_deref()
                        .map(|o| format!(" (operation {o})"))
                        .unwrap_or_default()
                ),
            ));
        }
        other => other,
    };
    request(
        settings,
        store,
        op,
        governed,
        held,
        policy,
        ticket_pattern,
        binding,
        previous,
        now,
    )
    .await
}

/// Make a new request for the change and end the operation with it.
#[allow(clippy::too_many_arguments)]
async fn request(
    settings: &ApprovalSettings,
    store: &Store,
    op: &mut Operation,
    governed: &Governed,
    held: &RuleResult,
    policy: &Arc<Policy>,
    ticket_pattern: Option<&regex::Regex>,
    binding: Binding,
    previous: Option<Approval>,
    now: DateTime<Utc>,
) -> Result<(), Exit> {
    let justification = explanation(op, approvals::JUSTIFICATION_HEADER)?;
    let ticket = explanation(op, approvals::TICKET_HEADER)?;
    if policy.require_justification && justification.is_none() {
        return Err(refuse(
            HeldReason::JustificationRequired,
            format!(
                "{}This change needs approval under policy '{}', which asks for a \
                 justification: send it again with the header {}.",
                because(held),
                policy.name,
                approvals::JUSTIFICATION_HEADER
            ),
            None,
        ));
    }
    if policy.require_ticket {
        let well_formed = match (&ticket, ticket_pattern) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(t), Some(re)) => re.is_match(t),
        };
        if !well_formed {
            let form = policy
                .ticket_pattern
                .as_deref()
                .map(|p| format!(" matching {p}"))
                .unwrap_or_default();
            return Err(refuse(
                HeldReason::TicketRequired,
                format!(
                    "{}This change needs approval under policy '{}', which asks for a ticket \
                     reference{form}: send it again with the header {}{}.",
                    because(held),
                    policy.name,
                    approvals::TICKET_HEADER,
                    if ticket.is_some() {
                        " in that form"
                    } else {
                        ""
                    }
                ),
                None,
            ));
        }
    }
    let before = op.before.clone().unwrap_or(Snapshot::Absent);
    let expected = crate::rules::expected_after(governed.kind, before.value(), op.body.as_ref());
    let diff = expected.as_ref().and_then(|after| {
        before
            .value()
            .map(|b| serde_json::to_value(json_patch::diff(b, after)).unwrap_or(Value::Null))
    });
    let approval = Approval {
        id: approvals::new_id(),
        operation_id: op.id.to_string(),
        created: now,
        status: Status::Pending,
        version: 1,
        policy: (**policy).clone(),
        rule: held.rule.clone(),
        binding,
        justification,
        ticket,
        vote_deadline: now + policy.vote_window(),
        send_deadline: None,
        decided: None,
        used_by: None,
        change: json!({
            "operation": crate::audit::Operation::from(governed.kind),
            "request_body": op.body,
            "before": before.value(),
            "diff": diff,
            "message": held.message,
        }),
        votes: Vec::new(),
    };
    let mut message = format!(
        "{}This change needs approval (rule '{}', policy '{}': {} approver(s), until {}). \
         Approval {} was requested; send the same change again once it is approved.",
        because(held),
        held.rule,
        policy.name,
        policy.required,
        approval.vote_deadline.to_rfc3339(),
        approval.id
    );
    if let Some(note) = previous_note(store, &approval, previous.as_ref()).await {
        message.push(' ');
        message.push_str(&note);
    }
    op.approval_id = Some(approval.id.clone());
    let mut event = op.event(EventKind::ApprovalRequested);
    event.request_body = op.body.clone();
    event.before = op.before.clone();
    event.decision = Some(Decision::Deny);
    if let Some(decided) = &op.decided {
        decided.stamp(&mut event);
    }
    event.detail = Some(message.clone());
    event.approval = Some(Box::new(requested_facts(&approval)));
    let notices = notify::notices(settings, notify::Announce::Requested, &approval, now);
    let guard = Guard {
        change: Change::Insert {
            approval: Box::new(approval.clone()),
            max_pending: i64::from(settings.max_pending_per_requester),
        },
        notices,
    };
    match store.append_guarded(guard, vec![event]).await {
        Ok(_) => {}
        // Nothing was recorded: the refusal is this operation's `denied` event.
        Err(StoreError::Conflict { .. }) => {
            op.approval_id = None;
            return Err(refuse(
                HeldReason::TooManyPending,
                format!(
                    "{}This change needs approval, but {} has {} approval requests waiting \
                     already, the most syncgate keeps for one requester: wait until approvers \
                     decide them (or they expire), then send it again.",
                    because(held),
                    approval.binding.requester.shown(),
                    settings.max_pending_per_requester
                ),
                None,
            ));
        }
        Err(error) => return Err(unavailable(error)),
    }
    Err(Exit::Held(ProxyError::Held(Held {
        reason: HeldReason::Required,
        message,
        approval_id: Some(approval.id),
    })))
}

/// Why an earlier request does not cover this change, when there is something to say: the
/// requester's previous request for it expired or was voided, or someone's approval for this
/// resource was for another body or another requester.
async fn previous_note(
    store: &Store,
    new: &Approval,
    previous: Option<&Approval>,
) -> Option<String> {
    if let Some(p) = previous {
        let what = match p.status {
            Status::Expired => "expired",
            Status::Void => "was voided by a change of the partner's state",
            Status::Rejected => "was rejected",
            Status::Used => "was used",
            _ => return None,
        };
        return Some(format!("(The earlier request {} {what}.)", p.id));
    }
    let b = &new.binding;
    let other = store
        .reader()
        .latest_approved(&b.method, &b.canonical_path)
        .await
        .ok()
        .flatten()?;
    let why = if other.binding.requester.key != b.requester.key {
        format!(
            "was granted to a different requester ({})",
            other.binding.requester.shown()
        )
    } else if other.binding.body_hash != b.body_hash {
        "was for a different request body".to_owned()
    } else {
        return None;
    };
    Some(format!(
        "(Approval {} for this resource {why}, so it does not cover this change.)",
        other.id
    ))
}

/// What a new request's event records of it.
fn requested_facts(a: &Approval) -> ApprovalFacts {
    ApprovalFacts {
        status: a.status.as_str().to_owned(),
        policy: a.policy.name.clone(),
        requester: Some(a.binding.requester.key.clone()),
        body_hash: Some(a.binding.body_hash.clone()),
        before_hash: Some(a.binding.before_hash.clone()),
        justification: a.justification.clone(),
        ticket: a.ticket.clone(),
        vote_deadline: Some(a.vote_deadline.to_rfc3339()),
        required: Some(a.policy.required),
        approvals: Some(0),
        ..ApprovalFacts::default()
    }
}

/// Expire or void request `a` at `now` (see [`transitions::close`]).
async fn close(
    store: &Store,
    settings: &ApprovalSettings,
    a: &Approval,
    to: Status,
    now: DateTime<Utc>,
) -> Result<(), Exit> {
    transitions::close(store, settings, a, to, now)
        .await
        .map_err(unavailable)
}

/// What the request is bound to.
fn binding(op: &Operation, governed: &Governed, requester: Requester) -> Binding {
    Binding {
        method: governed.method.to_string(),
        canonical_path: governed.path.to_string(),
        partner: governed.partner.as_ref().map(|p| p.as_str().to_owned()),
        body_hash: approvals::hash_json(op.body.as_ref().unwrap_or(&Value::Null)),
        before_hash: approvals::hash_state(op.before.as_ref().unwrap_or(&Snapshot::Absent)),
        requester,
    }
}

/// A justification or ticket header: at most one, text, at most [`approvals::EXPLANATION_MAX`]
/// bytes; `None` when absent or blank.
fn explanation(op: &Operation, header: &str) -> Result<Option<String>, Exit> {
    let mut values = op.headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        let reason = if header == approvals::TICKET_HEADER {
            HeldReason::TicketRequired
        } else {
            HeldReason::JustificationRequired
        };
        refuse(reason, format!("The header {header} {why}."), None)
    };
    if values.next().is_some() {
        return Err(bad("is given more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad("must be printable ASCII text"))?
        .trim();
    if text.len() > approvals::EXPLANATION_MAX {
        return Err(bad(&format!(
            "is longer than {} bytes",
            approvals::EXPLANATION_MAX
        )));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The rule's message as the first sentence of a refusal.
fn because(held: &RuleResult) -> String {
    held.message
        .as_deref()
        .map(|m| {
            let m = m.trim_end();
            if m.ends_with(['.', '!', '?']) {
                format!("{m} ")
            } else {
                format!("{m}. ")
            }
        })
        .unwrap_or_default()
}

fn refuse(reason: HeldReason, message: String, approval_id: Option<String>) -> Exit {
    Exit::refused(ProxyError::Held(Held {
        reason,
        message,
        approval_id,
    }))
}

/// A refusal about request `a`: the operation's `denied` event carries its id.
fn refused_for(op: &mut Operation, a: &Approval, reason: HeldReason, message: String) -> Exit {
    op.approval_id = Some(a.id.clone());
    refuse(reason, message, Some(a.id.clone()))
}

fn unavailable(error: StoreError) -> Exit {
    Exit::refused(ProxyError::AuditUnavailable(error))
}
