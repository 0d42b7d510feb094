//! The receiver's session: datagrams and control bytes in; frames to play, and control
//! messages (hello, clock-sync pings, reports, goodbye) out.
//!
//! A datagram is parsed, its fragment reassembled; a complete frame is decompressed (bounded by
//! the length its header declares, itself bounded by the frame-size limit), its network delay
//! recorded, and it goes into the jitter buffer, which releases it at its playout time. Every
//! datagram that cannot be used is counted by reason and dropped; nothing from the network can
//! make this code panic or grow without bound.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use super::sender::{fraction, ratio, to_wire};
use super::{End, Handshake, SOFTWARE, handshake, queue_control};
use crate::clock::{ClockAnchor, ClockMode, ClockSync, diff_us, whole_micros};
use crate::compress::Decompressor;
use crate::fec::{FecDecoder, FecLimits, FecStats};
use crate::jitter::{Inserted, JitterBuffer, JitterConfig, PlayedFrame, ReadyFrame};
use crate::loss::LossMeter;
use crate::reassemble::{Accepted, Assembled, Reassembler, ReassemblyLimits, Rejected};
use crate::stats::report::{
    ByteReport, ClockReport, ControlDrops, DatagramDrops, DatagramReport, FrameReport,
    JitterReport, RecoveryReport, SessionReport,
};
use crate::stats::{Delays, InterarrivalJitter, QueueingDelay};
use crate::timer::{Timer, Timers};
use crate::wire::control::{
    ControlDecoder, ControlMessage, Goodbye, Hello, MAX_NACK_ENTRIES, Nack, NackEntry, Ping,
    Report, Role, Summary,
};
use crate::wire::datagram::is_copy;
use crate::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN};
use crate::wire::parity::{PARITY_HEADER_LEN, ParityHeader, TYPE_PARITY, datagram_type};
use crate::wire::{CloseCode, VERSION};

/// Receiver configuration. The defaults suit the public internet and loopback alike.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// The jitter buffer.
    pub jitter: JitterConfig,
    /// Reassembly memory limits (also the frame-size and decompression limit).
    pub reassembly: ReassemblyLimits,
    /// Memory the FEC decoder may keep (recent datagrams and parity).
    pub fec: FecLimits,
    /// Take FEC parity (`rtq-recv --fec auto`). Off: the hello asks the sender for none, and
    /// any that comes is dropped (`parity_declined`).
    pub parity: bool,
    /// Ask the sender to send lost fragments again when they can still arrive in time (and
    /// keep room for that in the playout delay).
    pub nack: bool,
    /// Least time a gap must last before its fragments are asked for (reordering, pacing);
    /// twice the interarrival jitter when that is larger, or the reordering learned from
    /// originals that came after they were asked for (the last 10 s, at most 50 ms).
    pub nack_wait: Duration,
    /// How capture times map onto this clock.
    pub clock: ClockMode,
    /// Largest control message accepted from the sender, bytes.
    pub max_control_message: usize,
    /// How often a receiver report goes to the sender (100 ms to 1 s).
    pub report_interval: Duration,
    /// How often a clock-sync ping goes out once the first few are done.
    pub ping_interval: Duration,
    /// How long a partial frame is kept past its playout time, so that a frame completing late
    /// is told apart from one lost.
    pub late_grace: Duration,
    /// After the sender's goodbye, how long to wait beyond the playout delay for the last
    /// frames.
    pub linger: Duration,
    /// A sender whose hello has not come this long after the connection is dropped (it would
    /// hold a session slot for nothing).
    pub hello_timeout: Duration,
    /// Admit only senders whose hello shows this shared secret (`rtq-recv --token-file`); a
    /// sender without it is refused with a reason.
    pub token: Option<crate::wire::control::Token>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            jitter: JitterConfig::default(),
            reassembly: ReassemblyLimits::default(),
            fec: FecLimits::default(),
            parity: true,
            nack: true,
            nack_wait: Duration::from_millis(5),
            clock: ClockMode::Sync,
            max_control_message: crate::wire::control::DEFAULT_MAX_MESSAGE,
            report_interval: Duration::from_millis(250),
            ping_interval: Duration::from_secs(1),
            late_grace: Duration::from_millis(200),
            linger: Duration::from_millis(500),
            hello_timeout: Duration::from_secs(10),
            token: None,
        }
    }
}

impl ReceiverConfig {
    /// Checks the configuration, naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let j = &self.jitter;
        if j.max_delay < j.min_delay {
            return Err("maximum playout delay is below the minimum".into());
        }
        if let crate::jitter::JitterMode::Fixed(d) = j.mode
            && d > j.max_delay
        {
            return Err(format!(
                "fixed playout delay {} exceeds the maximum {}: raise --max-delay",
                crate::units::format_duration(d),
                crate::units::format_duration(j.max_delay)
            ));
        }
        if !(0.5..=1.0).contains(&j.percentile) {
            return Err("jitter percentile must be between 0.5 and 1.0".into());
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(1)).contains(&self.report_interval) {
            return Err("report interval must be between 100ms and 1s".into());
        }
        let r = &self.reassembly;
        if r.max_frames == 0 || r.max_bytes == 0 || r.max_frame_bytes == 0 {
            return Err("reassembly limits must be at least 1 (rtq-recv: --max-partial-frames, --max-partial-bytes, --max-frame-size)".into());
        }
        let frame_fits = (r.max_frame_bytes as usize) <= r.max_bytes.min(j.max_bytes);
        if !frame_fits {
            return Err(format!(
                "frame-size limit {} exceeds the reassembly or jitter-buffer memory bound ({}): lower --max-frame-size or raise --max-partial-bytes",
                crate::units::format_bytes(u64::from(r.max_frame_bytes)),
                crate::units::format_bytes(r.max_bytes.min(j.max_bytes) as u64)
            ));
        }
        let hour = Duration::from_secs(3600);
        if j.max_delay > hour || self.hello_timeout > hour || self.linger > hour {
            return Err("delays and timeouts above 1 hour are not supported".into());
        }
        if self.hello_timeout.is_zero() {
            return Err("hello timeout 0 would drop every sender".into());
        }
        Ok(())
    }
}

/// Counters of the receiver, for tests and status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams handed to the session.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes_datagrams: u64,
    /// Frames with at least one fragment received.
    pub frames_received: u64,
    /// Frames reassembled and decompressed.
    pub frames_complete: u64,
    /// Frames played.
    pub frames_played: u64,
    /// Frames late.
    pub frames_late: u64,
    /// Frames lost.
    pub frames_lost: u64,
    /// Keyframes played.
    pub keyframes_played: u64,
    /// Frame bytes as carried (compressed).
    pub bytes_compressed: u64,
    /// Frame bytes after decompression.
    pub bytes_payload: u64,
    /// Datagrams dropped, by reason.
    pub dropped: DatagramDrops,
    /// Control messages skipped, by reason.
    pub control_errors: ControlDrops,
    /// Frames released early at shutdown.
    pub flushed: u64,
    /// Periodic control messages not queued because the backlog was full.
    pub control_backlog_drops: u64,
    /// Fragments restored by FEC that reassembly used.
    pub fec_recovered: u64,
    /// Retransmission requests sent (NACK entries).
    pub nack_entries: u64,
    /// NACK messages sent.
    pub nacks_sent: u64,
    /// Request entries sent a second time as a repeat (NACK datagram type 3).
    pub nack_repeats: u64,
    /// Fragments asked for again that arrived and were used.
    pub retransmit_recovered: u64,
    /// FEC decoder counters.
    pub fec: FecStats,
}

/// Where a fragment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// It arrived by itself.
    Wire,
    /// FEC restored it.
    Fec,
    /// It came after it was asked for again.
    Retransmit,
}

/// What was asked for of one frame.
#[derive(Debug, Clone)]
struct Asked {
    /// When it was last asked for (or, before that, when its absence was noticed).
    at: Instant,
    /// Requests sent.
    tries: u8,
    /// Since when it counted as missing (the frame's last fragment before the gap, or when
    /// its absence was noticed); none for frames guessed at past the newest seen.
    since: Option<Instant>,
}

/// How often the receiver looks for fragments to ask for again.
const NACK_SCAN: Duration = Duration::from_millis(5);
/// How long after a copy last filled in for a lost fragment the playout delay keeps room for
/// retransmission.
const RECOVERY_MEMORY: Duration = Duration::from_secs(10);

/// Datagrams (retransmission requests) held for the shell to send at most.
const MAX_DATAGRAM_BACKLOG: usize = 64;
/// Requests per frame at most.
const NACK_TRIES: u8 = 2;
/// How long after a first request sent as a datagram it is sent again, as a repeat (which the
/// sender answers only for frames it has not sent again yet): a lost request would otherwise
/// cost its frames, as it is asked again only once its copies could have come, a round trip
/// later. Spaced so that a request and its repeats do not all fall in one burst of loss on the
/// way back.
const NACK_REPEAT_AFTER: Duration = Duration::from_millis(20);
/// Repeats of a first request at most (each only while its frame is incomplete and a copy can
/// still arrive in time).
const NACK_REPEATS: u8 = 2;
/// Request entries waiting to be repeated at most.
const MAX_REPEATS: usize = 1024;
/// How long a reordering window learned from originals that came after they were asked for
/// stays (see [`ReceiverSession::reorder_wait`]).
const REORDER_MEMORY: Duration = Duration::from_secs(10);
/// The largest reordering window learned.
const MAX_REORDER_WAIT: Duration = Duration::from_millis(50);
/// Frames past the newest seen that one scan asks for at most (those overdue by their expected
/// capture time: the rest of a burst, before a frame after it arrives).
const MAX_ASK_AHEAD: u64 = 32;
/// How far past the newest frame seen (in expected capture time) frames are asked for: a loss
/// burst is short, and a longer silence is an outage or a queue, where copies of frames that
/// are merely delayed would only add to the load (only the next frame is asked for then).
const MAX_ASK_AHEAD_SPAN: Duration = Duration::from_millis(50);
/// How long after a request its copies are given before the frame is asked for again, on top
/// of the round trip and the wait: the sender's second copy goes up to
/// [`crate::retransmit::COPY_SPACING`] after the first, plus the margin it keeps.
const RETRY_AFTER: Duration =
    crate::retransmit::COPY_SPACING.saturating_add(crate::retransmit::COPY_MARGIN);
/// The retransmission room as one scan of [`ReceiverSession::ask_again`] sees it.
struct RecoveryRoom {
    /// Room a copy needs: the wait, the scan and the copy's trip.
    allowance: Duration,
    /// How long the room is kept for a loss noticed, until its copies show whether the
    /// original was lost (a copy fills it in) or merely held up (it came itself).
    hold: Duration,
    /// Whether the playout delay keeps that room (losses were repaired lately).
    recovering: bool,
    now: Instant,
    now_us: u64,
    /// The copy's trip, µs: it must arrive that long before its frame plays.
    slack: u64,
    /// The round trip is QUIC's estimate, not yet the clock sync's: copies are asked for, but
    /// no room is made (a smoothed round trip, with the queueing it met, would make too much,
    /// and the adaptive playout keeps room long after).
    provisional: bool,
}

impl RecoveryRoom {
    /// Notes a missing frame captured at `capture_us`: when a copy would arrive in time with
    /// the room (not for frames, such as large keyframes losing their tail in a queue, that
    /// no reasonable room would save), the room is made at once, not at the next scan, so
    /// that the first loss after a quiet spell is saved too, and kept until the copies are
    /// due (`held_until`). Whether it stays longer is up to the copies: only one that fills
    /// in for an original that never came shows the path losing datagrams
    /// ([`RECOVERY_MEMORY`]); a frame held up in a scheduling hiccup looks missing too.
    fn note(
        &mut self,
        jitter: &mut JitterBuffer,
        held_until: &mut Option<Instant>,
        capture_us: u64,
    ) {
        if self.provisional {
            return;
        }
        let saved = jitter
            .playout_with_allowance_us(capture_us, self.allowance)
            .is_some_and(|play| self.now_us.saturating_add(self.slack) < play);
        if saved {
            *held_until = Some(self.now + self.hold);
            if !self.recovering {
                self.recovering = true;
                jitter.set_recovery_allowance(Some(self.allowance));
            }
        }
    }
}

/// Frames whose requests are remembered at most.
const MAX_ASKED: usize = 2048;

/// Frames whose fragments are kept for parity before any parity or loss was seen
/// ([`ReceiverSession::keeps_for_parity`]): those automatic parity protects on an assumed
/// loss, and a fixed ratio's first groups, with room to spare (a group holds at most
/// [`crate::fec::MAX_GROUP_FRAMES`] frames).
const KEPT_BEFORE_PARITY: u64 = crate::fec::START_PARITY_FRAMES;

/// How long fragments are kept for parity after parity last came or loss was last counted
/// ([`ReceiverSession::keeps_for_parity`]). A sender's automatic parity follows loss down
/// slowly (seconds after the last loss); on a path without loss it stops after its start.
const PARITY_KEEP: Duration = Duration::from_secs(1);

/// Fragments of played (or given-up) frames after which the first report goes, if that comes
/// before the report interval: enough for the sender to take its measure of the loss
/// (it wants 50), which ends the parity it sends at the start on an assumed loss.
const FIRST_REPORT_FRAGMENTS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The sender said goodbye; playing out the last frames.
    Draining,
    Done,
}

/// Clock-sync pings sent in quick succession at the start, for a good first estimate, and
/// again when their answers come held up together (see [`ReceiverSession::send_ping`]).
const FIRST_PINGS: u32 = 5;
const FIRST_PING_SPACING: Duration = Duration::from_millis(20);
/// The answers to the first pings, sent [`FIRST_PING_SPACING`] apart, arriving within less
/// than half their spacing were held up together on the way.
const HELD_UP_SPREAD: Duration = Duration::from_millis(40);

/// The receiver's session. See the module documentation, and [`crate::session`] for the call
/// order.
#[derive(Debug)]
pub struct ReceiverSession {
    cfg: ReceiverConfig,
    anchor: ClockAnchor,
    /// The last instant converted to µs, and its value ([`Self::micros`]).
    last_now: crate::clock::LastMicros,
    started: Instant,
    ended_at: Option<Instant>,
    phase: Phase,
    end: Option<End>,
    reassembler: Reassembler,
    fec: FecDecoder,
    /// Until when fragments are kept for parity ([`Self::keeps_for_parity`]).
    parity_armed_until: Option<Instant>,
    /// Fragments missing when loss last armed the keeping for parity.
    armed_missing: u64,
    /// No report has gone yet that covers [`FIRST_REPORT_FRAGMENTS`] fragments.
    first_report_pending: bool,
    loss: LossMeter,
    asked: std::collections::BTreeMap<u64, Asked>,
    /// When a copy last filled in a fragment whose original never came (retransmission was
    /// needed).
    needed_recovery_at: Option<Instant>,
    /// Until when the room for fragments noticed missing is kept while their copies are due
    /// ([`RecoveryRoom::note`]).
    room_held_until: Option<Instant>,
    /// When the path last held a standing queue (see [`Self::congested`]).
    queued_at: Option<Instant>,
    /// Time between consecutive frames' captures, smoothed, µs.
    frame_interval_us: Option<u64>,
    /// Capture times of recently seen frames (to place a wholly missing frame in time).
    captures: crate::seqmap::SeqMap<u64, u64>,
    decompressor: Decompressor,
    jitter: JitterBuffer,
    clock: ClockSync,
    decoder: ControlDecoder,
    out: Vec<u8>,
    timers: Timers,
    pings_sent: u32,
    /// When the first pong came.
    first_pong_at: Option<Instant>,
    /// QUIC's round-trip estimate, µs, standing in for the clock sync's until its first
    /// exchange completes ([`set_transport_rtt`](Self::set_transport_rtt)).
    transport_rtt_us: Option<u64>,
    /// When it was last given.
    transport_rtt_at: Option<Instant>,
    /// Pings of a quick succession still to send, each [`FIRST_PING_SPACING`] after the last.
    quick_pings: u32,
    next_seq_seen: u64,
    close_due: bool,
    peer_hello: Option<Hello>,
    peer_goodbye: Option<Goodbye>,
    delays: Delays,
    /// Delay variation of fragments that came by themselves.
    interarrival: InterarrivalJitter,
    /// The same over every fragment, restored or asked for again too: the wait before asking
    /// on a path with a standing queue (see [`Self::congested`]).
    interarrival_all: InterarrivalJitter,
    /// Queueing delay over every fragment (reported to the sender, for rate adaptation).
    queueing: QueueingDelay,
    /// Queueing delay of fragments that came by themselves (a copy's round trip is no queue).
    queueing_own: QueueingDelay,
    /// The rate the path delivers bursts at, for the sender's pacing.
    burst: crate::stats::BurstRate,
    /// Fragments have come on frame streams (`--transport stream`): QUIC retransmits, so
    /// nothing is asked again.
    stream_transport: bool,
    /// Retransmission requests go as datagrams (else on the control stream).
    nack_datagrams: bool,
    /// Datagrams for the shell to send (NACKs), at most [`MAX_DATAGRAM_BACKLOG`].
    dgram_out: std::collections::VecDeque<Bytes>,
    /// The longest an original that was asked for took to come after it counted as missing,
    /// and when that was last seen: the reordering the wait must cover.
    late_gap: Option<(Instant, Duration)>,
    /// First requests sent as datagrams, to be repeated at the instant given (at most
    /// [`MAX_REPEATS`] entries), each with its frame's capture time and the repeats left.
    repeats: std::collections::VecDeque<(Instant, NackEntry, u64, u8)>,
    stats: ReceiverStats,
}

impl ReceiverSession {
    /// A new session; its hello is ready in [`poll_control`](Self::poll_control).
    pub fn new(cfg: ReceiverConfig, anchor: ClockAnchor, now: Instant) -> Self {
        let mut s = Self {
            reassembler: Reassembler::new(cfg.reassembly),
            fec: FecDecoder::new(cfg.fec),
            parity_armed_until: None,
            armed_missing: 0,
            first_report_pending: true,
            loss: LossMeter::default(),
            asked: Default::default(),
            needed_recovery_at: None,
            room_held_until: None,
            queued_at: None,
            frame_interval_us: None,
            captures: Default::default(),
            decompressor: Decompressor::default(),
            jitter: JitterBuffer::new(cfg.jitter),
            clock: ClockSync::new(cfg.clock),
            decoder: ControlDecoder::new(cfg.max_control_message),
            cfg,
            anchor,
            last_now: Default::default(),
            started: now,
            ended_at: None,
            phase: Phase::Running,
            end: None,
            out: Vec::new(),
            timers: Timers::default(),
            pings_sent: 0,
            first_pong_at: None,
            transport_rtt_us: None,
            transport_rtt_at: None,
            quick_pings: FIRST_PINGS - 1,
            next_seq_seen: 0,
            close_due: false,
            peer_hello: None,
            peer_goodbye: None,
            delays: Delays::default(),
            interarrival: InterarrivalJitter::default(),
            interarrival_all: InterarrivalJitter::default(),
            queueing: QueueingDelay::default(),
            queueing_own: QueueingDelay::default(),
            burst: crate::stats::BurstRate::default(),
            stream_transport: false,
            nack_datagrams: true,
            dgram_out: Default::default(),
            repeats: Default::default(),
            late_gap: None,
            stats: ReceiverStats::default(),
        };
        let hello = Hello {
            version: VERSION,
            role: Role::Receiver,
            clock_us: anchor.micros(now),
            max_frame_bytes: s.cfg.reassembly.max_frame_bytes,
            software: SOFTWARE.into(),
            no_parity: !s.cfg.parity,
            token: None,
        };
        queue_control(&mut s.out, &ControlMessage::Hello(hello), true);
        s.timers.set(Timer::Ping, now);
        s.timers.set(Timer::Idle, now + s.cfg.hello_timeout);
        s.timers.set(Timer::Report, now + s.cfg.report_interval);
        if s.cfg.nack {
            s.timers.set(Timer::Nack, now + NACK_SCAN);
        }
        s
    }

    /// Where retransmission requests go: datagrams (the default), or the control stream for a
    /// peer that does not accept datagrams (`docs/PROTOCOL.md` §4.9). The shell says.
    pub fn set_nack_datagrams(&mut self, on: bool) {
        self.nack_datagrams = on;
        if !on {
            // On the control stream a request is not lost: nothing to repeat.
            self.repeats.clear();
        }
    }

    /// The next datagram to send to the sender (a retransmission request), if any.
    pub fn poll_datagram(&mut self) -> Option<Bytes> {
        self.dgram_out.pop_front()
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceiverStats {
        let mut st = self.stats;
        let j = self.jitter.stats();
        st.frames_played = j.played;
        st.frames_late = j.late;
        st.frames_lost = j.lost;
        st.fec = self.fec.stats();
        st
    }

    /// The three delay histograms.
    pub fn delays(&self) -> &Delays {
        &self.delays
    }

    /// Whether the session would take QUIC's round-trip estimate
    /// ([`set_transport_rtt`](Self::set_transport_rtt)) now: until the answers to its first
    /// clock-sync pings are in, once per request scan (reading it takes QUIC's connection
    /// lock, which a shell should not do per datagram).
    pub fn wants_transport_rtt(&self, now: Instant) -> bool {
        self.clock.samples() < u64::from(FIRST_PINGS)
            && self.transport_rtt_at.is_none_or(|at| now >= at + NACK_SCAN)
    }

    /// QUIC's round-trip estimate (quinn's `Connection::rtt`, measured from the handshake on),
    /// which stands in for the clock sync's round trip until its first exchange completes.
    /// Without a round trip the session cannot tell whether a copy would arrive in time, and
    /// asks for none; the first exchange can take a while (its pings wait behind a lost packet
    /// of the control stream), and frames lost meanwhile were lost for good. It also tells
    /// first pings held up on the way from ones queued behind data.
    pub fn set_transport_rtt(&mut self, now: Instant, rtt: Duration) {
        if self.clock.samples() < u64::from(FIRST_PINGS) && !rtt.is_zero() {
            self.transport_rtt_us = Some(whole_micros(rtt));
            self.transport_rtt_at = Some(now);
        }
    }

    /// Whether the clock sync's round trip is half again QUIC's estimate (its pings were held
    /// up on the way, not merely queued behind data, which QUIC's round trip includes too).
    fn held_up_beyond_transport(&self) -> bool {
        match (self.clock.min_rtt_us(), self.transport_rtt_us) {
            (Some(ping), Some(quic)) => ping > quic.saturating_add(quic / 2),
            _ => false,
        }
    }

    /// The path's round trip, µs: the clock sync's smallest, or before its first exchange
    /// QUIC's estimate.
    fn rtt_us(&self) -> Option<u64> {
        self.clock.min_rtt_us().or(self.transport_rtt_us)
    }

    /// The clock-offset estimator.
    pub fn clock(&self) -> &ClockSync {
        &self.clock
    }

    /// The current end-to-end playout delay target, µs.
    pub fn target_delay_us(&self) -> Option<i64> {
        self.jitter.target_delay_us()
    }

    /// The sender's hello, once received.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    /// Frames the sender said it sent, once it said goodbye.
    pub fn peer_goodbye(&self) -> Option<&Goodbye> {
        self.peer_goodbye.as_ref()
    }

    /// Memory held for frames: partial frames being reassembled plus complete frames waiting to
    /// play, in bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.reassembler.partial_bytes() + self.jitter.bytes()
    }

    /// Everything the session holds: partial and complete frames, FEC datagrams, requests
    /// outstanding, control bytes waiting (see [`Footprint`](super::Footprint)).
    pub fn footprint(&self) -> super::Footprint {
        let dgrams: usize = self.dgram_out.iter().map(Bytes::len).sum();
        super::Footprint {
            bytes: self.buffered_bytes()
                + self.fec.bytes()
                + self.decoder.buffered()
                + self.out.len()
                + dgrams,
            entries: self.reassembler.partial_frames()
                + self.jitter.len()
                + self.fec.entries()
                + self.asked.len()
                + self.captures.len()
                + self.dgram_out.len()
                + self.repeats.len(),
        }
    }

    /// Memory the FEC decoder holds: recent datagrams and parity, in bytes (bounded by
    /// [`ReceiverConfig::fec`]).
    pub fn fec_bytes(&self) -> usize {
        self.fec.bytes()
    }

    /// Whether the session is over; [`end`](Self::end) says how.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// How the session ended, once it has.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// Feeds one datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Bytes) {
        if self.phase == Phase::Done {
            return;
        }
        self.stats.datagrams += 1;
        self.stats.bytes_datagrams += datagram.len() as u64;
        if datagram.len() >= PARITY_HEADER_LEN && datagram_type(&datagram) == Some(TYPE_PARITY) {
            if !self.cfg.parity {
                self.stats.dropped.parity_declined();
                return;
            }
            self.handle_parity(now, datagram);
        } else {
            self.handle_fragment(now, datagram, Origin::Wire);
        }
        if self.first_report_pending && self.loss_counts().expected >= FIRST_REPORT_FRAGMENTS {
            // The sender's automatic parity runs on an assumed loss until a report measures
            // it: on a fast path that report need not wait for the interval.
            self.first_report_pending = false;
            self.timers.set(Timer::Report, now);
        }
    }

    /// Takes one record of a frame stream (`--transport stream`): a fragment as it would have
    /// come in a datagram. From the first one on, the session asks for nothing again (QUIC
    /// retransmits stream data).
    pub fn handle_stream_record(&mut self, now: Instant, record: Bytes) {
        if self.phase == Phase::Done {
            return;
        }
        if !self.stream_transport {
            self.stream_transport = true;
            self.asked.clear();
            self.timers.stop(Timer::Nack);
        }
        self.handle_datagram(now, record);
    }

    /// The shell gave up a frame stream whose framing was invalid (counted as `bad_stream`).
    pub fn frame_stream_failed(&mut self) {
        self.stats.dropped.bad_stream();
    }

    /// How frames reach this session: by stream once a frame stream has delivered a record.
    pub fn transport(&self) -> super::FrameTransport {
        if self.stream_transport {
            super::FrameTransport::Stream
        } else {
            super::FrameTransport::Datagram
        }
    }

    fn handle_parity(&mut self, now: Instant, datagram: Bytes) {
        let h = match ParityHeader::parse(&datagram) {
            Ok((h, _)) => h,
            Err(e) => {
                trace!(%e, "parity dropped");
                self.stats.dropped.bad_parity();
                return;
            }
        };
        // Parity for frames far beyond anything seen would make the decoder forget the
        // frames it holds: the reassembler's bound applies.
        let top = self.next_seq_seen.max(self.jitter.next_seq());
        if h.first_seq > top.saturating_add(self.cfg.reassembly.max_jump) {
            self.stats.dropped.rejected(Rejected::TooFarAhead);
            return;
        }
        if h.first_seq.saturating_add(u64::from(h.frames)) > KEPT_BEFORE_PARITY {
            // (Parity of the first frames, whose fragments are kept anyway, arms nothing: on
            // a clean path the sender's parity on an assumed loss ends there.)
            self.parity_armed_until = Some(now + PARITY_KEEP);
        }
        let shard = datagram.slice(PARITY_HEADER_LEN..);
        for d in self.fec.on_parity(&h, shard) {
            self.handle_fragment(now, d, Origin::Fec);
        }
    }

    fn handle_fragment(&mut self, now: Instant, datagram: Bytes, origin: Origin) {
        let header = match FragmentHeader::parse(&datagram) {
            Ok((h, _)) => h,
            Err(e) => {
                trace!(%e, "datagram dropped");
                self.stats.dropped.parse_error(&e);
                return;
            }
        };
        // A copy says so: an original held up on the path (asked for, then arriving after
        // all) arrived by itself, and is no loss.
        let origin = match origin {
            Origin::Wire if is_copy(&datagram) => Origin::Retransmit,
            o => o,
        };
        let body = datagram.slice(HEADER_LEN..);
        let expires = self.give_up_at(now, header.capture_us);
        let accepted = self.reassembler.insert(now, header, body, expires);
        let keep = !matches!(
            accepted,
            Err(Rejected::TooFarAhead | Rejected::TooLarge | Rejected::Malformed)
        );
        if origin == Origin::Wire && keep {
            self.loss
                .on_fragment(header.seq, header.index, header.count);
        }
        if accepted.is_ok() {
            if origin == Origin::Wire {
                self.learn_reordering(now, header.seq);
                let now_us = self.micros(now);
                self.burst.on_fragment(now_us, header.seq, datagram.len());
            }
            match origin {
                Origin::Fec => self.stats.fec_recovered += 1,
                Origin::Retransmit => {
                    // The original never came (a copy that is not needed is a duplicate).
                    self.stats.retransmit_recovered += 1;
                    self.needed_recovery_at = Some(now);
                }
                Origin::Wire => {}
            }
        }
        match accepted {
            Ok(Accepted::Partial { first }) => {
                if first {
                    self.on_first_fragment(now, &header, origin);
                }
            }
            Ok(Accepted::Complete { frame, first }) => {
                if first {
                    self.on_first_fragment(now, &header, origin);
                }
                self.on_complete(now, frame);
            }
            Err(r) => {
                trace!(%r, seq = header.seq, "fragment dropped");
                if origin != Origin::Fec {
                    self.stats.dropped.rejected(r);
                }
            }
        }
        // Fragments that came by themselves (even of frames already complete: a group of
        // small frames needs them all) are kept for the groups they belong to.
        if origin == Origin::Wire && keep && self.keeps_for_parity(now, header.seq) {
            for d in self.fec.on_fragment(&header, datagram) {
                self.handle_fragment(now, d, Origin::Fec);
            }
        }
    }

    /// Whether fragments are kept for parity: for the first [`KEPT_BEFORE_PARITY`] frames,
    /// and for [`PARITY_KEEP`] after parity of later frames came or this receiver counted loss
    /// (which its reports tell the sender). A sender's automatic parity protects the first
    /// frames on an assumed loss, and later ones only after a report names loss, so every
    /// later group it protects was sent after that report, and its fragments arrive after
    /// this receiver counted the loss; a fixed ratio's parity comes from the first group on.
    /// Otherwise — a clean path — fragments are not stored only to be evicted unused (a map
    /// entry and a bounds trim each).
    fn keeps_for_parity(&mut self, now: Instant, seq: u64) -> bool {
        if !self.cfg.parity {
            return false;
        }
        let missing = self.loss.counts().missing;
        if missing > self.armed_missing {
            self.armed_missing = missing;
            self.parity_armed_until = Some(now + PARITY_KEEP);
        }
        self.parity_armed(now) || seq < KEPT_BEFORE_PARITY
    }

    /// Whether fragments are kept for parity at `now`, past the first frames.
    fn parity_armed(&self, now: Instant) -> bool {
        self.parity_armed_until.is_some_and(|t| now < t)
    }

    /// An original of frame `seq` came: if it had been asked for, the path reorders (or
    /// spreads a frame) by more than the wait allowed; the wait grows to cover it, as RACK's
    /// reordering window does on a spurious retransmission (RFC 8985 §6.2).
    fn learn_reordering(&mut self, now: Instant, seq: u64) {
        let Some(since) = self
            .asked
            .get(&seq)
            .filter(|a| a.tries > 0)
            .and_then(|a| a.since)
        else {
            return;
        };
        let gap = now
            .saturating_duration_since(since)
            .saturating_add(Duration::from_millis(1))
            .min(MAX_REORDER_WAIT);
        self.late_gap = Some((now, gap.max(self.reorder_wait(now))));
    }

    /// The reordering window learned in the last [`REORDER_MEMORY`] (zero without one).
    fn reorder_wait(&self, now: Instant) -> Duration {
        match self.late_gap {
            Some((at, gap)) if now < at + REORDER_MEMORY => gap,
            _ => Duration::ZERO,
        }
    }

    /// When to give up on a frame captured at `capture_us`: past its playout time by the grace
    /// period, and never later than the maximum delay from now.
    fn give_up_at(&self, now: Instant, capture_us: u64) -> Instant {
        let cap = now + self.cfg.jitter.max_delay + self.cfg.late_grace;
        let Some(play) = self.jitter.playout_us(capture_us) else {
            return cap;
        };
        let at = self.anchor.instant(play) + self.cfg.late_grace;
        at.clamp(now, cap)
    }

    fn on_first_fragment(&mut self, now: Instant, h: &FragmentHeader, origin: Origin) {
        self.stats.frames_received += 1;
        // The frame interval, from consecutive frames' capture times (smoothed).
        if let Some(&prev) = self.captures.get(&h.seq.wrapping_sub(1))
            && h.capture_us > prev
        {
            let d = h.capture_us - prev;
            // A sender's clock jumping by more than a second is no frame interval.
            let d = d.min(1_000_000);
            self.frame_interval_us = Some(match self.frame_interval_us {
                Some(i) => (i.saturating_mul(7).saturating_add(d)) / 8,
                None => d,
            });
        }
        self.captures.insert(h.seq, h.capture_us);
        if self.captures.len() > MAX_ASKED {
            self.captures.pop_first();
        }
        // (Looked at only when there are such guesses: this runs for every new frame.)
        if h.seq >= self.next_seq_seen
            && self.asked.last_key_value().is_some_and(|(&k, _)| k > h.seq)
        {
            // Requests for frames beyond it were guesses from the expected frame times; the
            // frames after it are expected anew.
            drop(self.asked.split_off(&h.seq.saturating_add(1)));
        }
        self.next_seq_seen = self.next_seq_seen.max(h.seq.saturating_add(1));
        let now_us = self.micros(now);
        let transit = diff_us(now_us, h.capture_us);
        self.queueing.update(now_us, transit);
        self.interarrival_all.update(transit);
        // The delay variation is the network's: a fragment that FEC restored or that came
        // again when asked for arrives a group or a round trip late, and counting it would take
        // recovery for jitter — which widens the retransmission wait, and with it the playout
        // delay, the more recovery there is.
        if origin == Origin::Wire {
            self.interarrival.update(transit);
            self.queueing_own.update(now_us, transit);
        }
    }

    fn on_complete(&mut self, now: Instant, frame: Assembled) {
        let h = frame.header;
        self.stats.bytes_compressed += frame.body.len() as u64;
        let data = if h.flags.contains(FrameFlags::COMPRESSED) {
            match self
                .decompressor
                .decompress(&frame.body, h.payload_len as usize)
            {
                Ok(d) => d,
                Err(e) => {
                    debug!(%e, seq = h.seq, "frame dropped");
                    self.stats.dropped.decompress_failed();
                    return;
                }
            }
        } else {
            frame.body
        };
        self.stats.frames_complete += 1;
        self.stats.bytes_payload += data.len() as u64;
        let now_us = self.micros(now);
        let offset = self.clock.offset_us();
        self.delays
            .network
            .record(diff_us(now_us, h.capture_us).saturating_add(offset));
        let ready = ReadyFrame {
            seq: h.seq,
            capture_us: h.capture_us,
            flags: h.flags,
            data,
            complete_us: now_us,
            retransmitted: self.asked.get(&h.seq).is_some_and(|a| a.tries > 0),
        };
        match self.jitter.insert(now_us, ready) {
            Inserted::Buffered => trace!(seq = h.seq, "frame buffered"),
            Inserted::Late => debug!(seq = h.seq, "frame late"),
            Inserted::Duplicate | Inserted::Overflow | Inserted::TooEarly => {
                debug!(seq = h.seq, "frame not buffered")
            }
        }
    }

    /// `now` in µs on this clock. The last conversion is remembered: handling one datagram,
    /// and the playout that follows, ask for the same instant several times.
    fn micros(&mut self, now: Instant) -> u64 {
        self.last_now.get(&self.anchor, now)
    }

    /// The next frame due at `now`, in sequence order. Call until it returns `None`.
    pub fn poll_frame(&mut self, now: Instant) -> Option<PlayedFrame> {
        let now_us = self.micros(now);
        let played = self.jitter.poll(now_us);
        match &played {
            Some(p) => self.record_played(p),
            None => self.maybe_finish(now),
        }
        played
    }

    fn record_played(&mut self, p: &PlayedFrame) {
        let f = &p.frame;
        // capture on this clock = capture_us − offset; the delays are differences from it.
        let offset = self.clock.offset_us();
        self.delays
            .jitter_buffer
            .record(diff_us(p.played_us, f.complete_us));
        self.delays
            .end_to_end
            .record(diff_us(p.played_us, f.capture_us).saturating_add(offset));
        if f.flags.contains(FrameFlags::KEYFRAME) {
            self.stats.keyframes_played += 1;
        }
    }

    /// When the next frame is due to play, if one is waiting.
    pub fn next_playout(&self) -> Option<Instant> {
        self.jitter.next_due_us().map(|us| self.anchor.instant(us))
    }

    /// Feeds bytes read from the control stream.
    ///
    /// Once the session is over, only a late goodbye from the sender is still taken, for its
    /// counts (a receiver that ended first learns how many frames were sent).
    pub fn handle_control(&mut self, now: Instant, data: &[u8]) {
        self.decoder.push(data);
        while let Some(msg) = self.decoder.next_message() {
            match msg {
                Ok(ControlMessage::Goodbye(g)) if self.phase == Phase::Done => self.late_goodbye(g),
                Ok(_) if self.phase == Phase::Done => {}
                Ok(m) => self.on_message(now, m),
                Err(e) => {
                    debug!(%e, "control message skipped");
                    self.stats.control_errors.record(&e);
                }
            }
        }
    }

    /// The sender's goodbye after this side ended: keep its counts; frames it transmitted that
    /// never arrived are lost.
    fn late_goodbye(&mut self, g: Goodbye) {
        if self.peer_goodbye.is_none() {
            self.peer_goodbye = Some(g);
            self.jitter
                .finish(g.frames_transmitted.max(self.jitter.next_seq()));
        }
    }

    fn on_message(&mut self, now: Instant, msg: ControlMessage) {
        let msg = match handshake(self.peer_hello.is_some(), Role::Sender, msg) {
            Handshake::Fail(code, why) => return self.fail(now, code, &why),
            Handshake::Duplicate => {
                self.stats.control_errors.unexpected += 1;
                return;
            }
            Handshake::Hello(h) => {
                if let Some(t) = &self.cfg.token
                    && !t.admits(h.token.as_ref())
                {
                    let why = match h.token {
                        Some(_) => "wrong token: give rtq-send the --token-file this receiver uses",
                        None => {
                            "this receiver admits only senders with its token: pass rtq-send --token-file"
                        }
                    };
                    return self.fail(now, CloseCode::Refused, why);
                }
                debug!(software = %h.software, "sender hello");
                self.timers.stop(Timer::Idle);
                self.clock.on_hello(h.clock_us, self.anchor.micros(now));
                self.jitter.set_offset(self.clock.offset_us());
                self.peer_hello = Some(h);
                return;
            }
            Handshake::Message(m) => m,
        };
        match msg {
            // Taken by the handshake above.
            ControlMessage::Hello(_) => {}
            ControlMessage::Pong(p) => {
                let t4 = self.anchor.micros(now);
                if let Some(sample) = self.clock.on_exchange(p.t1_us, p.t2_us, p.t3_us, t4) {
                    // The first pings can be held up together (a packet of the control
                    // stream lost or, on a reordering path, come before the handshake could
                    // read it: the ones behind it wait for its retransmission), and then every
                    // round trip they measure is too long by that wait: on a 40 ms ± 10 ms
                    // path with 2 % loss, 145-230 ms for a path of 65-100, until the next ping
                    // a second later; copies asked for in that second were judged unable to
                    // arrive in time. Their answers then come together rather than a spacing
                    // apart, and measure a round trip well above QUIC's: a second quick
                    // succession, started now that the stream flows, measures the path itself.
                    // (Answers bunched by a queue draining measure what QUIC sees too.)
                    match self.clock.samples() {
                        1 => self.first_pong_at = Some(now),
                        n if n == u64::from(FIRST_PINGS)
                            && self.first_pong_at.is_some_and(|t| now < t + HELD_UP_SPREAD)
                            && self.held_up_beyond_transport() =>
                        {
                            self.quick_pings = FIRST_PINGS - 1;
                            self.timers.set(Timer::Ping, now);
                        }
                        _ => {}
                    }
                    trace!(
                        offset = sample.offset_us,
                        rtt = sample.rtt_us,
                        "clock sample"
                    );
                    self.jitter.set_offset(self.clock.offset_us());
                }
            }
            ControlMessage::Goodbye(g) => {
                if self.peer_goodbye.is_some() {
                    self.stats.control_errors.unexpected += 1;
                    return;
                }
                self.peer_goodbye = Some(g);
                self.phase = Phase::Draining;
                let target = self
                    .jitter
                    .target_delay_us()
                    .unwrap_or(0)
                    .max(0)
                    .unsigned_abs();
                let wait =
                    Duration::from_micros(target).min(self.cfg.jitter.max_delay) + self.cfg.linger;
                self.timers.set(Timer::Close, now + wait);
                self.maybe_finish(now);
            }
            ControlMessage::Ping(_)
            | ControlMessage::Report(_)
            | ControlMessage::Summary(_)
            | ControlMessage::Nack(_) => {
                self.stats.control_errors.unexpected += 1;
            }
        }
    }

    fn fail(&mut self, now: Instant, code: CloseCode, reason: &str) {
        debug!(reason, "protocol error");
        self.jitter.finish(self.jitter.next_seq());
        self.done(
            now,
            End::Protocol {
                code,
                reason: reason.into(),
            },
        );
    }

    fn done(&mut self, now: Instant, end: End) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        self.end = Some(end);
        self.ended_at = Some(now);
        self.timers = Timers::default();
    }

    /// The number of frames the sender transmitted, as far as known.
    fn transmitted(&self) -> u64 {
        self.peer_goodbye
            .map_or(self.jitter.next_seq(), |g| g.frames_transmitted)
    }

    fn maybe_finish(&mut self, now: Instant) {
        let all_played = self.jitter.is_empty() && self.jitter.next_seq() >= self.transmitted();
        if self.phase == Phase::Draining && (all_played || self.close_due) {
            self.conclude(now, End::Complete);
        }
    }

    /// Final accounting, summary and goodbye.
    fn conclude(&mut self, now: Instant, end: End) {
        if self.phase == Phase::Done {
            return;
        }
        // Every frame seen counts, also those still partial past the last one played.
        let end_seq = self
            .transmitted()
            .max(self.jitter.next_seq())
            .max(self.next_seq_seen);
        self.jitter.finish(end_seq);
        let summary = Summary {
            network: to_wire(&self.delays.network.summary()),
            jitter_buffer: to_wire(&self.delays.jitter_buffer.summary()),
            end_to_end: to_wire(&self.delays.end_to_end.summary()),
        };
        queue_control(&mut self.out, &ControlMessage::Summary(summary), true);
        let st = self.stats();
        let g = Goodbye {
            frames_received: st.frames_received,
            frames_complete: st.frames_complete,
            frames_played: st.frames_played,
            frames_late: st.frames_late,
            frames_lost: st.frames_lost,
            ..Goodbye::default()
        };
        queue_control(&mut self.out, &ControlMessage::Goodbye(g), true);
        self.done(now, end);
    }

    /// Ends the session now (shutdown). Frames waiting in the jitter buffer are released at once
    /// and returned, so that nothing received is lost; summary and goodbye go to the sender.
    pub fn abort(&mut self, now: Instant) -> Vec<PlayedFrame> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let flushed = self.jitter.flush(self.anchor.micros(now));
        for p in &flushed {
            self.record_played(p);
        }
        self.stats.flushed += flushed.len() as u64;
        self.conclude(now, End::Shutdown);
        flushed
    }

    /// The connection is gone. Waiting frames are released as in [`abort`](Self::abort).
    pub fn connection_lost(&mut self, now: Instant, why: &str) -> Vec<PlayedFrame> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let flushed = self.abort(now);
        self.end = Some(End::ConnectionLost(why.into()));
        flushed
    }

    /// Bytes to write to the control stream, if any.
    pub fn poll_control(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        Some(Bytes::from(std::mem::take(&mut self.out)))
    }

    /// Acts on timers due at `now`: pings, reports, reassembly give-ups, the end of draining.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        self.reassembler.expire(now);
        while let Some(t) = self.timers.take_expired(now) {
            match t {
                Timer::Ping => self.send_ping(now),
                Timer::Nack => {
                    self.ask_again(now);
                    self.timers.set(Timer::Nack, now + NACK_SCAN);
                }
                Timer::Report => {
                    // Now and then: the FEC decoder forgets what can no longer play.
                    self.fec.forget_before(self.jitter.next_seq());
                    self.send_report(now);
                    self.timers
                        .set(Timer::Report, now + self.cfg.report_interval);
                }
                Timer::Close => {
                    // The drain wait is over: frames due now still go out through
                    // `poll_frame`, which concludes the session once none is left due.
                    self.close_due = true;
                    if self
                        .jitter
                        .next_due_us()
                        .is_none_or(|due| due > self.anchor.micros(now))
                    {
                        self.conclude(now, End::Complete);
                    }
                }
                Timer::Idle => {
                    if self.peer_hello.is_none() {
                        let why = format!(
                            "no hello from the sender within {}",
                            crate::units::format_duration(self.cfg.hello_timeout)
                        );
                        self.fail(now, CloseCode::ProtocolViolation, &why);
                    }
                }
            }
        }
    }

    /// Asks the sender for the fragments that are overdue and can still arrive before their
    /// frame plays (the copy's trip — the minimum round trip plus 2 ms, and twice the wait on a
    /// path with a standing queue — before its playout time).
    fn ask_again(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        let Some(rtt_us) = self.rtt_us() else {
            return;
        };
        let provisional = self.clock.min_rtt_us().is_none();
        // A standing queue: recovery adds load to it, and copies queue behind it. There the
        // receiver asks later and keeps more room (the wait follows the variation of every
        // fragment, and the copy's trip adds that of both legs), and a late copy does not
        // stretch playout.
        let congested = self.congested(now);
        self.jitter.set_stretch(!congested);
        let jitter = if congested {
            self.interarrival_all.micros()
        } else {
            self.interarrival.micros()
        };
        let wait = self
            .cfg
            .nack_wait
            .max(Duration::from_micros(2 * jitter))
            .max(self.reorder_wait(now));
        let rtt = Duration::from_micros(rtt_us);
        // A lost fragment is noticed a wait after its neighbours, asked for at the next scan,
        // and its copy takes a round trip: while fragments go missing (and for a while after),
        // the playout delay keeps room for that. A path without loss pays nothing.
        // The copy's trip: the minimum round trip plus 2 ms, and with a standing queue the
        // delay variation of its two legs (a wait each). Without one that variation is not
        // added: the room sits on the 95th percentile of transit, copies go twice above 1 %
        // loss, and a burst repaired past its playout time stretches the target
        // (`JitterBuffer`). In virtual time (recovery-40ms-2pct, recovery-ge2-burst3, video and
        // 200 frames/s, seeds 1-4) adding it bought no frame and cost 20-35 ms of delay.
        let trip = if congested {
            rtt + 2 * wait + Duration::from_millis(2)
        } else {
            rtt + Duration::from_millis(2)
        };
        let allowance = trip + wait + NACK_SCAN;
        let recovering = self
            .needed_recovery_at
            .is_some_and(|t| now < t + RECOVERY_MEMORY)
            || self.room_held_until.is_some_and(|t| now < t);
        self.jitter
            .set_recovery_allowance((recovering && !provisional).then_some(allowance));
        let next_play = self.jitter.next_seq();
        // Forget what playout has passed.
        while self
            .asked
            .first_key_value()
            .is_some_and(|(&s, _)| s < next_play)
        {
            self.asked.pop_first();
        }
        while self
            .captures
            .first_key_value()
            .is_some_and(|(&s, _)| s < next_play)
        {
            self.captures.pop_first();
        }
        let now_us = self.micros(now);
        let slack = whole_micros(trip);
        // Asked again once both copies have had their round trip (and the wait) to come; with
        // a standing queue, whose round trip is longer than the minimum, 1.5 round trips.
        let retry = if congested {
            rtt + rtt / 2 + wait
        } else {
            rtt + wait + RETRY_AFTER
        };
        let mut room = RecoveryRoom {
            allowance,
            // Both requests' copies have come by then.
            hold: allowance + retry,
            recovering,
            now,
            now_us,
            slack,
            provisional,
        };
        let reachable = |jitter: &JitterBuffer, capture_us: u64| {
            jitter
                .playout_us(capture_us)
                .is_some_and(|play| now_us.saturating_add(slack) < play)
        };
        let due = |asked: Option<&Asked>| match asked {
            None => true,
            Some(a) => a.tries < NACK_TRIES && now >= a.at + retry,
        };
        // Repeats due: entries of first requests whose frame is still incomplete and can
        // still play once a copy comes; each goes again later while it has repeats left.
        let mut repeat = Vec::new();
        while let Some(&(at, e, capture, left)) = self.repeats.front()
            && at <= now
        {
            self.repeats.pop_front();
            if e.seq >= next_play
                && !self.reassembler.is_done(e.seq)
                && reachable(&self.jitter, capture)
            {
                repeat.push((e, capture, left));
            }
        }
        for &(e, capture, left) in &repeat {
            if left > 1 && self.repeats.len() < MAX_REPEATS {
                self.repeats
                    .push_back((now + NACK_REPEAT_AFTER, e, capture, left - 1));
            }
        }
        let repeat: Vec<NackEntry> = repeat.into_iter().map(|(e, _, _)| e).collect();
        // (entry, its frame's capture time)
        let mut entries: Vec<(NackEntry, u64)> = Vec::new();
        let mut asked_now = Vec::new();
        for p in self.reassembler.partials() {
            let seq = p.header.seq;
            if seq < next_play || now < p.last_at + wait {
                continue;
            }
            room.note(
                &mut self.jitter,
                &mut self.room_held_until,
                p.header.capture_us,
            );
            if !due(self.asked.get(&seq)) || !reachable(&self.jitter, p.header.capture_us) {
                continue;
            }
            for (first, count) in p.missing_runs() {
                entries.push((NackEntry { seq, first, count }, p.header.capture_us));
            }
            asked_now.push((seq, Some(p.last_at)));
        }
        // Frames of which nothing arrived, between what plays next and the newest seen (at
        // most 256 of them: a sender does not skip more, and a forged number costs nothing).
        let top = self.next_seq_seen.min(next_play.saturating_add(256));
        let transit = self.jitter.transit_percentile_us(0.95);
        for seq in next_play..top {
            if self.reassembler.is_partial(seq)
                || self.reassembler.is_done(seq)
                || self.captures.contains_key(&seq)
            {
                continue;
            }
            // It plays no later than the next frame seen after it.
            let Some((&after, &capture)) = self.captures.first_from(&seq) else {
                continue;
            };
            // When it should have come: its capture time guessed a frame interval per frame
            // before the next one seen, plus the 95th percentile of transit. It is asked for
            // a wait after that, as frames guessed at past the newest are (below), not a wait
            // after its absence shows: that is a frame interval and a scan later, which on a
            // path without jitter costs the copy its room (the room counts the wait and one
            // scan), and so the room itself, depending on how the scans fall between frames.
            let expected = match (self.frame_interval_us, transit) {
                (Some(interval), Some(transit)) => Some(
                    capture
                        .saturating_sub(interval.saturating_mul(after - seq))
                        .saturating_add_signed(transit),
                ),
                _ => None,
            };
            let overdue = !congested
                && expected.is_some_and(|e| now_us > e.saturating_add(whole_micros(wait)));
            match self.asked.get(&seq) {
                None => {
                    // Noticed now; asked for once it has been missing for the wait. Missing
                    // since it should have come, for the reordering learned from originals
                    // that come after all (`learn_reordering`).
                    let since = expected.map_or(now, |e| self.anchor.instant(e).min(now));
                    self.asked.insert(
                        seq,
                        Asked {
                            at: now,
                            tries: 0,
                            since: Some(since),
                        },
                    );
                    if !overdue {
                        continue;
                    }
                }
                Some(a) if a.tries == 0 && now < a.at + wait && !overdue => continue,
                Some(a) if a.tries > 0 && !due(Some(a)) => continue,
                Some(_) => {}
            }
            room.note(&mut self.jitter, &mut self.room_held_until, capture);
            if !reachable(&self.jitter, capture) {
                continue;
            }
            entries.push((
                NackEntry {
                    seq,
                    first: 0,
                    count: 0,
                },
                capture,
            ));
            asked_now.push((seq, None));
        }
        // The frames after the newest seen that are overdue: nothing of frame `newest + i`
        // has come `i` frame intervals plus the 95th percentile of transit plus the wait after
        // the newest frame's capture. The rest of a burst is asked for while it lasts, not
        // once a frame after it arrives. Asking costs little: a sender that never sent a
        // frame refuses (as invalid), and a frame seen after the newest withdraws these
        // guesses beyond it (`on_first_fragment`).
        let expected = self.next_seq_seen;
        if expected > 0
            && self.phase == Phase::Running
            && let (Some((&last, &last_capture)), Some(transit)) = (
                self.captures.last_key_value(),
                self.jitter.transit_percentile_us(0.95),
            )
            && last + 1 == expected
            && let Some(interval) = self.frame_interval_us
        {
            // Only the next one is guessed at on a path that has not been losing frames (a
            // frame held up in a hiccup, asked for, counts as retransmitted, which the
            // adaptive playout does not follow), or with a standing queue, where frames come
            // late rather than not at all, and copies add load.
            let ahead = if congested || !room.recovering {
                1
            } else {
                MAX_ASK_AHEAD
            };
            for i in 0..ahead {
                let seq = expected + i;
                if i > 0 && interval.saturating_mul(i) > whole_micros(MAX_ASK_AHEAD_SPAN) {
                    break;
                }
                let capture = last_capture.saturating_add(interval.saturating_mul(i + 1));
                let overdue = capture
                    .saturating_add_signed(transit)
                    .saturating_add(whole_micros(wait));
                if now_us <= overdue {
                    break;
                }
                if self.reassembler.is_partial(seq)
                    || self.reassembler.is_done(seq)
                    || !due(self.asked.get(&seq))
                {
                    continue;
                }
                room.note(&mut self.jitter, &mut self.room_held_until, capture);
                if reachable(&self.jitter, capture) {
                    entries.push((
                        NackEntry {
                            seq,
                            first: 0,
                            count: 0,
                        },
                        capture,
                    ));
                }
                // Asked for, or too late to: either way not looked at again before `due` (a
                // frame merely delayed behind a queue must not keep room open each scan).
                asked_now.push((seq, None));
            }
        }
        // First requests sent as datagrams are repeated (the sender answers a repeat only for
        // frames it has not sent again: one whose request came needs nothing more).
        if self.nack_datagrams {
            for &(e, capture) in &entries {
                if self.repeats.len() < MAX_REPEATS
                    && self.asked.get(&e.seq).is_none_or(|a| a.tries == 0)
                {
                    self.repeats
                        .push_back((now + NACK_REPEAT_AFTER, e, capture, NACK_REPEATS));
                }
            }
        }
        for (seq, since) in asked_now {
            let a = self.asked.entry(seq).or_insert(Asked {
                at: now,
                tries: 0,
                since: None,
            });
            a.at = now;
            a.tries += 1;
            a.since = a.since.or(since);
        }
        while self.asked.len() > MAX_ASKED {
            self.asked.pop_first();
        }
        for chunk in repeat.chunks(MAX_NACK_ENTRIES) {
            if self.dgram_out.len() >= MAX_DATAGRAM_BACKLOG {
                self.stats.control_backlog_drops += 1;
                break;
            }
            self.stats.nack_repeats += chunk.len() as u64;
            let nack = Nack {
                entries: chunk.to_vec(),
            };
            self.dgram_out
                .push_back(crate::wire::nack::encode_repeat(&nack));
        }
        let entries: Vec<NackEntry> = entries.into_iter().map(|(e, _)| e).collect();
        for chunk in entries.chunks(MAX_NACK_ENTRIES) {
            self.stats.nack_entries += chunk.len() as u64;
            let nack = Nack {
                entries: chunk.to_vec(),
            };
            let queued = if self.nack_datagrams {
                // A datagram: a lost one holds back nothing behind it (a lost request is asked
                // again, 1.5 round trips later); the backlog is bounded like the control one.
                if self.dgram_out.len() < MAX_DATAGRAM_BACKLOG {
                    self.dgram_out.push_back(crate::wire::nack::encode(&nack));
                    true
                } else {
                    false
                }
            } else {
                queue_control(&mut self.out, &ControlMessage::Nack(nack), false)
            };
            if queued {
                self.stats.nacks_sent += 1;
            } else {
                self.stats.control_backlog_drops += 1;
            }
        }
    }

    /// Whether the path holds a standing queue, or did within [`RECOVERY_MEMORY`]: the
    /// queueing delay of fragments that came by themselves above the level at which rate adaptation cuts
    /// ([`crate::rate::QUEUE_CUT_US`]). A queue that fills and drains is remembered through
    /// its quiet phases.
    fn congested(&mut self, now: Instant) -> bool {
        if self.queueing_own.micros() > crate::rate::QUEUE_CUT_US {
            self.queued_at = Some(now);
        }
        self.queued_at.is_some_and(|t| now < t + RECOVERY_MEMORY)
    }

    /// Sends a clock-sync ping: [`FIRST_PINGS`] of them [`FIRST_PING_SPACING`] apart when the
    /// session starts, and again if their answers came held up together, then one every
    /// `ping_interval`.
    fn send_ping(&mut self, now: Instant) {
        self.pings_sent += 1;
        let ping = Ping {
            id: self.pings_sent,
            t1_us: self.anchor.micros(now),
        };
        if !queue_control(&mut self.out, &ControlMessage::Ping(ping), false) {
            self.stats.control_backlog_drops += 1;
        }
        let next = if self.quick_pings > 0 {
            self.quick_pings -= 1;
            FIRST_PING_SPACING
        } else {
            self.cfg.ping_interval
        };
        self.timers.set(Timer::Ping, now + next);
    }

    fn send_report(&mut self, now: Instant) {
        let now_us = self.micros(now);
        let burst_rate_bps = self.burst.bps(now_us);
        let loss = self.loss_counts();
        if loss.expected >= FIRST_REPORT_FRAGMENTS {
            // This report measures the loss for the sender: no early one is needed.
            self.first_report_pending = false;
        }
        let st = self.stats();
        let r = Report {
            frames_received: st.frames_received,
            frames_complete: st.frames_complete,
            frames_played: st.frames_played,
            frames_late: st.frames_late,
            frames_lost: st.frames_lost,
            fragments_received: self.reassembler.stats().fragments,
            datagrams_dropped: st.dropped.total,
            jitter_us: self.interarrival.micros(),
            rtt_us: self.rtt_us().unwrap_or(0),
            target_delay_us: self
                .jitter
                .target_delay_us()
                .unwrap_or(0)
                .max(0)
                .unsigned_abs(),
            next_seq: self.next_seq_seen,
            fragments_expected: loss.expected,
            fragments_missing: loss.missing,
            loss_runs: loss.runs,
            fec_recovered: st.fec_recovered,
            nack_entries: st.nack_entries,
            retransmit_recovered: st.retransmit_recovered,
            queue_delay_us: self.queueing.micros(),
            bytes_received: st.bytes_datagrams,
            burst_rate_bps,
        };
        if !queue_control(&mut self.out, &ControlMessage::Report(r), false) {
            self.stats.control_backlog_drops += 1;
        }
    }

    /// Loss before recovery up to the frames playout has passed.
    fn loss_counts(&mut self) -> crate::loss::LossCounts {
        if let Some(last) = self.jitter.next_seq().checked_sub(1) {
            self.loss.resolve_through(last);
        }
        self.loss.counts()
    }

    /// When the session next needs [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_frame`](Self::poll_frame).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        [
            self.timers.next(),
            self.reassembler.next_expiry(),
            self.next_playout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The session report as of `now`.
    pub fn report(&self, now: Instant) -> SessionReport {
        let st = self.stats();
        let loss = self.loss.counts();
        let frames_due = st.frames_played + st.frames_late + st.frames_lost;
        let g = self.peer_goodbye.unwrap_or_default();
        let end_at = self.ended_at.unwrap_or(now);
        let frames = FrameReport {
            sent: g.frames_sent,
            transmitted: g.frames_transmitted.max(self.jitter.next_seq()),
            received: st.frames_received,
            complete: st.frames_complete,
            played: st.frames_played,
            late: st.frames_late,
            lost: st.frames_lost,
            keyframes: st.keyframes_played,
            dropped_by_sender: crate::stats::report::SenderDrops {
                total: g.frames_dropped,
                ..Default::default()
            },
            reset: 0,
            output_dropped: 0,
        };
        let js = self.jitter.stats();
        SessionReport {
            role: Role::Receiver,
            duration_s: end_at.saturating_duration_since(self.started).as_secs_f64(),
            peer: String::new(),
            end: self
                .end
                .as_ref()
                .map_or_else(|| "running".into(), End::describe),
            transport: self.transport().to_string(),
            reconnects: 0,
            frames,
            bytes: ByteReport {
                payload: st.bytes_payload,
                compressed: st.bytes_compressed,
                wire: 0,
                datagrams: st.bytes_datagrams,
            },
            compression_ratio: ratio(st.bytes_compressed, st.bytes_payload),
            latency_us: self.delays.summaries(),
            datagrams: DatagramReport {
                received: st.datagrams,
                dropped: st.dropped,
                ..Default::default()
            },
            control_errors: st.control_errors,
            jitter_buffer: Some(JitterReport {
                mode: self.cfg.jitter.mode.to_string(),
                target_delay_us: self.jitter.target_delay_us().unwrap_or(0),
                interarrival_jitter_us: self.interarrival.micros(),
                overflow: js.overflow,
                too_early: js.too_early,
                flushed: st.flushed,
            }),
            reassembly: Some(self.reassembler.stats()),
            clock: Some(ClockReport {
                mode: match self.clock.mode() {
                    ClockMode::Sync => "sync".into(),
                    ClockMode::System => "system".into(),
                },
                offset_us: self.clock.offset_us(),
                estimated_offset_us: self.clock.estimated_offset_us(),
                rtt_us: self.clock.min_rtt_us(),
                samples: self.clock.samples(),
            }),
            rate: None,
            recovery: RecoveryReport {
                fec_recovered: st.fec_recovered,
                parity_received: st.fec.parity_received,
                parity_unneeded: st.fec.parity_unneeded,
                fec_decodes: st.fec.decodes,
                retransmit_requests: st.nack_entries,
                retransmit_repeats: st.nack_repeats,
                retransmitted: st.retransmit_recovered,
                loss_before_recovery: fraction(loss.missing, loss.expected),
                loss_after_recovery: fraction(st.frames_lost, frames_due),
                ..Default::default()
            },
            quic: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter::JitterMode;
    use crate::session::{SenderConfig, SenderSession};
    use crate::source::SourceFrame;

    type DropFn = Box<dyn FnMut(&[u8]) -> bool>;
    type DelayFn = Box<dyn FnMut(&[u8]) -> Duration>;

    /// Drives a sender and a receiver against each other over a perfect zero-delay link with
    /// `delay` of one-way latency, in virtual time.
    struct Pair {
        tx: SenderSession,
        rx: ReceiverSession,
        now: Instant,
        played: Vec<PlayedFrame>,
        delay: Duration,
        in_flight: Vec<(Instant, Bytes)>,
        ctl_to_rx: Vec<(Instant, Bytes)>,
        ctl_to_tx: Vec<(Instant, Bytes)>,
        dgram_to_tx: Vec<(Instant, Bytes)>,
        /// Datagrams the receiver sent (retransmission requests).
        rx_datagrams: usize,
        drop: DropFn,
        /// Drops datagrams on the way back (retransmission requests).
        drop_back: DropFn,
        /// Delay added to a datagram on its way to the receiver, on top of `delay`.
        extra_delay: DelayFn,
        /// Fragments reach the receiver as frame-stream records (`--transport stream`).
        records: bool,
    }

    impl Pair {
        fn new(rx_cfg: ReceiverConfig, delay: Duration) -> Self {
            // No parity: these tests see loss and its retransmission as they happen
            // (automatic parity starts on an assumed loss; `fec_pair` tests it).
            let tx_cfg = SenderConfig {
                compress: crate::compress::CompressLevel::Fast,
                fec: crate::fec::FecMode::Off,
                ..Default::default()
            };
            Self::with_sender(tx_cfg, rx_cfg, delay)
        }

        fn with_sender(tx_cfg: SenderConfig, rx_cfg: ReceiverConfig, delay: Duration) -> Self {
            let now = crate::test_instant();
            let anchor = ClockAnchor::new(now, 1_700_000_000_000_000);
            Self {
                tx: SenderSession::new(tx_cfg, anchor, now),
                rx: ReceiverSession::new(rx_cfg, anchor, now),
                now,
                played: Vec::new(),
                delay,
                in_flight: Vec::new(),
                ctl_to_rx: Vec::new(),
                ctl_to_tx: Vec::new(),
                dgram_to_tx: Vec::new(),
                rx_datagrams: 0,
                drop: Box::new(|_| false),
                drop_back: Box::new(|_| false),
                extra_delay: Box::new(|_| Duration::ZERO),
                records: false,
            }
        }

        /// Moves everything that is ready, then advances time by `step`.
        fn step(&mut self, step: Duration) {
            let now = self.now;
            // Control bytes take the path's delay too (so pings measure its round trip).
            if let Some(c) = self.tx.poll_control() {
                self.ctl_to_rx.push((now + self.delay, c));
            }
            if let Some(c) = self.rx.poll_control() {
                self.ctl_to_tx.push((now + self.delay, c));
            }
            while self.ctl_to_rx.first().is_some_and(|(at, _)| *at <= now) {
                let (_, c) = self.ctl_to_rx.remove(0);
                self.rx.handle_control(now, &c);
            }
            while self.ctl_to_tx.first().is_some_and(|(at, _)| *at <= now) {
                let (_, c) = self.ctl_to_tx.remove(0);
                self.tx.handle_control(now, &c);
            }
            while let Some(d) = self.rx.poll_datagram() {
                self.rx_datagrams += 1;
                if !(self.drop_back)(&d) {
                    self.dgram_to_tx.push((now + self.delay, d));
                }
            }
            while self.dgram_to_tx.first().is_some_and(|(at, _)| *at <= now) {
                let (_, d) = self.dgram_to_tx.remove(0);
                self.tx.handle_datagram(now, d);
            }
            while let Some(d) = self.tx.poll_datagram(now, 1200) {
                if !(self.drop)(&d) {
                    let at = now + self.delay + (self.extra_delay)(&d);
                    self.in_flight.push((at, d));
                }
            }
            let (due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(at, _)| *at <= now);
            self.in_flight = later;
            for (_, d) in due {
                if self.records {
                    self.rx.handle_stream_record(now, d);
                } else {
                    self.rx.handle_datagram(now, d);
                }
            }
            self.tx.handle_timeout(now);
            self.rx.handle_timeout(now);
            while let Some(p) = self.rx.poll_frame(now) {
                self.played.push(p);
            }
            self.now += step;
        }

        fn push(&mut self, len: usize) {
            let f = SourceFrame {
                capture: self.now,
                keyframe: false,
                data: Bytes::from(vec![b'a'; len]),
            };
            self.tx.push_frame(self.now, f).unwrap();
        }
    }

    fn fixed(ms: u64) -> ReceiverConfig {
        ReceiverConfig {
            jitter: JitterConfig {
                mode: JitterMode::Fixed(Duration::from_millis(ms)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn plays_every_frame_at_capture_plus_target_and_says_goodbye() {
        let mut p = Pair::new(fixed(50), Duration::from_millis(10));
        for _ in 0..30 {
            p.push(5000);
            for _ in 0..33 {
                p.step(Duration::from_millis(1));
            }
        }
        p.tx.finish(p.now);
        for _ in 0..2000 {
            p.step(Duration::from_millis(1));
            if p.tx.is_done() && p.rx.is_done() {
                break;
            }
        }
        assert_eq!(p.played.len(), 30);
        for (i, f) in p.played.iter().enumerate() {
            assert_eq!(f.frame.seq, i as u64);
            assert_eq!(f.frame.data.len(), 5000);
            assert_eq!(
                f.played_us - f.frame.capture_us,
                50_000,
                "fixed 50 ms end to end"
            );
        }
        let rx = p.rx.report(p.now);
        let tx = p.tx.report(p.now);
        assert_eq!(p.rx.end(), Some(&End::Complete));
        assert_eq!(p.tx.end(), Some(&End::Complete));
        assert_eq!(
            (rx.frames.sent, rx.frames.played, rx.frames.lost),
            (30, 30, 0)
        );
        assert_eq!(tx.frames.played, 30);
        // Histograms keep 3 significant digits: 50 000 µs reads back as its bucket's top.
        assert!((50_000..50_050).contains(&tx.latency_us.end_to_end.p50));
        assert!(rx.compression_ratio < 0.1, "runs of one byte compress");
        assert!((10_000..10_010).contains(&rx.latency_us.network.p50));
        assert!((40_000..40_040).contains(&rx.latency_us.jitter_buffer.p50));
        assert_eq!(
            rx.clock.unwrap().offset_us,
            0,
            "same anchor: the estimate is exact"
        );
    }

    /// Runs `frames` frames of `len` bytes at 30 fps through `p`, then ends the session.
    fn stream(p: &mut Pair, frames: usize, len: usize) {
        for _ in 0..frames {
            p.push(len);
            for _ in 0..33 {
                p.step(Duration::from_millis(1));
            }
        }
        p.tx.finish(p.now);
        for _ in 0..3000 {
            p.step(Duration::from_millis(1));
            if p.tx.is_done() && p.rx.is_done() {
                break;
            }
        }
    }

    /// A drop function that loses every `n`th fragment datagram (parity always arrives).
    fn every_nth_fragment(n: u64) -> DropFn {
        let mut i = 0u64;
        Box::new(move |d: &[u8]| {
            if d[1] != crate::wire::datagram::TYPE_FRAGMENT {
                return false;
            }
            i += 1;
            i.is_multiple_of(n)
        })
    }

    /// A pair with `fec` and without retransmission (so that what FEC does is seen alone).
    fn fec_pair(fec: crate::fec::FecMode) -> Pair {
        let tx = SenderConfig {
            compress: crate::compress::CompressLevel::Off,
            fec,
            nack: false,
            ..Default::default()
        };
        let rx = ReceiverConfig {
            nack: false,
            ..fixed(80)
        };
        Pair::with_sender(tx, rx, Duration::from_millis(10))
    }

    #[test]
    fn a_receiver_that_declines_parity_gets_none_after_its_hello() {
        use crate::fec::FecMode;
        let mut p = fec_pair(FecMode::Fixed(0.4));
        p.rx = ReceiverSession::new(
            ReceiverConfig {
                parity: false,
                nack: false,
                ..fixed(80)
            },
            ClockAnchor::new(p.now, 1_700_000_000_000_000),
            p.now,
        );
        p.drop = every_nth_fragment(7);
        stream(&mut p, 60, 5000);
        let (rx, tx) = (p.rx.report(p.now), p.tx.report(p.now));
        assert_eq!(tx.recovery.fec_mode, "off", "the sender honours the hello");
        assert_eq!(rx.recovery.fec_recovered, 0);
        // Only what left before the hello arrived 10 ms in (the first frame's parity), and the
        // receiver dropped it.
        assert!(
            (1..=4).contains(&tx.recovery.parity_sent),
            "{:?}",
            tx.recovery
        );
        assert_eq!(
            rx.datagrams.dropped.parity_declined,
            tx.recovery.parity_sent
        );
        assert!(rx.frames.lost >= 30, "{:?}", rx.frames);
    }

    #[test]
    fn fec_restores_fragments_lost_on_the_way() {
        use crate::fec::FecMode;
        // 5000-byte frames: five fragments each at 1200 bytes; one fragment in seven lost.
        let mut off = fec_pair(FecMode::Off);
        off.drop = every_nth_fragment(7);
        stream(&mut off, 60, 5000);
        let mut on = fec_pair(FecMode::Fixed(0.4));
        on.drop = every_nth_fragment(7);
        stream(&mut on, 60, 5000);
        let (r_off, r_on) = (off.rx.report(off.now), on.rx.report(on.now));
        assert!(r_off.frames.lost >= 30, "without FEC: {:?}", r_off.frames);
        assert_eq!(r_off.recovery.fec_recovered, 0);
        assert_eq!(
            (r_on.frames.played, r_on.frames.lost),
            (60, 0),
            "with 40 % parity every frame plays"
        );
        assert!(r_on.recovery.fec_recovered >= 40);
        for (i, f) in on.played.iter().enumerate() {
            assert_eq!(f.frame.seq, i as u64);
            assert_eq!(
                f.frame.data,
                Bytes::from(vec![b'a'; 5000]),
                "restored exactly"
            );
        }
        // Loss before recovery as measured and reported: 1 in 7 fragments.
        let loss = r_on.recovery.loss_before_recovery;
        assert!((0.12..0.16).contains(&loss), "loss before recovery {loss}");
        let tx = on.tx.report(on.now);
        assert_eq!(tx.recovery.fec_mode, "40%");
        // Two parities per five fragments, slightly larger (header) than the fragments.
        let overhead = tx.recovery.fec_overhead_ratio;
        assert!((0.38..0.45).contains(&overhead), "overhead {overhead}");
    }

    #[test]
    fn auto_fec_follows_the_reported_loss() {
        use crate::fec::FecMode;
        let mut clean = fec_pair(FecMode::default());
        stream(&mut clean, 2 * KEPT_BEFORE_PARITY as usize, 5000);
        let tx = clean.tx.report(clean.now);
        // Parity from the start, on an assumed loss, until a report measured none: two
        // report intervals (the first covers fewer than 50 fragments), 16 frames of 5
        // fragments and 2 parities, of 128 frames.
        assert!(
            (1..=40).contains(&tx.recovery.parity_sent),
            "{:?}",
            tx.recovery
        );
        assert_eq!(
            clean.tx.loss_estimate().loss,
            0.0,
            "the measure replaced the assumption outright"
        );
        // Nor is anything kept for parity once it stopped coming (past the first frames,
        // kept for a fixed ratio's parity, which playout has passed).
        assert_eq!(clean.rx.fec.bytes(), 0);
        assert!(!clean.rx.parity_armed(clean.now));
        let mut lossy = fec_pair(FecMode::default());
        lossy.drop = every_nth_fragment(10);
        stream(&mut lossy, 90, 5000);
        let est = lossy.tx.loss_estimate();
        assert!(
            (0.07..0.13).contains(&est.loss),
            "estimate from the reports: {est:?}"
        );
        let tx = lossy.tx.report(lossy.now);
        let rx = lossy.rx.report(lossy.now);
        assert!(tx.recovery.parity_sent > 0);
        assert!(rx.recovery.fec_recovered > 0);
        // Parity from the first frame on, on an assumed loss until the reports measure it:
        // none goes unprotected (without the assumption, 8 of the first frames were lost).
        assert_eq!(rx.frames.lost, 0, "{:?}", rx.frames);
        assert!(tx.recovery.fec_overhead_ratio <= 0.5);
    }

    /// The sender's parity on an assumed loss ends with the first report that measures the
    /// loss; on a fast stream that report goes once it covers enough fragments, before the
    /// report interval.
    #[test]
    fn on_a_fast_stream_the_first_report_ends_the_start_parity_early() {
        use crate::fec::{FecMode, START_PARITY_FRAMES};
        let mut p = fec_pair(FecMode::default());
        let t0 = p.now;
        let assumed = p.tx.loss_estimate().loss;
        assert!(assumed > 0.0, "parity from the start");
        let mut measured_at = None;
        for _ in 0..400 {
            p.push(800);
            p.step(Duration::from_millis(1));
            if measured_at.is_none() && p.tx.loss_estimate().loss == 0.0 {
                measured_at = Some(p.now - t0);
            }
        }
        // 64 frames of one fragment at 1 ms, 80 ms of playout, 10 ms each way: ~155 ms; the
        // report interval is 250 ms.
        let at = measured_at.expect("a report measured no loss");
        assert!(at < Duration::from_millis(200), "measured after {at:?}");
        let parity = p.tx.report(p.now).recovery.parity_sent;
        assert!(
            parity > 0 && parity <= START_PARITY_FRAMES,
            "{parity} parities, for the first {START_PARITY_FRAMES} frames only"
        );
        assert!(
            !p.rx.parity_armed(p.now),
            "parity of the first frames arms no keeping of later ones"
        );
    }

    #[test]
    fn small_frames_are_protected_in_groups() {
        use crate::fec::FecMode;
        // 800-byte frames: one fragment each; every third lost.
        let mut p = fec_pair(FecMode::Fixed(0.5));
        p.drop = every_nth_fragment(3);
        stream(&mut p, 60, 800);
        let r = p.rx.report(p.now);
        assert!(r.recovery.fec_recovered >= 15, "{:?}", r.recovery);
        assert!(r.frames.lost <= 6, "{:?}", r.frames);
    }

    /// Loses the first copy of every `n`th fragment datagram; copies sent again get through.
    fn every_nth_original(n: u64) -> DropFn {
        let mut seen = std::collections::HashSet::new();
        let mut i = 0u64;
        Box::new(move |d: &[u8]| {
            if d[1] != crate::wire::datagram::TYPE_FRAGMENT
                || crate::wire::datagram::is_copy(d)
                || !seen.insert(d.to_vec())
            {
                return false;
            }
            i += 1;
            i.is_multiple_of(n)
        })
    }

    fn nack_pair(rx: ReceiverConfig) -> Pair {
        let tx = SenderConfig {
            compress: crate::compress::CompressLevel::Off,
            fec: crate::fec::FecMode::Off,
            ..Default::default()
        };
        Pair::with_sender(tx, rx, Duration::from_millis(10))
    }

    #[test]
    fn requests_go_by_datagram_or_on_the_control_stream_for_a_peer_without_datagrams() {
        for datagrams in [true, false] {
            let mut p = nack_pair(fixed(150));
            p.rx.set_nack_datagrams(datagrams);
            p.drop = every_nth_original(7);
            stream(&mut p, 30, 5000);
            let (rx, tx) = (p.rx.report(p.now), p.tx.report(p.now));
            assert_eq!((rx.frames.played, rx.frames.lost), (30, 0), "{datagrams}");
            assert!(rx.recovery.retransmitted >= 15, "{:?}", rx.recovery);
            assert_eq!(tx.datagrams.dropped.total, 0);
            assert_eq!(p.rx_datagrams > 0, datagrams, "requests went by datagram");
            // Nothing is left waiting to go the other way.
            assert!(p.rx.poll_datagram().is_none());
        }
        // Garbage from a receiver is counted by the sender and changes nothing.
        let mut p = nack_pair(fixed(150));
        p.tx.handle_datagram(p.now, Bytes::from_static(b"\x01\x02\x00"));
        p.tx.handle_datagram(p.now, Bytes::from_static(b"\x01\x00junk"));
        let tx = p.tx.report(p.now);
        assert_eq!(tx.datagrams.dropped.total, 2);
        assert_eq!(tx.recovery.retransmitted, 0);
    }

    /// Loses the first copy of every fragment of frames `seqs`: frames lost whole.
    fn originals_of(seqs: std::ops::Range<u64>) -> DropFn {
        use crate::wire::datagram::{FragmentHeader, TYPE_FRAGMENT, is_copy};
        Box::new(move |d: &[u8]| {
            d[1] == TYPE_FRAGMENT
                && !is_copy(d)
                && FragmentHeader::parse(d).is_ok_and(|(h, _)| seqs.contains(&h.seq))
        })
    }

    #[test]
    fn with_a_fixed_playout_frames_lost_whole_are_asked_for_once_overdue() {
        // Frames 20-22 lost whole at 30 fps over 10 ms: frame 23, the first seen after them,
        // arrives 109 ms after frame 20's capture. Asked for only then, their copies would
        // come past a 60 ms playout; asked for when each is overdue (by the transit the
        // receiver has seen, which a fixed playout keeps too), they come in time.
        let mut p = nack_pair(fixed(60));
        p.drop = originals_of(20..23);
        stream(&mut p, 40, 3000);
        let rx = p.rx.report(p.now);
        assert_eq!(
            (rx.frames.played, rx.frames.lost, rx.frames.late),
            (40, 0, 0),
            "{:?}",
            rx.recovery
        );
        assert!(rx.recovery.retransmitted >= 3, "{:?}", rx.recovery);
        for f in &p.played {
            assert_eq!(
                f.played_us - f.frame.capture_us,
                60_000,
                "at the fixed delay"
            );
        }
    }

    #[test]
    fn lost_fragments_are_asked_for_and_arrive_in_time() {
        let mut p = nack_pair(fixed(150));
        p.drop = every_nth_original(7);
        stream(&mut p, 60, 5000);
        let (rx, tx) = (p.rx.report(p.now), p.tx.report(p.now));
        assert_eq!(
            (rx.frames.played, rx.frames.lost, rx.frames.late),
            (60, 0, 0)
        );
        assert!(rx.recovery.retransmitted >= 40, "{:?}", rx.recovery);
        assert!(rx.recovery.retransmit_requests > 0);
        assert!(tx.recovery.retransmitted >= rx.recovery.retransmitted);
        // Nothing refused but the repeats of requests that came (every one did here).
        assert_eq!(
            tx.recovery.refused,
            crate::stats::report::RefusedRequests {
                repeated: rx.recovery.retransmit_repeats,
                ..Default::default()
            }
        );
        for (i, f) in p.played.iter().enumerate() {
            assert_eq!(f.frame.seq, i as u64);
            assert_eq!(f.frame.data, Bytes::from(vec![b'a'; 5000]));
        }
        // Loss before recovery counts the fragments that needed asking for.
        let loss = rx.recovery.loss_before_recovery;
        assert!((0.12..0.16).contains(&loss), "loss before recovery {loss}");
    }

    #[test]
    fn a_lost_request_is_repeated_in_time_and_a_repeat_brings_no_second_answer() {
        // Every request is lost on the way back (type 2, the first and the retry; the
        // repeats, type 3, are not): the repeats alone bring the copies, in time.
        let mut p = nack_pair(fixed(100));
        p.drop = every_nth_original(7);
        p.drop_back = Box::new(|d| d.get(1) == Some(&crate::wire::nack::TYPE_NACK));
        stream(&mut p, 60, 5000);
        let (rx, tx) = (p.rx.report(p.now), p.tx.report(p.now));
        assert_eq!(
            (rx.frames.played, rx.frames.lost, rx.frames.late),
            (60, 0, 0),
            "{:?}",
            rx.recovery
        );
        // The first repeat of each request was answered; the second, 20 ms on, found its
        // frame sent again.
        assert!(rx.recovery.retransmit_repeats > 0);
        assert!(tx.recovery.refused.repeated > 0);
        assert!(
            tx.recovery.refused.repeated < rx.recovery.retransmit_repeats,
            "{:?}",
            tx.recovery
        );
        // Nothing lost on the way back: every repeat finds its frame sent again already, and
        // is answered with nothing.
        let mut q = nack_pair(fixed(100));
        q.drop = every_nth_original(7);
        stream(&mut q, 60, 5000);
        let (rx, tx) = (q.rx.report(q.now), q.tx.report(q.now));
        assert_eq!((rx.frames.played, rx.frames.lost), (60, 0));
        assert!(rx.recovery.retransmit_repeats > 0);
        assert_eq!(tx.recovery.refused.repeated, rx.recovery.retransmit_repeats);
    }

    #[test]
    fn repeats_stop_when_requests_move_to_the_control_stream() {
        // Requests go by datagram until the shell finds the peer takes none; repeats queued
        // by then are dropped, not sent as datagrams.
        let mut p = nack_pair(fixed(100));
        p.drop = every_nth_original(7);
        let mut switched = false;
        for _ in 0..10 {
            p.push(5000);
            for _ in 0..33 {
                p.step(Duration::from_millis(1));
                if !switched && p.rx.stats().nack_entries > 0 {
                    assert!(!p.rx.repeats.is_empty());
                    p.rx.set_nack_datagrams(false);
                    switched = true;
                }
            }
        }
        assert!(switched);
        assert!(p.rx.repeats.is_empty());
        assert_eq!(p.rx.stats().nack_repeats, 0);
    }

    #[test]
    fn the_wait_grows_to_cover_reordering_learned_from_originals_that_were_asked_for() {
        // Every 7th original fragment comes 15 ms after its neighbours, none is lost. The
        // first such fragments are asked for (the wait starts at 5 ms) and then come by
        // themselves; from them the wait learns the reordering, and the rest are not asked
        // for.
        let run = |reorder_ms: u64| {
            let mut p = nack_pair(ReceiverConfig::default());
            let mut i = 0u64;
            p.extra_delay = Box::new(move |d: &[u8]| {
                if d[1] != crate::wire::datagram::TYPE_FRAGMENT || crate::wire::datagram::is_copy(d)
                {
                    return Duration::ZERO;
                }
                i += 1;
                if i.is_multiple_of(7) {
                    Duration::from_millis(reorder_ms)
                } else {
                    Duration::ZERO
                }
            });
            stream(&mut p, 90, 5000);
            p
        };
        let p = run(15);
        let r = p.rx.report(p.now);
        assert_eq!((r.frames.played, r.frames.lost, r.frames.late), (90, 0, 0));
        // 90 frames of 5 fragments: 64 held up.
        let asked = r.recovery.retransmit_requests;
        assert!((1..=8).contains(&asked), "asked {asked} times");
        assert!(p.rx.reorder_wait(p.now) > Duration::from_millis(15));
        // Without reordering nothing is learned.
        let q = run(0);
        assert_eq!(q.rx.report(q.now).recovery.retransmit_requests, 0);
        assert_eq!(q.rx.reorder_wait(q.now), Duration::ZERO);
        // And what was learned is forgotten after REORDER_MEMORY.
        assert_eq!(p.rx.reorder_wait(p.now + REORDER_MEMORY), Duration::ZERO);
    }

    #[test]
    fn fragments_from_frame_streams_are_never_asked_for_again() {
        // The sender asks for retransmission and FEC; the stream transport turns both off,
        // and a receiver fed stream records asks for nothing (QUIC repairs stream losses; a
        // fragment missing here was reset by the sender).
        let tx = SenderConfig {
            transport: crate::session::FrameTransport::Stream,
            compress: crate::compress::CompressLevel::Off,
            ..Default::default()
        };
        let mut p = Pair::with_sender(tx, fixed(150), Duration::from_millis(10));
        p.records = true;
        p.drop = every_nth_original(7);
        stream(&mut p, 30, 5000);
        let (rx, tx) = (p.rx.report(p.now), p.tx.report(p.now));
        assert_eq!(
            (rx.transport.as_str(), tx.transport.as_str()),
            ("stream", "stream")
        );
        assert_eq!(rx.recovery.retransmit_requests, 0, "{:?}", rx.recovery);
        assert_eq!(tx.recovery.parity_sent, 0);
        assert_eq!(tx.recovery.fec_mode, "off");
        assert!(rx.frames.lost > 10, "{:?}", rx.frames);
        assert_eq!(rx.frames.played + rx.frames.lost, 30);
    }

    #[test]
    fn nothing_is_asked_for_that_cannot_arrive_in_time() {
        // 10 ms each way, frames play 25 ms after capture: a request and its answer take a
        // 20 ms round trip after a 5 ms wait, too late for any frame.
        let mut p = nack_pair(fixed(25));
        p.drop = every_nth_original(7);
        stream(&mut p, 60, 5000);
        let rx = p.rx.report(p.now);
        assert_eq!(rx.recovery.retransmit_requests, 0);
        assert!(rx.frames.lost >= 30, "{:?}", rx.frames);
        // And with retransmission off, nothing is asked for either, whatever the delay.
        let mut off = nack_pair(ReceiverConfig {
            nack: false,
            ..fixed(150)
        });
        off.drop = every_nth_original(7);
        stream(&mut off, 60, 5000);
        assert_eq!(off.rx.report(off.now).recovery.retransmit_requests, 0);
    }

    #[test]
    fn adaptive_playout_makes_room_for_retransmission_only_under_loss() {
        let adaptive = ReceiverConfig::default();
        let mut clean = nack_pair(adaptive.clone());
        stream(&mut clean, 90, 5000);
        let mut lossy = nack_pair(adaptive);
        lossy.drop = every_nth_original(7);
        stream(&mut lossy, 90, 5000);
        let target = |p: &Pair| p.rx.report(p.now).jitter_buffer.unwrap().target_delay_us;
        let (t_clean, t_lossy) = (target(&clean), target(&lossy));
        // One-way 10 ms: the clean target stays near it; under loss it adds a round trip
        // (20 ms) and the waits.
        assert!(t_clean < 25_000, "clean target {t_clean}");
        assert!(
            t_lossy > t_clean + 20_000,
            "lossy target {t_lossy} vs {t_clean}"
        );
        let r = lossy.rx.report(lossy.now);
        assert!(r.frames.played >= 85, "{:?}", r.frames);
    }

    #[test]
    fn a_frame_lost_whole_on_a_path_without_jitter_is_saved_however_scans_fall() {
        // 40 ms each way, no jitter, a one-fragment frame every 5 ms (the peers bench's
        // gateway stream), adaptive playout: frames 300 and 700 are lost whole. Each is asked
        // for a wait after it should have come, and the room made for its copy holds it,
        // wherever the 5 ms scans fall between frames (noticed only from the frame after it,
        // a frame interval and a scan later, the copy missed the room by a few ms in some
        // phases, and the room was not made at all).
        for phase_ms in 0..5 {
            let mut p = nack_pair(ReceiverConfig::default());
            p.delay = Duration::from_millis(40);
            p.drop = Box::new(|d: &[u8]| {
                d[1] == crate::wire::datagram::TYPE_FRAGMENT
                    && !crate::wire::datagram::is_copy(d)
                    && matches!(u64::from_be_bytes(d[4..12].try_into().unwrap()), 300 | 700)
            });
            for _ in 0..phase_ms {
                p.step(Duration::from_millis(1));
            }
            for _ in 0..1000 {
                p.push(1000);
                for _ in 0..5 {
                    p.step(Duration::from_millis(1));
                }
            }
            p.tx.finish(p.now);
            for _ in 0..3000 {
                p.step(Duration::from_millis(1));
                if p.tx.is_done() && p.rx.is_done() {
                    break;
                }
            }
            let r = p.rx.report(p.now);
            assert_eq!(
                (r.frames.played, r.frames.lost, r.frames.late),
                (1000, 0, 0),
                "phase {phase_ms} ms: {:?}",
                r.recovery
            );
            assert_eq!(r.recovery.retransmitted, 2, "phase {phase_ms} ms");
        }
    }

    #[test]
    fn forged_parity_is_counted_and_changes_nothing() {
        let mut p = Pair::new(fixed(50), Duration::from_millis(5));
        let now = p.now;
        for d in [
            vec![1u8, 1, 0, 0], // too short for a parity header
            {
                // sources 0
                let mut d = vec![1u8, 1, 0, 0];
                d.extend_from_slice(&[0; 20]);
                d.extend_from_slice(&[0; 32]);
                d
            },
        ] {
            p.rx.handle_datagram(now, Bytes::from(d));
        }
        let st = p.rx.stats();
        assert_eq!(st.dropped.total, 2);
        assert_eq!(st.dropped.bad_parity + st.dropped.truncated, 2);
    }

    #[test]
    fn losses_are_counted_and_playout_skips_them() {
        let mut p = Pair::new(fixed(50), Duration::from_millis(5));
        // Drop every fragment of odd frames (seq is at bytes 4..12).
        p.drop = Box::new(|d| d[11] % 2 == 1);
        for _ in 0..10 {
            p.push(3000);
            for _ in 0..33 {
                p.step(Duration::from_millis(1));
            }
        }
        p.tx.finish(p.now);
        for _ in 0..2000 {
            p.step(Duration::from_millis(1));
        }
        let r = p.rx.report(p.now);
        assert_eq!(
            (
                r.frames.transmitted,
                r.frames.played,
                r.frames.lost,
                r.frames.late
            ),
            (10, 5, 5, 0)
        );
        assert!(p.played.iter().all(|f| f.frame.seq % 2 == 0));
    }

    #[test]
    fn adaptive_playout_settles_near_the_network_delay() {
        let mut p = Pair::new(ReceiverConfig::default(), Duration::from_millis(20));
        for _ in 0..1000 {
            p.push(1000);
            for _ in 0..10 {
                p.step(Duration::from_millis(1));
            }
        }
        let r = p.rx.report(p.now);
        assert_eq!(r.frames.late + r.frames.lost, 0);
        let target = p.rx.target_delay_us().unwrap();
        // Constant 20 ms (stepped at 1 ms) + 2 ms headroom; the start margin has decayed.
        assert!((21_000..23_500).contains(&target), "target {target}");
    }

    #[test]
    fn malformed_datagrams_are_counted_and_dropped() {
        let mut p = Pair::new(fixed(50), Duration::ZERO);
        let now = p.now;
        p.rx.handle_datagram(now, Bytes::from_static(b"short"));
        p.rx.handle_datagram(now, Bytes::from(vec![9u8; 40]));
        let mut forged = vec![0u8; 40];
        forged[0] = VERSION;
        forged[30..32].copy_from_slice(&0u16.to_be_bytes());
        p.rx.handle_datagram(now, Bytes::from(forged));
        let d = p.rx.stats().dropped;
        assert_eq!(
            (d.truncated, d.unknown_version, d.bad_geometry, d.total),
            (1, 1, 1, 3)
        );
        assert_eq!(p.rx.stats().frames_received, 0);
    }

    #[test]
    fn a_decompression_bomb_is_dropped() {
        let mut p = Pair::new(fixed(50), Duration::ZERO);
        let zeros = vec![0u8; 4 << 20];
        let mut c = crate::compress::Compressor::new(crate::compress::CompressLevel::Level(9));
        let body = c.compress(&zeros).unwrap();
        let h = FragmentHeader {
            flags: FrameFlags::COMPRESSED,
            seq: 0,
            capture_us: 1_700_000_000_000_000,
            frame_len: body.len() as u32,
            payload_len: 1000, // the lie
            index: 0,
            count: 1,
        };
        let mut d = vec![0u8; HEADER_LEN];
        h.emit(&mut d);
        d.extend_from_slice(&body);
        let now = p.now;
        p.rx.handle_datagram(now, Bytes::from(d));
        assert_eq!(p.rx.stats().dropped.decompress_failed, 1);
        assert_eq!(p.rx.stats().frames_complete, 0);
        assert_eq!(p.rx.buffered_bytes(), 0);
    }

    #[test]
    fn abort_releases_waiting_frames() {
        let mut p = Pair::new(fixed(500), Duration::ZERO);
        p.push(100);
        p.push(100);
        p.step(Duration::from_millis(1));
        p.step(Duration::from_millis(1));
        assert!(p.played.is_empty(), "500 ms target: nothing due yet");
        let flushed = p.rx.abort(p.now);
        assert_eq!(flushed.len(), 2);
        assert_eq!(p.rx.end(), Some(&End::Shutdown));
        let r = p.rx.report(p.now);
        assert_eq!((r.frames.played, r.jitter_buffer.unwrap().flushed), (2, 2));
        // The sender hears the goodbye and stops.
        p.step(Duration::from_millis(1));
        assert!(p.tx.is_done());
    }

    #[test]
    fn frames_due_when_the_drain_ends_still_come_out() {
        let mut p = Pair::new(fixed(100), Duration::ZERO);
        for _ in 0..5 {
            p.push(100);
        }
        p.tx.finish(p.now);
        p.step(Duration::from_millis(1)); // datagrams and the sender's goodbye go across
        p.step(Duration::from_millis(1));
        assert!(p.played.is_empty(), "nothing is due before 100 ms");
        // One late wake-up, long after both the frames' playout and the drain deadline.
        p.step(Duration::from_secs(3));
        p.step(Duration::from_millis(1));
        assert_eq!(
            p.played.len(),
            5,
            "the drain timer does not swallow due frames"
        );
        assert_eq!(p.rx.end(), Some(&End::Complete));
        let r = p.rx.report(p.now);
        assert_eq!((r.frames.played, r.frames.lost), (5, 0));
    }

    #[test]
    fn frames_seen_past_playout_are_accounted_at_the_end() {
        let mut p = Pair::new(fixed(50), Duration::ZERO);
        let now = p.now;
        let part = FragmentHeader {
            flags: FrameFlags::empty(),
            seq: 5,
            capture_us: 1_700_000_000_000_000,
            frame_len: 2000,
            payload_len: 2000,
            index: 0,
            count: 2,
        };
        let mut d = vec![0u8; HEADER_LEN + 1000];
        part.emit(&mut d);
        p.rx.handle_datagram(now, Bytes::from(d));
        p.rx.abort(now);
        let r = p.rx.report(now);
        assert_eq!(r.frames.received, 1);
        assert_eq!(
            r.frames.played + r.frames.late + r.frames.lost,
            6,
            "seqs 0..=5: {:?}",
            r.frames
        );
    }

    #[test]
    fn a_sender_without_hello_is_dropped_after_the_timeout() {
        let now = crate::test_instant();
        let mut rx = ReceiverSession::new(ReceiverConfig::default(), ClockAnchor::new(now, 0), now);
        rx.handle_timeout(now + Duration::from_secs(9));
        assert!(!rx.is_done());
        rx.handle_timeout(now + Duration::from_secs(10));
        assert!(
            matches!(rx.end(), Some(End::Protocol { reason, .. }) if reason.contains("no hello"))
        );
        assert_eq!(
            rx.poll_timeout(),
            None,
            "a finished session asks for no wake-up"
        );
    }

    #[test]
    fn with_a_token_only_senders_showing_it_are_admitted() {
        use crate::wire::control::Token;
        let now = crate::test_instant();
        let token = Token::new(b"a shared secret!".to_vec());
        let cfg = ReceiverConfig {
            token: token.clone(),
            ..Default::default()
        };
        let hello = |token: Option<Token>| {
            ControlMessage::Hello(Hello {
                version: VERSION,
                role: Role::Sender,
                clock_us: 1,
                max_frame_bytes: 1 << 20,
                software: "test".into(),
                no_parity: false,
                token,
            })
            .to_bytes()
        };
        for (shown, refusal) in [
            (None, Some("pass rtq-send --token-file")),
            (
                Token::new(b"a shared secreT!".to_vec()),
                Some("wrong token"),
            ),
            (token, None),
        ] {
            let mut rx = ReceiverSession::new(cfg.clone(), ClockAnchor::new(now, 0), now);
            rx.handle_control(now, &hello(shown));
            match refusal {
                Some(why) => assert!(
                    matches!(rx.end(), Some(End::Protocol { code: CloseCode::Refused, reason }) if reason.contains(why)),
                    "{:?}",
                    rx.end()
                ),
                None => assert!(!rx.is_done() && rx.peer_hello().is_some()),
            }
        }
    }

    #[test]
    fn a_sender_that_skips_hello_is_a_protocol_error() {
        let now = crate::test_instant();
        let mut rx = ReceiverSession::new(ReceiverConfig::default(), ClockAnchor::new(now, 0), now);
        rx.handle_control(now, &ControlMessage::Goodbye(Goodbye::default()).to_bytes());
        assert!(matches!(
            rx.end(),
            Some(End::Protocol {
                code: CloseCode::ProtocolViolation,
                ..
            })
        ));
    }

    /// The control messages `rx` has queued, decoded.
    fn control_messages(rx: &mut ReceiverSession) -> Vec<ControlMessage> {
        let mut decoder = ControlDecoder::new(65_535);
        while let Some(b) = rx.poll_control() {
            decoder.push(&b);
        }
        std::iter::from_fn(|| decoder.next_message())
            .filter_map(Result::ok)
            .collect()
    }

    #[test]
    fn first_pings_held_up_together_do_not_set_the_round_trip() {
        use crate::wire::control::Pong;
        // A path of 80 ms round trip whose first pings (those sent in its first 100 ms) are
        // held up together until 230 ms, as behind a lost packet of the control stream, or
        // not. Returns the pings sent in the first 400 ms and the round trip found.
        let run = |held: bool| {
            let t0 = crate::test_instant();
            let anchor = ClockAnchor::new(t0, 0);
            let mut rx = ReceiverSession::new(ReceiverConfig::default(), anchor, t0);
            let mut tx = SenderSession::new(SenderConfig::default(), anchor, t0);
            rx.handle_control(t0, &tx.poll_control().unwrap());
            // QUIC measured the path in the handshake.
            rx.set_transport_rtt(t0, Duration::from_millis(80));
            // (arrival, pong)
            let mut pongs: Vec<(Instant, Pong)> = Vec::new();
            let mut pings = 0;
            for ms in 0..400 {
                let now = t0 + Duration::from_millis(ms);
                let (due, later): (Vec<_>, Vec<_>) =
                    pongs.drain(..).partition(|(at, _)| *at <= now);
                pongs = later;
                for (_, p) in due {
                    rx.handle_control(now, &ControlMessage::Pong(p).to_bytes());
                }
                if rx.poll_timeout().is_some_and(|w| w <= now) {
                    rx.handle_timeout(now);
                }
                for m in control_messages(&mut rx) {
                    if let ControlMessage::Ping(Ping { id, t1_us }) = m {
                        pings += 1;
                        let arrival = if held && ms < 100 {
                            t0 + Duration::from_millis(230)
                        } else {
                            now + Duration::from_millis(80)
                        };
                        let t2 = t1_us + 40_000;
                        pongs.push((
                            arrival,
                            Pong {
                                id,
                                t1_us,
                                t2_us: t2,
                                t3_us: t2,
                            },
                        ));
                    }
                }
            }
            (pings, rx.clock().min_rtt_us())
        };
        // Five at the start, five more once the held-up answers are in (230-310 ms).
        assert_eq!(run(true), (10, Some(80_000)));
        // Answers a spacing apart: the first five measured the path.
        assert_eq!(run(false), (5, Some(80_000)));
    }

    #[test]
    fn quics_round_trip_is_taken_once_a_scan_until_the_first_pings_are_answered() {
        use crate::wire::control::Pong;
        let t0 = crate::test_instant();
        let mut rx = ReceiverSession::new(ReceiverConfig::default(), ClockAnchor::new(t0, 0), t0);
        assert!(rx.wants_transport_rtt(t0));
        rx.set_transport_rtt(t0, Duration::from_millis(30));
        assert!(
            !rx.wants_transport_rtt(t0 + NACK_SCAN / 2),
            "not per datagram"
        );
        assert!(rx.wants_transport_rtt(t0 + NACK_SCAN));
        let mut tx = SenderSession::new(SenderConfig::default(), ClockAnchor::new(t0, 0), t0);
        rx.handle_control(t0, &tx.poll_control().unwrap());
        for id in 1..=u64::from(FIRST_PINGS) {
            let t1_us = id * 1000;
            let pong = Pong {
                id: id as u32,
                t1_us,
                t2_us: t1_us + 15_000,
                t3_us: t1_us + 15_000,
            };
            let at = t0 + Duration::from_micros(t1_us + 30_000);
            rx.handle_control(at, &ControlMessage::Pong(pong).to_bytes());
        }
        assert_eq!(rx.clock().samples(), u64::from(FIRST_PINGS));
        assert!(!rx.wants_transport_rtt(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn before_the_first_clock_exchange_quics_round_trip_lets_losses_be_asked_for() {
        // 20 ms each way, a frame every 5 ms, frame 10 lost; the control stream carries the
        // sender's hello but no pong comes back (held up), so the clock sync has no round trip.
        let asked_for_frame_10 = |transport_rtt: Option<Duration>| {
            let t0 = crate::test_instant();
            let anchor = ClockAnchor::new(t0, 0);
            let tx_cfg = SenderConfig {
                compress: crate::compress::CompressLevel::Off,
                fec: crate::fec::FecMode::Off,
                ..Default::default()
            };
            let mut tx = SenderSession::new(tx_cfg, anchor, t0);
            let mut cfg = ReceiverConfig::default();
            cfg.jitter.mode = JitterMode::Fixed(Duration::from_millis(200));
            let mut rx = ReceiverSession::new(cfg, anchor, t0);
            rx.set_nack_datagrams(false);
            rx.handle_control(t0, &tx.poll_control().unwrap());
            let mut in_flight: Vec<(Instant, Bytes)> = Vec::new();
            let mut asked = Vec::new();
            for ms in 0..300 {
                let now = t0 + Duration::from_millis(ms);
                if ms % 5 == 0 && ms < 200 {
                    let frame = SourceFrame {
                        capture: now,
                        keyframe: false,
                        data: Bytes::from(vec![7u8; 500]),
                    };
                    tx.push_frame(now, frame).unwrap();
                }
                while let Some(d) = tx.poll_datagram(now, 1200) {
                    let lost = FragmentHeader::parse(&d).is_ok_and(|(h, _)| h.seq == 10);
                    if !lost {
                        in_flight.push((now + Duration::from_millis(20), d));
                    }
                }
                while tx.poll_control().is_some() {}
                let (due, later): (Vec<_>, Vec<_>) =
                    in_flight.drain(..).partition(|(at, _)| *at <= now);
                in_flight = later;
                for (_, d) in due {
                    rx.handle_datagram(now, d);
                }
                if let Some(rtt) = transport_rtt
                    && rx.wants_transport_rtt(now)
                {
                    rx.set_transport_rtt(now, rtt);
                }
                rx.handle_timeout(now);
                while rx.poll_frame(now).is_some() {}
                for m in control_messages(&mut rx) {
                    if let ControlMessage::Nack(n) = m {
                        asked.extend(n.entries.iter().map(|e| e.seq));
                    }
                }
            }
            assert_eq!(rx.clock().samples(), 0);
            asked.contains(&10)
        };
        assert!(
            !asked_for_frame_10(None),
            "without a round trip nothing is asked for"
        );
        assert!(asked_for_frame_10(Some(Duration::from_millis(40))));
    }
}
