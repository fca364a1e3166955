//! Runs every example's `main` in a forked child under a watchdog, with a leak check inside
//! that child, so the examples cannot rot.

use std::io::Write;
use std::time::Duration;

use ipc_testkit::{fork, Leaks};

#[allow(dead_code, clippy::all)]
#[path = "../examples/counter.rs"]
mod counter;

/// Runs `body` in a forked child (single-threaded, so its leak check is exact) and fails the
/// test if `body` returns an error or panics, leaves an fd, a thread, a shared mapping, a
/// child or a `/dev/shm` name starting with `prefix`, or still runs after `secs` seconds.
/// The binary's leak lock is held throughout, so the examples run one at a time.
fn run_example<E: std::fmt::Debug>(secs: u64, prefix: &str, body: impl FnOnce() -> Result<(), E>) {
    let _guard = Leaks::exclusive(prefix);
    fork(|| {
        // The harness captures the test thread's output, and the child's copy of that
        // capture is lost at `_exit`: write panics straight to fd 2.
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "[child {}] {info}", std::process::id());
        }));
        let leaks = Leaks::snapshot(prefix);
        if let Err(e) = body() {
            panic!("the example failed: {e:?}");
        }
        leaks.assert_all_clean(Duration::from_secs(5));
        0
    })
    .wait_success(Duration::from_secs(secs));
}

#[test]
fn counter() {
    // Anonymous objects only: the prefix matches no name.
    run_example(
        60,
        &format!("ipct-shm-ex-{}-", std::process::id()),
        counter::main,
    );
}
