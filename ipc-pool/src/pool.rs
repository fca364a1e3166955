//! [`Pool`]: worker processes that run `fn(A) -> R` tasks (Python's `multiprocessing.Pool`,
//! with `ProcessPoolExecutor`'s handling of dead workers, and better).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc_pipe::Connection;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dispatcher::{self, check_open, Collector, Done, Job, JobResult, Shared};
use crate::fork_server::WorkerConfig;
use crate::sync::Mutex;
use crate::sys;
use crate::task::{self, Callable, Spread, StarArgs};
use crate::{
    Error, GetTimeoutError, JoinTimeoutError, Result, TryGetError, TryJoinError, WaitTimeoutResult,
};

/// Worker time a chunk of `map`/`imap` aims at once its items' cost is measured.
const TARGET_CHUNK_NS: u64 = 10_000_000;
/// Worker time below which a chunk is not made smaller (amortises the round trip).
const MIN_CHUNK_NS: u64 = 500_000;
/// Estimated work kept submitted ahead, per worker.
const LOOKAHEAD_NS: u64 = 8_000_000;
/// Chunks kept submitted ahead at most.
const LOOKAHEAD_MAX: usize = 4096;
/// Items per chunk while the cost per item is unknown (input of known length).
const PROBE_CHUNK: usize = 16;
/// Items per chunk at most.
const CHUNK_MAX: usize = 1 << 20;
/// Items per chunk at most when the input's length is unknown (`imap` over an iterator that
/// may be endless): with at most `UNKNOWN_LEN_AHEAD` chunks per worker in flight, the
/// look-ahead stays a few thousand items however cheap the tasks are.
const UNKNOWN_LEN_CHUNK_MAX: usize = 256;
/// Chunks in flight per worker at most when the input's length is unknown.
const UNKNOWN_LEN_AHEAD: usize = 4;
/// How long dropping a pool waits for its tasks before terminating it.
pub const DROP_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pool does with the task(s) of a worker that dies while running them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each task in flight on the dead worker fails with [`Error::WorkerDied`]; the worker is
    /// replaced and the pool goes on (the default).
    #[default]
    FailTask,
    /// Run such a task again on another worker, up to this many times, then fail it with
    /// [`Error::WorkerDied`].
    Retry(u32),
    /// Fail the task with [`Error::WorkerDied`], and every other pending task with
    /// [`Error::Broken`]; the pool refuses new work (as `ProcessPoolExecutor`'s
    /// `BrokenProcessPool`).
    BreakPool,
}

/// A worker initializer as the builder keeps it.
#[derive(Clone, Debug)]
enum Init {
    /// `initializer(fn())`.
    Plain(fn()),
    /// `initializer_with(fn(A), args)`: the function's and its trampoline's addresses, and
    /// the arguments encoded once (or why they could not be).
    With {
        func: u64,
        tramp: u64,
        args: std::result::Result<Vec<u8>, String>,
    },
}

/// Configures a [`Pool`].
#[derive(Clone, Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<Init>,
    max_tasks_per_child: Option<u64>,
    policy: Policy,
    drop_timeout: Option<Duration>,
}

impl PoolBuilder {
    /// Number of worker processes (default: `std::thread::available_parallelism()`).
    #[must_use]
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function each worker runs once when it starts (Python's `initializer`). If it panics,
    /// the worker exits and the pool breaks ([`Error::Broken`]) instead of respawning it
    /// forever.
    /// Replaces an [`initializer_with`](Self::initializer_with).
    #[must_use]
    pub fn initializer(mut self, f: fn()) -> Self {
        self.initializer = Some(Init::Plain(f));
        self
    }

    /// A function each worker runs once when it starts, with `args` (Python's `initializer`
    /// and `initargs`). `args` is encoded (postcard) once, here; every worker, the first ones
    /// and every replacement, decodes its own copy and passes it to `f`. If `f` panics (or the
    /// arguments do not decode), the worker exits and the pool breaks ([`Error::Broken`]), as
    /// with [`initializer`](Self::initializer), which this replaces. Arguments that do not
    /// encode make [`build`](Self::build) fail with [`Error::Encode`]. After [`crate::init`]
    /// the encoded arguments travel to the process-wide server in one message, so they are
    /// limited to `ipc_pipe`'s default message size (64 MiB; more is [`Error::Pipe`] from
    /// `build`).
    ///
    /// # Example
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use ipc_pool::Pool;
    ///
    /// // Per-worker state, set once by the initializer in each worker process.
    /// static SCALE: AtomicU64 = AtomicU64::new(1);
    ///
    /// fn set_scale((scale, _label): (u64, String)) {
    ///     SCALE.store(scale, Ordering::Relaxed);
    /// }
    ///
    /// fn scaled(x: u64) -> u64 {
    ///     x * SCALE.load(Ordering::Relaxed)
    /// }
    ///
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .initializer_with(set_scale, (10, "tens".to_string()))
    ///     .build()?;
    /// assert_eq!(pool.map(scaled, 1..=3)?, [10, 20, 30]);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    #[must_use]
    pub fn initializer_with<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
    {
        let (func, tramp) = task::init_with_addrs(f);
        let args = encode_into(&args, Vec::new()).map_err(|e| e.to_string());
        self.initializer = Some(Init::With { func, tramp, args });
        self
    }

    /// A worker leaves after this many tasks and is replaced (Python's
    /// `maxtasksperchild`). A task is one `apply`, or one chunk of a `map`.
    #[must_use]
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// What happens to the task of a worker that dies (default [`Policy::FailTask`]).
    #[must_use]
    pub fn on_worker_death(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How long dropping the pool waits for its submitted tasks before it terminates the
    /// workers (default [`DROP_JOIN_TIMEOUT`]). [`Pool::join`] is not affected.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::{Policy, Pool};
    ///
    /// let pool = Pool::builder()
    ///     .processes(2)
    ///     .max_tasks_per_child(100)
    ///     .on_worker_death(Policy::Retry(1))
    ///     .drop_timeout(Duration::from_secs(1))
    ///     .build()?;
    /// assert_eq!(pool.processes(), 2);
    /// assert_eq!(pool.apply(|x: u8| x + 1, 1)?, 2);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    #[must_use]
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = Some(timeout);
        self
    }

    /// Forks the fork server and the workers, then starts the dispatcher thread.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0 processes; [`Error::Io`] or [`Error::Pipe`] if a fork,
    /// a socket or the fork server fails.
    pub fn build(self) -> Result<Pool> {
        let processes = match self.processes {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        if processes == 0 {
            return Err(Error::InvalidConfig("a pool needs at least one process"));
        }
        let (init, init_tramp, init_args) = match self.initializer {
            None => (0, 0, Vec::new()),
            Some(Init::Plain(f)) => (task::init_addr(f), 0, Vec::new()),
            Some(Init::With { func, tramp, args }) => (
                func,
                tramp,
                args.map_err(|e| Error::Encode(format!("initializer arguments: {e}")))?,
            ),
        };
        let config = WorkerConfig {
            init,
            init_tramp,
            init_args,
            max_jobs: self.max_tasks_per_child.unwrap_or(u64::MAX),
        };
        let shared = dispatcher::start(processes, config, self.policy)?;
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ipc-pool-dispatcher".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    dispatcher::run(&sh);
                }));
                if r.is_err() {
                    // Never leave callers waiting on a dead dispatcher.
                    let mut st = sh.state.lock();
                    dispatcher::break_pool(&mut st, "dispatcher thread panicked".into());
                    st.finished = true;
                    drop(st);
                    sh.finished_cv.notify_all();
                }
            })?;
        Ok(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
            processes,
            drop_timeout: self.drop_timeout.unwrap_or(DROP_JOIN_TIMEOUT),
        })
    }
}

/// A pool of worker processes running `fn(A) -> R` tasks (Python's
/// `multiprocessing.Pool`).
///
/// Tasks are plain function pointers (functions and non-capturing closures): workers are
/// forks of this program, so the pointer names the same code there. Arguments and results
/// travel as postcard bytes over one socket per worker. A worker that dies fails exactly the
/// tasks it was running with [`Error::WorkerDied`] and is replaced; a panicking task is
/// [`Error::Panicked`] and its worker lives on. Nothing hangs on a dead worker.
///
/// All methods take `&self`; a `Pool` can be shared between threads (`Send + Sync`).
///
/// # Example
/// ```
/// use ipc_pool::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(square, 7)?, 49);
/// assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
/// let doubled: Vec<u64> = pool.imap(|x: u64| x * 2, 0..3).collect::<Result<_, _>>()?;
/// assert_eq!(doubled, [0, 2, 4]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), ipc_pool::Error>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    processes: usize,
    drop_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

fn encode_into<T: Serialize>(v: &T, mut buf: Vec<u8>) -> Result<Vec<u8>> {
    task::encode_onto(v, &mut buf).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(buf)
}

fn decode_one<R: DeserializeOwned>(d: Done) -> Result<R> {
    let mut v = Vec::with_capacity(1);
    task::decode_results(&d.bytes, d.count, &mut v).map_err(Error::Decode)?;
    v.pop()
        .ok_or_else(|| Error::Decode("missing result".into()))
}

/// How a direct exchange with a worker (`apply`, or an awaited `apply_async` under tokio)
/// ended.
enum Direct {
    /// The worker answered (status, payload).
    Answer(u8, Vec<u8>),
    /// Something broke; the dispatcher takes over.
    Fault,
}

/// Starts a direct exchange with idle worker `i` (under the state lock): builds the frame of
/// one job of `payload` and records the job in the worker's in-flight table first, so that
/// the worker's death still resolves it (`WorkerDied`) through the dispatcher. Returns the
/// frame, the job id and the worker id.
fn start_direct(
    st: &mut dispatcher::State,
    i: usize,
    (tramp, func): (u64, u64),
    payload: Vec<u8>,
    coll: &Arc<Collector>,
) -> (Vec<u8>, u64, u64) {
    let mut frame = Vec::with_capacity(task::JOB_HDR + payload.len());
    let id = st.next_job;
    task::put_job_header(&mut frame, id, tramp, func, 1, payload.len() as u64);
    frame.extend_from_slice(&payload);
    let keep = matches!(st.policy, Policy::Retry(_));
    let mut job = Pool::new_job(
        st,
        (tramp, func),
        1,
        if keep { payload } else { Vec::new() },
        Arc::clone(coll),
        0,
        0,
    );
    let max_jobs = st.max_jobs;
    st.outstanding += 1;
    let w = &mut st.workers[i];
    w.frames += 1;
    job.frame = w.frames;
    w.push(job, max_jobs);
    (frame, id, w.id)
}

/// The outcome of a direct exchange's reply frame for job `id`: exactly one record, for it.
fn parse_reply(buf: &[u8], id: u64) -> Direct {
    let mut rest = buf;
    match task::next_result(&mut rest) {
        Ok(r) if r.id == id && r.count == 1 && rest.is_empty() => {
            Direct::Answer(r.status, r.payload.to_vec())
        }
        _ => Direct::Fault,
    }
}

/// Bookkeeping after a direct answer for job `id` of worker `wid` (its connection back in
/// the table): the job leaves the in-flight table, and the dispatcher is woken if it has
/// something to do (a retiring or dead worker, queued work, a stop).
fn settle_answer(shared: &Shared, st: &mut dispatcher::State, wid: u64, id: u64) {
    let Some(w) = st.workers.iter_mut().find(|w| w.id == wid) else {
        return;
    };
    if w.take(id).is_some() {
        w.completed += 1;
        st.outstanding -= 1;
    }
    let wake = {
        let w = st.workers.iter().find(|w| w.id == wid);
        w.is_some_and(|w| w.retiring || w.dead.is_some()) || !st.queue.is_empty() || st.stopping
    };
    if wake {
        shared.wake(st);
    }
}

/// After a failed direct exchange with worker `wid`: makes sure it is dead (it may only have
/// spoken nonsense) and lets the dispatcher resolve the job by its death.
fn settle_fault(shared: &Shared, st: &mut dispatcher::State, wid: u64) {
    if let Some(w) = st.workers.iter().find(|w| w.id == wid) {
        let _ = sys::pidfd_signal(w.pidfd.as_fd(), libc::SIGKILL);
    }
    shared.wake(st);
}

/// A direct answer's status and payload as the job's result.
fn answer(status: u8, bytes: Vec<u8>) -> JobResult {
    let msg = || String::from_utf8_lossy(&bytes).into_owned();
    match status {
        task::ST_OK => Ok(Done { count: 1, bytes }),
        task::ST_PANICKED => Err(Error::Panicked(msg())),
        task::ST_DECODE => Err(Error::Decode(msg())),
        _ => Err(Error::Encode(msg())),
    }
}

impl Pool {
    /// A pool of `processes` workers with the default settings.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the live workers (they change as workers are replaced).
    pub fn pids(&self) -> Vec<i32> {
        let st = self.shared.state.lock();
        st.workers
            .iter()
            .filter(|w| w.dead.is_none())
            .map(|w| w.pid)
            .collect()
    }

    fn new_job(
        st: &mut dispatcher::State,
        (tramp, func): (u64, u64),
        count: u32,
        payload: Vec<u8>,
        sink: Arc<Collector>,
        index: usize,
        est_ns: u64,
    ) -> Job {
        let id = st.next_job;
        st.next_job += 1;
        let len = payload.len();
        Job {
            id,
            tramp,
            func,
            count,
            payload,
            sink,
            index,
            retries: 0,
            est_ns,
            len,
            frame: 0,
        }
    }

    /// Runs `f(arg)` in a worker and waits for the result (Python's `apply`).
    ///
    /// When a worker is idle, the calling thread writes the task to it and waits for the
    /// answer itself (one write, one read); otherwise the task is queued.
    ///
    /// # Errors
    /// [`Error::Panicked`] if `f` panicked; [`Error::WorkerDied`] if the worker died running
    /// it (under [`Policy::FailTask`]); [`Error::Encode`]/[`Error::Decode`] for an argument or
    /// result postcard cannot carry; [`Error::Closed`], [`Error::Terminated`] or
    /// [`Error::Broken`] if the pool takes no more work.
    ///
    /// # Peer death
    /// A worker killed mid-task is seen through its pidfd within a bounded time; the call
    /// returns `WorkerDied` (or runs the task again under [`Policy::Retry`]).
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let tramp = task::trampoline_addr::<fn(A) -> R>();
        let func = f.addr();
        self.check_code(tramp, func)?;
        let payload = encode_into(&arg, Vec::new())?;
        let coll = Collector::new();
        let mut st = self.shared.state.lock();
        check_open(&st)?;
        let direct = if st.queue.is_empty() {
            st.workers.iter().position(dispatcher::Worker::is_idle)
        } else {
            None
        };
        let Some(i) = direct else {
            let job = Self::new_job(&mut st, (tramp, func), 1, payload, Arc::clone(&coll), 0, 0);
            self.shared.submit(&mut st, job)?;
            drop(st);
            return wait_one(&coll);
        };
        let (frame, id, wid) = start_direct(&mut st, i, (tramp, func), payload, &coll);
        let w = &mut st.workers[i];
        let Some(conn) = w.conn.take() else {
            unreachable!("is_idle checked the connection")
        };
        // The worker stays in the table while its connection is checked out (the dispatcher
        // removes only workers whose connection it holds), so its pidfd number stays valid.
        let pidfd = w.pidfd.as_raw_fd();
        drop(st);
        let (conn, outcome) = direct_exchange(conn, &frame, pidfd, id);
        let mut st = self.shared.state.lock();
        let w = st.workers.iter_mut().find(|w| w.id == wid);
        let Some(w) = w else {
            // Not expected (`shutdown` keeps checked-out workers), but never a panic: the
            // job was resolved with the worker's removal; wait for that result.
            drop(st);
            drop(conn);
            return wait_one(&coll);
        };
        w.conn = Some(conn);
        match outcome {
            Direct::Answer(status, bytes) => {
                settle_answer(&self.shared, &mut st, wid, id);
                drop(st);
                answer(status, bytes).and_then(decode_one)
            }
            Direct::Fault => {
                settle_fault(&self.shared, &mut st, wid);
                drop(st);
                wait_one(&coll)
            }
        }
    }

    /// Queues `f(arg)` and returns at once (Python's `apply_async`).
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::Pool;
    ///
    /// fn slow_square(x: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     x * x
    /// }
    ///
    /// let pool = Pool::new(2)?;
    /// let pending: Vec<_> = (0..4)
    ///     .map(|x| pool.apply_async(slow_square, x))
    ///     .collect::<Result<_, _>>()?;
    /// let mut first = pool.apply_async(slow_square, 9)?;
    /// assert_eq!(first.get_timeout(Duration::from_secs(20))?, 81);
    /// let got: Vec<u64> = pending.into_iter().map(|r| r.get()).collect::<Result<_, _>>()?;
    /// assert_eq!(got, [0, 1, 4, 9]);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    ///
    /// With the `async` feature the [`AsyncResult`] is a `Future`:
    /// `pool.apply_async(f, x)?.await` gives what [`AsyncResult::get`] would, woken by the
    /// dispatcher thread when the result arrives (no thread of its own, any runtime).
    ///
    /// With the `tokio` feature, called inside a tokio runtime with I/O while nothing is
    /// queued and a worker is idle (and the argument encodes to at most 16 KiB), the job is
    /// written to that worker at once and the worker is lent to the `AsyncResult`: awaited, it
    /// reads the reply itself when the runtime's reactor reports the worker's socket readable,
    /// as the blocking [`apply`](Self::apply) does (no dispatcher thread in between). Dropped,
    /// or used through a blocking method, it gives the worker back to the dispatcher, which
    /// reads the reply; while tasks are queued or the pool stops, the dispatcher takes a lent
    /// worker back itself once its reply arrives, so a result that is never awaited holds no
    /// worker.
    ///
    /// # Errors
    /// [`Error::Encode`] if `arg` cannot be encoded; [`Error::Closed`], [`Error::Terminated`]
    /// or [`Error::Broken`] if the pool takes no more work. The task's own errors come from
    /// [`AsyncResult::get`] (or the `.await`).
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let tramp = task::trampoline_addr::<fn(A) -> R>();
        self.check_code(tramp, f.addr())?;
        let payload = encode_into(&arg, Vec::new())?;
        let coll = Collector::new();
        let mut st = self.shared.state.lock();
        #[cfg(feature = "tokio")]
        let payload = match self.lend(&mut st, (tramp, f.addr()), payload, &coll)? {
            Ok(lent) => {
                drop(st);
                let mut r = AsyncResult::new(coll, 1, decode_single::<R>);
                r.lent = lent;
                return Ok(r);
            }
            Err(payload) => payload,
        };
        let job = Self::new_job(
            &mut st,
            (tramp, f.addr()),
            1,
            payload,
            Arc::clone(&coll),
            0,
            0,
        );
        self.shared.submit(&mut st, job)?;
        Ok(AsyncResult::new(coll, 1, decode_single::<R>))
    }

    /// Applies `f` to every item, in parallel, and returns the results in input order
    /// (Python's `map`). Chunking is adaptive: one small probe chunk per worker (at most
    /// Python's default `len / (4 × workers)` items), then chunks sized from the measured cost
    /// per item to take between 0.5 and 10 ms of worker time, shrinking towards the end (a
    /// share of what remains, the last stretch cut into one chunk per worker) so the workers
    /// finish together.
    ///
    /// # Errors
    /// The first error in input order (a task's panic, a dead worker, an encoding failure,
    /// a closed pool); tasks already submitted still run, their results are dropped.
    ///
    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]), so the
    /// call returns `WorkerDied`.
    pub fn map<A, R, I>(&self, f: fn(A) -> R, iter: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Feed::<fn(A) -> R, I::IntoIter>::new(self, f, iter.into_iter(), None).collect_all()
    }

    /// [`map`](Self::map) with a fixed number of items per task (Python's `chunksize`).
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn map_chunked<A, R, I>(&self, f: fn(A) -> R, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        Feed::<fn(A) -> R, I::IntoIter>::new(self, f, iter.into_iter(), Some(chunksize.max(1)))
            .collect_all()
    }

    /// Submits `f(item)` for every item at once and returns without waiting (Python's
    /// `map_async`): the [`AsyncResult`] gives the results in input order, as
    /// [`map`](Self::map) would, through [`get`](AsyncResult::get) and friends, or `.await`
    /// with the `async` feature. The input is read (and encoded) whole before anything is
    /// submitted, then cut into chunks of Python's default size, `len / (4 × workers)`
    /// rounded up (at least 1): the cost per item is not measured first, as `map` does.
    ///
    /// The result is ready once every chunk has finished; it is then the first error in
    /// input order, if any chunk failed.
    ///
    /// # Example
    /// ```
    /// let pool = ipc_pool::Pool::new(2)?;
    /// let squares = pool.map_async(|x: u64| x * x, 0..10)?;
    /// // ... other work while the workers run ...
    /// assert_eq!(squares.get()?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Encode`] if an item cannot be encoded (nothing is submitted then);
    /// [`Error::Closed`], [`Error::Terminated`] or [`Error::Broken`] if the pool takes no more
    /// work; [`Error::CodeNotInWorkers`]. The tasks' own errors come from the `AsyncResult`.
    ///
    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]), so the
    /// result is [`Error::WorkerDied`].
    pub fn map_async<A, R, I>(&self, f: fn(A) -> R, iter: I) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iter, None)
    }

    /// [`map_async`](Self::map_async) with a fixed number of items per task (Python's
    /// `chunksize`).
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async).
    pub fn map_async_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        iter: I,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iter, Some(chunksize.max(1)))
    }

    fn map_async_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        iter: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let tramp = task::trampoline_addr::<fn(A) -> R>();
        let func = f.addr();
        self.check_code(tramp, func)?;
        let items: Vec<A> = iter.into_iter().collect();
        let size = chunksize
            .unwrap_or_else(|| items.len().div_ceil(4 * self.processes))
            .clamp(1, CHUNK_MAX);
        let mut chunks: Vec<(u32, Vec<u8>)> = Vec::with_capacity(items.len().div_ceil(size));
        let mut it = items.into_iter().peekable();
        while it.peek().is_some() {
            let mut payload = Vec::new();
            let mut count: u32 = 0;
            for a in it.by_ref().take(size) {
                task::encode_onto(&a, &mut payload).map_err(|e| Error::Encode(e.to_string()))?;
                count += 1;
            }
            chunks.push((count, payload));
        }
        let coll = Collector::new();
        let expected = chunks.len();
        let mut st = self.shared.state.lock();
        // All or nothing: checked once, under the lock every submission below holds.
        check_open(&st)?;
        for (index, (count, payload)) in chunks.into_iter().enumerate() {
            let job = Self::new_job(
                &mut st,
                (tramp, func),
                count,
                payload,
                Arc::clone(&coll),
                index,
                0,
            );
            self.shared.submit(&mut st, job)?;
        }
        drop(st);
        Ok(AsyncResult::new(coll, expected, decode_chunks::<R>))
    }

    /// Applies `f` to every tuple of arguments, spread over its parameters (Python's
    /// `starmap`): `f(a1, ..., an)` for each item `(a1, ..., an)`, `n` from 1 to 8 (see
    /// [`StarArgs`]). Results come in input order; chunking is as in [`map`](Self::map).
    ///
    /// `f` is a function pointer `fn(A1, ..., An) -> R`, its type found from the items: a
    /// non-capturing closure fits as it is; a named function is cast to its pointer type,
    /// `pool.starmap(add as fn(u64, u64) -> u64, pairs)` (or `as fn(_, _) -> _` when the
    /// items' types are already fixed), since a function item has a type of its own that
    /// coerces only to a pointer type already known.
    ///
    /// # Example
    /// ```
    /// fn weighted(a: i64, b: i64, c: i64, w: u8) -> i64 {
    ///     (a + b + c) * i64::from(w)
    /// }
    ///
    /// let pool = ipc_pool::Pool::new(2)?;
    /// let pow = pool.starmap(|b: u64, e: u32| b.pow(e), [(2, 10), (3, 3), (10, 2)])?;
    /// assert_eq!(pow, [1024, 27, 100]);
    /// // A named function of four parameters: cast it to its pointer type.
    /// let w = pool.starmap(
    ///     weighted as fn(i64, i64, i64, u8) -> i64,
    ///     [(1, 2, 3, 2), (4, 5, 6, 1)],
    /// )?;
    /// assert_eq!(w, [12, 15]);
    /// // One parameter: the items are one-field tuples.
    /// let neg = pool.starmap(|x: i32| -x, [(1,), (2,)])?;
    /// assert_eq!(neg, [-1, -2]);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`map`](Self::map).
    ///
    /// # Peer death
    /// As [`map`](Self::map): a worker's death fails the chunk it was running (under
    /// [`Policy::FailTask`]).
    pub fn starmap<T, R, I>(&self, f: T::Fn<R>, iter: I) -> Result<Vec<R>>
    where
        T: StarArgs,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = T>,
    {
        Feed::<Spread<T, R>, I::IntoIter>::new(self, Spread(f), iter.into_iter(), None)
            .collect_all()
    }

    /// A lazy, ordered iterator of `f(item)` (Python's `imap`). Items are pulled from `iter`
    /// only as results are consumed, with a bounded look-ahead (a few chunks per worker), so
    /// memory does not grow with the input and `iter` may be endless. Chunks start at one item
    /// and grow with the measured cost, as in [`map`](Self::map); when `iter`'s length is
    /// unknown, chunks stop at 256 items and at most 4 per worker are in flight, so the
    /// look-ahead stays a few thousand items however cheap the tasks are.
    ///
    /// Each item is `Ok(result)`; a failed chunk yields one `Err` in place of its items and
    /// the iteration goes on with the next chunk.
    ///
    /// # Example
    /// ```
    /// let pool = ipc_pool::Pool::new(2)?;
    /// // An endless input: only what is consumed (plus a bounded look-ahead) is computed.
    /// let first: Vec<u64> = pool
    ///     .imap(|x: u64| x * x, 0..)
    ///     .take(5)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, iter: I) -> IMap<'_, A, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        IMap {
            feed: Feed::new(self, f, iter.into_iter(), None),
            buf: VecDeque::new(),
        }
    }

    /// [`imap`](Self::imap) with a fixed number of items per task.
    pub fn imap_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        iter: I,
        chunksize: usize,
    ) -> IMap<'_, A, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        IMap {
            feed: Feed::new(self, f, iter.into_iter(), Some(chunksize.max(1))),
            buf: VecDeque::new(),
        }
    }

    /// As [`imap`](Self::imap), but results come in completion order (Python's
    /// `imap_unordered`).
    ///
    /// # Example
    /// ```
    /// let pool = ipc_pool::Pool::new(2)?;
    /// let mut got: Vec<u32> = pool
    ///     .imap_unordered(|x: u32| x + 100, 0..50)
    ///     .collect::<Result<_, _>>()?;
    /// got.sort_unstable();
    /// assert_eq!(got, (100..150).collect::<Vec<_>>());
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        iter: I,
    ) -> IMapUnordered<'_, A, R, I::IntoIter>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        IMapUnordered {
            feed: Feed::new(self, f, iter.into_iter(), None),
            buf: VecDeque::new(),
        }
    }

    /// Refuses new tasks; those already submitted still run (Python's `close`).
    pub fn close(&self) {
        let mut st = self.shared.state.lock();
        st.closed = true;
    }

    /// Closes the pool, waits for every submitted task, then stops the workers and the fork
    /// server and reaps them (Python's `close(); join()`). Afterwards no child process of the
    /// pool remains.
    ///
    /// # Errors
    /// Never fails today; the `Result` leaves room for reporting a dispatcher failure.
    ///
    /// # Peer death
    /// A task whose worker dies is resolved (`WorkerDied`) like any other, so `join` does not
    /// wait for it; only a task that never returns keeps `join` waiting (use
    /// [`join_timeout`](Self::join_timeout) or [`terminate`](Self::terminate)).
    pub fn join(&self) -> Result<()> {
        self.begin_stop();
        let mut st = self.shared.state.lock();
        while !st.finished {
            st = self.shared.finished_cv.wait(st);
        }
        drop(st);
        self.reap_thread();
        Ok(())
    }

    /// [`join`](Self::join) if the pool has already finished, without waiting: after
    /// [`terminate`](Self::terminate), or a [`join_timeout`](Self::join_timeout) that timed
    /// out and whose tasks have since ended. Unlike `join` it does not close the pool: the
    /// shutdown `join` starts waits (bounded) for the fork server, which a `try_` call must not
    /// do.
    ///
    /// # Errors
    /// [`TryJoinError::Running`] if the pool has not finished (nothing changed).
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = ipc_pool::Pool::new(1)?;
    /// assert!(pool.try_join().unwrap_err().is_running());
    /// pool.terminate();
    /// while pool.try_join().is_err() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn try_join(&self) -> Result<(), TryJoinError> {
        if !self.shared.state.lock().finished {
            return Err(TryJoinError::Running);
        }
        self.reap_thread();
        Ok(())
    }

    /// [`join`](Self::join) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`JoinTimeoutError::Timeout`] if tasks still run after `timeout` (the pool is closed,
    /// and keeps working; call `join`, `try_join` or `terminate` later).
    ///
    /// # Peer death
    /// As [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        self.begin_stop();
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.shared.state.lock();
        while !st.finished {
            let (g, timed_out) = self.shared.finished_cv.wait_until(st, deadline);
            st = g;
            if timed_out && !st.finished {
                return Err(JoinTimeoutError::Timeout);
            }
        }
        drop(st);
        self.reap_thread();
        Ok(())
    }

    /// Kills the workers at once: every pending task fails with [`Error::Terminated`], and
    /// the pool stops (Python's `terminate`). Call [`join`](Self::join) to wait until
    /// everything is reaped.
    pub fn terminate(&self) {
        let mut st = self.shared.state.lock();
        st.terminated = true;
        st.closed = true;
        st.stopping = true;
        dispatcher::fail_all(&mut st, || Error::Terminated);
        self.shared.wake(&mut st);
    }

    /// The direct async path of `apply_async` (feature `tokio`): inside a tokio runtime with
    /// I/O, with nothing queued and a worker idle, the job is written to that worker at once
    /// and the worker is lent to the `AsyncResult`, which reads the reply itself when the
    /// runtime's reactor reports the socket readable. `Ok(Err(payload))`: not taken (the
    /// caller queues the job); `Ok(Ok(lent))`: submitted (`None` if the write failed, the
    /// dispatcher then resolves the job by the worker's death).
    #[cfg(feature = "tokio")]
    #[allow(clippy::type_complexity)]
    fn lend(
        &self,
        st: &mut dispatcher::State,
        code: (u64, u64),
        payload: Vec<u8>,
        coll: &Arc<Collector>,
    ) -> Result<std::result::Result<Option<Box<Lent>>, Vec<u8>>> {
        check_open(st)?;
        if payload.len() > DIRECT_ASYNC_MAX || !st.queue.is_empty() {
            return Ok(Err(payload));
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(Err(payload));
        };
        let rt = rt.id();
        let Some(i) = st.workers.iter().position(dispatcher::Worker::is_idle) else {
            return Ok(Err(payload));
        };
        let w = &mut st.workers[i];
        let fd = match &w.reg {
            Some((id, fd)) if *id == rt => Arc::clone(fd),
            _ => {
                // A duplicate of the socket is what the reactor watches: the table's
                // connection may be closed (its worker removed) while a future still holds
                // the registration.
                let dup = w
                    .conn
                    .as_ref()
                    .and_then(|c| c.as_fd().try_clone_to_owned().ok());
                let Some(fd) = dup.and_then(sys::register_readable) else {
                    return Ok(Err(payload));
                };
                let fd = Arc::new(fd);
                w.reg = Some((rt, Arc::clone(&fd)));
                fd
            }
        };
        let (frame, id, wid) = start_direct(st, i, code, payload, coll);
        let w = &mut st.workers[i];
        w.lent = Some(id);
        let sent = w
            .conn
            .as_mut()
            .is_some_and(|c| match c.try_send_bytes(&frame) {
                // An idle worker's socket is empty, so a frame this small goes whole; a tail
                // left anyway is written now (the worker is reading).
                Ok(()) => c.pending_bytes() == 0 || c.flush().is_ok(),
                Err(_) => false,
            });
        if !sent {
            w.lent = None;
            settle_fault(&self.shared, st, wid);
            return Ok(Ok(None));
        }
        Ok(Ok(Some(Box::new(Lent {
            shared: Arc::clone(&self.shared),
            wid,
            id,
            rt,
            fd,
            buf: Vec::new(),
            fresh: true,
        }))))
    }

    /// Fails a task whose trampoline or function is not in the workers' image.
    fn check_code(&self, tramp: u64, func: u64) -> Result<()> {
        self.shared.code.check(func)?;
        self.shared.code.check(tramp)
    }

    fn begin_stop(&self) {
        let mut st = self.shared.state.lock();
        st.closed = true;
        st.stopping = true;
        self.shared.wake(&mut st);
    }

    fn reap_thread(&self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    /// Closes the pool and waits up to its drop timeout ([`PoolBuilder::drop_timeout`],
    /// default [`DROP_JOIN_TIMEOUT`]) for its tasks; then terminates it and waits for the
    /// workers to be reaped.
    fn drop(&mut self) {
        if self.join_timeout(self.drop_timeout).is_err() {
            self.terminate();
            let _ = self.join();
        }
    }
}

/// Writes `frame` to a checked-out worker and waits for its answer on the socket, watching
/// its pidfd. Gives the connection back with the outcome.
fn direct_exchange(
    mut conn: Connection,
    frame: &[u8],
    pidfd: RawFd,
    id: u64,
) -> (Connection, Direct) {
    if conn.send_bytes(frame).is_err() {
        return (conn, Direct::Fault);
    }
    let mut buf = Vec::new();
    loop {
        let mut p = [sys::pollin(conn.as_raw_fd()), sys::pollin(pidfd)];
        if sys::poll(&mut p, None).is_err() {
            return (conn, Direct::Fault);
        }
        let got = if p[0].revents != 0 {
            conn.recv_bytes_into(&mut buf).is_ok()
        } else if p[1].revents != 0 {
            // It died; an answer may still have made it.
            conn.try_recv_bytes_into(&mut buf).is_ok()
        } else {
            continue;
        };
        if !got {
            return (conn, Direct::Fault);
        }
        return (conn, parse_reply(&buf, id));
    }
}

fn wait_one<R: DeserializeOwned>(coll: &Collector) -> Result<R> {
    let mut c = coll.inner.lock();
    loop {
        if let Some((_, r)) = c.ready.pop() {
            return r.and_then(decode_one);
        }
        c = coll.cv.wait(c);
    }
}

// ------------------------------------------------------------ AsyncResult

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's
/// `AsyncResult` and `MapResult`).
///
/// The task runs whether or not this handle is kept; dropping it discards the result.
///
/// With the `async` feature it is a [`Future`](std::future::Future) of `Result<R>`:
/// `pool.apply_async(f, x)?.await` (see [`Pool::apply_async`]). The future is runtime-agnostic
/// (a std `Waker`): the pool's dispatcher thread, which receives the result from the worker,
/// wakes it directly. Awaiting it does not take the value out of reach of the other methods
/// until it completes: a `&mut AsyncResult` awaited under a timeout (as with
/// `tokio::time::timeout(d, &mut r)`) and cancelled leaves the handle as it was, and the
/// result can be awaited or [`get`](Self::get) later.
///
/// # Cancel safety
/// Dropping the future (the `AsyncResult`, or a `&mut` borrow of it being awaited) before it
/// completes leaves nothing claimed or held: the task runs as it would have, its result goes
/// nowhere (or stays for the handle), and the waker it registered is released.
pub struct AsyncResult<R> {
    coll: Arc<Collector>,
    /// Results (jobs) that make the value: 1 for `apply_async`, the chunks of a `map_async`.
    expected: usize,
    /// Turns the delivered results into the value.
    decode: fn(Vec<(usize, JobResult)>) -> Result<R>,
    taken: bool,
    /// A poll left a waker in the collector (released on drop).
    #[cfg(feature = "async")]
    registered: bool,
    /// The worker lent to this result by the direct async path (feature `tokio`).
    #[cfg(feature = "tokio")]
    lent: Option<Box<Lent>>,
}

/// Payloads up to this size may take the direct async path (an idle worker's empty socket
/// takes such a frame whole, without blocking).
#[cfg(feature = "tokio")]
const DIRECT_ASYNC_MAX: usize = 16 << 10;

/// A worker lent to an `AsyncResult` (feature `tokio`): its job was written, and the future
/// reads the reply from the worker's connection (left in the table, read under the state
/// lock) when the reactor reports `fd`, a registered duplicate of the socket, readable. The
/// worker's death is the dispatcher's business (it watches every pidfd and resolves the job
/// into the collector, whose waker the future also sets).
#[cfg(feature = "tokio")]
struct Lent {
    shared: Arc<Shared>,
    wid: u64,
    id: u64,
    /// The runtime `fd` is registered with: polled elsewhere, the worker is handed back.
    rt: tokio::runtime::Id,
    fd: Arc<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    buf: Vec<u8>,
    /// No read tried yet: the job was just written, so the first poll asks the reactor
    /// first (a reply that is there already is reported ready: the registration's readiness
    /// was cleared after the last reply read through it, or it is new, and epoll reports
    /// data present when an fd is added).
    fresh: bool,
}

#[cfg(feature = "tokio")]
impl Lent {
    /// Hands the worker back to the dispatcher if it is still lent for this job (nothing is
    /// lost: the job is in the worker's in-flight table, and any part of the reply read so far
    /// is in the connection's buffer; the dispatcher reads the rest and delivers the result).
    fn hand_back(&self) {
        let mut st = self.shared.state.lock();
        if let Some(w) = st.workers.iter_mut().find(|w| w.id == self.wid) {
            if w.lent == Some(self.id) {
                w.lent = None;
                self.shared.wake(&mut st);
            }
        }
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl<R> AsyncResult<R> {
    fn new(
        coll: Arc<Collector>,
        expected: usize,
        decode: fn(Vec<(usize, JobResult)>) -> Result<R>,
    ) -> AsyncResult<R> {
        AsyncResult {
            coll,
            expected,
            decode,
            taken: false,
            #[cfg(feature = "async")]
            registered: false,
            #[cfg(feature = "tokio")]
            lent: None,
        }
    }

    /// Hands a lent worker back to the dispatcher before a blocking or non-async call, which
    /// waits on the collector (feature `tokio`; nothing to do otherwise).
    fn unlend(&self) {
        #[cfg(feature = "tokio")]
        if let Some(l) = &self.lent {
            l.hand_back();
        }
    }
}

/// The value of an `apply_async`: its one result.
fn decode_single<R: DeserializeOwned>(mut v: Vec<(usize, JobResult)>) -> Result<R> {
    match v.pop() {
        Some((_, r)) => r.and_then(decode_one),
        None => Err(Error::Decode("missing result".into())),
    }
}

/// The value of a `map_async`: its chunks in input order; the first failed chunk's error.
fn decode_chunks<R: DeserializeOwned>(mut v: Vec<(usize, JobResult)>) -> Result<Vec<R>> {
    v.sort_unstable_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    for (_, r) in v {
        let d = r?;
        task::decode_results(&d.bytes, d.count, &mut out).map_err(Error::Decode)?;
    }
    Ok(out)
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Whether the result has arrived (or was taken). Never blocks.
    pub fn ready(&self) -> bool {
        self.unlend();
        self.taken || self.coll.inner.lock().ready.len() >= self.expected
    }

    /// Waits until the result has arrived (Python's `wait()`).
    ///
    /// # Peer death
    /// A worker that dies running the task resolves it (`WorkerDied`, under
    /// [`Policy::FailTask`]), which ends the wait.
    pub fn wait(&self) {
        self.unlend();
        let mut c = self.coll.inner.lock();
        while !self.taken && c.ready.len() < self.expected {
            c = self.coll.cv.wait(c);
        }
    }

    /// Waits at most `timeout` for the result (Python's `wait(timeout)`);
    /// [`timed_out()`](WaitTimeoutResult::timed_out) is `true` if it has not arrived.
    ///
    /// # Peer death
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> WaitTimeoutResult {
        WaitTimeoutResult(!self.wait_until(Instant::now().checked_add(timeout)))
    }

    /// Waits until `deadline` (`None`: none); whether the result has arrived.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.unlend();
        let mut c = self.coll.inner.lock();
        while !self.taken && c.ready.len() < self.expected {
            let (g, timed_out) = self.coll.cv.wait_until(c, deadline);
            c = g;
            if timed_out {
                return self.taken || c.ready.len() >= self.expected;
            }
        }
        true
    }

    /// Waits for the task and returns its result (Python's `get()`).
    ///
    /// # Errors
    /// As [`Pool::apply`] (for a [`Pool::map_async`], as [`Pool::map`]); [`Error::Taken`] if
    /// the value was already taken by [`try_get`](Self::try_get),
    /// [`get_timeout`](Self::get_timeout) or an `.await` that completed.
    ///
    /// # Peer death
    /// As [`wait`](Self::wait): a dead worker's task is [`Error::WorkerDied`].
    pub fn get(mut self) -> Result<R> {
        if self.taken {
            return Err(Error::Taken);
        }
        self.wait();
        self.take().unwrap_or(Err(Error::Taken))
    }

    /// The result if it has arrived, without waiting.
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if it has not arrived (the handle stays usable);
    /// [`TryGetError::Failed`] with the task's error (as [`Pool::apply`]), or with
    /// [`Error::Taken`] after the value was taken.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::{Pool, TryGetError};
    ///
    /// fn slow(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = Pool::new(1)?;
    /// let mut r = pool.apply_async(slow, 500)?;
    /// assert!(matches!(r.try_get(), Err(TryGetError::Empty)));
    /// r.wait();
    /// assert_eq!(r.try_get()?, 500);
    /// # Ok::<(), ipc_pool::Error>(())
    /// ```
    pub fn try_get(&mut self) -> Result<R, TryGetError> {
        if self.taken {
            return Err(TryGetError::Failed(Error::Taken));
        }
        match self.take() {
            Some(r) => r.map_err(TryGetError::Failed),
            None => Err(TryGetError::Empty),
        }
    }

    /// Waits at most `timeout` for the result (Python's `get(timeout)`).
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] if it has not arrived (the handle stays usable);
    /// [`GetTimeoutError::Failed`] with the task's error (as [`Pool::apply`]), or with
    /// [`Error::Taken`] after the value was taken.
    ///
    /// # Peer death
    /// As [`wait`](Self::wait).
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R, GetTimeoutError> {
        if self.taken {
            return Err(GetTimeoutError::Failed(Error::Taken));
        }
        self.wait_until(Instant::now().checked_add(timeout));
        match self.take() {
            Some(r) => r.map_err(GetTimeoutError::Failed),
            None => Err(GetTimeoutError::Timeout),
        }
    }

    /// The result if it has arrived (marking it taken); decoded outside the lock.
    fn take(&mut self) -> Option<Result<R>> {
        self.unlend();
        let mut c = self.coll.inner.lock();
        if c.ready.len() < self.expected {
            return None;
        }
        let v = std::mem::take(&mut c.ready);
        #[cfg(feature = "async")]
        {
            c.waker = None;
            self.registered = false;
        }
        drop(c);
        self.taken = true;
        Some((self.decode)(v))
    }
}

/// `.await` on an [`AsyncResult`] (feature `async`): the task's result, as
/// [`get`](AsyncResult::get) returns it.
///
/// # Errors
/// As [`AsyncResult::get`]; polled again after it completed: [`Error::Taken`].
///
/// # Peer death
/// A worker that dies running the task resolves it with [`Error::WorkerDied`] (under
/// [`Policy::FailTask`]): the dispatcher sees the death through the worker's pidfd and wakes
/// the future; it never hangs.
///
/// # Cancel safety
/// Cancel-safe: see [`AsyncResult`].
///
/// # Example
/// ```
/// use std::time::Duration;
/// use ipc_pool::Pool;
///
/// fn slow_square(x: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(200));
///     x * x
/// }
///
/// // Build the pool before the runtime starts its threads (or call `ipc_pool::init()`).
/// let pool = Pool::new(2)?;
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// rt.block_on(async {
///     assert_eq!(pool.apply_async(slow_square, 7)?.await?, 49);
///     // A timeout around a borrowed result cancels the wait, not the task.
///     let mut r = pool.apply_async(slow_square, 8)?;
///     let early = tokio::time::timeout(Duration::from_millis(1), &mut r).await;
///     assert!(early.is_err());
///     assert_eq!(r.await?, 64);
///     assert_eq!(pool.map_async(slow_square, 0..4)?.await?, [0, 1, 4, 9]);
///     Ok::<(), ipc_pool::Error>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "async")]
impl<R: DeserializeOwned> std::future::Future for AsyncResult<R> {
    type Output = Result<R>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<R>> {
        let this = self.get_mut();
        if this.taken {
            return std::task::Poll::Ready(Err(Error::Taken));
        }
        #[cfg(feature = "tokio")]
        if let Some(p) = this.poll_lent(cx) {
            return p;
        }
        let mut c = this.coll.inner.lock();
        // Checked under the lock the deliverer takes: a result delivered before is seen here;
        // one delivered after finds the waker stored below.
        if c.ready.len() >= this.expected {
            drop(c);
            return std::task::Poll::Ready(this.take().unwrap_or(Err(Error::Taken)));
        }
        match &mut c.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        c.want = this.expected;
        this.registered = true;
        std::task::Poll::Pending
    }
}

#[cfg(feature = "tokio")]
impl<R: DeserializeOwned> AsyncResult<R> {
    /// The direct async path's poll: `Some` with the outcome while the worker is lent to this
    /// result; `None` once it is not (never lent, handed back, taken back by the dispatcher,
    /// or the exchange failed): the result then comes through the collector.
    fn poll_lent(&mut self, cx: &mut std::task::Context<'_>) -> Option<std::task::Poll<Result<R>>> {
        use std::task::Poll;
        loop {
            let l = self.lent.as_mut()?;
            let here = tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == l.rt);
            let mut st = l.shared.state.lock();
            let w = st.workers.iter_mut().find(|w| w.id == l.wid);
            let w = w.filter(|w| w.lent == Some(l.id) && w.inflight.iter().any(|j| j.id == l.id));
            let Some(w) = w else {
                drop(st);
                self.lent = None;
                return None;
            };
            if !here {
                // Polled outside the runtime whose reactor watches the socket.
                w.lent = None;
                l.shared.wake(&mut st);
                drop(st);
                self.lent = None;
                return None;
            }
            let got = match w.conn.as_mut() {
                Some(_) if std::mem::take(&mut l.fresh) => Err(ipc_pipe::TryRecvError::Empty),
                Some(c) => c.try_recv_bytes_into(&mut l.buf),
                None => Err(ipc_pipe::TryRecvError::Empty),
            };
            match got {
                Ok(_) => {
                    w.lent = None;
                    // The reply was all there is: the readiness it raised is cleared for the
                    // next loan of this registration. Cleared here, under the state lock and
                    // before the worker is idle again: once it is, another future may lend
                    // it, write a job and get a reply whose readiness a later clear would
                    // erase (that future, which waits for readiness first, then never wakes).
                    // A clear only erases readiness up to the tick it saw, so an event still
                    // to come for this reply merely leaves stale readiness, which the next
                    // loan's poll clears and reads through.
                    if let Poll::Ready(Ok(mut g)) = l.fd.poll_read_ready(cx) {
                        g.clear_ready();
                    }
                    let (wid, id) = (l.wid, l.id);
                    let shared = Arc::clone(&l.shared);
                    match parse_reply(&l.buf, id) {
                        Direct::Answer(status, bytes) => {
                            settle_answer(&shared, &mut st, wid, id);
                            drop(st);
                            ipc_failpoints::failpoint!("pool.lent.answered");
                            self.lent = None;
                            let mut c = self.coll.inner.lock();
                            c.waker = None;
                            self.registered = false;
                            drop(c);
                            self.taken = true;
                            let r = answer(status, bytes);
                            return Some(Poll::Ready((self.decode)(vec![(0, r)])));
                        }
                        Direct::Fault => {
                            settle_fault(&shared, &mut st, wid);
                            drop(st);
                            self.lent = None;
                            return None;
                        }
                    }
                }
                Err(ipc_pipe::TryRecvError::Empty) => {}
                Err(_) => {
                    w.lent = None;
                    let wid = l.wid;
                    settle_fault(&l.shared, &mut st, wid);
                    drop(st);
                    self.lent = None;
                    return None;
                }
            }
            drop(st);
            // The dispatcher resolves the job into the collector if the worker dies (or the
            // pool is terminated, or it takes the worker back): that wakes this waker too.
            let mut c = self.coll.inner.lock();
            if c.ready.len() >= self.expected {
                // Resolved meanwhile: the check above sees the worker not lent any more.
                continue;
            }
            match &mut c.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            c.want = self.expected;
            self.registered = true;
            drop(c);
            match l.fd.poll_read_ready(cx) {
                Poll::Pending => return Some(Poll::Pending),
                // Readiness seen before the read above found nothing: cleared, read again.
                Poll::Ready(Ok(mut g)) => g.clear_ready(),
                Poll::Ready(Err(_)) => {
                    l.hand_back();
                    self.lent = None;
                    return None;
                }
            }
        }
    }
}

#[cfg(feature = "async")]
impl<R> Drop for AsyncResult<R> {
    /// Releases the waker a poll left in the collector (the task itself is not affected),
    /// and hands a lent worker back to the dispatcher, which reads the reply.
    fn drop(&mut self) {
        #[cfg(feature = "tokio")]
        if let Some(l) = self.lent.take() {
            l.hand_back();
        }
        if self.registered {
            let mut c = self.coll.inner.lock();
            let w = c.waker.take();
            drop(c);
            drop(w);
        }
    }
}

// -------------------------------------------------------------- feeding

/// The engine of `map`, `imap` and friends: pulls items, cuts chunks, keeps a bounded number
/// submitted, and hands completed chunks back.
struct Feed<'p, F: Callable, I: Iterator<Item = F::In>> {
    pool: &'p Pool,
    coll: Arc<Collector>,
    iter: Option<I>,
    tramp: u64,
    func: u64,
    fixed: Option<usize>,
    len: Option<usize>,
    pulled: usize,
    submitted: usize,
    consumed: usize,
    grow: usize,
    /// Chunk size of the last stretch of an input of known length: once the next chunk
    /// would take an even share of what remains, what remains is cut into one chunk per
    /// worker, so that the workers finish together.
    tail: Option<usize>,
    error: Option<Error>,
    pending: HashMap<usize, JobResult>,
    _f: PhantomData<F>,
}

impl<'p, F: Callable, I: Iterator<Item = F::In>> Feed<'p, F, I> {
    fn new(pool: &'p Pool, f: F, iter: I, fixed: Option<usize>) -> Self {
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let tramp = task::trampoline_addr::<F>();
        let func = f.addr();
        let error = pool.check_code(tramp, func).err();
        Feed {
            pool,
            coll: Collector::new(),
            iter: Some(iter),
            tramp,
            func,
            fixed,
            len,
            pulled: 0,
            submitted: 0,
            consumed: 0,
            grow: 1,
            tail: None,
            error,
            pending: HashMap::new(),
            _f: PhantomData,
        }
    }

    /// Worker nanoseconds per item measured so far.
    fn per_item(&self) -> Option<u64> {
        let c = self.coll.inner.lock();
        (c.items > 0).then(|| (c.nanos / c.items).max(1))
    }

    fn chunk_size(&mut self, per_item: Option<u64>) -> usize {
        let w = self.pool.processes;
        if let Some(n) = self.fixed {
            return n;
        }
        let size = match (per_item, self.len) {
            // Not measured yet: a small probe (Python's len / (4 x workers) at most), so a
            // heavy task does not lock a quarter of the input into one chunk before its cost
            // is known, and a trivial one is measured after a single round trip.
            (None, Some(len)) => len.div_ceil(4 * w).min(PROBE_CHUNK),
            (None, None) => {
                let s = self.grow;
                self.grow = (s * 2).min(UNKNOWN_LEN_CHUNK_MAX);
                s
            }
            (Some(t), len) => {
                let hi = usize::try_from(TARGET_CHUNK_NS / t)
                    .unwrap_or(usize::MAX)
                    .max(1);
                let lo = usize::try_from(MIN_CHUNK_NS / t)
                    .unwrap_or(usize::MAX)
                    .max(1);
                match len {
                    Some(len) => {
                        let remaining = len.saturating_sub(self.pulled);
                        known_len_chunk(remaining, w, lo, hi, &mut self.tail)
                    }
                    None => {
                        let s = self.grow.min(hi);
                        self.grow = (self.grow * 2).min(UNKNOWN_LEN_CHUNK_MAX);
                        s
                    }
                }
            }
        };
        size.clamp(1, CHUNK_MAX)
    }

    /// How many chunks of `chunk` items may be submitted ahead of the consumer.
    fn ahead_limit(&self, per_item: Option<u64>, chunk: usize) -> usize {
        let w = self.pool.processes;
        let limit = match per_item {
            None => w,
            Some(t) => {
                let chunk_ns = t.saturating_mul(chunk as u64).max(1);
                let by_time = (LOOKAHEAD_NS.saturating_mul(w as u64) / chunk_ns) as usize;
                by_time.clamp(2 * w, LOOKAHEAD_MAX)
            }
        };
        match self.len {
            Some(_) => limit,
            None => limit.min(UNKNOWN_LEN_AHEAD * w),
        }
    }

    /// Submits chunks while the look-ahead allows. Once chunks are in flight, it waits until
    /// a quarter of the look-ahead is free and then submits that many at once, under one lock
    /// and with at most one wake-up of the dispatcher: refilling one chunk per chunk consumed
    /// made the caller and the dispatcher wake each other for every small chunk.
    fn fill(&mut self) {
        let mut batch: Vec<(u32, Vec<u8>, u64)> = Vec::new();
        loop {
            if self.iter.is_none() || self.error.is_some() {
                break;
            }
            let per_item = self.per_item();
            let size = self.chunk_size(per_item);
            let limit = self.ahead_limit(per_item, size);
            let ahead = self.submitted + batch.len() - self.consumed;
            if ahead >= limit || (batch.is_empty() && ahead > 0 && limit - ahead < limit / 4) {
                break;
            }
            let Some(it) = self.iter.as_mut() else { break };
            let mut payload = Vec::new();
            let mut count: u32 = 0;
            let mut failed = None;
            for a in it.by_ref().take(size) {
                if let Err(e) = task::encode_onto(&a, &mut payload) {
                    failed = Some(Error::Encode(e.to_string()));
                    break;
                }
                count += 1;
            }
            if let Some(e) = failed {
                self.error = Some(e);
                self.iter = None;
                break;
            }
            self.pulled += count as usize;
            if count == 0 {
                self.iter = None;
                break;
            }
            if (count as usize) < size {
                self.iter = None;
            }
            let est = per_item.map_or(0, |t| t.saturating_mul(u64::from(count)));
            batch.push((count, payload, est));
        }
        if batch.is_empty() {
            return;
        }
        let mut st = self.pool.shared.state.lock();
        for (count, payload, est) in batch {
            let job = Pool::new_job(
                &mut st,
                (self.tramp, self.func),
                count,
                payload,
                Arc::clone(&self.coll),
                self.submitted,
                est,
            );
            if let Err(e) = self.pool.shared.submit(&mut st, job) {
                self.error = Some(e);
                self.iter = None;
                return;
            }
            self.submitted += 1;
        }
    }

    /// Moves arrived results into `pending`, waiting until `wait` for at least one
    /// (`Wait::Now`: not at all); whether any arrived.
    fn collect_ready(&mut self, wait: Wait) -> bool {
        let deadline = match wait {
            Wait::Now => None,
            Wait::Forever => None,
            Wait::Until(d) => Some(d),
        };
        let mut c = self.coll.inner.lock();
        if !matches!(wait, Wait::Now) {
            let mut timed_out = false;
            while c.ready.is_empty() && !timed_out {
                (c, timed_out) = self.coll.cv.wait_until(c, deadline);
            }
        }
        let any = !c.ready.is_empty();
        for (i, r) in c.ready.drain(..) {
            self.pending.insert(i, r);
        }
        any
    }

    /// The next chunk in order, or the submission error once everything before it is out;
    /// `Err(())` if `wait` ran out first.
    fn next_ordered(&mut self, wait: Wait) -> Result<Option<JobResult>, ()> {
        loop {
            self.fill();
            if let Some(r) = self.pending.remove(&self.consumed) {
                self.consumed += 1;
                return Ok(Some(r));
            }
            if self.consumed == self.submitted {
                return Ok(self.error.take().map(Err));
            }
            if !self.collect_ready(wait) {
                return Err(());
            }
        }
    }

    /// The next chunk to finish, in any order; `Err(())` if `wait` ran out first.
    fn next_any(&mut self, wait: Wait) -> Result<Option<JobResult>, ()> {
        loop {
            self.fill();
            if let Some(&k) = self.pending.keys().next() {
                self.consumed += 1;
                return Ok(self.pending.remove(&k));
            }
            if self.consumed == self.submitted {
                return Ok(self.error.take().map(Err));
            }
            if !self.collect_ready(wait) {
                return Err(());
            }
        }
    }

    fn collect_all(mut self) -> Result<Vec<F::Out>> {
        let mut out = Vec::with_capacity(self.len.unwrap_or(0));
        while let Ok(Some(r)) = self.next_ordered(Wait::Forever) {
            let d = r?;
            task::decode_results(&d.bytes, d.count, &mut out).map_err(Error::Decode)?;
        }
        Ok(out)
    }
}

/// Items per chunk of an input of known length once the cost per item is known: a share of
/// what remains (`remaining / 2w`), at least `lo` and at most `hi` items. Once that would take
/// an even share of what remains (so the minimum chunk would leave workers idle at the end),
/// the rest is cut into one chunk per worker, and `tail` keeps that size to the end.
fn known_len_chunk(
    remaining: usize,
    w: usize,
    lo: usize,
    hi: usize,
    tail: &mut Option<usize>,
) -> usize {
    let even = remaining.div_ceil(w);
    let size = (remaining / (2 * w)).max(lo).min(hi);
    if size >= even {
        *tail.get_or_insert(even)
    } else {
        size
    }
}

/// How long a `Feed` waits for the next chunk.
#[derive(Clone, Copy)]
enum Wait {
    /// Not at all (`try_next`).
    Now,
    /// Until it comes (`next`).
    Forever,
    /// Until this instant (`next_timeout`).
    Until(Instant),
}

impl Wait {
    fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }
}

/// Turns the outcome of a bounded `next` into the `next_timeout` shape.
fn timed<R>(r: Result<Option<Result<R>>, ()>) -> Option<Result<R, GetTimeoutError>> {
    match r {
        Err(()) => Some(Err(GetTimeoutError::Timeout)),
        Ok(r) => r.map(|r| r.map_err(GetTimeoutError::Failed)),
    }
}

/// Turns the outcome of a non-blocking `next` into the `try_next` shape.
fn tried<R>(r: Result<Option<Result<R>>, ()>) -> Option<Result<R, TryGetError>> {
    match r {
        Err(()) => Some(Err(TryGetError::Empty)),
        Ok(r) => r.map(|r| r.map_err(TryGetError::Failed)),
    }
}

/// Decodes a chunk into `buf`, or queues its error.
fn unpack<R: DeserializeOwned>(r: JobResult, buf: &mut VecDeque<Result<R>>) {
    match r {
        Ok(d) => {
            let mut v: Vec<R> = Vec::with_capacity(d.count as usize);
            match task::decode_results(&d.bytes, d.count, &mut v) {
                Ok(()) => buf.extend(v.into_iter().map(Ok)),
                Err(e) => buf.push_back(Err(Error::Decode(e))),
            }
        }
        Err(e) => buf.push_back(Err(e)),
    }
}

/// The iterator of [`Pool::imap`]: results in input order, computed ahead within a bound.
pub struct IMap<'p, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    feed: Feed<'p, fn(A) -> R, I>,
    buf: VecDeque<Result<R>>,
}

impl<A, R, I> IMap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    /// Waits at most `timeout` for the next result in input order (Python's `next(timeout)`):
    /// `None` once every result was returned, as [`Iterator::next`].
    ///
    /// # Errors
    /// `Some(Err(GetTimeoutError::Timeout))` if it did not arrive in time (nothing is lost:
    /// call again); `Some(Err(GetTimeoutError::Failed(e)))` in place of a failed chunk, as
    /// `next` yields `Some(Err(e))`.
    ///
    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]): its
    /// `Failed(Error::WorkerDied { .. })` comes in place of the chunk's items.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::GetTimeoutError;
    ///
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = ipc_pool::Pool::new(1)?;
    /// let mut it = pool.imap(nap, [300]);
    /// assert!(matches!(
    ///     it.next_timeout(Duration::from_millis(10)),
    ///     Some(Err(GetTimeoutError::Timeout))
    /// ));
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).transpose()?, Some(300));
    /// assert!(it.next_timeout(Duration::from_secs(30)).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, GetTimeoutError>> {
        timed(self.next_within(Wait::timeout(timeout)))
    }

    /// The next result in input order if it has arrived, without waiting (input is still pulled
    /// and submitted as the look-ahead allows); `None` once every result was returned.
    ///
    /// # Errors
    /// `Some(Err(TryGetError::Empty))` if it has not arrived; `Some(Err(TryGetError::Failed(e)))`
    /// in place of a failed chunk.
    pub fn try_next(&mut self) -> Option<Result<R, TryGetError>> {
        tried(self.next_within(Wait::Now))
    }

    fn next_within(&mut self, wait: Wait) -> Result<Option<Result<R>>, ()> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                return Ok(Some(r));
            }
            match self.feed.next_ordered(wait)? {
                Some(chunk) => unpack(chunk, &mut self.buf),
                None => return Ok(None),
            }
        }
    }
}

impl<A, R, I> Iterator for IMap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    type Item = Result<R>;

    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]): one
    /// `Err(Error::WorkerDied { .. })` comes in place of the chunk's items.
    fn next(&mut self) -> Option<Result<R>> {
        self.next_within(Wait::Forever).unwrap_or(None)
    }
}

impl<A, R, I> fmt::Debug for IMap<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("submitted", &self.feed.submitted)
            .field("consumed", &self.feed.consumed)
            .finish_non_exhaustive()
    }
}

/// The iterator of [`Pool::imap_unordered`]: results as they complete.
pub struct IMapUnordered<'p, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    feed: Feed<'p, fn(A) -> R, I>,
    buf: VecDeque<Result<R>>,
}

impl<A, R, I> IMapUnordered<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    /// Waits at most `timeout` for the next result in completion order (Python's `next(timeout)`):
    /// `None` once every result was returned, as [`Iterator::next`].
    ///
    /// # Errors
    /// `Some(Err(GetTimeoutError::Timeout))` if it did not arrive in time (nothing is lost:
    /// call again); `Some(Err(GetTimeoutError::Failed(e)))` in place of a failed chunk, as
    /// `next` yields `Some(Err(e))`.
    ///
    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]): its
    /// `Failed(Error::WorkerDied { .. })` comes in place of the chunk's items.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use ipc_pool::GetTimeoutError;
    ///
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// let pool = ipc_pool::Pool::new(1)?;
    /// let mut it = pool.imap_unordered(nap, [300]);
    /// assert!(matches!(
    ///     it.next_timeout(Duration::from_millis(10)),
    ///     Some(Err(GetTimeoutError::Timeout))
    /// ));
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).transpose()?, Some(300));
    /// assert!(it.next_timeout(Duration::from_secs(30)).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, GetTimeoutError>> {
        timed(self.next_within(Wait::timeout(timeout)))
    }

    /// The next result in completion order if it has arrived, without waiting (input is still pulled
    /// and submitted as the look-ahead allows); `None` once every result was returned.
    ///
    /// # Errors
    /// `Some(Err(TryGetError::Empty))` if it has not arrived; `Some(Err(TryGetError::Failed(e)))`
    /// in place of a failed chunk.
    pub fn try_next(&mut self) -> Option<Result<R, TryGetError>> {
        tried(self.next_within(Wait::Now))
    }

    fn next_within(&mut self, wait: Wait) -> Result<Option<Result<R>>, ()> {
        loop {
            if let Some(r) = self.buf.pop_front() {
                return Ok(Some(r));
            }
            match self.feed.next_any(wait)? {
                Some(chunk) => unpack(chunk, &mut self.buf),
                None => return Ok(None),
            }
        }
    }
}

impl<A, R, I> Iterator for IMapUnordered<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    type Item = Result<R>;

    /// # Peer death
    /// A worker's death fails the chunk it was running (under [`Policy::FailTask`]): one
    /// `Err(Error::WorkerDied { .. })` comes in place of the chunk's items.
    fn next(&mut self) -> Option<Result<R>> {
        self.next_within(Wait::Forever).unwrap_or(None)
    }
}

impl<A, R, I> fmt::Debug for IMapUnordered<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMapUnordered")
            .field("submitted", &self.feed.submitted)
            .field("consumed", &self.feed.consumed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::known_len_chunk;

    /// The chunks `known_len_chunk` cuts `len` items into.
    fn cut(len: usize, w: usize, lo: usize, hi: usize) -> Vec<usize> {
        let (mut pulled, mut tail, mut sizes) = (0, None, Vec::new());
        while pulled < len {
            let s = known_len_chunk(len - pulled, w, lo, hi, &mut tail).min(len - pulled);
            sizes.push(s);
            pulled += s;
        }
        sizes
    }

    #[test]
    fn the_last_stretch_is_shared_by_all_workers() {
        // A minimum chunk larger than what remains used to give one worker everything.
        assert_eq!(cut(25_000, 2, 38_000, 700_000), [12_500, 12_500]);
        // Shares of what remains, then the tail cut in two.
        assert_eq!(
            cut(200_000, 2, 33_000, 700_000),
            [50_000, 37_500, 33_000, 33_000, 23_250, 23_250]
        );
        // The maximum still applies.
        assert_eq!(cut(1_000, 2, 1, 100).iter().max(), Some(&100));
        assert_eq!(cut(10, 2, 4, 100), [4, 3, 3]);
    }
}
