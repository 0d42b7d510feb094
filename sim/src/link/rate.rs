//! The bottleneck of fixed rate: packets serialize back to back onto a link of `rate_bps`,
//! fed by a bounded FIFO [`Queue`] with drop-tail or CoDel (RFC 8289).
//!
//! A packet of `n` bytes occupies the link for `n·8/rate` seconds; it leaves the node at the end
//! of its serialization. The queue holds the packets waiting for the link: the packet being
//! serialized has left it and does not count toward its limit, as in ns-3's
//! `PointToPointNetDevice` (it dequeues a packet to start transmitting it) and in Mahimahi's
//! `LinkQueue` (the packet in transit is held apart from the queue). Every packet goes through
//! the queue, even onto an idle link, so a limit of 0 drops everything ([`RateConfig::validate`]
//! refuses it).
//!
//! Sizes are those of the UDP payloads handed to the path ([`Packet::data`]); IP and UDP
//! headers are not added.
//!
//! The node is simulated lazily: [`Node::push`] and [`Node::poll`] first play every event up to
//! their `now` (inclusive), so a packet that ends its serialization at `t` frees its place
//! before a packet that arrives at `t` is admitted, whatever the order of the calls.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::{Counters, Ctx, Drop, Node, Packet};

/// CoDel's target for the standing queue's sojourn time (RFC 8289 §4): 5 ms.
pub const CODEL_TARGET: Duration = Duration::from_millis(5);

/// CoDel's interval, the time the sojourn must stay above the target before CoDel drops
/// (RFC 8289 §4): 100 ms.
pub const CODEL_INTERVAL: Duration = Duration::from_millis(100);

/// CoDel keeps quiet while the queue holds at most this many bytes after a dequeue: one MTU
/// (RFC 8289 §5 `maxpacket`, "should use interface MTU"; Linux uses the device's MTU).
pub const CODEL_MAXPACKET: usize = 1500;

/// The longest serialization or opportunity offset the nodes compute (about a century): keeps
/// instant arithmetic away from overflow for absurd rates.
const LONGEST: Duration = Duration::from_secs(3_150_000_000);

/// The bound of a bottleneck queue: what it may hold besides the packet on the wire.
///
/// The default is 1000 packets, the default `txqueuelen` of a Linux interface and the default
/// limit of `netem`, `pfifo` and `codel`: deep enough to show bufferbloat on a slow link (1000
/// packets of 1200 bytes are 9.6 s at 1 Mbit/s), as the cellular and home links rtq meets do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLimit {
    /// At most this many packets wait.
    Packets(usize),
    /// The waiting packets add up to at most this many bytes.
    Bytes(usize),
}

impl Default for QueueLimit {
    fn default() -> Self {
        Self::Packets(1000)
    }
}

impl QueueLimit {
    /// Whether a queue of `len` packets and `bytes` bytes may take one more of `size` bytes.
    pub fn admits(self, len: usize, bytes: usize, size: usize) -> bool {
        match self {
            Self::Packets(max) => len < max,
            Self::Bytes(max) => bytes.saturating_add(size) <= max,
        }
    }

    /// Whether a queue of `len` packets and `bytes` bytes is within the limit.
    pub fn holds(self, len: usize, bytes: usize) -> bool {
        match self {
            Self::Packets(max) => len <= max,
            Self::Bytes(max) => bytes <= max,
        }
    }

    /// Whether the limit is 0 (packets or bytes): such a queue drops every packet.
    pub fn is_zero(self) -> bool {
        matches!(self, Self::Packets(0) | Self::Bytes(0))
    }
}

impl fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packets(n) => write!(f, "{n} packets"),
            Self::Bytes(n) => write!(f, "{n} bytes"),
        }
    }
}

/// The active queue management of a bottleneck queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aqm {
    /// None: packets are dropped only when the queue is full, at enqueue.
    #[default]
    DropTail,
    /// CoDel (RFC 8289) at dequeue, target [`CODEL_TARGET`], interval [`CODEL_INTERVAL`], on
    /// top of the drop-tail limit.
    Codel,
}

impl fmt::Display for Aqm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DropTail => "droptail",
            Self::Codel => "codel",
        })
    }
}

/// An AQM name that is neither `droptail` nor `codel`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown AQM `{0}`: use `droptail` or `codel`")]
pub struct ParseAqmError(pub String);

impl FromStr for Aqm {
    type Err = ParseAqmError;

    /// `droptail` or `codel`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("droptail") {
            Ok(Self::DropTail)
        } else if s.eq_ignore_ascii_case("codel") {
            Ok(Self::Codel)
        } else {
            Err(ParseAqmError(s.to_owned()))
        }
    }
}

/// A bottleneck configuration that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A rate of 0 bit/s: nothing would ever leave.
    #[error("the link rate is 0 bit/s, so nothing would ever leave: give a positive rate")]
    ZeroRate,
    /// A queue limit of 0: every packet would be dropped.
    #[error(
        "the queue limit is 0 ({0}), so every packet would be dropped: give at least 1 packet \
         or 1500 bytes"
    )]
    ZeroQueue(QueueLimit),
}

/// CoDel's state (RFC 8289 §5, the variables of `codel_queue_t`).
#[derive(Debug, Clone, Copy, Default)]
struct Codel {
    /// When the sojourn time went (and stayed) above the target, plus an interval.
    first_above_time: Option<Instant>,
    /// When the next drop is due in the dropping state.
    drop_next: Option<Instant>,
    /// Drops since entering the dropping state (the control law's count).
    count: u32,
    /// `count` when the dropping state was last entered.
    lastcount: u32,
    /// Whether CoDel is in the dropping state.
    dropping: bool,
}

/// `t + interval / sqrt(count)` (RFC 8289 §5 `control_law`).
fn control_law(t: Instant, count: u32) -> Instant {
    t + CODEL_INTERVAL.div_f64(f64::from(count.max(1)).sqrt())
}

/// A FIFO of packets with their enqueue instants, bounded in packets or bytes (drop-tail at
/// enqueue, counted as [`Drop::Queue`]), with optional CoDel at dequeue (counted as
/// [`Drop::Aqm`]).
///
/// It holds only the packets that wait: a link takes the packet it sends out of the queue
/// first. Changing the limit does not drop packets already queued (as `tc qdisc change` on a
/// `pfifo`): a smaller limit refuses arrivals until the queue has drained below it.
#[derive(Debug, Clone)]
pub struct Queue {
    items: VecDeque<(Instant, Packet)>,
    bytes: usize,
    limit: QueueLimit,
    aqm: Aqm,
    codel: Codel,
}

impl Queue {
    /// An empty queue.
    pub fn new(limit: QueueLimit, aqm: Aqm) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            limit,
            aqm,
            codel: Codel::default(),
        }
    }

    /// The limit.
    pub fn limit(&self) -> QueueLimit {
        self.limit
    }

    /// The AQM.
    pub fn aqm(&self) -> Aqm {
        self.aqm
    }

    /// Changes the limit; it applies to the next arrivals.
    pub fn set_limit(&mut self, limit: QueueLimit) {
        self.limit = limit;
    }

    /// Changes the AQM; a change starts CoDel afresh.
    pub fn set_aqm(&mut self, aqm: Aqm) {
        if aqm != self.aqm {
            self.codel = Codel::default();
        }
        self.aqm = aqm;
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held (payload sizes).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the packet at the head was enqueued.
    pub fn head_enqueued(&self) -> Option<Instant> {
        self.items.front().map(|(at, _)| *at)
    }

    /// Appends a packet arriving at `now`, or drops it if the queue is full (drop-tail), counting
    /// [`Drop::Queue`]. Returns whether it was queued.
    pub fn enqueue(&mut self, now: Instant, pkt: Packet, counters: &mut Counters) -> bool {
        let size = pkt.data.len();
        if !self.limit.admits(self.items.len(), self.bytes, size) {
            counters.drop(Drop::Queue);
            return false;
        }
        self.bytes += size;
        self.items.push_back((now, pkt));
        true
    }

    /// Takes the packet at the head at `now` for the link, with its enqueue instant. With CoDel,
    /// the packets CoDel drops on the way are counted as [`Drop::Aqm`]; `None` when no packet is
    /// left.
    pub fn dequeue(&mut self, now: Instant, counters: &mut Counters) -> Option<(Instant, Packet)> {
        match self.aqm {
            Aqm::DropTail => self.pop(),
            Aqm::Codel => self.codel_dequeue(now, counters),
        }
    }

    fn pop(&mut self) -> Option<(Instant, Packet)> {
        let (at, pkt) = self.items.pop_front()?;
        self.bytes -= pkt.data.len();
        Some((at, pkt))
    }

    /// RFC 8289 §5 `dodequeue`: the head packet, and whether its sojourn has been above the
    /// target for an interval (so that CoDel may drop it).
    fn codel_pop(&mut self, now: Instant) -> (Option<(Instant, Packet)>, bool) {
        let Some((at, pkt)) = self.pop() else {
            self.codel.first_above_time = None;
            return (None, false);
        };
        let sojourn = now.saturating_duration_since(at);
        let mut ok_to_drop = false;
        // RFC 8289 §5: below target, or no more than one MTU left queued (maxpacket).
        if sojourn < CODEL_TARGET || self.bytes <= CODEL_MAXPACKET {
            self.codel.first_above_time = None;
        } else {
            match self.codel.first_above_time {
                None => self.codel.first_above_time = Some(now + CODEL_INTERVAL),
                Some(t) if now >= t => ok_to_drop = true,
                Some(_) => {}
            }
        }
        (Some((at, pkt)), ok_to_drop)
    }

    /// RFC 8289 §5 `dequeue`.
    fn codel_dequeue(
        &mut self,
        now: Instant,
        counters: &mut Counters,
    ) -> Option<(Instant, Packet)> {
        let (mut p, ok_to_drop) = self.codel_pop(now);
        if self.codel.dropping {
            if !ok_to_drop {
                // Sojourn below target: leave the dropping state.
                self.codel.dropping = false;
            }
            while self.codel.dropping && self.codel.drop_next.is_some_and(|d| now >= d) {
                // Drop the packet and schedule the next drop by the control law (RFC 8289 §5).
                if p.take().is_some() {
                    counters.drop(Drop::Aqm);
                }
                self.codel.count = self.codel.count.saturating_add(1);
                let (next, ok) = self.codel_pop(now);
                p = next;
                if ok {
                    self.codel.drop_next = self
                        .codel
                        .drop_next
                        .map(|d| control_law(d, self.codel.count));
                } else {
                    self.codel.dropping = false;
                }
            }
        } else if ok_to_drop {
            // Sojourn above target for an interval: drop, enter the dropping state.
            if p.take().is_some() {
                counters.drop(Drop::Aqm);
            }
            p = self.codel_pop(now).0;
            self.codel.dropping = true;
            // If the queue went above target soon after the last dropping state ended, resume
            // from the drop rate that controlled it (the Linux variant the RFC quotes). "Soon" is
            // signed, as Linux's `codel_time_before`: a `drop_next` still ahead counts as soon.
            let delta = self.codel.count.saturating_sub(self.codel.lastcount);
            let recent = self
                .codel
                .drop_next
                .is_some_and(|d| now < d || now.duration_since(d) < 16 * CODEL_INTERVAL);
            self.codel.count = if delta > 1 && recent { delta } else { 1 };
            self.codel.drop_next = Some(control_law(now, self.codel.count));
            self.codel.lastcount = self.codel.count;
        }
        p
    }
}

/// A bottleneck of fixed rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// The link's rate, bit/s.
    pub rate_bps: u64,
    /// The queue's bound.
    pub queue: QueueLimit,
    /// The queue's AQM.
    pub aqm: Aqm,
}

impl RateConfig {
    /// A link of `rate_bps` with the default queue (1000 packets, drop-tail).
    pub fn new(rate_bps: u64) -> Self {
        Self {
            rate_bps,
            queue: QueueLimit::default(),
            aqm: Aqm::default(),
        }
    }

    /// Refuses a rate of 0 and a queue limit of 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_bps == 0 {
            return Err(ConfigError::ZeroRate);
        }
        if self.queue.is_zero() {
            return Err(ConfigError::ZeroQueue(self.queue));
        }
        Ok(())
    }
}

/// A run of packets serialized back to back at one rate: their ends are computed from its
/// start and the bits sent since, so they do not drift.
#[derive(Debug, Clone, Copy)]
struct Train {
    start: Instant,
    bits: u128,
    rate_bps: u64,
    end: Instant,
}

/// `bits` at `rate_bps`, to the nanosecond below (no error accumulates: callers convert totals).
fn serialization(bits: u128, rate_bps: u64) -> Duration {
    let nanos = bits.saturating_mul(1_000_000_000) / u128::from(rate_bps.max(1));
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub).min(LONGEST)
}

/// A link of fixed rate behind a [`Queue`]: the bottleneck of a path.
///
/// A packet of `n` bytes leaves at the end of its serialization, `n·8/rate_bps` seconds after
/// it started, which is when it arrived on an idle link or when the previous packet ended.
/// A rate of 0 is treated as 1 bit/s.
#[derive(Debug)]
pub struct RateNode {
    cfg: RateConfig,
    queue: Queue,
    /// The packet on the wire and the end of its serialization.
    serving: Option<(Instant, Packet)>,
    /// The back-to-back run the packet on the wire belongs to.
    train: Option<Train>,
    /// When the link finished its last packet.
    free_at: Option<Instant>,
    out: VecDeque<(Instant, Packet)>,
}

impl RateNode {
    /// An idle link with an empty queue.
    pub fn new(cfg: RateConfig) -> Self {
        Self {
            cfg,
            queue: Queue::new(cfg.queue, cfg.aqm),
            serving: None,
            train: None,
            free_at: None,
            out: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// Changes the rate, queue limit and AQM, keeping the queued packets and the packet on the
    /// wire. The packet on the wire ends at the old rate; the new rate applies from the next
    /// packet to start serializing (when the node is next pushed or polled past that instant,
    /// so apply a change after polling the node up to the change's instant).
    pub fn set_config(&mut self, cfg: RateConfig) {
        self.cfg = cfg;
        self.queue.set_limit(cfg.queue);
        self.queue.set_aqm(cfg.aqm);
    }

    /// The queue (packets waiting, not the one on the wire).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Puts the next queued packet on the wire at `at`, or leaves the link idle.
    fn start_next(&mut self, at: Instant, counters: &mut Counters) {
        let Some((_, pkt)) = self.queue.dequeue(at, counters) else {
            self.train = None;
            return;
        };
        let rate_bps = self.cfg.rate_bps;
        let mut train = match self.train {
            Some(t) if t.rate_bps == rate_bps && t.end == at => t,
            _ => Train {
                start: at,
                bits: 0,
                rate_bps,
                end: at,
            },
        };
        train.bits += 8 * pkt.data.len() as u128;
        let d = serialization(train.bits, rate_bps);
        // `d` is at most a century; past the end of `Instant`, stay at the start.
        train.end = train.start.checked_add(d).unwrap_or(train.start).max(at);
        self.train = Some(train);
        self.serving = Some((train.end, pkt));
    }

    /// Plays the link up to `now`: every serialization that ends by then.
    fn advance(&mut self, now: Instant, counters: &mut Counters) {
        while self.serving.as_ref().is_some_and(|(end, _)| *end <= now) {
            let Some((end, pkt)) = self.serving.take() else {
                break;
            };
            self.out.push_back((end, pkt));
            self.free_at = Some(end);
            self.start_next(end, counters);
        }
    }
}

impl Node for RateNode {
    fn push(&mut self, now: Instant, pkt: Packet, ctx: &mut Ctx<'_>) {
        self.advance(now, ctx.counters);
        if !self.queue.enqueue(now, pkt, ctx.counters) {
            return;
        }
        if self.serving.is_none() {
            // An idle link starts at once (never before its last packet ended).
            let start = self.free_at.map_or(now, |f| f.max(now));
            self.start_next(start, ctx.counters);
        }
    }

    fn poll(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<(Instant, Packet)> {
        self.advance(now, ctx.counters);
        if self.out.front().is_some_and(|(at, _)| *at <= now) {
            self.out.pop_front()
        } else {
            None
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.out
            .front()
            .map(|(at, _)| *at)
            .or_else(|| self.serving.as_ref().map(|(end, _)| *end))
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::link::SimRng;
    use crate::link::tests::t0;
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};

    /// A packet that came out of a node.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Exit {
        pub id: u64,
        pub entered: Instant,
        pub left: Instant,
        pub len: usize,
    }

    impl Exit {
        /// Seconds the node held it.
        pub fn delay(&self) -> f64 {
            (self.left - self.entered).as_secs_f64()
        }
    }

    /// A node with its own RNG and counters, driven by a test.
    pub(crate) struct Bench<N: Node> {
        pub node: N,
        pub rng: SimRng,
        pub counters: Counters,
        pub exits: Vec<Exit>,
        next_id: u64,
    }

    impl<N: Node> Bench<N> {
        pub fn new(node: N, seed: u64) -> Self {
            Self {
                node,
                rng: SimRng::seed_from_u64(seed),
                counters: Counters::default(),
                exits: Vec::new(),
                next_id: 0,
            }
        }

        /// Hands out everything due by `until`, polling at each timeout as a shell would.
        pub fn run_until(&mut self, until: Instant) {
            while let Some(t) = self.node.poll_timeout().filter(|t| *t <= until) {
                self.poll_at(t);
                // Once polled at its timeout, a node must move on (no spinning).
                let next = self.node.poll_timeout();
                assert!(next.is_none_or(|n| n > t), "poll_timeout stuck at {t:?}");
            }
        }

        /// Polls the node at `now` until it has nothing more.
        pub fn poll_at(&mut self, now: Instant) {
            let mut ctx = Ctx {
                rng: &mut self.rng,
                counters: &mut self.counters,
            };
            while let Some((left, pkt)) = self.node.poll(now, &mut ctx) {
                assert!(left <= now, "handed out at {now:?} a packet leaving later");
                self.exits.push(Exit {
                    id: pkt.id,
                    entered: pkt.entered,
                    left,
                    len: pkt.data.len(),
                });
            }
        }

        /// Runs until `at`, then pushes a packet of `len` bytes; returns its id.
        pub fn push(&mut self, at: Instant, len: usize) -> u64 {
            self.run_until(at);
            let id = self.next_id;
            self.next_id += 1;
            self.counters.packets += 1;
            let pkt = Packet {
                data: vec![0; len],
                id,
                entered: at,
            };
            let mut ctx = Ctx {
                rng: &mut self.rng,
                counters: &mut self.counters,
            };
            self.node.push(at, pkt, &mut ctx);
            id
        }

        /// Hands out everything that will ever come out.
        pub fn drain(&mut self) {
            self.run_until(t0() + Duration::from_secs(3_000_000_000));
        }

        pub fn pushed(&self) -> u64 {
            self.next_id
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rate_node(rate_bps: u64, queue: QueueLimit, aqm: Aqm) -> RateNode {
        RateNode::new(RateConfig {
            rate_bps,
            queue,
            aqm,
        })
    }

    #[test]
    fn aqm_names_round_trip() {
        for a in [Aqm::DropTail, Aqm::Codel] {
            assert_eq!(a.to_string().parse::<Aqm>(), Ok(a));
        }
        assert_eq!("CoDel".parse::<Aqm>(), Ok(Aqm::Codel));
        let e = "red".parse::<Aqm>().unwrap_err().to_string();
        assert!(e.contains("red") && e.contains("droptail"), "{e}");
        assert_eq!(Aqm::default(), Aqm::DropTail);
        assert_eq!(QueueLimit::default(), QueueLimit::Packets(1000));
    }

    #[test]
    fn validate_refuses_zero_rate_and_queue() {
        assert_eq!(RateConfig::new(0).validate(), Err(ConfigError::ZeroRate));
        let cfg = RateConfig {
            queue: QueueLimit::Bytes(0),
            ..RateConfig::new(1)
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::ZeroQueue(QueueLimit::Bytes(0)))
        );
        assert_eq!(RateConfig::new(1_000_000).validate(), Ok(()));
    }

    #[test]
    fn a_packet_leaves_after_its_serialization() {
        let t = t0();
        // 1250 bytes at 10 Mbit/s: 1 ms.
        let mut b = Bench::new(
            rate_node(10_000_000, QueueLimit::Packets(10), Aqm::DropTail),
            1,
        );
        b.push(t, 1250);
        b.push(t, 1250);
        assert_eq!(b.node.poll_timeout(), Some(t + ms(1)));
        b.push(t + Duration::from_micros(2500), 1250);
        b.drain();
        let left: Vec<_> = b.exits.iter().map(|e| e.left - t).collect();
        assert_eq!(left, [ms(1), ms(2), Duration::from_micros(3500)]);
    }

    #[test]
    fn an_arrival_at_a_departure_instant_takes_the_freed_place() {
        let t = t0();
        // One place: the second packet waits, the third arrives as the first leaves.
        let mut b = Bench::new(
            rate_node(10_000_000, QueueLimit::Packets(1), Aqm::DropTail),
            1,
        );
        b.push(t, 1250);
        b.push(t, 1250);
        // Pushed without polling first: the node plays the departure at 1 ms itself.
        let mut ctx = Ctx {
            rng: &mut b.rng,
            counters: &mut b.counters,
        };
        let pkt = Packet {
            data: vec![0; 1250],
            id: 2,
            entered: t + ms(1),
        };
        b.node.push(t + ms(1), pkt, &mut ctx);
        b.drain();
        assert_eq!(b.counters.dropped, 0);
        assert_eq!(b.exits.len(), 3);
        assert_eq!(b.exits[2].left, t + ms(3));
    }

    /// Overloaded at twice the rate: the link delivers exactly its rate, and a full queue of Q
    /// packets adds Q·S of queueing (S = one serialization) on top of the packet's own.
    #[test]
    fn overloaded_link_delivers_its_rate_and_a_full_queue_adds_q_serializations() {
        let t = t0();
        let (rate, size, q) = (8_000_000u64, 1000usize, 50usize);
        let s = (size * 8) as f64 / rate as f64; // 1 ms
        let gap = s / 2.0; // arrivals at twice the rate
        let mut b = Bench::new(rate_node(rate, QueueLimit::Packets(q), Aqm::DropTail), 1);
        let n = 200_000;
        for i in 0..n {
            b.push(super::super::after(t, i as f64 * gap), size);
            assert!(b.node.queue().len() <= q);
        }
        b.drain();
        let exits = &b.exits;
        assert_eq!(exits.len() as u64 + b.counters.dropped_queue, n);
        // Throughput over the busy period: exactly the rate (back to back, no drift).
        let first = exits[0].left;
        let last = exits[exits.len() - 1].left;
        let bits = ((exits.len() - 1) * size * 8) as f64;
        let measured = bits / (last - first).as_secs_f64();
        let err = (measured - rate as f64).abs() / rate as f64;
        assert!(
            err < 1e-6,
            "throughput {measured} vs {rate} bit/s (tolerance 1e-6 relative)"
        );
        // Once the queue is full (after the first 2Q packets), an accepted packet finds Q-1
        // waiting and one on the wire with at most S and at least S - gap left: its delay is
        // within [Q·S + S - gap, Q·S + S].
        let steady: Vec<f64> = exits[4 * q..].iter().map(Exit::delay).collect();
        let mean = steady.iter().sum::<f64>() / steady.len() as f64;
        let (lo, hi) = (q as f64 * s + s - gap, q as f64 * s + s);
        for d in &steady {
            assert!(
                *d >= lo - 1e-9 && *d <= hi + 1e-9,
                "delay {d} outside [{lo}, {hi}]"
            );
        }
        let queueing = mean - s;
        eprintln!(
            "overloaded: {measured:.1} bit/s (rate {rate}); mean queueing {:.4} ms, Q·S = {:.4} ms",
            queueing * 1e3,
            q as f64 * s * 1e3
        );
        assert!(
            (queueing - q as f64 * s).abs() <= gap,
            "queueing {queueing} s vs Q·S {} s (tolerance one arrival gap {gap} s)",
            q as f64 * s
        );
    }

    /// Periodic arrivals slower than the link: each packet is delayed by its serialization only.
    #[test]
    fn underloaded_link_adds_only_serialization() {
        let t = t0();
        let (rate, size) = (8_000_000u64, 1000usize);
        let mut b = Bench::new(rate_node(rate, QueueLimit::Packets(10), Aqm::DropTail), 1);
        for i in 0..100_000u64 {
            // 1.25 ms apart for 1 ms serializations.
            b.push(t + Duration::from_micros(1250 * i), size);
        }
        b.drain();
        assert_eq!(b.exits.len(), 100_000);
        assert_eq!(b.counters.dropped, 0);
        for e in &b.exits {
            // Tolerance: 1 ns (rounding of the end instant).
            let d = (e.left - e.entered).as_nanos();
            assert!(
                (999_999..=1_000_000).contains(&d),
                "delay {d} ns, expected 1 ms ± 1 ns"
            );
        }
    }

    /// Poisson arrivals at half the rate: the mean wait in the queue is the M/D/1 one,
    /// ρ·S / (2(1-ρ)) (Pollaczek–Khinchine).
    #[test]
    fn poisson_arrivals_wait_as_in_m_d_1() {
        let t = t0();
        let (rate, size) = (8_000_000u64, 1000usize);
        let s = 1e-3;
        let rho = 0.5;
        let mut b = Bench::new(
            rate_node(rate, QueueLimit::Packets(100_000), Aqm::DropTail),
            1,
        );
        let mut rng = SimRng::seed_from_u64(7);
        let mut at = 0.0;
        for _ in 0..100_000 {
            at += -(1.0 - rng.random::<f64>()).ln() * s / rho;
            b.push(super::super::after(t, at), size);
        }
        b.drain();
        let waits: Vec<f64> = b.exits.iter().map(|e| e.delay() - s).collect();
        let mean = waits.iter().sum::<f64>() / waits.len() as f64;
        let expected = rho * s / (2.0 * (1.0 - rho));
        eprintln!(
            "M/D/1: mean wait {:.4} ms, analytic {:.4} ms",
            mean * 1e3,
            expected * 1e3
        );
        assert!(
            (mean - expected).abs() / expected < 0.05,
            "mean wait {mean} s vs M/D/1 {expected} s (tolerance 5%)"
        );
    }

    /// 10^5 back-to-back packets whose serialization (8/7 ms) has no exact binary value: the
    /// n-th ends at n·S to the nanosecond.
    #[test]
    fn back_to_back_ends_do_not_drift() {
        let t = t0();
        let (rate, size) = (7_000_000u64, 1000u64);
        let n = 100_000u64;
        let mut b = Bench::new(
            rate_node(rate, QueueLimit::Packets(200_000), Aqm::DropTail),
            1,
        );
        for i in 0..n {
            // All queued ahead of their turn (every 1 ms, the link takes 8/7 ms each).
            b.push(t + Duration::from_micros(1000 * i), size as usize);
        }
        b.drain();
        assert_eq!(b.exits.len() as u64, n);
        for (i, e) in b.exits.iter().enumerate() {
            let k = i as u128 + 1;
            let exact = k * u128::from(size * 8) * 1_000_000_000 / u128::from(rate);
            let got = (e.left - t).as_nanos();
            assert!(
                got.abs_diff(exact) <= 1,
                "packet {k}: {got} ns, exact {exact} ns (±1 ns)"
            );
        }
    }

    #[test]
    fn drop_tail_by_packets_counts_packets_and_by_bytes_counts_bytes() {
        let t = t0();
        let mut c = Counters::default();
        let pkt = |n: usize| Packet {
            data: vec![0; n],
            id: 0,
            entered: t,
        };
        // 10 packets, whatever their size.
        let mut q = Queue::new(QueueLimit::Packets(10), Aqm::DropTail);
        for _ in 0..10 {
            assert!(q.enqueue(t, pkt(1500), &mut c));
        }
        assert!(!q.enqueue(t, pkt(1), &mut c));
        assert_eq!((q.len(), q.bytes(), c.dropped_queue), (10, 15_000, 1));
        // 15 000 bytes: 30 packets of 500 bytes, then a 1500-byte one does not fit but a
        // smaller one would after a dequeue.
        let mut c = Counters::default();
        let mut q = Queue::new(QueueLimit::Bytes(15_000), Aqm::DropTail);
        for _ in 0..30 {
            assert!(q.enqueue(t, pkt(500), &mut c));
        }
        assert!(!q.enqueue(t, pkt(1), &mut c));
        q.dequeue(t, &mut c);
        assert!(!q.enqueue(t, pkt(501), &mut c));
        assert!(q.enqueue(t, pkt(500), &mut c));
        assert_eq!(
            (q.len(), q.bytes(), c.dropped_queue, c.dropped),
            (30, 15_000, 2, 2)
        );
    }

    /// Through a node: a byte-limited queue holds many small packets or few large ones; a
    /// packet-limited one the same number of each.
    #[test]
    fn byte_and_packet_limits_through_the_link() {
        let t = t0();
        for (limit, size, accepted) in [
            // One on the wire + 12 000 bytes waiting.
            (QueueLimit::Bytes(12_000), 1200, 1 + 10),
            (QueueLimit::Bytes(12_000), 300, 1 + 40),
            (QueueLimit::Packets(10), 1200, 1 + 10),
            (QueueLimit::Packets(10), 300, 1 + 10),
        ] {
            let mut b = Bench::new(rate_node(1_000_000, limit, Aqm::DropTail), 1);
            for _ in 0..100 {
                b.push(t, size);
            }
            b.drain();
            assert_eq!(b.exits.len(), accepted, "{limit} with {size}-byte packets");
            assert_eq!(b.counters.dropped_queue as usize, 100 - accepted);
        }
    }

    fn sojourns(b: &Bench<RateNode>, s: f64) -> Vec<f64> {
        // Time in the queue: delay less the packet's own serialization.
        b.exits.iter().map(|e| e.delay() - s).collect()
    }

    fn percentile(v: &[f64], p: f64) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p) as usize]
    }

    /// Reno-like senders (window of packets clocked by acknowledgments one base RTT after
    /// their exit; +1 packet per window per RTT, halved once per RTT on loss, learnt one base
    /// RTT after the drop) keep the link overloaded: the queue's sojourn times, in the second
    /// half of the run, and the link's utilization.
    fn reno_through(aqm: Aqm, q: usize, flows: usize, secs: u64) -> (Vec<f64>, f64, Counters) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let t = t0();
        let (rate, size) = (12_000_000u64, 1500usize);
        let s = 1e-3;
        let base_rtt = ms(40);
        let end = t + Duration::from_secs(secs);
        let mut b = Bench::new(rate_node(rate, QueueLimit::Packets(q), aqm), 1);
        // Per flow: window, packets in flight, when losses are next heeded.
        let mut cwnd = vec![2.0f64; flows];
        // The first event of each flow acts as an acknowledgment of nothing.
        let mut inflight = vec![1usize; flows];
        let mut heed_after = vec![t; flows];
        let mut flow_of = std::collections::HashMap::new();
        // (instant, flow, is_loss)
        let mut events: BinaryHeap<Reverse<(Instant, usize, bool)>> = BinaryHeap::new();
        for f in 0..flows {
            events.push(Reverse((
                t + Duration::from_micros(f as u64 * 100),
                f,
                false,
            )));
        }
        let mut seen = 0;
        loop {
            let next_event = events.peek().map(|Reverse((at, _, _))| *at);
            let next = match (next_event, b.node.poll_timeout()) {
                (Some(e), Some(n)) => e.min(n),
                (e, n) => e.or(n).expect("something is always due"),
            };
            if next > end {
                break;
            }
            let now = next;
            let dropped_before = b.counters.dropped;
            b.run_until(now);
            for e in &b.exits[seen..] {
                events.push(Reverse((e.left + base_rtt, flow_of[&e.id], false)));
            }
            seen = b.exits.len();
            // Losses at dequeue (CoDel) are learnt a base RTT later; the node does not say
            // which packets it dropped, so the losses are shared out among the flows in turn.
            for k in dropped_before..b.counters.dropped {
                let f = k as usize % flows;
                events.push(Reverse((now + base_rtt, f, true)));
            }
            while let Some(Reverse((at, f, loss))) = events.peek().copied() {
                if at > now {
                    break;
                }
                events.pop();
                inflight[f] = inflight[f].saturating_sub(1);
                if loss {
                    if at >= heed_after[f] {
                        cwnd[f] = (cwnd[f] / 2.0).max(2.0);
                        let rtt =
                            base_rtt + Duration::from_secs_f64(b.node.queue().len() as f64 * s);
                        heed_after[f] = at + rtt;
                    }
                } else {
                    cwnd[f] += 1.0 / cwnd[f];
                }
                while (inflight[f] as f64) < cwnd[f] {
                    let before = b.counters.dropped;
                    let id = b.push(now, size);
                    flow_of.insert(id, f);
                    inflight[f] += 1;
                    for _ in before..b.counters.dropped {
                        events.push(Reverse((now + base_rtt, f, true)));
                    }
                }
            }
        }
        let half = t + Duration::from_secs(secs / 2);
        let so: Vec<f64> = b
            .exits
            .iter()
            .filter(|e| e.left >= half)
            .map(|e| e.delay() - s)
            .collect();
        let util = so.len() as f64 * s / (secs - secs / 2) as f64;
        (so, util, b.counters)
    }

    /// Sustained overload by responsive (Reno-like) senders: CoDel keeps the standing queue
    /// near its 5 ms target; drop-tail lets it grow to the queue limit.
    #[test]
    fn codel_keeps_the_standing_queue_near_target_and_drop_tail_does_not() {
        // 300 packets (300 ms): deep enough for bufferbloat, shallow enough for Reno to fill
        // within the run (it grows by one packet per RTT, and the RTT grows with the queue).
        let (q, s) = (300usize, 1e-3);
        let (so, util, c) = reno_through(Aqm::Codel, q, 4, 120);
        let (median, p90) = (percentile(&so, 0.5), percentile(&so, 0.9));
        eprintln!(
            "codel (4 Reno flows): sojourn median {:.2} ms, p90 {:.2} ms; utilization {:.3}; \
             drops aqm {} queue {} of {}",
            median * 1e3,
            p90 * 1e3,
            util,
            c.dropped_aqm,
            c.dropped_queue,
            c.packets
        );
        assert!(
            c.dropped_aqm > 0 && c.dropped_queue == 0,
            "CoDel, not the limit, drops"
        );
        assert!(
            median < 0.010,
            "CoDel median sojourn {median} s (bound 10 ms, target 5 ms)"
        );
        assert!(p90 < 0.025, "CoDel p90 sojourn {p90} s (bound 25 ms)");
        assert!(
            util > 0.9,
            "CoDel keeps the link busy: utilization {util} (bound 0.9)"
        );
        let (so, util, c) = reno_through(Aqm::DropTail, q, 4, 120);
        let (median, max) = (percentile(&so, 0.5), percentile(&so, 1.0));
        eprintln!(
            "droptail (4 Reno flows): sojourn median {:.2} ms, max {:.2} ms; utilization {:.3}; \
             drops queue {}",
            median * 1e3,
            max * 1e3,
            util,
            c.dropped_queue
        );
        let full = q as f64 * s;
        assert!(c.dropped_queue > 0 && c.dropped_aqm == 0);
        assert!(
            (max - full).abs() <= s,
            "drop-tail max sojourn {max} s vs Q·S {full} s (± S)"
        );
        assert!(
            median > full / 3.0,
            "drop-tail median sojourn {median} s (bound > Q·S/3)"
        );
        assert!(util > 0.99, "utilization {util}");
    }

    /// An unresponsive flow at 1.2× the rate: CoDel drops the excess (1/6 of the packets), but
    /// its control law, made for flows that slow down, lets the sojourn swing in a sawtooth of
    /// a few seconds between ~10 ms and ~170 ms; drop-tail holds it at the limit.
    #[test]
    fn codel_against_an_unresponsive_overload() {
        let t = t0();
        let (rate, size, q) = (12_000_000u64, 1500usize, 1000usize);
        let s = 1e-3;
        let n = 150_000u64;
        let mut results = Vec::new();
        for aqm in [Aqm::Codel, Aqm::DropTail] {
            let mut b = Bench::new(rate_node(rate, QueueLimit::Packets(q), aqm), 1);
            for i in 0..n {
                // 1.2 packets per ms for a link of 1 per ms.
                b.push(t + Duration::from_nanos(833_333 * i), size);
            }
            b.drain();
            let so = sojourns(&b, s);
            // The second half: past CoDel's ramp-up and drop-tail's filling.
            let tail = &so[so.len() / 2..];
            let (median, max) = (percentile(tail, 0.5), percentile(tail, 1.0));
            eprintln!(
                "{aqm} (unresponsive 1.2x): sojourn median {:.2} ms, max {:.2} ms; \
                 drops aqm {} queue {} of {n}",
                median * 1e3,
                max * 1e3,
                b.counters.dropped_aqm,
                b.counters.dropped_queue,
            );
            results.push((median, max, b.counters));
        }
        let (median, max, c) = results[0];
        let share = c.dropped_aqm as f64 / n as f64;
        assert!(
            (share - 1.0 / 6.0).abs() < 0.005,
            "CoDel drops {share} (1/6 ± 0.005)"
        );
        assert!(
            median < 0.2 && max < 0.3,
            "CoDel sojourn median {median} s, max {max} s"
        );
        let (median, _, c) = results[1];
        let full = q as f64 * s;
        assert!(
            c.dropped_aqm == 0 && (median - full).abs() <= s,
            "drop-tail {median} s"
        );
    }

    /// CoDel does nothing to a queue that stays below its target.
    #[test]
    fn codel_is_quiet_below_target() {
        let t = t0();
        let mut b = Bench::new(
            rate_node(8_000_000, QueueLimit::Packets(100), Aqm::Codel),
            1,
        );
        // Bursts of 4 packets every 10 ms: at most 3 ms of queueing.
        for i in 0..20_000u64 {
            b.push(t + ms(10 * (i / 4)), 1000);
        }
        b.drain();
        assert_eq!(b.counters.dropped, 0);
        assert_eq!(b.exits.len(), 20_000);
    }

    #[test]
    fn a_rate_change_applies_from_the_next_packet() {
        let t = t0();
        let mut b = Bench::new(
            rate_node(10_000_000, QueueLimit::Packets(10), Aqm::DropTail),
            1,
        );
        b.push(t, 1250); // 1 ms at 10 Mbit/s
        b.push(t, 1250);
        b.run_until(t + Duration::from_micros(500));
        b.node.set_config(RateConfig {
            rate_bps: 5_000_000,
            ..b.node.config()
        });
        b.drain();
        let left: Vec<_> = b.exits.iter().map(|e| e.left - t).collect();
        // The first keeps its 1 ms, the second takes 2 ms at the new rate.
        assert_eq!(left, [ms(1), ms(3)]);
        assert_eq!(b.node.queue().len(), 0);
    }

    #[test]
    fn a_smaller_limit_keeps_queued_packets_and_refuses_arrivals() {
        let t = t0();
        let mut b = Bench::new(
            rate_node(1_000_000, QueueLimit::Packets(10), Aqm::DropTail),
            1,
        );
        for _ in 0..6 {
            b.push(t, 100);
        }
        b.node.set_config(RateConfig {
            queue: QueueLimit::Packets(2),
            ..b.node.config()
        });
        b.push(t, 100);
        assert_eq!(b.counters.dropped_queue, 1);
        b.drain();
        assert_eq!(b.exits.len(), 6);
    }

    #[derive(Debug, Clone)]
    struct Op {
        gap_us: u64,
        size: usize,
        poll_first: bool,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            (0u64..4000, 0usize..3000, any::<bool>()).prop_map(|(gap_us, size, poll_first)| Op {
                gap_us,
                size,
                poll_first,
            }),
            1..150,
        )
    }

    pub(crate) fn limits() -> impl Strategy<Value = QueueLimit> {
        prop_oneof![
            (0usize..20).prop_map(QueueLimit::Packets),
            (0usize..20_000).prop_map(QueueLimit::Bytes)
        ]
    }

    pub(crate) fn aqms() -> impl Strategy<Value = Aqm> {
        prop_oneof![Just(Aqm::DropTail), Just(Aqm::Codel)]
    }

    /// Checks what came out: FIFO, never before it entered, each packet at most once, all
    /// accounted for, exit instants non-decreasing.
    pub(crate) fn check_exits<N: Node>(b: &Bench<N>) -> Result<(), TestCaseError> {
        let mut prev: Option<Exit> = None;
        for e in &b.exits {
            prop_assert!(e.left >= e.entered, "left before it entered: {e:?}");
            if let Some(p) = prev {
                prop_assert!(
                    e.id > p.id,
                    "out of order or twice: {} after {}",
                    e.id,
                    p.id
                );
                prop_assert!(e.left >= p.left, "exit instants go back: {e:?} after {p:?}");
            }
            prev = Some(*e);
        }
        prop_assert_eq!(b.exits.len() as u64 + b.counters.dropped, b.pushed());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn rate_node_is_fifo_causal_and_bounded(
            rate in 100_000u64..20_000_000,
            limit in limits(),
            aqm in aqms(),
            ops in ops(),
        ) {
            let t = t0();
            let mut b = Bench::new(rate_node(rate, limit, aqm), 3);
            let mut at = t;
            for op in &ops {
                at += Duration::from_micros(op.gap_us);
                if op.poll_first {
                    b.run_until(at);
                }
                b.push(at, op.size);
                let q = b.node.queue();
                prop_assert!(limit.holds(q.len(), q.bytes()), "{limit}: {} packets, {} bytes", q.len(), q.bytes());
            }
            b.drain();
            prop_assert_eq!(b.node.poll_timeout(), None);
            check_exits(&b)?;
        }
    }
}
