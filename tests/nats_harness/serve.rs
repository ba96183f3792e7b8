//! `capacity-auction serve` as a child process of the test: its standard error read line by
//! line, waited on by prefix; killed (SIGKILL), paused and resumed (SIGSTOP, SIGCONT) or
//! interrupted (SIGINT) like a real deployment's process; killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A running `capacity-auction serve`.
pub struct Serve {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line it wrote so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// `serve --nats url --namespace ns` with `extra` arguments.
    pub fn start(url: &str, namespace: &str, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["serve", "--nats", url, "--namespace", namespace])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("capacity-auction serve starts");
        let stderr = child.stderr.take().expect("a piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Serve { child, lines, log }
    }

    /// The first line from now on that starts with `prefix`.
    ///
    /// # Panics
    ///
    /// When none comes `within`, with everything the process wrote.
    pub async fn wait_for(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) if line.starts_with(prefix) => return line,
                Ok(Some(_)) => {}
                _ => panic!(
                    "no line `{prefix}…` in {within:?}; the process wrote:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `INT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.pid());
    }

    /// Kills it at once (SIGKILL): no draining, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status, once it exits within `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // What the process said is the first thing to read when a test fails.
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- capacity-auction serve said:\n{}\n---", log.join("\n"));
        }
    }
}
