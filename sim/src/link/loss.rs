//! Loss models: Bernoulli, Gilbert–Elliott and netem's 4-state Markov model.
//!
//! - **Bernoulli** `p`: each packet is lost independently with probability `p`.
//! - **Gilbert–Elliott** (netem's `gemodel p r 1-h 1-k`): a good and a bad state; from good the
//!   chain moves to bad with probability `p`, from bad back to good with `r`; a packet is lost
//!   with probability `1-k` in the good state and `1-h` in the bad one. As in netem, the state
//!   moves first and the packet's fate follows the new state. The usual way to give it is a
//!   mean loss rate and a mean burst length ([`LossModel::gilbert`]): `1-h = 1`, `1-k = 0`,
//!   `r = 1 / burst`, `p = loss · r / (1 − loss)`, so that the stationary loss rate is
//!   `p / (p + r)` and runs of losses last `1 / r` packets on average.
//! - **4-state** (netem's `state p13 p31 p32 p23 p14`, Salsano et al., "Definition and usage of
//!   a 4-state Markov loss model"): states 1 = transmitted in a gap period, 2 = transmitted in
//!   a burst period, 3 = lost in a burst period, 4 = isolated loss in a gap period. From 1:
//!   to 3 with `p13`, to 4 with `p14`; from 2: to 3 with `p23`; from 3: to 1 with `p31`, to 2
//!   with `p32`; from 4: back to 1. A packet is lost when the chain enters (or stays in) state
//!   3 or 4.

use std::time::Instant;

use rand::RngExt;

use super::{Ctx, Drop, Node, Packet, Passthrough};

/// A loss process and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossModel {
    /// Independent losses.
    Bernoulli {
        /// Loss probability.
        p: f64,
    },
    /// Two-state Gilbert–Elliott chain.
    GilbertElliott {
        /// Good → bad transition probability.
        p: f64,
        /// Bad → good transition probability.
        r: f64,
        /// Loss probability in the bad state (`1-h`).
        loss_bad: f64,
        /// Loss probability in the good state (`1-k`).
        loss_good: f64,
    },
    /// netem's 4-state chain.
    FourState {
        /// 1 → 3 (gap to burst loss).
        p13: f64,
        /// 3 → 1 (burst loss to gap).
        p31: f64,
        /// 3 → 2 (burst loss to burst transmission).
        p32: f64,
        /// 2 → 3 (burst transmission to burst loss).
        p23: f64,
        /// 1 → 4 (gap to isolated loss).
        p14: f64,
    },
}

impl Default for LossModel {
    fn default() -> Self {
        Self::Bernoulli { p: 0.0 }
    }
}

fn prob(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{name} {}: a probability must be between 0% and 100%",
            fmt_pct(v)
        ))
    }
}

fn fmt_pct(v: f64) -> String {
    format!("{}%", (v * 1e6).round() / 1e4)
}

impl LossModel {
    /// Bernoulli loss with probability `p`.
    pub fn bernoulli(p: f64) -> Result<Self, String> {
        Ok(Self::Bernoulli {
            p: prob("loss", p)?,
        })
    }

    /// Gilbert–Elliott from a mean loss rate and a mean burst length (in packets, ≥ 1).
    pub fn gilbert(loss: f64, burst: f64) -> Result<Self, String> {
        let loss = prob("loss", loss)?;
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(format!(
                "burst {burst}: the mean burst length is at least 1 packet"
            ));
        }
        if loss >= 1.0 {
            return Err("loss 100% with a burst model: use the bernoulli model".into());
        }
        let r = 1.0 / burst;
        let p = loss * r / (1.0 - loss);
        if p > 1.0 {
            return Err(format!(
                "loss {} with mean burst {burst} needs a good→bad probability above 1: lengthen the bursts or lower the loss",
                fmt_pct(loss)
            ));
        }
        Ok(Self::GilbertElliott {
            p,
            r,
            loss_bad: 1.0,
            loss_good: 0.0,
        })
    }

    /// Gilbert–Elliott with netem's raw parameters `p r 1-h 1-k`.
    pub fn gilbert_raw(p: f64, r: f64, loss_bad: f64, loss_good: f64) -> Result<Self, String> {
        Ok(Self::GilbertElliott {
            p: prob("p", p)?,
            r: prob("r", r)?,
            loss_bad: prob("1-h", loss_bad)?,
            loss_good: prob("1-k", loss_good)?,
        })
    }

    /// netem's 4-state model.
    pub fn four_state(p13: f64, p31: f64, p32: f64, p23: f64, p14: f64) -> Result<Self, String> {
        let m = Self::FourState {
            p13: prob("p13", p13)?,
            p31: prob("p31", p31)?,
            p32: prob("p32", p32)?,
            p23: prob("p23", p23)?,
            p14: prob("p14", p14)?,
        };
        if p13 + p14 > 1.0 {
            return Err("p13 + p14 exceed 100%: they leave the same state".into());
        }
        if p31 + p32 > 1.0 {
            return Err("p31 + p32 exceed 100%: they leave the same state".into());
        }
        Ok(m)
    }

    /// The parameters, in netem's order: `p` (Bernoulli); `p, r, 1-h, 1-k` (Gilbert–Elliott);
    /// `p13, p31, p32, p23, p14` (4-state).
    pub fn params(&self) -> Vec<f64> {
        match *self {
            Self::Bernoulli { p } => vec![p],
            Self::GilbertElliott {
                p,
                r,
                loss_bad,
                loss_good,
            } => vec![p, r, loss_bad, loss_good],
            Self::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            } => vec![p13, p31, p32, p23, p14],
        }
    }

    /// The long-run fraction of packets lost.
    pub fn stationary_loss(&self) -> f64 {
        match *self {
            Self::Bernoulli { p } => p,
            Self::GilbertElliott {
                p,
                r,
                loss_bad,
                loss_good,
            } => {
                if p + r == 0.0 {
                    return loss_good; // never leaves the good state it starts in
                }
                let bad = p / (p + r);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
            Self::FourState { .. } => {
                let pi = self.four_state_stationary();
                pi[2] + pi[3]
            }
        }
    }

    /// Long-run distribution of the 4-state chain started in state 1 (states 1..=4 at indices
    /// 0..=3): the Cesàro average of the first 200 000 steps, which exists whatever the
    /// parameters (also for periodic or reducible chains).
    fn four_state_stationary(&self) -> [f64; 4] {
        let Self::FourState {
            p13,
            p31,
            p32,
            p23,
            p14,
        } = *self
        else {
            return [1.0, 0.0, 0.0, 0.0];
        };
        let m = [
            [1.0 - p13 - p14, 0.0, p13, p14],
            [0.0, 1.0 - p23, p23, 0.0],
            [p31, p32, 1.0 - p31 - p32, 0.0],
            [1.0, 0.0, 0.0, 0.0],
        ];
        const STEPS: usize = 200_000;
        let mut pi = [1.0, 0.0, 0.0, 0.0];
        let mut sum = [0.0; 4];
        for _ in 0..STEPS {
            let mut next = [0.0; 4];
            for (from, row) in m.iter().enumerate() {
                for (to, p) in row.iter().enumerate() {
                    next[to] += pi[from] * p;
                }
            }
            pi = next;
            for (s, v) in sum.iter_mut().zip(pi) {
                *s += v;
            }
        }
        sum.map(|v| v / STEPS as f64)
    }
}

/// The loss node: decides each packet's fate as it arrives.
#[derive(Debug)]
pub struct LossNode {
    model: LossModel,
    /// Gilbert–Elliott: in the bad state. 4-state: the current state, 1..=4.
    state: u8,
    out: Passthrough,
}

impl LossNode {
    /// A loss node starting in the good (gap) state.
    pub fn new(model: LossModel) -> Self {
        Self {
            model,
            state: 1,
            out: Passthrough::default(),
        }
    }

    /// Changes the model; the chain keeps its state where the new model has the same states.
    pub fn set_config(&mut self, model: LossModel) {
        if std::mem::discriminant(&model) != std::mem::discriminant(&self.model) {
            self.state = 1;
        }
        self.model = model;
    }

    fn lost(&mut self, ctx: &mut Ctx<'_>) -> bool {
        match self.model {
            LossModel::Bernoulli { p } => p > 0.0 && ctx.rng.random::<f64>() < p,
            LossModel::GilbertElliott {
                p,
                r,
                loss_bad,
                loss_good,
            } => {
                // state 1 = good, 2 = bad; move first, then the packet's fate in the new state.
                let u: f64 = ctx.rng.random();
                if self.state == 1 {
                    if u < p {
                        self.state = 2;
                    }
                } else if u < r {
                    self.state = 1;
                }
                let loss = if self.state == 2 { loss_bad } else { loss_good };
                loss > 0.0 && ctx.rng.random::<f64>() < loss
            }
            LossModel::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            } => {
                let u: f64 = ctx.rng.random();
                self.state = match self.state {
                    1 if u < p14 => 4,
                    1 if u < p14 + p13 => 3,
                    1 => 1,
                    2 if u < p23 => 3,
                    2 => 2,
                    3 if u < p32 => 2,
                    3 if u < p32 + p31 => 1,
                    3 => 3,
                    _ => 1, // 4 → 1
                };
                matches!(self.state, 3 | 4)
            }
        }
    }
}

impl Node for LossNode {
    fn push(&mut self, now: Instant, pkt: Packet, ctx: &mut Ctx<'_>) {
        if self.lost(ctx) {
            ctx.counters.drop(Drop::Loss);
        } else {
            self.out.emit(now, pkt);
        }
    }

    fn poll(&mut self, now: Instant, _: &mut Ctx<'_>) -> Option<(Instant, Packet)> {
        self.out.pop(now)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out.next()
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Counters, SimRng};
    use rand::SeedableRng;

    const N: usize = 200_000;

    /// Runs `n` packets through `model`; returns the loss pattern.
    fn pattern(model: LossModel, n: usize, seed: u64) -> Vec<bool> {
        let mut node = LossNode::new(model);
        let mut rng = SimRng::seed_from_u64(seed);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        (0..n).map(|_| node.lost(&mut ctx)).collect()
    }

    fn rate(p: &[bool]) -> f64 {
        p.iter().filter(|&&l| l).count() as f64 / p.len() as f64
    }

    fn mean_burst(p: &[bool]) -> f64 {
        let (mut bursts, mut lost, mut prev) = (0usize, 0usize, false);
        for &l in p {
            if l {
                lost += 1;
                if !prev {
                    bursts += 1;
                }
            }
            prev = l;
        }
        lost as f64 / bursts.max(1) as f64
    }

    #[test]
    fn bernoulli_matches_its_rate() {
        let p = pattern(LossModel::bernoulli(0.02).unwrap(), N, 1);
        let got = rate(&p);
        // sd of the estimate: sqrt(p(1-p)/N) = 0.00031; allow 4 sd.
        assert!(
            (got - 0.02).abs() < 0.00125,
            "rate {got}, want 0.02 ± 0.00125"
        );
        // Independent losses: mean burst 1/(1-p).
        let b = mean_burst(&p);
        assert!(
            (b - 1.0 / 0.98).abs() < 0.02,
            "burst {b}, want 1.0204 ± 0.02"
        );
    }

    #[test]
    fn gilbert_elliott_matches_rate_and_burst() {
        for (loss, burst) in [(0.02, 3.0), (0.10, 5.0), (0.01, 1.5)] {
            let m = LossModel::gilbert(loss, burst).unwrap();
            assert!((m.stationary_loss() - loss).abs() < 1e-12);
            let p = pattern(m, N, 7);
            let got = rate(&p);
            let b = mean_burst(&p);
            // Bursty losses vary more than Bernoulli ones: allow 15 % of the rate, 6 % of the burst.
            assert!(
                (got - loss).abs() < 0.15 * loss,
                "rate {got}, want {loss} ± 15%"
            );
            assert!(
                (b - burst).abs() < 0.06 * burst,
                "burst {b}, want {burst} ± 6%"
            );
        }
    }

    #[test]
    fn gilbert_elliott_raw_parameters() {
        // netem gemodel 1% 30% 70% 0.1%: loss = π_bad·0.7 + π_good·0.001.
        let m = LossModel::gilbert_raw(0.01, 0.3, 0.7, 0.001).unwrap();
        let want = (0.01 / 0.31) * 0.7 + (0.30 / 0.31) * 0.001;
        assert!((m.stationary_loss() - want).abs() < 1e-12);
        let got = rate(&pattern(m, N, 3));
        assert!(
            (got - want).abs() < 0.15 * want,
            "rate {got}, want {want} ± 15%"
        );
    }

    #[test]
    fn four_state_matches_its_stationary_loss() {
        let m = LossModel::four_state(0.01, 0.3, 0.4, 0.2, 0.005).unwrap();
        let want = m.stationary_loss();
        // By the balance equations: π3 = p13/p31 π1, π2 = p32/p23 π3, π4 = p14 π1.
        let pi1 = 1.0 / (1.0 + 0.4 / 0.2 * 0.01 / 0.3 + 0.01 / 0.3 + 0.005);
        let exact = (0.01 / 0.3 + 0.005) * pi1;
        assert!((want - exact).abs() < 1e-4, "{want} vs {exact}");
        let got = rate(&pattern(m, N, 5));
        assert!(
            (got - want).abs() < 0.1 * want,
            "rate {got}, want {want} ± 10%"
        );
    }

    #[test]
    fn impossible_parameters_are_refused_with_the_range() {
        assert!(
            LossModel::bernoulli(1.5)
                .unwrap_err()
                .contains("between 0% and 100%")
        );
        assert!(LossModel::bernoulli(-0.1).is_err());
        assert!(
            LossModel::gilbert(0.6, 1.0)
                .unwrap_err()
                .contains("lengthen the bursts")
        );
        assert!(
            LossModel::gilbert(0.1, 0.5)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            LossModel::four_state(0.6, 0.1, 0.1, 0.1, 0.6)
                .unwrap_err()
                .contains("p13 + p14")
        );
    }

    #[test]
    fn the_node_counts_and_passes_at_once() {
        let t = crate::link::tests::t0();
        let mut node = LossNode::new(LossModel::bernoulli(0.5).unwrap());
        let mut rng = SimRng::seed_from_u64(9);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        for id in 0..1000 {
            node.push(
                t,
                Packet {
                    data: vec![0],
                    id,
                    entered: t,
                },
                &mut ctx,
            );
        }
        let mut out = 0;
        while let Some((at, _)) = node.poll(t, &mut ctx) {
            assert_eq!(at, t);
            out += 1;
        }
        assert_eq!(out + counters.dropped_loss, 1000);
        assert!((400..600).contains(&out));
    }

    #[test]
    fn same_seed_same_losses() {
        let m = LossModel::gilbert(0.05, 4.0).unwrap();
        assert_eq!(pattern(m, 10_000, 42), pattern(m, 10_000, 42));
        assert_ne!(pattern(m, 10_000, 42), pattern(m, 10_000, 43));
    }
}
