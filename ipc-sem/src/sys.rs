//! Every raw operating-system call of `ipc-sem`: the POSIX semaphore API behind
//! [`PosixSemaphore`](crate::PosixSemaphore), and nothing else.
//!
//! The rest of the crate sees [`Sem`], `io::Result` and plain values; errno is read only
//! here. Timed waits use `sem_clockwait(CLOCK_MONOTONIC)` with an absolute deadline, and
//! `EINTR` re-waits on that same deadline, so retries never stretch the total wait.

use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

use ipc_shm::lowlevel::sync::Deadline;

use crate::loom::AtomicU64;
use crate::shm::{Shared, SharedState};

extern "C" {
    // glibc >= 2.30 (`libc` 0.2 does not declare it yet). Same contract as `sem_timedwait`,
    // with the clock named: we always pass CLOCK_MONOTONIC, so a wall-clock jump cannot
    // shorten or stretch a wait.
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// The longest bare name `sem_open` accepts: glibc stores `/dev/shm/sem.<name>`, and the file
/// name must fit `NAME_MAX` (255) with its `sem.` prefix.
pub(crate) const MAX_SEM_NAME: usize = 251;

/// Room for one unnamed process-shared `sem_t` inside a segment (glibc's is 32 bytes on
/// 64-bit targets, 16 on 32-bit). Only glibc touches the bytes, through its own atomics.
#[repr(C)]
pub(crate) struct SemCell {
    bytes: [AtomicU64; 8],
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<libc::sem_t>() <= std::mem::size_of::<SemCell>());
    assert!(std::mem::align_of::<libc::sem_t>() <= std::mem::align_of::<SemCell>());
};

// SAFETY: atomics only, `repr(C)`, valid for every bit pattern; alignment 8. glibc's `sem_t`
// is a 64-bit value-and-waiters word plus a futex-flags word, used only atomically, so any
// bytes a peer writes make at worst a semaphore that misbehaves (wrong value, `EINVAL`),
// never memory unsafety; the all-zero pattern is glibc's pshared semaphore of value 0.
unsafe impl SharedState for SemCell {
    const KIND: &'static str = "ipc_sem::PosixSemaphore";
    const VERSION: u32 = 1;
}

impl SemCell {
    fn ptr(&self) -> NonNull<libc::sem_t> {
        // The atomics grant interior mutability over all 64 bytes, so glibc may write them
        // through a pointer derived from this shared reference.
        NonNull::from(&self.bytes).cast::<libc::sem_t>()
    }

    /// The semaphore in this cell.
    pub(crate) fn sem(&self) -> Sem<'_> {
        Sem {
            ptr: self.ptr(),
            _cell: PhantomData,
        }
    }
}

/// A new anonymous segment holding an unnamed semaphore, `sem_init(pshared = 1, value)`.
pub(crate) fn new_unnamed(value: u32) -> crate::Result<Shared<SemCell>> {
    let mut failed = None;
    let shared = Shared::<SemCell>::create(None, 0, 0, |cell| {
        // SAFETY: `create` runs this on the fresh, zeroed, MAP_SHARED payload before returning
        // the segment, so no other thread or process can use these bytes yet; the cell is
        // large and aligned enough for a sem_t (const-asserted above).
        if unsafe { libc::sem_init(cell.ptr().as_ptr(), 1, value) } != 0 {
            failed = Some(io::Error::last_os_error());
        }
    })?;
    match failed {
        Some(e) => Err(crate::Error::io("sem_init", e)),
        None => Ok(shared),
    }
    // No `sem_destroy` ever: other processes may still use the semaphore (destroying one
    // that others block on is undefined in POSIX), and glibc's `sem_destroy` frees nothing.
    // The memory goes with the last mapping of the segment.
}

/// A named semaphore opened with `sem_open`; `sem_close`d on drop.
#[derive(Debug)]
pub(crate) struct NamedSem {
    ptr: NonNull<libc::sem_t>,
}

// SAFETY: the pointer is glibc's mapping of a process-shared semaphore, valid until
// `sem_close` in drop; every operation goes through glibc's atomic implementation, so any
// thread may use it.
unsafe impl Send for NamedSem {}
// SAFETY: as above; all methods take `&self` and glibc synchronises them.
unsafe impl Sync for NamedSem {}

impl NamedSem {
    /// Opens the named semaphore `name` (`/name`): with `Some(value)`, creates it
    /// (`O_CREAT | O_EXCL`, mode 0600) holding `value`; with `None`, opens an existing one.
    pub(crate) fn open(name: &CStr, create: Option<u32>) -> io::Result<NamedSem> {
        let sem = match create {
            Some(value) => {
                let mode: libc::c_uint = 0o600;
                // SAFETY: `name` is a valid C string; with O_CREAT, sem_open reads the mode and
                // value variadic arguments, passed with the promoted types it expects.
                unsafe {
                    libc::sem_open(
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL,
                        mode,
                        libc::c_uint::from(value),
                    )
                }
            }
            // SAFETY: `name` is a valid C string; without O_CREAT there are no more arguments.
            None => unsafe { libc::sem_open(name.as_ptr(), 0) },
        };
        if sem == libc::SEM_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(sem).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(NamedSem { ptr })
    }

    /// The semaphore.
    pub(crate) fn sem(&self) -> Sem<'_> {
        Sem {
            ptr: self.ptr,
            _cell: PhantomData,
        }
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        // SAFETY: a handle from `sem_open`, closed exactly once (here); no `Sem` borrowed from
        // it outlives `self`.
        unsafe {
            libc::sem_close(self.ptr.as_ptr());
        }
    }
}

/// A live POSIX semaphore, borrowed from a [`SemCell`] or a [`NamedSem`].
#[derive(Clone, Copy)]
pub(crate) struct Sem<'a> {
    ptr: NonNull<libc::sem_t>,
    _cell: PhantomData<&'a SemCell>,
}

impl Sem<'_> {
    /// Takes one unit, waiting until `deadline`; `Ok(false)` once it passes. `EINTR`
    /// re-waits on the same absolute deadline.
    pub(crate) fn wait(self, deadline: Deadline) -> io::Result<bool> {
        let abs = deadline.as_monotonic_nanos().map(timespec_of);
        loop {
            let r = match &abs {
                // SAFETY: `self.ptr` is a live semaphore for the borrow's lifetime.
                None => unsafe { libc::sem_wait(self.ptr.as_ptr()) },
                // SAFETY: as above; `ts` is a valid timespec for the whole call.
                Some(ts) => unsafe { sem_clockwait(self.ptr.as_ptr(), libc::CLOCK_MONOTONIC, ts) },
            };
            if r == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ETIMEDOUT) => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// Takes one unit if one is available now.
    pub(crate) fn try_wait(self) -> io::Result<bool> {
        loop {
            // SAFETY: `self.ptr` is a live semaphore.
            if unsafe { libc::sem_trywait(self.ptr.as_ptr()) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// Adds one unit (`EOVERFLOW` at `SEM_VALUE_MAX`).
    pub(crate) fn post(self) -> io::Result<()> {
        // SAFETY: `self.ptr` is a live semaphore.
        if unsafe { libc::sem_post(self.ptr.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The current value (never negative on Linux).
    pub(crate) fn value(self) -> io::Result<i32> {
        let mut v: libc::c_int = 0;
        // SAFETY: `self.ptr` is a live semaphore; `v` is a valid out-pointer.
        if unsafe { libc::sem_getvalue(self.ptr.as_ptr(), &mut v) } == 0 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn timespec_of(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(ns % 1_000_000_000).unwrap_or(0),
    }
}

/// Removes a named semaphore (`sem_unlink`).
pub(crate) fn unlink_named(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid C string.
    if unsafe { libc::sem_unlink(name.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The owner uid and permission bits of the file behind a named semaphore
/// (`/dev/shm/sem.<bare>` on Linux with glibc).
pub(crate) fn named_file_owner(bare: &str) -> io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // `stat` (following links, as `sem_open` does) through std: no descriptor, no unsafe.
    let st = std::fs::metadata(format!("/dev/shm/sem.{bare}"))?;
    Ok((st.uid(), st.mode() & 0o7777))
}

/// This process's effective uid.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// This process's id.
pub(crate) fn process_id() -> u32 {
    std::process::id()
}
