//! The async futex waiter (`ipc_shm::lowlevel::sync::FutexWait`): wake-ups within and across
//! processes, deadlines, cancellation, the thread budget, and the path for kernels without
//! `futex_waitv`. Each test holds the exclusive leak guard, which also proves the idle waiter
//! threads exit.
#![cfg(feature = "async")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ipc_shm::lowlevel::sync::{
    registered_waits, waiter_threads, Deadline, Futex, FutexWait, WaitOutcome,
};
use ipc_shm::AtomicValue;
use ipc_testkit::{fork, LeakGuard, Leaks};

const WATCHDOG: Duration = Duration::from_secs(30);

fn leaks() -> LeakGuard {
    Leaks::exclusive("ipct-waiter-")
}

/// Wakes by unparking the thread that blocks on the future.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        assert!(start.elapsed() < WATCHDOG, "future never completed");
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

/// Counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The waiter threads, counted by name.
fn waiter_named_threads() -> usize {
    ipc_testkit::threads_named("ipc-shm-waiter")
}

/// Waits for the idle waiter threads of earlier tests to exit, so counts start from zero.
fn no_waiter_threads() {
    wait_until("idle waiter threads to exit", || {
        waiter_threads() == 0 && waiter_named_threads() == 0
    });
}

#[test]
fn a_wake_from_another_thread_completes_the_future() {
    let _leaks = leaks();
    let word = Arc::new(Futex::new(0));
    let setter = {
        let word = Arc::clone(&word);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            word.store(1, Ordering::Release);
            word.wake_all();
        })
    };
    let outcome = block_on(FutexWait::new(&word, 0, Deadline::never()));
    assert!(matches!(
        outcome,
        WaitOutcome::Woken | WaitOutcome::ValueChanged
    ));
    assert_eq!(word.load(Ordering::Acquire), 1);
    setter.join().unwrap();
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_changed_word_completes_at_once_without_a_thread() {
    let _leaks = leaks();
    no_waiter_threads();
    let word = AtomicU32::new(7);
    let mut f = FutexWait::new(&word, 3, Deadline::never());
    let waker = Waker::from(Arc::new(Count::default()));
    assert_eq!(
        poll_once(&mut f, &waker),
        Poll::Ready(WaitOutcome::ValueChanged)
    );
    assert_eq!(waiter_threads(), 0);
}

#[test]
fn the_deadline_ends_the_wait() {
    let _leaks = leaks();
    let word = AtomicU32::new(0);
    let start = Instant::now();
    let outcome = block_on(FutexWait::new(
        &word,
        0,
        Deadline::after(Duration::from_millis(50)),
    ));
    assert_eq!(outcome, WaitOutcome::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(registered_waits(), 0);
}

#[test]
fn a_thousand_futures_on_one_word_cost_one_thread() {
    let _leaks = leaks();
    no_waiter_threads();
    let word = Futex::new(0);
    let count = Arc::new(Count::default());
    let waker = Waker::from(Arc::clone(&count));
    let mut futures: Vec<_> = (0..1000)
        .map(|_| FutexWait::new(&word, 0, Deadline::never()))
        .collect();
    for f in &mut futures {
        assert_eq!(poll_once(f, &waker), Poll::Pending);
    }
    assert_eq!(registered_waits(), 1000);
    assert_eq!(waiter_threads(), 1);
    assert_eq!(waiter_named_threads(), 1);
    word.store(1, Ordering::Release);
    word.wake_all();
    wait_until("every waker", || count.0.load(Ordering::SeqCst) == 1000);
    for f in &mut futures {
        assert!(matches!(
            poll_once(f, &waker),
            Poll::Ready(WaitOutcome::Woken | WaitOutcome::ValueChanged)
        ));
    }
    assert_eq!(registered_waits(), 0);
}

#[test]
fn dropped_futures_leave_no_registration() {
    let _leaks = leaks();
    let words: Vec<AtomicU32> = (0..10).map(AtomicU32::new).collect();
    let waker = Waker::from(Arc::new(Count::default()));
    let mut futures: Vec<_> = (0..100)
        .map(|i| FutexWait::new(&words[i % 10], (i % 10) as u32, Deadline::never()))
        .collect();
    for f in &mut futures {
        assert_eq!(poll_once(f, &waker), Poll::Pending);
    }
    assert_eq!(registered_waits(), 100);
    futures.truncate(40);
    assert_eq!(registered_waits(), 40);
    drop(futures);
    assert_eq!(registered_waits(), 0);
}

#[test]
fn more_than_127_words_take_a_second_thread() {
    let _leaks = leaks();
    no_waiter_threads();
    let words: Vec<AtomicU32> = (0..200).map(|_| AtomicU32::new(0)).collect();
    let count = Arc::new(Count::default());
    let waker = Waker::from(Arc::clone(&count));
    let mut futures: Vec<_> = words
        .iter()
        .map(|w| FutexWait::new(w, 0, Deadline::never()))
        .collect();
    for f in &mut futures {
        assert_eq!(poll_once(f, &waker), Poll::Pending);
    }
    assert_eq!(waiter_threads(), 2);
    // A word of the second thread and one of the first are both served.
    for i in [5, 150] {
        words[i].store(1, Ordering::Release);
        Futex::from_atomic(&words[i]).wake_all();
    }
    wait_until("two wakers", || count.0.load(Ordering::SeqCst) >= 2);
    assert!(poll_once(&mut futures[5], &waker).is_ready());
    assert!(poll_once(&mut futures[150], &waker).is_ready());
    // A word nobody changed is at most woken spuriously (a `futex_waitv` that found another
    // word changed fires every registration of its thread), never reported changed.
    assert_ne!(
        poll_once(&mut futures[6], &waker),
        Poll::Ready(WaitOutcome::ValueChanged)
    );
}

#[test]
fn a_wake_from_another_process_completes_the_future() {
    let _leaks = leaks();
    let shared = AtomicValue::<AtomicU32>::new(0).unwrap();
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(30));
        shared.store(1, Ordering::Release);
        Futex::from_atomic(&shared).wake_all();
        0
    });
    let outcome = block_on(FutexWait::new(&shared, 0, Deadline::never()));
    assert!(matches!(
        outcome,
        WaitOutcome::Woken | WaitOutcome::ValueChanged
    ));
    child.wait_success(WATCHDOG);
}

#[test]
fn a_forked_child_waits_with_its_own_thread() {
    let _leaks = leaks();
    // A registration in the parent makes the parent's registry and thread.
    let word = Futex::new(0);
    let waker = Waker::from(Arc::new(Count::default()));
    let mut f = FutexWait::new(&word, 0, Deadline::never());
    assert_eq!(poll_once(&mut f, &waker), Poll::Pending);
    let child = fork(|| {
        if waiter_threads() != 0 {
            return 2;
        }
        let w = Arc::new(Futex::new(0));
        let t = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                w.store(1, Ordering::Release);
                w.wake_all();
            })
        };
        let out = block_on(FutexWait::new(&w, 0, Deadline::never()));
        let _ = t.join();
        i32::from(out == WaitOutcome::TimedOut) * 3
    });
    child.wait_success(WATCHDOG);
    drop(f);
}

#[test]
fn without_futex_waitv_each_word_gets_a_thread_and_still_wakes() {
    let _leaks = leaks();
    let words: Vec<AtomicValue<AtomicU32>> = (0..3).map(|_| AtomicValue::new(0).unwrap()).collect();
    let child = fork(|| {
        // The child builds a fresh registry at its first registration, which reads this.
        std::env::set_var("IPC_SHM_NO_FUTEX_WAITV", "1");
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut futures: Vec<_> = words
            .iter()
            .map(|w| FutexWait::new(w, 0, Deadline::never()))
            .collect();
        for f in &mut futures {
            if poll_once(f, &waker).is_ready() {
                return 2;
            }
        }
        if waiter_threads() != 3 {
            return 3;
        }
        // A deadline is honoured although the thread sleeps on the word, not the control.
        let start = Instant::now();
        let t = block_on(FutexWait::new(
            &words[0],
            0,
            Deadline::after(Duration::from_millis(30)),
        ));
        if t != WaitOutcome::TimedOut || start.elapsed() < Duration::from_millis(30) {
            return 4;
        }
        words[1].store(1, Ordering::Release);
        Futex::from_atomic(&words[1]).wake_all();
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            if start.elapsed() > WATCHDOG {
                return 5;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if poll_once(&mut futures[1], &waker).is_pending() {
            return 6;
        }
        0
    });
    child.wait_success(WATCHDOG);
}
