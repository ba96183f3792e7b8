//! Scheduler side: embed a market in your process, use it directly, and serve it over NATS.
//!
//! ```sh
//! nats-server -js &
//! cargo run --example scheduler --features nats -- nats://127.0.0.1:4222
//! ```
//!
//! Then run the `agent` example against the same server. Stop with Ctrl-C: requests in flight
//! are answered and every event is published before it exits.

use std::sync::Arc;
use std::time::Duration;

use capacity_auction::bindings::nats::{MarketService, ServiceConfig};
use capacity_auction::{AgentId, Market, PricingRule};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let market = Arc::new(
        Market::builder()
            .resources(["cpu", "memory", "tokens"])
            .pricing(PricingRule::CriticalValue)
            .build()?,
    );
    // The scheduler funds its agents in-process; agents could also be funded over
    // `admin.market.deposit`.
    for agent in ["agent-1", "agent-2"] {
        market.deposit(&AgentId::new(agent)?, "100".parse()?)?;
    }
    let nats = async_nats::connect(&url).await?;
    let config = ServiceConfig { cadence: Some(Duration::from_millis(100)), ..ServiceConfig::default() };
    let service = MarketService::start(nats, market.clone(), config).await?;
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
