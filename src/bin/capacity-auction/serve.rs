//! `capacity-auction serve --nats URL [--config FILE] [--standby]`: the market as a NATS service,
//! recovered from its journal, until SIGINT (or until another instance takes it over).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use capacity_auction::MarketConfig;
use capacity_auction::bindings::nats::{MarketService, ServiceConfig};

/// Serves a market over NATS (docs/design.md §10) until interrupted, then drains: requests in
/// flight are answered and every event is published before it exits.
#[derive(Debug, clap::Args)]
pub(crate) struct Serve {
    /// The NATS server, or several of one cluster, comma-separated.
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
    /// Replicas of the streams and buckets (3 on a three-server cluster).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Follow the leader's journal and take over when its lease lapses.
    #[arg(long)]
    standby: bool,
    /// Cycles between snapshots (0: none).
    #[arg(long, value_name = "CYCLES", default_value_t = 600)]
    snapshot_every: u64,
    /// Milliseconds the leader's lease lives without renewal.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    lease_ms: u64,
    /// Milliseconds between puts of changed balances into the `agent_state` bucket.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    balances_every_ms: u64,
    /// Do not publish every event to the `audit_log` stream (consumers read the journal).
    #[arg(long)]
    no_audit_log: bool,
    /// Threads running requests and publishing (0: one thread does it all, which on a machine
    /// shared with the NATS server saves hand-offs between threads). Clearing cycles always run
    /// on threads of their own.
    #[arg(long, value_name = "N", default_value_t = 0)]
    io_threads: usize,
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
    let market = market_config(args.config.as_ref())?;
    let service_config = ServiceConfig {
        namespace: args.namespace.clone(),
        cadence: (args.cadence_ms > 0).then(|| Duration::from_millis(args.cadence_ms)),
        replicas: args.replicas,
        audit_log: !args.no_audit_log,
        snapshot_every: (args.snapshot_every > 0).then_some(args.snapshot_every),
        standby: args.standby,
        lease: Duration::from_millis(args.lease_ms.max(100)),
        balances_every: Duration::from_millis(args.balances_every_ms),
        ..ServiceConfig::default()
    };
    let runtime = match args.io_threads {
        0 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
    };
    runtime.block_on(async move {
        let servers = args
            .nats
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>().map_err(|e| format!("{url}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let nats = async_nats::ConnectOptions::new()
            .event_callback(|event| async move { eprintln!("nats: {event}") })
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .map_err(|e| format!("{}: {e}", args.nats))?;
        let name = market.name.clone();
        let service = MarketService::start(nats, market, service_config).await?;
        let prefix = args.namespace.as_deref().map(|ns| format!("{ns}.")).unwrap_or_default();
        if args.standby {
            eprintln!("standby for market `{name}` on {}: following its journal", args.nats);
            tokio::select! {
                led = service.leading() => if !led {
                    eprintln!("stopped before taking over");
                    return Ok(ExitCode::from(3));
                },
                _ = tokio::signal::ctrl_c() => {
                    service.shutdown().await;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        eprintln!(
            "serving market `{name}` on {} ({prefix}market.*, {prefix}economic.*, {prefix}admin.market.*)",
            args.nats
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = service.deposed() => {
                eprintln!("another instance leads market `{name}` now: stopping");
                return Ok(ExitCode::from(3));
            }
        }
        eprintln!("draining: answering requests in flight and journaling every event");
        service.shutdown().await;
        eprintln!("stopped");
        Ok::<_, Box<dyn std::error::Error>>(ExitCode::SUCCESS)
    })
}
