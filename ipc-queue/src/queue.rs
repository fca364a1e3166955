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
use crate::ring::{SlotReader, SlotWriter, MIN_SLOT};

const KIND: &str = "ipc_queue::Queue";
const KIND_VERSION: u32 = 6;
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
    max: usize,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("element", &std::any::type_name::<T>())
            .field("max_message_size", &self.max)
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
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The number of slots (default 1024; 1 to 2^30).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The largest encoded message a slot holds, in bytes (default 256). Slots are this plus
    /// a 4-byte length word, rounded up to 8 bytes, so the real limit may be a few bytes more
    /// ([`Queue::max_message_size`] tells).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    fn layout(&self) -> Result<Layout> {
        let slot = self
            .max_message_size
            .checked_add(LEN_WORD)
            .and_then(slot_size_for)
            .ok_or(Error::InvalidConfig("max_message_size too large"))?;
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
        Ok(Queue::wrap(Handle::create(self.layout()?, None, MIN_SLOT)?))
    }

    /// Creates the named queue `name` (as [`Queue::create_named`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a capacity or message size out of range; [`Error::Shm`]
    /// if the segment cannot be created (`AlreadyExists` for a taken name).
    pub fn create_named(self, name: &str) -> Result<Queue<T>> {
        Ok(Queue::wrap(Handle::create(
            self.layout()?,
            Some(name),
            MIN_SLOT,
        )?))
    }

    /// Opens the named queue `name`, checking that it has exactly this capacity and message
    /// size (and element type).
    ///
    /// # Errors
    /// As [`Queue::open_named`]; `LayoutMismatch` also for another capacity or slot size.
    pub fn open_named(self, name: &str) -> Result<Queue<T>> {
        Ok(Queue::wrap(Handle::open(self.layout()?, name, MIN_SLOT)?))
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn wrap(h: Handle) -> Queue<T> {
        let max = h.slot_payload() - LEN_WORD;
        Queue {
            h,
            max,
            _t: PhantomData,
        }
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
        Ok(Queue::wrap(Handle::open(expected, name, MIN_SLOT)?))
    }

    /// The largest encoded message a slot holds.
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
        match self.h.put(deadline, &mut |w: SlotWriter<'_>| {
            codec::encode_into(value, len, w)
        }) {
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

    fn get_until<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        let mut inline = [0u8; INLINE];
        let mut heap = Vec::new();
        let copied = match self.h.get(deadline, &mut |r: SlotReader<'_>| {
            codec::copy_out::<T>(r, &mut inline, &mut heap)
        }) {
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
        let mut write = |w: SlotWriter<'_>| codec::encode_into(value, len, w);
        match self.h.put_async(deadline, &mut write).await {
            Ok(Ok(())) => Ok(()),
            // The slot became a tombstone that consumers skip.
            Ok(Err(e)) => Err(PutFail::Failed(e)),
            Err(stop) => Err(put_fail(stop)),
        }
    }

    async fn get_until_async<E: GetFail>(&self, deadline: Deadline) -> Result<T, E> {
        let mut inline = [0u8; INLINE];
        let mut heap = Vec::new();
        let mut read = |r: SlotReader<'_>| codec::copy_out::<T>(r, &mut inline, &mut heap);
        let copied = match self.h.get_async(deadline, &mut read).await {
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
        Ok(Queue::wrap(Handle::from_fd(expected, fd, MIN_SLOT)?))
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now, as
    /// on drop; the queue lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.h.into_fd()
    }
}
