//! [`Subscription`]: the event stream as the writer sequences it.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::events::Event;

/// Events as the writer sequences them, in `seq` order without gaps.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Arc<[Event]>>,
    batch: Arc<[Event]>,
    at: usize,
}

impl Subscription {
    pub(crate) fn new(rx: Receiver<Arc<[Event]>>) -> Subscription {
        Subscription { rx, batch: Arc::from(Vec::new()), at: 0 }
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
}
