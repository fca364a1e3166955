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

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{self, Decoder, Frame, Header, DEFAULT_MAX_MESSAGE_SIZE, MAX_FDS};
use crate::{sys, wait, Error, Result};

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
/// or time stops between frames, never inside one (TCP gives no such
/// promise; there a cut frame poisons, as for a single message).
const BATCH_CHUNK_BOUNDED: usize = libc::PIPE_BUF;

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
    /// Receive buffer of the serde API.
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
            scratch: Vec::new(),
        }
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
    /// first when there is a deadline. Returns (total, bytes placed in `out`).
    fn read_some(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
        mut out: Option<(&mut Vec<u8>, usize)>,
        use_buf: bool,
    ) -> Result<(usize, usize)> {
        loop {
            if let Some(d) = deadline {
                if !sys::poll_one(fd, sys::POLLIN, Some(d))? {
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
                    return Ok((r.n, r.direct));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // An O_NONBLOCK fd: wait for it like a blocking one.
                    if deadline.is_none() {
                        sys::poll_one(fd, sys::POLLIN, None)?;
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
                self.settle_fds(false);
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

/// Turns `try_` results into `Option`: "nothing complete yet" is `None`.
fn none_on_timeout<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Timeout) => Ok(None),
        Err(e) => Err(e),
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
}

impl Writer {
    pub(crate) fn new(kind: sys::FdKind) -> Writer {
        Writer {
            kind,
            state: TxState::Open,
            max: DEFAULT_MAX_MESSAGE_SIZE,
            scratch: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
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

    /// The one send path: a whole frame, or nothing of it, or a poisoned
    /// writer. See [`send_methods`] for the contract it implements.
    fn write(
        &mut self,
        fd: BorrowedFd<'_>,
        hdr: &[u8],
        payload: &[u8],
        fds: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<()> {
        sys::write_all2(fd, self.kind, hdr, payload, fds, deadline)
            .map_err(|(fail, done)| self.fail(fd, fail, done > 0))
    }

    /// The error of a failed write, and the writer's state after it: `cut`
    /// says the write stopped inside a frame.
    fn fail(&mut self, fd: BorrowedFd<'_>, fail: sys::WriteFail, cut: bool) -> Error {
        let err = match fail {
            // Nothing of the frame left: the stream is intact, try again later.
            sys::WriteFail::Timeout if !cut => return Error::Timeout,
            // Cut off mid-frame: reported as `Poisoned` below.
            sys::WriteFail::Timeout => Error::Poisoned,
            sys::WriteFail::Io(e) => Error::from_io(e),
        };
        if cut {
            // Part of a frame is on the wire: the stream cannot continue.
            if matches!(err, Error::Disconnected) {
                self.state = TxState::Disconnected;
            } else {
                self.state = TxState::Poisoned;
                if self.kind.is_socket() {
                    // Let the peer see end of stream after the whole frames
                    // instead of waiting for a rest that never comes. Best
                    // effort: the error reported is the poisoning.
                    let _ = sys::shutdown_write(fd);
                }
            }
        }
        err
    }

    /// Sends the messages of `msgs` in order, as one frame each, gathering
    /// small frames into few writes. Returns how many went out whole: all of
    /// them, or (bounded, the deadline passed between two frames) the first
    /// `k >= 1` of them; none is `Err(Timeout)` with the stream intact. A
    /// frame cut by the deadline poisons, as a single send does.
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
                    Ok(()) => {
                        sent += 1;
                        next += 1;
                        continue;
                    }
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
                    let cut = done > 0 && whole.checked_sub(1).map(|i| ends[i]) != Some(done);
                    sent += whole;
                    break Err(self.fail(fd, fail, cut));
                }
            }
        };
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        self.ends = ends;
        match res {
            Ok(()) => Ok(sent),
            // Stopped between frames by the deadline: report what went out.
            Err(Error::Timeout) if sent > 0 => Ok(sent),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn send_bytes(
        &mut self,
        fd: BorrowedFd<'_>,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.check(payload.len())?;
        let hdr = Header::bytes(payload.len());
        if payload.len() <= COPY_MAX {
            let mut buf = mem::take(&mut self.scratch);
            buf.clear();
            buf.extend_from_slice(hdr.as_slice());
            buf.extend_from_slice(payload);
            let res = self.write(fd, &buf, &[], &[], deadline);
            self.scratch = buf;
            return res;
        }
        self.write(fd, hdr.as_slice(), payload, &[], deadline)
    }

    pub(crate) fn send<T: Serialize + ?Sized>(
        &mut self,
        fd: BorrowedFd<'_>,
        value: &T,
        deadline: Option<Instant>,
    ) -> Result<()> {
        const SHORT: usize = 4;
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
    ) -> Result<()> {
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
        pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
            self.rx.recv(self.fd.as_fd(), None)
        }

        /// [`recv`](Self::recv) waiting at most `timeout`.
        ///
        /// # Errors
        /// As `recv`, plus [`Error::Timeout`]. A message that had partly arrived
        /// is kept, and the next receive continues it.
        pub fn recv_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
            self.rx.recv(self.fd.as_fd(), deadline_after(timeout))
        }

        /// [`recv`](Self::recv) without blocking: `Ok(None)` when no complete
        /// message is waiting.
        ///
        /// # Errors
        /// As `recv`.
        pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
            none_on_timeout(self.rx.recv(self.fd.as_fd(), Some(Instant::now())))
        }

        /// Receives one message's bytes into a new `Vec`.
        ///
        /// # Errors
        /// As [`recv`](Self::recv), without `Decode`.
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
            let mut v = Vec::new();
            self.rx.recv_bytes_into(self.fd.as_fd(), &mut v, None)?;
            Ok(v)
        }

        /// [`recv_bytes`](Self::recv_bytes) waiting at most `timeout`.
        ///
        /// # Errors
        /// As `recv_bytes`, plus [`Error::Timeout`].
        pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
            let mut v = Vec::new();
            self.rx
                .recv_bytes_into(self.fd.as_fd(), &mut v, deadline_after(timeout))?;
            Ok(v)
        }

        /// [`recv_bytes`](Self::recv_bytes) without blocking: `Ok(None)` when no
        /// complete message is waiting.
        ///
        /// # Errors
        /// As `recv_bytes`.
        pub fn try_recv_bytes(&mut self) -> Result<Option<Vec<u8>>> {
            let mut v = Vec::new();
            none_on_timeout(
                self.rx
                    .recv_bytes_into(self.fd.as_fd(), &mut v, Some(Instant::now())),
            )
            .map(|o| o.map(|_| v))
        }

        /// Receives one message's bytes into `buf`, replacing its contents, and
        /// returns the length. `buf`'s capacity is reused, so a steady stream
        /// of messages allocates nothing; it grows only as bytes arrive.
        ///
        /// # Errors
        /// As [`recv_bytes`](Self::recv_bytes).
        ///
        /// # Peer death
        /// As [`recv`](Self::recv).
        pub fn recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
            self.rx.recv_bytes_into(self.fd.as_fd(), buf, None)
        }

        /// [`recv_bytes_into`](Self::recv_bytes_into) waiting at most `timeout`.
        ///
        /// # Errors
        /// As `recv_bytes_into`, plus [`Error::Timeout`] (then `buf` is empty and
        /// any partly received message is kept for the next receive).
        pub fn recv_bytes_into_timeout(
            &mut self,
            buf: &mut Vec<u8>,
            timeout: Duration,
        ) -> Result<usize> {
            self.rx
                .recv_bytes_into(self.fd.as_fd(), buf, deadline_after(timeout))
        }

        /// [`recv_bytes_into`](Self::recv_bytes_into) without blocking:
        /// `Ok(None)` when no complete message is waiting.
        ///
        /// # Errors
        /// As `recv_bytes_into`.
        pub fn try_recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
            none_on_timeout(
                self.rx
                    .recv_bytes_into(self.fd.as_fd(), buf, Some(Instant::now())),
            )
        }

        /// Whether a receive would find something without waiting for the fd:
        /// data (possibly part of a message), end of stream, or a poisoned
        /// state. Waits up to `timeout` for that; `None` waits without limit,
        /// `Some(Duration::ZERO)` only looks (Python's `poll()`).
        ///
        /// # Errors
        /// [`Error::Io`] if `ppoll` fails.
        pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
            self.rx.poll(self.fd.as_fd(), timeout)
        }
    };
}

/// Send methods, generated once for `Connection` and `Sender` so both
/// delegate to the same [`Writer`] with identical docs.
///
/// Contract of every send (blocking, `try_` and `_timeout` alike): a message
/// goes out whole, or none of it does (the caller still has its value and the
/// stream is intact), or the writer is poisoned. A bounded send waits for room
/// (`poll(POLLOUT)` against a monotonic deadline) before its first byte; once
/// a frame has started it must finish by the same deadline, else the send
/// returns [`Error::Poisoned`] and the connection is unusable for sending
/// (a socket's write side is shut down so the peer sees end of stream after
/// the last whole message). Nothing is ever kept back in process memory:
/// `Ok(())` means the whole frame is in the kernel's buffer.
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
        pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.tx.send(self.fd.as_fd(), value, None)
        }

        /// [`send`](Self::send) waiting at most `timeout` for the peer to make
        /// room.
        ///
        /// # Errors
        /// [`Error::Encode`] if `value` cannot be encoded; otherwise as
        /// [`send_bytes_timeout`](Self::send_bytes_timeout).
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn send_timeout<T: Serialize + ?Sized>(
            &mut self,
            value: &T,
            timeout: Duration,
        ) -> Result<()> {
            self.tx
                .send(self.fd.as_fd(), value, deadline_after(timeout))
        }

        /// [`send`](Self::send) without blocking.
        ///
        /// # Errors
        /// [`Error::Encode`] if `value` cannot be encoded; otherwise as
        /// [`try_send_bytes`](Self::try_send_bytes).
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn try_send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
            self.tx.send(self.fd.as_fd(), value, Some(Instant::now()))
        }

        /// Sends `bytes` as one message in one write, continued if the kernel
        /// takes part: up to 2 KiB copied behind the header, larger payloads
        /// uncopied in a vectored write. Blocks while the peer's buffer is
        /// full.
        ///
        /// # Errors
        /// [`Error::TooLarge`] if longer than `max_message_size` (nothing sent);
        /// [`Error::Disconnected`] if the peer's end is closed;
        /// [`Error::Poisoned`] after a send that failed half-way.
        ///
        /// # Peer death
        /// `Disconnected`, never `SIGPIPE`: sockets are written with
        /// `MSG_NOSIGNAL`; pipe writes block `SIGPIPE` in the calling thread
        /// for the write and consume the one a closed pipe raises, so this
        /// holds even in a host that never ignored `SIGPIPE`. A peer that is
        /// alive but never reads blocks this call; use
        /// [`send_bytes_timeout`](Self::send_bytes_timeout) to bound it.
        pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
            self.tx.send_bytes(self.fd.as_fd(), bytes, None)
        }

        /// [`send_bytes`](Self::send_bytes) waiting at most `timeout` (against
        /// the monotonic clock, EINTR retried) for the peer to make room.
        ///
        /// # Errors
        /// [`Error::Timeout`] if the peer made no room for the first byte in
        /// time: nothing of the message was written, the stream is intact and
        /// the send can be retried. [`Error::Poisoned`] if the message had
        /// started but could not be finished in time: the peer may hold its
        /// first part, so this direction is unusable from now on (a socket's
        /// write side is shut down; the peer receives every earlier message,
        /// then [`Error::Disconnected`]). Otherwise as `send_bytes`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes); a peer that exits or is killed
        /// while this call waits makes it return `Disconnected` at once.
        pub fn send_bytes_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
            self.tx
                .send_bytes(self.fd.as_fd(), bytes, deadline_after(timeout))
        }

        /// [`send_bytes`](Self::send_bytes) without blocking: the message goes
        /// out if the peer's buffer has room now.
        ///
        /// # Errors
        /// [`Error::Timeout`] when the buffer is full (nothing written, stream
        /// intact, retry later). [`Error::Poisoned`] when only the first part
        /// of the message fitted, as for
        /// [`send_bytes_timeout`](Self::send_bytes_timeout). On Linux a message
        /// of up to `PIPE_BUF` (4 KiB) on a pipe, or about 32 KiB on a Unix
        /// socket, is taken whole or not at all, so only longer messages risk
        /// this; bound those with `send_bytes_timeout` instead. Otherwise as
        /// `send_bytes`.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
            self.tx
                .send_bytes(self.fd.as_fd(), bytes, Some(Instant::now()))
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
                .send_bytes_many(self.fd.as_fd(), msgs, None)
                .map(|_| ())
        }

        /// [`send_bytes_many`](Self::send_bytes_many) waiting at most
        /// `timeout` (monotonic clock) for the peer to make room. Returns how
        /// many of the messages, from the first, went out whole: all of them,
        /// or fewer when the time ran out between two messages (the rest
        /// were not sent; the stream is intact and the caller sends them
        /// again later).
        ///
        /// Small messages are written in groups of at most `PIPE_BUF`
        /// (4 KiB) bytes, which a pipe or a Unix socket takes whole or not
        /// at all, so running out of room never cuts one of them.
        ///
        /// # Errors
        /// [`Error::Timeout`] if not even the first message went out
        /// (nothing written, stream intact). [`Error::Poisoned`] if a
        /// message had started but could not finish in time (a message over
        /// 2 KiB larger than the free room, or any message on TCP): as for
        /// [`send_bytes_timeout`](Self::send_bytes_timeout), the peer gets
        /// every message before it, then end of stream. Otherwise as
        /// `send_bytes_many`.
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
        ) -> Result<usize> {
            self.tx
                .send_bytes_many(self.fd.as_fd(), msgs, deadline_after(timeout))
        }

        /// [`send_bytes_many`](Self::send_bytes_many) without blocking:
        /// sends the leading messages that fit in the peer's buffer now and
        /// returns how many.
        ///
        /// # Errors
        /// As [`send_bytes_many_timeout`](Self::send_bytes_many_timeout):
        /// [`Error::Timeout`] when not even the first message fits.
        ///
        /// # Peer death
        /// As [`send_bytes`](Self::send_bytes).
        pub fn try_send_bytes_many<B: AsRef<[u8]>>(&mut self, msgs: &[B]) -> Result<usize> {
            self.tx
                .send_bytes_many(self.fd.as_fd(), msgs, Some(Instant::now()))
        }
    };
}

/// Trait impls shared by the three handle types.
macro_rules! fd_impls {
    ($ty:ident) => {
        impl AsFd for $ty {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.fd.as_fd()
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.fd.as_raw_fd()
            }
        }

        impl From<$ty> for OwnedFd {
            /// Gives up the handle; input it had read ahead is discarded.
            fn from(c: $ty) -> OwnedFd {
                // The other fields drop here (the reader leaves the `wait` bitmap).
                c.fd
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
                fmt_conn(stringify!($ty), self.fd.as_raw_fd(), f)
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
/// a.send(&("ping", 1u32))?;
/// let (word, n): (String, u32) = b.recv()?;
/// assert_eq!((word.as_str(), n), ("ping", 1));
/// b.send_bytes(b"pong")?;
/// assert_eq!(a.recv_bytes()?, b"pong");
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Connection {
    // Field order is drop order: leave the `wait` bitmap before closing the fd.
    rx: Reader,
    tx: Writer,
    fd: OwnedFd,
}

impl Connection {
    pub(crate) fn new(fd: OwnedFd, kind: sys::FdKind) -> Connection {
        Connection {
            rx: Reader::new(fd.as_raw_fd(), kind.is_socket()),
            fd,
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
        self.tx.send_fds(self.fd.as_fd(), fds, None)
    }

    /// [`send_fds`](Self::send_fds) waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As `send_fds`; a full buffer is [`Error::Timeout`] with nothing sent
    /// (the fd message is a single 12-byte write, so it is never cut).
    pub fn send_fds_timeout(&mut self, fds: &[BorrowedFd<'_>], timeout: Duration) -> Result<()> {
        self.tx
            .send_fds(self.fd.as_fd(), fds, deadline_after(timeout))
    }

    /// [`send_fds`](Self::send_fds) without blocking.
    ///
    /// # Errors
    /// As [`send_fds_timeout`](Self::send_fds_timeout).
    pub fn try_send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send_fds(self.fd.as_fd(), fds, Some(Instant::now()))
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
    /// [`recv`](Self::recv).
    ///
    /// # Peer death
    /// As [`recv`](Self::recv).
    pub fn recv_fds(&mut self) -> Result<Vec<OwnedFd>> {
        self.rx.recv_fds(self.fd.as_fd(), None)
    }

    /// [`recv_fds`](Self::recv_fds) waiting at most `timeout`.
    ///
    /// # Errors
    /// As `recv_fds`, plus [`Error::Timeout`].
    pub fn recv_fds_timeout(&mut self, timeout: Duration) -> Result<Vec<OwnedFd>> {
        self.rx.recv_fds(self.fd.as_fd(), deadline_after(timeout))
    }

    /// [`recv_fds`](Self::recv_fds) without blocking: `Ok(None)` if no fd
    /// message is waiting.
    ///
    /// # Errors
    /// As `recv_fds`.
    pub fn try_recv_fds(&mut self) -> Result<Option<Vec<OwnedFd>>> {
        none_on_timeout(self.rx.recv_fds(self.fd.as_fd(), Some(Instant::now())))
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
/// tx.send(&vec![1u8, 2, 3])?;
/// assert_eq!(rx.recv::<Vec<u8>>()?, [1, 2, 3]);
/// # Ok::<(), ipc_pipe::Error>(())
/// ```
pub struct Receiver {
    rx: Reader,
    fd: OwnedFd,
}

impl Receiver {
    pub(crate) fn new(fd: OwnedFd, socket: bool) -> Receiver {
        Receiver {
            rx: Reader::new(fd.as_raw_fd(), socket),
            fd,
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
    fd: OwnedFd,
}

impl Sender {
    pub(crate) fn new(fd: OwnedFd, kind: sys::FdKind) -> Sender {
        Sender {
            tx: Writer::new(kind),
            fd,
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

impl From<OwnedFd> for Sender {
    /// Wraps the write end of a pipe (or any writable stream fd).
    fn from(fd: OwnedFd) -> Sender {
        let kind = sys::fd_kind(fd.as_fd());
        Sender::new(fd, kind)
    }
}

fd_impls!(Sender);
