//! Handle passing: locks, semaphores, events, conditions and barriers sent as descriptors
//! (`SCM_RIGHTS`, through `ipc_pipe`) to a process that did not inherit them, rebuilt there
//! with `from_fd`, and refused when the descriptor is not what it claims to be.
//!
//! Each cross-process test forks its peer *before* the objects exist, so the peer can reach
//! them only through the descriptors it receives.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use common::{fork, leak_guard, unique_name, Child, WATCHDOG};
use ipc_pipe::Connection;
use ipc_sem::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, RLock, Semaphore, TryLockError,
};

/// Forks a peer that shares nothing with the parent but one end of a fresh connection (the
/// parent's copy of that end is closed when `fork` drops the closure).
fn peer(f: impl FnOnce(Connection) -> i32) -> (Connection, Child) {
    let (here, there) = ipc_pipe::duplex().unwrap();
    let child = fork(move || f(there));
    (here, child)
}

fn code(ok: bool) -> i32 {
    i32::from(!ok)
}

/// The descriptors of the next `send_fds` message, exactly `N` of them.
fn recv_n<const N: usize>(conn: &mut Connection) -> Option<[OwnedFd; N]> {
    <[OwnedFd; N]>::try_from(conn.recv_fds().ok()?).ok()
}

#[test]
fn a_lock_held_by_the_receiver_blocks_the_sender() {
    let _leaks = leak_guard();
    let (mut conn, child) = peer(|mut conn| {
        let Some([fd]) = recv_n::<1>(&mut conn) else {
            return 2;
        };
        let Ok(lock) = Lock::from_fd(fd) else {
            return 3;
        };
        let Ok(guard) = lock.lock() else { return 4 };
        // Hold it until the parent has seen it held.
        let ok = conn.send_bytes(b"held").is_ok() && conn.recv_bytes().is_ok();
        drop(guard);
        code(ok)
    });
    let lock = Lock::new().unwrap();
    conn.send_fds(&[lock.as_fd()]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"held");
    assert!(lock.is_locked());
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    conn.send_bytes(b"release").unwrap();
    child.wait_success(WATCHDOG);
    assert!(lock.try_lock().is_ok());
}

#[test]
fn semaphore_units_pass_both_ways() {
    let _leaks = leak_guard();
    let (mut conn, child) = peer(|mut conn| {
        let Some([a, b]) = recv_n::<2>(&mut conn) else {
            return 2;
        };
        let (Ok(sem), Ok(bounded)) = (Semaphore::from_fd(a), BoundedSemaphore::from_fd(b)) else {
            return 3;
        };
        // One unit to the parent, then (once it says it gave one back) take that one.
        let ok = sem.release().is_ok()
            && conn.recv_bytes().is_ok_and(|m| m == b"back")
            && sem.acquire_timeout(WATCHDOG).is_ok()
            && bounded.bound() == 2
            && bounded.acquire_timeout(WATCHDOG).is_ok()
            && bounded.release().is_ok()
            && matches!(bounded.release(), Err(Error::ReleasedTooManyTimes));
        code(ok)
    });
    let sem = Semaphore::new(0).unwrap();
    let bounded = BoundedSemaphore::new(2).unwrap();
    conn.send_fds(&[sem.as_fd(), bounded.as_fd()]).unwrap();
    assert!(
        sem.acquire_timeout(WATCHDOG).is_ok(),
        "the child's unit never came"
    );
    sem.release().unwrap();
    conn.send_bytes(b"back").unwrap();
    child.wait_success(WATCHDOG);
    assert_eq!(sem.value(), 0);
    assert_eq!(bounded.value(), 2);
}

#[test]
fn event_condition_rlock_and_barrier_travel_in_one_message() {
    let _leaks = leak_guard();
    let (mut conn, child) = peer(|mut conn| {
        let Some([e, c, r, b]) = recv_n::<4>(&mut conn) else {
            return 2;
        };
        let (Ok(event), Ok(cond), Ok(rlock), Ok(barrier)) = (
            Event::from_fd(e),
            Condition::from_fd(c),
            RLock::from_fd(r),
            Barrier::from_fd(b),
        ) else {
            return 3;
        };
        let ok = barrier.parties() == 2 && barrier.wait_timeout(WATCHDOG).is_ok();
        // The parent waits on the condition; notify until it has woken (it acknowledges by
        // setting the event).
        let mut woke = false;
        for _ in 0..2000 {
            cond.notify_all();
            if !event.wait_timeout(Duration::from_millis(10)).timed_out() {
                woke = true;
                break;
            }
        }
        let nested = match rlock.lock() {
            Ok(g1) => {
                let ok = rlock.lock().is_ok_and(|_g2| rlock.depth() == 2);
                drop(g1);
                ok
            }
            Err(_) => false,
        };
        code(ok && woke && nested)
    });
    let event = Event::new().unwrap();
    let cond = Condition::new().unwrap();
    let rlock = RLock::new().unwrap();
    let barrier = Barrier::new(2).unwrap();
    conn.send_fds(&[event.as_fd(), cond.as_fd(), rlock.as_fd(), barrier.as_fd()])
        .unwrap();
    let guard = cond.lock().unwrap();
    // Holding the condition's lock before the barrier: the child's first notify finds this
    // process registered or not yet waiting, and it notifies again until acknowledged.
    assert!(barrier.wait_timeout(WATCHDOG).is_ok());
    let (guard, _) = cond.wait_timeout(guard, WATCHDOG).unwrap();
    drop(guard);
    event.set();
    child.wait_success(WATCHDOG);
    assert!(!rlock.is_locked());
}

fn is_mismatch<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    match r {
        Err(e) => e.is_layout_mismatch(),
        Ok(v) => panic!("expected LayoutMismatch, opened {v:?}"),
    }
}

fn dup(fd: &impl AsFd) -> OwnedFd {
    fd.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_descriptor_opened_as_another_kind_is_a_layout_mismatch() {
    let _leaks = leak_guard();
    let value = ipc_sem::ipc_shm::Value::new(1u64).unwrap();
    let lock = Lock::new().unwrap();
    let sem = Semaphore::new(1).unwrap();
    let bounded = BoundedSemaphore::new(1).unwrap();
    let barrier = Barrier::new(3).unwrap();
    assert!(is_mismatch(Lock::from_fd(dup(&value))));
    assert!(is_mismatch(RLock::from_fd(dup(&lock))));
    assert!(is_mismatch(Condition::from_fd(dup(&lock))));
    assert!(is_mismatch(Event::from_fd(dup(&lock))));
    assert!(is_mismatch(Semaphore::from_fd(dup(&bounded))));
    assert!(is_mismatch(BoundedSemaphore::from_fd(dup(&sem))));
    assert!(is_mismatch(Lock::from_fd(dup(&barrier))));
    assert!(is_mismatch(Barrier::from_fd(dup(&sem))));
    // The right kind opens, with the header's numbers.
    assert_eq!(Barrier::from_fd(dup(&barrier)).unwrap().parties(), 3);
    assert_eq!(BoundedSemaphore::from_fd(dup(&bounded)).unwrap().bound(), 1);
}

#[test]
fn a_pipe_or_a_file_of_another_size_is_refused() {
    let _leaks = leak_guard();
    let (r, _w) = std::io::pipe().unwrap();
    assert!(matches!(
        Lock::from_fd(r.into()),
        Err(Error::Shm(ipc_sem::ipc_shm::Error::NotMemoryFile {
            file_type: "pipe",
            ..
        }))
    ));
    let sem = Semaphore::new(1).unwrap();
    let grown = std::fs::File::from(dup(&sem));
    grown.set_len(64 * 1024).unwrap();
    assert!(is_mismatch(Semaphore::from_fd(grown.into())));
}

#[test]
fn a_header_corrupted_by_a_hostile_writer_is_refused() {
    let _leaks = leak_guard();
    let name = unique_name(&format!("{}-hostile", std::process::id()));
    // Kind hash (offset 16) of a named lock, changed by a same-user scribbler.
    let lock = Lock::create_named(&name).unwrap();
    ipc_testkit::Hostile::open(&name)
        .write_at(16, &[0xA5; 8])
        .unwrap();
    assert!(is_mismatch(Lock::from_fd(lock.into_fd())));
    // A barrier whose party count (the header's capacity, offset 32) is one no creator
    // writes: refused as `open_named` refuses it.
    let barrier = Barrier::create_named(&name, 2).unwrap();
    ipc_testkit::Hostile::open(&name)
        .write_at(32, &0u64.to_ne_bytes())
        .unwrap();
    assert!(matches!(
        Barrier::from_fd(barrier.into_fd()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn into_fd_of_a_named_creator_removes_the_name() {
    let _leaks = leak_guard();
    let name = unique_name(&format!("{}-into", std::process::id()));
    let ev = Event::create_named(&name).unwrap();
    ev.set();
    let fd = ev.into_fd();
    assert!(matches!(
        Event::open_named(&name),
        Err(Error::Shm(ipc_sem::ipc_shm::Error::NotFound(_)))
    ));
    let back = Event::from_fd(fd).unwrap();
    assert!(back.is_set());
    assert!(back.name().is_none());
}

#[test]
fn a_condition_travels_with_its_named_lock_but_not_with_an_anonymous_one() {
    let _leaks = leak_guard();
    // Over a named lock: the rebuilt condition uses that lock (found by its recorded name).
    let lock_name = unique_name("hcl");
    let lock = Lock::create_named(&lock_name).unwrap();
    let cond = Condition::create_named_with_lock(&unique_name("hcc"), &lock).unwrap();
    let rebuilt = Condition::from_fd(dup(&cond)).unwrap();
    let held = lock.lock().unwrap();
    // This thread holds that very lock word (through the other handle).
    let r = rebuilt.try_lock();
    assert!(
        matches!(r, Err(TryLockError::Deadlock | TryLockError::WouldBlock)),
        "{r:?}"
    );
    drop(r);
    drop(held);
    assert!(rebuilt.try_lock().is_ok());
    // Over an anonymous lock: refused, never silently rebuilt over a lock of its own.
    let anon = Condition::with_lock(Lock::new().unwrap()).unwrap();
    assert!(matches!(
        Condition::from_fd(dup(&anon)),
        Err(Error::InvalidArgument(_))
    ));
}
