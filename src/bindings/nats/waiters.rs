//! Requests waiting for the event they caused: a reply carries that event's `seq` and is sent
//! only once the `audit_log` stream has acknowledged it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::{AgentId, BidId, Capacity, Credits, Event, EventKind, Slot};

/// What a request waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// `bid_accepted` of a bid: unique, remembered for repeats.
    Accepted(AgentId, BidId),
    /// `bid_cancelled` of a bid: unique.
    Cancelled(AgentId, BidId),
    /// `cycle_cleared` of a cycle: unique.
    Cycle(u64),
    /// `credits_deposited` outside a cycle; several may be alike.
    Deposited(AgentId, Credits),
    /// `credits_transferred` outside a cycle; several may be alike.
    Transferred(AgentId, AgentId, Credits),
    /// `capacity_changed`; several may be alike.
    Capacity(Arc<str>, Slot, Slot, Capacity),
}

impl Key {
    /// Whether only one event ever has this key, so it can be remembered and looked up later.
    fn unique(&self) -> bool {
        matches!(self, Key::Accepted(..) | Key::Cancelled(..) | Key::Cycle(_))
    }

    /// The key an event answers, if a request can wait for it.
    pub(crate) fn of(event: &Event) -> Option<Key> {
        let intake = event.cycle.is_none();
        Some(match &event.kind {
            EventKind::BidAccepted { agent, bid, .. } => Key::Accepted(agent.clone(), bid.clone()),
            EventKind::BidCancelled { agent, bid } => Key::Cancelled(agent.clone(), bid.clone()),
            EventKind::CycleCleared { .. } => Key::Cycle(event.cycle?),
            EventKind::CreditsDeposited { agent, amount } if intake => Key::Deposited(agent.clone(), *amount),
            EventKind::CreditsTransferred { from, to, amount } if intake => {
                Key::Transferred(from.clone(), to.clone(), *amount)
            }
            EventKind::CapacityChanged { resource, from_slot, to_slot, capacity } => {
                Key::Capacity(resource.clone(), *from_slot, *to_slot, *capacity)
            }
            _ => return None,
        })
    }
}

/// Cycles of `cycle_cleared` seqs kept for admin clears that ask after the event went out.
const CYCLES_KEPT: usize = 64;

/// Waiting requests, and the seqs of unique events a request may ask for after they went out.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: HashMap<Key, VecDeque<oneshot::Sender<u64>>>,
    known: HashMap<Key, u64>,
    /// Bids decided, oldest first: `(cycle, agent, bid)`; their keys are forgotten
    /// `dedupe_cycles` later, as the ledger forgets their ids.
    decided: VecDeque<(u64, AgentId, BidId)>,
    cycles: VecDeque<u64>,
    /// The last cycle cleared.
    cycle: u64,
}

/// A request's place in line: the seq when the event already went out, else a receiver.
#[derive(Debug)]
pub(crate) enum Wait {
    Known(u64),
    Pending(oneshot::Receiver<u64>),
}

impl Waiters {
    /// Waits for `key`: at once if it is unique and already known.
    pub(crate) fn wait(&mut self, key: Key) -> Wait {
        if let Some(&seq) = self.known.get(&key) {
            return Wait::Known(seq);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.entry(key).or_default().push_back(tx);
        Wait::Pending(rx)
    }

    /// The seq of a unique event already published, if remembered.
    pub(crate) fn known(&self, key: &Key) -> Option<u64> {
        self.known.get(key).copied()
    }

    /// Drops waits whose requests gave up (their operation was refused).
    pub(crate) fn abandon(&mut self, key: &Key) {
        if let Some(queue) = self.waiting.get_mut(key) {
            queue.retain(|tx| !tx.is_closed());
            if queue.is_empty() {
                self.waiting.remove(key);
            }
        }
    }

    /// Answers the requests waiting for these events (all acknowledged by the stream), and
    /// forgets what the ledger forgets as of the last cycle in them.
    pub(crate) fn published(&mut self, events: &[Event], dedupe_cycles: u64) {
        for event in events {
            match &event.kind {
                EventKind::BidWon { agent, bid, .. } | EventKind::BidExpired { agent, bid } => {
                    self.decided.push_back((event.cycle.unwrap_or(self.cycle), agent.clone(), bid.clone()));
                }
                EventKind::BidLost { agent, bid, retained: false, .. } => {
                    self.decided.push_back((event.cycle.unwrap_or(self.cycle), agent.clone(), bid.clone()));
                }
                EventKind::BidCancelled { agent, bid } => {
                    self.decided.push_back((self.cycle, agent.clone(), bid.clone()));
                }
                _ => {}
            }
            let Some(key) = Key::of(event) else { continue };
            if let EventKind::CycleCleared { .. } = event.kind {
                self.cycle = self.cycle.max(event.cycle.unwrap_or(0));
                self.cycles.push_back(self.cycle);
                if self.cycles.len() > CYCLES_KEPT
                    && let Some(old) = self.cycles.pop_front()
                {
                    self.known.remove(&Key::Cycle(old));
                }
                self.forget(dedupe_cycles);
            }
            self.answer(key, event.seq);
        }
    }

    fn answer(&mut self, key: Key, seq: u64) {
        let unique = key.unique();
        if let Some(queue) = self.waiting.get_mut(&key) {
            if unique {
                for tx in queue.drain(..) {
                    let _ = tx.send(seq);
                }
            } else {
                // Alike operations are answered in the order they waited; one event each.
                while let Some(tx) = queue.pop_front() {
                    if tx.send(seq).is_ok() {
                        break;
                    }
                }
            }
            if queue.is_empty() {
                self.waiting.remove(&key);
            }
        }
        if unique {
            self.known.insert(key, seq);
        }
    }

    fn forget(&mut self, dedupe_cycles: u64) {
        while let Some((decided, _, _)) = self.decided.front() {
            if decided.saturating_add(dedupe_cycles) > self.cycle {
                break;
            }
            let (_, agent, bid) = self.decided.pop_front().expect("front exists");
            self.known.remove(&Key::Accepted(agent.clone(), bid.clone()));
            self.known.remove(&Key::Cancelled(agent, bid));
        }
    }

    /// Requests still waiting.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, cycle: Option<u64>, kind: EventKind) -> Event {
        Event { seq, cycle, slot: Slot(0), correlation_id: None, kind }
    }

    fn ids() -> (AgentId, BidId) {
        (AgentId::new("a").unwrap(), BidId::new("b").unwrap())
    }

    fn cleared(seq: u64, cycle: u64) -> Event {
        let kind = EventKind::CycleCleared {
            bids: 0,
            won: 0,
            lost: 0,
            expired: 0,
            revenue: Credits::ZERO,
            welfare: Credits::ZERO,
            ir: 1.0,
            envy: 0.0,
        };
        event(seq, Some(cycle), kind)
    }

    #[test]
    fn unique_keys_answer_everyone_and_are_remembered_until_forgotten() {
        let (a, b) = ids();
        let mut w = Waiters::default();
        let key = Key::Accepted(a.clone(), b.clone());
        let (Wait::Pending(mut first), Wait::Pending(mut second)) =
            (w.wait(key.clone()), w.wait(key.clone()))
        else {
            panic!("nothing published yet")
        };
        let other = BidId::new("other").unwrap();
        w.published(&[event(1, None, EventKind::BidCancelled { agent: a.clone(), bid: other })], 2);
        assert!(first.try_recv().is_err(), "another bid's event answers nobody here");
        let accepted = EventKind::BidAccepted {
            bid: b.clone(),
            agent: a.clone(),
            beneficiary: a.clone(),
            bundle: crate::BundleShares(vec![("cpu".into(), "0.1".parse().unwrap())]),
            duration: 1,
            earliest_start: Slot(0),
            latest_end: Slot(1),
            limit: Credits::from_units(1),
            good_for: 1,
        };
        w.published(&[event(3, None, accepted)], 2);
        assert_eq!(first.try_recv().unwrap(), 3);
        assert_eq!(second.try_recv().unwrap(), 3);
        assert!(matches!(w.wait(key.clone()), Wait::Known(3)), "a repeat finds the first seq");
        // Lost for good in cycle 1: forgotten once cycle 1 + 2 is cleared.
        let lost = EventKind::BidLost { bid: b.clone(), agent: a.clone(), retained: false, shortfall: None };
        w.published(&[event(4, Some(1), lost), cleared(5, 1)], 2);
        w.published(&[cleared(6, 2)], 2);
        assert_eq!(w.known(&key), Some(3));
        w.published(&[cleared(7, 3)], 2);
        assert_eq!(w.known(&key), None);
        assert_eq!(w.known(&Key::Cycle(3)), Some(7));
    }

    #[test]
    fn alike_operations_take_one_event_each_in_order() {
        let (a, _) = ids();
        let amount = Credits::from_units(5);
        let mut w = Waiters::default();
        let key = Key::Deposited(a.clone(), amount);
        let Wait::Pending(mut first) = w.wait(key.clone()) else { panic!() };
        let Wait::Pending(gave_up) = w.wait(key.clone()) else { panic!() };
        let Wait::Pending(mut third) = w.wait(key.clone()) else { panic!() };
        drop(gave_up);
        let deposit = |seq| event(seq, None, EventKind::CreditsDeposited { agent: a.clone(), amount });
        w.published(&[deposit(1)], 1);
        assert_eq!(first.try_recv().unwrap(), 1);
        assert!(third.try_recv().is_err());
        w.published(&[deposit(2)], 1);
        assert_eq!(third.try_recv().unwrap(), 2, "the abandoned wait is skipped");
        assert_eq!(w.waiting(), 0);
        assert_eq!(w.known(&key), None, "alike keys are not remembered");
        // Settlement inside a cycle answers no transfer request.
        let Wait::Pending(mut t) = w.wait(Key::Transferred(a.clone(), a.clone(), amount)) else { panic!() };
        w.published(
            &[event(3, Some(1), EventKind::CreditsTransferred { from: a.clone(), to: a.clone(), amount })],
            1,
        );
        assert!(t.try_recv().is_err());
    }
}
