//! Crash tests at the pool's fault points (`ipc_failpoints`): a worker, the fork server or the
//! pool's own process killed at a named step. Each test runs in its own forked child under a
//! watchdog; nothing may hang and nothing may be left behind.

mod common;

use std::time::{Duration, Instant};

use common::{children, in_child_checked, sq, wait_no_children};
use ipc_failpoints::{arm, Action};
use ipc_pool::{Error, Pool};

/// A task that arms its own worker to die right after it returns (before its result is sent).
fn die_after(x: u64) -> u64 {
    arm("pool.worker.mid_task", 1, Action::Kill).unwrap();
    x
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_and_the_pool_goes_on() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let pool = Pool::new(2).unwrap();
        for _ in 0..3 {
            match pool.apply(die_after, 7) {
                Err(Error::WorkerDied { exitcode, .. }) => {
                    assert!(matches!(exitcode, Some(-9) | None), "{exitcode:?}");
                }
                other => panic!("expected WorkerDied, got {other:?}"),
            }
        }
        let r = pool.apply_async(die_after, 8).unwrap();
        assert!(matches!(r.get(), Err(Error::WorkerDied { .. })));
        let out = pool.map(sq, 0..200u64).unwrap();
        assert_eq!(out, (0..200u64).map(sq).collect::<Vec<_>>());
        pool.join().unwrap();
        drop(pool);
        wait_no_children(10);
    });
}

/// Kills the fork server at `point` on its third hit (the two start-up spawns pass), which a
/// worker death then triggers: the pool must report it broken, never hang.
fn fork_server_killed_at(point: &str) {
    arm(point, 3, Action::Kill).unwrap();
    let pool = Pool::new(2).unwrap();
    ipc_failpoints::disarm_all();
    // That task fails as a death, or as the broken pool if the replacement request killed
    // the fork server before the dead worker's exit was resolved.
    let first = pool.apply(die_after, 1);
    assert!(
        matches!(first, Err(Error::WorkerDied { .. } | Error::Broken(_))),
        "{first:?}"
    );
    // The replacement request kills the fork server; every later task fails loudly.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match pool.map(sq, 0..50u64) {
            Err(Error::Broken(why)) => {
                assert!(why.contains("fork server"), "{why}");
                break;
            }
            Ok(v) => assert_eq!(v.len(), 50),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the pool never noticed its fork server died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(pool.apply(sq, 2), Err(Error::Broken(_))));
    drop(pool);
    wait_no_children(10);
}

#[test]
fn the_fork_server_killed_mid_fork_breaks_the_pool_without_a_hang() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || fork_server_killed_at("pool.zygote.mid_fork"));
}

#[test]
fn the_fork_server_killed_on_a_request_breaks_the_pool_without_a_hang() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || fork_server_killed_at("pool.fork_server.request"));
}

#[test]
fn the_pools_process_killed_while_dispatching_leaves_no_orphans() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        // Orphans of the killed process are reparented to us, so we see (and reap) them.
        // SAFETY: plain prctl with integer arguments.
        #[allow(unsafe_code)]
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        assert_eq!(r, 0);
        let owner = ipc_testkit::fork(|| {
            arm("pool.parent.dispatching", 1, Action::Kill).unwrap();
            let pool = Pool::new(2).unwrap();
            let r = pool.map(sq, 0..100u64);
            eprintln!("owner survived dispatching: {:?}", r.map(|v| v.len()));
            // Never reached: the dispatcher kills this process first.
            3
        });
        assert_eq!(
            owner.wait(Duration::from_secs(20)),
            ipc_testkit::Exit::Signal(libc::SIGKILL)
        );
        // The fork server and workers must leave on their own; reap them as they do.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own (adopted) children with a valid status pointer.
            #[allow(unsafe_code)]
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r == -1 {
                break; // ECHILD: nobody left.
            }
            assert!(
                Instant::now() < deadline,
                "orphans of the killed pool still run: {:?}",
                children()
            );
            if r == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
}
