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
    /// A wait ran out of time (nothing was lost). No method returns it directly: it is what
    /// [`GetTimeoutError::Timeout`], [`JoinTimeoutError::Timeout`] and the not-ready states
    /// of the `try_` forms ([`TryGetError::Empty`], [`TryJoinError::Running`]: a zero timeout
    /// that ran out) become when converted into `Error` (so `?` works).
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

/// The error of [`AsyncResult::try_get`](crate::AsyncResult::try_get) and
/// [`IMap::try_next`](crate::IMap::try_next) (as `crossbeam_channel::TryRecvError`).
#[derive(Debug, thiserror::Error)]
pub enum TryGetError {
    /// The result has not arrived yet; the handle stays usable.
    #[error("result not ready yet")]
    Empty,
    /// The task failed, or the result was already taken: the crate's [`Error`].
    #[error(transparent)]
    Failed(Error),
}

impl TryGetError {
    /// Whether the result had not arrived yet.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryGetError::Empty)
    }

    /// The crate error, if the task failed.
    pub fn into_failed(self) -> Option<Error> {
        match self {
            TryGetError::Empty => None,
            TryGetError::Failed(e) => Some(e),
        }
    }
}

impl From<TryGetError> for Error {
    /// `Empty` becomes [`Error::Timeout`] (a zero timeout that ran out).
    fn from(e: TryGetError) -> Error {
        match e {
            TryGetError::Empty => Error::Timeout,
            TryGetError::Failed(e) => e,
        }
    }
}

/// The error of [`AsyncResult::get_timeout`](crate::AsyncResult::get_timeout) and
/// [`IMap::next_timeout`](crate::IMap::next_timeout) (as
/// `crossbeam_channel::RecvTimeoutError`).
#[derive(Debug, thiserror::Error)]
pub enum GetTimeoutError {
    /// The result did not arrive in time; the handle stays usable.
    #[error("timed out waiting for the result")]
    Timeout,
    /// The task failed, or the result was already taken: the crate's [`Error`].
    #[error(transparent)]
    Failed(Error),
}

impl GetTimeoutError {
    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, GetTimeoutError::Timeout)
    }

    /// The crate error, if the task failed.
    pub fn into_failed(self) -> Option<Error> {
        match self {
            GetTimeoutError::Timeout => None,
            GetTimeoutError::Failed(e) => Some(e),
        }
    }
}

impl From<GetTimeoutError> for Error {
    /// `Timeout` becomes [`Error::Timeout`].
    fn from(e: GetTimeoutError) -> Error {
        match e {
            GetTimeoutError::Timeout => Error::Timeout,
            GetTimeoutError::Failed(e) => e,
        }
    }
}

/// The error of [`Process::try_join`](crate::Process::try_join),
/// [`ProcessHandle::try_join`](crate::ProcessHandle::try_join) and
/// [`Pool::try_join`](crate::Pool::try_join).
#[derive(Debug, thiserror::Error)]
pub enum TryJoinError {
    /// The child (or the pool) still runs; nothing changed, the handle stays usable.
    #[error("still running")]
    Running,
    /// Joining failed: the crate's [`Error`] (for a `ProcessHandle`, the child's
    /// [`Error::Panicked`], [`Error::Killed`], ...).
    #[error(transparent)]
    Failed(Error),
}

impl TryJoinError {
    /// Whether the child (or pool) still runs.
    pub fn is_running(&self) -> bool {
        matches!(self, TryJoinError::Running)
    }

    /// The crate error, if joining failed.
    pub fn into_failed(self) -> Option<Error> {
        match self {
            TryJoinError::Running => None,
            TryJoinError::Failed(e) => Some(e),
        }
    }
}

impl From<TryJoinError> for Error {
    /// `Running` becomes [`Error::Timeout`] (a zero timeout that ran out).
    fn from(e: TryJoinError) -> Error {
        match e {
            TryJoinError::Running => Error::Timeout,
            TryJoinError::Failed(e) => e,
        }
    }
}

/// The error of [`Process::join_timeout`](crate::Process::join_timeout),
/// [`ProcessHandle::join_timeout`](crate::ProcessHandle::join_timeout) and
/// [`Pool::join_timeout`](crate::Pool::join_timeout).
#[derive(Debug, thiserror::Error)]
pub enum JoinTimeoutError {
    /// The child (or the pool's tasks) still ran when the time ran out; it is left running
    /// and the handle stays usable.
    #[error("timed out waiting to join")]
    Timeout,
    /// Joining failed: the crate's [`Error`].
    #[error(transparent)]
    Failed(Error),
}

impl JoinTimeoutError {
    /// Whether the time ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, JoinTimeoutError::Timeout)
    }

    /// The crate error, if joining failed.
    pub fn into_failed(self) -> Option<Error> {
        match self {
            JoinTimeoutError::Timeout => None,
            JoinTimeoutError::Failed(e) => Some(e),
        }
    }
}

impl From<JoinTimeoutError> for Error {
    /// `Timeout` becomes [`Error::Timeout`].
    fn from(e: JoinTimeoutError) -> Error {
        match e {
            JoinTimeoutError::Timeout => Error::Timeout,
            JoinTimeoutError::Failed(e) => e,
        }
    }
}

/// Whether a wait without a value ran out of time: the shape of
/// `std::sync::WaitTimeoutResult`, returned by
/// [`AsyncResult::wait_timeout`](crate::AsyncResult::wait_timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(pub(crate) bool);

impl WaitTimeoutResult {
    /// `true` if the time ran out before the awaited thing happened.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}
