//! [`Barrier`]: `n` processes (or threads) meet, and learn when one of them died.
//!
//! ```text
//! payload + 0    RawLock  (held for a few instructions by arrivals, reset, abort, breaks)
//!        + 16    word: AtomicU64  low half (the futex): generation << 1 | BROKEN
//!                                 high half: how many have arrived in this generation
//!        + 24    ends: [AtomicU32; 16]  ends[g % 16] = g << 1 | broken: how generation g ended
//!        + 128   slots: [AtomicU64; parties]  OwnerStamp of the arrival at each index
//! ```
//!
//! An arrival takes the lock, records its stamp in `slots[count]`, bumps `count` (or, as the
//! last one, records the end of the generation and starts the next), and lets the lock go.
//! Waiters sleep on the low half, which changes when the generation ends or breaks. Every
//! 50 ms a sleeping waiter checks that the participant which arrived right after it (in
//! arrival order, cyclically) still lives; a chain of dead participants always has a live one
//! just before it, so one death among the arrived is found within about 50 ms. A participant
//! killed inside the lock (mid-arrival: slot stored, count not) is not in the count, so at the
//! same check a sleeper also looks at the lock's holder and takes a dead one over, which
//! breaks the barrier; a later arrival gets the same through the lock (`OwnerDied`). A waiter whose
//! generation ended reads `ends` to tell completion from a reset.
//!
//! The protocol lives in `Core`, over the state and the slots, so the loom models run it on
//! the heap with threads standing in for processes. The model has no timers: a sleeper makes
//! its periodic death check before every sleep, and a model thread that "dies"
//! (`ipc_shm::lowlevel::sync::die`) keeps waking the sleepers, as their timers would.

use std::fmt;
use std::time::Duration;

use ipc_shm::lowlevel::sync::{
    wait_low_half, wake_low_half, Deadline, OwnerStamp, RawLock, WaitOutcome,
};

use crate::error::{
    BarrierTimeoutError, Error, LockTimeoutError, Result, TryLockError, TryWaitError,
};
use crate::loom::{AtomicU32, AtomicU64, Ordering};
use crate::shm::{Shared, SharedState};

/// The most participants a barrier takes.
pub const MAX_PARTIES: u32 = 4096;

const BROKEN: u64 = 1;
const GEN_MASK: u64 = 0x7FFF_FFFF;
const LOW: u64 = 0xFFFF_FFFF;
const ENDS: usize = 16;

/// How often a sleeping waiter checks that the next arrived participant lives.
const DEATH_CHECK: Duration = Duration::from_millis(50);

#[repr(C)]
struct BarrierState {
    lock: RawLock,
    word: AtomicU64,
    ends: [AtomicU32; ENDS],
}

#[allow(unsafe_code)]
// SAFETY: `repr(C)` atomics only (`RawLock` included), valid for every bit pattern, all-zero
// = generation 0, nobody arrived, not broken, lock free; alignment 8.
unsafe impl SharedState for BarrierState {
    const KIND: &'static str = "ipc_sem::Barrier";
    const VERSION: u32 = 1;
}

fn gen_of(word: u64) -> u64 {
    (word >> 1) & GEN_MASK
}
fn count_of(word: u64) -> u32 {
    (word >> 32) as u32
}
fn make(gen: u64, count: u32) -> u64 {
    ((gen & GEN_MASK) << 1) | (u64::from(count) << 32)
}

/// What [`Barrier::wait`] returns to each participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
}

impl BarrierWaitResult {
    /// Whether this participant arrived last: exactly one per generation is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

/// A barrier for a fixed number of participants across processes: Python's
/// `multiprocessing.Barrier`, which also notices dead participants.
///
/// [`Barrier::wait`] blocks until `parties` participants have called it, then releases them
/// all; one of them (the last to arrive) is the leader. The barrier is then ready for the
/// next round. It **breaks** when a waiter times out, on [`Barrier::abort`], on
/// [`Barrier::reset`] with waiters, or when a participant that has arrived dies: every waiter
/// then gets [`Error::BrokenBarrier`], and so does every later `wait` until
/// [`Barrier::reset`].
///
/// ```
/// use ipc_sem::Barrier;
///
/// let barrier = Barrier::new(1)?;
/// assert!(barrier.wait()?.is_leader()); // one party: every wait completes at once
/// barrier.abort();
/// assert!(barrier.wait().is_err());
/// barrier.reset()?;
/// assert!(barrier.wait()?.is_leader());
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct Barrier {
    shared: Shared<BarrierState>,
    parties: u32,
}

fn check_parties(n: u64) -> Result<usize> {
    if n == 0 || n > u64::from(MAX_PARTIES) {
        return Err(Error::InvalidArgument("barrier parties must be 1..=4096"));
    }
    usize::try_from(n).map_err(|_| Error::InvalidArgument("barrier parties"))
}

impl Barrier {
    /// A barrier for `parties` participants in an anonymous segment that processes forked
    /// afterwards share.
    ///
    /// # Errors
    /// `InvalidArgument` unless `1 <= parties <= MAX_PARTIES`; `Shm` if the segment cannot be
    /// made.
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::create(None, parties)
    }

    /// A barrier in a new named segment (mode 0600, `O_EXCL`); this handle removes the name
    /// when dropped.
    ///
    /// # Errors
    /// As [`Barrier::new`], plus `Shm(InvalidName)`, `Shm(AlreadyExists)`.
    pub fn create_named(name: &str, parties: u32) -> Result<Barrier> {
        Self::create(Some(name), parties)
    }

    fn create(name: Option<&str>, parties: u32) -> Result<Barrier> {
        let slots = check_parties(u64::from(parties))?;
        Ok(Barrier {
            shared: Shared::create(name, u64::from(parties), slots, |_| {})?,
            parties,
        })
    }

    /// Opens a barrier made by [`Barrier::create_named`]; the party count comes from the
    /// validated header.
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another
    /// kind of object, `InvalidArgument` for a party count no creator writes.
    pub fn open_named(name: &str) -> Result<Barrier> {
        let shared = Shared::<BarrierState>::open(name, check_parties)?;
        let parties =
            u32::try_from(shared.capacity()).map_err(|_| Error::Corrupted("barrier parties"))?;
        Ok(Barrier { shared, parties })
    }

    fn state(&self) -> &BarrierState {
        self.shared.state()
    }

    /// The protocol over this handle's mapping.
    fn core(&self) -> Core<'_> {
        Core {
            s: self.shared.state(),
            slots: self.shared.tail(),
            parties: self.parties,
        }
    }

    /// Waits until all parties have arrived.
    ///
    /// # Errors
    /// `BrokenBarrier` if the barrier is or becomes broken (abort, reset, a waiter's timeout,
    /// a dead participant); `Corrupted` if the shared count exceeds the party count.
    ///
    /// # Peer death
    /// A participant that dies after arriving (or while arriving) breaks the barrier within
    /// about 50 ms, and every waiter gets `BrokenBarrier`. A participant that dies *before*
    /// arriving cannot be told from a late one: use [`Barrier::wait_timeout`] when that can
    /// happen.
    ///
    /// # Example
    /// Two processes meet; exactly one of them is the leader:
    /// ```
    /// use ipc_sem::Barrier;
    ///
    /// let barrier = Barrier::new(2)?;
    /// // SAFETY of the example: the child only uses the barrier and leaves with `_exit`.
    /// match unsafe { libc::fork() } {
    ///     0 => {
    ///         let code = match barrier.wait() {
    ///             Ok(r) if r.is_leader() => 10,
    ///             Ok(_) => 0,
    ///             Err(_) => 1,
    ///         };
    ///         unsafe { libc::_exit(code) }
    ///     }
    ///     child => {
    ///         let me = barrier.wait()?;
    ///         let mut status = 0;
    ///         unsafe { libc::waitpid(child, &mut status, 0) };
    ///         assert!(libc::WIFEXITED(status));
    ///         let child_leader = match libc::WEXITSTATUS(status) {
    ///             10 => true,
    ///             0 => false,
    ///             other => panic!("child failed: {other}"),
    ///         };
    ///         assert_ne!(me.is_leader(), child_leader);
    ///     }
    /// }
    /// # Ok::<(), ipc_sem::Error>(())
    /// ```
    pub fn wait(&self) -> Result<BarrierWaitResult> {
        self.core().wait_until(Deadline::never())
    }

    /// [`Barrier::wait`] for at most `timeout`. If the others do not all arrive in time, the
    /// caller breaks the barrier (as Python's `Barrier.wait(timeout)` does): it gets
    /// `Timeout`, and every other waiter gets `BrokenBarrier` from `wait` (`Broken` from
    /// this form).
    ///
    /// # Errors
    /// [`BarrierTimeoutError`]: `Timeout` when the caller's time ran out (also when the
    /// internal lock could not be taken in time: a participant stopped, not dead, inside it;
    /// the barrier is then not broken); `Broken` when it is or becomes broken otherwise
    /// (abort, reset, another party's timeout, a dead participant); `Failed(Corrupted)`.
    ///
    /// # Peer death
    /// As [`Barrier::wait`].
    pub fn wait_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<BarrierWaitResult, BarrierTimeoutError> {
        self.core()
            .wait_until(Deadline::after(timeout))
            .map_err(|e| match e {
                Error::Timeout => BarrierTimeoutError::Timeout,
                Error::BrokenBarrier => BarrierTimeoutError::Broken,
                e => BarrierTimeoutError::Failed(e),
            })
    }

    /// [`Barrier::wait`] as a future (feature `async`): one registration with the
    /// process's futex waiter thread while it waits, not a thread.
    ///
    /// The arrival is recorded with the thread that polls the future when it arrives (a
    /// runtime worker): if that thread exits while the future waits, the others see a dead
    /// participant and the barrier breaks.
    ///
    /// # Errors
    /// As [`Barrier::wait`].
    ///
    /// # Peer death
    /// As [`Barrier::wait`].
    ///
    /// # Cancel safety
    /// Cancel-safe: a future dropped before it arrived has not arrived; one dropped after it
    /// arrived, while its generation still waits for others, takes its arrival back (the
    /// barrier waits for one more party again). If the generation completed or broke before
    /// the drop, the drop changes nothing: the others went on, counting this party.
    #[cfg(feature = "async")]
    pub async fn wait_async(&self) -> Result<BarrierWaitResult> {
        self.core().wait_until_async(Deadline::never()).await
    }

    /// [`Barrier::wait_timeout`] as a future (feature `async`): a timeout breaks the
    /// barrier as in the blocking form. (A runtime's timer around [`Barrier::wait_async`]
    /// instead cancels the wait, which takes the arrival back and breaks nothing.)
    ///
    /// # Errors
    /// As [`Barrier::wait_timeout`].
    ///
    /// # Peer death
    /// As [`Barrier::wait`].
    ///
    /// # Cancel safety
    /// As [`Barrier::wait_async`].
    #[cfg(feature = "async")]
    pub async fn wait_timeout_async(
        &self,
        timeout: Duration,
    ) -> std::result::Result<BarrierWaitResult, BarrierTimeoutError> {
        self.core()
            .wait_until_async(Deadline::after(timeout))
            .await
            .map_err(|e| match e {
                Error::Timeout => BarrierTimeoutError::Timeout,
                Error::BrokenBarrier => BarrierTimeoutError::Broken,
                e => BarrierTimeoutError::Failed(e),
            })
    }

    /// Passes the barrier if that needs no waiting, that is if the caller is the last party
    /// to arrive: it then completes the generation as its leader and the waiting parties go
    /// on. Otherwise it does not arrive at all (nothing changes) and returns `WouldBlock`.
    /// Never sleeps: the internal lock is only tried, so a peer inside its few instructions
    /// right now also gives `WouldBlock`. Useful for a party that polls (`try_wait` until it
    /// is the last, doing other work meanwhile) without ever being counted as waiting.
    ///
    /// # Errors
    /// [`TryWaitError`]: `WouldBlock` if other parties are still missing; `Broken` if the
    /// barrier is broken; `Failed(Corrupted)`.
    pub fn try_wait(&self) -> std::result::Result<BarrierWaitResult, TryWaitError> {
        self.core().try_wait().map_err(|e| match e {
            Error::WouldBlock => TryWaitError::WouldBlock,
            Error::BrokenBarrier => TryWaitError::Broken,
            e => TryWaitError::Failed(e),
        })
    }

    /// Breaks the barrier: every waiter, and every `wait` until [`Barrier::reset`], gets
    /// `BrokenBarrier`.
    pub fn abort(&self) {
        self.core().abort();
    }

    /// Returns the barrier to its empty state. Participants waiting now get
    /// `BrokenBarrier` (as in Python); a broken barrier becomes usable again.
    ///
    /// # Errors
    /// `Poisoned`/`Corrupted` if the internal lock is unusable.
    pub fn reset(&self) -> Result<()> {
        self.core().reset()
    }

    /// How many participants the barrier waits for.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many participants are waiting now (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        count_of(self.state().word.load(Ordering::Relaxed)).min(self.parties)
    }

    /// Whether the barrier is broken (a snapshot).
    pub fn is_broken(&self) -> bool {
        self.state().word.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// The segment's name, or `None` for an inherited barrier.
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

/// The barrier's protocol over its shared state: the mapped one, or one on the heap in the
/// loom models, where threads stand in for processes.
#[derive(Clone, Copy)]
struct Core<'a> {
    s: &'a BarrierState,
    slots: &'a [AtomicU64],
    parties: u32,
}

impl Core<'_> {
    /// Runs `f` on the word with the internal lock held; `f` returns the new word (if any)
    /// and the result. Every sleeper is woken if the low half changed. A participant that
    /// died holding the lock breaks the barrier.
    ///
    /// `deadline` `None`: do not wait for the lock (`WouldBlock` if a live peer holds it).
    fn locked<R>(
        self,
        deadline: Option<Deadline>,
        f: impl FnOnce(u64) -> (Option<u64>, Result<R>),
    ) -> Result<R> {
        let s = self.s;
        let taken = match deadline {
            Some(d) => s.lock.lock_until(d).map_err(|e| match e {
                LockTimeoutError::OwnerDied(()) => None,
                e => Some(Error::from(e)),
            }),
            None => s.lock.try_lock().map_err(|e| match e {
                TryLockError::OwnerDied(()) => None,
                e => Some(Error::from(e)),
            }),
        };
        self.with_lock_taken(taken, f)
    }

    /// The body of [`Core::locked`] once the lock was taken (`Ok`), taken over from a dead
    /// participant (`Err(None)`), or not taken (`Err(Some(e))`).
    fn with_lock_taken<R>(
        self,
        taken: std::result::Result<(), Option<Error>>,
        f: impl FnOnce(u64) -> (Option<u64>, Result<R>),
    ) -> Result<R> {
        let s = self.s;
        match taken {
            Ok(()) => {}
            Err(None) => return Err(self.break_taken_over()),
            Err(Some(e)) => return Err(e),
        }
        let w = s.word.load(Ordering::Relaxed);
        let (new, r) = f(w);
        if let Some(new) = new {
            // SYNC POINT: Release pairs with the Acquire loads of sleeping waiters: the slot
            // and `ends` entry written before this store are visible with it.
            s.word.store(new, Ordering::Release);
        }
        let _ = s.lock.unlock();
        if new.is_some_and(|n| n & LOW != w & LOW) {
            wake_low_half(&s.word, u32::MAX);
        }
        r
    }

    /// Called holding the internal lock just taken over from a participant that died inside
    /// it: breaks the barrier, lets the lock go and wakes every sleeper.
    fn break_taken_over(self) -> Error {
        let s = self.s;
        // A participant died mid-transition. Every transition is a single store of `word`
        // (after the slot or `ends` entry it covers), so the state is consistent; the barrier
        // breaks because a participant is gone.
        let _ = s.lock.mark_consistent();
        let w = s.word.load(Ordering::Relaxed);
        s.word.store(w | BROKEN, Ordering::Release);
        let _ = s.lock.unlock();
        wake_low_half(&s.word, u32::MAX);
        Error::BrokenBarrier
    }

    /// For a sleeper's periodic check: if the internal lock is held by a participant that
    /// died inside it (mid-arrival: its slot stored, the count not), takes it over and breaks
    /// the barrier. Sleepers never otherwise touch the lock, and the dead arrival is not in
    /// the count that [`Core::check_next`] walks, so without this nobody would notice.
    fn check_lock_holder(self) -> Result<()> {
        let lock = &self.s.lock;
        if !lock.is_locked() {
            return Ok(());
        }
        match lock.try_lock() {
            Ok(()) => {
                // Freed meanwhile: nothing to see.
                let _ = lock.unlock();
                Ok(())
            }
            Err(TryLockError::OwnerDied(())) => Err(self.break_taken_over()),
            Err(TryLockError::WouldBlock) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Barrier::try_wait`].
    fn try_wait(self) -> Result<BarrierWaitResult> {
        let n = self.parties;
        self.locked(None, |w| {
            if w & BROKEN != 0 {
                return (None, Err(Error::BrokenBarrier));
            }
            match count_of(w).checked_add(1) {
                Some(c) if c == n => (
                    Some(self.complete(w)),
                    Ok(BarrierWaitResult { leader: true }),
                ),
                Some(c) if c < n => (None, Err(Error::WouldBlock)),
                _ => (Some(w | BROKEN), Err(Error::Corrupted("barrier count"))),
            }
        })
    }

    /// Records that the generation in `w` completed and returns the word of the next one.
    fn complete(self, w: u64) -> u64 {
        let gen = gen_of(w);
        self.s.ends[(gen as usize) % ENDS].store((gen << 1) as u32, Ordering::Relaxed);
        make(gen + 1, 0)
    }

    /// [`Barrier::wait`] / [`Barrier::wait_timeout`]: arrives, then sleeps unless last.
    fn wait_until(self, deadline: Deadline) -> Result<BarrierWaitResult> {
        let me = OwnerStamp::current().to_bits();
        match self.arrive(me, deadline)? {
            None => Ok(BarrierWaitResult { leader: true }),
            Some((gen, index)) => self.sleep(gen, index, me, deadline),
        }
    }

    /// Arrives as `me`: `None` if this arrival completed the generation (the leader), else
    /// the generation and this arrival's index in it.
    fn arrive(self, me: u64, deadline: Deadline) -> Result<Option<(u64, u32)>> {
        self.locked(Some(deadline), |w| self.arrival(me, w))
    }

    /// The transition of an arrival as `me` on the word `w` (the lock held).
    #[allow(clippy::type_complexity)]
    fn arrival(self, me: u64, w: u64) -> (Option<u64>, Result<Option<(u64, u32)>>) {
        let n = self.parties;
        if w & BROKEN != 0 {
            return (None, Err(Error::BrokenBarrier));
        }
        let count = count_of(w);
        match count.checked_add(1) {
            Some(c) if c == n => (Some(self.complete(w)), Ok(None)),
            Some(c) if c < n => {
                let Some(slot) = self.slots.get(count as usize) else {
                    return (Some(w | BROKEN), Err(Error::Corrupted("barrier count")));
                };
                slot.store(me, Ordering::Relaxed);
                ipc_failpoints::failpoint!("sem.barrier.mid_arrival");
                (Some(make(gen_of(w), c)), Ok(Some((gen_of(w), count))))
            }
            _ => (Some(w | BROKEN), Err(Error::Corrupted("barrier count"))),
        }
    }

    /// Sleeps as the arrival `me` at `index` of generation `gen` until the generation ends.
    fn sleep(self, gen: u64, index: u32, me: u64, deadline: Deadline) -> Result<BarrierWaitResult> {
        let mut st = Sleeping::new(gen, index, me);
        loop {
            match self.sleep_step(&mut st, deadline) {
                BarrierStep::Done(r) => return r,
                BarrierStep::Wait { expected, slice } => {
                    st.slept_out =
                        wait_low_half(&self.s.word, expected, slice) == WaitOutcome::TimedOut;
                }
            }
        }
    }

    /// The loop of [`Core::sleep`] without its sleeps, which the caller (the blocking loop
    /// or the async driver) does, reporting in `st.slept_out` whether the sleep ran out.
    fn sleep_step(self, st: &mut Sleeping, deadline: Deadline) -> BarrierStep {
        let s = self.s;
        let (gen, index, me) = (st.gen, st.index, st.me);
        if std::mem::take(&mut st.slept_out) {
            if let Err(e) = self.check_peers(gen, index, me) {
                return BarrierStep::Done(Err(e));
            }
        }
        // Set once this sleeper's own deadline passed and it broke the generation: a broken
        // ending is then its `Timeout`, not somebody else's `BrokenBarrier`.
        let broken = |timed_out: bool| {
            if timed_out {
                Error::Timeout
            } else {
                Error::BrokenBarrier
            }
        };
        loop {
            // SYNC POINT: Acquire pairs with the Release store in `locked`.
            let w = s.word.load(Ordering::Acquire);
            if gen_of(w) != gen {
                let timed_out = st.timed_out;
                return BarrierStep::Done(self.ended(gen).map_err(|_| broken(timed_out)));
            }
            if w & BROKEN != 0 {
                return BarrierStep::Done(Err(broken(st.timed_out)));
            }
            if deadline.is_expired() {
                if let Err(e) = self.break_if(gen, None) {
                    return BarrierStep::Done(Err(e));
                }
                st.timed_out = true;
                continue; // re-read: the generation may have completed just before
            }
            // The model has no timed wake-ups: the periodic check is modelled by a check
            // before every sleep, and the models wake sleepers where a timer would.
            #[cfg(loom)]
            if let Err(e) = self.check_peers(gen, index, me) {
                return BarrierStep::Done(Err(e));
            }
            return BarrierStep::Wait {
                expected: (make(gen, 0) & LOW) as u32,
                slice: deadline.min(Deadline::after(DEATH_CHECK)),
            };
        }
    }

    /// A sleeper's periodic check: a dead holder of the internal lock, or a dead participant
    /// among those arrived, breaks the barrier.
    fn check_peers(self, gen: u64, index: u32, me: u64) -> Result<()> {
        self.check_lock_holder()?;
        self.check_next(gen, index, me)
    }

    /// How generation `gen` ended, for a waiter that saw the next one start.
    fn ended(self, gen: u64) -> Result<BarrierWaitResult> {
        // SYNC POINT: the entry was stored before the word that started the next generation,
        // which the caller loaded with Acquire.
        let e = u64::from(self.s.ends[(gen as usize) % ENDS].load(Ordering::Relaxed));
        if (e >> 1) & GEN_MASK == gen && e & BROKEN != 0 {
            Err(Error::BrokenBarrier)
        } else {
            // Completed (or, after 16 further generations, no longer known: assume completed).
            Ok(BarrierWaitResult { leader: false })
        }
    }

    /// Checks that the participant after `index` (cyclically among those arrived) lives;
    /// breaks the barrier if it died.
    fn check_next(self, gen: u64, index: u32, me: u64) -> Result<()> {
        let w = self.s.word.load(Ordering::Acquire);
        let count = count_of(w);
        if gen_of(w) != gen || w & BROKEN != 0 || count <= 1 {
            return Ok(());
        }
        // An async arrival that was cancelled took its slot back by moving the last one into
        // it: a sleeper whose slot moved finds it again by its stamp.
        let index = match self.slots.get(index as usize) {
            Some(slot) if index < count && slot.load(Ordering::Relaxed) == me => index,
            _ => match self.find(me, count) {
                Some(i) => i,
                None => return Ok(()),
            },
        };
        let next = (index + 1) % count;
        let Some(slot) = self.slots.get(next as usize) else {
            return Ok(());
        };
        let stamp = slot.load(Ordering::Relaxed);
        if OwnerStamp::from_bits(stamp).is_dead() {
            self.break_if(gen, Some((next, stamp)))?;
        }
        Ok(())
    }

    /// Breaks generation `gen` if it is still running (and, with `dead`, if that slot still
    /// holds that stamp).
    fn break_if(self, gen: u64, dead: Option<(u32, u64)>) -> Result<()> {
        let r = self.locked(Some(Deadline::never()), |w| {
            let same = gen_of(w) == gen && w & BROKEN == 0;
            let still = dead.map_or(true, |(i, stamp)| {
                i < count_of(w)
                    && self
                        .slots
                        .get(i as usize)
                        .is_some_and(|s| s.load(Ordering::Relaxed) == stamp)
            });
            if same && still {
                (Some(w | BROKEN), Ok(()))
            } else {
                (None, Ok(()))
            }
        });
        match r {
            Err(Error::BrokenBarrier) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Barrier::abort`].
    fn abort(self) {
        let _ = self.locked(Some(Deadline::never()), |w| {
            (Some(w | BROKEN), Ok::<(), Error>(()))
        });
    }

    /// [`Barrier::reset`].
    fn reset(self) -> Result<()> {
        match self.reset_once() {
            // A participant had died inside the lock, which broke the barrier: reset that.
            Err(Error::BrokenBarrier) => self.reset_once(),
            r => r,
        }
    }

    fn reset_once(self) -> Result<()> {
        self.locked(Some(Deadline::never()), |w| {
            if count_of(w) == 0 && w & BROKEN == 0 {
                return (None, Ok(()));
            }
            let gen = gen_of(w);
            self.s.ends[(gen as usize) % ENDS]
                .store(((gen << 1) | BROKEN) as u32, Ordering::Relaxed);
            (Some(make(gen + 1, 0)), Ok(()))
        })
    }
}

/// The state a sleeping arrival keeps between its steps.
#[derive(Debug)]
struct Sleeping {
    gen: u64,
    index: u32,
    /// The stamp the arrival recorded in its slot.
    me: u64,
    /// This sleeper's deadline passed and it broke the generation.
    timed_out: bool,
    /// The last sleep ran out (time for the periodic death check).
    slept_out: bool,
}

impl Sleeping {
    fn new(gen: u64, index: u32, me: u64) -> Self {
        Sleeping {
            gen,
            index,
            me,
            timed_out: false,
            slept_out: false,
        }
    }
}

/// What a step of a sleeping arrival ended with.
enum BarrierStep {
    /// The wait is over.
    Done(Result<BarrierWaitResult>),
    /// Sleep while the low half of the word holds `expected`, until `slice`, then step again.
    Wait { expected: u32, slice: Deadline },
}

impl Core<'_> {
    /// The first slot among the `count` arrived that holds `me`.
    fn find(self, me: u64, count: u32) -> Option<u32> {
        (0..count).find(|&i| {
            self.slots
                .get(i as usize)
                .is_some_and(|s| s.load(Ordering::Relaxed) == me)
        })
    }
}

/// The async forms (feature `async`): the same arrival and sleep steps, the internal lock
/// taken with `RawLock::lock_until_async`, each sleep a registration with the process's
/// futex waiter thread.
#[cfg(all(feature = "async", not(loom)))]
impl<'a> Core<'a> {
    async fn wait_until_async(self, deadline: Deadline) -> Result<BarrierWaitResult> {
        // The arrival is stamped with the thread that polls it when it arrives (the
        // runtime's worker): if that thread exits while the future waits, the barrier breaks
        // as for a dead participant.
        let me = OwnerStamp::current().to_bits();
        let taken = self
            .s
            .lock
            .lock_until_async(deadline)
            .await
            .map_err(|e| match e {
                LockTimeoutError::OwnerDied(()) => None,
                e => Some(Error::from(e)),
            });
        // The arrival happens in the poll that took the lock: a future dropped before it
        // has not arrived.
        let (gen, index) = match self.with_lock_taken(taken, |w| self.arrival(me, w))? {
            None => return Ok(BarrierWaitResult { leader: true }),
            Some(arrived) => arrived,
        };
        let mut arrived = Arrived {
            core: self,
            gen,
            me,
            active: true,
        };
        let mut st = Sleeping::new(gen, index, me);
        loop {
            match self.sleep_step(&mut st, deadline) {
                BarrierStep::Done(r) => {
                    arrived.active = false;
                    return r;
                }
                BarrierStep::Wait { expected, slice } => {
                    st.slept_out =
                        ipc_shm::lowlevel::sync::FutexWait::low_half(&self.s.word, expected, slice)
                            .await
                            == WaitOutcome::TimedOut;
                }
            }
        }
    }

    /// Takes back the arrival `me` of generation `gen` if the generation still runs: its
    /// slot gets the last arrival's stamp and the count drops by one (the low half, which
    /// sleepers wait on, does not change).
    fn depart(self, gen: u64, me: u64) {
        let _ = self.locked(Some(Deadline::never()), |w| {
            if gen_of(w) != gen || w & BROKEN != 0 {
                return (None, Ok(()));
            }
            let count = count_of(w);
            let Some(i) = self.find(me, count) else {
                return (None, Ok(()));
            };
            let last = count - 1;
            if i != last {
                if let (Some(to), Some(from)) =
                    (self.slots.get(i as usize), self.slots.get(last as usize))
                {
                    to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
            (Some(make(gen, last)), Ok::<(), Error>(()))
        });
    }
}

/// An async arrival that has not completed: dropped, it departs.
#[cfg(all(feature = "async", not(loom)))]
struct Arrived<'a> {
    core: Core<'a>,
    gen: u64,
    me: u64,
    active: bool,
}

#[cfg(all(feature = "async", not(loom)))]
impl Drop for Arrived<'_> {
    fn drop(&mut self) {
        if self.active {
            self.core.depart(self.gen, self.me);
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.name())
            .field("parties", &self.parties)
            .field("waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    /// A barrier's state and slots on the heap; threads stand in for processes.
    struct Model {
        s: BarrierState,
        slots: Vec<AtomicU64>,
        parties: u32,
    }

    impl Model {
        fn new(parties: u32) -> Arc<Model> {
            Arc::new(Model {
                s: BarrierState {
                    lock: RawLock::new(),
                    word: AtomicU64::new(0),
                    ends: std::array::from_fn(|_| AtomicU32::new(0)),
                },
                slots: (0..parties).map(|_| AtomicU64::new(0)).collect(),
                parties,
            })
        }

        fn core(&self) -> Core<'_> {
            Core {
                s: &self.s,
                slots: &self.slots,
                parties: self.parties,
            }
        }

        fn wait(&self) -> Result<BarrierWaitResult> {
            self.core().wait_until(Deadline::never())
        }

        /// A `wait_timeout` whose timeout passes after it arrived (a model cannot let time
        /// pass: the sleep starts with its deadline already expired).
        fn wait_timing_out(&self) -> Result<BarrierWaitResult> {
            let me = OwnerStamp::current().to_bits();
            match self.core().arrive(me, Deadline::never())? {
                None => Ok(BarrierWaitResult { leader: true }),
                Some((gen, index)) => self.core().sleep(gen, index, me, Deadline::expired()),
            }
        }

        fn is_broken(&self) -> bool {
            self.s.word.load(Ordering::SeqCst) & BROKEN != 0
        }

        /// What the kernel does for a participant that died: nothing, but the sleepers'
        /// periodic timers keep firing. Wakes every sleeper until `done` is set, so a
        /// sleeper that checked just before the death does not sleep for ever.
        fn timer_until(&self, done: &AtomicBool) {
            while !done.load(Ordering::SeqCst) {
                // The futex model wakes every sleeper, the lock's included.
                wake_low_half(&self.s.word, u32::MAX);
                loom::thread::yield_now();
            }
        }
    }

    fn leaders(results: &[Result<BarrierWaitResult>]) -> usize {
        results
            .iter()
            .filter(|r| matches!(r, Ok(w) if w.is_leader()))
            .count()
    }

    /// Three parties: all leave with `Ok`, exactly one as the leader, and the barrier is
    /// empty and ready for the next generation (a lost wake-up deadlocks the model).
    #[test]
    fn loom_barrier_three_parties_leave_together_with_one_leader() {
        loom::model(|| {
            let m = Model::new(3);
            let others: Vec<_> = (0..2)
                .map(|_| {
                    let m = Arc::clone(&m);
                    loom::thread::spawn(move || m.wait())
                })
                .collect();
            let mut results = vec![m.wait()];
            results.extend(others.into_iter().map(|t| t.join().unwrap()));
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            assert_eq!(leaders(&results), 1);
            let w = m.s.word.load(Ordering::SeqCst);
            assert_eq!((gen_of(w), count_of(w), w & BROKEN), (1, 0, 0));
        });
    }

    /// Two parties, two generations: a party may re-arrive for the next generation before
    /// the other has woken from the last one; each generation still has exactly one leader
    /// and the late waker reads its generation's end as completed.
    #[test]
    fn loom_barrier_two_generations_one_leader_each() {
        loom::model(|| {
            let m = Model::new(2);
            let other = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || [m.wait(), m.wait()])
            };
            let mine = [m.wait(), m.wait()];
            let theirs = other.join().unwrap();
            for (g, (a, b)) in mine.into_iter().zip(theirs).enumerate() {
                let pair = [a, b];
                assert!(pair.iter().all(Result::is_ok), "{pair:?}");
                assert_eq!(leaders(&pair), 1, "generation {g}");
            }
            assert_eq!(gen_of(m.s.word.load(Ordering::SeqCst)), 2);
        });
    }

    /// Three parties, two present, one of them times out: it breaks the barrier and gets
    /// `Timeout`, the other `BrokenBarrier` (it does not sleep for ever).
    #[test]
    fn loom_barrier_timeout_breaks_it_for_the_others() {
        loom::model(|| {
            let m = Model::new(3);
            let waiter = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || m.wait())
            };
            let mine = m.wait_timing_out();
            let theirs = waiter.join().unwrap();
            // The one whose time ran out reports its timeout; the other sees it broken.
            assert!(matches!(mine, Err(Error::Timeout)), "{mine:?}");
            assert!(matches!(theirs, Err(Error::BrokenBarrier)), "{theirs:?}");
            assert!(m.is_broken());
        });
    }

    /// Two parties, one times out while the other arrives: either the generation completes
    /// (both `Ok`, one leader) or it breaks (`Timeout` for the one whose time ran out,
    /// `BrokenBarrier` for the other), never a mix.
    #[test]
    fn loom_barrier_timeout_racing_the_last_arrival() {
        loom::model(|| {
            let m = Model::new(2);
            let waiter = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || m.wait())
            };
            let mine = m.wait_timing_out();
            let theirs = waiter.join().unwrap();
            let pair = [mine, theirs];
            if pair.iter().all(Result::is_ok) {
                assert_eq!(leaders(&pair), 1);
                assert!(!m.is_broken());
            } else {
                assert!(
                    matches!(pair[0], Err(Error::Timeout))
                        && matches!(pair[1], Err(Error::BrokenBarrier)),
                    "{pair:?}"
                );
                assert!(m.is_broken());
            }
        });
    }

    /// Two parties; one is killed holding the internal lock in the middle of its arrival
    /// (its slot stored, the count not; or, if it came last, before completing). The other,
    /// whether it arrives before or after, gets `BrokenBarrier`, and the lock is left free
    /// and consistent, so `reset` makes the barrier usable again.
    #[test]
    fn loom_barrier_death_mid_arrival_breaks_it() {
        loom::model(|| {
            let m = Model::new(2);
            let done = Arc::new(AtomicBool::new(false));
            let victim = {
                let m = Arc::clone(&m);
                let done = Arc::clone(&done);
                loom::thread::spawn(move || {
                    m.s.lock.lock().unwrap();
                    let count = count_of(m.s.word.load(Ordering::Relaxed));
                    if count + 1 < m.parties {
                        m.slots[count as usize]
                            .store(OwnerStamp::current().to_bits(), Ordering::Relaxed);
                    }
                    ipc_shm::lowlevel::sync::die();
                    m.timer_until(&done);
                })
            };
            let r = m.wait();
            done.store(true, Ordering::SeqCst);
            victim.join().unwrap();
            assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
            assert!(m.is_broken());
            assert!(!m.s.lock.is_locked());
            assert!(!m.s.lock.is_poisoned());
            m.core().reset().unwrap();
            assert!(!m.is_broken());
        });
    }

    /// Three parties; one arrives and is killed while it sleeps, the third never comes. The
    /// other present party, arriving before or after the death, finds it dead through its
    /// slot and gets `BrokenBarrier` instead of sleeping for ever.
    #[test]
    fn loom_barrier_death_after_arrival_breaks_it() {
        loom::model(|| {
            let m = Model::new(3);
            let done = Arc::new(AtomicBool::new(false));
            let victim = {
                let m = Arc::clone(&m);
                let done = Arc::clone(&done);
                loom::thread::spawn(move || {
                    let me = OwnerStamp::current().to_bits();
                    match m.core().arrive(me, Deadline::never()) {
                        Ok(Some(_)) => {}
                        other => panic!("{other:?}"),
                    }
                    ipc_shm::lowlevel::sync::die();
                    m.timer_until(&done);
                })
            };
            let r = m.wait();
            done.store(true, Ordering::SeqCst);
            victim.join().unwrap();
            assert!(matches!(r, Err(Error::BrokenBarrier)), "{r:?}");
            assert!(m.is_broken());
        });
    }
}

impl std::os::fd::AsFd for Barrier {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the barrier with [`Barrier::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

/// Handle passing: a barrier travels to an unrelated process as a descriptor.
impl Barrier {
    /// Rebuilds a barrier from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Barrier::open_named`] checks a name; the party count comes from the
    /// validated header. The rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for
    /// another kind of object, `Shm(ForeignPidNamespace)`, `Shm(Io)`, `InvalidArgument` for a
    /// party count no creator writes. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Barrier> {
        let shared = Shared::<BarrierState>::from_fd(fd, check_parties)?;
        let parties =
            u32::try_from(shared.capacity()).map_err(|_| Error::Corrupted("barrier parties"))?;
        Ok(Barrier { shared, parties })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the barrier lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.shared.into_fd()
    }
}
