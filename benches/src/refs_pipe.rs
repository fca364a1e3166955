//! Reference rows for byte streams and message queues: L3 (pipe / socketpair round trips),
//! L4 (bulk streams: pipe, big pipe, socketpair, vmsplice, our simplex size; per-message
//! streams L4s/L4q) and P4 (POSIX message queues).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::checksum::{stamp, Acc, Plan};
use crate::harness::{run_mxn, run_pair, run_procs, split_at, Role, RoleOut};
use crate::os::{self, read_exact, read_some, write_all};
use crate::{Measure, Outcome, Run};

/// L3a: 8-byte round trips over two default blocking pipes.
pub fn l3a(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let (ab_r, ab_w) = os::pipe()?;
        let (ba_r, ba_w) = os::pipe()?;
        rt_loop(
            r,
            (ba_r.as_raw_fd(), ab_w.as_raw_fd()),
            (ab_r.as_raw_fd(), ba_w.as_raw_fd()),
        )
    };
    run().into()
}

/// L3b: 8-byte round trips over one `socketpair(AF_UNIX, SOCK_STREAM)`.
pub fn l3b(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let (s0, s1) = os::socketpair()?;
        rt_loop(
            r,
            (s0.as_raw_fd(), s0.as_raw_fd()),
            (s1.as_raw_fd(), s1.as_raw_fd()),
        )
    };
    run().into()
}

/// A writes 8 bytes (u64 LE) then reads 8; B reads 8 and writes them back. Fds as (read, write).
fn rt_loop(r: &Run, a: (RawFd, RawFd), b: (RawFd, RawFd)) -> Result<Measure, String> {
    let n = r.n;
    run_pair(n, r.pin, |g, is_a| {
        let mut buf = [0u8; 8];
        g.start();
        for i in 0..n {
            if is_a {
                write_all(a.1, &i.to_le_bytes())?;
                read_exact(a.0, &mut buf)?;
                if u64::from_le_bytes(buf) != i {
                    return Err(format!("echo {} != {i}", u64::from_le_bytes(buf)));
                }
            } else {
                read_exact(b.0, &mut buf)?;
                write_all(b.1, &buf)?;
            }
        }
        Ok(RoleOut::NONE)
    })
}

/// Chunk size of the L4 bulk streams.
pub const CHUNK: usize = 64 << 10;

fn pattern() -> Vec<u8> {
    (0..CHUNK)
        .map(|j| (j.wrapping_mul(7) ^ (j >> 8)) as u8)
        .collect()
}

/// How the L4 producer puts bytes into the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// `write` from the prefilled buffer, partial writes continued.
    Write,
    /// `vmsplice(fd, {buf+off, 64 KiB−off}, 1, 0)`.
    Vmsplice,
}

/// The L4 bulk stream: `n` × 64 KiB from `w` to `rd`, bytes checked by the consumer.
pub fn bulk_stream(n: u64, pin: bool, rd: RawFd, w: RawFd, feed: Feed) -> Result<Measure, String> {
    let total = n * CHUNK as u64;
    let pat = pattern();
    let run = run_procs(2, pin, &split_at(1), |g| {
        let producer = g.role() == 0;
        if producer {
            g.start();
            let mut sent = 0u64;
            while sent < total {
                let off = (sent % CHUNK as u64) as usize;
                let len = (CHUNK - off).min((total - sent) as usize);
                let k = match feed {
                    Feed::Write => {
                        // SAFETY: the range pat[off..off+len] is inside the buffer.
                        unsafe { libc::write(w, pat.as_ptr().add(off).cast(), len) }
                    }
                    Feed::Vmsplice => {
                        let iov = libc::iovec {
                            // SAFETY: off < CHUNK, inside the buffer.
                            iov_base: unsafe { pat.as_ptr().add(off) } as *mut libc::c_void,
                            iov_len: len,
                        };
                        // SAFETY: one valid iovec over our never-modified buffer; no GIFT.
                        unsafe { libc::vmsplice(w, &iov, 1, 0) }
                    }
                };
                if k < 0 {
                    let e = nix::errno::Errno::last_raw();
                    if e == libc::EINTR {
                        continue;
                    }
                    return Err(format!("write: {}", os::errno_name(e)));
                }
                sent += k as u64;
            }
            Ok(RoleOut {
                sum: 0,
                count: sent,
            })
        } else {
            let mut buf = vec![0u8; CHUNK];
            g.start();
            let mut got = 0u64;
            while got < total {
                let want = CHUNK.min((total - got) as usize);
                let k = read_some(rd, &mut buf[..want])?;
                if k == 0 {
                    return Err(format!("end of file after {got} of {total} bytes"));
                }
                // Check the bytes against the pattern at this stream offset.
                let mut off = (got % CHUNK as u64) as usize;
                let mut done = 0;
                while done < k {
                    let l = (CHUNK - off).min(k - done);
                    if buf[done..done + l] != pat[off..off + l] {
                        return Err(format!("bytes differ near offset {}", got + done as u64));
                    }
                    done += l;
                    off = 0;
                }
                got += k as u64;
            }
            Ok(RoleOut { sum: 0, count: got })
        }
    })?;
    if run.roles[0].count != total || run.roles[1].count != total {
        return Err(format!(
            "{} bytes sent, {} received, want {total}",
            run.roles[0].count, run.roles[1].count
        ));
    }
    Ok(Measure::new(n, run.elapsed).with_cpu(run.cpu))
}

fn sized_pipe(size: Option<usize>) -> Result<(OwnedFd, OwnedFd, usize), Outcome> {
    let (rd, w) = os::pipe().map_err(Outcome::Skipped)?;
    let got = match size {
        Some(s) => {
            let g = os::set_pipe_size(w.as_raw_fd(), s).map_err(Outcome::Skipped)?;
            if g < s {
                return Err(Outcome::Skipped(format!("F_SETPIPE_SZ {s}: granted {g}")));
            }
            g
        }
        None => os::pipe_size(w.as_raw_fd()).map_err(Outcome::Skipped)?,
    };
    Ok((rd, w, got))
}

/// L4a (default pipe), L4b (`Some(1 MiB)`), L4p (`Some(our simplex size)`), L4d (b + vmsplice).
pub fn l4_pipe(r: &Run, size: Option<usize>, feed: Feed) -> Outcome {
    let (rd, w, got) = match sized_pipe(size) {
        Ok(p) => p,
        Err(o) => return o,
    };
    match bulk_stream(r.n, r.pin, rd.as_raw_fd(), w.as_raw_fd(), feed) {
        Ok(mut m) => {
            m.note = Some(format!("pipe size {got}"));
            Outcome::Done(m)
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// L4c: default socketpair (STREAM).
pub fn l4c(r: &Run) -> Outcome {
    let (s0, s1) = match os::socketpair() {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(e),
    };
    bulk_stream(r.n, r.pin, s1.as_raw_fd(), s0.as_raw_fd(), Feed::Write).into()
}

/// One `write` per `size`-byte message; the consumer reads exactly `size` bytes per message.
pub fn msg_stream(n: u64, pin: bool, rd: RawFd, w: RawFd, size: usize) -> Result<Measure, String> {
    let plan = Plan::new(n, 1, 1);
    run_mxn(plan, pin, |g, role| {
        let mut msg = vec![0x5au8; size];
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    stamp(&mut msg, i);
                    write_all(w, &msg)?;
                }
                Ok(RoleOut {
                    sum: 0,
                    count: plan.per,
                })
            }
            Role::Consumer(_) => {
                let mut acc = Acc::default();
                for _ in 0..plan.per_consumer() {
                    read_exact(rd, &mut msg)?;
                    acc.add_bytes(&msg);
                }
                Ok(acc.out())
            }
        }
    })
}

/// L4s@s: per-message stream over a default socketpair.
pub fn l4s(r: &Run, size: usize) -> Outcome {
    let (s0, s1) = match os::socketpair() {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(e),
    };
    msg_stream(r.n, r.pin, s1.as_raw_fd(), s0.as_raw_fd(), size).into()
}

/// L4q@s: per-message stream over a pipe of `pipe_size` bytes (our simplex size).
pub fn l4q(r: &Run, size: usize, pipe_size: usize) -> Outcome {
    let (rd, w, _) = match sized_pipe(Some(pipe_size)) {
        Ok(p) => p,
        Err(o) => return o,
    };
    msg_stream(r.n, r.pin, rd.as_raw_fd(), w.as_raw_fd(), size).into()
}

/// A POSIX message queue, unlinked at once, closed on drop.
struct Mq(libc::mqd_t);

impl Mq {
    fn open(msgsize: usize) -> Result<Mq, String> {
        let name = std::ffi::CString::new(os::unique_name("bench-mq"))
            .map_err(|_| "mq name".to_string())?;
        // SAFETY: all-zero mq_attr is valid; the fields we need are set below.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 10;
        attr.mq_msgsize = msgsize as _;
        // SAFETY: valid NUL-terminated name and attr pointer; variadic mode and attr per POSIX.
        let q = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600 as libc::mode_t,
                &attr as *const libc::mq_attr,
            )
        };
        if q < 0 {
            return Err(format!("mq_open: {}", os::last_errno()));
        }
        // SAFETY: valid name.
        unsafe { libc::mq_unlink(name.as_ptr()) };
        Ok(Mq(q))
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::mq_close(self.0) };
    }
}

/// P4a–d: POSIX mq (maxmsg 10, `msgsize`), `m` producers and `c` consumers.
pub fn p4(r: &Run, msgsize: usize, m: usize, c: usize) -> Outcome {
    let q = match Mq::open(msgsize) {
        Ok(q) => q,
        Err(e) => return Outcome::Skipped(e),
    };
    let plan = Plan::new(r.n, m, c);
    run_mxn(plan, r.pin, |g, role| {
        let mut buf = vec![0u8; msgsize];
        g.start();
        match role {
            Role::Producer(_) => {
                for i in 0..plan.per {
                    stamp(&mut buf, i);
                    loop {
                        // SAFETY: buf is valid for msgsize bytes.
                        let r = unsafe { libc::mq_send(q.0, buf.as_ptr().cast(), msgsize, 0) };
                        if r == 0 {
                            break;
                        }
                        if nix::errno::Errno::last_raw() != libc::EINTR {
                            return Err(format!("mq_send: {}", os::last_errno()));
                        }
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
                    let k = loop {
                        // SAFETY: buf is valid for msgsize bytes; priority pointer may be null.
                        let k = unsafe {
                            libc::mq_receive(
                                q.0,
                                buf.as_mut_ptr().cast(),
                                msgsize,
                                std::ptr::null_mut(),
                            )
                        };
                        if k >= 0 {
                            break k as usize;
                        }
                        if nix::errno::Errno::last_raw() != libc::EINTR {
                            return Err(format!("mq_receive: {}", os::last_errno()));
                        }
                    };
                    if k != msgsize {
                        return Err(format!("mq message of {k} bytes, want {msgsize}"));
                    }
                    acc.add_bytes(&buf);
                }
                Ok(acc.out())
            }
        }
    })
    .into()
}
