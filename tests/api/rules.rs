//! Local rules through the proxy: every built-in rule and mode, Rego rules, a `$batch` mixing
//! allowed and refused changes, and reload on SIGHUP (require_approval's gate is in `approvals.rs`).

use std::path::Path;

use chrono::Datelike;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use syncgate::config::RawConfig;

use crate::governed::{PARTNER, operation, partners, seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;

const LISTED: &str = "11111111-2222-4333-8444-555555555555";
const DENIED: &str = "dddddddd-0000-4000-8000-00000000dead";

/// A proxy in front of `emulator` with `rules_toml` as its configuration (relative Rego paths
/// resolve against the repository root, where `config/rules/` lives).
pub async fn proxy_with_rules(emulator: &TestEmulator, rules_toml: &str) -> TestProxy {
    let mut raw: RawConfig = toml::from_str(rules_toml).expect("test rules parse");
    let base = proxy_config(&emulator.base);
    raw.proxy.listen = base.proxy.listen;
    raw.admin.listen = base.admin.listen;
    raw.upstream.url = base.upstream.url;
    raw.base_dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_owned();
    spawn_proxy_with(raw).await
}

fn enable(name: &str) -> Value {
    json!({"displayName": name, "userSyncInbound": {"isSyncAllowed": true}})
}

fn audit_id(resp: &TestResponse) -> String {
    resp.header("x-syncgate-audit-id")
        .expect("x-syncgate-audit-id")
        .to_owned()
}

fn rule_result<'a>(event: &'a Value, rule: &str) -> &'a Value {
    event["rule_results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no result for rule {rule}: {event}"))
}

const ALLOWLIST: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
mode = "MODE"
partners = [{ tenant_id = "11111111-2222-4333-8444-555555555555", display_name = "Contoso Partner" }]
"#;

#[tokio::test]
async fn an_unlisted_partner_is_refused_with_a_graph_shaped_403_naming_the_rule() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    seed_partner(&emulator, LISTED).await;
    let proxy = proxy_with_rules(&emulator, &ALLOWLIST.replace("MODE", "enforce")).await;
    let client = TestClient::new();

    let ok = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", LISTED),
            Some(enable("Contoso Partner")),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{:?}", ok.body);

    let refused = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(enable("Fabrikam")),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "SyncgatePolicyViolation");
    let body = refused.json();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("sync-allowlist"), "{message}");
    assert!(message.contains(PARTNER), "{message}");
    let id = audit_id(&refused);
    assert_eq!(
        body["error"]["innerError"]["syncgate-audit-id"],
        id.as_str()
    );

    let events = operation(&proxy.db_path, &id);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "denied");
    assert_eq!(events[0]["decision"], "deny");
    assert!(
        events[0]["rules_version"]
            .as_str()
            .is_some_and(|v| v.len() == 64)
    );
    assert_eq!(rule_result(&events[0], "sync-allowlist")["passed"], false);
    assert!(
        events[0]["before"].is_object(),
        "the before-state is recorded with the refusal"
    );
    // An auditor sees which rule refused, and why, in `audit show`.
    let show = std::process::Command::new(syncgate_bin())
        .args(["audit", "show", &id, "--db"])
        .arg(&proxy.db_path)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("rules (version "), "{shown}");
    assert!(
        shown.contains("FAIL  sync-allowlist (enforce, deny): rule 'sync-allowlist'"),
        "{shown}"
    );
    let state = client
        .get(&format!("{}/_emulator/state", emulator.base))
        .await
        .json();
    assert!(
        state["identitySynchronization"].get(PARTNER).is_none(),
        "nothing reached Graph"
    );
    // Disabling sync for an unlisted partner is fine.
    let off = client
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(json!({"userSyncInbound": {"isSyncAllowed": false}})),
        )
        .await;
    assert_eq!(off.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn warn_mode_forwards_records_and_tells_the_client() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = proxy_with_rules(&emulator, &ALLOWLIST.replace("MODE", "warn")).await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(enable("F")),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let warning = resp.header("x-syncgate-warning").expect("a warning header");
    assert!(warning.contains("sync-allowlist"), "{warning}");
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(events[1]["kind"], "completed");
    assert_eq!(events[1]["decision"], "allow");
    assert_eq!(rule_result(&events[1], "sync-allowlist")["passed"], false);
    assert_eq!(rule_result(&events[1], "sync-allowlist")["mode"], "warn");
}

#[tokio::test]
async fn shadow_mode_forwards_and_only_records() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = proxy_with_rules(&emulator, &ALLOWLIST.replace("MODE", "shadow")).await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", PARTNER),
            Some(enable("F")),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    assert!(resp.header("x-syncgate-warning").is_none());
    let events = operation(&proxy.db_path, &audit_id(&resp));
    assert_eq!(rule_result(&events[1], "sync-allowlist")["passed"], false);
    assert_eq!(rule_result(&events[1], "sync-allowlist")["mode"], "shadow");
}

/// Each built-in rule refusing the change it exists to refuse, and allowing one it should not.
#[tokio::test]
async fn every_built_in_rule_refuses_what_it_should() {
    let emulator = spawn_emulator().await;
    for p in [PARTNER, LISTED, DENIED] {
        seed_partner(&emulator, p).await;
    }
    let not_today = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .filter(|d| *d != chrono::Utc::now().weekday().to_string().to_lowercase())
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cases: Vec<(String, Method, &str, Option<Value>, &str)> = vec![
        (
            format!("[[rules.builtin]]\nid = \"never\"\ntype = \"partner_denylist\"\ntenants = [\"{DENIED}\"]\n"),
            Method::PUT, DENIED, Some(json!({"userSyncInbound": {"isSyncAllowed": false}})), "never",
        ),
        (
            format!("{}\n[[rules.builtin]]\nid = \"names\"\ntype = \"display_name\"\nallowlist = \"sync-allowlist\"\n", ALLOWLIST.replace("MODE", "enforce")),
            Method::PUT, LISTED, Some(enable("Someone Else")), "names",
        ),
        (
            format!("[[rules.builtin]]\nid = \"window\"\ntype = \"change_window\"\ntime_zone = \"UTC\"\ndays = [{not_today}]\nhours = \"00:00-24:00\"\n"),
            Method::PUT, PARTNER, Some(enable("F")), "window",
        ),
        (
            "[[rules.builtin]]\nid = \"who\"\ntype = \"allowed_actors\"\nupn_patterns = [\"*@fabrikam.example\"]\n".to_string(),
            Method::PUT, PARTNER, Some(enable("F")), "who",
        ),
        (
            "[[rules.builtin]]\nid = \"perm\"\ntype = \"required_permission\"\npermission = \"Policy.ReadWrite.Everything\"\n".to_string(),
            Method::PUT, PARTNER, Some(enable("F")), "perm",
        ),
        (
            "[[rules.builtin]]\nid = \"no-deletes\"\ntype = \"forbid_operations\"\noperations = [\"partner_delete\"]\n".to_string(),
            Method::DELETE, PARTNER, None, "no-deletes",
        ),
        (
            "[[rules.builtin]]\nid = \"consent-first\"\ntype = \"inbound_sync_requires_consent\"\n".to_string(),
            Method::PUT, PARTNER, Some(enable("F")), "consent-first",
        ),
    ];
    let client = TestClient::new();
    for (toml, method, partner, body, rule) in cases {
        let proxy = proxy_with_rules(&emulator, &toml).await;
        let url = if method == Method::DELETE {
            format!("{}/{partner}", partners(&proxy.url))
        } else {
            sync_url(&proxy.url, "v1.0", partner)
        };
        let resp = client.send(method.clone(), &url, body).await;
        assert_eq!(
            resp.status,
            StatusCode::FORBIDDEN,
            "{rule}: {:?}",
            resp.body
        );
        assert_eq!(resp.error_code(), "SyncgatePolicyViolation", "{rule}");
        let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(rule), "{rule}: {message}");
        let events = operation(&proxy.db_path, &audit_id(&resp));
        assert_eq!(rule_result(&events[0], rule)["passed"], false, "{rule}");
    }
    let state = client
        .get(&format!("{}/_emulator/state", emulator.base))
        .await
        .json();
    assert!(
        state["identitySynchronization"]
            .as_object()
            .unwrap()
            .is_empty(),
        "nothing reached Graph"
    );
    assert_eq!(
        state["partners"].as_object().unwrap().len(),
        3,
        "no partner was deleted"
    );
}

#[tokio::test]
async fn inbound_sync_is_allowed_once_consent_is_in_place() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = proxy_with_rules(
        &emulator,
        "[[rules.builtin]]\nid = \"consent-first\"\ntype = \"inbound_sync_requires_consent\"\n",
    )
    .await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(enable("F")))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let consent = client
        .send(
            Method::PATCH,
            &format!("{}/{PARTNER}", partners(&proxy.url)),
            Some(json!({"automaticUserConsentSettings": {"inboundAllowed": true}})),
        )
        .await;
    assert_eq!(consent.status, StatusCode::NO_CONTENT);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(enable("F")))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn the_shipped_rego_example_is_enforced() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let proxy = proxy_with_rules(
        &emulator,
        "[[rules.rego]]\nid = \"example\"\nfile = \"config/rules/example.rego\"\n",
    )
    .await;
    let client = TestClient::new();
    // The example refuses enabling group sync unless the caller is an IdentityOps app.
    let url = sync_url(&proxy.url, "beta", PARTNER);
    let resp = client
        .send(
            Method::PUT,
            &url,
            Some(json!({"groupSyncInbound": {"isSyncAllowed": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{:?}", resp.body);
    assert_eq!(resp.error_code(), "SyncgatePolicyViolation");
    let ops_app = TestClient::with_token(syncgate::token::unsigned_jwt(&json!({
        "appid": "0b5a7c2e-0000-4000-8000-00000000a990", "app_displayname": "IdentityOps Sync",
        "idtyp": "app", "roles": ["Policy.ReadWrite.CrossTenantAccess"]
    })));
    let resp = ops_app
        .send(
            Method::PUT,
            &url,
            Some(json!({"groupSyncInbound": {"isSyncAllowed": true}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
}

#[tokio::test]
async fn a_custom_rego_rule_sees_the_whole_input_document() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custom.rego"),
        r#"package syncgate
import rego.v1

violations contains {"message": msg} if {
    input.operation == "sync_update"
    input.before.displayName != input.expected_after.displayName
    msg := sprintf("renaming %s's policy from %q is not allowed", [input.partner, input.before.displayName])
}
"#,
    )
    .unwrap();
    let toml = format!(
        "[[rules.rego]]\nid = \"no-rename\"\nfile = {:?}\n",
        dir.path().join("custom.rego").to_str().unwrap()
    );
    let proxy = proxy_with_rules(&emulator, &toml).await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(enable("Original")))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        client
            .send(
                Method::PATCH,
                &url,
                Some(json!({"userSyncInbound": {"isSyncAllowed": false}}))
            )
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "Renamed"})))
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("renaming") && message.contains("Original"),
        "{message}"
    );
}

#[tokio::test]
async fn a_batch_mixing_allowed_and_refused_changes_answers_each_on_its_own() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    seed_partner(&emulator, LISTED).await;
    let proxy = proxy_with_rules(&emulator, &ALLOWLIST.replace("MODE", "enforce")).await;
    let sync =
        |p: &str| format!("/policies/crossTenantAccessPolicy/partners/{p}/identitySynchronization");
    let batch = json!({"requests": [
        {"id": "ok", "method": "PUT", "url": sync(LISTED), "headers": {"content-type": "application/json"}, "body": enable("Contoso Partner")},
        {"id": "no", "method": "PUT", "url": sync(PARTNER), "headers": {"content-type": "application/json"}, "body": enable("Fabrikam")},
        {"id": "after-no", "method": "PATCH", "url": sync(PARTNER), "headers": {"content-type": "application/json"}, "body": {"displayName": "x"}, "dependsOn": ["no"]}
    ]});
    let resp = TestClient::new()
        .send(
            Method::POST,
            &format!("{}/v1.0/$batch", proxy.url),
            Some(batch),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let responses = resp.json()["responses"].as_array().unwrap().clone();
    let status = |id: &str| responses.iter().find(|r| r["id"] == id).unwrap()["status"].clone();
    assert_eq!(status("ok"), 204);
    assert_eq!(status("no"), 403);
    assert_eq!(status("after-no"), 424);
    let refused = responses.iter().find(|r| r["id"] == "no").unwrap();
    assert_eq!(refused["body"]["error"]["code"], "SyncgatePolicyViolation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rules_atomically_and_a_bad_file_keeps_the_old_ones() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(&config, "").unwrap();
    let proxy = spawn_child_proxy(&emulator.base, &["--config", config.to_str().unwrap()]);
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let patch = |name: &str| Some(json!({"displayName": name}));
    assert_eq!(
        client
            .send(Method::PUT, &url, Some(enable("F")))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let reload = |expect: &'static str, count: usize| {
        proxy.signal("HUP");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while proxy.stderr().matches(expect).count() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "no {expect:?} in the log:\n{}",
                proxy.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    std::fs::write(&config, "[[rules.builtin]]\nid = \"freeze\"\ntype = \"forbid_operations\"\noperations = [\"sync_update\"]\n").unwrap();
    reload("rules reloaded", 1);
    let resp = client.send(Method::PATCH, &url, patch("G")).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("freeze")
    );

    // A broken file: the frozen rules stay in force.
    std::fs::write(&config, "[[rules.builtin]]\nid = \"freeze\"\ntype = \"forbid_operations\"\noperations = [\"sync_updat\"]\n").unwrap();
    reload("rules reload failed", 1);
    assert_eq!(
        client.send(Method::PATCH, &url, patch("H")).await.status,
        StatusCode::FORBIDDEN
    );

    std::fs::write(&config, "").unwrap();
    reload("rules reloaded", 2);
    assert_eq!(
        client.send(Method::PATCH, &url, patch("I")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[test]
fn check_config_names_the_rule_and_the_place_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[rules.builtin]]\nid = \"w\"\ntype = \"change_window\"\ntime_zone = \"Europe/Zurch\"\ndays = [\"mon\"]\nhours = \"08:00-18:00\"\n",
            "Europe/Zurch",
        ),
        (
            "[[rules.builtin]]\nid = \"a\"\ntype = \"partner_allowlist\"\npartners = [{ tenant_id = \"not-a-guid\", display_name = \"x\" }]\n",
            "not-a-guid",
        ),
        (
            "[[rules.builtin]]\nid = \"a\"\ntype = \"partner_allowlist\"\npartnrs = []\n",
            "partnrs",
        ),
        (
            "[[rules.rego]]\nid = \"r\"\nfile = \"broken.rego\"\n",
            "broken.rego:",
        ),
    ];
    std::fs::write(
        dir.path().join("broken.rego"),
        "package syncgate\n\nviolations contains x if {\n  x := \n}\n",
    )
    .unwrap();
    for (toml, needle) in cases {
        let path = dir.path().join("syncgate.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(syncgate_bin())
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "the file is named: {stderr}"
        );
    }
}
