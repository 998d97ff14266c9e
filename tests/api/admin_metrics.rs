//! Issue 10: `GET /metrics` — counters that move by exactly what the traffic did, who may read
//! them, and an exposition a Prometheus parser accepts (checked by the small parser below).

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use syncgate::config::RawConfig;

use crate::admin_auth::{assert_graph_error, make_key, principal};
use crate::governed::{PARTNER, fault, partners, seed_partner, sync_url};
use crate::harness::{TestProxy, proxy_config, spawn_proxy_with};
use crate::helpers::{TestClient, TestEmulator, spawn_emulator};

/// A second partner, left off the allow-list.
const OTHER: &str = "0a1b2c3d-0000-4000-8000-00000000beef";

/// The families whose every change a test accounts for; the rest (latency histograms, gauges,
/// uptime) move with time and connections.
const COUNTED: [&str; 6] = [
    "syncgate_requests_total",
    "syncgate_governed_decisions_total",
    "syncgate_rule_results_total",
    "syncgate_audit_unavailable_refusals_total",
    "syncgate_drift_detected_total",
    "syncgate_governed_effects_total",
];

/// One scrape: each sample's value by its series, `name{label="value",...}` in the order sent.
type Scrape = BTreeMap<String, f64>;

/// Parse the Prometheus text format (0.0.4) strictly: every sample belongs to a family declared
/// by `# TYPE` before it, names and label names are legal, label values are quoted with escapes,
/// values are numbers. Panics, naming the line, on anything else.
fn parse_exposition(text: &str) -> Scrape {
    let legal = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Scrape::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (words.next(), words.next()) else {
                panic!("bad comment line {line:?}");
            };
            assert!(legal(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" => {}
                "TYPE" => {
                    let kind = words.next().unwrap_or_default();
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "untyped",
                            "info"
                        ]
                        .contains(&kind),
                        "bad type in {line:?}"
                    );
                    assert!(
                        types.insert(name.to_owned(), kind.to_owned()).is_none(),
                        "{name} typed twice"
                    );
                }
                _ => panic!("unknown comment keyword in {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the exposition");
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(legal(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        let mut rest = &line[name_end..];
        let mut series = name.to_owned();
        if let Some(labels) = rest.strip_prefix('{') {
            let (rendered, after) = parse_labels(labels, line);
            for (label, _) in &rendered {
                assert!(legal(label), "bad label name in {line:?}");
            }
            let joined: Vec<String> = rendered
                .iter()
                .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
                .collect();
            series = format!("{name}{{{}}}", joined.join(","));
            rest = after;
        }
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            samples.insert(series.clone(), value).is_none(),
            "{series} sent twice"
        );
    }
    samples
}

/// `k="v",k2="v2"}rest` → the pairs (values unescaped) and `rest`.
fn parse_labels<'a>(mut text: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut pairs = Vec::new();
    loop {
        if let Some(after) = text.strip_prefix('}') {
            return (pairs, after);
        }
        let (name, after) = text
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        pairs.push((name.to_owned(), value));
        text = &after[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// What moved between two scrapes in the [`COUNTED`] families (series new in `after` count
/// from zero).
fn delta(before: &Scrape, after: &Scrape) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(series, _)| {
            COUNTED.iter().any(|f| {
                series
                    .strip_prefix(f)
                    .is_some_and(|r| r.is_empty() || r.starts_with('{'))
            })
        })
        .filter_map(|(series, value)| {
            let moved = value - before.get(series).copied().unwrap_or(0.0);
            (moved != 0.0).then(|| (series.clone(), moved))
        })
        .collect()
}

/// Scrape again and check that the counted families moved by exactly `want` since `last`.
async fn step(proxy: &TestProxy, key: &str, last: &mut Scrape, what: &str, want: &[(&str, f64)]) {
    let now = scrape(proxy, key).await;
    assert_eq!(delta(last, &now), expected(want), "{what}");
    *last = now;
}

const GOVERNED_204: &str = r#"syncgate_requests_total{route="governed",status="204"}"#;

/// What `n` governed changes the allow-list let through add, answered as `request`.
fn allowed(request: &'static str, n: f64) -> Vec<(&'static str, f64)> {
    vec![
        (request, n),
        (r#"syncgate_governed_decisions_total{decision="allow"}"#, n),
        (
            r#"syncgate_rule_results_total{rule="sync-allowlist",mode="enforce",result="pass"}"#,
            n,
        ),
    ]
}

fn expected(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(s, v)| ((*s).to_owned(), *v)).collect()
}

/// A proxy whose admin API knows an auditor and an approver, configured by `edit`.
async fn proxy_with(
    upstream: &str,
    edit: impl FnOnce(&mut RawConfig),
) -> (TestProxy, String, String) {
    let (auditor, auditor_hash) = make_key();
    let (approver, approver_hash) = make_key();
    let mut raw = proxy_config(upstream);
    raw.admin.principals = vec![
        principal("ann", &["auditor"], None, auditor_hash),
        principal("abe", &["approver"], None, approver_hash),
    ];
    edit(&mut raw);
    (spawn_proxy_with(raw).await, auditor, approver)
}

fn metrics_url(proxy: &TestProxy) -> String {
    format!("http://{}/metrics", proxy.admin_addr)
}

async fn scrape(proxy: &TestProxy, key: &str) -> Scrape {
    let resp = TestClient::with_token(key.to_owned())
        .get(&metrics_url(proxy))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{:?}", resp.body);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(std::str::from_utf8(&resp.body).unwrap())
}

/// An emulator with both partners, and a proxy allowing changes to [`PARTNER`] only.
async fn allow_listing_proxy() -> (TestEmulator, TestProxy, String, String) {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, PARTNER).await;
    seed_partner(&emulator, OTHER).await;
    let rules = format!(
        r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
mode = "enforce"
action = "deny"
partners = [{{ tenant_id = "{PARTNER}", display_name = "Fabrikam" }}]
"#
    );
    let (proxy, auditor, approver) = proxy_with(&emulator.base, |raw| {
        let parsed: RawConfig = toml::from_str(&rules).unwrap();
        raw.rules = parsed.rules;
        raw.store.busy_timeout = "200ms".into();
    })
    .await;
    (emulator, proxy, auditor, approver)
}

#[tokio::test]
async fn counters_move_by_exactly_what_each_request_did() {
    let (emulator, proxy, auditor, _) = allow_listing_proxy().await;
    let client = TestClient::new();
    let url = sync_url(&proxy.url, "v1.0", PARTNER);
    let mut last = scrape(&proxy, &auditor).await;

    // A pass-through read.
    assert_eq!(
        client.get(&partners(&proxy.url)).await.status,
        StatusCode::OK
    );
    step(
        &proxy,
        &auditor,
        &mut last,
        "a pass-through GET",
        &[(
            r#"syncgate_requests_total{route="pass_through",status="200"}"#,
            1.0,
        )],
    )
    .await;

    // A governed change the rules allow: created, then patched.
    let body = json!({"displayName": "F", "userSyncInbound": {"isSyncAllowed": true}});
    let resp = client.send(Method::PUT, &url, Some(body)).await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "G"})))
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    step(
        &proxy,
        &auditor,
        &mut last,
        "two allowed governed changes",
        &[
            allowed(GOVERNED_204, 2.0),
            vec![(r#"syncgate_governed_effects_total{effect="applied"}"#, 2.0)],
        ]
        .concat(),
    )
    .await;

    // A change the rules refuse (enabling sync with a partner off the list), and one the
    // classifier refuses before anything is read.
    let other = sync_url(&proxy.url, "v1.0", OTHER);
    let enable = json!({"displayName": "X", "userSyncInbound": {"isSyncAllowed": true}});
    let resp = client.send(Method::PUT, &other, Some(enable)).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{:?}", resp.body);
    let resp = client
        .send(Method::PUT, &format!("{url}/notAResource"), Some(json!({})))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{:?}", resp.body);
    step(
        &proxy,
        &auditor,
        &mut last,
        "a rule's refusal and the classifier's",
        &[
            (r#"syncgate_requests_total{route="governed",status="403"}"#, 1.0),
            (r#"syncgate_requests_total{route="refused",status="400"}"#, 1.0),
            (r#"syncgate_governed_decisions_total{decision="deny"}"#, 1.0),
            (
                r#"syncgate_rule_results_total{rule="sync-allowlist",mode="enforce",result="fail"}"#,
                1.0,
            ),
        ],
    )
    .await;

    // Someone changes the policy straight at Graph; the next change through syncgate meets it.
    let direct = sync_url(&emulator.base, "v1.0", PARTNER);
    let resp = client
        .send(
            Method::PATCH,
            &direct,
            Some(json!({"displayName": "around"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    // ... and Graph silently ignores that next change (an intent mismatch).
    fault(&emulator, json!({"method": "PATCH", "ignoreWrite": true})).await;
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "H"})))
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{:?}", resp.body);
    step(
        &proxy,
        &auditor,
        &mut last,
        "drift met, then a write Graph ignored",
        &[
            allowed(GOVERNED_204, 1.0),
            vec![
                ("syncgate_drift_detected_total", 1.0),
                (r#"syncgate_governed_effects_total{effect="ignored"}"#, 1.0),
            ],
        ]
        .concat(),
    )
    .await;

    // Another process holds the log's write lock: the change is refused with 503.
    let db = format!("sqlite://{}", proxy.db_path.display());
    let mut blocker = sqlx::SqliteConnection::connect(&db).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let failures_before = last["syncgate_store_append_failures_total"];
    let resp = client
        .send(Method::PATCH, &url, Some(json!({"displayName": "I"})))
        .await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        resp.body
    );
    assert_eq!(resp.error_code(), "SyncgateAuditUnavailable");
    step(
        &proxy,
        &auditor,
        &mut last,
        "a refusal because the log was down",
        &[
            allowed(
                r#"syncgate_requests_total{route="governed",status="503"}"#,
                1.0,
            ),
            vec![("syncgate_audit_unavailable_refusals_total", 1.0)],
        ]
        .concat(),
    )
    .await;
    // The `received` event and the `denied` one that followed it were both refused.
    assert_eq!(
        last["syncgate_store_append_failures_total"] - failures_before,
        2.0
    );
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
}

#[tokio::test]
async fn latency_histograms_and_gauges_report_what_happened() {
    let emulator = spawn_emulator().await;
    let (proxy, auditor, _) = proxy_with(&emulator.base, |_| {}).await;
    let before = scrape(&proxy, &auditor).await;
    assert_eq!(before["syncgate_upstream_response_seconds_count"], 0.0);
    let client = TestClient::new();
    for _ in 0..3 {
        assert_eq!(
            client.get(&partners(&proxy.url)).await.status,
            StatusCode::OK
        );
    }
    let after = scrape(&proxy, &auditor).await;
    assert_eq!(after["syncgate_upstream_response_seconds_count"], 3.0);
    assert_eq!(
        after[r#"syncgate_upstream_response_seconds_bucket{le="+Inf"}"#],
        3.0
    );
    assert!(after["syncgate_upstream_response_seconds_sum"] > 0.0);
    // The proxy's pooled client keeps its connection; this scrape is on the admin listener.
    assert!(after[r#"syncgate_open_connections{listener="proxy"}"#] >= 1.0);
    assert!(after[r#"syncgate_open_connections{listener="admin"}"#] >= 1.0);
    assert!(after["syncgate_uptime_seconds"] >= before["syncgate_uptime_seconds"]);
    // Starting the proxy appended nothing; the store's histograms are there, empty.
    assert_eq!(after["syncgate_store_append_seconds_count"], 0.0);
    assert_eq!(after["syncgate_store_group_size_count"], 0.0);
    assert_eq!(after["syncgate_store_queued"], 0.0);
}

#[tokio::test]
async fn each_proxy_in_a_process_counts_only_its_own_traffic() {
    let emulator = spawn_emulator().await;
    let (busy, busy_key, _) = proxy_with(&emulator.base, |_| {}).await;
    let (idle, idle_key, _) = proxy_with(&emulator.base, |_| {}).await;
    let client = TestClient::new();
    assert_eq!(
        client.get(&partners(&busy.url)).await.status,
        StatusCode::OK
    );
    let pass = r#"syncgate_requests_total{route="pass_through",status="200"}"#;
    assert_eq!(scrape(&busy, &busy_key).await.get(pass), Some(&1.0));
    assert_eq!(scrape(&idle, &idle_key).await.get(pass), None);
}

#[tokio::test]
async fn metrics_need_a_reader_unless_configured_public() {
    let unused = "http://127.0.0.1:9";
    let (proxy, auditor, approver) = proxy_with(unused, |_| {}).await;
    let url = metrics_url(&proxy);
    let resp = TestClient::without_token().get(&url).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert!(resp.header("www-authenticate").is_some());
    let resp = TestClient::with_token(approver).get(&url).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_graph_error(&resp, "Authorization_RequestDenied", "an approver");
    let (admin, admin_hash) = make_key();
    let (with_admin, ..) = proxy_with(unused, |raw| {
        raw.admin.principals = vec![principal("root", &["admin"], None, admin_hash)];
    })
    .await;
    scrape(&with_admin, &admin).await;
    // Strict query: a parameter /metrics does not take is a 400, not ignored.
    let resp = TestClient::with_token(auditor)
        .get(&format!("{url}?name=syncgate_requests_total"))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_graph_error(&resp, "BadRequest", "an unknown parameter");

    // No principals and not public: closed like the API, and the answer says how to open it.
    let (closed, ..) = proxy_with(unused, |raw| raw.admin.principals.clear()).await;
    let resp = TestClient::without_token().get(&metrics_url(&closed)).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_graph_error(&resp, "Authorization_RequestDenied", "no principals");
    assert!(
        resp.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin.metrics_public"),
        "{:?}",
        resp.body
    );

    // Public: any scraper, with or without principals, and the API stays closed.
    let (public, ..) = proxy_with(unused, |raw| raw.admin.metrics_public = true).await;
    let resp = TestClient::without_token().get(&metrics_url(&public)).await;
    assert_eq!(resp.status, StatusCode::OK);
    parse_exposition(std::str::from_utf8(&resp.body).unwrap());
    let whoami = format!("http://{}/api/v1/whoami", public.admin_addr);
    let resp = TestClient::without_token().get(&whoami).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_method_on_metrics_is_a_405_naming_get_once_the_caller_may_know_the_route() {
    let unused = "http://127.0.0.1:9";
    let (proxy, auditor, _) = proxy_with(unused, |_| {}).await;
    let url = metrics_url(&proxy);
    let resp = TestClient::without_token()
        .send(Method::POST, &url, None)
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "nothing is learnt without a key"
    );
    let resp = TestClient::with_token(auditor)
        .send(Method::DELETE, &url, None)
        .await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.header("allow"), Some("GET"));

    let (public, ..) = proxy_with(unused, |raw| raw.admin.metrics_public = true).await;
    let resp = TestClient::without_token()
        .send(Method::POST, &metrics_url(&public), None)
        .await;
    assert_eq!(
        resp.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "a public route's methods are no secret"
    );
    assert_eq!(resp.header("allow"), Some("GET"));
}

#[tokio::test]
async fn a_scraper_asking_for_openmetrics_gets_it() {
    let (proxy, ..) = proxy_with("http://127.0.0.1:9", |raw| raw.admin.metrics_public = true).await;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            .parse()
            .unwrap(),
    );
    let resp = TestClient::without_token()
        .send_raw(
            Method::GET,
            &metrics_url(&proxy),
            headers,
            Default::default(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = std::str::from_utf8(&resp.body).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE syncgate_drift_detected counter"),
        "{text}"
    );
}

#[test]
fn the_test_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"q\"} 1\n";
    assert_eq!(parse_exposition(good)[r#"a_total{k="v\"q"}"#], 1.0);
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total{k=\"v} 1\n",
        "# TYPE a_total counter\na_total one\n",
        "# TYPE 1a counter\n",
        "# TYPE a_total counter\na_total 1",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "{bad:?} parsed"
        );
    }
}
