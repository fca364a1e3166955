//! [`Array`]: `len` elements of `T` in shared memory behind one process-shared lock.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{Error, LockResult, LockTimeoutResult, Result, TryLockResult};
use crate::locked::{Held, LockedSlice};

const KIND: &str = "ipc_shm::Array";

/// A fixed-length array shared between processes behind one lock that survives its holder's
/// death: Python's `multiprocessing.Array(typecode, n, lock=True)`.
///
/// Element access (`get`, `set`, `to_vec`, `copy_from_slice`) takes the lock for each call;
/// [`Array::lock`] returns a guard that dereferences to `[T]` for zero-copy bulk work.
///
/// ```
/// use ipc_shm::Array;
///
/// let a = Array::<f64>::from_slice(&[1.0, 2.0, 3.0])?;
/// a.set(1, 20.0)?;
/// {
///     let mut all = a.lock().map_err(ipc_shm::Error::from)?;
///     all.iter_mut().for_each(|x| *x *= 2.0);
/// }
/// assert_eq!(a.to_vec()?, vec![2.0, 40.0, 6.0]);
/// assert!(a.get(3).is_err());
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct Array<T: Pod> {
    inner: LockedSlice<T>,
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Pod> Array<T> {
    /// `len` zeroed elements in an anonymous segment that children forked later share.
    ///
    /// # Errors
    /// `InvalidSize` for `len == 0` or an overflowing size; `Io`.
    pub fn new(len: usize) -> Result<Array<T>> {
        Self::check_len(len)?;
        Ok(Array {
            inner: LockedSlice::create(KIND, len, None, None)?,
        })
    }

    /// An inherited array holding a copy of `init`.
    ///
    /// # Errors
    /// As [`Array::new`].
    pub fn from_slice(init: &[T]) -> Result<Array<T>> {
        Self::check_len(init.len())?;
        Ok(Array {
            inner: LockedSlice::create(KIND, init.len(), None, Some(init))?,
        })
    }

    /// `len` zeroed elements in a new named segment (0600, `O_EXCL`), removed when this handle
    /// drops.
    ///
    /// # Errors
    /// `InvalidName`, `InvalidSize`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, len: usize) -> Result<Array<T>> {
        Self::check_len(len)?;
        Ok(Array {
            inner: LockedSlice::create(KIND, len, Some(name), None)?,
        })
    }

    /// A named array holding a copy of `init`.
    ///
    /// # Errors
    /// As [`Array::create_named`].
    pub fn create_named_from_slice(name: &str, init: &[T]) -> Result<Array<T>> {
        Self::check_len(init.len())?;
        Ok(Array {
            inner: LockedSlice::create(KIND, init.len(), Some(name), Some(init))?,
        })
    }

    /// Opens a named array of the same `T` (its length is read from the segment).
    ///
    /// # Errors
    /// `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch`.
    pub fn open_named(name: &str) -> Result<Array<T>> {
        Ok(Array {
            inner: LockedSlice::open(KIND, name, None)?,
        })
    }

    fn check_len(len: usize) -> Result<()> {
        if len == 0 {
            return Err(Error::InvalidSize(0, "an array needs at least one element"));
        }
        Ok(())
    }

    /// The number of elements (a private copy, never re-read from shared memory).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Always `false`: arrays have at least one element.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// A copy of element `index`.
    ///
    /// # Errors
    /// `IndexOutOfBounds`; `OwnerDied` (the lock is then poisoned); `Poisoned`; `Deadlock`.
    pub fn get(&self, index: usize) -> Result<T> {
        self.check_index(index)?;
        self.inner.with_locked(|s| s[index])
    }

    /// Replaces element `index`.
    ///
    /// # Errors
    /// As [`Array::get`].
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.check_index(index)?;
        self.inner.with_locked(|s| s[index] = value)
    }

    /// A copy of every element.
    ///
    /// # Errors
    /// `OwnerDied`, `Poisoned`, `Deadlock`.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        self.inner.with_locked(|s| s.to_vec())
    }

    /// Overwrites every element with `src`, which must have the same length.
    ///
    /// # Errors
    /// `LengthMismatch`; `OwnerDied`, `Poisoned`, `Deadlock`.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<()> {
        if src.len() != self.len() {
            return Err(Error::LengthMismatch {
                expected: self.len(),
                found: src.len(),
            });
        }
        self.inner.with_locked(|s| s.copy_from_slice(src))
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.len() {
            return Err(Error::IndexOutOfBounds {
                index,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// Locks the array and returns a guard that dereferences to all its elements.
    ///
    /// # Errors
    /// `OwnerDied(guard)` if the previous holder died (the caller holds the lock and may
    /// `mark_consistent`); `Poisoned`; `Deadlock`.
    ///
    /// # Peer death
    /// A holder killed while the caller waits is noticed within about 50 ms.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.inner.lock().map(taken).map_err(|e| e.map(taken))
    }

    /// [`Array::lock`] without waiting.
    ///
    /// # Errors
    /// As [`Array::lock`], plus `WouldBlock`.
    pub fn try_lock(&self) -> TryLockResult<ArrayGuard<'_, T>> {
        self.inner.try_lock().map(taken).map_err(|e| e.map(taken))
    }

    /// [`Array::lock`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Array::lock`], plus `Timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<ArrayGuard<'_, T>> {
        self.inner
            .lock_timeout(timeout)
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// [`Array::lock`] as a future (feature `async`): waits without blocking the thread
    /// (one registration with the process's futex waiter thread). The guard is the blocking
    /// one and is not `Send`: drop it before the task's next `.await` on a multi-threaded
    /// runtime. A lock held by another task of the calling thread is waited for, not
    /// reported as `Deadlock`.
    ///
    /// # Errors
    /// As [`Array::lock`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Array::lock`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it completes, it holds nothing.
    #[cfg(feature = "async")]
    pub async fn lock_async(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.inner
            .lock_async()
            .await
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// [`Array::lock_timeout`] as a future (feature `async`).
    ///
    /// # Errors
    /// As [`Array::lock_timeout`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Array::lock`].
    ///
    /// # Cancel safety
    /// As [`Array::lock_async`].
    #[cfg(feature = "async")]
    pub async fn lock_timeout_async(
        &self,
        timeout: Duration,
    ) -> LockTimeoutResult<ArrayGuard<'_, T>> {
        self.inner
            .lock_timeout_async(timeout)
            .await
            .map(taken)
            .map_err(|e| e.map(taken))
    }

    /// The segment's name, or `None` for an inherited array.
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
fn guard<T: Pod>(held: Held<'_, T>) -> ArrayGuard<'_, T> {
    ArrayGuard { held }
}

/// [`guard`] for a lock taken cleanly; the fault point sits where the holder has the lock
/// and its guard is about to be handed out.
fn taken<T: Pod>(held: Held<'_, T>) -> ArrayGuard<'_, T> {
    ipc_failpoints::failpoint!("shm.array.guard_held");
    guard(held)
}

/// Exclusive access to an [`Array`] across processes; dereferences to `[T]`; unlocks on drop.
///
/// Not `Send`: the lock records the thread that holds it.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ipc_shm::ArrayGuard<'static, u8>>();
/// ```
pub struct ArrayGuard<'a, T: Pod> {
    held: Held<'a, T>,
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// Declares the data consistent after an `OwnerDied` take-over.
    pub fn mark_consistent(&self) {
        self.held.mark_consistent();
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.held.as_slice()
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.held.as_mut_slice()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Pod> std::os::fd::AsFd for Array<T> {
    /// The segment's descriptor, to send to another process, which rebuilds the array with
    /// [`Array::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.segment().as_fd()
    }
}

/// Handle passing: an array travels to an unrelated process as a descriptor.
impl<T: Pod> Array<T> {
    /// Rebuilds an array from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Array::open_named`] checks a name; its length comes from the validated
    /// header. The rebuilt handle has no name and removes nothing when dropped. See
    /// [`Value::from_fd`](crate::Value::from_fd) for an example.
    ///
    /// # Errors
    /// `NotMemoryFile`, `NotOwner`, `NotReady`, `LayoutMismatch`, `ForeignPidNamespace`,
    /// `Io`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Array<T>> {
        let inner = LockedSlice::from_fd(KIND, fd, None)?;
        if inner.len() == 0 {
            // No creator makes an empty array.
            return Err(Error::LayoutMismatch {
                field: "capacity",
                expected: 1,
                found: 0,
            });
        }
        Ok(Array { inner })
    }

    /// Gives up this handle and returns its segment's descriptor, to send to another process.
    /// A name this handle created is removed now, as on drop.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.into_fd()
    }
}
