//! Single-thread cost of a put + get pair (no contention): instruction overhead only.
use std::time::Instant;
fn main() {
    let q = ipc_queue::PodQueue::<u64>::new(1024).unwrap();
    let n = 20_000_000u64;
    let t = Instant::now();
    let mut s = 0u64;
    for i in 0..n {
        q.try_put(i).unwrap();
        s = s.wrapping_add(q.try_get().unwrap());
    }
    let e = t.elapsed();
    println!("{:.1} ns per put+get ({s})", e.as_nanos() as f64 / n as f64);
}
