//! Our pipe rows (`ipc-pipe`): C1d, C1s, C2, C2s, C3d, C3s, C4@s.
//!
//! Until `ipc_pipe::duplex` / `simplex` land, every row reports `skipped: not built yet`, and
//! the pipe size of our `simplex()` (which picks L4p / L4q) is unknown.

use crate::{Outcome, Run};

/// The `F_GETPIPE_SZ` of a fresh `simplex()` pipe, once `ipc-pipe` has landed.
pub fn simplex_pipe_size() -> Option<usize> {
    None
}

/// C1d (`duplex()`) and C1s (`simplex()`): 64 KiB `send_bytes`, `recv_bytes_into` one Vec.
pub fn c1(_r: &Run, _duplex: bool) -> Outcome {
    Outcome::not_built()
}

/// C2 (`duplex()`) and C2s (two simplex pairs): 8-byte round trips.
pub fn c2(_r: &Run, _duplex: bool) -> Outcome {
    Outcome::not_built()
}

/// C3d/C3s (`size` 64) and C4@s: `size`-byte messages over `duplex()` or `simplex()`.
pub fn c_msgs(_r: &Run, _duplex: bool, _size: usize) -> Outcome {
    Outcome::not_built()
}
