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
    #[error("message could not be decoded: {0}")]
    Decode(#[source] CodecError),
    /// A value could not be encoded with `postcard` (nothing was sent).
    #[error("message could not be encoded: {0}")]
    Encode(#[source] CodecError),
    /// The deadline passed: before a complete message arrived (a partly
    /// received message is kept and the next receive continues it), or before
    /// the peer made room for a send to start (nothing was sent; `try_` forms
    /// report a full buffer this way).
    #[error("operation timed out")]
    Timeout,
    /// A framing error (malformed or oversized header, peer gone in the middle
    /// of a frame, a write that failed or ran out of time in the middle of a
    /// frame) broke the byte stream; this direction of the connection is
    /// unusable. Returned by the call that broke it and by every later one.
    #[error("connection poisoned: a framing error broke the byte stream")]
    Poisoned,
    /// The HMAC challenge-response of `Listener`/`Client` failed (wrong key or a
    /// peer that does not speak the protocol). The connection was closed.
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
