//! Time on the wire, and the estimate of the peer's clock.
//!
//! Sessions run on `now: Instant` supplied by their shell. Timestamps on the wire are microseconds
//! since the Unix epoch of the sending host, derived from a [`ClockAnchor`] (one `Instant` and the
//! wall-clock time read at the same moment by the shell: `net::system_anchor`). Two processes on one host therefore
//! share a time base; hosts synchronised by NTP or PTP nearly do.
//!
//! [`ClockSync`] estimates the offset between the sender's clock and the receiver's from
//! ping/pong exchanges on the control stream (NTP's on-wire calculation, RFC 5905 §8), keeping
//! the offset of the sample with the smallest round-trip time in a sliding window: queueing only
//! ever adds delay, so the fastest exchange is the least distorted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Pairs an `Instant` with the wall-clock time at that instant, so that later instants map to
/// wall-clock microseconds without reading the wall clock again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAnchor {
    /// The instant the wall clock was read.
    pub at: Instant,
    /// Microseconds since the Unix epoch at `at`.
    pub unix_us: u64,
}

impl ClockAnchor {
    /// An anchor mapping `at` to `unix_us`.
    pub fn new(at: Instant, unix_us: u64) -> Self {
        Self { at, unix_us }
    }

    /// Microseconds since the Unix epoch at `now`.
    pub fn micros(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.at) {
            Some(d) => self.unix_us.saturating_add(whole_micros(d)),
            None => self
                .unix_us
                .saturating_sub(whole_micros(self.at.duration_since(now))),
        }
    }

    /// The instant at which this clock reads `us`.
    pub fn instant(&self, us: u64) -> Instant {
        if us >= self.unix_us {
            // Timestamps come from the network: saturate a century ahead instead of overflowing.
            let ahead = Duration::from_micros(us - self.unix_us)
                .min(Duration::from_secs(100 * 365 * 86_400));
            self.at.checked_add(ahead).unwrap_or(self.at)
        } else {
            let back = Duration::from_micros(self.unix_us - us);
            self.at.checked_sub(back).unwrap_or(self.at)
        }
    }
}

/// The last instant a session converted with its [`ClockAnchor`], and the result: handling
/// one event asks for the same instant several times (a frame pushed and sent at one instant;
/// a datagram and the playout that follows it). Always asked with the session's one anchor.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastMicros(Option<(Instant, u64)>);

impl LastMicros {
    /// `t` in µs on `anchor`'s clock, remembered for the next call.
    pub fn get(&mut self, anchor: &ClockAnchor, t: Instant) -> u64 {
        if let Some((at, us)) = self.0
            && at == t
        {
            return us;
        }
        let us = anchor.micros(t);
        self.0 = Some((t, us));
        us
    }
}

/// `d` in whole microseconds, saturating: `as_micros` without its 128-bit arithmetic (this
/// runs for every frame on both sides).
pub fn whole_micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// `a − b` in microseconds, saturating instead of overflowing (timestamps come from the network).
pub fn diff_us(a: u64, b: u64) -> i64 {
    let d = i128::from(a) - i128::from(b);
    i64::try_from(d).unwrap_or(if d > 0 { i64::MAX } else { i64::MIN })
}

/// How the receiver maps the sender's timestamps onto its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Estimate the offset from ping/pong exchanges (hosts with independent clocks).
    #[default]
    Sync,
    /// Trust that both clocks agree (one host, or hosts synchronised by PTP): offset 0. The
    /// ping/pong estimate is still made and reported.
    System,
}

/// One completed ping/pong exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Peer clock minus local clock, µs.
    pub offset_us: i64,
    /// Round-trip time minus the peer's processing time, µs.
    pub rtt_us: u64,
}

impl ClockSample {
    /// NTP's calculation (RFC 5905 §8) from the four timestamps of an exchange: `t1` local send,
    /// `t2` peer receive, `t3` peer send, `t4` local receive. `None` when the timestamps are
    /// inconsistent (negative round trip).
    pub fn from_exchange(t1: u64, t2: u64, t3: u64, t4: u64) -> Option<Self> {
        let (t1, t2, t3, t4) = (
            i128::from(t1),
            i128::from(t2),
            i128::from(t3),
            i128::from(t4),
        );
        let rtt = (t4 - t1) - (t3 - t2);
        if rtt < 0 || t3 < t2 {
            return None;
        }
        let offset = ((t2 - t1) + (t3 - t4)) / 2;
        Some(Self {
            offset_us: i64::try_from(offset).ok()?,
            rtt_us: u64::try_from(rtt).ok()?,
        })
    }
}

/// Sliding-window minimum-RTT clock-offset estimator.
#[derive(Debug, Clone)]
pub struct ClockSync {
    mode: ClockMode,
    window: VecDeque<ClockSample>,
    capacity: usize,
    coarse: Option<i64>,
    samples: u64,
}

impl ClockSync {
    /// Number of recent exchanges the estimate is chosen from.
    pub const WINDOW: usize = 8;

    /// An estimator in `mode`.
    pub fn new(mode: ClockMode) -> Self {
        Self {
            mode,
            window: VecDeque::new(),
            capacity: Self::WINDOW,
            coarse: None,
            samples: 0,
        }
    }

    /// Records a coarse sample: the peer's clock as stated in its hello, against the local time
    /// the hello arrived. Used only until the first exchange completes.
    pub fn on_hello(&mut self, peer_clock_us: u64, local_us: u64) {
        if peer_clock_us == 0 {
            return; // not given
        }
        let diff = i128::from(peer_clock_us) - i128::from(local_us);
        self.coarse = i64::try_from(diff).ok();
    }

    /// Records a completed exchange; returns the sample if the timestamps were consistent.
    pub fn on_exchange(&mut self, t1: u64, t2: u64, t3: u64, t4: u64) -> Option<ClockSample> {
        let s = ClockSample::from_exchange(t1, t2, t3, t4)?;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(s);
        self.samples += 1;
        Some(s)
    }

    fn best(&self) -> Option<ClockSample> {
        self.window.iter().min_by_key(|s| s.rtt_us).copied()
    }

    /// The estimate from exchanges alone (what `System` mode reports next to its zero).
    pub fn estimated_offset_us(&self) -> Option<i64> {
        self.best().map(|s| s.offset_us).or(self.coarse)
    }

    /// Peer clock minus local clock, µs, as the session uses it to map timestamps.
    pub fn offset_us(&self) -> i64 {
        match self.mode {
            ClockMode::System => 0,
            ClockMode::Sync => self.estimated_offset_us().unwrap_or(0),
        }
    }

    /// Smallest round-trip time in the window, µs.
    pub fn min_rtt_us(&self) -> Option<u64> {
        self.best().map(|s| s.rtt_us)
    }

    /// Most recent round-trip time, µs.
    pub fn last_rtt_us(&self) -> Option<u64> {
        self.window.back().map(|s| s.rtt_us)
    }

    /// Exchanges completed.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The mode in use.
    pub fn mode(&self) -> ClockMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_micros_converts_as_the_anchor_and_remembers_one_instant() {
        let t0 = crate::test_instant();
        let anchor = ClockAnchor::new(t0, 5_000_000);
        let mut last = LastMicros::default();
        for t in [
            t0,
            t0,
            t0 + Duration::from_millis(3),
            t0,
            t0 + Duration::from_secs(2),
        ] {
            assert_eq!(last.get(&anchor, t), anchor.micros(t));
        }
    }

    proptest::proptest! {
        /// Whole microseconds as `as_micros` counts them, saturating where it would not fit.
        #[test]
        fn whole_micros_is_as_micros(secs in proptest::prelude::any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            proptest::prop_assert_eq!(whole_micros(d), u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn anchor_maps_both_ways() {
        let at = crate::test_instant();
        let a = ClockAnchor::new(at, 1_000_000);
        assert_eq!(a.micros(at + Duration::from_millis(5)), 1_005_000);
        assert_eq!(a.instant(1_005_000), at + Duration::from_millis(5));
        assert_eq!(
            a.micros(a.instant(999_000)),
            999_000,
            "instants before the anchor map too"
        );
    }

    #[test]
    fn symmetric_paths_recover_the_offset_exactly() {
        // Peer clock runs 7 ms ahead; one-way delay 300 µs each way; peer holds it 20 µs.
        // Sent at local 1000, arrives at peer 8300 (local 1300), leaves at peer 8320 (local 1320),
        // back at local 1620.
        let s = ClockSample::from_exchange(1_000, 8_300, 8_320, 1_620).unwrap();
        assert_eq!(
            s,
            ClockSample {
                offset_us: 7_000,
                rtt_us: 600
            }
        );
    }

    #[test]
    fn inconsistent_timestamps_are_refused() {
        assert_eq!(ClockSample::from_exchange(100, 0, 0, 50), None);
        assert_eq!(ClockSample::from_exchange(0, 10, 5, 100), None);
    }

    #[test]
    fn keeps_the_fastest_exchange_and_forgets_old_ones() {
        let mut c = ClockSync::new(ClockMode::Sync);
        assert_eq!(c.offset_us(), 0);
        c.on_hello(10_500, 10_000);
        assert_eq!(
            c.offset_us(),
            500,
            "coarse estimate until an exchange completes"
        );
        // offset 100, rtt 2000 (queued) then offset 40, rtt 200 (clean).
        c.on_exchange(0, 1_100, 1_100, 2_000).unwrap();
        c.on_exchange(10_000, 10_140, 10_140, 10_200).unwrap();
        assert_eq!(c.offset_us(), 40);
        assert_eq!(c.min_rtt_us(), Some(200));
        for i in 0..ClockSync::WINDOW as u64 {
            let t = 100_000 * (i + 1);
            c.on_exchange(t, t + 900, t + 900, t + 1_000).unwrap(); // offset 400, rtt 1000
        }
        assert_eq!(c.offset_us(), 400, "the fast sample left the window");
        assert_eq!(c.samples(), 2 + ClockSync::WINDOW as u64);
    }

    #[test]
    fn system_mode_trusts_the_clocks() {
        let mut c = ClockSync::new(ClockMode::System);
        c.on_exchange(0, 1_100, 1_100, 2_000).unwrap();
        assert_eq!(c.offset_us(), 0);
        assert_eq!(c.estimated_offset_us(), Some(100));
    }

    proptest! {
        /// With an asymmetry of at most `a` µs between the two directions, the estimate is
        /// within a/2 of the true offset.
        #[test]
        fn error_is_bounded_by_half_the_asymmetry(
            offset in -1_000_000_000i64..1_000_000_000,
            fwd in 0u64..100_000, back in 0u64..100_000, hold in 0u64..1000,
        ) {
            let t1 = 5_000_000_000u64;
            let t2 = (t1 as i64 + fwd as i64 + offset) as u64;
            let t3 = t2 + hold;
            let t4 = (t3 as i64 - offset) as u64 + back;
            let s = ClockSample::from_exchange(t1, t2, t3, t4).unwrap();
            let err = (s.offset_us - offset).abs();
            prop_assert!(err <= (fwd.abs_diff(back) / 2 + 1) as i64);
            prop_assert_eq!(s.rtt_us, fwd + back);
        }
    }
}
