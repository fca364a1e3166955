//! Our process and pool rows (`ipc-pool`): K1, K2a, K2b, K3, K4, K5@w.
//!
//! Until `ipc_pool::Process` / `Pool` land, every row reports `skipped: not built yet`.

use crate::{Outcome, Run};

/// K1: sequential `pool.apply(sq, i)` on a 2-worker pool.
pub fn k1(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// K2a (`chunk = None`, default chunking) and K2b (`Some(1)`): `pool.map(sq, 0..n)`.
pub fn k2(_r: &Run, _chunk: Option<usize>) -> Outcome {
    Outcome::not_built()
}

/// K3 (`workers` 2) and K5@w: serial `burn` ×n, `pool.map(burn, 0..n)`, serial again.
pub fn k_burn(_r: &Run, _workers: usize) -> Outcome {
    Outcome::not_built()
}

/// K4: `Process::spawn(|| {})` + `join()`, in the harness process.
pub fn k4(_r: &Run) -> Outcome {
    Outcome::not_built()
}
