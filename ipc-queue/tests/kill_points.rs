//! A participant SIGKILLed at each of the crate's fault points (see the crate docs): no
//! survivor blocks past its deadline, every message the victim did not hold is delivered
//! exactly once, `join` returns once the rest is marked done, and nothing leaks.

mod common;

use std::time::{Duration, Instant};

#[cfg(feature = "serde")]
use common::{bomb_queue, Bomb, Mode2};
use common::{Mode, Setup, TestQueue, WATCHDOG};
use ipc_failpoints::Action;
#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{Error, JoinTimeoutError, PodQueue, PutError, TryGetError};
use ipc_testkit::Exit;

/// How long a survivor's get may wait for one message.
const GET: Duration = Duration::from_secs(5);

/// Runs `victim` in a child that arms `point` to kill it, and checks it died there.
fn kill_at<Q: TestQueue>(s: &Setup<Q>, point: &'static str, victim: fn(&Q) -> i32) {
    let child = s.child(move |q| {
        ipc_failpoints::arm(point, 1, Action::Kill).unwrap();
        victim(q)
    });
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL), "{point}");
}

/// After the victim: a producer child puts 0..10, this process gets them (each within
/// [`GET`]) and marks them done; `held` is a value the victim may have held (never
/// delivered). Then `join` returns (`PeerDied` if a reclaim during it dropped the victim's
/// message), and the queue is empty.
fn survivors_deliver_and_join<Q: TestQueue>(s: &Setup<Q>, held: Option<u64>) {
    let producer = s.child(|q| {
        for v in 0..10 {
            if q.put_timeout(v, GET).is_err() {
                return 3;
            }
        }
        0
    });
    let mut got = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let v = s.q.get_timeout(GET).unwrap();
        assert!(start.elapsed() < GET + Duration::from_secs(1));
        assert_ne!(Some(v), held, "the victim's message arrived");
        got.push(v);
        s.q.task_done().unwrap();
    }
    producer.wait_success(WATCHDOG);
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    match s.q.join_timeout(WATCHDOG) {
        Ok(()) | Err(JoinTimeoutError::PeerDied { .. }) => {}
        other => panic!("join: {other:?}"),
    }
    assert!(matches!(s.q.try_get(), Err(TryGetError::Empty)));
    assert!(matches!(s.q.task_done(), Err(Error::TaskDoneTooManyTimes)));
}

fn put_claimed<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 4);
        kill_at(&s, "queue.put.claimed", |q| i32::from(q.put(100).is_ok()));
        survivors_deliver_and_join(&s, Some(100));
        assert_eq!(s.q.dropped(), 0);
    }
    leaks.finish();
}

fn get_claimed<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 4);
        s.q.put(100).unwrap();
        kill_at(&s, "queue.get.claimed", |q| i32::from(q.get().is_ok()));
        survivors_deliver_and_join(&s, Some(100));
        assert_eq!(s.q.dropped(), 1);
    }
    leaks.finish();
}

/// A message lost with a consumer killed after its claim is counted as soon as anybody asks,
/// not only once another participant happens to block on its slot: here the victim is the
/// last getter, so nothing else ever touches that slot.
fn get_claimed_is_counted_at_once<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 4);
        s.q.put(100).unwrap();
        kill_at(&s, "queue.get.claimed", |q| i32::from(q.get().is_ok()));
        assert_eq!(s.q.dropped(), 1);
        assert_eq!(s.q.len(), 0);
    }
    leaks.finish();
}

fn tombstone_published<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 4);
        // A dead writer's slot, then a consumer killed while skipping its tombstone.
        kill_at(&s, "queue.put.claimed", |q| i32::from(q.put(100).is_ok()));
        kill_at(&s, "queue.tombstone.published", |q| {
            i32::from(q.get_timeout(GET).is_ok())
        });
        survivors_deliver_and_join(&s, Some(100));
        assert_eq!(s.q.dropped(), 0);
    }
    leaks.finish();
}

fn reclaim_before_retire<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 4);
        kill_at(&s, "queue.put.claimed", |q| i32::from(q.put(100).is_ok()));
        kill_at(&s, "queue.reclaim.before_retire", |q| {
            i32::from(q.get_timeout(GET).is_ok())
        });
        survivors_deliver_and_join(&s, Some(100));
    }
    leaks.finish();
}

/// `close` killed after setting the flag, before waking anyone: a consumer blocked in a
/// plain `get` and a producer blocked in a plain `put` on a full queue both return `Closed`.
fn close_mid<Q: TestQueue>() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<Q>::new(Mode::Named, 1);
        let consumer = s.child(|q| match q.get() {
            Err(Error::Closed) => 0,
            _ => 3,
        });
        let filler = Setup::<Q>::new(Mode::Named, 1);
        filler.q.put(1).unwrap();
        let producer = filler.child(|q| match q.put(2) {
            Err(PutError::Closed(2)) => 0,
            _ => 3,
        });
        std::thread::sleep(Duration::from_millis(100));
        kill_at(&s, "queue.close.mid", |q| {
            q.close();
            0
        });
        kill_at(&filler, "queue.close.mid", |q| {
            q.close();
            0
        });
        consumer.wait_success(WATCHDOG);
        producer.wait_success(WATCHDOG);
        assert_eq!(filler.q.get().unwrap(), 1);
        assert!(matches!(filler.q.get(), Err(Error::Closed)));
    }
    leaks.finish();
}

macro_rules! kill_suite {
    ($name:ident, $ty:ty) => {
        mod $name {
            use super::*;
            #[test]
            fn put_claimed() {
                super::put_claimed::<$ty>();
            }
            #[test]
            fn get_claimed() {
                super::get_claimed::<$ty>();
            }
            #[test]
            fn get_claimed_is_counted_at_once() {
                super::get_claimed_is_counted_at_once::<$ty>();
            }
            #[test]
            fn tombstone_published() {
                super::tombstone_published::<$ty>();
            }
            #[test]
            fn reclaim_before_retire() {
                super::reclaim_before_retire::<$ty>();
            }
            #[test]
            fn close_mid() {
                super::close_mid::<$ty>();
            }
        }
    };
}

kill_suite!(pod, PodQueue<u64>);
#[cfg(feature = "serde")]
kill_suite!(serde, Queue<u64>);

/// `queue.publish.before_retire`: a producer whose encoding fails in the slot is killed after
/// publishing the tombstone, before it is counted; the survivors go on and `join` returns.
#[cfg(feature = "serde")]
#[test]
fn publish_before_retire() {
    let _leaks = common::leak_guard();
    let q = bomb_queue();
    let victim = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.publish.before_retire", 1, Action::Kill).unwrap();
        i32::from(q.put(Bomb::new(100, Mode2::Fail)).is_ok())
    });
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let producer = ipc_testkit::fork(|| {
        let ok = (0..10).all(|v| q.put_timeout(Bomb::new(v, Mode2::Ok), GET).is_ok());
        if ok {
            0
        } else {
            3
        }
    });
    let mut got: Vec<u32> = (0..10)
        .map(|_| {
            let v = q.get_timeout(GET).unwrap().value;
            q.task_done().unwrap();
            v
        })
        .collect();
    producer.wait_success(WATCHDOG);
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    q.join_timeout(WATCHDOG).unwrap();
}

/// A producer killed at `queue.put.claimed` inside `put_many`, holding a claimed run of
/// three slots it never wrote: the run is skipped (a consumer sees its claimer dead), the
/// survivors' messages arrive exactly once, `join` returns, and nothing is counted dropped.
#[test]
fn put_many_run_claimed() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<PodQueue<u64>>::new(Mode::Named, 8);
        kill_at(&s, "queue.put.claimed", |q| {
            i32::from(q.put_many(&[100, 101, 102]).is_ok())
        });
        survivors_deliver_and_join(&s, Some(100));
        assert_eq!(s.q.dropped_by_dead_peers(), 0);
    }
    leaks.finish();
}

/// A consumer killed at `queue.get.claimed` inside `get_many`, holding a claimed run of
/// three messages: all three are counted lost at once by `dropped_by_dead_peers`, and the
/// queue goes on (puts reuse the run's slots, later messages arrive, `join` returns).
#[test]
fn get_many_run_claimed() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<PodQueue<u64>>::new(Mode::Named, 4);
        s.q.put_many(&[100, 101, 102]).unwrap();
        kill_at(&s, "queue.get.claimed", |q| {
            let mut got = Vec::new();
            i32::from(q.get_many(&mut got, 8).is_ok())
        });
        assert_eq!(s.q.dropped_by_dead_peers(), 3);
        assert_eq!(s.q.len(), 0);
        survivors_deliver_and_join(&s, Some(100));
    }
    leaks.finish();
}

/// A producer killed in the middle of a stream of runs (SIGKILL from outside, at a random
/// point) while a consumer takes runs: every message it put arrives once and in order,
/// nothing else arrives, and the consumer never waits past its deadline.
#[test]
fn producer_of_runs_killed_mid_stream() {
    let leaks = common::leak_guard();
    {
        let s = Setup::<PodQueue<u64>>::new(Mode::Named, 64);
        let victim = s.child(|q| {
            let mut v = 0u64;
            loop {
                let batch: Vec<u64> = (v..v + 16).collect();
                if q.put_many(&batch).is_err() {
                    return 3;
                }
                v += 16;
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        victim.kill();
        assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
        let mut got = Vec::new();
        loop {
            match s
                .q
                .get_many_timeout(&mut got, 64, Duration::from_millis(300))
            {
                Ok(_) => {}
                Err(ipc_queue::GetTimeoutError::Timeout) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(!got.is_empty());
        assert!(
            got.iter().enumerate().all(|(i, v)| *v == i as u64),
            "gap or repeat"
        );
        assert_eq!(s.q.len(), 0);
    }
    leaks.finish();
}
