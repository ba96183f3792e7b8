//! Event lines: how events are written as JSON lines (a served market's journal), and the
//! lines of a cycle's outcome made ahead.
//!
//! A line is an event's JSON, or a *run* standing for consecutive retained losses of one cycle
//! (`bid_lost` with `retained: true`, the bulk of a standing book's outcome: every bid that stays
//! loses again each cycle). A run holds each loss's bid, agent and shortfall once, under one
//! envelope: `{"v":1,"seq":F,"cycle":C,"slot":S,"correlation_id":X,"type":"bids_retained",
//! "bids":[["b1","a1",null],["b2","a2","0.5"]]}` stands for events `F`, `F+1`, … in that order.
//! [`Event::from_lines`] reads both back.
//!
//! The outcome's lines are made on the clearing threads while the outcome is made, so whoever
//! writes the events out only puts each line's `seq` in front instead of serializing tens of
//! thousands of events on its own thread. Made only while someone asks for them, and never
//! needed: an event without a line made ahead is written as its own JSON.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::error::{RejectCode, Rejection};
use super::events::{EVENT_VERSION, Event, EventKind};
use super::ids::{AgentId, BidId};
use super::money::Credits;
use crate::capacity::Slot;

/// The `type` of a run of retained losses.
pub(crate) const RUN: &str = "bids_retained";

/// Retained losses one run holds at most, so a run with the longest ids stays far below a
/// journal message.
const MAX_RUN: usize = 2048;

/// A run as written.
#[derive(Serialize)]
struct RetainedOut<'a> {
    v: u8,
    seq: u64,
    cycle: u64,
    slot: Slot,
    correlation_id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    bids: Vec<(&'a BidId, &'a AgentId, &'a Option<Credits>)>,
}

/// A run of retained losses (`bid_lost` with `retained: true`) of one cycle and correlation id:
/// events `seq`, `seq + 1`, … in the order of `bids`. A journal line, and an `audit_log` message
/// on `system.market.bids_retained`.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(rename = "RetainedLosses"))]
#[serde(deny_unknown_fields)]
pub(crate) struct RetainedIn {
    /// The event format's version, 1.
    v: u8,
    /// The `seq` of the first loss.
    seq: u64,
    cycle: u64,
    slot: Slot,
    correlation_id: Option<Arc<str>>,
    /// `bids_retained`.
    #[serde(rename = "type")]
    kind: String,
    /// Each loss's bid, agent and shortfall (how much more limit would have won; `null` when
    /// no limit would have, or when the cycle did not compute it).
    bids: Vec<(BidId, AgentId, Option<Credits>)>,
}

impl RetainedIn {
    fn events(self) -> Option<Vec<Event>> {
        if self.v != EVENT_VERSION || self.kind != RUN || self.bids.is_empty() {
            return None;
        }
        let RetainedIn { seq, cycle, slot, correlation_id, bids, .. } = self;
        let events = (seq..).zip(bids).map(|(seq, (bid, agent, shortfall))| Event {
            seq,
            cycle: Some(cycle),
            slot,
            correlation_id: correlation_id.clone(),
            kind: EventKind::BidLost { bid, agent, retained: true, shortfall },
        });
        Some(events.collect())
    }
}

impl Event {
    /// Reads events written as lines (one per line, `\n`-separated, as a served market's journal
    /// holds them): each line an event's JSON or a run of retained losses.
    ///
    /// # Errors
    ///
    /// `unknown_field` or `malformed` for a line that is neither.
    pub fn from_lines(lines: &[u8]) -> Result<Vec<Event>, Rejection> {
        let mut events = Vec::new();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // A run ends its last entry and its list; whatever else is read as an event.
            if line.ends_with(b"]]}")
                && let Ok(run) = serde_json::from_slice::<RetainedIn>(line)
            {
                let Some(run) = run.events() else {
                    return Err(Rejection::new(
                        RejectCode::Malformed,
                        "a run of retained losses that is not one",
                    ));
                };
                events.extend(run);
                continue;
            }
            events.push(Event::from_json(line)?);
        }
        Ok(events)
    }
}

/// The lines of a cycle's outcome events (of cycle `cycle` at `slot`), each from just after its
/// `seq` (see [`Event::line_of`]): consecutive retained losses of one correlation id as runs of
/// up to [`MAX_RUN`], whose first event has the run's line and the others an empty one.
pub(crate) fn outcome_lines(
    cycle: u64,
    slot: Slot,
    events: &[(Option<Arc<str>>, EventKind)],
) -> Vec<Vec<u8>> {
    let retained =
        |(_, kind): &(Option<Arc<str>>, EventKind)| matches!(kind, EventKind::BidLost { retained: true, .. });
    let mut lines = Vec::with_capacity(events.len());
    let mut at = 0;
    while at < events.len() {
        let (cid, kind) = &events[at];
        let run = events[at..].iter().take(MAX_RUN).take_while(|e| retained(e) && e.0 == *cid).count();
        if run < 2 {
            lines.push(Event::line_of(Some(cycle), slot, cid.as_deref(), kind));
            at += 1;
            continue;
        }
        let out = run_line(0, cycle, slot, cid.as_deref(), events[at..at + run].iter().map(|(_, kind)| kind));
        lines.push(Event::tail(&out));
        lines.extend(std::iter::repeat_with(Vec::new).take(run - 1));
        at += run;
    }
    lines
}

/// How many of `events` (consecutive, in `seq` order) the run of retained losses beginning with
/// the first holds: 1 when it is no retained loss or none follows it in its run. A run is what
/// [`outcome_lines`] makes one: losses of one cycle and correlation id, at most [`MAX_RUN`].
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn run_length<'a>(mut events: impl Iterator<Item = &'a Event>) -> usize {
    let retained = |e: &Event| matches!(e.kind, EventKind::BidLost { retained: true, .. });
    let Some(first) = events.next().filter(|e| retained(e)) else { return 1 };
    let joins = |(k, e): &(usize, &Event)| {
        retained(e)
            && e.seq == first.seq + *k as u64
            && e.cycle == first.cycle
            && e.slot == first.slot
            && e.correlation_id == first.correlation_id
    };
    1 + (1..MAX_RUN).zip(events).take_while(joins).count()
}

/// The line of a run of retained losses, `run` as [`run_length`] found it, with its `seq`: the
/// journal's line for it.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn run_json<'a>(run: impl Iterator<Item = &'a Event> + Clone) -> Vec<u8> {
    let first = run.clone().next().expect("a run is not empty");
    let cycle = first.cycle.expect("losses belong to a cycle");
    run_line(first.seq, cycle, first.slot, first.correlation_id.as_deref(), run.map(|e| &e.kind))
}

/// The JSON of a run from `seq` of the retained losses `kinds` (any other kind left out).
fn run_line<'a>(
    seq: u64,
    cycle: u64,
    slot: Slot,
    correlation_id: Option<&str>,
    kinds: impl Iterator<Item = &'a EventKind>,
) -> Vec<u8> {
    let bids = kinds
        .filter_map(|kind| match kind {
            EventKind::BidLost { bid, agent, shortfall, .. } => Some((bid, agent, shortfall)),
            _ => None,
        })
        .collect();
    let out = RetainedOut { v: EVENT_VERSION, seq, cycle, slot, correlation_id, kind: RUN, bids };
    serde_json::to_vec(&out).expect("runs always serialize")
}

/// How many losses `line` holds when it is a run's line, read without parsing it: ids and
/// agents hold no brackets or commas, and a correlation id's quotes are escaped.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn run_size(line: &[u8]) -> Option<usize> {
    const BIDS: &[u8] = br#","type":"bids_retained","bids":[["#;
    if !line.ends_with(b"]]}") {
        return None;
    }
    // The envelope is short: its end is near the start, and a correlation id cannot hold it.
    let at = line.windows(BIDS.len()).position(|w| w == BIDS)? + BIDS.len();
    let ends = line[at..].iter().enumerate().filter(|&(i, &b)| b == b']' && line[at + i + 1] == b',');
    Some(1 + ends.count())
}

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
        Lines { runs: taken, at: 0, covered: 0 }
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
    /// The last `seq` a run of retained losses written so far stands for.
    covered: u64,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Lines {
    /// Appends `event`'s line to `out`: the line made ahead when there is one, else its JSON;
    /// `false`, writing nothing, when a run of retained losses written before stands for it.
    pub(crate) fn write(&mut self, event: &Event, out: &mut Vec<u8>) -> bool {
        let from = out.len();
        let covered = self.covered;
        match self.find(event.seq) {
            Some(([], _)) if event.seq <= covered => return false,
            Some((line, more)) if !line.is_empty() => {
                Event::write_line(event.seq, line, out);
                self.covered = event.seq + more as u64;
            }
            _ => serde_json::to_writer(&mut *out, event).expect("events always serialize"),
        }
        debug_assert_eq!(
            Event::from_lines(&out[from..]).ok().and_then(|e| e.into_iter().next()).as_ref(),
            Some(event),
            "a line stands for its event"
        );
        true
    }

    /// The line made ahead for `seq`, and how many events after it its run of retained losses
    /// stands for.
    fn find(&mut self, seq: u64) -> Option<(&[u8], usize)> {
        while let Some(run) = self.runs.get(self.at) {
            if seq < run.first {
                return None;
            }
            if let Some(k) = usize::try_from(seq - run.first).ok().filter(|&k| k < run.lines.len()) {
                let (line, after) = (&run.lines[k], &run.lines[k + 1..]);
                let more =
                    if line.is_empty() { 0 } else { after.iter().take_while(|l| l.is_empty()).count() };
                return Some((line, more));
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

    /// Retained losses of `bids` bids, the `k`th with correlation id `cid(k)` and a shortfall on
    /// every third.
    fn retained(bids: usize, cid: impl Fn(usize) -> Option<Arc<str>>) -> Vec<(Option<Arc<str>>, EventKind)> {
        (0..bids)
            .map(|k| {
                let kind = EventKind::BidLost {
                    bid: BidId::new(&format!("b{k}")).unwrap(),
                    agent: AgentId::new(&format!("a{}", k % 7)).unwrap(),
                    retained: true,
                    shortfall: (k % 3 == 0).then(|| Credits::from_micros(k as u64 * 1_000_001)),
                };
                (cid(k), kind)
            })
            .collect()
    }

    /// Writes `kinds` as events of cycle 4 at slot 17 from `seq` 10, their lines made ahead, as a
    /// journal would: the lines and the events each line stands for.
    fn written(kinds: &[(Option<Arc<str>>, EventKind)]) -> (Vec<u8>, Vec<Event>) {
        let prepared = Prepared::default();
        prepared.want(true);
        prepared.keep(10, outcome_lines(4, Slot(17), kinds));
        let mut lines = prepared.take_through(u64::MAX);
        let events: Vec<Event> = (10..)
            .zip(kinds)
            .map(|(seq, (cid, kind))| Event {
                seq,
                cycle: Some(4),
                slot: Slot(17),
                correlation_id: cid.clone(),
                kind: kind.clone(),
            })
            .collect();
        let mut body = Vec::new();
        for event in &events {
            if lines.write(event, &mut body) {
                body.push(b'\n');
            }
        }
        (body, events)
    }

    #[test]
    fn retained_losses_are_written_as_runs_and_read_back_as_events() {
        // Runs break at another kind, another correlation id, and after MAX_RUN losses.
        let mut kinds =
            events()[1..].iter().map(|e| (e.correlation_id.clone(), e.kind.clone())).collect::<Vec<_>>();
        kinds.extend(retained(MAX_RUN + 5, |k| (k >= MAX_RUN + 3).then(|| Arc::from("c \"1\"\n"))));
        let expired = events()[3].clone();
        kinds.push((expired.correlation_id, expired.kind));
        kinds.extend(retained(1, |_| None));
        let (body, events) = written(&kinds);
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        // 3 events, a full run, a run of 3, a run of 2 under the other id, an expiry, a lone loss.
        assert_eq!(lines.len(), 3 + 3 + 1 + 1, "{}", String::from_utf8_lossy(&body));
        assert!(lines[3].starts_with(br#"{"v":1,"seq":13,"cycle":4,"slot":17,"correlation_id":null,"type":"bids_retained","bids":[["b0","a0","0"],["b1","a1",null]"#));
        assert_eq!(Event::from_lines(&body).unwrap(), events, "read back, the same events");
        let lone = lines.last().unwrap();
        assert_eq!(Event::from_json(lone).unwrap(), *events.last().unwrap(), "a lone loss is its own JSON");
        assert!(body.len() * 3 < events.iter().map(|e| e.to_json().len()).sum::<usize>(), "runs are compact");
    }

    #[test]
    fn runs_found_in_events_are_the_journals_runs() {
        // The same breaks as the journal's: another kind, another correlation id, MAX_RUN.
        let mut kinds =
            events()[1..].iter().map(|e| (e.correlation_id.clone(), e.kind.clone())).collect::<Vec<_>>();
        kinds.extend(retained(MAX_RUN + 5, |k| (k >= MAX_RUN + 3).then(|| Arc::from("c"))));
        kinds.extend(retained(1, |_| None));
        let (body, events) = written(&kinds);
        let mut lines = Vec::new();
        let mut at = 0;
        while at < events.len() {
            let run = run_length(events[at..].iter());
            lines.push(match run {
                1 => events[at].to_json().into_bytes(),
                _ => run_json(events[at..at + run].iter()),
            });
            at += run;
        }
        assert_eq!(lines.join(&b'\n'), body.strip_suffix(b"\n").unwrap(), "line for line");
        let sizes: Vec<Option<usize>> = lines.iter().map(|l| run_size(l)).collect();
        assert_eq!(sizes, [None, None, None, Some(MAX_RUN), Some(3), Some(2), None], "read without parsing");
        let mut apart = events[4..7].to_vec();
        apart[1].seq += 1;
        assert_eq!(run_length(apart.iter()), 1, "a run holds consecutive events only");
        apart[1].seq -= 1;
        apart[1].cycle = Some(5);
        assert_eq!(run_length(apart.iter()), 1, "and the losses of one cycle");
    }

    #[test]
    fn a_line_without_its_run_is_the_events_own_json() {
        // Lines taken from the middle of a run: the events it covers are written in full.
        let kinds = retained(4, |_| None);
        let prepared = Prepared::default();
        prepared.want(true);
        prepared.keep(10, outcome_lines(4, Slot(17), &kinds));
        let mut lines = prepared.take_through(u64::MAX);
        for (seq, (cid, kind)) in (11..).zip(&kinds[1..]) {
            let event = Event {
                seq,
                cycle: Some(4),
                slot: Slot(17),
                correlation_id: cid.clone(),
                kind: kind.clone(),
            };
            let mut out = Vec::new();
            assert!(lines.write(&event, &mut out));
            assert_eq!(String::from_utf8(out).unwrap(), event.to_json());
        }
    }

    #[test]
    fn malformed_runs_are_refused() {
        for bad in [
            &br#"{"v":1,"seq":3,"cycle":4,"slot":17,"correlation_id":null,"type":"bids_retained","bids":[]}"#[..],
            br#"{"v":1,"seq":3,"cycle":4,"slot":17,"correlation_id":null,"type":"bid_lost","bids":[["b","a",null]]}"#,
            br#"{"v":2,"seq":3,"cycle":4,"slot":17,"correlation_id":null,"type":"bids_retained","bids":[["b","a",null]]}"#,
            br#"{"v":1,"seq":3,"cycle":4,"slot":17,"correlation_id":null,"type":"bids_retained","bids":[["b","a",null]],"x":1}"#,
            br#"{"v":1,"seq":3,"cycle":4,"slot":17,"correlation_id":null,"type":"bids_retained","bids":[["b c","a",null]]}"#,
        ] {
            assert!(Event::from_lines(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
