//! Reference rows for processes: P9a (`fork` + `waitpid`), P9b (`posix_spawn` of `/bin/true`)
//! and L7 (the CPU speed-up ceiling of two forked processes, no IPC), plus the `sq` and `burn`
//! task functions the pool rows share.

use std::ffi::CString;
use std::hint::black_box;

use crate::harness::{run_procs, split_at, time_local, RoleOut};
use crate::os;
use crate::{Measure, Outcome, Run};

/// `sq(x) = x.wrapping_mul(x)`: the pool rows' trivial task.
pub fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// 3,000,000 xorshift64 steps from `seed | 1` through `black_box` (about 3 ms here).
pub fn burn(seed: u64) -> u64 {
    let mut x = black_box(seed | 1);
    for _ in 0..3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    x
}

fn wait_child(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int; pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if nix::errno::Errno::last_raw() != libc::EINTR {
            return Err(format!("waitpid: {}", os::last_errno()));
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child status {status:#x}"))
    }
}

/// P9a: `fork()`, the child `_exit(0)`s, the parent `waitpid`s; `n` times.
pub fn p9a(r: &Run) -> Outcome {
    time_local(|| {
        for _ in 0..r.n {
            // SAFETY: the child calls only `_exit`.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(format!("fork: {}", os::last_errno()));
            }
            if pid == 0 {
                // SAFETY: leave the child at once.
                unsafe { libc::_exit(0) };
            }
            wait_child(pid)?;
        }
        Ok(r.n)
    })
    .into()
}

extern "C" {
    static environ: *const *mut libc::c_char;
}

/// P9b: `posix_spawn("/bin/true")` + `waitpid`; `n` times.
pub fn p9b(r: &Run) -> Outcome {
    if !std::path::Path::new("/bin/true").exists() {
        return Outcome::Skipped("/bin/true: ENOENT".into());
    }
    let path = CString::new("/bin/true").expect("static path has no NUL");
    let arg0 = CString::new("true").expect("static arg has no NUL");
    let argv = [arg0.as_ptr().cast_mut(), std::ptr::null_mut()];
    time_local(|| {
        for _ in 0..r.n {
            let mut pid: libc::pid_t = 0;
            // SAFETY: valid path, NULL file actions and attributes, NULL-terminated argv, and
            // the process environment.
            let e = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    path.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr(),
                    environ,
                )
            };
            if e != 0 {
                return Err(format!("posix_spawn: {}", os::errno_name(e)));
            }
            wait_child(pid)?;
        }
        Ok(r.n)
    })
    .into()
}

/// Serial `burn` over `0..n`, timed; returns the measure and the results.
pub fn serial_burn(n: u64) -> Result<(Measure, Vec<u64>), String> {
    let mut out = Vec::with_capacity(n as usize);
    let m = time_local(|| {
        for i in 0..n {
            out.push(burn(i));
        }
        Ok(n)
    })?;
    Ok((m, out))
}

/// L7: 2 forked procs × n/2 `burn`, no IPC, against this repeat's serial time (speed-up).
pub fn l7(r: &Run) -> Outcome {
    let run = || -> Result<Measure, String> {
        let n = r.n.max(2) / 2 * 2;
        let (serial, _) = serial_burn(n)?;
        let half = n / 2;
        let par = run_procs(2, r.pin, &split_at(1), |g| {
            g.start();
            let base = g.role() as u64 * half;
            let mut acc = 0u64;
            for i in 0..half {
                acc ^= burn(base + i);
            }
            black_box(acc);
            Ok(RoleOut {
                sum: 0,
                count: half,
            })
        })?;
        let mut m = Measure::new(n, par.elapsed).with_cpu(par.cpu);
        m.value = Some(serial.elapsed / par.elapsed);
        m.note = Some(format!("serial {:.3} s", serial.elapsed));
        Ok(m)
    };
    run().into()
}
