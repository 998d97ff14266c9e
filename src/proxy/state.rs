//! The before and after states of a governed change, and what they say about it.
//!
//! Both are read with a GET of the resource upstream, using the caller's own token (so syncgate
//! never reads more than the caller may) and no compression (the JSON is compared, not relayed).
//! The diff is RFC 6902 from before to after; the effect compares the after-state with what the
//! request asked for (intent versus effect): a PATCH Graph silently ignored, or a 5xx whose change
//! landed anyway, shows here.

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::forward;
use super::upstream::{Upstream, UpstreamError};
use crate::audit::{Effect, Snapshot};
use crate::classify::OperationKind;

/// Largest state document read back (a partner with every setting is a few KiB).
const MAX_STATE: usize = 4 * 1024 * 1024;

/// A state read: the snapshot, and the upstream's own response when it refused the read (so an
/// unauthorised caller gets Graph's 401/403 rather than syncgate's guess).
pub(crate) struct StateRead {
    pub(crate) snapshot: Snapshot,
    pub(crate) refused: Option<Response<Bytes>>,
    pub(crate) error: Option<UpstreamError>,
}

/// GET `path_and_query` upstream with the caller's `Authorization`.
pub(crate) async fn read(
    upstream: &Upstream,
    path_and_query: &str,
    authorization: Option<&HeaderValue>,
) -> StateRead {
    let unreadable = |status: Option<u16>, error: String| Snapshot::Unreadable { status, error };
    let outbound = forward::Outbound::StateRead {
        path_and_query,
        authorization,
    };
    let req = match outbound.build(upstream.target(), None) {
        Ok(req) => req,
        Err(e) => {
            return StateRead {
                snapshot: unreadable(None, format!("bad state path {path_and_query}: {e}")),
                refused: None,
                error: None,
            };
        }
    };
    let resp = match upstream.send(req).await {
        Ok(resp) => resp,
        Err(error) => {
            return StateRead {
                snapshot: unreadable(None, error_chain(&error)),
                refused: None,
                error: Some(error),
            };
        }
    };
    let (parts, incoming) = resp.into_parts();
    let bytes = match Limited::new(incoming, MAX_STATE).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return StateRead {
                snapshot: unreadable(
                    Some(parts.status.as_u16()),
                    format!("reading the state failed: {e}"),
                ),
                refused: None,
                error: None,
            };
        }
    };
    let snapshot = match parts.status {
        StatusCode::OK => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => Snapshot::Present {
                value: without_annotations(value),
            },
            Err(e) => unreadable(Some(200), format!("the state is not JSON: {e}")),
        },
        StatusCode::NOT_FOUND => Snapshot::Absent,
        status => unreadable(Some(status.as_u16()), graph_error_text(&bytes)),
    };
    let refused = matches!(
        parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    )
    .then(|| Response::from_parts(parts, bytes));
    StateRead {
        snapshot,
        refused,
        error: None,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `code: message` of a Graph error body, or the status text.
fn graph_error_text(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some(format!(
                "{}: {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(Value::as_str).unwrap_or("")
            ))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
}

/// The document without OData annotations (`@odata.context`, `x@odata.type`, ...): they describe
/// the response, not the state.
pub(crate) fn without_annotations(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.contains('@'))
                .map(|(k, v)| (k, without_annotations(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_annotations).collect()),
        other => other,
    }
}

/// RFC 6902 patch from before to after, when both are known.
pub(crate) fn diff(before: &Snapshot, after: &Snapshot) -> Option<Value> {
    let patch = json_patch::diff(before.value()?, after.value()?);
    serde_json::to_value(patch).ok()
}

/// Does `after` hold every property the request set (recursively; `null` matches absent)?
fn satisfies(after: &Value, wanted: &Value) -> bool {
    match (wanted, after) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .filter(|(k, _)| !k.contains('@'))
            .all(|(k, w)| satisfies(have.get(k).unwrap_or(&Value::Null), w)),
        (Value::Object(want), Value::Null) => want.values().all(Value::is_null),
        (w, h) => w == h,
    }
}

/// What the after-state should show if the request took effect: `None` when the operation has no
/// checkable intent beyond "the state changed".
fn intent_met(kind: OperationKind, body: Option<&Value>, after: &Snapshot) -> Option<bool> {
    use OperationKind::*;
    let present = matches!(after, Snapshot::Present { .. });
    let absent = matches!(after, Snapshot::Absent);
    let value = after.value()?;
    Some(match kind {
        SyncCreate | SyncUpdate | TemplateUpdate => {
            present && body.is_none_or(|b| satisfies(value, &strip_key(b, "tenantId")))
        }
        PartnerCreate | PartnerUpdate => {
            present && body.is_none_or(|b| satisfies(value, &strip_key(b, "tenantId")))
        }
        SyncDelete | PartnerDelete | DeletedPartnerPurge | DeletedSyncPurge => absent,
        PartnerRestore | SyncRestore => present,
        TemplateReset | DeletedPartnerSyncWrite | LegacySyncPolicyWrite | SyncRead => return None,
    })
}

fn strip_key(body: &Value, key: &str) -> Value {
    let mut body = body.clone();
    if let Value::Object(map) = &mut body {
        map.remove(key);
    }
    body
}

/// Intent versus effect, from the upstream's status (None: no response) and the two states.
pub(crate) fn effect(
    kind: OperationKind,
    body: Option<&Value>,
    status: Option<StatusCode>,
    before: &Snapshot,
    after: &Snapshot,
) -> Effect {
    let Some(after_value) = after.value() else {
        return Effect::Unknown;
    };
    let unchanged = before.value() == Some(after_value);
    let met = intent_met(kind, body, after);
    let succeeded = status.is_some_and(|s| s.is_success());
    match (succeeded, met, unchanged) {
        (true, Some(true), _) => Effect::Applied,
        (true, None, false) => Effect::Applied,
        (true, _, true) => Effect::Ignored,
        (true, Some(false), false) => Effect::Diverged,
        (false, _, true) => Effect::NotApplied,
        (false, Some(true), false) => Effect::AppliedDespiteError,
        (false, _, false) => Effect::Diverged,
    }
}

/// The `Authorization` header to read state with.
pub(crate) fn authorization(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(AUTHORIZATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn present(v: Value) -> Snapshot {
        Snapshot::Present { value: v }
    }

    #[test]
    fn annotations_are_not_state() {
        let v = without_annotations(json!({
            "@odata.context": "x",
            "tenantId": "t",
            "identitySynchronization@odata.context": "y",
            "identitySynchronization": {"@odata.type": "#t", "displayName": "F"}
        }));
        assert_eq!(
            v,
            json!({"tenantId": "t", "identitySynchronization": {"displayName": "F"}})
        );
    }

    #[test]
    fn a_patch_that_landed_is_applied() {
        let before =
            present(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": false}}));
        let after =
            present(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}}));
        let body = json!({"userSyncInbound": {"isSyncAllowed": true}});
        let e = effect(
            OperationKind::SyncUpdate,
            Some(&body),
            Some(StatusCode::NO_CONTENT),
            &before,
            &after,
        );
        assert_eq!(e, Effect::Applied);
        let d = diff(&before, &after).unwrap();
        assert_eq!(
            d,
            json!([{"op": "replace", "path": "/userSyncInbound/isSyncAllowed", "value": true}])
        );
    }

    #[test]
    fn a_patch_graph_silently_ignored_shows_as_ignored() {
        let before = present(json!({"userSyncInbound": {"isSyncAllowed": false}}));
        let body = json!({"userSyncInbound": {"isSyncAllowed": true}});
        let e = effect(
            OperationKind::SyncUpdate,
            Some(&body),
            Some(StatusCode::NO_CONTENT),
            &before,
            &before.clone(),
        );
        assert_eq!(e, Effect::Ignored);
    }

    #[test]
    fn a_5xx_whose_change_landed_is_applied_despite_error() {
        let before = Snapshot::Absent;
        let after =
            present(json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}}));
        let body = json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}});
        let e = effect(
            OperationKind::SyncCreate,
            Some(&body),
            Some(StatusCode::SERVICE_UNAVAILABLE),
            &before,
            &after,
        );
        assert_eq!(e, Effect::AppliedDespiteError);
        let e = effect(
            OperationKind::SyncCreate,
            Some(&body),
            None,
            &before,
            &Snapshot::Absent,
        );
        assert_eq!(e, Effect::NotApplied);
    }

    #[test]
    fn deletes_are_applied_when_the_resource_is_gone() {
        let before = present(json!({"displayName": "F"}));
        let e = effect(
            OperationKind::SyncDelete,
            None,
            Some(StatusCode::NO_CONTENT),
            &before,
            &Snapshot::Absent,
        );
        assert_eq!(e, Effect::Applied);
        assert_eq!(
            diff(&before, &Snapshot::Absent).unwrap(),
            json!([{"op": "replace", "path": "", "value": null}])
        );
    }

    #[test]
    fn an_unreadable_after_state_is_unknown() {
        let after = Snapshot::Unreadable {
            status: Some(503),
            error: "x".into(),
        };
        let e = effect(
            OperationKind::SyncDelete,
            None,
            Some(StatusCode::NO_CONTENT),
            &Snapshot::Absent,
            &after,
        );
        assert_eq!(e, Effect::Unknown);
        assert!(diff(&Snapshot::Absent, &after).is_none());
    }

    #[test]
    fn null_in_the_request_matches_an_absent_property() {
        assert!(satisfies(&json!({"a": 1}), &json!({"b": null})));
        assert!(satisfies(&json!({"a": null}), &json!({"a": {"x": null}})));
        assert!(!satisfies(
            &json!({"a": {"x": true}}),
            &json!({"a": {"x": null}})
        ));
    }
}
