//! `Queue` messages larger than a slot (`QueueBuilder::slot_size` below
//! `max_message_size`): round trips at every size around the slot edges, both codec paths,
//! the ring's end, limits, waiting for room, `join`, cross-process races, and producers and
//! consumers killed holding a span (every delivered message whole, exactly once).
#![cfg(feature = "serde")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Counters, WATCHDOG};
use ipc_failpoints::Action;
use ipc_queue::{Error, GetTimeoutError, Queue, TryGetError, TryPutError};
use ipc_testkit::{fork, Exit};

/// The message `seq` of producer `p`: its length varies across slot edges, its bytes tell
/// who sent it.
fn message(p: u64, seq: u64) -> Vec<u8> {
    let len = ((seq * 977 + p * 131) % 3000) as usize;
    let mut v = vec![(seq % 251) as u8; len];
    if len >= 16 {
        v[..8].copy_from_slice(&p.to_le_bytes());
        v[8..16].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

/// (producer, seq) of a message made by [`message`], checking every byte.
fn check(v: &[u8]) -> Option<(u64, u64)> {
    if v.len() < 16 {
        return None;
    }
    let p = u64::from_le_bytes(v[..8].try_into().ok()?);
    let seq = u64::from_le_bytes(v[8..16].try_into().ok()?);
    (message(p, seq) == v).then_some((p, seq))
}

fn spanning(cap: usize) -> Queue<Vec<u8>> {
    Queue::<Vec<u8>>::builder()
        .capacity(cap)
        .slot_size(64)
        .max_message_size(4000)
        .build()
        .unwrap()
}

#[test]
fn every_size_around_the_slot_edges_round_trips_in_order() {
    let _leaks = common::leak_guard();
    let q = spanning(400);
    assert_eq!(q.max_message_size(), 4000);
    let sizes: Vec<usize> = (0..200)
        .chain([
            250, 251, 252, 253, 254, 255, 256, 257, 1000, 3990, 3995, 3996,
        ])
        .collect();
    for chunk in sizes.chunks(5) {
        let sent: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect())
            .collect();
        for m in &sent {
            q.put(m).unwrap();
        }
        for m in &sent {
            assert_eq!(&q.get().unwrap(), m, "len {}", m.len());
        }
    }
    assert!(q.is_empty());
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
}

#[test]
fn serde_types_span_slots_too() {
    let _leaks = common::leak_guard();
    let q = Queue::<(String, Vec<u32>)>::builder()
        .capacity(16)
        .slot_size(32)
        .max_message_size(400)
        .build()
        .unwrap();
    for n in [0usize, 3, 10, 50, 90] {
        let m = ("s".repeat(n), (0..n as u32).collect::<Vec<_>>());
        q.put(&m).unwrap();
        assert_eq!(q.get().unwrap(), m);
    }
}

#[test]
fn spans_cross_the_ring_end() {
    let _leaks = common::leak_guard();
    let q = Queue::<Vec<u8>>::builder()
        .capacity(7)
        .slot_size(64)
        .max_message_size(400)
        .build()
        .unwrap();
    for k in 0..300u64 {
        let m = message(0, k);
        let m = &m[..m.len().min(390)];
        q.put(m.to_vec()).unwrap();
        assert_eq!(q.get().unwrap(), m);
    }
}

#[test]
fn limits_are_checked() {
    let _leaks = common::leak_guard();
    let q = spanning(80);
    match q.try_put(vec![0u8; 4001]) {
        Err(TryPutError::Failed(v, Error::TooLarge { max: 4000, .. })) => assert_eq!(v.len(), 4001),
        other => panic!("{other:?}"),
    }
    // The largest message must fit in the ring.
    assert!(matches!(
        Queue::<Vec<u8>>::builder()
            .capacity(4)
            .slot_size(64)
            .max_message_size(300)
            .build(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn a_span_waits_for_enough_free_slots_in_a_row() {
    let _leaks = common::leak_guard();
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4)
        .slot_size(64)
        .max_message_size(250)
        .build()
        .unwrap();
    q.put(vec![1]).unwrap();
    // Four slots needed, three free.
    let r = q.try_put(vec![2; 240]);
    assert!(matches!(r, Err(TryPutError::Full(_))), "{r:?}");
    assert_eq!(q.get().unwrap(), [1]);
    q.try_put(vec![2; 240]).unwrap();
    assert_eq!(q.len(), 4);
    assert!(matches!(q.try_put(vec![3]), Err(TryPutError::Full(_))));
    assert_eq!(q.get().unwrap(), vec![2; 240]);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(20)),
        Err(GetTimeoutError::Timeout)
    ));
}

#[test]
fn join_counts_a_spanning_message_once() {
    let _leaks = common::leak_guard();
    let q = spanning(600);
    for k in 0..10 {
        q.put(message(1, k)).unwrap();
    }
    for _ in 0..10 {
        q.get().unwrap();
        q.task_done().unwrap();
    }
    q.join_timeout(Duration::from_secs(1)).unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooManyTimes)));
}

#[test]
fn openers_see_the_message_size_and_the_builder_checks_it() {
    let _leaks = common::leak_guard();
    let name = ipc_testkit::unique_name(&common::q_tag());
    let q = Queue::<Vec<u8>>::builder()
        .capacity(80)
        .slot_size(64)
        .max_message_size(4000)
        .create_named(&name)
        .unwrap();
    let other = Queue::<Vec<u8>>::open_named(&name).unwrap();
    assert_eq!(other.max_message_size(), 4000);
    other.put(vec![9u8; 3000]).unwrap();
    assert_eq!(q.get().unwrap(), vec![9u8; 3000]);
    let wrong = Queue::<Vec<u8>>::builder()
        .capacity(80)
        .slot_size(64)
        .max_message_size(2000)
        .open_named(&name);
    assert!(matches!(
        wrong,
        Err(Error::Shm(ipc_shm::Error::LayoutMismatch { .. }))
    ));
}

/// Producers putting messages of 0 to 3 KB (most spanning several 64-byte slots) and
/// consumers taking them across processes: every message whole, exactly once, in order per
/// producer.
fn race(cap: usize) {
    let _leaks = common::leak_guard();
    const PRODUCERS: u64 = 3;
    const CONSUMERS: u64 = 2;
    const PER: u64 = 3000;
    let q = spanning(cap);
    let c = Counters::new((PRODUCERS * PER) as usize);
    let cons: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            fork(|| {
                let mut last = vec![None::<u64>; PRODUCERS as usize];
                loop {
                    match q.get() {
                        Ok(v) => {
                            let Some((p, seq)) = check(&v) else {
                                if v.len() >= 16 {
                                    return 4;
                                }
                                c.word(1).fetch_add(1, Ordering::SeqCst);
                                continue;
                            };
                            if last[p as usize].is_some_and(|l| seq <= l) {
                                return 2;
                            }
                            last[p as usize] = Some(seq);
                            c.hit(p * PER + seq);
                        }
                        Err(Error::Closed) => return 0,
                        Err(_) => return 3,
                    }
                }
            })
        })
        .collect();
    let prods: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            fork(|| {
                for seq in 0..PER {
                    if q.put(message(p, seq)).is_err() {
                        return 3;
                    }
                }
                0
            })
        })
        .collect();
    for p in prods {
        p.wait_success(WATCHDOG);
    }
    q.close();
    for k in cons {
        k.wait_success(WATCHDOG);
    }
    let short = (0..PRODUCERS)
        .flat_map(|p| (0..PER).map(move |s| (p, s)))
        .filter(|&(p, s)| message(p, s).len() < 16)
        .count() as u64;
    let (missing, dups) = c.missing_and_dups(0..(PRODUCERS * PER) as usize);
    let missing: Vec<_> = missing
        .into_iter()
        .filter(|&i| message(i as u64 / PER, i as u64 % PER).len() >= 16)
        .collect();
    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        dups.is_empty(),
        "duplicated: {:?}",
        &dups[..dups.len().min(10)]
    );
    assert_eq!(c.word(1).load(Ordering::SeqCst), short);
    assert_eq!(q.len(), 0);
    assert_eq!(q.dropped_by_dead_peers(), 0);
}

#[test]
fn race_on_a_ring_of_one_message() {
    race(64);
}

#[test]
fn race_on_a_ring_of_several_messages() {
    race(300);
}

/// Runs `victim` in a child that arms `point` to kill it, and checks it died there.
fn kill_at(point: &'static str, victim: impl FnOnce() -> i32) {
    let child = fork(move || {
        ipc_failpoints::arm(point, 1, Action::Kill).unwrap();
        victim()
    });
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL), "{point}");
}

/// After a victim: a survivor puts three messages (one spanning), this process gets exactly
/// those, and `join` returns once they are marked done.
fn survivors_go_on(q: &Queue<Vec<u8>>) {
    let sent = [message(2, 100), vec![1, 2, 3], message(2, 101)];
    let producer = fork(|| {
        for m in &sent {
            if q.put_timeout(m, Duration::from_secs(5)).is_err() {
                return 3;
            }
        }
        0
    });
    for m in &sent {
        assert_eq!(&q.get_timeout(Duration::from_secs(5)).unwrap(), m);
        q.task_done().unwrap();
    }
    producer.wait_success(WATCHDOG);
    match q.join_timeout(WATCHDOG) {
        Ok(()) | Err(ipc_queue::JoinTimeoutError::PeerDied { .. }) => {}
        other => panic!("join: {other:?}"),
    }
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
}

#[test]
fn producer_killed_with_a_span_claimed() {
    let _leaks = common::leak_guard();
    let q = spanning(80);
    kill_at("queue.put.claimed", || {
        i32::from(q.put(vec![7u8; 2000]).is_ok())
    });
    survivors_go_on(&q);
    assert_eq!(q.dropped_by_dead_peers(), 0);
}

#[test]
fn producer_killed_between_continuations_and_head() {
    let _leaks = common::leak_guard();
    let q = spanning(80);
    kill_at("queue.span.continuations_published", || {
        i32::from(q.put(vec![7u8; 2000]).is_ok())
    });
    survivors_go_on(&q);
    assert_eq!(q.dropped_by_dead_peers(), 0);
}

#[test]
fn consumer_killed_holding_a_span_loses_one_message() {
    let _leaks = common::leak_guard();
    let q = spanning(80);
    q.put(vec![7u8; 2000]).unwrap();
    kill_at("queue.get.claimed", || i32::from(q.get().is_ok()));
    assert_eq!(q.dropped_by_dead_peers(), 1);
    assert_eq!(q.len(), 0);
    survivors_go_on(&q);
}

/// A producer of spanning messages SIGKILLed at a random point of its stream: what arrives
/// is a prefix of what it put, every message whole.
#[test]
fn producer_of_spans_killed_mid_stream() {
    let _leaks = common::leak_guard();
    let q = spanning(300);
    let victim = fork(|| {
        for seq in 0.. {
            if q.put(message(0, seq)).is_err() {
                return 3;
            }
        }
        0
    });
    std::thread::sleep(Duration::from_millis(30));
    victim.kill();
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let mut next = 0;
    loop {
        match q.get_timeout(Duration::from_millis(300)) {
            Ok(v) => {
                assert_eq!(v, message(0, next), "message {next}");
                next += 1;
            }
            Err(GetTimeoutError::Timeout) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(next > 0);
    assert_eq!(q.len(), 0);
}
