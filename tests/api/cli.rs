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
    for cmd in ["serve", "emulate", "demo", "check-config"] {
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
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status:?}"
    );
}
