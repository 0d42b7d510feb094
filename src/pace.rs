//! Pacing of the sender's datagrams: a token bucket at a rate the receiver measured
//! (`docs/PROTOCOL.md` §4.6, `burst_rate_bps`). Sans-IO: every call takes `now`.
//!
//! After a quiet spell up to [`BURST_BYTES`] (or [`BURST_TIME`] at the rate, on a fast path)
//! go at once; then each datagram as the rate allows. A burst sent faster than the bottleneck
//! drains builds a queue there, and a shallow drop-tail queue drops its tail (every keyframe's,
//! on a 10 Mbit/s path with a 25-packet queue).

use std::time::{Duration, Instant};

/// Bytes that may leave at once after a quiet spell (about ten datagrams)...
pub const BURST_BYTES: u64 = 12_000;

/// ...or what the rate sends in this long, if more: on a fast path pacing spreads only what a
/// shallow queue could not take, and does not hold back a frame that the path would carry at
/// once.
pub const BURST_TIME: Duration = Duration::from_millis(2);

/// The lowest rate paced at, bit/s: a measure below it (a receiver's bug, or a hostile one)
/// would hold frames until their deadlines drop them.
pub const MIN_RATE_BPS: u64 = 100_000;

/// Pacing over the measured rate: above it, so that the measure can grow with the path (a
/// train paced at the bottleneck's rate arrives at that rate, no faster). 5/4.
const GAIN: (u64, u64) = (5, 4);

/// The token bucket. Off (lets everything go) until [`Pacer::set_measured`] gives it a rate.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    /// Pacing rate, bit/s, and the burst it allows (worked out when the rate changes, not per
    /// datagram).
    rate: Option<(u64, Duration)>,
    /// When the next datagram may leave.
    next_at: Option<Instant>,
    /// The last [`Pacer::ready`] held a datagram back: `next_at` is a timeout.
    blocked: bool,
}

impl Pacer {
    /// Takes the rate the receiver measured, bit/s (0: unknown, no pacing).
    pub fn set_measured(&mut self, measured_bps: u64) {
        self.rate = (measured_bps > 0).then(|| {
            let bps = (measured_bps.saturating_mul(GAIN.0) / GAIN.1).max(MIN_RATE_BPS);
            (bps, transmit_time(BURST_BYTES, bps).max(BURST_TIME))
        });
    }

    /// The pacing rate, bit/s, if pacing.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate.map(|(bps, _)| bps)
    }

    /// Whether a datagram may leave at `now`. When not, say with [`Pacer::hold`] whether
    /// one is waiting.
    pub fn ready(&mut self, now: Instant) -> bool {
        let ready = self.rate.is_none() || self.next_at.is_none_or(|t| now >= t);
        if ready {
            self.blocked = false;
        }
        ready
    }

    /// Pacing held back a poll: [`Pacer::timeout`] asks to be woken if a datagram is
    /// `waiting`.
    pub fn hold(&mut self, waiting: bool) {
        self.blocked = waiting;
    }

    /// A datagram of `len` bytes left at `now`.
    pub fn sent(&mut self, now: Instant, len: usize) {
        let Some((bps, burst)) = self.rate else {
            return;
        };
        let floor = now.checked_sub(burst).unwrap_or(now);
        let start = self.next_at.map_or(floor, |t| t.max(floor));
        self.next_at = Some(start + transmit_time(len as u64, bps));
    }

    /// When a held-back datagram may leave.
    pub fn timeout(&self) -> Option<Instant> {
        self.next_at.filter(|_| self.blocked)
    }

    /// Time passed to `now`: a wake-up that has come is spent, whether or not the shell could
    /// send then (a full QUIC buffer has the shell's own wake-up), so that it is not asked
    /// for again and again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_at.is_some_and(|t| t <= now) {
            self.blocked = false;
        }
    }
}

/// How long `bytes` take at `bps`.
fn transmit_time(bytes: u64, bps: u64) -> Duration {
    let nanos = u128::from(bytes) * 8_000_000_000 / u128::from(bps.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_until_a_rate_is_measured() {
        let t0 = crate::test_instant();
        let mut p = Pacer::default();
        for _ in 0..100 {
            assert!(p.ready(t0));
            p.sent(t0, 1400);
        }
        assert_eq!(p.timeout(), None);
        p.set_measured(0);
        assert_eq!(p.rate_bps(), None);
    }

    #[test]
    fn a_burst_then_the_rate_a_quarter_above_the_measure() {
        let t0 = crate::test_instant();
        let mut p = Pacer::default();
        p.set_measured(8_000_000);
        assert_eq!(p.rate_bps(), Some(10_000_000));
        // 1000-byte datagrams at 10 Mbit/s: 800 µs each; 12 000 bytes (9.6 ms) at once.
        let mut at_once = 0;
        while p.ready(t0) {
            p.sent(t0, 1000);
            at_once += 1;
        }
        p.hold(true);
        assert_eq!(at_once, 13, "until the bucket's 12 000 bytes are spent");
        let wake = p.timeout().unwrap();
        assert_eq!(wake - t0, Duration::from_micros(800));
        assert!(p.ready(wake));
        p.sent(wake, 1000);
        assert!(!p.ready(wake));
        p.hold(true);
        assert_eq!(p.timeout(), Some(wake + Duration::from_micros(800)));
    }

    #[test]
    fn a_wake_up_is_spent_once_it_has_come() {
        let t0 = crate::test_instant();
        let mut p = Pacer::default();
        p.set_measured(8_000_000);
        while p.ready(t0) {
            p.sent(t0, 1000);
        }
        p.hold(true);
        let wake = p.timeout().unwrap();
        p.handle_timeout(wake);
        assert_eq!(p.timeout(), None);
        // Nothing waiting: no wake-up asked for.
        p.sent(wake, 12_000);
        assert!(!p.ready(wake));
        p.hold(false);
        assert_eq!(p.timeout(), None);
    }

    /// A measure far too low (a broken or hostile receiver) cannot hold frames back for
    /// longer than the lowest rate allows.
    #[test]
    fn the_rate_has_a_floor() {
        let mut p = Pacer::default();
        p.set_measured(1);
        assert_eq!(p.rate_bps(), Some(MIN_RATE_BPS));
        p.set_measured(u64::MAX);
        assert_eq!(p.rate_bps(), Some(u64::MAX / 4));
        assert_eq!(transmit_time(1500, u64::MAX / 4), Duration::ZERO);
    }
}
