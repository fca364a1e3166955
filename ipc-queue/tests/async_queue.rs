//! The async forms (`put_async`, `get_async`) across processes: wake-up, timeout (a runtime's
//! timer around the future), a dead producer, close, cancellation under load, and the thread
//! budget of a thousand waiting tasks.
#![cfg(all(feature = "async", feature = "serde"))]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{leak_guard, WATCHDOG};
use ipc_failpoints::Action;
use ipc_queue::{Error, GetTimeoutError, PodQueue, PutTimeoutError, Queue};
use ipc_shm::lowlevel::sync::{registered_waits, waiter_threads};
use ipc_testkit::fork;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

#[test]
fn a_get_awaits_a_put_from_another_process() {
    let _leaks = leak_guard();
    let q = PodQueue::<u64>::new(8).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        i32::from(q.put(42).is_err())
    });
    let rt = runtime();
    let got = rt.block_on(async { q.get_async().await });
    assert_eq!(got.unwrap(), 42);
    child.wait_success(WATCHDOG);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

/// Batches through the async forms: a `put_many_async` larger than the ring awaits the room
/// a consumer process makes, and `get_many_async` awaits a producer process; nothing is
/// lost, duplicated or reordered.
#[test]
fn batches_await_room_and_arrival() {
    let _leaks = leak_guard();
    let q = PodQueue::<u64>::new(8).unwrap();
    // The answer goes back on a queue of its own: the parent's `put_many_async` completes
    // while the last values are still in `q`, and a get of the parent's on `q` would race
    // the child for them.
    let back = PodQueue::<u64>::new(8).unwrap();
    let child = fork(|| {
        let mut got = Vec::new();
        while got.len() < 100 {
            if q.get_many(&mut got, 5).is_err() {
                return 3;
            }
        }
        let ok = got == (0..100).collect::<Vec<u64>>();
        std::thread::sleep(Duration::from_millis(30));
        i32::from(!(ok && back.put_many(&[7, 8, 9]).is_ok()))
    });
    let rt = runtime();
    let values: Vec<u64> = (0..100).collect();
    rt.block_on(q.put_many_async(&values))
        .map_err(Error::from)
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        rt.block_on(back.get_many_timeout_async(&mut got, 8, WATCHDOG))
            .unwrap();
    }
    assert_eq!(got, [7, 8, 9]);
    child.wait_success(WATCHDOG);
    let r = rt.block_on(q.put_many_timeout_async(&[1; 9], Duration::from_millis(20)));
    match r {
        Err(PutTimeoutError::Timeout(rest)) => assert_eq!(rest.len(), 1),
        other => panic!("{other:?}"),
    }
}

/// Messages larger than a slot through the async forms: a spanning put awaits the room a
/// consumer process makes, and a spanning get awaits a producer process.
#[test]
fn spanning_messages_await_room_and_arrival() {
    let _leaks = leak_guard();
    let q = Queue::<Vec<u8>>::builder()
        .capacity(8)
        .slot_size(64)
        .max_message_size(500)
        .build()
        .unwrap();
    q.put(vec![1u8; 300]).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        let first = q.get().ok() == Some(vec![1u8; 300]);
        // Waits, if need be, until the parent has taken its own message.
        std::thread::sleep(Duration::from_millis(50));
        let put = q.put(vec![3u8; 400]).is_ok();
        i32::from(!(first && put))
    });
    let rt = runtime();
    rt.block_on(async { q.put_async(vec![2u8; 400]).await })
        .map_err(Error::from)
        .unwrap();
    assert_eq!(rt.block_on(q.get_async()).unwrap(), vec![2u8; 400]);
    assert_eq!(
        rt.block_on(q.get_timeout_async(WATCHDOG)).unwrap(),
        vec![3u8; 400]
    );
    child.wait_success(WATCHDOG);
}

#[test]
fn a_put_on_a_full_queue_awaits_a_get_from_another_process() {
    let _leaks = leak_guard();
    let q = Queue::<String>::new(2).unwrap();
    q.put("a".to_owned()).unwrap();
    q.put("b".to_owned()).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        i32::from(q.get().ok().as_deref() != Some("a"))
    });
    let rt = runtime();
    rt.block_on(async { q.put_async("c".to_owned()).await })
        .map_err(Error::from)
        .unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(q.get().unwrap(), "b");
    assert_eq!(q.get().unwrap(), "c");
}

#[test]
fn a_runtime_timeout_cancels_the_wait_and_leaves_nothing_behind() {
    let _leaks = leak_guard();
    let q = PodQueue::<u64>::new(1).unwrap();
    let rt = runtime();
    let start = Instant::now();
    let r =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), q.get_async()).await });
    assert!(r.is_err(), "a get on an empty queue completed: {r:?}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(registered_waits(), 0);
    // A cancelled put on a full queue put nothing.
    q.put(1).unwrap();
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(20), q.put_async(2)).await });
    assert!(r.is_err());
    assert_eq!(q.len(), 1);
    assert_eq!(q.try_get().unwrap(), 1);
    assert!(q.try_get().is_err());
    assert_eq!(registered_waits(), 0);
}

#[test]
fn the_timeout_forms_wait_their_time_and_hand_the_value_back() {
    let _leaks = leak_guard();
    let q = Queue::<String>::new(1).unwrap();
    let rt = runtime();
    let start = Instant::now();
    let r = rt.block_on(q.get_timeout_async(Duration::from_millis(40)));
    assert!(matches!(r, Err(GetTimeoutError::Timeout)), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(40));
    q.put("full".to_owned()).unwrap();
    let start = Instant::now();
    let r = rt.block_on(q.put_timeout_async("late".to_owned(), Duration::from_millis(40)));
    match r {
        Err(PutTimeoutError::Timeout(v)) => assert_eq!(v, "late"),
        other => panic!("expected Timeout(value), got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(40));
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(30));
        i32::from(q.get().is_err())
    });
    rt.block_on(q.put_timeout_async("next".to_owned(), WATCHDOG))
        .map_err(Error::from)
        .unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(
        rt.block_on(q.get_timeout_async(WATCHDOG))
            .map_err(Error::from)
            .unwrap(),
        "next"
    );
    q.close();
    let r = rt.block_on(q.get_timeout_async(WATCHDOG));
    assert!(matches!(r, Err(GetTimeoutError::Closed)), "{r:?}");
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_producer_killed_mid_put_does_not_stall_an_awaiting_consumer() {
    let _leaks = leak_guard();
    let q = PodQueue::<u64>::new(4).unwrap();
    // The victim claims a slot and dies before publishing it.
    let victim = fork(|| {
        ipc_failpoints::arm("queue.put.claimed", 1, Action::Kill).unwrap();
        let _ = q.put(1);
        0
    });
    let exit = victim.wait(WATCHDOG);
    assert!(matches!(exit, ipc_testkit::Exit::Signal(9)), "{exit:?}");
    let survivor = fork(|| i32::from(q.put(2).is_err()));
    let rt = runtime();
    let got = rt.block_on(async { tokio::time::timeout(WATCHDOG, q.get_async()).await });
    assert_eq!(
        got.expect("get_async hung on a dead producer's slot")
            .unwrap(),
        2
    );
    survivor.wait_success(WATCHDOG);
}

#[test]
fn a_close_from_another_process_ends_an_awaiting_get() {
    let _leaks = leak_guard();
    let q = Queue::<u64>::new(4).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        0
    });
    let rt = runtime();
    let r = rt.block_on(async { tokio::time::timeout(WATCHDOG, q.get_async()).await });
    assert!(matches!(r, Ok(Err(Error::Closed))), "{r:?}");
    child.wait_success(WATCHDOG);
}

#[test]
fn cancelled_gets_lose_and_duplicate_nothing_under_load() {
    let _leaks = leak_guard();
    const N: u64 = 20_000;
    let q = PodQueue::<u64>::new(16).unwrap();
    let producer = fork(|| {
        for i in 1..=N {
            if q.put(i).is_err() {
                return 1;
            }
        }
        0
    });
    let rt = runtime();
    let q = Arc::new(q);
    let got = rt.block_on(async {
        let sum = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let q = Arc::clone(&q);
            let sum = Arc::clone(&sum);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut k = 0u64;
                loop {
                    k += 1;
                    // Cancel every few waits after a random-ish short time: a get future
                    // dropped at its await point.
                    let limit = Duration::from_micros(50 + (k * 7919 + t * 104_729) % 400);
                    match tokio::time::timeout(limit, q.get_async()).await {
                        Ok(Ok(v)) => {
                            sum.fetch_add(v, Ordering::Relaxed);
                            mine.push(v);
                            if mine.len() as u64 == N {
                                break;
                            }
                        }
                        Ok(Err(e)) => panic!("get_async failed: {e}"),
                        Err(_) if sum.load(Ordering::Relaxed) == N * (N + 1) / 2 => break,
                        Err(_) => {}
                    }
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    producer.wait_success(WATCHDOG);
    assert_eq!(got.len() as u64, N, "lost or duplicated messages");
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct.len() as u64, N, "a message was delivered twice");
    assert_eq!(q.len(), 0);
    drop(rt);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_thousand_tasks_awaiting_one_queue_cost_one_thread() {
    let _leaks = leak_guard();
    no_waiter_threads();
    const TASKS: u64 = 1000;
    let q = Arc::new(Queue::<u64>::new(64).unwrap());
    let rt = runtime();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let q = Arc::clone(&q);
            rt.spawn(async move { q.get_async().await })
        })
        .collect();
    // Every task is parked on the queue.
    let start = Instant::now();
    while registered_waits() < TASKS as usize {
        assert!(
            start.elapsed() < WATCHDOG,
            "only {} waits registered",
            registered_waits()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(waiter_threads(), 1);
    assert_eq!(waiter_named_threads(), 1);
    let producer = fork(|| {
        for i in 0..TASKS {
            if q.put(i).is_err() {
                return 1;
            }
        }
        0
    });
    let got: BTreeSet<u64> = rt.block_on(async {
        let mut got = BTreeSet::new();
        for h in handles {
            got.insert(h.await.unwrap().unwrap());
        }
        got
    });
    producer.wait_success(WATCHDOG);
    assert_eq!(got, (0..TASKS).collect());
}
