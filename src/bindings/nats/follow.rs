//! Reading a market back from its journal, following it as a standby, and taking over.
//!
//! Recovery restores the latest snapshot (or starts the configured market empty) and replays
//! every journal message after it. A standby keeps reading as the leader appends. To lead, an
//! instance takes the lease, reads the journal to its end, and appends a `leader` message fenced
//! on the last one it read (the genesis message, on an empty journal): if anything was appended
//! meanwhile, the fence refuses it and it reads on. From then on only it can append.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, kv};
use tokio::sync::{mpsc, watch};

use super::audit::AuditLog;
use super::health::{Health, Role};
use super::journal::{AppendError, Entry, Journal};
use super::kv::Buckets;
use super::leader;
use super::lease::{self, Deadline, Lease};
use super::service::{Clock, ServiceConfig, ServiceError, Shared};
use super::snapshots::Snapshots;
use super::subjects::Subjects;
use super::waiters::Waiters;
use crate::{Market, MarketConfig};

/// What an instance holds while it recovers and follows, before it leads.
#[derive(Debug)]
pub(super) struct Follower {
    pub(super) journal: Journal,
    /// Journal messages as the reader task delivers them.
    entries: mpsc::Receiver<Result<(u64, Entry), String>>,
    reader: tokio::task::JoinHandle<()>,
    lease_store: kv::Store,
    ttl: Duration,
    pub(super) audit: Option<AuditLog>,
    pub(super) buckets: Buckets,
    pub(super) snapshots: Snapshots,
    /// The configuration the journal was started with.
    config: MarketConfig,
    /// Whether the journal has its genesis message.
    genesis: bool,
}

fn fail(shared: &Shared, e: ServiceError) {
    tracing::error!("service: {e}");
    *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    shared.set_role(Role::Stopped);
}

/// A fresh id for this instance: its journal messages and lease name it.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Whether two configurations make the same market (the threads computing it may differ).
fn same_market(a: &MarketConfig, b: &MarketConfig) -> bool {
    MarketConfig { clearing_threads: 1, ..a.clone() } == MarketConfig { clearing_threads: 1, ..b.clone() }
}

/// Binds the market's streams and buckets and reads the market back from its journal.
pub(super) async fn recover(
    client: Client,
    config: MarketConfig,
    service: ServiceConfig,
) -> Result<(Arc<Shared>, Follower), ServiceError> {
    let subjects = Subjects::new(service.namespace.as_deref())?;
    Market::builder().config(config.clone()).build()?;
    let js = jetstream::new(client.clone());
    let instance = instance_id();
    let replicas = service.replicas;
    let journal = Journal::open(js.clone(), &subjects, &config.name, &instance, replicas).await?;
    let snapshots = Snapshots::open(&js, &subjects, &config.name, replicas).await?;
    let (lease_store, ttl) = lease::bucket(&js, &subjects, replicas, service.lease).await?;
    let audit = match service.audit_log {
        true => Some(AuditLog::open(js.clone(), subjects.clone(), config.name.clone(), replicas).await?),
        false => None,
    };
    let buckets = Buckets::open(js.clone(), subjects.clone(), replicas).await?;

    let (market, from, _) = starting_point(Some(&snapshots), &config).await?;
    let tail = journal.tail().await?;
    if tail == 0
        && let Some(audit) = &audit
        && let Ok(stored) = audit.stored().await
        && stored > 0
    {
        return Err(ServiceError::Journal(format!(
            "{} holds {stored} events but the journal is empty: this market's history is not in its \
             journal; serve it under a fresh namespace, or delete {} first",
            subjects.stream(),
            subjects.stream()
        )));
    }
    let (tx, entries) = mpsc::channel(64);
    let source = journal.reader(from).await?;
    let reader = tokio::spawn(read(source, tx));
    let mut follower = Follower {
        journal,
        entries,
        reader,
        lease_store,
        ttl,
        audit,
        buckets,
        snapshots,
        config,
        genesis: from > 1,
    };
    let market = Arc::new(market);
    follower.catch_up(&market, tail).await?;
    tracing::info!(
        "market `{}` read back to event {} (journal message {}), state hash {}",
        follower.config.name,
        market.last_seq(),
        follower.journal.last(),
        describe_hash(&market)
    );

    let slot_ms = market.config().slot_ms;
    let now = market.now();
    let shared = Arc::new(Shared {
        market,
        client,
        subjects,
        config: service,
        waiters: Mutex::new(Waiters::default()),
        wake: tokio::sync::Notify::new(),
        prices: Mutex::new(Vec::new()),
        clock: Clock::new(now, slot_ms),
        spans: Mutex::new(Default::default()),
        clearing: tokio::sync::Mutex::new(()),
        health: Health::new(instance, audit_on(&follower)),
        deadline: Deadline::new(),
        journaled: watch::channel(0).0,
        role: watch::channel(Role::Recovering).0,
        journal: tokio::sync::Mutex::new(None),
        stop: watch::channel(false).0,
        failure: Mutex::new(None),
    });
    shared.set_role(Role::Standby);
    Ok((shared, follower))
}

/// The market's state hash as a log line shows it.
pub(super) fn describe_hash(market: &Market) -> String {
    match market.state_hash() {
        Ok(hash) => hash.to_string(),
        Err(e) => format!("not taken ({e})"),
    }
}

fn audit_on(f: &Follower) -> bool {
    f.audit.is_some()
}

/// The market as of its latest snapshot (when `snapshots` has one), or new; the journal message
/// to read from; the event the snapshot covers.
async fn starting_point(
    snapshots: Option<&Snapshots>,
    config: &MarketConfig,
) -> Result<(Market, u64, Option<u64>), ServiceError> {
    let latest = match snapshots {
        Some(snapshots) => snapshots.latest().await?,
        None => None,
    };
    Ok(match latest {
        Some((snapshot, stored)) => {
            if !same_market(&snapshot.config, config) {
                return Err(ServiceError::Journal(format!(
                    "market `{}` was snapshotted with another configuration",
                    config.name
                )));
            }
            let market = Market::restore(snapshot).map_err(|e| ServiceError::Journal(e.to_string()))?;
            (market, stored.journal, Some(stored.seq))
        }
        None => (Market::builder().config(config.clone()).build()?, 1, None),
    })
}

/// Applies one journal message to `market`; returns how many events it replayed.
fn apply(
    market: &Market,
    config: &MarketConfig,
    entry: Entry,
    genesis: &mut bool,
) -> Result<u64, ServiceError> {
    match entry {
        Entry::Genesis(found) => {
            if !same_market(&found, config) {
                return Err(ServiceError::Journal(format!(
                    "market `{}` was started with another configuration: {}",
                    config.name,
                    serde_json::to_string(&found).unwrap_or_default()
                )));
            }
            *genesis = true;
            Ok(0)
        }
        Entry::Events(events) => {
            let after = market.last_seq();
            let later: Vec<&crate::Event> = events.iter().filter(|e| e.seq > after).collect();
            market.replay(later.iter().copied()).map_err(|e| ServiceError::Journal(e.to_string()))?;
            Ok(later.len() as u64)
        }
        Entry::Leader(instance) => {
            tracing::info!("instance {instance} leads from event {}", market.last_seq());
            Ok(0)
        }
    }
}

/// What [`read_back`] found.
#[derive(Debug)]
pub struct ReadBack {
    /// The market as its journal leaves it.
    pub market: Market,
    /// The event the snapshot it started from covered, if it used one.
    pub snapshot: Option<u64>,
    /// Journal messages read.
    pub messages: u64,
    /// Events replayed.
    pub events: u64,
}

/// Reads a served market back as a service starting up does — its latest snapshot (unless
/// `use_snapshot` is false), then every journal message after it — without serving it or
/// changing anything on the server.
///
/// # Errors
///
/// No journal under `namespace`, NATS failing, or a journal that does not read back as `config`'s
/// market.
pub async fn read_back(
    client: Client,
    config: MarketConfig,
    namespace: Option<&str>,
    use_snapshot: bool,
) -> Result<ReadBack, ServiceError> {
    let subjects = Subjects::new(namespace)?;
    let js = jetstream::new(client);
    js.get_stream(subjects.journal())
        .await
        .map_err(|e| ServiceError::Journal(format!("{}: {e}", subjects.journal())))?;
    let mut journal = Journal::open(js.clone(), &subjects, &config.name, &instance_id(), 1).await?;
    let snapshots = match use_snapshot {
        true => Snapshots::bind(&js, &subjects, &config.name).await,
        false => None,
    };
    let (market, from, snapshot) = starting_point(snapshots.as_ref(), &config).await?;
    let tail = journal.tail().await?;
    let mut reader = journal.reader(from).await?;
    let (mut genesis, mut messages, mut events) = (from > 1, 0, 0);
    while journal.last() < tail {
        let (seq, entry) = reader.next().await.map_err(ServiceError::Journal)?;
        events += apply(&market, &config, entry, &mut genesis)?;
        journal.read_through(seq);
        messages += 1;
    }
    Ok(ReadBack { market, snapshot, messages, events })
}

/// Forwards the journal's messages to the follower, as they come.
async fn read(mut source: super::journal::Reader, tx: mpsc::Sender<Result<(u64, Entry), String>>) {
    loop {
        let next = source.next().await;
        let stop = next.is_err();
        if tx.send(next).await.is_err() || stop {
            return;
        }
    }
}

impl Follower {
    /// Applies one journal message to `market`.
    fn apply(&mut self, market: &Market, entry: Entry) -> Result<(), ServiceError> {
        apply(market, &self.config, entry, &mut self.genesis).map(drop)
    }

    /// Reads and applies messages until the journal's stream sequence `tail`.
    async fn catch_up(&mut self, market: &Market, tail: u64) -> Result<(), ServiceError> {
        while self.journal.last() < tail {
            let next =
                self.entries.recv().await.ok_or_else(|| ServiceError::Journal("reader stopped".into()))?;
            let (seq, entry) = next.map_err(ServiceError::Journal)?;
            self.apply(market, entry)?;
            self.journal.read_through(seq);
        }
        Ok(())
    }

    /// Follows the journal until this instance holds the lease (`None` if stopped first). Not
    /// as a standby, gives up once another instance has kept the lease past two lifetimes.
    async fn until_leading(&mut self, shared: &Shared) -> Result<Option<Lease>, ServiceError> {
        let key = self.config.name.clone();
        let instance = shared.health.instance.clone();
        let started = Instant::now();
        let poll = (self.ttl / 10).max(Duration::from_millis(20));
        let mut stop = shared.stop.subscribe();
        loop {
            if *stop.borrow() {
                return Ok(None);
            }
            match lease::holder(&self.lease_store, &key).await {
                Ok(None) => {
                    let store = self.lease_store.clone();
                    if let Some(lease) =
                        Lease::acquire(store, &key, &instance, self.ttl, &shared.deadline).await?
                    {
                        return Ok(Some(lease));
                    }
                }
                Ok(Some(holder)) if !shared.config.standby && started.elapsed() > self.ttl * 2 + poll => {
                    return Err(ServiceError::Led { market: key, holder: holder.instance });
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!("lease: {e}"),
            }
            tokio::select! {
                next = self.entries.recv() => {
                    let next = next.ok_or_else(|| ServiceError::Journal("reader stopped".into()))?;
                    let (seq, entry) = next.map_err(ServiceError::Journal)?;
                    self.apply(&shared.market, entry)?;
                    self.journal.read_through(seq);
                }
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Reads to the journal's end and appends this instance's claim (the genesis message on an
    /// empty journal), reading on whenever another append got there first.
    async fn take_over(&mut self, shared: &Shared) -> Result<(), ServiceError> {
        loop {
            let tail = self.journal.tail().await?;
            self.catch_up(&shared.market, tail).await?;
            let appended = if self.genesis {
                self.journal.claim().await
            } else {
                self.journal.genesis(&self.config).await
            };
            match appended {
                Ok(()) => {
                    self.genesis = true;
                    self.reader.abort();
                    return Ok(());
                }
                Err(AppendError::Fenced) => continue,
                Err(AppendError::Unavailable(why)) => {
                    tracing::warn!("journal: {why}; retrying the takeover");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The instance's life after recovery: follow, lead, stop.
pub(super) async fn run(shared: Arc<Shared>, mut follower: Follower) {
    let lease = match follower.until_leading(&shared).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            follower.reader.abort();
            shared.set_role(Role::Stopped);
            return;
        }
        Err(e) => {
            follower.reader.abort();
            return fail(&shared, e);
        }
    };
    if let Err(e) = follower.take_over(&shared).await {
        lease.release().await;
        follower.reader.abort();
        return fail(&shared, e);
    }
    leader::lead(shared, follower, lease).await;
}
