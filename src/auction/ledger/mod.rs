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
mod writer;

use accounts::Accounts;
use ids::{Body, Id, IdTable, Inserted, State};

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

/// Book and id-table room a batch part reserved at once, so its producers touch those shared
/// counters once per part, not once per bid. What is left is given back when the part ends.
#[derive(Debug, Default)]
struct Reserved {
    /// Live bids of the book not yet taken by an item.
    book: usize,
    /// Id inserts not yet made.
    ids: usize,
}

/// What booking a bid came to.
enum Booked {
    /// Its answer.
    Answered(Result<Admitted, Rejection>),
    /// The id table is full: the bid comes back, what it took given back.
    Full(Admission),
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

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::new()
    }
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

    /// Books a checked bid: the per-agent and book limits and the escrow by compare-and-swap,
    /// then its ticket and its id; a repeat gives back what it took and answers with the first
    /// result.
    pub(crate) fn admit(&self, intake: &Intake, a: Admission, help: Help<'_>) -> Result<Admitted, Rejection> {
        let mut a = a;
        loop {
            // Taken before the ticket (see the module documentation).
            let mut reserved = Reserved::default();
            let refusal = self.take(intake, &a, &mut reserved);
            let mut claim = self.claim(intake, 1, help);
            match self.book(intake, &mut claim, a, refusal, &mut reserved) {
                Booked::Answered(answer) => return answer,
                Booked::Full(back) => {
                    drop(claim);
                    help(Need::Rebuild);
                    a = back;
                }
            }
        }
    }

    /// Takes what `a` needs: a live bid of its agent's, its escrow, a live bid of the book's;
    /// or, when one is short, gives back what it took and says why, in the order refusals are
    /// reported.
    fn take(&self, intake: &Intake, a: &Admission, reserved: &mut Reserved) -> Option<Rejection> {
        let account = self.accounts.get(a.bid.account);
        let limit = a.bid.limit.micros();
        if let Err(live) = account.reserve_live(a.max_bids) {
            return Some(reject(
                RejectCode::TooManyBids,
                format!("agent `{}` already holds {live} live bids", a.bid.agent),
            ));
        }
        if let Err(available) = account.debit(limit) {
            account.live.fetch_sub(1, Ordering::AcqRel);
            return Some(reject(
                RejectCode::InsufficientCredits,
                format!("limit {} exceeds available {}", a.bid.limit, Credits::from_micros(available)),
            ));
        }
        if reserved.book > 0 {
            reserved.book -= 1;
        } else if !intake.reserve_live(a.book_size) {
            self.give_back(intake, a, false);
            return Some(reject(RejectCode::BookFull, format!("the book holds {} live bids", a.book_size)));
        }
        None
    }

    /// Gives back what [`take`](Ledger::take) took for a bid not booked after all: its agent's
    /// live bid and its escrow, and the book's live bid when `book` (credits added: after the
    /// ticket, or with none).
    fn give_back(&self, intake: &Intake, a: &Admission, book: bool) {
        let account = self.accounts.get(a.bid.account);
        account.available.fetch_add(a.bid.limit.micros(), Ordering::AcqRel);
        account.live.fetch_sub(1, Ordering::AcqRel);
        if book {
            intake.release_live(1);
        }
    }

    /// Books `a` (which took what it needs unless `refusal`) under the claim's next ticket, or
    /// records its refusal; a repeated id gives back what it took. `Err` hands `a` back, with
    /// what it took given back, when the id table must be rebuilt first.
    fn book(
        &self,
        intake: &Intake,
        claim: &mut Claim<'_>,
        a: Admission,
        refusal: Option<Rejection>,
        reserved: &mut Reserved,
    ) -> Booked {
        let number = a.bid.account;
        let limit = a.bid.limit.micros();
        let ids = self.ids();
        let Some(r) = refusal else {
            let body = Body { account: number, bid: a.bid.id.clone(), limit, refusal: None };
            let state = State::Pending { accepted: claim.ticket() };
            let inserted =
                if reserved.ids > 0 { ids.insert_reserved(body, state) } else { ids.insert(body, state) };
            return match inserted {
                Inserted::New(_) => {
                    reserved.ids = reserved.ids.saturating_sub(1);
                    self.accounts.get(number).escrowed.fetch_add(limit, Ordering::AcqRel);
                    claim.put(Entry::Accepted(a.bid));
                    Booked::Answered(Ok(Admitted::New))
                }
                Inserted::Repeat(first) => {
                    self.give_back(intake, &a, true);
                    Booked::Answered(first_result(first))
                }
                Inserted::Full(_) => {
                    self.give_back(intake, &a, true);
                    Booked::Full(a)
                }
            };
        };
        let cycle = intake.cycle_of(claim.ticket());
        let body =
            Body { account: number, bid: a.bid.id.clone(), limit: 0, refusal: Some(Box::new(r.clone())) };
        match ids.insert(body, State::Refused { cycle }) {
            Inserted::New(_) => {
                let remember = Remember { account: number, bid: a.bid.id.clone(), cycle, refused: true };
                claim.put(rejected_entry(
                    a.bid.id.as_str(),
                    a.bid.agent.as_str(),
                    &r,
                    &a.bid.correlation_id,
                    Some(remember),
                ));
                Booked::Answered(Err(r))
            }
            Inserted::Repeat(first) => Booked::Answered(first_result(first)),
            Inserted::Full(_) => Booked::Full(a),
        }
    }

    /// Records a submit refused by its checks, unless the id was used before (then the first
    /// result answers), and writes its `bid_rejected`.
    pub(crate) fn refuse(&self, intake: &Intake, r: Refusal, help: Help<'_>) -> Result<Admitted, Rejection> {
        let number = self.account_of(&r.agent);
        loop {
            let mut claim = self.claim(intake, 1, help);
            match self.refuse_claimed(intake, &mut claim, number, &r) {
                Some(answer) => return answer,
                None => {
                    drop(claim);
                    help(Need::Rebuild);
                }
            }
        }
    }

    /// As [`refuse`](Ledger::refuse) under the claim's next ticket; `None` when the id table must
    /// be rebuilt first.
    fn refuse_claimed(
        &self,
        intake: &Intake,
        claim: &mut Claim<'_>,
        number: Option<u32>,
        r: &Refusal,
    ) -> Option<Result<Admitted, Rejection>> {
        let Refusal { agent, bid, rejection, correlation_id } = r;
        let remember = match number {
            None => None,
            Some(number) => {
                let cycle = intake.cycle_of(claim.ticket());
                let body = Body {
                    account: number,
                    bid: bid.clone(),
                    limit: 0,
                    refusal: Some(Box::new(rejection.clone())),
                };
                match self.ids().insert(body, State::Refused { cycle }) {
                    Inserted::New(_) => {
                        Some(Remember { account: number, bid: bid.clone(), cycle, refused: true })
                    }
                    Inserted::Repeat(first) => return Some(first_result(first)),
                    Inserted::Full(_) => return None,
                }
            }
        };
        claim.put(rejected_entry(bid.as_str(), agent.as_str(), rejection, correlation_id, remember));
        Some(Err(rejection.clone()))
    }

    /// Admits or refuses a batch, in order: what each item needs is taken first, then the
    /// batch's tickets are claimed at once, so the items keep their order and producers touch
    /// the shared ticket counter once per batch, not once per bid. A batch larger than the
    /// intake ring goes in parts.
    pub(crate) fn batch(
        &self,
        intake: &Intake,
        items: Vec<Result<Admission, Refusal>>,
        help: Help<'_>,
    ) -> Vec<Result<Admitted, Rejection>> {
        let part = (intake.slots() / 2).max(1);
        let mut answers = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        let mut taken: Vec<(Result<Admission, Refusal>, Option<Rejection>)> = Vec::new();
        while items.peek().is_some() {
            let part: Vec<Result<Admission, Refusal>> = items.by_ref().take(part).collect();
            let admissions = part.iter().filter(|i| i.is_ok()).count();
            let mut reserved = Reserved::default();
            if let Some(Ok(a)) = part.iter().find(|i| i.is_ok())
                && intake.reserve_live_n(admissions, a.book_size)
            {
                reserved.book = admissions;
            }
            taken.extend(part.into_iter().map(|item| {
                let refusal = match &item {
                    Ok(a) => self.take(intake, a, &mut reserved),
                    Err(_) => None,
                };
                (item, refusal)
            }));
            intake.release_live(std::mem::take(&mut reserved.book));
            // One ticket more than the items: the table cannot be rebuilt under the part until
            // it is written, after the unused reservation is given back.
            let mut claim = self.claim(intake, taken.len() + 1, help);
            let ids = self.ids();
            if ids.reserve(admissions) {
                reserved.ids = admissions;
            }
            let mut rebuilt = false;
            let mut taken = taken.drain(..);
            while let Some((item, refusal)) = taken.next() {
                let answer = match item {
                    Ok(a) => match self.book(intake, &mut claim, a, refusal, &mut reserved) {
                        Booked::Answered(answer) => Ok(answer),
                        Booked::Full(a) => Err(Ok(a)),
                    },
                    Err(r) => {
                        let number = self.account_of(&r.agent);
                        self.refuse_claimed(intake, &mut claim, number, &r).ok_or(Err(r))
                    }
                };
                match answer {
                    Ok(answer) => answers.push(answer),
                    Err(item) => {
                        // The id table is full: what the rest took is given back, and each goes
                        // on its own once the table is rebuilt.
                        let rest: Vec<Result<Admission, Refusal>> = std::iter::once(item)
                            .chain(taken.by_ref().map(|(item, refusal)| {
                                if let (Ok(a), None) = (&item, &refusal) {
                                    self.give_back(intake, a, true);
                                }
                                item
                            }))
                            .collect();
                        ids.unreserve(std::mem::take(&mut reserved.ids));
                        drop(claim);
                        // From here the table `ids` points to may be gone: not used again.
                        rebuilt = true;
                        help(Need::Rebuild);
                        for item in rest {
                            answers.push(match item {
                                Ok(a) => self.admit(intake, a, help),
                                Err(r) => self.refuse(intake, r, help),
                            });
                        }
                        break;
                    }
                }
            }
            if !rebuilt {
                ids.unreserve(reserved.ids);
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
