//! `capacity-auction load --nats URL --agents N --rate R --duration D [--batch B]`: drives a
//! running market service open-loop and prints throughput and latency percentiles.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capacity_auction::BidRequest;
use capacity_auction::bindings::nats::{ClientError, MarketClient};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

/// Sends bids at a fixed rate whatever the answers (open loop: latency counts from when each
/// request was due, so a slow service cannot hide its backlog) and reports bids/s and the
/// latency distribution.
#[derive(Debug, clap::Args)]
pub(crate) struct Load {
    /// The NATS server.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The market's namespace, if it has one.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Agents bidding, round robin (`load-0`, `load-1`, …); each is funded first.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Bids per second, in total.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bids per request (`market.bids.<agent>` when above 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Credits deposited into each agent before sending (0: none; needs operator rights).
    #[arg(long, default_value_t = 1_000_000)]
    fund: u64,
    /// Milliseconds a request may take before it counts as timed out.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// What came back, shared by the request tasks.
#[derive(Debug)]
struct Tally {
    /// Microseconds from when a request was due to its answer.
    latency: Histogram<u64>,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    last_answer: Instant,
}

pub(crate) fn run(args: Load) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.rate == 0 || args.batch == 0 || args.agents == 0 || args.duration <= 0.0 {
        return Err("--rate, --batch, --agents and --duration are above zero".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(args))
}

async fn drive(args: Load) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let nats = async_nats::ConnectOptions::new()
        .event_callback(|event| async move { eprintln!("nats: {event}") })
        .connect(&args.nats)
        .await
        .map_err(|e| format!("{}: {e}", args.nats))?;
    let client =
        MarketClient::new(nats, args.namespace.as_deref())?.timeout(Duration::from_millis(args.timeout_ms));
    let agents: Vec<String> = (0..args.agents).map(|a| format!("load-{a}")).collect();
    if args.fund > 0 {
        let mut funding = JoinSet::new();
        for agent in &agents {
            let (client, agent) = (client.clone(), agent.clone());
            let amount = capacity_auction::Credits::from_units(args.fund);
            funding.spawn(async move { client.deposit(&agent, amount).await });
        }
        while let Some(done) = funding.join_next().await {
            done?.map_err(|e| format!("funding the agents: {e}"))?;
        }
    }
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    let requests_per_s = args.rate as f64 / args.batch as f64;
    let total = (requests_per_s * args.duration).ceil() as u64;
    let tally = Arc::new(Mutex::new(Tally {
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        accepted: 0,
        refused: BTreeMap::new(),
        failed: BTreeMap::new(),
        last_answer: Instant::now(),
    }));
    let progress = if args.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
    progress.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {elapsed} {msg}")?);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due_now = ((started.elapsed().as_secs_f64() * requests_per_s) as u64 + 1).min(total);
        while sent < due_now {
            let due = started + Duration::from_secs_f64(sent as f64 / requests_per_s);
            let agent = agents[sent as usize % agents.len()].clone();
            let bids: Vec<BidRequest> = (0..args.batch).map(|j| bid(run, sent, j)).collect();
            tasks.spawn(request(client.clone(), agent, bids, due, tally.clone()));
            sent += 1;
        }
        progress.set_position(sent);
        while tasks.try_join_next().is_some() {}
        progress.set_message(format!("{} in flight", tasks.len()));
    }
    progress.finish_with_message("waiting for the last answers");
    while tasks.join_next().await.is_some() {}
    let tally = tally.lock().map_err(|_| "a request task panicked")?;
    report(&args, &tally, sent, tally.last_answer.duration_since(started));
    Ok(ExitCode::SUCCESS)
}

/// Bid `j` of request `k`: a small bundle to run at once.
fn bid(run: u128, k: u64, j: usize) -> BidRequest {
    let x = k.wrapping_mul(6364136223846793005).wrapping_add(j as u64 * 1442695040888963407);
    let (cpu, memory, duration, limit) =
        (1 + x % 5, 1 + (x >> 8) % 5, 1 + (x >> 16) % 60, 1 + (x >> 24) % 50);
    let json = format!(
        r#"{{"id":"l{run}-{k}-{j}","bundle":{{"cpu":"0.0{cpu}","memory":"0.0{memory}"}},"duration":{duration},"limit":"{limit}"}}"#
    );
    BidRequest::from_json(json.as_bytes()).expect("the load's bids are well formed")
}

async fn request(
    client: MarketClient,
    agent: String,
    bids: Vec<BidRequest>,
    due: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    let answers: Result<Vec<Result<(), String>>, ClientError> = if bids.len() == 1 {
        match client.bid(&agent, &bids[0]).await {
            Ok(_) => Ok(vec![Ok(())]),
            Err(ClientError::Refused(r)) => Ok(vec![Err(r.code.to_string())]),
            Err(e) => Err(e),
        }
    } else {
        client
            .bids(&agent, &bids)
            .await
            .map(|all| all.into_iter().map(|a| a.map(|_| ()).map_err(|r| r.code.to_string())).collect())
    };
    let now = Instant::now();
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    tally.last_answer = tally.last_answer.max(now);
    match answers {
        Ok(answers) => {
            let _ = tally.latency.record((now.duration_since(due).as_micros() as u64).max(1));
            for answer in answers {
                match answer {
                    Ok(()) => tally.accepted += 1,
                    Err(code) => *tally.refused.entry(code).or_default() += 1,
                }
            }
        }
        Err(e) => {
            let kind = match e {
                ClientError::Timeout(_) => "timeout".to_owned(),
                ClientError::NoResponders(_) => "no_responders".to_owned(),
                other => other.to_string(),
            };
            *tally.failed.entry(kind).or_default() += bids.len() as u64;
        }
    }
}

fn report(args: &Load, tally: &Tally, requests: u64, wall: Duration) {
    let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1000.0;
    let bids_per_s = tally.accepted as f64 / wall.as_secs_f64().max(1e-9);
    if args.json {
        let json = serde_json::json!({
            "requests": requests,
            "batch": args.batch,
            "rate": args.rate,
            "bids_sent": requests * args.batch as u64,
            "bids_accepted": tally.accepted,
            "bids_refused": tally.refused,
            "bids_failed": tally.failed,
            "accepted_per_s": bids_per_s,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": tally.latency.max() as f64 / 1000.0,
        });
        println!("{json}");
        return;
    }
    println!("requests        {requests} of {} bids each, at {} bids/s offered", args.batch, args.rate);
    println!(
        "accepted        {} bids ({bids_per_s:.0} bids/s over {:.2} s)",
        tally.accepted,
        wall.as_secs_f64()
    );
    for (code, n) in &tally.refused {
        println!("refused         {n} {code}");
    }
    for (kind, n) in &tally.failed {
        println!("failed          {n} ({kind})");
    }
    println!("latency (ms, from when each request was due, {} answers)", tally.latency.len());
    println!(
        "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        tally.latency.max() as f64 / 1000.0
    );
}
