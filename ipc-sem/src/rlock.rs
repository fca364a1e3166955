//! [`RLock`]: a re-entrant process-shared lock, owned by one (process, thread) at a time.
//!
//! The protocol (`acquire`, `release`, `depth`) works on `&RLockState`, so the loom models
//! run it on the heap with threads standing in for processes.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ipc_shm::lowlevel::sync::{Deadline, RawLock};

use crate::error::{Error, LockError, LockResult, LockTimeoutResult, Result, TryLockResult};
use crate::loom::{AtomicU32, Ordering};
use crate::shm::{Shared, SharedState};

/// The shared state: the owner's `RawLock` and the recursion depth, which only the owner
/// writes.
#[repr(C)]
struct RLockState {
    raw: RawLock,
    depth: AtomicU32,
    _reserved: AtomicU32,
}

#[allow(unsafe_code)]
// SAFETY: `repr(C)` atomics only (`RawLock` included), valid for every bit pattern, all-zero
// = free with depth 0; alignment 8.
unsafe impl SharedState for RLockState {
    const KIND: &'static str = "ipc_sem::RLock";
    const VERSION: u32 = 1;
}

/// Takes the lock for the calling thread with `take` (one of `RawLock`'s three forms), or once
/// more if it owns it already. On `OwnerDied` the caller owns the lock with depth 1.
fn acquire<E: From<LockError<()>>>(
    s: &RLockState,
    take: impl FnOnce(&RawLock) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    if s.raw.is_held_by_current_thread() {
        // Only the owner writes `depth`, so a plain read-modify-write is race-free; the
        // value is untrusted, so overflow is reported, not wrapped.
        let d = s.depth.load(Ordering::Relaxed);
        let Some(next) = d.checked_add(1) else {
            return Err(E::from(LockError::Corrupted));
        };
        s.depth.store(next.max(2), Ordering::Relaxed);
        return Ok(());
    }
    let r = take(&s.raw);
    // Held now (cleanly or taken over from a dead owner): a fresh depth of one.
    if s.raw.is_held_by_current_thread() {
        s.depth.store(1, Ordering::Relaxed);
    }
    r
}

/// The async form of [`acquire`]: the re-entry check and the depth update happen in the
/// poll that completes the future, on the thread that then owns the lock.
#[cfg(feature = "async")]
async fn acquire_async<'a, E: From<LockError<()>>, F>(
    s: &'a RLockState,
    take: impl FnOnce(&'a RawLock) -> F,
) -> std::result::Result<(), E>
where
    F: std::future::Future<Output = std::result::Result<(), E>>,
{
    if s.raw.is_held_by_current_thread() {
        return acquire(s, |_| Ok(()));
    }
    let r = take(&s.raw).await;
    if s.raw.is_held_by_current_thread() {
        s.depth.store(1, Ordering::Relaxed);
    }
    r
}

/// Releases one level for the calling thread: `NotOwner` (and no change) unless it owns the
/// lock; frees it when the depth reaches zero.
fn release(s: &RLockState) -> Result<()> {
    if !s.raw.is_held_by_current_thread() {
        return Err(Error::NotOwner);
    }
    let d = s.depth.load(Ordering::Relaxed);
    if d > 1 {
        s.depth.store(d - 1, Ordering::Relaxed);
        return Ok(());
    }
    s.depth.store(0, Ordering::Relaxed);
    ipc_failpoints::failpoint!("sem.rlock.depth_set");
    s.raw.unlock().map_err(|_| Error::NotOwner)
}

/// How many times the calling thread holds the lock (0 if it does not own it).
fn depth(s: &RLockState) -> u32 {
    if s.raw.is_held_by_current_thread() {
        s.depth.load(Ordering::Relaxed).max(1)
    } else {
        0
    }
}

/// A re-entrant lock shared between processes: Python's `multiprocessing.RLock`.
///
/// The owner (one thread of one process) may lock it again without blocking; each lock needs
/// its own release, and the lock is free when the count returns to zero. A thread that does
/// not own it cannot release it ([`Error::NotOwner`]). Built on the same owner-stamped word as
/// [`Lock`](crate::Lock), so an owner that dies is detected: the next locker gets
/// `OwnerDied(guard)` with a recursion count of one.
///
/// ```
/// use ipc_sem::RLock;
///
/// let lock = RLock::new()?;
/// let outer = lock.lock().map_err(ipc_sem::Error::from)?;
/// let inner = lock.lock().map_err(ipc_sem::Error::from)?; // same thread: no deadlock
/// assert_eq!(lock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_locked());
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct RLock {
    shared: Shared<RLockState>,
}

impl RLock {
    /// A free re-entrant lock in an anonymous segment that processes forked afterwards share.
    ///
    /// # Errors
    /// `Shm` if the segment cannot be made.
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            shared: Shared::create(None, 0, 0, |_| {})?,
        })
    }

    /// A free re-entrant lock in a new named segment (mode 0600, `O_EXCL`); this handle
    /// removes the name when dropped.
    ///
    /// # Errors
    /// `Shm(InvalidName)`, `Shm(AlreadyExists)`, `Shm(Io)`.
    pub fn create_named(name: &str) -> Result<RLock> {
        Ok(RLock {
            shared: Shared::create(Some(name), 0, 0, |_| {})?,
        })
    }

    /// Opens a re-entrant lock made by [`RLock::create_named`].
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another
    /// kind of object.
    pub fn open_named(name: &str) -> Result<RLock> {
        Ok(RLock {
            shared: Shared::open(name, |_| Ok(0))?,
        })
    }

    fn state(&self) -> &RLockState {
        self.shared.state()
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock (or, for its owner, takes it once more), waiting as long as it takes.
    ///
    /// # Errors
    /// `OwnerDied(guard)` if the previous owner died holding it (the caller owns it now with
    /// depth 1; [`RLockGuard::mark_consistent`] or the lock is poisoned); `Poisoned`;
    /// `Corrupted` if the shared depth would overflow.
    ///
    /// # Peer death
    /// An owner that dies while the caller waits is noticed within about 50 ms.
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        acquire(self.state(), RawLock::lock)
            .map(|()| self.guard())
            .map_err(|e| e.map(|()| self.guard()))
    }

    /// [`RLock::lock`] without waiting.
    ///
    /// # Errors
    /// [`TryLockError`](crate::TryLockError): `WouldBlock` if another live thread owns it
    /// (nothing changes), else the states of [`RLock::lock`].
    pub fn try_lock(&self) -> TryLockResult<RLockGuard<'_>> {
        acquire(self.state(), RawLock::try_lock)
            .map(|()| self.guard())
            .map_err(|e| e.map(|()| self.guard()))
    }

    /// [`RLock::lock`] waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockTimeoutError`](crate::LockTimeoutError): `Timeout` if another live thread
    /// kept it that long, else the states of [`RLock::lock`].
    ///
    /// # Peer death
    /// As [`RLock::lock`].
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<RLockGuard<'_>> {
        let deadline = Deadline::after(timeout);
        acquire(self.state(), |raw| raw.lock_until(deadline))
            .map(|()| self.guard())
            .map_err(|e| e.map(|()| self.guard()))
    }

    /// [`RLock::lock`] as a future (feature `async`). Ownership is per thread, as in the
    /// blocking form: if the calling thread owns the lock (a guard held by another task of
    /// this thread), the future takes it once more at once.
    ///
    /// # Errors
    /// As [`RLock::lock`].
    ///
    /// # Peer death
    /// As [`RLock::lock`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it completes, it owns nothing (see [`Lock::lock_async`](crate::Lock::lock_async)).
    #[cfg(feature = "async")]
    pub async fn lock_async(&self) -> LockResult<RLockGuard<'_>> {
        acquire_async(self.state(), |raw| raw.lock_async())
            .await
            .map(|()| self.guard())
            .map_err(|e| e.map(|()| self.guard()))
    }

    /// [`RLock::lock_timeout`] as a future (feature `async`).
    ///
    /// # Errors
    /// As [`RLock::lock_timeout`].
    ///
    /// # Peer death
    /// As [`RLock::lock`].
    ///
    /// # Cancel safety
    /// As [`RLock::lock_async`].
    #[cfg(feature = "async")]
    pub async fn lock_timeout_async(&self, timeout: Duration) -> LockTimeoutResult<RLockGuard<'_>> {
        let deadline = Deadline::after(timeout);
        acquire_async(self.state(), |raw| raw.lock_until_async(deadline))
            .await
            .map(|()| self.guard())
            .map_err(|e| e.map(|()| self.guard()))
    }

    /// Releases one level of ownership held without a guard (after [`RLockGuard::leak`]),
    /// like Python's `RLock.release()`; the lock is free when the depth reaches zero.
    ///
    /// # Errors
    /// `NotOwner` if the calling thread does not own the lock (nothing changes).
    pub fn release(&self) -> Result<()> {
        release(self.state())
    }

    /// Whether somebody owns the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.state().raw.is_locked()
    }

    /// Whether the calling thread owns the lock.
    pub fn is_owned_by_current_thread(&self) -> bool {
        self.state().raw.is_held_by_current_thread()
    }

    /// How many times the calling thread holds the lock (0 if it does not own it).
    pub fn depth(&self) -> u32 {
        depth(self.state())
    }

    /// Whether the lock is poisoned: an owner died and nobody marked the data consistent.
    pub fn is_poisoned(&self) -> bool {
        self.state().raw.is_poisoned()
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

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("name", &self.name())
            .field("owner", &self.state().raw.holder())
            .finish()
    }
}

/// One level of ownership of an [`RLock`]; released when dropped. Not `Send`.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ipc_sem::RLockGuard<'static>>();
/// ```
#[must_use = "dropping the guard releases one level at once"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Declares the protected data consistent after an `OwnerDied` take-over.
    pub fn mark_consistent(&self) {
        let _ = self.lock.state().raw.mark_consistent();
    }

    /// Keeps this level held without a guard; release it later with [`RLock::release`].
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release();
    }
}

#[cfg(all(test, loom))]
#[allow(unsafe_code)] // loom's `UnsafeCell` checks that the lock orders the data it guards
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// The lock's state on the heap, and data it guards.
    struct Model {
        s: RLockState,
        value: UnsafeCell<u32>,
    }

    // SAFETY: `value` is touched only by the thread that owns the lock (the property under
    // test; loom reports a data race otherwise).
    unsafe impl Sync for Model {}

    fn model() -> Arc<Model> {
        Arc::new(Model {
            s: RLockState {
                raw: RawLock::new(),
                depth: AtomicU32::new(0),
                _reserved: AtomicU32::new(0),
            },
            value: UnsafeCell::new(0),
        })
    }

    /// Adds one to the guarded value; the caller owns the lock.
    fn bump(m: &Model) {
        // SAFETY: the calling thread owns the lock, so no other thread touches `value`.
        m.value.with_mut(|v| unsafe { *v += 1 });
    }

    /// Two owners in turn, each taking the lock twice: each sees only its own depth (1, 2,
    /// 1, 0), the first release of two keeps the lock held, the data is never touched by
    /// both, and a blocked owner is woken by the other's last release (a lost wake-up
    /// deadlocks the model).
    #[test]
    fn loom_rlock_reentrant_depth_and_mutual_exclusion() {
        loom::model(|| {
            let m = model();
            let owners: Vec<_> = (0..2)
                .map(|_| {
                    let m = Arc::clone(&m);
                    loom::thread::spawn(move || {
                        assert_eq!(depth(&m.s), 0);
                        acquire(&m.s, RawLock::lock).unwrap();
                        assert_eq!(depth(&m.s), 1);
                        bump(&m);
                        acquire(&m.s, RawLock::lock).unwrap();
                        assert_eq!(depth(&m.s), 2);
                        bump(&m);
                        release(&m.s).unwrap();
                        assert_eq!(depth(&m.s), 1);
                        assert!(m.s.raw.is_held_by_current_thread());
                        bump(&m);
                        release(&m.s).unwrap();
                        assert_eq!(depth(&m.s), 0);
                    })
                })
                .collect();
            for t in owners {
                t.join().unwrap();
            }
            assert!(!m.s.raw.is_locked());
            acquire(&m.s, RawLock::try_lock).unwrap();
            // SAFETY: the lock is held and the other threads are done.
            assert_eq!(m.value.with(|v| unsafe { *v }), 6);
            release(&m.s).unwrap();
        });
    }

    /// A thread that does not own the lock cannot release it (`NotOwner`, nothing changes),
    /// whenever it tries, while the owner goes through depths 2, 1, 0; its `try_lock` either
    /// finds the lock taken or gets it free.
    #[test]
    fn loom_rlock_release_by_non_owner_is_an_error() {
        loom::model(|| {
            let m = model();
            let owner = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    acquire(&m.s, RawLock::lock).unwrap();
                    acquire(&m.s, RawLock::lock).unwrap();
                    bump(&m);
                    release(&m.s).unwrap();
                    assert_eq!(depth(&m.s), 1);
                    release(&m.s).unwrap();
                    assert_eq!(depth(&m.s), 0);
                })
            };
            let intruder = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    assert!(matches!(release(&m.s), Err(Error::NotOwner)));
                    assert_eq!(depth(&m.s), 0);
                    match acquire(&m.s, RawLock::try_lock) {
                        Ok(()) => {
                            assert_eq!(depth(&m.s), 1);
                            bump(&m);
                            release(&m.s).unwrap();
                        }
                        Err(ipc_shm::TryLockError::WouldBlock) => {
                            assert!(matches!(release(&m.s), Err(Error::NotOwner)));
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                })
            };
            owner.join().unwrap();
            intruder.join().unwrap();
            assert!(!m.s.raw.is_locked());
            assert!(matches!(release(&m.s), Err(Error::NotOwner)));
        });
    }

    /// An owner is killed holding the lock. Exactly one later locker takes it over with
    /// `OwnerDied` at depth 1, one release frees it, and a waiter does not sleep for ever (the
    /// dead owner's model thread keeps waking sleepers, as their periodic liveness checks
    /// would).
    ///
    /// The victim holds depth 1, not 2: the model's death (`ipc_shm::lowlevel::sync::die`) does not
    /// publish the dead thread's writes to the thread that takes over (a real death does,
    /// through the kernel), so a dead owner's Relaxed `depth = 2` could be read after the
    /// new owner's `depth = 1` and the model would report that, not a fault of the protocol.
    #[test]
    fn loom_rlock_take_over_from_a_dead_owner() {
        loom::model(|| {
            let m = model();
            let done = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let victim = {
                let m = Arc::clone(&m);
                let done = Arc::clone(&done);
                loom::thread::spawn(move || {
                    acquire(&m.s, RawLock::lock).unwrap();
                    // No write to `value` either (see above).
                    ipc_shm::lowlevel::sync::die();
                    // The futex model wakes every sleeper whatever the word.
                    let any = crate::loom::AtomicU64::new(0);
                    while !done.load(Ordering::SeqCst) {
                        ipc_shm::lowlevel::sync::wake_low_half(&any, u32::MAX);
                        loom::thread::yield_now();
                    }
                })
            };
            let take = |m: &Model| match acquire(&m.s, RawLock::lock) {
                Ok(()) => false,
                Err(LockError::OwnerDied(())) => {
                    assert_eq!(depth(&m.s), 1);
                    m.s.raw.mark_consistent().unwrap();
                    true
                }
                Err(e) => panic!("{e:?}"),
            };
            let first = take(&m);
            bump(&m);
            release(&m.s).unwrap();
            assert_eq!(depth(&m.s), 0);
            done.store(true, Ordering::SeqCst);
            victim.join().unwrap();
            let second = take(&m);
            assert!(first ^ second, "exactly one take-over");
            assert_eq!(depth(&m.s), 1);
            // SAFETY: the lock is held and the other thread is done.
            assert_eq!(m.value.with(|v| unsafe { *v }), 1);
            release(&m.s).unwrap();
            assert!(!m.s.raw.is_locked());
        });
    }
}

impl std::os::fd::AsFd for RLock {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the object with [`RLock::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

/// Handle passing: a re-entrant lock travels to an unrelated process as a descriptor.
impl RLock {
    /// Rebuilds a re-entrant lock from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`RLock::open_named`] checks a name (`ipc_shm::lowlevel::Segment::from_fd`). The
    /// rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)` for a pipe, socket or other non-memory descriptor,
    /// `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another kind of object,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<RLock> {
        Ok(RLock {
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
