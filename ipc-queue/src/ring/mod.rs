//! The lock-free core: a bounded multi-producer multi-consumer ring whose claims survive a
//! killed participant.
//!
//! Source: Dmitry Vyukov, "Bounded MPMC queue" (1024cores.net), the per-slot sequence scheme
//! that crossbeam's `ArrayQueue` also uses, with crossbeam's lap/index position encoding (so
//! any capacity works without a division). Changes made here, and why, are described in the
//! file that holds each:
//!
//! - `claim`: **the claim names the claimer** (the position word records the claimer's thread
//!   id, and a participant that overwrites somebody else's record first marks that slot in
//!   their name); claim, publish and release, the straight-line fast paths, and one attempt of
//!   a put or get.
//! - `recover`: **owner stamps** (who is dead, and reclaiming the slots of dead claimers), a
//!   get on a closed ring waiting for claims made before the close, and **counting without
//!   counters** (`len`, retire records and `join` accounting).
//! - `wait`: **sleepers mark the slot they wait on and pay for the handshake** (a count and a
//!   `membarrier(2)` when they go to sleep; no counter written per put or get), the
//!   wake-ups of `close`, the backoff and death-check pacing of a blocked caller, and the
//!   steps of a blocked put or get with their two drivers, blocking and async.
//! - `span`: **messages larger than a slot** (a `Queue`'s): one claim of consecutive slots,
//!   the continuation slots published as tombstones before the head, and the get that
//!   claims a head with its continuations.
//! - `layout`: where the words and payloads live in the segment (packed or inline slots), and
//!   `ShmRing`, the segment with its checked geometry.
//! - `loom_tests` (under `--cfg loom` only): models of the protocol, threads standing in for
//!   processes.
//!
//! This file holds what they share: the control block, the position and slot state encoding,
//! a ring's geometry, the `Ring` view with its constructors, and `Me`.
//!
//! Position word: `seq << 24 | tid`, the next position to claim and the last claimer's
//! thread id, plus the `RUN` bit (bit 23) when that claim took several positions at once.
//!
//! Slot state: `seq << 24 | owner`, `seq` a 40-bit position, `owner` 0 (idle), a thread id
//! (claimed, marked by a helper) or `TOMB`, plus the `WAITING` bit (bit 22) in any phase.
//! For the position `p` of slot `i`: `FREE(p) = p|0`, `WRITING(p) = p|tid`, `FULL(p) = p+1|0`,
//! `READING(p) = p+1|tid`, `TOMBSTONE(p) = p+1|TOMB`; consuming sets `FREE(p + one_lap)`.
//! Publishing and releasing store (or swap, while anybody sleeps) a state without `WAITING`.
//!
//! Positions wrap at 2^40: a participant would have to stall for 2^39 operations between two
//! of its instructions for a comparison to go wrong. Thread ids fit in 22 bits because Linux
//! caps `pid_max` at 2^22.

use ipc_shm::lowlevel::sync::OwnerStamp;

use crate::loom::{AtomicU64, Ordering};

mod claim;
mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
mod recover;
#[cfg_attr(not(feature = "serde"), allow(dead_code))] // `Queue`'s
mod span;
mod wait;

use layout::Slots;
pub(crate) use layout::{ShmRing, SlotReader, SlotWriter, MIN_SLOT};
#[cfg(feature = "serde")]
pub(crate) use layout::{ShmSlots, Sink, Source};
pub(crate) use recover::OsLiveness;
#[cfg(feature = "serde")]
pub(crate) use span::{SpanReader, SpanWriter};
pub(crate) use wait::{DeathWatch, Stop};

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const OWNER_BITS: u32 = 24;
const OWNER_MASK: u64 = (1 << OWNER_BITS) - 1;
const TID_MASK: u64 = (1 << 22) - 1;
const TOMB: u64 = 1 << 23;
/// Slot state bit: somebody sleeps on this slot's state word (bit 22, above every thread id).
const WAITING: u64 = 1 << 22;
/// Position word bit: the claim recorded covers a run of several positions (`claim::claim_run`),
/// the recorded one and those before it back to where the claim started.
const RUN: u64 = 1 << 23;
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
/// Bytes of control block before slot 0.
pub(crate) const CONTROL_LEN: usize = 512;
/// The most steps one attempt takes before it reports contention (a hostile peer flipping
/// states cannot keep a call looping).
const MAX_STEPS: u32 = 1 << 16;

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
/// the rarely written counters, and the read-mostly line: the closed flag and the count of
/// sleepers (see the `wait` module), which every put and get reads.
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
    /// The largest message a `Queue` takes (its encoding), when messages may span slots;
    /// 0: one slot's payload. Written by the creator before the segment is ready.
    max_message: AtomicU64,
    _pad2: [Pad; 10],
    closed: AtomicU64,
    sleepers: AtomicU64,
    _pad3: [Pad; 14],
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Control>() == CONTROL_LEN);
    assert!(std::mem::offset_of!(Control, deq) == 128);
    assert!(std::mem::offset_of!(Control, retired) == 256);
    assert!(std::mem::offset_of!(Control, max_message) == 296);
    assert!(std::mem::offset_of!(Control, closed) == 384);
    assert!(std::mem::offset_of!(Control, sleepers) == 392);
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
            max_message: AtomicU64::new(0),
            _pad2: std::array::from_fn(|_| Pad::new(0)),
            closed: AtomicU64::new(0),
            sleepers: AtomicU64::new(0),
            _pad3: std::array::from_fn(|_| Pad::new(0)),
        }
    }
}

/// A slot index checked against the capacity (only [`Ring::index`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Idx(usize);

/// A position and its slot, stepped along consecutive positions without recomputing the
/// slot index (see [`Ring::step`]); made only from a checked index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    q: u64,
    i: Idx,
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

/// A slot that stopped an attempt: the first one not ready for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocker {
    idx: Idx,
    state: u64,
    /// The position (enqueue for puts, dequeue for gets) at which the slot blocked us.
    pos: u64,
}

/// A ring's capacity and the lap size of its position encoding, computed once per handle,
/// and whether this process ends its claims with a plain store (see `claim::end_claim`).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    cap: u64,
    one_lap: u64,
    light: bool,
}

impl Geometry {
    fn new(cap: usize) -> Geometry {
        let cap = cap.clamp(1, MAX_CAPACITY) as u64;
        Geometry {
            cap,
            one_lap: (cap + 1).next_power_of_two(),
            // Registered once per process; forked children inherit the registration.
            light: ipc_shm::lowlevel::sync::light_barrier_ready(),
        }
    }
}

/// The ring protocol over a control block and slots.
pub(crate) struct Ring<'a, S> {
    ctl: &'a Control,
    slots: &'a S,
    cap: u64,
    one_lap: u64,
    /// This process may publish and release with a plain store (`claim::end_claim`).
    light: bool,
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
            light: g.light,
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
            &self.ctl.max_message,
            &self.ctl.closed,
            &self.ctl.sleepers,
        ] {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// The largest message recorded by the creator (0: one slot's payload); untrusted.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // `Queue`'s
    pub(crate) fn max_message(&self) -> u64 {
        self.ctl.max_message.load(Ordering::Relaxed)
    }

    /// Records the largest message (the creator, before the segment is ready).
    pub(crate) fn set_max_message(&self, n: u64) {
        self.ctl.max_message.store(n, Ordering::Relaxed);
    }

    /// The slot of position `p`, if its index is in range (positions come from shared memory).
    #[inline]
    fn index(&self, p: u64) -> Option<Idx> {
        let i = p & (self.one_lap - 1);
        (i < self.cap).then_some(Idx(i as usize))
    }

    /// A cursor at position `p`, if its index is in range.
    #[inline(always)]
    fn cursor(&self, p: u64) -> Option<Cursor> {
        self.index(p).map(|i| Cursor { q: p, i })
    }

    /// Moves `c` to the next position (as [`Ring::next`]), its slot the next one.
    #[inline(always)]
    fn step(&self, c: &mut Cursor) {
        if (c.i.0 as u64) + 1 < self.cap {
            // The index bits stay below the lap bits: no carry.
            c.q += 1;
            c.i.0 += 1;
        } else {
            c.q = self.next(c.q);
            c.i = Idx(0);
        }
    }

    /// The `n` (at most the capacity) positions from `p` (slot `i`) as at most two stretches
    /// of consecutive slots, split where the ring wraps: (first position, first index,
    /// length). Within a stretch, position and index both go up by one per slot.
    #[inline(always)]
    fn stretches(&self, p: u64, i: Idx, n: u64) -> [(u64, usize, u64); 2] {
        let first = n.min(self.cap - i.0 as u64);
        let lap = ((p & !(self.one_lap - 1)).wrapping_add(self.one_lap)) & POS_MASK;
        [(p, i.0, first), (lap, 0, n - first)]
    }

    /// The position `n` (at most the capacity) after `p` (slot `i`).
    #[inline(always)]
    fn advance(&self, p: u64, i: Idx, n: u64) -> u64 {
        let [(_, _, first), (lap, _, rest)] = self.stretches(p, i, n);
        if rest == 0 && first < self.cap - i.0 as u64 {
            p + n
        } else {
            lap + rest
        }
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

    /// The position before `p`.
    #[inline]
    fn prev(&self, p: u64) -> u64 {
        if p & (self.one_lap - 1) > 0 {
            p - 1
        } else {
            (p.wrapping_sub(self.one_lap) + self.cap - 1) & POS_MASK
        }
    }
}
