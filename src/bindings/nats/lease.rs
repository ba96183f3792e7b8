//! The leader's lease: one key in a KV bucket whose values live `ttl` (the bucket's `max_age`).
//! The leader renews it well within that; a standby that finds the key gone creates it, and so
//! takes over. The lease says who should lead; the journal's fencing makes sure nobody else can.
//!
//! A leader also keeps its own deadline on a monotonic clock, started *before* each renewal was
//! sent: past it, the leader answers nothing until a renewal succeeds. A leader paused (or cut
//! off) past its lease thus stops at once when it wakes, before it learns it was replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use super::Subjects;

/// What a lease's value says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Holder {
    pub(crate) instance: String,
}

/// The leader's view of its lease.
#[derive(Debug)]
pub(crate) struct Lease {
    kv: kv::Store,
    key: String,
    holder: Holder,
    revision: u64,
    ttl: Duration,
}

/// When a lease stops being good, as a monotonic deadline shared with the request handlers.
#[derive(Debug)]
pub(crate) struct Deadline {
    started: Instant,
    /// Milliseconds after `started`; 0 when nothing is held.
    until: AtomicU64,
}

impl Deadline {
    pub(crate) fn new() -> Deadline {
        Deadline { started: Instant::now(), until: AtomicU64::new(0) }
    }

    /// Whether the lease is good now.
    pub(crate) fn holds(&self) -> bool {
        (self.started.elapsed().as_millis() as u64) < self.until.load(Ordering::Acquire)
    }

    /// The lease is good until `from + ttl * 3 / 4` (a margin for clocks and delays).
    pub(crate) fn extend(&self, from: Instant, ttl: Duration) {
        let until = from.saturating_duration_since(self.started) + ttl * 3 / 4;
        self.until.fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    /// The lease is gone.
    pub(crate) fn drop_lease(&self) {
        self.until.store(0, Ordering::Release);
    }
}

/// Binds the lease bucket, creating it with values that live `ttl`; returns it and the time to
/// live it actually has (an existing bucket keeps its own).
pub(crate) async fn bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
    ttl: Duration,
) -> Result<(kv::Store, Duration), async_nats::Error> {
    let name = subjects.lease_bucket();
    let store = match js.get_key_value(name.as_str()).await {
        Ok(store) => store,
        Err(_) => {
            js.create_key_value(kv::Config {
                bucket: name.clone(),
                history: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?
        }
    };
    let ttl = match js.get_stream(format!("KV_{name}")).await {
        Ok(mut s) => s.info().await.map(|i| i.config.max_age).unwrap_or(ttl),
        Err(_) => ttl,
    };
    Ok((store, if ttl.is_zero() { Duration::from_secs(2) } else { ttl }))
}

/// Who holds the lease on `key` now, if anyone.
pub(crate) async fn holder(store: &kv::Store, key: &str) -> Result<Option<Holder>, async_nats::Error> {
    Ok(match store.entry(key).await? {
        Some(entry) if entry.operation == kv::Operation::Put => serde_json::from_slice(&entry.value).ok(),
        _ => None,
    })
}

impl Lease {
    /// Takes the lease on `key` for `instance` if nobody holds it.
    pub(crate) async fn acquire(
        store: kv::Store,
        key: &str,
        instance: &str,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<Option<Lease>, async_nats::Error> {
        let holder = Holder { instance: instance.to_owned() };
        let value = Bytes::from(serde_json::to_vec(&holder).expect("holders serialize"));
        let sent = Instant::now();
        match store.create(key, value).await {
            Ok(revision) => {
                deadline.extend(sent, ttl);
                Ok(Some(Lease { kv: store, key: key.to_owned(), holder, revision, ttl }))
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// How often the leader renews.
    pub(crate) fn period(&self) -> Duration {
        self.ttl / 4
    }

    /// Renews the lease. When its value expired meanwhile and nobody took it, takes it again.
    ///
    /// # Errors
    ///
    /// `Ok(false)` when another instance holds it now: this one is deposed. `Err` when KV did
    /// not answer (the deadline then runs out unless a later renewal succeeds).
    pub(crate) async fn renew(&mut self, deadline: &Deadline) -> Result<bool, async_nats::Error> {
        let value = Bytes::from(serde_json::to_vec(&self.holder).expect("holders serialize"));
        let sent = Instant::now();
        match self.kv.update(&self.key, value.clone(), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                deadline.extend(sent, self.ttl);
                Ok(true)
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match holder(&self.kv, &self.key).await? {
                    Some(h) if h == self.holder => {
                        // Our own value under a newer revision (a retried update landed).
                        let entry = self.kv.entry(&self.key).await?;
                        self.revision = entry.map_or(self.revision, |e| e.revision);
                        Ok(true)
                    }
                    Some(_) => Ok(false),
                    None => match self.kv.create(&self.key, value).await {
                        Ok(revision) => {
                            self.revision = revision;
                            deadline.extend(sent, self.ttl);
                            Ok(true)
                        }
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e.into()),
                    },
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (a leader stopping cleanly), so a standby need not wait for it to lapse.
    pub(crate) async fn release(self) {
        let _ = self.kv.delete_expect_revision(&self.key, Some(self.revision)).await;
    }
}
