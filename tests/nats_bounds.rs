//! No input can break the log or the ledger: oversized ids, headers and batches are refused (or
//! echoed cut) before anything is applied, the requests after them are answered, an operator's
//! clearing is refused while the loop keeps the clock, and a restarted service goes on with the
//! same `seq` and never reuses a message id.

#![cfg(feature = "nats")]

mod nats_harness;

use std::time::Duration;

use capacity_auction::bindings::nats::{
    KIND, MAX_BATCH, MAX_CORRELATION_ID, MarketClient, MarketService, Reply, ServiceConfig,
};
use capacity_auction::{BidRequest, Credits, Event, EventKind, MarketConfig, RejectCode, Rejection, Slot};
use nats_harness::NatsServer;

fn config(namespace: &str, cadence: Option<Duration>) -> ServiceConfig {
    ServiceConfig {
        namespace: Some(namespace.into()),
        cadence,
        snapshot_every: None,
        ..ServiceConfig::default()
    }
}

fn market() -> MarketConfig {
    MarketConfig {
        name: "bounds".into(),
        resources: vec!["cpu".into()],
        max_bids_per_agent: 10_000,
        ..MarketConfig::default()
    }
}

async fn send(client: &MarketClient, subject: String, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    client.request(subject, payload.into()).await.map(|b| b.to_vec()).map_err(|e| e.to_string())
}

fn refusal(answer: &[u8]) -> Rejection {
    serde_json::from_slice::<Reply>(answer).unwrap().into_result().unwrap_err()
}

/// The events of a namespace's journal, in order.
async fn journal(client: &MarketClient) -> Vec<Event> {
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream(client.subjects().journal()).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut events = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        if message.headers.get(KIND).map(|v| v.as_str()) == Some("events") {
            events.extend(Event::from_lines(&message.payload).unwrap());
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_or_cut_and_the_next_request_is_answered() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let service = MarketService::start(nats.clone(), market(), config("big", None)).await.unwrap();
    let client = MarketClient::new(nats.clone(), Some("big")).unwrap().timeout(Duration::from_secs(10));
    client.deposit("alice", "100".parse().unwrap()).await.unwrap();

    // A bid whose invalid id is most of a megabyte: refused, and echoed cut.
    let id = "x".repeat(900_000);
    let json = format!(r#"{{"id":"{id}","bundle":{{"cpu":"0.1"}},"duration":1,"limit":"1"}}"#);
    let answer = send(&client, client.subjects().bid("alice"), json.into_bytes()).await.unwrap();
    assert!(answer.len() < 1024, "the reply is small: {} bytes", answer.len());
    assert_eq!(refusal(&answer).code, RejectCode::Malformed);
    let next = client.deposit("alice", "1".parse().unwrap()).await.unwrap();

    // A 560 KB correlation id: refused before anything is applied.
    let huge = client.clone().correlation_id("c".repeat(560_000));
    let refused = huge.deposit("alice", "5".parse().unwrap()).await.unwrap_err();
    assert_eq!(refused.code(), Some(RejectCode::Malformed), "{refused}");
    let limit = client.clone().correlation_id("c".repeat(MAX_CORRELATION_ID));
    limit.deposit("alice", "2".parse().unwrap()).await.unwrap();

    // 12,500 bids in one request: refused whole, nothing booked.
    let bids: Vec<BidRequest> = (0..12_500)
        .map(|i| {
            let json = format!(r#"{{"id":"b{i}","bundle":{{"cpu":"0.0001"}},"duration":1,"limit":"0.001"}}"#);
            BidRequest::from_json(json.as_bytes()).unwrap()
        })
        .collect();
    let answer =
        send(&client, client.subjects().bids("alice"), serde_json::to_vec(&bids).unwrap()).await.unwrap();
    assert_eq!(refusal(&answer).code, RejectCode::Malformed);
    let within = client.bids("alice", &bids[..MAX_BATCH]).await.unwrap();
    assert!(within.iter().all(|r| r.is_ok()), "a batch of {MAX_BATCH} is taken");

    let balance = client.balance("alice").await.unwrap();
    let escrowed = Credits::from_micros(1_000 * MAX_BATCH as u64);
    assert_eq!(
        (balance.available, balance.escrowed),
        ("103".parse::<Credits>().unwrap().checked_sub(escrowed).unwrap(), escrowed)
    );
    assert!(service.caught_up(Duration::from_secs(20)).await);
    let events = journal(&client).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless");
        assert!(e.to_json().len() < 2048, "every event is small: {}", e.to_json().len());
    }
    let echoed = events.iter().find_map(|e| match &e.kind {
        EventKind::BidRejected { bid, message, .. } => Some((bid.len(), message.len())),
        _ => None,
    });
    assert_eq!(echoed, Some((64, Rejection::MAX_MESSAGE)), "the id cut to 64 bytes, the message to 256");
    assert!(next.seq.unwrap() > 2, "the deposit after the huge bid was journaled and answered");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_clear_is_refused_while_the_loop_keeps_the_clock() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let looped = config("looped", Some(Duration::from_millis(50)));
    let service = MarketService::start(nats.clone(), market(), looped).await.unwrap();
    let client = MarketClient::new(nats.clone(), Some("looped")).unwrap();
    let refused = client.clear(Some(Slot(1_000_000_000))).await.unwrap_err();
    assert_eq!(refused.code(), Some(RejectCode::Forbidden), "{refused}");
    assert!(service.market().now() < Slot(1_000), "the clock did not jump");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_goes_on_where_it_stopped() {
    let server = NatsServer::start().await;
    let nats = server.connect().await;
    let client = MarketClient::new(nats.clone(), Some("again")).unwrap().timeout(Duration::from_secs(10));
    let bid = |id: &str| {
        let json = format!(
            r#"{{"id":"{id}","bundle":{{"cpu":"0.1"}},"duration":1,"latest_end":1000,"limit":"1","good_for":50}}"#
        );
        BidRequest::from_json(json.as_bytes()).unwrap()
    };
    let first = MarketService::start(nats.clone(), market(), config("again", None)).await.unwrap();
    client.deposit("alice", "100".parse().unwrap()).await.unwrap();
    let kept = client.bid("alice", &bid("kept")).await.unwrap();
    client.clear(Some(Slot(3))).await.unwrap();
    let hash = first.market().state_hash().unwrap();
    first.shutdown().await;

    let second = MarketService::start(nats.clone(), market(), config("again", None)).await.unwrap();
    assert_eq!(second.market().state_hash().unwrap(), hash, "the same state");
    assert_eq!(second.market().now(), Slot(3));
    let repeat = client.bid("alice", &bid("kept")).await.unwrap();
    assert!(repeat.repeat && repeat.seq == kept.seq, "{repeat:?} vs {kept:?}");
    let later = client.deposit("alice", "1".parse().unwrap()).await.unwrap();
    assert!(later.seq > kept.seq);
    assert!(second.caught_up(Duration::from_secs(20)).await);

    // One history: gapless events, and in the audit_log each id once.
    let events = journal(&client).await;
    assert_eq!(events.len() as u64, later.seq.unwrap());
    let js = async_nats::jetstream::new(nats.clone());
    let mut audit = js.get_stream(client.subjects().stream()).await.unwrap();
    let stored = audit.info().await.unwrap().state.clone();
    assert_eq!(
        (stored.first_sequence, stored.last_sequence, stored.messages),
        (1, later.seq.unwrap(), later.seq.unwrap())
    );
    for seq in 1..=stored.last_sequence {
        let message = audit.get_raw_message(seq).await.unwrap();
        assert_eq!(Event::from_json(&message.payload).unwrap().seq, seq);
    }
    second.shutdown().await;
}
