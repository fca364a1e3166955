//! A futex word that lives in shared memory, with absolute-deadline waits.
//!
//! The operations use the shared (non-`PRIVATE`) futex ops, so processes that map the same
//! page at different addresses wait and wake on the same kernel queue. Under `--cfg loom` the
//! kernel is replaced by a mutex-and-condvar model whose `wait` sleeps until a `wake`: a
//! missed wake-up shows as a deadlock in the model.

use std::fmt;
use std::ops::Deref;

use super::deadline::Deadline;
use super::loom::{AtomicU32, AtomicU64};

/// What a [`Futex::wait`] ended with. Every outcome obliges the caller to re-check its
/// condition: wake-ups can be spurious, and a signal handler (`EINTR`) counts as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by a `wake`, by a signal, or spuriously.
    Woken,
    /// The word no longer held `expected` when the wait began.
    ValueChanged,
    /// The deadline passed.
    TimedOut,
}

/// A 32-bit word other processes can wait on and wake, placed inside a shared segment.
///
/// `Futex` is `repr(transparent)` over an `AtomicU32`, so it can be laid over any aligned
/// `AtomicU32` in a mapping ([`Futex::from_atomic`]); all atomic operations are reachable
/// through `Deref`.
///
/// ```
/// use ipc_shm::lowlevel::sync::{Deadline, Futex, WaitOutcome};
/// use std::sync::atomic::Ordering;
/// use std::time::Duration;
///
/// let f = Futex::new(0);
/// // Nobody changes the word, so the wait ends at its deadline.
/// assert_eq!(f.wait(0, Deadline::after(Duration::from_millis(5))), WaitOutcome::TimedOut);
/// f.store(1, Ordering::Release);
/// assert_eq!(f.wait(0, Deadline::never()), WaitOutcome::ValueChanged);
/// f.wake_all();
/// ```
#[repr(transparent)]
pub struct Futex {
    word: AtomicU32,
}

impl Futex {
    /// A futex word holding `value` (for heap use and tests; in a segment, lay one over the
    /// mapping with [`Futex::from_atomic`]).
    #[cfg(not(loom))]
    pub const fn new(value: u32) -> Self {
        Futex {
            word: AtomicU32::new(value),
        }
    }

    /// A futex word holding `value`.
    #[cfg(loom)]
    pub fn new(value: u32) -> Self {
        Futex {
            word: AtomicU32::new(value),
        }
    }

    /// Views an `AtomicU32` (typically one inside a shared mapping) as a futex word.
    pub fn from_atomic(word: &AtomicU32) -> &Futex {
        let ptr = std::ptr::from_ref(word).cast::<Futex>();
        // SAFETY: `Futex` is `repr(transparent)` over `AtomicU32`, so the pointer is valid,
        // aligned and initialised for a `Futex` for as long as `word` is borrowed.
        unsafe { &*ptr }
    }

    /// Sleeps while the word holds `expected`, until woken or `deadline` passes.
    ///
    /// Returns at once with [`WaitOutcome::ValueChanged`] if the word differs (checked
    /// atomically by the kernel against a concurrent `wake`), and with
    /// [`WaitOutcome::TimedOut`] without a syscall if the deadline has already passed.
    pub fn wait(&self, expected: u32, deadline: Deadline) -> WaitOutcome {
        imp::wait(&self.word, expected, deadline)
    }

    /// Wakes up to `n` waiters; returns how many the kernel woke (0 under loom).
    pub fn wake(&self, n: u32) -> usize {
        imp::wake(&self.word, n)
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) -> usize {
        self.wake(u32::MAX)
    }
}

impl Deref for Futex {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.word
    }
}

impl fmt::Debug for Futex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Futex").field(&self.word).finish()
    }
}

/// Waits on the low 32 bits of a 64-bit word (the half that holds a counter, on either
/// endianness) while they equal `expected`. Lets a protocol keep a value and a waiter count in
/// one `AtomicU64` (so one compare-and-swap updates both) and still sleep on the value.
pub fn wait_low_half(word: &AtomicU64, expected: u32, deadline: Deadline) -> WaitOutcome {
    imp::wait_low_half(word, expected, deadline)
}

/// Wakes up to `n` waiters sleeping in [`wait_low_half`] on `word`.
pub fn wake_low_half(word: &AtomicU64, n: u32) -> usize {
    imp::wake_low_half(word, n)
}

#[cfg(not(loom))]
mod imp {
    use super::{AtomicU32, AtomicU64, Deadline, WaitOutcome};
    use crate::sys::{self, FutexWait};

    fn outcome(w: FutexWait) -> WaitOutcome {
        match w {
            FutexWait::Woken => WaitOutcome::Woken,
            FutexWait::ValueChanged => WaitOutcome::ValueChanged,
            FutexWait::TimedOut => WaitOutcome::TimedOut,
        }
    }

    fn wait_on(addr: *const u32, expected: u32, deadline: Deadline) -> WaitOutcome {
        if deadline.is_expired() {
            return WaitOutcome::TimedOut;
        }
        // SAFETY: `addr` comes from a live `&AtomicU32` or `&AtomicU64` borrowed for the whole
        // call, so it is aligned and mapped; the kernel reads it atomically.
        outcome(unsafe { sys::futex_wait(addr, expected, deadline.as_monotonic_nanos()) })
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> WaitOutcome {
        wait_on(word.as_ptr().cast_const(), expected, deadline)
    }

    pub(super) fn wake(word: &AtomicU32, n: u32) -> usize {
        // SAFETY: the address comes from a live `&AtomicU32`.
        unsafe { sys::futex_wake(word.as_ptr().cast_const(), n) }
    }

    /// The address of the low 32 bits of a 64-bit word.
    fn low_half(word: &AtomicU64) -> *const u32 {
        let base = word.as_ptr().cast_const().cast::<u32>();
        if cfg!(target_endian = "little") {
            base
        } else {
            // SAFETY: an `AtomicU64` is 8 bytes, so base + 1 (4 bytes on) stays inside it.
            unsafe { base.add(1) }
        }
    }

    pub(super) fn wait_low_half(
        word: &AtomicU64,
        expected: u32,
        deadline: Deadline,
    ) -> WaitOutcome {
        // The kernel compares the 4 bytes atomically; Rust code only ever accesses the word
        // as a whole `AtomicU64`, so no mixed-size access happens on our side.
        wait_on(low_half(word), expected, deadline)
    }

    pub(super) fn wake_low_half(word: &AtomicU64, n: u32) -> usize {
        // SAFETY: the address lies inside a live `&AtomicU64`.
        unsafe { sys::futex_wake(low_half(word), n) }
    }
}

#[cfg(loom)]
mod imp {
    //! The kernel's futex as a model: one global mutex and condvar. A waiter checks the word
    //! under the mutex and sleeps on the condvar; a waker takes the mutex and notifies all.
    //! Finite deadlines are modelled as no deadline (a model cannot let time pass), except an
    //! already expired one, which returns `TimedOut` at once.
    use super::{AtomicU32, AtomicU64, Deadline, WaitOutcome};
    use crate::sync::loom::Ordering;
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref PARK: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    fn wait_on(load: impl Fn() -> u32, expected: u32, deadline: Deadline) -> WaitOutcome {
        if deadline.as_monotonic_nanos() == Some(0) {
            return WaitOutcome::TimedOut;
        }
        let guard = PARK.0.lock().unwrap_or_else(|p| p.into_inner());
        if load() != expected {
            return WaitOutcome::ValueChanged;
        }
        drop(PARK.1.wait(guard));
        WaitOutcome::Woken
    }

    fn wake_all() -> usize {
        let _guard = PARK.0.lock().unwrap_or_else(|p| p.into_inner());
        PARK.1.notify_all();
        0
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Deadline) -> WaitOutcome {
        wait_on(|| word.load(Ordering::SeqCst), expected, deadline)
    }

    pub(super) fn wake(_word: &AtomicU32, _n: u32) -> usize {
        wake_all()
    }

    pub(super) fn wait_low_half(
        word: &AtomicU64,
        expected: u32,
        deadline: Deadline,
    ) -> WaitOutcome {
        wait_on(|| word.load(Ordering::SeqCst) as u32, expected, deadline)
    }

    pub(super) fn wake_low_half(_word: &AtomicU64, _n: u32) -> usize {
        wake_all()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn timed_wait_waits_at_least_the_timeout() {
        let f = Futex::new(7);
        let start = Instant::now();
        assert_eq!(
            f.wait(7, Deadline::after(Duration::from_millis(30))),
            WaitOutcome::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(f.wait(8, Deadline::never()), WaitOutcome::ValueChanged);
        assert_eq!(f.wait(7, Deadline::expired()), WaitOutcome::TimedOut);
    }

    #[test]
    fn wake_releases_a_waiter() {
        let f = Arc::new(Futex::new(0));
        let f2 = Arc::clone(&f);
        let t = std::thread::spawn(move || {
            while f2.load(Ordering::Acquire) == 0 {
                f2.wait(0, Deadline::never());
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        f.store(1, Ordering::Release);
        f.wake_all();
        t.join().unwrap();
    }

    #[test]
    fn low_half_waits_on_the_counter_half() {
        let w = AtomicU64::new((5u64 << 32) | 3);
        assert_eq!(
            wait_low_half(&w, 4, Deadline::never()),
            WaitOutcome::ValueChanged
        );
        assert_eq!(
            wait_low_half(&w, 3, Deadline::after(Duration::from_millis(5))),
            WaitOutcome::TimedOut
        );
        assert_eq!(wake_low_half(&w, 1), 0);
    }
}
