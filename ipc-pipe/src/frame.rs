//! Wire framing: a length header, then the payload.
//!
//! ```text
//! bytes frame, len <= u32::MAX - 1:  [len: u32 LE] [payload; len]
//! bytes frame, len >= u32::MAX:      [0xFFFF_FFFF] [len: u64 LE] [payload; len]
//! fd frame (SCM_RIGHTS attached):    [0xFFFF_FFFF] [(1 << 63) | count: u64 LE]
//! ```
//!
//! The long form is only valid for lengths that do not fit the short form
//! (one canonical encoding per length); an fd frame carries 1 to
//! [`MAX_FDS`] descriptors and no payload. Anything else is malformed.
//!
//! [`Decoder`] is incremental: feed it whatever bytes arrived, in any split. It
//! checks the length against its limit as soon as the header is complete, before
//! anything is allocated, and grows the output only as payload bytes arrive
//! (never past the frame's length), so a header claiming 4 GiB costs nothing.
//! The connections of this crate run their receive path on this decoder.

use std::fmt;

/// Longest header: escape word plus `u64` length.
pub const HEADER_MAX: usize = 12;
/// Most file descriptors one fd frame may carry (Linux `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;
/// Default `max_message_size`: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

const ESCAPE: u32 = u32::MAX;
const FD_TAG: u64 = 1 << 63;
/// Smallest step by which a receive buffer grows while payload arrives.
pub(crate) const MIN_GROW: usize = 64 << 10;

/// An encoded frame header (4 or 12 bytes), built on the stack.
#[derive(Clone, Copy)]
pub struct Header {
    bytes: [u8; HEADER_MAX],
    len: u8,
}

impl Header {
    /// The header for a bytes frame of `len` payload bytes.
    pub fn bytes(len: usize) -> Header {
        let mut bytes = [0u8; HEADER_MAX];
        // `usize` is at most 64 bits on every supported target.
        let len64 = len as u64;
        if len64 < u64::from(ESCAPE) {
            bytes[..4].copy_from_slice(&(len64 as u32).to_le_bytes());
            Header { bytes, len: 4 }
        } else {
            bytes[..4].copy_from_slice(&ESCAPE.to_le_bytes());
            bytes[4..].copy_from_slice(&len64.to_le_bytes());
            Header { bytes, len: 12 }
        }
    }

    /// The header of an fd frame announcing `count` descriptors
    /// (`1..=MAX_FDS`, checked by the caller).
    pub(crate) fn fds(count: usize) -> Header {
        debug_assert!((1..=MAX_FDS).contains(&count));
        let mut bytes = [0u8; HEADER_MAX];
        bytes[..4].copy_from_slice(&ESCAPE.to_le_bytes());
        bytes[4..].copy_from_slice(&(FD_TAG | count as u64).to_le_bytes());
        Header { bytes, len: 12 }
    }

    /// The encoded bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Header").field(&self.as_slice()).finish()
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A payload of this many bytes follows.
    Bytes(usize),
    /// This many file descriptors travel with the frame (no payload).
    Fds(usize),
}

/// A header that cannot be accepted. Either way the byte stream cannot be
/// resynchronised, so a connection that meets one is poisoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than the decoder's limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The header is not one this crate writes.
    #[error("malformed frame header: {0}")]
    Malformed(&'static str),
}

impl From<FrameError> for crate::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => crate::Error::TooLarge { len, max },
            FrameError::Malformed(_) => crate::Error::Poisoned,
        }
    }
}

/// Incremental frame decoder; see the [module docs](self).
///
/// ```
/// use ipc_pipe::frame::{Decoder, Frame, Header};
///
/// let mut wire = Header::bytes(5).as_slice().to_vec();
/// wire.extend_from_slice(b"hello");
/// let mut dec = Decoder::new(1024);
/// let mut out = Vec::new();
/// // Feed it in two arbitrary pieces.
/// let (used, frame) = dec.decode(&wire[..3], &mut out).unwrap();
/// assert_eq!((used, frame), (3, None));
/// let (used, frame) = dec.decode(&wire[3..], &mut out).unwrap();
/// assert_eq!((used, frame), (6, Some(Frame::Bytes(5))));
/// assert_eq!(out, b"hello");
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    max: usize,
    hdr: [u8; HEADER_MAX],
    hdr_len: usize,
    frame: Option<Frame>,
    got: usize,
}

impl Decoder {
    /// A decoder that rejects frames longer than `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            max,
            hdr: [0; HEADER_MAX],
            hdr_len: 0,
            frame: None,
            got: 0,
        }
    }

    /// The length limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Changes the length limit; it applies to headers completed from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// True between frames: no header byte of the next frame seen yet.
    pub fn is_idle(&self) -> bool {
        self.hdr_len == 0 && self.frame.is_none()
    }

    /// The current frame's header, once complete.
    pub fn frame(&self) -> Option<Frame> {
        self.frame
    }

    /// Payload bytes of the current bytes frame still to come (0 before the
    /// header is complete and for fd frames).
    pub fn remaining(&self) -> usize {
        match self.frame {
            Some(Frame::Bytes(len)) => len - self.got,
            _ => 0,
        }
    }

    /// Payload bytes of the current frame received so far.
    pub fn received(&self) -> usize {
        self.got
    }

    /// Consumes header bytes from `input` (never more than the header needs) and
    /// returns how many it took. Returns 0 once the header is complete.
    ///
    /// # Errors
    /// [`FrameError`] when the completed header is oversized or malformed.
    pub fn feed_header(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        if self.frame.is_some() {
            return Ok(0);
        }
        let mut used = 0;
        if self.hdr_len < 4 {
            let take = (4 - self.hdr_len).min(input.len());
            self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input[..take]);
            self.hdr_len += take;
            used += take;
            if self.hdr_len < 4 {
                return Ok(used);
            }
            let short = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]]);
            if short != ESCAPE {
                self.set_frame(Frame::Bytes(short as usize), u64::from(short))?;
                return Ok(used);
            }
        }
        let rest = &input[used..];
        let take = (HEADER_MAX - self.hdr_len).min(rest.len());
        self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&rest[..take]);
        self.hdr_len += take;
        used += take;
        if self.hdr_len == HEADER_MAX {
            let mut long = [0u8; 8];
            long.copy_from_slice(&self.hdr[4..]);
            let long = u64::from_le_bytes(long);
            if long & FD_TAG != 0 {
                let count = long & !FD_TAG;
                if count == 0 || count > MAX_FDS as u64 {
                    return Err(FrameError::Malformed("fd count out of range"));
                }
                self.frame = Some(Frame::Fds(count as usize));
            } else if long < u64::from(ESCAPE) {
                return Err(FrameError::Malformed("non-canonical long length"));
            } else {
                let len = usize::try_from(long).unwrap_or(usize::MAX);
                self.set_frame(Frame::Bytes(len), long)?;
            }
        }
        Ok(used)
    }

    fn set_frame(&mut self, frame: Frame, len: u64) -> Result<(), FrameError> {
        if len > self.max as u64 {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        self.frame = Some(frame);
        self.got = 0;
        Ok(())
    }

    /// Appends payload bytes of the current frame from `input` to `out`, never
    /// past the frame's end; returns how many were taken. `out` grows only by
    /// what is appended (capacity never beyond the frame length plus what `out`
    /// already had).
    pub fn feed_payload(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let take = self.remaining().min(input.len());
        if take > 0 {
            if out.capacity() - out.len() < take {
                grow(out, take, self.remaining());
            }
            out.extend_from_slice(&input[..take]);
            self.got += take;
        }
        take
    }

    /// Records that the caller placed `n` payload bytes of the current frame in
    /// the output itself (a direct read into the output's spare capacity).
    ///
    /// # Panics
    /// If `n` exceeds [`remaining`](Self::remaining): that is a bug in the caller.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.remaining(), "advance past the end of the frame");
        self.got += n;
    }

    /// True when the current frame's header and payload are complete.
    pub fn is_complete(&self) -> bool {
        self.frame.is_some() && self.remaining() == 0
    }

    /// Ends the current (complete) frame and makes the decoder ready for the
    /// next header. Returns the finished frame, or `None` if it was not complete.
    pub fn finish(&mut self) -> Option<Frame> {
        if !self.is_complete() {
            return None;
        }
        let frame = self.frame.take();
        self.hdr_len = 0;
        self.got = 0;
        frame
    }

    /// Convenience over the steps above: consumes bytes of one frame from
    /// `input`, appending its payload to `out`, and stops at the end of a
    /// frame. Returns the bytes consumed and the frame if one was completed
    /// (the decoder is then ready for the next). `out` is cleared when a new
    /// payload starts.
    ///
    /// # Errors
    /// [`FrameError`] for an oversized or malformed header; the decoder must
    /// then be discarded.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Option<Frame>), FrameError> {
        let mut used = 0;
        if self.frame.is_none() {
            used += self.feed_header(input)?;
            if self.frame.is_none() {
                return Ok((used, None));
            }
            out.clear();
        }
        used += self.feed_payload(&input[used..], out);
        Ok((used, self.finish()))
    }
}

/// Makes room in `out` for at least `need` more bytes of a frame that has
/// `frame_remaining` bytes left: doubling steps (at least [`MIN_GROW`]), capped
/// at what the frame still needs, so capacity follows the bytes that arrive.
pub(crate) fn grow(out: &mut Vec<u8>, need: usize, frame_remaining: usize) {
    let step = out.capacity().max(MIN_GROW).max(need).min(frame_remaining);
    out.reserve_exact(step.max(need));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        for f in frames {
            wire.extend_from_slice(Header::bytes(f.len()).as_slice());
            wire.extend_from_slice(f);
        }
        wire
    }

    #[test]
    fn short_and_long_headers() {
        assert_eq!(Header::bytes(0).as_slice(), &[0, 0, 0, 0]);
        assert_eq!(Header::bytes(0x0102_0304).as_slice(), &[4, 3, 2, 1]);
        let h = Header::bytes(u32::MAX as usize - 1);
        assert_eq!(h.as_slice().len(), 4);
        let h = Header::bytes(u32::MAX as usize);
        assert_eq!(h.as_slice().len(), 12);
        let mut d = Decoder::new(usize::MAX);
        assert_eq!(d.feed_header(h.as_slice()).unwrap(), 12);
        assert_eq!(d.frame(), Some(Frame::Bytes(u32::MAX as usize)));
    }

    #[test]
    fn fd_header_round_trip() {
        let mut d = Decoder::new(16);
        assert_eq!(d.feed_header(Header::fds(3).as_slice()).unwrap(), 12);
        assert_eq!(d.frame(), Some(Frame::Fds(3)));
        assert!(d.is_complete());
        assert_eq!(d.finish(), Some(Frame::Fds(3)));
        assert!(d.is_idle());
    }

    #[test]
    fn hostile_headers() {
        // Claims 4 GiB - 2: rejected at the header, nothing allocated.
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut out = Vec::new();
        let err = d
            .decode(&[0xFE, 0xFF, 0xFF, 0xFF, 1, 2], &mut out)
            .unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: u64::from(u32::MAX - 1),
                max: DEFAULT_MAX_MESSAGE_SIZE
            }
        );
        assert_eq!(out.capacity(), 0);
        // Non-canonical long form.
        let mut wire = vec![0xFF; 4];
        wire.extend_from_slice(&5u64.to_le_bytes());
        assert!(matches!(
            Decoder::new(100).feed_header(&wire),
            Err(FrameError::Malformed(_))
        ));
        // Fd counts out of range.
        for count in [0u64, MAX_FDS as u64 + 1, u64::MAX >> 1] {
            let mut wire = vec![0xFF; 4];
            wire.extend_from_slice(&(FD_TAG | count).to_le_bytes());
            assert!(matches!(
                Decoder::new(100).feed_header(&wire),
                Err(FrameError::Malformed(_))
            ));
        }
    }

    #[test]
    fn grows_with_arrivals_only() {
        let mut d = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
        let mut out = Vec::new();
        d.feed_header(Header::bytes(DEFAULT_MAX_MESSAGE_SIZE).as_slice())
            .unwrap();
        d.feed_payload(&[7u8; 10], &mut out);
        assert!(out.capacity() <= MIN_GROW, "capacity {}", out.capacity());
        assert_eq!(d.remaining(), DEFAULT_MAX_MESSAGE_SIZE - 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes in arbitrary pieces: a frame or an error, never a panic,
        /// never an output beyond the limit.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096),
                           max in 0usize..2048,
                           cuts in proptest::collection::vec(1usize..64, 1..16)) {
            let mut d = Decoder::new(max);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            'outer: while pos < data.len() {
                let end = (pos + cuts[i % cuts.len()]).min(data.len());
                i += 1;
                let mut chunk = &data[pos..end];
                while !chunk.is_empty() {
                    match d.decode(chunk, &mut out) {
                        Ok((used, frame)) => {
                            prop_assert!(used <= chunk.len());
                            if let Some(Frame::Bytes(len)) = frame {
                                prop_assert_eq!(out.len(), len);
                                prop_assert!(len <= max);
                            }
                            chunk = &chunk[used..];
                            pos += used;
                            if used == 0 && frame.is_none() {
                                prop_assert!(false, "no progress");
                            }
                        }
                        Err(FrameError::TooLarge { len, max: m }) => {
                            prop_assert!(len > m as u64);
                            break 'outer;
                        }
                        Err(FrameError::Malformed(_)) => break 'outer,
                    }
                    prop_assert!(out.capacity() <= max.max(1), "capacity {} max {}", out.capacity(), max);
                }
            }
        }

        /// Encoded frames split anywhere decode to the same frames.
        #[test]
        fn round_trip(frames in proptest::collection::vec(
                          proptest::collection::vec(any::<u8>(), 0..300), 0..20),
                      cuts in proptest::collection::vec(1usize..50, 1..10)) {
            let wire = encode(&frames);
            let mut d = Decoder::new(300);
            let mut out = Vec::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < wire.len() {
                let end = (pos + cuts[i % cuts.len()]).min(wire.len());
                i += 1;
                let mut chunk = &wire[pos..end];
                while !chunk.is_empty() {
                    let (used, frame) = d.decode(chunk, &mut out).unwrap();
                    if frame.is_some() {
                        got.push(std::mem::take(&mut out));
                    }
                    chunk = &chunk[used..];
                    pos += used;
                }
            }
            // Zero-length frames complete when their header does.
            prop_assert_eq!(got, frames);
        }
    }
}
