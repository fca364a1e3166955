#![doc = include_str!("../README.md")]
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
mod sync;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
mod task;

/// The pipe crate whose error type appears in this crate's public signatures
/// (`Error::Pipe`), re-exported so callers need no version match.
pub use ipc_pipe;
/// The snippet of the workspace's README, run as a doctest (it needs this crate and its
/// dev-dependencies `ipc-shm` and `ipc-queue`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadme;

pub use error::{
    Error, GetTimeoutError, JoinTimeoutError, Result, TryGetError, TryJoinError, WaitTimeoutResult,
};
pub use pool::{AsyncResult, IMap, IMapUnordered, Policy, Pool, PoolBuilder, DROP_JOIN_TIMEOUT};
pub use process::{
    current_pid, exit, parent_pid, scope, thread_count, Process, ProcessBuilder, ProcessHandle,
    Scope, ThreadPolicy, PANIC_EXIT_CODE,
};
pub use task::StarArgs;

#[cfg(feature = "async")]
pub use process::JOIN_ASYNC_POLL_INTERVAL;

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
