//! Every raw OS call of the crate: socketpair, pipe2, `F_SETPIPE_SZ`, fstat,
//! `sendmsg`/`recvmsg` (with `SCM_RIGHTS`, `MSG_NOSIGNAL`, `MSG_CMSG_CLOEXEC`),
//! `writev`/`readv` for pipes under a `SIGPIPE` guard, and `ppoll` with EINTR
//! retried against a `CLOCK_MONOTONIC` deadline ([`Instant`] is that clock on
//! Linux). Raw `libc` throughout (no `nix`: one dependency fewer, and the hot
//! paths read into uninitialised spare capacity of a `Vec`).
//!
//! Nothing outside this module sees errno.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `-1` from a libc call means errno is set: turns that into the `io::Error`.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Takes ownership of the two descriptors a successful `socketpair`/`pipe2`
/// wrote into `fds`.
fn owned_pair(fds: [libc::c_int; 2]) -> (OwnedFd, OwnedFd) {
    // SAFETY: the call that filled `fds` succeeded, so both are open
    // descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is writable room for the two descriptors the call returns.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    Ok(owned_pair(fds))
}

/// `pipe2(O_CLOEXEC)`: `(read end, write end)`.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is writable room for the two descriptors the call returns.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok(owned_pair(fds))
}

/// `fcntl(F_SETPIPE_SZ)`: returns the size granted.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    // SAFETY: a plain fcntl on a valid descriptor with an integer argument.
    let got = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok(usize::try_from(got).unwrap_or(0))
}

/// What kind of file an fd is, as far as writing to it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// A socket: `sendmsg(MSG_NOSIGNAL)`.
    Socket,
    /// A pipe or FIFO: `pwritev2(RWF_NOSIGNAL)` where the kernel has it.
    Pipe,
    /// Anything else: `writev` under the [`SigpipeGuard`].
    Other,
}

impl FdKind {
    pub(crate) fn is_socket(self) -> bool {
        self == FdKind::Socket
    }
}

/// The kind of `fd` (`fstat`). A failing `fstat` says [`FdKind::Other`],
/// which only costs the `SIGPIPE` guard on writes.
pub(crate) fn fd_kind(fd: BorrowedFd<'_>) -> FdKind {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable storage for one `stat`, filled on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return FdKind::Other;
    }
    // SAFETY: fstat succeeded, so it wrote the whole struct.
    let st = unsafe { st.assume_init() };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFIFO => FdKind::Pipe,
        _ => FdKind::Other,
    }
}

// ---------------------------------------------------------------- poll

/// `ppoll` on `fds` until one is ready or `deadline` passes (`None`: no
/// deadline). EINTR re-waits for the time left, so the total never drifts
/// and never ends early. Returns the number of ready entries (0: timed out).
pub(crate) fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let ts;
        let tsp = match deadline {
            None => ptr::null(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                ts = libc::timespec {
                    tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                &ts as *const libc::timespec
            }
        };
        // SAFETY: `fds` is a valid, exclusively borrowed array of `pollfd` of the
        // given length; `tsp` is null or points to `ts`, alive for the call; a
        // null sigmask leaves the mask alone.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                tsp,
                ptr::null(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return Ok(0);
            }
        }
    }
}

/// Waits until `fd` reports any of `events` (or an error/hang-up) or the
/// deadline passes. `Ok(false)`: timed out.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }];
    Ok(poll(&mut p, deadline)? > 0)
}

pub(crate) use libc::{POLLIN, POLLOUT};

// ---------------------------------------------------------------- receive

/// Ancillary-data buffer able to hold `SCM_RIGHTS` with [`MAX_FDS`] descriptors,
/// aligned for `cmsghdr`.
///
/// [`MAX_FDS`]: crate::frame::MAX_FDS
pub(crate) struct CmsgBuf(Box<[u64]>);

impl CmsgBuf {
    pub(crate) fn new() -> CmsgBuf {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe {
            libc::CMSG_SPACE((crate::frame::MAX_FDS * mem::size_of::<RawFd>()) as libc::c_uint)
        } as usize;
        CmsgBuf(vec![0u64; space.div_ceil(8)].into_boxed_slice())
    }
}

/// What one read returned.
#[derive(Default)]
pub(crate) struct Received {
    /// Bytes read in all (0: end of stream).
    pub(crate) n: usize,
    /// How many of them went to the caller's `Vec` (the rest to the buffer).
    pub(crate) direct: usize,
    /// Descriptors that arrived with these bytes (`SCM_RIGHTS`), close-on-exec.
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel dropped ancillary data (`MSG_CTRUNC`).
    pub(crate) truncated: bool,
}

/// One read: first into the spare capacity of `out.0` (at most `out.1`
/// bytes; its length is extended by what arrives), then into `buf`. Sockets
/// use `recvmsg(MSG_CMSG_CLOEXEC)` with `cmsg` when given, collecting passed
/// descriptors; anything else uses `readv`. EINTR is retried; `WouldBlock`
/// (an `O_NONBLOCK` fd, or a socket read with `dontwait`) goes back to the
/// caller, which polls. `dontwait`: `MSG_DONTWAIT` on a socket,
/// `preadv2(RWF_NOWAIT)` on anything else, so a read that finds nothing
/// returns at once whatever the fd's `O_NONBLOCK` (a kernel whose pipes
/// refuse `RWF_NOWAIT` fails it with `EOPNOTSUPP`, having read nothing).
pub(crate) fn read2(
    fd: BorrowedFd<'_>,
    socket: bool,
    mut out: Option<(&mut Vec<u8>, usize)>,
    buf: &mut [u8],
    cmsg: Option<&mut CmsgBuf>,
    dontwait: bool,
) -> io::Result<Received> {
    let first: &mut [MaybeUninit<u8>] = match out.as_mut() {
        Some((v, max)) => {
            let spare = v.spare_capacity_mut();
            let n = (*max).min(spare.len());
            &mut spare[..n]
        }
        None => &mut [],
    };
    let first_len = first.len();
    let mut iov = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first_len,
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // Without a first part, a socket reads into one iovec (less for the
    // kernel to import). Pipes keep `readv`: a plain `read` there measured
    // no faster end to end (C4s@512B rather slower: a cheaper reader drains
    // the pipe sooner, and a writer that finds it empty pays a wake-up).
    let single = first_len == 0;
    let mut got = if socket {
        recvmsg(fd, &mut iov, single, cmsg, dontwait)?
    } else {
        loop {
            let r = if dontwait {
                // SAFETY: as for `readv` below; offset -1 reads at the current
                // position, as `readv` does.
                unsafe { libc::preadv2(fd.as_raw_fd(), iov.as_ptr(), 2, -1, libc::RWF_NOWAIT) }
            } else {
                // SAFETY: both iovecs describe writable memory exclusively
                // borrowed for this call (spare capacity of `out`, and `buf`);
                // the kernel writes at most their lengths and never reads
                // them, so uninitialised bytes are fine.
                unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) }
            };
            if r >= 0 {
                break Received {
                    n: r as usize,
                    ..Received::default()
                };
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    };
    got.direct = got.n.min(first_len);
    if let Some((v, _)) = out {
        let len = v.len() + got.direct;
        // SAFETY: the kernel initialised the first `direct` bytes of the spare
        // capacity (the first iovec is filled before the second), and
        // `direct <= first_len <= spare capacity`.
        unsafe { v.set_len(len) };
    }
    Ok(got)
}

/// `recvmsg` into `iov` (only its second entry when `single`).
fn recvmsg(
    fd: BorrowedFd<'_>,
    iov: &mut [libc::iovec; 2],
    single: bool,
    cmsg: Option<&mut CmsgBuf>,
    dontwait: bool,
) -> io::Result<Received> {
    let flags = libc::MSG_CMSG_CLOEXEC | if dontwait { libc::MSG_DONTWAIT } else { 0 };
    let iovs: &mut [libc::iovec] = if single { &mut iov[1..] } else { &mut iov[..] };
    let (ctrl_ptr, ctrl_len) = match cmsg {
        Some(c) => (c.0.as_mut_ptr().cast::<libc::c_void>(), c.0.len() * 8),
        None => (ptr::null_mut(), 0),
    };
    loop {
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = iovs.as_mut_ptr();
        msg.msg_iovlen = iovs.len() as _;
        msg.msg_control = ctrl_ptr;
        msg.msg_controllen = ctrl_len as _;
        // SAFETY: `msg` points to the caller's iovecs (writable memory borrowed
        // for this call) and to the control buffer owned by `cmsg` (or none);
        // the kernel writes within the given lengths.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut out = Received {
            n: r as usize,
            truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
            ..Received::default()
        };
        if !ctrl_ptr.is_null() && msg.msg_controllen > 0 {
            // SAFETY: the kernel filled `msg_controllen` bytes of our control
            // buffer with well-formed cmsg headers; FIRSTHDR/NXTHDR stay within.
            let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            while !c.is_null() {
                // SAFETY: `c` is a cmsghdr inside the control buffer (see above).
                let h = unsafe { ptr::read_unaligned(c) };
                if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                    // SAFETY: CMSG_LEN(0) is a size computation.
                    let hdr_len = unsafe { libc::CMSG_LEN(0) } as usize;
                    let count =
                        (h.cmsg_len as usize).saturating_sub(hdr_len) / mem::size_of::<RawFd>();
                    // SAFETY: CMSG_DATA points at the payload of `c`, which holds
                    // `count` descriptors.
                    let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
                    for i in 0..count {
                        // SAFETY: `i < count`, within the payload (see above);
                        // unaligned read as cmsg data may be unaligned.
                        let raw = unsafe { ptr::read_unaligned(data.add(i)) };
                        // SAFETY: the kernel just installed `raw` in our fd table for
                        // this message; nobody else owns it, we take it exactly once.
                        out.fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                    }
                }
                // SAFETY: as for CMSG_FIRSTHDR.
                c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
            }
        }
        return Ok(out);
    }
}

// ---------------------------------------------------------------- send

/// Blocks `SIGPIPE` in the calling thread for the duration of a pipe write and
/// swallows the `SIGPIPE` that a write to a closed pipe raises, so the process is
/// not killed even when the host left `SIGPIPE` at its default action. The same
/// technique as libgit2 and libcurl use on platforms without `MSG_NOSIGNAL`
/// for pipes. (A `SIGPIPE` sent by `kill` to the whole process in exactly that
/// window could be swallowed too; that is the documented price.)
struct SigpipeGuard {
    old: libc::sigset_t,
    /// SIGPIPE was already blocked and pending before our write: not ours.
    keep_pending: bool,
    /// SIGPIPE was already blocked by the caller.
    was_blocked: bool,
}

fn sigpipe_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        set
    }
}

impl SigpipeGuard {
    fn new() -> SigpipeGuard {
        let set = sigpipe_set();
        // SAFETY: zeroed sigset_t is a valid out-parameter.
        let mut old: libc::sigset_t = unsafe { mem::zeroed() };
        // SAFETY: valid pointers to initialised/out sigsets; SIG_BLOCK only adds.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
        // SAFETY: `old` was filled by pthread_sigmask.
        let was_blocked = unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 1;
        let mut keep_pending = false;
        if was_blocked {
            // SAFETY: zeroed out-parameter for sigpending.
            let mut pending: libc::sigset_t = unsafe { mem::zeroed() };
            // SAFETY: valid out-pointer; sigismember reads the filled set.
            keep_pending = unsafe {
                libc::sigpending(&mut pending) == 0
                    && libc::sigismember(&pending, libc::SIGPIPE) == 1
            };
        }
        SigpipeGuard {
            old,
            keep_pending,
            was_blocked,
        }
    }

    /// Restores the mask, first consuming the `SIGPIPE` our write raised.
    fn finish(self, raised: bool) {
        if raised && !self.keep_pending {
            let set = sigpipe_set();
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            loop {
                // SAFETY: valid set and timeout; a null siginfo is allowed.
                let r = unsafe { libc::sigtimedwait(&set, ptr::null_mut(), &zero) };
                if r >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
        }
        if !self.was_blocked {
            // SAFETY: restores the mask saved in `new`.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, ptr::null_mut()) };
        }
    }
}

fn iov(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

/// Set once a kernel refuses `RWF_NOWAIT` on a non-socket fd (before Linux
/// 5.x pipes did not take it); later non-blocking writes then flip
/// `O_NONBLOCK` around the write instead.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// `RWF_NOSIGNAL` (Linux 6.15, `include/uapi/linux/fs.h`; not in `libc` yet):
/// a write to a pipe without readers fails with `EPIPE` and raises no
/// `SIGPIPE`, as `MSG_NOSIGNAL` does for sockets. Older kernels refuse the
/// unknown flag with `EOPNOTSUPP` before doing anything.
const RWF_NOSIGNAL: libc::c_int = 0x0000_0100;

/// Set once a kernel refuses [`RWF_NOSIGNAL`]; later pipe writes then take
/// the [`SigpipeGuard`] (two `pthread_sigmask` calls per send) instead.
static NOSIGNAL_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// One `sendmsg(MSG_NOSIGNAL)` (sockets; `send` for one buffer without
/// descriptors) or `writev`/`pwritev2` (others) of `a` then `b` (`b` empty:
/// one iovec), with optional descriptors attached (sockets only). EINTR
/// retried.
///
/// With `nowait` the write never blocks, whatever the fd's `O_NONBLOCK`:
/// `MSG_DONTWAIT` on sockets, `pwritev2(RWF_NOWAIT)` on pipes. It then writes
/// what fits now (possibly part) or fails with `WouldBlock`.
///
/// With `nosignal` (non-sockets) the write is `pwritev2` with
/// [`RWF_NOSIGNAL`]; a kernel without it fails with `EOPNOTSUPP` having
/// written nothing, and the caller falls back to the [`SigpipeGuard`].
fn write_once(
    fd: BorrowedFd<'_>,
    socket: bool,
    a: &[u8],
    b: &[u8],
    fds: &[RawFd],
    nowait: bool,
    nosignal: bool,
) -> io::Result<usize> {
    let iovs = [iov(a), iov(b)];
    let cnt = if b.is_empty() { 1 } else { 2 };
    let mut cmsg = if fds.is_empty() {
        None
    } else {
        Some(CmsgBuf::new())
    };
    loop {
        let r = if socket && cmsg.is_none() && cnt == 1 {
            let flags = libc::MSG_NOSIGNAL | if nowait { libc::MSG_DONTWAIT } else { 0 };
            // SAFETY: `a` is a live borrowed slice; the kernel only reads it.
            // `send` skips the copy-in of a msghdr and its iovec array.
            unsafe { libc::send(fd.as_raw_fd(), a.as_ptr().cast(), a.len(), flags) }
        } else if socket {
            // SAFETY: msghdr is plain data; all-zero is a valid empty header.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = iovs.as_ptr().cast_mut();
            msg.msg_iovlen = cnt as _;
            if let Some(c) = cmsg.as_mut() {
                let payload = mem::size_of_val(fds);
                // SAFETY: size computations.
                let (space, len) = unsafe {
                    (
                        libc::CMSG_SPACE(payload as libc::c_uint) as usize,
                        libc::CMSG_LEN(payload as libc::c_uint) as usize,
                    )
                };
                msg.msg_control = c.0.as_mut_ptr().cast();
                msg.msg_controllen = space as _;
                // SAFETY: the buffer holds CMSG_SPACE(MAX_FDS fds) >= `space`
                // bytes, aligned for cmsghdr; `fds.len() <= MAX_FDS` (checked by
                // the caller), so header and data fit.
                unsafe {
                    let h = libc::CMSG_FIRSTHDR(&msg);
                    (*h).cmsg_level = libc::SOL_SOCKET;
                    (*h).cmsg_type = libc::SCM_RIGHTS;
                    (*h).cmsg_len = len as _;
                    ptr::copy_nonoverlapping(
                        fds.as_ptr().cast::<u8>(),
                        libc::CMSG_DATA(h),
                        payload,
                    );
                }
            }
            let flags = libc::MSG_NOSIGNAL | if nowait { libc::MSG_DONTWAIT } else { 0 };
            // SAFETY: `msg` points to iovecs over live borrowed slices (the kernel
            // only reads them) and to the control buffer built above.
            unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) }
        } else if nosignal || (nowait && !NOWAIT_UNSUPPORTED.load(Ordering::Relaxed)) {
            let flags =
                if nowait { libc::RWF_NOWAIT } else { 0 } | if nosignal { RWF_NOSIGNAL } else { 0 };
            // SAFETY: iovecs over live borrowed slices; the kernel only reads.
            // Offset -1 writes at the current position, as `writev`.
            let r = unsafe { libc::pwritev2(fd.as_raw_fd(), iovs.as_ptr(), cnt, -1, flags) };
            if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
                if nosignal {
                    // Any kernel with RWF_NOSIGNAL takes RWF_NOWAIT on pipes
                    // too: the refusal is RWF_NOSIGNAL's. The caller retries
                    // under the guard (and learns RWF_NOWAIT's fate then).
                    return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
                }
                NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                continue;
            }
            r
        } else if nowait {
            writev_nonblock(fd, &iovs[..cnt as usize])
        } else {
            // SAFETY: iovecs over live borrowed slices; the kernel only reads.
            unsafe { libc::writev(fd.as_raw_fd(), iovs.as_ptr(), cnt) }
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `writev` with `O_NONBLOCK` set on the file description for the call and
/// restored after: the fallback for kernels whose pipes refuse `RWF_NOWAIT`.
/// Returns the raw result; errno is left as the write set it.
fn writev_nonblock(fd: BorrowedFd<'_>, iovs: &[libc::iovec]) -> isize {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we borrow; no memory involved.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    let set = flags >= 0 && flags & libc::O_NONBLOCK == 0;
    if set {
        // SAFETY: as above.
        unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }
    // SAFETY: iovecs over live borrowed slices; the kernel only reads.
    let r = unsafe { libc::writev(raw, iovs.as_ptr(), iovs.len() as libc::c_int) };
    if set {
        let e = io::Error::last_os_error();
        // SAFETY: as above; restores the flags read before.
        unsafe { libc::fcntl(raw, libc::F_SETFL, flags) };
        if r < 0 {
            // Keep the write's errno for the caller.
            // SAFETY: `__errno_location` is this thread's errno slot.
            unsafe { *libc::__errno_location() = e.raw_os_error().unwrap_or(0) };
        }
    }
    r
}

/// The lean path of a small blocking send on a pipe: one
/// `pwritev2(RWF_NOSIGNAL)` of the whole frame `buf` (one iovec), EINTR
/// retried. Returns the bytes written, or `None` when this path does not
/// apply (the kernel refused `RWF_NOSIGNAL` before) or the write failed for
/// any other reason: nothing was written then, and the caller takes
/// [`write_all2`], which repeats the write and handles the failure (`EPIPE`
/// again without a signal, `EAGAIN` on an `O_NONBLOCK` fd by `poll`,
/// `EOPNOTSUPP` by falling back to the [`SigpipeGuard`]).
///
/// While `SIGPIPE` is ignored (see [`SigpipeWatch`]) the write is a plain
/// `write`: a closed pipe then fails it with `EPIPE` and raises nothing, and
/// `write` costs the kernel about 50 ns less than any vectored write (no
/// iovec to import), a quarter of a small frame's whole cost.
#[inline]
pub(crate) fn write_pipe_fast(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    sigpipe: &mut SigpipeWatch,
) -> Option<usize> {
    let plain = sigpipe.ignored();
    if !plain && NOSIGNAL_UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let v = iov(buf);
    loop {
        let r = if plain {
            // SAFETY: `buf` is a live borrowed slice of `buf.len()` bytes; the
            // kernel only reads it.
            unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }
        } else {
            // SAFETY: one iovec over a live borrowed slice; the kernel only
            // reads it. Offset -1 writes at the current position, as `writev`.
            unsafe { libc::pwritev2(fd.as_raw_fd(), &v, 1, -1, RWF_NOSIGNAL) }
        };
        if r >= 0 {
            return Some(r as usize);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Sends between two reads of `SIGPIPE`'s disposition by a [`SigpipeWatch`].
pub(crate) const SIGPIPE_RECHECK: u32 = 64;

/// A pipe writer's knowledge of whether `SIGPIPE` is ignored (`SIG_IGN`, as
/// Rust's runtime and CPython set it at startup), read with `sigaction` on
/// the first send and again every [`SIGPIPE_RECHECK`] sends: one system call
/// per 64 sends instead of a vectored write's extra cost on each.
///
/// The disposition is process-wide and a program may change it at any time:
/// a change from ignored back to the default action is seen within
/// [`SIGPIPE_RECHECK`] sends of each writer. Until then, a write to a pipe
/// whose reader is gone would raise the `SIGPIPE` the program just asked
/// for; that window, documented on the senders, is the price of the fast
/// path. A thread that blocks `SIGPIPE` while it is ignored may find one
/// pending after such a write (the kernel queues blocked signals even when
/// ignored); it is discarded when unblocked.
#[derive(Debug, Default)]
pub(crate) struct SigpipeWatch {
    /// Sends left before the disposition is read again (0: read it now).
    left: u32,
    /// What the last read said.
    ignored: bool,
}

impl SigpipeWatch {
    /// Whether `SIGPIPE` is ignored, as last read (reading it again when due).
    #[inline]
    pub(crate) fn ignored(&mut self) -> bool {
        if self.left == 0 {
            self.ignored = sigpipe_ignored();
            self.left = SIGPIPE_RECHECK;
        }
        self.left -= 1;
        self.ignored
    }
}

/// Reads `SIGPIPE`'s disposition: `true` when it is `SIG_IGN`. A failing
/// `sigaction` says `false` (the safe answer).
fn sigpipe_ignored() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is writable storage for
    // one `sigaction`, zero-initialised and filled on success.
    let r = unsafe { libc::sigaction(libc::SIGPIPE, ptr::null(), old.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled by a successful call.
    r == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// Why [`write_all2`] stopped.
#[derive(Debug)]
pub(crate) enum WriteFail {
    /// The deadline passed while the fd had no room.
    Timeout,
    /// The OS refused the write.
    Io(io::Error),
}

/// Writes all of `a` then `b` (header then payload, no copy into a temporary
/// buffer), descriptors attached to the first write. Never raises `SIGPIPE`
/// (and never leaves one pending): sockets use `MSG_NOSIGNAL`, pipes
/// `RWF_NOSIGNAL` where the kernel has it (Linux 6.15+; one syscall per write,
/// no signal ever raised, whatever the disposition or mask, even one another
/// thread changes meanwhile), and otherwise, as other fds, the [`SigpipeGuard`].
///
/// `deadline == None` blocks as long as the peer has no room (plain blocking
/// writes; an `O_NONBLOCK` fd is waited on with `poll`). With a deadline each
/// write is non-blocking and, while the fd is full, `poll(POLLOUT)` waits
/// against it; once it passes the call stops with [`WriteFail::Timeout`].
/// Partial writes are continued either way.
///
/// On failure returns why and how many bytes had been written: 0 means none
/// of this frame reached the fd.
pub(crate) fn write_all2(
    fd: BorrowedFd<'_>,
    kind: FdKind,
    a: &[u8],
    b: &[u8],
    fds: &[RawFd],
    deadline: Option<Instant>,
) -> Result<(), (WriteFail, usize)> {
    let socket = kind.is_socket();
    let mut nosignal = kind == FdKind::Pipe && !NOSIGNAL_UNSUPPORTED.load(Ordering::Relaxed);
    let mut guard = if socket || nosignal {
        None
    } else {
        Some(SigpipeGuard::new())
    };
    let total = a.len() + b.len();
    let mut done = 0;
    let mut fds = fds;
    let res = loop {
        let (x, y) = if done < a.len() {
            (&a[done..], b)
        } else {
            (&b[done - a.len()..], &[][..])
        };
        match write_once(fd, socket, x, y, fds, deadline.is_some(), nosignal) {
            Ok(n) => {
                if n > 0 {
                    fds = &[];
                }
                let header_was_pending = done < a.len();
                done += n;
                if done >= total {
                    break Ok(());
                }
                if header_was_pending && done >= a.len() {
                    // The frame's header is on the wire, its body is not
                    // (all of it): a writer dying here cuts the frame.
                    ipc_failpoints::failpoint!("pipe.frame.header_written");
                }
            }
            Err(e) if nosignal && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // No RWF_NOSIGNAL here (nothing was written by that call):
                // guard this and every later pipe write instead.
                NOSIGNAL_UNSUPPORTED.store(true, Ordering::Relaxed);
                nosignal = false;
                guard = Some(SigpipeGuard::new());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match poll_one(fd, POLLOUT, deadline) {
                    Ok(true) => {}
                    Ok(false) => break Err(WriteFail::Timeout),
                    Err(e) => break Err(WriteFail::Io(e)),
                }
            }
            Err(e) => break Err(WriteFail::Io(e)),
        }
    };
    if let Some(g) = guard {
        let raised = matches!(&res, Err(WriteFail::Io(e)) if e.raw_os_error() == Some(libc::EPIPE));
        g.finish(raised);
    }
    res.map_err(|e| (e, done))
}

// ---------------------------------------------------------------- files

/// Moves `from` to `to` unless `to` exists (`AlreadyExists` then):
/// `renameat2(RENAME_NOREPLACE)`, or on a filesystem without it (`EINVAL`)
/// `link` then `unlink`, which refuses an existing `to` the same way.
pub(crate) fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
    };
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: two valid NUL-terminated paths, alive for the call; AT_FDCWD
    // resolves them as `rename` would.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// `shutdown(SHUT_WR)`: the peer reads what was sent, then end of stream.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a plain call on a valid descriptor.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

// ---------------------------------------------------------------- FromRawFd
// The `unsafe fn` of `FromRawFd` lives here, the one module allowed `unsafe`.

macro_rules! from_raw_fd {
    ($($ty:ty),*) => {$(
        impl FromRawFd for $ty {
            /// Takes ownership of `fd`, as `From<OwnedFd>` does.
            ///
            /// # Safety
            /// - `fd` must be an open descriptor owned by the caller, which
            ///   gives up that ownership (it is closed when the handle drops).
            unsafe fn from_raw_fd(fd: RawFd) -> Self {
                // SAFETY: the caller hands over an open fd it owns (see above).
                <$ty>::from(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        }
    )*};
}

from_raw_fd!(crate::Connection, crate::Receiver, crate::Sender);

// ---------------------------------------------------------------- flags

/// Sets or clears `O_NONBLOCK` on `fd`'s file description (shared with every
/// duplicate of it, in this process and others) and returns whether it was
/// set before.
#[cfg(feature = "tokio")]
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<bool> {
    // SAFETY: F_GETFL on a descriptor we borrow; no memory involved.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let was = flags & libc::O_NONBLOCK != 0;
    if was != on {
        let new = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: F_SETFL with an integer argument on a descriptor we borrow.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) })?;
    }
    Ok(was)
}

// ---------------------------------------------------------------- reactor

/// A handle whose descriptor may be registered with tokio's reactor: it owns
/// one open fd from construction until it is consumed (its fd is taken only
/// by conversions that take the handle by value), and `as_raw_fd` always
/// returns that fd. Nothing outside the crate can reach a registered handle
/// mutably (the async wrappers hand out `&` only), so it cannot be swapped
/// for another while registered.
#[cfg(feature = "tokio")]
pub(crate) trait Registrable: AsRawFd {}

#[cfg(feature = "tokio")]
impl Registrable for crate::Connection {}
#[cfg(feature = "tokio")]
impl Registrable for crate::Receiver {}
#[cfg(feature = "tokio")]
impl Registrable for crate::Sender {}
#[cfg(feature = "tokio")]
impl Registrable for crate::Listener {}
#[cfg(all(feature = "tokio", feature = "auth"))]
impl Registrable for crate::auth::Handshake {}

/// Registers `inner`'s fd with the current tokio runtime's reactor.
///
/// # Panics
/// Outside a tokio runtime with I/O enabled (tokio's own panic).
#[cfg(feature = "tokio")]
pub(crate) fn register<T: Registrable>(
    inner: T,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: a `Registrable` owns one open fd for as long as it lives and
    // always reports that one (see the trait); the `AsyncFd` owns `inner`,
    // and the crate never replaces it through `get_mut` (only `&mut` calls
    // of its own methods, which keep the fd), so the fd stays open and the
    // same until the `AsyncFd` drops or gives `inner` back.
    match unsafe { tokio::io::unix::AsyncFd::register_with_interest(inner, interest) } {
        Ok(fd) => Ok(fd),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------- randomness

/// Fills `buf` from the kernel's random source (`getrandom(2)`, blocking only
/// until the pool is first initialised at boot), EINTR retried, short reads
/// continued.
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable slice of `rest.len()` bytes; the
        // kernel writes at most that many.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn o_nonblock(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFL on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) & libc::O_NONBLOCK != 0 }
    }

    /// Fills a pipe with deadline-bounded writes until `Timeout`; nothing is
    /// cut and the fd's flags are as before.
    fn fill_pipe() {
        let (r, w) = pipe().unwrap();
        let chunk = [3u8; 1000];
        let mut written = 0;
        loop {
            match write_all2(
                w.as_fd(),
                FdKind::Pipe,
                &chunk,
                &[],
                &[],
                Some(Instant::now()),
            ) {
                Ok(()) => written += chunk.len(),
                Err((WriteFail::Timeout, 0)) => break,
                Err((e, done)) => panic!("{e:?} after {done} bytes"),
            }
            assert!(written < 64 << 20, "pipe never filled");
        }
        assert!(!o_nonblock(w.as_fd()));
        let mut n = 0;
        assert!(ioctl_fionread(r.as_fd(), &mut n));
        assert_eq!(n, written);
    }

    fn ioctl_fionread(fd: BorrowedFd<'_>, n: &mut usize) -> bool {
        let mut v: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the valid pointer.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut v) };
        *n = v as usize;
        r == 0
    }

    /// In a forked child with `SIGPIPE` at its default action (which kills),
    /// writes to a pipe whose reader is gone, blocking and bounded, through
    /// `RWF_NOSIGNAL` or (`force_guard`) the `SigpipeGuard` fallback: each
    /// must fail with `EPIPE`, leave no `SIGPIPE` pending and not kill.
    fn closed_pipe_child(force_guard: bool) {
        let (r, w) = pipe().unwrap();
        drop(r);
        // SAFETY: the child only makes syscalls and leaves with `_exit`;
        // `alarm` is its watchdog (SIGALRM kills it if it hangs).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: this process's own disposition, timer and flags.
            unsafe {
                libc::alarm(10);
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            NOSIGNAL_UNSUPPORTED.store(force_guard, Ordering::Relaxed);
            let mut code = 0;
            for deadline in [
                None,
                Some(Instant::now() + std::time::Duration::from_secs(5)),
            ] {
                match write_all2(w.as_fd(), FdKind::Pipe, b"hdr", b"payload", &[], deadline) {
                    Err((WriteFail::Io(e), 0)) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    _ => code = 2,
                }
            }
            if NOSIGNAL_UNSUPPORTED.load(Ordering::Relaxed) != force_guard {
                code = 3;
            }
            // SAFETY: sigpending fills a zeroed set we own.
            let pending = unsafe {
                let mut set: libc::sigset_t = mem::zeroed();
                libc::sigpending(&mut set);
                libc::sigismember(&set, libc::SIGPIPE) == 1
            };
            if pending {
                code = 4;
            }
            // SAFETY: leaves the forked child without returning into the harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x} (force_guard {force_guard})"
        );
    }

    #[test]
    fn closed_pipe_write_is_epipe_without_sigpipe() {
        closed_pipe_child(false);
    }

    #[test]
    fn closed_pipe_write_is_epipe_without_sigpipe_under_guard_fallback() {
        closed_pipe_child(true);
    }

    #[test]
    fn bounded_pipe_writes_with_and_without_rwf_nowait() {
        fill_pipe();
        // The fallback for kernels without RWF_NOWAIT on pipes.
        NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
        fill_pipe();
        NOWAIT_UNSUPPORTED.store(false, Ordering::Relaxed);
    }

    /// A `dontwait` read of an empty blocking pipe returns `WouldBlock` at
    /// once (the spin of a blocking receive), leaves the fd blocking, and
    /// reads what is there once something is.
    #[test]
    fn dontwait_pipe_read_never_sleeps() {
        let (r, w) = pipe().unwrap();
        let mut buf = [0u8; 16];
        match read2(r.as_fd(), false, None, &mut buf, None, true) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            Ok(got) => panic!("read {} bytes of an empty pipe", got.n),
        }
        assert!(!o_nonblock(r.as_fd()));
        write_all2(w.as_fd(), FdKind::Pipe, b"abc", &[], &[], None).unwrap();
        let got = read2(r.as_fd(), false, None, &mut buf, None, true).unwrap();
        assert_eq!(&buf[..got.n], b"abc");
        drop(w);
        // End of stream is a 0-byte read, not WouldBlock.
        let got = read2(r.as_fd(), false, None, &mut buf, None, true).unwrap();
        assert_eq!(got.n, 0);
    }
}
