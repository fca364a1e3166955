//! The lock-free core: a bounded multi-producer multi-consumer ring whose claims survive a
//! killed participant.
//!
//! Source: Dmitry Vyukov, "Bounded MPMC queue" (1024cores.net), the per-slot sequence scheme
//! that crossbeam's `ArrayQueue` also uses, with crossbeam's lap/index position encoding (so
//! any capacity works without a division). Changes made here, and why:
//!
//! - **The claim names the claimer.** As in Vyukov, one CAS on the shared enqueue (dequeue)
//!   word claims a position; here the word also records the claimer's thread id
//!   (`seq << 24 | tid`), so a claim is never anonymous even if its owner is killed before it
//!   touches the slot. A participant that finds the word recording somebody else's claim
//!   first *marks* that previous slot with the recorded id (a CAS from idle to claimed, see
//!   `mark`) before its own CAS overwrites the record; the owner's publish or release is a
//!   swap that ends the mark either way.
//!   A record in the claimer's own thread id is not marked (it is its own last claim,
//!   already published or released) unless the claimer holds a claim right now (a
//!   `Serialize` that puts); so a record left by a *dead* thread whose id was reused may be
//!   overwritten unmarked. `reclaim` infers such a claim: a slot still idle in its phase
//!   while the position word has moved past it can only be that, and its claimer is dead.
//!   A claim recorded in the caller's own id while it holds none is likewise dead, whatever
//!   the stamp says (ids reused within one clock tick have equal stamps).
//! - **Owner stamps.** Each slot has two stamp words, one for its writer and one for its
//!   reader. Before its claim CAS a claimer makes the phase's stamp word hold its full
//!   [`OwnerStamp`] (thread id and start time), storing only if it differs, so a participant
//!   that keeps reusing slots stores nothing there; the CAS (Release) publishes it. A waiter
//!   that sees a slot stay claimed checks the stamp (`OwnerStamp::is_dead`, on slow paths
//!   only; a stamp with another id, left by a claimer that lost the race, falls back to the
//!   id alone) and, if the owner is gone, reclaims the slot by a CAS from exactly the state it
//!   inspected: a dead writer's slot becomes a tombstone that consumers skip, a dead reader's
//!   slot is freed and its message counted as dropped. A live owner is never reclaimed,
//!   however slow.
//! - **Sleepers mark the slot they wait on.** No counter is touched per put or get. A consumer
//!   that finds the slot at its position not yet published (a producer: the slot at its
//!   position not yet released) sets the `WAITING` bit in that slot's state word by a CAS from
//!   exactly the state it saw, re-reads the position word and the closed flag, and futex-waits
//!   on the state word's low half (bounded to 20 ms slices, after which it looks for dead
//!   claimers again). The owner ends its phase with a `swap` instead of a store and wakes all
//!   sleepers on the slot only if the previous value had `WAITING`. The swap and the CAS are
//!   read-modify-writes of one word, so one of them sees the other: either the sleeper's CAS
//!   fails (the state moved on, it retries) or the swap sees `WAITING` and wakes. The swap hits
//!   the line the owner has just written (or read), so unlike a shared counter it costs no
//!   extra cross-core miss. A reclaim that replaces a state with `WAITING` wakes too; a helper's
//!   mark keeps the bit. `close` sets the flag, then clears `WAITING` (an RMW, so a sleeper
//!   between its checks and its futex call sees the value change) and wakes on the slots at the
//!   current enqueue and dequeue positions: a sleeper that read its position before the flag
//!   was set waits on one of those slots, or its slot has moved on and it was woken then (the
//!   flag store, the position re-reads and the slot RMWs are all SeqCst).
//! - **Counting without counters.** `len()` is the distance between the enqueue and dequeue
//!   positions, clamped to `0..=capacity` (approximate, like `qsize`). `join` accounting:
//!   unfinished = claims (the enqueue position as a running count) minus `task_done` calls
//!   (the `done` word) minus positions retired by the system: tombstones and messages dropped
//!   with dead consumers. A system retirement is recorded in the slot's *retire record*
//!   (count in the high half, the lap it was for in the low half) by the participant that
//!   holds the slot's read claim: the consumer that skips a tombstone, or the reclaimer that
//!   takes over a dead consumer's claim. The record is idempotent (a lap already recorded is
//!   not counted again) and only the holder writes it, so a kill anywhere leaves the count
//!   recoverable: whoever takes over the dead holder's claim re-does it. Tombstones nobody
//!   has skipped yet are counted by `join` from the slot states (a tombstone whose lap is
//!   not in the record). The `sys` word sums the records as a hint (it misses one per kill
//!   between record and hint) for `task_done`'s check and `join`'s fast path; `join` decides
//!   on the exact sum. `retired` is the joiners' eventcount (bit 0 someone sleeps, bit 1
//!   closed, count from bit 2); whoever adds wakes only when the bit was set. Counts are
//!   compared modulo the period of the position encoding.
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
//!
//! Slot state: `seq << 24 | owner`, `seq` a 40-bit position, `owner` 0 (idle), a thread id
//! (claimed, marked by a helper) or `TOMB`, plus the `WAITING` bit (bit 22) in any phase.
//! For the position `p` of slot `i`: `FREE(p) = p|0`, `WRITING(p) = p|tid`, `FULL(p) = p+1|0`,
//! `READING(p) = p+1|tid`, `TOMBSTONE(p) = p+1|TOMB`; consuming sets `FREE(p + one_lap)`.
//! Publishing and releasing swap in a state without `WAITING`.
//!
//! Positions wrap at 2^40: a participant would have to stall for 2^39 operations between two
//! of its instructions for a comparison to go wrong. Thread ids fit in 22 bits because Linux
//! caps `pid_max` at 2^22.

use std::marker::PhantomData;
use std::ptr::NonNull;
#[cfg(not(loom))]
use std::time::Duration;

use ipc_shm::lowlevel::sync::{wait_low_half, wake_low_half, Deadline, OwnerStamp, WaitOutcome};

use crate::loom::{spin, yield_now, AtomicU64, Ordering};

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const OWNER_BITS: u32 = 24;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;
const TID_MASK: u64 = (1 << 22) - 1;
const TOMB: u64 = 1 << 23;
/// Slot state bit: somebody sleeps on this slot's state word (bit 22, above every thread id).
const WAITING: u64 = 1 << 22;
/// How often a helper retries its mark when only the `WAITING` bit moved under it.
const MARK_TRIES: u32 = 64;

/// A retire record: the lap of its last retirement in the low half (this value: none yet),
/// their count in the high half.
const NO_LAP: u64 = 0xFFFF_FFFF;

/// The `retired` eventcount word: bit 0 a joiner sleeps, bit 1 closed, count from bit 2.
const WAITERS: u64 = 1;
const CLOSED: u64 = 2;
const ONE: u64 = 4;

/// The largest capacity a ring accepts.
pub(crate) const MAX_CAPACITY: usize = 1 << 30;
/// The smallest slot (payload) size.
pub(crate) const MIN_SLOT: usize = 8;
/// The largest slot size that uses the packed layout (two or more payloads per line).
const PACKED_MAX_SLOT: usize = 32;
/// Bytes of state, stamp and record words before each payload in the inline layout.
const INLINE_HEADER: usize = 32;
/// Bytes of control block before slot 0.
pub(crate) const CONTROL_LEN: usize = 512;
/// The most steps one attempt takes before it reports contention (a hostile peer flipping
/// states cannot keep a call looping).
const MAX_STEPS: u32 = 1 << 16;

/// How long a blocked caller lets a claimed slot sit before checking whether its owner lives.
#[cfg(not(loom))]
const STUCK_CHECK: Duration = Duration::from_millis(10);
/// How long a get on a closed ring waits for a claim whose owner it cannot verify.
#[cfg(not(loom))]
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// The longest a blocked caller sleeps before re-checking for dead peers.
#[cfg(not(loom))]
const SLICE: Duration = Duration::from_millis(20);

#[inline]
fn seq(s: u64) -> u64 {
    s >> OWNER_BITS
}

#[inline]
fn owner(s: u64) -> u64 {
    s & OWNER_MASK
}

#[inline]
fn pack(seq: u64, owner: u64) -> u64 {
    ((seq & POS_MASK) << OWNER_BITS) | owner
}

/// `a - b` as a signed distance on the 40-bit position circle.
#[inline]
fn diff(a: u64, b: u64) -> i64 {
    ((a.wrapping_sub(b) & POS_MASK) << OWNER_BITS) as i64 >> OWNER_BITS
}

/// Padding in the control block: atomics, never accessed, so that `&Control` makes no claim
/// that the bytes stay unchanged (a faulty or hostile peer may write them).
type Pad = std::sync::atomic::AtomicU64;

/// The control block: the two position words, each on its own 128-byte pair of cache lines,
/// the rarely written counters, and the closed flag.
#[repr(C)]
pub(crate) struct Control {
    enq: AtomicU64,
    _pad0: [Pad; 15],
    deq: AtomicU64,
    _pad1: [Pad; 15],
    retired: AtomicU64,
    dropped: AtomicU64,
    tombstones: AtomicU64,
    done: AtomicU64,
    sys: AtomicU64,
    _pad2: [Pad; 11],
    closed: AtomicU64,
    _pad3: [Pad; 15],
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Control>() == CONTROL_LEN);
    assert!(std::mem::offset_of!(Control, deq) == 128);
    assert!(std::mem::offset_of!(Control, retired) == 256);
    assert!(std::mem::offset_of!(Control, closed) == 384);
};

impl Control {
    /// A zeroed control block (heap use: loom models).
    #[cfg(all(test, loom))]
    pub(crate) fn new() -> Control {
        Control {
            enq: AtomicU64::new(0),
            _pad0: std::array::from_fn(|_| Pad::new(0)),
            deq: AtomicU64::new(0),
            _pad1: std::array::from_fn(|_| Pad::new(0)),
            retired: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
            done: AtomicU64::new(0),
            sys: AtomicU64::new(0),
            _pad2: std::array::from_fn(|_| Pad::new(0)),
            closed: AtomicU64::new(0),
            _pad3: std::array::from_fn(|_| Pad::new(0)),
        }
    }
}

/// A slot index checked against the capacity (only [`Ring::index`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Idx(usize);

/// Write access to a claimed slot's payload; writes are atomic stores (`ipc_shm::lowlevel::sync::store_bytes`).
pub(crate) struct SlotWriter<'a> {
    ptr: *mut u8,
    len: usize,
    _slot: PhantomData<&'a mut [u8]>,
}

impl SlotWriter<'_> {
    /// The payload length in bytes.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // the codec's
    pub(crate) fn len(&self) -> usize {
        self.len
    }

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
    ptr: *const u8,
    len: usize,
    _slot: PhantomData<&'a [u8]>,
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

/// Where the slots live: shared memory, or the heap in loom models.
pub(crate) trait Slots {
    /// The state word of slot `i`.
    fn state(&self, i: Idx) -> &AtomicU64;
    /// The stamp word of slot `i` for its writer (`reading` false) or its reader.
    fn stamp(&self, i: Idx, reading: bool) -> &AtomicU64;
    /// The retire record of slot `i` (see the module doc).
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

impl Slots for ShmSlots {
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

/// Who is calling: the thread id written into claimed states and the full stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Me {
    tid: u64,
    stamp: u64,
}

impl Me {
    /// The calling thread.
    #[inline]
    pub(crate) fn current() -> Me {
        let st = OwnerStamp::current();
        Me::new(st.thread_id(), st.to_bits())
    }

    /// A participant with thread id `tid` (nonzero, below 2^22) and stamp bits `stamp`.
    pub(crate) fn new(tid: u32, stamp: u64) -> Me {
        let tid = u64::from(tid) & TID_MASK;
        Me {
            tid: if tid == 0 { TID_MASK } else { tid },
            stamp,
        }
    }
}

#[cfg(not(loom))]
std::thread_local!(static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
#[cfg(loom)]
loom::thread_local!(static HELD: std::cell::Cell<u32> = std::cell::Cell::new(0));

/// Whether the calling thread holds a claim now (it runs a caller's `write` inside a put: a
/// `Serialize` that uses a queue itself).
fn holding_claim() -> bool {
    HELD.with(|h| h.get() != 0)
}

/// Marks the calling thread as holding a claim while it lives (around a caller's `write`).
struct Holding;

impl Holding {
    fn new() -> Holding {
        HELD.with(|h| h.set(h.get().saturating_add(1)));
        Holding
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

/// Decides whether the owner recorded in a slot is gone.
pub(crate) trait Liveness {
    /// Whether thread `tid`, with the stamp word `stamp` read from its slot, is certainly
    /// dead.
    fn is_dead(&self, tid: u64, stamp: u64) -> bool;

    /// Whether thread `tid` is certainly alive *and* `stamp` is its own (the claim is
    /// self-consistent, not a stray id in corrupted memory).
    fn is_verified_alive(&self, tid: u64, stamp: u64) -> bool {
        !self.is_dead(tid, stamp)
    }
}

/// The operating system's view (`/proc`), through [`OwnerStamp`].
pub(crate) struct OsLiveness;

impl Liveness for OsLiveness {
    fn is_verified_alive(&self, tid: u64, stamp: u64) -> bool {
        let st = OwnerStamp::from_bits(stamp);
        u64::from(st.thread_id()) == tid && !st.is_dead()
    }

    fn is_dead(&self, tid: u64, stamp: u64) -> bool {
        let st = OwnerStamp::from_bits(stamp);
        if u64::from(st.thread_id()) == tid {
            st.is_dead()
        } else {
            // The stamp word belongs to somebody else (a racing claimer overwrote it): judge
            // by the id alone.
            u32::try_from(tid).map_or(true, ipc_shm::lowlevel::sync::is_gone)
        }
    }
}

/// Nobody is dead (used where only the caller's own id can be judged).
struct NeverDead;

impl Liveness for NeverDead {
    fn is_dead(&self, _tid: u64, _stamp: u64) -> bool {
        false
    }
}

/// A slot that stopped an attempt: the first one not ready for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocker {
    idx: Idx,
    state: u64,
    /// The position (enqueue for puts, dequeue for gets) at which the slot blocked us.
    pos: u64,
}

/// What one attempt did.
#[derive(Debug)]
pub(crate) enum Attempt<R> {
    /// The operation happened; the closure's result.
    Done(R),
    /// Full (put) or empty (get); `None` when the attempt gave up under contention.
    Blocked(Option<Blocker>),
    /// The queue is closed (put only; gets report closed when empty).
    Closed,
    /// Shared state no correct peer writes.
    Corrupted,
}

/// The result of a claim step.
#[derive(Debug)]
enum Claimed {
    /// We own slot `Idx` at position `u64`.
    Slot(Idx, u64),
    Blocked(Option<Blocker>),
    Closed,
    Corrupted,
}

/// What reclaiming a blocker did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// The owner lives, the slot moved on, or it was not claimed.
    Nothing,
    /// The dead owner's slot was reclaimed.
    Reclaimed,
    /// The slot's state is impossible.
    Corrupted,
}

/// Publishes a tombstone for the slot claimed at `p` if dropped, i.e. if the write into it
/// unwinds; forgotten once the write returns.
struct TombstoneOnUnwind<'r, 'a, S: Slots> {
    ring: &'r Ring<'a, S>,
    i: Idx,
    p: u64,
}

impl<S: Slots> Drop for TombstoneOnUnwind<'_, '_, S> {
    fn drop(&mut self) {
        self.ring.publish(self.i, self.p, false);
    }
}

/// Too many `task_done` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooManyDone;

/// A ring's capacity and the lap size of its position encoding, computed once per handle.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    cap: u64,
    one_lap: u64,
}

impl Geometry {
    fn new(cap: usize) -> Geometry {
        let cap = cap.clamp(1, MAX_CAPACITY) as u64;
        Geometry {
            cap,
            one_lap: (cap + 1).next_power_of_two(),
        }
    }
}

/// The ring protocol over a control block and slots.
pub(crate) struct Ring<'a, S> {
    ctl: &'a Control,
    slots: &'a S,
    cap: u64,
    one_lap: u64,
}

impl<'a, S: Slots> Ring<'a, S> {
    /// A ring of `cap` slots (1..=MAX_CAPACITY).
    pub(crate) fn new(ctl: &'a Control, slots: &'a S, cap: usize) -> Ring<'a, S> {
        Self::with_geometry(ctl, slots, Geometry::new(cap))
    }

    /// A ring with a geometry computed before (the per-operation path).
    #[inline]
    fn with_geometry(ctl: &'a Control, slots: &'a S, g: Geometry) -> Ring<'a, S> {
        Ring {
            ctl,
            slots,
            cap: g.cap,
            one_lap: g.one_lap,
        }
    }

    /// Writes the initial state: every slot free for lap 0, counters zero.
    pub(crate) fn init(&self) {
        for i in 0..self.cap {
            let idx = Idx(i as usize);
            self.slots.state(idx).store(pack(i, 0), Ordering::Relaxed);
            self.slots.stamp(idx, false).store(0, Ordering::Relaxed);
            self.slots.stamp(idx, true).store(0, Ordering::Relaxed);
            self.slots.record(idx).store(NO_LAP, Ordering::Relaxed);
        }
        for w in [
            &self.ctl.enq,
            &self.ctl.deq,
            &self.ctl.retired,
            &self.ctl.dropped,
            &self.ctl.tombstones,
            &self.ctl.done,
            &self.ctl.sys,
            &self.ctl.closed,
        ] {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// The slot of position `p`, if its index is in range (positions come from shared memory).
    #[inline]
    fn index(&self, p: u64) -> Option<Idx> {
        let i = p & (self.one_lap - 1);
        (i < self.cap).then_some(Idx(i as usize))
    }

    /// The position after `p`.
    #[inline]
    fn next(&self, p: u64) -> u64 {
        if (p & (self.one_lap - 1)) + 1 < self.cap {
            p + 1
        } else {
            ((p & !(self.one_lap - 1)).wrapping_add(self.one_lap)) & POS_MASK
        }
    }

    /// Bumps the joiners' eventcount after a retirement (`task_done` or a retire record)
    /// and wakes joiners if any sleep.
    fn retire(&self) {
        let w = &self.ctl.retired;
        // SYNC POINT: SeqCst RMW; a joiner's `prepare_join` RMW on the same word either reads
        // it or precedes it in the word's modification order, and then we see WAITERS.
        let prev = w.fetch_add(ONE, Ordering::SeqCst);
        if prev & WAITERS != 0 {
            w.fetch_and(!WAITERS, Ordering::Relaxed);
            wake_low_half(w, u32::MAX);
        }
    }

    /// The lap of position `p`, as a retire record holds it.
    fn lap32(&self, p: u64) -> u64 {
        ((p & POS_MASK) >> self.one_lap.trailing_zeros()) & NO_LAP
    }

    /// Records that position `p` of slot `i` (a tombstone, or a message lost with a dead
    /// consumer) is retired, unless its lap is recorded already. Only the holder of the
    /// slot's read claim calls it, before it frees the slot, so a kill anywhere here leaves
    /// the slot claimed, and whoever takes the claim over calls it again.
    fn settle(&self, i: Idx, p: u64) {
        let lap = self.lap32(p);
        let w = self.slots.record(i);
        let mut r = w.load(Ordering::Acquire);
        for _ in 0..MARK_TRIES {
            if r & NO_LAP == lap {
                return;
            }
            let next = ((r >> 32).wrapping_add(1) << 32) | lap;
            // SYNC POINT: AcqRel; `join` reads the records with Acquire.
            match w.compare_exchange(r, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.ctl.sys.fetch_add(1, Ordering::Relaxed);
                    self.retire();
                    return;
                }
                Err(now) => r = now,
            }
        }
    }

    /// Registers the caller as a joiner; returns the key to pass to [`Ring::wait_join`]. The
    /// caller must re-check its condition between the two.
    fn prepare_join(&self) -> u64 {
        // SYNC POINT: pairs with the RMW in `retire` and `task_done` (see there).
        self.ctl.retired.fetch_or(WAITERS, Ordering::SeqCst) | WAITERS
    }

    /// Sleeps on the `retired` word while it still holds `key`, until woken or `deadline`.
    fn wait_join(&self, key: u64, deadline: Deadline) -> WaitOutcome {
        // The futex compares the low 32 bits: flags and the low count bits.
        wait_low_half(&self.ctl.retired, key as u32, deadline)
    }

    /// Wakes every sleeper on slot `i` (after replacing a state that had `WAITING`).
    #[inline]
    fn wake_slot(&self, i: Idx) {
        wake_low_half(self.slots.state(i), u32::MAX);
    }

    /// Sleeps on the slot in `b` (the first one not ready for us at position `b.pos` of the
    /// enqueue word, `getting` false, or of the dequeue word) until its state moves on, the
    /// ring closes, or `deadline`. Returns at once if anything changed since `b` was read.
    /// `draining` (a get on a closed ring waiting for a claim made before the close to be
    /// published) sleeps even though the ring is closed: `close` has woken everyone already,
    /// and the publish it waits for wakes it.
    fn park(&self, b: Blocker, getting: bool, draining: bool, deadline: Deadline) {
        if let Some((st, armed)) = self.arm(b, getting, draining) {
            // The futex compares the low 32 bits: owner, WAITING and the low bits of seq.
            wait_low_half(st, armed, deadline);
        }
    }

    /// The first half of [`Ring::park`]: marks the slot in `b` `WAITING` and re-checks the
    /// position and the closed flag. Returns the state word and the low half to sleep on, or
    /// `None` if something changed and the caller should retry at once. A caller that
    /// arms and then does not sleep (a cancelled async wait) leaves only the `WAITING` bit,
    /// which costs the slot's next owner one spurious wake-up.
    fn arm(&self, b: Blocker, getting: bool, draining: bool) -> Option<(&AtomicU64, u32)> {
        let st = self.slots.state(b.idx);
        let armed = b.state | WAITING;
        // SYNC POINT: an RMW even when the bit is already set: it and the owner's swap in
        // `publish`/`release` are read-modify-writes of one word, so either this fails (the
        // state moved on) or the swap reads WAITING and wakes us. SeqCst also orders it before
        // the two loads below against `close` (see there).
        if st
            .compare_exchange(b.state, armed, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let word = if getting {
            &self.ctl.deq
        } else {
            &self.ctl.enq
        };
        // SYNC POINT: SeqCst loads, against `close`'s SeqCst flag store and position loads: if
        // we miss the flag, `close` reads our position (or a later one, whose slot's owner
        // woke us) and clears WAITING on our slot after our CAS.
        if seq(word.load(Ordering::SeqCst)) != b.pos
            || (!draining && self.ctl.closed.load(Ordering::SeqCst) != 0)
        {
            return None;
        }
        // Truncation is the point: the futex compares the low half.
        Some((st, armed as u32))
    }

    /// The position before `p`.
    #[inline]
    fn prev(&self, p: u64) -> u64 {
        if p & (self.one_lap - 1) > 0 {
            p - 1
        } else {
            (p.wrapping_sub(self.one_lap) + self.cap - 1) & POS_MASK
        }
    }

    /// The common case of [`Ring::claim_put`] in one straight pass, with no loop and no
    /// call: the ring is open, the enqueue word records no claim or our own (so no helping
    /// mark is due), the slot is exactly `FREE(p)` (no sleeper on it), and the CAS succeeds.
    /// Anything else returns `None` having changed nothing, and the caller runs the general
    /// loop, which decides every case.
    #[inline(always)]
    fn claim_put_fast(&self, me: Me) -> Option<(Idx, u64)> {
        if self.ctl.closed.load(Ordering::Relaxed) != 0 {
            return None;
        }
        self.claim_fast(&self.ctl.enq, false, me)
    }

    /// The common case of [`Ring::claim_get`], as [`Ring::claim_put_fast`]: the slot is
    /// exactly `FULL(p)` (a message, no tombstone, no sleeper).
    #[inline(always)]
    fn claim_get_fast(&self, me: Me) -> Option<(Idx, u64)> {
        self.claim_fast(&self.ctl.deq, true, me)
    }

    /// The straight pass of the two above on the position word `word`: for writing
    /// (`reading` false) the slot must be `FREE(p)`, for reading `FULL(p)`.
    #[inline(always)]
    fn claim_fast(&self, word: &AtomicU64, reading: bool, me: Me) -> Option<(Idx, u64)> {
        // SYNC POINT: Acquire, as in `claim_put` and `claim_get`.
        let e = word.load(Ordering::Acquire);
        let x = owner(e) & TID_MASK;
        // A record in our own id is our last claim, published or released, unless we hold a
        // claim now (a `Serialize` that puts): then the general loop marks it. (If a dead
        // thread with our id made it, overwriting it unmarked is fine: `reclaim` infers such
        // a claim from its idle slot behind the position word.)
        if x != 0 && (x != me.tid || holding_claim()) {
            return None;
        }
        let p = seq(e);
        let i = self.index(p)?;
        // SYNC POINT: Acquire pairs with the Release swap that freed (consumer's release) or
        // filled (producer's publish) the slot.
        if self.slots.state(i).load(Ordering::Acquire) != pack(p + u64::from(reading), 0) {
            return None;
        }
        self.stamp_slot(i, reading, me);
        // SYNC POINT: AcqRel, as in `claim_put` and `claim_get`.
        word.compare_exchange_weak(
            e,
            pack(self.next(p), me.tid),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .ok()?;
        Some((i, p))
    }

    /// After our claim at `p` (slot `i`): if the ring was closed meanwhile, publishes a
    /// tombstone and returns true (the put reports `Closed`). A get that finds the ring
    /// closed waits only for claims it can see (`claim_pending`); one made after its look
    /// sees the flag here.
    #[inline(always)]
    fn refused_by_close(&self, i: Idx, p: u64) -> bool {
        // SYNC POINT: Acquire, after our AcqRel claim CAS on the enqueue word. A getter that
        // saw the flag (Acquire, from `close`'s store) then does an RMW on that word: if it
        // comes first in the word's order our CAS reads from it, so the flag store happens
        // before this load, which sees it; otherwise the RMW reads our claim.
        if self.ctl.closed.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.publish(i, p, false);
        true
    }

    /// A whole put in the common case: [`Ring::claim_put_fast`], `write`, publish. False if
    /// the fast claim declined (nothing changed); the caller then runs [`Ring::put_until`].
    /// For writes that cannot fail (plain data).
    #[inline(always)]
    pub(crate) fn put_fast(&self, me: Me, write: impl FnOnce(SlotWriter<'_>)) -> bool {
        match self.claim_put_fast(me) {
            Some((i, p)) => {
                if self.refused_by_close(i, p) {
                    // `put_until` reports the close.
                    return false;
                }
                ipc_failpoints::failpoint!("queue.put.claimed");
                // As in `try_put` (free when `write` cannot unwind, as plain-data copies).
                let guard = TombstoneOnUnwind { ring: self, i, p };
                self.slots.write(i, write);
                std::mem::forget(guard);
                self.publish(i, p, true);
                true
            }
            None => false,
        }
    }

    /// A whole get in the common case: [`Ring::claim_get_fast`], `read`, release; `None`
    /// if the fast claim declined (nothing changed), and the caller runs
    /// [`Ring::get_until`].
    #[inline(always)]
    pub(crate) fn get_fast<R>(&self, me: Me, read: impl FnOnce(SlotReader<'_>) -> R) -> Option<R> {
        let (i, p) = self.claim_get_fast(me)?;
        ipc_failpoints::failpoint!("queue.get.claimed");
        let r = self.slots.read(i, read);
        self.release(i, p);
        Some(r)
    }

    /// Claims the next free position for writing: Vyukov's CAS on the enqueue word, which
    /// also records us as the claimer. Before it, if the previous position was claimed by
    /// someone else, marks that slot WRITING in their name (if it is not published yet), so
    /// the record our CAS overwrites is never lost.
    #[inline(always)]
    fn claim_put(&self, me: Me) -> Claimed {
        if self.ctl.closed.load(Ordering::Relaxed) != 0 {
            return Claimed::Closed;
        }
        // SYNC POINT: Acquire (on the word's every load) so a helping mark made from what we
        // read happens after the recorded claimer's stamp store (see `mark`).
        let mut e = self.ctl.enq.load(Ordering::Acquire);
        for _ in 0..MAX_STEPS {
            let p = seq(e);
            let Some(i) = self.index(p) else {
                return Claimed::Corrupted;
            };
            // SYNC POINT: Acquire pairs with the Release store that freed the slot (a
            // consumer's release or a reclaim), so our writes follow its reads.
            let s = self.slots.state(i).load(Ordering::Acquire);
            let d = diff(seq(s), p);
            if d == 0 && owner(s) & !WAITING == 0 {
                self.stamp_slot(i, false, me);
                let x = owner(e) & TID_MASK;
                if x != 0 {
                    self.mark_or_reclaim(self.prev(p), 0, x, me);
                }
                // SYNC POINT: AcqRel: Release publishes our stamp (stored above) to whoever
                // reads our record, or a helper's mark of it, with Acquire.
                match self.ctl.enq.compare_exchange_weak(
                    e,
                    pack(self.next(p), me.tid),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Claimed::Slot(i, p),
                    Err(now) => e = now,
                }
            } else if d < 0 {
                // The slot still holds the previous lap: full at p.
                return Claimed::Blocked(Some(Blocker {
                    idx: i,
                    state: s,
                    pos: p,
                }));
            } else {
                // Taken already (published, or marked by a helper): our view of enq is stale.
                spin();
                e = self.ctl.enq.load(Ordering::Acquire);
            }
        }
        Claimed::Blocked(None)
    }

    /// Makes the `reading` stamp word of slot `i` hold our stamp before we try to claim it
    /// (the claim CAS then publishes it). The word is left in place afterwards, so a
    /// participant reusing slots stores nothing here on its fast path. A claimer that loses
    /// the CAS may have overwritten the winner's stamp with its own (a live thread's, with
    /// another id), which `OsLiveness` then ignores in favour of the id alone; a stamp with
    /// the winner's id is therefore always the winner's own.
    #[inline]
    fn stamp_slot(&self, i: Idx, reading: bool, me: Me) {
        let w = self.slots.stamp(i, reading);
        if w.load(Ordering::Relaxed) != me.stamp {
            w.store(me.stamp, Ordering::Relaxed);
        }
    }

    /// The helping step for the claim record `x` of position `q` that our CAS is about to
    /// overwrite: [`Ring::mark`] for somebody else's record. A record in our own thread id
    /// whose slot is still idle is not ours (we hold no claim: our own claims are published
    /// or released before we claim again), so a dead thread with our id made it: reclaim it
    /// now, while the record still names it.
    #[cold]
    fn mark_or_reclaim(&self, q: u64, phase: u64, x: u64, me: Me) {
        if x != me.tid || holding_claim() {
            self.mark(q, phase, x);
            return;
        }
        let Some(j) = self.index(q) else { return };
        let s = self.slots.state(j).load(Ordering::Acquire);
        if seq(s) == (q + phase) & POS_MASK && owner(s) & TID_MASK == 0 {
            let b = Blocker {
                idx: j,
                state: s,
                pos: q,
            };
            self.reclaim(b, me, &NeverDead);
        }
    }

    /// Marks slot of position `q`, phase `phase` (0: written, 1: read), as claimed by `x` if
    /// it is still idle: the helping step that moves a claim record from the position word
    /// into the slot before the record is overwritten.
    fn mark(&self, q: u64, phase: u64, x: u64) {
        let Some(j) = self.index(q) else { return };
        let st = self.slots.state(j);
        let mut s = st.load(Ordering::Acquire);
        // Retried only while the slot is still idle in that phase, i.e. when a sleeper set or
        // `close` cleared WAITING under us; bounded against a hostile peer flipping the bit.
        for _ in 0..MARK_TRIES {
            if seq(s) != (q + phase) & POS_MASK || owner(s) & TID_MASK != 0 {
                // The owner published or released meanwhile (its swap wins either way).
                return;
            }
            // Keeps the TOMB bit of a tombstone being skipped and the WAITING bit.
            // SYNC POINT: AcqRel; a reclaimer Acquires the marked state.
            match st.compare_exchange(s, s | x, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// Publishes the slot claimed at `p`: the message, or a tombstone if `ok` is false.
    #[inline(always)]
    fn publish(&self, i: Idx, p: u64, ok: bool) {
        let owner = if ok { 0 } else { TOMB };
        // SYNC POINT: Release publishes the payload; pairs with the consumer's Acquire load of
        // the state. A swap: it also overwrites a helper's WRITING mark, and it reads WAITING
        // set by any sleeper whose CAS came first (see `park`). It touches the line we have
        // just written, so it costs no further cross-core miss.
        let prev = self
            .slots
            .state(i)
            .swap(pack(p + 1, owner), Ordering::Release);
        if prev & WAITING != 0 {
            self.wake_slot(i);
        }
        if !ok {
            // Counted for `join` by the consumer that skips it (or by `join` until then).
            ipc_failpoints::failpoint!("queue.publish.before_retire");
            self.ctl.tombstones.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One attempt to claim a slot, write it with `write` and publish it. A `write` that
    /// fails publishes a tombstone instead (consumers skip it) and its error is returned.
    #[inline(always)]
    pub(crate) fn try_put<R, E>(
        &self,
        me: Me,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Attempt<Result<R, E>> {
        let claimed = match self.claim_put_fast(me) {
            Some((i, p)) => Claimed::Slot(i, p),
            None => self.claim_put(me),
        };
        match claimed {
            Claimed::Slot(i, p) if self.refused_by_close(i, p) => Attempt::Closed,
            Claimed::Slot(i, p) => {
                ipc_failpoints::failpoint!("queue.put.claimed");
                // A `write` that unwinds (a panicking `Serialize`) publishes a tombstone on
                // the way out, so the slot is not left claimed by a thread that lives on.
                let guard = TombstoneOnUnwind { ring: self, i, p };
                let held = Holding::new();
                let r = self.slots.write(i, write);
                drop(held);
                std::mem::forget(guard);
                self.publish(i, p, r.is_ok());
                Attempt::Done(r)
            }
            Claimed::Blocked(b) => Attempt::Blocked(b),
            Claimed::Closed => Attempt::Closed,
            Claimed::Corrupted => Attempt::Corrupted,
        }
    }

    /// Claims the next full position for reading (CAS on the dequeue word, with the same
    /// helping step as `claim_put`). Tombstones are claimed and released on the way.
    #[inline(always)]
    fn claim_get(&self, me: Me) -> Claimed {
        // SYNC POINT: Acquire, as in `claim_put`.
        let mut e = self.ctl.deq.load(Ordering::Acquire);
        for _ in 0..MAX_STEPS {
            let p = seq(e);
            let Some(i) = self.index(p) else {
                return Claimed::Corrupted;
            };
            // SYNC POINT: Acquire pairs with the producer's Release publish.
            let s = self.slots.state(i).load(Ordering::Acquire);
            let d = diff(seq(s), p + 1);
            if d == 0 && owner(s) & TID_MASK == 0 {
                self.stamp_slot(i, true, me);
                let x = owner(e) & TID_MASK;
                if x != 0 {
                    self.mark_or_reclaim(self.prev(p), 1, x, me);
                }
                // SYNC POINT: AcqRel, as in `claim_put`.
                match self.ctl.deq.compare_exchange_weak(
                    e,
                    pack(self.next(p), me.tid),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) if owner(s) & TOMB != 0 => {
                        // A tombstone: ours to count and free; then go on.
                        self.settle(i, p);
                        ipc_failpoints::failpoint!("queue.tombstone.published");
                        self.release(i, p);
                        e = pack(self.next(p), me.tid);
                    }
                    Ok(_) => return Claimed::Slot(i, p),
                    Err(now) => e = now,
                }
            } else if d < 0 {
                // Not yet published at p.
                return Claimed::Blocked(Some(Blocker {
                    idx: i,
                    state: s,
                    pos: p,
                }));
            } else {
                spin();
                e = self.ctl.deq.load(Ordering::Acquire);
            }
        }
        Claimed::Blocked(None)
    }

    /// Releases the slot read at `p` for the next lap.
    #[inline(always)]
    fn release(&self, i: Idx, p: u64) {
        // SYNC POINT: Release orders our payload reads before the next lap's producer writes
        // (its Acquire load of the state). A swap, as in `publish`.
        let prev = self
            .slots
            .state(i)
            .swap(pack(p + self.one_lap, 0), Ordering::Release);
        if prev & WAITING != 0 {
            self.wake_slot(i);
        }
    }

    /// One attempt to claim a full slot, read it with `read` and release it.
    #[inline(always)]
    pub(crate) fn try_get<R>(
        &self,
        me: Me,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Attempt<R> {
        let claimed = match self.claim_get_fast(me) {
            Some((i, p)) => Claimed::Slot(i, p),
            None => self.claim_get(me),
        };
        match claimed {
            Claimed::Slot(i, p) => {
                ipc_failpoints::failpoint!("queue.get.claimed");
                let r = self.slots.read(i, read);
                self.release(i, p);
                Attempt::Done(r)
            }
            Claimed::Blocked(b) => Attempt::Blocked(b),
            Claimed::Closed => Attempt::Closed,
            Claimed::Corrupted => Attempt::Corrupted,
        }
    }

    /// If the slot in `b` is claimed by a participant that is dead, reclaims it: a writer's
    /// slot becomes a tombstone that consumers skip, a reader's is freed and its message
    /// counted as dropped. The claimer is the id in the slot's state or, for a claim not yet
    /// marked there, the record in the position word. The CAS goes from exactly the inspected
    /// state, so a slot that moved on meanwhile is left alone; a live claimer is never
    /// reclaimed.
    pub(crate) fn reclaim(&self, b: Blocker, me: Me, live: &impl Liveness) -> Reclaim {
        let sq = seq(b.state);
        let at = sq & (self.one_lap - 1);
        let i = b.idx.0 as u64;
        let reading = if at == i {
            false
        } else if at == i + 1 {
            true
        } else {
            return Reclaim::Corrupted;
        };
        // The position the slot is in.
        let q = if reading { (sq - 1) & POS_MASK } else { sq };
        let mut tid = owner(b.state) & TID_MASK;
        if tid == 0 {
            if !reading && owner(b.state) & TOMB != 0 {
                return Reclaim::Corrupted;
            }
            // SYNC POINT: Acquire pairs with the claimer's AcqRel CAS on the word.
            let rec = if reading {
                &self.ctl.deq
            } else {
                &self.ctl.enq
            }
            .load(Ordering::Acquire);
            let past = diff(seq(rec), self.next(q));
            if past < 0 {
                // Nobody claimed q.
                return Reclaim::Nothing;
            }
            tid = owner(rec) & TID_MASK;
            if past > 0 {
                // Claimed, and the record moved on without marking the slot: only a claimer
                // with the same thread id that held no claim skips the mark (`claim_fast`),
                // so the claimer of q had that id and was not that thread: it is dead. (A
                // slot that was marked or moved on meanwhile fails the CAS below.)
                return self.reclaim_dead(b, q, reading, me);
            }
            if tid == 0 {
                return Reclaim::Nothing;
            }
        }
        // A claim in our own thread id is ours only while we hold one (inside a write); else
        // it was made by a dead thread whose id we now have, whatever its stamp says (a
        // stamp can match ours when the id was reused within one clock tick).
        let dead = if tid == me.tid {
            !holding_claim()
        } else {
            let stamp = self.slots.stamp(b.idx, reading).load(Ordering::Relaxed);
            live.is_dead(tid, stamp)
        };
        if !dead {
            return Reclaim::Nothing;
        }
        self.reclaim_dead(b, q, reading, me)
    }

    /// The reclaim of the slot in `b` (position `q`, read claim if `reading`), whose claimer
    /// is dead: by a CAS from exactly `b.state`.
    fn reclaim_dead(&self, b: Blocker, q: u64, reading: bool, me: Me) -> Reclaim {
        let st = self.slots.state(b.idx);
        if reading {
            // Take the dead reader's claim over (keeping TOMB and WAITING), so that we are
            // the holder that records the retirement; then free the slot. Killed in between,
            // we leave a claim of a dead reader again, and the next reclaimer re-does both.
            let taken = pack(q + 1, me.tid | (owner(b.state) & (TOMB | WAITING)));
            // SYNC POINT: AcqRel; the dead reader's reads are over, and our release's
            // Release orders this before the next lap's producer.
            if st
                .compare_exchange(b.state, taken, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return Reclaim::Nothing;
            }
            ipc_failpoints::failpoint!("queue.reclaim.before_retire");
            self.settle(b.idx, q);
            if owner(b.state) & TOMB == 0 {
                self.ctl.dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.release(b.idx, q);
        } else {
            // SYNC POINT: AcqRel; the consumer that skips the tombstone Acquires it.
            if st
                .compare_exchange(
                    b.state,
                    pack(q + 1, TOMB),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return Reclaim::Nothing;
            }
            if b.state & WAITING != 0 {
                self.wake_slot(b.idx);
            }
            // Counted for `join` by the consumer that skips it (or by `join` until then).
            ipc_failpoints::failpoint!("queue.reclaim.before_retire");
            self.ctl.tombstones.fetch_add(1, Ordering::Relaxed);
        }
        Reclaim::Reclaimed
    }

    /// Reclaims every slot whose claimer is dead (for `join`, which waits on all of them).
    pub(crate) fn reclaim_all(&self, me: Me, live: &impl Liveness) -> usize {
        let mut n = 0;
        for i in 0..self.cap {
            let idx = Idx(i as usize);
            let s = self.slots.state(idx).load(Ordering::Acquire);
            let b = Blocker {
                idx,
                state: s,
                pos: 0,
            };
            if self.reclaim(b, me, live) == Reclaim::Reclaimed {
                n += 1;
            }
        }
        n
    }

    /// Whether the slot in `b`, which blocked a get at position `b.pos`, is claimed by a
    /// producer that has not published yet (its claim marked in the slot, or still only
    /// recorded in the enqueue word): a get on a closed ring must wait for that message (or
    /// for its owner's death) instead of reporting `Closed`.
    fn claim_pending(&self, b: Blocker) -> Option<u64> {
        if seq(b.state) != b.pos {
            return None;
        }
        let tid = owner(b.state) & TID_MASK;
        if tid != 0 {
            return Some(tid);
        }
        // SYNC POINT: an RMW that changes nothing, after the caller's Acquire load of the
        // closed flag: it reads the latest record, or a claim after it sees the flag (see
        // `refused_by_close`). Only gets on a closed ring come here.
        let rec = self.ctl.enq.fetch_add(0, Ordering::AcqRel);
        let tid = owner(rec) & TID_MASK;
        (seq(rec) == self.next(b.pos) && tid != 0).then_some(tid)
    }

    /// Whether a get on a closed ring keeps waiting for the claim of `tid` on the slot in
    /// `b`: while the claimer is verified alive (its stamp is its own), or, when that cannot
    /// be verified (a racing claimer overwrote the stamp, or the memory is corrupted), for
    /// `DRAIN_GRACE` from `since`, so stray ids in corrupted memory cannot keep a plain
    /// `get` on a closed queue waiting for ever.
    fn keep_draining(
        &self,
        b: Blocker,
        tid: u64,
        live: &impl Liveness,
        since: &mut Option<Deadline>,
    ) -> bool {
        let stamp = self.slots.stamp(b.idx, false).load(Ordering::Relaxed);
        if live.is_verified_alive(tid, stamp) {
            return true;
        }
        #[cfg(not(loom))]
        {
            !since
                .get_or_insert_with(|| Deadline::after(DRAIN_GRACE))
                .is_expired()
        }
        #[cfg(loom)]
        {
            let _ = since;
            true
        }
    }

    /// Closes the ring and wakes every sleeper.
    pub(crate) fn close(&self) {
        // SYNC POINT: SeqCst store, then SeqCst position loads and slot RMWs: pairs with the
        // SeqCst CAS and loads in `park`.
        self.ctl.closed.store(1, Ordering::SeqCst);
        ipc_failpoints::failpoint!("queue.close.mid");
        for word in [&self.ctl.enq, &self.ctl.deq] {
            if let Some(i) = self.index(seq(word.load(Ordering::SeqCst))) {
                // Clearing the bit changes the word, so a sleeper between its flag check and
                // its futex call returns at once; sleepers woken re-check the flag.
                let prev = self.slots.state(i).fetch_and(!WAITING, Ordering::SeqCst);
                if prev & WAITING != 0 {
                    self.wake_slot(i);
                }
            }
        }
        let w = &self.ctl.retired;
        w.fetch_or(CLOSED, Ordering::SeqCst);
        wake_low_half(w, u32::MAX);
    }

    /// Whether [`Ring::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        // A line of its own that only `close` writes: reading it on every put and on every
        // empty get never pulls the producers' hot line to a consumer.
        self.ctl.closed.load(Ordering::Acquire) != 0
    }

    /// The number of positions before `p`, modulo [`Ring::period`].
    fn count(&self, p: u64) -> u64 {
        let lap = (p & POS_MASK) >> self.one_lap.trailing_zeros();
        let i = (p & (self.one_lap - 1)).min(self.cap);
        (lap * self.cap + i) % self.period()
    }

    /// How many positions the 40-bit encoding holds before it wraps.
    fn period(&self) -> u64 {
        ((POS_MASK + 1) >> self.one_lap.trailing_zeros()) * self.cap
    }

    /// `a - b` for two counts modulo the period, as a signed distance.
    fn distance(&self, a: u64, b: u64) -> i64 {
        let w = self.period();
        let d = (a % w + w - b % w) % w;
        if d > w / 2 {
            d as i64 - w as i64
        } else {
            d as i64
        }
    }

    /// Messages put so far (claims minus tombstones), modulo the period.
    #[cfg(all(test, loom))]
    pub(crate) fn messages(&self) -> u64 {
        let tombs = self.ctl.tombstones.load(Ordering::Acquire);
        let claims = self.count(seq(self.ctl.enq.load(Ordering::Acquire)));
        self.distance(claims, tombs).max(0) as u64
    }

    /// Approximate number of messages in the ring, from the positions alone.
    pub(crate) fn len(&self) -> usize {
        let deq = self.count(seq(self.ctl.deq.load(Ordering::Acquire)));
        let enq = self.count(seq(self.ctl.enq.load(Ordering::Acquire)));
        let n = self.distance(enq, deq).clamp(0, self.cap as i64);
        usize::try_from(n).unwrap_or(0)
    }

    /// Messages a dead consumer took with it.
    pub(crate) fn dropped(&self) -> u64 {
        self.ctl.dropped.load(Ordering::Relaxed)
    }

    /// Tasks claimed but not retired, given `done` `task_done` calls and `sys` system
    /// retirements (both read before this call).
    fn unfinished_with(&self, done: u64, sys: u64) -> u64 {
        // After the counts were read: every claim a retirement in them accounts for is
        // visible now.
        let claims = self.count(seq(self.ctl.enq.load(Ordering::Acquire)));
        let retired = done.wrapping_add(sys) % self.period();
        self.distance(claims, retired).max(0) as u64
    }

    /// Tasks put but not retired, by the `sys` hint: never fewer than [`Ring::unfinished`]
    /// (the hint misses at most one retirement per kill).
    fn unfinished_fast(&self) -> u64 {
        // SYNC POINT: Acquire pairs with the RMWs in `settle` and `task_done`.
        let done = self.ctl.done.load(Ordering::Acquire);
        let sys = self.ctl.sys.load(Ordering::Acquire);
        self.unfinished_with(done, sys)
    }

    /// Tasks put but neither marked done, tombstoned nor dropped, exactly: the retire
    /// records summed, plus tombstones not yet skipped (so not yet recorded). Reads every
    /// slot: for `join`. The records are summed before the states are read, and a
    /// tombstone's record is read again after its state, so a retirement recorded meanwhile
    /// is counted at most once (at worst not at all, and the next look counts it).
    pub(crate) fn unfinished(&self) -> u64 {
        // SYNC POINT: Acquire pairs with the RMWs in `settle` and `task_done`.
        let mut retired = self.ctl.done.load(Ordering::Acquire);
        for i in 0..self.cap {
            let r = self.slots.record(Idx(i as usize)).load(Ordering::Acquire);
            retired = retired.wrapping_add(r >> 32);
        }
        for i in 0..self.cap {
            let idx = Idx(i as usize);
            let s = self.slots.state(idx).load(Ordering::Acquire);
            if owner(s) & TOMB == 0 {
                continue;
            }
            let q = seq(s).wrapping_sub(1) & POS_MASK;
            if self.index(q) != Some(idx) {
                continue;
            }
            let r = self.slots.record(idx).load(Ordering::Acquire);
            if r & NO_LAP != self.lap32(q) {
                retired = retired.wrapping_add(1);
            }
        }
        self.unfinished_with(retired, 0)
    }

    /// Marks one task done (`JoinableQueue.task_done`).
    pub(crate) fn task_done(&self) -> Result<(), TooManyDone> {
        let w = &self.ctl.done;
        let mut cur = w.load(Ordering::Acquire);
        for _ in 0..MAX_STEPS {
            let sys = self.ctl.sys.load(Ordering::Acquire);
            if self.unfinished_with(cur, sys) == 0 {
                return Err(TooManyDone);
            }
            // SYNC POINT: AcqRel; Release pairs with a joiner's Acquire load.
            match w.compare_exchange_weak(
                cur,
                cur.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.retire();
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
        // Only a peer rewriting the word on every step gets here: count it anyway.
        w.fetch_add(1, Ordering::AcqRel);
        self.retire();
        Ok(())
    }
}

/// Spin briefly, then tell the caller to park: a wait that outlasts a fraction of a
/// microsecond sleeps in the futex rather than burning the CPU its peer may need.
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    /// Spin steps of 1, 2, 4 and 8 `spin_loop`s (15 in all, well under a microsecond), then
    /// park. Measured on 2 cores: with 63 spins and two yields a ping-pong never parks (each
    /// reply lands inside the spin window, both sides burn a CPU); with 15 it parks and
    /// matches a bare futex ping-pong's round trip, and streams lose nothing.
    #[cfg(not(loom))]
    const SPIN_LIMIT: u32 = 3;
    /// No yields: `sched_yield` with the peer on the other CPU only burns time.
    #[cfg(not(loom))]
    const YIELD_LIMIT: u32 = 3;
    /// Loom models park at once: a loom yield deprioritises the yielding thread, so spinning
    /// there would let the peer finish first and leave the parking path unexplored.
    #[cfg(loom)]
    const SPIN_LIMIT: u32 = 0;
    #[cfg(loom)]
    const YIELD_LIMIT: u32 = 0;

    pub(crate) fn new() -> Backoff {
        Backoff {
            step: if cfg!(loom) { 1 } else { 0 },
        }
    }

    /// One wait step.
    pub(crate) fn snooze(&mut self) {
        if self.step <= Self::SPIN_LIMIT {
            for _ in 0..1u32 << self.step {
                spin();
            }
        } else {
            yield_now();
        }
        self.step += 1;
    }

    /// Whether spinning is over and the caller should park.
    pub(crate) fn is_completed(&self) -> bool {
        self.step > Self::YIELD_LIMIT
    }
}

/// Rate-limits death checks per handle and holds the clock they use.
pub(crate) struct DeathWatch {
    #[cfg(not(loom))]
    base: std::time::Instant,
    #[cfg(not(loom))]
    last: std::sync::atomic::AtomicU64,
}

impl DeathWatch {
    pub(crate) fn new() -> DeathWatch {
        DeathWatch {
            #[cfg(not(loom))]
            base: std::time::Instant::now(),
            #[cfg(not(loom))]
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a blocked caller should look for a dead claimer now: at most once per
    /// `STUCK_CHECK` per handle (a check may read `/proc`).
    #[cfg(not(loom))]
    fn due(&self) -> bool {
        use std::sync::atomic::Ordering as O;
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last.load(O::Relaxed);
        now.saturating_sub(last) >= STUCK_CHECK.as_nanos() as u64
            && self
                .last
                .compare_exchange(last, now, O::Relaxed, O::Relaxed)
                .is_ok()
    }

    #[cfg(loom)]
    fn due(&self) -> bool {
        true
    }

    /// How long a blocked caller sleeps at most before looking again.
    #[cfg(not(loom))]
    fn slice(&self, deadline: Deadline) -> Deadline {
        deadline.min(Deadline::after(SLICE))
    }

    #[cfg(loom)]
    fn slice(&self, deadline: Deadline) -> Deadline {
        deadline
    }
}

/// How a blocking operation ended without its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The deadline passed (immediately, for `try_` calls).
    Deadline,
    /// The queue is closed (and, for gets, drained).
    Closed,
    /// Impossible shared state.
    Corrupted,
}

/// What a blocked operation waits for before its next attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// A sleep on the slot in `b` (see [`Ring::park`]) until `slice`.
    Park {
        b: Blocker,
        getting: bool,
        draining: bool,
        slice: Deadline,
    },
    /// A yield: the attempt gave up under contention and has no slot to sleep on.
    Yield,
}

/// What a step of a blocked operation ended with.
pub(crate) enum Step<R> {
    /// The operation is over.
    Done(R),
    /// The driver must do this wait, then call the step again.
    Wait(Wait),
}

/// The state a blocked put or get keeps between its steps.
pub(crate) struct Blocked {
    backoff: Backoff,
    /// The blocker of an attempt made before the step (the first, inlined one), if any.
    blocked: Option<Option<Blocker>>,
    /// When a get on a closed ring started waiting for a claimer it cannot verify.
    grace: Option<Deadline>,
}

impl Blocked {
    fn after(first: Option<Blocker>) -> Blocked {
        Blocked {
            backoff: Backoff::new(),
            blocked: Some(first),
            grace: None,
        }
    }

    /// A blocked operation that has made no attempt yet.
    #[cfg(all(feature = "async", not(loom)))]
    fn fresh() -> Blocked {
        Blocked {
            backoff: Backoff::new(),
            blocked: None,
            grace: None,
        }
    }
}

impl<S: Slots> Ring<'_, S> {
    fn recover(
        &self,
        b: Option<Blocker>,
        me: Me,
        watch: &DeathWatch,
        live: &impl Liveness,
    ) -> Result<bool, Stop> {
        match b {
            Some(b) if watch.due() => match self.reclaim(b, me, live) {
                Reclaim::Nothing => Ok(false),
                Reclaim::Reclaimed => Ok(true),
                Reclaim::Corrupted => Err(Stop::Corrupted),
            },
            _ => Ok(false),
        }
    }

    /// After an attempt blocked on `b`: whether a dead claimer's slot was reclaimed (retry at
    /// once). Dead claimers are looked for only when about to give up or to sleep.
    fn reclaimed(
        &self,
        b: Option<Blocker>,
        me: Me,
        backoff: &Backoff,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
    ) -> Result<bool, Stop> {
        if backoff.is_completed() || deadline.is_expired() {
            self.recover(b, me, watch, live)
        } else {
            Ok(false)
        }
    }

    /// One wait after an attempt blocked on `b` (of the dequeue word if `getting`, else of
    /// the enqueue word): `Stop::Deadline` once `deadline` has passed, else a spin step
    /// (`None`: attempt again), or once spinning is over, the wait the driver must do: a sleep
    /// on `b`'s slot (a yield if the attempt gave up under contention), bounded by the
    /// death-check slice.
    fn pause(
        &self,
        b: Option<Blocker>,
        getting: bool,
        backoff: &mut Backoff,
        deadline: Deadline,
        watch: &DeathWatch,
        draining: bool,
    ) -> Result<Option<Wait>, Stop> {
        if deadline.is_expired() {
            return Err(Stop::Deadline);
        }
        if !backoff.is_completed() {
            backoff.snooze();
            return Ok(None);
        }
        Ok(Some(match b {
            Some(b) => Wait::Park {
                b,
                getting,
                draining,
                slice: watch.slice(deadline),
            },
            None => Wait::Yield,
        }))
    }

    /// Does `wait` by blocking the calling thread.
    fn wait_blocking(&self, wait: Wait) {
        match wait {
            Wait::Park {
                b,
                getting,
                draining,
                slice,
            } => self.park(b, getting, draining, slice),
            Wait::Yield => yield_now(),
        }
    }

    /// Puts with `write`, waiting until `deadline` for room (spin, then futex), and
    /// reclaiming slots of dead consumers that block it. The first attempt is inlined into
    /// the caller; waiting is out of line.
    #[inline(always)]
    pub(crate) fn put_until<R, E>(
        &self,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        match self.try_put(me, write) {
            Attempt::Done(r) => Ok(r),
            Attempt::Closed => Err(Stop::Closed),
            Attempt::Corrupted => Err(Stop::Corrupted),
            Attempt::Blocked(b) => self.put_blocked(b, me, deadline, watch, live, write),
        }
    }

    /// `put_until` after a first attempt blocked on `first`.
    #[inline(never)]
    fn put_blocked<R, E>(
        &self,
        first: Option<Blocker>,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        let mut op = Blocked::after(first);
        loop {
            match self.put_step(&mut op, me, deadline, watch, live, write) {
                Step::Done(r) => return r,
                Step::Wait(w) => self.wait_blocking(w),
            }
        }
    }

    /// Attempts of a blocked put until it ends or must wait: the loop of
    /// [`Ring::put_until`] without its waits, which the caller (a blocking or an async
    /// driver) does.
    fn put_step<R, E>(
        &self,
        op: &mut Blocked,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Step<Result<Result<R, E>, Stop>> {
        loop {
            let b = match op.blocked.take() {
                Some(b) => b,
                None => match self.try_put(me, write) {
                    Attempt::Done(r) => return Step::Done(Ok(r)),
                    Attempt::Closed => return Step::Done(Err(Stop::Closed)),
                    Attempt::Corrupted => return Step::Done(Err(Stop::Corrupted)),
                    Attempt::Blocked(b) => b,
                },
            };
            match self.reclaimed(b, me, &op.backoff, deadline, watch, live) {
                Err(stop) => return Step::Done(Err(stop)),
                Ok(true) => continue,
                Ok(false) => {}
            }
            match self.pause(b, false, &mut op.backoff, deadline, watch, false) {
                Err(stop) => return Step::Done(Err(stop)),
                Ok(None) => {}
                Ok(Some(w)) => return Step::Wait(w),
            }
        }
    }

    /// Gets with `read`, waiting until `deadline` for a message, skipping slots of dead
    /// producers. A closed ring returns what it holds, then `Stop::Closed`. The first attempt
    /// is inlined into the caller; waiting is out of line.
    #[inline(always)]
    pub(crate) fn get_until<R>(
        &self,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Result<R, Stop> {
        match self.try_get(me, read) {
            Attempt::Done(r) => Ok(r),
            Attempt::Corrupted => Err(Stop::Corrupted),
            Attempt::Closed => self.get_blocked(None, me, deadline, watch, live, read),
            Attempt::Blocked(b) => self.get_blocked(b, me, deadline, watch, live, read),
        }
    }

    /// `get_until` after a first attempt blocked on `first` (or found the ring closed).
    #[inline(never)]
    fn get_blocked<R>(
        &self,
        first: Option<Blocker>,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Result<R, Stop> {
        let mut op = Blocked::after(first);
        loop {
            match self.get_step(&mut op, me, deadline, watch, live, read) {
                Step::Done(r) => return r,
                Step::Wait(w) => self.wait_blocking(w),
            }
        }
    }

    /// Attempts of a blocked get until it ends or must wait (see [`Ring::put_step`]).
    fn get_step<R>(
        &self,
        op: &mut Blocked,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Step<Result<R, Stop>> {
        loop {
            let b = match op.blocked.take() {
                Some(b) => b,
                None => match self.try_get(me, read) {
                    Attempt::Done(r) => return Step::Done(Ok(r)),
                    Attempt::Corrupted => return Step::Done(Err(Stop::Corrupted)),
                    Attempt::Closed => None,
                    Attempt::Blocked(b) => b,
                },
            };
            match self.reclaimed(b, me, &op.backoff, deadline, watch, live) {
                Err(stop) => return Step::Done(Err(stop)),
                Ok(true) => continue,
                Ok(false) => {}
            }
            let mut draining = None;
            // SYNC POINT: Acquire (see `refused_by_close`).
            if self.ctl.closed.load(Ordering::Acquire) != 0 {
                // Drained unless a producer claimed a slot before the close (or racing it) and
                // has not published yet: its put will return `Ok`, so its message must be
                // delivered; wait for it (a dead claimer's slot is reclaimed as usual).
                // Anything published before the close is seen by the attempt below (Acquire
                // on the closed flag orders it after the flag).
                match self.try_get(me, read) {
                    Attempt::Done(r) => return Step::Done(Ok(r)),
                    Attempt::Corrupted => return Step::Done(Err(Stop::Corrupted)),
                    Attempt::Blocked(Some(b)) => match self.claim_pending(b) {
                        Some(tid) if self.keep_draining(b, tid, live, &mut op.grace) => {
                            draining = Some(b);
                        }
                        _ => return Step::Done(Err(Stop::Closed)),
                    },
                    _ => return Step::Done(Err(Stop::Closed)),
                }
            }
            let paused = match draining {
                Some(d) => {
                    op.blocked = Some(Some(d));
                    self.pause(Some(d), true, &mut op.backoff, deadline, watch, true)
                }
                None => self.pause(b, true, &mut op.backoff, deadline, watch, false),
            };
            match paused {
                Err(stop) => return Step::Done(Err(stop)),
                Ok(None) => {}
                Ok(Some(w)) => return Step::Wait(w),
            }
        }
    }

    /// Waits until every task put has been marked done (or dropped with a dead consumer).
    pub(crate) fn join_until(
        &self,
        me: Me,
        deadline: Deadline,
        live: &impl Liveness,
    ) -> Result<(), Stop> {
        // The exact count reads every slot: only when the hint is small enough that
        // tombstones not yet skipped may explain it, or after a quiet slice.
        let mut quiet = false;
        loop {
            if self.unfinished_fast() == 0 {
                return Ok(());
            }
            let key = self.prepare_join();
            let fast = self.unfinished_fast();
            if fast == 0 || ((fast <= self.cap || quiet) && self.unfinished() == 0) {
                return Ok(());
            }
            if deadline.is_expired() {
                return Err(Stop::Deadline);
            }
            #[cfg(not(loom))]
            let slice = deadline.min(Deadline::after(SLICE));
            #[cfg(loom)]
            let slice = deadline;
            quiet = self.wait_join(key, slice) == WaitOutcome::TimedOut;
            if quiet {
                self.reclaim_all(me, live);
            }
        }
    }
}

/// The async drivers of blocked puts and gets: the same steps as the blocking loops, with
/// each sleep a registration with the process's futex waiter thread
/// ([`ipc_shm::lowlevel::sync::FutexWait`]) instead of a blocked thread.
///
/// Cancel safety: a claim is only ever held inside one synchronous step (`try_put`,
/// `try_get`), never across an `.await`; between steps the future holds nothing but the
/// `WAITING` bit it may have set on a slot (which costs that slot's next owner one spurious
/// wake-up) and its waiter registration (removed when the future drops).
#[cfg(all(feature = "async", not(loom)))]
impl<S: Slots> Ring<'_, S> {
    async fn wait_async(&self, wait: Wait) {
        match wait {
            Wait::Park {
                b,
                getting,
                draining,
                slice,
            } => {
                if let Some((st, armed)) = self.arm(b, getting, draining) {
                    ipc_shm::lowlevel::sync::FutexWait::low_half(st, armed, slice).await;
                }
            }
            Wait::Yield => YieldNow(false).await,
        }
    }

    /// [`Ring::put_until`] as a future. The thread identity a claim records is taken afresh
    /// at every step: a task may move between threads at each `.await`.
    pub(crate) async fn put_async<R, E>(
        &self,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        write: &mut impl FnMut(SlotWriter<'_>) -> Result<R, E>,
    ) -> Result<Result<R, E>, Stop> {
        let mut op = Blocked::fresh();
        loop {
            match self.put_step(&mut op, Me::current(), deadline, watch, live, write) {
                Step::Done(r) => return r,
                Step::Wait(w) => self.wait_async(w).await,
            }
        }
    }

    /// [`Ring::get_until`] as a future (see [`Ring::put_async`]).
    pub(crate) async fn get_async<R>(
        &self,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        read: &mut impl FnMut(SlotReader<'_>) -> R,
    ) -> Result<R, Stop> {
        let mut op = Blocked::fresh();
        loop {
            match self.get_step(&mut op, Me::current(), deadline, watch, live, read) {
                Step::Done(r) => return r,
                Step::Wait(w) => self.wait_async(w).await,
            }
        }
    }
}

/// Returns `Pending` once (waking itself), so the executor runs other tasks: the async form
/// of a `sched_yield`.
#[cfg(all(feature = "async", not(loom)))]
struct YieldNow(bool);

#[cfg(all(feature = "async", not(loom)))]
impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
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
        Ring::new(ctl, &slots, cap).init();
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

#[cfg(all(test, loom))]
mod loom_tests {
    //! Models of the protocol with threads standing in for processes.
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    struct HeapSlot {
        state: AtomicU64,
        stamps: [AtomicU64; 2],
        record: AtomicU64,
        data: UnsafeCell<[u8; 8]>,
    }

    struct HeapSlots(Vec<HeapSlot>);

    impl Slots for HeapSlots {
        fn state(&self, i: Idx) -> &AtomicU64 {
            &self.0[i.0].state
        }
        fn stamp(&self, i: Idx, reading: bool) -> &AtomicU64 {
            &self.0[i.0].stamps[usize::from(reading)]
        }
        fn record(&self, i: Idx) -> &AtomicU64 {
            &self.0[i.0].record
        }
        fn write<R>(&self, i: Idx, f: impl FnOnce(SlotWriter<'_>) -> R) -> R {
            self.0[i.0].data.with_mut(|p| {
                f(SlotWriter {
                    ptr: p.cast::<u8>(),
                    len: 8,
                    _slot: PhantomData,
                })
            })
        }
        fn read<R>(&self, i: Idx, f: impl FnOnce(SlotReader<'_>) -> R) -> R {
            self.0[i.0].data.with(|p| {
                f(SlotReader {
                    ptr: p.cast::<u8>(),
                    len: 8,
                    _slot: PhantomData,
                })
            })
        }
    }

    /// Participants 1..=4; a participant "dies" by setting its flag and stopping.
    struct Deaths([AtomicBool; 5]);

    impl Liveness for Deaths {
        fn is_dead(&self, tid: u64, _stamp: u64) -> bool {
            self.0
                .get(tid as usize)
                .is_some_and(|d| d.load(Ordering::SeqCst))
        }
    }

    struct Model {
        ctl: Control,
        slots: HeapSlots,
        cap: usize,
        deaths: Deaths,
    }

    impl Model {
        fn new(cap: usize) -> Arc<Model> {
            let m = Model {
                ctl: Control::new(),
                slots: HeapSlots(
                    (0..cap)
                        .map(|_| HeapSlot {
                            state: AtomicU64::new(0),
                            stamps: [AtomicU64::new(0), AtomicU64::new(0)],
                            record: AtomicU64::new(0),
                            data: UnsafeCell::new([0; 8]),
                        })
                        .collect(),
                ),
                cap,
                deaths: Deaths(std::array::from_fn(|_| AtomicBool::new(false))),
            };
            m.ring().init();
            Arc::new(m)
        }
        fn ring(&self) -> Ring<'_, HeapSlots> {
            Ring::new(&self.ctl, &self.slots, self.cap)
        }
    }

    fn me(n: u32) -> Me {
        Me::new(n, u64::from(n))
    }

    fn put(r: &Ring<'_, HeapSlots>, who: Me, v: u64) -> bool {
        matches!(
            r.try_put(who, &mut |mut w: SlotWriter<'_>| {
                assert!(w.store(0, &v.to_le_bytes()));
                Ok::<(), ()>(())
            }),
            Attempt::Done(Ok(()))
        )
    }

    /// A thread that puts `v` as `who` with a blocking `put_until` (it parks on a full ring).
    fn spawn_blocking_put(
        m: &Arc<Model>,
        who: Me,
        v: u64,
    ) -> loom::thread::JoinHandle<Result<Result<(), ()>, Stop>> {
        let m = Arc::clone(m);
        loom::thread::spawn(move || {
            let w = DeathWatch::new();
            m.ring().put_until(
                who,
                Deadline::never(),
                &w,
                &m.deaths,
                &mut |mut wr: SlotWriter<'_>| {
                    assert!(wr.store(0, &v.to_le_bytes()));
                    Ok::<(), ()>(())
                },
            )
        })
    }

    /// A consumer thread blocked in `get_until` with no deadline.
    fn spawn_blocking_get(
        m: &Arc<Model>,
        who: Me,
    ) -> loom::thread::JoinHandle<Result<Option<u64>, Stop>> {
        let m = Arc::clone(m);
        loom::thread::spawn(move || {
            let w = DeathWatch::new();
            m.ring().get_until(
                who,
                Deadline::never(),
                &w,
                &m.deaths,
                &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0),
            )
        })
    }

    fn get(r: &Ring<'_, HeapSlots>, who: Me) -> Option<u64> {
        match r.try_get(who, &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
            Attempt::Done(v) => v,
            _ => None,
        }
    }

    /// 2 producers and 1 consumer on capacities 1 and 2: every value delivered once, each
    /// producer's values in order.
    #[test]
    fn two_producers_one_consumer() {
        for cap in [1, 2] {
            loom::model(move || {
                let m = Model::new(cap);
                let ps: Vec<_> = (0..2u64)
                    .map(|k| {
                        let m = Arc::clone(&m);
                        loom::thread::spawn(move || {
                            let r = m.ring();
                            let mut sent = 0;
                            for v in [k * 10 + 1, k * 10 + 2] {
                                if put(&r, me(k as u32 + 1), v) {
                                    sent += 1;
                                } else {
                                    break;
                                }
                            }
                            sent
                        })
                    })
                    .collect();
                let r = m.ring();
                let mut got = Vec::new();
                for _ in 0..3 {
                    if let Some(v) = get(&r, me(3)) {
                        got.push(v);
                    }
                }
                let sent: u64 = ps.into_iter().map(|p| p.join().unwrap()).sum();
                while let Some(v) = get(&r, me(3)) {
                    got.push(v);
                }
                if got.len() as u64 != sent {
                    let st: Vec<_> = (0..cap)
                        .map(|i| {
                            let s = m.slots.state(Idx(i)).load(Ordering::SeqCst);
                            (seq(s), owner(s))
                        })
                        .collect();
                    let e = m.ctl.enq.load(Ordering::SeqCst);
                    let d = m.ctl.deq.load(Ordering::SeqCst);
                    panic!(
                        "cap {cap} sent {sent} got {got:?} slots {st:?} enq {:?} deq {:?} try {:?}",
                        (seq(e), owner(e)),
                        (seq(d), owner(d)),
                        r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0))
                    );
                }
                for k in 0..2 {
                    let mine: Vec<_> = got.iter().filter(|v| **v / 10 == k).collect();
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "{got:?}");
                }
                assert_eq!(r.len(), 0);
            });
        }
    }

    /// A consumer parked on the slot it waits for (WAITING bit, then futex) is always woken
    /// by the put that publishes it with a swap (a lost wake-up would deadlock the model).
    #[test]
    fn slot_waiting_loses_no_wakeup() {
        loom::model(|| {
            let m = Model::new(1);
            let c = spawn_blocking_get(&m, me(2));
            assert!(put(&m.ring(), me(1), 7));
            assert_eq!(c.join().unwrap(), Ok(Some(7)));
        });
    }

    /// A consumer parked on an empty ring is woken by `close` and reports it closed; a put
    /// racing with the close either arrives or is refused.
    #[test]
    fn close_wakes_a_parked_consumer() {
        loom::model(|| {
            let m = Model::new(1);
            let c = spawn_blocking_get(&m, me(2));
            m.ring().close();
            assert_eq!(c.join().unwrap(), Err(Stop::Closed));
        });
    }

    /// A put racing `close` while a consumer waits: a put that returns `Ok` is delivered to
    /// the consumer, which reports `Closed` only when the put was refused (a claim made
    /// before the close is waited for, never abandoned).
    #[test]
    fn put_racing_close_is_delivered_or_refused() {
        loom::model(|| {
            let m = Model::new(1);
            let c = spawn_blocking_get(&m, me(2));
            let m3 = Arc::clone(&m);
            let p = loom::thread::spawn(move || put(&m3.ring(), me(1), 7));
            m.ring().close();
            let sent = p.join().unwrap();
            let got = c.join().unwrap();
            if sent {
                assert_eq!(got, Ok(Some(7)));
            } else {
                assert_eq!(got, Err(Stop::Closed));
            }
        });
    }

    /// A producer parked on a full ring is woken by `close` and reports it closed.
    #[test]
    fn close_wakes_a_parked_producer() {
        loom::model(|| {
            let m = Model::new(1);
            assert!(put(&m.ring(), me(1), 1));
            let p = spawn_blocking_put(&m, me(1), 2);
            m.ring().close();
            assert_eq!(p.join().unwrap(), Err(Stop::Closed));
            assert_eq!(get(&m.ring(), me(2)), Some(1));
        });
    }

    /// A producer parked on a full ring is woken by a get.
    #[test]
    fn not_full_loses_no_wakeup() {
        loom::model(|| {
            let m = Model::new(1);
            assert!(put(&m.ring(), me(1), 1));
            let p = spawn_blocking_put(&m, me(1), 2);
            assert_eq!(get(&m.ring(), me(2)), Some(1));
            assert_eq!(p.join().unwrap(), Ok(Ok(())));
            assert_eq!(get(&m.ring(), me(2)), Some(2));
        });
    }

    /// A failed write publishes a tombstone: the consumer skips it and gets exactly the
    /// other producer's message.
    #[test]
    fn failed_write_leaves_a_skipped_tombstone() {
        loom::model(|| {
            let m = Model::new(2);
            let m2 = Arc::clone(&m);
            let failing = loom::thread::spawn(move || {
                let r = m2.ring();
                matches!(
                    r.try_put(me(1), &mut |_w: SlotWriter<'_>| Err::<(), ()>(())),
                    Attempt::Done(Err(()))
                )
            });
            let m3 = Arc::clone(&m);
            let other = loom::thread::spawn(move || put(&m3.ring(), me(2), 5));
            assert!(failing.join().unwrap());
            assert!(other.join().unwrap());
            let r = m.ring();
            assert_eq!(get(&r, me(3)), Some(5));
            assert_eq!(get(&r, me(3)), None);
            assert_eq!(r.messages(), 1);
        });
    }

    /// A producer stopped right after its claim (it never runs again, as if SIGKILLed): a
    /// consumer that sees it dead turns the slot into a tombstone, whether the claim is still
    /// only in the position word or was already moved into the slot by the other producer's
    /// helping step; the other producer's message arrives exactly once.
    #[test]
    fn stopped_writer_is_reclaimed() {
        loom::model(|| {
            let m = Model::new(2);
            let m1 = Arc::clone(&m);
            let victim = loom::thread::spawn(move || {
                let r = m1.ring();
                let claimed = matches!(r.claim_put(me(1)), Claimed::Slot(..));
                m1.deaths.0[1].store(true, Ordering::SeqCst);
                claimed
            });
            let m2 = Arc::clone(&m);
            let p = loom::thread::spawn(move || put(&m2.ring(), me(2), 9));
            let m3 = Arc::clone(&m);
            let c = loom::thread::spawn(move || {
                let r = m3.ring();
                for _ in 0..4 {
                    match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
                        Attempt::Done(v) => return v,
                        Attempt::Blocked(Some(b)) => {
                            if m3.deaths.0[1].load(Ordering::SeqCst) {
                                r.reclaim(b, me(3), &m3.deaths);
                            }
                        }
                        _ => {}
                    }
                }
                None
            });
            assert!(victim.join().unwrap());
            assert!(p.join().unwrap());
            let got = c.join().unwrap();
            let r = m.ring();
            let mut rest = Vec::new();
            for _ in 0..3 {
                match r.try_get(me(3), &mut |rd: SlotReader<'_>| rd.read_pod::<u64>(0)) {
                    Attempt::Done(v) => rest.extend(v),
                    Attempt::Blocked(Some(b)) => {
                        r.reclaim(b, me(3), &m.deaths);
                    }
                    _ => {}
                }
            }
            let all: Vec<u64> = got.into_iter().chain(rest).collect();
            assert_eq!(all, vec![9]);
            assert_eq!(r.messages(), 1);
        });
    }

    /// A consumer stopped right after its claim: a producer facing the full ring reclaims the
    /// slot once the consumer is dead, counts the message dropped, and its own message goes
    /// through; `join` accounting sees nothing unfinished.
    #[test]
    fn stopped_reader_is_reclaimed_and_counted() {
        loom::model(|| {
            let m = Model::new(1);
            assert!(put(&m.ring(), me(1), 1));
            let m2 = Arc::clone(&m);
            let victim = loom::thread::spawn(move || {
                let r = m2.ring();
                let claimed = matches!(r.claim_get(me(2)), Claimed::Slot(..));
                m2.deaths.0[2].store(true, Ordering::SeqCst);
                claimed
            });
            let m3 = Arc::clone(&m);
            let p = loom::thread::spawn(move || {
                let r = m3.ring();
                for _ in 0..3 {
                    match r.try_put(me(1), &mut |mut w: SlotWriter<'_>| {
                        assert!(w.store(0, &2u64.to_le_bytes()));
                        Ok::<(), ()>(())
                    }) {
                        Attempt::Done(_) => return true,
                        Attempt::Blocked(Some(b)) => {
                            r.reclaim(b, me(3), &m3.deaths);
                        }
                        _ => {}
                    }
                }
                false
            });
            assert!(victim.join().unwrap());
            let sent = p.join().unwrap();
            let r = m.ring();
            if !sent {
                // The producer gave up first; the victim is dead by now.
                if !put(&r, me(1), 2) {
                    let b = match r.claim_put(me(1)) {
                        Claimed::Blocked(Some(b)) => b,
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(r.reclaim(b, me(1), &m.deaths), Reclaim::Reclaimed);
                    assert!(put(&r, me(1), 2));
                }
            }
            assert_eq!(get(&r, me(3)), Some(2));
            assert_eq!(r.dropped(), 1);
            assert_eq!(r.task_done(), Ok(()));
            assert_eq!(r.unfinished(), 0);
        });
    }
}

/// Handle passing: the ring gives its segment back (to hand its descriptor on).
impl ShmRing {
    /// The segment, without the ring over it.
    pub(crate) fn into_segment(self) -> ipc_shm::lowlevel::Segment {
        self.seg
    }
}
