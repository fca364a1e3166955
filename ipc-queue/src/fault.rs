//! Test-only fault points: a hidden hook that kills the process with `SIGKILL` after it has
//! claimed a slot and before it publishes or releases it, the window the protocol must
//! survive. Disarmed, each point costs one relaxed load of a process-global word.

use std::sync::atomic::{AtomicU64, Ordering};

/// 0: disarmed; else the site in the top byte and a countdown below.
static ARMED: AtomicU64 = AtomicU64::new(0);
const COUNT_MASK: u64 = (1 << 56) - 1;

/// Where a fault point sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Site {
    /// A producer between its claim and its publication.
    Put = 1,
    /// A consumer between its claim and its release.
    Get = 2,
}

/// A fault point: dies here if armed for `site` and the countdown reaches zero.
#[inline]
pub(crate) fn point(site: Site) {
    if ARMED.load(Ordering::Relaxed) != 0 {
        fire(site);
    }
}

#[cold]
fn fire(site: Site) {
    let mut cur = ARMED.load(Ordering::Relaxed);
    loop {
        if cur == 0 || cur >> 56 != site as u64 {
            return;
        }
        if cur & COUNT_MASK <= 1 {
            crate::sys::kill_self();
        }
        match ARMED.compare_exchange(cur, cur - 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

fn arm(site: Site, nth: u64) {
    let n = nth.clamp(1, COUNT_MASK);
    ARMED.store(((site as u64) << 56) | n, Ordering::Relaxed);
}

/// Arms the calling process to `SIGKILL` itself inside its `nth` put (1 = the next one),
/// after the slot is claimed and before the message is published. For fault-injection tests;
/// call it in a forked child.
pub fn sigkill_in_put(nth: u64) {
    arm(Site::Put, nth);
}

/// Arms the calling process to `SIGKILL` itself inside its `nth` get, after the slot is
/// claimed and before it is released (the message is then lost and counted as dropped).
pub fn sigkill_in_get(nth: u64) {
    arm(Site::Get, nth);
}

/// Disarms the fault points.
pub fn disarm() {
    ARMED.store(0, Ordering::Relaxed);
}
