//! Runs every example in a forked child under a watchdog, with a leak check inside that
//! child, so the examples cannot rot. Examples that take arguments are run through their
//! `run(args)` with small counts; `named_queue` runs its two roles in two processes.

use std::io::Write;
use std::time::{Duration, Instant};

use ipc_testkit::{fork, unique_name, Leaks};

#[allow(dead_code, clippy::all)]
#[path = "../examples/named_queue.rs"]
mod named_queue;

#[allow(dead_code, clippy::all)]
#[path = "../examples/pairs.rs"]
mod pairs;

#[allow(dead_code, clippy::all)]
#[path = "../examples/producer_consumer.rs"]
mod producer_consumer;

#[allow(dead_code, clippy::all)]
#[path = "../examples/throughput.rs"]
mod throughput;

type Res = Result<(), Box<dyn std::error::Error>>;

/// The `/dev/shm` prefix of this binary's names (`unique_name(&tag())` makes them).
fn tag() -> String {
    format!("queue-ex-{}", std::process::id())
}

/// Runs `body` in a forked child (single-threaded, so its leak check is exact) and fails the
/// test if `body` returns an error or panics, leaves an fd, a thread, a shared mapping, a
/// child or a `/dev/shm` name of this binary ([`tag`]), or still runs after `secs` seconds.
/// The binary's leak lock is held throughout, so the examples run one at a time.
fn run_example(secs: u64, body: impl FnOnce() -> Res) {
    let prefix = format!("ipct-{}-", tag());
    let _guard = Leaks::exclusive(&prefix);
    fork(|| {
        // The harness captures the test thread's output, and the child's copy of that
        // capture is lost at `_exit`: write panics straight to fd 2.
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "[child {}] {info}", std::process::id());
        }));
        let leaks = Leaks::snapshot(&prefix);
        if let Err(e) = body() {
            panic!("the example failed: {e}");
        }
        leaks.assert_all_clean(Duration::from_secs(5));
        0
    })
    .wait_success(Duration::from_secs(secs));
}

#[test]
fn named_queue() {
    let name = unique_name(&tag());
    run_example(60, || {
        let server = fork(|| i32::from(named_queue::run(&["serve", &name]).is_err()));
        // The server creates the request queue, then the reply queue: once the second name
        // exists, the client finds both (an open waits for the segment to be ready).
        let reply = format!("/dev/shm{name}-reply");
        let start = Instant::now();
        while !std::path::Path::new(&reply).exists() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err("the server never created its queues".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        named_queue::run(&["client", &name])?;
        server.wait_success(Duration::from_secs(30));
        Ok(())
    });
}

#[test]
fn pairs() {
    run_example(60, || pairs::run(&["both", "5000"]));
}

#[test]
fn producer_consumer() {
    run_example(60, producer_consumer::main);
}

#[test]
fn throughput() {
    run_example(120, || {
        throughput::run(&["20000", "1", "1"])?;
        throughput::run(&["20000", "2", "2"])
    });
}
