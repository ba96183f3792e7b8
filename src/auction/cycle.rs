//! A clearing cycle in three steps, so intake is sequenced and answered while it computes:
//!
//! 1. [`Engine::take_cut`] (the writer, briefly: nothing per bid but reading its window): the
//!    clock moves to the cycle's slot, the book is taken out, the free capacity it can reach is
//!    read, and `cycle_started` marks the cut in the event stream;
//! 2. [`Taken::split`], [`compute`] and [`Outcome::of`] (no lock): expired bids apart, ranking,
//!    placement, critical values if the pricing rule needs them, price discovery, payments,
//!    and every outcome event made ready — a pure function of the cut;
//! 3. [`Engine::apply`] (the writer, briefly: per winner and leaving bid, plus one push per
//!    event): capacity is sold, the ledger settles, and the outcome events follow whatever
//!    intake was sequenced meanwhile.
//!
//! The stream therefore shows the cut, and a replay that applies the events in order rebuilds
//! the same state: intake sequenced between `cycle_started` and the outcome did not take part.

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use super::book::BookBid;
use super::clearing::{self, Discovery, Grid, Placement, Track};
use super::config::{Config, PricingRule, Settlement};
use super::engine::Engine;
use super::events::EventKind;
use super::intake::Intake;
use super::ledger::{Ledger, Release};
use super::lines::Prepared;
use super::money::{Credits, Price};
use crate::capacity::fixed::MICRO;
use crate::capacity::{Bundle, CapacitySlots, ResourceId, Slot};

/// One resource's figures after a cycle (the fields of `price_discovered`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceReport {
    /// The resource.
    pub resource: Arc<str>,
    /// Price of the current slot.
    pub spot: Price,
    /// Volume-weighted price over the slots this cycle sold (the spot when it sold none).
    pub average: Price,
    /// Smoothed over cycles: the market price.
    pub index: Price,
    /// Fraction of full capacity sold in the current slot.
    pub utilization: f64,
    /// Capacity-slots this cycle's bids asked for.
    pub requested: CapacitySlots,
    /// Capacity-slots this cycle sold.
    pub sold: CapacitySlots,
    /// Winning credits / capacity-slots sold: the prototype's price.
    pub legacy: Price,
}

/// What a clearing cycle did (the fields of `cycle_cleared`, and the prices).
#[derive(Clone, Debug, PartialEq)]
pub struct CycleReport {
    /// The cycle's number, from 1.
    pub cycle: u64,
    /// The slot it cleared at.
    pub now: Slot,
    /// The `seq` of its `cycle_cleared`, the last of its events.
    pub seq: u64,
    /// Bids that took part: won + lost + expired.
    pub bids: u64,
    /// Winners.
    pub won: u64,
    /// Losers.
    pub lost: u64,
    /// Expired before clearing.
    pub expired: u64,
    /// Sum of payments.
    pub revenue: Credits,
    /// Sum of the winners' limits.
    pub welfare: Credits,
    /// Fraction of winners who can afford their bundle at the discovered prices.
    pub ir: f64,
    /// Fraction of losers who could afford a start of theirs at those prices.
    pub envy: f64,
    /// What winners paid above their critical values (the least limits that would still have
    /// won): zero under `critical_value`, the shading margin under `pay_as_bid`. `None` when the
    /// cycle did not compute critical values (see `always_critical_values`).
    pub overpayment: Option<Credits>,
    /// Per resource, in configured order.
    pub prices: Vec<PriceReport>,
}

/// A cycle cut from the book: everything it clears, taken out of the writer's state.
#[derive(Debug)]
pub(crate) struct Cut {
    pub(crate) config: Arc<Config>,
    pub(crate) cycle: u64,
    pub(crate) now: Slot,
    pub(crate) cid: Option<Arc<str>>,
    /// Bids whose window can no longer hold their run.
    pub(crate) expired: Vec<BookBid>,
    /// The others, in acceptance order.
    pub(crate) bids: Vec<BookBid>,
    /// Free capacity over the slots they can reach, as the cut found it.
    pub(crate) initial: Grid,
    /// The timeline's capacity settings at the cut.
    pub(crate) settings: u64,
}

/// A cycle's book as the writer took it out, with the free capacity its bids can reach, not
/// yet split into expired bids and those that take part.
#[derive(Debug)]
pub(crate) struct Taken {
    config: Arc<Config>,
    cycle: u64,
    now: Slot,
    cid: Option<Arc<str>>,
    bids: Vec<BookBid>,
    initial: Grid,
    settings: u64,
}

impl Taken {
    /// The cut: bids whose window can no longer hold their run are expired, the others keep
    /// acceptance order.
    pub(crate) fn split(self) -> Cut {
        let Taken { config, cycle, now, cid, bids, initial, settings } = self;
        let (expired, bids): (Vec<BookBid>, Vec<BookBid>) = bids.into_iter().partition(|b| expired(b, now));
        Cut { config, cycle, now, cid, expired, bids, initial, settings }
    }
}

/// Whether a bid's window can no longer hold its run at `now`.
fn expired(bid: &BookBid, now: Slot) -> bool {
    bid.window.starts(now).is_empty()
}

/// What a cycle decided: its bids in clearing order with their placement, prices and payments.
#[derive(Debug)]
pub(crate) struct Cleared {
    pub(crate) bids: Vec<BookBid>,
    pub(crate) placement: Placement,
    /// Per bid: a winner's critical value, a loser's least winning limit; `None` where none
    /// exists or none was computed.
    pub(crate) thresholds: Vec<Option<u64>>,
    /// Whether `thresholds` were computed (so `None` there means "no limit would win").
    pub(crate) critical: bool,
    pub(crate) discovery: Discovery,
    /// Per bid, what a winner pays.
    pub(crate) payments: Vec<Option<Credits>>,
}

impl Engine {
    /// The cut of cycle `self.cycle + 1` at `now`: the clock moves, the book is taken out, the
    /// free capacity its bids can reach is read, and `cycle_started` goes into the stream. Call
    /// with the intake just sequenced and frozen. What is left to cut (expired bids apart,
    /// [`Taken::split`]) needs no writer.
    pub(crate) fn take_cut(&mut self, now: Slot, cid: Option<Arc<str>>) -> Taken {
        self.cycle += 1;
        let cycle = self.cycle;
        self.now = now;
        self.timeline.advance(now);
        let bids = self.book.take();
        self.emit(Some(cycle), cid.clone(), EventKind::CycleStarted { bids: bids.len() as u64 });
        let initial = clearing::grid_for(&self.timeline, bids.iter().filter(|b| !expired(b, now)), now.0);
        let settings = self.timeline.settings();
        Taken { config: self.config.clone(), cycle, now, cid, bids, initial, settings }
    }

    /// Applies a cycle's outcome: sells the winners' capacity, settles the ledger, emits the
    /// outcome events after whatever was sequenced since the cut, and puts the bids that stay
    /// back in the book ahead of those accepted meanwhile. Everything per bid was made ready in
    /// [`Outcome::of`], outside the writer; this only applies it.
    /// Lines made ahead for its events go to `prepared`.
    pub(crate) fn apply(
        &mut self,
        (ledger, intake, prepared): (&Ledger, &Intake, &Prepared),
        outcome: Outcome,
    ) -> CycleReport {
        let Outcome { config, cid, sales, leaving, retained, events, lines, sums, mut report, discovery } =
            outcome;
        let cycle = report.cycle;
        let mut sold: Vec<Vec<(u64, u64, u32)>> = vec![Vec::new(); self.timeline.resources()];
        for (bundle, run) in &sales {
            for (r, share) in bundle.raw() {
                sold[r].push((run.start, run.end, share));
            }
        }
        for (r, sales) in sold.iter().enumerate() {
            self.timeline.sell_all(ResourceId::from_index(r).expect("a configured resource"), sales);
        }
        // Settlement: winners pay, losers leaving and expired bids get their escrow back.
        let mut releases: Vec<(&BookBid, Release)> = leaving.iter().map(|(b, r)| (b, *r)).collect();
        let pool = (config.settlement == Settlement::Pool).then_some(&config.pool_account);
        ledger.settle(intake, &mut releases, (cycle, config.clearing_threads), pool);
        drop(releases);

        let c = Some(cycle);
        let first = self.seq + 1;
        // Its events, then a price per resource and the `cycle_cleared`.
        self.reserve_events(events.len() + self.timeline.resources() + 1);
        for (correlation_id, kind) in events {
            self.emit(c, correlation_id, kind);
        }
        // The lines were made with the cycle's slot, which is still the market's.
        if let Some(lines) = lines
            && self.now == report.now
        {
            prepared.keep(first, lines);
        }
        let prices = self.price_reports(&sums, &discovery);
        for p in &prices {
            let kind = EventKind::PriceDiscovered {
                resource: p.resource.clone(),
                spot: p.spot,
                average: p.average,
                index: p.index,
                utilization: p.utilization,
                requested: p.requested,
                sold: p.sold,
                legacy: p.legacy,
            };
            self.emit(c, cid.clone(), kind);
        }
        let kind = EventKind::CycleCleared {
            bids: report.bids,
            won: report.won,
            lost: report.lost,
            expired: report.expired,
            revenue: report.revenue,
            welfare: report.welfare,
            ir: report.ir,
            envy: report.envy,
        };
        report.seq = self.emit(c, cid, kind);
        report.prices = prices.clone();
        self.prices = prices;
        self.book.restore(retained);
        self.discovery = Some(discovery);
        report
    }

    fn price_reports(&mut self, sums: &PriceSums, discovery: &Discovery) -> Vec<PriceReport> {
        let n = self.config.resources.len();
        let now = self.now;
        let smoothing = u128::from(self.config.smoothing);
        (0..n)
            .map(|r| {
                let id = ResourceId::from_index(r).expect("a configured resource");
                let (requested, sold) = (sums.requested[r], sums.sold[r]);
                let spot = discovery.price(r, now.0);
                let average = if sold > 0 {
                    Price::from_micros(div_round(sums.value[r], u128::from(sold)))
                } else {
                    spot
                };
                let index = match self.index[r] {
                    None => average,
                    Some(old) => Price::from_micros(div_round(
                        smoothing * u128::from(average.micros())
                            + (u128::from(MICRO) - smoothing) * u128::from(old.micros()),
                        u128::from(MICRO),
                    )),
                };
                self.index[r] = Some(index);
                let legacy = if sold > 0 {
                    Price::from_micros(div_round(sums.paid[r] * u128::from(MICRO), u128::from(sold)))
                } else {
                    Price::ZERO
                };
                PriceReport {
                    resource: self.config.resources.shared_name(id),
                    spot,
                    average,
                    index,
                    utilization: f64::from(self.timeline.sold(id, now)) / MICRO as f64,
                    requested: CapacitySlots::from_micros(requested),
                    sold: CapacitySlots::from_micros(sold),
                    legacy,
                }
            })
            .collect()
    }
}

/// A cycle's outcome, made ready without the writer: every event and figure per bid, the bids
/// leaving (with how) and those staying (in acceptance order). [`Engine::apply`] applies it.
#[derive(Debug)]
pub(crate) struct Outcome {
    config: Arc<Config>,
    cid: Option<Arc<str>>,
    /// The winners' bundles and the slots they bought.
    sales: Vec<(Bundle, Range<u64>)>,
    leaving: Vec<(BookBid, Release)>,
    retained: Vec<BookBid>,
    /// The per-bid events, in order, before the prices: expiries, then each bid in clearing
    /// order (a win and its payment, or a loss).
    events: Vec<(Option<Arc<str>>, EventKind)>,
    /// Per event of `events`, its line made ahead (`lines::outcome_lines`), when asked for.
    lines: Option<Vec<Vec<u8>>>,
    sums: PriceSums,
    /// The cycle's report, but for the `seq` of its `cycle_cleared` and its prices.
    report: CycleReport,
    discovery: Discovery,
}

/// What a cycle sold and asked for per resource, for its price reports.
#[derive(Debug)]
struct PriceSums {
    requested: Vec<u64>,
    sold: Vec<u64>,
    paid: Vec<u128>,
    /// What the sold capacity-slots are worth at the discovered prices, in 10^-12 credits.
    value: Vec<u128>,
}

impl PriceSums {
    fn new(resources: usize) -> PriceSums {
        PriceSums {
            requested: vec![0; resources],
            sold: vec![0; resources],
            paid: vec![0; resources],
            value: vec![0; resources],
        }
    }

    fn add(&mut self, other: &PriceSums) {
        let pairs =
            self.requested.iter_mut().zip(&other.requested).chain(self.sold.iter_mut().zip(&other.sold));
        pairs.for_each(|(a, b)| *a += b);
        let pairs = self.paid.iter_mut().zip(&other.paid).chain(self.value.iter_mut().zip(&other.value));
        pairs.for_each(|(a, b)| *a += b);
    }
}

/// What a cycle decided, read to make its outcome.
#[derive(Clone, Copy)]
struct Decided<'a> {
    config: &'a Config,
    bids: &'a [BookBid],
    placement: &'a Placement,
    discovery: &'a Discovery,
    thresholds: &'a [Option<u64>],
    payments: &'a [Option<Credits>],
    /// The cycle and slot its events carry, when their lines are made ahead.
    lines: Option<(u64, Slot)>,
}

/// The outcome of a run of bids in clearing order: their events in order, the winners' sales,
/// and their sums.
struct Part {
    events: Vec<(Option<Arc<str>>, EventKind)>,
    /// Their lines, when made ahead.
    lines: Vec<Vec<u8>>,
    sales: Vec<(Bundle, Range<u64>)>,
    sums: PriceSums,
    revenue: u64,
    welfare: u64,
    won: u64,
    lost: u64,
    /// What winners paid above their critical values.
    over: u64,
}

impl Decided<'_> {
    /// The outcome of bids `range`.
    fn part(&self, range: Range<usize>) -> Part {
        let Decided { config, discovery, thresholds, payments, .. } = *self;
        let mut part = Part {
            events: Vec::with_capacity(range.len() * 3 / 2),
            lines: Vec::new(),
            sales: Vec::new(),
            sums: PriceSums::new(config.resources.len()),
            revenue: 0,
            welfare: 0,
            won: 0,
            lost: 0,
            over: 0,
        };
        let Part { events, sales, sums, revenue, welfare, won, lost, over, .. } = &mut part;
        for i in range {
            if i % 64 == 0 {
                clearing::pool::breathe();
            }
            let b = &self.bids[i];
            let cid = b.correlation_id.clone();
            let duration = u64::from(b.window.duration());
            for (r, share) in b.bundle.raw() {
                sums.requested[r] += u64::from(share) * duration;
            }
            match (self.placement.starts[i], payments[i]) {
                (Some(row), Some(payment)) => {
                    let start = self.placement.rows.slot(row);
                    *won += 1;
                    *revenue += payment.micros();
                    *over += payment.micros().saturating_sub(thresholds[i].unwrap_or(0));
                    *welfare += b.limit.micros();
                    for (r, share) in b.bundle.raw() {
                        sums.sold[r] += u64::from(share) * duration;
                        sums.paid[r] += u128::from(payment.micros());
                        sums.value[r] += discovery.run_cost(r, share, row, duration);
                    }
                    sales.push((b.bundle, start..start + duration));
                    let kind = EventKind::BidWon {
                        bid: b.id.clone(),
                        agent: b.agent.clone(),
                        beneficiary: b.beneficiary.clone(),
                        start: Slot(start),
                        end: Slot(start + duration),
                        payment,
                    };
                    events.push((cid.clone(), kind));
                    if payment > Credits::ZERO {
                        let kind = match config.settlement {
                            Settlement::Burn => {
                                EventKind::CreditsBurned { agent: b.agent.clone(), amount: payment }
                            }
                            Settlement::Pool => EventKind::CreditsTransferred {
                                from: b.agent.clone(),
                                to: config.pool_account.clone(),
                                amount: payment,
                            },
                        };
                        events.push((cid, kind));
                    }
                }
                _ => {
                    *lost += 1;
                    let shortfall = thresholds[i].map(|need| Credits::from_micros(need - b.limit.micros()));
                    let kind = EventKind::BidLost {
                        bid: b.id.clone(),
                        agent: b.agent.clone(),
                        retained: b.cycles_left > 1,
                        shortfall,
                    };
                    events.push((cid, kind));
                }
            }
        }
        if let Some((cycle, slot)) = self.lines {
            part.lines = super::lines::outcome_lines(cycle, slot, &part.events);
        }
        part
    }
}

impl Outcome {
    /// The outcome of cycle `cut` as `cleared` decided it. The bids' events are made in parts
    /// on the clearing threads and joined in order, with their lines made ahead if `lines`.
    pub(crate) fn of(cut: Cut, cleared: Cleared, lines: bool) -> Outcome {
        let Cut { config, cycle, now, cid, expired, settings, .. } = cut;
        let Cleared { bids, placement, thresholds, critical, discovery, payments } = cleared;
        let n = config.resources.len();
        let decided = Decided {
            config: &config,
            bids: &bids,
            placement: &placement,
            discovery: &discovery,
            thresholds: &thresholds,
            payments: &payments,
            lines: lines.then_some((cycle, now)),
        };
        let parts: Vec<Part> = clearing::on_pool(config.clearing_threads, || {
            let part = bids.len().div_ceil(rayon::current_num_threads() * 4).max(1024);
            (0..bids.len().div_ceil(part))
                .into_par_iter()
                .map(|k| decided.part(k * part..((k + 1) * part).min(bids.len())))
                .collect()
        });
        let mut sums = PriceSums::new(n);
        let mut events =
            Vec::with_capacity(expired.len() + parts.iter().map(|p| p.events.len()).sum::<usize>());
        for b in &expired {
            let kind = EventKind::BidExpired { bid: b.id.clone(), agent: b.agent.clone() };
            events.push((b.correlation_id.clone(), kind));
        }
        let mut lines = lines.then(|| super::lines::outcome_lines(cycle, now, &events));
        let (mut revenue, mut welfare, mut won, mut lost, mut over) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut sales = Vec::with_capacity(parts.iter().map(|p| p.sales.len()).sum());
        for part in parts {
            events.extend(part.events);
            if let Some(all) = &mut lines {
                all.extend(part.lines);
            }
            sales.extend(part.sales);
            sums.add(&part.sums);
            revenue += part.revenue;
            welfare += part.welfare;
            won += part.won;
            lost += part.lost;
            over += part.over;
        }
        // Everything of the report but the `seq` of its `cycle_cleared` and the prices.
        let report = CycleReport {
            cycle,
            now,
            seq: 0,
            bids: (bids.len() + expired.len()) as u64,
            won,
            lost,
            expired: expired.len() as u64,
            revenue: Credits::from_micros(revenue),
            welfare: Credits::from_micros(welfare),
            ir: discovery.ir,
            envy: discovery.envy,
            overpayment: critical.then_some(Credits::from_micros(over)),
            prices: Vec::new(),
        };
        let mut leaving: Vec<(BookBid, Release)> =
            expired.into_iter().map(|b| (b, Release::Returned)).collect();
        let mut retained = Vec::new();
        for (i, mut b) in bids.into_iter().enumerate() {
            match payments[i] {
                Some(payment) => leaving.push((b, Release::Won { payment })),
                None if b.cycles_left <= 1 => leaving.push((b, Release::Returned)),
                None => {
                    b.cycles_left -= 1;
                    b.lost_under = settings + 1;
                    retained.push(b);
                }
            }
        }
        retained.sort_by_key(|b| b.order);
        Outcome { config, cid, sales, leaving, retained, events, lines, sums, report, discovery }
    }
}

/// Clears a cut: ranks and places its bids, finds critical values when the pricing rule charges
/// them (or the market asks for them always), discovers prices and prices the winners. Pure: the
/// same cut gives the same result, on any thread.
pub(crate) fn compute(cut: &mut Cut) -> Cleared {
    let config = cut.config.clone();
    let mut bids = std::mem::take(&mut cut.bids);
    let mut left = cut.initial.clone();
    let critical = config.pricing == PricingRule::CriticalValue || config.always_critical_values;
    let track = if critical { Track::Blocked } else { Track::Starts };
    let placement =
        clearing::place(config.priority, cut.now.0, &mut bids, &mut left, (track, Some(cut.settings)));
    let thresholds = if critical {
        clearing::thresholds(config.priority, &bids, &placement, &cut.initial, config.clearing_threads)
    } else {
        vec![None; bids.len()]
    };
    let discovery = clearing::discover(&config, &bids, &placement, &left);
    let payments = clearing::payments(&config, &bids, &placement, &thresholds, &discovery);
    Cleared { bids, placement, thresholds, critical, discovery, payments }
}

/// `n / d` rounded to the nearest integer, halves up; saturates at `u64::MAX`.
fn div_round(n: u128, d: u128) -> u64 {
    u64::try_from((n + d / 2) / d).unwrap_or(u64::MAX)
}
