//! Runs every example's `main` in a forked child under a watchdog, with a leak check inside
//! that child, so the examples cannot rot. `listener_authkey` needs the `auth` feature:
//! `cargo test -p ipc-pipe --features auth --test examples`.

use std::io::Write;
use std::time::Duration;

use ipc_testkit::{fork, Leaks};

#[allow(dead_code, clippy::all)]
#[path = "../examples/request_response.rs"]
mod request_response;

#[cfg(feature = "auth")]
#[allow(dead_code, clippy::all)]
#[path = "../examples/listener_authkey.rs"]
mod listener_authkey;

/// Runs `body` in a forked child (single-threaded, so its leak check is exact) and fails the
/// test if `body` returns an error or panics, leaves an fd, a thread, a shared mapping, a
/// child or a socket file of the examples (`ipc-pipe-example-<pid>` in the temporary
/// directory), or still runs after `secs` seconds. The binary's leak lock is held
/// throughout, so the examples run one at a time.
fn run_example<E: std::fmt::Debug>(secs: u64, body: impl FnOnce() -> Result<(), E>) {
    // The examples make no shared-memory names: the prefix matches none.
    let prefix = format!("ipct-pipe-ex-{}-", std::process::id());
    let _guard = Leaks::exclusive(&prefix);
    fork(|| {
        // The harness captures the test thread's output, and the child's copy of that
        // capture is lost at `_exit`: write panics straight to fd 2.
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "[child {}] {info}", std::process::id());
        }));
        let leaks = Leaks::snapshot(&prefix).watch_dir_prefix(
            std::env::temp_dir(),
            &format!("ipc-pipe-example-{}", std::process::id()),
        );
        if let Err(e) = body() {
            panic!("the example failed: {e:?}");
        }
        leaks.assert_all_clean(Duration::from_secs(5));
        0
    })
    .wait_success(Duration::from_secs(secs));
}

#[test]
fn request_response() {
    run_example(60, request_response::main);
}

#[cfg(feature = "auth")]
#[test]
fn listener_authkey() {
    run_example(60, listener_authkey::main);
}
