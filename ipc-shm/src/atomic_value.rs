//! [`AtomicValue`]: a lock-free atomic shared between processes.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::header::Layout;
use crate::segment::{Segment, DEFAULT_OPEN_TIMEOUT};

mod sealed {
    pub trait Sealed {}
}

/// The atomic types an [`AtomicValue`] can hold: those whose every bit pattern is a valid
/// value and whose all-zero pattern is zero/`false`. Sealed.
pub trait SharedAtomic: sealed::Sealed + Send + Sync + 'static {
    /// The plain value type (`u64` for `AtomicU64`).
    type Value: Copy;
    /// Stores `v` (used once, before the segment is shared).
    fn init(&self, v: Self::Value);
}

macro_rules! shared_atomic {
    ($($a:ty => $v:ty),*) => {$(
        impl sealed::Sealed for $a {}
        impl SharedAtomic for $a {
            type Value = $v;
            fn init(&self, v: $v) {
                self.store(v, std::sync::atomic::Ordering::Release);
            }
        }
    )*};
}
shared_atomic!(AtomicU32 => u32, AtomicU64 => u64, AtomicI32 => i32, AtomicI64 => i64,
    AtomicUsize => usize, AtomicFlag => bool);

/// A boolean flag over an `AtomicU32` word, for [`AtomicValue`]: zero is `false`, any other
/// value `true`.
///
/// `std`'s `AtomicBool` is not offered in shared memory: a peer that writes any byte other
/// than 0 or 1 under it would make an invalid `bool`, undefined behaviour in this process.
/// Every bit pattern of an `AtomicFlag` is a valid value.
///
/// ```compile_fail
/// // AtomicBool is not a `SharedAtomic`.
/// let _ = ipc_shm::AtomicValue::<std::sync::atomic::AtomicBool>::new(false);
/// ```
///
/// ```
/// use ipc_shm::{AtomicFlag, AtomicValue};
/// use std::sync::atomic::Ordering;
///
/// let stop = AtomicValue::<AtomicFlag>::new(false)?;
/// assert!(!stop.swap(true, Ordering::SeqCst));
/// assert!(stop.load(Ordering::SeqCst));
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct AtomicFlag(AtomicU32);

impl AtomicFlag {
    /// A flag holding `v`.
    pub const fn new(v: bool) -> AtomicFlag {
        AtomicFlag(AtomicU32::new(v as u32))
    }

    /// Whether the flag is set (its word is non-zero).
    pub fn load(&self, order: Ordering) -> bool {
        self.0.load(order) != 0
    }

    /// Sets or clears the flag.
    pub fn store(&self, v: bool, order: Ordering) {
        self.0.store(u32::from(v), order);
    }

    /// Sets or clears the flag, returning whether it was set.
    pub fn swap(&self, v: bool, order: Ordering) -> bool {
        self.0.swap(u32::from(v), order) != 0
    }

    /// Stores `new` if the flag is `current`; returns the previous value in `Ok` on success,
    /// in `Err` on failure (as `AtomicBool::compare_exchange`).
    ///
    /// # Errors
    /// `Err(previous)` when the flag was not `current`.
    pub fn compare_exchange(
        &self,
        current: bool,
        new: bool,
        success: Ordering,
        failure: Ordering,
    ) -> Result<bool, bool> {
        let mut seen = self.0.load(failure);
        loop {
            if (seen != 0) != current {
                return Err(seen != 0);
            }
            match self
                .0
                .compare_exchange(seen, u32::from(new), success, failure)
            {
                Ok(_) => return Ok(current),
                Err(now) => seen = now,
            }
        }
    }
}

/// An atomic integer (or flag) in shared memory: the lock-free way to count across
/// processes. It dereferences to the atomic, so `fetch_add`, `load`, `store`,
/// `compare_exchange` and the rest work as on a local one.
///
/// Only atomics whose every bit pattern is valid are offered; a flag is an [`AtomicFlag`]
/// (a `u32` word), not an `AtomicBool`.
///
/// ```
/// use ipc_shm::AtomicValue;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let hits = AtomicValue::<AtomicU64>::new(0)?;
/// hits.fetch_add(2, Ordering::SeqCst);
/// assert_eq!(hits.load(Ordering::SeqCst), 2);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct AtomicValue<A: SharedAtomic> {
    seg: Segment,
    _a: std::marker::PhantomData<A>,
}

impl<A: SharedAtomic> fmt::Debug for AtomicValue<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicValue")
            .field("name", &self.seg.name())
            .finish_non_exhaustive()
    }
}

const KIND: &str = "ipc_shm::AtomicValue";

impl<A: SharedAtomic> AtomicValue<A> {
    fn create(name: Option<&str>, init: A::Value) -> Result<Self> {
        let layout = Layout::of::<A>(KIND, 1);
        let seg = Segment::create(&layout, std::mem::size_of::<A>(), name, |seg| {
            // SAFETY: the payload is 128-byte aligned and holds size_of::<A>() bytes; the
            // atomic types allowed by `SharedAtomic` are valid when zeroed.
            #[allow(unsafe_code)]
            let a = unsafe { &*seg.payload().as_ptr().cast::<A>() };
            a.init(init);
            Ok(())
        })?;
        Ok(AtomicValue {
            seg,
            _a: std::marker::PhantomData,
        })
    }

    /// An inherited atomic holding `init`.
    ///
    /// # Errors
    /// `Io`.
    pub fn new(init: A::Value) -> Result<Self> {
        Self::create(None, init)
    }

    /// A named atomic holding `init` (0600, `O_EXCL`; removed when this handle drops).
    ///
    /// # Errors
    /// `InvalidName`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, init: A::Value) -> Result<Self> {
        Self::create(Some(name), init)
    }

    /// Opens a named atomic of the same type.
    ///
    /// # Errors
    /// `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch`.
    pub fn open_named(name: &str) -> Result<Self> {
        let layout = Layout::of::<A>(KIND, 1);
        let seg = Segment::open_named(name, &layout, DEFAULT_OPEN_TIMEOUT, |_| {
            Ok(std::mem::size_of::<A>())
        })?;
        if seg.payload_len() < std::mem::size_of::<A>() {
            return Err(Error::Corrupted("atomic segment too small"));
        }
        Ok(AtomicValue {
            seg,
            _a: std::marker::PhantomData,
        })
    }

    /// The segment's name, or `None` for an inherited atomic.
    pub fn name(&self) -> Option<&str> {
        self.seg.name()
    }
}

impl<A: SharedAtomic> Deref for AtomicValue<A> {
    type Target = A;
    fn deref(&self) -> &A {
        // SAFETY: the payload holds an `A` (size checked at create/open), 128-byte aligned,
        // initialised; atomics tolerate concurrent access from other processes.
        #[allow(unsafe_code)]
        unsafe {
            &*self.seg.payload().as_ptr().cast::<A>()
        }
    }
}

impl<A: SharedAtomic> std::os::fd::AsFd for AtomicValue<A> {
    /// The segment's descriptor, to send to another process ([`AtomicValue::from_fd`]).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.seg.as_fd()
    }
}

/// Handle passing: an atomic travels to an unrelated process as a descriptor.
impl<A: SharedAtomic> AtomicValue<A> {
    /// Rebuilds an atomic from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`AtomicValue::open_named`] checks a name (an `AtomicU64` opened as an
    /// `AtomicU32` is `LayoutMismatch`). The rebuilt handle has no name and removes nothing
    /// when dropped.
    ///
    /// # Errors
    /// `NotMemoryFile`, `NotOwner`, `NotReady`, `LayoutMismatch`, `ForeignPidNamespace`,
    /// `Io`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<Self> {
        let layout = Layout::of::<A>(KIND, 1);
        let seg = Segment::from_fd(fd, &layout, |_| Ok(std::mem::size_of::<A>()))?;
        if seg.payload_len() < std::mem::size_of::<A>() {
            return Err(Error::Corrupted("atomic segment too small"));
        }
        Ok(AtomicValue {
            seg,
            _a: std::marker::PhantomData,
        })
    }

    /// Gives up this handle and returns its segment's descriptor, to send to another process.
    /// A name this handle created is removed now, as on drop.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.seg.into_fd()
    }
}
