//! The storage of every type in this crate: an `ipc_shm::lowlevel::Segment` whose payload is one state
//! struct made of atomics, optionally followed by a tail of `AtomicU64` slots.
//!
//! ```text
//! payload + 0            P (the type's state: atomics only, all-zero = valid)
//! payload + tail_offset  [AtomicU64; tail_len]   (tail_offset = size_of::<P>() rounded up to 64)
//! ```
//!
//! Each type has its own `Layout` kind, so a named segment of one kind opened as another is a
//! `LayoutMismatch`. The header's `capacity` carries one immutable number per type (a bounded
//! semaphore's bound, a barrier's party count); openers read it from the validated header copy
//! and never from the payload.

use std::marker::PhantomData;

use ipc_shm::lowlevel::{Layout, Segment, DEFAULT_OPEN_TIMEOUT};

use crate::error::{Error, Result};
use crate::loom::AtomicU64;

/// A state struct that may live in a shared segment.
///
/// # Safety
/// - The type is `repr(C)` and made only of atomics (or `RawLock`, itself atomics only), so
///   every bit pattern a peer may write is a valid value and no byte is padding that matters.
/// - The all-zero pattern is a valid initial state (segments start zeroed).
/// - Its alignment is at most 64.
pub(crate) unsafe trait SharedState: Sized {
    /// The `Layout` kind, e.g. `"ipc_sem::Semaphore"`.
    const KIND: &'static str;
    /// The payload format version of this kind.
    const VERSION: u32;
}

/// A segment holding one `P`, plus `tail_len` `AtomicU64` slots.
pub(crate) struct Shared<P: SharedState> {
    seg: Segment,
    capacity: u64,
    tail_len: usize,
    _p: PhantomData<P>,
}

impl<P: SharedState> std::fmt::Debug for Shared<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("kind", &P::KIND)
            .field("name", &self.seg.name())
            .field("capacity", &self.capacity)
            .finish()
    }
}

const fn tail_offset<P>() -> usize {
    std::mem::size_of::<P>().div_ceil(64) * 64
}

fn payload_len<P>(tail_len: usize) -> Result<usize> {
    tail_len
        .checked_mul(8)
        .and_then(|b| b.checked_add(tail_offset::<P>()))
        .ok_or(Error::InvalidArgument("too many slots"))
}

fn layout<P: SharedState>(capacity: u64) -> Layout {
    Layout::of::<P>(P::KIND, P::VERSION).with_capacity(capacity)
}

impl<P: SharedState> Shared<P> {
    /// Creates the segment (inherited if `name` is `None`), runs `init` on the zeroed state
    /// before any opener can see it, and publishes it.
    pub(crate) fn create(
        name: Option<&str>,
        capacity: u64,
        tail_len: usize,
        init: impl FnOnce(&P),
    ) -> Result<Self> {
        const { assert!(std::mem::align_of::<P>() <= 64) };
        let len = payload_len::<P>(tail_len)?;
        let seg = Segment::create(&layout::<P>(capacity), len, name, |seg| {
            init(state_of::<P>(seg));
            Ok(())
        })?;
        Ok(Shared {
            seg,
            capacity,
            tail_len,
            _p: PhantomData,
        })
    }

    /// Opens a named segment of this kind; `tail_len_for` maps the header's capacity to the
    /// tail length (and rejects capacities this kind never writes).
    pub(crate) fn open(
        name: &str,
        tail_len_for: impl FnOnce(u64) -> Result<usize>,
    ) -> Result<Self> {
        Self::open_with(tail_len_for, |payload_len_for| {
            Segment::open_named(name, &layout::<P>(0), DEFAULT_OPEN_TIMEOUT, payload_len_for)
        })
    }

    /// The checks every opener makes, by name or by descriptor: `open_segment` runs the
    /// segment's own validation with the payload length this kind needs for the header's
    /// capacity (`tail_len_for` maps it to the tail, and rejects capacities this kind never
    /// writes, with its own error).
    fn open_with(
        tail_len_for: impl FnOnce(u64) -> Result<usize>,
        open_segment: impl FnOnce(
            &mut dyn FnMut(&Layout) -> ipc_shm::Result<usize>,
        ) -> ipc_shm::Result<Segment>,
    ) -> Result<Self> {
        let mut found: Option<(u64, usize)> = None;
        let mut rejected: Option<Error> = None;
        let mut tail_len_for = Some(tail_len_for);
        let opened = open_segment(&mut |l: &Layout| {
            let cap = l.capacity;
            match tail_len_for.take().map(|f| f(cap)) {
                Some(Ok(tail)) => {
                    found = Some((cap, tail));
                    payload_len::<P>(tail)
                        .map_err(|_| ipc_shm::Error::InvalidSize(cap, "capacity out of range"))
                }
                Some(Err(e)) => {
                    rejected = Some(e);
                    Err(ipc_shm::Error::InvalidSize(cap, "capacity out of range"))
                }
                None => Err(ipc_shm::Error::InvalidSize(cap, "layout checked twice")),
            }
        });
        let seg = match (opened, rejected) {
            (_, Some(e)) => return Err(e),
            (r, None) => r?,
        };
        let (capacity, tail_len) = found.ok_or(Error::Corrupted("segment layout"))?;
        Ok(Shared {
            seg,
            capacity,
            tail_len,
            _p: PhantomData,
        })
    }

    /// The shared state.
    pub(crate) fn state(&self) -> &P {
        state_of::<P>(&self.seg)
    }

    /// The tail slots (empty for kinds without a tail).
    pub(crate) fn tail(&self) -> &[AtomicU64] {
        let ptr = self
            .seg
            .payload()
            .as_ptr()
            .wrapping_add(tail_offset::<P>())
            .cast::<AtomicU64>();
        // SAFETY: the payload is `tail_offset + 8 * tail_len` bytes (checked by `create`, and
        // by `open` against the validated header), 128-byte aligned, so the tail is an aligned
        // run of `tail_len` u64 words inside the mapping, which lives as long as `self.seg`.
        // Atomics are valid for every bit pattern and are only accessed atomically.
        unsafe { std::slice::from_raw_parts(ptr, self.tail_len) }
    }

    /// The immutable number this kind keeps in the header (from the private validated copy).
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.seg.name()
    }

    pub(crate) fn unlink(&mut self) -> Result<()> {
        Ok(self.seg.unlink()?)
    }
}

fn state_of<P: SharedState>(seg: &Segment) -> &P {
    // SAFETY: every segment of this kind has a payload of at least `size_of::<P>()` bytes
    // (`payload_len`, checked against the header on open), 128-byte aligned (>= align of P
    // by the `SharedState` contract); `P` is atomics only, valid for every bit pattern and
    // only accessed atomically, and the reference lives no longer than the segment's mapping.
    unsafe { &*seg.payload().as_ptr().cast::<P>() }
}

/// Handle passing: the same checks as [`Shared::open`], from a descriptor another process
/// sent (`ipc_shm::lowlevel::Segment::from_fd`, the validation path `open_named` takes too).
impl<P: SharedState> Shared<P> {
    /// Rebuilds the storage from a descriptor; `tail_len_for` as in [`Shared::open`].
    pub(crate) fn from_fd(
        fd: std::os::fd::OwnedFd,
        tail_len_for: impl FnOnce(u64) -> Result<usize>,
    ) -> Result<Self> {
        Self::open_with(tail_len_for, |payload_len_for| {
            Segment::from_fd(fd, &layout::<P>(0), payload_len_for)
        })
    }

    /// The segment's descriptor.
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.seg)
    }

    /// Gives up the mapping and keeps the descriptor (a creator's name is removed, as on
    /// drop).
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        self.seg.into_fd()
    }
}
