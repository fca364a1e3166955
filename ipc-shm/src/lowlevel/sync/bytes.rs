//! Copies of bytes in and out of memory that another process may write at the same time.
//!
//! A plain or volatile copy that races a peer's write is a data race, undefined behaviour in
//! the Rust memory model whatever the hardware does. These copies use relaxed atomic loads and
//! stores instead: whole aligned 8-byte words where the range allows, single bytes at the
//! edges. A racing peer can still make the copy observe a mix of old and new bytes (so callers
//! validate what they copied), but never undefined behaviour. On x86-64 and AArch64 a relaxed
//! atomic access compiles to an ordinary load or store.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const WORD: usize = std::mem::size_of::<u64>();

/// Copies `dst.len()` bytes out of shared memory at `src` with relaxed atomic loads.
///
/// # Safety
/// - `src..src + dst.len()` lies inside one live mapping, readable for the whole call;
/// - every access to those bytes by this process (and, for a sound program, by peers written
///   in Rust) is atomic, so the range is never the target of a non-atomic `&mut` while copied.
#[inline]
pub unsafe fn load_bytes(src: *const u8, dst: &mut [u8]) {
    // SAFETY: forwarded from the caller; `dst` is a writable buffer of its own of that length.
    unsafe { load_bytes_raw(src, dst.as_mut_ptr(), dst.len()) }
}

/// [`load_bytes`] into `n` bytes at `dst`, which may be uninitialised (a `Vec`'s spare
/// capacity).
///
/// # Safety
/// As [`load_bytes`] for `src..src + n`; `dst..dst + n` is writable memory of the caller's own
/// that does not overlap the source.
#[inline(always)]
pub unsafe fn load_bytes_raw(src: *const u8, dst: *mut u8, n: usize) {
    if n % WORD == 0 && (src as usize) % WORD == 0 {
        // Whole aligned words only (a plain-data value in an aligned slot): with `n` known at
        // the call site this is a fixed number of loads, no edge loops.
        let mut i = 0;
        while i < n {
            // SAFETY: `src + i` is 8-byte aligned and its 8 bytes lie inside the range;
            // AtomicU64 is valid for every bit pattern; the unaligned write stays inside the
            // caller's buffer.
            unsafe {
                let w = (*src.add(i).cast::<AtomicU64>()).load(Ordering::Relaxed);
                dst.add(i)
                    .cast::<[u8; WORD]>()
                    .write_unaligned(w.to_ne_bytes());
            }
            i += WORD;
        }
        return;
    }
    let head = src.align_offset(WORD).min(n);
    let mut i = 0;
    while i < head {
        // SAFETY: `src + i` is inside the range (i < n); AtomicU8 has alignment 1 and is
        // valid for every bit pattern; `dst + i` is inside the caller's buffer.
        unsafe {
            dst.add(i)
                .write((*src.add(i).cast::<AtomicU8>()).load(Ordering::Relaxed))
        };
        i += 1;
    }
    while i + WORD <= n {
        // SAFETY: `src + i` is 8-byte aligned (i >= head, stepping by 8) and the 8 bytes lie
        // inside the range; AtomicU64 is valid for every bit pattern; the unaligned write
        // stays inside the caller's buffer.
        unsafe {
            let w = (*src.add(i).cast::<AtomicU64>()).load(Ordering::Relaxed);
            dst.add(i)
                .cast::<[u8; WORD]>()
                .write_unaligned(w.to_ne_bytes());
        }
        i += WORD;
    }
    while i < n {
        // SAFETY: as for the head bytes.
        unsafe {
            dst.add(i)
                .write((*src.add(i).cast::<AtomicU8>()).load(Ordering::Relaxed))
        };
        i += 1;
    }
}

/// Copies `src` into shared memory at `dst` with relaxed atomic stores.
///
/// # Safety
/// - `dst..dst + src.len()` lies inside one live, writable mapping for the whole call;
/// - every access to those bytes by this process is atomic (no live `&`/`&mut` of a
///   non-atomic type covers them).
#[inline(always)]
pub unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    if len % WORD == 0 && (dst as usize) % WORD == 0 {
        // Whole aligned words only, as in `load_bytes_raw`.
        for (k, chunk) in src.chunks_exact(WORD).enumerate() {
            let mut w = [0u8; WORD];
            w.copy_from_slice(chunk);
            // SAFETY: `dst + 8k` is 8-byte aligned and its 8 bytes lie inside the range.
            unsafe { &*dst.add(k * WORD).cast::<AtomicU64>() }
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        return;
    }
    let head = dst.align_offset(WORD).min(len);
    let mut i = 0;
    while i < head {
        // SAFETY: `dst + i` is inside the writable range; AtomicU8 has alignment 1.
        unsafe { &*dst.add(i).cast::<AtomicU8>() }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
    while i + WORD <= len {
        let mut w = [0u8; WORD];
        w.copy_from_slice(&src[i..i + WORD]);
        // SAFETY: `dst + i` is 8-byte aligned and the 8 bytes lie inside the writable range.
        unsafe { &*dst.add(i).cast::<AtomicU64>() }.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        i += WORD;
    }
    while i < len {
        // SAFETY: as for the head bytes.
        unsafe { &*dst.add(i).cast::<AtomicU8>() }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
}

/// Copies a plain-data value out of shared memory with [`load_bytes`].
///
/// # Safety
/// As [`load_bytes`], for `size_of::<T>()` bytes at `src`.
pub unsafe fn load_pod<T: bytemuck::Pod>(src: *const u8) -> T {
    let mut v = T::zeroed();
    // SAFETY: forwarded from the caller; `T: Pod` accepts any bytes.
    unsafe { load_bytes(src, bytemuck::bytes_of_mut(&mut v)) };
    v
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn copies_every_offset_and_length_both_ways() {
        let src: Vec<u8> = (0..200u8).collect();
        for off in 0..17 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 100] {
                let mut shared = vec![0u64; 32];
                let base = shared.as_mut_ptr().cast::<u8>();
                // SAFETY: off + len <= 116 < 256 bytes of `shared`, accessed only here.
                unsafe { store_bytes(base.add(off), &src[..len]) };
                let mut out = vec![0u8; len];
                // SAFETY: as above.
                unsafe { load_bytes(base.add(off), &mut out) };
                assert_eq!(out, &src[..len], "off {off} len {len}");
                let bytes: &[u8] = bytemuck::cast_slice(&shared);
                assert!(bytes[..off].iter().all(|&b| b == 0));
                assert!(bytes[off + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
