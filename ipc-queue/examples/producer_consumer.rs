//! A producer process and two consumer processes sharing a `Queue` of jobs, with
//! `JoinableQueue`-style accounting: the parent waits until every job is marked done.
//!
//! Python's equivalent:
//! ```python
//! q = multiprocessing.JoinableQueue(64)
//! def worker(q):
//!     while (job := q.get()) is not None:
//!         print(job); q.task_done()
//!     q.task_done()
//! ```
//!
//! Run: `cargo run -p ipc-queue --example producer_consumer`

use std::time::Duration;

use ipc_queue::{Error, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    id: u32,
    text: String,
}

fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: this program is single-threaded when it forks; the child runs `f` and leaves
    // with `_exit`, never returning into `main`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    pid
}

/// Runs the example (also called by `tests/examples.rs`).
pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let q = Queue::<Job>::new(64)?;

    let workers: Vec<_> = (0..2)
        .map(|w| {
            let q = &q;
            fork(move || loop {
                match q.get() {
                    Ok(job) => {
                        println!(
                            "worker {w} (pid {}): job {} {:?}",
                            std::process::id(),
                            job.id,
                            job.text
                        );
                        if q.task_done().is_err() {
                            return 1;
                        }
                    }
                    Err(Error::Closed) => return 0,
                    Err(e) => {
                        eprintln!("worker {w}: {e}");
                        return 1;
                    }
                }
            })
        })
        .collect();

    let producer = fork(|| {
        for id in 0..20 {
            let job = Job {
                id,
                text: format!("resize image {id}"),
            };
            if let Err(e) = q.put(&job) {
                eprintln!("producer: {e}");
                return 1;
            }
        }
        0
    });

    let producer_ok = reap(producer);
    let joined = q.join_timeout(Duration::from_secs(30));
    if joined.is_ok() {
        println!("all jobs done; closing");
    }
    // Closed in any case, so the workers leave their `get` and can be reaped.
    q.close();
    let workers_ok = workers.into_iter().map(reap).filter(|ok| *ok).count();
    joined?;
    if !producer_ok || workers_ok != 2 {
        return Err("a child failed".into());
    }
    Ok(())
}

/// Waits for our child `pid`; true if it exited with code 0.
fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) } == pid;
    reaped && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}
