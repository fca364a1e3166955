//! [`PosixSemaphore`]: the real POSIX semaphore API, for interoperation with C programs and
//! Python's `multiprocessing` (whose `SemLock` is a named POSIX semaphore).

use std::ffi::CString;
use std::fmt;
use std::time::Duration;

use ipc_shm::lowlevel::sync::Deadline;

use crate::error::{AcquireTimeoutError, Error, Result, TryAcquireError};
use crate::semaphore::MAX_VALUE;
use crate::shm::Shared;
use crate::sys::{self, NamedSem, Sem, SemCell};

enum Backing {
    /// `sem_init(pshared = 1)` inside an inherited segment.
    Unnamed(Shared<SemCell>),
    /// `sem_open`; `unlink_in` is the creating process, the only one that removes the name.
    Named {
        sem: NamedSem,
        name: String,
        c_name: CString,
        unlink_in: Option<u32>,
    },
}

/// A safe wrapper over a real POSIX semaphore (`sem_t`), shared between processes.
///
/// - [`PosixSemaphore::new`]: an unnamed semaphore, `sem_init(pshared = 1)` inside an
///   anonymous shared segment that children forked afterwards inherit.
/// - [`PosixSemaphore::create_named`] / [`PosixSemaphore::open_named`]: a named semaphore
///   (`sem_open`, `O_CREAT | O_EXCL`, mode 0600), which C programs (`sem_open`) and Python
///   (`_multiprocessing.SemLock`) can open too. The creating handle removes the name
///   (`sem_unlink`) when dropped; openers never do.
///
/// Timed waits use `sem_clockwait(CLOCK_MONOTONIC)` with an absolute deadline; `EINTR` waits
/// again on the same deadline.
///
/// No async form: glibc's `sem_t` keeps its own futex protocol, which this crate may not
/// register with the futex waiter thread; waiting on it from a future would mean a thread
/// per waiter or polling. Use [`Semaphore`](crate::Semaphore) (`acquire_async`, feature
/// `async`) where tasks wait.
///
/// Prefer [`Semaphore`](crate::Semaphore) unless a non-Rust program must share the
/// semaphore: it is as fast uncontended, validates its segment, and keeps the bound check of
/// [`BoundedSemaphore`](crate::BoundedSemaphore) atomic. A `sem_t`'s layout belongs to glibc,
/// so a peer scribbling over an unnamed one cannot be detected.
///
/// ```
/// use ipc_sem::{AcquireTimeoutError, PosixSemaphore, TryAcquireError};
/// use std::time::Duration;
///
/// let sem = PosixSemaphore::new(1)?;
/// sem.acquire()?;
/// assert!(matches!(sem.try_acquire(), Err(TryAcquireError::WouldBlock)));
/// assert!(matches!(
///     sem.acquire_timeout(Duration::from_millis(10)),
///     Err(AcquireTimeoutError::Timeout)
/// ));
/// sem.release()?;
/// assert_eq!(sem.value()?, 1);
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct PosixSemaphore {
    backing: Backing,
}

impl PosixSemaphore {
    /// An unnamed process-shared semaphore holding `value`, in an anonymous segment that
    /// processes forked afterwards share.
    ///
    /// # Errors
    /// `InvalidArgument` if `value` exceeds `SEM_VALUE_MAX` (`i32::MAX`); `Shm` if the segment
    /// cannot be made; `Io` if `sem_init` fails.
    pub fn new(value: u32) -> Result<PosixSemaphore> {
        check_value(value)?;
        Ok(PosixSemaphore {
            backing: Backing::Unnamed(sys::new_unnamed(value)?),
        })
    }

    /// A named semaphore holding `value` (`sem_open` with `O_CREAT | O_EXCL`, mode 0600);
    /// this handle removes the name when dropped.
    ///
    /// # Errors
    /// `InvalidArgument` for a `value` above `SEM_VALUE_MAX`; `Shm(InvalidName)` for a bad
    /// name; `Shm(AlreadyExists)` if it exists; `Io` for other `sem_open` failures.
    pub fn create_named(name: &str, value: u32) -> Result<PosixSemaphore> {
        check_value(value)?;
        let (name, c_name) = sem_name(name)?;
        let sem = NamedSem::open(&c_name, Some(value)).map_err(|e| {
            if e.raw_os_error() == Some(libc::EEXIST) {
                Error::Shm(ipc_shm::Error::AlreadyExists(name.clone()))
            } else {
                Error::io("sem_open", e)
            }
        })?;
        Ok(PosixSemaphore {
            backing: Backing::Named {
                sem,
                name,
                c_name,
                unlink_in: Some(sys::process_id()),
            },
        })
    }

    /// Opens an existing named semaphore (made here, by C's `sem_open` or by Python) and
    /// checks that it belongs to this user.
    ///
    /// The owner is checked on `/dev/shm/sem.<name>` right after `sem_open` (glibc exposes no
    /// descriptor to `fstat`), so a name swapped in between by the same user's processes is
    /// not detected.
    ///
    /// # Errors
    /// `Shm(InvalidName)`, `Shm(NotFound)`, `Shm(NotOwner)` if another user owns it, `Io`.
    pub fn open_named(name: &str) -> Result<PosixSemaphore> {
        let (name, c_name) = sem_name(name)?;
        let sem = NamedSem::open(&c_name, None).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                Error::Shm(ipc_shm::Error::NotFound(name.clone()))
            } else {
                Error::io("sem_open", e)
            }
        })?;
        let (owner, _mode) = sys::named_file_owner(&name[1..]).map_err(|e| Error::io("stat", e))?;
        let me = sys::effective_uid();
        if owner != me {
            return Err(Error::Shm(ipc_shm::Error::NotOwner { name, owner, me }));
        }
        Ok(PosixSemaphore {
            backing: Backing::Named {
                sem,
                name,
                c_name,
                unlink_in: None,
            },
        })
    }

    fn sem(&self) -> Sem<'_> {
        match &self.backing {
            Backing::Unnamed(shared) => shared.state().sem(),
            Backing::Named { sem, .. } => sem.sem(),
        }
    }

    /// Takes one unit, waiting as long as it takes (`sem_wait`, re-entered on `EINTR`).
    ///
    /// # Errors
    /// `Io` if `sem_wait` fails with anything but `EINTR` (`EINVAL`: not a semaphore).
    ///
    /// # Peer death
    /// A semaphore has no owner: units held by a process that dies are never given back.
    /// Use [`PosixSemaphore::acquire_timeout`] when peers may die.
    pub fn acquire(&self) -> Result<()> {
        self.sem()
            .wait(Deadline::never())
            .map(drop)
            .map_err(|e| Error::io("sem_wait", e))
    }

    /// Takes one unit if one is available now (`sem_trywait`); never blocks.
    ///
    /// # Errors
    /// [`TryAcquireError::WouldBlock`] if the value is 0 (`EAGAIN`);
    /// `Failed(Io)` if `sem_trywait` fails with anything but `EAGAIN`/`EINTR`.
    pub fn try_acquire(&self) -> std::result::Result<(), TryAcquireError> {
        match self.sem().try_wait() {
            Ok(true) => Ok(()),
            Ok(false) => Err(TryAcquireError::WouldBlock),
            Err(e) => Err(TryAcquireError::Failed(Error::io("sem_trywait", e))),
        }
    }

    /// Takes one unit, waiting at most `timeout` (`sem_clockwait` on `CLOCK_MONOTONIC`).
    ///
    /// # Errors
    /// [`AcquireTimeoutError::Timeout`] if none came in time (`ETIMEDOUT`); `Failed(Io)` if
    /// `sem_clockwait` fails with anything but `ETIMEDOUT`/`EINTR`.
    ///
    /// # Peer death
    /// As [`PosixSemaphore::acquire`]; the timeout bounds the wait.
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<(), AcquireTimeoutError> {
        match self.sem().wait(Deadline::after(timeout)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AcquireTimeoutError::Timeout),
            Err(e) => Err(AcquireTimeoutError::Failed(Error::io("sem_clockwait", e))),
        }
    }

    /// Adds one unit (`sem_post`).
    ///
    /// # Errors
    /// `Overflow` at `SEM_VALUE_MAX`; `Io` for other failures.
    pub fn release(&self) -> Result<()> {
        self.sem().post().map_err(|e| {
            if e.raw_os_error() == Some(libc::EOVERFLOW) {
                Error::Overflow { max: MAX_VALUE }
            } else {
                Error::io("sem_post", e)
            }
        })
    }

    /// Adds `n` units, one `sem_post` each: not atomic (POSIX has no multi-unit post), so an
    /// `Overflow` part-way leaves the units posted before it.
    ///
    /// # Errors
    /// As [`PosixSemaphore::release`].
    pub fn release_n(&self, n: u32) -> Result<()> {
        (0..n).try_for_each(|_| self.release())
    }

    /// The current value (`sem_getvalue`; a snapshot).
    ///
    /// # Errors
    /// `Io` if `sem_getvalue` fails.
    pub fn value(&self) -> Result<u32> {
        let v = self
            .sem()
            .value()
            .map_err(|e| Error::io("sem_getvalue", e))?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    /// The semaphore's name (`/name`), or `None` for an unnamed one.
    pub fn name(&self) -> Option<&str> {
        match &self.backing {
            Backing::Unnamed(_) => None,
            Backing::Named { name, .. } => Some(name),
        }
    }

    /// Removes the name now (`sem_unlink`) if this handle created it; open handles keep
    /// working. Idempotent.
    ///
    /// # Errors
    /// `Io` if `sem_unlink` fails for a reason other than the name being gone already.
    pub fn unlink(&mut self) -> Result<()> {
        if let Backing::Named {
            c_name, unlink_in, ..
        } = &mut self.backing
        {
            if let Some(pid) = unlink_in.take() {
                if pid == sys::process_id() {
                    match sys::unlink_named(c_name) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(Error::io("sem_unlink", e)),
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for PosixSemaphore {
    fn drop(&mut self) {
        let _ = self.unlink();
    }
}

impl fmt::Debug for PosixSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PosixSemaphore")
            .field("name", &self.name())
            .field("value", &self.sem().value().ok())
            .finish()
    }
}

fn check_value(value: u32) -> Result<()> {
    if value > MAX_VALUE {
        return Err(Error::InvalidArgument(
            "value above SEM_VALUE_MAX (i32::MAX)",
        ));
    }
    Ok(())
}

/// Normalises `name` to `/name` and checks it fits `sem_open`'s shorter limit.
fn sem_name(name: &str) -> Result<(String, CString)> {
    let name = ipc_shm::lowlevel::name::normalize(name)?;
    if name.len() - 1 > sys::MAX_SEM_NAME {
        return Err(Error::Shm(ipc_shm::Error::InvalidName(
            name,
            "longer than 251 bytes (sem_open adds a `sem.` prefix)",
        )));
    }
    let c = CString::new(name.as_str())
        .map_err(|_| Error::Shm(ipc_shm::Error::InvalidName(name.clone(), "contains NUL")))?;
    Ok((name, c))
}
