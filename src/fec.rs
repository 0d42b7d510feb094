//! Forward error correction: Reed–Solomon parity over groups of fragment datagrams
//! (`docs/PROTOCOL.md` §3.8), with [`reed_solomon_simd`] doing the arithmetic.
//!
//! A **group** is the fragments of one frame, or — for frames that fit one datagram — up to
//! [`MAX_GROUP_FRAMES`] consecutive single-fragment frames. Each source shard is a whole
//! fragment datagram padded with zeros, so whatever the decoder restores is a datagram that goes
//! through the ordinary parser and reassembler: FEC adds no second path for frame data.
//!
//! - [`parities_for`] decides how many parity datagrams a group of `k` gets, from the
//!   [`FecMode`] and the loss the receiver reports ([`LossEstimate`]).
//! - [`encode`] makes them (sender).
//! - [`FecDecoder`] keeps recently received datagrams and parities, bounded, and restores
//!   missing fragments as soon as a group has enough shards (receiver).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::datagram::{DatagramError, FragmentHeader, HEADER_LEN};
pub use crate::wire::parity::{MAX_GROUP_FRAMES, MAX_PARITIES, MAX_SOURCES};
use crate::wire::parity::{PARITY_HEADER_LEN, ParityHeader};

/// How much parity to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FecMode {
    /// No parity.
    Off,
    /// A fixed ratio of parity to source datagrams (`0.25`: one parity per four), at least one
    /// per group. Small frames are grouped by ⌈1/ratio⌉, but a group closes after
    /// [`GROUP_SPAN`], so on a stream of small frames the ratio can be higher.
    Fixed(f64),
    /// Enough parity that a group survives the loss the receiver reports, with probability
    /// 1 − [`RESIDUAL_TARGET`], but never more than `max_overhead` × the group's size rounded
    /// down — except that a group that gets parity gets at least one — and none while no loss
    /// is reported. Paused while the receiver reports that parity repairs nothing.
    Auto {
        /// Cap on parity / source datagrams.
        max_overhead: f64,
    },
}

/// Default cap on the parity overhead in [`FecMode::Auto`].
pub const DEFAULT_MAX_OVERHEAD: f64 = 0.5;

/// Probability of losing a group that [`FecMode::Auto`] aims below.
pub const RESIDUAL_TARGET: f64 = 1e-3;

impl Default for FecMode {
    fn default() -> Self {
        Self::Auto {
            max_overhead: DEFAULT_MAX_OVERHEAD,
        }
    }
}

impl fmt::Display for FecMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Fixed(r) => write!(f, "{}%", r * 100.0),
            Self::Auto { max_overhead } if *max_overhead == DEFAULT_MAX_OVERHEAD => {
                f.write_str("auto")
            }
            Self::Auto { max_overhead } => write!(f, "auto:{}%", max_overhead * 100.0),
        }
    }
}

/// Parses a ratio written `25%` or `0.25`, in `0..=max`.
fn ratio(s: &str, max: f64) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a ratio (write e.g. 25% or 0.25)"))?;
    if !(v.is_finite() && v > 0.0 && v <= max) {
        return Err(format!(
            "`{s}` is out of range: the parity overhead must be above 0 and at most {}%",
            max * 100.0
        ));
    }
    Ok(v)
}

impl FromStr for FecMode {
    type Err = String;

    /// `off`, `auto`, `auto:MAX` (cap on the overhead, e.g. `auto:30%`), or a fixed overhead
    /// (`25%` or `0.25`; at most 400 %).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(Self::Off),
            "auto" => Ok(Self::default()),
            other => match other.strip_prefix("auto:") {
                Some(cap) => Ok(Self::Auto {
                    max_overhead: ratio(cap, 4.0)?,
                }),
                None => ratio(other, 4.0).map(Self::Fixed).map_err(|e| {
                    format!("--fec {e}; the choices are off, auto, auto:MAX-OVERHEAD or a fixed overhead such as 25%")
                }),
            },
        }
    }
}

/// What the receiver reports about the loss of fragments before recovery.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LossEstimate {
    /// Fraction of fragments lost on the way, `0..=1`.
    pub loss: f64,
    /// Mean length of a run of consecutive lost fragments (1 for independent loss).
    pub mean_burst: f64,
}

/// Probability of losing more than each of `0..=max_m` of `n` consecutive datagrams when losses
/// follow a Gilbert model: a loss fraction `p` in bursts of mean length `b` (`b = 1`:
/// independent losses). Index `m` of the result is P[losses > m].
///
/// Two states, good (no loss) and bad (loss); from bad the chain leaves with probability `1/b`,
/// from good it enters with `p / (b (1 − p))`, so that the stationary loss is `p`. The chain
/// starts stationary; a dynamic programme over the datagrams counts losses up to `max_m + 1`.
fn gilbert_tails(n: usize, max_m: usize, p: f64, b: f64) -> Vec<f64> {
    let p = p.clamp(0.0, 0.999);
    let b = b.max(1.0);
    let leave = 1.0 / b;
    let enter = (p * leave / (1.0 - p)).min(1.0);
    let cap = max_m + 1;
    // good[j], bad[j]: probability of being in that state having lost j (cap: more than max_m).
    let mut good = vec![0.0; cap + 1];
    let mut bad = vec![0.0; cap + 1];
    good[0] = 1.0 - p;
    bad[1.min(cap)] = p;
    for _ in 1..n {
        let mut g2 = vec![0.0; cap + 1];
        let mut b2 = vec![0.0; cap + 1];
        for j in 0..=cap {
            let (g, bd) = (good[j], bad[j]);
            g2[j] += g * (1.0 - enter) + bd * leave;
            b2[(j + 1).min(cap)] += g * enter + bd * (1.0 - leave);
        }
        good = g2;
        bad = b2;
    }
    // P[X > m] = the mass above m.
    let mut tails = vec![0.0; cap];
    let mut above = good[cap] + bad[cap];
    for m in (0..cap).rev() {
        tails[m] = above;
        above += good[m] + bad[m];
    }
    tails
}

/// Parity datagrams for a group of `k` source datagrams.
pub fn parities_for(mode: FecMode, k: usize, estimate: LossEstimate) -> u16 {
    if k == 0 || k > usize::from(MAX_SOURCES) {
        return 0;
    }
    let cap = |overhead: f64| -> u16 {
        let c = (k as f64 * overhead).ceil().max(1.0);
        c.min(f64::from(MAX_PARITIES)) as u16
    };
    match mode {
        FecMode::Off => 0,
        FecMode::Fixed(r) => cap(r),
        FecMode::Auto { max_overhead } => auto_plan(k, estimate, max_overhead).0,
    }
}

/// [`FecMode::Auto`]'s parity for a group of `k` (`1..=MAX_SOURCES`) source datagrams, and the
/// probability that the group is still lost with it.
fn auto_plan(k: usize, estimate: LossEstimate, max_overhead: f64) -> (u16, f64) {
    let p = estimate.loss.clamp(0.0, 0.5);
    if p <= 0.0 {
        return (0, 0.0);
    }
    // The cap rounds down (but allows one parity), so the overhead stays within it.
    let limit = ((k as f64 * max_overhead).floor().max(1.0)).min(f64::from(MAX_PARITIES)) as u16;
    // P[group lost] for each m: more than m losses among k + m datagrams, computed once
    // over k + limit datagrams (slightly pessimistic for smaller m).
    let b = estimate.mean_burst.clamp(1.0, 64.0);
    let tails = gilbert_tails(k + usize::from(limit), usize::from(limit), p, b);
    let group_loss = |m: u16| tails.get(usize::from(m)).copied().unwrap_or(0.0);
    let mut m = 0u16;
    while m < limit && group_loss(m) > RESIDUAL_TARGET {
        m += 1;
    }
    // Parity that repairs little (bursts much longer than the cap allows, as when a
    // drop-tail queue overflows) is not worth its load: send none.
    let (without, with) = (group_loss(0), group_loss(m));
    if with > RESIDUAL_TARGET && with > without / 2.0 {
        return (0, without);
    }
    (m, with)
}

/// Frames a sender's automatic parity protects at most on an assumed loss, before any report
/// has measured the loss; a receiver keeps these frames' fragments for parity in any case.
pub const START_PARITY_FRAMES: u64 = 4 * MAX_GROUP_FRAMES as u64;

/// Probability of losing a frame of a group of single-fragment frames that
/// [`FecMode::Auto`] sizes its groups for: the fewest frames (at least 2, at most
/// [`MAX_GROUP_FRAMES`]) whose parity within the cap keeps a frame's loss below it.
pub const FRAME_RESIDUAL_TARGET: f64 = 1e-4;

/// Frames per group of single-fragment frames under [`FecMode::Auto`]: the fewest (at least
/// ⌈1/cap⌉, and 2) whose parity within the cap leaves a frame lost with probability at most
/// [`FRAME_RESIDUAL_TARGET`], or [`MAX_GROUP_FRAMES`] when none does.
///
/// Fewer frames a group means less wait for a lost frame's parity; but a small group can take
/// only a parity or two within the cap, and those no longer suffice once losses come two in a
/// group. At 2 % independent loss, with half as much parity as frames, a group of 2 frames
/// loses a frame with probability ≈ 8 × 10⁻⁴, a group of 4 with ≈ 8 × 10⁻⁵.
fn auto_group_frames(estimate: LossEstimate, max_overhead: f64) -> usize {
    let fewest = ((1.0 / max_overhead).ceil() as usize).clamp(2, usize::from(MAX_GROUP_FRAMES));
    (fewest..=usize::from(MAX_GROUP_FRAMES))
        .find(|&k| {
            let (m, group_loss) = auto_plan(k, estimate, max_overhead);
            // A lost group has lost m + 1 of its k + m datagrams, mostly: that share of its
            // frames.
            let frame_loss = group_loss * f64::from(m + 1) / (k + usize::from(m)) as f64;
            m > 0 && frame_loss <= FRAME_RESIDUAL_TARGET
        })
        .unwrap_or(usize::from(MAX_GROUP_FRAMES))
}

/// Errors making or using parity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// The group is empty or larger than the format allows.
    #[error(
        "a group of {sources} datagrams with {parities} parities is outside the format's limits"
    )]
    Shape {
        /// Source datagrams.
        sources: usize,
        /// Parity datagrams.
        parities: usize,
    },
    /// A source datagram is longer than a parity shard can be.
    #[error("a {0}-byte datagram is too long for parity")]
    TooLong(usize),
    /// The Reed–Solomon coder refused.
    #[error("Reed-Solomon: {0}")]
    Coder(String),
}

/// Makes `parities` parity datagrams for `sources` (fragment datagrams, in group order) of the
/// group starting at frame `first_seq` and spanning `frames` frames.
pub fn encode(
    sources: &[Bytes],
    first_seq: u64,
    frames: u16,
    parities: u16,
) -> Result<Vec<Bytes>, FecError> {
    let shape = || FecError::Shape {
        sources: sources.len(),
        parities: usize::from(parities),
    };
    let k = u16::try_from(sources.len()).map_err(|_| shape())?;
    let longest = sources.iter().map(Bytes::len).max().unwrap_or(0);
    let shard = u16::try_from(longest.div_ceil(2) * 2).map_err(|_| FecError::TooLong(longest))?;
    let header = |index| ParityHeader {
        first_seq,
        frames,
        sources: k,
        parities,
        index,
        shard,
    };
    header(0).validate().map_err(|_| shape())?;
    let padded = sources.iter().map(|s| {
        let mut v = s.to_vec();
        v.resize(usize::from(shard), 0);
        v
    });
    let recovery = reed_solomon_simd::encode(usize::from(k), usize::from(parities), padded)
        .map_err(|e| FecError::Coder(e.to_string()))?;
    Ok(recovery
        .into_iter()
        .zip(0u16..)
        .map(|(r, index)| {
            let mut out = Vec::with_capacity(PARITY_HEADER_LEN + r.len());
            header(index).emit(&mut out);
            out.extend_from_slice(&r);
            Bytes::from(out)
        })
        .collect())
}

/// Builds the Reed–Solomon tables, which [`reed_solomon_simd`] makes on first use: about 9 ms
/// once per process (measured on the 2-core machine), which would otherwise stall the first
/// frame that gets parity, mid-stream. The shells call it before connecting, and
/// [`FecEncoder::new`] and [`FecDecoder::new`] call it too; after the first call it costs
/// nothing.
pub fn warm_up() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let _ = reed_solomon_simd::encode(1, 1, [[0u8; 64]]);
    });
}

/// Longest a group of single-fragment frames stays open: its first frame's parity must not wait
/// much longer than a frame interval.
pub const GROUP_SPAN: Duration = Duration::from_millis(40);

/// What a [`FecEncoder`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FecEncoderStats {
    /// Groups that got parity.
    pub groups: u64,
    /// Parity datagrams sent.
    pub parities: u64,
    /// Parity bytes sent.
    pub parity_bytes: u64,
    /// Parity datagrams dropped unsent: their frames' deadline passed, or the path's datagram
    /// size shrank below them.
    pub parities_stale: u64,
    /// Frames sent without parity because they were re-cut part-way or are too large.
    pub unprotected: u64,
    /// Times parity was suspended because it did not repair the reported loss.
    pub suspensions: u64,
}

/// The sender's half: collects the datagrams of each group as they go out and makes its parity.
#[derive(Debug)]
pub struct FecEncoder {
    mode: FecMode,
    estimate: LossEstimate,
    /// The multi-fragment frame being sent: its sequence number, count and datagrams.
    frame: Option<(u64, u16, Vec<Bytes>)>,
    /// A frame given up on (re-cut part-way): the rest of its datagrams are not collected.
    unprotected_seq: Option<u64>,
    /// The open group of single-fragment frames, and when it must close.
    group: Vec<Bytes>,
    group_first: u64,
    group_close_at: Option<Instant>,
    group_deadline: Option<Instant>,
    /// Frames a group of single-fragment frames closes at (see [`Self::group_target`]), kept
    /// from the last estimate: the search costs more than a datagram should.
    group_frames: usize,
    ready: VecDeque<(Bytes, Instant)>,
    suspended_until: Option<Instant>,
    stats: FecEncoderStats,
}

impl FecEncoder {
    /// An encoder sending parity as `mode` says.
    pub fn new(mode: FecMode) -> Self {
        if mode != FecMode::Off {
            warm_up();
        }
        Self {
            mode,
            estimate: LossEstimate::default(),
            frame: None,
            unprotected_seq: None,
            group: Vec::new(),
            group_first: 0,
            group_close_at: None,
            group_deadline: None,
            group_frames: Self::group_target(mode, LossEstimate::default()),
            ready: VecDeque::new(),
            suspended_until: None,
            stats: FecEncoderStats::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> FecMode {
        self.mode
    }

    /// Counters so far.
    pub fn stats(&self) -> FecEncoderStats {
        self.stats
    }

    /// The loss estimate parity is sized for.
    pub fn estimate(&self) -> LossEstimate {
        self.estimate
    }

    /// Takes a new loss estimate (from a receiver report).
    pub fn set_estimate(&mut self, e: LossEstimate) {
        if e != self.estimate {
            self.group_frames = Self::group_target(self.mode, e);
        }
        self.estimate = e;
    }

    /// Sends no parity until `until`: the receiver reports that parity does not repair the
    /// loss (it comes in bursts longer than a group's parity, e.g. a drop-tail queue
    /// overflowing), so parity would only add load.
    pub fn suspend(&mut self, until: Instant) {
        // A fixed overhead is what the user asked for: only `auto` pauses.
        if matches!(self.mode, FecMode::Auto { .. }) {
            self.suspended_until = Some(until);
            self.stats.suspensions += 1;
        }
    }

    /// Whether parity is suspended at `now`.
    pub fn is_suspended(&self, now: Instant) -> bool {
        self.suspended_until.is_some_and(|t| now < t)
    }

    /// Parity datagrams waiting to be sent.
    pub fn pending(&self) -> usize {
        self.ready.len()
    }

    /// One fragment datagram `d` of frame `seq` (cut into `count`) went out; `last` if it was
    /// the frame's last, `deadline` the frame's.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        seq: u64,
        count: u16,
        d: &Bytes,
        last: bool,
        deadline: Instant,
    ) {
        if self.mode == FecMode::Off {
            return;
        }
        if self.idle() {
            // No group would get parity (see `idle`): nothing is collected, and what was open
            // is let go, so that parity starts with the next frame once loss is reported.
            self.group.clear();
            self.group_close_at = None;
            self.group_deadline = None;
            self.frame = None;
            if count > 1 {
                self.unprotected_seq = Some(seq);
            }
            return;
        }
        if count == 1 {
            if !self.group.is_empty()
                && (self.group_first.saturating_add(self.group.len() as u64) != seq)
            {
                // Not the next frame number (cannot happen with an in-order sender): start anew.
                self.close_group(now);
            }
            if self.group.is_empty() {
                self.group_first = seq;
                self.group_close_at = Some(now + GROUP_SPAN);
            }
            self.group.push(d.clone());
            self.group_deadline = Some(deadline);
            if self.group.len() >= self.group_frames {
                self.close_group(now);
            }
            return;
        }
        // A multi-fragment frame: any open group of small frames goes first.
        self.close_group(now);
        match &mut self.frame {
            Some((s, c, v)) if *s == seq && *c == count => v.push(d.clone()),
            Some((s, _, _)) if *s == seq => {
                // Re-cut part-way: what went out before has another geometry. No parity.
                self.frame = None;
                self.unprotected_seq = Some(seq);
                self.stats.unprotected += 1;
                return;
            }
            _ if self.unprotected_seq == Some(seq) => return,
            _ => {
                self.frame = (count <= MAX_SOURCES).then(|| (seq, count, vec![d.clone()]));
                if self.frame.is_none() {
                    self.stats.unprotected += 1;
                }
            }
        }
        if last && let Some((s, c, v)) = self.frame.take() {
            if v.len() == usize::from(c) {
                self.protect(now, &v, s, 1, deadline);
            } else if !v.is_empty() {
                self.stats.unprotected += 1;
            }
        }
    }

    /// Whether no group would get parity now: automatic parity while no loss is reported
    /// (see [`parities_for`]). The clean path's common case, for every datagram: collecting
    /// groups only to give them no parity would cost each one a copy of its handle and a
    /// group to close.
    fn idle(&self) -> bool {
        matches!(self.mode, FecMode::Auto { .. }) && self.estimate.loss <= 0.0
    }

    /// Frames per group of single-fragment frames: for a fixed ratio, one parity per ⌈1/r⌉
    /// frames; for automatic parity, the fewest that the loss reported lets parity protect
    /// ([`auto_group_frames`]); at least 2, at most [`MAX_GROUP_FRAMES`].
    fn group_target(mode: FecMode, estimate: LossEstimate) -> usize {
        match mode {
            FecMode::Off => 1,
            FecMode::Fixed(r) => {
                ((1.0 / r).ceil() as usize).clamp(2, usize::from(MAX_GROUP_FRAMES))
            }
            FecMode::Auto { max_overhead } => auto_group_frames(estimate, max_overhead),
        }
    }

    fn close_group(&mut self, now: Instant) {
        self.group_close_at = None;
        if self.group.is_empty() {
            return;
        }
        let mut group = std::mem::take(&mut self.group);
        let deadline = self.group_deadline.take();
        if let Some(deadline) = deadline {
            let frames = group.len() as u16;
            self.protect(now, &group, self.group_first, frames, deadline);
        }
        // The next group reuses the buffer: no allocation per group.
        group.clear();
        self.group = group;
    }

    fn protect(
        &mut self,
        now: Instant,
        sources: &[Bytes],
        first_seq: u64,
        frames: u16,
        deadline: Instant,
    ) {
        if self.suspended_until.is_some_and(|t| now < t) {
            return;
        }
        let m = parities_for(self.mode, sources.len(), self.estimate);
        if m == 0 {
            return;
        }
        match encode(sources, first_seq, frames, m) {
            Ok(parities) => {
                self.stats.groups += 1;
                for p in parities {
                    self.ready.push_back((p, deadline));
                }
            }
            Err(_) => self.stats.unprotected += 1,
        }
    }

    /// The next parity datagram to send, of at most `max_size` bytes; parity of frames past
    /// their deadline, or larger than the path now carries, is dropped (and counted). What it
    /// returns counts as sent.
    pub fn poll(&mut self, now: Instant, max_size: usize) -> Option<(Bytes, Instant)> {
        while let Some((d, deadline)) = self.ready.pop_front() {
            if deadline <= now || d.len() > max_size {
                self.stats.parities_stale += 1;
                continue;
            }
            self.stats.parities += 1;
            self.stats.parity_bytes += d.len() as u64;
            return Some((d, deadline));
        }
        None
    }

    /// When the open group of small frames must close.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.group_close_at
    }

    /// Closes the open group if its time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.group_close_at.is_some_and(|t| t <= now) {
            self.close_group(now);
        }
    }

    /// Sends no more parity (the receiver declined it), dropping what waits; counters stay.
    pub fn turn_off(&mut self) {
        self.mode = FecMode::Off;
        self.clear();
    }

    /// Drops everything waiting (the session is ending).
    pub fn clear(&mut self) {
        self.group.clear();
        self.group_close_at = None;
        self.frame = None;
        self.ready.clear();
    }
}

/// Bounds of a [`FecDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecLimits {
    /// Frames whose datagrams are kept for decoding (the most recent ones).
    pub max_frames: usize,
    /// Bytes of datagrams kept (source and parity).
    pub max_bytes: usize,
    /// Groups whose parity is kept.
    pub max_groups: usize,
}

impl Default for FecLimits {
    fn default() -> Self {
        Self {
            max_frames: 512,
            max_bytes: 16 << 20,
            max_groups: 512,
        }
    }
}

/// What a [`FecDecoder`] counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FecStats {
    /// Parity datagrams accepted.
    pub parity_received: u64,
    /// Parity datagrams whose group disagrees with earlier parity of the same group.
    pub parity_inconsistent: u64,
    /// Parity datagrams for groups already decoded or forgotten.
    pub parity_unneeded: u64,
    /// Successful decodes.
    pub decodes: u64,
    /// Datagrams restored by decoding.
    pub restored: u64,
    /// Restored shards that were not a fragment of the group (a sender's bad parity).
    pub restored_invalid: u64,
    /// Datagrams or groups forgotten to stay within the limits.
    pub evicted: u64,
}

#[derive(Debug)]
struct FrameShards {
    count: u16,
    shards: smallvec::SmallVec<[Option<Bytes>; 1]>,
}

#[derive(Debug)]
struct Group {
    header: ParityHeader,
    parities: BTreeMap<u16, Bytes>,
    done: bool,
}

/// The receiver's half: keeps what arrived of recent groups and restores what is missing.
#[derive(Debug, Default)]
pub struct FecDecoder {
    limits: FecLimits,
    frames: crate::seqmap::SeqMap<u64, FrameShards>,
    groups: BTreeMap<(u64, u16), Group>,
    bytes: usize,
    /// Newest frame number seen.
    top: u64,
    /// Frames below this can no longer play ([`forget_before`](Self::forget_before)).
    oldest: u64,
    stats: FecStats,
}

impl FecDecoder {
    /// A decoder within `limits`.
    pub fn new(limits: FecLimits) -> Self {
        warm_up();
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FecStats {
        self.stats
    }

    /// Bytes of datagrams held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames and groups held.
    pub fn entries(&self) -> usize {
        self.frames.len() + self.groups.len()
    }

    /// Frames below `oldest` can no longer play (they played or were given up): forgets what
    /// can no longer help restore a frame that can — groups that end below `oldest`, and
    /// frames more than a group's span below it (a group covers at most
    /// [`MAX_GROUP_FRAMES`] consecutive frames, so older ones are no group's source for a
    /// frame still to play). Without it the decoder holds `max_frames` frames, seconds of
    /// video; with it, about the playout delay's worth. Not counted as evictions.
    pub fn forget_before(&mut self, oldest: u64) {
        if oldest <= self.oldest {
            return;
        }
        self.oldest = oldest;
        let keep_from = oldest.saturating_sub(u64::from(MAX_GROUP_FRAMES) - 1);
        while let Some((&seq, _)) = self.frames.first_key_value() {
            if seq >= keep_from {
                break;
            }
            if let Some((_, f)) = self.frames.pop_first() {
                self.bytes -= f.shards.iter().flatten().map(Bytes::len).sum::<usize>();
            }
        }
        while let Some((&(first, frames), _)) = self.groups.first_key_value() {
            if first.saturating_add(u64::from(frames)) > oldest {
                break;
            }
            if let Some((_, g)) = self.groups.pop_first() {
                self.bytes -= g.parities.values().map(Bytes::len).sum::<usize>();
            }
        }
    }

    /// A fragment datagram arrived (already parsed: `h`). Returns the datagrams this restores.
    pub fn on_fragment(&mut self, h: &FragmentHeader, datagram: Bytes) -> Vec<Bytes> {
        if h.count > MAX_SOURCES {
            return Vec::new();
        }
        self.store(h, datagram);
        if self.groups.is_empty() {
            // No parity held (a sender without FEC, or none lately): nothing to decode.
            return Vec::new();
        }
        let lo = h.seq.saturating_sub(u64::from(MAX_GROUP_FRAMES) - 1);
        let keys: Vec<(u64, u16)> = self
            .groups
            .range((lo, 0)..=(h.seq, u16::MAX))
            .filter(|(_, g)| !g.done && g.header.covers(h.seq))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            out.extend(self.try_decode(key));
        }
        out
    }

    /// A parity datagram arrived (already parsed: `h`, its shard). Returns the datagrams this
    /// restores.
    pub fn on_parity(&mut self, h: &ParityHeader, shard: Bytes) -> Vec<Bytes> {
        let key = (h.first_seq, h.frames);
        let last = h
            .first_seq
            .saturating_add(u64::from(h.frames))
            .saturating_sub(1);
        if last.saturating_add(self.limits.max_frames as u64) < self.top || last < self.oldest {
            self.stats.parity_unneeded += 1;
            return Vec::new();
        }
        // Only fragments move the window: parity far ahead must not make the decoder forget
        // the frames it holds.
        match self.groups.get_mut(&key) {
            Some(g) => {
                let same = g.header.sources == h.sources
                    && g.header.parities == h.parities
                    && g.header.shard == h.shard;
                if !same {
                    self.stats.parity_inconsistent += 1;
                    return Vec::new();
                }
                if g.done || g.parities.contains_key(&h.index) {
                    self.stats.parity_unneeded += 1;
                    return Vec::new();
                }
                self.bytes += shard.len();
                g.parities.insert(h.index, shard);
            }
            None => {
                while self.groups.len() >= self.limits.max_groups.max(1) {
                    self.evict_group();
                }
                self.bytes += shard.len();
                let mut parities = BTreeMap::new();
                parities.insert(h.index, shard);
                self.groups.insert(
                    key,
                    Group {
                        header: *h,
                        parities,
                        done: false,
                    },
                );
            }
        }
        self.stats.parity_received += 1;
        let out = self.try_decode(key);
        self.trim();
        out
    }

    fn store(&mut self, h: &FragmentHeader, datagram: Bytes) {
        let keep_from = self.oldest.saturating_sub(u64::from(MAX_GROUP_FRAMES) - 1);
        if h.seq.saturating_add(self.limits.max_frames as u64) < self.top || h.seq < keep_from {
            return;
        }
        self.top = self.top.max(h.seq);
        let entry = self.frames.get_or_insert_with(h.seq, || FrameShards {
            count: h.count,
            shards: smallvec::smallvec![None; usize::from(h.count)],
        });
        if entry.count != h.count {
            // A re-cut: keep the newer cut (more fragments), as the reassembler does.
            if h.count < entry.count {
                return;
            }
            let old: usize = entry.shards.iter().flatten().map(Bytes::len).sum();
            self.bytes -= old;
            *entry = FrameShards {
                count: h.count,
                shards: smallvec::smallvec![None; usize::from(h.count)],
            };
        }
        if let Some(slot) = entry.shards.get_mut(usize::from(h.index))
            && slot.is_none()
        {
            self.bytes += datagram.len();
            *slot = Some(datagram);
        }
        self.trim();
    }

    /// The source shard at `pos` of the group, if it arrived.
    fn source(&self, g: &ParityHeader, pos: usize) -> Option<&Bytes> {
        if g.frames == 1 {
            let f = self.frames.get(&g.first_seq)?;
            if f.count != g.sources {
                return None;
            }
            f.shards.get(pos)?.as_ref()
        } else {
            let f = self.frames.get(&g.first_seq.checked_add(pos as u64)?)?;
            if f.count != 1 {
                return None;
            }
            f.shards.first()?.as_ref()
        }
    }

    fn try_decode(&mut self, key: (u64, u16)) -> Vec<Bytes> {
        let Some(g) = self.groups.get(&key) else {
            return Vec::new();
        };
        let h = g.header;
        let k = usize::from(h.sources);
        let shard = usize::from(h.shard);
        // Count first: copying the sources is only worth it when a decode is possible.
        let arrived = (0..k)
            .filter(|&pos| self.source(&h, pos).is_some_and(|d| d.len() <= shard))
            .count();
        if arrived == k {
            self.finish(key);
            return Vec::new();
        }
        if arrived + g.parities.len() < k {
            return Vec::new();
        }
        let have: Vec<(usize, Vec<u8>)> = (0..k)
            .filter_map(|pos| {
                let d = self.source(&h, pos)?;
                if d.len() > shard {
                    return None;
                }
                let mut v = d.to_vec();
                v.resize(shard, 0);
                Some((pos, v))
            })
            .collect();
        if have.len() == k {
            self.finish(key);
            return Vec::new();
        }
        if have.len() + g.parities.len() < k {
            return Vec::new();
        }
        let recovery: Vec<(usize, &[u8])> = g
            .parities
            .iter()
            .map(|(i, b)| (usize::from(*i), b.as_ref()))
            .collect();
        let restored = match reed_solomon_simd::decode(
            k,
            usize::from(h.parities),
            have.iter().map(|(p, v)| (*p, v.as_slice())),
            recovery,
        ) {
            Ok(r) => r,
            Err(_) => {
                self.stats.restored_invalid += 1;
                self.finish(key);
                return Vec::new();
            }
        };
        self.stats.decodes += 1;
        let mut out = Vec::with_capacity(restored.len());
        for (pos, bytes) in restored {
            match restored_datagram(&h, pos, bytes) {
                Some(d) => {
                    self.stats.restored += 1;
                    out.push(d);
                }
                None => self.stats.restored_invalid += 1,
            }
        }
        self.finish(key);
        out
    }

    fn finish(&mut self, key: (u64, u16)) {
        if let Some(g) = self.groups.get_mut(&key) {
            g.done = true;
            let freed: usize = g.parities.values().map(Bytes::len).sum();
            self.bytes -= freed;
            g.parities.clear();
        }
    }

    fn evict_group(&mut self) {
        if let Some((_, g)) = self.groups.pop_first() {
            let freed: usize = g.parities.values().map(Bytes::len).sum();
            self.bytes -= freed;
            if !g.done {
                self.stats.evicted += 1;
            }
        }
    }

    /// Forgets frames and groups older than the window of `max_frames` frame numbers below
    /// the newest seen, then the oldest of what is left while over `max_bytes`.
    fn trim(&mut self) {
        let floor = self.top.saturating_sub(self.limits.max_frames as u64);
        while let Some((&seq, _)) = self.frames.first_key_value() {
            if seq >= floor && self.bytes <= self.limits.max_bytes {
                break;
            }
            if let Some((_, f)) = self.frames.pop_first() {
                let freed: usize = f.shards.iter().flatten().map(Bytes::len).sum();
                self.bytes -= freed;
                self.stats.evicted += 1;
            }
        }
        while let Some((&(first, frames), _)) = self.groups.first_key_value() {
            let below = first.saturating_add(u64::from(frames)) <= floor;
            if !below && self.bytes <= self.limits.max_bytes {
                break;
            }
            self.evict_group();
        }
    }
}

/// The datagram in a restored shard: the fragment header tells its true length; a shard that
/// is not the group's fragment at `pos` is refused.
fn restored_datagram(g: &ParityHeader, pos: usize, mut bytes: Vec<u8>) -> Option<Bytes> {
    // The shard is the datagram plus zero padding: the parser names the true length.
    let len = match FragmentHeader::parse(&bytes) {
        Ok(_) => bytes.len(),
        Err(DatagramError::BadLength { expected, .. }) => HEADER_LEN + expected,
        Err(_) => return None,
    };
    if len > bytes.len() {
        return None;
    }
    bytes.truncate(len);
    let (h, _) = FragmentHeader::parse(&bytes).ok()?;
    if g.position(h.seq, h.index, h.count) != Some(pos) {
        return None;
    }
    Some(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::datagram::FrameFlags;
    use proptest::prelude::*;

    /// The datagrams of frame `seq`: `len` bytes cut into `count` fragments.
    fn frame(seq: u64, len: u32, count: u16) -> Vec<Bytes> {
        (0..count)
            .map(|index| {
                let h = FragmentHeader {
                    flags: FrameFlags::empty(),
                    seq,
                    capture_us: 1_000 + seq,
                    frame_len: len,
                    payload_len: len,
                    index,
                    count,
                };
                let mut d = vec![0u8; HEADER_LEN + h.range().len()];
                h.emit(&mut d);
                for (i, b) in d[HEADER_LEN..].iter_mut().enumerate() {
                    *b = (seq as usize * 31 + usize::from(index) * 7 + i) as u8;
                }
                Bytes::from(d)
            })
            .collect()
    }

    fn feed_fragment(dec: &mut FecDecoder, d: &Bytes) -> Vec<Bytes> {
        let (h, _) = FragmentHeader::parse(d).unwrap();
        dec.on_fragment(&h, d.clone())
    }

    fn feed_parity(dec: &mut FecDecoder, d: &Bytes) -> Vec<Bytes> {
        let (h, shard) = ParityHeader::parse(d).unwrap();
        dec.on_parity(
            &h,
            d.slice(PARITY_HEADER_LEN..PARITY_HEADER_LEN + shard.len()),
        )
    }

    #[test]
    fn restores_the_lost_fragments_of_a_frame() {
        let src = frame(3, 5000, 5);
        let par = encode(&src, 3, 1, 2).unwrap();
        assert_eq!(par.len(), 2);
        let mut dec = FecDecoder::new(FecLimits::default());
        // Fragments 1 and 4 lost; parity arrives before the last source.
        let mut got = Vec::new();
        got.extend(feed_fragment(&mut dec, &src[0]));
        got.extend(feed_parity(&mut dec, &par[1]));
        got.extend(feed_fragment(&mut dec, &src[2]));
        assert!(got.is_empty(), "two missing, one parity: nothing yet");
        got.extend(feed_parity(&mut dec, &par[0]));
        assert!(got.is_empty(), "still one short");
        got.extend(feed_fragment(&mut dec, &src[3]));
        got.sort();
        let mut want = vec![src[1].clone(), src[4].clone()];
        want.sort();
        assert_eq!(got, want, "byte-identical datagrams, padding removed");
        assert_eq!(dec.stats().restored, 2);
        // The group is done: more of it restores nothing again.
        assert!(feed_fragment(&mut dec, &src[1]).is_empty());
        assert_eq!(dec.stats().decodes, 1);
    }

    #[test]
    fn restores_a_lost_frame_of_a_cross_frame_group() {
        let src: Vec<Bytes> = (10..14)
            .flat_map(|seq| frame(seq, 100 + seq as u32 * 13, 1))
            .collect();
        let par = encode(&src, 10, 4, 1).unwrap();
        let mut dec = FecDecoder::new(FecLimits::default());
        for i in [0, 1, 3] {
            assert!(feed_fragment(&mut dec, &src[i]).is_empty());
        }
        assert_eq!(feed_parity(&mut dec, &par[0]), vec![src[2].clone()]);
    }

    #[test]
    fn inconsistent_or_forged_parity_restores_nothing_wrong() {
        let src = frame(1, 3000, 3);
        let par = encode(&src, 1, 1, 1).unwrap();
        let mut dec = FecDecoder::new(FecLimits::default());
        feed_fragment(&mut dec, &src[0]);
        feed_fragment(&mut dec, &src[1]);
        // Parity whose bytes were tampered with: the restored shard is not fragment 2 of
        // frame 1, so it is refused and counted.
        let mut bad = par[0].to_vec();
        for b in &mut bad[PARITY_HEADER_LEN..PARITY_HEADER_LEN + 40] {
            *b ^= 0x5a;
        }
        let bad = Bytes::from(bad);
        assert!(feed_parity(&mut dec, &bad).is_empty());
        assert_eq!(dec.stats().restored_invalid, 1);
        // A second parity claiming another shape for the same group is inconsistent.
        let other = encode(&src, 1, 1, 2).unwrap();
        let mut dec = FecDecoder::new(FecLimits::default());
        feed_parity(&mut dec, &par[0]);
        feed_parity(&mut dec, &other[1]);
        assert_eq!(dec.stats().parity_inconsistent, 1);
    }

    #[test]
    fn frames_that_can_no_longer_play_are_forgotten_but_a_group_still_to_play_decodes() {
        let mut dec = FecDecoder::new(FecLimits::default());
        // 100 frames of one fragment each arrive; their frames up to 79 have played.
        let src: Vec<Bytes> = (0..100).flat_map(|seq| frame(seq, 1000, 1)).collect();
        // A group over frames 76..=83 (spanning the playout point), frame 81 lost.
        let par = encode(&src[76..84], 76, 8, 1).unwrap();
        // And a group over 10..=13, long played, whose parity comes late.
        let old = encode(&src[10..14], 10, 4, 1).unwrap();
        for (seq, d) in src.iter().enumerate() {
            if seq != 81 {
                feed_fragment(&mut dec, d);
            }
        }
        let before = dec.bytes();
        assert_eq!(dec.frames.len(), 99);
        dec.forget_before(80);
        assert_eq!(
            dec.frames.first_key_value().map(|(k, _)| k),
            Some(&65),
            "a group's span below the oldest frame to play is kept"
        );
        assert!(dec.bytes() * 2 < before, "{} of {before}", dec.bytes());
        assert_eq!(dec.stats().evicted, 0);
        // Late parity of a group that cannot play is not kept; the spanning group decodes.
        assert!(feed_parity(&mut dec, &old[0]).is_empty());
        assert_eq!(dec.stats().parity_unneeded, 1);
        assert!(dec.groups.is_empty());
        assert_eq!(feed_parity(&mut dec, &par[0]), vec![src[81].clone()]);
        // A retransmitted copy of a long-played frame is not stored.
        let held = dec.bytes();
        feed_fragment(&mut dec, &src[3]);
        assert_eq!(dec.bytes(), held);
        // The playout point never moves back.
        dec.forget_before(20);
        assert_eq!(dec.oldest, 80);
    }

    #[test]
    fn memory_stays_within_the_limits() {
        let limits = FecLimits {
            max_frames: 8,
            max_bytes: 20_000,
            max_groups: 4,
        };
        let mut dec = FecDecoder::new(limits);
        for seq in 0..200u64 {
            let src = frame(seq, 4000, 4);
            for d in &src[..3] {
                feed_fragment(&mut dec, d);
            }
            // Parity for a group whose sources never arrive.
            let par = encode(&frame(seq + 1000, 2000, 2), seq + 1000, 1, 1).unwrap();
            feed_parity(&mut dec, &par[0]);
            assert!(
                dec.bytes() <= limits.max_bytes,
                "{} bytes held",
                dec.bytes()
            );
            assert!(dec.frames.len() <= limits.max_frames + 1);
            assert!(dec.groups.len() <= limits.max_groups);
        }
        assert!(dec.stats().evicted > 0);
    }

    #[test]
    fn parity_follows_the_reported_loss() {
        let none = LossEstimate::default();
        let auto = FecMode::default();
        assert_eq!(parities_for(auto, 10, none), 0, "no loss, no overhead");
        assert_eq!(parities_for(FecMode::Off, 10, none), 0);
        assert_eq!(parities_for(FecMode::Fixed(0.25), 10, none), 3);
        assert_eq!(
            parities_for(FecMode::Fixed(0.01), 10, none),
            1,
            "at least one"
        );
        let light = LossEstimate {
            loss: 0.01,
            mean_burst: 1.0,
        };
        let heavy = LossEstimate {
            loss: 0.05,
            mean_burst: 1.0,
        };
        let bursty = LossEstimate {
            loss: 0.05,
            mean_burst: 3.0,
        };
        let (l, h, b) = (
            parities_for(auto, 10, light),
            parities_for(auto, 10, heavy),
            parities_for(auto, 10, bursty),
        );
        assert!(l >= 1 && l < h && h <= b, "light {l} heavy {h} bursty {b}");
        assert!(b <= 5, "capped at half the group: {b}");
        // Enough for the target: with 2 % independent loss, 6 sources need 2 parities to be
        // lost with probability below 1e-3 (P[>1 of 8] ≈ 1.0e-2, P[>2 of 8] ≈ 5e-4).
        let two = LossEstimate {
            loss: 0.02,
            mean_burst: 1.0,
        };
        assert_eq!(parities_for(auto, 6, two), 2);
    }

    /// Automatic parity collects no group while no loss is reported; from the report on, the
    /// next frames form groups that get parity, never one holding frames sent before it.
    #[test]
    fn automatic_parity_groups_only_frames_sent_after_loss_is_reported() {
        let t0 = crate::test_instant();
        let deadline = t0 + Duration::from_secs(1);
        let mut enc = FecEncoder::new(FecMode::default());
        let send = |enc: &mut FecEncoder, seqs: std::ops::Range<u64>| {
            for seq in seqs {
                for d in frame(seq, 300, 1) {
                    enc.on_datagram(t0, seq, 1, &d, true, deadline);
                }
            }
        };
        // Frames 0..3 with no loss reported, the last left open by a group span.
        send(&mut enc, 0..3);
        enc.handle_timeout(t0 + GROUP_SPAN);
        assert!(enc.poll(t0, 1500).is_none(), "no loss, no parity");
        send(&mut enc, 3..4);
        enc.set_estimate(LossEstimate {
            loss: 0.05,
            mean_burst: 1.0,
        });
        send(&mut enc, 4..8);
        enc.handle_timeout(t0 + GROUP_SPAN);
        let mut firsts = Vec::new();
        while let Some((p, _)) = enc.poll(t0, 1500) {
            let (h, _) = ParityHeader::parse(&p).unwrap();
            assert!(
                h.first_seq >= 4,
                "a group of frames sent before the report: {h:?}"
            );
            firsts.push(h.first_seq);
        }
        assert_eq!(
            firsts.first(),
            Some(&4),
            "parity from the first frame after it"
        );
        // Reported loss gone: collecting stops again, and what was open is let go.
        send(&mut enc, 8..9);
        enc.set_estimate(LossEstimate::default());
        send(&mut enc, 9..12);
        enc.handle_timeout(t0 + 2 * GROUP_SPAN);
        assert!(enc.poll(t0, 1500).is_none());
    }

    /// Frames of a stream of small frames lost after parity, with independent loss `p` on
    /// every datagram (sources and parity) and the encoder told `p`: `n` frames through
    /// [`FecEncoder`] and [`FecDecoder`], a seeded draw.
    fn small_frames_lost_after_parity(p: f64, n: u64) -> u64 {
        use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
        let t0 = crate::test_instant();
        let deadline = t0 + Duration::from_secs(3600);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut enc = FecEncoder::new(FecMode::default());
        enc.set_estimate(LossEstimate {
            loss: p,
            mean_burst: 1.0,
        });
        let mut dec = FecDecoder::new(FecLimits::default());
        let mut have = std::collections::HashSet::new();
        for seq in 0..n {
            // Frames long played are forgotten, as the receiver does.
            dec.forget_before(seq.saturating_sub(64));
            for d in frame(seq, 64, 1) {
                enc.on_datagram(t0, seq, 1, &d, true, deadline);
                if !rng.random_bool(p) {
                    have.insert(seq);
                    feed_fragment(&mut dec, &d);
                }
            }
            while let Some((par, _)) = enc.poll(t0, 1500) {
                if !rng.random_bool(p) {
                    for r in feed_parity(&mut dec, &par) {
                        have.insert(FragmentHeader::parse(&r).unwrap().0.seq);
                    }
                }
            }
        }
        n - have.len() as u64
    }

    /// Automatic parity groups small frames by as many as it takes for parity within the cap
    /// to make a lost frame rare: at 2 % loss, groups of 2 frames with 1 parity would lose
    /// ≈ 8 × 10⁻⁴ of the frames; groups of 4 with 2 parities (the same overhead) lose ≈ 10⁻⁴.
    #[test]
    fn automatic_parity_groups_small_frames_so_that_a_lost_frame_is_rare() {
        let at = |loss: f64| {
            FecEncoder::group_target(
                FecMode::default(),
                LossEstimate {
                    loss,
                    mean_burst: 1.0,
                },
            )
        };
        assert_eq!(at(0.003), 2, "light loss: the smallest groups");
        assert_eq!(at(0.02), 4);
        assert!(at(0.05) > at(0.02));
        assert_eq!(
            at(0.4),
            usize::from(MAX_GROUP_FRAMES),
            "none suffices: the largest"
        );
        let n = 50_000;
        let lost = small_frames_lost_after_parity(0.02, n);
        assert!(
            lost * 2_500 <= n,
            "{lost} of {n} frames lost after parity (more than 4e-4)"
        );
        let mut enc = FecEncoder::new(FecMode::default());
        enc.set_estimate(LossEstimate {
            loss: 0.02,
            mean_burst: 1.0,
        });
        let overhead = {
            let t0 = crate::test_instant();
            for seq in 0..400 {
                for d in frame(seq, 1200, 1) {
                    enc.on_datagram(t0, seq, 1, &d, true, t0 + Duration::from_secs(9));
                }
            }
            enc.stats().parities as f64 + enc.pending() as f64
        } / 400.0;
        assert!(overhead <= 0.5, "overhead {overhead} beyond the cap");
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("off".parse(), Ok(FecMode::Off));
        assert_eq!("auto".parse(), Ok(FecMode::default()));
        assert_eq!("auto:30%".parse(), Ok(FecMode::Auto { max_overhead: 0.3 }));
        assert_eq!("25%".parse(), Ok(FecMode::Fixed(0.25)));
        assert_eq!("0.5".parse(), Ok(FecMode::Fixed(0.5)));
        for bad in ["", "0", "-5%", "500%", "lots", "auto:0"] {
            assert!(bad.parse::<FecMode>().is_err(), "{bad} accepted");
        }
        for m in [FecMode::Off, FecMode::default(), FecMode::Fixed(0.25)] {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }

    proptest! {
        #[test]
        fn any_loss_within_the_parity_is_repaired(
            len in 1u32..20_000, count in 1u16..24, parities in 1u16..8,
            lost in proptest::collection::vec(any::<bool>(), 32)
        ) {
            prop_assume!(crate::wire::datagram::valid_geometry(len, count));
            let src = frame(5, len, count);
            let par = encode(&src, 5, 1, parities).unwrap();
            let mut dec = FecDecoder::new(FecLimits::default());
            let mut restored = Vec::new();
            let mut missing = Vec::new();
            for (i, d) in src.iter().enumerate() {
                if lost[i] && missing.len() < usize::from(parities) {
                    missing.push(d.clone());
                } else {
                    restored.extend(feed_fragment(&mut dec, d));
                }
            }
            for p in &par {
                restored.extend(feed_parity(&mut dec, p));
            }
            restored.sort();
            missing.sort();
            prop_assert_eq!(restored, missing);
        }

        #[test]
        fn garbage_parity_never_panics_and_stays_bounded(
            shards in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 24..400), 1..40)
        ) {
            let limits = FecLimits { max_frames: 16, max_bytes: 8_000, max_groups: 8 };
            let mut dec = FecDecoder::new(limits);
            for d in frame(3, 900, 3) {
                feed_fragment(&mut dec, &d);
            }
            for s in shards {
                let mut d = s;
                d[0] = crate::wire::VERSION;
                d[1] = crate::wire::parity::TYPE_PARITY;
                d[2] = 0;
                if let Ok((h, shard)) = ParityHeader::parse(&d) {
                    let shard = Bytes::copy_from_slice(shard);
                    for r in dec.on_parity(&h, shard) {
                        // Whatever comes out is a valid fragment of the group.
                        prop_assert!(FragmentHeader::parse(&r).is_ok());
                    }
                }
                prop_assert!(dec.bytes() <= limits.max_bytes);
            }
        }
    }
}
