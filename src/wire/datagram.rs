//! The header of every rtq datagram: one fragment of one media frame (`docs/PROTOCOL.md` §3).
//!
//! ```text
//!  0       1       2       3       4                               12
//! +-------+-------+-------+-------+-------------------------------+
//! |version| type  | flags | marks |        frame sequence (u64)    |
//! +-------+-------+-------+-------+-------------------------------+
//! 12                              20              24              28      30      32
//! +-------------------------------+---------------+---------------+-------+-------+
//! |      capture time, µs (u64)   | frame_len u32 |payload_len u32| index | count |
//! +-------------------------------+---------------+---------------+-------+-------+
//! ```
//! All integers are big-endian. A frame of `frame_len` bytes is cut into `count` fragments of
//! `ceil(frame_len / count)` bytes each (the last one no longer), so a fragment's offset and length
//! follow from `index`; a fragment whose length disagrees is malformed.

use super::{Reader, VERSION};

/// Length of the fragment header in bytes.
pub const HEADER_LEN: usize = 32;

/// Datagram type of a frame fragment. Other values are reserved (FEC parity comes later).
pub const TYPE_FRAGMENT: u8 = 0;

/// Offset of the `marks` byte: what a datagram is, as against the frame it carries.
const MARKS_AT: usize = 3;
/// Mark: the datagram is a copy sent again at the receiver's request, not the original.
const MARK_COPY: u8 = 0x01;

/// Whether `datagram` (a fragment, already parsed) is a copy sent again at the receiver's
/// request rather than the original: an original held up on the path and a copy look alike
/// otherwise, and only a copy shows that the original was lost.
pub fn is_copy(datagram: &[u8]) -> bool {
    datagram.get(MARKS_AT).is_some_and(|&m| m & MARK_COPY != 0)
}

/// `datagram` (a fragment) marked as a copy sent again ([`is_copy`]).
pub fn mark_copy(datagram: &[u8]) -> bytes::Bytes {
    let mut copy = bytes::BytesMut::from(datagram);
    set_copy_mark(&mut copy);
    copy.freeze()
}

/// Marks `datagram` (a fragment) in place as a copy sent again ([`is_copy`]).
pub fn set_copy_mark(datagram: &mut [u8]) {
    if let Some(m) = datagram.get_mut(MARKS_AT) {
        *m |= MARK_COPY;
    }
}

/// Per-frame flags carried in every fragment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// The frame can be decoded on its own (an intra frame).
    pub const KEYFRAME: Self = Self(0x01);
    /// The frame body is raw DEFLATE (RFC 1951) of `payload_len` bytes.
    pub const COMPRESSED: Self = Self(0x02);
    const KNOWN: u8 = 0x03;

    /// No flags set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The flags as a byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Parses a flags byte; `None` if a reserved bit is set.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::KNOWN != 0 {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags with those of `other` added.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Why a datagram was rejected. Each variant is counted separately by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the fixed header.
    #[error("datagram of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// A version this implementation does not speak.
    #[error("unknown protocol version {0} (this build speaks {VERSION})")]
    UnknownVersion(u8),
    /// A datagram type this implementation does not know.
    #[error("unknown datagram type {0}")]
    UnknownType(u8),
    /// A reserved flag bit is set.
    #[error("reserved flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// `count` is zero, `index >= count`, or `count` does not fit `frame_len`.
    #[error("fragment {index} of {count} is not a valid cut of a {frame_len}-byte frame")]
    BadGeometry {
        /// Fragment index from the header.
        index: u16,
        /// Fragment count from the header.
        count: u16,
        /// Frame length from the header.
        frame_len: u32,
    },
    /// The payload length disagrees with what `index`, `count` and `frame_len` imply.
    #[error("fragment carries {got} bytes where its geometry implies {expected}")]
    BadLength {
        /// Bytes after the header.
        got: usize,
        /// Bytes the geometry implies.
        expected: usize,
    },
    /// An uncompressed frame whose `payload_len` differs from `frame_len`.
    #[error("uncompressed frame with payload_len {payload_len} != frame_len {frame_len}")]
    BadPayloadLen {
        /// Declared uncompressed length.
        payload_len: u32,
        /// Declared frame length.
        frame_len: u32,
    },
}

/// The typed header of one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentHeader {
    /// Frame flags (same in every fragment of a frame).
    pub flags: FrameFlags,
    /// Frame sequence number: 0 for the first frame a sender transmits, +1 per frame.
    pub seq: u64,
    /// Capture time of the frame, in microseconds of the sender's clock (Unix epoch based).
    pub capture_us: u64,
    /// Length of the frame body as carried (after compression), in bytes.
    pub frame_len: u32,
    /// Length of the frame after decompression (equals `frame_len` when not compressed).
    pub payload_len: u32,
    /// Index of this fragment, `0..count`.
    pub index: u16,
    /// Number of fragments the frame was cut into, at least 1.
    pub count: u16,
}

/// Size of every fragment but the last when `frame_len` bytes are cut into `count` fragments.
pub fn shard_len(frame_len: u32, count: u16) -> usize {
    let count = usize::from(count.max(1));
    (frame_len as usize).div_ceil(count)
}

/// Whether `count` fragments of [`shard_len`] bytes cut `frame_len` bytes without an empty one.
pub fn valid_geometry(frame_len: u32, count: u16) -> bool {
    if count == 0 {
        return false;
    }
    if frame_len == 0 {
        return count == 1;
    }
    let shard = shard_len(frame_len, count);
    // The last fragment starts inside the frame: (count - 1) * shard < frame_len.
    (usize::from(count) - 1)
        .checked_mul(shard)
        .is_some_and(|start| start < frame_len as usize)
}

impl FragmentHeader {
    /// Byte range of this fragment within the frame. Only meaningful for a header that parsed.
    pub fn range(&self) -> std::ops::Range<usize> {
        let shard = shard_len(self.frame_len, self.count);
        let len = self.frame_len as usize;
        let start = (usize::from(self.index) * shard).min(len);
        start..(start + shard).min(len)
    }

    /// Writes the header into `out` (which must be at least [`HEADER_LEN`] bytes).
    ///
    /// Returns the number of bytes written, or `None` if `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Option<usize> {
        let out = out.get_mut(..HEADER_LEN)?;
        out[0] = VERSION;
        out[1] = TYPE_FRAGMENT;
        out[2] = self.flags.bits();
        out[MARKS_AT] = 0;
        out[4..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.capture_us.to_be_bytes());
        out[20..24].copy_from_slice(&self.frame_len.to_be_bytes());
        out[24..28].copy_from_slice(&self.payload_len.to_be_bytes());
        out[28..30].copy_from_slice(&self.index.to_be_bytes());
        out[30..32].copy_from_slice(&self.count.to_be_bytes());
        Some(HEADER_LEN)
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN
    }

    /// Parses a whole datagram into its header and fragment bytes, checking every field.
    pub fn parse(datagram: &[u8]) -> Result<(Self, &[u8]), DatagramError> {
        let truncated = DatagramError::Truncated(datagram.len());
        if datagram.len() < HEADER_LEN {
            return Err(truncated);
        }
        let mut r = Reader::new(datagram);
        let version = r.u8().ok_or(truncated)?;
        if version != VERSION {
            return Err(DatagramError::UnknownVersion(version));
        }
        let kind = r.u8().ok_or(truncated)?;
        if kind != TYPE_FRAGMENT {
            return Err(DatagramError::UnknownType(kind));
        }
        let flag_bits = r.u8().ok_or(truncated)?;
        // The marks (`is_copy`) say how the datagram came, not what it carries.
        let _marks = r.u8().ok_or(truncated)?;
        let seq = r.u64().ok_or(truncated)?;
        let capture_us = r.u64().ok_or(truncated)?;
        let frame_len = r.u32().ok_or(truncated)?;
        let payload_len = r.u32().ok_or(truncated)?;
        let index = r.u16().ok_or(truncated)?;
        let count = r.u16().ok_or(truncated)?;
        let flags =
            FrameFlags::from_bits(flag_bits).ok_or(DatagramError::ReservedFlags(flag_bits))?;
        if !valid_geometry(frame_len, count) || index >= count {
            return Err(DatagramError::BadGeometry {
                index,
                count,
                frame_len,
            });
        }
        if !flags.contains(FrameFlags::COMPRESSED) && payload_len != frame_len {
            return Err(DatagramError::BadPayloadLen {
                payload_len,
                frame_len,
            });
        }
        let header = Self {
            flags,
            seq,
            capture_us,
            frame_len,
            payload_len,
            index,
            count,
        };
        let body = r.rest();
        let expected = header.range().len();
        if body.len() != expected {
            return Err(DatagramError::BadLength {
                got: body.len(),
                expected,
            });
        }
        Ok((header, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(frame_len: u32, index: u16, count: u16) -> FragmentHeader {
        FragmentHeader {
            flags: FrameFlags::KEYFRAME,
            seq: 7,
            capture_us: 1_700_000_000_000_000,
            frame_len,
            payload_len: frame_len,
            index,
            count,
        }
    }

    fn datagram(h: &FragmentHeader) -> Vec<u8> {
        let mut buf = vec![0; HEADER_LEN + h.range().len()];
        h.emit(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let h = header(3000, 2, 3);
        let buf = datagram(&h);
        let (parsed, body) = FragmentHeader::parse(&buf).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(body.len(), 1000);
        assert_eq!(h.range(), 2000..3000);
    }

    #[test]
    fn geometry_rules() {
        assert!(valid_geometry(0, 1));
        assert!(!valid_geometry(0, 2));
        assert!(!valid_geometry(10, 0));
        assert!(valid_geometry(10, 4)); // 3,3,3,1
        assert!(!valid_geometry(10, 6)); // shard 2: the sixth fragment would be empty
        assert!(valid_geometry(10, 10));
        assert!(!valid_geometry(10, 11));
        assert!(valid_geometry(u32::MAX, u16::MAX));
    }

    #[test]
    fn rejects_each_malformation_by_name() {
        let good = datagram(&header(100, 0, 1));
        assert_eq!(
            FragmentHeader::parse(&good[..31]),
            Err(DatagramError::Truncated(31))
        );
        assert_eq!(FragmentHeader::parse(&[]), Err(DatagramError::Truncated(0)));

        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::UnknownVersion(9))
        );

        let mut bad = good.clone();
        bad[1] = 5;
        assert_eq!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::UnknownType(5))
        );

        let mut bad = good.clone();
        bad[2] = 0x80;
        assert_eq!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::ReservedFlags(0x80))
        );

        let mut bad = good.clone();
        bad[28..30].copy_from_slice(&3u16.to_be_bytes()); // index 3 of 1
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::BadGeometry { .. })
        ));

        let mut bad = good.clone();
        bad[30..32].copy_from_slice(&0u16.to_be_bytes()); // count 0
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::BadGeometry { .. })
        ));

        let mut bad = good.clone();
        bad.push(0); // one byte too many
        assert_eq!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::BadLength {
                got: 101,
                expected: 100
            })
        );

        let mut bad = good.clone();
        bad[24..28].copy_from_slice(&5u32.to_be_bytes()); // payload_len != frame_len, uncompressed
        assert!(matches!(
            FragmentHeader::parse(&bad),
            Err(DatagramError::BadPayloadLen { .. })
        ));

        let mut compressed = good;
        compressed[2] = FrameFlags::COMPRESSED.bits();
        compressed[24..28].copy_from_slice(&5000u32.to_be_bytes());
        assert!(
            FragmentHeader::parse(&compressed).is_ok(),
            "compressed frames may grow"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FragmentHeader::parse(&bytes);
        }

        #[test]
        fn parse_accepts_what_emit_writes(
            frame_len in 0u32..200_000,
            mtu_payload in 1usize..1500,
            seq: u64, capture_us: u64, keyframe: bool, pick: u16,
        ) {
            let count = (frame_len as usize).div_ceil(mtu_payload).max(1);
            prop_assume!(count <= usize::from(u16::MAX));
            let count = count as u16;
            prop_assert!(valid_geometry(frame_len, count));
            let flags = if keyframe { FrameFlags::KEYFRAME } else { FrameFlags::empty() };
            let h = FragmentHeader {
                flags, seq, capture_us, frame_len, payload_len: frame_len,
                index: pick % count, count,
            };
            prop_assert!(h.range().len() <= mtu_payload);
            let buf = datagram(&h);
            let (parsed, body) = FragmentHeader::parse(&buf).unwrap();
            prop_assert_eq!(parsed, h);
            prop_assert_eq!(body.len(), h.range().len());
            // A copy parses to the same header and body, and says it is one.
            prop_assert!(!is_copy(&buf));
            let copy = mark_copy(&buf);
            prop_assert!(is_copy(&copy));
            let (parsed_copy, copy_body) = FragmentHeader::parse(&copy).unwrap();
            prop_assert_eq!(parsed_copy, h);
            prop_assert_eq!(copy_body, body);
            prop_assert_eq!(&copy[..MARKS_AT], &buf[..MARKS_AT]);
            prop_assert_eq!(&copy[MARKS_AT + 1..], &buf[MARKS_AT + 1..]);
        }

        #[test]
        fn marking_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let copy = mark_copy(&bytes);
            prop_assert_eq!(copy.len(), bytes.len());
            prop_assert_eq!(is_copy(&copy), bytes.len() > MARKS_AT);
        }

        #[test]
        fn accepted_fragments_tile_the_frame(frame_len in 0u32..100_000, count in 1u16..2000) {
            if !valid_geometry(frame_len, count) {
                return Ok(()); // most random pairs are invalid; those are covered above
            }
            let mut next = 0;
            for index in 0..count {
                let r = header(frame_len, index, count).range();
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty() || frame_len == 0);
                next = r.end;
            }
            prop_assert_eq!(next, frame_len as usize);
        }
    }
}
