//! Faults across processes: participants SIGKILLed at random points and between claim and
//! publish (the test hook), corrupted shared memory, layouts that do not match.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{consume, produce, Counters, Mode, Setup, TestQueue, WATCHDOG};
use ipc_failpoints::Action;
#[cfg(feature = "serde")]
use ipc_queue::Queue;
#[cfg(feature = "serde")]
use ipc_queue::TryGetError;
use ipc_queue::{Error, JoinTimeoutError, PodQueue, PutError, TryPutError};
use ipc_testkit::{Exit, Leaks};

/// A pseudo-random number in `lo..hi` (distinct per call).
fn random_in(lo: u64, hi: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom_fill(&mut b);
    lo + u64::from_le_bytes(b) % (hi - lo)
}

fn getrandom_fill(b: &mut [u8]) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    let mut x = t ^ (u64::from(std::process::id()) << 32) | 1;
    for byte in b {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
}

const PER: u64 = 40_000;

/// Two producers, a surviving consumer and a victim consumer killed at a random moment:
/// nothing is duplicated, the survivor drains everything else, and at most the victim's
/// in-flight messages (one inside `get`, one between `get` and recording it) are missing.
fn consumer_killed_at_random<Q: TestQueue>(mode: Mode) {
    for round in 0..3 {
        let s = Setup::<Q>::new(mode, 32);
        let c = Counters::new((2 * PER) as usize);
        let survivor = s.child(|q| consume(q, &c, PER, 2));
        let victim = s.child(|q| consume(q, &c, PER, 2));
        let prods: Vec<_> = (0..2)
            .map(|p| s.child(|q| produce(q, &c, p, PER)))
            .collect();
        // Kill at a random point of the stream.
        let at = random_in(1, 2 * PER - 100) * (round + 1) / 3;
        wait_until(|| c.word(0).load(Ordering::SeqCst) >= at);
        victim.kill();
        assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
        for p in prods {
            p.wait_success(WATCHDOG);
        }
        // A slot the victim held is reclaimed once someone is blocked by it or joins.
        let _ = s.q.join_timeout(Duration::from_millis(60));
        s.q.close();
        survivor.wait_success(WATCHDOG);
        let (missing, dups) = c.missing_and_dups(0..(2 * PER) as usize);
        assert!(dups.is_empty(), "duplicated: {dups:?}");
        assert!(missing.len() <= 2, "lost: {missing:?}");
        assert!(s.q.dropped() <= 1);
        assert!(missing.len() as u64 >= s.q.dropped());
    }
}

/// A producer killed at a random moment: consumers never hang on its slot; the other
/// producer's messages arrive exactly once, and the victim's up to its last completed put
/// exactly once (the one in flight at most once).
fn producer_killed_at_random<Q: TestQueue>(mode: Mode) {
    for round in 0..3 {
        let s = Setup::<Q>::new(mode, 32);
        let c = Counters::new((2 * PER) as usize);
        let cons: Vec<_> = (0..2)
            .map(|_| s.child(|q| consume(q, &c, PER, 2)))
            .collect();
        let victim = s.child(|q| produce(q, &c, 0, PER));
        let other = s.child(|q| produce(q, &c, 1, PER));
        let at = random_in(1, PER - 100) * (round + 1) / 3;
        wait_until(|| c.word(1).load(Ordering::SeqCst) >= at);
        victim.kill();
        // The victim may put its last messages before the signal lands (the queue is fast and
        // `wait_until` polls every 2 ms); then nothing was in flight and all must arrive once.
        match victim.wait(WATCHDOG) {
            Exit::Signal(libc::SIGKILL) | Exit::Code(0) => {}
            other => panic!("victim producer ended with {other:?}"),
        }
        other.wait_success(WATCHDOG);
        let acked = c.word(1).load(Ordering::SeqCst);
        // Give consumers time to take everything, including past the dead slot.
        wait_until(|| c.word(0).load(Ordering::SeqCst) >= PER + acked);
        s.q.close();
        for k in cons {
            k.wait_success(WATCHDOG);
        }
        check_producer_victim(&c, acked);
    }
}

fn check_producer_victim(c: &Counters, acked: u64) {
    let (missing, dups) = c.missing_and_dups(PER as usize..(2 * PER) as usize);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "other producer: {missing:?} {dups:?}"
    );
    for seq in 0..PER {
        let n = c.count(seq as usize);
        if seq < acked {
            assert_eq!(n, 1, "victim message {seq} (acked {acked})");
        } else if seq == acked {
            assert!(n <= 1, "victim in-flight message {seq}");
        } else {
            assert_eq!(n, 0, "victim message {seq} was never put");
        }
    }
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + WATCHDOG;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out waiting");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The hook kills a producer after it claimed a slot and before it published it: consumers
/// skip the slot (a tombstone) and every other message arrives exactly once.
fn producer_killed_between_claim_and_publish<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 16);
    let c = Counters::new((2 * PER) as usize);
    let cons: Vec<_> = (0..2)
        .map(|_| s.child(|q| consume(q, &c, PER, 2)))
        .collect();
    let victim = s.child(|q| {
        ipc_failpoints::arm("queue.put.claimed", 1000, Action::Kill).unwrap();
        produce(q, &c, 0, PER)
    });
    let other = s.child(|q| produce(q, &c, 1, PER));
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    other.wait_success(WATCHDOG);
    assert_eq!(c.word(1).load(Ordering::SeqCst), 999);
    wait_until(|| c.word(0).load(Ordering::SeqCst) >= PER + 999);
    s.q.close();
    for k in cons {
        k.wait_success(WATCHDOG);
    }
    check_producer_victim(&c, 999);
    // It died before writing: message 999 was never delivered.
    assert_eq!(c.count(999), 0);
    assert_eq!(s.q.dropped(), 0);
}

/// The hook kills a consumer after it claimed a slot and before it released it: producers
/// blocked by that slot reclaim it, the message is counted dropped, all others arrive once.
fn consumer_killed_between_claim_and_release<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 16);
    let c = Counters::new((2 * PER) as usize);
    let victim = s.child(|q| {
        ipc_failpoints::arm("queue.get.claimed", 500, Action::Kill).unwrap();
        consume(q, &c, PER, 2)
    });
    let survivor = s.child(|q| consume(q, &c, PER, 2));
    let prods: Vec<_> = (0..2)
        .map(|p| s.child(|q| produce(q, &c, p, PER)))
        .collect();
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    for p in prods {
        p.wait_success(WATCHDOG);
    }
    wait_until(|| c.word(0).load(Ordering::SeqCst) >= 2 * PER - 1);
    s.q.close();
    survivor.wait_success(WATCHDOG);
    let (missing, dups) = c.missing_and_dups(0..(2 * PER) as usize);
    assert!(dups.is_empty(), "{dups:?}");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(s.q.dropped(), 1);
}

/// `join` does not hang on a task that died with its consumer: it reports it.
fn join_reports_a_task_lost_with_its_consumer<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 16);
    for i in 0..10 {
        s.q.put(i).unwrap();
    }
    let victim = s.child(|q| {
        ipc_failpoints::arm("queue.get.claimed", 1, Action::Kill).unwrap();
        i32::from(q.get().is_ok())
    });
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let worker = s.child(|q| {
        for _ in 0..9 {
            if q.get().is_err() || q.task_done().is_err() {
                return 1;
            }
        }
        0
    });
    match s.q.join_timeout(WATCHDOG) {
        Err(JoinTimeoutError::PeerDied { dropped: 1 }) => {}
        other => panic!("{other:?}"),
    }
    worker.wait_success(WATCHDOG);
    assert_eq!(s.q.dropped(), 1);
}

macro_rules! fault_suite {
    ($name:ident, $ty:ty, $mode:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn consumer_killed_at_random() {
                let _leaks = common::leak_guard();
                super::consumer_killed_at_random::<$ty>($mode);
            }
            #[test]
            fn producer_killed_at_random() {
                let _leaks = common::leak_guard();
                super::producer_killed_at_random::<$ty>($mode);
            }
            #[test]
            fn producer_killed_between_claim_and_publish() {
                let _leaks = common::leak_guard();
                super::producer_killed_between_claim_and_publish::<$ty>($mode);
            }
            #[test]
            fn consumer_killed_between_claim_and_release() {
                let _leaks = common::leak_guard();
                super::consumer_killed_between_claim_and_release::<$ty>($mode);
            }
            #[test]
            fn join_reports_a_task_lost_with_its_consumer() {
                let _leaks = common::leak_guard();
                super::join_reports_a_task_lost_with_its_consumer::<$ty>($mode);
            }
        }
    };
}

fault_suite!(pod_inherited, PodQueue<u64>, Mode::Inherited);
fault_suite!(pod_named, PodQueue<u64>, Mode::Named);
#[cfg(feature = "serde")]
fault_suite!(serde_inherited, Queue<u64>, Mode::Inherited);
#[cfg(feature = "serde")]
fault_suite!(serde_named, Queue<u64>, Mode::Named);

/// Offsets into a named queue's segment (see `src/ring/layout.rs`): the header, then the
/// control block.
const HEADER: usize = 128;
#[cfg(feature = "serde")]
const CONTROL: usize = 512;

/// A `Queue<u64>` of capacity 4 with `max_message_size(max)`, whose slot `i`'s length word is
/// at `payload(i)`: a length past the slot is `Corrupted`, bytes that are not a `u64` are a
/// decode error, and the queue goes on after both.
#[cfg(feature = "serde")]
fn corrupted_slots_are_errors_and_the_queue_goes_on(
    tag: &str,
    max: usize,
    payload: impl Fn(usize) -> usize,
) {
    let leaks = Leaks::snapshot(&format!("ipct-{tag}-"));
    let name = ipc_testkit::unique_name(tag);
    let q = Queue::<u64>::builder()
        .capacity(4)
        .max_message_size(max)
        .create_named(&name)
        .unwrap();
    let raw = ipc_testkit::Hostile::open(&name);
    q.put(5u64).unwrap();
    // Slot 0's length word: far past the slot.
    raw.write_at(payload(0), &u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(q.get(), Err(Error::Corrupted(_))));
    q.put(6u64).unwrap();
    assert_eq!(q.get().unwrap(), 6);
    // Bytes that are not a u64 encoding: a decode error, message consumed.
    q.put(7u64).unwrap();
    raw.write_at(payload(2), &3u32.to_le_bytes()).unwrap();
    raw.write_at(payload(2) + 4, &[0xFF, 0xFF, 0xFF]).unwrap();
    assert!(matches!(q.get(), Err(Error::Decode(_))));
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    q.put(8u64).unwrap();
    assert_eq!(q.get().unwrap(), 8);
    drop(raw);
    drop(q);
    leaks.assert_no_new_shm();
}

#[cfg(feature = "serde")]
#[test]
fn corrupted_slots_in_the_packed_layout() {
    let _leaks = common::leak_guard();
    // `max_message_size(16)`: 4-byte length word + 16 = 24-byte slots, packed: four word
    // arrays (states, writer stamps, reader stamps, retire records) of 16 words each, then the payloads.
    corrupted_slots_are_errors_and_the_queue_goes_on("corrupt", 16, |i| {
        HEADER + CONTROL + 4 * 16 * 8 + i * 24
    });
}

#[cfg(feature = "serde")]
#[test]
fn corrupted_slots_in_the_inline_layout() {
    let _leaks = common::leak_guard();
    // `max_message_size(64)`: 68 -> 72-byte slots, above the packed layout's limit: each slot
    // is its state, stamp and record words (32 bytes) followed by its payload, 104-byte records.
    corrupted_slots_are_errors_and_the_queue_goes_on("corrupti", 64, |i| {
        HEADER + CONTROL + i * (32 + 72) + 32
    });
}

#[test]
fn corrupted_positions_and_states_are_errors_never_panics_or_hangs() {
    let _leaks = common::leak_guard();
    let name = ipc_testkit::unique_name("garbage");
    let q = PodQueue::<u64>::create_named(&name, 4).unwrap();
    let raw = ipc_testkit::Hostile::open(&name);
    // The enqueue position points at index 5 of a 4-slot ring.
    raw.write_at(HEADER, &(5u64 << 24).to_le_bytes()).unwrap();
    assert!(matches!(
        q.try_put(1u64),
        Err(TryPutError::Failed(1, Error::Corrupted(_)))
    ));
    assert!(matches!(
        q.put(1u64),
        Err(PutError::Failed(1, Error::Corrupted(_)))
    ));
    // Arbitrary bytes everywhere after the header: every call returns, none panics.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let len = raw.len();
    for _ in 0..300 {
        let mut junk = vec![0u8; len - HEADER];
        for b in junk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = if x % 3 == 0 { 0 } else { x as u8 };
        }
        raw.write_at(HEADER, &junk).unwrap();
        let _ = q.try_put(1u64);
        let _ = q.try_get();
        let _ = q.put_timeout(2u64, Duration::from_millis(1));
        let _ = q.get_timeout(Duration::from_millis(1));
        let _ = q.len();
        let _ = q.task_done();
        let _ = q.join_timeout(Duration::from_millis(1));
    }
}

#[test]
fn opening_with_another_layout_is_an_error() {
    let _leaks = common::leak_guard();
    let leaks = Leaks::snapshot("ipct-layout-");
    let name = ipc_testkit::unique_name("layout");
    let _q = PodQueue::<u64>::create_named(&name, 8).unwrap();
    let mismatch = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::Shm(ipc_shm::Error::LayoutMismatch { .. }))),
            "{r:?}"
        )
    };
    mismatch(PodQueue::<u32>::open_named(&name).map(drop));
    mismatch(PodQueue::<i64>::open_named(&name).map(drop));
    #[cfg(feature = "serde")]
    mismatch(Queue::<u64>::open_named(&name).map(drop));
    mismatch(
        PodQueue::<u64>::builder()
            .capacity(16)
            .open_named(&name)
            .map(drop),
    );
    let ok = PodQueue::<u64>::builder()
        .capacity(8)
        .open_named(&name)
        .unwrap();
    assert_eq!(ok.capacity(), 8);
    assert_eq!(PodQueue::<u64>::open_named(&name).unwrap().capacity(), 8);

    #[cfg(feature = "serde")]
    let _s = {
        let name2 = ipc_testkit::unique_name("layout");
        let s = Queue::<String>::builder()
            .capacity(8)
            .max_message_size(16)
            .create_named(&name2)
            .unwrap();
        mismatch(
            Queue::<String>::builder()
                .capacity(8)
                .max_message_size(64)
                .open_named(&name2)
                .map(drop),
        );
        mismatch(Queue::<Vec<u8>>::open_named(&name2).map(drop));
        assert_eq!(
            Queue::<String>::open_named(&name2)
                .unwrap()
                .max_message_size(),
            20
        );
        s
    };
    // The same name cannot be created twice.
    assert!(matches!(
        PodQueue::<u64>::create_named(&name, 8),
        Err(Error::Shm(ipc_shm::Error::AlreadyExists(_)))
    ));
    drop((_q, ok));
    #[cfg(feature = "serde")]
    drop(_s);
    leaks.assert_no_new_shm();
}

#[cfg(feature = "serde")]
#[test]
fn too_large_hands_the_value_back_and_the_queue_goes_on() {
    let _leaks = common::leak_guard();
    let q = Queue::<Vec<u8>>::builder()
        .capacity(2)
        .max_message_size(64)
        .build()
        .unwrap();
    let big = vec![7u8; 100];
    match q.put(&big) {
        Err(PutError::Failed(value, Error::TooLarge { len, max })) => {
            assert!(std::ptr::eq(value, &big));
            assert_eq!((len, max), (101, 68));
        }
        other => panic!("{other:?}"),
    }
    // Also on a full queue, at once.
    q.put(vec![1u8; 60]).unwrap();
    q.put(vec![2u8; 60]).unwrap();
    assert!(matches!(
        q.put_timeout(big.clone(), Duration::from_secs(60)),
        Err(ipc_queue::PutTimeoutError::Failed(
            _,
            Error::TooLarge { .. }
        ))
    ));
    assert_eq!(q.get().unwrap(), vec![1u8; 60]);
    assert_eq!(q.get().unwrap(), vec![2u8; 60]);
    let e: Error = q.try_put(&big).unwrap_err().into();
    assert!(matches!(e, Error::TooLarge { len: 101, max: 68 }));
    assert_eq!(common::encode(1, 2), (1 << 32) | 2);
}

#[cfg(feature = "serde")]
#[test]
fn corrupted_byte_vectors_are_errors_and_the_queue_goes_on() {
    let _leaks = common::leak_guard();
    // `Queue<Vec<u8>>` reads its messages without serde (see `codec.rs`); its varint length
    // is as untrusted as the length word. `max_message_size(64)`: the inline layout, as in
    // `corrupted_slots_in_the_inline_layout`.
    let leaks = Leaks::snapshot("ipct-corruptv-");
    let name = ipc_testkit::unique_name("corruptv");
    let q = Queue::<Vec<u8>>::builder()
        .capacity(4)
        .max_message_size(64)
        .create_named(&name)
        .unwrap();
    let raw = ipc_testkit::Hostile::open(&name);
    let payload = |i: usize| HEADER + CONTROL + i * (32 + 72) + 32;
    // The varint claims 200 bytes; the message holds 2 + 3.
    q.put(vec![1u8, 2, 3]).unwrap();
    raw.write_at(payload(0), &5u32.to_le_bytes()).unwrap();
    raw.write_at(payload(0) + 4, &[0xC8, 0x01]).unwrap();
    assert!(matches!(q.get(), Err(Error::Decode(_))));
    // A varint cut short by the length word.
    q.put(vec![4u8; 10]).unwrap();
    raw.write_at(payload(1), &1u32.to_le_bytes()).unwrap();
    raw.write_at(payload(1) + 4, &[0x80]).unwrap();
    assert!(matches!(q.get(), Err(Error::Decode(_))));
    // A length word past the slot.
    q.put(vec![5u8; 10]).unwrap();
    raw.write_at(payload(2), &1000u32.to_le_bytes()).unwrap();
    assert!(matches!(q.get(), Err(Error::Corrupted(_))));
    // A shorter vector than the message: the rest is ignored, as postcard ignores it.
    q.put(vec![6u8; 10]).unwrap();
    raw.write_at(payload(3) + 4, &[2]).unwrap();
    assert_eq!(q.get().unwrap(), vec![6u8; 2]);
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    q.put(vec![7u8; 60]).unwrap();
    assert_eq!(q.get().unwrap(), vec![7u8; 60]);
    drop(raw);
    drop(q);
    leaks.assert_no_new_shm();
}
