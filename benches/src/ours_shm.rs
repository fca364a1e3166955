//! Our shared-memory rows (`ipc-shm`): V1, V2, V3.
//!
//! Until `ipc_shm::Value` / `AtomicValue` / `Array` land, every row reports
//! `skipped: not built yet`.

use crate::{Outcome, Run};

/// V1: `Value::<u64>::new(0)`; 2 procs × n/2 `update(|x| *x += 1)`; final = n.
pub fn v1(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// V2: `AtomicValue<AtomicU64>`; 2 procs × n/2 `fetch_add(1, SeqCst)`.
pub fn v2(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// V3: L5b on two `Array::<f64>::new(8 Mi)` slots under their locks.
pub fn v3(_r: &Run) -> Outcome {
    Outcome::not_built()
}
