//! Two processes incrementing one shared `Value` counter under its lock, and filling halves of
//! a shared `Array`.
//!
//! Python it mirrors:
//! ```python
//! def work(counter, arr, half):
//!     for _ in range(10_000):
//!         with counter.get_lock(): counter.value += 1
//!     for i in range(half * 50, half * 50 + 50): arr[i] = i * i
//!
//! counter = multiprocessing.Value("Q", 0); arr = multiprocessing.Array("d", 100)
//! ps = [Process(target=work, args=(counter, arr, h)) for h in (0, 1)]
//! ```
//!
//! Run: `cargo run --example shared_counter -p ipc-pool`

use ipc_shm::{Array, Value};

type Res = Result<(), Box<dyn std::error::Error>>;

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    let counter = Value::new(0u64)?;
    let arr: Array<f64> = Array::new(100)?;
    let work = |half: usize| {
        for _ in 0..10_000 {
            // `update` holds the cross-process lock around the closure: no lost increments
            // (unlike Python's `counter.value += 1` without `get_lock()`).
            if counter.update(|c| *c += 1).is_err() {
                ipc_pool::exit(2);
            }
        }
        for i in half * 50..half * 50 + 50 {
            if arr.set(i, (i * i) as f64).is_err() {
                ipc_pool::exit(3);
            }
        }
    };
    // `scope`: the children borrow `work` (and through it `counter` and `arr`).
    ipc_pool::scope(|s| -> Res {
        let mut a = s.spawn(|| work(0))?;
        let mut b = s.spawn(|| work(1))?;
        assert!(a.join()?.success() && b.join()?.success());
        Ok(())
    })?;
    let n = counter.get()?;
    let v = arr.to_vec()?;
    println!("counter = {n}; arr[7] = {}, arr[99] = {}", v[7], v[99]);
    assert_eq!(n, 20_000);
    assert!(v.iter().enumerate().all(|(i, x)| *x == (i * i) as f64));
    Ok(())
}
