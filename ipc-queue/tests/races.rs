//! Regression tests for races and accounting defects (issue 13): a put racing `close`, a
//! panicking `Serialize`, a kill between a tombstone or reclaim and its `join` accounting, and
//! a dead claimer whose thread id the caller now has.

mod common;

#[cfg(feature = "serde")]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

#[cfg(feature = "serde")]
use common::{bomb_queue, Bomb, Mode2};
use common::{Mode, Setup, TestQueue, WATCHDOG};
use ipc_failpoints::Action;
#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{GetTimeoutError, JoinTimeoutError, PodQueue, PutError, TryGetError};
use ipc_shm::lowlevel::sync::OwnerStamp;
use ipc_testkit::{Exit, Leaks};

/// Waits until process `pid` is stopped (`T` in `/proc/<pid>/stat`).
fn wait_stopped(pid: i32) {
    let end = Instant::now() + WATCHDOG;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("T") || state == Some("t") {
            return;
        }
        assert!(Instant::now() < end, "process {pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A producer stopped between its claim and its publication (`queue.put.claimed`, Stop), the
/// queue closed, a consumer waiting, the producer continued: either its message is delivered
/// (put `Ok`, get the value), or the put fails with `Closed` and gets the value back and the
/// get reports `Closed`. Never an `Ok` put whose message nobody gets.
fn put_racing_close<Q: TestQueue>() {
    let s = Setup::<Q>::new(Mode::Inherited, 4);
    let producer = s.child(|q| {
        ipc_failpoints::arm("queue.put.claimed", 1, Action::Stop).unwrap();
        match q.put(7) {
            Ok(()) => 0,
            Err(PutError::Closed(7)) => 10,
            Err(_) => 3,
        }
    });
    wait_stopped(producer.pid());
    s.q.close();
    let consumer = s.child(|q| match q.get_timeout(Duration::from_secs(5)) {
        Ok(7) => 0,
        Ok(_) => 4,
        Err(GetTimeoutError::Closed) => 20,
        Err(GetTimeoutError::Timeout) => 21,
        Err(_) => 3,
    });
    // Let the consumer see the closed flag and the claimed slot first.
    std::thread::sleep(Duration::from_millis(100));
    producer.signal(libc::SIGCONT);
    let p = producer.wait(WATCHDOG);
    let c = consumer.wait(WATCHDOG);
    assert!(
        (p, c) == (Exit::Code(0), Exit::Code(0)) || (p, c) == (Exit::Code(10), Exit::Code(20)),
        "producer {p:?} consumer {c:?} (0/0: delivered, 10/20: refused; 0/20 loses an acked put)"
    );
    assert!(matches!(s.q.try_get(), Err(TryGetError::Closed)));
}

#[test]
fn put_racing_close_pod() {
    let _leaks = common::leak_guard();
    put_racing_close::<PodQueue<u64>>();
}

#[cfg(feature = "serde")]
#[test]
fn put_racing_close_serde() {
    let _leaks = common::leak_guard();
    put_racing_close::<Queue<u64>>();
}

/// A `Serialize` that panics while writing its claimed slot (in a thread that lives on, as a
/// pool worker's catch_unwind would) leaves a tombstone: the panic reaches the caller, later
/// gets skip the slot, and `join` does not wait for it.
#[cfg(feature = "serde")]
#[test]
fn panicking_serialize_leaves_a_tombstone() {
    let _leaks = common::leak_guard();
    let q = bomb_queue();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (panicked_tx, panicked_rx) = std::sync::mpsc::channel::<bool>();
    std::thread::scope(|sc| {
        let q = &q;
        sc.spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| q.put(Bomb::new(1, Mode2::Panic))));
            panicked_tx.send(r.is_err()).unwrap();
            // Stay alive: a live thread's claim is never reclaimed.
            let _ = done_rx.recv();
        });
        assert!(panicked_rx.recv().unwrap(), "the panic reaches the caller");
        q.put(Bomb::new(5, Mode2::Ok)).unwrap();
        let got = q.get_timeout(Duration::from_secs(2));
        done_tx.send(()).unwrap();
        assert_eq!(got.map(|b| b.value).unwrap(), 5);
    });
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(2)).unwrap();
}

/// A producer whose write fails is killed after publishing its tombstone and before the
/// tombstone is counted for `join` (`queue.publish.before_retire`): `join` still returns once
/// the rest is done.
#[cfg(feature = "serde")]
#[test]
fn kill_between_tombstone_and_retire_does_not_hang_join() {
    let _leaks = common::leak_guard();
    let q = bomb_queue();
    let victim = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.publish.before_retire", 1, Action::Kill).unwrap();
        i32::from(q.put(Bomb::new(1, Mode2::Fail)).is_ok())
    });
    assert_eq!(victim.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    q.put(Bomb::new(5, Mode2::Ok)).unwrap();
    assert_eq!(q.get().unwrap().value, 5);
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(2)).unwrap();
    assert!(matches!(
        q.task_done(),
        Err(ipc_queue::Error::TaskDoneTooManyTimes)
    ));
}

/// A consumer that reclaims a dead producer's slot is killed after its CAS and before the
/// tombstone is counted (`queue.reclaim.before_retire`): `join` still returns.
#[test]
fn kill_between_reclaim_and_retire_does_not_hang_join() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u64>::new(4).unwrap();
    let writer = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.put.claimed", 1, Action::Kill).unwrap();
        i32::from(q.put(1).is_ok())
    });
    assert_eq!(writer.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let reclaimer = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.reclaim.before_retire", 1, Action::Kill).unwrap();
        i32::from(q.get_timeout(Duration::from_secs(5)).is_ok())
    });
    assert_eq!(reclaimer.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    q.put(5).unwrap();
    assert_eq!(q.get().unwrap(), 5);
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(2)).unwrap();
}

/// A producer that reclaims a dead consumer's slot is killed after taking the claim over
/// and before recording the lost message (`queue.reclaim.before_retire`): `join` re-does the
/// reclaim and reports the message lost with its consumer, and the queue goes on.
#[test]
fn kill_between_reader_reclaim_and_retire_does_not_hang_join() {
    let _leaks = common::leak_guard();
    let q = PodQueue::<u64>::new(1).unwrap();
    q.put(1).unwrap();
    let reader = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.get.claimed", 1, Action::Kill).unwrap();
        i32::from(q.get().is_ok())
    });
    assert_eq!(reader.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let reclaimer = ipc_testkit::fork(|| {
        ipc_failpoints::arm("queue.reclaim.before_retire", 1, Action::Kill).unwrap();
        i32::from(q.put_timeout(2, Duration::from_secs(5)).is_ok())
    });
    assert_eq!(reclaimer.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    match q.join_timeout(Duration::from_secs(5)) {
        Err(JoinTimeoutError::PeerDied { dropped: 1 }) => {}
        other => panic!("{other:?}"),
    }
    q.put(5).unwrap();
    assert_eq!(q.get().unwrap(), 5);
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(q.dropped(), 1);
}

/// Offsets in a named `PodQueue<u64>` of capacity 4 (see `src/ring/layout.rs`): header,
/// control block, then the packed arrays of 16 words each.
const HEADER: usize = 128;
const ENQ: usize = HEADER;
const WRITER_STAMPS: usize = HEADER + 512 + 16 * 8;

/// A claim at position 0 recorded in the enqueue word with the caller's own thread id, by a
/// thread that is gone (`stamp`: its stamp word): the caller's next put must not take the
/// record for its own, and a get must skip the dead claim.
fn dead_claim_with_my_thread_id(stamp: u64, tag: &str) {
    let leaks = Leaks::snapshot(&format!("ipct-{tag}-"));
    let name = ipc_testkit::unique_name(tag);
    let q = PodQueue::<u64>::create_named(&name, 4).unwrap();
    let raw = ipc_testkit::Hostile::open(&name);
    let tid = u64::from(OwnerStamp::current().thread_id()) & ((1 << 22) - 1);
    // enq = position 1, claimed by `tid`; slot 0 still FREE(0); its writer stamp `stamp`.
    raw.write_at(ENQ, &((1u64 << 24) | tid).to_le_bytes())
        .unwrap();
    raw.write_at(WRITER_STAMPS, &stamp.to_le_bytes()).unwrap();
    q.put(8).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(2)).unwrap(), 8);
    drop(raw);
    drop(q);
    leaks.assert_no_new_shm();
}

#[test]
fn dead_claim_with_my_thread_id_and_another_start_time() {
    let _leaks = common::leak_guard();
    let me = OwnerStamp::current().to_bits();
    dead_claim_with_my_thread_id(me ^ (1 << 32), "tidreuse");
}

#[test]
fn dead_claim_with_my_full_stamp() {
    let _leaks = common::leak_guard();
    dead_claim_with_my_thread_id(OwnerStamp::current().to_bits(), "tidsame");
}
