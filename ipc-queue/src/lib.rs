//! A bounded multi-producer multi-consumer queue in shared memory that survives killed
//! participants: the Rust counterpart of Python's `multiprocessing.Queue` and
//! `JoinableQueue`, lock-free and at shared-memory speed.
//!
//! | type | what it is |
//! |---|---|
//! | [`PodQueue`] | plain-data (`bytemuck::Pod`) values copied into slots; no codec, no allocation |
//! | [`Queue`] | any `serde` type, postcard-encoded into inline slots of `max_message_size` bytes |
//! | [`PodQueueBuilder`], [`QueueBuilder`] | capacity, message size, name |
//! | [`Error`], [`TryPutError`], [`PutTimeoutError`], [`PutError`] | errors; put errors hand the value back |
//!
//! Both share one lock-free ring (Vyukov's bounded MPMC queue, reworked so that every claimed
//! slot names its claimer). A put or get is one compare-and-swap on the position word, a copy
//! and a swap on the slot's state word: no shared counter, no system call and no allocation
//! unless it must wait. Waiting spins briefly, then sleeps on a futex on the state word of
//! the slot it waits for (woken only when someone sleeps there), with absolute deadlines on
//! the monotonic clock; every blocking call has a `try_` and a `_timeout` form.
//!
//! **Sharing.** [`PodQueue::new`] / [`Queue::new`] put the ring in an anonymous `memfd`:
//! processes forked afterwards share it and nothing can leak. `builder().named(name)` creates
//! a named `shm_open` segment (0600, `O_EXCL`, removed by its creator on drop) that unrelated
//! programs open with `open_named`, which checks owner, size, element type and layout.
//!
//! **Peer death.** A process killed in the middle of a put or get leaves a slot claimed in its
//! name. Whoever is blocked by that slot checks, after a few milliseconds, whether the owner
//! still lives (thread id and start time, from `/proc`); if not, a dead writer's slot becomes
//! a tombstone that consumers skip, and a dead reader's slot is freed, its message counted in
//! `dropped_by_dead_peers()`. Every other message is delivered exactly once, and no call
//! blocks past its deadline because of a dead peer. [`close`](PodQueue::close) wakes every
//! blocked caller.
//!
//! **Untrusted memory.** Every position, state and length read from the segment is checked;
//! a corrupt or hostile peer causes [`Error::Corrupted`], never undefined behaviour, a panic or
//! an endless loop.
//!
//! Two processes:
//! ```
//! use ipc_queue::PodQueue;
//!
//! let q = PodQueue::<u64>::new(64)?;
//! // SAFETY of the example: the child only uses the queue, then leaves with `_exit`.
//! match unsafe { libc::fork() } {
//!     0 => {
//!         let ok = (0..1000u64).all(|i| q.put(i).is_ok());
//!         unsafe { libc::_exit(if ok { 0 } else { 1 }) }
//!     }
//!     child => {
//!         let sum: u64 = (0..1000).map(|_| q.get().unwrap()).sum();
//!         assert_eq!(sum, 999 * 1000 / 2);
//!         let mut status = 0;
//!         unsafe { libc::waitpid(child, &mut status, 0) };
//!         assert_eq!(status, 0);
//!     }
//! }
//! # Ok::<(), ipc_queue::Error>(())
//! ```
//!
//! Linux only (memfd, futex, `/proc`).
//!
//! # Failpoints
//! Named fault points (`ipc_failpoints`, armed only with the `failpoints` feature) where crash
//! tests kill, stop or panic a participant:
//! - `queue.put.claimed`: a producer between its claim and its publication; a kill leaves a
//!   slot claimed by a dead writer (it becomes a tombstone), a stop a slow live one.
//! - `queue.get.claimed`: a consumer between its claim and its release; a kill loses the
//!   message it held (counted in `dropped_by_dead_peers`).
//! - `queue.tombstone.published`: a consumer that claimed a tombstone to skip it, before it
//!   frees the slot; a kill leaves a read claim on a tombstone (freed, nothing counted).
//! - `queue.publish.before_retire`: a producer whose write failed, after publishing the
//!   tombstone and before counting it retired for `join`.
//! - `queue.reclaim.before_retire`: a reclaimer after its CAS on a dead owner's slot and
//!   before counting the tombstone or dropped message retired.
//! - `queue.close.mid`: `close` after setting the closed flag, before waking sleepers.

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
pub use pod_queue::{PodQueue, PodQueueBuilder};
pub use queue::{Queue, QueueBuilder, DEFAULT_MAX_MESSAGE_SIZE};
