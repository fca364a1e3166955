//! The pool's bookkeeping and its one dispatcher thread.
//!
//! The parent is the only dispatcher: [`State`] holds the job queue and, per worker, the jobs
//! in flight on it (the in-flight table). The dispatcher thread assigns queued jobs to workers
//! (several per frame, a bounded amount per worker so nothing can deadlock on full socket
//! buffers), then `ppoll`s one set of fds: an eventfd doorbell, the fork server's control
//! socket, the sockets of workers with jobs in flight, and the pidfd of every live worker. A
//! worker's pidfd firing fails exactly the jobs in flight on it (after taking any results it
//! finished first), according to the [`Policy`]; the fork server then forks a replacement.
//!
//! `Pool::apply` bypasses the thread when a worker is idle: the caller checks the worker's
//! connection out of the state, writes the job and waits on the socket and the pidfd itself
//! (one write and one read, no thread hop). On any fault it hands the connection and the job
//! back to the dispatcher, which then resolves the job like any other.
//!
//! An awaited `apply_async` under tokio (feature `tokio`) does the same without taking the
//! connection out: the worker is *lent* (`Worker::lent`) to the future, which reads the reply
//! under the state lock when the runtime's reactor reports the socket readable. A lent worker
//! takes no other job and the dispatcher does not read it, except while jobs are queued or the
//! pool stops: then it watches the socket too and takes the worker back when the reply comes
//! (`Kind::Conn`), so a future that is not polled cannot hold a worker for good. A dead lent
//! worker is resolved like any other (its connection is in the table).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_pipe::Connection;

use crate::fork_server::{self, Reply, Request, Zygote, INIT_FAILED};
use crate::sync::{Condvar, Mutex};
use crate::sys;
use crate::task;
use crate::{Error, Policy};

/// Bytes of job payload allowed in flight per worker, counting every job in flight; a worker
/// with nothing in flight takes the next job whatever its size (see `can_take`).
const PIPE_BYTES: usize = 48 << 10;
/// Estimated work allowed in flight per worker, counted the same way.
const PIPE_NS: u64 = 2_000_000;
/// Jobs estimated below this may share a frame with others.
const BATCH_NS: u64 = 50_000;
/// Jobs in flight per worker while their cost is unknown.
const PIPE_UNKNOWN: usize = 2;
/// Jobs in flight per worker at most.
const PIPE_MAX: usize = 1024;
/// How long a dead worker's exit code is awaited from the fork server.
const EXIT_REPORT_WAIT: Duration = Duration::from_millis(500);
/// How long shutdown waits for the fork server to leave before killing it.
const ZYGOTE_EXIT_WAIT: Duration = Duration::from_secs(5);

/// A finished job's results: `count` postcard values back to back.
pub(crate) struct Done {
    pub count: u32,
    pub bytes: Vec<u8>,
}

pub(crate) type JobResult = Result<Done, Error>;

/// Where a job's result goes: one per `apply_async`, one per `map`/`imap` call.
pub(crate) struct Collector {
    pub inner: Mutex<CollState>,
    pub cv: Condvar,
}

#[derive(Default)]
pub(crate) struct CollState {
    /// Results not yet taken by the consumer: (job index, result).
    pub ready: Vec<(usize, JobResult)>,
    /// Items finished and worker time spent on them (adaptive chunking).
    pub items: u64,
    pub nanos: u64,
    /// The waker of a future awaiting this collector (an `AsyncResult` being awaited), woken
    /// by whoever delivers the `want`-th result, outside the lock, with no thread hop.
    #[cfg(feature = "async")]
    pub waker: Option<std::task::Waker>,
    /// How many results the awaiting future needs before it is worth waking.
    #[cfg(feature = "async")]
    pub want: usize,
}

impl CollState {
    /// The waker to wake now that results were added, if the awaiting future has enough.
    #[cfg(feature = "async")]
    fn waker_due(&mut self) -> Option<std::task::Waker> {
        if self.ready.len() >= self.want {
            self.waker.take()
        } else {
            None
        }
    }
}

impl Collector {
    pub(crate) fn new() -> Arc<Collector> {
        Arc::new(Collector {
            inner: Mutex::new(CollState::default()),
            cv: Condvar::new(),
        })
    }

    fn deliver(&self, index: usize, r: JobResult, items: u64, nanos: u64) {
        let mut c = self.inner.lock();
        c.ready.push((index, r));
        c.items += items;
        c.nanos += nanos;
        #[cfg(feature = "async")]
        let waker = c.waker_due();
        drop(c);
        self.cv.notify_all();
        #[cfg(feature = "async")]
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Delivers several results at once (one lock, one wake-up).
    fn deliver_many(&self, ready: &mut Vec<(usize, JobResult)>, items: u64, nanos: u64) {
        let mut c = self.inner.lock();
        c.ready.append(ready);
        c.items += items;
        c.nanos += nanos;
        #[cfg(feature = "async")]
        let waker = c.waker_due();
        drop(c);
        self.cv.notify_all();
        #[cfg(feature = "async")]
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The results of one frame, delivered to their collector together: a frame of small jobs
/// (chunk size 1) carries hundreds of results for the same `map`, and waking its caller for
/// each of them cost a context switch per result.
#[derive(Default)]
struct Deliveries {
    sink: Option<Arc<Collector>>,
    ready: Vec<(usize, JobResult)>,
    items: u64,
    nanos: u64,
}

impl Deliveries {
    fn add(&mut self, job: Job, r: JobResult, nanos: u64) {
        if self
            .sink
            .as_ref()
            .is_some_and(|s| !Arc::ptr_eq(s, &job.sink))
        {
            self.flush();
        }
        if r.is_ok() {
            self.items += u64::from(job.count);
        }
        self.nanos += nanos;
        self.ready.push((job.index, r));
        if self.sink.is_none() {
            self.sink = Some(job.sink);
        }
    }

    fn flush(&mut self) {
        if let Some(s) = self.sink.take() {
            s.deliver_many(&mut self.ready, self.items, self.nanos);
        }
        self.items = 0;
        self.nanos = 0;
    }
}

/// One unit of work: `count` items of one function, with where its result goes.
pub(crate) struct Job {
    pub id: u64,
    pub tramp: u64,
    pub func: u64,
    pub count: u32,
    pub payload: Vec<u8>,
    pub sink: Arc<Collector>,
    pub index: usize,
    pub retries: u32,
    /// Estimated worker time (0: unknown).
    pub est_ns: u64,
    /// Payload length when sent (the payload itself may be dropped after sending).
    pub len: usize,
    /// The worker frame that carried it. A worker runs a frame's jobs in order and reports
    /// them together, so when it dies, only jobs of its oldest unreported frame may have run.
    pub frame: u64,
}

impl Job {
    fn resolve(self, r: JobResult, nanos: u64) {
        let items = if r.is_ok() { u64::from(self.count) } else { 0 };
        self.sink.deliver(self.index, r, items, nanos);
    }
}

/// A registered duplicate of a worker's socket and the runtime it is registered with.
#[cfg(feature = "tokio")]
pub(crate) type Registered = (tokio::runtime::Id, Arc<tokio::io::unix::AsyncFd<OwnedFd>>);

pub(crate) struct Worker {
    pub id: u64,
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// `None` while a caller of `apply` has it checked out.
    pub conn: Option<Connection>,
    /// The job whose awaiting `AsyncResult` reads this worker's replies itself (the direct
    /// async path, feature `tokio`): the connection stays here, but only that future reads
    /// it, until it hands the worker back (done, dropped, or a blocking call on it), or the
    /// dispatcher takes it back (`Kind::Conn` while work is queued or the pool stops).
    pub lent: Option<u64>,
    /// A duplicate of the socket registered with a tokio runtime's reactor for the direct
    /// async path, kept for the next loan in the same runtime (a registration per call cost
    /// four system calls).
    #[cfg(feature = "tokio")]
    pub reg: Option<Registered>,
    /// The in-flight table of this worker, in the order sent.
    pub inflight: VecDeque<Job>,
    est_ns: u64,
    unknown: usize,
    bytes: usize,
    /// Frames sent in its life; each job records the frame that carried it.
    pub frames: u64,
    /// Jobs sent in its life (for `max_tasks_per_child`).
    pub sent: u64,
    /// Jobs finished.
    pub completed: u64,
    /// Reached `max_tasks_per_child`: takes no more jobs, leaves when done.
    pub retiring: bool,
    /// When its pidfd fired.
    pub dead: Option<Instant>,
    /// Its socket reported end of stream.
    eof: bool,
    out: Vec<u8>,
}

impl Worker {
    fn new(id: u64, pid: i32, pidfd: OwnedFd, conn: Connection) -> Worker {
        Worker {
            id,
            pid,
            pidfd,
            conn: Some(conn),
            lent: None,
            #[cfg(feature = "tokio")]
            reg: None,
            inflight: VecDeque::new(),
            frames: 0,
            est_ns: 0,
            unknown: 0,
            bytes: 0,
            sent: 0,
            completed: 0,
            retiring: false,
            dead: None,
            eof: false,
            out: Vec::new(),
        }
    }

    /// Whether this worker is idle and may be checked out by `apply`.
    pub(crate) fn is_idle(&self) -> bool {
        self.conn.is_some()
            && self.lent.is_none()
            && self.inflight.is_empty()
            && self.dead.is_none()
            && !self.retiring
            && !self.eof
    }

    fn can_take(&self, job: &Job) -> bool {
        if self.conn.is_none()
            || self.lent.is_some()
            || self.dead.is_some()
            || self.retiring
            || self.eof
        {
            return false;
        }
        if self.inflight.is_empty() {
            return true;
        }
        if self.bytes + job.payload.len() > PIPE_BYTES || self.inflight.len() >= PIPE_MAX {
            return false;
        }
        if job.est_ns == 0 || self.unknown > 0 {
            return self.inflight.len() < PIPE_UNKNOWN;
        }
        self.est_ns + job.est_ns <= PIPE_NS
    }

    /// Records `job` as in flight here (it was written, or is about to be).
    pub(crate) fn push(&mut self, job: Job, max_jobs: u64) {
        self.est_ns += job.est_ns;
        self.unknown += usize::from(job.est_ns == 0);
        self.bytes += job.len;
        self.sent += 1;
        if self.sent >= max_jobs {
            self.retiring = true;
        }
        self.inflight.push_back(job);
    }

    /// Removes the in-flight job `id`.
    pub(crate) fn take(&mut self, id: u64) -> Option<Job> {
        let pos = self.inflight.iter().position(|j| j.id == id)?;
        let job = self.inflight.remove(pos)?;
        self.est_ns -= job.est_ns;
        self.unknown -= usize::from(job.est_ns == 0);
        self.bytes -= job.len;
        Some(job)
    }
}

/// Everything the pool's threads share, behind one lock.
pub(crate) struct State {
    pub workers: Vec<Worker>,
    pub queue: VecDeque<Job>,
    pub next_job: u64,
    next_worker: u64,
    /// The dispatcher is (about to be) blocked in `ppoll`: ring the bell to wake it.
    pub parked: bool,
    /// No more submissions.
    pub closed: bool,
    /// Leave once nothing is outstanding.
    pub stopping: bool,
    pub terminated: bool,
    pub broken: Option<String>,
    /// The dispatcher has shut everything down.
    pub finished: bool,
    /// Jobs submitted and not yet resolved (queued, in flight, or in a direct `apply`).
    pub outstanding: usize,
    spawning: usize,
    zygote: Option<Zygote>,
    zygote_gone: bool,
    exit_codes: HashMap<i32, i32>,
    pub max_jobs: u64,
    pub processes: usize,
    pub policy: Policy,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub bell: OwnedFd,
    /// Signalled when the dispatcher finishes.
    pub finished_cv: Condvar,
    /// The code the workers have: every task's addresses are checked against it.
    pub code: Arc<task::CodeMap>,
}

impl Shared {
    /// Wakes the dispatcher if it sleeps.
    pub(crate) fn wake(&self, st: &mut State) {
        if st.parked {
            st.parked = false;
            sys::eventfd_ring(self.bell.as_fd());
        }
    }

    /// Queues a job.
    ///
    /// # Errors
    /// `Closed`, `Terminated` or `Broken` if the pool no longer takes jobs.
    pub(crate) fn submit(&self, st: &mut State, job: Job) -> Result<(), Error> {
        check_open(st)?;
        st.queue.push_back(job);
        st.outstanding += 1;
        self.wake(st);
        Ok(())
    }
}

/// Whether the pool takes new jobs.
pub(crate) fn check_open(st: &State) -> Result<(), Error> {
    if let Some(b) = &st.broken {
        return Err(Error::Broken(b.clone()));
    }
    if st.terminated {
        return Err(Error::Terminated);
    }
    if st.closed {
        return Err(Error::Closed);
    }
    Ok(())
}

/// Builds the shared state and starts the workers (synchronously, before any thread).
pub(crate) fn start(
    processes: usize,
    config: fork_server::WorkerConfig,
    policy: Policy,
) -> Result<Arc<Shared>, Error> {
    let max_jobs = config.max_jobs;
    let mut zygote = Zygote::start(config)?;
    let code = Arc::clone(&zygote.code);
    let mut workers = Vec::with_capacity(processes);
    for _ in 0..processes {
        zygote.ctl.send(&Request::Spawn)?;
    }
    for id in 0..processes {
        let (pid, pidfd, sock) = loop {
            match zygote.ctl.recv::<Reply>()? {
                Reply::Spawned { pid } => {
                    let fds = zygote
                        .ctl
                        .recv_fds_timeout(Duration::from_secs(10))
                        .map_err(ipc_pipe::Error::from)?;
                    let mut it = fds.into_iter();
                    match (it.next(), it.next()) {
                        (Some(a), Some(b)) => break (pid, a, b),
                        _ => return Err(Error::Io(std::io::Error::other("bad fork server reply"))),
                    }
                }
                Reply::SpawnFailed { errno } => {
                    return Err(Error::Io(std::io::Error::from_raw_os_error(errno)))
                }
                // A worker that died during start-up (initializer panic) is reported later.
                Reply::Exited { .. } => continue,
            }
        };
        workers.push(Worker::new(id as u64, pid, pidfd, Connection::from(sock)));
    }
    let bell = sys::eventfd()?;
    Ok(Arc::new(Shared {
        state: Mutex::new(State {
            workers,
            queue: VecDeque::new(),
            next_job: 1,
            next_worker: processes as u64,
            parked: false,
            closed: false,
            stopping: false,
            terminated: false,
            broken: None,
            finished: false,
            outstanding: 0,
            spawning: 0,
            zygote: Some(zygote),
            zygote_gone: false,
            exit_codes: HashMap::new(),
            max_jobs,
            processes,
            policy,
        }),
        bell,
        finished_cv: Condvar::new(),
        code,
    }))
}

#[derive(Clone, Copy)]
enum Kind {
    Bell,
    Zygote,
    Conn(u64),
    Pid(u64),
}

/// The dispatcher thread's body.
pub(crate) fn run(sh: &Shared) {
    let mut rbuf: Vec<u8> = Vec::new();
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    loop {
        let mut st = sh.state.lock();
        let now = Instant::now();
        finalize_dead(&mut st, now, &mut rbuf);
        assign(&mut st);
        top_up(&mut st);
        if st.stopping && st.outstanding == 0 {
            shutdown(&mut st);
            st.finished = true;
            drop(st);
            sh.finished_cv.notify_all();
            return;
        }
        pfds.clear();
        kinds.clear();
        pfds.push(sys::pollin(sh.bell.as_raw_fd()));
        kinds.push(Kind::Bell);
        if let Some(z) = st.zygote.as_ref().filter(|_| !st.zygote_gone) {
            pfds.push(sys::pollin(z.ctl.as_raw_fd()));
            kinds.push(Kind::Zygote);
        }
        let mut deadline: Option<Instant> = None;
        // A worker lent to an awaiting `AsyncResult` is read by that future; the dispatcher
        // watches it too (and takes it back) only when someone waits for a worker or the pool
        // stops, so a future that is never polled again cannot hold the worker for good.
        let reclaim = !st.queue.is_empty() || st.stopping;
        for w in &st.workers {
            if let Some(c) = &w.conn {
                if !w.inflight.is_empty() && !w.eof && (w.lent.is_none() || reclaim) {
                    pfds.push(sys::pollin(c.as_raw_fd()));
                    kinds.push(Kind::Conn(w.id));
                }
            }
            match w.dead {
                None => {
                    pfds.push(sys::pollin(w.pidfd.as_raw_fd()));
                    kinds.push(Kind::Pid(w.id));
                }
                Some(t) if w.conn.is_some() => {
                    let d = t + EXIT_REPORT_WAIT;
                    deadline = Some(deadline.map_or(d, |x: Instant| x.min(d)));
                }
                Some(_) => {}
            }
        }
        st.parked = true;
        drop(st);
        if sys::poll(&mut pfds, deadline).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut st = sh.state.lock();
        st.parked = false;
        for (p, k) in pfds.iter().zip(&kinds) {
            if p.revents == 0 {
                continue;
            }
            match *k {
                Kind::Bell => sys::eventfd_drain(sh.bell.as_fd()),
                Kind::Zygote => read_zygote(&mut st),
                Kind::Conn(id) => {
                    if let Some(i) = st.workers.iter().position(|w| w.id == id) {
                        // Taken back from a lent future, if it was lent: its next poll finds
                        // the result in the collector.
                        st.workers[i].lent = None;
                        drain(&mut st, i, &mut rbuf);
                    }
                }
                Kind::Pid(id) => {
                    if let Some(w) = st.workers.iter_mut().find(|w| w.id == id) {
                        w.dead.get_or_insert(Instant::now());
                    }
                }
            }
        }
    }
}

/// Takes every complete result frame waiting on worker `i`'s socket.
fn drain(st: &mut State, i: usize, rbuf: &mut Vec<u8>) {
    loop {
        let w = &mut st.workers[i];
        let Some(conn) = w.conn.as_mut() else { return };
        match conn.try_recv_bytes_into(rbuf) {
            Ok(_) => {
                if handle_results(st, i, rbuf).is_err() {
                    // A worker that speaks nonsense is killed; its jobs fail as a death.
                    let _ = sys::pidfd_signal(st.workers[i].pidfd.as_fd(), libc::SIGKILL);
                    return;
                }
            }
            Err(ipc_pipe::TryRecvError::Empty) => return,
            Err(_) => {
                w.eof = true;
                return;
            }
        }
    }
}

/// Resolves the jobs of one result frame from worker `i`.
fn handle_results(st: &mut State, i: usize, frame: &[u8]) -> Result<(), ()> {
    let mut out = Deliveries::default();
    let r = resolve_frame(st, i, frame, &mut out);
    out.flush();
    r
}

fn resolve_frame(st: &mut State, i: usize, frame: &[u8], out: &mut Deliveries) -> Result<(), ()> {
    let mut rest = frame;
    while !rest.is_empty() {
        let rec = task::next_result(&mut rest)?;
        let w = &mut st.workers[i];
        // Checked before taking, so that a bad record leaves the job in flight, to be resolved
        // by the death of the worker that is killed for it (taken, it was never resolved).
        if !w
            .inflight
            .iter()
            .any(|j| j.id == rec.id && j.count == rec.count)
        {
            return Err(());
        }
        let job = w.take(rec.id).ok_or(())?;
        w.completed += 1;
        st.outstanding -= 1;
        let msg = || String::from_utf8_lossy(rec.payload).into_owned();
        let r = match rec.status {
            task::ST_OK => Ok(Done {
                count: rec.count,
                bytes: rec.payload.to_vec(),
            }),
            task::ST_PANICKED => Err(Error::Panicked(msg())),
            task::ST_DECODE => Err(Error::Decode(msg())),
            task::ST_ENCODE => Err(Error::Encode(msg())),
            _ => {
                // Unknown status: the job fails (it was taken) and the worker is killed.
                out.add(job, Err(Error::Decode("unknown result status".into())), 0);
                return Err(());
            }
        };
        out.add(job, r, rec.nanos);
    }
    Ok(())
}

/// Reads the fork server's replies: new workers and exit reports.
fn read_zygote(st: &mut State) {
    loop {
        let Some(z) = st.zygote.as_mut() else { return };
        match z.ctl.try_recv::<Reply>() {
            Err(ipc_pipe::TryRecvError::Empty) => return,
            Ok(Reply::Exited { pid, exitcode }) => {
                st.exit_codes.insert(pid, exitcode);
            }
            Ok(Reply::Spawned { pid }) => {
                st.spawning = st.spawning.saturating_sub(1);
                let fds = z.ctl.recv_fds_timeout(Duration::from_secs(10));
                let mut it = fds.into_iter().flatten();
                if let (Some(pidfd), Some(sock)) = (it.next(), it.next()) {
                    let id = st.next_worker;
                    st.next_worker += 1;
                    let w = Worker::new(id, pid, pidfd, Connection::from(sock));
                    if st.stopping {
                        // Not needed any more: tell it to leave at once.
                        let mut w = w;
                        if let Some(c) = w.conn.as_mut() {
                            let _ = c.send_bytes(&[]);
                        }
                    } else {
                        st.workers.push(w);
                    }
                } else {
                    break_pool(st, "fork server sent a bad reply".into());
                }
            }
            Ok(Reply::SpawnFailed { errno }) => {
                st.spawning = st.spawning.saturating_sub(1);
                let e = std::io::Error::from_raw_os_error(errno);
                break_pool(st, format!("could not fork a worker: {e}"));
            }
            Err(_) => {
                st.zygote_gone = true;
                if !st.stopping {
                    break_pool(st, "fork server died".into());
                }
                return;
            }
        }
    }
}

/// Resolves the jobs of workers whose pidfd fired, once their exit code is known (or could
/// not be learnt in time), and removes them.
fn finalize_dead(st: &mut State, now: Instant, rbuf: &mut Vec<u8>) {
    let mut i = 0;
    while i < st.workers.len() {
        let w = &st.workers[i];
        let Some(t) = w.dead else {
            i += 1;
            continue;
        };
        if w.conn.is_none() {
            // A caller of `apply` holds it; it hands it back when it notices.
            i += 1;
            continue;
        }
        let code = st.exit_codes.get(&w.pid).copied();
        if code.is_none() && !st.zygote_gone && now < t + EXIT_REPORT_WAIT {
            i += 1;
            continue;
        }
        st.exit_codes.remove(&w.pid);
        // Results it finished before dying are still valid (a lent worker is taken back).
        st.workers[i].lent = None;
        drain(st, i, rbuf);
        let mut w = st.workers.swap_remove(i);
        let jobs = std::mem::take(&mut w.inflight);
        let init_failed = code == Some(INIT_FAILED) && w.completed == 0;
        let policy = st.policy;
        // Jobs of later frames never started: they go back to the queue, in order.
        let first = jobs.front().map(|j| j.frame);
        let (ran, unstarted): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| Some(j.frame) == first);
        for job in unstarted.into_iter().rev() {
            st.queue.push_front(job);
        }
        for mut job in ran {
            let died = Error::WorkerDied {
                pid: w.pid,
                exitcode: code,
            };
            match policy {
                Policy::Retry(n) if job.retries < n => {
                    job.retries += 1;
                    st.queue.push_front(job);
                }
                _ => {
                    st.outstanding -= 1;
                    job.resolve(Err(died), 0);
                }
            }
        }
        if init_failed {
            break_pool(st, format!("the initializer panicked in worker {}", w.pid));
        } else if policy == Policy::BreakPool && w.sent > w.completed && !st.stopping {
            break_pool(
                st,
                format!(
                    "worker {} died (exit code {code:?}) under Policy::BreakPool",
                    w.pid
                ),
            );
        }
    }
}

/// Hands queued jobs to workers with room, several per frame.
fn assign(st: &mut State) {
    let keep_payload = matches!(st.policy, Policy::Retry(_));
    let max_jobs = st.max_jobs;
    let mut touched = false;
    while let Some(job) = st.queue.front() {
        let best = st
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.can_take(job))
            .min_by_key(|(_, w)| w.inflight.len())
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let Some(mut job) = st.queue.pop_front() else {
            break;
        };
        let w = &mut st.workers[i];
        // Only jobs measured to be tiny share a frame; others travel alone, so a death fails
        // exactly the job that ran.
        if job.est_ns == 0 || job.est_ns > BATCH_NS || w.unknown > 0 {
            flush_frame(w);
        }
        if w.out.is_empty() {
            w.frames += 1;
        }
        job.frame = w.frames;
        task::put_job_header(
            &mut w.out,
            job.id,
            job.tramp,
            job.func,
            job.count,
            job.payload.len() as u64,
        );
        w.out.extend_from_slice(&job.payload);
        job.len = job.payload.len();
        if !keep_payload {
            job.payload = Vec::new();
        }
        // Replies to the dispatcher's jobs would also wake a runtime that watches this
        // socket for the direct async path: the registration goes (the next loan makes one).
        #[cfg(feature = "tokio")]
        {
            w.reg = None;
        }
        w.push(job, max_jobs);
        touched = true;
    }
    if !touched {
        return;
    }
    ipc_failpoints::failpoint!("pool.parent.dispatching");
    for w in &mut st.workers {
        flush_frame(w);
    }
}

/// Sends the frame being built for `w`, if any.
fn flush_frame(w: &mut Worker) {
    if w.out.is_empty() {
        return;
    }
    if let Some(c) = w.conn.as_mut() {
        // A failed write means the worker is dying: its pidfd resolves the jobs.
        let _ = c.send_bytes(&w.out);
    }
    w.out.clear();
    if w.out.capacity() > (1 << 20) {
        w.out = Vec::new();
    }
}

/// Asks the fork server for workers until the pool has its number again.
fn top_up(st: &mut State) {
    if st.stopping || st.broken.is_some() || st.zygote_gone {
        return;
    }
    let live = st
        .workers
        .iter()
        .filter(|w| w.dead.is_none() && !w.retiring)
        .count();
    while live + st.spawning < st.processes {
        let Some(z) = st.zygote.as_mut() else { return };
        if z.ctl.send(&Request::Spawn).is_err() {
            st.zygote_gone = true;
            break_pool(st, "fork server died".into());
            return;
        }
        st.spawning += 1;
    }
}

/// Fails everything queued and in flight, kills the workers, refuses new work.
pub(crate) fn break_pool(st: &mut State, why: String) {
    if st.broken.is_none() {
        st.broken = Some(why.clone());
    }
    fail_all(st, || Error::Broken(why.clone()));
    st.closed = true;
    st.stopping = true;
}

/// Resolves every queued and in-flight job with `err()` and kills every worker.
pub(crate) fn fail_all(st: &mut State, err: impl Fn() -> Error) {
    for job in std::mem::take(&mut st.queue) {
        st.outstanding -= 1;
        job.resolve(Err(err()), 0);
    }
    for w in &mut st.workers {
        let _ = sys::pidfd_signal(w.pidfd.as_fd(), libc::SIGKILL);
        for job in std::mem::take(&mut w.inflight) {
            st.outstanding -= 1;
            job.resolve(Err(err()), 0);
        }
        w.est_ns = 0;
        w.unknown = 0;
        w.bytes = 0;
    }
}

/// Stops the workers and the fork server and waits (bounded) for the server to leave.
fn shutdown(st: &mut State) {
    for w in &mut st.workers {
        if let Some(c) = w.conn.as_mut() {
            let _ = c.send_bytes(&[]);
        }
    }
    // A worker whose connection a caller of `apply` has checked out stays in the table (its
    // jobs were resolved by `fail_all` or by the caller): that caller polls its pidfd number
    // and hands the connection back. (Clearing it here made that caller's lookup fail.)
    st.workers.retain(|w| w.conn.is_none());
    let Some(mut z) = st.zygote.take() else {
        return;
    };
    let _ = z.ctl.send(&Request::Shutdown);
    let deadline = Instant::now() + ZYGOTE_EXIT_WAIT;
    let mut p = [sys::pollin(z.pidfd.as_raw_fd())];
    let exited = matches!(sys::poll(&mut p, Some(deadline)), Ok(n) if n > 0);
    if !exited {
        let _ = sys::pidfd_signal(z.pidfd.as_fd(), libc::SIGKILL);
    }
    if z.ours {
        let _ = sys::waitid_pidfd(z.pidfd.as_fd(), false);
    } else if !exited {
        let mut p = [sys::pollin(z.pidfd.as_raw_fd())];
        let _ = sys::poll(&mut p, Some(Instant::now() + ZYGOTE_EXIT_WAIT));
    }
}
