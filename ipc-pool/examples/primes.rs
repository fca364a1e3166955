//! Count primes in ranges with `Pool::map`, CPU-bound, and print the speed-up over serial.
//!
//! Python it mirrors:
//! ```python
//! def count_primes(block):
//!     lo, hi = block * 10_000, (block + 1) * 10_000
//!     return sum(all(n % d for d in range(2, isqrt(n) + 1)) for n in range(max(lo, 2), hi))
//!
//! with multiprocessing.Pool() as pool:
//!     print(sum(pool.map(count_primes, range(100))))
//! ```
//!
//! Run: `cargo run --release --example primes -p ipc-pool`

use std::time::Instant;

use ipc_pool::Pool;

type Res = Result<(), Box<dyn std::error::Error>>;

const BLOCK: u64 = 2_000;

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn count_primes(block: u64) -> u64 {
    (block * BLOCK..(block + 1) * BLOCK)
        .filter(|&n| is_prime(n))
        .count() as u64
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let blocks = 0..100u64;
    let t = Instant::now();
    let serial: u64 = blocks.clone().map(count_primes).sum();
    let serial_t = t.elapsed();

    let pool = Pool::new(std::thread::available_parallelism().map_or(2, usize::from))?;
    let t = Instant::now();
    let parallel: u64 = pool.map(count_primes, blocks)?.into_iter().sum();
    let pool_t = t.elapsed();
    pool.join()?;

    assert_eq!(serial, parallel);
    assert_eq!(serial, 17_984); // primes below 200,000
    println!(
        "{parallel} primes below {}: serial {serial_t:?}, pool of {} {pool_t:?}, speed-up {:.2}x",
        100 * BLOCK,
        pool.processes(),
        serial_t.as_secs_f64() / pool_t.as_secs_f64()
    );
    Ok(())
}
