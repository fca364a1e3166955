//! Runs every example's `main` in a forked child under a watchdog, with a leak check inside
//! that child, so the examples cannot rot. `listener_authkey` needs the `auth` feature and
//! `tokio_echo` the `tokio` feature: `cargo test -p ipc-pipe --all-features --test examples`.

use std::time::Duration;

#[allow(dead_code, clippy::all)]
#[path = "../examples/request_response.rs"]
mod request_response;

#[cfg(feature = "auth")]
#[allow(dead_code, clippy::all)]
#[path = "../examples/listener_authkey.rs"]
mod listener_authkey;

#[cfg(feature = "tokio")]
#[allow(dead_code, clippy::all)]
#[path = "../examples/tokio_echo.rs"]
mod tokio_echo;

/// [`ipc_testkit::run_example_with`], also watching the examples' socket files
/// (`ipc-pipe-example-<pid>` in the temporary directory). The examples make no shared-memory
/// names: the prefix matches none.
fn run_example<E: std::fmt::Debug>(secs: u64, body: impl FnOnce() -> Result<(), E>) {
    let prefix = format!("ipct-pipe-ex-{}-", std::process::id());
    ipc_testkit::run_example_with(
        Duration::from_secs(secs),
        &prefix,
        |leaks| {
            leaks.watch_dir_prefix(
                std::env::temp_dir(),
                &format!("ipc-pipe-example-{}", std::process::id()),
            )
        },
        body,
    );
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

#[cfg(feature = "tokio")]
#[test]
fn tokio_echo() {
    let prefix = format!("ipct-pipe-ex-{}-", std::process::id());
    ipc_testkit::run_example_with(
        Duration::from_secs(60),
        &prefix,
        |leaks| leaks.watch_dir_prefix(std::env::temp_dir(), "ipc-pipe-tokio-echo-"),
        tokio_echo::main,
    );
}
