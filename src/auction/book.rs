//! The book: pending bids, owned by the single writer between cycles.

use std::sync::Arc;

use super::bid::{Bid, reserve_cost};
use super::config::Config;
use super::events::BundleShares;
use super::ids::{AgentId, BidId};
use super::money::Credits;
use super::snapshot::PendingBid;
use crate::capacity::{Bundle, ResourceId, Resources, Share, Window};

/// A bid accepted into the book, with everything clearing and settlement need.
#[derive(Clone, Debug)]
pub(crate) struct BookBid {
    pub(crate) id: BidId,
    pub(crate) agent: AgentId,
    pub(crate) beneficiary: AgentId,
    pub(crate) bundle: Bundle,
    pub(crate) window: Window,
    pub(crate) limit: Credits,
    /// The bundle's cost at reserve prices: the least any rule charges.
    pub(crate) reserve: Credits,
    /// Cycles it may still take part in, this one included.
    pub(crate) cycles_left: u32,
    /// Acceptance order: the `seq` of its `bid_accepted`, set when sequenced. Ties in priority
    /// go to the lower.
    pub(crate) order: u64,
    /// Its agent's account in the ledger.
    pub(crate) account: u32,
    pub(crate) correlation_id: Option<Arc<str>>,
    /// One more than the timeline's capacity settings when it last lost and stayed; 0 if it has
    /// not. A loser loses again while no capacity was set since (see `clearing::place`). Work
    /// saved, never state: a snapshot does not keep it.
    pub(crate) lost_under: u64,
}

impl BookBid {
    /// A bid that passed its checks, as the book holds it (`order` is set when sequenced).
    pub(crate) fn new(
        bid: Bid,
        (window, reserve): (Window, Credits),
        account: u32,
        correlation_id: Option<Arc<str>>,
    ) -> BookBid {
        BookBid {
            beneficiary: bid.beneficiary.unwrap_or_else(|| bid.agent.clone()),
            id: bid.id,
            agent: bid.agent,
            bundle: bid.bundle,
            window,
            limit: bid.limit,
            reserve,
            cycles_left: bid.good_for,
            order: 0,
            account,
            correlation_id,
            lost_under: 0,
        }
    }
}

impl BookBid {
    /// The bid as a snapshot writes it (and, but for `cycles_left`, as its `bid_accepted` does).
    pub(crate) fn written(&self, resources: &Resources) -> PendingBid {
        PendingBid {
            bid: self.id.clone(),
            agent: self.agent.clone(),
            beneficiary: self.beneficiary.clone(),
            bundle: BundleShares::of(&self.bundle, resources),
            duration: self.window.duration(),
            earliest_start: self.window.earliest_start(),
            latest_end: self.window.latest_end(),
            limit: self.limit,
            cycles_left: self.cycles_left,
            seq: self.order,
            correlation_id: self.correlation_id.clone(),
        }
    }

    /// A bid written by a snapshot or a `bid_accepted`, booked again for account `account`.
    pub(crate) fn from_written(config: &Config, account: u32, p: PendingBid) -> Result<BookBid, String> {
        let bundle = p.bundle.resolve(&config.resources).map_err(|e| format!("bid `{}`: {e}", p.bid))?;
        let window = Window::new(p.earliest_start, p.latest_end, p.duration)
            .ok_or_else(|| format!("bid `{}`: a window that cannot hold its run", p.bid))?;
        Ok(BookBid {
            reserve: reserve_cost(config, &bundle, u64::from(p.duration)),
            id: p.bid,
            agent: p.agent,
            beneficiary: p.beneficiary,
            bundle,
            window,
            limit: p.limit,
            cycles_left: p.cycles_left,
            order: p.seq,
            account,
            correlation_id: p.correlation_id,
            lost_under: 0,
        })
    }
}

impl BundleShares {
    /// `bundle` with its resources named.
    pub(crate) fn of(bundle: &Bundle, resources: &Resources) -> BundleShares {
        BundleShares(bundle.iter().map(|(r, s)| (resources.shared_name(r), s)).collect())
    }

    /// The bundle these names give in a market of `resources`.
    pub(crate) fn resolve(&self, resources: &Resources) -> Result<Bundle, String> {
        let items = self
            .0
            .iter()
            .map(|(name, share)| {
                let r =
                    resources.find(name).ok_or_else(|| format!("the market sells no resource `{name}`"))?;
                Ok((r, *share))
            })
            .collect::<Result<Vec<(ResourceId, Share)>, String>>()?;
        Bundle::new(items).map_err(|e| e.to_string())
    }
}

/// Pending bids in acceptance order.
#[derive(Debug, Default)]
pub(crate) struct Book {
    bids: Vec<BookBid>,
    /// Bids cancelled since the last cycle, removed when it starts.
    cancelled: foldhash::HashSet<(AgentId, BidId)>,
}

impl Book {
    /// Adds a sequenced bid.
    pub(crate) fn insert(&mut self, bid: BookBid) {
        self.bids.push(bid);
    }

    /// Withdraws a bid (its escrow was released by the cancel).
    pub(crate) fn cancel(&mut self, agent: AgentId, bid: BidId) {
        self.cancelled.insert((agent, bid));
    }

    /// Takes every pending bid out for a cycle, dropping the cancelled ones.
    pub(crate) fn take(&mut self) -> Vec<BookBid> {
        let mut bids = std::mem::take(&mut self.bids);
        if !self.cancelled.is_empty() {
            let cancelled = std::mem::take(&mut self.cancelled);
            bids.retain(|b| !cancelled.contains(&(b.agent.clone(), b.id.clone())));
        }
        bids
    }

    /// Puts back the bids that stay for another cycle, `retained` in acceptance order: ahead of
    /// every bid sequenced since the cycle's cut, all of which were accepted after them.
    pub(crate) fn restore(&mut self, mut retained: Vec<BookBid>) {
        debug_assert!(retained.is_sorted_by_key(|b| b.order));
        debug_assert!(self.bids.first().is_none_or(|b| retained.last().is_none_or(|r| r.order < b.order)));
        retained.append(&mut self.bids);
        self.bids = retained;
    }

    /// Pending bids in acceptance order, cancelled ones included until the next cut.
    pub(crate) fn bids(&self) -> &[BookBid] {
        &self.bids
    }

    /// Whether a bid was cancelled since the last cut (it is still in [`bids`](Book::bids)).
    pub(crate) fn is_cancelled(&self, agent: &AgentId, bid: &BidId) -> bool {
        self.cancelled.contains(&(agent.clone(), bid.clone()))
    }

    /// Pending bids.
    pub(crate) fn len(&self) -> usize {
        self.bids.len() - self.cancelled.len().min(self.bids.len())
    }
}
