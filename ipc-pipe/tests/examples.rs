//! Runs the examples' `main` in a forked child under the watchdog, so they cannot rot.
#![cfg(all(feature = "tokio", feature = "serde"))]

mod common;

#[allow(dead_code, clippy::all)]
#[path = "../examples/tokio_echo.rs"]
mod tokio_echo;

#[test]
fn tokio_echo() {
    let _leaks =
        common::leak_guard().watch_dir_prefix(std::env::temp_dir(), "ipc-pipe-tokio-echo-");
    let mut child = common::fork(|| tokio_echo::main().map_err(|e| e.to_string()));
    child.join_ok();
}
