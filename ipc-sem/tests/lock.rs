//! `Lock` and `RLock` across real processes, with holders killed by SIGKILL.

mod common;

use std::time::Duration;

use common::{fork, fresh, until, Child, WATCHDOG};
use ipc_sem::{Error, Lock, LockError, LockTimeoutError, RLock, TryLockError};
use ipc_shm::AtomicValue;
use std::sync::atomic::{AtomicU32, Ordering};

/// Forks a child that takes `lock`, reports it through `ready`, and then sleeps holding it
/// until it is killed.
fn child_holding(lock: &Lock, ready: &AtomicValue<AtomicU32>) -> Child {
    fork(|| {
        match lock.lock() {
            Ok(g) => g.leak(),
            Err(_) => return 2,
        }
        ready.store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn killed_holder_is_reported_to_the_next_locker() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    let ready = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = child_holding(&lock, &ready);
    until(|| ready.load(Ordering::SeqCst) == 1);
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    child.kill();
    child.wait(WATCHDOG);
    // Within 1 s the next locker holds the lock and hears that the holder died.
    match lock.lock_timeout(Duration::from_secs(1)) {
        Err(LockTimeoutError::OwnerDied(guard)) => {
            assert!(lock.is_held_by_current_thread());
            guard.mark_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Marked consistent: the lock works as before.
    assert!(!lock.is_poisoned());
    drop(lock.lock_timeout(Duration::from_secs(1)).unwrap());
    assert!(!lock.is_locked());
}

#[test]
fn parked_waiter_sees_the_holder_die() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    let ready = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = child_holding(&lock, &ready);
    until(|| ready.load(Ordering::SeqCst) == 1);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            // Parked on the futex when the holder dies; the waiter re-checks liveness.
            match lock.lock_timeout(Duration::from_secs(10)) {
                Err(LockTimeoutError::OwnerDied(guard)) => {
                    guard.mark_consistent();
                    true
                }
                _ => false,
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        // Killed but not yet reaped: a zombie counts as dead.
        child.kill();
        assert!(waiter.join().unwrap(), "the parked waiter got OwnerDied");
    });
    child.wait(WATCHDOG);
    assert!(!lock.is_poisoned());
}

#[test]
fn dropping_the_owner_died_guard_poisons_the_lock() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("poison");
    let lock = Lock::create_named(&name).unwrap();
    let ready = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = fork(|| {
        // Through its own named handle, as an unrelated process would.
        let Ok(lock) = Lock::open_named(&name) else {
            return 3;
        };
        match lock.lock() {
            Ok(g) => g.leak(),
            Err(_) => return 2,
        }
        ready.store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    until(|| ready.load(Ordering::SeqCst) == 1);
    child.kill();
    child.wait(WATCHDOG);
    match lock.try_lock() {
        Err(TryLockError::OwnerDied(guard)) => drop(guard), // not marked consistent
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(lock.is_poisoned());
    assert!(matches!(lock.lock(), Err(LockError::Poisoned)));
    assert!(matches!(lock.try_lock(), Err(TryLockError::Poisoned)));
    // Another process sees the poison too.
    fork(|| {
        i32::from(!matches!(
            lock.lock_timeout(Duration::from_secs(5)),
            Err(LockTimeoutError::Poisoned)
        ))
    })
    .wait_success(WATCHDOG);
    assert!(matches!(
        Error::from(lock.try_lock().unwrap_err()),
        Error::Poisoned
    ));
    drop(lock);
    shm.assert_no_new_shm();
}

#[test]
fn exclusion_between_processes() {
    let _leaks = common::leak_guard();
    const ROUNDS: u64 = 5000;
    let lock = Lock::new().unwrap();
    let counter = ipc_shm::RawValue::new(0u64).unwrap();
    let work = || {
        for _ in 0..ROUNDS {
            let g = lock.lock_timeout(Duration::from_secs(10)).unwrap();
            counter.set(counter.get() + 1);
            drop(g);
        }
    };
    let children: Vec<_> = (0..2)
        .map(|_| {
            fork(|| {
                work();
                0
            })
        })
        .collect();
    work();
    for c in children {
        c.wait_success(WATCHDOG);
    }
    assert_eq!(counter.get(), 3 * ROUNDS);
}

#[test]
fn release_by_a_non_holder_is_an_error() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
    lock.lock().unwrap().leak();
    // Another process cannot release it...
    fork(|| i32::from(!matches!(lock.release(), Err(Error::NotHeld)))).wait_success(WATCHDOG);
    // ...nor another thread of this one.
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(lock.release(), Err(Error::NotHeld))));
    });
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock(), Err(TryLockError::Deadlock)));
    lock.release().unwrap();
    assert!(!lock.is_locked());
}

#[test]
fn lock_timeout_waits_at_least_the_timeout() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    let _g = lock.lock().unwrap();
    fork(|| {
        let start = std::time::Instant::now();
        let timed_out = matches!(
            lock.lock_timeout(Duration::from_millis(100)),
            Err(LockTimeoutError::Timeout)
        );
        i32::from(!(timed_out && start.elapsed() >= Duration::from_millis(100)))
    })
    .wait_success(WATCHDOG);
}

#[test]
fn rlock_is_reentrant_for_its_owner_only() {
    let _leaks = common::leak_guard();
    let lock = RLock::new().unwrap();
    let a = lock.lock().unwrap();
    let b = lock.try_lock().unwrap();
    let c = lock.lock_timeout(Duration::from_millis(1)).unwrap();
    assert_eq!(lock.depth(), 3);
    // Another process neither takes nor releases it.
    fork(|| {
        let blocked = matches!(lock.try_lock(), Err(TryLockError::WouldBlock))
            && matches!(
                lock.lock_timeout(Duration::from_millis(20)),
                Err(LockTimeoutError::Timeout)
            );
        let refused = matches!(lock.release(), Err(Error::NotOwner));
        i32::from(!(blocked && refused && lock.depth() == 0))
    })
    .wait_success(WATCHDOG);
    // Nor another thread.
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(lock.release(), Err(Error::NotOwner))));
    });
    drop(c);
    drop(b);
    assert!(lock.is_locked());
    drop(a);
    assert!(!lock.is_locked());
    assert!(matches!(lock.release(), Err(Error::NotOwner)));
    // Python style: acquire twice, release twice.
    lock.lock().unwrap().leak();
    lock.lock().unwrap().leak();
    lock.release().unwrap();
    assert!(lock.is_owned_by_current_thread());
    lock.release().unwrap();
    assert!(!lock.is_locked());
}

#[test]
fn rlock_owner_killed_is_reported_with_depth_one() {
    let _leaks = common::leak_guard();
    let lock = RLock::new().unwrap();
    let ready = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = fork(|| {
        for _ in 0..3 {
            match lock.lock() {
                Ok(g) => g.leak(),
                Err(_) => return 2,
            }
        }
        ready.store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    until(|| ready.load(Ordering::SeqCst) == 1);
    child.kill();
    child.wait(WATCHDOG);
    match lock.lock_timeout(Duration::from_secs(1)) {
        Err(LockTimeoutError::OwnerDied(g)) => {
            assert_eq!(lock.depth(), 1);
            g.mark_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.is_locked());
    assert!(!lock.is_poisoned());
}
