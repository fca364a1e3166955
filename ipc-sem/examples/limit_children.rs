//! A semaphore limiting how many of 6 forked children work at once, as in Python:
//!
//! ```python
//! sem = multiprocessing.Semaphore(2)
//! def work(i):
//!     with sem:
//!         time.sleep(0.05)
//! ```
//!
//! Run: `cargo run -p ipc-sem --example limit_children`

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipc_sem::Semaphore;
use ipc_shm::AtomicValue;

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    const LIMIT: u32 = 2;
    let sem = Semaphore::new(LIMIT)?;
    // Shared counters: how many children work right now, and the most ever seen at once.
    let active = AtomicValue::<AtomicU32>::new(0)?;
    let peak = AtomicValue::<AtomicU32>::new(0)?;

    let mut children = Vec::new();
    for i in 0..6 {
        // SAFETY: this program is single-threaded; the child only uses the shared objects
        // and leaves with `_exit`, running no destructor of the parent's state.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if pid == 0 {
            let code = match sem.guard() {
                // At most LIMIT children hold a unit at once.
                Ok(_unit) => {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    println!(
                        "child {i} (pid {}) working, {now} active",
                        std::process::id()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    active.fetch_sub(1, Ordering::SeqCst);
                    0
                }
                Err(e) => {
                    eprintln!("child {i}: {e}");
                    1
                }
            };
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) } == pid;
        if !(reaped && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    let peak = peak.load(Ordering::SeqCst);
    println!("at most {peak} children worked at once (limit {LIMIT})");
    if failed > 0 {
        return Err(format!("{failed} children failed").into());
    }
    if peak > LIMIT || sem.value() != LIMIT {
        return Err(format!("peak {peak}, value {} (limit {LIMIT})", sem.value()).into());
    }
    Ok(())
}
