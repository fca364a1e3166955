#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("ipc-pipe supports Linux (and Android) only");

#[cfg(feature = "tokio")]
mod async_conn;
#[cfg(feature = "auth")]
mod auth;
mod connection;
mod error;
pub mod frame;
mod listener;
#[allow(unsafe_code)]
mod sys;
mod wait;

use std::os::fd::AsFd;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_conn::{AsyncConnection, AsyncListener, AsyncReceiver, AsyncSender};
#[cfg(feature = "auth")]
pub use auth::{AUTH_TIMEOUT, MAX_PENDING_HANDSHAKES};
pub use connection::{Connection, Receiver, Sender};
#[cfg(feature = "serde")]
pub use error::CodecError;
pub use error::{
    AcceptTimeoutError, Error, RecvTimeoutError, Result, SendTimeoutError, TryAcceptError,
    TryRecvError, TrySendError,
};
pub use listener::{Address, Client, Incoming, Listener};
pub use wait::wait;

/// Size `simplex` asks for with `F_SETPIPE_SZ` (best effort; the default
/// `fs.pipe-max-size` allows it).
pub const SIMPLEX_PIPE_SIZE: usize = 1 << 20;

/// A connected pair of duplex [`Connection`]s over
/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: Python's `Pipe()`.
///
/// Create it before `fork`; each process keeps one end and drops the other.
///
/// # Errors
/// [`Error::Io`] if `socketpair` fails (for example `EMFILE`).
///
/// # Example
/// ```
/// let (mut a, mut b) = ipc_pipe::duplex()?;
/// a.send_bytes(b"hi")?;
/// assert_eq!(b.recv_bytes()?, b"hi");
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub fn duplex() -> Result<(Connection, Connection)> {
    let (a, b) = sys::socketpair()?;
    Ok((
        Connection::new(a, sys::FdKind::Socket),
        Connection::new(b, sys::FdKind::Socket),
    ))
}

/// A one-way pipe over `pipe2(O_CLOEXEC)`: Python's `Pipe(duplex=False)`,
/// returned in the same order, `(receiver, sender)`.
///
/// The pipe is enlarged to [`SIMPLEX_PIPE_SIZE`] with `F_SETPIPE_SZ` when the
/// system allows (it does not when the user's pipe-buffer quota is used up;
/// that is ignored and the pipe keeps its default size).
///
/// # Errors
/// [`Error::Io`] if `pipe2` fails.
///
/// # Example
/// ```
/// let (mut rx, mut tx) = ipc_pipe::simplex()?;
/// tx.send_bytes(b"one way")?;
/// assert_eq!(rx.recv_bytes()?, b"one way");
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub fn simplex() -> Result<(Receiver, Sender)> {
    let (r, w) = sys::pipe()?;
    // Best effort: EPERM (quota) or EBUSY leave the default size.
    let _ = sys::set_pipe_size(w.as_fd(), SIMPLEX_PIPE_SIZE);
    Ok((Receiver::new(r, false), Sender::new(w, sys::FdKind::Pipe)))
}
