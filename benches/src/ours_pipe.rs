//! Our pipe rows (`ipc-pipe`): C1d, C1s, C2, C2s, C3d, C3s, C4@s, C5.
//!
//! Connections are made in the parent before the fork; each child uses its copy (through a
//! `RefCell`, since the role body is shared by all roles but runs alone in each process).

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use crate::checksum::{stamp, Acc, Plan};
use crate::harness::{run_mxn, run_pair, Role, RoleOut};
use crate::{Measure, Outcome, Run};

fn pipe_err(e: impl std::fmt::Debug) -> String {
    format!("ipc-pipe: {e:?}")
}

/// The `F_GETPIPE_SZ` of a fresh `simplex()` pipe (measured once per process).
pub fn simplex_pipe_size() -> Option<usize> {
    static SIZE: OnceLock<Option<usize>> = OnceLock::new();
    *SIZE.get_or_init(|| {
        let (_rx, tx) = ipc_pipe::simplex().ok()?;
        crate::os::pipe_size(tx.as_raw_fd()).ok()
    })
}

/// One side that sends, one that receives: a duplex pair or a simplex pair.
// Made once per run, so the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Ends {
    Duplex(RefCell<ipc_pipe::Connection>, RefCell<ipc_pipe::Connection>),
    Simplex(RefCell<ipc_pipe::Receiver>, RefCell<ipc_pipe::Sender>),
}

impl Ends {
    fn new(duplex: bool) -> Result<Ends, String> {
        Ok(if duplex {
            let (a, b) = ipc_pipe::duplex().map_err(pipe_err)?;
            Ends::Duplex(RefCell::new(a), RefCell::new(b))
        } else {
            let (rx, tx) = ipc_pipe::simplex().map_err(pipe_err)?;
            Ends::Simplex(RefCell::new(rx), RefCell::new(tx))
        })
    }
    /// Sends on the producer's end.
    fn send(&self, b: &[u8]) -> Result<(), String> {
        match self {
            Ends::Duplex(a, _) => a.borrow_mut().send_bytes(b),
            Ends::Simplex(_, tx) => tx.borrow_mut().send_bytes(b),
        }
        .map_err(pipe_err)
    }
    /// Receives on the consumer's end.
    fn recv_into(&self, v: &mut Vec<u8>) -> Result<usize, String> {
        match self {
            Ends::Duplex(_, b) => b.borrow_mut().recv_bytes_into(v),
            Ends::Simplex(rx, _) => rx.borrow_mut().recv_bytes_into(v),
        }
        .map_err(pipe_err)
    }
}

/// `n` messages of `size` bytes, stamped with their index, producer → consumer; the consumer
/// `recv_bytes_into`s one reused Vec and checks the length (and, when `check_all`, every byte).
fn stream(r: &Run, duplex: bool, size: usize, check_all: bool) -> Result<Measure, String> {
    let ends = Ends::new(duplex)?;
    let pat: Vec<u8> = (0..size)
        .map(|j| (j.wrapping_mul(7) ^ (j >> 8)) as u8)
        .collect();
    let plan = Plan::new(r.n, 1, 1);
    let mut m = run_mxn(plan, r.pin, |g, role| {
        g.start();
        match role {
            Role::Producer(_) => {
                let mut msg = pat.clone();
                for i in 0..plan.per {
                    stamp(&mut msg, i);
                    ends.send(&msg)?;
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                let mut buf = Vec::with_capacity(size);
                for _ in 0..plan.per_consumer() {
                    let k = ends.recv_into(&mut buf)?;
                    if k != size || buf.len() != size {
                        return Err(format!("message of {k} bytes, want {size}"));
                    }
                    if check_all && size > 8 && buf[8..] != pat[8..] {
                        return Err("message bytes differ".into());
                    }
                    acc.add_bytes(&buf);
                }
                Ok(acc.out())
            }
        }
    })?;
    if !duplex {
        m.note = simplex_pipe_size().map(|s| format!("pipe size {s}"));
    }
    Ok(m)
}

/// C1d (`duplex()`) and C1s (`simplex()`): 64 KiB `send_bytes`, `recv_bytes_into` one Vec.
pub fn c1(r: &Run, duplex: bool) -> Outcome {
    stream(r, duplex, crate::refs_pipe::CHUNK, true).into()
}

/// C2 (`duplex()`) and C2s (two simplex pairs): 8-byte round trips.
pub fn c2(r: &Run, duplex: bool) -> Outcome {
    let run = || -> Result<Measure, String> {
        // A sends on `ab`, B answers on `ba`.
        let (ab, ba) = if duplex {
            let e = Ends::new(true)?;
            (e, None)
        } else {
            (Ends::new(false)?, Some(Ends::new(false)?))
        };
        let n = r.n;
        run_pair(n, r.pin, |g, a| {
            let mut buf = Vec::with_capacity(8);
            g.start();
            for i in 0..n {
                let msg = i.to_le_bytes();
                match (&ab, &ba, a) {
                    (Ends::Duplex(ca, _), None, true) => {
                        let mut c = ca.borrow_mut();
                        c.send_bytes(&msg).map_err(pipe_err)?;
                        c.recv_bytes_into(&mut buf).map_err(pipe_err)?;
                    }
                    (Ends::Duplex(_, cb), None, false) => {
                        let mut c = cb.borrow_mut();
                        c.recv_bytes_into(&mut buf).map_err(pipe_err)?;
                        c.send_bytes(&buf).map_err(pipe_err)?;
                    }
                    (ab, Some(ba), true) => {
                        ab.send(&msg)?;
                        ba.recv_into(&mut buf)?;
                    }
                    (ab, Some(ba), false) => {
                        ab.recv_into(&mut buf)?;
                        ba.send(&buf)?;
                    }
                    _ => return Err("unexpected pipe layout".into()),
                }
                if a && buf[..] != msg[..] {
                    return Err(format!("echo of {i} differs"));
                }
            }
            Ok(RoleOut::NONE)
        })
    };
    run().into()
}

/// C3d/C3s (`size` 64) and C4@s: `size`-byte messages over `duplex()` or `simplex()`.
pub fn c_msgs(r: &Run, duplex: bool, size: usize) -> Outcome {
    stream(r, duplex, size, false).into()
}

/// Messages per batch in C5.
pub const C5_BATCH: usize = 64;

/// C5: 64-byte messages over `duplex()`, sent `C5_BATCH` per `send_bytes_many`; the consumer
/// takes one message per `recv_bytes_into`, as in C3d.
pub fn c5(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        const SIZE: usize = 64;
        let ends = Ends::new(true)?;
        let plan = Plan::new(r.n, 1, 1);
        run_mxn(plan, r.pin, |g, role| {
            g.start();
            match (role, &ends) {
                (Role::Producer(_), Ends::Duplex(a, _)) => {
                    let mut a = a.borrow_mut();
                    let mut batch = vec![[0x5au8; SIZE]; C5_BATCH];
                    let mut i = 0;
                    while i < plan.per {
                        let k = (plan.per - i).min(C5_BATCH as u64) as usize;
                        for m in &mut batch[..k] {
                            stamp(m, i);
                            i += 1;
                        }
                        a.send_bytes_many(&batch[..k]).map_err(pipe_err)?;
                    }
                    Ok(RoleOut {
                        sum: 0,
                        count: plan.per,
                    })
                }
                (Role::Consumer(_), Ends::Duplex(_, b)) => {
                    let mut b = b.borrow_mut();
                    let mut acc = Acc::default();
                    let mut buf = Vec::with_capacity(SIZE);
                    for _ in 0..plan.per_consumer() {
                        let k = b.recv_bytes_into(&mut buf).map_err(pipe_err)?;
                        if k != SIZE {
                            return Err(format!("message of {k} bytes, want {SIZE}"));
                        }
                        acc.add_bytes(&buf);
                    }
                    Ok(acc.out())
                }
                _ => Err("unexpected pipe layout".into()),
            }
        })
    };
    run().into()
}
