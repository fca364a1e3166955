//! Test support for the workspace's cross-process tests, written once.
//!
//! - [`fork`] runs a closure in a forked child that leaves with `_exit` (never returning into
//!   the test harness), dies with its test thread (`PR_SET_PDEATHSIG`), and turns a panic into
//!   exit code 101.
//! - [`Child::wait`] is the watchdog: a child that outlives its deadline is killed and the
//!   test fails; [`Child::kill`] injects a `SIGKILL` fault.
//! - [`Leaks`] snapshots open fds and `/dev/shm` entries and asserts nothing was left;
//!   [`unique_name`] gives each test its own random segment name.
//!
//! Tests that fork should run in a test binary whose other tests do not hold locks across the
//! fork (the child only runs the closure and `_exit`s).

#![deny(unsafe_code)]

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A forked child; waited for (and killed if still running) on drop, so no zombie is left.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

/// Forks; the child runs `f` and `_exit`s with its return value (101 if it panics).
///
/// # Panics
/// If `fork` fails.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `f` and then `_exit`s; test closures avoid locks that
    // another thread of the harness could hold across the fork (documented above).
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain prctl/getppid calls in the child.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: `_exit` ends the child without running the parent's destructors or atexit
        // handlers.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(code)
        }
    }
    Child { pid, reaped: false }
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `SIGKILL`.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        if !self.reaped {
            // SAFETY: signalling our own unreaped child; its pid cannot be reused yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    fn try_reap(&mut self) -> Option<Exit> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r != self.pid {
            return None;
        }
        self.reaped = true;
        Some(if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        })
    }

    /// Waits for the child to end within `timeout`; the watchdog kills it and panics (failing
    /// the test) if it does not.
    ///
    /// # Panics
    /// If the child is still running after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_reap() {
                return e;
            }
            if Instant::now() >= deadline {
                self.kill();
                let _ = self.wait_blocking();
                panic!(
                    "watchdog: child {} still running after {timeout:?}; killed",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits and asserts the child exited with code 0.
    ///
    /// # Panics
    /// On any other end, or on the watchdog.
    pub fn wait_success(self, timeout: Duration) {
        let pid = self.pid;
        let e = self.wait(timeout);
        assert_eq!(e, Exit::Code(0), "child {pid} failed");
    }

    fn wait_blocking(&mut self) -> Option<Exit> {
        let mut status = 0;
        // SAFETY: as in `try_reap`, blocking.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = true;
        (r == self.pid).then(|| {
            if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            }
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let _ = self.wait_blocking();
        }
    }
}

/// A test-unique segment name: `/ipct-<tag>-<16 random hex digits>`.
pub fn unique_name(tag: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("getrandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("/ipct-{tag}-{hex}")
}

/// The open file descriptors of this process.
pub fn open_fds() -> BTreeSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The names in `/dev/shm` that start with `prefix` (no leading slash).
pub fn shm_entries(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of this process's live (or zombie) children, from `/proc/self/task/*/children`.
pub fn child_pids() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// A snapshot of fds and `/dev/shm` entries (with a prefix) to compare against later.
///
/// Fds are process-wide and tests run in parallel threads, so fd checks belong in tests that
/// run alone in their binary or tolerate others (use [`Leaks::assert_no_new_shm`] otherwise).
#[derive(Debug)]
pub struct Leaks {
    fds: BTreeSet<i32>,
    shm_prefix: String,
    shm: BTreeSet<String>,
}

impl Leaks {
    /// Records the current state; `shm_prefix` selects the `/dev/shm` names to watch.
    pub fn snapshot(shm_prefix: &str) -> Leaks {
        let shm_prefix = shm_prefix.trim_start_matches('/').to_owned();
        Leaks {
            fds: open_fds(),
            shm: shm_entries(&shm_prefix),
            shm_prefix,
        }
    }

    /// Asserts no watched `/dev/shm` name appeared since the snapshot.
    ///
    /// # Panics
    /// If one did.
    pub fn assert_no_new_shm(&self) {
        let now = shm_entries(&self.shm_prefix);
        let new: Vec<_> = now.difference(&self.shm).collect();
        assert!(new.is_empty(), "/dev/shm entries left behind: {new:?}");
    }

    /// Asserts no fd opened since the snapshot is still open.
    ///
    /// # Panics
    /// If one is.
    pub fn assert_no_new_fds(&self) {
        let now = open_fds();
        let new: Vec<_> = now.difference(&self.fds).collect();
        assert!(new.is_empty(), "file descriptors left open: {new:?}");
    }

    /// Both checks.
    ///
    /// # Panics
    /// As each check.
    pub fn assert_clean(&self) {
        self.assert_no_new_shm();
        self.assert_no_new_fds();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_reports_codes_panics_and_kills() {
        assert_eq!(fork(|| 3).wait(Duration::from_secs(10)), Exit::Code(3));
        assert_eq!(
            fork(|| panic!("boom")).wait(Duration::from_secs(10)),
            Exit::Code(101)
        );
        let c = fork(|| {
            std::thread::sleep(Duration::from_secs(30));
            0
        });
        c.kill();
        assert_eq!(c.wait(Duration::from_secs(10)), Exit::Signal(libc::SIGKILL));
    }

    #[test]
    fn watchdog_fails_a_hung_child() {
        let r = std::panic::catch_unwind(|| {
            fork(|| {
                std::thread::sleep(Duration::from_secs(30));
                0
            })
            .wait(Duration::from_millis(50))
        });
        assert!(r.is_err());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
