//! Prices and balances into their KV buckets, off the path of replies.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use super::Subjects;
use super::wire::BalanceReply;
use crate::{AgentId, Event, EventKind, Market};

/// The header carrying a request's correlation id onto the events it caused.
pub const CORRELATION_ID: &str = "correlation-id";

/// Puts awaiting their acks at once. Few: the puts share the service's connection and the
/// server with the journal and the replies, and a wall of them (a put for every agent that bid
/// in the last second) ahead of a reply is that reply's latency. Thirty-two at a time still put
/// thousands of balances a second.
const WINDOW: usize = 32;

/// The KV buckets the service writes: the latest prices and balances.
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    js: jetstream::Context,
    subjects: Subjects,
}

impl Buckets {
    /// Creates the buckets, or binds to them if they exist.
    pub(crate) async fn open(
        js: jetstream::Context,
        subjects: Subjects,
        replicas: usize,
    ) -> Result<Buckets, async_nats::Error> {
        for bucket in [subjects.prices_bucket(), subjects.agents_bucket()] {
            if js.get_key_value(bucket.as_str()).await.is_err() {
                js.create_key_value(kv::Config {
                    bucket,
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(Buckets { js, subjects })
    }

    /// Puts the latest `price_discovered` per resource and the balances of `agents` into the
    /// buckets, pipelined.
    pub(crate) async fn put_state(&self, market: &Market, prices: &[&Event], agents: &BTreeSet<AgentId>) {
        let mut puts: Vec<(String, Bytes)> = Vec::with_capacity(prices.len() + agents.len());
        for event in prices {
            if let EventKind::PriceDiscovered { resource, .. } = &event.kind {
                let subject = format!("$KV.{}.{resource}", self.subjects.prices_bucket());
                puts.push((subject, Bytes::from(event.to_json())));
            }
        }
        for agent in agents {
            let Some(balance) = market.balance(agent) else { continue };
            let reply = BalanceReply {
                agent: agent.to_string(),
                available: balance.available,
                escrowed: balance.escrowed,
            };
            let json = serde_json::to_vec(&reply).expect("balances always serialize");
            puts.push((format!("$KV.{}.{agent}", self.subjects.agents_bucket()), Bytes::from(json)));
        }
        let mut refused = 0;
        for window in puts.chunks(WINDOW) {
            let mut acks = Vec::with_capacity(window.len());
            for (subject, payload) in window {
                acks.push(self.js.publish(subject.clone(), payload.clone()).await);
            }
            for ack in acks {
                let acked = match ack {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                refused += usize::from(!acked);
            }
        }
        if refused > 0 {
            tracing::warn!("the state buckets refused {refused} updates");
        }
    }
}

/// The agents whose balance an event changes (a loss that keeps its bid in the book changes
/// nothing: the escrow stays).
pub(crate) fn touched(event: &Event, agents: &mut BTreeSet<AgentId>) {
    match &event.kind {
        EventKind::BidAccepted { agent, .. }
        | EventKind::BidCancelled { agent, .. }
        | EventKind::BidWon { agent, .. }
        | EventKind::BidLost { agent, retained: false, .. }
        | EventKind::BidExpired { agent, .. }
        | EventKind::CreditsDeposited { agent, .. }
        | EventKind::CreditsBurned { agent, .. } => {
            agents.insert(agent.clone());
        }
        EventKind::CreditsTransferred { from, to, .. } => {
            agents.insert(from.clone());
            agents.insert(to.clone());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::Slot;
    use crate::{BidId, EventKind};

    fn lost(agent: &AgentId, retained: bool) -> Event {
        let kind = EventKind::BidLost {
            bid: BidId::new("b").unwrap(),
            agent: agent.clone(),
            retained,
            shortfall: None,
        };
        Event { seq: 1, cycle: Some(1), slot: Slot(0), correlation_id: None, kind }
    }

    #[test]
    fn only_a_loss_that_leaves_the_book_touches_a_balance() {
        let agent = AgentId::new("a").unwrap();
        let mut agents = BTreeSet::new();
        touched(&lost(&agent, true), &mut agents);
        assert!(agents.is_empty(), "a retained bid keeps its escrow");
        touched(&lost(&agent, false), &mut agents);
        assert_eq!(agents.into_iter().collect::<Vec<_>>(), [agent]);
    }
}
