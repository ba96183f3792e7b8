//! Scheduler side: serve a market over NATS from your process and use it directly too.
//!
//! ```sh
//! nats-server -js &
//! cargo run --example scheduler --features nats -- nats://127.0.0.1:4222
//! ```
//!
//! Then run the `agent` example against the same server. Stop with Ctrl-C: requests in flight
//! are answered and every event is journaled before it exits. Start it again and the market
//! comes back from its journal as it was: balances, pending bids, prices.

use std::time::Duration;

use capacity_auction::bindings::nats::{MarketService, ServiceConfig};
use capacity_auction::{AgentId, MarketConfig, PricingRule};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let market = MarketConfig {
        resources: ["cpu", "memory", "tokens"].map(String::from).into(),
        pricing: PricingRule::CriticalValue,
        ..MarketConfig::default()
    };
    let nats = async_nats::connect(&url).await?;
    let config = ServiceConfig { cadence: Some(Duration::from_millis(100)), ..ServiceConfig::default() };
    // The market as its journal left it (or new): the service leads it from here.
    let service = MarketService::start(nats, market, config).await?;
    let market = service.market().clone();
    // The scheduler funds its agents in-process the first time; every deposit is journaled like
    // any request's. Agents could also be funded over `admin.market.deposit`.
    for agent in ["agent-1", "agent-2"] {
        let agent = AgentId::new(agent)?;
        if market.balance(&agent).is_none() {
            market.deposit(&agent, "100".parse()?)?;
        }
    }
    println!("serving on {url}; Ctrl-C to stop");
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                for price in market.prices() {
                    println!("{:>8}  index {}  utilization {:.0}%", price.resource, price.index, price.utilization * 100.0);
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    service.shutdown().await;
    Ok(())
}
