//! A served market you can trust with credits, tested with real processes and real servers:
//! `capacity-auction serve` killed (SIGKILL) under `capacity-auction load` and restarted; a
//! leader killed with a standby running; a leader paused (SIGSTOP) past its lease while its
//! standby takes over, then resumed; one server of a three-server cluster killed under load; a
//! cluster losing its quorum. Each time: every acknowledged bid is in the market (sent again, it
//! is answered as a repeat with its first `seq`), credits are conserved exactly, the journal and
//! the audit_log are gapless, and the state each process recovered equals a replay from scratch.

#![cfg(feature = "nats")]

mod nats_harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use async_nats::Client;
use capacity_auction::bindings::nats::{ClientError, KIND, MarketClient, Subjects};
use capacity_auction::{BidRequest, Event, Market, MarketConfig, RejectCode, StateHash};
use nats_harness::serve::Serve;
use nats_harness::{NatsCluster, NatsServer};

const LEASE: &[&str] = &["--lease-ms", "1000", "--snapshot-every", "5"];
const READY: Duration = Duration::from_secs(30);

/// A bid the load acknowledged.
#[derive(Debug, serde::Deserialize)]
struct Ack {
    agent: String,
    bid: String,
    seq: Option<u64>,
    repeat: bool,
}

/// `capacity-auction load` in the background: `rate` bids/s for `seconds`, every
/// acknowledgement written to a file.
struct Load {
    run: tokio::task::JoinHandle<Output>,
    acks: PathBuf,
}

impl Load {
    fn start(url: &str, namespace: &str, rate: u32, seconds: f64) -> Load {
        let acks = std::env::temp_dir()
            .join(format!("capacity-auction-acks-{namespace}-{}.jsonl", std::process::id()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_capacity-auction"));
        command
            .args(["load", "--nats", url, "--namespace", namespace, "--agents", "20", "--json"])
            .args(["--rate", &rate.to_string(), "--duration", &seconds.to_string(), "--timeout-ms", "3000"])
            // Losers stay a few cycles: the audit_log holds runs of retained losses too.
            .args(["--good-for", "3"])
            .arg("--acks")
            .arg(&acks);
        Load { run: tokio::task::spawn_blocking(move || command.output().unwrap()), acks }
    }

    /// Waits for it to finish; its acknowledgements.
    async fn finish(self) -> Vec<Ack> {
        let out = self.run.await.unwrap();
        assert!(out.status.success(), "load failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&self.acks).unwrap();
        let _ = std::fs::remove_file(&self.acks);
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// A market's journal read back: its configuration, events and leaders, checked gapless.
struct History {
    config: MarketConfig,
    events: Vec<Event>,
    leaders: Vec<String>,
}

async fn journal(nats: &Client, subjects: &Subjects) -> History {
    let js = async_nats::jetstream::new(nats.clone());
    let stream = patiently(|| js.get_stream(subjects.journal())).await;
    let last = patiently(|| stream.get_info()).await.state.last_sequence;
    let (mut config, mut events, mut leaders) = (None, Vec::new(), Vec::new());
    for at in 1..=last {
        let message = patiently(|| stream.get_raw_message(at)).await;
        let kind = message.headers.get(KIND).map(|v| v.as_str().to_owned());
        match kind.as_deref() {
            Some("genesis") => {
                assert_eq!(at, 1, "the genesis comes first");
                config = Some(serde_json::from_slice(&message.payload).unwrap());
            }
            Some("leader") => leaders.push(String::from_utf8(message.payload.to_vec()).unwrap()),
            Some("events") => {
                for event in Event::from_lines(&message.payload).unwrap() {
                    assert_eq!(event.seq, events.len() as u64 + 1, "the journal is gapless, each event once");
                    events.push(event);
                }
            }
            other => panic!("journal message {at} of kind {other:?}"),
        }
    }
    History { config: config.expect("a genesis message"), events, leaders }
}

/// The audit_log, checked: gapless, each event once, at least through `through`, every event
/// equal to the journal's, each message's id naming its first event.
async fn audit_log(nats: &Client, subjects: &Subjects, through: u64, journal: &[Event]) {
    let logged = nats_harness::audit_messages(nats, &subjects.stream()).await;
    let mut seen = 0;
    for message in &logged {
        let id = nats_harness::audit_id("", &message.events);
        assert!(message.id.ends_with(&id), "{} names its events", message.id);
        for event in &message.events {
            seen += 1;
            assert_eq!(event.seq, seen, "gapless, each event once");
            // The journal was read first: the audit log may have gone on since.
            if let Some(journaled) = journal.get(seen as usize - 1) {
                assert_eq!(event, journaled, "audit_log event {seen}");
            }
        }
    }
    assert!(seen >= through, "{seen} < {through}");
}

/// What `ask` gives once the cluster answers: a cluster that lost a server may take seconds to
/// elect new stream leaders, and reading is not what these tests are about.
async fn patiently<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut ask: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ask().await {
            Ok(answer) => return answer,
            Err(e) if Instant::now() > deadline => panic!("no answer in 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The market replayed from the first event through `through`.
fn replayed(history: &History, through: u64) -> Market {
    let market = Market::builder().config(history.config.clone()).build().unwrap();
    market.replay(history.events.iter().take(through as usize)).unwrap();
    market
}

/// `(event, hash)` from a process's "read back to event N … state hash H" or "leading market …
/// from event N, state hash H" line. A process that read back to the middle of a cycle (its
/// predecessor died between cutting the book and journaling the outcome) has no hash to show
/// yet: `Err` with the reason it printed, "not taken (…)".
fn recovered(line: &str) -> (u64, Result<StateHash, String>) {
    let event = line.split("event ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap();
    let hash = line.rsplit("state hash ").next().unwrap();
    let hash = match hash.strip_prefix("not taken (").and_then(|h| h.strip_suffix(')')) {
        Some(reason) => Err(reason.to_string()),
        None => Ok(hash.parse().unwrap_or_else(|e| panic!("{line}: {e}"))),
    };
    (event.parse().unwrap(), hash)
}

/// Every check of the module's header, once the leader has caught up.
async fn check(nats: &Client, namespace: &str, acks: &[Ack], recoveries: &[String]) {
    let subjects = Subjects::new(Some(namespace)).unwrap();
    let client = MarketClient::new(nats.clone(), Some(namespace)).unwrap().timeout(Duration::from_secs(10));
    // The leader may be briefly silent (a cluster electing new stream leaders, a lease renewed
    // late): ask until it answers and its audit log has caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match client.status().await {
            Ok(status) if status.audited == Some(status.journaled) && status.halted.is_none() => {
                break status;
            }
            Ok(status) if Instant::now() > deadline => break status,
            Err(e) if Instant::now() > deadline => panic!("no status: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let history = journal(nats, &subjects).await;
    let last = history.events.len() as u64;
    assert!(status.journaled <= last);
    audit_log(nats, &subjects, status.journaled, &history.events).await;

    // Acknowledged means in the journal, where it was told.
    let fresh: Vec<&Ack> = acks.iter().filter(|a| !a.repeat).collect();
    assert!(fresh.len() > 100, "the load got {} bids through", fresh.len());
    for ack in &fresh {
        let seq = ack.seq.expect("an acknowledged bid has a seq");
        let e = &history.events[seq as usize - 1];
        assert_eq!(e.bid(), Some(ack.bid.as_str()), "bid {} at {seq}: {e:?}", ack.bid);
    }
    // Sent again, answered as a repeat with its first seq.
    let step = (fresh.len() / 40).max(1);
    for ack in fresh.iter().step_by(step) {
        let json = format!(r#"{{"id":"{}","bundle":{{"cpu":"0.01"}},"duration":1,"limit":"1"}}"#, ack.bid);
        let again = client.bid(&ack.agent, &BidRequest::from_json(json.as_bytes()).unwrap()).await.unwrap();
        assert!(again.repeat && again.seq == ack.seq, "{} again: {again:?}", ack.bid);
    }
    // Credits conserved exactly: deposits = available + escrowed + paid.
    let market = replayed(&history, last);
    let t = market.totals();
    assert_eq!(t.available.micros() + t.escrowed.micros() + t.burned.micros(), t.deposits.micros());
    // Each process's recovered state is the replay's at the same event.
    assert!(!recoveries.is_empty());
    for line in recoveries {
        let (event, hash) = recovered(line);
        let replay = replayed(&history, event).state_hash().map_err(|e| e.to_string());
        assert_eq!(replay, hash, "{line}");
    }
}

fn lines_with(serve: &Serve, prefix: &str) -> Vec<String> {
    serve.log.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_under_load_and_restarted_loses_nothing_acknowledged() {
    let server = NatsServer::start().await;
    let mut first = Serve::start(&server.url, "crash", LEASE);
    first.wait_for("serving market", READY).await;
    let load = Load::start(&server.url, "crash", 300, 5.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill();
    let mut second = Serve::start(&server.url, "crash", LEASE);
    second.wait_for("serving market", READY).await;
    let acks = load.finish().await;
    let nats = server.connect().await;
    let mut recoveries = lines_with(&second, "market `default` read back");
    recoveries.extend(lines_with(&second, "leading market"));
    check(&nats, "crash", &acks, &recoveries).await;
    second.signal("INT");
    assert!(second.exited(Duration::from_secs(20)).await.is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_within_seconds() {
    let server = NatsServer::start().await;
    let mut leader = Serve::start(&server.url, "pair", LEASE);
    leader.wait_for("serving market", READY).await;
    let mut standby = Serve::start(&server.url, "pair", &[LEASE, &["--standby"]].concat());
    standby.wait_for("standby for market", READY).await;
    let load = Load::start(&server.url, "pair", 300, 5.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    leader.kill();
    let killed = Instant::now();
    standby.wait_for("serving market", Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "the standby served {took:?} after the kill");
    let acks = load.finish().await;
    let nats = server.connect().await;
    check(&nats, "pair", &acks, &lines_with(&standby, "leading market")).await;
    let history = journal(&nats, &Subjects::new(Some("pair")).unwrap()).await;
    assert_eq!(history.leaders.len(), 1, "one takeover after the genesis: {:?}", history.leaders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_that_wakes_up_cannot_split_the_market() {
    let server = NatsServer::start().await;
    let mut old = Serve::start(&server.url, "brain", LEASE);
    old.wait_for("serving market", READY).await;
    let mut standby = Serve::start(&server.url, "brain", &[LEASE, &["--standby"]].concat());
    standby.wait_for("standby for market", READY).await;
    let load = Load::start(&server.url, "brain", 300, 6.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    old.signal("STOP");
    standby.wait_for("serving market", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    old.signal("CONT");
    let status = old.exited(Duration::from_secs(10)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(3),
        "the old leader stops: {}",
        old.log.lock().unwrap().join("\n")
    );
    let acks = load.finish().await;
    let nats = server.connect().await;
    check(&nats, "brain", &acks, &lines_with(&standby, "leading market")).await;
    let history = journal(&nats, &Subjects::new(Some("brain")).unwrap()).await;
    assert_eq!(history.leaders.len(), 1, "{:?}", history.leaders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_servers_under_load_loses_nothing_acknowledged() {
    let mut cluster = NatsCluster::start().await;
    let urls: Vec<String> = cluster.servers.iter().map(|s| s.url.clone()).collect();
    let all = urls.join(",");
    let mut serve = Serve::start(&all, "r3", &[LEASE, &["--replicas", "3"]].concat());
    serve.wait_for("serving market", READY).await;
    let load = Load::start(&urls[2], "r3", 300, 5.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.servers[0].kill();
    let acks = load.finish().await;
    let nats = async_nats::connect(&urls[2]).await.unwrap();
    check(&nats, "r3", &acks, &lines_with(&serve, "leading market")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_stops_while_the_journal_cannot_store_and_resumes_after() {
    let server = NatsServer::start().await;
    let mut serve = Serve::start(&server.url, "full", &[LEASE, &["--cadence-ms", "0"]].concat());
    serve.wait_for("serving market", READY).await;
    let nats = server.connect().await;
    let client = MarketClient::new(nats.clone(), Some("full")).unwrap().timeout(Duration::from_secs(2));
    client.deposit("alice", "100".parse().unwrap()).await.unwrap();
    let bid = |id: &str| {
        let json = format!(r#"{{"id":"{id}","bundle":{{"cpu":"0.01"}},"duration":1,"limit":"1"}}"#);
        BidRequest::from_json(json.as_bytes()).unwrap()
    };
    let before = client.bid("alice", &bid("before")).await.unwrap();

    // The journal's stream takes no more messages (full, discarding new ones).
    let js = async_nats::jetstream::new(nats.clone());
    let subjects = Subjects::new(Some("full")).unwrap();
    let mut stream = js.get_stream(subjects.journal()).await.unwrap();
    let open = stream.info().await.unwrap().config.clone();
    let mut full = open.clone();
    full.max_messages = stream.info().await.unwrap().state.messages as i64;
    full.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(full).await.unwrap();

    // The bid sent now is booked and waits; once the journal has failed for a while, intake
    // stops with a clear refusal that changes nothing.
    let in_flight = {
        let client = client.clone().timeout(Duration::from_secs(60));
        tokio::spawn(async move { client.bid("alice", &bid("waiting")).await })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (refused, probe) = 'probing: {
        for n in 0.. {
            // Probes before the stop are booked and wait, unanswered, like the bid above.
            let probe = format!("probe-{n}");
            match client.bid("alice", &bid(&probe)).await {
                Err(ClientError::Refused(r)) if r.code == RejectCode::Unavailable => {
                    break 'probing (r, probe);
                }
                _ if Instant::now() > deadline => panic!("intake never stopped"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        unreachable!()
    };
    assert!(refused.message.contains("journal"), "{refused}");
    let status = client.status().await.unwrap();
    assert!(status.halted.is_some() && status.journal_failures > 0, "{status:?}");
    assert!(!in_flight.is_finished(), "the waiting bid has no answer while its event is not stored");

    js.update_stream(open).await.unwrap();
    let waited = in_flight.await.unwrap().expect("the waiting bid is stored and answered");
    assert!(waited.seq > before.seq);
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match client.bid("alice", &bid("after")).await {
            Ok(ack) => break ack,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("intake never resumed: {e}"),
        }
    };
    assert!(after.seq > waited.seq);
    assert!(client.status().await.unwrap().halted.is_none());
    let history = journal(&nats, &subjects).await;
    let booked: BTreeMap<&str, u64> = history.events.iter().filter_map(|e| Some((e.bid()?, e.seq))).collect();
    assert_eq!(booked.get("waiting"), waited.seq.as_ref());
    assert!(!booked.contains_key(probe.as_str()), "the refused bid changed nothing");
    serve.signal("INT");
    assert!(serve.exited(Duration::from_secs(30)).await.is_some_and(|s| s.success()));
}

/// Most `audit_log` publishes go out without asking for an acknowledgement: a stream that
/// stores some of a run and then refuses the rest (it is full) must still end up gapless, each
/// event once, once it takes events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_refuses_events_for_a_while_is_filled_without_a_gap() {
    use async_nats::jetstream::stream::{Config, DiscardPolicy};

    let server = NatsServer::start().await;
    let mut serve = Serve::start(&server.url, "refusing", LEASE);
    serve.wait_for("serving market", READY).await;
    let load = Load::start(&server.url, "refusing", 300, 4.0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let nats = server.connect().await;
    let js = async_nats::jetstream::new(nats.clone());
    let name = Subjects::new(Some("refusing")).unwrap().stream();
    let info = js.get_stream(&name).await.unwrap().get_info().await.unwrap();
    assert_eq!(info.config.duplicate_window, Duration::from_secs(1), "ids are kept for a second");
    // Full 30 events on: not a multiple of the runs that ask for an acknowledgement.
    let full = info.state.messages as i64 + 30;
    let limited = Config { max_messages: full, discard: DiscardPolicy::New, ..info.config.clone() };
    js.update_stream(&limited).await.unwrap();
    let client = MarketClient::new(nats.clone(), Some("refusing")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().await.unwrap();
        let stream = js.get_stream(&name).await.unwrap();
        let state = stream.get_info().await.unwrap().state;
        // Stored up to the limit, and more journaled since that the stream refused (the service
        // counts as audited only what an acknowledgement covered, at most what is stored).
        // (More than `full` when messages landed between reading the stream and capping it.)
        if state.messages as i64 >= full {
            let last = stream.get_raw_message(state.last_sequence).await.unwrap();
            let stored = Event::from_lines(&last.payload).unwrap().last().unwrap().seq;
            if status.journaled > stored + 100 {
                assert!(status.audited.is_some_and(|a| a <= stored), "{status:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the full stream never held back the audit log: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refused for longer than the stream remembers message ids (a second, forgotten lazily): only
    // the chain of expected sequences keeps what it stored of the run from being stored twice.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    js.update_stream(&Config { max_messages: -1, ..limited }).await.unwrap();
    let acks = load.finish().await;
    check(&nats, "refusing", &acks, &lines_with(&serve, "leading market")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_audit_log_is_refilled_from_the_journal() {
    let server = NatsServer::start().await;
    let mut serve = Serve::start(&server.url, "refill", LEASE);
    serve.wait_for("serving market", READY).await;
    let load = Load::start(&server.url, "refill", 300, 4.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let nats = server.connect().await;
    let js = async_nats::jetstream::new(nats.clone());
    js.delete_stream(Subjects::new(Some("refill")).unwrap().stream()).await.unwrap();
    let acks = load.finish().await;
    check(&nats, "refill", &acks, &lines_with(&serve, "leading market")).await;
}
