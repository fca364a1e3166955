//! An owner-stamped mutex word for shared memory that notices when its holder dies.
//!
//! Layout (16 bytes, `repr(C)`):
//! - `word: AtomicU64`: 0 when free; else the holder's thread id (bits 0..30), a `WAITERS`
//!   flag (bit 31) and, in the high 32 bits, the low 32 bits of the holder's start time. One
//!   compare-and-swap takes the lock and records who took it, so nobody ever sees a holder
//!   without its stamp. Sleepers wait on the low half ([`wait_low_half`]).
//! - `state: AtomicU32`: `CONSISTENT`, `OWNER_DIED` (held by a locker that took over from a
//!   dead holder and has not yet called `mark_consistent`), or `NOT_RECOVERABLE` (poisoned).
//!
//! The protocol is Drepper's three-state futex mutex ("Futexes Are Tricky", mutex 3) with the
//! holder's identity in place of the "locked" value, plus death detection: a parked waiter
//! wakes at least every 50 ms, and if the recorded holder is gone (no such thread, a zombie, or
//! an id reused by a thread with another start time) it takes the lock over by
//! compare-and-swap from exactly the word it inspected. Only one waiter can win that swap.

use super::deadline::Deadline;
use super::futex::{wait_low_half, wake_low_half, WaitOutcome};
use super::loom::{spin, AtomicU32, AtomicU64, Ordering};
use super::owner::OwnerStamp;
use crate::error::{LockError, LockTimeoutError, TryLockError};

const TID_MASK: u64 = OwnerStamp::ID_MASK;
const WAITERS: u64 = 1 << 31;
const LOW_HALF: u64 = 0xFFFF_FFFF;

const CONSISTENT: u32 = 0;
const OWNER_DIED: u32 = 1;
const NOT_RECOVERABLE: u32 = 2;

/// How many times `lock` re-reads a held word before parking.
#[cfg(not(loom))]
const POLLS: u32 = 8;
#[cfg(loom)]
const POLLS: u32 = 1;

/// How many `PAUSE`s a spinning waiter lets pass between two reads of a held word (about
/// 1 µs on current x86). Each read pulls the line out of the holder's cache, and a waiter that
/// reads after every `PAUSE` catches the word free right after nearly every unlock: the lock
/// then changes hands on every unlock and each critical section pays two line transfers (the
/// lock's and the data's). Reading rarely lets a holder that re-locks at once keep the lock
/// for a run of critical sections ("barging"), as an unfair mutex does; the waiter still gets
/// it when it reads it free, or parks after `POLLS` reads and is woken by the unlock.
#[cfg(not(loom))]
const POLL_GAP: u32 = 32;
#[cfg(loom)]
const POLL_GAP: u32 = 1;

/// The longest a parked waiter sleeps before checking whether the holder still lives.
#[cfg(not(loom))]
const DEATH_CHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// The first sleep is short, so a holder that was already dead (and reaped) when we arrived
/// is found within a few milliseconds, without a `/proc` read on every contended lock.
#[cfg(not(loom))]
const FIRST_DEATH_CHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// `unlock` by a thread that does not hold the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the calling thread does not hold this lock")]
pub struct NotHeld;

/// The state a contended lock keeps between its steps.
#[derive(Debug)]
struct Contended {
    /// The word the last sleep waited on (holder and WAITERS), if it slept.
    parked_on: Option<u64>,
    /// Whether that sleep ran out (rather than being woken or seeing the word change).
    timed_out: bool,
    /// Whether it has slept once (the first death check comes sooner).
    slept: bool,
    /// A word held by the calling thread means wait (async: another task of this thread
    /// holds it), not `Deadlock`.
    same_thread_waits: bool,
}

impl Contended {
    fn new(same_thread_waits: bool) -> Self {
        Contended {
            parked_on: None,
            timed_out: false,
            slept: false,
            same_thread_waits,
        }
    }
}

/// What a step of a contended lock ended with.
#[derive(Debug)]
enum LockStep {
    /// Taken, failed, or (`Err(None)`) timed out.
    Done(Result<(), Option<LockError<()>>>),
    /// Sleep while the low half of the word holds `expected`, until `slice`, then step again.
    Wait { expected: u32, slice: Deadline },
}

/// A process-shared mutex word that reports a dead holder instead of blocking forever.
///
/// `RawLock` has no guard and protects nothing by itself: it is the core that `Value`,
/// `Array` and `ipc_sem::Lock` wrap. Every bit pattern is a valid `RawLock` (a peer that
/// scribbles over it produces an error or a take-over, never undefined behaviour), and the
/// all-zero pattern is a free, consistent lock, so a freshly truncated segment needs no
/// initialisation.
///
/// ```
/// use ipc_shm::lowlevel::sync::RawLock;
///
/// let lock = RawLock::new();
/// lock.lock().unwrap();
/// assert!(lock.is_locked());
/// assert!(lock.try_lock().is_err()); // the same thread: `Deadlock`
/// lock.unlock().unwrap();
/// ```
#[repr(C)]
#[derive(Debug)]
pub struct RawLock {
    word: AtomicU64,
    state: AtomicU32,
    _reserved: AtomicU32,
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    /// A free, consistent lock (the all-zero pattern).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        RawLock {
            word: AtomicU64::new(0),
            state: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        }
    }

    /// A free, consistent lock (the all-zero pattern).
    #[cfg(loom)]
    pub fn new() -> Self {
        RawLock {
            word: AtomicU64::new(0),
            state: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        }
    }

    #[inline]
    fn my_word() -> u64 {
        OwnerStamp::current().to_bits()
    }

    /// Takes the lock if it is free, without waiting.
    ///
    /// # Errors
    /// `WouldBlock` if a live holder has it; `Deadlock` if the calling thread has it;
    /// `OwnerDied(())` if its holder was dead (the caller now holds it); `Poisoned`;
    /// `Corrupted`.
    pub fn try_lock(&self) -> Result<(), TryLockError<()>> {
        let me = Self::my_word();
        match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => self.acquired().map_err(TryLockError::from),
            Err(seen) if seen & !WAITERS == me => Err(TryLockError::Deadlock),
            Err(seen) => match self.take_over_if_dead(seen, me) {
                Some(r) => r.map_err(TryLockError::from),
                None => Err(TryLockError::WouldBlock),
            },
        }
    }

    /// Takes the lock, waiting as long as a live holder keeps it.
    ///
    /// Spins a few microseconds (reading the word about once a microsecond, so that a holder
    /// that re-locks at once keeps the lock rather than handing it over on every unlock), then
    /// sleeps on the futex; a sleeper re-checks the holder's liveness at
    /// least every 50 ms, so a holder killed by `SIGKILL` is noticed within that time.
    ///
    /// # Errors
    /// `OwnerDied(())` when the caller took the lock over from a dead holder (it holds the
    /// lock); `Poisoned` if an earlier take-over was never marked consistent; `Deadlock` if
    /// the calling thread already holds it; `Corrupted`.
    ///
    /// # Peer death
    /// A holder killed while the caller waits is noticed within about 50 ms.
    #[inline]
    pub fn lock(&self) -> Result<(), LockError<()>> {
        // The uncontended path is inlined into the caller; the rest is out of line.
        let me = Self::my_word();
        // SYNC POINT: Acquire pairs with the Release in `unlock`/`release`.
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired();
        }
        self.lock_slow(me)
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, me: u64) -> Result<(), LockError<()>> {
        loop {
            match self.lock_held(me, Deadline::never()) {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                // A deadline that never passes did not pass: wait on.
                Err(None) => continue,
            }
        }
    }

    /// [`RawLock::lock`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`RawLock::lock`], plus `Timeout`.
    pub fn lock_timeout(&self, timeout: std::time::Duration) -> Result<(), LockTimeoutError<()>> {
        self.lock_until(Deadline::after(timeout))
    }

    /// [`RawLock::lock`] waiting until `deadline` (for protocols that spend one deadline on
    /// several waits).
    ///
    /// # Errors
    /// As [`RawLock::lock`], plus `Timeout` once `deadline` passes.
    pub fn lock_until(&self, deadline: Deadline) -> Result<(), LockTimeoutError<()>> {
        self.lock_inner(deadline).map_err(|e| match e {
            Some(e) => LockTimeoutError::from(e),
            None => LockTimeoutError::Timeout,
        })
    }

    /// Takes the lock by `deadline`; `Err(None)` is a timeout.
    fn lock_inner(&self, deadline: Deadline) -> Result<(), Option<LockError<()>>> {
        let me = Self::my_word();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired().map_err(Some);
        }
        self.lock_held(me, deadline)
    }

    /// [`RawLock::lock_inner`] after its first compare-and-swap found the word taken (or
    /// `lock` after its inlined one did): spins a few microseconds, reading the word every
    /// [`POLL_GAP`] pauses, then parks.
    fn lock_held(&self, me: u64, deadline: Deadline) -> Result<(), Option<LockError<()>>> {
        for _ in 0..POLLS {
            for _ in 0..POLL_GAP {
                spin();
            }
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return self.acquired().map_err(Some);
            }
        }
        self.lock_contended(me, deadline)
    }

    fn lock_contended(&self, me: u64, deadline: Deadline) -> Result<(), Option<LockError<()>>> {
        let mut op = Contended::new(false);
        loop {
            match self.contended_step(&mut op, me, deadline) {
                LockStep::Done(r) => return r,
                LockStep::Wait { expected, slice } => {
                    // The futex compares the low half: holder id and WAITERS.
                    op.timed_out =
                        wait_low_half(&self.word, expected, slice) == WaitOutcome::TimedOut;
                }
            }
        }
    }

    /// The attempts of a contended lock until it ends or must sleep: the loop of
    /// [`RawLock::lock_until`] without its sleeps, which the caller (the blocking loop or
    /// the async driver) does, reporting in `op.timed_out` whether the sleep ran out.
    fn contended_step(&self, op: &mut Contended, me: u64, deadline: Deadline) -> LockStep {
        if self.state.load(Ordering::Relaxed) == NOT_RECOVERABLE {
            return LockStep::Done(Err(Some(LockError::Poisoned)));
        }
        if let Some(expected) = op.parked_on.take() {
            if std::mem::take(&mut op.timed_out) {
                if deadline.is_expired() {
                    return LockStep::Done(Err(None));
                }
                if let Some(r) = self.take_over_if_dead(expected, me | WAITERS) {
                    return LockStep::Done(r.map_err(Some));
                }
            }
        }
        loop {
            let seen = self.word.load(Ordering::Relaxed);
            if seen == 0 {
                // Others may sleep: take it with WAITERS set so our unlock wakes them.
                // SYNC POINT: Acquire pairs with the Release swap in `unlock`.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return LockStep::Done(self.acquired().map_err(Some));
                }
                continue;
            }
            // Held by the calling thread: a blocking caller would wait for itself; an async
            // one waits for another task of this thread (the guard is not `Send`, so the
            // holder is a task that runs on this thread).
            if seen & !WAITERS == me & !WAITERS && !op.same_thread_waits {
                return LockStep::Done(Err(Some(LockError::Deadlock)));
            }
            if seen & WAITERS == 0
                && self
                    .word
                    .compare_exchange(seen, seen | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let expected = seen | WAITERS;
            // The model has no timed wake-ups: the periodic death check of a parked waiter is
            // modelled by checking before parking, and by the dying thread's wake (see the
            // take-over model).
            #[cfg(loom)]
            if let Some(r) = self.take_over_if_dead(expected, me | WAITERS) {
                return LockStep::Done(r.map_err(Some));
            }
            let slice = Self::slice(deadline, op.slept);
            op.slept = true;
            op.parked_on = Some(expected);
            return LockStep::Wait {
                expected: (expected & LOW_HALF) as u32,
                slice,
            };
        }
    }

    #[cfg(not(loom))]
    fn slice(deadline: Deadline, slept: bool) -> Deadline {
        let check = if slept {
            DEATH_CHECK
        } else {
            FIRST_DEATH_CHECK
        };
        deadline.min(Deadline::after(check))
    }

    #[cfg(loom)]
    fn slice(deadline: Deadline, _slept: bool) -> Deadline {
        deadline
    }

    /// If the holder recorded in `seen` is gone, swaps `seen` for `me` and reports the
    /// take-over. `None`: the holder lives, or the word changed meanwhile.
    fn take_over_if_dead(&self, seen: u64, me: u64) -> Option<Result<(), LockError<()>>> {
        if !OwnerStamp::from_bits(seen & !WAITERS).is_dead() {
            return None;
        }
        // Keep the WAITERS flag: others may sleep on the dead holder's word.
        let new = me | (seen & WAITERS);
        // SYNC POINT: Acquire pairs with whatever Release the dead holder managed; its
        // writes to the protected data may be torn, which is what OWNER_DIED reports.
        self.word
            .compare_exchange(seen, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        let _ = self.state.compare_exchange(
            CONSISTENT,
            OWNER_DIED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Some(self.acquired())
    }

    /// Called with the lock just taken: reports the recorded state.
    #[inline]
    fn acquired(&self) -> Result<(), LockError<()>> {
        ipc_failpoints::failpoint!("shm.rawlock.held");
        // Relaxed suffices: `state` is only written by holders, before their Release unlock.
        match self.state.load(Ordering::Relaxed) {
            CONSISTENT => Ok(()),
            other => self.acquired_not_consistent(other),
        }
    }

    /// [`RawLock::acquired`] for a state other than `CONSISTENT`.
    #[cold]
    #[inline(never)]
    fn acquired_not_consistent(&self, state: u32) -> Result<(), LockError<()>> {
        match state {
            CONSISTENT => Ok(()),
            OWNER_DIED => Err(LockError::OwnerDied(())),
            NOT_RECOVERABLE => {
                self.release();
                Err(LockError::Poisoned)
            }
            _ => {
                self.release();
                Err(LockError::Corrupted)
            }
        }
    }

    /// Releases the lock held by the calling thread and wakes one sleeper if any.
    ///
    /// If the caller took the lock over from a dead holder and did not call
    /// [`RawLock::mark_consistent`], the lock becomes poisoned.
    ///
    /// # Errors
    /// [`NotHeld`] if the calling thread is not the holder (nothing changes).
    #[inline]
    pub fn unlock(&self) -> Result<(), NotHeld> {
        // The common case in one compare-and-swap: held by us, consistent, nobody asleep.
        // `state` is only written by holders, so it cannot change between the load and the
        // swap while we hold the lock; if we do not, the swap fails and the slow path says so.
        if self.state.load(Ordering::Relaxed) == CONSISTENT
            && self
                .word
                // SYNC POINT: Release pairs with the Acquire compare-and-swap of the next holder.
                .compare_exchange(Self::my_word(), 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(());
        }
        self.unlock_slow()
    }

    /// [`RawLock::unlock`] when the word is not exactly ours (sleepers, not the holder) or
    /// the state is not `CONSISTENT`.
    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) -> Result<(), NotHeld> {
        if !self.is_held_by_current_thread() {
            return Err(NotHeld);
        }
        if self.state.load(Ordering::Relaxed) == OWNER_DIED {
            self.state.store(NOT_RECOVERABLE, Ordering::Relaxed);
        }
        self.release();
        Ok(())
    }

    fn release(&self) {
        // SYNC POINT: Release pairs with the Acquire compare-and-swap of the next holder.
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            wake_low_half(&self.word, 1);
        }
    }

    /// Declares the data consistent after an `OwnerDied` take-over, so that the lock is not
    /// poisoned when released. Only the holder may call it (others get [`NotHeld`]).
    pub fn mark_consistent(&self) -> Result<(), NotHeld> {
        if !self.is_held_by_current_thread() {
            return Err(NotHeld);
        }
        let _ = self.state.compare_exchange(
            OWNER_DIED,
            CONSISTENT,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Whether somebody holds the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// Whether the lock is poisoned (a holder died and nobody marked the data consistent).
    pub fn is_poisoned(&self) -> bool {
        self.state.load(Ordering::Relaxed) == NOT_RECOVERABLE
    }

    /// The thread id recorded as holder, if held (a snapshot).
    pub fn holder(&self) -> Option<u32> {
        let w = self.word.load(Ordering::Relaxed) & TID_MASK;
        (w != 0).then(|| u32::try_from(w).unwrap_or(0))
    }

    /// Whether the calling thread holds the lock.
    pub fn is_held_by_current_thread(&self) -> bool {
        // The whole stamp: a thread that reuses a dead holder's id is not the holder.
        self.word.load(Ordering::Relaxed) & !WAITERS == OwnerStamp::current().to_bits()
    }
}

/// The async forms (feature `async`): the same steps as the blocking loop, with each sleep a
/// registration with the process's futex waiter thread ([`FutexWait`](super::FutexWait)).
///
/// Cancel safety: the lock is taken inside one synchronous step and the future completes in
/// that same poll, so a future dropped before it completes holds nothing. It may leave the
/// `WAITERS` flag on (the next unlock makes one spurious wake-up); a future dropped after a
/// wake-up that was meant for it passes that wake-up on if the lock is free.
#[cfg(all(feature = "async", not(loom)))]
impl RawLock {
    /// [`RawLock::lock`] as a future: takes the lock, waiting as long as a live holder keeps
    /// it, without blocking the thread.
    ///
    /// Unlike [`RawLock::lock`], a lock held by the calling thread is waited for, not
    /// reported as `Deadlock`: another task running on this thread may hold it. A task that
    /// locks twice therefore waits for ever, as with `tokio::sync::Mutex`.
    ///
    /// # Errors
    /// As [`RawLock::lock`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`RawLock::lock`]: a dead holder is noticed within about 50 ms.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it completes, it has not taken the lock.
    pub async fn lock_async(&self) -> Result<(), LockError<()>> {
        loop {
            match self.lock_inner_async(Deadline::never()).await {
                Ok(()) => return Ok(()),
                Err(Some(e)) => return Err(e),
                // A deadline that never passes did not pass: wait on.
                Err(None) => continue,
            }
        }
    }

    /// [`RawLock::lock_async`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`RawLock::lock_async`], plus `Timeout`.
    pub async fn lock_timeout_async(
        &self,
        timeout: std::time::Duration,
    ) -> Result<(), LockTimeoutError<()>> {
        self.lock_until_async(Deadline::after(timeout)).await
    }

    /// [`RawLock::lock_async`] waiting until `deadline`.
    ///
    /// # Errors
    /// As [`RawLock::lock_async`], plus `Timeout` once `deadline` passes.
    pub async fn lock_until_async(&self, deadline: Deadline) -> Result<(), LockTimeoutError<()>> {
        self.lock_inner_async(deadline).await.map_err(|e| match e {
            Some(e) => LockTimeoutError::from(e),
            None => LockTimeoutError::Timeout,
        })
    }

    /// Takes the lock by `deadline`; `Err(None)` is a timeout.
    async fn lock_inner_async(&self, deadline: Deadline) -> Result<(), Option<LockError<()>>> {
        let me = Self::my_word();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired().map_err(Some);
        }
        let mut op = Contended::new(true);
        let mut pass_on = PassOn {
            lock: self,
            armed: false,
        };
        loop {
            // The holder's identity is taken afresh at each step: a task may move between
            // threads at each `.await`.
            match self.contended_step(&mut op, Self::my_word(), deadline) {
                LockStep::Done(r) => {
                    pass_on.armed = false;
                    return r;
                }
                LockStep::Wait { expected, slice } => {
                    pass_on.armed = true;
                    op.timed_out = super::FutexWait::low_half(&self.word, expected, slice).await
                        == WaitOutcome::TimedOut;
                }
            }
        }
    }
}

/// Passes a wake-up on when a parked async locker is dropped and the lock is free: the
/// unlock that freed it may have woken this locker alone.
#[cfg(all(feature = "async", not(loom)))]
struct PassOn<'a> {
    lock: &'a RawLock,
    armed: bool,
}

#[cfg(all(feature = "async", not(loom)))]
impl Drop for PassOn<'_> {
    fn drop(&mut self) {
        if self.armed && self.lock.word.load(Ordering::Relaxed) == 0 {
            wake_low_half(&self.lock.word, 1);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// `threads` threads each increment a counter `iters` times under one lock, re-locking at
    /// once; returns the count and leaves the lock checked free.
    fn count_under_lock(threads: u64, iters: u64) -> u64 {
        let lock = Arc::new(RawLock::new());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
                std::thread::spawn(move || {
                    for _ in 0..iters {
                        lock.lock().unwrap();
                        // A non-atomic read-modify-write: lost updates show a broken lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        lock.unlock().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(!lock.is_locked());
        counter.load(Ordering::Relaxed)
    }

    #[test]
    fn exclusion_between_threads() {
        assert_eq!(count_under_lock(4, 20_000), 80_000);
    }

    /// A waiter that outlasts its spin parks (sets WAITERS) and takes the lock once the live
    /// holder unlocks.
    #[test]
    fn waiter_past_its_spin_parks_and_is_woken_by_the_unlock() {
        let lock = Arc::new(RawLock::new());
        lock.lock().unwrap();
        let l2 = Arc::clone(&lock);
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            l2.lock().unwrap();
            let waited = start.elapsed();
            assert!(l2.is_held_by_current_thread());
            l2.unlock().unwrap();
            waited
        });
        // Long past any spin: the waiter has parked and set WAITERS.
        let hold = Duration::from_millis(200);
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock.word.load(Ordering::Relaxed) & WAITERS == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_ne!(lock.word.load(Ordering::Relaxed) & WAITERS, 0);
        std::thread::sleep(hold);
        lock.unlock().unwrap();
        assert!(waiter.join().unwrap() >= hold);
        assert!(!lock.is_locked());
    }

    /// Two threads that re-lock at once (the counter loop): every increment is kept, and both
    /// finish although the spinning waiter reads the word only now and then.
    #[test]
    fn relocking_holders_both_finish_with_no_lost_update() {
        assert_eq!(count_under_lock(2, 200_000), 400_000);
    }

    #[test]
    fn timeout_and_not_held() {
        let lock = Arc::new(RawLock::new());
        lock.lock().unwrap();
        let l2 = Arc::clone(&lock);
        std::thread::spawn(move || {
            assert!(matches!(l2.try_lock(), Err(TryLockError::WouldBlock)));
            assert_eq!(l2.unlock(), Err(NotHeld));
            let start = Instant::now();
            let r = l2.lock_until(Deadline::after(Duration::from_millis(120)));
            assert!(matches!(r, Err(LockTimeoutError::Timeout)));
            assert!(start.elapsed() >= Duration::from_millis(120));
        })
        .join()
        .unwrap();
        assert!(matches!(lock.lock(), Err(LockError::Deadlock)));
        lock.unlock().unwrap();
        assert_eq!(lock.unlock(), Err(NotHeld));
    }

    #[test]
    fn dead_thread_holder_is_taken_over_then_poisons_unless_marked() {
        let lock = Arc::new(RawLock::new());
        let l2 = Arc::clone(&lock);
        // A thread that exits holding the lock is as gone as a killed process.
        std::thread::spawn(move || l2.lock().unwrap())
            .join()
            .unwrap();
        assert!(matches!(
            lock.lock_until(Deadline::after(Duration::from_secs(5))),
            Err(LockTimeoutError::OwnerDied(()))
        ));
        lock.mark_consistent().unwrap();
        lock.unlock().unwrap();
        lock.lock().unwrap();
        lock.unlock().unwrap();

        let l3 = Arc::clone(&lock);
        std::thread::spawn(move || l3.lock().unwrap())
            .join()
            .unwrap();
        assert!(matches!(lock.try_lock(), Err(TryLockError::OwnerDied(()))));
        lock.unlock().unwrap(); // not marked: poisoned
        assert!(lock.is_poisoned());
        assert!(matches!(lock.lock(), Err(LockError::Poisoned)));
        assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned)));
        assert!(!lock.is_locked());
    }

    #[test]
    fn garbage_state_is_reported_not_trusted() {
        let lock = RawLock::new();
        lock.state.store(77, Ordering::Relaxed);
        assert!(matches!(lock.try_lock(), Err(TryLockError::Corrupted)));
        assert!(!lock.is_locked());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    struct Shared {
        lock: RawLock,
        value: UnsafeCell<u32>,
    }
    // SAFETY: `value` is only touched while `lock` is held (the property under test).
    unsafe impl Sync for Shared {}

    #[test]
    fn mutual_exclusion_and_no_lost_wakeup() {
        loom::model(|| {
            let s = Arc::new(Shared {
                lock: RawLock::new(),
                value: UnsafeCell::new(0),
            });
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let s = Arc::clone(&s);
                    loom::thread::spawn(move || {
                        s.lock.lock().unwrap();
                        // SAFETY: the lock is held.
                        s.value.with_mut(|v| unsafe { *v += 1 });
                        s.lock.unlock().unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            s.lock.lock().unwrap();
            // SAFETY: the lock is held and the other threads are done.
            assert_eq!(s.value.with(|v| unsafe { *v }), 2);
            s.lock.unlock().unwrap();
        });
    }

    /// A holder dies holding the lock (it returns without unlocking; its death then wakes
    /// sleepers, standing for their periodic death check). Exactly one later locker takes
    /// over with `OwnerDied`, nobody else enters while a live thread holds it, and no waiter
    /// sleeps for ever.
    #[test]
    fn take_over_from_a_dead_holder() {
        loom::model(|| {
            let s = Arc::new(Shared {
                lock: RawLock::new(),
                value: UnsafeCell::new(0),
            });
            let took_over = Arc::new(AtomicU32::new(0));
            let victim = {
                let s = Arc::clone(&s);
                loom::thread::spawn(move || {
                    s.lock.lock().unwrap();
                    // SAFETY: the lock is held.
                    s.value.with_mut(|v| unsafe { *v += 1 });
                    crate::sync::owner::die();
                    wake_low_half(&s.lock.word, u32::MAX);
                })
            };
            let survivor = {
                let s = Arc::clone(&s);
                let took_over = Arc::clone(&took_over);
                loom::thread::spawn(move || {
                    match s.lock.lock() {
                        Ok(()) => {}
                        Err(LockError::OwnerDied(())) => {
                            took_over.fetch_add(1, Ordering::Relaxed);
                            s.lock.mark_consistent().unwrap();
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                    // SAFETY: the lock is held.
                    s.value.with_mut(|v| unsafe { *v += 1 });
                    s.lock.unlock().unwrap();
                })
            };
            victim.join().unwrap();
            survivor.join().unwrap();
            match s.lock.lock() {
                Ok(()) => assert_eq!(took_over.load(Ordering::Relaxed), 1),
                Err(LockError::OwnerDied(())) => {
                    assert_eq!(took_over.load(Ordering::Relaxed), 0);
                    s.lock.mark_consistent().unwrap();
                }
                Err(e) => panic!("{e:?}"),
            }
            // SAFETY: the lock is held and the other threads are done.
            assert_eq!(s.value.with(|v| unsafe { *v }), 2);
            s.lock.unlock().unwrap();
        });
    }
}
