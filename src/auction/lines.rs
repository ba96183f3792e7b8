//! Event lines made ahead: a cycle's outcome events serialized on the clearing threads while
//! the outcome is made, so whoever writes the events out (a served market's journal) only puts
//! each one's `seq` in front of its line instead of serializing tens of thousands of events on
//! its own thread. Made only while someone asks for them, and never needed: an event without a
//! line made ahead is serialized as usual, to the same bytes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::events::Event;

/// A run of consecutive events' lines, each from just after its `seq` (see [`Event::line_of`]).
#[derive(Debug)]
struct Run {
    first: u64,
    lines: Vec<Vec<u8>>,
}

/// Runs kept at most: a consumer that falls behind finds the oldest gone and serializes those
/// events itself.
const MAX_RUNS: usize = 64;

/// The lines made ahead and not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    wanted: AtomicBool,
    runs: Mutex<VecDeque<Run>>,
}

impl Prepared {
    /// Whether lines are made from now on; turning them off drops those kept.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn want(&self, on: bool) {
        self.wanted.store(on, Ordering::Release);
        if !on {
            self.runs().clear();
        }
    }

    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// Keeps the lines of the events from `first` on, in order.
    pub(crate) fn keep(&self, first: u64, lines: Vec<Vec<u8>>) {
        if !self.wanted() || lines.is_empty() {
            return;
        }
        let mut runs = self.runs();
        runs.push_back(Run { first, lines });
        while runs.len() > MAX_RUNS {
            runs.pop_front();
        }
    }

    /// Takes every run that starts at or before `last`, the `seq` of the last event about to be
    /// written.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn take_through(&self, last: u64) -> Lines {
        let mut runs = self.runs();
        let mut taken = Vec::new();
        while runs.front().is_some_and(|r| r.first <= last) {
            taken.extend(runs.pop_front());
        }
        Lines { runs: taken, at: 0 }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, VecDeque<Run>> {
        // Lines are a cache: whatever a panic left here is still lines of real events.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lines taken for a batch of events, asked for in `seq` order.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Lines {
    runs: Vec<Run>,
    /// The run the last lookup found.
    at: usize,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Lines {
    /// Appends `event`'s JSON to `out`, from the line made ahead when there is one.
    pub(crate) fn write(&mut self, event: &Event, out: &mut Vec<u8>) {
        let from = out.len();
        match self.find(event.seq) {
            Some(line) => Event::write_line(event.seq, line, out),
            None => serde_json::to_writer(&mut *out, event).expect("events always serialize"),
        }
        debug_assert_eq!(out[from..], *event.to_json().as_bytes(), "a line made ahead is the event's JSON");
    }

    fn find(&mut self, seq: u64) -> Option<&[u8]> {
        while let Some(run) = self.runs.get(self.at) {
            if seq < run.first {
                return None;
            }
            if let Some(line) = usize::try_from(seq - run.first).ok().and_then(|k| run.lines.get(k)) {
                return Some(line);
            }
            self.at += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::capacity::Slot;
    use crate::{AgentId, BidId, Credits, EventKind};

    fn events() -> Vec<Event> {
        let (bid, agent) = (BidId::new("b1").unwrap(), AgentId::new("a").unwrap());
        let kinds = [
            EventKind::BidLost { bid: bid.clone(), agent: agent.clone(), retained: true, shortfall: None },
            EventKind::BidWon {
                bid: bid.clone(),
                agent: agent.clone(),
                beneficiary: agent.clone(),
                start: Slot(3),
                end: Slot(9),
                payment: Credits::from_micros(1_500_001),
            },
            EventKind::CreditsBurned { agent: agent.clone(), amount: Credits::from_micros(7) },
            EventKind::BidExpired { bid, agent },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let correlation_id = (i % 2 == 0).then(|| Arc::from("c \"1\"\n"));
                Event { seq: 0, cycle: Some(4), slot: Slot(17), correlation_id, kind }
            })
            .collect()
    }

    #[test]
    fn lines_made_ahead_are_the_events_json() {
        let prepared = Prepared::default();
        let base = events();
        let lines: Vec<Vec<u8>> = base.iter().map(Event::line).collect();
        prepared.keep(10, lines.clone());
        assert!(prepared.take_through(100).runs.is_empty(), "nothing is kept unless wanted");
        prepared.want(true);
        // Two runs with a gap: seqs 10-11 and 13-14 have lines, 12 and 15 none.
        prepared.keep(10, lines[..2].to_vec());
        prepared.keep(13, lines[2..].to_vec());
        let mut taken = prepared.take_through(15);
        let by_seq = [(10, 0), (11, 1), (12, 3), (13, 2), (14, 3), (15, 0)];
        for (seq, k) in by_seq {
            let event = Event { seq, ..base[k].clone() };
            let mut out = Vec::new();
            taken.write(&event, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), event.to_json(), "seq {seq}");
        }
        assert!(prepared.take_through(u64::MAX).runs.is_empty(), "taken once");
        prepared.keep(20, lines);
        prepared.want(false);
        assert!(prepared.take_through(u64::MAX).runs.is_empty(), "dropped when no longer wanted");
    }
}
