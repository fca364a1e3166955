//! The fork server: a single-threaded zygote that forks the pool's workers.
//!
//! Each [`Pool`](crate::Pool) gets its own zygote, forked from the parent when the pool is
//! built, before the pool starts its dispatcher thread. The zygote never runs user code: it
//! waits on its control socket, forks a worker per request, and passes the worker's pidfd and
//! socket back to the parent with `SCM_RIGHTS` (`ipc_pipe::Connection::send_fds`). It is the
//! workers' parent, so it reaps them (`waitid(P_PIDFD)`) and reports each exit status to the
//! pool. Because the zygote has one thread, every worker (first ones, replacements of dead
//! ones, and those renewed by `max_tasks_per_child`) is forked from a single-threaded process,
//! whatever threads the pool's own process runs.
//!
//! The zygote itself is forked from the pool's process, which may already be multithreaded.
//! Its own code takes no lock but the allocator's (which glibc makes fork-safe); what it cannot
//! avoid is that workers inherit a copy of memory in which another thread of the parent may
//! have held a lock. [`init`](crate::init), called first in `main`, forks a process-wide
//! *server* while the program is still single-threaded; pools built later ask that server for
//! their zygote, so workers descend from the clean early image.
//!
//! Lifetimes: workers get `PR_SET_PDEATHSIG(SIGKILL)` towards the zygote (single-threaded, so
//! its one thread is the process); the zygote watches the pool's process with a pidfd (never
//! `PR_SET_PDEATHSIG`, which follows the forking *thread*: a pool outlives the thread that
//! built it) and exits (killing its workers) when it dies, or when the pool closes its control
//! socket or sends `Shutdown` (then it gives the workers a grace period to leave, kills the
//! rest, and reaps them all before exiting).
//!
//! Fds: the zygote, the server and every worker close all fds but 0 to 2 and their own socket
//! when they start (`close_range`, as Python's forkserver), so none of them holds an end of
//! the parent's pipes and sockets: a reader sees end of stream when its writer dies, whatever
//! pools run. Mapped memory stays mapped; a global that holds an fd from before the pool (a
//! file, a memfd) finds it closed in the workers.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::catch_unwind;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ipc_pipe::Connection;
use serde::{Deserialize, Serialize};

use crate::sync::Mutex;
use crate::sys::{self, Fork};
use crate::task;
use crate::{Error, Result};

/// Exit code of a worker whose initializer panicked.
pub(crate) const INIT_FAILED: i32 = 70;
/// Exit code of a worker that received a malformed frame.
const PROTOCOL_ERROR: i32 = 71;
/// How long a zygote lets its workers leave on shutdown before killing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a worker is told at fork.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorkerConfig {
    /// Address of the initializer (`fn()`, or `fn(A)` with `init_tramp`), 0 for none.
    pub init: u64,
    /// Address of the trampoline of an initializer with arguments (made with
    /// `task::init_with_addrs`), 0 for a plain `fn()`.
    pub init_tramp: u64,
    /// The initializer's arguments, postcard-encoded once by the pool; every worker decodes
    /// its own copy.
    pub init_args: Vec<u8>,
    /// Jobs after which a worker leaves (`u64::MAX`: never).
    pub max_jobs: u64,
}

/// Parent to zygote (and to the process-wide server).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Fork one worker.
    Spawn,
    /// Let the workers leave, reap them, exit.
    Shutdown,
    /// (Server only.) Fork a zygote for a new pool with this config, watching `owner`.
    NewZygote { config: WorkerConfig, owner: i32 },
}

/// Zygote to parent.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// A process was forked; an fd message follows: `[pidfd, socket]`.
    Spawned { pid: i32 },
    /// `fork` failed with this errno.
    SpawnFailed { errno: i32 },
    /// A worker ended; Python exit code (negative signal number).
    Exited { pid: i32, exitcode: i32 },
}

/// The parent's handle on a zygote.
pub(crate) struct Zygote {
    pub pidfd: OwnedFd,
    pub ctl: Connection,
    /// Whether the zygote is our own child (then we reap it); with [`init`](crate::init) it is
    /// the server's child and the server reaps it.
    pub ours: bool,
    /// The code its workers have (see [`task::CodeMap`]).
    pub code: Arc<task::CodeMap>,
}

impl Zygote {
    /// Forks a zygote for a pool: from the process-wide server if [`init`](crate::init) ran,
    /// else from this process.
    ///
    /// # Errors
    /// [`Error::CodeNotInWorkers`] if the initializer is not in the image the workers will be
    /// forked from; [`Error::Io`] or [`Error::Pipe`] if the fork or the sockets fail.
    pub(crate) fn start(config: WorkerConfig) -> Result<Zygote> {
        if let Some((server, code)) = SERVER.get() {
            check_init(code, &config)?;
            let code = Arc::clone(code);
            let mut ctl = server.lock();
            ctl.send(&Request::NewZygote {
                config,
                owner: sys::getpid(),
            })?;
            let (pid, pidfd, sock) = recv_spawned(&mut ctl)?;
            let _ = pid;
            return Ok(Zygote {
                pidfd,
                ctl: Connection::from(sock),
                ours: false,
                code,
            });
        }
        let code = Arc::new(task::CodeMap::snapshot());
        check_init(&code, &config)?;
        let (mine, theirs) = ipc_pipe::duplex()?;
        let owner = sys::getpid();
        // SAFETY: the child runs only `zygote_main`, which takes no lock but the allocator's
        // and leaves with `_exit`. Stdout's and stderr's locks are held across the fork, so
        // the zygote (and every worker it forks) starts with them free: a worker forked with
        // a copy held by another thread of ours would hang in its first `println!`.
        match unsafe { crate::process::fork_stdio_quiesced() }? {
            Fork::Child => {
                drop(mine);
                zygote_main(theirs, config, owner, owner)
            }
            Fork::Parent(pid) => {
                drop(theirs);
                let pidfd = match sys::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        sys::kill_and_reap_pid(pid);
                        return Err(e.into());
                    }
                };
                Ok(Zygote {
                    pidfd,
                    ctl: mine,
                    ours: true,
                    code,
                })
            }
        }
    }
}

/// Fails an initializer (or its trampoline) that is not in the workers' image.
fn check_init(code: &task::CodeMap, config: &WorkerConfig) -> Result<()> {
    if config.init != 0 {
        code.check(config.init)?;
    }
    if config.init_tramp != 0 {
        code.check(config.init_tramp)?;
    }
    Ok(())
}

/// Reads a `Spawned` reply and its fds. Any other reply is an error.
pub(crate) fn recv_spawned(ctl: &mut Connection) -> Result<(i32, OwnedFd, OwnedFd)> {
    match ctl.recv::<Reply>()? {
        Reply::Spawned { pid } => {
            let fds = ctl
                .recv_fds_timeout(Duration::from_secs(10))
                .map_err(ipc_pipe::Error::from)?;
            let mut it = fds.into_iter();
            match (it.next(), it.next()) {
                (Some(pidfd), Some(sock)) => Ok((pid, pidfd, sock)),
                _ => Err(Error::Io(std::io::Error::other(
                    "fork server sent the wrong number of fds",
                ))),
            }
        }
        Reply::SpawnFailed { errno } => Err(Error::Io(std::io::Error::from_raw_os_error(errno))),
        Reply::Exited { .. } => Err(Error::Io(std::io::Error::other(
            "unexpected reply from the fork server",
        ))),
    }
}

/// Common start of every forked helper: default `SIGCHLD`, empty signal mask, only the fds in
/// `keep` (and 0 to 2) open, and bail out if the forking process is already gone.
///
/// `PR_SET_PDEATHSIG` follows the forking *thread*, not its process, so it is set only when
/// `pdeathsig` says the parent is a single-threaded helper of ours (a zygote for its workers,
/// the server for its zygotes). A helper forked from the user's process (a pool's zygote, the
/// server) instead watches its owner through a pidfd: a pool must outlive the thread that
/// built it.
fn child_setup(expected_parent: i32, pdeathsig: bool, keep: &[std::os::fd::RawFd]) {
    sys::default_signal(libc::SIGCHLD);
    sys::unblock_all_signals();
    sys::close_fds_except(keep);
    if pdeathsig && sys::set_parent_death_signal(libc::SIGKILL).is_err() {
        sys::exit_now(1);
    }
    if sys::getppid() != expected_parent {
        sys::exit_now(1);
    }
}

/// What [`fork_pidfd`] returned in this process.
enum Forked {
    Child,
    Parent(i32, OwnedFd),
}

/// Forks from a single-threaded fork server and opens the child's pidfd.
fn fork_pidfd() -> std::io::Result<Forked> {
    // SAFETY: only called by the single-threaded zygote and server; their child branches run
    // `worker_main`/`zygote_main`, which never return (they leave with `_exit`).
    match unsafe { sys::fork() }? {
        Fork::Child => Ok(Forked::Child),
        Fork::Parent(pid) => match sys::pidfd_open(pid) {
            Ok(fd) => Ok(Forked::Parent(pid, fd)),
            Err(e) => {
                sys::kill_and_reap_pid(pid);
                Err(e)
            }
        },
    }
}

fn pipe_io(e: ipc_pipe::Error) -> std::io::Error {
    match e {
        ipc_pipe::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// The zygote's loop. Never returns.
fn zygote_main(mut ctl: Connection, config: WorkerConfig, owner: i32, parent: i32) -> ! {
    let me = sys::getpid();
    // Our parent is the pool's process (watched by the pidfd below), or the server (then we
    // also die with it).
    child_setup(parent, parent != owner, &[ctl.as_raw_fd()]);
    let Ok(owner_fd) = sys::pidfd_open(owner) else {
        sys::exit_now(1)
    };
    // The owner may have died between the fork and the pidfd: then we were reparented.
    if parent == owner && sys::getppid() != parent {
        sys::exit_now(1);
    }
    let mut workers: Vec<(i32, OwnedFd)> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        fds.clear();
        fds.push(sys::pollin(ctl.as_raw_fd()));
        fds.push(sys::pollin(owner_fd.as_raw_fd()));
        fds.extend(workers.iter().map(|(_, fd)| sys::pollin(fd.as_raw_fd())));
        if sys::poll(&mut fds, None).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if fds[1].revents != 0 {
            // The pool's process is gone: nothing will collect results.
            finish(&mut workers, Duration::ZERO);
        }
        let ready: Vec<bool> = fds[2..].iter().map(|p| p.revents != 0).collect();
        let mut i = 0;
        workers.retain(|(pid, fd)| {
            let was_ready = ready.get(i).copied().unwrap_or(false);
            i += 1;
            if !was_ready {
                return true;
            }
            match sys::waitid_pidfd(fd.as_fd(), true) {
                Ok(Some(st)) => {
                    let _ = ctl.send(&Reply::Exited {
                        pid: *pid,
                        exitcode: st.exitcode(),
                    });
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            }
        });
        if fds[0].revents == 0 {
            continue;
        }
        loop {
            match ctl.try_recv::<Request>() {
                Err(ipc_pipe::TryRecvError::Empty) => break,
                Ok(Request::Spawn) => {
                    ipc_failpoints::failpoint!("pool.fork_server.request");
                    let res =
                        ipc_pipe::duplex()
                            .map_err(pipe_io)
                            .and_then(|(parent_end, child_end)| {
                                match fork_pidfd()? {
                                    Forked::Child => {
                                        // In the worker: only our socket stays open (see
                                        // `child_setup`); the zygote's fds are never dropped
                                        // here, `worker_main` never returns.
                                        drop(parent_end);
                                        worker_main(child_end, &config, me)
                                    }
                                    Forked::Parent(pid, pidfd) => {
                                        ipc_failpoints::failpoint!("pool.zygote.mid_fork");
                                        drop(child_end);
                                        Ok((pid, pidfd, parent_end))
                                    }
                                }
                            });
                    match res {
                        Ok((pid, pidfd, parent_end)) => {
                            let sent = ctl
                                .send(&Reply::Spawned { pid })
                                .and_then(|()| ctl.send_fds(&[pidfd.as_fd(), parent_end.as_fd()]));
                            drop(parent_end);
                            workers.push((pid, pidfd));
                            if sent.is_err() {
                                finish(&mut workers, Duration::ZERO);
                            }
                        }
                        Err(e) => {
                            let errno = e.raw_os_error().unwrap_or(libc::EAGAIN);
                            let _ = ctl.send(&Reply::SpawnFailed { errno });
                        }
                    }
                }
                Ok(Request::NewZygote { .. }) => {
                    let _ = ctl.send(&Reply::SpawnFailed {
                        errno: libc::EINVAL,
                    });
                }
                Ok(Request::Shutdown) | Err(_) => finish(&mut workers, SHUTDOWN_GRACE),
            }
        }
    }
}

/// Gives the workers `grace` to leave, kills the rest, reaps them all, exits.
fn finish(workers: &mut Vec<(i32, OwnedFd)>, grace: Duration) -> ! {
    let deadline = Instant::now() + grace;
    loop {
        workers.retain(|(_, fd)| matches!(sys::waitid_pidfd(fd.as_fd(), true), Ok(None)));
        if workers.is_empty() || Instant::now() >= deadline {
            break;
        }
        let mut fds: Vec<libc::pollfd> = workers
            .iter()
            .map(|(_, fd)| sys::pollin(fd.as_raw_fd()))
            .collect();
        let _ = sys::poll(&mut fds, Some(deadline));
    }
    for (_, fd) in workers.iter() {
        let _ = sys::pidfd_signal(fd.as_fd(), libc::SIGKILL);
    }
    for (_, fd) in workers.iter() {
        let _ = sys::waitid_pidfd(fd.as_fd(), false);
    }
    sys::exit_now(0)
}

/// A worker: runs the initializer, then jobs until told to stop, its socket closes, or it has
/// done `max_jobs` jobs. Never returns.
fn worker_main(mut conn: Connection, config: &WorkerConfig, zygote: i32) -> ! {
    child_setup(zygote, true, &[conn.as_raw_fd()]);
    if config.init != 0 && config.init_tramp != 0 {
        let ran = catch_unwind(|| {
            // SAFETY: both addresses were made by one `task::init_with_addrs` call in the
            // pool's process, of which this worker is a fork.
            unsafe { task::call_init_trampoline(config.init_tramp, config.init, &config.init_args) }
        });
        // A panic, or arguments that do not decode: the initializer failed.
        if !matches!(ran, Ok(Ok(()))) {
            crate::process::exit(INIT_FAILED);
        }
    } else if config.init != 0 {
        // SAFETY: the address was made by `task::init_addr` in the pool's process, of which
        // this worker is a fork.
        let init = unsafe { task::init_from_addr(config.init) };
        if catch_unwind(init).is_err() {
            crate::process::exit(INIT_FAILED);
        }
    }
    let mut inbuf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    let mut done: u64 = 0;
    loop {
        match conn.recv_bytes_into(&mut inbuf) {
            Ok(0) => {
                // Stop: flush what is done, leave.
                if !out.is_empty() {
                    let _ = conn.send_bytes(&out);
                }
                crate::process::exit(0);
            }
            Ok(_) => {}
            Err(_) => {
                if !out.is_empty() {
                    let _ = conn.send_bytes(&out);
                }
                crate::process::exit(0)
            }
        }
        let mut rest = &inbuf[..];
        while !rest.is_empty() {
            let Ok(job) = task::next_job(&mut rest) else {
                crate::process::exit(PROTOCOL_ERROR)
            };
            scratch.clear();
            let t0 = Instant::now();
            // SAFETY: only the pool's process writes this socket, with addresses made by
            // `trampoline_addr`/`Callable::addr` in the image this worker was forked from.
            let status = unsafe {
                task::call_trampoline(job.tramp, job.func, job.count, job.payload, &mut scratch)
            };
            ipc_failpoints::failpoint!("pool.worker.mid_task");
            let nanos = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            task::put_result(&mut out, job.id, status, job.count, nanos, &scratch);
            done += 1;
        }
        // One result frame per job frame: the parent relies on it to tell, after a death,
        // which jobs may have run (see `dispatcher`).
        if conn.send_bytes(&out).is_err() {
            crate::process::exit(0);
        }
        out.clear();
        if out.capacity() > (1 << 20) {
            out = Vec::new();
        }
        if done >= config.max_jobs {
            crate::process::exit(0);
        }
    }
}

// -------------------------------------------------------- process-wide server

/// The server's control socket and the code it (and so every worker it forks) has.
static SERVER: OnceLock<(Mutex<Connection>, Arc<task::CodeMap>)> = OnceLock::new();

/// Starts the process-wide fork server, once; see [`crate::init`].
pub(crate) fn init_server() -> Result<()> {
    if SERVER.get().is_some() {
        return Ok(());
    }
    let (mine, theirs) = ipc_pipe::duplex()?;
    let owner = sys::getpid();
    let code = Arc::new(task::CodeMap::snapshot());
    // SAFETY: the child runs only `server_main` (no lock but the allocator's) and `_exit`s;
    // stdio locks are held across the fork, as for a pool's own zygote.
    match unsafe { crate::process::fork_stdio_quiesced() }? {
        Fork::Child => {
            drop(mine);
            server_main(theirs, owner)
        }
        Fork::Parent(pid) => {
            drop(theirs);
            // The server leaves only when we do (it watches our pidfd), so it is never our
            // zombie while we run; no reaper thread is started here, which keeps this
            // process single-threaded.
            let _ = pid;
            if SERVER.set((Mutex::new(mine), code)).is_err() {
                // Lost a race with another `init`: ours exits on EOF.
            }
            Ok(())
        }
    }
}

/// The process-wide server: forks one zygote per pool on request. Never returns.
fn server_main(mut ctl: Connection, owner: i32) -> ! {
    child_setup(owner, false, &[ctl.as_raw_fd()]);
    let Ok(owner_fd) = sys::pidfd_open(owner) else {
        sys::exit_now(1)
    };
    if sys::getppid() != owner {
        sys::exit_now(1);
    }
    let mut zygotes: Vec<OwnedFd> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = vec![
            sys::pollin(ctl.as_raw_fd()),
            sys::pollin(owner_fd.as_raw_fd()),
        ];
        fds.extend(zygotes.iter().map(|fd| sys::pollin(fd.as_raw_fd())));
        if sys::poll(&mut fds, None).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if fds[1].revents != 0 {
            sys::exit_now(0);
        }
        zygotes.retain(|fd| matches!(sys::waitid_pidfd(fd.as_fd(), true), Ok(None)));
        if fds[0].revents == 0 {
            continue;
        }
        match ctl.recv::<Request>() {
            Ok(Request::NewZygote { config, owner }) => {
                ipc_failpoints::failpoint!("pool.fork_server.request");
                let me = sys::getpid();
                let res =
                    ipc_pipe::duplex()
                        .map_err(pipe_io)
                        .and_then(|(parent_end, child_end)| match fork_pidfd()? {
                            Forked::Child => {
                                // The zygote keeps only `child_end` (see `child_setup`).
                                drop(parent_end);
                                zygote_main(child_end, config, owner, me)
                            }
                            Forked::Parent(pid, pidfd) => {
                                drop(child_end);
                                Ok((pid, pidfd, parent_end))
                            }
                        });
                match res {
                    Ok((pid, pidfd, parent_end)) => {
                        let _ = ctl.send(&Reply::Spawned { pid });
                        let _ = ctl.send_fds(&[pidfd.as_fd(), parent_end.as_fd()]);
                        zygotes.push(pidfd);
                    }
                    Err(e) => {
                        let errno = e.raw_os_error().unwrap_or(libc::EAGAIN);
                        let _ = ctl.send(&Reply::SpawnFailed { errno });
                    }
                }
            }
            Ok(_) => {
                let _ = ctl.send(&Reply::SpawnFailed {
                    errno: libc::EINVAL,
                });
            }
            Err(_) => sys::exit_now(0),
        }
    }
}

/// Whether [`crate::init`] has started the process-wide server.
pub(crate) fn server_running() -> bool {
    SERVER.get().is_some()
}
