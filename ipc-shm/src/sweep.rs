//! Removing names whose creator died without unlinking them.

use crate::error::{Error, Result};
use crate::header::MAGIC;
use crate::segment::read_header_of;
use crate::sys::{self, Liveness};

/// Removes the named typed segments whose names start with `prefix` (with or without the
/// leading `/`) and whose creator process is gone (dead, or its pid now belongs to a process
/// started at another time). Returns the names removed.
///
/// Only this user's segments that carry a valid header are considered: raw
/// [`SharedMemory`](crate::SharedMemory) segments have no header and are never swept, and a
/// segment still being initialised is left alone.
///
/// # Errors
/// `Io` if `/dev/shm` cannot be listed.
pub fn sweep(prefix: &str) -> Result<Vec<String>> {
    let bare = prefix.strip_prefix('/').unwrap_or(prefix);
    let mut removed = Vec::new();
    for name in sys::list_shm_names(bare).map_err(|e| Error::io("read /dev/shm", e))? {
        let Ok(Some(h)) = read_header_of(&name) else {
            continue;
        };
        if h.magic != MAGIC || h.creator_pid == 0 {
            continue;
        }
        let dead = match sys::liveness(h.creator_pid) {
            Liveness::Dead => true,
            Liveness::Alive { start_time } => {
                h.creator_start != 0 && start_time != 0 && start_time != h.creator_start
            }
        };
        if dead && sys::shm_unlink(&name).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}
