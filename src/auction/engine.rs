//! The single writer: sequences intake into events, runs clearing cycles, publishes prices.

use std::sync::Arc;
use std::sync::mpsc::Sender;

use super::book::{Book, BookBid};
use super::clearing::{self, Discovery, Grid, Placement};
use super::config::{Config, Settlement};
use super::events::{BundleShares, Event, EventKind};
use super::intake::{Entry, Intake, Pending};
use super::ledger::{Ledger, Release};
use super::money::{Credits, Price, pico_cost};
use crate::capacity::fixed::MICRO;
use crate::capacity::{CapacitySlots, ResourceId, Slot, Timeline};

/// One resource's figures after a cycle (the fields of `price_discovered`).
#[derive(Clone, Debug, PartialEq)]
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
    /// won): zero under `critical_value`, the shading margin under `pay_as_bid`.
    pub overpayment: Credits,
    /// Per resource, in configured order.
    pub prices: Vec<PriceReport>,
}

/// The writer's state: everything only clearing and sequencing touch.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: Arc<Config>,
    pub(crate) timeline: Timeline,
    book: Book,
    /// The last `seq` given.
    seq: u64,
    pub(crate) cycle: u64,
    pub(crate) now: Slot,
    index: Vec<Option<Price>>,
    pub(crate) prices: Vec<PriceReport>,
    /// The last cycle's price of every resource in every slot it reached.
    pub(crate) discovery: Option<Discovery>,
    subscribers: Vec<Sender<Arc<[Event]>>>,
    /// Events made since the last publish.
    pending: Vec<Event>,
    /// The shards' intake buffers between cuts, kept so intake reuses their capacity.
    pub(crate) buffers: Vec<Pending>,
}

impl Engine {
    pub(crate) fn new(config: Arc<Config>, start: Slot) -> Engine {
        let resources = config.resources.len();
        Engine {
            timeline: Timeline::new(resources, config.horizon, start),
            book: Book::default(),
            seq: 0,
            cycle: 0,
            now: start,
            index: vec![None; resources],
            prices: Vec::new(),
            discovery: None,
            subscribers: Vec::new(),
            pending: Vec::new(),
            buffers: Vec::new(),
            config,
        }
    }

    pub(crate) fn subscribe(&mut self, tx: Sender<Arc<[Event]>>) {
        self.subscribers.push(tx);
    }

    /// Live bids in the book.
    pub(crate) fn book_len(&self) -> usize {
        self.book.len()
    }

    pub(crate) fn emit(
        &mut self,
        cycle: Option<u64>,
        correlation_id: Option<Arc<str>>,
        kind: EventKind,
    ) -> u64 {
        self.seq += 1;
        self.pending.push(Event { seq: self.seq, cycle, slot: self.now, correlation_id, kind });
        self.seq
    }

    /// Hands the events made since the last publish to every subscriber.
    pub(crate) fn publish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch: Arc<[Event]> = std::mem::take(&mut self.pending).into();
        self.subscribers.retain(|tx| tx.send(batch.clone()).is_ok());
    }

    /// Gives one intake entry its place in the event stream.
    pub(crate) fn sequence(&mut self, entry: Entry) {
        match entry {
            Entry::Accepted(mut bid) => {
                let bundle = BundleShares(
                    bid.bundle.iter().map(|(r, s)| (self.config.resources.shared_name(r), s)).collect(),
                );
                let kind = EventKind::BidAccepted {
                    bid: bid.id.clone(),
                    agent: bid.agent.clone(),
                    beneficiary: bid.beneficiary.clone(),
                    bundle,
                    duration: bid.window.duration(),
                    earliest_start: bid.window.earliest_start(),
                    latest_end: bid.window.latest_end(),
                    limit: bid.limit,
                };
                bid.order = self.emit(None, bid.correlation_id.clone(), kind);
                self.book.insert(bid);
            }
            Entry::Rejected { bid, agent, rejection, correlation_id } => {
                let kind = EventKind::BidRejected {
                    bid: clip(bid),
                    agent: clip(agent),
                    reason: rejection.code,
                    message: rejection.message,
                };
                self.emit(None, correlation_id, kind);
            }
            Entry::Cancelled { agent, bid, correlation_id } => {
                self.emit(
                    None,
                    correlation_id,
                    EventKind::BidCancelled { bid: bid.clone(), agent: agent.clone() },
                );
                self.book.cancel(agent, bid);
            }
            Entry::Deposited { agent, amount, correlation_id } => {
                self.emit(None, correlation_id, EventKind::CreditsDeposited { agent, amount });
            }
            Entry::Transferred { from, to, amount, correlation_id } => {
                self.emit(None, correlation_id, EventKind::CreditsTransferred { from, to, amount });
            }
        }
    }

    /// One clearing cycle at `now` over the book (the intake is already sequenced into it).
    pub(crate) fn clear(
        &mut self,
        ledger: &Ledger,
        intake: &Intake,
        now: Slot,
        cid: Option<Arc<str>>,
    ) -> CycleReport {
        self.cycle += 1;
        let cycle = self.cycle;
        self.now = now;
        self.timeline.advance(now);
        let config = self.config.clone();

        let (expired, mut bids): (Vec<BookBid>, Vec<BookBid>) =
            self.book.take().into_iter().partition(|b| b.window.starts(now).is_empty());

        let rows = clearing::reach_of(&bids, now.0);
        let mut grid = Grid { lo: rows.start, stride: config.resources.len(), free: Vec::new() };
        self.timeline.free_grid(rows, &mut grid.free);
        let initial = grid.clone();
        let placement = clearing::place(config.priority, now.0, &mut bids, &mut grid);
        let thresholds =
            clearing::thresholds(config.priority, &bids, &placement, &initial, config.clearing_threads);
        let discovery = clearing::discover(&config, &bids, &placement, &grid);
        let payments = clearing::payments(&config, &bids, &placement, &thresholds, &discovery);

        for (i, b) in bids.iter().enumerate() {
            if let Some(start) = placement.starts[i] {
                let end = start + u64::from(b.window.duration());
                for (r, share) in b.bundle.iter() {
                    self.timeline.sell(r, start..end, share.micros());
                }
            }
        }

        // Settlement: winners pay, losers leaving and expired bids get their escrow back.
        let mut releases: Vec<(&BookBid, Release)> = expired.iter().map(|b| (b, Release::Returned)).collect();
        for (i, b) in bids.iter().enumerate() {
            match payments[i] {
                Some(payment) => releases.push((b, Release::Won { payment })),
                None if b.cycles_left <= 1 => releases.push((b, Release::Returned)),
                None => {}
            }
        }
        let pool = (config.settlement == Settlement::Pool).then_some(&config.pool_account);
        ledger.settle(intake, &mut releases, cycle, pool);

        let report =
            self.cycle_events(cycle, cid, &expired, &bids, &placement, &thresholds, &payments, &discovery);
        let retained = bids
            .into_iter()
            .enumerate()
            .filter(|(i, b)| placement.starts[*i].is_none() && b.cycles_left > 1)
            .map(|(_, mut b)| {
                b.cycles_left -= 1;
                b
            })
            .collect();
        self.book.restore(retained);
        self.discovery = Some(discovery);
        report
    }

    #[allow(clippy::too_many_arguments)]
    fn cycle_events(
        &mut self,
        cycle: u64,
        cid: Option<Arc<str>>,
        expired: &[BookBid],
        bids: &[BookBid],
        placement: &Placement,
        thresholds: &[Option<u64>],
        payments: &[Option<Credits>],
        discovery: &Discovery,
    ) -> CycleReport {
        let c = Some(cycle);
        for b in expired {
            self.emit(
                c,
                b.correlation_id.clone(),
                EventKind::BidExpired { bid: b.id.clone(), agent: b.agent.clone() },
            );
        }
        let (mut revenue, mut welfare, mut won, mut lost, mut over) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (i, b) in bids.iter().enumerate() {
            let cid = b.correlation_id.clone();
            match (placement.starts[i], payments[i]) {
                (Some(start), Some(payment)) => {
                    won += 1;
                    revenue += payment.micros();
                    over += payment.micros().saturating_sub(thresholds[i].unwrap_or(0));
                    welfare += b.limit.micros();
                    let end = Slot(start + u64::from(b.window.duration()));
                    self.emit(
                        c,
                        cid.clone(),
                        EventKind::BidWon {
                            bid: b.id.clone(),
                            agent: b.agent.clone(),
                            beneficiary: b.beneficiary.clone(),
                            start: Slot(start),
                            end,
                            payment,
                        },
                    );
                    if payment > Credits::ZERO {
                        let kind = match self.config.settlement {
                            Settlement::Burn => {
                                EventKind::CreditsBurned { agent: b.agent.clone(), amount: payment }
                            }
                            Settlement::Pool => EventKind::CreditsTransferred {
                                from: b.agent.clone(),
                                to: self.config.pool_account.clone(),
                                amount: payment,
                            },
                        };
                        self.emit(c, cid, kind);
                    }
                }
                _ => {
                    lost += 1;
                    let shortfall = thresholds[i].map(|need| Credits::from_micros(need - b.limit.micros()));
                    let kind = EventKind::BidLost {
                        bid: b.id.clone(),
                        agent: b.agent.clone(),
                        retained: b.cycles_left > 1,
                        shortfall,
                    };
                    self.emit(c, cid, kind);
                }
            }
        }
        let prices = self.price_reports(bids, placement, payments, discovery);
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
        let report = CycleReport {
            cycle,
            now: self.now,
            bids: (bids.len() + expired.len()) as u64,
            won,
            lost,
            expired: expired.len() as u64,
            revenue: Credits::from_micros(revenue),
            welfare: Credits::from_micros(welfare),
            ir: discovery.ir,
            envy: discovery.envy,
            overpayment: Credits::from_micros(over),
            prices: prices.clone(),
        };
        self.emit(
            c,
            cid,
            EventKind::CycleCleared {
                bids: report.bids,
                won,
                lost,
                expired: report.expired,
                revenue: report.revenue,
                welfare: report.welfare,
                ir: report.ir,
                envy: report.envy,
            },
        );
        self.prices = prices;
        report
    }

    fn price_reports(
        &mut self,
        bids: &[BookBid],
        placement: &Placement,
        payments: &[Option<Credits>],
        discovery: &Discovery,
    ) -> Vec<PriceReport> {
        let n = self.config.resources.len();
        let mut requested = vec![0u64; n];
        let mut sold = vec![0u64; n];
        let mut paid = vec![0u128; n];
        let mut value = vec![0u128; n];
        for (i, b) in bids.iter().enumerate() {
            let duration = u64::from(b.window.duration());
            for (r, share) in b.bundle.raw() {
                requested[r] += u64::from(share) * duration;
                if let (Some(start), Some(payment)) = (placement.starts[i], payments[i]) {
                    sold[r] += u64::from(share) * duration;
                    paid[r] += u128::from(payment.micros());
                    value[r] += (start..start + duration)
                        .map(|t| pico_cost(u64::from(share), discovery.price(r, t)))
                        .sum::<u128>();
                }
            }
        }
        let now = self.now;
        let smoothing = u128::from(self.config.smoothing);
        (0..n)
            .map(|r| {
                let id = ResourceId::from_index(r).expect("a configured resource");
                let spot = discovery.price(r, now.0);
                let average = if sold[r] > 0 {
                    Price::from_micros(div_round(value[r], u128::from(sold[r])))
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
                let legacy = if sold[r] > 0 {
                    Price::from_micros(div_round(paid[r] * u128::from(MICRO), u128::from(sold[r])))
                } else {
                    Price::ZERO
                };
                PriceReport {
                    resource: self.config.resources.shared_name(id),
                    spot,
                    average,
                    index,
                    utilization: f64::from(self.timeline.sold(id, now)) / MICRO as f64,
                    requested: CapacitySlots::from_micros(requested[r]),
                    sold: CapacitySlots::from_micros(sold[r]),
                    legacy,
                }
            })
            .collect()
    }
}

/// `n / d` rounded to the nearest integer, halves up; saturates at `u64::MAX`.
fn div_round(n: u128, d: u128) -> u64 {
    u64::try_from((n + d / 2) / d).unwrap_or(u64::MAX)
}

/// A raw id from a refused request, cut to 64 bytes (on a character boundary) for the event.
fn clip(mut s: String) -> String {
    if s.len() > 64 {
        let mut at = 64;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}
