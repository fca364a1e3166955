//! Recovery and accounting: who is dead (`Liveness`), reclaiming a dead claimer's slot, a
//! get on a closed ring waiting for claims made before the close, and the counts (`len`,
//! retire records, `task_done` and `join`).
//!
//! **Owner stamps.** Each slot has two stamp words, one for its writer and one for its
//! reader. Before its claim CAS a claimer makes the phase's stamp word hold its full
//! [`OwnerStamp`] (thread id and start time), storing only if it differs, so a participant
//! that keeps reusing slots stores nothing there; the CAS (Release) publishes it. A waiter
//! that sees a slot stay claimed checks the stamp (`OwnerStamp::is_dead`, on slow paths
//! only; a stamp with another id, left by a claimer that lost the race, falls back to the
//! id alone) and, if the owner is gone, reclaims the slot by a CAS from exactly the state it
//! inspected: a dead writer's slot becomes a tombstone that consumers skip, a dead reader's
//! slot is freed and its message counted as dropped. A live owner is never reclaimed,
//! however slow.
//!
//! **Counting without counters.** `len()` is the distance between the enqueue and dequeue
//! positions, clamped to `0..=capacity` (approximate, like `qsize`). `join` accounting:
//! unfinished = claims (the enqueue position as a running count) minus `task_done` calls
//! (the `done` word) minus positions retired by the system: tombstones and messages dropped
//! with dead consumers. A system retirement is recorded in the slot's *retire record*
//! (count in the high half, the lap it was for in the low half) by the participant that
//! holds the slot's read claim: the consumer that skips a tombstone, or the reclaimer that
//! takes over a dead consumer's claim. The record is idempotent (a lap already recorded is
//! not counted again) and only the holder writes it, so a kill anywhere leaves the count
//! recoverable: whoever takes over the dead holder's claim re-does it. Tombstones nobody
//! has skipped yet are counted by `join` from the slot states (a tombstone whose lap is
//! not in the record). The `sys` word sums the records as a hint (it misses one per kill
//! between record and hint) for `task_done`'s check and `join`'s fast path; `join` decides
//! on the exact sum. `retired` is the joiners' eventcount (bit 0 someone sleeps, bit 1
//! closed, count from bit 2); whoever adds wakes only when the bit was set. Counts are
//! compared modulo the period of the position encoding.

#[cfg(not(loom))]
use std::time::Duration;

use ipc_shm::lowlevel::sync::{wait_low_half, wake_low_half, Deadline, OwnerStamp, WaitOutcome};

use super::claim::holding_claim;
use super::layout::Slots;
use super::wait::Stop;
#[cfg(not(loom))]
use super::wait::SLICE;
use super::{
    diff, owner, pack, seq, Blocker, Idx, Me, Ring, MARK_TRIES, MAX_STEPS, NO_LAP, ONE, POS_MASK,
    RUN, TID_MASK, TOMB, WAITERS, WAITING,
};
use crate::loom::Ordering;

/// How long a get on a closed ring waits for a claim whose owner it cannot verify.
#[cfg(not(loom))]
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long it waits for a claim whose owner is verified alive. Bounded too: a slot that a
/// faulty peer scribbled back to "claimed, not yet published" under a genuine record of a
/// live producer (its last claim, published long ago) is indistinguishable from a claim in
/// progress, and must not keep a plain `get` waiting for as long as that producer lives. A
/// real claim lasts one copy (or one `Serialize`); a put still unpublished after this leaves
/// its message in the closed ring for a later get.
#[cfg(not(loom))]
const DRAIN_LIVE_GRACE: Duration = Duration::from_secs(10);

/// The clocks of a get waiting on a closed ring for pending claims: started at the first
/// pending claim of each kind (see [`Ring::keep_draining`]).
#[derive(Debug, Default)]
#[cfg_attr(loom, allow(dead_code))] // models wait without clocks
pub(super) struct DrainGrace {
    unverified: Option<Deadline>,
    verified: Option<Deadline>,
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
pub(super) struct NeverDead;

impl Liveness for NeverDead {
    fn is_dead(&self, _tid: u64, _stamp: u64) -> bool {
        false
    }
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

/// Too many `task_done` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooManyDone;

impl<S: Slots> Ring<'_, S> {
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
    pub(super) fn settle(&self, i: Idx, p: u64) {
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
            if past > 0 && rec & RUN == 0 {
                // Claimed, and the record moved on without marking the slot. Every claimer
                // resolves the record it overwrites (`resolve_record`), so this is a claim
                // whose record was overwritten before that rule: by a thread with the same
                // id that skipped the mark, so the claimer of q had that id and was not that
                // thread: it is dead. (A slot that was marked or moved on meanwhile fails the
                // CAS below.)
                return self.reclaim_dead(b, q, reading, me);
            }
            // `past == 0`: the recorded claim itself. `past > 0` under a run's record: q is
            // in that run (every idle slot behind a record is the record's own claim's, see
            // `resolve_record`): its claimer is the recorded one, judged below.
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

    /// Settles every claim a dead participant left: first the helping step for the claim
    /// records in the two position words (a claim made by the last CAS on a word is marked
    /// nowhere else, and nobody overwrites the record until the next claim), then
    /// [`Ring::reclaim_all`]. For `dropped_by_dead_peers`, whose count must not wait until
    /// another participant happens to block on a dead reader's slot.
    pub(crate) fn settle_dead_claims(&self, me: Me, live: &impl Liveness) -> usize {
        for (word, phase) in [(&self.ctl.enq, 0), (&self.ctl.deq, 1)] {
            // SYNC POINT: Acquire, as a claimer reads the record before its helping step.
            let e = word.load(Ordering::Acquire);
            self.resolve_record(e, phase, me);
        }
        self.reclaim_all(me, live)
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
    pub(super) fn claim_pending(&self, b: Blocker) -> Option<u64> {
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
        // The recorded claim, or one of the recorded run's slots.
        let past = diff(seq(rec), self.next(b.pos));
        let covered = past == 0 || (past > 0 && rec & RUN != 0);
        (covered && tid != 0).then_some(tid)
    }

    /// Whether a get on a closed ring (by `me`) keeps waiting for the claim of `tid` on the
    /// slot in `b`. Never for a claim in our own thread id while we hold none (ours are
    /// published before we return, so the record is stale or a dead thread's). Otherwise
    /// while the claimer is verified alive (its stamp is its own), for `DRAIN_LIVE_GRACE`;
    /// when that cannot be verified (a racing claimer overwrote the stamp, or the memory is
    /// corrupted), for `DRAIN_GRACE`. Both clocks start at the first such claim seen, so
    /// stray ids or stale records in corrupted memory cannot keep a plain `get` on a closed
    /// queue waiting for ever.
    pub(super) fn keep_draining(
        &self,
        b: Blocker,
        tid: u64,
        me: Me,
        live: &impl Liveness,
        grace: &mut DrainGrace,
    ) -> bool {
        if tid == me.tid && !super::claim::holding_claim() {
            return false;
        }
        let stamp = self.slots.stamp(b.idx, false).load(Ordering::Relaxed);
        let verified = live.is_verified_alive(tid, stamp);
        #[cfg(not(loom))]
        {
            let (clock, len) = if verified {
                (&mut grace.verified, DRAIN_LIVE_GRACE)
            } else {
                (&mut grace.unverified, DRAIN_GRACE)
            };
            !clock
                .get_or_insert_with(|| Deadline::after(len))
                .is_expired()
        }
        #[cfg(loom)]
        {
            let _ = (grace, verified);
            true
        }
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
