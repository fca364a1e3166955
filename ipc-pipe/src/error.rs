//! The crate's error type.

use std::io;

/// What can go wrong on a connection.
///
/// `Display` strings are lowercase without a final period. OS failures keep
/// their errno in [`Error::Io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (or died) and no complete message is left to read;
    /// or, on a send, the peer's end is closed.
    #[error("peer disconnected")]
    Disconnected,
    /// A frame is longer than the connection's `max_message_size`. On receive the
    /// length comes from the peer's header and nothing was allocated for it; the
    /// connection is poisoned because the stream cannot be resynchronised.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length claimed by the frame (or of the message being sent).
        len: u64,
        /// The connection's limit.
        max: usize,
    },
    /// A complete frame arrived but `postcard` could not decode it as the
    /// requested type. The frame was consumed whole; the connection stays usable.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[error("message could not be decoded: {0}")]
    Decode(#[source] CodecError),
    /// A value could not be encoded with `postcard` (nothing was sent).
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[error("message could not be encoded: {0}")]
    Encode(#[source] CodecError),
    /// A `_timeout` call ran out of time: the target of the conversions from
    /// [`RecvTimeoutError`], [`SendTimeoutError`] and [`AcceptTimeoutError`]
    /// (for `?` in code that returns this crate's `Error`; the methods
    /// themselves return those types). Returned directly only by
    /// `Client::connect_with_authkey` (feature `auth`), whose handshake is
    /// bounded by `AUTH_TIMEOUT`.
    #[error("operation timed out")]
    Timeout,
    /// A `try_recv*` found no complete message. Only the target of the
    /// conversion from [`TryRecvError::Empty`].
    #[error("no message is waiting")]
    Empty,
    /// A `try_send*` found no room. Only the target of the conversion from
    /// [`TrySendError::Full`].
    #[error("the peer's buffer is full")]
    Full,
    /// A `try_accept` found no peer ready. Only the target of the conversion
    /// from [`TryAcceptError::WouldBlock`].
    #[error("no peer is ready to be accepted")]
    WouldBlock,
    /// A framing error (malformed or oversized header, peer gone in the middle
    /// of a frame, a write that failed in the middle of a frame) broke the
    /// byte stream; this direction of the connection is unusable. Returned by
    /// the call that broke it and by every later one. A send that runs out of
    /// room or time never poisons (see [`Connection::flush`](crate::Connection::flush)).
    #[error("connection poisoned: a framing error broke the byte stream")]
    Poisoned,
    /// The HMAC challenge-response of `Listener`/`Client` failed (wrong key or a
    /// peer that does not speak the protocol). The connection was closed.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The next frame is of another kind than the call expects: file descriptors
    /// when bytes were asked for, or bytes when `recv_fds` was called. Nothing was
    /// consumed; call the other method to take it.
    #[error("unexpected frame: next message holds {found}")]
    UnexpectedFrame {
        /// What the next frame holds: `"file descriptors"` or `"bytes"`.
        found: &'static str,
    },
    /// Any other OS error, errno preserved.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an I/O error from a read or write, turning the "peer is gone" errnos
    /// into [`Error::Disconnected`].
    pub(crate) fn from_io(e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EPIPE) | Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => {
                Error::Disconnected
            }
            _ => Error::Io(e),
        }
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
/// Why a message could not be encoded or decoded, in the codec's words. Opaque: the codec's
/// own error type is not part of this crate's API, so upgrading the codec (`postcard`) is not
/// a breaking change.
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

/// Declares a per-operation error enum: its variants, `Display`,
/// `std::error::Error`, `From<..> for Error` and the conversion from the
/// internal `Error` that the crate's one send/receive path returns.
macro_rules! op_error {
    (
        $(#[$meta:meta])*
        $name:ident {
            $(#[$wb_meta:meta])* $would_block:ident => $wb_msg:literal, $wb_err:ident;
            $($(#[$dis_meta:meta])* Disconnected => $dis_msg:literal;)?
        }
        $from_internal:ident: $($internal:ident)|*
    ) => {
        $(#[$meta])*
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum $name {
            $(#[$wb_meta])*
            $would_block,
            $($(#[$dis_meta])* Disconnected,)?
            /// Any other failure, as the crate's [`Error`].
            Failed(Error),
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $name::$would_block => f.write_str($wb_msg),
                    $($name::Disconnected => f.write_str($dis_msg),)?
                    $name::Failed(e) => std::fmt::Display::fmt(e, f),
                }
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Failed(e) => e.source(),
                    _ => None,
                }
            }
        }

        impl From<$name> for Error {
            fn from(e: $name) -> Error {
                match e {
                    $name::$would_block => Error::$wb_err,
                    $($name::Disconnected => {
                        let _ = $dis_msg;
                        Error::Disconnected
                    })?
                    $name::Failed(e) => e,
                }
            }
        }

        impl $name {
            /// Maps the result of the internal path, where the would-block
            /// state is `Error::Timeout`.
            pub(crate) fn $from_internal(e: Error) -> $name {
                match e {
                    $(Error::$internal => $name::$would_block,)*
                    $(Error::Disconnected => {
                        let _ = $dis_msg;
                        $name::Disconnected
                    })?
                    e => $name::Failed(e),
                }
            }
        }
    };
}

op_error! {
    /// Why [`try_recv_bytes`](crate::Connection::try_recv_bytes) (and
    /// `try_recv`, `try_recv_bytes_into`, `try_recv_fds`) returned no message.
    TryRecvError {
        /// No complete message is waiting (a partly received one is kept for
        /// the next receive).
        Empty => "no message is waiting", Empty;
        /// The peer closed its end (or died) and every complete message has
        /// been delivered.
        Disconnected => "peer disconnected";
    }
    from_internal: Timeout
}

op_error! {
    /// Why [`recv_bytes_timeout`](crate::Connection::recv_bytes_timeout) (and
    /// `recv_timeout`, `recv_bytes_into_timeout`, `recv_fds_timeout`)
    /// returned no message.
    RecvTimeoutError {
        /// No complete message arrived in time (a partly received one is kept
        /// for the next receive).
        Timeout => "timed out waiting for a message", Timeout;
        /// The peer closed its end (or died) and every complete message has
        /// been delivered.
        Disconnected => "peer disconnected";
    }
    from_internal: Timeout
}

op_error! {
    /// Why [`try_send_bytes`](crate::Connection::try_send_bytes) (and
    /// `try_send`, `try_send_bytes_many`, `try_send_fds`, `try_flush`) did not
    /// accept the message. The message was not sent, none of it; the connection stays
    /// usable.
    TrySendError {
        /// The peer's buffer has no room now (or the tail of an earlier
        /// message is still waiting to go out).
        Full => "the peer's buffer is full", Full;
        /// The peer's end is closed.
        Disconnected => "peer disconnected";
    }
    from_internal: Timeout
}

op_error! {
    /// Why [`send_bytes_timeout`](crate::Connection::send_bytes_timeout) (and
    /// `send_timeout`, `send_bytes_many_timeout`, `send_fds_timeout`,
    /// `flush_timeout`) did not accept the message. The message was not sent,
    /// none of it; the connection stays usable.
    SendTimeoutError {
        /// The peer made no room in time.
        Timeout => "timed out waiting for room to send", Timeout;
        /// The peer's end is closed.
        Disconnected => "peer disconnected";
    }
    from_internal: Timeout
}

op_error! {
    /// Why [`Listener::try_accept`](crate::Listener::try_accept) returned no
    /// connection.
    TryAcceptError {
        /// No peer is waiting (or none has finished its handshake yet).
        WouldBlock => "no peer is ready to be accepted", WouldBlock;
    }
    from_internal: Timeout
}

op_error! {
    /// Why [`Listener::accept_timeout`](crate::Listener::accept_timeout)
    /// returned no connection.
    AcceptTimeoutError {
        /// No peer connected (and finished its handshake) in time.
        Timeout => "timed out waiting for a peer", Timeout;
    }
    from_internal: Timeout
}

macro_rules! predicates {
    ($name:ident, $wb:ident, $is_wb:ident, $doc:literal $(, $dis:ident)?) => {
        impl $name {
            #[doc = $doc]
            pub fn $is_wb(&self) -> bool {
                matches!(self, $name::$wb)
            }
            $(
                /// Whether the peer's end is closed.
                pub fn is_disconnected(&self) -> bool {
                    matches!(self, $name::$dis)
                }
            )?
        }
    };
}

predicates!(
    TryRecvError,
    Empty,
    is_empty,
    "Whether no message was waiting.",
    Disconnected
);
predicates!(
    RecvTimeoutError,
    Timeout,
    is_timeout,
    "Whether the time ran out.",
    Disconnected
);
predicates!(
    TrySendError,
    Full,
    is_full,
    "Whether the peer's buffer was full.",
    Disconnected
);
predicates!(
    SendTimeoutError,
    Timeout,
    is_timeout,
    "Whether the time ran out.",
    Disconnected
);
predicates!(
    TryAcceptError,
    WouldBlock,
    is_would_block,
    "Whether no peer was ready."
);
predicates!(
    AcceptTimeoutError,
    Timeout,
    is_timeout,
    "Whether the time ran out."
);
