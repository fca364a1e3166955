//! Signals interrupting waits: every timed wait still lasts at least its timeout (EINTR
//! re-waits on the same absolute deadline) and reports a timeout, not a spurious success.
//! Installs a process-wide SIGUSR1 handler, so it has this test binary to itself.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipc_sem::{
    AcquireTimeoutError, Barrier, BarrierTimeoutError, Condition, Event, Lock, LockTimeoutError,
    PosixSemaphore, Semaphore,
};

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler() {
    // SAFETY: a zeroed sigaction with a plain handler, no SA_RESTART (so blocking calls see
    // EINTR), installed for SIGUSR1 only; the handler touches an atomic and nothing else.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

const TIMEOUT: Duration = Duration::from_millis(150);

/// Runs `wait` (which must time out) on a thread that receives SIGUSR1 every 2 ms, and checks
/// it waited at least `TIMEOUT` and was interrupted along the way.
fn under_signals(what: &str, wait: impl FnOnce() -> bool + Send) {
    let done = &AtomicBool::new(false);
    install_handler();
    let before = HANDLED.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = s.spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            let start = Instant::now();
            let timed_out = wait();
            done.store(true, Ordering::SeqCst);
            (timed_out, start.elapsed())
        });
        let thread = rx.recv().unwrap();
        while !done.load(Ordering::SeqCst) {
            // SAFETY: the thread is alive until `done` is set (it is joined below, after).
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(2));
        }
        let (timed_out, elapsed) = waiter.join().unwrap();
        assert!(timed_out, "{what}: a signal ended the wait early");
        assert!(elapsed >= TIMEOUT, "{what}: waited only {elapsed:?}");
    });
    assert!(
        HANDLED.load(Ordering::Relaxed) > before,
        "{what}: no signal was delivered"
    );
}

#[test]
fn timed_waits_survive_signals_without_drift() {
    let _leaks = common::leak_guard();
    let sem = Semaphore::new(0).unwrap();
    under_signals("Semaphore", || {
        matches!(
            sem.acquire_timeout(TIMEOUT),
            Err(AcquireTimeoutError::Timeout)
        )
    });

    let posix = PosixSemaphore::new(0).unwrap();
    under_signals("PosixSemaphore", || {
        matches!(
            posix.acquire_timeout(TIMEOUT),
            Err(AcquireTimeoutError::Timeout)
        )
    });

    let ev = Event::new().unwrap();
    under_signals("Event", || ev.wait_timeout(TIMEOUT).timed_out());

    let cond = Condition::new().unwrap();
    under_signals("Condition", || {
        let g = cond.lock().unwrap();
        let (_g, r) = cond.wait_timeout(g, TIMEOUT).unwrap();
        r.timed_out()
    });

    let lock = Lock::new().unwrap();
    let held = lock.lock().unwrap();
    under_signals("Lock", || {
        matches!(lock.lock_timeout(TIMEOUT), Err(LockTimeoutError::Timeout))
    });
    drop(held);

    let barrier = Barrier::new(2).unwrap();
    under_signals("Barrier", || {
        matches!(
            barrier.wait_timeout(TIMEOUT),
            Err(BarrierTimeoutError::Timeout)
        )
    });
}
