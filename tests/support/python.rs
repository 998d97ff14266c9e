//! Running outside checks from the test suite: prepare their tools (a Python virtualenv from
//! pinned requirements, a Node.js client) under the target directory, then run them with a
//! deadline. Shared by `tests/sdk.rs` and `tests/openapi.rs` (each includes this file with
//! `#[path]`), so there is one venv recipe: `tests/support/python_venv.sh`.
//!
//! A missing tool (python3, venv, PyPI, Node.js) fails the test loudly: it never skips, because a
//! skipped check would look like a passing one.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Creating a venv and installing from PyPI (or `npm ci`): ~20 s on a warm cache, more without.
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(600);

pub fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The python of the virtualenv `target/<venv_name>`, with `tests/<requirements>` installed.
pub async fn python_venv(requirements: &str, venv_name: &str) -> PathBuf {
    let mut script = Command::new("bash");
    script
        .arg(tests_dir().join("support/python_venv.sh"))
        .arg(tests_dir().join(requirements))
        .arg(venv_name);
    bootstrap(script, &format!("the {venv_name} virtualenv")).await
}

/// Run a bootstrap script (`support/python_venv.sh`, `js/bootstrap.sh`); what it prepared (the
/// venv's python, the client's folder) is the last line it prints.
pub async fn bootstrap(script: Command, what: &str) -> PathBuf {
    let shown = format!("{script:?}");
    let started = Instant::now();
    let output = run_to_end(script, BOOTSTRAP_DEADLINE).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{shown} could not prepare {what} ({}).\n--- stdout ---\n{stdout}\n\
         --- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    println!("preparing {what} took {:.1?}", started.elapsed());
    let prepared = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        prepared.exists(),
        "{shown} printed {prepared:?}, which does not exist"
    );
    prepared
}

/// Run `command` off the async workers, collecting its output; kill it at `deadline`.
pub async fn run_to_end(mut command: Command, deadline: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(deadline, waiting).await {
        Ok(joined) => joined
            .expect("the waiting thread panicked")
            .unwrap_or_else(|e| panic!("waiting for {command:?} failed: {e}")),
        Err(_) => {
            // The child is still running (it has not been reaped), so the pid is still its own.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not finish within {deadline:?}; killed it");
        }
    }
}
