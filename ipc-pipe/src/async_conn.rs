//! The async layer (feature `tokio`): [`AsyncConnection`], [`AsyncSender`],
//! [`AsyncReceiver`], [`AsyncListener`] and [`Client::connect_async`], over
//! tokio's reactor ([`tokio::io::unix::AsyncFd`]).
//!
//! There is no second framing or handshake here: every operation is the
//! blocking handle's `try_` form (which never blocks and never poisons),
//! retried when the reactor reports the fd ready. The first attempt is made
//! without asking the reactor, so a message already waiting (or room already
//! free) costs exactly the syscalls of the `try_` form; readiness is waited
//! for only when that attempt would block, and the readiness seen is cleared
//! only after an attempt that found the fd empty (or full).
//!
//! Cancel safety follows from that shape: all the state of an operation in
//! progress lives in the wrapped handle, never in the future. A receive
//! dropped mid-message leaves what arrived of it in the handle's read-ahead
//! buffer (the next receive continues it); a send that was accepted but not
//! yet written whole leaves its tail in the handle (the next send or
//! [`flush`](AsyncConnection::flush) writes it first), so the stream is never
//! cut in the middle of a frame.

use std::fmt;
use std::future::poll_fn;
#[cfg(feature = "auth")]
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
#[cfg(feature = "auth")]
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

#[cfg(feature = "serde")]
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

#[cfg(feature = "auth")]
use crate::auth::{ClientHandshake, Handshake, Progress, AUTH_TIMEOUT, MAX_PENDING_HANDSHAKES};
use crate::{sys, Address, Client, Connection, Error, Listener, Receiver, Result, Sender};
use crate::{AcceptTimeoutError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// The monotonic deadline `d` from now; `None` when too far to represent
/// (waits without a deadline, as the blocking forms do).
fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// What a `try_` receive said, for the drivers: `None` would block.
fn recv_step<T>(r: Result<T, TryRecvError>) -> Option<Result<T>> {
    match r {
        Err(TryRecvError::Empty) => None,
        r => Some(r.map_err(Error::from)),
    }
}

/// What a `try_` send said, for the drivers: `None` would block.
fn send_step<T>(r: Result<T, TrySendError>) -> Option<Result<T>> {
    match r {
        Err(TrySendError::Full) => None,
        r => Some(r.map_err(Error::from)),
    }
}

/// Retries `op` (`None`: it would block) each time the reactor reports the
/// fd ready in `dir`, clearing the readiness it saw whenever `op` finds the
/// fd empty (or full) again, until `op` finishes or the fd is not ready
/// (then the task's waker is registered).
fn poll_op<H: AsRawFd, T>(
    fd: &mut AsyncFd<H>,
    cx: &mut Context<'_>,
    write: bool,
    op: &mut impl FnMut(&mut H) -> Option<Result<T>>,
) -> Poll<Result<T>> {
    loop {
        if write {
            let mut guard = ready!(fd.poll_write_ready_mut(cx))?;
            match op(guard.get_inner_mut()) {
                Some(r) => return Poll::Ready(r),
                None => guard.clear_ready(),
            }
        } else {
            let mut guard = ready!(fd.poll_read_ready_mut(cx))?;
            match op(guard.get_inner_mut()) {
                Some(r) => return Poll::Ready(r),
                None => guard.clear_ready(),
            }
        }
    }
}

/// Runs `op` to completion: once at once (the fast path: no reactor call),
/// then on readiness. Cancel-safe when `op` is (each call either finishes or
/// changes nothing but the handle's own buffers).
async fn drive<H: AsRawFd, T>(
    fd: &mut AsyncFd<H>,
    write: bool,
    mut op: impl FnMut(&mut H) -> Option<Result<T>>,
) -> Result<T> {
    if let Some(r) = op(fd.get_mut()) {
        return r;
    }
    poll_fn(|cx| poll_op(fd, cx, write, &mut op)).await
}

/// [`drive`] bounded by `deadline`: `None` when it passed first.
async fn drive_until<H: AsRawFd, T>(
    fd: &mut AsyncFd<H>,
    write: bool,
    deadline: Option<Instant>,
    op: impl FnMut(&mut H) -> Option<Result<T>>,
) -> Option<Result<T>> {
    match deadline {
        None => Some(drive(fd, write, op).await),
        Some(d) => tokio::time::timeout_at(d, drive(fd, write, op)).await.ok(),
    }
}

/// A receive waiting at most `timeout`.
async fn recv_timeout<H: AsRawFd, T>(
    fd: &mut AsyncFd<H>,
    timeout: Duration,
    op: impl FnMut(&mut H) -> Option<Result<T>>,
) -> Result<T, RecvTimeoutError> {
    match drive_until(fd, false, deadline_after(timeout), op).await {
        Some(r) => r.map_err(RecvTimeoutError::from_internal),
        None => Err(RecvTimeoutError::Timeout),
    }
}

/// The write side of a handle: what the send drivers need besides the op.
trait Tx: AsRawFd {
    fn pending(&self) -> usize;
    fn try_flush(&mut self) -> Result<(), TrySendError>;
}

impl Tx for Connection {
    fn pending(&self) -> usize {
        self.pending_bytes()
    }
    fn try_flush(&mut self) -> Result<(), TrySendError> {
        Connection::try_flush(self)
    }
}

impl Tx for Sender {
    fn pending(&self) -> usize {
        self.pending_bytes()
    }
    fn try_flush(&mut self) -> Result<(), TrySendError> {
        Sender::try_flush(self)
    }
}

/// The flush op: done when no tail is pending.
fn flush_step<H: Tx>(h: &mut H) -> Option<Result<()>> {
    if h.pending() == 0 {
        return Some(Ok(()));
    }
    send_step(h.try_flush())
}

/// A send: the message accepted (the op), then its tail, if any, written.
async fn send<H: Tx, T>(
    fd: &mut AsyncFd<H>,
    op: impl FnMut(&mut H) -> Option<Result<T>>,
) -> Result<T> {
    let t = drive(fd, true, op).await?;
    drive(fd, true, flush_step).await?;
    Ok(t)
}

/// A send waiting at most `timeout`: `Timeout` when the message was not
/// accepted in time (nothing of it written); once accepted, its tail is
/// written until the deadline and otherwise kept, as the blocking form does.
async fn send_timeout<H: Tx, T>(
    fd: &mut AsyncFd<H>,
    timeout: Duration,
    op: impl FnMut(&mut H) -> Option<Result<T>>,
) -> Result<T, SendTimeoutError> {
    let deadline = deadline_after(timeout);
    let t = match drive_until(fd, true, deadline, op).await {
        Some(r) => r.map_err(SendTimeoutError::from_internal)?,
        None => return Err(SendTimeoutError::Timeout),
    };
    if let Some(r) = drive_until(fd, true, deadline, flush_step).await {
        r.map_err(SendTimeoutError::from_internal)?;
    }
    Ok(t)
}

/// The op of `send_bytes_many`: sends from `*sent` on, as far as room
/// allows; done when every message is accepted.
fn many_step<H, B: AsRef<[u8]>>(
    h: &mut H,
    msgs: &[B],
    sent: &mut usize,
    try_many: fn(&mut H, &[B]) -> Result<usize, TrySendError>,
) -> Option<Result<()>> {
    while *sent < msgs.len() {
        match try_many(h, &msgs[*sent..]) {
            Ok(0) | Err(TrySendError::Full) => return None,
            Ok(k) => *sent += k,
            Err(e) => return Some(Err(e.into())),
        }
    }
    Some(Ok(()))
}

/// Registers `h` with the reactor, its fd in non-blocking mode; returns the
/// registration and whether the fd was non-blocking before.
fn register<H: sys::Registrable + AsFd>(h: H, interest: Interest) -> Result<(AsyncFd<H>, bool)> {
    let was = sys::set_nonblocking(h.as_fd(), true)?;
    Ok((sys::register(h, interest)?, was))
}

// ------------------------------------------------------------------ methods

/// Receive methods, generated for `AsyncConnection` and `AsyncReceiver`.
macro_rules! async_recv_methods {
    ($blocking:ident) => {
        /// Receives one message and decodes it with `postcard` as a `T`:
        /// the async form of [`Connection::recv`], with its errors.
        ///
        /// # Cancel safety
        /// Cancel-safe: dropped before it completes, it has taken no message;
        /// the bytes of a message that had partly arrived stay in the handle
        /// and the next receive continues it.
        ///
        /// # Errors
        /// As [`Connection::recv`].
        ///
        /// # Peer death
        /// Messages the peer finished sending are still delivered; then
        /// `Disconnected` (the reactor reports the hang-up, so this never
        /// waits on a dead peer). If it died in the middle of a message, that
        /// call returns `Disconnected` and the connection is poisoned.
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
            drive(&mut self.fd, false, |h| recv_step(h.try_recv::<T>())).await
        }

        /// [`recv`](Self::recv) waiting at most `timeout` (needs tokio's
        /// time driver).
        ///
        /// # Cancel safety
        /// As [`recv`](Self::recv).
        ///
        /// # Errors
        /// As [`Connection::recv_timeout`]: `Timeout` keeps a partly received
        /// message for the next receive.
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub async fn recv_timeout<T: DeserializeOwned>(
            &mut self,
            timeout: Duration,
        ) -> Result<T, RecvTimeoutError> {
            recv_timeout(&mut self.fd, timeout, |h| recv_step(h.try_recv::<T>())).await
        }

        /// Receives one message's bytes into a new `Vec`: the async form of
        /// [`Connection::recv_bytes`].
        ///
        /// # Cancel safety
        /// As [`recv`](Self::recv).
        ///
        /// # Errors
        /// As [`Connection::recv_bytes`].
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub async fn recv_bytes(&mut self) -> Result<Vec<u8>> {
            drive(&mut self.fd, false, |h| recv_step(h.try_recv_bytes())).await
        }

        /// [`recv_bytes`](Self::recv_bytes) waiting at most `timeout`.
        ///
        /// # Cancel safety
        /// As [`recv`](Self::recv).
        ///
        /// # Errors
        /// As [`Connection::recv_bytes_timeout`].
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub async fn recv_bytes_timeout(
            &mut self,
            timeout: Duration,
        ) -> Result<Vec<u8>, RecvTimeoutError> {
            recv_timeout(&mut self.fd, timeout, |h| recv_step(h.try_recv_bytes())).await
        }

        /// Receives one message's bytes into `buf`, replacing its contents,
        /// and returns the length: the async form of
        /// [`Connection::recv_bytes_into`] (no allocation for a steady
        /// stream).
        ///
        /// # Cancel safety
        /// As [`recv`](Self::recv); `buf` may then hold anything (the
        /// partly received message is kept in the handle, not in `buf`).
        ///
        /// # Errors
        /// As [`Connection::recv_bytes_into`].
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub async fn recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
            drive(&mut self.fd, false, |h| {
                recv_step(h.try_recv_bytes_into(buf))
            })
            .await
        }

        /// [`recv_bytes_into`](Self::recv_bytes_into) waiting at most
        /// `timeout`.
        ///
        /// # Cancel safety
        /// As [`recv_bytes_into`](Self::recv_bytes_into).
        ///
        /// # Errors
        /// As [`Connection::recv_bytes_into_timeout`].
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub async fn recv_bytes_into_timeout(
            &mut self,
            buf: &mut Vec<u8>,
            timeout: Duration,
        ) -> Result<usize, RecvTimeoutError> {
            recv_timeout(&mut self.fd, timeout, |h| {
                recv_step(h.try_recv_bytes_into(buf))
            })
            .await
        }
    };
}

/// Send methods, generated for `AsyncConnection` and `AsyncSender`.
macro_rules! async_send_methods {
    ($blocking:ident) => {
        /// Encodes `value` with `postcard` and sends it as one message: the
        /// async form of [`Connection::send`], with its errors. Returns once
        /// the whole frame is in the kernel.
        ///
        /// # Cancel safety
        /// Dropped before it completes, the message was either not sent at
        /// all, or accepted whole: a frame cut by a full buffer keeps its
        /// unwritten tail in the handle, written first by the next send or
        /// [`flush`](Self::flush) (and tried once on drop), so the stream is
        /// never left with half a frame. [`pending_bytes`](Self::pending_bytes)
        /// says whether a tail waits. To know for sure whether a message
        /// went, bound the send with [`send_timeout`](Self::send_timeout)
        /// instead of dropping it.
        ///
        /// # Errors
        /// As [`Connection::send`].
        ///
        /// # Peer death
        /// `Disconnected`, never `SIGPIPE` (as [`Connection::send_bytes`]).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub async fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            send(&mut self.fd, |h| send_step(h.try_send(value))).await
        }

        /// [`send`](Self::send) waiting at most `timeout` for room (needs
        /// tokio's time driver). `Ok` means accepted: in the kernel, or its
        /// tail kept in the handle if the time ran out inside it, as
        /// [`Connection::send_timeout`].
        ///
        /// # Cancel safety
        /// As [`send`](Self::send).
        ///
        /// # Errors
        /// As [`Connection::send_timeout`]: `Timeout` means nothing of the
        /// message was written.
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub async fn send_timeout<T: Serialize + ?Sized>(
            &mut self,
            value: &T,
            timeout: Duration,
        ) -> Result<(), SendTimeoutError> {
            send_timeout(&mut self.fd, timeout, |h| send_step(h.try_send(value))).await
        }

        /// Sends `bytes` as one message: the async form of
        /// [`Connection::send_bytes`].
        ///
        /// # Cancel safety
        /// As [`send`](Self::send).
        ///
        /// # Errors
        /// As [`Connection::send_bytes`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
            send(&mut self.fd, |h| send_step(h.try_send_bytes(bytes))).await
        }

        /// [`send_bytes`](Self::send_bytes) waiting at most `timeout` for
        /// room.
        ///
        /// # Cancel safety
        /// As [`send`](Self::send).
        ///
        /// # Errors
        /// As [`Connection::send_bytes_timeout`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn send_bytes_timeout(
            &mut self,
            bytes: &[u8],
            timeout: Duration,
        ) -> Result<(), SendTimeoutError> {
            send_timeout(&mut self.fd, timeout, |h| {
                send_step(h.try_send_bytes(bytes))
            })
            .await
        }

        /// Sends each of `msgs` as one message, in order, small ones
        /// gathered into few writes: the async form of
        /// [`Connection::send_bytes_many`].
        ///
        /// # Cancel safety
        /// The batch is not atomic: dropped before it completes, some
        /// leading messages may have been sent (whole, or the last with its
        /// tail kept as in [`send`](Self::send)), the rest not. Use
        /// [`send_bytes_many_timeout`](Self::send_bytes_many_timeout) to
        /// learn how many went.
        ///
        /// # Errors
        /// As [`Connection::send_bytes_many`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn send_bytes_many<B: AsRef<[u8]>>(&mut self, msgs: &[B]) -> Result<()> {
            let mut sent = 0;
            send(&mut self.fd, |h| {
                many_step(h, msgs, &mut sent, $blocking::try_send_bytes_many::<B>)
            })
            .await
        }

        /// [`send_bytes_many`](Self::send_bytes_many) waiting at most
        /// `timeout`; returns how many messages, from the first, were
        /// accepted (all, or fewer when the time ran out), as
        /// [`Connection::send_bytes_many_timeout`].
        ///
        /// # Cancel safety
        /// As [`send_bytes_many`](Self::send_bytes_many).
        ///
        /// # Errors
        /// As [`Connection::send_bytes_many_timeout`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn send_bytes_many_timeout<B: AsRef<[u8]>>(
            &mut self,
            msgs: &[B],
            timeout: Duration,
        ) -> Result<usize, SendTimeoutError> {
            let deadline = deadline_after(timeout);
            let mut sent = 0;
            let res = drive_until(&mut self.fd, true, deadline, |h| {
                many_step(h, msgs, &mut sent, $blocking::try_send_bytes_many::<B>)
            })
            .await;
            match res {
                None if sent == 0 => return Err(SendTimeoutError::Timeout),
                None => return Ok(sent),
                Some(Err(e)) if sent == 0 => return Err(SendTimeoutError::from_internal(e)),
                Some(Err(e)) => return Err(SendTimeoutError::from_internal(e)),
                Some(Ok(())) => {}
            }
            if let Some(r) = drive_until(&mut self.fd, true, deadline, flush_step).await {
                r.map_err(SendTimeoutError::from_internal)?;
            }
            Ok(sent)
        }

        /// Writes the unwritten tail of a message accepted earlier (see
        /// [`send`](Self::send)); does nothing when there is none: the
        /// async form of [`Connection::flush`].
        ///
        /// # Cancel safety
        /// Cancel-safe: what was not written stays pending.
        ///
        /// # Errors
        /// As [`Connection::flush`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn flush(&mut self) -> Result<()> {
            drive(&mut self.fd, true, flush_step).await
        }

        /// [`flush`](Self::flush) waiting at most `timeout`.
        ///
        /// # Cancel safety
        /// As [`flush`](Self::flush).
        ///
        /// # Errors
        /// As [`Connection::flush_timeout`].
        ///
        /// # Peer death
        /// As [`send`](Self::send).
        pub async fn flush_timeout(&mut self, timeout: Duration) -> Result<(), SendTimeoutError> {
            match drive_until(&mut self.fd, true, deadline_after(timeout), flush_step).await {
                Some(r) => r.map_err(SendTimeoutError::from_internal),
                None => Err(SendTimeoutError::Timeout),
            }
        }

        /// How many bytes of an accepted message are still waiting in this
        /// handle to be written (0 when everything accepted is in the
        /// kernel).
        pub fn pending_bytes(&self) -> usize {
            self.fd.get_ref().pending_bytes()
        }
    };
}

/// What the three async handles share: construction, conversion back,
/// access to the blocking handle, and fd traits.
macro_rules! async_handle {
    ($name:ident, $blocking:ident, $interest:expr) => {
        impl $name {
            /// Registers `handle` with the current tokio runtime's reactor,
            /// putting its fd in non-blocking mode (`O_NONBLOCK`, a flag of
            /// the open file description, so it also shows in duplicates of
            /// the fd; the blocking handles work either way).
            /// [`into_inner`](Self::into_inner) restores the flag.
            ///
            /// # Errors
            /// [`Error::Io`] if `fcntl` or the registration fails; the handle
            /// is closed then.
            ///
            /// # Panics
            /// Outside a tokio runtime with I/O enabled, as
            /// [`AsyncFd::new`].
            pub fn new(handle: $blocking) -> Result<$name> {
                let (mut fd, was_nonblocking) = register(handle, $interest)?;
                set_reader_nonblocking!($blocking, fd.get_mut(), true);
                Ok($name {
                    fd,
                    was_nonblocking,
                })
            }

            /// Takes the blocking handle back (the fd leaves the reactor and
            /// gets its blocking mode back), with everything it holds:
            /// bytes read ahead, a partly received message, an unwritten tail.
            pub fn into_inner(self) -> $blocking {
                let was = self.was_nonblocking;
                #[allow(unused_mut)]
                let mut h = self.fd.into_inner();
                set_reader_nonblocking!($blocking, &mut h, false);
                // Best effort: a failing fcntl leaves it non-blocking, which
                // the blocking handle copes with.
                let _ = sys::set_nonblocking(h.as_fd(), was);
                h
            }

            /// The blocking handle (its methods that take `&self`; use
            /// [`into_inner`](Self::into_inner) for the others).
            pub fn get_ref(&self) -> &$blocking {
                self.fd.get_ref()
            }

            /// Sets the largest message accepted, as the blocking handle's
            /// `set_max_message_size` (default 64 MiB).
            pub fn set_max_message_size(&mut self, max: usize) {
                self.fd.get_mut().set_max_message_size(max);
            }

            /// The current limit.
            pub fn max_message_size(&self) -> usize {
                self.fd.get_ref().max_message_size()
            }
        }

        impl TryFrom<$blocking> for $name {
            type Error = Error;

            /// As [`new`]($name::new).
            fn try_from(handle: $blocking) -> Result<$name> {
                $name::new(handle)
            }
        }

        impl From<$name> for $blocking {
            /// As [`into_inner`]($name::into_inner).
            fn from(h: $name) -> $blocking {
                h.into_inner()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.get_ref().as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.get_ref().as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("fd", &self.as_raw_fd())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Tells a handle with a reader that its fd is (or no longer is)
/// `O_NONBLOCK`; a `Sender` has no reader.
macro_rules! set_reader_nonblocking {
    (Sender, $h:expr, $on:expr) => {{
        let _ = ($h, $on);
    }};
    ($other:ident, $h:expr, $on:expr) => {
        $h.set_nonblocking_io($on)
    };
}

// ---------------------------------------------------------- AsyncConnection

/// A duplex [`Connection`] driven by tokio: the same framing, limits and
/// errors, with `async` sends and receives that wait on the reactor instead
/// of blocking the thread (feature `tokio`).
///
/// Made from a `Connection` ([`new`](Self::new), `TryFrom`), by
/// [`AsyncListener::accept`] or by [`Client::connect_async`]; turned back
/// with [`into_inner`](Self::into_inner). Every future is cancel-safe in the
/// sense of each method's "Cancel safety" section: a dropped receive loses no
/// message, a dropped send never leaves half a frame. Methods take
/// `&mut self`: one task sends and receives, or use two connections.
///
/// The `_timeout` forms need tokio's time driver (`Runtime` built with
/// `enable_time` or `enable_all`); `tokio::time::timeout` around the plain
/// forms works as well, by the same cancel safety.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_pipe::Result<()> {
/// use ipc_pipe::AsyncConnection;
/// let (a, b) = ipc_pipe::duplex()?;
/// let (mut a, mut b) = (AsyncConnection::new(a)?, AsyncConnection::new(b)?);
/// a.send(&("ping", 1u32)).await?;
/// let (word, n): (String, u32) = b.recv().await?;
/// assert_eq!((word.as_str(), n), ("ping", 1));
/// # Ok(())
/// # }
/// ```
pub struct AsyncConnection {
    fd: AsyncFd<Connection>,
    was_nonblocking: bool,
}

async_handle!(
    AsyncConnection,
    Connection,
    Interest::READABLE | Interest::WRITABLE
);

impl AsyncConnection {
    async_recv_methods!(Connection);
    async_send_methods!(Connection);

    /// Sends 1 to 253 file descriptors as one message: the async form of
    /// [`Connection::send_fds`]. The descriptors go with the message's
    /// first byte, so an accepted message always carries them.
    ///
    /// # Cancel safety
    /// As [`send`](Self::send).
    ///
    /// # Errors
    /// As [`Connection::send_fds`].
    ///
    /// # Peer death
    /// As [`send`](Self::send).
    pub async fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        send(&mut self.fd, |h| send_step(h.try_send_fds(fds))).await
    }

    /// [`send_fds`](Self::send_fds) waiting at most `timeout` for room.
    ///
    /// # Cancel safety
    /// As [`send`](Self::send).
    ///
    /// # Errors
    /// As [`Connection::send_fds_timeout`].
    ///
    /// # Peer death
    /// As [`send`](Self::send).
    pub async fn send_fds_timeout(
        &mut self,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        send_timeout(&mut self.fd, timeout, |h| send_step(h.try_send_fds(fds))).await
    }

    /// Receives the descriptors of a [`send_fds`](Self::send_fds) message:
    /// the async form of [`Connection::recv_fds`].
    ///
    /// # Cancel safety
    /// As [`recv`](Self::recv): descriptors that arrived are kept with the
    /// bytes they came with until their message is taken.
    ///
    /// # Errors
    /// As [`Connection::recv_fds`].
    ///
    /// # Peer death
    /// As [`recv`](Self::recv).
    pub async fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        drive(&mut self.fd, false, |h| recv_step(h.try_recv_fds())).await
    }

    /// [`recv_fds`](Self::recv_fds) waiting at most `timeout`.
    ///
    /// # Cancel safety
    /// As [`recv_fds`](Self::recv_fds).
    ///
    /// # Errors
    /// As [`Connection::recv_fds_timeout`].
    ///
    /// # Peer death
    /// As [`recv`](Self::recv).
    pub async fn recv_fds_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<OwnedFd>, RecvTimeoutError> {
        recv_timeout(&mut self.fd, timeout, |h| recv_step(h.try_recv_fds())).await
    }
}

// ----------------------------------------------------------- simplex halves

/// The read end of a [`simplex`](crate::simplex) pipe driven by tokio: the
/// receive methods of [`AsyncConnection`] (feature `tokio`).
pub struct AsyncReceiver {
    fd: AsyncFd<Receiver>,
    was_nonblocking: bool,
}

async_handle!(AsyncReceiver, Receiver, Interest::READABLE);

impl AsyncReceiver {
    async_recv_methods!(Receiver);
}

/// The write end of a [`simplex`](crate::simplex) pipe driven by tokio: the
/// send methods of [`AsyncConnection`] (feature `tokio`).
pub struct AsyncSender {
    fd: AsyncFd<Sender>,
    was_nonblocking: bool,
}

async_handle!(AsyncSender, Sender, Interest::WRITABLE);

impl AsyncSender {
    async_send_methods!(Sender);
}

// ------------------------------------------------------------ AsyncListener

/// A [`Listener`] driven by tokio: [`accept`](Self::accept) waits on the
/// reactor and yields [`AsyncConnection`]s (feature `tokio`).
///
/// A listener bound with a key runs the handshakes of its pending peers
/// side by side, each bounded by `AUTH_TIMEOUT`, with the same state
/// machine as the blocking [`Listener::accept`]; a peer that connects and
/// never answers delays nobody else. Handshakes under way live in the
/// `AsyncListener`, not in the `accept` future, so dropping that future
/// loses no peer (the next call goes on with them).
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipc_pipe::Result<()> {
/// use ipc_pipe::{AsyncListener, Client};
/// let path = std::env::temp_dir().join(format!("ipc-pipe-adoc-{}.sock", std::process::id()));
/// let mut listener = AsyncListener::bind(path.as_path())?;
/// let client = async {
///     let mut c = Client::connect_async(path.as_path()).await?;
///     c.send_bytes(b"hello").await
/// };
/// let (conn, sent) = tokio::join!(listener.accept(), client);
/// sent?;
/// assert_eq!(conn?.recv_bytes().await?, b"hello");
/// # Ok(())
/// # }
/// ```
pub struct AsyncListener {
    fd: AsyncFd<Listener>,
    /// The listener's key, when it authenticates its peers.
    #[cfg(feature = "auth")]
    key: Option<Vec<u8>>,
    #[cfg(feature = "auth")]
    pending: Vec<AsyncFd<Handshake>>,
    #[cfg(feature = "auth")]
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncListener {
    /// Registers `listener` (already non-blocking) with the current tokio
    /// runtime's reactor.
    ///
    /// # Errors
    /// [`Error::Io`] if the registration fails.
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled, as [`AsyncFd::new`].
    pub fn new(listener: Listener) -> Result<AsyncListener> {
        #[cfg(feature = "auth")]
        let key = listener.authkey().map(<[u8]>::to_vec);
        let fd = sys::register(listener, Interest::READABLE)?;
        Ok(AsyncListener {
            fd,
            #[cfg(feature = "auth")]
            key,
            #[cfg(feature = "auth")]
            pending: Vec::new(),
            #[cfg(feature = "auth")]
            timer: None,
        })
    }

    /// [`Listener::bind`], registered with the reactor.
    ///
    /// # Errors
    /// As [`Listener::bind`].
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn bind(address: impl Into<Address>) -> Result<AsyncListener> {
        AsyncListener::new(Listener::bind(address)?)
    }

    /// [`Listener::bind_with_authkey`], registered with the reactor.
    ///
    /// # Errors
    /// As [`Listener::bind_with_authkey`].
    ///
    /// # Panics
    /// As [`new`](Self::new).
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn bind_with_authkey(address: impl Into<Address>, authkey: &[u8]) -> Result<AsyncListener> {
        AsyncListener::new(Listener::bind_with_authkey(address, authkey)?)
    }

    /// The listener, for its address and blocking methods.
    pub fn get_ref(&self) -> &Listener {
        self.fd.get_ref()
    }

    /// The bound address (for TCP, with the port actually bound).
    pub fn address(&self) -> &Address {
        self.fd.get_ref().address()
    }

    /// Takes the listener back (it leaves the reactor). Handshakes under
    /// way are abandoned (their peers see the connection closed).
    pub fn into_inner(self) -> Listener {
        self.fd.into_inner()
    }

    /// Waits for the next peer, authenticates it if the listener has a key,
    /// and returns it as an [`AsyncConnection`]: the async form of
    /// [`Listener::accept`].
    ///
    /// # Cancel safety
    /// Cancel-safe: a peer is taken from the kernel's queue only in the poll
    /// that returns it, or into this listener's set of handshakes under way,
    /// which the next call continues.
    ///
    /// # Errors
    /// As [`Listener::accept`]; [`Error::Io`] if registering the new
    /// connection with the reactor fails.
    ///
    /// # Peer death
    /// As [`Listener::accept`]: a peer that dies during its handshake is
    /// `Disconnected` or `AuthenticationFailed` for that call; others are
    /// unaffected.
    pub async fn accept(&mut self) -> Result<AsyncConnection> {
        #[cfg(feature = "auth")]
        if self.key.is_some() {
            let conn = poll_fn(|cx| self.poll_accept_auth(cx)).await?;
            return AsyncConnection::new(conn);
        }
        let conn = drive(&mut self.fd, false, |l| l.accept_raw().transpose()).await?;
        AsyncConnection::new(conn)
    }

    /// [`accept`](Self::accept) waiting at most `timeout` (needs tokio's
    /// time driver): the async form of [`Listener::accept_timeout`].
    ///
    /// # Cancel safety
    /// As [`accept`](Self::accept); handshakes under way when the time runs
    /// out go on in the next call.
    ///
    /// # Errors
    /// As [`Listener::accept_timeout`].
    ///
    /// # Peer death
    /// As [`accept`](Self::accept).
    pub async fn accept_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<AsyncConnection, AcceptTimeoutError> {
        let res = match deadline_after(timeout) {
            None => self.accept().await,
            Some(d) => match tokio::time::timeout_at(d, self.accept()).await {
                Ok(r) => r,
                Err(_) => return Err(AcceptTimeoutError::Timeout),
            },
        };
        res.map_err(AcceptTimeoutError::from_internal)
    }

    /// One round of the authenticated accept: every pending handshake
    /// driven as far as its bytes allow, new peers taken while there is
    /// room, and a timer set for the first handshake deadline.
    #[cfg(feature = "auth")]
    fn poll_accept_auth(&mut self, cx: &mut Context<'_>) -> Poll<Result<Connection>> {
        let Some(key) = self.key.as_deref() else {
            return Poll::Ready(Err(Error::AuthenticationFailed));
        };
        loop {
            let now = std::time::Instant::now();
            let mut i = 0;
            while i < self.pending.len() {
                let progress = advance_handshake(&mut self.pending[i], cx, key);
                match progress {
                    Progress::Waiting if now < self.pending[i].get_ref().deadline => i += 1,
                    Progress::Waiting => {
                        drop(self.pending.swap_remove(i));
                        return Poll::Ready(Err(Error::AuthenticationFailed));
                    }
                    Progress::Done => {
                        let hs = self.pending.swap_remove(i).into_inner();
                        return Poll::Ready(Ok(hs.into_connection()));
                    }
                    Progress::Failed(e) => {
                        drop(self.pending.swap_remove(i));
                        return Poll::Ready(Err(e));
                    }
                }
            }
            let mut started = false;
            while self.pending.len() < MAX_PENDING_HANDSHAKES {
                let mut guard = match self.fd.poll_read_ready_mut(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(Ok(g)) => g,
                };
                match guard.get_inner().accept_raw() {
                    Ok(Some(conn)) => {
                        let hs = match Handshake::start(conn) {
                            Ok(hs) => hs,
                            Err(e) => return Poll::Ready(Err(e)),
                        };
                        match sys::register(hs, Interest::READABLE) {
                            Ok(fd) => self.pending.push(fd),
                            Err(e) => return Poll::Ready(Err(e.into())),
                        }
                        started = true;
                    }
                    Ok(None) => guard.clear_ready(),
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if started {
                continue;
            }
            let Some(first) = self.pending.iter().map(|h| h.get_ref().deadline).min() else {
                self.timer = None;
                return Poll::Pending;
            };
            let at = Instant::from_std(first);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A handshake's time is up: the next round fails it.
            if std::time::Instant::now() < first {
                // The timer rounds up to its tick; never spin before then.
                return Poll::Pending;
            }
        }
    }
}

/// Drives one pending handshake as far as its bytes allow, registering the
/// task's waker when it waits.
#[cfg(feature = "auth")]
fn advance_handshake(hs: &mut AsyncFd<Handshake>, cx: &mut Context<'_>, key: &[u8]) -> Progress {
    loop {
        let mut guard = match hs.poll_read_ready_mut(cx) {
            Poll::Pending => return Progress::Waiting,
            Poll::Ready(Err(e)) => return Progress::Failed(e.into()),
            Poll::Ready(Ok(g)) => g,
        };
        match guard.get_inner_mut().advance(key) {
            Progress::Waiting => guard.clear_ready(),
            p => return p,
        }
    }
}

impl AsFd for AsyncListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

impl fmt::Debug for AsyncListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncListener")
            .field("listener", self.fd.get_ref())
            .finish_non_exhaustive()
    }
}

// ------------------------------------------------------------------ Client

impl Client {
    /// [`Client::connect`] without blocking the thread: the connection is
    /// made through tokio's reactor and returned as an [`AsyncConnection`]
    /// (feature `tokio`).
    ///
    /// # Cancel safety
    /// Dropped before it completes, the half-made connection is closed.
    ///
    /// # Errors
    /// As [`Client::connect`].
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled.
    pub async fn connect_async(address: impl Into<Address>) -> Result<AsyncConnection> {
        let fd: OwnedFd = match address.into() {
            Address::Unix(p) => tokio::net::UnixStream::connect(p).await?.into_std()?.into(),
            Address::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                s.into_std()?.into()
            }
        };
        // As `Client::connect` makes it: `into_inner` then gives a blocking fd.
        sys::set_nonblocking(fd.as_fd(), false)?;
        AsyncConnection::new(Connection::from(fd))
    }

    /// [`Client::connect_with_authkey`] without blocking the thread: the
    /// same exchange (one state machine for both), driven by the reactor and
    /// bounded by `AUTH_TIMEOUT` (needs tokio's time driver).
    ///
    /// # Cancel safety
    /// As [`connect_async`](Self::connect_async).
    ///
    /// # Errors
    /// As [`Client::connect_with_authkey`].
    ///
    /// # Panics
    /// As [`connect_async`](Self::connect_async).
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub async fn connect_with_authkey_async(
        address: impl Into<Address>,
        authkey: &[u8],
    ) -> Result<AsyncConnection> {
        let mut conn = Client::connect_async(address).await?;
        let deadline = Instant::now() + AUTH_TIMEOUT;
        let mut hs = ClientHandshake::start(conn.fd.get_mut());
        let res = drive_until(&mut conn.fd, false, Some(deadline), |c| {
            match hs.advance(c, authkey) {
                Progress::Waiting => None,
                Progress::Done => Some(Ok(())),
                Progress::Failed(e) => Some(Err(e)),
            }
        })
        .await;
        hs.finish(conn.fd.get_mut());
        match res {
            Some(r) => r.map(|()| conn),
            None => Err(Error::Timeout),
        }
    }
}
