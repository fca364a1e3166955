//! Our shared-memory rows (`ipc-shm`): V1, V2, V3.

use std::sync::atomic::{AtomicU64, Ordering::*};

use ipc_shm::{Array, AtomicValue, Value};

use crate::harness::{run_pair, run_procs, split_at, RoleOut};
use crate::refs_queue::with_backoff;
use crate::refs_shm::BLOCK;
use crate::{Measure, Outcome, Run};

fn shm_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-shm: {e:?}")
}

/// Runs 2 procs × n/2 increments through `inc`, then checks the final counter with `read`.
fn counter2(
    r: &Run,
    inc: &dyn Fn(u64) -> Result<(), String>,
    read: &dyn Fn() -> Result<u64, String>,
) -> Outcome {
    let half = r.n / 2;
    let run = || -> Result<Measure, String> {
        let g = run_procs(2, r.pin, &split_at(1), |g| {
            g.start();
            inc(half)?;
            Ok(RoleOut {
                sum: 0,
                count: half,
            })
        })?;
        let fin = read()?;
        if fin != 2 * half {
            return Err(format!("counter ended at {fin}, want {}", 2 * half));
        }
        Ok(Measure::new(2 * half, g.elapsed).with_cpu(g.cpu))
    };
    run().into()
}

/// V1: `Value::<u64>::new(0)`; 2 procs × n/2 `update(|x| *x += 1)`; final = n.
pub fn v1(r: &Run) -> Outcome {
    let v = match Value::<u64>::new(0) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed(shm_err(e)),
    };
    counter2(
        r,
        &|k| {
            for _ in 0..k {
                v.update(|x| *x += 1).map_err(shm_err)?;
            }
            Ok(())
        },
        &|| v.get().map_err(shm_err),
    )
}

/// V2: `AtomicValue<AtomicU64>`; 2 procs × n/2 `fetch_add(1, SeqCst)`.
pub fn v2(r: &Run) -> Outcome {
    let a = match AtomicValue::<AtomicU64>::new(0) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(shm_err(e)),
    };
    counter2(
        r,
        &|k| {
            for _ in 0..k {
                a.fetch_add(1, SeqCst);
            }
            Ok(())
        },
        &|| Ok(a.load(SeqCst)),
    )
}

/// V3: L5b on two `Array::<f64>::new(8 Mi)` slots written by the parent; the writer
/// fills the locked slice as bytes (memset, as L5b), the reader sums it as u64 words (checked).
pub fn v3(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let words = BLOCK / 8;
        let slots = [
            Array::<f64>::new(words).map_err(shm_err)?,
            Array::<f64>::new(words).map_err(shm_err)?,
        ];
        for s in &slots {
            s.lock().map_err(shm_err)?.fill(0.0);
        }
        let published = [
            AtomicValue::<AtomicU64>::new(0).map_err(shm_err)?,
            AtomicValue::<AtomicU64>::new(0).map_err(shm_err)?,
        ];
        let consumed = [
            AtomicValue::<AtomicU64>::new(0).map_err(shm_err)?,
            AtomicValue::<AtomicU64>::new(0).map_err(shm_err)?,
        ];
        let n = r.n;
        run_pair(n, r.pin, |g, writer| {
            // Untimed, as L5b: touch every 4 KiB page of both slots (the writer writes one
            // element per page, the reader reads one), so neither role's timed loop takes the
            // page faults of a mapping inherited without its page tables.
            for s in &slots {
                let mut guard = s.lock().map_err(shm_err)?;
                let mut acc = 0u64;
                for i in (0..guard.len()).step_by(512) {
                    if writer {
                        guard[i] = 0.0;
                    } else {
                        acc = acc.wrapping_add(guard[i].to_bits());
                    }
                }
                std::hint::black_box(acc);
            }
            g.start();
            for k in 0..n {
                let s = (k % 2) as usize;
                let round = k / 2;
                if writer {
                    with_backoff(|| (consumed[s].load(Acquire) == round).then_some(()));
                    // The same bytes with the same primitive as L5b: the slice as bytes,
                    // `fill` (memset).
                    let mut guard = slots[s].lock().map_err(shm_err)?;
                    bytemuck::cast_slice_mut::<f64, u8>(&mut guard).fill((k & 0xFF) as u8);
                    drop(guard);
                    published[s].store(round + 1, Release);
                } else {
                    with_backoff(|| (published[s].load(Acquire) == round + 1).then_some(()));
                    let guard = slots[s].lock().map_err(shm_err)?;
                    let sum = crate::refs_shm::sum_words(bytemuck::cast_slice::<f64, u64>(&guard));
                    drop(guard);
                    if sum != crate::refs_shm::block_sum((k & 0xFF) as u8) {
                        return Err(format!("block {k}: sum {sum:#x} wrong"));
                    }
                    consumed[s].store(round + 1, Release);
                }
            }
            Ok(RoleOut::NONE)
        })
    };
    run().into()
}
