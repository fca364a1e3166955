//! Runs every example in a forked child under a watchdog, with a leak check inside that
//! child, so the examples cannot rot. Examples that take arguments are run through their
//! `run(args)` with small counts; `named_queue` runs its two roles in two processes.

use std::time::{Duration, Instant};

use ipc_testkit::{fork, unique_name};

#[cfg(feature = "async")]
#[allow(dead_code, clippy::all)]
#[path = "../examples/async_producer_consumer.rs"]
mod async_producer_consumer;

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

/// [`ipc_testkit::run_example`] with this binary's `/dev/shm` prefix ([`tag`]).
fn run_example(secs: u64, body: impl FnOnce() -> Res) {
    ipc_testkit::run_example(Duration::from_secs(secs), &format!("ipct-{}-", tag()), body);
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

#[cfg(feature = "async")]
#[test]
fn async_producer_consumer() {
    run_example(60, async_producer_consumer::main);
}
