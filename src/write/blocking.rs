//! Disk I/O from async code without stalling the runtime.
//!
//! Staging writes, truncations, syncs and journal appends are blocking
//! system calls, usually quick (the page cache) but not always (a slow or
//! full disk, O_DIRECT, `fsync`). Run on an async worker, they would hold
//! up every other task queued on it, among them unrelated FUSE requests.
//! `off_worker` hands the worker's other tasks to another thread for the
//! duration (`block_in_place`), so the call can borrow the caller's data
//! without copying it into a `spawn_blocking` task.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run blocking `f` without holding up the async tasks of this worker.
/// Outside a multi-threaded runtime (unit tests, a blocking thread) it
/// simply runs `f`.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
