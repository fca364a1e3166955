//! One semaphore conformance suite, instantiated for `Semaphore`, `BoundedSemaphore` and
//! `PosixSemaphore` in both sharing modes (inherited `new`; `create_named` + `open_named`).
//! Cross-process cases fork real children under the testkit watchdog.

mod common;

use std::time::{Duration, Instant};

use common::{fork, fresh, WATCHDOG};
use ipc_sem::{
    AcquireTimeoutError, BoundedSemaphore, Error, PosixSemaphore, Semaphore, TryAcquireError,
    MAX_VALUE,
};
use ipc_shm::RawValue;

/// The operations the suite needs, with each type's own signatures adapted.
trait SemUnderTest: Sized {
    /// Whether `release` past the initial value fails (`ReleasedTooManyTimes`).
    const BOUNDED: bool;
    /// The `/dev/shm` file prefix of a named object called `bare`.
    fn file_of(bare: &str) -> String;
    /// A semaphore holding `value`; a bounded one may be released up to `room`.
    fn new(value: u32, room: u32) -> ipc_sem::Result<Self>;
    fn create_named(name: &str, value: u32, room: u32) -> ipc_sem::Result<Self>;
    fn open_named(name: &str) -> ipc_sem::Result<Self>;
    fn acquire(&self);
    fn try_acquire(&self) -> bool;
    fn acquire_timeout(&self, d: Duration) -> bool;
    fn release(&self) -> ipc_sem::Result<()>;
    fn release_n(&self, n: u32) -> ipc_sem::Result<()>;
    fn value(&self) -> u32;
}

/// `try_acquire`'s outcome as "took a unit"; a failure is a test failure.
fn took(r: Result<(), TryAcquireError>) -> bool {
    match r {
        Ok(()) => true,
        Err(TryAcquireError::WouldBlock) => false,
        Err(TryAcquireError::Failed(e)) => panic!("try_acquire failed: {e}"),
    }
}

/// `acquire_timeout`'s outcome as "took a unit in time"; a failure is a test failure.
fn took_in_time(r: Result<(), AcquireTimeoutError>) -> bool {
    match r {
        Ok(()) => true,
        Err(AcquireTimeoutError::Timeout) => false,
        Err(AcquireTimeoutError::Failed(e)) => panic!("acquire_timeout failed: {e}"),
    }
}

macro_rules! native_sem {
    ($ty:ty, $bounded:expr, $new:expr, $create_named:expr) => {
        impl SemUnderTest for $ty {
            const BOUNDED: bool = $bounded;
            fn file_of(bare: &str) -> String {
                bare.to_owned()
            }
            fn new(value: u32, room: u32) -> ipc_sem::Result<Self> {
                $new(value, room)
            }
            fn create_named(name: &str, value: u32, room: u32) -> ipc_sem::Result<Self> {
                $create_named(name, value, room)
            }
            fn open_named(name: &str) -> ipc_sem::Result<Self> {
                <$ty>::open_named(name)
            }
            fn acquire(&self) {
                <$ty>::acquire(self).expect("acquire");
            }
            fn try_acquire(&self) -> bool {
                took(<$ty>::try_acquire(self))
            }
            fn acquire_timeout(&self, d: Duration) -> bool {
                took_in_time(<$ty>::acquire_timeout(self, d))
            }
            fn release(&self) -> ipc_sem::Result<()> {
                <$ty>::release(self)
            }
            fn release_n(&self, n: u32) -> ipc_sem::Result<()> {
                <$ty>::release_n(self, n)
            }
            fn value(&self) -> u32 {
                <$ty>::value(self)
            }
        }
    };
}

native_sem!(Semaphore, false, |v, _| Semaphore::new(v), |n, v, _| {
    Semaphore::create_named(n, v)
});
native_sem!(
    BoundedSemaphore,
    true,
    BoundedSemaphore::with_bound,
    BoundedSemaphore::create_named_with_bound
);

impl SemUnderTest for PosixSemaphore {
    const BOUNDED: bool = false;
    fn file_of(bare: &str) -> String {
        format!("sem.{bare}")
    }
    fn new(value: u32, _room: u32) -> ipc_sem::Result<Self> {
        PosixSemaphore::new(value)
    }
    fn create_named(name: &str, value: u32, _room: u32) -> ipc_sem::Result<Self> {
        PosixSemaphore::create_named(name, value)
    }
    fn open_named(name: &str) -> ipc_sem::Result<Self> {
        PosixSemaphore::open_named(name)
    }
    fn acquire(&self) {
        PosixSemaphore::acquire(self).expect("sem_wait");
    }
    fn try_acquire(&self) -> bool {
        took(PosixSemaphore::try_acquire(self))
    }
    fn acquire_timeout(&self, d: Duration) -> bool {
        took_in_time(PosixSemaphore::acquire_timeout(self, d))
    }
    fn release(&self) -> ipc_sem::Result<()> {
        PosixSemaphore::release(self)
    }
    fn release_n(&self, n: u32) -> ipc_sem::Result<()> {
        PosixSemaphore::release_n(self, n)
    }
    fn value(&self) -> u32 {
        PosixSemaphore::value(self).expect("sem_getvalue")
    }
}

/// How the semaphore under test is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Inherited,
    Named,
}

/// A semaphore made in `mode`, a way for a child to get its own handle, and the leak checks
/// that must pass once everything is dropped.
struct Setup<S> {
    sem: S,
    name: Option<String>,
    leaks: (common::Leaks, common::Leaks),
}

impl<S: SemUnderTest> Setup<S> {
    fn new(mode: Mode, tag: &str, value: u32, room: u32) -> Self {
        let (name, shm, sem_leaks) = fresh(tag);
        let (sem, name) = match mode {
            Mode::Inherited => (S::new(value, room).expect("new"), None),
            Mode::Named => {
                let s = S::create_named(&name, value, room).expect("create_named");
                // Named objects are private to their owner.
                let bare = name.trim_start_matches('/');
                assert_eq!(common::mode_of(&S::file_of(bare)), 0o600);
                (s, Some(name))
            }
        };
        Setup {
            sem,
            name,
            leaks: (shm, sem_leaks),
        }
    }

    /// The handle a child (or second user) uses: a fresh `open_named` in named mode, the
    /// inherited one otherwise.
    fn with_handle<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        match &self.name {
            None => f(&self.sem),
            Some(n) => f(&S::open_named(n).expect("open_named")),
        }
    }

    fn finish(self) {
        let Setup { sem, leaks, .. } = self;
        drop(sem);
        leaks.0.assert_no_new_shm();
        leaks.1.assert_no_new_shm();
    }
}

fn counts_and_try_acquire<S: SemUnderTest>(mode: Mode) {
    let s = Setup::<S>::new(mode, "cnt", 2, 2);
    s.with_handle(|h| {
        assert_eq!(h.value(), 2);
        assert!(h.try_acquire());
        h.acquire();
        assert!(!h.try_acquire());
        assert_eq!(h.value(), 0);
        h.release().unwrap();
        h.release().unwrap();
        assert_eq!(h.value(), 2);
    });
    assert_eq!(s.sem.value(), 2, "both handles see one semaphore");
    s.finish();
}

fn timeout_waits_at_least_the_timeout<S: SemUnderTest>(mode: Mode) {
    let s = Setup::<S>::new(mode, "tmo", 0, 1);
    let start = Instant::now();
    assert!(!s.sem.acquire_timeout(Duration::from_millis(100)));
    assert!(start.elapsed() >= Duration::from_millis(100));
    // A zero timeout is a try.
    assert!(!s.sem.acquire_timeout(Duration::ZERO));
    s.sem.release().unwrap();
    assert!(s.sem.acquire_timeout(Duration::ZERO));
    s.finish();
}

fn release_in_parent_wakes_child<S: SemUnderTest>(mode: Mode) {
    let s = Setup::<S>::new(mode, "wake", 0, 1);
    let child = fork(|| {
        s.with_handle(|h| {
            // Blocks until the parent's release; the generous timeout only guards a hang.
            let got = h.acquire_timeout(Duration::from_secs(10));
            i32::from(!got)
        })
    });
    std::thread::sleep(Duration::from_millis(50));
    s.sem.release().unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(s.sem.value(), 0, "the child took the unit");
    s.finish();
}

fn release_in_child_wakes_parent<S: SemUnderTest>(mode: Mode) {
    let s = Setup::<S>::new(mode, "wakep", 0, 2);
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        s.with_handle(|h| i32::from(h.release_n(2).is_err()))
    });
    // Both units arrive from the child; the timeouts only turn a hang into a failure.
    assert!(s.sem.acquire_timeout(Duration::from_secs(10)));
    assert!(s.sem.acquire_timeout(Duration::from_secs(10)));
    child.wait_success(WATCHDOG);
    assert_eq!(s.sem.value(), 0);
    s.finish();
}

fn mutual_exclusion_across_processes<S: SemUnderTest>(mode: Mode) {
    const ROUNDS: u64 = 2000;
    let s = Setup::<S>::new(mode, "mutex", 1, 1);
    // A plain (unlocked) counter: lost updates would show a broken semaphore.
    let counter = RawValue::new(0u64).unwrap();
    let work = |h: &S| {
        for i in 0..ROUNDS {
            if i % 2 == 0 {
                h.acquire();
            } else {
                assert!(h.acquire_timeout(Duration::from_secs(10)));
            }
            let v = counter.get();
            counter.set(v + 1);
            h.release().unwrap();
        }
    };
    let children: Vec<_> = (0..2)
        .map(|_| {
            fork(|| {
                s.with_handle(work);
                0
            })
        })
        .collect();
    work(&s.sem);
    for c in children {
        c.wait_success(WATCHDOG);
    }
    assert_eq!(counter.get(), 3 * ROUNDS);
    assert_eq!(s.sem.value(), 1);
    s.finish();
}

fn over_release_is_an_error<S: SemUnderTest>(mode: Mode) {
    if S::BOUNDED {
        let s = Setup::<S>::new(mode, "bnd", 2, 2);
        s.sem.acquire();
        assert!(matches!(
            s.sem.release_n(2),
            Err(Error::ReleasedTooManyTimes)
        ));
        assert_eq!(s.sem.value(), 1, "a refused release_n changes nothing");
        s.sem.release().unwrap();
        assert!(matches!(s.sem.release(), Err(Error::ReleasedTooManyTimes)));
        assert_eq!(s.sem.value(), 2);
        s.finish();
    } else {
        let s = Setup::<S>::new(mode, "ovf", MAX_VALUE, MAX_VALUE);
        assert!(matches!(s.sem.release(), Err(Error::Overflow { .. })));
        assert_eq!(s.sem.value(), MAX_VALUE);
        s.finish();
        assert!(matches!(
            S::new(MAX_VALUE + 1, MAX_VALUE + 1),
            Err(Error::InvalidArgument(_))
        ));
    }
}

fn killed_waiter_does_not_break_it<S: SemUnderTest>(mode: Mode) {
    let s = Setup::<S>::new(mode, "kw", 0, 2);
    let waiting = ipc_shm::AtomicValue::<std::sync::atomic::AtomicU32>::new(0).unwrap();
    let victim = fork(|| {
        s.with_handle(|h| {
            waiting.store(1, std::sync::atomic::Ordering::SeqCst);
            h.acquire();
            0
        })
    });
    common::until(|| waiting.load(std::sync::atomic::Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(20)); // let it park
    victim.kill();
    victim.wait(WATCHDOG);
    // The dead sleeper took nothing; the semaphore works for the living.
    s.sem.release().unwrap();
    assert_eq!(s.sem.value(), 1);
    let child = fork(|| s.with_handle(|h| i32::from(!h.acquire_timeout(Duration::from_secs(10)))));
    child.wait_success(WATCHDOG);
    assert_eq!(s.sem.value(), 0);
    s.sem.release_n(2).unwrap();
    assert!(s.sem.try_acquire() && s.sem.try_acquire() && !s.sem.try_acquire());
    s.finish();
}

macro_rules! conformance {
    ($modname:ident, $ty:ty, $mode:expr) => {
        mod $modname {
            use super::*;

            #[test]
            fn counts_and_try_acquire() {
                let _leaks = crate::common::leak_guard();
                super::counts_and_try_acquire::<$ty>($mode);
            }
            #[test]
            fn timeout_waits_at_least_the_timeout() {
                let _leaks = crate::common::leak_guard();
                super::timeout_waits_at_least_the_timeout::<$ty>($mode);
            }
            #[test]
            fn release_in_parent_wakes_child() {
                let _leaks = crate::common::leak_guard();
                super::release_in_parent_wakes_child::<$ty>($mode);
            }
            #[test]
            fn release_in_child_wakes_parent() {
                let _leaks = crate::common::leak_guard();
                super::release_in_child_wakes_parent::<$ty>($mode);
            }
            #[test]
            fn mutual_exclusion_across_processes() {
                let _leaks = crate::common::leak_guard();
                super::mutual_exclusion_across_processes::<$ty>($mode);
            }
            #[test]
            fn killed_waiter_does_not_break_it() {
                let _leaks = crate::common::leak_guard();
                super::killed_waiter_does_not_break_it::<$ty>($mode);
            }
            #[test]
            fn over_release_is_an_error() {
                let _leaks = crate::common::leak_guard();
                super::over_release_is_an_error::<$ty>($mode);
            }
        }
    };
}

conformance!(semaphore_inherited, Semaphore, Mode::Inherited);
conformance!(semaphore_named, Semaphore, Mode::Named);
conformance!(bounded_inherited, BoundedSemaphore, Mode::Inherited);
conformance!(bounded_named, BoundedSemaphore, Mode::Named);
conformance!(posix_inherited, PosixSemaphore, Mode::Inherited);
conformance!(posix_named, PosixSemaphore, Mode::Named);
