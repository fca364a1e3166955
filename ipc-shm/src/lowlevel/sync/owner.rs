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

    /// Registers `forget_after_fork` before `main`, while the process has one thread: a lazy
    /// registration could be copied half-done into a child forked meanwhile and block it.
    #[used]
    #[link_section = ".init_array"]
    static REGISTER_AT_FORK: extern "C" fn() = register_at_fork;

    extern "C" fn register_at_fork() {
        sys::register_at_fork_child(forget_after_fork);
    }

    fn load() -> (u32, u64) {
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
    /// that id started at another time. Never true once [`liveness_unverifiable`] was called.
    pub(crate) fn is_dead(tid: u32, stamp: u64) -> bool {
        if super::UNVERIFIABLE.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
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

    /// Ids of model threads that "died" ([`die`]); ids are never reused across models.
    static DEAD: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

    loom::lazy_static! {
        /// Deaths so far: `die` bumps it with Release and `is_dead` reads it with an Acquire
        /// read-modify-write, so whoever sees a thread dead also sees everything it wrote
        /// (as a real process's stores are visible once the kernel reports it gone).
        static ref DEATHS: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }

    pub(crate) fn is_dead(tid: u32, _start: u64) -> bool {
        DEATHS.fetch_add(0, std::sync::atomic::Ordering::AcqRel);
        DEAD.lock().is_ok_and(|d| d.contains(&tid))
    }

    /// Marks the calling model thread dead: it must then return without touching shared state,
    /// standing for a process killed where it is.
    pub fn die() {
        let me = current().0;
        DEATHS.fetch_add(1, std::sync::atomic::Ordering::Release);
        if let Ok(mut d) = DEAD.lock() {
            d.push(me);
        }
    }
}

#[cfg(loom)]
pub use imp::die;
pub(crate) use imp::{current, is_dead};

/// Set once this process joined a segment whose peers' pid namespace it cannot verify.
static UNVERIFIABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, nobody is declared dead in this process: a recorded thread id might name a
/// task of another pid namespace, and a false "dead" would hand one lock or slot to two live
/// parties. Waits then end at their deadlines.
pub(crate) fn liveness_unverifiable() {
    UNVERIFIABLE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The calling thread's id, as recorded in lock words (cached; correct in a forked child).
pub fn current_thread_id() -> u32 {
    current().0
}

/// Whether the process or thread `id` is gone (no such task, or a zombie).
pub fn is_gone(id: u32) -> bool {
    is_dead(id, 0)
}

/// A thread's identity as recorded in shared memory, in one 64-bit word: the thread id in
/// bits 0..31 (bit 31 is left free for a flag) and the low 32 bits of the thread's start time
/// in the high half. Zero means "nobody".
///
/// One atomic store records both, so a reader never sees an id without its stamp; a recycled
/// id shows up as a start-time mismatch. [`RawLock`](super::RawLock) stores this in its lock
/// word; `ipc-queue` stamps claimed slots with it.
///
/// ```
/// use ipc_shm::lowlevel::sync::OwnerStamp;
/// let me = OwnerStamp::current();
/// assert!(!me.is_dead());
/// assert_eq!(OwnerStamp::from_bits(me.to_bits()), me);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerStamp(u64);

impl OwnerStamp {
    /// Bits 0..31: the thread id.
    pub const ID_MASK: u64 = 0x7FFF_FFFF;

    /// The calling thread's stamp (cached per thread; correct in a forked child).
    #[inline]
    pub fn current() -> OwnerStamp {
        let (tid, start) = current();
        OwnerStamp((u64::from(tid) & Self::ID_MASK) | ((start & 0xFFFF_FFFF) << 32))
    }

    /// A stamp read back from shared memory (untrusted: any value is accepted; a garbage
    /// stamp names a thread that is most likely dead).
    pub const fn from_bits(bits: u64) -> OwnerStamp {
        OwnerStamp(bits)
    }

    /// The 64-bit encoding.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The thread id (the process id for a main thread).
    pub const fn thread_id(self) -> u32 {
        (self.0 & Self::ID_MASK) as u32
    }

    /// Whether the stamped thread is certainly gone: no such thread, a zombie, or its id now
    /// belongs to a thread started at another time. Reads `/proc`: call it on slow paths only.
    pub fn is_dead(self) -> bool {
        is_dead(self.thread_id(), self.0 >> 32)
    }
}
