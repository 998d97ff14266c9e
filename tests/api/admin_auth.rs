//! Issue 10: who may use the admin API — API keys, roles, 401/403, and the open health probes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use sha2::{Digest, Sha256};
use syncgate::config::{RawConfig, RawPrincipal};

use crate::harness::{TestProxy, proxy_config, spawn_proxy_with, syncgate_bin};
use crate::helpers::{TestClient, TestResponse, admin_token};

/// The upstream is never contacted by these tests: the admin listener answers on its own.
const UNUSED_UPSTREAM: &str = "http://127.0.0.1:9";

/// A fresh key and its `key_hash`, made here from the documented format (not syncgate's code):
/// `sha256:<salt hex>:<hex of sha256(salt || key bytes)>`, key shown as `sgk_` + base64url.
pub(crate) fn make_key() -> (String, String) {
    let random = |n: usize| -> Vec<u8> {
        (0..n.div_ceil(16))
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .take(n)
            .collect()
    };
    let (key, salt) = (random(32), random(16));
    let hash = Sha256::new()
        .chain_update(&salt)
        .chain_update(&key)
        .finalize();
    (
        format!("sgk_{}", URL_SAFE_NO_PAD.encode(&key)),
        format!("sha256:{}:{}", hex::encode(salt), hex::encode(hash)),
    )
}

pub(crate) fn principal(
    name: &str,
    roles: &[&str],
    oid: Option<&str>,
    key_hash: String,
) -> RawPrincipal {
    RawPrincipal {
        name: name.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        oid: oid.map(str::to_owned),
        key_hash: Some(key_hash),
        ..RawPrincipal::default()
    }
}

/// A proxy whose admin API knows `ann` (auditor, with an oid) and `nobody` (no roles); returns
/// their keys.
async fn proxy_with_principals() -> (TestProxy, String, String) {
    let (ann, ann_hash) = make_key();
    let (nobody, nobody_hash) = make_key();
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    raw.admin.principals = vec![
        principal(
            "ann",
            &["auditor"],
            Some("AAAAAAAA-1111-2222-3333-444444444444"),
            ann_hash,
        ),
        principal("nobody", &[], None, nobody_hash),
    ];
    (spawn_proxy_with(raw).await, ann, nobody)
}

fn admin_url(proxy: &TestProxy, path: &str) -> String {
    format!("http://{}{path}", proxy.admin_addr)
}

/// A 401 in Graph's error shape with the Bearer challenge.
fn assert_unauthenticated(resp: &TestResponse, what: &str) {
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{what}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"syncgate-admin\""),
        "{what}: {challenge:?}"
    );
    assert_graph_error(resp, "InvalidAuthenticationToken", what);
}

pub(crate) fn assert_graph_error(resp: &TestResponse, code: &str, what: &str) {
    let body = resp.json();
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"].as_str().is_some(),
        "{what}: {body}"
    );
    let inner = &body["error"]["innerError"];
    for field in ["date", "request-id", "client-request-id"] {
        assert!(
            inner[field].as_str().is_some(),
            "{what}: no {field}: {body}"
        );
    }
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn whoami_with_a_good_key_names_the_principal_and_its_roles() {
    let (proxy, ann, _) = proxy_with_principals().await;
    let resp = TestClient::with_token(ann)
        .get(&admin_url(&proxy, "/api/v1/whoami"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(
        resp.json(),
        serde_json::json!({
            "name": "ann",
            "roles": ["auditor"],
            "oid": "aaaaaaaa-1111-2222-3333-444444444444",
        })
    );
}

#[tokio::test]
async fn missing_or_bad_credentials_get_401_with_a_bearer_challenge() {
    let (proxy, ann, _) = proxy_with_principals().await;
    let url = admin_url(&proxy, "/api/v1/whoami");
    let (other_key, _) = make_key();
    // A one-character change inside a good key (every bit of a middle character is key).
    let mut altered = ann.clone();
    let other = if &altered[10..11] == "A" { "B" } else { "A" };
    altered.replace_range(10..11, other);
    let cases = [
        ("no Authorization header", TestClient::without_token()),
        ("a key no principal has", TestClient::with_token(other_key)),
        ("a good key, altered", TestClient::with_token(altered)),
        ("a Graph token", TestClient::with_token(admin_token())),
        ("not a key at all", TestClient::with_token("sgk_!!".into())),
    ];
    for (what, client) in cases {
        assert_unauthenticated(&client.get(&url).await, what);
    }
    // Unknown admin routes need a principal too: nothing is learnt about them without one.
    let unknown = admin_url(&proxy, "/api/v1/nothing-here");
    assert_unauthenticated(&TestClient::without_token().get(&unknown).await, "unknown");
    assert_unauthenticated(
        &TestClient::without_token()
            .get(&admin_url(&proxy, "/elsewhere"))
            .await,
        "unknown, outside /api",
    );
    let found = TestClient::with_token(ann).get(&unknown).await;
    assert_eq!(found.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_principal_with_no_roles_gets_403() {
    let (proxy, _, nobody) = proxy_with_principals().await;
    let resp = TestClient::with_token(nobody)
        .get(&admin_url(&proxy, "/api/v1/whoami"))
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.header("www-authenticate").is_none());
    assert_graph_error(&resp, "Authorization_RequestDenied", "no roles");
    let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("nobody") && message.contains("no roles"),
        "{message}"
    );
}

#[tokio::test]
async fn health_and_readiness_stay_open_when_principals_are_configured() {
    let (proxy, _, _) = proxy_with_principals().await;
    let anonymous = TestClient::without_token();
    for path in ["/healthz", "/readyz"] {
        let resp = anonymous.get(&admin_url(&proxy, path)).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {:?}", resp.body);
    }
}

#[tokio::test]
async fn with_no_principals_the_admin_api_is_closed_not_open() {
    let mut raw = proxy_config(UNUSED_UPSTREAM);
    raw.admin.principals.clear();
    let proxy = spawn_proxy_with(raw).await;
    let (key, _) = make_key();
    for client in [TestClient::without_token(), TestClient::with_token(key)] {
        let resp = client.get(&admin_url(&proxy, "/api/v1/whoami")).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert_graph_error(&resp, "Authorization_RequestDenied", "no principals");
        let message = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("no principals configured"), "{message}");
    }
    let health = TestClient::without_token()
        .get(&admin_url(&proxy, "/healthz"))
        .await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_new_key_prints_a_key_and_a_table_that_work_against_a_running_proxy() {
    let out = Command::new(syncgate_bin())
        .args([
            "admin",
            "new-key",
            "--name",
            "eve \"ops\"",
            "--roles",
            "auditor,approver",
        ])
        .args(["--oid", "BBBBBBBB-1111-2222-3333-444444444444"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("shown once"), "{stderr}");
    let (key, table) = stdout.split_once('\n').unwrap();
    assert!(key.starts_with("sgk_") && key.len() == 47, "{key:?}");
    assert_eq!(stdout.matches(key).count(), 1, "the key is printed once");
    let mut raw: RawConfig = toml::from_str(table).unwrap_or_else(|e| panic!("{e}\n{table}"));
    let p = &raw.admin.principals[0];
    assert_eq!(p.name, "eve \"ops\"");
    assert_eq!(
        p.oid.as_deref(),
        Some("bbbbbbbb-1111-2222-3333-444444444444")
    );
    assert!(
        !table.contains(&key[4..]),
        "the table holds no key: {table}"
    );
    let template = proxy_config(UNUSED_UPSTREAM);
    (raw.proxy, raw.admin.listen) = (template.proxy, template.admin.listen);
    let proxy = spawn_proxy_with(raw).await;
    let resp = TestClient::with_token(key.to_owned())
        .get(&admin_url(&proxy, "/api/v1/whoami"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(resp.json()["name"], "eve \"ops\"");
    assert_eq!(
        resp.json()["roles"],
        serde_json::json!(["auditor", "approver"])
    );
    // Roles are checked before anything is printed.
    let out = Command::new(syncgate_bin())
        .args(["admin", "new-key", "--name", "x", "--roles", "auditor,root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no key for a refused entry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"root\""));
}

#[test]
fn serve_refuses_principals_on_a_non_loopback_admin_listener_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    let (_, hash) = make_key();
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"0.0.0.0:0\"\n[[admin.principals]]\nname = \"ann\"\n\
             roles = [\"auditor\"]\nkey_hash = \"{hash}\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(syncgate_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            UNUSED_UPSTREAM,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("syncgate.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with principals on 0.0.0.0 and no admin TLS");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(out.stdout.is_empty(), "it never said it listens");
    assert!(
        stderr.contains("admin.listen")
            && stderr.contains("bind admin.listen to loopback or configure [admin.tls]"),
        "{stderr}"
    );
}
