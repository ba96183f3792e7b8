//! [`MarketService`]: a [`Market`] behind its NATS subjects, with a clearing loop and the writer
//! that sequences intake and publishes events.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::{Client, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::publisher::{CORRELATION_ID, Sink, touched};
use super::subjects::{Route, Subjects};
use super::trace::{Origin, ServerSpan, Spans};
use super::waiters::{Key, Wait, Waiters};
use super::wire::{self, BalanceReply, Reply};
use crate::{
    AgentId, BidId, Capacity, Correlated, Credits, Event, EventKind, Market, RejectCode, Rejection, Slot,
    Subscription,
};

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Subjects, stream and buckets under this namespace (DESIGN.md §10); none by default.
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
struct Clock {
    started: Instant,
    base: u64,
    slot_ms: u64,
}

impl Clock {
    fn slot(&self) -> Slot {
        let elapsed = self.started.elapsed().as_millis() as u64;
        Slot(self.base + elapsed / self.slot_ms.max(1))
    }
}

#[derive(Debug)]
struct Shared {
    market: Arc<Market>,
    client: Client,
    subjects: Subjects,
    config: ServiceConfig,
    waiters: Mutex<Waiters>,
    /// Rung when intake has something to sequence.
    wake: Notify,
    /// The latest `price_discovered` per resource, as published.
    prices: Mutex<Vec<(Arc<str>, Bytes)>>,
    clock: Clock,
    /// The spans events go out under.
    spans: Mutex<Spans>,
    /// One clearing at a time (the loop's or an operator's), so the next cycle's number is known
    /// before it runs.
    clearing: tokio::sync::Mutex<()>,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spans(&self) -> MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clears at `slot` under `span` (a new root span when `None`).
    async fn clear(
        &self,
        slot: Slot,
        cid: Option<String>,
        span: Option<&ServerSpan>,
    ) -> crate::Result<crate::CycleReport> {
        let _one = self.clearing.lock().await;
        let market = self.market.clone();
        let cycle = market.cycles() + 1;
        self.spans().expect_cycle(cycle, Arc::new(ServerSpan::cycle(cycle, span)));
        let report = tokio::task::spawn_blocking(move || match &cid {
            Some(cid) => market.correlated(cid).clear(slot),
            None => market.clear(slot),
        })
        .await
        .unwrap_or_else(|e| Err(Rejection::new(RejectCode::Malformed, format!("clearing failed: {e}"))));
        if report.is_err() {
            self.spans().drop_cycle(cycle);
        }
        self.wake.notify_one();
        report
    }
}

/// A [`Market`] served over NATS (DESIGN.md §10).
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
        let writer = tokio::spawn(write(shared.clone(), sink, events, writer_stopped));
        Ok(MarketService { shared, stop_requests, stop_writer, requests, clearing, writer })
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
                    tasks.spawn(answer(shared.clone(), message));
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

/// The writer: sequences intake when rung (or every [`WRITER_IDLE`]), publishes the events, then
/// answers the requests waiting for them; after every cycle, updates the KV buckets. On stop, one
/// last round publishes everything accepted so far.
async fn write(shared: Arc<Shared>, sink: Sink, mut events: Subscription, mut stop: watch::Receiver<bool>) {
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
            after_publish(&shared, &sink, &acknowledged, &mut agents).await;
        }
        if stopping {
            return;
        }
    }
}

async fn after_publish(shared: &Shared, sink: &Sink, events: &[Event], agents: &mut BTreeSet<AgentId>) {
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
                prices.push(event);
            }
            EventKind::CycleCleared { .. } => cycle_ended = true,
            _ => {}
        }
    }
    if cycle_ended {
        sink.put_state(&shared.market, &prices, agents).await;
        agents.clear();
    }
}

/// Answers one request on its reply subject.
async fn answer(shared: Arc<Shared>, message: Message) {
    let Some(reply_to) = message.reply.clone() else { return };
    let correlation_id =
        message.headers.as_ref().and_then(|h| h.get(CORRELATION_ID)).map(|v| v.as_str().to_owned());
    let body = respond(&shared, &message, correlation_id.as_deref()).await;
    let Some(body) = body else { return };
    let _ = shared.client.publish(reply_to, body).await;
}

fn refused(code: RejectCode, message: impl Into<String>) -> Bytes {
    Reply::refused(&Rejection::new(code, message)).to_bytes()
}

fn token<T>(parse: impl Fn(&str) -> Result<T, crate::IdError>, what: &str, s: &str) -> Result<T, Rejection> {
    parse(s).map_err(|_| {
        Rejection::new(RejectCode::Malformed, format!("{what} `{s}` is not 1 to 64 of [A-Za-z0-9_-]"))
    })
}

/// The reply body, or `None` when the service stopped waiting for the event (no reply: the
/// caller times out, as it would if the service had died).
async fn respond(shared: &Shared, message: &Message, cid: Option<&str>) -> Option<Bytes> {
    let payload = &message.payload[..];
    if payload.len() > shared.config.max_payload {
        let limit = shared.config.max_payload;
        return Some(refused(
            RejectCode::Malformed,
            format!("a payload of {} bytes is over {limit}", payload.len()),
        ));
    }
    let Some(route) = shared.subjects.route(&message.subject) else {
        return Some(refused(
            RejectCode::Malformed,
            format!("`{}` is not a market subject", message.subject),
        ));
    };
    let market = match cid {
        Some(cid) => shared.market.correlated(cid),
        None => shared.market.uncorrelated(),
    };
    let span = Arc::new(ServerSpan::request(route.name(), &message.subject, message.headers.as_ref()));
    let result = match route {
        Route::Bid(agent) => match token(AgentId::new, "agent", agent) {
            Ok(agent) => {
                let pending = submit(shared, &market, &agent, payload, &span);
                return finish(shared, pending).await.map(|r| r.to_bytes());
            }
            Err(r) => Err(r),
        },
        Route::Bids(agent) => return bids(shared, &market, agent, payload, &span).await,
        Route::Cancel(agent) => cancel(shared, cid, agent, payload, &span).await,
        Route::State(resource) => return Some(state(shared, resource)),
        Route::Balance(agent) => return Some(balance(shared, agent)),
        Route::Transfer(agent) => transfer(shared, &market, agent, payload, &span).await,
        Route::Deposit => deposit(shared, &market, payload, &span).await,
        Route::Capacity => capacity(shared, cid, payload, &span).await,
        Route::Clear => clear(shared, cid, payload, &span).await,
    };
    match result {
        Ok(wait) => wait_for(shared, wait).await.map(|seq| Reply::ok(seq).to_bytes()),
        Err(r) => {
            span.fail(&r.to_string());
            Some(Reply::refused(&r).to_bytes())
        }
    }
}

/// A submit's outcome before its event is out.
enum Pending {
    Done(Reply),
    Accepted(Wait),
    Repeat(AgentId, BidId, Wait),
}

fn submit(
    shared: &Shared,
    market: &Correlated<'_>,
    agent: &AgentId,
    json: &[u8],
    span: &Arc<ServerSpan>,
) -> Pending {
    if Spans::ON {
        shared.spans().expect(Origin::Bid(agent.to_string(), bid_id(json)), span);
    }
    match market.submit_json_as(agent, json) {
        Err(r) => {
            span.fail(&r.to_string());
            Pending::Done(Reply::refused(&r))
        }
        Ok(receipt) => {
            shared.wake.notify_one();
            let key = Key::Accepted(receipt.agent.clone(), receipt.bid.clone());
            let wait = shared.waiters().wait(key);
            if receipt.repeat {
                Pending::Repeat(receipt.agent, receipt.bid, wait)
            } else {
                Pending::Accepted(wait)
            }
        }
    }
}

/// The bid id a payload names, as a `bid_rejected` would write it.
fn bid_id(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        id: Option<String>,
    }
    serde_json::from_slice::<Named>(json).ok().and_then(|n| n.id).unwrap_or_default()
}

/// How long a repeat waits for the first acceptance's event when it is not remembered: it is
/// either in flight (and comes within a writer round) or forgotten.
const REPEAT_PATIENCE: Duration = Duration::from_secs(1);

async fn finish(shared: &Shared, pending: Pending) -> Option<Reply> {
    match pending {
        Pending::Done(reply) => Some(reply),
        Pending::Accepted(wait) => wait_for(shared, wait).await.map(Reply::ok),
        Pending::Repeat(agent, bid, wait) => {
            let seq = match wait {
                Wait::Known(seq) => Some(seq),
                Wait::Pending(rx) => {
                    let seq = tokio::time::timeout(REPEAT_PATIENCE, rx).await.ok().and_then(Result::ok);
                    seq.or_else(|| shared.waiters().known(&Key::Accepted(agent, bid)))
                }
            };
            Some(Reply::repeat(seq))
        }
    }
}

async fn wait_for(shared: &Shared, wait: Wait) -> Option<u64> {
    match wait {
        Wait::Known(seq) => Some(seq),
        Wait::Pending(rx) => tokio::time::timeout(shared.config.reply_within, rx).await.ok()?.ok(),
    }
}

async fn bids(
    shared: &Shared,
    market: &Correlated<'_>,
    agent: &str,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Option<Bytes> {
    let agent = match token(AgentId::new, "agent", agent) {
        Ok(a) => a,
        Err(r) => return Some(Reply::refused(&r).to_bytes()),
    };
    let items: Vec<Box<serde_json::value::RawValue>> = match wire::decode(payload) {
        Ok(items) => items,
        Err(r) => {
            let r = Rejection::new(r.code, format!("a batch is an array of bids: {}", r.message));
            return Some(Reply::refused(&r).to_bytes());
        }
    };
    let pending: Vec<Pending> =
        items.iter().map(|raw| submit(shared, market, &agent, raw.get().as_bytes(), span)).collect();
    let mut replies = Vec::with_capacity(pending.len());
    for p in pending {
        replies.push(finish(shared, p).await?);
    }
    Some(serde_json::to_vec(&replies).expect("replies always serialize").into())
}

/// Registers the wait for `key` (and its event's span), runs `op`, and keeps the wait only if
/// `op` succeeded.
fn waiting(
    shared: &Shared,
    key: Key,
    span: &Arc<ServerSpan>,
    op: impl FnOnce() -> crate::Result<()>,
) -> Result<Wait, Rejection> {
    shared.spans().expect(Origin::Operation(key.clone()), span);
    let wait = shared.waiters().wait(key.clone());
    match op() {
        Ok(()) => {
            shared.wake.notify_one();
            Ok(wait)
        }
        Err(r) => {
            drop(wait);
            shared.waiters().abandon(&key);
            Err(r)
        }
    }
}

async fn cancel(
    shared: &Shared,
    cid: Option<&str>,
    agent: &str,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Result<Wait, Rejection> {
    let agent = token(AgentId::new, "agent", agent)?;
    let request: wire::CancelRequest = wire::decode(payload)?;
    let bid = token(BidId::new, "bid", &request.bid)?;
    shared.spans().expect(Origin::Bid(agent.to_string(), bid.to_string()), span);
    let market = shared.market.clone();
    let cid = cid.map(str::to_owned);
    let (a, b) = (agent.clone(), bid.clone());
    // A cancel of a bid in the cycle being cleared waits for its outcome: off the async threads.
    let done = tokio::task::spawn_blocking(move || match &cid {
        Some(cid) => market.correlated(cid).cancel(&a, &b),
        None => market.cancel(&a, &b),
    })
    .await
    .map_err(|e| Rejection::new(RejectCode::Malformed, format!("cancel failed: {e}")))?;
    done?;
    shared.wake.notify_one();
    Ok(shared.waiters().wait(Key::Cancelled(agent, bid)))
}

fn state(shared: &Shared, resource: &str) -> Bytes {
    if shared.market.resources().find(resource).is_none() {
        return refused(RejectCode::UnknownResource, format!("the market sells no resource `{resource}`"));
    }
    let latest = shared.prices.lock().unwrap_or_else(|e| e.into_inner());
    match latest.iter().find(|(r, _)| &**r == resource) {
        Some((_, json)) => json.clone(),
        None => refused(RejectCode::NotFound, format!("no price discovered for `{resource}` yet")),
    }
}

fn balance(shared: &Shared, agent: &str) -> Bytes {
    let agent = match token(AgentId::new, "agent", agent) {
        Ok(a) => a,
        Err(r) => return Reply::refused(&r).to_bytes(),
    };
    match shared.market.balance(&agent) {
        Some(b) => {
            let reply =
                BalanceReply { agent: agent.to_string(), available: b.available, escrowed: b.escrowed };
            serde_json::to_vec(&reply).expect("balances always serialize").into()
        }
        None => refused(RejectCode::UnknownAgent, format!("agent `{agent}` has no account")),
    }
}

fn amount(d: rust_decimal::Decimal) -> Result<Credits, Rejection> {
    Credits::from_decimal(d).map_err(|e| Rejection::new(RejectCode::InvalidAmount, format!("amount: {e}")))
}

async fn transfer(
    shared: &Shared,
    market: &Correlated<'_>,
    agent: &str,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Result<Wait, Rejection> {
    let from = token(AgentId::new, "agent", agent)?;
    let request: wire::TransferRequest = wire::decode(payload)?;
    let to = token(AgentId::new, "agent", &request.to)?;
    let amount = amount(request.amount)?;
    let key = Key::Transferred(from.clone(), to.clone(), amount);
    waiting(shared, key, span, || market.transfer(&from, &to, amount))
}

async fn deposit(
    shared: &Shared,
    market: &Correlated<'_>,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Result<Wait, Rejection> {
    let request: wire::DepositRequest = wire::decode(payload)?;
    let agent = token(AgentId::new, "agent", &request.agent)?;
    let amount = amount(request.amount)?;
    waiting(shared, Key::Deposited(agent.clone(), amount), span, || market.deposit(&agent, amount))
}

async fn capacity(
    shared: &Shared,
    cid: Option<&str>,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Result<Wait, Rejection> {
    let request: wire::CapacityRequest = wire::decode(payload)?;
    let capacity = Capacity::from_decimal(request.capacity)
        .map_err(|e| Rejection::new(RejectCode::InvalidShare, format!("capacity: {e}")))?;
    let resource = shared.market.resources().find(&request.resource).ok_or_else(|| {
        Rejection::new(
            RejectCode::UnknownResource,
            format!("the market sells no resource `{}`", request.resource),
        )
    })?;
    let name = shared.market.resources().shared_name(resource);
    let (from, to) = (Slot(request.from_slot), Slot(request.to_slot));
    let key = Key::Capacity(name, from, to, capacity);
    let market = shared.market.clone();
    let cid = cid.map(str::to_owned);
    shared.spans().expect(Origin::Operation(key.clone()), span);
    let wait = shared.waiters().wait(key.clone());
    // Capacity changes wait for a running cycle: off the async threads.
    let done = tokio::task::spawn_blocking(move || {
        let m = match &cid {
            Some(cid) => market.correlated(cid),
            None => market.uncorrelated(),
        };
        m.set_capacity(&request.resource, from, to, capacity)
    })
    .await
    .map_err(|e| Rejection::new(RejectCode::Malformed, format!("capacity change failed: {e}")))?;
    if let Err(r) = done {
        drop(wait);
        shared.waiters().abandon(&key);
        return Err(r);
    }
    shared.wake.notify_one();
    Ok(wait)
}

async fn clear(
    shared: &Shared,
    cid: Option<&str>,
    payload: &[u8],
    span: &Arc<ServerSpan>,
) -> Result<Wait, Rejection> {
    let request: wire::ClearRequest =
        if payload.is_empty() { Default::default() } else { wire::decode(payload)? };
    let slot = request.at.map(Slot).unwrap_or_else(|| shared.clock.slot().max(shared.market.now()));
    let report = shared.clear(slot, cid.map(str::to_owned), Some(span)).await?;
    Ok(shared.waiters().wait(Key::Cycle(report.cycle)))
}
