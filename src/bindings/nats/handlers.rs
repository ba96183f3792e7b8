//! The request handlers: one function per subject, each answering with the `seq` of the event
//! it caused once the journal stored it, or with the refusal.
//!
//! Sizes are checked before anything is applied: payloads past `max_payload`, headers past
//! [`MAX_HEADER`] (a `correlation-id` past [`MAX_CORRELATION_ID`]) and batches past
//! [`MAX_BATCH`] bids are refused as `malformed`. Only the leader answers, and only while its
//! lease is good; while the journal or audit log is not keeping up, changes are refused as
//! `unavailable`.

use std::sync::Arc;

use async_nats::Message;
use bytes::Bytes;

use super::kv::CORRELATION_ID;
use super::service::Shared;
use super::subjects::Route;
use super::trace::{Origin, ServerSpan, Spans};
use super::waiters::Key;
use tokio::sync::oneshot;

/// A request task's wait for the `seq` of its event.
type Wait = oneshot::Receiver<u64>;
use super::wire::{self, BalanceReply, Reply};
use crate::{AgentId, BidId, Capacity, Correlated, Credits, RejectCode, Rejection, Slot};

/// The most bids one `market.bids` request may carry.
pub const MAX_BATCH: usize = 1024;
/// The longest `correlation-id` header taken, in bytes: it is copied onto every event the
/// request causes.
pub const MAX_CORRELATION_ID: usize = 256;
/// The most header bytes (names and values) a request may carry.
pub const MAX_HEADER: usize = 8 * 1024;

/// Takes one request: a single bid on the request loop itself (booked at once, its reply sent by
/// the writer once the journal holds the bid's event: no task, no wake-up per bid), anything else
/// in a task of its own.
pub(super) async fn receive(shared: &Arc<Shared>, message: Message, tasks: &mut tokio::task::JoinSet<()>) {
    match shared.subjects.route(&message.subject) {
        Some(Route::Bid(agent)) => {
            let agent = agent.to_owned();
            take_bid(shared, message, &agent).await;
        }
        _ => {
            tasks.spawn(answer(shared.clone(), message));
        }
    }
}

/// A single bid, on the request loop: see [`receive`].
async fn take_bid(shared: &Shared, message: Message, agent: &str) {
    let Some(reply_to) = message.reply.clone() else { return };
    if !shared.serving() {
        return;
    }
    let now = match bid_now(shared, &message, agent, reply_to.clone()) {
        Ok(Some(reply)) => reply,
        Ok(None) => return,
        Err(r) => Reply::refused(&r),
    };
    let _ = shared.client.publish(reply_to, now.to_bytes()).await;
}

/// Books a single bid; the reply to send now, or `None` when the writer will send it.
fn bid_now(
    shared: &Shared,
    message: &Message,
    agent: &str,
    reply_to: async_nats::Subject,
) -> Result<Option<Reply>, Rejection> {
    let cid = headers_fit(message)?;
    let payload = &message.payload[..];
    if payload.len() > shared.config.max_payload {
        let limit = shared.config.max_payload;
        return Err(Rejection::new(
            RejectCode::Malformed,
            format!("a payload of {} bytes is over {limit}", payload.len()),
        ));
    }
    if let Some(why) = shared.health.halted() {
        return Err(Rejection::new(RejectCode::Unavailable, format!("{why}; nothing was done, retry later")));
    }
    let agent = token(AgentId::new, "agent", agent)?;
    let span =
        Arc::new(ServerSpan::request(Route::Bid("").name(), &message.subject, message.headers.as_ref()));
    if Spans::ON {
        shared.spans().expect(Origin::Bid(agent.to_string(), bid_id(payload)), &span);
    }
    let market = shared.market.tagged(cid.as_deref());
    // The waiters stay locked from the submit to the registration, so the writer cannot journal
    // the bid's event in between and miss its reply.
    let mut waiters = shared.waiters();
    let answer = market.submit_json_as(&agent, payload);
    let reply = match answer {
        Err(r) => {
            span.fail(&r.to_string());
            Err(r)
        }
        Ok(receipt) => match receipt.seq {
            Some(seq) if receipt.repeat && seq <= shared.health.journaled() => {
                Ok(Some(Reply::repeat(Some(seq))))
            }
            Some(seq) if receipt.repeat => {
                waiters.reply_after(seq, reply_to, true);
                Ok(None)
            }
            _ => {
                waiters.reply_on(Key::Accepted(receipt.agent, receipt.bid), reply_to, receipt.repeat);
                Ok(None)
            }
        },
    };
    drop(waiters);
    shared.wake.notify_one();
    reply
}

/// Answers one request on its reply subject. An instance that does not lead, or whose lease ran
/// out, answers nothing: the leader does.
pub(super) async fn answer(shared: Arc<Shared>, message: Message) {
    let Some(reply_to) = message.reply.clone() else { return };
    if !shared.serving() {
        return;
    }
    let body = match headers_fit(&message) {
        Err(r) => Some(Reply::refused(&r).to_bytes()),
        Ok(cid) => respond(&shared, &message, cid.as_deref()).await,
    };
    let Some(body) = body else { return };
    if !shared.serving() {
        return;
    }
    let _ = shared.client.publish(reply_to, body).await;
}

/// The request's correlation id, once its headers are within bounds.
fn headers_fit(message: &Message) -> Result<Option<String>, Rejection> {
    let Some(headers) = message.headers.as_ref() else { return Ok(None) };
    let size: usize = headers
        .iter()
        .map(|(k, vs)| AsRef::<str>::as_ref(k).len() + vs.iter().map(|v| v.as_str().len()).sum::<usize>())
        .sum();
    if size > MAX_HEADER {
        return Err(Rejection::new(
            RejectCode::Malformed,
            format!("headers of {size} bytes are over {MAX_HEADER}"),
        ));
    }
    let cid = headers.get(CORRELATION_ID).map(|v| v.as_str().to_owned());
    if let Some(cid) = &cid
        && cid.len() > MAX_CORRELATION_ID
    {
        return Err(Rejection::new(
            RejectCode::Malformed,
            format!("a correlation-id of {} bytes is over {MAX_CORRELATION_ID}", cid.len()),
        ));
    }
    Ok(cid)
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
    let changes = !matches!(route, Route::State(_) | Route::Balance(_) | Route::Status);
    if changes && let Some(why) = shared.health.halted() {
        return Some(refused(RejectCode::Unavailable, format!("{why}; nothing was done, retry later")));
    }
    let market = shared.market.tagged(cid);
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
        Route::Transfer(agent) => transfer(shared, &market, agent, payload, &span),
        Route::Deposit => deposit(shared, &market, payload, &span),
        Route::Capacity => capacity(shared, cid, payload, &span).await,
        Route::Clear => return Some(clear(shared, cid, payload, &span).await),
        Route::Status => {
            return Some(
                serde_json::to_vec(&shared.health.status(&shared.market)).expect("statuses serialize").into(),
            );
        }
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
    /// Waits for its `bid_accepted` (for a repeat, the first acceptance's) to be journaled.
    Accepted {
        wait: Wait,
        repeat: bool,
    },
    /// A repeat whose first `bid_accepted` is event `seq`: answered once the journal has it.
    Journaled(u64),
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
    // The waiters stay locked from the submit to the registration (see `bid_now`).
    let mut waiters = shared.waiters();
    let pending = match market.submit_json_as(agent, json) {
        Err(r) => {
            span.fail(&r.to_string());
            Pending::Done(Reply::refused(&r))
        }
        Ok(receipt) => match receipt.seq {
            Some(seq) if receipt.repeat => Pending::Journaled(seq),
            _ => {
                let wait = waiters.wait(Key::Accepted(receipt.agent, receipt.bid));
                Pending::Accepted { wait, repeat: receipt.repeat }
            }
        },
    };
    drop(waiters);
    // A refusal's `bid_rejected` is published promptly too, not at the next acceptance.
    shared.wake.notify_one();
    pending
}

/// The bid id a payload names, as a `bid_rejected` would write it.
fn bid_id(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        id: Option<String>,
    }
    serde_json::from_slice::<Named>(json).ok().and_then(|n| n.id).unwrap_or_default()
}

async fn finish(shared: &Shared, pending: Pending) -> Option<Reply> {
    match pending {
        Pending::Done(reply) => Some(reply),
        Pending::Journaled(seq) => shared.journaled(seq).await.then(|| Reply::repeat(Some(seq))),
        Pending::Accepted { wait, repeat } => {
            let seq = wait_for(shared, wait).await?;
            Some(if repeat { Reply::repeat(Some(seq)) } else { Reply::ok(seq) })
        }
    }
}

async fn wait_for(shared: &Shared, wait: Wait) -> Option<u64> {
    tokio::time::timeout(shared.config.reply_within, wait).await.ok()?.ok()
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
    if items.len() > MAX_BATCH {
        let r = Rejection::new(
            RejectCode::Malformed,
            format!("a batch of {} bids is over {MAX_BATCH}; nothing was booked", items.len()),
        );
        return Some(Reply::refused(&r).to_bytes());
    }
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
    let key = Key::Cancelled(agent, bid);
    let wait = shared.waiters().wait(key.clone());
    let done = tokio::task::spawn_blocking(move || market.tagged(cid.as_deref()).cancel(&a, &b))
        .await
        .map_err(|e| Rejection::new(RejectCode::Internal, format!("cancel failed: {e}")));
    shared.wake.notify_one();
    if let Err(r) = done.and_then(|d| d) {
        drop(wait);
        shared.waiters().abandon(&key);
        return Err(r);
    }
    Ok(wait)
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

fn transfer(
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

fn deposit(
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
        market.tagged(cid.as_deref()).set_capacity(&request.resource, from, to, capacity)
    })
    .await
    .map_err(|e| Rejection::new(RejectCode::Internal, format!("capacity change failed: {e}")))?;
    if let Err(r) = done {
        drop(wait);
        shared.waiters().abandon(&key);
        return Err(r);
    }
    shared.wake.notify_one();
    Ok(wait)
}

/// An operator's clearing: only when the service runs no clearing loop of its own (the loop
/// keeps the market's clock; an operator's `at` would move it for good).
async fn clear(shared: &Shared, cid: Option<&str>, payload: &[u8], span: &Arc<ServerSpan>) -> Bytes {
    let done = async {
        if shared.config.cadence.is_some() {
            return Err(Rejection::new(
                RejectCode::Forbidden,
                "this market clears on its own cadence; admin.market.clear is for markets served without one",
            ));
        }
        let request: wire::ClearRequest =
            if payload.is_empty() { Default::default() } else { wire::decode(payload)? };
        let slot = request.at.map(Slot).unwrap_or_else(|| shared.clock.slot().max(shared.market.now()));
        shared.clear(slot, cid.map(str::to_owned), Some(span)).await
    };
    match done.await {
        Ok(report) => match shared.journaled(report.seq).await {
            true => Reply::ok(report.seq).to_bytes(),
            false => Reply::refused(&Rejection::new(
                RejectCode::Unavailable,
                format!("cycle {} ran but its events are not journaled yet", report.cycle),
            ))
            .to_bytes(),
        },
        Err(r) => {
            span.fail(&r.to_string());
            Reply::refused(&r).to_bytes()
        }
    }
}
