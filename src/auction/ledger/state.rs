//! The ledger as data and back (snapshots), and the ledger side of replaying events: each
//! operation applied as its event records it, without the checks that decided it, but refusing
//! anything the recorded history cannot have done (an overdraft, an unknown account).
#![allow(unsafe_code)] // The id table's rebuild, by the writer alone.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::ids::{Body, IdTable, Inserted, State};
use super::{Ledger, Remember};
use crate::auction::book::BookBid;
use crate::auction::error::{RejectCode, Rejection};
use crate::auction::ids::{AgentId, BidId};
use crate::auction::intake::Intake;
use crate::auction::money::Credits;
use crate::auction::snapshot::{AccountState, LedgerState, Remembered};

impl Ledger {
    /// The ledger as data, accounts by agent and ids by bid. Call with intake closed and the
    /// engine locked (nothing changes meanwhile).
    pub(crate) fn export(&self) -> LedgerState {
        let mut bids: Vec<Vec<Remembered>> = (0..self.accounts.len()).map(|_| Vec::new()).collect();
        for id in self.ids().iter() {
            let body = id.body();
            let bid = body.bid.clone();
            bids[body.account as usize].push(match (id.state(), &body.refusal) {
                (State::Pending { .. }, _) => Remembered::Pending {
                    bid,
                    limit: Credits::from_micros(body.limit),
                    seq: id.seq().unwrap_or(0),
                },
                (State::Decided { cycle }, _) => {
                    Remembered::Decided { bid, cycle, seq: id.seq().unwrap_or(0) }
                }
                (State::Refused { cycle }, refusal) => {
                    let r = refusal.as_deref().expect("a refused id keeps its refusal");
                    Remembered::Refused { bid, cycle, reason: r.code, message: r.message.clone() }
                }
            });
        }
        let mut accounts: Vec<AccountState> = self
            .accounts
            .iter()
            .zip(bids)
            .map(|((_, a), mut bids)| {
                bids.sort_by(|x, y| x.bid().cmp(y.bid()));
                AccountState {
                    agent: a.agent().clone(),
                    available: Credits::from_micros(a.available.load(Ordering::Acquire)),
                    escrowed: Credits::from_micros(a.escrowed.load(Ordering::Acquire)),
                    bids,
                }
            })
            .collect();
        accounts.sort_by(|x, y| x.agent.cmp(&y.agent));
        LedgerState {
            deposits: Credits::from_micros(self.deposits.load(Ordering::Acquire)),
            burned: Credits::from_micros(self.burned.load(Ordering::Acquire)),
            accounts,
        }
    }

    /// A ledger holding `state`, its pending bids accepted before every intake ticket; the
    /// number of pending bids. Checks that every account's escrow is its pending limits and that
    /// credits are conserved.
    pub(crate) fn import(state: &LedgerState) -> Result<(Ledger, usize), String> {
        let ledger = Ledger::new();
        let remembered: usize = state.accounts.iter().map(|a| a.bids.len()).sum();
        // SAFETY: the ledger is this function's alone.
        unsafe {
            let old =
                ledger.ids.swap(Box::into_raw(Box::new(IdTable::new(remembered * 2))), Ordering::AcqRel);
            drop(Box::from_raw(old));
        }
        ledger.deposits.store(state.deposits.micros(), Ordering::Release);
        ledger.burned.store(state.burned.micros(), Ordering::Release);
        let mut pending = 0;
        let mut held = 0u128;
        let mut forget: Vec<Remember> = Vec::new();
        for a in &state.accounts {
            if ledger.account_of(&a.agent).is_some() {
                return Err(format!("agent `{}` has two accounts", a.agent));
            }
            let number = ledger.accounts.open(&a.agent);
            let account = ledger.accounts.get(number);
            account.available.store(a.available.micros(), Ordering::Release);
            account.escrowed.store(a.escrowed.micros(), Ordering::Release);
            let mut escrow = 0u64;
            for r in &a.bids {
                let (body, state, seq) = match r {
                    Remembered::Pending { limit, seq, bid } => {
                        escrow = escrow.saturating_add(limit.micros());
                        account.live.fetch_add(1, Ordering::AcqRel);
                        let body =
                            Body { account: number, bid: bid.clone(), limit: limit.micros(), refusal: None };
                        (body, State::Pending { accepted: 0 }, *seq)
                    }
                    Remembered::Decided { cycle, seq, bid } => {
                        forget.push(Remember {
                            account: number,
                            bid: bid.clone(),
                            cycle: *cycle,
                            refused: false,
                        });
                        let body = Body { account: number, bid: bid.clone(), limit: 0, refusal: None };
                        (body, State::Decided { cycle: *cycle }, *seq)
                    }
                    Remembered::Refused { cycle, reason, message, bid } => {
                        forget.push(Remember {
                            account: number,
                            bid: bid.clone(),
                            cycle: *cycle,
                            refused: true,
                        });
                        let refusal = Some(Box::new(Rejection::new(*reason, message.clone())));
                        let body = Body { account: number, bid: bid.clone(), limit: 0, refusal };
                        (body, State::Refused { cycle: *cycle }, 0)
                    }
                };
                match ledger.ids().insert(body, state) {
                    Inserted::New(id) => id.set_seq(seq),
                    Inserted::Repeat(_) => {
                        return Err(format!("agent `{}` remembers bid `{}` twice", a.agent, r.bid()));
                    }
                    Inserted::Full(_) => unreachable!("the table was made for every remembered id"),
                }
            }
            if escrow != a.escrowed.micros() {
                return Err(format!(
                    "agent `{}` escrows {} for pending bids of {}",
                    a.agent,
                    a.escrowed,
                    Credits::from_micros(escrow)
                ));
            }
            pending += account.live.load(Ordering::Acquire) as usize;
            held += u128::from(a.available.micros()) + u128::from(a.escrowed.micros());
        }
        if held + u128::from(state.burned.micros()) != u128::from(state.deposits.micros()) {
            return Err(format!(
                "accounts hold {held} and {} was burned, but {} was deposited (millionths)",
                state.burned.micros(),
                state.deposits.micros()
            ));
        }
        // Forgetting walks the queue oldest first.
        forget.sort_by_key(|r| r.cycle);
        *ledger.forget.lock().unwrap_or_else(|e| e.into_inner()) = VecDeque::from(forget);
        Ok((ledger, pending))
    }

    /// Whether the ledger escrows `bid` as pending, at its limit and seq.
    pub(crate) fn holds_pending(&self, bid: &BookBid) -> bool {
        let id = self.ids().find(bid.account, bid.id.as_str());
        id.is_some_and(|id| {
            matches!(id.state(), State::Pending { .. })
                && id.body().limit == bid.limit.micros()
                && id.seq() == Some(bid.order)
        })
    }

    /// Inserts a replayed id, rebuilding a full table first (the writer alone runs a replay);
    /// `None` when the id is remembered already.
    fn insert_replayed(&self, intake: &Intake, body: Body, state: State) -> Option<super::ids::Id<'_>> {
        let mut body = body;
        loop {
            match self.ids().insert(body, state) {
                Inserted::New(id) => return Some(id),
                Inserted::Repeat(_) => return None,
                Inserted::Full(back) => {
                    // SAFETY: a replay is the writer, with the engine locked, and no intake runs
                    // on a replaying market.
                    unsafe { self.rebuild_ids(intake, || {}) };
                    body = back;
                }
            }
        }
    }

    /// Books `bid` as its `bid_accepted` records it: escrows its limit and remembers its id.
    pub(crate) fn apply_accepted(&self, intake: &Intake, bid: &BookBid) -> Result<(), String> {
        let account = self.accounts.get(bid.account);
        let limit = bid.limit.micros();
        if self.ids().find(bid.account, bid.id.as_str()).is_some() {
            return Err(format!("bid `{}` of `{}` was used before", bid.id, bid.agent));
        }
        account.debit(limit).map_err(|_| format!("agent `{}` cannot escrow {}", bid.agent, bid.limit))?;
        let body = Body { account: bid.account, bid: bid.id.clone(), limit, refusal: None };
        let id = self
            .insert_replayed(intake, body, State::Pending { accepted: intake.booked_now() })
            .expect("checked above");
        id.set_seq(bid.order);
        account.escrowed.fetch_add(limit, Ordering::AcqRel);
        account.live.fetch_add(1, Ordering::AcqRel);
        intake.reserve_live(usize::MAX);
        Ok(())
    }

    /// Remembers a refused submit as live intake does: under a valid agent with an account and
    /// a valid id not used before. Refused cancels (`not_found`, `not_pending`) are not
    /// remembered.
    pub(crate) fn apply_rejected(&self, intake: &Intake, bid: &str, agent: &str, rejection: &Rejection) {
        if matches!(rejection.code, RejectCode::NotFound | RejectCode::NotPending) {
            return;
        }
        let (Ok(agent), Ok(bid)) = (AgentId::new(agent), BidId::new(bid)) else { return };
        let Some(number) = self.account_of(&agent) else { return };
        let cycle = intake.started();
        let body =
            Body { account: number, bid: bid.clone(), limit: 0, refusal: Some(Box::new(rejection.clone())) };
        if self.insert_replayed(intake, body, State::Refused { cycle }).is_some() {
            self.remember([Remember { account: number, bid, cycle, refused: true }]);
        }
    }

    /// Withdraws a pending bid as its `bid_cancelled` records it.
    pub(crate) fn apply_cancelled(
        &self,
        intake: &Intake,
        agent: &AgentId,
        bid: &BidId,
    ) -> Result<(), String> {
        let number = self.account_of(agent).ok_or_else(|| format!("agent `{agent}` has no account"))?;
        let id = self.ids().find(number, bid.as_str());
        let Some(id) = id.filter(|id| matches!(id.state(), State::Pending { .. })) else {
            return Err(format!("bid `{bid}` of `{agent}` is not pending"));
        };
        let limit = id.body().limit;
        let account = self.accounts.get(number);
        account.escrowed.fetch_sub(limit, Ordering::AcqRel);
        account.available.fetch_add(limit, Ordering::AcqRel);
        account.live.fetch_sub(1, Ordering::AcqRel);
        let cycle = intake.started();
        id.set(State::Decided { cycle });
        self.remember([Remember { account: number, bid: bid.clone(), cycle, refused: false }]);
        intake.release_live(1);
        Ok(())
    }

    /// Credits a deposit as its `credits_deposited` records it.
    pub(crate) fn apply_deposit(&self, agent: &AgentId, amount: Credits) -> Result<(), String> {
        self.deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_add(amount.micros()))
            .map_err(|_| "deposits overflow".to_owned())?;
        let number = self.accounts.open(agent);
        self.accounts.get(number).credit(amount.micros()).map_err(|_| format!("`{agent}` overflows"))
    }

    /// Moves credits as a `credits_transferred` outside a cycle records it.
    pub(crate) fn apply_transfer(&self, from: &AgentId, to: &AgentId, amount: Credits) -> Result<(), String> {
        let payee = self.account_of(to).ok_or_else(|| format!("agent `{to}` has no account"))?;
        let payer = self.account_of(from).ok_or_else(|| format!("agent `{from}` has no account"))?;
        if from == to {
            let available = self.accounts.get(payer).available.load(Ordering::Acquire);
            return if available < amount.micros() {
                Err(format!("agent `{from}` cannot pay {amount}"))
            } else {
                Ok(())
            };
        }
        self.accounts
            .get(payer)
            .debit(amount.micros())
            .map_err(|_| format!("agent `{from}` cannot pay {amount}"))?;
        self.accounts.get(payee).credit(amount.micros()).map_err(|_| format!("`{to}` overflows"))
    }
}
