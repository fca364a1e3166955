//! The crate's unsafe corner: shared words over an `ipc_shm::SharedMemory`, and the monotonic
//! clock.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU64;

/// A shared memory segment (`ipc_shm::SharedMemory`, inherited by forked children) viewed as
/// atomics.
#[derive(Debug)]
pub(crate) struct SharedWords {
    shm: ipc_shm::SharedMemory,
    n: usize,
}

impl SharedWords {
    pub(crate) fn new(n: usize) -> std::io::Result<SharedWords> {
        let len = n.max(1) * std::mem::size_of::<AtomicU64>();
        let shm = ipc_shm::SharedMemory::new(len).map_err(std::io::Error::other)?;
        Ok(SharedWords { shm, n })
    }

    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the segment holds `n` zero-initialised words, page-aligned, for as long as
        // `self` (which owns it) lives; zero is a valid AtomicU64 and every access, in every
        // process that inherited it, goes through these atomics.
        unsafe { std::slice::from_raw_parts(self.shm.as_ptr().cast::<AtomicU64>(), self.n) }
    }
}

pub(crate) fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
