//! `Leaks::exclusive`: the guard sees what its test leaves, is not fooled by the threads of
//! tests waiting for it, and survives a test that panicked while holding it.

use std::time::Duration;

use ipc_testkit::{unique_name, Leaks};

#[test]
fn a_leaked_fd_is_reported_and_closing_it_clears_the_report() {
    let guard = Leaks::exclusive(&unique_name("kit-none"));
    let f = std::fs::File::open("/dev/null").unwrap();
    let r = guard.report();
    assert!(
        r.iter()
            .any(|l| l.starts_with("file descriptors left open")),
        "{r:?}"
    );
    drop(f);
    guard.finish();
}

#[test]
fn threads_waiting_for_the_guard_are_not_leaks() {
    let guard = Leaks::exclusive(&unique_name("kit-none"));
    let waiter = std::thread::spawn(|| Leaks::exclusive(&unique_name("kit-none")).finish());
    // The waiter is a new thread of this process, but it waits for this guard: once it is
    // registered as waiting, the report is clean.
    assert_eq!(
        guard.report_within(Duration::from_secs(10)),
        Vec::<String>::new()
    );
    // A thread that is not waiting for the guard is a leak.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || rx.recv());
    let r = guard.report();
    assert!(
        r.iter().any(|l| l.starts_with("threads still running")),
        "{r:?}"
    );
    drop(tx);
    let _ = other.join();
    guard.finish();
    waiter.join().unwrap();
}

#[test]
fn a_panic_while_holding_the_guard_does_not_poison_it_for_others() {
    let held = std::thread::spawn(|| {
        let _guard = Leaks::exclusive(&unique_name("kit-none"));
        panic!("test failed while holding the guard (on purpose)");
    });
    assert!(held.join().is_err());
    Leaks::exclusive(&unique_name("kit-none")).finish();
}
