//! [`Lock`]: a process-shared mutex over `ipc_shm::lowlevel::sync::RawLock` that reports a dead holder.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ipc_shm::lowlevel::sync::RawLock;

use crate::error::{Error, LockResult, LockTimeoutResult, Result, TryLockResult};
use crate::shm::{Shared, SharedState};

/// The shared state of a [`Lock`]: one `RawLock`.
#[repr(C)]
struct LockState {
    raw: RawLock,
}

#[allow(unsafe_code)]
// SAFETY: `RawLock` is `repr(C)` atomics only, valid for every bit pattern, all-zero = free
// and consistent; alignment 8.
unsafe impl SharedState for LockState {
    const KIND: &'static str = "ipc_sem::Lock";
    const VERSION: u32 = 1;
}

/// The guard over `raw` (also the guard an `OwnerDied` hands back).
pub(crate) fn guard(raw: &RawLock) -> LockGuard<'_> {
    LockGuard {
        raw,
        _not_send: PhantomData,
    }
}

/// [`guard`] for a lock taken cleanly; the fault point sits where the holder has the lock.
pub(crate) fn taken(raw: &RawLock) -> LockGuard<'_> {
    ipc_failpoints::failpoint!("sem.lock.held");
    guard(raw)
}

/// The three forms over a `RawLock` (shared with `Condition`).
pub(crate) fn lock_raw(raw: &RawLock) -> LockResult<LockGuard<'_>> {
    raw.lock()
        .map(|()| taken(raw))
        .map_err(|e| e.map(|()| guard(raw)))
}

pub(crate) fn try_lock_raw(raw: &RawLock) -> TryLockResult<LockGuard<'_>> {
    raw.try_lock()
        .map(|()| taken(raw))
        .map_err(|e| e.map(|()| guard(raw)))
}

pub(crate) fn lock_timeout_raw(
    raw: &RawLock,
    timeout: Duration,
) -> LockTimeoutResult<LockGuard<'_>> {
    raw.lock_timeout(timeout)
        .map(|()| taken(raw))
        .map_err(|e| e.map(|()| guard(raw)))
}

/// The async forms over a `RawLock` (shared with `Condition`).
#[cfg(feature = "async")]
pub(crate) async fn lock_raw_async(raw: &RawLock) -> LockResult<LockGuard<'_>> {
    raw.lock_async()
        .await
        .map(|()| taken(raw))
        .map_err(|e| e.map(|()| guard(raw)))
}

#[cfg(feature = "async")]
pub(crate) async fn lock_until_raw_async(
    raw: &RawLock,
    deadline: ipc_shm::lowlevel::sync::Deadline,
) -> LockTimeoutResult<LockGuard<'_>> {
    raw.lock_until_async(deadline)
        .await
        .map(|()| taken(raw))
        .map_err(|e| e.map(|()| guard(raw)))
}

/// Releases `raw` for the calling thread: `NotHeld` if it does not hold it.
pub(crate) fn release_raw(raw: &RawLock) -> Result<()> {
    raw.unlock().map_err(|_| Error::NotHeld)
}

/// A mutex shared between processes whose holder may die: Python's `multiprocessing.Lock`,
/// without its failure mode.
///
/// The lock word records the holder's thread id and start time in one compare-and-swap. If
/// the holder dies while holding it (killed, crashed, exited), the next locker takes the lock
/// over and gets `Err(LockError::OwnerDied(guard))`: it holds the lock and decides whether the
/// protected data is consistent. [`LockGuard::mark_consistent`] says it is; dropping the
/// guard without that poisons the lock, and every later locker gets
/// [`LockError::Poisoned`](crate::LockError::Poisoned). In Python the lock would stay held forever.
///
/// Uncontended `lock` + unlock are one compare-and-swap each; waiters read the word about once
/// a microsecond for a few microseconds (a holder that re-locks at once keeps the lock), then
/// sleep on the futex, and re-check the holder's liveness every 50 ms.
///
/// ```
/// use ipc_sem::{Lock, LockError};
///
/// let lock = Lock::new()?;
/// match lock.lock() {
///     Ok(_guard) => { /* exclusive across processes until the guard drops */ }
///     Err(LockError::OwnerDied(guard)) => {
///         // The previous holder died: repair the shared data, then
///         guard.mark_consistent();
///     }
///     Err(e) => return Err(e.into()),
/// }
/// assert!(!lock.is_locked());
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct Lock {
    shared: Shared<LockState>,
}

impl Lock {
    /// A free lock in an anonymous segment that processes forked afterwards share.
    ///
    /// # Errors
    /// `Shm` if the segment cannot be made.
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            shared: Shared::create(None, 0, 0, |_| {})?,
        })
    }

    /// A free lock in a new named segment (mode 0600, `O_EXCL`); this handle removes the name
    /// when dropped.
    ///
    /// # Errors
    /// `Shm(InvalidName)`, `Shm(AlreadyExists)`, `Shm(Io)`.
    pub fn create_named(name: &str) -> Result<Lock> {
        Ok(Lock {
            shared: Shared::create(Some(name), 0, 0, |_| {})?,
        })
    }

    /// Opens a lock made by [`Lock::create_named`].
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` if the name
    /// holds another kind of object.
    pub fn open_named(name: &str) -> Result<Lock> {
        Ok(Lock {
            shared: Shared::open(name, |_| Ok(0))?,
        })
    }

    pub(crate) fn raw(&self) -> &RawLock {
        &self.shared.state().raw
    }

    /// Takes the lock, waiting as long as it takes.
    ///
    /// # Errors
    /// - `OwnerDied(guard)`: the previous holder died holding it; the caller now holds it.
    ///   Call [`LockGuard::mark_consistent`] before dropping the guard, or the lock is
    ///   poisoned.
    /// - `Poisoned`: an earlier take-over was never marked consistent.
    /// - `Deadlock`: the calling thread already holds it.
    /// - `Corrupted`: the shared state holds a value no correct peer writes.
    ///
    /// # Peer death
    /// A holder that dies while the caller waits is noticed within about 50 ms (parked
    /// waiters re-check its liveness), and the caller gets `OwnerDied(guard)`.
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        lock_raw(self.raw())
    }

    /// Takes the lock if it is free now; never blocks.
    ///
    /// # Errors
    /// [`TryLockError`](crate::TryLockError): `WouldBlock` if a live holder has it (nothing
    /// changes), else the states of [`Lock::lock`]. A dead holder is taken over at once
    /// (`OwnerDied(guard)`).
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        try_lock_raw(self.raw())
    }

    /// Takes the lock, waiting at most `timeout` (an absolute monotonic deadline).
    ///
    /// # Errors
    /// [`LockTimeoutError`](crate::LockTimeoutError): `Timeout` if a live holder kept it
    /// that long, else the states of [`Lock::lock`].
    ///
    /// # Peer death
    /// As [`Lock::lock`].
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<LockGuard<'_>> {
        lock_timeout_raw(self.raw(), timeout)
    }

    /// [`Lock::lock`] as a future (feature `async`): takes the lock without blocking the
    /// thread. A waiting future is one registration with the process's futex waiter thread,
    /// so a thousand waiting tasks cost one thread.
    ///
    /// The guard is the blocking one, and is not `Send`: drop it before the task's next
    /// `.await` on a multi-threaded runtime (hold it across `.await`s only on a
    /// current-thread runtime or a `LocalSet`). A lock held by another task of the calling
    /// thread is waited for, not reported as `Deadlock`; a task that locks twice waits for
    /// ever, as with `tokio::sync::Mutex`.
    ///
    /// # Errors
    /// As [`Lock::lock`], except `Deadlock` (see above).
    ///
    /// # Peer death
    /// As [`Lock::lock`]: a holder that dies while the future waits is noticed within
    /// about 50 ms, and the future completes with `OwnerDied(guard)`.
    ///
    /// # Cancel safety
    /// Cancel-safe: the lock is taken in the poll that completes the future, so a future
    /// dropped before it completes holds nothing (`tokio::time::timeout` around it is fine);
    /// a wake-up that was meant for it is passed on.
    ///
    /// ```
    /// use ipc_sem::{Lock, LockError};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let lock = Lock::new()?;
    /// match lock.lock_async().await {
    ///     Ok(_guard) => { /* exclusive across processes until the guard drops */ }
    ///     Err(LockError::OwnerDied(guard)) => guard.mark_consistent(),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// assert!(!lock.is_locked());
    /// # Ok::<(), ipc_sem::Error>(())
    /// # }).unwrap();
    /// ```
    #[cfg(feature = "async")]
    pub async fn lock_async(&self) -> LockResult<LockGuard<'_>> {
        lock_raw_async(self.raw()).await
    }

    /// [`Lock::lock_timeout`] as a future (feature `async`).
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`], except `Deadlock` (see [`Lock::lock_async`]).
    ///
    /// # Peer death
    /// As [`Lock::lock_async`].
    ///
    /// # Cancel safety
    /// As [`Lock::lock_async`].
    #[cfg(feature = "async")]
    pub async fn lock_timeout_async(&self, timeout: Duration) -> LockTimeoutResult<LockGuard<'_>> {
        let deadline = ipc_shm::lowlevel::sync::Deadline::after(timeout);
        lock_until_raw_async(self.raw(), deadline).await
    }

    /// Releases a lock that the calling thread holds without a guard (after
    /// [`LockGuard::leak`]), like Python's `Lock.release()`.
    ///
    /// # Errors
    /// `NotHeld` if the calling thread does not hold the lock (nothing changes).
    pub fn release(&self) -> Result<()> {
        release_raw(self.raw())
    }

    /// Whether somebody holds the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// Whether the calling thread holds the lock.
    pub fn is_held_by_current_thread(&self) -> bool {
        self.raw().is_held_by_current_thread()
    }

    /// Whether the lock is poisoned: a holder died and nobody marked the data consistent.
    pub fn is_poisoned(&self) -> bool {
        self.raw().is_poisoned()
    }

    /// The segment's name, or `None` for an inherited lock.
    pub fn name(&self) -> Option<&str> {
        self.shared.name()
    }

    /// Removes the name now if this handle created it; open handles keep working.
    ///
    /// # Errors
    /// `Shm(Io)` if `shm_unlink` fails for a reason other than the name being gone.
    pub fn unlink(&mut self) -> Result<()> {
        self.shared.unlink()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name())
            .field("holder", &self.raw().holder())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

/// Holds a [`Lock`] (or a [`Condition`](crate::Condition)'s lock) across processes; unlocks
/// when dropped.
///
/// Not `Send`: the lock records the thread that holds it, and only that thread may unlock.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ipc_sem::LockGuard<'static>>();
/// ```
#[must_use = "dropping the guard unlocks at once"]
pub struct LockGuard<'a> {
    pub(crate) raw: &'a RawLock,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Declares the protected data consistent after an `OwnerDied` take-over, so that
    /// dropping the guard does not poison the lock. Harmless otherwise.
    pub fn mark_consistent(&self) {
        // The guard proves this thread holds the lock, so `NotHeld` cannot happen.
        let _ = self.raw.mark_consistent();
    }

    /// Keeps the lock held without a guard; release it later from this thread with
    /// [`Lock::release`].
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // The guard exists only while this thread holds the lock (it is not `Send`).
        let _ = self.raw.unlock();
    }
}

impl std::os::fd::AsFd for Lock {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the object with [`Lock::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

/// Handle passing: a lock travels to an unrelated process as a descriptor.
impl Lock {
    /// Rebuilds a lock from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Lock::open_named`] checks a name (`ipc_shm::lowlevel::Segment::from_fd`). The
    /// rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)` for a pipe, socket or other non-memory descriptor,
    /// `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another kind of object,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Lock> {
        Ok(Lock {
            shared: Shared::from_fd(fd, |_| Ok(0))?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the object lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.shared.into_fd()
    }
}
