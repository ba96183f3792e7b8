//! [`Subscription`]: the event stream as the writer sequences it.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::events::Event;

/// Events as the writer sequences them, in `seq` order without gaps.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Arc<Vec<Event>>>,
    batch: Arc<Vec<Event>>,
    at: usize,
}

impl Subscription {
    pub(crate) fn new(rx: Receiver<Arc<Vec<Event>>>) -> Subscription {
        Subscription { rx, batch: Arc::default(), at: 0 }
    }

    /// The next event if one is ready.
    pub fn try_next(&mut self) -> Option<Event> {
        while self.at == self.batch.len() {
            self.batch = self.rx.try_recv().ok()?;
            self.at = 0;
        }
        self.at += 1;
        Some(self.batch[self.at - 1].clone())
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Event> {
        if self.at == self.batch.len() {
            self.batch = self.rx.recv_timeout(timeout).ok()?;
            self.at = 0;
        }
        self.try_next()
    }

    /// Every event ready now.
    pub fn try_iter(mut self) -> impl Iterator<Item = Event> {
        std::iter::from_fn(move || self.try_next())
    }

    /// Every event ready now, keeping the subscription.
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    /// Every event ready now, shared with the other subscribers rather than copied: a cycle's
    /// outcome holds an event per bid in the book, which the service's writer only reads.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn take_shared(&mut self) -> Batch {
        let mut parts = Vec::new();
        let current = std::mem::take(&mut self.batch);
        if self.at < current.len() {
            parts.push((current, self.at));
        }
        self.at = 0;
        while let Ok(batch) = self.rx.try_recv() {
            if !batch.is_empty() {
                parts.push((batch, 0));
            }
        }
        Batch { parts }
    }
}

/// Consecutive events taken from a [`Subscription`] without copying them.
#[derive(Clone, Debug, Default)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Batch {
    /// The batches the writer published, each with where its part of this one begins.
    parts: Vec<(Arc<Vec<Event>>, usize)>,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Batch {
    /// The events, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        self.parts.iter().flat_map(|(batch, from)| &batch[*from..])
    }

    /// How many events it holds.
    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|(batch, from)| batch.len() - from).sum()
    }

    pub(crate) fn last(&self) -> Option<&Event> {
        self.parts.last().and_then(|(batch, _)| batch.last())
    }

    /// Each event, shared.
    pub(crate) fn into_shared(self) -> impl Iterator<Item = SharedEvent> {
        self.parts.into_iter().flat_map(|(batch, from)| {
            (from..batch.len()).map(move |at| SharedEvent { batch: batch.clone(), at })
        })
    }
}

/// One event of a [`Batch`], shared rather than copied.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct SharedEvent {
    batch: Arc<Vec<Event>>,
    at: usize,
}

impl From<Event> for SharedEvent {
    fn from(event: Event) -> SharedEvent {
        SharedEvent { batch: Arc::new(vec![event]), at: 0 }
    }
}

impl Deref for SharedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.batch[self.at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentId, Market};

    #[test]
    fn shared_batches_hold_what_drain_would_copy() {
        let market = Market::builder().resources(["cpu"]).build().unwrap();
        let (mut copied, mut shared) = (market.subscribe(), market.subscribe());
        let a = AgentId::new("a").unwrap();
        // Three published batches of one, two and one events.
        for n in [1, 2, 1] {
            for _ in 0..n {
                market.deposit(&a, "1".parse().unwrap()).unwrap();
            }
            market.flush();
        }
        // The second batch half read one event at a time.
        for _ in 0..2 {
            assert_eq!(shared.try_next(), copied.try_next());
        }
        let batch = shared.take_shared();
        let events = copied.drain();
        assert_eq!(batch.iter().cloned().collect::<Vec<_>>(), events);
        assert_eq!(batch.last(), events.last());
        assert_eq!(batch.len(), events.len());
        let each: Vec<Event> = batch.into_shared().map(|e| (*e).clone()).collect();
        assert_eq!(each, events);
        assert!(shared.take_shared().last().is_none(), "everything was taken");
    }
}
