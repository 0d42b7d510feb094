//! Cuts a frame into datagrams that fit the connection's current maximum datagram size.
//!
//! All fragments of a frame have `ceil(frame_len / count)` bytes (the last one no more), so FEC can
//! later treat them as equal shards and the receiver can place each from its index alone. The
//! datagrams of a frame are built into one buffer (one copy per frame) and handed out as
//! zero-copy slices of it. With [`Fragments::new_in`] that buffer is the free end of a larger
//! one the caller keeps (a chunk of [`CHUNK`] bytes): consecutive small frames share one
//! allocation instead of two each (the buffer and the count of its shared owners).

use bytes::{Bytes, BytesMut};

use crate::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN};

/// A frame ready to be cut, after compression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// Sequence number.
    pub seq: u64,
    /// Capture time, µs on the sender's clock.
    pub capture_us: u64,
    /// Flags for every fragment.
    pub flags: FrameFlags,
    /// The body as carried (compressed or not).
    pub body: Bytes,
    /// Length after decompression.
    pub payload_len: u32,
}

/// Why a frame cannot be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// The maximum datagram size leaves no room after the header.
    #[error("datagrams of {0} bytes cannot carry the {HEADER_LEN}-byte header and data")]
    DatagramTooSmall(usize),
    /// More than 65535 fragments, or more than 4 GiB, would be needed.
    #[error("frame of {0} bytes is too large to fragment")]
    FrameTooLarge(usize),
}

/// Size of the buffers [`Fragments::new_in`] cuts frames into: about 15 datagrams of a
/// common path's size, and what a small frame's cut costs in memory at most.
pub const CHUNK: usize = 16 * 1024;

/// Fragment `index` of `frame` cut into `count` fragments, built on its own: the bytes
/// [`Fragments`] hands out for it (whatever datagram size gave that count), marked as a copy
/// sent again if `copy` ([`is_copy`](crate::wire::datagram::is_copy)). `None` if the frame
/// has no such fragment.
///
/// The sender keeps a frame rather than its datagrams for retransmission and builds what the
/// receiver asks for again with this: the datagrams leave its memory once QUIC has them.
pub fn fragment(frame: &WireFrame, count: u16, index: u16, copy: bool) -> Option<Bytes> {
    let frame_len = u32::try_from(frame.body.len()).ok()?;
    if index >= count || !crate::wire::datagram::valid_geometry(frame_len, count) {
        return None;
    }
    let header = FragmentHeader {
        flags: frame.flags,
        seq: frame.seq,
        capture_us: frame.capture_us,
        frame_len,
        payload_len: frame.payload_len,
        index,
        count,
    };
    let body = frame.body.get(header.range())?;
    let mut d = BytesMut::with_capacity(HEADER_LEN + body.len());
    d.resize(HEADER_LEN, 0);
    header.emit(&mut d)?;
    if copy {
        crate::wire::datagram::set_copy_mark(&mut d);
    }
    d.extend_from_slice(body);
    Some(d.freeze())
}

/// The datagrams of one frame, handed out one at a time.
#[derive(Debug, Clone)]
pub struct Fragments {
    buf: Bytes,
    count: u16,
    next: u16,
    shard: usize,
    frame_len: usize,
    max_datagram: usize,
}

impl Fragments {
    /// Cuts `frame` into datagrams of at most `max_datagram` bytes, in a buffer of its own.
    pub fn new(frame: &WireFrame, max_datagram: usize) -> Result<Self, PacketizeError> {
        Self::cut(frame, max_datagram, &mut BytesMut::new(), 0)
    }

    /// Cuts `frame` as [`new`](Self::new) does, writing the datagrams at the free end of
    /// `chunk`, which the caller keeps from frame to frame. When its free room is too small, a
    /// new chunk of [`CHUNK`] bytes (or the frame's size, if larger) replaces it; the old one
    /// lives on as long as datagrams cut from it do. A chunk pins at most [`CHUNK`] bytes
    /// beyond the datagrams still held, and chunks are freed in the order frames are.
    pub fn new_in(
        frame: &WireFrame,
        max_datagram: usize,
        chunk: &mut BytesMut,
    ) -> Result<Self, PacketizeError> {
        Self::cut(frame, max_datagram, chunk, CHUNK)
    }

    /// Cuts `frame` into the free end of `chunk`, replaced first by a buffer of at least
    /// `min_alloc` bytes if the frame does not fit.
    fn cut(
        frame: &WireFrame,
        max_datagram: usize,
        chunk: &mut BytesMut,
        min_alloc: usize,
    ) -> Result<Self, PacketizeError> {
        let room = max_datagram
            .checked_sub(HEADER_LEN)
            .filter(|&r| r > 0)
            .ok_or(PacketizeError::DatagramTooSmall(max_datagram))?;
        let len = frame.body.len();
        let frame_len = u32::try_from(len).map_err(|_| PacketizeError::FrameTooLarge(len))?;
        let count = u16::try_from(len.div_ceil(room).max(1))
            .map_err(|_| PacketizeError::FrameTooLarge(len))?;
        let shard = crate::wire::datagram::shard_len(frame_len, count);
        let need = usize::from(count) * HEADER_LEN + len;
        // Bytes written and not split off are nobody's: write over them.
        chunk.clear();
        if chunk.capacity() < need {
            *chunk = BytesMut::with_capacity(need.max(min_alloc));
        }
        let mut header = FragmentHeader {
            flags: frame.flags,
            seq: frame.seq,
            capture_us: frame.capture_us,
            frame_len,
            payload_len: frame.payload_len,
            index: 0,
            count,
        };
        let mut hdr = [0u8; HEADER_LEN];
        for index in 0..count {
            header.index = index;
            header.emit(&mut hdr);
            chunk.extend_from_slice(&hdr);
            chunk.extend_from_slice(&frame.body[header.range()]);
        }
        Ok(Self {
            buf: chunk.split().freeze(),
            count,
            next: 0,
            shard,
            frame_len: len,
            max_datagram,
        })
    }

    /// Number of fragments.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Fragments not yet handed out.
    pub fn remaining(&self) -> u16 {
        self.count - self.next
    }

    /// Whether no fragment has been handed out yet.
    pub fn untouched(&self) -> bool {
        self.next == 0
    }

    /// The datagram size limit these fragments were cut for.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Length of the next datagram, if any is left.
    pub fn peek_len(&self) -> Option<usize> {
        (self.next < self.count).then(|| self.range(self.next).len())
    }

    fn range(&self, index: u16) -> std::ops::Range<usize> {
        let i = usize::from(index);
        let start = i * HEADER_LEN + (i * self.shard).min(self.frame_len);
        let body = (self.shard).min(self.frame_len.saturating_sub(i * self.shard));
        start..start + HEADER_LEN + body
    }
}

impl Iterator for Fragments {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.next >= self.count {
            return None;
        }
        let d = self.buf.slice(self.range(self.next));
        self.next += 1;
        Some(d)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining());
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(len: usize) -> WireFrame {
        WireFrame {
            seq: 42,
            capture_us: 123,
            flags: FrameFlags::KEYFRAME,
            body: (0..len).map(|i| (i * 7) as u8).collect::<Vec<_>>().into(),
            payload_len: len as u32,
        }
    }

    #[test]
    fn cuts_to_the_datagram_size_in_equal_shards() {
        let f = frame(3000);
        let frags: Vec<_> = Fragments::new(&f, 1200).unwrap().collect();
        assert_eq!(frags.len(), 3); // 1168 room → 3 fragments of 1000
        for (i, d) in frags.iter().enumerate() {
            assert!(d.len() <= 1200);
            let (h, body) = FragmentHeader::parse(d).unwrap();
            assert_eq!((h.index as usize, h.count, body.len()), (i, 3, 1000));
            assert_eq!(body, &f.body[i * 1000..(i + 1) * 1000]);
        }
    }

    #[test]
    fn empty_frames_are_one_header_only_datagram() {
        let frags: Vec<_> = Fragments::new(&frame(0), 1200).unwrap().collect();
        assert_eq!(frags.len(), 1);
        assert_eq!(frags[0].len(), HEADER_LEN);
    }

    #[test]
    fn refuses_impossible_cuts() {
        assert_eq!(
            Fragments::new(&frame(10), HEADER_LEN).unwrap_err(),
            PacketizeError::DatagramTooSmall(HEADER_LEN)
        );
        assert_eq!(
            Fragments::new(&frame(70_000), HEADER_LEN + 1).unwrap_err(),
            PacketizeError::FrameTooLarge(70_000)
        );
    }

    proptest! {
        /// Frames cut one after another into a kept chunk give the datagrams a buffer of their
        /// own gives, and later cuts never change datagrams already handed out.
        #[test]
        fn cuts_in_a_kept_chunk_match_cuts_alone(
            lens in proptest::collection::vec(0usize..20_000, 1..30),
            mtu in (HEADER_LEN + 1)..1500,
        ) {
            let mut chunk = BytesMut::new();
            let mut held = Vec::new();
            for (i, len) in lens.into_iter().enumerate() {
                let mut f = frame(len);
                f.seq = i as u64;
                let alone: Vec<_> = Fragments::new(&f, mtu).unwrap().collect();
                let shared: Vec<_> = Fragments::new_in(&f, mtu, &mut chunk).unwrap().collect();
                prop_assert_eq!(&shared, &alone);
                held.push((shared, alone));
            }
            for (shared, alone) in held {
                prop_assert_eq!(shared, alone);
            }
        }

        /// A fragment built on its own is the one the frame's cut handed out (marked as a copy
        /// if asked), and there is none past the count.
        #[test]
        fn a_fragment_alone_matches_the_cut(len in 0usize..20_000, mtu in (HEADER_LEN + 1)..1500, copy in any::<bool>(), payload_len in any::<u32>(), seq in any::<u64>()) {
            // A compressed frame's header carries a payload length of its own.
            let f = WireFrame {
                seq,
                flags: FrameFlags::KEYFRAME.with(FrameFlags::COMPRESSED),
                payload_len,
                ..frame(len)
            };
            let Ok(frags) = Fragments::new(&f, mtu) else { return Ok(()) };
            let count = Fragments::count(&frags);
            for (i, d) in frags.enumerate() {
                let alone = fragment(&f, count, i as u16, copy).unwrap();
                prop_assert_eq!(crate::wire::datagram::is_copy(&alone), copy);
                let expected = if copy { crate::wire::datagram::mark_copy(&d) } else { d };
                prop_assert_eq!(alone, expected);
            }
            prop_assert_eq!(fragment(&f, count, count, copy), None);
        }

        /// Any count and index, sensible or not, give a fragment that parses or nothing.
        #[test]
        fn a_fragment_of_any_geometry_parses_or_is_refused(len in 0usize..5000, count in any::<u16>(), index in any::<u16>()) {
            let f = frame(len);
            if let Some(d) = fragment(&f, count, index, false) {
                let (h, body) = FragmentHeader::parse(&d).unwrap();
                prop_assert_eq!((h.index, h.count), (index, count));
                prop_assert_eq!(body, &f.body[h.range()]);
            }
        }

        #[test]
        fn fragments_parse_and_tile_the_frame(len in 0usize..40_000, mtu in (HEADER_LEN + 1)..2000) {
            let f = frame(len);
            let Ok(mut frags) = Fragments::new(&f, mtu) else {
                prop_assert!(len.div_ceil(mtu - HEADER_LEN) > usize::from(u16::MAX));
                return Ok(());
            };
            let mut rebuilt = Vec::new();
            while let Some(peek) = frags.peek_len() {
                let d = frags.next().unwrap();
                prop_assert_eq!(d.len(), peek);
                prop_assert!(d.len() <= mtu);
                let (h, body) = FragmentHeader::parse(&d).unwrap();
                prop_assert_eq!(h.range().start, rebuilt.len());
                rebuilt.extend_from_slice(body);
            }
            prop_assert_eq!(frags.next(), None);
            prop_assert_eq!(&rebuilt[..], &f.body[..]);
        }
    }
}
