//! The crate's error type and the per-form lock errors that hand a guard back.

use std::fmt;
use std::io;

/// Errors of `ipc-shm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; the errno is kept.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The underlying error (with its errno).
        #[source]
        source: io::Error,
    },
    /// A segment name was empty, too long, or contained `/` or NUL past its leading slash.
    #[error("invalid shared memory name {0:?}: {1}")]
    InvalidName(String, &'static str),
    /// A size of zero, or one too large to map or to describe.
    #[error("invalid size {0}: {1}")]
    InvalidSize(u64, &'static str),
    /// `create_named` found the name already taken (`EEXIST`).
    #[error("shared memory name {0:?} already exists")]
    AlreadyExists(String),
    /// `open_named` found no segment of that name (`ENOENT`).
    #[error("no shared memory named {0:?}")]
    NotFound(String),
    /// The segment belongs to another user; it is not trusted.
    #[error("shared memory {name:?} is owned by uid {owner}, not by this user ({me})")]
    NotOwner {
        /// The segment's name.
        name: String,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The segment's header does not describe the object being opened.
    #[error("layout mismatch in {field}: expected {expected}, found {found}")]
    LayoutMismatch {
        /// The header field that differs (`magic`, `abi version`, `kind`, `element size`, ...).
        field: &'static str,
        /// What this side expects.
        expected: u64,
        /// What the segment holds.
        found: u64,
    },
    /// The segment was created in another pid namespace (another container, or a process
    /// that unshared its pid namespace). Thread ids recorded in it name other tasks here, so
    /// a dead holder could not be told from a live one; the open is refused rather than risk
    /// handing one lock or slot to two live parties.
    #[error("shared memory {name:?} was created in another pid namespace ({creator}, this one is {mine})")]
    ForeignPidNamespace {
        /// The segment's name.
        name: String,
        /// The creator's pid namespace (inode of `/proc/<pid>/ns/pid`).
        creator: u64,
        /// This process's pid namespace.
        mine: u64,
    },
    /// The named segment holds a typed object (it starts with this workspace's header):
    /// raw byte access through [`SharedMemory`](crate::SharedMemory) could write values the
    /// object's own users rely on never seeing. Open it with its own type instead.
    #[error("shared memory {0:?} holds a typed object; open it with its own type")]
    TypedSegment(String),
    /// The creator has not finished initialising the segment in time (or died while doing so).
    #[error("shared memory {0:?} was not initialised in time")]
    NotReady(String),
    /// A byte range outside the segment.
    #[error("range {offset}..{offset}+{len} is outside the segment of {size} bytes")]
    OutOfBounds {
        /// Start of the range.
        offset: usize,
        /// Its length.
        len: usize,
        /// The segment's size.
        size: usize,
    },
    /// An element index outside the array.
    #[error("index {index} is out of bounds for length {len}")]
    IndexOutOfBounds {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A slice whose length differs from the array's.
    #[error("length mismatch: the array holds {expected} elements, the slice {found}")]
    LengthMismatch {
        /// The array's length.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// The holder of the lock died while holding it. The lock is now poisoned: later lockers
    /// get [`Error::Poisoned`] unless the recovering locker calls `mark_consistent` (only
    /// possible through `lock()`, which hands the guard back in [`LockError::OwnerDied`]).
    /// Also the target of the `OwnerDied` variant of [`TryLockError`] and [`LockTimeoutError`].
    #[error("the previous lock holder died while holding it")]
    OwnerDied,
    /// A holder died and the next one did not mark the protected data consistent.
    #[error("the lock is poisoned: a holder died and the data was not marked consistent")]
    Poisoned,
    /// The deadline passed first (the target of [`LockTimeoutError::Timeout`]).
    #[error("timed out")]
    Timeout,
    /// A `try_` call found the lock held (the target of [`TryLockError::WouldBlock`]).
    #[error("the lock is held by another thread or process")]
    WouldBlock,
    /// The calling thread already holds this (non-re-entrant) lock.
    #[error("the calling thread already holds this lock")]
    Deadlock,
    /// An unlock by a thread that does not hold the lock.
    #[error("the calling thread does not hold this lock")]
    NotHeld,
    /// Shared state holds a value no correct peer writes.
    #[error("shared state is corrupted: {0}")]
    Corrupted(&'static str),
    /// A descriptor given to `from_fd` is not a memory file (a memfd or a `shm_open` file are
    /// regular files): a pipe, a socket, a directory, a device.
    #[error("fd {fd} is a {file_type}, not a shared memory file")]
    NotMemoryFile {
        /// The descriptor's number (closed by the refusal).
        fd: i32,
        /// What `fstat` says it is (`"pipe"`, `"socket"`, ...).
        file_type: &'static str,
    },
}

impl Error {
    /// Wraps an OS error, turning `EEXIST`/`ENOENT` into their own variants.
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        Error::Io { op, source }
    }

    /// The errno of an [`Error::Io`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The result type of `ipc-shm`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a blocking `lock()` returns: the guard `G`, or a [`LockError`] (as `std::sync`).
pub type LockResult<G> = std::result::Result<G, LockError<G>>;

/// What a `try_lock()` returns: the guard `G`, or a [`TryLockError`].
pub type TryLockResult<G> = std::result::Result<G, TryLockError<G>>;

/// What a `lock_timeout()` returns: the guard `G`, or a [`LockTimeoutError`].
pub type LockTimeoutResult<G> = std::result::Result<G, LockTimeoutError<G>>;

/// Why a blocking `lock()` did not simply hand the guard over; `G` is the guard type handed
/// back on [`LockError::OwnerDied`].
///
/// Like a robust `pthread_mutex_t`: after a holder dies, the next locker holds the lock but
/// gets `OwnerDied(guard)`. It inspects (and repairs) the protected data, then calls
/// `mark_consistent()` on the guard; dropping the guard without doing so leaves the lock
/// poisoned for everyone (`Poisoned`).
///
/// `try_lock()` returns [`TryLockError`] (these states plus `WouldBlock`), `lock_timeout()`
/// returns [`LockTimeoutError`] (these plus `Timeout`), as `std::sync` and crossbeam do.
pub enum LockError<G> {
    /// The lock is held by the caller now, but its previous holder died while holding it.
    OwnerDied(G),
    /// A holder died earlier and nobody marked the data consistent.
    Poisoned,
    /// The calling thread already holds this lock.
    Deadlock,
    /// The lock word holds a value no correct peer writes.
    Corrupted,
}

/// Why a `try_lock()` did not hand the guard over: [`TryLockError::WouldBlock`] when a live
/// holder has the lock, else the states of [`LockError`]. It never waits.
pub enum TryLockError<G> {
    /// A live holder (another thread or process) has the lock; nothing changed.
    WouldBlock,
    /// The lock is held by the caller now, but its previous holder died while holding it.
    OwnerDied(G),
    /// A holder died earlier and nobody marked the data consistent.
    Poisoned,
    /// The calling thread already holds this lock.
    Deadlock,
    /// The lock word holds a value no correct peer writes.
    Corrupted,
}

/// Why a `lock_timeout()` did not hand the guard over: [`LockTimeoutError::Timeout`] when the
/// time ran out with a live holder still holding it, else the states of [`LockError`].
pub enum LockTimeoutError<G> {
    /// The timeout passed with the lock still held by a live holder.
    Timeout,
    /// The lock is held by the caller now, but its previous holder died while holding it.
    OwnerDied(G),
    /// A holder died earlier and nobody marked the data consistent.
    Poisoned,
    /// The calling thread already holds this lock.
    Deadlock,
    /// The lock word holds a value no correct peer writes.
    Corrupted,
}

const OWNER_DIED: &str = "the previous lock holder died while holding it";
const POISONED: &str = "the lock is poisoned: a holder died and the data was not marked consistent";
const DEADLOCK: &str = "the calling thread already holds this lock";
const CORRUPTED: &str = "the lock word is corrupted";

/// The accessors, `Debug`, `Display`, `Error` and conversions the three lock errors share.
macro_rules! lock_error_common {
    ($ty:ident { $($extra:ident => $extra_desc:expr, $extra_err:expr;)* }) => {
        impl<G> $ty<G> {
            /// The guard of an `OwnerDied`, if that is what this is (the caller holds the
            /// lock; see [`LockError`] for what to do with it).
            pub fn into_guard(self) -> Option<G> {
                match self {
                    $ty::OwnerDied(g) => Some(g),
                    _ => None,
                }
            }

            /// Whether this is `OwnerDied`: the caller holds the lock, its previous holder died.
            pub fn is_owner_died(&self) -> bool {
                matches!(self, $ty::OwnerDied(_))
            }

            /// Whether this is `Poisoned`.
            pub fn is_poisoned(&self) -> bool {
                matches!(self, $ty::Poisoned)
            }

            /// Maps the guard type of an `OwnerDied`.
            pub fn map<H>(self, f: impl FnOnce(G) -> H) -> $ty<H> {
                match self {
                    $ty::OwnerDied(g) => $ty::OwnerDied(f(g)),
                    $ty::Poisoned => $ty::Poisoned,
                    $ty::Deadlock => $ty::Deadlock,
                    $ty::Corrupted => $ty::Corrupted,
                    $($ty::$extra => $ty::$extra,)*
                }
            }

            fn describe(&self) -> &'static str {
                match self {
                    $ty::OwnerDied(_) => OWNER_DIED,
                    $ty::Poisoned => POISONED,
                    $ty::Deadlock => DEADLOCK,
                    $ty::Corrupted => CORRUPTED,
                    $($ty::$extra => $extra_desc,)*
                }
            }
        }

        impl<G> fmt::Debug for $ty<G> {
            /// Never requires `G: Debug`: an `OwnerDied` guard shows as `OwnerDied(..)`.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $ty::OwnerDied(_) => "OwnerDied(..)",
                    $ty::Poisoned => "Poisoned",
                    $ty::Deadlock => "Deadlock",
                    $ty::Corrupted => "Corrupted",
                    $($ty::$extra => stringify!($extra),)*
                })
            }
        }

        impl<G> fmt::Display for $ty<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.describe())
            }
        }

        impl<G> std::error::Error for $ty<G> {}

        impl<G> From<$ty<G>> for Error {
            /// Converting drops an `OwnerDied` guard without marking it consistent, which
            /// poisons the lock: the conservative choice for code that only propagates errors.
            fn from(e: $ty<G>) -> Self {
                match e {
                    $ty::OwnerDied(_) => Error::OwnerDied,
                    $ty::Poisoned => Error::Poisoned,
                    $ty::Deadlock => Error::Deadlock,
                    $ty::Corrupted => Error::Corrupted("lock word"),
                    $($ty::$extra => $extra_err,)*
                }
            }
        }
    };
}

lock_error_common!(LockError {});
lock_error_common!(TryLockError {
    WouldBlock => "the lock is held by another thread or process", Error::WouldBlock;
});
lock_error_common!(LockTimeoutError {
    Timeout => "timed out waiting for the lock", Error::Timeout;
});

impl<G> TryLockError<G> {
    /// Whether a live holder has the lock (the only state in which the caller may simply try
    /// again later).
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryLockError::WouldBlock)
    }
}

impl<G> LockTimeoutError<G> {
    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockTimeoutError::Timeout)
    }
}

impl<G> From<LockError<G>> for TryLockError<G> {
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(g) => TryLockError::OwnerDied(g),
            LockError::Poisoned => TryLockError::Poisoned,
            LockError::Deadlock => TryLockError::Deadlock,
            LockError::Corrupted => TryLockError::Corrupted,
        }
    }
}

impl<G> From<LockError<G>> for LockTimeoutError<G> {
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(g) => LockTimeoutError::OwnerDied(g),
            LockError::Poisoned => LockTimeoutError::Poisoned,
            LockError::Deadlock => LockTimeoutError::Deadlock,
            LockError::Corrupted => LockTimeoutError::Corrupted,
        }
    }
}
