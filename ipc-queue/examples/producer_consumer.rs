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

fn main() -> Result<(), Error> {
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

    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(producer, &mut status, 0) };
    q.join_timeout(Duration::from_secs(30))?;
    println!("all jobs done; closing");
    q.close();
    for w in workers {
        // SAFETY: as above.
        unsafe { libc::waitpid(w, &mut status, 0) };
    }
    Ok(())
}
