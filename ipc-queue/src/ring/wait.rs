//! How a blocked caller waits and is woken: parking on a slot, the wake-ups of `close`, the
//! backoff and death-check pacing, and the steps of a blocked put or get (`put_step`,
//! `get_step`) with their two drivers: blocking (`put_until`, `get_until`) and async
//! (`put_async`, `get_async`, feature `async`).
//!
//! **Sleepers mark the slot they wait on.** No counter is touched per put or get. A consumer
//! that finds the slot at its position not yet published (a producer: the slot at its
//! position not yet released) sets the `WAITING` bit in that slot's state word by a CAS from
//! exactly the state it saw, re-reads the position word and the closed flag, and futex-waits
//! on the state word's low half (bounded to 20 ms slices, after which it looks for dead
//! claimers again). Before its CAS it counts itself in the ring's sleeper count (on the
//! read-mostly line of the closed flag) and runs the heavy side of an asymmetric barrier
//! (`membarrier(2)`, [`ipc_shm::lowlevel::sync::heavy_barrier`]); it uncounts itself when it
//! wakes. The first sleep of a call skips the heavy barrier and lasts at most 200 µs instead
//! (see `Ring::arm`): a ping-pong never pays the system call, and the rare owner that
//! missed the count costs one such delay, not a lost wake-up. The owner ends its phase (`claim::end_claim`) in one of two ways:
//! - while the count reads zero, with a plain store, then the light barrier (free) and a
//!   second look at the count, waking the slot if it is no longer zero: the heavy barrier
//!   makes the sleeper see the store or the owner see the count. This is the fast path: a
//!   read-modify-write of the state would stall the owner for a cross-core miss per message;
//! - while anybody sleeps (or in a process where `membarrier` is unavailable), with a `swap`
//!   that wakes all sleepers on the slot only if the previous value had `WAITING`. The swap
//!   and the CAS are read-modify-writes of one word, so one of them sees the other: either
//!   the sleeper's CAS fails (the state moved on, it retries) or the swap sees `WAITING`.
//!
//! A reclaim that replaces a state with `WAITING` wakes too; a helper's mark keeps the bit. `close` sets the flag, then clears `WAITING` (an RMW, so a sleeper
//! between its checks and its futex call sees the value change) and wakes on the slots at the
//! current enqueue and dequeue positions: a sleeper that read its position before the flag
//! was set waits on one of those slots, or its slot has moved on and it was woken then (the
//! flag store, the position re-reads and the slot RMWs are all SeqCst).

#[cfg(not(loom))]
use std::time::Duration;

use ipc_shm::lowlevel::sync::{wait_low_half, wake_low_half, Deadline};

use super::claim::Attempt;
use super::layout::{SlotReader, SlotWriter, Slots};
use super::recover::{DrainGrace, Liveness, Reclaim};
use super::{owner, seq, Blocker, Idx, Me, Ring, CLOSED, TID_MASK, WAITING};
use crate::loom::{spin, yield_now, AtomicU64, Ordering};

/// How long a blocked caller lets a claimed slot sit before checking whether its owner lives.
#[cfg(not(loom))]
const STUCK_CHECK: Duration = Duration::from_millis(10);
/// The longest a blocked caller sleeps before re-checking for dead peers.
#[cfg(not(loom))]
pub(super) const SLICE: Duration = Duration::from_millis(20);

/// A sleeper counted in the ring's sleeper count (`Control::sleepers`) while this lives: the
/// owners that end a claim meanwhile take the handshake that wakes (see
/// `claim::end_claim`). A sleeper killed while counted leaves the count raised for good,
/// which only makes every later claim end with a swap (the handshake used while anybody
/// sleeps), never wrong.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(sleepers: &'a AtomicU64) -> Counted<'a> {
        // SYNC POINT: SeqCst, ordered before the heavy barrier that follows (see `arm`).
        sleepers.fetch_add(1, Ordering::SeqCst);
        Counted(sleepers)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // Relaxed: an owner that still sees us counted only wakes once too often.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What [`Ring::arm`] prepared: the state word and the low half to sleep on, while counted.
struct Armed<'a> {
    word: &'a AtomicU64,
    low: u32,
    /// The heavy barrier ran: owners of every process see us or we see them.
    fenced: bool,
    _counted: Counted<'a>,
}

impl Armed<'_> {
    /// How long to sleep: until `deadline`, or at most `UNFENCED_SLEEP` without the heavy
    /// barrier (an owner in a process that stores plainly might have missed us).
    fn deadline(&self, deadline: Deadline) -> Deadline {
        if self.fenced {
            deadline
        } else {
            deadline.min(unfenced_sleep())
        }
    }
}

/// The longest sleep without the heavy barrier (see [`Ring::arm`]).
#[cfg(not(loom))]
const UNFENCED_SLEEP: Duration = Duration::from_micros(200);

#[cfg(not(loom))]
fn unfenced_sleep() -> Deadline {
    Deadline::after(UNFENCED_SLEEP)
}
#[cfg(loom)]
fn unfenced_sleep() -> Deadline {
    Deadline::from_timeout(None)
}

impl<S: Slots> Ring<'_, S> {
    /// Wakes every sleeper on slot `i` (after replacing a state that had `WAITING`).
    #[inline]
    pub(super) fn wake_slot(&self, i: Idx) {
        wake_low_half(self.slots.state(i), u32::MAX);
    }

    /// Sleeps on the slot in `b` (the first one not ready for us at position `b.pos` of the
    /// enqueue word, `getting` false, or of the dequeue word) until its state moves on, the
    /// ring closes, or `deadline`. Returns at once if anything changed since `b` was read.
    /// `draining` (a get on a closed ring waiting for a claim made before the close to be
    /// published) sleeps even though the ring is closed: `close` has woken everyone already,
    /// and the publish it waits for wakes it.
    fn park(&self, b: Blocker, getting: bool, draining: bool, deadline: Deadline, fence: bool) {
        if let Some(armed) = self.arm(b, getting, draining, fence) {
            // The futex compares the low 32 bits: owner, WAITING and the low bits of seq.
            wait_low_half(armed.word, armed.low, armed.deadline(deadline));
        }
    }

    /// The first half of [`Ring::park`]: counts us among the ring's sleepers, runs the heavy
    /// barrier, marks the slot in `b` `WAITING` and re-checks the position and the closed
    /// flag. Returns what to sleep on (counted until it drops), or `None` if something
    /// changed and the caller should retry at once. A caller that arms and then does not
    /// sleep (a cancelled async wait) leaves only the `WAITING` bit, which costs the slot's
    /// next owner one spurious wake-up.
    fn arm(&self, b: Blocker, getting: bool, draining: bool, fence: bool) -> Option<Armed<'_>> {
        let st = self.slots.state(b.idx);
        // SYNC POINT: the count, then the heavy barrier (if `fence`), then the CAS below reads
        // the state: against `end_claim`'s plain store, light barrier and count load. Either
        // the owner's store is visible to our CAS (which fails: we retry), or its count load
        // sees us (it wakes the slot).
        //
        // The first sleep of an operation skips the heavy barrier (a system call that
        // interrupts the CPUs running the peers) and is bounded to `UNFENCED_SLEEP` instead:
        // an owner whose count load missed our count (only while its own store still sat
        // in its store buffer, a window of a few nanoseconds) then costs one such delay, not
        // a lost wake-up. A ping-pong's every wait is a first sleep; a long wait fences once.
        // Where the heavy barrier is refused, every sleep is bounded that way. Loom models
        // have no clock (a bounded sleep is an endless one there), so they always fence.
        let counted = Counted::new(&self.ctl.sleepers);
        let fenced = (fence || cfg!(loom)) && ipc_shm::lowlevel::sync::heavy_barrier();
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
        Some(Armed {
            word: st,
            // Truncation is the point: the futex compares the low half.
            low: armed as u32,
            fenced,
            _counted: counted,
        })
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
}

/// Spin briefly, then tell the caller to park: a wait that outlasts a fraction of a
/// microsecond sleeps in the futex rather than burning the CPU its peer may need.
pub(crate) struct Backoff {
    step: u32,
    /// The step after which the caller parks.
    limit: u32,
    /// The operation has slept once already (later sleeps run the heavy barrier).
    parked: bool,
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
    /// A blocking put on a full ring, and a blocking get on a ring another consumer also
    /// reads, yield up to 8 times (a few microseconds) before they park. A full ring means
    /// the consumers are behind, several consumers that they may outnumber the CPUs: a yield
    /// hands a peer this CPU, and the call finds its slot ready without the sleep and wake-up
    /// (and the waker's system call) that parking costs. With the peer on another CPU a
    /// yield returns at once. Measured: see the CHANGELOG (Q7, Q2).
    #[cfg(not(loom))]
    const CROWDED_YIELD_LIMIT: u32 = Self::SPIN_LIMIT + 8;
    /// Loom models park at once: a loom yield deprioritises the yielding thread, so spinning
    /// there would let the peer finish first and leave the parking path unexplored.
    #[cfg(loom)]
    const SPIN_LIMIT: u32 = 0;
    #[cfg(loom)]
    const YIELD_LIMIT: u32 = 0;
    #[cfg(loom)]
    const CROWDED_YIELD_LIMIT: u32 = 0;

    /// The backoff of a get, or of an async put (whose yields would block its executor).
    pub(crate) fn new() -> Backoff {
        Backoff {
            step: if cfg!(loom) { 1 } else { 0 },
            limit: Self::YIELD_LIMIT,
            parked: false,
        }
    }

    /// The backoff of a blocking put, or of a get among several consumers (see
    /// `CROWDED_YIELD_LIMIT`).
    fn crowded() -> Backoff {
        Backoff {
            limit: Self::CROWDED_YIELD_LIMIT,
            ..Backoff::new()
        }
    }

    /// One wait step.
    // Under loom SPIN_LIMIT is 0, which makes the comparison below trivially true there.
    #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
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
        self.step > self.limit
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
        /// Run the heavy barrier first (every sleep of an operation but its first; see
        /// [`Ring::arm`]).
        fence: bool,
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
    /// The clocks of a get on a closed ring waiting for claims made before the close.
    grace: DrainGrace,
}

impl Blocked {
    /// After a first attempt blocked on `first`; `yielding` for a blocking put, or a
    /// blocking get among several consumers.
    fn after(first: Option<Blocker>, yielding: bool) -> Blocked {
        Blocked {
            backoff: if yielding {
                Backoff::crowded()
            } else {
                Backoff::new()
            },
            blocked: Some(first),
            grace: DrainGrace::default(),
        }
    }

    /// A blocked operation that has made no attempt yet.
    #[cfg(all(feature = "async", not(loom)))]
    fn fresh() -> Blocked {
        Blocked {
            backoff: Backoff::new(),
            blocked: None,
            grace: DrainGrace::default(),
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
                fence: std::mem::replace(&mut backoff.parked, true),
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
                fence,
            } => self.park(b, getting, draining, slice, fence),
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
            Attempt::Blocked(b) => self.put_blocked(b, me, deadline, watch, live, &mut |me| {
                self.try_put(me, write)
            }),
        }
    }

    /// Puts a run of up to `max` messages (`write(k, slot)` writes the `k`-th), waiting until
    /// `deadline` for room for at least one, as [`Ring::put_until`]; returns how many were
    /// put (see [`Ring::try_put_run`]).
    pub(crate) fn put_run_until(
        &self,
        me: Me,
        max: u64,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        write: &mut impl FnMut(u64, SlotWriter<'_>),
    ) -> Result<u64, Stop> {
        match self.try_put_run(me, max, write) {
            Attempt::Done(n) => Ok(n),
            Attempt::Closed => Err(Stop::Closed),
            Attempt::Corrupted => Err(Stop::Corrupted),
            Attempt::Blocked(b) => self.put_blocked(b, me, deadline, watch, live, &mut |me| {
                self.try_put_run(me, max, write)
            }),
        }
    }

    /// A put made of `attempt`s (one attempt of some kind of put), waiting until `deadline`
    /// as [`Ring::put_until`] does.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // `Queue`'s spans
    pub(crate) fn put_with<R>(
        &self,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        match attempt(me) {
            Attempt::Done(r) => Ok(r),
            Attempt::Closed => Err(Stop::Closed),
            Attempt::Corrupted => Err(Stop::Corrupted),
            Attempt::Blocked(b) => self.put_blocked(b, me, deadline, watch, live, attempt),
        }
    }

    /// A get made of `attempt`s, waiting until `deadline` as [`Ring::get_until`] does.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))] // `Queue`'s spans
    pub(crate) fn get_with<R>(
        &self,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        let first = match attempt(me) {
            Attempt::Done(r) => return Ok(r),
            Attempt::Corrupted => return Err(Stop::Corrupted),
            Attempt::Closed => None,
            Attempt::Blocked(b) => b,
        };
        self.get_blocked(first, me, deadline, watch, live, attempt)
    }

    /// A blocking put after a first attempt blocked on `first`; `attempt` makes one more.
    #[inline(never)]
    fn put_blocked<R>(
        &self,
        first: Option<Blocker>,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        let mut op = Blocked::after(first, true);
        loop {
            match self.put_step(&mut op, me, deadline, watch, live, attempt) {
                Step::Done(r) => return r,
                Step::Wait(w) => self.wait_blocking(w),
            }
        }
    }

    /// Attempts of a blocked put until it ends or must wait: the loop of
    /// [`Ring::put_until`] without its waits, which the caller (a blocking or an async
    /// driver) does. `attempt` is one attempt of the put (`try_put`, `try_put_run`).
    fn put_step<R>(
        &self,
        op: &mut Blocked,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Step<Result<R, Stop>> {
        loop {
            let b = match op.blocked.take() {
                Some(b) => b,
                None => match attempt(me) {
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
        let first = match self.try_get(me, read) {
            Attempt::Done(r) => return Ok(r),
            Attempt::Corrupted => return Err(Stop::Corrupted),
            Attempt::Closed => None,
            Attempt::Blocked(b) => b,
        };
        self.get_blocked(first, me, deadline, watch, live, &mut |me| {
            self.try_get(me, read)
        })
    }

    /// Gets a run of up to `max` messages, each read with `read`, waiting until `deadline`
    /// for at least one, as [`Ring::get_until`]; returns how many were read (see
    /// [`Ring::try_get_run`]).
    pub(crate) fn get_run_until(
        &self,
        me: Me,
        max: u64,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        read: &mut impl FnMut(SlotReader<'_>),
    ) -> Result<u64, Stop> {
        let first = match self.try_get_run(me, max, read) {
            Attempt::Done(n) => return Ok(n),
            Attempt::Corrupted => return Err(Stop::Corrupted),
            Attempt::Closed => None,
            Attempt::Blocked(b) => b,
        };
        self.get_blocked(first, me, deadline, watch, live, &mut |me| {
            self.try_get_run(me, max, read)
        })
    }

    /// A blocking get after a first attempt blocked on `first` (or found the ring closed);
    /// `attempt` makes one more.
    #[inline(never)]
    fn get_blocked<R>(
        &self,
        first: Option<Blocker>,
        me: Me,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        // A get yields before it parks, as a put does, when another consumer made the last
        // claim on the dequeue word: consumers then outnumber what a lone reader needs, and
        // the CPU is better handed on than slept on. A lone consumer (a ping-pong, a 1->1
        // stream) keeps the short spin-then-park.
        let crowded = owner(self.ctl.deq.load(Ordering::Relaxed)) & TID_MASK != me.tid;
        let mut op = Blocked::after(first, crowded);
        loop {
            match self.get_step(&mut op, me, deadline, watch, live, attempt) {
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
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Step<Result<R, Stop>> {
        loop {
            let b = match op.blocked.take() {
                Some(b) => b,
                None => match attempt(me) {
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
                match attempt(me) {
                    Attempt::Done(r) => return Step::Done(Ok(r)),
                    Attempt::Corrupted => return Step::Done(Err(Stop::Corrupted)),
                    Attempt::Blocked(Some(b)) => match self.claim_pending(b) {
                        Some(tid) if self.keep_draining(b, tid, me, live, &mut op.grace) => {
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
                fence,
            } => {
                if let Some(armed) = self.arm(b, getting, draining, fence) {
                    let until = armed.deadline(slice);
                    ipc_shm::lowlevel::sync::FutexWait::low_half(armed.word, armed.low, until)
                        .await;
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
        self.put_async_with(deadline, watch, live, &mut |me| self.try_put(me, write))
            .await
    }

    /// A put made of `attempt`s as a future (see [`Ring::put_async`]).
    pub(crate) async fn put_async_with<R>(
        &self,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        let mut op = Blocked::fresh();
        loop {
            match self.put_step(&mut op, Me::current(), deadline, watch, live, attempt) {
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
        self.get_async_with(deadline, watch, live, &mut |me| self.try_get(me, read))
            .await
    }

    /// A get made of `attempt`s as a future (see [`Ring::put_async`]).
    pub(crate) async fn get_async_with<R>(
        &self,
        deadline: Deadline,
        watch: &DeathWatch,
        live: &impl Liveness,
        attempt: &mut impl FnMut(Me) -> Attempt<R>,
    ) -> Result<R, Stop> {
        let mut op = Blocked::fresh();
        loop {
            match self.get_step(&mut op, Me::current(), deadline, watch, live, attempt) {
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
