//! [`Semaphore`] and [`BoundedSemaphore`]: counting semaphores on a shared futex word, both
//! thin handles over the protocol in `sem_core`.

use std::fmt;
use std::time::Duration;

use ipc_shm::lowlevel::sync::Deadline;

use crate::error::{AcquireTimeoutError, Error, Result, TryAcquireError};
use crate::loom::AtomicU64;
use crate::sem_core;
use crate::shm::{Shared, SharedState};

/// The largest value a semaphore holds: `SEM_VALUE_MAX` of Linux (`i32::MAX`), the same as
/// [`PosixSemaphore`](crate::PosixSemaphore), so the types are interchangeable.
pub const MAX_VALUE: u32 = i32::MAX as u32;

/// The shared state of both kinds: the value (low half) and sleeper count (high half).
#[repr(C)]
pub(crate) struct SemState<const BOUNDED: bool> {
    word: AtomicU64,
}

#[allow(unsafe_code)]
// SAFETY: one `AtomicU64`: `repr(C)`, valid for every bit pattern, all-zero = value 0 and no
// sleepers; alignment 8.
unsafe impl SharedState for SemState<false> {
    const KIND: &'static str = "ipc_sem::Semaphore";
    const VERSION: u32 = 1;
}

#[allow(unsafe_code)]
// SAFETY: as above.
unsafe impl SharedState for SemState<true> {
    const KIND: &'static str = "ipc_sem::BoundedSemaphore";
    const VERSION: u32 = 1;
}

/// The handle shared by both kinds: the segment and a private copy of the maximum value.
struct Inner<const BOUNDED: bool>
where
    SemState<BOUNDED>: SharedState,
{
    shared: Shared<SemState<BOUNDED>>,
    max: u32,
}

impl<const BOUNDED: bool> Inner<BOUNDED>
where
    SemState<BOUNDED>: SharedState,
{
    fn create(name: Option<&str>, value: u32, max: u32) -> Result<Self> {
        if value > max {
            return Err(Error::InvalidArgument(
                "initial value above the semaphore's maximum",
            ));
        }
        let capacity = if BOUNDED { u64::from(max) } else { 0 };
        let shared = Shared::create(name, capacity, 0, |s: &SemState<BOUNDED>| {
            s.word
                .store(sem_core::initial(value), crate::loom::Ordering::Relaxed);
        })?;
        Ok(Inner { shared, max })
    }

    fn open(name: &str) -> Result<Self> {
        let shared = Shared::<SemState<BOUNDED>>::open(name, |cap| {
            if (BOUNDED && cap <= u64::from(MAX_VALUE)) || (!BOUNDED && cap == 0) {
                Ok(0)
            } else {
                Err(Error::Corrupted("semaphore bound in the header"))
            }
        })?;
        let max = if BOUNDED {
            u32::try_from(shared.capacity()).map_err(|_| Error::Corrupted("semaphore bound"))?
        } else {
            MAX_VALUE
        };
        Ok(Inner { shared, max })
    }

    #[inline]
    fn word(&self) -> &AtomicU64 {
        &self.shared.state().word
    }

    #[inline]
    fn release(&self, n: u32) -> Result<()> {
        sem_core::release(self.word(), n, self.max).map_err(|sem_core::Exceeded| {
            if BOUNDED {
                Error::ReleasedTooManyTimes
            } else {
                Error::Overflow { max: self.max }
            }
        })
    }

    fn guard(&self) -> SemaphoreGuard<'_> {
        SemaphoreGuard {
            word: self.word(),
            max: self.max,
        }
    }

    fn fmt(&self, f: &mut fmt::Formatter<'_>, ty: &str) -> fmt::Result {
        f.debug_struct(ty)
            .field("name", &self.shared.name())
            .field("value", &sem_core::value(self.word()))
            .field("max", &self.max)
            .finish()
    }
}

/// Generates the methods both kinds share, so the docs of each stand alone.
macro_rules! common_methods {
    ($ty:ident) => {
        /// Takes one unit, waiting as long as it takes.
        ///
        /// The uncontended case is one compare-and-swap and no system call; a waiter spins
        /// briefly, then sleeps on the futex until a release.
        ///
        /// # Peer death
        /// A semaphore has no owner: a process that dies holding units never gives them
        /// back, and a waiter that counts on them waits forever. Use
        #[doc = concat!("[`", stringify!($ty), "::acquire_timeout`]")]
        /// when peers may die. A unit already released is never stranded: if its releaser
        /// is killed before its wake-up, or the sleeper it woke is killed before taking it,
        /// sleepers find it at their next re-check (every 50 ms).
        ///
        /// # Errors
        /// None today: the futex protocol has no failure a caller could act on. The
        /// `Result` makes the three forms, and this type and
        /// [`PosixSemaphore`](crate::PosixSemaphore), interchangeable.
        #[inline]
        pub fn acquire(&self) -> Result<()> {
            sem_core::acquire(self.inner.word(), Deadline::never());
            Ok(())
        }

        /// Takes one unit if one is available now; never sleeps, and changes nothing when
        /// none is.
        ///
        /// # Errors
        /// [`TryAcquireError::WouldBlock`] if the value is 0.
        #[inline]
        pub fn try_acquire(&self) -> std::result::Result<(), TryAcquireError> {
            if sem_core::try_acquire(self.inner.word()) {
                Ok(())
            } else {
                Err(TryAcquireError::WouldBlock)
            }
        }

        /// Takes one unit, waiting at most `timeout`.
        ///
        /// The deadline is absolute on `CLOCK_MONOTONIC`, computed once: wake-ups by signals
        /// or by a unit another waiter took first re-wait on the same deadline.
        ///
        /// # Errors
        /// [`AcquireTimeoutError::Timeout`] if no unit came in time.
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`]; the timeout bounds the wait.")]
        pub fn acquire_timeout(
            &self,
            timeout: Duration,
        ) -> std::result::Result<(), AcquireTimeoutError> {
            if sem_core::acquire(self.inner.word(), Deadline::after(timeout)) {
                Ok(())
            } else {
                Err(AcquireTimeoutError::Timeout)
            }
        }

        /// Takes one unit and returns a guard that releases it when dropped.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`].")]
        pub fn guard(&self) -> Result<SemaphoreGuard<'_>> {
            self.acquire()?;
            Ok(self.inner.guard())
        }

        /// A guard for one unit if one is available now; never sleeps.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::try_acquire`].")]
        pub fn try_guard(&self) -> std::result::Result<SemaphoreGuard<'_>, TryAcquireError> {
            self.try_acquire()?;
            Ok(self.inner.guard())
        }

        /// A guard for one unit, waiting at most `timeout`.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire_timeout`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`]; the timeout bounds the wait.")]
        pub fn guard_timeout(
            &self,
            timeout: Duration,
        ) -> std::result::Result<SemaphoreGuard<'_>, AcquireTimeoutError> {
            self.acquire_timeout(timeout)?;
            Ok(self.inner.guard())
        }

        /// [`Self::acquire`] as a future (feature `async`): takes one unit without blocking
        /// the thread. A waiting future is one registration with the process's futex waiter
        /// thread, so a thousand waiting tasks cost one thread.
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`]; wrap it in a timeout (`tokio::time::timeout`, or [`", stringify!($ty), "::acquire_timeout_async`]) when peers may die.")]
        ///
        /// # Cancel safety
        /// Cancel-safe: dropped before it completes, it has taken no unit and is no longer
        /// counted as a sleeper; a wake-up that was meant for it is passed on.
        ///
        /// ```
        #[doc = concat!("use ipc_sem::", stringify!($ty), ";")]
        ///
        /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        #[doc = concat!("let sem = ", stringify!($ty), "::new(1)?;")]
        /// sem.acquire_async().await?;
        /// assert_eq!(sem.value(), 0);
        /// sem.release()?;
        /// {
        ///     let _unit = sem.guard_async().await?;
        ///     assert_eq!(sem.value(), 0);
        /// }
        /// assert_eq!(sem.value(), 1);
        /// # Ok::<(), ipc_sem::Error>(())
        /// # }).unwrap();
        /// ```
        #[cfg(feature = "async")]
        pub async fn acquire_async(&self) -> Result<()> {
            sem_core::acquire_async(self.inner.word(), Deadline::never()).await;
            Ok(())
        }

        /// [`Self::acquire_timeout`] as a future (feature `async`).
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire_timeout`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`]; the timeout bounds the wait.")]
        ///
        /// # Cancel safety
        #[doc = concat!("As [`", stringify!($ty), "::acquire_async`].")]
        #[cfg(feature = "async")]
        pub async fn acquire_timeout_async(
            &self,
            timeout: Duration,
        ) -> std::result::Result<(), AcquireTimeoutError> {
            if sem_core::acquire_async(self.inner.word(), Deadline::after(timeout)).await {
                Ok(())
            } else {
                Err(AcquireTimeoutError::Timeout)
            }
        }

        /// [`Self::guard`] as a future (feature `async`).
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`].")]
        ///
        /// # Cancel safety
        #[doc = concat!("As [`", stringify!($ty), "::acquire_async`].")]
        #[cfg(feature = "async")]
        pub async fn guard_async(&self) -> Result<SemaphoreGuard<'_>> {
            self.acquire_async().await?;
            Ok(self.inner.guard())
        }

        /// [`Self::guard_timeout`] as a future (feature `async`).
        ///
        /// # Errors
        #[doc = concat!("As [`", stringify!($ty), "::acquire_timeout`].")]
        ///
        /// # Peer death
        #[doc = concat!("As [`", stringify!($ty), "::acquire`]; the timeout bounds the wait.")]
        ///
        /// # Cancel safety
        #[doc = concat!("As [`", stringify!($ty), "::acquire_async`].")]
        #[cfg(feature = "async")]
        pub async fn guard_timeout_async(
            &self,
            timeout: Duration,
        ) -> std::result::Result<SemaphoreGuard<'_>, AcquireTimeoutError> {
            self.acquire_timeout_async(timeout).await?;
            Ok(self.inner.guard())
        }

        /// The current value (a snapshot; other processes may change it at any time).
        pub fn value(&self) -> u32 {
            sem_core::value(self.inner.word())
        }

        /// The segment's name, or `None` for an inherited semaphore.
        pub fn name(&self) -> Option<&str> {
            self.inner.shared.name()
        }

        /// Removes the name now if this handle created it; open handles keep working.
        ///
        /// # Errors
        /// `Shm(Io)` if `shm_unlink` fails for a reason other than the name being gone.
        pub fn unlink(&mut self) -> Result<()> {
            self.inner.shared.unlink()
        }
    };
}

/// A counting semaphore shared between processes: Python's `multiprocessing.Semaphore`.
///
/// The value and the number of sleepers share one 64-bit word in shared memory, so
/// `acquire` and `release` are one compare-and-swap each when nobody waits, and `release`
/// makes a `FUTEX_WAKE` system call only when the same word says someone sleeps. Waits use
/// absolute `CLOCK_MONOTONIC` deadlines.
///
/// Shared by inheritance ([`Semaphore::new`], then `fork`) or by name
/// ([`Semaphore::create_named`] / [`Semaphore::open_named`]).
///
/// ```
/// use ipc_sem::{AcquireTimeoutError, Semaphore, TryAcquireError};
/// use std::time::Duration;
///
/// let sem = Semaphore::new(1)?;
/// sem.acquire()?;
/// assert!(matches!(sem.try_acquire(), Err(TryAcquireError::WouldBlock)));
/// assert!(matches!(
///     sem.acquire_timeout(Duration::from_millis(10)),
///     Err(AcquireTimeoutError::Timeout)
/// ));
/// sem.release()?;
/// {
///     let _unit = sem.guard()?; // released at the end of the scope
///     assert_eq!(sem.value(), 0);
/// }
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct Semaphore {
    inner: Inner<false>,
}

impl Semaphore {
    /// The largest value a semaphore holds (`SEM_VALUE_MAX`, `i32::MAX`).
    pub const MAX_VALUE: u32 = MAX_VALUE;

    /// A semaphore holding `value`, in an anonymous segment that processes forked afterwards
    /// share.
    ///
    /// # Errors
    /// `InvalidArgument` if `value` exceeds [`Semaphore::MAX_VALUE`]; `Shm` if the segment
    /// cannot be made.
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            inner: Inner::create(None, value, MAX_VALUE)?,
        })
    }

    /// A semaphore holding `value` in a new named segment (mode 0600, `O_EXCL`); this handle
    /// removes the name when dropped.
    ///
    /// # Errors
    /// As [`Semaphore::new`], plus `Shm(InvalidName)` and `Shm(AlreadyExists)`.
    pub fn create_named(name: &str, value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            inner: Inner::create(Some(name), value, MAX_VALUE)?,
        })
    }

    /// Opens a semaphore made by [`Semaphore::create_named`].
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, and `Shm(LayoutMismatch)` if the
    /// name holds another kind of object (a `BoundedSemaphore`, a `Lock`, ...).
    pub fn open_named(name: &str) -> Result<Semaphore> {
        Ok(Semaphore {
            inner: Inner::open(name)?,
        })
    }

    /// Adds one unit, waking one sleeper if there is one.
    ///
    /// # Errors
    /// `Overflow` if the value is already [`Semaphore::MAX_VALUE`] (nothing changes).
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.inner.release(1)
    }

    /// Adds `n` units at once (all or nothing), waking up to `n` sleepers.
    ///
    /// # Errors
    /// `Overflow` if the value would exceed [`Semaphore::MAX_VALUE`] (nothing changes).
    pub fn release_n(&self, n: u32) -> Result<()> {
        self.inner.release(n)
    }

    common_methods!(Semaphore);
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f, "Semaphore")
    }
}

/// A semaphore that refuses to be released past its initial value: Python's
/// `multiprocessing.BoundedSemaphore`, with the check done atomically.
///
/// Python checks the bound and then releases, two steps another process can slip between;
/// here the bound is enforced in the same compare-and-swap that adds the unit, so two racing
/// over-releases cannot both pass. The bound is kept in the segment's validated header, and
/// every handle uses its own copy of it.
///
/// ```
/// use ipc_sem::{BoundedSemaphore, Error};
///
/// let sem = BoundedSemaphore::new(2)?;
/// sem.acquire();
/// sem.release()?;
/// assert!(matches!(sem.release(), Err(Error::ReleasedTooManyTimes)));
/// assert_eq!(sem.value(), 2);
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct BoundedSemaphore {
    inner: Inner<true>,
}

impl BoundedSemaphore {
    /// A bounded semaphore holding `value`, which is also its bound, in an anonymous segment
    /// that processes forked afterwards share.
    ///
    /// # Errors
    /// `InvalidArgument` if `value` exceeds [`Semaphore::MAX_VALUE`]; `Shm` if the segment
    /// cannot be made.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Self::with_bound(value, value)
    }

    /// A bounded semaphore holding `value` that can be released up to `bound`.
    ///
    /// # Errors
    /// `InvalidArgument` if `value > bound` or `bound` exceeds [`Semaphore::MAX_VALUE`].
    pub fn with_bound(value: u32, bound: u32) -> Result<BoundedSemaphore> {
        check_bound(bound)?;
        Ok(BoundedSemaphore {
            inner: Inner::create(None, value, bound)?,
        })
    }

    /// A bounded semaphore holding `value` (also its bound) in a new named segment (mode
    /// 0600, `O_EXCL`); this handle removes the name when dropped.
    ///
    /// # Errors
    /// As [`BoundedSemaphore::new`], plus `Shm(InvalidName)` and `Shm(AlreadyExists)`.
    pub fn create_named(name: &str, value: u32) -> Result<BoundedSemaphore> {
        Self::create_named_with_bound(name, value, value)
    }

    /// A named bounded semaphore holding `value` that can be released up to `bound`.
    ///
    /// # Errors
    /// As [`BoundedSemaphore::with_bound`], plus `Shm(InvalidName)` and `Shm(AlreadyExists)`.
    pub fn create_named_with_bound(name: &str, value: u32, bound: u32) -> Result<BoundedSemaphore> {
        check_bound(bound)?;
        Ok(BoundedSemaphore {
            inner: Inner::create(Some(name), value, bound)?,
        })
    }

    /// Opens a bounded semaphore made by [`BoundedSemaphore::create_named`]; the bound comes
    /// from the validated header.
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another
    /// kind of object, `Corrupted` for a bound no creator writes.
    pub fn open_named(name: &str) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Inner::open(name)?,
        })
    }

    /// The bound: the largest value a release may reach.
    pub fn bound(&self) -> u32 {
        self.inner.max
    }

    /// Adds one unit, waking one sleeper if there is one.
    ///
    /// # Errors
    /// `ReleasedTooManyTimes` if the value is already at the bound (nothing changes).
    #[inline]
    pub fn release(&self) -> Result<()> {
        self.inner.release(1)
    }

    /// Adds `n` units at once (all or nothing), waking up to `n` sleepers.
    ///
    /// # Errors
    /// `ReleasedTooManyTimes` if the value would exceed the bound (nothing changes).
    pub fn release_n(&self, n: u32) -> Result<()> {
        self.inner.release(n)
    }

    common_methods!(BoundedSemaphore);
}

fn check_bound(bound: u32) -> Result<()> {
    if bound > MAX_VALUE {
        return Err(Error::InvalidArgument(
            "bound above Semaphore::MAX_VALUE (i32::MAX)",
        ));
    }
    Ok(())
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f, "BoundedSemaphore")
    }
}

/// One unit of a [`Semaphore`] or [`BoundedSemaphore`], released when dropped.
///
/// A semaphore has no owner, so the guard may move to another thread (`Send`).
#[must_use = "dropping the guard releases the unit at once"]
pub struct SemaphoreGuard<'a> {
    word: &'a AtomicU64,
    max: u32,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit: the semaphore is not released when the guard goes away.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot exceed the maximum unless a peer released units it never took; then the unit
        // is dropped rather than the invariant broken.
        let _ = sem_core::release(self.word, 1, self.max);
    }
}

/// Handle passing: the same checks as [`Inner::open`], from a descriptor.
impl<const BOUNDED: bool> Inner<BOUNDED>
where
    SemState<BOUNDED>: SharedState,
{
    fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let shared = Shared::<SemState<BOUNDED>>::from_fd(fd, |cap| {
            if (BOUNDED && cap <= u64::from(MAX_VALUE)) || (!BOUNDED && cap == 0) {
                Ok(0)
            } else {
                Err(Error::Corrupted("semaphore bound in the header"))
            }
        })?;
        let max = if BOUNDED {
            u32::try_from(shared.capacity()).map_err(|_| Error::Corrupted("semaphore bound"))?
        } else {
            MAX_VALUE
        };
        Ok(Inner { shared, max })
    }
}

impl std::os::fd::AsFd for Semaphore {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the semaphore with [`Semaphore::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.shared.as_fd()
    }
}

/// Handle passing: a semaphore travels to an unrelated process as a descriptor.
impl Semaphore {
    /// Rebuilds a semaphore from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Semaphore::open_named`] checks a name (a `BoundedSemaphore` or a `Lock`
    /// is `Shm(LayoutMismatch)`). The rebuilt handle has no name and removes nothing when
    /// dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)`,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Semaphore> {
        Ok(Semaphore {
            inner: Inner::from_fd(fd)?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the semaphore lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.shared.into_fd()
    }
}

impl std::os::fd::AsFd for BoundedSemaphore {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the semaphore with [`BoundedSemaphore::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.shared.as_fd()
    }
}

/// Handle passing: a bounded semaphore travels to an unrelated process as a descriptor.
impl BoundedSemaphore {
    /// Rebuilds a bounded semaphore from a descriptor another process sent (`SCM_RIGHTS`),
    /// checked exactly as [`BoundedSemaphore::open_named`] checks a name; the bound comes
    /// from the validated header. The rebuilt handle has no name and removes nothing when
    /// dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)`,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`, `Corrupted` for a bound no creator writes. The
    /// descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Inner::from_fd(fd)?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the semaphore lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.shared.into_fd()
    }
}
