//! Requests waiting for the event they caused: a reply carries that event's `seq` and is sent
//! only once the journal has stored it. A request waits in a task of its own, or — single bids,
//! the hot path — leaves its reply subject here and the writer sends the reply itself.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_nats::Subject;
use bytes::Bytes;
use foldhash::HashMap;
use tokio::sync::oneshot;

use super::wire::Reply;
use crate::{AgentId, BidId, Capacity, Credits, Event, EventKind, Slot};

/// What a request waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// `bid_accepted` of a bid: unique, remembered for repeats.
    Accepted(AgentId, BidId),
    /// `bid_cancelled` of a bid: unique.
    Cancelled(AgentId, BidId),
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
        matches!(self, Key::Accepted(..) | Key::Cancelled(..))
    }

    /// The key an event answers, if a request can wait for it.
    pub(crate) fn of(event: &Event) -> Option<Key> {
        let intake = event.cycle.is_none();
        Some(match &event.kind {
            EventKind::BidAccepted { agent, bid, .. } => Key::Accepted(agent.clone(), bid.clone()),
            EventKind::BidCancelled { agent, bid } => Key::Cancelled(agent.clone(), bid.clone()),
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

/// Who waits for an event.
#[derive(Debug)]
enum Waiter {
    /// A request's task.
    Task(oneshot::Sender<u64>),
    /// A reply to send on `to` (`repeat` for a repeated bid id).
    Reply { to: Subject, repeat: bool },
}

impl Waiter {
    fn gone(&self) -> bool {
        matches!(self, Waiter::Task(tx) if tx.is_closed())
    }

    /// Hands `seq` over; false when the waiting task gave up.
    fn answer(self, seq: u64, replies: &mut Vec<(Subject, Bytes)>) -> bool {
        match self {
            Waiter::Task(tx) => tx.send(seq).is_ok(),
            Waiter::Reply { to, repeat } => {
                let reply = if repeat { Reply::repeat(Some(seq)) } else { Reply::ok(seq) };
                replies.push((to, reply.to_bytes()));
                true
            }
        }
    }
}

/// Requests waiting for the event they caused. A request registers before the operation it
/// waits for can be journaled (before it, or holding this lock across it), so no event goes
/// out unseen; a repeated bid whose first `bid_accepted` is already sequenced waits for the
/// journal to reach that `seq` instead (the ledger remembers it).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: HashMap<Key, VecDeque<Waiter>>,
    /// Replies waiting for the journal to reach a `seq` already known.
    by_seq: BTreeMap<u64, Vec<(Subject, bool)>>,
}

impl Waiters {
    /// A task waits for `key`'s event.
    pub(crate) fn wait(&mut self, key: Key) -> oneshot::Receiver<u64> {
        let (tx, rx) = oneshot::channel();
        self.waiting.entry(key).or_default().push_back(Waiter::Task(tx));
        rx
    }

    /// The writer replies on `to` once `key`'s event is journaled.
    pub(crate) fn reply_on(&mut self, key: Key, to: Subject, repeat: bool) {
        self.waiting.entry(key).or_default().push_back(Waiter::Reply { to, repeat });
    }

    /// The writer replies on `to` once the journal holds event `seq`.
    pub(crate) fn reply_after(&mut self, seq: u64, to: Subject, repeat: bool) {
        self.by_seq.entry(seq).or_default().push((to, repeat));
    }

    /// Drops waits whose requests gave up (their operation was refused).
    pub(crate) fn abandon(&mut self, key: &Key) {
        if let Some(queue) = self.waiting.get_mut(key) {
            queue.retain(|w| !w.gone());
            if queue.is_empty() {
                self.waiting.remove(key);
            }
        }
    }

    /// Answers the requests waiting for these events (all journaled); returns the replies the
    /// writer sends itself.
    pub(crate) fn published<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Vec<(Subject, Bytes)> {
        let mut replies = Vec::new();
        let mut last = None;
        for event in events {
            last = Some(event.seq);
            if !self.waiting.is_empty()
                && let Some(key) = Key::of(event)
            {
                self.answer(key, event.seq, &mut replies);
            }
        }
        if let Some(last) = last
            && !self.by_seq.is_empty()
        {
            let later = self.by_seq.split_off(&(last + 1));
            for (seq, waiting) in std::mem::replace(&mut self.by_seq, later) {
                for (to, repeat) in waiting {
                    Waiter::Reply { to, repeat }.answer(seq, &mut replies);
                }
            }
        }
        replies
    }

    fn answer(&mut self, key: Key, seq: u64, replies: &mut Vec<(Subject, Bytes)>) {
        let Some(queue) = self.waiting.get_mut(&key) else { return };
        if key.unique() {
            for waiter in queue.drain(..) {
                waiter.answer(seq, replies);
            }
        } else {
            // Alike operations are answered in the order they waited; one event each.
            while let Some(waiter) = queue.pop_front() {
                if waiter.answer(seq, replies) {
                    break;
                }
            }
        }
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
    }

    /// Requests still waiting.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum::<usize>()
            + self.by_seq.values().map(Vec::len).sum::<usize>()
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

    fn accepted(a: &AgentId, b: &BidId) -> EventKind {
        EventKind::BidAccepted {
            bid: b.clone(),
            agent: a.clone(),
            beneficiary: a.clone(),
            bundle: crate::BundleShares(vec![("cpu".into(), "0.1".parse().unwrap())]),
            duration: 1,
            earliest_start: Slot(0),
            latest_end: Slot(1),
            limit: Credits::from_units(1),
            good_for: 1,
        }
    }

    #[test]
    fn unique_keys_answer_everyone_waiting_tasks_and_replies_alike() {
        let (a, b) = ids();
        let mut w = Waiters::default();
        let key = Key::Accepted(a.clone(), b.clone());
        let (mut first, mut second) = (w.wait(key.clone()), w.wait(key.clone()));
        w.reply_on(key.clone(), Subject::from("reply.1"), false);
        let other = BidId::new("other").unwrap();
        let none = w.published(&[event(1, None, EventKind::BidCancelled { agent: a.clone(), bid: other })]);
        assert!(none.is_empty() && first.try_recv().is_err(), "another bid's event answers nobody here");
        let replies = w.published(&[event(3, None, accepted(&a, &b))]);
        assert_eq!(first.try_recv().unwrap(), 3);
        assert_eq!(second.try_recv().unwrap(), 3);
        assert_eq!(replies, vec![(Subject::from("reply.1"), Reply::ok(3).to_bytes())]);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn replies_after_a_seq_wait_for_the_journal_to_reach_it() {
        let (a, b) = ids();
        let mut w = Waiters::default();
        w.reply_after(5, Subject::from("r.5"), true);
        w.reply_after(7, Subject::from("r.7"), true);
        let deposit = |seq| {
            event(seq, None, EventKind::CreditsDeposited { agent: a.clone(), amount: Credits::from_units(1) })
        };
        let replies = w.published(&[deposit(4), deposit(5), event(6, None, accepted(&a, &b))]);
        assert_eq!(replies, vec![(Subject::from("r.5"), Reply::repeat(Some(5)).to_bytes())]);
        assert_eq!(w.published(&[deposit(7)]).len(), 1);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn alike_operations_take_one_event_each_in_order() {
        let (a, _) = ids();
        let amount = Credits::from_units(5);
        let mut w = Waiters::default();
        let key = Key::Deposited(a.clone(), amount);
        let mut first = w.wait(key.clone());
        let gave_up = w.wait(key.clone());
        let mut third = w.wait(key.clone());
        drop(gave_up);
        let deposit = |seq| event(seq, None, EventKind::CreditsDeposited { agent: a.clone(), amount });
        w.published(&[deposit(1)]);
        assert_eq!(first.try_recv().unwrap(), 1);
        assert!(third.try_recv().is_err());
        w.published(&[deposit(2)]);
        assert_eq!(third.try_recv().unwrap(), 2, "the abandoned wait is skipped");
        assert_eq!(w.waiting(), 0);
        // Settlement inside a cycle answers no transfer request.
        let mut t = w.wait(Key::Transferred(a.clone(), a.clone(), amount));
        w.published(&[event(
            3,
            Some(1),
            EventKind::CreditsTransferred { from: a.clone(), to: a.clone(), amount },
        )]);
        assert!(t.try_recv().is_err());
    }
}
