//! `ipc_pool::init()`: the process-wide fork server. Process-wide state, so its own test
//! binary; the body runs in a forked child (single-threaded, as `init` wants) under a watchdog.

mod common;

use std::time::Duration;

use common::{children, in_child};
use ipc_pool::{Error, Pool};

fn ppid_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = s.rsplit(')').next().unwrap();
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sq(x: u64) -> u64 {
    x * x
}

fn die(_: u32) -> u32 {
    let me = ipc_pool::current_pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &me])
        .status();
    std::thread::sleep(Duration::from_secs(10));
    0
}

#[test]
fn pools_fork_from_the_process_wide_server() {
    let _leaks = common::leak_guard();
    in_child(60, || {
        assert!(!ipc_pool::is_initialized());
        ipc_pool::init().unwrap();
        // The server (a child and its fd) is process-wide and lives until this forked child
        // exits, by design: the snapshot is taken after it started, so what the pools below
        // make (zygotes, workers, threads, fds) is checked exactly, the server is not a leak.
        let leaks = ipc_testkit::Leaks::snapshot(&ipc_testkit::unique_name("pool-noshm"));
        ipc_pool::init().unwrap(); // idempotent
        assert!(ipc_pool::is_initialized());
        let server: Vec<i32> = children();
        assert_eq!(
            server.len(),
            1,
            "init starts exactly one server: {server:?}"
        );

        // Now become multithreaded, as a real program would.
        let t = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(500)));

        let me = ipc_pool::current_pid();
        for _ in 0..2 {
            let pool = Pool::new(2).unwrap();
            for w in pool.pids() {
                let zygote = ppid_of(w);
                assert_ne!(zygote, me);
                assert_eq!(
                    ppid_of(zygote),
                    server[0],
                    "worker {w} does not descend from the server"
                );
            }
            assert_eq!(pool.map(sq, 0..1000u64).unwrap()[999], 999 * 999);
            assert!(matches!(
                pool.apply(die, 0),
                Err(Error::WorkerDied {
                    exitcode: Some(-9),
                    ..
                })
            ));
            assert_eq!(pool.apply(sq, 4).unwrap(), 16);
            pool.join().unwrap();
            // Only the server is left as our child.
            assert_eq!(children(), server);
        }
        t.join().unwrap();
        leaks.assert_all_clean(Duration::from_secs(5));
    });
}
