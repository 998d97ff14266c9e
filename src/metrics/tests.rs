//! The exposition: names, labels and values as a scraper reads them.

use super::*;

/// The value of the sample `name{labels}` (labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counts_show_up_under_their_documented_names_and_labels() {
    let m = Metrics::new(None);
    m.request(RouteClass::PassThrough, http::StatusCode::OK);
    m.request(RouteClass::PassThrough, http::StatusCode::OK);
    m.request(RouteClass::Refused, http::StatusCode::BAD_REQUEST);
    m.audit_unavailable_refusal();
    m.drift_detected();
    m.effect(Effect::Ignored);
    m.upstream_answered(Duration::from_millis(7));
    m.upstream_failed(UpstreamFailure::Timeout);
    m.open_connections(ListenerLabel::Proxy).set(3);
    let text = m.render(Format::Prometheus);
    let expect = [
        (
            r#"syncgate_requests_total{route="pass_through",status="200"}"#,
            2.0,
        ),
        (
            r#"syncgate_requests_total{route="refused",status="400"}"#,
            1.0,
        ),
        ("syncgate_audit_unavailable_refusals_total", 1.0),
        ("syncgate_drift_detected_total", 1.0),
        (r#"syncgate_governed_effects_total{effect="ignored"}"#, 1.0),
        (
            r#"syncgate_upstream_response_seconds_bucket{le="0.01"}"#,
            1.0,
        ),
        (
            r#"syncgate_upstream_response_seconds_bucket{le="0.005"}"#,
            0.0,
        ),
        ("syncgate_upstream_response_seconds_count", 1.0),
        (r#"syncgate_upstream_failures_total{reason="timeout"}"#, 1.0),
        (r#"syncgate_open_connections{listener="proxy"}"#, 3.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(sample(&text, "syncgate_uptime_seconds").is_some(), "{text}");
    let version = format!(
        r#"syncgate_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &version), Some(1.0), "{text}");
}

#[test]
fn two_instances_never_share_a_count() {
    let (a, b) = (Metrics::new(None), Metrics::new(None));
    a.drift_detected();
    let series = "syncgate_drift_detected_total";
    assert_eq!(sample(&a.render(Format::Prometheus), series), Some(1.0));
    assert_eq!(sample(&b.render(Format::Prometheus), series), Some(0.0));
}

#[test]
fn rule_results_are_counted_by_rule_mode_and_result_with_the_verdict() {
    use crate::rules::{Action, Mode, RuleResult};
    let result = |rule: &str, mode, passed| RuleResult {
        rule: rule.into(),
        kind: "partner_allowlist".into(),
        mode,
        action: Action::Deny,
        passed,
        message: None,
        approval_policy: None,
    };
    let m = Metrics::new(None);
    m.decided(&Evaluation {
        version: "v".into(),
        results: vec![
            result("allow-list", Mode::Enforce, false),
            result("hours", Mode::Shadow, false),
        ],
    });
    m.decided(&Evaluation {
        version: "v".into(),
        results: vec![result("allow-list", Mode::Enforce, true)],
    });
    let text = m.render(Format::Prometheus);
    for (series, value) in [
        (r#"syncgate_governed_decisions_total{decision="deny"}"#, 1.0),
        (
            r#"syncgate_governed_decisions_total{decision="allow"}"#,
            1.0,
        ),
        (
            r#"syncgate_rule_results_total{rule="allow-list",mode="enforce",result="fail"}"#,
            1.0,
        ),
        (
            r#"syncgate_rule_results_total{rule="allow-list",mode="enforce",result="pass"}"#,
            1.0,
        ),
        (
            r#"syncgate_rule_results_total{rule="hours",mode="shadow",result="fail"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
}

#[test]
fn openmetrics_is_served_only_to_scrapers_that_ask_and_ends_in_eof() {
    let prometheus_accept = http::HeaderValue::from_static(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );
    assert_eq!(
        Format::negotiate(Some(&prometheus_accept)),
        Format::OpenMetrics
    );
    assert_eq!(Format::negotiate(None), Format::Prometheus);
    let plain = http::HeaderValue::from_static("text/plain");
    assert_eq!(Format::negotiate(Some(&plain)), Format::Prometheus);
    let m = Metrics::new(None);
    assert!(m.render(Format::OpenMetrics).ends_with("# EOF\n"));
    assert!(!m.render(Format::Prometheus).contains("# EOF"));
}

#[tokio::test]
async fn docs_metrics_md_lists_every_metric_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("audit.db"),
        crate::store::StoreOptions::default(),
    )
    .await
    .unwrap();
    let m = Metrics::new(Some(&store));
    // Every labelled family once, so its labels are rendered.
    m.request(RouteClass::Governed, http::StatusCode::OK);
    m.decided(&Evaluation {
        version: "v".into(),
        results: vec![crate::rules::RuleResult {
            rule: "r".into(),
            kind: "k".into(),
            mode: crate::rules::Mode::Enforce,
            action: crate::rules::Action::Deny,
            passed: true,
            message: None,
            approval_policy: None,
        }],
    });
    m.open_connections(ListenerLabel::Admin).set(1);
    let webhook = crate::approvals::notify::WebhookLabel {
        webhook: "teams".into(),
    };
    m.approvals.delivered.get_or_create(&webhook).inc();
    m.approvals.failed.get_or_create(&webhook).inc();
    let text = m.render(Format::Prometheus);
    let docs = include_str!("../../docs/metrics.md");
    let mut names = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("docs/metrics.md has no row for {name}"));
        for sample in text
            .lines()
            .filter(|l| l.starts_with(name) && l.contains('{'))
        {
            let labels = &sample[sample.find('{').unwrap() + 1..sample.find('}').unwrap()];
            for label in labels.split(',').map(|kv| kv.split('=').next().unwrap()) {
                assert!(
                    label == "le" || row.contains(&format!("`{label}`")),
                    "docs/metrics.md: {name} lacks label {label}"
                );
            }
        }
        names.push(name.to_owned());
    }
    assert_eq!(names.len(), 27, "{names:?}");
    store.close().await;
}
