//! The one source of atomics for `ipc_shm::lowlevel::sync`: std's, or loom's under `--cfg loom`, so the
//! same protocol code runs in model tests with threads standing in for processes.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// One step of busy waiting.
#[inline]
pub(crate) fn spin() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
