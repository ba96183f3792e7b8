//! Criterion benches of the hot paths: intake (submit from one and two threads), whole
//! clearing cycles at 10k and 100k bids with the reference clearing as a baseline, and price
//! discovery alone.
//!
//! Workload: 4 resources, horizon 3600 slots, windows of up to 120 slots, 1-60 slot runs,
//! shares of 1-20% of one to four resources.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use capacity_auction::phases::Cycle;
use capacity_auction::reference::{self, RefBid};
use capacity_auction::{
    AgentId, Bid, BidId, Bundle, Credits, Market, MarketConfig, PriorityRule, ResourceId, Share, Slot,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const HORIZON: u64 = 3600;
const AGENTS: usize = 1000;

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Spec {
    agent: usize,
    bundle: Vec<(usize, u32)>,
    duration: u32,
    earliest: u64,
    latest_end: u64,
    limit: u64,
}

fn workload(n: usize, seed: u64) -> Vec<Spec> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|_| {
            let resources = 1 + rng.next(4) as usize;
            let first = rng.next(4) as usize;
            let bundle =
                (0..resources).map(|k| ((first + k) % 4, 10_000 * (1 + rng.next(20) as u32))).collect();
            let duration = 1 + rng.next(60) as u32;
            let window = u64::from(duration) + rng.next(121 - u64::from(duration));
            let earliest = rng.next(HORIZON - window);
            Spec {
                agent: rng.next(AGENTS as u64) as usize,
                bundle,
                duration,
                earliest,
                latest_end: earliest + window,
                limit: 1_000_000 + rng.next(99_000_000),
            }
        })
        .collect()
}

fn market(book: usize) -> (Market, Vec<AgentId>) {
    let m = Market::builder()
        .resources(["cpu", "memory", "tokens", "attention"])
        .horizon(HORIZON)
        .max_bids_per_agent(u32::MAX)
        .book_size(book)
        .build()
        .unwrap();
    let agents: Vec<AgentId> = (0..AGENTS).map(|a| AgentId::new(&format!("agent-{a}")).unwrap()).collect();
    for a in &agents {
        m.deposit(a, Credits::from_units(1 << 32)).unwrap();
    }
    (m, agents)
}

fn bids(specs: &[Spec], agents: &[AgentId], prefix: &str) -> Vec<Bid> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let bundle = Bundle::new(
                s.bundle
                    .iter()
                    .map(|&(r, x)| (ResourceId::from_index(r).unwrap(), Share::from_micros(x).unwrap())),
            )
            .unwrap();
            Bid::new(
                BidId::new(&format!("{prefix}{i}")).unwrap(),
                agents[s.agent].clone(),
                bundle,
                s.duration,
                Credits::from_micros(s.limit),
            )
            .window(Slot(s.earliest), Slot(s.latest_end))
        })
        .collect()
}

/// Submits `iters` bids from `threads` threads (one at a time, or in batches of `batch`), in
/// chunks on fresh markets; returns the wall time of the concurrent part.
fn time_submits(iters: u64, threads: usize, batch: usize) -> Duration {
    const CHUNK: u64 = 100_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    let specs = workload(CHUNK as usize, 7);
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        left -= n as u64;
        let (m, agents) = market(n + 1);
        let all = bids(&specs[..n], &agents, "b");
        let per = n.div_ceil(threads);
        let parts: Vec<&[Bid]> = all.chunks(per).collect();
        let barrier = Barrier::new(parts.len());
        let started = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| {
                    let (m, barrier) = (&m, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        if batch <= 1 {
                            for b in part.iter() {
                                black_box(m.submit(b.clone()).expect("accepted"));
                            }
                        } else {
                            for chunk in part.chunks(batch) {
                                let answers = m.submit_batch(chunk.to_vec());
                                assert!(answers.iter().all(Result::is_ok));
                                black_box(answers);
                            }
                        }
                        (t, Instant::now())
                    })
                })
                .collect();
            let spans: Vec<(Instant, Instant)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let start = spans.iter().map(|s| s.0).min().unwrap();
            let end = spans.iter().map(|s| s.1).max().unwrap();
            end - start
        });
        total += started;
    }
    total
}

fn define_intake(c: &mut Criterion) {
    let mut g = c.benchmark_group("intake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("submit/1-thread", |b| b.iter_custom(|iters| time_submits(iters, 1, 1)));
    g.bench_function("submit/2-threads", |b| b.iter_custom(|iters| time_submits(iters, 2, 1)));
    g.bench_function("submit_batch/64/1-thread", |b| b.iter_custom(|iters| time_submits(iters, 1, 64)));
    g.bench_function("submit_batch/64/2-threads", |b| b.iter_custom(|iters| time_submits(iters, 2, 64)));
    g.finish();
}

/// A market holding `n` bids of the workload, ready to clear at slot 0.
fn loaded(n: usize) -> Market {
    let (m, agents) = market(n + 1);
    for b in bids(&workload(n, 11), &agents, "b") {
        m.submit(b).unwrap();
    }
    m.flush();
    m
}

fn reference_bids(n: usize) -> Vec<RefBid> {
    workload(n, 11)
        .into_iter()
        .enumerate()
        .map(|(i, s)| RefBid {
            bundle: s.bundle,
            earliest_start: s.earliest,
            latest_end: s.latest_end,
            duration: u64::from(s.duration),
            limit: s.limit,
            reserve: 0,
            order: i as u64,
        })
        .collect()
}

fn define_clear(c: &mut Criterion) {
    let mut g = c.benchmark_group("clear");
    g.sample_size(10);
    for (name, n) in [("10k", 10_000), ("100k", 100_000)] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{name}/los"), |b| {
            b.iter_batched(
                || loaded(n),
                |m| {
                    let report = m.clear(Slot(0)).unwrap();
                    assert_eq!(report.bids, n as u64);
                    assert!(report.won > 0 && report.ir == 1.0);
                    m
                },
                BatchSize::PerIteration,
            )
        });
    }
    let n = 10_000;
    g.throughput(Throughput::Elements(n as u64));
    let bids = reference_bids(n);
    let full = |_: usize, _: u64| 1_000_000i64;
    g.bench_function("10k/reference", |b| {
        b.iter(|| {
            let starts = reference::clear(PriorityRule::Los, 0, &full, black_box(&bids));
            assert!(starts.iter().any(Option::is_some));
            starts
        })
    });
    g.finish();
}

fn define_discover(c: &mut Criterion) {
    let mut g = c.benchmark_group("discover");
    g.sample_size(10);
    for (name, n) in [("10k", 10_000), ("100k", 100_000)] {
        let agents: Vec<AgentId> =
            (0..AGENTS).map(|a| AgentId::new(&format!("agent-{a}")).unwrap()).collect();
        let config = MarketConfig {
            resources: ["cpu", "memory", "tokens", "attention"].map(String::from).into(),
            horizon: HORIZON,
            ..MarketConfig::default()
        };
        let cycle = Cycle::new(&config, bids(&workload(n, 11), &agents, "b"), Slot(0)).unwrap();
        let (placed, won) = cycle.place();
        assert!(won > 0);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let (ir, envy) = cycle.discover(black_box(&placed));
                assert_eq!(ir, 1.0);
                envy
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    define_intake(c);
    define_clear(c);
    define_discover(c);
}

criterion_group!(market_benches, benches);
criterion_main!(market_benches);
