//! Every raw operating-system call of `ipc-shm`, and nothing else.
//!
//! The rest of the crate sees `OwnedFd`, `io::Result`, [`Map`] and plain values; errno is read
//! only here. Futex waits take absolute `CLOCK_MONOTONIC` deadlines (`FUTEX_WAIT_BITSET`), so a
//! caller that loops after `EINTR` or a spurious wake-up waits on the same deadline and never
//! drifts.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

/// `-1` from a libc call means errno is set: turns that into the `io::Error`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A name for a libc call; an interior NUL is `EINVAL`, as the kernel would say of a bad name.
fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Takes ownership of a descriptor a libc call just returned (`-1`: errno).
fn owned_fd(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by a successful call that opened it, and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates an anonymous memory file (`memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)`) of `len`
/// zero bytes, its memory reserved ([`reserve`]) and sealed against shrinking
/// (`F_SEAL_SHRINK`), so no holder of the fd can truncate it under another's mapping.
pub(crate) fn memfd(debug_name: &str, len: usize) -> io::Result<OwnedFd> {
    let name =
        CString::new(debug_name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let fd = owned_fd(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    set_len(fd_ref(&fd), len)?;
    reserve(fd_ref(&fd), len)?;
    // SAFETY: a plain fcntl on a descriptor we own; F_ADD_SEALS takes an integer argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) })?;
    Ok(fd)
}

/// Allocates the memory behind the first `len` bytes of a memory file now
/// (`posix_fallocate`), so a full tmpfs (`/dev/shm` is 64 MiB in a default Docker container)
/// is an `ENOSPC` error here instead of a `SIGBUS` at the first write to a sparse page.
pub(crate) fn reserve(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: a plain call on a valid descriptor; it returns the error number directly.
        let r = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) };
        match r {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Creates a new named POSIX segment: `O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC`, mode 0600.
/// `name` starts with `/`. The segment is empty; the caller sets its length.
pub(crate) fn shm_create(name: &str) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    owned_fd(unsafe { libc::shm_open(name.as_ptr(), flags, libc::S_IRUSR | libc::S_IWUSR) })
}

/// Opens an existing named segment read-write (or read-only).
pub(crate) fn shm_open_existing(name: &str, writable: bool) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    let access = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    // SAFETY: `name` is a NUL-terminated string that outlives the call; without O_CREAT the
    // mode is ignored.
    owned_fd(unsafe { libc::shm_open(name.as_ptr(), access | libc::O_CLOEXEC, 0) })
}

/// Removes a segment name (`shm_unlink`).
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    let name = c_name(name)?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// Sets the length of a memory file (`ftruncate`); new bytes read as zero.
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a plain call on a valid descriptor.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// What `fstat` says about a segment that matters before trusting it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileFacts {
    pub(crate) owner_uid: u32,
    pub(crate) len: u64,
    /// The file type, `"regular file"` for a memfd or a `shm_open` file (`S_ISREG`).
    pub(crate) file_type: &'static str,
}

impl FileFacts {
    /// Whether the descriptor names a regular file (a memfd, a `shm_open` file), the only
    /// kind a segment can be.
    pub(crate) fn is_regular(&self) -> bool {
        self.file_type == "regular file"
    }
}

/// `fstat` on a segment descriptor.
pub(crate) fn file_facts(fd: BorrowedFd<'_>) -> io::Result<FileFacts> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for one `stat`, which the kernel fills on success.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it wrote the whole struct.
    let st = unsafe { st.assume_init() };
    let file_type = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFIFO => "pipe",
        libc::S_IFSOCK => "socket",
        libc::S_IFDIR => "directory",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFLNK => "symbolic link",
        _ => "file of unknown type",
    };
    Ok(FileFacts {
        owner_uid: st.st_uid,
        len: u64::try_from(st.st_size).unwrap_or(0),
        file_type,
    })
}

/// Makes sure nobody can shrink a memory file under our mapping where the kernel allows it:
/// a memfd made with `MFD_ALLOW_SEALING` that lacks `F_SEAL_SHRINK` gets it (ours have it
/// from creation; a descriptor received from another process may not). Files that cannot
/// carry seals (`shm_open` files, whose seals are fixed at `F_SEAL_SEAL`, and memfds sealed
/// without it) are left as they are: the same trust as a named open. Errors are ignored for
/// the same reason.
pub(crate) fn seal_shrink_if_possible(fd: BorrowedFd<'_>) {
    // SAFETY: a plain fcntl on a valid descriptor; F_GET_SEALS takes no argument.
    let Ok(seals) = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }) else {
        return;
    };
    if seals & (libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL) != 0 {
        return;
    }
    // SAFETY: a plain fcntl on a valid descriptor; F_ADD_SEALS takes an integer argument.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
}

/// The effective user id of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A `MAP_SHARED` mapping of a file: its address and length, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Map {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Map` is an address range owned by this handle; the mapping belongs to the whole
// process, not to a thread, and may be unmapped from any thread. It hands out raw pointers
// only, so every access to the bytes is the caller's to synchronise.
#[allow(unsafe_code)]
unsafe impl Send for Map {}
// SAFETY: `&Map` only reads the address and the length, which never change.
#[allow(unsafe_code)]
unsafe impl Sync for Map {}

impl Map {
    /// The first byte of the mapping (page-aligned, never null).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr().cast_const()
    }

    /// The first byte of the mapping, for reads and writes (page-aligned).
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this `Map` created and still owns; after drop
        // nothing can reach it through this handle. munmap of a valid range cannot fail.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `mmap(NULL, len, prot, MAP_SHARED, fd, 0)`. A zero length is `EINVAL`, as mmap says.
fn map(fd: BorrowedFd<'_>, len: usize, prot: libc::c_int) -> io::Result<Map> {
    if len == 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a new mapping at an address the kernel chooses, so no existing memory is
    // replaced; `fd` is a valid descriptor for the duration of the call.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
    Ok(Map { ptr, len })
}

/// Maps `len` bytes of `fd` shared (`MAP_SHARED`, read-write): writes are seen by every process
/// that maps the same file, including children after `fork`.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<Map> {
    map(fd, len, libc::PROT_READ | libc::PROT_WRITE)
}

/// Maps `len` bytes of `fd` shared and read-only (used by `sweep` to read headers).
pub(crate) fn map_shared_read_only(fd: BorrowedFd<'_>, len: usize) -> io::Result<Map> {
    map(fd, len, libc::PROT_READ)
}

/// Borrows an owned descriptor.
pub(crate) fn fd_ref(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

/// Fills `buf` with bytes from the operating system's random source (`getrandom(2)`, blocking
/// until the pool is initialised; short reads continue, `EINTR` retries).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is writable for `rest.len()` bytes, which bounds what the kernel writes.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(r) {
            // 0 only for an empty request, which the loop condition rules out; never spin.
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => filled += n.min(rest.len()),
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub(crate) fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail and writes `ts` in full.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The outcome of one futex wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken by `FUTEX_WAKE`, or by a signal (`EINTR`), or spuriously: re-check and re-wait.
    Woken,
    /// The word did not hold the expected value when the kernel looked (`EAGAIN`).
    ValueChanged,
    /// The absolute deadline passed (`ETIMEDOUT`).
    TimedOut,
}

/// `FUTEX_WAIT_BITSET` on a process-shared word (no `FUTEX_PRIVATE_FLAG`), with an absolute
/// `CLOCK_MONOTONIC` deadline in nanoseconds (`None`: no deadline).
///
/// # Safety
/// - `addr` points to a 4-byte-aligned `u32` in memory that stays mapped for the duration of
///   the call (the kernel reads it atomically; Rust never gets a reference from it here).
pub(crate) unsafe fn futex_wait(
    addr: *const u32,
    expected: u32,
    deadline_ns: Option<u64>,
) -> FutexWait {
    let ts = deadline_ns.map(|ns| libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(ns % 1_000_000_000).unwrap_or(0),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: the caller guarantees `addr` is a mapped, aligned futex word; `ts_ptr` is null or
    // points to a timespec that outlives the call; the other arguments are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if r == 0 {
        return FutexWait::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => FutexWait::ValueChanged,
        Some(libc::ETIMEDOUT) => FutexWait::TimedOut,
        // EINTR: a signal handler ran; the caller re-checks and re-waits on the same deadline.
        _ => FutexWait::Woken,
    }
}

/// `FUTEX_WAKE` of up to `n` waiters on a process-shared word; returns how many were woken.
///
/// # Safety
/// - `addr` points to a 4-byte-aligned `u32` in mapped memory.
pub(crate) unsafe fn futex_wake(addr: *const u32, n: u32) -> usize {
    let n = libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: the caller guarantees `addr` is a mapped, aligned futex word; FUTEX_WAKE only
    // uses the address as a key and never dereferences it in a way that could fault us.
    let r = unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, n) };
    usize::try_from(r).unwrap_or(0)
}

/// `membarrier(2)` commands this crate uses (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// One `membarrier(2)` command without flags.
fn membarrier(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: membarrier takes two integers and a flags word; it touches no user memory.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Registers the calling process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`: from now on (and in
/// children forked after this, which inherit the registration) a global expedited barrier
/// issued by any process interrupts this process's running threads with a full barrier.
pub(crate) fn membarrier_register_global_expedited() -> io::Result<()> {
    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
}

/// Issues a global expedited barrier: when it returns, every thread of every registered
/// process that was running has executed a full memory barrier, and every other one has
/// been switched out (a full barrier too) since the call began.
pub(crate) fn membarrier_global_expedited() -> io::Result<()> {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
}

/// The calling thread's id (`gettid`), unique among live threads of the pid namespace.
pub(crate) fn thread_id() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(0)
}

/// The calling process's id.
pub(crate) fn process_id() -> u32 {
    std::process::id()
}

/// Liveness of a process or thread, read from `/proc/<id>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running, sleeping or stopped, started at this many clock ticks after boot.
    Alive { start_time: u64 },
    /// No such id, or it is a zombie (it has exited and waits to be reaped).
    Dead,
}

/// Reads the state and start time of process or thread `id` (`/proc/<id>/stat`; thread ids
/// resolve there too).
///
/// "Dead" is reported only when the kernel itself confirms it: a zombie in a `/proc` that is
/// this process's own, or `kill(id, 0)` failing with `ESRCH`. A `/proc` that is missing,
/// mounted from another pid namespace, or hiding processes (`hidepid`) never makes a live
/// task read as dead: its entries are then not trusted, and a task that `kill` still finds is
/// alive with start time 0 (unknown). Other read errors also count as alive with start time 0.
pub(crate) fn liveness(id: u32) -> Liveness {
    if id == 0 {
        return Liveness::Dead;
    }
    if !proc_is_ours() {
        return kernel_liveness(id);
    }
    let mut buf = [0u8; 1024];
    let path = format!("/proc/{id}/stat");
    let n = match File::open(Path::new(&path)).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        // No entry (or ESRCH: the task went away between open and read). With `hidepid` an
        // entry can be missing for a live task: ask the kernel directly.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return kernel_liveness(id)
        }
        Err(_) => return Liveness::Alive { start_time: 0 },
    };
    parse_stat(&buf[..n]).unwrap_or(Liveness::Alive { start_time: 0 })
}

/// Whether task `id` exists in this pid namespace, by `kill(id, 0)` (which accepts thread
/// ids): only `ESRCH` is "dead"; `EPERM` means it exists but belongs to someone else.
fn kernel_liveness(id: u32) -> Liveness {
    let Ok(pid) = libc::pid_t::try_from(id) else {
        return Liveness::Dead;
    };
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        Liveness::Dead
    } else {
        Liveness::Alive { start_time: 0 }
    }
}

/// `(pid << 2) | verdict` of the last `/proc` check, so a forked child checks again.
static PROC_CHECK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const PROC_OURS: u64 = 1;
const PROC_FOREIGN: u64 = 2;

/// Whether `/proc` is this process's own pid namespace's: `/proc/self/stat` exists and names
/// `getpid()`. Cached per process id (a fork checks again; a lock-free word, so a child forked
/// mid-check is not blocked).
pub(crate) fn proc_is_ours() -> bool {
    use std::sync::atomic::Ordering;
    let pid = u64::from(process_id());
    let cached = PROC_CHECK.load(Ordering::Relaxed);
    if cached >> 2 == pid && cached & 3 != 0 {
        return cached & 3 == PROC_OURS;
    }
    let mut buf = [0u8; 64];
    let ours = File::open("/proc/self/stat")
        .and_then(|mut f| f.read(&mut buf))
        .ok()
        .and_then(|n| {
            std::str::from_utf8(&buf[..n])
                .ok()?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        == Some(pid);
    let verdict = if ours { PROC_OURS } else { PROC_FOREIGN };
    PROC_CHECK.store((pid << 2) | verdict, Ordering::Relaxed);
    ours
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`), or 0 if it cannot be read
/// from a `/proc` of our own.
pub(crate) fn pid_namespace() -> u64 {
    if !proc_is_ours() {
        return 0;
    }
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m))
}

/// Parses the state (field 3) and start time (field 22) out of a `/proc/<id>/stat` line.
/// The command name (field 2) may contain spaces and parentheses, so parsing starts after the
/// last `)`.
fn parse_stat(line: &[u8]) -> Option<Liveness> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" || state == "x" {
        return Some(Liveness::Dead);
    }
    // After the state come fields 4..; the start time is field 22, i.e. 18 more fields on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Liveness::Alive { start_time })
}

/// Registers `child` to run in the child after every `fork()` made through libc (std and this
/// workspace all fork that way). Called once, from a constructor that runs before `main`
/// while the process has a single thread (see `sync::owner`), so no fork can copy a
/// registration in progress.
pub(crate) fn register_at_fork_child(child: unsafe extern "C" fn()) {
    // SAFETY: `child` is a plain function with no captured state; pthread_atfork only stores
    // the pointer. Failure (ENOMEM) leaves caches unreset after fork, which only weakens
    // death detection for forked children; nothing unsound follows.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

/// Whether the named segment (`/name`) is empty (never sized) and was last changed more than
/// `age` ago.
pub(crate) fn is_stale_empty_shm(name: &str, age: std::time::Duration) -> bool {
    let path = format!("/dev/shm{name}");
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => m
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|e| e > age),
        _ => false,
    }
}

/// Lists the names in `/dev/shm` (POSIX shared memory) that start with `prefix`.
pub(crate) fn list_shm_names(prefix: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if name.starts_with(prefix) {
                out.push(format!("/{name}"));
            }
        }
    }
    Ok(out)
}

/// One word of a [`futex_waitv`] call: the kernel's `struct futex_waitv`.
#[cfg(feature = "async")]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct FutexWaitv {
    /// The value the word must hold for the thread to sleep.
    pub(crate) val: u64,
    /// The word's address.
    pub(crate) uaddr: u64,
    /// `FUTEX2_SIZE_U32`, plus `FUTEX2_PRIVATE` for a word no other process maps.
    pub(crate) flags: u32,
    reserved: u32,
}

#[cfg(feature = "async")]
impl FutexWaitv {
    /// A 32-bit word at `addr` expected to hold `val`; `private` for a word of this process only.
    pub(crate) fn new(addr: *const u32, val: u32, private: bool) -> Self {
        const FUTEX2_SIZE_U32: u32 = 0x02;
        const FUTEX2_PRIVATE: u32 = 128;
        FutexWaitv {
            val: u64::from(val),
            uaddr: addr as u64,
            flags: FUTEX2_SIZE_U32 | if private { FUTEX2_PRIVATE } else { 0 },
            reserved: 0,
        }
    }
}

/// The most words one [`futex_waitv`] call takes (the kernel's `FUTEX_WAITV_MAX`).
#[cfg(feature = "async")]
pub(crate) const FUTEX_WAITV_MAX: usize = 128;

/// How a [`futex_waitv`] call ended.
#[cfg(feature = "async")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitvOutcome {
    /// Woken on the word at this index (other words may have changed too).
    Woken(usize),
    /// A word did not hold its value when the kernel looked (`EAGAIN`).
    ValueChanged,
    /// The deadline passed.
    TimedOut,
    /// A signal (`EINTR`), or a word whose memory was unmapped meanwhile (`EFAULT`): re-check.
    Retry,
    /// The kernel has no `futex_waitv` (before Linux 5.16, or filtered by seccomp).
    Unsupported,
}

/// `futex_waitv(2)`: sleeps until one of `words` is woken or differs from its value, or until
/// the absolute `CLOCK_MONOTONIC` deadline in nanoseconds (`None`: no deadline).
///
/// The kernel reads the words itself: a word whose memory is unmapped while the call runs
/// yields `EFAULT`, never a fault in this process, so the caller need not keep the words
/// mapped (it must only never load them itself once their owner may have unmapped them).
#[cfg(feature = "async")]
pub(crate) fn futex_waitv(words: &[FutexWaitv], deadline_ns: Option<u64>) -> WaitvOutcome {
    if words.is_empty() || words.len() > FUTEX_WAITV_MAX {
        return WaitvOutcome::Retry;
    }
    let ts = deadline_ns.map(|ns| libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(ns % 1_000_000_000).unwrap_or(0),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `words` is a valid slice of `struct futex_waitv` (repr(C), reserved zeroed) with
    // 1..=128 entries; `ts_ptr` is null or points to a timespec that outlives the call; the
    // kernel only reads both, and reads the words' addresses itself (EFAULT if unmapped).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            words.as_ptr(),
            libc::c_uint::try_from(words.len()).unwrap_or(0),
            0 as libc::c_uint,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return WaitvOutcome::Woken(usize::try_from(r).unwrap_or(0));
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitvOutcome::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitvOutcome::TimedOut,
        Some(libc::ENOSYS) | Some(libc::EPERM) => WaitvOutcome::Unsupported,
        _ => WaitvOutcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(Liveness::Alive { start_time: 98765 })
        );
        let zombie = b"1234 (x) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 0 0";
        assert_eq!(parse_stat(zombie), Some(Liveness::Dead));
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn random_bytes_fills_a_large_buffer() {
        // Larger than one guaranteed-atomic getrandom read (256 bytes): exercises the loop.
        let mut buf = vec![0u8; 1 << 20];
        random_bytes(&mut buf).unwrap();
        assert!(buf.iter().filter(|&&b| b == 0).count() < buf.len() / 64);
        random_bytes(&mut []).unwrap();
    }

    #[test]
    fn maps_share_bytes_and_refuse_zero_length() {
        let fd = memfd("sys-test", 4096).unwrap();
        let a = map_shared(fd_ref(&fd), 4096).unwrap();
        let b = map_shared_read_only(fd_ref(&fd), 4096).unwrap();
        assert_eq!((a.len(), b.len()), (4096, 4096));
        // SAFETY: both mappings are 4096 bytes of the same file, used by this thread only.
        #[allow(unsafe_code)]
        unsafe {
            a.ptr().as_ptr().add(100).write_volatile(7);
            assert_eq!(b.as_ptr().add(100).read_volatile(), 7);
        }
        let e = map_shared(fd_ref(&fd), 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn own_process_is_alive_with_a_start_time() {
        match liveness(process_id()) {
            Liveness::Alive { start_time } => assert!(start_time > 0),
            Liveness::Dead => panic!("this process reads as dead"),
        }
        assert_eq!(liveness(0), Liveness::Dead);
    }
}
