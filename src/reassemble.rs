//! Reassembles frames from fragments that arrive lost, duplicated and out of order, in bounded
//! memory.
//!
//! Bounds (all from [`ReassemblyLimits`]):
//! - at most `max_frames` partial frames and `max_bytes` of their buffers; a new frame that does
//!   not fit evicts the oldest partial frames (lowest sequence numbers: the ones most likely
//!   already late);
//! - a frame may not declare more than `max_frame_bytes`, before or after decompression;
//! - sequence numbers more than `max_jump` ahead of the highest seen are refused, so one
//!   datagram cannot move the window arbitrarily far (a peer stepping forward gradually only
//!   inflates its own session's loss count);
//! - each partial frame has a give-up deadline, set by the caller when its first fragment
//!   arrives; [`Reassembler::expire`] drops those past it.
//!
//! Sequence numbers already completed or given up are remembered in a window of
//! [`SeqWindow::SPAN`] numbers, so that late duplicates are recognised and not reassembled twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;

use crate::wire::datagram::FragmentHeader;

/// Limits on reassembly memory. The defaults suit video up to 4K at high bitrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Partial frames held at once (default 256).
    pub max_frames: usize,
    /// Bytes of partial frame buffers held at once (default 64 MiB).
    pub max_bytes: usize,
    /// Largest frame accepted, before and after decompression (default 16 MiB).
    pub max_frame_bytes: u32,
    /// How far ahead of the highest sequence number seen a new one may jump (default 32768).
    pub max_jump: u64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_frames: 256,
            max_bytes: 64 << 20,
            max_frame_bytes: 16 << 20,
            max_jump: 32_768,
        }
    }
}

/// Counters of the reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReassemblyStats {
    /// Fragments accepted into a frame.
    pub fragments: u64,
    /// Fragments already held, or for a frame already complete.
    pub duplicates: u64,
    /// Fragments for frames given up, or too far behind to track.
    pub stale: u64,
    /// Fragments with a sequence number implausibly far ahead.
    pub too_far_ahead: u64,
    /// Fragments of frames larger than the limit.
    pub too_large: u64,
    /// Partial frames evicted to stay within the memory bounds.
    pub evicted: u64,
    /// Partial frames dropped at their give-up deadline.
    pub expired: u64,
    /// Partial frames restarted because fragments with a new geometry arrived (the sender
    /// re-cut the frame after the path MTU shrank).
    pub geometry_resets: u64,
}

/// A frame with all its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// Header of the frame (index 0).
    pub header: FragmentHeader,
    /// The frame body as carried (still compressed if flagged).
    pub body: Bytes,
    /// When its first fragment arrived.
    pub first_at: Instant,
}

/// What became of an accepted fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The frame still misses fragments.
    Partial {
        /// This was the first fragment seen of the frame.
        first: bool,
    },
    /// The frame is complete.
    Complete {
        /// The frame.
        frame: Assembled,
        /// The frame was a single fragment (this was also its first).
        first: bool,
    },
}

/// Why a fragment was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Already held, or its frame is already complete.
    #[error("duplicate fragment")]
    Duplicate,
    /// Its frame was given up, or is older than the window remembers.
    #[error("fragment of a frame given up or too old")]
    Stale,
    /// Its sequence number jumps too far ahead.
    #[error("sequence number too far ahead")]
    TooFarAhead,
    /// The frame is larger than allowed.
    #[error("frame larger than the limit")]
    TooLarge,
    /// The fragment's length disagrees with its header.
    #[error("fragment length disagrees with its header")]
    Malformed,
}

/// Remembers which of the most recent [`SeqWindow::SPAN`] sequence numbers are finished.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: Box<[u64]>,
    /// Highest sequence number observed; numbers in `(top - SPAN, top]` are tracked.
    top: u64,
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self {
            bits: vec![0; (Self::SPAN / 64) as usize].into_boxed_slice(),
            top: 0,
        }
    }
}

impl SeqWindow {
    /// Sequence numbers tracked (8 KiB of bits).
    pub const SPAN: u64 = 1 << 16;

    fn slot(seq: u64) -> (usize, u64) {
        let i = seq % Self::SPAN;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `seq` is too old to be tracked.
    pub fn is_below(&self, seq: u64) -> bool {
        self.top >= Self::SPAN && seq <= self.top - Self::SPAN
    }

    /// Moves the window forward so that it covers `seq`.
    pub fn observe(&mut self, seq: u64) {
        if seq <= self.top {
            return;
        }
        let advance = seq - self.top;
        if advance >= Self::SPAN {
            self.bits.fill(0);
        } else {
            // Clear the bits of top+1..=seq, a whole word at a time where possible.
            let mut s = self.top + 1;
            while s <= seq {
                let (w, b) = Self::slot(s);
                let Some(word) = self.bits.get_mut(w) else {
                    break;
                };
                if s.is_multiple_of(64) && seq - s >= 63 {
                    *word = 0;
                    s += 64;
                } else {
                    *word &= !b;
                    s += 1;
                }
            }
        }
        self.top = seq;
    }

    /// Marks `seq` finished (ignored when below the window).
    pub fn insert(&mut self, seq: u64) {
        self.observe(seq);
        if self.is_below(seq) {
            return;
        }
        let (w, b) = Self::slot(seq);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= b;
        }
    }

    /// Whether `seq` is marked finished (false when below the window or never seen).
    pub fn contains(&self, seq: u64) -> bool {
        if seq > self.top || self.is_below(seq) {
            return false;
        }
        let (w, b) = Self::slot(seq);
        self.bits.get(w).is_some_and(|word| word & b != 0)
    }

    /// Highest sequence number observed.
    pub fn top(&self) -> u64 {
        self.top
    }
}

#[derive(Debug)]
struct Partial {
    header: FragmentHeader,
    buf: Vec<u8>,
    have: Vec<u64>,
    received: u16,
    first_at: Instant,
    last_at: Instant,
    expires: Instant,
}

impl Partial {
    fn new(header: FragmentHeader, now: Instant, expires: Instant) -> Self {
        Self {
            header,
            buf: vec![0; header.frame_len as usize],
            have: vec![0; usize::from(header.count).div_ceil(64)],
            received: 0,
            first_at: now,
            last_at: now,
            expires,
        }
    }

    fn footprint(&self) -> usize {
        self.buf.len() + self.have.len() * 8
    }

    fn footprint_of(h: &FragmentHeader) -> usize {
        h.frame_len as usize + usize::from(h.count).div_ceil(64) * 8
    }

    fn same_frame_recut(&self, h: &FragmentHeader) -> bool {
        let a = &self.header;
        (a.flags, a.capture_us, a.frame_len, a.payload_len)
            == (h.flags, h.capture_us, h.frame_len, h.payload_len)
    }

    fn same_frame(&self, h: &FragmentHeader) -> bool {
        let a = &self.header;
        (a.flags, a.capture_us, a.frame_len, a.payload_len, a.count)
            == (h.flags, h.capture_us, h.frame_len, h.payload_len, h.count)
    }
}

/// What [`Reassembler::partials`] shows of one partial frame.
#[derive(Debug, Clone, Copy)]
pub struct PartialView<'a> {
    /// The header of its first fragment (its geometry).
    pub header: FragmentHeader,
    /// When its latest fragment arrived.
    pub last_at: Instant,
    have: &'a [u64],
}

impl PartialView<'_> {
    /// Whether fragment `index` has arrived.
    pub fn has(&self, index: u16) -> bool {
        self.have
            .get(usize::from(index) / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// The runs of missing fragments, as (first index, count).
    pub fn missing_runs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        let count = self.header.count;
        let mut i = 0u16;
        std::iter::from_fn(move || {
            while i < count && self.has(i) {
                i += 1;
            }
            if i >= count {
                return None;
            }
            let start = i;
            while i < count && !self.has(i) {
                i += 1;
            }
            Some((start, i - start))
        })
    }
}

/// Frames being reassembled. See the module documentation for its bounds.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: BTreeMap<u64, Partial>,
    /// The partial frames by give-up deadline, so that expiry never scans.
    expiries: BTreeSet<(Instant, u64)>,
    bytes: usize,
    done: SeqWindow,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler with `limits`.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Partial frames held.
    pub fn partial_frames(&self) -> usize {
        self.partial.len()
    }

    /// The partial frames, oldest first: what a retransmission request needs of each.
    pub fn partials(&self) -> impl Iterator<Item = PartialView<'_>> {
        self.partial.values().map(|p| PartialView {
            header: p.header,
            last_at: p.last_at,
            have: &p.have,
        })
    }

    /// Whether frame `seq` is being reassembled.
    pub fn is_partial(&self, seq: u64) -> bool {
        self.partial.contains_key(&seq)
    }

    /// Bytes of partial frame buffers held.
    pub fn partial_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `seq` has completed or been given up.
    pub fn is_done(&self, seq: u64) -> bool {
        self.done.contains(seq)
    }

    /// Adds one fragment (`body` is the bytes after its header). A frame's first fragment sets
    /// its give-up deadline `expires`.
    pub fn insert(
        &mut self,
        now: Instant,
        header: FragmentHeader,
        body: Bytes,
        expires: Instant,
    ) -> Result<Accepted, Rejected> {
        let seq = header.seq;
        if body.len() != header.range().len() {
            // `FragmentHeader::parse` guarantees this; callers that build headers must too.
            return Err(Rejected::Malformed);
        }
        let max = self.limits.max_frame_bytes;
        if header.frame_len > max || header.payload_len > max {
            self.stats.too_large += 1;
            return Err(Rejected::TooLarge);
        }
        if seq > self.done.top().saturating_add(self.limits.max_jump) {
            self.stats.too_far_ahead += 1;
            return Err(Rejected::TooFarAhead);
        }
        if self.done.is_below(seq) {
            self.stats.stale += 1;
            return Err(Rejected::Stale);
        }
        if self.done.contains(seq) {
            // Completed frames and given-up frames look alike here; both are finished.
            self.stats.duplicates += 1;
            return Err(Rejected::Duplicate);
        }
        self.done.observe(seq);

        // `first`: the first fragment seen of this frame number (a re-cut frame was seen before).
        let mut first = false;
        let mut reset = false;
        if let Some(p) = self.partial.get(&seq)
            && !p.same_frame(&header)
        {
            // A sender re-cuts a frame only to smaller fragments (the path's datagram size
            // shrank), so the cut with more fragments is the newer one: a late fragment of the
            // older cut is stale, and does not restart reassembly again.
            if p.same_frame_recut(&header) && header.count < p.header.count {
                self.stats.stale += 1;
                return Err(Rejected::Stale);
            }
            self.stats.geometry_resets += 1;
            self.remove(seq);
            reset = true;
        }
        if !self.partial.contains_key(&seq) {
            first = !reset;
            if header.count == 1 {
                self.stats.fragments += 1;
                self.done.insert(seq);
                let frame = Assembled {
                    header,
                    body,
                    first_at: now,
                };
                return Ok(Accepted::Complete { frame, first });
            }
            // Check the bound before allocating anything.
            let footprint = Partial::footprint_of(&header);
            if footprint > self.limits.max_bytes {
                self.stats.too_large += 1;
                return Err(Rejected::TooLarge);
            }
            self.make_room(footprint);
            let p = Partial::new(header, now, expires);
            self.bytes += p.footprint();
            self.expiries.insert((p.expires, seq));
            self.partial.insert(seq, p);
        }
        let Some(p) = self.partial.get_mut(&seq) else {
            // Just inserted above; unreachable, but a reject is better than a panic.
            return Err(Rejected::Stale);
        };
        let index = usize::from(header.index);
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let Some(w) = p.have.get_mut(word) else {
            return Err(Rejected::Stale);
        };
        if *w & bit != 0 {
            self.stats.duplicates += 1;
            return Err(Rejected::Duplicate);
        }
        *w |= bit;
        let range = header.range();
        if let Some(dst) = p.buf.get_mut(range) {
            dst.copy_from_slice(&body);
        }
        p.received += 1;
        p.last_at = now;
        self.stats.fragments += 1;
        if p.received < p.header.count {
            return Ok(Accepted::Partial { first });
        }
        let Some(p) = self.take(seq) else {
            return Err(Rejected::Stale);
        };
        self.done.insert(seq);
        let frame = Assembled {
            header: p.header,
            body: Bytes::from(p.buf),
            first_at: p.first_at,
        };
        Ok(Accepted::Complete { frame, first })
    }

    fn make_room(&mut self, need: usize) {
        while !self.partial.is_empty()
            && (self.partial.len() >= self.limits.max_frames
                || self.bytes + need > self.limits.max_bytes)
        {
            let Some((&oldest, _)) = self.partial.first_key_value() else {
                break;
            };
            self.remove(oldest);
            self.done.insert(oldest);
            self.stats.evicted += 1;
        }
    }

    fn take(&mut self, seq: u64) -> Option<Partial> {
        let p = self.partial.remove(&seq)?;
        self.bytes -= p.footprint();
        self.expiries.remove(&(p.expires, seq));
        Some(p)
    }

    fn remove(&mut self, seq: u64) {
        self.take(seq);
    }

    /// Gives up every partial frame whose deadline is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(at, seq)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.remove(seq);
            self.done.insert(seq);
            n += 1;
        }
        self.stats.expired += n as u64;
        n
    }

    /// The earliest give-up deadline among partial frames.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|&(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packetize::{Fragments, WireFrame};
    use crate::wire::datagram::{FrameFlags, HEADER_LEN};
    use proptest::prelude::*;
    use std::time::Duration;

    fn frame(seq: u64, len: usize) -> WireFrame {
        WireFrame {
            seq,
            capture_us: 1000 + seq,
            flags: FrameFlags::empty(),
            body: (0..len)
                .map(|i| (i as u64 * 31 + seq) as u8)
                .collect::<Vec<_>>()
                .into(),
            payload_len: len as u32,
        }
    }

    fn split(d: &Bytes) -> (FragmentHeader, Bytes) {
        let (h, _) = FragmentHeader::parse(d).unwrap();
        (h, d.slice(HEADER_LEN..))
    }

    fn feed(r: &mut Reassembler, now: Instant, d: &Bytes) -> Result<Accepted, Rejected> {
        let (h, b) = split(d);
        r.insert(now, h, b, now + Duration::from_secs(1))
    }

    #[test]
    fn reassembles_out_of_order_and_ignores_duplicates() {
        let now = crate::test_instant();
        let f = frame(0, 5000);
        let mut frags: Vec<_> = Fragments::new(&f, 1200).unwrap().collect();
        frags.reverse();
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, now, &frags[0]),
            Ok(Accepted::Partial { first: true })
        );
        assert_eq!(feed(&mut r, now, &frags[0]), Err(Rejected::Duplicate));
        for d in &frags[1..frags.len() - 1] {
            assert_eq!(feed(&mut r, now, d), Ok(Accepted::Partial { first: false }));
        }
        let Ok(Accepted::Complete {
            frame,
            first: false,
        }) = feed(&mut r, now, frags.last().unwrap())
        else {
            panic!("complete")
        };
        assert_eq!(frame.body, f.body);
        assert_eq!(
            feed(&mut r, now, &frags[1]),
            Err(Rejected::Duplicate),
            "frame already done"
        );
        assert_eq!((r.partial_frames(), r.partial_bytes()), (0, 0));
        assert_eq!(r.stats().duplicates, 2);
    }

    #[test]
    fn evicts_the_oldest_partial_frame_when_full() {
        let now = crate::test_instant();
        let limits = ReassemblyLimits {
            max_frames: 2,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        for seq in 0..3 {
            let first = Fragments::new(&frame(seq, 3000), 1200)
                .unwrap()
                .next()
                .unwrap();
            assert!(feed(&mut r, now, &first).is_ok());
        }
        assert_eq!(r.partial_frames(), 2);
        assert_eq!(r.stats().evicted, 1);
        let late = Fragments::new(&frame(0, 3000), 1200)
            .unwrap()
            .nth(1)
            .unwrap();
        assert_eq!(
            feed(&mut r, now, &late),
            Err(Rejected::Duplicate),
            "seq 0 was given up"
        );
    }

    #[test]
    fn byte_bound_holds() {
        let now = crate::test_instant();
        let limits = ReassemblyLimits {
            max_bytes: 10_000,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        for seq in 0..20 {
            let first = Fragments::new(&frame(seq, 4000), 1200)
                .unwrap()
                .next()
                .unwrap();
            feed(&mut r, now, &first).unwrap();
            assert!(r.partial_bytes() <= 10_000);
        }
        let huge = Fragments::new(&frame(50, 20_000), 1200)
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(feed(&mut r, now, &huge), Err(Rejected::TooLarge));
    }

    #[test]
    fn refuses_oversized_and_far_ahead_frames() {
        let now = crate::test_instant();
        let limits = ReassemblyLimits {
            max_frame_bytes: 1000,
            max_jump: 100,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        let big = Fragments::new(&frame(0, 1001), 1200)
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(feed(&mut r, now, &big), Err(Rejected::TooLarge));
        let far = Fragments::new(&frame(101, 10), 1200)
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(feed(&mut r, now, &far), Err(Rejected::TooFarAhead));
        let near = Fragments::new(&frame(100, 10), 1200)
            .unwrap()
            .next()
            .unwrap();
        assert!(matches!(
            feed(&mut r, now, &near),
            Ok(Accepted::Complete { .. })
        ));
        assert_eq!(r.stats().too_large + r.stats().too_far_ahead, 2);
    }

    #[test]
    fn expires_at_the_deadline() {
        let now = crate::test_instant();
        let mut r = Reassembler::default();
        let first = Fragments::new(&frame(0, 3000), 1200)
            .unwrap()
            .next()
            .unwrap();
        let (h, b) = split(&first);
        r.insert(now, h, b, now + Duration::from_millis(50))
            .unwrap();
        assert_eq!(r.next_expiry(), Some(now + Duration::from_millis(50)));
        assert_eq!(r.expire(now + Duration::from_millis(49)), 0);
        assert_eq!(r.expire(now + Duration::from_millis(50)), 1);
        assert_eq!(r.next_expiry(), None);
        assert!(r.is_done(0));
    }

    #[test]
    fn a_recut_frame_restarts_its_reassembly() {
        let now = crate::test_instant();
        let f = frame(3, 3000);
        let mut r = Reassembler::default();
        let big: Vec<_> = Fragments::new(&f, 1400).unwrap().collect();
        feed(&mut r, now, &big[0]).unwrap();
        let small: Vec<_> = Fragments::new(&f, 1000).unwrap().collect();
        let mut done = None;
        for (i, d) in small.iter().enumerate() {
            if let Ok(Accepted::Complete { frame, .. }) = feed(&mut r, now, d) {
                done = Some(frame);
            }
            if i == 0 {
                // A late fragment of the old cut does not undo the new one.
                assert_eq!(feed(&mut r, now, &big[1]), Err(Rejected::Stale));
            }
        }
        assert_eq!(done.unwrap().body, f.body);
        assert_eq!(r.stats().geometry_resets, 1);
    }

    #[test]
    fn window_tracks_recent_sequence_numbers() {
        let mut w = SeqWindow::default();
        w.insert(5);
        assert!(w.contains(5) && !w.contains(4) && !w.contains(6));
        w.observe(SeqWindow::SPAN + 5);
        assert!(w.is_below(5));
        assert!(!w.contains(5));
        w.insert(SeqWindow::SPAN + 6);
        assert!(w.contains(SeqWindow::SPAN + 6));
        w.observe(10 * SeqWindow::SPAN);
        assert!(!w.contains(SeqWindow::SPAN + 6));
    }

    proptest! {
        /// The bit window answers exactly as a plain set of the finished numbers within the
        /// last SPAN would.
        #[test]
        fn seq_window_matches_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..3000, any::<bool>()), 1..300)) {
            let mut w = SeqWindow::default();
            let mut set = std::collections::HashSet::new();
            let mut top = 0u64;
            let mut cursor = 0u64;
            for (jump, delta, insert) in ops {
                // Mostly small steps, sometimes jumps of up to ~3 windows.
                cursor = if jump { cursor + delta * 64 } else { cursor.saturating_sub(delta) + delta / 2 };
                let seq = cursor;
                if seq > top {
                    set.retain(|&x| x <= top);
                    top = seq;
                }
                if insert {
                    w.insert(seq);
                    let below = top >= SeqWindow::SPAN && seq <= top - SeqWindow::SPAN;
                    if !below {
                        set.insert(seq);
                    }
                } else {
                    w.observe(seq);
                }
                for probe in [seq, seq.saturating_sub(1), seq.saturating_sub(64), seq.saturating_sub(SeqWindow::SPAN - 1)] {
                    let below = top >= SeqWindow::SPAN && probe <= top - SeqWindow::SPAN;
                    let expect = probe <= top && !below && set.contains(&probe);
                    prop_assert_eq!(w.contains(probe), expect, "probe {} top {}", probe, top);
                }
            }
        }

        /// Under any loss, duplication and reordering, every frame that got all its fragments
        /// through comes out exactly once and intact; nothing else does; memory returns to zero.
        #[test]
        fn round_trip_under_loss_duplication_and_reordering(
            sizes in proptest::collection::vec(0usize..6000, 1..20),
            mtu in 100usize..1500,
            drops in proptest::collection::vec(any::<bool>(), 0..400),
            dups in proptest::collection::vec(0u8..4, 0..400),
            order_seed: u64,
        ) {
            let now = crate::test_instant();
            let frames: Vec<_> = sizes.iter().enumerate().map(|(i, &n)| frame(i as u64, n)).collect();
            let mut datagrams = Vec::new();
            let mut delivered_all = vec![true; frames.len()];
            let mut k = 0;
            for (i, f) in frames.iter().enumerate() {
                for d in Fragments::new(f, mtu).unwrap() {
                    let dropped = drops.get(k).copied().unwrap_or(false);
                    if dropped {
                        delivered_all[i] = false;
                    } else {
                        for _ in 0..=dups.get(k).copied().unwrap_or(0) {
                            datagrams.push(d.clone());
                        }
                    }
                    k += 1;
                }
            }
            // Deterministic shuffle.
            let mut x = order_seed | 1;
            for i in (1..datagrams.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                datagrams.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut r = Reassembler::default();
            let mut out = vec![0u32; frames.len()];
            for d in &datagrams {
                if let Ok(Accepted::Complete { frame, .. }) = feed(&mut r, now, d) {
                    let seq = frame.header.seq as usize;
                    prop_assert_eq!(&frame.body, &frames[seq].body);
                    out[seq] += 1;
                }
            }
            for (i, &n) in out.iter().enumerate() {
                prop_assert_eq!(n, u32::from(delivered_all[i]), "frame {}", i);
            }
            r.expire(now + Duration::from_secs(2));
            prop_assert_eq!((r.partial_frames(), r.partial_bytes()), (0, 0));
        }

        #[test]
        fn arbitrary_headers_never_panic_and_stay_bounded(
            frags in proptest::collection::vec((any::<u64>(), 0u32..50_000, 1u16..100, any::<u16>()), 0..300),
        ) {
            let now = crate::test_instant();
            let limits = ReassemblyLimits { max_frames: 8, max_bytes: 100_000, max_frame_bytes: 40_000, max_jump: 1000 };
            let mut r = Reassembler::new(limits);
            for (seq, frame_len, count, index) in frags {
                if !crate::wire::datagram::valid_geometry(frame_len, count) { continue; }
                let h = FragmentHeader {
                    flags: FrameFlags::empty(), seq: seq % 3000, capture_us: 0, frame_len,
                    payload_len: frame_len, index: index % count, count,
                };
                let body = Bytes::from(vec![0u8; h.range().len()]);
                let _ = r.insert(now, h, body, now);
                prop_assert!(r.partial_frames() <= 8);
                prop_assert!(r.partial_bytes() <= 100_000);
            }
        }
    }
}
