//! The workspace's call convention (ARCHITECTURE.md, "Conventions"), checked across
//! processes for both queue types and both sharing modes: every `try_` and `_timeout` form and
//! the blocking form, matched on their error values. Another process makes the state each
//! call meets (fills, closes, leaves empty), so the errors describe shared state, not a
//! handle's own. Put errors hand back the very value passed; `_timeout` forms wait at least
//! their time; every per-operation error converts into `Error` and has its predicates.

mod common;

use std::time::{Duration, Instant};

use common::{Mode, Setup, TestQueue, WATCHDOG};
#[cfg(feature = "serde")]
use ipc_queue::Queue;
use ipc_queue::{
    Error, GetTimeoutError, JoinTimeoutError, PodQueue, PutError, PutTimeoutError, TryGetError,
    TryPutError,
};

/// The value each put tries; it must come back unchanged.
const V: u64 = 0xDEAD_BEEF_0042;
const SHORT: Duration = Duration::from_millis(40);

/// Child exit code: 0 if `ok`, else `code`.
fn check(ok: bool, code: i32) -> Result<(), i32> {
    if ok {
        Ok(())
    } else {
        Err(code)
    }
}

fn exit(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(0)
}

/// An empty, open queue made by the parent: in a child, `try_get` is `Empty` at once and
/// `get_timeout` is `Timeout` after at least its time; both convert into the crate's `Error`.
fn empty<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 2);
    s.child(|q| {
        exit((|| {
            let e = q.try_get().err().ok_or(1)?;
            check(matches!(e, TryGetError::Empty), 2)?;
            check(e.is_empty() && !e.is_closed(), 3)?;
            check(e.to_string() == "queue is empty", 4)?;
            check(matches!(Error::from(e), Error::Empty), 5)?;
            let t = Instant::now();
            let e = q.get_timeout(SHORT).err().ok_or(6)?;
            check(t.elapsed() >= SHORT, 7)?;
            check(matches!(e, GetTimeoutError::Timeout), 8)?;
            check(e.is_timeout() && !e.is_closed(), 9)?;
            check(e.to_string() == "timed out", 10)?;
            check(matches!(Error::from(e), Error::Timeout), 11)
        })())
    })
    .wait_success(WATCHDOG);
    // The parent's view is the same, and nothing was changed by the failed calls.
    assert!(matches!(s.q.try_get(), Err(TryGetError::Empty)));
    assert_eq!(s.q.len(), 0);
}

/// A queue filled by a child: `try_put` is `Full(v)` and `put_timeout` is `Timeout(v)` after
/// at least its time, each handing back the value passed; nothing was put.
fn full<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 2);
    s.child(|q| exit(check(q.put(1).is_ok() && q.put(2).is_ok(), 1)))
        .wait_success(WATCHDOG);
    let e = s.q.try_put(V).unwrap_err();
    assert!(matches!(e, TryPutError::Full(V)), "{e:?}");
    assert!(e.is_full() && !e.is_closed());
    assert_eq!(e.to_string(), "queue is full");
    assert!(matches!(Error::from(e), Error::Full));
    assert_eq!(s.q.try_put(V).unwrap_err().into_inner(), V);

    let t = Instant::now();
    let e = s.q.put_timeout(V, SHORT).unwrap_err();
    assert!(t.elapsed() >= SHORT);
    assert!(matches!(e, PutTimeoutError::Timeout(V)), "{e:?}");
    assert!(e.is_timeout() && !e.is_closed());
    assert_eq!(e.to_string(), "timed out");
    assert!(matches!(e.into_error(), Error::Timeout));

    assert_eq!(s.q.len(), 2);
    assert_eq!(s.q.get().unwrap(), 1);
    assert_eq!(s.q.get().unwrap(), 2);
}

/// A queue closed by a child while holding one message: every put form is `Closed(v)` with
/// the value; the gets drain the message, then every get form is `Closed` (the blocking
/// `get`: `Error::Closed`).
fn closed<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 4);
    s.q.put(1).unwrap();
    s.child(|q| {
        q.close();
        0
    })
    .wait_success(WATCHDOG);

    let e = s.q.try_put(V).unwrap_err();
    assert!(matches!(e, TryPutError::Closed(V)), "{e:?}");
    assert!(e.is_closed() && !e.is_full());
    assert!(matches!(Error::from(e), Error::Closed));
    let e = s.q.put_timeout(V, WATCHDOG).unwrap_err();
    assert!(matches!(e, PutTimeoutError::Closed(V)), "{e:?}");
    assert!(e.is_closed() && !e.is_timeout());
    let e = s.q.put(V).unwrap_err();
    assert!(matches!(e, PutError::Closed(V)), "{e:?}");
    assert!(e.is_closed());
    assert_eq!(e.to_string(), "queue is closed");
    assert_eq!(e.into_inner(), V);

    // Closed but not drained: the message is still handed out.
    assert_eq!(s.q.try_get().unwrap(), 1);
    let e = s.q.try_get().unwrap_err();
    assert!(matches!(e, TryGetError::Closed) && e.is_closed() && !e.is_empty());
    assert_eq!(e.to_string(), "queue is closed");
    assert!(matches!(Error::from(e), Error::Closed));
    let e = s.q.get_timeout(WATCHDOG).unwrap_err();
    assert!(matches!(e, GetTimeoutError::Closed) && e.is_closed() && !e.is_timeout());
    assert!(matches!(Error::from(e), Error::Closed));
    assert!(matches!(s.q.get(), Err(Error::Closed)));
}

/// A get blocked in one process and a put blocked on a full queue in another both wake with
/// `Closed` when a third closes the queue.
fn close_wakes_timed_calls<Q: TestQueue>(mode: Mode) {
    let empty = Setup::<Q>::new(mode, 1);
    let full = Setup::<Q>::new(mode, 1);
    full.q.put(1).unwrap();
    let getter = empty.child(|q| match q.get_timeout(WATCHDOG) {
        Err(GetTimeoutError::Closed) => 0,
        _ => 1,
    });
    let putter = full.child(|q| match q.put_timeout(V, WATCHDOG) {
        Err(PutTimeoutError::Closed(V)) => 0,
        _ => 1,
    });
    std::thread::sleep(Duration::from_millis(50));
    empty
        .child(|q| {
            q.close();
            0
        })
        .wait_success(WATCHDOG);
    full.child(|q| {
        q.close();
        0
    })
    .wait_success(WATCHDOG);
    getter.wait_success(WATCHDOG);
    putter.wait_success(WATCHDOG);
}

/// `join_timeout`: `Timeout` after at least its time while a task is open; `Ok` once a child
/// has marked it done; `join` alike.
fn join<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 4);
    s.q.put(1).unwrap();
    let t = Instant::now();
    let e = s.q.join_timeout(SHORT).unwrap_err();
    assert!(t.elapsed() >= SHORT);
    assert!(matches!(e, JoinTimeoutError::Timeout) && e.is_timeout());
    assert_eq!(e.to_string(), "timed out");
    assert!(matches!(Error::from(e), Error::Timeout));
    s.child(|q| exit(check(q.get().is_ok() && q.task_done().is_ok(), 1)))
        .wait_success(WATCHDOG);
    s.q.join_timeout(WATCHDOG).unwrap();
}

/// A consumer killed holding a task: `join_timeout` returns `PeerDied { dropped: 1 }` (not
/// `Timeout`), which converts into `Error::PeerDied`.
fn join_peer_died<Q: TestQueue>(mode: Mode) {
    let s = Setup::<Q>::new(mode, 4);
    s.q.put(1).unwrap();
    let victim = s.child(|q| {
        ipc_failpoints::arm("queue.get.claimed", 1, ipc_failpoints::Action::Kill).unwrap();
        i32::from(q.get().is_ok())
    });
    assert_eq!(
        victim.wait(WATCHDOG),
        ipc_testkit::Exit::Signal(libc::SIGKILL)
    );
    let e = s.q.join_timeout(WATCHDOG).unwrap_err();
    assert!(
        matches!(e, JoinTimeoutError::PeerDied { dropped: 1 }),
        "{e:?}"
    );
    assert!(!e.is_timeout());
    assert!(matches!(Error::from(e), Error::PeerDied { dropped: 1 }));
}

macro_rules! conventions {
    ($name:ident, $ty:ty, $mode:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn empty() {
                let _leaks = common::leak_guard();
                super::empty::<$ty>($mode);
            }
            #[test]
            fn full() {
                let _leaks = common::leak_guard();
                super::full::<$ty>($mode);
            }
            #[test]
            fn closed() {
                let _leaks = common::leak_guard();
                super::closed::<$ty>($mode);
            }
            #[test]
            fn close_wakes_timed_calls() {
                let _leaks = common::leak_guard();
                super::close_wakes_timed_calls::<$ty>($mode);
            }
            #[test]
            fn join() {
                let _leaks = common::leak_guard();
                super::join::<$ty>($mode);
            }
            #[test]
            fn join_peer_died() {
                let _leaks = common::leak_guard();
                super::join_peer_died::<$ty>($mode);
            }
        }
    };
}

conventions!(pod_inherited, PodQueue<u64>, Mode::Inherited);
conventions!(pod_named, PodQueue<u64>, Mode::Named);
#[cfg(feature = "serde")]
conventions!(serde_inherited, Queue<u64>, Mode::Inherited);
#[cfg(feature = "serde")]
conventions!(serde_named, Queue<u64>, Mode::Named);

/// Offsets into a named queue's segment (see `src/ring/layout.rs` and `tests/faults.rs`).
const HEADER: usize = 128;

/// Shared state no correct peer writes, made by another process: every form reports it as
/// `Failed`, the put forms with the value.
#[test]
fn corrupted_state_is_failed_with_the_value() {
    let _leaks = common::leak_guard();
    let name = ipc_testkit::unique_name(&common::q_tag());
    let q = PodQueue::<u64>::create_named(&name, 4).unwrap();
    ipc_testkit::fork(|| {
        let raw = ipc_testkit::Hostile::open(&name);
        // The enqueue position points at index 5 of a 4-slot ring.
        i32::from(raw.write_at(HEADER, &(5u64 << 24).to_le_bytes()).is_err())
    })
    .wait_success(WATCHDOG);
    let e = q.try_put(V).unwrap_err();
    assert!(
        matches!(e, TryPutError::Failed(V, Error::Corrupted(_))),
        "{e:?}"
    );
    assert!(!e.is_full() && !e.is_closed());
    assert!(matches!(e.into_error(), Error::Corrupted(_)));
    assert!(matches!(
        q.put_timeout(V, SHORT),
        Err(PutTimeoutError::Failed(V, Error::Corrupted(_)))
    ));
    assert!(matches!(
        q.put(V),
        Err(PutError::Failed(V, Error::Corrupted(_)))
    ));
}

/// A `Queue` slot whose length word another process corrupted: `try_get` and `get_timeout`
/// are `Failed(Corrupted)` (the message is consumed), then `Empty` / `Timeout` again.
#[cfg(feature = "serde")]
#[test]
fn corrupted_message_is_failed_then_the_queue_goes_on() {
    const CONTROL: usize = 512;
    let _leaks = common::leak_guard();
    let name = ipc_testkit::unique_name(&common::q_tag());
    // `max_message_size(16)`: 24-byte slots in the packed layout (see `tests/faults.rs`).
    let q = Queue::<u64>::builder()
        .capacity(4)
        .max_message_size(16)
        .create_named(&name)
        .unwrap();
    let payload = |i: usize| HEADER + CONTROL + 4 * 16 * 8 + i * 24;
    q.put(5u64).unwrap();
    q.put(6u64).unwrap();
    ipc_testkit::fork(|| {
        let raw = ipc_testkit::Hostile::open(&name);
        let bad = u32::MAX.to_le_bytes();
        i32::from(
            raw.write_at(payload(0), &bad).is_err() || raw.write_at(payload(1), &bad).is_err(),
        )
    })
    .wait_success(WATCHDOG);
    let e = q.try_get().unwrap_err();
    assert!(
        matches!(e, TryGetError::Failed(Error::Corrupted(_))),
        "{e:?}"
    );
    assert!(!e.is_empty() && !e.is_closed());
    let e = q.get_timeout(SHORT).unwrap_err();
    assert!(
        matches!(e, GetTimeoutError::Failed(Error::Corrupted(_))),
        "{e:?}"
    );
    assert!(matches!(Error::from(e), Error::Corrupted(_)));
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    assert!(matches!(
        q.get_timeout(SHORT),
        Err(GetTimeoutError::Timeout)
    ));
}

/// A message too large for a slot is `Failed(value, TooLarge)` in every put form, at once
/// even for the blocking `put` on a full queue; the very value passed comes back.
#[cfg(feature = "serde")]
#[test]
fn too_large_is_failed_with_the_value() {
    let _leaks = common::leak_guard();
    let q = Queue::<String>::builder()
        .capacity(1)
        .max_message_size(16)
        .build()
        .unwrap();
    q.put("fills it".to_string()).unwrap();
    let big = "x".repeat(100);
    match q.try_put(&big) {
        Err(TryPutError::Failed(v, Error::TooLarge { len, max })) => {
            assert!(std::ptr::eq(v, &big));
            assert!(len > max);
        }
        other => panic!("{other:?}"),
    }
    match q.put_timeout(&big, WATCHDOG) {
        Err(PutTimeoutError::Failed(v, Error::TooLarge { .. })) => assert!(std::ptr::eq(v, &big)),
        other => panic!("{other:?}"),
    }
    let e = q.put(big.clone()).unwrap_err();
    assert!(matches!(e, PutError::Failed(_, Error::TooLarge { .. })));
    assert!(!e.is_closed());
    assert_eq!(e.into_inner(), big);
}

/// Per-operation errors print and debug without requiring `T: Debug`.
#[test]
fn put_errors_debug_without_t_debug() {
    struct Opaque;
    assert_eq!(format!("{:?}", TryPutError::Full(Opaque)), "Full(..)");
    assert_eq!(
        format!("{:?}", PutTimeoutError::Timeout(Opaque)),
        "Timeout(..)"
    );
    assert_eq!(format!("{:?}", PutError::Closed(Opaque)), "Closed(..)");
    let e = PutError::Failed(Opaque, Error::Corrupted("x"));
    assert!(format!("{e:?}").starts_with("Failed"));
    assert_eq!(e.to_string(), "shared queue state is corrupted: x");
}
