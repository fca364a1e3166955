//! Reference rows for semaphores and mutexes: P5 (glibc `sem_t`, unnamed pshared and named),
//! P6 (pthread mutexes, process-shared and robust, and a bare `AtomicU64`), the in-process
//! `parking_lot::Mutex`, and P10 (`raw_sync` mutex in a `shared_memory` segment).

use std::ffi::CString;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::harness::{run_procs, split_at, time_local, RoleOut, Shared, ShmRegion};
use crate::os;
use crate::refs_queue::Padded;
use crate::{Measure, Outcome, Run};

fn sem_wait(s: *mut libc::sem_t) -> Result<(), String> {
    loop {
        // SAFETY: `s` points to an initialised or opened semaphore that outlives the call.
        if unsafe { libc::sem_wait(s) } == 0 {
            return Ok(());
        }
        if nix::errno::Errno::last_raw() != libc::EINTR {
            return Err(format!("sem_wait: {}", os::last_errno()));
        }
    }
}

fn sem_post(s: *mut libc::sem_t) -> Result<(), String> {
    // SAFETY: as in sem_wait.
    if unsafe { libc::sem_post(s) } == 0 {
        Ok(())
    } else {
        Err(format!("sem_post: {}", os::last_errno()))
    }
}

/// Unnamed pshared semaphores in one shared region.
struct SemBlock {
    region: ShmRegion,
    count: usize,
}

impl SemBlock {
    fn new(count: usize, value: u32) -> Result<Self, String> {
        let region = ShmRegion::new(count * 64)?;
        let b = SemBlock { region, count: 0 };
        let mut b = b;
        for i in 0..count {
            // SAFETY: each sem_t gets its own 64-byte, suitably aligned spot in the region.
            if unsafe { libc::sem_init(b.raw(i), 1, value) } != 0 {
                return Err(format!("sem_init: {}", os::last_errno()));
            }
            b.count += 1;
        }
        Ok(b)
    }
    fn raw(&self, i: usize) -> *mut libc::sem_t {
        // SAFETY: i < count and the region holds count * 64 bytes.
        unsafe { self.region.as_ptr().add(i * 64) }.cast()
    }
}

impl Drop for SemBlock {
    fn drop(&mut self) {
        for i in 0..self.count {
            // SAFETY: initialised by sem_init and no longer used (children have exited).
            unsafe { libc::sem_destroy(self.raw(i)) };
        }
    }
}

/// A named semaphore made by this process (`O_CREAT | O_EXCL`, 0600); unlinked and closed on drop.
struct NamedSem {
    name: CString,
    sem: *mut libc::sem_t,
}

impl NamedSem {
    fn create(value: u32) -> Result<Self, String> {
        let name =
            CString::new(os::unique_name("bench-sem")).map_err(|_| "sem name".to_string())?;
        // SAFETY: valid name; variadic mode and value per POSIX.
        let sem = unsafe {
            libc::sem_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL,
                0o600 as libc::c_uint,
                value as libc::c_uint,
            )
        };
        if sem == libc::SEM_FAILED {
            return Err(format!("sem_open: {}", os::last_errno()));
        }
        Ok(NamedSem { name, sem })
    }
    fn unlink(&self) {
        // SAFETY: valid name; unlinking twice only returns ENOENT.
        unsafe { libc::sem_unlink(self.name.as_ptr()) };
    }
    fn open_again(&self) -> Result<*mut libc::sem_t, String> {
        // SAFETY: valid name, no O_CREAT so no variadic arguments.
        let s = unsafe { libc::sem_open(self.name.as_ptr(), 0) };
        if s == libc::SEM_FAILED {
            Err(format!("sem_open existing: {}", os::last_errno()))
        } else {
            Ok(s)
        }
    }
}

impl Drop for NamedSem {
    fn drop(&mut self) {
        self.unlink();
        // SAFETY: opened by sem_open, closed once.
        unsafe { libc::sem_close(self.sem) };
    }
}

fn sem_pairs(n: u64, s: *mut libc::sem_t) -> Result<Measure, String> {
    time_local(|| {
        for _ in 0..n {
            sem_wait(s)?;
            sem_post(s)?;
        }
        Ok(n)
    })
}

/// P5a: pshared `sem_t` (1) in shared memory, `sem_wait; sem_post` pairs.
pub fn p5a(r: &Run) -> Outcome {
    let run = || {
        let b = SemBlock::new(1, 1)?;
        sem_pairs(r.n, b.raw(0))
    };
    run().into()
}

/// P5c: P5a with a named semaphore, unlinked at once.
pub fn p5c(r: &Run) -> Outcome {
    let run = || {
        let s = NamedSem::create(1)?;
        s.unlink();
        sem_pairs(r.n, s.sem)
    };
    match run() {
        Err(e) if e.starts_with("sem_open") => Outcome::Skipped(e),
        o => o.into(),
    }
}

fn sem_pingpong(
    n: u64,
    pin: bool,
    get: &dyn Fn() -> Result<(*mut libc::sem_t, *mut libc::sem_t), String>,
) -> Result<Measure, String> {
    let run = run_procs(2, pin, &split_at(1), |g| {
        let (a, b) = get()?;
        let is_a = g.role() == 0;
        g.start();
        for _ in 0..n {
            if is_a {
                sem_post(a)?;
                sem_wait(b)?;
            } else {
                sem_wait(a)?;
                sem_post(b)?;
            }
        }
        Ok(RoleOut::NONE)
    })?;
    Ok(Measure::new(n, run.elapsed).with_cpu(run.cpu))
}

/// P5b: two pshared `sem_t` (0) ping-pong.
pub fn p5b(r: &Run) -> Outcome {
    let run = || {
        let b = SemBlock::new(2, 0)?;
        let (a, bb) = (b.raw(0) as usize, b.raw(1) as usize);
        sem_pingpong(r.n, r.pin, &|| {
            Ok((a as *mut libc::sem_t, bb as *mut libc::sem_t))
        })
    };
    run().into()
}

/// P5d: P5b with named semaphores, opened by name in each child before the gate.
pub fn p5d(r: &Run) -> Outcome {
    let (a, b) = match NamedSem::create(0).and_then(|a| Ok((a, NamedSem::create(0)?))) {
        Ok(p) => p,
        Err(e) => return Outcome::Skipped(e),
    };
    sem_pingpong(r.n, r.pin, &|| Ok((a.open_again()?, b.open_again()?))).into()
}

/// A process-shared pthread mutex and its counter in one 128-byte-aligned struct.
#[repr(C, align(128))]
struct MutexBlock {
    m: libc::pthread_mutex_t,
    counter: u64,
}

struct SharedMutex {
    region: ShmRegion,
}

impl SharedMutex {
    fn new(robust: bool) -> Result<Self, String> {
        let region = ShmRegion::new(std::mem::size_of::<MutexBlock>())?;
        let s = SharedMutex { region };
        // SAFETY: attr is initialised by pthread_mutexattr_init before use and destroyed after;
        // the mutex lives in the fresh, page-aligned shared region.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if robust {
                libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            let r = libc::pthread_mutex_init(s.mutex(), &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
            if r != 0 {
                return Err(format!("pthread_mutex_init: {}", os::errno_name(r)));
            }
        }
        Ok(s)
    }
    fn block(&self) -> *mut MutexBlock {
        self.region.as_ptr().cast()
    }
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: the block is inside the region.
        unsafe { std::ptr::addr_of_mut!((*self.block()).m) }
    }
    fn counter(&self) -> *mut u64 {
        // SAFETY: the block is inside the region.
        unsafe { std::ptr::addr_of_mut!((*self.block()).counter) }
    }
    #[inline(always)]
    fn lock(&self) -> Result<(), String> {
        // SAFETY: initialised process-shared mutex in a live mapping.
        let r = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        if r == 0 {
            Ok(())
        } else {
            Err(format!("pthread_mutex_lock: {}", os::errno_name(r)))
        }
    }
    #[inline(always)]
    fn unlock(&self) {
        // SAFETY: we hold the mutex.
        unsafe { libc::pthread_mutex_unlock(self.mutex()) };
    }
}

impl Drop for SharedMutex {
    fn drop(&mut self) {
        // SAFETY: no process uses the mutex any more.
        unsafe { libc::pthread_mutex_destroy(self.mutex()) };
    }
}

/// P6a (`robust = false`) / P6b: `lock; unlock` pairs, one process.
pub fn p6_pairs(r: &Run, robust: bool) -> Outcome {
    let run = || {
        let m = SharedMutex::new(robust)?;
        time_local(|| {
            for _ in 0..r.n {
                m.lock()?;
                m.unlock();
            }
            Ok(r.n)
        })
    };
    run().into()
}

/// Runs 2 procs × n/2 increments through `inc` and checks the final counter with `read`.
fn counter2(
    r: &Run,
    inc: &dyn Fn(u64) -> Result<(), String>,
    read: &dyn Fn() -> u64,
) -> Result<Measure, String> {
    let half = r.n / 2;
    let run = run_procs(2, r.pin, &split_at(1), |g| {
        g.start();
        inc(half)?;
        Ok(RoleOut {
            sum: 0,
            count: half,
        })
    })?;
    let fin = read();
    if fin != 2 * half {
        return Err(format!("counter ended at {fin}, want {}", 2 * half));
    }
    Ok(Measure::new(2 * half, run.elapsed).with_cpu(run.cpu))
}

/// P6c (`robust = false`) / P6d: 2 procs × n/2 locked volatile increments; final = n.
pub fn p6_counter(r: &Run, robust: bool) -> Outcome {
    let run = || {
        let m = SharedMutex::new(robust)?;
        let c = m.counter() as usize;
        counter2(
            r,
            &|k| {
                for _ in 0..k {
                    m.lock()?;
                    // SAFETY: the counter is in the live mapping and guarded by the mutex.
                    unsafe {
                        let p = c as *mut u64;
                        p.write_volatile(p.read_volatile() + 1);
                    }
                    m.unlock();
                }
                Ok(())
            },
            // SAFETY: all children have exited; plain read of the counter.
            &|| unsafe { (c as *const u64).read_volatile() },
        )
    };
    run().into()
}

/// P6e: one `AtomicU64` alone in a 128-byte block, 2 procs × n/2 `fetch_add(1, SeqCst)`.
pub fn p6e(r: &Run) -> Outcome {
    let run = || {
        let a = Shared::<Padded<AtomicU64>>::new()?;
        counter2(
            r,
            &|k| {
                for _ in 0..k {
                    a.0.fetch_add(1, SeqCst);
                }
                Ok(())
            },
            &|| a.0.load(SeqCst),
        )
    };
    run().into()
}

/// `parking_lot` 0.12 `Mutex` in-process: `drop(m.lock())` pairs (S2's in-process reference).
pub fn parking_lot_pairs(r: &Run) -> Outcome {
    let m = parking_lot::Mutex::new(0u64);
    time_local(|| {
        for _ in 0..r.n {
            drop(black_box(&m).lock());
        }
        Ok(r.n)
    })
    .into()
}

/// P10: P6c through `raw_sync` 0.1 `locks::Mutex` in a `shared_memory` 0.12 segment.
pub fn p10(r: &Run) -> Outcome {
    use raw_sync::locks::{LockImpl, LockInit, Mutex};
    let shm = match shared_memory::ShmemConf::new().size(4096).create() {
        Ok(s) => s,
        Err(e) => return Outcome::Skipped(format!("shared_memory create: {e:?}")),
    };
    let base = shm.as_ptr();
    let lock_len = Mutex::size_of(Some(base));
    // SAFETY: the segment is 4096 bytes; the lock and an 8-aligned u64 after it fit easily.
    let data = unsafe { base.add(lock_len.div_ceil(8) * 8) };
    // SAFETY: `base` and `data` point into the live, writable segment (raw_sync's contract).
    let lock = match unsafe { Mutex::new(base, data) } {
        Ok((l, _)) => l,
        Err(e) => return Outcome::Skipped(format!("raw_sync Mutex::new: {e}")),
    };
    let lock: &dyn LockImpl = &*lock;
    let run = counter2(
        r,
        &|k| {
            for _ in 0..k {
                let g = lock.lock().map_err(|e| format!("raw_sync lock: {e}"))?;
                let p: *mut u64 = (*g).cast();
                // SAFETY: the data pointer is the u64 in the segment, guarded by the lock.
                unsafe { p.write_volatile(p.read_volatile() + 1) };
                drop(g);
            }
            Ok(())
        },
        // SAFETY: all children have exited; plain read of the counter.
        &|| unsafe { data.cast::<u64>().read_volatile() },
    );
    drop(shm);
    run.into()
}
