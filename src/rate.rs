//! Rate adaptation: how fast the sender's source should produce, so that on a path with less
//! capacity than the stream frames shrink instead of queueing.
//!
//! The controller keeps a target between a floor and the source's own rate. Every
//! [`UPDATE_EVERY`] it looks at its congestion signals: the sender's backlog (the oldest
//! queued frame has waited longer than [`BACKLOG`]: QUIC's congestion controller holds the
//! stream back) together with frames dropped unsent since the last look; the queueing delay the
//! receiver reports (above [`QUEUE_CUT_US`]: the path holds the stream in a queue, which the
//! congestion controller may not see when the bottleneck's buffer is deep);
//! and the loss the receiver reports (above [`LOSS_CUT`], below the outage level, where loss is
//! congestion rather than noise). On
//! congestion the target falls to 85 % of itself, or to 90 % of the congestion controller's
//! pacing rate if that is lower (with a backlog the pacing rate measures the path, not the
//! source); without, it grows by 3 % (about 34 % a second) back towards the source's rate. The
//! estimate of what the path carries is thus the congestion controller's (BBR's bandwidth
//! model, through its pacing rate), corrected by what the receiver sees.

use std::time::{Duration, Instant};

use crate::loss::OUTAGE_LOSS;

/// How often the target is revisited.
pub const UPDATE_EVERY: Duration = Duration::from_millis(100);
/// A queued frame waiting longer than this means the path does not take the stream.
pub const BACKLOG: Duration = Duration::from_millis(100);
/// Loss before recovery above this (between two reports) counts as congestion.
pub const LOSS_CUT: f64 = 0.10;
/// A queueing delay (reported by the receiver) above this counts as congestion: the path holds the stream in a queue rather than carrying it.
pub const QUEUE_CUT_US: u64 = 60_000;
const DECREASE: f64 = 0.85;
const PACING_SHARE: f64 = 0.9;
const INCREASE: f64 = 1.03;

/// The controller. See the module documentation.
#[derive(Debug, Clone)]
pub struct RateController {
    max_bps: u64,
    min_bps: u64,
    target_bps: f64,
    next_update: Option<Instant>,
    drops_seen: u64,
    loss: f64,
    queueing: bool,
    last_queue_us: u64,
    delivered_bps: Option<u64>,
    cuts: u64,
    lowest_bps: f64,
}

/// What the controller needs to know at an update.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateInputs {
    /// How long the oldest queued frame has waited.
    pub head_wait: Duration,
    /// Frames dropped unsent so far (cumulative).
    pub drops: u64,
    /// The congestion controller's pacing rate, bit/s, if known.
    pub pacing_bps: Option<u64>,
}

impl RateController {
    /// A controller for a source of `max_bps`, never asking for less than `min_bps`.
    pub fn new(max_bps: u64, min_bps: u64) -> Self {
        let min_bps = min_bps.min(max_bps).max(1);
        Self {
            max_bps,
            min_bps,
            target_bps: max_bps as f64,
            next_update: None,
            drops_seen: 0,
            loss: 0.0,
            queueing: false,
            last_queue_us: 0,
            delivered_bps: None,
            cuts: 0,
            lowest_bps: max_bps as f64,
        }
    }

    /// The rate the source should produce now, bit/s.
    pub fn target_bps(&self) -> u64 {
        self.target_bps.round() as u64
    }

    /// The lowest target so far, bit/s.
    pub fn lowest_bps(&self) -> u64 {
        self.lowest_bps.round() as u64
    }

    /// Times the target was cut.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The loss before recovery the receiver reported for its last interval.
    pub fn on_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    /// The queueing delay the receiver reported: above [`QUEUE_CUT_US`], the path holds the
    /// stream in a queue, which the next update takes as congestion.
    pub fn on_queue_delay(&mut self, us: u64) {
        self.queueing = us > QUEUE_CUT_US;
        self.last_queue_us = us;
    }

    /// The rate the path delivered to the receiver between its last two reports, bit/s.
    pub fn on_delivered(&mut self, bps: u64) {
        self.delivered_bps = Some(bps);
    }

    /// Revisits the target if it is time; returns whether it changed.
    pub fn update(&mut self, now: Instant, inputs: RateInputs) -> bool {
        if self.next_update.is_some_and(|t| now < t) {
            return false;
        }
        self.next_update = Some(now + UPDATE_EVERY);
        let dropped = inputs.drops > self.drops_seen;
        self.drops_seen = inputs.drops;
        let backlog = inputs.head_wait > BACKLOG;
        let lossy = self.loss > LOSS_CUT && self.loss < OUTAGE_LOSS;
        let queueing = std::mem::take(&mut self.queueing);
        let old = self.target_bps;
        if backlog || dropped || lossy || queueing {
            // A standing queue alone cuts to below what the path delivers (which does not
            // compound while the queue drains); the other signals cut by a fixed share.
            let mut next = if backlog || dropped || lossy {
                self.target_bps * DECREASE
            } else {
                self.target_bps
            };
            if backlog && let Some(p) = inputs.pacing_bps.filter(|&p| p > 0) {
                next = next.min(p as f64 * PACING_SHARE);
            }
            if queueing && let Some(d) = self.delivered_bps.filter(|&d| d > 0) {
                // A standing queue: below what the path delivers, so that it drains — faster
                // the longer it is.
                let share = if self.last_queue_us > 4 * QUEUE_CUT_US {
                    0.7
                } else {
                    DECREASE
                };
                next = next.min(d as f64 * share);
            }
            let next = next.max(self.min_bps as f64);
            if next < self.target_bps {
                self.cuts += 1;
            }
            self.target_bps = next;
            self.lowest_bps = self.lowest_bps.min(self.target_bps);
            self.loss = 0.0;
        } else {
            self.target_bps = (self.target_bps * INCREASE).min(self.max_bps as f64);
        }
        (self.target_bps - old).abs() > 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_under_backlog_and_recovers_without() {
        let t0 = crate::test_instant();
        let mut r = RateController::new(2_000_000, 100_000);
        let congested = RateInputs {
            head_wait: Duration::from_millis(300),
            drops: 0,
            pacing_bps: Some(1_000_000),
        };
        r.update(t0, congested);
        assert_eq!(r.target_bps(), 900_000, "to 90 % of the pacing rate");
        // Not before the next update time.
        assert!(!r.update(t0 + Duration::from_millis(50), congested));
        let clear = RateInputs::default();
        let mut t = t0;
        for _ in 0..100 {
            t += UPDATE_EVERY;
            r.update(t, clear);
        }
        assert_eq!(
            r.target_bps(),
            2_000_000,
            "back to the source's rate, not beyond"
        );
    }

    #[test]
    fn drops_and_reported_loss_cut_but_outages_do_not() {
        let t0 = crate::test_instant();
        let mut r = RateController::new(1_000_000, 100_000);
        r.update(
            t0,
            RateInputs {
                drops: 3,
                ..Default::default()
            },
        );
        assert_eq!(r.target_bps(), 850_000);
        r.on_loss(0.5);
        r.update(
            t0 + UPDATE_EVERY,
            RateInputs {
                drops: 3,
                ..Default::default()
            },
        );
        assert!(r.target_bps() > 850_000, "an outage is not congestion");
        r.on_loss(0.15);
        r.update(
            t0 + 2 * UPDATE_EVERY,
            RateInputs {
                drops: 3,
                ..Default::default()
            },
        );
        assert!(r.target_bps() < 850_000);
        // Never below the floor.
        for i in 3..200 {
            r.update(
                t0 + i * UPDATE_EVERY,
                RateInputs {
                    drops: i as u64 + 10,
                    ..Default::default()
                },
            );
        }
        assert_eq!(r.target_bps(), 100_000);
        assert!(r.cuts() > 5);
    }
}
