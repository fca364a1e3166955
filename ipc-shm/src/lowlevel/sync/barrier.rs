//! An asymmetric memory barrier across processes: a *light* side that costs nothing at run
//! time (a compiler fence) and a *heavy* side that makes every light side's order visible
//! (Linux `membarrier(2)`, `MEMBARRIER_CMD_GLOBAL_EXPEDITED`).
//!
//! The store-then-load handshake of two parties (a publisher stores its data, then loads a
//! "somebody sleeps" word; a sleeper stores that word, then loads the data) needs a full
//! fence on both sides, or each may read the other's old value and a wake-up is lost. When
//! one side runs for every message and the other only before it goes to sleep, the fence can
//! be moved entirely to the sleeper: [`heavy_barrier`] interrupts every running thread of
//! every process that called [`light_barrier_ready`] with a full barrier, so for each such
//! thread either its store is visible to the sleeper's load after the heavy barrier, or its
//! load after [`light_barrier`] sees the sleeper's store before it. (A thread that was not
//! running went through a context switch, which is a full barrier.) This is the pattern of
//! folly's `asymmetricHeavyBarrier` and liburcu's `membarrier` flavour, across processes.
//!
//! A process takes the light side only if [`light_barrier_ready`] returned true in it
//! (registration succeeded, and children forked afterwards inherit it). Where `membarrier`
//! is missing or refused (an old kernel, a seccomp filter), callers use a read-modify-write
//! handshake instead. Setting the environment variable `IPC_SHM_NO_MEMBARRIER` (to anything)
//! before the first call forces that fallback, so tests can cover it.
//!
//! Under `--cfg loom` both sides are `fence(SeqCst)`, the symmetric form whose guarantee the
//! asymmetric pair provides, so models check the protocols built on it.

#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(not(loom))]
use crate::sys;

/// Registration state of this process: not tried, registered, unavailable.
#[cfg(not(loom))]
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
#[cfg(not(loom))]
const UNKNOWN: u8 = 0;
#[cfg(not(loom))]
const READY: u8 = 1;
#[cfg(not(loom))]
const UNAVAILABLE: u8 = 2;

/// Whether this process may use [`light_barrier`] in place of a full fence: registers it
/// for global expedited barriers on first call (one system call; later calls read a static).
/// False where `membarrier(2)` is unavailable, or with `IPC_SHM_NO_MEMBARRIER` set; the caller
/// then needs a read-modify-write (or a full fence) where the light barrier would go.
#[inline]
pub fn light_barrier_ready() -> bool {
    #[cfg(not(loom))]
    {
        match STATE.load(Ordering::Relaxed) {
            READY => true,
            UNAVAILABLE => false,
            _ => register(),
        }
    }
    #[cfg(loom)]
    {
        true
    }
}

#[cfg(not(loom))]
#[cold]
fn register() -> bool {
    let ok = std::env::var_os("IPC_SHM_NO_MEMBARRIER").is_none()
        && sys::membarrier_register_global_expedited().is_ok();
    // Two threads racing here both register (idempotent) and store the same answer. The
    // registration itself happens before the store (the system call is a full barrier), so
    // a thread that reads READY uses the light side only after it took effect.
    STATE.store(if ok { READY } else { UNAVAILABLE }, Ordering::Relaxed);
    ok
}

/// The light side: orders the caller's earlier stores before its later loads as far as
/// [`heavy_barrier`] callers can tell. Only valid in a process for which
/// [`light_barrier_ready`] returned true. Costs no instruction: it only stops the compiler
/// from moving memory accesses across it.
#[inline(always)]
pub fn light_barrier() {
    #[cfg(not(loom))]
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    #[cfg(loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// The heavy side: a full barrier in the caller, and in every running thread of every
/// process registered by [`light_barrier_ready`]. A few microseconds at most (an
/// inter-processor interrupt to the CPUs running such threads). False if the kernel refused
/// it (then no light side can be relied on: the caller must not sleep unboundedly on it).
pub fn heavy_barrier() -> bool {
    #[cfg(not(loom))]
    {
        // Our own full barrier first, so that the caller's stores are ordered before the
        // loads that follow even where the system call fails.
        std::sync::atomic::fence(Ordering::SeqCst);
        sys::membarrier_global_expedited().is_ok()
    }
    #[cfg(loom)]
    {
        loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn registration_is_cached_and_the_heavy_side_works_where_it_is_available() {
        let ready = light_barrier_ready();
        assert_eq!(light_barrier_ready(), ready);
        light_barrier();
        if ready {
            assert!(
                heavy_barrier(),
                "a registered process's kernel refused the heavy side"
            );
        }
    }
}
