//! The jitter buffer: releases complete frames in sequence order at capture time + a target delay.
//!
//! Times here are microseconds on the receiver's clock (see [`crate::clock`]); capture times are
//! on the sender's clock. A frame plays at `capture_us + target_raw`, where `target_raw` is the
//! target delay *including* the unknown clock offset. Working in raw transit times keeps the
//! adaptive target independent of the offset estimate: the estimate can improve while the
//! playout schedule stays put. Only [`JitterMode::Fixed`], whose target is an absolute
//! end-to-end delay, needs the offset.
//!
//! Rules:
//! - frames are released strictly in sequence order, never out of it;
//! - a frame that completes after its playout time is counted late and dropped — except, in
//!   adaptive mode, while playout has not passed it (no later frame has played) and it needs
//!   at most `max_stall` more (a retransmitted one: or one more recovery round): then the
//!   target rises to play it, a stall rather than a loss (counted `stretched`). A frame
//!   delayed by a scheduling hiccup or a delay spike is thus played late rather than lost,
//!   and the target that rose for it falls back as any other;
//! - a missing frame is skipped (counted lost) when a later frame is due;
//! - a frame that completes after it was skipped moves from lost to late.
//!
//! Bounded: at most `max_frames` frames and `max_bytes` bytes are held; a frame that does not
//! fit is dropped (counted in `overflow`, and lost when playout passes it).
//!
//! **Adaptive target.** The target follows a high percentile (default the 99th) of the transit
//! times of the frames of the last `window`, plus `headroom`. It rises at once when a frame
//! needs more, and falls smoothly (exponentially, time constant `decay`), so a burst of delay
//! raises the playout delay before the next frames are late, and quiet periods bring it back
//! without jumps. WebRTC's NetEq follows the 95th percentile for audio, where a late packet is
//! concealed; a late video frame is lost, so rtq aims higher.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::seqmap::SeqMap;
use crate::sorted::SortedBlocks;
use crate::wire::datagram::FrameFlags;

/// How the playout delay is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum JitterMode {
    /// Play every frame exactly this long after its capture (end-to-end delay).
    Fixed(Duration),
    /// Follow the observed delay (see the module documentation).
    #[default]
    Adaptive,
}

impl std::str::FromStr for JitterMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "adaptive" {
            return Ok(Self::Adaptive);
        }
        if let Some(d) = s.strip_prefix("fixed:") {
            return crate::units::parse_duration(d)
                .map(Self::Fixed)
                .map_err(|e| format!("jitter mode `{s}`: {e}"));
        }
        Err(format!(
            "jitter mode `{s}`: use `adaptive` or `fixed:DURATION` (e.g. fixed:50ms)"
        ))
    }
}

impl std::fmt::Display for JitterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Adaptive => f.write_str("adaptive"),
            Self::Fixed(d) => write!(f, "fixed:{}", crate::units::format_duration(*d)),
        }
    }
}

/// Jitter buffer configuration. The defaults suit the public internet and loopback alike: they
/// follow the 99th percentile of the last 10 s with 2 ms of headroom, start 10 ms higher, and
/// fall back with a time constant of 1 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterConfig {
    /// Fixed or adaptive playout delay.
    pub mode: JitterMode,
    /// Percentile of recent transit times the adaptive target follows (0.5..=1.0).
    pub percentile: f64,
    /// Added to the percentile.
    pub headroom: Duration,
    /// Extra delay given to the first frame, decaying away: protects the start of a stream,
    /// before there are samples.
    pub start_margin: Duration,
    /// How far back samples count.
    pub window: Duration,
    /// Samples kept at most (the oldest go first).
    pub max_samples: usize,
    /// Time constant of the target's fall.
    pub decay: Duration,
    /// Lowest end-to-end target.
    pub min_delay: Duration,
    /// Most the adaptive target rises at once to play a frame that completed after its
    /// playout time before playout passed it (zero: never).
    pub max_stall: Duration,
    /// Highest end-to-end target; frames needing more are late.
    pub max_delay: Duration,
    /// Frames held at most.
    pub max_frames: usize,
    /// Bytes held at most.
    pub max_bytes: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            mode: JitterMode::Adaptive,
            percentile: 0.99,
            headroom: Duration::from_millis(2),
            start_margin: Duration::from_millis(10),
            window: Duration::from_secs(10),
            max_samples: 4096,
            decay: Duration::from_secs(1),
            min_delay: Duration::ZERO,
            max_stall: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_frames: 4096,
            max_bytes: 256 << 20,
        }
    }
}

/// A complete, decompressed frame waiting to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyFrame {
    /// Sequence number.
    pub seq: u64,
    /// Capture time, µs on the sender's clock.
    pub capture_us: u64,
    /// Frame flags.
    pub flags: FrameFlags,
    /// The frame.
    pub data: Bytes,
    /// When it became complete, µs on the receiver's clock.
    pub complete_us: u64,
    /// It needed a retransmission: its transit says how long recovery took, not how the
    /// network delays frames, so it does not move the adaptive target (the recovery
    /// allowance makes room for it).
    pub retransmitted: bool,
}

/// A frame released by the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayedFrame {
    /// The frame.
    pub frame: ReadyFrame,
    /// When it was released, µs on the receiver's clock.
    pub played_us: u64,
}

/// What [`JitterBuffer::insert`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Held until its playout time.
    Buffered,
    /// Its playout time had passed (or playout had moved past it): counted late, dropped.
    Late,
    /// Already held or already played.
    Duplicate,
    /// No room: dropped.
    Overflow,
    /// Due further ahead than the maximum delay (a capture time in the future): dropped, as it
    /// would hold back every frame after it.
    TooEarly,
}

/// Counters of the jitter buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Frames released on time.
    pub played: u64,
    /// Frames complete after their playout time.
    pub late: u64,
    /// Frames skipped by playout without having completed.
    pub lost: u64,
    /// Frames dropped for lack of room.
    pub overflow: u64,
    /// Frames dropped because their playout time was beyond the maximum delay.
    pub too_early: u64,
    /// Frames that completed past their playout time before playout had passed them, and
    /// played because the adaptive target rose for them (counted in `played` too).
    pub stretched: u64,
}

#[derive(Debug)]
enum Slot {
    Frame(ReadyFrame),
    /// A frame that completed late: playout passes it without counting it lost.
    Late,
}

/// A [`JitterConfig`]'s durations in µs.
#[derive(Debug, Clone, Copy)]
struct ConfigMicros {
    headroom: i64,
    min_delay: i64,
    max_delay: i64,
    max_stall: i64,
    /// `max_delay`, as the distance ahead of now past which a frame is too early.
    horizon: u64,
    window: u64,
    /// The decay's time constant (at least 1 µs).
    tau: f64,
}

impl ConfigMicros {
    fn of(cfg: &JitterConfig) -> Self {
        Self {
            headroom: micros(cfg.headroom),
            min_delay: micros(cfg.min_delay),
            max_delay: micros(cfg.max_delay),
            max_stall: micros(cfg.max_stall),
            horizon: u64::try_from(micros(cfg.max_delay)).unwrap_or(u64::MAX),
            window: u64::try_from(micros(cfg.window)).unwrap_or(0),
            tau: cfg.decay.as_micros().max(1) as f64,
        }
    }
}

/// The jitter buffer. See the module documentation.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    /// `cfg`'s durations in µs, converted once: every frame reads them.
    us: ConfigMicros,
    /// Frames (and late markers) by sequence number: they arrive mostly in order and leave
    /// from the smallest, which a [`SeqMap`] serves without a node allocation per frame.
    slots: SeqMap<u64, Slot>,
    bytes: usize,
    next_seq: u64,
    offset_us: i64,
    target_raw: Option<i64>,
    samples: SlidingWindow,
    last_decay_us: u64,
    /// Time a lost fragment needs to be asked for and sent again (0: no retransmission).
    recovery_us: i64,
    /// A late retransmitted frame may stretch the target ([`Self::set_stretch`]).
    stretch_ok: bool,
    /// The lowest transit percentile the adaptive goal was last made of, and when: a sample
    /// below it, within [`GOAL_REFRESH_US`], leaves the goal as it was.
    goal_floor: i64,
    last_goal_us: u64,
    stats: JitterStats,
}

/// Samples of the last `window` (at most `max` of them), with any percentile at hand: a
/// time-ordered ring plus the same values kept sorted in blocks ([`SortedBlocks`]). Adding a
/// sample and dropping the oldest each cost binary searches and a memory move within one
/// block; reading a percentile walks the blocks' lengths — no periodic sort that would stall
/// the receiver once in a while, and no move of the whole window per frame.
#[derive(Debug, Default)]
struct SlidingWindow {
    by_time: VecDeque<(u64, i64)>,
    sorted: SortedBlocks<i64>,
}

impl SlidingWindow {
    /// Adds `value` seen at `at`, then drops samples older than `horizon` or beyond `max`.
    fn push(&mut self, at: u64, value: i64, horizon: u64, max: usize) {
        self.by_time.push_back((at, value));
        self.sorted.insert(value);
        while self.by_time.len() > max || self.by_time.front().is_some_and(|&(t, _)| t < horizon) {
            let Some((_, old)) = self.by_time.pop_front() else {
                break;
            };
            self.sorted.remove(&old);
        }
    }

    /// The `p` quantile (0..=1) of the samples held (nearest rank), if any.
    fn percentile(&self, p: f64) -> Option<i64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ceil_usize(p.clamp(0.0, 1.0) * n as f64).clamp(1, n) - 1;
        self.sorted.get(rank)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_time.len()
    }
}

/// `x.ceil() as usize` for `x` in `0.0..=n` (`n` a count): the same value without `f64::ceil`,
/// which the baseline x86-64 target has no instruction for (a library call per percentile,
/// two per frame). Exact: `x` and every integer up to it are exact in `f64` (below 2^53).
fn ceil_usize(x: f64) -> usize {
    let t = x as usize;
    if (t as f64) < x { t + 1 } else { t }
}

/// The transit percentile the retransmission allowance is added to.
const RECOVERY_PERCENTILE: f64 = 0.95;

/// How long a sample below the percentiles the adaptive goal was made of may leave the goal
/// unrecomputed, µs.
const GOAL_REFRESH_US: u64 = 1_000;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl JitterBuffer {
    /// An empty buffer expecting sequence number 0 first.
    pub fn new(cfg: JitterConfig) -> Self {
        let mut jb = Self {
            cfg,
            us: ConfigMicros::of(&cfg),
            slots: SeqMap::new(),
            bytes: 0,
            next_seq: 0,
            offset_us: 0,
            target_raw: None,
            samples: SlidingWindow::default(),
            last_decay_us: 0,
            recovery_us: 0,
            stretch_ok: true,
            goal_floor: i64::MIN,
            last_goal_us: 0,
            stats: JitterStats::default(),
        };
        jb.apply_fixed();
        jb
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The next sequence number playout waits for.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Tells the buffer the current estimate of sender clock minus receiver clock.
    pub fn set_offset(&mut self, offset_us: i64) {
        self.offset_us = offset_us;
        self.apply_fixed();
    }

    fn apply_fixed(&mut self) {
        if let JitterMode::Fixed(d) = self.cfg.mode {
            self.target_raw = Some(micros(d).saturating_sub(self.offset_us));
        }
    }

    /// The end-to-end playout delay currently targeted, µs (None before the first frame in
    /// adaptive mode).
    pub fn target_delay_us(&self) -> Option<i64> {
        self.target_raw.map(|t| t.saturating_add(self.offset_us))
    }

    /// When a frame captured at `capture_us` (sender clock) plays, µs on the receiver's clock.
    pub fn playout_us(&self, capture_us: u64) -> Option<u64> {
        let t = self.target_raw?;
        Some(capture_us.saturating_add_signed(t))
    }

    fn clamp_raw(&self, raw: i64) -> i64 {
        let lo = self.us.min_delay.saturating_sub(self.offset_us);
        let hi = self.us.max_delay.saturating_sub(self.offset_us);
        raw.clamp(lo, hi.max(lo))
    }

    /// Adds a complete frame at `now_us`.
    pub fn insert(&mut self, now_us: u64, frame: ReadyFrame) -> Inserted {
        let seq = frame.seq;
        let retransmitted = frame.retransmitted;
        if seq < self.next_seq {
            // Playout already passed it, counting it lost; it completed after all.
            debug_assert!(
                self.stats.lost > 0,
                "a frame behind playout was counted lost"
            );
            self.stats.lost = self.stats.lost.saturating_sub(1);
            self.stats.late += 1;
            return Inserted::Late;
        }
        if self.slots.contains_key(&seq) {
            return Inserted::Duplicate;
        }
        let transit = crate::clock::diff_us(now_us, frame.capture_us);
        if self.target_raw.is_none() {
            let start = transit
                .saturating_add(self.us.headroom)
                .saturating_add(micros(self.cfg.start_margin));
            self.target_raw = Some(self.clamp_raw(start));
            self.last_decay_us = now_us;
        }
        let due = self.playout_us(frame.capture_us).unwrap_or(0);
        let horizon = now_us.saturating_add(self.us.horizon);
        let outcome = if due > horizon {
            self.stats.too_early += 1;
            return Inserted::TooEarly;
        } else if now_us > due && self.stretch(now_us, transit, retransmitted) {
            // Playout had not passed it: the target rose to play it (see `stretch`).
            self.stats.stretched += 1;
            self.buffer(frame)
        } else if now_us > due {
            // Without room for the marker, playout will count the frame lost instead; the
            // totals still add up.
            if self.slots.len() < self.cfg.max_frames {
                self.stats.late += 1;
                self.slots.insert(seq, Slot::Late);
            }
            Inserted::Late
        } else {
            self.buffer(frame)
        };
        if !retransmitted {
            self.add_sample(now_us, transit);
        }
        outcome
    }

    /// Holds `frame` if there is room.
    fn buffer(&mut self, frame: ReadyFrame) -> Inserted {
        if self.slots.len() >= self.cfg.max_frames
            || self.bytes + frame.data.len() > self.cfg.max_bytes
        {
            self.stats.overflow += 1;
            return Inserted::Overflow;
        }
        self.bytes += frame.data.len();
        self.slots.insert(frame.seq, Slot::Frame(frame));
        Inserted::Buffered
    }

    /// A frame completed `transit` after capture, past its playout time, but playout has not
    /// passed it (every frame since the last one played is missing or waiting too, as in a
    /// burst of loss that a retransmission repaired, or a delay spike). In adaptive mode the
    /// target rises at once to play it now — a stall instead of a loss — when that takes at
    /// most `max_stall` more than the target gave it, or for a retransmitted frame one more
    /// recovery round (the allowance). Returns whether it rose.
    fn stretch(&mut self, now_us: u64, transit: i64, retransmitted: bool) -> bool {
        if self.cfg.mode != JitterMode::Adaptive || !self.stretch_ok {
            return false;
        }
        let Some(current) = self.target_raw else {
            return false;
        };
        let want = self.clamp_raw(transit.saturating_add(self.us.headroom));
        // Bounded: a frame that needed more (a delay spike on a congested path, not a lost
        // fragment or a hiccup) would hold every later frame back as long.
        let limit = if retransmitted {
            self.recovery_us.max(self.us.max_stall)
        } else {
            self.us.max_stall
        };
        if limit == 0 || want < transit || want <= current || want > current.saturating_add(limit) {
            return false;
        }
        self.target_raw = Some(want);
        self.last_decay_us = now_us;
        true
    }

    fn add_sample(&mut self, now_us: u64, transit: i64) {
        // Kept in fixed mode too: the receiver tells from them when a frame should have come,
        // to ask for it as soon as it is overdue (`transit_percentile_us`).
        let horizon = now_us.saturating_sub(self.us.window);
        self.samples
            .push(now_us, transit, horizon, self.cfg.max_samples.max(1));
        if self.cfg.mode != JitterMode::Adaptive {
            return;
        }
        let Some(current) = self.target_raw else {
            return;
        };
        // A sample below every percentile the goal was made of cannot raise any of them (it
        // moves them down or leaves them); only samples leaving the window can, which time
        // takes care of: within `GOAL_REFRESH_US` such a sample changes nothing that matters
        // (the target falls with a 1 s time constant), and thousands of frames a second do
        // not each pay for two percentiles and an exponential.
        if transit < self.goal_floor && now_us < self.last_goal_us.saturating_add(GOAL_REFRESH_US) {
            return;
        }
        let p99 = self
            .samples
            .percentile(self.cfg.percentile)
            .unwrap_or(transit);
        // With retransmission, most frames must also have time for a lost fragment to be asked
        // for and sent again: the 95th percentile of transit plus the recovery time.
        let p95 = self.samples.percentile(RECOVERY_PERCENTILE);
        self.goal_floor = match p95 {
            Some(t) if self.recovery_us > 0 => t.min(p99),
            _ => p99,
        };
        self.last_goal_us = now_us;
        let recovery = match p95 {
            Some(t) if self.recovery_us > 0 => t.saturating_add(self.recovery_us),
            _ => i64::MIN,
        };
        let goal = self.clamp_raw(p99.max(recovery).saturating_add(self.us.headroom));
        let next = if goal >= current {
            goal
        } else {
            let dt = now_us.saturating_sub(self.last_decay_us) as f64;
            let tau = self.us.tau;
            let keep = (-dt / tau).exp();
            goal.saturating_add((current.saturating_sub(goal) as f64 * keep).round() as i64)
        };
        self.last_decay_us = now_us;
        self.target_raw = Some(next);
    }

    /// Makes room in the adaptive target for retransmission: a frame plays at least `d` after
    /// the 95th percentile of transit, so that a fragment lost on the way can be asked for and arrive
    /// (`d`: the time to notice the loss, ask, and receive the copy). `None` or zero: no
    /// room.
    pub fn set_recovery_allowance(&mut self, d: Option<Duration>) {
        self.recovery_us = d.map_or(0, micros);
        // The goal is made of other percentiles now: the next sample remakes it.
        self.goal_floor = i64::MIN;
        // Room is made at once (the target rises at once, as for any frame that needs more),
        // so that frames already waiting can be saved.
        if self.cfg.mode == JitterMode::Adaptive
            && self.recovery_us > 0
            && let (Some(current), Some(t)) = (
                self.target_raw,
                self.samples.percentile(RECOVERY_PERCENTILE),
            )
        {
            let goal = self.clamp_raw(
                t.saturating_add(self.recovery_us)
                    .saturating_add(self.us.headroom),
            );
            self.target_raw = Some(current.max(goal));
        }
    }

    /// Whether a retransmitted frame that completes past its playout time, before playout
    /// passed it, may stretch the adaptive target (on by default; the receiver turns it off on
    /// a path with a standing queue, where a late copy is a symptom of the queue, and waiting
    /// for it would hold every later frame back behind it).
    pub fn set_stretch(&mut self, on: bool) {
        self.stretch_ok = on;
    }

    /// When a frame captured at `capture_us` would play if the target made room for a
    /// recovery allowance `d` (whatever the allowance now is): to tell whether the room would
    /// save it. A fixed playout makes no room: then simply when the frame plays.
    pub fn playout_with_allowance_us(&self, capture_us: u64, d: Duration) -> Option<u64> {
        let current = self.playout_us(capture_us)?;
        if self.cfg.mode != JitterMode::Adaptive {
            // A fixed playout makes no room: the frame plays when it would.
            return Some(current);
        }
        let t = self.samples.percentile(RECOVERY_PERCENTILE)?;
        let raw = self.clamp_raw(t.saturating_add(micros(d)).saturating_add(self.us.headroom));
        Some(current.max(capture_us.saturating_add_signed(raw)))
    }

    /// The `p` quantile of the recent transit times (raw: receiver clock − capture), µs.
    pub fn transit_percentile_us(&self, p: f64) -> Option<i64> {
        self.samples.percentile(p)
    }

    /// When the next frame is due (µs, receiver clock), if any is held.
    pub fn next_due_us(&self) -> Option<u64> {
        match self.slots.first_key_value()? {
            (_, Slot::Late) => Some(0),
            (_, Slot::Frame(f)) => self.playout_us(f.capture_us),
        }
    }

    /// Releases the next frame if it is due at `now_us`. Call until it returns `None`.
    pub fn poll(&mut self, now_us: u64) -> Option<PlayedFrame> {
        loop {
            let (&seq, first) = self.slots.first_key_value()?;
            if let Slot::Frame(f) = first
                && self.playout_us(f.capture_us).is_none_or(|due| due > now_us)
            {
                return None;
            }
            let (_, slot) = self.slots.pop_first()?;
            self.stats.lost += seq - self.next_seq;
            self.next_seq = seq + 1;
            if let Slot::Frame(frame) = slot {
                self.bytes -= frame.data.len();
                self.stats.played += 1;
                return Some(PlayedFrame {
                    frame,
                    played_us: now_us,
                });
            }
        }
    }

    /// Releases every held frame now, in order, regardless of playout time (at shutdown, so that
    /// nothing received is lost). Frames are counted as played.
    pub fn flush(&mut self, now_us: u64) -> Vec<PlayedFrame> {
        let mut out = Vec::with_capacity(self.slots.len());
        while let Some((seq, slot)) = self.slots.pop_first() {
            self.stats.lost += seq - self.next_seq;
            self.next_seq = seq + 1;
            if let Slot::Frame(frame) = slot {
                self.bytes -= frame.data.len();
                self.stats.played += 1;
                out.push(PlayedFrame {
                    frame,
                    played_us: now_us,
                });
            }
        }
        out
    }

    /// Ends the stream at `end_seq` (the number of frames the sender transmitted): every frame
    /// before it not yet accounted for is lost. Held frames are dropped as lost; flush first to
    /// keep them.
    pub fn finish(&mut self, end_seq: u64) {
        while let Some((seq, slot)) = self.slots.pop_first() {
            if let Slot::Frame(f) = &slot {
                self.bytes -= f.data.len();
            }
            if !matches!(slot, Slot::Late) {
                self.stats.lost += 1;
            }
            self.stats.lost += seq - self.next_seq;
            self.next_seq = seq + 1;
        }
        if end_seq > self.next_seq {
            self.stats.lost += end_seq - self.next_seq;
            self.next_seq = end_seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1000;

    fn frame(seq: u64, capture_us: u64, complete_us: u64) -> ReadyFrame {
        ReadyFrame {
            seq,
            capture_us,
            flags: FrameFlags::empty(),
            data: Bytes::from(vec![seq as u8; 10]),
            complete_us,
            retransmitted: false,
        }
    }

    fn fixed(ms: u64) -> JitterBuffer {
        JitterBuffer::new(JitterConfig {
            mode: JitterMode::Fixed(Duration::from_millis(ms)),
            ..Default::default()
        })
    }

    /// Inserts frame `seq` captured at `seq * 33 ms`, completing at `capture + transit`.
    fn arrive(jb: &mut JitterBuffer, seq: u64, transit_ms: u64) -> Inserted {
        let c = seq * 33 * MS;
        jb.insert(c + transit_ms * MS, frame(seq, c, c + transit_ms * MS))
    }

    #[test]
    fn fixed_delay_plays_at_capture_plus_target() {
        let mut jb = fixed(50);
        assert_eq!(arrive(&mut jb, 0, 10), Inserted::Buffered);
        assert_eq!(jb.next_due_us(), Some(50 * MS));
        assert_eq!(jb.poll(49 * MS), None);
        let p = jb.poll(50 * MS).unwrap();
        assert_eq!((p.frame.seq, p.played_us), (0, 50 * MS));
    }

    #[test]
    fn offset_shifts_the_fixed_schedule() {
        let mut jb = fixed(50);
        jb.set_offset(1_000_000); // the sender's clock is one second ahead
        // Captured at sender time 1000 ms = receiver time 0: plays at receiver time 50 ms.
        assert_eq!(jb.playout_us(1_000 * MS), Some(50 * MS));
        assert_eq!(jb.target_delay_us(), Some(50_000));
    }

    #[test]
    fn releases_in_order_and_skips_missing_when_a_successor_is_due() {
        let mut jb = fixed(50);
        arrive(&mut jb, 2, 5);
        arrive(&mut jb, 0, 5);
        let a = jb.poll(200 * MS).unwrap();
        let b = jb.poll(200 * MS).unwrap();
        assert_eq!((a.frame.seq, b.frame.seq), (0, 2));
        assert_eq!(
            jb.stats(),
            JitterStats {
                played: 2,
                late: 0,
                lost: 1,
                overflow: 0,
                ..Default::default()
            }
        );
    }

    #[test]
    fn waits_for_a_missing_frame_until_its_successor_is_due() {
        let mut jb = fixed(50);
        arrive(&mut jb, 0, 5);
        arrive(&mut jb, 2, 5);
        assert_eq!(jb.poll(50 * MS).unwrap().frame.seq, 0);
        // Frame 1 is missing; frame 2 plays at 66 + 50 ms. Before that, playout waits.
        assert_eq!(jb.poll(115 * MS), None);
        assert_eq!(arrive(&mut jb, 1, 40), Inserted::Buffered); // 33 + 40 < 33 + 50
        assert_eq!(jb.poll(83 * MS).unwrap().frame.seq, 1);
        assert_eq!(jb.poll(116 * MS).unwrap().frame.seq, 2);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn late_frames_are_dropped_and_never_reorder() {
        let mut jb = fixed(50);
        assert_eq!(arrive(&mut jb, 0, 60), Inserted::Late);
        arrive(&mut jb, 1, 10);
        assert_eq!(jb.poll(83 * MS).unwrap().frame.seq, 1);
        assert_eq!(
            jb.stats(),
            JitterStats {
                played: 1,
                late: 1,
                lost: 0,
                overflow: 0,
                ..Default::default()
            }
        );
        // A frame completing after playout skipped it moves from lost to late.
        arrive(&mut jb, 3, 10);
        assert_eq!(jb.poll(149 * MS).unwrap().frame.seq, 3);
        assert_eq!(jb.stats().lost, 1);
        assert_eq!(arrive(&mut jb, 2, 90), Inserted::Late);
        assert_eq!(
            jb.stats(),
            JitterStats {
                played: 2,
                late: 2,
                lost: 0,
                overflow: 0,
                ..Default::default()
            }
        );
    }

    /// Thousands of frames a second: a sample below the percentiles the goal was made of
    /// does not remake it within a millisecond, but time does (the samples that leave the
    /// window lower the goal), and a sample above them remakes it at once.
    #[test]
    fn at_high_frame_rates_the_goal_is_remade_by_time_and_by_high_samples() {
        let cfg = JitterConfig {
            window: Duration::from_millis(50),
            decay: Duration::from_millis(5),
            start_margin: Duration::ZERO,
            ..Default::default()
        };
        let mut jb = JitterBuffer::new(cfg);
        let step = 100; // µs between frames
        let mut seq = 0u64;
        let mut run = |jb: &mut JitterBuffer, frames: u64, transit_us: u64| {
            for _ in 0..frames {
                let c = seq * step;
                jb.insert(c + transit_us, frame(seq, c, c + transit_us));
                while jb.poll(c + transit_us).is_some() {}
                seq += 1;
            }
        };
        // 30 ms transit for 100 ms: the target sits at 30 + 2 ms.
        run(&mut jb, 1000, 30 * MS);
        assert_eq!(jb.target_delay_us(), Some(32_000));
        // Then 10 ms, every sample below the goal's percentiles: once the 30 ms samples
        // have left the 50 ms window, the target falls to 12 ms (decay 5 ms).
        run(&mut jb, 1500, 10 * MS);
        let t = jb.target_delay_us().unwrap();
        assert!((12_000..12_100).contains(&t), "target {t}");
        // 2 % of the samples at 20 ms, one in fifty: the 99th percentile is one of them as
        // soon as 1 % of the window is, though they come within a millisecond of a remake.
        for _ in 0..40 {
            run(&mut jb, 49, 10 * MS);
            run(&mut jb, 1, 20 * MS);
        }
        assert_eq!(jb.target_delay_us(), Some(22_000));
    }

    #[test]
    fn adaptive_target_tracks_the_delay_percentile() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        // 10 ms base delay with 0..5 ms of jitter for 20 s at 30 fps.
        for seq in 0..600u64 {
            let jitter = (seq * 7919) % 6;
            arrive(&mut jb, seq, 10 + jitter);
            while jb.poll(seq * 33 * MS + 10 * MS).is_some() {}
        }
        let t = jb.target_delay_us().unwrap();
        // p99 of 10..=15 ms is 15 ms; plus 2 ms headroom = 17 ms, approached from above.
        assert!((17_000..18_000).contains(&t), "target {t}");
        // A sustained step to 40 ms: the first frame of it completes past its playout time
        // before playout passed it, and 25 ms more is within `max_stall`: the target rises at
        // once to play it (a stall, not a loss), and the frames after it are on time.
        let late_before = jb.stats().late;
        for seq in 600..604u64 {
            assert_eq!(arrive(&mut jb, seq, 40), Inserted::Buffered, "frame {seq}");
        }
        assert!(
            jb.target_delay_us().unwrap() >= 42_000,
            "{:?}",
            jb.target_delay_us()
        );
        assert_eq!(jb.stats().late, late_before);
        assert_eq!(jb.stats().stretched, 1);
        assert_eq!(arrive(&mut jb, 604, 40), Inserted::Buffered);
        // ...and it falls back smoothly once delays return.
        let mut last = jb.target_delay_us().unwrap();
        for seq in 605..700u64 {
            arrive(&mut jb, seq, 10);
            let t = jb.target_delay_us().unwrap();
            assert!(t <= last, "never rises without cause");
            assert!(last - t < 5_000, "falls smoothly: {last} -> {t}");
            last = t;
        }
        // A step beyond `max_stall` would hold every later frame back as long: the frames that
        // reveal it are late until it reaches the percentile (the 99th of 300 samples moves on
        // the 4th), then the target follows it.
        while jb.poll(699 * 33 * MS + 20 * MS).is_some() {}
        for seq in 700..704u64 {
            arrive(&mut jb, seq, 120);
        }
        assert_eq!(jb.stats().late - late_before, 4, "{:?}", jb.stats());
        assert_eq!(jb.stats().stretched, 1);
        assert!(jb.target_delay_us().unwrap() >= 122_000);
        assert_eq!(arrive(&mut jb, 704, 120), Inserted::Buffered);
        // With `max_stall` zero, no frame that came by itself stretches the target.
        let mut jb = JitterBuffer::new(JitterConfig {
            max_stall: Duration::ZERO,
            ..Default::default()
        });
        for seq in 0..100u64 {
            arrive(&mut jb, seq, 10);
        }
        assert_eq!(arrive(&mut jb, 100, 30), Inserted::Late);
        assert_eq!(jb.stats().stretched, 0);
    }

    #[test]
    fn a_burst_repaired_past_its_playout_time_plays_after_a_stall() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for seq in 0..100u64 {
            arrive(&mut jb, seq, 10);
            while jb.poll(seq * 33 * MS + 10 * MS).is_some() {}
        }
        while jb.poll(99 * 33 * MS + 20 * MS).is_some() {}
        // Losses seen: room for a 60 ms recovery round on top of the 95th percentile (10 ms).
        jb.set_recovery_allowance(Some(Duration::from_millis(60)));
        let target = jb.target_delay_us().unwrap();
        assert!((72_000..80_000).contains(&target), "target {target}");
        // Frames 100..=102 are lost in a burst; their copies come 120 ms after frame 100's
        // capture, all at once, before frame 103 (10 ms) is due: playout has passed none of
        // them, and one more recovery round covers the 120 ms.
        let at = 100 * 33 * MS + 120 * MS;
        let copy = |seq: u64| ReadyFrame {
            retransmitted: true,
            ..frame(seq, seq * 33 * MS, at)
        };
        for seq in 100..=102u64 {
            assert_eq!(jb.insert(at, copy(seq)), Inserted::Buffered, "frame {seq}");
        }
        arrive(&mut jb, 103, 10);
        let played: Vec<u64> = std::iter::from_fn(|| jb.poll(at + 200 * MS))
            .map(|p| p.frame.seq)
            .collect();
        assert_eq!(played, vec![100, 101, 102, 103]);
        let s = jb.stats();
        assert_eq!((s.late, s.lost, s.stretched), (0, 0, 1));
        assert!(jb.target_delay_us().unwrap() >= 120_000);
        // A copy that needed more than one more round does not hold playout back that long.
        let c = 110 * 33 * MS;
        let spike = ReadyFrame {
            retransmitted: true,
            ..frame(110, c, c + 400 * MS)
        };
        assert_eq!(jb.insert(c + 400 * MS, spike), Inserted::Late);
        assert_eq!(jb.stats().stretched, 1);
        // A fixed playout delay does not move: the same frame is late there.
        let mut jb = fixed(50);
        jb.set_recovery_allowance(Some(Duration::from_millis(60)));
        arrive(&mut jb, 0, 10);
        let late = ReadyFrame {
            retransmitted: true,
            ..frame(1, 33 * MS, 153 * MS)
        };
        assert_eq!(jb.insert(153 * MS, late), Inserted::Late);
        assert_eq!(jb.stats().stretched, 0);
    }

    #[test]
    fn a_frame_from_the_future_does_not_hold_back_playout() {
        let mut jb = fixed(50);
        let far = 3_600_000 * MS; // captured "an hour from now"
        assert_eq!(jb.insert(0, frame(0, far, 0)), Inserted::TooEarly);
        arrive(&mut jb, 1, 5);
        assert_eq!(jb.poll(83 * MS).unwrap().frame.seq, 1);
        assert_eq!(jb.stats().too_early, 1);
    }

    #[test]
    fn bounded_by_frames() {
        let mut jb = JitterBuffer::new(JitterConfig {
            mode: JitterMode::Fixed(Duration::from_secs(1)),
            max_frames: 4,
            ..Default::default()
        });
        for seq in 0..6 {
            arrive(&mut jb, seq, 1);
        }
        assert_eq!(jb.len(), 4);
        assert_eq!(jb.stats().overflow, 2);
    }

    #[test]
    fn flush_and_finish_account_for_every_frame() {
        let mut jb = fixed(50);
        arrive(&mut jb, 1, 5);
        arrive(&mut jb, 3, 5);
        let flushed = jb.flush(0);
        assert_eq!(
            flushed.iter().map(|p| p.frame.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        jb.finish(6);
        assert_eq!(
            jb.stats(),
            JitterStats {
                played: 2,
                late: 0,
                lost: 4,
                overflow: 0,
                ..Default::default()
            }
        );
        assert_eq!(jb.bytes(), 0);
    }

    #[test]
    fn parses_modes() {
        assert_eq!("adaptive".parse(), Ok(JitterMode::Adaptive));
        assert_eq!(
            "fixed:50ms".parse(),
            Ok(JitterMode::Fixed(Duration::from_millis(50)))
        );
        assert!("fixed:soon".parse::<JitterMode>().is_err());
        assert!(
            "stretchy"
                .parse::<JitterMode>()
                .unwrap_err()
                .contains("adaptive")
        );
    }

    #[test]
    fn sliding_window_forgets_by_time_and_count() {
        let mut w = SlidingWindow::default();
        for i in 0..10u64 {
            w.push(i * 100, i as i64, 0, 5);
        }
        assert_eq!(w.len(), 5);
        assert_eq!(w.percentile(0.0), Some(5));
        assert_eq!(w.percentile(1.0), Some(9));
        w.push(2000, 0, 1000, 5); // everything before t = 1000 expires
        assert_eq!((w.len(), w.percentile(0.5)), (1, Some(0)));
    }

    #[test]
    fn ceil_usize_rounds_up_fractions_only() {
        for (x, want) in [
            (0.0, 0),
            (0.5, 1),
            (1.0, 1),
            (4055.04, 4056),
            (4096.0, 4096),
        ] {
            assert_eq!(ceil_usize(x), want, "{x}");
        }
    }

    proptest! {
        /// `ceil_usize` is `ceil` for the products a percentile's rank is taken from.
        #[test]
        fn ceil_usize_is_ceil(p in 0.0f64..=1.0, n in 0usize..1_000_000) {
            let x = p * n as f64;
            prop_assert_eq!(ceil_usize(x), x.ceil() as usize);
        }

        /// The window's percentiles equal those of a plain sort of the samples it should hold.
        #[test]
        fn sliding_window_matches_a_sort(
            values in proptest::collection::vec(-1000i64..1000, 1..400),
            max in 1usize..100,
            span in 1u64..200,
            p in 0.0f64..=1.0,
        ) {
            let mut w = SlidingWindow::default();
            for (i, &v) in values.iter().enumerate() {
                let at = i as u64 * 3;
                w.push(at, v, at.saturating_sub(span), max);
            }
            let last = (values.len() - 1) as u64 * 3;
            let horizon = last.saturating_sub(span);
            let mut kept: Vec<i64> = values.iter().enumerate()
                .filter(|&(i, _)| i as u64 * 3 >= horizon)
                .map(|(_, &v)| v).collect();
            let from = kept.len().saturating_sub(max);
            kept.drain(..from);
            kept.sort();
            let rank = ((p * kept.len() as f64).ceil() as usize).clamp(1, kept.len()) - 1;
            prop_assert_eq!(w.len(), kept.len());
            prop_assert_eq!(w.percentile(p), Some(kept[rank]));
        }

        /// Whatever the arrival order and timing: frames come out in strictly increasing
        /// sequence order, and at the end every sequence number is played, late or lost once.
        #[test]
        fn ordering_and_accounting(
            arrivals in proptest::collection::vec((0u64..200, 0u64..120), 0..300),
            adaptive: bool,
        ) {
            let cfg = JitterConfig {
                mode: if adaptive { JitterMode::Adaptive } else { JitterMode::Fixed(Duration::from_millis(50)) },
                max_frames: 64,
                ..Default::default()
            };
            let mut jb = JitterBuffer::new(cfg);
            let mut seen = std::collections::HashSet::new();
            let mut events: Vec<(u64, u64)> = arrivals.into_iter()
                .filter(|(seq, _)| seen.insert(*seq))
                .map(|(seq, transit)| (seq * 33 * MS + transit * MS, seq))
                .collect();
            events.sort();
            let mut last = None;
            for (at, seq) in events {
                while let Some(p) = jb.poll(at) {
                    prop_assert!(last.is_none_or(|l| p.frame.seq > l));
                    last = Some(p.frame.seq);
                }
                jb.insert(at, frame(seq, seq * 33 * MS, at));
            }
            while let Some(p) = jb.poll(u64::MAX / 2) {
                prop_assert!(last.is_none_or(|l| p.frame.seq > l));
                last = Some(p.frame.seq);
            }
            jb.finish(200);
            let s = jb.stats();
            prop_assert_eq!(s.played + s.late + s.lost, 200);
            prop_assert_eq!(jb.bytes(), 0);
        }
    }
    #[test]
    fn a_fixed_playout_keeps_transit_samples_but_makes_no_room() {
        let mut jb = fixed(50);
        assert_eq!(jb.transit_percentile_us(0.95), None);
        for seq in 0..20 {
            assert_eq!(arrive(&mut jb, seq, 7 + seq % 3), Inserted::Buffered);
        }
        // The receiver tells from these when a frame should have come.
        assert_eq!(jb.transit_percentile_us(0.95), Some(9 * MS as i64));
        // Room for recovery changes nothing: a frame plays at the fixed delay.
        let c = 30 * 33 * MS;
        assert_eq!(
            jb.playout_with_allowance_us(c, Duration::from_millis(100)),
            Some(c + 50 * MS)
        );
        jb.set_recovery_allowance(Some(Duration::from_millis(100)));
        assert_eq!(jb.playout_us(c), Some(c + 50 * MS));
    }
}
