//! Shared memory for processes: raw segments, typed `Value`/`Array`, and the synchronisation
//! cores every other crate of the workspace builds on.
//!
//! | type | what it is | Python |
//! |---|---|---|
//! | [`SharedMemory`] | raw bytes, no header; named segments interoperate with Python | `shared_memory.SharedMemory` |
//! | [`Value`] | one `T: Pod` behind a lock that survives its holder's death | `Value(t, lock=True)` |
//! | [`Array`] | `[T]` behind one such lock, zero-copy through a guard | `Array(t, n, lock=True)` |
//! | [`RawValue`], [`RawArray`] | the same with no lock | `lock=False` |
//! | [`AtomicValue`], [`AtomicFlag`] | a lock-free atomic counter or flag | (none) |
//! | [`sync`] | `Futex`, `Deadline`, `RawLock`: the cores of `ipc-sem` and `ipc-queue` | |
//! | [`Segment`], [`Layout`] | the header-validated storage of every typed object | |
//! | [`sweep`] | removes names whose creator died | |
//!
//! Objects are shared in one of two ways. **Inherited** (`new`): the memory is an anonymous
//! `memfd` mapped `MAP_SHARED`; children forked afterwards share it, and nothing has a name
//! that could leak. **Named** (`create_named` / `open_named`): a `shm_open` segment that
//! unrelated processes open by name, created `0600` with `O_EXCL`; the creating handle removes
//! the name on drop, openers never do, and an opener checks owner, size and the typed header
//! (magic, version, kind, element type and layout) before trusting a byte.
//!
//! Only `bytemuck::Pod` types go into shared memory, so anything a peer writes is a valid
//! value; every length and index read from a segment is validated and copied once.
//!
//! ```
//! use ipc_shm::Value;
//!
//! let counter = Value::new(0u64)?;
//! // SAFETY of the example: the child only uses the shared value and leaves with `_exit`.
//! match unsafe { libc::fork() } {
//!     0 => {
//!         let ok = (0..1000).all(|_| counter.update(|c| *c += 1).is_ok());
//!         unsafe { libc::_exit(if ok { 0 } else { 1 }) }
//!     }
//!     child => {
//!         for _ in 0..1000 {
//!             counter.update(|c| *c += 1)?;
//!         }
//!         let mut status = 0;
//!         unsafe { libc::waitpid(child, &mut status, 0) };
//!         assert_eq!(counter.get()?, 2000);
//!     }
//! }
//! # Ok::<(), ipc_shm::Error>(())
//! ```
//!
//! Linux only (memfd, futex, `/proc`).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-shm needs Linux (memfd, futex, /proc); other platforms are not supported yet");

mod array;
mod atomic_value;
mod error;
pub mod header;
mod locked;
pub mod name;
mod raw;
mod segment;
mod shared_memory;
mod sweep;
#[allow(unsafe_code)]
pub mod sync;
#[allow(unsafe_code)]
#[cfg_attr(loom, allow(dead_code))]
mod sys;
mod value;

pub use array::{Array, ArrayGuard};
pub use atomic_value::{AtomicFlag, AtomicValue, SharedAtomic};
pub use error::{Error, LockError, Result};
pub use header::Layout;
pub use raw::{RawArray, RawValue};
pub use segment::{Segment, DEFAULT_OPEN_TIMEOUT};
pub use shared_memory::SharedMemory;
pub use sweep::sweep;
pub use value::{Value, ValueGuard};
