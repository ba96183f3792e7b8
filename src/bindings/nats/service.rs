//! [`MarketService`]: a market behind its NATS subjects, durable in its journal, led by one
//! instance at a time.
//!
//! An instance first reads the market back from the journal (the latest snapshot, then every
//! message after it). It then takes the lease and serves as the leader, or, as a standby,
//! follows the journal until the leader's lease lapses and takes over. The leader's tasks are in
//! [`super::leader`]; recovery and following in [`super::follow`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::Client;
use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::follow;
use super::health::{Health, Role, ServiceStatus};
use super::journal::Journal;
use super::lease::Deadline;
use super::subjects::Subjects;
use super::trace::{ServerSpan, Spans};
use super::waiters::Waiters;
use crate::{Market, MarketConfig, RejectCode, Rejection, Slot};

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Subjects, streams and buckets under this namespace; none by default.
    pub namespace: Option<String>,
    /// How often the market clears; `None` clears only on `admin.market.clear`. A market with
    /// no live bids clears once per slot only, to move its clock on.
    pub cadence: Option<Duration>,
    /// Replicas of the streams and buckets (1 on a single server, 3 on a three-server cluster).
    pub replicas: usize,
    /// Largest request payload answered; larger ones are refused as `malformed`.
    pub max_payload: usize,
    /// How long a request may wait for its event to be journaled before the service stops
    /// waiting (the caller's own timeout is usually shorter).
    pub reply_within: Duration,
    /// Also publish every event, one message each (a cycle's retained losses one message per
    /// run), to the `audit_log` stream (on by default; each stored message costs the server
    /// about what a request does).
    pub audit_log: bool,
    /// Store a snapshot every this many cycles (`None`: never); recovery then reads the journal
    /// from the latest snapshot on.
    pub snapshot_every: Option<u64>,
    /// Follow the leader as a standby, taking over when its lease lapses, instead of leading
    /// now.
    pub standby: bool,
    /// How long the leader's lease lives without renewal (the bucket's, when it exists already).
    pub lease: Duration,
    /// Balances go to the `agent_state` bucket at most this often, each changed balance once
    /// (prices go to `market_prices` after every cycle). An agent that bids every cycle changes
    /// its balance every cycle: putting them all each time would cost the server a stored
    /// message per active agent per cycle, right when replies wait on it.
    pub balances_every: Duration,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            namespace: None,
            cadence: Some(Duration::from_millis(100)),
            replicas: 1,
            max_payload: 1 << 20,
            reply_within: Duration::from_secs(30),
            audit_log: true,
            snapshot_every: Some(600),
            standby: false,
            lease: Duration::from_secs(2),
            balances_every: Duration::from_secs(1),
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
    /// The configuration does not make a market.
    #[error("market configuration: {0}")]
    Config(#[from] crate::ConfigError),
    /// NATS refused a subscription, a stream or a bucket.
    #[error("nats: {0}")]
    Nats(#[from] async_nats::Error),
    /// The journal does not read back as this market: another configuration, a corrupt
    /// message, or events the state cannot have made.
    #[error("journal: {0}")]
    Journal(String),
    /// Another instance leads the market and kept its lease.
    #[error("market `{market}` is led by instance {holder}; start a standby to follow it")]
    Led {
        /// The market.
        market: String,
        /// The instance holding the lease.
        holder: String,
    },
}

/// The market's slot by the wall clock: the market's slot when it started serving, then one
/// more every `slot_ms`.
#[derive(Debug)]
pub(super) struct Clock {
    started: Mutex<(Instant, u64)>,
    slot_ms: u64,
}

impl Clock {
    pub(super) fn new(base: Slot, slot_ms: u64) -> Clock {
        Clock { started: Mutex::new((Instant::now(), base.0)), slot_ms }
    }

    pub(super) fn slot(&self) -> Slot {
        let (started, base) = *self.started.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = started.elapsed().as_millis() as u64;
        Slot(base + elapsed / self.slot_ms.max(1))
    }

    /// Starts counting from `base` now (when an instance starts to lead).
    pub(super) fn restart(&self, base: Slot) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), base.0);
    }
}

/// What the service's tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) market: Arc<Market>,
    pub(super) client: Client,
    pub(super) subjects: Subjects,
    pub(super) config: ServiceConfig,
    pub(super) waiters: Mutex<Waiters>,
    /// Rung when intake has something to sequence.
    pub(super) wake: Notify,
    /// The latest `price_discovered` per resource, as journaled.
    pub(super) prices: Mutex<Vec<(Arc<str>, Bytes)>>,
    pub(super) clock: Clock,
    /// The spans events go out under.
    pub(super) spans: Mutex<Spans>,
    /// One clearing at a time (the loop's or an operator's), so the next cycle's number is known
    /// before it runs.
    pub(super) clearing: tokio::sync::Mutex<()>,
    pub(super) health: Health,
    /// The leader's lease, as far as this instance can vouch for it.
    pub(super) deadline: Deadline,
    /// The last event the journal holds.
    pub(super) journaled: watch::Sender<u64>,
    /// The role, as it changes.
    pub(super) role: watch::Sender<Role>,
    /// The journal, once this instance leads (its writer appends, snapshots read positions).
    pub(super) journal: tokio::sync::Mutex<Option<Journal>>,
    /// Stops every task.
    pub(super) stop: watch::Sender<bool>,
    /// Why the start-up in the background failed, for [`MarketService::start`] to return.
    pub(super) failure: Mutex<Option<ServiceError>>,
}

impl Shared {
    pub(super) fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn spans(&self) -> MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this instance may answer now: it leads and its lease is good.
    pub(super) fn serving(&self) -> bool {
        self.health.role() == Role::Leader && self.deadline.holds()
    }

    pub(super) fn set_role(&self, role: Role) {
        self.health.set_role(role);
        self.role.send_replace(role);
    }

    /// This instance no longer leads: it answers and appends nothing more.
    pub(super) fn depose(&self, why: &str) {
        if self.health.role() == Role::Leader {
            tracing::warn!("deposed: {why}");
            self.deadline.drop_lease();
            self.set_role(Role::Deposed);
        }
    }

    /// Waits until the journal holds event `seq`, or `reply_within` passes.
    pub(super) async fn journaled(&self, seq: u64) -> bool {
        let mut rx = self.journaled.subscribe();
        tokio::time::timeout(self.config.reply_within, rx.wait_for(|&j| j >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
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
            .unwrap_or_else(|e| Err(Rejection::new(RejectCode::Internal, format!("clearing failed: {e}"))));
        if report.is_err() {
            self.spans().drop_cycle(cycle);
        }
        self.wake.notify_one();
        report
    }
}

/// A [`Market`] served over NATS (docs/design.md §10, docs/operations.md).
///
/// Requests on `market.*`, `economic.*` and `admin.market.*` are answered with the `seq` of the
/// event they caused once the market's journal has stored it. Events also go, one message each,
/// to `system.market.<type>` / `system.economy.<type>` (the `audit_log` stream; a cycle's
/// retained losses as runs on `system.market.bids_retained`), off the path of
/// replies; prices go to their KV bucket after every cycle and changed balances to theirs every
/// [`balances_every`](ServiceConfig::balances_every). The agent is always the
/// one the subject names.
#[derive(Debug)]
pub struct MarketService {
    shared: Arc<Shared>,
    run: tokio::task::JoinHandle<()>,
}

impl MarketService {
    /// Reads the market of `market` back from its journal (or starts its journal), then leads
    /// it: takes the lease (waiting for a lapsed leader's to expire), serves its subjects, clears
    /// on the cadence. With [`ServiceConfig::standby`], returns at once and follows the journal
    /// until the leader's lease lapses; [`leading`](MarketService::leading) waits for the takeover.
    ///
    /// # Errors
    ///
    /// A bad namespace or configuration, NATS refusing a stream or bucket, a journal written for
    /// another configuration or not reading back, or (not a standby) another instance keeping
    /// the lease.
    pub async fn start(
        client: Client,
        market: MarketConfig,
        config: ServiceConfig,
    ) -> Result<MarketService, ServiceError> {
        let (shared, follower) = follow::recover(client, market, config).await?;
        let standby = shared.config.standby;
        let mut role = shared.role.subscribe();
        let run = tokio::spawn(follow::run(shared.clone(), follower));
        let service = MarketService { shared, run };
        if !standby {
            let _ = role.wait_for(|r| *r != Role::Recovering && *r != Role::Standby).await;
            if let Some(failure) = service.failure() {
                service.shutdown().await;
                return Err(failure);
            }
        }
        Ok(service)
    }

    fn failure(&self) -> Option<ServiceError> {
        self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The market served (or followed, by a standby: do not change it then).
    pub fn market(&self) -> &Arc<Market> {
        &self.shared.market
    }

    /// The subjects served.
    pub fn subjects(&self) -> &Subjects {
        &self.shared.subjects
    }

    /// What this instance is doing now.
    pub fn role(&self) -> Role {
        self.shared.health.role()
    }

    /// The service's role, journal and audit positions and health, as `admin.market.status`
    /// answers them.
    pub fn status(&self) -> ServiceStatus {
        self.shared.health.status(&self.shared.market)
    }

    /// Waits until this instance leads; `false` when it stopped or was deposed instead.
    pub async fn leading(&self) -> bool {
        let mut role = self.shared.role.subscribe();
        role.wait_for(|r| !matches!(r, Role::Recovering | Role::Standby))
            .await
            .is_ok_and(|r| *r == Role::Leader)
    }

    /// Waits until this instance is deposed (another took the lease or appended to the journal)
    /// or stops.
    pub async fn deposed(&self) {
        let mut role = self.shared.role.subscribe();
        let _ = role.wait_for(|r| matches!(r, Role::Deposed | Role::Stopped)).await;
    }

    /// Waits until every event made so far is journaled and, when the service publishes it, in
    /// the `audit_log`; `false` after `within`.
    pub async fn caught_up(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let market = self.shared.market.clone();
        let Ok(seq) = tokio::task::spawn_blocking(move || market.flush()).await else { return false };
        while Instant::now() < deadline {
            let status = self.status();
            if status.journaled >= seq && status.audited.is_none_or(|a| a >= seq) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Stops taking requests, lets the clearing loop finish its cycle, journals and publishes
    /// every event still unpublished, answers the requests in flight, gives the lease up and
    /// returns.
    pub async fn shutdown(self) {
        let _ = self.shared.stop.send(true);
        let _ = self.run.await;
        let _ = self.shared.client.flush().await;
    }
}
