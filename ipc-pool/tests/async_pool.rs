//! The async forms (feature `async`): `AsyncResult` as a future, `map_async`, and
//! `join_async` of a `Process` / `ProcessHandle` across processes: wake-up, a runtime's timeout
//! around the future, a dead worker or child, cancellation, the polling fallback and the
//! thread budget of a hundred awaited children. Each test runs in its own forked child under
//! a watchdog with a leak check.
#![cfg(feature = "async")]

mod common;

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{in_child_checked, in_child_checked_after, sq, wait_no_children, warm_reaper};
use ipc_failpoints::{arm, Action};
use ipc_pool::{Error, Pool, Process, ThreadPolicy};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// A waker that counts its wake-ups; `Arc::strong_count` tells whether anyone still holds it.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<Counter>, Waker) {
    let c = Arc::new(Counter::default());
    let w = Waker::from(Arc::clone(&c));
    (c, w)
}

/// Waits (bounded) until only `c`'s own reference is left: a woken-and-released waker may be
/// dropped by another thread a moment after the wake.
fn released(c: &Arc<Counter>) -> bool {
    let start = Instant::now();
    while Arc::strong_count(c) != 1 {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn boom(x: u64) -> u64 {
    assert!(x != 13, "unlucky {x}");
    x
}

/// A task that arms its own worker to die right after it returns (before its result is sent).
fn die_after(x: u64) -> u64 {
    arm("pool.worker.mid_task", 1, Action::Kill).unwrap();
    x
}

/// The threads of this process.
fn threads() -> usize {
    ipc_testkit::thread_ids().len()
}

#[test]
fn awaited_apply_async_results_arrive() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        // Built before the runtime's threads exist (the fork server is forked here).
        let pool = Pool::new(2).unwrap();
        let rt = runtime();
        rt.block_on(async {
            assert_eq!(pool.apply_async(sq, 9).unwrap().await.unwrap(), 81);
            // Many awaited at once, on the runtime's threads.
            let tasks: Vec<_> = (0..16u64)
                .map(|x| tokio::spawn(pool.apply_async(nap, x * 3).unwrap()))
                .collect();
            for (x, t) in (0..16u64).zip(tasks) {
                assert_eq!(t.await.unwrap().unwrap(), x * 3);
            }
            // A panic comes back as the future's error.
            let e = pool.apply_async(boom, 13).unwrap().await.unwrap_err();
            assert!(
                matches!(e, Error::Panicked(ref m) if m.contains("unlucky 13")),
                "{e}"
            );
            // Polled again after it completed: `Taken`.
            let mut r = pool.apply_async(sq, 3).unwrap();
            assert_eq!((&mut r).await.unwrap(), 9);
            assert!(matches!((&mut r).await, Err(Error::Taken)));
            assert!(r.ready());
        });
        drop(rt);
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn the_dispatcher_wakes_the_waker_itself() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut r = pool.apply_async(nap, 100).unwrap();
        assert!(Pin::new(&mut r).poll(&mut cx).is_pending());
        // No runtime here: only the dispatcher thread can wake it.
        r.wait();
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        match Pin::new(&mut r).poll(&mut cx) {
            Poll::Ready(v) => assert_eq!(v.unwrap(), 100),
            Poll::Pending => panic!("woken but not ready"),
        }
        drop(r);
        drop(waker);
        assert!(released(&count), "the collector kept the waker");
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn map_async_is_awaited_in_input_order() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(2).unwrap();
        let rt = runtime();
        rt.block_on(async {
            let got = pool.map_async(sq, 0..1000u64).unwrap().await.unwrap();
            assert_eq!(got, (0..1000u64).map(sq).collect::<Vec<_>>());
            let chunked = pool.map_async_chunked(sq, 0..10u64, 3).unwrap().await;
            assert_eq!(chunked.unwrap(), (0..10u64).map(sq).collect::<Vec<_>>());
            let none = pool
                .map_async(sq, Vec::<u64>::new())
                .unwrap()
                .await
                .unwrap();
            assert!(none.is_empty());
            let failed = pool.map_async_chunked(boom, 0..20u64, 2).unwrap().await;
            assert!(matches!(failed, Err(Error::Panicked(_))), "{failed:?}");
        });
        drop(rt);
        // Without a runtime, as Python's `map_async(..).get()`.
        let r = pool.map_async(sq, 0..50u64).unwrap();
        assert_eq!(r.get().unwrap(), (0..50u64).map(sq).collect::<Vec<_>>());
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn a_worker_killed_mid_task_fails_the_awaited_task() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(2).unwrap();
        let rt = runtime();
        rt.block_on(async {
            for _ in 0..3 {
                match pool.apply_async(die_after, 7).unwrap().await {
                    Err(Error::WorkerDied { exitcode, .. }) => {
                        assert!(matches!(exitcode, Some(-9) | None), "{exitcode:?}");
                    }
                    other => panic!("expected WorkerDied, got {other:?}"),
                }
            }
            // A worker killed from outside while the task is awaited.
            let r = pool.apply_async(nap, 30_000).unwrap();
            let victim = tokio::task::spawn_blocking({
                let pids = pool.pids();
                move || {
                    std::thread::sleep(Duration::from_millis(200));
                    for pid in pids {
                        // SAFETY: plain kill(2) of a worker of this process's pool.
                        #[allow(unsafe_code)]
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            });
            assert!(matches!(r.await, Err(Error::WorkerDied { .. })));
            victim.await.unwrap();
            // The pool goes on.
            let out = pool.map_async(sq, 0..100u64).unwrap().await.unwrap();
            assert_eq!(out, (0..100u64).map(sq).collect::<Vec<_>>());
        });
        drop(rt);
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn a_cancelled_await_leaks_nothing_and_the_pool_goes_on() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(1).unwrap();
        let rt = runtime();
        rt.block_on(async {
            let wait = Duration::from_millis(100);
            let start = Instant::now();
            let r = pool.apply_async(nap, 400).unwrap();
            assert!(tokio::time::timeout(wait, r).await.is_err());
            assert!(start.elapsed() >= wait);
            // A borrowed one stays usable after its cancelled await.
            let mut r = pool.apply_async(nap, 300).unwrap();
            assert!(tokio::time::timeout(wait, &mut r).await.is_err());
            assert_eq!(r.await.unwrap(), 300);
        });
        drop(rt);
        // A new task with the blocking API.
        assert_eq!(pool.apply_async(sq, 5).unwrap().get().unwrap(), 25);
        // The waker of a dropped, pending future is released at once.
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut r = pool.apply_async(nap, 200).unwrap();
        assert!(Pin::new(&mut r).poll(&mut cx).is_pending());
        drop(r);
        drop(waker);
        assert_eq!(
            Arc::strong_count(&count),
            1,
            "a dropped future's waker is still held"
        );
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

#[test]
fn join_async_of_children_that_exit() {
    let _leaks = common::leak_guard();
    in_child_checked_after(60, warm_reaper, || {
        let mut p = Process::spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            ipc_pool::exit(3);
        })
        .unwrap();
        let mut h = Process::spawn_with_result(|| {
            std::thread::sleep(Duration::from_millis(50));
            String::from("done")
        })
        .unwrap();
        // Larger than a pipe's buffer: the child blocks until the future drains the pipe.
        let mut big = Process::spawn_with_result(|| vec![7u8; 1 << 20]).unwrap();
        let rt = runtime();
        rt.block_on(async {
            let status = p.join_async().await.unwrap();
            assert_eq!(status.code(), Some(3));
            // Polled again: the same status.
            assert_eq!(p.join_async().await.unwrap().code(), Some(3));
            assert_eq!(h.join_async().await.unwrap(), "done");
            assert!(matches!(h.join_async().await, Err(Error::Taken)));
            let v = big.join_async().await.unwrap();
            assert!(v.len() == 1 << 20 && v.iter().all(|&b| b == 7));
        });
        drop(rt);
        assert!(common::children().is_empty());
    });
}

#[test]
fn join_async_of_killed_children() {
    let _leaks = common::leak_guard();
    in_child_checked_after(60, warm_reaper, || {
        let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
        let mut h = Process::spawn_with_result(|| -> u32 {
            std::thread::sleep(Duration::from_secs(60));
            7
        })
        .unwrap();
        let rt = runtime();
        rt.block_on(async {
            let (pp, hp) = (p.pid(), h.pid());
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(100));
                for pid in [pp, hp] {
                    // SAFETY: plain kill(2) of our own unreaped children.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            });
            let status = p.join_async().await.unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            match h.join_async().await {
                Err(Error::Killed { pid, signal }) => {
                    assert_eq!((pid, signal), (hp, libc::SIGKILL));
                }
                other => panic!("expected Killed, got {other:?}"),
            }
        });
        drop(rt);
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        assert!(common::children().is_empty());
    });
}

#[test]
fn join_async_under_a_timeout_leaves_the_handle_usable() {
    let _leaks = common::leak_guard();
    in_child_checked_after(60, warm_reaper, || {
        let mut h = Process::spawn_with_result(|| -> u32 {
            std::thread::sleep(Duration::from_secs(60));
            7
        })
        .unwrap();
        let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(60))).unwrap();
        let rt = runtime();
        rt.block_on(async {
            let wait = Duration::from_millis(100);
            let start = Instant::now();
            assert!(tokio::time::timeout(wait, h.join_async()).await.is_err());
            assert!(tokio::time::timeout(wait, p.join_async()).await.is_err());
            assert!(start.elapsed() >= 2 * wait);
        });
        // The dropped futures hold no waker (nor fd: the leak check).
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        {
            let mut fut = Box::pin(h.join_async());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        drop(waker);
        assert!(released(&count), "a dropped join_async kept its waker");
        assert!(h.process_mut().is_alive());
        h.process().kill().unwrap();
        p.kill().unwrap();
        rt.block_on(async {
            assert!(matches!(h.join_async().await, Err(Error::Killed { .. })));
            assert_eq!(p.join_async().await.unwrap().signal(), Some(libc::SIGKILL));
        });
        drop(rt);
        assert!(common::children().is_empty());
    });
}

#[test]
fn awaiting_a_hundred_children_adds_no_thread_per_child() {
    let _leaks = common::leak_guard();
    in_child_checked_after(120, warm_reaper, || {
        let go = Arc::new(ipc_sem::Event::new().unwrap());
        let mut kids: Vec<Process> = (0..100)
            .map(|_| {
                Process::builder()
                    .if_multithreaded(ThreadPolicy::Allow)
                    .spawn({
                        let go = Arc::clone(&go);
                        move || go.wait()
                    })
                    .unwrap()
            })
            .collect();
        let rt = runtime();
        let before = threads();
        rt.block_on(async {
            let joins: Vec<_> = kids.iter_mut().map(Process::join_async).collect();
            let all = futures_join_all(joins);
            tokio::pin!(all);
            // Every join is registered and waiting: count the threads now.
            assert!(tokio::time::timeout(Duration::from_millis(300), &mut all)
                .await
                .is_err());
            assert_eq!(threads(), before, "awaiting children added threads");
            go.set();
            for status in all.await {
                assert!(status.unwrap().success());
            }
        });
        drop(rt);
        assert!(common::children().is_empty());
    });
}

/// Awaits every future (tokio's `join!` takes a fixed number of them).
async fn futures_join_all<F: Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match Pin::new(f).poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

#[test]
fn join_async_falls_back_to_bounded_polling_without_pidfd_polls() {
    let _leaks = common::leak_guard();
    in_child_checked_after(
        60,
        || {
            // Read when this process's reaper starts (below): this child is single-threaded.
            std::env::set_var("IPC_POOL_NO_PIDFD_POLL", "1");
            warm_reaper();
        },
        || {
            let mut p = Process::spawn(|| std::thread::sleep(Duration::from_millis(100))).unwrap();
            let mut big = Process::spawn_with_result(|| vec![1u8; 256 << 10]).unwrap();
            // A waker that counts: the fallback wakes it at each interval while it waits.
            let (count, waker) = counting_waker();
            let mut cx = Context::from_waker(&waker);
            {
                let mut fut = Box::pin(p.join_async());
                let start = Instant::now();
                loop {
                    if let Poll::Ready(s) = fut.as_mut().poll(&mut cx) {
                        assert!(s.unwrap().success());
                        break;
                    }
                    assert!(start.elapsed() < Duration::from_secs(20), "never completed");
                    std::thread::sleep(ipc_pool::JOIN_ASYNC_POLL_INTERVAL);
                }
            }
            assert!(
                count.0.load(Ordering::SeqCst) > 0,
                "the fallback never woke it"
            );
            drop(waker);
            assert!(released(&count));
            let rt = runtime();
            let v = rt.block_on(big.join_async()).unwrap();
            assert_eq!(v.len(), 256 << 10);
            drop(rt);
            assert!(common::children().is_empty());
        },
    );
}

#[test]
fn the_futures_are_send_and_async_result_is_unpin() {
    fn future_send_unpin<F: Future + Send + Unpin>(_: &F) {}
    fn future_send<F: Future + Send>(_: &F) {}
    fn check(pool: &Pool, p: &mut Process, h: &mut ipc_pool::ProcessHandle<String>) {
        future_send_unpin(&pool.apply_async(sq, 1).unwrap());
        future_send_unpin(&pool.map_async(sq, 0..1u64).unwrap());
        future_send(&p.join_async());
        future_send(&h.join_async());
    }
    // Only compiled: the bounds are the test.
    let _ = check;
}

/// The direct path of an awaited `apply_async` (feature `tokio`): inside a runtime with I/O,
/// with a worker idle, the future talks to the worker itself and the reactor wakes it. The
/// tests that must stay on it arm `pool.parent.dispatching` to panic: a job assigned by the
/// dispatcher thread would break the pool, and the awaits would fail with `Broken`.
#[cfg(feature = "tokio")]
mod direct {
    use super::*;

    fn io_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn io_runtime_mt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Any job the dispatcher thread assigns from now on breaks the pool.
    fn forbid_dispatching() {
        arm("pool.parent.dispatching", 1, Action::Panic).unwrap();
    }

    /// Waits (bounded) until the pool has `n` live workers, none of them in `dead`: the next
    /// task then finds an idle worker (a killed one not yet seen dead would look idle).
    fn wait_replaced(pool: &Pool, n: usize, dead: &[i32]) {
        let start = Instant::now();
        loop {
            let pids = pool.pids();
            if pids.len() == n && !pids.iter().any(|p| dead.contains(p)) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "not replaced");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn direct_awaits_give_what_the_blocking_path_gives() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Pool::new(2).unwrap();
            let rt = io_runtime();
            forbid_dispatching();
            rt.block_on(async {
                for i in 0..300u64 {
                    let a = pool.apply_async(sq, i).unwrap().await.unwrap();
                    assert_eq!(a, pool.apply(sq, i).unwrap());
                }
                let e = pool.apply_async(boom, 13).unwrap().await.unwrap_err();
                let b = pool.apply(boom, 13).unwrap_err();
                assert_eq!(e.to_string(), b.to_string());
                assert!(matches!(e, Error::Panicked(ref m) if m.contains("unlucky 13")));
                // Polled again after it completed: `Taken`.
                let mut r = pool.apply_async(sq, 3).unwrap();
                assert_eq!((&mut r).await.unwrap(), 9);
                assert!(matches!((&mut r).await, Err(Error::Taken)));
            });
            drop(rt);
            pool.join().unwrap();
            drop(pool);
            wait_no_children(10);
        });
    }

    #[test]
    fn a_worker_killed_under_a_direct_await_is_worker_died() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Pool::new(2).unwrap();
            let rt = io_runtime();
            forbid_dispatching();
            rt.block_on(async {
                for _ in 0..3 {
                    match pool.apply_async(die_after, 7).unwrap().await {
                        Err(Error::WorkerDied { pid, exitcode }) => {
                            assert!(matches!(exitcode, Some(-9) | None), "{exitcode:?}");
                            wait_replaced(&pool, 2, &[pid]);
                        }
                        other => panic!("expected WorkerDied, got {other:?}"),
                    }
                }
                // Killed from outside while the reply is awaited.
                let r = pool.apply_async(nap, 30_000).unwrap();
                let pids = pool.pids();
                let dead = pids.clone();
                let killer = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    for pid in pids {
                        // SAFETY: plain kill(2) of a worker of this process's pool.
                        #[allow(unsafe_code)]
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                });
                assert!(matches!(r.await, Err(Error::WorkerDied { .. })));
                killer.join().unwrap();
                wait_replaced(&pool, 2, &dead);
                for i in 0..20u64 {
                    assert_eq!(pool.apply_async(sq, i).unwrap().await.unwrap(), i * i);
                }
            });
            drop(rt);
            pool.join().unwrap();
            drop(pool);
            wait_no_children(10);
        });
    }

    #[test]
    fn a_timed_out_direct_await_continues_and_get_returns_the_value() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Pool::new(2).unwrap();
            let rt = io_runtime();
            forbid_dispatching();
            let wait = Duration::from_millis(50);
            let (kept, again) = rt.block_on(async {
                // Cancelled once, then awaited again: the second poll goes on.
                let mut again = pool.apply_async(nap, 300).unwrap();
                let start = Instant::now();
                assert!(tokio::time::timeout(wait, &mut again).await.is_err());
                assert!(start.elapsed() >= wait);
                // Cancelled, then left for `get` outside the runtime.
                let mut kept = pool.apply_async(nap, 200).unwrap();
                assert!(tokio::time::timeout(wait, &mut kept).await.is_err());
                (kept, again)
            });
            assert_eq!(kept.get().unwrap(), 200);
            assert_eq!(rt.block_on(again).unwrap(), 300);
            drop(rt);
            pool.join().unwrap();
            drop(pool);
            wait_no_children(10);
        });
    }

    #[test]
    fn a_dropped_direct_await_loses_nothing_and_leaks_nothing() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Pool::new(2).unwrap();
            let rt = io_runtime();
            rt.block_on(async {
                for _ in 0..3 {
                    // Dropped while its reply is outstanding, by a timeout that owns it.
                    let r = pool.apply_async(nap, 100).unwrap();
                    assert!(tokio::time::timeout(Duration::from_millis(20), r)
                        .await
                        .is_err());
                    // Dropped before it was ever polled.
                    drop(pool.apply_async(nap, 50).unwrap());
                }
                for i in 0..100u64 {
                    assert_eq!(pool.apply_async(sq, i).unwrap().await.unwrap(), i * i);
                }
            });
            drop(rt);
            assert_eq!(pool.apply(sq, 12).unwrap(), 144);
            pool.join().unwrap();
            drop(pool);
            wait_no_children(10);
        });
    }

    /// A future that read its reply from a lent worker must not erase the readiness of the
    /// next loan of that worker: here it stalls (`Delay` at `pool.lent.answered`) after the
    /// worker is idle again, while another future lends the worker, the reply arrives and
    /// the reactor records it before that future's first poll. Once cleared by the stalled
    /// future, that readiness would never come again (the reply is already in the socket).
    #[test]
    fn a_finished_direct_await_does_not_erase_the_next_loans_readiness() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Arc::new(Pool::new(1).unwrap());
            let rt = io_runtime_mt();
            forbid_dispatching();
            rt.block_on(async {
                arm("pool.lent.answered", 1, Action::Delay).unwrap();
                let p = Arc::clone(&pool);
                let next = tokio::spawn(async move {
                    // The first future has its reply (after ~30 ms) and stalls until
                    // ~230 ms; lent at ~100 ms, this job's reply is in at once.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let r = p.apply_async(sq, 5).unwrap();
                    // First polled after the stalled future went on, in a task of its own:
                    // only the reactor can wake it (a timeout around `r` itself would poll
                    // it again when the timer fires, and read the reply).
                    let waiter = tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        r.await
                    });
                    tokio::time::timeout(Duration::from_secs(10), waiter).await
                });
                let start = Instant::now();
                assert_eq!(pool.apply_async(nap, 30).unwrap().await.unwrap(), 30);
                assert!(
                    start.elapsed() >= ipc_failpoints::DELAY,
                    "the point stalled the first future"
                );
                let got = next.await.unwrap();
                assert!(
                    matches!(got, Ok(Ok(Ok(25)))),
                    "the next loan never woke: {got:?}"
                );
            });
            drop(rt);
            pool.join().unwrap();
            drop(pool);
            wait_no_children(10);
        });
    }

    #[test]
    fn concurrent_and_out_of_order_awaits_are_correct() {
        let _leaks = common::leak_guard();
        in_child_checked(60, || {
            let pool = Arc::new(Pool::new(2).unwrap());
            let rt = io_runtime_mt();
            rt.block_on(async {
                let tasks: Vec<_> = (0..8u64)
                    .map(|t| {
                        let pool = Arc::clone(&pool);
                        tokio::spawn(async move {
                            for i in 0..50u64 {
                                let x = t * 1000 + i;
                                assert_eq!(pool.apply_async(sq, x).unwrap().await.unwrap(), x * x);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                // Submitted together, awaited last first: the first ones hold the workers
                // and are not polled while the later (queued) ones are awaited; the
                // dispatcher takes the workers back.
                let rs: Vec<_> = (0..10u64)
                    .map(|i| pool.apply_async(nap, i).unwrap())
                    .collect();
                for (i, r) in rs.into_iter().enumerate().rev() {
                    assert_eq!(r.await.unwrap(), i as u64);
                }
                // A pool joined while a lent result is not polled: the join takes the worker
                // back and the result is still there.
                let r = pool.apply_async(nap, 20).unwrap();
                pool.join().unwrap();
                assert_eq!(r.await.unwrap(), 20);
            });
            drop(rt);
            drop(pool);
            wait_no_children(10);
        });
    }
}
