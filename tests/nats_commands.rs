//! The NATS commands against a server of the test's own: `serve` answers until SIGINT and then
//! drains cleanly.

#![cfg(all(feature = "nats", feature = "cli"))]

mod nats_harness;

use futures_util::TryStreamExt;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use capacity_auction::bindings::nats::MarketClient;
use capacity_auction::{BidRequest, Credits, Event, EventKind, Slot};
use nats_harness::NatsServer;

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_until_sigint_then_drains() {
    let server = NatsServer::start().await;
    let config = std::env::temp_dir().join(format!("capacity-auction-serve-{}.toml", std::process::id()));
    std::fs::write(&config, "name = \"cli-test\"\nresources = [\"cpu\"]\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
        .args(["serve", "--nats", &server.url, "--namespace", "cli", "--cadence-ms", "0", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = Killed(child);
    let mut lines = BufReader::new(serve.0.stderr.take().unwrap()).lines();
    let ready = tokio::task::spawn_blocking(move || {
        let ready = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("serving market"));
        (ready, lines)
    });
    let (ready, lines) = tokio::time::timeout(Duration::from_secs(20), ready).await.unwrap().unwrap();
    let ready = ready.unwrap_or_default();
    assert!(ready.starts_with("serving market `cli-test`"), "{ready}");

    let client = MarketClient::new(server.connect().await, Some("cli")).unwrap();
    client.deposit("alice", "10".parse::<Credits>().unwrap()).await.unwrap();
    let json = br#"{"id":"a1","bundle":{"cpu":"0.5"},"duration":2,"limit":"3"}"#;
    let accepted = client.bid("alice", &BidRequest::from_json(json).unwrap()).await.unwrap();
    let memory = br#"{"id":"a2","bundle":{"memory":"0.5"},"duration":2,"limit":"3"}"#;
    let refused = client.bid("alice", &BidRequest::from_json(memory).unwrap()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(capacity_auction::RejectCode::UnknownResource),
        "the configured market sells cpu only"
    );
    let cleared = client.clear(Some(Slot(0))).await.unwrap();
    assert!(accepted.seq < cleared.seq);

    let interrupted = Command::new("kill").args(["-INT", &serve.0.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let status = tokio::task::spawn_blocking(move || serve.0.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map_while(Result::ok).filter(|l| !l.starts_with("nats: ")).collect();
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");

    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream("cli_audit_log").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let last = Event::from_json(&stream.get_raw_message(last).await.unwrap().payload).unwrap();
    assert_eq!(Some(last.seq), cleared.seq);
    assert!(matches!(last.kind, EventKind::CycleCleared { won: 1, .. }));
    let id = stream
        .get_raw_message(1)
        .await
        .unwrap()
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .unwrap()
        .to_string();
    assert_eq!(id, "cli-test:1", "message ids name the configured market");
    let _ = std::fs::remove_file(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_throughput_and_latency_percentiles() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let config = capacity_auction::bindings::nats::ServiceConfig {
        namespace: Some("load".into()),
        cadence: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let service = capacity_auction::bindings::nats::MarketService::start(nats, Default::default(), config)
        .await
        .unwrap();
    let url = server.url.clone();
    let run = |batch: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
                .args(["load", "--nats", &url, "--namespace", "load", "--agents", "5", "--rate", "400"])
                .args(["--duration", "0.5", "--batch", batch, "--json"])
                .output()
                .unwrap()
        })
    };
    for (batch, requests) in [("1", 200), ("8", 25)] {
        let out = run(batch).await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["requests"], requests, "{v}");
        assert_eq!(v["bids_accepted"], 200, "{v}");
        let quantiles = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"].map(|k| v[k].as_f64().unwrap());
        assert!(quantiles[0] > 0.0 && quantiles.windows(2).all(|w| w[0] <= w[1]), "{v}");
        assert!(v["accepted_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        service.market().balance(&"load-0".parse().unwrap()).map(|b| b.available > Credits::ZERO),
        Some(true)
    );
    let before = service.market().totals().deposits;
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
            .args(["load", "--nats", &url, "--namespace", "load", "--store-ceiling", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["messages"], 200_000, "{v}");
    assert!(v["stored_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(service.market().totals().deposits, before, "the ceiling funds no agent, bids nothing");
    let js = async_nats::jetstream::new(server.connect().await);
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    assert!(names.iter().all(|n| !n.contains("ceiling")), "the scratch stream is deleted: {names:?}");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_run_over_nats_passes_what_passes_in_process() {
    let server = NatsServer::start().await;
    let scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let run = |extra: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_capacity-auction"))
                .args(["scenario", "run", scenarios])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let local = run(vec![]).await.unwrap();
    let remote = run(vec!["--nats".into(), server.url.clone()]).await.unwrap();
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stdout));
    let (local, remote) =
        (String::from_utf8(local.stdout).unwrap(), String::from_utf8(remote.stdout).unwrap());
    assert_eq!(remote, local, "the same verdicts");
    assert!(remote.trim_end().ends_with("passed, 0 failed"), "{remote}");
}
