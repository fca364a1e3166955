//! What a forked child inherits from a multithreaded parent: locks other threads held at the
//! fork (stdout, stderr) and the parent's background reaper. Each test runs in its own forked
//! child under a watchdog.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{children, in_child_checked, in_child_checked_after};
use ipc_pool::{JoinTimeoutError, Process, ThreadPolicy, PANIC_EXIT_CODE};

/// Joins `p` within `secs`, killing and reaping it (and failing) if it hangs.
fn join_or_fail(p: &mut Process, secs: u64, what: &str) -> std::process::ExitStatus {
    match p.join_timeout(Duration::from_secs(secs)) {
        Ok(s) => s,
        Err(JoinTimeoutError::Timeout) => {
            let _ = p.kill();
            let _ = p.join();
            panic!("{what}: child {} hung; killed", p.pid());
        }
        Err(e) => panic!("{what}: join failed: {e}"),
    }
}

/// A thread that holds stdout's lock (and stderr's, with `both`) for 300 ms; returns once it
/// holds them.
fn hold_stdio(both: bool) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let out = std::io::stdout().lock();
        let err = both.then(|| std::io::stderr().lock());
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(err);
        drop(out);
    });
    rx.recv().unwrap();
    holder
}

#[test]
fn a_child_forked_while_another_thread_holds_stdout_and_stderr_prints_and_panics() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let holder = hold_stdio(true);
        let mut p = Process::builder()
            .if_multithreaded(ThreadPolicy::Allow)
            .spawn(|| {
                // Straight to the streams (past the test harness's capture).
                let _ = writeln!(
                    std::io::stdout(),
                    "child {} prints",
                    ipc_pool::current_pid()
                );
                let _ = writeln!(std::io::stderr(), "child {} warns", ipc_pool::current_pid());
                panic!("child panics on purpose");
            })
            .unwrap();
        let st = join_or_fail(&mut p, 20, "print and panic");
        assert_eq!(st.code(), Some(PANIC_EXIT_CODE));
        holder.join().unwrap();
        // A child that only returns must get through `exit`'s flush of stdout, too.
        let holder = hold_stdio(false);
        let mut q = Process::builder()
            .if_multithreaded(ThreadPolicy::Allow)
            .spawn(|| {
                let _ = write!(std::io::stdout(), "[unflushed text from the child] ");
            })
            .unwrap();
        assert!(join_or_fail(&mut q, 20, "flush at exit").success());
        holder.join().unwrap();
    });
}

#[test]
fn a_forked_child_reaps_the_children_it_drops() {
    let _leaks = common::leak_guard();
    // Starts this process's reaper (drops a running child) before the snapshot: see
    // `warm_reaper`. The rest of the body is checked exactly.
    in_child_checked_after(60, common::warm_reaper, || {
        // A child of this (now multithreaded) process drops a running child of its own: its
        // reaper must be its own, not the copy of ours whose thread it does not have.
        let mut c = Process::builder()
            .if_multithreaded(ThreadPolicy::Allow)
            .spawn(|| {
                let g = Process::spawn(|| std::thread::sleep(Duration::from_millis(50))).unwrap();
                let pid = g.pid();
                drop(g);
                let deadline = Instant::now() + Duration::from_secs(10);
                while children().contains(&pid) {
                    if Instant::now() > deadline {
                        let _ = writeln!(std::io::stderr(), "grandchild {pid} left a zombie");
                        ipc_pool::exit(3);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .unwrap();
        let st = join_or_fail(&mut c, 30, "reaper in a child");
        assert_eq!(
            st.code(),
            Some(0),
            "the child's dropped child was never reaped"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !children().is_empty() {
            assert!(Instant::now() < deadline, "children left: {:?}", children());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// A task that prints straight to stdout and stderr, then squares.
fn print_and_square(x: u64) -> u64 {
    let _ = writeln!(
        std::io::stdout(),
        "worker {} prints",
        ipc_pool::current_pid()
    );
    let _ = writeln!(
        std::io::stderr(),
        "worker {} warns",
        ipc_pool::current_pid()
    );
    x * x
}

/// A pool built while another thread holds stdout's and stderr's locks: its workers (forked
/// from a zygote forked at that moment) must still print. Before the fix the zygote inherited
/// the locks held by a thread it does not have, and a worker's first `println!` hung.
#[test]
fn a_pool_built_while_another_thread_holds_stdout_has_workers_that_print() {
    let _leaks = common::leak_guard();
    in_child_checked(60, || {
        let holder = hold_stdio(true);
        let pool = ipc_pool::Pool::builder().processes(1).build().unwrap();
        holder.join().unwrap();
        let r = pool
            .apply_async(print_and_square, 7u64)
            .unwrap()
            .get_timeout(Duration::from_secs(10));
        assert_eq!(r.ok(), Some(49), "the worker hung printing (or failed)");
    });
}
