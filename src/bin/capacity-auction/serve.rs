//! `capacity-auction serve --nats URL [--config FILE]`: the market as a NATS service until
//! SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use capacity_auction::bindings::nats::{MarketService, ServiceConfig};
use capacity_auction::{Market, MarketConfig};

/// Serves a market over NATS (docs/design.md §10) until interrupted, then drains: requests in
/// flight are answered and every event is published before it exits.
#[derive(Debug, clap::Args)]
pub(crate) struct Serve {
    /// The NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The market's configuration (docs/design.md §3), JSON or TOML; defaults otherwise.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve under this namespace: subjects `NS.…`, stream and buckets `NS_…`.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Milliseconds between clearings; 0 clears only on `admin.market.clear`.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    cadence_ms: u64,
    /// Replicas of the stream and buckets (3 on a three-server cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
}

/// Reads a market configuration, JSON or (by extension) TOML.
pub(crate) fn market_config(path: Option<&PathBuf>) -> Result<MarketConfig, Box<dyn std::error::Error>> {
    let Some(path) = path else { return Ok(MarketConfig::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    Ok(config)
}

pub(crate) fn run(args: Serve) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = market_config(args.config.as_ref())?;
    let market = Arc::new(Market::builder().config(config).build()?);
    let service_config = ServiceConfig {
        namespace: args.namespace.clone(),
        cadence: (args.cadence_ms > 0).then(|| Duration::from_millis(args.cadence_ms)),
        replicas: args.replicas,
        ..ServiceConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let nats = async_nats::ConnectOptions::new()
            .event_callback(|event| async move { eprintln!("nats: {event}") })
            .connect(&args.nats)
            .await
            .map_err(|e| format!("{}: {e}", args.nats))?;
        let name = market.config().name.clone();
        let service = MarketService::start(nats, market, service_config).await?;
        let prefix = args.namespace.as_deref().map(|ns| format!("{ns}.")).unwrap_or_default();
        eprintln!(
            "serving market `{name}` on {} ({prefix}market.*, {prefix}economic.*, {prefix}admin.market.*)",
            args.nats
        );
        tokio::signal::ctrl_c().await?;
        eprintln!("draining: answering requests in flight and publishing every event");
        service.shutdown().await;
        eprintln!("stopped");
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}
