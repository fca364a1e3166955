//! Processes and a process pool that fail loudly instead of hanging: the Rust counterpart of
//! Python's `multiprocessing.Process`, `Pool` and `ProcessPoolExecutor`.
//!
//! | item | what | Python |
//! |---|---|---|
//! | [`Process`], [`ProcessBuilder`] | a forked child running a closure, watched by a pidfd | `Process` (fork) |
//! | [`Pool`], [`PoolBuilder`] | worker processes running `fn(A) -> R` tasks | `Pool`, `ProcessPoolExecutor` |
//! | [`AsyncResult`] | the pending result of [`Pool::apply_async`] | `AsyncResult`, `Future` |
//! | [`IMap`], [`IMapUnordered`] | lazy result iterators of [`Pool::imap`] / [`Pool::imap_unordered`] | `imap`, `imap_unordered` |
//! | [`StarArgs`] | the argument tuples of [`Pool::starmap`], 1 to 8 fields | `starmap` |
//! | [`Policy`] | what a dead worker's task becomes: fail, retry, or break the pool | `BrokenProcessPool` |
//! | [`init`] | start the process-wide fork server first thing in `main` | `set_start_method("forkserver")` |
//! | [`current_pid`], [`parent_pid`], [`thread_count`], [`exit`] | process helpers | `os.getpid`, `os.getppid`, `sys.exit` |
//! | [`Error`] | `WorkerDied`, `Panicked`, `Timeout`, `Closed`, `Broken`, ... | |
//!
//! # What "fail loudly" means
//! - A pool worker that dies (`SIGKILL`, `abort`, out of memory) fails exactly the task(s) it
//!   was running with [`Error::WorkerDied`] within a bounded time and is replaced; Python's
//!   `Pool` hangs forever there. [`Policy::Retry`] and [`Policy::BreakPool`] are the other
//!   choices.
//! - A task that panics is [`Error::Panicked`] with the message; the worker survives.
//! - An argument or result that does not encode or decode is an error for that task.
//! - Children are watched through pidfds and reaped with `waitid(P_PIDFD)` on their own pid,
//!   never `waitpid(-1)` or a `SIGCHLD` handler, so other code's children are safe. Dropping a
//!   [`Process`] never leaves a zombie; dropping a [`Pool`] closes it, waits (bounded) and
//!   terminates what is left.
//!
//! # Tasks are function pointers
//! Tasks are `fn(A) -> R` with `A: Serialize` and `R: Serialize + DeserializeOwned`: plain
//! functions and non-capturing closures, the counterpart of Python's picklable top-level
//! functions. Workers are forked, never exec'd, so a function pointer names the same code in
//! the worker; the pool sends its address and that of a monomorphised trampoline which
//! decodes the arguments (postcard), calls the function and encodes the results. The workers
//! have only the code mapped when their fork server was forked: a function from a library
//! `dlopen`ed later is refused before it is sent, with [`Error::CodeNotInWorkers`] (its
//! address is checked with `dladdr` against the modules recorded at that fork).
//!
//! # Forking and threads
//! A forked child gets a copy of every lock as it was: one another thread held stays locked.
//! [`Process::spawn`] detects a multithreaded parent (`/proc/self/task`) and by default warns
//! once ([`ThreadPolicy`]). The pool never forks its workers from a multithreaded process: it
//! forks a single-threaded *fork server* when built (before its own dispatcher thread starts),
//! and that server forks every worker, including replacements. Programs that are already
//! multithreaded when they build pools call [`init`] first in `main`, so the fork servers
//! descend from the early, single-threaded image.
//!
//! # Example: a process and a pool
//! ```
//! use ipc_pool::{Pool, Process};
//!
//! fn collatz_len(mut n: u64) -> u32 {
//!     let mut steps = 0;
//!     while n != 1 {
//!         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
//!         steps += 1;
//!     }
//!     steps
//! }
//!
//! let mut child = Process::spawn(|| {
//!     assert_ne!(ipc_pool::current_pid(), ipc_pool::parent_pid());
//! })?;
//! assert_eq!(child.join()?.code(), Some(0));
//!
//! let pool = Pool::new(2)?;
//! let lens = pool.map(collatz_len, 1..=10u64)?;
//! assert_eq!(lens, [0, 1, 7, 2, 5, 8, 16, 3, 19, 6]);
//! let r = pool.apply_async(collatz_len, 27)?;
//! assert_eq!(r.get()?, 111);
//! pool.join()?;
//! # Ok::<(), ipc_pool::Error>(())
//! ```
//!
//! # Failpoints
//! Fault points for crash tests (`ipc_failpoints`, compiled in only with the `failpoints`
//! feature):
//! - `pool.worker.mid_task`: in a worker, after a job's function returned, before its result
//!   is recorded and sent. A kill models a worker dying mid-task: that task is
//!   [`Error::WorkerDied`], the worker is replaced and the pool goes on.
//! - `pool.zygote.mid_fork`: in a pool's fork server, after forking a worker, before replying
//!   with its fds. A kill models the fork server dying mid-fork: the pool is
//!   [`Error::Broken`] ("fork server died"), never hung; the orphaned worker dies with it.
//! - `pool.fork_server.request`: in a pool's fork server (or the process-wide server of
//!   [`init`]), on a request, before it replies. A kill there: as above.
//! - `pool.parent.dispatching`: in the pool's dispatcher thread, after assigning jobs, before
//!   writing them. A kill models the pool's process dying while dispatching: its fork server
//!   sees it through a pidfd, kills and reaps its workers and exits (no orphans).
//!
//! # Thread safety
//! [`Pool`] is `Send + Sync` (all methods take `&self`); [`Process`] and [`AsyncResult`] are
//! `Send + Sync`; the `imap` iterators borrow the pool and are `Send` when their input
//! iterator is.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-pool needs Linux (pidfd, waitid(P_PIDFD), prctl)");

mod dispatcher;
mod error;
#[allow(unsafe_code)]
mod fork_server;
mod pool;
mod process;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
mod task;

pub use error::{Error, Result};
pub use pool::{AsyncResult, IMap, IMapUnordered, Policy, Pool, PoolBuilder, DROP_JOIN_TIMEOUT};
pub use process::{
    current_pid, exit, parent_pid, scope, thread_count, Process, ProcessBuilder, ProcessHandle,
    Scope, ThreadPolicy, PANIC_EXIT_CODE,
};
pub use task::StarArgs;

/// Starts the process-wide fork server. Call it first in `main`, while the program has one
/// thread: every [`Pool`] built afterwards gets its own fork server forked from this clean
/// early image instead of from the (possibly multithreaded) process at the time of
/// `Pool::new`. Calling it again does nothing.
///
/// The server exits when this process does (it watches a pidfd of it). Workers of later pools
/// see the memory of the program as it was at `init`, plus nothing else: globals set after
/// `init` are not visible in them (pass such state as task arguments or as the arguments of
/// [`PoolBuilder::initializer_with`]).
///
/// # Errors
/// [`Error::Io`] or [`Error::Pipe`] if the socket or the fork fails.
///
/// # Example
/// ```
/// fn main() -> ipc_pool::Result<()> {
///     ipc_pool::init()?;
///     // ... start threads, then build pools as usual.
///     let pool = ipc_pool::Pool::new(2)?;
///     assert_eq!(pool.apply(|x: i32| x + 1, 1)?, 2);
///     Ok(())
/// }
/// # main().unwrap();
/// ```
pub fn init() -> Result<()> {
    fork_server::init_server()
}

/// Whether [`init`] has started the process-wide fork server in this process.
pub fn is_initialized() -> bool {
    fork_server::server_running()
}
