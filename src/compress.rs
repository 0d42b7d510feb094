//! Per-frame compression: raw DEFLATE (RFC 1951) with flate2's zlib-rs backend.
//!
//! A frame that does not shrink is sent as it is (its COMPRESSED flag clear). Encoded media
//! rarely shrinks, so after a frame fails to, the [`Compressor`] skips the next frames with an
//! exponential back-off (1, 2, 4 … 32 frames) and tries again; the first frame that shrinks
//! resets it. Decompression is bounded: it never produces more than the length the header
//! declares, which the receiver has already checked against its frame-size limit.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Longest back-off, in frames, after frames failed to shrink.
const MAX_BACKOFF: u32 = 32;

/// Compression setting: off, or a DEFLATE level 0 (store) to 9 (smallest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressLevel {
    /// Never compress.
    Off,
    /// Compress at this level (0..=9).
    Level(u8),
    /// Level 1: fastest, the default for live media.
    #[default]
    Fast,
}

impl CompressLevel {
    fn level(self) -> Option<u32> {
        match self {
            Self::Off => None,
            Self::Fast => Some(1),
            Self::Level(l) => Some(u32::from(l.min(9))),
        }
    }
}

impl std::str::FromStr for CompressLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Self::Off),
            _ => match s.parse::<u8>() {
                Ok(l) if l <= 9 => Ok(Self::Level(l)),
                _ => Err(format!(
                    "compression level `{s}`: use a level 0-9, or `off`"
                )),
            },
        }
    }
}

impl std::fmt::Display for CompressLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level() {
            None => f.write_str("off"),
            Some(l) => write!(f, "{l}"),
        }
    }
}

/// Counters of the compressor, for the session report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressStats {
    /// Frames sent compressed.
    pub compressed: u64,
    /// Frames tried that did not shrink, sent as they are.
    pub incompressible: u64,
    /// Frames not tried because of the back-off.
    pub skipped: u64,
}

/// Compresses frames, reusing its DEFLATE state and scratch buffer.
pub struct Compressor {
    level: Option<u32>,
    deflate: Option<Compress>,
    scratch: Vec<u8>,
    backoff: u32,
    skip_left: u32,
    stats: CompressStats,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("level", &self.level)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Compressor {
    /// A compressor at `level`.
    pub fn new(level: CompressLevel) -> Self {
        let level = level.level();
        Self {
            level,
            deflate: level.map(|l| Compress::new(Compression::new(l), false)),
            scratch: Vec::new(),
            backoff: 0,
            skip_left: 0,
            stats: CompressStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CompressStats {
        self.stats
    }

    /// The frame compressed, if compression is on and the result is smaller; `None` means send
    /// `input` as it is.
    pub fn compress(&mut self, input: &[u8]) -> Option<Bytes> {
        let deflate = self.deflate.as_mut()?;
        if self.skip_left > 0 {
            self.skip_left -= 1;
            self.stats.skipped += 1;
            return None;
        }
        deflate.reset();
        self.scratch.clear();
        // Anything not smaller than the input is useless, but DEFLATE gets room for its worst
        // case anyway (static codes spend up to 9 bits per byte, plus block headers): zlib-rs
        // 0.6's level-1 path panics when its output runs out mid-block (found by the peers
        // benchmark: incompressible 1316-byte frames), so the size is checked after, not
        // enforced by the buffer.
        self.scratch
            .reserve(input.len() + input.len() / 8 + COMPRESS_SLACK);
        let limit = input.len().saturating_sub(1);
        // A panic inside the DEFLATE library must not take the session down with it (one did,
        // see above): the frame goes raw, and the stream state is made anew.
        let scratch = &mut self.scratch;
        let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deflate.compress_vec(input, scratch, FlushCompress::Finish)
        }));
        let Ok(status) = status else {
            tracing::warn!(
                len = input.len(),
                "the compressor failed; frame sent uncompressed"
            );
            self.deflate = self
                .level
                .map(|l| Compress::new(Compression::new(l), false));
            self.stats.incompressible += 1;
            return None;
        };
        let done = matches!(status, Ok(Status::StreamEnd))
            && deflate.total_in() == input.len() as u64
            && self.scratch.len() <= limit;
        if done && !input.is_empty() {
            self.backoff = 0;
            self.stats.compressed += 1;
            Some(Bytes::copy_from_slice(&self.scratch))
        } else {
            self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
            self.skip_left = self.backoff;
            self.stats.incompressible += 1;
            None
        }
    }
}

/// Output room DEFLATE gets beyond 9/8 of its input (block headers, the final flush).
const COMPRESS_SLACK: usize = 256;

/// Why a compressed frame could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The stream inflates to more than the declared length (a decompression bomb or a lie).
    #[error("frame inflates past its declared {declared} bytes")]
    TooLarge {
        /// The declared uncompressed length.
        declared: usize,
    },
    /// The stream ended before producing the declared length.
    #[error("frame inflates to {got} bytes, {declared} declared")]
    TooShort {
        /// Bytes produced.
        got: usize,
        /// The declared uncompressed length.
        declared: usize,
    },
    /// The DEFLATE stream is corrupt or truncated.
    #[error("corrupt DEFLATE stream")]
    Corrupt,
}

/// Restores compressed frames, reusing its inflate state.
pub struct Decompressor {
    inflate: Decompress,
}

impl std::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor").finish_non_exhaustive()
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Self {
            inflate: Decompress::new(false),
        }
    }
}

impl Decompressor {
    /// Inflates `input`, which must produce exactly `declared` bytes. Never allocates more than
    /// `declared + 1` bytes, and no more than the input can really produce as it goes.
    pub fn decompress(&mut self, input: &[u8], declared: usize) -> Result<Bytes, DecompressError> {
        // The input is the network's: a panic inside the DEFLATE library must cost this frame,
        // not the session (the state is made anew).
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inflate_checked(input, declared)
        })) {
            Ok(r) => r,
            Err(_) => {
                self.inflate = Decompress::new(false);
                Err(DecompressError::Corrupt)
            }
        }
    }

    fn inflate_checked(&mut self, input: &[u8], declared: usize) -> Result<Bytes, DecompressError> {
        self.inflate.reset(false);
        // DEFLATE expands by at most 1032:1; start small and grow so that a lying header
        // cannot make us allocate its claim up front.
        let cap = declared.saturating_add(1);
        let mut out =
            Vec::with_capacity(cap.min(input.len().saturating_mul(4).saturating_add(4096)));
        loop {
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            // Never past the end: total_in counts only bytes taken from `input`.
            let consumed = usize::try_from(before_in)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let status = self
                .inflate
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Finish)
                .map_err(|_| DecompressError::Corrupt)?;
            if out.len() > declared {
                return Err(DecompressError::TooLarge { declared });
            }
            match status {
                Status::StreamEnd => break,
                Status::Ok | Status::BufError => {
                    let progressed = self.inflate.total_in() != before_in
                        || self.inflate.total_out() != before_out;
                    if out.len() == out.capacity() && out.capacity() < cap {
                        let grow = out.capacity().max(4096).min(cap - out.capacity());
                        out.reserve_exact(grow);
                    } else if !progressed {
                        // Input exhausted without the end of the stream.
                        return Err(DecompressError::Corrupt);
                    }
                }
            }
        }
        if self.inflate.total_in() != input.len() as u64 {
            // Bytes after the end of the DEFLATE stream: not what a sender produces.
            return Err(DecompressError::Corrupt);
        }
        if out.len() != declared {
            return Err(DecompressError::TooShort {
                got: out.len(),
                declared,
            });
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(n: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog. "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn text_shrinks_and_restores() {
        let mut c = Compressor::new(CompressLevel::Level(6));
        let input = text(10_000);
        let packed = c.compress(&input).expect("text compresses");
        assert!(packed.len() < input.len() / 10);
        let out = Decompressor::default()
            .decompress(&packed, input.len())
            .unwrap();
        assert_eq!(&out[..], &input[..]);
        assert_eq!(c.stats().compressed, 1);
    }

    #[test]
    fn noise_is_sent_raw_and_backs_off() {
        let mut c = Compressor::new(CompressLevel::Fast);
        assert!(c.compress(&noise(2000, 1)).is_none());
        assert_eq!(c.stats().incompressible, 1);
        // Back-off of one frame: the next is skipped, the one after tried (and fails, backoff 2).
        assert!(c.compress(&text(2000)).is_none());
        assert_eq!(c.stats().skipped, 1);
        assert!(c.compress(&noise(2000, 2)).is_none());
        assert_eq!(c.stats().incompressible, 2);
        assert!(c.compress(&text(2000)).is_none());
        assert!(c.compress(&text(2000)).is_none());
        assert_eq!(c.stats().skipped, 3);
        // Tried again, shrinks, resets the back-off.
        assert!(c.compress(&text(2000)).is_some());
        assert!(c.compress(&text(2000)).is_some());
    }

    #[test]
    fn off_never_compresses() {
        let mut c = Compressor::new(CompressLevel::Off);
        assert!(c.compress(&text(5000)).is_none());
        assert_eq!(c.stats(), CompressStats::default());
    }

    #[test]
    fn bomb_is_stopped_at_the_declared_length() {
        let mut c = Compressor::new(CompressLevel::Level(9));
        let zeros = vec![0u8; 50 << 20]; // 50 MiB of zeros deflate to ~50 KiB
        let bomb = c.compress(&zeros).unwrap();
        assert!(bomb.len() < 100_000);
        let err = Decompressor::default()
            .decompress(&bomb, 1 << 20)
            .unwrap_err();
        assert_eq!(err, DecompressError::TooLarge { declared: 1 << 20 });
    }

    #[test]
    fn short_and_corrupt_streams_are_named() {
        let mut c = Compressor::new(CompressLevel::Fast);
        let input = text(4000);
        let packed = c.compress(&input).unwrap();
        let mut d = Decompressor::default();
        assert_eq!(
            d.decompress(&packed, 5000),
            Err(DecompressError::TooShort {
                got: 4000,
                declared: 5000
            })
        );
        assert_eq!(
            d.decompress(&packed[..packed.len() / 2], 4000),
            Err(DecompressError::Corrupt)
        );
        assert_eq!(
            d.decompress(&[0xff; 64], 4000),
            Err(DecompressError::Corrupt)
        );
        let mut trailing = packed.to_vec();
        trailing.extend_from_slice(b"junk");
        assert_eq!(d.decompress(&trailing, 4000), Err(DecompressError::Corrupt));
        // The decompressor recovers after errors.
        assert_eq!(&d.decompress(&packed, 4000).unwrap()[..], &input[..]);
    }

    /// Regression: zlib-rs 0.6's level-1 path panicked ("buf.len() must fit in remaining()")
    /// on incompressible frames when the output buffer was one byte short of the input (found
    /// by `cargo bench --bench peers`, 1316-byte frames). One compressor, reused, as a session
    /// uses it.
    #[test]
    fn incompressible_frames_of_any_size_do_not_panic_at_any_level() {
        for level in [
            CompressLevel::Fast,
            CompressLevel::Level(6),
            CompressLevel::Level(9),
        ] {
            let mut c = Compressor::new(level);
            for (i, len) in [1316usize, 1000, 1500, 188, 4000, 65_000]
                .iter()
                .cycle()
                .take(600)
                .enumerate()
            {
                c.skip_left = 0; // try every frame, not one in a back-off
                assert!(c.compress(&noise(*len, i as u64 + 1)).is_none());
            }
            assert_eq!(c.stats().incompressible, 600);
        }
    }

    #[test]
    fn parses_levels() {
        assert_eq!("off".parse(), Ok(CompressLevel::Off));
        assert_eq!("6".parse(), Ok(CompressLevel::Level(6)));
        assert!("10".parse::<CompressLevel>().unwrap_err().contains("0-9"));
        assert!("fast".parse::<CompressLevel>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips_any_input(input in proptest::collection::vec(any::<u8>(), 0..5000), level in 0u8..10) {
            let mut c = Compressor::new(CompressLevel::Level(level));
            if let Some(packed) = c.compress(&input) {
                prop_assert!(packed.len() < input.len());
                let out = Decompressor::default().decompress(&packed, input.len()).unwrap();
                prop_assert_eq!(&out[..], &input[..]);
            }
        }

        #[test]
        fn garbage_never_panics_or_overruns(input in proptest::collection::vec(any::<u8>(), 0..2000), declared in 0usize..100_000) {
            if let Ok(out) = Decompressor::default().decompress(&input, declared) {
                prop_assert_eq!(out.len(), declared);
            }
        }
    }
}
