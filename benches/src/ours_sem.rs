//! Our semaphore and lock rows (`ipc-sem`): S1, S2, S3, S4.
//!
//! Until `ipc_sem::Semaphore` / `Lock` land, every row reports `skipped: not built yet`.

use crate::{Outcome, Run};

/// S1: `Semaphore::new(1)`; `acquire(); release()` pairs, one process.
pub fn s1(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// S2: `Lock::new()`; `drop(lock.lock())` pairs, one process.
pub fn s2(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// S3: one `Lock`, a u64 in its own mapping, 2 procs × n/2 locked volatile increments.
pub fn s3(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// S4: two `Semaphore::new(0)` ping-pong.
pub fn s4(_r: &Run) -> Outcome {
    Outcome::not_built()
}
