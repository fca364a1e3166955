//! The one source of atomics for `ipc_queue`: std's, or loom's under `--cfg loom`, so the ring
//! protocol runs unchanged in model tests with threads standing in for processes.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

/// One step of busy waiting.
#[inline]
pub(crate) fn spin() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives the CPU to another runnable thread or process.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The owner's store that ends its phase of a slot, overwriting whatever a helper marked.
///
/// A plain store: real coherence (and C11's RMW atomicity) orders it after any
/// compare-and-swap on the same word that it did not observe. Loom's modification order is
/// partial and may place such a store *before* a concurrent CAS, letting the CAS's older
/// value win; a swap, an RMW, restores the real ordering inside the model.
#[inline]
pub(crate) fn overwrite(word: &AtomicU64, value: u64, order: Ordering) {
    #[cfg(not(loom))]
    word.store(value, order);
    #[cfg(loom)]
    word.swap(value, order);
}
