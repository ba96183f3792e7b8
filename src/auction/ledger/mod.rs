//! The ledger: accounts with available and escrowed credits, sharded by agent.
//!
//! An agent's account, its live bids and the ids it has used live in one of [`SHARDS`] shards,
//! each behind its own mutex; no lock is shared by all producers. Every operation that changes
//! an account claims its intake ticket and writes its entry before unlocking, so the writer
//! sequences an agent's operations in the order they happened. Credits are conserved exactly:
//! `available + escrowed (over all accounts) + burned = deposits`, where pool settlement is a
//! credit to the pool account.

use std::collections::{VecDeque, hash_map};
use std::hash::BuildHasher;

use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use super::book::BookBid;
use super::error::{RejectCode, Rejection};
use super::ids::{AgentId, BidId};
use super::intake::{Claim, Entry, Full, Intake};
use super::money::Credits;

mod state;
mod writer;

/// Number of ledger shards.
pub(crate) const SHARDS: usize = 64;

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

#[derive(Debug, Default)]
struct Account {
    available: u64,
    escrowed: u64,
    /// Live bids (pending in the book or on their way to it).
    live: u32,
    /// Bids by id: live ones, and decided or refused ones until forgotten.
    bids: HashMap<BidId, BidState>,
}

#[derive(Clone, Debug)]
enum BidState {
    /// In the book, `limit` escrowed; accepted under intake ticket `accepted`, its
    /// `bid_accepted` at `seq` (0 until the writer has sequenced it).
    Pending { accepted: u64, limit: u64, seq: u64 },
    /// Accepted earlier (its `bid_accepted` at `seq`), decided (won, lost, expired, cancelled)
    /// in cycle `cycle`.
    Decided { cycle: u64, seq: u64 },
    /// Refused in cycle `cycle` with `rejection`, the answer to any repeat.
    Refused { cycle: u64, rejection: Rejection },
}

/// One shard: the accounts of the agents that hash to it.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    accounts: HashMap<AgentId, Account>,
    /// Ids to forget, oldest first: (cycle decided, agent, bid).
    forget: VecDeque<(u64, AgentId, BidId)>,
}

impl Shard {
    /// Books a checked bid; its entry, if it makes one, goes under the claim's next ticket.
    fn admit(&mut self, intake: &Intake, claim: &mut Claim<'_>, a: Admission) -> Result<Admitted, Rejection> {
        let shard = self;
        let Some(account) = shard.accounts.get_mut(&a.bid.agent) else {
            let r = reject(RejectCode::UnknownAgent, format!("agent `{}` has no account", a.bid.agent));
            claim.put(rejected_entry(a.bid.id.as_str(), a.bid.agent.as_str(), &r, &a.bid.correlation_id));
            return Err(r);
        };
        // One hash and probe of the id for both the repeat check and the record.
        let slot = match account.bids.entry(a.bid.id.clone()) {
            hash_map::Entry::Occupied(first) => return first_result(first.get()),
            hash_map::Entry::Vacant(slot) => slot,
        };
        let limit = a.bid.limit.micros();
        let refusal = if account.live >= a.max_bids {
            Some(reject(
                RejectCode::TooManyBids,
                format!("agent `{}` already holds {} live bids", a.bid.agent, account.live),
            ))
        } else if account.available < limit {
            Some(reject(
                RejectCode::InsufficientCredits,
                format!(
                    "limit {} exceeds available {}",
                    a.bid.limit,
                    Credits::from_micros(account.available)
                ),
            ))
        } else if !intake.reserve_live(a.book_size) {
            Some(reject(RejectCode::BookFull, format!("the book holds {} live bids", a.book_size)))
        } else {
            None
        };
        if let Some(r) = refusal {
            let cycle = intake.cycle_of(claim.ticket());
            slot.insert(BidState::Refused { cycle, rejection: r.clone() });
            shard.forget.push_back((cycle, a.bid.agent.clone(), a.bid.id.clone()));
            claim.put(rejected_entry(a.bid.id.as_str(), a.bid.agent.as_str(), &r, &a.bid.correlation_id));
            return Err(r);
        }
        slot.insert(BidState::Pending { accepted: claim.ticket(), limit, seq: 0 });
        account.available -= limit;
        account.escrowed += limit;
        account.live += 1;
        claim.put(Entry::Accepted(a.bid));
        Ok(Admitted::New)
    }

    /// Records a refused submit; its entry, if it makes one, goes under the claim's next ticket.
    fn refuse(&mut self, intake: &Intake, claim: &mut Claim<'_>, r: Refusal) -> Result<Admitted, Rejection> {
        let shard = self;
        let Refusal { agent, bid, rejection, correlation_id } = r;
        let cycle = intake.cycle_of(claim.ticket());
        let (agent, bid, correlation_id) = (&agent, &bid, &correlation_id);
        if let Some(account) = shard.accounts.get_mut(agent) {
            if let Some(first) = account.bids.get(bid) {
                return first_result(first);
            }
            account.bids.insert(bid.clone(), BidState::Refused { cycle, rejection: rejection.clone() });
            shard.forget.push_back((cycle, agent.clone(), bid.clone()));
        }
        claim.put(rejected_entry(bid.as_str(), agent.as_str(), &rejection, correlation_id));
        Err(rejection)
    }
}

/// What a producer does when the intake ring is full: sequences what is in it (the market's
/// `flush`), with no shard locked.
pub(crate) type Help<'a> = &'a mut dyn FnMut();

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

/// The sharded ledger.
#[derive(Debug)]
pub(crate) struct Ledger {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Picks an agent's shard; fixed, so the same agent always lands in the same shard.
    hasher: foldhash::fast::FixedState,
    deposits: AtomicU64,
    burned: AtomicU64,
}

fn reject(code: RejectCode, message: String) -> Rejection {
    Rejection::new(code, message)
}

impl Ledger {
    pub(crate) fn new() -> Ledger {
        Ledger {
            shards: (0..SHARDS).map(|_| CachePadded::new(Mutex::new(Shard::default()))).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_cafe),
            deposits: AtomicU64::new(0),
            burned: AtomicU64::new(0),
        }
    }

    /// The shard holding `agent`'s account.
    pub(crate) fn shard_of(&self, agent: &AgentId) -> u16 {
        (self.hasher.hash_one(agent.as_str()) % SHARDS as u64) as u16
    }

    fn lock(&self, shard: u16) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-changed: every operation checks
        // before it writes. So a poisoned lock is still consistent.
        self.shards[usize::from(shard)].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every shard, locked in shard order.
    pub(crate) fn lock_all(&self) -> Vec<MutexGuard<'_, Shard>> {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner())).collect()
    }

    /// Locks `shard` and claims `n` intake tickets with it locked; when the ring is full, asks
    /// for `help` with the shard unlocked and tries again.
    fn lock_claiming<'a>(
        &'a self,
        intake: &'a Intake,
        shard: u16,
        n: usize,
        help: Help<'_>,
    ) -> (MutexGuard<'a, Shard>, Claim<'a>) {
        loop {
            let guard = self.lock(shard);
            match intake.claim(n) {
                Ok(claim) => return (guard, claim),
                Err(Full) => {
                    drop(guard);
                    help();
                }
            }
        }
    }

    /// Notes an entry that belongs to no account (a payload too malformed to name one).
    pub(crate) fn note(&self, intake: &Intake, entry: Entry, help: Help<'_>) {
        let (_shard, mut claim) = self.lock_claiming(intake, 0, 1, help);
        claim.put(entry);
    }

    /// Books a checked bid: dedupe, per-agent and book limits, then escrow, all under the agent's
    /// shard lock, and writes its entry.
    pub(crate) fn admit(&self, intake: &Intake, a: Admission, help: Help<'_>) -> Result<Admitted, Rejection> {
        let (mut shard, mut claim) = self.lock_claiming(intake, a.bid.shard, 1, help);
        shard.admit(intake, &mut claim, a)
    }

    /// Records a submit refused by its checks, unless the id was used before (then the first
    /// result answers), and writes its `bid_rejected`.
    pub(crate) fn refuse(&self, intake: &Intake, r: Refusal, help: Help<'_>) -> Result<Admitted, Rejection> {
        let (mut shard, mut claim) = self.lock_claiming(intake, self.shard_of(&r.agent), 1, help);
        shard.refuse(intake, &mut claim, r)
    }

    /// Admits or refuses a batch, in order, locking each shard involved once (in shard order, so
    /// batches cannot deadlock) and claiming the batch's tickets at once: the items keep their
    /// order, and producers touch the shared ticket counter once per batch, not once per bid. A
    /// batch larger than the intake ring goes in parts.
    pub(crate) fn batch(
        &self,
        intake: &Intake,
        items: Vec<Result<Admission, Refusal>>,
        help: Help<'_>,
    ) -> Vec<Result<Admitted, Rejection>> {
        let shard_of = |item: &Result<Admission, Refusal>| match item {
            Ok(a) => a.bid.shard,
            Err(r) => self.shard_of(&r.agent),
        };
        let part = (intake.slots() / 2).max(1);
        let mut answers = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        let mut order: Vec<u16> = Vec::new();
        let mut wanted: Vec<u16> = Vec::new();
        let mut taken: Vec<Result<Admission, Refusal>> = Vec::new();
        while items.peek().is_some() {
            taken.extend(items.by_ref().take(part));
            order.clear();
            order.extend(taken.iter().map(shard_of));
            wanted.clone_from(&order);
            wanted.sort_unstable();
            wanted.dedup();
            let (mut guards, mut claim) = loop {
                let guards: Vec<MutexGuard<'_, Shard>> = wanted.iter().map(|&k| self.lock(k)).collect();
                match intake.claim(taken.len()) {
                    Ok(claim) => break (guards, claim),
                    Err(Full) => {
                        drop(guards);
                        help();
                    }
                }
            };
            for (item, &k) in taken.drain(..).zip(&order) {
                let shard = &mut *guards[wanted.binary_search(&k).expect("locked above")];
                answers.push(match item {
                    Ok(a) => shard.admit(intake, &mut claim, a),
                    Err(r) => shard.refuse(intake, &mut claim, r),
                });
            }
        }
        answers
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
        let shard_index = self.shard_of(agent);
        loop {
            let (mut guard, mut claim) = self.lock_claiming(intake, shard_index, 1, help);
            let state = guard.accounts.get(agent).and_then(|a| a.bids.get(bid).cloned());
            let refusal = match state {
                Some(BidState::Pending { accepted, .. }) if intake.is_frozen(accepted, claim.ticket()) => {
                    drop(claim);
                    drop(guard);
                    intake.wait_thaw();
                    continue;
                }
                Some(BidState::Pending { limit, seq, .. }) => {
                    let shard = &mut *guard;
                    let account = shard.accounts.get_mut(agent).expect("the bid's account exists");
                    account.escrowed -= limit;
                    account.available += limit;
                    account.live -= 1;
                    let now = intake.cycle_of(claim.ticket());
                    account.bids.insert(bid.clone(), BidState::Decided { cycle: now, seq });
                    shard.forget.push_back((now, agent.clone(), bid.clone()));
                    intake.release_live(1);
                    claim.put(Entry::Cancelled {
                        agent: agent.clone(),
                        bid: bid.clone(),
                        correlation_id: correlation_id.clone(),
                    });
                    return Ok(());
                }
                Some(BidState::Decided { .. }) => {
                    reject(RejectCode::NotPending, format!("bid `{bid}` of `{agent}` is no longer pending"))
                }
                Some(BidState::Refused { .. }) | None => {
                    reject(RejectCode::NotFound, format!("agent `{agent}` has no bid `{bid}`"))
                }
            };
            claim.put(rejected_entry(bid.as_str(), agent.as_str(), &refusal, correlation_id));
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
        let (mut shard, mut claim) = self.lock_claiming(intake, self.shard_of(agent), 1, help);
        let available = shard.accounts.get(agent).map_or(0, |a| a.available);
        let too_large =
            || reject(RejectCode::InvalidAmount, format!("deposit {amount} overflows the ledger"));
        available.checked_add(amount.micros()).ok_or_else(too_large)?;
        self.deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_add(amount.micros()))
            .map_err(|_| too_large())?;
        shard.accounts.entry(agent.clone()).or_default().available += amount.micros();
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
        let (a, b) = (self.shard_of(from), self.shard_of(to));
        // Lock in shard order so two opposite transfers cannot deadlock.
        let lo = a.min(b);
        let (mut first, mut second, mut claim) = loop {
            let first = self.lock(lo);
            let second = (a != b).then(|| self.lock(a.max(b)));
            match intake.claim(1) {
                Ok(claim) => break (first, second, claim),
                Err(Full) => {
                    drop((first, second));
                    help();
                }
            }
        };
        let unknown = |a: &AgentId| reject(RejectCode::UnknownAgent, format!("agent `{a}` has no account"));
        let available =
            pick(a == lo, &mut first, &mut second).accounts.get(from).ok_or_else(|| unknown(from))?.available;
        let received =
            pick(b == lo, &mut first, &mut second).accounts.get(to).ok_or_else(|| unknown(to))?.available;
        // To oneself: checked like any transfer, and changes nothing.
        check_transfer(available, if from == to { 0 } else { received }, amount)?;
        if from != to {
            pick(a == lo, &mut first, &mut second)
                .accounts
                .get_mut(from)
                .expect("checked above")
                .available -= amount.micros();
            pick(b == lo, &mut first, &mut second).accounts.get_mut(to).expect("checked above").available +=
                amount.micros();
        }
        claim.put(Entry::Transferred {
            from: from.clone(),
            to: to.clone(),
            amount,
            correlation_id: correlation_id.clone(),
        });
        Ok(())
    }

    /// Opens `agent`'s account with nothing in it, if it has none.
    pub(crate) fn open(&self, agent: &AgentId) {
        self.lock(self.shard_of(agent)).accounts.entry(agent.clone()).or_default();
    }

    /// `agent`'s credits, if it has an account.
    pub(crate) fn balance(&self, agent: &AgentId) -> Option<Balance> {
        let shard = self.lock(self.shard_of(agent));
        shard.accounts.get(agent).map(|a| Balance {
            available: Credits::from_micros(a.available),
            escrowed: Credits::from_micros(a.escrowed),
        })
    }

    /// Sums over every account. Exact at quiescence; under concurrent operations each shard is
    /// read at a different instant.
    pub(crate) fn totals(&self) -> LedgerTotals {
        let (mut available, mut escrowed) = (0u64, 0u64);
        for index in 0..SHARDS as u16 {
            let shard = self.lock(index);
            for a in shard.accounts.values() {
                available += a.available;
                escrowed += a.escrowed;
            }
        }
        LedgerTotals {
            available: Credits::from_micros(available),
            escrowed: Credits::from_micros(escrowed),
            burned: Credits::from_micros(self.burned.load(Ordering::Acquire)),
            deposits: Credits::from_micros(self.deposits.load(Ordering::Acquire)),
        }
    }
}

/// The first locked shard, or else the second.
fn pick<'a>(
    first: bool,
    a: &'a mut MutexGuard<'_, Shard>,
    b: &'a mut Option<MutexGuard<'_, Shard>>,
) -> &'a mut Shard {
    if first { a } else { b.as_deref_mut().expect("a second shard is locked") }
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
fn first_result(state: &BidState) -> Result<Admitted, Rejection> {
    match state {
        BidState::Refused { rejection, .. } => Err(rejection.clone()),
        BidState::Pending { seq, .. } | BidState::Decided { seq, .. } => {
            Ok(Admitted::Repeat { seq: (*seq > 0).then_some(*seq) })
        }
    }
}

fn check_transfer(available: u64, received: u64, amount: Credits) -> Result<(), Rejection> {
    if available < amount.micros() {
        return Err(reject(
            RejectCode::InsufficientCredits,
            format!("transfer of {amount} exceeds available {}", Credits::from_micros(available)),
        ));
    }
    received.checked_add(amount.micros()).map(|_| ()).ok_or_else(|| {
        reject(RejectCode::InvalidAmount, format!("transfer of {amount} overflows the receiver"))
    })
}

fn rejected_entry(bid: &str, agent: &str, r: &Rejection, correlation_id: &Option<Arc<str>>) -> Entry {
    Entry::Rejected {
        bid: bid.to_owned(),
        agent: agent.to_owned(),
        rejection: r.clone(),
        correlation_id: correlation_id.clone(),
    }
}
