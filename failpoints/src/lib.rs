#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Marks a fault point. Expands to a call of [`hit`], which does nothing unless the crate was
/// built with the `enabled` feature and a test armed this name.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::hit($name)
    };
}

/// What an armed point does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    /// `SIGKILL` the calling process: it dies here, holding whatever it holds.
    Kill = 1,
    /// `SIGSTOP` the calling process (a stall); it goes on from here after `SIGCONT`.
    /// Fires once, then the point disarms itself.
    Stop = 2,
    /// Panic with a message naming the point (unwinding code paths).
    Panic = 3,
    /// The calling thread sleeps [`DELAY`], then goes on (a stall of one thread while the
    /// others of the process run: stages a race window).
    Delay = 4,
}

/// How long [`Action::Delay`] stalls the thread that hits the point.
pub const DELAY: std::time::Duration = std::time::Duration::from_millis(200);

impl Action {
    fn from_u8(v: u8) -> Option<Action> {
        match v {
            1 => Some(Action::Kill),
            2 => Some(Action::Stop),
            3 => Some(Action::Panic),
            4 => Some(Action::Delay),
            _ => None,
        }
    }
}

/// The table is full: at most [`CAPACITY`] points can be armed at once in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl std::fmt::Display for TableFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failpoint table full ({CAPACITY} armed points)")
    }
}

impl std::error::Error for TableFull {}

/// How many points can be armed at once in one process.
pub const CAPACITY: usize = 32;

/// One armed point: the name's hash (0: free), the countdown to firing, the action.
struct Entry {
    name: AtomicU64,
    countdown: AtomicU32,
    action: AtomicU8,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Entry = Entry {
    name: AtomicU64::new(0),
    countdown: AtomicU32::new(0),
    action: AtomicU8::new(0),
};

static TABLE: [Entry; CAPACITY] = [FREE; CAPACITY];
/// How many entries are in use; `hit` returns at once while it is 0.
static ARMED: AtomicU32 = AtomicU32::new(0);
/// Hits of every armed point so far (for tests that check a point was reached).
static HITS: AtomicU64 = AtomicU64::new(0);

/// FNV-1a of the name, never 0 (0 marks a free entry).
fn hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// Whether points fire in this build (the `enabled` feature).
pub const fn enabled() -> bool {
    cfg!(feature = "enabled")
}

/// Arms `name` in the calling process: its `nth` hit from now on (1: the next) performs
/// `action`. Re-arming a name replaces its countdown and action.
///
/// # Errors
/// [`TableFull`] when [`CAPACITY`] points are already armed.
pub fn arm(name: &str, nth: u32, action: Action) -> Result<(), TableFull> {
    let h = hash(name);
    let nth = nth.max(1);
    // Re-arm an existing entry of the same name.
    for e in &TABLE {
        if e.name.load(Ordering::Acquire) == h {
            e.action.store(action as u8, Ordering::Relaxed);
            e.countdown.store(nth, Ordering::Release);
            return Ok(());
        }
    }
    for e in &TABLE {
        // Action and countdown are written before the name is published (Release), so a
        // `hit` that matches the name (Acquire) sees them.
        if e.name.load(Ordering::Relaxed) == 0 {
            e.action.store(action as u8, Ordering::Relaxed);
            e.countdown.store(nth, Ordering::Relaxed);
            if e.name
                .compare_exchange(0, h, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                ARMED.fetch_add(1, Ordering::Release);
                return Ok(());
            }
        }
    }
    Err(TableFull)
}

/// Disarms `name` (no effect if it was not armed).
pub fn disarm(name: &str) {
    let h = hash(name);
    for e in &TABLE {
        if e.name
            .compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            ARMED.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Disarms every point in the calling process.
pub fn disarm_all() {
    for e in &TABLE {
        if e.name.swap(0, Ordering::AcqRel) != 0 {
            ARMED.fetch_sub(1, Ordering::Release);
        }
    }
}

/// How many times armed points were hit in this process (fired or counted down).
pub fn hits() -> u64 {
    HITS.load(Ordering::Relaxed)
}

/// The body of [`failpoint!`]: fires `name`'s action if it is armed and its countdown ends
/// here. Without the `enabled` feature it does nothing.
#[inline(always)]
pub fn hit(name: &'static str) {
    #[cfg(feature = "enabled")]
    if ARMED.load(Ordering::Relaxed) != 0 {
        hit_armed(name);
    }
    #[cfg(not(feature = "enabled"))]
    let _ = name;
}

#[cold]
#[inline(never)]
#[cfg_attr(not(feature = "enabled"), allow(dead_code))]
fn hit_armed(name: &'static str) {
    let h = hash(name);
    for e in &TABLE {
        if e.name.load(Ordering::Acquire) != h {
            continue;
        }
        HITS.fetch_add(1, Ordering::Relaxed);
        // Count down; the hit that takes the countdown from 1 to 0 fires.
        let prev = e
            .countdown
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
        if prev != Ok(1) {
            return;
        }
        match Action::from_u8(e.action.load(Ordering::Relaxed)) {
            Some(Action::Kill) => sys::kill_self(),
            Some(Action::Stop) => {
                if e.name
                    .compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    ARMED.fetch_sub(1, Ordering::Release);
                }
                sys::stop_self();
            }
            Some(Action::Panic) => panic!("failpoint {name} fired"),
            Some(Action::Delay) => std::thread::sleep(DELAY),
            None => {}
        }
        return;
    }
}

#[allow(unsafe_code)]
mod sys {
    /// Ends the process with `SIGKILL`, here.
    pub(crate) fn kill_self() -> ! {
        // SAFETY: `raise` has no memory-safety preconditions; SIGKILL cannot be caught or
        // blocked, so the process ends before `raise` returns.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
        std::process::abort()
    }

    /// Stops the process with `SIGSTOP`; returns once it is continued.
    pub(crate) fn stop_self() {
        // SAFETY: `raise` has no memory-safety preconditions; SIGSTOP cannot be caught, the
        // call returns after SIGCONT.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the table is process-global.
    #[test]
    fn arm_count_down_fire_and_disarm() {
        failpoint!("t.never");
        assert_eq!(hits(), 0);
        arm("t.a", 3, Action::Panic).unwrap();
        if enabled() {
            failpoint!("t.a");
            failpoint!("t.a");
            let r = std::panic::catch_unwind(|| failpoint!("t.a"));
            assert!(r.is_err(), "third hit fires");
            assert_eq!(hits(), 3);
            // Fired: the countdown stays at 0, later hits do nothing.
            failpoint!("t.a");
            arm("t.delay", 1, Action::Delay).unwrap();
            let start = std::time::Instant::now();
            failpoint!("t.delay");
            assert!(start.elapsed() >= DELAY, "a delay stalls the caller");
            disarm("t.delay");
        }
        disarm("t.a");
        failpoint!("t.a");
        for i in 0..CAPACITY {
            let name = format!("t.fill.{i}");
            arm(&name, 1, Action::Kill).unwrap();
        }
        assert_eq!(arm("t.one.more", 1, Action::Kill), Err(TableFull));
        // Re-arming a known name needs no new entry.
        arm("t.fill.0", 5, Action::Panic).unwrap();
        disarm_all();
        assert_eq!(ARMED.load(Ordering::Relaxed), 0);
        failpoint!("t.fill.1");
    }
}
