//! Reference rows for bulk memory: L5a (`memcpy` of 64 MiB in one thread) and L5b (two 64 MiB
//! slots of a raw shared mapping handed between a writer and a reader process).

use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::harness::{run_pair, RoleOut, Shared, ShmRegion, ZeroShared};
use crate::refs_queue::{with_backoff, Padded};
use crate::{Measure, Outcome, Run};

/// Bytes in one L5 block.
pub const BLOCK: usize = 64 << 20;

/// L5a: `ptr::copy_nonoverlapping` of one 64 MiB buffer into another, `n` times.
pub fn l5a(r: &Run) -> Outcome {
    let src = vec![0x11u8; BLOCK];
    let mut dst = vec![0x22u8; BLOCK];
    crate::harness::time_local(|| {
        for _ in 0..r.n {
            // SAFETY: both buffers are BLOCK bytes and distinct allocations.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), BLOCK) };
            std::hint::black_box(&mut dst);
        }
        Ok(r.n)
    })
    .into()
}

/// Per-slot hand-off counters of L5b (and V3).
#[repr(C)]
pub struct Handoff {
    /// Blocks published into slot 0 and 1.
    pub published: [Padded<AtomicU64>; 2],
    /// Blocks consumed from slot 0 and 1.
    pub consumed: [Padded<AtomicU64>; 2],
}
// SAFETY: atomics only; zero means nothing published or consumed.
unsafe impl ZeroShared for Handoff {}

/// Sum of a block filled with byte `b`, as 8 Mi wrapping u64 words.
pub fn block_sum(b: u8) -> u64 {
    let w = u64::from_le_bytes([b; 8]);
    w.wrapping_mul((BLOCK / 8) as u64)
}

/// Wrapping sum of a slice of u64 words.
#[inline]
pub fn sum_words(w: &[u64]) -> u64 {
    let mut s = [0u64; 4];
    let mut it = w.chunks_exact(4);
    for c in &mut it {
        s[0] = s[0].wrapping_add(c[0]);
        s[1] = s[1].wrapping_add(c[1]);
        s[2] = s[2].wrapping_add(c[2]);
        s[3] = s[3].wrapping_add(c[3]);
    }
    let mut t = s[0]
        .wrapping_add(s[1])
        .wrapping_add(s[2])
        .wrapping_add(s[3]);
    for x in it.remainder() {
        t = t.wrapping_add(*x);
    }
    t
}

/// L5b: two 64 MiB slots of a raw shared region; writer memsets, reader sums, Backoff waits.
pub fn l5b(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let region = ShmRegion::new(2 * BLOCK)?;
        // SAFETY: the region is 2 * BLOCK bytes.
        unsafe { std::ptr::write_bytes(region.as_ptr(), 0, 2 * BLOCK) };
        let h = Shared::<Handoff>::new()?;
        let n = r.n;
        let base = region.as_ptr() as usize;
        run_pair(n, r.pin, |g, writer| {
            let slot = |k: u64| (base + (k as usize % 2) * BLOCK) as *mut u8;
            // Untimed: touch every page of both slots.
            for k in 0..2 {
                for off in (0..BLOCK).step_by(4096) {
                    // SAFETY: off < BLOCK inside slot k of the live mapping.
                    unsafe {
                        let p = slot(k).add(off);
                        if writer {
                            p.write_volatile(0);
                        } else {
                            std::hint::black_box(p.read_volatile());
                        }
                    }
                }
            }
            g.start();
            for k in 0..n {
                let s = (k % 2) as usize;
                let round = k / 2;
                if writer {
                    with_backoff(|| (h.consumed[s].0.load(Acquire) == round).then_some(()));
                    // SAFETY: the reader is done with this slot (consumed == round).
                    unsafe { std::ptr::write_bytes(slot(k), (k & 0xFF) as u8, BLOCK) };
                    h.published[s].0.store(round + 1, Release);
                } else {
                    with_backoff(|| (h.published[s].0.load(Acquire) == round + 1).then_some(()));
                    // SAFETY: the writer published this slot and will not touch it until we
                    // release it; the slot is BLOCK bytes, 8-aligned.
                    let words =
                        unsafe { std::slice::from_raw_parts(slot(k).cast::<u64>(), BLOCK / 8) };
                    let sum = sum_words(words);
                    if sum != block_sum((k & 0xFF) as u8) {
                        return Err(format!("block {k}: sum {sum:#x} wrong"));
                    }
                    h.consumed[s].0.store(round + 1, Release);
                }
            }
            Ok(RoleOut::NONE)
        })
    };
    run().into()
}
