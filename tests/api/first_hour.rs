//! Issue 8, "the first hour": what a new user meets on a fresh clone, run as they run it: the
//! demo's narration and suggestions, log lines in a file, a shutdown, the shipped configuration.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use crate::harness::{spawn_child_proxy, syncgate_bin};

/// An upstream nothing listens on: these tests start and stop syncgate without sending anything.
const NO_UPSTREAM: &str = "http://127.0.0.1:9";

/// A `syncgate demo` started with its temporary folder in `tmp`, read up to its last line.
struct Demo {
    child: Child,
    stdout: String,
    tmp: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(syncgate_bin())
            .arg("demo")
            .env("TMPDIR", tmp.path())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            stdout.push_str(&line);
            stdout.push('\n');
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        Demo { child, stdout, tmp }
    }

    /// The indented lines of the block that follows the line starting with `heading`.
    fn block(&self, heading: &str) -> String {
        let mut lines = self.stdout.lines().skip_while(|l| !l.starts_with(heading));
        lines.next().expect(heading);
        let block: Vec<&str> = lines
            .skip_while(|l| l.is_empty())
            .take_while(|l| !l.is_empty())
            .collect();
        block.join("\n")
    }

    /// Stop the demo with `signal` (as Ctrl-C or `kill` would); whether it exited cleanly, and
    /// what it wrote to stderr.
    fn stop(mut self, signal: &str) -> (bool, String, tempfile::TempDir) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self.child.wait().unwrap();
        (status.success(), stderr, self.tmp)
    }
}

/// Run `script` in `sh -e` with a PATH that holds only the system's tools: a command that relies
/// on `syncgate` being installed fails.
fn sh(script: &str) -> (bool, String, String) {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_narrates_at_terminal_width_with_no_log_lines_in_between() {
    let demo = Demo::start();
    let stdout = demo.stdout.clone();
    let (clean, stderr, _tmp) = demo.stop("TERM");
    assert!(clean, "{stderr}");
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "a line wider than 100 columns: {line:?}"
        );
    }
    assert!(
        !stderr.contains("INFO"),
        "the demo logs only warnings unless RUST_LOG asks: {stderr}"
    );
}

#[test]
fn the_demos_look_closer_commands_run_as_printed_without_syncgate_on_the_path() {
    let demo = Demo::start();
    let commands = demo.block("Look closer");
    let (ok, stdout, stderr) = sh(&commands);
    let _ = demo.stop("TERM");
    assert!(ok, "{commands}\n{stdout}\n{stderr}");
    assert!(stdout.contains("sync-allowlist"), "audit show: {stdout}");
    assert!(stdout.contains("audit log OK"), "audit verify: {stdout}");
    assert!(stdout.contains("approved"), "approvals list: {stdout}");
}

/// The first suggested curl shows the refusal's status, its audit id and Graph's error body, not
/// only a bare `403 Forbidden`; the second shows the allowed change.
#[test]
fn the_demos_curl_suggestions_show_the_status_and_graphs_error_body() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let demo = Demo::start();
    let script = demo.block("Try it yourself");
    let (ok, stdout, stderr) = sh(&script);
    let _ = demo.stop("TERM");
    assert!(ok, "{script}\n{stderr}");
    assert!(stdout.contains("HTTP/1.1 403 Forbidden"), "{stdout}");
    assert!(
        stdout.contains(r#"{"error":{"code":"SyncgatePolicyViolation""#),
        "{stdout}"
    );
    assert!(stdout.contains("rule 'sync-names'"), "{stdout}");
    assert!(stdout.contains("HTTP/1.1 204 No Content"), "{stdout}");
    assert_eq!(stdout.matches("x-syncgate-audit-id").count(), 2, "{stdout}");
}

#[test]
fn the_demo_removes_its_folder_when_stopped_with_ctrl_c() {
    let demo = Demo::start();
    let (clean, stderr, tmp) = demo.stop("INT");
    assert!(clean, "the demo exits cleanly on Ctrl-C: {stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let mut proxy = spawn_child_proxy(NO_UPSTREAM, &[]);
    proxy.signal("TERM");
    proxy.child.wait().unwrap();
    let stderr = proxy.stderr();
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a log file: {stderr}"
    );
}

#[test]
fn a_shutdown_names_each_listener_once_and_says_when_it_stopped() {
    let mut proxy = spawn_child_proxy(NO_UPSTREAM, &[]);
    proxy.signal("TERM");
    assert!(proxy.child.wait().unwrap().success());
    let stderr = proxy.stderr();
    for listener in ["proxy", "admin"] {
        let named = |what: &str| {
            stderr
                .lines()
                .filter(|l| l.contains(what) && l.contains(&format!("listener=\"{listener}\"")))
                .count()
        };
        assert_eq!(named("draining"), 1, "{listener}: {stderr}");
        assert_eq!(named("listener stopped"), 1, "{listener}: {stderr}");
    }
    assert!(stderr.contains("syncgate stopped"), "{stderr}");
}

/// The shipped reference configuration, started as a new user starts it from a checkout, keeps
/// the audit log and its token key in the user's data folder: nothing new appears in `config/`
/// (where `git status` would show the key).
#[test]
fn the_shipped_config_keeps_the_audit_log_and_its_key_out_of_the_source_tree() {
    let config_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(config_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(syncgate_bin())
        .args(["serve", "--config", &format!("{config_dir}/syncgate.toml")])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--upstream", NO_UPSTREAM])
        .env("HOME", home.path())
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if line.unwrap().starts_with("syncgate: admin listening") {
            break;
        }
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
    let folder = home.path().join(".local/share/syncgate");
    assert!(folder.join("syncgate.db").is_file());
    assert!(folder.join("syncgate.db.token-key").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert_eq!(listing(), before, "syncgate wrote into config/");
}

#[test]
fn the_default_audit_log_follows_xdg_data_home() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(syncgate_bin())
        .arg("check-config")
        .env("XDG_DATA_HOME", data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let expected = data.path().join("syncgate/syncgate.db");
    assert!(
        stdout.contains(&format!("audit log {}", expected.display())),
        "{stdout}"
    );
    assert!(
        !data.path().join("syncgate").exists(),
        "check-config created a folder"
    );
}
