//! Rough throughput of `PodQueue<u64>` (capacity 1024) across processes, beside a plain
//! Vyukov ring in shared memory (the `benches/` reference P7b written inline), and of
//! `Queue<u64>` (serde).
//!
//! ```text
//! cargo run --release -p ipc-queue --example throughput -- [messages] [producers] [consumers]
//! ```
//! Defaults: 10,000,000 messages, 1 producer, 1 consumer. Every run checks the sum of what
//! the consumers received. (`tests/examples.rs` runs it with a few thousand messages.) The criterion benches and the `compare` run in `benches/` are the
//! real measurement; this is a quick look.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipc_queue::{PodQueue, Queue};
use ipc_shm::SharedMemory;

const CAP: usize = 1024;

/// Forks `producers` + `consumers` children running `produce(k, per)` / `consume(count)`,
/// where each consumer returns its sum through `sums`; returns (seconds, total sum).
fn time_children(
    n: u64,
    producers: u64,
    consumers: u64,
    produce: &dyn Fn(u64, u64),
    consume: &dyn Fn(u64) -> u64,
) -> (f64, u64) {
    let sums = SharedMemory::new(8 * 64).expect("shared memory");
    let per = n / producers;
    let take = per * producers / consumers;
    let start = Instant::now();
    let mut pids = Vec::new();
    for c in 0..consumers {
        let sums = &sums;
        pids.push(fork(&|| {
            let s = consume(take);
            sums.write_at(8 * c as usize, &s.to_le_bytes()).is_ok()
        }));
    }
    for k in 0..producers {
        pids.push(fork(&|| {
            produce(k, per);
            true
        }));
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "child {pid} failed");
    }
    let secs = start.elapsed().as_secs_f64();
    let mut total = 0u64;
    for c in 0..consumers {
        let mut b = [0u8; 8];
        sums.read_at(8 * c as usize, &mut b).expect("read");
        total = total.wrapping_add(u64::from_le_bytes(b));
    }
    let expect = producers.wrapping_mul(per.wrapping_mul(per.wrapping_sub(1)) / 2);
    assert_eq!(total, expect, "checksum");
    (secs, total)
}

fn fork(f: &dyn Fn() -> bool) -> libc::pid_t {
    // SAFETY: the example is single-threaded; the child runs `f` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // A panic must not unwind into the parent's code that this child is a copy of.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    pid
}

/// P7b: Vyukov's ring exactly as `WORKLOADS.md` defines it, in a memfd mapping.
#[repr(C)]
struct Vyukov {
    enq: AtomicU64,
    _p0: [u64; 15],
    deq: AtomicU64,
    _p1: [u64; 15],
    slots: [(AtomicU64, AtomicU64); CAP],
}

fn backoff(step: &mut u32) {
    if *step <= 6 {
        for _ in 0..1u32 << *step {
            std::hint::spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
    *step = (*step + 1).min(10);
}

impl Vyukov {
    fn push(&self, v: u64) {
        let mut step = 0;
        loop {
            let pos = self.enq.load(Ordering::Relaxed);
            let slot = &self.slots[pos as usize & (CAP - 1)];
            let seq = slot.0.load(Ordering::Acquire);
            if seq == pos {
                if self
                    .enq
                    .compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    slot.1.store(v, Ordering::Relaxed);
                    slot.0.store(pos + 1, Ordering::Release);
                    return;
                }
            } else if (seq as i64 - pos as i64) < 0 {
                backoff(&mut step);
            }
        }
    }

    fn pop(&self) -> u64 {
        let mut step = 0;
        loop {
            let pos = self.deq.load(Ordering::Relaxed);
            let slot = &self.slots[pos as usize & (CAP - 1)];
            let seq = slot.0.load(Ordering::Acquire);
            if seq == pos + 1 {
                if self
                    .deq
                    .compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    let v = slot.1.load(Ordering::Relaxed);
                    slot.0.store(pos + CAP as u64, Ordering::Release);
                    return v;
                }
            } else if (seq as i64 - (pos as i64 + 1)) < 0 {
                backoff(&mut step);
            }
        }
    }
}

/// Runs the example with its command-line arguments, `[messages] [producers] [consumers]`
/// (also called by `tests/examples.rs`).
pub fn run(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = args
        .iter()
        .map(|a| a.replace('_', "").parse())
        .collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(10_000_000);
    let p = args.get(1).copied().unwrap_or(1).max(1);
    let c = args.get(2).copied().unwrap_or(1).max(1);
    let rate = |secs: f64| n as f64 / secs / 1e6;

    let mem = SharedMemory::new(std::mem::size_of::<Vyukov>())?;
    // SAFETY: the mapping is page-aligned and large enough for `Vyukov`, whose fields are
    // atomics (valid for any bits); it outlives every use below.
    let ring = unsafe { &*mem.as_ptr().cast::<Vyukov>() };
    for (i, s) in ring.slots.iter().enumerate() {
        s.0.store(i as u64, Ordering::Relaxed);
    }
    let (vy, _) = time_children(
        n,
        p,
        c,
        &|_, per| (0..per).for_each(|i| ring.push(i)),
        &|take| (0..take).fold(0u64, |s, _| s.wrapping_add(ring.pop())),
    );

    let q = PodQueue::<u64>::new(CAP)?;
    let (pod, _) = time_children(
        n,
        p,
        c,
        &|_, per| (0..per).for_each(|i| q.put(i).expect("put")),
        &|take| (0..take).fold(0u64, |s, _| s.wrapping_add(q.get().expect("get"))),
    );

    let tq = PodQueue::<u64>::new(CAP)?;
    let (pod_try, _) = time_children(
        n,
        p,
        c,
        &|_, per| {
            for i in 0..per {
                let mut step = 0;
                while tq.try_put(i).is_err() {
                    backoff(&mut step);
                }
            }
        },
        &|take| {
            (0..take).fold(0u64, |s, _| {
                let mut step = 0;
                loop {
                    if let Ok(v) = tq.try_get() {
                        break s.wrapping_add(v);
                    }
                    backoff(&mut step);
                }
            })
        },
    );

    let sq = Queue::<u64>::new(CAP)?;
    let ns = n / 4;
    let (serde, _) = time_children(
        ns,
        p,
        c,
        &|_, per| (0..per).for_each(|i| sq.put(i).expect("put")),
        &|take| (0..take).fold(0u64, |s, _| s.wrapping_add(sq.get().expect("get"))),
    );

    println!("{n} u64 messages, {p} producer(s) -> {c} consumer(s), capacity {CAP}:");
    println!("  plain Vyukov ring (P7b)   {:8.2} Mmsg/s", rate(vy));
    println!(
        "  PodQueue<u64> put/get    {:8.2} Mmsg/s   ratio {:.2}",
        rate(pod),
        vy / pod
    );
    println!(
        "  PodQueue<u64> try+backoff{:8.2} Mmsg/s   ratio {:.2}",
        rate(pod_try),
        vy / pod_try
    );
    println!(
        "  Queue<u64> (serde)       {:8.2} Mmsg/s   ({ns} messages)",
        ns as f64 / serde / 1e6
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}
