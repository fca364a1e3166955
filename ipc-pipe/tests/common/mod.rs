//! Shared support for ipc-pipe's cross-process tests: fork a child with a
//! watchdog (a hang becomes a failure, never a stuck CI), reap it always (no
//! zombies), count open fds, make unique socket paths.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Default time a child may take before the watchdog kills it.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// A forked child, reaped on drop (SIGKILLed first if still running).
pub struct Child {
    pid: libc::pid_t,
    reaped: bool,
    fired: Arc<AtomicBool>,
    cancel: Option<mpsc::Sender<()>>,
}

fn write_stderr(msg: &str) {
    // SAFETY: writes a valid buffer to fd 2; no locks involved (safe after fork).
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Forks; the child runs `f` and leaves with `libc::_exit`: 0 if `f` returned
/// `Ok`, 1 (message on stderr) if `Err`, 101 if it panicked. It never returns
/// into the test harness. A watchdog thread SIGKILLs it after `WATCHDOG`.
pub fn fork<F: FnOnce() -> Result<(), String>>(f: F) -> Child {
    fork_with_watchdog(WATCHDOG, f)
}

/// [`fork`] with a custom watchdog deadline.
pub fn fork_with_watchdog<F: FnOnce() -> Result<(), String>>(limit: Duration, f: F) -> Child {
    // SAFETY: the child only runs `f` (which uses the crate under test and
    // async-signal-tolerant calls) and then `_exit`s; it never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                write_stderr(&format!("child failed: {msg}\n"));
                1
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                write_stderr(&format!("child panicked: {msg}\n"));
                101
            }
        };
        // SAFETY: leaves the child at once: no destructors, no atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let fired = Arc::new(AtomicBool::new(false));
    let (cancel, rx) = mpsc::channel::<()>();
    let flag = fired.clone();
    thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            flag.store(true, Ordering::SeqCst);
            // SAFETY: kill(2) on our unreaped child's pid (it cannot be reused
            // before we reap it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    Child {
        pid,
        reaped: false,
        fired,
        cancel: Some(cancel),
    }
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(!self.reaped);
        // SAFETY: our child, not yet reaped.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for the child to end (the watchdog bounds it) and reaps it.
    /// Panics if the watchdog had to kill it.
    pub fn wait(&mut self) -> Exit {
        assert!(!self.reaped);
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                break;
            }
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR),
                "waitpid failed"
            );
        }
        self.reaped = true;
        self.cancel.take();
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "watchdog killed child {} after {WATCHDOG:?}: it hung",
            self.pid
        );
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        }
    }

    /// Waits and asserts the child exited with 0.
    pub fn join_ok(&mut self) {
        assert_eq!(
            self.wait(),
            Exit::Code(0),
            "child {} did not succeed",
            self.pid
        );
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our child, not yet reaped; kill then reap it so no zombie
            // or orphan outlives the test.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                while libc::waitpid(self.pid, &mut status, 0) < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
            }
        }
    }
}

/// Open fds of this process (`/proc/self/fd`, not counting the directory
/// handle used to list it).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
        - 1
}

/// A fresh Unix socket path in the temp dir, unique per process and call.
pub fn unique_socket_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).expect("getrandom");
    std::env::temp_dir().join(format!(
        "ipc-pipe-test-{tag}-{}-{}-{:016x}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        u64::from_ne_bytes(r)
    ))
}

/// Turns any error into the child's `Err(String)`.
pub fn s<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// In a forked child: closes an inherited fd the child must not hold (the
/// parent's end of a pair), so the peer sees EOF when the child is done. The
/// child leaves with `_exit`, so the handle owning `fd` never closes it again.
pub fn close_in_child(fd: std::os::fd::RawFd) {
    // SAFETY: close(2) on an inherited fd whose owning handle in this child is
    // never dropped (the child `_exit`s).
    unsafe { libc::close(fd) };
}
