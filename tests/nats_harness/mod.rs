//! `nats-server`s of the tests' own: JetStream on, an ephemeral loopback port, a store in a
//! fresh temporary directory, killed and removed on drop; alone or as a three-server cluster.
//! The binary is `$NATS_SERVER_BIN`, or `nats-server` on `PATH` (`scripts/test` installs 2.15
//! when none is found).

#![allow(dead_code, unreachable_pub)]

pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running server; stopped and its store removed on drop.
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
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

/// A loopback port free now, for cluster routes, which must be known before the servers start.
/// It is taken below the kernel's ephemeral range, so no server's own `-p -1` port (nor any
/// other ephemeral socket) can be handed it in the meantime.
fn free_route_port() -> u16 {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(first_ephemeral / 2);
    let span = u32::from(first_ephemeral - low);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let mut pick = (std::process::id().wrapping_mul(7919) ^ nanos)
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 101);
    loop {
        let port = low + u16::try_from(pick % span).expect("below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        pick = pick.wrapping_add(1);
    }
}

impl NatsServer {
    /// A plain server with JetStream.
    pub async fn start() -> NatsServer {
        let dir = fresh_dir();
        let args = vec!["-js".into(), "-sd".into(), dir.join("store").display().to_string()];
        NatsServer::spawn(dir, args, Vec::new(), "-1").await
    }

    /// A server from the configuration file at `path`, with `env` set for the `$VARS` it reads
    /// and `NATS_STORE_DIR` pointing at a fresh store; the port comes from the command line.
    pub async fn with_config_file(path: &Path, env: &[(&str, &str)]) -> NatsServer {
        let dir = fresh_dir();
        let mut env: Vec<(String, String)> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        env.push(("NATS_STORE_DIR".into(), dir.join("store").display().to_string()));
        NatsServer::spawn(dir, vec!["-c".into(), path.display().to_string()], env, "-1").await
    }

    async fn spawn(dir: PathBuf, args: Vec<String>, env: Vec<(String, String)>, port: &str) -> NatsServer {
        NatsServer::try_spawn(dir, args, env, port).await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// A started server, or why it exited at start-up.
    async fn try_spawn(
        dir: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        port: &str,
    ) -> Result<NatsServer, String> {
        let child = NatsServer::run(&dir, &args, &env, port);
        let mut server = NatsServer { child, dir, args, env, url: String::new() };
        server.url = server.wait_for_port().await?;
        Ok(server)
    }

    fn run(dir: &Path, args: &[String], env: &[(String, String)], port: &str) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log"));
        Command::new(binary())
            .envs(env.iter().cloned())
            .args(["-a", "127.0.0.1", "-p", port, "--ports_file_dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log.expect("a log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {:?} ({e}); run scripts/test, or set NATS_SERVER_BIN", binary())
            })
    }

    async fn wait_for_port(&mut self) -> Result<String, String> {
        let ports = self.dir.join(format!("nats-server_{}.ports", self.child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = json["nats"][0].as_str()
            {
                return Ok(url.to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(format!("nats-server exited at start-up ({status}):\n{log}"));
            }
            assert!(Instant::now() < deadline, "nats-server wrote no ports file in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the server (no goodbye to its clients), keeping its store.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) {
        let port = self.url.rsplit(':').next().expect("a port").to_owned();
        self.child = NatsServer::run(&self.dir, &self.args, &self.env, &port);
        let url = self.wait_for_port().await.unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(url, self.url, "the same port");
    }

    /// Waits until JetStream answers `$JS.API.INFO` through `client` (polled with a short
    /// timeout, not slept on).
    pub async fn jetstream_ready(client: &async_nats::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let request = async_nats::Request::new().timeout(Some(Duration::from_millis(200)));
            if let Ok(answer) = client.send_request("$JS.API.INFO", request).await
                && !String::from_utf8_lossy(&answer.payload).contains("\"error\"")
            {
                return;
            }
            assert!(Instant::now() < deadline, "JetStream not ready in 20 s");
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
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three servers in one cluster (`server_name`, `cluster.name`, loopback routes), JetStream on
/// each.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three servers and waits until JetStream answers through each. A route port taken
    /// by another process between choosing it and listening on it costs a fresh try.
    pub async fn start() -> NatsCluster {
        let mut failure = String::new();
        for _ in 0..5 {
            match NatsCluster::try_start().await {
                Ok(cluster) => return cluster,
                Err(why) if why.contains("address already in use") => failure = why,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("no free route ports in five tries:\n{failure}")
    }

    async fn try_start() -> Result<NatsCluster, String> {
        let routes: Vec<u16> = (0..3).map(|_| free_route_port()).collect();
        let mut servers = Vec::new();
        for (i, port) in routes.iter().enumerate() {
            let dir = fresh_dir();
            let others: Vec<String> =
                routes.iter().filter(|p| *p != port).map(|p| format!("\"nats://127.0.0.1:{p}\"")).collect();
            let config = format!(
                "server_name: n{i}\njetstream {{ store_dir: \"{}\" }}\ncluster {{\n  name: test\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n",
                dir.join("store").display(),
                others.join(", ")
            );
            std::fs::write(dir.join("server.conf"), config).unwrap();
            let args = vec!["-c".into(), dir.join("server.conf").display().to_string()];
            servers.push(NatsServer::try_spawn(dir, args, Vec::new(), "-1").await?);
        }
        let cluster = NatsCluster { servers };
        for server in &cluster.servers {
            server.connect().await;
        }
        Ok(cluster)
    }

    /// Every server's address, in order, for a client that may use any of them.
    pub fn addresses(&self) -> Vec<async_nats::ServerAddr> {
        self.servers.iter().map(|s| s.url.parse().expect("a server address")).collect()
    }
}

/// The `Nats-Msg-Id` of an audit message of `market` holding `events`: the seq of its one
/// event, or the first and last of a run's.
pub fn audit_id(market: &str, events: &[capacity_auction::Event]) -> String {
    match events {
        [one] => format!("{market}:{}", one.seq),
        [first, .., last] => format!("{market}:{}-{}", first.seq, last.seq),
        [] => panic!("an audit message holds at least one event"),
    }
}

/// One message of an `audit_log` stream: its subject, its `Nats-Msg-Id`, the events it holds
/// (one, or a run of retained losses) and its headers.
pub struct Logged {
    pub subject: String,
    pub id: String,
    pub events: Vec<capacity_auction::Event>,
    pub headers: async_nats::HeaderMap,
}

/// Every message of the stream `name` through its last sequence, in order, read with an
/// ordered consumer; panics on a gap in stream sequences or a message that holds no events. A
/// cluster that lost a server may take seconds to elect the stream's new leader: reading starts
/// over until it succeeds, for up to 30 s.
pub async fn audit_messages(nats: &async_nats::Client, name: &str) -> Vec<Logged> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read_messages(nats, name).await {
            Ok(messages) => return messages,
            Err(e) if Instant::now() > deadline => panic!("reading {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn read_messages(nats: &async_nats::Client, name: &str) -> Result<Vec<Logged>, String> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(nats.clone());
    let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let state = stream.info().await.map_err(|e| e.to_string())?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    assert_eq!(state.messages, state.last_sequence - state.first_sequence + 1, "no stream sequence missing");
    let consumer = stream.create_consumer(OrderedConfig::default()).await.map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while (out.len() as u64) < state.messages {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| "no message in 10 s".to_owned())?
            .ok_or("the consumer ended")?
            .map_err(|e| e.to_string())?;
        let headers = message.headers.clone().unwrap_or_default();
        let id = headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let events = capacity_auction::Event::from_lines(&message.payload).expect("events");
        assert!(!events.is_empty(), "a message holds events");
        out.push(Logged { subject: message.subject.to_string(), id, events, headers });
    }
    Ok(out)
}
