//! [`Queue`]: any `serde` type, postcard-encoded straight into inline slots.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use ipc_shm::lowlevel::sync::Deadline;
use ipc_shm::lowlevel::Layout;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, INLINE, LEN_WORD};
use crate::error::{
    Error, GetTimeoutError, PutError, PutFail, PutTimeoutError, Result, TryGetError, TryPutError,
};
use crate::handle::{put_fail, slot_size_for, GetFail, Handle};
use crate::ring::{SlotReader, SlotWriter, SpanReader, SpanWriter, MIN_SLOT};

const KIND: &str = "ipc_queue::Queue";
const KIND_VERSION: u32 = 7;
const _: () = assert!(MIN_SLOT >= LEN_WORD);
/// The default `max_message_size`.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256;

/// A bounded multi-producer multi-consumer queue of `serde` values in shared memory, the
/// counterpart of Python's `multiprocessing.Queue`.
///
/// Each slot holds a length word and up to `max_message_size` bytes (default 256) of
/// [postcard](https://docs.rs/postcard) encoding, written straight into the claimed slot.
/// A message that does not fit is refused with `Failed(value, Error::TooLarge { .. })`, and the
/// queue stays usable. A get copies the bytes out of the slot, releases it, and decodes the
/// copy, so nothing a peer may write is decoded in place; messages up to 256 bytes are
/// copied to the stack (no allocation besides what `T` itself needs).
///
/// A `Queue<Vec<u8>>` writes and reads postcard's bytes for the vector (its varint length,
/// then the bytes) with one copy each way, instead of serde's call per element; the bytes in
/// the slot are the same. Byte fields inside other types go through serde one byte at a
/// time; mark them `#[serde(with = "serde_bytes")]` for postcard's bulk path.
///
/// Everything else (sharing modes, blocking, peer death, `close`, `join`) is as
/// [`PodQueue`](crate::PodQueue): both run the same ring.
///
/// ```
/// use ipc_queue::Queue;
///
/// let q = Queue::<(String, u32)>::builder().capacity(8).max_message_size(64).build()?;
/// q.put(&("job".to_string(), 7))?;
/// assert_eq!(q.get()?, ("job".to_string(), 7));
/// let big = ("x".repeat(100), 0);
/// let err = q.try_put(&big).unwrap_err();
/// assert!(matches!(err, ipc_queue::TryPutError::Failed(_, ipc_queue::Error::TooLarge { .. })));
/// assert_eq!(err.into_inner(), &big);
/// # Ok::<(), ipc_queue::Error>(())
/// ```
pub struct Queue<T> {
    h: Handle,
    /// The largest encoded message.
    max: usize,
    /// Bytes of payload per slot.
    slot: usize,
    /// Messages may be larger than a slot (`max` plus the length word exceeds `slot`).
    spans: bool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("element", &std::any::type_name::<T>())
            .field("max_message_size", &self.max)
            .field("slot_size", &self.slot)
            .field("queue", &self.h)
            .finish()
    }
}

/// Settings for a [`Queue`] beyond its constructors' arguments (from [`Queue::builder`]):
/// capacity and message size; the terminals are the constructors' words.
///
/// # Example
/// ```
/// use ipc_queue::{Error, Queue, TryPutError};
///
/// let q = Queue::<String>::builder().capacity(2).max_message_size(16).build()?;
/// assert!(q.max_message_size() >= 16);
/// q.try_put("short".to_string())?;
/// // A message whose encoding does not fit a slot is refused and handed back.
/// match q.try_put("x".repeat(100)) {
///     Err(TryPutError::Failed(value, Error::TooLarge { .. })) => assert_eq!(value.len(), 100),
///     other => panic!("expected TooLarge, got {other:?}"),
/// }
/// assert_eq!(q.get()?, "short");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct QueueBuilder<T> {
    capacity: usize,
    max_message_size: usize,
    slot_size: Option<usize>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The number of slots (default 1024; 1 to 2^30).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The largest encoded message, in bytes (default 256). Without
    /// [`slot_size`](Self::slot_size), every slot holds this plus a 4-byte length word,
    /// rounded up to 8 bytes, so the real limit may be a few bytes more
    /// ([`Queue::max_message_size`] tells).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Bytes of payload per slot (rounded up to 8), when messages may be larger than a slot:
    /// a message whose encoding (plus a 4-byte length word) does not fit one slot spans as
    /// many consecutive slots as it needs, claimed together, up to `max_message_size` (which
    /// must fit in `capacity` slots). So a queue of small slots takes the occasional big
    /// message without every slot being big. A spanning message costs a wait for that many
    /// free slots in a row, and [`Queue::len`] counts the slots it takes.
    ///
    /// ```
    /// use ipc_queue::Queue;
    ///
    /// // 64 slots of 4 KiB take messages up to 200 KiB.
    /// let q = Queue::<Vec<u8>>::builder()
    ///     .capacity(64)
    ///     .slot_size(4096)
    ///     .max_message_size(200 << 10)
    ///     .build()?;
    /// let big = vec![7u8; 100_000];
    /// q.put(&big)?;
    /// q.put(vec![1, 2, 3])?;
    /// assert_eq!(q.get()?, big);
    /// assert_eq!(q.get()?, [1, 2, 3]);
    /// # Ok::<(), ipc_queue::Error>(())
    /// ```
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = Some(bytes);
        self
    }

    /// The slot size in the header, and the largest message to record in the segment (0:
    /// one slot's payload).
    fn geometry(&self) -> Result<(usize, u64)> {
        let too_large = Error::InvalidConfig("max_message_size too large");
        match self.slot_size {
            None => Ok((
                self.max_message_size
                    .checked_add(LEN_WORD)
                    .and_then(slot_size_for)
                    .ok_or(too_large)?,
                0,
            )),
            Some(bytes) => {
                let slot =
                    slot_size_for(bytes).ok_or(Error::InvalidConfig("slot_size too large"))?;
                let fits = self
                    .max_message_size
                    .checked_add(LEN_WORD)
                    .zip(self.capacity.checked_mul(slot))
                    .is_some_and(|(need, ring)| need <= ring);
                if !fits || u32::try_from(self.max_message_size).is_err() {
                    return Err(Error::InvalidConfig(
                        "max_message_size must fit in capacity slots (and below 4 GiB)",
                    ));
                }
                Ok((slot, self.max_message_size as u64))
            }
        }
    }

    fn layout(&self) -> Result<Layout> {
        let (slot, _) = self.geometry()?;
        Ok(Layout::of::<T>(KIND, KIND_VERSION)
            .with_capacity(self.capacity as u64)
            .with_slot_size(slot as u64))
    }

    /// Creates an anonymous queue, shared with processes forked after this call (as
    /// [`Queue::new`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity or message size out of range; [`Error::Shm`]
    /// if the memory cannot be allocated.
    pub fn build(self) -> Result<Queue<T>> {
        let (_, max) = self.geometry()?;
        Queue::wrap(Handle::create(self.layout()?, None, MIN_SLOT, max)?)
    }

    /// Creates the named queue `name` (as [`Queue::create_named`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity or message size out of range; [`Error::Shm`]
    /// if the segment cannot be created (`AlreadyExists` for a taken name).
    pub fn create_named(self, name: &str) -> Result<Queue<T>> {
        let (_, max) = self.geometry()?;
        Queue::wrap(Handle::create(self.layout()?, Some(name), MIN_SLOT, max)?)
    }

    /// Opens the named queue `name`, checking that it has exactly this capacity, slot size
    /// and message size (and element type).
    ///
    /// # Errors
    /// As [`Queue::open_named`]; `LayoutMismatch` also for another capacity, slot size or
    /// message size.
    pub fn open_named(self, name: &str) -> Result<Queue<T>> {
        let (slot, max) = self.geometry()?;
        let q = Queue::wrap(Handle::open(self.layout()?, name, MIN_SLOT)?)?;
        let expected = if max == 0 {
            slot - LEN_WORD
        } else {
            self.max_message_size
        };
        if q.max != expected {
            return Err(Error::Shm(ipc_shm::Error::LayoutMismatch {
                field: "max_message_size",
                expected: expected as u64,
                found: q.max as u64,
            }));
        }
        Ok(q)
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Wraps a ring, with the message size its creator recorded (checked: it must fit the
    /// ring).
    fn wrap(h: Handle) -> Result<Queue<T>> {
        let slot = h.slot_payload();
        let max = match usize::try_from(h.max_message()) {
            Ok(0) => slot - LEN_WORD,
            Ok(max)
                if max
                    .checked_add(LEN_WORD)
                    .is_some_and(|need| need <= h.capacity().saturating_mul(slot))
                    && u32::try_from(max).is_ok() =>
            {
                max
            }
            _ => return Err(Error::Corrupted("max_message_size larger than the ring")),
        };
        Ok(Queue {
            h,
            max,
            slot,
            spans: max + LEN_WORD > slot,
            _t: PhantomData,
        })
    }

    /// The slots a message of `len` encoded bytes takes (at least one).
    fn slots_for(&self, len: usize) -> u64 {
        (len.saturating_add(LEN_WORD).div_ceil(self.slot)).max(1) as u64
    }

    /// A queue of `capacity` slots of the default message size, shared with processes forked
    /// after this call.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity of 0 or above 2^30; [`Error::Shm`] if the
    /// memory cannot be allocated.
    pub fn new(capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).build()
    }

    /// A queue of `capacity` slots of the default message size in the named segment `name`
    /// (`/` and up to 254 more bytes), which unrelated processes open with
    /// [`open_named`](Self::open_named). Created `0600` with `O_EXCL`; this handle removes
    /// the name when it drops (or on [`unlink`](Self::unlink)), an opener never does.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity of 0 or above 2^30; [`Error::Shm`] if the
    /// segment cannot be created (`AlreadyExists` for a taken name).
    pub fn create_named(name: &str, capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).create_named(name)
    }

    /// A builder for settings beyond the constructors' arguments: message size (and the
    /// capacity, for [`QueueBuilder::open_named`] to check).
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            capacity: 1024,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            slot_size: None,
            _t: PhantomData,
        }
    }

    /// Opens the named queue `name` created by another process, with whatever capacity and
    /// message size it has.
    ///
    /// # Errors
    /// [`Error::Shm`]: `NotFound`, `NotOwner`, `NotReady`, or `LayoutMismatch` if the segment
    /// is not a `Queue<T>`.
    pub fn open_named(name: &str) -> Result<Self> {
        let expected = Layout::of::<T>(KIND, KIND_VERSION);
        Queue::wrap(Handle::open(expected, name, MIN_SLOT)?)
    }

    /// The largest encoded message the queue takes (one slot's payload, unless the queue
    /// was built with a [`slot_size`](QueueBuilder::slot_size)).
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    fn put_until(&self, value: &T, deadline: Deadline) -> Result<(), PutFail> {
        // Size first (no allocation, no copy): a message that cannot fit fails at once, even
        // on a full queue, and never takes a slot.
        let len = codec::encoded_len(value).map_err(|e| PutFail::Failed(Error::encode(e)))?;
        if len > self.max {
            return Err(PutFail::Failed(Error::TooLarge { len, max: self.max }));
        }
        let put = if len + LEN_WORD <= self.slot {
            self.h.put(deadline, &mut |w: SlotWriter<'_>| {
                codec::encode_into(value, len, w)
            })
        } else {
            let k = self.slots_for(len);
            self.h
                .put_span(k, deadline, &mut |w: SpanWriter<'_, '_, _>| {
                    codec::encode_into(value, len, w)
                })
        };
        match put {
            Ok(Ok(())) => Ok(()),
            // The slot became a tombstone that consumers skip.
            Ok(Err(e)) => Err(PutFail::Failed(e)),
            Err(stop) => Err(put_fail(stop)),
        }
    }

    /// Puts `value` (a `T` or a `&T`), waiting as long as the queue is full.
    ///
    /// # Errors
    /// [`PutError::Closed`]; `Failed(_, TooLarge)` if its encoding exceeds
    /// [`max_message_size`](Self::max_message_size) (checked before waiting);
    /// `Failed(_, Encode | Corrupted)`. The value comes back.
    ///
    /// # Peer death
    /// As [`PodQueue::put`](crate::PodQueue::put).
    pub fn put<B: Borrow<T>>(&self, value: B) -> Result<(), PutError<B>> {
        self.put_until(value.borrow(), Deadline::never())
            .map_err(|f| f.put(value))
    }

    /// Puts `value` if a slot is free now.
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Closed`],
    /// `Failed(_, TooLarge | Encode | Corrupted)`; the value comes back.
    ///
    /// # Peer death
    /// As [`PodQueue::try_put`](crate::PodQueue::try_put).
    pub fn try_put<B: Borrow<T>>(&self, value: B) -> Result<(), TryPutError<B>> {
        self.put_until(value.borrow(), Deadline::expired())
            .map_err(|f| f.try_put(value))
    }

    /// Puts `value`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] (it waited at least `timeout`),
    /// [`PutTimeoutError::Closed`], `Failed(_, TooLarge | Encode | Corrupted)`; the value
    /// comes back.
    ///
    /// # Peer death
    /// As [`PodQueue::put_timeout`](crate::PodQueue::put_timeout).
    pub fn put_timeout<B: Borrow<T>>(
        &self,
        value: B,
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<B>> {
        self.put_until(value.borrow(), Deadline::after(timeout))
            .map_err(|f| f.put_timeout(value))
    }

    /// The slots the message whose head is in `r` takes (1 for a length the queue does not
    /// take: its copy then reports it).
    fn span_of(&self, r: SlotReader<'_>) -> u64 {
        match r.read_pod::<u32>(0).map(|len| len as usize) {
            Some(len) if len <= self.max => self.slots_for(len),
            _ => 1,
        }
    }

    fn get_until<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        let mut inline = [0u8; INLINE];
        let mut heap = Vec::new();
        let got = if self.spans {
            self.h.get_message(
                deadline,
                &|r: SlotReader<'_>| self.span_of(r),
                &mut |r: SpanReader<'_, '_, _>| codec::copy_out::<T>(r, &mut inline, &mut heap),
            )
        } else {
            self.h.get(deadline, &mut |r: SlotReader<'_>| {
                codec::copy_out::<T>(r, &mut inline, &mut heap)
            })
        };
        let copied = match got {
            Ok(Ok(copied)) => copied,
            Ok(Err(e)) => return Err(E::failed(e)),
            Err(stop) => return Err(E::stop(stop)),
        };
        codec::decode(copied, &inline, heap).map_err(E::failed)
    }

    /// Takes the oldest message, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// [`Error::Closed`] once closed and drained (a blocked call wakes when it is closed);
    /// [`Error::Decode`] if the bytes are not a `T`; [`Error::Corrupted`] for a length word
    /// larger than the slot. In both of the latter the message is consumed and the queue
    /// stays usable.
    ///
    /// # Peer death
    /// As [`PodQueue::get`](crate::PodQueue::get).
    pub fn get(&self) -> Result<T> {
        self.get_until::<Error>(Deadline::never())
    }

    /// Takes the oldest message if there is one now; never sleeps.
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if nothing is queued now, [`TryGetError::Closed`] once closed
    /// and drained, `Failed(Decode | Corrupted)` as [`get`](Self::get).
    ///
    /// # Peer death
    /// As [`PodQueue::try_get`](crate::PodQueue::try_get).
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_until(Deadline::expired())
    }

    /// Takes the oldest message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] if nothing came (it waited at least `timeout`),
    /// [`GetTimeoutError::Closed`] once closed and drained (also wakes a waiting call),
    /// `Failed(Decode | Corrupted)` as [`get`](Self::get).
    ///
    /// # Peer death
    /// As [`PodQueue::get_timeout`](crate::PodQueue::get_timeout).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_until(Deadline::after(timeout))
    }
}

crate::handle::shared_methods!(Queue);

/// Async forms (feature `async`), as [`PodQueue`'s](crate::PodQueue): runtime-agnostic,
/// cancel-safe futures served by one futex waiter thread per process. A message is encoded
/// into its slot only once a slot is free, so a cancelled put encoded nothing into the queue.
#[cfg(feature = "async")]
impl<T: Serialize + DeserializeOwned> Queue<T> {
    async fn put_until_async(&self, value: &T, deadline: Deadline) -> Result<(), PutFail> {
        let len = codec::encoded_len(value).map_err(|e| PutFail::Failed(Error::encode(e)))?;
        if len > self.max {
            return Err(PutFail::Failed(Error::TooLarge { len, max: self.max }));
        }
        let put = if len + LEN_WORD <= self.slot {
            let mut write = |w: SlotWriter<'_>| codec::encode_into(value, len, w);
            self.h.put_async(deadline, &mut write).await
        } else {
            let mut write = |w: SpanWriter<'_, '_, _>| codec::encode_into(value, len, w);
            self.h
                .put_span_async(self.slots_for(len), deadline, &mut write)
                .await
        };
        match put {
            Ok(Ok(())) => Ok(()),
            // The slot became a tombstone that consumers skip.
            Ok(Err(e)) => Err(PutFail::Failed(e)),
            Err(stop) => Err(put_fail(stop)),
        }
    }

    async fn get_until_async<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        let mut inline = [0u8; INLINE];
        let mut heap = Vec::new();
        let got = if self.spans {
            let span = |r: SlotReader<'_>| self.span_of(r);
            let mut read =
                |r: SpanReader<'_, '_, _>| codec::copy_out::<T>(r, &mut inline, &mut heap);
            self.h.get_message_async(deadline, &span, &mut read).await
        } else {
            let mut read = |r: SlotReader<'_>| codec::copy_out::<T>(r, &mut inline, &mut heap);
            self.h.get_async(deadline, &mut read).await
        };
        let copied = match got {
            Ok(Ok(copied)) => copied,
            Ok(Err(e)) => return Err(E::failed(e)),
            Err(stop) => return Err(E::stop(stop)),
        };
        codec::decode(copied, &inline, heap).map_err(E::failed)
    }

    /// [`put`](Self::put) as a future: puts `value`, waiting as long as the queue is full.
    ///
    /// # Errors
    /// As [`put`](Self::put); the value comes back.
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
}

impl<T> std::os::fd::AsFd for Queue<T> {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`), which
    /// rebuilds the queue with [`Queue::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.h.as_fd()
    }
}

/// Handle passing: a queue travels to an unrelated process as a descriptor.
impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Rebuilds a queue from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Queue::open_named`] checks a name (another message type or a `PodQueue`
    /// is `LayoutMismatch`), with whatever capacity and message size it has. The rebuilt
    /// handle has no name and removes nothing when dropped.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use ipc_queue::Queue;
    ///
    /// let q = Queue::<String>::new(8)?;
    /// // In a real program the other end of this connection is another process.
    /// let (mut here, mut there) = ipc_pipe::duplex()?;
    /// here.send_fds(&[q.as_fd()])?;
    /// let fd = there.recv_fds()?.pop().expect("one descriptor");
    /// let same = Queue::<String>::from_fd(fd)?;
    /// q.put("hello".to_string())?;
    /// assert_eq!(same.get()?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Shm`]: `NotMemoryFile` (a pipe, a socket, ...), `NotOwner`, `NotReady`,
    /// `LayoutMismatch`, `ForeignPidNamespace`, `Io`; [`Error::Corrupted`] for a ring
    /// geometry no creator writes. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let expected = Layout::of::<T>(KIND, KIND_VERSION);
        Queue::wrap(Handle::from_fd(expected, fd, MIN_SLOT)?)
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now, as
    /// on drop; the queue lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.h.into_fd()
    }
}
