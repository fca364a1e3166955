//! Mappings of shared memory files, and the header-validated [`Segment`] every typed object
//! lives in.
//!
//! A mapping is always `MAP_SHARED` over a file descriptor: a `memfd` for inherited objects
//! (no name, nothing can leak) or a `shm_open` file for named ones. Never an anonymous
//! `MAP_PRIVATE` mapping, whose writes a forked child would keep to itself.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::header::{HeaderFields, Layout, HEADER_LEN, MAGIC, STATE_INIT, STATE_READY};
use crate::name;
use crate::sys::{self, Liveness};

/// The longest an opener waits, by default, for a creator to finish initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// A shared mapping of a whole memory file, with the file's name if it has one.
///
/// No `Drop` of its own: the mapping, the descriptor and the name each clean up after
/// themselves, so [`Mapping::into_fd`] can keep the descriptor and let the rest go.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: sys::Map,
    fd: OwnedFd,
    name: Option<String>,
    /// Set if this handle created the name: removes it on drop (or on `unlink`).
    unlinker: Option<Unlinker>,
}

/// The duty to remove a name this handle created. Only the creating process does it (a
/// forked child's copy of the handle never does).
#[derive(Debug)]
struct Unlinker {
    name: String,
    pid: u32,
}

impl Unlinker {
    /// Removes the name if this is the creating process; at most once.
    fn unlink(&mut self) -> Result<()> {
        if self.pid != sys::process_id() {
            return Ok(());
        }
        // Once only: a later drop of this value does nothing.
        self.pid = 0;
        match sys::shm_unlink(&self.name) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::io("shm_unlink", e)),
        }
    }
}

impl Drop for Unlinker {
    fn drop(&mut self) {
        let _ = self.unlink();
    }
}

impl Mapping {
    /// A new anonymous memory file of `len` zero bytes, mapped shared.
    pub(crate) fn anonymous(len: usize) -> Result<Mapping> {
        check_len(len)?;
        let fd = sys::memfd("ipc-shm", len).map_err(|e| Error::io("memfd_create", e))?;
        let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
        Ok(Mapping {
            map,
            fd,
            name: None,
            unlinker: None,
        })
    }

    /// A new named memory file of `len` zero bytes (0600, `O_EXCL`), mapped shared; this
    /// handle unlinks the name on drop. `name` is normalised by the caller.
    pub(crate) fn create_named(name: &str, len: usize) -> Result<Mapping> {
        check_len(len)?;
        let fd = sys::shm_create(name).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => Error::AlreadyExists(name.to_owned()),
            _ => Error::io("shm_open", e),
        })?;
        // From here on the name exists: build the handle first so any failure unlinks it.
        let unlink = NameGuard(name);
        sys::set_len(fd.as_fd(), len).map_err(|e| Error::io("ftruncate", e))?;
        sys::reserve(fd.as_fd(), len).map_err(|e| Error::io("posix_fallocate", e))?;
        let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
        std::mem::forget(unlink);
        Ok(Mapping {
            map,
            fd,
            name: Some(name.to_owned()),
            unlinker: Some(Unlinker {
                name: name.to_owned(),
                pid: sys::process_id(),
            }),
        })
    }

    /// Opens an existing named memory file owned by this user, waiting until `deadline` for
    /// it to reach at least `min_len` bytes, and maps all of it.
    pub(crate) fn open_named(
        name: &str,
        min_len: usize,
        deadline: crate::sync::Deadline,
    ) -> Result<Mapping> {
        let fd = sys::shm_open_existing(name, true).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => Error::NotFound(name.to_owned()),
            _ => Error::io("shm_open", e),
        })?;
        Self::open_fd(fd, Some(name.to_owned()), min_len, deadline)
    }

    /// Maps a memory file received as a descriptor (from another process, through
    /// `SCM_RIGHTS`), with the same checks as [`Mapping::open_named`]. The mapping has no
    /// name and never unlinks anything.
    pub(crate) fn from_fd(
        fd: OwnedFd,
        min_len: usize,
        deadline: crate::sync::Deadline,
    ) -> Result<Mapping> {
        Self::open_fd(fd, None, min_len, deadline)
    }

    /// The one path every opened memory file takes, by name or by descriptor: it must be a
    /// regular file (memfd or `shm_open` file) owned by this user; waits until `deadline` for
    /// it to reach at least `min_len` bytes (a creator sizes it after creating it), seals it
    /// against shrinking where the kernel allows, and maps all of it.
    fn open_fd(
        fd: OwnedFd,
        name: Option<String>,
        min_len: usize,
        deadline: crate::sync::Deadline,
    ) -> Result<Mapping> {
        let label = || name.clone().unwrap_or_else(|| fd_label(fd.as_fd()));
        loop {
            let facts = sys::file_facts(fd.as_fd()).map_err(|e| Error::io("fstat", e))?;
            if !facts.is_regular() {
                return Err(Error::NotMemoryFile {
                    fd: fd.as_raw_fd(),
                    file_type: facts.file_type,
                });
            }
            let me = sys::effective_uid();
            if facts.owner_uid != me {
                return Err(Error::NotOwner {
                    name: label(),
                    owner: facts.owner_uid,
                    me,
                });
            }
            if facts.len >= min_len as u64 && facts.len > 0 {
                let len = usize::try_from(facts.len)
                    .map_err(|_| Error::InvalidSize(facts.len, "too large to map"))?;
                sys::seal_shrink_if_possible(fd.as_fd());
                let map = sys::map_shared(fd.as_fd(), len).map_err(|e| Error::io("mmap", e))?;
                return Ok(Mapping {
                    map,
                    fd,
                    name,
                    unlinker: None,
                });
            }
            // The creator has not set the length yet.
            if deadline.is_expired() {
                return Err(Error::NotReady(label()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Gives up the mapping and keeps the descriptor. A name this handle created is removed
    /// now, as on drop: the memory lives on in the descriptor.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let Mapping {
            map, fd, unlinker, ..
        } = self;
        drop(map);
        drop(unlinker);
        fd
    }

    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.map.ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The first 8 bytes as a `u64` (a typed segment's magic), read atomically: a creator
    /// may be writing them.
    pub(crate) fn magic(&self) -> u64 {
        if self.len() < 8 {
            return 0;
        }
        // SAFETY: a mapping of at least 8 bytes is page-aligned, so offset 0 is an aligned
        // u64 inside it; atomics are valid for every bit pattern.
        #[allow(unsafe_code)]
        unsafe { &*self.ptr().as_ptr().cast::<std::sync::atomic::AtomicU64>() }
            .load(Ordering::Relaxed)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn is_creator(&self) -> bool {
        self.unlinker.is_some()
    }

    /// Removes the name now (creator only; idempotent). The memory stays mapped for every
    /// process that has it.
    pub(crate) fn unlink(&mut self) -> Result<()> {
        match self.unlinker.take() {
            Some(mut u) => u.unlink(),
            None => Ok(()),
        }
    }
}

/// How an unnamed segment opened from a descriptor is named in errors: `fd <n>`.
fn fd_label(fd: BorrowedFd<'_>) -> String {
    format!("fd {}", fd.as_raw_fd())
}

/// Unlinks a just-created name if creation fails half-way.
struct NameGuard<'a>(&'a str);

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        let _ = sys::shm_unlink(self.0);
    }
}

fn check_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::InvalidSize(0, "size must be at least 1 byte"));
    }
    if isize::try_from(len).is_err() {
        return Err(Error::InvalidSize(len as u64, "too large to map"));
    }
    Ok(())
}

/// A shared segment that starts with a validated [header](crate::header): the storage of every
/// typed object in the workspace (`Value`, `Array`, semaphores, locks, queues).
///
/// Made by [`Segment::create`] (inherited through `fork` when `name` is `None`, else a named
/// `shm_open` segment), [`Segment::open_named`] or [`Segment::from_fd`], which both check
/// owner, size and layout before returning. The payload starts 128-byte aligned at [`Segment::payload`].
///
/// `Segment` hands out raw pointers only: the object built on it decides how its payload is
/// shared, and documents why each access is sound.
#[derive(Debug)]
pub struct Segment {
    mapping: Mapping,
    layout: Layout,
    payload_len: usize,
}

// SAFETY: a `Segment` owns a file descriptor and a shared mapping; neither is tied to a
// thread. The payload is accessed only through raw pointers whose users synchronise.
#[allow(unsafe_code)]
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only exposes immutable facts and raw pointers.
#[allow(unsafe_code)]
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a segment with `payload_len` zeroed payload bytes for `layout`, runs `init` on
    /// it (before any opener may look at the payload), then publishes it as READY.
    ///
    /// `name`: `None` for an inherited (memfd) segment; `Some(name)` for a named one created
    /// 0600 with `O_EXCL`, unlinked when this handle drops (or by [`Segment::unlink`]).
    ///
    /// # Errors
    /// `InvalidName`, `InvalidSize` (zero or too large), `AlreadyExists`, `Io`, or whatever
    /// `init` returns.
    pub fn create(
        layout: &Layout,
        payload_len: usize,
        name: Option<&str>,
        init: impl FnOnce(&Segment) -> Result<()>,
    ) -> Result<Segment> {
        if layout.element_align > HEADER_LEN {
            return Err(Error::InvalidSize(
                layout.element_align as u64,
                "alignment above 128 bytes",
            ));
        }
        if payload_len == 0 {
            return Err(Error::InvalidSize(0, "payload must be at least 1 byte"));
        }
        let total = HEADER_LEN
            .checked_add(payload_len)
            .ok_or(Error::InvalidSize(payload_len as u64, "too large to map"))?;
        let mapping = match name {
            None => Mapping::anonymous(total)?,
            Some(n) => Mapping::create_named(&name::normalize(n)?, total)?,
        };
        let pid = sys::process_id();
        let start = match sys::liveness(pid) {
            Liveness::Alive { start_time } => start_time,
            Liveness::Dead => 0,
        };
        let pidns = sys::pid_namespace();
        if pidns == 0 {
            // Without a /proc of our own we cannot tell which pid namespace our peers are in.
            crate::sync::owner::liveness_unverifiable();
        }
        let fields = HeaderFields::new(layout, payload_len, pid, start, pidns)?;
        let seg = Segment {
            mapping,
            layout: *layout,
            payload_len,
        };
        seg.state().store(STATE_INIT, Ordering::Relaxed);
        let header = bytemuck::bytes_of(&fields);
        let base = seg.mapping.ptr().as_ptr();
        // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned; openers read the
        // header only with atomic loads (and trust it only after READY), so atomic stores of
        // everything but the state word (bytes 12..16, stored through its atomic) race nothing.
        #[allow(unsafe_code)]
        unsafe {
            crate::sync::store_bytes(base, &header[..12]);
            crate::sync::store_bytes(base.add(16), &header[16..]);
        }
        ipc_failpoints::failpoint!("shm.segment.created");
        init(&seg)?;
        // SYNC POINT: Release publishes the header and the initialised payload; openers load
        // the state with Acquire in `open_named`.
        seg.state().store(STATE_READY, Ordering::Release);
        Ok(seg)
    }

    /// Opens the named segment `name`, checking owner, size and every header field against
    /// `expected` (`capacity`/`slot_size` of 0 accept the segment's own), and waiting up to
    /// `timeout` for its creator to finish initialising. `payload_len_for` computes, from the
    /// segment's layout, how many payload bytes it must have.
    ///
    /// # Errors
    /// `InvalidName`, `NotFound`, `NotOwner`, `NotReady`, `LayoutMismatch`, `Io`.
    pub fn open_named(
        name: &str,
        expected: &Layout,
        timeout: Duration,
        payload_len_for: impl FnOnce(&Layout) -> Result<usize>,
    ) -> Result<Segment> {
        let name = name::normalize(name)?;
        let deadline = crate::sync::Deadline::after(timeout);
        let mapping = Mapping::open_named(&name, HEADER_LEN, deadline)?;
        Self::open_mapping(mapping, name, expected, deadline, payload_len_for)
    }

    /// Rebuilds a segment from a descriptor another process sent (`SCM_RIGHTS`, e.g.
    /// `ipc_pipe`'s `send_fds`) or that [`Segment::into_fd`] gave up, with exactly the checks
    /// of [`Segment::open_named`]: a regular file (memfd or `shm_open` file, else
    /// `NotMemoryFile`) owned by this user, its header READY (waiting up to
    /// [`DEFAULT_OPEN_TIMEOUT`] for a creator still initialising it), every header field
    /// against `expected`, the creator's pid namespace, and the payload size that
    /// `payload_len_for` computes from the segment's layout.
    ///
    /// The segment has no name ([`Segment::name`] is `None`) and never unlinks anything,
    /// whatever the sender's handle was. A memfd received without `F_SEAL_SHRINK` is sealed
    /// against shrinking here (when it allows sealing), so its sender cannot truncate it under
    /// this mapping later.
    ///
    /// # Errors
    /// `NotMemoryFile` (a pipe, socket, directory, device), `NotOwner`, `NotReady`,
    /// `LayoutMismatch`, `ForeignPidNamespace`, `Io` (`mmap` refuses a read-only descriptor).
    /// The descriptor is closed on every error.
    pub fn from_fd(
        fd: OwnedFd,
        expected: &Layout,
        payload_len_for: impl FnOnce(&Layout) -> Result<usize>,
    ) -> Result<Segment> {
        let label = fd_label(fd.as_fd());
        let deadline = crate::sync::Deadline::after(DEFAULT_OPEN_TIMEOUT);
        let mapping = Mapping::from_fd(fd, HEADER_LEN, deadline)?;
        Self::open_mapping(mapping, label, expected, deadline, payload_len_for)
    }

    /// Gives up the mapping and returns the segment's descriptor (the same descriptor, not a
    /// duplicate), to send to another process, which rebuilds the object with
    /// [`Segment::from_fd`]. If this handle created a name, the name is removed now, as on
    /// drop: the object lives on in the descriptor and in every other process's mapping.
    pub fn into_fd(self) -> OwnedFd {
        self.mapping.into_fd()
    }

    /// The header checks every open passes, by name or by descriptor: READY within
    /// `deadline`, then the header copy against `expected`, the pid namespace and the payload
    /// size. `name` names the segment in errors (its name, or `fd <n>`).
    fn open_mapping(
        mapping: Mapping,
        name: String,
        expected: &Layout,
        deadline: crate::sync::Deadline,
        payload_len_for: impl FnOnce(&Layout) -> Result<usize>,
    ) -> Result<Segment> {
        let seg_state = |m: &Mapping| -> &AtomicU32 {
            // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned, so offset 12
            // is an aligned u32 inside it; atomics are valid for any bit pattern.
            #[allow(unsafe_code)]
            unsafe {
                &*m.ptr().as_ptr().add(12).cast::<AtomicU32>()
            }
        };
        let magic = |m: &Mapping| -> u64 { m.magic() };
        // SYNC POINT: Acquire pairs with the creator's Release store of READY.
        while seg_state(&mapping).load(Ordering::Acquire) != STATE_READY {
            let found = magic(&mapping);
            // Not ours at all (a raw segment, another program's file): say so now; a zero
            // magic may still be a creator that has not written its header yet.
            if found != 0 && found != MAGIC {
                return Err(Error::LayoutMismatch {
                    field: "magic",
                    expected: MAGIC,
                    found,
                });
            }
            if deadline.is_expired() {
                return Err(match found {
                    MAGIC => Error::NotReady(name),
                    _ => Error::LayoutMismatch {
                        field: "magic",
                        expected: MAGIC,
                        found,
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: the mapping holds at least HEADER_LEN bytes; `HeaderFields` is Pod, so any
        // bytes a peer wrote are a valid value; the copy is atomic because a peer may write
        // concurrently, and from here on only this private copy is used.
        #[allow(unsafe_code)]
        let fields: HeaderFields = unsafe { crate::sync::load_pod(mapping.ptr().as_ptr()) };
        fields.validate(expected, mapping.len() as u64)?;
        let mine = sys::pid_namespace();
        if fields.creator_pidns != 0 && mine != 0 && fields.creator_pidns != mine {
            return Err(Error::ForeignPidNamespace {
                name,
                creator: fields.creator_pidns,
                mine,
            });
        }
        if fields.creator_pidns == 0 || mine == 0 {
            crate::sync::owner::liveness_unverifiable();
        }
        let layout = fields.layout(expected);
        let need = payload_len_for(&layout)?;
        if need as u64 != fields.payload_len {
            return Err(Error::LayoutMismatch {
                field: "payload size",
                expected: need as u64,
                found: fields.payload_len,
            });
        }
        Ok(Segment {
            mapping,
            layout,
            payload_len: need,
        })
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: offset 12 of a page-aligned mapping of at least HEADER_LEN bytes is an
        // aligned u32; atomics are valid for every bit pattern.
        #[allow(unsafe_code)]
        unsafe {
            &*self.mapping.ptr().as_ptr().add(12).cast::<AtomicU32>()
        }
    }

    /// The first payload byte, 128-byte aligned; [`Segment::payload_len`] bytes follow.
    pub fn payload(&self) -> NonNull<u8> {
        // SAFETY: the mapping is HEADER_LEN + payload_len bytes long, so the payload start is
        // inside it (payload_len >= 1).
        #[allow(unsafe_code)]
        unsafe {
            self.mapping.ptr().add(HEADER_LEN)
        }
    }

    /// The payload length in bytes (a private copy, validated at open).
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The layout this segment holds (with the capacity and slot size read at open).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The segment's name (`/name`), or `None` for an inherited one.
    pub fn name(&self) -> Option<&str> {
        self.mapping.name()
    }

    /// Whether this handle created the name (and so removes it on drop).
    pub fn is_creator(&self) -> bool {
        self.mapping.is_creator()
    }

    /// Removes the name now, if this handle created it; handles that are open keep working.
    ///
    /// # Errors
    /// `Io` if `shm_unlink` fails for a reason other than the name being gone already.
    pub fn unlink(&mut self) -> Result<()> {
        self.mapping.unlink()
    }
}

impl AsRawFd for Segment {
    fn as_raw_fd(&self) -> RawFd {
        self.mapping.fd().as_raw_fd()
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mapping.fd()
    }
}

pub(crate) use Mapping as RawMapping;

/// Maps a named segment read-only just to read its header (for `sweep`).
pub(crate) fn read_header_of(name: &str) -> io::Result<Option<HeaderFields>> {
    let fd = sys::shm_open_existing(name, false)?;
    let facts = sys::file_facts(fd.as_fd())?;
    if facts.owner_uid != sys::effective_uid() || facts.len < HEADER_LEN as u64 {
        return Ok(None);
    }
    let map = sys::map_shared_read_only(fd.as_fd(), HEADER_LEN)?;
    // SAFETY: the mapping is HEADER_LEN readable bytes; `HeaderFields` is Pod; the copy is
    // atomic because its owner may write concurrently.
    #[allow(unsafe_code)]
    let fields: HeaderFields = unsafe { crate::sync::load_pod(map.as_ptr()) };
    Ok(Some(fields))
}
