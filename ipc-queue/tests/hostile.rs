//! Untrusted shared memory under blocking calls: corrupted slot and position words while
//! callers wait (timeouts of 100 ms and more, plain `get` on a closed queue), and a scribbler
//! process writing random bytes over a named queue while others use it. Every call returns
//! a value or a typed error, none panics, none outlives its deadline by more than a slack.
//! Also: the codec round-trips nested and enum types (proptest).

mod common;

use std::time::{Duration, Instant};

use ipc_queue::PodQueue;
#[cfg(feature = "serde")]
use ipc_queue::{Error, PutTimeoutError, Queue, TryGetError, TryPutError};
use ipc_testkit::fork;
use ipc_testkit::Exit;
#[cfg(feature = "serde")]
use ipc_testkit::Leaks;
use proptest::prelude::*;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

const HEADER: usize = 128;
const CONTROL: usize = 512;
const WAIT: Duration = Duration::from_millis(100);
/// What a call may take beyond its timeout (death checks read `/proc`; the machine is shared).
const SLACK: Duration = Duration::from_secs(3);
const WATCHDOG: Duration = Duration::from_secs(60);

/// Exit codes of the children: 0 fine, 5 a call outlived its deadline.
fn timed<T>(deadline: Duration, f: impl FnOnce() -> T) -> Result<T, i32> {
    let start = Instant::now();
    let r = f();
    if start.elapsed() > deadline + SLACK {
        Err(5)
    } else {
        Ok(r)
    }
}

/// A xorshift stream.
#[cfg(feature = "serde")]
struct Rng(u64);

#[cfg(feature = "serde")]
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random words written over the control block and the slot words of a named
    /// `PodQueue<u64>` (capacity 4, packed: 4 arrays of 16 words), then blocking calls with
    /// 100 ms timeouts and, once closed, a plain `get`, each in a child under a watchdog.
    #[test]
    fn corrupted_words_under_blocking_calls(
        writes in proptest::collection::vec((0usize..(CONTROL / 8 + 64), any::<u64>(), 0u8..6), 1..6),
        messages in 0u64..5,
    ) {
        let _leaks = common::leak_guard();
        let name = ipc_testkit::unique_name("hostile");
        let q = PodQueue::<u64>::create_named(&name, 4).unwrap();
        for m in 0..messages {
            let _ = q.try_put(m);
        }
        let raw = ipc_testkit::Hostile::open(&name);
        for (word, value, shape) in &writes {
            // Plausible values as well as noise: small positions, owner ids, flags.
            let v = match shape {
                0 => *value,
                1 => ((value % 16) << 24) | ((value >> 40) % 4),
                2 => ((value % 16) << 24) | (1 << 22),
                3 => ((value % 16) << 24) | ((value >> 32) % 3),
                // A run's record (or a tombstone's bit in a slot).
                4 => ((value % 16) << 24) | (1 << 23) | ((value >> 32) % 3),
                _ => ((value % 16) << 24) | ((value >> 32) & ((1 << 22) - 1)),
            };
            raw.write_at(HEADER + word * 8, &v.to_le_bytes()).unwrap();
        }
        let child = fork(|| {
            let r = (|| -> Result<(), i32> {
                let _ = timed(WAIT, || q.get_timeout(WAIT))?;
                let _ = timed(WAIT, || q.put_timeout(7, WAIT))?;
                let _ = timed(WAIT, || q.put_timeout(8, WAIT))?;
                let _ = timed(WAIT, || q.get_timeout(WAIT))?;
                let _ = timed(WAIT, || q.put_many_timeout(&[9, 10, 11], WAIT))?;
                let mut got = Vec::new();
                let _ = timed(WAIT, || q.get_many_timeout(&mut got, 8, WAIT))?;
                let _ = timed(WAIT, || q.join_timeout(WAIT))?;
                let _ = q.task_done();
                q.close();
                // A closed queue: plain gets end (a message, Closed or Corrupted).
                for k in 0..8 {
                    let r = if k % 2 == 0 {
                        q.get().map(drop)
                    } else {
                        q.get_many(&mut got, 3).map(drop)
                    };
                    if r.is_err() {
                        break;
                    }
                }
                Ok(())
            })();
            r.err().unwrap_or(0)
        });
        prop_assert_eq!(child.wait(WATCHDOG), Exit::Code(0));
        drop(raw);
        drop(q);
    }
}

#[cfg(feature = "serde")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random words over the control block and the slots of a named `Queue<Vec<u8>>` whose
    /// messages span 64-byte slots (inline layout: 32 bytes of words, then the payload, per
    /// slot), holding spanning messages: every call ends within its deadline, and a plain
    /// `get` on the closed queue ends.
    #[test]
    fn corrupted_words_under_spanning_calls(
        writes in proptest::collection::vec((0usize..(CONTROL / 8 + 16 * 12), any::<u64>(), 0u8..5), 1..6),
        messages in 0usize..4,
    ) {
        let _leaks = common::leak_guard();
        let name = ipc_testkit::unique_name("hostile-span");
        let q = Queue::<Vec<u8>>::builder()
            .capacity(16)
            .slot_size(64)
            .max_message_size(600)
            .create_named(&name)
            .unwrap();
        for m in 0..messages {
            let _ = q.try_put(vec![m as u8; 100 + m * 70]);
        }
        let raw = ipc_testkit::Hostile::open(&name);
        for (word, value, shape) in &writes {
            let v = match shape {
                0 => *value,
                // Plausible states: published tombstones, messages, claims.
                1 => ((value % 32) << 24) | (1 << 23),
                2 => (value % 32) << 24,
                3 => ((value % 32) << 24) | ((value >> 32) % 3),
                // A length word.
                _ => value % 2000,
            };
            raw.write_at(HEADER + word * 8, &v.to_le_bytes()).unwrap();
        }
        let child = fork(|| {
            let r = (|| -> Result<(), i32> {
                let _ = timed(WAIT, || q.get_timeout(WAIT))?;
                let _ = timed(WAIT, || q.put_timeout(vec![1u8; 300], WAIT))?;
                let _ = timed(WAIT, || q.put_timeout(vec![2u8; 10], WAIT))?;
                let _ = timed(WAIT, || q.get_timeout(WAIT))?;
                let _ = timed(WAIT, || q.join_timeout(WAIT))?;
                q.close();
                for _ in 0..8 {
                    if q.get().is_err() {
                        break;
                    }
                }
                Ok(())
            })();
            r.err().unwrap_or(0)
        });
        prop_assert_eq!(child.wait(WATCHDOG), Exit::Code(0));
        drop(raw);
        drop(q);
    }
}

/// A scribbler writes random bytes over a named `Queue<u64>` (everything after the header)
/// while two producers and two consumers use it with 100 ms timeouts: every call returns a
/// value or an error within its deadline plus slack, nobody panics, and after the scribbler
/// stops and the queue is closed everyone ends.
#[cfg(feature = "serde")]
#[test]
fn scribbler_over_a_named_queue() {
    let _leaks = common::leak_guard();
    let leaks = Leaks::snapshot("ipct-scribble-");
    let name = ipc_testkit::unique_name("scribble");
    let q = Queue::<u64>::builder()
        .capacity(8)
        .max_message_size(16)
        .create_named(&name)
        .unwrap();
    let run = Duration::from_millis(400);
    // The users open the queue before the scribbling starts: an opener that finds the
    // layout already scribbled refuses it (an error, as it must), which is not this test.
    let opened = ipc_shm::AtomicValue::<std::sync::atomic::AtomicU64>::new(0).unwrap();
    let user = |producer: bool| {
        let name = name.clone();
        let opened = &opened;
        fork(move || {
            let q = match Queue::<u64>::open_named(&name) {
                Ok(q) => q,
                Err(_) => return 6,
            };
            opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let end = Instant::now() + run;
            let mut i = 0u64;
            while Instant::now() < end {
                let r = if producer {
                    timed(WAIT, || match q.put_timeout(i, WAIT) {
                        Ok(()) => {}
                        Err(PutTimeoutError::Timeout(_) | PutTimeoutError::Closed(_)) => {}
                        Err(PutTimeoutError::Failed(_, _)) => {}
                    })
                } else {
                    timed(WAIT, || {
                        let _ = q.get_timeout(WAIT);
                    })
                };
                if let Err(code) = r {
                    return code;
                }
                i += 1;
            }
            let _ = timed(WAIT, || q.join_timeout(WAIT));
            0
        })
    };
    let users: Vec<_> = [true, true, false, false].into_iter().map(user).collect();
    let start = Instant::now();
    while opened.load(std::sync::atomic::Ordering::SeqCst) < 4 && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(1));
    }
    let scribbler = {
        let name = name.clone();
        fork(move || {
            let raw = ipc_testkit::Hostile::open(&name);
            let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id()));
            let len = raw.len() - HEADER;
            let end = Instant::now() + run;
            while Instant::now() < end {
                let at = HEADER + (rng.next() as usize) % len;
                let n = (1 + (rng.next() as usize) % 16).min(raw.len() - at);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                if raw.write_at(at, &bytes).is_err() {
                    return 7;
                }
                if rng.next() % 8 == 0 {
                    std::thread::yield_now();
                }
            }
            0
        })
    };
    scribbler.wait_success(WATCHDOG);
    for u in users {
        u.wait_success(WATCHDOG);
    }
    // The owner's own calls return too.
    q.close();
    for _ in 0..16 {
        if q.get().is_err() {
            break;
        }
    }
    assert!(matches!(
        q.try_put(1u64),
        Err(TryPutError::Closed(_) | TryPutError::Failed(..) | TryPutError::Full(_))
    ));
    drop(q);
    leaks.assert_no_new_shm();
}

#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    id: u32,
    tags: Vec<String>,
    score: Option<f64>,
}

#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Unit,
    Number(i64),
    Text(String),
    Bytes(Vec<u8>),
    Nested { inner: Inner, children: Vec<Inner> },
    Pair(Box<Msg>, Option<Box<Msg>>),
}

#[cfg(feature = "serde")]
fn inner() -> impl Strategy<Value = Inner> {
    (
        any::<u32>(),
        proptest::collection::vec(".{0,12}", 0..4),
        proptest::option::of(-1e9f64..1e9),
    )
        .prop_map(|(id, tags, score)| Inner { id, tags, score })
}

#[cfg(feature = "serde")]
fn msg() -> impl Strategy<Value = Msg> {
    let leaf = prop_oneof![
        Just(Msg::Unit),
        any::<i64>().prop_map(Msg::Number),
        ".{0,40}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Msg::Bytes),
        (inner(), proptest::collection::vec(inner(), 0..3))
            .prop_map(|(inner, children)| Msg::Nested { inner, children }),
    ];
    leaf.prop_recursive(3, 16, 2, |m| {
        (m.clone(), proptest::option::of(m))
            .prop_map(|(a, b)| Msg::Pair(Box::new(a), b.map(Box::new)))
    })
}

#[cfg(feature = "serde")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Nested and enum messages round-trip through the slots (below and above the inline
    /// copy-out size); one too large is refused with its value back, and the queue goes on.
    #[test]
    fn codec_round_trips_nested_and_enum_types(ms in proptest::collection::vec(msg(), 1..6)) {
        let _leaks = common::leak_guard();
        let q = Queue::<Msg>::builder().capacity(8).max_message_size(512).build().unwrap();
        let mut sent = Vec::new();
        for m in &ms {
            match q.try_put(m) {
                Ok(()) => sent.push(m.clone()),
                Err(TryPutError::Failed(value, Error::TooLarge { len, max })) => {
                    prop_assert!(std::ptr::eq(value, m));
                    prop_assert!(len > max);
                    prop_assert_eq!(postcard::to_stdvec(m).unwrap().len(), len);
                }
                Err(e) => prop_assert!(false, "{:?}", e),
            }
        }
        for m in sent {
            prop_assert_eq!(q.get().unwrap(), m);
        }
        prop_assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    }

    /// `Queue<Vec<u8>>` (the codec's byte-vector shortcut) round-trips any length that fits.
    #[test]
    fn byte_vectors_round_trip(v in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _leaks = common::leak_guard();
        let q = Queue::<Vec<u8>>::builder().capacity(2).max_message_size(600).build().unwrap();
        match q.put(&v) {
            Ok(()) => prop_assert_eq!(q.get().unwrap(), v),
            Err(e) => prop_assert!(v.len() > 590, "{:?}", e),
        }
    }
}

/// The case a proptest seed once found hanging: a slot scribbled back to "claimed, not yet
/// published" under the enqueue word's genuine record of its last claimer, a live producer.
/// A plain `get` on the closed queue in another process must not wait for that claimer for
/// as long as it lives (before the fix it did: the record and the stamp are genuine), but
/// report `Closed` after a bounded grace. In the producer's own thread it ends at once.
#[test]
fn a_stale_claim_record_of_a_live_producer_does_not_hold_a_closed_get() {
    let _leaks = common::leak_guard();
    let name = ipc_testkit::unique_name("stale-claim");
    let q = PodQueue::<u64>::create_named(&name, 4).unwrap();
    q.put(1).unwrap();
    // Slot 0's state (the first word after the control block, packed layout) back to
    // FREE(0): the message looks claimed by the enqueue word's record (this thread) and
    // unpublished.
    let raw = ipc_testkit::Hostile::open(&name);
    raw.write_at(HEADER + CONTROL, &0u64.to_le_bytes()).unwrap();
    q.close();

    // The record names a live producer in another process (this thread of the parent): the
    // child waits a bounded grace, then reports Closed.
    let child = fork(|| {
        let start = Instant::now();
        match q.get() {
            Err(ipc_queue::Error::Closed) if start.elapsed() < Duration::from_secs(10) + SLACK => 0,
            Err(ipc_queue::Error::Closed) => 5,
            _ => 6,
        }
    });
    assert_eq!(child.wait(WATCHDOG), Exit::Code(0));

    // The record names this very thread, which holds no claim: Closed at once.
    let start = Instant::now();
    assert!(matches!(q.get(), Err(ipc_queue::Error::Closed)));
    assert!(start.elapsed() < SLACK, "{:?}", start.elapsed());
    drop(raw);
    drop(q);
}
