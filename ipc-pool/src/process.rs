//! [`Process`]: a forked child running a closure (Python's `multiprocessing.Process` with the
//! `fork` start method), watched through a pidfd.
//!
//! Reaping rule: a child is only ever waited for by its own pidfd (`waitid(P_PIDFD)`). A handle
//! dropped while its child still runs hands the pidfd to the crate's one reaper thread (started
//! on first need), which polls the pidfds it holds and reaps each child as it exits; so no
//! handle ever leaves a zombie, and no other code's children are touched.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::sys::{self, Fork, Status};
use crate::{Error, Result};

/// Exit code of a child whose closure panicked (Python exits 1 on an uncaught exception).
pub const PANIC_EXIT_CODE: i32 = 1;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WARNED_THREADS: AtomicBool = AtomicBool::new(false);

/// What [`ProcessBuilder::spawn`] does when the calling process already runs other threads.
///
/// A forked child holds a copy of every lock as it was at the fork: a lock that another thread
/// held then stays locked forever in the child (the allocator is made safe by glibc, but a
/// `Mutex`, stdout, a logger or a thread pool's queue are not). Code run in such a child must
/// not touch state other threads may have locked. The [`Pool`](crate::Pool) avoids the problem
/// with its fork server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThreadPolicy {
    /// Fork anyway, silently.
    Allow,
    /// Fork, and print one warning per process to stderr the first time it happens.
    #[default]
    Warn,
    /// Refuse: `spawn` fails with an `Io` error of kind `Unsupported`.
    Refuse,
}

/// The pid of the calling process (Python's `os.getpid()`).
pub fn current_pid() -> i32 {
    sys::getpid()
}

/// The pid of the calling process's parent (Python's `os.getppid()`); 1 (or a subreaper's pid)
/// once the parent has died and the process was adopted.
pub fn parent_pid() -> i32 {
    sys::getppid()
}

/// The number of threads of the calling process, from `/proc/self/task` (`None` if `/proc` is
/// unreadable). Forking is only safe for arbitrary code in the child when this is 1.
pub fn thread_count() -> Option<usize> {
    sys::thread_count()
}

/// Leaves a child process at once with `code`: flushes `stdout`, then `_exit`s (no destructors
/// of the parent's state, no `atexit` handlers run twice). Python's `sys.exit(code)` in a
/// `Process` target.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    sys::exit_now(code)
}

/// Configures a [`Process`] before it is spawned (Python's `Process(name=..., daemon=...)`).
#[derive(Clone, Debug, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: bool,
    threads: ThreadPolicy,
}

impl ProcessBuilder {
    /// A name for the child, kept in the handle (default `Process-N`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child gets `PR_SET_PDEATHSIG(SIGKILL)`: it is killed when the thread that
    /// spawned it exits (and so when the parent process dies, even by `SIGKILL`), so it never
    /// outlives its parent as an orphan. Note that the kernel ties this to the spawning
    /// *thread*: spawn daemons from a thread that lives as long as they should.
    #[must_use]
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// What to do if the process is multithreaded at spawn time (default
    /// [`ThreadPolicy::Warn`]).
    #[must_use]
    pub fn if_multithreaded(mut self, policy: ThreadPolicy) -> Self {
        self.threads = policy;
        self
    }

    /// Forks; the child runs `f` under `catch_unwind` and leaves with `_exit`: code 0 when `f`
    /// returns, [`PANIC_EXIT_CODE`] when it panics (the panic hook has printed the message to
    /// stderr). The child never returns into the caller and never runs the parent's
    /// destructors or `atexit` handlers; it flushes `stdout` before leaving.
    ///
    /// The child inherits what a `fork` gives: a copy of the memory, the shared mappings,
    /// and every open fd of the parent (no close-on-exec applies), including the ends of pipes
    /// and sockets other code holds. A reader waiting for a writer's end of stream only sees
    /// it once every process holding the write end has closed it: drop the ends a child does
    /// not need inside `f`, or create them after spawning it. (Pool workers and fork servers
    /// close all inherited fds instead.) `stdout`'s and `stderr`'s locks are taken across the
    /// fork, so a thread holding one delays `spawn` until it lets go.
    ///
    /// `f` must be `Send`, as for `std::thread::spawn`: the child runs it on its own copy of
    /// the parent's memory, but what lives in shared memory (an `ipc_shm::Value`, a mapped
    /// segment) is shared, and a `!Send` guard of it would let the child write through it while
    /// the parent still holds the same lock. `f` needs no `'static` bound: the parent drops its
    /// copy of `f` without calling it.
    ///
    /// A guard cannot be captured:
    /// ```compile_fail,E0277
    /// let v = ipc_shm::Value::new(0u64).unwrap();
    /// let mut guard = v.lock().unwrap();
    /// let held = &mut guard;
    /// // `ValueGuard` is `!Send`: the child would write while the parent holds the lock.
    /// let mut p = ipc_pool::Process::spawn(move || **held += 1).unwrap();
    /// *guard += 1;
    /// p.join().unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if `fork` or `pidfd_open` fails (`EAGAIN` at the process limit), or if
    /// the process is multithreaded under [`ThreadPolicy::Refuse`].
    ///
    /// # Panics
    /// Never in the parent; a panic in `f` ends the child with [`PANIC_EXIT_CODE`].
    #[allow(unsafe_code)]
    pub fn spawn<F: FnOnce() + Send>(self, f: F) -> Result<Process> {
        check_threads(self.threads)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.unwrap_or_else(|| format!("Process-{id}"));
        let parent = sys::getpid();
        // SAFETY: the child only runs `run_child`, which calls `f` (the caller's code, warned
        // about multithreaded forks by `check_threads`) and leaves with `_exit`.
        match unsafe { fork_stdio_quiesced() }? {
            Fork::Child => run_child(f, self.daemon, parent),
            Fork::Parent(pid) => {
                drop(f);
                let pidfd = match sys::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        // Without a pidfd we cannot watch it: kill and reap it by its own
                        // pid (still ours: it is unreaped), then report the error.
                        sys::kill_and_reap_pid(pid);
                        return Err(e.into());
                    }
                };
                Ok(Process {
                    pid,
                    name,
                    daemon: self.daemon,
                    pidfd: Some(pidfd),
                    status: None,
                })
            }
        }
    }
}

/// `fork` with `stdout`'s and `stderr`'s locks held by the calling thread across it, so that
/// no other thread holds them at the fork (as glibc takes its own stdio locks around `fork`).
/// A child forked while another thread held one would find it locked forever: its first
/// `println!`, its panic message and [`exit`]'s flush would hang. The child's copy of the
/// guards belongs to the child's one thread (a copy of the forking thread, with the same
/// thread id), so both processes release them as the guards drop.
///
/// A thread that holds `stdout().lock()` for long delays the fork until it lets go.
///
/// # Safety
/// As [`sys::fork`].
#[allow(unsafe_code)]
pub(crate) unsafe fn fork_stdio_quiesced() -> std::io::Result<Fork> {
    let out = std::io::stdout().lock();
    let err = std::io::stderr().lock();
    // SAFETY: the caller upholds `sys::fork`'s contract.
    let r = unsafe { sys::fork() };
    drop(err);
    drop(out);
    r
}

fn check_threads(policy: ThreadPolicy) -> Result<()> {
    if policy == ThreadPolicy::Allow {
        return Ok(());
    }
    let n = sys::thread_count().unwrap_or(1);
    if n <= 1 {
        return Ok(());
    }
    match policy {
        ThreadPolicy::Refuse => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("refusing to fork a process that runs {n} threads"),
        ))),
        _ => {
            if !WARNED_THREADS.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "ipc_pool: warning: forking a process that runs {n} threads; the child \
                     must not use locks other threads may hold (see ipc_pool docs)"
                );
            }
            Ok(())
        }
    }
}

fn run_child<F: FnOnce()>(f: F, daemon: bool, parent: i32) -> ! {
    if daemon {
        // Set the death signal, then check the parent did not die before it took effect.
        if sys::set_parent_death_signal(libc::SIGKILL).is_err() || sys::getppid() != parent {
            sys::exit_now(PANIC_EXIT_CODE);
        }
    }
    let code = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => 0,
        Err(_) => PANIC_EXIT_CODE,
    };
    exit(code)
}

/// A child process running a closure (Python's `multiprocessing.Process`).
///
/// Made by [`Process::spawn`] or [`Process::builder`]. The handle owns a pidfd of the child:
/// [`join`](Self::join) reaps it through that pidfd, [`sentinel`](Self::sentinel) lends it for
/// polling (`ipc_pipe::wait`), and [`terminate`](Self::terminate)/[`kill`](Self::kill) signal
/// exactly this child even if its pid were reused. Dropping an unjoined handle never leaves a
/// zombie: a finished child is reaped at once, a running one is handed to the reaper thread.
///
/// # Example
/// ```
/// use ipc_pool::Process;
///
/// let mut p = Process::spawn(|| println!("hello from {}", ipc_pool::current_pid()))?;
/// let status = p.join()?;
/// assert!(status.success());
///
/// let mut q = Process::spawn(|| panic!("boom"))?;
/// q.join()?;
/// assert_eq!(q.exitcode(), Some(ipc_pool::PANIC_EXIT_CODE));
/// # Ok::<(), ipc_pool::Error>(())
/// ```
pub struct Process {
    pid: i32,
    name: String,
    daemon: bool,
    pidfd: Option<OwnedFd>,
    status: Option<Status>,
}

impl Process {
    /// Forks a child that runs `f`, with the default settings
    /// ([`ProcessBuilder::spawn`]).
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    pub fn spawn<F: FnOnce() + Send>(f: F) -> Result<Process> {
        Process::builder().spawn(f)
    }

    /// A builder for a named or daemon child.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The name given at spawn (or `Process-N`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child was spawned as a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    fn reap(&mut self, nohang: bool) -> Result<Option<Status>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let Some(fd) = self.fd() else {
            return Ok(None);
        };
        let s = sys::waitid_pidfd(fd, nohang)?;
        if s.is_some() {
            self.status = s;
        }
        Ok(s)
    }

    /// Waits for the child to end and reaps it.
    ///
    /// # Errors
    /// [`Error::Io`] if `waitid` fails (it does not for our own child).
    pub fn join(&mut self) -> Result<ExitStatus> {
        match self.reap(false)? {
            Some(s) => Ok(ExitStatus::from_raw(s.raw())),
            None => Err(Error::Io(std::io::Error::other("child vanished"))),
        }
    }

    /// [`join`](Self::join) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] if the child still runs after `timeout` (it is left running);
    /// [`Error::Io`] if `ppoll` or `waitid` fails.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(s) = self.reap(true)? {
                return Ok(ExitStatus::from_raw(s.raw()));
            }
            let Some(fd) = self.fd() else {
                return Err(Error::Timeout);
            };
            let mut p = [sys::pollin(fd.as_raw_fd())];
            if sys::poll(&mut p, deadline)? == 0 {
                return Err(Error::Timeout);
            }
        }
    }

    /// Whether the child still runs. A child found finished is reaped here.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.reap(true), Ok(None))
    }

    /// Python's `exitcode`: `None` while running (or not yet joined), the exit code once
    /// reaped, minus the signal number if a signal killed it. Reaps a finished child.
    pub fn exitcode(&mut self) -> Option<i32> {
        self.reap(true).ok().flatten().map(Status::exitcode)
    }

    /// Sends `SIGTERM` through the pidfd (Python's `terminate()`).
    ///
    /// # Errors
    /// [`Error::Io`] if `pidfd_send_signal` fails; a child that already exited is not an error.
    pub fn terminate(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Sends `SIGKILL` through the pidfd (Python's `kill()`).
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `sig` to the child through its pidfd.
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match self.fd() {
            Some(fd) => Ok(sys::pidfd_signal(fd, sig)?),
            None => Ok(()),
        }
    }

    /// The child's pidfd: readable once the child has exited, for `poll`/`ipc_pipe::wait`
    /// (Python's `sentinel`). It stays valid until the handle is dropped.
    ///
    /// # Panics
    /// Never: every `Process` holds its pidfd for its whole life.
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        match &self.pidfd {
            Some(fd) => fd.as_fd(),
            None => unreachable!("a Process always holds its pidfd until drop"),
        }
    }
}

impl AsFd for Process {
    /// The pidfd, as [`sentinel`](Process::sentinel).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sentinel()
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("exitcode", &self.status.map(Status::exitcode))
            .finish()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if let Ok(Some(_)) = self.reap(true) {
            return;
        }
        if let Some(fd) = self.pidfd.take() {
            reaper().adopt(fd);
        }
    }
}

// ------------------------------------------------------------------ reaper

/// The background thread that reaps children whose handles were dropped while they ran.
/// It holds their pidfds, polls them with an eventfd doorbell, and `waitid`s each as it exits.
///
/// One per process: a forked child inherits the parent's `Reaper` without its thread (and
/// perhaps with its `pending` lock held by a thread that does not exist in the child), so
/// every reaper records the pid that made it, and a process that finds another pid's reaper
/// makes its own (the inherited one is left alone: its fds are among those a fork inherits).
pub(crate) struct Reaper {
    pid: i32,
    pending: Mutex<Vec<OwnedFd>>,
    bell: OwnedFd,
    /// Whether its thread started; without one, `adopt` waits in the caller.
    running: AtomicBool,
}

/// The current process's reaper (or that of a parent that forked us: see [`Reaper`]). Only
/// ever holds a pointer from `Box::leak`, never freed.
static REAPER: AtomicPtr<Reaper> = AtomicPtr::new(std::ptr::null_mut());

fn reaper_at(p: *mut Reaper) -> Option<&'static Reaper> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null values of REAPER come only from `Box::leak` in `reaper` and are never
    // freed, so `p` is valid for 'static and only shared references are made from it.
    #[allow(unsafe_code)]
    let r = unsafe { &*p };
    Some(r)
}

fn reaper() -> Reaper2 {
    let me = sys::getpid();
    loop {
        let cur = REAPER.load(Ordering::Acquire);
        if let Some(r) = reaper_at(cur).filter(|r| r.pid == me) {
            return Reaper2(Some(r));
        }
        let Ok(bell) = sys::eventfd() else {
            return Reaper2(None);
        };
        let fresh = Box::new(Reaper {
            pid: me,
            pending: Mutex::new(Vec::new()),
            bell,
            running: AtomicBool::new(true),
        });
        let fresh: &'static Reaper = Box::leak(fresh);
        let fresh_ptr = std::ptr::from_ref(fresh).cast_mut();
        if REAPER
            .compare_exchange(cur, fresh_ptr, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another thread installed one first: free ours and use that.
            drop_unpublished(fresh);
            continue;
        }
        let started = std::thread::Builder::new()
            .name("ipc-pool-reaper".into())
            .spawn(move || fresh.run())
            .is_ok();
        if !started {
            fresh.running.store(false, Ordering::Release);
        }
        return Reaper2(Some(fresh));
    }
}

/// Frees a reaper that lost the race to be published (nobody else ever saw it).
fn drop_unpublished(r: &'static Reaper) {
    let p = std::ptr::from_ref(r).cast_mut();
    // SAFETY: `r` came from `Box::leak` in `reaper` and its compare-exchange failed, so no
    // other reference to it exists; turning it back into the Box frees it once.
    #[allow(unsafe_code)]
    drop(unsafe { Box::from_raw(p) });
}

/// The reaper, or the fallback when it could not start.
pub(crate) struct Reaper2(Option<&'static Reaper>);

impl Reaper2 {
    /// Takes over the pidfd of a running child of ours and reaps it when it exits.
    pub(crate) fn adopt(&self, pidfd: OwnedFd) {
        match self.0 {
            Some(r) if r.running.load(Ordering::Acquire) => {
                r.pending.lock().push(pidfd);
                sys::eventfd_ring(r.bell.as_fd());
            }
            Some(r) => {
                // Its thread could not start: wait here (and for anything queued meanwhile)
                // rather than leak a zombie.
                let queued = std::mem::take(&mut *r.pending.lock());
                for fd in queued.iter().chain(std::iter::once(&pidfd)) {
                    let _ = sys::waitid_pidfd(fd.as_fd(), false);
                }
            }
            None => {
                let _ = sys::waitid_pidfd(pidfd.as_fd(), false);
            }
        }
    }
}

impl Reaper {
    fn run(&self) {
        let mut held: Vec<OwnedFd> = Vec::new();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            held.append(&mut self.pending.lock());
            // Reap everything that has exited.
            held.retain(|fd| !matches!(sys::waitid_pidfd(fd.as_fd(), true), Ok(Some(_)) | Err(_)));
            fds.clear();
            fds.push(sys::pollin(self.bell.as_raw_fd()));
            fds.extend(held.iter().map(|fd| sys::pollin(fd.as_raw_fd())));
            if sys::poll(&mut fds, None).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
            if fds[0].revents != 0 {
                sys::eventfd_drain(self.bell.as_fd());
            }
        }
    }
}
