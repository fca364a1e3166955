//! Our queue rows (`ipc-queue`): Q1, Q1t, Q2, Q3, Q4, Q5, Q6@s, Q7@MxN, Q8, Q9@s. Queues are made in the
//! parent (capacity 1024) and used by the forked roles through their inherited handles.

use ipc_queue::{Error, PodQueue, Queue, TryGetError, TryPutError};

use crate::checksum::{consume_bytes, produce_bytes, Acc, Plan};
use crate::harness::{run_mxn, run_pair, Role, RoleOut};
use crate::refs_queue::with_backoff;
use crate::{Measure, Outcome, Run};

fn q_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-queue: {e:?}")
}

/// M×N over one `PodQueue<u64>`; `try_` + Backoff when `spin_try`, else blocking.
fn pod_mxn(r: &Run, m: usize, c: usize, spin_try: bool) -> Result<Measure, String> {
    let q = PodQueue::<u64>::new(1024).map_err(q_err)?;
    let plan = Plan::new(r.n, m, c);
    run_mxn(plan, r.pin, |g, role| {
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    if spin_try {
                        let mut err = None;
                        with_backoff(|| match q.try_put(i) {
                            Ok(()) => Some(()),
                            Err(TryPutError::Full(_)) => None,
                            Err(e) => {
                                err = Some(q_err(e));
                                Some(())
                            }
                        });
                        if let Some(e) = err {
                            return Err(e);
                        }
                    } else {
                        q.put(i).map_err(q_err)?;
                    }
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                for _ in 0..plan.per_consumer() {
                    let v = if spin_try {
                        with_backoff(|| match q.try_get() {
                            Ok(v) => Some(Ok(v)),
                            Err(TryGetError::Empty) => None,
                            Err(e) => Some(Err(q_err(e))),
                        })?
                    } else {
                        q.get().map_err(q_err)?
                    };
                    acc.add(v);
                }
                Ok(acc.out())
            }
        }
    })
}

/// Q1: `PodQueue::<u64>::new(1024)`, 1P→1C procs, blocking `put`/`get`.
pub fn q1(r: &Run) -> Outcome {
    pod_mxn(r, 1, 1, false).into()
}

/// Q1t: Q1 with `try_put`/`try_get` + Backoff, as P7b.
pub fn q1t(r: &Run) -> Outcome {
    pod_mxn(r, 1, 1, true).into()
}

/// Values per `put_many` call in Q8, and the most a `get_many` call takes.
const Q8_BATCH: usize = 64;

/// Q8: Q1 in batches: the producer `put_many` of 64 values per call, the consumer
/// `get_many` of up to 64 per call (blocking until at least one).
pub fn q8(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let q = PodQueue::<u64>::new(1024).map_err(q_err)?;
        let plan = Plan::new(r.n, 1, 1);
        run_mxn(plan, r.pin, |g, role| {
            g.start();
            match role {
                Role::Producer(_) => {
                    let mut batch = [0u64; Q8_BATCH];
                    let mut i = 0;
                    while i < plan.per {
                        let k = (plan.per - i).min(Q8_BATCH as u64) as usize;
                        for (j, v) in batch[..k].iter_mut().enumerate() {
                            *v = i + j as u64;
                        }
                        q.put_many(&batch[..k]).map_err(q_err)?;
                        i += k as u64;
                    }
                    Ok(RoleOut {
                        sum: 0,
                        count: plan.per,
                    })
                }
                Role::Consumer(_) => {
                    let mut acc = Acc::default();
                    let mut got = Vec::with_capacity(Q8_BATCH);
                    let want = plan.per_consumer();
                    while acc.count < want {
                        got.clear();
                        let max = (want - acc.count).min(Q8_BATCH as u64) as usize;
                        q.get_many(&mut got, max).map_err(q_err)?;
                        for &v in &got {
                            acc.add(v);
                        }
                    }
                    Ok(acc.out())
                }
            }
        })
    };
    run().into()
}

/// Q2 (2→2) and Q7@MxN: Q1 with `m` producer and `c` consumer procs.
pub fn q_mxn(r: &Run, m: usize, c: usize) -> Outcome {
    pod_mxn(r, m, c, false).into()
}

/// Q3: `Queue::<u64>` (serde + postcard), 1P→1C.
pub fn q3(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let q = Queue::<u64>::new(1024).map_err(q_err)?;
        let plan = Plan::new(r.n, 1, 1);
        run_mxn(plan, r.pin, |g, role| {
            g.start();
            match role {
                Role::Producer(_) => {
                    for i in 0..plan.per {
                        q.put(i).map_err(q_err)?;
                    }
                    Ok(RoleOut {
                        sum: 0,
                        count: plan.per,
                    })
                }
                Role::Consumer(_) => {
                    let mut acc = Acc::default();
                    for _ in 0..plan.per_consumer() {
                        acc.add(q.get().map_err(q_err)?);
                    }
                    Ok(acc.out())
                }
            }
        })
    };
    run().into()
}

/// Q9@s: messages larger than a slot: `Queue::<Vec<u8>>` with 4 KiB slots (1024 of them)
/// and `max_message_size` 1 MiB + 64 B, `put(&msg)` of one prepared Vec of `size` bytes.
pub fn q_span_bytes(r: &Run, size: usize) -> Outcome {
    let q = match Queue::<Vec<u8>>::builder()
        .capacity(1024)
        .slot_size(4096)
        .max_message_size((1 << 20) + 64)
        .build()
    {
        Ok(q) => q,
        Err(e) => return Outcome::Failed(q_err(e)),
    };
    bytes_through(r, &q, size)
}

/// 1P→1C over `q`: `put(&msg)` of one prepared Vec of `size` bytes, checked `get`s.
fn bytes_through(r: &Run, q: &Queue<Vec<u8>>, size: usize) -> Outcome {
    let plan = Plan::new(r.n, 1, 1);
    run_mxn(plan, r.pin, |g, role| {
        let mut msg = vec![0x5au8; size];
        g.start();
        match role {
            Role::Producer(_) => produce_bytes(plan.per, &mut msg, |m| q.put(m).map_err(q_err)),
            Role::Consumer(_) => {
                consume_bytes(plan.per_consumer(), size, || q.get().map_err(q_err))
            }
        }
    })
    .into()
}

/// Q4 (`size` 1024) and Q6@s: `Queue::<Vec<u8>>`, `max_message_size` = size + 64, capacity
/// ≤ 8 MiB / slot (the spec allows 64), `put(&msg)` of one prepared Vec; a size refused is
/// `skipped: TooLarge`.
pub fn q_bytes(r: &Run, size: usize) -> Outcome {
    let slot = size + 64;
    // A ring of at most 8 MiB (the spec allows up to 64): a run of n(s) messages then
    // measures the copies, not the first touch of 64 MiB of fresh pages in each process
    // (about 0.8 us per 4 KiB page on the reference VM).
    let cap = (1024usize).min((8usize << 20) / slot).max(1);
    let q = match Queue::<Vec<u8>>::builder()
        .capacity(cap)
        .max_message_size(slot)
        .build()
    {
        Ok(q) => q,
        Err(Error::TooLarge { .. }) | Err(Error::InvalidConfig(_)) => {
            return Outcome::Skipped("TooLarge".into())
        }
        Err(e) => return Outcome::Failed(q_err(e)),
    };
    bytes_through(r, &q, size)
}

/// Q5: ping-pong over two `PodQueue<u64>`: A `q1.put(i)`, `q2.get()`; B `q1.get()`, `q2.put(v)`.
pub fn q5(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let q1 = PodQueue::<u64>::new(1024).map_err(q_err)?;
        let q2 = PodQueue::<u64>::new(1024).map_err(q_err)?;
        let n = r.n;
        run_pair(n, r.pin, |g, a| {
            g.start();
            for i in 0..n {
                if a {
                    q1.put(i).map_err(q_err)?;
                    let v = q2.get().map_err(q_err)?;
                    if v != i {
                        return Err(format!("echo {v} != {i}"));
                    }
                } else {
                    let v = q1.get().map_err(q_err)?;
                    q2.put(v).map_err(q_err)?;
                }
            }
            Ok(RoleOut::NONE)
        })
    };
    run().into()
}
