//! Criterion benches of the hot paths: intake (submit from one and two threads, singly and in
//! batches), whole clearing cycles at 10k and 100k bids, placement alone against the reference
//! clearing on the same book (the ratio is printed at the end of every run that has both),
//! price discovery alone, settlement, and the state as data (snapshot, restore, replay); and
//! cycles at scale (`scale/`): 100k bids on both books under `critical_value` and `pay_as_bid`,
//! long horizons, a standing book of wide windows, and 1M bids when `BENCH_1M=1` is set
//! (minutes a sample).
//!
//! Workload: `phases::Workload` — 4 resources, windows of up to 120 slots, 1-60 slot runs,
//! shares of 1-20% of one to four resources, 1,000 agents; the worst book keeps a horizon of
//! 3600 slots (about 55x more asked than offered at 100k), the realistic one about 3x.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime};

use capacity_auction::phases::{Cycle, Workload};
use capacity_auction::reference::{self, RefBid};
use capacity_auction::{
    AgentId, Bid, BidId, Bundle, Credits, MAX_HORIZON, Market, MarketConfig, PricingRule, PriorityRule,
    ResourceId, Share, Slot, Snapshot,
};
use criterion::{BatchSize, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;

/// Where a bench's bids go: a market's `submit`, or the floor it is held against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Market,
    /// A bare push of the same bid into a bounded lock-free queue (crossbeam's `ArrayQueue`):
    /// what handing a record to another thread costs at the least.
    Queue,
}

/// Submits `iters` bids from `threads` threads (one at a time, or in batches of `batch`), in
/// chunks on fresh markets; returns the wall time of the concurrent part.
fn time_submits(iters: u64, threads: usize, batch: usize) -> Duration {
    time_into(Sink::Market, iters, threads, batch)
}

/// As [`time_submits`], into `sink`.
fn time_into(sink: Sink, iters: u64, threads: usize, batch: usize) -> Duration {
    const CHUNK: u64 = 100_000;
    let mut total = Duration::ZERO;
    let mut left = iters;
    let workload = Workload::new(CHUNK as usize + 1);
    let template = workload.bids(CHUNK as usize, 7, "b");
    while left > 0 {
        let n = left.min(CHUNK) as usize;
        left -= n as u64;
        let m = workload.market();
        let queue = ArrayQueue::new(CHUNK as usize);
        let all = template[..n].to_vec();
        let per = n.div_ceil(threads);
        let parts: Vec<&[Bid]> = all.chunks(per).collect();
        let barrier = Barrier::new(parts.len());
        let started = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| {
                    let (m, barrier, queue) = (&m, &barrier, &queue);
                    s.spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        if sink == Sink::Queue {
                            for b in part.iter() {
                                assert!(queue.push(black_box(b.clone())).is_ok());
                            }
                        } else if batch <= 1 {
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
    g.bench_function("floor/array_queue_push/1-thread", |b| {
        b.iter_custom(|iters| time_into(Sink::Queue, iters, 1, 1))
    });
    g.bench_function("floor/array_queue_push/2-threads", |b| {
        b.iter_custom(|iters| time_into(Sink::Queue, iters, 2, 1))
    });
    g.finish();
}

/// A market holding `n` bids of the workload, ready to clear at slot 0.
fn loaded(workload: &Workload, bids: &[Bid]) -> Market {
    let m = workload.market();
    for b in m.submit_batch(bids.to_vec()) {
        b.unwrap();
    }
    m.flush();
    m
}

fn reference_bids(bids: &[Bid]) -> Vec<RefBid> {
    bids.iter()
        .enumerate()
        .map(|(i, b)| {
            let (earliest, latest) = b.window_given();
            RefBid {
                bundle: b.bundle().iter().map(|(r, s)| (r.index(), s.micros())).collect(),
                earliest_start: earliest.expect("the workload sets windows").get(),
                latest_end: latest.expect("the workload sets windows").get(),
                duration: b.duration(),
                limit: b.limit().micros(),
                reserve: 0,
                order: i as u64,
            }
        })
        .collect()
}

fn define_clear(c: &mut Criterion) {
    let mut g = c.benchmark_group("clear");
    g.sample_size(10);
    // Whole cycles at 10k and 100k, and at 10k with the critical-value pass on two threads.
    for (name, n, threads) in
        [("10k/los", 10_000, 1), ("100k/los", 100_000, 1), ("10k/los/2-threads", 10_000, 2)]
    {
        bench_cycle(&mut g, name, Workload::new(n + 1), n, PricingRule::CriticalValue, threads);
    }
    let n = 10_000;
    g.throughput(Throughput::Elements(n as u64));
    let workload = Workload::new(n);
    let cycle = Cycle::new(&workload.config, workload.bids(n, 11, "b"), Slot(0)).unwrap();
    g.bench_function("10k/place", |b| {
        b.iter(|| {
            let (placed, won) = cycle.place();
            assert!(won > 0);
            placed
        })
    });
    let bids = reference_bids(&workload.bids(n, 11, "b"));
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

/// Whole cycles of `n` bids of `workload` under `pricing` on `threads` clearing threads, each
/// on a freshly loaded market.
fn bench_cycle(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut workload: Workload,
    n: usize,
    pricing: PricingRule,
    threads: usize,
) {
    workload.config.clearing_threads = threads;
    workload.config.pricing = pricing;
    let bids = workload.bids(n, 11, "b");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(name, |b| {
        b.iter_batched(
            || loaded(&workload, &bids),
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

/// A market of `horizon` slots holding `n` bids of 1% cpu for `duration` slots, each free to run
/// anywhere in `[0, window)`: cost that grows with slots rather than bids shows here.
fn long_horizon(horizon: u64, n: usize, duration: u32, window: u64) -> Market {
    let config =
        MarketConfig { horizon, book_size: n + 1, max_bids_per_agent: u32::MAX, ..MarketConfig::default() };
    let m = Market::builder().config(config).build().unwrap();
    let agent = AgentId::new("agent").unwrap();
    m.deposit(&agent, Credits::from_units(1 << 30)).unwrap();
    let bundle = m.bundle([("cpu", "0.01")]).unwrap();
    for i in 0..n {
        let id = BidId::new(&format!("b{i}")).unwrap();
        let bid = Bid::new(id, agent.clone(), bundle, duration, Credits::from_units(1 + i as u64 % 7))
            .window(Slot(0), Slot(window));
        m.submit(bid).unwrap();
    }
    m.flush();
    m
}

fn define_scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    g.sample_size(10);
    let (n, million) = (100_000, 1_000_000);
    let mut cycles = vec![
        ("100k/worst/critical_value", Workload::new(n + 1), n, PricingRule::CriticalValue),
        ("100k/worst/pay_as_bid", Workload::new(n + 1), n, PricingRule::PayAsBid),
        ("100k/realistic/critical_value", Workload::realistic(n + 1), n, PricingRule::CriticalValue),
        ("100k/realistic/pay_as_bid", Workload::realistic(n + 1), n, PricingRule::PayAsBid),
    ];
    if std::env::var_os("BENCH_1M").is_some() {
        cycles.push(("1M/worst/pay_as_bid", Workload::new(million + 1), million, PricingRule::PayAsBid));
        cycles.push((
            "1M/worst/critical_value",
            Workload::new(million + 1),
            million,
            PricingRule::CriticalValue,
        ));
    }
    for (name, workload, n, pricing) in cycles {
        bench_cycle(&mut g, name, workload, n, pricing, 2);
    }
    // One bid free to run anywhere in the longest horizon; 1,000 half-day runs in a day; and a
    // standing book as `load --window 600` makes it, most of it losing, each window wider than
    // the 128 rows over which placement tracks what blocked a bid.
    for (name, horizon, bids, duration, window) in [
        ("long-horizon/1-bid/4194304", MAX_HORIZON, 1, 1, MAX_HORIZON),
        ("long-horizon/1k-bids/43200-slot-runs", 86_400, 1000, 43_200, 86_400),
        ("wide-windows/10k-bids/600-slot-windows", 3600, 10_000, 60, 600),
    ] {
        g.throughput(Throughput::Elements(bids as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || long_horizon(horizon, bids, duration, window),
                |m| {
                    assert!(m.clear(Slot(0)).unwrap().won > 0);
                    m
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn define_discover(c: &mut Criterion) {
    let mut g = c.benchmark_group("discover");
    g.sample_size(10);
    for (name, n) in [("10k", 10_000), ("100k", 100_000)] {
        let workload = Workload::new(n);
        let cycle = Cycle::new(&workload.config, workload.bids(n, 11, "b"), Slot(0)).unwrap();
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
    // The standing book `load --window 600` keeps: bids of the same 600-slot window, of 1,500
    // shapes, a fifth of them winning and the rest losing.
    let n = 10_000;
    let workload = Workload::new(n);
    let cycle = Cycle::new(&workload.config, standing_bids(&workload, n), Slot(0)).unwrap();
    let (placed, won) = cycle.place();
    assert!(won > 0 && won < n / 4, "{won} won");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("standing-600-slot-windows/10k", |b| {
        b.iter(|| {
            let (ir, envy) = cycle.discover(black_box(&placed));
            assert_eq!(ir, 1.0);
            envy
        })
    });
    g.finish();
}

/// `n` bids as `load --window 600` sends them: 1-5% of cpu and of memory for 1-60 slots,
/// anywhere in the 600 slots from slot 0, limits of 1-50 credits.
fn standing_bids(workload: &Workload, n: usize) -> Vec<Bid> {
    let (cpu, memory) = (ResourceId::from_index(0).unwrap(), ResourceId::from_index(1).unwrap());
    (0..n as u64)
        .map(|k| {
            let x = k.wrapping_mul(6364136223846793005);
            let (c, m, duration, limit) =
                (1 + x % 5, 1 + (x >> 8) % 5, 1 + (x >> 16) % 60, 1 + (x >> 24) % 50);
            let share = |p: u64| Share::from_micros(10_000 * p as u32).unwrap();
            let bundle = Bundle::new([(cpu, share(c)), (memory, share(m))]).unwrap();
            let agent = workload.agents[k as usize % workload.agents.len()].clone();
            Bid::new(
                BidId::new(&format!("s{k}")).unwrap(),
                agent,
                bundle,
                duration as u32,
                Credits::from_units(limit),
            )
            .window(Slot(0), Slot(600 + duration))
        })
        .collect()
}

fn define_settle(c: &mut Criterion) {
    let mut g = c.benchmark_group("settle");
    g.sample_size(10);
    let n = 100_000;
    let workload = Workload::new(n);
    let cycle = Cycle::new(&workload.config, workload.bids(n, 11, "b"), Slot(0)).unwrap();
    let (placed, won) = cycle.place();
    assert!(won > 0);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("100k", |b| {
        b.iter_batched(
            || cycle.escrowed(&placed),
            |mut ledger| {
                let (paid, escrowed) = ledger.settle();
                assert!(paid > Credits::ZERO && escrowed == Credits::ZERO);
                ledger
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The state as data: a snapshot of 100k pending bids (taken and written as JSON), its restore,
/// and the replay of a 10k-bid cycle's events.
fn define_state(c: &mut Criterion) {
    let mut g = c.benchmark_group("state");
    g.sample_size(10);
    let n = 100_000;
    let workload = Workload::new(n);
    let market = workload.market();
    for bid in workload.bids(n, 11, "b") {
        market.submit(bid).expect("the workload's bids are valid");
    }
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("snapshot/100k", |b| {
        b.iter(|| {
            let snapshot = market.snapshot().unwrap();
            assert_eq!(snapshot.pending_bids(), n);
            black_box(snapshot.to_json())
        })
    });
    let json = market.snapshot().unwrap().to_json();
    g.bench_function("restore/100k", |b| {
        b.iter(|| {
            let restored = Market::restore(Snapshot::from_json(&json).unwrap()).unwrap();
            assert_eq!(restored.live_bids(), n);
            restored
        })
    });
    let n = 10_000;
    let workload = Workload::new(n);
    let live = workload.market();
    let mut events = live.subscribe();
    for bid in workload.bids(n, 11, "b") {
        live.submit(bid).expect("the workload's bids are valid");
    }
    live.clear(Slot(0)).unwrap();
    let events = events.drain();
    let empty = Market::builder().config(workload.config.clone()).build().unwrap().snapshot().unwrap();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("replay/10k", |b| {
        b.iter_batched(
            || Market::restore(empty.clone()).unwrap(),
            |follower| {
                follower.replay(&events).unwrap();
                assert_eq!(follower.last_seq(), events.len() as u64);
                follower
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    define_intake(c);
    define_clear(c);
    define_discover(c);
    define_settle(c);
    define_state(c);
    define_scale(c);
}

/// Medians of this run's benches, read back from Criterion's estimates; `None` for a bench the
/// run filtered out (older estimates on disk are ignored).
fn median_ns(started: SystemTime, id: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let path = target.join("criterion").join(id).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= started;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    fresh.then(|| json["median"]["point_estimate"].as_f64()).flatten()
}

/// Prints how the fast clearing compares with the reference on the same book, and intake with
/// its floor.
fn report_ratios(started: SystemTime) {
    for threads in ["1-thread", "2-threads"] {
        let floor = median_ns(started, &format!("intake/floor_array_queue_push_{threads}"));
        for (id, what) in [("submit", "submit"), ("submit_batch_64", "submit_batch of 64")] {
            let measured = median_ns(started, &format!("intake/{id}_{threads}"));
            if let (Some(measured), Some(floor)) = (measured, floor) {
                println!(
                    "intake/floor, {what}, {threads}: {:.1} ({measured:.1} ns a bid, {floor:.1} ns a bare push)",
                    measured / floor
                );
            }
        }
    }
    let reference = median_ns(started, "clear/10k_reference");
    for (id, what) in [("clear/10k_place", "ranking and placement"), ("clear/10k_los", "whole cycle")] {
        if let (Some(fast), Some(reference)) = (median_ns(started, id), reference) {
            println!(
                "fast/reference at 10k, {what}: {:.3} ({:.2} ms fast, {:.2} ms reference placement)",
                fast / reference,
                fast / 1e6,
                reference / 1e6
            );
        }
    }
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    report_ratios(started);
}
