//! Errors: the crate's [`Error`], and one error type per form of each blocking operation
//! (`try_`, `_timeout`, blocking), in the style of `crossbeam-channel`: the put errors hand
//! the value back.

use std::fmt;

/// Errors of `ipc-queue`.
///
/// The per-operation errors ([`TryGetError`], [`GetTimeoutError`], [`TryPutError`],
/// [`PutTimeoutError`], [`PutError`], [`JoinTimeoutError`]) convert into it with `From`, so
/// `?` works in code that returns this type; `Full`, `Empty` and `Timeout` exist only as the
/// targets of those conversions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `try_put` found no free slot (from [`TryPutError::Full`]).
    #[error("queue is full")]
    Full,
    /// A `try_get` found no message (from [`TryGetError::Empty`]).
    #[error("queue is empty")]
    Empty,
    /// The deadline passed first (from a `_timeout` form's `Timeout`).
    #[error("timed out")]
    Timeout,
    /// The queue was closed (for gets: and everything queued has been taken).
    #[error("queue is closed")]
    Closed,
    /// The encoded message does not fit a slot.
    #[cfg(feature = "serde")]
    #[error("message of {len} bytes exceeds the slot capacity of {max} bytes")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The most a slot holds.
        max: usize,
    },
    /// The message could not be encoded (its `Serialize` implementation failed).
    #[cfg(feature = "serde")]
    #[error("cannot encode message: {0}")]
    Encode(#[source] CodecError),
    /// The message in the slot does not decode as the queue's type.
    #[cfg(feature = "serde")]
    #[error("cannot decode message: {0}")]
    Decode(#[source] CodecError),
    /// `join` finished, but some tasks were lost with consumers that died holding them.
    #[error("{dropped} task(s) were lost with consumers that died")]
    PeerDied {
        /// Tasks dropped while this `join` waited.
        dropped: u64,
    },
    /// `task_done` was called more times than messages were put.
    #[error("task_done called more times than messages were put")]
    TaskDoneTooManyTimes,
    /// A capacity or message size out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// Shared state holds a value no correct peer writes (a corrupted or hostile segment).
    #[error("shared queue state is corrupted: {0}")]
    Corrupted(&'static str),
    /// The segment could not be created, opened or validated (including
    /// `LayoutMismatch` for another element type, capacity or slot size).
    #[error(transparent)]
    Shm(#[from] ipc_shm::Error),
}

/// The result type of `ipc-queue`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why `try_get` returned no message.
///
/// ```
/// use ipc_queue::{PodQueue, TryGetError};
///
/// let q = PodQueue::<u64>::new(2)?;
/// assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
/// q.put(5u64)?;
/// q.close();
/// assert_eq!(q.try_get()?, 5); // a closed queue still hands out what is queued
/// assert!(q.try_get().unwrap_err().is_closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TryGetError {
    /// No message is queued now (the queue is open).
    #[error("queue is empty")]
    Empty,
    /// The queue is closed and everything queued has been taken.
    #[error("queue is closed")]
    Closed,
    /// The message could not be read: `Decode`, `Corrupted`.
    #[error(transparent)]
    Failed(Error),
}

impl TryGetError {
    /// Whether the queue was empty (and open).
    pub fn is_empty(&self) -> bool {
        matches!(self, TryGetError::Empty)
    }

    /// Whether the queue is closed and drained.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryGetError::Closed)
    }
}

impl From<TryGetError> for Error {
    fn from(e: TryGetError) -> Error {
        match e {
            TryGetError::Empty => Error::Empty,
            TryGetError::Closed => Error::Closed,
            TryGetError::Failed(e) => e,
        }
    }
}

/// Why `get_timeout` returned no message.
#[derive(Debug, thiserror::Error)]
pub enum GetTimeoutError {
    /// No message arrived before the deadline (the queue is open).
    #[error("timed out")]
    Timeout,
    /// The queue is closed and everything queued has been taken (also wakes a waiting call).
    #[error("queue is closed")]
    Closed,
    /// The message could not be read: `Decode`, `Corrupted`.
    #[error(transparent)]
    Failed(Error),
}

impl GetTimeoutError {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, GetTimeoutError::Timeout)
    }

    /// Whether the queue is closed and drained.
    pub fn is_closed(&self) -> bool {
        matches!(self, GetTimeoutError::Closed)
    }
}

impl From<GetTimeoutError> for Error {
    fn from(e: GetTimeoutError) -> Error {
        match e {
            GetTimeoutError::Timeout => Error::Timeout,
            GetTimeoutError::Closed => Error::Closed,
            GetTimeoutError::Failed(e) => e,
        }
    }
}

/// Why `join_timeout` returned before every task was done, or with tasks lost.
///
/// `PeerDied` is a variant of its own because a caller branches on it: the work is over (no
/// task is pending any more), but `dropped` of them were lost with killed consumers and may
/// need doing again.
#[derive(Debug, thiserror::Error)]
pub enum JoinTimeoutError {
    /// Tasks were still unfinished at the deadline.
    #[error("timed out")]
    Timeout,
    /// Every task is accounted for, but `dropped` were lost with consumers killed while this
    /// call waited.
    #[error("{dropped} task(s) were lost with consumers that died")]
    PeerDied {
        /// Tasks dropped while this call waited.
        dropped: u64,
    },
    /// Anything else (no such case today; kept so the type reads as every other `_timeout`
    /// error of the workspace).
    #[error(transparent)]
    Failed(Error),
}

impl JoinTimeoutError {
    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, JoinTimeoutError::Timeout)
    }
}

impl From<JoinTimeoutError> for Error {
    fn from(e: JoinTimeoutError) -> Error {
        match e {
            JoinTimeoutError::Timeout => Error::Timeout,
            JoinTimeoutError::PeerDied { dropped } => Error::PeerDied { dropped },
            JoinTimeoutError::Failed(e) => e,
        }
    }
}

macro_rules! put_error {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $var:ident ($is:ident) => $msg:literal, $err:expr; )*
        }
    ) => {
        $(#[$meta])*
        pub enum $name<T> {
            $( $(#[$vmeta])* $var(T), )*
            /// Anything else, the value handed back with the cause: `TooLarge` (the encoded
            /// message does not fit a slot), `Encode`, `Corrupted`.
            Failed(T, Error),
        }

        impl<T> $name<T> {
            /// The value that was not put.
            pub fn into_inner(self) -> T {
                match self {
                    $( $name::$var(v) )|* => v,
                    $name::Failed(v, _) => v,
                }
            }

            /// The value-less error (as `Error::from`).
            pub fn into_error(self) -> Error {
                Error::from(self)
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($var), "`.")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$var(_))
                }
            )*
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$var(_) => f.write_str(concat!(stringify!($var), "(..)")), )*
                    $name::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$var(_) => f.write_str($msg), )*
                    $name::Failed(_, e) => fmt::Display::fmt(e, f),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Failed(_, e) => std::error::Error::source(e),
                    _ => None,
                }
            }
        }

        impl<T> From<$name<T>> for Error {
            fn from(e: $name<T>) -> Error {
                match e {
                    $( $name::$var(_) => $err, )*
                    $name::Failed(_, e) => e,
                }
            }
        }
    };
}

put_error! {
    /// Why `try_put` did not put; the value comes back.
    TryPutError {
        /// No free slot now.
        Full(is_full) => "queue is full", Error::Full;
        /// The queue is closed.
        Closed(is_closed) => "queue is closed", Error::Closed;
    }
}

put_error! {
    /// Why `put_timeout` did not put; the value comes back.
    PutTimeoutError {
        /// No slot came free before the deadline.
        Timeout(is_timeout) => "timed out", Error::Timeout;
        /// The queue is closed (also wakes a waiting call).
        Closed(is_closed) => "queue is closed", Error::Closed;
    }
}

put_error! {
    /// Why a blocking `put` did not put; the value comes back.
    PutError {
        /// The queue is closed (also wakes a waiting call).
        Closed(is_closed) => "queue is closed", Error::Closed;
    }
}

/// Why a put failed, before the value is attached.
#[derive(Debug)]
pub(crate) enum PutFail {
    Full,
    Closed,
    Failed(Error),
}

impl PutFail {
    pub(crate) fn try_put<T>(self, v: T) -> TryPutError<T> {
        match self {
            PutFail::Full => TryPutError::Full(v),
            PutFail::Closed => TryPutError::Closed(v),
            PutFail::Failed(e) => TryPutError::Failed(v, e),
        }
    }

    pub(crate) fn put_timeout<T>(self, v: T) -> PutTimeoutError<T> {
        match self {
            PutFail::Full => PutTimeoutError::Timeout(v),
            PutFail::Closed => PutTimeoutError::Closed(v),
            PutFail::Failed(e) => PutTimeoutError::Failed(v, e),
        }
    }

    pub(crate) fn put<T>(self, v: T) -> PutError<T> {
        match self {
            // A blocking put has no deadline: "full" cannot end it.
            PutFail::Full => PutError::Failed(v, Error::Timeout),
            PutFail::Closed => PutError::Closed(v),
            PutFail::Failed(e) => PutError::Failed(v, e),
        }
    }
}

/// Why a message could not be encoded or decoded, in the codec's words. Opaque: the codec's
/// own error type is not part of this crate's API, so upgrading the codec (`postcard`) is not
/// a breaking change.
#[cfg(feature = "serde")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(postcard::Error);

#[cfg(feature = "serde")]
impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for CodecError {}

#[cfg(feature = "serde")]
impl Error {
    /// `Decode`, from the codec's error.
    pub(crate) fn decode(e: postcard::Error) -> Error {
        Error::Decode(CodecError(e))
    }

    /// `Encode`, from the codec's error.
    pub(crate) fn encode(e: postcard::Error) -> Error {
        Error::Encode(CodecError(e))
    }
}
