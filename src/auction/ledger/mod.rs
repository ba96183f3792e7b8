//! The ledger: accounts with available and escrowed credits, and the ids each agent has used,
//! changed by producers on any thread without a lock.
//!
//! - **Escrow by compare-and-swap.** A bid's limit leaves `available` by one compare-and-swap
//!   that refuses to go below zero, so no interleaving overdraws an account.
//! - **Ids in a lock-free table** ([`ids`]): the first insert of an id wins; a repeat finds it
//!   and is answered with its first result.
//! - **The order of events.** Every operation claims an intake ticket, its place in the event
//!   stream. An operation that takes credits from an account (an escrow, a transfer out) does so
//!   *before* it claims its ticket, one that adds credits (a deposit, a transfer in, a release)
//!   *after*. So whatever an operation's success depended on has a lower ticket, and a replay of
//!   the events in ticket order never finds an account short (the proof is in
//!   docs/performance.md, *Intake*).
//!
//! Credits are conserved exactly: `available + escrowed (over all accounts) + burned =
//! deposits`, where pool settlement is a credit to the pool account (exact at quiescence; an
//! escrow is two atomic steps).
#![allow(unsafe_code)] // The id table behind one pointer, replaced only with intake closed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::book::BookBid;
use super::error::{RejectCode, Rejection};
use super::ids::{AgentId, BidId};
use super::intake::{Claim, Entry, Full, Intake, Remember};
use super::money::Credits;

mod accounts;
pub(crate) mod ids;
mod state;
mod submit;
mod writer;

use accounts::Accounts;
use ids::{Id, IdTable, State};

/// An agent's credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Free to bid or transfer.
    pub available: Credits,
    /// Held for live bids.
    pub escrowed: Credits,
}

/// Ledger totals; `available + escrowed + burned == deposits` always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Sum of available credits over all accounts (the pool account included).
    pub available: Credits,
    /// Sum of escrowed credits.
    pub escrowed: Credits,
    /// Credits destroyed by `burn` settlement.
    pub burned: Credits,
    /// Credits ever deposited.
    pub deposits: Credits,
}

/// What a submit that passed every check hands the ledger.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) bid: BookBid,
    pub(crate) max_bids: u32,
    pub(crate) book_size: usize,
}

/// A submit refused by its checks, before the ledger looked: who, which id, why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) agent: AgentId,
    pub(crate) bid: BidId,
    pub(crate) rejection: Rejection,
    pub(crate) correlation_id: Option<Arc<str>>,
}

/// How a bid leaves escrow at the end of a cycle.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Release {
    /// Won: `payment` leaves escrow, the rest returns.
    Won { payment: Credits },
    /// Lost for good, expired: everything returns.
    Returned,
}

/// What a producer needs done before it can go on, with nothing of its own held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// The intake ring is full: sequence what is in it (the market's `flush`).
    Room,
    /// The id table is full: rebuild it, with intake closed ([`Ledger::rebuild_ids`]).
    Rebuild,
}

/// What a producer calls when it needs something done (see [`Need`]).
pub(crate) type Help<'a> = &'a mut dyn FnMut(Need);

/// The ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
    accounts: Accounts,
    /// The id table; replaced only by [`rebuild_ids`](Ledger::rebuild_ids).
    ids: AtomicPtr<IdTable>,
    /// Ids to forget, oldest first. The writer's alone.
    forget: Mutex<VecDeque<Remember>>,
    deposits: AtomicU64,
    burned: AtomicU64,
}

fn reject(code: RejectCode, message: String) -> Rejection {
    Rejection::new(code, message)
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::into_raw` and no one else can hold the table now.
        drop(unsafe { Box::from_raw(*self.ids.get_mut()) });
    }
}

impl Ledger {
    pub(crate) fn new() -> Ledger {
        Ledger {
            accounts: Accounts::new(),
            ids: AtomicPtr::new(Box::into_raw(Box::new(IdTable::new(ids::MIN_SLOTS)))),
            forget: Mutex::new(VecDeque::new()),
            deposits: AtomicU64::new(0),
            burned: AtomicU64::new(0),
        }
    }

    /// The id table.
    fn ids(&self) -> &IdTable {
        // SAFETY: the table is replaced (and the old one dropped) only by `rebuild_ids`, whose
        // caller guarantees that no producer is inside the table (intake closed: every
        // operation that claimed a ticket before has written its entry and left) and that no
        // writer-side reader runs (the engine is locked); every other reference lives within one
        // operation.
        unsafe { &*self.ids.load(Ordering::Acquire) }
    }

    /// Rebuilds the id table if it is full (dropping forgotten ids, doubling it if it must),
    /// with intake closed meanwhile: producers that claimed a ticket before the close have left
    /// the table, those claiming one after wait. `room` sequences the ring when it is too full
    /// to close.
    ///
    /// # Safety
    ///
    /// No other thread uses the ledger as the writer does (settlement, forgetting, sequencing,
    /// snapshots, replay) meanwhile: the market holds its engine locked.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn rebuild_ids(&self, intake: &Intake, room: impl FnMut()) {
        if !self.ids().is_full() {
            return;
        }
        intake.close(room);
        let old = self.ids.load(Ordering::Acquire);
        // SAFETY: intake is closed, so no producer holds a reference into the table, and the
        // caller keeps the writer's side away; the table came from `Box::into_raw`.
        let rebuilt = unsafe { Box::from_raw(old) }.rebuilt();
        self.ids.store(Box::into_raw(Box::new(rebuilt)), Ordering::Release);
        intake.open();
    }

    /// The number of `agent`'s account, if it has one.
    pub(crate) fn account_of(&self, agent: &AgentId) -> Option<u32> {
        self.accounts.find(agent.as_str())
    }

    /// Claims `n` tickets; asks for room while the ring is full, waits while intake is closed.
    fn claim<'a>(&self, intake: &'a Intake, n: usize, help: Help<'_>) -> Claim<'a> {
        loop {
            match intake.claim(n) {
                Ok(claim) if intake.is_closed(claim.ticket()) => {
                    drop(claim);
                    intake.wait_open();
                }
                Ok(claim) => return claim,
                Err(Full) => help(Need::Room),
            }
        }
    }

    /// Writes an entry that belongs to no account (a payload too malformed to name one).
    pub(crate) fn note(&self, intake: &Intake, entry: Entry, help: Help<'_>) {
        self.claim(intake, 1, help).put(entry);
    }

    /// Withdraws a pending bid and releases its escrow. A bid in the cycle being cleared waits
    /// for that cycle's outcome first.
    pub(crate) fn cancel(
        &self,
        intake: &Intake,
        (agent, bid): (&AgentId, &BidId),
        correlation_id: &Option<Arc<str>>,
        help: Help<'_>,
    ) -> Result<(), Rejection> {
        let number = self.account_of(agent);
        loop {
            let mut claim = self.claim(intake, 1, help);
            let found = number.and_then(|n| self.ids().find(n, bid.as_str()).map(|id| (n, id)));
            let refusal = match found.map(|(n, id)| (n, id, id.state())) {
                Some((_, _, State::Pending { accepted })) if intake.is_frozen(accepted, claim.ticket()) => {
                    drop(claim);
                    intake.wait_thaw();
                    continue;
                }
                Some((n, id, pending @ State::Pending { .. })) => {
                    let cycle = intake.cycle_of(claim.ticket());
                    if !id.change(pending, State::Decided { cycle }) {
                        // Another cancel decided it first: ask again.
                        continue;
                    }
                    let limit = id.body().limit;
                    let account = self.accounts.get(n);
                    account.escrowed.fetch_sub(limit, Ordering::AcqRel);
                    account.available.fetch_add(limit, Ordering::AcqRel);
                    account.live.fetch_sub(1, Ordering::AcqRel);
                    intake.release_live(1);
                    claim.put(Entry::Cancelled {
                        agent: agent.clone(),
                        bid: bid.clone(),
                        correlation_id: correlation_id.clone(),
                        remember: Some(Remember { account: n, bid: bid.clone(), cycle, refused: false }),
                    });
                    return Ok(());
                }
                Some((_, _, State::Decided { .. })) => {
                    reject(RejectCode::NotPending, format!("bid `{bid}` of `{agent}` is no longer pending"))
                }
                Some((_, _, State::Refused { .. })) | None => {
                    reject(RejectCode::NotFound, format!("agent `{agent}` has no bid `{bid}`"))
                }
            };
            claim.put(rejected_entry(bid.as_str(), agent.as_str(), &refusal, correlation_id, None));
            return Err(refusal);
        }
    }

    /// Adds `amount` to `agent`'s available credits, opening the account if needed.
    pub(crate) fn deposit(
        &self,
        intake: &Intake,
        (agent, amount): (&AgentId, Credits),
        correlation_id: &Option<Arc<str>>,
        help: Help<'_>,
    ) -> Result<(), Rejection> {
        if amount == Credits::ZERO {
            return Err(reject(RejectCode::InvalidAmount, "a deposit is above zero".into()));
        }
        let too_large =
            || reject(RejectCode::InvalidAmount, format!("deposit {amount} overflows the ledger"));
        let mut claim = self.claim(intake, 1, help);
        // Every account holds at most what was deposited, so a deposit that fits in the total
        // fits in any account.
        self.deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_add(amount.micros()))
            .map_err(|_| too_large())?;
        let number = self.accounts.open(agent);
        self.accounts.get(number).credit(amount.micros()).expect("within the deposits");
        claim.put(Entry::Deposited { agent: agent.clone(), amount, correlation_id: correlation_id.clone() });
        Ok(())
    }

    /// Moves `amount` of available credits from `from` to `to`.
    pub(crate) fn transfer(
        &self,
        intake: &Intake,
        (from, to, amount): (&AgentId, &AgentId, Credits),
        correlation_id: &Option<Arc<str>>,
        help: Help<'_>,
    ) -> Result<(), Rejection> {
        if amount == Credits::ZERO {
            return Err(reject(RejectCode::InvalidAmount, "a transfer is above zero".into()));
        }
        let unknown = |a: &AgentId| reject(RejectCode::UnknownAgent, format!("agent `{a}` has no account"));
        let payer = self.account_of(from).ok_or_else(|| unknown(from))?;
        let payee = self.account_of(to).ok_or_else(|| unknown(to))?;
        let insufficient = |available: u64| {
            reject(
                RejectCode::InsufficientCredits,
                format!("transfer of {amount} exceeds available {}", Credits::from_micros(available)),
            )
        };
        let (payer, payee) = (self.accounts.get(payer), self.accounts.get(payee));
        if from == to {
            // To oneself: checked like any transfer, and changes nothing.
            let available = payer.available.load(Ordering::Acquire);
            if available < amount.micros() {
                return Err(insufficient(available));
            }
            self.claim(intake, 1, help).put(transferred(from, to, amount, correlation_id));
            return Ok(());
        }
        // Taken before the ticket, added after it.
        payer.debit(amount.micros()).map_err(insufficient)?;
        let mut claim = self.claim(intake, 1, help);
        payee.credit(amount.micros()).expect("an account holds at most what was deposited");
        claim.put(transferred(from, to, amount, correlation_id));
        Ok(())
    }

    /// Opens `agent`'s account with nothing in it, if it has none.
    pub(crate) fn open(&self, agent: &AgentId) {
        self.accounts.open(agent);
    }

    /// `agent`'s credits, if it has an account.
    pub(crate) fn balance(&self, agent: &AgentId) -> Option<Balance> {
        let account = self.accounts.get(self.account_of(agent)?);
        Some(Balance {
            available: Credits::from_micros(account.available.load(Ordering::Acquire)),
            escrowed: Credits::from_micros(account.escrowed.load(Ordering::Acquire)),
        })
    }

    /// Sums over every account. Exact at quiescence; under concurrent operations each account
    /// is read at a different instant.
    pub(crate) fn totals(&self) -> LedgerTotals {
        let (mut available, mut escrowed) = (0u64, 0u64);
        for (_, a) in self.accounts.iter() {
            available += a.available.load(Ordering::Acquire);
            escrowed += a.escrowed.load(Ordering::Acquire);
        }
        LedgerTotals {
            available: Credits::from_micros(available),
            escrowed: Credits::from_micros(escrowed),
            burned: Credits::from_micros(self.burned.load(Ordering::Acquire)),
            deposits: Credits::from_micros(self.deposits.load(Ordering::Acquire)),
        }
    }
}

fn transferred(from: &AgentId, to: &AgentId, amount: Credits, correlation_id: &Option<Arc<str>>) -> Entry {
    Entry::Transferred { from: from.clone(), to: to.clone(), amount, correlation_id: correlation_id.clone() }
}

/// How a submit was answered when it was not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Booked now.
    New,
    /// The id was used before and was accepted then, its `bid_accepted` at `seq` once
    /// sequenced.
    Repeat { seq: Option<u64> },
}

/// The answer to a repeated id: the first result.
fn first_result(first: Id<'_>) -> Result<Admitted, Rejection> {
    match (first.state(), &first.body().refusal) {
        (State::Refused { .. }, Some(rejection)) => Err((**rejection).clone()),
        _ => Ok(Admitted::Repeat { seq: first.seq() }),
    }
}

fn rejected_entry(
    bid: &str,
    agent: &str,
    r: &Rejection,
    correlation_id: &Option<Arc<str>>,
    remember: Option<Remember>,
) -> Entry {
    Entry::Rejected {
        bid: bid.to_owned(),
        agent: agent.to_owned(),
        rejection: r.clone(),
        correlation_id: correlation_id.clone(),
        remember,
    }
}
