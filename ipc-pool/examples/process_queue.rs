//! Producer and consumer processes over a bounded `ipc_queue::Queue`, with a sentinel to end.
//!
//! Python it mirrors:
//! ```python
//! def producer(q):
//!     for i in range(1000): q.put(("item", i))
//!     q.put(None)
//!
//! def consumer(q, total):
//!     s = 0
//!     while (item := q.get()) is not None: s += item[1]
//!     total.value = s
//!
//! q = multiprocessing.Queue(64); total = multiprocessing.Value("Q", 0)
//! ps = [Process(target=producer, args=(q,)), Process(target=consumer, args=(q, total))]
//! ```
//!
//! Run: `cargo run -p ipc-pool --example process_queue`

use std::time::Duration;

use ipc_pool::Process;
use ipc_queue::Queue;
use ipc_shm::Value;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Res {
    const N: u64 = 1000;
    let queue: Queue<Option<(String, u64)>> = Queue::new(64)?;
    let total = Value::new(0u64)?;

    // `scope`: the children borrow `queue` and `total` from this frame.
    ipc_pool::scope(|s| -> Res {
        let mut producer = s.spawn_with(Process::builder().name("producer"), || {
            for i in 0..N {
                if queue.put(Some(("item".to_string(), i))).is_err() {
                    ipc_pool::exit(2);
                }
            }
            let _ = queue.put(None);
        })?;
        let mut consumer = s.spawn_with(Process::builder().name("consumer"), || {
            let mut sum = 0;
            // A dead producer shows up as a timeout here, never as a hang.
            while let Ok(Some((_, i))) = queue.get_timeout(Duration::from_secs(10)) {
                sum += i;
            }
            if total.set(sum).is_err() {
                ipc_pool::exit(3);
            }
        })?;
        assert!(producer.join()?.success());
        assert!(consumer.join()?.success());
        Ok(())
    })?;
    let sum = total.get()?;
    println!("consumer summed {sum} (expected {})", N * (N - 1) / 2);
    assert_eq!(sum, N * (N - 1) / 2);
    Ok(())
}
