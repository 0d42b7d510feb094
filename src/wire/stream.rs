//! Frame streams: the reliable-stream transport (`--transport stream`, `docs/PROTOCOL.md` §2.1).
//!
//! With it, the sender opens one unidirectional QUIC stream per frame and writes the frame's
//! fragments on it, each as a record: a 2-byte big-endian length, then exactly the bytes the
//! fragment would have had as a datagram (header and all). The stream ends after the frame's
//! last fragment; the sender resets it when the frame's deadline passes first.
//!
//! ```text
//! +---------------+----------------------------------+---------------+-----
//! | length (u16)  | fragment datagram (length bytes) | length (u16)  | ...
//! +---------------+----------------------------------+---------------+-----
//! ```
//!
//! [`RecordDecoder`] takes a stream's bytes in whatever chunks QUIC delivers them and hands out
//! whole records; it holds at most one record's bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the record prefix.
pub const RECORD_PREFIX: usize = 2;

/// Largest fragment a record carries. Frames are cut into fragments of at most this size on
/// a frame stream (there is no path MTU to respect: QUIC splits stream data into packets).
pub const MAX_RECORD: usize = 16 * 1024;

/// Why a frame stream was given up. The receiver stops reading the stream and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record of length 0.
    #[error("empty record on a frame stream")]
    Empty,
    /// A record longer than [`MAX_RECORD`].
    #[error("record of {0} bytes on a frame stream exceeds the {MAX_RECORD}-byte limit")]
    TooLong(usize),
    /// The stream ended inside a record.
    #[error("frame stream ended inside a record ({0} bytes of it were there)")]
    Truncated(usize),
}

/// Appends `fragment` to `out` as one record.
///
/// # Panics
/// Never for fragments of at most [`MAX_RECORD`] bytes, which is all a sender cuts; longer
/// ones are a bug in the caller and are refused by a debug assertion (in release they would
/// be cut short by the length's width, and the receiver would reject the stream).
pub fn encode_record(fragment: &[u8], out: &mut BytesMut) {
    debug_assert!(!fragment.is_empty() && fragment.len() <= MAX_RECORD);
    let len = u16::try_from(fragment.len()).unwrap_or(u16::MAX);
    out.reserve(RECORD_PREFIX + fragment.len());
    out.put_u16(len);
    out.put_slice(&fragment[..usize::from(len)]);
}

/// Gathers a frame's fragments, as the sender hands them out one by one, into the bytes of the
/// frame's stream (both shells' writers use it).
#[derive(Debug, Default)]
pub struct FrameCollector {
    current: Option<(u64, BytesMut)>,
}

impl FrameCollector {
    /// A collector holding nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a frame is part-way collected (its next fragment must be taken before the next
    /// frame starts).
    pub fn is_collecting(&self) -> bool {
        self.current.is_some()
    }

    /// Adds fragment `data` of frame `seq` as a record; with its frame's `last` fragment,
    /// returns the whole stream. A fragment of another frame starts that frame afresh (the
    /// sender never interleaves frames; what was collected is dropped).
    pub fn push(&mut self, seq: u64, data: &[u8], last: bool) -> Option<Bytes> {
        let buf = match &mut self.current {
            Some((s, buf)) if *s == seq => buf,
            slot => &mut slot.insert((seq, BytesMut::new())).1,
        };
        encode_record(data, buf);
        if last {
            self.current.take().map(|(_, b)| b.freeze())
        } else {
            None
        }
    }
}

/// Cuts a frame stream's bytes into records.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    buf: BytesMut,
    failed: bool,
}

impl RecordDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream and returns the records they complete. After an
    /// error the stream is worthless: the decoder returns nothing more.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<Bytes>, RecordError> {
        let mut out = Vec::new();
        if self.failed {
            return Ok(out);
        }
        while !data.is_empty() || self.whole_record_buffered() {
            // Take what completes the prefix, then what completes the record; never more than
            // one record's bytes are held.
            let need = match self.expected_len() {
                None => RECORD_PREFIX - self.buf.len(),
                Some(Err(e)) => {
                    self.failed = true;
                    self.buf = BytesMut::new();
                    return Err(e);
                }
                Some(Ok(len)) => RECORD_PREFIX + len - self.buf.len(),
            };
            if need == 0 {
                let mut rec = self.buf.split();
                rec.advance(RECORD_PREFIX);
                out.push(rec.freeze());
                continue;
            }
            let take = need.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// The stream ended: fine between records, an error inside one.
    pub fn finish(&mut self) -> Result<(), RecordError> {
        if self.failed || self.buf.is_empty() {
            return Ok(());
        }
        let held = self.buf.len();
        self.buf = BytesMut::new();
        self.failed = true;
        Err(RecordError::Truncated(held))
    }

    /// Bytes held for an incomplete record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length of the record being read, once its prefix is in; an error if it is invalid.
    fn expected_len(&self) -> Option<Result<usize, RecordError>> {
        if self.buf.len() < RECORD_PREFIX {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        Some(match len {
            0 => Err(RecordError::Empty),
            l if l > MAX_RECORD => Err(RecordError::TooLong(l)),
            l => Ok(l),
        })
    }

    fn whole_record_buffered(&self) -> bool {
        matches!(self.expected_len(), Some(Ok(l)) if self.buf.len() == RECORD_PREFIX + l)
            || matches!(self.expected_len(), Some(Err(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for r in records {
            encode_record(r, &mut out);
        }
        out.to_vec()
    }

    #[test]
    fn records_come_out_whole_however_the_stream_is_chunked() {
        let records = vec![vec![1u8; 3], vec![2u8; 1], vec![3u8; 300]];
        let bytes = encode_all(&records);
        assert_eq!(bytes.len(), 3 * RECORD_PREFIX + 304);
        let mut d = RecordDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(d.push(std::slice::from_ref(b)).unwrap());
            assert!(d.buffered() <= RECORD_PREFIX + 300);
        }
        assert_eq!(d.finish(), Ok(()));
        let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
        assert_eq!(got, records);
    }

    #[test]
    fn bad_lengths_and_truncation_are_errors_and_stop_the_stream() {
        let mut d = RecordDecoder::new();
        assert_eq!(d.push(&[0, 0, 9]), Err(RecordError::Empty));
        // Nothing more comes out of a failed stream.
        assert_eq!(d.push(&encode_all(&[vec![1]])), Ok(vec![]));

        let mut d = RecordDecoder::new();
        let too_long = u16::try_from(MAX_RECORD + 1).unwrap().to_be_bytes();
        assert_eq!(d.push(&too_long), Err(RecordError::TooLong(MAX_RECORD + 1)));

        let mut d = RecordDecoder::new();
        assert_eq!(d.push(&[0, 4, 1, 2]), Ok(vec![]));
        assert_eq!(d.finish(), Err(RecordError::Truncated(4)));
        let mut d = RecordDecoder::new();
        assert_eq!(d.push(&[0]), Ok(vec![]));
        assert_eq!(d.finish(), Err(RecordError::Truncated(1)));
    }

    #[test]
    fn a_frames_fragments_become_one_stream_of_records() {
        let mut c = FrameCollector::new();
        assert!(!c.is_collecting());
        assert_eq!(c.push(4, b"ab", false), None);
        assert!(c.is_collecting());
        let stream = c.push(4, b"c", true).unwrap();
        assert!(!c.is_collecting());
        let mut d = RecordDecoder::new();
        let got: Vec<Vec<u8>> = d
            .push(&stream)
            .unwrap()
            .iter()
            .map(|b| b.to_vec())
            .collect();
        assert_eq!(got, vec![b"ab".to_vec(), b"c".to_vec()]);
        // Another frame's fragment starts afresh.
        c.push(5, b"x", false);
        assert_eq!(c.push(6, b"y", true).unwrap().as_ref(), &[0, 1, b'y']);
    }

    proptest! {
        #[test]
        fn decoding_inverts_encoding_at_any_cut(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..600), 0..8),
            cuts in proptest::collection::vec(1usize..700, 0..20),
        ) {
            let bytes = encode_all(&records);
            let mut d = RecordDecoder::new();
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            for c in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at((*c).min(rest.len()));
                got.extend(d.push(now).unwrap());
                rest = later;
            }
            prop_assert_eq!(d.finish(), Ok(()));
            let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, records);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_hold_at_most_one_record(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10),
        ) {
            let mut d = RecordDecoder::new();
            for c in &chunks {
                if let Ok(recs) = d.push(c) {
                    for r in recs {
                        prop_assert!(!r.is_empty() && r.len() <= MAX_RECORD);
                    }
                }
                prop_assert!(d.buffered() <= RECORD_PREFIX + MAX_RECORD);
            }
            let _ = d.finish();
        }
    }
}
