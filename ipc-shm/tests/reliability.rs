//! Regression tests for the reliability and soundness defects of `ipc-shm` (issue 13): false
//! death without a `/proc` of our own, SIGBUS on a full tmpfs, shrinkable memfds, raw access
//! to typed segments, opens across pid namespaces; and kills at the crate's fault points.
//!
//! Namespace tests need `unshare` (root, or user namespaces); where the kernel refuses they
//! print why and pass without checking anything.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipc_failpoints::{arm, Action};
use ipc_shm::{Array, Error, LockTimeoutError, SharedMemory, TryLockError, Value};
use ipc_testkit::{fork, unique_name, Exit, LeakGuard, Leaks};

const WATCHDOG: Duration = Duration::from_secs(30);
/// Exit code of a child that could not set up its namespace (the test is skipped).
const SKIP: i32 = 77;

/// The leak guard every test holds for its whole run (`Leaks::exclusive`): the tests of this
/// binary run one at a time under it, so fds, threads, shared mappings and children are
/// checked exactly when it drops; its `/dev/shm` check watches the names made with
/// `unique_name(tag)` (other programs on the machine make `ipct-` names too). A test that
/// makes no named segment passes `"anon"`, which none of them uses.
fn leaks(tag: &str) -> LeakGuard {
    Leaks::exclusive(&format!("ipct-{tag}-"))
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// In a forked child: a private mount namespace, with `fstype` mounted over `target`.
/// Returns false if the kernel refuses (no privilege).
fn private_mount(target: &str, fstype: &str, data: &str) -> bool {
    // SAFETY: plain syscalls with valid NUL-terminated strings, in a single-threaded child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let root = cstr("/");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return false;
        }
        let (src, tgt, fs, d) = (cstr(fstype), cstr(target), cstr(fstype), cstr(data));
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            0,
            d.as_ptr().cast(),
        ) == 0
    }
}

fn skip_or_succeed(exit: Exit, what: &str) {
    match exit {
        Exit::Code(0) => {}
        Exit::Code(SKIP) => eprintln!("skipped: {what}: the kernel refused the namespace"),
        other => panic!("{what}: child ended with {other:?}"),
    }
}

/// A live holder must never be taken over because `/proc` cannot show it. Before the fix a
/// missing `/proc/<tid>` read as "dead": the waiter got `OwnerDied` and held the lock together
/// with its live holder.
#[test]
fn a_waiter_without_proc_times_out_and_never_takes_over_a_live_holder() {
    let _leaks = leaks("anon");
    let v = Value::new(7u64).unwrap();
    let guard = v.lock().unwrap();
    let child = fork(|| {
        if !private_mount("/proc", "tmpfs", "size=4k") {
            return SKIP;
        }
        let start = Instant::now();
        match v.lock_timeout(Duration::from_millis(300)) {
            Err(LockTimeoutError::Timeout) if start.elapsed() >= Duration::from_millis(300) => 0,
            Err(LockTimeoutError::OwnerDied(_)) => 2,
            _ => 3,
        }
    });
    let exit = child.wait(WATCHDOG);
    drop(guard);
    skip_or_succeed(exit, "empty /proc");
    assert_eq!(v.get().unwrap(), 7);
}

/// With a tmpfs too small for the segment, creation fails with an error. Before the fix the
/// segment was sparse: creation succeeded and the first write to a missing page was SIGBUS.
#[test]
fn a_full_tmpfs_is_an_error_at_create_never_sigbus() {
    let l = leaks("full");
    let name = unique_name("full");
    let child = fork(|| {
        if !private_mount("/dev/shm", "tmpfs", "size=1m") {
            return SKIP;
        }
        const LEN: usize = 4 << 20;
        match Array::<u8>::create_named(&name, LEN) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {}
            Err(_) => return 2,
            Ok(a) => {
                // Touch every page: a sparse segment dies here with SIGBUS.
                let mut g = a.lock().ok();
                if let Some(g) = g.as_mut() {
                    g.fill(1);
                }
                return 3;
            }
        }
        match SharedMemory::create_named(&format!("{name}-raw"), LEN) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => 0,
            Err(_) => 4,
            Ok(s) => {
                let _ = s.write_at(LEN - 1, &[1]);
                5
            }
        }
    });
    skip_or_succeed(child.wait(WATCHDOG), "small tmpfs");
    l.assert_no_new_shm();
}

/// An inherited segment's memfd is sealed against shrinking: no holder of the fd can truncate
/// it under another's mapping (which would SIGBUS the other). Before the fix it could.
#[test]
fn an_inherited_segment_cannot_be_shrunk() {
    let _leaks = leaks("anon");
    let shm = SharedMemory::new(8192).unwrap();
    // SAFETY: ftruncate on a descriptor we own; the call is expected to fail.
    let r = unsafe { libc::ftruncate(shm.as_raw_fd(), 0) };
    assert_eq!(r, -1, "ftruncate of a sealed memfd succeeded");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    shm.write_at(8191, &[9]).unwrap();
}

/// `SharedMemory::open_named` refuses a typed object's segment. Before the fix it mapped it,
/// and `write_at` could put bytes under a live `ValueGuard` or an invalid value under an atomic.
#[test]
fn raw_access_to_a_typed_segment_is_refused() {
    let l = leaks("typed");
    let name = unique_name("typed");
    let v = Value::create_named(&name, 1u64).unwrap();
    match SharedMemory::open_named(&name) {
        Err(Error::TypedSegment(n)) => assert!(n.ends_with(name.trim_start_matches('/'))),
        other => panic!("expected TypedSegment, got {other:?}"),
    }
    // A raw segment still opens.
    let raw = SharedMemory::create_named(&format!("{name}-raw"), 64).unwrap();
    raw.write::<u64>(8, &0x1234).unwrap();
    let again = SharedMemory::open_named(raw.name().unwrap()).unwrap();
    assert_eq!(again.read::<u64>(8).unwrap(), 0x1234);
    drop((v, raw, again));
    l.assert_no_new_shm();
}

/// An opener in another pid namespace (with its own `/proc`) is refused: thread ids recorded
/// in the segment name other tasks there. Before the fix it opened, and its liveness checks
/// could declare a live holder dead.
#[test]
fn an_open_from_another_pid_namespace_is_refused() {
    let l = leaks("pidns");
    let name = unique_name("pidns");
    let v = Value::create_named(&name, 1u64).unwrap();
    let child = fork(|| {
        // SAFETY: unshare in a single-threaded child; the next fork starts the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return SKIP;
        }
        let grandchild = fork(|| {
            if !private_mount("/proc", "proc", "") {
                return SKIP;
            }
            match Value::<u64>::open_named(&name) {
                Err(Error::ForeignPidNamespace { creator, mine, .. }) if creator != mine => 0,
                Err(_) => 2,
                Ok(_) => 3,
            }
        });
        match grandchild.wait(WATCHDOG) {
            Exit::Code(c) => c,
            Exit::Signal(_) => 4,
        }
    });
    skip_or_succeed(child.wait(WATCHDOG), "new pid namespace");
    drop(v);
    l.assert_no_new_shm();
}

/// A holder killed at each of the crate's lock fault points: the next locker gets
/// `OwnerDied`, holds the lock, and can mark the data consistent.
#[test]
fn a_holder_killed_at_each_lock_point_hands_over_with_owner_died() {
    let _leaks = leaks("anon");
    for point in [
        "shm.rawlock.held",
        "shm.value.guard_held",
        "shm.array.guard_held",
    ] {
        let v = Value::new(5u64).unwrap();
        let a = Array::<u64>::new(4).unwrap();
        let child = fork(|| {
            arm(point, 1, Action::Kill).unwrap();
            if point == "shm.array.guard_held" {
                let _g = a.lock();
            } else if point == "shm.value.guard_held" {
                let _g = v.lock();
            } else {
                let _ = v.update(|x| *x += 1);
            }
            1
        });
        assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL), "{point}");
        let r = if point == "shm.array.guard_held" {
            a.lock_timeout(Duration::from_secs(10))
                .map(drop)
                .map_err(|e| e.map(drop))
        } else {
            v.lock_timeout(Duration::from_secs(10))
                .map(drop)
                .map_err(|e| e.map(drop))
        };
        match r {
            Err(LockTimeoutError::OwnerDied(())) => {}
            other => panic!("{point}: expected OwnerDied, got {other:?}"),
        }
    }
}

/// A holder stopped (SIGSTOP) while holding is alive: waiters time out, never `OwnerDied`.
#[test]
fn a_stopped_holder_makes_waiters_time_out_not_take_over() {
    let _leaks = leaks("anon");
    let v = Value::new(5u64).unwrap();
    let child = fork(|| {
        arm("shm.value.guard_held", 1, Action::Stop).unwrap();
        let g = v.lock();
        drop(g);
        0
    });
    // Wait until the child holds the lock (it stops holding it).
    let t = Instant::now();
    while !matches!(v.try_lock(), Err(TryLockError::WouldBlock)) {
        assert!(t.elapsed() < WATCHDOG, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    match v.lock_timeout(Duration::from_millis(300)) {
        Err(LockTimeoutError::Timeout) => assert!(start.elapsed() >= Duration::from_millis(300)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    child.signal(libc::SIGCONT);
    assert_eq!(child.wait(WATCHDOG), Exit::Code(0));
    assert_eq!(v.get().unwrap(), 5);
}

/// A creator killed after creating a named segment and before publishing it as READY: an
/// opener gets `NotReady` within its timeout, and `sweep` removes the name.
#[test]
fn a_creator_killed_before_ready_leaves_a_name_that_sweep_removes() {
    let l = leaks("halfmade");
    let name = unique_name("halfmade");
    let child = fork(|| {
        arm("shm.segment.created", 1, Action::Kill).unwrap();
        let _ = Value::create_named(&name, 1u64);
        1
    });
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    match Value::<u64>::open_named(&name) {
        Err(Error::NotReady(_)) => {}
        other => panic!("expected NotReady, got {other:?}"),
    }
    let removed = ipc_shm::sweep(&name).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    l.assert_no_new_shm();
}

/// A scribbler process writes random bytes over a named `Value`'s lock word and data while two
/// processes use it with deadlines: every call returns (a value or a typed error), none
/// panics, and none overruns its deadline by more than a liveness check and scheduling.
#[test]
fn a_scribbled_value_gives_typed_errors_and_keeps_its_deadlines() {
    const RUN: Duration = Duration::from_millis(1500);
    let l = leaks("scribv");
    let name = unique_name("scribv");
    let v = Value::create_named(&name, 0u64).unwrap();
    let user = || {
        fork(|| {
            let Ok(v) = Value::<u64>::open_named(&name) else {
                return 3;
            };
            let op = Duration::from_millis(20);
            let start = Instant::now();
            while start.elapsed() < RUN {
                let t = Instant::now();
                match v.lock_timeout(op) {
                    Ok(mut g) => *g = g.wrapping_add(1),
                    Err(LockTimeoutError::OwnerDied(g)) => g.mark_consistent(),
                    Err(_) => {}
                }
                if t.elapsed() > op + Duration::from_secs(2) {
                    return 4;
                }
            }
            0
        })
    };
    let users = [user(), user()];
    let scribbler = {
        let name = name.clone();
        fork(move || {
            let raw = ipc_testkit::Hostile::open(&name);
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
            let start = Instant::now();
            while start.elapsed() < RUN {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // The payload: the 16-byte lock (word, state) and the value after it.
                let off = 128 + (x as usize % 24);
                let len = 1 + (x >> 40) as usize % 8;
                let bytes = x.rotate_left(17).to_le_bytes();
                let end = (off + len).min(raw.len());
                let _ = raw.write_at(off, &bytes[..end - off]);
                std::thread::yield_now();
            }
            0
        })
    };
    assert_eq!(scribbler.wait(WATCHDOG), Exit::Code(0));
    for u in users {
        assert_eq!(
            u.wait(WATCHDOG),
            Exit::Code(0),
            "a user panicked (101) or overran (4)"
        );
    }
    drop(v);
    l.assert_no_new_shm();
}
