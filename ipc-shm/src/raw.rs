//! [`RawValue`] and [`RawArray`]: shared `T`s with no lock (Python's `lock=False`).

use std::fmt;
use std::marker::PhantomData;

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::header::Layout;
use crate::segment::{Segment, DEFAULT_OPEN_TIMEOUT};

/// `len` elements of `T` at the start of a segment's payload, copied in and out with volatile
/// accesses: the common core of [`RawValue`] and [`RawArray`].
struct RawSlice<T: Pod> {
    seg: Segment,
    len: usize,
    _t: PhantomData<T>,
}

fn bytes_for<T>(len: usize) -> Result<usize> {
    std::mem::size_of::<T>()
        .checked_mul(len)
        .map(|b| b.max(1))
        .ok_or(Error::InvalidSize(len as u64, "too many elements"))
}

impl<T: Pod> RawSlice<T> {
    fn create(
        kind: &'static str,
        len: usize,
        name: Option<&str>,
        init: Option<&[T]>,
    ) -> Result<Self> {
        if len == 0 {
            return Err(Error::InvalidSize(0, "at least one element"));
        }
        let layout = Layout::of::<T>(kind, 1).with_capacity(len as u64);
        let seg = Segment::create(&layout, bytes_for::<T>(len)?, name, |seg| {
            if let Some(init) = init {
                // SAFETY: the payload holds `len` elements, is 128-byte aligned (enough for
                // any T the header accepts) and is unseen by others before READY.
                #[allow(unsafe_code)]
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        init.as_ptr(),
                        seg.payload().as_ptr().cast::<T>(),
                        len,
                    );
                }
            }
            Ok(())
        })?;
        Ok(RawSlice {
            seg,
            len,
            _t: PhantomData,
        })
    }

    fn open(kind: &'static str, name: &str, len: Option<usize>) -> Result<Self> {
        let layout = Layout::of::<T>(kind, 1).with_capacity(len.unwrap_or(0) as u64);
        let mut found = 0;
        let seg = Segment::open_named(name, &layout, DEFAULT_OPEN_TIMEOUT, |l| {
            found = usize::try_from(l.capacity)
                .map_err(|_| Error::InvalidSize(l.capacity, "capacity"))?;
            bytes_for::<T>(found)
        })?;
        if found == 0 {
            return Err(Error::LayoutMismatch {
                field: "capacity",
                expected: 1,
                found: 0,
            });
        }
        Ok(RawSlice {
            seg,
            len: found,
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut T {
        self.seg.payload().as_ptr().cast::<T>()
    }

    fn check(&self, index: usize) -> Result<()> {
        if index >= self.len {
            return Err(Error::IndexOutOfBounds {
                index,
                len: self.len,
            });
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<T> {
        self.check(index)?;
        // SAFETY: index < len, so the element lies in the payload, aligned; T is Pod so any
        // bits a peer left are a valid T; volatile because peers write without a lock.
        #[allow(unsafe_code)]
        Ok(unsafe { std::ptr::read_volatile(self.ptr().add(index)) })
    }

    fn set(&self, index: usize, value: T) -> Result<()> {
        self.check(index)?;
        // SAFETY: as in `get`; writing Pod bytes cannot break a peer's invariants.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::write_volatile(self.ptr().add(index), value);
        }
        Ok(())
    }
}

/// One `T` shared between processes with no lock: Python's `Value(typecode, lock=False)`.
///
/// Reads and writes are single volatile copies: a `T` wider than the machine word can be
/// seen half-written, and read-modify-write loses updates between processes (Python loses
/// about a third of `v.value += 1` this way). Use [`crate::Value`] or
/// [`crate::AtomicValue`] when that matters.
///
/// ```
/// let v = ipc_shm::RawValue::new(5u32)?;
/// v.set(6);
/// assert_eq!(v.get(), 6);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct RawValue<T: Pod> {
    inner: RawSlice<T>,
}

impl<T: Pod> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl<T: Pod> RawValue<T> {
    /// An inherited value holding `init`.
    ///
    /// # Errors
    /// `Io`.
    pub fn new(init: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            inner: RawSlice::create("ipc_shm::RawValue", 1, None, Some(&[init]))?,
        })
    }

    /// A named value holding `init` (0600, `O_EXCL`; removed when this handle drops).
    ///
    /// # Errors
    /// `InvalidName`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, init: T) -> Result<RawValue<T>> {
        Ok(RawValue {
            inner: RawSlice::create("ipc_shm::RawValue", 1, Some(name), Some(&[init]))?,
        })
    }

    /// Opens a named raw value of the same `T`.
    ///
    /// # Errors
    /// `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch`.
    pub fn open_named(name: &str) -> Result<RawValue<T>> {
        Ok(RawValue {
            inner: RawSlice::open("ipc_shm::RawValue", name, Some(1))?,
        })
    }

    /// A copy of the value (may be torn if a peer writes concurrently).
    pub fn get(&self) -> T {
        self.inner.get(0).unwrap_or_else(|_| T::zeroed())
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        let _ = self.inner.set(0, value);
    }

    /// The segment's name, or `None` for an inherited value.
    pub fn name(&self) -> Option<&str> {
        self.inner.seg.name()
    }
}

/// `len` elements of `T` shared with no lock: Python's `Array(typecode, n, lock=False)`.
///
/// ```
/// let a = ipc_shm::RawArray::from_slice(&[1u16, 2, 3])?;
/// a.set(0, 9)?;
/// assert_eq!(a.to_vec(), vec![9, 2, 3]);
/// # Ok::<(), ipc_shm::Error>(())
/// ```
pub struct RawArray<T: Pod> {
    inner: RawSlice<T>,
}

impl<T: Pod> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroed elements, inherited by children forked later.
    ///
    /// # Errors
    /// `InvalidSize` for 0; `Io`.
    pub fn new(len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            inner: RawSlice::create("ipc_shm::RawArray", len, None, None)?,
        })
    }

    /// An inherited array holding a copy of `init`.
    ///
    /// # Errors
    /// As [`RawArray::new`].
    pub fn from_slice(init: &[T]) -> Result<RawArray<T>> {
        Ok(RawArray {
            inner: RawSlice::create("ipc_shm::RawArray", init.len(), None, Some(init))?,
        })
    }

    /// `len` zeroed elements in a new named segment.
    ///
    /// # Errors
    /// `InvalidName`, `InvalidSize`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, len: usize) -> Result<RawArray<T>> {
        Ok(RawArray {
            inner: RawSlice::create("ipc_shm::RawArray", len, Some(name), None)?,
        })
    }

    /// Opens a named raw array of the same `T`.
    ///
    /// # Errors
    /// `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch`.
    pub fn open_named(name: &str) -> Result<RawArray<T>> {
        Ok(RawArray {
            inner: RawSlice::open("ipc_shm::RawArray", name, None)?,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always `false`.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// A copy of element `index`.
    ///
    /// # Errors
    /// `IndexOutOfBounds`.
    pub fn get(&self, index: usize) -> Result<T> {
        self.inner.get(index)
    }

    /// Writes element `index`.
    ///
    /// # Errors
    /// `IndexOutOfBounds`.
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.inner.set(index, value)
    }

    /// A copy of all elements, each read once.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len())
            .filter_map(|i| self.inner.get(i).ok())
            .collect()
    }

    /// Writes all elements from `src` (same length).
    ///
    /// # Errors
    /// `LengthMismatch`.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<()> {
        if src.len() != self.len() {
            return Err(Error::LengthMismatch {
                expected: self.len(),
                found: src.len(),
            });
        }
        for (i, v) in src.iter().enumerate() {
            self.inner.set(i, *v)?;
        }
        Ok(())
    }

    /// The first element; accesses through it race with peers.
    pub fn as_ptr(&self) -> *mut T {
        self.inner.ptr()
    }

    /// The segment's name, or `None` for an inherited array.
    pub fn name(&self) -> Option<&str> {
        self.inner.seg.name()
    }
}

/// Handle passing: the same checks as [`RawSlice::open`], from a descriptor.
impl<T: Pod> RawSlice<T> {
    fn from_fd(kind: &'static str, fd: std::os::fd::OwnedFd, len: Option<usize>) -> Result<Self> {
        let layout = Layout::of::<T>(kind, 1).with_capacity(len.unwrap_or(0) as u64);
        let mut found = 0;
        let seg = Segment::from_fd(fd, &layout, |l| {
            found = usize::try_from(l.capacity)
                .map_err(|_| Error::InvalidSize(l.capacity, "capacity"))?;
            bytes_for::<T>(found)
        })?;
        if found == 0 {
            return Err(Error::LayoutMismatch {
                field: "capacity",
                expected: 1,
                found: 0,
            });
        }
        Ok(RawSlice {
            seg,
            len: found,
            _t: PhantomData,
        })
    }
}

impl<T: Pod> std::os::fd::AsFd for RawValue<T> {
    /// The segment's descriptor, to send to another process ([`RawValue::from_fd`]).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.seg.as_fd()
    }
}

/// Handle passing: a raw value travels to an unrelated process as a descriptor.
impl<T: Pod> RawValue<T> {
    /// Rebuilds a raw value from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`RawValue::open_named`] checks a name. The rebuilt handle has no name and
    /// removes nothing when dropped. See [`Value::from_fd`](crate::Value::from_fd) for an
    /// example.
    ///
    /// # Errors
    /// `NotMemoryFile`, `NotOwner`, `NotReady`, `LayoutMismatch`, `ForeignPidNamespace`,
    /// `Io`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<RawValue<T>> {
        Ok(RawValue {
            inner: RawSlice::from_fd("ipc_shm::RawValue", fd, Some(1))?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor, to send to another process.
    /// A name this handle created is removed now, as on drop.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.seg.into_fd()
    }
}

impl<T: Pod> std::os::fd::AsFd for RawArray<T> {
    /// The segment's descriptor, to send to another process ([`RawArray::from_fd`]).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.seg.as_fd()
    }
}

/// Handle passing: a raw array travels to an unrelated process as a descriptor.
impl<T: Pod> RawArray<T> {
    /// Rebuilds a raw array from a descriptor another process sent (`SCM_RIGHTS`), checked
    /// exactly as [`RawArray::open_named`] checks a name; its length comes from the validated
    /// header. The rebuilt handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `NotMemoryFile`, `NotOwner`, `NotReady`, `LayoutMismatch`, `ForeignPidNamespace`,
    /// `Io`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<RawArray<T>> {
        Ok(RawArray {
            inner: RawSlice::from_fd("ipc_shm::RawArray", fd, None)?,
        })
    }

    /// Gives up this handle and returns its segment's descriptor, to send to another process.
    /// A name this handle created is removed now, as on drop.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.inner.seg.into_fd()
    }
}
