//! Removing names whose creator died without unlinking them.

use crate::error::{Error, Result};
use crate::header::MAGIC;
use crate::segment::read_header_of;
use crate::sys::{self, Liveness};

/// How old an empty name must be before `sweep` takes its creator for dead.
const STALE_EMPTY: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes the named typed segments whose names start with `prefix` (with or without the
/// leading `/`) and whose creator process is gone (dead, or its pid now belongs to a process
/// started at another time). Returns the names removed.
///
/// Only this user's segments are considered:
/// - a typed segment (it carries this workspace's header) is removed when its creator is
///   gone, also when the creator was killed before it published the segment as READY; one
///   created in another pid namespace is left alone (its creator pid means nothing here);
/// - an empty name (a creator killed between `shm_open` and sizing it) is removed once it is
///   older than ten seconds;
/// - raw [`SharedMemory`](crate::SharedMemory) segments have no header and are never swept.
///
/// `PosixSemaphore` names (`sem.*`) and `ipc-pipe` socket files record no creator and are
/// not swept here.
///
/// # Errors
/// `Io` if `/dev/shm` cannot be listed.
///
/// # Example
/// A creator that dies without unlinking its name, and the sweep that removes it:
/// ```
/// use ipc_shm::{sweep, Value};
///
/// let prefix = format!("ipc-shm-doc-sweep-{}", std::process::id());
/// let name = format!("/{prefix}-counter");
/// // SAFETY of the example: the child only creates the value and leaves with `_exit`.
/// match unsafe { libc::fork() } {
///     0 => {
///         // `_exit` runs no destructor: the name is left behind, as after a SIGKILL.
///         let ok = Value::create_named(&name, 7u64).map(std::mem::forget).is_ok();
///         unsafe { libc::_exit(if ok { 0 } else { 1 }) }
///     }
///     child => {
///         let mut status = 0;
///         unsafe { libc::waitpid(child, &mut status, 0) };
///         assert_eq!(status, 0);
///         assert_eq!(Value::<u64>::open_named(&name)?.get()?, 7); // still there
///         assert_eq!(sweep(&prefix)?.len(), 1);
///         assert!(Value::<u64>::open_named(&name).is_err()); // gone
///     }
/// }
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub fn sweep(prefix: &str) -> Result<Vec<String>> {
    let bare = prefix.strip_prefix('/').unwrap_or(prefix);
    let mut removed = Vec::new();
    for name in sys::list_shm_names(bare).map_err(|e| Error::io("read /dev/shm", e))? {
        let h = match read_header_of(&name) {
            Ok(Some(h)) => h,
            Ok(None) => {
                if sys::is_stale_empty_shm(&name, STALE_EMPTY) && sys::shm_unlink(&name).is_ok() {
                    removed.push(name);
                }
                continue;
            }
            Err(_) => continue,
        };
        if h.magic != MAGIC || h.creator_pid == 0 {
            continue;
        }
        let mine = sys::pid_namespace();
        if h.creator_pidns != 0 && mine != 0 && h.creator_pidns != mine {
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
