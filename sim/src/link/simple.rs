//! Impairments that decide a packet's fate the moment it arrives: MTU, duplication, corruption
//! and outages (blackhole on/off).

use std::time::{Duration, Instant};

use rand::RngExt;

use super::{Ctx, Drop, Node, Packet, Passthrough};

/// Drops datagrams larger than the MTU (UDP payload bytes).
#[derive(Debug)]
pub struct MtuNode {
    mtu: usize,
    out: Passthrough,
}

impl MtuNode {
    /// Drops payloads above `mtu` bytes.
    pub fn new(mtu: usize) -> Self {
        Self {
            mtu,
            out: Passthrough::default(),
        }
    }

    /// Changes the MTU.
    pub fn set_config(&mut self, mtu: usize) {
        self.mtu = mtu;
    }
}

/// Duplicates packets with a probability (netem `duplicate`): the copy follows the original
/// through the rest of the path, and may be delayed and reordered independently.
#[derive(Debug)]
pub struct DupNode {
    p: f64,
    out: Passthrough,
}

impl DupNode {
    /// Duplicates with probability `p`.
    pub fn new(p: f64) -> Self {
        Self {
            p,
            out: Passthrough::default(),
        }
    }

    /// Changes the probability.
    pub fn set_config(&mut self, p: f64) {
        self.p = p;
    }
}

/// Flips one random bit of a packet with a probability (netem `corrupt`).
#[derive(Debug)]
pub struct CorruptNode {
    p: f64,
    out: Passthrough,
}

impl CorruptNode {
    /// Corrupts with probability `p`.
    pub fn new(p: f64) -> Self {
        Self {
            p,
            out: Passthrough::default(),
        }
    }

    /// Changes the probability.
    pub fn set_config(&mut self, p: f64) {
        self.p = p;
    }
}

/// A repeating outage: the link passes packets for `up`, then drops everything for `down`,
/// and so on, starting with `up` at the first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blackhole {
    /// How long the link works in each cycle.
    pub up: Duration,
    /// How long it then drops everything.
    pub down: Duration,
}

/// Drops packets during the `down` part of each [`Blackhole`] cycle.
#[derive(Debug)]
pub struct BlackholeNode {
    cfg: Blackhole,
    start: Option<Instant>,
    out: Passthrough,
}

impl BlackholeNode {
    /// An outage schedule anchored at the first packet.
    pub fn new(cfg: Blackhole) -> Self {
        Self {
            cfg,
            start: None,
            out: Passthrough::default(),
        }
    }

    /// Changes the cycle (anchored anew at the next packet).
    pub fn set_config(&mut self, cfg: Blackhole) {
        self.cfg = cfg;
        self.start = None;
    }

    /// Whether the link is down at `now`.
    pub fn is_down(&mut self, now: Instant) -> bool {
        let start = *self.start.get_or_insert(now);
        let cycle = self.cfg.up + self.cfg.down;
        if cycle.is_zero() || self.cfg.down.is_zero() {
            return false;
        }
        let into = now.saturating_duration_since(start).as_nanos() % cycle.as_nanos();
        into >= self.cfg.up.as_nanos()
    }
}

macro_rules! passthrough_node {
    ($ty:ty, |$self:ident, $now:ident, $pkt:ident, $ctx:ident| $body:block) => {
        impl Node for $ty {
            #[allow(unused_mut, reason = "only the corruption node changes the packet")]
            fn push(&mut $self, $now: Instant, mut $pkt: Packet, $ctx: &mut Ctx<'_>) $body

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
    };
}

passthrough_node!(MtuNode, |self, now, pkt, ctx| {
    if pkt.data.len() > self.mtu {
        ctx.counters.drop(Drop::Mtu);
    } else {
        self.out.emit(now, pkt);
    }
});

passthrough_node!(DupNode, |self, now, pkt, ctx| {
    if self.p > 0.0 && ctx.rng.random::<f64>() < self.p {
        ctx.counters.duplicated += 1;
        self.out.emit(now, pkt.clone());
    }
    self.out.emit(now, pkt);
});

passthrough_node!(CorruptNode, |self, now, pkt, ctx| {
    if self.p > 0.0 && ctx.rng.random::<f64>() < self.p && !pkt.data.is_empty() {
        let bit = ctx.rng.random_range(0..pkt.data.len() * 8);
        if let Some(byte) = pkt.data.get_mut(bit / 8) {
            *byte ^= 1 << (bit % 8);
        }
        ctx.counters.corrupted += 1;
    }
    self.out.emit(now, pkt);
});

passthrough_node!(BlackholeNode, |self, now, pkt, ctx| {
    if self.is_down(now) {
        ctx.counters.drop(Drop::Blackhole);
    } else {
        self.out.emit(now, pkt);
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::tests::t0;
    use crate::link::{Counters, SimRng};
    use rand::SeedableRng;

    fn run(
        node: &mut dyn Node,
        packets: &[(Duration, Vec<u8>)],
        seed: u64,
    ) -> (Vec<Vec<u8>>, Counters) {
        let t = t0();
        let mut rng = SimRng::seed_from_u64(seed);
        let mut counters = Counters::default();
        let mut ctx = Ctx {
            rng: &mut rng,
            counters: &mut counters,
        };
        let mut out = Vec::new();
        for (id, (at, data)) in packets.iter().enumerate() {
            node.push(
                t + *at,
                Packet {
                    data: data.clone(),
                    id: id as u64,
                    entered: t + *at,
                },
                &mut ctx,
            );
            while let Some((left, p)) = node.poll(t + *at, &mut ctx) {
                assert_eq!(left, t + *at, "decided at once");
                out.push(p.data);
            }
        }
        (out, counters)
    }

    #[test]
    fn mtu_drops_only_larger_datagrams() {
        let pkts: Vec<_> = [1000, 1200, 1201, 50]
            .iter()
            .map(|&n| (Duration::ZERO, vec![0u8; n]))
            .collect();
        let (out, c) = run(&mut MtuNode::new(1200), &pkts, 1);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1200, 50]
        );
        assert_eq!(c.dropped_mtu, 1);
    }

    #[test]
    fn duplication_rate_matches() {
        let pkts: Vec<_> = (0..100_000).map(|_| (Duration::ZERO, vec![1u8])).collect();
        let (out, c) = run(&mut DupNode::new(0.05), &pkts, 2);
        assert_eq!(out.len() as u64, 100_000 + c.duplicated);
        let rate = c.duplicated as f64 / 100_000.0;
        assert!(
            (rate - 0.05).abs() < 0.003,
            "duplication {rate}, want 0.05 ± 0.003"
        );
    }

    #[test]
    fn corruption_flips_exactly_one_bit() {
        let pkts: Vec<_> = (0..20_000)
            .map(|_| (Duration::ZERO, vec![0u8; 100]))
            .collect();
        let (out, c) = run(&mut CorruptNode::new(0.1), &pkts, 3);
        let flipped: Vec<u32> = out
            .iter()
            .map(|d| d.iter().map(|b| b.count_ones()).sum())
            .collect();
        assert!(flipped.iter().all(|&n| n <= 1));
        let n = flipped.iter().filter(|&&n| n == 1).count() as u64;
        assert_eq!(n, c.corrupted);
        let rate = n as f64 / 20_000.0;
        assert!(
            (rate - 0.1).abs() < 0.01,
            "corruption {rate}, want 0.1 ± 0.01"
        );
    }

    #[test]
    fn blackhole_cycles_up_and_down() {
        let cfg = Blackhole {
            up: Duration::from_secs(5),
            down: Duration::from_secs(2),
        };
        // One packet every 100 ms for 21 s: three cycles of 50 passed, 20 dropped.
        let pkts: Vec<_> = (0..210)
            .map(|i| (Duration::from_millis(100 * i), vec![0u8]))
            .collect();
        let (out, c) = run(&mut BlackholeNode::new(cfg), &pkts, 4);
        assert_eq!((out.len(), c.dropped_blackhole), (150, 60));
    }
}
