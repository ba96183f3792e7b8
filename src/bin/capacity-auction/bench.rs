//! `capacity-auction bench`: a quick probe of intake and clearing speed on this machine.

use std::process::ExitCode;
use std::time::Instant;

use capacity_auction::phases::{Cycle, Workload};
use capacity_auction::{Bid, Market, PricingRule, Slot, Snapshot};
use clap::{Args, ValueEnum};

/// Flags of `bench`.
#[derive(Debug, Args)]
pub(crate) struct Bench {
    /// Bids in the book (the benchmark workload: 4 resources, windows up to 120 slots); several,
    /// comma-separated, measure each in turn, smallest first (a JSON object a line with
    /// `--json`; memory per bid is then a lower bound after the first, as freed memory is
    /// reused).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    bids: Vec<usize>,
    /// Which book: `worst` keeps the horizon at 3600 slots (about 55x more asked than offered at
    /// 100k bids), `realistic` stretches it so about 3x more is asked than offered.
    #[arg(long, value_enum, default_value_t = Book::Worst)]
    book: Book,
    /// The pricing rule of the cycle: `critical_value`, `pay_as_bid` or `uniform` (only
    /// `critical_value` computes critical values).
    #[arg(long, default_value = "critical_value", value_parser = pricing_rule)]
    pricing: PricingRule,
    /// Threads submitting.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Threads of the critical-value pass (the market's `clearing_threads`).
    #[arg(long, default_value_t = 1)]
    clearing_threads: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw how the cycle's cost per bid scales with the book, phase by phase, as a PNG
    /// (give two sizes or more, e.g. `--bids 10000,100000,1000000`).
    #[arg(long, value_name = "PNG")]
    chart: Option<std::path::PathBuf>,
}

/// A cycle's cost per bid, whole and by phase (ns), for the scaling chart.
#[derive(Debug)]
pub(crate) struct Scaling {
    pub(crate) bids: usize,
    /// `(phase, ns per bid)`: the whole cycle first.
    pub(crate) phases: Vec<(&'static str, f64)>,
}

/// The benchmark books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Book {
    /// Horizon 3600 slots whatever the size.
    Worst,
    /// About 3x more asked than offered.
    Realistic,
}

fn pricing_rule(word: &str) -> Result<PricingRule, String> {
    crate::simulate::parse("pricing rule (critical_value, pay_as_bid, uniform)", word)
}

/// Resident memory of this process in bytes, where the platform tells.
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn ns_per(seconds: f64, n: usize) -> f64 {
    seconds * 1e9 / n.max(1) as f64
}

pub(crate) fn run(args: Bench) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut sizes = args.bids.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if args.chart.is_some() && sizes.len() < 2 {
        return Err("a scaling chart needs two book sizes or more (--bids 10000,100000)".into());
    }
    let mut scaling = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        if k > 0 && !args.json {
            println!();
        }
        scaling.push(one(&args, n)?);
    }
    if let Some(path) = &args.chart {
        crate::charts::scaling(&scaling, &describe(&args), path)?;
        if !args.json {
            println!("\nwrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Bench {
    /// The book and the rule as their flags name them.
    fn names(&self) -> (String, String) {
        let book = self.book.to_possible_value().expect("every book has a name").get_name().to_owned();
        let pricing = serde_json::to_value(self.pricing).ok().and_then(|v| v.as_str().map(String::from));
        (book, pricing.unwrap_or_default())
    }
}

/// The book and rule measured, for the chart's title.
fn describe(args: &Bench) -> String {
    let (book, pricing) = args.names();
    format!("{book} book, {pricing} pricing, {} clearing thread(s)", args.clearing_threads.max(1))
}

/// Measures a book of `n` bids and prints its figures.
fn one(args: &Bench, n: usize) -> Result<Scaling, Box<dyn std::error::Error>> {
    let (n, threads) = (n.max(1), args.threads.max(1));
    let mut workload = match args.book {
        Book::Worst => Workload::new(n + 1),
        Book::Realistic => Workload::realistic(n + 1),
    };
    let clearing_threads = args.clearing_threads.max(1);
    workload.config.clearing_threads = clearing_threads;
    workload.config.pricing = args.pricing;
    let market = workload.market();
    let mut events = market.subscribe();
    let bids = workload.bids(n, 11, "b");
    let oversubscription = workload.oversubscription(&bids);
    let mut phase_bids = bids.clone();

    // Intake: every thread submits its share, one bid at a time.
    let before = resident();
    let per = n.div_ceil(threads);
    let mut parts: Vec<Vec<Bid>> = Vec::new();
    let mut rest = bids;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        parts.push(std::mem::replace(&mut rest, tail));
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        for part in parts {
            let market = &market;
            s.spawn(move || {
                for bid in part {
                    market.submit(bid).expect("the workload's bids are valid");
                }
            });
        }
    });
    let submit = started.elapsed().as_secs_f64();
    market.flush();
    let bytes = match (before, resident()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };

    // The state as data, with every bid pending: snapshot, its JSON, and a restore.
    let started = Instant::now();
    let snapshot = market.snapshot()?;
    let snapshot_taken = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let json = snapshot.to_json();
    let snapshot_json = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let restored = Market::restore(Snapshot::from_json(&json)?)?;
    let restore = started.elapsed().as_secs_f64();
    drop(restored);

    // The whole cycle, then its phases one by one on the same book.
    let started = Instant::now();
    let report = market.clear(Slot(0))?;
    let clear = started.elapsed().as_secs_f64();
    // Every event of the run, replayed on a market restored from an empty one's snapshot.
    let all = events.drain();
    let follower = Market::builder().config(workload.config.clone()).build()?;
    let started = Instant::now();
    follower.replay(&all)?;
    let replay = started.elapsed().as_secs_f64();
    assert_eq!(follower.state_hash()?, market.state_hash()?, "the replay is the market");
    phase_bids.truncate(n);
    let cycle = Cycle::new(&workload.config, phase_bids, Slot(0))?;
    // Each phase's fastest of three runs: the work is deterministic, the machine is not.
    let fastest = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let place = fastest(&|| drop(std::hint::black_box(cycle.place())));
    let (placed, _) = cycle.place();
    let critical = if cycle.needs_thresholds() {
        fastest(&|| {
            std::hint::black_box(cycle.thresholds(&placed));
        })
    } else {
        0.0
    };
    let discover = fastest(&|| {
        std::hint::black_box(cycle.discover(&placed));
    });
    let settle = (0..3)
        .map(|_| {
            let mut escrowed = cycle.escrowed(&placed);
            let started = Instant::now();
            std::hint::black_box(escrowed.settle());
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    // What the phases leave of the whole cycle: payments, events, the book's upkeep.
    let rest = (clear - place - critical - discover - settle).max(0.0);

    let (book, pricing) = args.names();
    let horizon = workload.config.horizon;
    let mut phases = vec![
        ("whole cycle", ns_per(clear, n)),
        ("rank and place", ns_per(place, n)),
        ("price discovery", ns_per(discover, n)),
        ("settlement", ns_per(settle, n)),
        ("payments, events", ns_per(rest, n)),
    ];
    if cycle.needs_thresholds() {
        phases.insert(2, ("critical values", ns_per(critical, n)));
    }
    let scaling = Scaling { bids: n, phases };
    if args.json {
        let bytes = bytes.map_or("null".to_owned(), |b| format!("{b:.1}"));
        println!(
            "{{\"bids\":{n},\"book\":\"{book}\",\"pricing\":\"{pricing}\",\"horizon\":{horizon},\"oversubscription\":{oversubscription:.1},\
             \"threads\":{threads},\"clearing_threads\":{clearing_threads},\"submit_ns_per_bid\":{:.1},\"submit_bids_per_s\":{:.0},\
             \"clear_ns_per_bid\":{:.1},\"place_ns_per_bid\":{:.1},\"critical_ns_per_bid\":{:.1},\
             \"discover_ns_per_bid\":{:.1},\"settle_ns_per_bid\":{:.1},\"events_ns_per_bid\":{:.1},\
             \"bytes_per_pending_bid\":{bytes},\
             \"snapshot_ms\":{:.1},\"snapshot_json_ms\":{:.1},\"snapshot_bytes\":{},\"restore_ms\":{:.1},\
             \"replay_ns_per_event\":{:.1},\"events\":{},\
             \"won\":{},\"lost\":{},\"events_hash\":\"{}\"}}",
            ns_per(submit, n),
            n as f64 / submit,
            ns_per(clear, n),
            ns_per(place, n),
            ns_per(critical, n),
            ns_per(discover, n),
            ns_per(settle, n),
            ns_per(rest, n),
            snapshot_taken * 1e3,
            snapshot_json * 1e3,
            json.len(),
            restore * 1e3,
            ns_per(replay, all.len()),
            all.len(),
            report.won,
            report.lost,
            events_hash(&all)
        );
        return Ok(scaling);
    }
    println!(
        "{n} bids, {book} book (horizon {horizon}, {oversubscription:.1}x more asked than offered), {pricing} \
         pricing, {threads} submitting thread(s), {clearing_threads} clearing; the cycle: {} won, {} lost; \
         events hash {}",
        report.won,
        report.lost,
        events_hash(&all)
    );
    println!("{:<34} {:>12} {:>12}", "", "ns/bid", "total ms");
    let row = |name: &str, seconds: f64| {
        println!("{name:<34} {:>12.1} {:>12.2}", ns_per(seconds, n), seconds * 1e3)
    };
    row("submit (validation, escrow, intake)", submit);
    row("clear: whole cycle", clear);
    row("  rank and place", place);
    if cycle.needs_thresholds() {
        row("  critical values and shortfalls", critical);
    } else {
        println!("{:<34} {:>12}", "  critical values and shortfalls", "not needed");
    }
    row("  price discovery", discover);
    row("  settlement", settle);
    row("  payments, events (the rest)", rest);
    println!("{:<34} {:>12.0}", "submitted bids/s", n as f64 / submit);
    match bytes {
        Some(b) => println!("{:<34} {:>12.1}", "bytes per pending bid (resident)", b),
        None => println!("{:<34} {:>12}", "bytes per pending bid (resident)", "unknown"),
    }
    println!(
        "snapshot of {n} pending bids: {:.1} ms to take, {:.1} ms to JSON ({} bytes), {:.1} ms to restore",
        snapshot_taken * 1e3,
        snapshot_json * 1e3,
        json.len(),
        restore * 1e3
    );
    println!("replay of the run's {} events: {:.1} ns/event", all.len(), ns_per(replay, all.len()));
    Ok(scaling)
}

/// A BLAKE3 digest of the events' JSON lines: the same bids in the same order clear to the same
/// events (payments, prices) whatever the threads.
fn events_hash(events: &[capacity_auction::Event]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for event in events {
        hasher.update(event.to_json().as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize()
}
