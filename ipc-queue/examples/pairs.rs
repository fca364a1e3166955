//! A fixed single-process workload for instruction counts under callgrind: 200,000 put+get
//! pairs on a `PodQueue<u64>` (argument `pod`) or a `Queue<u64>` (`serde`), or both (no
//! argument, or `both`). A second argument changes the count (`tests/examples.rs` runs a
//! few thousand).
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/pairs pod
//! ```

use ipc_queue::{PodQueue, Queue};

/// Runs the workload with its command-line arguments, `[pod|serde|both] [pairs]` (also called
/// by `tests/examples.rs`).
pub fn run(args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let which = args.first().copied().unwrap_or_default();
    let n: u64 = match args.get(1) {
        Some(count) => count.replace('_', "").parse()?,
        None => 200_000,
    };
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
    let runs = if which == "pod" || which == "serde" {
        1
    } else {
        2
    };
    if sum != runs * (n * n.saturating_sub(1) / 2) {
        return Err("checksum".into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}
