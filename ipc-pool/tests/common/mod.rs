//! Shared test support: run a test body in a forked child under a watchdog.
#![allow(dead_code)]

use std::io::Write;
use std::time::Duration;

/// Runs `f` in a forked child (single-threaded, isolated from the other tests of the
/// harness) and fails the test if it panics, or still runs after `secs` seconds (watchdog).
/// Panic messages go straight to fd 2, past the harness's output capture.
pub fn in_child(secs: u64, f: impl FnOnce()) {
    let child = ipc_testkit::fork(|| {
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "[child {}] {info}", std::process::id());
        }));
        f();
        0
    });
    child.wait_success(Duration::from_secs(secs));
}

/// The pool task most tests run: `x * x`, wrapping.
pub fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// Waits up to `secs` seconds until this process has no children left; fails the test if
/// some remain.
pub fn wait_no_children(secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !children().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "children left: {:?}",
            children()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of this process's children.
pub fn children() -> Vec<i32> {
    ipc_testkit::child_pids().into_iter().collect()
}

/// The leak guard every test of the cross-process files holds for its whole run
/// (`ipc_testkit::Leaks::exclusive`): tests of one binary then run one at a time, so the
/// fd, thread, mapping and child checks are exact. Its `/dev/shm` prefix matches nothing:
/// `Process` makes no named segments.
pub fn leak_guard() -> ipc_testkit::LeakGuard {
    ipc_testkit::Leaks::exclusive(&ipc_testkit::unique_name("pool-noshm"))
}

/// [`in_child`] with a leak check inside the child too: the child is single-threaded when
/// `f` starts, so every fd, thread, shared mapping and child `f` leaves is seen exactly.
pub fn in_child_checked(secs: u64, f: impl FnOnce()) {
    in_child(secs, || {
        let leaks = ipc_testkit::Leaks::snapshot(&ipc_testkit::unique_name("pool-noshm"));
        f();
        leaks.assert_all_clean(Duration::from_secs(5));
    });
}

/// [`in_child_checked`] with a warm-up first: `warm` runs in the child before the snapshot,
/// for process-wide state that lives until the process exits by design (the `init` fork
/// server, the lazily started reaper thread of `Process`); everything `f` makes after it is
/// still checked exactly.
pub fn in_child_checked_after(secs: u64, warm: impl FnOnce(), f: impl FnOnce()) {
    in_child(secs, || {
        warm();
        let leaks = ipc_testkit::Leaks::snapshot(&ipc_testkit::unique_name("pool-noshm"));
        f();
        leaks.assert_all_clean(Duration::from_secs(5));
    });
}

/// [`in_child_checked_after`] with `ipc_pool::init` as the warm-up: the process-wide fork
/// server (a child and its connection fd) lives until this forked child exits, by design.
pub fn in_child_checked_after_init(secs: u64, f: impl FnOnce()) {
    in_child_checked_after(secs, || ipc_pool::init().expect("ipc_pool::init"), f);
}

/// Starts this process's reaper (drops a still-running child) and waits until that child is
/// gone: the reaper is a thread and an eventfd that live until the process exits, by design
/// (process-wide, started by the first drop of a running child), so a leak-checked body
/// that drops running children warms it up before the snapshot.
pub fn warm_reaper() {
    let p = ipc_pool::Process::spawn(|| std::thread::sleep(Duration::from_millis(20)))
        .expect("spawn the warm-up child");
    drop(p);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !children().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
