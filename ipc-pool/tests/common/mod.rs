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
