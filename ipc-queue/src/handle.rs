//! The part both queue types share: the segment, the ring, and the blocking loops, with the
//! mapping from ring outcomes to errors. `PodQueue` and `Queue` differ only in how a value is
//! written into and read out of a slot.

use std::time::Duration;

use ipc_shm::lowlevel::sync::Deadline;
use ipc_shm::lowlevel::{Layout, Segment, DEFAULT_OPEN_TIMEOUT};

use crate::error::{Error, GetTimeoutError, JoinTimeoutError, PutFail, Result, TryGetError};
use crate::ring::{
    DeathWatch, Me, OsLiveness, ShmRing, SlotReader, SlotWriter, Stop, MAX_CAPACITY, MIN_SLOT,
};
#[cfg(feature = "serde")]
use crate::ring::{ShmSlots, SpanReader, SpanWriter};

/// The largest slot (1 GiB).
pub(crate) const MAX_SLOT: usize = 1 << 30;

/// Slot size for a payload of `payload` bytes: rounded up to 8, at least [`MIN_SLOT`].
pub(crate) fn slot_size_for(payload: usize) -> Option<usize> {
    let s = payload.max(MIN_SLOT).checked_add(7)? & !7;
    (s <= MAX_SLOT).then_some(s)
}

/// A mapped ring and its per-handle death-check state.
pub(crate) struct Handle {
    ring: ShmRing,
    watch: DeathWatch,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.ring.segment().name())
            .field("capacity", &self.ring.capacity())
            .finish_non_exhaustive()
    }
}

/// The payload length a ring of `l`'s geometry needs, for an opener's layout check (by name
/// or by descriptor): geometry no creator writes is a `LayoutMismatch`.
fn ring_payload_len(l: &Layout, min_slot: usize) -> ipc_shm::Result<usize> {
    let (cap, slot) = check_geometry(l.capacity, l.slot_size, min_slot).map_err(|why| {
        ipc_shm::Error::LayoutMismatch {
            field: why,
            expected: 0,
            found: l.capacity,
        }
    })?;
    ShmRing::payload_len(cap, slot).ok_or(ipc_shm::Error::InvalidSize(l.capacity, "ring"))
}

fn check_geometry(cap: u64, slot: u64, min_slot: usize) -> Result<(usize, usize), &'static str> {
    let cap = usize::try_from(cap).map_err(|_| "capacity too large")?;
    let slot = usize::try_from(slot).map_err(|_| "slot size too large")?;
    if cap == 0 || cap > MAX_CAPACITY {
        return Err("capacity must be between 1 and 2^30");
    }
    if slot < min_slot || slot > MAX_SLOT || slot % 8 != 0 {
        return Err("slot size out of range");
    }
    ShmRing::payload_len(cap, slot).ok_or("capacity times slot size overflows")?;
    Ok((cap, slot))
}

impl Handle {
    /// Creates a ring for `layout` (its capacity and slot size), inherited or named;
    /// `max_message` is recorded for openers (see `Queue`; 0 for one slot's payload).
    pub(crate) fn create(
        layout: Layout,
        name: Option<&str>,
        min_slot: usize,
        max_message: u64,
    ) -> Result<Handle> {
        let (cap, slot) = check_geometry(layout.capacity, layout.slot_size, min_slot)
            .map_err(Error::InvalidConfig)?;
        let len = ShmRing::payload_len(cap, slot)
            .ok_or(Error::InvalidConfig("capacity times slot size overflows"))?;
        let seg = Segment::create(&layout, len, name, |seg| {
            if ShmRing::init_segment(seg, cap, slot, max_message) {
                Ok(())
            } else {
                Err(ipc_shm::Error::InvalidSize(len as u64, "ring geometry"))
            }
        })?;
        Self::wrap(seg, cap, slot)
    }

    /// Opens the named ring `name`, checking kind, element type and (when nonzero in
    /// `expected`) capacity and slot size.
    pub(crate) fn open(expected: Layout, name: &str, min_slot: usize) -> Result<Handle> {
        let seg = Segment::open_named(name, &expected, DEFAULT_OPEN_TIMEOUT, |l| {
            ring_payload_len(l, min_slot)
        })?;
        Self::wrap_opened(seg)
    }

    /// Wraps a segment an opener validated (by name or by descriptor) with the geometry its
    /// header holds.
    fn wrap_opened(seg: Segment) -> Result<Handle> {
        let (cap, slot) = (
            seg.layout().capacity as usize,
            seg.layout().slot_size as usize,
        );
        Self::wrap(seg, cap, slot)
    }

    fn wrap(seg: Segment, cap: usize, slot: usize) -> Result<Handle> {
        let ring = ShmRing::new(seg, cap, slot).ok_or(Error::Corrupted("ring geometry"))?;
        Ok(Handle {
            ring,
            watch: DeathWatch::new(),
        })
    }

    /// Bytes of payload per slot.
    #[cfg(feature = "serde")]
    pub(crate) fn slot_payload(&self) -> usize {
        self.ring.segment().layout().slot_size as usize
    }

    /// The largest message the creator recorded (0: one slot's payload); untrusted.
    #[cfg(feature = "serde")]
    pub(crate) fn max_message(&self) -> u64 {
        self.ring.ring().max_message()
    }

    /// Puts a message spanning `k` slots with `write`, waiting until `deadline`.
    #[cfg(feature = "serde")]
    pub(crate) fn put_span<R, E>(
        &self,
        k: u64,
        deadline: Deadline,
        write: &mut impl FnMut(SpanWriter<'_, '_, ShmSlots>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        let ring = self.ring.ring();
        ring.put_with(
            Me::current(),
            deadline,
            &self.watch,
            &OsLiveness,
            &mut |me| ring.try_put_span(me, k, write),
        )
    }

    /// Gets a message that may span slots (`span` reads a head's slot count) with `read`,
    /// waiting until `deadline`.
    #[cfg(feature = "serde")]
    pub(crate) fn get_message<R>(
        &self,
        deadline: Deadline,
        span: &impl Fn(SlotReader<'_>) -> u64,
        read: &mut impl FnMut(SpanReader<'_, '_, ShmSlots>) -> R,
    ) -> Result<R, Stop> {
        let ring = self.ring.ring();
        ring.get_with(
            Me::current(),
            deadline,
            &self.watch,
            &OsLiveness,
            &mut |me| ring.try_get_message(me, span, read),
        )
    }

    /// Puts with `write`, waiting until `deadline`.
    #[inline]
    pub(crate) fn put<R, E>(
        &self,
        deadline: Deadline,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        self.ring
            .ring()
            .put_until(Me::current(), deadline, &self.watch, &OsLiveness, write)
    }

    /// Puts a run of up to `max` messages with one claim (`write(k, slot)` writes the
    /// `k`-th), waiting until `deadline` for room for the first; how many were put.
    pub(crate) fn put_run(
        &self,
        max: u64,
        deadline: Deadline,
        write: &mut impl FnMut(u64, SlotWriter<'_>),
    ) -> Result<u64, Stop> {
        self.ring.ring().put_run_until(
            Me::current(),
            max,
            deadline,
            &self.watch,
            &OsLiveness,
            write,
        )
    }

    /// Gets a run of up to `max` messages with one claim, each read with `read`, waiting
    /// until `deadline` for the first; how many were read.
    pub(crate) fn get_run(
        &self,
        max: u64,
        deadline: Deadline,
        read: &mut impl FnMut(SlotReader<'_>),
    ) -> Result<u64, Stop> {
        self.ring
            .ring()
            .get_run_until(Me::current(), max, deadline, &self.watch, &OsLiveness, read)
    }

    /// A put that succeeds at once without waiting or helping, else false (nothing done).
    #[inline(always)]
    pub(crate) fn put_fast(&self, write: impl FnOnce(SlotWriter<'_>)) -> bool {
        self.ring.ring().put_fast(Me::current(), write)
    }

    /// A get that succeeds at once without waiting or helping, else `None` (nothing done).
    #[inline(always)]
    pub(crate) fn get_fast<R>(&self, read: impl FnOnce(SlotReader<'_>) -> R) -> Option<R> {
        self.ring.ring().get_fast(Me::current(), read)
    }

    /// Gets with `read`, waiting until `deadline`.
    #[inline]
    pub(crate) fn get<R>(
        &self,
        deadline: Deadline,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Result<R, Stop> {
        self.ring
            .ring()
            .get_until(Me::current(), deadline, &self.watch, &OsLiveness, read)
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.ring().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    pub(crate) fn close(&self) {
        self.ring.ring().close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ring.ring().is_closed()
    }

    pub(crate) fn dropped(&self) -> u64 {
        let ring = self.ring.ring();
        ring.settle_dead_claims(Me::current(), &OsLiveness);
        ring.dropped()
    }

    pub(crate) fn task_done(&self) -> Result<()> {
        self.ring
            .ring()
            .task_done()
            .map_err(|_| Error::TaskDoneTooManyTimes)
    }

    pub(crate) fn join(&self, timeout: Option<Duration>) -> Result<(), JoinTimeoutError> {
        let ring = self.ring.ring();
        let before = ring.dropped();
        match ring.join_until(Me::current(), Deadline::from_timeout(timeout), &OsLiveness) {
            Ok(()) => {
                let dropped = ring.dropped().saturating_sub(before);
                if dropped > 0 {
                    Err(JoinTimeoutError::PeerDied { dropped })
                } else {
                    Ok(())
                }
            }
            Err(Stop::Deadline) => Err(JoinTimeoutError::Timeout),
            Err(Stop::Closed | Stop::Corrupted) => Err(JoinTimeoutError::Failed(Error::Corrupted(
                "impossible join outcome",
            ))),
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.ring.segment().name()
    }

    pub(crate) fn unlink(&mut self) -> Result<()> {
        Ok(self.ring.segment_mut().unlink()?)
    }
}

/// The async forms of [`Handle::put`] and [`Handle::get`].
#[cfg(feature = "async")]
impl Handle {
    pub(crate) async fn put_async<R, E>(
        &self,
        deadline: Deadline,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        self.ring
            .ring()
            .put_async(deadline, &self.watch, &OsLiveness, write)
            .await
    }

    pub(crate) async fn get_async<R>(
        &self,
        deadline: Deadline,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Result<R, Stop> {
        self.ring
            .ring()
            .get_async(deadline, &self.watch, &OsLiveness, read)
            .await
    }

    /// [`Handle::put_run`] as a future.
    pub(crate) async fn put_run_async(
        &self,
        max: u64,
        deadline: Deadline,
        write: &mut impl FnMut(u64, SlotWriter<'_>),
    ) -> Result<u64, Stop> {
        let ring = self.ring.ring();
        ring.put_async_with(deadline, &self.watch, &OsLiveness, &mut |me| {
            ring.try_put_run(me, max, write)
        })
        .await
    }

    /// [`Handle::get_run`] as a future.
    pub(crate) async fn get_run_async(
        &self,
        max: u64,
        deadline: Deadline,
        read: &mut impl FnMut(SlotReader<'_>),
    ) -> Result<u64, Stop> {
        let ring = self.ring.ring();
        ring.get_async_with(deadline, &self.watch, &OsLiveness, &mut |me| {
            ring.try_get_run(me, max, read)
        })
        .await
    }

    /// [`Handle::put_span`] as a future.
    #[cfg(feature = "serde")]
    pub(crate) async fn put_span_async<R, E>(
        &self,
        k: u64,
        deadline: Deadline,
        write: &mut impl FnMut(SpanWriter<'_, '_, ShmSlots>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        let ring = self.ring.ring();
        ring.put_async_with(deadline, &self.watch, &OsLiveness, &mut |me| {
            ring.try_put_span(me, k, write)
        })
        .await
    }

    /// [`Handle::get_message`] as a future.
    #[cfg(feature = "serde")]
    pub(crate) async fn get_message_async<R>(
        &self,
        deadline: Deadline,
        span: &impl Fn(SlotReader<'_>) -> u64,
        read: &mut impl FnMut(SpanReader<'_, '_, ShmSlots>) -> R,
    ) -> Result<R, Stop> {
        let ring = self.ring.ring();
        ring.get_async_with(deadline, &self.watch, &OsLiveness, &mut |me| {
            ring.try_get_message(me, span, read)
        })
        .await
    }
}

/// The error type of one form of get (`try_`, `_timeout` or blocking), built from how the
/// ring stopped or from a failure reading the message. Generic, so the inlined fast path
/// returns the caller's own error type and never builds or drops another.
pub(crate) trait GetFail: Sized {
    /// The ring stopped the get: the deadline passed, the queue is closed and drained, or
    /// its state is impossible.
    fn stop(stop: Stop) -> Self;
    /// The message could not be read.
    fn failed(e: Error) -> Self;
}

const CORRUPTED: &str = "impossible slot state or position";

/// How the ring stopped a put, before the value is attached.
pub(crate) fn put_fail(stop: Stop) -> PutFail {
    match stop {
        Stop::Deadline => PutFail::Full,
        Stop::Closed => PutFail::Closed,
        Stop::Corrupted => PutFail::Failed(Error::Corrupted(CORRUPTED)),
    }
}

impl GetFail for Error {
    fn stop(stop: Stop) -> Error {
        match stop {
            // A blocking get has no deadline.
            Stop::Deadline => Error::Timeout,
            Stop::Closed => Error::Closed,
            Stop::Corrupted => Error::Corrupted(CORRUPTED),
        }
    }
    fn failed(e: Error) -> Error {
        e
    }
}

impl GetFail for TryGetError {
    fn stop(stop: Stop) -> TryGetError {
        match stop {
            Stop::Deadline => TryGetError::Empty,
            Stop::Closed => TryGetError::Closed,
            Stop::Corrupted => TryGetError::Failed(Error::Corrupted(CORRUPTED)),
        }
    }
    fn failed(e: Error) -> TryGetError {
        TryGetError::Failed(e)
    }
}

impl GetFail for GetTimeoutError {
    fn stop(stop: Stop) -> GetTimeoutError {
        match stop {
            Stop::Deadline => GetTimeoutError::Timeout,
            Stop::Closed => GetTimeoutError::Closed,
            Stop::Corrupted => GetTimeoutError::Failed(Error::Corrupted(CORRUPTED)),
        }
    }
    fn failed(e: Error) -> GetTimeoutError {
        GetTimeoutError::Failed(e)
    }
}

/// The methods both queue types forward to their [`Handle`] unchanged (field `h`).
macro_rules! shared_methods {
    ($ty:ident) => {
        impl<T> $ty<T> {
            /// Approximately how many messages are queued (like Python's `qsize`); a `Queue`
            /// message larger than a slot counts the slots it takes.
            pub fn len(&self) -> usize {
                self.h.len()
            }

            /// Whether the queue looked empty (approximate).
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Whether the queue looked full (approximate).
            pub fn is_full(&self) -> bool {
                self.len() >= self.capacity()
            }

            /// The number of slots.
            pub fn capacity(&self) -> usize {
                self.h.capacity()
            }

            /// Closes the queue for every process: later puts fail with `Closed`, gets drain
            /// what is queued and then fail with `Closed`, and every blocked caller wakes.
            pub fn close(&self) {
                self.h.close();
            }

            /// Whether the queue has been closed.
            pub fn is_closed(&self) -> bool {
                self.h.is_closed()
            }

            /// Messages lost because the consumer holding them was killed mid-get. Looks for
            /// dead claimers first (a scan of the slots, reading `/proc` for claimed ones), so a
            /// message lost with the last consumer is counted without waiting for another
            /// participant to meet its slot.
            pub fn dropped_by_dead_peers(&self) -> u64 {
                self.h.dropped()
            }

            /// Marks one message taken by a get as processed (`JoinableQueue.task_done`).
            ///
            /// # Errors
            /// [`Error::TaskDoneTooManyTimes`](crate::Error::TaskDoneTooManyTimes) if called
            /// more often than messages were put.
            ///
            /// # Example
            /// ```
            #[doc = concat!("let q = ipc_queue::", stringify!($ty), "::<u64>::new(4)?;")]
            /// q.put(7u64)?;
            /// assert_eq!(q.get()?, 7);
            /// q.task_done()?; // the one message put is processed
            /// q.join()?; // so join returns at once
            /// assert!(matches!(q.task_done(), Err(ipc_queue::Error::TaskDoneTooManyTimes)));
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn task_done(&self) -> crate::Result<()> {
                self.h.task_done()
            }

            /// Waits until every message put has been marked done (`JoinableQueue.join`).
            ///
            /// # Errors
            /// [`Error::PeerDied`](crate::Error::PeerDied) when all tasks are accounted for
            /// but some were lost with consumers killed while this call waited.
            ///
            /// # Peer death
            /// Messages held by dead consumers count as done (they are reclaimed while
            /// waiting). A consumer that dies after a successful get but before `task_done`
            /// leaves its task unfinished forever, as in Python: use `join_timeout`.
            ///
            /// # Example
            /// A producer waits until a consumer process has processed everything it put:
            /// ```
            #[doc = concat!("let q = ipc_queue::", stringify!($ty), "::<u64>::new(8)?;")]
            /// // SAFETY of the example: the child only uses the queue, then leaves with `_exit`.
            /// match unsafe { libc::fork() } {
            ///     0 => {
            ///         let ok = (0..3).all(|_| q.get().is_ok() && q.task_done().is_ok());
            ///         unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            ///     }
            ///     child => {
            ///         for i in 0..3u64 {
            ///             q.put(i)?;
            ///         }
            ///         q.join()?; // returns once the child has marked all three done
            ///         let mut status = 0;
            ///         unsafe { libc::waitpid(child, &mut status, 0) };
            ///         assert_eq!(status, 0);
            ///     }
            /// }
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn join(&self) -> crate::Result<()> {
                Ok(self.h.join(None)?)
            }

            /// `join`, waiting at most `timeout`.
            ///
            /// # Errors
            /// [`JoinTimeoutError::Timeout`](crate::JoinTimeoutError::Timeout) if tasks are
            /// still unfinished after `timeout` (it waited at least that long);
            /// [`JoinTimeoutError::PeerDied`](crate::JoinTimeoutError::PeerDied) as `join`'s
            /// `PeerDied`.
            ///
            /// # Peer death
            /// As `join`.
            pub fn join_timeout(
                &self,
                timeout: std::time::Duration,
            ) -> std::result::Result<(), crate::JoinTimeoutError> {
                self.h.join(Some(timeout))
            }

            /// The segment name of a named queue.
            pub fn name(&self) -> Option<&str> {
                self.h.name()
            }

            /// Removes the name now (creator only); open handles keep working.
            ///
            /// # Errors
            /// [`Error::Shm`](crate::Error::Shm) if `shm_unlink` fails.
            pub fn unlink(&mut self) -> crate::Result<()> {
                self.h.unlink()
            }
        }
    };
}
pub(crate) use shared_methods;

/// Handle passing: the same checks as [`Handle::open`], from a descriptor another process
/// sent (`ipc_shm::lowlevel::Segment::from_fd`, the validation path `open_named` takes too).
impl Handle {
    /// Rebuilds the ring from a descriptor, checking kind, element type and (when nonzero
    /// in `expected`) capacity and slot size.
    pub(crate) fn from_fd(
        expected: Layout,
        fd: std::os::fd::OwnedFd,
        min_slot: usize,
    ) -> Result<Handle> {
        let seg = Segment::from_fd(fd, &expected, |l| ring_payload_len(l, min_slot))?;
        Self::wrap_opened(seg)
    }

    /// The segment's descriptor.
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.ring.segment())
    }

    /// Gives up the mapping and keeps the descriptor (a creator's name is removed, as on
    /// drop).
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        self.ring.into_segment().into_fd()
    }
}
