//! Futures that wait on futex words without a thread each: [`FutexWait`].
//!
//! A waiting future registers its word with a *waiter thread* of this process, which sleeps
//! in `futex_waitv(2)` on up to 127 distinct words at once (plus a private control word that
//! tells it about new registrations) and wakes the futures' [`Waker`]s. A thousand tasks
//! waiting on one queue cost one thread; the first waiter thread starts at the first
//! registration, further ones only when more than 127 distinct words are waited on at once,
//! and each exits after [`IDLE_EXIT`] without registrations.
//!
//! The futures are runtime-agnostic (std [`Waker`]s only): they work under tokio, async-std,
//! smol or a hand-written executor.
//!
//! # Wake-up semantics
//! A `FUTEX_WAKE` on a word fires every future registered on it, whatever count the waker
//! passed (the kernel does not tell the waiter thread how many it meant to wake); a future
//! also completes when its deadline passes and when, at a poll, the word no longer holds the
//! value it waits on. Like a blocking [`Futex::wait`](super::Futex::wait), every completion
//! obliges the caller to re-check its condition.
//!
//! # Soundness
//! The waiter thread never reads the memory of a registered word: only the kernel does (in
//! `futex_waitv`, which reports `EFAULT` instead of faulting when a word was unmapped). So a
//! future that is leaked with `mem::forget` while its word's mapping goes away leaves at worst
//! a stale registration, which the thread drops at the next spurious wake-up or deadline.
//!
//! # Brief waits
//! Before it registers, a future waits on its word in its own thread for at most
//! [`BRIEF_WAIT`] (50 µs), asleep in the kernel (no spinning): a reply that comes within that
//! time (a ping-pong with another process) wakes the task's thread directly, one hand-off
//! instead of two (kernel -> waiter thread -> the runtime's thread). It blocks the executor
//! thread for that long at most, within tokio's guidance of 10 to 100 µs between `.await`s.
//! Brief waits that time out back off exponentially on that thread (a word changed by another
//! task of the same thread can never end one), and resume at once when one succeeds.
//!
//! # Kernels before 5.16
//! Without `futex_waitv` (`ENOSYS`, or a seccomp filter's `EPERM`), each distinct waited word
//! gets a thread of its own sleeping in `FUTEX_WAIT` on it, in slices of at most
//! [`FALLBACK_SLICE`] so that new deadlines are honoured within that time. Setting the
//! environment variable `IPC_SHM_NO_FUTEX_WAITV` (to anything) before the first
//! registration forces this path (for tests).
//!
//! # Fork
//! A forked child starts with no waiter thread and no registrations: the first registration
//! in the child builds a fresh registry (the parent's, possibly locked at the fork, is never
//! touched again).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::deadline::Deadline;
use super::futex::WaitOutcome;
use crate::sys::{self, FutexWaitv, WaitvOutcome, FUTEX_WAITV_MAX};

/// How long a waiter thread without registrations lives before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(1);

/// On kernels without `futex_waitv`, the longest a per-word waiter thread sleeps before it
/// looks at new deadlines.
pub const FALLBACK_SLICE: Duration = Duration::from_millis(10);

/// The longest a future blocks its own thread in a futex wait before it registers with the
/// waiter thread (see "Brief waits" in the module doc).
pub const BRIEF_WAIT: Duration = Duration::from_micros(50);

/// The most polls a thread lets pass without a brief wait after brief waits timed out.
const BRIEF_MAX_SKIP: u32 = 1024;

thread_local! {
    /// (polls left to skip, skip after the next timeout): brief waits back off exponentially
    /// on a thread where they time out, and resume at once when one succeeds.
    static BRIEF: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 1)) };
}

/// The brief wait of a future about to register: a futex wait on the calling thread of at
/// most [`BRIEF_WAIT`] (and not past `deadline`). `Some` if it ended the wait (the word
/// changed, a wake came, or the deadline passed), `None` to register.
fn brief_wait(word: Word<'_>, expected: u32, deadline: Deadline) -> Option<WaitOutcome> {
    let (skip, next) = BRIEF.with(std::cell::Cell::get);
    if skip > 0 {
        BRIEF.with(|b| b.set((skip - 1, next)));
        return None;
    }
    let until = deadline.min(Deadline::after(BRIEF_WAIT));
    let addr = word.addr() as *const u32;
    // SAFETY: `addr` is the 4-byte-aligned address of a word the future borrows for its whole
    // life (so it stays mapped during the call); the kernel only compares and sleeps on it.
    let r = unsafe { sys::futex_wait(addr, expected, until.as_monotonic_nanos()) };
    let changed = word.load() != expected;
    match r {
        sys::FutexWait::TimedOut if !changed => {
            BRIEF.with(|b| b.set((next, (next * 2).min(BRIEF_MAX_SKIP))));
            deadline.is_expired().then_some(WaitOutcome::TimedOut)
        }
        _ => {
            BRIEF.with(|b| b.set((0, 1)));
            Some(if changed {
                WaitOutcome::ValueChanged
            } else {
                WaitOutcome::Woken
            })
        }
    }
}

/// Distinct words one waiter thread serves (one `futex_waitv` slot is the control word).
const WORDS_PER_THREAD: usize = FUTEX_WAITV_MAX - 1;

/// The word a future waits on: a whole `AtomicU32`, or the low half of an `AtomicU64` (as
/// [`wait_low_half`](super::wait_low_half)).
#[derive(Clone, Copy, Debug)]
enum Word<'a> {
    U32(&'a AtomicU32),
    LowHalf(&'a AtomicU64),
}

impl Word<'_> {
    fn load(&self) -> u32 {
        match self {
            Word::U32(w) => w.load(Ordering::Acquire),
            // Truncation is the point: the futex compares the low 32 bits.
            Word::LowHalf(w) => w.load(Ordering::Acquire) as u32,
        }
    }

    /// The address the kernel compares (the low half's, on either endianness).
    fn addr(&self) -> usize {
        match self {
            Word::U32(w) => w.as_ptr() as usize,
            Word::LowHalf(w) => {
                let base = w.as_ptr() as usize;
                if cfg!(target_endian = "little") {
                    base
                } else {
                    base + 4
                }
            }
        }
    }
}

/// A future that completes when the word no longer holds `expected`, when a `FUTEX_WAKE` on
/// the word reaches it, or at its deadline. Output: the [`WaitOutcome`] a blocking
/// [`Futex::wait`](super::Futex::wait) would give (`ValueChanged`, `Woken`, `TimedOut`).
///
/// Cancel-safe: dropping it before it completes removes its registration and nothing else.
///
/// ```
/// use ipc_shm::lowlevel::sync::{Deadline, Futex, FutexWait, WaitOutcome};
/// use std::future::Future;
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Wake, Waker};
/// use std::time::Duration;
///
/// // A minimal executor: park the thread until the waker fires.
/// struct Unpark(std::thread::Thread);
/// impl Wake for Unpark {
///     fn wake(self: Arc<Self>) {
///         self.0.unpark();
///     }
/// }
/// fn block_on<F: Future>(f: F) -> F::Output {
///     let mut f = std::pin::pin!(f);
///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
///     loop {
///         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
///             return v;
///         }
///         std::thread::park();
///     }
/// }
///
/// let word = Arc::new(Futex::new(0));
/// let setter = {
///     let word = Arc::clone(&word);
///     std::thread::spawn(move || {
///         std::thread::sleep(Duration::from_millis(20));
///         word.store(1, Ordering::Release);
///         word.wake_all();
///     })
/// };
/// let outcome = block_on(FutexWait::new(&word, 0, Deadline::never()));
/// assert_ne!(outcome, WaitOutcome::TimedOut);
/// assert_eq!(word.load(Ordering::Acquire), 1);
/// setter.join().unwrap();
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct FutexWait<'a> {
    word: Word<'a>,
    expected: u32,
    deadline: Deadline,
    reg: Option<Registration>,
}

impl<'a> FutexWait<'a> {
    /// Waits while `word` holds `expected`, until woken or `deadline`.
    pub fn new(word: &'a AtomicU32, expected: u32, deadline: Deadline) -> Self {
        FutexWait {
            word: Word::U32(word),
            expected,
            deadline,
            reg: None,
        }
    }

    /// Waits while the low 32 bits of `word` hold `expected` (the async form of
    /// [`wait_low_half`](super::wait_low_half)).
    pub fn low_half(word: &'a AtomicU64, expected: u32, deadline: Deadline) -> Self {
        FutexWait {
            word: Word::LowHalf(word),
            expected,
            deadline,
            reg: None,
        }
    }

    fn finish(&mut self, outcome: WaitOutcome) -> Poll<WaitOutcome> {
        if let Some(reg) = self.reg.take() {
            reg.cancel();
        }
        Poll::Ready(outcome)
    }
}

impl Future for FutexWait<'_> {
    type Output = WaitOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
        let this = self.get_mut();
        if this.word.load() != this.expected {
            return this.finish(WaitOutcome::ValueChanged);
        }
        if this.deadline.is_expired() {
            return this.finish(WaitOutcome::TimedOut);
        }
        match &this.reg {
            Some(reg) => {
                if reg.slot.fired.load(Ordering::Acquire) {
                    this.reg = None;
                    return Poll::Ready(WaitOutcome::Woken);
                }
                reg.slot.set_waker(cx.waker());
                // The thread may have fired between the check and the new waker: look again.
                if reg.slot.fired.load(Ordering::Acquire) {
                    this.reg = None;
                    return Poll::Ready(WaitOutcome::Woken);
                }
                Poll::Pending
            }
            None => {
                if let Some(outcome) = brief_wait(this.word, this.expected, this.deadline) {
                    return Poll::Ready(outcome);
                }
                let slot = Arc::new(Slot {
                    fired: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                let reg = registry().register(
                    this.word.addr(),
                    this.expected,
                    this.deadline.as_monotonic_nanos(),
                    Arc::clone(&slot),
                );
                this.reg = Some(reg);
                // The word may have changed before the thread armed it; the kernel would see
                // that too, but checking here saves a round trip through the thread.
                if this.word.load() != this.expected {
                    return this.finish(WaitOutcome::ValueChanged);
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for FutexWait<'_> {
    fn drop(&mut self) {
        if let Some(reg) = self.reg.take() {
            reg.cancel();
        }
    }
}

/// What a future and its registration share.
#[derive(Debug)]
struct Slot {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn set_waker(&self, w: &Waker) {
        let mut g = lock(&self.waker);
        match g.as_ref() {
            Some(old) if old.will_wake(w) => {}
            _ => *g = Some(w.clone()),
        }
    }

    /// Marks the slot fired and takes its waker (woken by the caller, outside any lock).
    fn fire(&self) -> Option<Waker> {
        self.fired.store(true, Ordering::Release);
        lock(&self.waker).take()
    }
}

/// A future's registration: which shard holds it, under which id.
#[derive(Debug)]
struct Registration {
    shard: Arc<Shard>,
    id: u64,
    slot: Arc<Slot>,
}

impl Registration {
    fn cancel(self) {
        if self.slot.fired.load(Ordering::Acquire) {
            return;
        }
        let mut st = self.shard.lock();
        if let Some(i) = st.entries.iter().position(|e| e.id == self.id) {
            st.entries.swap_remove(i);
        }
        // A word nobody waits on any more costs the thread nothing until its next pass (and
        // it never reads the word's memory itself), so no wake-up, except for the last
        // registration: then the thread must start counting towards its idle exit.
        let last = st.entries.is_empty() && st.armed.is_some();
        drop(st);
        if last {
            self.shard.poke();
        }
    }
}

/// One registered wait.
#[derive(Debug)]
struct Entry {
    id: u64,
    addr: usize,
    expected: u32,
    deadline_ns: Option<u64>,
    slot: Arc<Slot>,
}

/// How a shard's thread waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `futex_waitv` on up to 127 words plus the control word.
    Waitv,
    /// `FUTEX_WAIT` on the one word of the shard, in slices (no `futex_waitv`).
    Single,
}

#[derive(Debug, Default)]
struct ShardState {
    entries: Vec<Entry>,
    /// What the thread sleeps on now: the addresses it armed and its wake-up time; `None`
    /// while it runs.
    armed: Option<(Vec<usize>, Option<u64>)>,
    /// The thread has exited (idle, or replaced after `futex_waitv` turned out missing).
    retired: bool,
}

/// One waiter thread and the registrations it serves.
#[derive(Debug)]
struct Shard {
    state: Mutex<ShardState>,
    /// Bumped (and woken) when the thread must re-arm: a new word or an earlier deadline.
    control: AtomicU32,
    mode: Mode,
}

impl Shard {
    fn new(mode: Mode) -> Self {
        Shard {
            state: Mutex::new(ShardState::default()),
            control: AtomicU32::new(0),
            mode,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ShardState> {
        lock(&self.state)
    }

    fn distinct_words(st: &ShardState) -> usize {
        let mut addrs: Vec<usize> = st.entries.iter().map(|e| e.addr).collect();
        addrs.sort_unstable();
        addrs.dedup();
        addrs.len()
    }

    fn has_word(st: &ShardState, addr: usize) -> bool {
        st.entries.iter().any(|e| e.addr == addr)
    }

    fn poke(&self) {
        self.control.fetch_add(1, Ordering::Release);
        // SAFETY: `control` is an aligned u32 owned by this shard, which the caller keeps
        // alive (an `Arc`) for the duration of the call.
        unsafe { sys::futex_wake(self.control.as_ptr().cast_const(), 1) };
    }
}

/// Every shard of this process.
#[derive(Debug)]
struct Registry {
    pid: u32,
    shards: Mutex<Vec<Arc<Shard>>>,
    next_id: AtomicU64,
    /// `futex_waitv` is missing (or disabled): new shards use [`Mode::Single`].
    no_waitv: AtomicBool,
    threads: AtomicUsize,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

/// This process's registry, built at the first call (and again in a forked child).
fn registry() -> &'static Registry {
    let pid = sys::process_id();
    let cur = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in REGISTRY comes from `Box::leak` below and is never freed,
    // so it is valid for 'static.
    if let Some(r) = unsafe { cur.as_ref() } {
        if r.pid == pid {
            return r;
        }
    }
    let fresh: &'static mut Registry = Box::leak(Box::new(Registry {
        pid,
        shards: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        no_waitv: AtomicBool::new(std::env::var_os("IPC_SHM_NO_FUTEX_WAITV").is_some()),
        threads: AtomicUsize::new(0),
    }));
    match REGISTRY.compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(other) => {
            // Another thread of this process installed one first; ours was never shared.
            // SAFETY: `fresh` came from `Box::leak` just above and nobody else has it.
            drop(unsafe { Box::from_raw(std::ptr::from_mut(fresh)) });
            // SAFETY: as above, a non-null pointer in REGISTRY is leaked and never freed; the
            // winner of the race was built in this process (the pid check is the loser's
            // concern only in a child, which has one thread at its first call).
            unsafe { &*other }
        }
    }
}

impl Registry {
    fn register(
        &'static self,
        addr: usize,
        expected: u32,
        deadline_ns: Option<u64>,
        slot: Arc<Slot>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        loop {
            let Some(shard) = self.shard_for(addr) else {
                // No waiter thread could be started: complete at once, so the caller
                // re-checks its condition (and its deadline) instead of sleeping for ever.
                if let Some(w) = slot.fire() {
                    w.wake();
                }
                return Registration {
                    shard: Arc::new(Shard::new(Mode::Single)),
                    id,
                    slot,
                };
            };
            let mut st = shard.lock();
            if st.retired {
                // Its thread went idle and exited after we chose it: choose again.
                continue;
            }
            let must_poke = match &st.armed {
                None => false,
                Some((addrs, until)) => {
                    !addrs.contains(&addr)
                        || match (deadline_ns, until) {
                            (Some(d), Some(u)) => d < *u,
                            (Some(_), None) => true,
                            (None, _) => false,
                        }
                }
            };
            st.entries.push(Entry {
                id,
                addr,
                expected,
                deadline_ns,
                slot: Arc::clone(&slot),
            });
            drop(st);
            if must_poke {
                shard.poke();
            }
            return Registration { shard, id, slot };
        }
    }

    /// A live shard that waits on `addr` already, else one with room, else a new one with
    /// its thread; `None` if no thread can be started.
    fn shard_for(&'static self, addr: usize) -> Option<Arc<Shard>> {
        let mut shards = lock(&self.shards);
        shards.retain(|s| !s.lock().retired);
        let mode = if self.no_waitv.load(Ordering::Relaxed) {
            Mode::Single
        } else {
            Mode::Waitv
        };
        let cap = match mode {
            Mode::Waitv => WORDS_PER_THREAD,
            Mode::Single => 1,
        };
        let mut room = None;
        for s in shards.iter().filter(|s| s.mode == mode) {
            let st = s.lock();
            if Shard::has_word(&st, addr) {
                return Some(Arc::clone(s));
            }
            if room.is_none() && Shard::distinct_words(&st) < cap {
                room = Some(Arc::clone(s));
            }
        }
        if room.is_some() {
            return room;
        }
        let s = Arc::new(Shard::new(mode));
        let t = Arc::clone(&s);
        self.threads.fetch_add(1, Ordering::Relaxed);
        match std::thread::Builder::new()
            .name("ipc-shm-waiter".into())
            .spawn(move || run(self, &t))
        {
            Ok(_) => {
                shards.push(Arc::clone(&s));
                Some(s)
            }
            Err(_) => {
                self.threads.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The number of waiter threads this process runs now (for tests and diagnostics).
pub fn waiter_threads() -> usize {
    let cur = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in REGISTRY is leaked and never freed.
    match unsafe { cur.as_ref() } {
        Some(r) if r.pid == sys::process_id() => r.threads.load(Ordering::Relaxed),
        _ => 0,
    }
}

/// The number of waits registered now, across all waiter threads (for tests: a cancelled
/// future must leave none behind).
pub fn registered_waits() -> usize {
    let cur = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in REGISTRY is leaked and never freed.
    match unsafe { cur.as_ref() } {
        Some(r) if r.pid == sys::process_id() => {
            lock(&r.shards).iter().map(|s| s.lock().entries.len()).sum()
        }
        _ => 0,
    }
}

/// A waiter thread's loop.
fn run(reg: &'static Registry, shard: &Shard) {
    let mut idle_since: Option<u64> = None;
    let mut fire: Vec<Waker> = Vec::new();
    let mut words: Vec<FutexWaitv> = Vec::with_capacity(FUTEX_WAITV_MAX);
    loop {
        let now = sys::monotonic_now_ns();
        let mut st = shard.lock();
        // Deadlines that passed.
        st.entries.retain(|e| match e.deadline_ns {
            Some(d) if d <= now => {
                fire.extend(e.slot.fire());
                false
            }
            _ => true,
        });
        if st.entries.is_empty() {
            let since = *idle_since.get_or_insert(now);
            let idle_ns = u64::try_from(IDLE_EXIT.as_nanos()).unwrap_or(u64::MAX);
            if now.saturating_sub(since) >= idle_ns {
                st.retired = true;
                st.armed = None;
                drop(st);
                reg.threads.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        } else {
            idle_since = None;
        }
        let until = st
            .entries
            .iter()
            .filter_map(|e| e.deadline_ns)
            .min()
            .map(|d| d.min(idle_deadline(idle_since)))
            .or_else(|| idle_since.map(|s| idle_deadline(Some(s))));
        let ctl = shard.control.load(Ordering::Acquire);
        words.clear();
        let mut addrs: Vec<usize> = Vec::new();
        match shard.mode {
            Mode::Waitv => {
                // Not FUTEX2_PRIVATE: `poke` wakes it with a process-shared FUTEX_WAKE, and the
                // kernel keys private and shared waits on one word differently.
                words.push(FutexWaitv::new(
                    shard.control.as_ptr().cast_const(),
                    ctl,
                    false,
                ));
                for e in &st.entries {
                    if words.len() == FUTEX_WAITV_MAX {
                        break;
                    }
                    if !words
                        .iter()
                        .skip(1)
                        .any(|w| w.uaddr == e.addr as u64 && w.val == u64::from(e.expected))
                    {
                        words.push(FutexWaitv::new(e.addr as *const u32, e.expected, false));
                        addrs.push(e.addr);
                    }
                }
            }
            Mode::Single => {
                if let Some(e) = st.entries.first() {
                    addrs.push(e.addr);
                }
            }
        }
        st.armed = Some((addrs, until));
        let single = match shard.mode {
            Mode::Single => st.entries.first().map(|e| (e.addr, e.expected)),
            Mode::Waitv => None,
        };
        drop(st);
        for w in fire.drain(..) {
            w.wake();
        }
        let outcome = match shard.mode {
            Mode::Waitv => sys::futex_waitv(&words, until),
            Mode::Single => {
                let slice = sys::monotonic_now_ns()
                    .saturating_add(u64::try_from(FALLBACK_SLICE.as_nanos()).unwrap_or(0));
                let until = until.map_or(slice, |u| u.min(slice));
                match single {
                    Some((addr, expected)) => {
                        let addr = addr as *const u32;
                        // SAFETY: the address is 4-byte aligned (it came from a reference to
                        // an atomic word). Only the kernel reads it, and a word unmapped since
                        // its registration makes the call fail with EFAULT (reported as a
                        // wake-up) instead of faulting; this thread never dereferences it.
                        let r = unsafe { sys::futex_wait(addr, expected, Some(until)) };
                        match r {
                            sys::FutexWait::Woken => WaitvOutcome::Woken(1),
                            sys::FutexWait::ValueChanged => WaitvOutcome::ValueChanged,
                            sys::FutexWait::TimedOut => WaitvOutcome::TimedOut,
                        }
                    }
                    None => {
                        // SAFETY: `control` is this shard's own aligned word.
                        unsafe {
                            sys::futex_wait(shard.control.as_ptr().cast_const(), ctl, Some(until))
                        };
                        WaitvOutcome::TimedOut
                    }
                }
            }
        };
        let mut st = shard.lock();
        st.armed = None;
        match outcome {
            WaitvOutcome::Woken(0) if shard.mode == Mode::Waitv => {}
            WaitvOutcome::Woken(i) => {
                let addr = match shard.mode {
                    Mode::Waitv => words.get(i).map(|w| w.uaddr as usize),
                    Mode::Single => single.map(|(a, _)| a),
                };
                st.entries.retain(|e| {
                    if Some(e.addr) == addr {
                        fire.extend(e.slot.fire());
                        false
                    } else {
                        true
                    }
                });
            }
            WaitvOutcome::TimedOut => {}
            WaitvOutcome::ValueChanged
                if shard.mode == Mode::Waitv && shard.control.load(Ordering::Acquire) != ctl =>
            {
                // A registration poked us before we slept: re-arm. If a user word changed
                // too, the next call says so again (its value still differs).
            }
            WaitvOutcome::ValueChanged | WaitvOutcome::Retry => {
                // Some word differs from its registration, or was unmapped; the thread may
                // not read the words to find which, so every future re-checks its own.
                for e in st.entries.drain(..) {
                    fire.extend(e.slot.fire());
                }
            }
            WaitvOutcome::Unsupported => {
                // No futex_waitv here: hand every registration back (their futures register
                // again, on per-word threads) and retire this thread.
                reg.no_waitv.store(true, Ordering::Relaxed);
                for e in st.entries.drain(..) {
                    fire.extend(e.slot.fire());
                }
                st.retired = true;
                drop(st);
                reg.threads.fetch_sub(1, Ordering::Relaxed);
                for w in fire.drain(..) {
                    w.wake();
                }
                return;
            }
        }
    }
}

fn idle_deadline(idle_since: Option<u64>) -> u64 {
    let idle_ns = u64::try_from(IDLE_EXIT.as_nanos()).unwrap_or(u64::MAX);
    idle_since.map_or(u64::MAX, |s| s.saturating_add(idle_ns))
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here leaves the state valid at each step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
