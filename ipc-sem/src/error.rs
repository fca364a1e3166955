//! The crate's error type.

use std::io;

pub use ipc_shm::LockError;

/// Errors of `ipc-sem`.
///
/// Lock operations that hand a guard back on a dead holder return [`LockError`] instead;
/// it converts into this type (dropping, and so poisoning, the guard of an `OwnerDied`).
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
    /// The deadline passed first.
    #[error("timed out")]
    Timeout,
    /// A `try_` call found the object busy.
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

impl<G> From<LockError<G>> for Error {
    /// Converting drops an `OwnerDied` guard without marking it consistent, which poisons the
    /// lock: the conservative choice for code that only propagates errors.
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(_) => Error::OwnerDied,
            LockError::Poisoned => Error::Poisoned,
            LockError::Timeout => Error::Timeout,
            LockError::WouldBlock => Error::WouldBlock,
            LockError::Deadlock => Error::Deadlock,
            LockError::Corrupted => Error::Corrupted("lock word"),
        }
    }
}

/// The result type of `ipc-sem`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
