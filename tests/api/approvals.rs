//! Issue 12: the change-approval gate end to end, on SQLite and on PostgreSQL. A change the
//! allow-list holds becomes an approval request; approvers vote through the admin API; the
//! requester's identical retry is sent once; every other retry is refused with a message that
//! says why; expiry is checked with tokio's clock moved forward, never by sleeping.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use syncgate::config::RawConfig;

use crate::admin_auth::{make_key, principal};
use crate::admin_log::Backend;
use crate::governed::{PARTNER, seed_partner, sync_url};
use crate::harness::{TestProxy, proxy_config, spawn_proxy_with};
use crate::helpers::{TestClient, TestEmulator, TestResponse, admin_token, spawn_emulator};
use crate::postgres::TestDatabase;

/// The requester's token's oid (`admin_token()`), and another requester's.
const REQUESTER_OID: &str = "11111111-1111-1111-1111-111111111111";
const OTHER_OID: &str = "22222222-2222-2222-2222-222222222222";

/// The rules and policy every test starts from: sync may be enabled for LISTED only; anything
/// else needs two approvers.
const RULES: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
action = "require_approval"
partners = [{ tenant_id = "11111111-2222-4333-8444-555555555555", display_name = "Contoso Partner" }]

[approvals.policies.default]
required = 2
vote_window = "1h"
send_window = "10m"
"#;

/// A proxy with the gate, its emulator, and admin keys for: `ann`, `bob`, `cy` (approvers),
/// `self` (an approver whose oid is the requester's), `nooid` (an approver without an oid) and
/// `audrey` (auditor) and `ada` (admin, without an oid).
struct Gate {
    emulator: TestEmulator,
    proxy: TestProxy,
    keys: std::collections::HashMap<&'static str, String>,
    /// The configuration it runs with, for a restart on the same log.
    raw: RawConfig,
    db: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl Gate {
    async fn new(backend: Backend) -> Gate {
        Gate::with(backend, "", |_| {}).await
    }

    /// A gate whose configuration adds `toml` to [`RULES`] and is changed by `configure`.
    async fn with(backend: Backend, toml: &str, configure: impl FnOnce(&mut RawConfig)) -> Gate {
        let emulator = spawn_emulator().await;
        seed_partner(&emulator, PARTNER).await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw: RawConfig = toml::from_str(&format!("{RULES}\n{toml}")).unwrap();
        let base = proxy_config(&emulator.base);
        raw.proxy.listen = base.proxy.listen;
        raw.admin.listen = base.admin.listen;
        raw.upstream.url = base.upstream.url;
        let mut keys = std::collections::HashMap::new();
        let people: [(&'static str, &[&str], Option<&str>); 7] = [
            (
                "ann",
                &["approver"],
                Some("aaaaaaaa-0000-4000-8000-000000000001"),
            ),
            (
                "bob",
                &["approver"],
                Some("bbbbbbbb-0000-4000-8000-000000000002"),
            ),
            (
                "cy",
                &["approver"],
                Some("cccccccc-0000-4000-8000-000000000003"),
            ),
            ("self", &["approver"], Some(REQUESTER_OID)),
            ("nooid", &["approver"], None),
            (
                "audrey",
                &["auditor"],
                Some("dddddddd-0000-4000-8000-000000000004"),
            ),
            ("ada", &["admin"], None),
        ];
        for (name, roles, oid) in people {
            let (key, hash) = make_key();
            raw.admin.principals.push(principal(name, roles, oid, hash));
            keys.insert(name, key);
        }
        let db = match backend {
            Backend::Sqlite => {
                raw.store.path = dir.path().join("syncgate.db");
                None
            }
            Backend::Postgres => {
                let db = TestDatabase::create().await;
                raw.store.url = Some(db.url());
                raw.store.token_key = Some(dir.path().join("token-key"));
                Some(db)
            }
        };
        raw.checkpoints.key = Some(dir.path().join("checkpoint-key"));
        configure(&mut raw);
        let proxy = spawn_proxy_with(raw.clone()).await;
        Gate {
            emulator,
            proxy,
            keys,
            raw,
            db,
            _dir: dir,
        }
    }

    /// The held change, sent by the requester (`admin_token()`).
    async fn send(&self) -> TestResponse {
        self.send_as(admin_token(), enable("Fabrikam")).await
    }

    async fn send_as(&self, token: String, body: Value) -> TestResponse {
        TestClient::with_token(token)
            .send(
                Method::PUT,
                &sync_url(&self.proxy.url, "v1.0", PARTNER),
                Some(body),
            )
            .await
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.admin_addr)
    }

    /// `who` votes `ballot` on `id`: the status and the answer's JSON.
    async fn vote(
        &self,
        who: &str,
        id: &str,
        ballot: &str,
        comment: Option<&str>,
    ) -> (StatusCode, Value) {
        let resp = TestClient::with_token(self.keys[who].clone())
            .send(
                Method::POST,
                &self.admin(&format!("/api/v1/approvals/{id}/{ballot}")),
                Some(json!({ "comment": comment })),
            )
            .await;
        let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, body)
    }

    async fn approval(&self, id: &str) -> Value {
        let resp = TestClient::with_token(self.keys["audrey"].clone())
            .get(&self.admin(&format!("/api/v1/approvals/{id}")))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
        resp.json()
    }

    async fn approvals(&self) -> Vec<Value> {
        let resp = TestClient::with_token(self.keys["audrey"].clone())
            .get(&self.admin("/api/v1/approvals"))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
        resp.json()["value"].as_array().unwrap().clone()
    }

    /// Every event in the log, oldest first (through the admin API, on either backend).
    async fn events(&self) -> Vec<Value> {
        let resp = TestClient::with_token(self.keys["audrey"].clone())
            .get(&self.admin("/api/v1/events?limit=1000"))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
        resp.json()["value"].as_array().unwrap().clone()
    }

    async fn kinds_of_approval(&self, id: &str) -> Vec<String> {
        self.events()
            .await
            .iter()
            .filter(|e| e["approval_id"] == id)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// PUTs and PATCHes the emulator received (what went upstream).
    async fn writes_upstream(&self) -> usize {
        let log = TestClient::new()
            .get(&format!("{}/_emulator/requests", self.emulator.base))
            .await
            .json();
        log["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "PUT" || r["method"] == "PATCH")
            .count()
    }

    /// Two approvals: the change is approved.
    async fn approve(&self, id: &str) {
        assert_eq!(
            self.vote("ann", id, "approve", Some("looks right")).await.0,
            StatusCode::OK
        );
        let (status, after) = self.vote("bob", id, "approve", None).await;
        assert_eq!(status, StatusCode::OK, "{after}");
        assert_eq!(after["status"], "approved", "{after}");
    }

    /// Stop the proxy and start it again on the same log, its configuration changed by
    /// `configure`.
    async fn restart(&mut self, configure: impl FnOnce(&mut RawConfig)) {
        let mut raw = self.raw.clone();
        configure(&mut raw);
        let old = std::mem::replace(&mut self.proxy, spawn_proxy_with(raw.clone()).await);
        drop(old);
        self.raw = raw;
    }

    /// `/metrics` as the auditor reads it.
    async fn metrics(&self) -> String {
        let resp = TestClient::with_token(self.keys["audrey"].clone())
            .get(&self.admin("/metrics"))
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        String::from_utf8(resp.body.to_vec()).unwrap()
    }

    async fn finish(self) {
        self.proxy.shutdown().await;
        if let Some(db) = self.db {
            db.drop_now().await;
        }
    }
}

fn enable(name: &str) -> Value {
    json!({"displayName": name, "userSyncInbound": {"isSyncAllowed": true}})
}

/// The approval id of a held answer, checked to be in the header, `innerError` and the message.
fn held(resp: &TestResponse, code: &str) -> String {
    assert_eq!(
        resp.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(
        resp.error_code(),
        code,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    let id = resp
        .header("x-syncgate-approval-id")
        .expect("x-syncgate-approval-id")
        .to_owned();
    let body = resp.json();
    assert_eq!(
        body["error"]["innerError"]["syncgate-approval-id"],
        id.as_str()
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&id),
        "{body}"
    );
    id
}

fn message(resp: &TestResponse) -> String {
    resp.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Run the scenario `$name` on SQLite and on PostgreSQL.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await;
            }
        }
    };
}

async fn held_then_approved_by_two_then_applied_once(backend: Backend) {
    let gate = Gate::new(backend).await;
    let first = gate.send().await;
    let id = held(&first, "SyncgateApprovalRequired");
    assert_eq!(gate.writes_upstream().await, 0, "nothing went upstream");
    // Asking again before anyone voted names the same request; no second one is made.
    let again = gate.send().await;
    assert_eq!(held(&again, "SyncgateApprovalRequired"), id);
    assert!(message(&again).contains("0 of 2"), "{}", message(&again));
    assert_eq!(gate.approvals().await.len(), 1);
    let pending = gate.approval(&id).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["partner_tenant_id"], PARTNER);
    assert_eq!(pending["requester"]["key"], format!("oid:{REQUESTER_OID}"));
    assert_eq!(pending["change"]["request_body"], enable("Fabrikam"));

    let (status, after_one) = gate
        .vote("ann", &id, "approve", Some("checked the ticket"))
        .await;
    assert_eq!(status, StatusCode::OK, "{after_one}");
    assert_eq!(after_one["status"], "pending");
    assert_eq!(after_one["progress"], "1 of 2 approvals");
    held(&gate.send().await, "SyncgateApprovalRequired");
    let (status, after_two) = gate.vote("bob", &id, "approve", None).await;
    assert_eq!(status, StatusCode::OK, "{after_two}");
    assert_eq!(after_two["status"], "approved");

    let applied = gate.send().await;
    assert_eq!(applied.status, StatusCode::NO_CONTENT, "{:?}", applied.body);
    assert_eq!(gate.writes_upstream().await, 1);
    let used = gate.approval(&id).await;
    assert_eq!(used["status"], "used");
    let operation = applied.header("x-syncgate-audit-id").unwrap();
    assert_eq!(used["used_by"], operation);

    // The trail: requested, two votes, and the change sent under the approval.
    assert_eq!(
        gate.kinds_of_approval(&id).await,
        [
            "approval_requested",
            "denied",
            "approval_vote",
            "denied",
            "approval_vote",
            "received",
            "completed"
        ]
    );
    let events = gate.events().await;
    let votes: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval_vote")
        .collect();
    assert_eq!(votes[0]["approval"]["principal"], "ann");
    assert_eq!(votes[0]["approval"]["comment"], "checked the ticket");
    assert_eq!(votes[1]["approval"]["status"], "approved");
    let requested = events
        .iter()
        .find(|e| e["kind"] == "approval_requested")
        .unwrap();
    assert_eq!(
        requested["operation_id"],
        first.header("x-syncgate-audit-id").unwrap()
    );
    // The held operation ended with its request: the operations index says so.
    let operations = TestClient::with_token(gate.keys["audrey"].clone())
        .get(&gate.admin("/api/v1/operations?limit=100"))
        .await
        .json();
    let held_op = operations["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operation_id"] == first.header("x-syncgate-audit-id").unwrap())
        .cloned()
        .unwrap();
    assert_eq!(held_op["terminal"], "approval_requested", "{held_op}");
    assert_eq!(held_op["approval_id"], id.as_str());
    assert!(
        requested["approval"]["body_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // A second retry of the same change is refused: the approval sent one change.
    let second = gate.send().await;
    assert_eq!(held(&second, "SyncgateApprovalUsed"), id);
    assert_eq!(gate.writes_upstream().await, 1);
    gate.finish().await;
}
both!(held_then_approved_by_two_then_applied_once);

async fn nobody_votes_on_their_own_request_and_a_vote_counts_once(backend: Backend) {
    let gate = Gate::new(backend).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    let (status, body) = gate.vote("self", &id, "approve", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("own request"),
        "{body}"
    );
    let (status, body) = gate.vote("nooid", &id, "approve", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no oid"),
        "{body}"
    );
    let (status, body) = gate.vote("audrey", &id, "approve", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an auditor cannot vote: {body}"
    );
    assert_eq!(
        gate.vote("ann", &id, "approve", None).await.0,
        StatusCode::OK
    );
    let (status, body) = gate.vote("ann", &id, "approve", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already voted"),
        "{body}"
    );
    let a = gate.approval(&id).await;
    assert_eq!(a["status"], "pending");
    assert_eq!(a["progress"], "1 of 2 approvals");
    assert_eq!(a["votes"].as_array().unwrap().len(), 1);
    held(&gate.send().await, "SyncgateApprovalRequired");
    assert_eq!(gate.writes_upstream().await, 0);
    gate.finish().await;
}
both!(nobody_votes_on_their_own_request_and_a_vote_counts_once);

async fn one_rejection_rejects(backend: Backend) {
    let gate = Gate::new(backend).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    assert_eq!(
        gate.vote("ann", &id, "approve", None).await.0,
        StatusCode::OK
    );
    let (status, body) = gate
        .vote("bob", &id, "reject", Some("unknown partner"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    let (status, _) = gate.vote("cy", &id, "approve", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "voting is over");
    let refused = gate.send().await;
    assert_eq!(held(&refused, "SyncgateApprovalRejected"), id);
    assert!(
        message(&refused).contains("bob: unknown partner"),
        "{}",
        message(&refused)
    );
    assert_eq!(gate.writes_upstream().await, 0);
    gate.finish().await;
}
both!(one_rejection_rejects);

async fn two_racing_retries_send_the_change_once(backend: Backend) {
    let gate = Gate::new(backend).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    gate.approve(&id).await;
    let (a, b) = tokio::join!(gate.send(), gate.send());
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::FORBIDDEN],
        "{a:?} {b:?}"
    );
    let loser = if a.status == StatusCode::FORBIDDEN {
        &a
    } else {
        &b
    };
    assert_eq!(held(loser, "SyncgateApprovalUsed"), id);
    assert_eq!(gate.writes_upstream().await, 1);
    let received = gate
        .events()
        .await
        .iter()
        .filter(|e| e["kind"] == "received" && e["approval_id"] == id.as_str())
        .count();
    assert_eq!(received, 1);
    gate.finish().await;
}
both!(two_racing_retries_send_the_change_once);

async fn an_approval_covers_only_its_body_and_its_requester(backend: Backend) {
    let gate = Gate::new(backend).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    gate.approve(&id).await;
    // Another body: a request of its own, and the answer says why the approval does not cover it.
    let other_body = gate.send_as(admin_token(), enable("Fabrikam Ltd")).await;
    let new_id = held(&other_body, "SyncgateApprovalRequired");
    assert_ne!(new_id, id);
    assert!(
        message(&other_body).contains("different request body"),
        "{}",
        message(&other_body)
    );
    // Another requester, the same body.
    let someone = syncgate::token::unsigned_jwt(&json!({
        "oid": OTHER_OID, "upn": "mallory@contoso.example", "idtyp": "user",
        "scp": "Policy.ReadWrite.CrossTenantAccess",
    }));
    let other_requester = gate.send_as(someone, enable("Fabrikam")).await;
    held(&other_requester, "SyncgateApprovalRequired");
    assert!(
        message(&other_requester).contains("different requester"),
        "{}",
        message(&other_requester)
    );
    assert_eq!(gate.writes_upstream().await, 0);
    // The approved change itself still goes through.
    assert_eq!(gate.send().await.status, StatusCode::NO_CONTENT);
    gate.finish().await;
}
both!(an_approval_covers_only_its_body_and_its_requester);

async fn a_state_changed_by_someone_else_voids_the_approval(backend: Backend) {
    let gate = Gate::new(backend).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    gate.approve(&id).await;
    // Someone changes the partner's sync policy directly at Graph, around syncgate.
    let direct = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&gate.emulator.base, "v1.0", PARTNER),
            Some(json!({"displayName": "changed elsewhere"})),
        )
        .await;
    assert!(direct.status.is_success(), "{direct:?}");
    let refused = gate.send().await;
    assert_eq!(held(&refused, "SyncgateApprovalVoid"), id);
    assert!(
        message(&refused).contains("state changed"),
        "{}",
        message(&refused)
    );
    assert_eq!(gate.approval(&id).await["status"], "void");
    assert!(
        gate.kinds_of_approval(&id)
            .await
            .contains(&"approval_voided".to_owned())
    );
    // Sending it again asks for a new approval, of the change from the new state.
    let again = gate.send().await;
    let new_id = held(&again, "SyncgateApprovalRequired");
    assert_ne!(new_id, id);
    assert_eq!(gate.writes_upstream().await, 1, "only the direct change");
    gate.finish().await;
}
both!(a_state_changed_by_someone_else_voids_the_approval);

async fn a_held_batch_sub_request_is_403_and_its_dependents_424(backend: Backend) {
    let gate = Gate::new(backend).await;
    let sync =
        format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization");
    let batch = json!({"requests": [
        {"id": "held", "method": "PUT", "url": sync, "headers": {"content-type": "application/json"}, "body": enable("Fabrikam")},
        {"id": "after", "method": "PATCH", "url": sync, "headers": {"content-type": "application/json"}, "body": {"displayName": "x"}, "dependsOn": ["held"]}
    ]});
    let resp = TestClient::with_token(admin_token())
        .send(
            Method::POST,
            &format!("{}/v1.0/$batch", gate.proxy.url),
            Some(batch),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    let body = resp.json();
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let held_response = by_id("held");
    assert_eq!(held_response["status"], 403, "{body}");
    assert_eq!(
        held_response["body"]["error"]["code"],
        "SyncgateApprovalRequired"
    );
    let id = held_response["body"]["error"]["innerError"]["syncgate-approval-id"]
        .as_str()
        .unwrap()
        .to_owned();
    // syncgate's headers keep their spelling inside a batch, as outside.
    assert_eq!(
        held_response["headers"]["x-syncgate-approval-id"],
        id.as_str(),
        "{body}"
    );
    assert_eq!(by_id("after")["status"], 424);
    assert_eq!(gate.approval(&id).await["status"], "pending");
    assert_eq!(gate.writes_upstream().await, 0);
    gate.finish().await;
}
both!(a_held_batch_sub_request_is_403_and_its_dependents_424);

/// Move tokio's clock (which approval deadlines are read against) forward by `by`, at once.
async fn travel(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

async fn an_undecided_request_expires_when_used_after_its_vote_window(backend: Backend) {
    // A sweeper that never runs here: expiry is enforced where the request is used.
    let gate = Gate::with(backend, "", |raw| {
        raw.approvals.sweep_every = Some("1000h".into())
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    assert_eq!(
        gate.vote("ann", &id, "approve", None).await.0,
        StatusCode::OK
    );
    travel(Duration::from_secs(3601)).await;
    let refused = gate.send().await;
    assert_eq!(held(&refused, "SyncgateApprovalExpired"), id);
    assert_eq!(gate.approval(&id).await["status"], "expired");
    let (status, _) = gate.vote("bob", &id, "approve", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "no vote after expiry");
    assert!(
        gate.kinds_of_approval(&id)
            .await
            .contains(&"approval_expired".to_owned())
    );
    // The next attempt is a new request that says what became of the old one.
    let again = gate.send().await;
    let new_id = held(&again, "SyncgateApprovalRequired");
    assert_ne!(new_id, id);
    assert!(message(&again).contains("expired"), "{}", message(&again));
    assert_eq!(gate.writes_upstream().await, 0);
    gate.finish().await;
}
both!(an_undecided_request_expires_when_used_after_its_vote_window);

async fn an_approved_change_not_sent_in_its_send_window_expires(backend: Backend) {
    let gate = Gate::with(backend, "", |raw| {
        raw.approvals.sweep_every = Some("1000h".into())
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    gate.approve(&id).await;
    travel(Duration::from_secs(601)).await;
    let refused = gate.send().await;
    assert_eq!(held(&refused, "SyncgateApprovalExpired"), id);
    assert!(
        message(&refused).contains("send window"),
        "{}",
        message(&refused)
    );
    assert_eq!(gate.writes_upstream().await, 0);
    gate.finish().await;
}
both!(an_approved_change_not_sent_in_its_send_window_expires);

async fn the_sweeper_expires_what_nobody_comes_back_for(backend: Backend) {
    let gate = Gate::with(backend, "", |raw| {
        raw.approvals.sweep_every = Some("1m".into())
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    travel(Duration::from_secs(3700)).await;
    // The sweeper's tick is due now; give its task a moment to run (no window is waited out).
    let mut status = Value::Null;
    for _ in 0..200 {
        status = gate.approval(&id).await["status"].clone();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "expired");
    let events = gate.events().await;
    let expired = events
        .iter()
        .find(|e| e["kind"] == "approval_expired" && e["approval_id"] == id.as_str())
        .expect("an approval_expired event");
    assert!(
        expired["detail"].as_str().unwrap().contains("vote window"),
        "{expired}"
    );
    gate.finish().await;
}
both!(the_sweeper_expires_what_nobody_comes_back_for);

/// A webhook receiver: every POST it takes, as (path, JSON body), answered `status`.
struct Webhooks {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    async fn start() -> Webhooks {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_owned();
                            let json = req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/json");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            assert!(json, "a notice is sent as application/json");
                            sink.lock().unwrap().push((path, value));
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"1")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhooks {
            url,
            received,
            _task: task,
        }
    }

    /// Wait (a bounded number of short looks) until `n` notices arrived at `path`; them.
    async fn at_least(&self, path: &str, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let got: Vec<Value> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, v)| v.clone())
                .collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "fewer than {n} notices at {path}: {:?}",
            self.received.lock().unwrap()
        );
    }
}

fn webhook(name: &str, url: &str, format: &str) -> syncgate::approvals::RawWebhook {
    syncgate::approvals::RawWebhook {
        name: name.into(),
        url: url.into(),
        format: Some(format.into()),
        timeout: Some("2s".into()),
    }
}

async fn notices_reach_the_webhooks_in_each_shape(backend: Backend) {
    let hooks = Webhooks::start().await;
    let base = hooks.url.clone();
    let gate = Gate::with(backend, "", |raw| {
        raw.approvals.link = Some("https://syncgate-admin.contoso.example".into());
        raw.approvals.webhooks = vec![
            webhook("json", &format!("{base}/json"), "json"),
            webhook("teams", &format!("{base}/teams"), "teams"),
            webhook("slack", &format!("{base}/slack"), "slack"),
        ];
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    let link = format!("https://syncgate-admin.contoso.example/api/v1/approvals/{id}");
    let json = &gate.approvals().await;
    assert_eq!(json.len(), 1);
    let doc = hooks.at_least("/json", 1).await.remove(0);
    assert_eq!(doc["type"], "syncgate.approval");
    assert_eq!(doc["event"], "requested");
    assert_eq!(doc["approval"]["id"], id.as_str());
    assert_eq!(doc["approval"]["partner_tenant_id"], PARTNER);
    assert_eq!(
        doc["approval"]["requester"]["key"],
        format!("oid:{REQUESTER_OID}")
    );
    assert_eq!(
        doc["approval"]["change"]["request_body"],
        enable("Fabrikam")
    );
    assert!(doc["approval"]["change"]["diff"].is_array(), "{doc}");
    assert_eq!(doc["link"], link.as_str());
    let teams = hooks.at_least("/teams", 1).await.remove(0);
    assert_eq!(teams["type"], "message");
    let card = &teams["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    let text = card["content"].to_string();
    assert!(
        text.contains(PARTNER) && text.contains("admin@contoso.example"),
        "{text}"
    );
    assert_eq!(card["content"]["actions"][0]["url"], link.as_str());
    let slack = hooks.at_least("/slack", 1).await.remove(0);
    assert!(slack["text"].as_str().unwrap().contains(PARTNER), "{slack}");
    assert!(slack["blocks"].to_string().contains(&link), "{slack}");

    gate.approve(&id).await;
    let decided = hooks.at_least("/json", 2).await;
    assert_eq!(decided[1]["event"], "approved");
    assert_eq!(decided[1]["approval"]["votes"].as_array().unwrap().len(), 2);
    assert!(
        gate.metrics()
            .await
            .contains("syncgate_webhook_deliveries_total{webhook=\"json\"} 2")
    );
    gate.finish().await;
}
both!(notices_reach_the_webhooks_in_each_shape);

async fn an_unreachable_webhook_is_retried_without_loss_across_a_restart(backend: Backend) {
    // A port nothing listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let mut gate = Gate::with(backend, "", |raw| {
        raw.approvals.webhooks = vec![webhook("ops", &dead_url, "json")];
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    // The hold was answered at once, whatever the webhook does.
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = gate.metrics().await;
        // The gauges are read after the failed attempt is recorded: wait for both.
        if metrics.contains("syncgate_webhook_failures_total{webhook=\"ops\"} 1")
            && metrics.contains("syncgate_webhook_notices_waiting 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains("syncgate_webhook_failures_total{webhook=\"ops\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("syncgate_webhook_notices_waiting 1"),
        "{metrics}"
    );
    // Votes are not held up by it either.
    assert_eq!(
        gate.vote("ann", &id, "approve", None).await.0,
        StatusCode::OK
    );

    let hooks = Webhooks::start().await;
    let live = format!("{}/hook", hooks.url);
    gate.restart(|raw| raw.approvals.webhooks = vec![webhook("ops", &live, "json")])
        .await;
    let got = hooks.at_least("/hook", 1).await;
    assert_eq!(got[0]["event"], "requested");
    assert_eq!(got[0]["approval"]["id"], id.as_str());
    gate.finish().await;
}
both!(an_unreachable_webhook_is_retried_without_loss_across_a_restart);

async fn a_policy_can_ask_for_a_justification_and_a_well_formed_ticket(backend: Backend) {
    let gate = Gate::with(backend, "", |raw| {
        let policy = raw.approvals.policies.get_mut("default").unwrap();
        policy.require_justification = true;
        policy.ticket_pattern = Some("CHG[0-9]{7}".into());
    })
    .await;
    let put = |headers: &[(&str, &str)]| {
        let mut map = http::HeaderMap::new();
        map.insert("content-type", "application/json".parse().unwrap());
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let url = sync_url(&gate.proxy.url, "v1.0", PARTNER);
        async move {
            TestClient::with_token(admin_token())
                .send_raw(
                    Method::PUT,
                    &url,
                    map,
                    enable("Fabrikam").to_string().into(),
                )
                .await
        }
    };
    let why = ("x-syncgate-justification", "Fabrikam merger, day 1");
    let none = put(&[]).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert_eq!(none.error_code(), "SyncgateJustificationRequired");
    let no_ticket = put(&[why]).await;
    assert_eq!(no_ticket.error_code(), "SyncgateTicketRequired");
    let bad_ticket = put(&[why, ("x-syncgate-ticket", "CHG12")]).await;
    assert_eq!(bad_ticket.error_code(), "SyncgateTicketRequired");
    assert!(
        message(&bad_ticket).contains("CHG[0-9]{7}"),
        "{}",
        message(&bad_ticket)
    );
    let twice = put(&[why, why, ("x-syncgate-ticket", "CHG0012345")]).await;
    assert_eq!(
        twice.status,
        StatusCode::BAD_REQUEST,
        "an ambiguous header is refused"
    );
    assert!(
        gate.approvals().await.is_empty(),
        "no request for an incomplete one"
    );

    let good = put(&[why, ("x-syncgate-ticket", "CHG0012345")]).await;
    let id = held(&good, "SyncgateApprovalRequired");
    let a = gate.approval(&id).await;
    assert_eq!(a["justification"], "Fabrikam merger, day 1");
    assert_eq!(a["ticket"], "CHG0012345");
    let events = gate.events().await;
    let requested = events
        .iter()
        .find(|e| e["kind"] == "approval_requested")
        .unwrap();
    assert_eq!(requested["approval"]["ticket"], "CHG0012345");
    assert_eq!(
        requested["approval"]["justification"],
        "Fabrikam merger, day 1"
    );
    gate.finish().await;
}
both!(a_policy_can_ask_for_a_justification_and_a_well_formed_ticket);

/// `syncgate approvals ...` against the running gate, the key in the environment.
async fn cli(gate: &Gate, who: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(crate::harness::syncgate_bin());
    command
        .arg("approvals")
        .args(args)
        .args(["--admin-url", &format!("http://{}", gate.proxy.admin_addr)])
        .env("SYNCGATE_ADMIN_KEY", &gate.keys[who])
        .env_remove("SYNCGATE_ADMIN_URL");
    // The proxy runs on this test's runtime: wait for the command on another thread.
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_shows_and_votes_through_the_admin_api() {
    let gate = Gate::new(Backend::Sqlite).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    let (ok, out, err) = cli(&gate, "ann", &["list", "--status", "pending"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&id) && out.contains("0 of 2 approvals"),
        "{out}"
    );
    let (ok, out, err) = cli(&gate, "ann", &["show", &id]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(PARTNER) && out.contains("admin@contoso.example"),
        "{out}"
    );
    assert!(out.contains("isSyncAllowed"), "the diff is shown: {out}");
    let (ok, out, err) = cli(&gate, "ann", &["approve", &id, "--comment", "ok by me"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("still pending (1 of 2 approvals)."), "{out}");
    // Refusals come back as the API's code and message, and a non-zero exit.
    let (ok, _, err) = cli(&gate, "self", &["approve", &id]).await;
    assert!(!ok);
    assert!(
        err.contains("SyncgateVoteRefused") && err.contains("own request"),
        "{err}"
    );
    let (ok, out, err) = cli(&gate, "bob", &["approve", &id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("now approved"), "{out}");
    assert_eq!(gate.send().await.status, StatusCode::NO_CONTENT);
    // The key comes from the environment or a file, never a flag; without one: a clear error.
    let mut bare = std::process::Command::new(crate::harness::syncgate_bin());
    bare.args(["approvals", "list"])
        .env_remove("SYNCGATE_ADMIN_KEY");
    let out = tokio::task::spawn_blocking(move || bare.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no admin API key"), "{err}");
    gate.finish().await;
}

/// Two replicas sharing one PostgreSQL log, each sent the approved change at the same moment:
/// the change goes upstream once.
#[tokio::test]
async fn two_replicas_racing_on_one_approval_send_the_change_once() {
    let gate = Gate::new(Backend::Postgres).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    gate.approve(&id).await;
    let replica = spawn_proxy_with(gate.raw.clone()).await;
    let other = TestClient::with_token(admin_token());
    let other_url = sync_url(&replica.url, "v1.0", PARTNER);
    let (a, b) = tokio::join!(
        gate.send(),
        other.send(Method::PUT, &other_url, Some(enable("Fabrikam")))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::NO_CONTENT, StatusCode::FORBIDDEN],
        "{a:?} {b:?}"
    );
    let loser = if a.status == StatusCode::FORBIDDEN {
        &a
    } else {
        &b
    };
    assert_eq!(held(loser, "SyncgateApprovalUsed"), id);
    assert_eq!(gate.writes_upstream().await, 1);
    replica.shutdown().await;
    gate.finish().await;
}

/// Requests carry the changes' bodies and before-states: reading them is recorded like any
/// read of the log, with who, what and how many.
#[tokio::test]
async fn reading_approval_requests_is_recorded_like_a_read_of_the_log() {
    let gate = Gate::new(Backend::Sqlite).await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    assert_eq!(gate.approvals().await.len(), 1);
    gate.approval(&id).await;
    let reads = TestClient::with_token(gate.keys["ada"].clone())
        .get(&gate.admin("/api/v1/reads"))
        .await
        .json();
    let rows: Vec<&Value> = reads["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["route"]
                .as_str()
                .unwrap()
                .starts_with("/api/v1/approvals")
        })
        .collect();
    assert_eq!(rows.len(), 2, "{reads}");
    assert!(rows.iter().all(|r| r["principal"] == "audrey"), "{reads}");
    assert_eq!(rows[0]["rows_returned"], 1);
    assert_eq!(rows[1]["route"], format!("/api/v1/approvals/{id}"));
    gate.finish().await;
}

async fn a_requester_cannot_flood_the_approvers(backend: Backend) {
    let gate = Gate::with(backend, "", |raw| {
        raw.approvals.max_pending_per_requester = Some(2);
    })
    .await;
    let ask = |n: usize| gate.send_as(admin_token(), enable(&format!("Fabrikam {n}")));
    let first = held(&ask(1).await, "SyncgateApprovalRequired");
    held(&ask(2).await, "SyncgateApprovalRequired");
    let third = ask(3).await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        third.body
    );
    assert_eq!(third.error_code(), "SyncgateTooManyApprovalRequests");
    assert!(third.header("x-syncgate-approval-id").is_none());
    assert_eq!(gate.approvals().await.len(), 2, "no third request was made");
    // Asking again for a change already pending is no new request, so it is not refused.
    held(&ask(1).await, "SyncgateApprovalRequired");
    // Once one is decided, there is room again.
    assert_eq!(
        gate.vote("ann", &first, "reject", None).await.0,
        StatusCode::OK
    );
    held(&ask(3).await, "SyncgateApprovalRequired");
    gate.finish().await;
}
both!(a_requester_cannot_flood_the_approvers);

/// A webhook that takes connections and never answers holds up only its own notices: the other
/// webhook gets its notice while the first one's attempt waits out its (long) timeout.
#[tokio::test]
async fn a_hanging_webhook_does_not_hold_up_another() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held_open = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let hooks = Webhooks::start().await;
    let fast = format!("{}/fast", hooks.url);
    let gate = Gate::with(Backend::Sqlite, "", |raw| {
        let mut slow = webhook("slow", &silent_url, "json");
        slow.timeout = Some("60s".into());
        raw.approvals.webhooks = vec![slow, webhook("fast", &fast, "json")];
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    // Well within the slow webhook's 60 s: delivered one after the other, this would wait.
    let got = hooks.at_least("/fast", 1).await;
    assert_eq!(got[0]["approval"]["id"], id.as_str());
    // Nor does it hold up a shutdown (the notice is sent again after the next start).
    let stopped = tokio::time::timeout(Duration::from_secs(30), gate.finish()).await;
    assert!(
        stopped.is_ok(),
        "the shutdown waited for the silent webhook"
    );
    held_open.abort();
}

/// An approver may authenticate by client certificate, as any admin principal may; its vote
/// counts like a key holder's.
#[tokio::test]
async fn an_approver_votes_with_a_client_certificate() {
    use rcgen::DnType;
    use syncgate::config::{ClientAuthMode, RawListenerTls, RawPrincipal};
    let pki = crate::pki::TestPki::generate();
    let carl = pki.issue_client(
        "carl",
        &[
            (DnType::OrganizationName, "Contoso"),
            (DnType::CommonName, "carl"),
        ],
        vec![],
    );
    let gate = Gate::with(Backend::Sqlite, "", |raw| {
        raw.admin.principals.push(RawPrincipal {
            name: "carl".into(),
            roles: vec!["approver".into()],
            oid: Some("cccccccc-1111-4000-8000-00000000ca71".into()),
            cert_subject: Some("CN=carl,O=Contoso".into()),
            ..RawPrincipal::default()
        });
        raw.admin.tls = Some(RawListenerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca_cert.clone()),
            client_auth: ClientAuthMode::Optional,
        });
    })
    .await;
    let id = held(&gate.send().await, "SyncgateApprovalRequired");
    let url = |who: &str| {
        format!(
            "https://localhost:{}/api/v1/approvals/{id}/{who}",
            gate.proxy.admin_addr.port()
        )
    };
    let vote = |identity: Option<(&std::path::Path, &std::path::Path)>, key: Option<&str>| {
        let client = crate::harness::tls_client_with(&pki.ca_cert, identity);
        let mut req =
            http::Request::post(url("approve")).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req
            .body(syncgate::body::full(r#"{"comment":"by certificate"}"#))
            .unwrap();
        async move {
            let (resp, _) = crate::harness::request(&client, req).await.unwrap();
            let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
            (resp.status(), body)
        }
    };
    let (status, after) = vote(Some((carl.0.as_path(), carl.1.as_path())), None).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["votes"][0]["principal"], "carl");
    let (status, after) = vote(None, Some(&gate.keys["bob"])).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["status"], "approved");
    assert_eq!(gate.send().await.status, StatusCode::NO_CONTENT);
    gate.finish().await;
}
