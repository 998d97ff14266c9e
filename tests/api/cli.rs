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
