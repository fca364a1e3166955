//! The crate's error type and the per-operation errors of its `try_` and `_timeout` forms.

use std::fmt;
use std::io;

pub use ipc_shm::{
    LockError, LockResult, LockTimeoutError, LockTimeoutResult, TryLockError, TryLockResult,
};

/// Errors of `ipc-sem`.
///
/// Lock operations that hand a guard back on a dead holder return [`LockError`],
/// [`TryLockError`] or [`LockTimeoutError`] instead; semaphores' and barriers' `try_` and
/// `_timeout` forms return [`TryAcquireError`], [`AcquireTimeoutError`], [`TryWaitError`] and
/// [`BarrierTimeoutError`]. All convert into this type (a lock error drops, and so poisons,
/// the guard of an `OwnerDied`); `Timeout` and `WouldBlock` exist here only as targets of
/// those conversions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Creating, opening or validating the shared segment failed; a named object opened as
    /// another kind is `Shm(ipc_shm::Error::LayoutMismatch { .. })`.
    #[error(transparent)]
    Shm(#[from] ipc_shm::Error),
    /// An operating-system call failed; the errno is kept.
    #[error("{op}: {source}")]
    Io {
        /// The call that failed.
        op: &'static str,
        /// The underlying error (with its errno).
        #[source]
        source: io::Error,
    },
    /// The previous holder of a lock died while holding it; the lock is now poisoned.
    #[error("the previous lock holder died while holding it")]
    OwnerDied,
    /// A lock holder died earlier and nobody marked the protected data consistent.
    #[error("the lock is poisoned: a holder died and the data was not marked consistent")]
    Poisoned,
    /// The deadline passed first (the target of the `Timeout` variants).
    #[error("timed out")]
    Timeout,
    /// A `try_` call found the object busy (the target of the `WouldBlock` variants).
    #[error("the operation would block")]
    WouldBlock,
    /// The calling thread already holds this (non-re-entrant) lock.
    #[error("the calling thread already holds this lock")]
    Deadlock,
    /// `Lock::release` by a thread that does not hold the lock.
    #[error("the calling thread does not hold this lock")]
    NotHeld,
    /// `RLock::release` by a thread that does not own the lock.
    #[error("the calling thread does not own this re-entrant lock")]
    NotOwner,
    /// A `BoundedSemaphore` was released more times than it was acquired.
    #[error("bounded semaphore released too many times")]
    ReleasedTooManyTimes,
    /// A semaphore value or a recursion count would exceed its maximum.
    #[error("counter overflow: the value would exceed {max}")]
    Overflow {
        /// The largest value the counter holds.
        max: u32,
    },
    /// The barrier was broken (timeout, abort, reset or a dead participant).
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// An argument outside the accepted range.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Shared state holds a value no correct peer writes.
    #[error("shared state is corrupted: {0}")]
    Corrupted(&'static str),
}

impl Error {
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    /// The errno of an OS failure, if this is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Shm(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Whether this is a named object of another kind or version (a layout mismatch).
    pub fn is_layout_mismatch(&self) -> bool {
        matches!(self, Error::Shm(ipc_shm::Error::LayoutMismatch { .. }))
    }
}

/// Converts a lock error of `ipc-shm` into this crate's error (an `OwnerDied` guard is dropped
/// unmarked, which poisons the lock: the conservative choice for code that only propagates).
fn from_shm_lock(e: ipc_shm::Error) -> Error {
    match e {
        ipc_shm::Error::OwnerDied => Error::OwnerDied,
        ipc_shm::Error::Poisoned => Error::Poisoned,
        ipc_shm::Error::Timeout => Error::Timeout,
        ipc_shm::Error::WouldBlock => Error::WouldBlock,
        ipc_shm::Error::Deadlock => Error::Deadlock,
        ipc_shm::Error::Corrupted(what) => Error::Corrupted(what),
        other => Error::Shm(other),
    }
}

impl<G> From<LockError<G>> for Error {
    /// Converting drops an `OwnerDied` guard without marking it consistent, which poisons the
    /// lock: the conservative choice for code that only propagates errors.
    fn from(e: LockError<G>) -> Self {
        from_shm_lock(e.into())
    }
}

impl<G> From<TryLockError<G>> for Error {
    /// As for [`LockError`]; `WouldBlock` becomes [`Error::WouldBlock`].
    fn from(e: TryLockError<G>) -> Self {
        from_shm_lock(e.into())
    }
}

impl<G> From<LockTimeoutError<G>> for Error {
    /// As for [`LockError`]; `Timeout` becomes [`Error::Timeout`].
    fn from(e: LockTimeoutError<G>) -> Self {
        from_shm_lock(e.into())
    }
}

/// Why a `try_acquire` (or `try_guard`) took no unit. It never waits and changes nothing
/// when it would block.
#[derive(Debug, thiserror::Error)]
pub enum TryAcquireError {
    /// The value was 0: no unit to take now.
    #[error("no unit available: the semaphore's value is 0")]
    WouldBlock,
    /// The call itself failed (an OS error of a `PosixSemaphore`, corrupted shared state).
    #[error(transparent)]
    Failed(Error),
}

/// Why an `acquire_timeout` (or `guard_timeout`) took no unit.
#[derive(Debug, thiserror::Error)]
pub enum AcquireTimeoutError {
    /// The timeout passed with the value still 0.
    #[error("timed out waiting for a unit")]
    Timeout,
    /// The call itself failed (an OS error of a `PosixSemaphore`, corrupted shared state).
    #[error(transparent)]
    Failed(Error),
}

/// Why a `Barrier::try_wait` did not pass the barrier. It never waits and changes nothing
/// when it would block.
#[derive(Debug, thiserror::Error)]
pub enum TryWaitError {
    /// The caller would not be the last party to arrive: arriving would mean waiting.
    #[error("the barrier would block: the caller would not be the last party")]
    WouldBlock,
    /// The barrier is broken (timeout, abort, reset or a dead participant); `reset` mends it.
    #[error("the barrier is broken")]
    Broken,
    /// The call itself failed (corrupted shared state).
    #[error(transparent)]
    Failed(Error),
}

/// Why a `Barrier::wait_timeout` did not pass the barrier.
#[derive(Debug, thiserror::Error)]
pub enum BarrierTimeoutError {
    /// The timeout passed before every party arrived; the caller broke the barrier for the
    /// others (as Python's `Barrier.wait(timeout)` does).
    #[error("timed out waiting at the barrier")]
    Timeout,
    /// The barrier is broken (another party's timeout, abort, reset or a dead participant).
    #[error("the barrier is broken")]
    Broken,
    /// The call itself failed (corrupted shared state).
    #[error(transparent)]
    Failed(Error),
}

impl TryAcquireError {
    /// Whether no unit was available (the only state in which trying later makes sense).
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryAcquireError::WouldBlock)
    }
}

impl AcquireTimeoutError {
    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AcquireTimeoutError::Timeout)
    }
}

impl TryWaitError {
    /// Whether arriving would have meant waiting.
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryWaitError::WouldBlock)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        matches!(self, TryWaitError::Broken)
    }
}

impl BarrierTimeoutError {
    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, BarrierTimeoutError::Timeout)
    }

    /// Whether the barrier was broken by something else than the caller's own timeout.
    pub fn is_broken(&self) -> bool {
        matches!(self, BarrierTimeoutError::Broken)
    }
}

impl From<TryAcquireError> for Error {
    fn from(e: TryAcquireError) -> Self {
        match e {
            TryAcquireError::WouldBlock => Error::WouldBlock,
            TryAcquireError::Failed(e) => e,
        }
    }
}

impl From<AcquireTimeoutError> for Error {
    fn from(e: AcquireTimeoutError) -> Self {
        match e {
            AcquireTimeoutError::Timeout => Error::Timeout,
            AcquireTimeoutError::Failed(e) => e,
        }
    }
}

impl From<TryWaitError> for Error {
    fn from(e: TryWaitError) -> Self {
        match e {
            TryWaitError::WouldBlock => Error::WouldBlock,
            TryWaitError::Broken => Error::BrokenBarrier,
            TryWaitError::Failed(e) => e,
        }
    }
}

impl From<BarrierTimeoutError> for Error {
    fn from(e: BarrierTimeoutError) -> Self {
        match e {
            BarrierTimeoutError::Timeout => Error::Timeout,
            BarrierTimeoutError::Broken => Error::BrokenBarrier,
            BarrierTimeoutError::Failed(e) => e,
        }
    }
}

/// Whether a wait with a timeout ran out of time, as `std::sync::WaitTimeoutResult`:
/// returned by [`Event::wait_timeout`](crate::Event::wait_timeout) and, with the guard, by
/// [`Condition::wait_timeout`](crate::Condition::wait_timeout).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(pub(crate) bool);

impl WaitTimeoutResult {
    /// `true` when the wait ended because the time ran out (never the opposite meaning).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl fmt::Debug for WaitTimeoutResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WaitTimeoutResult").field(&self.0).finish()
    }
}

/// The result type of `ipc-sem`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
