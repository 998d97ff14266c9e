//! The per-operation context (pingora's per-request `CTX`): what every phase of one governed
//! operation reads and what the phases learn on the way, carried from the first phase to the
//! terminal one. Every event an operation leaves is built here ([`Operation::event`]), so all of
//! them carry the same id, actor and subject.

use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use uuid::Uuid;

use super::decide::Decided;
use crate::audit::{self, Actor, Event, EventKind, RawRequest, Snapshot};
use crate::classify::Governed;
use crate::proxy::locks::LockGuard;

/// One governed operation: a governed request, a refused one, a recorded read, or a `$batch`
/// sub-request of either kind.
pub struct Operation {
    /// Its id: every event of the operation carries it, and the client gets it back as
    /// `x-syncgate-audit-id`.
    pub(crate) id: Uuid,
    /// Who asked.
    pub(crate) actor: Actor,
    /// The caller's `client-request-id`, when it sent one.
    client_request_id: Option<String>,
    /// The request as received, for refusal records.
    pub(crate) received: Received,
    /// The client's headers: the write upstream is rebuilt from the allowed ones, and the
    /// state reads use its `Authorization`.
    pub(crate) headers: HeaderMap,
    /// What the classifier made of it (`None` when it could not tell).
    pub(crate) governed: Option<Governed>,
    /// The canonical path of a refused request the classifier could canonicalise but not route.
    pub(crate) canonical: Option<String>,
    /// The strictly parsed body (read phase).
    pub(crate) body: Option<Value>,
    /// Where its before and after states are read (read phase).
    pub(crate) state_path: Option<String>,
    /// The state before the change (before phase).
    pub(crate) before: Option<Snapshot>,
    /// What the rules decided (decide phase).
    pub(crate) decided: Option<Decided>,
    /// The approval request the operation is about (gate phase): every event it leaves
    /// carries the id.
    pub(crate) approval_id: Option<String>,
    /// The approval the change is sent under (gate phase); `record` marks it used.
    pub(crate) granted: Option<super::gate::Granted>,
    /// The partner's lock (lock phase), held until the operation is dropped after its terminal
    /// event: the next change to the partner must see this one's after-state as recorded.
    pub(crate) lock: Option<LockGuard>,
    /// When it started, for `latency_ms`.
    pub(crate) started: Instant,
}

/// A request as syncgate received it: its `denied` event keeps the method, and the target and body
/// in bounded form ([`RawRequest`]), never the whole body.
pub(crate) struct Received {
    pub(crate) method: String,
    /// The request target as received (a `$batch` sub-request's `url`).
    pub(crate) target: String,
    /// `None` when the body was not read (refused on the head, or while reading).
    pub(crate) body: Option<Bytes>,
}

impl Received {
    pub(crate) fn new(method: &str, target: &str, body: Option<Bytes>) -> Self {
        Received {
            method: method.to_owned(),
            target: target.to_owned(),
            body,
        }
    }

    /// A `$batch` sub-request: its `url` as sent, and its body as the batch carried it
    /// (serialised back to JSON: the bytes hashed are that serialisation).
    pub(crate) fn sub_request(method: &str, url: &str, body: Option<&Value>) -> Self {
        let body = body.map(|v| Bytes::from(serde_json::to_vec(v).unwrap_or_default()));
        Received::new(method, url, body)
    }

    fn raw(&self) -> RawRequest {
        RawRequest::new(&self.target, self.body.as_deref())
    }
}

impl Operation {
    /// A new operation for a request with `headers`, about `governed` when the classifier knows.
    pub(crate) fn new(
        actor: Actor,
        headers: HeaderMap,
        received: Received,
        governed: Option<Governed>,
    ) -> Self {
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Operation {
            id: Uuid::now_v7(),
            actor,
            client_request_id,
            received,
            headers,
            governed,
            canonical: None,
            body: None,
            state_path: None,
            before: None,
            decided: None,
            approval_id: None,
            granted: None,
            lock: None,
            started: Instant::now(),
        }
    }

    /// An event of this operation with its subject filled: the governed request's method, path,
    /// version, partner and kind (or the request as received and `unknown` when the classifier
    /// could not tell), the actor, `client-request-id` and state path.
    pub(crate) fn event(&self, kind: EventKind) -> Event {
        let mut e = match &self.governed {
            Some(g) => {
                let state_path = self.state_path.clone().or_else(|| g.state_path());
                Event::governed(self.id, kind, g, state_path.as_deref())
            }
            None => {
                let mut e = Event::new(self.id, kind);
                e.method = self.received.method.clone();
                e.canonical_path = self.canonical.clone().unwrap_or_default();
                e.operation = audit::Operation::Unknown;
                e
            }
        };
        e.actor = self.actor.clone();
        e.client_request_id = self.client_request_id.clone();
        e.approval_id = self.approval_id.clone();
        e
    }

    /// The request in bounded form, for a refusal's record.
    pub(crate) fn raw_request(&self) -> RawRequest {
        self.received.raw()
    }

    /// The authorization the caller sent (the state reads use the caller's own token).
    pub(crate) fn authorization(&self) -> Option<&http::HeaderValue> {
        super::super::state::authorization(&self.headers)
    }
}

/// The event that follows `received` for the same operation (a `recovered` event at start-up):
/// the same subject, actor, request and before-state.
pub(crate) fn following(received: &Event, kind: EventKind) -> Event {
    let mut event = Event::new(received.operation_id, kind);
    event.method = received.method.clone();
    event.canonical_path = received.canonical_path.clone();
    event.api_version = received.api_version.clone();
    event.partner_tenant_id = received.partner_tenant_id.clone();
    event.operation = received.operation.clone();
    event.actor = received.actor.clone();
    event.client_request_id = received.client_request_id.clone();
    event.request_body = received.request_body.clone();
    event.before = received.before.clone();
    event.decision = received.decision;
    event.state_path = received.state_path.clone();
    event
}
