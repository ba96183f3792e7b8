//! Agent side: bid over NATS and await the outcome on the event stream.
//!
//! ```sh
//! cargo run --example agent --features nats -- nats://127.0.0.1:4222 agent-1
//! ```
//!
//! Needs a market served on that server (the `scheduler` example, or `capacity-auction serve`)
//! and credits for the agent.

use std::time::{Duration, SystemTime};

use capacity_auction::bindings::nats::MarketClient;
use capacity_auction::{BidRequest, Event, EventKind};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let agent = args.next().unwrap_or_else(|| "agent-1".into());
    let nats = async_nats::connect(&url).await?;
    let market = MarketClient::new(nats.clone(), None)?.correlation_id(format!("{agent}-demo"));

    // Listen before bidding, so the outcome cannot slip by.
    let mut outcomes = nats.subscribe(market.subjects().events()).await?;
    let id = format!("b{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_millis());
    let bid = BidRequest::from_json(
        format!(r#"{{"id":"{id}","bundle":{{"cpu":"0.1","memory":"0.05"}},"duration":60,"limit":"12"}}"#)
            .as_bytes(),
    )?;
    let ack = market.bid(&agent, &bid).await?;
    println!("{id} accepted as event {:?}", ack.seq);

    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = outcomes.next().await {
            // One event, or a run of a cycle's retained losses (bids with `good_for` above 1).
            let Ok(events) = Event::from_lines(&message.payload) else { continue };
            for event in events.into_iter().filter(|e| e.bid() == Some(id.as_str())) {
                match event.kind {
                    EventKind::BidWon { start, end, payment, .. } => {
                        return format!("won slots [{start}, {end}) for {payment}");
                    }
                    EventKind::BidLost { shortfall, .. } => {
                        return format!(
                            "lost (short by {})",
                            shortfall.map_or("?".into(), |s| s.to_string())
                        );
                    }
                    EventKind::BidExpired { .. } => return "expired".into(),
                    _ => {}
                }
            }
        }
        "the event stream ended".into()
    })
    .await
    .unwrap_or_else(|_| "no outcome within 10 s: is the market clearing?".into());
    println!("{id}: {outcome}");
    let balance = market.balance(&agent).await?;
    println!("{agent}: {} available, {} escrowed", balance.available, balance.escrowed);
    if let Ok(price) = market.state("cpu").await {
        println!("cpu: {}", price.to_json());
    }
    Ok(())
}
