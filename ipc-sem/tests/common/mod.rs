//! Helpers shared by the cross-process tests (the fork/watchdog/leak machinery itself is
//! `ipc-testkit`).
#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub use ipc_testkit::{fork, unique_name, Child, Exit, Leaks};

/// How long any child may run before the watchdog kills it and fails the test.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// A unique `/dev/shm` name for this test and a leak snapshot covering it (and the `sem.`
/// file glibc makes for a named POSIX semaphore of the same name).
pub fn fresh(tag: &str) -> (String, Leaks, Leaks) {
    let name = unique_name(tag);
    let bare = name.trim_start_matches('/').to_owned();
    let shm = Leaks::snapshot(&bare);
    let sem = Leaks::snapshot(&format!("sem.{bare}"));
    (name, shm, sem)
}

/// The permission bits of `/dev/shm/<file>`.
pub fn mode_of(file: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(format!("/dev/shm/{file}"))
        .expect("stat /dev/shm entry")
        .permissions()
        .mode()
        & 0o7777
}

/// Polls `cond` every millisecond until it holds (the watchdog of the caller bounds it).
pub fn until(mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WATCHDOG, "condition never became true");
        std::thread::sleep(Duration::from_millis(1));
    }
}
