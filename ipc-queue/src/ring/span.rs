//! Messages larger than a slot (a `Queue` built with a `slot_size` below its
//! `max_message_size`): a message spans consecutive slots, claimed with one CAS.
//!
//! **Layout.** The *head* slot holds the message's first bytes (for a `Queue`, its length word
//! first); each *continuation* slot holds the next `slot_size` bytes. Only the head's length
//! word tells how many slots a message spans, so a reader can tell a head from a continuation
//! only by where it starts. That is why:
//!
//! **Continuations are published as tombstones, before the head.** A put claims all of its
//! slots with one run claim ([`Ring::claim_run`] with a minimum: all or nothing), writes them,
//! publishes every continuation as a tombstone in order, then publishes the head as a message.
//! A get that meets a head claims it together with its continuations in one CAS
//! ([`Ring::claim_message`]: it reads the head's length before the claim, which the CAS then
//! validates) and reads them as the message; any get that meets a continuation without its
//! head (the head's producer died before publishing it, and the head became a tombstone)
//! skips it as the tombstone it is. So a message is delivered whole or not at all, exactly
//! once, and nothing a dead producer half wrote is ever read as a message.
//!
//! Crash recovery is the run's: a producer killed with its span claimed leaves idle slots
//! (or published continuations) that become tombstones once it is seen dead; a consumer
//! killed holding a span loses that one message (counted once: its continuations are
//! tombstones, not messages). `join` accounting counts a message's continuation positions
//! as retired tombstones, settled by the consumer that takes the message.

use super::claim::{Attempt, ClaimedRun, EndRunOnUnwind, Holding};
use super::layout::{Sink, SlotReader, Slots, Source};
use super::{diff, owner, pack, seq, Blocker, Idx, Me, Ring, MAX_STEPS, RUN, TOMB, WAITING};
use crate::loom::{spin, Ordering};

/// Writes a message across the `k` slots of a span claimed from slot `first`: byte `o` of
/// the message lives in slot `o / slot` of the span, at `o % slot`.
pub(crate) struct SpanWriter<'r, 'a, S: Slots> {
    ring: &'r Ring<'a, S>,
    first: Idx,
    k: u64,
    slot: usize,
}

/// Reads a message across the `k` slots of a span claimed from slot `first`.
pub(crate) struct SpanReader<'r, 'a, S: Slots> {
    ring: &'r Ring<'a, S>,
    first: Idx,
    k: u64,
    slot: usize,
}

impl<S: Slots> Ring<'_, S> {
    /// The bytes of payload one slot holds.
    fn slot_len(&self, i: Idx) -> usize {
        self.slots.read(i, |r| r.len())
    }

    /// The slot `j` places after slot `first` (`j` below the capacity).
    fn nth(&self, first: Idx, j: u64) -> Idx {
        let i = first.0 as u64 + j;
        Idx((if i >= self.cap { i - self.cap } else { i }) as usize)
    }

    /// Calls `f(slot, offset in it, start in the range, length)` for each piece of the byte
    /// range `offset..offset + n` of a span of `k` slots of `slot` bytes from `first`; false
    /// (nothing done) if the range is outside the span.
    fn pieces(
        &self,
        first: Idx,
        k: u64,
        slot: usize,
        offset: usize,
        n: usize,
        mut f: impl FnMut(Idx, usize, usize, usize) -> bool,
    ) -> bool {
        let total = usize::try_from(k).ok().and_then(|k| k.checked_mul(slot));
        match (offset.checked_add(n), total) {
            (Some(end), Some(total)) if end <= total && slot > 0 => {}
            _ => return false,
        }
        let mut done = 0;
        while done < n {
            let at = offset + done;
            let (j, within) = (at / slot, at % slot);
            let len = (slot - within).min(n - done);
            if !f(self.nth(first, j as u64), within, done, len) {
                return false;
            }
            done += len;
        }
        true
    }

    /// One attempt to put a message that spans `k` slots: claims exactly `k` consecutive free
    /// slots with one CAS (or none: `Blocked` on the first that is not free), writes them
    /// with `write`, then publishes the continuations as tombstones and the head as the
    /// message. A `write` that fails or unwinds leaves every slot a tombstone.
    pub(crate) fn try_put_span<R, E>(
        &self,
        me: Me,
        k: u64,
        write: &mut impl FnMut(SpanWriter<'_, '_, S>) -> Result<R, E>,
    ) -> Attempt<Result<R, E>> {
        // The guard publishes a tombstone in every slot if anything below unwinds.
        let run = match self.open_put_run(me, k, k) {
            Ok(run) => run,
            Err(a) => return a,
        };
        let (p, at, n) = (run.at.q, run.at, run.left);
        let held = Holding::new();
        let r = write(SpanWriter {
            ring: self,
            first: at.i,
            k: n,
            slot: self.slot_len(at.i),
        });
        drop(held);
        std::mem::forget(run);
        if r.is_ok() {
            let mut second = at;
            self.step(&mut second);
            // Continuations first, in order (tombstones to anyone who meets them without
            // their head), then the head: whoever sees the head sees its continuations.
            self.end_run(second.q, second.i, n - 1, |q| pack(q + 1, TOMB));
            self.ctl.tombstones.fetch_add(n - 1, Ordering::Relaxed);
            ipc_failpoints::failpoint!("queue.span.continuations_published");
            self.end_claim(at.i, pack(p + 1, 0));
        } else {
            self.end_run(p, at.i, n, |q| pack(q + 1, TOMB));
            self.ctl.tombstones.fetch_add(n, Ordering::Relaxed);
        }
        Attempt::Done(r)
    }

    /// Claims the message at the dequeue position with all its slots: a head (`span` of its
    /// reader says how many slots the message takes, clamped to the capacity) with its
    /// continuations, which must all be published tombstones, or a lone tombstone (a real
    /// one, or a continuation whose head is gone). The head is read before the claim; the
    /// CAS from the position word read before it proves nobody claimed it meanwhile, and a
    /// published slot does not change until claimed.
    pub(super) fn claim_message(
        &self,
        me: Me,
        span: &impl Fn(SlotReader<'_>) -> u64,
    ) -> ClaimedRun {
        let word = &self.ctl.deq;
        // SYNC POINT: Acquire, as in `claim_get`.
        let mut e = word.load(Ordering::Acquire);
        for _ in 0..MAX_STEPS {
            let p = seq(e);
            // The head's state (Acquire: its publish follows its continuations').
            let (first, s) = match self.ready_at(p, 1, WAITING | TOMB) {
                Ok(ready) => ready,
                Err(Some(stop)) => return stop,
                Err(None) => {
                    spin();
                    e = word.load(Ordering::Acquire);
                    continue;
                }
            };
            let k = if owner(s) & TOMB != 0 {
                1
            } else {
                self.slots.read(first, span).clamp(1, self.cap)
            };
            // Every continuation must be a published tombstone.
            let mut stale = false;
            let mut c = self.cursor(p).unwrap_or(super::Cursor { q: p, i: first });
            for _ in 1..k {
                self.step(&mut c);
                let s = self.slots.state(c.i).load(Ordering::Acquire);
                if s & !WAITING != pack(c.q + 1, TOMB) {
                    if diff(seq(s), c.q + 1) < 0 {
                        // Not published yet: only a corrupted head gets here (its producer
                        // published the continuations first). Wait for it as for a message.
                        return ClaimedRun::Blocked(Some(Blocker {
                            idx: c.i,
                            state: s,
                            pos: p,
                        }));
                    }
                    stale = true;
                    break;
                }
            }
            if stale {
                spin();
                e = word.load(Ordering::Acquire);
                continue;
            }
            let mut c = self.cursor(p).unwrap_or(super::Cursor { q: p, i: first });
            for _ in 0..k {
                self.stamp_slot(c.i, true, me);
                self.step(&mut c);
            }
            self.resolve_record(e, 1, me);
            let rec = pack(
                self.advance(p, first, k),
                me.tid | if k > 1 { RUN } else { 0 },
            );
            // SYNC POINT: AcqRel, as in `claim_get`.
            match word.compare_exchange_weak(e, rec, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return ClaimedRun::Run {
                        p,
                        n: k,
                        tombs: owner(s) & TOMB != 0,
                    }
                }
                Err(now) => e = now,
            }
        }
        ClaimedRun::Blocked(None)
    }

    /// One attempt to get a message that may span slots: [`Ring::claim_message`], then
    /// `read` over the whole span; its continuations are counted as the tombstones they are
    /// and every slot is released in order. Lone tombstones met on the way are skipped.
    pub(crate) fn try_get_message<R>(
        &self,
        me: Me,
        span: &impl Fn(SlotReader<'_>) -> u64,
        read: &mut impl FnMut(SpanReader<'_, '_, S>) -> R,
    ) -> Attempt<R> {
        for _ in 0..MAX_STEPS {
            let (p, k) = match self.claim_message(me, span).run() {
                Ok(run) => run,
                Err(a) => return a,
            };
            let Some(at) = self.cursor(p) else {
                return Attempt::Corrupted;
            };
            ipc_failpoints::failpoint!("queue.get.claimed");
            if owner(self.slots.state(at.i).load(Ordering::Relaxed)) & TOMB != 0 {
                // A lone tombstone (`claim_message` claims no span for one).
                self.settle(at.i, p);
                ipc_failpoints::failpoint!("queue.tombstone.published");
                self.release(at.i, p);
                continue;
            }
            let run = EndRunOnUnwind {
                ring: self,
                at,
                left: k,
                reading: true,
            };
            let r = read(SpanReader {
                ring: self,
                first: at.i,
                k,
                slot: self.slot_len(at.i),
            });
            std::mem::forget(run);
            let mut c = at;
            for _ in 1..k {
                self.step(&mut c);
                self.settle(c.i, c.q);
            }
            let one_lap = self.one_lap;
            self.end_run(p, at.i, k, |q| pack(q + one_lap, 0));
            return Attempt::Done(r);
        }
        Attempt::Blocked(None)
    }
}

impl<S: Slots> Sink for SpanWriter<'_, '_, S> {
    fn len(&self) -> usize {
        usize::try_from(self.k).map_or(0, |k| k.saturating_mul(self.slot))
    }

    fn store(&mut self, offset: usize, src: &[u8]) -> bool {
        let ring = self.ring;
        ring.pieces(
            self.first,
            self.k,
            self.slot,
            offset,
            src.len(),
            |i, within, from, n| {
                ring.slots
                    .write(i, |mut w| w.store(within, &src[from..from + n]))
            },
        )
    }
}

impl<S: Slots> Source for SpanReader<'_, '_, S> {
    fn len(&self) -> usize {
        usize::try_from(self.k).map_or(0, |k| k.saturating_mul(self.slot))
    }

    fn copy_out(&self, offset: usize, dst: &mut [u8]) -> bool {
        let ring = self.ring;
        ring.pieces(
            self.first,
            self.k,
            self.slot,
            offset,
            dst.len(),
            |i, within, from, n| {
                ring.slots
                    .read(i, |r| r.copy_out(within, &mut dst[from..from + n]))
            },
        )
    }

    fn append_to(&self, offset: usize, n: usize, dst: &mut Vec<u8>) -> bool {
        let ring = self.ring;
        let before = dst.len();
        // Checked against the span (bounded by the mapping) before anything is reserved.
        if !offset.checked_add(n).is_some_and(|end| end <= self.len()) {
            return false;
        }
        dst.reserve_exact(n);
        let ok = ring.pieces(
            self.first,
            self.k,
            self.slot,
            offset,
            n,
            |i, within, _, n| ring.slots.read(i, |r| r.append_to(within, n, dst)),
        );
        if !ok {
            dst.truncate(before);
        }
        ok
    }
}
