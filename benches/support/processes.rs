//! The child processes of a benchmark run (nginx, syncgate) and their ports, shared by the
//! benches that start them (`#[path]`-included: benches are separate crates).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `port` takes connections.
pub(crate) fn wait_for(port: u16) {
    let until = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process stopped on drop: SIGTERM (nginx's master then stops its workers, which
/// SIGKILL would leave running), then SIGKILL after 5 s.
pub(crate) struct Process(pub(crate) Child);

impl Process {
    /// An nginx started with `conf` (written as `dir/{name}.conf`, prefix `dir`), in the
    /// foreground.
    pub(crate) fn nginx(dir: &Path, name: &str, conf: &str) -> Process {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: kill has no preconditions; the pid is our child's, not yet reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
