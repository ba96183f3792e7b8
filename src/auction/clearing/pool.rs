//! The work-stealing pools clearing runs on: one per thread count a market asks for
//! (`clearing_threads`), built on first use and kept, so a cycle pays only the hand-over.
//!
//! A cycle's computation runs on threads of the lowest scheduling priority (nice 19 on Linux):
//! when the cores are short, intake, replies and the rest of the machine come first, and a cycle
//! takes longer instead. What runs while the market's writer waits (settling a cycle's ledger)
//! runs on threads of normal priority, so a busy machine never holds the writer behind a
//! low-priority thread.
//!
//! A low priority alone does not make a thread step aside at once: a scheduler lets the running
//! thread finish its slice (a millisecond or more) before one it woke gets the core, and every
//! reply waits that long. So a cycle's long loops [`breathe`]: every [`SLICE`] of computation
//! its thread gives the core to whatever else is ready.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::ThreadPool;

/// Runs a cycle's computation `work` on the background pool of `threads` threads (at least
/// one): its parallel iterators use exactly those threads, whatever else runs in the process.
pub(crate) fn install<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    pool(threads.max(1), Priority::Background).install(work)
}

/// Drops `value` on the background pool of `threads` threads (after the cycle it may be computing):
/// what a thread that must stay responsive would otherwise spend freeing it.
pub(crate) fn drop_in_background<T: Send + 'static>(threads: usize, value: T) {
    pool(threads.max(1), Priority::Background).spawn(move || drop(value));
}

/// Runs `work`, which the writer waits for, on `threads` threads of normal priority: on the
/// calling thread when that is one.
pub(crate) fn install_urgent<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    if threads <= 1 {
        return work();
    }
    pool(threads, Priority::Normal).install(work)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Priority {
    Background,
    Normal,
}

/// The pools built so far, by thread count and priority.
type Pools = Mutex<Vec<(usize, Priority, Arc<ThreadPool>)>>;

fn pool(threads: usize, priority: Priority) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((.., pool)) = pools.iter().find(|(n, p, _)| *n == threads && *p == priority) {
        return pool.clone();
    }
    let builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    let builder = match priority {
        Priority::Background => builder.thread_name(|i| format!("clearing-{i}")).start_handler(|_| {
            yield_to_the_rest();
            GAVE_WAY.set(Some(Instant::now()));
        }),
        Priority::Normal => builder.thread_name(|i| format!("settling-{i}")),
    };
    let pool = Arc::new(builder.build().expect("the clearing threads start"));
    pools.push((threads, priority, pool.clone()));
    pool
}

/// Longest a cycle's computation runs on a thread before it lets whatever else is ready run.
const SLICE: Duration = Duration::from_micros(100);

thread_local! {
    /// On a thread of a background pool, when it last gave way; `None` on every other thread.
    static GAVE_WAY: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Called between steps of a cycle's long loops: on a background clearing thread that has
/// computed for [`SLICE`] since it last gave way, gives the core to any thread ready to run
/// (intake, replies, the rest of the machine), and carries on when it gets it back. Elsewhere
/// nothing: the writer and embedders' threads never give way here. The results never depend on
/// it.
pub(crate) fn breathe() {
    let Some(last) = GAVE_WAY.get() else { return };
    if last.elapsed() >= SLICE {
        std::thread::yield_now();
        GAVE_WAY.set(Some(Instant::now()));
    }
}

/// Gives the calling thread the lowest scheduling priority; where that is not supported, nothing.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // One system call std does not wrap.
fn yield_to_the_rest() {
    // SAFETY: `setpriority` reads only its arguments. On Linux the nice value belongs to each
    // thread, and `who == 0` names the calling one. A refusal leaves the priority as it was.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
}

#[cfg(not(target_os = "linux"))]
fn yield_to_the_rest() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn nice() -> i32 {
        // SAFETY: `getpriority` reads only its arguments (the calling thread, on Linux).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn computation_yields_and_settling_does_not() {
        let caller = nice();
        assert_eq!(install(2, nice), 19, "a cycle's computation runs at the lowest priority");
        assert_eq!(install_urgent(2, nice), caller, "what the writer waits for does not");
        assert_eq!(install_urgent(1, nice), caller);
        assert_eq!(nice(), caller, "the caller keeps its own");
    }

    #[test]
    fn only_a_background_thread_gives_way_and_only_once_its_slice_has_run() {
        breathe();
        assert!(GAVE_WAY.get().is_none(), "the calling thread never gives way");
        let (before, after) = install(1, || {
            let before = GAVE_WAY.get().expect("a background thread keeps time");
            std::thread::sleep(SLICE * 2);
            breathe();
            (before, GAVE_WAY.get().expect("still keeping time"))
        });
        assert!(after >= before + SLICE * 2, "a thread past its slice gave way and starts a new one");
        assert!(install_urgent(2, || GAVE_WAY.get()).is_none(), "what the writer waits for never gives way");
    }

    #[test]
    fn what_is_dropped_in_the_background_is_freed_on_a_clearing_thread() {
        /// Tells, when dropped, on which thread and at which priority.
        struct Tell(std::sync::mpsc::Sender<(Option<String>, i32)>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self.0.send((std::thread::current().name().map(str::to_owned), nice()));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_in_background(1, Tell(tx));
        let (thread, priority) = rx.recv_timeout(Duration::from_secs(10)).expect("dropped");
        assert!(thread.is_some_and(|t| t.starts_with("clearing-")), "not on the caller's thread");
        assert_eq!(priority, 19);
    }
}
