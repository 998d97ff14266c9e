//! The `syncgate` binary's commands, run as a user runs them.

use std::process::Command;

use crate::harness::syncgate_bin;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(syncgate_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/syncgate.toml");
    let (ok, stdout, stderr) = run(&["check-config", "--config", example]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn check_config_accepts_the_shipped_example_rule_set() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules/example.toml");
    let (ok, stdout, stderr) = run(&["check-config", "--config", example]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn check_config_names_an_unknown_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[upstream]\nurl = \"global\"\nconect_timeout = \"5s\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("unknown field `conect_timeout`"),
        "{stderr}"
    );
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn check_config_fails_on_unreadable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.toml");
    std::fs::write(
        &path,
        "[proxy.tls]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("proxy.tls") && stderr.contains("missing.crt"),
        "{stderr}"
    );
}

#[test]
fn check_config_fails_on_a_bad_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("up.toml");
    std::fs::write(&path, "[upstream]\nurl = \"moon\"\n").unwrap();
    let (ok, _, stderr) = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("upstream.url"), "{stderr}");
}

#[test]
fn every_command_explains_itself() {
    for cmd in [
        "serve",
        "emulate",
        "demo",
        "check-config",
        "migrate",
        "admin",
        "approvals",
    ] {
        let (ok, stdout, _) = run(&[cmd, "--help"]);
        assert!(ok && stdout.contains("Usage: syncgate"), "{cmd}: {stdout}");
    }
}

/// The README's "one command, no setup": `syncgate demo` starts, makes its changes, prints the
/// trail with an allowed change and both kinds of refusal, and stops on SIGTERM.
#[test]
fn the_demo_runs_and_prints_the_audit_trail() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(syncgate_bin())
        .arg("demo")
        .env("TMPDIR", tmp.path()) // the demo's database folder goes here
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(out.contains("PUT -> 204"), "{out}");
    assert!(out.contains("PATCH -> 400"), "{out}");
    assert!(out.contains("PUT -> 403"), "{out}");
    assert!(
        out.lines().any(|l| l.contains(" completed ")
            && l.contains("sync_create")
            && l.contains("applied")),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(" denied ")).count(),
        2,
        "{out}"
    );
    // Issue 12: one change held, approved by a second principal with the CLI, then applied by
    // the same call, and the trail of it: requested, the vote, received, completed.
    assert!(out.contains("it is now approved."), "{out}");
    let northwind: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Northwind") && l.contains("sync_create"))
        .collect();
    let kinds: Vec<&str> = northwind
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "approval_requested",
            "approval_vote",
            "received",
            "completed"
        ],
        "{out}"
    );
    assert!(northwind[3].contains("applied"), "{out}");
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status:?}"
    );
}

/// A log written with the library store: `old` allowed two hours ago, its rule passing; `new`
/// received ten minutes ago.
async fn recent_log(dir: &std::path::Path) -> (std::path::PathBuf, uuid::Uuid, uuid::Uuid) {
    use chrono::{TimeDelta, Utc};
    use serde_json::json;
    use syncgate::audit::{Decision, Event, EventKind, RuleOutcome, Snapshot};
    use syncgate::store::{Store, StoreOptions};
    const PARTNER: &str = "9c5d131d-b1c3-4fc4-9e3f-c6557947d551";
    let db = dir.join("audit.db");
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let (old_op, new_op) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (op, ago) in [
        (old_op, TimeDelta::hours(2)),
        (new_op, TimeDelta::minutes(10)),
    ] {
        let mut e = Event::new(op, EventKind::Received);
        e.time = Utc::now() - ago;
        e.operation = "sync_update".into();
        e.method = "PATCH".into();
        e.api_version = "v1.0".into();
        e.canonical_path = format!(
            "/v1.0/policies/crosstenantaccesspolicy/partners/{PARTNER}/identitysynchronization"
        );
        e.partner_tenant_id = PARTNER.parse().ok();
        e.request_body = Some(json!({"userSyncInbound": {"isSyncAllowed": true}}));
        e.before = Some(Snapshot::Present {
            value: json!({"userSyncInbound": {"isSyncAllowed": false}}),
        });
        e.decision = Some(Decision::Allow);
        e.rules_version = Some("ab".repeat(32));
        e.rule_results = vec![RuleOutcome {
            rule: "sync-allowlist".into(),
            kind: "partner_allowlist".into(),
            mode: "enforce".into(),
            action: "deny".into(),
            passed: true,
            message: None,
        }];
        store.append(e).await.unwrap();
    }
    store.close().await;
    (db, old_op, new_op)
}

/// `audit show` said `ok sync-allowlist (enforce, deny)` of a rule that passed, which reads like
/// a denial.
#[tokio::test]
async fn audit_show_says_a_passing_rule_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (db, old_op, _) = recent_log(dir.path()).await;
    let db = db.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["audit", "show", &old_op.to_string(), "--db", db]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("  ok    sync-allowlist passed (enforce mode: a failure would deny"),
        "{stdout}"
    );
    assert!(!stdout.contains("(enforce, deny)"), "{stdout}");
}

/// `--since 1h` and `--until 30m` count back from now, for `audit list` and `rules backtest`.
#[tokio::test]
async fn relative_times_narrow_the_audit_list_and_the_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let (db, old_op, new_op) = recent_log(dir.path()).await;
    let db = db.to_str().unwrap();
    let ops = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["audit", "list", "--format", "jsonl", "--db", db];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = run(&all);
        assert!(ok, "{args:?}: {stderr}");
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["operation_id"].to_string()
            })
            .map(|id| id.trim_matches('"').to_owned())
            .collect()
    };
    assert_eq!(ops(&["--since", "1h"]), [new_op.to_string()]);
    assert_eq!(ops(&["--until", "30m"]), [old_op.to_string()]);
    assert_eq!(ops(&["--since", "3h", "--until", "5m"]).len(), 2);
    let (ok, _, stderr) = run(&["audit", "list", "--since", "1y", "--db", db]);
    assert!(!ok && stderr.contains("time ago"), "{stderr}");

    let config = dir.path().join("rules.toml");
    std::fs::write(&config, format!("[store]\npath = {db:?}\n")).unwrap();
    let config = config.to_str().unwrap();
    let considered = |since: &str| {
        let args = [
            "rules", "backtest", "--config", config, "--format", "json", "--since", since,
        ];
        let (ok, stdout, stderr) = run(&args);
        assert!(ok, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["summary"]["considered"].clone()
    };
    assert_eq!(considered("1h"), 1);
    assert_eq!(considered("1d"), 2);
}

/// `--format json` through a pipe is a JSON array with one event per line (indented only for a
/// terminal), so scripts can read it whole or line by line.
#[tokio::test]
async fn json_through_a_pipe_has_one_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (db, old_op, new_op) = recent_log(dir.path()).await;
    let db = db.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["audit", "list", "--format", "json", "--db", db]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!((lines[0], lines[3]), ("[", "]"), "{stdout}");
    for (line, op) in lines[1..3].iter().zip([old_op, new_op]) {
        let event: serde_json::Value = serde_json::from_str(line.trim_end_matches(',')).unwrap();
        assert_eq!(event["operation_id"], op.to_string());
    }
    let all: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);

    let (ok, stdout, stderr) = run(&[
        "audit",
        "show",
        &new_op.to_string(),
        "--format",
        "json",
        "--db",
        db,
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// What the command line says, it says in sentences ending in a full stop: verdicts on stdout,
/// errors on stderr (only `... listening on URL` lines, read by programs, end in the address).
#[tokio::test]
async fn messages_end_in_full_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = recent_log(dir.path()).await;
    let db = db.to_str().unwrap();
    let last_line = |text: &str| {
        text.trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    };
    let (ok, stdout, stderr) = run(&["audit", "verify", "--db", db]);
    assert!(ok, "{stderr}");
    assert!(last_line(&stdout).ends_with('.'), "{stdout}");
    let (ok, stdout, _) = run(&["audit", "list", "--kind", "drift", "--db", db]);
    assert!(ok);
    assert_eq!(stdout, "no events.\n");
    let unknown = uuid::Uuid::now_v7().to_string();
    let (ok, _, stderr) = run(&["audit", "show", &unknown, "--db", db]);
    assert!(!ok);
    assert!(stderr.starts_with("syncgate: no operation"), "{stderr}");
    assert!(stderr.ends_with(".\n"), "{stderr:?}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules/example.toml");
    let (ok, stdout, stderr) = run(&["check-config", "--config", example]);
    assert!(ok, "{stderr}");
    assert!(stdout.lines().all(|l| l.ends_with('.')), "{stdout}");
}

/// `audit list --operations` is `GET /api/v1/operations` on the command line: one row per
/// operation, newest first, the API's filters, and a cursor on stderr when `--limit` cut it.
#[tokio::test]
async fn audit_list_operations_takes_the_api_filters_and_continues_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (db, old_op, new_op) = recent_log(dir.path()).await;
    let db = db.to_str().unwrap();
    let (old_op, new_op) = (old_op.to_string(), new_op.to_string());
    let list = |args: &[&str]| -> (Vec<String>, String) {
        let mut all = vec![
            "audit",
            "list",
            "--operations",
            "--format",
            "jsonl",
            "--db",
            db,
        ];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = run(&all);
        assert!(ok, "{args:?}: {stderr}");
        let ids = stdout
            .lines()
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                row["operation_id"].as_str().unwrap().to_owned()
            })
            .collect();
        (ids, stderr)
    };
    let ops = |args: &[&str]| list(args).0;
    assert_eq!(ops(&[]), [new_op.as_str(), old_op.as_str()]);
    assert_eq!(ops(&["--since", "1h"]), [new_op.as_str()]);
    assert_eq!(ops(&["--until", "30m"]), [old_op.as_str()]);
    assert_eq!(
        ops(&["--kind", "sync_update", "--decision", "allow"]).len(),
        2
    );
    assert_eq!(ops(&["--drift", "false"]).len(), 2);
    assert_eq!(
        ops(&["--partner", "9C5D131D-B1C3-4FC4-9E3F-C6557947D551"]).len(),
        2
    );
    for nothing in [
        &["--decision", "deny"][..],
        &["--kind", "partner_delete"],
        &["--rule", "sync-allowlist"],
        &["--drift", "true"],
        &["--status", "204"],
        &["--effect", "applied"],
        &["--actor", "nobody@contoso.com"],
        &["--q", "fabrikam"],
    ] {
        assert!(ops(nothing).is_empty(), "{nothing:?}");
    }

    let (first, stderr) = list(&["--limit", "1"]);
    assert_eq!(first, [new_op.as_str()]);
    let cursor = stderr
        .split("--cursor ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_else(|| panic!("no cursor in {stderr:?}"));
    let (rest, stderr) = list(&["--cursor", cursor]);
    assert_eq!((rest, stderr), (vec![old_op.clone()], String::new()));

    let (ok, stdout, stderr) = run(&["audit", "list", "--operations", "--db", db]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("STARTED "), "{stdout}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let (ok, stdout, _) = run(&[
        "audit",
        "list",
        "--operations",
        "--format",
        "csv",
        "--db",
        db,
    ]);
    assert!(ok && stdout.starts_with("operation_id,operation,partner_tenant_id,"));
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    for refused in [
        &["--rule", "x"][..],
        &["--operations", "--after", "3"],
        &["--operations", "--cursor", "nope"],
        &["--operations", "--effect", "teleported"],
    ] {
        let mut all = vec!["audit", "list", "--db", db];
        all.extend_from_slice(refused);
        let (ok, _, stderr) = run(&all);
        assert!(!ok, "{refused:?} was accepted");
        assert!(stderr.contains("--"), "{refused:?}: {stderr}");
    }
}

/// Every allocator option the binary sets (src/main.rs) is one jemalloc knows: it names one it
/// does not on standard error, and runs with its default instead.
#[test]
fn the_allocator_takes_its_options_without_complaint() {
    let (ok, _, stderr) = run(&["--version"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("jemalloc"), "{stderr}");
}
