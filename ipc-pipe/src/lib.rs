//! Message-framed pipes between processes: the Rust counterpart of Python's
//! `multiprocessing.Pipe`, `Connection`, `connection.wait` and
//! `Listener`/`Client`.
//!
//! | item | what |
//! |---|---|
//! | [`duplex`] | a pair of [`Connection`]s over `socketpair(AF_UNIX, SOCK_STREAM)` |
//! | [`simplex`] | a [`Receiver`] and a [`Sender`] over `pipe2` (Python's `Pipe(duplex=False)`) |
//! | [`Connection`] | send/receive bytes or `serde` values (postcard), pass fds, poll |
//! | [`Receiver`], [`Sender`] | the two ends of a simplex pipe |
//! | [`wait`] | block until any of several connections, pidfds or fds is ready |
//! | [`Listener`], [`Client`] | connect unrelated processes by Unix path or TCP, optional HMAC key |
//! | [`frame`] | the wire format and its incremental [`frame::Decoder`] |
//! | [`Error`] | `Disconnected`, `TooLarge`, `Decode`, `Timeout`, `Poisoned`, `AuthenticationFailed`, ... |
//!
//! Every message is a frame: a `u32` little-endian length then the payload
//! (an escape and a `u64` for 4 GiB and more). A frame longer than
//! `max_message_size` (64 MiB by default) is refused before anything is
//! allocated, so a hostile peer cannot make the receiver allocate; a broken
//! frame poisons the connection rather than yielding garbage. A peer that exits
//! or is killed shows up as [`Error::Disconnected`] after the messages it
//! completed, never as a hang or a `SIGPIPE`.
//!
//! Every blocking call, send or receive, also has a `try_` and a `_timeout`
//! form. A bounded send either writes the whole message or nothing of it
//! (`Err(Timeout)`, the caller keeps its value), or, when a message that had
//! started cannot finish by the deadline, poisons the sending direction rather
//! than leave the peer a cut frame: see [`Connection::send_bytes_timeout`].
//!
//! Sending costs one system call per message (a small payload is copied
//! behind its header into one buffer; a large one goes uncopied in a vectored
//! write); receiving reads ahead into a small buffer so one read usually
//! brings whole messages, and large payloads are read straight into the
//! caller's `Vec`. To go below one system call per message, send in batches:
//! [`Connection::send_bytes_many`] writes many small messages at once, and the
//! receiver still takes them one by one.
//!
//! # Example: parent and child
//! ```
//! use ipc_pipe::duplex;
//!
//! let (mut parent, mut child) = duplex()?;
//! // SAFETY: the child only uses its connection and leaves with `_exit`.
//! match unsafe { libc::fork() } {
//!     -1 => panic!("fork failed"),
//!     0 => {
//!         drop(parent);
//!         let n: u64 = child.recv().unwrap_or(0);
//!         let _ = child.send(&(n * 2));
//!         unsafe { libc::_exit(0) };
//!     }
//!     pid => {
//!         drop(child);
//!         parent.send(&21u64)?;
//!         assert_eq!(parent.recv::<u64>()?, 42);
//!         let mut status = 0;
//!         unsafe { libc::waitpid(pid, &mut status, 0) };
//!     }
//! }
//! # Ok::<(), ipc_pipe::Error>(())
//! ```
//!
//! # Failpoints
//! Named fault points (`ipc_failpoints`, armed only in builds with this
//! crate's `failpoints` feature) for crash tests:
//!
//! | name | where | a kill there models |
//! |---|---|---|
//! | `pipe.frame.header_written` | the frame writer, after a write that put the frame's header on the wire but not all of its body (a bounded or `try_` send of a frame larger than the free buffer space; a blocking send finishes inside the kernel) | a sender dying mid-frame: the receiver gets every whole message, then [`Error::Disconnected`] for the cut one and [`Error::Poisoned`] after, once no process holds the write end |
//!
//! # Thread safety
//! All handle types are `Send` and `Sync`; their methods take `&mut self`, so
//! one thread uses a handle at a time. `SIGPIPE` handling on pipes touches only
//! the calling thread's signal mask.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!("ipc-pipe supports Linux (and Android) only");

mod connection;
mod error;
pub mod frame;
mod listener;
#[allow(unsafe_code)]
mod sys;
mod wait;

use std::os::fd::AsFd;

pub use connection::{Connection, Receiver, Sender};
pub use error::{CodecError, Error, Result};
pub use listener::{Address, Client, Listener, AUTH_TIMEOUT, MAX_PENDING_HANDSHAKES};
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
/// tx.send(&"one way")?;
/// assert_eq!(rx.recv::<String>()?, "one way");
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub fn simplex() -> Result<(Receiver, Sender)> {
    let (r, w) = sys::pipe()?;
    // Best effort: EPERM (quota) or EBUSY leave the default size.
    let _ = sys::set_pipe_size(w.as_fd(), SIMPLEX_PIPE_SIZE);
    Ok((Receiver::new(r, false), Sender::new(w, sys::FdKind::Pipe)))
}
