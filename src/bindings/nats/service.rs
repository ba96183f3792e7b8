//! [`MarketService`]: a [`Market`] behind its NATS subjects, with a clearing loop and the writer
//! that sequences intake and publishes events.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::handlers;
use super::publisher::{Sink, touched};
use super::subjects::Subjects;
use super::trace::{ServerSpan, Spans};
use super::waiters::Waiters;
use crate::{AgentId, Event, EventKind, Market, RejectCode, Rejection, Slot, Subscription};

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Subjects, stream and buckets under this namespace (docs/design.md §10); none by default.
    pub namespace: Option<String>,
    /// How often the market clears; `None` clears only on `admin.market.clear`. A market with
    /// no live bids clears once per slot only, to move its clock on.
    pub cadence: Option<Duration>,
    /// Replicas of the stream and buckets (1 on a single server).
    pub replicas: usize,
    /// Largest request payload answered; larger ones are refused as `malformed`.
    pub max_payload: usize,
    /// How long a request may wait for its event to be acknowledged before the service stops
    /// waiting (the caller's own timeout is usually shorter).
    pub reply_within: Duration,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            namespace: None,
            cadence: Some(Duration::from_millis(100)),
            replicas: 1,
            max_payload: 1 << 20,
            reply_within: Duration::from_secs(30),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The namespace is not a subject token.
    #[error("namespace: {0}")]
    Namespace(#[from] crate::IdError),
    /// NATS refused a subscription, the stream or a bucket.
    #[error("nats: {0}")]
    Nats(#[from] async_nats::Error),
}

/// The market's slot by the wall clock: the market's slot at start-up, then one more every
/// `slot_ms`.
#[derive(Debug)]
pub(super) struct Clock {
    started: Instant,
    base: u64,
    slot_ms: u64,
}

impl Clock {
    pub(super) fn slot(&self) -> Slot {
        let elapsed = self.started.elapsed().as_millis() as u64;
        Slot(self.base + elapsed / self.slot_ms.max(1))
    }
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) market: Arc<Market>,
    pub(super) client: Client,
    pub(super) subjects: Subjects,
    pub(super) config: ServiceConfig,
    pub(super) waiters: Mutex<Waiters>,
    /// Rung when intake has something to sequence.
    pub(super) wake: Notify,
    /// The latest `price_discovered` per resource, as published.
    pub(super) prices: Mutex<Vec<(Arc<str>, Bytes)>>,
    pub(super) clock: Clock,
    /// The spans events go out under.
    pub(super) spans: Mutex<Spans>,
    /// One clearing at a time (the loop's or an operator's), so the next cycle's number is known
    /// before it runs.
    pub(super) clearing: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn spans(&self) -> MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clears at `slot` under `span` (a new root span when `None`).
    pub(super) async fn clear(
        &self,
        slot: Slot,
        cid: Option<String>,
        span: Option<&ServerSpan>,
    ) -> crate::Result<crate::CycleReport> {
        let _one = self.clearing.lock().await;
        let market = self.market.clone();
        let cycle = market.cycles() + 1;
        self.spans().expect_cycle(cycle, Arc::new(ServerSpan::cycle(cycle, span)));
        let report = tokio::task::spawn_blocking(move || market.tagged(cid.as_deref()).clear(slot))
            .await
            .unwrap_or_else(|e| Err(Rejection::new(RejectCode::Malformed, format!("clearing failed: {e}"))));
        if report.is_err() {
            self.spans().drop_cycle(cycle);
        }
        self.wake.notify_one();
        report
    }
}

/// A [`Market`] served over NATS (docs/design.md §10).
///
/// Requests on `market.*`, `economic.*` and `admin.market.*` are answered with the `seq` of the
/// event they caused once the `audit_log` stream has acknowledged it; every event goes to
/// `system.market.<type>` / `system.economy.<type>` with `Nats-Msg-Id` = `<market>:<seq>`;
/// prices and balances go to their KV buckets after every cycle. The agent is always the one the
/// subject names.
#[derive(Debug)]
pub struct MarketService {
    shared: Arc<Shared>,
    stop_requests: watch::Sender<bool>,
    stop_writer: watch::Sender<bool>,
    requests: tokio::task::JoinHandle<JoinSet<()>>,
    clearing: Option<tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<()>,
    state: tokio::task::JoinHandle<()>,
}

impl MarketService {
    /// Binds the stream and buckets (creating them if needed), subscribes to the request
    /// subjects and starts the writer and, with a cadence, the clearing loop.
    ///
    /// # Errors
    ///
    /// A bad namespace, or NATS refusing a subscription, the stream or a bucket.
    pub async fn start(
        client: Client,
        market: Arc<Market>,
        config: ServiceConfig,
    ) -> Result<MarketService, ServiceError> {
        let subjects = Subjects::new(config.namespace.as_deref())?;
        let js = async_nats::jetstream::new(client.clone());
        let sink = Sink::open(js, subjects.clone(), market.config().name.clone(), config.replicas).await?;
        let events = market.subscribe();
        let mut subscribers = Vec::new();
        for subject in subjects.served() {
            subscribers.push(client.subscribe(subject).await.map_err(async_nats::Error::from)?);
        }
        client.flush().await.map_err(async_nats::Error::from)?;
        let clock =
            Clock { started: Instant::now(), base: market.now().get(), slot_ms: market.config().slot_ms };
        let shared = Arc::new(Shared {
            market,
            client,
            subjects,
            config,
            waiters: Mutex::new(Waiters::default()),
            wake: Notify::new(),
            prices: Mutex::new(Vec::new()),
            clock,
            spans: Mutex::new(Spans::default()),
            clearing: tokio::sync::Mutex::new(()),
        });
        let (stop_requests, requests_stopped) = watch::channel(false);
        let (stop_writer, writer_stopped) = watch::channel(false);
        let requests = tokio::spawn(serve(shared.clone(), subscribers, requests_stopped.clone()));
        let clearing =
            shared.config.cadence.map(|c| tokio::spawn(clear_every(shared.clone(), c, requests_stopped)));
        let (state_tx, state_rx) = tokio::sync::mpsc::unbounded_channel();
        let state = tokio::spawn(put_state(shared.clone(), sink.clone(), state_rx));
        let writer = tokio::spawn(write(shared.clone(), sink, events, state_tx, writer_stopped));
        Ok(MarketService { shared, stop_requests, stop_writer, requests, clearing, writer, state })
    }

    /// The market served.
    pub fn market(&self) -> &Arc<Market> {
        &self.shared.market
    }

    /// The subjects served.
    pub fn subjects(&self) -> &Subjects {
        &self.shared.subjects
    }

    /// Stops taking requests, lets the clearing loop finish its cycle, publishes every event
    /// still unpublished, answers the requests in flight, and returns.
    pub async fn shutdown(self) {
        let _ = self.stop_requests.send(true);
        let in_flight = self.requests.await.unwrap_or_default();
        if let Some(clearing) = self.clearing {
            let _ = clearing.await;
        }
        let _ = self.stop_writer.send(true);
        let _ = self.writer.await;
        let _ = self.state.await;
        let _ = tokio::time::timeout(self.shared.config.reply_within, in_flight.join_all()).await;
        let _ = self.shared.client.flush().await;
    }
}

/// Takes requests until stopped, each in a task of its own; returns the tasks still running.
async fn serve(
    shared: Arc<Shared>,
    subscribers: Vec<async_nats::Subscriber>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut requests = futures_util::stream::select_all(subscribers);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            message = requests.next() => match message {
                Some(message) => {
                    while tasks.try_join_next().is_some() {}
                    tasks.spawn(handlers::answer(shared.clone(), message));
                }
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    tasks
}

/// Clears every `cadence` at the clock's slot until stopped.
async fn clear_every(shared: Arc<Shared>, cadence: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(cadence);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let market = &shared.market;
        let slot = shared.clock.slot().max(market.now());
        // An idle market clears once per slot, to move time on (bids without a start begin at
        // the market's slot); that keeps empty cycles from filling the audit log.
        if market.live_bids() == 0 && slot == market.now() {
            continue;
        }
        // A refusal means an operator cleared at a later slot meanwhile: the next tick catches up.
        let _ = shared.clear(slot, None, None).await;
    }
}

/// How often the writer sequences intake when nobody rings.
const WRITER_IDLE: Duration = Duration::from_millis(20);

/// What the KV buckets get after a cycle: its prices, and the agents whose balance changed.
type StateUpdate = (Vec<Event>, BTreeSet<AgentId>);

/// The writer: sequences intake when rung (or every [`WRITER_IDLE`]), publishes the events, then
/// answers the requests waiting for them; after every cycle, hands the KV update to
/// [`put_state`]. On stop, one last round publishes everything accepted so far.
async fn write(
    shared: Arc<Shared>,
    sink: Sink,
    mut events: Subscription,
    state: tokio::sync::mpsc::UnboundedSender<StateUpdate>,
    mut stop: watch::Receiver<bool>,
) {
    let mut agents = BTreeSet::new();
    loop {
        let stopping = tokio::select! {
            _ = shared.wake.notified() => false,
            _ = tokio::time::sleep(WRITER_IDLE) => false,
            _ = stop.changed() => true,
        };
        let market = shared.market.clone();
        let drained = tokio::task::spawn_blocking(move || {
            market.flush();
            let batch = events.drain();
            (events, batch)
        })
        .await;
        let Ok((back, batch)) = drained else { return };
        events = back;
        if !batch.is_empty() {
            let lost = sink.publish(&batch, &shared.spans).await;
            let acknowledged: Vec<Event> = if lost.is_empty() {
                batch
            } else {
                batch.into_iter().enumerate().filter(|(i, _)| !lost.contains(i)).map(|(_, e)| e).collect()
            };
            if let Some(update) = after_publish(&shared, &acknowledged, &mut agents) {
                let _ = state.send(update);
            }
        }
        if stopping {
            return;
        }
    }
}

/// Answers the waiting requests and keeps the latest prices; after a cycle, the KV update.
fn after_publish(shared: &Shared, events: &[Event], agents: &mut BTreeSet<AgentId>) -> Option<StateUpdate> {
    shared.waiters().published(events, shared.market.config().dedupe_cycles);
    let mut prices = Vec::new();
    let mut cycle_ended = false;
    for event in events {
        touched(event, agents);
        match &event.kind {
            EventKind::PriceDiscovered { resource, .. } => {
                let mut latest = shared.prices.lock().unwrap_or_else(|e| e.into_inner());
                let json = Bytes::from(event.to_json());
                match latest.iter_mut().find(|(r, _)| r == resource) {
                    Some(slot) => slot.1 = json,
                    None => latest.push((resource.clone(), json)),
                }
                prices.push(event.clone());
            }
            EventKind::CycleCleared { .. } => cycle_ended = true,
            _ => {}
        }
    }
    cycle_ended.then(|| (prices, std::mem::take(agents)))
}

/// Writes the KV buckets after each cycle, off the writer's path; when it falls behind, queued
/// updates are merged (latest price per resource, every agent once).
async fn put_state(
    shared: Arc<Shared>,
    sink: Sink,
    mut updates: tokio::sync::mpsc::UnboundedReceiver<StateUpdate>,
) {
    while let Some((mut prices, mut agents)) = updates.recv().await {
        while let Ok((more, touched)) = updates.try_recv() {
            prices.extend(more);
            agents.extend(touched);
        }
        let mut latest: Vec<&Event> = Vec::new();
        for event in prices.iter().rev() {
            let EventKind::PriceDiscovered { resource, .. } = &event.kind else { continue };
            if !latest
                .iter()
                .any(|e| matches!(&e.kind, EventKind::PriceDiscovered { resource: r, .. } if r == resource))
            {
                latest.push(event);
            }
        }
        sink.put_state(&shared.market, &latest, &agents).await;
    }
}
