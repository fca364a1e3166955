//! Which transport should `ipc-pool` use? K1, K2a and K2b over two minimal pool transports
//! that share everything but the transport (the `pool_transport` binary runs them).
//!
//! Shared by both: the wire format of `ipc_pool`'s `task.rs` (36-byte job records and 29-byte
//! result records, many per frame, postcard-encoded arguments and results back to back), the
//! worker loop of `fork_server.rs` (one result frame per job frame, worker time per job), the
//! adaptive chunking and look-ahead of `pool.rs` (`Feed`), and the in-flight table and frame
//! batching of `dispatcher.rs` (`can_take`, jobs below 50 µs share a frame, one frame number per
//! job so a dead worker's task can still be named). The parent is single-threaded here (the
//! real pool splits filling and dispatching across two threads; both variants leave that out).
//!
//! The transports:
//! - [`Transport::Pipe`]: one `ipc_pipe::duplex` connection per worker; the parent waits with
//!   `ipc_pipe::wait` over the connections and the workers' pidfds, as the real pool does, so a
//!   death is seen at once.
//! - [`Transport::Queue`]: one `ipc_queue::Queue<Frame>` of tasks per worker (the parent still
//!   knows which worker runs which task) and one shared result queue; the parent blocks in
//!   `get_timeout` on the result queue and looks at the worker pidfds between slices of
//!   [`DEATH_CHECK`] (and at least that often while results flow).
//! - [`Transport::PodFrames`]: the same queues as `PodQueue<PodFrame>` of fixed 4 KiB frames;
//!   a message longer than a frame is split and reassembled per worker.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use ipc_pipe::Connection;
use ipc_queue::{PodQueue, Queue};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::os;
use crate::refs_proc::sq;

// ------------------------------------------------------------ constants of ipc-pool

/// Job record header (`task.rs`): id, trampoline, func, count, len.
const JOB_HDR: usize = 36;
/// Result record header (`task.rs`): id, status, count, nanos, len.
const RES_HDR: usize = 29;
/// `dispatcher.rs`: bytes of job payload in flight per worker beyond the first job.
const PIPE_BYTES: usize = 48 << 10;
/// `dispatcher.rs`: estimated work in flight per worker beyond the first job.
const PIPE_NS: u64 = 2_000_000;
/// `dispatcher.rs`: jobs estimated below this may share a frame.
const BATCH_NS: u64 = 50_000;
/// `dispatcher.rs`: jobs in flight per worker while their cost is unknown.
const PIPE_UNKNOWN: usize = 2;
/// `dispatcher.rs`: jobs in flight per worker at most.
const PIPE_MAX: usize = 1024;
/// `pool.rs`: worker time a chunk aims at.
const TARGET_CHUNK_NS: u64 = 10_000_000;
/// `pool.rs`: worker time below which a chunk is not made smaller.
const MIN_CHUNK_NS: u64 = 500_000;
/// `pool.rs`: estimated work kept submitted ahead, per worker.
const LOOKAHEAD_NS: u64 = 8_000_000;
/// `pool.rs`: chunks kept submitted ahead at most.
const LOOKAHEAD_MAX: usize = 4096;
/// `pool.rs`: items per probe chunk.
const PROBE_CHUNK: usize = 16;
/// `pool.rs`: items per chunk at most.
const CHUNK_MAX: usize = 1 << 20;

/// Workers of every run.
pub const WORKERS: usize = 2;
/// How often the queue transports look at the worker pidfds.
pub const DEATH_CHECK: Duration = Duration::from_millis(20);
/// A run that has not finished after this fails (and its workers are killed).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Largest frame the `Queue<Frame>` transport carries (slot size).
const QUEUE_MAX_MESSAGE: usize = 1 << 20;
/// Slots of each task queue and of the result queue (`Queue<Frame>`).
const QUEUE_TASK_SLOTS: usize = 16;
const QUEUE_RESULT_SLOTS: usize = 32;
/// Payload bytes of one `PodFrame`.
const POD_DATA: usize = 4096 - 16;
/// Slots of each task queue and of the result queue (`PodQueue<PodFrame>`).
const POD_TASK_SLOTS: usize = 256;
const POD_RESULT_SLOTS: usize = 512;

/// The transports compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Per-worker `ipc_pipe` duplex connections.
    Pipe,
    /// `ipc_queue::Queue<Frame>`: a task queue per worker, one result queue.
    Queue,
    /// `ipc_queue::PodQueue<PodFrame>` of 4 KiB frames: a task queue per worker, one result
    /// queue.
    PodFrames,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 3] = [Transport::Pipe, Transport::Queue, Transport::PodFrames];

    /// Short name for tables and `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Queue => "queue",
            Transport::PodFrames => "podq",
        }
    }
}

/// The pool workloads of `WORKLOADS.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `n` sequential `apply(sq, i)`, µs per call.
    K1,
    /// `map(sq, 0..n)` with the default chunking, Mtask/s.
    K2a,
    /// `map_chunked(sq, 0..n, 1)`, Mtask/s.
    K2b,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 3] = [Workload::K1, Workload::K2a, Workload::K2b];

    /// Its id.
    pub fn name(self) -> &'static str {
        match self {
            Workload::K1 => "K1",
            Workload::K2a => "K2a",
            Workload::K2b => "K2b",
        }
    }

    /// Its `n` in `WORKLOADS.md`.
    pub fn n(self) -> u64 {
        match self {
            Workload::K1 => 5_000,
            Workload::K2a => 200_000,
            Workload::K2b => 20_000,
        }
    }

    /// The figure of `n` items in `secs`: µs/call for K1, Mtask/s for K2.
    pub fn figure(self, n: u64, secs: f64) -> f64 {
        match self {
            Workload::K1 => secs * 1e6 / n as f64,
            _ => n as f64 / secs / 1e6,
        }
    }

    /// The figure's unit.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::K1 => "µs/call",
            _ => "Mtask/s",
        }
    }
}

// ------------------------------------------------------------ wire format (task.rs)

fn put_job_header(out: &mut Vec<u8>, id: u64, count: u32, len: u64) {
    out.extend_from_slice(&id.to_le_bytes());
    // Trampoline and function addresses: the worker here calls `sq` directly.
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(sq as fn(u64) -> u64 as usize as u64).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Splits a record with a `hdr`-byte header whose payload length sits at `len_at`.
fn next_record<'a>(buf: &mut &'a [u8], hdr: usize, len_at: usize) -> Option<(&'a [u8], &'a [u8])> {
    let b = *buf;
    if b.len() < hdr {
        return None;
    }
    let len = usize::try_from(u64_at(b, len_at)).ok()?;
    let end = hdr.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    *buf = &b[end..];
    Some((&b[..hdr], &b[hdr..end]))
}

fn put_result(out: &mut Vec<u8>, id: u64, status: u8, count: u32, nanos: u64, payload: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(status);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The trampoline of `sq`: decode `count` arguments, call, encode each result.
fn run_sq(count: u32, input: &[u8], out: &mut Vec<u8>) -> u8 {
    let mut rest = input;
    for _ in 0..count {
        let Ok((a, r)) = postcard::take_from_bytes::<u64>(rest) else {
            return 2;
        };
        rest = r;
        let r = sq(a);
        match postcard::to_extend(&r, std::mem::take(out)) {
            Ok(v) => *out = v,
            Err(_) => return 3,
        }
    }
    if rest.is_empty() {
        0
    } else {
        2
    }
}

/// Decodes exactly `count` results onto `out`.
fn decode_results(bytes: &[u8], count: u32, out: &mut Vec<u64>) -> Result<(), String> {
    let mut rest = bytes;
    out.reserve(count as usize);
    for _ in 0..count {
        let (r, tail) = postcard::take_from_bytes::<u64>(rest).map_err(|e| e.to_string())?;
        out.push(r);
        rest = tail;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err("trailing bytes after the results".into())
    }
}

// ------------------------------------------------------------ queue messages

/// One message of the `Queue<Frame>` transport: the sending worker (on results) and the bytes,
/// encoded by postcard as a `u32` and a byte string (one `memcpy`, not a sequence of `u8`).
#[derive(Default)]
pub struct Frame {
    from: u32,
    bytes: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("from", &self.from)
            .field("len", &self.bytes.len())
            .finish()
    }
}

struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.from)?;
        t.serialize_element(&RawBytes(&self.bytes))?;
        t.end()
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V).map(ByteBuf)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Frame;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a (u32, bytes) frame")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Frame, A::Error> {
                let from = a
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let ByteBuf(bytes) = a
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                Ok(Frame { from, bytes })
            }
        }
        d.deserialize_tuple(2, V)
    }
}

/// One fixed frame of the `PodQueue` transport; a message spans frames up to one with `last`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct PodFrame {
    from: u32,
    len: u32,
    last: u32,
    _pad: u32,
    data: [u8; POD_DATA],
}

/// Puts `bytes` as frames; `full` runs whenever the queue is full (so a parent can drain
/// results meanwhile).
fn pod_put(
    q: &PodQueue<PodFrame>,
    from: u32,
    bytes: &[u8],
    frame: &mut PodFrame,
    full: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = bytes;
    loop {
        let n = rest.len().min(POD_DATA);
        frame.from = from;
        frame.len = n as u32;
        frame.last = u32::from(n == rest.len());
        frame.data[..n].copy_from_slice(&rest[..n]);
        loop {
            match q.try_put(&*frame) {
                Ok(()) => break,
                Err(ipc_queue::TryPutError::Full(_)) => full()?,
                Err(e) => return Err(format!("pod put: {e:?}")),
            }
        }
        rest = &rest[n..];
        if rest.is_empty() {
            return Ok(());
        }
    }
}

/// Appends frame `f` to `buf`; `true` once the message is complete. Untrusted lengths are
/// checked.
fn pod_take(f: &PodFrame, buf: &mut Vec<u8>) -> Result<bool, String> {
    let n = f.len as usize;
    if n > POD_DATA {
        return Err("pod frame length out of range".into());
    }
    buf.extend_from_slice(&f.data[..n]);
    Ok(f.last != 0)
}

// ------------------------------------------------------------ the channels

enum Chans {
    Pipe {
        parent: Vec<Connection>,
        child: Vec<Option<Connection>>,
    },
    Queue {
        tasks: Vec<Queue<Frame>>,
        results: Queue<Frame>,
    },
    Pod {
        tasks: Vec<PodQueue<PodFrame>>,
        results: PodQueue<PodFrame>,
    },
}

impl Chans {
    fn new(t: Transport) -> Result<Chans, String> {
        let qe = |e: ipc_queue::Error| format!("queue: {e}");
        Ok(match t {
            Transport::Pipe => {
                let mut parent = Vec::new();
                let mut child = Vec::new();
                for _ in 0..WORKERS {
                    let (a, b) = ipc_pipe::duplex().map_err(|e| format!("duplex: {e}"))?;
                    parent.push(a);
                    child.push(Some(b));
                }
                Chans::Pipe { parent, child }
            }
            Transport::Queue => {
                let q = |cap| {
                    Queue::<Frame>::builder()
                        .capacity(cap)
                        .max_message_size(QUEUE_MAX_MESSAGE)
                        .build()
                        .map_err(qe)
                };
                Chans::Queue {
                    tasks: (0..WORKERS)
                        .map(|_| q(QUEUE_TASK_SLOTS))
                        .collect::<Result<_, _>>()?,
                    results: q(QUEUE_RESULT_SLOTS)?,
                }
            }
            Transport::PodFrames => Chans::Pod {
                tasks: (0..WORKERS)
                    .map(|_| PodQueue::new(POD_TASK_SLOTS).map_err(qe))
                    .collect::<Result<_, _>>()?,
                results: PodQueue::new(POD_RESULT_SLOTS).map_err(qe)?,
            },
        })
    }
}

// ------------------------------------------------------------ worker side

/// The worker's end of a transport.
trait WorkerEnd {
    /// The next job frame into `buf`; `false` means stop (an empty frame or a broken channel).
    fn recv(&mut self, buf: &mut Vec<u8>) -> bool;
    /// The result frame being built.
    fn out(&mut self) -> &mut Vec<u8>;
    /// Sends [`out`](Self::out) as one result frame.
    fn flush(&mut self) -> bool;
}

struct PipeWorker {
    conn: Connection,
    out: Vec<u8>,
}

impl WorkerEnd for PipeWorker {
    fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        matches!(self.conn.recv_bytes_into(buf), Ok(n) if n > 0)
    }
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn flush(&mut self) -> bool {
        self.conn.send_bytes(&self.out).is_ok()
    }
}

struct QueueWorker<'a> {
    tasks: &'a Queue<Frame>,
    results: &'a Queue<Frame>,
    out: Frame,
}

impl WorkerEnd for QueueWorker<'_> {
    fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        match self.tasks.get() {
            Ok(f) => {
                *buf = f.bytes;
                !buf.is_empty()
            }
            Err(_) => false,
        }
    }
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out.bytes
    }
    fn flush(&mut self) -> bool {
        self.results.put(&self.out).is_ok()
    }
}

struct PodWorker<'a> {
    tasks: &'a PodQueue<PodFrame>,
    results: &'a PodQueue<PodFrame>,
    from: u32,
    out: Vec<u8>,
    frame: Box<PodFrame>,
}

impl WorkerEnd for PodWorker<'_> {
    fn recv(&mut self, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        loop {
            let Ok(f) = self.tasks.get() else {
                return false;
            };
            match pod_take(&f, buf) {
                Ok(true) => return !buf.is_empty(),
                Ok(false) => {}
                Err(_) => return false,
            }
        }
    }
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn flush(&mut self) -> bool {
        // Workers wait for room (the parent always drains results).
        let r = pod_put(
            self.results,
            self.from,
            &self.out,
            &mut self.frame,
            &mut || {
                std::thread::yield_now();
                Ok(())
            },
        );
        r.is_ok()
    }
}

/// `fork_server::worker_main`'s loop: jobs until told to stop; exit code.
fn worker_loop(end: &mut dyn WorkerEnd) -> i32 {
    let mut inbuf: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        if !end.recv(&mut inbuf) {
            return 0;
        }
        let out = end.out();
        out.clear();
        let mut rest = &inbuf[..];
        while !rest.is_empty() {
            let Some((h, payload)) = next_record(&mut rest, JOB_HDR, 28) else {
                return 71;
            };
            let (id, count) = (u64_at(h, 0), u32_at(h, 24));
            scratch.clear();
            let t0 = Instant::now();
            let status = run_sq(count, payload, &mut scratch);
            let nanos = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            put_result(out, id, status, count, nanos, &scratch);
        }
        if !end.flush() {
            return 0;
        }
        let out = end.out();
        if out.capacity() > (1 << 20) {
            *out = Vec::new();
        }
    }
}

// ------------------------------------------------------------ parent side

/// Why a wait ended without results.
enum WaitErr {
    /// Worker `w`'s pidfd fired.
    Died(usize),
    Other(String),
}

impl From<String> for WaitErr {
    fn from(s: String) -> Self {
        WaitErr::Other(s)
    }
}

type OnFrame<'a> = dyn FnMut(usize, &[u8]) -> Result<(), String> + 'a;

/// The parent's end of a transport.
trait ParentEnd {
    /// Sends the job frame in `out` to worker `w` (`out` is given back unchanged).
    fn send(&mut self, w: usize, out: &mut Vec<u8>) -> Result<(), WaitErr>;
    /// Waits for at least one result frame and passes it to `f` (with every other frame
    /// already there when `drain`). A worker's death is `Died`.
    fn wait(&mut self, drain: bool, f: &mut OnFrame<'_>) -> Result<(), WaitErr>;
}

struct Workers {
    pids: Vec<libc::pid_t>,
    pidfds: Vec<OwnedFd>,
}

impl Workers {
    /// Worker whose pidfd is readable now, if any.
    fn dead_now(&self) -> Result<Option<usize>, String> {
        let objs: Vec<&dyn AsFd> = self.pidfds.iter().map(|f| f as &dyn AsFd).collect();
        let r = ipc_pipe::wait(&objs, Some(Duration::ZERO)).map_err(|e| format!("wait: {e}"))?;
        Ok(r.first().copied())
    }
}

struct PipeParent<'a> {
    conns: Vec<Connection>,
    workers: &'a Workers,
    rbuf: Vec<u8>,
}

impl ParentEnd for PipeParent<'_> {
    fn send(&mut self, w: usize, out: &mut Vec<u8>) -> Result<(), WaitErr> {
        // A failed write means the worker is dying: its pidfd tells.
        let _ = self.conns[w].send_bytes(out);
        Ok(())
    }

    fn wait(&mut self, drain: bool, f: &mut OnFrame<'_>) -> Result<(), WaitErr> {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            let ready = {
                let mut objs: Vec<&dyn AsFd> = Vec::with_capacity(2 * WORKERS);
                objs.extend(self.conns.iter().map(|c| c as &dyn AsFd));
                objs.extend(self.workers.pidfds.iter().map(|p| p as &dyn AsFd));
                ipc_pipe::wait(&objs, Some(DEATH_CHECK)).map_err(|e| format!("wait: {e}"))?
            };
            let mut got = false;
            for &i in &ready {
                if i >= WORKERS {
                    if got {
                        continue;
                    }
                    // It died; results it finished first are still taken.
                    let w = i - WORKERS;
                    if self.conns[w].try_recv_bytes_into(&mut self.rbuf).is_ok() {
                        f(w, &self.rbuf)?;
                        return Ok(());
                    }
                    return Err(WaitErr::Died(w));
                }
                loop {
                    match self.conns[i].try_recv_bytes_into(&mut self.rbuf) {
                        Ok(_) => {
                            f(i, &self.rbuf)?;
                            got = true;
                            if !drain {
                                return Ok(());
                            }
                        }
                        Err(ipc_pipe::TryRecvError::Empty) => break,
                        Err(e) => return Err(WaitErr::Other(format!("recv: {e}"))),
                    }
                }
            }
            if got {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(WaitErr::Other("no result within the run limit".into()));
            }
        }
    }
}

/// Death checks of the queue transports: at least every [`DEATH_CHECK`].
struct DeathClock {
    last: Instant,
}

impl DeathClock {
    fn check(&mut self, workers: &Workers, force: bool) -> Result<(), WaitErr> {
        let now = Instant::now();
        if force || now.duration_since(self.last) >= DEATH_CHECK {
            self.last = now;
            if let Some(w) = workers.dead_now()? {
                return Err(WaitErr::Died(w));
            }
        }
        Ok(())
    }
}

struct QueueParent<'a> {
    tasks: &'a [Queue<Frame>],
    results: &'a Queue<Frame>,
    workers: &'a Workers,
    clock: DeathClock,
    /// Results taken while a task queue was full.
    stash: VecDeque<Frame>,
    msg: Frame,
}

impl QueueParent<'_> {
    fn deliver(&self, fr: &Frame, f: &mut OnFrame<'_>) -> Result<(), WaitErr> {
        let w = fr.from as usize;
        if w >= WORKERS {
            return Err(WaitErr::Other("result frame from an unknown worker".into()));
        }
        Ok(f(w, &fr.bytes)?)
    }
}

impl ParentEnd for QueueParent<'_> {
    fn send(&mut self, w: usize, out: &mut Vec<u8>) -> Result<(), WaitErr> {
        self.msg.bytes = std::mem::take(out);
        let r = loop {
            match self.tasks[w].try_put(&self.msg) {
                Ok(()) => break Ok(()),
                Err(ipc_queue::TryPutError::Full(_)) => {
                    // Take results meanwhile, so the worker is never stuck on a full result
                    // queue while we wait for room.
                    match self.results.get_timeout(Duration::from_millis(1)) {
                        Ok(fr) => self.stash.push_back(fr),
                        Err(ipc_queue::GetTimeoutError::Timeout) => {}
                        Err(e) => break Err(WaitErr::Other(format!("get: {e}"))),
                    }
                    if let Err(e) = self.clock.check(self.workers, false) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(WaitErr::Other(format!("put: {e:?}"))),
            }
        };
        *out = std::mem::take(&mut self.msg.bytes);
        r
    }

    fn wait(&mut self, drain: bool, f: &mut OnFrame<'_>) -> Result<(), WaitErr> {
        let deadline = Instant::now() + RUN_LIMIT;
        if let Some(fr) = self.stash.pop_front() {
            self.deliver(&fr, f)?;
            if !drain {
                return Ok(());
            }
            while let Some(fr) = self.stash.pop_front() {
                self.deliver(&fr, f)?;
            }
        } else {
            loop {
                match self.results.get_timeout(DEATH_CHECK) {
                    Ok(fr) => {
                        self.deliver(&fr, f)?;
                        break;
                    }
                    Err(ipc_queue::GetTimeoutError::Timeout) => {
                        self.clock.check(self.workers, true)?;
                        if Instant::now() > deadline {
                            return Err(WaitErr::Other("no result within the run limit".into()));
                        }
                    }
                    Err(e) => return Err(WaitErr::Other(format!("get: {e}"))),
                }
            }
        }
        if drain {
            loop {
                match self.results.try_get() {
                    Ok(fr) => self.deliver(&fr, f)?,
                    Err(ipc_queue::TryGetError::Empty) => break,
                    Err(e) => return Err(WaitErr::Other(format!("get: {e}"))),
                }
            }
        }
        self.clock.check(self.workers, false)
    }
}

struct PodParent<'a> {
    tasks: &'a [PodQueue<PodFrame>],
    results: &'a PodQueue<PodFrame>,
    workers: &'a Workers,
    clock: DeathClock,
    /// Partial result messages, per worker.
    partial: Vec<Vec<u8>>,
    /// Complete result messages taken while a task queue was full.
    stash: VecDeque<(usize, Vec<u8>)>,
    frame: Box<PodFrame>,
}

impl PodParent<'_> {
    /// Adds frame `fr`; the worker whose message it completed.
    fn add(partial: &mut [Vec<u8>], fr: &PodFrame) -> Result<Option<usize>, String> {
        let w = fr.from as usize;
        if w >= WORKERS {
            return Err("result frame from an unknown worker".into());
        }
        Ok(pod_take(fr, &mut partial[w])?.then_some(w))
    }
}

impl ParentEnd for PodParent<'_> {
    fn send(&mut self, w: usize, out: &mut Vec<u8>) -> Result<(), WaitErr> {
        let PodParent {
            tasks,
            results,
            workers,
            clock,
            partial,
            stash,
            frame,
        } = self;
        let mut died = None;
        let mut full = || -> Result<(), String> {
            match results.get_timeout(Duration::from_millis(1)) {
                Ok(fr) => {
                    if let Some(w) = Self::add(partial, &fr)? {
                        stash.push_back((w, std::mem::take(&mut partial[w])));
                    }
                }
                Err(ipc_queue::GetTimeoutError::Timeout) => {}
                Err(e) => return Err(format!("get: {e}")),
            }
            match clock.check(workers, false) {
                Ok(()) => Ok(()),
                Err(WaitErr::Died(w)) => {
                    died = Some(w);
                    Err("died".into())
                }
                Err(WaitErr::Other(e)) => Err(e),
            }
        };
        let r = pod_put(&tasks[w], 0, out, frame, &mut full);
        match (r, died) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(w)) => Err(WaitErr::Died(w)),
            (Err(e), None) => Err(WaitErr::Other(e)),
        }
    }

    fn wait(&mut self, drain: bool, f: &mut OnFrame<'_>) -> Result<(), WaitErr> {
        let deadline = Instant::now() + RUN_LIMIT;
        let mut got = false;
        while let Some((w, b)) = self.stash.pop_front() {
            f(w, &b)?;
            got = true;
            if !drain {
                return Ok(());
            }
        }
        while !got {
            match self.results.get_timeout(DEATH_CHECK) {
                Ok(fr) => {
                    if let Some(w) = Self::add(&mut self.partial, &fr)? {
                        f(w, &self.partial[w])?;
                        self.partial[w].clear();
                        got = true;
                    }
                }
                Err(ipc_queue::GetTimeoutError::Timeout) => {
                    self.clock.check(self.workers, true)?;
                    if Instant::now() > deadline {
                        return Err(WaitErr::Other("no result within the run limit".into()));
                    }
                }
                Err(e) => return Err(WaitErr::Other(format!("get: {e}"))),
            }
        }
        if drain {
            loop {
                match self.results.try_get() {
                    Ok(fr) => {
                        if let Some(w) = Self::add(&mut self.partial, &fr)? {
                            f(w, &self.partial[w])?;
                            self.partial[w].clear();
                        }
                    }
                    Err(ipc_queue::TryGetError::Empty) => break,
                    Err(e) => return Err(WaitErr::Other(format!("get: {e}"))),
                }
            }
        }
        self.clock.check(self.workers, false)
    }
}

// ------------------------------------------------------------ dispatcher (dispatcher.rs)

struct Job {
    id: u64,
    index: usize,
    count: u32,
    est_ns: u64,
    len: usize,
    frame: u64,
    payload: Vec<u8>,
}

#[derive(Default)]
struct W {
    inflight: VecDeque<Job>,
    est_ns: u64,
    unknown: usize,
    bytes: usize,
    frames: u64,
    out: Vec<u8>,
}

impl W {
    fn can_take(&self, job: &Job) -> bool {
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

    fn push(&mut self, job: Job) {
        self.est_ns += job.est_ns;
        self.unknown += usize::from(job.est_ns == 0);
        self.bytes += job.len;
        self.inflight.push_back(job);
    }

    fn take(&mut self, id: u64) -> Option<Job> {
        let pos = self.inflight.iter().position(|j| j.id == id)?;
        let job = self.inflight.remove(pos)?;
        self.est_ns -= job.est_ns;
        self.unknown -= usize::from(job.est_ns == 0);
        self.bytes -= job.len;
        Some(job)
    }
}

/// The parent's bookkeeping: in-flight tables and the measured cost per item.
struct Disp {
    ws: Vec<W>,
    next_id: u64,
    items: u64,
    nanos: u64,
    /// Finished chunks not yet collected in order: index -> (count, result bytes).
    pending: HashMap<usize, (u32, Vec<u8>)>,
}

impl Disp {
    fn new() -> Disp {
        Disp {
            ws: (0..WORKERS).map(|_| W::default()).collect(),
            next_id: 1,
            items: 0,
            nanos: 0,
            pending: HashMap::new(),
        }
    }

    /// What the in-flight table says when worker `w` died: the jobs of its oldest frame fail,
    /// later frames never started (the real pool queues them again).
    fn death(&self, w: usize, workers: &Workers) -> String {
        let wk = &self.ws[w];
        let first = wk.inflight.front().map(|j| j.frame);
        let failed: Vec<u64> = wk
            .inflight
            .iter()
            .filter(|j| Some(j.frame) == first)
            .map(|j| j.id)
            .collect();
        format!(
            "worker {} died: jobs {failed:?} fail with WorkerDied, {} unstarted",
            workers.pids[w],
            wk.inflight.len() - failed.len()
        )
    }

    fn err(&self, e: WaitErr, workers: &Workers) -> String {
        match e {
            WaitErr::Died(w) => self.death(w, workers),
            WaitErr::Other(s) => s,
        }
    }

    /// Resolves the jobs of one result frame from worker `w` (`dispatcher::handle_results`).
    fn handle(&mut self, w: usize, frame: &[u8]) -> Result<(), String> {
        let mut rest = frame;
        while !rest.is_empty() {
            let (h, payload) =
                next_record(&mut rest, RES_HDR, 21).ok_or("malformed result record")?;
            let (id, status, count, nanos) = (u64_at(h, 0), h[8], u32_at(h, 9), u64_at(h, 13));
            let job = self.ws[w]
                .take(id)
                .ok_or("result for a job not in flight")?;
            if count != job.count {
                return Err("result count differs from the job's".into());
            }
            if status != 0 {
                return Err(format!("task failed with status {status}"));
            }
            self.items += u64::from(count);
            self.nanos += nanos;
            self.pending.insert(job.index, (count, payload.to_vec()));
        }
        Ok(())
    }

    /// Sends the frame being built for worker `w`, if any.
    fn flush(&mut self, w: usize, end: &mut dyn ParentEnd) -> Result<(), WaitErr> {
        let wk = &mut self.ws[w];
        if wk.out.is_empty() {
            return Ok(());
        }
        let r = end.send(w, &mut wk.out);
        wk.out.clear();
        if wk.out.capacity() > (1 << 20) {
            wk.out = Vec::new();
        }
        r
    }

    /// Hands queued jobs to workers with room, several per frame (`dispatcher::assign`).
    fn assign(
        &mut self,
        queue: &mut VecDeque<Job>,
        end: &mut dyn ParentEnd,
    ) -> Result<(), WaitErr> {
        let mut touched = false;
        while let Some(job) = queue.front() {
            let best = self
                .ws
                .iter()
                .enumerate()
                .filter(|(_, w)| w.can_take(job))
                .min_by_key(|(_, w)| w.inflight.len())
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let Some(mut job) = queue.pop_front() else {
                break;
            };
            if job.est_ns == 0 || job.est_ns > BATCH_NS || self.ws[i].unknown > 0 {
                self.flush(i, end)?;
            }
            let w = &mut self.ws[i];
            if w.out.is_empty() {
                w.frames += 1;
            }
            job.frame = w.frames;
            put_job_header(&mut w.out, job.id, job.count, job.payload.len() as u64);
            w.out.extend_from_slice(&job.payload);
            job.len = job.payload.len();
            job.payload = Vec::new();
            w.push(job);
            touched = true;
        }
        if touched {
            for i in 0..WORKERS {
                self.flush(i, end)?;
            }
        }
        Ok(())
    }
}

/// `Feed::chunk_size` for an input of known length.
fn chunk_size(fixed: Option<usize>, per_item: Option<u64>, len: usize, pulled: usize) -> usize {
    if let Some(n) = fixed {
        return n;
    }
    let w = WORKERS;
    let size = match per_item {
        None => len.div_ceil(4 * w).min(PROBE_CHUNK),
        Some(t) => {
            let hi = usize::try_from(TARGET_CHUNK_NS / t)
                .unwrap_or(usize::MAX)
                .max(1);
            let lo = usize::try_from(MIN_CHUNK_NS / t)
                .unwrap_or(usize::MAX)
                .max(1);
            (len.saturating_sub(pulled) / (2 * w)).max(lo).min(hi)
        }
    };
    size.clamp(1, CHUNK_MAX)
}

/// `Feed::may_submit` for an input of known length.
fn may_submit(ahead: usize, per_item: Option<u64>, chunk: usize) -> bool {
    let w = WORKERS;
    let limit = match per_item {
        None => w,
        Some(t) => {
            let chunk_ns = t.saturating_mul(chunk as u64).max(1);
            let by_time = (LOOKAHEAD_NS.saturating_mul(w as u64) / chunk_ns) as usize;
            by_time.clamp(2 * w, LOOKAHEAD_MAX)
        }
    };
    ahead < limit
}

/// `map(sq, 0..n)` (chunk size `fixed` or adaptive); results in input order.
fn map(
    d: &mut Disp,
    end: &mut dyn ParentEnd,
    workers: &Workers,
    n: u64,
    fixed: Option<usize>,
) -> Result<Vec<u64>, String> {
    let len = n as usize;
    let mut input = 0..n;
    let mut input_done = false;
    let (mut pulled, mut submitted, mut consumed) = (0usize, 0usize, 0usize);
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut out: Vec<u64> = Vec::with_capacity(len);
    d.items = 0;
    d.nanos = 0;
    loop {
        // Feed::fill
        while !input_done {
            let per_item = (d.items > 0).then(|| (d.nanos / d.items).max(1));
            let size = chunk_size(fixed, per_item, len, pulled);
            if !may_submit(submitted - consumed, per_item, size) {
                break;
            }
            let mut payload = Vec::new();
            let mut count: u32 = 0;
            for a in input.by_ref().take(size) {
                payload = postcard::to_extend(&a, payload).map_err(|e| e.to_string())?;
                count += 1;
            }
            pulled += count as usize;
            if count == 0 {
                input_done = true;
                break;
            }
            if (count as usize) < size {
                input_done = true;
            }
            let est = per_item.map_or(0, |t| t.saturating_mul(u64::from(count)));
            let id = d.next_id;
            d.next_id += 1;
            queue.push_back(Job {
                id,
                index: submitted,
                count,
                est_ns: est,
                len: payload.len(),
                frame: 0,
                payload,
            });
            submitted += 1;
        }
        d.assign(&mut queue, end).map_err(|e| d.err(e, workers))?;
        // Feed::collect_all: decode the chunks that are next in order.
        while let Some((count, bytes)) = d.pending.remove(&consumed) {
            decode_results(&bytes, count, &mut out)?;
            consumed += 1;
        }
        if input_done && consumed == submitted {
            return Ok(out);
        }
        if queue.is_empty() && d.ws.iter().all(|w| w.inflight.is_empty()) {
            // Everything in flight was just collected: fill the look-ahead again before
            // waiting (it was full when `fill` ran at the top of this pass).
            continue;
        }
        let r = {
            let mut on = |w: usize, fr: &[u8]| d.handle(w, fr);
            end.wait(true, &mut on)
        };
        r.map_err(|e| d.err(e, workers))?;
    }
}

/// `apply(sq, x)` on an idle worker (worker 0: every call finds both idle).
fn apply(d: &mut Disp, end: &mut dyn ParentEnd, workers: &Workers, x: u64) -> Result<u64, String> {
    let payload = postcard::to_extend(&x, Vec::new()).map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(JOB_HDR + payload.len());
    let id = d.next_id;
    d.next_id += 1;
    put_job_header(&mut frame, id, 1, payload.len() as u64);
    frame.extend_from_slice(&payload);
    let w = &mut d.ws[0];
    w.frames += 1;
    w.push(Job {
        id,
        index: 0,
        count: 1,
        est_ns: 0,
        len: payload.len(),
        frame: w.frames,
        payload: Vec::new(),
    });
    end.send(0, &mut frame).map_err(|e| d.err(e, workers))?;
    let r = {
        let mut on = |w: usize, fr: &[u8]| d.handle(w, fr);
        end.wait(false, &mut on)
    };
    r.map_err(|e| d.err(e, workers))?;
    let (count, bytes) = d.pending.remove(&0).ok_or("apply: no result")?;
    let mut v = Vec::with_capacity(1);
    decode_results(&bytes, count, &mut v)?;
    v.pop().ok_or_else(|| "apply: empty result".into())
}

/// `got` must be `sq(0), .., sq(n-1)`.
fn check(got: &[u64], n: u64) -> Result<(), String> {
    if got.len() as u64 != n {
        return Err(format!("map: {} results, want {n}", got.len()));
    }
    match (0..n).find(|&i| got[i as usize] != sq(i)) {
        Some(i) => Err(format!(
            "map: result {i} is {}, want {}",
            got[i as usize],
            sq(i)
        )),
        None => Ok(()),
    }
}

/// Runs workload `k` once, untimed, then timed; seconds of the timed pass.
fn run_workload(
    d: &mut Disp,
    end: &mut dyn ParentEnd,
    workers: &Workers,
    k: Workload,
    n: u64,
) -> Result<f64, String> {
    let once = |d: &mut Disp, end: &mut dyn ParentEnd| -> Result<(), String> {
        match k {
            Workload::K1 => {
                for i in 0..n {
                    let v = apply(d, end, workers, i)?;
                    if v != sq(i) {
                        return Err(format!("apply(sq, {i}) returned {v}"));
                    }
                }
                Ok(())
            }
            Workload::K2a => check(&map(d, end, workers, n, None)?, n),
            Workload::K2b => check(&map(d, end, workers, n, Some(1))?, n),
        }
    };
    // Warm-up: the same work, so that every variant has touched its buffers and slots.
    once(d, end)?;
    let t0 = os::now_ns();
    once(d, end)?;
    let t1 = os::now_ns();
    Ok((t1 - t0).max(1) as f64 * 1e-9)
}

// ------------------------------------------------------------ processes

fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", os::last_errno()));
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Forks worker `w`; the child runs `worker_loop` and leaves with `_exit`.
fn fork_worker(chans: &mut Chans, w: usize) -> Result<libc::pid_t, String> {
    // SAFETY: this process is single-threaded when it forks (the Pool rows run in their own
    // driver children); the child only runs the worker loop and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", os::last_errno()));
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) with an int argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let code = match chans {
        Chans::Pipe { child, .. } => match child[w].take() {
            Some(conn) => worker_loop(&mut PipeWorker {
                conn,
                out: Vec::new(),
            }),
            None => 1,
        },
        Chans::Queue { tasks, results } => worker_loop(&mut QueueWorker {
            tasks: &tasks[w],
            results,
            out: Frame {
                from: w as u32,
                bytes: Vec::new(),
            },
        }),
        Chans::Pod { tasks, results } => worker_loop(&mut PodWorker {
            tasks: &tasks[w],
            results,
            from: w as u32,
            out: Vec::new(),
            frame: Box::new(PodFrame::zeroed()),
        }),
    };
    // SAFETY: leave the child without running the parent's destructors.
    unsafe { libc::_exit(code) }
}

/// Waits (bounded) for the workers to leave, kills the rest, reaps all; an error if one did
/// not exit 0.
fn reap(workers: &Workers) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut bad = None;
    for (pid, fd) in workers.pids.iter().zip(&workers.pidfds) {
        let left = deadline.saturating_duration_since(Instant::now());
        let exited =
            matches!(ipc_pipe::wait(&[fd as &dyn AsFd], Some(left)), Ok(r) if !r.is_empty());
        if !exited {
            // SAFETY: killing our own child.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: `status` is a valid int; `pid` is our child, reaped once.
        while unsafe { libc::waitpid(*pid, &mut status, 0) } < 0
            && nix::errno::Errno::last_raw() == libc::EINTR
        {}
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) && bad.is_none() {
            bad = Some(format!("worker {pid} ended with status {status:#x}"));
        }
    }
    bad.map_or(Ok(()), Err)
}

/// Forks two workers over transport `t`, runs workload `k` (`n` items) once to warm up and
/// once timed, stops and reaps the workers. Seconds of the timed pass.
pub fn run(t: Transport, k: Workload, n: u64) -> Result<f64, String> {
    let mut chans = Chans::new(t)?;
    let mut workers = Workers {
        pids: Vec::new(),
        pidfds: Vec::new(),
    };
    let mut failure = None;
    for w in 0..WORKERS {
        match fork_worker(&mut chans, w).and_then(|pid| {
            workers.pids.push(pid);
            pidfd_open(pid)
        }) {
            Ok(fd) => workers.pidfds.push(fd),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        for &pid in &workers.pids {
            // SAFETY: killing and reaping our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        return Err(e);
    }
    let clock = || DeathClock {
        last: Instant::now(),
    };
    let mut d = Disp::new();
    let result = match &mut chans {
        Chans::Pipe { parent, child } => {
            child.clear();
            let mut end = PipeParent {
                conns: std::mem::take(parent),
                workers: &workers,
                rbuf: Vec::new(),
            };
            let r = run_workload(&mut d, &mut end, &workers, k, n);
            for c in &mut end.conns {
                let _ = c.send_bytes(&[]);
            }
            r
        }
        Chans::Queue { tasks, results } => {
            let mut end = QueueParent {
                tasks,
                results,
                workers: &workers,
                clock: clock(),
                stash: VecDeque::new(),
                msg: Frame::default(),
            };
            let r = run_workload(&mut d, &mut end, &workers, k, n);
            for q in tasks.iter() {
                let _ = q.put_timeout(&Frame::default(), Duration::from_secs(1));
            }
            r
        }
        Chans::Pod { tasks, results } => {
            let mut end = PodParent {
                tasks,
                results,
                workers: &workers,
                clock: clock(),
                partial: vec![Vec::new(); WORKERS],
                stash: VecDeque::new(),
                frame: Box::new(PodFrame::zeroed()),
            };
            let r = run_workload(&mut d, &mut end, &workers, k, n);
            for q in tasks.iter() {
                let _ = pod_put(q, 0, &[], &mut end.frame, &mut || Err("full".into()));
            }
            r
        }
    };
    let reaped = reap(&workers);
    let secs = result?;
    reaped?;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_runs_every_workload_small() {
        for t in Transport::ALL {
            for k in Workload::ALL {
                let n = match k {
                    Workload::K1 => 50,
                    Workload::K2a => 3_000,
                    Workload::K2b => 300,
                };
                let s = run(t, k, n).unwrap_or_else(|e| panic!("{} {}: {e}", t.name(), k.name()));
                assert!(s > 0.0);
            }
        }
    }

    #[test]
    fn frame_round_trips_through_postcard() {
        let f = Frame {
            from: 1,
            bytes: vec![1, 2, 3, 255],
        };
        let b = postcard::to_allocvec(&f).unwrap();
        // u32 varint, then length and the bytes as they are.
        assert_eq!(b, [1, 4, 1, 2, 3, 255]);
        let g: Frame = postcard::from_bytes(&b).unwrap();
        assert_eq!((g.from, g.bytes), (1, vec![1, 2, 3, 255]));
    }

    #[test]
    fn default_chunking_matches_the_pool() {
        // Probe chunks, then a share of what remains, within the time bounds.
        assert_eq!(chunk_size(None, None, 200_000, 0), 16);
        assert_eq!(chunk_size(None, Some(100), 200_000, 64), (200_000 - 64) / 4);
        assert_eq!(chunk_size(None, Some(10), 200_000, 64), 50_000);
        assert_eq!(chunk_size(None, Some(1_000_000), 200_000, 64), 10);
        assert_eq!(chunk_size(Some(1), Some(10), 20_000, 0), 1);
    }
}
