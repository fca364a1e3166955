//! Two processes share a `Value` counter, an `Array` and a lock-free `AtomicValue`.
//!
//! Mirrors Python's
//! ```python
//! v = Value('Q', 0); a = Array('d', 4)
//! def work(v, a):
//!     for _ in range(100_000):
//!         with v.get_lock(): v.value += 1
//!     a[:] = [1.0, 2.0, 3.0, 4.0]
//! p = Process(target=work, args=(v, a)); p.start(); work(v, a); p.join()
//! ```
//! Run: `cargo run --release --example counter -p ipc-shm`

use std::sync::atomic::{AtomicU64, Ordering};

use ipc_shm::{Array, AtomicValue, Value};

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    const N: u64 = 100_000;
    let counter = Value::new(0u64)?;
    let hits = AtomicValue::<AtomicU64>::new(0)?;
    let squares = Array::<f64>::new(8)?;

    let work = |first: usize| -> Result<(), ipc_shm::Error> {
        for _ in 0..N {
            counter.update(|c| *c += 1)?;
            hits.fetch_add(1, Ordering::Relaxed);
        }
        let mut a = squares.lock()?;
        for i in (first..a.len()).step_by(2) {
            a[i] = (i * i) as f64;
        }
        Ok(())
    };

    // SAFETY: this program has one thread when it forks; the child only uses the shared
    // objects and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let code = i32::from(work(1).is_err());
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    work(0)?;
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error().into());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("child failed (wait status {status:#x})").into());
    }

    println!(
        "Value counter (under its lock): {} of {}",
        counter.get()?,
        2 * N
    );
    println!(
        "AtomicValue counter:            {} of {}",
        hits.load(Ordering::Relaxed),
        2 * N
    );
    println!("Array written by both:          {:?}", squares.to_vec()?);
    if counter.get()? != 2 * N || hits.load(Ordering::Relaxed) != 2 * N {
        return Err("lost updates".into());
    }
    if squares.to_vec()? != (0..8).map(|i| (i * i) as f64).collect::<Vec<_>>() {
        return Err("the array misses a process's writes".into());
    }
    Ok(())
}
