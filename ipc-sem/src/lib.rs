//! Semaphores, locks, events, conditions and barriers shared between processes: the
//! synchronisation half of Python's `multiprocessing`, on futexes in shared memory, with
//! dead peers reported instead of hanging.
//!
//! | type | what it is | Python |
//! |---|---|---|
//! | [`Semaphore`] | counting semaphore; one 64-bit futex word, no syscall uncontended | `Semaphore` |
//! | [`BoundedSemaphore`] | release past the bound is an error, checked in the same CAS | `BoundedSemaphore` |
//! | [`PosixSemaphore`] | the real `sem_t` (`sem_init`/`sem_open`), for C and Python peers | `SemLock` |
//! | [`Lock`] | mutex whose dead holder is reported: `OwnerDied(guard)`, then `Poisoned` | `Lock` |
//! | [`RLock`] | re-entrant lock owned by one (process, thread) | `RLock` |
//! | [`Event`] | a flag to wait on | `Event` |
//! | [`Condition`] | condition variable with its lock, on a futex sequence counter | `Condition` |
//! | [`Barrier`] | `n` parties meet; timeout, abort or a dead participant breaks it | `Barrier` |
//!
//! Every type is shared in one of two ways. **Inherited** (`new`): the state lives in an
//! anonymous `memfd` segment mapped `MAP_SHARED`, and processes forked afterwards use their
//! copy of the handle; nothing has a name, so nothing can leak. **Named**
//! (`create_named` / `open_named`): a `shm_open` segment created 0600 with `O_EXCL`, removed
//! by its creating handle on drop; an opener checks owner, size and the typed header, so a
//! `Lock` segment opened as a `Semaphore` is a layout error, not undefined behaviour.
//!
//! Every blocking call has a `try_` form and a `_timeout(Duration)` form; deadlines are
//! absolute on `CLOCK_MONOTONIC`, and signals or spurious wake-ups re-wait without drifting.
//!
//! A lock whose holder is killed, across two processes:
//!
//! ```
//! use ipc_sem::{Lock, LockError};
//!
//! let lock = Lock::new()?;
//! // SAFETY of the example: the child only uses the lock and leaves with `_exit`.
//! match unsafe { libc::fork() } {
//!     0 => {
//!         let guard = lock.lock();
//!         std::mem::forget(guard); // "die" holding the lock
//!         unsafe { libc::_exit(0) }
//!     }
//!     child => {
//!         let mut status = 0;
//!         unsafe { libc::waitpid(child, &mut status, 0) };
//!         match lock.lock() {
//!             Err(LockError::OwnerDied(guard)) => guard.mark_consistent(),
//!             other => panic!("expected OwnerDied, got {other:?}"),
//!         }
//!         drop(lock.lock().map_err(ipc_sem::Error::from)?); // usable again
//!     }
//! }
//! # Ok::<(), ipc_sem::Error>(())
//! ```
//!
//! # Dead peers
//!
//! Bounded on a dead peer (each about 50 ms, found by a sleeper's periodic re-check):
//! - locks ([`Lock`], [`RLock`], a [`Condition`]'s lock): the next locker gets
//!   `OwnerDied(guard)`;
//! - [`Barrier::wait`]: a participant killed anywhere inside `wait` (holding the internal lock
//!   mid-arrival, or asleep) breaks the barrier, and every waiter gets
//!   [`Error::BrokenBarrier`];
//! - [`Condition::wait`]: the notifier never waits for sleepers; a notification whose woken
//!   sleeper is killed before claiming it reaches another sleeper;
//! - [`Semaphore::acquire`]: a unit in the value is never stranded by a releaser killed before
//!   its wake-up or a sleeper killed after it.
//!
//! Blocking by design on a live but silent peer (use the `_timeout` forms when a peer may
//! die): a [`Semaphore`] nobody releases, an [`Event`] nobody sets, a [`Barrier`] party that
//! never arrives. Semaphores and events have no owner, so a dead peer and a silent one look
//! the same.
//!
//! A killed participant loses what it held: a lock (repaired through `OwnerDied`), the units
//! it had acquired from a semaphore (gone for good), the barrier's current generation
//! (broken), a notification it had already claimed.
//!
//! # Fault points
//!
//! With the `failpoints` feature, `ipc_failpoints::arm(name, nth, action)` fires at (what a
//! kill there models):
//! - `sem.lock.held`: a lock just taken, guard not yet returned (a holder killed in its
//!   critical section);
//! - `sem.rlock.depth_set`: final `RLock` release, depth stored 0, lock not released;
//! - `sem.condition.registered`: `Condition::wait` registered, lock released, not asleep;
//! - `sem.condition.woken`: back from the futex, before claiming a notification and
//!   re-locking;
//! - `sem.barrier.mid_arrival`: inside the barrier's lock, slot stored, count not;
//! - `sem.semaphore.woken`: a sleeping acquire back from the futex, before its CAS;
//! - `sem.semaphore.release_mid_wake`: release after its count store, before its wake-up.
//!
//! Linux only (futex, memfd, `/proc` for liveness).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-sem needs Linux (futex, memfd, /proc); other platforms are not supported yet");

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod loom;
mod posix;
mod rlock;
mod sem_core;
mod semaphore;
#[allow(unsafe_code)]
mod shm;
#[allow(unsafe_code)]
mod sys;

pub use barrier::{Barrier, BarrierWaitResult, MAX_PARTIES};
pub use condition::{Condition, WaitTimeoutResult};
pub use error::{Error, LockError, Result};
pub use event::Event;
pub use lock::{Lock, LockGuard, LockResult};
pub use posix::PosixSemaphore;
pub use rlock::{RLock, RLockGuard, RLockResult};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard, MAX_VALUE};
