//! The workspace convention for blocking, non-blocking and timed calls, for every type of
//! `ipc-sem`: each `try_` form matched on its `WouldBlock`, each `_timeout` form on its
//! `Timeout` (or `WaitTimeoutResult::timed_out`), the terminal states (`OwnerDied`,
//! `Poisoned`, `Broken`) where a type has them, and the conversions into `ipc_sem::Error`,
//! across processes where a state involves another process. Also `Condition` over an
//! existing `Lock` (Python's `Condition(lock)`), anonymous and named.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{fork, fresh, until, Exit, WATCHDOG};
use ipc_sem::{
    AcquireTimeoutError, Barrier, BarrierTimeoutError, BoundedSemaphore, Condition, Error, Event,
    Lock, LockError, LockTimeoutError, PosixSemaphore, RLock, Semaphore, TryAcquireError,
    TryLockError, TryWaitError,
};
use ipc_shm::AtomicValue;

const SHORT: Duration = Duration::from_millis(100);

/// A shared step counter: children and the parent wait for each other's steps.
fn steps() -> AtomicValue<AtomicU32> {
    AtomicValue::<AtomicU32>::new(0).unwrap()
}

fn reach(step: &AtomicValue<AtomicU32>, n: u32) {
    until(|| step.load(Ordering::SeqCst) >= n);
}

#[test]
fn lock_forms_against_a_live_then_killed_holder_in_another_process() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    let step = steps();
    let child = fork(|| {
        let Ok(g) = lock.lock() else { return 1 };
        step.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        drop(g);
        0
    });
    reach(&step, 1);
    let e = lock.try_lock().unwrap_err();
    assert!(matches!(e, TryLockError::WouldBlock) && e.is_would_block());
    assert!(matches!(Error::from(e), Error::WouldBlock));
    let start = Instant::now();
    let e = lock.lock_timeout(SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(e, LockTimeoutError::Timeout) && e.is_timeout());
    assert!(matches!(Error::from(e), Error::Timeout));

    child.kill();
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    match lock.try_lock() {
        Err(TryLockError::OwnerDied(g)) => drop(g), // not marked consistent: poisons
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(matches!(lock.lock(), Err(LockError::Poisoned)));
    assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned)));
    let e = lock.lock_timeout(SHORT).unwrap_err();
    assert!(matches!(e, LockTimeoutError::Poisoned) && e.is_poisoned());
    assert!(matches!(Error::from(e), Error::Poisoned));

    // The holder itself: Deadlock from every form, never a wait.
    let other = Lock::new().unwrap();
    let held = other.lock().unwrap();
    assert!(matches!(other.lock(), Err(LockError::Deadlock)));
    assert!(matches!(other.try_lock(), Err(TryLockError::Deadlock)));
    assert!(matches!(
        other.lock_timeout(WATCHDOG),
        Err(LockTimeoutError::Deadlock)
    ));
    drop(held);
    assert!(matches!(other.release(), Err(Error::NotHeld)));
}

#[test]
fn rlock_forms_against_a_live_then_killed_owner_in_another_process() {
    let _leaks = common::leak_guard();
    let lock = RLock::new().unwrap();
    let step = steps();
    let child = fork(|| {
        let (Ok(a), Ok(b)) = (lock.lock(), lock.try_lock()) else {
            return 1;
        };
        step.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        drop((b, a));
        0
    });
    reach(&step, 1);
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        lock.lock_timeout(SHORT),
        Err(LockTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= SHORT);
    // Only the owner releases.
    assert!(matches!(lock.release(), Err(Error::NotOwner)));

    child.kill();
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    match lock.lock_timeout(WATCHDOG) {
        Err(LockTimeoutError::OwnerDied(g)) => {
            assert_eq!(lock.depth(), 1);
            g.mark_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Re-entrant: the owner's try and timed forms succeed at once.
    let a = lock.try_lock().unwrap();
    let b = lock.lock_timeout(Duration::ZERO).unwrap();
    assert_eq!(lock.depth(), 2);
    drop((b, a));
    assert!(!lock.is_locked());
}

/// The semaphore forms, through one adapter per type (all three have the same signatures).
macro_rules! semaphore_forms {
    ($name:ident, $ty:ty, $new:expr, $value:expr) => {
        #[test]
        fn $name() {
            let _leaks = common::leak_guard();
            let sem: $ty = $new(1).unwrap();
            let step = steps();
            // Another process takes the only unit and dies with it: a semaphore has no
            // owner, so the unit is gone (no `OwnerDied` here), and both forms say so.
            let child = fork(|| {
                if sem.acquire().is_err() {
                    return 1;
                }
                step.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_secs(60));
                0
            });
            reach(&step, 1);
            let e = sem.try_acquire().unwrap_err();
            assert!(matches!(e, TryAcquireError::WouldBlock) && e.is_would_block());
            assert!(matches!(Error::from(e), Error::WouldBlock));
            let start = Instant::now();
            let e = sem.acquire_timeout(SHORT).unwrap_err();
            assert!(start.elapsed() >= SHORT);
            assert!(matches!(e, AcquireTimeoutError::Timeout) && e.is_timeout());
            assert!(matches!(Error::from(e), Error::Timeout));
            child.kill();
            assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
            assert!(matches!(
                sem.try_acquire(),
                Err(TryAcquireError::WouldBlock)
            ));

            // A unit released by another process: each form takes one.
            fork(|| i32::from(sem.release().is_err())).wait_success(WATCHDOG);
            sem.try_acquire().unwrap();
            fork(|| i32::from(sem.release().is_err())).wait_success(WATCHDOG);
            sem.acquire_timeout(WATCHDOG).unwrap();
            assert_eq!($value(&sem), 0);
        }
    };
}

semaphore_forms!(
    semaphore_forms_across_processes,
    Semaphore,
    Semaphore::new,
    |s: &Semaphore| s.value()
);
semaphore_forms!(
    bounded_semaphore_forms_across_processes,
    BoundedSemaphore,
    BoundedSemaphore::new,
    |s: &BoundedSemaphore| s.value()
);
semaphore_forms!(
    posix_semaphore_forms_across_processes,
    PosixSemaphore,
    PosixSemaphore::new,
    |s: &PosixSemaphore| s.value().unwrap()
);

#[test]
fn semaphore_guard_forms() {
    let _leaks = common::leak_guard();
    let sem = Semaphore::new(1).unwrap();
    let g = sem.guard().unwrap();
    assert!(matches!(sem.try_guard(), Err(TryAcquireError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        sem.guard_timeout(SHORT),
        Err(AcquireTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= SHORT);
    drop(g);
    drop(sem.try_guard().unwrap());
    drop(sem.guard_timeout(SHORT).unwrap());
    assert_eq!(sem.value(), 1);

    let bounded = BoundedSemaphore::new(1).unwrap();
    let g = bounded.try_guard().unwrap();
    assert!(matches!(
        bounded.guard_timeout(Duration::ZERO),
        Err(AcquireTimeoutError::Timeout)
    ));
    drop(g);
    assert!(matches!(
        bounded.release(),
        Err(Error::ReleasedTooManyTimes)
    ));
}

#[test]
fn event_wait_timeout_says_timed_out_as_std() {
    let _leaks = common::leak_guard();
    let ev = Event::new().unwrap();
    let start = Instant::now();
    let r = ev.wait_timeout(SHORT);
    assert!(r.timed_out());
    assert!(start.elapsed() >= SHORT);
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(20));
        ev.set();
        0
    });
    assert!(!ev.wait_timeout(WATCHDOG).timed_out());
    child.wait_success(WATCHDOG);
    // Set already: returns at once, not timed out.
    assert!(!ev.wait_timeout(Duration::ZERO).timed_out());
}

#[test]
fn condition_forms_and_wait_timeout_results() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let step = steps();
    let child = fork(|| {
        let Ok(g) = cond.lock() else { return 1 };
        step.store(1, Ordering::SeqCst);
        // Hold the lock until the parent has seen WouldBlock and Timeout, then wait on the
        // condition (which gives the lock up) until the parent notifies.
        until(|| step.load(Ordering::SeqCst) == 2);
        match cond.wait_while_timeout(g, WATCHDOG, || step.load(Ordering::SeqCst) != 3) {
            Ok((_g, r)) => i32::from(r.timed_out()) * 2,
            Err(_) => 3,
        }
    });
    reach(&step, 1);
    assert!(matches!(cond.try_lock(), Err(TryLockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(
        cond.lock_timeout(SHORT),
        Err(LockTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= SHORT);
    step.store(2, Ordering::SeqCst);
    let g = cond.lock_timeout(WATCHDOG).unwrap(); // the child gave it up by waiting
    step.store(3, Ordering::SeqCst);
    cond.notify_all();
    drop(g);
    child.wait_success(WATCHDOG);

    // Nobody notifies: timed out, lock handed back.
    let g = cond.lock().unwrap();
    let start = Instant::now();
    let (g, r) = cond.wait_timeout(g, SHORT).unwrap();
    assert!(r.timed_out());
    assert!(start.elapsed() >= SHORT);
    let (g, r) = cond.wait_while_timeout(g, SHORT, || true).unwrap();
    assert!(r.timed_out());
    let (g, r) = cond.wait_while_timeout(g, SHORT, || false).unwrap();
    assert!(!r.timed_out());
    drop(g);
}

#[test]
fn barrier_forms_across_processes() {
    let _leaks = common::leak_guard();
    let barrier = Barrier::new(2).unwrap();

    // Alone: try_wait would have to wait, so it does not arrive at all.
    let e = barrier.try_wait().unwrap_err();
    assert!(matches!(e, TryWaitError::WouldBlock) && e.is_would_block());
    assert!(matches!(Error::from(e), Error::WouldBlock));
    assert_eq!(barrier.n_waiting(), 0);

    // Another process waits: try_wait is the last arrival and completes the generation.
    let child = fork(|| i32::from(barrier.wait_timeout(WATCHDOG).is_err()));
    until(|| barrier.n_waiting() == 1);
    assert!(barrier.try_wait().unwrap().is_leader());
    child.wait_success(WATCHDOG);

    // Our time runs out while another process waits (three parties, two present): we
    // broke the barrier and get Timeout, the other process gets Broken.
    let three = Barrier::new(3).unwrap();
    let child = fork(|| match three.wait_timeout(WATCHDOG) {
        Err(BarrierTimeoutError::Broken) => 0,
        _ => 1,
    });
    until(|| three.n_waiting() == 1);
    let start = Instant::now();
    let e = three.wait_timeout(SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(e, BarrierTimeoutError::Timeout) && e.is_timeout());
    assert!(matches!(Error::from(e), Error::Timeout));
    child.wait_success(WATCHDOG);
    assert!(three.is_broken());
    let e = three.try_wait().unwrap_err();
    assert!(matches!(e, TryWaitError::Broken) && e.is_broken());
    assert!(matches!(Error::from(e), Error::BrokenBarrier));
    let e = three.wait_timeout(SHORT).unwrap_err();
    assert!(matches!(e, BarrierTimeoutError::Broken) && e.is_broken());
    assert!(matches!(three.wait(), Err(Error::BrokenBarrier)));
    three.reset().unwrap();
    assert!(matches!(three.try_wait(), Err(TryWaitError::WouldBlock)));
}

#[test]
fn condition_over_an_existing_lock_excludes_direct_holders_across_processes() {
    let _leaks = common::leak_guard();
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let lock = cond.underlying_lock().expect("made over a lock");
    let step = steps();
    // The child holds the Lock directly (not through the condition).
    let child = fork(|| {
        let Ok(g) = lock.lock() else { return 1 };
        step.store(1, Ordering::SeqCst);
        until(|| step.load(Ordering::SeqCst) == 2);
        // A guard of the lock itself is a guard of the condition's lock: wait with it.
        match cond.wait_while_timeout(g, WATCHDOG, || step.load(Ordering::SeqCst) != 3) {
            Ok((_g, r)) => i32::from(r.timed_out()) * 2,
            Err(_) => 3,
        }
    });
    reach(&step, 1);
    assert!(matches!(cond.try_lock(), Err(TryLockError::WouldBlock)));
    assert!(matches!(
        cond.lock_timeout(SHORT),
        Err(LockTimeoutError::Timeout)
    ));
    step.store(2, Ordering::SeqCst);
    let g = cond.lock_timeout(WATCHDOG).unwrap();
    assert!(
        lock.is_held_by_current_thread(),
        "cond.lock() took the Lock"
    );
    step.store(3, Ordering::SeqCst);
    cond.notify();
    drop(g);
    child.wait_success(WATCHDOG);
    assert!(!lock.is_locked());
}

#[test]
fn named_condition_over_a_named_lock_opens_the_lock_by_name() {
    let _leaks = common::leak_guard();
    let (lock_name, _, _) = fresh("cwl-lock");
    let (cond_name, shm, _) = fresh("cwl-cond");
    let lock = Lock::create_named(&lock_name).unwrap();
    let cond = Condition::create_named_with_lock(&cond_name, &lock).unwrap();
    assert!(matches!(
        Condition::create_named_with_lock("ipct-unused", &Lock::new().unwrap()),
        Err(Error::InvalidArgument(_))
    ));
    let step = steps();
    let child = fork(|| {
        // An unrelated opener: the condition brings the lock with it.
        let Ok(cond) = Condition::open_named(&cond_name) else {
            return 1;
        };
        if cond.underlying_lock().and_then(Lock::name) != Some(lock_name.as_str()) {
            return 2;
        }
        step.store(1, Ordering::SeqCst);
        // The parent holds the Lock directly: the condition's users are excluded.
        until(|| step.load(Ordering::SeqCst) == 2);
        if !matches!(cond.try_lock(), Err(TryLockError::WouldBlock)) {
            return 3;
        }
        step.store(3, Ordering::SeqCst);
        let Ok(g) = cond.lock_timeout(WATCHDOG) else {
            return 4;
        };
        let code = match cond.wait_while_timeout(g, WATCHDOG, || step.load(Ordering::SeqCst) != 4) {
            Ok((_g, r)) if !r.timed_out() => 0,
            _ => 5,
        };
        code
    });
    reach(&step, 1);
    let held = lock.lock().unwrap();
    step.store(2, Ordering::SeqCst);
    reach(&step, 3);
    drop(held);
    // The child takes the lock through the condition, then waits (giving it up).
    let g = cond.lock_timeout(WATCHDOG).unwrap();
    step.store(4, Ordering::SeqCst);
    cond.notify_all();
    drop(g);
    child.wait_success(WATCHDOG);
    drop(cond);
    drop(lock);
    shm.assert_no_new_shm();
}
