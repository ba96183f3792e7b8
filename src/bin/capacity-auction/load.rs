//! `capacity-auction load --nats URL --agents N --rate R --duration D [--batch B]`: drives a
//! running market service and prints throughput and latency percentiles; `--baseline` measures
//! plain request-reply against a trivial responder the same way in the same run, and that
//! responder again answering once JetStream has stored each request.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use capacity_auction::BidRequest;
use capacity_auction::bindings::nats::{ClientError, MarketClient, Reply};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

/// Sends bids at a fixed rate whatever the answers (open loop: latency counts from when each
/// request was due, so a slow service cannot hide its backlog), or with `--concurrency` as fast
/// as that many requests in flight allow (closed loop), and reports bids/s and the latency
/// distribution.
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
    /// Bids per second, in total (open loop).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Keep this many requests in flight, each sent as soon as one is answered (closed loop:
    /// throughput), instead of `--rate`.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bids per request (`market.bids.<agent>` when above 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Clearing cycles each bid stays in the book while it loses.
    #[arg(long, default_value_t = 1)]
    good_for: u32,
    /// Each bid may start anywhere in this many slots from the market's slot when the load
    /// began (0: at once or not at all).
    #[arg(long, default_value_t = 0)]
    window: u64,
    /// Credits deposited into each agent before sending (0: none; needs operator rights).
    #[arg(long, default_value_t = 1_000_000)]
    fund: u64,
    /// Milliseconds a request may take before it counts as timed out.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// First measure plain NATS request-reply against a trivial responder (in this process, on
    /// the same server), the same way, and report the market's throughput as a fraction of it;
    /// then the same responder answering only once a JetStream stream has stored each request
    /// (the least any reply that promises durability costs).
    #[arg(long)]
    baseline: bool,
    /// Measure only how many messages a second one file stream of this server stores when they
    /// are published as the `audit_log` publishes its events (300 bytes each, chained on the
    /// stream sequence, one in 64 acknowledged): the most events a second the audit log can
    /// take, whatever the market does. Sends nothing to the market.
    #[arg(long)]
    store_ceiling: bool,
    /// Write every acknowledged bid to FILE as a JSON line `{"agent","bid","seq","repeat"}`.
    #[arg(long, value_name = "FILE")]
    acks: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// An acknowledged bid.
#[derive(Debug, serde::Serialize)]
struct Acked {
    agent: String,
    bid: String,
    seq: Option<u64>,
    repeat: bool,
}

/// What came back, shared by the request tasks.
#[derive(Debug)]
struct Tally {
    /// Microseconds from when a request was due (open loop) or sent (closed loop) to its answer.
    latency: Histogram<u64>,
    requests: u64,
    accepted: u64,
    refused: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    first_send: Option<Instant>,
    last_answer: Option<Instant>,
    acks: Vec<Acked>,
}

/// Where requests go: the market, or the trivial responder of the baseline.
#[derive(Clone, Debug)]
enum Target {
    Market(MarketClient),
    Baseline { client: Client, timeout: Duration },
}

/// The subject prefix the baseline's responder answers.
const BASELINE: &str = "_capacity_auction_baseline";

pub(crate) fn run(args: Load) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.rate == 0 || args.batch == 0 || args.agents == 0 || args.duration <= 0.0 {
        return Err("--rate, --batch, --agents and --duration are above zero".into());
    }
    if args.concurrency == Some(0) {
        return Err("--concurrency is above zero".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(drive(args))
}

async fn connect(url: &str) -> Result<Client, Box<dyn std::error::Error>> {
    Ok(async_nats::ConnectOptions::new()
        .event_callback(|event| async move { eprintln!("nats: {event}") })
        .connect(url)
        .await
        .map_err(|e| format!("{url}: {e}"))?)
}

async fn drive(args: Load) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let nats = connect(&args.nats).await?;
    if args.store_ceiling {
        let (messages, seconds) = store_ceiling(nats).await?;
        let per_s = messages as f64 / seconds;
        match args.json {
            true => {
                println!("{}", serde_json::json!({"messages": messages, "bytes": 300, "stored_per_s": per_s}))
            }
            false => {
                println!("{messages} messages of 300 bytes stored in {seconds:.2} s: {per_s:.0} a second")
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let client = MarketClient::new(nats.clone(), args.namespace.as_deref())?.timeout(timeout);
    let agents: Vec<String> = (0..args.agents).map(|a| format!("load-{a}")).collect();
    let baseline = if args.baseline {
        let responder = tokio::spawn(respond(connect(&args.nats).await?, args.batch));
        let tally = send_all(&args, &Target::Baseline { client: nats.clone(), timeout }, &agents).await?;
        responder.abort();
        let storing = connect(&args.nats).await?;
        let stream = format!("{BASELINE}_stored");
        let js = async_nats::jetstream::new(storing.clone());
        let _ = js.delete_stream(&stream).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{BASELINE}_stored.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating the baseline's stream: {e}"))?;
        let responder = tokio::spawn(respond_stored(storing, args.batch));
        let stored = send_all(&args, &Target::Baseline { client: nats.clone(), timeout }, &agents).await?;
        responder.abort();
        let _ = js.delete_stream(&stream).await;
        Some((tally, stored))
    } else {
        None
    };
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
    let tally = send_all(&args, &Target::Market(client), &agents).await?;
    if let Some(path) = &args.acks {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for ack in &tally.acks {
            serde_json::to_writer(&mut out, ack)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    report(&args, &tally, baseline.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// What the market answers a request of `batch` accepted bids.
fn accepted(batch: usize) -> Bytes {
    let one = Reply::ok(1);
    let json = if batch == 1 { serde_json::to_vec(&one) } else { serde_json::to_vec(&vec![one; batch]) };
    Bytes::from(json.expect("replies serialize"))
}

/// The trivial responder of the baseline: answers every request at once with what the market
/// answers an accepted bid (or a batch of them), reading nothing.
async fn respond(nats: Client, batch: usize) {
    let Ok(mut requests) = nats.subscribe(format!("{BASELINE}.>")).await else { return };
    let answer = accepted(batch);
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            let _ = nats.publish(reply, answer.clone()).await;
        }
    }
}

/// Runs the load against `target`: open loop at `--rate`, or closed loop with `--concurrency`.
async fn send_all(
    args: &Load,
    target: &Target,
    agents: &[String],
) -> Result<Tally, Box<dyn std::error::Error>> {
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 1_000_000_000;
    let tally = Arc::new(Mutex::new(Tally {
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        requests: 0,
        accepted: 0,
        refused: BTreeMap::new(),
        failed: BTreeMap::new(),
        first_send: None,
        last_answer: None,
        acks: Vec::new(),
    }));
    let from = match (target, args.window) {
        (Target::Market(client), w) if w > 0 => {
            client.status().await.map_err(|e| format!("status: {e}"))?.slot
        }
        _ => 0,
    };
    let shape = Shape { batch: args.batch, good_for: args.good_for, window: args.window, from };
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    match args.concurrency {
        Some(workers) => {
            let next = Arc::new(AtomicU64::new(0));
            let until = started + Duration::from_secs_f64(args.duration);
            for _ in 0..workers {
                let (target, tally, next, agents) =
                    (target.clone(), tally.clone(), next.clone(), agents.to_vec());
                tasks.spawn(async move {
                    while Instant::now() < until {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let agent = agents[k as usize % agents.len()].clone();
                        let bids = (0..shape.batch).map(|j| bid(run, k, j, shape)).collect();
                        request(&target, agent, bids, Instant::now(), &tally).await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
        None => {
            let requests_per_s = args.rate as f64 / args.batch as f64;
            let total = (requests_per_s * args.duration).ceil() as u64;
            let progress = if args.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
            progress
                .set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {elapsed} {msg}")?);
            // Paced by an OS thread that sleeps until each request is due (the runtime's timer
            // has a granularity of a millisecond, which would count as latency here).
            let (spawned, mut running) = tokio::sync::mpsc::unbounded_channel();
            let pacer = {
                let (handle, target, tally, agents) =
                    (tokio::runtime::Handle::current(), target.clone(), tally.clone(), agents.to_vec());
                let batch = args.batch;
                std::thread::spawn(move || {
                    for sent in 0..total {
                        let due = started + Duration::from_secs_f64(sent as f64 / requests_per_s);
                        let agent = agents[sent as usize % agents.len()].clone();
                        let bids: Vec<BidRequest> = (0..batch).map(|j| bid(run, sent, j, shape)).collect();
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let (target, tally) = (target.clone(), tally.clone());
                        let task =
                            handle.spawn(async move { request(&target, agent, bids, due, &tally).await });
                        if spawned.send(task).is_err() {
                            return;
                        }
                    }
                })
            };
            let mut done = 0u64;
            while let Some(task) = running.recv().await {
                let _ = task.await;
                done += 1;
                if done.is_multiple_of(1024) {
                    progress.set_position(done);
                }
            }
            let _ = pacer.join();
            progress.finish_with_message("all answered");
        }
    }
    let tally = Arc::try_unwrap(tally).map_err(|_| "request tasks outlived the run")?;
    Ok(tally.into_inner().map_err(|_| "a request task panicked")?)
}

/// What each bid looks like.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    good_for: u32,
    window: u64,
    /// The market's slot when the load began.
    from: u64,
}

/// Bid `j` of request `k`: a small bundle of cpu and memory.
fn bid(run: u128, k: u64, j: usize, shape: Shape) -> BidRequest {
    let x = k.wrapping_mul(6364136223846793005).wrapping_add(j as u64 * 1442695040888963407);
    let (cpu, memory, duration, limit) =
        (1 + x % 5, 1 + (x >> 8) % 5, 1 + (x >> 16) % 60, 1 + (x >> 24) % 50);
    let mut json = format!(
        r#"{{"id":"l{run}-{k}-{j}","bundle":{{"cpu":"0.0{cpu}","memory":"0.0{memory}"}},"duration":{duration},"limit":"{limit}""#
    );
    if shape.good_for > 1 {
        json.push_str(&format!(r#","good_for":{}"#, shape.good_for));
    }
    if shape.window > 0 {
        let (from, to) = (shape.from, shape.from + shape.window + duration);
        json.push_str(&format!(r#","earliest_start":{from},"latest_end":{to}"#));
    }
    json.push('}');
    BidRequest::from_json(json.as_bytes()).expect("the load's bids are well formed")
}

/// The answer to one bid: its `(seq, repeat)`, or its refusal's code.
type Answer = Result<(Option<u64>, bool), String>;

async fn request(target: &Target, agent: String, bids: Vec<BidRequest>, due: Instant, tally: &Mutex<Tally>) {
    let sent = Instant::now();
    let answers: Result<Vec<Answer>, ClientError> = match target {
        Target::Market(client) if bids.len() == 1 => match client.bid(&agent, &bids[0]).await {
            Ok(ack) => Ok(vec![Ok((ack.seq, ack.repeat))]),
            Err(ClientError::Refused(r)) => Ok(vec![Err(r.code.to_string())]),
            Err(e) => Err(e),
        },
        Target::Market(client) => client.bids(&agent, &bids).await.map(|all| {
            all.into_iter()
                .map(|a| a.map(|ack| (ack.seq, ack.repeat)).map_err(|r| r.code.to_string()))
                .collect()
        }),
        Target::Baseline { client, timeout } => baseline(client, *timeout, &agent, &bids).await,
    };
    let now = Instant::now();
    let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    tally.requests += 1;
    tally.first_send = Some(tally.first_send.map_or(sent, |f| f.min(sent)));
    tally.last_answer = Some(tally.last_answer.map_or(now, |l| l.max(now)));
    match answers {
        Ok(answers) => {
            let _ = tally.latency.record((now.duration_since(due).as_micros() as u64).max(1));
            for (answer, bid) in answers.into_iter().zip(&bids) {
                match answer {
                    Ok((seq, repeat)) => {
                        tally.accepted += 1;
                        if matches!(target, Target::Market(_)) {
                            tally.acks.push(Acked { agent: agent.clone(), bid: bid.id.clone(), seq, repeat });
                        }
                    }
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

/// The stored baseline's responder: publishes every request to a JetStream stream and answers
/// once the stream has acknowledged it, the least a service that replies only for what is stored
/// must do (publishes pipelined, each request answered once its acknowledgement comes back).
async fn respond_stored(nats: Client, batch: usize) {
    let Ok(mut requests) = nats.subscribe(format!("{BASELINE}.>")).await else { return };
    let js = async_nats::jetstream::new(nats.clone());
    let answer = accepted(batch);
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let Ok(ack) = js.publish(format!("{BASELINE}_stored.x"), request.payload).await else { continue };
        let (nats, answer) = (nats.clone(), answer.clone());
        tokio::spawn(async move {
            if ack.await.is_ok() {
                let _ = nats.publish(reply, answer).await;
            }
        });
    }
}

/// Publishes 200,000 messages of 300 bytes to a scratch file stream as the `audit_log` does:
/// each stating the stream sequence it follows, one in 64 asking for an acknowledgement, at
/// most 16 acknowledgements awaited at once. How many, and in how many seconds.
async fn store_ceiling(nats: Client) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    const MESSAGES: u64 = 200_000;
    let stream = format!("{BASELINE}_ceiling");
    let js = async_nats::jetstream::new(nats.clone());
    let _ = js.delete_stream(&stream).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{stream}.>")],
        duplicate_window: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the scratch stream: {e}"))?;
    let (subject, payload) = (format!("{stream}.x"), Bytes::from(vec![b'x'; 300]));
    let started = Instant::now();
    let mut acks = Vec::new();
    for seq in 1..=MESSAGES {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("c:{seq}").as_str());
        headers.insert(async_nats::header::NATS_EXPECTED_LAST_SEQUENCE, (seq - 1).to_string().as_str());
        if seq % 64 == 0 || seq == MESSAGES {
            acks.push(js.publish_with_headers(subject.clone(), headers, payload.clone()).await?);
            if acks.len() == 16 || seq == MESSAGES {
                for ack in acks.drain(..) {
                    ack.await?;
                }
            }
        } else {
            nats.publish_with_headers(subject.clone(), headers, payload.clone()).await?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&stream).await;
    Ok((MESSAGES, seconds))
}

/// One request to the trivial responder, encoded and decoded as the market's would be.
async fn baseline(
    client: &Client,
    timeout: Duration,
    agent: &str,
    bids: &[BidRequest],
) -> Result<Vec<Answer>, ClientError> {
    let payload = if bids.len() == 1 { serde_json::to_vec(&bids[0]) } else { serde_json::to_vec(bids) };
    let payload = Bytes::from(payload.map_err(|e| ClientError::BadAnswer(e.to_string()))?);
    let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
    let answer = client
        .send_request(format!("{BASELINE}.{agent}"), request)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let decode = |r: Reply| r.into_result().map(|a| (a.seq, a.repeat)).map_err(|r| r.code.to_string());
    if bids.len() == 1 {
        let reply: Reply =
            serde_json::from_slice(&answer.payload).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        Ok(vec![decode(reply)])
    } else {
        let replies: Vec<Reply> =
            serde_json::from_slice(&answer.payload).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        Ok(replies.into_iter().map(decode).collect())
    }
}

/// Accepted bids per second over the run.
fn throughput(tally: &Tally) -> f64 {
    match (tally.first_send, tally.last_answer) {
        (Some(first), Some(last)) => {
            tally.accepted as f64 / last.duration_since(first).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    }
}

fn summary(args: &Load, tally: &Tally) -> serde_json::Value {
    let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "requests": tally.requests,
        "batch": args.batch,
        "rate": args.concurrency.map_or(serde_json::Value::from(args.rate), |_| serde_json::Value::Null),
        "concurrency": args.concurrency,
        "bids_sent": tally.requests * args.batch as u64,
        "bids_accepted": tally.accepted,
        "bids_refused": tally.refused,
        "bids_failed": tally.failed,
        "accepted_per_s": throughput(tally),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": tally.latency.max() as f64 / 1000.0,
    })
}

fn report(args: &Load, tally: &Tally, baselines: Option<&(Tally, Tally)>) {
    if args.json {
        let mut json = summary(args, tally);
        if let Some((base, stored)) = baselines {
            json["baseline"] = summary(args, base);
            json["fraction_of_baseline"] = (throughput(tally) / throughput(base).max(1e-9)).into();
            json["stored_baseline"] = summary(args, stored);
            json["fraction_of_stored_baseline"] = (throughput(tally) / throughput(stored).max(1e-9)).into();
        }
        println!("{json}");
        return;
    }
    if let Some((base, stored)) = baselines {
        println!("baseline (plain request-reply to a trivial responder)");
        table(args, base);
        println!("stored baseline (the responder answers once JetStream has stored the request)");
        table(args, stored);
        println!("market");
    }
    table(args, tally);
    if let Some((base, stored)) = baselines {
        println!("market / baseline  {:.3}", throughput(tally) / throughput(base).max(1e-9));
        println!("market / stored baseline  {:.3}", throughput(tally) / throughput(stored).max(1e-9));
    }
}

fn table(args: &Load, tally: &Tally) {
    let ms = |q: f64| tally.latency.value_at_quantile(q) as f64 / 1000.0;
    match args.concurrency {
        Some(n) => println!("requests        {} of {} bids each, {n} in flight", tally.requests, args.batch),
        None => {
            println!(
                "requests        {} of {} bids each, at {} bids/s offered",
                tally.requests, args.batch, args.rate
            )
        }
    }
    println!("accepted        {} bids ({:.0} bids/s)", tally.accepted, throughput(tally));
    for (code, n) in &tally.refused {
        println!("refused         {n} {code}");
    }
    for (kind, n) in &tally.failed {
        println!("failed          {n} ({kind})");
    }
    println!("latency (ms, {} answers)", tally.latency.len());
    println!(
        "  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        tally.latency.max() as f64 / 1000.0
    );
}
