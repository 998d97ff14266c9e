//! Complete: the terminal step (pingora's `logging` phase). Every operation ends here, whichever
//! way it ended, and leaves exactly one terminal event: `completed` when the write went upstream,
//! `denied` otherwise, or `approval_requested` when the gate made an approval request of the
//! change (the gate records that one itself, in the transaction that creates the request; this
//! step only answers). It also makes the one answer the client gets, tagged with the operation's
//! id (`x-syncgate-audit-id`, and `innerError` for syncgate's own answers).
//!
//! A refusal stands even when its record cannot be written (the gap is logged); a `completed`
//! that cannot be written leaves the durable `received` for start-up recovery.

use bytes::Bytes;
use http::Response;
use http::header::HeaderValue;
use serde_json::Value;
use tracing::{info, warn};
use uuid::Uuid;

use super::forward::Answer;
use super::{Exit, Forwarded, Operation};
use crate::audit::{Decision, Effect, Event, EventKind, Snapshot};
use crate::body::{self, Body};
use crate::graph_error::RequestIds;
use crate::metrics::Metrics;
use crate::proxy::error::respond;
use crate::proxy::refusals::{self, Refusals};
use crate::proxy::{ProxyError, forward, state};
use crate::rules::Verdict;
use crate::store::Store;

/// The header carrying the operation id back to the client.
pub(crate) const AUDIT_ID_HEADER: &str = "x-syncgate-audit-id";

/// One header per rule in `warn` mode that flagged an allowed change.
pub(crate) const WARNING_HEADER: &str = "x-syncgate-warning";

/// Where terminal events go: the log, through the per-client refusal summariser.
#[derive(Clone, Copy)]
pub(crate) struct Recorder<'a> {
    /// Counts refusals for a log that was down, and effects.
    pub(crate) metrics: &'a Metrics,
    pub(crate) store: &'a Store,
    pub(crate) refusals: &'a Refusals,
}

/// End `op` as `exit` says: append its terminal event and answer.
pub(crate) async fn finish(
    recorder: Recorder<'_>,
    op: Operation,
    exit: Exit,
    ids: &RequestIds,
) -> Response<Body> {
    match exit {
        Exit::Refused(error) => refused(recorder, op, error, ids).await,
        Exit::Held(error) => held(op, error, ids),
        Exit::ReadRefusedUpstream(answer) => read_refused(recorder, op, *answer).await,
        Exit::Completed(forwarded) => {
            let Forwarded { answer, after } = *forwarded;
            completed(recorder, op, answer, after, ids).await
        }
    }
}

/// syncgate refused the operation: a `denied` event and Graph's error, carrying the id it is
/// recorded under.
async fn refused(
    recorder: Recorder<'_>,
    mut op: Operation,
    error: ProxyError,
    ids: &RequestIds,
) -> Response<Body> {
    let code = error.code();
    if matches!(error, ProxyError::AuditUnavailable(_)) {
        recorder.metrics.audit_unavailable_refusal();
    }
    let (mut graph_error, retry) = error.to_graph_error();
    let mut event = op.event(EventKind::Denied);
    event.before = op.before.take();
    event.decision = Some(Decision::Deny);
    // Rules' answers and the before-read's failure are sentences of their own; a check's refusal
    // is recorded with its code.
    event.detail = Some(match &error {
        ProxyError::PolicyViolation(_)
        | ProxyError::Held(_)
        | ProxyError::BeforeStateUnavailable { .. } => graph_error.message.clone(),
        _ => format!("{code}: {}", graph_error.message),
    });
    let recorded_as = match &error {
        // A caller Graph authenticated (the before-state was read with its token) that a rule
        // refused, or whose change the log could not take: recorded one by one, with the parsed
        // body the rules saw (bounded by `audit.max_body`), so a backtest can replay it.
        ProxyError::PolicyViolation(_) | ProxyError::Held(_) | ProxyError::AuditUnavailable(_) => {
            event.request_body = op.body.take();
            if let Some(decided) = &op.decided {
                decided.stamp(&mut event);
            }
            append(recorder, event, None).await
        }
        // Anything else is refused before Graph accepted the caller: the request is kept in
        // bounded form, and a client refused often is summarised.
        _ => {
            bounded(&op, &mut event);
            append(recorder, event, Some(code)).await
        }
    };
    info!(audit_id = %recorded_as, decision = "deny", status = graph_error.status.as_u16(), code, "refused");
    graph_error.inner_extra.insert(
        "syncgate-audit-id".into(),
        Value::String(recorded_as.to_string()),
    );
    let resp = tag(recorded_as, respond((graph_error, retry), ids));
    tag_approval(error.approval_id(), resp)
}

/// The gate made an approval request of the change and recorded it (`approval_requested`, the
/// operation's terminal event): only the answer is left, carrying both ids.
fn held(op: Operation, error: ProxyError, ids: &RequestIds) -> Response<Body> {
    let (mut graph_error, retry) = error.to_graph_error();
    info!(audit_id = %op.id, decision = "deny", status = graph_error.status.as_u16(),
        approval = error.approval_id().unwrap_or("-"), "held for approval");
    graph_error
        .inner_extra
        .insert("syncgate-audit-id".into(), Value::String(op.id.to_string()));
    let resp = tag(op.id, respond((graph_error, retry), ids));
    tag_approval(error.approval_id(), resp)
}

/// Add `x-syncgate-approval-id` when the answer is about an approval request.
fn tag_approval(approval_id: Option<&str>, mut resp: Response<Body>) -> Response<Body> {
    if let Some(v) = approval_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut()
            .insert(crate::approvals::APPROVAL_ID_HEADER, v);
    }
    resp
}

/// Graph refused the caller the before-read: its answer is relayed, and the refusal recorded.
async fn read_refused(
    recorder: Recorder<'_>,
    mut op: Operation,
    answer: Response<Bytes>,
) -> Response<Body> {
    let status = answer.status();
    let mut event = op.event(EventKind::Denied);
    event.before = op.before.take();
    event.decision = Some(Decision::Deny);
    event.detail = Some(format!(
        "the upstream refused to read the before-state ({status})"
    ));
    bounded(&op, &mut event);
    let code = format!("Upstream{}", status.as_u16());
    let recorded_as = append(recorder, event, Some(&code)).await;
    info!(audit_id = %recorded_as, decision = "deny", status = status.as_u16(), code, "refused by the upstream");
    tag(recorded_as, answer.map(body::full))
}

/// The write went upstream: a `completed` event with the answer, the after-state, the diff and
/// the effect, and the upstream's answer relayed (with the `warn` rules that flagged it).
async fn completed(
    recorder: Recorder<'_>,
    mut op: Operation,
    answer: Answer,
    after: Snapshot,
    ids: &RequestIds,
) -> Response<Body> {
    let before = op.before.take().unwrap_or(Snapshot::Absent);
    let status = answer.response.as_ref().ok().map(|r| r.status());
    let mut event = op.event(EventKind::Completed);
    let kind = op.governed.as_ref().map(|g| g.kind);
    event.effect = kind.map(|kind| state::effect(kind, op.body.as_ref(), status, &before, &after));
    event.diff = state::diff(&before, &after);
    event.request_body = op.body.take();
    event.before = Some(before);
    event.after = Some(after);
    event.decision = Some(Decision::Allow);
    if let Some(decided) = &op.decided {
        decided.stamp(&mut event);
    }
    event.upstream_status = status.map(|s| s.as_u16());
    event.request_id = answer
        .response
        .as_ref()
        .ok()
        .and_then(|r| r.headers().get("request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    event.detail = answer.response.as_ref().err().map(ToString::to_string);
    event.upstream_latency_ms = Some(answer.upstream_time.as_millis() as u64);
    event.latency_ms = Some(op.started.elapsed().as_millis() as u64);
    let effect = event.effect;
    if let Some(effect) = effect {
        recorder.metrics.effect(effect);
    }
    if let Err(error) = recorder.store.append(event).await {
        // The `received` event is on disk; the next start-up records `recovered` for it.
        warn!(%error, audit_id = %op.id, "could not record the completed event");
    }
    let governed = op.governed.as_ref();
    info!(
        audit_id = %op.id,
        route = governed.map_or("-", |g| g.kind.as_str()),
        partner = governed.and_then(|g| g.partner.as_ref()).map_or("-", |p| p.as_str()),
        decision = "allow",
        status = status.map_or(0, |s| s.as_u16()),
        effect = effect.map_or("-", Effect::as_str),
        "governed change"
    );
    let mut resp = match answer.response {
        Ok(resp) => forward::strip_response(resp).map(body::full),
        Err(error) => error.into_response(ids),
    };
    warn_headers(&op, &mut resp);
    tag(op.id, resp)
}

/// Rules in `warn` mode: the change went through, and the client can see why it was flagged.
fn warn_headers(op: &Operation, resp: &mut Response<Body>) {
    let Some(decided) = &op.decided else { return };
    let Verdict::Allow { warnings } = decided.evaluation.verdict() else {
        return;
    };
    for warning in &warnings {
        let text = format!(
            "rule '{}': {}",
            warning.rule,
            warning.message.as_deref().unwrap_or("flagged")
        );
        if let Ok(v) = HeaderValue::from_str(&text.replace(['\r', '\n'], " ")) {
            resp.headers_mut().append(WARNING_HEADER, v);
        }
    }
}

/// A refusal keeps the request in bounded form, never the whole body.
fn bounded(op: &Operation, event: &mut Event) {
    event.raw_request = Some(op.raw_request());
    event.bound_for_refusal();
}

/// Append a `denied` event, or count it into its client's summary when `code` is given and
/// the client is above the refusal rate (see [`refusals`]). Returns the operation id the refusal
/// is recorded under. The refusal stands even when it cannot be recorded; the gap is logged.
async fn append(recorder: Recorder<'_>, mut event: Event, code: Option<&str>) -> Uuid {
    let (record, recorded_as, due) = match code {
        Some(code) => {
            let a = recorder.refusals.admit(code, &mut event);
            (a.record, a.operation_id, a.due)
        }
        None => (true, event.operation_id.uuid(), Vec::new()),
    };
    let operation_id = event.operation_id;
    refusals::record_summaries(recorder.store, due).await;
    if record && let Err(error) = recorder.store.append(event).await {
        warn!(%error, audit_id = %operation_id, "could not record a refusal");
    }
    recorded_as
}

/// Add `x-syncgate-audit-id: <operation_id>` to a response.
pub(crate) fn tag(operation_id: Uuid, mut resp: Response<Body>) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&operation_id.to_string()) {
        resp.headers_mut().insert(AUDIT_ID_HEADER, v);
    }
    resp
}
