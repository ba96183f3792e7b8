//! What the writer does to the ledger: settling a cycle's bids, forgetting old ids, and recording
//! the `seq` each accepted bid got when it was sequenced.

use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::ids::State;
use super::{Ledger, Release, Remember};
use crate::auction::book::BookBid;
use crate::auction::ids::{AgentId, BidId};
use crate::auction::intake::Intake;

/// Bids settled per task on the clearing threads.
const SETTLE_PART: usize = 4096;

impl Ledger {
    /// Settles the bids leaving the book at the end of cycle `cycle`, in parts on `threads`
    /// threads: each `(bid, release)` leaves escrow, its payment burned or credited to `pool`.
    /// Every change is one atomic add on its account, so the result is the same on any thread
    /// count. The bids are frozen: no producer changes their state meanwhile.
    pub(crate) fn settle(
        &self,
        intake: &Intake,
        releases: &mut [(&BookBid, Release)],
        (cycle, threads): (u64, usize),
        pool: Option<&AgentId>,
    ) {
        let paid: u64 = crate::auction::clearing::pool::install_urgent(threads, || {
            releases.par_chunks(SETTLE_PART).map(|part| self.settle_part(part, cycle)).sum()
        });
        self.remember(releases.iter().map(|(b, _)| Remember {
            account: b.account,
            bid: b.id.clone(),
            cycle,
            refused: false,
        }));
        intake.release_live(releases.len());
        match pool {
            Some(pool) => {
                let number = self.accounts.open(pool);
                self.accounts.get(number).available.fetch_add(paid, Ordering::AcqRel);
            }
            None => {
                self.burned.fetch_add(paid, Ordering::AcqRel);
            }
        }
    }

    /// Settles `part`, bids leaving the book in cycle `cycle`; returns what they paid.
    fn settle_part(&self, part: &[(&BookBid, Release)], cycle: u64) -> u64 {
        let ids = self.ids();
        let mut paid = 0;
        for (bid, release) in part {
            let account = self.accounts.get(bid.account);
            let limit = bid.limit.micros();
            let payment = match release {
                Release::Won { payment } => payment.micros(),
                Release::Returned => 0,
            };
            account.escrowed.fetch_sub(limit, Ordering::AcqRel);
            account.available.fetch_add(limit - payment, Ordering::AcqRel);
            account.live.fetch_sub(1, Ordering::AcqRel);
            paid += payment;
            ids.find(bid.account, bid.id.as_str())
                .expect("a booked bid's id is remembered")
                .set(State::Decided { cycle });
        }
        paid
    }

    /// Queues ids decided or refused, to be forgotten in time (the writer only).
    pub(crate) fn remember(&self, ids: impl IntoIterator<Item = Remember>) {
        self.forget.lock().unwrap_or_else(|e| e.into_inner()).extend(ids);
    }

    /// Forgets ids decided or refused at least `keep` cycles before `cycle`, and never those of
    /// `cycle` itself: an operation racing the end of a cycle records that cycle's number, and
    /// whether it came before or after this pass must not change what is remembered.
    pub(crate) fn forget(&self, cycle: u64, keep: u64) {
        let keep = keep.max(1);
        let ids = self.ids();
        let mut queue = self.forget.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(front) = queue.front() {
            if front.cycle.saturating_add(keep) > cycle {
                break;
            }
            let r = queue.pop_front().expect("front exists");
            let state =
                if r.refused { State::Refused { cycle: r.cycle } } else { State::Decided { cycle: r.cycle } };
            ids.forget(r.account, r.bid.as_str(), state);
        }
    }

    /// Records the `seq` each newly sequenced bid's `bid_accepted` got, so a repeat of its id is
    /// answered with it. `accepted` holds `(account, bid, seq)`.
    pub(crate) fn mark_sequenced(&self, accepted: &[(u32, BidId, u64)]) {
        let ids = self.ids();
        for (account, bid, seq) in accepted {
            if let Some(id) = ids.find(*account, bid.as_str()) {
                id.set_seq(*seq);
            }
        }
    }
}
