//! How a [`Queue`](crate::Queue) message sits in its slot: a little-endian `u32` length word,
//! then that many bytes of [postcard](https://docs.rs/postcard) encoding.
//!
//! **Byte vectors take a shortcut with the same bytes on the wire.** serde hands a `Vec<u8>`
//! to any format one element at a time, a call per byte each way (about 1.5 ns a byte here,
//! most of the time of a 1 KiB message). For a queue of exactly `Vec<u8>` the codec writes
//! what postcard would, its varint length and then the bytes, with one copy, and reads them
//! back with one copy into the returned vector. A peer without the shortcut decodes the
//! same bytes unchanged, so the slot layout and the layout hash stay as they were.
//! `Vec<u8>` inside another type goes through serde; `#[serde(with = "serde_bytes")]` gives
//! such a field postcard's own bulk path.
//!
//! A get copies the message out of the slot while it holds the claim, and decodes only the
//! copy, after releasing the slot: nothing a peer may write is decoded in place.
//!
//! A message larger than a slot (a queue whose `slot_size` is below its
//! `max_message_size`) is the same bytes laid across consecutive slots (`ring::span`): the
//! length word at the start of the first, the encoding continuing through the next ones.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::ring::{Sink, Source};

/// Bytes of the length word before each encoded message.
pub(crate) const LEN_WORD: usize = 4;
/// Messages up to this size are copied out of the slot onto the stack (no allocation).
pub(crate) const INLINE: usize = 256;
/// The smaller stack scratch buffer of an encoding.
const SMALL_SCRATCH: usize = 32;
/// The longest varint postcard writes for a length (a 64-bit `usize`).
const MAX_VARINT: usize = 10;

/// Proof that `T` is `Vec<u8>`: only [`ByteVec::check`] makes one, and only when the types
/// are the same, so its casts are sound.
#[derive(Clone, Copy)]
struct ByteVec<T>(PhantomData<fn(T) -> T>);

impl<T> ByteVec<T> {
    /// The proof, if `T` is `Vec<u8>`. `typeid` compares types up to lifetimes, and
    /// `Vec<u8>` has none, so equal ids mean the very same type (`T` need not be `'static`,
    /// which `std::any::TypeId` would require of the queue's element type).
    #[inline]
    fn check() -> Option<ByteVec<T>> {
        (typeid::of::<T>() == typeid::of::<Vec<u8>>()).then_some(ByteVec(PhantomData))
    }

    /// `v` as the byte vector it is.
    #[inline]
    fn as_bytes<'a>(&self, v: &'a T) -> &'a Vec<u8> {
        // SAFETY: `T` is `Vec<u8>` (the proof), so this is the same reference, same
        // lifetime, same layout.
        unsafe { &*std::ptr::from_ref(v).cast::<Vec<u8>>() }
    }

    /// `v` as the `T` it is.
    #[inline]
    fn cast_vec(&self, v: Vec<u8>) -> T {
        let v = ManuallyDrop::new(v);
        // SAFETY: `T` is `Vec<u8>` (the proof); the read moves the vector out exactly once,
        // as `ManuallyDrop` keeps the original from being dropped.
        unsafe { std::ptr::from_ref::<Vec<u8>>(&v).cast::<T>().read() }
    }
}

/// The size of `v`'s encoding, without writing it (so a message too large for a slot is
/// refused before it takes one).
pub(crate) fn encoded_len<T: Serialize>(v: &T) -> Result<usize, postcard::Error> {
    match ByteVec::<T>::check() {
        Some(proof) => {
            let bytes = proof.as_bytes(v);
            Ok(varint_len(bytes.len())? + bytes.len())
        }
        None => postcard::serialize_with_flavor(v, postcard::ser_flavors::Size::default()),
    }
}

/// The size of postcard's varint for the length `n`.
fn varint_len(n: usize) -> Result<usize, postcard::Error> {
    postcard::serialize_with_flavor(&(n as u64), postcard::ser_flavors::Size::default())
}

/// Writes `v`'s length word and encoding into the claimed slot (or span of slots). An encoding that does not
/// fit is an `Encode` error (the caller then publishes a tombstone). The slot is written
/// with atomic stores only ([`SlotWriter::store`]): postcard encodes into a scratch buffer
/// of the caller's (the stack up to [`INLINE`] bytes of room, else a per-thread buffer), and
/// a byte vector's bytes go from the vector to the slot in one copy.
///
/// `len` is the size of the encoding as [`encoded_len`] found it (the scratch buffer's size;
/// a `Serialize` that writes more fails with `Encode`).
pub(crate) fn encode_into<T: Serialize>(v: &T, len: usize, mut w: impl Sink) -> Result<(), Error> {
    let room = w.len() - LEN_WORD;
    let full = || Error::encode(postcard::Error::SerializeBufferFull);
    let used = match ByteVec::<T>::check() {
        Some(proof) => {
            let bytes = proof.as_bytes(v);
            let mut head = [0u8; MAX_VARINT];
            let h = postcard::to_slice(&(bytes.len() as u64), &mut head)
                .map_err(Error::encode)?
                .len();
            let end = h
                .checked_add(bytes.len())
                .filter(|&e| e <= room)
                .ok_or_else(full)?;
            if !(w.store(LEN_WORD, &head[..h]) && w.store(LEN_WORD + h, bytes)) {
                return Err(full());
            }
            end
        }
        None => with_scratch(len.min(room), |buf| {
            let used = encode_body(v, buf)?;
            if w.store(LEN_WORD, &buf[..used]) {
                Ok(used)
            } else {
                Err(full())
            }
        })?,
    };
    let len = u32::try_from(used).map_err(|_| Error::Corrupted("message length"))?;
    if !w.store(0, &len.to_le_bytes()) {
        return Err(full());
    }
    Ok(())
}

std::thread_local! {
    /// The scratch buffer of encodings longer than [`INLINE`], kept per thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `room` bytes: on the stack if small (two sizes, so a
/// small message does not zero a large buffer), else the thread's buffer (a fresh one if it
/// is in use: a `Serialize` that puts into a queue itself).
#[inline]
fn with_scratch<R>(room: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    if room <= SMALL_SCRATCH {
        let mut buf = [0u8; SMALL_SCRATCH];
        return f(&mut buf[..room]);
    }
    if room <= INLINE {
        let mut buf = [0u8; INLINE];
        return f(&mut buf[..room]);
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < room {
                buf.resize(room, 0);
            }
            f(&mut buf[..room])
        }
        Err(_) => f(&mut vec![0u8; room]),
    })
}

/// Writes `v`'s encoding at the start of `body`; returns its length.
fn encode_body<T: Serialize>(v: &T, body: &mut [u8]) -> Result<usize, Error> {
    match ByteVec::<T>::check() {
        Some(proof) => {
            let bytes = proof.as_bytes(v);
            // The sequence length as postcard writes it (a varint `usize`: the same bytes as
            // a varint `u64` of the same value), then the bytes.
            let head = postcard::to_slice(&(bytes.len() as u64), body)
                .map_err(Error::encode)?
                .len();
            let end = head
                .checked_add(bytes.len())
                .filter(|&end| end <= body.len())
                .ok_or(Error::encode(postcard::Error::SerializeBufferFull))?;
            body[head..end].copy_from_slice(bytes);
            Ok(end)
        }
        None => Ok(postcard::to_slice(v, body).map_err(Error::encode)?.len()),
    }
}

/// Parses the start of a byte vector's encoding of `len` bytes, of which `head` holds the
/// first `min(len, MAX_VARINT)`: returns the varint's size and the vector's length, which
/// must fit in what follows the varint.
fn byte_vec_header(head: &[u8], len: usize) -> Result<(usize, usize), Error> {
    let (n, rest) = postcard::take_from_bytes::<u64>(head).map_err(Error::decode)?;
    let varint = head.len() - rest.len();
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= len - varint)
        .ok_or(Error::decode(postcard::Error::DeserializeUnexpectedEnd))?;
    Ok((varint, n))
}

/// Where [`copy_out`] put a message.
pub(crate) enum Copied<T> {
    /// `len` encoded bytes, in `inline` if they fit there, else in `heap`.
    Encoded(usize),
    /// A byte vector's contents, already decoded, in `heap`.
    Bytes(ByteVecProof<T>),
}

/// [`ByteVec`] kept opaque outside this module.
pub(crate) struct ByteVecProof<T>(ByteVec<T>);

/// Copies the message out of its slot (the caller holds the claim): into `inline` if it fits,
/// else into `heap`; a byte vector's contents straight into `heap`. The length word and a
/// byte vector's varint are untrusted: both must fit the slot, so nothing read here sizes an
/// allocation beyond the slot.
pub(crate) fn copy_out<T>(
    r: impl Source,
    inline: &mut [u8; INLINE],
    heap: &mut Vec<u8>,
) -> Result<Copied<T>, Error> {
    let len = r
        .read_pod::<u32>(0)
        .ok_or(Error::Corrupted("slot smaller than its length word"))? as usize;
    if len > r.len() - LEN_WORD {
        return Err(Error::Corrupted("message length larger than the slot"));
    }
    if let Some(proof) = ByteVec::<T>::check() {
        let mut head = [0u8; MAX_VARINT];
        let head = &mut head[..len.min(MAX_VARINT)];
        r.copy_out(LEN_WORD, head);
        let (varint, n) = byte_vec_header(head, len)?;
        heap.clear();
        if !r.append_to(LEN_WORD + varint, n, heap) {
            return Err(Error::Corrupted("message length larger than the slot"));
        }
        return Ok(Copied::Bytes(ByteVecProof(proof)));
    }
    let copied = if len <= INLINE {
        r.copy_out(LEN_WORD, &mut inline[..len])
    } else {
        heap.clear();
        r.append_to(LEN_WORD, len, heap)
    };
    if copied {
        Ok(Copied::Encoded(len))
    } else {
        Err(Error::Corrupted("message length larger than the slot"))
    }
}

/// Decodes what [`copy_out`] copied (after the slot is released).
pub(crate) fn decode<T: DeserializeOwned>(
    copied: Copied<T>,
    inline: &[u8; INLINE],
    heap: Vec<u8>,
) -> Result<T, Error> {
    match copied {
        Copied::Bytes(ByteVecProof(proof)) => Ok(proof.cast_vec(heap)),
        Copied::Encoded(len) => {
            let bytes = if len <= INLINE {
                &inline[..len]
            } else {
                &heap[..]
            };
            postcard::from_bytes(bytes).map_err(Error::decode)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_vec_proof_only_for_byte_vectors() {
        assert!(ByteVec::<Vec<u8>>::check().is_some());
        assert!(ByteVec::<Vec<i8>>::check().is_none());
        assert!(ByteVec::<Vec<u16>>::check().is_none());
        assert!(ByteVec::<Box<[u8]>>::check().is_none());
        assert!(ByteVec::<String>::check().is_none());
        assert!(ByteVec::<&'static [u8]>::check().is_none());
    }

    #[test]
    fn shortcut_writes_and_reads_postcards_bytes() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let v: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let generic = postcard::to_stdvec(&v).expect("encode");
            let mut body = vec![0u8; generic.len() + 3];
            let used = encode_body(&v, &mut body).expect("shortcut encode");
            assert_eq!(&body[..used], &generic[..], "n = {n}");
            let head = &generic[..generic.len().min(MAX_VARINT)];
            let (varint, m) = byte_vec_header(head, generic.len()).expect("header");
            assert_eq!(m, n);
            assert_eq!(&generic[varint..varint + m], &v[..]);
            // One byte short: the shortcut refuses, as postcard does.
            assert!(encode_body(&v, &mut body[..generic.len() - 1]).is_err());
        }
    }

    #[test]
    fn byte_vec_header_rejects_lengths_past_the_message() {
        // Claims 300 bytes, the message holds 2 + 10.
        let head = postcard::to_stdvec(&300u64).expect("varint");
        assert!(byte_vec_header(&head, head.len() + 10).is_err());
        assert!(byte_vec_header(&head, head.len() + 300).is_ok());
        // A truncated varint.
        assert!(byte_vec_header(&[0x80], 1).is_err());
        assert!(byte_vec_header(&[], 0).is_err());
    }

    #[test]
    fn queue_round_trips_through_both_paths() {
        // Byte vectors (the shortcut: `as_bytes`, `append_to`, `cast_vec`) and another type
        // (serde), each below and above the inline copy-out size.
        let bytes = crate::Queue::<Vec<u8>>::builder()
            .capacity(2)
            .max_message_size(1024)
            .build()
            .expect("queue");
        let text = crate::Queue::<String>::builder()
            .capacity(2)
            .max_message_size(1024)
            .build()
            .expect("queue");
        for n in [0usize, 1, INLINE, INLINE + 1, 1000] {
            let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            bytes.put(&v).expect("put");
            assert_eq!(bytes.get().expect("get"), v);
            let t = "y".repeat(n);
            text.put(&t).expect("put");
            assert_eq!(text.get().expect("get"), t);
        }
    }

    #[test]
    fn shortcut_sizes_match_postcard() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let generic = postcard::to_stdvec(&v).expect("encode");
            assert_eq!(encoded_len(&v).expect("size"), generic.len(), "n = {n}");
        }
    }
}
