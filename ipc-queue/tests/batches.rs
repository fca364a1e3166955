//! `PodQueue`'s batch forms (`put_many`, `get_many` and their `try_`/`_timeout` forms):
//! their contract in one process, and runs racing single claims across processes (every
//! message exactly once, in order per producer).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{encode, Counters, Mode, Setup, WATCHDOG};
use ipc_queue::{
    Error, GetTimeoutError, PodQueue, PutError, PutTimeoutError, TryGetError, TryPutError,
};

#[test]
fn runs_keep_fifo_order_across_the_ring_end() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u64>::new(5).unwrap();
    let mut next = 0u64;
    let mut expect = 0u64;
    let mut got = Vec::new();
    for round in 0..50 {
        let k = 1 + round % 5;
        let batch: Vec<u64> = (next..next + k).collect();
        q.put_many(&batch).unwrap();
        next += k;
        while expect < next {
            got.clear();
            let n = q.get_many(&mut got, 3).unwrap();
            assert!((1..=3).contains(&n));
            assert_eq!(got.len(), n);
            for v in &got {
                assert_eq!(*v, expect);
                expect += 1;
            }
        }
    }
    assert!(q.is_empty());
}

#[test]
fn try_put_many_puts_what_fits_and_reports_full() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u32>::new(4).unwrap();
    assert_eq!(q.try_put_many(&[]).unwrap(), 0);
    assert_eq!(q.try_put_many(&[1, 2, 3]).unwrap(), 3);
    assert_eq!(q.try_put_many(&[4, 5, 6]).unwrap(), 1);
    match q.try_put_many(&[7, 8]) {
        Err(TryPutError::Full(rest)) => assert_eq!(rest, &[7, 8]),
        other => panic!("{other:?}"),
    }
    let mut got = vec![0];
    assert_eq!(q.try_get_many(&mut got, 10).unwrap(), 4);
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert!(matches!(
        q.try_get_many(&mut got, 10),
        Err(TryGetError::Empty)
    ));
    assert_eq!(q.try_get_many(&mut got, 0).unwrap(), 0);
}

#[test]
fn put_many_timeout_hands_back_what_was_not_put() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u64>::new(2).unwrap();
    let values = [1, 2, 3, 4];
    let start = Instant::now();
    match q.put_many_timeout(&values, Duration::from_millis(50)) {
        Err(PutTimeoutError::Timeout(rest)) => assert_eq!(rest, &[3, 4]),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(50));
    let mut got = Vec::new();
    let start = Instant::now();
    assert_eq!(
        q.get_many_timeout(&mut got, 8, Duration::from_secs(1))
            .unwrap(),
        2
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        q.get_many_timeout(&mut got, 8, Duration::from_millis(20)),
        Err(GetTimeoutError::Timeout)
    ));
    assert_eq!(got, [1, 2]);
}

#[test]
fn closed_queue_refuses_runs_and_drains() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u64>::new(4).unwrap();
    q.put_many(&[1, 2]).unwrap();
    q.close();
    match q.put_many(&[3, 4]) {
        Err(PutError::Closed(rest)) => assert_eq!(rest, &[3, 4]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(q.try_put_many(&[3]), Err(TryPutError::Closed(_))));
    let mut got = Vec::new();
    assert_eq!(q.get_many(&mut got, 8).unwrap(), 2);
    assert!(matches!(q.get_many(&mut got, 8), Err(Error::Closed)));
    assert!(matches!(
        q.try_get_many(&mut got, 8),
        Err(TryGetError::Closed)
    ));
    assert_eq!(got, [1, 2]);
    // Every claim of the refused run was published as a tombstone and skipped: `join`
    // counts only the two messages put.
    q.task_done().unwrap();
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(1)).unwrap();
}

#[test]
fn blocked_put_many_finishes_as_a_consumer_makes_room() {
    let _leaks = common::leak_guard();
    let s = Setup::<PodQueue<u64>>::new(Mode::Inherited, 3);
    let consumer = s.child(|q| {
        let mut got = Vec::new();
        while got.len() < 100 {
            if q.get_many_timeout(&mut got, 2, Duration::from_secs(10))
                .is_err()
            {
                return 3;
            }
        }
        i32::from(got != (0..100).collect::<Vec<u64>>())
    });
    let values: Vec<u64> = (0..100).collect();
    s.q.put_many(&values).unwrap();
    consumer.wait_success(WATCHDOG);
}

/// Producers putting runs of 1 to 13 (and one putting single messages) and consumers taking
/// runs of up to `max` (and one taking single messages), across processes: every message
/// exactly once, in order per producer as each consumer sees it.
fn runs_race(cap: usize, max: usize) {
    let _leaks = common::leak_guard();
    const PRODUCERS: u64 = 3;
    const CONSUMERS: u64 = 3;
    const PER: u64 = 20_000;
    let s = Setup::<PodQueue<u64>>::new(Mode::Named, cap);
    let c = Counters::new((PRODUCERS * PER) as usize);
    let cons: Vec<_> = (0..CONSUMERS)
        .map(|k| {
            s.child(|q| {
                let mut last = vec![None::<u64>; PRODUCERS as usize];
                let mut got = Vec::new();
                loop {
                    got.clear();
                    let r = if k == 0 {
                        q.get().map(|v| got.push(v))
                    } else {
                        q.get_many(&mut got, max).map(drop)
                    };
                    match r {
                        Ok(()) => {}
                        Err(Error::Closed) => return 0,
                        Err(_) => return 3,
                    }
                    for &v in &got {
                        let (p, seq) = (v >> 32, v & 0xFFFF_FFFF);
                        if p >= PRODUCERS || seq >= PER {
                            return 4;
                        }
                        if last[p as usize].is_some_and(|l| seq <= l) {
                            return 2;
                        }
                        last[p as usize] = Some(seq);
                        c.hit(p * PER + seq);
                        c.word(0).fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let prods: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            s.child(|q| {
                let mut seq = 0;
                let mut k = 1;
                while seq < PER {
                    let n = if p == 0 { 1 } else { k.min(PER - seq) };
                    let run: Vec<u64> = (seq..seq + n).map(|i| encode(p, i)).collect();
                    if q.put_many(&run).is_err() {
                        return 3;
                    }
                    seq += n;
                    k = k % 13 + 1;
                }
                0
            })
        })
        .collect();
    for p in prods {
        p.wait_success(WATCHDOG);
    }
    s.q.close();
    for k in cons {
        k.wait_success(WATCHDOG);
    }
    c.assert_exactly_once(0..(PRODUCERS * PER) as usize);
    assert_eq!(c.word(0).load(Ordering::SeqCst), PRODUCERS * PER);
    assert_eq!(s.q.len(), 0);
    assert_eq!(s.q.dropped_by_dead_peers(), 0);
}

#[test]
fn runs_race_on_capacity_1() {
    runs_race(1, 4);
}

#[test]
fn runs_race_on_capacity_7() {
    runs_race(7, 5);
}

#[test]
fn runs_race_on_capacity_64() {
    runs_race(64, 64);
}
