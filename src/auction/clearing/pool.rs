//! The work-stealing pools clearing runs on: one per thread count a market asks for
//! (`clearing_threads`), built on first use and kept, so a cycle pays only the hand-over.

use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

/// Runs `work` on the pool of `threads` threads (at least one): its parallel iterators use
/// exactly those threads, whatever else runs in the process.
pub(crate) fn install<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    pool(threads.max(1)).install(work)
}

/// The pools built so far, by thread count.
type Pools = Mutex<Vec<(usize, Arc<ThreadPool>)>>;

fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == threads) {
        return pool.clone();
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("clearing-{i}"))
            .build()
            .expect("the clearing threads start"),
    );
    pools.push((threads, pool.clone()));
    pool
}
