//! One behavioural suite, run for `PodQueue` and `Queue` in both sharing modes (inherited
//! through `fork`, and named + `open_named`), with real forked processes.

mod common;

use std::time::{Duration, Instant};

use common::{stress, Counters, Mode, Setup, TestQueue, WATCHDOG};
#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{
    Error, GetTimeoutError, JoinTimeoutError, PodQueue, PutTimeoutError, TryGetError, TryPutError,
};

fn fifo_len_capacity<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 4);
    assert_eq!(s.q.capacity(), 4);
    for i in 0..4 {
        s.q.try_put(i).unwrap();
    }
    assert_eq!(s.q.len(), 4);
    match s.q.try_put(9) {
        Err(TryPutError::Full(v)) => assert_eq!(v, 9),
        other => panic!("{other:?}"),
    }
    // A child sees the same queue and takes the first two.
    s.child(|q| i32::from(!(q.get().unwrap() == 0 && q.try_get().unwrap() == 1)))
        .wait_success(WATCHDOG);
    assert_eq!(s.q.len(), 2);
    assert_eq!(s.q.get().unwrap(), 2);
    assert_eq!(s.q.get().unwrap(), 3);
    assert!(matches!(s.q.try_get(), Err(TryGetError::Empty)));
    assert_eq!(s.q.len(), 0);
}

fn timeouts_wait_at_least<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 1);
    let t = Instant::now();
    assert!(matches!(
        s.q.get_timeout(Duration::from_millis(40)),
        Err(GetTimeoutError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(40));
    s.q.put(1).unwrap();
    let t = Instant::now();
    match s.q.put_timeout(2, Duration::from_millis(40)) {
        Err(PutTimeoutError::Timeout(v)) => assert_eq!(v, 2),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(40));
    assert_eq!(s.q.get_timeout(Duration::from_secs(5)).unwrap(), 1);
}

fn blocked_calls_are_woken_by_peers<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 1);
    // A consumer blocked on an empty queue gets what a later put sends.
    let c = s.child(|q| i32::from(q.get().unwrap() != 7));
    std::thread::sleep(Duration::from_millis(30));
    s.q.put(7).unwrap();
    c.wait_success(WATCHDOG);
    // A producer blocked on a full queue goes through when a slot frees.
    s.q.put(1).unwrap();
    let p = s.child(|q| i32::from(q.put(2).is_err()));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(s.q.get().unwrap(), 1);
    p.wait_success(WATCHDOG);
    assert_eq!(s.q.get().unwrap(), 2);
}

fn close_wakes_and_drains<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 2);
    // Blocked getters in two processes wake with Closed.
    let getters: Vec<_> = (0..2)
        .map(|_| s.child(|q| i32::from(!matches!(q.get(), Err(Error::Closed)))))
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    s.q.close();
    for g in getters {
        g.wait_success(WATCHDOG);
    }

    // A blocked putter wakes with Closed and gets its value back; queued messages drain.
    let s = Setup::<Q>::new(mode, 2);
    s.q.put(1).unwrap();
    s.q.put(2).unwrap();
    let putter = s.child(|q| match q.put_timeout(3, Duration::from_secs(30)) {
        Err(PutTimeoutError::Closed(3)) => 0,
        _ => 1,
    });
    std::thread::sleep(Duration::from_millis(30));
    s.q.close();
    putter.wait_success(WATCHDOG);
    assert!(matches!(s.q.try_put(4), Err(TryPutError::Closed(4))));
    assert_eq!(s.q.get().unwrap(), 1);
    assert_eq!(s.q.try_get().unwrap(), 2);
    assert!(matches!(s.q.get(), Err(Error::Closed)));
    assert!(matches!(s.q.try_get(), Err(TryGetError::Closed)));
}

fn task_done_and_join<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 8);
    assert!(s.q.join_timeout(Duration::from_millis(1)).is_ok());
    for i in 0..5 {
        s.q.put(i).unwrap();
    }
    let t = Instant::now();
    assert!(matches!(
        s.q.join_timeout(Duration::from_millis(30)),
        Err(JoinTimeoutError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(30));
    let worker = s.child(|q| {
        for _ in 0..5 {
            if q.get().is_err() || q.task_done().is_err() {
                return 1;
            }
        }
        0
    });
    s.q.join_timeout(WATCHDOG).unwrap();
    worker.wait_success(WATCHDOG);
    assert!(matches!(s.q.task_done(), Err(Error::TaskDoneTooManyTimes)));
}

fn stress_capacity_1<Q: TestQueue>(mode: Mode) {
    stress::<Q>(mode, 1, 2, 2, 10_000);
}

fn stress_capacity_2<Q: TestQueue>(mode: Mode) {
    stress::<Q>(mode, 2, 2, 2, 10_000);
}

fn stress_capacity_1024<Q: TestQueue>(mode: Mode) {
    stress::<Q>(mode, 1024, 2, 2, 100_000);
}

fn named_leaves_nothing<Q: TestQueue>(mode: Mode) {
    // Other tests of this binary make `ipct-q-*` names in parallel: watch this test's own.
    let name = {
        let s = Setup::<Q>::new(mode, 4);
        if let Some(n) = &s.name {
            assert!(std::path::Path::new(&format!("/dev/shm{n}")).exists());
        }
        s.q.put(1).unwrap();
        s.child(|q| i32::from(q.get().ok() != Some(1)))
            .wait_success(WATCHDOG);
        let _ = Counters::new(1);
        s.name.clone()
    };
    if let Some(n) = name {
        assert!(
            !std::path::Path::new(&format!("/dev/shm{n}")).exists(),
            "{n} left in /dev/shm"
        );
    }
}

macro_rules! suite {
    ($name:ident, $ty:ty, $mode:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn fifo_len_capacity() {
                let _leaks = common::leak_guard();
                super::fifo_len_capacity::<$ty>($mode);
            }
            #[test]
            fn timeouts_wait_at_least() {
                let _leaks = common::leak_guard();
                super::timeouts_wait_at_least::<$ty>($mode);
            }
            #[test]
            fn blocked_calls_are_woken_by_peers() {
                let _leaks = common::leak_guard();
                super::blocked_calls_are_woken_by_peers::<$ty>($mode);
            }
            #[test]
            fn close_wakes_and_drains() {
                let _leaks = common::leak_guard();
                super::close_wakes_and_drains::<$ty>($mode);
            }
            #[test]
            fn task_done_and_join() {
                let _leaks = common::leak_guard();
                super::task_done_and_join::<$ty>($mode);
            }
            #[test]
            fn stress_2x2_capacity_1() {
                let _leaks = common::leak_guard();
                super::stress_capacity_1::<$ty>($mode);
            }
            #[test]
            fn stress_2x2_capacity_2() {
                let _leaks = common::leak_guard();
                super::stress_capacity_2::<$ty>($mode);
            }
            #[test]
            fn stress_2x2_capacity_1024() {
                let _leaks = common::leak_guard();
                super::stress_capacity_1024::<$ty>($mode);
            }
            #[test]
            fn leaves_nothing_in_dev_shm() {
                let _leaks = common::leak_guard();
                super::named_leaves_nothing::<$ty>($mode);
            }
        }
    };
}

suite!(pod_inherited, PodQueue<u64>, Mode::Inherited);
suite!(pod_named, PodQueue<u64>, Mode::Named);
#[cfg(feature = "serde")]
suite!(serde_inherited, Queue<u64>, Mode::Inherited);
#[cfg(feature = "serde")]
suite!(serde_named, Queue<u64>, Mode::Named);

#[cfg(feature = "serde")]
#[test]
fn byte_vectors_round_trip_at_every_length_that_fits() {
    let _leaks = common::leak_guard();
    let q = Queue::<Vec<u8>>::builder()
        .capacity(2)
        .max_message_size(200)
        .build()
        .unwrap();
    let max = q.max_message_size();
    // Lengths below 128 take a one-byte varint, longer ones two.
    let fits = |n: usize| n + if n < 128 { 1 } else { 2 } <= max;
    for n in 0..=max {
        let v: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
        if fits(n) {
            q.put(&v).unwrap();
            assert_eq!(q.get().unwrap(), v, "length {n}");
        } else {
            match q.try_put(&v) {
                Err(TryPutError::Failed(_, Error::TooLarge { len, .. })) => {
                    assert_eq!(len, n + 2)
                }
                other => panic!("length {n}: {other:?}"),
            }
        }
    }
    assert!(q.is_empty());
}
