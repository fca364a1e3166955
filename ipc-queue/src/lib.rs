#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-queue needs Linux (memfd, futex, /proc)");

#[cfg(feature = "serde")]
#[allow(unsafe_code)]
mod codec;
mod error;
mod handle;
mod loom;
mod pod_queue;
#[cfg(feature = "serde")]
mod queue;
#[allow(unsafe_code)]
mod ring;

#[cfg(feature = "serde")]
pub use error::CodecError;
pub use error::{
    Error, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, Result, TryGetError,
    TryPutError,
};
/// The shared-memory crate whose types appear in this crate's public signatures,
/// re-exported so callers need no version match.
pub use ipc_shm;
pub use pod_queue::{PodQueue, PodQueueBuilder};
#[cfg(feature = "serde")]
pub use queue::{Queue, QueueBuilder, DEFAULT_MAX_MESSAGE_SIZE};
