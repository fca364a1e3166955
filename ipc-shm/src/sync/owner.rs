//! Who holds something: the calling thread's id and start time, and whether a recorded
//! holder is still alive.
//!
//! A lock word records the holder's thread id (unique among live threads of a pid namespace;
//! the main thread's id is the process id). Ids are recycled, so the holder also stamps its
//! start time (clock ticks since boot, from `/proc/<tid>/stat`): a live thread with the same
//! id but another start time is not the holder. Both values are cached per thread and reset in
//! the child after `fork` (the child's thread has a new id).
//!
//! All participants must share one pid namespace (the usual case: a parent and its children,
//! or programs of one container).

#[cfg(not(loom))]
mod imp {
    use std::cell::Cell;

    use crate::sys::{self, Liveness};

    thread_local! {
        static ME: Cell<Option<(u32, u64)>> = const { Cell::new(None) };
    }

    unsafe extern "C" fn forget_after_fork() {
        // Runs in the child's only thread right after fork: drop the parent's thread identity.
        // `try_with` because TLS may be mid-destruction in an exiting thread that forks.
        let _ = ME.try_with(|me| me.set(None));
    }

    fn load() -> (u32, u64) {
        sys::on_fork_in_child(forget_after_fork);
        let tid = sys::thread_id();
        let start = match sys::liveness(tid) {
            Liveness::Alive { start_time } => start_time,
            Liveness::Dead => 0,
        };
        (tid, start)
    }

    /// The calling thread's `(id, start time)`; the start time is 0 if it could not be read.
    #[inline]
    pub(crate) fn current() -> (u32, u64) {
        ME.with(|me| match me.get() {
            Some(v) => v,
            None => {
                let v = load();
                me.set(Some(v));
                v
            }
        })
    }

    /// Whether the holder recorded as thread `tid`, stamped with the low 32 bits of its start
    /// time `stamp` (0: unknown), is certainly gone: no such thread, a zombie, or a thread of
    /// that id started at another time.
    pub(crate) fn is_dead(tid: u32, stamp: u64) -> bool {
        match sys::liveness(tid) {
            Liveness::Dead => true,
            Liveness::Alive { start_time } => {
                stamp != 0 && start_time != 0 && (start_time & 0xFFFF_FFFF) != stamp
            }
        }
    }
}

#[cfg(loom)]
mod imp {
    //! Under loom, model threads get distinct small ids and nobody ever dies.
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(1);

    loom::thread_local! {
        static ME: u32 = NEXT.fetch_add(1, Ordering::Relaxed) & 0x3FFF_FFFF;
    }

    pub(crate) fn current() -> (u32, u64) {
        (ME.with(|id| *id), 1)
    }

    pub(crate) fn is_dead(_tid: u32, _start: u64) -> bool {
        false
    }
}

pub(crate) use imp::{current, is_dead};

/// The calling thread's id, as recorded in lock words (cached; correct in a forked child).
pub fn current_thread_id() -> u32 {
    current().0
}

/// Whether the process or thread `id` is gone (no such task, or a zombie).
pub fn is_gone(id: u32) -> bool {
    is_dead(id, 0)
}
