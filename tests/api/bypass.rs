//! Issue 7, "nothing unrecorded gets through": attacks on syncgate's classification, driven
//! through the proxy against the deliberately lenient upstream of `lenient.rs` (which applies
//! every spelling a lax server might read as a write). Two invariants are checked after every
//! attack, whatever syncgate chose to do with it:
//!
//! 1. every write the upstream applied has a `completed` event with its method and partner;
//! 2. every refusal carries an audit id whose `denied` event names the method and the target.
//!
//! Positive controls (a canonical change, a canonical batch) show the invariants are not vacuous.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::egress::Through;
use crate::governed::{PARTNER, audit_events};
use crate::harness::*;
use crate::helpers::*;
use crate::lenient::{Lenient, spawn_lenient, spawn_lenient_with};

const SYNC_TAIL: &str =
    "crossTenantAccessPolicy/partners/9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitySynchronization";

/// A lenient upstream holding [`PARTNER`], and a proxy with no rules in front of it. Every
/// refusal is recorded on its own (no per-client summaries), so each attack's record is its own.
async fn lenient_proxy() -> (Lenient, TestProxy) {
    let lenient = spawn_lenient().await;
    lenient.seed_partner(PARTNER);
    let mut raw = proxy_config(&lenient.base);
    raw.audit.refusal_burst = 10_000;
    let proxy = spawn_proxy_with(raw).await;
    (lenient, proxy)
}

/// How an attack reaches the proxy.
#[derive(Clone, Copy)]
enum Mode {
    /// Reverse-proxy mode: the client's base URL is syncgate's.
    Reverse,
    /// Issue 14: through an intercepted `CONNECT` tunnel, the lenient upstream serving TLS as
    /// `graph.microsoft.com`.
    Egress,
}

/// [`lenient_proxy`] reached in `mode`, and how to reach it (the PKI lives as long as the
/// test).
async fn lenient_in(mode: Mode) -> (Lenient, TestProxy, Through, crate::pki::TestPki) {
    let pki = crate::pki::TestPki::generate();
    match mode {
        Mode::Reverse => {
            let (lenient, proxy) = lenient_proxy().await;
            let through = Through::ReverseProxy {
                client: TestClient::new(),
                base: proxy.url.clone(),
            };
            (lenient, proxy, through, pki)
        }
        Mode::Egress => {
            let (cert, key) = pki.issue_server("graph", &["graph.microsoft.com"]);
            let lenient = spawn_lenient_with(syncgate::server::ServeOptions {
                tls: Some(syncgate::tls::server_config(&cert, &key, None).unwrap()),
                ..Default::default()
            })
            .await;
            lenient.seed_partner(PARTNER);
            let address = lenient.base.trim_start_matches("http://").to_owned();
            let mut raw = proxy_config("http://127.0.0.1:9");
            raw.audit.refusal_burst = 10_000;
            crate::egress::intercept_graph_at(&mut raw, &pki, address);
            let proxy = spawn_proxy_with(raw).await;
            let through = Through::Egress {
                proxy: proxy.addr,
                ca: pki.ca_cert.clone(),
            };
            (lenient, proxy, through, pki)
        }
    }
}

/// A `#[tokio::test]` for each mode, running `$check(mode)`.
macro_rules! in_both_modes {
    ($check:ident) => {
        mod $check {
            #[tokio::test]
            async fn reverse_proxy() {
                super::$check(super::Mode::Reverse).await;
            }
            #[tokio::test]
            async fn through_an_egress_tunnel() {
                super::$check(super::Mode::Egress).await;
            }
        }
    };
}

fn enable_sync() -> Value {
    json!({ "userSyncInbound": { "isSyncAllowed": true } })
}

/// A batch with one sub-request.
fn one_request_batch(method: &str, url: &str, body: Option<Value>) -> Value {
    let mut request = json!({ "id": "1", "method": method, "url": url });
    if let Some(body) = body {
        request["body"] = body;
        request["headers"] = json!({ "Content-Type": "application/json" });
    }
    json!({ "requests": [request] })
}

async fn send_batch(through: &Through, method: Method, batch: &Value) -> TestResponse {
    through
        .send(method, "/v1.0/$batch", Some(batch.clone()))
        .await
}

/// Invariant 1: each write the upstream applied is matched by its own `completed` event (same
/// method, same partner); writes without a partner match `completed` events without one.
fn assert_every_applied_write_is_recorded(lenient: &Lenient, db: &Path, attack: &str) {
    let events = audit_events(db);
    let mut completed: Vec<(String, Option<String>)> = events
        .iter()
        .filter(|e| e["kind"] == "completed")
        .map(|e| {
            (
                e["method"].as_str().unwrap_or_default().to_owned(),
                e["partner_tenant_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    for write in lenient.applied() {
        let key = (write.method.clone(), write.partner.clone());
        let Some(at) = completed.iter().position(|c| *c == key) else {
            panic!(
                "{attack}: the upstream applied {write:?} and syncgate has no completed event \
                 for it; events: {events:#?}"
            );
        };
        completed.remove(at);
    }
}

/// Invariant 2: a refusal names its operation, and that operation's `denied` event says what
/// was tried: the method and the target.
fn assert_refusal_recorded(resp: &TestResponse, db: &Path, attack: &str) {
    let id = resp.header("x-syncgate-audit-id").unwrap_or_else(|| {
        panic!(
            "{attack}: refusal {} without an audit id: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )
    });
    let events: Vec<Value> = audit_events(db)
        .into_iter()
        .filter(|e| e["operation_id"] == id)
        .collect();
    let denied = events
        .iter()
        .find(|e| e["kind"] == "denied")
        .unwrap_or_else(|| panic!("{attack}: no denied event for {id}: {events:#?}"));
    assert!(
        !denied["method"].as_str().unwrap_or_default().is_empty(),
        "{attack}: the denied event has no method: {denied:#}"
    );
    assert!(
        recorded_target(denied).is_some_and(|t| !t.is_empty()),
        "{attack}: the denied event has no target: {denied:#}"
    );
}

/// What a `denied` event records as the target that was tried: the bounded copy of the raw
/// target (the request target, or a sub-request's URL).
fn recorded_target(event: &Value) -> Option<&str> {
    event["raw_request"]["target"].as_str()
}

/// Every sub-response of a batch answer that is a refusal has its own record; the batch envelope
/// refusal (a 4xx for the whole batch) is checked like any refusal.
fn assert_batch_answer_recorded(resp: &TestResponse, db: &Path, attack: &str) {
    if resp.status.is_client_error() {
        assert_refusal_recorded(resp, db, attack);
        return;
    }
    assert_eq!(resp.status, StatusCode::OK, "{attack}: {:?}", resp.body);
}

async fn the_lenient_upstream_applies_canonical_changes_and_each_has_a_record(mode: Mode) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let resp = through
        .send(
            Method::PATCH,
            &format!("/v1.0/policies/{SYNC_TAIL}"),
            Some(enable_sync()),
        )
        .await;
    assert!(resp.status.is_success(), "{resp:?}");
    let batch = one_request_batch(
        "PATCH",
        &format!("/policies/{SYNC_TAIL}"),
        Some(json!({ "userSyncInbound": { "isSyncAllowed": false } })),
    );
    let resp = send_batch(&through, Method::POST, &batch).await;
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(lenient.applied().len(), 2, "{:?}", lenient.applied());
    assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, "canonical");
    assert_eq!(
        lenient.sync_policy(PARTNER).unwrap()["userSyncInbound"]["isSyncAllowed"],
        false
    );
}
in_both_modes!(the_lenient_upstream_applies_canonical_changes_and_each_has_a_record);

async fn batch_sub_request_urls_a_lax_parser_reads_as_sync_writes_are_recorded_or_refused(
    mode: Mode,
) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let urls = [
        format!("x:/v1.0/policies/{SYNC_TAIL}"),
        format!("https:v1.0/policies/{SYNC_TAIL}"),
        format!("https:/policies/{SYNC_TAIL}"),
        format!("http:/v1.0/policies/{SYNC_TAIL}"),
        format!("HTTPS:policies/{SYNC_TAIL}"),
        format!("urn:policies/{SYNC_TAIL}"),
        format!(" /policies/{SYNC_TAIL}"),
        format!("\t/policies/{SYNC_TAIL}"),
        format!("/policies/{SYNC_TAIL} "),
        format!("/poli\tcies/{SYNC_TAIL}"),
        format!("/policies/crossTenant\rAccessPolicy/partners/{PARTNER}/identitySynchronization"),
        format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity\nSynchronization"),
        format!("/v1.\t0/policies/{SYNC_TAIL}"),
        format!("v1.0\n/policies/{SYNC_TAIL}"),
        format!("/policies%20/{SYNC_TAIL}"),
        format!(
            "/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity\u{a0}Synchronization"
        ),
        format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identıtySynchronization"),
        format!("/policies\\crossTenantAccessPolicy\\partners\\{PARTNER}\\identitySynchronization"),
        format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%2553ynchronization"),
        format!("https://evil.example/v1.0/policies/{SYNC_TAIL}"),
        format!("https://graph.microsoft.com\t/v1.0/policies/{SYNC_TAIL}"),
        format!("//graph.microsoft.com/v1.0/policies/{SYNC_TAIL}"),
    ];
    for url in urls {
        let attack = format!("sub-request url {url:?}");
        let batch = one_request_batch("PATCH", &url, Some(enable_sync()));
        let resp = send_batch(&through, Method::POST, &batch).await;
        assert_batch_answer_recorded(&resp, &proxy.db_path, &attack);
        assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, &attack);
    }
}
in_both_modes!(batch_sub_request_urls_a_lax_parser_reads_as_sync_writes_are_recorded_or_refused);

async fn batch_sub_request_methods_that_are_not_exact_tokens_are_recorded_or_refused(mode: Mode) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let url = format!("/policies/{SYNC_TAIL}");
    for method in [
        "PATCH ",
        " PATCH",
        "PATCH\u{a0}",
        "\u{a0}PATCH",
        "patch",
        "Patch",
        "PATCH\t",
        "PUT\n",
        "DELETE ",
        "delete",
        "HEAD ",
        "GET ",
        " GET",
    ] {
        let attack = format!("sub-request method {method:?}");
        let body = (!method.trim().eq_ignore_ascii_case("delete")).then(enable_sync);
        let batch = one_request_batch(method, &url, body);
        let resp = send_batch(&through, Method::POST, &batch).await;
        assert_batch_answer_recorded(&resp, &proxy.db_path, &attack);
        assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, &attack);
    }
}
in_both_modes!(batch_sub_request_methods_that_are_not_exact_tokens_are_recorded_or_refused);

async fn nested_batches_hidden_behind_url_tricks_are_refused(mode: Mode) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let inner = one_request_batch(
        "PATCH",
        &format!("/policies/{SYNC_TAIL}"),
        Some(enable_sync()),
    );
    for url in [
        "/$batch",
        "$batch",
        " /$batch",
        "x:/$batch",
        "https:/v1.0/$batch",
        "/%24batch",
        "/$BATCH",
        "/$bat\tch",
        "/v1.0/$batch",
        "https://graph.microsoft.com/v1.0/$batch",
    ] {
        let attack = format!("nested batch at {url:?}");
        let batch = one_request_batch("POST", url, Some(inner.clone()));
        let resp = send_batch(&through, Method::POST, &batch).await;
        assert_batch_answer_recorded(&resp, &proxy.db_path, &attack);
        assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, &attack);
    }
    assert!(
        lenient.applied().is_empty(),
        "a nested batch reached the upstream: {:?}",
        lenient.applied()
    );
}
in_both_modes!(nested_batches_hidden_behind_url_tricks_are_refused);

async fn a_batch_sent_with_a_method_that_is_not_exactly_post_is_refused_not_forwarded(mode: Mode) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let batch = one_request_batch(
        "PATCH",
        &format!("/policies/{SYNC_TAIL}"),
        Some(enable_sync()),
    );
    for method in ["post", "Post", "PUT", "PATCH"] {
        let attack = format!("$batch with method {method:?}");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let resp = send_batch(&through, method, &batch).await;
        assert!(resp.status.is_client_error(), "{attack}: {resp:?}");
        assert_refusal_recorded(&resp, &proxy.db_path, &attack);
    }
    assert!(lenient.applied().is_empty(), "{:?}", lenient.applied());
}
in_both_modes!(a_batch_sent_with_a_method_that_is_not_exactly_post_is_refused_not_forwarded);

async fn writes_to_every_navigation_under_a_partner_are_governed_or_refused(mode: Mode) {
    let (lenient, proxy, through, _pki) = lenient_in(mode).await;
    let base = format!("/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}");
    for nav in [
        "m365Capabilities",
        "serviceProviderConstraints",
        "M365CAPABILITIES",
        "automaticUserConsentSettings",
        "b2bCollaborationInbound",
        "someFutureNavigation",
    ] {
        for method in [Method::PATCH, Method::PUT, Method::POST, Method::DELETE] {
            let attack = format!("{method} partner/{nav}");
            let body = (method != Method::DELETE).then(|| json!({ "isSyncAllowed": true }));
            let resp = through.send(method, &format!("{base}/{nav}"), body).await;
            if resp.status.is_client_error() {
                assert_refusal_recorded(&resp, &proxy.db_path, &attack);
            }
            assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, &attack);
        }
        let attack = format!("$batch PATCH partner/{nav}");
        let batch = one_request_batch(
            "PATCH",
            &format!("/policies/crossTenantAccessPolicy/partners/{PARTNER}/{nav}"),
            Some(json!({ "isSyncAllowed": true })),
        );
        let resp = send_batch(&through, Method::POST, &batch).await;
        assert_batch_answer_recorded(&resp, &proxy.db_path, &attack);
        assert_every_applied_write_is_recorded(&lenient, &proxy.db_path, &attack);
    }
}
in_both_modes!(writes_to_every_navigation_under_a_partner_are_governed_or_refused);

#[tokio::test]
async fn duplicated_authorization_content_type_or_content_encoding_headers_are_refused() {
    let (lenient, proxy) = lenient_proxy().await;
    let client = TestClient::without_token();
    let other = token_with_scopes("Policy.ReadWrite.CrossTenantAccess");
    let cases: [(&str, [(&str, String); 2]); 3] = [
        (
            "authorization",
            [
                ("authorization", format!("Bearer {}", admin_token())),
                ("authorization", format!("Bearer {other}")),
            ],
        ),
        (
            "content-type",
            [
                ("content-type", "application/json".into()),
                ("content-type", "text/plain".into()),
            ],
        ),
        (
            "content-encoding",
            [
                ("content-encoding", "identity".into()),
                ("content-encoding", "gzip".into()),
            ],
        ),
    ];
    let targets = [
        (
            Method::PATCH,
            format!("{}/v1.0/policies/{SYNC_TAIL}", proxy.url),
            enable_sync(),
        ),
        (
            Method::POST,
            format!("{}/v1.0/$batch", proxy.url),
            one_request_batch(
                "PATCH",
                &format!("/policies/{SYNC_TAIL}"),
                Some(enable_sync()),
            ),
        ),
    ];
    for (name, lines) in &cases {
        for (method, url, body) in &targets {
            let attack = format!("two {name} headers on {method} {url}");
            let mut headers = HeaderMap::new();
            if *name != "authorization" {
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {}", admin_token())).unwrap(),
                );
            }
            if *name != "content-type" {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
            }
            for (line, value) in lines {
                headers.append(*line, HeaderValue::from_str(value).unwrap());
            }
            let resp = client
                .send_raw(
                    method.clone(),
                    url,
                    headers,
                    Bytes::from(serde_json::to_vec(body).unwrap()),
                )
                .await;
            assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{attack}: {resp:?}");
            assert_refusal_recorded(&resp, &proxy.db_path, &attack);
        }
    }
    assert!(lenient.applied().is_empty(), "{:?}", lenient.applied());
}

#[tokio::test]
async fn refusals_of_non_canonical_paths_record_the_method_and_the_target() {
    let (lenient, proxy) = lenient_proxy().await;
    let client = TestClient::new();
    for path in [
        format!(
            "/v1.0/policies/crossTenantAccessPolicy/partners/{PARTNER}/identity%2553ynchronization"
        ),
        format!(
            "/v1.0/policies/./crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
        format!(
            "/v1.0/policies//crossTenantAccessPolicy/partners/{PARTNER}/identitySynchronization"
        ),
        "/v1.0/policies/crossTenantAccessPolicy/partners/contoso.com/identitySynchronization"
            .into(),
    ] {
        let attack = format!("PATCH {path}");
        let resp = client
            .send(
                Method::PATCH,
                &format!("{}{path}", proxy.url),
                Some(enable_sync()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{attack}: {resp:?}");
        assert_refusal_recorded(&resp, &proxy.db_path, &attack);
        let events = audit_events(&proxy.db_path);
        let denied = events.last().unwrap();
        assert_eq!(denied["method"], "PATCH", "{attack}: {denied:#}");
    }
    assert!(lenient.applied().is_empty(), "{:?}", lenient.applied());
}
