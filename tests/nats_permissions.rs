//! With `deploy/nats/server.conf`, an agent cannot bid, cancel or read the balance of another,
//! and the engine ignores a payload claiming another agent.

#![cfg(feature = "nats")]

mod nats_harness;

use std::path::Path;
use std::time::Duration;

use capacity_auction::bindings::nats::{ClientError, MarketClient, MarketService, ServiceConfig};
use capacity_auction::{BidRequest, Credits, RejectCode};
use nats_harness::NatsServer;

const PASSWORDS: [(&str, &str); 4] = [
    ("SERVICE_PASSWORD", "service-secret"),
    ("OBSERVER_PASSWORD", "observer-secret"),
    ("AGENT_1_PASSWORD", "one-secret"),
    ("AGENT_2_PASSWORD", "two-secret"),
];

async fn connect(server: &NatsServer, user: &str, password: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .connect(&server.url)
        .await
        .unwrap()
}

async fn client_of(server: &NatsServer, user: &str, password: &str) -> MarketClient {
    MarketClient::new(connect(server, user, password).await, None)
        .unwrap()
        .timeout(Duration::from_millis(500))
}

fn bid(id: &str, agent: Option<&str>) -> BidRequest {
    let agent = agent.map(|a| format!(r#""agent":"{a}","#)).unwrap_or_default();
    let json = format!(r#"{{"id":"{id}",{agent}"bundle":{{"cpu":"0.1"}},"duration":2,"limit":"5"}}"#);
    BidRequest::from_json(json.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_kept_apart() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/server.conf");
    let server = NatsServer::with_config_file(&config, &PASSWORDS).await;
    let service_nats = connect(&server, "service", "service-secret").await;
    NatsServer::jetstream_ready(&service_nats).await;
    let config = ServiceConfig { cadence: None, ..ServiceConfig::default() };
    let service = MarketService::start(service_nats.clone(), Default::default(), config).await.unwrap();
    let market = service.market().clone();
    let operator = MarketClient::new(service_nats, None).unwrap();
    for agent in ["agent-1", "agent-2"] {
        operator.deposit(agent, "100".parse::<Credits>().unwrap()).await.unwrap();
    }
    let one = client_of(&server, "agent-1", "one-secret").await;
    let two = client_of(&server, "agent-2", "two-secret").await;
    let observer = client_of(&server, "observer", "observer-secret").await;

    // Each on its own subjects: fine.
    two.bid("agent-2", &bid("t1", None)).await.unwrap();
    one.bid("agent-1", &bid("o1", None)).await.unwrap();
    let before = two.balance("agent-2").await.unwrap();
    assert_eq!(before.escrowed, "5".parse().unwrap());

    // On another's subjects the server drops the request: no answer, nothing changes.
    let denied =
        |r: Result<_, ClientError>| matches!(r, Err(ClientError::Timeout(_) | ClientError::Transport(_)));
    assert!(denied(one.bid("agent-2", &bid("o2", None)).await.map(|_| ())), "bid as another agent");
    assert!(denied(one.cancel("agent-2", "t1").await.map(|_| ())), "cancel another's bid");
    assert!(denied(one.balance("agent-2").await.map(|_| ())), "read another's balance");
    assert!(
        denied(one.transfer("agent-2", "agent-1", "50".parse().unwrap()).await.map(|_| ())),
        "spend another's credits"
    );
    assert!(denied(one.deposit("agent-1", "1000".parse().unwrap()).await.map(|_| ())), "operator subjects");
    assert!(denied(observer.bid("agent-1", &bid("x1", None)).await.map(|_| ())), "the observer only reads");
    observer.state("cpu").await.unwrap_err().code().map(|c| assert_eq!(c, RejectCode::NotFound)).unwrap();

    // On its own subject, a payload naming another agent is refused by the engine.
    let claimed = one.bid("agent-1", &bid("o3", Some("agent-2"))).await.unwrap_err();
    assert_eq!(claimed.code(), Some(RejectCode::Forbidden));

    assert_eq!(two.balance("agent-2").await.unwrap(), before, "agent-2 is untouched");
    assert_eq!(market.live_bids(), 2, "only t1 and o1 were booked");
    two.cancel("agent-2", "t1").await.unwrap();
    service.shutdown().await;
}
