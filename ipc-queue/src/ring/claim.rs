//! Claiming a slot and ending the claim: the claim CAS on a position word with its helping
//! mark, publish (a message or a tombstone) and release, the straight-line fast paths that
//! `PodQueue` inlines, one attempt of a put or get (`try_put`, `try_get`), and runs: several
//! consecutive positions claimed with one CAS (`claim_run`, `try_put_run`, `try_get_run`).
//!
//! **The claim names the claimer.** As in Vyukov, one CAS on the shared enqueue (dequeue)
//! word claims a position; here the word also records the claimer's thread id
//! (`seq << 24 | tid`), so a claim is never anonymous even if its owner is killed before it
//! touches the slot. A participant that finds the word recording somebody else's claim
//! first *marks* that previous slot with the recorded id (a CAS from idle to claimed, see
//! `mark`) before its own CAS overwrites the record (`resolve_record`); the owner's publish
//! or release ends the mark either way. So no slot is ever left idle behind the position
//! word except those of the claim the word records.
//!
//! **Runs.** A run claim takes as many ready slots from the word's position as it wants, up
//! to the capacity, with one CAS, and records itself with the `RUN` bit. Its slots are
//! written (read) in order and then all published (released) in order, and the record's
//! next overwriter walks back from the record over every slot still idle, marking each in
//! the run's claimer's name; it stops at the first slot ended otherwise (ascending ends make
//! everything before it ended too). So a slot idle behind a run's record belongs to that
//! run, and `reclaim` judges it by the run's claimer.
//!
//! **Our own record.** A record in the claimer's own thread id needs no mark when it is the
//! claimer's own last claim, already published or released: the slot before the recorded
//! position then holds its full stamp (`own_last_claim`; every claimer stamps its slots
//! before its claim CAS), and it holds no claim now (a `Serialize` that puts). A record in
//! our id with another stamp was left by a *dead* thread whose id was reused: resolving it
//! reclaims its claim at once (a claim recorded in the caller's own id while it holds none
//! is dead, whatever the stamp says). Only when that dead thread also had our start time
//! (an id reused within one clock tick) is its record overwritten unmarked; `reclaim` then
//! infers the claim from its slot, idle behind a single claim's record, and its claimer is
//! dead (behind a run's record it would be judged by that run's live claimer until a single
//! claim's record covers it again).

use super::layout::{SlotReader, SlotWriter, Slots};
use super::recover::NeverDead;
use super::{
    diff, owner, pack, seq, Blocker, Cursor, Idx, Me, Ring, MARK_TRIES, MAX_STEPS, POS_MASK, RUN,
    TID_MASK, TOMB, WAITING,
};
use crate::loom::{spin, AtomicU64, Ordering};

#[cfg(not(loom))]
std::thread_local!(static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
#[cfg(loom)]
loom::thread_local!(static HELD: std::cell::Cell<u32> = std::cell::Cell::new(0));

/// Whether the calling thread holds a claim now (it runs a caller's `write` inside a put: a
/// `Serialize` that uses a queue itself).
#[inline(always)]
pub(super) fn holding_claim() -> bool {
    HELD.with(|h| h.get() != 0)
}

/// Marks the calling thread as holding a claim while it lives (around a caller's `write`).
pub(super) struct Holding;

impl Holding {
    pub(super) fn new() -> Holding {
        HELD.with(|h| h.set(h.get().saturating_add(1)));
        Holding
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
    }
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
pub(super) enum Claimed {
    /// We own slot `Idx` at position `u64`.
    Slot(Idx, u64),
    Blocked(Option<Blocker>),
    Closed,
    Corrupted,
}

/// The result of a run claim ([`Ring::claim_run`]).
#[derive(Debug)]
pub(super) enum ClaimedRun {
    /// We own the `n` (at least one) positions from `p` on; `tombs`: some of them were
    /// tombstones when claimed (for reading).
    Run {
        p: u64,
        n: u64,
        tombs: bool,
    },
    Blocked(Option<Blocker>),
    Closed,
    Corrupted,
}

impl ClaimedRun {
    /// The run's first position and length, or the outcome of an attempt that claimed none.
    pub(super) fn run<R>(self) -> Result<(u64, u64), Attempt<R>> {
        match self {
            ClaimedRun::Run { p, n, .. } => Ok((p, n)),
            ClaimedRun::Blocked(b) => Err(Attempt::Blocked(b)),
            ClaimedRun::Closed => Err(Attempt::Closed),
            ClaimedRun::Corrupted => Err(Attempt::Corrupted),
        }
    }
}

/// Ends the rest of a claimed run if dropped, i.e. if a write or read into it unwinds:
/// tombstones for the positions not yet published (a put), or releases (a get); forgotten
/// once the run is over.
pub(super) struct EndRunOnUnwind<'r, 'a, S: Slots> {
    pub(super) ring: &'r Ring<'a, S>,
    /// The first position of the run not yet ended, and how many are left.
    pub(super) at: Cursor,
    pub(super) left: u64,
    pub(super) reading: bool,
}

impl<S: Slots> Drop for EndRunOnUnwind<'_, '_, S> {
    fn drop(&mut self) {
        for _ in 0..self.left {
            if self.reading {
                self.ring.release(self.at.i, self.at.q);
            } else {
                self.ring.publish(self.at.i, self.at.q, false);
            }
            self.ring.step(&mut self.at);
        }
    }
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

impl<'a, S: Slots> Ring<'a, S> {
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
        // The record our own last claim on this word left (published or released before we
        // returned) needs no helping step, unless we hold a claim now (a `Serialize` that
        // puts). Anything else, a record in our id that a dead thread with our id made
        // included, goes to the general loop (`resolve_record`).
        if x != 0 && (x != me.tid || !self.own_last_claim(e, reading, me) || holding_claim()) {
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
        let rec = pack(self.next(p), me.tid);
        word.compare_exchange_weak(e, rec, Ordering::AcqRel, Ordering::Relaxed)
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
    pub(super) fn claim_put(&self, me: Me) -> Claimed {
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
                self.resolve_record(e, 0, me);
                let rec = pack(self.next(p), me.tid);
                // SYNC POINT: AcqRel: Release publishes our stamp (stored above) to whoever
                // reads our record, or a helper's mark of it, with Acquire.
                match self.ctl.enq.compare_exchange_weak(
                    e,
                    rec,
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
    pub(super) fn stamp_slot(&self, i: Idx, reading: bool, me: Me) {
        let w = self.slots.stamp(i, reading);
        if w.load(Ordering::Relaxed) != me.stamp {
            w.store(me.stamp, Ordering::Relaxed);
        }
    }

    /// Whether the record `e` (in our thread id) is our own last claim on its word, ended
    /// before the call that made it returned: the slot before the recorded position holds
    /// our full stamp in the phase's stamp word (every claimer stamps its slots before its
    /// claim CAS). A dead thread whose id we now have stamped its claims with its own stamp,
    /// which differs from ours in the start time (unless the id was reused within one clock
    /// tick); a claimer that lost the race for our slot may have overwritten our stamp, which
    /// only sends us to the general path. One load, of a line this participant keeps reading.
    #[inline(always)]
    fn own_last_claim(&self, e: u64, reading: bool, me: Me) -> bool {
        self.index(self.prev(seq(e)))
            .is_some_and(|j| self.slots.stamp(j, reading).load(Ordering::Relaxed) == me.stamp)
    }

    /// The helping step for the record `e` of the position word `word` (phase `phase`: 0
    /// enqueue, 1 dequeue), which our CAS is about to overwrite: every slot its claim covers
    /// that is still idle gets marked in the claimer's name (or reclaimed, for a dead thread
    /// with our id), so no idle slot is ever left behind a record but those of the record's
    /// own claim. Nothing for no record, or for our own last one (ended already).
    ///
    /// A single claim covers the slot before the recorded position. A run (`RUN`) covers
    /// that one and those before it back to where the run started, which the record does not
    /// say: the walk goes back while slots are idle in the phase (or marked for the same
    /// claimer, or, when writing, tombstones a reclaim made of a dead run's slots out of
    /// order) and stops at the first slot ended otherwise. A run ends its slots in ascending
    /// order, so everything before an ended slot of the run is ended too; and every claim
    /// before the run was resolved when the run's claimer overwrote its record.
    #[inline]
    pub(super) fn resolve_record(&self, e: u64, phase: u64, me: Me) {
        let x = owner(e) & TID_MASK;
        if x == 0 || (x == me.tid && self.own_last_claim(e, phase != 0, me) && !holding_claim()) {
            return;
        }
        if e & RUN == 0 {
            self.mark_or_reclaim(self.prev(seq(e)), phase, x, me);
        } else {
            self.resolve_run(seq(e), phase, x, me);
        }
    }

    /// The walk of [`Ring::resolve_record`] over a run recorded as ending at `end` by `x`.
    #[cold]
    fn resolve_run(&self, end: u64, phase: u64, x: u64, me: Me) {
        let mut q = self.prev(end);
        for _ in 0..self.cap {
            let Some(j) = self.index(q) else { return };
            let s = self.slots.state(j).load(Ordering::Acquire);
            let t = owner(s) & TID_MASK;
            if seq(s) == (q + phase) & POS_MASK {
                if t == 0 {
                    self.mark_or_reclaim(q, phase, x, me);
                } else if t != x {
                    return;
                }
            } else if !(phase == 0 && seq(s) == (q + 1) & POS_MASK && owner(s) & !WAITING == TOMB) {
                return;
            }
            q = self.prev(q);
        }
    }

    /// The helping step for the claim record `x` of position `q` that our CAS is about to
    /// overwrite: [`Ring::mark`] for somebody else's record. A record in our own thread id
    /// whose slot is still idle is not ours (we hold no claim: our own claims are published
    /// or released before we claim again), so a dead thread with our id made it: reclaim it
    /// now, while the record still names it.
    #[cold]
    pub(super) fn mark_or_reclaim(&self, q: u64, phase: u64, x: u64, me: Me) {
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

    /// Ends a claim of slot `i` by replacing its state with `next` (Release: it publishes
    /// the payload written, or orders the payload read before the next lap's write), and
    /// wakes the slot's sleepers if there may be any. Either way it overwrites a helper's
    /// mark, as the owner's end of a claim must.
    ///
    /// Two handshakes with a sleeper (see the `wait` module), chosen per call:
    /// - **Nobody sleeps** (the common case, in a process registered for the light barrier):
    ///   a plain store, then a second look at the sleeper count after
    ///   [`light_barrier`](ipc_shm::lowlevel::sync::light_barrier). A sleeper counts itself
    ///   and runs the heavy barrier before it checks the slot, so either it sees our store
    ///   (and does not sleep) or we see its count (and wake the slot). (A call's first
    ///   sleep skips the heavy barrier and is bounded to 200 µs instead: see `wait::arm`.)
    ///   The store costs no
    ///   read-for-ownership stall, unlike a read-modify-write: a producer streams its
    ///   publishes through the store buffer as a bare Vyukov ring does.
    /// - **Somebody sleeps** (or no light barrier here): a swap, which reads the `WAITING`
    ///   bit a sleeper set by its CAS: one of the two read-modify-writes sees the other, so
    ///   only the slot's own sleepers are woken.
    #[inline(always)]
    pub(super) fn end_claim(&self, i: Idx, next: u64) {
        let st = self.slots.state(i);
        if self.light && self.ctl.sleepers.load(Ordering::Relaxed) == 0 {
            // SYNC POINT: Release, as the swap below.
            #[cfg(not(loom))]
            st.store(next, Ordering::Release);
            // Loom lets a plain store land between the read and the write of a racing
            // read-modify-write (a helper's mark), a history no hardware allows
            // (tokio-rs/loom#254). A swap whose result is ignored writes the same value in the
            // same total order, and the wake-up below still rests on the count alone.
            #[cfg(loom)]
            let _ = st.swap(next, Ordering::Release);
            ipc_shm::lowlevel::sync::light_barrier();
            // SYNC POINT: after the light barrier: pairs with the sleeper's count increment
            // and heavy barrier in `arm`.
            if self.ctl.sleepers.load(Ordering::Relaxed) != 0 {
                self.wake_slot(i);
            }
        } else {
            // SYNC POINT: Release, as above; a swap so that it reads WAITING set by any
            // sleeper whose CAS came first (see `arm`).
            let prev = st.swap(next, Ordering::Release);
            if prev & WAITING != 0 {
                self.wake_slot(i);
            }
        }
    }

    /// Publishes the slot claimed at `p`: the message, or a tombstone if `ok` is false.
    #[inline(always)]
    fn publish(&self, i: Idx, p: u64, ok: bool) {
        let owner = if ok { 0 } else { TOMB };
        // Release publishes the payload; pairs with the consumer's Acquire load of the state.
        self.end_claim(i, pack(p + 1, owner));
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
    pub(super) fn claim_get(&self, me: Me) -> Claimed {
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
                self.resolve_record(e, 1, me);
                let rec = pack(self.next(p), me.tid);
                // SYNC POINT: AcqRel, as in `claim_put`.
                match self.ctl.deq.compare_exchange_weak(
                    e,
                    rec,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) if owner(s) & TOMB != 0 => {
                        // A tombstone: ours to count and free; then go on.
                        self.settle(i, p);
                        ipc_failpoints::failpoint!("queue.tombstone.published");
                        self.release(i, p);
                        e = rec;
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
    pub(super) fn release(&self, i: Idx, p: u64) {
        // Release orders our payload reads before the next lap's producer writes (its
        // Acquire load of the state).
        self.end_claim(i, pack(p + self.one_lap, 0));
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

    /// Claims up to `max` consecutive positions of the enqueue word (`reading` false) or the
    /// dequeue word with one CAS: as many slots from the word's position on as are ready
    /// (free for writing; published, message or tombstone, for reading), at least `min`
    /// (else nothing is claimed and the first slot not ready is the blocker). The record
    /// names us with the `RUN` bit when the run has more than one position; the helping step
    /// resolves the record it overwrites as every claim does.
    pub(super) fn claim_run(&self, reading: bool, me: Me, min: u64, max: u64) -> ClaimedRun {
        let word = if reading {
            &self.ctl.deq
        } else {
            &self.ctl.enq
        };
        let phase = u64::from(reading);
        // A ready state, masked, is exactly `pack(position + phase, 0)`: no owner (and, for
        // writing, no tombstone); `WAITING` may be set.
        let ignored = if reading { WAITING | TOMB } else { WAITING };
        if !reading && self.ctl.closed.load(Ordering::Relaxed) != 0 {
            return ClaimedRun::Closed;
        }
        let max = max.clamp(min.max(1), self.cap);
        // SYNC POINT: Acquire, as in `claim_put`.
        let mut e = word.load(Ordering::Acquire);
        for _ in 0..MAX_STEPS {
            let p = seq(e);
            let (first, first_state) = match self.ready_at(p, phase, ignored) {
                Ok(ready) => ready,
                Err(Some(stop)) => return stop,
                Err(None) => {
                    spin();
                    e = word.load(Ordering::Acquire);
                    continue;
                }
            };
            let mut n = 0;
            let mut stop = None;
            let mut owners = 0;
            let (states, stamps) = (self.slots.states(), self.slots.stamps(reading));
            'scan: for (q0, i0, len) in self.stretches(p, first, max) {
                for k in 0..len {
                    let i = Idx(i0 + k as usize);
                    if n > 0 {
                        let s = states.at(i).load(Ordering::Acquire);
                        if s & !ignored != pack(q0 + k + phase, 0) {
                            stop = Some((i, s, q0 + k));
                            break 'scan;
                        }
                        owners |= s;
                    }
                    // As `stamp_slot`.
                    let w = stamps.at(i);
                    if w.load(Ordering::Relaxed) != me.stamp {
                        w.store(me.stamp, Ordering::Relaxed);
                    }
                    n += 1;
                }
            }
            if n < min {
                match stop {
                    // Not ready yet (the previous lap's holder, or not published): wait for
                    // it, with the word's position to re-check.
                    Some((idx, state, q)) if diff(seq(state), q + phase) < 0 => {
                        return ClaimedRun::Blocked(Some(Blocker { idx, state, pos: p }));
                    }
                    // Taken already: our view of the word is stale.
                    Some(_) => {
                        spin();
                        e = word.load(Ordering::Acquire);
                        continue;
                    }
                    // `min` is above the capacity: never.
                    None => return ClaimedRun::Corrupted,
                }
            }
            self.resolve_record(e, phase, me);
            let end = self.advance(p, first, n);
            let rec = pack(end, me.tid | if n > 1 { RUN } else { 0 });
            // SYNC POINT: AcqRel, as in `claim_put`; the slots' states were ready when read
            // and only the claimer of their positions changes a ready state.
            match word.compare_exchange_weak(e, rec, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return ClaimedRun::Run {
                        p,
                        n,
                        tombs: reading && owner(owners | first_state) & TOMB != 0,
                    }
                }
                Err(now) => e = now,
            }
        }
        ClaimedRun::Blocked(None)
    }

    /// The slot of position `p` of a position word and its state, if the state is ready for
    /// a claim in `phase` (masked with `ignored`, exactly `pack(p + phase, 0)`); else
    /// `Err(Some(_))` to end the claim (blocked on it, or a position out of range) or
    /// `Err(None)`: taken already, our view of the word is stale.
    #[inline(always)]
    pub(super) fn ready_at(
        &self,
        p: u64,
        phase: u64,
        ignored: u64,
    ) -> Result<(Idx, u64), Option<ClaimedRun>> {
        let Some(i) = self.index(p) else {
            return Err(Some(ClaimedRun::Corrupted));
        };
        // SYNC POINT: Acquire pairs with the Release end of the claim before (a consumer's
        // release for writing, a producer's publish for reading).
        let s = self.slots.state(i).load(Ordering::Acquire);
        if s & !ignored == pack(p + phase, 0) {
            Ok((i, s))
        } else if diff(seq(s), p + phase) < 0 {
            Err(Some(ClaimedRun::Blocked(Some(Blocker {
                idx: i,
                state: s,
                pos: p,
            }))))
        } else {
            Err(None)
        }
    }

    /// Ends the claims of the `n` positions from `p` (slot `i`) by storing `next(position)`
    /// in each slot, in order: [`Ring::end_claim`] for a run, with the second look at the
    /// sleeper count once after all the stores (it follows each of them, which is what the
    /// handshake needs), waking every slot of the run if a sleeper came.
    #[inline(always)]
    pub(super) fn end_run(&self, p: u64, i: Idx, n: u64, next: impl Fn(u64) -> u64) {
        let light = self.light && self.ctl.sleepers.load(Ordering::Relaxed) == 0;
        let states = self.slots.states();
        for (q0, i0, len) in self.stretches(p, i, n) {
            for k in 0..len {
                let i = Idx(i0 + k as usize);
                if light {
                    // SYNC POINT: Release, as in `end_claim` (a swap under loom, see there).
                    #[cfg(not(loom))]
                    states.at(i).store(next(q0 + k), Ordering::Release);
                    #[cfg(loom)]
                    let _ = states.at(i).swap(next(q0 + k), Ordering::Release);
                } else {
                    self.end_claim(i, next(q0 + k));
                }
            }
        }
        if light {
            ipc_shm::lowlevel::sync::light_barrier();
            // SYNC POINT: as in `end_claim`, after every store of the run.
            if self.ctl.sleepers.load(Ordering::Relaxed) != 0 {
                for (_, i0, len) in self.stretches(p, i, n) {
                    for k in 0..len {
                        self.wake_slot(Idx(i0 + k as usize));
                    }
                }
            }
        }
    }

    /// Claims a run of `min..=max` slots for writing ([`Ring::claim_run`]) and checks that
    /// the ring is still open: the guard over the whole run (it publishes a tombstone in
    /// every slot of it if dropped), or the attempt's outcome (a run claimed after a close
    /// is left all tombstones, and the put reports `Closed`).
    pub(super) fn open_put_run<R>(
        &self,
        me: Me,
        min: u64,
        max: u64,
    ) -> Result<EndRunOnUnwind<'_, 'a, S>, Attempt<R>> {
        let (p, n) = self.claim_run(false, me, min, max).run()?;
        // `claim_run` checked the index.
        let at = self.cursor(p).ok_or(Attempt::Corrupted)?;
        let run = EndRunOnUnwind {
            ring: self,
            at,
            left: n,
            reading: false,
        };
        // SYNC POINT: Acquire, after our claim CAS, as in `refused_by_close`.
        if self.ctl.closed.load(Ordering::Acquire) != 0 {
            // Dropping `run` publishes a tombstone in each slot.
            return Err(Attempt::Closed);
        }
        ipc_failpoints::failpoint!("queue.put.claimed");
        Ok(run)
    }

    /// One attempt to put up to `max` messages with one claim: `write(k, slot)` writes the
    /// `k`-th into its slot; once all are written they are published in order. `Done(n)`:
    /// the first `n` were put. For writes that cannot fail (plain data); a write that
    /// unwinds publishes tombstones for the rest of the run.
    pub(crate) fn try_put_run(
        &self,
        me: Me,
        max: u64,
        write: &mut impl FnMut(u64, SlotWriter<'_>),
    ) -> Attempt<u64> {
        let run = match self.open_put_run(me, 1, max) {
            Ok(run) => run,
            Err(a) => return a,
        };
        let (p, at, n) = (run.at.q, run.at, run.left);
        // Every message is written first, then all are published in order: a consumer
        // waiting on the run's first slot then finds the whole run at once, instead of
        // chasing the writes slot by slot on the lines they are being written to.
        let mut k = 0;
        for (_, i0, len) in self.stretches(p, at.i, n) {
            for j in 0..len {
                self.slots.write(Idx(i0 + j as usize), |w| write(k, w));
                k += 1;
            }
        }
        std::mem::forget(run);
        // Release publishes the payloads, as in `publish`.
        self.end_run(p, at.i, n, |q| pack(q + 1, 0));
        Attempt::Done(n)
    }

    /// One attempt to get up to `max` messages with one claim, each read with `read`, then
    /// all released in order; tombstones in the run are counted on the way. `Done(n)`: `n`
    /// messages were read (at least one: a run of tombstones only is followed by another
    /// claim).
    pub(crate) fn try_get_run(
        &self,
        me: Me,
        max: u64,
        read: &mut impl FnMut(SlotReader<'_>),
    ) -> Attempt<u64> {
        for _ in 0..MAX_STEPS {
            let (p, n, tombs) = match self.claim_run(true, me, 1, max) {
                ClaimedRun::Run { p, n, tombs } => (p, n, tombs),
                other => match other.run() {
                    Ok(_) => return Attempt::Corrupted,
                    Err(a) => return a,
                },
            };
            let Some(at) = self.cursor(p) else {
                return Attempt::Corrupted;
            };
            ipc_failpoints::failpoint!("queue.get.claimed");
            let run = EndRunOnUnwind {
                ring: self,
                at,
                left: n,
                reading: true,
            };
            let mut got = 0;
            let states = self.slots.states();
            for (q0, i0, len) in self.stretches(p, at.i, n) {
                for k in 0..len {
                    let i = Idx(i0 + k as usize);
                    // Ours since the claim: only helpers' marks and sleepers' WAITING bits
                    // change it, never the TOMB bit.
                    if tombs && owner(states.at(i).load(Ordering::Relaxed)) & TOMB != 0 {
                        self.settle(i, q0 + k);
                        ipc_failpoints::failpoint!("queue.tombstone.published");
                    } else {
                        self.slots.read(i, &mut *read);
                        got += 1;
                    }
                }
            }
            std::mem::forget(run);
            // Release orders our reads before the next lap's writes, as in `release`.
            let one_lap = self.one_lap;
            self.end_run(p, at.i, n, |q| pack(q + one_lap, 0));
            if got > 0 {
                return Attempt::Done(got);
            }
        }
        Attempt::Blocked(None)
    }
}
