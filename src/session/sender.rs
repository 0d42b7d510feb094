//! The sender's session: frames in, datagrams and control messages out.
//!
//! A pushed frame is compressed, queued, and cut into datagrams when its first datagram is
//! polled, at the size the shell says the connection allows at that moment. A frame gets its
//! sequence number then, when it first goes on the wire: frames the sender drops never leave
//! gaps, so a gap at the receiver always means loss in the network.
//!
//! **Never stale, never silent.** A frame still queued at its deadline (capture + `deadline`) is
//! dropped and counted (`dropped_by_sender.stale`); a frame whose last fragments miss the
//! deadline is abandoned (`truncated`: the receiver counts it lost). The shell must hand
//! datagrams to QUIC without letting QUIC drop older ones (see `crate::net`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, trace};

use super::{
    End, FrameTransport, Handshake, MAX_CONTROL_BACKLOG, SOFTWARE, handshake, queue_control,
};
use crate::clock::{ClockAnchor, diff_us};
use crate::compress::{CompressLevel, CompressStats, Compressor};
use crate::fec::{FecEncoder, FecEncoderStats, FecMode, LossEstimate, START_PARITY_FRAMES};
use crate::loss::OUTAGE_LOSS;
use crate::pace::Pacer;
use crate::packetize::{Fragments, WireFrame};
use crate::rate::{RateController, RateInputs};
use crate::retransmit::{RetransmitStats, RetransmitStore};
use crate::source::SourceFrame;
use crate::stats::report::{
    ByteReport, ControlDrops, DatagramReport, FrameReport, LatencyReport, RateReport,
    RecoveryReport, RefusedRequests, SenderDrops, SessionReport,
};
use crate::stats::{LatencyHistogram, LatencySummary};
use crate::timer::{Timer, Timers};
use crate::wire::control::{
    ControlDecoder, ControlMessage, Goodbye, Hello, Pong, Report, Role, Summary, WireLatency,
};
use crate::wire::datagram::FrameFlags;
use crate::wire::parity::PARITY_HEADER_LEN;
use crate::wire::{CloseCode, VERSION};

/// Loss above which retransmissions are sent twice.
const REDUNDANT_RETRANSMIT_LOSS: f64 = 0.01;

/// The least rate adaptation asks of a source, bit/s (and at least 1/20 of its own rate).
const MIN_ADAPTED_RATE: u64 = 50_000;

/// Longest a sent frame is kept for retransmission after its capture.
const MAX_RETRANSMIT_HORIZON: Duration = Duration::from_secs(2);

/// How long parity stays off once it was seen to repair nothing.
const FEC_SUSPENSION: Duration = Duration::from_secs(5);

/// The loss automatic parity is sized for, for the first [`START_PARITY_FRAMES`] frames, until
/// the receiver's first report of enough fragments says what the path loses: a new path is
/// assumed to lose 1 %. Without it the first frames go without parity while the first
/// report is on its way (a report interval and a one-way trip), and a frame lost then is lost
/// unless a retransmission still fits the playout delay. On a clean path it costs parity for
/// those frames at most (the receiver reports early on a fast stream).
const START_LOSS: f64 = 0.01;

/// Sender configuration. The defaults suit live video on the public internet: a frame not on
/// the wire within 500 ms of capture is dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct SenderConfig {
    /// How frames travel. With [`FrameTransport::Stream`], `fec` and `nack` do not apply
    /// (QUIC retransmits) and the shell writes each frame's fragments on a stream of its own.
    pub transport: FrameTransport,
    /// Compression level.
    pub compress: CompressLevel,
    /// Forward error correction.
    pub fec: FecMode,
    /// Answer the receiver's retransmission requests (keeping sent frames until they can no
    /// longer play).
    pub nack: bool,
    /// Bytes of sent datagrams the retransmission store can rebuild at most (it keeps their
    /// frames as cut, and forgets the oldest frames first).
    pub retransmit_bytes: usize,
    /// Rate adaptation for a source of this many bit/s: [`SenderSession::target_rate_bps`]
    /// says how fast it should produce. `None`: the source's rate is fixed.
    pub adapt: Option<u64>,
    /// A frame not completely handed to QUIC this long after capture is dropped.
    pub deadline: Duration,
    /// Frames queued at most (oldest dropped first).
    pub max_queue_frames: usize,
    /// Bytes queued at most (oldest dropped first).
    pub max_queue_bytes: usize,
    /// Largest frame accepted from the source, bytes.
    pub max_frame_bytes: u32,
    /// Largest control message accepted from the receiver, bytes.
    pub max_control_message: usize,
    /// How long to wait for the receiver's goodbye after sending ours.
    pub close_timeout: Duration,
    /// The shared secret to show the receiver in the hello (`rtq-send --token-file`).
    pub token: Option<crate::wire::control::Token>,
    /// Pace datagrams at 1.25 × the rate the receiver reports the path delivers bursts at
    /// (`docs/PROTOCOL.md` §4.6), once it has: a frame of many datagrams sent at once
    /// overflows a shallow bottleneck queue, which drops its tail. Datagram transport only.
    pub pacing: bool,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            transport: FrameTransport::Datagram,
            compress: CompressLevel::Fast,
            fec: FecMode::default(),
            nack: true,
            retransmit_bytes: 8 << 20,
            adapt: None,
            deadline: Duration::from_millis(500),
            max_queue_frames: 1024,
            max_queue_bytes: 32 << 20,
            max_frame_bytes: 16 << 20,
            max_control_message: crate::wire::control::DEFAULT_MAX_MESSAGE,
            close_timeout: Duration::from_secs(5),
            token: None,
            pacing: true,
        }
    }
}

impl SenderConfig {
    /// Checks the configuration, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline.is_zero() {
            return Err("deadline 0: frames could never be sent; use e.g. 500ms".into());
        }
        if self.deadline > Duration::from_secs(3600)
            || self.close_timeout > Duration::from_secs(3600)
        {
            return Err("deadlines and timeouts above 1 hour are not supported".into());
        }
        if self.max_queue_frames == 0 || self.max_queue_bytes == 0 {
            return Err("send queue limits must be at least 1".into());
        }
        if self.max_frame_bytes == 0 {
            return Err("maximum frame size 0: use e.g. 16MiB".into());
        }
        Ok(())
    }
}

/// A datagram for the shell to hand to QUIC, with the deadline of its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The datagram.
    pub data: Bytes,
    /// After this instant the datagram must not be sent (the frame is stale).
    pub deadline: Instant,
    /// The frame's last datagram.
    pub last_of_frame: bool,
    /// The sequence number of the frame the datagram is a fragment of (`None` for parity and
    /// retransmissions). A stream shell writes fragments of one frame on one stream.
    pub frame: Option<u64>,
}

/// Why [`SenderSession::push_frame`] refused a frame (it is counted either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameRejected {
    /// Larger than `max_frame_bytes`.
    #[error("frame of {0} bytes exceeds the frame-size limit")]
    TooLarge(usize),
    /// The session is finishing or done.
    #[error("session is closing")]
    Closed,
}

/// Counters of the sender, for tests and status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Frames pushed by the source.
    pub frames_sent: u64,
    /// Frames that got a sequence number.
    pub frames_transmitted: u64,
    /// Frames whose every fragment was handed out.
    pub frames_completed: u64,
    /// Frames abandoned after some fragments left (the receiver counts them lost).
    pub frames_truncated: u64,
    /// Keyframes pushed.
    pub keyframes: u64,
    /// Frames dropped unsent, by reason.
    pub dropped: SenderDrops,
    /// Payload bytes of the frames accepted for sending (not refused as too large or stale on
    /// arrival; later drops included).
    pub bytes_payload: u64,
    /// The same frames' bytes after compression.
    pub bytes_compressed: u64,
    /// Datagrams handed out.
    pub datagrams: u64,
    /// Datagram bytes handed out.
    pub bytes_datagrams: u64,
    /// Frames re-cut because the datagram size shrank.
    pub recuts: u64,
    /// Compression counters.
    pub compression: CompressStats,
    /// Control messages skipped, by reason.
    pub control_errors: ControlDrops,
    /// Periodic control messages not queued because the backlog was full.
    pub control_backlog_drops: u64,
    /// FEC counters.
    pub fec: FecEncoderStats,
    /// Retransmission counters.
    pub retransmit: RetransmitStats,
    /// Retransmission requests ignored (`nack` off).
    pub nack_ignored: u64,
    /// `--transport stream`: frames whose stream the shell reset at their deadline before the
    /// receiver had acknowledged all of it.
    pub frames_reset: u64,
    /// Datagrams from the receiver that were not retransmission requests (dropped).
    pub bad_datagrams: u64,
    /// New connections that carried the session on after its connection was lost
    /// ([`SenderSession::relinked`]).
    pub reconnects: u64,
}

#[derive(Debug)]
struct Queued {
    capture: Instant,
    deadline: Instant,
    /// Half its deadline after capture: waiting longer at the head of the queue is
    /// congestion ([`SenderSession::shed`]). Worked out once, not at every poll.
    shed_after: Instant,
    /// The frame as it goes on the wire; its sequence number is given when it is first cut.
    frame: WireFrame,
    /// Its datagrams, once cut (the frame has started).
    frags: Option<Fragments>,
}

impl Queued {
    fn started(&self) -> bool {
        self.frags.is_some()
    }

    fn is_keyframe(&self) -> bool {
        self.frame.flags.contains(FrameFlags::KEYFRAME)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// No more frames; waiting for the queue to empty.
    Draining,
    /// Goodbye sent; waiting for the receiver's.
    Closing,
    Done,
}

/// The sender's session. See the module documentation, and [`crate::session`] for the call
/// order.
#[derive(Debug)]
pub struct SenderSession {
    cfg: SenderConfig,
    anchor: ClockAnchor,
    /// The last instant converted to µs on the anchor's clock, and its value: a frame pushed
    /// and sent at one instant asks for it twice.
    last_now: crate::clock::LastMicros,
    started: Instant,
    ended_at: Option<Instant>,
    phase: Phase,
    end: Option<End>,
    compressor: Compressor,
    fec: FecEncoder,
    retx: RetransmitStore,
    /// The buffer frames are cut into, shared by consecutive frames ([`Fragments::new_in`]).
    chunk: BytesMut,
    rate: Option<RateController>,
    pacing_bps: Option<u64>,
    /// Pacing at the burst rate the receiver reports ([`SenderConfig::pacing`]).
    pacer: Pacer,
    /// The last report, and when it came, for the rate the path delivers.
    delivered_mark: Option<(Instant, Report)>,
    /// The report the loss estimate was last taken from.
    loss_mark: Option<Report>,
    /// The loss estimate comes from a report (not [`START_LOSS`]).
    loss_measured: bool,
    /// The report (and parity count) parity's effect was last checked against.
    fec_mark: Option<(Report, u64)>,
    /// Suspensions of parity in a row (see `check_fec_effect`).
    fec_failures: u32,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    next_seq: u64,
    decoder: ControlDecoder,
    out: Vec<u8>,
    timers: Timers,
    peer_hello: Option<Hello>,
    last_report: Option<Report>,
    peer_goodbye: Option<Goodbye>,
    peer_summary: Option<Summary>,
    send_delay: LatencyHistogram,
    stats: SenderStats,
    /// A connection carries the session (false between [`link_lost`](Self::link_lost) and
    /// [`relinked`](Self::relinked)).
    linked: bool,
    /// What the receivers of earlier connections last reported (their counters start over
    /// with each connection).
    earlier: Report,
    /// The session's counts when the current connection began (zero for the first): the
    /// goodbye tells the receiver of this connection about its stream only.
    base: Goodbye,
}

impl SenderSession {
    /// A new session; its hello is ready in [`poll_control`](Self::poll_control).
    pub fn new(mut cfg: SenderConfig, anchor: ClockAnchor, now: Instant) -> Self {
        if cfg.transport == FrameTransport::Stream {
            // QUIC retransmits stream data: parity and rtq's own retransmission have no part.
            cfg.fec = FecMode::Off;
            cfg.nack = false;
        }
        let mut s = Self {
            compressor: Compressor::new(cfg.compress),
            fec: {
                let mut fec = FecEncoder::new(cfg.fec);
                fec.set_estimate(LossEstimate {
                    loss: START_LOSS,
                    mean_burst: 1.0,
                });
                fec
            },
            retx: RetransmitStore::new(cfg.retransmit_bytes),
            chunk: BytesMut::new(),
            rate: cfg
                .adapt
                .map(|max| RateController::new(max, (max / 20).max(MIN_ADAPTED_RATE))),
            pacing_bps: None,
            pacer: Pacer::default(),
            delivered_mark: None,
            loss_mark: None,
            loss_measured: false,
            fec_mark: None,
            fec_failures: 0,
            decoder: ControlDecoder::new(cfg.max_control_message),
            cfg,
            anchor,
            last_now: Default::default(),
            started: now,
            ended_at: None,
            phase: Phase::Running,
            end: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 0,
            out: Vec::new(),
            timers: Timers::default(),
            peer_hello: None,
            last_report: None,
            peer_goodbye: None,
            peer_summary: None,
            send_delay: LatencyHistogram::default(),
            stats: SenderStats::default(),
            linked: true,
            earlier: Report::default(),
            base: Goodbye::default(),
        };
        s.queue_hello(now);
        s
    }

    fn queue_hello(&mut self, now: Instant) {
        let hello = Hello {
            version: VERSION,
            role: Role::Sender,
            clock_us: self.anchor.micros(now),
            max_frame_bytes: self.cfg.max_frame_bytes,
            software: SOFTWARE.into(),
            no_parity: false,
            token: self.cfg.token.clone(),
        };
        queue_control(&mut self.out, &ControlMessage::Hello(hello), true);
    }

    /// The connection is gone and the shell is making a new one (`--reconnect`): the session
    /// goes on. Frames keep coming and wait in the queue, whose deadlines drop those that wait
    /// too long; what belonged to the old connection (a frame half sent, parity, copies kept
    /// for retransmission, control bytes not yet written) is forgotten. A session that had
    /// already said goodbye ends instead.
    pub fn link_lost(&mut self, now: Instant, why: &str) {
        if self.phase == Phase::Done || !self.linked {
            return;
        }
        if self.phase == Phase::Closing {
            self.connection_lost(now, why);
            return;
        }
        self.linked = false;
        if self.queue.front().is_some_and(Queued::started)
            && let Some(q) = self.queue.pop_front()
        {
            self.queued_bytes -= q.frame.body.len();
            self.stats.frames_truncated += 1;
        }
        self.fec.clear();
        self.retx.clear();
        self.out.clear();
        if let Some(r) = self.last_report.take() {
            let e = &mut self.earlier;
            e.frames_received += r.frames_received;
            e.frames_complete += r.frames_complete;
            e.frames_played += r.frames_played;
            e.frames_late += r.frames_late;
            e.frames_lost += r.frames_lost;
        }
        // The next receiver counts from zero: marks taken against this one's reports are void.
        self.delivered_mark = None;
        self.loss_mark = None;
        self.fec_mark = None;
        self.peer_hello = None;
        debug!(why, "link lost; waiting for a new connection");
    }

    /// Whether a connection carries the session.
    pub fn is_linked(&self) -> bool {
        self.linked
    }

    /// A new connection carries the session on: to the receiver it is a new stream (a new
    /// hello, sequence numbers from 0), with the same queue, counters and report.
    pub fn relinked(&mut self, now: Instant) {
        if self.phase == Phase::Done || self.linked {
            return;
        }
        self.linked = true;
        self.stats.reconnects += 1;
        self.next_seq = 0;
        // Frames still queued go out on this connection: they count as sent on it.
        let st = self.stats();
        self.base = Goodbye {
            frames_sent: st.frames_sent.saturating_sub(self.queue.len() as u64),
            frames_dropped: st.dropped.total,
            bytes_payload: st.bytes_payload,
            bytes_compressed: st.bytes_compressed,
            bytes_datagrams: st.bytes_datagrams,
            ..Goodbye::default()
        };
        self.decoder = ControlDecoder::new(self.cfg.max_control_message);
        self.out.clear();
        self.queue_hello(now);
    }

    /// Counters so far.
    pub fn stats(&self) -> SenderStats {
        let mut st = self.stats;
        st.compression = self.compressor.stats();
        st.fec = self.fec.stats();
        st.retransmit = self.retx.stats();
        st.dropped = st.dropped.with_total();
        st
    }

    /// The congestion controller's pacing rate, bit/s (the shell passes it now and then): the
    /// rate controller's measure of the path.
    pub fn set_pacing_rate(&mut self, bps: Option<u64>) {
        self.pacing_bps = bps;
    }

    /// With rate adaptation ([`SenderConfig::adapt`]), how fast the source should produce
    /// now, bit/s.
    pub fn target_rate_bps(&self) -> Option<u64> {
        self.rate.as_ref().map(RateController::target_bps)
    }

    /// The loss estimate FEC is sized for (from the receiver's reports).
    pub fn loss_estimate(&self) -> LossEstimate {
        self.fec.estimate()
    }

    /// Capture → last fragment handed out, per frame completely sent.
    pub fn send_delay(&self) -> &LatencyHistogram {
        &self.send_delay
    }

    /// The receiver's most recent report.
    pub fn last_report(&self) -> Option<&Report> {
        self.last_report.as_ref()
    }

    /// The receiver's hello, once received.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    /// Everything the session holds: queued frames, frames kept for retransmission (the bytes
    /// of their sent datagrams) and copies waiting to go, parity waiting, control bytes
    /// waiting (see [`Footprint`](super::Footprint)).
    pub fn footprint(&self) -> super::Footprint {
        super::Footprint {
            bytes: self.queued_bytes
                + self.retx.bytes()
                + self.retx.pending_bytes()
                + self.decoder.buffered()
                + self.out.len(),
            entries: self.queue.len()
                + self.retx.frames()
                + self.retx.pending()
                + self.fec.pending(),
        }
    }

    /// Frames waiting in the send queue.
    pub fn queued_frames(&self) -> usize {
        self.queue.len()
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Whether the session accepts more frames.
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Whether the session is over; [`end`](Self::end) says how.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// How the session ended, once it has.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Hands a frame from the source to the session.
    pub fn push_frame(&mut self, now: Instant, frame: SourceFrame) -> Result<(), FrameRejected> {
        if self.phase != Phase::Running {
            return Err(FrameRejected::Closed);
        }
        let len = frame.data.len();
        self.stats.frames_sent += 1;
        if frame.keyframe {
            self.stats.keyframes += 1;
        }
        let payload_len = match u32::try_from(len) {
            Ok(l) if l <= self.cfg.max_frame_bytes => l,
            _ => {
                self.stats.dropped.too_large += 1;
                return Err(FrameRejected::TooLarge(len));
            }
        };
        let Some(deadline) = frame.capture.checked_add(self.cfg.deadline) else {
            self.stats.dropped.stale += 1;
            return Ok(());
        };
        if deadline <= now {
            self.stats.dropped.stale += 1;
            return Ok(());
        }
        self.stats.bytes_payload += len as u64;
        let mut flags = FrameFlags::empty();
        if frame.keyframe {
            flags = flags.with(FrameFlags::KEYFRAME);
        }
        let body = match self.compressor.compress(&frame.data) {
            Some(c) => {
                flags = flags.with(FrameFlags::COMPRESSED);
                c
            }
            None => frame.data,
        };
        self.stats.bytes_compressed += body.len() as u64;
        // Make room: drop the oldest delta frame not yet started, else the oldest frame not
        // yet started (keyframes go last).
        while self.queue.len() >= self.cfg.max_queue_frames
            || self.queued_bytes + body.len() > self.cfg.max_queue_bytes
        {
            let unstarted = |q: &Queued| !q.started();
            let delta = |q: &Queued| unstarted(q) && !q.is_keyframe();
            let victim = self
                .queue
                .iter()
                .position(delta)
                .or_else(|| self.queue.iter().position(unstarted));
            match victim.and_then(|i| self.queue.remove(i)) {
                Some(q) => {
                    self.queued_bytes -= q.frame.body.len();
                    self.stats.dropped.queue_full += 1;
                }
                None => break,
            }
        }
        if self.queue.len() >= self.cfg.max_queue_frames
            || self.queued_bytes + body.len() > self.cfg.max_queue_bytes
        {
            self.stats.dropped.queue_full += 1;
            return Ok(());
        }
        self.queued_bytes += body.len();
        let capture_us = self.micros(frame.capture);
        self.queue.push_back(Queued {
            capture: frame.capture,
            deadline,
            shed_after: frame.capture + self.cfg.deadline / 2,
            frame: WireFrame {
                seq: 0,
                capture_us,
                flags,
                body,
                payload_len,
            },
            frags: None,
        });
        trace!(len, queued = self.queue.len(), "frame queued");
        Ok(())
    }

    /// `t` in µs on the anchor's clock (the last conversion remembered).
    fn micros(&mut self, t: Instant) -> u64 {
        self.last_now.get(&self.anchor, t)
    }

    /// Drops frames at the head of the queue whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            if front.deadline > now {
                break;
            }
            if let Some(q) = self.queue.pop_front() {
                self.queued_bytes -= q.frame.body.len();
                if q.started() {
                    self.stats.frames_truncated += 1;
                } else {
                    self.stats.dropped.stale += 1;
                }
                debug!(started = q.started(), "frame dropped at its deadline");
            }
        }
        self.shed(now);
        if self.phase == Phase::Draining && self.queue.is_empty() {
            self.send_goodbye(now);
        }
    }

    /// Under congestion — the head of the queue has waited more than half its deadline — the
    /// delta frames not yet started that wait before a queued keyframe are dropped
    /// (`superseded`): the keyframe makes them moot, and it goes out sooner without them.
    fn shed(&mut self, now: Instant) {
        let Some(head) = self.queue.front() else {
            return;
        };
        if now <= head.shed_after {
            return;
        }
        let Some(key) = self.queue.iter().rposition(Queued::is_keyframe) else {
            return;
        };
        let mut i = 0;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(q) = self.queue.pop_front() {
            if i < key && !q.started() && !q.is_keyframe() {
                self.queued_bytes -= q.frame.body.len();
                self.stats.dropped.superseded += 1;
            } else {
                kept.push_back(q);
            }
            i += 1;
        }
        self.queue = kept;
    }

    /// Whether a datagram is ready to be polled (the head frame has fragments left).
    pub fn has_datagram(&self) -> bool {
        !self.queue.is_empty() || self.fec.pending() > 0 || self.retx.pending() > 0
    }

    /// The next datagram to send, of at most `max_size` bytes (the connection's current maximum
    /// datagram size). The shell hands it to QUIC at once, without letting QUIC drop older
    /// datagrams to make room. See [`poll_outgoing`](Self::poll_outgoing) for a shell that may
    /// have to hold a datagram back.
    pub fn poll_datagram(&mut self, now: Instant, max_size: usize) -> Option<Bytes> {
        self.poll_outgoing(now, max_size).map(|o| o.data)
    }

    /// Like [`poll_datagram`](Self::poll_datagram), with what a shell needs when QUIC cannot
    /// take the datagram at once: the frame's deadline, after which the datagram must not be
    /// sent (give it back with [`abandon`](Self::abandon)).
    pub fn poll_outgoing(&mut self, now: Instant, max_size: usize) -> Option<Outgoing> {
        if !self.pacer.ready(now) {
            self.expire(now);
            let waiting = self.has_datagram();
            self.pacer.hold(waiting);
            return None;
        }
        let out = self.next_outgoing(now, max_size)?;
        self.pacer.sent(now, out.data.len());
        Some(out)
    }

    fn next_outgoing(&mut self, now: Instant, max_size: usize) -> Option<Outgoing> {
        self.expire(now);
        self.fec.handle_timeout(now);
        // What the receiver asked for again is the most urgent.
        if let Some((data, deadline)) = self.retx.poll(now, max_size) {
            self.stats.datagrams += 1;
            self.stats.bytes_datagrams += data.len() as u64;
            return Some(Outgoing {
                data,
                deadline,
                last_of_frame: false,
                frame: None,
            });
        }
        // Parity of a frame already sent goes before the next frame.
        if let Some((data, deadline)) = self.fec.poll(now, max_size) {
            self.stats.datagrams += 1;
            self.stats.bytes_datagrams += data.len() as u64;
            return Some(Outgoing {
                data,
                deadline,
                last_of_frame: false,
                frame: None,
            });
        }
        // With FEC, fragments leave room for the parity header, so that a parity datagram (a
        // padded fragment plus its header) fits the path too.
        let cut_size = if self.fec.mode() == FecMode::Off {
            max_size
        } else {
            max_size.saturating_sub(PARITY_HEADER_LEN + 1)
        };
        let front = self.queue.front_mut()?;
        let recut = front
            .frags
            .as_ref()
            .is_some_and(|f| f.peek_len().is_some_and(|l| l > cut_size));
        if front.frags.is_none() || recut {
            if !recut {
                // A first cut takes the next sequence number; a re-cut keeps the one on the
                // wire.
                front.frame.seq = self.next_seq;
            }
            match Fragments::new_in(&front.frame, cut_size, &mut self.chunk) {
                Ok(f) => {
                    if recut {
                        self.stats.recuts += 1;
                    } else {
                        self.next_seq += 1;
                        self.stats.frames_transmitted += 1;
                    }
                    front.frags = Some(f);
                }
                Err(e) => {
                    // The path cannot carry even a header: nothing can be sent now. Keep the
                    // frame; its deadline will drop it if the path does not recover.
                    debug!(%e, "cannot fragment");
                    return None;
                }
            }
        }
        let deadline = front.deadline;
        let frags = front.frags.as_mut()?;
        let d = frags.next()?;
        self.stats.datagrams += 1;
        self.stats.bytes_datagrams += d.len() as u64;
        let last_of_frame = frags.remaining() == 0;
        let count = Fragments::count(frags);
        let index = count - frags.remaining() - 1;
        let seq = front.frame.seq;
        if !self.loss_measured && seq >= START_PARITY_FRAMES {
            // No report has measured the loss in time: no parity until one does (a no-op
            // once the estimate is cleared).
            self.fec.set_estimate(LossEstimate::default());
        }
        self.fec
            .on_datagram(now, seq, count, &d, last_of_frame, deadline);
        if self.cfg.nack {
            // Worth sending again until the frame plays: the receiver's playout delay, once
            // it has said it, else the sending deadline.
            // Kept a round trip longer: the receiver makes room for a copy at once when
            // fragments go missing after a quiet spell, before its next report says so.
            let (plays, horizon) = match self.last_report {
                Some(r) if r.target_delay_us > 0 => {
                    let target = Duration::from_micros(r.target_delay_us);
                    let rtt = Duration::from_micros(r.rtt_us);
                    (target, (target + rtt).min(MAX_RETRANSMIT_HORIZON))
                }
                _ => (self.cfg.deadline, self.cfg.deadline),
            };
            self.retx.on_sent(
                seq,
                index,
                count,
                d.len(),
                || front.frame.clone(),
                front.capture + plays.min(horizon),
                front.capture + horizon,
            );
        }
        if last_of_frame && let Some(q) = self.queue.pop_front() {
            self.queued_bytes -= q.frame.body.len();
            self.stats.frames_completed += 1;
            let now_us = self.micros(now);
            self.send_delay.record(diff_us(now_us, q.frame.capture_us));
            if self.phase == Phase::Draining && self.queue.is_empty() {
                self.send_goodbye(now);
            }
        }
        Some(Outgoing {
            data: d,
            deadline,
            last_of_frame,
            frame: Some(seq),
        })
    }

    /// `--transport stream`: the shell reset a frame's stream at the frame's deadline before
    /// the receiver had all of it (counted in the report's `frames.reset`; the receiver counts
    /// the frame lost or late).
    pub fn stream_reset(&mut self) {
        self.stats.frames_reset += 1;
    }

    /// How frames travel in this session.
    pub fn transport(&self) -> FrameTransport {
        self.cfg.transport
    }

    /// The shell could not hand `out` to QUIC before its deadline (or is ending): the frame it
    /// belongs to did not go out whole.
    pub fn abandon(&mut self, out: &Outgoing) {
        if out.last_of_frame {
            // The frame had been counted complete when its last datagram was handed out.
            self.stats.frames_completed = self.stats.frames_completed.saturating_sub(1);
            self.stats.frames_truncated += 1;
        }
        // Otherwise the frame is still queued, and its own deadline counts it.
    }

    /// Takes a datagram from the receiver: a retransmission request (`docs/PROTOCOL.md` §4.9);
    /// anything else is counted and dropped.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Bytes) {
        if self.phase == Phase::Done {
            return;
        }
        match crate::wire::nack::parse(&datagram) {
            Ok(p) => self.on_nack(now, &p.nack, p.repeat),
            Err(e) => {
                trace!(%e, "datagram from the receiver dropped");
                self.stats.bad_datagrams += 1;
            }
        }
    }

    fn on_nack(&mut self, now: Instant, n: &crate::wire::Nack, repeat: bool) {
        if self.cfg.nack {
            self.retx.on_nack(now, self.next_seq, &n.entries, repeat);
        } else {
            self.stats.nack_ignored += n.entries.len() as u64;
        }
    }

    /// Whether the goodbye has been queued and the session waits for the receiver's.
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// Feeds bytes read from the control stream.
    pub fn handle_control(&mut self, now: Instant, data: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        self.decoder.push(data);
        while let Some(msg) = self.decoder.next_message() {
            match msg {
                Ok(m) => self.on_message(now, m),
                Err(e) => {
                    debug!(%e, "control message skipped");
                    self.stats.control_errors.record(&e);
                }
            }
            if self.phase == Phase::Done {
                return;
            }
        }
    }

    fn on_message(&mut self, now: Instant, msg: ControlMessage) {
        let msg = match handshake(self.peer_hello.is_some(), Role::Receiver, msg) {
            Handshake::Fail(code, why) => return self.fail(now, code, &why),
            Handshake::Duplicate => {
                self.stats.control_errors.unexpected += 1;
                return;
            }
            Handshake::Hello(h) => {
                debug!(software = %h.software, "receiver hello");
                if h.max_frame_bytes > 0 {
                    // Frames the receiver would refuse are better dropped here, counted.
                    self.cfg.max_frame_bytes = self.cfg.max_frame_bytes.min(h.max_frame_bytes);
                }
                if h.no_parity && self.fec.mode() != FecMode::Off {
                    debug!("the receiver declines FEC parity");
                    self.fec.turn_off();
                    self.cfg.fec = FecMode::Off;
                }
                self.peer_hello = Some(h);
                return;
            }
            Handshake::Message(m) => m,
        };
        match msg {
            // Taken by the handshake above.
            ControlMessage::Hello(_) => {}
            ControlMessage::Ping(p) => {
                let t = self.anchor.micros(now);
                let pong = Pong {
                    id: p.id,
                    t1_us: p.t1_us,
                    t2_us: t,
                    t3_us: t,
                };
                if !queue_control(&mut self.out, &ControlMessage::Pong(pong), false) {
                    self.stats.control_backlog_drops += 1;
                }
            }
            ControlMessage::Report(r) => {
                if let Some(rate) = self.rate.as_mut() {
                    rate.on_queue_delay(r.queue_delay_us);
                    if let Some((at, prev)) = self.delivered_mark
                        && r.bytes_received >= prev.bytes_received
                        && now > at
                    {
                        let secs = now.duration_since(at).as_secs_f64();
                        let bits = (r.bytes_received - prev.bytes_received) as f64 * 8.0;
                        rate.on_delivered((bits / secs) as u64);
                    }
                    self.delivered_mark = Some((now, r));
                }
                self.on_report(now, &r);
                self.last_report = Some(r);
            }
            ControlMessage::Summary(s) => self.peer_summary = Some(s),
            ControlMessage::Goodbye(g) => {
                self.peer_goodbye = Some(g);
                if self.phase != Phase::Closing {
                    // The receiver ends the session (it is shutting down): stop sending.
                    self.discard_queue();
                    self.send_goodbye(now);
                }
                self.done(now, End::Complete);
            }
            ControlMessage::Nack(n) => self.on_nack(now, &n, false),
            ControlMessage::Pong(_) => self.stats.control_errors.unexpected += 1,
        }
    }

    /// Updates the loss estimate from a receiver report: the loss since the report it was
    /// last taken from, once that covers enough fragments to mean something. A rise is taken
    /// at once, a fall smoothed, so parity follows loss up quickly and down slowly.
    fn on_report(&mut self, now: Instant, r: &Report) {
        const MIN_FRAGMENTS: u64 = 50;
        let paced = self.cfg.pacing && self.cfg.transport == FrameTransport::Datagram;
        self.pacer
            .set_measured(if paced { r.burst_rate_bps } else { 0 });
        self.retx.set_one_way(Duration::from_micros(r.rtt_us / 2));
        self.check_fec_effect(now, r);
        let base = self.loss_mark.unwrap_or_default();
        let expected = r.fragments_expected.saturating_sub(base.fragments_expected);
        if expected < MIN_FRAGMENTS {
            if self.loss_mark.is_none() {
                self.loss_mark = Some(base);
            }
            return;
        }
        let missing = r
            .fragments_missing
            .saturating_sub(base.fragments_missing)
            .min(expected);
        let runs = r.loss_runs.saturating_sub(base.loss_runs).min(missing);
        let loss = missing as f64 / expected as f64;
        if let Some(rate) = self.rate.as_mut() {
            rate.on_loss(loss);
        }
        if loss > OUTAGE_LOSS {
            // An outage or a collapsed path, not loss that parity can repair: parity would
            // only add load. The estimate keeps what it had.
            self.loss_mark = Some(*r);
            return;
        }
        let burst = if runs > 0 {
            missing as f64 / runs as f64
        } else {
            1.0
        };
        let old = self.fec.estimate();
        // The first measure replaces the assumed start loss outright.
        let measured = std::mem::replace(&mut self.loss_measured, true);
        let smooth = |old: f64, new: f64| {
            if new >= old || !measured {
                new
            } else {
                0.8 * old + 0.2 * new
            }
        };
        let smoothed = smooth(old.loss, loss);
        let estimate = LossEstimate {
            // Below 1e-4 the decay has run its course: no loss.
            loss: if smoothed < 1e-4 { 0.0 } else { smoothed },
            mean_burst: if missing > 0 {
                smooth(old.mean_burst.max(1.0), burst)
            } else {
                old.mean_burst.max(1.0)
            },
        };
        trace!(?estimate, "loss estimate");
        self.fec.set_estimate(estimate);
        // Above 1 % loss a retransmitted copy is lost often enough to cost frames: send two.
        self.retx
            .set_copies(if estimate.loss > REDUNDANT_RETRANSMIT_LOSS {
                2
            } else {
                1
            });
        self.loss_mark = Some(*r);
    }

    /// Suspends parity for [`FEC_SUSPENSION`] when, since the last check, the receiver missed
    /// many fragments, parity went out, and it repaired almost none of them: the loss comes in
    /// bursts that take the parity with them (a drop-tail queue overflowing), and parity only
    /// adds to the load that causes it.
    fn check_fec_effect(&mut self, now: Instant, r: &Report) {
        const MIN_MISSING: u64 = 30;
        let parities = self.fec.stats().parities;
        let Some((base, base_parities)) = self.fec_mark else {
            self.fec_mark = Some((*r, parities));
            return;
        };
        let missing = r.fragments_missing.saturating_sub(base.fragments_missing);
        if missing < MIN_MISSING {
            return;
        }
        let recovered = r.fec_recovered.saturating_sub(base.fec_recovered);
        let sent = parities.saturating_sub(base_parities);
        if sent >= MIN_MISSING
            && recovered.saturating_mul(10) < missing
            && !self.fec.is_suspended(now)
        {
            // Each failure in a row doubles the pause (5 s, 10 s, … 80 s): on a path whose loss
            // parity cannot repair, trying again costs little.
            let pause = FEC_SUSPENSION * (1u32 << self.fec_failures.min(4));
            self.fec_failures += 1;
            debug!(
                missing,
                recovered,
                sent,
                ?pause,
                "parity repairs nothing: suspended"
            );
            self.fec.suspend(now + pause);
        } else if sent > 0 && recovered.saturating_mul(2) >= missing {
            self.fec_failures = 0;
        }
        self.fec_mark = Some((*r, parities));
    }

    fn fail(&mut self, now: Instant, code: CloseCode, reason: &str) {
        debug!(reason, "protocol error");
        self.discard_queue();
        self.done(
            now,
            End::Protocol {
                code,
                reason: reason.into(),
            },
        );
    }

    /// Ends the session. A shutdown in progress stays the reason, whatever ends it.
    fn done(&mut self, now: Instant, end: End) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        if self.end != Some(End::Shutdown) {
            self.end = Some(end);
        }
        self.ended_at = Some(now);
        self.timers = Timers::default();
    }

    fn discard_queue(&mut self) {
        let untouched = self.queue.iter().filter(|q| !q.started()).count() as u64;
        self.stats.dropped.shutdown += untouched;
        self.stats.frames_truncated += self.queue.len() as u64 - untouched;
        self.queue.clear();
        self.queued_bytes = 0;
        self.fec.clear();
        self.retx.clear();
    }

    fn send_goodbye(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        // This connection's stream only: after a reconnection its receiver numbered frames
        // from 0 and knows nothing of the connections before.
        let st = self.stats();
        let b = &self.base;
        let g = Goodbye {
            frames_sent: st.frames_sent.saturating_sub(b.frames_sent),
            frames_transmitted: self.next_seq,
            frames_dropped: st.dropped.total.saturating_sub(b.frames_dropped),
            bytes_payload: st.bytes_payload.saturating_sub(b.bytes_payload),
            bytes_compressed: st.bytes_compressed.saturating_sub(b.bytes_compressed),
            bytes_datagrams: st.bytes_datagrams.saturating_sub(b.bytes_datagrams),
            ..Goodbye::default()
        };
        queue_control(&mut self.out, &ControlMessage::Goodbye(g), true);
        self.phase = Phase::Closing;
        self.timers.set(Timer::Close, now + self.cfg.close_timeout);
    }

    /// No more frames will come: send what is queued, then say goodbye.
    pub fn finish(&mut self, now: Instant) {
        if self.phase == Phase::Running {
            self.phase = Phase::Draining;
            self.expire(now);
            if self.queue.is_empty() {
                self.send_goodbye(now);
            }
        }
    }

    /// Ends the session now (shutdown): the queue is discarded and counted, goodbye sent; the
    /// session waits briefly for the receiver's goodbye.
    pub fn abort(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Running | Phase::Draining) {
            self.discard_queue();
            self.send_goodbye(now);
        }
        if self.phase != Phase::Done {
            self.end = Some(End::Shutdown);
        }
    }

    /// The connection is gone: the session ends.
    pub fn connection_lost(&mut self, now: Instant, why: &str) {
        if self.phase == Phase::Done {
            return;
        }
        self.discard_queue();
        self.done(now, End::ConnectionLost(why.into()));
    }

    /// Bytes to write to the control stream, if any.
    pub fn poll_control(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        let out = std::mem::take(&mut self.out);
        debug_assert!(out.len() <= MAX_CONTROL_BACKLOG + 1024);
        Some(Bytes::from(out))
    }

    /// Acts on timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.pacer.handle_timeout(now);
        self.fec.handle_timeout(now);
        self.retx.prune(now);
        self.retx.release_due(now);
        if let Some(rate) = self.rate.as_mut() {
            let d = self.stats.dropped;
            let inputs = RateInputs {
                head_wait: self
                    .queue
                    .front()
                    .map_or(Duration::ZERO, |q| now.saturating_duration_since(q.capture)),
                drops: d.stale + d.queue_full + d.superseded + self.stats.frames_truncated,
                pacing_bps: self.pacing_bps,
            };
            rate.update(now, inputs);
        }
        while let Some(t) = self.timers.take_expired(now) {
            if t == Timer::Close {
                self.done(now, End::Timeout);
            }
        }
    }

    /// When the session next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let head = self.queue.front().map(|q| q.deadline);
        [
            self.timers.next(),
            head,
            self.fec.poll_timeout(),
            self.retx.poll_timeout(),
            self.pacer.timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The session report as of `now`.
    pub fn report(&self, now: Instant) -> SessionReport {
        let st = self.stats();
        let end_at = self.ended_at.unwrap_or(now);
        let g = self.peer_goodbye.unwrap_or_default();
        let s = self.peer_summary.unwrap_or_default();
        // Receivers of earlier connections (`relinked`) counted from zero; the last one's
        // goodbye counts its own frames.
        let e = &self.earlier;
        let played = g.frames_played + e.frames_played;
        let late = g.frames_late + e.frames_late;
        let frames = FrameReport {
            sent: st.frames_sent,
            transmitted: st.frames_transmitted,
            received: g.frames_received + e.frames_received,
            complete: g.frames_complete + e.frames_complete,
            played,
            late,
            // Frames transmitted after the receiver counted (it ended first) were lost to it.
            lost: match self.peer_goodbye {
                Some(g) => (g.frames_lost + e.frames_lost)
                    .max(st.frames_transmitted.saturating_sub(played + late)),
                None => 0,
            },
            keyframes: st.keyframes,
            dropped_by_sender: st.dropped,
            reset: st.frames_reset,
            output_dropped: 0,
        };
        SessionReport {
            role: Role::Sender,
            duration_s: end_at.saturating_duration_since(self.started).as_secs_f64(),
            peer: String::new(),
            end: self
                .end
                .as_ref()
                .map_or_else(|| "running".into(), End::describe),
            transport: self.cfg.transport.to_string(),
            reconnects: st.reconnects,
            frames,
            bytes: ByteReport {
                payload: st.bytes_payload,
                compressed: st.bytes_compressed,
                wire: 0,
                datagrams: st.bytes_datagrams,
            },
            compression_ratio: ratio(st.bytes_compressed, st.bytes_payload),
            latency_us: LatencyReport {
                network: from_wire(&s.network),
                jitter_buffer: from_wire(&s.jitter_buffer),
                end_to_end: from_wire(&s.end_to_end),
                send: Some(self.send_delay.summary()),
            },
            datagrams: DatagramReport {
                sent: st.datagrams,
                recuts: st.recuts,
                // Sender: datagrams from the receiver that were not retransmission requests.
                dropped: crate::stats::report::DatagramDrops {
                    unknown_type: st.bad_datagrams,
                    total: st.bad_datagrams,
                    ..Default::default()
                },
                ..Default::default()
            },
            control_errors: st.control_errors,
            jitter_buffer: None,
            reassembly: None,
            clock: None,
            rate: self.rate.as_ref().map(|r| RateReport {
                max_bps: self.cfg.adapt.unwrap_or(0),
                target_bps: r.target_bps(),
                lowest_bps: r.lowest_bps(),
                cuts: r.cuts(),
                pacing_bps: self.pacing_bps.unwrap_or(0),
            }),
            recovery: RecoveryReport {
                fec_mode: self.fec.mode().to_string(),
                fec_recovered: self.last_report.map_or(0, |r| r.fec_recovered),
                parity_sent: st.fec.parities,
                fec_overhead_ratio: fraction(
                    st.fec.parity_bytes,
                    st.bytes_datagrams
                        .saturating_sub(st.fec.parity_bytes)
                        .saturating_sub(st.retransmit.retransmitted_bytes),
                ),
                loss_before_recovery: self
                    .last_report
                    .map_or(0.0, |r| fraction(r.fragments_missing, r.fragments_expected)),
                retransmit_requests: st.retransmit.requests + st.nack_ignored,
                retransmitted: st.retransmit.retransmitted,
                retransmitted_bytes: st.retransmit.retransmitted_bytes,
                refused: RefusedRequests {
                    ignored: st.nack_ignored,
                    ..st.retransmit.refused
                },
                ..Default::default()
            },
            quic: Default::default(),
        }
    }
}

/// `part / whole` to four decimals, 0 when `whole` is 0.
pub(crate) fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { ratio(part, whole) }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

pub(crate) fn to_wire(s: &LatencySummary) -> WireLatency {
    WireLatency {
        count: s.count,
        min: s.min,
        p50: s.p50,
        p90: s.p90,
        p99: s.p99,
        p999: s.p999,
        max: s.max,
        mean_tenths: (s.mean * 10.0).round().max(0.0) as u64,
    }
}

fn from_wire(w: &WireLatency) -> LatencySummary {
    LatencySummary {
        count: w.count,
        min: w.min,
        p50: w.p50,
        p90: w.p90,
        p99: w.p99,
        p999: w.p999,
        max: w.max,
        mean: w.mean_tenths as f64 / 10.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ControlDecoder;
    use crate::wire::datagram::FragmentHeader;

    fn setup() -> (SenderSession, Instant) {
        // No parity: the tests count the datagrams frames are cut into.
        setup_with(SenderConfig {
            compress: CompressLevel::Off,
            fec: FecMode::Off,
            ..Default::default()
        })
    }

    fn setup_with(cfg: SenderConfig) -> (SenderSession, Instant) {
        let t0 = crate::test_instant();
        (
            SenderSession::new(cfg, ClockAnchor::new(t0, 1_000_000), t0),
            t0,
        )
    }

    fn frame(capture: Instant, len: usize) -> SourceFrame {
        SourceFrame {
            capture,
            keyframe: false,
            data: Bytes::from(vec![7u8; len]),
        }
    }

    fn messages(bytes: Bytes) -> Vec<ControlMessage> {
        let mut d = ControlDecoder::new(65535);
        d.push(&bytes);
        std::iter::from_fn(|| d.next_message())
            .map(Result::unwrap)
            .collect()
    }

    fn receiver_hello() -> Vec<u8> {
        ControlMessage::Hello(Hello {
            version: VERSION,
            role: Role::Receiver,
            clock_us: 0,
            max_frame_bytes: 1 << 20,
            software: "test".into(),
            no_parity: false,
            token: None,
        })
        .to_bytes()
    }

    #[test]
    fn says_hello_first() {
        let (mut s, _) = setup();
        let msgs = messages(s.poll_control().unwrap());
        assert!(
            matches!(&msgs[..], [ControlMessage::Hello(h)] if h.role == Role::Sender && h.clock_us == 1_000_000)
        );
        assert_eq!(s.poll_control(), None);
    }

    /// A video frame's whole burst (50 000 bytes, about 36 datagrams at quinn's 1414-byte
    /// datagram size on loopback) is handed out at the instant it is pushed while no burst
    /// rate is known, and on a fast path (below): the session asks to be woken between its
    /// datagrams only where a shallow queue could not take them, and otherwise adds no delay
    /// that bare quinn does not have (`cargo bench --bench loopback`, case `video`).
    #[test]
    fn a_video_frame_leaves_in_one_burst_at_the_instant_it_is_pushed() {
        let (mut s, t0) = setup();
        s.push_frame(t0, frame(t0, 50_000)).unwrap();
        let datagrams: Vec<Bytes> = std::iter::from_fn(|| s.poll_datagram(t0, 1414)).collect();
        let headers: Vec<FragmentHeader> = datagrams
            .iter()
            .map(|d| FragmentHeader::parse(d).unwrap().0)
            .collect();
        let count = usize::from(headers[0].count);
        assert!((36..=38).contains(&count), "{count} fragments");
        assert_eq!(datagrams.len(), count, "every fragment at t0");
        assert!(
            headers
                .iter()
                .all(|h| h.seq == 0 && usize::from(h.count) == count)
        );
        assert!(datagrams.iter().all(|d| d.len() <= 1414));
        assert!(!s.has_datagram());
        assert_eq!(s.stats().frames_completed, 1);
        // Handed out at capture: no send delay, and no wake-up asked for within the frame
        // interval of a 30 frames/s source.
        assert_eq!(s.send_delay().quantile(1.0), 0);
        assert!(
            s.poll_timeout()
                .is_none_or(|w| w >= t0 + Duration::from_millis(33)),
            "{:?}",
            s.poll_timeout().map(|w| w - t0)
        );
    }

    #[test]
    fn cuts_frames_at_poll_time_and_numbers_them_in_order() {
        let (mut s, t0) = setup();
        s.push_frame(t0, frame(t0, 3000)).unwrap();
        s.push_frame(t0, frame(t0, 100)).unwrap();
        let mut got = Vec::new();
        while let Some(d) = s.poll_datagram(t0, 1200) {
            let (h, _) = FragmentHeader::parse(&d).unwrap();
            got.push((h.seq, h.index, h.count));
        }
        assert_eq!(got, vec![(0, 0, 3), (0, 1, 3), (0, 2, 3), (1, 0, 1)]);
        assert_eq!(s.stats().frames_completed, 2);
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn recuts_when_the_datagram_size_shrinks() {
        let (mut s, t0) = setup();
        s.push_frame(t0, frame(t0, 3000)).unwrap();
        let first = s.poll_datagram(t0, 1400).unwrap();
        assert_eq!(FragmentHeader::parse(&first).unwrap().0.count, 3);
        let mut rest = Vec::new();
        while let Some(d) = s.poll_datagram(t0, 1000) {
            assert!(d.len() <= 1000);
            rest.push(FragmentHeader::parse(&d).unwrap().0);
        }
        assert!(
            rest.iter()
                .all(|h| h.seq == 0 && h.count == 4 && h.frame_len == 3000)
        );
        assert_eq!(rest.len(), 4, "the whole frame again at the new size");
        assert_eq!(s.stats().recuts, 1);
        assert_eq!(s.stats().frames_transmitted, 1);
    }

    #[test]
    fn an_abandoned_last_datagram_truncates_its_frame() {
        let (mut s, t0) = setup();
        s.push_frame(t0, frame(t0, 100)).unwrap();
        let out = s.poll_outgoing(t0, 1200).unwrap();
        assert!(out.last_of_frame);
        assert_eq!(out.deadline, t0 + Duration::from_millis(500));
        assert_eq!(s.stats().frames_completed, 1);
        s.abandon(&out);
        assert_eq!(
            (s.stats().frames_completed, s.stats().frames_truncated),
            (0, 1)
        );
    }

    #[test]
    fn drops_stale_frames_instead_of_sending_them_late() {
        let (mut s, t0) = setup();
        s.push_frame(t0, frame(t0, 3000)).unwrap();
        s.push_frame(t0, frame(t0 + Duration::from_millis(100), 500))
            .unwrap();
        assert!(s.poll_datagram(t0, 1200).is_some());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        let late = t0 + Duration::from_millis(550);
        let d = s.poll_datagram(late, 1200).unwrap();
        let (h, _) = FragmentHeader::parse(&d).unwrap();
        assert_eq!(
            (h.seq, h.frame_len),
            (1, 500),
            "seq 0 abandoned, next frame gets seq 1"
        );
        assert_eq!(s.stats().frames_truncated, 1);
        s.push_frame(late, frame(t0, 10)).unwrap(); // captured 550 ms ago
        assert_eq!(s.queued_frames(), 0);
        assert_eq!(s.stats().dropped.stale, 1);
        s.push_frame(late, frame(late - Duration::from_millis(499), 10))
            .unwrap();
        s.handle_timeout(late + Duration::from_millis(1));
        assert_eq!(
            s.stats().dropped.stale,
            2,
            "queued frames expire on the timer too"
        );
    }

    #[test]
    fn bounded_queue_drops_oldest_unstarted() {
        let t0 = crate::test_instant();
        let cfg = SenderConfig {
            max_queue_frames: 3,
            compress: CompressLevel::Off,
            ..Default::default()
        };
        let mut s = SenderSession::new(cfg, ClockAnchor::new(t0, 0), t0);
        for _ in 0..5 {
            s.push_frame(t0, frame(t0, 10)).unwrap();
        }
        assert_eq!(s.queued_frames(), 3);
        assert_eq!(s.stats().dropped.queue_full, 2);
        assert_eq!(s.stats().frames_sent, 5);
    }

    fn keyframe(capture: Instant, len: usize) -> SourceFrame {
        SourceFrame {
            keyframe: true,
            ..frame(capture, len)
        }
    }

    #[test]
    fn a_full_queue_sheds_delta_frames_before_keyframes() {
        let t0 = crate::test_instant();
        let cfg = SenderConfig {
            max_queue_frames: 3,
            compress: CompressLevel::Off,
            ..Default::default()
        };
        let mut s = SenderSession::new(cfg, ClockAnchor::new(t0, 0), t0);
        s.push_frame(t0, keyframe(t0, 10)).unwrap();
        for _ in 0..4 {
            s.push_frame(t0, frame(t0, 10)).unwrap();
        }
        assert_eq!(s.stats().dropped.queue_full, 2);
        assert_eq!(s.queue.front().map(Queued::is_keyframe), Some(true));
    }

    #[test]
    fn under_congestion_delta_frames_before_a_keyframe_are_superseded() {
        let t0 = crate::test_instant();
        let cfg = SenderConfig {
            compress: CompressLevel::Off,
            deadline: Duration::from_millis(500),
            ..Default::default()
        };
        let mut s = SenderSession::new(cfg, ClockAnchor::new(t0, 0), t0);
        let ms = Duration::from_millis;
        for i in 0..6 {
            s.push_frame(t0 + ms(i * 33), frame(t0 + ms(i * 33), 10))
                .unwrap();
        }
        s.push_frame(t0 + ms(200), keyframe(t0 + ms(200), 10))
            .unwrap();
        s.push_frame(t0 + ms(233), frame(t0 + ms(233), 10)).unwrap();
        // Nothing could be sent for 200 ms: not congested yet by the rule (half the deadline).
        s.handle_timeout(t0 + ms(240));
        assert_eq!(s.stats().dropped.superseded, 0);
        assert_eq!(s.queued_frames(), 8);
        // At 260 ms the head has waited past 250 ms: the six deltas before the keyframe go.
        s.handle_timeout(t0 + ms(260));
        assert_eq!(s.stats().dropped.superseded, 6);
        assert_eq!(s.queued_frames(), 2);
        assert_eq!(s.stats().dropped.total, 6);
        let (h, _) = FragmentHeader::parse(&s.poll_datagram(t0 + ms(260), 1200).unwrap()).unwrap();
        assert!(
            h.flags.contains(FrameFlags::KEYFRAME),
            "the keyframe goes first"
        );
    }

    #[test]
    fn refuses_oversized_frames() {
        let t0 = crate::test_instant();
        let cfg = SenderConfig {
            max_frame_bytes: 100,
            ..Default::default()
        };
        let mut s = SenderSession::new(cfg, ClockAnchor::new(t0, 0), t0);
        assert_eq!(
            s.push_frame(t0, frame(t0, 101)),
            Err(FrameRejected::TooLarge(101))
        );
        assert_eq!(s.stats().dropped.too_large, 1);
        assert_eq!(s.stats().dropped.total, 1);
    }

    #[test]
    fn answers_pings_and_ends_on_the_receivers_goodbye() {
        let (mut s, t0) = setup();
        s.poll_control();
        let mut input = receiver_hello();
        ControlMessage::Ping(crate::wire::Ping { id: 4, t1_us: 5 }).encode(&mut input);
        let t1 = t0 + Duration::from_millis(3);
        s.handle_control(t1, &input);
        let msgs = messages(s.poll_control().unwrap());
        assert_eq!(
            msgs,
            vec![ControlMessage::Pong(Pong {
                id: 4,
                t1_us: 5,
                t2_us: 1_003_000,
                t3_us: 1_003_000
            })]
        );
        s.push_frame(t1, frame(t1, 10)).unwrap();
        s.finish(t1);
        assert!(s.poll_control().is_none(), "goodbye waits for the queue");
        s.poll_datagram(t1, 1200).unwrap();
        let msgs = messages(s.poll_control().unwrap());
        assert!(
            matches!(&msgs[..], [ControlMessage::Goodbye(g)] if g.frames_sent == 1 && g.frames_transmitted == 1)
        );
        let bye = ControlMessage::Goodbye(Goodbye {
            frames_played: 1,
            ..Default::default()
        })
        .to_bytes();
        s.handle_control(t1, &bye);
        assert!(s.is_done());
        assert_eq!(s.end(), Some(&End::Complete));
        assert_eq!(s.report(t1).frames.played, 1);
    }

    /// A session (pacing on or off) told by a report that the path delivers bursts at `bps`,
    /// with a 50 kB frame pushed at t0.
    fn large_frame_after_burst_rate(pacing: bool, bps: u64) -> (SenderSession, Instant) {
        let (mut s, t0) = setup_with(SenderConfig {
            compress: CompressLevel::Off,
            pacing,
            ..Default::default()
        });
        s.poll_control();
        s.handle_control(t0, &receiver_hello());
        let report = ControlMessage::Report(Report {
            burst_rate_bps: bps,
            ..Default::default()
        });
        s.handle_control(t0, &report.to_bytes());
        s.push_frame(t0, frame(t0, 50_000)).unwrap();
        (s, t0)
    }

    /// Sends what `s` lets go at each wake-up it asks for until nothing is left: (when,
    /// bytes) of each datagram.
    fn drain_paced(s: &mut SenderSession, t0: Instant) -> Vec<(Duration, usize)> {
        let mut sent = Vec::new();
        let mut now = t0;
        for _ in 0..1000 {
            while let Some(d) = s.poll_datagram(now, 1414) {
                sent.push((now - t0, d.len()));
            }
            if !s.has_datagram() {
                break;
            }
            let wake = s.poll_timeout().expect("held back by pacing: a wake-up");
            assert!(wake > now, "a wake-up in the future");
            now = wake;
        }
        sent
    }

    /// Once the receiver reports the rate its path delivers bursts at, a frame's datagrams go
    /// at 1.25 × that rate after a first 12 000 bytes: a 50 kB keyframe on a 10 Mbit/s path
    /// takes 25 ms instead of arriving at a shallow queue all at once.
    #[test]
    fn with_a_reported_burst_rate_a_large_frame_is_paced_a_quarter_above_it() {
        let (mut s, t0) = large_frame_after_burst_rate(true, 10_000_000);
        let sent = drain_paced(&mut s, t0);
        let at_once: usize = sent
            .iter()
            .filter(|(at, _)| at.is_zero())
            .map(|(_, n)| n)
            .sum();
        assert!(
            (12_000..12_000 + 1414).contains(&at_once),
            "{at_once} bytes at once"
        );
        let (last, last_len) = *sent.last().unwrap();
        // The bytes that went after the first burst, up to (not including) the last datagram,
        // took until the last one could go.
        let rest: usize = sent.iter().map(|(_, n)| n).sum::<usize>() - at_once - last_len;
        let rate = rest as f64 * 8.0 / last.as_secs_f64();
        assert!(
            (11.0e6..=12.6e6).contains(&rate),
            "paced at {rate} bit/s over {last:?}"
        );
        assert_eq!(s.stats().frames_completed, 1);

        // Pacing off: the same report leaves the burst as it was.
        let (mut s, t0) = large_frame_after_burst_rate(false, 10_000_000);
        assert!(drain_paced(&mut s, t0).iter().all(|(at, _)| at.is_zero()));
    }

    /// A shell that cannot hand QUIC a datagram when pacing would let it (QUIC's buffer is
    /// full) is not woken again and again for it: the wake-up is spent once it has come.
    /// (rtq-sim's virtual time stalled on this: the same instant asked for forever.)
    #[test]
    fn a_pacing_wake_up_is_spent_once_it_has_come_even_if_nothing_is_sent() {
        let (mut s, t0) = large_frame_after_burst_rate(true, 10_000_000);
        while s.poll_datagram(t0, 1414).is_some() {}
        let wake = s.poll_timeout().unwrap();
        assert!(
            wake > t0 && wake < t0 + Duration::from_millis(2),
            "{:?}",
            wake - t0
        );
        s.handle_timeout(wake);
        assert!(s.poll_timeout().is_none_or(|t| t > wake), "asked for again");
        // Polled again, it paces on.
        assert!(s.poll_datagram(wake, 1414).is_some());
    }

    /// On a fast path pacing holds nothing back that 2 ms at its rate covers: a 50 kB frame at
    /// 1 Gbit/s leaves at once, and no wake-up between its datagrams is asked for.
    #[test]
    fn on_a_fast_path_pacing_lets_a_frame_go_at_once() {
        let (mut s, t0) = large_frame_after_burst_rate(true, 1_000_000_000);
        let sent = drain_paced(&mut s, t0);
        assert!(sent.len() >= 36 && sent.iter().all(|(at, _)| at.is_zero()));
    }

    #[test]
    fn a_lost_link_keeps_the_session_and_a_new_one_starts_a_fresh_stream() {
        let (mut s, t0) = setup();
        s.poll_control();
        s.handle_control(t0, &receiver_hello());
        s.push_frame(t0, frame(t0, 3000)).unwrap();
        s.push_frame(t0, frame(t0, 100)).unwrap();
        // Half of the first frame goes out; the receiver has reported two frames played.
        s.poll_datagram(t0, 1200).unwrap();
        let report = ControlMessage::Report(Report {
            frames_received: 3,
            frames_played: 2,
            frames_lost: 1,
            ..Default::default()
        });
        s.handle_control(t0, &report.to_bytes());
        assert!(s.last_report().is_some());

        let t1 = t0 + Duration::from_millis(10);
        s.link_lost(t1, "idle timeout");
        assert!(!s.is_linked() && s.is_running() && !s.is_done());
        assert_eq!(
            s.stats().frames_truncated,
            1,
            "the half-sent frame is given up"
        );
        assert_eq!(s.poll_control(), None);
        // Frames keep coming while the link is down, and wait.
        s.push_frame(t1, frame(t1, 200)).unwrap();
        assert_eq!(s.queued_frames(), 2);

        let t2 = t0 + Duration::from_millis(50);
        s.relinked(t2);
        assert!(s.is_linked());
        assert_eq!(s.stats().reconnects, 1);
        let msgs = messages(s.poll_control().unwrap());
        assert!(
            matches!(&msgs[..], [ControlMessage::Hello(h)] if h.role == Role::Sender && h.clock_us == 1_050_000),
            "a new hello for the new receiver: {msgs:?}"
        );
        // The queue goes out numbered from 0 again.
        let mut got = Vec::new();
        while let Some(d) = s.poll_datagram(t2, 1200) {
            let (h, _) = FragmentHeader::parse(&d).unwrap();
            got.push((h.seq, h.index, h.count));
        }
        assert_eq!(got, vec![(0, 0, 1), (1, 0, 1)]);

        // The report adds what the first receiver counted to the second's goodbye.
        s.handle_control(t2, &receiver_hello());
        s.finish(t2);
        // The goodbye tells the new receiver about its own stream: the two frames that went
        // out on this connection, not the three the session took in all.
        let msgs = messages(s.poll_control().unwrap());
        let Some(ControlMessage::Goodbye(ours)) = msgs.last() else {
            panic!("a goodbye: {msgs:?}")
        };
        assert_eq!(ours.frames_transmitted, 2, "{ours:?}");
        assert_eq!(ours.frames_sent, 2, "{ours:?}");
        assert_eq!(ours.frames_dropped, 0, "{ours:?}");
        assert_eq!(s.stats().frames_sent, 3);
        let bye = ControlMessage::Goodbye(Goodbye {
            frames_played: 2,
            ..Default::default()
        });
        s.handle_control(t2, &bye.to_bytes());
        let r = s.report(t2);
        assert_eq!(r.reconnects, 1);
        assert_eq!(r.frames.played, 4);
        assert_eq!(r.frames.received, 3);
        assert_eq!(r.end, "complete");
    }

    #[test]
    fn a_link_lost_while_closing_ends_the_session() {
        let (mut s, t0) = setup();
        s.finish(t0);
        s.link_lost(t0, "idle timeout");
        assert!(s.is_done());
        s.relinked(t0);
        assert_eq!(
            s.stats().reconnects,
            0,
            "a finished session is not carried on"
        );
    }

    #[test]
    fn closing_times_out_without_the_receivers_goodbye() {
        let (mut s, t0) = setup();
        s.finish(t0);
        assert!(!s.is_done());
        s.handle_timeout(t0 + Duration::from_secs(5));
        assert_eq!(s.end(), Some(&End::Timeout));
    }

    #[test]
    fn protocol_violations_end_the_session() {
        let (mut s, t0) = setup();
        s.handle_control(
            t0,
            &ControlMessage::Ping(crate::wire::Ping { id: 1, t1_us: 1 }).to_bytes(),
        );
        assert!(matches!(
            s.end(),
            Some(End::Protocol {
                code: CloseCode::ProtocolViolation,
                ..
            })
        ));

        let (mut s, t0) = setup();
        let mut hello = receiver_hello();
        hello[3] = VERSION + 1;
        s.handle_control(t0, &hello);
        assert!(matches!(
            s.end(),
            Some(End::Protocol {
                code: CloseCode::VersionMismatch,
                ..
            })
        ));
    }

    #[test]
    fn a_flood_of_retransmission_requests_costs_bounded_work_and_is_counted() {
        use crate::wire::control::{MAX_NACK_ENTRIES, Nack, NackEntry};
        let (mut s, t0) = setup();
        s.handle_control(t0, &receiver_hello());
        // 20 frames of 5 fragments go out.
        for _ in 0..20 {
            s.push_frame(t0, frame(t0, 5000)).unwrap();
        }
        let mut sent = 0;
        while s.poll_datagram(t0, 1200).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 100);
        // 1000 NACKs of 64 entries each: every frame, absurd ranges, frames never sent.
        let flood: Vec<u8> = (0..1000u64)
            .flat_map(|i| {
                let entries = (0..MAX_NACK_ENTRIES as u64)
                    .map(|j| NackEntry {
                        seq: (i * 64 + j) % 40,
                        first: (j as u16) % 7,
                        count: if j % 3 == 0 { 0 } else { u16::MAX },
                    })
                    .collect();
                ControlMessage::Nack(Nack { entries }).to_bytes()
            })
            .collect();
        s.handle_control(t0, &flood);
        let mut resent = 0u64;
        while s.poll_datagram(t0, 1200).is_some() {
            resent += 1;
        }
        let r = s.report(t0).recovery;
        assert_eq!(r.retransmit_requests, 64_000);
        assert_eq!(r.retransmitted, resent);
        // At most 3 resends of each of the 20 frames' 5 fragments, within the byte budget.
        assert!(resent <= 20 * 5 * 3, "{resent} datagrams sent again");
        assert!(r.refused.invalid > 0, "frames 20..40 were never sent");
        assert!(r.refused.throttled > 0);
        assert!(s.is_running(), "a flood does not end the session");
    }

    /// What goes again is the datagram first sent, byte for byte but for the copy mark:
    /// compressed, among parity, and after a re-cut to a smaller datagram size part-way.
    #[test]
    fn a_requested_datagram_goes_again_as_it_was_first_sent() {
        use crate::wire::control::{Nack, NackEntry};
        use crate::wire::datagram::mark_copy;
        use crate::wire::parity::{TYPE_PARITY, datagram_type};
        let (mut s, t0) = setup_with(SenderConfig {
            compress: CompressLevel::Fast,
            fec: FecMode::Fixed(0.5),
            ..Default::default()
        });
        s.handle_control(t0, &receiver_hello());
        // Compressible but not trivially: a few kB after DEFLATE.
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * i / 7 % 251) as u8).collect();
        let mut originals = Vec::new();
        for _ in 0..2 {
            s.push_frame(
                t0,
                SourceFrame {
                    capture: t0,
                    keyframe: true,
                    data: Bytes::from(data.clone()),
                },
            )
            .unwrap();
        }
        // Frame 0 whole at 1200 bytes; frame 1 starts at 1200, then the path shrinks to 700.
        let mut size = 1200;
        while let Some(d) = s.poll_datagram(t0, size) {
            if datagram_type(&d) == Some(TYPE_PARITY) {
                continue;
            }
            let (h, _) = FragmentHeader::parse(&d).unwrap();
            assert!(h.flags.contains(FrameFlags::COMPRESSED));
            if h.seq == 1 && h.index == 1 && size == 1200 {
                size = 700;
            }
            originals.push((h.seq, h.count, h.index, d));
        }
        assert!(s.stats().recuts > 0, "frame 1 was re-cut");
        // On the wire now: frame 0's cut, and frame 1's second cut (its first was replaced).
        let count1 = originals.iter().rfind(|o| o.0 == 1).map(|o| o.1).unwrap();
        let expected: Vec<Bytes> = originals
            .iter()
            .filter(|o| o.0 == 0 || o.1 == count1)
            .map(|o| mark_copy(&o.3))
            .collect();
        assert!(
            expected.len() > count1 as usize,
            "both frames of many fragments"
        );
        let all = |seq| NackEntry {
            seq,
            first: 0,
            count: 0,
        };
        let nack = ControlMessage::Nack(Nack {
            entries: vec![all(0), all(1)],
        });
        s.handle_control(t0, &nack.to_bytes());
        let copies: Vec<Bytes> = std::iter::from_fn(|| s.poll_datagram(t0, 1200)).collect();
        assert_eq!(copies, expected);
    }

    /// Automatic parity protects the first frames on an assumed loss; with no report
    /// measuring the loss by then, it stops after [`START_PARITY_FRAMES`] of them.
    #[test]
    fn automatic_parity_covers_only_the_first_frames_until_a_report_measures_the_loss() {
        use crate::wire::parity::{ParityHeader, TYPE_PARITY, datagram_type};
        let (mut s, t0) = setup_with(SenderConfig {
            compress: CompressLevel::Off,
            ..Default::default()
        });
        s.handle_control(t0, &receiver_hello());
        let mut covered = Vec::new();
        for i in 0..3 * START_PARITY_FRAMES {
            let now = t0 + Duration::from_millis(i);
            s.push_frame(now, frame(now, 600)).unwrap();
            while let Some(d) = s.poll_datagram(now, 1200) {
                if datagram_type(&d) == Some(TYPE_PARITY) {
                    let (h, _) = ParityHeader::parse(&d).unwrap();
                    covered.push(h.first_seq + u64::from(h.frames));
                }
            }
            s.handle_timeout(now);
        }
        assert!(!covered.is_empty(), "parity from the start");
        assert!(
            covered.iter().all(|&end| end <= START_PARITY_FRAMES),
            "parity past the first frames: {covered:?}"
        );
    }

    #[test]
    fn abort_discards_and_counts_the_queue() {
        let (mut s, t0) = setup();
        for _ in 0..3 {
            s.push_frame(t0, frame(t0, 10)).unwrap();
        }
        s.abort(t0);
        assert_eq!(s.stats().dropped.shutdown, 3);
        assert_eq!(s.push_frame(t0, frame(t0, 10)), Err(FrameRejected::Closed));
        s.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(s.end(), Some(&End::Shutdown));
    }
}
