//! ipc-pipe's additions to the workspace test kit (`ipc-testkit`, which does the
//! forking, `_exit`, `PR_SET_PDEATHSIG`, reaping and leak checks).
//!
//! What stays here:
//! - [`fork`] adapts the kit's `fork` to closures returning `Result<(), String>`
//!   (the error goes to stderr with a raw `write`, then exit code 1) and arms a
//!   background watchdog. The kit's watchdog lives in `Child::wait`, so it cannot
//!   help while the test thread is blocked on the connection before it waits;
//!   this one SIGKILLs the child after [`WATCHDOG`] whatever the parent is
//!   doing, which turns a hung exchange into `Disconnected` and a failed test.
//! - [`unique_socket_path`] and [`close_in_child`]: pipe-specific.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use ipc_testkit::Exit;

/// Time a child may take before the watchdog kills it.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// A child forked with [`fork`]: the kit's `Child` plus the background watchdog.
/// Dropping it stops the watchdog, then the kit kills and reaps the child.
pub struct Child {
    // Field order is drop order: the watchdog stops before the child is reaped,
    // so it can never signal a reused pid.
    dog: Option<(mpsc::Sender<()>, JoinHandle<bool>)>,
    inner: Option<ipc_testkit::Child>,
}

fn write_stderr(msg: &str) {
    // SAFETY: writes a valid buffer to fd 2; takes no lock (safe after fork).
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Forks (through `ipc_testkit::fork`); the child runs `f` and `_exit`s with 0
/// if it returned `Ok`, 1 (message on stderr) if `Err`, 101 if it panicked.
pub fn fork<F: FnOnce() -> Result<(), String>>(f: F) -> Child {
    let inner = ipc_testkit::fork(move || match f() {
        Ok(()) => 0,
        Err(msg) => {
            write_stderr(&format!("child failed: {msg}\n"));
            1
        }
    });
    let pid = inner.pid();
    let (cancel, rx) = mpsc::channel::<()>();
    let dog = thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
            // SAFETY: kill(2) on our child; it is not reaped before this thread
            // is joined (see `Child::stop_dog`), so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    Child {
        dog: Some((cancel, dog)),
        inner: Some(inner),
    }
}

impl Child {
    fn kit(&self) -> &ipc_testkit::Child {
        self.inner.as_ref().expect("child already waited for")
    }

    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.kit().pid()
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: libc::c_int) {
        self.kit().signal(sig);
    }

    /// Stops the background watchdog; true if it had fired.
    fn stop_dog(&mut self) -> bool {
        match self.dog.take() {
            Some((cancel, dog)) => {
                drop(cancel);
                dog.join().unwrap_or(true)
            }
            None => false,
        }
    }

    /// Waits for the child to end (bounded by the kit's watchdog) and reaps it.
    /// Panics if either watchdog had to kill it.
    pub fn wait(&mut self) -> Exit {
        let fired = self.stop_dog();
        let pid = self.pid();
        let inner = self.inner.take().expect("child already waited for");
        let exit = inner.wait(WATCHDOG);
        assert!(
            !fired,
            "watchdog killed child {pid} after {WATCHDOG:?}: it hung"
        );
        exit
    }

    /// Waits and asserts the child exited with 0.
    pub fn join_ok(&mut self) {
        let pid = self.pid();
        assert_eq!(self.wait(), Exit::Code(0), "child {pid} did not succeed");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop_dog();
        // `inner` drops next: the kit kills and reaps a child still running.
    }
}

/// A fresh Unix socket path in the temp dir, with the kit's random name.
pub fn unique_socket_path(tag: &str) -> PathBuf {
    let name = ipc_testkit::unique_name(&format!("pipe-{}-{tag}", std::process::id()));
    std::env::temp_dir().join(format!("{}.sock", name.trim_start_matches('/')))
}

/// The prefix of every name [`unique_socket_path`] makes in this process (it has the
/// pid, so a leak check of the shared temporary directory sees only this binary's files).
pub fn socket_prefix() -> String {
    format!("ipct-pipe-{}-", std::process::id())
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

/// The leak guard every test of the cross-process files holds for its whole run
/// (`ipc_testkit::Leaks::exclusive`): tests of one binary then run one at a time, so
/// the fd, thread, mapping and child checks are exact. Connections make no
/// `/dev/shm` names: the prefix is one nothing has, so that part checks nothing.
pub fn leak_guard() -> ipc_testkit::LeakGuard {
    ipc_testkit::Leaks::exclusive(&ipc_testkit::unique_name("pipe-noshm"))
}
