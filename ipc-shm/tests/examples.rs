//! Runs every example's `main` in a forked child under a watchdog, with a leak check inside
//! that child, so the examples cannot rot.

use std::time::Duration;

#[allow(dead_code, clippy::all)]
#[path = "../examples/counter.rs"]
mod counter;

fn run_example<E: std::fmt::Debug>(secs: u64, prefix: &str, body: impl FnOnce() -> Result<(), E>) {
    ipc_testkit::run_example(Duration::from_secs(secs), prefix, body);
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
