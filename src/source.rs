//! Synthetic frame sources, sans-IO: each says when its next frame is due and produces it when
//! polled at or after that time. Every draw comes from a seeded RNG, so a source with the same
//! seed produces the same frames.
//!
//! - **video**: `fps` frames per second averaging `bitrate`; every `keyframe_interval`-th frame is
//!   a keyframe [`KEYFRAME_RATIO`] times the size of a delta frame; sizes vary ±20 %. Frame bytes
//!   resemble an encoded stream in a container: mostly high-entropy bytes with a quarter in
//!   zero-filled runs (stuffing), so DEFLATE shrinks them by roughly a quarter.
//! - **audio**: 50 frames per second of [`AUDIO_FRAME_BYTES`] bytes (20 ms of 64 kbit/s Opus).
//! - **fixed**: `fps` frames of exactly `frame_size` bytes.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::{Rng, RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

/// Keyframes are this many times larger than delta frames.
pub const KEYFRAME_RATIO: f64 = 8.0;
/// Bytes of an audio frame.
pub const AUDIO_FRAME_BYTES: usize = 160;
/// Frames per second of the audio source.
pub const AUDIO_FPS: f64 = 50.0;

/// Which synthetic source, and its shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SourceKind {
    /// Video-like frames.
    Video {
        /// Frames per second.
        fps: f64,
        /// Average bit rate, bit/s.
        bitrate: u64,
        /// A keyframe every this many frames (1 = all keyframes).
        keyframe_interval: u32,
    },
    /// Audio-like frames: 50 per second, small and fixed.
    Audio,
    /// Fixed-size frames.
    Fixed {
        /// Frames per second.
        fps: f64,
        /// Bytes per frame.
        frame_size: usize,
    },
}

impl Default for SourceKind {
    /// 30 fps, 2 Mbit/s video with a keyframe every 2 s.
    fn default() -> Self {
        Self::Video {
            fps: 30.0,
            bitrate: 2_000_000,
            keyframe_interval: 60,
        }
    }
}

impl SourceKind {
    /// Frames per second.
    pub fn fps(&self) -> f64 {
        match *self {
            Self::Video { fps, .. } | Self::Fixed { fps, .. } => fps,
            Self::Audio => AUDIO_FPS,
        }
    }

    /// Checks the parameters, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let fps = self.fps();
        if !(fps.is_finite() && (0.01..=100_000.0).contains(&fps)) {
            return Err(format!(
                "frame rate {fps}: use 0.01 to 100000 frames per second"
            ));
        }
        match *self {
            Self::Video {
                bitrate,
                keyframe_interval,
                ..
            } => {
                if keyframe_interval == 0 {
                    return Err("keyframe interval 0: use 1 or more frames".into());
                }
                let avg = bitrate as f64 / 8.0 / fps;
                if avg * KEYFRAME_RATIO > f64::from(64u32 << 20) {
                    return Err(format!(
                        "bitrate {bitrate} bit/s at {fps} fps makes keyframes over 64 MiB: lower --bitrate or raise --fps"
                    ));
                }
            }
            Self::Fixed { frame_size, .. } if frame_size > 64 << 20 => {
                return Err(format!("frame size {frame_size}: at most 64 MiB"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A frame from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// When the frame was captured.
    pub capture: Instant,
    /// Whether it is a keyframe.
    pub keyframe: bool,
    /// The frame bytes.
    pub data: Bytes,
}

/// A synthetic source. See the module documentation.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    kind: SourceKind,
    start: Instant,
    /// Nanoseconds between frames (not rounded: frame `i` is due at `i × period` rounded once,
    /// so that 30 fps puts frame 120 at exactly 4 s).
    period_ns: f64,
    index: u64,
    rng: Xoshiro256PlusPlus,
    /// A lower bit rate to produce (rate adaptation), video only.
    target_bps: Option<u64>,
}

impl SyntheticSource {
    /// A source whose first frame is due at `start`.
    pub fn new(kind: SourceKind, seed: u64, start: Instant) -> Self {
        let period_ns = 1e9 / kind.fps().max(0.01);
        Self {
            kind,
            start,
            period_ns,
            index: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            target_bps: None,
        }
    }

    /// Produces at most `bps` from now on (a video source shrinks its frames; the others,
    /// whose frames have a fixed size, are not affected). `None`: the configured rate.
    pub fn set_target_bitrate(&mut self, bps: Option<u64>) {
        self.target_bps = bps;
    }

    /// The bit rate the source produces now (video), bit/s.
    pub fn bitrate(&self) -> Option<u64> {
        match self.kind {
            SourceKind::Video { bitrate, .. } => {
                Some(self.target_bps.map_or(bitrate, |t| t.min(bitrate)))
            }
            _ => None,
        }
    }

    /// Frames produced so far.
    pub fn produced(&self) -> u64 {
        self.index
    }

    /// When the next frame is due (frame `i` at `start + i × period`, without drift).
    pub fn next_due(&self) -> Instant {
        // `as` saturates: a source running for centuries stops at u64::MAX ns.
        let nanos = (self.index as f64 * self.period_ns).round() as u64;
        self.start + Duration::from_nanos(nanos)
    }

    /// The next frame, if it is due at `now`. Its capture time is `now`: the moment the frame
    /// is taken from the source, so a shell that wakes late does not count its own lateness as
    /// transport delay (in virtual time the two are equal).
    pub fn poll(&mut self, now: Instant) -> Option<SourceFrame> {
        let due = self.next_due();
        if due > now {
            return None;
        }
        let (keyframe, size) = self.next_shape();
        let mut buf = BytesMut::zeroed(size);
        self.fill(&mut buf);
        self.index += 1;
        Some(SourceFrame {
            capture: now,
            keyframe,
            data: buf.freeze(),
        })
    }

    fn next_shape(&mut self) -> (bool, usize) {
        match self.kind {
            SourceKind::Video {
                fps,
                bitrate,
                keyframe_interval,
            } => {
                let bitrate = self.target_bps.map_or(bitrate, |t| t.min(bitrate).max(1));
                let k = f64::from(keyframe_interval.max(1));
                let avg = bitrate as f64 / 8.0 / fps;
                let delta = avg * k / (k - 1.0 + KEYFRAME_RATIO);
                let keyframe = self
                    .index
                    .is_multiple_of(u64::from(keyframe_interval.max(1)));
                let base = if keyframe {
                    delta * KEYFRAME_RATIO
                } else {
                    delta
                };
                let vary: f64 = self.rng.random_range(0.8..1.2);
                (keyframe, (base * vary).round().max(1.0) as usize)
            }
            SourceKind::Audio => (true, AUDIO_FRAME_BYTES),
            SourceKind::Fixed { frame_size, .. } => (true, frame_size),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_mut(64);
        // First 8 bytes: the frame index, for eyeballing captures.
        if let Some(first) = chunks.next() {
            self.rng.fill_bytes(first);
            let n = first.len().min(8);
            first[..n].copy_from_slice(&self.index.to_be_bytes()[..n]);
        }
        let video = matches!(
            self.kind,
            SourceKind::Video { .. } | SourceKind::Fixed { .. }
        );
        for chunk in chunks {
            if video && self.rng.random_ratio(1, 4) {
                chunk.fill(0);
            } else {
                self.rng.fill_bytes(chunk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fall_on_exact_multiples_of_the_frame_interval() {
        let t0 = crate::test_instant();
        let kind = SourceKind::Video {
            fps: 30.0,
            bitrate: 2_000_000,
            keyframe_interval: 60,
        };
        let mut s = SyntheticSource::new(kind, 1, t0);
        for _ in 0..120 {
            let due = s.next_due();
            assert!(s.poll(due).is_some());
        }
        // No drift from a truncated period: frame 120 is due at 4 s exactly, not before.
        assert_eq!(s.next_due(), t0 + Duration::from_secs(4));
        assert_eq!(s.produced(), 120);
    }

    fn run(kind: SourceKind, seconds: u64) -> Vec<SourceFrame> {
        let t0 = crate::test_instant();
        let mut s = SyntheticSource::new(kind, 7, t0);
        let n = (kind.fps() * seconds as f64).round() as usize;
        let mut out = Vec::new();
        for _ in 0..n {
            let due = s.next_due();
            assert!(
                s.poll(due - Duration::from_nanos(1)).is_none(),
                "nothing before it is due"
            );
            out.push(s.poll(due).unwrap());
        }
        out
    }

    #[test]
    fn a_target_bitrate_shrinks_video_frames() {
        let t0 = crate::test_instant();
        let kind = SourceKind::default();
        let bytes = |target: Option<u64>| {
            let mut s = SyntheticSource::new(kind, 1, t0);
            s.set_target_bitrate(target);
            let mut total = 0;
            for i in 0..300u64 {
                let at = t0 + Duration::from_millis(i * 34);
                total += s.poll(at).map_or(0, |f| f.data.len());
            }
            total as f64
        };
        let full = bytes(None);
        let half = bytes(Some(1_000_000));
        assert!((0.45..0.55).contains(&(half / full)), "{half} / {full}");
        assert_eq!(
            bytes(Some(5_000_000)),
            full,
            "never above the configured rate"
        );
    }

    #[test]
    fn video_hits_its_bitrate_and_keyframe_cadence() {
        let frames = run(SourceKind::default(), 20);
        assert_eq!(frames.len(), 600);
        let bits: usize = frames.iter().map(|f| f.data.len() * 8).sum();
        let rate = bits as f64 / 20.0;
        assert!((rate / 2e6 - 1.0).abs() < 0.03, "rate {rate}");
        let keys: Vec<_> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, (0..600).step_by(60).collect::<Vec<_>>());
        let key = frames[0].data.len() as f64;
        let delta = frames[1..60].iter().map(|f| f.data.len()).sum::<usize>() as f64 / 59.0;
        assert!(
            (key / delta - KEYFRAME_RATIO).abs() < 2.5,
            "{key} vs {delta}"
        );
    }

    #[test]
    fn capture_times_follow_the_schedule_without_drift() {
        let frames = run(
            SourceKind::Fixed {
                fps: 1000.0,
                frame_size: 1000,
            },
            1,
        );
        assert_eq!(frames.len(), 1000);
        let gap = frames[999].capture - frames[0].capture;
        assert_eq!(gap, Duration::from_millis(999));
        let t0 = crate::test_instant();
        let mut s = SyntheticSource::new(SourceKind::Audio, 1, t0);
        s.poll(t0).unwrap();
        let late = t0 + Duration::from_millis(25);
        assert_eq!(s.poll(late).unwrap().capture, late, "stamped when taken");
        assert_eq!(
            s.next_due(),
            t0 + Duration::from_millis(40),
            "the schedule does not drift"
        );
        assert!(frames.iter().all(|f| f.data.len() == 1000));
    }

    #[test]
    fn audio_is_small_and_regular() {
        let frames = run(SourceKind::Audio, 2);
        assert_eq!(frames.len(), 100);
        assert!(frames.iter().all(|f| f.data.len() == AUDIO_FRAME_BYTES));
    }

    #[test]
    fn same_seed_same_frames() {
        let shape = |fs: Vec<SourceFrame>| {
            fs.into_iter()
                .map(|f| (f.keyframe, f.data))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shape(run(SourceKind::default(), 1)),
            shape(run(SourceKind::default(), 1))
        );
    }

    #[test]
    fn late_polls_catch_up_one_frame_at_a_time() {
        let t0 = crate::test_instant();
        let mut s = SyntheticSource::new(SourceKind::Audio, 1, t0);
        let late = t0 + Duration::from_millis(100);
        let mut n = 0;
        while let Some(f) = s.poll(late) {
            assert!(f.capture <= late);
            n += 1;
        }
        assert_eq!(n, 6, "frames due at 0, 20, ... 100 ms");
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(SourceKind::default().validate().is_ok());
        let bad = SourceKind::Video {
            fps: 0.0,
            bitrate: 1,
            keyframe_interval: 1,
        };
        assert!(bad.validate().unwrap_err().contains("frame rate"));
        let bad = SourceKind::Video {
            fps: 1.0,
            bitrate: 10_000_000_000,
            keyframe_interval: 10,
        };
        assert!(bad.validate().unwrap_err().contains("--bitrate"));
        let bad = SourceKind::Fixed {
            fps: 1.0,
            frame_size: usize::MAX,
        };
        assert!(bad.validate().unwrap_err().contains("64 MiB"));
    }
}
