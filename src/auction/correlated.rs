//! [`Correlated`]: the market's operations under a correlation id, which the events they cause
//! carry. [`Market`]'s own operations are these without one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::bid::{Bid, BidRequest};
use super::book::BookBid;
use super::cycle::CycleReport;
use super::error::{RejectCode, Rejection, Result};
use super::events::EventKind;
use super::ids::{AgentId, BidId};
use super::ledger::{Admission, Admitted, Refusal};
use super::market::{Market, Receipt};
use super::money::Credits;
use crate::capacity::{Capacity, Slot};

/// Market operations whose events carry a correlation id; from [`Market::correlated`].
#[derive(Debug, Clone)]
pub struct Correlated<'a> {
    pub(super) market: &'a Market,
    pub(super) cid: Option<Arc<str>>,
}

impl Correlated<'_> {
    /// As [`Market::submit`].
    ///
    /// # Errors
    ///
    /// As [`Market::submit`].
    pub fn submit(&self, bid: Bid) -> Result<Receipt> {
        let receipt = Receipt { bid: bid.id.clone(), agent: bid.agent.clone(), repeat: false, seq: None };
        let answer = match self.prepare(bid) {
            Ok(admission) => {
                self.market.ledger.admit(&self.market.intake, admission, &mut |n| self.market.help(n))
            }
            Err(refusal) => {
                self.market.ledger.refuse(&self.market.intake, refusal, &mut |n| self.market.help(n))
            }
        };
        answer.map(|a| receipt.answered(a))
    }

    /// As [`Market::submit_batch`].
    pub fn submit_batch(&self, bids: Vec<Bid>) -> Vec<Result<Receipt>> {
        let receipts: Vec<Receipt> = bids
            .iter()
            .map(|b| Receipt { bid: b.id.clone(), agent: b.agent.clone(), repeat: false, seq: None })
            .collect();
        let items = bids.into_iter().map(|b| self.prepare(b)).collect();
        let answers = self.market.ledger.batch(&self.market.intake, items, &mut |n| self.market.help(n));
        answers
            .into_iter()
            .zip(receipts)
            .map(|(answer, receipt)| answer.map(|a| receipt.answered(a)))
            .collect()
    }

    /// Checks a bid against the market and finds its agent's account: what the ledger is asked
    /// to book, or why it is refused.
    fn prepare(&self, bid: Bid) -> Result<Admission, Refusal> {
        let m = self.market;
        let refused = |bid: Bid, rejection| {
            Err(Refusal { agent: bid.agent, bid: bid.id, rejection, correlation_id: self.cid.clone() })
        };
        let checked = match bid.check(&m.config, m.now()) {
            Ok(checked) => checked,
            Err(rejection) => return refused(bid, rejection),
        };
        let Some(account) = m.ledger.account_of(&bid.agent) else {
            let r = Rejection::new(RejectCode::UnknownAgent, format!("agent `{}` has no account", bid.agent));
            return refused(bid, r);
        };
        Ok(Admission {
            bid: BookBid::new(bid, checked, account, self.cid.clone()),
            max_bids: m.config.max_bids_per_agent,
            book_size: m.config.book_size,
        })
    }

    /// As [`Market::submit_request`].
    ///
    /// # Errors
    ///
    /// As [`Market::submit_request`].
    pub fn submit_request(&self, request: &BidRequest) -> Result<Receipt> {
        match request.to_bid(&self.market.config.resources, None) {
            Ok(bid) => self.submit(bid),
            Err(r) => self.refuse_raw(&request.id, request.agent.as_deref().unwrap_or(""), r),
        }
    }

    /// As [`Market::submit_json`].
    ///
    /// # Errors
    ///
    /// As [`Market::submit_json`].
    pub fn submit_json(&self, json: &[u8]) -> Result<Receipt> {
        match BidRequest::from_json(json) {
            Ok(request) => self.submit_request(&request),
            Err(r) => {
                let (id, agent) = readable_names(json);
                self.refuse_raw(id.as_deref().unwrap_or(""), agent.as_deref().unwrap_or(""), r)
            }
        }
    }

    /// Submits a bid given as JSON on behalf of `agent` (authenticated elsewhere, e.g. by a
    /// subject): as [`submit_as`](Correlated::submit_as), and a payload that does not decode is
    /// refused under the id it names, if any, and `agent`.
    ///
    /// # Errors
    ///
    /// As [`Market::submit_as`].
    pub fn submit_json_as(&self, agent: &AgentId, json: &[u8]) -> Result<Receipt> {
        match BidRequest::from_json(json) {
            Ok(request) => self.submit_as(agent, &request),
            Err(r) => {
                let (id, _) = readable_names(json);
                self.refuse_raw(id.as_deref().unwrap_or(""), agent.as_str(), r)
            }
        }
    }

    /// As [`Market::submit_as`].
    ///
    /// # Errors
    ///
    /// As [`Market::submit_as`].
    pub fn submit_as(&self, agent: &AgentId, request: &BidRequest) -> Result<Receipt> {
        if let Some(named) = &request.agent
            && named != agent.as_str()
        {
            let r =
                Rejection::new(RejectCode::Forbidden, format!("agent `{agent}` may not bid for `{named}`"));
            return self.refuse_raw(&request.id, agent.as_str(), r);
        }
        match request.to_bid(&self.market.config.resources, Some(agent)) {
            Ok(bid) => self.submit(bid),
            Err(r) => self.refuse_raw(&request.id, agent.as_str(), r),
        }
    }

    fn refuse_raw(&self, id: &str, agent: &str, r: Rejection) -> Result<Receipt> {
        let m = self.market;
        match (AgentId::new(agent), BidId::new(id)) {
            (Ok(agent), Ok(bid)) => {
                let receipt = Receipt { bid: bid.clone(), agent: agent.clone(), repeat: false, seq: None };
                let refusal = Refusal { agent, bid, rejection: r, correlation_id: self.cid.clone() };
                m.ledger.refuse(&m.intake, refusal, &mut |n| m.help(n)).map(|a| receipt.answered(a))
            }
            _ => {
                let entry = super::intake::Entry::Rejected {
                    bid: id.to_owned(),
                    agent: agent.to_owned(),
                    rejection: r.clone(),
                    correlation_id: self.cid.clone(),
                    remember: None,
                };
                m.ledger.note(&m.intake, entry, &mut |n| m.help(n));
                Err(r)
            }
        }
    }

    /// As [`Market::cancel`].
    ///
    /// # Errors
    ///
    /// As [`Market::cancel`].
    pub fn cancel(&self, agent: &AgentId, bid: &BidId) -> Result<()> {
        let m = self.market;
        m.ledger.cancel(&m.intake, (agent, bid), &self.cid, &mut |n| m.help(n))
    }

    /// As [`Market::deposit`].
    ///
    /// # Errors
    ///
    /// As [`Market::deposit`].
    pub fn deposit(&self, agent: &AgentId, amount: Credits) -> Result<()> {
        let m = self.market;
        m.ledger.deposit(&m.intake, (agent, amount), &self.cid, &mut |n| m.help(n))
    }

    /// As [`Market::transfer`].
    ///
    /// # Errors
    ///
    /// As [`Market::transfer`].
    pub fn transfer(&self, from: &AgentId, to: &AgentId, amount: Credits) -> Result<()> {
        let m = self.market;
        m.ledger.transfer(&m.intake, (from, to, amount), &self.cid, &mut |n| m.help(n))
    }

    /// As [`Market::set_capacity`].
    ///
    /// # Errors
    ///
    /// As [`Market::set_capacity`].
    pub fn set_capacity(&self, resource: &str, from: Slot, to: Slot, capacity: Capacity) -> Result<()> {
        let m = self.market;
        let id = m.config.resources.find(resource).ok_or_else(|| {
            Rejection::new(RejectCode::UnknownResource, format!("the market sells no resource `{resource}`"))
        })?;
        let mut engine = m.engine();
        if from >= to || to <= engine.now {
            return Err(Rejection::new(
                RejectCode::InvalidWindow,
                format!("[{from}, {to}) is empty or already past (now {})", engine.now),
            ));
        }
        m.sequence_intake(&mut engine, false);
        engine.timeline.set_capacity(id, from, to, capacity);
        let kind = EventKind::CapacityChanged {
            resource: m.config.resources.shared_name(id),
            from_slot: from,
            to_slot: to,
            capacity,
        };
        engine.emit(None, self.cid.clone(), kind);
        engine.publish();
        Ok(())
    }

    /// As [`Market::clear`].
    ///
    /// # Errors
    ///
    /// As [`Market::clear`].
    pub fn clear(&self, now: Slot) -> Result<CycleReport> {
        let m = self.market;
        let _one = m.clearing();
        m.resume_locked();
        let taken = {
            let mut engine = m.engine();
            if now < engine.now {
                return Err(Rejection::new(
                    RejectCode::InvalidWindow,
                    format!("cannot clear at slot {now}: the market is at slot {}", engine.now),
                ));
            }
            m.sequence_intake(&mut engine, true);
            m.now.store(now.0, Ordering::Release);
            let taken = engine.take_cut(now, self.cid.clone());
            engine.publish();
            taken
        };
        Ok(m.complete(taken.split(), &[]))
    }
}

impl Receipt {
    fn answered(self, admitted: Admitted) -> Receipt {
        match admitted {
            Admitted::New => self,
            Admitted::Repeat { seq } => Receipt { repeat: true, seq, ..self },
        }
    }
}

/// What can be read of a payload that is not a bid: its `id` and `agent`, if it names them.
fn readable_names(json: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Names {
        id: Option<String>,
        agent: Option<String>,
    }
    serde_json::from_slice::<Names>(json).map(|n| (n.id, n.agent)).unwrap_or_default()
}
