//! Where the slots live: the `Slots` trait (shared memory, or the heap in loom models), the
//! two layouts of slots in a segment, the checked views of a claimed payload (`SlotWriter`,
//! `SlotReader`), and `ShmRing`, a segment with its checked geometry.
//!
//! Layout after the segment header (every value read here is untrusted):
//! ```text
//!   0  enq word (u64)                              producer line, 128 bytes
//! 128  deq word (u64)                              consumer line, 128 bytes
//! 256  retired eventcount, dropped, tombstones, done, sys (u64)   rare line, 128 bytes
//! 384  closed flag (u64)                           read-mostly line, 128 bytes
//! 512  the slots, in one of two layouts chosen by the slot (payload) size:
//!
//!      packed, slot_size <= 32:
//!      states: one u64 per slot                    A = cap * 8 rounded up to 128 bytes
//!      writer stamps: one u64 per slot             A bytes
//!      reader stamps: one u64 per slot             A bytes
//!      retire records: one u64 per slot            A bytes
//!      payloads: slot_size bytes per slot
//!
//!      inline, slot_size > 32:
//!      slot 0: state, writer stamp, reader stamp, retire record (u64 each), payload
//!      (slot_size bytes);
//!      slot 1; ...
//! ```
//! Small slots pack each kind of word in an array of its own, as the sequence words and
//! values of a Vyukov ring with small elements are: a consumer that follows a producer
//! closely moves one state line per eight messages, and one payload line per
//! `64 / slot_size`, instead of a line per message. Measured on the 1P->1C workload (u64, 20 M
//! messages, median of 7 runs), packed arrays ran at about 1.4x the rate of slots holding
//! their state, stamps and payload together, whether those slots were 32 bytes or a whole
//! cache line. The stamp arrays are read on every claim but written only when a slot's
//! previous claimer was somebody else, so they stay read-mostly. A large payload fills its
//! own line(s) whatever the layout, and then a separate state array would only add a second
//! line per message: large slots keep their words inline, next to the payload.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::{Control, Geometry, Idx, Ring, CONTROL_LEN, MAX_CAPACITY};
use crate::loom::AtomicU64;

/// The smallest slot (payload) size.
pub(crate) const MIN_SLOT: usize = 8;
/// The largest slot size that uses the packed layout (two or more payloads per line).
const PACKED_MAX_SLOT: usize = 32;
/// Bytes of state, stamp and record words before each payload in the inline layout.
const INLINE_HEADER: usize = 32;

/// Write access to a claimed slot's payload; writes are atomic stores (`ipc_shm::lowlevel::sync::store_bytes`).
pub(crate) struct SlotWriter<'a> {
    pub(super) ptr: *mut u8,
    pub(super) len: usize,
    pub(super) _slot: PhantomData<&'a mut [u8]>,
}

impl SlotWriter<'_> {
    /// Writes `src` into the payload at `offset`; false (nothing written) if out of range.
    #[inline(always)]
    pub(crate) fn store(&mut self, offset: usize, src: &[u8]) -> bool {
        match offset.checked_add(src.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: `offset..end` is inside the payload (checked), which lies in the
                // mapping (see `Slots::write`); `src` is the caller's.
                unsafe { ipc_shm::lowlevel::sync::store_bytes(self.ptr.add(offset), src) };
                true
            }
            _ => false,
        }
    }
}

/// Read access to a claimed slot's payload; reads copy out with atomic loads.
pub(crate) struct SlotReader<'a> {
    pub(super) ptr: *const u8,
    pub(super) len: usize,
    pub(super) _slot: PhantomData<&'a [u8]>,
}

impl SlotReader<'_> {
    /// The payload length in bytes.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // the codec's
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies a `T` out of the payload at `offset`, or `None` if it does not fit.
    #[inline(always)]
    pub(crate) fn read_pod<T: bytemuck::Pod>(&self, offset: usize) -> Option<T> {
        let mut v = T::zeroed();
        self.copy_out(offset, bytemuck::bytes_of_mut(&mut v))
            .then_some(v)
    }

    /// Appends `n` payload bytes from `offset` to `dst`; false (and `dst` unchanged) if out
    /// of range. `n` is bounded by the slot, so the allocation is too.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // the codec's
    pub(crate) fn append_to(&self, offset: usize, n: usize, dst: &mut Vec<u8>) -> bool {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => {
                dst.reserve_exact(n);
                // SAFETY: the source range is inside the payload (checked), in the mapping;
                // the reserve makes room for `n` more bytes after `dst.len()` in `dst`'s own
                // allocation; `set_len` covers exactly the bytes just written.
                unsafe {
                    ipc_shm::lowlevel::sync::load_bytes_raw(
                        self.ptr.add(offset),
                        dst.as_mut_ptr().add(dst.len()),
                        n,
                    );
                    dst.set_len(dst.len() + n);
                }
                true
            }
            _ => false,
        }
    }

    /// Copies `dst.len()` payload bytes from `offset` into `dst`; false if out of range.
    #[inline(always)]
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => {
                // SAFETY: the range is inside the payload (checked), in the mapping; `dst` is
                // a distinct buffer of the caller's.
                unsafe { ipc_shm::lowlevel::sync::load_bytes(self.ptr.add(offset), dst) };
                true
            }
            _ => false,
        }
    }
}

/// Where a message is written: one slot ([`SlotWriter`]) or a span of them ([`SpanWriter`]).
///
/// [`SpanWriter`]: super::SpanWriter
#[cfg_attr(not(feature = "serde"), allow(dead_code))] // the codec's
pub(crate) trait Sink {
    /// The bytes there are room for.
    fn len(&self) -> usize;
    /// Writes `src` at `offset`; false (nothing written) if out of range.
    fn store(&mut self, offset: usize, src: &[u8]) -> bool;
}

/// Where a message is read from: one slot ([`SlotReader`]) or a span of them
/// ([`SpanReader`]). Every method checks its range against [`Source::len`].
///
/// [`SpanReader`]: super::SpanReader
#[cfg_attr(not(feature = "serde"), allow(dead_code))] // the codec's
pub(crate) trait Source {
    /// The bytes there are.
    fn len(&self) -> usize;
    /// Copies `dst.len()` bytes from `offset` into `dst`; false if out of range.
    fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool;
    /// Appends `n` bytes from `offset` to `dst`; false (`dst` unchanged) if out of range.
    fn append_to(&self, offset: usize, n: usize, dst: &mut Vec<u8>) -> bool;
    /// Copies a `T` out from `offset`, or `None` if it does not fit.
    fn read_pod<T: bytemuck::Pod>(&self, offset: usize) -> Option<T> {
        let mut v = T::zeroed();
        self.copy_out(offset, bytemuck::bytes_of_mut(&mut v))
            .then_some(v)
    }
}

impl Sink for SlotWriter<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn store(&mut self, offset: usize, src: &[u8]) -> bool {
        SlotWriter::store(self, offset, src)
    }
}

impl Source for SlotReader<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        SlotReader::copy_out(self, offset, dst)
    }
    fn append_to(&self, offset: usize, n: usize, dst: &mut Vec<u8>) -> bool {
        SlotReader::append_to(self, offset, n, dst)
    }
    fn read_pod<T: bytemuck::Pod>(&self, offset: usize) -> Option<T> {
        SlotReader::read_pod(self, offset)
    }
}

/// One kind of word (the states, or one phase's stamps) of every slot, for a loop over many
/// slots: where the first is and how far apart they are, read once (a loop that asked the
/// `Slots` for each word would reload its geometry after every atomic access).
#[derive(Clone, Copy)]
pub(crate) struct Words<'a> {
    base: NonNull<u8>,
    /// Bytes from one slot's word to the next slot's.
    stride: usize,
    _words: PhantomData<&'a AtomicU64>,
}

impl<'a> Words<'a> {
    /// The words at `base`, `stride` bytes apart, one per slot.
    ///
    /// # Safety
    /// For every index `i` a [`Ring`] of these slots makes (below its capacity),
    /// `base + i * stride` is an `AtomicU64` that lives, unmoved, for `'a`.
    pub(super) unsafe fn new(base: NonNull<u8>, stride: usize) -> Words<'a> {
        Words {
            base,
            stride,
            _words: PhantomData,
        }
    }

    /// Slot `i`'s word.
    #[inline(always)]
    pub(crate) fn at(self, i: Idx) -> &'a AtomicU64 {
        // SAFETY: `Idx` is below the ring's capacity, which is the slots' (see `Words::new`,
        // whose contract the maker upheld).
        unsafe {
            self.base
                .add(i.0 * self.stride)
                .cast::<AtomicU64>()
                .as_ref()
        }
    }
}

/// Where the slots live: shared memory, or the heap in loom models.
pub(crate) trait Slots {
    /// Every slot's state word (see [`Words`]).
    fn states(&self) -> Words<'_>;
    /// Every slot's stamp word for its writer (`reading` false) or its reader.
    fn stamps(&self, reading: bool) -> Words<'_>;
    /// The state word of slot `i`.
    fn state(&self, i: Idx) -> &AtomicU64;
    /// The stamp word of slot `i` for its writer (`reading` false) or its reader.
    fn stamp(&self, i: Idx, reading: bool) -> &AtomicU64;
    /// The retire record of slot `i` (see the `recover` module doc).
    fn record(&self, i: Idx) -> &AtomicU64;
    /// Runs `f` on the payload of slot `i`, which the caller has claimed for writing.
    fn write<R>(&self, i: Idx, f: impl FnOnce(SlotWriter<'_>) -> R) -> R;
    /// Runs `f` on the payload of slot `i`, which the caller has claimed for reading.
    fn read<R>(&self, i: Idx, f: impl FnOnce(SlotReader<'_>) -> R) -> R;
}

/// Slots in a shared mapping, in one of the two layouts of the module doc: slot `i`'s word
/// `k` (0 state, 1 writer stamp, 2 reader stamp, 3 retire record) is at `words + i * word_step + k * kind_step`
/// (in words), its payload at `base + i * payload_step` (in bytes), `slot_size` bytes long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShmSlots {
    words: NonNull<AtomicU64>,
    word_step: usize,
    kind_step: usize,
    base: NonNull<u8>,
    payload_step: usize,
    slot_size: usize,
}

// SAFETY: `ShmSlots` is a set of pointers into a shared mapping that its `ShmRing` owns and
// outlives every `Ring` view; all access through it is by atomics (the words) or to slots the
// caller has claimed under the ring protocol, which is built for concurrent use by threads of
// many processes, so sharing or sending the view between threads adds nothing new.
unsafe impl Send for ShmSlots {}
// SAFETY: as above.
unsafe impl Sync for ShmSlots {}

impl ShmSlots {
    #[inline(always)]
    fn at(&self, i: Idx) -> *mut u8 {
        // SAFETY: `Idx` is below the capacity, and the mapping holds `capacity` payloads of
        // `slot_size` bytes, `payload_step` apart, from `base` (checked in `ShmRing::new`), so
        // the offset stays inside.
        unsafe { self.base.as_ptr().add(i.0 * self.payload_step) }
    }

    /// Word `k` (0 state, 1 writer stamp, 2 reader stamp, 3 retire record) of slot `i`.
    #[inline]
    fn word(&self, k: usize, i: Idx) -> &AtomicU64 {
        // SAFETY: `Idx` is below the capacity and `k < 4`; the mapping holds those words at
        // these steps from `words` (8-aligned: the area starts 128-aligned and every step is
        // a whole number of words; checked in `ShmRing::new`); the mapping outlives `&self`;
        // an `AtomicU64` is valid for any bits.
        unsafe {
            self.words
                .add(i.0 * self.word_step + k * self.kind_step)
                .as_ref()
        }
    }
}

impl ShmSlots {
    /// Word `k` of every slot.
    #[inline(always)]
    fn words_of(&self, k: usize) -> Words<'_> {
        // SAFETY: as in `word`: slot `i`'s word `k` is at `words + i * word_step + k *
        // kind_step` (in words) for every `i` below the capacity, in the mapping that outlives
        // `&self`; the offset of `k` stays inside it.
        unsafe {
            Words::new(
                self.words.add(k * self.kind_step).cast::<u8>(),
                self.word_step * 8,
            )
        }
    }
}

impl Slots for ShmSlots {
    #[inline(always)]
    fn states(&self) -> Words<'_> {
        self.words_of(0)
    }

    #[inline(always)]
    fn stamps(&self, reading: bool) -> Words<'_> {
        self.words_of(if reading { 2 } else { 1 })
    }

    #[inline]
    fn state(&self, i: Idx) -> &AtomicU64 {
        self.word(0, i)
    }

    #[inline]
    fn stamp(&self, i: Idx, reading: bool) -> &AtomicU64 {
        self.word(if reading { 2 } else { 1 }, i)
    }

    #[inline]
    fn record(&self, i: Idx) -> &AtomicU64 {
        self.word(3, i)
    }

    #[inline(always)]
    fn write<R>(&self, i: Idx, f: impl FnOnce(SlotWriter<'_>) -> R) -> R {
        f(SlotWriter {
            ptr: self.at(i),
            len: self.slot_size,
            _slot: PhantomData,
        })
    }

    #[inline(always)]
    fn read<R>(&self, i: Idx, f: impl FnOnce(SlotReader<'_>) -> R) -> R {
        f(SlotReader {
            ptr: self.at(i).cast_const(),
            len: self.slot_size,
            _slot: PhantomData,
        })
    }
}

/// A ring in a shared segment: the storage owner plus the checked geometry.
pub(crate) struct ShmRing {
    seg: ipc_shm::lowlevel::Segment,
    ctl: NonNull<Control>,
    slots: ShmSlots,
    cap: usize,
    geometry: Geometry,
}

// SAFETY: the ring owns its segment (an fd and a shared mapping, `Send`/`Sync`), and every
// access to the mapping goes through atomics or through slots claimed by the protocol.
unsafe impl Send for ShmRing {}
// SAFETY: as above: `&ShmRing` only reaches shared memory through the ring protocol, which is
// made for concurrent use by threads of many processes.
unsafe impl Sync for ShmRing {}

impl ShmRing {
    /// Words in each of the three word arrays of the packed layout: whole 128-byte line
    /// pairs, so every array starts 128-byte aligned and shares no line with the next.
    fn array_words(cap: usize) -> Option<usize> {
        Some(cap.checked_add(15)? & !15)
    }

    /// Whether slots of `slot_size` bytes use the packed layout (see the module doc).
    fn packed(slot_size: usize) -> bool {
        slot_size <= PACKED_MAX_SLOT
    }

    /// Bytes of segment payload for `cap` slots of `slot_size` bytes, if representable.
    pub(crate) fn payload_len(cap: usize, slot_size: usize) -> Option<usize> {
        let slots = if Self::packed(slot_size) {
            cap.checked_mul(slot_size)?
                .checked_add(Self::array_words(cap)?.checked_mul(4 * 8)?)?
        } else {
            cap.checked_mul(slot_size.checked_add(INLINE_HEADER)?)?
        };
        slots.checked_add(CONTROL_LEN)
    }

    /// The slot storage of a payload checked to hold `payload_len(cap, slot_size)` bytes.
    fn slots_in(payload: NonNull<u8>, cap: usize, slot_size: usize) -> Option<ShmSlots> {
        // SAFETY: the caller checked that the payload holds CONTROL_LEN bytes and then the
        // slots, so the offset stays inside it.
        let words = unsafe { payload.add(CONTROL_LEN) };
        if Self::packed(slot_size) {
            let stride = Self::array_words(cap)?;
            Some(ShmSlots {
                words: words.cast::<AtomicU64>(),
                word_step: 1,
                kind_step: stride,
                // SAFETY: as above: the four word arrays come first, then the payloads.
                base: unsafe { words.add(4 * stride * 8) },
                payload_step: slot_size,
                slot_size,
            })
        } else {
            let record = slot_size.checked_add(INLINE_HEADER)?;
            Some(ShmSlots {
                words: words.cast::<AtomicU64>(),
                word_step: record / 8,
                kind_step: 1,
                // SAFETY: as above: each record holds its four words, then its payload.
                base: unsafe { words.add(INLINE_HEADER) },
                payload_step: record,
                slot_size,
            })
        }
    }

    /// Wraps a segment whose payload holds a ring of `cap` slots of `slot_size` bytes.
    pub(crate) fn new(
        seg: ipc_shm::lowlevel::Segment,
        cap: usize,
        slot_size: usize,
    ) -> Option<ShmRing> {
        if cap == 0 || cap > MAX_CAPACITY || slot_size < MIN_SLOT || slot_size % 8 != 0 {
            return None;
        }
        if seg.payload_len() < Self::payload_len(cap, slot_size)? {
            return None;
        }
        let base = seg.payload();
        Some(ShmRing {
            ctl: base.cast::<Control>(),
            slots: Self::slots_in(base, cap, slot_size)?,
            cap,
            geometry: Geometry::new(cap),
            seg,
        })
    }

    /// Writes the initial ring state into a fresh segment (the creator, before READY).
    pub(crate) fn init_segment(
        seg: &ipc_shm::lowlevel::Segment,
        cap: usize,
        slot_size: usize,
        max_message: u64,
    ) -> bool {
        let ok = cap > 0
            && cap <= MAX_CAPACITY
            && slot_size >= MIN_SLOT
            && slot_size % 8 == 0
            && Self::payload_len(cap, slot_size).is_some_and(|n| n <= seg.payload_len());
        if !ok {
            return false;
        }
        let base = seg.payload();
        let Some(slots) = Self::slots_in(base, cap, slot_size) else {
            return false;
        };
        // SAFETY: the payload starts 128-byte aligned with CONTROL_LEN bytes for the control
        // block (atomics only, valid for any bits); `seg` outlives this call.
        let ctl = unsafe { base.cast::<Control>().as_ref() };
        let ring = Ring::new(ctl, &slots, cap);
        ring.init();
        ring.set_max_message(max_message);
        true
    }

    /// The protocol over this segment.
    #[inline]
    pub(crate) fn ring(&self) -> Ring<'_, ShmSlots> {
        // SAFETY: the payload starts 128-byte aligned with CONTROL_LEN bytes of control block,
        // all atomics (valid for any bits), alive as long as `self`.
        let ctl = unsafe { self.ctl.as_ref() };
        Ring::with_geometry(ctl, &self.slots, self.geometry)
    }

    /// The segment (name, fd).
    pub(crate) fn segment(&self) -> &ipc_shm::lowlevel::Segment {
        &self.seg
    }

    /// The segment, mutably (unlink).
    pub(crate) fn segment_mut(&mut self) -> &mut ipc_shm::lowlevel::Segment {
        &mut self.seg
    }

    /// The capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
}

/// Handle passing: the ring gives its segment back (to hand its descriptor on).
impl ShmRing {
    /// The segment, without the ring over it.
    pub(crate) fn into_segment(self) -> ipc_shm::lowlevel::Segment {
        self.seg
    }
}
