//! Reference rows for queues and rings: L1 (spin ping-pong), L2 (futex ping-pong), P1
//! (crossbeam in-process), P3 (ipc-channel), P7 (plain SPSC and Vyukov rings in shared memory)
//! and P8 (ipmpsc). Each is written exactly as `WORKLOADS.md` 2.1 defines it.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use crossbeam_utils::Backoff;

use crate::checksum::{consume_bytes, produce_bytes, Acc, Plan};
use crate::harness::{run_mxn, run_mxn_threads, run_pair, Role, RoleOut, Shared, ZeroShared};
use crate::{Measure, Outcome, Run};

/// An atomic alone in a 128-byte block.
#[repr(C, align(128))]
pub struct Padded<A>(pub A);
// SAFETY: a padded zero-valid atomic is zero-valid; padding bytes are never read.
unsafe impl ZeroShared for Padded<AtomicU64> {}
// SAFETY: as above.
unsafe impl ZeroShared for Padded<AtomicU32> {}

/// L1 core: `n` spin round trips on one `AtomicU64`, pinned when `pin`. Returns ns per RT.
pub fn spin_pingpong(n: u64, pin: bool) -> Result<Measure, String> {
    let w = Shared::<Padded<AtomicU64>>::new()?;
    run_pair(n, pin, |g, a| {
        let w = &w.0;
        let side = u64::from(!a);
        g.start();
        for i in 0..n {
            let want = 2 * i + side;
            while w.load(Acquire) != want {
                spin_loop();
            }
            w.store(want + 1, Release);
        }
        Ok(RoleOut::NONE)
    })
}

/// L1: spin ping-pong, 2 procs.
pub fn l1(r: &Run) -> Outcome {
    spin_pingpong(r.n, r.pin).into()
}

/// L2: futex ping-pong on an `AtomicU32` alone in a 128-byte block (shared futex ops).
pub fn l2(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let w = Shared::<Padded<AtomicU32>>::new()?;
        let n = r.n;
        run_pair(n, r.pin, |g, a| {
            let w = &w.0;
            let side = u32::from(!a);
            g.start();
            for i in 0..n as u32 {
                let want = 2 * i + side;
                loop {
                    let seen = w.load(Acquire);
                    if seen == want {
                        break;
                    }
                    crate::os::futex_wait(w, seen);
                }
                w.store(want + 1, Release);
                crate::os::futex_wake(w, 1);
            }
            Ok(RoleOut::NONE)
        })
    };
    run().into()
}

/// P7a's single-producer single-consumer ring.
#[repr(C)]
pub struct Spsc {
    head: Padded<AtomicU64>,
    tail: Padded<AtomicU64>,
    buf: [AtomicU64; 1024],
}
// SAFETY: atomics only; all-zero is the empty ring.
unsafe impl ZeroShared for Spsc {}

/// P7b/P7c's Vyukov bounded MPMC ring slot: 16 bytes, unpadded.
#[repr(C)]
pub struct VSlot {
    seq: AtomicU64,
    val: AtomicU64,
}
// SAFETY: atomics only.
unsafe impl ZeroShared for VSlot {}

/// P7b/P7c's Vyukov bounded MPMC ring (capacity 1024).
#[repr(C)]
pub struct Vyukov {
    enq: Padded<AtomicU64>,
    deq: Padded<AtomicU64>,
    slots: [VSlot; 1024],
}
// SAFETY: atomics only; `init` sets the sequence numbers before use.
unsafe impl ZeroShared for Vyukov {}

const CAP: u64 = 1024;

impl Vyukov {
    /// A fresh ring in shared memory (`seq[i] = i`).
    pub fn new_shared() -> Result<Shared<Vyukov>, String> {
        let v = Shared::<Vyukov>::new()?;
        for (i, s) in v.slots.iter().enumerate() {
            s.seq.store(i as u64, Relaxed);
        }
        Ok(v)
    }
    /// Push; `false` when full.
    #[inline]
    pub fn try_push(&self, val: u64) -> bool {
        let mut pos = self.enq.0.load(Relaxed);
        loop {
            let slot = &self.slots[(pos & (CAP - 1)) as usize];
            let seq = slot.seq.load(Acquire);
            let dif = seq.wrapping_sub(pos) as i64;
            if dif == 0 {
                match self
                    .enq
                    .0
                    .compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed)
                {
                    Ok(_) => {
                        slot.val.store(val, Relaxed);
                        slot.seq.store(pos + 1, Release);
                        return true;
                    }
                    Err(p) => pos = p,
                }
            } else if dif < 0 {
                return false;
            } else {
                pos = self.enq.0.load(Relaxed);
            }
        }
    }
    /// Pop; `None` when empty.
    #[inline]
    pub fn try_pop(&self) -> Option<u64> {
        let mut pos = self.deq.0.load(Relaxed);
        loop {
            let slot = &self.slots[(pos & (CAP - 1)) as usize];
            let seq = slot.seq.load(Acquire);
            let dif = seq.wrapping_sub(pos + 1) as i64;
            if dif == 0 {
                match self
                    .deq
                    .0
                    .compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed)
                {
                    Ok(_) => {
                        let v = slot.val.load(Relaxed);
                        slot.seq.store(pos + CAP, Release);
                        return Some(v);
                    }
                    Err(p) => pos = p,
                }
            } else if dif < 0 {
                return None;
            } else {
                pos = self.deq.0.load(Relaxed);
            }
        }
    }
}

/// Retries `f` until it succeeds, with a `Backoff` made at the first failed try.
#[inline(always)]
pub fn with_backoff<T>(mut f: impl FnMut() -> Option<T>) -> T {
    if let Some(v) = f() {
        return v;
    }
    let b = Backoff::new();
    loop {
        b.snooze();
        if let Some(v) = f() {
            return v;
        }
    }
}

/// P7a: SPSC ring 1→1 procs.
pub fn p7a(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let ring = Shared::<Spsc>::new()?;
        let plan = Plan::new(r.n, 1, 1);
        run_mxn(plan, r.pin, |g, role| {
            let q = &*ring;
            g.start();
            match role {
                Role::Producer(_) => {
                    let mut tail = 0u64;
                    let mut head = 0u64;
                    for i in 0..plan.per {
                        with_backoff(|| {
                            if tail - head == CAP {
                                head = q.head.0.load(Acquire);
                                if tail - head == CAP {
                                    return None;
                                }
                            }
                            Some(())
                        });
                        q.buf[(tail & (CAP - 1)) as usize].store(i, Relaxed);
                        tail += 1;
                        q.tail.0.store(tail, Release);
                    }
                    Ok(RoleOut {
                        sum: 0,
                        count: plan.per,
                    })
                }
                Role::Consumer(_) => {
                    let mut acc = Acc::default();
                    let mut head = 0u64;
                    let mut tail = 0u64;
                    for _ in 0..plan.per_consumer() {
                        with_backoff(|| {
                            if head == tail {
                                tail = q.tail.0.load(Acquire);
                                if head == tail {
                                    return None;
                                }
                            }
                            Some(())
                        });
                        acc.add(q.buf[(head & (CAP - 1)) as usize].load(Relaxed));
                        head += 1;
                        q.head.0.store(head, Release);
                    }
                    Ok(acc.out())
                }
            }
        })
    };
    run().into()
}

/// P7b / P7c / P7b@MxN: the Vyukov ring with `m` producer and `c` consumer processes.
pub fn p7_vyukov(r: &Run, m: usize, c: usize) -> Outcome {
    let run = || -> Result<Measure, String> {
        let ring = Vyukov::new_shared()?;
        let plan = Plan::new(r.n, m, c);
        run_mxn(plan, r.pin, |g, role| {
            let q = &*ring;
            g.start();
            match role {
                Role::Producer(_) => {
                    for i in 0..plan.per {
                        with_backoff(|| q.try_push(i).then_some(()));
                    }
                    Ok(RoleOut {
                        sum: 0,
                        count: plan.per,
                    })
                }
                Role::Consumer(_) => {
                    let mut acc = Acc::default();
                    for _ in 0..plan.per_consumer() {
                        acc.add(with_backoff(|| q.try_pop()));
                    }
                    Ok(acc.out())
                }
            }
        })
    };
    run().into()
}

/// P1a/P1b (and P1a at M→N): `crossbeam_queue::ArrayQueue<u64>` (1024) in threads, Backoff.
pub fn p1_array_queue(r: &Run, m: usize, c: usize) -> Outcome {
    let q = crossbeam_queue::ArrayQueue::<u64>::new(1024);
    let plan = Plan::new(r.n, m, c);
    run_mxn_threads(plan, r.pin, |g, role| {
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    with_backoff(|| q.push(i).ok());
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                for _ in 0..plan.per_consumer() {
                    acc.add(with_backoff(|| q.pop()));
                }
                Ok(acc.out())
            }
        }
    })
    .into()
}

/// P1c/P1d: `crossbeam_channel::bounded::<u64>(1024)` in threads, blocking send/recv.
pub fn p1_channel(r: &Run, m: usize, c: usize) -> Outcome {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
    let plan = Plan::new(r.n, m, c);
    run_mxn_threads(plan, r.pin, |g, role| {
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    tx.send(i).map_err(|_| "send: channel closed".to_string())?;
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                for _ in 0..plan.per_consumer() {
                    acc.add(rx.recv().map_err(|_| "recv: channel closed".to_string())?);
                }
                Ok(acc.out())
            }
        }
    })
    .into()
}

fn ipc_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-channel: {e:?}")
}

/// P3a: `ipc_channel::ipc::channel::<u64>()`, 1→1 procs.
pub fn p3a(r: &Run) -> Outcome {
    let (tx, rx) = match ipc_channel::ipc::channel::<u64>() {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(format!("ipc-channel: {:?}", e.kind())),
    };
    let plan = Plan::new(r.n, 1, 1);
    run_mxn(plan, r.pin, |g, role| {
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    tx.send(i).map_err(ipc_err)?;
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                for _ in 0..plan.per_consumer() {
                    acc.add(rx.recv().map_err(ipc_err)?);
                }
                Ok(acc.out())
            }
        }
    })
    .into()
}

/// P3b / P3b@s: `channel::<Vec<u8>>()`, `send(msg.clone())` of a prepared `size`-byte Vec.
pub fn p3b(r: &Run, size: usize) -> Outcome {
    let (tx, rx) = match ipc_channel::ipc::channel::<Vec<u8>>() {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(format!("ipc-channel: {:?}", e.kind())),
    };
    let plan = Plan::new(r.n, 1, 1);
    run_mxn(plan, r.pin, |g, role| {
        let mut msg = vec![0x5au8; size];
        g.start();
        match role {
            Role::Producer(_) => {
                produce_bytes(plan.per, &mut msg, |m| tx.send(m.clone()).map_err(ipc_err))
            }
            Role::Consumer(_) => {
                consume_bytes(plan.per_consumer(), size, || rx.recv().map_err(ipc_err))
            }
        }
    })
    .into()
}

/// P3c / P3c@64 / P3c@s: `ipc::bytes_channel()`, `send(&[u8])` of `size` bytes.
pub fn p3c(r: &Run, size: usize) -> Outcome {
    let (tx, rx) = match ipc_channel::ipc::bytes_channel() {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(format!("ipc-channel: {:?}", e.kind())),
    };
    let plan = Plan::new(r.n, 1, 1);
    run_mxn(plan, r.pin, |g, role| {
        let mut msg = vec![0x5au8; size];
        g.start();
        match role {
            Role::Producer(_) => produce_bytes(plan.per, &mut msg, |m| tx.send(m).map_err(ipc_err)),
            Role::Consumer(_) => {
                consume_bytes(plan.per_consumer(), size, || rx.recv().map_err(ipc_err))
            }
        }
    })
    .into()
}

/// P3d: ipc-channel round trips over two `channel::<u64>()`.
pub fn p3d(r: &Run) -> Outcome {
    let pair = ipc_channel::ipc::channel::<u64>()
        .and_then(|a| Ok((a, ipc_channel::ipc::channel::<u64>()?)));
    let ((tx1, rx1), (tx2, rx2)) = match pair {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(format!("ipc-channel: {:?}", e.kind())),
    };
    let n = r.n;
    run_pair(n, r.pin, |g, a| {
        g.start();
        for i in 0..n {
            if a {
                tx1.send(i).map_err(ipc_err)?;
                let v = rx2.recv().map_err(ipc_err)?;
                if v != i {
                    return Err(format!("echo {v} != {i}"));
                }
            } else {
                let v = rx1.recv().map_err(ipc_err)?;
                tx2.send(v).map_err(ipc_err)?;
            }
        }
        Ok(RoleOut::NONE)
    })
    .into()
}

/// P8: ipmpsc 0.5.1 `SharedRingBuffer` (12288 B) on a tmpfs file, 1→1 procs.
pub fn p8(r: &Run) -> Outcome {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(crate::os::unique_name("bench-ipmpsc").trim_start_matches('/'));
    let Some(path_s) = path.to_str().map(str::to_owned) else {
        return Outcome::Skipped("ipmpsc: temp path is not UTF-8".into());
    };
    let buf = match ipmpsc::SharedRingBuffer::create(&path_s, 12288) {
        Ok(b) => b,
        Err(e) => return Outcome::Skipped(format!("ipmpsc create: {e:?}")),
    };
    let plan = Plan::new(r.n, 1, 1);
    let res = run_mxn(plan, r.pin, |g, role| match role {
        Role::Producer(_) => {
            let tx = ipmpsc::Sender::new(buf.clone());
            g.start();
            for i in 0..plan.per {
                tx.send(&i).map_err(|e| format!("ipmpsc send: {e:?}"))?;
            }
            Ok(RoleOut {
                sum: 0,
                count: plan.per,
            })
        }
        Role::Consumer(_) => {
            let rx = ipmpsc::Receiver::new(buf.clone());
            g.start();
            let mut acc = Acc::default();
            for _ in 0..plan.per_consumer() {
                acc.add(
                    rx.recv::<u64>()
                        .map_err(|e| format!("ipmpsc recv: {e:?}"))?,
                );
            }
            Ok(acc.out())
        }
    });
    drop(buf);
    let _ = std::fs::remove_file(&path);
    res.into()
}
