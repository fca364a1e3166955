//! An async producer and consumer in two processes: a forked producer awaits `put_async`
//! on a small queue (so it waits whenever the consumer falls behind), and the parent runs
//! four tokio tasks that await `get_async` until the queue is closed. However many tasks
//! wait, the process spends one waiter thread on them (`waiter_threads()`).
//!
//! Run: `cargo run -p ipc-queue --features async --example async_producer_consumer`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipc_queue::{Error, GetTimeoutError, Queue};

const JOBS: u64 = 1_000;

fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: this program is single-threaded when it forks (no runtime is built yet); the
    // child runs `f` and leaves with `_exit`, never returning into `main`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    pid
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q = Arc::new(Queue::<(u64, String)>::new(8)?);

    // The producer: its own process, its own runtime.
    let producer = fork(|| {
        let Ok(rt) = runtime() else { return 2 };
        let done = rt.block_on(async {
            for i in 0..JOBS {
                if q.put_async((i, format!("job {i}"))).await.is_err() {
                    return false;
                }
            }
            q.close();
            true
        });
        i32::from(!done)
    });

    // The consumer: four tasks awaiting one queue.
    let rt = runtime()?;
    let sum = Arc::new(AtomicU64::new(0));
    let got = rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let q = Arc::clone(&q);
                let sum = Arc::clone(&sum);
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        match q.get_timeout_async(Duration::from_secs(30)).await {
                            Ok((i, text)) => {
                                debug_assert_eq!(text, format!("job {i}"));
                                sum.fetch_add(i, Ordering::Relaxed);
                                n += 1;
                            }
                            Err(GetTimeoutError::Closed) => return Ok(n),
                            Err(e) => return Err(Error::from(e)),
                        }
                    }
                })
            })
            .collect();
        let mut per_task = Vec::new();
        for t in tasks {
            per_task.push(t.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, Box<dyn std::error::Error>>(per_task)
    })?;
    println!(
        "4 tasks took {got:?} jobs ({} in all); waiter threads now: {}",
        got.iter().sum::<u64>(),
        ipc_queue::ipc_shm::lowlevel::sync::waiter_threads()
    );

    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(producer, &mut status, 0) };
    if reaped != producer || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the producer failed (status {status:#x})").into());
    }
    if got.iter().sum::<u64>() != JOBS || sum.load(Ordering::Relaxed) != JOBS * (JOBS - 1) / 2 {
        return Err("a job was lost or delivered twice".into());
    }
    Ok(())
}
