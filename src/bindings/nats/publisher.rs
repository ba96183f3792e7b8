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

/// Publishes never give up on an event before this many attempts (about half a minute).
const ATTEMPTS: u32 = 40;

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

    /// Publishes `events` in order, pipelined, and returns once the stream acknowledged every
    /// one. A failed publish is retried with the same `Nats-Msg-Id`, so the stream keeps each
    /// event once; the positions of events still refused after [`ATTEMPTS`] are returned (their
    /// requests are never told they succeeded).
    pub(crate) async fn publish(&self, events: &[Event], spans: &std::sync::Mutex<Spans>) -> Vec<usize> {
        let spans: Vec<Option<std::sync::Arc<ServerSpan>>> = {
            let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
            events.iter().map(|e| spans.take(e)).collect()
        };
        let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match self.send(event, spans[i].as_deref()).await {
                Ok(ack) => acks.push((i, ack)),
                Err(_) => failed.push(i),
            }
        }
        for (i, ack) in acks {
            if ack.await.is_err() {
                failed.push(i);
            }
        }
        failed.sort_unstable();
        let mut lost = Vec::new();
        for i in failed {
            if !self.retry(&events[i], spans[i].as_deref()).await {
                lost.push(i);
            }
        }
        lost
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

    async fn retry(&self, event: &Event, span: Option<&ServerSpan>) -> bool {
        let mut pause = Duration::from_millis(10);
        for _ in 1..ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            if let Ok(ack) = self.send(event, span).await
                && ack.await.is_ok()
            {
                return true;
            }
        }
        eprintln!("audit_log refused event {} after {ATTEMPTS} attempts", event.seq);
        false
    }

    /// Puts the latest `price_discovered` per resource and the balances of `agents` into the
    /// buckets, pipelined.
    pub(crate) async fn put_state(&self, market: &Market, prices: &[&Event], agents: &BTreeSet<AgentId>) {
        let mut acks = Vec::with_capacity(prices.len() + agents.len());
        for event in prices {
            if let EventKind::PriceDiscovered { resource, .. } = &event.kind {
                let subject = format!("$KV.{}.{resource}", self.subjects.prices_bucket());
                acks.push(self.js.publish(subject, Bytes::from(event.to_json())).await);
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
            let subject = format!("$KV.{}.{agent}", self.subjects.agents_bucket());
            acks.push(self.js.publish(subject, Bytes::from(json)).await);
        }
        for ack in acks {
            let acked = match ack {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if !acked {
                eprintln!("a state bucket refused an update; the next cycle writes it again");
            }
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
