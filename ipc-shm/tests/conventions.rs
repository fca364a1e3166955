//! The workspace convention for blocking, non-blocking and timed calls, for every lock of
//! `ipc-shm`: `lock()` -> `LockError`, `try_lock()` -> `TryLockError` (`WouldBlock`),
//! `lock_timeout()` -> `LockTimeoutError` (`Timeout`), each matched on its values, across
//! processes where a state involves another process (a live holder, a killed one).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_shm::lowlevel::sync::RawLock;
use ipc_shm::{Array, AtomicValue, Error, LockError, LockTimeoutError, TryLockError, Value};
use ipc_testkit::{fork, Exit, LeakGuard, Leaks};

const WATCHDOG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(100);

fn leaks() -> LeakGuard {
    Leaks::exclusive("ipct-conventions-")
}

/// Waits until a forked child has stored 1 in `gate`.
fn wait_gate(gate: &AtomicValue<AtomicU64>) {
    let start = Instant::now();
    while gate.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < WATCHDOG, "the child never took the locks");
        std::thread::yield_now();
    }
}

#[test]
fn try_and_timeout_forms_against_a_live_then_killed_holder_in_another_process() {
    let _leaks = leaks();
    let v = Value::new(7u64).unwrap();
    let a = Array::<u32>::from_slice(&[1, 2, 3]).unwrap();
    let gate = AtomicValue::<AtomicU64>::new(0).unwrap();
    let child = fork(|| {
        let (Ok(gv), Ok(ga)) = (v.lock(), a.lock()) else {
            return 1;
        };
        gate.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        drop((gv, ga));
        0
    });
    wait_gate(&gate);

    // Held by a live process: WouldBlock now, Timeout after at least the timeout.
    let e = v.try_lock().unwrap_err();
    assert!(matches!(e, TryLockError::WouldBlock), "{e:?}");
    assert!(e.is_would_block() && !e.is_owner_died() && !e.is_poisoned());
    assert!(matches!(Error::from(e), Error::WouldBlock));
    assert!(matches!(a.try_lock(), Err(TryLockError::WouldBlock)));
    let start = Instant::now();
    let e = v.lock_timeout(SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT);
    assert!(matches!(e, LockTimeoutError::Timeout), "{e:?}");
    assert!(e.is_timeout());
    assert_eq!(e.to_string(), "timed out waiting for the lock");
    assert!(matches!(Error::from(e), Error::Timeout));
    let start = Instant::now();
    assert!(matches!(
        a.lock_timeout(SHORT),
        Err(LockTimeoutError::Timeout)
    ));
    assert!(start.elapsed() >= SHORT);

    // The holder is killed: the next locker of each form holds the lock with OwnerDied.
    child.kill();
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    match v.try_lock() {
        Err(TryLockError::OwnerDied(g)) => {
            assert_eq!(*g, 7);
            g.mark_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let e = a.lock_timeout(WATCHDOG).unwrap_err();
    assert!(e.is_owner_died() && !e.is_timeout());
    let g = e.into_guard().expect("OwnerDied carries the guard");
    assert_eq!(&*g, &[1, 2, 3]);
    g.mark_consistent();
    drop(g);
    // Marked consistent: all three forms take the lock cleanly.
    drop(v.lock().unwrap());
    drop(v.try_lock().unwrap());
    drop(a.lock_timeout(SHORT).unwrap());
}

#[test]
fn poisoned_and_deadlock_in_every_form() {
    let _leaks = leaks();
    let v = Value::new(0u64).unwrap();
    // A child that exits holding the lock (its guard forgotten) is a dead holder.
    fork(|| match v.lock() {
        Ok(g) => {
            std::mem::forget(g);
            0
        }
        Err(_) => 1,
    })
    .wait_success(WATCHDOG);
    match v.lock() {
        Err(LockError::OwnerDied(g)) => drop(g), // not marked: poisons
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    let e = v.lock().unwrap_err();
    assert!(matches!(e, LockError::Poisoned) && e.is_poisoned());
    assert!(matches!(Error::from(e), Error::Poisoned));
    assert!(matches!(v.try_lock(), Err(TryLockError::Poisoned)));
    assert!(matches!(
        v.lock_timeout(SHORT),
        Err(LockTimeoutError::Poisoned)
    ));
    assert!(matches!(v.get(), Err(Error::Poisoned)));

    // The calling thread holds the lock: Deadlock from every form, never a wait.
    let w = Value::new(1u8).unwrap();
    let held = w.lock().unwrap();
    assert!(matches!(w.lock(), Err(LockError::Deadlock)));
    assert!(matches!(w.try_lock(), Err(TryLockError::Deadlock)));
    let e = w.lock_timeout(WATCHDOG).unwrap_err();
    assert!(matches!(e, LockTimeoutError::Deadlock));
    assert!(matches!(Error::from(e), Error::Deadlock));
    drop(held);
}

#[test]
fn raw_lock_forms_and_error_conversions() {
    let _leaks = leaks();
    let lock = std::sync::Arc::new(RawLock::new());
    lock.lock().unwrap();
    let l2 = std::sync::Arc::clone(&lock);
    std::thread::spawn(move || {
        assert!(matches!(l2.try_lock(), Err(TryLockError::WouldBlock)));
        let start = Instant::now();
        assert!(matches!(
            l2.lock_timeout(SHORT),
            Err(LockTimeoutError::Timeout)
        ));
        assert!(start.elapsed() >= SHORT);
    })
    .join()
    .unwrap();
    assert!(matches!(lock.try_lock(), Err(TryLockError::Deadlock)));
    lock.unlock().unwrap();
    lock.try_lock().unwrap();
    lock.unlock().unwrap();
    lock.lock_timeout(SHORT).unwrap();
    lock.unlock().unwrap();

    // The blocking form's states carry over into the other two forms, guard included.
    struct NotDebug(u8);
    let t: TryLockError<NotDebug> = LockError::OwnerDied(NotDebug(3)).into();
    assert_eq!(format!("{t:?}"), "OwnerDied(..)"); // Debug needs no `G: Debug`
    assert_eq!(t.into_guard().map(|g| g.0), Some(3));
    let t: LockTimeoutError<NotDebug> = LockError::Corrupted.into();
    assert!(matches!(t, LockTimeoutError::Corrupted));
    assert!(matches!(Error::from(t), Error::Corrupted(_)));
    let t: LockTimeoutError<u8> = LockError::OwnerDied(1).into();
    assert!(matches!(
        t.map(u32::from),
        LockTimeoutError::OwnerDied(1u32)
    ));
    assert!(matches!(
        Error::from(TryLockError::OwnerDied(())),
        Error::OwnerDied
    ));
}
