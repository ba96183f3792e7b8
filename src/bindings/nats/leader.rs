//! The leader's tasks: requests, the clearing loop, the writer that journals what the market
//! sequences and answers the requests waiting for it, the `audit_log` publisher following the
//! journal, the KV buckets, snapshots, and the lease.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::audit::{AuditError, AuditLog};
use super::follow::Follower;
use super::handlers;
use super::health::Role;
use super::journal::{AckOutcome, AppendError, Entry, Pending, next_ack};
use super::kv::{Buckets, touched};
use super::lease::Lease;
use super::service::Shared;
use super::snapshots::Snapshots;
use crate::auction::subscription::{Batch, SharedEvent};
use crate::{AgentId, Event, EventKind, Market, Subscription};

/// How often the writer sequences intake when nobody rings.
const WRITER_IDLE: Duration = Duration::from_millis(20);

/// Events the `audit_log` publisher sends in one go.
const AUDIT_BATCH: usize = 4096;

/// What the KV buckets get after a cycle: its prices, and the agents whose balance changed.
type StateUpdate = (Vec<Event>, BTreeSet<AgentId>);

/// Leads until stopped or deposed: starts every task, then, on stop, winds them down in order
/// (requests and the clearing loop, then the writer, which journals everything accepted, then
/// the publishers), and gives the lease up.
pub(super) async fn lead(shared: Arc<Shared>, follower: Follower, lease: Lease) {
    let Follower { journal, audit, buckets, snapshots, .. } = follower;
    let seq = shared.market.last_seq();
    tracing::info!(
        "leading market `{}` from event {seq}, state hash {}",
        shared.market.config().name,
        super::follow::describe_hash(&shared.market)
    );
    shared.health.journaled_through(seq);
    shared.journaled.send_replace(seq);
    let events = shared.market.subscribe();
    *shared.journal.lock().await = Some(journal);
    shared.clock.restart(shared.market.now());
    let mut subscribers = Vec::new();
    for subject in shared.subjects.served() {
        match shared.client.subscribe(subject.clone()).await {
            Ok(s) => subscribers.push(s),
            Err(e) => tracing::error!("cannot serve {subject}: {e}"),
        }
    }
    let _ = shared.client.flush().await;
    shared.set_role(Role::Leader);
    // A cycle the previous leader cut but did not finish ends first, as it would have.
    let market = shared.market.clone();
    let _ = tokio::task::spawn_blocking(move || market.resume()).await;

    let (stop_writer, writer_stopped) = watch::channel(false);
    let (stop_lease, lease_stopped) = watch::channel(false);
    let (audit_tx, audit_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = mpsc::unbounded_channel();
    let (cycles_tx, cycles_rx) = watch::channel(0u64);
    let audit_tx = audit.is_some().then_some(audit_tx);
    let requests = tokio::spawn(serve(shared.clone(), subscribers));
    let clearing = shared.config.cadence.map(|c| tokio::spawn(clear_every(shared.clone(), c)));
    let writer = tokio::spawn(write(shared.clone(), events, audit_tx, state_tx, cycles_tx, writer_stopped));
    let audit = audit.map(|a| tokio::spawn(publish_audit(shared.clone(), a, audit_rx)));
    let state = tokio::spawn(put_state(shared.clone(), buckets, state_rx));
    let snapshots =
        shared.config.snapshot_every.map(|n| tokio::spawn(snapshot(shared.clone(), snapshots, cycles_rx, n)));
    let renewal = tokio::spawn(renew(shared.clone(), lease, lease_stopped));

    let mut stop = shared.stop.subscribe();
    let mut role = shared.role.subscribe();
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = role.wait_for(|r| *r != Role::Leader) => {}
    }
    if shared.health.role() != Role::Leader {
        // Deposed: everything stops now; what was not journaled was never answered.
        for task in
            [requests.abort_handle(), writer.abort_handle(), state.abort_handle(), renewal.abort_handle()]
        {
            task.abort();
        }
        clearing.iter().chain(&audit).chain(&snapshots).for_each(|t| t.abort());
        return;
    }
    let in_flight = requests.await.unwrap_or_default();
    if let Some(clearing) = clearing {
        let _ = clearing.await;
    }
    let _ = stop_writer.send(true);
    let _ = writer.await;
    if let Some(audit) = audit {
        let _ = tokio::time::timeout(shared.config.reply_within, audit).await;
    }
    let _ = state.await;
    if let Some(snapshots) = snapshots {
        snapshots.abort();
    }
    let _ = tokio::time::timeout(shared.config.reply_within, in_flight.join_all()).await;
    let _ = stop_lease.send(true);
    if let Ok(Some(lease)) = renewal.await {
        lease.release().await;
    }
    shared.set_role(Role::Stopped);
}

/// Takes requests until stopped (see `handlers::receive`); returns the request tasks still
/// running.
async fn serve(shared: Arc<Shared>, subscribers: Vec<async_nats::Subscriber>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let mut requests = futures_util::stream::select_all(subscribers);
    let mut stop = shared.stop.subscribe();
    loop {
        let message = tokio::select! {
            message = requests.next() => message,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(message) = message else { break };
        while tasks.try_join_next().is_some() {}
        handlers::receive(&shared, message, &mut tasks).await;
    }
    tasks
}

/// Clears every `cadence` at the clock's slot until stopped.
async fn clear_every(shared: Arc<Shared>, cadence: Duration) {
    let mut tick = tokio::time::interval(cadence);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shared.stop.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !shared.serving() || shared.health.halted().is_some() {
            continue;
        }
        let market = &shared.market;
        let slot = shared.clock.slot().max(market.now());
        // An idle market clears once per slot, to move time on (bids without a start begin at
        // the market's slot); that keeps empty cycles out of the journal.
        if market.live_bids() == 0 && slot == market.now() {
            continue;
        }
        // A refusal means an operator cleared at a later slot meanwhile: the next tick catches up.
        let _ = shared.clear(slot, None, None).await;
    }
}

/// The writer: sequences intake when rung (or every [`WRITER_IDLE`]) and sends its events to
/// the journal without waiting for the messages before them to be acknowledged (each is fenced
/// on the one before, so the stream holds them in order or not at all); as acknowledgements come
/// back in order, answers the requests waiting for them and hands the events on to the
/// `audit_log`, the buckets and the snapshots. On stop, one last round journals everything
/// accepted so far.
async fn write(
    shared: Arc<Shared>,
    mut events: Subscription,
    audit: Option<mpsc::UnboundedSender<Vec<(SharedEvent, Bytes)>>>,
    state: mpsc::UnboundedSender<StateUpdate>,
    cycles: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut after = After { shared: &shared, audit, state, cycles, agents: BTreeSet::new() };
    // Cycles make their outcome's journal lines ahead, on the clearing threads, while this
    // writer runs.
    let _lines = LinesWanted::new(&shared.market);
    // Messages sent and not yet acknowledged, and the rounds they hold, oldest first.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut rounds: VecDeque<Round> = VecDeque::new();
    let mut stopping = false;
    loop {
        let room = pending.len() < MAX_PENDING;
        enum Step {
            Acked(AckOutcome),
            Sequence,
            Stop,
        }
        let step = tokio::select! {
            biased;
            outcome = next_ack(&mut pending) => Step::Acked(outcome),
            _ = stop.changed(), if !stopping => Step::Stop,
            _ = shared.wake.notified(), if room && !stopping => Step::Sequence,
            _ = tokio::time::sleep(WRITER_IDLE), if room && !stopping => Step::Sequence,
        };
        match step {
            Step::Acked(outcome) => {
                let Some(front) = pending.front().map(Pending::sent) else { continue };
                let confirmed = match shared.journal.lock().await.as_mut() {
                    Some(journal) => journal.confirm(front, outcome).await,
                    None => return,
                };
                match confirmed {
                    Ok(_) => {
                        let through = pending.pop_front().map_or(0, |p| p.last_seq());
                        after.journaled(through, &mut rounds).await;
                    }
                    Err(AppendError::Fenced) => {
                        shared.depose("another instance appended to the journal");
                        return;
                    }
                    Err(AppendError::Unavailable(why)) => {
                        if !recover(&shared, &mut pending, why).await {
                            return;
                        }
                    }
                }
            }
            Step::Stop | Step::Sequence => {
                stopping |= matches!(step, Step::Stop);
                // Sequencing waits, at most, for a cycle's cut or outcome to be applied: block in
                // place rather than hand the work to another thread every round. The events are
                // shared, not copied: an outcome holds one per bid in the book.
                let drain = |events: &mut Subscription| {
                    shared.market.flush();
                    events.take_shared()
                };
                let batch = match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(|| drain(&mut events))
                    }
                    _ => drain(&mut events),
                };
                if let Some(last) = batch.last() {
                    let mut lines = shared.market.lines().take_through(last.seq);
                    let json = after.audit.is_some();
                    let json = match shared.journal.lock().await.as_mut() {
                        Some(journal) => journal.send_events(&batch, &mut lines, &mut pending, json).await,
                        None => return,
                    };
                    rounds.push_back(Round { events: batch, json });
                }
            }
        }
        if stopping && pending.is_empty() {
            return;
        }
    }
}

/// Asks a market to make its cycles' journal lines ahead for as long as it lives.
struct LinesWanted<'a>(&'a Market);

impl<'a> LinesWanted<'a> {
    fn new(market: &'a Market) -> LinesWanted<'a> {
        market.lines().want(true);
        LinesWanted(market)
    }
}

impl Drop for LinesWanted<'_> {
    fn drop(&mut self) {
        self.0.lines().want(false);
    }
}

/// Events of a round from which the writer has them freed on the clearing threads.
const DROP_ELSEWHERE: usize = 1024;

/// Messages the writer keeps in flight at most before it waits for their acknowledgements.
const MAX_PENDING: usize = 64;

/// After a journal message failed: sends every pending message again, for as long as it takes;
/// `false` when this instance is deposed meanwhile (its events were never acknowledged: their
/// requests get no reply).
async fn recover(shared: &Shared, pending: &mut VecDeque<Pending>, mut why: String) -> bool {
    let mut pause = Duration::from_millis(10);
    loop {
        shared.health.journal_failed(&why);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        if shared.health.role() != Role::Leader {
            return false;
        }
        let result = match shared.journal.lock().await.as_mut() {
            Some(journal) => journal.recover(pending).await,
            None => return false,
        };
        match result {
            Ok(()) => return true,
            Err(AppendError::Fenced) => {
                shared.depose("another instance appended to the journal");
                return false;
            }
            Err(AppendError::Unavailable(e)) => why = e,
        }
    }
}

/// A writer round's events, as sent to the journal, with their JSON when the `audit_log` wants it.
struct Round {
    events: Batch,
    json: Vec<Bytes>,
}

/// What the writer does with events once the journal holds them.
struct After<'a> {
    shared: &'a Shared,
    /// The `audit_log` publisher's queue: events with their JSON.
    audit: Option<mpsc::UnboundedSender<Vec<(SharedEvent, Bytes)>>>,
    state: mpsc::UnboundedSender<StateUpdate>,
    cycles: watch::Sender<u64>,
    /// Agents whose balance changed since the last cycle.
    agents: BTreeSet<AgentId>,
}

impl After<'_> {
    /// The journal holds every event through `through`: the rounds it covers are answered.
    async fn journaled(&mut self, through: u64, rounds: &mut VecDeque<Round>) {
        let shared = self.shared;
        shared.health.journaled_through(through);
        while rounds.front().is_some_and(|r| r.events.last().is_none_or(|e| e.seq <= through)) {
            let Some(Round { events: batch, json }) = rounds.pop_front() else { break };
            let (update, replies) = after_journal(shared, &batch, &mut self.agents);
            for (to, reply) in replies {
                let _ = shared.client.publish(to, reply).await;
            }
            if let Some(update) = update {
                let _ = self.state.send(update);
            }
            if let Some(every) = shared.config.snapshot_every {
                for e in batch.iter() {
                    if let (EventKind::CycleCleared { .. }, Some(c)) = (&e.kind, e.cycle)
                        && c.is_multiple_of(every.max(1))
                    {
                        self.cycles.send_replace(c);
                    }
                }
            }
            match &self.audit {
                Some(audit) => {
                    let _ = audit.send(batch.into_shared().zip(json).collect());
                }
                // A cycle's outcome is freed off the writer, which answers requests meanwhile.
                None if batch.len() >= DROP_ELSEWHERE => shared.market.drop_later(batch),
                None => {}
            }
        }
        // Requests waiting on the position itself go last: whoever they answer reads the
        // prices these events brought.
        shared.journaled.send_replace(through);
    }
}

/// Keeps the latest prices, then answers the waiting requests (returning the replies the writer
/// sends itself): whoever a reply reaches reads the prices it covers. After a cycle, the KV
/// update.
fn after_journal(
    shared: &Shared,
    events: &Batch,
    agents: &mut BTreeSet<AgentId>,
) -> (Option<StateUpdate>, Vec<(async_nats::Subject, Bytes)>) {
    let mut prices = Vec::new();
    let mut cycle_ended = false;
    for event in events.iter() {
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
    let replies = shared.waiters().published(events.iter());
    (cycle_ended.then(|| (prices, std::mem::take(agents))), replies)
}

/// Publishes every journaled event to the `audit_log`, in order, from the first the stream lacks:
/// from memory as the writer hands them over, from the journal for whatever memory does not hold
/// (what a previous leader journaled, or everything again after the stream was deleted). Retries
/// without end; the service stops intake while this falls behind (see `health`).
async fn publish_audit(
    shared: Arc<Shared>,
    mut audit: AuditLog,
    mut batches: mpsc::UnboundedReceiver<Vec<(SharedEvent, Bytes)>>,
) {
    let mut next = loop {
        match audit.sync().await {
            Ok(stored) => break stored + 1,
            Err(AuditError::Missing) => {
                let _ = audit.recreate().await;
            }
            Err(e) => {
                shared.health.audit_failed(&e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    shared.health.audited_through(next - 1);
    let mut queue: VecDeque<(SharedEvent, Bytes)> = VecDeque::new();
    let mut open = true;
    let mut pause = Duration::from_millis(10);
    loop {
        if queue.is_empty() && next > shared.health.journaled() {
            if !open {
                return;
            }
            match batches.recv().await {
                Some(batch) => queue.extend(batch),
                None => open = false,
            }
        }
        while let Ok(batch) = batches.try_recv() {
            queue.extend(batch);
        }
        while queue.front().is_some_and(|(e, _)| e.seq < next) {
            queue.pop_front();
        }
        let known = queue.front().map_or(shared.health.journaled() + 1, |(e, _)| e.seq);
        if known > next {
            match read_journal(&shared, next, known - 1).await {
                Ok(events) => {
                    for e in events.into_iter().rev() {
                        queue.push_front((SharedEvent::from(e), Bytes::new()));
                    }
                }
                Err(why) => {
                    shared.health.audit_failed(&why);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let batch: Vec<(SharedEvent, Bytes)> = queue.drain(..queue.len().min(AUDIT_BATCH)).collect();
        if batch.is_empty() {
            continue;
        }
        match audit.publish(&batch, &shared.spans).await {
            Ok(n) => {
                next += n as u64;
                pause = Duration::from_millis(10);
                // Most of a cycle's outcome is last held here: freed on the clearing threads, as
                // without the audit log, not on the thread that answers requests.
                if batch.len() >= DROP_ELSEWHERE {
                    shared.market.drop_later(batch);
                }
            }
            Err((n, why)) => {
                next += n as u64;
                for e in batch.into_iter().skip(n).rev() {
                    queue.push_front(e);
                }
                shared.health.audit_failed(&why.to_string());
                match why {
                    AuditError::Missing => {
                        if audit.recreate().await.is_ok() {
                            next = 1;
                        }
                    }
                    AuditError::OutOfStep { stored } => next = stored + 1,
                    AuditError::Unavailable(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
        shared.health.audited_through(next - 1);
    }
}

/// Events `from..=to` read back from the journal.
async fn read_journal(shared: &Shared, from: u64, to: u64) -> Result<Vec<Event>, String> {
    let reader = {
        let guard = shared.journal.lock().await;
        let journal = guard.as_ref().ok_or("no journal")?;
        let at = journal.find(from).await.map_err(|e| e.to_string())?;
        journal.reader(at).await.map_err(|e| e.to_string())?
    };
    let mut reader = reader;
    let mut out = Vec::new();
    while out.last().is_none_or(|e: &Event| e.seq < to) {
        let next = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .map_err(|_| format!("the journal did not give events {from}..={to} in time"))??;
        if let (_, Entry::Events(events)) = next {
            out.extend(events.into_iter().filter(|e| (from..=to).contains(&e.seq)));
        }
    }
    Ok(out)
}

/// Writes the KV buckets off the writer's path: each cycle's prices as they come (the latest per
/// resource when it falls behind), and the balances that changed at most every
/// `balances_every`, each agent once. On stop, whatever is left is written.
async fn put_state(shared: Arc<Shared>, buckets: Buckets, mut updates: mpsc::UnboundedReceiver<StateUpdate>) {
    let every = shared.config.balances_every;
    let mut agents = BTreeSet::new();
    let mut due = tokio::time::Instant::now();
    let mut open = true;
    while open || !agents.is_empty() {
        let mut prices = Vec::new();
        tokio::select! {
            update = updates.recv(), if open => match update {
                Some((more, touched)) => {
                    prices.extend(more);
                    agents.extend(touched);
                }
                None => open = false,
            },
            _ = tokio::time::sleep_until(due), if !agents.is_empty() => {}
        }
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
        let now = tokio::time::Instant::now();
        let balances = if now >= due || !open {
            due = now + every;
            std::mem::take(&mut agents)
        } else {
            BTreeSet::new()
        };
        if !latest.is_empty() || !balances.is_empty() {
            buckets.put_state(&shared.market, &latest, &balances).await;
        }
    }
}

/// Stores a snapshot after every `every`-th cycle, once the journal holds what it covers.
async fn snapshot(shared: Arc<Shared>, snapshots: Snapshots, mut cycles: watch::Receiver<u64>, every: u64) {
    while cycles.changed().await.is_ok() {
        let started = Instant::now();
        let market = shared.market.clone();
        let Ok(Ok(snapshot)) = tokio::task::spawn_blocking(move || market.snapshot()).await else { continue };
        let taken = started.elapsed();
        if !shared.journaled(snapshot.seq).await {
            continue;
        }
        let position = shared.journal.lock().await.as_ref().and_then(|j| j.position_of(snapshot.seq));
        let Some(position) = position else { continue };
        match snapshots.put(&snapshot, position).await {
            Ok(stored) => {
                shared.health.snapshot_stored(stored.seq);
                tracing::info!(
                    "snapshot of event {} (every {every} cycles): {} bytes, taken in {} ms, stored in {} ms",
                    stored.seq,
                    stored.bytes,
                    taken.as_millis(),
                    (started.elapsed() - taken).as_millis()
                );
            }
            Err(e) => tracing::warn!("snapshot of event {}: {e}", snapshot.seq),
        }
    }
}

/// Renews the lease until stopped (returning it, to be given up) or lost (deposing this
/// instance).
async fn renew(shared: Arc<Shared>, mut lease: Lease, mut stop: watch::Receiver<bool>) -> Option<Lease> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease.period()) => {}
            _ = stop.changed() => return Some(lease),
        }
        if shared.health.role() != Role::Leader {
            return None;
        }
        match lease.renew(&shared.deadline).await {
            Ok(true) => {}
            Ok(false) => {
                shared.depose("another instance holds the lease");
                return None;
            }
            Err(e) => tracing::warn!("lease: {e}"),
        }
    }
}
