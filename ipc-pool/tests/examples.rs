//! Runs every example's `main` in a forked child with a watchdog, so the examples cannot rot.

mod common;

use common::{children, in_child_checked};

macro_rules! example {
    ($name:ident, $path:literal, $secs:expr) => {
        #[allow(dead_code, clippy::all)]
        #[path = $path]
        mod $name;

        #[test]
        fn $name() {
            let _leaks = common::leak_guard();
            in_child_checked($secs, || {
                $name::main().unwrap();
                assert!(children().is_empty(), "children left: {:?}", children());
            });
        }
    };
}

example!(echo_server, "../examples/echo_server.rs", 30);
example!(process_queue, "../examples/process_queue.rs", 30);
example!(shared_counter, "../examples/shared_counter.rs", 30);
example!(primes, "../examples/primes.rs", 60);
example!(fork_basics, "../examples/fork_basics.rs", 30);
example!(tour, "../examples/tour.rs", 60);
#[cfg(feature = "async")]
example!(tokio_service, "../examples/tokio_service.rs", 60);
