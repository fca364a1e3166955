//! The counting-semaphore protocol shared by `Semaphore` and `BoundedSemaphore`: one
//! `AtomicU64` holding the value (low 32 bits, the futex half) and the number of sleepers
//! (high 32 bits).
//!
//! - `acquire` takes a unit with one compare-and-swap when the value is positive; otherwise
//!   it spins briefly (not at all right after this thread woke a sleeper, or when others
//!   already sleep), then registers as a sleeper (waiters + 1, in a compare-and-swap that
//!   also checks the value is still 0) and sleeps on the low half while it reads 0. A woken
//!   sleeper takes a unit and deregisters in one compare-and-swap.
//! - `release` adds to the value in one compare-and-swap that also enforces the maximum (the
//!   bound of a `BoundedSemaphore`), and calls `FUTEX_WAKE` only if that same word recorded a
//!   sleeper.
//!
//! No lost wake-up: a sleeper registers in the word before it sleeps, so a releaser whose
//! compare-and-swap comes later sees it; a release that lands between registration and the
//! futex wait changes the low half, which the kernel's compare in `FUTEX_WAIT` catches.
//!
//! A sleeper killed while registered leaves the waiter count one too high; the only effect is
//! a `FUTEX_WAKE` per release that wakes nobody. Every word a peer may write is a valid state;
//! counts saturate instead of wrapping.

use ipc_shm::lowlevel::sync::{wait_low_half, wake_low_half, Deadline, WaitOutcome};

use crate::loom::{note_woke_sleeper, spin, take_woke_sleeper, AtomicU64, Ordering, SPINS};

const VALUE_MASK: u64 = 0xFFFF_FFFF;

/// How long a sleeper sleeps before it re-reads the value on its own, so a wake-up lost to a
/// killed peer delays a waiter by at most this much instead of forever.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
const WAITER: u64 = 1 << 32;

#[inline]
fn value_of(word: u64) -> u32 {
    (word & VALUE_MASK) as u32
}

#[inline]
fn waiters_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// `release` would push the value past the maximum; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exceeded;

/// The initial word for `value` (no sleepers).
pub(crate) fn initial(value: u32) -> u64 {
    u64::from(value)
}

/// The current value.
#[inline]
pub(crate) fn value(word: &AtomicU64) -> u32 {
    value_of(word.load(Ordering::Relaxed))
}

/// Takes one unit if the value is positive, without waiting.
#[inline]
pub(crate) fn try_acquire(word: &AtomicU64) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    while value_of(cur) > 0 {
        // SYNC POINT: Acquire pairs with the Release compare-and-swap in `release`, so what
        // the releaser wrote before releasing is visible to the acquirer.
        match word.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
    false
}

/// Takes one unit, waiting until `deadline`; `false` if the deadline passed first.
#[inline]
pub(crate) fn acquire(word: &AtomicU64, deadline: Deadline) -> bool {
    if try_acquire(word) {
        return true;
    }
    acquire_slow(word, deadline)
}

#[cold]
fn acquire_slow(word: &AtomicU64, deadline: Deadline) -> bool {
    // Spin only when an answer may come within the spin: not right after this thread woke a
    // peer (ping-pong: the peer must first be scheduled), and not behind registered sleepers
    // (a release goes to them first; spinning would only compete with them).
    let spins = if take_woke_sleeper() || waiters_of(word.load(Ordering::Relaxed)) > 0 {
        0
    } else {
        SPINS
    };
    for _ in 0..spins {
        spin();
        if value(word) > 0 && try_acquire(word) {
            return true;
        }
    }
    match try_or_register(word, deadline) {
        Registration::Took => true,
        Registration::Expired => false,
        Registration::Registered => sleep_registered(word, deadline),
    }
}

/// What [`try_or_register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registration {
    /// Took a unit.
    Took,
    /// The value is 0 and the deadline passed; nothing changed.
    Expired,
    /// The value is 0 and the caller is now counted as a sleeper.
    Registered,
}

/// Takes a unit if there is one, else registers as a sleeper (in the same word, and only
/// while the value is still 0) unless the deadline passed.
fn try_or_register(word: &AtomicU64, deadline: Deadline) -> Registration {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if value_of(cur) > 0 {
            match word.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Registration::Took,
                Err(seen) => {
                    cur = seen;
                    continue;
                }
            }
        }
        if deadline.is_expired() {
            return Registration::Expired;
        }
        // A saturated count is left as is: releases then always wake, which is safe.
        let registered = cur.checked_add(WAITER).unwrap_or(cur);
        match word.compare_exchange_weak(cur, registered, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Registration::Registered,
            Err(seen) => cur = seen,
        }
    }
}

/// What a step of a registered sleeper ended with.
#[derive(Clone, Copy, Debug)]
enum SleepStep {
    /// Took a unit (`true`) or timed out (`false`); deregistered either way.
    Done(bool),
    /// Sleep while the value (the low half) is 0, until this slice ends, then step again.
    Wait(Deadline),
}

/// Sleeps as a registered waiter until a unit is taken or the deadline passes; deregisters in
/// either case. Every re-wait (wake-up by a signal, spurious, or a unit taken by someone
/// faster) uses the same absolute deadline.
fn sleep_registered(word: &AtomicU64, deadline: Deadline) -> bool {
    let mut outcome = WaitOutcome::Woken;
    loop {
        match registered_step(word, outcome, deadline) {
            SleepStep::Done(took) => return took,
            SleepStep::Wait(slice) => {
                outcome = wait_low_half(word, 0, slice);
                ipc_failpoints::failpoint!("sem.semaphore.woken");
            }
        }
    }
}

/// One step of a registered sleeper after a sleep that ended with `outcome`: the loop of
/// [`sleep_registered`] without its sleep, which the caller (blocking or async) does.
fn registered_step(word: &AtomicU64, outcome: WaitOutcome, deadline: Deadline) -> SleepStep {
    loop {
        let cur = word.load(Ordering::Relaxed);
        let deregistered = if waiters_of(cur) > 0 {
            cur - WAITER
        } else {
            cur
        };
        if value_of(cur) > 0 {
            // Take a unit and deregister in one step.
            // SYNC POINT: Acquire pairs with the Release compare-and-swap in `release`.
            if word
                .compare_exchange(cur, deregistered - 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return SleepStep::Done(true);
            }
            continue;
        }
        if outcome == WaitOutcome::TimedOut && deadline.is_expired() {
            if word
                .compare_exchange(cur, deregistered, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return SleepStep::Done(false);
            }
            continue;
        }
        // Sleep in slices: a unit whose wake-up never came (its releaser was killed between
        // the store and the wake, or the sleeper it woke was killed before taking it) is
        // found at the next re-check.
        return SleepStep::Wait(deadline.min(Deadline::after(RECHECK)));
    }
}

/// The async form of [`acquire`] (feature `async`): the same steps, each sleep a
/// registration with the process's futex waiter thread.
///
/// Cancel safety: a unit is taken only inside a synchronous step, and the future completes
/// in that poll. Dropped while registered as a sleeper, it deregisters, and if a unit is
/// there and others sleep, passes on the wake-up that may have been meant for it.
#[cfg(all(feature = "async", not(loom)))]
pub(crate) async fn acquire_async(word: &AtomicU64, deadline: Deadline) -> bool {
    if try_acquire(word) {
        return true;
    }
    match try_or_register(word, deadline) {
        Registration::Took => return true,
        Registration::Expired => return false,
        Registration::Registered => {}
    }
    let mut sleeper = Sleeper { word, active: true };
    let mut outcome = WaitOutcome::Woken;
    loop {
        match registered_step(word, outcome, deadline) {
            SleepStep::Done(took) => {
                // `registered_step` deregistered.
                sleeper.active = false;
                return took;
            }
            SleepStep::Wait(slice) => {
                outcome = ipc_shm::lowlevel::sync::FutexWait::low_half(word, 0, slice).await;
                ipc_failpoints::failpoint!("sem.semaphore.woken");
            }
        }
    }
}

/// A registered async sleeper: deregisters when its future is dropped mid-wait.
#[cfg(all(feature = "async", not(loom)))]
struct Sleeper<'a> {
    word: &'a AtomicU64,
    active: bool,
}

#[cfg(all(feature = "async", not(loom)))]
impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            if waiters_of(cur) == 0 {
                // A peer scribbled the count away (or it saturated and was reset): nothing
                // of ours to take back.
                return;
            }
            match self.word.compare_exchange_weak(
                cur,
                cur - WAITER,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        let after = cur - WAITER;
        if value_of(after) > 0 && waiters_of(after) > 0 {
            // A release may have woken this sleeper alone: pass the wake-up on.
            wake_low_half(self.word, 1);
        }
    }
}

/// Adds `n` units if the value stays at most `max`; wakes up to `n` sleepers if the word
/// records any.
#[inline]
pub(crate) fn release(word: &AtomicU64, n: u32, max: u32) -> Result<(), Exceeded> {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        let new_value = match value_of(cur).checked_add(n) {
            Some(v) if v <= max => v,
            _ => return Err(Exceeded),
        };
        let new = (cur & !VALUE_MASK) | u64::from(new_value);
        // SYNC POINT: Release pairs with the Acquire compare-and-swap of the acquirer.
        match word.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) => cur = seen,
        }
    }
    ipc_failpoints::failpoint!("sem.semaphore.release_mid_wake");
    if waiters_of(cur) > 0 && n > 0 {
        wake(word, n);
    }
    Ok(())
}

/// Wakes up to `n` sleepers and notes it for this thread's next blocking acquire.
#[cold]
fn wake(word: &AtomicU64, n: u32) {
    wake_low_half(word, n);
    note_woke_sleeper();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn counts_and_bounds() {
        let w = AtomicU64::new(initial(2));
        assert!(try_acquire(&w));
        assert!(try_acquire(&w));
        assert!(!try_acquire(&w));
        assert_eq!(release(&w, 3, 3), Ok(()));
        assert_eq!(release(&w, 1, 3), Err(Exceeded));
        assert_eq!(value(&w), 3);
        assert_eq!(release(&w, u32::MAX, u32::MAX), Err(Exceeded));
    }

    #[test]
    fn timed_acquire_waits_then_deregisters() {
        let w = AtomicU64::new(0);
        let start = Instant::now();
        assert!(!acquire(&w, Deadline::after(Duration::from_millis(30))));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(
            w.load(Ordering::Relaxed),
            0,
            "the waiter count is back to 0"
        );
    }

    #[test]
    fn threads_hand_units_over() {
        let w = Arc::new(AtomicU64::new(0));
        let takers: Vec<_> = (0..3)
            .map(|_| {
                let w = Arc::clone(&w);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        assert!(acquire(&w, Deadline::after(Duration::from_secs(20))));
                    }
                })
            })
            .collect();
        for _ in 0..6000 {
            release(&w, 1, u32::MAX).unwrap();
        }
        for t in takers {
            t.join().unwrap();
        }
        assert_eq!(w.load(Ordering::Relaxed), 0);
    }

    proptest! {
        #[test]
        fn any_word_is_a_state(bits in any::<u64>(), n in any::<u32>(), max in any::<u32>()) {
            let w = AtomicU64::new(bits);
            let v = value(&w);
            prop_assert_eq!(try_acquire(&w), v > 0);
            let before = w.load(Ordering::Relaxed);
            match release(&w, n, max) {
                Ok(()) => prop_assert_eq!(value(&w), value_of(before) + n),
                Err(Exceeded) => prop_assert_eq!(w.load(Ordering::Relaxed), before),
            }
            prop_assert_eq!(waiters_of(w.load(Ordering::Relaxed)), waiters_of(bits));
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Fast path: two acquirers and one release over an initial value of 1; exactly the two
    /// units are taken, nobody blocks forever (a lost wake-up deadlocks the model).
    #[test]
    fn loom_two_acquirers_one_release() {
        loom::model(|| {
            let w = Arc::new(AtomicU64::new(initial(1)));
            let t: Vec<_> = (0..2)
                .map(|_| {
                    let w = Arc::clone(&w);
                    loom::thread::spawn(move || assert!(acquire(&w, Deadline::never())))
                })
                .collect();
            release(&w, 1, u32::MAX).unwrap();
            for t in t {
                t.join().unwrap();
            }
            assert_eq!(
                w.load(Ordering::SeqCst),
                0,
                "value 0, no sleeper left registered"
            );
        });
    }

    /// Blocking path: a sleeper on an empty semaphore is woken by a release from another
    /// thread (no lost wake-up between registration and the futex wait). The releaser waits
    /// until the sleeper has registered, so the model cannot take the fast path instead.
    #[test]
    fn loom_release_wakes_a_sleeper() {
        loom::model(|| {
            let w = Arc::new(AtomicU64::new(initial(0)));
            let w2 = Arc::clone(&w);
            let sleeper = loom::thread::spawn(move || assert!(acquire(&w2, Deadline::never())));
            while waiters_of(w.load(Ordering::SeqCst)) == 0 {
                loom::thread::yield_now();
            }
            release(&w, 1, u32::MAX).unwrap();
            sleeper.join().unwrap();
            assert_eq!(w.load(Ordering::SeqCst), 0);
        });
    }

    /// The bound is checked in the same compare-and-swap: two concurrent releases on a bound
    /// of 1 from 0 let exactly one through.
    #[test]
    fn loom_bounded_release_is_atomic() {
        loom::model(|| {
            let w = Arc::new(AtomicU64::new(initial(0)));
            let w2 = Arc::clone(&w);
            let t = loom::thread::spawn(move || release(&w2, 1, 1).is_ok());
            let mine = release(&w, 1, 1).is_ok();
            let theirs = t.join().unwrap();
            assert!(mine ^ theirs);
            assert_eq!(value(&w), 1);
        });
    }
}
