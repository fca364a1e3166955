//! Runs every example's `main` in a forked child under a watchdog, with a leak check inside
//! that child, so the examples cannot rot.

use std::time::Duration;

#[allow(dead_code, clippy::all)]
#[path = "../examples/limit_children.rs"]
mod limit_children;

#[allow(dead_code, clippy::all)]
#[path = "../examples/lock_survives_killed_holder.rs"]
mod lock_survives_killed_holder;

fn run_example<E: std::fmt::Debug>(secs: u64, prefix: &str, body: impl FnOnce() -> Result<(), E>) {
    ipc_testkit::run_example(Duration::from_secs(secs), prefix, body);
}

/// The prefix of the leak checks: the examples make anonymous objects only, so it matches no
/// name.
fn prefix() -> String {
    format!("ipct-sem-ex-{}-", std::process::id())
}

#[test]
fn limit_children() {
    run_example(60, &prefix(), limit_children::main);
}

#[test]
fn lock_survives_killed_holder() {
    run_example(60, &prefix(), lock_survives_killed_holder::main);
}
