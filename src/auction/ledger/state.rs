//! The ledger as data and back (snapshots), and the ledger side of replaying events: each
//! operation applied as its event records it, without the checks that decided it, but refusing
//! anything the recorded history cannot have done (an overdraft, an unknown account).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::{Account, BidState, Ledger, SHARDS, Shard};
use crate::auction::book::BookBid;
use crate::auction::error::{RejectCode, Rejection};
use crate::auction::ids::{AgentId, BidId};
use crate::auction::intake::Intake;
use crate::auction::money::Credits;
use crate::auction::snapshot::{AccountState, LedgerState, Remembered};

impl Ledger {
    /// The ledger as data, accounts by agent and ids by bid. `shards` are every shard, locked.
    pub(crate) fn export(&self, shards: &[std::sync::MutexGuard<'_, Shard>]) -> LedgerState {
        let mut accounts: Vec<AccountState> = shards
            .iter()
            .flat_map(|s| s.accounts.iter())
            .map(|(agent, a)| {
                let mut bids: Vec<Remembered> = a
                    .bids
                    .iter()
                    .map(|(bid, state)| match state {
                        BidState::Pending { limit, seq, .. } => Remembered::Pending {
                            bid: bid.clone(),
                            limit: Credits::from_micros(*limit),
                            seq: *seq,
                        },
                        BidState::Decided { cycle, seq } => {
                            Remembered::Decided { bid: bid.clone(), cycle: *cycle, seq: *seq }
                        }
                        BidState::Refused { cycle, rejection } => Remembered::Refused {
                            bid: bid.clone(),
                            cycle: *cycle,
                            reason: rejection.code,
                            message: rejection.message.clone(),
                        },
                    })
                    .collect();
                bids.sort_by(|x, y| x.bid().cmp(y.bid()));
                AccountState {
                    agent: agent.clone(),
                    available: Credits::from_micros(a.available),
                    escrowed: Credits::from_micros(a.escrowed),
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
        ledger.deposits.store(state.deposits.micros(), Ordering::Release);
        ledger.burned.store(state.burned.micros(), Ordering::Release);
        let mut pending = 0;
        let mut held = 0u128;
        for a in &state.accounts {
            let mut shard = ledger.lock(ledger.shard_of(&a.agent));
            let mut account = Account {
                available: a.available.micros(),
                escrowed: a.escrowed.micros(),
                ..Account::default()
            };
            let mut escrow = 0u64;
            let mut remembered: Vec<(u64, BidId)> = Vec::new();
            for r in &a.bids {
                let state = match r {
                    Remembered::Pending { limit, seq, .. } => {
                        escrow = escrow.saturating_add(limit.micros());
                        account.live += 1;
                        BidState::Pending { accepted: 0, limit: limit.micros(), seq: *seq }
                    }
                    Remembered::Decided { cycle, seq, bid } => {
                        remembered.push((*cycle, bid.clone()));
                        BidState::Decided { cycle: *cycle, seq: *seq }
                    }
                    Remembered::Refused { cycle, reason, message, bid } => {
                        remembered.push((*cycle, bid.clone()));
                        BidState::Refused {
                            cycle: *cycle,
                            rejection: Rejection::new(*reason, message.clone()),
                        }
                    }
                };
                if account.bids.insert(r.bid().clone(), state).is_some() {
                    return Err(format!("agent `{}` remembers bid `{}` twice", a.agent, r.bid()));
                }
            }
            if escrow != account.escrowed {
                return Err(format!(
                    "agent `{}` escrows {} for pending bids of {}",
                    a.agent,
                    a.escrowed,
                    Credits::from_micros(escrow)
                ));
            }
            pending += account.live as usize;
            held += u128::from(account.available) + u128::from(account.escrowed);
            shard.forget.extend(remembered.into_iter().map(|(cycle, bid)| (cycle, a.agent.clone(), bid)));
            if shard.accounts.insert(a.agent.clone(), account).is_some() {
                return Err(format!("agent `{}` has two accounts", a.agent));
            }
        }
        if held + u128::from(state.burned.micros()) != u128::from(state.deposits.micros()) {
            return Err(format!(
                "accounts hold {held} and {} was burned, but {} was deposited (millionths)",
                state.burned.micros(),
                state.deposits.micros()
            ));
        }
        // Forgetting walks each shard's queue oldest first.
        for index in 0..SHARDS as u16 {
            let mut shard = ledger.lock(index);
            let mut queue: Vec<(u64, AgentId, BidId)> = std::mem::take(&mut shard.forget).into();
            queue.sort();
            shard.forget = VecDeque::from(queue);
        }
        Ok((ledger, pending))
    }

    /// Whether the ledger escrows `bid` as pending, at its limit and seq.
    pub(crate) fn holds_pending(&self, bid: &BookBid) -> bool {
        let shard = self.lock(bid.shard);
        let state = shard.accounts.get(&bid.agent).and_then(|a| a.bids.get(&bid.id));
        matches!(state, Some(BidState::Pending { limit, seq, .. }) if *limit == bid.limit.micros() && *seq == bid.order)
    }

    /// Books `bid` as its `bid_accepted` records it: escrows its limit and remembers its id.
    pub(crate) fn apply_accepted(&self, intake: &Intake, bid: &BookBid) -> Result<(), String> {
        let mut shard = self.lock(bid.shard);
        let account = shard
            .accounts
            .get_mut(&bid.agent)
            .ok_or_else(|| format!("agent `{}` has no account", bid.agent))?;
        let limit = bid.limit.micros();
        if account.available < limit {
            return Err(format!("agent `{}` cannot escrow {}", bid.agent, bid.limit));
        }
        if account.bids.contains_key(&bid.id) {
            return Err(format!("bid `{}` of `{}` was used before", bid.id, bid.agent));
        }
        account.bids.insert(
            bid.id.clone(),
            BidState::Pending { accepted: intake.booked_now(), limit, seq: bid.order },
        );
        account.available -= limit;
        account.escrowed += limit;
        account.live += 1;
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
        let mut shard = self.lock(self.shard_of(&agent));
        let shard = &mut *shard;
        let Some(account) = shard.accounts.get_mut(&agent) else { return };
        if account.bids.contains_key(&bid) {
            return;
        }
        let cycle = intake.started();
        account.bids.insert(bid.clone(), BidState::Refused { cycle, rejection: rejection.clone() });
        shard.forget.push_back((cycle, agent, bid));
    }

    /// Withdraws a pending bid as its `bid_cancelled` records it.
    pub(crate) fn apply_cancelled(
        &self,
        intake: &Intake,
        agent: &AgentId,
        bid: &BidId,
    ) -> Result<(), String> {
        let mut shard = self.lock(self.shard_of(agent));
        let shard = &mut *shard;
        let account =
            shard.accounts.get_mut(agent).ok_or_else(|| format!("agent `{agent}` has no account"))?;
        let Some(BidState::Pending { limit, seq, .. }) = account.bids.get(bid).cloned() else {
            return Err(format!("bid `{bid}` of `{agent}` is not pending"));
        };
        account.escrowed -= limit;
        account.available += limit;
        account.live -= 1;
        let cycle = intake.started();
        account.bids.insert(bid.clone(), BidState::Decided { cycle, seq });
        shard.forget.push_back((cycle, agent.clone(), bid.clone()));
        intake.release_live(1);
        Ok(())
    }

    /// Credits a deposit as its `credits_deposited` records it.
    pub(crate) fn apply_deposit(&self, agent: &AgentId, amount: Credits) -> Result<(), String> {
        let mut shard = self.lock(self.shard_of(agent));
        let account = shard.accounts.entry(agent.clone()).or_default();
        account.available =
            account.available.checked_add(amount.micros()).ok_or_else(|| format!("`{agent}` overflows"))?;
        self.deposits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_add(amount.micros()))
            .map_err(|_| "deposits overflow".to_owned())?;
        Ok(())
    }

    /// Moves credits as a `credits_transferred` outside a cycle records it.
    pub(crate) fn apply_transfer(&self, from: &AgentId, to: &AgentId, amount: Credits) -> Result<(), String> {
        let (a, b) = (self.shard_of(from), self.shard_of(to));
        let lo = a.min(b);
        let mut first = self.lock(lo);
        let mut second = (a != b).then(|| self.lock(a.max(b)));
        if !super::pick(b == lo, &mut first, &mut second).accounts.contains_key(to) {
            return Err(format!("agent `{to}` has no account"));
        }
        let payer = super::pick(a == lo, &mut first, &mut second)
            .accounts
            .get_mut(from)
            .ok_or_else(|| format!("agent `{from}` has no account"))?;
        if payer.available < amount.micros() {
            return Err(format!("agent `{from}` cannot pay {amount}"));
        }
        if from != to {
            payer.available -= amount.micros();
            let payee = super::pick(b == lo, &mut first, &mut second).accounts.get_mut(to);
            payee.expect("checked above").available += amount.micros();
        }
        Ok(())
    }
}
