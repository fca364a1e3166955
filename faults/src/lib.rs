//! The workspace's fault harness (publish = false).
//!
//! - `tests/kill_matrix.rs`: for every mechanism and canonical fault point, a victim armed to
//!   die (`SIGKILL`) or stall (`SIGSTOP`) there, the survivors' view checked, and a printed
//!   matrix of outcomes.
//! - `src/bin/soak.rs` (`cargo run --release -p ipc-faults --bin soak -- --secs N`): queues,
//!   locks, semaphores and a pool under load while a killer `SIGKILL`s and `SIGSTOP`s random
//!   participants; counts sent, delivered, lost and duplicated messages, hangs and leaks.
//!
//! This library holds what both share: [`Board`], a block of atomics in a shared anonymous
//! mapping that forked participants write their tallies and heartbeats to (it survives any
//! of them being killed), and [`now_ms`], a clock every process reads alike.

#![deny(unsafe_code)]

mod sys;

use std::sync::atomic::AtomicU64;

/// `n` 64-bit atomics in a `MAP_SHARED | MAP_ANONYMOUS` mapping: created before `fork`, the
/// same words in every child. Zeroed at creation. Unmapped on drop (in each process).
#[derive(Debug)]
pub struct Board {
    map: sys::SharedWords,
}

impl Board {
    /// Maps `n` zeroed words.
    ///
    /// # Errors
    /// The OS error if `mmap` fails.
    pub fn new(n: usize) -> std::io::Result<Board> {
        Ok(Board {
            map: sys::SharedWords::new(n)?,
        })
    }

    /// Word `i`.
    ///
    /// # Panics
    /// If `i` is out of range (a harness bug).
    pub fn at(&self, i: usize) -> &AtomicU64 {
        let words = self.map.words();
        assert!(i < words.len(), "board index {i} out of {}", words.len());
        &words[i]
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.map.words().len()
    }

    /// Whether the board has no words.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Milliseconds on `CLOCK_MONOTONIC` (system-wide, so comparable between processes).
pub fn now_ms() -> u64 {
    sys::monotonic_ms()
}

/// A small non-cryptographic generator (xorshift64*), seeded from the OS.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `getrandom` (a fixed seed if that fails).
    pub fn from_os() -> Rng {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Rng(u64::from_le_bytes(b) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
