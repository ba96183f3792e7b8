//! What the service tells of itself, and when it stops taking intake.
//!
//! The service fails closed: when the journal has not acknowledged for [`JOURNAL_GRACE`], or the
//! `audit_log` has fallen [`MAX_AUDIT_LAG`] events behind or made no progress for
//! [`AUDIT_GRACE`] while behind, requests that would change the market are refused with
//! `unavailable` (nothing applied) until it recovers. Nothing is dropped meanwhile: what was
//! already accepted waits, and its reply comes once it is stored.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long the journal may fail to acknowledge before intake stops.
pub const JOURNAL_GRACE: Duration = Duration::from_secs(1);
/// Events the `audit_log` may lag behind the journal before intake stops.
pub const MAX_AUDIT_LAG: u64 = 100_000;
/// How long the `audit_log` may lag without progress before intake stops.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);

/// What an instance of the service is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reading the market back from its journal; not answering yet.
    Recovering,
    /// Following the leader's journal, ready to take over when its lease lapses.
    Standby,
    /// Serving: the only instance that appends to the journal.
    Leader,
    /// Was the leader; another instance took over. It answers nothing and appends nothing.
    Deposed,
    /// Stopped.
    Stopped,
}

/// The service's state as `admin.market.status` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    /// What this instance is doing.
    pub role: Role,
    /// The market's slot.
    pub slot: u64,
    /// Clearing cycles run.
    pub cycles: u64,
    /// Live bids: in the book or on their way to it.
    pub live_bids: usize,
    /// This instance's id, as its journal messages name it.
    pub instance: String,
    /// The last event the journal holds, as far as this instance knows.
    pub journaled: u64,
    /// The last event the `audit_log` holds (`None` when the service does not publish it).
    pub audited: Option<u64>,
    /// The last event covered by a stored snapshot, if any.
    pub snapshot: Option<u64>,
    /// Why intake is stopped, when it is.
    pub halted: Option<String>,
    /// Journal appends that failed and were retried, since start.
    pub journal_failures: u64,
    /// `audit_log` publishes that failed and were retried, since start.
    pub audit_failures: u64,
}

/// The counters behind [`ServiceStatus`], shared by the service's tasks.
#[derive(Debug)]
pub(crate) struct Health {
    role: AtomicU8,
    pub(crate) instance: String,
    journaled: AtomicU64,
    audited: AtomicU64,
    snapshot: AtomicU64,
    audit_on: bool,
    journal_failures: AtomicU64,
    audit_failures: AtomicU64,
    journal_failing: Mutex<Option<Instant>>,
    audit_progress: Mutex<Instant>,
    /// The reason last logged, so a stop and a recovery are each logged once.
    logged: Mutex<Option<String>>,
}

const ROLES: [Role; 5] = [Role::Recovering, Role::Standby, Role::Leader, Role::Deposed, Role::Stopped];

impl Health {
    pub(crate) fn new(instance: String, audit_on: bool) -> Health {
        Health {
            role: AtomicU8::new(0),
            instance,
            journaled: AtomicU64::new(0),
            audited: AtomicU64::new(0),
            snapshot: AtomicU64::new(0),
            audit_on,
            journal_failures: AtomicU64::new(0),
            audit_failures: AtomicU64::new(0),
            journal_failing: Mutex::new(None),
            audit_progress: Mutex::new(Instant::now()),
            logged: Mutex::new(None),
        }
    }

    pub(crate) fn role(&self) -> Role {
        ROLES[usize::from(self.role.load(Ordering::Acquire))]
    }

    pub(crate) fn set_role(&self, role: Role) {
        let at = ROLES.iter().position(|r| *r == role).expect("a role") as u8;
        self.role.store(at, Ordering::Release);
    }

    pub(crate) fn journaled(&self) -> u64 {
        self.journaled.load(Ordering::Acquire)
    }

    /// The journal holds every event through `seq`.
    pub(crate) fn journaled_through(&self, seq: u64) {
        self.journaled.fetch_max(seq, Ordering::AcqRel);
        *lock(&self.journal_failing) = None;
    }

    /// An append failed and will be retried.
    pub(crate) fn journal_failed(&self, why: &str) {
        self.journal_failures.fetch_add(1, Ordering::Relaxed);
        let mut since = lock(&self.journal_failing);
        if since.is_none() {
            tracing::warn!("journal: {why}; retrying");
            *since = Some(Instant::now());
        }
    }

    /// The `audit_log` holds every event through `seq`.
    pub(crate) fn audited_through(&self, seq: u64) {
        if self.audited.fetch_max(seq, Ordering::AcqRel) < seq {
            *lock(&self.audit_progress) = Instant::now();
        }
    }

    /// A publish to the `audit_log` failed and will be retried.
    pub(crate) fn audit_failed(&self, why: &str) {
        if self.audit_failures.fetch_add(1, Ordering::Relaxed).is_multiple_of(100) {
            tracing::warn!("audit_log: {why}; retrying");
        }
    }

    pub(crate) fn snapshot_stored(&self, seq: u64) {
        self.snapshot.fetch_max(seq, Ordering::AcqRel);
    }

    /// Why intake must stop now, if it must.
    pub(crate) fn halted(&self) -> Option<String> {
        let reason = self.reason();
        let mut logged = lock(&self.logged);
        // Logged once when intake stops or resumes, or stops for another reason (not each time
        // its figures move).
        if what(logged.as_deref()) != what(reason.as_deref()) {
            match &reason {
                Some(why) => tracing::warn!("intake stopped: {why}"),
                None => tracing::info!("intake resumed"),
            }
            *logged = reason.clone();
        }
        reason
    }

    fn reason(&self) -> Option<String> {
        if let Some(since) = *lock(&self.journal_failing)
            && since.elapsed() >= JOURNAL_GRACE
        {
            return Some(format!(
                "the journal has not acknowledged for {:.1} s",
                since.elapsed().as_secs_f64()
            ));
        }
        if self.audit_on {
            let lag = self.journaled().saturating_sub(self.audited.load(Ordering::Acquire));
            if lag >= MAX_AUDIT_LAG {
                return Some(format!("the audit_log is {lag} events behind the journal"));
            }
            let still = lock(&self.audit_progress).elapsed();
            if lag > 0 && still >= AUDIT_GRACE {
                return Some(format!(
                    "the audit_log has stored nothing for {:.1} s and is {lag} events behind",
                    still.as_secs_f64()
                ));
            }
        }
        None
    }

    pub(crate) fn status(&self, market: &crate::Market) -> ServiceStatus {
        let snapshot = self.snapshot.load(Ordering::Acquire);
        ServiceStatus {
            role: self.role(),
            slot: market.now().get(),
            cycles: market.cycles(),
            live_bids: market.live_bids(),
            instance: self.instance.clone(),
            journaled: self.journaled(),
            audited: self.audit_on.then(|| self.audited.load(Ordering::Acquire)),
            snapshot: (snapshot > 0).then_some(snapshot),
            halted: self.reason(),
            journal_failures: self.journal_failures.load(Ordering::Relaxed),
            audit_failures: self.audit_failures.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reason without its figures.
fn what(reason: Option<&str>) -> Option<&str> {
    reason.map(|r| r.split(|c: char| c.is_ascii_digit()).next().unwrap_or(r))
}
