//! Our semaphore and lock rows (`ipc-sem`): S1, S2, S3, S4.

use ipc_sem::{Lock, Semaphore};

use crate::harness::{run_procs, split_at, time_local, RoleOut, ShmRegion};
use crate::{Measure, Outcome, Run};

fn sem_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-sem: {e:?}")
}

/// S1: `Semaphore::new(1)`; `acquire(); release()` pairs, one process.
pub fn s1(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let s = Semaphore::new(1).map_err(sem_err)?;
        time_local(|| {
            for _ in 0..r.n {
                s.acquire().map_err(sem_err)?;
                s.release().map_err(sem_err)?;
            }
            Ok(r.n)
        })
    };
    run().into()
}

/// S2: `Lock::new()`; `drop(lock.lock())` pairs, one process.
pub fn s2(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let l = Lock::new().map_err(sem_err)?;
        time_local(|| {
            for _ in 0..r.n {
                drop(l.lock().map_err(sem_err)?);
            }
            Ok(r.n)
        })
    };
    run().into()
}

/// S3: one `Lock`; a u64 alone in a 128-byte block of its own mapping; 2 procs × n/2
/// (`lock()`; volatile +1; drop). Final = n.
pub fn s3(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let l = Lock::new().map_err(sem_err)?;
        let region = ShmRegion::new(128)?;
        let p = region.as_ptr() as usize;
        let half = r.n / 2;
        let g = run_procs(2, r.pin, &split_at(1), |g| {
            g.start();
            for _ in 0..half {
                let guard = l.lock().map_err(sem_err)?;
                // SAFETY: the counter is in the live shared mapping, guarded by the lock.
                unsafe {
                    let c = p as *mut u64;
                    c.write_volatile(c.read_volatile() + 1);
                }
                drop(guard);
            }
            Ok(RoleOut {
                sum: 0,
                count: half,
            })
        })?;
        // SAFETY: both roles have exited; plain read of the counter.
        let fin = unsafe { (p as *const u64).read_volatile() };
        if fin != 2 * half {
            return Err(format!("counter ended at {fin}, want {}", 2 * half));
        }
        Ok(Measure::new(2 * half, g.elapsed).with_cpu(g.cpu))
    };
    run().into()
}

/// S4: two `Semaphore::new(0)`; A `release(a); acquire(b)`, B `acquire(a); release(b)`.
pub fn s4(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let a = Semaphore::new(0).map_err(sem_err)?;
        let b = Semaphore::new(0).map_err(sem_err)?;
        let n = r.n;
        let g = run_procs(2, r.pin, &split_at(1), |g| {
            let is_a = g.role() == 0;
            g.start();
            for _ in 0..n {
                if is_a {
                    a.release().map_err(sem_err)?;
                    b.acquire().map_err(sem_err)?;
                } else {
                    a.acquire().map_err(sem_err)?;
                    b.release().map_err(sem_err)?;
                }
            }
            Ok(RoleOut::NONE)
        })?;
        Ok(Measure::new(n, g.elapsed).with_cpu(g.cpu))
    };
    run().into()
}
