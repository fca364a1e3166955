//! [`Connection`] (duplex), [`Sender`] and [`Receiver`] (simplex), and the one
//! framing core they share: [`Reader`] (buffered, incremental receive on
//! [`frame::Decoder`]) and [`Writer`] (one write per frame, or per group of
//! small frames in a batch).
//!
//! Receive path: a read fills a small internal buffer (so one syscall can bring
//! the header, a small payload and the next few messages); the payload of a
//! large frame is read straight into the caller's `Vec` (its spare capacity),
//! with the internal buffer as the second iovec to catch the next header, so
//! large payloads are never copied twice. The caller's `Vec` grows only as bytes
//! arrive.

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

#[cfg(feature = "serde")]
use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{self, Decoder, Frame, Header, DEFAULT_MAX_MESSAGE_SIZE, MAX_FDS};
use crate::{sys, wait, Error, Result};
use crate::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// Internal read-ahead buffer size.
const READ_BUF: usize = 8 << 10;
/// Scratch buffers above this capacity are released after use.
const SCRATCH_KEEP: usize = 1 << 20;
/// Payloads up to this size are copied behind their header and written from
/// one buffer: a one-iovec `pwritev2` or a plain `send` costs the kernel
/// less than a two-iovec write (no iovec array to import), which is more
/// than the copy of a small payload.
const COPY_MAX: usize = 2048;
/// Most bytes of whole frames a blocking batched send gathers into one write.
const BATCH_CHUNK: usize = 64 << 10;
/// Most bytes of whole frames a bounded batched send puts into one write:
/// `PIPE_BUF`. A non-blocking write of at most this much is taken whole or
/// not at all by a pipe and by a Unix stream socket (whose writes are cut
/// only between buffers of about 32 KiB), so a batch that runs out of room
/// or time mostly stops between frames, and takes as many as fit. A frame
/// that is cut anyway (a large one, or TCP) is accepted, its tail kept as
/// for a single bounded send.
const BATCH_CHUNK_BOUNDED: usize = libc::PIPE_BUF;

/// Reads that never sleep (`preadv2(RWF_NOWAIT)`) a blocking receive makes
/// on an empty pipe before it blocks ([`COALESCE`] is for a busy one). A
/// reader that sleeps on an empty pipe costs the writer a wake-up (an IPI
/// when they run on different CPUs) and itself a context switch, several
/// times the cost of a small message: with
/// small messages a reader that drains the pipe in one read would otherwise
/// sleep between most of them. Between retries the reader yields the CPU
/// (`sched_yield`): a writer on the same CPU then runs and writes on without
/// a wake-up, and one on another CPU has its next message there by the next
/// retry. An idle writer costs the reader only these retries (a few
/// microseconds) before it blocks as before. Bounded receives (deadline,
/// `try_`, `O_NONBLOCK`) and reads inside a payload never spin.
const SPIN_READS: u32 = 8;

/// Shortest time between two reads of a busy pipe stream of small frames.
/// A reader as fast as its writer takes one frame per read, and the writer,
/// finding the pipe drained each time, pays for a fresh pipe buffer, a
/// wake-up check and the pipe lock the reader holds: about half again the
/// cost of a write into a pipe that already holds data. So when the last
/// read found data waiting (the stream is busy), the next one waits until
/// this long after it, and takes every frame that arrived meanwhile. A
/// reader that finds the pipe empty is not busy (a request-reply exchange
/// normally is not), and a stream delays a frame by at most this much.
const COALESCE: Duration = Duration::from_micros(2);

/// Largest payload after which a read between frames spins: past it the
/// wake-up is a small part of a frame's cost, and a reader that yields the
/// CPU (see `SPIN_READS`) slows a bulk stream down.
const SPIN_FRAME_MAX: usize = READ_BUF;

fn deadline_after(d: Duration) -> Option<Instant> {
    // A timeout too large to represent waits without a deadline.
    Instant::now().checked_add(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RxState {
    Open,
    /// The peer closed its end; what is buffered is still delivered.
    Eof,
    /// Framing broken (bad header, EOF mid-frame, failed read mid-frame).
    Poisoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Bytes,
    Fds,
}

/// Most batches of descriptors (one per read) a [`Reader`] holds for frames it
/// has not finished. A read brings at most one batch (the kernel ends a read
/// after the message carrying descriptors), and a new read happens only once
/// every byte read before went to the decoder, so a well-formed stream has at
/// most the current frame's batch plus the one arriving: more is a peer
/// filling our fd table, and poisons the connection.
const MAX_PENDING_BATCHES: usize = 2;

/// Descriptors that arrived by `SCM_RIGHTS`, with the stream offset just past
/// the read that brought them: they belong to the frame holding the byte
/// before that offset (the kernel ends a read after the message carrying them).
struct Arrived {
    pos: u64,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

/// The receive half of the framing core, shared by `Connection` and `Receiver`.
pub(crate) struct Reader {
    /// Our fd's number, for the `wait` bitmap.
    raw: RawFd,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    dec: Decoder,
    state: RxState,
    socket: bool,
    cmsg: Option<sys::CmsgBuf>,
    /// Stream offsets: bytes read from the fd, and bytes handed to the decoder.
    received: u64,
    consumed: u64,
    frame_start: u64,
    fds: VecDeque<Arrived>,
    /// A partly received payload set aside when a deadline passed mid-frame.
    parked: Vec<u8>,
    parked_active: bool,
    /// Whether our fd is marked in the `wait` bitmap.
    marked: bool,
    /// Whether the fd is `O_NONBLOCK` (an async handle's): a bounded read
    /// then tries the read first and polls only when it would block.
    nonblocking: bool,
    /// Whether the last frame received was small (at most `SPIN_FRAME_MAX`
    /// payload bytes): only then does a read between frames spin.
    last_small: bool,
    /// Set once the fd refused a `RWF_NOWAIT` read (an old kernel's pipe, or
    /// an fd of another kind): its reads never spin then.
    nowait_refused: bool,
    /// Whether the last spinning read found data at its first try (see
    /// [`COALESCE`]), and when it returned.
    busy: bool,
    last_read: Instant,
    /// Receive buffer of the serde API.
    #[cfg(feature = "serde")]
    scratch: Vec<u8>,
}

impl Reader {
    pub(crate) fn new(raw: RawFd, socket: bool) -> Reader {
        Reader {
            raw,
            buf: vec![0u8; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            dec: Decoder::new(DEFAULT_MAX_MESSAGE_SIZE),
            state: RxState::Open,
            socket,
            cmsg: socket.then(sys::CmsgBuf::new),
            received: 0,
            consumed: 0,
            frame_start: 0,
            fds: VecDeque::new(),
            parked: Vec::new(),
            parked_active: false,
            marked: false,
            nonblocking: false,
            last_small: true,
            nowait_refused: false,
            busy: false,
            last_read: Instant::now(),
            #[cfg(feature = "serde")]
            scratch: Vec::new(),
        }
    }

    /// Says whether the fd is `O_NONBLOCK` (see the field).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.dec.set_max(max);
    }

    fn poison(&mut self) {
        self.state = RxState::Poisoned;
        // Nothing will be received any more: close what a peer sent at once.
        self.fds.clear();
    }

    /// Closes the descriptors that arrived with bytes of the current bytes
    /// frame (a bytes frame announces none), as soon as its header is known,
    /// so a long frame cannot pile them up. Call with `consumed` in step with
    /// the decoder.
    fn sweep_fds(&mut self) {
        if self.fds.is_empty() {
            // Always so on a pipe: nothing to look at per frame.
            return;
        }
        if let Some(Frame::Bytes(_)) = self.dec.frame() {
            let end = self.consumed + self.dec.remaining() as u64;
            while self.fds.front().is_some_and(|a| a.pos <= end) {
                // Dropping the batch closes its descriptors.
                self.fds.pop_front();
            }
        }
    }

    /// Keeps the `wait` bitmap in step: marked while a receive would not need
    /// the fd to become readable.
    fn update_mark(&mut self) {
        let want = self.start < self.end || self.state == RxState::Poisoned;
        if want != self.marked {
            wait::set_buffered(self.raw, want);
            self.marked = want;
        }
    }

    fn unmark(&mut self) {
        if self.marked {
            wait::set_buffered(self.raw, false);
            self.marked = false;
        }
    }

    /// One read from the fd: into `out`'s spare capacity (at most `direct`
    /// bytes) and then into the internal buffer from `end`, or, with
    /// `out == None`, into the internal buffer only. Waits for readability
    /// first when there is a deadline (on an `O_NONBLOCK` fd or a socket it
    /// reads first and waits only if the read would block, so a `try_` receive
    /// that finds a message costs one syscall). Returns (total, bytes placed in `out`).
    fn read_some(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
        mut out: Option<(&mut Vec<u8>, usize)>,
        use_buf: bool,
    ) -> Result<(usize, usize)> {
        // A bounded read that can read without blocking (an `O_NONBLOCK` fd, or a
        // socket with `MSG_DONTWAIT`) reads first and polls only when nothing is
        // there, so a `try_` receive that finds a message costs one syscall; a
        // blocking pipe polls first.
        let read_first = self.nonblocking || self.socket;
        // A blocking read of a blocking pipe between frames (the buffer
        // drained, no payload pending) first tries a few reads that never
        // sleep (see `SPIN_READS`); one inside a large payload blocks at once.
        let mut spin = if deadline.is_none()
            && !read_first
            && out.is_none()
            && self.last_small
            && !self.nowait_refused
        {
            SPIN_READS
        } else {
            0
        };
        let spinning = spin > 0;
        if spinning && self.busy {
            // A busy stream: let frames gather (see `COALESCE`). No system
            // call, so nothing here slows the writer down.
            while self.last_read.elapsed() < COALESCE {
                std::hint::spin_loop();
            }
        }
        let mut first = true;
        loop {
            if let Some(d) = deadline {
                if !read_first && !sys::poll_one(fd, sys::POLLIN, Some(d))? {
                    return Err(Error::Timeout);
                }
            }
            let buf: &mut [u8] = if use_buf {
                &mut self.buf[self.end..]
            } else {
                &mut []
            };
            let res = sys::read2(
                fd,
                self.socket,
                out.as_mut().map(|(v, n)| (&mut **v, *n)),
                buf,
                self.cmsg.as_mut(),
                (deadline.is_some() && self.socket) || spin > 0,
            );
            match res {
                Ok(r) => {
                    self.received += r.n as u64;
                    self.end += r.n - r.direct;
                    if !r.fds.is_empty() || r.truncated {
                        self.fds.push_back(Arrived {
                            pos: self.received,
                            fds: r.fds,
                            truncated: r.truncated,
                        });
                        if self.fds.len() > MAX_PENDING_BATCHES {
                            // Not a stream this crate writes; closes them all.
                            self.poison();
                            return Err(Error::Poisoned);
                        }
                    }
                    if r.n == 0 && self.state == RxState::Open {
                        self.state = RxState::Eof;
                    }
                    if spinning {
                        self.busy = first && r.n > 0;
                        self.last_read = Instant::now();
                    }
                    return Ok((r.n, r.direct));
                }
                Err(e) if spin > 0 && e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Empty pipe: try again shortly, then block.
                    first = false;
                    spin -= 1;
                    std::thread::yield_now();
                }
                Err(e) if spin > 0 && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    // This fd refuses RWF_NOWAIT (nothing was read): plain
                    // blocking reads from now on.
                    self.nowait_refused = true;
                    spin = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // An O_NONBLOCK fd: wait for it like a blocking one.
                    match deadline {
                        None => {
                            sys::poll_one(fd, sys::POLLIN, None)?;
                        }
                        Some(d) if read_first => {
                            if !sys::poll_one(fd, sys::POLLIN, Some(d))? {
                                return Err(Error::Timeout);
                            }
                        }
                        Some(_) => {}
                    }
                }
                Err(e) => return Err(Error::from_io(e)),
            }
        }
    }

    /// Makes the current frame's header complete, reading as needed.
    fn ensure_header(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<Frame> {
        loop {
            if let Some(f) = self.dec.frame() {
                return Ok(f);
            }
            if self.state == RxState::Poisoned {
                return Err(Error::Poisoned);
            }
            if self.start < self.end {
                if self.dec.is_idle() {
                    self.frame_start = self.consumed;
                }
                match self.dec.feed_header(&self.buf[self.start..self.end]) {
                    Ok(n) => {
                        self.start += n;
                        self.consumed += n as u64;
                        self.sweep_fds();
                    }
                    Err(e) => {
                        self.poison();
                        return Err(e.into());
                    }
                }
                continue;
            }
            if self.state == RxState::Eof {
                if !self.dec.is_idle() {
                    self.poison();
                }
                return Err(Error::Disconnected);
            }
            // Buffer drained: refill from the start.
            self.start = 0;
            self.end = 0;
            self.read_some(fd, deadline, None, true)?;
        }
    }

    /// Reads the rest of the current bytes frame's payload into `out`.
    fn read_payload(
        &mut self,
        fd: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        loop {
            let rem = self.dec.remaining();
            if rem == 0 {
                return Ok(());
            }
            if self.start < self.end {
                let n = self.dec.feed_payload(&self.buf[self.start..self.end], out);
                self.start += n;
                self.consumed += n as u64;
                continue;
            }
            if self.state == RxState::Eof {
                // The peer went away in the middle of this frame.
                self.poison();
                return Err(Error::Disconnected);
            }
            self.start = 0;
            self.end = 0;
            if out.capacity() == out.len() {
                frame::grow(out, 1, rem);
            }
            let want = rem.min(out.capacity() - out.len());
            // Catch the next frame's first bytes only when this read can finish
            // the current payload; otherwise they would be its bytes, copied twice.
            let use_buf = want == rem;
            let (_, direct) = self.read_some(fd, deadline, Some((out, want)), use_buf)?;
            self.dec.advance(direct);
            self.consumed += direct as u64;
            self.sweep_fds();
        }
    }

    /// Takes the descriptors that arrived up to the end of the frame just
    /// finished; returns those belonging to it when `take`, closes the rest.
    /// Also returns how many batches (reads) brought them: an fd frame's
    /// descriptors come with the one message that carries its header.
    fn settle_fds(&mut self, take: bool) -> (Vec<OwnedFd>, bool, usize) {
        let (start, end) = (self.frame_start, self.consumed);
        let mut got = Vec::new();
        let mut truncated = false;
        let mut batches = 0;
        while self.fds.front().is_some_and(|a| a.pos <= end) {
            let Some(a) = self.fds.pop_front() else { break };
            if take && a.pos > start {
                got.extend(a.fds);
                truncated |= a.truncated;
                batches += 1;
            }
            // Anything else drops here: unexpected descriptors are closed.
        }
        (got, truncated, batches)
    }

    /// The one receive path: the next frame, of the kind wanted.
    fn recv_frame(
        &mut self,
        fd: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
        want: Want,
    ) -> Result<(Frame, Vec<OwnedFd>)> {
        let res = self.recv_frame_inner(fd, out, deadline, want);
        self.update_mark();
        res
    }

    fn recv_frame_inner(
        &mut self,
        fd: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
        want: Want,
    ) -> Result<(Frame, Vec<OwnedFd>)> {
        if self.state == RxState::Poisoned {
            return Err(Error::Poisoned);
        }
        let frame = self.ensure_header(fd, deadline)?;
        match (frame, want) {
            (Frame::Fds(_), _) if !self.socket => {
                // Only sockets carry descriptors: nobody sent this header.
                self.poison();
                Err(Error::Poisoned)
            }
            (Frame::Fds(_), Want::Bytes) => Err(Error::UnexpectedFrame {
                found: "file descriptors",
            }),
            (Frame::Bytes(_), Want::Fds) => Err(Error::UnexpectedFrame { found: "bytes" }),
            (Frame::Bytes(_), Want::Bytes) => {
                if self.parked_active {
                    mem::swap(out, &mut self.parked);
                    self.parked.clear();
                    self.parked_active = false;
                } else {
                    out.clear();
                }
                match self.read_payload(fd, out, deadline) {
                    Ok(()) => {}
                    Err(Error::Timeout) => {
                        mem::swap(out, &mut self.parked);
                        self.parked_active = true;
                        out.clear();
                        return Err(Error::Timeout);
                    }
                    Err(e) => {
                        self.poison();
                        return Err(e);
                    }
                }
                self.dec.finish();
                if !self.fds.is_empty() {
                    self.settle_fds(false);
                }
                self.last_small = out.len() <= SPIN_FRAME_MAX;
                Ok((frame, Vec::new()))
            }
            (Frame::Fds(count), Want::Fds) => {
                self.dec.finish();
                let (fds, truncated, batches) = self.settle_fds(true);
                if batches > 1 || fds.len() > count {
                    // More than the frame announced (at most `MAX_FDS`): not a
                    // stream this crate writes. `fds` drops here, closing them.
                    self.poison();
                    return Err(Error::Poisoned);
                }
                if truncated || fds.len() != count {
                    // `fds` drops here: none leak.
                    return Err(Error::Io(std::io::Error::other(format!(
                        "expected {count} file descriptors, received {} (MSG_CTRUNC: {truncated})",
                        fds.len()
                    ))));
                }
                Ok((frame, fds))
            }
        }
    }

    pub(crate) fn recv_bytes_into(
        &mut self,
        fd: BorrowedFd<'_>,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        self.recv_frame(fd, out, deadline, Want::Bytes)?;
        Ok(out.len())
    }

    #[cfg(feature = "serde")]
    pub(crate) fn recv<T: DeserializeOwned>(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<T> {
        let mut buf = mem::take(&mut self.scratch);
        let res = self.recv_frame(fd, &mut buf, deadline, Want::Bytes);
        let value = res.and_then(|_| match postcard::take_from_bytes::<T>(&buf) {
            Ok((v, [])) => Ok(v),
            Ok(_) => Err(Error::decode(postcard::Error::DeserializeBadEncoding)),
            Err(e) => Err(Error::decode(e)),
        });
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        value
    }

    pub(crate) fn recv_fds(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<Vec<OwnedFd>> {
        let mut unused = Vec::new();
        let (_, fds) = self.recv_frame(fd, &mut unused, deadline, Want::Fds)?;
        Ok(fds)
    }

    pub(crate) fn poll(&mut self, fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
        if self.state != RxState::Open || self.start < self.end {
            return Ok(true);
        }
        let deadline = timeout.and_then(deadline_after);
        Ok(sys::poll_one(fd, sys::POLLIN, deadline)?)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.unmark();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    Open,
    Disconnected,
    Poisoned,
}

/// The send half of the framing core, shared by `Connection` and `Sender`.
pub(crate) struct Writer {
    kind: sys::FdKind,
    state: TxState,
    max: usize,
    /// Encoding buffer of `send` (a header's room, then postcard's bytes),
    /// the frame buffer of small `send_bytes`, and the gather buffer of
    /// batched sends.
    scratch: Vec<u8>,
    /// End offsets of the frames in a batch's gather buffer.
    ends: Vec<usize>,
    /// The unwritten tail of the one frame a bounded send accepted but could
    /// not finish (bytes `tail_start..` are still to go). Every send flushes
    /// it first, so frames stay in order and whole.
    tail: Vec<u8>,
    tail_start: usize,
    /// Whether `SIGPIPE` is ignored, so a small pipe write may be a plain
    /// `write` (see [`sys::SigpipeWatch`]).
    sigpipe: sys::SigpipeWatch,
}

/// How a frame write ended without an error.
pub(crate) enum Wrote {
    /// The whole frame is in the kernel.
    Whole,
    /// Nothing of it was written: the deadline passed (or the pending tail of
    /// an earlier frame could not drain first).
    Nothing,
}

impl Writer {
    pub(crate) fn new(kind: sys::FdKind) -> Writer {
        Writer {
            kind,
            state: TxState::Open,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            scratch: Vec::new(),
            ends: Vec::new(),
            tail: Vec::new(),
            tail_start: 0,
            sigpipe: sys::SigpipeWatch::default(),
        }
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes of an accepted frame not yet handed to the kernel.
    pub(crate) fn pending(&self) -> usize {
        self.tail.len() - self.tail_start
    }

    fn check(&self, len: usize) -> Result<()> {
        match self.state {
            TxState::Open => {}
            TxState::Disconnected => return Err(Error::Disconnected),
            TxState::Poisoned => return Err(Error::Poisoned),
        }
        if len > self.max {
            return Err(Error::TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        Ok(())
    }

    /// Writes the pending tail, if any, by `deadline`. `Err(Timeout)` when
    /// some of it is still pending then (what went is dropped from it).
    pub(crate) fn flush(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<()> {
        if self.pending() == 0 {
            return self.check(0);
        }
        self.check(0)?;
        let res = sys::write_all2(
            fd,
            self.kind,
            &self.tail[self.tail_start..],
            &[],
            &[],
            deadline,
        );
        match res {
            Ok(()) => {
                self.clear_tail();
                Ok(())
            }
            Err((sys::WriteFail::Timeout, done)) => {
                self.tail_start += done;
                Err(Error::Timeout)
            }
            Err((sys::WriteFail::Io(e), _)) => {
                self.clear_tail();
                Err(self.broken(fd, e))
            }
        }
    }

    fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_start = 0;
        if self.tail.capacity() > SCRATCH_KEEP {
            self.tail = Vec::new();
        }
    }

    /// Keeps the unwritten part (`done..`) of the frame `a` then `b`.
    fn keep_tail(&mut self, a: &[u8], b: &[u8], done: usize) {
        self.tail.clear();
        self.tail_start = 0;
        if done < a.len() {
            self.tail.extend_from_slice(&a[done..]);
            self.tail.extend_from_slice(b);
        } else {
            self.tail.extend_from_slice(&b[done - a.len()..]);
        }
    }

    /// The one send path of a single frame: the pending tail first, then the
    /// frame. A deadline that passes before the frame's first byte leaves it
    /// unsent (`Nothing`); one that passes inside it keeps the rest as the
    /// pending tail, and the frame counts as sent.
    fn write(
        &mut self,
        fd: BorrowedFd<'_>,
        hdr: &[u8],
        payload: &[u8],
        fds: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<Wrote> {
        match self.flush(fd, deadline) {
            Ok(()) => {}
            Err(Error::Timeout) => return Ok(Wrote::Nothing),
            Err(e) => return Err(e),
        }
        match sys::write_all2(fd, self.kind, hdr, payload, fds, deadline) {
            Ok(()) => Ok(Wrote::Whole),
            Err((sys::WriteFail::Timeout, 0)) => Ok(Wrote::Nothing),
            Err((sys::WriteFail::Timeout, done)) => {
                self.keep_tail(hdr, payload, done);
                Ok(Wrote::Whole)
            }
            Err((sys::WriteFail::Io(e), done)) => Err(self.io_fail(fd, e, done > 0)),
        }
    }

    /// [`write`](Self::write) of one small frame `buf` (header of `hdr_len`
    /// bytes, then payload) from one buffer. A blocking send on a pipe with
    /// nothing pending makes one `pwritev2(RWF_NOSIGNAL)` and nothing else
    /// (small messages are bound by the writer's per-frame cost); any other
    /// case, a partial write, or a failed write goes the general way.
    #[inline]
    fn write_small(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &[u8],
        hdr_len: usize,
        deadline: Option<Instant>,
    ) -> Result<Wrote> {
        if deadline.is_none() && self.kind == sys::FdKind::Pipe && self.pending() == 0 {
            match sys::write_pipe_fast(fd, buf, &mut self.sigpipe) {
                Some(n) if n == buf.len() => return Ok(Wrote::Whole),
                Some(n) => {
                    // Cut (not for a frame within `PIPE_BUF`): the rest goes
                    // the general way, which reports a cut frame's failure.
                    if n >= hdr_len {
                        ipc_failpoints::failpoint!("pipe.frame.header_written");
                    }
                    return match sys::write_all2(fd, self.kind, &buf[n..], &[], &[], None) {
                        Ok(()) => Ok(Wrote::Whole),
                        Err((sys::WriteFail::Io(e), _)) => Err(self.io_fail(fd, e, true)),
                        // Not without a deadline; kept as a bounded send would.
                        Err((sys::WriteFail::Timeout, done)) => {
                            self.keep_tail(&buf[n..], &[], done);
                            Ok(Wrote::Whole)
                        }
                    };
                }
                None => {}
            }
        }
        self.write(fd, buf, &[], &[], deadline)
    }

    /// The error of a failed write; `cut` says it stopped inside a frame,
    /// which ends this direction of the stream.
    fn io_fail(&mut self, fd: BorrowedFd<'_>, e: std::io::Error, cut: bool) -> Error {
        if cut {
            self.broken(fd, e)
        } else {
            Error::from_io(e)
        }
    }

    /// A write failed inside a frame: the stream cannot continue.
    fn broken(&mut self, fd: BorrowedFd<'_>, e: std::io::Error) -> Error {
        let err = Error::from_io(e);
        if matches!(err, Error::Disconnected) {
            self.state = TxState::Disconnected;
            return err;
        }
        self.state = TxState::Poisoned;
        if self.kind.is_socket() {
            // Let the peer see end of stream after the whole frames instead
            // of waiting for a rest that never comes. Best effort: the error
            // reported is the failed write's.
            let _ = sys::shutdown_write(fd);
        }
        err
    }

    /// Sends the messages of `msgs` in order, as one frame each, gathering
    /// small frames into few writes. Returns how many were accepted: all of
    /// them, or (bounded, the deadline passed) the first `k >= 1` of them,
    /// the last of which may be partly written and kept as the pending tail;
    /// none is `Err(Timeout)` with nothing written.
    pub(crate) fn send_bytes_many<B: AsRef<[u8]>>(
        &mut self,
        fd: BorrowedFd<'_>,
        msgs: &[B],
        deadline: Option<Instant>,
    ) -> Result<usize> {
        self.check(0)?;
        for m in msgs {
            // Refused before anything is sent.
            self.check(m.as_ref().len())?;
        }
        self.flush(fd, deadline)?;
        let chunk_max = if deadline.is_some() {
            BATCH_CHUNK_BOUNDED
        } else {
            BATCH_CHUNK
        };
        let mut buf = mem::take(&mut self.scratch);
        let mut ends = mem::take(&mut self.ends);
        let mut sent = 0;
        let mut next = 0;
        let res = loop {
            if next == msgs.len() {
                break Ok(());
            }
            let first = msgs[next].as_ref();
            if first.len() > COPY_MAX {
                // A large payload goes out on its own, without a copy.
                let hdr = Header::bytes(first.len());
                match self.write(fd, hdr.as_slice(), first, &[], deadline) {
                    Ok(Wrote::Whole) if self.pending() == 0 => {
                        sent += 1;
                        next += 1;
                        continue;
                    }
                    Ok(Wrote::Whole) => {
                        sent += 1;
                        break Err(Error::Timeout);
                    }
                    Ok(Wrote::Nothing) => break Err(Error::Timeout),
                    Err(e) => break Err(e),
                }
            }
            // Whole small frames, as many as fit in one write.
            buf.clear();
            ends.clear();
            while let Some(m) = msgs.get(next).map(AsRef::as_ref) {
                let hdr = Header::bytes(m.len());
                let len = hdr.as_slice().len() + m.len();
                if m.len() > COPY_MAX || (!ends.is_empty() && buf.len() + len > chunk_max) {
                    break;
                }
                buf.extend_from_slice(hdr.as_slice());
                buf.extend_from_slice(m);
                ends.push(buf.len());
                next += 1;
            }
            match sys::write_all2(fd, self.kind, &buf, &[], &[], deadline) {
                Ok(()) => sent += ends.len(),
                Err((fail, done)) => {
                    let whole = ends.iter().take_while(|&&e| e <= done).count();
                    let cut =
                        whole < ends.len() && done > whole.checked_sub(1).map_or(0, |i| ends[i]);
                    sent += whole;
                    match fail {
                        sys::WriteFail::Timeout => {
                            if cut {
                                // The cut frame is accepted; its rest waits.
                                self.tail.clear();
                                self.tail_start = 0;
                                self.tail.extend_from_slice(&buf[done..ends[whole]]);
                                sent += 1;
                            }
                            break Err(Error::Timeout);
                        }
                        sys::WriteFail::Io(e) => break Err(self.io_fail(fd, e, cut)),
                    }
                }
            }
        };
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        self.ends = ends;
        match res {
            Ok(()) => Ok(sent),
            // Stopped by the deadline: report what was accepted.
            Err(Error::Timeout) if sent > 0 => Ok(sent),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn send_bytes(
        &mut self,
        fd: BorrowedFd<'_>,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Wrote> {
        self.check(payload.len())?;
        let hdr = Header::bytes(payload.len());
        if payload.len() <= COPY_MAX {
            let mut buf = mem::take(&mut self.scratch);
            buf.clear();
            buf.extend_from_slice(hdr.as_slice());
            buf.extend_from_slice(payload);
            let res = self.write_small(fd, &buf, hdr.as_slice().len(), deadline);
            self.scratch = buf;
            return res;
        }
        self.write(fd, hdr.as_slice(), payload, &[], deadline)
    }

    #[cfg(feature = "serde")]
    pub(crate) fn send<T: Serialize + ?Sized>(
        &mut self,
        fd: BorrowedFd<'_>,
        value: &T,
        deadline: Option<Instant>,
    ) -> Result<Wrote> {
        const SHORT: usize = 4;
        self.check(0)?;
        let mut buf = mem::take(&mut self.scratch);
        buf.clear();
        // Room for a short header, filled in once the length is known, so
        // header and payload go out from one buffer without another copy.
        buf.extend_from_slice(&[0; SHORT]);
        let mut buf = match postcard::to_extend(value, buf) {
            Ok(b) => b,
            Err(e) => return Err(Error::encode(e)),
        };
        let len = buf.len() - SHORT;
        let hdr = Header::bytes(len);
        let res = match self.check(len) {
            Err(e) => Err(e),
            Ok(()) if hdr.as_slice().len() == SHORT => {
                buf[..SHORT].copy_from_slice(hdr.as_slice());
                self.write(fd, &buf, &[], &[], deadline)
            }
            // The long form (4 GiB and more): its own header, then the bytes.
            Ok(()) => self.write(fd, hdr.as_slice(), &buf[SHORT..], &[], deadline),
        };
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        res
    }

    pub(crate) fn send_fds(
        &mut self,
        fd: BorrowedFd<'_>,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
    ) -> Result<Wrote> {
        if fds.is_empty() || fds.len() > MAX_FDS {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "send_fds takes 1 to {MAX_FDS} descriptors, got {}",
                    fds.len()
                ),
            )));
        }
        if !self.kind.is_socket() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "file descriptors can only be passed over a Unix socket",
            )));
        }
        self.check(0)?;
        let mut raw = [0 as RawFd; MAX_FDS];
        for (r, f) in raw.iter_mut().zip(fds) {
            *r = f.as_raw_fd();
        }
        let hdr = Header::fds(fds.len());
        self.write(fd, hdr.as_slice(), &[], &raw[..fds.len()], deadline)
    }

    /// What a handle does with the pending tail when it is dropped or turned
    /// into its fd: one non-blocking attempt to write it.
    pub(crate) fn flush_on_drop(&mut self, fd: BorrowedFd<'_>) {
        if self.pending() > 0 {
            let _ = self.flush(fd, Some(Instant::now()));
        }
    }
}

/// A blocking send's result: the frame went whole (no deadline, no
/// `Nothing`).
fn blocking(r: Result<Wrote>) -> Result<()> {
    r.map(|_| ())
}

/// A `try_` send's result.
fn try_sent(r: Result<Wrote>) -> Result<(), TrySendError> {
    match r {
        Ok(Wrote::Whole) => Ok(()),
        Ok(Wrote::Nothing) => Err(TrySendError::Full),
        Err(e) => Err(TrySendError::from_internal(e)),
    }
}

/// A `_timeout` send's result.
fn timeout_sent(r: Result<Wrote>) -> Result<(), SendTimeoutError> {
    match r {
        Ok(Wrote::Whole) => Ok(()),
        Ok(Wrote::Nothing) => Err(SendTimeoutError::Timeout),
        Err(e) => Err(SendTimeoutError::from_internal(e)),
    }
}

/// The fd of a handle whose fd is taken only when it is consumed (turned
/// into its fd), so it is always there while the handle is usable.
fn fd_of(fd: &Option<OwnedFd>) -> BorrowedFd<'_> {
    match fd {
        Some(fd) => fd.as_fd(),
        None => unreachable!("the fd is taken only by a conversion that consumes the handle"),
    }
}

fn fmt_conn(name: &str, fd: RawFd, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct(name)
        .field("fd", &fd)
        .finish_non_exhaustive()
}

// ------------------------------------------------------------------ methods

/// Receive methods, generated once for `Connection` and `Receiver` so both
/// delegate to the same [`Reader`] with identical docs.
macro_rules! recv_methods {
    () => {
        /// Receives one message and decodes it with `postcard` as a `T`.
        /// Blocks until a whole message has arrived.
        ///
        /// # Errors
        /// [`Error::Decode`] if the bytes are not a `T` (the message is consumed
        /// and the connection stays usable); [`Error::Disconnected`] at end of
        /// stream once every complete message has been delivered;
        /// [`Error::TooLarge`] or [`Error::Poisoned`] for a bad frame;
        /// [`Error::UnexpectedFrame`] if the peer sent file descriptors next.
        ///
        /// # Peer death
        /// Messages the peer finished sending are still delivered; then
        /// `Disconnected`. If it died in the middle of a message, that call
        /// returns `Disconnected` and the connection is poisoned.
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
            self.rx.recv(fd_of(&self.fd), None)
        }

        /// [`recv`](Self::recv) waiting at most `timeout` (monotonic clock).
        ///
        /// # Errors
        /// [`RecvTimeoutError::Timeout`] if no whole message arrived in time
        /// (a message that had partly arrived is kept, and the next receive
        /// continues it); [`RecvTimeoutError::Disconnected`] at end of
        /// stream; [`RecvTimeoutError::Failed`] with the other errors of
        /// `recv`.
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn recv_timeout<T: DeserializeOwned>(
            &mut self,
            timeout: Duration,
        ) -> Result<T, RecvTimeoutError> {
            self.rx
                .recv(fd_of(&self.fd), deadline_after(timeout))
                .map_err(RecvTimeoutError::from_internal)
        }

        /// [`recv`](Self::recv) without blocking.
        ///
        /// # Errors
        /// [`TryRecvError::Empty`] when no complete message is waiting;
        /// [`TryRecvError::Disconnected`] at end of stream;
        /// [`TryRecvError::Failed`] with the other errors of `recv`.
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<T, TryRecvError> {
            self.rx
                .recv(fd_of(&self.fd), Some(Instant::now()))
                .map_err(TryRecvError::from_internal)
        }

        /// Receives one message's bytes into a new `Vec`. Blocks until a
        /// whole message has arrived.
        ///
        /// # Errors
        /// [`Error::Disconnected`] at end of stream once every complete
        /// message has been delivered; [`Error::TooLarge`] or
        /// [`Error::Poisoned`] for a bad frame; [`Error::UnexpectedFrame`]
        /// if the peer sent file descriptors next.
        ///
        /// # Peer death
        /// Messages the peer finished sending are still delivered; then
        /// `Disconnected`. If it died in the middle of a message, that call
        /// returns `Disconnected` and the connection is poisoned.
        pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
            let mut v = Vec::new();
            self.rx.recv_bytes_into(fd_of(&self.fd), &mut v, None)?;
            Ok(v)
        }

        /// [`recv_bytes`](Self::recv_bytes) waiting at most `timeout`.
        ///
        /// # Errors
        /// [`RecvTimeoutError::Timeout`] if no whole message arrived in time
        /// (a message that had partly arrived is kept, and the next receive
        /// continues it); [`RecvTimeoutError::Disconnected`] at end of
        /// stream; [`RecvTimeoutError::Failed`] with the other errors of
        /// `recv_bytes`.
        ///
        /// # Peer death
        /// As [`recv_bytes`](Self::recv_bytes).
        pub fn recv_bytes_timeout(
            &mut self,
            timeout: Duration,
        ) -> Result<Vec<u8>, RecvTimeoutError> {
            let mut v = Vec::new();
            self.rx
                .recv_bytes_into(fd_of(&self.fd), &mut v, deadline_after(timeout))
                .map_err(RecvTimeoutError::from_internal)?;
            Ok(v)
        }

        /// [`recv_bytes`](Self::recv_bytes) without blocking.
        ///
        /// # Errors
        /// [`TryRecvError::Empty`] when no complete message is waiting;
        /// [`TryRecvError::Disconnected`] at end of stream;
        /// [`TryRecvError::Failed`] with the other errors of `recv_bytes`.
        ///
        /// # Peer death
        /// As [`recv_bytes`](Self::recv_bytes).
        pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>, TryRecvError> {
            let mut v = Vec::new();
            self.rx
                .recv_bytes_into(fd_of(&self.fd), &mut v, Some(Instant::now()))
                .map_err(TryRecvError::from_internal)?;
            Ok(v)
        }

        /// Receives one message's bytes into `buf`, replacing its contents, and
        /// returns the length. `buf`'s capacity is reused, so a steady stream
        /// of messages allocates nothing; it grows only as bytes arrive.
        ///
        /// # Errors
        /// As [`recv_bytes`](Self::recv_bytes).
        ///
        /// # Peer death
        /// As [`recv_bytes`](Self::recv_bytes).
        pub fn recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
            self.rx.recv_bytes_into(fd_of(&self.fd), buf, None)
        }

        /// [`recv_bytes_into`](Self::recv_bytes_into) waiting at most `timeout`.
        ///
        /// # Errors
        /// As [`recv_bytes_timeout`](Self::recv_bytes_timeout); on an error
        /// `buf` is empty (a partly received message is kept for the next
        /// receive).
        ///
        /// # Peer death
        /// As [`recv_bytes`](Self::recv_bytes).
        pub fn recv_bytes_into_timeout(
            &mut self,
            buf: &mut Vec<u8>,
            timeout: Duration,
        ) -> Result<usize, RecvTimeoutError> {
            self.rx
                .recv_bytes_into(fd_of(&self.fd), buf, deadline_after(timeout))
                .map_err(RecvTimeoutError::from_internal)
        }

        /// [`recv_bytes_into`](Self::recv_bytes_into) without blocking.
        ///
        /// # Errors
        /// As [`try_recv_bytes`](Self::try_recv_bytes).
        ///
        /// # Peer death
        /// As [`recv_bytes`](Self::recv_bytes).
        pub fn try_recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
            self.rx
                .recv_bytes_into(fd_of(&self.fd), buf, Some(Instant::now()))
                .map_err(TryRecvError::from_internal)
        }

        /// Whether a receive would find something without waiting for the fd:
        /// data (possibly part of a message), end of stream, or a poisoned
        /// state. Waits up to `timeout` for that; `None` waits without limit,
        /// `Some(Duration::ZERO)` only looks (Python's `poll()`).
        ///
        /// # Errors
        /// [`Error::Io`] if `ppoll` fails.
        pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
            self.rx.poll(fd_of(&self.fd), timeout)
        }
    };
}

/// Send methods, generated once for `Connection` and `Sender` so both
/// delegate to the same [`Writer`] with identical docs.
///
/// Contract of every send: a blocking send returns once the whole frame is
/// in the kernel's buffer. A bounded send (`try_` or `_timeout`) either
/// accepts the message (`Ok`) or sends none of it (`Full`/`Timeout`: the
/// caller still has its value and the stream is intact). An accepted frame
/// that could not be written whole in time keeps its unwritten tail in the
/// handle (at most one frame's), flushed before anything else is sent.
macro_rules! send_methods {
    () => {
        /// Encodes `value` with `postcard` and sends it as one message. The
        /// encoding buffer is reused between calls. Blocks while the peer's
        /// buffer is full.
        ///
        /// # Errors
        /// [`Error::Encode`] if `value` cannot be encoded (nothing sent);
        /// otherwise as [`send_bytes`](Self::send_bytes).
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            blocking(self.tx.send(fd_of(&self.fd), value, None))
        }

        /// [`send`](Self::send) waiting at most `timeout` for the peer to make
        /// room.
        ///
        /// # Errors
        /// `Failed(Error::Encode)` if `value` cannot be encoded; otherwise as
        /// [`send_bytes_timeout`](Self::send_bytes_timeout).
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn send_timeout<T: Serialize + ?Sized>(
            &mut self,
            value: &T,
            timeout: Duration,
        ) -> Result<(), SendTimeoutError> {
            timeout_sent(
                self.tx
                    .send(fd_of(&self.fd), value, deadline_after(timeout)),
            )
        }

        /// [`send`](Self::send) without blocking.
        ///
        /// # Errors
        /// `Failed(Error::Encode)` if `value` cannot be encoded; otherwise as
        /// [`try_send_bytes`](Self::try_send_bytes).
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        pub fn try_send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TrySendError> {
            try_sent(self.tx.send(fd_of(&self.fd), value, Some(Instant::now())))
        }

        /// Sends `bytes` as one message in one write, continued if the kernel
        /// takes part: up to 2 KiB copied behind the header, larger payloads
        /// uncopied in a vectored write. Blocks while the peer's buffer is
        /// full. The unwritten tail of an earlier bounded send goes first.
        ///
        /// # Errors
        /// [`Error::TooLarge`] if longer than `max_message_size` (nothing sent);
        /// [`Error::Disconnected`] if the peer's end is closed;
        /// [`Error::Poisoned`] after a write that failed half-way.
        ///
        /// # Peer death
        /// `Disconnected`, never `SIGPIPE`: sockets are written with
        /// `MSG_NOSIGNAL`; pipe writes use `RWF_NOSIGNAL` or block `SIGPIPE`
        /// in the calling thread for the write and consume the one a closed
        /// pipe raises, so this holds even in a host that never ignored
        /// `SIGPIPE`. While `SIGPIPE` is ignored (as Rust programs and
        /// CPython set it at startup) a small pipe message is a plain `write`,
        /// which then raises nothing; each sender reads the disposition again
        /// every 64 sends, so a program that restores `SIGPIPE`'s default
        /// action while a pipe sender is in use has it honoured by that
        /// sender within 64 sends (a send to a closed pipe in between would
        /// raise the `SIGPIPE` just asked for). A peer that is alive but never
        /// reads blocks this call; use
        /// [`send_bytes_timeout`](Self::send_bytes_timeout) to bound it.
        pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
            blocking(self.tx.send_bytes(fd_of(&self.fd), bytes, None))
        }

        /// [`send_bytes`](Self::send_bytes) waiting at most `timeout` (against
        /// the monotonic clock, EINTR retried) for the peer to make room.
        ///
        /// `Ok` means the message is accepted: it is in the kernel's buffer,
        /// or, if the time ran out in the middle of it, its unwritten tail is
        /// kept in this handle and goes out first at the next send of any
        /// form, [`flush`](Self::flush), or (best effort) drop.
        ///
        /// # Errors
        /// [`SendTimeoutError::Timeout`] if the peer made no room in time for
        /// the first byte (or for the tail of an earlier message): nothing of
        /// this message was written, the stream is intact, retry later.
        /// [`SendTimeoutError::Disconnected`] if the peer's end is closed;
        /// [`SendTimeoutError::Failed`] with the other errors of
        /// `send_bytes`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes); a peer that exits or is killed
        /// while this call waits makes it return `Disconnected` at once.
        pub fn send_bytes_timeout(
            &mut self,
            bytes: &[u8],
            timeout: Duration,
        ) -> Result<(), SendTimeoutError> {
            timeout_sent(
                self.tx
                    .send_bytes(fd_of(&self.fd), bytes, deadline_after(timeout)),
            )
        }

        /// [`send_bytes`](Self::send_bytes) without blocking: the message
        /// is accepted if the peer's buffer has room for its first byte now.
        /// Never poisons: what does not fit of an accepted message is kept
        /// as in [`send_bytes_timeout`](Self::send_bytes_timeout).
        ///
        /// # Errors
        /// [`TrySendError::Full`] when the buffer is full (nothing written,
        /// stream intact, retry later); [`TrySendError::Disconnected`] if
        /// the peer's end is closed; [`TrySendError::Failed`] with the other
        /// errors of `send_bytes`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        ///
        /// # Example
        /// ```
        /// use ipc_pipe::TrySendError;
        /// let (mut rx, mut tx) = ipc_pipe::simplex()?;
        /// let mut sent = 0;
        /// loop {
        ///     match tx.try_send_bytes(&[7; 1000]) {
        ///         Ok(()) => sent += 1,
        ///         Err(TrySendError::Full) => break, // nothing of it written
        ///         Err(e) => return Err(e.into()),
        ///     }
        /// }
        /// for _ in 0..sent {
        ///     assert_eq!(rx.recv_bytes()?, [7; 1000]);
        /// }
        /// # Ok::<(), ipc_pipe::Error>(())
        /// ```
        pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
            try_sent(
                self.tx
                    .send_bytes(fd_of(&self.fd), bytes, Some(Instant::now())),
            )
        }

        /// Sends each of `msgs` as one message, in order, as if by
        /// [`send_bytes`](Self::send_bytes) per message, but with the small
        /// ones gathered behind their headers into few writes: 64 messages
        /// of 64 bytes cost one system call instead of 64. The receiver
        /// takes them one by one with any receive method; it cannot tell a
        /// batch from single sends. Payloads over 2 KiB are written from
        /// the caller's buffer without a copy, one vectored write each.
        ///
        /// The batch is not atomic: the peer may receive its first messages
        /// before this call returns.
        ///
        /// # Errors
        /// [`Error::TooLarge`] if any message is longer than
        /// `max_message_size` (checked first: nothing sent);
        /// [`Error::Disconnected`] if the peer's end is closed (it received
        /// some leading messages whole, and at most one cut frame, which it
        /// reports as `Disconnected`); [`Error::Poisoned`] after a send that
        /// failed half-way.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        ///
        /// # Example
        /// ```
        /// let (mut a, mut b) = ipc_pipe::duplex()?;
        /// let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64]).collect();
        /// a.send_bytes_many(&msgs)?;
        /// let mut buf = Vec::new();
        /// for i in 0..64u8 {
        ///     b.recv_bytes_into(&mut buf)?;
        ///     assert_eq!(buf, [i; 64]);
        /// }
        /// # Ok::<(), ipc_pipe::Error>(())
        /// ```
        pub fn send_bytes_many<B: AsRef<[u8]>>(&mut self, msgs: &[B]) -> Result<()> {
            self.tx
                .send_bytes_many(fd_of(&self.fd), msgs, None)
                .map(|_| ())
        }

        /// [`send_bytes_many`](Self::send_bytes_many) waiting at most
        /// `timeout` (monotonic clock) for the peer to make room. Returns how
        /// many of the messages, from the first, were accepted: all of them,
        /// or fewer when the time ran out (the rest were not sent; the
        /// caller sends them again later). The last one accepted may be
        /// partly written, its tail kept as in
        /// [`send_bytes_timeout`](Self::send_bytes_timeout).
        ///
        /// # Errors
        /// [`SendTimeoutError::Timeout`] if not even the first message was
        /// accepted (nothing written, stream intact). Otherwise as
        /// `send_bytes_many`, in `Disconnected` or `Failed`.
        ///
        /// # Peer death
        /// As [`send_bytes_timeout`](Self::send_bytes_timeout).
        ///
        /// # Example
        /// ```
        /// use std::time::Duration;
        /// let (mut rx, mut tx) = ipc_pipe::simplex()?;
        /// let msgs = [b"a".as_slice(), b"bc", b"def"];
        /// let mut sent = 0;
        /// while sent < msgs.len() {
        ///     // Sends what fits in time; the rest goes in the next round.
        ///     sent += tx.send_bytes_many_timeout(&msgs[sent..], Duration::from_secs(1))?;
        /// }
        /// assert_eq!(rx.recv_bytes()?, b"a");
        /// # Ok::<(), ipc_pipe::Error>(())
        /// ```
        pub fn send_bytes_many_timeout<B: AsRef<[u8]>>(
            &mut self,
            msgs: &[B],
            timeout: Duration,
        ) -> Result<usize, SendTimeoutError> {
            self.tx
                .send_bytes_many(fd_of(&self.fd), msgs, deadline_after(timeout))
                .map_err(SendTimeoutError::from_internal)
        }

        /// [`send_bytes_many`](Self::send_bytes_many) without blocking:
        /// accepts the leading messages that fit in the peer's buffer now
        /// and returns how many (the last may be partly written, as in
        /// [`try_send_bytes`](Self::try_send_bytes)).
        ///
        /// # Errors
        /// [`TrySendError::Full`] when not even the first message fits;
        /// otherwise as `send_bytes_many`, in `Disconnected` or `Failed`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn try_send_bytes_many<B: AsRef<[u8]>>(
            &mut self,
            msgs: &[B],
        ) -> Result<usize, TrySendError> {
            self.tx
                .send_bytes_many(fd_of(&self.fd), msgs, Some(Instant::now()))
                .map_err(TrySendError::from_internal)
        }

        /// Writes the unwritten tail of a message an earlier bounded send
        /// accepted, blocking while the peer's buffer is full. Does nothing
        /// when there is none ([`pending_bytes`](Self::pending_bytes) is 0).
        /// Every send does this first on its own; call it to make sure the
        /// peer can read everything accepted so far.
        ///
        /// # Errors
        /// [`Error::Disconnected`] if the peer's end is closed (the tail is
        /// lost: the peer sees a cut message, reported as `Disconnected`);
        /// [`Error::Poisoned`] after a write that failed half-way.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn flush(&mut self) -> Result<()> {
            self.tx.flush(fd_of(&self.fd), None)
        }

        /// [`flush`](Self::flush) waiting at most `timeout`.
        ///
        /// # Errors
        /// [`SendTimeoutError::Timeout`] if some of the tail is still
        /// pending then (what went is gone from it); otherwise as `flush`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn flush_timeout(&mut self, timeout: Duration) -> Result<(), SendTimeoutError> {
            self.tx
                .flush(fd_of(&self.fd), deadline_after(timeout))
                .map_err(SendTimeoutError::from_internal)
        }

        /// [`flush`](Self::flush) without blocking.
        ///
        /// # Errors
        /// [`TrySendError::Full`] if some of the tail is still pending;
        /// otherwise as `flush`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn try_flush(&mut self) -> Result<(), TrySendError> {
            self.tx
                .flush(fd_of(&self.fd), Some(Instant::now()))
                .map_err(TrySendError::from_internal)
        }

        /// How many bytes of an accepted message are still waiting in this
        /// handle to be written (0 when everything accepted is in the
        /// kernel).
        pub fn pending_bytes(&self) -> usize {
            self.tx.pending()
        }
    };
}

/// Trait impls shared by the three handle types.
macro_rules! fd_impls {
    ($ty:ident) => {
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                fd_of(&self.fd)
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                fd_of(&self.fd).as_raw_fd()
            }
        }

        impl From<$ty> for OwnedFd {
            /// Gives up the handle; input it had read ahead is discarded, and
            /// the unwritten tail of an accepted message (see
            /// [`pending_bytes`]($ty::pending_bytes) on senders) gets one
            /// non-blocking attempt, as on drop.
            fn from(mut c: $ty) -> OwnedFd {
                c.release();
                // The other fields drop here (the reader leaves the `wait` bitmap).
                match c.fd.take() {
                    Some(fd) => fd,
                    None => unreachable!("the fd is taken only here, consuming the handle"),
                }
            }
        }

        impl IntoRawFd for $ty {
            /// Gives up the handle; input it had read ahead is discarded.
            fn into_raw_fd(self) -> RawFd {
                OwnedFd::from(self).into_raw_fd()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_conn(stringify!($ty), fd_of(&self.fd).as_raw_fd(), f)
            }
        }
    };
}

// -------------------------------------------------------------- Connection

/// A duplex, message-framed connection over a stream socket (Python's
/// `multiprocessing.connection.Connection`).
///
/// Made by [`duplex`](crate::duplex), [`Listener::accept`](crate::Listener::accept),
/// [`Client::connect`](crate::Client::connect), or from any stream-socket fd
/// (`From<OwnedFd>`, `FromRawFd`). Both ends survive `fork`: each process uses
/// its copy (close the one it does not need). Methods take `&mut self`; to
/// send and receive from different threads, use two connections.
///
/// # Example
/// ```
/// let (mut a, mut b) = ipc_pipe::duplex()?;
/// # #[cfg(feature = "serde")] {
/// a.send(&("ping", 1u32))?; // feature `serde` (on by default)
/// let (word, n): (String, u32) = b.recv()?;
/// assert_eq!((word.as_str(), n), ("ping", 1));
/// # }
/// b.send_bytes(b"pong")?;
/// assert_eq!(a.recv_bytes()?, b"pong");
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Connection {
    // Field order is drop order: leave the `wait` bitmap before closing the fd.
    rx: Reader,
    tx: Writer,
    fd: Option<OwnedFd>,
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, kind: sys::FdKind) -> Connection {
        Connection {
            rx: Reader::new(fd.as_raw_fd(), kind.is_socket()),
            fd: Some(fd),
            tx: Writer::new(kind),
        }
    }

    recv_methods!();
    send_methods!();

    /// Sends 1 to 253 file descriptors (`SCM_RIGHTS`) as one message; the
    /// peer takes them with [`recv_fds`](Self::recv_fds). The descriptors stay
    /// open here too.
    ///
    /// # Errors
    /// `Io(InvalidInput)` for 0 or more than 253 fds; `Io(Unsupported)` if the
    /// connection is not a Unix socket (TCP); else as
    /// [`send_bytes`](Self::send_bytes).
    ///
    /// # Peer death
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Example
    /// An open file handed to the peer, which reads it through its own descriptor:
    /// ```
    /// use std::io::{Read, Seek, Write};
    /// use std::os::fd::AsFd;
    ///
    /// let (mut a, mut b) = ipc_pipe::duplex()?;
    /// let path = std::env::temp_dir().join(format!("ipc-pipe-doc-{}", std::process::id()));
    /// let mut file = std::fs::File::options()
    ///     .read(true).write(true).create(true).truncate(true).open(&path)?;
    /// std::fs::remove_file(&path)?; // the descriptors keep it alive
    /// file.write_all(b"shared")?;
    /// a.send_fds(&[file.as_fd()])?;
    /// let mut theirs = std::fs::File::from(b.recv_fds()?.remove(0));
    /// theirs.rewind()?;
    /// let mut s = String::new();
    /// theirs.read_to_string(&mut s)?;
    /// assert_eq!(s, "shared");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        blocking(self.tx.send_fds(fd_of(&self.fd), fds, None))
    }

    /// [`send_fds`](Self::send_fds) waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] if the peer made no room in time
    /// (nothing sent; the descriptors go with the message's first byte, so
    /// an accepted message always carries them); otherwise as `send_fds`,
    /// in `Disconnected` or `Failed`.
    ///
    /// # Peer death
    /// As [`send_bytes`](Self::send_bytes).
    pub fn send_fds_timeout(
        &mut self,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        timeout_sent(
            self.tx
                .send_fds(fd_of(&self.fd), fds, deadline_after(timeout)),
        )
    }

    /// [`send_fds`](Self::send_fds) without blocking.
    ///
    /// # Errors
    /// [`TrySendError::Full`] if the peer's buffer has no room now (nothing
    /// sent); otherwise as `send_fds`, in `Disconnected` or `Failed`.
    ///
    /// # Peer death
    /// As [`send_bytes`](Self::send_bytes).
    pub fn try_send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<(), TrySendError> {
        try_sent(self.tx.send_fds(fd_of(&self.fd), fds, Some(Instant::now())))
    }

    /// Receives the descriptors of a [`send_fds`](Self::send_fds) message,
    /// close-on-exec (`MSG_CMSG_CLOEXEC`). Descriptors that arrive with any
    /// other message are closed as they arrive (those attached to the bytes
    /// of a long message do not wait for its end), never leaked: a peer cannot
    /// fill this process's fd table through a connection.
    ///
    /// # Errors
    /// [`Error::UnexpectedFrame`] if the next message holds bytes (it stays
    /// queued); `Io` if the kernel dropped some of them (`MSG_CTRUNC`, for
    /// example at `RLIMIT_NOFILE`: the ones received are closed, the connection
    /// stays usable); [`Error::Poisoned`] if the message carries more than it
    /// announced (at most [`frame::MAX_FDS`]) or descriptors keep arriving for
    /// messages not yet read (all of them are closed); else as
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Peer death
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        self.rx.recv_fds(fd_of(&self.fd), None)
    }

    /// [`recv_fds`](Self::recv_fds) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if no message arrived in time;
    /// [`RecvTimeoutError::Disconnected`] at end of stream; otherwise as
    /// `recv_fds`, in `Failed`.
    ///
    /// # Peer death
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_fds_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<OwnedFd>, RecvTimeoutError> {
        self.rx
            .recv_fds(fd_of(&self.fd), deadline_after(timeout))
            .map_err(RecvTimeoutError::from_internal)
    }

    /// [`recv_fds`](Self::recv_fds) without blocking.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] if no message is waiting;
    /// [`TryRecvError::Disconnected`] at end of stream; otherwise as
    /// `recv_fds`, in `Failed`.
    ///
    /// # Peer death
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn try_recv_fds(&mut self) -> Result<Vec<OwnedFd>, TryRecvError> {
        self.rx
            .recv_fds(fd_of(&self.fd), Some(Instant::now()))
            .map_err(TryRecvError::from_internal)
    }

    /// Sets the largest message accepted in both directions (default 64 MiB).
    /// A longer incoming frame is [`Error::TooLarge`] before anything is
    /// allocated; a longer outgoing one is refused before anything is sent.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.rx.set_max(max);
        self.tx.set_max(max);
    }

    /// The current limit set by [`set_max_message_size`](Self::set_max_message_size).
    pub fn max_message_size(&self) -> usize {
        self.tx.max
    }

    /// Tells the reader whether the fd is `O_NONBLOCK` (set by the caller).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking_io(&mut self, on: bool) {
        self.rx.set_nonblocking(on);
    }
}

impl Connection {
    /// What giving up the handle does first.
    fn release(&mut self) {
        if let Some(fd) = &self.fd {
            self.tx.flush_on_drop(fd.as_fd());
        }
    }
}

/// Drop makes one non-blocking attempt to write the unwritten tail of an
/// accepted message ([`pending_bytes`](Connection::pending_bytes)); if the
/// peer's buffer has no room for all of it, the rest is lost and the peer
/// sees a cut message, which it reports as `Disconnected`. Call
/// [`flush`](Connection::flush) first to deliver it.
impl Drop for Connection {
    fn drop(&mut self) {
        self.release();
    }
}

impl From<OwnedFd> for Connection {
    /// Wraps a connected stream socket (Unix or TCP). Any other fd works for
    /// bytes too, but cannot pass descriptors.
    fn from(fd: OwnedFd) -> Connection {
        let kind = sys::fd_kind(fd.as_fd());
        Connection::new(fd, kind)
    }
}

fd_impls!(Connection);

// ---------------------------------------------------------------- simplex

/// The read end of a [`simplex`](crate::simplex) pipe (Python's
/// `Pipe(duplex=False)[0]`).
///
/// # Example
/// ```
/// let (mut rx, mut tx) = ipc_pipe::simplex()?;
/// tx.send_bytes(&[1, 2, 3])?;
/// assert_eq!(rx.recv_bytes()?, [1, 2, 3]);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Receiver {
    rx: Reader,
    fd: Option<OwnedFd>,
}

impl Receiver {
    pub(crate) fn new(fd: OwnedFd, socket: bool) -> Receiver {
        Receiver {
            rx: Reader::new(fd.as_raw_fd(), socket),
            fd: Some(fd),
        }
    }

    recv_methods!();

    /// Sets the largest message accepted (default 64 MiB); longer frames are
    /// [`Error::TooLarge`] before anything is allocated.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.rx.set_max(max);
    }

    /// The current limit.
    pub fn max_message_size(&self) -> usize {
        self.rx.dec.max()
    }

    /// Tells the reader whether the fd is `O_NONBLOCK` (set by the caller).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_nonblocking_io(&mut self, on: bool) {
        self.rx.set_nonblocking(on);
    }
}

impl Receiver {
    /// What giving up the handle does first: nothing to write.
    fn release(&mut self) {}
}

impl From<OwnedFd> for Receiver {
    /// Wraps the read end of a pipe (or any readable stream fd).
    fn from(fd: OwnedFd) -> Receiver {
        let socket = sys::fd_kind(fd.as_fd()).is_socket();
        Receiver::new(fd, socket)
    }
}

fd_impls!(Receiver);

/// The write end of a [`simplex`](crate::simplex) pipe (Python's
/// `Pipe(duplex=False)[1]`).
pub struct Sender {
    tx: Writer,
    fd: Option<OwnedFd>,
}

impl Sender {
    pub(crate) fn new(fd: OwnedFd, kind: sys::FdKind) -> Sender {
        Sender {
            tx: Writer::new(kind),
            fd: Some(fd),
        }
    }

    send_methods!();

    /// Sets the largest message this end will send (default 64 MiB).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.tx.set_max(max);
    }

    /// The current limit.
    pub fn max_message_size(&self) -> usize {
        self.tx.max
    }
}

impl Sender {
    /// What giving up the handle does first.
    fn release(&mut self) {
        if let Some(fd) = &self.fd {
            self.tx.flush_on_drop(fd.as_fd());
        }
    }
}

/// As for [`Connection`]'s drop: one non-blocking attempt to write the
/// unwritten tail of an accepted message; call [`flush`](Sender::flush)
/// first to deliver it.
impl Drop for Sender {
    fn drop(&mut self) {
        self.release();
    }
}

impl From<OwnedFd> for Sender {
    /// Wraps the write end of a pipe (or any writable stream fd).
    fn from(fd: OwnedFd) -> Sender {
        let kind = sys::fd_kind(fd.as_fd());
        Sender::new(fd, kind)
    }
}

fd_impls!(Sender);
