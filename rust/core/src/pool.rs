//! A rayon thread pool that survives `fork()`.
//!
//! rayon's global pool is unusable in a forked child (its worker threads do not exist there,
//! so the first parallel call would hang). PyTorch DataLoader workers fork, so every parallel
//! call goes through [`install`], which builds a fresh pool the first time it runs in a new
//! process. The pool size follows `RAYON_NUM_THREADS` (else the number of cores).

use std::sync::{Arc, Mutex};

static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);

fn current_pool() -> Arc<rayon::ThreadPool> {
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, pool)) = guard.as_ref() {
        if *owner == pid {
            return Arc::clone(pool);
        }
        // Inherited from the parent through fork: its threads are gone, and dropping it
        // would try to join them. Leak it on purpose.
        if let Some((_, stale)) = guard.take() {
            std::mem::forget(stale);
        }
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("metarobust-{i}"))
            .build()
            .expect("building a rayon thread pool"),
    );
    *guard = Some((pid, Arc::clone(&pool)));
    pool
}

/// Runs `op` inside this process's pool.
pub fn install<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    current_pool().install(op)
}

/// Number of threads of this process's pool.
pub fn num_threads() -> usize {
    current_pool().current_num_threads()
}

/// Batches below this many multiply-adds (about a millisecond of one core) run on the
/// calling thread: waking the pool's threads costs tens of microseconds, and on small
/// machines whose cores are SMT siblings a second thread gains little on such batches.
pub const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Sampler batches of at least this many output bytes are filled by the whole pool, and the
/// sampler's corruption cache is built by it from as much work (corrupted pixels weighing
/// [`CORRUPT_PIXEL_COST`] bytes each). Here so that the sampler and its cache share them.
pub(crate) const PARALLEL_MIN_BYTES: usize = 1 << 18;

/// A corrupted pixel counts as this many copied bytes when deciding to go parallel.
pub(crate) const CORRUPT_PIXEL_COST: usize = 16;

/// Runs `op(true)` inside the pool when `work` is large enough to pay for it, otherwise
/// `op(false)` right here; `op` picks parallel or sequential iterators accordingly.
pub fn install_for<R: Send>(work: usize, op: impl FnOnce(bool) -> R + Send) -> R {
    install_if(work >= PARALLEL_MIN_WORK, op)
}

/// Runs `op(true)` inside the pool when `parallel` holds (and the pool has several
/// threads), otherwise `op(false)` on the calling thread.
pub fn install_if<R: Send>(parallel: bool, op: impl FnOnce(bool) -> R + Send) -> R {
    if !parallel || num_threads() == 1 {
        op(false)
    } else {
        install(|| op(true))
    }
}
