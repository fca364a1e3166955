//! Every raw OS call of the crate: `fork`, `pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`,
//! `prctl(PR_SET_PDEATHSIG)`, `ppoll`, `eventfd`, `_exit`, and the `/proc/self/task` count.
//!
//! Children are only ever waited for by their own pidfd (`waitid(P_PIDFD)`), never by
//! `waitpid(-1)` and never through a `SIGCHLD` handler, so this crate cannot steal another
//! library's children. EINTR is retried here, against the caller's monotonic deadline.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// What `fork` returned in this process.
pub(crate) enum Fork {
    /// We are the child.
    Child,
    /// We are the parent of this pid.
    Parent(libc::pid_t),
}

/// `fork(2)`.
///
/// # Safety
/// - In the child, only async-signal-safe work may happen until the caller knows no other
///   thread of the parent held a lock the child will need (see the crate docs on forking a
///   multithreaded process); the child must leave with [`exit_now`], never by returning into
///   code that expects to run once.
pub(crate) unsafe fn fork() -> io::Result<Fork> {
    // SAFETY: the caller upholds the child's rules above.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        p => Ok(Fork::Parent(p)),
    }
}

/// `_exit(code)`: ends the process at once, without destructors, atexit handlers or stdio
/// flushing (the caller flushes what it must).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Closes `fd` in a freshly forked child: the child's copy of an fd whose owning object
/// belongs to a frame the child never returns to.
pub(crate) fn close_fd(fd: RawFd) {
    // SAFETY: closing an fd number never touches memory; the callers own that number in this
    // process (see above) and never use it again.
    unsafe {
        libc::close(fd);
    }
}

/// Closes every fd from 3 up except those in `keep`: the start of a forked helper (fork
/// server, worker) that must not hold other ends of the parent's pipes and sockets, or a
/// reader of one would never see end of stream after its writer died (Python's forkserver
/// does the same). One `close_range(2)` per gap; closing one by one up to the fd limit where
/// the kernel lacks it (before 5.9).
///
/// Objects that own the closed numbers must never be dropped afterwards in this process (the
/// callers never return into the frames that hold them, and leave with `_exit`).
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&f| u32::try_from(f).ok())
        .filter(|&f| f >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo: u32 = 3;
    for k in keep {
        if k > lo {
            close_range(lo, k - 1);
        }
        lo = k.saturating_add(1);
    }
    close_range(lo, u32::MAX);
}

fn close_range(lo: u32, hi: u32) {
    // SAFETY: close_range only closes fd numbers in this process; see `close_fds_except` for
    // why nothing uses them afterwards.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
    if r == 0 {
        return;
    }
    // SAFETY: sysconf takes an integer and returns one.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let max = u32::try_from(max).unwrap_or(1 << 16).min(1 << 20);
    for fd in lo..=hi.min(max) {
        if let Ok(fd) = RawFd::try_from(fd) {
            close_fd(fd);
        }
    }
}

/// `getpid()`.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// `getppid()`.
pub(crate) fn getppid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getppid() }
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: the kernel sends `sig` to this process when the thread that
/// forked it exits.
pub(crate) fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::try_from(sig).unwrap_or(0),
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Resets `sig` to its default disposition (a fork inherits ignored signals).
pub(crate) fn default_signal(sig: i32) {
    // SAFETY: installs SIG_DFL; no handler code is involved.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Unblocks every signal in the calling thread (a forked child inherits the forking thread's
/// mask, which a host program may have set).
pub(crate) fn unblock_all_signals() {
    // SAFETY: `set` is a valid sigset_t filled by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `pidfd_open(pid, 0)`: a close-on-exec fd that becomes readable when `pid` exits.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: raw syscall with integer arguments; returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(r).map_err(|_| io::Error::other("pidfd_open returned a bad fd"))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, sig)`: signals exactly the process of `pidfd` (no pid-reuse race).
/// A process that already exited (`ESRCH`) is not an error.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: raw syscall; a null siginfo means "as kill(2)".
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// `SIGKILL`s our own unreaped child `pid` and reaps it with `waitid(P_PID, pid)`: the fallback
/// when `pidfd_open` failed right after `fork` (the pid cannot be reused while unreaped).
pub(crate) fn kill_and_reap_pid(pid: libc::pid_t) {
    // SAFETY: `pid` is our own child that nobody else reaps; kill and waitid take plain
    // integers and a valid siginfo pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let id = libc::id_t::try_from(pid).unwrap_or(0);
        while libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED) == -1
            && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
        {}
    }
}

/// How a child ended, from `waitid`: `Exited(code)` or `Signaled(sig)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    /// Python's `exitcode`: the exit code, or minus the signal number.
    pub(crate) fn exitcode(self) -> i32 {
        match self {
            Status::Exited(c) => c,
            Status::Signaled(s) => -s,
        }
    }

    /// The raw wait status (`W_EXITCODE` / `W_TERMSIG` encoding) for `ExitStatusExt::from_raw`.
    pub(crate) fn raw(self) -> i32 {
        match self {
            Status::Exited(c) => (c & 0xff) << 8,
            Status::Signaled(s) => s & 0x7f,
        }
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED [| WNOHANG])` on our own child: reaps it and returns how it
/// ended, or `None` if `nohang` and it is still running. EINTR is retried.
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, nohang: bool) -> io::Result<Option<Status>> {
    let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    let id = libc::id_t::try_from(pidfd.as_raw_fd()).map_err(|_| io::Error::other("bad pidfd"))?;
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t that lives across the call.
        let r = unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid succeeded, so for WEXITED the child fields are filled (si_pid 0 means
        // WNOHANG found nothing).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => Status::Exited(status),
            _ => Status::Signaled(status),
        }));
    }
}

/// `ppoll` on `fds` until one is ready or `deadline` passes (`None`: no limit). Returns the
/// number of ready fds (0 on timeout). EINTR re-waits for the remaining time.
pub(crate) fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let ts = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(libc::timespec {
                    tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                    // Below 10^9: fits every c_long.
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                })
            }
        };
        let tsp = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        let n = libc::nfds_t::try_from(fds.len()).map_err(|_| io::Error::other("too many fds"))?;
        // SAFETY: `fds` is a valid slice of pollfd for the call; `tsp` is null or points to a
        // timespec that outlives the call; a null sigmask keeps the current mask.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), n, tsp, std::ptr::null()) };
        if r >= 0 {
            return Ok(usize::try_from(r).unwrap_or(0));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A `pollfd` asking for readability.
pub(crate) fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// An `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`: the dispatcher's doorbell.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; returns a new fd or -1.
    let r = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Adds 1 to an eventfd (wakes its poller). A full counter (`EAGAIN`) is already readable.
pub(crate) fn eventfd_ring(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    loop {
        // SAFETY: writes 8 bytes from a valid u64.
        let r = unsafe { libc::write(fd.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
        if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return;
    }
}

/// Resets an eventfd to zero (non-blocking read).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a valid u64; EAGAIN (already zero) is fine.
    unsafe {
        libc::read(fd.as_raw_fd(), std::ptr::from_mut(&mut v).cast(), 8);
    }
}

/// A pipe for a child's result: `(read end, write end)`, both close-on-exec, the read end
/// non-blocking (the parent polls it with the child's pidfd), the write end blocking.
pub(crate) fn result_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned these two fds to us; each is owned once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETFL with O_NONBLOCK on an fd we own; no memory is involved.
    if unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r, w))
}

/// What a non-blocking read of a pipe gave.
pub(crate) enum ReadSome {
    /// Some bytes were appended.
    Data,
    /// End of stream: every write end is closed.
    Eof,
    /// Nothing to read now.
    Empty,
}

/// Appends what can be read from a non-blocking fd now (at most 64 KiB) to `buf`; EINTR is
/// retried.
pub(crate) fn read_some(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<ReadSome> {
    const CHUNK: usize = 64 * 1024;
    buf.reserve(CHUNK);
    let spare = buf.spare_capacity_mut();
    let n = spare.len().min(CHUNK);
    loop {
        // SAFETY: reads at most `n` bytes into the vector's spare capacity, which is valid
        // for writes of that many bytes.
        let r = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), n) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(ReadSome::Empty),
                _ => return Err(e),
            }
        }
        if r == 0 {
            return Ok(ReadSome::Eof);
        }
        let got = r.unsigned_abs();
        // SAFETY: the kernel initialised the first `got <= n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + got) };
        return Ok(ReadSome::Data);
    }
}

/// Writes all of `data` to a blocking fd, EINTR retried. Used by a child for its result,
/// after [`ignore_signal`] of `SIGPIPE`: a parent that closed its end makes this an `EPIPE`
/// error instead of a signal.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes at most `data.len()` bytes from a valid slice.
        let r = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[r.unsigned_abs().min(data.len())..];
    }
    Ok(())
}

/// Ignores `sig` in this process (a child about to write its result ignores `SIGPIPE`).
pub(crate) fn ignore_signal(sig: i32) {
    // SAFETY: installs SIG_IGN; no handler code is involved.
    unsafe {
        libc::signal(sig, libc::SIG_IGN);
    }
}

/// The number of threads of this process (entries of `/proc/self/task`), or `None` if `/proc`
/// is not readable.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(|d| d.filter(|e| e.is_ok()).count())
}

/// One module (the executable or a shared library) mapped in this process, as
/// `dl_iterate_phdr` describes it.
#[derive(Clone, Debug)]
pub(crate) struct Module {
    /// `dlpi_addr`: the load bias.
    pub bias: usize,
    /// Start of its first mapping (what glibc's `dladdr` reports as `dli_fbase`).
    pub map_start: usize,
    /// Its executable segments, `[start, end)`.
    pub exec: Vec<(usize, usize)>,
}

/// The modules mapped in this process now (`dl_iterate_phdr`).
pub(crate) fn loaded_modules() -> Vec<Module> {
    extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `dl_phdr_info` for the call, and `data` is
        // the `&mut Vec<Module>` given below, not otherwise used during the call.
        let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Module>>()) };
        let phdrs = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's program header table of this module, `dlpi_phnum` entries,
            // valid while the callback runs.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let page = page_size();
        let bias = info.dlpi_addr as usize;
        let mut m = Module {
            bias,
            map_start: usize::MAX,
            exec: Vec::new(),
        };
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_LOAD) {
            let start = bias.wrapping_add(ph.p_vaddr as usize);
            let end = start.wrapping_add(ph.p_memsz as usize);
            m.map_start = m.map_start.min(start & !(page - 1));
            if ph.p_flags & libc::PF_X != 0 {
                m.exec.push((start, end));
            }
        }
        out.push(m);
        0
    }
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: `each` matches the callback type and only touches `out` through `data`.
    unsafe {
        libc::dl_iterate_phdr(Some(each), std::ptr::from_mut(&mut out).cast());
    }
    out
}

fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and returns one.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// `dladdr(addr)`: the base and file name of the module holding `addr`, or `None` if no
/// loaded module holds it.
pub(crate) fn module_of(addr: usize) -> Option<(usize, String)> {
    // SAFETY: Dl_info is plain data; dladdr fills it or returns 0. It never dereferences
    // `addr`, only compares it with the loader's tables.
    let (r, info) = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let r = libc::dladdr(addr as *const libc::c_void, &mut info);
        (r, info)
    };
    if r == 0 {
        return None;
    }
    let name = if info.dli_fname.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated path owned by the loader, valid while the module stays
        // loaded (we copy it at once).
        unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned()
    };
    Some((info.dli_fbase as usize, name))
}

/// Registers `fd` (a descriptor this process owns, typically a duplicate of a worker socket)
/// for readability with the current tokio runtime's reactor. `None` outside a tokio runtime,
/// in one without I/O (tokio's panic there is caught, and the runtime remembered so that it is
/// tried once only), or if the registration fails.
#[cfg(feature = "tokio")]
pub(crate) fn register_readable(fd: OwnedFd) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    use std::sync::Mutex;
    /// Runtimes found without an I/O driver (bounded: a program has few runtimes).
    static NO_IO: Mutex<Vec<tokio::runtime::Id>> = Mutex::new(Vec::new());
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let id = handle.id();
    if NO_IO.lock().map_or(true, |v| v.contains(&id)) {
        return None;
    }
    let r = std::panic::catch_unwind(move || {
        // SAFETY: the `AsyncFd` owns `fd`, an `OwnedFd`, which stays open and the same
        // descriptor until the `AsyncFd` drops or gives it back (`OwnedFd::as_raw_fd` always
        // reports it, and nothing can swap it: only `&` access is used).
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
    });
    match r {
        Ok(Ok(afd)) => Some(afd),
        Ok(Err(_)) => None,
        Err(_) => {
            if let Ok(mut v) = NO_IO.lock() {
                if v.len() < 64 {
                    v.push(id);
                }
            }
            None
        }
    }
}
