//! Our queue rows (`ipc-queue`): Q1, Q1t, Q2, Q3, Q4, Q5, Q6@s, Q7@MxN.
//!
//! Each row is one function. Until `ipc_queue::PodQueue` / `Queue` land, every row reports
//! `skipped: not built yet` rather than a number.

use crate::{Outcome, Run};

/// Q1: `PodQueue::<u64>::new(1024)`, 1P→1C procs, blocking `put`/`get`.
pub fn q1(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// Q1t: Q1 with `try_put`/`try_get` + Backoff, as P7b.
pub fn q1t(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// Q2 (2→2) and Q7@MxN: Q1 with `m` producer and `c` consumer procs.
pub fn q_mxn(_r: &Run, _m: usize, _c: usize) -> Outcome {
    Outcome::not_built()
}

/// Q3: `Queue::<u64>` (serde + postcard), 1P→1C.
pub fn q3(_r: &Run) -> Outcome {
    Outcome::not_built()
}

/// Q4 (`size` 1024) and Q6@s: `Queue::<Vec<u8>>`, `max_message_size` = size + 64, `put(&msg)`.
pub fn q_bytes(_r: &Run, _size: usize) -> Outcome {
    Outcome::not_built()
}

/// Q5: ping-pong over two `PodQueue<u64>`.
pub fn q5(_r: &Run) -> Outcome {
    Outcome::not_built()
}
