//! The official Microsoft Graph Python SDK (`msgraph-sdk`), pointed at syncgate, does the whole
//! life of a sync policy.
//!
//! syncgate's promise to users is that their Graph automation keeps working when only the base URL
//! changes. Hand-written HTTP tests check status codes and bodies, but not what real clients do
//! with them: whether the SDK can deserialise our responses, whether it accepts a 204 with no
//! body, whether Graph errors (ours or the upstream's) surface as the SDK's ordinary `ODataError`,
//! whether the SDK's default middleware (retry, redirect, telemetry headers) gets through. So this
//! test runs the real SDK, from PyPI, against the proxy in front of the emulator, and fails when
//! it cannot. `tests/sdk/msgraph_sdk_check.py` says what is checked; `tests/support/python_venv.sh`
//! builds its virtualenv under the target directory (once, and again when
//! `tests/sdk/requirements.txt` changes).
//!
//! It needs `python3` (>= 3.10, with `venv`) and, the first time, PyPI. Without them it fails
//! loudly: it never skips, because a skipped check would look like a passing one.

#[allow(dead_code)] // the client-certificate half is for tests/api
#[path = "api/pki.rs"]
mod pki;
#[path = "support/python.rs"]
mod python;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use python::{bootstrap, python_venv, run_to_end, tests_dir};

use syncgate::config::RawConfig;
use syncgate::server::ServeOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The script's own deadline is 120 s; this one catches a Python that never starts or never ends.
const CHECK_DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_creates_reads_and_deletes_a_sync_policy_through_the_proxy() {
    run_script("msgraph_sdk_check.py", "", &[]).await;
}

/// The partner the refusal check tries to enable sync for; the allow-list below omits it.
const REFUSED_PARTNER: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const ALLOWLIST: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [{ tenant_id = "90e29127-71ad-49c7-9ce8-db3f41ea06f1", display_name = "Fabrikam" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_receives_a_rule_refusal_as_an_odata_error() {
    run_script(
        "msgraph_sdk_refusal.py",
        ALLOWLIST,
        &[
            ("REFUSED_PARTNER", REFUSED_PARTNER),
            ("RULE_ID", "sync-allowlist"),
        ],
    )
    .await;
}

/// The partner the approval check enables sync for: held until an approver says yes.
const HELD_PARTNER: &str = "6b1e5a2c-7d4f-4e8a-9c3b-2f0d1e4a5b6c";

/// Issue 12: the SDK gets `SyncgateApprovalRequired` as an `ODataError` carrying the approval id,
/// and after an approver's vote the same SDK call succeeds unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_waits_for_an_approval_and_then_succeeds_unchanged() {
    // An API key for the approver, and its hash in the documented form (`sha256:salt:hash`).
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let bytes = |n: usize| -> Vec<u8> {
        (0..n.div_ceil(16))
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .take(n)
            .collect()
    };
    let (key, salt) = (bytes(32), bytes(16));
    let hash = Sha256::new()
        .chain_update(&salt)
        .chain_update(&key)
        .finalize();
    let key = format!(
        "sgk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key)
    );
    let config = format!(
        r#"
[[rules.builtin]]
id = "new-partners"
type = "partner_allowlist"
action = "require_approval"
partners = []

[approvals.policies.default]
required = 1

[[admin.principals]]
name = "ann"
roles = ["approver"]
oid = "aaaaaaaa-0000-4000-8000-000000000001"
key_hash = "sha256:{}:{}"
"#,
        hex::encode(salt),
        hex::encode(hash)
    );
    run_script(
        "msgraph_sdk_approval.py",
        &config,
        &[("HELD_PARTNER", HELD_PARTNER), ("APPROVER_KEY", &key)],
    )
    .await;
}

/// Issue 14: the same SDK check, unchanged but for the proxy setting and the CA to trust: the
/// SDK keeps `https://graph.microsoft.com` as its base URL, httpx takes `HTTPS_PROXY` and
/// `SSL_CERT_FILE` from the environment, and syncgate in egress mode intercepts the tunnel with
/// a leaf its CA minted. The emulator serves TLS as `graph.microsoft.com` (syncgate reaches it
/// through `egress.resolve`, verifying its certificate). Every write must be in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_through_egress_mode_with_only_its_proxy_and_ca_set() {
    let events = run_through_egress("msgraph_sdk_check.py", "", &[]).await;
    // Every write the SDK made is a completed operation in the log.
    let completed: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "completed")
        .filter_map(|e| e["method"].as_str())
        .collect();
    for method in ["PUT", "DELETE"] {
        assert!(
            completed.contains(&method),
            "no completed {method} in the log: {completed:?}"
        );
    }
}

/// Issue 14: a rule's refusal inside an intercepted tunnel reaches the SDK as the `ODataError`
/// 403 it gets in reverse-proxy mode, and is recorded as denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_receives_a_refusal_inside_an_egress_tunnel_as_an_odata_error() {
    let env = [
        ("REFUSED_PARTNER", REFUSED_PARTNER),
        ("RULE_ID", "sync-allowlist"),
    ];
    let events = run_through_egress("msgraph_sdk_refusal.py", ALLOWLIST, &env).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "denied" && e["partner_tenant_id"] == REFUSED_PARTNER),
        "no denied event for the refused partner"
    );
}

/// Run `script` from `tests/sdk/` with the SDK's base URL left at `https://graph.microsoft.com`,
/// through syncgate in egress mode (`config_toml` plus the egress settings below); it must exit
/// 0. The audit log's events afterwards.
async fn run_through_egress(
    script: &str,
    config_toml: &str,
    env: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let python = python_venv("sdk/requirements.txt", "sdk-venv").await;
    let pki = pki::TestPki::generate();
    // The emulator's certificate also names 127.0.0.1: the check reads its state directly.
    let (cert, key) = pki.issue_server("graph", &["graph.microsoft.com", "127.0.0.1"]);
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = listener.local_addr().unwrap();
    let options = ServeOptions {
        tls: Some(syncgate::tls::server_config(&cert, &key, None).unwrap()),
        ..ServeOptions::default()
    };
    tokio::spawn(syncgate::emulator::run(listener, options, stop.clone()));
    let db_dir = tempfile::tempdir().unwrap();
    let mut raw: RawConfig = toml::from_str(config_toml).expect("the test's config parses");
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.upstream.url = "https://graph.microsoft.com".into();
    raw.upstream.extra_ca = Some(pki.ca_cert.clone());
    raw.store.path = db_dir.path().join("syncgate.db");
    raw.egress.enabled = true;
    raw.egress.ca_cert = Some(pki.ca_cert.clone());
    raw.egress.ca_key = Some(pki.ca_key.clone());
    raw.egress
        .resolve
        .insert("graph.microsoft.com".into(), emulator.to_string());
    let settings = raw.validate().expect("egress settings");
    let proxy = syncgate::app::start(settings, stop.clone())
        .await
        .expect("proxy starts");
    let mut check = Command::new(&python);
    check
        .arg(sdk_dir().join(script))
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1")
        .env("SYNCGATE_URL", "https://graph.microsoft.com")
        .env("EMULATOR_URL", format!("https://{emulator}"))
        .env("GRAPH_TOKEN", graph_token())
        .env("HTTPS_PROXY", format!("http://{}", proxy.proxy_addr))
        .env("SSL_CERT_FILE", &pki.ca_cert)
        // The check's direct reads of the emulator's state do not go through the proxy.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    let output = run_to_end(check, CHECK_DEADLINE).await;
    assert!(
        output.status.success(),
        "{script} through egress mode failed ({}).\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    stop.cancel();
    proxy.stopped().await;
    let out = Command::new(env!("CARGO_BIN_EXE_syncgate"))
        .args([
            "audit", "list", "--format", "json", "--limit", "1000", "--db",
        ])
        .arg(db_dir.path().join("syncgate.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A token the emulator accepts, for a user with the sync policy scope.
fn graph_token() -> String {
    syncgate::token::unsigned_jwt(&serde_json::json!({
        "oid": "11111111-1111-1111-1111-111111111111",
        "upn": "admin@contoso.example",
        "tid": "00000000-0000-0000-0000-0000000000aa",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
        "idtyp": "user",
    }))
}

/// The official Microsoft Graph JavaScript client reads every sub-response of a batch syncgate
/// unbatched (issue 7: lower-case sub-response header names made its `BatchResponseContent` unable
/// to read any body, syncgate's own refusals included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_javascript_client_reads_every_sub_response_of_an_unbatched_batch() {
    let mut script = Command::new("bash");
    script.arg(tests_dir().join("js/bootstrap.sh"));
    let dir = bootstrap(script, "the JavaScript Graph client").await;
    // Over TLS, as users run it: the client sends its token only to https:// hosts it knows.
    let pki = pki::TestPki::generate();
    let config = format!(
        "{ALLOWLIST}\n[proxy.tls]\ncert = {:?}\nkey = {:?}\n",
        pki.server_cert, pki.server_key
    );
    let stack = Stack::start(&config).await;
    let mut check = Command::new("node");
    check
        .current_dir(&dir)
        .arg(dir.join("graph_client_batch_check.mjs"))
        .env("NODE_EXTRA_CA_CERTS", &pki.ca_cert)
        .env("REFUSED_PARTNER", REFUSED_PARTNER)
        .env("RULE_ID", "sync-allowlist");
    stack.run(check, "graph_client_batch_check.mjs").await;
    stack.stop().await;
}

/// Start the emulator and a proxy (with `config_toml` as its configuration) on port 0, then run
/// `script` from `tests/sdk/` with the SDK's virtualenv; it must exit 0.
async fn run_script(script: &str, config_toml: &str, env: &[(&str, &str)]) {
    let python = python_venv("sdk/requirements.txt", "sdk-venv").await;
    let stack = Stack::start(config_toml).await;
    let mut check = Command::new(&python);
    check
        .arg(sdk_dir().join(script))
        .envs(env.iter().copied())
        .env("PYTHONUNBUFFERED", "1");
    stack.run(check, script).await;
    stack.stop().await;
}

/// The emulator and a proxy in front of it, on port 0, stopped by [`Stack::stop`].
struct Stack {
    stop: CancellationToken,
    emulator_url: String,
    proxy: syncgate::app::RunningProxy,
    _db_dir: tempfile::TempDir,
}

impl Stack {
    async fn start(config_toml: &str) -> Stack {
        let stop = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(syncgate::emulator::run(
            listener,
            ServeOptions::default(),
            stop.clone(),
        ));
        let db_dir = tempfile::tempdir().unwrap();
        let mut raw: RawConfig = toml::from_str(config_toml).expect("the test's config parses");
        raw.proxy.listen = "127.0.0.1:0".into();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.upstream.url = emulator_url.clone();
        raw.store.path = db_dir.path().join("syncgate.db");
        let settings = raw.validate().expect("settings for the emulator");
        let proxy = syncgate::app::start(settings, stop.clone())
            .await
            .expect("proxy starts");
        Stack {
            stop,
            emulator_url,
            proxy,
            _db_dir: db_dir,
        }
    }

    /// Run a check program with the stack's URLs and a token in its environment; it must exit 0.
    async fn run(&self, mut check: Command, name: &str) {
        let token = graph_token();
        check
            .env("SYNCGATE_URL", self.proxy.url())
            .env("SYNCGATE_ADMIN_URL", self.proxy.admin_url())
            .env("EMULATOR_URL", &self.emulator_url)
            .env("GRAPH_TOKEN", &token)
            // HTTP clients honour proxy variables; the proxy and emulator are on loopback.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        let started = Instant::now();
        let output = run_to_end(check, CHECK_DEADLINE).await;
        println!("{name} took {:.1?}", started.elapsed());
        assert!(
            output.status.success(),
            "{name} failed ({}).\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }

    async fn stop(self) {
        self.stop.cancel();
        self.proxy.stopped().await;
    }
}

fn sdk_dir() -> PathBuf {
    tests_dir().join("sdk")
}
