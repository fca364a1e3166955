//! [`SharedMemory`]: a raw segment with no header, Python's `shared_memory.SharedMemory`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::header::MAGIC;
use crate::name;
use crate::segment::RawMapping;
use crate::sync::Deadline;

/// A block of raw bytes shared between processes, with no header: the counterpart of Python's
/// `multiprocessing.shared_memory.SharedMemory`, and interoperable with it.
///
/// - [`SharedMemory::new`]: an anonymous `memfd` segment, shared with children forked after
///   it is made (nothing has a name, so nothing can leak).
/// - [`SharedMemory::create_named`]: a named POSIX segment (`/dev/shm`), created `0600` with
///   `O_EXCL`, that unrelated processes, Python's included, can open by name. The creating
///   handle removes the name on drop; openers never do. For an unpredictable name (Python's
///   `SharedMemory(create=True, size=n)`), pass
///   [`lowlevel::name::generate()`](crate::lowlevel::name::generate).
/// - [`SharedMemory::open_named`]: attaches to a named segment owned by this user, whoever
///   made it (its size is the file's size).
///
/// The bytes are not synchronised: [`read_at`](SharedMemory::read_at) and
/// [`write_at`](SharedMemory::write_at) copy with relaxed atomic accesses (no data race, whole
/// words where aligned) and may observe a peer's concurrent write half-done. Use
/// [`crate::Array`] or a lock when that matters.
///
/// # Sharing with Python before 3.13: the resource tracker
/// Before Python 3.13, every `multiprocessing.shared_memory.SharedMemory(name=...)` registers
/// the segment with the process's resource tracker, also when it only *opens* an existing
/// segment, and the tracker unlinks every registered name when that Python process exits
/// (with a "leaked shared_memory objects" warning): CPython issue 82300. So a segment made
/// here with [`SharedMemory::create_named`] and opened by a Python 3.12 (or older) process
/// loses its name when that Python process ends: mappings that exist keep working, but later
/// `open_named` calls (from Rust or Python) get `NotFound`, and our creator's own unlink on
/// drop finds the name gone (which it tolerates). Python 3.13 added `track=False`
/// (`SharedMemory(name=..., track=False)`), which leaves the name alone; on older versions
/// the usual workaround is `multiprocessing.resource_tracker.unregister(shm._name,
/// "shared_memory")` right after opening. The reverse direction is unaffected: a segment
/// created by Python and opened here with [`SharedMemory::open_named`] is never unlinked by
/// us (only a creating handle unlinks).
///
/// ```
/// use ipc_shm::SharedMemory;
///
/// // Named, with a random `/ipc-<16 hex>` name.
/// let shm = SharedMemory::create_named(&ipc_shm::lowlevel::name::generate()?, 4096)?;
/// shm.write_at(0, b"hello")?;
/// let other = SharedMemory::open_named(shm.name().unwrap())?;
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), ipc_shm::Error>(())
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    mapping: RawMapping,
}

// SAFETY: the handle owns an fd and a shared mapping, neither tied to a thread; its methods
// only copy bytes in and out with atomic accesses.
#[allow(unsafe_code)]
unsafe impl Send for SharedMemory {}
// SAFETY: as above: `&SharedMemory` only reads immutable facts or copies bytes.
#[allow(unsafe_code)]
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// An anonymous segment of `size` zero bytes, inherited by children forked later.
    ///
    /// # Errors
    /// `InvalidSize` for 0; `Io` if `memfd_create`, `ftruncate` or `mmap` fail.
    pub fn new(size: usize) -> Result<SharedMemory> {
        Ok(SharedMemory {
            mapping: RawMapping::anonymous(size)?,
        })
    }

    /// A named segment of `size` zero bytes (`name` or `/name`; mode 0600, `O_EXCL`).
    ///
    /// # Errors
    /// `InvalidName`, `InvalidSize`, `AlreadyExists`, `Io`.
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        let name = name::normalize(name)?;
        Ok(SharedMemory {
            mapping: RawMapping::create_named(&name, size)?,
        })
    }

    /// Opens the named segment `name` (`name` or `/name`) if this user owns it; maps all of it.
    ///
    /// Segments of this workspace's typed objects (`Value`, `Array`, locks, semaphores,
    /// queues: they start with its header) are refused: raw writes could put bytes under a
    /// live guard or an invalid value under an atomic. Open those with their own type.
    ///
    /// # Errors
    /// `InvalidName`, `NotFound`, `NotOwner`, `NotReady` (still empty after 2 s),
    /// `TypedSegment`, `Io`.
    pub fn open_named(name: &str) -> Result<SharedMemory> {
        let name = name::normalize(name)?;
        let deadline = Deadline::after(Duration::from_secs(2));
        let mapping = RawMapping::open_named(&name, 1, deadline)?;
        if mapping.magic() == MAGIC {
            return Err(Error::TypedSegment(name));
        }
        Ok(SharedMemory { mapping })
    }

    /// The name as `shm_open` knows it (`/name`), or `None` for an anonymous segment.
    /// Python's `SharedMemory(name=...)` takes it with or without the slash.
    pub fn name(&self) -> Option<&str> {
        self.mapping.name()
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Always `false`: a segment has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.mapping.len() == 0
    }

    /// Whether this handle created the name and will remove it on drop.
    pub fn is_creator(&self) -> bool {
        self.mapping.is_creator()
    }

    /// Removes the name now (creator only; a no-op for openers and anonymous segments).
    /// Mappings already open keep working.
    ///
    /// # Errors
    /// `Io` if `shm_unlink` fails for a reason other than the name being gone.
    pub fn unlink(&mut self) -> Result<()> {
        self.mapping.unlink()
    }

    /// The first byte. Reads and writes through it race with other processes: synchronise.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mapping.ptr().as_ptr()
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                size: self.len(),
            }),
        }
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`, with relaxed atomic loads (whole
    /// words where aligned), so a peer writing at the same time is no data race; the copy may
    /// still mix its old and new bytes.
    ///
    /// # Errors
    /// `OutOfBounds` if the range does not fit.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: offset..offset + len lies inside the mapping (checked above), which lives
        // as long as `self`; this handle only ever accesses it atomically.
        #[allow(unsafe_code)]
        unsafe {
            crate::sync::load_bytes(self.as_ptr().add(offset), buf);
        }
        Ok(())
    }

    /// Copies `data` into the segment at `offset`, with relaxed atomic stores.
    ///
    /// # Errors
    /// `OutOfBounds` if the range does not fit.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read_at`, for a writable shared mapping.
        #[allow(unsafe_code)]
        unsafe {
            crate::sync::store_bytes(self.as_ptr().add(offset), data);
        }
        Ok(())
    }

    /// Reads a plain-data value at `offset` (any alignment), as [`read_at`](Self::read_at).
    ///
    /// ```
    /// let shm = ipc_shm::SharedMemory::new(64)?;
    /// shm.write(8, &[1.5f64, 2.5])?;
    /// assert_eq!(shm.read::<[f64; 2]>(8)?, [1.5, 2.5]);
    /// # Ok::<(), ipc_shm::Error>(())
    /// ```
    ///
    /// # Errors
    /// `OutOfBounds` if `size_of::<T>()` bytes do not fit at `offset`.
    pub fn read<T: bytemuck::Pod>(&self, offset: usize) -> Result<T> {
        let mut v = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Writes a plain-data value at `offset` (any alignment), as [`write_at`](Self::write_at).
    ///
    /// # Errors
    /// `OutOfBounds` if `size_of::<T>()` bytes do not fit at `offset`.
    pub fn write<T: bytemuck::Pod>(&self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }
}

impl AsRawFd for SharedMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.mapping.fd().as_raw_fd()
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mapping.fd()
    }
}

/// Handle passing: raw shared memory travels to an unrelated process as a descriptor.
impl SharedMemory {
    /// Maps a memory file from a descriptor another process sent (`SCM_RIGHTS`), with the
    /// checks of [`SharedMemory::open_named`]: a regular file (memfd or `shm_open` file)
    /// owned by this user, of at least one byte (waiting up to 2 s for its creator to size
    /// it), and not a typed segment of this workspace. Its size is the file's size. The
    /// handle has no name and removes nothing when dropped.
    ///
    /// # Errors
    /// `NotMemoryFile` (a pipe, a socket, ...), `NotOwner`, `NotReady` (still empty after
    /// 2 s), `TypedSegment`, `Io`. The descriptor is closed on error.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<SharedMemory> {
        let label = format!("fd {}", fd.as_raw_fd());
        let deadline = Deadline::after(Duration::from_secs(2));
        let mapping = RawMapping::from_fd(fd, 1, deadline)?;
        if mapping.magic() == MAGIC {
            return Err(Error::TypedSegment(label));
        }
        Ok(SharedMemory { mapping })
    }

    /// Gives up the mapping and returns the descriptor (the same one, not a duplicate), to
    /// send to another process. A name this handle created is removed now, as on drop.
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.mapping.into_fd()
    }
}
