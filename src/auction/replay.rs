//! [`Market::replay`]: a restored market brought forward by the events that followed its
//! snapshot — a standby following a leader's journal, or a process recovering its own.
//!
//! Intake events are applied as recorded (an accepted bid is escrowed and booked, whatever the
//! checks that admitted it would say now), then sequenced again by the same code live intake
//! uses, so the event the replay makes must equal the one given. A cycle is cut at its
//! `cycle_started` from the book as it stood; when its outcome arrives, placement and price
//! discovery run again while payments and shortfalls are taken from the recorded events, and the
//! outcome events made must equal the recorded ones. Any difference stops the replay: the events
//! are not this state's.

use std::sync::atomic::Ordering;

use super::book::BookBid;
use super::clearing::{self, Track};
use super::cycle::{Cleared, Cut, Outcome};
use super::engine::Engine;
use super::error::Rejection;
use super::events::{Event, EventKind};
use super::intake::Entry;
use super::market::Market;
use super::snapshot::PendingBid;
use super::snapshot::StateError;
use crate::capacity::ResourceId;

impl Market {
    /// Applies `events`, which must follow the market's last event without a gap, as the
    /// market that made them did. A cycle whose outcome is not among them stays in flight:
    /// later events may bring it, or [`resume`](Market::resume) finishes it. Events go to no
    /// subscriber (they are already known). Do not run intake on the market meanwhile.
    ///
    /// # Errors
    ///
    /// A [`StateError::Gap`], or [`StateError::Diverged`] for an event this state cannot have
    /// made; the market is then in no defined state and must be discarded.
    ///
    /// # Examples
    ///
    /// ```
    /// use capacity_auction::{AgentId, Bid, BidId, Market, Slot};
    ///
    /// let build = || Market::builder().resources(["cpu"]).build();
    /// let live = build()?;
    /// let follower = Market::restore(build()?.snapshot()?)?;
    /// let mut events = live.subscribe();
    /// let a = AgentId::new("a")?;
    /// live.deposit(&a, "10".parse()?)?;
    /// let bundle = live.bundle([("cpu", "0.5")])?;
    /// live.submit(Bid::new(BidId::new("b1")?, a.clone(), bundle, 2, "4".parse()?))?;
    /// live.clear(Slot(0))?;
    /// follower.replay(&events.drain())?;
    /// assert_eq!(follower.state_hash()?, live.state_hash()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> Result<(), StateError> {
        let mut engine = self.engine();
        for event in events {
            if event.seq != engine.seq + 1 {
                return Err(StateError::Gap { expected: engine.seq + 1, got: event.seq });
            }
            let diverged = |why: String| StateError::Diverged { seq: event.seq, why };
            if let Some(cut) = &engine.in_flight
                && event.cycle == Some(cut.cycle)
            {
                self.replay_outcome(&mut engine, event).map_err(diverged)?;
            } else {
                self.replay_one(&mut engine, event).map_err(diverged)?;
            }
        }
        Ok(())
    }

    /// Applies one event outside a cycle's outcome.
    fn replay_one(&self, engine: &mut Engine, event: &Event) -> Result<(), String> {
        if engine.now != event.slot && !matches!(event.kind, EventKind::CycleStarted { .. }) {
            return Err(format!("made at slot {}, the market is at slot {}", event.slot, engine.now));
        }
        let cid = event.correlation_id.clone();
        match &event.kind {
            EventKind::BidAccepted {
                bid,
                agent,
                beneficiary,
                bundle,
                duration,
                earliest_start,
                latest_end,
                limit,
                good_for,
            } => {
                let written = PendingBid {
                    bid: bid.clone(),
                    agent: agent.clone(),
                    beneficiary: beneficiary.clone(),
                    bundle: bundle.clone(),
                    duration: *duration,
                    earliest_start: *earliest_start,
                    latest_end: *latest_end,
                    limit: *limit,
                    cycles_left: *good_for,
                    seq: event.seq,
                    correlation_id: cid,
                };
                let account =
                    self.ledger.account_of(agent).ok_or_else(|| format!("agent `{agent}` has no account"))?;
                let booked = BookBid::from_written(&self.config, account, written)?;
                self.ledger.apply_accepted(&self.intake, &booked)?;
                engine.sequence(Entry::Accepted(booked));
                engine.accepted.clear();
            }
            EventKind::BidRejected { bid, agent, reason, message } => {
                let rejection = Rejection { code: *reason, message: message.clone() };
                self.ledger.apply_rejected(&self.intake, bid, agent, &rejection);
                engine.sequence(Entry::Rejected {
                    bid: bid.clone(),
                    agent: agent.clone(),
                    rejection,
                    correlation_id: cid,
                    remember: None,
                });
            }
            EventKind::BidCancelled { bid, agent } => {
                self.ledger.apply_cancelled(&self.intake, agent, bid)?;
                engine.sequence(Entry::Cancelled {
                    agent: agent.clone(),
                    bid: bid.clone(),
                    correlation_id: cid,
                    remember: None,
                });
            }
            EventKind::CreditsDeposited { agent, amount } if event.cycle.is_none() => {
                self.ledger.apply_deposit(agent, *amount)?;
                let entry = Entry::Deposited { agent: agent.clone(), amount: *amount, correlation_id: cid };
                engine.sequence(entry);
            }
            EventKind::CreditsTransferred { from, to, amount } if event.cycle.is_none() => {
                self.ledger.apply_transfer(from, to, *amount)?;
                let entry = Entry::Transferred {
                    from: from.clone(),
                    to: to.clone(),
                    amount: *amount,
                    correlation_id: cid,
                };
                engine.sequence(entry);
            }
            EventKind::CapacityChanged { resource, from_slot, to_slot, capacity } => {
                engine.timeline.set_capacity(self.resource(resource)?, *from_slot, *to_slot, *capacity);
                engine.emit(None, cid, event.kind.clone());
            }
            EventKind::CycleStarted { .. } => {
                if event.cycle != Some(engine.cycle + 1) {
                    return Err(format!("cycle {:?} does not follow cycle {}", event.cycle, engine.cycle));
                }
                if event.slot < engine.now {
                    return Err(format!(
                        "clears at slot {}, before the market's slot {}",
                        event.slot, engine.now
                    ));
                }
                self.intake.cut(&mut self.reader(), |e| engine.sequence(e));
                self.now.store(event.slot.0, Ordering::Release);
                let cut = engine.take_cut(event.slot, cid).split();
                engine.in_flight = Some(cut);
            }
            _ => return Err(format!("a `{}` outside its cycle's outcome", event.kind.type_name())),
        }
        let made = engine.take_unpublished();
        match made.as_slice() {
            [one] if one == event => Ok(()),
            _ => Err(format!(
                "the state makes {}",
                made.iter().map(Event::to_json).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Collects an event of the in-flight cycle's outcome; at its `cycle_cleared`, applies the
    /// outcome and checks every event it made against the recorded ones.
    fn replay_outcome(&self, engine: &mut Engine, event: &Event) -> Result<(), String> {
        engine.seq = event.seq;
        engine.outcome.push(event.clone());
        if !matches!(event.kind, EventKind::CycleCleared { .. }) {
            return Ok(());
        }
        let recorded = std::mem::take(&mut engine.outcome);
        let mut cut = engine.in_flight.take().expect("a cycle in flight");
        engine.seq = recorded[0].seq - 1;
        let cleared = recleared(&mut cut, &recorded);
        let outcome = Outcome::of(cut, cleared, false);
        let report = engine.apply((&self.ledger, &self.intake, &self.lines), outcome);
        let made = engine.take_unpublished();
        if made != recorded {
            let first = made.iter().zip(&recorded).find(|(m, r)| m != r);
            return Err(match first {
                Some((m, r)) => format!("the cycle makes {} where {} was recorded", m.to_json(), r.to_json()),
                None => format!("the cycle makes {} events, {} were recorded", made.len(), recorded.len()),
            });
        }
        self.cycles.store(report.cycle, Ordering::Release);
        self.intake.thaw();
        self.ledger.forget(report.cycle, self.config.dedupe_cycles);
        Ok(())
    }

    fn resource(&self, name: &str) -> Result<ResourceId, String> {
        self.config.resources.find(name).ok_or_else(|| format!("the market sells no resource `{name}`"))
    }
}

/// A cut cleared again for replay: placement and prices recomputed, payments and shortfalls as
/// `recorded` (the cycle's outcome events) gives them.
fn recleared(cut: &mut Cut, recorded: &[Event]) -> Cleared {
    let config = cut.config.clone();
    let mut bids = std::mem::take(&mut cut.bids);
    let mut left = cut.initial.clone();
    let placement = clearing::place(config.priority, cut.now.0, &mut bids, &mut left, (Track::Starts, None));
    let discovery = clearing::discover(&config, &bids, &placement, &left);
    let mut paid = foldhash::HashMap::default();
    let mut short = foldhash::HashMap::default();
    for e in recorded {
        match &e.kind {
            EventKind::BidWon { bid, agent, payment, .. } => {
                paid.insert((agent.clone(), bid.clone()), *payment);
            }
            EventKind::BidLost { bid, agent, shortfall: Some(s), .. } => {
                short.insert((agent.clone(), bid.clone()), *s);
            }
            _ => {}
        }
    }
    let key = |b: &BookBid| (b.agent.clone(), b.id.clone());
    let payments = bids.iter().map(|b| paid.get(&key(b)).copied()).collect();
    let thresholds = bids.iter().map(|b| short.get(&key(b)).map(|s| s.micros() + b.limit.micros())).collect();
    Cleared { bids, placement, thresholds, critical: false, discovery, payments }
}
