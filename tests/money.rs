//! Money from JSON is exact. An amount written as a JSON number or string, with up to six
//! decimals and up to the most a `Credits` holds, reads back to the millionth, wherever it
//! enters: `Credits`, a bid's limit, a deposit. Every other spelling is refused as
//! `invalid_amount`, never rounded, and a refused amount changes nothing.

use capacity_auction::{AgentId, BidRequest, Credits, EventKind, Market, RejectCode, Resources};
use proptest::prelude::*;

/// The issue's refusals, and their neighbours: more than six decimals however far out, exponents,
/// non-finite words, negatives, one millionth past the maximum, stray characters and signs.
const REFUSED: [&str; 20] = [
    "1.00000000000000000000001",
    "1.0000001",
    "\"1.0000001\"",
    "1.0000000",
    "1e3",
    "1E-2",
    "\"1e3\"",
    "\"NaN\"",
    "\"inf\"",
    "-1",
    "\"-1\"",
    "-0",
    "18446744073709.551616",
    "\"18446744073709.551616\"",
    "18446744073709551616",
    "\" 1\"",
    "\"1 \"",
    "\"+1\"",
    "\"\"",
    "\"1.\"",
];

fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn bid_json(id: &str, limit: &str) -> String {
    format!(r#"{{"id":"{id}","agent":"a","bundle":{{"cpu":"0.5"}},"duration":1,"limit":{limit}}}"#)
}

/// The limit a bid written with `limit` (JSON text) gets, or the code it is refused with.
fn limit_of(limit: &str) -> Result<Credits, RejectCode> {
    let resources = Resources::new(["cpu"]).unwrap();
    BidRequest::from_json(bid_json("b1", limit).as_bytes())
        .and_then(|r| r.to_bid(&resources, None))
        .map(|bid| bid.limit())
        .map_err(|r| r.code)
}

fn market() -> Market {
    Market::builder().resources(["cpu"]).horizon(10).build().unwrap()
}

/// Millionths from anywhere in `u64`, with small amounts and the extremes drawn often.
fn micros() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), 0..10_000_000u64, 0..1_000u64, Just(u64::MAX), Just(u64::MAX - 1)]
}

/// `micros` as decimal text: the shortest spelling (`Display`), or all six places written.
fn spelled(micros: u64, all_places: bool) -> String {
    if all_places {
        format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    } else {
        Credits::from_micros(micros).to_string()
    }
}

proptest! {
    #[test]
    fn amounts_round_trip_exactly_as_numbers_and_strings(micros in micros(), all_places in any::<bool>()) {
        let text = spelled(micros, all_places);
        let expected = Credits::from_micros(micros);
        for json in [text.clone(), format!("\"{text}\"")] {
            let read: Credits = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(read, expected, "{}", json);
            prop_assert_eq!(limit_of(&json), Ok(expected), "{}", json);
            // A limit of zero reads as zero, and is refused for being zero when submitted.
            if micros == 0 {
                let m = market();
                m.deposit(&agent("a"), Credits::from_units(1)).unwrap();
                let bid = BidRequest::from_json(bid_json("b0", &json).as_bytes()).unwrap();
                let refused = m.submit_request(&bid).map_err(|r| r.code);
                prop_assert_eq!(refused.map(|_| ()), Err(RejectCode::InvalidAmount), "{}", json);
            }
        }
        // Written back as a string holding the shortest spelling, which reads back the same.
        let written = serde_json::to_string(&expected).unwrap();
        prop_assert_eq!(&written, &format!("\"{expected}\""));
        prop_assert_eq!(serde_json::from_str::<Credits>(&written).unwrap(), expected);
    }

    #[test]
    fn deposits_read_from_json_numbers_credit_exactly(micros in micros().prop_filter("a deposit", |&m| m > 0)) {
        let m = market();
        let amount: Credits = serde_json::from_str(&spelled(micros, false)).unwrap();
        m.deposit(&agent("a"), amount).unwrap();
        prop_assert_eq!(m.balance(&agent("a")).unwrap().available.micros(), micros);
    }
}

#[test]
fn the_issues_deposit_is_credited_to_the_millionth() {
    let number = "12345678901.123456";
    let amount: Credits = serde_json::from_str(number).unwrap();
    assert_eq!(amount.micros(), 12_345_678_901_123_456, "not 12345678901.123455");
    let m = market();
    m.deposit(&agent("a"), amount).unwrap();
    assert_eq!(m.balance(&agent("a")).unwrap().available.to_string(), number);
    assert_eq!(limit_of(number).unwrap().to_string(), number);
    let max = "18446744073709.551615";
    assert_eq!(serde_json::from_str::<Credits>(max).unwrap(), Credits::MAX);
    assert_eq!(limit_of(max), Ok(Credits::MAX));
}

#[test]
fn every_other_spelling_is_an_invalid_amount() {
    for bad in REFUSED {
        assert_eq!(limit_of(bad), Err(RejectCode::InvalidAmount), "limit {bad}");
        assert!(serde_json::from_str::<Credits>(bad).is_err(), "credits {bad}");
    }
    // A value of the wrong JSON type is still a malformed bid.
    for wrong in ["true", "null", "[1]", "{\"x\":1}"] {
        assert_eq!(limit_of(wrong), Err(RejectCode::Malformed), "limit {wrong}");
    }
}

#[test]
fn a_refused_limit_changes_nothing_and_is_announced() {
    let m = market();
    m.deposit(&agent("a"), "100".parse().unwrap()).unwrap();
    let mut events = m.subscribe();
    let before = (m.totals(), m.balance(&agent("a")), m.live_bids());
    for (i, bad) in REFUSED.iter().enumerate() {
        let refused = m.submit_json(bid_json(&format!("x{i}"), bad).as_bytes()).unwrap_err();
        assert_eq!(refused.code, RejectCode::InvalidAmount, "{bad}: {refused}");
        assert_eq!((m.totals(), m.balance(&agent("a")), m.live_bids()), before, "{bad}");
    }
    m.flush();
    // Besides the opening deposit, only the refusals.
    let rejected: Vec<(String, String, RejectCode)> = events
        .drain()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::BidRejected { bid, agent, reason, .. } => Some((bid, agent, reason)),
            EventKind::CreditsDeposited { .. } => None,
            other => panic!("only refusals, got {other:?}"),
        })
        .collect();
    let expected: Vec<_> =
        (0..REFUSED.len()).map(|i| (format!("x{i}"), "a".to_owned(), RejectCode::InvalidAmount)).collect();
    assert_eq!(rejected, expected);
}

#[cfg(feature = "nats")]
mod nats {
    //! The wire requests of credits read amounts the same way.

    use capacity_auction::Credits;
    use capacity_auction::bindings::nats::{DepositRequest, TransferRequest};

    use super::REFUSED;

    fn deposit(amount: &str) -> serde_json::Result<DepositRequest> {
        serde_json::from_str(&format!(r#"{{"agent":"a","amount":{amount}}}"#))
    }

    fn transfer(amount: &str) -> serde_json::Result<TransferRequest> {
        serde_json::from_str(&format!(r#"{{"to":"b","amount":{amount}}}"#))
    }

    #[test]
    fn deposits_and_transfers_decode_exactly() {
        for amount in ["12345678901.123456", "\"12345678901.123456\"", "18446744073709.551615", "0.000001"] {
            let text = amount.trim_matches('"');
            let expected: Credits = text.parse().unwrap();
            assert_eq!(Credits::from_decimal(deposit(amount).unwrap().amount), Ok(expected), "{amount}");
            assert_eq!(Credits::from_decimal(transfer(amount).unwrap().amount), Ok(expected), "{amount}");
        }
    }

    #[test]
    fn bad_amounts_do_not_decode_and_say_invalid_amount() {
        for bad in REFUSED {
            // The service turns this prefix into the reply's code (checked over a real server
            // below).
            let e = deposit(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid_amount: "), "deposit {bad}: {e}");
            let e = transfer(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid_amount: "), "transfer {bad}: {e}");
        }
    }
}

#[cfg(feature = "nats")]
mod nats_harness;

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_deposits_are_exact_and_bad_amounts_are_refused_with_their_code() {
    use std::time::Duration;

    use capacity_auction::bindings::nats::{MarketClient, MarketService, Reply, ServiceConfig};

    let server = nats_harness::NatsServer::start().await;
    let nats = server.connect().await;
    let service_config =
        ServiceConfig { namespace: Some("money".into()), cadence: None, ..ServiceConfig::default() };
    let service =
        MarketService::start(nats.clone(), market().config().clone(), service_config).await.unwrap();
    let client = MarketClient::new(nats, Some("money")).unwrap().timeout(Duration::from_secs(5));
    let send = |subject: String, json: String| {
        let client = client.clone();
        async move {
            let answer = client.request(subject, json.into()).await.unwrap();
            serde_json::from_slice::<Reply>(&answer).unwrap().into_result()
        }
    };
    let deposit =
        |amount: &str| send(client.subjects().deposit(), format!(r#"{{"agent":"a","amount":{amount}}}"#));
    deposit("12345678901.123456").await.unwrap();
    client.deposit("b", "1".parse().unwrap()).await.unwrap();
    let credited = client.balance("a").await.unwrap();
    assert_eq!(credited.available.to_string(), "12345678901.123456");
    for (i, bad) in REFUSED.iter().enumerate() {
        assert_eq!(deposit(bad).await.unwrap_err().code, RejectCode::InvalidAmount, "deposit {bad}");
        let transfer = send(client.subjects().transfer("a"), format!(r#"{{"to":"b","amount":{bad}}}"#));
        assert_eq!(transfer.await.unwrap_err().code, RejectCode::InvalidAmount, "transfer {bad}");
        let bid = send(client.subjects().bid("a"), bid_json(&format!("n{i}"), bad));
        assert_eq!(bid.await.unwrap_err().code, RejectCode::InvalidAmount, "bid {bad}");
    }
    assert_eq!(client.balance("a").await.unwrap(), credited, "refusals change nothing");
    assert_eq!(client.balance("b").await.unwrap().available, "1".parse().unwrap());
    service.shutdown().await;
}
