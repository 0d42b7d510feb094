//! Link models: sans-IO impairment nodes, chained into a [`Path`] (one per direction).
//!
//! A node takes packets with `now` and hands them out when they are due, with the instant they
//! left it; [`Node::poll_timeout`] says when it next has something. Nodes never read a clock:
//! the same path runs in the real-time proxy, behind an in-process socket, and in virtual time.
//! Every random draw of a path's nodes comes from the path's one seeded RNG ([`SimRng`]), so a
//! path built with the same parameters and seed does exactly the same thing to the same
//! packets.
//!
//! A path built from a [`LinkConfig`](crate::config::LinkConfig) applies its impairments in
//! this order:
//! blackhole → MTU → loss → duplication → corruption → bottleneck (rate limit with queue and
//! AQM, or trace-driven / Poisson capacity) → delay (propagation, jitter, reordering).
//! The bottleneck comes before propagation, as on a real path where packets queue at the slow
//! link and then travel.

pub mod delay;
pub mod dist;
pub mod loss;
pub mod rate;
pub mod simple;
pub mod trace;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rtq::stats::{LatencyHistogram, LatencySummary};
use serde::Serialize;

/// The RNG behind every draw of a path (xoshiro256++: fast, and its output is fixed forever for
/// a seed, so runs are reproducible across versions of this program).
pub type SimRng = rand::rngs::Xoshiro256PlusPlus;

/// A datagram crossing the simulated link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The UDP payload.
    pub data: Vec<u8>,
    /// Order of entry into the path (a duplicate carries its original's id).
    pub id: u64,
    /// When it entered the path.
    pub entered: Instant,
}

/// Why a node dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Random or modelled loss.
    Loss,
    /// Larger than the MTU.
    Mtu,
    /// The bottleneck queue was full (drop-tail).
    Queue,
    /// The active queue manager (CoDel) dropped it.
    Aqm,
    /// The link was in an outage (blackhole).
    Blackhole,
}

/// Counts of what happened on one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets that entered.
    pub packets: u64,
    /// Packets that came out (duplicates included).
    pub delivered: u64,
    /// Packets dropped, all reasons.
    pub dropped: u64,
    /// Dropped by random or modelled loss.
    pub dropped_loss: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by a full queue.
    pub dropped_queue: u64,
    /// Dropped by the AQM.
    pub dropped_aqm: u64,
    /// Dropped during an outage.
    pub dropped_blackhole: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Packets delivered after a packet that entered later.
    pub reordered: u64,
    /// Packets with a bit flipped.
    pub corrupted: u64,
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&mut self, why: Drop) {
        self.dropped += 1;
        match why {
            Drop::Loss => self.dropped_loss += 1,
            Drop::Mtu => self.dropped_mtu += 1,
            Drop::Queue => self.dropped_queue += 1,
            Drop::Aqm => self.dropped_aqm += 1,
            Drop::Blackhole => self.dropped_blackhole += 1,
        }
    }
}

/// What a node may use while it handles packets: the path's RNG and counters.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The path's RNG.
    pub rng: &'a mut SimRng,
    /// The path's counters.
    pub counters: &'a mut Counters,
}

/// A sans-IO impairment.
///
/// Call order: [`push`](Node::push) each packet as it arrives; [`poll`](Node::poll) until it
/// returns `None` whenever time reaches [`poll_timeout`](Node::poll_timeout) (or after a
/// push); a spurious poll returns `None`. A packet pushed at `t` is never handed out before `t`.
pub trait Node: Send + std::fmt::Debug {
    /// Takes a packet that arrives at `now`.
    fn push(&mut self, now: Instant, pkt: Packet, ctx: &mut Ctx<'_>);

    /// The next packet due at or before `now`, with the instant it left the node. Packets come
    /// out in the order of those instants (never earlier than a packet already handed out).
    fn poll(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<(Instant, Packet)>;

    /// When the node next has a packet to hand out (or something to do), if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The node as `Any`, so that a schedule can reach its concrete type and change its
    /// parameters (each node type has a `set_config` that keeps its state: queues, RNG-driven
    /// processes, packets in flight).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

/// A FIFO of packets that leave as soon as they arrive: the output of nodes that decide a
/// packet's fate at once (loss, MTU, duplication, corruption, blackhole).
#[derive(Debug, Default)]
pub struct Passthrough {
    out: VecDeque<(Instant, Packet)>,
}

impl Passthrough {
    /// Queues a packet leaving at `at`.
    pub fn emit(&mut self, at: Instant, pkt: Packet) {
        self.out.push_back((at, pkt));
    }

    /// The next packet, if it left at or before `now`.
    pub fn pop(&mut self, now: Instant) -> Option<(Instant, Packet)> {
        if self.out.front().is_some_and(|(at, _)| *at <= now) {
            self.out.pop_front()
        } else {
            None
        }
    }

    /// When the next packet leaves.
    pub fn next(&self) -> Option<Instant> {
        self.out.front().map(|(at, _)| *at)
    }
}

/// One direction of a link: nodes in order, their RNG, counters and the delay histogram.
#[derive(Debug)]
pub struct Path {
    nodes: Vec<Box<dyn Node>>,
    rng: SimRng,
    counters: Counters,
    delay: LatencyHistogram,
    next_id: u64,
    highest_delivered: Option<u64>,
    out: VecDeque<(Instant, Packet)>,
}

/// What a path reports: its counters and the delay it added (µs).
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// Packets that entered.
    pub packets: u64,
    /// Packets that came out.
    pub delivered: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Packets delivered after a packet that entered later.
    pub reordered: u64,
    /// Packets with a bit flipped.
    pub corrupted: u64,
    /// Drops by reason.
    pub dropped_by: DropsBy,
    /// Delay the path added to delivered packets, µs.
    pub delay_us: LatencySummary,
}

/// Drops by reason.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DropsBy {
    /// Random or modelled loss.
    pub loss: u64,
    /// Over the MTU.
    pub mtu: u64,
    /// Full queue.
    pub queue: u64,
    /// AQM.
    pub aqm: u64,
    /// Outage.
    pub blackhole: u64,
}

impl Path {
    /// A path through `nodes`, in order, with all randomness drawn from `seed`.
    pub fn from_nodes(nodes: Vec<Box<dyn Node>>, seed: u64) -> Self {
        Self {
            nodes,
            rng: SimRng::seed_from_u64(seed),
            counters: Counters::default(),
            delay: LatencyHistogram::default(),
            next_id: 0,
            highest_delivered: None,
            out: VecDeque::new(),
        }
    }

    /// A packet enters the path at `now`.
    pub fn push(&mut self, now: Instant, data: Vec<u8>) {
        self.counters.packets += 1;
        let pkt = Packet {
            data,
            id: self.next_id,
            entered: now,
        };
        self.next_id += 1;
        let mut ctx = Ctx {
            rng: &mut self.rng,
            counters: &mut self.counters,
        };
        match self.nodes.first_mut() {
            Some(first) => first.push(now, pkt, &mut ctx),
            None => self.out.push_back((now, pkt)),
        }
        self.advance(now);
    }

    /// Moves every packet due by `now` through the nodes; what leaves the last node waits in
    /// the output. Call it with a change's instant before changing parameters, so that the
    /// change applies from that instant on.
    pub fn advance(&mut self, now: Instant) {
        let mut ctx = Ctx {
            rng: &mut self.rng,
            counters: &mut self.counters,
        };
        for i in 0..self.nodes.len() {
            let (head, tail) = self.nodes.split_at_mut(i + 1);
            let node = &mut head[i];
            while let Some((at, pkt)) = node.poll(now, &mut ctx) {
                match tail.first_mut() {
                    Some(next) => next.push(at, pkt, &mut ctx),
                    None => self.out.push_back((at, pkt)),
                }
            }
        }
    }

    /// The next packet that has left the path by `now`, with the instant it left.
    pub fn poll(&mut self, now: Instant) -> Option<(Instant, Vec<u8>)> {
        if self.out.is_empty() {
            self.advance(now);
        }
        let (at, pkt) = self.out.pop_front()?;
        self.counters.delivered += 1;
        let added = at.saturating_duration_since(pkt.entered);
        self.delay
            .record(i64::try_from(added.as_micros()).unwrap_or(i64::MAX));
        match self.highest_delivered {
            Some(h) if pkt.id < h => self.counters.reordered += 1,
            _ => self.highest_delivered = Some(pkt.id),
        }
        Some((at, pkt.data))
    }

    /// When the path next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((at, _)) = self.out.front() {
            return Some(*at);
        }
        self.nodes.iter().filter_map(|n| n.poll_timeout()).min()
    }

    /// The nodes, in order (a schedule changes their parameters through them).
    pub fn nodes_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn Node>> {
        self.nodes.iter_mut()
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The delay added to delivered packets.
    pub fn delay(&self) -> &LatencyHistogram {
        &self.delay
    }

    /// The report of this direction.
    pub fn report(&self) -> PathReport {
        let c = self.counters;
        PathReport {
            packets: c.packets,
            delivered: c.delivered,
            dropped: c.dropped,
            duplicated: c.duplicated,
            reordered: c.reordered,
            corrupted: c.corrupted,
            dropped_by: DropsBy {
                loss: c.dropped_loss,
                mtu: c.dropped_mtu,
                queue: c.dropped_queue,
                aqm: c.dropped_aqm,
                blackhole: c.dropped_blackhole,
            },
            delay_us: self.delay.summary(),
        }
    }
}

/// `d` in (fractional) seconds, for models that compute in f64.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `now + s` seconds (saturating at a century ahead for absurd values).
pub fn after(now: Instant, s: f64) -> Instant {
    let s = if s.is_finite() {
        s.clamp(0.0, 3.15e9)
    } else {
        0.0
    };
    now.checked_add(Duration::from_secs_f64(s)).unwrap_or(now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A base instant for tests; values are offsets from it.
    #[expect(clippy::disallowed_methods, reason = "tests need one base instant")]
    pub(crate) fn t0() -> Instant {
        Instant::now()
    }

    /// A node that delays every packet by a fixed amount (for path tests).
    #[derive(Debug)]
    pub(crate) struct Fixed(pub Duration, pub VecDeque<(Instant, Packet)>);

    impl Node for Fixed {
        fn push(&mut self, now: Instant, pkt: Packet, _: &mut Ctx<'_>) {
            self.1.push_back((now + self.0, pkt));
        }
        fn poll(&mut self, now: Instant, _: &mut Ctx<'_>) -> Option<(Instant, Packet)> {
            if self.1.front().is_some_and(|(at, _)| *at <= now) {
                self.1.pop_front()
            } else {
                None
            }
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.1.front().map(|(at, _)| *at)
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    }

    #[test]
    fn nodes_chain_and_keep_exact_exit_times() {
        let t = t0();
        let ms = Duration::from_millis;
        let nodes: Vec<Box<dyn Node>> = vec![
            Box::new(Fixed(ms(10), VecDeque::new())),
            Box::new(Fixed(ms(5), VecDeque::new())),
        ];
        let mut path = Path::from_nodes(nodes, 1);
        path.push(t, vec![1]);
        path.push(t + ms(1), vec![2]);
        assert_eq!(path.poll_timeout(), Some(t + ms(10)));
        assert_eq!(path.poll(t + ms(14)), None);
        // Polled late: the exit times are still the exact ones.
        assert_eq!(path.poll(t + ms(100)), Some((t + ms(15), vec![1])));
        assert_eq!(path.poll(t + ms(100)), Some((t + ms(16), vec![2])));
        assert_eq!(path.poll(t + ms(100)), None);
        let r = path.report();
        assert_eq!((r.packets, r.delivered, r.reordered), (2, 2, 0));
        assert!((15_000..15_020).contains(&r.delay_us.p50));
    }

    #[test]
    fn an_empty_path_passes_packets_at_once() {
        let t = t0();
        let mut path = Path::from_nodes(Vec::new(), 1);
        path.push(t, vec![9]);
        assert_eq!(path.poll(t), Some((t, vec![9])));
    }
}
