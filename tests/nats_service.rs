//! The market served over NATS against a real server of the test's own: every subject, every
//! refusal reachable over the wire, dedupe, the audit log against the in-process stream, KV, and
//! timeouts.

#![cfg(feature = "nats")]

mod nats_harness;

use std::time::Duration;

use capacity_auction::bindings::nats::{ClientError, MarketClient, MarketService, ServiceConfig};
use capacity_auction::{BidRequest, Capacity, Credits, Event, EventKind, MarketConfig, RejectCode, Slot};
use nats_harness::NatsServer;

/// A market served under `namespace`, clearing only when told.
async fn serve(server: &NatsServer, namespace: &str, config: MarketConfig) -> (MarketService, MarketClient) {
    serve_with(server, namespace, config, ServiceConfig::default()).await
}

async fn serve_with(
    server: &NatsServer,
    namespace: &str,
    config: MarketConfig,
    service_config: ServiceConfig,
) -> (MarketService, MarketClient) {
    let nats = server.connect().await;
    let service_config = ServiceConfig { namespace: Some(namespace.into()), cadence: None, ..service_config };
    let service = MarketService::start(nats.clone(), config, service_config).await.unwrap();
    let client = MarketClient::new(nats, Some(namespace)).unwrap().timeout(Duration::from_secs(5));
    (service, client)
}

fn small_market() -> MarketConfig {
    MarketConfig {
        name: "test".into(),
        resources: vec!["cpu".into(), "memory".into()],
        horizon: 100,
        max_bids_per_agent: 3,
        book_size: 5,
        ..MarketConfig::default()
    }
}

fn bid(id: &str, cpu: &str, limit: &str) -> BidRequest {
    BidRequest::from_json(
        format!(
            r#"{{"id":"{id}","bundle":{{"cpu":"{cpu}"}},"duration":2,"latest_end":2,"limit":"{limit}"}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn credits(s: &str) -> Credits {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subject_answers_with_the_seq_of_its_event() {
    let server = NatsServer::start().await;
    let (service, client) = serve(&server, "happy", small_market()).await;
    let mut events = Seen { events: service.market().subscribe(), all: Vec::new() };

    let deposit = client.deposit("alice", credits("100")).await.unwrap();
    client.deposit("bob", credits("50")).await.unwrap();
    let balance = client.balance("alice").await.unwrap();
    assert_eq!(
        (balance.agent.as_str(), balance.available, balance.escrowed),
        ("alice", credits("100"), Credits::ZERO)
    );

    let first = client.bid("alice", &bid("a1", "0.6", "10")).await.unwrap();
    let batch = client.bids("bob", &[bid("b1", "0.6", "20"), bid("b2", "0.1", "5")]).await.unwrap();
    assert_eq!(batch.len(), 2);
    let batch: Vec<u64> = batch.into_iter().map(|r| r.unwrap().seq.unwrap()).collect();
    let cancel_me = client.bid("alice", &bid("a2", "0.1", "1")).await.unwrap();
    let cancelled = client.cancel("alice", "a2").await.unwrap();
    let moved = client.transfer("bob", "alice", credits("1.5")).await.unwrap();
    let outage = client.set_capacity("memory", Slot(50), Slot(60), Capacity::NONE).await.unwrap();
    assert_eq!(client.state("cpu").await.unwrap_err().code(), Some(RejectCode::NotFound));
    let cleared = client.clear(Some(Slot(0))).await.unwrap();

    let mut by_seq = |seq: Option<u64>| events.get(seq.expect("a seq"));
    assert!(matches!(by_seq(deposit.seq).kind, EventKind::CreditsDeposited { .. }));
    assert!(matches!(by_seq(first.seq).kind, EventKind::BidAccepted { ref bid, .. } if bid.as_str() == "a1"));
    for seq in batch {
        assert!(
            matches!(by_seq(Some(seq)).kind, EventKind::BidAccepted { ref agent, .. } if agent.as_str() == "bob")
        );
    }
    assert!(cancel_me.seq < cancelled.seq);
    assert!(matches!(by_seq(cancelled.seq).kind, EventKind::BidCancelled { .. }));
    assert!(matches!(by_seq(moved.seq).kind, EventKind::CreditsTransferred { .. }));
    assert!(matches!(by_seq(outage.seq).kind, EventKind::CapacityChanged { .. }));
    assert!(matches!(by_seq(cleared.seq).kind, EventKind::CycleCleared { won: 2, lost: 1, .. }));

    let state = client.state("cpu").await.unwrap();
    let EventKind::PriceDiscovered { resource, .. } = &state.kind else { panic!("{state:?}") };
    assert_eq!(&**resource, "cpu");
    assert!(state.seq < cleared.seq.unwrap());
    service.shutdown().await;
}

/// The in-process event stream, read as far as needed.
struct Seen {
    events: capacity_auction::Subscription,
    all: Vec<Event>,
}

impl Seen {
    fn get(&mut self, seq: u64) -> Event {
        while !self.all.iter().any(|e| e.seq == seq) {
            self.all.push(self.events.next_timeout(Duration::from_secs(5)).expect("the event was sequenced"));
        }
        self.all.iter().find(|e| e.seq == seq).cloned().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reaches_the_caller_with_its_code() {
    let server = NatsServer::start().await;
    let config =
        MarketConfig { reserve: [("cpu".to_owned(), "1".parse().unwrap())].into(), ..small_market() };
    let limit = ServiceConfig { max_payload: 4096, ..ServiceConfig::default() };
    let (service, client) = serve_with(&server, "codes", config, limit).await;
    client.deposit("alice", credits("10")).await.unwrap();
    client.deposit("bob", credits("1000")).await.unwrap();
    let raw = |agent: &str, json: &str| {
        let client = client.clone();
        let subject = client.subjects().bid(agent);
        let json = json.to_owned();
        async move {
            let answer = client.request(subject, json.into()).await.unwrap();
            let reply: capacity_auction::bindings::nats::Reply = serde_json::from_slice(&answer).unwrap();
            reply.into_result().unwrap_err().code
        }
    };
    let cases = [
        ("malformed", r#"{"id":"x1","bundle":"#),
        ("unknown_field", r#"{"id":"x2","bundle":{"cpu":"0.1"},"duration":1,"limit":5,"colour":1}"#),
        ("unknown_resource", r#"{"id":"x3","bundle":{"gpu":"0.1"},"duration":1,"limit":5}"#),
        ("invalid_share", r#"{"id":"x4","bundle":{"cpu":"1.5"},"duration":1,"limit":5}"#),
        ("empty_bundle", r#"{"id":"x5","bundle":{},"duration":1,"limit":5}"#),
        ("invalid_duration", r#"{"id":"x6","bundle":{"cpu":"0.1"},"duration":0,"limit":5}"#),
        ("invalid_window", r#"{"id":"x7","bundle":{"cpu":"0.1"},"duration":5,"latest_end":3,"limit":5}"#),
        ("beyond_horizon", r#"{"id":"x8","bundle":{"cpu":"0.1"},"duration":1,"latest_end":500,"limit":5}"#),
        ("invalid_amount", r#"{"id":"x9","bundle":{"cpu":"0.1"},"duration":1,"limit":0}"#),
        ("below_reserve", r#"{"id":"x10","bundle":{"cpu":"0.5"},"duration":4,"limit":1}"#),
        ("insufficient_credits", r#"{"id":"x11","bundle":{"cpu":"0.1"},"duration":1,"limit":11}"#),
        ("forbidden", r#"{"id":"x12","agent":"bob","bundle":{"cpu":"0.1"},"duration":1,"limit":1}"#),
        ("malformed", r#"{"id":"not an id","bundle":{"cpu":"0.1"},"duration":1,"limit":1}"#),
    ];
    for (code, json) in cases {
        assert_eq!(raw("alice", json).await.to_string(), code, "{json}");
    }
    assert_eq!(
        raw("carol", r#"{"id":"c1","bundle":{"cpu":"0.1"},"duration":1,"limit":1}"#).await,
        RejectCode::UnknownAgent
    );
    let untouched = client.balance("alice").await.unwrap();
    assert_eq!(
        (untouched.available, untouched.escrowed),
        (credits("10"), Credits::ZERO),
        "refusals change nothing"
    );
    // Three live bids per agent, five in the book.
    for i in 0..3 {
        client.bid("bob", &bid(&format!("b{i}"), "0.1", "2")).await.unwrap();
    }
    assert_eq!(
        client.bid("bob", &bid("b3", "0.1", "2")).await.unwrap_err().code(),
        Some(RejectCode::TooManyBids)
    );
    client.bid("alice", &bid("a1", "0.1", "2")).await.unwrap();
    client.bid("alice", &bid("a2", "0.1", "2")).await.unwrap();
    assert_eq!(
        client.bid("alice", &bid("a3", "0.1", "2")).await.unwrap_err().code(),
        Some(RejectCode::BookFull)
    );
    // Cancels, balances, transfers and the operator's subjects.
    assert_eq!(client.cancel("alice", "nope").await.unwrap_err().code(), Some(RejectCode::NotFound));
    client.clear(Some(Slot(0))).await.unwrap();
    let settled = client.balance("alice").await.unwrap();
    assert_eq!(client.cancel("alice", "a1").await.unwrap_err().code(), Some(RejectCode::NotPending));
    assert_eq!(client.balance("carol").await.unwrap_err().code(), Some(RejectCode::UnknownAgent));
    assert_eq!(
        client.transfer("alice", "bob", credits("1000")).await.unwrap_err().code(),
        Some(RejectCode::InsufficientCredits)
    );
    assert_eq!(
        client.transfer("alice", "bob", Credits::ZERO).await.unwrap_err().code(),
        Some(RejectCode::InvalidAmount)
    );
    assert_eq!(
        client.transfer("alice", "carol", credits("1")).await.unwrap_err().code(),
        Some(RejectCode::UnknownAgent)
    );
    assert_eq!(client.state("gpu").await.unwrap_err().code(), Some(RejectCode::UnknownResource));
    assert_eq!(
        client.set_capacity("gpu", Slot(1), Slot(2), Capacity::NONE).await.unwrap_err().code(),
        Some(RejectCode::UnknownResource)
    );
    assert_eq!(
        client.set_capacity("cpu", Slot(2), Slot(1), Capacity::NONE).await.unwrap_err().code(),
        Some(RejectCode::InvalidWindow)
    );
    assert!(client.clear(Some(Slot(0))).await.unwrap().seq.is_some(), "the same slot again is fine");
    client.clear(Some(Slot(3))).await.unwrap();
    assert_eq!(
        client.clear(Some(Slot(2))).await.unwrap_err().code(),
        Some(RejectCode::InvalidWindow),
        "time never goes back"
    );
    // Payloads that are not requests.
    let cancel = client.subjects().cancel("alice");
    let answer = client.request(cancel, r#"{"bid":"a1","colour":1}"#.into()).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("unknown_field"));
    let bids = client.subjects().bids("alice");
    let answer = client.request(bids, r#"{"id":"a9"}"#.into()).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("malformed"), "a batch is an array");
    let huge = vec![b' '; 4097];
    let answer = client.request(client.subjects().bid("alice"), huge.into()).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("is over 4096"), "{answer:?}");
    let answer = client.request(client.subjects().bid("bad.agent"), "{}".into()).await;
    assert!(matches!(answer, Err(ClientError::NoResponders(_))), "a subject token is never two");
    assert_eq!(client.balance("alice").await.unwrap(), settled, "refusals change nothing");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_bid_is_accepted_once_and_answered_with_the_first_seq() {
    let server = NatsServer::start().await;
    let (service, client) = serve(&server, "dedupe", small_market()).await;
    client.deposit("alice", credits("100")).await.unwrap();
    let first = client.bid("alice", &bid("a1", "0.1", "5")).await.unwrap();
    let again = client.bid("alice", &bid("a1", "0.1", "5")).await.unwrap();
    assert!(!first.repeat && again.repeat);
    assert_eq!(again.seq, first.seq);
    let batch = client.bids("alice", &[bid("a1", "0.1", "5"), bid("a2", "0.1", "5")]).await.unwrap();
    assert_eq!(batch[0].as_ref().unwrap().seq, first.seq);
    assert!(batch[0].as_ref().unwrap().repeat && !batch[1].as_ref().unwrap().repeat);
    service.shutdown().await;
    let accepted = audit_log(&client, "dedupe")
        .await
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::BidAccepted { bid, .. } if bid.as_str() == "a1"))
        .count();
    assert_eq!(accepted, 1);
}

/// Every event in the namespace's `audit_log`, in stream order, checking each message's id and
/// subject: a message holds one event, or a run of a cycle's retained losses.
async fn audit_log(client: &MarketClient, namespace: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for message in nats_harness::audit_messages(client.nats(), &format!("{namespace}_audit_log")).await {
        assert_eq!(message.id, nats_harness::audit_id("test", &message.events));
        let subject = match message.events.as_slice() {
            [event] => {
                let area = if event.kind.is_economy() { "economy" } else { "market" };
                format!("{namespace}.system.{area}.{}", event.kind.type_name())
            }
            run => {
                assert!(run.iter().all(|e| matches!(e.kind, EventKind::BidLost { retained: true, .. })));
                format!("{namespace}.system.market.bids_retained")
            }
        };
        assert_eq!(message.subject, subject);
        events.extend(message.events);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_books_retained_losses_go_to_the_audit_log_as_runs() {
    let server = NatsServer::start().await;
    let config = MarketConfig { max_bids_per_agent: 10, book_size: 10, ..small_market() };
    let (service, client) = serve(&server, "standing", config).await;
    let mut local = service.market().subscribe();
    client.deposit("alice", credits("100")).await.unwrap();
    client.bid("alice", &bid("big", "1", "50")).await.unwrap();
    for k in 1..=4 {
        let json = format!(
            r#"{{"id":"l{k}","bundle":{{"cpu":"0.5"}},"duration":2,"latest_end":2,"limit":"{k}","good_for":3}}"#
        );
        client.bid("alice", &BidRequest::from_json(json.as_bytes()).unwrap()).await.unwrap();
    }
    for _ in 0..3 {
        client.clear(Some(Slot(0))).await.unwrap();
    }
    service.shutdown().await;

    let in_process: Vec<Event> = std::iter::from_fn(|| local.try_next()).collect();
    assert_eq!(audit_log(&client, "standing").await, in_process, "each event once, in order");
    let runs: Vec<Vec<u64>> = nats_harness::audit_messages(client.nats(), "standing_audit_log")
        .await
        .into_iter()
        .filter(|m| m.events.len() > 1)
        .map(|m| m.events.iter().map(|e| e.cycle.unwrap()).collect())
        .collect();
    assert_eq!(runs, [vec![1; 4], vec![2; 4]], "two cycles' four retained losses, a message each");
    let last_losses =
        in_process.iter().filter(|e| matches!(e.kind, EventKind::BidLost { retained: false, .. }));
    assert_eq!(last_losses.count(), 4, "the third cycle's losses leave the book, one message each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_the_in_process_stream_and_kv_the_last_cycle() {
    let server = NatsServer::start().await;
    let (service, client) = serve(&server, "audit", small_market()).await;
    let mut local = service.market().subscribe();
    let tagged = client.clone().correlation_id("run-7");
    tagged.deposit("alice", credits("100")).await.unwrap();
    tagged.deposit("bob", credits("100")).await.unwrap();
    tagged.bid("alice", &bid("a1", "0.7", "10")).await.unwrap();
    tagged.bid("bob", &bid("b1", "0.7", "20")).await.unwrap();
    tagged.bid("bob", &bid("b2", "0.2", "20")).await.unwrap();
    client.bid("alice", &bid("x y", "0.1", "1")).await.unwrap_err();
    tagged.clear(Some(Slot(0))).await.unwrap();
    tagged.bid("alice", &bid("a2", "0.1", "3")).await.unwrap();
    tagged.clear(Some(Slot(1))).await.unwrap();
    service.shutdown().await;

    let in_process: Vec<Event> = std::iter::from_fn(|| local.try_next()).collect();
    let logged = audit_log(&client, "audit").await;
    assert!(in_process.len() > 15);
    assert_eq!(logged, in_process, "the stream holds each event once, in order");
    assert!(
        logged
            .iter()
            .filter(|e| e.bid() != Some("x y"))
            .all(|e| e.correlation_id.as_deref() == Some("run-7"))
    );

    let js = async_nats::jetstream::new(client.nats().clone());
    let prices = js.get_key_value("audit_market_prices").await.unwrap();
    let last_cpu = in_process
        .iter()
        .rev()
        .find(|e| matches!(&e.kind, EventKind::PriceDiscovered { resource, .. } if &**resource == "cpu"))
        .unwrap();
    let stored = prices.get("cpu").await.unwrap().expect("cpu's price is stored");
    assert_eq!(Event::from_json(&stored).unwrap(), *last_cpu);
    let agents = js.get_key_value("audit_agent_state").await.unwrap();
    for agent in ["alice", "bob"] {
        let stored = agents.get(agent).await.unwrap().expect("the agent's balance is stored");
        let stored: capacity_auction::bindings::nats::BalanceReply = serde_json::from_slice(&stored).unwrap();
        let now = client.balance(agent).await;
        assert!(matches!(now, Err(ClientError::NoResponders(_))), "the service is stopped");
        let (available, escrowed) = (stored.available, stored.escrowed);
        assert_eq!(
            available.micros() + escrowed.micros() + paid(&in_process, agent),
            credits("100").micros(),
            "{agent}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_go_to_kv_at_most_every_period_each_once_and_the_last_on_stop() {
    let server = NatsServer::start().await;
    let every = ServiceConfig { balances_every: Duration::from_secs(3600), ..ServiceConfig::default() };
    let (service, client) = serve_with(&server, "calm", small_market(), every).await;
    client.deposit("alice", credits("100")).await.unwrap();
    for k in 0..4u64 {
        let json = format!(r#"{{"id":"a{k}","bundle":{{"cpu":"0.1"}},"duration":1,"limit":"3"}}"#);
        client.bid("alice", &BidRequest::from_json(json.as_bytes()).unwrap()).await.unwrap();
        client.clear(Some(Slot(k))).await.unwrap();
    }
    let market = service.market().clone();
    service.shutdown().await;

    let js = async_nats::jetstream::new(client.nats().clone());
    let mut balances = js.get_stream("KV_calm_agent_state").await.unwrap();
    // Four cycles changed alice's balance: the first put at once, the rest held for the period
    // and put once, on stop.
    assert_eq!(balances.info().await.unwrap().state.last_sequence, 2, "two puts in all");
    let stored = js.get_key_value("calm_agent_state").await.unwrap().get("alice").await.unwrap().unwrap();
    let stored: capacity_auction::bindings::nats::BalanceReply = serde_json::from_slice(&stored).unwrap();
    let now = market.balance(&capacity_auction::AgentId::new("alice").unwrap()).unwrap();
    assert_eq!((stored.available, stored.escrowed), (now.available, now.escrowed), "the last balance");
    let prices = js.get_key_value("calm_market_prices").await.unwrap();
    let last_cpu = prices.entry("cpu").await.unwrap().expect("cpu's price is stored");
    assert_eq!(Event::from_json(&last_cpu.value).unwrap().cycle, Some(4), "the last cycle's price");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_of_more_agents_than_puts_in_flight_all_reach_kv() {
    let server = NatsServer::start().await;
    let (service, client) = serve_with(&server, "crowd", small_market(), ServiceConfig::default()).await;
    // More agents than the service keeps puts in flight at once, each with a balance of its own.
    let agents: Vec<String> = (0..100).map(|a| format!("agent-{a}")).collect();
    for (a, agent) in agents.iter().enumerate() {
        client.deposit(agent, credits(&format!("{}", a + 1))).await.unwrap();
    }
    client.clear(Some(Slot(0))).await.unwrap();
    let market = service.market().clone();
    service.shutdown().await;

    let bucket =
        async_nats::jetstream::new(client.nats().clone()).get_key_value("crowd_agent_state").await.unwrap();
    for agent in &agents {
        let stored = bucket.get(agent).await.unwrap().unwrap_or_else(|| panic!("{agent} is in the bucket"));
        let stored: capacity_auction::bindings::nats::BalanceReply = serde_json::from_slice(&stored).unwrap();
        let now = market.balance(&capacity_auction::AgentId::new(agent.as_str()).unwrap()).unwrap();
        assert_eq!((stored.available, stored.escrowed), (now.available, now.escrowed), "{agent}'s balance");
    }
}

/// Millionths `agent` paid over these events.
fn paid(events: &[Event], agent: &str) -> u64 {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BidWon { agent: a, payment, .. } if a.as_str() == agent => Some(payment.micros()),
            _ => None,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_or_silent_service_is_a_timeout_not_a_hang() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let client = MarketClient::new(nats.clone(), Some("nobody")).unwrap().timeout(Duration::from_millis(300));
    let absent = client.balance("alice").await.unwrap_err();
    assert!(matches!(absent, ClientError::NoResponders(_)), "{absent}");
    // Something listens but never answers.
    let _silent = nats.subscribe("silent.market.bid.*").await.unwrap();
    nats.flush().await.unwrap();
    let client = MarketClient::new(nats, Some("silent")).unwrap().timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let silent = client.bid("alice", &bid("a1", "0.1", "1")).await.unwrap_err();
    assert!(matches!(silent, ClientError::Timeout(_)), "{silent}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_clients_ack_window_is_published_whole() {
    let server = NatsServer::start().await;
    let config = MarketConfig { max_bids_per_agent: 10_000, book_size: 10_000, ..small_market() };
    let (service, client) = serve(&server, "burst", config).await;
    let market = service.market().clone();
    client.deposit("alice", credits("1000000")).await.unwrap();
    // 6,000 bids reach the writer in one round: more events than the client lets await acks.
    let burst = tokio::task::spawn_blocking(move || {
        for i in 0..6_000 {
            let json = format!(r#"{{"id":"x{i}","bundle":{{"cpu":"0.01"}},"duration":1,"limit":"1"}}"#);
            market
                .submit_as(&"alice".parse().unwrap(), &BidRequest::from_json(json.as_bytes()).unwrap())
                .unwrap();
        }
    });
    burst.await.unwrap();
    let cleared = client.clear(Some(Slot(0))).await.unwrap();
    assert!(service.caught_up(Duration::from_secs(20)).await, "the audit_log caught up");
    let events = audit_log(&client, "burst").await;
    assert_eq!(events.len() as u64, cleared.seq.unwrap());
    assert_eq!(events.iter().filter(|e| matches!(e.kind, EventKind::BidAccepted { .. })).count(), 6_000);
    service.shutdown().await;
}
