#![doc = include_str!("../README.md")]
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
pub use condition::Condition;
pub use error::{
    AcquireTimeoutError, BarrierTimeoutError, Error, LockError, LockResult, LockTimeoutError,
    LockTimeoutResult, Result, TryAcquireError, TryLockError, TryLockResult, TryWaitError,
    WaitTimeoutResult,
};
pub use event::Event;
/// The shared-memory crate whose types (`ipc_shm::Error`, the lock errors)
/// appear in this crate's public signatures, re-exported so callers need no version match.
pub use ipc_shm;
pub use lock::{Lock, LockGuard};
pub use posix::PosixSemaphore;
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard, MAX_VALUE};
