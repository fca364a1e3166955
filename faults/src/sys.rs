//! The crate's raw OS calls: a shared anonymous mapping and the monotonic clock.
#![allow(unsafe_code)]

use std::sync::atomic::AtomicU64;

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping viewed as atomics.
#[derive(Debug)]
pub(crate) struct SharedWords {
    ptr: *mut AtomicU64,
    n: usize,
}

// SAFETY: the mapping holds only atomics, which are Sync; the pointer is owned by this value.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access goes through `&AtomicU64`.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    pub(crate) fn new(n: usize) -> std::io::Result<SharedWords> {
        let len = n.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedWords {
            ptr: p.cast::<AtomicU64>(),
            n,
        })
    }

    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` maps `n` page-aligned, zero-initialised words for as long as `self`
        // lives; zero is a valid AtomicU64 and every access is atomic.
        unsafe { std::slice::from_raw_parts(self.ptr, self.n) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        let len = self.n.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: unmaps exactly the mapping `new` made; no reference outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), len);
        }
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
