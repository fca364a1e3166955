//! Helpers shared by the cross-process tests (the fork/watchdog/leak machinery itself is
//! `ipc-testkit`).
#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub use ipc_testkit::{unique_name, Child, Exit, Leaks};

/// `ipc_testkit::fork`, after making sure `ipc_shm` has registered its after-fork handler.
///
/// Works around an `ipc-shm` hazard: the handler is registered lazily inside a `Once` on a
/// thread's first lock, and a child forked while *another* thread is inside that `Once`
/// inherits it mid-run and blocks forever on its own first lock (reproduced: ~4 % of forks
/// in a tight race). Taking the stamp here first means the `Once` has completed before any
/// test forks, because the forking thread itself waits for it.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    let _ = ipc_shm::lowlevel::sync::OwnerStamp::current();
    ipc_testkit::fork(f)
}

/// How long any child may run before the watchdog kills it and fails the test.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// A unique `/dev/shm` name for this test and a leak snapshot covering it (and the `sem.`
/// file glibc makes for a named POSIX semaphore of the same name).
pub fn fresh(tag: &str) -> (String, Leaks, Leaks) {
    let name = unique_name(&format!("{}-{tag}", std::process::id()));
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

/// The leak guard every test of the cross-process files holds for its whole run
/// (`ipc_testkit::Leaks::exclusive`): tests of one binary then run one at a time, so the
/// fd, thread, mapping and child checks are exact. Its `/dev/shm` prefix is the one every
/// [`fresh`] name of this process has (`ipct-<pid>-`), so it also sees any named object (or
/// `sem.*` name) a test of this binary leaves, not only the ones a test checks itself.
pub fn leak_guard() -> ipc_testkit::LeakGuard {
    ipc_testkit::Leaks::exclusive(&format!("ipct-{}-", std::process::id()))
}
