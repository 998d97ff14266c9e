//! `syncgate rules test` and `syncgate rules backtest`, run as a rule author runs them: suites
//! written to each test's own folder, and backtests over audit logs that a real proxy in front of
//! the emulator recorded.

use std::path::{Path, PathBuf};
use std::process::Command;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use syncgate::config::RawConfig;
use tempfile::TempDir;

use crate::governed::{seed_partner, sync_url};
use crate::harness::*;
use crate::helpers::*;

const LISTED: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
const UNLISTED: &str = "0a1b2c3d-0000-4000-8000-00000000beef";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// `syncgate rules <args>`, from `dir`.
fn rules(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(syncgate_bin())
        .arg("rules")
        .args(args)
        .current_dir(dir)
        .env_remove("SYNCGATE_CONFIG")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A folder holding `suite.toml` (`text`, testing the shipped example rules).
fn suite(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.toml");
    let example = repo().join("config/rules/example.toml");
    let config = format!("config = {:?}\n", example.to_str().unwrap());
    std::fs::write(&path, config + text).unwrap();
    (dir, path)
}

/// The line (1-based) of the `n`th `[[case]]` of a suite file.
fn case_line(path: &Path, n: usize) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[case]]")
        .nth(n - 1)
        .map(|(i, _)| i + 1)
        .unwrap()
}

/// A case enabling sync for `partner` as an allowed Contoso engineer.
fn enable_case(name: &str, partner: &str, tail: &str) -> String {
    format!(
        r#"
[[case]]
name = "{name}"
operation = "sync_create"
partner = "{partner}"
body = {{ displayName = "Fabrikam", userSyncInbound = {{ isSyncAllowed = true }} }}
partner_state = {{ automaticUserConsentSettings = {{ inboundAllowed = true }} }}
actor = {{ upn = "alice@contoso.com", scp = ["Policy.ReadWrite.CrossTenantAccess"], idtyp = "user" }}
{tail}
"#
    )
}

#[test]
fn the_shipped_example_suite_passes_and_tests_every_example_rule() {
    let run = rules(repo(), &["test", "config/rules/example-tests.toml"]);
    assert!(run.ok(), "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
    assert!(
        run.stdout.contains(" passed, 0 failed (1 file)"),
        "{}",
        run.stdout
    );

    // Every rule of the example is seen deciding (failing) in some case, and is named by a case
    // that keeps it.
    let example = RawConfig::load(&repo().join("config/rules/example.toml")).unwrap();
    let suite = std::fs::read_to_string(repo().join("config/rules/example-tests.toml")).unwrap();
    let ids = example
        .rules
        .builtin
        .iter()
        .map(|b| b.id.clone())
        .chain(example.rules.rego.iter().map(|r| r.id.clone()));
    for id in ids {
        assert!(
            suite.contains(&format!("rule = \"{id}\"")),
            "no case expects rule {id} to decide"
        );
        let kept = run
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("  ok    {id}:")))
            .count();
        assert!(kept >= 2, "rule {id} needs a failing and a passing case");
    }
}

#[test]
fn a_case_with_a_wrong_expectation_fails_naming_the_case_and_what_decided() {
    let (dir, path) = suite(&format!(
        "{}{}",
        enable_case("a listed partner", LISTED, "expect = \"allow\""),
        enable_case(
            "an unlisted partner, wrongly expected",
            UNLISTED,
            "expect = \"allow\""
        ),
    ));
    let run = rules(dir.path(), &["test", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout.contains("  ok    a listed partner\n"),
        "{}",
        run.stdout
    );
    let failure = run
        .stdout
        .lines()
        .skip_while(|l| !l.contains("FAIL  an unlisted partner, wrongly expected"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    let line = format!("(line {})", case_line(&path, 2));
    assert!(failure.contains(&line), "{failure}");
    assert!(failure.contains("expected  allow"), "{failure}");
    assert!(
        failure.contains("got       deny by rule 'sync-allowlist'")
            && failure.contains("not on the sync allow-list"),
        "{failure}"
    );
    assert!(
        run.stdout.contains("2 cases: 1 passed, 1 failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("1 of 2 rule test cases failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_suite_with_an_unknown_key_fails_naming_the_case_and_the_key() {
    let (dir, path) = suite(&format!(
        "{}{}",
        enable_case("fine", LISTED, "expect = \"allow\""),
        enable_case("misspelt", LISTED, "expected = \"allow\""),
    ));
    let run = rules(dir.path(), &["test", path.to_str().unwrap()]);
    assert!(!run.ok());
    assert!(run.stdout.is_empty(), "nothing runs: {}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "case 2 \"misspelt\" (line {})",
            case_line(&path, 2)
        )) && run.stderr.contains("unknown field `expected`"),
        "{}",
        run.stderr
    );

    // Inside the actor too: a misspelt claim would otherwise be a silently empty one.
    let (dir, path) =
        suite(&enable_case("bad claim", LISTED, "expect = \"allow\"").replace("upn = ", "upm = "));
    let run = rules(dir.path(), &["test", path.to_str().unwrap()]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("\"bad claim\"") && run.stderr.contains("`upm`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_message_pattern_must_match_the_deciding_rules_message() {
    let refused = "expect = \"deny\"\nrule = \"sync-allowlist\"\n";
    let (dir, path) = suite(&format!(
        "{}{}",
        enable_case(
            "matching",
            UNLISTED,
            &format!("{refused}message = \"{UNLISTED} is not on the (sync )?allow-list\""),
        ),
        enable_case(
            "not matching",
            UNLISTED,
            &format!("{refused}message = \"is on the sync deny-list\""),
        ),
    ));
    let run = rules(dir.path(), &["test", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stdout.contains("  ok    matching\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("  FAIL  not matching"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("expected  deny by rule 'sync-allowlist' with a message matching /is on the sync deny-list/"),
        "{}",
        run.stdout
    );

    let (dir, path) = suite(&enable_case(
        "broken pattern",
        UNLISTED,
        &format!("{refused}message = \"(unclosed\""),
    ));
    let run = rules(dir.path(), &["test", path.to_str().unwrap()]);
    assert!(!run.ok());
    assert!(
        run.stderr.contains("\"broken pattern\"")
            && run.stderr.contains("not a valid regular expression"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// backtest
// ---------------------------------------------------------------------------------------------

/// A proxy in front of `emulator` whose rules are `rules_toml`, recording into `db`.
async fn proxy_recording_into(emulator: &TestEmulator, db: &Path, rules_toml: &str) -> TestProxy {
    let mut raw: RawConfig = toml::from_str(rules_toml).unwrap();
    let base = proxy_config(&emulator.base);
    raw.proxy = base.proxy;
    raw.admin = base.admin;
    raw.upstream = base.upstream;
    raw.store.path = db.to_owned();
    raw.base_dir = repo().to_owned();
    spawn_proxy_with(raw).await
}

/// `PUT …/identitySynchronization` through `proxy`, enabling sync for `partner` as the admin.
async fn enable_through(proxy: &TestProxy, partner: &str, name: &str) -> TestResponse {
    let body = json!({"displayName": name, "userSyncInbound": {"isSyncAllowed": true}});
    TestClient::new()
        .send(
            Method::PUT,
            &sync_url(&proxy.url, "v1.0", partner),
            Some(body),
        )
        .await
}

fn audit_id(resp: &TestResponse) -> String {
    resp.header("x-syncgate-audit-id")
        .expect("x-syncgate-audit-id")
        .to_owned()
}

const ALLOWLIST: &str = r#"
[[rules.builtin]]
id = "sync-allowlist"
type = "partner_allowlist"
partners = [{ tenant_id = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551", display_name = "Fabrikam" }]
"#;

/// `label   <n>` in the backtest summary.
fn summary_count(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{stdout}"))
}

fn backtest_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = vec!["backtest"];
    all.extend_from_slice(args);
    all.extend(["--format", "json"]);
    let run = rules(dir, &all);
    assert!(run.ok(), "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// The JSON summary says what the table's summary says.
fn assert_same_counts(table: &str, json: &Value) {
    let summary = &json["summary"];
    for (label, key) in [
        ("changes replayed", "replayed"),
        ("unchanged", "unchanged"),
        ("newly refused", "newly_refused"),
        ("newly allowed", "newly_allowed"),
        ("newly warning", "newly_warning"),
        ("skipped", "skipped"),
    ] {
        assert_eq!(
            Some(summary_count(table, label)),
            summary[key].as_u64(),
            "{label}: {table}\n{json:#}"
        );
    }
}

#[tokio::test]
async fn a_backtest_names_exactly_the_recorded_change_a_new_allow_list_would_refuse() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, LISTED).await;
    seed_partner(&emulator, UNLISTED).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let proxy = proxy_recording_into(&emulator, &db, "").await;
    let client = TestClient::new();

    // Four governed changes, all allowed: there are no rules yet.
    let listed = enable_through(&proxy, LISTED, "Fabrikam").await;
    assert_eq!(listed.status, StatusCode::NO_CONTENT, "{:?}", listed.body);
    let unlisted = enable_through(&proxy, UNLISTED, "Woodgrove").await;
    assert_eq!(
        unlisted.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        unlisted.body
    );
    let rename = client
        .send(
            Method::PATCH,
            &sync_url(&proxy.url, "v1.0", LISTED),
            Some(json!({"displayName": "Fabrikam Ltd"})),
        )
        .await;
    assert_eq!(rename.status, StatusCode::NO_CONTENT, "{:?}", rename.body);
    let delete = client
        .send(
            Method::DELETE,
            &sync_url(&proxy.url, "v1.0", UNLISTED),
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT, "{:?}", delete.body);
    proxy.shutdown().await;

    // The new rules, in a configuration whose store.path is the live log (no --db).
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        format!("[store]\npath = {:?}\n{ALLOWLIST}", db.to_str().unwrap()),
    )
    .unwrap();
    let new = new.to_str().unwrap();
    let untouched = std::fs::read(&db).unwrap();

    let run = rules(dir.path(), &["backtest", "--config", new]);
    assert!(run.ok(), "{}", run.stderr);
    let refused: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("would now"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", run.stdout);
    let line = refused[0];
    assert!(
        line.contains(&audit_id(&unlisted))
            && line.contains(UNLISTED)
            && line.contains("sync_create")
            && line.contains("would now be refused by rule sync-allowlist: partner")
            && line.contains("is not on the sync allow-list"),
        "{line}"
    );
    assert_eq!(summary_count(&run.stdout, "changes replayed"), 4);
    assert_eq!(summary_count(&run.stdout, "unchanged"), 3);
    assert_eq!(summary_count(&run.stdout, "newly refused"), 1);
    assert_eq!(summary_count(&run.stdout, "newly allowed"), 0);
    assert_eq!(summary_count(&run.stdout, "skipped"), 0);

    let strict = rules(
        dir.path(),
        &["backtest", "--config", new, "--fail-on-change"],
    );
    assert_eq!(strict.code, Some(1), "{}", strict.stderr);
    assert_eq!(strict.stdout, run.stdout, "the same report");
    assert!(
        strict
            .stderr
            .contains("1 recorded change would be decided differently"),
        "{}",
        strict.stderr
    );

    let json = backtest_json(dir.path(), &["--config", new]);
    assert_same_counts(&run.stdout, &json);
    let changes = json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{json:#}");
    assert_eq!(changes[0]["operation_id"], audit_id(&unlisted));
    assert_eq!(changes[0]["change"], "newly_refused");
    assert_eq!(changes[0]["was"]["outcome"], "allow");
    assert_eq!(changes[0]["now"]["outcome"], "deny");
    assert_eq!(changes[0]["now"]["rules"][0]["rule"], "sync-allowlist");

    // --since after every change: nothing to replay.
    let later = rules(
        dir.path(),
        &[
            "backtest",
            "--config",
            new,
            "--since",
            "2999-01-01",
            "--fail-on-change",
        ],
    );
    assert!(later.ok(), "{}", later.stderr);
    assert!(
        later
            .stdout
            .contains("no recorded change would be decided differently")
    );
    assert_eq!(summary_count(&later.stdout, "changes replayed"), 0);

    assert_eq!(
        std::fs::read(&db).unwrap(),
        untouched,
        "the log is only read"
    );
}

#[tokio::test]
async fn a_backtest_against_no_rules_says_what_a_rule_refused_would_now_be_allowed() {
    let emulator = spawn_emulator().await;
    seed_partner(&emulator, LISTED).await;
    seed_partner(&emulator, UNLISTED).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let proxy = proxy_recording_into(&emulator, &db, ALLOWLIST).await;
    let client = TestClient::new();

    let refused = enable_through(&proxy, UNLISTED, "Woodgrove").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let allowed = enable_through(&proxy, LISTED, "Fabrikam").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{:?}", allowed.body);
    // Refused for its body, before any rule saw it: not a decision to replay.
    let invalid = client
        .send(
            Method::PATCH,
            &sync_url(&proxy.url, "v1.0", LISTED),
            Some(json!({"colour": "blue"})),
        )
        .await;
    assert_eq!(
        invalid.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        invalid.body
    );
    proxy.shutdown().await;

    let empty = dir.path().join("no-rules.toml");
    std::fs::write(&empty, "# no [rules]: every change is allowed\n").unwrap();
    let args = [
        "backtest",
        "--config",
        empty.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ];
    let run = rules(dir.path(), &args);
    assert!(run.ok(), "{}", run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("would now"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert!(
        lines[0].contains(&audit_id(&refused))
            && lines[0].contains("would now be allowed (refused then by rule sync-allowlist)"),
        "{}",
        lines[0]
    );
    assert_eq!(summary_count(&run.stdout, "changes replayed"), 2);
    assert_eq!(summary_count(&run.stdout, "unchanged"), 1);
    assert_eq!(summary_count(&run.stdout, "newly allowed"), 1);
    assert_eq!(summary_count(&run.stdout, "skipped"), 1);
    assert!(
        run.stdout
            .contains("1  refused before the rules were consulted"),
        "{}",
        run.stdout
    );

    let json = backtest_json(dir.path(), &args[1..]);
    assert_same_counts(&run.stdout, &json);
    assert_eq!(json["changes"][0]["change"], "newly_allowed");
    assert_eq!(json["changes"][0]["was"]["outcome"], "deny");
    assert_eq!(
        json["changes"][0]["was"]["rules"][0]["rule"],
        "sync-allowlist"
    );
    assert_eq!(json["changes"][0]["now"]["outcome"], "allow");
    assert_eq!(
        json["summary"]["skipped_by_reason"]["refused_before_rules"],
        1
    );
    assert_eq!(json["skipped"][0]["operation_id"], audit_id(&invalid));
}

#[test]
fn a_backtest_fails_clearly_when_the_log_or_the_rules_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let empty = dir.path().join("no-rules.toml");
    std::fs::write(&empty, "").unwrap();
    let run = rules(
        dir.path(),
        &[
            "backtest",
            "--config",
            empty.to_str().unwrap(),
            "--db",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("no audit log at"), "{}", run.stderr);
    assert!(!missing.exists(), "a backtest creates nothing");

    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[[rules.builtin]]\nid = \"x\"\ntype = \"partner_denylist\"\ntenants = [\"nope\"]\n",
    )
    .unwrap();
    let run = rules(
        dir.path(),
        &[
            "backtest",
            "--config",
            broken.to_str().unwrap(),
            "--db",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("cannot load the rules in") && run.stderr.contains("\"nope\""),
        "{}",
        run.stderr
    );
}
