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
