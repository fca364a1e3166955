//! Pool behaviour with real worker processes; every test runs in its own forked child under a
//! watchdog, so a hang fails the test instead of stalling the run.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{children, in_child_checked, sq};
use ipc_pool::{Error, GetTimeoutError, JoinTimeoutError, Policy, Pool};

fn pid_of(_: u32) -> i32 {
    ipc_pool::current_pid()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("three is right out");
    }
    x
}

/// Takes a few milliseconds (so tasks travel one per message) and kills its own worker on 7.
fn die_on(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(3));
    if x == 7 {
        // Kill our own worker mid-task.
        unsafe_kill_self();
    }
    x
}

fn unsafe_kill_self() {
    let _ = std::process::Command::new("kill")
        .args(["-9", &ipc_pool::current_pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(10));
}

#[test]
fn map_is_correct_and_ordered() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(2).unwrap();
        let out = pool.map(sq, 0..10_000u64).unwrap();
        assert_eq!(out, (0..10_000u64).map(sq).collect::<Vec<_>>());
        let out = pool.map_chunked(sq, 0..1_000u64, 1).unwrap();
        assert_eq!(out, (0..1_000u64).map(sq).collect::<Vec<_>>());
        let out = pool.map_chunked(sq, 0..1_000u64, 7).unwrap();
        assert_eq!(out, (0..1_000u64).map(sq).collect::<Vec<_>>());
        assert!(pool.map(sq, std::iter::empty()).unwrap().is_empty());
        // Unknown length (filter hides it).
        let out = pool.map(sq, (0..5_000u64).filter(|x| x % 3 == 0)).unwrap();
        assert_eq!(
            out,
            (0..5_000u64)
                .filter(|x| x % 3 == 0)
                .map(sq)
                .collect::<Vec<_>>()
        );
        let s = pool
            .starmap(
                |a: u32, b: String| format!("{b}{a}"),
                vec![(1, "a".to_string()), (2, "b".into())],
            )
            .unwrap();
        assert_eq!(s, ["a1", "b2"]);
        pool.join().unwrap();
    });
}

#[test]
fn apply_and_apply_async_with_timeouts() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(2).unwrap();
        for i in 0..200u64 {
            assert_eq!(pool.apply(sq, i).unwrap(), i * i);
        }
        let mut slow = pool.apply_async(sleep_ms, 300).unwrap();
        let t = Instant::now();
        assert!(matches!(
            slow.get_timeout(Duration::from_millis(50)),
            Err(GetTimeoutError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(!slow.ready());
        assert_eq!(slow.get_timeout(Duration::from_secs(20)).unwrap(), 300);
        assert!(matches!(
            slow.get_timeout(Duration::ZERO),
            Err(GetTimeoutError::Failed(Error::Taken))
        ));
        let many: Vec<_> = (0..50u64)
            .map(|i| pool.apply_async(sq, i).unwrap())
            .collect();
        for (i, r) in many.into_iter().enumerate() {
            r.wait();
            assert!(r.ready());
            assert_eq!(r.get().unwrap(), (i * i) as u64);
        }
        pool.close();
        assert!(matches!(pool.apply(sq, 1), Err(Error::Closed)));
        assert!(matches!(pool.apply_async(sq, 1), Err(Error::Closed)));
        pool.join().unwrap();
    });
}

#[test]
fn imap_is_lazy_and_ordered() {
    static PULLED: AtomicUsize = AtomicUsize::new(0);
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(2).unwrap();
        let endless = (0u64..).inspect(|_| {
            PULLED.fetch_add(1, Ordering::Relaxed);
        });
        let first: Vec<u64> = pool
            .imap(sq, endless)
            .take(10)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first, (0..10u64).map(sq).collect::<Vec<_>>());
        let pulled = PULLED.load(Ordering::Relaxed);
        assert!(pulled < 10_000, "imap pulled {pulled} items for 10 results");
        let all: Vec<u64> = pool
            .imap_chunked(sq, 0..3_000u64, 5)
            .map(Result::unwrap)
            .collect();
        assert_eq!(all, (0..3_000u64).map(sq).collect::<Vec<_>>());
        pool.join().unwrap();
    });
}

#[test]
fn imap_unordered_is_complete() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(3).unwrap();
        let mut got: Vec<u64> = pool
            .imap_unordered(sq, 0..5_000u64)
            .map(Result::unwrap)
            .collect();
        got.sort_unstable();
        let mut want: Vec<u64> = (0..5_000u64).map(sq).collect();
        want.sort_unstable();
        assert_eq!(got, want);
        pool.join().unwrap();
    });
}

#[test]
fn panicking_task_is_an_error_and_the_worker_survives() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(1).unwrap();
        let pid = pool.pids();
        match pool.apply(boom, 3) {
            Err(Error::Panicked(m)) => assert!(m.contains("three is right out"), "{m}"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        assert_eq!(pool.apply(boom, 4).unwrap(), 4);
        assert_eq!(pool.pids(), pid, "the worker was replaced after a panic");
        let r: Vec<_> = pool.imap_chunked(boom, 0..6, 1).collect();
        assert!(matches!(r[3], Err(Error::Panicked(_))));
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 5);
        assert!(matches!(pool.map(boom, 0..10), Err(Error::Panicked(_))));
        pool.join().unwrap();
    });
}

#[test]
fn killed_worker_fails_only_its_task_and_pool_keeps_serving() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(2).unwrap();
        let before = pool.pids();
        // Direct path (apply with an idle worker).
        match pool.apply(die_on, 7) {
            Err(Error::WorkerDied { pid, exitcode }) => {
                assert!(before.contains(&pid));
                assert_eq!(exitcode, Some(-9));
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        // Dispatcher path: many tasks in flight, one dies.
        let r: Vec<_> = pool.imap_chunked(die_on, 0..20u32, 1).collect();
        assert_eq!(r.len(), 20);
        for (i, x) in r.iter().enumerate() {
            if i == 7 {
                assert!(
                    matches!(
                        x,
                        Err(Error::WorkerDied {
                            exitcode: Some(-9),
                            ..
                        })
                    ),
                    "{x:?}"
                );
            } else {
                assert_eq!(*x.as_ref().unwrap(), i as u32);
            }
        }
        assert_eq!(pool.apply(sq, 5).unwrap(), 25);
        assert_eq!(pool.map(sq, 0..100u64).unwrap().len(), 100);
        let after = pool.pids();
        assert_eq!(after.len(), 2);
        pool.join().unwrap();
    });
}

#[test]
fn retry_policy_reruns_and_break_policy_breaks() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::builder()
            .processes(2)
            .on_worker_death(Policy::Retry(2))
            .build()
            .unwrap();
        // Always dies: after 2 retries it is an error.
        assert!(matches!(
            pool.apply(die_on, 7),
            Err(Error::WorkerDied { .. })
        ));
        assert_eq!(pool.apply(sq, 3).unwrap(), 9);
        pool.join().unwrap();

        let pool = Pool::builder()
            .processes(2)
            .on_worker_death(Policy::BreakPool)
            .build()
            .unwrap();
        assert!(matches!(
            pool.apply(die_on, 7),
            Err(Error::WorkerDied { .. })
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match pool.apply(sq, 3) {
                Err(Error::Broken(_)) => break,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                other => panic!("expected Broken, got {other:?}"),
            }
        }
        pool.join().unwrap();
    });
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(2)
            .build()
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..12u32 {
            seen.insert(pool.apply(pid_of, i).unwrap());
        }
        assert!(
            seen.len() >= 6,
            "12 tasks at 2 per child ran in only {} workers",
            seen.len()
        );
        let pids: std::collections::BTreeSet<i32> = pool
            .map_chunked(pid_of, 0..40u32, 1)
            .unwrap()
            .into_iter()
            .collect();
        assert!(
            pids.len() >= 20,
            "{} workers for 40 one-item chunks",
            pids.len()
        );
        pool.join().unwrap();
    });
}

static INIT_MARK: AtomicUsize = AtomicUsize::new(0);

fn init_worker() {
    INIT_MARK.fetch_add(1, Ordering::Relaxed);
}

fn read_mark(_: u32) -> (i32, usize) {
    (ipc_pool::current_pid(), INIT_MARK.load(Ordering::Relaxed))
}

#[test]
fn initializer_runs_once_per_worker() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::builder()
            .processes(2)
            .initializer(init_worker)
            .build()
            .unwrap();
        let r = pool.map_chunked(read_mark, 0..200u32, 1).unwrap();
        assert!(r.iter().all(|&(_, n)| n == 1), "{r:?}");
        assert_eq!(
            INIT_MARK.load(Ordering::Relaxed),
            0,
            "initializer ran in the parent"
        );
        pool.join().unwrap();
    });
}

fn bad_init() {
    panic!("initializer fails");
}

#[test]
fn panicking_initializer_breaks_the_pool_instead_of_looping() {
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::builder()
            .processes(1)
            .initializer(bad_init)
            .build()
            .unwrap();
        assert!(matches!(
            pool.apply(sq, 2),
            Err(Error::Broken(_)) | Err(Error::WorkerDied { .. })
        ));
        pool.join().unwrap();
    });
}

#[test]
fn close_join_leaves_no_children_and_drop_terminates() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(3).unwrap();
        assert!(!children().is_empty());
        assert_eq!(pool.map(sq, 0..1000u64).unwrap().len(), 1000);
        pool.close();
        pool.join().unwrap();
        assert!(children().is_empty(), "children left: {:?}", children());

        // join_timeout with a long task: times out, then succeeds.
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(sleep_ms, 400).unwrap();
        let t = Instant::now();
        assert!(matches!(
            pool.join_timeout(Duration::from_millis(50)),
            Err(JoinTimeoutError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(50));
        pool.join_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(r.get().unwrap(), 400);
        assert!(children().is_empty());

        // terminate fails pending work.
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(sleep_ms, 5_000).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pool.terminate();
        assert!(matches!(r.get(), Err(Error::Terminated)));
        pool.join().unwrap();
        assert!(children().is_empty());

        // Drop joins.
        {
            let pool = Pool::new(2).unwrap();
            drop(pool.apply_async(sleep_ms, 100).unwrap());
        }
        assert!(children().is_empty());
    });
}

#[test]
fn decode_errors_are_task_errors() {
    fn to_u8(x: u32) -> u32 {
        x
    }
    let _leaks = common::leak_guard();
    in_child_checked(30, || {
        let pool = Pool::new(1).unwrap();
        // A result type that cannot be decoded as what the parent asks for is impossible
        // through the typed API; but a value postcard cannot encode is: a map with non-string
        // keys is fine, so use a failing Serialize.
        struct Bad;
        impl serde::Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("refuses"))
            }
        }
        impl<'de> serde::Deserialize<'de> for Bad {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Bad, D::Error> {
                Ok(Bad)
            }
        }
        fn make_bad(_: u32) -> Bad {
            Bad
        }
        assert!(matches!(pool.apply(make_bad, 1), Err(Error::Encode(_))));
        assert!(matches!(
            pool.apply(|_: Bad| 1u32, Bad),
            Err(Error::Encode(_))
        ));
        assert_eq!(pool.apply(to_u8, 5).unwrap(), 5);
        pool.join().unwrap();
    });
}

#[test]
fn zero_processes_is_its_own_error() {
    assert!(matches!(
        Pool::builder().processes(0).build(),
        Err(Error::InvalidConfig(_))
    ));
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// Dropping a pool waits at least its drop timeout for a running task, then terminates the
/// workers (the task's 30 s are not waited for) and leaves no child.
#[test]
fn drop_timeout_bounds_the_wait_of_drop() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::builder()
            .processes(1)
            .drop_timeout(std::time::Duration::from_millis(200))
            .build()
            .unwrap();
        let r = pool.apply_async(nap, 30_000).unwrap();
        // Let the task start.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        drop(pool);
        assert!(t.elapsed() >= std::time::Duration::from_millis(200));
        assert!(matches!(r.get(), Err(Error::Terminated)));
        assert!(children().is_empty());
    });
}
