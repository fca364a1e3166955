//! [`Event`]: a flag processes wait on, on one futex word.
//!
//! The word holds `SET` (bit 0), `WAITERS` (bit 1: someone sleeps or is about to) and, in bits
//! 2..31, a count of `set` calls. `set` bumps the count and clears `WAITERS` in one
//! compare-and-swap, and calls `FUTEX_WAKE` only if `WAITERS` was on. A waiter returns when
//! `SET` is on or the count moved since it started, so a `set` followed at once by `clear`
//! still releases everybody who was waiting (as Python's `Event.wait` returns `True`).
//!
//! No lost wake-up: a waiter turns `WAITERS` on by compare-and-swap before it sleeps, and
//! sleeps only while the word still holds exactly that value.

use std::fmt;
use std::time::Duration;

use ipc_shm::lowlevel::sync::{Deadline, Futex};

use crate::error::{Result, WaitTimeoutResult};
use crate::loom::{AtomicU32, Ordering};
use crate::shm::{Shared, SharedState};

const SET: u32 = 1;
const WAITERS: u32 = 2;
const GEN_ONE: u32 = 4;

/// Sets the flag; wakes every waiter if any sleeps.
pub(crate) fn set(word: &AtomicU32) {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur & (SET | WAITERS) == SET {
            return; // already set, and nobody can be asleep on a set flag
        }
        let next = (cur & !(WAITERS | SET)).wrapping_add(GEN_ONE) | SET;
        // SYNC POINT: Release pairs with the Acquire loads in `wait`/`is_set`: what the setter
        // wrote before `set` is visible to a waiter that sees the flag.
        match word.compare_exchange_weak(cur, next, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) => cur = seen,
        }
    }
    if cur & WAITERS != 0 {
        Futex::from_atomic(word).wake_all();
    }
}

/// Clears the flag (waiters stay registered).
pub(crate) fn clear(word: &AtomicU32) {
    word.fetch_and(!SET, Ordering::Relaxed);
}

/// Whether the flag is set.
pub(crate) fn is_set(word: &AtomicU32) -> bool {
    word.load(Ordering::Acquire) & SET != 0
}

/// Waits until the flag is set (or was set since the call began); `false` if `deadline`
/// passed first. Wake-ups by signals or spurious ones re-wait on the same deadline.
pub(crate) fn wait(word: &AtomicU32, deadline: Deadline) -> bool {
    let start = word.load(Ordering::Acquire);
    if start & SET != 0 {
        return true;
    }
    let start_gen = start & !(SET | WAITERS);
    let futex = Futex::from_atomic(word);
    let mut cur = start;
    loop {
        match wait_step(word, start_gen, cur, deadline) {
            Ok(done) => return done,
            Err(expected) => {
                futex.wait(expected, deadline);
                // SYNC POINT: Acquire pairs with the Release compare-and-swap in `set`.
                cur = word.load(Ordering::Acquire);
            }
        }
    }
}

/// One step of [`wait`] from the word value `cur`: `Ok(set)` when it is over, or
/// `Err(expected)`: sleep while the word holds `expected`, then step again from a fresh load.
/// Shared by the blocking loop and the async driver.
fn wait_step(
    word: &AtomicU32,
    start_gen: u32,
    mut cur: u32,
    deadline: Deadline,
) -> std::result::Result<bool, u32> {
    loop {
        if cur & SET != 0 || cur & !(SET | WAITERS) != start_gen {
            return Ok(true);
        }
        if deadline.is_expired() {
            return Ok(false);
        }
        if cur & WAITERS == 0 {
            if let Err(seen) =
                word.compare_exchange_weak(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Acquire)
            {
                cur = seen;
                continue;
            }
        }
        return Err(cur | WAITERS);
    }
}

/// [`wait`] as a future (feature `async`). Cancel-safe: a dropped wait leaves at most the
/// `WAITERS` flag on, which costs the next `set` one spurious `FUTEX_WAKE`.
#[cfg(all(feature = "async", not(loom)))]
pub(crate) async fn wait_async(word: &AtomicU32, deadline: Deadline) -> bool {
    let start = word.load(Ordering::Acquire);
    if start & SET != 0 {
        return true;
    }
    let start_gen = start & !(SET | WAITERS);
    let mut cur = start;
    loop {
        match wait_step(word, start_gen, cur, deadline) {
            Ok(done) => return done,
            Err(expected) => {
                ipc_shm::lowlevel::sync::FutexWait::new(word, expected, deadline).await;
                // SYNC POINT: Acquire pairs with the Release compare-and-swap in `set`.
                cur = word.load(Ordering::Acquire);
            }
        }
    }
}

#[repr(C)]
struct EventState {
    word: AtomicU32,
}

#[allow(unsafe_code)]
// SAFETY: one `AtomicU32`, `repr(C)`, valid for every bit pattern, all-zero = clear with no
// waiters; alignment 4.
unsafe impl SharedState for EventState {
    const KIND: &'static str = "ipc_sem::Event";
    const VERSION: u32 = 1;
}

/// A flag that processes wait on: Python's `multiprocessing.Event`.
///
/// [`Event::set`] wakes every waiter (with one `FUTEX_WAKE`, and only if someone waits);
/// [`Event::clear`] resets the flag; [`Event::wait`] returns once the flag is set, or was set
/// at any moment since the wait began.
///
/// ```
/// use ipc_sem::Event;
/// use std::time::Duration;
///
/// let ev = Event::new()?;
/// assert!(ev.wait_timeout(Duration::from_millis(5)).timed_out());
/// ev.set();
/// assert!(ev.is_set());
/// ev.wait(); // returns at once
/// ev.clear();
/// assert!(!ev.is_set());
/// # Ok::<(), ipc_sem::Error>(())
/// ```
pub struct Event {
    shared: Shared<EventState>,
}

impl Event {
    /// A clear event in an anonymous segment that processes forked afterwards share.
    ///
    /// # Errors
    /// `Shm` if the segment cannot be made.
    pub fn new() -> Result<Event> {
        Ok(Event {
            shared: Shared::create(None, 0, 0, |_| {})?,
        })
    }

    /// A clear event in a new named segment (mode 0600, `O_EXCL`); this handle removes the
    /// name when dropped.
    ///
    /// # Errors
    /// `Shm(InvalidName)`, `Shm(AlreadyExists)`, `Shm(Io)`.
    pub fn create_named(name: &str) -> Result<Event> {
        Ok(Event {
            shared: Shared::create(Some(name), 0, 0, |_| {})?,
        })
    }

    /// Opens an event made by [`Event::create_named`].
    ///
    /// # Errors
    /// `Shm(NotFound)`, `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another
    /// kind of object.
    pub fn open_named(name: &str) -> Result<Event> {
        Ok(Event {
            shared: Shared::open(name, |_| Ok(0))?,
        })
    }

    fn word(&self) -> &AtomicU32 {
        &self.shared.state().word
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        set(self.word());
    }

    /// Clears the flag.
    pub fn clear(&self) {
        clear(self.word());
    }

    /// Whether the flag is set (a snapshot).
    pub fn is_set(&self) -> bool {
        is_set(self.word())
    }

    /// Waits until the flag is set.
    ///
    /// # Peer death
    /// An event has no owner: if the process expected to set it dies, `wait` waits forever.
    /// Use [`Event::wait_timeout`] when that can happen.
    pub fn wait(&self) {
        wait(self.word(), Deadline::never());
    }

    /// Waits at most `timeout` for the flag, as `std::sync::Condvar::wait_timeout`:
    /// [`WaitTimeoutResult::timed_out`] is `true` if the time ran out with the flag never
    /// set. (The non-blocking form is [`Event::is_set`].)
    ///
    /// # Peer death
    /// As [`Event::wait`]; the timeout bounds the wait.
    pub fn wait_timeout(&self, timeout: Duration) -> WaitTimeoutResult {
        WaitTimeoutResult(!wait(self.word(), Deadline::after(timeout)))
    }

    /// [`Event::wait`] as a future (feature `async`): one registration with the process's
    /// futex waiter thread while it waits, not a thread.
    ///
    /// # Peer death
    /// As [`Event::wait`]: wrap it in a timeout (or use [`Event::wait_timeout_async`]) when
    /// the setter may die.
    ///
    /// # Cancel safety
    /// Cancel-safe: a wait observes and changes nothing a caller can see.
    #[cfg(feature = "async")]
    pub async fn wait_async(&self) {
        wait_async(self.word(), Deadline::never()).await;
    }

    /// [`Event::wait_timeout`] as a future (feature `async`).
    ///
    /// # Peer death
    /// As [`Event::wait`]; the timeout bounds the wait.
    ///
    /// # Cancel safety
    /// As [`Event::wait_async`].
    #[cfg(feature = "async")]
    pub async fn wait_timeout_async(&self, timeout: Duration) -> WaitTimeoutResult {
        WaitTimeoutResult(!wait_async(self.word(), Deadline::after(timeout)).await)
    }

    /// The segment's name, or `None` for an inherited event.
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

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("set", &self.is_set())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn pulse_releases_a_sleeper() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || wait(&w2, Deadline::after(Duration::from_secs(20))));
        while w.load(Ordering::Relaxed) & WAITERS == 0 {
            std::thread::yield_now();
        }
        set(&w);
        clear(&w);
        assert!(t.join().unwrap());
        let start = Instant::now();
        assert!(!wait(&w, Deadline::after(Duration::from_millis(20))));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A waiter and a setter: the waiter always returns (a lost wake-up deadlocks the model).
    #[test]
    fn loom_event_set_wakes_waiter() {
        loom::model(|| {
            let w = Arc::new(AtomicU32::new(0));
            let w2 = Arc::clone(&w);
            let t = loom::thread::spawn(move || assert!(wait(&w2, Deadline::never())));
            set(&w);
            t.join().unwrap();
            assert!(is_set(&w));
        });
    }

    /// A registered sleeper is released by `set` even if `clear` follows at once, and a
    /// sleeper is never left behind: the setter waits for the registration, so the blocking
    /// path is what the model explores.
    #[test]
    fn loom_event_pulse_wakes_registered_sleeper() {
        loom::model(|| {
            let w = Arc::new(AtomicU32::new(0));
            let w2 = Arc::clone(&w);
            let t = loom::thread::spawn(move || assert!(wait(&w2, Deadline::never())));
            while w.load(Ordering::SeqCst) & WAITERS == 0 {
                loom::thread::yield_now();
            }
            set(&w);
            clear(&w);
            t.join().unwrap();
            assert!(!is_set(&w));
        });
    }

    /// One `set` releases two waiters, whichever order they register in.
    #[test]
    fn loom_event_set_wakes_two_waiters() {
        loom::model(|| {
            let w = Arc::new(AtomicU32::new(0));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let w = Arc::clone(&w);
                    loom::thread::spawn(move || assert!(wait(&w, Deadline::never())))
                })
                .collect();
            set(&w);
            for t in waiters {
                t.join().unwrap();
            }
            clear(&w);
            assert!(!is_set(&w));
        });
    }
}

impl std::os::fd::AsFd for Event {
    /// The segment's descriptor, to send to another process (`ipc_pipe`'s `send_fds`),
    /// which rebuilds the object with [`Event::from_fd`].
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

/// Handle passing: an event travels to an unrelated process as a descriptor.
impl Event {
    /// Rebuilds an event from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`Event::open_named`] checks a name (`ipc_shm::lowlevel::Segment::from_fd`). The
    /// rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `Shm(NotMemoryFile)` for a pipe, socket or other non-memory descriptor,
    /// `Shm(NotOwner)`, `Shm(NotReady)`, `Shm(LayoutMismatch)` for another kind of object,
    /// `Shm(ForeignPidNamespace)`, `Shm(Io)`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Event> {
        Ok(Event {
            shared: Shared::from_fd(fd, |_| Ok(0))?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor (the same one, not a
    /// duplicate), to send to another process. A name this handle created is removed now,
    /// as on drop; the object lives on in the descriptor.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.shared.into_fd()
    }
}
