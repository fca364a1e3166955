//! A fixed single-process workload for instruction counts under callgrind: 200,000 put+get
//! pairs on a `PodQueue<u64>` (argument `pod`) or a `Queue<u64>` (`serde`).
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/pairs pod
//! ```

use ipc_queue::{PodQueue, Queue};

fn main() -> Result<(), ipc_queue::Error> {
    let n = 200_000u64;
    let which = std::env::args().nth(1).unwrap_or_default();
    let pod = PodQueue::<u64>::new(1024)?;
    let mut sum = 0u64;
    for i in (0..n).filter(|_| which != "serde") {
        pod.put(i).map_err(ipc_queue::Error::from)?;
        sum = sum.wrapping_add(pod.get()?);
    }
    let serde = Queue::<u64>::new(1024)?;
    for i in (0..n).filter(|_| which != "pod") {
        serde.put(i).map_err(ipc_queue::Error::from)?;
        sum = sum.wrapping_add(serde.get()?);
    }
    println!("{sum}");
    Ok(())
}
