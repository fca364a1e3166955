//! The async forms (`lock_async`, `acquire_async`, `wait_async`, ...) across processes:
//! wake-ups, a holder killed while an async locker waits, timeouts, cancellation under load
//! (futures dropped at their await points by `tokio::time::timeout`), the thread budget of a
//! thousand waiting tasks, and the path without `futex_waitv`.
#![cfg(feature = "async")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fork, fresh, leak_guard, until, WATCHDOG};
use ipc_sem::{
    AcquireTimeoutError, Barrier, BarrierTimeoutError, BoundedSemaphore, Condition, Event, Lock,
    LockError, LockTimeoutError, RLock, Semaphore,
};
use ipc_shm::lowlevel::sync::{registered_waits, waiter_threads};
use ipc_shm::AtomicValue;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The waiter threads, counted by name.
fn waiter_named_threads() -> usize {
    ipc_testkit::threads_named("ipc-shm-waiter")
}

/// Waits (bounded) for the idle waiter threads of earlier tests to exit.
fn no_waiter_threads() {
    let start = Instant::now();
    while waiter_threads() != 0 || waiter_named_threads() != 0 {
        assert!(start.elapsed() < WATCHDOG, "waiter threads never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The sleeper count of a named semaphore (the high half of its word, which follows the
/// 128-byte header), read through a raw mapping.
fn sleepers_of(name: &str) -> u32 {
    let raw = ipc_testkit::Hostile::open(name);
    let mut word = [0u8; 8];
    raw.read_at(128, &mut word).unwrap();
    (u64::from_ne_bytes(word) >> 32) as u32
}

/// A small deterministic pseudo-random sequence (xorshift), for timeouts that differ per task.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn lock_async_waits_for_a_holder_in_another_process() {
    let _leaks = leak_guard();
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let child = fork(|| {
        let g = lock.lock().unwrap();
        held.set();
        std::thread::sleep(Duration::from_millis(60));
        drop(g);
        0
    });
    held.wait();
    let rt = runtime();
    let start = Instant::now();
    rt.block_on(async {
        let g = lock.lock_async().await.unwrap();
        drop(g);
    });
    assert!(start.elapsed() >= Duration::from_millis(10));
    child.wait_success(WATCHDOG);
    assert!(lock.try_lock().is_ok());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_holder_killed_while_an_async_locker_waits_gives_owner_died() {
    let _leaks = leak_guard();
    let lock = Arc::new(Lock::new().unwrap());
    let held = Event::new().unwrap();
    let child = fork(|| {
        let g = lock.lock().unwrap();
        held.set();
        std::thread::sleep(WATCHDOG);
        drop(g);
        1
    });
    held.wait();
    let rt = runtime();
    let waiter = {
        let lock = Arc::clone(&lock);
        rt.spawn(async move {
            match lock.lock_async().await {
                Err(LockError::OwnerDied(g)) => {
                    g.mark_consistent();
                    true
                }
                _ => false,
            }
        })
    };
    until(|| registered_waits() > 0);
    child.kill();
    let _ = child.wait(WATCHDOG);
    assert!(rt.block_on(waiter).unwrap(), "expected OwnerDied");
    assert!(!lock.is_poisoned());
    assert!(lock.try_lock().is_ok());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn rlock_async_reenters_on_its_thread_and_waits_for_another_process() {
    let _leaks = leak_guard();
    let lock = RLock::new().unwrap();
    let held = Event::new().unwrap();
    let child = fork(|| {
        let g = lock.lock().unwrap();
        held.set();
        std::thread::sleep(Duration::from_millis(40));
        drop(g);
        0
    });
    held.wait();
    let rt = current_thread_runtime();
    rt.block_on(async {
        let outer = lock.lock_async().await.unwrap();
        let inner = lock.lock_async().await.unwrap();
        assert_eq!(lock.depth(), 2);
        drop(inner);
        drop(outer);
    });
    assert!(!lock.is_locked());
    child.wait_success(WATCHDOG);
}

#[test]
fn acquire_async_is_woken_by_a_release_in_another_process() {
    let _leaks = leak_guard();
    let sem = Semaphore::new(0).unwrap();
    let bounded = BoundedSemaphore::new(1).unwrap();
    bounded.acquire().unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(40));
        let a = sem.release().is_err();
        let b = bounded.release().is_err();
        i32::from(a || b)
    });
    let rt = runtime();
    rt.block_on(async {
        sem.acquire_async().await.unwrap();
        let _unit = bounded.guard_async().await.unwrap();
        assert_eq!(bounded.value(), 0);
    });
    child.wait_success(WATCHDOG);
    assert_eq!(sem.value(), 0);
    assert_eq!(bounded.value(), 1);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn event_wait_async_is_woken_by_a_set_in_another_process() {
    let _leaks = leak_guard();
    let ev = Event::new().unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(40));
        ev.set();
        0
    });
    let rt = runtime();
    let r = rt.block_on(ev.wait_timeout_async(WATCHDOG));
    assert!(!r.timed_out());
    rt.block_on(ev.wait_async());
    child.wait_success(WATCHDOG);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn the_timeout_forms_wait_at_least_their_time() {
    let _leaks = leak_guard();
    let lock = Lock::new().unwrap();
    let sem = Semaphore::new(0).unwrap();
    let ev = Event::new().unwrap();
    let held = Event::new().unwrap();
    let done = Event::new().unwrap();
    let child = fork(|| {
        let g = lock.lock().unwrap();
        held.set();
        done.wait();
        drop(g);
        0
    });
    held.wait();
    let rt = runtime();
    let d = Duration::from_millis(40);
    let start = Instant::now();
    let r = rt.block_on(lock.lock_timeout_async(d));
    assert!(matches!(r, Err(LockTimeoutError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= d);
    let start = Instant::now();
    let r = rt.block_on(sem.acquire_timeout_async(d));
    assert!(matches!(r, Err(AcquireTimeoutError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= d);
    let start = Instant::now();
    assert!(rt.block_on(ev.wait_timeout_async(d)).timed_out());
    assert!(start.elapsed() >= d);
    // A runtime's timer around the future works too, and leaves nothing behind.
    let start = Instant::now();
    let r = rt.block_on(async { tokio::time::timeout(d, lock.lock_async()).await.is_err() });
    assert!(r, "the lock was taken from a live holder");
    assert!(start.elapsed() >= d);
    done.set();
    child.wait_success(WATCHDOG);
    assert!(lock.try_lock().is_ok());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Tasks in two processes take units of one semaphore through futures that a short random
/// timeout drops at their await point; a shared count of units in use never passes the
/// semaphore's value, and afterwards the value is exactly what it was, no sleeper is left
/// counted and no registration is left behind.
#[test]
fn cancelled_acquires_lose_and_add_no_unit_under_load() {
    let _leaks = leak_guard();
    const UNITS: u32 = 3;
    const ROUNDS: u64 = 300;
    let (name, _shm, _sem) = fresh("acancel");
    let sem = Semaphore::create_named(&name, UNITS).unwrap();
    let shared = Arc::new(SemLoad {
        sem,
        in_use: AtomicValue::new(0).unwrap(),
        over: AtomicValue::new(0).unwrap(),
        taken: AtomicValue::new(0).unwrap(),
    });
    let work = |tasks: u64, salt: u64| {
        let rt = runtime();
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let s = Arc::clone(&shared);
                handles.push(tokio::spawn(async move {
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * (salt + 17));
                    for _ in 0..ROUNDS {
                        let limit = Duration::from_micros(20 + next(&mut seed) % 300);
                        if let Ok(Ok(unit)) = tokio::time::timeout(limit, s.sem.guard_async()).await
                        {
                            s.taken.fetch_add(1, Ordering::Relaxed);
                            if s.in_use.fetch_add(1, Ordering::AcqRel) >= u64::from(UNITS) {
                                s.over.fetch_add(1, Ordering::Relaxed);
                            }
                            if next(&mut seed) % 2 == 0 {
                                tokio::task::yield_now().await;
                            }
                            s.in_use.fetch_sub(1, Ordering::AcqRel);
                            drop(unit);
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
    };
    let child = fork(|| {
        work(8, 2);
        i32::from(registered_waits() != 0)
    });
    work(16, 1);
    child.wait_success(WATCHDOG);
    assert_eq!(
        shared.over.load(Ordering::Relaxed),
        0,
        "more units in use than exist"
    );
    assert!(shared.taken.load(Ordering::Relaxed) > 0);
    assert_eq!(shared.sem.value(), UNITS, "a unit was lost or added");
    assert_eq!(sleepers_of(&name), 0, "a sleeper count was left high");
    assert_eq!(registered_waits(), 0);
}

/// What the tasks of the semaphore load test share.
struct SemLoad {
    sem: Semaphore,
    in_use: AtomicValue<AtomicU64>,
    over: AtomicValue<AtomicU64>,
    taken: AtomicValue<AtomicU64>,
}

/// What the tasks of the lock load test share.
struct LockLoad {
    lock: Lock,
    counter: AtomicValue<AtomicU64>,
    taken: AtomicValue<AtomicU64>,
}

/// Tasks in two processes take one lock through futures that a short random timeout drops
/// at their await point; every taken lock increments a counter with a non-atomic
/// read-modify-write, so a lost exclusion shows as a lost update; afterwards the lock is
/// free and nothing is registered.
#[test]
fn cancelled_locks_leave_the_lock_free_and_lose_no_update_under_load() {
    let _leaks = leak_guard();
    const ROUNDS: u64 = 300;
    let shared = Arc::new(LockLoad {
        lock: Lock::new().unwrap(),
        counter: AtomicValue::new(0).unwrap(),
        taken: AtomicValue::new(0).unwrap(),
    });
    let work = |tasks: u64, salt: u64| {
        let rt = runtime();
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let s = Arc::clone(&shared);
                handles.push(tokio::spawn(async move {
                    let (lock, counter, taken) = (&s.lock, &s.counter, &s.taken);
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * (salt + 17));
                    for _ in 0..ROUNDS {
                        let limit = Duration::from_micros(20 + next(&mut seed) % 300);
                        match tokio::time::timeout(limit, lock.lock_async()).await {
                            Ok(Ok(g)) => {
                                let v = counter.load(Ordering::Relaxed);
                                std::hint::spin_loop();
                                counter.store(v + 1, Ordering::Relaxed);
                                taken.fetch_add(1, Ordering::Relaxed);
                                drop(g);
                            }
                            Ok(Err(e)) => panic!("lock_async failed: {e}"),
                            Err(_) => {}
                        }
                        if next(&mut seed) % 4 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
    };
    let child = fork(|| {
        work(6, 2);
        i32::from(registered_waits() != 0)
    });
    work(12, 1);
    child.wait_success(WATCHDOG);
    assert!(shared.taken.load(Ordering::Relaxed) > 0);
    assert_eq!(
        shared.counter.load(Ordering::Relaxed),
        shared.taken.load(Ordering::Relaxed),
        "an update was lost: two holders at once"
    );
    assert!(!shared.lock.is_locked());
    assert!(shared.lock.try_lock().is_ok());
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_thousand_tasks_awaiting_one_semaphore_cost_one_thread() {
    let _leaks = leak_guard();
    no_waiter_threads();
    const TASKS: u32 = 1000;
    let sem = Arc::new(Semaphore::new(0).unwrap());
    let rt = runtime();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let sem = Arc::clone(&sem);
            rt.spawn(async move { sem.acquire_async().await })
        })
        .collect();
    until(|| registered_waits() >= TASKS as usize);
    assert_eq!(waiter_threads(), 1);
    assert_eq!(waiter_named_threads(), 1);
    let child = fork(|| i32::from(sem.release_n(TASKS).is_err()));
    rt.block_on(async {
        for h in handles {
            h.await.unwrap().unwrap();
        }
    });
    child.wait_success(WATCHDOG);
    assert_eq!(sem.value(), 0);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Kernels before 5.16 (no `futex_waitv`): each waited word gets a thread of its own in
/// `ipc_shm`'s waiter, in 10 ms slices; forced here in a forked child (whose waiter
/// registry starts fresh and reads `IPC_SHM_NO_FUTEX_WAITV`).
#[test]
fn without_futex_waitv_the_futures_still_wake_and_cancel() {
    let _leaks = leak_guard();
    let sem = Semaphore::new(0).unwrap();
    let lock = Lock::new().unwrap();
    let ev = Event::new().unwrap();
    let releaser_ready = Event::new().unwrap();
    let waiter = fork(|| {
        std::env::set_var("IPC_SHM_NO_FUTEX_WAITV", "1");
        let rt = runtime();
        let ok = rt.block_on(async {
            releaser_ready.set();
            let a = sem.acquire_async().await.is_ok();
            let b = lock.lock_async().await.is_ok();
            ev.wait_async().await;
            let c = tokio::time::timeout(Duration::from_millis(20), sem.acquire_async())
                .await
                .is_err();
            a && b && c
        });
        drop(rt);
        i32::from(!ok || registered_waits() != 0)
    });
    releaser_ready.wait();
    let g = lock.lock().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    sem.release().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    drop(g);
    std::thread::sleep(Duration::from_millis(30));
    ev.set();
    waiter.wait_success(WATCHDOG);
    assert_eq!(sem.value(), 0);
}

#[test]
fn condition_wait_while_async_is_notified_from_another_process() {
    let _leaks = leak_guard();
    let cond = Condition::new().unwrap();
    let ready = AtomicValue::<AtomicU64>::new(0).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(40));
        let Ok(g) = cond.lock() else { return 1 };
        ready.store(1, Ordering::SeqCst);
        cond.notify();
        drop(g);
        0
    });
    let rt = runtime();
    rt.block_on(async {
        let g = cond.lock_async().await.unwrap();
        let g = cond
            .wait_while_async(g, || ready.load(Ordering::SeqCst) == 0)
            .await
            .unwrap();
        assert_eq!(ready.load(Ordering::SeqCst), 1);
        drop(g);
        // A timed wait nobody notifies hands the lock back, timed out, after its time.
        let g = cond.lock_async().await.unwrap();
        let start = Instant::now();
        let (g, r) = cond
            .wait_timeout_async(g, Duration::from_millis(30))
            .await
            .unwrap();
        assert!(r.timed_out());
        assert!(start.elapsed() >= Duration::from_millis(30));
        drop(g);
    });
    child.wait_success(WATCHDOG);
    assert!(cond.try_lock().is_ok());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// A wait future that has claimed a notification and is cancelled while it takes the lock
/// back passes the notification on: another waiter (a blocking one in another process,
/// stopped while the async one claimed the ticket) is still notified.
#[test]
fn a_cancelled_condition_wait_does_not_swallow_a_notify() {
    let _leaks = leak_guard();
    let cond = Arc::new(Condition::new().unwrap());
    let other = fork(|| {
        ipc_failpoints::arm("sem.condition.registered", 1, ipc_failpoints::Action::Stop).unwrap();
        let Ok(g) = cond.lock() else { return 2 };
        match cond.wait_timeout(g, Duration::from_secs(5)) {
            Ok((_g, r)) if !r.timed_out() => 0,
            Ok(_) => 1,
            Err(_) => 3,
        }
    });
    // The other waiter is registered, and stopped before it sleeps.
    until(|| other.is_stopped());
    let rt = runtime();
    let waiter = {
        let cond = Arc::clone(&cond);
        rt.spawn(async move {
            let g = cond.lock_async().await.unwrap();
            let g = cond.wait_async(g).await.unwrap();
            drop(g);
        })
    };
    until(|| registered_waits() > 0);
    // Notify once and keep the lock: the async waiter claims the one ticket (the stopped
    // waiter cannot) and then waits for the lock.
    let g = cond.lock().unwrap();
    cond.notify();
    std::thread::sleep(Duration::from_millis(300));
    waiter.abort();
    assert!(rt.block_on(waiter).unwrap_err().is_cancelled());
    drop(g);
    other.signal(libc::SIGCONT);
    assert_eq!(
        other.wait(WATCHDOG),
        ipc_testkit::Exit::Code(0),
        "the other waiter was never notified"
    );
    assert!(cond.try_lock().is_ok());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Consumer tasks in two processes wait for items under a condition through futures that a
/// short random timeout drops at their await points, while a producer notifies once per
/// item: every item is taken exactly once, the lock is free afterwards, no waiter is left
/// registered (the condition's waiter count, read raw, is 0) and nothing is left with the
/// waiter thread.
#[test]
fn cancelled_condition_waits_leave_nothing_held_or_counted_under_load() {
    let _leaks = leak_guard();
    const ITEMS: u64 = 400;
    let (name, _shm, _sem) = fresh("ccancel");
    let shared = Arc::new(CondLoad {
        cond: Condition::create_named(&name).unwrap(),
        items: AtomicValue::new(0).unwrap(),
        taken: AtomicValue::new(0).unwrap(),
    });
    let consume = |tasks: u64, salt: u64| {
        let rt = runtime();
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let s = Arc::clone(&shared);
                handles.push(tokio::spawn(async move {
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * (salt + 31));
                    while s.taken.load(Ordering::SeqCst) < ITEMS {
                        let limit = Duration::from_micros(50 + next(&mut seed) % 500);
                        let take = async {
                            let g = s.cond.lock_async().await.unwrap();
                            let g = s
                                .cond
                                .wait_while_async(g, || {
                                    s.items.load(Ordering::SeqCst) == 0
                                        && s.taken.load(Ordering::SeqCst) < ITEMS
                                })
                                .await
                                .unwrap();
                            if s.items.load(Ordering::SeqCst) > 0 {
                                s.items.fetch_sub(1, Ordering::SeqCst);
                                s.taken.fetch_add(1, Ordering::SeqCst);
                            }
                            drop(g);
                        };
                        let _ = tokio::time::timeout(limit, take).await;
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
    };
    let consumer = fork(|| {
        consume(4, 2);
        i32::from(registered_waits() != 0)
    });
    let producer = fork(|| {
        for _ in 0..ITEMS {
            let Ok(g) = shared.cond.lock() else { return 1 };
            shared.items.fetch_add(1, Ordering::SeqCst);
            shared.cond.notify();
            drop(g);
            std::thread::yield_now();
        }
        // Wake whoever still waits once all is taken.
        while shared.taken.load(Ordering::SeqCst) < ITEMS {
            std::thread::sleep(Duration::from_millis(1));
        }
        let Ok(g) = shared.cond.lock() else { return 1 };
        shared.cond.notify_all();
        drop(g);
        0
    });
    consume(8, 1);
    producer.wait_success(WATCHDOG);
    consumer.wait_success(WATCHDOG);
    assert_eq!(shared.taken.load(Ordering::SeqCst), ITEMS);
    assert_eq!(shared.items.load(Ordering::SeqCst), 0);
    assert!(shared.cond.try_lock().is_ok());
    // The waiter count follows the 16-byte lock and the 8-byte word.
    let raw = ipc_testkit::Hostile::open(&name);
    let mut waiters = [0u8; 4];
    raw.read_at(128 + 24, &mut waiters).unwrap();
    assert_eq!(
        u32::from_ne_bytes(waiters),
        0,
        "a waiter was left registered"
    );
    assert_eq!(registered_waits(), 0);
}

/// What the tasks of the condition load test share.
struct CondLoad {
    cond: Condition,
    items: AtomicValue<AtomicU64>,
    taken: AtomicValue<AtomicU64>,
}

#[test]
fn barrier_wait_async_meets_a_blocking_party_in_another_process() {
    let _leaks = leak_guard();
    let barrier = Barrier::new(2).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(30));
        match barrier.wait() {
            Ok(r) if r.is_leader() => 10,
            Ok(_) => 0,
            Err(_) => 1,
        }
    });
    let rt = runtime();
    let me = rt.block_on(barrier.wait_async()).unwrap();
    let child_leader = match child.wait(WATCHDOG) {
        ipc_testkit::Exit::Code(10) => true,
        ipc_testkit::Exit::Code(0) => false,
        other => panic!("child failed: {other:?}"),
    };
    assert_ne!(me.is_leader(), child_leader, "exactly one leader");
    assert_eq!(barrier.n_waiting(), 0);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_cancelled_barrier_wait_takes_its_arrival_back_and_a_timeout_breaks_it() {
    let _leaks = leak_guard();
    let barrier = Barrier::new(2).unwrap();
    let rt = runtime();
    let mut seed = 0x2545_F491_4F6C_DD1D;
    for _ in 0..50 {
        let limit = Duration::from_micros(next(&mut seed) % 300);
        let r = rt.block_on(async { tokio::time::timeout(limit, barrier.wait_async()).await });
        assert!(r.is_err(), "a lone party passed a barrier of two");
        assert_eq!(barrier.n_waiting(), 0, "a cancelled arrival stayed counted");
        assert!(!barrier.is_broken());
    }
    // Still a barrier of two: a party in another process and this one pass together.
    let child = fork(|| i32::from(barrier.wait().is_err()));
    rt.block_on(barrier.wait_async()).unwrap();
    child.wait_success(WATCHDOG);
    // The timeout form breaks the barrier, after its time.
    let start = Instant::now();
    let r = rt.block_on(barrier.wait_timeout_async(Duration::from_millis(30)));
    assert!(matches!(r, Err(BarrierTimeoutError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(barrier.is_broken());
    barrier.reset().unwrap();
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Tasks in two processes meet at a barrier of three through futures that a short random
/// timeout drops at their await points: afterwards nobody is left counted as waiting, the
/// barrier is not broken, and nothing is left with the waiter thread.
#[test]
fn cancelled_barrier_waits_leave_no_arrival_counted_under_load() {
    let _leaks = leak_guard();
    const ROUNDS: u64 = 200;
    let barrier = Arc::new(Barrier::new(3).unwrap());
    let passes = AtomicValue::<AtomicU64>::new(0).unwrap();
    let work = |tasks: u64, salt: u64| {
        let rt = runtime();
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let barrier = Arc::clone(&barrier);
                handles.push(tokio::spawn(async move {
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ ((t + 1) * (salt + 7));
                    let mut passed = 0u64;
                    for _ in 0..ROUNDS {
                        let limit = Duration::from_micros(50 + next(&mut seed) % 2000);
                        match tokio::time::timeout(limit, barrier.wait_async()).await {
                            Ok(Ok(_)) => passed += 1,
                            Ok(Err(e)) => panic!("wait_async failed: {e}"),
                            Err(_) => {}
                        }
                    }
                    passed
                }));
            }
            for h in handles {
                passes.fetch_add(h.await.unwrap(), Ordering::Relaxed);
            }
        });
    };
    let child = fork(|| {
        work(3, 2);
        i32::from(registered_waits() != 0)
    });
    work(4, 1);
    child.wait_success(WATCHDOG);
    assert!(!barrier.is_broken());
    assert_eq!(barrier.n_waiting(), 0, "a cancelled arrival stayed counted");
    assert_eq!(registered_waits(), 0);
    // Still a barrier of three.
    let a = fork(|| i32::from(barrier.wait().is_err()));
    let b = fork(|| i32::from(barrier.wait().is_err()));
    let rt = runtime();
    rt.block_on(barrier.wait_async()).unwrap();
    a.wait_success(WATCHDOG);
    b.wait_success(WATCHDOG);
    eprintln!("{} passes", passes.load(Ordering::Relaxed));
}

/// Two tasks of one thread (a current-thread runtime): the second waits for the first's
/// guard instead of reporting `Deadlock` as a blocking `lock` on the same thread would.
#[test]
fn lock_async_waits_for_another_task_of_the_same_thread() {
    let _leaks = leak_guard();
    let lock = Lock::new().unwrap();
    let rt = current_thread_runtime();
    let order = std::cell::RefCell::new(Vec::new());
    rt.block_on(async {
        let first = async {
            let g = lock.lock_async().await.unwrap();
            order.borrow_mut().push(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
            order.borrow_mut().push(2);
            drop(g);
        };
        let second = async {
            tokio::task::yield_now().await;
            let g = lock.lock_async().await.unwrap();
            order.borrow_mut().push(3);
            drop(g);
        };
        tokio::join!(first, second);
    });
    assert_eq!(*order.borrow(), vec![1, 2, 3]);
    assert!(!lock.is_locked());
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// `Value::lock_async` and `Array::lock_async` (ipc-shm, through ipc-sem's `async`
/// feature): a holder killed while an async locker waits gives `OwnerDied`.
#[test]
fn value_and_array_lock_async_report_a_killed_holder() {
    let _leaks = leak_guard();
    let value = ipc_shm::Value::new(7u64).unwrap();
    let array = ipc_shm::Array::<u32>::new(4).unwrap();
    let held = Event::new().unwrap();
    let child = fork(|| {
        let v = value.lock().unwrap();
        let a = array.lock().unwrap();
        held.set();
        std::thread::sleep(WATCHDOG);
        drop((v, a));
        1
    });
    held.wait();
    let rt = runtime();
    let d = Duration::from_millis(30);
    let start = Instant::now();
    let r = rt.block_on(value.lock_timeout_async(d));
    assert!(matches!(r, Err(LockTimeoutError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= d);
    child.kill();
    let _ = child.wait(WATCHDOG);
    rt.block_on(async {
        match value.lock_async().await {
            Err(LockError::OwnerDied(g)) => {
                assert_eq!(*g, 7);
                g.mark_consistent();
            }
            other => panic!("expected OwnerDied, got {:?}", other.map(|_| ())),
        }
        match array.lock_async().await {
            Err(LockError::OwnerDied(g)) => g.mark_consistent(),
            other => panic!("expected OwnerDied, got {:?}", other.map(|_| ())),
        }
    });
    assert_eq!(value.get().unwrap(), 7);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Every future is `Send` (the guards they complete with are not, but no future holds one
/// across an `.await`), so multi-threaded runtimes can spawn them.
#[test]
fn the_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let _leaks = leak_guard();
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(1).unwrap();
    let bounded = BoundedSemaphore::new(1).unwrap();
    let ev = Event::new().unwrap();
    let barrier = Barrier::new(1).unwrap();
    let cond = Condition::new().unwrap();
    let d = Duration::from_millis(1);
    send(&lock.lock_async());
    send(&lock.lock_timeout_async(d));
    send(&rlock.lock_async());
    send(&rlock.lock_timeout_async(d));
    send(&sem.acquire_async());
    send(&sem.acquire_timeout_async(d));
    send(&sem.guard_async());
    send(&bounded.guard_timeout_async(d));
    send(&ev.wait_async());
    send(&ev.wait_timeout_async(d));
    send(&barrier.wait_async());
    send(&barrier.wait_timeout_async(d));
    send(&cond.lock_async());
    let g = cond.lock().unwrap();
    let w = cond.wait_timeout_async(g, d);
    send(&w);
    // Never polled: dropping it deregisters and leaves the lock free.
    drop(w);
    let g = cond.lock().unwrap();
    let w = cond.wait_while_async(g, || false);
    send(&w);
    drop(w);
    assert!(cond.try_lock().is_ok());
    assert_eq!(registered_waits(), 0);
}
