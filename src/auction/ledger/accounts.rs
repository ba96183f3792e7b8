//! The accounts: a directory from agent to account number, read without a lock, and the
//! accounts themselves in an arena that never moves them, their balances atomic.
//!
//! Accounts are only ever added (by a deposit or when the market opens its pool account), never
//! removed, so the directory is an insert-only open-addressing table: readers probe it with no
//! lock; the few writers (opening an account) take a mutex among themselves, fill the account,
//! then publish its number with one store. A directory that fills up is copied into one twice
//! its size and the old one kept until the ledger is dropped (a reader may still be probing it),
//! so all directories together hold at most twice the entries of the last.

use std::hash::BuildHasher;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, OnceLock};

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::auction::ids::AgentId;

/// An account: credits free to bid or transfer, credits held for live bids, and live bids.
/// Each is changed by one atomic operation; `available` only by compare-and-swap where it
/// decreases, so it can never go below zero.
#[derive(Debug, Default)]
pub(crate) struct Account {
    agent: OnceLock<AgentId>,
    pub(crate) available: AtomicU64,
    pub(crate) escrowed: AtomicU64,
    /// Live bids (pending in the book or on their way to it).
    pub(crate) live: AtomicU32,
}

impl Account {
    /// The agent holding the account.
    pub(crate) fn agent(&self) -> &AgentId {
        self.agent.get().expect("an opened account names its agent")
    }

    /// Takes `amount` from `available` if it holds that much.
    pub(crate) fn debit(&self, amount: u64) -> Result<(), u64> {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(amount))
            .map(|_| ())
    }

    /// Adds `amount` to `available` unless it would overflow.
    pub(crate) fn credit(&self, amount: u64) -> Result<(), u64> {
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_add(amount))
            .map(|_| ())
    }

    /// Takes one more live bid if fewer than `limit` are live.
    pub(crate) fn reserve_live(&self, limit: u32) -> Result<(), u32> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .map(|_| ())
    }
}

/// Accounts in the first arena segment; segment `k` holds `FIRST << k`.
const FIRST: usize = 64;
/// Segments: room for `FIRST * (2^SEGMENTS - 1)` accounts.
const SEGMENTS: usize = 26;

/// One directory: account numbers by agent, open addressing with linear probing.
#[derive(Debug)]
struct Directory {
    /// 0 when empty; else the agent's hash in the high half and its account number plus one in
    /// the low half.
    slots: Box<[AtomicU64]>,
}

/// The accounts of a ledger.
#[derive(Debug)]
pub(crate) struct Accounts {
    segments: [OnceLock<Box<[CachePadded<Account>]>>; SEGMENTS],
    /// Directories, each twice the last; `current` is the one in use.
    directories: [OnceLock<Directory>; 32],
    current: AtomicUsize,
    /// Accounts opened.
    len: AtomicU32,
    /// Held while opening an account.
    opening: Mutex<()>,
    hasher: foldhash::fast::FixedState,
}

/// An account's place in the arena.
fn place(number: u32) -> (usize, usize) {
    let j = number as usize + FIRST;
    let k = (usize::BITS - 1 - j.leading_zeros()) as usize - FIRST.trailing_zeros() as usize;
    (k, j - (FIRST << k))
}

impl Accounts {
    pub(crate) fn new() -> Accounts {
        let accounts = Accounts {
            segments: std::array::from_fn(|_| OnceLock::new()),
            directories: std::array::from_fn(|_| OnceLock::new()),
            current: AtomicUsize::new(0),
            len: AtomicU32::new(0),
            opening: Mutex::new(()),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_cafe),
        };
        accounts.directories[0].get_or_init(|| Directory::new(FIRST * 2));
        accounts
    }

    fn hash(&self, agent: &str) -> u32 {
        (self.hasher.hash_one(agent) >> 32) as u32
    }

    /// The account numbered `number`.
    pub(crate) fn get(&self, number: u32) -> &Account {
        let (k, i) = place(number);
        &self.segments[k].get().expect("an opened account's segment")[i]
    }

    /// The number of `agent`'s account, if it has one.
    pub(crate) fn find(&self, agent: &str) -> Option<u32> {
        let directory =
            self.directories[self.current.load(Ordering::Acquire)].get().expect("the current directory");
        directory.find(self.hash(agent), |n| self.get(n).agent().as_str() == agent)
    }

    /// The number of `agent`'s account, opening an empty one if it has none.
    pub(crate) fn open(&self, agent: &AgentId) -> u32 {
        if let Some(n) = self.find(agent.as_str()) {
            return n;
        }
        let _one = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = self.find(agent.as_str()) {
            return n;
        }
        let number = self.len.load(Ordering::Relaxed);
        let (k, i) = place(number);
        let segment =
            self.segments[k].get_or_init(|| (0..FIRST << k).map(|_| CachePadded::default()).collect());
        segment[i].agent.set(agent.clone()).expect("a new account");
        self.len.store(number + 1, Ordering::Release);
        let mut current = self.current.load(Ordering::Relaxed);
        let directory = self.directories[current].get().expect("the current directory");
        if (number as usize + 1) * 2 > directory.slots.len() {
            // Copy into a directory twice the size; readers still probing the old one find every
            // account it had, and the new account only once the new directory is published.
            let bigger = Directory::new(directory.slots.len() * 2);
            for slot in &directory.slots {
                let entry = slot.load(Ordering::Acquire);
                if entry != 0 {
                    bigger.insert((entry >> 32) as u32, (entry as u32) - 1);
                }
            }
            current += 1;
            self.directories[current].set(bigger).expect("a directory not yet made");
            self.current.store(current, Ordering::Release);
        }
        let directory = self.directories[current].get().expect("the current directory");
        directory.insert(self.hash(agent.as_str()), number);
        number
    }

    /// Accounts opened.
    pub(crate) fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    /// Every account, in the order they were opened.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Account)> {
        (0..self.len()).map(|n| (n, self.get(n)))
    }
}

impl Directory {
    fn new(slots: usize) -> Directory {
        Directory { slots: (0..slots).map(|_| AtomicU64::new(0)).collect() }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The number of the account whose hash is `hash` and for which `is` holds.
    fn find(&self, hash: u32, is: impl Fn(u32) -> bool) -> Option<u32> {
        let mut at = hash as usize & self.mask();
        loop {
            let entry = self.slots[at].load(Ordering::Acquire);
            if entry == 0 {
                return None;
            }
            let number = (entry as u32) - 1;
            if (entry >> 32) as u32 == hash && is(number) {
                return Some(number);
            }
            at = (at + 1) & self.mask();
        }
    }

    /// Publishes account `number` under `hash` (openers only, one at a time).
    fn insert(&self, hash: u32, number: u32) {
        let mut at = hash as usize & self.mask();
        while self.slots[at].load(Ordering::Relaxed) != 0 {
            at = (at + 1) & self.mask();
        }
        self.slots[at].store(u64::from(hash) << 32 | u64::from(number + 1), Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_found_by_agent_across_directory_growth() {
        let accounts = Accounts::new();
        let agents: Vec<AgentId> = (0..5000).map(|i| AgentId::new(&format!("a{i}")).unwrap()).collect();
        for (i, a) in agents.iter().enumerate() {
            assert_eq!(accounts.open(a), i as u32);
            assert_eq!(accounts.open(a), i as u32, "opening twice is the same account");
        }
        for (i, a) in agents.iter().enumerate() {
            assert_eq!(accounts.find(a.as_str()), Some(i as u32));
            assert_eq!(accounts.get(i as u32).agent(), a);
        }
        assert_eq!(accounts.find("nobody"), None);
        assert_eq!(place(0), (0, 0));
        assert_eq!(place(63), (0, 63));
        assert_eq!(place(64), (1, 0));
        assert_eq!(place(191), (1, 127));
        assert_eq!(place(192), (2, 0));
    }

    #[test]
    fn a_debit_never_overdraws() {
        let account = Account::default();
        account.credit(10).unwrap();
        assert_eq!(account.debit(11), Err(10));
        account.debit(10).unwrap();
        assert_eq!(account.available.load(Ordering::Relaxed), 0);
        assert!(account.credit(u64::MAX).is_ok());
        assert!(account.credit(1).is_err());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A new bid's escrow races the release of another bid's (a cancel, or a settlement giving
    /// back a loser's limit): the escrow succeeds only if the release came first, the account
    /// never goes below zero, and its credits are conserved.
    #[test]
    fn an_escrow_racing_a_release_never_overdraws() {
        loom::model(|| {
            let account = Arc::new(Account::default());
            account.available.store(40, Ordering::Relaxed);
            account.escrowed.store(50, Ordering::Relaxed);
            let escrow = {
                let account = account.clone();
                loom::thread::spawn(move || {
                    let ok = account.debit(80).is_ok();
                    if ok {
                        account.escrowed.fetch_add(80, Ordering::AcqRel);
                    }
                    ok
                })
            };
            let release = {
                let account = account.clone();
                loom::thread::spawn(move || {
                    account.escrowed.fetch_sub(50, Ordering::AcqRel);
                    account.available.fetch_add(50, Ordering::AcqRel);
                })
            };
            let escrowed = escrow.join().unwrap();
            release.join().unwrap();
            let (available, held) =
                (account.available.load(Ordering::Relaxed), account.escrowed.load(Ordering::Relaxed));
            assert_eq!(available + held, 90, "credits are conserved");
            assert_eq!((available, held), if escrowed { (10, 80) } else { (90, 0) });
        });
    }
}
