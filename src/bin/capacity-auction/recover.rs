//! `capacity-auction recover --nats URL [--namespace NS] [--config FILE] [--no-snapshot]`: reads a
//! served market back from its journal, as `serve` does on start-up, and reports what it found and
//! how long it took, without serving it or changing anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use capacity_auction::bindings::nats::read_back;

use super::serve::market_config;

/// Reads a served market back from its latest snapshot and journal and prints the time it took,
/// the last event, the state hash and the book, without serving it.
#[derive(Debug, clap::Args)]
pub(crate) struct Recover {
    /// The NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The market's namespace, if it has one.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The market's configuration (as given to `serve`), JSON or TOML; defaults otherwise.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the whole journal from its first message, ignoring the latest snapshot.
    #[arg(long)]
    no_snapshot: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Recover) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = market_config(args.config.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let nats = async_nats::connect(&args.nats).await.map_err(|e| format!("{}: {e}", args.nats))?;
        let started = Instant::now();
        let found = read_back(nats, config, args.namespace.as_deref(), !args.no_snapshot).await?;
        let seconds = started.elapsed().as_secs_f64();
        let market = &found.market;
        let hash = market.state_hash().map(|h| h.to_string()).unwrap_or_else(|e| e.to_string());
        if args.json {
            let json = serde_json::json!({
                "seconds": seconds,
                "snapshot": found.snapshot,
                "messages": found.messages,
                "events_replayed": found.events,
                "last_seq": market.last_seq(),
                "cycles": market.cycles(),
                "live_bids": market.live_bids(),
                "state_hash": hash,
            });
            println!("{json}");
        } else {
            match found.snapshot {
                Some(seq) => println!("from the snapshot of event {seq}"),
                None => println!("from the journal's first message"),
            }
            println!(
                "replayed {} events in {} journal messages in {seconds:.3} s ({:.0} events/s)",
                found.events,
                found.messages,
                found.events as f64 / seconds.max(1e-9)
            );
            println!(
                "last event {}, {} cycles, {} live bids",
                market.last_seq(),
                market.cycles(),
                market.live_bids()
            );
            println!("state hash {hash}");
        }
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}
