//! Events onto the `audit_log` stream, acknowledged and exactly once; prices and balances into
//! their KV buckets after every cycle.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, kv, stream};
use bytes::Bytes;

use super::Subjects;
use super::trace::{ServerSpan, Spans};
use super::wire::BalanceReply;
use crate::{AgentId, Event, EventKind, Market};

/// The header carrying a request's correlation id onto the events it caused.
pub const CORRELATION_ID: &str = "correlation-id";

/// Publishes never give up on an event before this many rounds (about half a minute).
const ATTEMPTS: u32 = 40;

/// Publishes awaiting their acks at once: well under the client's limit on acks in flight
/// (5,000), past which a publish waits for an ack that nobody awaits.
const WINDOW: usize = 1024;

/// Where events and state go: the stream and the two buckets, created or bound at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    js: jetstream::Context,
    subjects: Subjects,
    market: String,
}

impl Sink {
    /// Creates the stream and buckets, or binds to them if they exist.
    pub(crate) async fn open(
        js: jetstream::Context,
        subjects: Subjects,
        market: String,
        replicas: usize,
    ) -> Result<Sink, async_nats::Error> {
        js.get_or_create_stream(stream::Config {
            name: subjects.stream(),
            subjects: vec![subjects.events()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await?;
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
        Ok(Sink { js, subjects, market })
    }

    /// Publishes `events` in order, pipelined in windows of [`WINDOW`], and returns once the
    /// stream acknowledged every one. Failed publishes are sent again together, with the same
    /// `Nats-Msg-Id`, so the stream keeps each event once; the positions of events still refused
    /// after [`ATTEMPTS`] rounds are returned (their requests are never told they succeeded).
    pub(crate) async fn publish(&self, events: &[Event], spans: &std::sync::Mutex<Spans>) -> Vec<usize> {
        let spans: Vec<Option<std::sync::Arc<ServerSpan>>> = {
            let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
            events.iter().map(|e| spans.take(e)).collect()
        };
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut pause = Duration::from_millis(10);
        for round in 1..=ATTEMPTS {
            let mut failed = Vec::new();
            for window in pending.chunks(WINDOW) {
                let mut acks = Vec::with_capacity(window.len());
                for &i in window {
                    match self.send(&events[i], spans[i].as_deref()).await {
                        Ok(ack) => acks.push((i, ack)),
                        Err(_) => failed.push(i),
                    }
                }
                for (i, ack) in acks {
                    if ack.await.is_err() {
                        failed.push(i);
                    }
                }
            }
            if failed.is_empty() {
                return failed;
            }
            failed.sort_unstable();
            pending = failed;
            if round < ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
        eprintln!("audit_log refused {} events after {ATTEMPTS} rounds", pending.len());
        pending
    }

    async fn send(
        &self,
        event: &Event,
        span: Option<&ServerSpan>,
    ) -> Result<PublishAckFuture, async_nats::Error> {
        let mut headers = HeaderMap::new();
        let id = format!("{}:{}", self.market, event.seq);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        if let Some(cid) = &event.correlation_id {
            headers.insert(CORRELATION_ID, &**cid);
        }
        if let Some(span) = span {
            span.inject(&mut headers);
        }
        let subject = self.subjects.event(&event.kind);
        Ok(self.js.publish_with_headers(subject, headers, Bytes::from(event.to_json())).await?)
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
            eprintln!("the state buckets refused {refused} updates");
        }
    }
}

/// The agents whose balance an event changes.
pub(crate) fn touched(event: &Event, agents: &mut BTreeSet<AgentId>) {
    match &event.kind {
        EventKind::BidAccepted { agent, .. }
        | EventKind::BidCancelled { agent, .. }
        | EventKind::BidWon { agent, .. }
        | EventKind::BidLost { agent, .. }
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
