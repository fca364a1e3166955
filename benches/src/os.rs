//! Thin helpers over the raw OS calls the workloads share: clocks, CPU time, pinning, fds,
//! exact reads and writes, pipe sizes, futexes and errno names.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `CLOCK_MONOTONIC` in nanoseconds (comparable across processes of one boot).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of this process (`getrusage(RUSAGE_SELF)`), ns.
pub fn cpu_self_ns() -> u64 {
    rusage_ns(libc::RUSAGE_SELF)
}

/// User + system CPU time of this thread (`getrusage(RUSAGE_THREAD)`), ns.
pub fn cpu_thread_ns() -> u64 {
    rusage_ns(libc::RUSAGE_THREAD)
}

/// The errno name of an error number (`EPERM`), never its strerror text.
pub fn errno_name(e: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(e))
}

/// The errno name of the calling thread's last error.
pub fn last_errno() -> String {
    errno_name(nix::errno::Errno::last_raw())
}

/// Pins the calling thread (or process) to `cpu`; ignored when that cpu does not exist.
pub fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Number of online cpus.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e:?}"))
}

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd), String> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e:?}"))
}

/// `F_GETPIPE_SZ` of a pipe fd.
pub fn pipe_size(fd: RawFd) -> Result<usize, String> {
    // SAFETY: fcntl with F_GETPIPE_SZ takes no pointer argument.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if r < 0 {
        Err(format!("F_GETPIPE_SZ: {}", last_errno()))
    } else {
        Ok(r as usize)
    }
}

/// `F_SETPIPE_SZ`; returns the size granted.
pub fn set_pipe_size(fd: RawFd, size: usize) -> Result<usize, String> {
    // SAFETY: fcntl with F_SETPIPE_SZ takes an int argument.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size as libc::c_int) };
    if r < 0 {
        Err(format!("F_SETPIPE_SZ {size}: {}", last_errno()))
    } else {
        Ok(r as usize)
    }
}

/// Writes all of `buf`, continuing partial writes and retrying EINTR.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), String> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            return Err(format!("write: {}", errno_name(e)));
        }
        buf = &buf[r as usize..];
    }
    Ok(())
}

/// One `read` into `buf`, retrying EINTR; 0 means end of file.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> Result<usize, String> {
    loop {
        // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = nix::errno::Errno::last_raw();
            if e == libc::EINTR {
                continue;
            }
            return Err(format!("read: {}", errno_name(e)));
        }
        return Ok(r as usize);
    }
}

/// Reads exactly `buf.len()` bytes; end of file first is an error.
pub fn read_exact(fd: RawFd, buf: &mut [u8]) -> Result<(), String> {
    let mut off = 0;
    while off < buf.len() {
        let r = read_some(fd, &mut buf[off..])?;
        if r == 0 {
            return Err(format!(
                "read: end of file after {off} of {} bytes",
                buf.len()
            ));
        }
        off += r;
    }
    Ok(())
}

/// Takes ownership of a raw fd.
///
/// # Safety
/// `fd` must be an open fd that nothing else owns.
pub unsafe fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Raw fd of anything that has one.
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

/// `FUTEX_WAIT` (shared, no timeout) on `word` while it holds `seen`.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, seen: u32) {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; no timeout pointer.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// `FUTEX_WAKE` (shared) of up to `n` waiters on `word`.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: u32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE reads no other pointer.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// A name no other run uses: `/<prefix>-<pid>-<16 random hex>`.
pub fn unique_name(prefix: &str) -> String {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a valid writable buffer of 8 bytes.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    let x = if r == 8 {
        u64::from_le_bytes(b)
    } else {
        now_ns() ^ (std::process::id() as u64) << 32
    };
    format!("/{prefix}-{}-{x:016x}", std::process::id())
}

/// glibc's version string.
pub fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned()
}
