//! `Event`, `Condition` and `Barrier` across real processes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{fork, fresh, until, Exit, WATCHDOG};
use ipc_sem::{Barrier, BarrierTimeoutError, Condition, Error, Event, TryLockError, TryWaitError};
use ipc_shm::AtomicValue;

#[test]
fn event_set_in_child_wakes_parent() {
    let _leaks = common::leak_guard();
    let ev = Event::new().unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        ev.set();
        0
    });
    // The timeout only turns a lost wake-up into a failure instead of a hang.
    assert!(!ev.wait_timeout(Duration::from_secs(10)).timed_out());
    assert!(ev.is_set());
    child.wait_success(WATCHDOG);
}

#[test]
fn event_set_in_parent_wakes_waiting_children_and_clear_resets() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("ev");
    let ev = Event::create_named(&name).unwrap();
    let waiting = AtomicValue::<AtomicU32>::new(0).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            fork(|| {
                let Ok(ev) = Event::open_named(&name) else {
                    return 3;
                };
                waiting.fetch_add(1, Ordering::SeqCst);
                i32::from(ev.wait_timeout(Duration::from_secs(10)).timed_out())
            })
        })
        .collect();
    until(|| waiting.load(Ordering::SeqCst) == 3);
    std::thread::sleep(Duration::from_millis(20));
    ev.set();
    for c in children {
        c.wait_success(WATCHDOG);
    }
    ev.clear();
    assert!(!ev.is_set());
    let start = Instant::now();
    assert!(ev.wait_timeout(Duration::from_millis(100)).timed_out());
    assert!(start.elapsed() >= Duration::from_millis(100));
    drop(ev);
    shm.assert_no_new_shm();
}

#[test]
fn condition_notify_crosses_processes() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let flag = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(g) = cond.lock_timeout(Duration::from_secs(10)) else {
            return 2;
        };
        flag.store(1, Ordering::SeqCst);
        cond.notify_all();
        drop(g);
        0
    });
    let g = cond.lock().unwrap();
    let (g, satisfied) = cond
        .wait_while_timeout(g, Duration::from_secs(10), || {
            flag.load(Ordering::SeqCst) == 0
        })
        .unwrap();
    assert!(!satisfied.timed_out());
    drop(g);
    child.wait_success(WATCHDOG);
}

#[test]
fn condition_notify_one_wakes_a_waiting_child() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("cond");
    let cond = Condition::create_named(&name).unwrap();
    let state = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = fork(|| {
        let Ok(cond) = Condition::open_named(&name) else {
            return 3;
        };
        let Ok(g) = cond.lock() else { return 2 };
        state.store(1, Ordering::SeqCst); // waiting (set under the lock)
        let woke = cond
            .wait_while(g, || state.load(Ordering::SeqCst) != 2)
            .is_ok();
        if woke {
            0
        } else {
            4
        }
    });
    until(|| state.load(Ordering::SeqCst) == 1);
    {
        // Taking the lock proves the child is inside `wait` (it released the lock there).
        let _g = cond.lock_timeout(Duration::from_secs(10)).unwrap();
        state.store(2, Ordering::SeqCst);
        cond.notify();
    }
    child.wait_success(WATCHDOG);
    drop(cond);
    shm.assert_no_new_shm();
}

#[test]
fn condition_wait_timeout_returns_the_lock() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let g = cond.lock().unwrap();
    let start = Instant::now();
    let (g, r) = cond.wait_timeout(g, Duration::from_millis(100)).unwrap();
    assert!(r.timed_out());
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Still held by us: another process cannot take it.
    fork(|| i32::from(!matches!(cond.try_lock(), Err(TryLockError::WouldBlock))))
        .wait_success(WATCHDOG);
    drop(g);
}

#[test]
fn a_killed_sleeper_does_not_block_notifiers() {
    let _leaks = common::leak_guard();
    let cond = Condition::new().unwrap();
    let state = AtomicValue::<AtomicU32>::new(0).unwrap();
    let sleeper = fork(|| {
        let Ok(g) = cond.lock() else { return 2 };
        state.store(1, Ordering::SeqCst);
        let _ = cond.wait(g);
        0
    });
    until(|| state.load(Ordering::SeqCst) == 1);
    drop(cond.lock_timeout(Duration::from_secs(10)).unwrap()); // the sleeper is in `wait`
    sleeper.kill();
    assert_eq!(sleeper.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    // Notifying with a dead sleeper registered returns at once, and the condition still
    // works for live processes.
    cond.notify();
    cond.notify_all();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(_g) = cond.lock_timeout(Duration::from_secs(10)) else {
            return 2;
        };
        state.store(2, Ordering::SeqCst);
        cond.notify_all();
        0
    });
    let g = cond.lock().unwrap();
    let (_g, ok) = cond
        .wait_while_timeout(g, Duration::from_secs(10), || {
            state.load(Ordering::SeqCst) != 2
        })
        .unwrap();
    assert!(!ok.timed_out());
    child.wait_success(WATCHDOG);
}

#[test]
fn barrier_of_three_processes_has_exactly_one_leader_per_round() {
    let _leaks = common::leak_guard();
    const ROUNDS: i32 = 20;
    let barrier = Barrier::new(3).unwrap();
    let run = || {
        let mut leader = 0;
        for _ in 0..ROUNDS {
            match barrier.wait_timeout(Duration::from_secs(10)) {
                Ok(r) => leader += i32::from(r.is_leader()),
                Err(_) => return 100,
            }
        }
        leader
    };
    let children: Vec<_> = (0..2).map(|_| fork(run)).collect();
    let mut leaders = run();
    assert!(leaders <= ROUNDS, "barrier broke in the parent");
    for c in children {
        match c.wait(WATCHDOG) {
            Exit::Code(n) if n <= ROUNDS => leaders += n,
            other => panic!("child failed: {other:?}"),
        }
    }
    assert_eq!(leaders, ROUNDS, "exactly one leader per round");
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.is_broken());
}

#[test]
fn barrier_breaks_when_a_participant_is_killed() {
    let _leaks = common::leak_guard();
    let (name, shm, _) = fresh("bar");
    let barrier = Barrier::create_named(&name, 3).unwrap();
    assert_eq!(barrier.parties(), 3);
    let victim = fork(|| {
        let Ok(b) = Barrier::open_named(&name) else {
            return 3;
        };
        let _ = b.wait();
        0
    });
    let survivor = fork(|| {
        let Ok(b) = Barrier::open_named(&name) else {
            return 3;
        };
        // No timeout: only the dead participant's detection can end this wait.
        i32::from(!matches!(b.wait(), Err(Error::BrokenBarrier)))
    });
    until(|| barrier.n_waiting() == 2);
    victim.kill();
    survivor.wait_success(WATCHDOG);
    victim.wait(WATCHDOG);
    assert!(barrier.is_broken());
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
    // Reset makes it usable again.
    barrier.reset().unwrap();
    assert!(!barrier.is_broken());
    let children: Vec<_> = (0..2)
        .map(|_| fork(|| i32::from(barrier.wait_timeout(Duration::from_secs(10)).is_err())))
        .collect();
    barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    for c in children {
        c.wait_success(WATCHDOG);
    }
    drop(barrier);
    shm.assert_no_new_shm();
}

#[test]
fn barrier_timeout_breaks_it_for_every_waiter() {
    let _leaks = common::leak_guard();
    let barrier = Barrier::new(3).unwrap();
    let child = fork(|| i32::from(!matches!(barrier.wait(), Err(Error::BrokenBarrier))));
    until(|| barrier.n_waiting() == 1);
    let start = Instant::now();
    assert!(matches!(
        barrier.wait_timeout(Duration::from_millis(100)),
        Err(BarrierTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(100));
    child.wait_success(WATCHDOG);
    assert!(barrier.is_broken());
}

#[test]
fn barrier_abort_and_reset_release_waiters_with_broken() {
    let _leaks = common::leak_guard();
    let barrier = Barrier::new(2).unwrap();
    for use_reset in [false, true] {
        let child = fork(|| i32::from(!matches!(barrier.wait(), Err(Error::BrokenBarrier))));
        until(|| barrier.n_waiting() == 1);
        if use_reset {
            barrier.reset().unwrap();
            assert!(!barrier.is_broken(), "reset leaves a usable barrier");
        } else {
            barrier.abort();
            assert!(barrier.is_broken());
            barrier.reset().unwrap();
        }
        child.wait_success(WATCHDOG);
    }
    // try_wait completes only as the last arrival.
    assert!(matches!(barrier.try_wait(), Err(TryWaitError::WouldBlock)));
    let child = fork(|| i32::from(barrier.wait_timeout(Duration::from_secs(10)).is_err()));
    until(|| barrier.n_waiting() == 1);
    assert!(barrier.try_wait().unwrap().is_leader());
    child.wait_success(WATCHDOG);
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
}
