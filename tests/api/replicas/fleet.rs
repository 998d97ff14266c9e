//! A fleet of `syncgate serve` processes on one PostgreSQL audit log and one Graph emulator, as an
//! organisation runs them behind a load balancer: each replica a child process with its own config
//! file and port-0 listeners (learned from its "listening" lines), all sharing the database, the
//! token key and the recovery token. Children are killed and the database dropped when the fleet
//! is dropped, so a failing test leaves nothing behind; their stderr is kept in files and printed
//! only when the test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::harness::syncgate_bin;
use crate::helpers::{TestEmulator, admin_token, spawn_emulator};
use crate::postgres::TestDatabase;

/// How long a replica may take from spawn to its "listening" lines (migrations included).
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One `syncgate serve` child process.
pub(crate) struct Replica {
    child: Child,
    /// The proxy listener, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The admin listener, `http://127.0.0.1:PORT`.
    pub(crate) admin_url: String,
    /// Where the child's stderr goes, read back when a test fails.
    stderr: PathBuf,
    /// Whether the test already killed it (its stderr is still worth showing).
    killed: bool,
}

impl Replica {
    /// SIGKILL: no drain, no flush, no goodbye; PostgreSQL sees its sessions end.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    /// `kill -TERM`, then wait (bounded) for the graceful exit.
    pub(crate) async fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "replica did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.killed = true;
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N replicas, one database, one emulator.
pub(crate) struct Fleet {
    pub(crate) emulator: TestEmulator,
    pub(crate) replicas: Vec<Replica>,
    /// `None` once dropped explicitly by [`Fleet::finish`].
    db: Option<TestDatabase>,
    /// Extra keys for the `[store]` table (e.g. `recovery_grace`), as TOML lines.
    store_extra: String,
    /// Replicas spawned so far, to name each one's files.
    spawned: usize,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A fresh database and emulator, and `n` replicas started at once (so their migrations and
    /// start-up recoveries race, as they do when an orchestrator starts a deployment).
    pub(crate) async fn start(n: usize, store_extra: &str) -> Fleet {
        let db = TestDatabase::create().await;
        let dir = tempfile::tempdir().unwrap();
        // 32 bytes, hex: every replica must fingerprint a token the same way.
        let key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_private(&dir.path().join("token-key"), &key);
        write_private(&dir.path().join("recovery-token"), &admin_token());
        let mut fleet = Fleet {
            emulator: spawn_emulator().await,
            replicas: Vec::new(),
            db: Some(db),
            store_extra: store_extra.to_owned(),
            spawned: 0,
            dir,
        };
        fleet.add(n).await;
        fleet
    }

    pub(crate) fn db_url(&self) -> String {
        self.db.as_ref().unwrap().url()
    }

    pub(crate) fn db_name(&self) -> String {
        self.db.as_ref().unwrap().name.clone()
    }

    /// Start `n` more replicas at once on the same database and emulator (their start-up
    /// recoveries race); returns their indexes in [`Fleet::replicas`].
    pub(crate) async fn add(&mut self, n: usize) -> Vec<usize> {
        let starting: Vec<Starting> = (0..n).map(|_| self.spawn()).collect();
        let mut added = Vec::new();
        for pending in starting {
            self.replicas.push(pending.listening().await);
            added.push(self.replicas.len() - 1);
        }
        added
    }

    fn config(&self) -> String {
        let dir = self.dir.path();
        format!(
            r#"[proxy]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[admin]
listen = "127.0.0.1:0"

[upstream]
url = "{upstream}"
timeout = "60s"

[store]
url = "{db}"
statement_timeout = "3s"
token_key = "{key}"
{extra}

[checkpoints]
key = "{checkpoint_key}"
every = "1s"

[audit]
recovery_token_file = "{token}"
"#,
            upstream = self.emulator.base,
            db = self.db_url(),
            key = dir.join("token-key").display(),
            checkpoint_key = dir.join("checkpoint-key").display(),
            token = dir.join("recovery-token").display(),
            extra = self.store_extra,
        )
    }

    /// Spawn `syncgate serve --config replica-N.toml`; [`Starting::listening`] waits for it.
    fn spawn(&mut self) -> Starting {
        let n = self.spawned;
        self.spawned += 1;
        let config = self.dir.path().join(format!("replica-{n}.toml"));
        std::fs::write(&config, self.config()).unwrap();
        let stderr = self.dir.path().join(format!("replica-{n}.stderr"));
        let mut child = Command::new(syncgate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env_remove("SYNCGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        // A thread reads the "listening" lines, then keeps draining stdout so the child never
        // blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let (mut url, mut admin_url) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("syncgate: proxy listening on ") {
                    url = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("syncgate: admin listening on ") {
                    admin_url = Some(rest.trim().to_owned());
                }
                if let (Some(u), Some(a)) = (&url, &admin_url)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((u.clone(), a.clone()));
                }
            }
        });
        Starting {
            replica: Replica {
                child,
                url: String::new(),
                admin_url: String::new(),
                stderr,
                killed: false,
            },
            listening: rx,
        }
    }

    /// Every event in the log, oldest first, as stored (the canonical JSON, `seq` included).
    pub(crate) async fn events(&self) -> Vec<Value> {
        let mut conn = PgConnection::connect(&self.db_url()).await.unwrap();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, event FROM audit_events ORDER BY seq")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let _ = conn.close().await;
        rows.into_iter()
            .map(|(seq, text)| {
                let event: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(event["seq"], seq, "the event's own seq is its row's");
                event
            })
            .collect()
    }

    /// `syncgate audit verify --db URL`: (success, stdout + stderr).
    pub(crate) fn verify(&self) -> (bool, String) {
        let out = Command::new(syncgate_bin())
            .args(["audit", "verify", "--db", &self.db_url()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Assert the hash chain verifies, with every replica's stderr in the message if not.
    pub(crate) fn assert_chain_verifies(&self) {
        let (ok, text) = self.verify();
        assert!(ok, "audit verify failed: {text}");
    }

    /// Stop every replica gracefully, then drop the database.
    pub(crate) async fn finish(mut self) {
        for replica in &mut self.replicas {
            if !replica.killed {
                replica.terminate().await;
            }
        }
        self.replicas.clear();
        if let Some(db) = self.db.take() {
            db.drop_now().await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, replica) in self.replicas.iter().enumerate() {
                eprintln!("---- replica {i} stderr ----\n{}", replica.stderr());
            }
        }
        self.replicas.clear();
        // A test that failed before `finish` still drops its database (TestDatabase's drop).
        self.db.take();
    }
}

/// A replica spawned but not yet listening.
pub(crate) struct Starting {
    replica: Replica,
    listening: tokio::sync::oneshot::Receiver<(String, String)>,
}

impl Starting {
    /// Wait (bounded) for both "listening" lines; panics with the child's stderr if it exits or
    /// takes too long.
    async fn listening(mut self) -> Replica {
        match tokio::time::timeout(START_DEADLINE, &mut self.listening).await {
            Ok(Ok((url, admin_url))) => {
                self.replica.url = url;
                self.replica.admin_url = admin_url;
                self.replica
            }
            outcome => panic!(
                "replica did not start ({}): {}",
                if outcome.is_err() {
                    "timed out"
                } else {
                    "exited"
                },
                self.replica.stderr()
            ),
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Poll `check` every 50 ms until it returns `Some`, failing with `what` after `limit`.
pub(crate) async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
