//! Errors: the crate's [`Error`], and the put errors that hand the value back.

use std::fmt;

/// Errors of `ipc-queue`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `try_put` found no free slot.
    #[error("queue is full")]
    Full,
    /// A `try_get` found no message.
    #[error("queue is empty")]
    Empty,
    /// The deadline passed first.
    #[error("timed out")]
    Timeout,
    /// The queue was closed (for gets: and everything queued has been taken).
    #[error("queue is closed")]
    Closed,
    /// The encoded message does not fit a slot.
    #[error("message of {len} bytes exceeds the slot capacity of {max} bytes")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The most a slot holds.
        max: usize,
    },
    /// The message could not be encoded (its `Serialize` implementation failed).
    #[error("cannot encode message: {0}")]
    Encode(#[source] CodecError),
    /// The message in the slot does not decode as the queue's type.
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

macro_rules! put_error {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $var:ident => $msg:literal, $err:expr; )* }
    ) => {
        $(#[$meta])*
        pub enum $name<T> {
            $( $(#[$vmeta])* $var(T), )*
            /// The encoded message does not fit a slot; the value is handed back.
            TooLarge {
                /// The value.
                value: T,
                /// Its encoded length.
                len: usize,
                /// The most a slot holds.
                max: usize,
            },
            /// Encoding failed or the queue's shared state is corrupted; the value is
            /// handed back with the cause.
            Failed(T, Error),
        }

        impl<T> $name<T> {
            /// The value that was not put.
            pub fn into_inner(self) -> T {
                match self {
                    $( $name::$var(v) )|* => v,
                    $name::TooLarge { value, .. } => value,
                    $name::Failed(v, _) => v,
                }
            }

            /// The value-less error.
            pub fn into_error(self) -> Error {
                Error::from(self)
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$var(_) => f.write_str(concat!(stringify!($var), "(..)")), )*
                    $name::TooLarge { len, max, .. } => f
                        .debug_struct("TooLarge")
                        .field("len", len)
                        .field("max", max)
                        .finish_non_exhaustive(),
                    $name::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( $name::$var(_) => f.write_str($msg), )*
                    $name::TooLarge { len, max, .. } => write!(
                        f,
                        "message of {len} bytes exceeds the slot capacity of {max} bytes"
                    ),
                    $name::Failed(_, e) => fmt::Display::fmt(e, f),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}

        impl<T> From<$name<T>> for Error {
            fn from(e: $name<T>) -> Error {
                match e {
                    $( $name::$var(_) => $err, )*
                    $name::TooLarge { len, max, .. } => Error::TooLarge { len, max },
                    $name::Failed(_, e) => e,
                }
            }
        }
    };
}

put_error! {
    /// Why `try_put` did not put; the value comes back.
    TryPutError {
        /// No free slot.
        Full => "queue is full", Error::Full;
        /// The queue is closed.
        Closed => "queue is closed", Error::Closed;
    }
}

put_error! {
    /// Why `put_timeout` did not put; the value comes back.
    PutTimeoutError {
        /// No slot came free before the deadline.
        Timeout => "timed out", Error::Timeout;
        /// The queue is closed.
        Closed => "queue is closed", Error::Closed;
    }
}

put_error! {
    /// Why a blocking `put` did not put; the value comes back.
    PutError {
        /// The queue is closed.
        Closed => "queue is closed", Error::Closed;
    }
}

/// Why a put failed, before the value is attached.
#[derive(Debug)]
pub(crate) enum PutFail {
    Full,
    Closed,
    TooLarge { len: usize, max: usize },
    Failed(Error),
}

impl PutFail {
    pub(crate) fn try_put<T>(self, v: T) -> TryPutError<T> {
        match self {
            PutFail::Full => TryPutError::Full(v),
            PutFail::Closed => TryPutError::Closed(v),
            PutFail::TooLarge { len, max } => TryPutError::TooLarge { value: v, len, max },
            PutFail::Failed(e) => TryPutError::Failed(v, e),
        }
    }

    pub(crate) fn put_timeout<T>(self, v: T) -> PutTimeoutError<T> {
        match self {
            PutFail::Full => PutTimeoutError::Timeout(v),
            PutFail::Closed => PutTimeoutError::Closed(v),
            PutFail::TooLarge { len, max } => PutTimeoutError::TooLarge { value: v, len, max },
            PutFail::Failed(e) => PutTimeoutError::Failed(v, e),
        }
    }

    pub(crate) fn put<T>(self, v: T) -> PutError<T> {
        match self {
            // A blocking put has no deadline: "full" cannot end it.
            PutFail::Full => PutError::Failed(v, Error::Timeout),
            PutFail::Closed => PutError::Closed(v),
            PutFail::TooLarge { len, max } => PutError::TooLarge { value: v, len, max },
            PutFail::Failed(e) => PutError::Failed(v, e),
        }
    }
}

/// Why a message could not be encoded or decoded, in the codec's words. Opaque: the codec's
/// own error type is not part of this crate's API, so upgrading the codec (`postcard`) is not
/// a breaking change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(postcard::Error);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for CodecError {}

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
