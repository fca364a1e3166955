//! The crate's error type.

use std::io;

/// What can go wrong with a [`Process`](crate::Process) or a [`Pool`](crate::Pool).
///
/// `Display` strings are lowercase without a final period; OS failures keep their errno in
/// [`Error::Io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker running this task died (killed, `abort`, out of memory, `_exit` from inside
    /// the task) before returning its result. `exitcode` is Python's: the exit code, or minus
    /// the signal number; `None` if the fork server could not report it in time.
    #[error("worker {pid} died while running the task (exit code {exitcode:?})")]
    WorkerDied {
        /// The worker's pid.
        pid: i32,
        /// Its exit code, negative for a signal.
        exitcode: Option<i32>,
    },
    /// The task panicked in the worker; the message is the panic payload. The worker survives.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// An argument or result could not be encoded with `postcard` (message from `postcard`).
    #[error("could not encode: {0}")]
    Encode(String),
    /// An argument (in the worker) or a result (in the parent) could not be decoded.
    #[error("could not decode: {0}")]
    Decode(String),
    /// The deadline passed; the operation can be retried (nothing was lost).
    #[error("timed out")]
    Timeout,
    /// The pool was closed (`close`, `join` or drop) before this task could be submitted.
    #[error("pool is closed")]
    Closed,
    /// `terminate()` stopped the pool before this task finished.
    #[error("pool was terminated")]
    Terminated,
    /// The pool cannot run tasks any more: a worker died under
    /// [`Policy::BreakPool`](crate::Policy::BreakPool), or the fork server is gone.
    #[error("pool is broken: {0}")]
    Broken(String),
    /// This [`AsyncResult`](crate::AsyncResult) already handed out its value.
    #[error("result already taken")]
    Taken,
    /// The task's function (or the pool's initializer) lies in code the pool's workers do not
    /// have: a library loaded (`dlopen`) after the pool's fork server was forked (at
    /// [`init`](crate::init), or when the pool was built). Workers are forks of that image, so
    /// the address would jump into unmapped or different code there; the task is not sent.
    #[error(
        "task code at {addr:#x} ({module}) was loaded after the pool's fork server started; \
         its workers do not have it"
    )]
    CodeNotInWorkers {
        /// The function's address in this process.
        addr: u64,
        /// The file of the module holding it, as `dladdr` names it (empty if none).
        module: String,
    },
    /// The child of a [`ProcessHandle`](crate::ProcessHandle) was killed by `signal` before it
    /// sent its value.
    #[error("child {pid} was killed by signal {signal} before returning a value")]
    Killed {
        /// The child's pid.
        pid: i32,
        /// The signal's number.
        signal: i32,
    },
    /// The child of a [`ProcessHandle`](crate::ProcessHandle) exited with `exitcode` without
    /// sending a value ([`exit`](crate::exit) inside its closure).
    #[error("child {pid} exited with code {exitcode} without returning a value")]
    NoResult {
        /// The child's pid.
        pid: i32,
        /// Its exit code.
        exitcode: i32,
    },
    /// [`ThreadPolicy::Refuse`](crate::ThreadPolicy::Refuse) and the process runs `threads`
    /// threads: it was not forked.
    #[error("refusing to fork a process that runs {threads} threads")]
    Multithreaded {
        /// The number of threads found in `/proc/self/task`.
        threads: usize,
    },
    /// A [`PoolBuilder`](crate::PoolBuilder) setting is out of range (0 processes).
    #[error("invalid pool setting: {0}")]
    InvalidConfig(&'static str),
    /// A handle was used in a process other than the one that spawned its child (it was
    /// moved into a forked child): only the parent can join its child.
    #[error("this handle belongs to process {owner}, not to this one")]
    NotOwner {
        /// The pid of the process that spawned the child.
        owner: i32,
    },
    /// A message between the parent, the fork server and a worker failed.
    #[error("pipe error: {0}")]
    Pipe(#[from] ipc_pipe::Error),
    /// Any other OS error, errno preserved.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
