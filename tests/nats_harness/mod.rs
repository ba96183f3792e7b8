//! A `nats-server` of the tests' own: JetStream on, an ephemeral loopback port, a store in a
//! fresh temporary directory, killed and removed on drop. The binary is `$NATS_SERVER_BIN`, or
//! `nats-server` on `PATH` (`scripts/test` installs 2.15 when none is found).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running server; stopped and its store removed on drop.
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| "nats-server".into())
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "capacity-auction-nats-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

impl NatsServer {
    /// A plain server with JetStream.
    pub async fn start() -> NatsServer {
        NatsServer::spawn(|dir| vec!["-js".into(), "-sd".into(), dir.join("store").display().to_string()])
            .await
    }

    /// A server from the configuration file at `path`, with `env` set for the `$VARS` it reads
    /// and `NATS_STORE_DIR` pointing at a fresh store; the port comes from the command line.
    pub async fn with_config_file(path: &Path, env: &[(&str, &str)]) -> NatsServer {
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let path = path.display().to_string();
        NatsServer::spawn_with(env, move |_| vec!["-c".into(), path]).await
    }

    async fn spawn(args: impl FnOnce(&Path) -> Vec<String>) -> NatsServer {
        NatsServer::spawn_with(Vec::new(), args).await
    }

    async fn spawn_with(env: Vec<(String, String)>, args: impl FnOnce(&Path) -> Vec<String>) -> NatsServer {
        let dir = fresh_dir();
        let child = Command::new(binary())
            .envs(env)
            .env("NATS_STORE_DIR", dir.join("store"))
            .args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(&dir)
            .args(args(&dir))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).expect("a log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {:?} ({e}); run scripts/test, or set NATS_SERVER_BIN", binary())
            });
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let mut server = NatsServer { child, dir, url: String::new() };
        let deadline = Instant::now() + Duration::from_secs(10);
        server.url = loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = json["nats"][0].as_str()
            {
                break url.to_owned();
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
                panic!("nats-server exited at start-up ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "nats-server wrote no ports file in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        server
    }

    /// Waits until JetStream answers `$JS.API.INFO` through `client` (polled with a short
    /// timeout, not slept on).
    pub async fn jetstream_ready(client: &async_nats::Client) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = async_nats::Request::new().timeout(Some(Duration::from_millis(200)));
            if client.send_request("$JS.API.INFO", request).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "JetStream not ready in 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection, once JetStream is ready.
    pub async fn connect(&self) -> async_nats::Client {
        let client = async_nats::connect(&self.url).await.expect("the test server accepts connections");
        NatsServer::jetstream_ready(&client).await;
        client
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
