//! A lock whose holder is killed with SIGKILL: in Python the next `lock.acquire()` blocks
//! forever; here the next locker is told, repairs the shared data and carries on.
//!
//! ```python
//! lock = multiprocessing.Lock()
//! p = Process(target=lambda: (lock.acquire(), time.sleep(60))); p.start(); p.kill()
//! lock.acquire()   # hangs forever
//! ```
//!
//! Run: `cargo run -p ipc-sem --example lock_survives_killed_holder`

use std::time::{Duration, Instant};

use ipc_sem::{Lock, LockTimeoutError};
use ipc_shm::RawValue;

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?;
    // Two counters the lock keeps equal; a holder killed between the two writes breaks that.
    let pair = RawValue::new([0u64; 2])?;

    // SAFETY: this program is single-threaded; the child only uses the shared objects and
    // never returns (it is killed, or leaves with `_exit`).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let Ok(guard) = lock.lock() else {
            // SAFETY: leaves the child without running the parent's destructors.
            unsafe { libc::_exit(1) }
        };
        let [a, b] = pair.get();
        pair.set([a + 1, b]); // half-way through an update...
        std::mem::forget(guard);
        for _ in 0..60 {
            std::thread::sleep(Duration::from_secs(1)); // ...and killed here
        }
        // SAFETY: reached only if nobody killed us within a minute; leaves the child
        // without running the parent's destructors.
        unsafe { libc::_exit(1) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pair.get()[0] == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    if pair.get()[0] == 0 {
        return Err("the holder never took the lock".into());
    }
    println!("holder {pid} killed while holding the lock");

    let start = Instant::now();
    match lock.lock_timeout(Duration::from_secs(5)) {
        Err(LockTimeoutError::OwnerDied(guard)) => {
            let [a, b] = pair.get();
            println!(
                "OwnerDied after {:?}: pair is {a}/{b}, repairing",
                start.elapsed()
            );
            pair.set([a.max(b), a.max(b)]);
            guard.mark_consistent();
        }
        Ok(_) => return Err("the lock was free: the holder's death went unnoticed".into()),
        Err(e) => return Err(ipc_sem::Error::from(e).into()),
    }
    let guard = lock.lock().map_err(ipc_sem::Error::from)?;
    println!("lock usable again; pair is {:?}", pair.get());
    drop(guard);
    Ok(())
}
