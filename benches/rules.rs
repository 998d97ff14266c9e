//! Rule evaluation cost: what `decide` adds per governed change, for the built-in rules alone,
//! the shipped Rego example alone, and both together.
//!
//! `cargo bench --bench rules`. Knobs: `BENCH_EVALS` (evaluations per run, default 10000),
//! `BENCH_RUNS` (runs per case, default 7). Prints the median per-decision cost of each case.
//!
//! The input is a realistic one: a beta PATCH enabling user and group sync for an allow-listed
//! partner, by a delegated user, inside the change window, with the partner's consent read.
//! Every rule is evaluated in full (no rule short-circuits a decision), and the Rego figure
//! includes turning the input into Rego's value type, which happens once per decision.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use serde_json::json;
use syncgate::audit::Actor;
use syncgate::classify::OperationKind;
use syncgate::rules::{RawRules, RuleInput, RuleSet, expected_after};

const BUILTINS: &str = r#"
[[builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [
  { tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" },
  { tenant_id = "90e29127-71ad-49c7-9ce8-db3f41ea06f1", display_name = "Contoso EMEA" },
]

[[builtin]]
id = "never-partners"
type = "partner_denylist"
tenants = ["dddddddd-0000-0000-0000-000000000001"]

[[builtin]]
id = "sync-names"
type = "display_name"
allowlist = "sync-allowlist"

[[builtin]]
id = "business-hours"
type = "change_window"
time_zone = "Europe/Zurich"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "08:00-18:00"

[[builtin]]
id = "who-may-change"
type = "allowed_actors"
app_ids = ["5d0f7a1e-0000-4000-8000-00000000a001"]
upn_patterns = ["*@contoso.com"]

[[builtin]]
id = "write-permission"
type = "required_permission"

[[builtin]]
id = "no-deletes"
type = "forbid_operations"
operations = ["sync_delete", "partner_delete"]

[[builtin]]
id = "consent-first"
type = "inbound_sync_requires_consent"
"#;

const REGO: &str = r#"
[[rego]]
id = "group-sync-automation"
file = "rules/example.rego"
"#;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn input() -> RuleInput {
    let kind = OperationKind::SyncUpdate;
    let before = json!({
        "tenantId": "9c5d131d-b1c3-4fc4-9e3f-c6557947d551",
        "displayName": "Fabrikam",
        "userSyncInbound": {"isSyncAllowed": false},
        "groupSyncInbound": null,
        "externalCloudAuthorizedApplicationId": null
    });
    let body = json!({
        "userSyncInbound": {"isSyncAllowed": true},
        "groupSyncInbound": {"isSyncAllowed": true}
    });
    let mut input = RuleInput::new(
        kind,
        chrono::Utc.with_ymd_and_hms(2026, 1, 7, 10, 0, 0).unwrap(),
    );
    input.method = "PATCH".into();
    input.api_version = "beta".into();
    input.canonical_path = "/beta/policies/crosstenantaccesspolicy/partners/\
                            9c5d131d-b1c3-4fc4-9e3f-c6557947d551/identitysynchronization"
        .into();
    input.partner = Some("9c5d131d-b1c3-4fc4-9e3f-c6557947d551".into());
    input.expected_after = expected_after(kind, Some(&before), Some(&body));
    input.before = Some(before);
    input.request_body = Some(body);
    input.partner_state = Some(json!({
        "tenantId": "9c5d131d-b1c3-4fc4-9e3f-c6557947d551",
        "automaticUserConsentSettings": {"inboundAllowed": true, "outboundAllowed": null}
    }));
    input.actor = Actor {
        oid: Some("bbbbbbbb-0000-0000-0000-000000000001".into()),
        upn: Some("alice@contoso.com".into()),
        appid: Some("5d0f7a1e-0000-4000-8000-00000000a001".into()),
        app_displayname: Some("Graph PowerShell".into()),
        tid: Some("eeeeeeee-0000-0000-0000-000000000001".into()),
        idtyp: Some("user".into()),
        scp: vec!["Policy.ReadWrite.CrossTenantAccess".into()],
        caller_address: Some("10.0.0.7:51234".into()),
        ..Actor::default()
    };
    input
}

/// Median time per evaluation over `runs` runs of `evals` evaluations.
fn measure(rules: &RuleSet, input: &RuleInput, evals: usize, runs: usize) -> Duration {
    for _ in 0..evals.min(1000) {
        black_box(rules.evaluate(black_box(input)));
    }
    let mut per_eval: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..evals {
                black_box(rules.evaluate(black_box(input)));
            }
            start.elapsed() / evals as u32
        })
        .collect();
    per_eval.sort();
    per_eval[per_eval.len() / 2]
}

fn main() {
    let evals = env_or("BENCH_EVALS", 10_000);
    let runs = env_or("BENCH_RUNS", 7);
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let load = |text: &str| {
        let raw: RawRules = toml::from_str(text).expect("bench rules parse");
        RuleSet::load(&raw, &config_dir).unwrap_or_else(|e| panic!("{e}"))
    };
    let input = input();
    let cases = [
        ("built-ins only (8 rules)", load(BUILTINS)),
        ("Rego only (config/rules/example.rego)", load(REGO)),
        (
            "both (8 built-ins + 1 Rego)",
            load(&format!("{BUILTINS}{REGO}")),
        ),
    ];
    println!("rule evaluation, median of {runs} runs of {evals} evaluations");
    for (name, rules) in &cases {
        let evaluation = rules.evaluate(&input);
        let failing = evaluation.violations().count();
        let cost = measure(rules, &input, evals, runs);
        println!(
            "  {name:<40} {:>9.2} µs per decision  ({} results, {failing} failing)",
            cost.as_secs_f64() * 1e6,
            evaluation.results.len()
        );
    }
}
