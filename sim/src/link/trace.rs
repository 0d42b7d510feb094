//! Variable capacity: a bottleneck that delivers at measured instants (Mahimahi traces of
//! cellular links) or at random ones (Poisson), fed by the same bounded [`Queue`] as the
//! fixed-rate link.
//!
//! # Traces
//! A Mahimahi trace has one integer millisecond timestamp per line; each line is one delivery
//! opportunity of [`OPPORTUNITY_BYTES`] bytes, several lines with the same timestamp are several
//! opportunities in that millisecond, timestamps never decrease, and the trace repeats with a
//! period equal to its last timestamp (so an opportunity at `t` recurs at `t + k·period`). The
//! parser follows Mahimahi's `mm-link`, so that a trace accepted here is accepted there:
//! - a blank line is refused (including trailing blank lines; the final newline is fine);
//!   spaces and tabs around a number and a `\r` before the `\n` are tolerated;
//! - a trace with no line is refused, and so is one whose last timestamp is 0 (no duration);
//! - a first timestamp of 0 is allowed: that opportunity coincides with the previous period's
//!   last one.
//!
//! # Byte accounting (as Mahimahi's `LinkQueue`)
//! An opportunity carries up to 1500 bytes: several small packets, or part of a large packet
//! that completes at a later opportunity. A packet leaves at the instant of the opportunity that
//! completes it. Unused bytes of an opportunity are lost; opportunities do not accumulate while
//! the queue is empty. A packet can only use opportunities strictly after its arrival (Mahimahi
//! spends the opportunities due by `now` before it enqueues a packet arriving at `now`).
//!
//! The packet being carried has left the queue and does not count toward its limit (Mahimahi's
//! packet in transit). CoDel, if chosen, judges a packet when an opportunity starts carrying it.
//!
//! # Cost
//! Parsing scans bytes: 1 M lines in about 20 ms (release build, 2 cores; 160 ms in debug).
//! The node does O(1) work per opportunity it uses and O(log n) (a binary search in the trace)
//! to find the first opportunity after an idle spell, however long: a 78 s outage or hours of
//! idleness are a jump, not a loop.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::rate::{Aqm, ConfigError, Queue, QueueLimit};
use super::{Counters, Ctx, Node, Packet, SimRng, after};

/// Bytes one delivery opportunity carries (Mahimahi's MTU-sized packet).
pub const OPPORTUNITY_BYTES: usize = 1500;

/// The longest text of a bad line quoted in an error.
const QUOTE: usize = 40;

/// Why a trace could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error(
        "{file}: cannot read the trace: {error}; check the path (the Mahimahi traces are in \
         shared/traces/mahimahi)"
    )]
    Unreadable {
        /// The file.
        file: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A line does not hold a non-negative integer.
    #[error(
        "{file}:{line}: `{text}` is not a timestamp; each line must hold one non-negative integer \
         number of milliseconds, e.g. `42`"
    )]
    NotANumber {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// The line's text (cut at 40 characters).
        text: String,
    },
    /// A blank line.
    #[error(
        "{file}:{line}: blank line; remove it (every line is one delivery opportunity, and \
         Mahimahi refuses blank lines too)"
    )]
    BlankLine {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
    },
    /// A timestamp smaller than the previous line's.
    #[error(
        "{file}:{line}: timestamp {ms} ms comes after {prev} ms; timestamps must not decrease \
         (sort the file numerically: `sort -n`)"
    )]
    Decreasing {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// Its timestamp.
        ms: u64,
        /// The previous line's.
        prev: u64,
    },
    /// No line at all.
    #[error(
        "{file}: empty trace; give at least one line (the one-line trace `1` is a constant \
         12 Mbit/s link)"
    )]
    Empty {
        /// The file.
        file: String,
    },
    /// The last timestamp is 0, so the trace has no period.
    #[error(
        "{file}:{line}: the last timestamp is 0, so the trace lasts no time and cannot repeat; \
         end it with a positive timestamp (the one-line trace `1` is a constant 12 Mbit/s link)"
    )]
    ZeroPeriod {
        /// The file.
        file: String,
        /// The last line, from 1.
        line: usize,
    },
}

/// A link-capacity trace in Mahimahi's format: the delivery opportunities of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    name: String,
    /// One timestamp (ms) per opportunity, non-decreasing; the last is the period, > 0.
    ms: Vec<u64>,
}

impl Trace {
    /// Parses Mahimahi text; `name` (a file name) labels the errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, TraceError> {
        Self::parse_bytes(text.as_bytes(), name)
    }

    /// Reads and parses a Mahimahi trace file.
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let file = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => Self::parse_bytes(&bytes, &file),
            Err(error) => Err(TraceError::Unreadable { file, error }),
        }
    }

    /// Parses bytes (not necessarily UTF-8: a binary file fails on its first line).
    fn parse_bytes(bytes: &[u8], name: &str) -> Result<Self, TraceError> {
        let file = || name.to_owned();
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if body.is_empty() {
            return Err(TraceError::Empty { file: file() });
        }
        // A typical line is "12345\n".
        let mut ms: Vec<u64> = Vec::with_capacity(bytes.len() / 6 + 1);
        for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_ascii();
            if trimmed.is_empty() {
                return Err(TraceError::BlankLine { file: file(), line });
            }
            let mut value: u64 = 0;
            for &b in trimmed {
                let digit = b.wrapping_sub(b'0');
                let next = if digit < 10 {
                    value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(digit)))
                } else {
                    None
                };
                let Some(next) = next else {
                    let text = String::from_utf8_lossy(trimmed)
                        .chars()
                        .take(QUOTE)
                        .collect();
                    return Err(TraceError::NotANumber {
                        file: file(),
                        line,
                        text,
                    });
                };
                value = next;
            }
            if let Some(&prev) = ms.last()
                && value < prev
            {
                return Err(TraceError::Decreasing {
                    file: file(),
                    line,
                    ms: value,
                    prev,
                });
            }
            ms.push(value);
        }
        if ms.last() == Some(&0) {
            return Err(TraceError::ZeroPeriod {
                file: file(),
                line: ms.len(),
            });
        }
        ms.shrink_to_fit();
        Ok(Self {
            name: name.to_owned(),
            ms,
        })
    }

    /// The name given to [`parse`](Self::parse), or the path given to [`load`](Self::load).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The period: the last timestamp.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms())
    }

    fn period_ms(&self) -> u64 {
        // Never empty (the parser refuses it); the fallback keeps the arithmetic safe anyway.
        self.ms.last().copied().unwrap_or(1).max(1)
    }

    /// Delivery opportunities per period (lines).
    pub fn opportunities(&self) -> usize {
        self.ms.len()
    }

    /// The timestamps (ms), one per opportunity.
    pub fn timestamps(&self) -> &[u64] {
        &self.ms
    }

    /// The mean capacity, bit/s: opportunities × 1500 bytes × 8 per period.
    pub fn mean_bps(&self) -> f64 {
        self.ms.len() as f64 * (OPPORTUNITY_BYTES * 8) as f64 / self.period().as_secs_f64()
    }
}

/// Where a variable-capacity link's delivery opportunities come from.
#[derive(Debug, Clone)]
pub enum Capacity {
    /// A trace, entered `start` into its period (`start` may exceed the period: it wraps).
    Trace {
        /// The trace.
        trace: Arc<Trace>,
        /// How far into the trace the link starts.
        start: Duration,
    },
    /// Opportunities at the instants of a Poisson process, of mean rate `rate_bps` (exponential
    /// gaps of mean 1500·8/`rate_bps` seconds).
    Poisson {
        /// Mean capacity, bit/s.
        rate_bps: u64,
    },
}

impl Capacity {
    /// The mean capacity, bit/s.
    pub fn mean_bps(&self) -> f64 {
        match self {
            Self::Trace { trace, .. } => trace.mean_bps(),
            Self::Poisson { rate_bps } => *rate_bps as f64,
        }
    }

    /// Whether two capacities are the same process (same trace and start, or same rate).
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Trace { trace: a, start: s }, Self::Trace { trace: b, start: t }) => {
                (Arc::ptr_eq(a, b) || a == b) && s == t
            }
            (Self::Poisson { rate_bps: a }, Self::Poisson { rate_bps: b }) => a == b,
            _ => false,
        }
    }
}

/// A bottleneck of variable capacity.
#[derive(Debug, Clone)]
pub struct CapacityConfig {
    /// Where the delivery opportunities come from.
    pub capacity: Capacity,
    /// The queue's bound.
    pub queue: QueueLimit,
    /// The queue's AQM.
    pub aqm: Aqm,
}

impl CapacityConfig {
    /// Refuses a Poisson rate of 0 and a queue limit of 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.capacity, Capacity::Poisson { rate_bps: 0 }) {
            return Err(ConfigError::ZeroRate);
        }
        if self.queue.is_zero() {
            return Err(ConfigError::ZeroQueue(self.queue));
        }
        Ok(())
    }
}

/// A position in a looping trace: the `index`-th line of period number `cycle`.
#[derive(Debug, Clone)]
struct TraceClock {
    trace: Arc<Trace>,
    start: Duration,
    /// The instant at which the trace is `start` in; set by the first instant the node sees.
    origin: Option<Instant>,
    /// The next opportunity not yet used (or skipped).
    cycle: u64,
    index: usize,
}

impl TraceClock {
    /// The instant of the opportunity under the cursor (`None` past the end of `Instant`).
    fn instant(&self) -> Option<Instant> {
        let ms = self.trace.ms.get(self.index)?;
        let abs = self
            .cycle
            .checked_mul(self.trace.period_ms())?
            .checked_add(*ms)?;
        let offset = Duration::from_millis(abs).checked_sub(self.start)?;
        self.origin?.checked_add(offset)
    }

    /// Moves the cursor to the first opportunity strictly after `at`, unless it is already
    /// further: O(log n) whatever the time skipped.
    fn seek_after(&mut self, at: Instant) {
        let origin = *self.origin.get_or_insert(at);
        let tau = self
            .start
            .saturating_add(at.saturating_duration_since(origin));
        let tau_ms = u64::try_from(tau.as_millis()).unwrap_or(u64::MAX);
        let period = self.trace.period_ms();
        let (mut cycle, rem) = (tau_ms / period, tau_ms % period);
        // An opportunity at `k·period + ms` is after `tau` iff `ms > rem` (whole ms).
        let mut index = self.trace.ms.partition_point(|&ms| ms <= rem);
        if index == self.trace.ms.len() {
            // Not reached (the last timestamp is the period, > rem), kept for safety.
            cycle += 1;
            index = 0;
        }
        if (cycle, index) > (self.cycle, self.index) {
            (self.cycle, self.index) = (cycle, index);
        }
    }

    /// Moves past the opportunity under the cursor.
    fn step(&mut self) {
        self.index += 1;
        if self.index >= self.trace.ms.len() {
            self.index = 0;
            self.cycle += 1;
        }
    }
}

/// The opportunity process in force.
#[derive(Debug, Clone)]
enum Source {
    Trace(TraceClock),
    Poisson { rate_bps: u64 },
}

impl Source {
    fn new(capacity: &Capacity, origin: Option<Instant>) -> Self {
        match capacity {
            Capacity::Trace { trace, start } => Self::Trace(TraceClock {
                trace: Arc::clone(trace),
                start: *start,
                origin,
                cycle: 0,
                index: 0,
            }),
            Capacity::Poisson { rate_bps } => Self::Poisson {
                rate_bps: *rate_bps,
            },
        }
    }

    /// The first opportunity strictly after `at` (for a trace, not one already used).
    fn first_after(&mut self, at: Instant, rng: &mut SimRng) -> Option<Instant> {
        match self {
            Self::Trace(clock) => {
                clock.seek_after(at);
                clock.instant()
            }
            // Memoryless: the wait from any instant is exponential.
            Self::Poisson { rate_bps } => poisson_gap(at, *rate_bps, rng),
        }
    }

    /// The opportunity after the one just used at `at`.
    fn following(&mut self, at: Instant, rng: &mut SimRng) -> Option<Instant> {
        match self {
            Self::Trace(clock) => clock.instant(),
            Self::Poisson { rate_bps } => poisson_gap(at, *rate_bps, rng),
        }
    }

    /// Marks the opportunity at the cursor as used.
    fn used(&mut self) {
        if let Self::Trace(clock) = self {
            clock.step();
        }
    }

    /// Notes the first instant the node sees, the trace's origin if not yet set.
    fn touch(&mut self, now: Instant) {
        if let Self::Trace(clock) = self {
            clock.origin.get_or_insert(now);
        }
    }
}

/// `at` plus an exponential gap of mean 1500·8/`rate_bps` s; `None` for a rate of 0.
fn poisson_gap(at: Instant, rate_bps: u64, rng: &mut SimRng) -> Option<Instant> {
    if rate_bps == 0 {
        return None;
    }
    let mean = (OPPORTUNITY_BYTES * 8) as f64 / rate_bps as f64;
    // 1 - U is in (0, 1], so the logarithm is finite.
    let u = 1.0 - rng.random::<f64>();
    Some(after(at, -u.ln() * mean))
}

/// A bottleneck whose capacity comes in delivery opportunities of 1500 bytes, at a trace's
/// instants or a Poisson process's, behind a [`Queue`].
///
/// A trace starts (at `start` into it) at the first instant the node sees, pushed or polled;
/// [`with_origin`](Self::with_origin) sets that instant. With a Poisson rate of 0 (refused by
/// [`CapacityConfig::validate`]) or past the end of `Instant`, queued packets never leave.
#[derive(Debug)]
pub struct CapacityNode {
    cfg: CapacityConfig,
    source: Source,
    queue: Queue,
    /// The packet partly carried and the bytes it still needs.
    in_transit: Option<(Packet, usize)>,
    /// The next opportunity; set while packets wait (or are in transit), else `None`.
    next: Option<Instant>,
    /// The capacity changed at this instant while packets waited: the next opportunity is to be
    /// found from the new process.
    resched: Option<Instant>,
    /// The latest instant the node has seen.
    last_seen: Option<Instant>,
    out: VecDeque<(Instant, Packet)>,
}

impl CapacityNode {
    /// An idle link with an empty queue; a trace starts at the first instant the node sees.
    pub fn new(cfg: CapacityConfig) -> Self {
        Self {
            source: Source::new(&cfg.capacity, None),
            queue: Queue::new(cfg.queue, cfg.aqm),
            cfg,
            in_transit: None,
            next: None,
            resched: None,
            last_seen: None,
            out: VecDeque::new(),
        }
    }

    /// An idle link whose trace is at `start` at `origin`.
    pub fn with_origin(cfg: CapacityConfig, origin: Instant) -> Self {
        let mut node = Self::new(cfg);
        node.source.touch(origin);
        node
    }

    /// The configuration in force.
    pub fn config(&self) -> &CapacityConfig {
        &self.cfg
    }

    /// The queue (packets waiting; a packet partly carried has left it).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Changes the capacity, queue limit and AQM, keeping the queued packets and the bytes a
    /// packet in transit still needs. A new capacity process (another trace or start, another
    /// rate) takes over from the latest instant the node has seen, a new trace at its `start`;
    /// so apply a change after polling the node up to the change's instant. Changing only the
    /// queue keeps the capacity process where it is.
    pub fn set_config(&mut self, cfg: CapacityConfig) {
        self.queue.set_limit(cfg.queue);
        self.queue.set_aqm(cfg.aqm);
        if !cfg.capacity.same(&self.cfg.capacity) {
            // Before any push or poll, a trace set by `with_origin` keeps its origin.
            let origin = self.last_seen.or(match &self.source {
                Source::Trace(clock) => clock.origin,
                Source::Poisson { .. } => None,
            });
            self.source = Source::new(&cfg.capacity, origin);
            if self.busy() {
                self.resched = self.last_seen;
            }
        }
        self.cfg = cfg;
    }

    fn busy(&self) -> bool {
        self.in_transit.is_some() || !self.queue.is_empty()
    }

    fn touch(&mut self, now: Instant) {
        self.source.touch(now);
        self.last_seen = Some(self.last_seen.map_or(now, |l| l.max(now)));
    }

    /// Uses the opportunity at `at`: up to 1500 bytes of the packet in transit and the queued
    /// ones after it; what is left of the opportunity is lost.
    fn serve(&mut self, at: Instant, counters: &mut Counters) {
        let mut room = OPPORTUNITY_BYTES;
        loop {
            let (pkt, left) = match self.in_transit.take() {
                Some(partial) => partial,
                None if room == 0 => break,
                None => match self.queue.dequeue(at, counters) {
                    Some((_, pkt)) => {
                        let len = pkt.data.len();
                        (pkt, len)
                    }
                    None => break,
                },
            };
            let carried = left.min(room);
            room -= carried;
            if left == carried {
                self.out.push_back((at, pkt));
            } else {
                self.in_transit = Some((pkt, left - carried));
                break;
            }
        }
    }

    /// Plays the link up to `now` (inclusive): every opportunity due while packets wait.
    fn advance(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if let Some(at) = self.resched.take() {
            self.next = if self.busy() {
                self.source.first_after(at, ctx.rng)
            } else {
                None
            };
        }
        while let Some(at) = self.next.filter(|at| *at <= now) {
            self.serve(at, ctx.counters);
            self.source.used();
            self.next = if self.busy() {
                self.source.following(at, ctx.rng)
            } else {
                None
            };
        }
    }
}

impl Node for CapacityNode {
    fn push(&mut self, now: Instant, pkt: Packet, ctx: &mut Ctx<'_>) {
        self.touch(now);
        self.advance(now, ctx);
        let was_busy = self.busy();
        if self.queue.enqueue(now, pkt, ctx.counters) && !was_busy {
            self.next = self.source.first_after(now, ctx.rng);
        }
    }

    fn poll(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<(Instant, Packet)> {
        self.touch(now);
        self.advance(now, ctx);
        if self.out.front().is_some_and(|(at, _)| *at <= now) {
            self.out.pop_front()
        } else {
            None
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if let Some((at, _)) = self.out.front() {
            return Some(*at);
        }
        self.resched.or(self.next)
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::rate::tests::{Bench, aqms, check_exits, limits};
    use crate::link::tests::t0;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn trace(text: &str) -> Arc<Trace> {
        Arc::new(Trace::parse(text, "test").unwrap())
    }

    fn trace_node(trace: Arc<Trace>, start: Duration, queue: QueueLimit) -> CapacityNode {
        let capacity = Capacity::Trace { trace, start };
        CapacityNode::new(CapacityConfig {
            capacity,
            queue,
            aqm: Aqm::DropTail,
        })
    }

    fn left_ms(b: &Bench<CapacityNode>, t: Instant) -> Vec<u128> {
        b.exits.iter().map(|e| (e.left - t).as_millis()).collect()
    }

    /// The directory of the Mahimahi traces, if present.
    fn shared_traces() -> Option<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/mahimahi");
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("SKIPPED: {} is absent (CI has it)", dir.display());
            None
        }
    }

    #[test]
    fn parses_counts_and_periods() {
        let tr = Trace::parse("1\n1\n3\r\n 4\t\n", "x").unwrap();
        assert_eq!(tr.timestamps(), [1, 1, 3, 4]);
        assert_eq!(tr.period(), ms(4));
        assert_eq!(tr.opportunities(), 4);
        // 4 × 12 000 bits in 4 ms.
        assert!((tr.mean_bps() - 12e6).abs() < 1e-6);
        // No final newline; a first timestamp of 0.
        assert_eq!(Trace::parse("0\n5", "x").unwrap().timestamps(), [0, 5]);
    }

    #[test]
    fn parse_errors_name_the_line_and_the_fix() {
        let err = |text: &str| Trace::parse(text, "cell.up").unwrap_err();
        let e = err("1\n2\nabc\n4\n");
        assert!(matches!(e, TraceError::NotANumber { line: 3, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("cell.up:3:") && msg.contains("`abc`"),
            "{msg}"
        );
        let e = err("1\n-2\n");
        assert!(matches!(e, TraceError::NotANumber { line: 2, .. }), "{e:?}");
        let e = err("1\n99999999999999999999999\n");
        assert!(matches!(e, TraceError::NotANumber { line: 2, .. }), "{e:?}");
        let e = err("1\n5\n4\n");
        assert!(
            matches!(
                e,
                TraceError::Decreasing {
                    line: 3,
                    ms: 4,
                    prev: 5,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("sort -n"), "{e}");
        assert!(matches!(err(""), TraceError::Empty { .. }));
        assert!(matches!(err("\n"), TraceError::Empty { .. }));
        assert!(err("").to_string().contains("cell.up: empty trace"));
        let e = err("1\n\n2\n");
        assert!(matches!(e, TraceError::BlankLine { line: 2, .. }), "{e:?}");
        let e = err("1\n2\n\n");
        assert!(matches!(e, TraceError::BlankLine { line: 3, .. }), "{e:?}");
        let e = err("0\n0\n");
        assert!(matches!(e, TraceError::ZeroPeriod { line: 2, .. }), "{e:?}");
        let e = Trace::load(Path::new("/nonexistent/x.up")).unwrap_err();
        assert!(matches!(e, TraceError::Unreadable { .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("/nonexistent/x.up: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn loads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.up");
        std::fs::write(&path, "2\n4\n").unwrap();
        let tr = Trace::load(&path).unwrap();
        assert_eq!(
            (tr.timestamps(), tr.name()),
            ([2, 4].as_slice(), path.display().to_string().as_str())
        );
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let e = Trace::load(&path).unwrap_err();
        assert!(matches!(e, TraceError::NotANumber { line: 1, .. }), "{e:?}");
    }

    #[test]
    fn parses_a_real_trace_fast() {
        let Some(dir) = shared_traces() else { return };
        let path = dir.join("TMobile-LTE-short.up");
        let tr = Trace::load(&path).unwrap();
        // README: 140 s, mean 13.32 Mbit/s.
        assert_eq!(tr.period().as_secs(), 140);
        assert!(
            (tr.mean_bps() / 1e6 - 13.32).abs() < 0.01,
            "{}",
            tr.mean_bps()
        );
        let big = dir.join("TMobile-LTE-driving.down");
        assert!(Trace::load(&big).unwrap().opportunities() > 400_000);
    }

    #[test]
    fn opportunities_are_the_trace_instants_from_start_and_loop() {
        let t = t0();
        let tr = trace("10\n20\n30\n100\n");
        // 25 ms in: opportunities at 30, 100, then 110, 120, 130, 200... (trace time).
        let mut b = Bench::new(trace_node(tr, ms(25), QueueLimit::Packets(100)), 1);
        for _ in 0..9 {
            b.push(t, 1500);
        }
        b.drain();
        let expected: Vec<u128> = [30, 100, 110, 120, 130, 200, 210, 220, 230]
            .iter()
            .map(|x| x - 25)
            .collect();
        assert_eq!(left_ms(&b, t), expected);
        // A start past the period wraps: 125 ms is 25 ms in.
        let mut b = Bench::new(
            trace_node(trace("10\n20\n30\n100\n"), ms(125), QueueLimit::Packets(5)),
            1,
        );
        b.push(t, 1500);
        b.drain();
        assert_eq!(left_ms(&b, t), [5]);
    }

    #[test]
    fn an_opportunity_at_the_arrival_instant_is_not_used() {
        let t = t0();
        let mut b = Bench::new(
            trace_node(trace("10\n20\n"), ms(0), QueueLimit::Packets(5)),
            1,
        );
        b.push(t, 100); // sets the origin
        b.push(t + ms(10), 100); // the opportunity at 10 carries the first, not this one
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 20]);
    }

    #[test]
    fn byte_accounting() {
        let t = t0();
        let tr = trace("10\n20\n30\n40\n50\n60\n100\n");
        let node = || trace_node(Arc::clone(&tr), Duration::ZERO, QueueLimit::Packets(100));
        // Three 500-byte packets share one opportunity; the fourth waits for the next.
        let mut b = Bench::new(node(), 1);
        for _ in 0..4 {
            b.push(t, 500);
        }
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 10, 10, 20]);
        // A 3000-byte packet needs two; a packet after it starts on a fresh opportunity.
        let mut b = Bench::new(node(), 1);
        b.push(t, 3000);
        b.push(t, 500);
        b.drain();
        assert_eq!(left_ms(&b, t), [20, 30]);
        // 1000 + 1000: the second's first 500 bytes ride with the first.
        let mut b = Bench::new(node(), 1);
        b.push(t, 1000);
        b.push(t, 1000);
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 20]);
        // Unused bytes are lost: 500 at 10 leaves 1000 unused; a 1500 at 15 waits for 20.
        let mut b = Bench::new(node(), 1);
        b.push(t, 500);
        b.push(t + ms(15), 1500);
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 20]);
        // Idle opportunities do not accumulate: after 45 ms idle, 3000 bytes take 50 and 60.
        let mut b = Bench::new(node(), 1);
        b.push(t, 1);
        b.push(t + ms(45), 3000);
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 60]);
    }

    #[test]
    fn a_long_outage_and_a_long_idle_spell_are_jumps() {
        let t = t0();
        // ATT-LTE-driving.up has a 78 s outage: one opportunity, then none for 78.3 s.
        let mut b = Bench::new(
            trace_node(trace("1\n78320\n"), ms(0), QueueLimit::Packets(5)),
            1,
        );
        b.push(t, 1500);
        b.push(t + ms(2), 1500);
        b.run_until(t + ms(2));
        assert_eq!(b.node.poll_timeout(), Some(t + ms(78_320)));
        // Idle for ~3 years of 78 s periods: the next opportunity is found at once.
        let late = t + Duration::from_secs(100_000_000);
        b.drain();
        b.push(late, 10);
        let next = b.node.poll_timeout().unwrap();
        let period = 78_320u64;
        let into = (late - t).as_millis() as u64 % period; // where `late` falls in its period
        // Opportunities at 1 and at 78 320 (= 0 of the next period) ms into each period.
        let expected = if into == 0 { 1 } else { period - into };
        let got = (next - late).as_millis() as u64;
        assert!(
            got.abs_diff(expected) <= 1,
            "next opportunity {got} ms after, expected {expected}"
        );
        assert_eq!(b.exits.len(), 2);
    }

    /// Saturates a capacity node (keeps at least `backlog` packets of 1500 bytes queued) from
    /// `t` for `dur`; returns the bits delivered in `(t, t + dur]`, the exit instants and the
    /// bench.
    fn saturate(
        node: CapacityNode,
        t: Instant,
        dur: Duration,
        seed: u64,
    ) -> (f64, Vec<Instant>, Bench<CapacityNode>) {
        let mut b = Bench::new(node, seed);
        let end = t + dur;
        let mut now = t;
        let mut delivered = 0usize;
        let mut counted = 0;
        let mut lefts = Vec::new();
        loop {
            while b.node.queue().len() < 64 {
                b.push(now, 1500);
            }
            match b.node.poll_timeout() {
                Some(next) if next <= end => {
                    now = next;
                    b.run_until(now);
                }
                _ => break,
            }
            delivered += b.exits[counted..].iter().map(|e| e.len).sum::<usize>();
            lefts.extend(b.exits[counted..].iter().map(|e| e.left));
            counted = b.exits.len();
            // Keep memory flat over ~10^5 packets.
            if b.exits.len() > 10_000 {
                b.exits.clear();
                counted = 0;
            }
        }
        (delivered as f64 * 8.0, lefts, b)
    }

    #[test]
    fn saturated_synthetic_trace_delivers_its_mean() {
        let t = t0();
        // 7 opportunities in 5 ms: 16.8 Mbit/s; 20 000 periods = 140 000 opportunities.
        let tr = trace("0\n1\n1\n1\n3\n5\n5\n");
        let mean = tr.mean_bps();
        assert!((mean - 16.8e6).abs() < 1e-3);
        let dur = tr.period() * 20_000;
        let node = trace_node(tr, Duration::ZERO, QueueLimit::Packets(1000));
        let (bits, _, b) = saturate(node, t, dur, 1);
        let measured = bits / dur.as_secs_f64();
        eprintln!("synthetic trace: {measured:.1} bit/s delivered, mean {mean:.1}");
        assert!(
            (measured - mean).abs() / mean < 1e-9,
            "{measured} vs {mean} (tolerance 1e-9 relative)"
        );
        assert_eq!(b.counters.dropped, 0);
    }

    #[test]
    fn saturated_real_trace_delivers_its_mean() {
        let Some(dir) = shared_traces() else { return };
        let t = t0();
        let tr = Arc::new(Trace::load(&dir.join("Verizon-LTE-short.up")).unwrap());
        let mean = tr.mean_bps();
        // Two periods from 40 s in: 2 × 69 367 opportunities, each used in full.
        let dur = tr.period() * 2;
        let node = trace_node(
            Arc::clone(&tr),
            Duration::from_secs(40),
            QueueLimit::Packets(1000),
        );
        let (bits, _, _) = saturate(node, t, dur, 1);
        let measured = bits / dur.as_secs_f64();
        eprintln!("Verizon-LTE-short.up: {measured:.1} bit/s delivered, trace mean {mean:.1}");
        assert!(
            (measured - mean).abs() / mean < 1e-6,
            "{measured} vs {mean} (tolerance 1e-6 relative)"
        );
        assert!(
            (mean / 1e6 - 5.95).abs() < 0.01,
            "README gives 5.95 Mbit/s, got {mean}"
        );
    }

    #[test]
    fn poisson_capacity_has_its_mean_rate() {
        let t = t0();
        let rate = 6_000_000u64; // 500 opportunities/s
        let capacity = Capacity::Poisson { rate_bps: rate };
        let node = CapacityNode::new(CapacityConfig {
            capacity,
            queue: QueueLimit::Packets(1000),
            aqm: Aqm::DropTail,
        });
        // 240 s: ~120 000 opportunities; the count's standard deviation is 0.29%.
        let dur = Duration::from_secs(240);
        let (bits, _, _) = saturate(node, t, dur, 5);
        let measured = bits / dur.as_secs_f64();
        eprintln!("Poisson capacity: {measured:.1} bit/s delivered, mean {rate}");
        let err = (measured - rate as f64).abs() / rate as f64;
        assert!(
            err < 0.01,
            "{measured} vs {rate} bit/s (tolerance 1%, ~3.5 sigma)"
        );
    }

    #[test]
    fn poisson_gaps_are_exponential() {
        let t = t0();
        let capacity = Capacity::Poisson {
            rate_bps: 12_000_000,
        }; // mean gap 1 ms
        let node = CapacityNode::new(CapacityConfig {
            capacity,
            queue: QueueLimit::Packets(1000),
            aqm: Aqm::DropTail,
        });
        // Saturated, each opportunity carries one packet: the exits are the opportunities.
        let (_, lefts, _) = saturate(node, t, Duration::from_secs(100), 9);
        let gaps: Vec<f64> = lefts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        let cv = var.sqrt() / mean;
        eprintln!(
            "Poisson gaps: mean {:.4} ms (1 ms), CV {cv:.3} (1) over {n}",
            mean * 1e3
        );
        assert!(
            (mean - 1e-3).abs() < 0.04e-3,
            "mean gap {mean} s vs 1 ms (tolerance 4%)"
        );
        assert!((cv - 1.0).abs() < 0.04, "CV {cv} vs 1 (tolerance 0.04)");
    }

    /// The same queue as the fixed-rate link: a constant 12 Mbit/s trace overloaded 1.2× by
    /// 1500-byte packets for 60 s fills a drop-tail queue of 500 packets (500 ms), while CoDel
    /// drops before it fills (its first peak, while its drop rate ramps up, is ~330 ms).
    #[test]
    fn the_queue_drops_at_its_tail_or_by_codel() {
        let t = t0();
        for aqm in [Aqm::DropTail, Aqm::Codel] {
            let capacity = Capacity::Trace {
                trace: trace("1\n"),
                start: Duration::ZERO,
            };
            let cfg = CapacityConfig {
                capacity,
                queue: QueueLimit::Packets(500),
                aqm,
            };
            let mut b = Bench::new(CapacityNode::new(cfg), 1);
            for i in 0..72_000u64 {
                b.push(t + Duration::from_nanos(833_333 * i), 1500);
                assert!(b.node.queue().len() <= 500);
            }
            b.drain();
            let max = b.exits.iter().map(|e| e.delay()).fold(0.0, f64::max);
            let c = b.counters;
            eprintln!(
                "trace 12 Mbit/s, {aqm}: max delay {:.1} ms, dropped queue {} aqm {}",
                max * 1e3,
                c.dropped_queue,
                c.dropped_aqm
            );
            assert_eq!(b.exits.len() as u64 + c.dropped, 72_000);
            match aqm {
                Aqm::DropTail => {
                    assert!(c.dropped_queue > 0 && c.dropped_aqm == 0);
                    // A packet admitted as the 500th waits for 500 opportunities, 1 ms apart,
                    // the first less than 1 ms away: (499, 500] ms.
                    assert!(
                        (0.499..=0.500).contains(&max),
                        "max delay {max} s (499-500 ms)"
                    );
                }
                Aqm::Codel => {
                    assert!(c.dropped_aqm > 0 && c.dropped_queue == 0, "{c:?}");
                    assert!(
                        max < 0.4,
                        "max delay {max} s (bound 400 ms): the queue never fills"
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_node_has_nothing_to_do() {
        let t = t0();
        let mut b = Bench::new(
            trace_node(trace("1\n"), Duration::ZERO, QueueLimit::Packets(5)),
            1,
        );
        assert_eq!(b.node.poll_timeout(), None);
        b.push(t, 100);
        assert_eq!(b.node.poll_timeout(), Some(t + ms(1)));
        b.drain();
        assert_eq!(b.node.poll_timeout(), None);
    }

    #[test]
    fn a_capacity_change_takes_over_from_the_change_instant() {
        let t = t0();
        let mut b = Bench::new(
            trace_node(trace("10\n1000\n"), Duration::ZERO, QueueLimit::Packets(5)),
            1,
        );
        b.push(t, 1500);
        b.push(t, 1500);
        b.run_until(t + ms(20));
        b.poll_at(t + ms(20));
        assert_eq!(b.exits.len(), 1);
        // At 20 ms (as seen by the node), a trace of one opportunity per ms from 0.
        let capacity = Capacity::Trace {
            trace: trace("1\n"),
            start: Duration::ZERO,
        };
        let cfg = CapacityConfig {
            capacity,
            ..b.node.config().clone()
        };
        b.node.set_config(cfg);
        assert_eq!(
            b.node.poll_timeout(),
            Some(t + ms(20)),
            "a pending change is due at once"
        );
        b.drain();
        assert_eq!(left_ms(&b, t), [10, 21]);
    }

    #[derive(Debug, Clone)]
    struct Op {
        gap_us: u64,
        size: usize,
        poll_first: bool,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            (0u64..3000, 0usize..4000, any::<bool>()).prop_map(|(gap_us, size, poll_first)| Op {
                gap_us,
                size,
                poll_first,
            }),
            1..120,
        )
    }

    fn capacities() -> impl Strategy<Value = Capacity> {
        let tr = prop::collection::vec(0u64..20, 1..20).prop_map(|mut v| {
            v.sort_unstable();
            if let Some(last) = v.last_mut() {
                *last += 1;
            }
            let text: String = v.iter().map(|x| format!("{x}\n")).collect();
            Arc::new(Trace::parse(&text, "prop").unwrap())
        });
        prop_oneof![
            (tr, 0u64..50).prop_map(|(trace, s)| Capacity::Trace {
                trace,
                start: ms(s)
            }),
            (100_000u64..20_000_000).prop_map(|rate_bps| Capacity::Poisson { rate_bps }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn capacity_node_is_fifo_causal_and_bounded(
            capacity in capacities(),
            limit in limits(),
            aqm in aqms(),
            ops in ops(),
            seed in any::<u64>(),
        ) {
            let t = t0();
            let mut b = Bench::new(CapacityNode::new(CapacityConfig { capacity, queue: limit, aqm }), seed);
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

        #[test]
        fn parser_takes_any_sorted_list_and_refuses_garbage(
            mut v in prop::collection::vec(0u64..1_000_000, 1..200),
            junk in "[^0-9\\s]{1,5}",
            at in any::<prop::sample::Index>(),
        ) {
            v.sort_unstable();
            if let Some(last) = v.last_mut() {
                *last += 1;
            }
            let lines: Vec<String> = v.iter().map(u64::to_string).collect();
            let tr = Trace::parse(&lines.join("\n"), "p").unwrap();
            prop_assert_eq!(tr.timestamps(), v.as_slice());
            let mut bad = lines.clone();
            let i = at.index(bad.len());
            bad[i].push_str(&junk);
            let e = Trace::parse(&bad.join("\n"), "p").unwrap_err();
            let is_not_a_number = matches!(e, TraceError::NotANumber { line, .. } if line == i + 1);
            prop_assert!(is_not_a_number, "{:?}", e);
        }
    }
}
