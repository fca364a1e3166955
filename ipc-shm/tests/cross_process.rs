//! Cross-process behaviour of `ipc-shm`: real forked children, each under a watchdog, and a
//! leak check on `/dev/shm` after every test.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_shm::{
    Array, AtomicValue, Error, LockError, LockTimeoutError, RawValue, SharedMemory, TryLockError,
    Value,
};
use ipc_testkit::{fork, unique_name, Exit, LeakGuard, Leaks};

const WATCHDOG: Duration = Duration::from_secs(30);

/// The leak guard every test holds for its whole run (`Leaks::exclusive`): the tests of this
/// binary run one at a time under it, so fds, threads, shared mappings and children are
/// checked exactly when it drops; its `/dev/shm` check watches the names made with
/// `unique_name(tag)` (other programs on the machine make `ipct-` names too). A test that
/// makes no named segment passes `"anon"`, which none of them uses.
fn leaks(tag: &str) -> LeakGuard {
    Leaks::exclusive(&format!("ipct-{tag}-"))
}

#[test]
fn a_childs_set_is_seen_by_the_parent() {
    let _leaks = leaks("anon");
    let v = Value::new(1u64).unwrap();
    fork(|| i32::from(v.set(42).is_err())).wait_success(WATCHDOG);
    assert_eq!(v.get().unwrap(), 42);
}

#[test]
fn two_processes_lose_no_update() {
    let _leaks = leaks("anon");
    const N: u64 = 100_000;
    let v = Value::new(0u64).unwrap();
    let work = || (0..N).all(|_| v.update(|x| *x += 1).is_ok());
    let child = fork(|| i32::from(!work()));
    assert!(work());
    child.wait_success(WATCHDOG);
    assert_eq!(v.get().unwrap(), 2 * N);
}

#[test]
fn atomic_value_counts_across_processes() {
    let _leaks = leaks("anon");
    const N: u64 = 200_000;
    let a = AtomicValue::<AtomicU64>::new(0).unwrap();
    let work = || {
        for _ in 0..N {
            a.fetch_add(1, Ordering::SeqCst);
        }
    };
    let child = fork(|| {
        work();
        0
    });
    work();
    child.wait_success(WATCHDOG);
    assert_eq!(a.load(Ordering::SeqCst), 2 * N);
}

#[test]
fn array_bulk_write_in_a_child_through_the_guard() {
    let _leaks = leaks("anon");
    let a = Array::<u32>::new(10_000).unwrap();
    fork(|| match a.lock() {
        Ok(mut g) => {
            for (i, x) in g.iter_mut().enumerate() {
                *x = i as u32 * 3;
            }
            0
        }
        Err(_) => 1,
    })
    .wait_success(WATCHDOG);
    let v = a.to_vec().unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 * 3));
    assert!(matches!(
        a.get(10_000),
        Err(Error::IndexOutOfBounds {
            index: 10_000,
            len: 10_000
        })
    ));
    assert!(matches!(
        a.set(usize::MAX, 1),
        Err(Error::IndexOutOfBounds { .. })
    ));
    assert!(matches!(
        a.copy_from_slice(&[1, 2]),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn raw_value_and_memfd_segment_are_shared() {
    let _leaks = leaks("anon");
    let r = RawValue::new(0u32).unwrap();
    let shm = SharedMemory::new(4096).unwrap();
    fork(|| {
        r.set(7);
        i32::from(shm.write_at(4090, b"abcdef").is_err())
    })
    .wait_success(WATCHDOG);
    assert_eq!(r.get(), 7);
    let mut buf = [0u8; 6];
    shm.read_at(4090, &mut buf).unwrap();
    assert_eq!(&buf, b"abcdef");
    assert!(matches!(
        shm.read_at(4091, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        shm.write_at(usize::MAX, b"x"),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn a_killed_holder_gives_the_next_locker_owner_died() {
    let _leaks = leaks("anon");
    let v = Value::new(5u64).unwrap();
    let gate = AtomicValue::<AtomicU64>::new(0).unwrap();
    let child = fork(|| {
        let _g = v.lock();
        gate.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    while gate.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    assert!(matches!(v.try_lock(), Err(TryLockError::WouldBlock)));
    let pid = child.pid();
    child.kill();
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    let start = Instant::now();
    match v.lock_timeout(Duration::from_secs(5)) {
        Err(LockTimeoutError::OwnerDied(g)) => {
            assert_eq!(*g, 5);
            g.mark_consistent();
        }
        other => panic!("expected OwnerDied after killing {pid}, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "death noticed after {:?}",
        start.elapsed()
    );
    assert_eq!(v.get().unwrap(), 5);
}

#[test]
fn a_parked_waiter_notices_the_holder_die() {
    let _leaks = leaks("anon");
    let v = Value::new(0u64).unwrap();
    let gate = AtomicValue::<AtomicU64>::new(0).unwrap();
    let child = fork(|| {
        let _g = v.lock();
        gate.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        0
    });
    while gate.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let pid = child.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signalling our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    // Parked in the futex while the child dies: woken by the death check, not by an unlock.
    let r = v.lock_timeout(Duration::from_secs(10));
    let recovered = matches!(r, Err(LockTimeoutError::OwnerDied(_)));
    drop(r); // dropping without mark_consistent poisons
    killer.join().unwrap();
    assert_eq!(child.wait(WATCHDOG), Exit::Signal(libc::SIGKILL));
    assert!(recovered);
    assert!(matches!(v.get(), Err(Error::Poisoned)));
    assert!(matches!(v.lock(), Err(LockError::Poisoned)));
}

#[test]
fn named_value_between_processes_with_0600_and_cleanup() {
    let l = leaks("value");
    let name = unique_name("value");
    {
        let v = Value::create_named(&name, 10u64).unwrap();
        assert_eq!(v.name(), Some(name.as_str()));
        let mode = std::fs::metadata(format!("/dev/shm{name}"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fork(|| match Value::<u64>::open_named(&name) {
            Ok(o) => i32::from(o.update(|x| *x += 1).is_err()),
            Err(_) => 2,
        })
        .wait_success(WATCHDOG);
        assert_eq!(v.get().unwrap(), 11);
        assert!(matches!(
            Value::create_named(&name, 0u64),
            Err(Error::AlreadyExists(_))
        ));
        // An opener never unlinks.
        drop(Value::<u64>::open_named(&name).unwrap());
        assert!(std::path::Path::new(&format!("/dev/shm{name}")).exists());
    }
    assert!(matches!(
        Value::<u64>::open_named(&name),
        Err(Error::NotFound(_))
    ));
    l.assert_no_new_shm();
}

#[test]
fn opening_with_another_layout_is_an_error() {
    let _leaks = leaks("layout");
    let name = unique_name("layout");
    let _v = Value::create_named(&name, 1u64).unwrap();
    let field = |e| match e {
        Err(Error::LayoutMismatch { field, .. }) => field,
        other => panic!("expected LayoutMismatch, got {other:?}"),
    };
    assert!(field(Value::<i64>::open_named(&name).map(drop)).starts_with("kind"));
    assert!(field(Array::<u64>::open_named(&name).map(drop)).starts_with("kind"));
    assert!(field(RawValue::<u64>::open_named(&name).map(drop)).starts_with("kind"));
    assert!(field(AtomicValue::<AtomicU64>::open_named(&name).map(drop)).starts_with("kind"));
    // A raw segment has no header at all.
    let raw = unique_name("layout-raw");
    let shm = SharedMemory::create_named(&raw, 4096).unwrap();
    shm.write_at(0, b"numpy data, not a header").unwrap();
    assert_eq!(field(Value::<u64>::open_named(&raw).map(drop)), "magic");
}

#[test]
fn bad_names_and_sizes_are_errors() {
    let _leaks = leaks("zero");
    assert!(matches!(
        SharedMemory::create_named("a/b", 10),
        Err(Error::InvalidName(..))
    ));
    assert!(matches!(
        SharedMemory::create_named(&"n".repeat(300), 10),
        Err(Error::InvalidName(..))
    ));
    assert!(matches!(
        SharedMemory::new(0),
        Err(Error::InvalidSize(0, _))
    ));
    assert!(matches!(
        SharedMemory::create_named(&unique_name("zero"), 0),
        Err(Error::InvalidSize(0, _))
    ));
    assert!(matches!(Array::<u8>::new(0), Err(Error::InvalidSize(0, _))));
    assert!(matches!(
        Array::<u64>::new(usize::MAX / 4),
        Err(Error::InvalidSize(..))
    ));
}

#[test]
fn sweep_removes_names_of_dead_creators_only() {
    let l = leaks("sweep");
    let dead = unique_name("sweep");
    let alive = unique_name("sweep");
    let _mine = Value::create_named(&alive, 0u8).unwrap();
    // The child creates a name and dies without unlinking it.
    let d2 = dead.clone();
    let code = fork(move || match Value::create_named(&d2, 0u8) {
        Ok(v) => {
            std::mem::forget(v);
            0
        }
        Err(_) => 1,
    })
    .wait(WATCHDOG);
    assert_eq!(code, Exit::Code(0));
    assert!(std::path::Path::new(&format!("/dev/shm{dead}")).exists());
    let removed = ipc_shm::sweep("/ipct-sweep").unwrap();
    assert_eq!(removed, vec![dead.clone()]);
    assert!(!std::path::Path::new(&format!("/dev/shm{dead}")).exists());
    drop(_mine);
    l.assert_no_new_shm();
}

/// Python 3.8+ `multiprocessing.shared_memory`, if there is a `python3`.
fn python() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import multiprocessing.shared_memory"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no python3 with multiprocessing.shared_memory on PATH");
    }
    ok.then_some("python3")
}

#[test]
fn python_attaches_to_ours_and_we_open_pythons() {
    let Some(py) = python() else { return };
    let l = leaks("py");
    // Ours -> Python: Python reads our bytes and writes back; it must not unlink our name
    // (Python 3.11's resource tracker would, so the script unregisters).
    let ours = SharedMemory::create_named(&unique_name("py"), 64).unwrap();
    ours.write_at(0, b"from rust").unwrap();
    let script = r#"
import sys
from multiprocessing import shared_memory, resource_tracker
shm = shared_memory.SharedMemory(name=sys.argv[1])
resource_tracker.unregister(shm._name, "shared_memory")
assert bytes(shm.buf[:9]) == b"from rust", bytes(shm.buf[:9])
shm.buf[9:20] = b" and python"
shm.close()
"#;
    let st = std::process::Command::new(py)
        .args(["-c", script, ours.name().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut buf = [0u8; 20];
    ours.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from rust and python");

    // Python -> ours: Python creates, we open, write, and Python reads it back and unlinks.
    let name = unique_name("pyown");
    let script = r#"
import sys, time
from multiprocessing import shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1], create=True, size=4096)
shm.buf[:6] = b"python"
print("ready", flush=True)
sys.stdin.readline()
ok = bytes(shm.buf[6:11]) == b"+rust"
shm.close(); shm.unlink()
sys.exit(0 if ok else 3)
"#;
    let mut child = std::process::Command::new(py)
        .args(["-c", script, name.trim_start_matches('/')])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let theirs = SharedMemory::open_named(&name).unwrap();
    assert_eq!(theirs.len(), 4096);
    let mut b = [0u8; 6];
    theirs.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"python");
    theirs.write_at(6, b"+rust").unwrap();
    drop(theirs);
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    assert!(child.wait().unwrap().success());
    drop(ours);
    l.assert_no_new_shm();
}

#[test]
fn children_forked_while_other_threads_take_their_identity_never_hang() {
    let _leaks = leaks("anon");
    // Regression: a lazily registered fork handler could be copied half-done into a child
    // forked meanwhile and block its first lock forever.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = std::sync::Arc::clone(&stop);
    let churn = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            std::thread::spawn(ipc_shm::lowlevel::sync::OwnerStamp::current)
                .join()
                .unwrap();
        }
    });
    let v = Value::new(0u32).unwrap();
    for _ in 0..200 {
        fork(|| i32::from(v.update(|x| *x += 1).is_err())).wait_success(WATCHDOG);
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert_eq!(v.get().unwrap(), 200);
}
