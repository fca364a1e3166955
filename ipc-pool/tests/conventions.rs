//! Every `try_` and `_timeout` form of the crate, matched on its error values (the convention
//! of ARCHITECTURE.md): a task or child still running is `Empty` / `Running` / `Timeout`, a
//! killed worker is `Failed(Error::WorkerDied { .. })`, a child killed by a signal is its
//! status (`Process`) or `Failed(Error::Killed { .. })` (`ProcessHandle`). Timed waits are
//! checked to have waited at least their timeout, never at most.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{in_child_checked, wait_no_children};
use ipc_pool::{
    Error, GetTimeoutError, JoinTimeoutError, Pool, Process, TryGetError, TryJoinError,
};

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(30);
/// Milliseconds a task runs that the test sees still running: far longer than the few
/// `SHORT` waits made before it can end, even on a loaded machine.
const RUNNING: u64 = 1500;

/// Sleeps `ms` milliseconds in the worker, then returns `ms`.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Kills its own worker with `SIGKILL` (a worker dying mid-task).
fn die(x: u64) -> u64 {
    ipc_testkit::signal_pid(ipc_pool::current_pid(), libc::SIGKILL);
    x
}

/// Retries `f` until it stops saying "not yet" (bounded by the test's watchdog).
fn poll_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn async_result_try_get_get_timeout_wait_timeout() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        let mut r = pool.apply_async(nap, RUNNING).unwrap();
        // Still running: Empty, Timeout, timed_out().
        assert!(!r.ready());
        let e = r.try_get().unwrap_err();
        assert!(matches!(e, TryGetError::Empty) && e.is_empty(), "{e:?}");
        let t0 = Instant::now();
        let e = r.get_timeout(SHORT).unwrap_err();
        assert!(t0.elapsed() >= SHORT, "returned early: {:?}", t0.elapsed());
        assert!(
            matches!(e, GetTimeoutError::Timeout) && e.is_timeout(),
            "{e:?}"
        );
        let t0 = Instant::now();
        assert!(r.wait_timeout(SHORT).timed_out());
        assert!(t0.elapsed() >= SHORT);
        // Done: not timed out, the value once, then `Failed(Taken)`.
        assert!(!r.wait_timeout(LONG).timed_out());
        assert!(r.ready());
        assert_eq!(r.try_get().unwrap(), RUNNING);
        assert!(matches!(
            r.try_get(),
            Err(TryGetError::Failed(Error::Taken))
        ));
        assert!(matches!(
            r.get_timeout(SHORT),
            Err(GetTimeoutError::Failed(Error::Taken))
        ));
        // get_timeout with the value in time.
        let mut r = pool.apply_async(nap, 1).unwrap();
        assert_eq!(r.get_timeout(LONG).unwrap(), 1);
        pool.join().unwrap();
    });
}

#[test]
fn async_result_of_a_killed_worker_is_failed_worker_died() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        // try_get: Empty until the death is resolved, then Failed(WorkerDied).
        let mut r = pool.apply_async(die, 1).unwrap();
        let e = poll_until(|| match r.try_get() {
            Err(TryGetError::Empty) => None,
            other => Some(other),
        });
        match e {
            Err(TryGetError::Failed(Error::WorkerDied { exitcode, .. })) => {
                assert!(matches!(exitcode, Some(-9) | None), "{exitcode:?}");
            }
            other => panic!("expected Failed(WorkerDied), got {other:?}"),
        }
        // get_timeout: Failed(WorkerDied) within the timeout.
        let mut r = pool.apply_async(die, 2).unwrap();
        let e = r.get_timeout(LONG).unwrap_err();
        assert!(
            matches!(e, GetTimeoutError::Failed(Error::WorkerDied { .. })),
            "{e:?}"
        );
        // `?` turns it into the crate's error.
        let as_error: Error = e.into();
        assert!(matches!(as_error, Error::WorkerDied { .. }));
        // The pool replaced the worker and goes on.
        assert_eq!(pool.apply(nap, 1).unwrap(), 1);
        pool.join().unwrap();
    });
}

#[test]
fn imap_next_timeout_and_try_next() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        let mut it = pool.imap(nap, [RUNNING, 1]);
        assert!(matches!(it.try_next(), Some(Err(TryGetError::Empty))));
        let t0 = Instant::now();
        assert!(matches!(
            it.next_timeout(SHORT),
            Some(Err(GetTimeoutError::Timeout))
        ));
        assert!(t0.elapsed() >= SHORT);
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap(), RUNNING);
        assert_eq!(it.next_timeout(LONG).unwrap().unwrap(), 1);
        assert!(it.next_timeout(LONG).is_none());
        assert!(it.try_next().is_none());

        let mut it = pool.imap_unordered(nap, [RUNNING]);
        assert!(matches!(it.try_next(), Some(Err(TryGetError::Empty))));
        let t0 = Instant::now();
        assert!(matches!(
            it.next_timeout(SHORT),
            Some(Err(GetTimeoutError::Timeout))
        ));
        assert!(t0.elapsed() >= SHORT);
        let got = poll_until(|| match it.try_next() {
            Some(Err(TryGetError::Empty)) => None,
            other => Some(other),
        });
        assert_eq!(got.unwrap().unwrap(), RUNNING);
        assert!(it.next_timeout(LONG).is_none());

        // A killed worker fails its chunk: Failed(WorkerDied) in its place, then the rest.
        let mut it = pool.imap_chunked(die, [1], 1);
        match it.next_timeout(LONG) {
            Some(Err(GetTimeoutError::Failed(Error::WorkerDied { .. }))) => {}
            other => panic!("expected Failed(WorkerDied), got {other:?}"),
        }
        assert!(it.next_timeout(LONG).is_none());
        let mut it = pool.imap_unordered(die, [1]);
        let got = poll_until(|| match it.try_next() {
            Some(Err(TryGetError::Empty)) => None,
            other => Some(other),
        });
        assert!(
            matches!(
                got,
                Some(Err(TryGetError::Failed(Error::WorkerDied { .. })))
            ),
            "{got:?}"
        );
        pool.join().unwrap();
    });
}

#[test]
fn process_try_join_and_join_timeout() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let mut p = Process::spawn(|| std::thread::sleep(LONG)).unwrap();
        let e = p.try_join().unwrap_err();
        assert!(
            matches!(e, TryJoinError::Running) && e.is_running(),
            "{e:?}"
        );
        let t0 = Instant::now();
        let e = p.join_timeout(SHORT).unwrap_err();
        assert!(t0.elapsed() >= SHORT);
        assert!(
            matches!(e, JoinTimeoutError::Timeout) && e.is_timeout(),
            "{e:?}"
        );
        // Killed by a signal: a status, not an error.
        p.kill().unwrap();
        let st = p.join_timeout(LONG).unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        assert_eq!(p.try_join().unwrap().signal(), Some(libc::SIGKILL));

        let mut q = Process::spawn(|| ipc_pool::exit(3)).unwrap();
        let st = poll_until(|| match q.try_join() {
            Err(TryJoinError::Running) => None,
            other => Some(other),
        });
        assert_eq!(st.unwrap().code(), Some(3));
        wait_no_children(10);
    });
}

#[test]
fn process_handle_try_join_and_join_timeout() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let mut h = Process::spawn_with_result(|| -> u64 {
            std::thread::sleep(LONG);
            1
        })
        .unwrap();
        assert!(matches!(h.try_join(), Err(TryJoinError::Running)));
        let t0 = Instant::now();
        assert!(matches!(
            h.join_timeout(SHORT),
            Err(JoinTimeoutError::Timeout)
        ));
        assert!(t0.elapsed() >= SHORT);
        // Killed by a signal before sending its value: Failed(Killed).
        h.process().kill().unwrap();
        match h.join_timeout(LONG) {
            Err(JoinTimeoutError::Failed(Error::Killed { signal, pid })) => {
                assert_eq!(signal, libc::SIGKILL);
                assert_eq!(pid, h.pid());
            }
            other => panic!("expected Failed(Killed), got {other:?}"),
        }
        assert!(matches!(
            h.try_join(),
            Err(TryJoinError::Failed(Error::Taken))
        ));

        // try_join once it has finished: the value; killed: Failed(Killed).
        let mut v = Process::spawn_with_result(|| 42u32).unwrap();
        let got = poll_until(|| match v.try_join() {
            Err(TryJoinError::Running) => None,
            other => Some(other),
        });
        assert_eq!(got.unwrap(), 42);
        let mut k = Process::spawn_with_result(|| -> u32 {
            std::thread::sleep(LONG);
            0
        })
        .unwrap();
        k.process().kill().unwrap();
        let got = poll_until(|| match k.try_join() {
            Err(TryJoinError::Running) => None,
            other => Some(other),
        });
        assert!(
            matches!(
                got,
                Err(TryJoinError::Failed(Error::Killed { signal: 9, .. }))
            ),
            "{got:?}"
        );
        // A panic is Failed(Panicked).
        let mut p = Process::spawn_with_result(|| -> u32 { panic!("no value") }).unwrap();
        assert!(matches!(
            p.join_timeout(LONG),
            Err(JoinTimeoutError::Failed(Error::Panicked(m))) if m == "no value"
        ));
        wait_no_children(10);
    });
}

#[test]
fn pool_try_join_and_join_timeout() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        // An open pool has not finished, and try_join leaves it open.
        assert!(matches!(pool.try_join(), Err(TryJoinError::Running)));
        assert_eq!(pool.apply(nap, 1).unwrap(), 1);
        let slow = pool.apply_async(nap, RUNNING).unwrap();
        let t0 = Instant::now();
        let e = pool.join_timeout(SHORT).unwrap_err();
        assert!(t0.elapsed() >= SHORT);
        assert!(
            matches!(e, JoinTimeoutError::Timeout) && e.is_timeout(),
            "{e:?}"
        );
        // join_timeout closed the pool; the task still runs to its end.
        assert!(matches!(pool.apply(nap, 1), Err(Error::Closed)));
        assert_eq!(slow.get().unwrap(), RUNNING);
        pool.join_timeout(LONG).unwrap();
        pool.try_join().unwrap();

        // After terminate, try_join succeeds once the pool has shut down.
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(nap, 30_000).unwrap();
        pool.terminate();
        assert!(matches!(r.get(), Err(Error::Terminated)));
        poll_until(|| pool.try_join().ok());
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn errors_convert_and_display() {
    assert!(matches!(Error::from(TryGetError::Empty), Error::Timeout));
    assert!(matches!(
        Error::from(GetTimeoutError::Timeout),
        Error::Timeout
    ));
    assert!(matches!(Error::from(TryJoinError::Running), Error::Timeout));
    assert!(matches!(
        Error::from(JoinTimeoutError::Timeout),
        Error::Timeout
    ));
    assert!(matches!(
        Error::from(TryGetError::Failed(Error::Closed)),
        Error::Closed
    ));
    assert!(matches!(
        JoinTimeoutError::Failed(Error::Taken).into_failed(),
        Some(Error::Taken)
    ));
    assert!(GetTimeoutError::Timeout.into_failed().is_none());
    for s in [
        TryGetError::Empty.to_string(),
        GetTimeoutError::Timeout.to_string(),
        TryJoinError::Running.to_string(),
        JoinTimeoutError::Timeout.to_string(),
    ] {
        assert!(!s.ends_with('.') && s.chars().next().is_some_and(char::is_lowercase));
    }
    assert_eq!(
        TryJoinError::Failed(Error::Closed).to_string(),
        Error::Closed.to_string()
    );
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<TryGetError>();
    is_error::<GetTimeoutError>();
    is_error::<TryJoinError>();
    is_error::<JoinTimeoutError>();
}
