//! The header at the start of every typed segment, and its validation.
//!
//! ```text
//! offset  field            written by the creator before READY
//!   0     magic            b"IPCSHM\0\x01"
//!   8     abi_version      HEADER_ABI
//!  12     state            0 fresh -> INIT -> READY (atomic; openers wait for READY)
//!  16     kind_hash        FNV-1a of kind, kind version, element type name, pointer width,
//!                          endianness and a padding constant
//!  24     element_size, element_align (u32 each)
//!  32     capacity, slot_size, payload_len, total_len (u64 each)
//!  64     creator_pid (u32), reserved (u32), creator_start (u64, clock ticks after boot)
//!  80     creator_pidns (u64): inode of the creator's pid namespace, 0 if unknown; thread
//!         ids recorded in the segment (lock holders, claimers) are only meaningful there
//!  88..128 reserved (zero)
//! ```
//! The payload starts at [`HEADER_LEN`] (128 bytes, so hot words in it start a cache-line
//! pair of their own). A reader copies the header out once, validates every field, and keeps
//! private copies: nothing in it is read again.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};

/// Bytes before the payload of a typed segment.
pub const HEADER_LEN: usize = 128;
/// The magic number that opens every typed segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"IPCSHM\0\x01");
/// The version of this header format.
pub const HEADER_ABI: u32 = 2;

pub(crate) const STATE_INIT: u32 = 1;
pub(crate) const STATE_READY: u32 = 2;

/// A constant mixed into every layout hash; bump it when a padding rule changes.
const PADDING_RULES: u64 = 1;

/// What a typed segment holds: the identity that an opener must match.
///
/// Two programs agree on a layout when they were built from the same crate major version with
/// the same element type; `element` is `std::any::type_name`, so both sides should be built
/// by the same compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The object kind, e.g. `"ipc_sem::Semaphore"`.
    pub kind: &'static str,
    /// The kind's own format version (bump on any change to its payload layout).
    pub kind_version: u32,
    /// The element type's name (`std::any::type_name`), or `""`.
    pub element: &'static str,
    /// `size_of` the element.
    pub element_size: usize,
    /// `align_of` the element.
    pub element_align: usize,
    /// Element count or ring capacity (0 when not applicable).
    pub capacity: u64,
    /// Bytes per slot (0 when not applicable).
    pub slot_size: u64,
}

impl Layout {
    /// A layout for `kind` holding elements of type `T`, with capacity and slot size 0.
    pub fn of<T>(kind: &'static str, kind_version: u32) -> Layout {
        Layout {
            kind,
            kind_version,
            element: std::any::type_name::<T>(),
            element_size: std::mem::size_of::<T>(),
            element_align: std::mem::align_of::<T>(),
            capacity: 0,
            slot_size: 0,
        }
    }

    /// The same layout with this capacity.
    pub fn with_capacity(mut self, capacity: u64) -> Layout {
        self.capacity = capacity;
        self
    }

    /// The same layout with this slot size.
    pub fn with_slot_size(mut self, slot_size: u64) -> Layout {
        self.slot_size = slot_size;
        self
    }

    /// The hash that identifies kind, version, element type and platform.
    pub fn kind_hash(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(self.kind.as_bytes());
        h.write(&[0]);
        h.write(&self.kind_version.to_le_bytes());
        h.write(self.element.as_bytes());
        h.write(&[0]);
        h.write(&(usize::BITS as u64).to_le_bytes());
        h.write(&[u8::from(cfg!(target_endian = "little"))]);
        h.write(&PADDING_RULES.to_le_bytes());
        h.finish()
    }
}

/// FNV-1a, 64-bit: a layout fingerprint, not a security boundary.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The header as plain data, copied in and out of the mapping whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderFields {
    pub(crate) magic: u64,
    pub(crate) abi_version: u32,
    pub(crate) state: u32,
    pub(crate) kind_hash: u64,
    pub(crate) element_size: u32,
    pub(crate) element_align: u32,
    pub(crate) capacity: u64,
    pub(crate) slot_size: u64,
    pub(crate) payload_len: u64,
    pub(crate) total_len: u64,
    pub(crate) creator_pid: u32,
    pub(crate) reserved: u32,
    pub(crate) creator_start: u64,
    pub(crate) creator_pidns: u64,
    pub(crate) tail: [u64; 5],
}

const _: () = assert!(std::mem::size_of::<HeaderFields>() == HEADER_LEN);
// No padding: the size is exactly the sum of the fields' sizes (what `derive(Pod)` checks).
const _: () = assert!(
    std::mem::size_of::<HeaderFields>() == 8 + 4 + 4 + 8 + 4 + 4 + 8 * 4 + 4 + 4 + 8 + 8 + 8 * 5
);

// SAFETY: every bit pattern of `HeaderFields` is valid: it is `repr(C)`, made only of
// integers and an integer array, which are `Zeroable`, so all-zero bytes are a valid value.
#[allow(unsafe_code)]
unsafe impl Zeroable for HeaderFields {}
// SAFETY: `repr(C)`, `Copy`, `'static`, only integer fields (every bit pattern valid), and no
// padding (the size assert above), exactly what `derive(Pod)` would check.
#[allow(unsafe_code)]
unsafe impl Pod for HeaderFields {}
const _: () = assert!(std::mem::offset_of!(HeaderFields, state) == 12);

impl HeaderFields {
    /// The header a creator writes for `layout` (state READY: the creator publishes it last).
    pub(crate) fn new(
        layout: &Layout,
        payload_len: usize,
        creator_pid: u32,
        creator_start: u64,
        creator_pidns: u64,
    ) -> Result<Self> {
        let element_size = u32::try_from(layout.element_size)
            .map_err(|_| Error::InvalidSize(layout.element_size as u64, "element too large"))?;
        let element_align = u32::try_from(layout.element_align)
            .map_err(|_| Error::InvalidSize(layout.element_align as u64, "alignment too large"))?;
        Ok(HeaderFields {
            magic: MAGIC,
            abi_version: HEADER_ABI,
            state: STATE_READY,
            kind_hash: layout.kind_hash(),
            element_size,
            element_align,
            capacity: layout.capacity,
            slot_size: layout.slot_size,
            payload_len: payload_len as u64,
            total_len: (HEADER_LEN + payload_len) as u64,
            creator_pid,
            reserved: 0,
            creator_start,
            creator_pidns,
            tail: [0; 5],
        })
    }

    /// Checks a header copied from a segment of `file_len` bytes against `expected`.
    /// `expected.capacity` / `expected.slot_size` of 0 accept whatever the segment holds.
    pub(crate) fn validate(&self, expected: &Layout, file_len: u64) -> Result<()> {
        let mismatch = |field, expected: u64, found: u64| {
            Err(Error::LayoutMismatch {
                field,
                expected,
                found,
            })
        };
        if self.magic != MAGIC {
            return mismatch("magic", MAGIC, self.magic);
        }
        if self.abi_version != HEADER_ABI {
            return mismatch(
                "header abi version",
                HEADER_ABI.into(),
                self.abi_version.into(),
            );
        }
        if self.kind_hash != expected.kind_hash() {
            return mismatch(
                "kind (object type, version or element type)",
                expected.kind_hash(),
                self.kind_hash,
            );
        }
        if u64::from(self.element_size) != expected.element_size as u64 {
            return mismatch(
                "element size",
                expected.element_size as u64,
                self.element_size.into(),
            );
        }
        if u64::from(self.element_align) != expected.element_align as u64 {
            return mismatch(
                "element align",
                expected.element_align as u64,
                self.element_align.into(),
            );
        }
        if expected.capacity != 0 && self.capacity != expected.capacity {
            return mismatch("capacity", expected.capacity, self.capacity);
        }
        if expected.slot_size != 0 && self.slot_size != expected.slot_size {
            return mismatch("slot size", expected.slot_size, self.slot_size);
        }
        if self.total_len != file_len {
            return mismatch("total size", file_len, self.total_len);
        }
        if self.payload_len.checked_add(HEADER_LEN as u64) != Some(self.total_len) {
            return mismatch(
                "payload size",
                self.total_len.saturating_sub(HEADER_LEN as u64),
                self.payload_len,
            );
        }
        Ok(())
    }

    /// The layout the segment describes (with `expected`'s names, which the hash matched).
    pub(crate) fn layout(&self, expected: &Layout) -> Layout {
        Layout {
            capacity: self.capacity,
            slot_size: self.slot_size,
            ..*expected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Layout, HeaderFields) {
        let layout = Layout::of::<u64>("test::Thing", 1).with_capacity(8);
        let h = HeaderFields::new(&layout, 64, 1, 2, 3).unwrap();
        (layout, h)
    }

    #[test]
    fn a_good_header_validates_and_each_field_is_named() {
        let (layout, h) = sample();
        h.validate(&layout, 192).unwrap();
        let field = |e| match e {
            Err(Error::LayoutMismatch { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(HeaderFields { magic: 1, ..h }.validate(&layout, 192)),
            "magic"
        );
        assert_eq!(
            field(
                HeaderFields {
                    abi_version: 9,
                    ..h
                }
                .validate(&layout, 192)
            ),
            "header abi version"
        );
        let other = Layout::of::<u32>("test::Thing", 1);
        assert!(field(h.validate(&other, 192)).starts_with("kind"));
        let other_kind = Layout::of::<u64>("test::Other", 1);
        assert!(field(h.validate(&other_kind, 192)).starts_with("kind"));
        assert_eq!(field(h.validate(&layout.with_capacity(9), 192)), "capacity");
        assert_eq!(field(h.validate(&layout, 4096)), "total size");
        assert_eq!(
            field(
                HeaderFields {
                    payload_len: 1,
                    ..h
                }
                .validate(&layout, 192)
            ),
            "payload size"
        );
        // Capacity 0 in the expectation accepts the segment's own.
        h.validate(&layout.with_capacity(0), 192).unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN), len in any::<u64>()) {
            let (layout, _) = sample();
            let h: HeaderFields = bytemuck::pod_read_unaligned(&bytes);
            let _ = h.validate(&layout, len);
        }
    }
}
