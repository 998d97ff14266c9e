//! Every way a governed operation can end (`syncgate::proxy::ExitKind`), driven through the proxy:
//! each exit answers with the operation's id and leaves exactly one terminal event in the log
//! (`completed` or `denied`), and a `received` only when the write was forwarded.

use std::path::Path;

use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use syncgate::proxy::ExitKind;

use crate::governed::{PARTNER, fault, operation, seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;
use crate::rules::proxy_with_rules;

/// A rule that fails for [`PARTNER`] (it allows only another tenant), with `action`.
fn allowlist(action: &str) -> String {
    format!(
        r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
mode = "enforce"
action = "{action}"
partners = [{{ tenant_id = "11111111-2222-4333-8444-555555555555", display_name = "Contoso" }}]
"#
    )
}

/// The log refuses `received` events (and only those), as a full disk or a lost database would
/// refuse the first write of a change.
async fn refuse_received_events(db: &Path) {
    let url = format!("sqlite://{}", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER test_refuse_received BEFORE INSERT ON audit_events \
         WHEN NEW.kind = 'received' BEGIN SELECT RAISE(ABORT, 'the log is unavailable'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Drive one exit: returns the response and the proxy (to read its log).
async fn drive(exit: ExitKind) -> (TestResponse, TestProxy, StatusCode, &'static str) {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let client = TestClient::new();
    let enable = json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}});
    let mut proxy_toml = String::new();
    let (status, code) = match exit {
        ExitKind::Unclassifiable => (StatusCode::BAD_REQUEST, ""),
        ExitKind::BodyUnreadable => {
            proxy_toml = "[audit]\nmax_body = \"1KiB\"\n".into();
            (StatusCode::PAYLOAD_TOO_LARGE, "SyncgateBodyTooLarge")
        }
        ExitKind::BadBody => (StatusCode::BAD_REQUEST, ""),
        ExitKind::ReadRefusedUpstream => (StatusCode::FORBIDDEN, ""),
        ExitKind::BeforeStateUnavailable => {
            fault(
                &emulator,
                json!({"method": "GET", "status": 500, "count": 1}),
            )
            .await;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "SyncgateBeforeStateUnavailable",
            )
        }
        ExitKind::PolicyViolation => {
            proxy_toml = allowlist("deny");
            (StatusCode::FORBIDDEN, "SyncgatePolicyViolation")
        }
        ExitKind::ApprovalRequired => {
            // An approval policy with one approver, so the held change becomes a request.
            proxy_toml = allowlist("require_approval")
                + "[approvals.policies.default]\n\n[[admin.principals]]\nname = \"ann\"\n\
                   roles = [\"approver\"]\noid = \"aaaaaaaa-0000-4000-8000-000000000001\"\n\
                   key_hash = \"sha256:00112233445566778899aabbccddeeff:\
                   00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
            (StatusCode::FORBIDDEN, "SyncgateApprovalRequired")
        }
        ExitKind::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "SyncgateAuditUnavailable"),
        ExitKind::Completed => (StatusCode::NO_CONTENT, ""),
        ExitKind::CompletedWithUpstreamFailure => {
            fault(
                &emulator,
                json!({"method": "PUT", "status": 500, "count": 1}),
            )
            .await;
            (StatusCode::INTERNAL_SERVER_ERROR, "generalException")
        }
    };
    let proxy = proxy_with_rules(&emulator, &proxy_toml).await;
    if exit == ExitKind::AuditUnavailable {
        refuse_received_events(&proxy.db_path).await;
    }
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let resp = match exit {
        ExitKind::Unclassifiable => {
            let url = format!("{url}/notAResource");
            client.send(Method::PUT, &url, Some(enable)).await
        }
        ExitKind::BodyUnreadable => {
            let big = json!({"displayName": "x".repeat(4096)});
            client.send(Method::PUT, &url, Some(big)).await
        }
        ExitKind::BadBody => {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            let twice = r#"{"displayName":"a","displayName":"b"}"#;
            client
                .send_raw(Method::PUT, &url, headers, twice.into())
                .await
        }
        ExitKind::ReadRefusedUpstream => {
            let reader = TestClient::with_token(token_with_scopes("User.Read"));
            reader.send(Method::PUT, &url, Some(enable)).await
        }
        _ => client.send(Method::PUT, &url, Some(enable)).await,
    };
    (resp, proxy, status, code)
}

#[tokio::test]
async fn every_exit_of_a_governed_operation_leaves_exactly_one_terminal_event() {
    for exit in ExitKind::ALL {
        let (resp, proxy, status, code) = drive(exit).await;
        assert_eq!(resp.status, status, "{exit:?}: {:?}", resp.body);
        if !code.is_empty() {
            assert_eq!(resp.error_code(), code, "{exit:?}");
        }
        let id = resp
            .header("x-syncgate-audit-id")
            .unwrap_or_else(|| panic!("{exit:?}: no x-syncgate-audit-id"));
        let events = operation(&proxy.db_path, id);
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        let terminal: Vec<&str> = kinds
            .iter()
            .copied()
            .filter(|k| {
                matches!(
                    *k,
                    "completed" | "denied" | "recovered" | "approval_requested"
                )
            })
            .collect();
        let forwarded = matches!(
            exit,
            ExitKind::Completed | ExitKind::CompletedWithUpstreamFailure
        );
        let expected = match exit {
            _ if forwarded => "completed",
            // The gate turned the change into an approval request: that is its terminal event.
            ExitKind::ApprovalRequired => "approval_requested",
            _ => "denied",
        };
        assert_eq!(terminal, [expected], "{exit:?}: {kinds:?}");
        assert_eq!(
            kinds.iter().filter(|k| **k == "received").count(),
            usize::from(forwarded),
            "{exit:?}: {kinds:?}"
        );
        // A refusal says under which id it is recorded, in the body as well as the header.
        if !forwarded && exit != ExitKind::ReadRefusedUpstream {
            assert_eq!(
                resp.json()["error"]["innerError"]["syncgate-audit-id"],
                id,
                "{exit:?}"
            );
        }
        proxy.shutdown().await;
    }
}

/// Issue 8: a before-read whose connection broke after the request was sent was answered
/// `SyncgateUpstreamUnreachable`, while the same failure on any other request is
/// `SyncgateUpstreamFailed`. One mapping answers both now.
#[tokio::test]
async fn a_before_read_dropped_by_the_upstream_is_answered_like_any_broken_upstream_call() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = spawn_proxy(&emulator.base).await;
    let client = TestClient::new();
    fault(
        &emulator,
        json!({"method": "GET", "drop": true, "count": 2}),
    )
    .await;
    let plain = client
        .get(&format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            proxy.url
        ))
        .await;
    assert_eq!(plain.status, StatusCode::BAD_GATEWAY, "{:?}", plain.body);
    let governed = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"displayName": "F"})),
        )
        .await;
    assert_eq!(governed.status, plain.status, "{:?}", governed.body);
    assert_eq!(governed.error_code(), plain.error_code());
    assert_eq!(governed.error_code(), "SyncgateUpstreamFailed");
}

/// Issue 8 (found when the rule tools moved onto the proxy's own partner binding): a partner
/// created with an embedded `identitySynchronization` naming another tenant was forwarded, while
/// the same mismatch against the URL's partner is refused everywhere else.
#[tokio::test]
async fn a_partner_created_with_sync_settings_for_another_tenant_is_refused() {
    let emulator = spawn_emulator().await;
    let proxy = spawn_proxy(&emulator.base).await;
    let resp = TestClient::new()
        .send(
            Method::POST,
            &format!(
                "{}/v1.0/policies/crossTenantAccessPolicy/partners",
                proxy.url
            ),
            Some(json!({
                "tenantId": PARTNER,
                "identitySynchronization": {
                    "tenantId": "0a1b2c3d-0000-4000-8000-00000000beef",
                    "userSyncInbound": {"isSyncAllowed": true}
                }
            })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{:?}", resp.body);
    let requests = TestClient::new()
        .get(&format!("{}/_emulator/requests", emulator.base))
        .await
        .json();
    let writes = requests["value"]
        .as_array()
        .expect("the emulator's request log")
        .iter()
        .filter(|r| r["method"] != "GET")
        .count();
    assert_eq!(writes, 0, "nothing was forwarded: {requests}");
}
