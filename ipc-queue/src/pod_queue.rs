//! [`PodQueue`]: plain-data messages copied straight into the ring, no codec.

use std::borrow::Borrow;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use ipc_shm::lowlevel::sync::Deadline;
use ipc_shm::lowlevel::Layout;

use crate::error::{
    Error, GetTimeoutError, PutError, PutFail, PutTimeoutError, Result, TryGetError, TryPutError,
};
use crate::handle::{put_fail, slot_size_for, GetFail, Handle};
use crate::ring::{SlotReader, SlotWriter, MIN_SLOT};

const KIND: &str = "ipc_queue::PodQueue";
const KIND_VERSION: u32 = 7;

/// A bounded multi-producer multi-consumer queue of plain-data values in shared memory.
///
/// Each slot holds one `T` (`bytemuck::Pod`: any bit pattern is a valid value, so a peer
/// cannot make us read an invalid one). A put or get is one compare-and-swap on the position
/// word, a copy and a swap on the slot's state: no system call and no allocation unless it
/// has to wait. Waiting spins briefly, then sleeps on a futex until woken or the deadline.
///
/// Shared by `fork` ([`PodQueue::new`]) or by name ([`PodQueue::create_named`] +
/// [`PodQueue::open_named`]). A participant killed in the middle of a put or get does not
/// wedge the queue: its slot is reclaimed once it is seen dead (see the crate docs).
///
/// ```
/// use ipc_queue::PodQueue;
///
/// let q = PodQueue::<u64>::new(4)?;
/// q.put(1u64)?;
/// q.try_put(2u64).unwrap();
/// assert_eq!(q.len(), 2);
/// assert_eq!(q.get()?, 1);
/// assert_eq!(q.try_get()?, 2);
/// assert!(matches!(q.try_get(), Err(ipc_queue::TryGetError::Empty)));
/// # Ok::<(), ipc_queue::Error>(())
/// ```
pub struct PodQueue<T> {
    h: Handle,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for PodQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodQueue")
            .field("element", &std::any::type_name::<T>())
            .field("queue", &self.h)
            .finish()
    }
}

/// Settings for a [`PodQueue`] beyond its constructors' arguments (from
/// [`PodQueue::builder`]); the terminals are the constructors' words.
///
/// # Example
/// A named queue that an unrelated process opens by name (here the same process):
/// ```
/// use ipc_queue::PodQueue;
///
/// let name = format!("/ipc-queue-doc-pod-{}", std::process::id());
/// let q = PodQueue::<[u32; 4]>::builder().capacity(16).create_named(&name)?;
/// let other = PodQueue::<[u32; 4]>::open_named(&name)?; // checks element type and layout
/// q.put([1, 2, 3, 4])?;
/// assert_eq!(other.get()?, [1, 2, 3, 4]);
/// assert_eq!(other.capacity(), 16);
/// // The builder's `open_named` also checks the capacity.
/// assert!(PodQueue::<[u32; 4]>::builder().capacity(8).open_named(&name).is_err());
/// drop(other);
/// drop(q); // the creator's handle removes the name
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PodQueueBuilder<T> {
    capacity: usize,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> PodQueueBuilder<T> {
    /// The number of slots (default 1024; 1 to 2^30).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    fn layout(&self) -> Result<Layout> {
        let slot = slot_size_for(std::mem::size_of::<T>())
            .ok_or(Error::InvalidConfig("element too large"))?;
        Ok(Layout::of::<T>(KIND, KIND_VERSION)
            .with_capacity(self.capacity as u64)
            .with_slot_size(slot as u64))
    }

    /// Creates an anonymous queue, shared with processes forked after this call (as
    /// [`PodQueue::new`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity out of range; [`Error::Shm`] if the memory
    /// cannot be allocated.
    pub fn build(self) -> Result<PodQueue<T>> {
        let h = Handle::create(self.layout()?, None, MIN_SLOT, 0)?;
        Ok(PodQueue { h, _t: PhantomData })
    }

    /// Creates the named queue `name` (as [`PodQueue::create_named`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity out of range; [`Error::Shm`] if the segment
    /// cannot be created (`AlreadyExists` for a taken name).
    pub fn create_named(self, name: &str) -> Result<PodQueue<T>> {
        let h = Handle::create(self.layout()?, Some(name), MIN_SLOT, 0)?;
        Ok(PodQueue { h, _t: PhantomData })
    }

    /// Opens the named queue `name`, checking that it has exactly this capacity (and element
    /// type).
    ///
    /// # Errors
    /// As [`PodQueue::open_named`]; `LayoutMismatch` also for another capacity.
    pub fn open_named(self, name: &str) -> Result<PodQueue<T>> {
        let h = Handle::open(self.layout()?, name, MIN_SLOT)?;
        Ok(PodQueue { h, _t: PhantomData })
    }
}

#[inline(always)]
fn write_pod<T: Pod>(v: &T, mut w: SlotWriter<'_>) {
    // The slot holds a `T` (checked when the queue was made or opened).
    let _fits = w.store(0, bytemuck::bytes_of(v));
}

fn writer<T: Pod>(v: &T) -> impl FnMut(SlotWriter<'_>) -> Result<(), Infallible> + '_ {
    move |w| {
        write_pod(v, w);
        Ok(())
    }
}

fn reader<T: Pod>(r: SlotReader<'_>) -> Option<T> {
    r.read_pod::<T>(0)
}

/// Writes the `k`-th value of `rest` into a run's slot.
fn run_writer<T: Pod>(rest: &[T]) -> impl FnMut(u64, SlotWriter<'_>) + '_ {
    move |k, w| {
        if let Some(v) = usize::try_from(k).ok().and_then(|k| rest.get(k)) {
            write_pod(v, w);
        }
    }
}

/// How many of the `rest` values a run of `n` put (a run is never longer than asked for).
fn run_len(n: u64, rest: usize) -> usize {
    usize::try_from(n).map_or(rest, |n| n.min(rest))
}

/// How many messages a batch get appended to `out` (from `before`), or `Corrupted` if a slot
/// was too small for a `T`.
fn many_taken<T, E: GetFail>(out: &[T], before: usize, corrupted: bool) -> Result<usize, E> {
    if corrupted {
        return Err(E::failed(Error::Corrupted("slot smaller than the element")));
    }
    Ok(out.len() - before)
}

/// Appends each message of a run to `out`, noting a slot too small for a `T`.
fn run_reader<'o, T: Pod>(
    out: &'o mut Vec<T>,
    corrupted: &'o mut bool,
) -> impl FnMut(SlotReader<'_>) + 'o {
    move |r| match reader::<T>(r) {
        Some(v) => out.push(v),
        None => *corrupted = true,
    }
}

impl<T: Pod> PodQueue<T> {
    /// A queue of `capacity` slots, shared with processes forked after this call.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity of 0 or above 2^30; [`Error::Shm`] if the
    /// memory cannot be allocated.
    pub fn new(capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).build()
    }

    /// A queue of `capacity` slots in the named segment `name` (`/` and up to 254 more
    /// bytes), which unrelated processes open with [`open_named`](Self::open_named). Created
    /// `0600` with `O_EXCL`; this handle removes the name when it drops (or on
    /// [`unlink`](Self::unlink)), an opener never does.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity of 0 or above 2^30; [`Error::Shm`] if the
    /// segment cannot be created (`AlreadyExists` for a taken name).
    pub fn create_named(name: &str, capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).create_named(name)
    }

    /// A builder for settings beyond the constructors' arguments: the capacity, for
    /// [`PodQueueBuilder::open_named`] to check.
    pub fn builder() -> PodQueueBuilder<T> {
        PodQueueBuilder {
            capacity: 1024,
            _t: PhantomData,
        }
    }

    /// Opens the named queue `name` created by another process, with whatever capacity it
    /// has.
    ///
    /// # Errors
    /// [`Error::Shm`]: `NotFound`, `NotOwner`, `NotReady`, or `LayoutMismatch` if the segment
    /// is not a `PodQueue<T>` (another kind, element type or size).
    pub fn open_named(name: &str) -> Result<Self> {
        let slot = slot_size_for(std::mem::size_of::<T>())
            .ok_or(Error::InvalidConfig("element too large"))?;
        let expected = Layout::of::<T>(KIND, KIND_VERSION).with_slot_size(slot as u64);
        let h = Handle::open(expected, name, slot)?;
        Ok(PodQueue { h, _t: PhantomData })
    }

    /// The whole put when a slot is free at once (inlined into the caller), else
    /// [`PodQueue::put_until`] with the deadline `deadline()` (so a timeout reads the clock
    /// only when it may wait).
    #[inline(always)]
    fn put_with(&self, value: &T, deadline: impl FnOnce() -> Deadline) -> Result<(), PutFail> {
        if self.h.put_fast(|w| write_pod(value, w)) {
            return Ok(());
        }
        self.put_until(value, deadline())
    }

    #[inline(never)]
    fn put_until(&self, value: &T, deadline: Deadline) -> Result<(), PutFail> {
        match self.h.put(deadline, &mut writer(value)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(never)) => match never {},
            Err(stop) => Err(put_fail(stop)),
        }
    }

    /// Puts `value` (a `T` or a `&T`), waiting as long as the queue is full.
    ///
    /// # Errors
    /// [`PutError::Closed`] once the queue is closed; `Failed(_, Corrupted)` if the shared
    /// state is corrupted. The value comes back in both.
    ///
    /// # Peer death
    /// A consumer killed while holding a slot blocks nothing: once it is seen dead (checked
    /// every few milliseconds while waiting) its slot is freed and the message it held is
    /// counted in [`dropped_by_dead_peers`](Self::dropped_by_dead_peers).
    // Always inlined, so that the fast path's loads of the handle's pointers and geometry
    // are hoisted out of the caller's loop (measured: 0.73x -> 0.86x a bare Vyukov ring,
    // 1P->1C, near placement).
    #[inline(always)]
    pub fn put<B: Borrow<T>>(&self, value: B) -> Result<(), PutError<B>> {
        self.put_with(value.borrow(), Deadline::never)
            .map_err(|f| f.put(value))
    }

    /// Puts `value` if a slot is free now.
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Closed`], or `Failed(_, Corrupted)`; the value
    /// comes back.
    ///
    /// # Peer death
    /// A slot held by a dead consumer is reclaimed by a later call once its owner has been
    /// seen stuck for a few milliseconds; until then this returns `Full`.
    // Always inlined, so that the fast path's loads of the handle's pointers and geometry
    // are hoisted out of the caller's loop (measured: 0.73x -> 0.86x a bare Vyukov ring,
    // 1P->1C, near placement).
    #[inline(always)]
    pub fn try_put<B: Borrow<T>>(&self, value: B) -> Result<(), TryPutError<B>> {
        self.put_with(value.borrow(), Deadline::expired)
            .map_err(|f| f.try_put(value))
    }

    /// Puts `value`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`] (a blocked call wakes when
    /// the queue is closed), or `Failed(_, Corrupted)`; the value comes back.
    ///
    /// # Peer death
    /// As [`put`](Self::put); a dead consumer never makes this wait past `timeout`.
    #[inline]
    pub fn put_timeout<B: Borrow<T>>(
        &self,
        value: B,
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<B>> {
        self.put_with(value.borrow(), || Deadline::after(timeout))
            .map_err(|f| f.put_timeout(value))
    }

    /// The whole get when a message is there at once (inlined into the caller), else
    /// [`PodQueue::get_until`] with the deadline `deadline()`; `E` is the caller's error type.
    #[inline(always)]
    fn get_with<E: GetFail>(&self, deadline: impl FnOnce() -> Deadline) -> Result<T, E> {
        match self.h.get_fast(reader::<T>) {
            Some(Some(v)) => Ok(v),
            Some(None) => Err(E::failed(Error::Corrupted("slot smaller than the element"))),
            None => self.get_until(deadline()),
        }
    }

    #[inline(never)]
    fn get_until<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        match self.h.get(deadline, &mut reader::<T>) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(E::failed(Error::Corrupted("slot smaller than the element"))),
            Err(stop) => Err(E::stop(stop)),
        }
    }

    /// Takes the oldest message, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// [`Error::Closed`] once the queue is closed and drained (a blocked call wakes when it
    /// is closed); [`Error::Corrupted`].
    ///
    /// # Peer death
    /// A producer killed between claiming a slot and publishing it leaves a slot that is
    /// skipped once it is seen dead (checked every few milliseconds while waiting); later
    /// messages flow on. A killed peer never makes this hang.
    // Always inlined, so that the fast path's loads of the handle's pointers and geometry
    // are hoisted out of the caller's loop (measured: 0.73x -> 0.86x a bare Vyukov ring,
    // 1P->1C, near placement).
    #[inline(always)]
    pub fn get(&self) -> Result<T> {
        self.get_with::<Error>(Deadline::never)
    }

    /// Takes the oldest message if there is one now; never sleeps.
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if nothing is queued now, [`TryGetError::Closed`] once the
    /// queue is closed and drained, `Failed(Corrupted)`.
    ///
    /// # Peer death
    /// A slot claimed by a dead producer reads as empty until a call has seen it stuck for a
    /// few milliseconds; then it is skipped.
    // Always inlined, so that the fast path's loads of the handle's pointers and geometry
    // are hoisted out of the caller's loop (measured: 0.73x -> 0.86x a bare Vyukov ring,
    // 1P->1C, near placement).
    #[inline(always)]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(Deadline::expired)
    }

    /// Takes the oldest message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] if nothing came (it waited at least `timeout`),
    /// [`GetTimeoutError::Closed`] once the queue is closed and drained (also wakes a waiting
    /// call), `Failed(Corrupted)`.
    ///
    /// # Peer death
    /// As [`get`](Self::get); a dead producer never makes this wait past `timeout`.
    #[inline]
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(|| Deadline::after(timeout))
    }

    /// Puts `values` in order, as many per claim as there are free slots, until all are put
    /// or the ring stops them: how many were put, and why it stopped (`None`: all put).
    fn put_many_until(&self, values: &[T], deadline: Deadline) -> (usize, Option<PutFail>) {
        let mut done = 0;
        while done < values.len() {
            let rest = &values[done..];
            match self
                .h
                .put_run(rest.len() as u64, deadline, &mut run_writer(rest))
            {
                Ok(n) => done += run_len(n, rest.len()),
                Err(stop) => return (done, Some(put_fail(stop))),
            }
        }
        (done, None)
    }

    /// Puts every value of `values`, in order, waiting as long as the queue is full. Each
    /// claim takes as many consecutive slots as are free (up to all the values left) with
    /// one compare-and-swap, and every message is published as soon as it is written, so
    /// consumers see them in order and never a partial one; with another producer putting
    /// at the same time, their messages may fall between runs of these.
    ///
    /// # Errors
    /// [`PutError::Closed`] once the queue is closed, `Failed(_, Corrupted)`: the values not
    /// put come back (a suffix of `values`; those before it were put).
    ///
    /// # Peer death
    /// As [`put`](Self::put), per message: a consumer killed holding a slot is reclaimed, and
    /// a producer killed in the middle of a run leaves the messages it published
    /// delivered and the rest of its run skipped.
    ///
    /// ```
    /// use ipc_queue::PodQueue;
    ///
    /// let q = PodQueue::<u64>::new(8)?;
    /// q.put_many(&[1, 2, 3])?;
    /// let mut got = Vec::new();
    /// assert_eq!(q.get_many(&mut got, 64)?, 3);
    /// assert_eq!(got, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_many<'v>(&self, values: &'v [T]) -> Result<(), PutError<&'v [T]>> {
        match self.put_many_until(values, Deadline::never()) {
            (_, None) => Ok(()),
            (done, Some(f)) => Err(f.put(&values[done..])),
        }
    }

    /// Puts as many of `values`, in order, as there are free slots now; returns how many
    /// (a prefix of `values`: all of them, or fewer when the queue filled up).
    ///
    /// # Errors
    /// When none was put: [`TryPutError::Full`], [`TryPutError::Closed`], or
    /// `Failed(_, Corrupted)`, with `values` back.
    ///
    /// # Peer death
    /// As [`try_put`](Self::try_put).
    pub fn try_put_many<'v>(&self, values: &'v [T]) -> Result<usize, TryPutError<&'v [T]>> {
        match self.put_many_until(values, Deadline::expired()) {
            (done, None) => Ok(done),
            (0, Some(f)) if !values.is_empty() => Err(f.try_put(values)),
            (done, Some(_)) => Ok(done),
        }
    }

    /// Puts every value of `values` in order (as [`put_many`](Self::put_many)), waiting at
    /// most `timeout` in all.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`], or `Failed(_, Corrupted)`:
    /// the values not put come back (a suffix of `values`; those before it were put).
    ///
    /// # Peer death
    /// As [`put_timeout`](Self::put_timeout).
    pub fn put_many_timeout<'v>(
        &self,
        values: &'v [T],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'v [T]>> {
        match self.put_many_until(values, Deadline::after(timeout)) {
            (_, None) => Ok(()),
            (done, Some(f)) => Err(f.put_timeout(&values[done..])),
        }
    }

    /// Takes up to `max` messages queued from the head in one claim and appends them to
    /// `out` in order, waiting until there is at least one; how many. `max` 0 returns 0.
    fn get_many_until<E: GetFail>(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Deadline,
    ) -> Result<usize, E> {
        if max == 0 {
            return Ok(0);
        }
        let before = self.reserve_many(out, max);
        let mut corrupted = false;
        self.h
            .get_run(max as u64, deadline, &mut run_reader(out, &mut corrupted))
            .map_err(E::stop)?;
        many_taken(out, before, corrupted)
    }

    /// Room in `out` for a batch get of up to `max` (bounded by the capacity); `out`'s
    /// length before it.
    fn reserve_many(&self, out: &mut Vec<T>, max: usize) -> usize {
        out.reserve(max.min(self.capacity()));
        out.len()
    }

    /// Takes up to `max` of the oldest messages with one claim, appending them to `out` in
    /// order; waits as long as the queue is empty, then takes what is there (at least one,
    /// at most `max`). Returns how many were taken.
    ///
    /// # Errors
    /// As [`get`](Self::get): [`Error::Closed`] once the queue is closed and drained,
    /// [`Error::Corrupted`].
    ///
    /// # Peer death
    /// As [`get`](Self::get). A consumer killed in the middle of a run loses the messages
    /// of its run it had not taken yet; they are counted in
    /// [`dropped_by_dead_peers`](Self::dropped_by_dead_peers).
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize> {
        self.get_many_until::<Error>(out, max, Deadline::never())
    }

    /// Takes up to `max` of the messages queued now, appending them to `out` in order;
    /// never sleeps. Returns how many (at least one).
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get): [`TryGetError::Empty`] if nothing is queued,
    /// [`TryGetError::Closed`] once closed and drained, `Failed(Corrupted)`.
    ///
    /// # Peer death
    /// As [`try_get`](Self::try_get).
    pub fn try_get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, TryGetError> {
        self.get_many_until(out, max, Deadline::expired())
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout` for the first message.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Peer death
    /// As [`get_timeout`](Self::get_timeout).
    pub fn get_many_timeout(
        &self,
        out: &mut Vec<T>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, GetTimeoutError> {
        self.get_many_until(out, max, Deadline::after(timeout))
    }
}

crate::handle::shared_methods!(PodQueue);

/// Async forms (feature `async`): runtime-agnostic futures, served by one futex waiter thread
/// per process however many tasks wait (see [`ipc_shm::lowlevel::sync::FutexWait`]). Each returns the
/// error type of the blocking form it mirrors.
///
/// They are cancel-safe: a future dropped before it completes has put or taken nothing (a
/// batch put: a prefix of its values, each run whole; a batch get: only what is already in
/// its `Vec`), and leaves no slot claimed and no waiter registered. So a runtime's timeout
/// (`tokio::time::timeout`) works around them as well as the `_timeout_async` forms, which
/// need no runtime timer. Dead peers are detected as in the blocking calls.
#[cfg(feature = "async")]
impl<T: Pod> PodQueue<T> {
    async fn put_until_async(&self, value: &T, deadline: Deadline) -> Result<(), PutFail> {
        if self.h.put_fast(|w| write_pod(value, w)) {
            return Ok(());
        }
        match self.h.put_async(deadline, &mut writer(value)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(never)) => match never {},
            Err(stop) => Err(put_fail(stop)),
        }
    }

    async fn get_until_async<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        let got = match self.h.get_fast(reader::<T>) {
            Some(got) => got,
            None => self
                .h
                .get_async(deadline, &mut reader::<T>)
                .await
                .map_err(E::stop)?,
        };
        got.ok_or_else(|| E::failed(Error::Corrupted("slot smaller than the element")))
    }

    /// [`put`](Self::put) as a future: puts `value`, waiting as long as the queue is full.
    ///
    /// # Errors
    /// As [`put`](Self::put); the value comes back.
    ///
    /// ```
    /// # fn main() -> Result<(), ipc_queue::Error> {
    /// use ipc_queue::PodQueue;
    ///
    /// let q = PodQueue::<u64>::new(4)?;
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(async {
    ///     q.put_async(7).await?;
    ///     assert_eq!(q.get_async().await?, 7);
    ///     Ok::<_, ipc_queue::Error>(())
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_async<B: Borrow<T>>(&self, value: B) -> Result<(), PutError<B>> {
        match self
            .put_until_async(value.borrow(), Deadline::never())
            .await
        {
            Ok(()) => Ok(()),
            Err(f) => Err(f.put(value)),
        }
    }

    /// [`put_timeout`](Self::put_timeout) as a future.
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout); the value comes back.
    pub async fn put_timeout_async<B: Borrow<T>>(
        &self,
        value: B,
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<B>> {
        match self
            .put_until_async(value.borrow(), Deadline::after(timeout))
            .await
        {
            Ok(()) => Ok(()),
            Err(f) => Err(f.put_timeout(value)),
        }
    }

    /// [`get`](Self::get) as a future: takes the oldest message, waiting as long as the
    /// queue is empty.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn get_async(&self) -> Result<T> {
        self.get_until_async::<Error>(Deadline::never()).await
    }

    /// [`get_timeout`](Self::get_timeout) as a future.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    pub async fn get_timeout_async(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_until_async(Deadline::after(timeout)).await
    }

    /// [`PodQueue::put_many_until`] as a future.
    async fn put_many_until_async(
        &self,
        values: &[T],
        deadline: Deadline,
    ) -> (usize, Option<PutFail>) {
        let mut done = 0;
        while done < values.len() {
            let rest = &values[done..];
            match self
                .h
                .put_run_async(rest.len() as u64, deadline, &mut run_writer(rest))
                .await
            {
                Ok(n) => done += run_len(n, rest.len()),
                Err(stop) => return (done, Some(put_fail(stop))),
            }
        }
        (done, None)
    }

    /// [`PodQueue::get_many_until`] as a future.
    async fn get_many_until_async<E: GetFail>(
        &self,
        out: &mut Vec<T>,
        max: usize,
        deadline: Deadline,
    ) -> Result<usize, E> {
        if max == 0 {
            return Ok(0);
        }
        let before = self.reserve_many(out, max);
        let mut corrupted = false;
        self.h
            .get_run_async(max as u64, deadline, &mut run_reader(out, &mut corrupted))
            .await
            .map_err(E::stop)?;
        many_taken(out, before, corrupted)
    }

    /// [`put_many`](Self::put_many) as a future. Dropped before it completes, it may have
    /// put a prefix of `values` (each run it claimed is put whole).
    ///
    /// # Errors
    /// As [`put_many`](Self::put_many): the values not put come back.
    pub async fn put_many_async<'v>(&self, values: &'v [T]) -> Result<(), PutError<&'v [T]>> {
        match self.put_many_until_async(values, Deadline::never()).await {
            (_, None) => Ok(()),
            (done, Some(f)) => Err(f.put(&values[done..])),
        }
    }

    /// [`put_many_timeout`](Self::put_many_timeout) as a future (see
    /// [`put_many_async`](Self::put_many_async)).
    ///
    /// # Errors
    /// As [`put_many_timeout`](Self::put_many_timeout).
    pub async fn put_many_timeout_async<'v>(
        &self,
        values: &'v [T],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'v [T]>> {
        match self
            .put_many_until_async(values, Deadline::after(timeout))
            .await
        {
            (_, None) => Ok(()),
            (done, Some(f)) => Err(f.put_timeout(&values[done..])),
        }
    }

    /// [`get_many`](Self::get_many) as a future: what it takes is in `out` as soon as it is
    /// taken, so dropping the future loses nothing.
    ///
    /// # Errors
    /// As [`get_many`](Self::get_many).
    pub async fn get_many_async(&self, out: &mut Vec<T>, max: usize) -> Result<usize> {
        self.get_many_until_async::<Error>(out, max, Deadline::never())
            .await
    }

    /// [`get_many_timeout`](Self::get_many_timeout) as a future.
    ///
    /// # Errors
    /// As [`get_many_timeout`](Self::get_many_timeout).
    pub async fn get_many_timeout_async(
        &self,
        out: &mut Vec<T>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, GetTimeoutError> {
        self.get_many_until_async(out, max, Deadline::after(timeout))
            .await
    }
}

/// Single-process round trips through both slot layouts (packed arrays for small slots,
/// inline words for large ones), wrap-around, a full and an empty ring, and close: run under
/// valgrind by `.ci/valgrind.sh` with the other unit tests.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn round_trips<T: Pod + PartialEq + std::fmt::Debug>(make: impl Fn(u64) -> T) {
        let q = PodQueue::<T>::new(4).unwrap();
        // Many laps of a small ring: every slot wraps many times.
        for i in 0..1000u64 {
            q.put(make(i)).unwrap();
            if i % 3 == 0 {
                q.put(make(i + 1_000_000)).unwrap();
                assert_eq!(q.get().unwrap(), make(i));
                assert_eq!(q.get().unwrap(), make(i + 1_000_000));
            } else {
                assert_eq!(q.try_get().unwrap(), make(i));
            }
        }
        assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
        for i in 0..4 {
            q.try_put(make(i)).unwrap();
        }
        assert!(matches!(q.try_put(make(9)), Err(TryPutError::Full(_))));
        q.close();
        assert!(q.try_put(make(9)).is_err());
        for i in 0..4 {
            assert_eq!(q.get().unwrap(), make(i));
        }
        assert!(matches!(q.get(), Err(Error::Closed)));
        assert_eq!(q.dropped_by_dead_peers(), 0);
    }

    #[test]
    fn packed_layout_round_trips() {
        round_trips(|i| i);
    }

    #[test]
    fn inline_layout_round_trips() {
        round_trips(|i| {
            let mut a = [0u64; 8];
            a[0] = i;
            a[7] = !i;
            a
        });
    }
}

impl<T> std::os::fd::AsFd for PodQueue<T> {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`), which
    /// rebuilds the queue with [`PodQueue::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.h.as_fd()
    }
}

/// Handle passing: a queue travels to an unrelated process as a descriptor.
impl<T: Pod> PodQueue<T> {
    /// Rebuilds a queue from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`PodQueue::open_named`] checks a name (a `PodQueue<u32>` descriptor opened
    /// as a `PodQueue<u64>` or a `Queue` is `LayoutMismatch`), with whatever capacity it has.
    /// The rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// [`Error::Shm`]: `NotMemoryFile` (a pipe, a socket, ...), `NotOwner`, `NotReady`,
    /// `LayoutMismatch`, `ForeignPidNamespace`, `Io`; [`Error::Corrupted`] for a ring
    /// geometry no creator writes. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let slot = slot_size_for(std::mem::size_of::<T>())
            .ok_or(Error::InvalidConfig("element too large"))?;
        let expected = Layout::of::<T>(KIND, KIND_VERSION).with_slot_size(slot as u64);
        let h = Handle::from_fd(expected, fd, slot)?;
        Ok(PodQueue { h, _t: PhantomData })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now, as
    /// on drop; the queue lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.h.into_fd()
    }
}
