//! A participant SIGKILLed at each named fault point of the crate (`ipc_failpoints`, armed in
//! the forked victim only): survivors get `OwnerDied` (locks), `BrokenBarrier` (barrier), their
//! notification (condition) or the unit (semaphore), and nobody blocks past the watchdog.
//!
//! Survivors wait without a timeout where the point is to show that the dead peer alone
//! cannot wedge them; the watchdog (`SURVIVOR`) turns a hang into a failure.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{fork, fresh, until, Child, Exit, WATCHDOG};
use ipc_failpoints::{arm, Action};
use ipc_sem::{
    Barrier, BarrierTimeoutError, Condition, Error, Lock, LockTimeoutError, RLock, Semaphore,
};
use ipc_shm::AtomicValue;

/// How long a survivor may take to see the death (the documented bound is about 50 ms).
const SURVIVOR: Duration = Duration::from_secs(5);

/// Forks a victim that arms `point` to SIGKILL itself, then runs `f` (which should reach the
/// point); returns once the victim died by SIGKILL.
fn victim(point: &'static str, f: impl FnOnce()) -> Child {
    fork(move || {
        if arm(point, 1, Action::Kill).is_err() {
            return 3;
        }
        f();
        4 // the point was not reached
    })
}

fn killed(child: Child) {
    assert_eq!(
        child.wait(WATCHDOG),
        Exit::Signal(libc::SIGKILL),
        "the victim died at its point"
    );
}

#[test]
fn lock_holder_killed_at_held_point_is_reported() {
    let _leaks = common::leak_guard();
    let lock = Lock::new().unwrap();
    killed(victim("sem.lock.held", || drop(lock.lock())));
    assert!(lock.is_locked(), "the dead victim still holds it");
    match lock.lock_timeout(SURVIVOR) {
        Err(LockTimeoutError::OwnerDied(g)) => g.mark_consistent(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    drop(lock.try_lock().unwrap());
}

#[test]
fn rlock_owner_killed_between_depth_and_unlock_is_reported() {
    let _leaks = common::leak_guard();
    let lock = RLock::new().unwrap();
    killed(victim("sem.rlock.depth_set", || {
        let outer = lock.lock();
        let inner = lock.lock();
        drop(inner); // depth 2 -> 1: not the point
        drop(outer); // depth 1 -> 0, killed before the unlock
    }));
    assert!(lock.is_locked());
    match lock.lock_timeout(SURVIVOR) {
        Err(LockTimeoutError::OwnerDied(g)) => {
            assert_eq!(lock.depth(), 1, "the take-over starts at depth 1");
            g.mark_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.is_locked());
    drop(lock.try_lock().unwrap());
}

/// The defect of issue 13: a participant killed inside its locked arrival (slot stored, word
/// not) left the lock held by a dead process and the count unchanged, and the participants
/// already asleep never looked at the lock: they slept forever.
#[test]
fn barrier_participant_killed_mid_arrival_breaks_it_for_the_sleepers() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("barmid");
    let barrier = Barrier::create_named(&name, 3).unwrap();
    let sleeper = fork(|| {
        let Ok(b) = Barrier::open_named(&name) else {
            return 3;
        };
        // No timeout: only noticing the dead arrival can end this wait.
        i32::from(!matches!(b.wait(), Err(Error::BrokenBarrier)))
    });
    until(|| barrier.n_waiting() == 1);
    killed(victim("sem.barrier.mid_arrival", || {
        let _ = barrier.wait();
    }));
    sleeper.wait_success(SURVIVOR);
    assert!(barrier.is_broken());
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    barrier.reset().unwrap();
    // Usable again by three live parties.
    let children: Vec<_> = (0..2)
        .map(|_| fork(|| i32::from(barrier.wait_timeout(WATCHDOG).is_err())))
        .collect();
    barrier.wait_timeout(WATCHDOG).unwrap();
    for c in children {
        c.wait_success(WATCHDOG);
    }
    drop(barrier);
    shm.assert_no_new_shm();
}

/// The same kill with the first arrival asleep *and* a later arrival still to come: the late
/// one takes the dead holder's lock over and sees the barrier broken.
#[test]
fn barrier_arrival_after_a_mid_arrival_death_is_broken() {
    let _leaks = common::leak_guard();
    let barrier = Barrier::new(2).unwrap();
    killed(victim("sem.barrier.mid_arrival", || {
        let _ = barrier.wait();
    }));
    assert!(matches!(
        barrier.wait_timeout(SURVIVOR),
        Err(BarrierTimeoutError::Broken)
    ));
    barrier.reset().unwrap();
    assert!(!barrier.is_broken());
}

/// Starts `n` sleepers in `acquire()` (no timeout), each reporting through `done`; waits until
/// they are registered.
fn semaphore_sleepers(sem: &Semaphore, started: &AtomicValue<AtomicU32>, n: u32) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let before = started.load(Ordering::SeqCst);
            let c = fork(|| {
                started.fetch_add(1, Ordering::SeqCst);
                i32::from(sem.acquire().is_err())
            });
            until(|| started.load(Ordering::SeqCst) > before);
            // Let it reach the futex (if not, it takes the fast path later: no harm).
            std::thread::sleep(Duration::from_millis(50));
            c
        })
        .collect()
}

/// A releaser killed after storing the count but before its wake: the unit is in the value, and
/// the sleeper must still get it.
#[test]
fn semaphore_releaser_killed_before_its_wake_loses_no_unit() {
    let _leaks = common::leak_guard();
    let sem = Semaphore::new(0).unwrap();
    let started = AtomicValue::<AtomicU32>::new(0).unwrap();
    let sleepers = semaphore_sleepers(&sem, &started, 1);
    killed(victim("sem.semaphore.release_mid_wake", || {
        let _ = sem.release();
    }));
    for s in sleepers {
        s.wait_success(SURVIVOR);
    }
    assert_eq!(sem.value(), 0);
}

/// A sleeper woken by a release and killed before it took the unit: the unit was never its own,
/// so the other sleeper gets it.
#[test]
fn semaphore_sleeper_killed_after_its_wake_leaves_the_unit_to_others() {
    let _leaks = common::leak_guard();
    let sem = Semaphore::new(0).unwrap();
    let started = AtomicValue::<AtomicU32>::new(0).unwrap();
    // The victim sleeps first, so the kernel's FIFO wake picks it.
    let v = victim("sem.semaphore.woken", || {
        started.fetch_add(1, Ordering::SeqCst);
        let _ = sem.acquire();
    });
    until(|| started.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(50));
    let survivor = semaphore_sleepers(&sem, &started, 1);
    sem.release().unwrap();
    killed(v);
    for s in survivor {
        s.wait_success(SURVIVOR);
    }
    assert_eq!(sem.value(), 0, "one unit released, one taken");
}

/// Forks a process that waits on `cond` (no timeout) and exits 0 when notified.
fn condition_sleeper(cond: &Condition, registered: &AtomicValue<AtomicU32>) -> Child {
    let before = registered.load(Ordering::SeqCst);
    let c = fork(|| {
        let Ok(g) = cond.lock() else { return 2 };
        registered.fetch_add(1, Ordering::SeqCst);
        i32::from(cond.wait(g).is_err())
    });
    until(|| registered.load(Ordering::SeqCst) > before);
    // It registered with the lock held; taking the lock proves it is past the registration.
    drop(cond.lock_timeout(WATCHDOG).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    c
}

/// A waiter killed after registering (lock released, not yet asleep): notify does not block,
/// and a live sleeper still gets the notification.
#[test]
fn condition_waiter_killed_after_registering_does_not_eat_a_notify() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let registered = AtomicValue::<AtomicU32>::new(0).unwrap();
    killed(victim("sem.condition.registered", || {
        if let Ok(g) = cond.lock() {
            let _ = cond.wait(g);
        }
    }));
    let survivor = condition_sleeper(&cond, &registered);
    cond.notify();
    survivor.wait_success(SURVIVOR);
    drop(cond.try_lock().unwrap());
}

/// A sleeper woken by `notify` and killed before it re-locks: the notification it was woken
/// for goes to the other sleeper.
#[test]
fn condition_sleeper_killed_after_its_wake_passes_the_notify_on() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let registered = AtomicValue::<AtomicU32>::new(0).unwrap();
    let v = victim("sem.condition.woken", || {
        if let Ok(g) = cond.lock() {
            registered.fetch_add(1, Ordering::SeqCst);
            let _ = cond.wait(g);
        }
    });
    until(|| registered.load(Ordering::SeqCst) == 1);
    drop(cond.lock_timeout(WATCHDOG).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    // The victim sleeps first, so the kernel's FIFO wake picks it.
    let survivor = condition_sleeper(&cond, &registered);
    cond.notify();
    killed(v);
    survivor.wait_success(SURVIVOR);
    drop(cond.try_lock().unwrap());
}
