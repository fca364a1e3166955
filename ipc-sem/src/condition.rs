//! [`Condition`]: a condition variable shared between processes, with its own [`Lock`]-style
//! lock or an existing [`Lock`], on a futex sequence counter and notify tickets.
//!
//! A waiter registers (`waiters + 1`) and reads the sequence number while it holds the lock,
//! unlocks, and sleeps while the sequence number is unchanged. `notify(n)` bumps the sequence
//! number and, in the same update of the word, adds up to `n` tickets (never more than the
//! registered waiters); it makes the `FUTEX_WAKE` call only if a waiter is registered. A
//! woken sleeper returns only once it claims a ticket; if others took them all, it sleeps on
//! the new sequence number. Sleepers also look for unclaimed tickets every 50 ms, so a
//! notification whose woken sleeper was killed before claiming it reaches another sleeper.
//! The notifier never waits for sleepers, so a dead sleeper cannot block it; a dead
//! registered sleeper only leaves the count high (excess tickets are dropped as waiters
//! leave), which costs later notifies one system call each.
//!
//! [`Lock`]: crate::Lock

use std::fmt;
use std::time::Duration;

use ipc_shm::lowlevel::sync::{wait_low_half, wake_low_half, Deadline, RawLock};

use crate::error::{
    Error, LockResult, LockTimeoutResult, Result, TryLockResult, WaitTimeoutResult,
};
use crate::lock::{lock_raw, lock_timeout_raw, release_raw, try_lock_raw, Lock, LockGuard};
use crate::loom::{AtomicU32, AtomicU64, Ordering};
use crate::shm::{Shared, SharedState};

#[repr(C)]
struct ConditionState {
    /// The condition's own lock (unused when it was made over an existing [`Lock`]).
    lock: RawLock,
    /// Low half (the futex): the sequence number, bumped by every notify. High half: tickets,
    /// notifications issued and not yet claimed by a waiter.
    word: AtomicU64,
    /// Registered waiters (a dead one stays counted).
    waiters: AtomicU32,
    _reserved: AtomicU32,
}

#[allow(unsafe_code)]
// SAFETY: `repr(C)` atomics only (`RawLock` included), no padding (16 + 8 + 4 + 4 bytes),
// valid for every bit pattern, all-zero = unlocked, sequence 0, no tickets, no waiters;
// alignment 8.
unsafe impl SharedState for ConditionState {
    const KIND: &'static str = "ipc_sem::Condition";
    /// 3: the header's capacity is the byte length of the name of the `Lock` the condition
    /// uses (0: its own lock), and the tail holds that name.
    const VERSION: u32 = 3;
}

/// The longest lock name a named condition records (`shm_open`'s limit).
const MAX_LOCK_NAME: usize = ipc_shm::lowlevel::name::MAX_NAME_LEN;

/// The capacity a condition over an *anonymous* existing lock ([`Condition::with_lock`])
/// records instead of a lock name: that lock cannot be found by another handle, so such a
/// condition refuses to be opened by descriptor (it would silently wait with the wrong lock).
const ANONYMOUS_LOCK: u64 = MAX_LOCK_NAME as u64 + 1;

/// The tail words a condition's recorded lock name takes, from its header capacity.
fn lock_name_words(cap: u64) -> Result<usize> {
    match usize::try_from(cap) {
        Ok(len) if len <= MAX_LOCK_NAME => Ok(len.div_ceil(8)),
        _ if cap == ANONYMOUS_LOCK => Ok(0),
        _ => Err(Error::Corrupted("condition lock name length")),
    }
}

const SEQ_MASK: u64 = 0xFFFF_FFFF;
const TICKET: u64 = 1 << 32;

/// How long a sleeper sleeps before it looks for an unclaimed ticket on its own, so a
/// notification whose woken sleeper was killed before claiming it reaches another sleeper
/// within this time.
const RECHECK: Duration = Duration::from_millis(50);

fn seq_of(word: u64) -> u32 {
    (word & SEQ_MASK) as u32
}

fn tickets_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Registers a waiter (the caller holds the lock) and returns the sequence number it sleeps
/// on.
fn register(s: &ConditionState) -> u32 {
    // SYNC POINT: SeqCst pairs with the SeqCst load of `waiters` and update of `word` in
    // `notify`: under the lock (or, without it, in the SeqCst order) a notify either counts
    // this waiter in its tickets or bumps the sequence number before we read it.
    let _ = s
        .waiters
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_add(1));
    seq_of(s.word.load(Ordering::SeqCst))
}

/// Sleeps as a registered waiter until it claims a ticket of a notify issued after `seq`
/// (`true`) or `deadline` passes (`false`); deregisters in both cases.
fn sleep(s: &ConditionState, mut seq: u32, deadline: Deadline) -> bool {
    let notified = loop {
        wait_low_half(&s.word, seq, deadline.min(Deadline::after(RECHECK)));
        ipc_failpoints::failpoint!("sem.condition.woken");
        if let Some(notified) = claim_step(s, &mut seq, deadline) {
            break notified;
        }
    };
    deregister(s);
    notified
}

/// The step of a sleeper after each sleep (shared by the blocking and the async driver):
/// `Some(true)` once it claims a ticket of a notify issued after `seq`, `Some(false)` once
/// `deadline` passed, `None` to sleep again on `seq` (updated to the latest sequence number
/// when a notify came and its tickets went to other waiters).
fn claim_step(s: &ConditionState, seq: &mut u32, deadline: Deadline) -> Option<bool> {
    // SYNC POINT: Acquire pairs with the SeqCst update in `notify`.
    let mut w = s.word.load(Ordering::Acquire);
    loop {
        if seq_of(w) == *seq || tickets_of(w) == 0 {
            break;
        }
        match s
            .word
            .compare_exchange(w, w - TICKET, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => return Some(true),
            Err(seen) => w = seen,
        }
    }
    // Either nothing happened, or a notify came and its tickets went to other waiters:
    // wait for the next one.
    *seq = seq_of(w);
    if deadline.is_expired() {
        return Some(false);
    }
    None
}

/// Removes a registered waiter; returns the word after dropping excess tickets.
fn deregister(s: &ConditionState) -> u64 {
    let left = s
        .waiters
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| w.checked_sub(1))
        .map_or(0, |w| w - 1);
    // More tickets than registered waiters (one counted us but we timed out, or counted a
    // waiter that died): drop the excess so later waiters do not wake for nothing.
    match s
        .word
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            (tickets_of(w) > left).then(|| (w & SEQ_MASK) | (u64::from(left) << 32))
        }) {
        Ok(prev) => (prev & SEQ_MASK) | (u64::from(left) << 32),
        Err(cur) => cur,
    }
}

/// Bumps the sequence number, issues up to `n` tickets (at most one per registered waiter)
/// and wakes up to `n` sleepers if any waiter is registered.
fn notify(s: &ConditionState, n: u32) {
    // SYNC POINT: SeqCst pairs with the registration in `register`.
    let waiters = s.waiters.load(Ordering::SeqCst);
    let _ = s
        .word
        .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |w| {
            let seq = seq_of(w).wrapping_add(1);
            let tickets = tickets_of(w).saturating_add(n).min(waiters);
            Some(u64::from(seq) | (u64::from(tickets) << 32))
        });
    if waiters > 0 {
        wake_low_half(&s.word, n);
    }
}

/// A condition variable shared between processes, with the lock it is used with: Python's
/// `multiprocessing.Condition`.
///
/// Lock it with [`Condition::lock`] (a [`LockGuard`], with the same owner-death reporting as
/// [`Lock`](crate::Lock)), then [`Condition::wait`] gives the lock up, sleeps until a
/// [`Condition::notify`] / [`Condition::notify_all`], and takes the lock back. As with every
/// condition variable, check the predicate in a loop, or use [`Condition::wait_while`].
///
/// The data the predicate reads lives in shared memory of its own (an `ipc_shm::Value`, an
/// `AtomicValue`, ...), written only while holding this condition's lock.
///
/// Like Python's `Condition(lock)`, a condition can also use an existing [`Lock`]
/// ([`Condition::with_lock`], [`Condition::create_named_with_lock`]): then
/// [`Condition::lock`] takes that lock, and code that holds the `Lock` directly excludes the
/// condition's users, and the other way round.
///
/// ```
/// use ipc_sem::Condition;
/// use std::time::Duration;
///
/// let cond = Condition::new()?;
/// let guard = cond.lock()?;
/// // Nobody notifies: the wait times out and hands the lock back.
/// let (guard, result) = cond.wait_timeout(guard, Duration::from_millis(5))?;
/// assert!(result.timed_out());
/// drop(guard);
/// cond.notify_all(); // nobody waits: no system call
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct Condition {
    shared: Shared<ConditionState>,
    /// The existing lock this condition uses, or `None` for the one in its own state.
    lock: Option<Lock>,
}

impl Condition {
    /// A condition (and its lock, unlocked) in an anonymous segment that processes forked
    /// afterwards share.
    ///
    /// # Errors
    /// `Shm` if the segment cannot be made.
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            shared: Shared::create(None, 0, 0, |_| {})?,
            lock: None,
        })
    }

    /// A condition that uses `lock` instead of a lock of its own: Python's
    /// `Condition(lock)`, in an anonymous segment that processes forked afterwards share.
    /// [`Condition::lock`] takes `lock`; [`Condition::underlying_lock`] gives it back for
    /// direct use, which excludes the condition's users as any holder does.
    ///
    /// # Errors
    /// `Shm` if the segment cannot be made.
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition {
            shared: Shared::create(None, ANONYMOUS_LOCK, 0, |_| {})?,
            lock: Some(lock),
        })
    }

    /// A condition in a new named segment (mode 0600, `O_EXCL`); this handle removes the name
    /// when dropped.
    ///
    /// # Errors
    /// `Shm(InvalidName)`, `Shm(AlreadyExists)`, `Shm(Io)`.
    pub fn create_named(name: &str) -> Result<Condition> {
        Ok(Condition {
            shared: Shared::create(Some(name), 0, 0, |_| {})?,
            lock: None,
        })
    }

    /// A named condition that uses the named `lock` (Python's `Condition(lock)`): the
    /// segment records the lock's name, and [`Condition::open_named`] opens that lock too.
    /// This handle opens a handle of its own on the lock (see
    /// [`Condition::underlying_lock`]); the name stays `lock`'s creator's to remove, so
    /// openers find it only while that creator's handle lives.
    ///
    /// # Errors
    /// `InvalidArgument` if `lock` has no name (an inherited lock: use
    /// [`Condition::with_lock`]); `Shm(InvalidName)`, `Shm(AlreadyExists)`, `Shm(Io)`; the
    /// errors of [`Lock::open_named`].
    pub fn create_named_with_lock(name: &str, lock: &Lock) -> Result<Condition> {
        let lock_name = lock.name().ok_or(Error::InvalidArgument(
            "the lock of a named condition must be named",
        ))?;
        let bytes = lock_name.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_LOCK_NAME {
            return Err(Error::InvalidArgument("lock name length"));
        }
        let own = Lock::open_named(lock_name)?;
        let shared = Shared::create(
            Some(name),
            bytes.len() as u64,
            bytes.len().div_ceil(8),
            |_| {},
        )?;
        for (word, chunk) in shared.tail().iter().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        Ok(Condition {
            shared,
            lock: Some(own),
        })
    }

    /// Opens a condition made by [`Condition::create_named`] or
    /// [`Condition::create_named_with_lock`] (then also the lock it uses, by its recorded
    /// name).
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another
    /// kind of object; for a condition over a named lock, the errors of
    /// [`Lock::open_named`] on the recorded name (`Shm(NotFound)` once the lock's creator
    /// dropped it) and `Corrupted` if the recorded name is not a name.
    pub fn open_named(name: &str) -> Result<Condition> {
        Self::with_recorded_lock(Shared::open(name, lock_name_words)?)
    }

    /// A condition over `shared`, with the lock its segment records (by name), if any.
    fn with_recorded_lock(shared: Shared<ConditionState>) -> Result<Condition> {
        if shared.capacity() == ANONYMOUS_LOCK {
            return Err(Error::InvalidArgument(
                "this condition waits with an anonymous lock, which no other handle can find; \
                 build it over a named lock (create_named_with_lock) to share it",
            ));
        }
        let len = usize::try_from(shared.capacity())
            .map_err(|_| Error::Corrupted("condition lock name length"))?;
        let lock = if len == 0 {
            None
        } else {
            // A private copy of the recorded name; the tail holds exactly `len` bytes' words.
            let mut bytes: Vec<u8> = shared
                .tail()
                .iter()
                .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
                .collect();
            bytes.truncate(len);
            let lock_name =
                String::from_utf8(bytes).map_err(|_| Error::Corrupted("condition lock name"))?;
            Some(Lock::open_named(&lock_name)?)
        };
        Ok(Condition { shared, lock })
    }

    /// The existing [`Lock`] this condition uses, or `None` if it has a lock of its own.
    /// Holding it excludes the condition's users; a guard from it may be passed to
    /// [`Condition::wait`].
    pub fn underlying_lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The lock word this condition uses.
    fn raw(&self) -> &RawLock {
        match &self.lock {
            Some(lock) => lock.raw(),
            None => &self.state().lock,
        }
    }

    fn state(&self) -> &ConditionState {
        self.shared.state()
    }

    /// Takes the condition's lock, waiting as long as it takes.
    ///
    /// # Errors
    /// As [`Lock::lock`](crate::Lock::lock): `OwnerDied(guard)`, `Poisoned`, `Deadlock`,
    /// `Corrupted`.
    ///
    /// # Peer death
    /// A holder that dies is noticed within about 50 ms (`OwnerDied(guard)`).
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        lock_raw(self.raw())
    }

    /// Takes the condition's lock if it is free now.
    ///
    /// # Errors
    /// [`TryLockError`](crate::TryLockError): `WouldBlock` if a live holder has it, else the
    /// states of [`Condition::lock`].
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        try_lock_raw(self.raw())
    }

    /// Takes the condition's lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockTimeoutError`](crate::LockTimeoutError): `Timeout` if a live holder kept it
    /// that long, else the states of [`Condition::lock`].
    ///
    /// # Peer death
    /// As [`Condition::lock`].
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<LockGuard<'_>> {
        lock_timeout_raw(self.raw(), timeout)
    }

    /// Releases the condition's lock held without a guard (after [`LockGuard::leak`]).
    ///
    /// # Errors
    /// `NotHeld` if the calling thread does not hold it.
    pub fn release(&self) -> Result<()> {
        release_raw(self.raw())
    }

    /// Gives up the lock, sleeps until notified, and takes the lock back.
    ///
    /// Returns after a notify (possibly one meant for another waiter, as condition variables
    /// may); signals and spurious futex wake-ups do not end the wait.
    ///
    /// # Errors
    /// Re-taking the lock may report `OwnerDied(guard)` (a holder died meanwhile; the caller
    /// holds the lock), `Poisoned` or `Corrupted`.
    ///
    /// # Panics
    /// If `guard` holds another lock than this condition's (for a condition over an existing
    /// [`Lock`], a guard of that very handle, or of [`Condition::underlying_lock`]).
    ///
    /// # Peer death
    /// If the process expected to notify dies, the wait lasts forever: use
    /// [`Condition::wait_timeout`] then. A notification whose woken sleeper was killed before
    /// claiming it reaches another sleeper within about 50 ms. A lock holder that dies is
    /// noticed within about 50 ms while the lock is taken back.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> LockResult<LockGuard<'a>> {
        self.wait_until(guard, Deadline::never())
            .map(|(g, _)| g)
            .map_err(|e| e.map(|(g, _)| g))
    }

    /// [`Condition::wait`] for at most `timeout`, as `std::sync::Condvar::wait_timeout`:
    /// `(guard, r)` where `r.timed_out()` is `true` if the time ran out before a notify. The
    /// lock is taken back in both cases, which may add to the wait.
    ///
    /// # Errors
    /// As [`Condition::wait`]; `OwnerDied` carries the guard and the [`WaitTimeoutResult`].
    ///
    /// # Panics
    /// If `guard` holds another lock than this condition's (for a condition over an existing
    /// [`Lock`], a guard of that very handle, or of [`Condition::underlying_lock`]).
    ///
    /// # Peer death
    /// As [`Condition::wait`]; the timeout bounds the sleep.
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        self.wait_until(guard, Deadline::after(timeout))
    }

    /// Waits while `condition()` is true, re-checking it with the lock held after each wake-up.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    ///
    /// # Panics
    /// If `guard` holds another lock than this condition's (for a condition over an existing
    /// [`Lock`], a guard of that very handle, or of [`Condition::underlying_lock`]).
    ///
    /// # Peer death
    /// As [`Condition::wait`].
    ///
    /// # Example
    /// A process waits until another one has set a flag in shared memory:
    /// ```
    /// use std::sync::atomic::Ordering;
    ///
    /// use ipc_sem::ipc_shm::{AtomicFlag, AtomicValue};
    /// use ipc_sem::Condition;
    ///
    /// let cond = Condition::new()?;
    /// let ready = AtomicValue::<AtomicFlag>::new(false)?;
    /// // SAFETY of the example: the child only uses the shared objects and leaves with `_exit`.
    /// match unsafe { libc::fork() } {
    ///     0 => {
    ///         let ok = match cond.lock() {
    ///             Ok(_guard) => {
    ///                 ready.store(true, Ordering::SeqCst);
    ///                 cond.notify(); // holding the lock, as Python requires
    ///                 true
    ///             }
    ///             Err(_) => false,
    ///         };
    ///         unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    ///     }
    ///     child => {
    ///         let guard = cond.lock().map_err(ipc_sem::Error::from)?;
    ///         let guard = cond
    ///             .wait_while(guard, || !ready.load(Ordering::SeqCst))
    ///             .map_err(ipc_sem::Error::from)?;
    ///         assert!(ready.load(Ordering::SeqCst));
    ///         drop(guard);
    ///         let mut status = 0;
    ///         unsafe { libc::waitpid(child, &mut status, 0) };
    ///         assert_eq!(status, 0);
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_while<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<LockGuard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// [`Condition::wait_while`] for at most `timeout` in total, as
    /// `std::sync::Condvar::wait_timeout_while`: `(guard, r)` where `r.timed_out()` is `true`
    /// if `condition()` was still true at the deadline.
    ///
    /// # Errors
    /// As [`Condition::wait_timeout`].
    ///
    /// # Panics
    /// If `guard` holds another lock than this condition's (for a condition over an existing
    /// [`Lock`], a guard of that very handle, or of [`Condition::underlying_lock`]).
    ///
    /// # Peer death
    /// As [`Condition::wait`]; the timeout bounds the sleep.
    pub fn wait_while_timeout<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        let deadline = Deadline::after(timeout);
        loop {
            if !condition() {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            if deadline.is_expired() {
                return Ok((guard, WaitTimeoutResult(true)));
            }
            guard = self.wait_until(guard, deadline)?.0;
        }
    }

    fn wait_until<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Deadline,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        let s = self.state();
        assert!(
            std::ptr::eq(guard.raw, self.raw()),
            "Condition::wait called with a guard of another lock"
        );
        // Register and read the sequence number while holding the lock.
        let seq = register(s);
        drop(guard);
        ipc_failpoints::failpoint!("sem.condition.registered");
        let timed_out = WaitTimeoutResult(!sleep(s, seq, deadline));
        lock_raw(self.raw())
            .map(|g| (g, timed_out))
            .map_err(|e| e.map(|g| (g, timed_out)))
    }

    /// Wakes one waiter, if any. Call it holding the lock, as Python requires: without the
    /// lock, a waiter registering at the same moment may miss this notification.
    pub fn notify(&self) {
        notify(self.state(), 1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        notify(self.state(), u32::MAX);
    }

    /// Whether the lock is poisoned: a holder died and nobody marked the data consistent.
    pub fn is_poisoned(&self) -> bool {
        self.raw().is_poisoned()
    }

    /// The segment's name, or `None` for an inherited condition.
    pub fn name(&self) -> Option<&str> {
        self.shared.name()
    }

    /// Removes the name now if this handle created it; open handles keep working.
    ///
    /// # Errors
    /// `Shm(Io)` if `shm_unlink` fails for a reason other than the name being gone.
    pub fn unlink(&mut self) -> Result<()> {
        self.shared.unlink()
    }
}

/// The async forms (feature `async`).
///
/// The waits give the lock up in the call itself, on the thread that holds the guard (it is
/// not `Send`, and only its thread may unlock), and return a `Send` future that sleeps (one
/// registration with the process's futex waiter thread) and then takes the lock back with
/// [`Lock::lock_async`](crate::Lock::lock_async).
///
/// Cancel safety: a wait future dropped before it completes holds no lock and is no longer
/// registered. If it had already claimed a notification (woken, not yet holding the lock
/// again), it passes that notification on with a fresh notify, so no notify is swallowed;
/// if it was dropped before claiming one, an unclaimed one stays for the other waiters and
/// one sleeper is woken to look for it.
#[cfg(feature = "async")]
impl Condition {
    /// [`Condition::lock`] as a future (see [`Lock::lock_async`](crate::Lock::lock_async)).
    ///
    /// # Errors
    /// As [`Condition::lock`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Condition::lock`].
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before it completes, it holds nothing.
    pub async fn lock_async(&self) -> LockResult<LockGuard<'_>> {
        crate::lock::lock_raw_async(self.raw()).await
    }

    /// [`Condition::lock_timeout`] as a future.
    ///
    /// # Errors
    /// As [`Condition::lock_timeout`], except `Deadlock`.
    ///
    /// # Peer death
    /// As [`Condition::lock`].
    ///
    /// # Cancel safety
    /// As [`Condition::lock_async`].
    pub async fn lock_timeout_async(&self, timeout: Duration) -> LockTimeoutResult<LockGuard<'_>> {
        crate::lock::lock_until_raw_async(self.raw(), Deadline::after(timeout)).await
    }

    /// [`Condition::wait`] as a future: gives up the lock now (in this call), sleeps until
    /// notified, and takes the lock back before it completes.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    ///
    /// # Panics
    /// As [`Condition::wait`] (in the call, not in the future).
    ///
    /// # Peer death
    /// As [`Condition::wait`].
    ///
    /// # Cancel safety
    /// Cancel-safe (see the notes on this `impl` block): a dropped wait holds no lock and
    /// passes on a notification it had claimed.
    pub fn wait_async<'a>(
        &'a self,
        guard: LockGuard<'a>,
    ) -> impl std::future::Future<Output = LockResult<LockGuard<'a>>> + Send + 'a {
        let w = self.start_wait(guard);
        async move {
            w.finish(Deadline::never())
                .await
                .map(|(g, _)| g)
                .map_err(|e| e.map(|(g, _)| g))
        }
    }

    /// [`Condition::wait_timeout`] as a future (see [`Condition::wait_async`]).
    ///
    /// # Errors
    /// As [`Condition::wait_timeout`].
    ///
    /// # Panics
    /// As [`Condition::wait`] (in the call, not in the future).
    ///
    /// # Peer death
    /// As [`Condition::wait`]; the timeout bounds the sleep.
    ///
    /// # Cancel safety
    /// As [`Condition::wait_async`].
    pub fn wait_timeout_async<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> impl std::future::Future<Output = LockResult<(LockGuard<'a>, WaitTimeoutResult)>> + Send + 'a
    {
        let deadline = Deadline::after(timeout);
        let w = self.start_wait(guard);
        w.finish(deadline)
    }

    /// [`Condition::wait_while`] as a future: completes holding the lock, with `condition()`
    /// false.
    ///
    /// The lock is given up in this call even when `condition()` is already false (the
    /// future then takes it back and checks again): the guard is not `Send`, so the future
    /// cannot carry it.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    ///
    /// # Panics
    /// As [`Condition::wait`] (in the call, not in the future).
    ///
    /// # Peer death
    /// As [`Condition::wait`].
    ///
    /// # Cancel safety
    /// As [`Condition::wait_async`].
    pub fn wait_while_async<'a>(
        &'a self,
        guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool + Send + 'a,
    ) -> impl std::future::Future<Output = LockResult<LockGuard<'a>>> + Send + 'a {
        let first = if condition() {
            Some(self.start_wait(guard))
        } else {
            drop(guard);
            None
        };
        async move {
            let mut w = match first {
                Some(w) => w,
                None => {
                    let g = self.lock_async().await?;
                    if !condition() {
                        return Ok(g);
                    }
                    self.start_wait(g)
                }
            };
            loop {
                let g = w
                    .finish(Deadline::never())
                    .await
                    .map_err(|e| e.map(|(g, _)| g))?
                    .0;
                if !condition() {
                    return Ok(g);
                }
                w = self.start_wait(g);
            }
        }
    }

    /// Registers a waiter and gives the lock up, on the calling thread.
    fn start_wait<'a>(&'a self, guard: LockGuard<'a>) -> AsyncWait<'a> {
        assert!(
            std::ptr::eq(guard.raw, self.raw()),
            "Condition::wait called with a guard of another lock"
        );
        let seq = register(self.state());
        drop(guard);
        ipc_failpoints::failpoint!("sem.condition.registered");
        AsyncWait {
            cond: self,
            seq,
            phase: Phase::Registered,
        }
    }
}

/// Where an async wait stands, for its drop.
#[cfg(feature = "async")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Registered as a waiter, no notification claimed.
    Registered,
    /// Deregistered with a claimed notification, taking the lock back.
    Claimed,
    /// Over (or deregistered without a notification).
    Done,
}

/// An async wait after its lock was given up.
#[cfg(feature = "async")]
struct AsyncWait<'a> {
    cond: &'a Condition,
    seq: u32,
    phase: Phase,
}

#[cfg(feature = "async")]
impl<'a> AsyncWait<'a> {
    /// Sleeps until notified or `deadline`, then takes the lock back.
    async fn finish(
        mut self,
        deadline: Deadline,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        let s = self.cond.state();
        let notified = loop {
            ipc_shm::lowlevel::sync::FutexWait::low_half(
                &s.word,
                self.seq,
                deadline.min(Deadline::after(RECHECK)),
            )
            .await;
            ipc_failpoints::failpoint!("sem.condition.woken");
            if let Some(notified) = claim_step(s, &mut self.seq, deadline) {
                break notified;
            }
        };
        deregister(s);
        self.phase = if notified {
            Phase::Claimed
        } else {
            Phase::Done
        };
        let timed_out = WaitTimeoutResult(!notified);
        let r = crate::lock::lock_raw_async(self.cond.raw()).await;
        self.phase = Phase::Done;
        r.map(|g| (g, timed_out))
            .map_err(|e| e.map(|g| (g, timed_out)))
    }
}

#[cfg(feature = "async")]
impl Drop for AsyncWait<'_> {
    fn drop(&mut self) {
        let s = self.cond.state();
        match self.phase {
            Phase::Done => {}
            Phase::Registered => {
                // Dropped asleep: a notification that counted this waiter stays for the
                // others (deregistering trims only the excess), and the wake-up that came
                // with it may have reached this future alone: wake a sleeper to look.
                if tickets_of(deregister(s)) > 0 {
                    wake_low_half(&s.word, 1);
                }
            }
            Phase::Claimed => {
                // Dropped after claiming a notification, before holding the lock again:
                // issue it anew, so it is not swallowed.
                notify(s, 1);
            }
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.name())
            .field("locked", &self.raw().is_locked())
            .field("underlying_lock", &self.lock.as_ref().and_then(Lock::name))
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn state() -> Arc<ConditionState> {
        Arc::new(ConditionState {
            lock: RawLock::new(),
            word: AtomicU64::new(0),
            waiters: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        })
    }

    /// A registered waiter is released by a notify from another thread (a lost wake-up
    /// deadlocks the model), and leaves no ticket or registration behind.
    #[test]
    fn loom_condition_notify_wakes_registered_waiter() {
        loom::model(|| {
            let s = state();
            let s2 = Arc::clone(&s);
            let t = loom::thread::spawn(move || {
                let seq = register(&s2);
                assert!(sleep(&s2, seq, Deadline::never()));
            });
            while s.waiters.load(Ordering::SeqCst) == 0 {
                loom::thread::yield_now();
            }
            notify(&s, 1);
            t.join().unwrap();
            assert_eq!(s.waiters.load(Ordering::SeqCst), 0);
            assert_eq!(tickets_of(s.word.load(Ordering::SeqCst)), 0);
        });
    }

    /// Two registered waiters and two single notifies: each notify's ticket is claimed by
    /// exactly one waiter, so both return, whichever wakes first.
    #[test]
    fn loom_condition_two_notifies_release_two_waiters() {
        loom::model(|| {
            let s = state();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let s = Arc::clone(&s);
                    loom::thread::spawn(move || {
                        let seq = register(&s);
                        assert!(sleep(&s, seq, Deadline::never()));
                    })
                })
                .collect();
            while s.waiters.load(Ordering::SeqCst) < 2 {
                loom::thread::yield_now();
            }
            notify(&s, 1);
            notify(&s, 1);
            for t in waiters {
                t.join().unwrap();
            }
            assert_eq!(tickets_of(s.word.load(Ordering::SeqCst)), 0);
        });
    }
}

impl std::os::fd::AsFd for Condition {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the object with [`Condition::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

/// Handle passing: a condition (with its lock) travels to an unrelated process as a descriptor.
impl Condition {
    /// Rebuilds a condition (with its lock) from a descriptor another process sent
    /// (`SCM_RIGHTS`), checked
    /// exactly as [`Condition::open_named`] checks a name (`ipc_shm::lowlevel::Segment::from_fd`). The
    /// rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)` for a pipe, socket or other non-memory descriptor,
    /// `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another kind of object,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`. The descriptor is closed on error.
    ///
    /// A condition over an existing lock opens that lock by the name it records; one over an
    /// anonymous lock ([`Condition::with_lock`]) is `InvalidArgument`: its lock cannot travel
    /// with it.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Condition> {
        Self::with_recorded_lock(Shared::from_fd(fd, lock_name_words)?)
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the object lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.shared.into_fd()
    }
}
