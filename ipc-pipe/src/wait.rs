//! [`wait`]: block until any of several connections, pidfds or other fds is
//! ready, like Python's `multiprocessing.connection.wait`.
//!
//! A [`Connection`](crate::Connection) reads ahead: one read may bring several
//! messages, and the ones it keeps are invisible to `poll(2)` on its fd. So that
//! `wait` still reports such a connection as ready, connections mark their fd
//! in a small process-wide lock-free bitmap (atomics only, so it stays valid in
//! a forked child) while they hold buffered input; `wait` consults it first.
//! The bitmap covers fds below 65536; a connection on a higher fd is reported
//! by `poll(2)` alone (its own [`poll`](crate::Connection::poll) is always exact).

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{sys, Result};

const TRACKED_FDS: usize = 1 << 16;
static BUFFERED: [AtomicU64; TRACKED_FDS / 64] = [const { AtomicU64::new(0) }; TRACKED_FDS / 64];

fn slot(fd: RawFd) -> Option<(&'static AtomicU64, u64)> {
    let i = usize::try_from(fd).ok()?;
    BUFFERED.get(i / 64).map(|w| (w, 1u64 << (i % 64)))
}

/// Records whether the connection on `fd` holds input that `poll(2)` cannot see.
/// Relaxed is enough: the flag is only meaningful to the thread that owns the
/// connection or to one that was handed it (which synchronises through the
/// hand-over itself).
pub(crate) fn set_buffered(fd: RawFd, on: bool) {
    if let Some((w, bit)) = slot(fd) {
        if on {
            w.fetch_or(bit, Ordering::Relaxed);
        } else {
            w.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

fn is_buffered(fd: RawFd) -> bool {
    slot(fd).is_some_and(|(w, bit)| w.load(Ordering::Relaxed) & bit != 0)
}

/// Waits until at least one of `objects` is ready to read, or `timeout` passes
/// (`None`: no limit), and returns the indices of all ready ones, in order.
/// An empty vector means the timeout passed.
///
/// Ready means a receive will not block for the first byte: a message (or part
/// of one) is waiting, the peer has closed (EOF), or the fd is in error. Works
/// with [`Connection`](crate::Connection), [`Receiver`](crate::Receiver),
/// [`Listener`](crate::Listener) (a client is waiting to be accepted), pidfds
/// (the process exited) and any other fd.
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) if `ppoll` fails (for example `EINVAL` with
/// more fds than `RLIMIT_NOFILE`).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use std::os::fd::AsFd;
/// let (mut a, b) = ipc_pipe::duplex()?;
/// let (mut c, d) = ipc_pipe::duplex()?;
/// c.send_bytes(b"to d")?;
/// let ready = ipc_pipe::wait(&[&b as &dyn AsFd, &d], Some(Duration::from_millis(10)))?;
/// assert_eq!(ready, vec![1]);
/// # drop(a);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub fn wait(objects: &[&dyn AsFd], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let buffered: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| is_buffered(o.as_fd().as_raw_fd()))
        .map(|(i, _)| i)
        .collect();
    let deadline = if buffered.is_empty() {
        timeout.and_then(|t| Instant::now().checked_add(t))
    } else {
        // Something is ready already: only collect whatever else is.
        Some(Instant::now())
    };
    // With no deadline representable (huge timeout), wait without one.
    let mut fds: Vec<libc::pollfd> = objects
        .iter()
        .map(|o| libc::pollfd {
            fd: o.as_fd().as_raw_fd(),
            events: sys::POLLIN,
            revents: 0,
        })
        .collect();
    sys::poll(&mut fds, deadline)?;
    Ok(fds
        .iter()
        .enumerate()
        .filter(|(i, p)| p.revents != 0 || buffered.binary_search(i).is_ok())
        .map(|(i, _)| i)
        .collect())
}
