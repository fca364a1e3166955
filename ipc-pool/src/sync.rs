//! `std::sync::Mutex` and `Condvar` without poisoning, for the crate's in-process state.
//!
//! Why a poisoned lock is taken over (`PoisonError::into_inner`) rather than reported: every
//! value these locks protect stays valid when a holder panics mid-update. They are plain
//! bookkeeping (queues, tables of fds and pids, counters), never memory-safety invariants; a
//! panic in the one writer that matters, the dispatcher thread, is caught and breaks the pool
//! under the same lock (`Error::Broken`), so the callers still get an answer. Refusing the
//! lock instead would turn one panic into a hang or a panic in every other thread of the
//! program that touches the pool, and in the reaper that reaps its children.

use std::sync::{MutexGuard, PoisonError};
use std::time::Instant;

/// A mutex whose `lock` never fails: see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Mutex<T> {
        Mutex(std::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A condition variable over [`Mutex`], with deadline waits.
#[derive(Debug, Default)]
pub(crate) struct Condvar(std::sync::Condvar);

impl Condvar {
    pub(crate) const fn new() -> Condvar {
        Condvar(std::sync::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until notified or until `deadline` (`None`: no deadline); `true` once the
    /// deadline has passed. May wake spuriously, as every condvar wait: callers loop on
    /// their condition.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        let Some(deadline) = deadline else {
            return (self.wait(guard), false);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (guard, true);
        }
        let (g, _) = self
            .0
            .wait_timeout(guard, left)
            .unwrap_or_else(PoisonError::into_inner);
        (g, Instant::now() >= deadline)
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
