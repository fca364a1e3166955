#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(target_os = "linux"))]
compile_error!("ipc-queue needs Linux (memfd, futex, /proc)");

#[allow(unsafe_code)]
mod codec;
mod error;
mod handle;
mod loom;
mod pod_queue;
mod queue;
#[allow(unsafe_code)]
mod ring;

pub use error::{CodecError, Error, PutError, PutTimeoutError, Result, TryPutError};
/// The shared-memory crate whose types appear in this crate's public signatures,
/// re-exported so callers need no version match.
pub use ipc_shm;
pub use pod_queue::{PodQueue, PodQueueBuilder};
pub use queue::{Queue, QueueBuilder, DEFAULT_MAX_MESSAGE_SIZE};
