//! The storage shared by [`crate::Value`] and [`crate::Array`]: a segment whose payload is a
//! [`RawLock`] followed by `len` elements of `T`.
//!
//! ```text
//! payload + 0            RawLock (16 bytes), then padding
//! payload + DATA_OFFSET  [T; len]   (DATA_OFFSET = max(16, align_of::<T>()))
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{Error, LockError, LockTimeoutError, Result, TryLockError};
use crate::header::Layout;
use crate::segment::{Segment, DEFAULT_OPEN_TIMEOUT};
use crate::sync::{Deadline, RawLock};

pub(crate) struct LockedSlice<T: Pod> {
    seg: Segment,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> std::fmt::Debug for LockedSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockedSlice")
            .field("segment", &self.seg)
            .field("len", &self.len)
            .finish()
    }
}

/// Elements start right after the 16-byte lock (or at their alignment), so a small `Value`
/// shares the lock's cache line: a contended `update` moves one line between cores, not two.
const fn data_offset<T>() -> usize {
    let a = std::mem::align_of::<T>();
    if a > 16 {
        a
    } else {
        16
    }
}

fn payload_len<T>(len: usize) -> Result<usize> {
    std::mem::size_of::<T>()
        .checked_mul(len)
        .and_then(|b| b.checked_add(data_offset::<T>()))
        .ok_or(Error::InvalidSize(len as u64, "too many elements"))
}

impl<T: Pod> LockedSlice<T> {
    pub(crate) fn create(
        kind: &'static str,
        len: usize,
        name: Option<&str>,
        init: Option<&[T]>,
    ) -> Result<Self> {
        let layout = Layout::of::<T>(kind, 1).with_capacity(len as u64);
        let bytes = payload_len::<T>(len)?;
        let seg = Segment::create(&layout, bytes, name, |seg| {
            if let Some(init) = init {
                let dst = seg.payload().as_ptr().wrapping_add(data_offset::<T>());
                // SAFETY: the payload has room for `len` elements at `data_offset` (computed by
                // `payload_len`), is aligned for T (payload is 128-aligned, offset a multiple
                // of align_of T), and nobody else sees it before READY.
                #[allow(unsafe_code)]
                unsafe {
                    std::ptr::copy_nonoverlapping(init.as_ptr(), dst.cast::<T>(), len);
                }
            }
            Ok(())
        })?;
        Ok(LockedSlice {
            seg,
            len,
            _t: PhantomData,
        })
    }

    pub(crate) fn open(kind: &'static str, name: &str, len: Option<usize>) -> Result<Self> {
        let layout = Layout::of::<T>(kind, 1).with_capacity(len.unwrap_or(0) as u64);
        let mut found = 0usize;
        let seg = Segment::open_named(name, &layout, DEFAULT_OPEN_TIMEOUT, |l| {
            found = usize::try_from(l.capacity)
                .map_err(|_| Error::InvalidSize(l.capacity, "capacity"))?;
            payload_len::<T>(found)
        })?;
        Ok(LockedSlice {
            seg,
            len: found,
            _t: PhantomData,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn segment_mut(&mut self) -> &mut Segment {
        &mut self.seg
    }

    pub(crate) fn raw_lock(&self) -> &RawLock {
        // SAFETY: the payload starts with 16 bytes reserved for the lock, 128-byte aligned;
        // `RawLock` is atomics only, valid for every bit pattern, all-zero = free.
        #[allow(unsafe_code)]
        unsafe {
            &*self.seg.payload().as_ptr().cast::<RawLock>()
        }
    }

    /// The first element. Dereferencing requires holding the lock.
    pub(crate) fn data(&self) -> *mut T {
        self.seg
            .payload()
            .as_ptr()
            .wrapping_add(data_offset::<T>())
            .cast::<T>()
    }

    fn held(&self) -> Held<'_, T> {
        Held {
            slice: self,
            _not_send: PhantomData,
        }
    }

    /// Locks, waiting as long as a live holder keeps it; the `Held` token unlocks on drop.
    pub(crate) fn lock(&self) -> Result<Held<'_, T>, LockError<Held<'_, T>>> {
        match self.raw_lock().lock() {
            Ok(()) => Ok(self.held()),
            Err(e) => Err(e.map(|()| self.held())),
        }
    }

    pub(crate) fn try_lock(&self) -> Result<Held<'_, T>, TryLockError<Held<'_, T>>> {
        match self.raw_lock().try_lock() {
            Ok(()) => Ok(self.held()),
            Err(e) => Err(e.map(|()| self.held())),
        }
    }

    pub(crate) fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Held<'_, T>, LockTimeoutError<Held<'_, T>>> {
        match self.raw_lock().lock_until(Deadline::after(timeout)) {
            Ok(()) => Ok(self.held()),
            Err(e) => Err(e.map(|()| self.held())),
        }
    }

    /// [`LockedSlice::lock`] as a future (feature `async`).
    #[cfg(feature = "async")]
    pub(crate) async fn lock_async(&self) -> Result<Held<'_, T>, LockError<Held<'_, T>>> {
        match self.raw_lock().lock_async().await {
            Ok(()) => Ok(self.held()),
            Err(e) => Err(e.map(|()| self.held())),
        }
    }

    /// [`LockedSlice::lock_timeout`] as a future (feature `async`).
    #[cfg(feature = "async")]
    pub(crate) async fn lock_timeout_async(
        &self,
        timeout: Duration,
    ) -> Result<Held<'_, T>, LockTimeoutError<Held<'_, T>>> {
        match self.raw_lock().lock_timeout_async(timeout).await {
            Ok(()) => Ok(self.held()),
            Err(e) => Err(e.map(|()| self.held())),
        }
    }

    /// Runs `f` on the elements with the lock held; an `OwnerDied` take-over is reported as
    /// `Err(OwnerDied)` without running `f`, leaving the lock poisoned.
    pub(crate) fn with_locked<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        match self.lock() {
            Ok(mut held) => Ok(f(held.as_mut_slice())),
            // Dropping the token without `mark_consistent` poisons the lock.
            Err(LockError::OwnerDied(_held)) => Err(Error::OwnerDied),
            Err(e) => Err(e.into()),
        }
    }
}

/// Proof that this thread holds a [`LockedSlice`]'s lock; unlocks on drop. Not `Send`: the
/// lock records the holding thread. `ValueGuard` and `ArrayGuard` wrap it.
pub(crate) struct Held<'a, T: Pod> {
    slice: &'a LockedSlice<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> Held<'_, T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `Held` exists only while this thread holds the lock, so no correct peer
        // touches the elements; the pointer covers `len` initialised Pod elements.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.slice.data(), self.slice.len)
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference in this process.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.slice.data(), self.slice.len)
        }
    }

    pub(crate) fn mark_consistent(&self) {
        // Cannot fail: this thread holds the lock.
        let _ = self.slice.raw_lock().mark_consistent();
    }
}

impl<T: Pod> Drop for Held<'_, T> {
    fn drop(&mut self) {
        // Cannot fail: this thread holds the lock (`Held` is not `Send`).
        let _ = self.slice.raw_lock().unlock();
    }
}

/// Handle passing: the same checks as [`LockedSlice::open`], from a descriptor.
impl<T: Pod> LockedSlice<T> {
    /// Rebuilds the storage from a descriptor ([`Segment::from_fd`]); `len` as in `open`.
    pub(crate) fn from_fd(
        kind: &'static str,
        fd: std::os::fd::OwnedFd,
        len: Option<usize>,
    ) -> Result<Self> {
        let layout = Layout::of::<T>(kind, 1).with_capacity(len.unwrap_or(0) as u64);
        let mut found = 0usize;
        let seg = Segment::from_fd(fd, &layout, |l| {
            found = usize::try_from(l.capacity)
                .map_err(|_| Error::InvalidSize(l.capacity, "capacity"))?;
            payload_len::<T>(found)
        })?;
        Ok(LockedSlice {
            seg,
            len: found,
            _t: PhantomData,
        })
    }

    /// Gives up the mapping and keeps the descriptor ([`Segment::into_fd`]).
    pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
        self.seg.into_fd()
    }
}
