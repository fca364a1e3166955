//! The one source of atomics for the crate's atomic protocols: std's, or loom's under
//! `--cfg loom`, so the semaphore and event cores run in model tests with threads standing in
//! for processes. `ipc_shm::lowlevel::sync` switches the same way, so its futex helpers take these
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

/// How many times a blocking call re-reads its word before it sleeps: about 0.1 µs on a
/// 140-cycle `PAUSE`, well under the cost of one `FUTEX_WAIT` + `FUTEX_WAKE` pair, so a
/// spin that fails adds little CPU time to the wait that follows.
#[cfg(not(loom))]
pub(crate) const SPINS: u32 = 16;
#[cfg(loom)]
pub(crate) const SPINS: u32 = 1;

/// A per-thread hint: "my last release woke a sleeper". A thread that blocks right after
/// waking a peer (ping-pong) usually waits for that peer's answer, which cannot come before
/// the peer is scheduled again (microseconds), so spinning is pure waste; it parks at once.
/// Only a hint: a wrong guess costs one spin or one sleep, never correctness.
#[cfg(not(loom))]
mod woke_hint {
    use std::cell::Cell;

    thread_local! {
        static WOKE: Cell<bool> = const { Cell::new(false) };
    }

    /// Records that this thread just woke a sleeper.
    #[inline]
    pub(crate) fn set() {
        WOKE.with(|w| w.set(true));
    }

    /// Whether this thread woke a sleeper since the last call; clears the hint.
    #[inline]
    pub(crate) fn take() -> bool {
        WOKE.with(|w| w.replace(false))
    }
}

/// Under loom the hint is off (model threads share one OS thread, and the model must be
/// deterministic): blocking calls always take their one spin.
#[cfg(loom)]
mod woke_hint {
    #[inline]
    pub(crate) fn set() {}

    #[inline]
    pub(crate) fn take() -> bool {
        false
    }
}

pub(crate) use woke_hint::{set as note_woke_sleeper, take as take_woke_sleeper};
