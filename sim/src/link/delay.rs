//! The delay node: propagation delay, jitter (netem's distributions, correlated without
//! narrowing them) and netem's reordering.
//!
//! # Delay and jitter
//!
//! A packet pushed at `now` leaves at `now + max(0, delay + jitter·x)`, `x` drawn from
//! [`DelayConfig::dist`] with lag-1 correlation [`DelayConfig::correlation`] (see
//! [`super::dist`]: the marginal stays the configured distribution). A negative draw clamps to
//! no delay. With no jitter nothing is drawn and the exit is exactly `now + delay`.
//!
//! Without [`DelayConfig::keep_order`] packets may overtake each other, as in netem without a
//! rate (its `tfifo` sorts by time to send); the node hands them out in exit order, equal
//! exit instants in arrival order. With `keep_order` a packet never leaves before the one
//! delayed before it (`exit = max(draw, previous exit)`): jitter without reordering, as netem
//! does when a rate is set (`netem_enqueue` then starts from the last packet's time to send).
//!
//! # Reordering (netem's `reorder P [C] gap G`)
//!
//! From `netem_enqueue` in Linux `net/sched/sch_netem.c` (current form; early 3.x kernels
//! tested `counter < gap`, which delayed one packet more) and iproute2 `tc/q_netem.c`:
//!
//! ```text
//! if gap == 0 || counter < gap - 1 || reorder < crandom(reorder_cor):
//!     time_to_send = now + tabledist(latency, jitter, delay_cor, dist); counter += 1
//! else:
//!     time_to_send = now; counter = 0; put at the head of the queue   // sent immediately
//! ```
//!
//! and `tc` sets `gap = 1` whenever a reorder probability is given without a gap. So:
//!
//! - [`reorder_gap`](DelayConfig::reorder_gap) 0 or 1: every packet is, with probability
//!   [`reorder`](DelayConfig::reorder), sent immediately (leaves at `now`, overtaking the
//!   packets in flight); the others are delayed normally.
//! - gap `G > 1`: after a packet sent immediately (and at the start), the next `G − 1` packets
//!   are always delayed; from the `G`-th on, each packet is sent immediately with probability
//!   `reorder` (and the count restarts) or delayed (and the next one is again a candidate).
//!   `reorder 100% gap 5` sends packets 5, 10, 15, … immediately; with probability `p` the
//!   long-run share sent immediately is `1 / (G − 1 + 1/p)`.
//! - `reorder` 0 means no reordering, whatever the gap (the kernel would treat a gap without a
//!   probability as 100 %, but `tc` refuses that combination).
//!
//! As in netem, a packet sent immediately draws no delay (the jitter process does not move),
//! and the reorder draw is made only for candidates. Unlike netem, the reorder decisions are
//! correlated through [`CorrelatedDraw`] (`u < reorder` with `u` exactly uniform), so the
//! share of reordered candidates stays `reorder` at any
//! [`reorder_correlation`](DelayConfig::reorder_correlation); netem's averaging would change
//! it. [`DelayNode::set_config`] keeps the gap counter (netem resets it on `tc qdisc change`),
//! so that a scheduled change of delay does not disturb the reordering pattern.
//!
//! The node holds every packet in flight: at most the arrival rate times the longest delay,
//! `delay + X_MAX·jitter` ([`super::dist::X_MAX`]); the bottleneck before it bounds that rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::dist::{CorrelatedDraw, JitterDist};
use super::{Ctx, Node, Packet, SimRng, after, secs};

/// Parameters of the delay node, in netem's terms
/// (`delay DELAY JITTER CORRELATION distribution DIST reorder P CORR gap G`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayConfig {
    /// Constant one-way delay `D`.
    pub delay: Duration,
    /// Jitter scale `J`: the delay is `D + J·x`.
    pub jitter: Duration,
    /// Distribution of `x`.
    pub dist: JitterDist,
    /// Lag-1 correlation of successive delay draws, in `[0, 1)` (clamped).
    pub correlation: f64,
    /// Never let jitter reorder packets: a packet leaves no earlier than the one before.
    pub keep_order: bool,
    /// Probability that a candidate packet is sent immediately, in `[0, 1]` (clamped).
    pub reorder: f64,
    /// Correlation of successive reorder decisions, in `[0, 1)` (clamped).
    pub reorder_correlation: f64,
    /// netem's gap: after a packet is sent immediately, this many packets minus one are
    /// delayed before the next candidate (0 counts as 1).
    pub reorder_gap: u32,
}

impl Default for DelayConfig {
    /// No delay, no jitter (normal distribution, uncorrelated, should jitter be set), packets
    /// allowed to overtake, no reordering: a wire with no length.
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            dist: JitterDist::Normal,
            correlation: 0.0,
            keep_order: false,
            reorder: 0.0,
            reorder_correlation: 0.0,
            reorder_gap: 0,
        }
    }
}

impl DelayConfig {
    /// Checks that the probabilities and correlations are within `[0, 1]` (the node clamps
    /// them anyway).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("correlation", self.correlation),
            ("reorder", self.reorder),
            ("reorder correlation", self.reorder_correlation),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("{name} {v}: must be between 0% and 100%"));
            }
        }
        Ok(())
    }
}

/// Delays packets (see the module doc).
#[derive(Debug)]
pub struct DelayNode {
    cfg: DelayConfig,
    jitter: CorrelatedDraw,
    reorder: CorrelatedDraw,
    /// netem's `counter`: packets delayed since the last one sent immediately.
    counter: u32,
    /// The latest exit of a packet so far.
    last_exit: Option<Instant>,
    /// Arrival counter: orders equal exit instants.
    seq: u64,
    in_flight: BTreeMap<(Instant, u64), Packet>,
}

impl DelayNode {
    /// A node with parameters `cfg`.
    pub fn new(cfg: DelayConfig) -> Self {
        Self {
            cfg,
            jitter: CorrelatedDraw::new(cfg.correlation),
            reorder: CorrelatedDraw::new(cfg.reorder_correlation),
            counter: 0,
            last_exit: None,
            seq: 0,
            in_flight: BTreeMap::new(),
        }
    }

    /// Changes the parameters for packets pushed from now on; packets in flight keep their
    /// exit times, and the correlation processes and the gap counter go on.
    pub fn set_config(&mut self, cfg: DelayConfig) {
        self.jitter.set_rho(cfg.correlation);
        self.reorder.set_rho(cfg.reorder_correlation);
        self.cfg = cfg;
    }

    /// The parameters in use.
    pub fn config(&self) -> &DelayConfig {
        &self.cfg
    }

    /// Packets in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether no packet is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether the next packet is sent immediately (netem's reorder rule; module doc).
    fn send_immediately(&mut self, rng: &mut SimRng) -> bool {
        let p = if self.cfg.reorder.is_nan() {
            0.0
        } else {
            self.cfg.reorder.clamp(0.0, 1.0)
        };
        let gap = self.cfg.reorder_gap.max(1);
        if p <= 0.0 || self.counter < gap - 1 {
            return false;
        }
        self.reorder.next_uniform(rng) < p
    }

    /// `now + max(0, delay + jitter·x)`.
    fn delayed_exit(&mut self, now: Instant, rng: &mut SimRng) -> Instant {
        let base = self.cfg.delay;
        let total = if self.cfg.jitter.is_zero() {
            base
        } else {
            let x = self.jitter.next(rng, self.cfg.dist);
            // |x| ≤ X_MAX, so this is far from f64's limits; `as` saturates anyway.
            let j_ns = (self.cfg.jitter.as_nanos() as f64 * x).round();
            if j_ns >= 0.0 {
                base.saturating_add(Duration::from_nanos(j_ns as u64))
            } else {
                base.saturating_sub(Duration::from_nanos((-j_ns) as u64))
            }
        };
        // Past Instant's range (centuries), fall back to `after`'s cap.
        now.checked_add(total)
            .unwrap_or_else(|| after(now, secs(total)))
    }
}

impl Node for DelayNode {
    fn push(&mut self, now: Instant, pkt: Packet, ctx: &mut Ctx<'_>) {
        let exit = if self.send_immediately(ctx.rng) {
            self.counter = 0;
            now
        } else {
            self.counter = self.counter.saturating_add(1);
            let exit = self.delayed_exit(now, ctx.rng);
            match self.last_exit {
                Some(last) if self.cfg.keep_order => exit.max(last),
                _ => exit,
            }
        };
        self.last_exit = Some(self.last_exit.map_or(exit, |last| last.max(exit)));
        self.in_flight.insert((exit, self.seq), pkt);
        self.seq += 1;
    }

    fn poll(&mut self, now: Instant, _: &mut Ctx<'_>) -> Option<(Instant, Packet)> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((at, _), pkt) = entry.remove_entry();
        Some((at, pkt))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.first_key_value().map(|((at, _), _)| *at)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::tests::t0;
    use crate::link::{Counters, SimRng};
    use proptest::prelude::*;
    use rand::SeedableRng;

    const N: usize = 200_000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn pkt(id: u64, at: Instant) -> Packet {
        Packet {
            data: Vec::new(),
            id,
            entered: at,
        }
    }

    /// What happened to one packet.
    #[derive(Debug, Clone, Copy)]
    struct Trip {
        id: u64,
        pushed: Instant,
        exit: Instant,
    }

    impl Trip {
        fn added_ms(&self) -> f64 {
            (self.exit - self.pushed).as_secs_f64() * 1e3
        }
    }

    /// Pushes `n` packets `every` apart through a node with `cfg`, polling after each push;
    /// returns the packets in the order they came out.
    fn run(cfg: DelayConfig, n: usize, every: Duration, seed: u64) -> Vec<Trip> {
        let mut node = DelayNode::new(cfg);
        let mut rng = SimRng::seed_from_u64(seed);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        let t = t0();
        let mut out = Vec::with_capacity(n);
        let mut drain = |node: &mut DelayNode, now: Instant, ctx: &mut Ctx<'_>| {
            while let Some((exit, p)) = node.poll(now, ctx) {
                out.push(Trip {
                    id: p.id,
                    pushed: p.entered,
                    exit,
                });
            }
        };
        for i in 0..n {
            let now = t + every * i as u32;
            node.push(now, pkt(i as u64, now), &mut ctx);
            drain(&mut node, now, &mut ctx);
        }
        drain(
            &mut node,
            t + every * n as u32 + Duration::from_secs(3600),
            &mut ctx,
        );
        assert!(node.is_empty() && node.poll_timeout().is_none());
        out
    }

    fn by_id(mut trips: Vec<Trip>) -> Vec<Trip> {
        trips.sort_by_key(|t| t.id);
        trips
    }

    fn mean_sd(x: impl Iterator<Item = f64>) -> (f64, f64) {
        let v: Vec<f64> = x.collect();
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, var.sqrt())
    }

    fn immediate_flags(trips: Vec<Trip>) -> Vec<bool> {
        by_id(trips).iter().map(|t| t.exit == t.pushed).collect()
    }

    #[test]
    fn default_is_a_wire_with_no_length() {
        let trips = run(DelayConfig::default(), 100, ms(1), 1);
        assert!(
            trips
                .iter()
                .enumerate()
                .all(|(i, t)| t.id == i as u64 && t.exit == t.pushed)
        );
    }

    #[test]
    fn fixed_delay_is_exact_and_polls_follow_the_clock() {
        let cfg = DelayConfig {
            delay: ms(40),
            ..DelayConfig::default()
        };
        let mut node = DelayNode::new(cfg);
        let mut rng = SimRng::seed_from_u64(1);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        let t = t0();
        node.push(t, pkt(0, t), &mut ctx);
        node.push(t + ms(5), pkt(1, t + ms(5)), &mut ctx);
        assert_eq!(node.poll_timeout(), Some(t + ms(40)));
        assert!(node.poll(t + ms(39), &mut ctx).is_none());
        let (at, p) = node.poll(t + ms(100), &mut ctx).unwrap();
        assert_eq!((at, p.id), (t + ms(40), 0));
        assert_eq!(node.poll_timeout(), Some(t + ms(45)));
        let (at, p) = node.poll(t + ms(100), &mut ctx).unwrap();
        assert_eq!((at, p.id), (t + ms(45), 1));
        assert!(node.poll(t + ms(100), &mut ctx).is_none());
        assert_eq!(node.poll_timeout(), None);
    }

    /// Mean and standard deviation of the added delay, 200 000 packets, against D + J·mean and
    /// J·sd of the distribution. Tolerance: 5 standard errors (sd/√n for the mean; sd·√(3/2n)
    /// for the sd, allowing for pareto's tail).
    #[test]
    fn added_delay_has_the_configured_mean_and_sd() {
        for (seed, dist) in JitterDist::ALL.into_iter().enumerate() {
            let cfg = DelayConfig {
                delay: ms(50),
                jitter: ms(10),
                dist,
                ..DelayConfig::default()
            };
            let trips = run(cfg, N, Duration::from_micros(100), 10 + seed as u64);
            let (m, sd) = mean_sd(trips.iter().map(Trip::added_ms));
            let (want_m, want_sd) = (50.0 + 10.0 * dist.mean(), 10.0 * dist.std_dev());
            let tol_m = 5.0 * want_sd / (N as f64).sqrt();
            let tol_sd = 5.0 * want_sd * (3.0 / (2.0 * N as f64)).sqrt();
            println!(
                "{dist}: added {m:.4} ms (want {want_m:.4}), sd {sd:.4} ms (want {want_sd:.4})"
            );
            assert!(
                (m - want_m).abs() <= tol_m,
                "{dist}: mean {m} ms vs {want_m} (tol ±{tol_m:.3} ms)"
            );
            assert!(
                (sd - want_sd).abs() <= tol_sd,
                "{dist}: sd {sd} ms vs {want_sd} (tol ±{tol_sd:.3} ms)"
            );
        }
    }

    /// Delay 5 ms, uniform jitter 10 ms: a quarter of the draws are negative and leave at once;
    /// the mean is E[max(0, 5 + 10x)] = 5.625 ms. Tolerances 5 standard errors.
    #[test]
    fn negative_draws_clamp_to_no_delay() {
        let cfg = DelayConfig {
            delay: ms(5),
            jitter: ms(10),
            dist: JitterDist::Uniform,
            ..DelayConfig::default()
        };
        let trips = run(cfg, N, Duration::from_micros(100), 3);
        let zero = trips.iter().filter(|t| t.exit == t.pushed).count() as f64 / N as f64;
        let (m, _) = mean_sd(trips.iter().map(Trip::added_ms));
        println!("delay 5 ms ± 10 ms uniform: {zero:.4} with no delay, mean {m:.4} ms");
        let tol_zero = 5.0 * (0.25f64 * 0.75 / N as f64).sqrt();
        // sd of max(0, 5 + 10x) is √(E[·²] − 5.625²) = √(46.875 − 31.64) ≈ 3.90 ms.
        let tol_m = 5.0 * 3.9 / (N as f64).sqrt();
        assert!(
            (zero - 0.25).abs() <= tol_zero,
            "share with no delay {zero} (tol ±{tol_zero:.4})"
        );
        assert!(
            (m - 5.625).abs() <= tol_m,
            "mean {m} ms vs 5.625 (tol ±{tol_m:.3} ms)"
        );
        assert!(trips.iter().all(|t| t.exit <= t.pushed + ms(15)));
    }

    #[test]
    fn correlated_jitter_keeps_its_spread() {
        // netem's averaging would shrink the sd to ~23 % at ρ = 0.9; here it stays J·sd.
        let cfg = DelayConfig {
            delay: ms(50),
            jitter: ms(10),
            correlation: 0.9,
            ..DelayConfig::default()
        };
        let trips = by_id(run(cfg, N, Duration::from_micros(100), 4));
        let d: Vec<f64> = trips.iter().map(Trip::added_ms).collect();
        let (m, sd) = mean_sd(d.iter().copied());
        // 5 standard errors, with the AR(1) inflation (1 + ρ)/(1 − ρ) = 19.
        let tol_m = 5.0 * 10.0 * (19.0 / N as f64).sqrt();
        let tol_sd = 5.0 * 10.0 * (19.0 / (2.0 * N as f64)).sqrt();
        assert!((m - 50.0).abs() <= tol_m, "mean {m} ms (tol ±{tol_m:.3})");
        assert!(
            (sd - 10.0 * JitterDist::Normal.std_dev()).abs() <= tol_sd,
            "sd {sd} ms (tol ±{tol_sd:.3})"
        );
        let cov = d.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / (d.len() - 1) as f64;
        let r = cov / (sd * sd);
        println!("correlation 90%: added {m:.4} ms, sd {sd:.4} ms, lag-1 {r:.5}");
        assert!(
            (r - 0.9).abs() <= 0.005,
            "lag-1 correlation of delays {r} (tol ±0.005)"
        );
    }

    #[test]
    fn keep_order_never_reorders_but_still_jitters() {
        let cfg = DelayConfig {
            delay: ms(20),
            jitter: ms(10),
            keep_order: true,
            ..DelayConfig::default()
        };
        let trips = run(cfg, 50_000, ms(1), 5);
        assert!(
            trips.windows(2).all(|w| w[0].id < w[1].id),
            "keep_order let a packet overtake"
        );
        assert!(trips.windows(2).all(|w| w[0].exit <= w[1].exit));
        let (m, sd) = mean_sd(trips.iter().map(Trip::added_ms));
        println!("keep_order: added {m:.3} ms, sd {sd:.3} ms");
        let distinct = trips
            .windows(2)
            .filter(|w| w[0].added_ms() != w[1].added_ms())
            .count();
        assert!(
            sd > 3.0 && distinct > 40_000,
            "no jitter left: sd {sd} ms, {distinct} changes"
        );
        // The same parameters without keep_order do reorder.
        let free = run(
            DelayConfig {
                keep_order: false,
                ..cfg
            },
            50_000,
            ms(1),
            5,
        );
        let overtaken = free.windows(2).filter(|w| w[0].id > w[1].id).count();
        assert!(
            overtaken > 5_000,
            "only {overtaken} reorderings without keep_order"
        );
        assert!(
            free.windows(2).all(|w| w[0].exit <= w[1].exit),
            "not handed out in exit order"
        );
    }

    /// reorder 25 %, gap 0: a quarter of the packets leave at once (tolerance 5 standard
    /// errors); with reorder correlation 0.5 the share stays a quarter and the decisions
    /// cluster.
    #[test]
    fn reorder_sends_a_share_immediately() {
        let cfg = DelayConfig {
            delay: ms(10),
            reorder: 0.25,
            ..DelayConfig::default()
        };
        let flags = immediate_flags(run(cfg, N, Duration::from_micros(100), 6));
        let share = flags.iter().filter(|&&f| f).count() as f64 / N as f64;
        let tol = 5.0 * (0.25f64 * 0.75 / N as f64).sqrt();
        println!("reorder 25%: {share:.4} sent immediately");
        assert!(
            (share - 0.25).abs() <= tol,
            "share {share} vs 0.25 (tol ±{tol:.4})"
        );
        let trips = run(cfg, 10_000, Duration::from_micros(100), 6);
        let overtaken = trips.windows(2).filter(|w| w[0].id > w[1].id).count();
        assert!(
            overtaken > 2_000,
            "immediate packets overtake those in flight: {overtaken}"
        );

        let corr = DelayConfig {
            reorder_correlation: 0.5,
            ..cfg
        };
        let flags = immediate_flags(run(corr, N, Duration::from_micros(100), 7));
        let share = flags.iter().filter(|&&f| f).count() as f64 / N as f64;
        let both = flags.windows(2).filter(|w| w[0] && w[1]).count() as f64;
        let after_one = both / flags[..N - 1].iter().filter(|&&f| f).count() as f64;
        // Decisions are clustered, so the standard error is larger: allow 3× the above.
        println!("reorder 25% corr 50%: {share:.4} immediately, P(next | one) = {after_one:.4}");
        assert!(
            (share - 0.25).abs() <= 3.0 * tol,
            "share {share} vs 0.25 (tol ±{:.4})",
            3.0 * tol
        );
        // Gaussian copula: P(Z₂ < a | Z₁ < a) with a = Φ⁻¹(¼), ρ = ½, is 0.48110 (numerical
        // integration); tolerance ±0.015, about 5 standard errors of the clustered estimate.
        assert!(
            (after_one - 0.4811).abs() <= 0.015,
            "P(immediate | previous immediate) = {after_one} vs 0.4811 (tol ±0.015)"
        );
    }

    #[test]
    fn gap_follows_netem() {
        // reorder 100% gap 5: exactly packets 5, 10, 15, … (1-based) leave at once.
        let cfg = DelayConfig {
            delay: ms(10),
            reorder: 1.0,
            reorder_gap: 5,
            ..DelayConfig::default()
        };
        let flags = immediate_flags(run(cfg, 1000, ms(1), 8));
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(*f, (i + 1) % 5 == 0, "packet {}", i + 1);
        }
        // reorder 50% gap 3: after each immediate packet (and at the start) two are delayed,
        // then each is a candidate: the share is 1 / (2 + 1/0.5) = 1/4 (tolerance 0.01, about
        // 5 standard errors of a renewal count).
        let cfg = DelayConfig {
            reorder: 0.5,
            reorder_gap: 3,
            ..cfg
        };
        let flags = immediate_flags(run(cfg, N, Duration::from_micros(100), 9));
        assert!(!flags[0] && !flags[1]);
        let idx: Vec<usize> = flags
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i)
            .collect();
        assert!(
            idx.windows(2).all(|w| w[1] - w[0] >= 3),
            "a reorder inside the gap"
        );
        let share = idx.len() as f64 / N as f64;
        println!("reorder 50% gap 3: {share:.4} sent immediately");
        assert!(
            (share - 0.25).abs() <= 0.01,
            "share {share} vs 0.25 (tol ±0.01)"
        );
        // Gap 0 and gap 1 are the same (tc turns 0 into 1).
        let a = DelayConfig {
            reorder: 0.3,
            reorder_gap: 0,
            ..cfg
        };
        let b = DelayConfig {
            reorder_gap: 1,
            ..a
        };
        assert_eq!(
            immediate_flags(run(a, 5000, ms(1), 10)),
            immediate_flags(run(b, 5000, ms(1), 10))
        );
        // No probability, no reordering, whatever the gap.
        let c = DelayConfig {
            reorder: 0.0,
            reorder_gap: 4,
            ..a
        };
        assert!(immediate_flags(run(c, 5000, ms(1), 11)).iter().all(|f| !f));
    }

    #[test]
    fn set_config_changes_later_packets_only() {
        let mut node = DelayNode::new(DelayConfig {
            delay: ms(10),
            ..DelayConfig::default()
        });
        let mut rng = SimRng::seed_from_u64(12);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        let t = t0();
        for i in 0..3 {
            node.push(t + ms(i), pkt(i, t + ms(i)), &mut ctx);
        }
        node.set_config(DelayConfig {
            delay: ms(50),
            ..*node.config()
        });
        for i in 3..6 {
            node.push(t + ms(i), pkt(i, t + ms(i)), &mut ctx);
        }
        let mut out = Vec::new();
        while let Some((at, p)) = node.poll(t + ms(1000), &mut ctx) {
            out.push((p.id, at - t));
        }
        let want: Vec<(u64, Duration)> = (0..6)
            .map(|i| (i, ms(i) + if i < 3 { ms(10) } else { ms(50) }))
            .collect();
        assert_eq!(out, want);

        // The correlation state carries over: changing only the delay leaves the jitter
        // sequence as it would have been.
        let cfg = DelayConfig {
            delay: ms(50),
            jitter: ms(10),
            correlation: 0.8,
            ..DelayConfig::default()
        };
        let whole = by_id(run(cfg, 200, ms(1), 13));
        let mut node = DelayNode::new(cfg);
        let mut rng = SimRng::seed_from_u64(13);
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        for i in 0..200u64 {
            if i == 100 {
                node.set_config(DelayConfig {
                    delay: ms(80),
                    ..cfg
                });
            }
            node.push(t + ms(i), pkt(i, t + ms(i)), &mut ctx);
        }
        let mut changed = Vec::new();
        while let Some((at, p)) = node.poll(t + ms(10_000), &mut ctx) {
            changed.push((p.id, at - (t + ms(p.id))));
        }
        changed.sort();
        for (w, (id, d)) in whole.iter().zip(changed) {
            let extra = if id >= 100 { ms(30) } else { Duration::ZERO };
            assert_eq!(w.exit - w.pushed + extra, d, "packet {id}");
        }
    }

    #[test]
    fn config_validation() {
        assert!(DelayConfig::default().validate().is_ok());
        assert!(
            DelayConfig {
                reorder: 1.5,
                ..DelayConfig::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            DelayConfig {
                correlation: f64::NAN,
                ..DelayConfig::default()
            }
            .validate()
            .is_err()
        );
        // Out-of-range values are clamped by the node, never a panic.
        let cfg = DelayConfig {
            delay: ms(5),
            jitter: ms(5),
            correlation: 3.0,
            reorder: f64::NAN,
            reorder_correlation: -2.0,
            ..DelayConfig::default()
        };
        assert_eq!(run(cfg, 1000, ms(1), 14).len(), 1000);
        let cfg = DelayConfig {
            reorder: 7.0,
            ..cfg
        };
        assert!(
            immediate_flags(run(cfg, 1000, ms(1), 14))
                .iter()
                .all(|f| *f)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Poll(u32),
        Reconfigure(DelayConfig),
    }

    fn config() -> impl Strategy<Value = DelayConfig> {
        (
            0u64..50,
            0u64..30,
            prop::sample::select(JitterDist::ALL.to_vec()),
            prop::sample::select(vec![0.0, 0.5, 0.99, 1.0]),
            any::<bool>(),
            prop::sample::select(vec![0.0, 0.1, 0.5, 1.0]),
            prop::sample::select(vec![0.0, 0.7]),
            0u32..6,
        )
            .prop_map(
                |(d, j, dist, corr, keep_order, reorder, rcorr, gap)| DelayConfig {
                    delay: ms(d),
                    jitter: ms(j),
                    dist,
                    correlation: corr,
                    keep_order,
                    reorder,
                    reorder_correlation: rcorr,
                    reorder_gap: gap,
                },
            )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..20_000).prop_map(Op::Push),
            3 => (0u32..40_000).prop_map(Op::Poll),
            1 => config().prop_map(Op::Reconfigure),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the parameters and their changes: no packet leaves before it was pushed or
        /// after the poll that returned it, exits never go back in time, poll_timeout is the
        /// next exit, and every packet comes out exactly once.
        #[test]
        fn every_packet_once_never_early(
            cfg in config(),
            ops in prop::collection::vec(op(), 1..300),
            seed in any::<u64>(),
        ) {
            let mut node = DelayNode::new(cfg);
            let mut rng = SimRng::seed_from_u64(seed);
            let mut counters = Counters::default();
            let mut ctx = Ctx { rng: &mut rng, counters: &mut counters };
            let t = t0();
            let mut now = t;
            let mut pushed = 0u64;
            let mut seen = Vec::new();
            let mut last_exit = t;
            let mut check = |node: &mut DelayNode, now: Instant, ctx: &mut Ctx<'_>| {
                let due = node.poll_timeout();
                let mut first = true;
                while let Some((exit, p)) = node.poll(now, ctx) {
                    if first {
                        assert_eq!(due, Some(exit), "poll_timeout is the next exit");
                        first = false;
                    }
                    assert!(exit >= p.entered, "packet {} left before it was pushed", p.id);
                    assert!(exit <= now, "packet {} handed out before its exit", p.id);
                    assert!(exit >= last_exit, "exits went back in time");
                    last_exit = exit;
                    seen.push(p.id);
                }
                if let Some(next) = node.poll_timeout() {
                    assert!(next > now, "a due packet was left behind");
                }
            };
            for op in ops {
                match op {
                    Op::Push(dt_us) => {
                        now += Duration::from_micros(u64::from(dt_us));
                        node.push(now, pkt(pushed, now), &mut ctx);
                        pushed += 1;
                    }
                    Op::Poll(dt_us) => {
                        now += Duration::from_micros(u64::from(dt_us));
                        check(&mut node, now, &mut ctx);
                    }
                    Op::Reconfigure(c) => node.set_config(c),
                }
            }
            check(&mut node, now + Duration::from_secs(3600), &mut ctx);
            prop_assert!(node.is_empty());
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..pushed).collect::<Vec<_>>());
        }
    }
}
