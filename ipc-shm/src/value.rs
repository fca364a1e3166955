//! [`Value`]: one `T` in shared memory behind a process-shared lock.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{LockResult, LockTimeoutResult, Result, TryLockResult};
use crate::locked::{Held, LockedSlice};

const KIND: &str = "ipc_shm::Value";

/// One `T` shared between processes behind a lock that survives its holder's death: Python's
/// `multiprocessing.Value(typecode, lock=True)`.
///
/// Every access holds the lock. [`Value::update`] is the way to read-modify-write: there is
/// no `+=` that looks atomic and is not (Python's `v.value += 1` loses updates between
/// processes; `update(|v| *v += 1)` does not). For a lock-free counter use
/// [`crate::AtomicValue`].
///
/// If a process dies holding the lock, the next `get`/`set`/`update` returns
/// [`Error::OwnerDied`](crate::Error::OwnerDied) and the lock is poisoned; [`Value::lock`]
/// instead hands the guard back in [`LockError::OwnerDied`](crate::LockError::OwnerDied) so the caller can repair the value
/// and [`ValueGuard::mark_consistent`].
///
/// ```
/// use ipc_shm::Value;
///
/// let counter = Value::new(0u64)?;
/// // Shared with children forked from here on.
/// counter.update(|v| *v += 1)?;
/// *counter.lock().map_err(ipc_shm::Error::from)? += 1;
/// assert_eq!(counter.get()?, 2);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct Value<T: Pod> {
    inner: LockedSlice<T>,
}

impl<T: Pod> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> Value<T> {
    /// A value holding `init`, in an anonymous segment that children forked later share.
    ///
    /// # Errors
    /// `Io` if the segment cannot be made.
    pub fn new(init: T) -> Result<Value<T>> {
        Ok(Value {
            inner: LockedSlice::create(KIND, 1, None, Some(&[init]))?,
        })
    }

    /// A value holding `init` in a new named segment (0600, `O_EXCL`); this handle removes the
    /// name when dropped.
    ///
    /// # Errors
    /// `InvalidName`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, init: T) -> Result<Value<T>> {
        Ok(Value {
            inner: LockedSlice::create(KIND, 1, Some(name), Some(&[init]))?,
        })
    }

    /// Opens a named value made by [`Value::create_named`] with the same `T`.
    ///
    /// # Errors
    /// `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch` (another kind or element type).
    pub fn open_named(name: &str) -> Result<Value<T>> {
        Ok(Value {
            inner: LockedSlice::open(KIND, name, Some(1))?,
        })
    }

    /// A copy of the value.
    ///
    /// # Errors
    /// `OwnerDied` (the lock is then poisoned), `Poisoned`, `Deadlock`.
    pub fn get(&self) -> Result<T> {
        self.inner.with_locked(|s| s[0])
    }

    /// Replaces the value.
    ///
    /// # Errors
    /// As [`Value::get`].
    pub fn set(&self, value: T) -> Result<()> {
        self.inner.with_locked(|s| s[0] = value)
    }

    /// Runs `f` on the value with the lock held and returns what `f` returns.
    ///
    /// # Errors
    /// As [`Value::get`].
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        self.inner.with_locked(|s| f(&mut s[0]))
    }

    /// Locks the value, waiting as long as it takes, and returns a guard that dereferences to
    /// it. The guard releases the lock when dropped.
    ///
    /// # Errors
    /// `OwnerDied(guard)` when the previous holder died (the caller holds the lock);
    /// `Poisoned`; `Deadlock` if this thread holds it already.
    ///
    /// # Peer death
    /// A holder killed while the caller waits is noticed within about 50 ms.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.inner.lock().map(taken).map_err(|e| e.map(taken))
    }

    /// [`Value::lock`] without waiting: `WouldBlock` if a live holder has it.
    ///
    /// # Errors
    /// As [`Value::lock`], plus `WouldBlock`.
    pub fn try_lock(&self) -> TryLockResult<ValueGuard<'_, T>> {
        self.inner.try_lock().map(taken).map_err(|e| e.map(taken))
    }

    /// [`Value::lock`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Value::lock`], plus `Timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<ValueGuard<'_, T>> {
        self.inner
            .lock_timeout(timeout)
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// [`Value::lock`] as a future (feature `async`): waits without blocking the thread
    /// (one registration with the process's futex waiter thread). The guard is the blocking
    /// one and is not `Send`: drop it before the task's next `.await` on a multi-threaded
    /// runtime. A lock held by another task of the calling thread is waited for, not
    /// reported as `Deadlock`.
    ///
    /// # Errors
    /// As [`Value::lock`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Value::lock`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it completes, it holds nothing.
    #[cfg(feature = "async")]
    pub async fn lock_async(&self) -> LockResult<ValueGuard<'_, T>> {
        self.inner
            .lock_async()
            .await
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// [`Value::lock_timeout`] as a future (feature `async`).
    ///
    /// # Errors
    /// As [`Value::lock_timeout`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Value::lock`].
    ///
    /// # Cancel safety
    /// As [`Value::lock_async`].
    #[cfg(feature = "async")]
    pub async fn lock_timeout_async(
        &self,
        timeout: Duration,
    ) -> LockTimeoutResult<ValueGuard<'_, T>> {
        self.inner
            .lock_timeout_async(timeout)
            .await
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// The segment's name, or `None` for an inherited value.
    pub fn name(&self) -> Option<&str> {
        self.inner.segment().name()
    }

    /// Removes the name now (creator only).
    ///
    /// # Errors
    /// `Io` if `shm_unlink` fails.
    pub fn unlink(&mut self) -> Result<()> {
        self.inner.segment_mut().unlink()
    }
}

/// Wraps a held lock in the guard (also the guard of an `OwnerDied`).
fn guard<T: Pod>(held: Held<'_, T>) -> ValueGuard<'_, T> {
    ValueGuard { held }
}

/// [`guard`] for a lock taken cleanly; the fault point sits where the holder has the lock
/// and its guard is about to be handed out.
fn taken<T: Pod>(held: Held<'_, T>) -> ValueGuard<'_, T> {
    ipc_failpoints::failpoint!("shm.value.guard_held");
    guard(held)
}

/// Exclusive access to a [`Value`] across processes; unlocks on drop.
///
/// Not `Send`: the lock records the thread that holds it.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ipc_shm::ValueGuard<'static, u64>>();
/// ```
pub struct ValueGuard<'a, T: Pod> {
    held: Held<'a, T>,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// Declares the value consistent after an `OwnerDied` take-over, so that releasing the lock
    /// does not poison it.
    pub fn mark_consistent(&self) {
        self.held.mark_consistent();
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.held.as_slice()[0]
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.held.as_mut_slice()[0]
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Pod> std::os::fd::AsFd for Value<T> {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`), which
    /// rebuilds the value with [`Value::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.segment().as_fd()
    }
}

/// Handle passing: a value travels to an unrelated process as a descriptor.
impl<T: Pod> Value<T> {
    /// Rebuilds a value from a descriptor another process sent (with `SCM_RIGHTS`, e.g.
    /// `ipc_pipe`'s `send_fds`), checked exactly as [`Value::open_named`] checks a name: a
    /// memory file of this user, a READY header of a `Value` of this `T`, the right size.
    ///
    /// The rebuilt handle has no name and removes nothing when dropped; the memory lives as
    /// long as any process maps it or holds a descriptor to it.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use ipc_shm::{Error, Value};
    ///
    /// let counter = Value::new(41u64)?;
    /// // In a real program the other end of this connection is another process.
    /// let (mut here, mut there) = ipc_pipe::duplex()?;
    /// here.send_fds(&[counter.as_fd()])?;
    /// let fd = there.recv_fds()?.pop().expect("one descriptor");
    /// let same = Value::<u64>::from_fd(fd)?;
    /// same.update(|v| *v += 1)?;
    /// assert_eq!(counter.get()?, 42);
    ///
    /// // The header says what the descriptor holds: another element type is refused.
    /// let wrong = Value::<u32>::from_fd(counter.into_fd());
    /// assert!(matches!(wrong, Err(Error::LayoutMismatch { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `NotMemoryFile` (a pipe, a socket, ...), `NotOwner`, `NotReady`, `LayoutMismatch`
    /// (another kind of object, element type or size), `ForeignPidNamespace`, `Io`. The
    /// descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Value<T>> {
        Ok(Value {
            inner: LockedSlice::from_fd(KIND, fd, Some(1))?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now, as
    /// on drop; the value lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.into_fd()
    }
}
