//! Nothing acknowledged is lost, and nothing is stored twice, when a server dies: a single
//! server killed and restarted on its store, and one of a three-server cluster killed under a
//! stream with three replicas.

#![cfg(feature = "nats")]

mod nats_harness;

use std::collections::BTreeMap;
use std::time::Duration;

use capacity_auction::bindings::nats::{ClientError, MarketClient, MarketService, ServiceConfig};
use capacity_auction::{BidRequest, Event, EventKind, RejectCode, Slot};
use nats_harness::{NatsCluster, NatsServer};

fn bid(id: &str) -> BidRequest {
    let json = format!(r#"{{"id":"{id}","bundle":{{"cpu":"0.01"}},"duration":1,"limit":"1"}}"#);
    BidRequest::from_json(json.as_bytes()).unwrap()
}

/// Bids until answered, resending the same id (safe: a repeat books nothing) while the
/// connection or the service is away, for up to 30 s (a cluster that lost a server elects new
/// stream leaders first); returns the `seq` of its `bid_accepted`.
async fn bid_until_answered(client: &MarketClient, id: &str) -> u64 {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < until {
        match client.bid("alice", &bid(id)).await {
            Ok(ack) => return ack.seq.expect("a seq"),
            // While the journal has no leader (a server just died) intake stops: try again.
            Err(ClientError::Refused(r)) if r.code == RejectCode::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(ClientError::Refused(r)) => panic!("{id} refused: {r}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{id} never answered")
}

/// Waits until the service answers through `client`'s server: in a cluster, the service's
/// subscriptions reach the other servers a moment after it starts.
async fn until_served(client: &MarketClient) {
    for _ in 0..100 {
        if client.status().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service never answered")
}

/// Five bids `<prefix>0`…`<prefix>4`, each until answered: id -> `seq`.
async fn five_bids(client: &MarketClient, prefix: &str) -> BTreeMap<String, u64> {
    let mut acks = BTreeMap::new();
    for i in 0..5 {
        let id = format!("{prefix}{i}");
        acks.insert(id.clone(), bid_until_answered(client, &id).await);
    }
    acks
}

/// The namespace's audit log, checked: gapless, each event once, every acknowledged bid at the
/// `seq` it was told.
async fn check_audit_log(client: &MarketClient, acknowledged: &BTreeMap<String, u64>) -> Vec<Event> {
    let js = async_nats::jetstream::new(client.nats().clone());
    let mut stream = js.get_stream(client.subjects().stream()).await.unwrap();
    let info = stream.info().await.unwrap().state.clone();
    let mut events = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let message = stream.get_raw_message(seq).await.unwrap();
        events.push(Event::from_json(&message.payload).unwrap());
    }
    assert_eq!(info.messages as usize, events.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless, each once");
    }
    for (id, seq) in acknowledged {
        let e = &events[*seq as usize - 1];
        assert!(
            matches!(&e.kind, EventKind::BidAccepted { bid, .. } if bid.as_str() == id),
            "{id} at {seq}: {e:?}"
        );
    }
    let accepted = events.iter().filter(|e| matches!(e.kind, EventKind::BidAccepted { .. })).count();
    assert_eq!(accepted, acknowledged.len());
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarted_on_its_store_loses_nothing_acknowledged() {
    let mut server = NatsServer::start().await;
    let service_nats = server.connect().await;
    let config =
        ServiceConfig { namespace: Some("restart".into()), cadence: None, ..ServiceConfig::default() };
    let service = MarketService::start(service_nats, Default::default(), config).await.unwrap();
    let client =
        MarketClient::new(server.connect().await, Some("restart")).unwrap().timeout(Duration::from_secs(2));
    client.deposit("alice", "100".parse().unwrap()).await.unwrap();
    let mut acknowledged = five_bids(&client, "before").await;
    server.kill();
    let during = {
        let client = client.clone();
        tokio::spawn(async move { five_bids(&client, "during").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    acknowledged.extend(during.await.unwrap());
    acknowledged.extend(five_bids(&client, "after").await);
    client.clear(Some(Slot(0))).await.unwrap();
    assert!(service.caught_up(Duration::from_secs(20)).await, "the audit_log caught up");
    let events = check_audit_log(&client, &acknowledged).await;
    assert!(matches!(events.last().unwrap().kind, EventKind::CycleCleared { won: 15, .. }));
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_servers_loses_nothing_acknowledged() {
    let mut cluster = NatsCluster::start().await;
    let service_nats =
        async_nats::ConnectOptions::new().retain_servers_order().connect(cluster.addresses()).await.unwrap();
    NatsServer::jetstream_ready(&service_nats).await;
    let config = ServiceConfig {
        namespace: Some("cluster".into()),
        cadence: None,
        replicas: 3,
        ..ServiceConfig::default()
    };
    let service = MarketService::start(service_nats, Default::default(), config).await.unwrap();
    // The client talks to the last server, the service (servers in order) to the first.
    let client_nats = async_nats::connect(&cluster.servers[2].url).await.unwrap();
    let client = MarketClient::new(client_nats, Some("cluster")).unwrap().timeout(Duration::from_secs(2));
    until_served(&client).await;
    client.deposit("alice", "100".parse().unwrap()).await.unwrap();
    let mut acknowledged = five_bids(&client, "before").await;
    cluster.servers[0].kill();
    acknowledged.extend(five_bids(&client, "after").await);
    client.clear(Some(Slot(0))).await.unwrap();
    assert!(service.caught_up(Duration::from_secs(20)).await, "the audit_log caught up");
    let events = check_audit_log(&client, &acknowledged).await;
    assert!(matches!(events.last().unwrap().kind, EventKind::CycleCleared { won: 10, .. }));
    let js = async_nats::jetstream::new(client.nats().clone());
    let info = js.get_stream("cluster_audit_log").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    service.shutdown().await;
}
