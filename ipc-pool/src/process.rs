//! [`Process`]: a forked child running a closure (Python's `multiprocessing.Process` with the
//! `fork` start method), watched through a pidfd.
//!
//! Reaping rule: a child is only ever waited for by its own pidfd (`waitid(P_PIDFD)`). A handle
//! dropped while its child still runs hands the pidfd to the crate's one reaper thread (started
//! on first need), which polls the pidfds it holds and reaps each child as it exits; so no
//! handle ever leaves a zombie, and no other code's children are touched.

use std::convert::Infallible;
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(feature = "async")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sync::Mutex;
use crate::sys::{self, Fork, Status};
use crate::{Error, JoinTimeoutError, Result, TryJoinError};

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
    /// Refuse: `spawn` fails with [`Error::Multithreaded`].
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
    /// and sockets other code holds, except the result pipes of other
    /// [`ProcessHandle`]s, which it closes. A reader waiting for a writer's end of stream only
    /// sees it once every process holding the write end has closed it (see below for the
    /// parent's copy of what `f` captured). (Pool workers and fork servers close all inherited
    /// fds instead.) `stdout`'s and `stderr`'s locks are taken across the fork, so a thread
    /// holding one delays `spawn` until it lets go.
    ///
    /// # What happens to the values `f` captured
    /// The child gets its copy of `f` and owns it: it runs and drops it there. The parent's
    /// copy is not called and not dropped at `spawn`: the handle keeps it until the child has
    /// been reaped ([`Process::join`], [`Process::is_alive`] or [`Process::exitcode`] finding
    /// it ended, or the reaper thread after the handle is dropped), and drops it then, in the
    /// parent. So a named object moved into the child (an `ipc_shm::Value::create_named`, a
    /// `Listener`'s socket file) keeps its name for as long as the child runs and is unlinked
    /// by its creator afterwards, exactly once; fds and memory `f` captured are released in
    /// the parent when the child is reaped, never leaked. One consequence: the parent's copy
    /// of a pipe's write end moved into `f` stays open until the child is reaped, so a reader
    /// in the parent that waits for end of stream must join the child first (or use a message
    /// or a deadline to know the child is done).
    ///
    /// `f` must be `Send`, as for `std::thread::spawn`: the child runs it on its own copy of
    /// the parent's memory, but what lives in shared memory (an `ipc_shm::Value`, a mapped
    /// segment) is shared, and a `!Send` guard of it would let the child write through it while
    /// the parent still holds the same lock. `f` must be `'static` because the handle keeps it;
    /// a closure that borrows from the caller's stack is spawned through [`scope`], which
    /// waits for its children before the borrows end.
    ///
    /// A guard cannot be captured:
    /// ```compile_fail,E0277
    /// let v = ipc_shm::Value::new(0u64).unwrap();
    /// let guard = v.lock().unwrap();
    /// ipc_pool::scope(|s| {
    ///     // `ValueGuard` is `!Send`: the child would write while the parent holds the lock.
    ///     let mut p = s.spawn(|| drop(guard)).unwrap();
    ///     p.join().unwrap();
    /// });
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if `fork` or `pidfd_open` fails (`EAGAIN` at the process limit);
    /// [`Error::Multithreaded`] if the process is multithreaded under
    /// [`ThreadPolicy::Refuse`].
    ///
    /// # Panics
    /// Never in the parent; a panic in `f` ends the child with [`PANIC_EXIT_CODE`].
    pub fn spawn<F: FnOnce() + Send + 'static>(self, f: F) -> Result<Process> {
        let (daemon, parent) = (self.daemon, sys::getpid());
        let (name, forked) = self.fork_child(false, move |_| run_child(f, daemon, parent))?;
        Ok(Process::new(
            name,
            daemon,
            forked.pid,
            forked.pidfd,
            Box::new(forked.child),
        ))
    }

    /// Forks a child that runs `f` and sends its return value back to the parent, where
    /// [`ProcessHandle::join`] returns it (as `std::thread::JoinHandle<T>`, across processes).
    ///
    /// The value travels once, postcard-encoded, over a close-on-exec pipe made for this child
    /// alone: the parent keeps the read end (which later children of this process close at
    /// their start, so they hold no copy of it), the child the write end. A panic in `f` is
    /// [`Error::Panicked`] with its message; a child killed by a signal is [`Error::Killed`];
    /// one that left without a value ([`exit`] inside `f`) is [`Error::NoResult`]. Captured
    /// values are handled as by [`spawn`](Self::spawn).
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), and [`Error::Io`] if the pipe cannot be made.
    ///
    /// # Example
    /// ```
    /// use ipc_pool::Process;
    ///
    /// let mut h = Process::builder()
    ///     .name("summer")
    ///     .spawn_with_result(|| (1..=10u64).sum::<u64>())?;
    /// assert_eq!(h.join()?, 55);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn spawn_with_result<T, F>(self, f: F) -> Result<ProcessHandle<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T + Send + 'static,
    {
        let (daemon, parent) = (self.daemon, sys::getpid());
        let (name, forked) =
            self.fork_child(true, move |w| run_child_result(f, daemon, parent, w))?;
        let Some(rx) = forked.rx else {
            unreachable!("fork_child(true) makes the pipe")
        };
        let process = Process::new(
            name,
            daemon,
            forked.pid,
            forked.pidfd,
            Box::new(forked.child),
        );
        Ok(ProcessHandle {
            process,
            rx: Some(rx),
            buf: Vec::new(),
            owner: sys::getpid(),
            taken: false,
            _t: PhantomData,
        })
    }

    /// Forks; the child closes the result pipes of other handles and runs `child` with the
    /// write end of its own pipe (if `pipe`). The parent gets `child` back, uncalled, to keep.
    #[allow(unsafe_code)]
    #[allow(unreachable_code)] // `child` returns `Infallible` (it leaves with `_exit`).
    fn fork_child<G>(self, pipe: bool, child: G) -> Result<(String, Forked<G>)>
    where
        G: FnOnce(Option<OwnedFd>) -> Infallible,
    {
        check_threads(self.threads)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = self.name.unwrap_or_else(|| format!("Process-{id}"));
        // Held from the pipe's creation until the parent has closed its write end and
        // registered its read end, and across the fork: no other child of ours forks in
        // between with a copy of either end it does not know to close.
        let mut reg = RESULT_FDS.lock();
        let pipe = if pipe {
            Some(sys::result_pipe()?)
        } else {
            None
        };
        // SAFETY: the child only closes fds and runs `child` (which calls the caller's `f`,
        // warned about multithreaded forks by `check_threads`), and leaves with `_exit`.
        match unsafe { fork_stdio_quiesced() }? {
            Fork::Child => {
                // The read ends of other handles' pipes are the parent's: close our copies
                // (their handles are never dropped here, the child leaves with `_exit`).
                for fd in std::mem::take(&mut *reg) {
                    sys::close_fd(fd);
                }
                drop(reg);
                let w = pipe.map(|(r, w)| {
                    drop(r);
                    w
                });
                match child(w) {}
            }
            Fork::Parent(pid) => {
                let rx = pipe.map(|(r, w)| {
                    drop(w);
                    r
                });
                let pidfd = match sys::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        // Without a pidfd we cannot watch it: kill and reap it by its own
                        // pid (still ours: it is unreaped), then report the error.
                        sys::kill_and_reap_pid(pid);
                        return Err(e.into());
                    }
                };
                if let Some(r) = &rx {
                    reg.push(r.as_raw_fd());
                }
                drop(reg);
                Ok((
                    name,
                    Forked {
                        pid,
                        pidfd,
                        rx,
                        child,
                    },
                ))
            }
        }
    }
}

/// What [`ProcessBuilder::fork_child`] gives the parent.
struct Forked<G> {
    pid: i32,
    pidfd: OwnedFd,
    rx: Option<OwnedFd>,
    /// The parent's copy of the child's closure, uncalled.
    child: G,
}

/// The read ends of the result pipes that handles of this process hold; every child forked
/// by [`ProcessBuilder`] closes them first thing. Locked across those forks.
static RESULT_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

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
        ThreadPolicy::Refuse => Err(Error::Multithreaded { threads: n }),
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

/// The start of a child of [`ProcessBuilder`]: a daemon sets its death signal, then checks
/// the parent did not die before it took effect.
fn child_start(daemon: bool, parent: i32) {
    if daemon && (sys::set_parent_death_signal(libc::SIGKILL).is_err() || sys::getppid() != parent)
    {
        sys::exit_now(PANIC_EXIT_CODE);
    }
}

fn run_child<F: FnOnce()>(f: F, daemon: bool, parent: i32) -> Infallible {
    child_start(daemon, parent);
    let code = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => 0,
        Err(_) => PANIC_EXIT_CODE,
    };
    exit(code)
}

/// Result message status: the value follows.
const RES_OK: u8 = 0;
/// Result message status: `f` panicked; its message follows.
const RES_PANICKED: u8 = 1;
/// Result message status: the value did not encode; postcard's message follows.
const RES_ENCODE: u8 = 2;
/// Result message header: `len u64` (LE) of what follows the status byte, then the status.
const RES_HDR: usize = 9;

fn run_child_result<T, F>(f: F, daemon: bool, parent: i32, w: Option<OwnedFd>) -> Infallible
where
    T: Serialize,
    F: FnOnce() -> T,
{
    child_start(daemon, parent);
    let mut msg = vec![0u8; RES_HDR];
    let status = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => match crate::task::encode_onto(&v, &mut msg) {
            Ok(()) => RES_OK,
            Err(e) => {
                msg.truncate(RES_HDR);
                msg.extend_from_slice(e.to_string().as_bytes());
                RES_ENCODE
            }
        },
        Err(p) => {
            msg.extend_from_slice(crate::task::panic_message(&*p).as_bytes());
            RES_PANICKED
        }
    };
    let len = (msg.len() - RES_HDR) as u64;
    msg[..8].copy_from_slice(&len.to_le_bytes());
    msg[8] = status;
    if let Some(w) = w {
        // A parent that dropped its handle closed the read end: EPIPE, not a signal.
        sys::ignore_signal(libc::SIGPIPE);
        let _ = sys::write_all(w.as_fd(), &msg);
    }
    exit(if status == RES_OK { 0 } else { PANIC_EXIT_CODE })
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
    /// The parent's copy of the child's closure, dropped once the child is reaped (see
    /// [`ProcessBuilder::spawn`]). In a mutex only to keep `Process: Sync`.
    kept: Mutex<Option<Kept>>,
}

/// Something whose drop waits until a child is reaped: the parent's copy of its closure.
pub(crate) type Kept = Box<dyn Send>;

impl Process {
    /// Forks a child that runs `f`, with the default settings
    /// ([`ProcessBuilder::spawn`]).
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    pub fn spawn<F: FnOnce() + Send + 'static>(f: F) -> Result<Process> {
        Process::builder().spawn(f)
    }

    /// Forks a child that runs `f` and returns its value to [`ProcessHandle::join`], with the
    /// default settings ([`ProcessBuilder::spawn_with_result`]).
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn_with_result`].
    ///
    /// # Example
    /// ```
    /// use ipc_pool::{Error, Process};
    ///
    /// let mut h = Process::spawn_with_result(|| format!("child {}", ipc_pool::current_pid()))?;
    /// let pid = h.pid();
    /// assert_eq!(h.join()?, format!("child {pid}"));
    ///
    /// let mut p = Process::spawn_with_result(|| -> u32 { panic!("no value") })?;
    /// assert!(matches!(p.join(), Err(Error::Panicked(m)) if m == "no value"));
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn spawn_with_result<T, F>(f: F) -> Result<ProcessHandle<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> T + Send + 'static,
    {
        Process::builder().spawn_with_result(f)
    }

    fn new(name: String, daemon: bool, pid: i32, pidfd: OwnedFd, kept: Kept) -> Process {
        Process {
            pid,
            name,
            daemon,
            pidfd: Some(pidfd),
            status: None,
            kept: Mutex::new(Some(kept)),
        }
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
            // The child is gone: the parent's copy of what it captured goes now.
            drop(self.kept.get_mut().take());
        }
        Ok(s)
    }

    /// Waits for the child to end and reaps it. A child killed by a signal is not an error:
    /// its `ExitStatus` says which signal (`ExitStatusExt::signal`, and
    /// [`exitcode`](Self::exitcode) is minus its number).
    ///
    /// # Errors
    /// [`Error::Io`] if `waitid` fails (it does not for our own child).
    pub fn join(&mut self) -> Result<ExitStatus> {
        match self.reap(false)? {
            Some(s) => Ok(ExitStatus::from_raw(s.raw())),
            None => Err(Error::Io(std::io::Error::other("child vanished"))),
        }
    }

    /// [`join`](Self::join) if the child has ended, without waiting (it is reaped then).
    ///
    /// # Errors
    /// [`TryJoinError::Running`] if it still runs (nothing changed);
    /// [`TryJoinError::Failed`] with [`Error::Io`] if `waitid` fails.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::{Process, TryJoinError};
    ///
    /// let mut p = Process::spawn(|| std::thread::sleep(Duration::from_millis(200)))?;
    /// assert!(matches!(p.try_join(), Err(TryJoinError::Running)));
    /// assert!(p.join()?.success());
    /// assert!(p.try_join()?.success()); // already reaped: the same status again
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn try_join(&mut self) -> Result<ExitStatus, TryJoinError> {
        match self.reap(true).map_err(TryJoinError::Failed)? {
            Some(s) => Ok(ExitStatus::from_raw(s.raw())),
            None => Err(TryJoinError::Running),
        }
    }

    /// [`join`](Self::join) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`JoinTimeoutError::Timeout`] if the child still runs after `timeout` (it is left
    /// running; the handle stays usable); [`JoinTimeoutError::Failed`] with [`Error::Io`] if
    /// `ppoll` or `waitid` fails.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, JoinTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(s) = self.reap(true).map_err(JoinTimeoutError::Failed)? {
                return Ok(ExitStatus::from_raw(s.raw()));
            }
            let Some(fd) = self.fd() else {
                return Err(JoinTimeoutError::Timeout);
            };
            let mut p = [sys::pollin(fd.as_raw_fd())];
            let n = sys::poll(&mut p, deadline).map_err(|e| JoinTimeoutError::Failed(e.into()))?;
            if n == 0 {
                return Err(JoinTimeoutError::Timeout);
            }
        }
    }

    /// [`join`](Self::join) as a future (feature `async`): resolves once the child has
    /// ended, and reaps it. Runtime-agnostic (a std `Waker`): the crate's one reaper thread
    /// (the one that reaps dropped children) polls the pidfds of every awaited child and
    /// wakes their futures, so awaiting a thousand children costs no thread per child, only a
    /// duplicate of each pidfd while it is awaited. Where pidfds cannot be polled, the reaper
    /// wakes every awaiting join each [`JOIN_ASYNC_POLL_INTERVAL`] instead (bounded polling;
    /// `IPC_POOL_NO_PIDFD_POLL=1` in the environment when the reaper starts forces it).
    /// Polled again after it completed, it gives the same status again.
    ///
    /// # Errors
    /// [`Error::Io`] if `waitid` fails, a pidfd cannot be duplicated, or the reaper thread
    /// could not be started.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future before the child ends (a timeout around it) leaves
    /// the handle as it was, the child running, and nothing registered: the duplicate pidfd
    /// is closed and the waker released.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::Process;
    ///
    /// let mut p = Process::spawn(|| std::thread::sleep(Duration::from_millis(50)))?;
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    /// let status = rt.block_on(p.join_async())?;
    /// assert!(status.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "async")]
    pub fn join_async(
        &mut self,
    ) -> impl std::future::Future<Output = Result<ExitStatus>> + Send + '_ {
        let mut watcher = Watcher::new();
        std::future::poll_fn(move |cx| {
            use std::task::Poll;
            match self.reap(true) {
                Err(e) => {
                    watcher.disarm();
                    return Poll::Ready(Err(e));
                }
                Ok(Some(s)) => {
                    watcher.disarm();
                    return Poll::Ready(Ok(ExitStatus::from_raw(s.raw())));
                }
                Ok(None) => {}
            }
            let Some(fd) = self.fd() else {
                return Poll::Ready(Err(Error::Io(std::io::Error::other("child vanished"))));
            };
            match watcher.arm(&[(fd, false)], cx.waker()) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
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
            reaper().adopt(fd, self.kept.get_mut().take());
        }
    }
}

// ------------------------------------------------------------ ProcessHandle

/// A child that returns a value: made by [`Process::spawn_with_result`] (the counterpart of
/// `std::thread::JoinHandle<T>` across processes).
///
/// It owns a [`Process`] ([`process`](Self::process) for its pid, signals, sentinel) and the
/// read end of the child's result pipe. Dropping it unjoined closes that pipe (a child still
/// writing gets `EPIPE` and exits) and hands the child to the reaper, as for a `Process`.
pub struct ProcessHandle<T> {
    process: Process,
    rx: Option<OwnedFd>,
    buf: Vec<u8>,
    /// The pid that spawned the child (only it may read the pipe or reap the child).
    owner: i32,
    taken: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ProcessHandle<T> {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The child as a [`Process`]: name, [`sentinel`](Process::sentinel),
    /// [`kill`](Process::kill), [`terminate`](Process::terminate).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// As [`process`](Self::process), for [`Process::is_alive`] and
    /// [`Process::exitcode`] (which reap a finished child; its value stays readable).
    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits for the child to end, reaps it, and returns the value its closure returned.
    ///
    /// # Errors
    /// [`Error::Panicked`] if the closure panicked; [`Error::Killed`] if a signal ended the
    /// child before it sent its value; [`Error::NoResult`] if it exited without one;
    /// [`Error::Encode`]/[`Error::Decode`] if the value could not cross; [`Error::Taken`] on a
    /// second call after a value or error was returned; [`Error::NotOwner`] in another process
    /// than the one that spawned the child; [`Error::Io`] if `poll`, `read` or `waitid` fails.
    ///
    /// # Peer death
    /// A child that dies is seen through its pidfd, never waited for through its pipe, so a
    /// grandchild holding the pipe open cannot make this hang.
    pub fn join(&mut self) -> Result<T> {
        match self.join_until(Until::Forever) {
            Ok(v) => v,
            Err(Waited::Failed(e)) => Err(e),
            Err(Waited::TimedOut) => Err(Error::Io(std::io::Error::other(
                "poll without a deadline returned nothing",
            ))),
        }
    }

    /// [`join`](Self::join) if the child has ended, without waiting (it is reaped then, and
    /// its value read from what the pipe holds).
    ///
    /// # Errors
    /// [`TryJoinError::Running`] if the child still runs (the handle stays usable; what it
    /// sent so far is kept); [`TryJoinError::Failed`] with the errors of
    /// [`join`](Self::join), such as [`Error::Killed`] for a child a signal ended.
    pub fn try_join(&mut self) -> Result<T, TryJoinError> {
        match self.join_until(Until::Now) {
            Ok(v) => v.map_err(TryJoinError::Failed),
            Err(Waited::TimedOut) => Err(TryJoinError::Running),
            Err(Waited::Failed(e)) => Err(TryJoinError::Failed(e)),
        }
    }

    /// [`join`](Self::join) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`JoinTimeoutError::Timeout`] if the child still runs after `timeout` (it is left
    /// running and the handle stays usable; what it sent so far is kept);
    /// [`JoinTimeoutError::Failed`] with the errors of [`join`](Self::join).
    ///
    /// # Peer death
    /// As [`join`](Self::join).
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::{Error, JoinTimeoutError, Process};
    ///
    /// let mut h = Process::spawn_with_result(|| -> u32 {
    ///     std::thread::sleep(Duration::from_secs(30));
    ///     7
    /// })?;
    /// let early = h.join_timeout(Duration::from_millis(10));
    /// assert!(matches!(early, Err(JoinTimeoutError::Timeout)));
    /// h.process().kill()?;
    /// let killed = h.join_timeout(Duration::from_secs(30));
    /// assert!(matches!(
    ///     killed,
    ///     Err(JoinTimeoutError::Failed(Error::Killed { signal: 9, .. }))
    /// ));
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<T, JoinTimeoutError> {
        let until = Instant::now()
            .checked_add(timeout)
            .map_or(Until::Forever, Until::Deadline);
        match self.join_until(until) {
            Ok(v) => v.map_err(JoinTimeoutError::Failed),
            Err(Waited::TimedOut) => Err(JoinTimeoutError::Timeout),
            Err(Waited::Failed(e)) => Err(JoinTimeoutError::Failed(e)),
        }
    }

    /// [`join`](Self::join) as a future (feature `async`): the child's value once it has
    /// ended. Woken by the crate's reaper thread when the child's pidfd or its result pipe
    /// becomes readable (the pipe is drained at each wake, so a value larger than the pipe's
    /// buffer gets through), as for [`Process::join_async`], whose polling fallback it
    /// shares. Polled again after it completed: [`Error::Taken`].
    ///
    /// # Errors
    /// As [`join`](Self::join): [`Error::Killed`] for a child a signal ended,
    /// [`Error::Panicked`], [`Error::NoResult`], ...; [`Error::Io`] also if the reaper thread
    /// could not be started.
    ///
    /// # Peer death
    /// As [`join`](Self::join): a child that dies is seen through its pidfd.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future before the child ends leaves the handle usable (what
    /// the child sent so far is kept) and nothing registered.
    ///
    /// # Example
    /// ```
    /// use ipc_pool::Process;
    ///
    /// let mut h = Process::spawn_with_result(|| (1..=10u64).product::<u64>())?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build()?;
    /// assert_eq!(rt.block_on(h.join_async())?, 3_628_800);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "async")]
    pub fn join_async(&mut self) -> impl std::future::Future<Output = Result<T>> + Send + '_ {
        let mut watcher = Watcher::new();
        std::future::poll_fn(move |cx| {
            use std::task::Poll;
            match self.join_until(Until::Now) {
                Ok(v) => {
                    watcher.disarm();
                    Poll::Ready(v)
                }
                Err(Waited::Failed(e)) => {
                    watcher.disarm();
                    Poll::Ready(Err(e))
                }
                Err(Waited::TimedOut) => {
                    let Some(pidfd) = self.process.fd() else {
                        return Poll::Ready(Err(Error::Io(std::io::Error::other(
                            "child vanished",
                        ))));
                    };
                    let mut fds = vec![(pidfd, false)];
                    if let Some(rx) = &self.rx {
                        fds.push((rx.as_fd(), true));
                    }
                    match watcher.arm(&fds, cx.waker()) {
                        Ok(()) => Poll::Pending,
                        Err(e) => Poll::Ready(Err(e)),
                    }
                }
            }
        })
    }

    /// Waits for the child until `until`; the outer `Err` is a failure before the child was
    /// reaped (or the time running out), the inner result its outcome.
    fn join_until(&mut self, until: Until) -> std::result::Result<Result<T>, Waited> {
        if self.taken {
            return Err(Waited::Failed(Error::Taken));
        }
        if self.owner != sys::getpid() {
            return Err(Waited::Failed(Error::NotOwner { owner: self.owner }));
        }
        let status = loop {
            self.drain()?;
            if let Some(s) = self.process.reap(true)? {
                // Everything it wrote is in the pipe now.
                self.drain()?;
                break s;
            }
            let deadline = match until {
                Until::Now => return Err(Waited::TimedOut),
                Until::Forever => None,
                Until::Deadline(d) => Some(d),
            };
            let Some(pidfd) = self.process.fd() else {
                return Err(Waited::Failed(Error::Io(std::io::Error::other(
                    "child vanished",
                ))));
            };
            let mut p = [sys::pollin(pidfd.as_raw_fd()), sys::pollin(-1)];
            if let Some(rx) = &self.rx {
                p[1] = sys::pollin(rx.as_raw_fd());
            }
            if sys::poll(&mut p, deadline).map_err(Error::from)? == 0 {
                return Err(Waited::TimedOut);
            }
        };
        self.taken = true;
        self.close_rx();
        let buf = std::mem::take(&mut self.buf);
        Ok(self.outcome(&buf, status))
    }

    /// Reads what the pipe holds now; closes it at end of stream.
    fn drain(&mut self) -> Result<()> {
        let Some(rx) = &self.rx else { return Ok(()) };
        loop {
            match sys::read_some(rx.as_fd(), &mut self.buf)? {
                sys::ReadSome::Data => {}
                sys::ReadSome::Empty => return Ok(()),
                sys::ReadSome::Eof => {
                    self.close_rx();
                    return Ok(());
                }
            }
        }
    }

    /// Closes the read end, under the registry's lock (so its number is not closed by a
    /// child forked after it was reused).
    fn close_rx(&mut self) {
        if let Some(rx) = self.rx.take() {
            let mut reg = RESULT_FDS.lock();
            let fd = rx.as_raw_fd();
            reg.retain(|&r| r != fd);
            drop(rx);
            drop(reg);
        }
    }

    fn outcome(&self, buf: &[u8], status: Status) -> Result<T> {
        if let Some((hdr, body)) = buf.split_first_chunk::<RES_HDR>() {
            let mut len = [0u8; 8];
            len.copy_from_slice(&hdr[..8]);
            if u64::from_le_bytes(len) == body.len() as u64 {
                let msg = || String::from_utf8_lossy(body).into_owned();
                return match hdr[8] {
                    RES_OK => postcard::from_bytes(body).map_err(|e| Error::Decode(e.to_string())),
                    RES_PANICKED => Err(Error::Panicked(msg())),
                    RES_ENCODE => Err(Error::Encode(msg())),
                    other => Err(Error::Decode(format!("unknown result status {other}"))),
                };
            }
        }
        let pid = self.process.pid();
        match status {
            Status::Signaled(signal) => Err(Error::Killed { pid, signal }),
            Status::Exited(exitcode) => Err(Error::NoResult { pid, exitcode }),
        }
    }
}

impl<T> AsFd for ProcessHandle<T> {
    /// The child's pidfd, as [`Process::sentinel`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.process.sentinel()
    }
}

impl<T> fmt::Debug for ProcessHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("process", &self.process)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl<T> Drop for ProcessHandle<T> {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            if self.owner == sys::getpid() {
                let mut reg = RESULT_FDS.lock();
                let fd = rx.as_raw_fd();
                reg.retain(|&r| r != fd);
                drop(rx);
                drop(reg);
            } else {
                // A copy moved into a child: that child closed this number at its start and
                // may have reused it; leave it alone.
                let _ = rx.into_raw_fd();
            }
        }
    }
}

/// How long [`ProcessHandle::join_until`] waits.
#[derive(Clone, Copy)]
enum Until {
    Now,
    Forever,
    Deadline(Instant),
}

/// Why [`ProcessHandle::join_until`] returned before reaping the child.
enum Waited {
    TimedOut,
    Failed(Error),
}

impl From<Error> for Waited {
    fn from(e: Error) -> Waited {
        Waited::Failed(e)
    }
}

// ------------------------------------------------------------------ scope

/// Runs `f` with a [`Scope`] whose [`spawn`](Scope::spawn) takes closures that borrow from
/// the caller's stack (as `std::thread::scope`). Before `scope` returns (or unwinds), it waits
/// until every child spawned through the scope has ended, and only then drops the parent's
/// copies of their closures; the children themselves are reaped by their handles as usual
/// (a handle dropped unjoined hands its child to the reaper).
///
/// A child that never ends keeps `scope` waiting: give it a way to stop.
///
/// # Example
/// ```
/// use ipc_shm::Value;
///
/// let total = Value::new(0u64)?;
/// let parts = [1u64, 2, 3];
/// ipc_pool::scope(|s| -> ipc_pool::Result<()> {
///     let mut kids = Vec::new();
///     for p in &parts {
///         // Borrows `total` and `parts` from this stack frame.
///         kids.push(s.spawn(|| {
///             total.update(|t| *t += *p).unwrap();
///         })?);
///     }
///     for mut k in kids {
///         assert!(k.join()?.success());
///     }
///     Ok(())
/// })?;
/// assert_eq!(total.get()?, 6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let s = Scope {
        kept: Mutex::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let r = catch_unwind(AssertUnwindSafe(|| f(&s)));
    s.wait_all();
    match r {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Spawns children whose closures borrow from the stack: see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    /// A copy of each child's pidfd (to see it end without reaping it), with the parent's copy
    /// of its closure.
    #[allow(clippy::type_complexity)]
    kept: Mutex<Vec<(Option<OwnedFd>, Box<dyn Send + 'env>)>>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Forks a child running `f` (as [`Process::spawn`]), which may borrow what lives longer
    /// than the call to [`scope`] (`'env`).
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    pub fn spawn<F: FnOnce() + Send + 'env>(&'scope self, f: F) -> Result<Process> {
        self.spawn_with(Process::builder(), f)
    }

    /// [`spawn`](Self::spawn) with a builder's settings.
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    pub fn spawn_with<F: FnOnce() + Send + 'env>(
        &'scope self,
        builder: ProcessBuilder,
        f: F,
    ) -> Result<Process> {
        let (daemon, parent) = (builder.daemon, sys::getpid());
        let (name, forked) = builder.fork_child(false, move |_| run_child(f, daemon, parent))?;
        // If the copy cannot be made, `wait_all` cannot see the child end: then its closure
        // copy is never dropped (forgotten), the only sound choice.
        let watch = forked.pidfd.try_clone().ok();
        let Forked {
            pid, pidfd, child, ..
        } = forked;
        match watch {
            Some(w) => self.kept.lock().push((Some(w), Box::new(child))),
            None => std::mem::forget(child),
        }
        Ok(Process::new(name, daemon, pid, pidfd, Box::new(())))
    }

    fn wait_all(&self) {
        let kept = std::mem::take(&mut *self.kept.lock());
        for (watch, closure) in kept {
            if let Some(w) = watch {
                loop {
                    let mut p = [sys::pollin(w.as_raw_fd())];
                    match sys::poll(&mut p, None) {
                        Ok(n) if n > 0 => break,
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
            drop(closure);
        }
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("children", &self.kept.lock().len())
            .finish()
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
    pending: Mutex<Vec<(OwnedFd, Option<Kept>)>>,
    bell: OwnedFd,
    /// Whether its thread started; without one, `adopt` waits in the caller.
    running: AtomicBool,
    /// The fds awaiting futures (`join_async`) want watched, with their wakers.
    #[cfg(feature = "async")]
    watches: Mutex<Watches>,
    /// Whether awaited children are watched through their pidfds (else: the bounded polling
    /// fallback, [`JOIN_ASYNC_POLL_INTERVAL`]).
    #[cfg(feature = "async")]
    poll_pidfds: bool,
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
            #[cfg(feature = "async")]
            watches: Mutex::new(Watches::default()),
            #[cfg(feature = "async")]
            poll_pidfds: std::env::var_os(NO_PIDFD_POLL_ENV).map_or(true, |v| v == "0"),
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
    /// Takes over the pidfd of a running child of ours and reaps it when it exits; `kept`
    /// is dropped after that.
    pub(crate) fn adopt(&self, pidfd: OwnedFd, kept: Option<Kept>) {
        match self.0 {
            Some(r) if r.running.load(Ordering::Acquire) => {
                r.pending.lock().push((pidfd, kept));
                sys::eventfd_ring(r.bell.as_fd());
            }
            Some(r) => {
                // Its thread could not start: wait here (and for anything queued meanwhile)
                // rather than leak a zombie.
                let queued = std::mem::take(&mut *r.pending.lock());
                for (fd, kept) in queued.into_iter().chain(std::iter::once((pidfd, kept))) {
                    let _ = sys::waitid_pidfd(fd.as_fd(), false);
                    drop(kept);
                }
            }
            None => {
                let _ = sys::waitid_pidfd(pidfd.as_fd(), false);
                drop(kept);
            }
        }
    }
}

impl Reaper {
    fn run(&self) {
        let mut held: Vec<(OwnedFd, Option<Kept>)> = Vec::new();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        #[cfg(feature = "async")]
        let mut watched: Vec<(u64, Arc<WatchFd>)> = Vec::new();
        #[cfg(feature = "async")]
        let mut tick: Option<Instant> = None;
        loop {
            held.append(&mut self.pending.lock());
            // Reap everything that has exited.
            // (`kept` is dropped with its entry, after the child was reaped.)
            held.retain(|(fd, _)| {
                !matches!(sys::waitid_pidfd(fd.as_fd(), true), Ok(Some(_)) | Err(_))
            });
            fds.clear();
            fds.push(sys::pollin(self.bell.as_raw_fd()));
            fds.extend(held.iter().map(|(fd, _)| sys::pollin(fd.as_raw_fd())));
            #[allow(unused_mut)]
            let mut deadline = None;
            #[cfg(feature = "async")]
            {
                // The fds of awaiting joins (their own duplicates, kept open by these `Arc`s
                // for the whole poll, whatever their futures do meanwhile).
                let w = self.watches.lock();
                if self.poll_pidfds {
                    for e in &w.list {
                        watched.extend(e.fds.iter().map(|fd| (e.key, Arc::clone(fd))));
                    }
                    tick = None;
                } else if w.list.is_empty() {
                    tick = None;
                } else {
                    deadline = Some(
                        *tick.get_or_insert_with(|| Instant::now() + JOIN_ASYNC_POLL_INTERVAL),
                    );
                }
                drop(w);
                fds.extend(watched.iter().map(|(_, fd)| sys::pollin(fd.raw())));
            }
            let polled = sys::poll(&mut fds, deadline);
            if polled.is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
            if fds[0].revents != 0 {
                sys::eventfd_drain(self.bell.as_fd());
            }
            #[cfg(feature = "async")]
            {
                let base = 1 + held.len();
                let fired: Vec<u64> = fds[base..]
                    .iter()
                    .zip(&watched)
                    .filter(|(p, _)| p.revents != 0)
                    .map(|(_, (key, _))| *key)
                    .collect();
                watched.clear();
                // Polling mode, or a poll that failed: every awaiting join looks for itself.
                let due = tick.is_some_and(|t| Instant::now() >= t);
                if due {
                    tick = None;
                }
                self.fire(&fired, due || polled.is_err());
            }
        }
    }

    /// Wakes the joins whose fds fired (their entries leave the list: their futures register
    /// again if they still wait), and every join if `all` (their entries stay).
    #[cfg(feature = "async")]
    fn fire(&self, fired: &[u64], all: bool) {
        if fired.is_empty() && !all {
            return;
        }
        let mut w = self.watches.lock();
        let mut gone = Vec::new();
        let mut i = 0;
        while i < w.list.len() {
            if fired.contains(&w.list[i].key) {
                gone.push(w.list.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let others: Vec<std::task::Waker> = if all {
            w.list.iter().map(|e| e.waker.clone()).collect()
        } else {
            Vec::new()
        };
        drop(w);
        // Woken outside the lock; the fds close here too (a result pipe's under its lock).
        for e in gone {
            e.waker.wake();
        }
        for waker in others {
            waker.wake();
        }
    }
}

// ------------------------------------------------------------ join_async

/// How often the reaper thread wakes every awaiting [`Process::join_async`] and
/// [`ProcessHandle::join_async`] when children cannot be watched through their pidfds: the
/// bounded polling fallback (forced by `IPC_POOL_NO_PIDFD_POLL=1` in the environment when the
/// reaper starts, or taken while `ppoll` on the pidfds fails).
#[cfg(feature = "async")]
pub const JOIN_ASYNC_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Environment variable that forces the polling fallback of `join_async` (read once, when the
/// process's reaper thread starts).
#[cfg(feature = "async")]
const NO_PIDFD_POLL_ENV: &str = "IPC_POOL_NO_PIDFD_POLL";

/// The awaiting joins the reaper thread watches.
#[cfg(feature = "async")]
#[derive(Default)]
struct Watches {
    next: u64,
    list: Vec<WatchEntry>,
}

/// One awaiting join: the fds whose readability ends its wait (the child's pidfd, and the
/// result pipe of a `ProcessHandle`), and its waker.
#[cfg(feature = "async")]
struct WatchEntry {
    key: u64,
    fds: Vec<Arc<WatchFd>>,
    waker: std::task::Waker,
}

/// A duplicate of a handle's fd for the reaper thread to poll: the handle's own fd may close
/// while the reaper polls, its duplicate only when the last `Arc` of it goes.
#[cfg(feature = "async")]
struct WatchFd {
    fd: Option<OwnedFd>,
    /// A result pipe's read end: listed in [`RESULT_FDS`] while open, so that children
    /// forked meanwhile close their copy, as for the handle's own.
    result_pipe: bool,
}

#[cfg(feature = "async")]
impl WatchFd {
    fn dup(fd: BorrowedFd<'_>, result_pipe: bool) -> std::io::Result<WatchFd> {
        if !result_pipe {
            return Ok(WatchFd {
                fd: Some(fd.try_clone_to_owned()?),
                result_pipe,
            });
        }
        // Made and listed under the registry's lock, which forks hold: no child is forked
        // between the two.
        let mut reg = RESULT_FDS.lock();
        let d = fd.try_clone_to_owned()?;
        reg.push(d.as_raw_fd());
        drop(reg);
        Ok(WatchFd {
            fd: Some(d),
            result_pipe,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }
}

#[cfg(feature = "async")]
impl Drop for WatchFd {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if self.result_pipe {
            // Unlisted and closed under the lock, as `ProcessHandle::close_rx` does.
            let mut reg = RESULT_FDS.lock();
            let n = fd.as_raw_fd();
            reg.retain(|&r| r != n);
            drop(fd);
            drop(reg);
        } else {
            drop(fd);
        }
    }
}

/// A `join_async` future's registration with the reaper thread; dropping it (with the future)
/// deregisters, closing its fds and releasing its waker.
#[cfg(feature = "async")]
struct Watcher {
    key: Option<(&'static Reaper, u64)>,
}

#[cfg(feature = "async")]
impl Watcher {
    const fn new() -> Watcher {
        Watcher { key: None }
    }

    /// Arranges for `waker` to be woken once one of `fds` (`(fd, is a result pipe)`) is
    /// readable, or every [`JOIN_ASYNC_POLL_INTERVAL`] in the polling fallback. If still
    /// registered, only the waker is updated.
    fn arm(&mut self, fds: &[(BorrowedFd<'_>, bool)], waker: &std::task::Waker) -> Result<()> {
        if let Some((r, key)) = self.key {
            let mut w = r.watches.lock();
            if let Some(e) = w.list.iter_mut().find(|e| e.key == key) {
                if !e.waker.will_wake(waker) {
                    e.waker = waker.clone();
                }
                return Ok(());
            }
            // It fired (and left the list): register again.
            self.key = None;
        }
        let r = match reaper().0 {
            Some(r) if r.running.load(Ordering::Acquire) => r,
            _ => {
                return Err(Error::Io(std::io::Error::other(
                    "join_async needs the reaper thread, which could not start",
                )))
            }
        };
        let dups = fds
            .iter()
            .map(|&(fd, pipe)| WatchFd::dup(fd, pipe).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut w = r.watches.lock();
        let key = w.next;
        w.next += 1;
        w.list.push(WatchEntry {
            key,
            fds: dups,
            waker: waker.clone(),
        });
        drop(w);
        self.key = Some((r, key));
        sys::eventfd_ring(r.bell.as_fd());
        Ok(())
    }

    /// Deregisters (a no-op if not registered, or if this is a forked copy of the future).
    fn disarm(&mut self) {
        let Some((r, key)) = self.key.take() else {
            return;
        };
        if r.pid != sys::getpid() {
            // Another process's reaper (its lock may be held by a thread we lack).
            return;
        }
        let mut w = r.watches.lock();
        let gone = w
            .list
            .iter()
            .position(|e| e.key == key)
            .map(|i| w.list.swap_remove(i));
        drop(w);
        if gone.is_some() {
            // The reaper rebuilds its poll set without these fds.
            sys::eventfd_ring(r.bell.as_fd());
        }
        drop(gone);
    }
}

#[cfg(feature = "async")]
impl Drop for Watcher {
    fn drop(&mut self) {
        self.disarm();
    }
}
