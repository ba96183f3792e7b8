//! What the writer does to the ledger: settling a cycle's bids, forgetting old ids, and recording
//! the `seq` each accepted bid got when it was sequenced.

use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::{BidState, Ledger, Release, SHARDS, Shard};
use crate::auction::book::BookBid;
use crate::auction::ids::{AgentId, BidId};
use crate::auction::intake::Intake;

impl Ledger {
    /// Settles the bids leaving the book at the end of cycle `cycle`, shard by shard and the
    /// shards on `threads` threads: each `(bid, release)` leaves escrow, its payment burned or
    /// credited to `pool`. Shards share nothing, so the result is the same on any thread count.
    pub(crate) fn settle(
        &self,
        intake: &Intake,
        releases: &mut [(&BookBid, Release)],
        (cycle, threads): (u64, usize),
        pool: Option<&AgentId>,
    ) {
        releases.sort_by_key(|(b, _)| b.shard);
        let groups: Vec<&[(&BookBid, Release)]> = releases.chunk_by(|x, y| x.0.shard == y.0.shard).collect();
        let paid: u64 = crate::auction::clearing::pool::install_urgent(threads, || {
            groups.par_iter().map(|group| settle_shard(&mut self.lock(group[0].0.shard), group, cycle)).sum()
        });
        intake.release_live(releases.len());
        match pool {
            Some(pool) => {
                let mut shard = self.lock(self.shard_of(pool));
                shard.accounts.entry(pool.clone()).or_default().available += paid;
            }
            None => {
                self.burned.fetch_add(paid, Ordering::AcqRel);
            }
        }
    }

    /// Forgets ids decided or refused at least `keep` cycles before `cycle`, and never those of
    /// `cycle` itself: an operation racing the end of a cycle records that cycle's number, and
    /// whether it came before or after this pass must not change what is remembered.
    pub(crate) fn forget(&self, cycle: u64, keep: u64) {
        let keep = keep.max(1);
        for index in 0..SHARDS as u16 {
            let mut shard = self.lock(index);
            let shard = &mut *shard;
            while let Some((decided, _, _)) = shard.forget.front() {
                if decided.saturating_add(keep) > cycle {
                    break;
                }
                let (decided, agent, bid) = shard.forget.pop_front().expect("front exists");
                if let Some(account) = shard.accounts.get_mut(&agent) {
                    let stale = match account.bids.get(&bid) {
                        Some(BidState::Decided { cycle, .. } | BidState::Refused { cycle, .. }) => {
                            *cycle == decided
                        }
                        _ => false,
                    };
                    if stale {
                        account.bids.remove(&bid);
                    }
                }
            }
        }
    }

    /// Records the `seq` each newly sequenced bid's `bid_accepted` got, so a repeat of its id is
    /// answered with it. `accepted` holds `(shard, agent, bid, seq)`; each shard is locked once.
    pub(crate) fn mark_sequenced(&self, accepted: &mut [(u16, AgentId, BidId, u64)]) {
        accepted.sort_unstable_by_key(|a| a.0);
        for group in accepted.chunk_by(|x, y| x.0 == y.0) {
            mark(&mut self.lock(group[0].0), group);
        }
    }

    /// As [`mark_sequenced`](Ledger::mark_sequenced), with every shard already locked.
    pub(crate) fn mark_sequenced_in(
        shards: &mut [MutexGuard<'_, Shard>],
        accepted: &[(u16, AgentId, BidId, u64)],
    ) {
        for one in accepted {
            mark(&mut shards[usize::from(one.0)], std::slice::from_ref(one));
        }
    }
}

/// Settles `group`, bids of `shard` leaving the book in cycle `cycle`; returns what they paid.
fn settle_shard(shard: &mut Shard, group: &[(&BookBid, Release)], cycle: u64) -> u64 {
    let mut paid = 0;
    for (bid, release) in group {
        let account = shard.accounts.get_mut(&bid.agent).expect("a booked bid's account exists");
        let limit = bid.limit.micros();
        let payment = match release {
            Release::Won { payment } => payment.micros(),
            Release::Returned => 0,
        };
        account.escrowed -= limit;
        account.available += limit - payment;
        account.live -= 1;
        paid += payment;
        // Remembered as pending since it was booked: overwritten in place, the key kept.
        let state = account.bids.get_mut(&bid.id).expect("a booked bid's id is remembered");
        *state = BidState::Decided { cycle, seq: bid.order };
        shard.forget.push_back((cycle, bid.agent.clone(), bid.id.clone()));
    }
    paid
}

/// Writes the seqs of newly sequenced bids into a shard's remembered ids.
fn mark(shard: &mut Shard, accepted: &[(u16, AgentId, BidId, u64)]) {
    for (_, agent, bid, seq) in accepted {
        let state = shard.accounts.get_mut(agent).and_then(|a| a.bids.get_mut(bid));
        if let Some(BidState::Pending { seq: s, .. } | BidState::Decided { seq: s, .. }) = state {
            *s = *seq;
        }
    }
}
