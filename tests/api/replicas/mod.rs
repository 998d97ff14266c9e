//! Issue 9, end to end: several `syncgate serve` processes sharing one PostgreSQL audit log keep
//! the guarantees one process gives on SQLite. One chain with no gaps or forks, one order of
//! changes per partner whichever replica took them, exactly one `recovered` for a change whose
//! replica died, and a database that goes away turns governed writes into 503s (nothing
//! forwarded) and comes back without losing an event.

mod fleet;

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use syncgate::body::{self, Body};
use tokio::task::JoinSet;

use self::fleet::{Fleet, poll};
use crate::governed::{fault, partners, seed_partner, sync_url};
use crate::harness::{h2c_client, request};
use crate::helpers::*;
use crate::postgres::server;

/// Partner `i`'s tenant id.
fn partner(i: usize) -> String {
    format!("9c5d131d-b1c3-4fc4-9e3f-{i:012x}")
}

/// A partner with a sync policy named "seed", made straight at the emulator (setup).
async fn seed_policy(emulator: &TestEmulator, partner: &str) {
    seed_partner(emulator, partner).await;
    let resp = TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&emulator.base, "v1.0", partner),
            Some(json!({"displayName": "seed", "userSyncInbound": {"isSyncAllowed": false}})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
}

fn patch_request(url: &str, display_name: &str) -> Request<Body> {
    Request::builder()
        .method(Method::PATCH)
        .uri(url)
        .header("authorization", format!("Bearer {}", admin_token()))
        .header("content-type", "application/json")
        .body(body::full(
            json!({ "displayName": display_name }).to_string(),
        ))
        .unwrap()
}

async fn patch(url: &str, display_name: &str) -> TestResponse {
    TestClient::new()
        .send(
            Method::PATCH,
            url,
            Some(json!({ "displayName": display_name })),
        )
        .await
}

/// The PATCHes the emulator received, for any partner.
async fn patches_received(emulator: &TestEmulator) -> usize {
    let log = TestClient::new()
        .get(&format!("{}/_emulator/requests", emulator.base))
        .await
        .json();
    log["value"]
        .as_array()
        .expect("the emulator's request log")
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .count()
}

/// The emulator's own copy of a partner's sync policy.
async fn emulator_policy(emulator: &TestEmulator, partner: &str) -> Value {
    let resp = TestClient::new()
        .get(&sync_url(&emulator.base, "v1.0", partner))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    resp.json()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// `seq` runs 1, 2, 3, … with no gap and no repeat: one chain, whoever wrote each event.
fn assert_contiguous(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as i64 + 1, "seq gap or repeat at row {i}");
    }
}

/// Group events by operation id, each group in seq order.
fn by_operation(events: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut groups: HashMap<String, Vec<&Value>> = HashMap::new();
    for event in events {
        let id = event["operation_id"].as_str().unwrap().to_owned();
        groups.entry(id).or_default().push(event);
    }
    groups
}

fn kinds(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

const PARTNERS: usize = 10;
const CHANGES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_one_chain_and_one_order_per_partner() {
    let fleet = Fleet::start(3, "").await;
    for p in 0..PARTNERS {
        seed_policy(&fleet.emulator, &partner(p)).await;
    }
    // HTTP/2 to each replica, so all 300 changes are in flight at once on three connections.
    let client = h2c_client();
    let mut changes = JoinSet::new();
    for i in 0..CHANGES {
        let replica = &fleet.replicas[i % fleet.replicas.len()];
        let url = sync_url(&replica.url, "v1.0", &partner(i % PARTNERS));
        let client = client.clone();
        changes.spawn(async move {
            let (resp, _) = request(&client, patch_request(&url, &format!("change-{i}")))
                .await
                .unwrap_or_else(|e| panic!("change {i}: {e}"));
            let id = resp.headers().get("x-syncgate-audit-id").cloned();
            (i, resp.status(), id, resp.into_body())
        });
    }
    let mut change_of = HashMap::new();
    while let Some(done) = changes.join_next().await {
        let (i, status, id, body) = done.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "change {i}: {body:?}");
        let id = id.unwrap_or_else(|| panic!("change {i} has no x-syncgate-audit-id"));
        change_of.insert(id.to_str().unwrap().to_owned(), i);
    }
    assert_eq!(change_of.len(), CHANGES, "every change has its own id");

    let events = fleet.events().await;
    assert_contiguous(&events);
    let operations = by_operation(&events);
    assert_eq!(operations.len(), CHANGES, "no operation but the test's");
    for (id, ops) in &operations {
        let i = change_of[id];
        assert_eq!(kinds(ops), ["received", "completed"], "change {i}");
        assert_eq!(ops[0]["partner_tenant_id"], partner(i % PARTNERS));
        assert_eq!(ops[0]["request_body"]["displayName"], format!("change-{i}"));
        assert_eq!(
            ops[1]["after"]["value"]["displayName"],
            format!("change-{i}"),
            "the after-read saw this change and no other"
        );
    }
    // Per partner, each change starts from the state the previous one left: no two changes to
    // one partner overlapped, whichever replicas they went through.
    for p in 0..PARTNERS {
        let completed: Vec<&Value> = of_kind(&events, "completed")
            .into_iter()
            .filter(|e| e["partner_tenant_id"] == partner(p))
            .collect();
        assert_eq!(completed.len(), CHANGES / PARTNERS);
        assert_eq!(completed[0]["before"]["value"]["displayName"], "seed");
        for pair in completed.windows(2) {
            assert_eq!(
                pair[1]["before"], pair[0]["after"],
                "partner {p}: seq {} started from another state than seq {} left",
                pair[1]["seq"], pair[0]["seq"]
            );
        }
        let last = completed.last().unwrap();
        assert_eq!(
            last["after"]["value"]["displayName"],
            emulator_policy(&fleet.emulator, &partner(p)).await["displayName"]
        );
    }
    assert!(of_kind(&events, "drift").is_empty());
    // The replicas share one token key: one token, one fingerprint.
    let fingerprints: std::collections::HashSet<&Value> =
        events.iter().map(|e| &e["actor"]["token_hmac"]).collect();
    assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
    fleet.assert_chain_verifies();
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_change_is_recovered_exactly_once() {
    // A short grace, so the surviving replica's sweeps and two new replicas' start-ups all race
    // for the orphan.
    let mut fleet = Fleet::start(2, "recovery_grace = \"1s\"").await;
    let p = partner(1);
    seed_policy(&fleet.emulator, &p).await;
    // The emulator applies the next PATCH, then holds its answer: the change has landed and the
    // replica is waiting to hear so when it dies.
    fault(
        &fleet.emulator,
        json!({"method": "PATCH", "delayResponseMs": 120_000, "count": 1}),
    )
    .await;
    let doomed = fleet.replicas[0].url.clone();
    let url = sync_url(&doomed, "v1.0", &p);
    let in_flight = tokio::spawn(async move {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let body = json!({"displayName": "in-flight"}).to_string();
        TestClient::new()
            .try_send_raw(Method::PATCH, &url, headers, body.into())
            .await
    });
    poll(
        Duration::from_secs(20),
        "the PATCH to reach the emulator",
        || async { (patches_received(&fleet.emulator).await == 1).then_some(()) },
    )
    .await;
    // The write reached Graph: its `received` was already durable, and nothing else was.
    let events = fleet.events().await;
    assert_eq!(kinds(&events.iter().collect::<Vec<_>>()), ["received"]);
    let received = events[0].clone();
    assert_eq!(received["request_body"]["displayName"], "in-flight");
    let operation = received["operation_id"].as_str().unwrap().to_owned();

    fleet.replicas[0].kill();
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the client heard the connection end")
        .unwrap();
    assert!(answer.is_err(), "a dead replica answered: {answer:?}");
    let restarted = fleet.add(2).await;

    let recovered_of = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["kind"] == "recovered" && e["operation_id"] == operation.as_str())
            .cloned()
            .collect()
    };
    let recovered = poll(Duration::from_secs(30), "a recovered event", || async {
        let found = recovered_of(&fleet.events().await);
        (!found.is_empty()).then_some(found)
    })
    .await;
    // That nothing happens can only be watched for a while: several sweeps' worth of it.
    let watch = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < watch {
        let now = recovered_of(&fleet.events().await);
        assert_eq!(now.len(), 1, "one recovered event per operation: {now:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let recovered = &recovered[0];
    assert_eq!(
        recovered["after"]["value"]["displayName"], "in-flight",
        "the recovery read the state again: {recovered}"
    );
    assert_eq!(
        emulator_policy(&fleet.emulator, &p).await["displayName"],
        "in-flight"
    );

    // The dead replica's partner lock died with it: the next change goes through, from the
    // state the recovery recorded, on any live replica.
    let live = [vec![1], restarted].concat();
    for (n, replica) in live.iter().copied().enumerate() {
        let url = sync_url(&fleet.replicas[replica].url, "v1.0", &p);
        let resp = patch(&url, &format!("after-{n}")).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    }
    let events = fleet.events().await;
    assert_contiguous(&events);
    let completed = of_kind(&events, "completed");
    assert_eq!(completed.len(), live.len());
    assert_eq!(completed[0]["before"], recovered["after"]);
    for pair in completed.windows(2) {
        assert_eq!(pair[1]["before"], pair[0]["after"]);
    }
    assert!(of_kind(&events, "drift").is_empty(), "{events:#?}");
    // Every write Graph saw has its durable `received`.
    assert_eq!(
        patches_received(&fleet.emulator).await,
        of_kind(&events, "received").len()
    );
    fleet.assert_chain_verifies();
    fleet.finish().await;
}

/// From the admin database: refuse new connections to `name` and end the ones it has, as a
/// database that went away would.
async fn cut_off(name: &str) {
    let mut admin = PgConnection::connect(&format!("{}/test", server()))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
}

async fn reconnect(name: &str) {
    let mut admin = PgConnection::connect(&format!("{}/test", server()))
        .await
        .unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
}

async fn readyz(admin_url: &str) -> TestResponse {
    TestClient::without_token()
        .get(&format!("{admin_url}/readyz"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_turns_governed_writes_into_503_and_comes_back() {
    let fleet = Fleet::start(1, "").await;
    let p = partner(2);
    seed_policy(&fleet.emulator, &p).await;
    let replica = &fleet.replicas[0];
    let url = sync_url(&replica.url, "v1.0", &p);
    let first = patch(&url, "before-outage").await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{:?}", first.body);
    let mut accepted = vec![first.header("x-syncgate-audit-id").unwrap().to_owned()];

    cut_off(&fleet.db_name()).await;
    let written = patches_received(&fleet.emulator).await;
    // Twice: once on the pool's dead connections, once when a new connection is refused.
    let mut refused = Vec::new();
    for n in 0..2 {
        let resp = patch(&url, &format!("during-outage-{n}")).await;
        assert_eq!(
            resp.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{:?}",
            resp.body
        );
        assert_eq!(resp.error_code(), "SyncgateAuditUnavailable");
        refused.extend(resp.header("x-syncgate-audit-id").map(str::to_owned));
    }
    assert_eq!(
        patches_received(&fleet.emulator).await,
        written,
        "nothing was forwarded while the log was away"
    );
    let listing = TestClient::new().get(&partners(&replica.url)).await;
    assert_eq!(listing.status, StatusCode::OK, "pass-through still works");
    let not_ready = poll(
        Duration::from_secs(15),
        "/readyz to report the store",
        || async {
            let resp = readyz(&replica.admin_url).await;
            (resp.status == StatusCode::SERVICE_UNAVAILABLE).then_some(resp)
        },
    )
    .await;
    let body = not_ready.json();
    assert_eq!(body["store"], "unavailable", "{body}");

    reconnect(&fleet.db_name()).await;
    // Until the pool notices, a change may still be refused; none may fail otherwise.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut attempt = 0;
    let back = loop {
        attempt += 1;
        let resp = patch(&url, &format!("after-outage-{attempt}")).await;
        match resp.status {
            StatusCode::NO_CONTENT => break resp,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused.extend(resp.header("x-syncgate-audit-id").map(str::to_owned));
            }
            other => panic!("neither 204 nor 503 but {other}: {:?}", resp.body),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "governed changes never succeeded again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    accepted.push(back.header("x-syncgate-audit-id").unwrap().to_owned());
    let ready = poll(Duration::from_secs(15), "/readyz to recover", || async {
        let resp = readyz(&replica.admin_url).await;
        (resp.status == StatusCode::OK).then_some(resp)
    })
    .await;
    assert_eq!(ready.json()["store"], "ok");

    let events = fleet.events().await;
    assert_contiguous(&events);
    let operations = by_operation(&events);
    for id in &accepted {
        assert_eq!(
            kinds(&operations[id]),
            ["received", "completed"],
            "no accepted change lost an event"
        );
    }
    for id in &refused {
        let recorded = operations.get(id).map(|ops| kinds(ops)).unwrap_or_default();
        assert!(
            !recorded.iter().any(|k| k == "received"),
            "a refused change has no received: {recorded:?}"
        );
    }
    assert_eq!(
        of_kind(&events, "received").len(),
        patches_received(&fleet.emulator).await,
        "every write Graph saw has its received"
    );
    let last = of_kind(&events, "completed").last().unwrap()["after"].clone();
    assert_eq!(
        last["value"]["displayName"],
        format!("after-outage-{attempt}")
    );
    assert_eq!(
        emulator_policy(&fleet.emulator, &p).await["displayName"],
        last["value"]["displayName"]
    );
    fleet.assert_chain_verifies();
    fleet.finish().await;
}
