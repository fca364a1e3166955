#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-shm needs Linux (memfd, futex, /proc); other platforms are not supported yet");

mod array;
mod atomic_value;
mod error;
mod locked;
pub mod lowlevel;
mod raw;
mod segment;
mod shared_memory;
mod sweep;
#[allow(unsafe_code)]
#[cfg_attr(loom, allow(dead_code))]
mod sys;
mod value;

pub use array::{Array, ArrayGuard};
pub use atomic_value::{AtomicFlag, AtomicValue, SharedAtomic};
pub use error::{
    Error, LockError, LockResult, LockTimeoutError, LockTimeoutResult, Result, TryLockError,
    TryLockResult,
};
pub use raw::{RawArray, RawValue};
pub use shared_memory::SharedMemory;
pub use sweep::sweep;
pub use value::{Value, ValueGuard};

// Crate-internal short paths to the low-level modules.
pub(crate) use lowlevel::{header, name, sync};
