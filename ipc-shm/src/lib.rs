#![doc = include_str!("../README.md")]
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
