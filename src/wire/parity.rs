//! The header of an FEC parity datagram (`docs/PROTOCOL.md` §3.8): one Reed–Solomon recovery
//! shard of a **group** of fragment datagrams.
//!
//! ```text
//!  0       1       2       3       4                               12
//! +-------+-------+-------+-------+-------------------------------+
//! |version| type=1| flags | rsvd  |     first frame seq (u64)     |
//! +-------+-------+-------+-------+-------------------------------+
//! 12      14      16      18      20      22      24
//! +-------+-------+-------+-------+-------+-------+----------------------------+
//! |frames |sources|parities| index |shard  | rsvd  |  recovery shard (shard B)  |
//! +-------+-------+-------+-------+-------+-------+----------------------------+
//! ```
//! A group is either **one frame** (`frames = 1`: its `sources` fragments, in index order) or
//! **several single-fragment frames** (`frames = sources > 1`: frames `first_seq ..
//! first_seq + frames`, one fragment each). Each source shard is a whole fragment datagram
//! (header and data) padded with zeros to `shard` bytes, so a recovered shard is a datagram the
//! receiver parses like any other.

use super::{Reader, VERSION};

/// Datagram type of a parity datagram.
pub const TYPE_PARITY: u8 = 1;

/// Length of the parity header in bytes.
pub const PARITY_HEADER_LEN: usize = 24;

/// Most source datagrams one group may protect. Larger frames go out without parity.
pub const MAX_SOURCES: u16 = 1024;

/// Most parity datagrams one group may have.
pub const MAX_PARITIES: u16 = 256;

/// Most single-fragment frames one group may span.
pub const MAX_GROUP_FRAMES: u16 = 16;

/// Why a parity datagram was rejected (counted as `bad_parity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParityError {
    /// Shorter than the header.
    #[error("parity datagram of {0} bytes is shorter than its {PARITY_HEADER_LEN}-byte header")]
    Truncated(usize),
    /// A version this implementation does not speak.
    #[error("unknown protocol version {0} (this build speaks {VERSION})")]
    UnknownVersion(u8),
    /// Not a parity datagram.
    #[error("datagram type {0} is not parity")]
    WrongType(u8),
    /// Flags are reserved in parity datagrams.
    #[error("reserved flag bits set in {0:#04x}")]
    ReservedFlags(u8),
    /// The group description is impossible or over a limit.
    #[error("parity group is invalid: {0}")]
    BadGroup(&'static str),
    /// The shard length disagrees with the datagram's length.
    #[error("parity carries {got} bytes where its header says {expected}")]
    BadLength {
        /// Bytes after the header.
        got: usize,
        /// `shard` from the header.
        expected: usize,
    },
}

/// The typed header of one parity datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParityHeader {
    /// Sequence number of the group's first frame.
    pub first_seq: u64,
    /// Frames in the group: 1 (the fragments of one frame) or `sources` (one fragment each).
    pub frames: u16,
    /// Source datagrams in the group, `1..=MAX_SOURCES`.
    pub sources: u16,
    /// Parity datagrams of the group, `1..=MAX_PARITIES`.
    pub parities: u16,
    /// Which parity shard this is, `0..parities`.
    pub index: u16,
    /// Bytes per shard: the longest source datagram rounded up to an even length.
    pub shard: u16,
}

impl ParityHeader {
    /// Checks the group description (what [`parse`](Self::parse) checks besides the length).
    pub fn validate(&self) -> Result<(), ParityError> {
        let bad = |why| Err(ParityError::BadGroup(why));
        if self.sources == 0 || self.sources > MAX_SOURCES {
            return bad("sources must be 1..=1024");
        }
        if self.parities == 0 || self.parities > MAX_PARITIES {
            return bad("parities must be 1..=256");
        }
        if self.index >= self.parities {
            return bad("index must be below parities");
        }
        if self.frames == 0 || (self.frames > 1 && self.frames != self.sources) {
            return bad("frames must be 1 or equal to sources");
        }
        if self.frames > MAX_GROUP_FRAMES {
            return bad("a group spans at most 16 frames");
        }
        if self.first_seq.checked_add(u64::from(self.frames)).is_none() {
            return bad("the group's frame numbers overflow");
        }
        if self.shard == 0 || !self.shard.is_multiple_of(2) {
            return bad("shard length must be even and non-zero");
        }
        if usize::from(self.shard) < super::datagram::HEADER_LEN {
            return bad("shard shorter than a fragment header");
        }
        Ok(())
    }

    /// Parses and validates a parity datagram; returns the header and the recovery shard.
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), ParityError> {
        if buf.len() < PARITY_HEADER_LEN {
            return Err(ParityError::Truncated(buf.len()));
        }
        let mut r = Reader::new(buf);
        let field = || ParityError::Truncated(buf.len());
        let version = r.u8().ok_or_else(field)?;
        if version != VERSION {
            return Err(ParityError::UnknownVersion(version));
        }
        let ty = r.u8().ok_or_else(field)?;
        if ty != TYPE_PARITY {
            return Err(ParityError::WrongType(ty));
        }
        let flags = r.u8().ok_or_else(field)?;
        if flags != 0 {
            return Err(ParityError::ReservedFlags(flags));
        }
        let _rsvd = r.u8().ok_or_else(field)?;
        let h = Self {
            first_seq: r.u64().ok_or_else(field)?,
            frames: r.u16().ok_or_else(field)?,
            sources: r.u16().ok_or_else(field)?,
            parities: r.u16().ok_or_else(field)?,
            index: r.u16().ok_or_else(field)?,
            shard: r.u16().ok_or_else(field)?,
        };
        let _rsvd = r.u16().ok_or_else(field)?;
        h.validate()?;
        let rest = r.rest();
        if rest.len() != usize::from(h.shard) {
            return Err(ParityError::BadLength {
                got: rest.len(),
                expected: usize::from(h.shard),
            });
        }
        Ok((h, rest))
    }

    /// Writes the header (without the shard) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(TYPE_PARITY);
        out.push(0);
        out.push(0);
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.frames.to_be_bytes());
        out.extend_from_slice(&self.sources.to_be_bytes());
        out.extend_from_slice(&self.parities.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.shard.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }

    /// Whether frame `seq` belongs to the group.
    pub fn covers(&self, seq: u64) -> bool {
        seq >= self.first_seq && seq - self.first_seq < u64::from(self.frames)
    }

    /// The position of fragment `index` of frame `seq` among the group's sources, if it is one
    /// of them (`count`: the fragment count its header declares).
    pub fn position(&self, seq: u64, index: u16, count: u16) -> Option<usize> {
        if !self.covers(seq) {
            return None;
        }
        if self.frames == 1 {
            (count == self.sources && index < count).then_some(usize::from(index))
        } else {
            (count == 1 && index == 0).then(|| (seq - self.first_seq) as usize)
        }
    }
}

/// The type byte of a datagram of this version, if it has one.
pub fn datagram_type(buf: &[u8]) -> Option<u8> {
    buf.get(1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> ParityHeader {
        ParityHeader {
            first_seq: 7,
            frames: 1,
            sources: 5,
            parities: 2,
            index: 1,
            shard: 1200,
        }
    }

    fn datagram(h: &ParityHeader) -> Vec<u8> {
        let mut out = Vec::new();
        h.emit(&mut out);
        out.resize(PARITY_HEADER_LEN + usize::from(h.shard), 0xab);
        out
    }

    #[test]
    fn round_trips() {
        let h = header();
        let d = datagram(&h);
        let (got, shard) = ParityHeader::parse(&d).unwrap();
        assert_eq!(got, h);
        assert_eq!(shard.len(), 1200);
        assert!(shard.iter().all(|&b| b == 0xab));
    }

    #[test]
    fn rejects_impossible_groups() {
        type Break = fn(&mut ParityHeader);
        let cases: [(Break, &str); 8] = [
            (|h| h.sources = 0, "no sources"),
            (|h| h.sources = MAX_SOURCES + 1, "too many sources"),
            (|h| h.parities = 0, "no parities"),
            (|h| h.index = 2, "index past parities"),
            (|h| h.frames = 3, "frames neither 1 nor sources"),
            (|h| h.shard = 1201, "odd shard"),
            (|h| h.shard = 16, "shard below a fragment header"),
            (
                |h| {
                    h.first_seq = u64::MAX;
                    h.frames = 5;
                },
                "overflowing frame numbers",
            ),
        ];
        for (break_it, what) in cases {
            let mut h = header();
            break_it(&mut h);
            let d = datagram(&h);
            assert!(
                matches!(ParityHeader::parse(&d), Err(ParityError::BadGroup(_))),
                "{what} accepted"
            );
        }
        let mut d = datagram(&header());
        d.pop();
        assert!(matches!(
            ParityHeader::parse(&d),
            Err(ParityError::BadLength { .. })
        ));
        d[2] = 1;
        assert_eq!(ParityHeader::parse(&d), Err(ParityError::ReservedFlags(1)));
        assert_eq!(
            ParityHeader::parse(&d[..10]),
            Err(ParityError::Truncated(10))
        );
    }

    #[test]
    fn positions_follow_the_group_shape() {
        let one = header();
        assert_eq!(one.position(7, 3, 5), Some(3));
        assert_eq!(one.position(7, 3, 6), None, "another cut of the frame");
        assert_eq!(one.position(8, 0, 5), None, "another frame");
        let many = ParityHeader {
            first_seq: 10,
            frames: 4,
            sources: 4,
            ..header()
        };
        assert_eq!(many.position(12, 0, 1), Some(2));
        assert_eq!(many.position(12, 0, 2), None, "not a single-fragment frame");
        assert_eq!(many.position(14, 0, 1), None, "past the group");
    }

    proptest! {
        #[test]
        fn never_panics_and_accepts_only_consistent_headers(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
            if let Ok((h, shard)) = ParityHeader::parse(&bytes) {
                prop_assert!(h.validate().is_ok());
                prop_assert_eq!(shard.len(), usize::from(h.shard));
                prop_assert_eq!(bytes.len(), PARITY_HEADER_LEN + usize::from(h.shard));
            }
        }

        #[test]
        fn valid_headers_round_trip(first_seq in 0u64..1 << 60, sources in 1u16..=MAX_SOURCES, parities in 1u16..=MAX_PARITIES, shard in 16u16..1000) {
            let frames = if sources <= MAX_GROUP_FRAMES && first_seq % 2 == 0 { sources } else { 1 };
            let h = ParityHeader { first_seq, frames, sources, parities, index: parities - 1, shard: shard * 2 };
            let d = datagram(&h);
            prop_assert_eq!(ParityHeader::parse(&d).map(|(h, _)| h), Ok(h));
        }
    }
}
