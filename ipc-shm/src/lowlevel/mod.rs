//! The stable low-level API that `ipc-sem`, `ipc-queue` and users build their own
//! primitives on: typed segments, their header, segment names, and the synchronisation cores
//! that live inside a segment.
//!
//! Everything here is public and follows the crate's semver: a breaking change to any item is
//! a breaking change of `ipc-shm`. Nothing here is an implementation detail; test hooks alone
//! are `#[doc(hidden)]`.
//!
//! # Items and their soundness contracts
//! - [`Segment`]: a `MAP_SHARED` mapping that starts with a validated [`header`]. `create`
//!   runs its `init` before any opener can see the payload (the header's state goes
//!   INIT -> READY last); `open_named` checks owner, size and every header field against the
//!   expected [`Layout`] and waits up to a timeout ([`DEFAULT_OPEN_TIMEOUT`]) for READY. It
//!   hands out raw pointers only ([`Segment::payload`], 128-byte aligned,
//!   [`Segment::payload_len`] bytes): every byte of the payload may be written by another
//!   process at any time, so a primitive built on it may only place types there that are
//!   valid for every bit pattern (atomics, `bytemuck::Pod` data) and must access memory a
//!   peer may write through atomics ([`sync::load_bytes`], [`sync::store_bytes`]), validating
//!   every length, index and counter it reads. The creating process alone unlinks a name.
//! - [`Layout`] and [`header`]: what an opener checks (kind, kind version, element type,
//!   size, alignment, capacity, slot size). Two primitives must never share a kind string;
//!   bump `kind_version` whenever the payload's meaning changes.
//! - [`name`]: validation and normalisation of segment names (`/name`) and generation of
//!   unpredictable ones (`/ipc-<16 hex>`, from the OS RNG).
//! - [`sync`]: the cores inside a segment ([`sync::Futex`], [`sync::Deadline`],
//!   [`sync::OwnerStamp`], [`sync::RawLock`], the atomic byte copies). Each is valid for every
//!   bit pattern, all-zero is its initial state, and a peer that scribbles over it produces
//!   an error, a spurious wake-up or a take-over, never undefined behaviour.

pub mod header;
pub mod name;
#[allow(unsafe_code)]
pub mod sync;

pub use crate::segment::{Segment, DEFAULT_OPEN_TIMEOUT};
pub use header::Layout;
