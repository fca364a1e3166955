//! The one source of atomics for the crate's atomic protocols: std's, or loom's under
//! `--cfg loom`, so the semaphore and event cores run in model tests with threads standing in
//! for processes. `ipc_shm::sync` switches the same way, so its futex helpers take these
//! types in both builds.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One step of busy waiting (a yield to the model under loom).
#[inline]
pub(crate) fn spin() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// How many times a blocking call re-reads its word before it sleeps.
#[cfg(not(loom))]
pub(crate) const SPINS: u32 = 64;
#[cfg(loom)]
pub(crate) const SPINS: u32 = 1;
