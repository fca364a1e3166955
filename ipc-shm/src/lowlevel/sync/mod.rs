//! The building blocks that live inside a shared segment: a futex word with deadline waits,
//! monotonic deadlines, and an owner-stamped lock that notices a dead holder.
//!
//! `ipc-sem` and `ipc-queue` build their protocols from these instead of writing their own.
//! Every type here is valid for any bit pattern a peer may write, and the all-zero pattern is
//! the initial state, so a freshly truncated segment needs no initialisation.
//!
//! Under `--cfg loom` the atomics are loom's and the futex is a model (see [`Futex`]), so the
//! protocols built on this module can be model-checked with threads standing in for
//! processes.

mod barrier;
mod bytes;
mod deadline;
mod futex;
pub(crate) mod loom;
pub(crate) mod owner;
mod raw_lock;
#[cfg(all(feature = "async", not(loom)))]
mod waiter;

pub use barrier::{heavy_barrier, light_barrier, light_barrier_ready};
pub use bytes::{load_bytes, load_bytes_raw, load_pod, store_bytes};
pub use deadline::Deadline;
pub use futex::{wait_low_half, wake_low_half, Futex, WaitOutcome};
pub use owner::{current_thread_id, is_gone, OwnerStamp};
pub use raw_lock::{NotHeld, RawLock};
#[cfg(all(feature = "async", not(loom)))]
pub use waiter::{
    registered_waits, waiter_threads, FutexWait, BRIEF_WAIT, FALLBACK_SLICE, IDLE_EXIT,
};

/// Marks the calling loom model thread dead, for the models of crates built on this module
/// (a participant killed where it stands): from then on [`OwnerStamp::is_dead`] is true for
/// its stamp and a [`RawLock`] it holds is taken over. The thread must then return without
/// touching shared state. Only under `--cfg loom`.
#[cfg(loom)]
#[doc(hidden)]
pub fn die() {
    owner::die();
}
