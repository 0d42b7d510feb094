//! Counters, delay histograms and the session report.
//!
//! Three delays are kept apart (see `ARCHITECTURE.md`): *network* (capture → frame complete at
//! the receiver), *jitter buffer* (complete → played) and *end-to-end* (capture → played). Each is
//! an [`hdrhistogram`] of microseconds from 1 µs to one hour at three significant digits, so a
//! percentile is exact to 0.1 %. Reports serialise to a stable JSON layout ([`report`]) and to
//! HdrHistogram's percentile-distribution text ([`hgrm`]).

pub mod hgrm;
pub mod report;
pub mod text;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest delay a histogram tracks, µs (one hour); larger values saturate.
pub const MAX_TRACKED_US: u64 = 3_600_000_000;

/// A histogram of delays in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    negative: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            hist: {
                // Grows as larger values come (to `MAX_TRACKED_US` at most: `record` clamps),
                // instead of zeroing the counts for an hour up front: 190 KB per histogram,
                // which a new receiver session (three of them) paid as page faults, ~0.3 ms before
                // it read its first datagram. The buckets are the same, so are the quantiles.
                // Cannot fail: constant bounds (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5).
                let mut h = Histogram::new_with_bounds(1, 2, 3).expect("valid bounds");
                h.auto(true);
                h
            },
            negative: 0,
        }
    }
}

impl LatencyHistogram {
    /// Records a delay. Negative values (possible when clock offset estimates err) are recorded
    /// as 0 and counted.
    pub fn record(&mut self, us: i64) {
        if us < 0 {
            self.negative += 1;
        }
        let us = us.max(0).unsigned_abs().min(MAX_TRACKED_US);
        // `record` grows the histogram (`saturating_record` would clamp to its current top);
        // within the hour it cannot fail, and if it did the value would still count.
        if self.hist.record(us).is_err() {
            self.hist.saturating_record(us);
        }
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Samples that were negative and recorded as 0.
    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// The underlying histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Value at quantile `q` (0..=1), µs.
    pub fn quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides: addition cannot fail.
        let _ = self.hist.add(&other.hist);
        self.negative += other.negative;
    }

    /// The samples recorded since `earlier`, a copy of this histogram taken before: what a
    /// window of time added. If `earlier` holds samples this one does not (it is not an earlier
    /// copy), there is no window to tell and the result is all of this histogram.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = self.clone();
        if out.hist.subtract(&earlier.hist).is_err() {
            return self.clone();
        }
        out.negative = self.negative.saturating_sub(earlier.negative);
        out
    }

    /// The summary that reports carry.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let h = &self.hist;
        LatencySummary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Summary of one delay, µs. Stable JSON keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean, to 0.1 µs.
    pub mean: f64,
}

/// The three delays of a session.
#[derive(Debug, Clone, Default)]
pub struct Delays {
    /// Capture → frame complete at the receiver.
    pub network: LatencyHistogram,
    /// Complete → played.
    pub jitter_buffer: LatencyHistogram,
    /// Capture → played.
    pub end_to_end: LatencyHistogram,
}

impl Delays {
    /// Summaries of all three.
    pub fn summaries(&self) -> report::LatencyReport {
        report::LatencyReport {
            network: self.network.summary(),
            jitter_buffer: self.jitter_buffer.summary(),
            end_to_end: self.end_to_end.summary(),
            send: None,
        }
    }
}

/// RFC 3550 §6.4.1 interarrival jitter, computed per frame from the transit time of its first
/// fragment: `J += (|D| - J) / 16`.
#[derive(Debug, Clone, Copy, Default)]
pub struct InterarrivalJitter {
    last_transit: Option<i64>,
    jitter: f64,
}

impl InterarrivalJitter {
    /// Adds a frame whose first fragment arrived `transit_us` after capture (raw clocks: the
    /// constant offset cancels).
    pub fn update(&mut self, transit_us: i64) {
        if let Some(prev) = self.last_transit {
            let d = transit_us.saturating_sub(prev).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit_us);
    }

    /// The current estimate, µs.
    pub fn micros(&self) -> u64 {
        self.jitter.round() as u64
    }
}

/// Queueing delay: how far the recent transit of frames (smoothed, `T += (t − T) / 8`) stands
/// above the least transit of the last 10 s (kept per second, so the minimum forgets a path
/// that got longer). Raw clocks: the constant offset cancels.
#[derive(Debug, Clone, Default)]
pub struct QueueingDelay {
    smoothed: Option<f64>,
    /// (second, least transit in it), oldest first, at most 10.
    minima: std::collections::VecDeque<(u64, i64)>,
}

impl QueueingDelay {
    /// Seconds the minimum covers.
    const WINDOW_S: u64 = 10;

    /// Adds a frame whose first fragment arrived `transit_us` after capture, at `now_us`.
    pub fn update(&mut self, now_us: u64, transit_us: i64) {
        let t = transit_us as f64;
        self.smoothed = Some(self.smoothed.map_or(t, |s| s + (t - s) / 8.0));
        let sec = now_us / 1_000_000;
        match self.minima.back_mut() {
            // The same second as the last frame: what it expired stays expired, and nothing
            // else expires before a new second starts.
            Some((s, m)) if *s == sec => *m = (*m).min(transit_us),
            _ => {
                self.minima.push_back((sec, transit_us));
                while self
                    .minima
                    .front()
                    .is_some_and(|&(s, _)| s + Self::WINDOW_S <= sec)
                {
                    self.minima.pop_front();
                }
            }
        }
    }

    /// The current queueing delay, µs (0 before any frame).
    pub fn micros(&self) -> u64 {
        let (Some(s), Some(min)) = (self.smoothed, self.minima.iter().map(|&(_, m)| m).min())
        else {
            return 0;
        };
        (s - min as f64).max(0.0).round() as u64
    }
}

/// The rate at which the path delivers a burst (packet-train dispersion): a frame's fragments
/// leave the sender back to back, so the spacing at which they arrive is the bottleneck's
/// (as long as nothing else queues between them). Per frame of at least
/// [`BurstRate::MIN_FRAGMENTS`] fragments that came by themselves, one after another: the bytes
/// after the first over the time from the first to the last. The estimate is the largest
/// sample of the last 5–10 s: cross traffic and jitter only stretch a train (a sample too
/// low), so the largest is the one nearest the bottleneck. A receiver that reads datagrams in
/// batches sees trains compressed (a sample too high), which only lets the sender pace less.
#[derive(Debug, Clone, Default)]
pub struct BurstRate {
    /// The frame whose fragments are arriving: (seq, first and last arrival µs, bytes after
    /// the first, fragments).
    train: Option<(u64, u64, u64, u64, u32)>,
    /// Largest sample of the current half window, of the previous one, and when the current
    /// began (µs).
    current: u64,
    previous: u64,
    since: Option<u64>,
}

impl BurstRate {
    /// Fragments a frame needs to make a sample.
    pub const MIN_FRAGMENTS: u32 = 4;
    /// Half the window the largest sample is taken over, µs.
    const HALF_WINDOW_US: u64 = 5_000_000;

    /// A fragment of frame `seq`, `len` bytes, arrived by itself at `now_us`.
    pub fn on_fragment(&mut self, now_us: u64, seq: u64, len: usize) {
        let len = len as u64;
        match &mut self.train {
            Some((s, _, last, bytes, n)) if *s == seq => {
                *last = now_us.max(*last);
                *bytes = bytes.saturating_add(len);
                *n = n.saturating_add(1);
            }
            _ => {
                if let Some(t) = self.train.take() {
                    self.close(t);
                }
                self.train = Some((seq, now_us, now_us, 0, 1));
            }
        }
    }

    fn close(&mut self, (_, first, last, bytes, n): (u64, u64, u64, u64, u32)) {
        if n < Self::MIN_FRAGMENTS || last <= first {
            return;
        }
        let bps = bytes.saturating_mul(8_000_000) / (last - first);
        self.rotate(last);
        self.current = self.current.max(bps);
    }

    fn rotate(&mut self, now_us: u64) {
        match self.since {
            None => self.since = Some(now_us),
            Some(s) if now_us >= s.saturating_add(Self::HALF_WINDOW_US) => {
                // A whole half window without samples forgets the one before it too.
                let gap = now_us >= s.saturating_add(2 * Self::HALF_WINDOW_US);
                self.previous = if gap { 0 } else { self.current };
                self.current = 0;
                self.since = Some(now_us);
            }
            Some(_) => {}
        }
    }

    /// The estimate at `now_us`, bit/s (0 while unknown).
    pub fn bps(&mut self, now_us: u64) -> u64 {
        self.rotate(now_us);
        self.current.max(self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_rate_is_the_largest_recent_train_dispersion() {
        let mut b = BurstRate::default();
        // 1200-byte fragments 960 µs apart: 10 Mbit/s. The train closes when the next frame
        // starts.
        let train = |b: &mut BurstRate, at: u64, seq: u64, n: u64, gap: u64| {
            for i in 0..n {
                b.on_fragment(at + i * gap, seq, 1200);
            }
        };
        train(&mut b, 0, 0, 10, 960);
        assert_eq!(b.bps(10_000), 0, "a train counts once it has ended");
        train(&mut b, 33_000, 1, 2, 960);
        assert_eq!(b.bps(40_000), 10_000_000);
        // Frames of fewer than four fragments make no sample; a slower train does not lower
        // the estimate, a faster one raises it.
        train(&mut b, 66_000, 2, 20, 1_920);
        train(&mut b, 133_000, 3, 3, 10);
        train(&mut b, 166_000, 4, 1, 0);
        assert_eq!(b.bps(170_000), 10_000_000);
        train(&mut b, 200_000, 5, 5, 480);
        train(&mut b, 233_000, 6, 1, 0);
        assert_eq!(b.bps(240_000), 20_000_000);
        // Fragments arriving at the same instant (a batch read) make no sample.
        train(&mut b, 266_000, 7, 8, 0);
        train(&mut b, 300_000, 8, 1, 0);
        assert_eq!(b.bps(300_000), 20_000_000);
        // Forgotten 5-10 s later: the window moves on in halves.
        train(&mut b, 6_000_000, 9, 5, 960);
        train(&mut b, 6_033_000, 10, 1, 0);
        assert_eq!(
            b.bps(6_100_000),
            20_000_000,
            "the previous half still counts"
        );
        assert_eq!(b.bps(11_100_000), 10_000_000, "then only the last sample");
        assert_eq!(b.bps(30_000_000), 0, "and none after a quiet spell");
    }

    #[test]
    fn queueing_delay_is_transit_above_the_recent_minimum() {
        let mut q = QueueingDelay::default();
        assert_eq!(q.micros(), 0);
        for i in 0..100u64 {
            q.update(i * 10_000, 20_000);
        }
        assert_eq!(q.micros(), 0, "a steady path has no queue");
        // A queue builds: transit climbs to 120 ms.
        for i in 100..200u64 {
            q.update(i * 10_000, 120_000);
        }
        assert!((99_000..=100_000).contains(&q.micros()), "{}", q.micros());
        // Ten seconds later the old minimum is forgotten: a longer path is no queue.
        for i in 200..1500u64 {
            q.update(i * 10_000, 120_000);
        }
        assert_eq!(q.micros(), 0);
    }

    #[test]
    fn since_keeps_only_what_a_window_added() {
        let mut h = LatencyHistogram::default();
        for us in [100, 200, 300] {
            h.record(us);
        }
        let before = h.clone();
        for us in [5_000, 6_000, 200] {
            h.record(us);
        }
        h.record(-1);
        let window = h.since(&before);
        assert_eq!(window.len(), 4);
        assert_eq!(window.negative(), 1);
        assert_eq!(window.quantile(0.0), 0, "the negative sample counts as 0");
        assert!((5_000..5_010).contains(&window.quantile(0.75)));
        assert_eq!(h.since(&h.clone()).len(), 0);
        // Not an earlier copy: nothing to subtract from, so all of it.
        let mut other = LatencyHistogram::default();
        other.record(77_000);
        assert_eq!(h.since(&other).len(), h.len());
    }

    #[test]
    fn summary_reads_percentiles() {
        let mut h = LatencyHistogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!((s.count, s.min, s.max), (1000, 1, 1000));
        assert_eq!(s.p50, 500);
        assert_eq!(s.p90, 900);
        assert_eq!(s.p99, 990);
        assert_eq!(s.p999, 999);
        assert!((s.mean - 500.5).abs() < 0.5);
    }

    #[test]
    fn negatives_are_counted_and_huge_values_saturate() {
        let mut h = LatencyHistogram::default();
        h.record(-5);
        h.record(i64::MAX);
        assert_eq!(h.negative(), 1);
        assert_eq!(h.len(), 2);
        assert!(h.summary().max >= MAX_TRACKED_US);
    }

    #[test]
    fn a_new_histogram_is_small_and_grows_to_what_it_records() {
        let mut h = LatencyHistogram::default();
        let new_len = h.histogram().distinct_values();
        assert!(new_len <= 4096, "{new_len} counters before any sample");
        h.record(90_000_000);
        assert!(h.histogram().distinct_values() > new_len);
        assert!(h.quantile(1.0) >= 90_000_000);
    }

    proptest::proptest! {
        /// Growing on demand keeps the buckets of a histogram sized for the hour up front:
        /// every quantile, the count and the extremes are the same (above the hour, both
        /// saturate; see `negatives_are_counted_and_huge_values_saturate`).
        #[test]
        fn growing_keeps_the_quantiles_of_a_full_size_histogram(
            values in proptest::collection::vec(0..=MAX_TRACKED_US, 1..200),
            split in 0usize..200,
        ) {
            let mut full = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3).unwrap();
            let (mut a, mut b) = (LatencyHistogram::default(), LatencyHistogram::default());
            for (i, &v) in values.iter().enumerate() {
                full.saturating_record(v);
                // Half through a merge, which must grow the same way.
                if i < split { a.record(v as i64) } else { b.record(v as i64) }
            }
            a.merge(&b);
            proptest::prop_assert_eq!(a.len(), full.len());
            for q in [0.0, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
                proptest::prop_assert_eq!(a.quantile(q), full.value_at_quantile(q), "q {}", q);
            }
            proptest::prop_assert_eq!(a.histogram().min(), full.min());
        }
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(
            LatencyHistogram::default().summary(),
            LatencySummary::default()
        );
    }

    #[test]
    fn interarrival_jitter_converges_to_the_mean_deviation() {
        let mut j = InterarrivalJitter::default();
        for i in 0..2000 {
            j.update(if i % 2 == 0 { 1000 } else { 1400 });
        }
        assert!((j.micros() as i64 - 400).abs() <= 1, "{}", j.micros());
    }
}
