//! Our async rows (WORKLOADS.md section 2.2, "Async rows"): A1–A4. Each process of a row runs a
//! tokio current-thread runtime (feature `rt` only: no driver thread, no blocking pool) and
//! awaits the crates' runtime-agnostic futures. Queues are made in the parent (capacity 1024),
//! as in the Q rows, and used by the forked roles through their inherited handles.
//!
//! A1 and A3 run in the round-robin group of their reference (Q5, Q3), so each runs back to
//! back with it; A2 and A4 likewise in C3's and K1's groups.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipc_pipe::AsyncConnection;
use ipc_queue::{PodQueue, Queue};
use ipc_shm::lowlevel::sync::waiter_threads;

use crate::checksum::{stamp, Acc, Plan};
use crate::harness::{run_mxn, run_pair, Role, RoleOut, Shared};
use crate::os;
use crate::ours_pool::{in_driver, pool_err, warm_pool};
use crate::refs_proc::sq;
use crate::{Measure, Outcome, Run};

/// Tasks A3's consumer runs, each awaiting `get` in a loop.
pub const A3_TASKS: usize = 1_000;

/// A3's consumer samples its waiter-thread count once per this many messages.
const THREAD_SAMPLE_EVERY: u64 = 1024;

fn q_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-queue: {e:?}")
}

/// A tokio current-thread runtime with no drivers (the futures need none).
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {:?}", e.kind()))
}

/// A tokio current-thread runtime with the I/O driver (A2's `AsyncConnection`).
fn runtime_io() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("tokio runtime: {:?}", e.kind()))
}

fn pipe_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-pipe: {e:?}")
}

/// Threads of this process (`Threads:` of `/proc/self/status`).
fn process_threads() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A1: Q5 with `put_async`/`get_async` awaited in both processes: A `q1.put(i)`, `q2.get()`;
/// B `q1.get()`, `q2.put(v)`. Roles' CPU time (waiter thread included) for the parked check.
pub fn a1(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let q1 = PodQueue::<u64>::new(1024).map_err(q_err)?;
        let q2 = PodQueue::<u64>::new(1024).map_err(q_err)?;
        let n = r.n;
        run_pair(n, r.pin, |g, a| {
            let rt = runtime()?;
            g.start();
            rt.block_on(async {
                for i in 0..n {
                    if a {
                        q1.put_async(i).await.map_err(q_err)?;
                        let v = q2.get_async().await.map_err(q_err)?;
                        if v != i {
                            return Err(format!("echo {v} != {i}"));
                        }
                    } else {
                        let v = q1.get_async().await.map_err(q_err)?;
                        q2.put_async(v).await.map_err(q_err)?;
                    }
                }
                Ok(RoleOut::NONE)
            })
        })
    };
    run().into()
}

/// What A3's consumer tasks share (one thread: `Cell`s).
#[derive(Default)]
struct Consumer {
    /// Messages not yet claimed by a task: a task claims one before each `get`, so exactly
    /// `per` gets are awaited in all and every task ends.
    left: Cell<u64>,
    acc: Cell<(u64, u64)>,
    err: RefCell<Option<String>>,
    peak_waiters: Cell<usize>,
}

/// A3: one producer process `put`s `0..n` into a `Queue<u64>` (blocking); one consumer process
/// runs [`A3_TASKS`] tasks on a current-thread runtime, each awaiting `get_async` in a loop;
/// checksum as Q3. The consumer's extra threads (besides its main thread: the waiter threads,
/// sampled during the run, and the process's thread count at its end) go in
/// [`Measure::threads`] and the note.
pub fn a3(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let q = Arc::new(Queue::<u64>::new(1024).map_err(q_err)?);
        // [extra threads, process threads at the end, peak waiter threads], from the consumer.
        let seen = Shared::<[AtomicU64; 3]>::new()?;
        let plan = Plan::new(r.n, 1, 1);
        let mut m = run_mxn(plan, r.pin, |g, role| match role {
            Role::Producer(_) => {
                g.start();
                for i in 0..plan.per {
                    q.put(i).map_err(q_err)?;
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let rt = runtime()?;
                let local = tokio::task::LocalSet::new();
                let st = Rc::new(Consumer::default());
                st.left.set(plan.per_consumer());
                for _ in 0..A3_TASKS {
                    let q = Arc::clone(&q);
                    let st = Rc::clone(&st);
                    local.spawn_local(async move {
                        while st.left.get() > 0 && st.err.borrow().is_none() {
                            st.left.set(st.left.get() - 1);
                            match q.get_async().await {
                                Ok(v) => {
                                    let (sum, count) = st.acc.get();
                                    st.acc.set((sum.wrapping_add(v), count + 1));
                                    if count % THREAD_SAMPLE_EVERY == 0 {
                                        st.peak_waiters
                                            .set(st.peak_waiters.get().max(waiter_threads()));
                                    }
                                }
                                Err(e) => {
                                    *st.err.borrow_mut() = Some(q_err(e));
                                    return;
                                }
                            }
                        }
                    });
                }
                g.start();
                rt.block_on(local);
                let peak = st.peak_waiters.get().max(waiter_threads()) as u64;
                let threads = process_threads().unwrap_or(0);
                seen[0].store(peak.max(threads.saturating_sub(1)), Ordering::Release);
                seen[1].store(threads, Ordering::Release);
                seen[2].store(peak, Ordering::Release);
                if let Some(e) = st.err.borrow_mut().take() {
                    return Err(e);
                }
                let (sum, count) = st.acc.get();
                Ok(Acc { sum, count }.out())
            }
        })?;
        let extra = seen[0].load(Ordering::Acquire);
        m.threads = Some(extra);
        m.note = Some(format!(
            "consumer: {A3_TASKS} tasks, {extra} extra thread(s) (peak waiter threads {}, {} threads at its end)",
            seen[2].load(Ordering::Acquire),
            seen[1].load(Ordering::Acquire)
        ));
        Ok(m)
    };
    run().into()
}

/// A2: C3d with the async connection: 64-byte messages (stamped with their index) over
/// `duplex()`, each end wrapped in an `AsyncConnection` on a current-thread runtime with I/O
/// (registered before the gate); `send_bytes(..).await`, and `recv_bytes_into(..).await` into
/// one reused Vec as C3d does, so the ratio is the async layer's cost alone; checksum as C3d.
pub fn a2(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        const SIZE: usize = 64;
        let (a, b) = ipc_pipe::duplex().map_err(pipe_err)?;
        // Each child takes its end out (the wrapper owns it).
        let ends = (RefCell::new(Some(a)), RefCell::new(Some(b)));
        let plan = Plan::new(r.n, 1, 1);
        run_mxn(plan, r.pin, |g, role| {
            let rt = runtime_io()?;
            let end = match role {
                Role::Producer(_) => ends.0.borrow_mut().take(),
                Role::Consumer(_) => ends.1.borrow_mut().take(),
            }
            .ok_or("connection already taken")?;
            rt.block_on(async {
                let mut c = AsyncConnection::new(end).map_err(pipe_err)?;
                g.start();
                match role {
                    Role::Producer(_) => {
                        let mut msg = [0x5au8; SIZE];
                        for i in 0..plan.per {
                            stamp(&mut msg, i);
                            c.send_bytes(&msg).await.map_err(pipe_err)?;
                        }
                        Ok(RoleOut {
                            sum: 0,
                            count: plan.per,
                        })
                    }
                    Role::Consumer(_) => {
                        let mut acc = Acc::default();
                        let mut buf = Vec::with_capacity(SIZE);
                        for _ in 0..plan.per_consumer() {
                            let k = c.recv_bytes_into(&mut buf).await.map_err(pipe_err)?;
                            if k != SIZE || buf.len() != SIZE {
                                return Err(format!("message of {k} bytes, want {SIZE}"));
                            }
                            acc.add_bytes(&buf);
                        }
                        Ok(acc.out())
                    }
                }
            })
        })
    };
    run().into()
}

/// A4: sequential `pool.apply_async(sq, i)?.await` on a 2-worker pool, in a forked driver
/// child as K1 (the runtime is built and the pool warmed before the timed part). The runtime
/// has I/O, so the awaited result takes ipc-pool's direct path (feature `tokio`): the reactor
/// wakes it on the worker's reply, with no dispatcher thread in between.
pub fn a4(r: &Run) -> Outcome {
    let n = r.n;
    in_driver(|| {
        let rt = runtime_io()?;
        let pool = warm_pool(2)?;
        let t0 = os::now_ns();
        rt.block_on(async {
            for i in 0..n {
                let v = pool
                    .apply_async(sq, i)
                    .map_err(pool_err)?
                    .await
                    .map_err(pool_err)?;
                if v != sq(i) {
                    return Err(format!("apply_async(sq, {i}) gave {v}, want {}", sq(i)));
                }
            }
            Ok(())
        })?;
        let t1 = os::now_ns();
        Ok(((t1 - t0).max(1), n))
    })
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_rows_run_and_check() {
        match a1(&Run::new(200)) {
            Outcome::Done(m) => assert!(m.n == 200 && m.cpu.is_some(), "{m:?}"),
            o => panic!("{o:?}"),
        }
        match a3(&Run::new(5_000)) {
            Outcome::Done(m) => {
                assert_eq!(m.n, 5_000);
                assert!(m.threads.is_some() && m.note.is_some(), "{m:?}");
            }
            o => panic!("{o:?}"),
        }
        match a4(&Run::new(20)) {
            Outcome::Done(m) => assert!(m.n == 20 && m.elapsed > 0.0, "{m:?}"),
            o => panic!("{o:?}"),
        }
        match a2(&Run::new(1_000)) {
            Outcome::Done(m) => assert!(m.n == 1_000 && m.elapsed > 0.0, "{m:?}"),
            o => panic!("{o:?}"),
        }
    }
}
