//! Issue 10: the admin API's OpenAPI document (`GET /api/openapi.json`) is true of the live admin
//! listener.
//!
//! schemathesis (from PyPI, pinned in `tests/openapi/requirements.txt`) reads the document the
//! listener serves, then sends each documented operation valid and invalid requests and checks
//! every response against it: status codes, content types, documented headers (`WWW-Authenticate`
//! on 401, `request-id` on errors), bodies against their schemas, invalid input refused with a
//! 4xx, valid input accepted, undocumented methods answered 405 with `Allow`, and (`ignored_auth`)
//! that an operation needing a key refuses the same request without one or with a bad one. It runs
//! three times against one proxy with recorded operations (allowed and refused): as an admin
//! (every route answers, `/api/v1/reads` included), as an approver (the auditor and admin routes'
//! 403), and with no key (every 401). Stateful cases follow the document's link from a page of
//! operations to `GET /api/v1/operations/{id}`, so one operation's detail is checked too.
//!
//! `tests/openapi/hooks.py` sends a valid long-poll `wait` above one second as one second, so the
//! events route's long poll runs without making the run minutes long. The export's body is not
//! printed unless a check fails, and the log holds three operations, so its output stays small.
//!
//! Its virtualenv is built under the target directory by `tests/support/python_venv.sh` (once,
//! and again when the requirements change). It needs `python3` (>= 3.10, with `venv`) and, the
//! first time, PyPI; without them it fails loudly, never skips.

#[path = "api/harness.rs"]
mod harness;
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/pki.rs"]
mod pki;
#[path = "support/python.rs"]
mod python;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use syncgate::config::RawConfig;

use harness::{TestProxy, spawn_proxy_with, syncgate_bin};
use helpers::{TestClient, TestEmulator, spawn_emulator};

/// One schemathesis run: ~10 s alone on two cores; the deadline allows for a loaded machine.
const RUN_DEADLINE: Duration = Duration::from_secs(240);
/// Cases per operation and phase: enough to reach every parameter's invalid forms, small enough
/// that the three runs take well under a minute.
const MAX_EXAMPLES: &str = "30";
/// A fixed seed, so a failure reproduces (change it locally to explore further).
const SEED: &str = "20261130";

/// The partner whose sync policy the rules allow, and one they refuse to enable.
const ALLOWED: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const REFUSED: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const RULES: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [{ tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_openapi_document_true_of_the_live_admin_api() {
    let python = python::python_venv("openapi/requirements.txt", "openapi-venv").await;
    let api = AdminApi::start().await;
    let operations = api.documented_operations().await;
    api.schemathesis(&python, Some(&api.admin), operations, "as an admin")
        .await;
    api.schemathesis(&python, Some(&api.approver), operations, "as an approver")
        .await;
    api.schemathesis(&python, None, operations, "without a key")
        .await;
    api.proxy.shutdown().await;
}

/// A proxy in front of the emulator with an admin and an approver, and operations recorded.
struct AdminApi {
    proxy: TestProxy,
    /// The admin listener's base URL.
    base: String,
    admin: String,
    approver: String,
    _upstream: TestEmulator,
}

impl AdminApi {
    async fn start() -> AdminApi {
        let upstream = spawn_emulator().await;
        let (admin, admin_table) = new_key("ann", "admin");
        let (approver, approver_table) = new_key("abe", "approver");
        let mut raw: RawConfig =
            toml::from_str(&format!("{RULES}\n{admin_table}\n{approver_table}"))
                .expect("the rules and the tables `admin new-key` printed parse");
        raw.proxy.listen = "127.0.0.1:0".into();
        raw.admin.listen = "127.0.0.1:0".into();
        raw.upstream.url = upstream.base.clone();
        let proxy = spawn_proxy_with(raw).await;
        record_operations(&upstream, &proxy).await;
        AdminApi {
            base: format!("http://{}", proxy.admin_addr),
            proxy,
            admin,
            approver,
            _upstream: upstream,
        }
    }

    /// How many operations the served document has, less the one that serves it (schemathesis
    /// leaves out the operation it read the document from): every one must be tested.
    async fn documented_operations(&self) -> usize {
        let resp = TestClient::without_token()
            .get(&format!("{}/api/openapi.json", self.base))
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        let doc = resp.json();
        let paths = doc["paths"].as_object().expect("the document has paths");
        paths
            .iter()
            .filter(|(path, _)| *path != "/api/openapi.json")
            .map(|(_, item)| item.as_object().map_or(0, |methods| methods.len()))
            .sum()
    }

    /// Run schemathesis with every check against the served document; it must find no issue.
    async fn schemathesis(&self, python: &Path, key: Option<&str>, operations: usize, who: &str) {
        let mut run = Command::new(python);
        run.args(["-m", "schemathesis.cli", "run"])
            .arg(format!("{}/api/openapi.json", self.base))
            .args(["--url", &self.base])
            .args(["--checks", "all"])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
            .args(["--generation-database", "none", "--no-color"])
            .env(
                "SCHEMATHESIS_HOOKS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/hooks.py"),
            )
            // Its crash cache stays out of the checkout.
            .current_dir(env!("CARGO_TARGET_TMPDIR"))
            // The loopback listener is never reached through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        if let Some(key) = key {
            run.args(["-H", &format!("Authorization: Bearer {key}")]);
        }
        let started = Instant::now();
        let output = python::run_to_end(run, RUN_DEADLINE).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("schemathesis {who} took {:.1?}", started.elapsed());
        assert!(
            output.status.success(),
            "schemathesis {who} found issues ({}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(
            stdout.contains(&format!("Tested: {operations}\n")),
            "schemathesis {who} did not test all {operations} operations:\n{stdout}"
        );
        let summary = stdout.lines().rev().take(3).collect::<Vec<_>>();
        println!("{summary:?}");
    }
}

/// `syncgate admin new-key`: the key (first line), and the `[[admin.principals]]` table it printed.
fn new_key(name: &str, roles: &str) -> (String, String) {
    let out = Command::new(syncgate_bin())
        .args(["admin", "new-key", "--name", name, "--roles", roles])
        .output()
        .expect("syncgate admin new-key runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (key, table) = text.split_once('\n').expect("a key line, then the table");
    (key.to_owned(), table.to_owned())
}

/// Operations of each shape a row can take: allowed and applied, refused by a rule.
async fn record_operations(upstream: &TestEmulator, proxy: &TestProxy) {
    let client = TestClient::new();
    for partner in [ALLOWED, REFUSED] {
        let url = format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners",
            upstream.base
        );
        let resp = client
            .send(Method::POST, &url, Some(json!({ "tenantId": partner })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{:?}", resp.body);
    }
    let sync = |partner: &str| {
        format!(
            "{}/v1.0/policies/crossTenantAccessPolicy/partners/{partner}/identitySynchronization",
            proxy.url
        )
    };
    let changes: [(Method, &str, Value, StatusCode); 3] = [
        (
            Method::PUT,
            ALLOWED,
            json!({"displayName": "Fabrikam sync"}),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::PATCH,
            ALLOWED,
            json!({"userSyncInbound": {"isSyncAllowed": true}}),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::PATCH,
            REFUSED,
            json!({"userSyncInbound": {"isSyncAllowed": true}}),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (method, partner, body, expected) in changes {
        let resp = client
            .send(method.clone(), &sync(partner), Some(body))
            .await;
        assert_eq!(resp.status, expected, "{method} {partner}: {:?}", resp.body);
    }
}
