//! The cross-process harness: fresh shared memory, one forked child per role, the start gate,
//! `CLOCK_MONOTONIC` timing, `sigtimedwait` waiting with a 120 s watchdog, and per-role CPU time.
//!
//! A child does its untimed setup, calls [`Gate::start`] (increment a shared counter,
//! `sched_yield()`-spin until all roles are in, read `t_start`), runs, and returns; the harness
//! then reads `t_end` and the role's CPU time, stores them in shared memory and `_exit`s.
//! Elapsed = max(t_end) − min(t_start). The parent blocks `SIGCHLD` while it forks and waits in
//! `sigtimedwait(200 ms)`; the watchdog or a role exiting non-zero fails the run.

use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};
use std::time::{Duration, Instant};

use crate::checksum::Plan;
use crate::os;

/// Most roles one run can have.
pub const MAX_ROLES: usize = 16;
/// A run that takes longer than this is killed and fails.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// Fresh zero-filled `MAP_SHARED | MAP_ANONYMOUS` memory, inherited by forked children.
pub struct ShmRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain shared memory; users synchronise through atomics they place in it.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; the handle itself has no interior state.
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    /// Maps `len` bytes (rounded up to a page), zero-filled.
    pub fn new(len: usize) -> Result<Self, String> {
        let len = len.max(1).div_ceil(4096) * 4096;
        // SAFETY: an anonymous shared mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {len} B: {}", os::last_errno()));
        }
        Ok(ShmRegion {
            ptr: NonNull::new(p.cast()).ok_or("mmap returned null")?,
            len,
        })
    }
    /// Start of the region (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: this mapping was created by `new` with this length and is not used after drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Types for which all-zero bytes are a valid value and that may be shared between processes
/// (atomics and plain integers only, no pointers).
///
/// # Safety
/// The all-zero bit pattern must be a valid `Self`, and `Self` must hold no pointers or
/// process-local handles.
pub unsafe trait ZeroShared: Sync {}

// SAFETY: an all-zero AtomicU64 is 0 and holds no pointer.
unsafe impl ZeroShared for AtomicU64 {}
// SAFETY: an all-zero AtomicU32 is 0 and holds no pointer.
unsafe impl ZeroShared for std::sync::atomic::AtomicU32 {}
// SAFETY: arrays of zero-valid shared types are zero-valid.
unsafe impl<T: ZeroShared, const N: usize> ZeroShared for [T; N] {}

/// A `T` alone in fresh shared memory (page aligned, so 128-byte aligned).
pub struct Shared<T: ZeroShared> {
    region: ShmRegion,
    _t: std::marker::PhantomData<T>,
}

impl<T: ZeroShared> Shared<T> {
    /// A zero-filled `T` in its own shared mapping.
    pub fn new() -> Result<Self, String> {
        Ok(Shared {
            region: ShmRegion::new(std::mem::size_of::<T>())?,
            _t: std::marker::PhantomData,
        })
    }
}

impl<T: ZeroShared> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mapping is page aligned, at least size_of::<T>() long, zero-filled (a valid
        // T by the ZeroShared contract) and lives as long as `self`; T is Sync.
        unsafe { &*self.region.as_ptr().cast::<T>() }
    }
}

/// One role's results, written by the child into shared memory.
#[repr(C, align(128))]
pub struct Slot {
    t_start: AtomicU64,
    t_end: AtomicU64,
    cpu_ns: AtomicU64,
    sum: AtomicU64,
    count: AtomicU64,
    err_len: AtomicU64,
    err: [AtomicU8; 200],
}

/// The control block of one run: arrivals at the gate and one slot per role.
#[repr(C, align(128))]
pub struct Ctl {
    arrived: AtomicU64,
    slots: [Slot; MAX_ROLES],
}

// SAFETY: Ctl and Slot are made of atomics only; all-zero is a valid initial state.
unsafe impl ZeroShared for Ctl {}

/// What a role reports besides its timing: its checksum sum and message count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleOut {
    /// Wrapping sum of the values received (consumers) or 0.
    pub sum: u64,
    /// Messages received (consumers) or sent (producers).
    pub count: u64,
}

impl RoleOut {
    /// A role with nothing to report.
    pub const NONE: RoleOut = RoleOut { sum: 0, count: 0 };
}

/// The start gate as one role sees it.
pub struct Gate<'a> {
    ctl: &'a Ctl,
    role: usize,
    roles: usize,
    thread: bool,
    cpu0: std::cell::Cell<u64>,
}

impl Gate<'_> {
    /// Passes the start gate: announce, spin (yielding) until every role is in, stamp t_start.
    pub fn start(&self) {
        self.ctl.arrived.fetch_add(1, AcqRel);
        while self.ctl.arrived.load(Acquire) < self.roles as u64 {
            std::thread::yield_now();
        }
        self.cpu0.set(if self.thread {
            os::cpu_thread_ns()
        } else {
            os::cpu_self_ns()
        });
        self.ctl.slots[self.role]
            .t_start
            .store(os::now_ns(), Release);
    }
    /// This role's index.
    pub fn role(&self) -> usize {
        self.role
    }
    fn finish(&self, r: Result<RoleOut, String>) -> bool {
        let t = os::now_ns();
        let slot = &self.ctl.slots[self.role];
        slot.t_end.store(t, Release);
        let cpu = if self.thread {
            os::cpu_thread_ns()
        } else {
            os::cpu_self_ns()
        };
        slot.cpu_ns
            .store(cpu.saturating_sub(self.cpu0.get()), Release);
        match r {
            Ok(o) => {
                slot.sum.store(o.sum, Release);
                slot.count.store(o.count, Release);
                true
            }
            Err(e) => {
                let b = e.as_bytes();
                let n = b.len().min(slot.err.len());
                for (d, s) in slot.err.iter().zip(&b[..n]) {
                    d.store(*s, Relaxed);
                }
                slot.err_len.store(n as u64, Release);
                false
            }
        }
    }
}

/// The result of one gated run.
#[derive(Clone, Debug)]
pub struct GatedRun {
    /// max(t_end) − min(t_start), seconds.
    pub elapsed: f64,
    /// CPU seconds of all roles together, from their gate to their end.
    pub cpu: f64,
    /// Per-role CPU seconds.
    pub role_cpu: Vec<f64>,
    /// Per-role results.
    pub roles: Vec<RoleOut>,
}

impl GatedRun {
    fn collect(ctl: &Ctl, roles: usize) -> Result<Self, String> {
        let s = &ctl.slots[..roles];
        if let Some(i) = s.iter().position(|s| s.t_start.load(Acquire) == 0) {
            return Err(format!("role {i} never passed the start gate"));
        }
        let t0 = s.iter().map(|s| s.t_start.load(Acquire)).min().unwrap_or(0);
        let t1 = s.iter().map(|s| s.t_end.load(Acquire)).max().unwrap_or(0);
        let role_cpu: Vec<f64> = s
            .iter()
            .map(|s| s.cpu_ns.load(Acquire) as f64 * 1e-9)
            .collect();
        Ok(GatedRun {
            elapsed: t1.saturating_sub(t0) as f64 * 1e-9,
            cpu: role_cpu.iter().sum(),
            role_cpu,
            roles: s
                .iter()
                .map(|s| RoleOut {
                    sum: s.sum.load(Acquire),
                    count: s.count.load(Acquire),
                })
                .collect(),
        })
    }
    /// Sum of the per-role counts.
    pub fn total_count(&self) -> u64 {
        self.roles.iter().map(|r| r.count).sum()
    }
}

fn slot_err(ctl: &Ctl, role: usize) -> String {
    let s = &ctl.slots[role];
    let n = (s.err_len.load(Acquire) as usize).min(s.err.len());
    let b: Vec<u8> = s.err[..n].iter().map(|b| b.load(Relaxed)).collect();
    String::from_utf8_lossy(&b).into_owned()
}

/// Which cpu a role is pinned to when pinning: `side(role)` (0 = producer / A, 1 = consumer / B).
pub type Side<'a> = &'a (dyn Fn(usize) -> usize + Sync);

/// Forks one child per role and runs `body(gate)` in each; see the module doc.
///
/// `side` maps a role to cpu 0 or 1 when `pin` is set. The body must call [`Gate::start`] once
/// after its setup. A child that returns `Err`, panics or is killed fails the run with its
/// message; so does the 120 s watchdog.
pub fn run_procs<F>(roles: usize, pin: bool, side: Side<'_>, body: F) -> Result<GatedRun, String>
where
    F: Fn(&Gate<'_>) -> Result<RoleOut, String>,
{
    assert!(roles > 0 && roles <= MAX_ROLES, "role count out of range");
    let ctl = Shared::<Ctl>::new()?;
    let mut chld = nix::sys::signal::SigSet::empty();
    chld.add(nix::sys::signal::Signal::SIGCHLD);
    let old = chld
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(|e| format!("sigprocmask: {e:?}"))?;
    let mut pids: Vec<libc::pid_t> = Vec::with_capacity(roles);
    let mut failure: Option<String> = None;
    for role in 0..roles {
        // SAFETY: the harness is single-threaded when it forks (documented requirement of
        // compare and the benches); the child only runs `body` and then `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            failure = Some(format!("fork: {}", os::last_errno()));
            break;
        }
        if pid == 0 {
            let _ = old.thread_set_mask();
            if pin {
                os::pin_to(side(role));
            }
            let gate = Gate {
                ctl: &ctl,
                role,
                roles,
                thread: false,
                cpu0: 0.into(),
            };
            let r = catch_unwind(AssertUnwindSafe(|| body(&gate)))
                .unwrap_or_else(|_| Err("role panicked".into()));
            let ok = gate.finish(r);
            // SAFETY: leave the child without running the parent's destructors or atexit hooks.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    let deadline = Instant::now() + WATCHDOG;
    let mut live: Vec<(usize, libc::pid_t)> = pids.iter().copied().enumerate().collect();
    while failure.is_none() && !live.is_empty() {
        let mut i = 0;
        while i < live.len() {
            let (role, pid) = live[i];
            let mut status = 0;
            // SAFETY: `status` is a valid int; pid is our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                live.swap_remove(i);
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    continue;
                }
                let why = if libc::WIFSIGNALED(status) {
                    format!("role {role} killed by signal {}", libc::WTERMSIG(status))
                } else {
                    let e = slot_err(&ctl, role);
                    if e.is_empty() {
                        format!("role {role} exited {}", libc::WEXITSTATUS(status))
                    } else {
                        format!("role {role}: {e}")
                    }
                };
                failure = Some(why);
                break;
            } else if r < 0 && nix::errno::Errno::last_raw() != libc::EINTR {
                live.swap_remove(i);
                failure = Some(format!("waitpid: {}", os::last_errno()));
                break;
            }
            i += 1;
        }
        if failure.is_some() || live.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            failure = Some(format!("watchdog: not done after {} s", WATCHDOG.as_secs()));
            break;
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        // SAFETY: `chld` is a valid sigset, the info pointer may be null, `ts` is valid.
        unsafe { libc::sigtimedwait(chld.as_ref(), std::ptr::null_mut(), &ts) };
    }
    for &(_, pid) in &live {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    let _ = old.thread_set_mask();
    if let Some(f) = failure {
        return Err(f);
    }
    GatedRun::collect(&ctl, roles)
}

/// Runs one scoped thread per role through the same gate (P1's in-process rows).
pub fn run_threads<F>(roles: usize, pin: bool, side: Side<'_>, body: F) -> Result<GatedRun, String>
where
    F: Fn(&Gate<'_>) -> Result<RoleOut, String> + Sync,
{
    assert!(roles > 0 && roles <= MAX_ROLES, "role count out of range");
    let ctl = Shared::<Ctl>::new()?;
    let oks: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..roles)
            .map(|role| {
                let ctl = &ctl;
                let body = &body;
                s.spawn(move || {
                    if pin {
                        os::pin_to(side(role));
                    }
                    let gate = Gate {
                        ctl,
                        role,
                        roles,
                        thread: true,
                        cpu0: 0.into(),
                    };
                    let r = catch_unwind(AssertUnwindSafe(|| body(&gate)))
                        .unwrap_or_else(|_| Err("role panicked".into()));
                    gate.finish(r)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(false)).collect()
    });
    if let Some(role) = oks.iter().position(|ok| !ok) {
        return Err(format!("role {role}: {}", slot_err(&ctl, role)));
    }
    GatedRun::collect(&ctl, roles)
}

/// Side function: producers (roles < `m`) on cpu 0, consumers on cpu 1.
pub fn split_at(m: usize) -> impl Fn(usize) -> usize + Sync {
    move |role| usize::from(role >= m)
}

/// Times a single-party loop: `f` runs once between two clock reads; CPU time recorded.
pub fn time_local<F: FnOnce() -> Result<u64, String>>(f: F) -> Result<crate::Measure, String> {
    let c0 = os::cpu_self_ns();
    let t0 = os::now_ns();
    let n = f()?;
    let t1 = os::now_ns();
    let c1 = os::cpu_self_ns();
    Ok(crate::Measure::new(n, (t1 - t0) as f64 * 1e-9).with_cpu((c1 - c0) as f64 * 1e-9))
}

/// A role of an M producers × N consumers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Producer `i` of `m`.
    Producer(usize),
    /// Consumer `j` of `c`.
    Consumer(usize),
}

/// Runs an M×N workload in processes and verifies its checksum: roles `0..m` are producers,
/// `m..m+c` consumers (producers pinned to cpu 0, consumers to cpu 1).
pub fn run_mxn<F>(plan: Plan, pin: bool, body: F) -> Result<crate::Measure, String>
where
    F: Fn(&Gate<'_>, Role) -> Result<RoleOut, String>,
{
    let m = plan.m;
    let run = run_procs(plan.m + plan.c, pin, &split_at(m), |g: &Gate<'_>| {
        let r = g.role();
        body(
            g,
            if r < m {
                Role::Producer(r)
            } else {
                Role::Consumer(r - m)
            },
        )
    })?;
    plan.verify_roles(&run.roles)?;
    Ok(crate::Measure::new(plan.n(), run.elapsed).with_cpu(run.cpu))
}

/// [`run_mxn`] with threads instead of processes.
pub fn run_mxn_threads<F>(plan: Plan, pin: bool, body: F) -> Result<crate::Measure, String>
where
    F: Fn(&Gate<'_>, Role) -> Result<RoleOut, String> + Sync,
{
    let m = plan.m;
    let run = run_threads(plan.m + plan.c, pin, &split_at(m), |g: &Gate<'_>| {
        let r = g.role();
        body(
            g,
            if r < m {
                Role::Producer(r)
            } else {
                Role::Consumer(r - m)
            },
        )
    })?;
    plan.verify_roles(&run.roles)?;
    Ok(crate::Measure::new(plan.n(), run.elapsed).with_cpu(run.cpu))
}

/// Runs a two-party workload (A = role 0 on cpu 0, B = role 1 on cpu 1) in processes.
pub fn run_pair<F>(n: u64, pin: bool, body: F) -> Result<crate::Measure, String>
where
    F: Fn(&Gate<'_>, bool) -> Result<RoleOut, String>,
{
    let side = split_at(1);
    let run = run_procs(2, pin, &side, |g| body(g, g.role() == 0))?;
    Ok(crate::Measure::new(n, run.elapsed).with_cpu(run.cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_time_and_report() {
        let r = run_procs(2, false, &split_at(1), |g| {
            g.start();
            Ok(RoleOut {
                sum: g.role() as u64 + 10,
                count: 1,
            })
        })
        .unwrap();
        assert_eq!(
            r.roles,
            vec![RoleOut { sum: 10, count: 1 }, RoleOut { sum: 11, count: 1 }]
        );
        assert!(r.elapsed >= 0.0);
    }

    #[test]
    fn failing_role_fails_run() {
        let r = run_procs(2, false, &split_at(1), |g| {
            g.start();
            if g.role() == 1 {
                Err("boom".into())
            } else {
                Ok(RoleOut::NONE)
            }
        });
        assert_eq!(r.unwrap_err(), "role 1: boom");
    }

    #[test]
    fn threads_gate() {
        let r = run_threads(3, false, &split_at(1), |g| {
            g.start();
            Ok(RoleOut { sum: 1, count: 2 })
        })
        .unwrap();
        assert_eq!(r.total_count(), 6);
    }
}
