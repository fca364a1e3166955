//! A hostile peer writing random bytes over the shared state of a named `Semaphore` and a
//! named `Lock` while other processes use them: every call returns a value or a typed error
//! by its deadline; nobody panics or hangs (the watchdog would fail the test).

mod common;

use std::time::{Duration, Instant};

use common::{fork, fresh, Child, WATCHDOG};
use ipc_sem::{Error, Lock, LockTimeoutError, Semaphore};

/// How long the scribbler scribbles and the users use.
const RUN: Duration = Duration::from_millis(800);
/// The payload follows the 128-byte header; both states fit in its first 32 bytes.
const PAYLOAD: usize = 128;
const STATE: usize = 32;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Overwrites random bytes of the state of the named segments until `RUN` has passed.
fn scribbler(names: Vec<String>) -> Child {
    fork(move || {
        let segs: Vec<_> = names
            .iter()
            .map(|n| ipc_testkit::Hostile::open(n))
            .collect();
        let mut x = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
        let start = Instant::now();
        while start.elapsed() < RUN {
            for s in &segs {
                let r = xorshift(&mut x);
                let off = PAYLOAD + (r as usize % STATE);
                let len = 1 + (r >> 40) as usize % 8;
                let bytes = xorshift(&mut x).to_le_bytes();
                if s.write_at(off, &bytes[..len.min(STATE + PAYLOAD - off)])
                    .is_err()
                {
                    return 4;
                }
            }
            std::thread::yield_now();
        }
        0
    })
}

/// Uses the semaphore and the lock with short deadlines until `RUN` has passed; fails (exit
/// code) only if a call overran its deadline by far, or on a panic (101).
fn user(sem_name: &str, lock_name: &str) -> Child {
    let (sem_name, lock_name) = (sem_name.to_owned(), lock_name.to_owned());
    fork(move || {
        let (Ok(sem), Ok(lock)) = (
            Semaphore::open_named(&sem_name),
            Lock::open_named(&lock_name),
        ) else {
            return 3;
        };
        let op = Duration::from_millis(20);
        // Generous: a call may add one liveness re-check (50 ms) and scheduling to its deadline.
        let overrun = Duration::from_secs(2);
        let start = Instant::now();
        while start.elapsed() < RUN {
            let t = Instant::now();
            if sem.acquire_timeout(op).is_ok() {
                match sem.release() {
                    Ok(()) | Err(Error::Overflow { .. }) => {}
                    Err(_) => return 5,
                }
            }
            let _ = sem.try_acquire();
            match lock.lock_timeout(op) {
                Ok(_g) => {}
                Err(LockTimeoutError::OwnerDied(g)) => g.mark_consistent(),
                Err(
                    LockTimeoutError::Poisoned
                    | LockTimeoutError::Timeout
                    | LockTimeoutError::Corrupted
                    | LockTimeoutError::Deadlock,
                ) => {}
            }
            if t.elapsed() > op * 2 + overrun {
                return 6;
            }
        }
        0
    })
}

#[test]
fn scribbled_semaphore_and_lock_give_typed_errors_and_never_hang() {
    let _leaks = common::leak_guard();
    let (sem_name, sem_leaks, _) = fresh("scrsem");
    let (lock_name, lock_leaks, _) = fresh("scrlock");
    let sem = Semaphore::create_named(&sem_name, 2).unwrap();
    let lock = Lock::create_named(&lock_name).unwrap();
    let users: Vec<_> = (0..2).map(|_| user(&sem_name, &lock_name)).collect();
    let scr = scribbler(vec![sem_name.clone(), lock_name.clone()]);
    scr.wait_success(WATCHDOG);
    for u in users {
        u.wait_success(WATCHDOG);
    }
    // The parent's handles still answer (any state is a state).
    let _ = sem.try_acquire();
    let _ = sem.value();
    let _ = lock.try_lock().map(drop);
    drop((sem, lock));
    sem_leaks.assert_no_new_shm();
    lock_leaks.assert_no_new_shm();
}
