//! The governed lifecycle (DESIGN.md): read → lock → before → decide → record → forward → after →
//! complete, in one function, [`Proxy::change`], so the order that makes the log trustworthy is
//! visible in one place:
//!
//! - the body is read whole (bounded) and parsed strictly *before* anything else, so what is
//!   recorded is exactly what is forwarded;
//! - the partner's lock is held from the before-read to the after-read, so the recorded before
//!   and after belong to this change alone;
//! - the `received` event is durable *before* the write goes upstream; if the store cannot write,
//!   the change is refused with 503 and nothing is sent;
//! - the `completed` event records the upstream's answer, the after-state, the diff and whether the
//!   after-state shows what was asked (intent versus effect).

use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tracing::{info, warn};
use uuid::Uuid;

use super::decide::Decided;
use super::{Proxy, ProxyError, forward, state};
use crate::audit::{Actor, Decision, Event, EventKind, RawRequest, Snapshot};
use crate::body::{self, Body};
use crate::classify::{self, Governed, OperationKind, Refusal};
use crate::graph::documented_path;
use crate::graph_error::{GraphError, RequestIds};
use crate::rules::Verdict;
use crate::server::ConnInfo;

/// The header carrying the operation id back to the client.
pub(crate) const AUDIT_ID_HEADER: &str = "x-syncgate-audit-id";

/// One header per rule in `warn` mode that flagged an allowed change.
pub(crate) const WARNING_HEADER: &str = "x-syncgate-warning";

/// Largest upstream response to a governed write that is relayed (they are empty or small JSON).
const MAX_WRITE_RESPONSE: usize = 4 * 1024 * 1024;

/// A governed request whose body has been read.
pub(crate) struct ChangeRequest {
    pub(crate) governed: Governed,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) actor: Actor,
    /// The request target as received (a `$batch` sub-request's `url`), for refusal records.
    pub(crate) target: String,
}

/// A refused request as syncgate received it: its `denied` event keeps the method, and the
/// target and body in bounded form ([`RawRequest`]), never the whole body.
pub(crate) struct Received<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    body: Option<std::borrow::Cow<'a, [u8]>>,
}

impl<'a> Received<'a> {
    /// `body` is `None` when it was not read (refused on the head, or while reading).
    pub(crate) fn new(method: &'a str, target: &'a str, body: Option<&'a [u8]>) -> Self {
        Received {
            method,
            target,
            body: body.map(std::borrow::Cow::Borrowed),
        }
    }

    /// A `$batch` sub-request: its `url` as sent, and its body as the batch carried it
    /// (serialised back to JSON: the bytes hashed are that serialisation).
    pub(crate) fn sub_request(method: &'a str, url: &'a str, body: Option<&Value>) -> Self {
        Received {
            method,
            target: url,
            body: body.map(|v| std::borrow::Cow::Owned(serde_json::to_vec(v).unwrap_or_default())),
        }
    }

    fn raw(&self) -> RawRequest {
        RawRequest::new(self.target, self.body.as_deref())
    }
}

impl Proxy {
    /// Run one governed change; always answers (errors become Graph-shaped responses carrying the
    /// audit id).
    pub(crate) async fn change(
        &self,
        operation_id: Uuid,
        req: ChangeRequest,
        conn: &ConnInfo,
        ids: &RequestIds,
    ) -> Response<Body> {
        let started = Instant::now();
        let ChangeRequest {
            mut governed,
            headers,
            body,
            actor,
            target,
        } = req;
        let audit = Audit::new(operation_id, &actor, &headers);
        let method = governed.method.clone();
        let received = Received::new(method.as_str(), &target, Some(&body));

        // read: strict JSON and the partner key. Every partner POST/PATCH is governed, not only
        // those touching sync: the partner document is one recorded resource, and a write to it
        // that went unrecorded would show up as drift on the next governed change.
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let json =
            match classify::parse_body(governed.body, governed.path.version, content_type, &body)
                .and_then(|json| bind_partner(&mut governed, json))
            {
                Ok(json) => json,
                Err(refusal) => {
                    return self
                        .refuse(&audit, Some(&governed), received, refusal, ids)
                        .await;
                }
            };
        let Some(state_path) = governed.state_path() else {
            let refusal = Refusal::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The request names no partner tenant.",
            );
            return self
                .refuse(&audit, Some(&governed), received, refusal, ids)
                .await;
        };

        // lock → before
        let lock_key = governed.lock_key().unwrap_or_else(|| state_path.clone());
        let _lock = self.governor.locks.lock(&lock_key).await;
        let auth = state::authorization(&headers);
        let before = state::read(&self.upstream, &state_path, auth).await;
        if let Some(refused) = before.refused {
            // Graph refused the caller even a read: relay its answer, nothing else is sent.
            let detail = format!(
                "the upstream refused to read the before-state ({})",
                refused.status()
            );
            let code = format!("Upstream{}", refused.status().as_u16());
            let recorded_as = self
                .record_denied(
                    &audit,
                    &governed,
                    &received,
                    Some(before.snapshot),
                    &state_path,
                    (&code, detail),
                )
                .await;
            return tag(recorded_as, refused.map(body::full));
        }
        if let Snapshot::Unreadable { error, .. } = &before.snapshot {
            let refusal = before_state_unavailable(error, before.error);
            let detail = refusal.message.clone();
            let recorded_as = self
                .record_denied(
                    &audit,
                    &governed,
                    &received,
                    Some(before.snapshot.clone()),
                    &state_path,
                    (refusal.code, detail),
                )
                .await;
            let mut resp = refusal.into_graph_error().into_response(ids);
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("5"));
            return tag(recorded_as, resp);
        }
        let before = before.snapshot;
        self.record_drift(&audit, &governed, &state_path, &before)
            .await;

        // decide
        let decided = self
            .decide(&governed, json.as_ref(), &before, &actor, auth)
            .await;
        let verdict = match decided.evaluation.verdict() {
            Verdict::Allow { warnings } => Ok(warnings),
            Verdict::Deny(result) => Err((
                "SyncgatePolicyViolation",
                result
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("rule '{}' refused the change", result.rule)),
            )),
            // The approval gate arrives with a later issue; until then such a change is refused.
            Verdict::NeedsApproval(result) => Err((
                "SyncgateApprovalRequired",
                format!(
                    "{} This change needs approval (rule '{}'), and syncgate's approval gate is not enabled yet, so it was refused.",
                    result.message.clone().unwrap_or_default(),
                    result.rule
                ),
            )),
        };
        let warnings = match verdict {
            Ok(warnings) => warnings,
            Err((code, message)) => {
                return self
                    .deny_by_rule(
                        &audit,
                        &governed,
                        json,
                        before,
                        &state_path,
                        &decided,
                        code,
                        message,
                        ids,
                    )
                    .await;
            }
        };
        let decision = Decision::Allow;

        // record `received`, durably, before anything goes upstream.
        let mut received = audit.event(EventKind::Received, &governed, &state_path);
        received.request_body = json.clone();
        received.before = Some(before.clone());
        received.decision = Some(decision);
        decided.stamp(&mut received);
        if let Err(error) = self.governor.store.append(received).await {
            warn!(%error, audit_id = %operation_id, "audit log unavailable; change refused");
            return audit.tag(audit_unavailable(ids));
        }

        // forward
        let sent = Instant::now();
        let write = write_request(&self.upstream, &governed, &headers, json.as_ref(), conn);
        let outcome = match write {
            Ok(req) => match self.upstream.send(req).await {
                Ok(resp) => {
                    let (parts, incoming) = resp.into_parts();
                    match Limited::new(incoming, MAX_WRITE_RESPONSE).collect().await {
                        Ok(c) => Ok(Response::from_parts(parts, c.to_bytes())),
                        Err(e) => Err(ProxyError::UpstreamBody(e.to_string())),
                    }
                }
                Err(e) => Err(ProxyError::Upstream(e)),
            },
            Err(e) => Err(e),
        };
        let upstream_ms = sent.elapsed().as_millis() as u64;

        // after → complete
        let after = state::read(&self.upstream, &state_path, auth)
            .await
            .snapshot;
        let status = outcome.as_ref().ok().map(|r| r.status());
        let mut completed = audit.event(EventKind::Completed, &governed, &state_path);
        completed.effect = Some(state::effect(
            governed.kind,
            json.as_ref(),
            status,
            &before,
            &after,
        ));
        completed.diff = state::diff(&before, &after);
        completed.request_body = json;
        completed.before = Some(before);
        completed.after = Some(after);
        completed.decision = Some(decision);
        decided.stamp(&mut completed);
        completed.upstream_status = status.map(|s| s.as_u16());
        completed.request_id = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("request-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        completed.detail = outcome.as_ref().err().map(ToString::to_string);
        completed.upstream_latency_ms = Some(upstream_ms);
        completed.latency_ms = Some(started.elapsed().as_millis() as u64);
        let effect = completed.effect;
        if let Err(error) = self.governor.store.append(completed).await {
            // The `received` event is on disk; the next start-up records `recovered` for it.
            warn!(%error, audit_id = %operation_id, "could not record the completed event");
        }
        info!(
            audit_id = %operation_id,
            route = governed.kind.as_str(),
            partner = governed.partner.as_ref().map(|p| p.as_str()).unwrap_or("-"),
            decision = decision.as_str(),
            status = status.map(|s| s.as_u16()).unwrap_or(0),
            effect = ?effect,
            "governed change"
        );
        let mut resp = match outcome {
            Ok(resp) => forward::strip_response(resp).map(body::full),
            Err(error) => error.into_response(ids),
        };
        // Rules in `warn` mode: the change went through, and the client can see why it was flagged.
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
        audit.tag(resp)
    }

    /// Refuse a change a rule denied: a `denied` event with every rule's result and the rules'
    /// version, and a 403 in Graph's shape naming the rule.
    ///
    /// Unlike other refusals it keeps the parsed body (`request_body`): that is what the rules
    /// saw, a backtest replays it, and it is bounded by `audit.max_body` and comes from a caller
    /// Graph authenticated (the before-state was read with the caller's token). For the same
    /// reason rule denials are recorded one by one, never summarised.
    #[allow(clippy::too_many_arguments)]
    async fn deny_by_rule(
        &self,
        audit: &Audit,
        governed: &Governed,
        json: Option<Value>,
        before: Snapshot,
        state_path: &str,
        decided: &Decided,
        code: &'static str,
        message: String,
        ids: &RequestIds,
    ) -> Response<Body> {
        let mut event = audit.denied(governed, Some(before), state_path, message.clone());
        event.request_body = json;
        decided.stamp(&mut event);
        let error = GraphError::new(StatusCode::FORBIDDEN, code, message);
        self.record_refusal(audit, event, None).await;
        self.answer_refusal(audit.operation_id, error, ids)
    }

    /// Refuse a request (bad input, unknown governed path, ...), recording a `denied` event with
    /// the method and the bounded request as `received` (never the whole body).
    pub(crate) async fn refuse(
        &self,
        audit: &Audit,
        governed: Option<&Governed>,
        received: Received<'_>,
        refusal: Refusal,
        ids: &RequestIds,
    ) -> Response<Body> {
        let mut event = match governed {
            Some(g) => audit.event(EventKind::Denied, g, &g.state_path().unwrap_or_default()),
            None => {
                let mut e = Event::new(audit.operation_id, EventKind::Denied);
                e.actor = audit.actor.clone();
                e.client_request_id = audit.client_request_id.clone();
                e.method = received.method.to_owned();
                e.canonical_path = refusal.canonical.clone().unwrap_or_default();
                e.operation = "unknown".into();
                e
            }
        };
        event.raw_request = Some(received.raw());
        event.decision = Some(Decision::Deny);
        event.detail = Some(format!("{}: {}", refusal.code, refusal.message));
        event.bound_for_refusal();
        let recorded_as = self.record_refusal(audit, event, Some(refusal.code)).await;
        self.answer_refusal(recorded_as, refusal.into_graph_error(), ids)
    }

    /// Answer with `error`, carrying the id of the operation the refusal is recorded under
    /// (header and `innerError`). The refusal stands even when the record could not be written.
    fn answer_refusal(
        &self,
        recorded_as: Uuid,
        mut error: GraphError,
        ids: &RequestIds,
    ) -> Response<Body> {
        info!(audit_id = %recorded_as, decision = "deny", status = error.status.as_u16(), code = %error.code, "refused");
        error.inner_extra.insert(
            "syncgate-audit-id".into(),
            Value::String(recorded_as.to_string()),
        );
        tag(recorded_as, error.into_response(ids))
    }

    /// A refusal once the before-state was met (Graph refused the caller the read, or the read
    /// failed), with its error code and detail: recorded with the bounded request, not the parsed
    /// body, since the caller may be one Graph does not accept. Returns the operation id it is
    /// recorded under.
    async fn record_denied(
        &self,
        audit: &Audit,
        governed: &Governed,
        received: &Received<'_>,
        before: Option<Snapshot>,
        state_path: &str,
        (code, detail): (&str, String),
    ) -> Uuid {
        let mut event = audit.denied(governed, before, state_path, detail);
        event.raw_request = Some(received.raw());
        event.bound_for_refusal();
        self.record_refusal(audit, event, Some(code)).await
    }

    /// Append a `denied` event, or count it into its client's summary when `code` is given and
    /// the client is above the refusal rate (see [`super::refusals`]). Returns the operation id
    /// the refusal is recorded under. The refusal stands even when it cannot be recorded; the gap
    /// is logged.
    async fn record_refusal(&self, audit: &Audit, mut event: Event, code: Option<&str>) -> Uuid {
        let (record, recorded_as, due) = match code {
            Some(code) => {
                let a = self.governor.refusals.admit(code, &mut event);
                (a.record, a.operation_id, a.due)
            }
            None => (true, event.operation_id.uuid(), Vec::new()),
        };
        self.record_summaries(due).await;
        if record && let Err(error) = self.governor.store.append(event).await {
            warn!(%error, audit_id = %audit.operation_id, "could not record a refusal");
        }
        recorded_as
    }

    /// A `drift` event when the before-state differs from the last after-state recorded for the
    /// same resource: something changed it without going through syncgate.
    async fn record_drift(
        &self,
        audit: &Audit,
        governed: &Governed,
        state_path: &str,
        before: &Snapshot,
    ) {
        let last = match self.governor.store.last_after(state_path).await {
            Ok(Some(last)) => last,
            Ok(None) => return,
            Err(error) => {
                warn!(%error, "could not read the last recorded state; drift not checked");
                return;
            }
        };
        if last.value().is_none() || last.value() == before.value() {
            return;
        }
        let mut drift = audit.event(EventKind::Drift, governed, state_path);
        drift.diff = state::diff(&last, before);
        drift.before = Some(last);
        drift.after = Some(before.clone());
        drift.detail = Some(
            "the state changed since syncgate last recorded it (a change made around the proxy)"
                .into(),
        );
        if let Err(error) = self.governor.store.append(drift).await {
            warn!(%error, "could not record drift");
        }
    }
}

/// Per-operation context shared by its events.
pub(crate) struct Audit {
    pub(crate) operation_id: Uuid,
    pub(crate) actor: Actor,
    /// The caller's `client-request-id`, when it sent one.
    client_request_id: Option<String>,
}

impl Audit {
    pub(crate) fn new(operation_id: Uuid, actor: &Actor, headers: &HeaderMap) -> Self {
        Self {
            operation_id,
            actor: actor.clone(),
            client_request_id: headers
                .get("client-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// An event of this operation about `governed`, with the common fields filled.
    pub(crate) fn event(&self, kind: EventKind, governed: &Governed, state_path: &str) -> Event {
        let state_path = (!state_path.is_empty()).then_some(state_path);
        let mut e = Event::governed(self.operation_id, kind, governed, state_path);
        e.actor = self.actor.clone();
        e.client_request_id = self.client_request_id.clone();
        e
    }

    /// A `denied` event of this operation: what was asked, the state it met, and why it was
    /// refused. The caller adds what it keeps of the request (`raw_request` or `request_body`).
    pub(crate) fn denied(
        &self,
        governed: &Governed,
        before: Option<Snapshot>,
        state_path: &str,
        detail: String,
    ) -> Event {
        let mut event = self.event(EventKind::Denied, governed, state_path);
        event.before = before;
        event.decision = Some(Decision::Deny);
        event.detail = Some(detail);
        event
    }

    /// Add `x-syncgate-audit-id` to a response.
    pub(crate) fn tag(&self, resp: Response<Body>) -> Response<Body> {
        tag(self.operation_id, resp)
    }
}

/// Add `x-syncgate-audit-id: <operation_id>` to a response.
fn tag(operation_id: Uuid, mut resp: Response<Body>) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&operation_id.to_string()) {
        resp.headers_mut().insert(AUDIT_ID_HEADER, v);
    }
    resp
}

/// For a partner POST the key is in the body; for sync writes a `tenantId` in the body must name
/// the partner in the URL.
pub(crate) fn bind_partner(
    governed: &mut Governed,
    json: Option<Value>,
) -> Result<Option<Value>, Refusal> {
    if let Some(body) = &json {
        match governed.kind {
            OperationKind::PartnerCreate => {
                governed.partner = Some(classify::partner_from_body(body)?)
            }
            _ => {
                if let Some(partner) = &governed.partner {
                    classify::check_body_tenant(body, partner)?;
                }
            }
        }
    }
    if governed.kind == OperationKind::PartnerCreate && governed.partner.is_none() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Creating a partner needs a body with its tenantId.",
        ));
    }
    Ok(json)
}

/// The governed write as it goes upstream, rebuilt from what was decided and recorded: the
/// documented path for the canonical route, the allowed headers only, and the strictly parsed
/// body re-serialised (none for [`classify::BodyRule::Empty`]). The client's own bytes never go
/// up, so an upstream cannot read a duplicate member, odd whitespace or a second Content-Type
/// differently from syncgate.
fn write_request(
    upstream: &super::upstream::Upstream,
    governed: &Governed,
    headers: &HeaderMap,
    json: Option<&Value>,
    conn: &ConnInfo,
) -> Result<Request<Body>, ProxyError> {
    let body = match json {
        Some(json) => Some((
            forward::json_content_type(),
            Bytes::from(serde_json::to_vec(json)?),
        )),
        None => None,
    };
    Ok(forward::rebuilt_request(
        upstream.target(),
        governed.method.clone(),
        &documented_path(&governed.path),
        headers,
        conn,
        body,
    )?)
}

fn audit_unavailable(ids: &RequestIds) -> Response<Body> {
    let mut resp = GraphError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SyncgateAuditUnavailable",
        "syncgate cannot record this change in its audit log, so it was not sent to Microsoft Graph. Retry later.",
    )
    .into_response(ids);
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("5"));
    resp
}

/// The before-state could not be read: nothing is forwarded (DESIGN failure table).
fn before_state_unavailable(
    error: &str,
    upstream_error: Option<super::upstream::UpstreamError>,
) -> Refusal {
    use super::upstream::UpstreamError;
    let (status, code) = match &upstream_error {
        Some(UpstreamError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, "SyncgateUpstreamTimeout"),
        Some(_) => (StatusCode::BAD_GATEWAY, "SyncgateUpstreamUnreachable"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SyncgateBeforeStateUnavailable",
        ),
    };
    Refusal::new(
        status,
        code,
        format!(
            "syncgate could not read the current state before the change ({error}); nothing was sent to Microsoft Graph. Retry later."
        ),
    )
}
