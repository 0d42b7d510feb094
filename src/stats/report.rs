//! The session report: a stable JSON layout that scripts and CI rely on.
//!
//! Keys named in `README.md` (`role`, `duration_s`, `frames`, `bytes`, `latency_us` and their
//! members) are never renamed; new fields may be added.

use serde::{Deserialize, Serialize};

use super::LatencySummary;
use crate::reassemble::{ReassemblyStats, Rejected};
use crate::wire::control::{ControlError, Role};
use crate::wire::datagram::DatagramError;

/// One session's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionReport {
    /// `"sender"` or `"receiver"`.
    pub role: Role,
    /// Session length, seconds.
    pub duration_s: f64,
    /// Peer address, as the shell saw it.
    pub peer: String,
    /// How the session ended (`complete`, `shutdown`, `peer closed`, or an error).
    pub end: String,
    /// How frames travelled: `datagram` (rtq's transport) or `stream` (`--transport stream`,
    /// one QUIC stream per frame).
    #[serde(default = "datagram_transport")]
    pub transport: String,
    /// Sender: new connections that carried the session on after its connection was lost
    /// (`rtq-send --reconnect`); 0 on the receiver, whose sessions are one connection each.
    #[serde(default)]
    pub reconnects: u64,
    /// Frame counts.
    pub frames: FrameReport,
    /// Byte counts.
    pub bytes: ByteReport,
    /// `bytes.compressed / bytes.payload` (1.0 when nothing compressed).
    pub compression_ratio: f64,
    /// Delay summaries, µs. On the sender, as the receiver reported them in its goodbye.
    pub latency_us: LatencyReport,
    /// Datagram counts and drops by reason.
    pub datagrams: DatagramReport,
    /// Control-stream messages skipped, by reason.
    pub control_errors: ControlDrops,
    /// The jitter buffer (receiver only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jitter_buffer: Option<JitterReport>,
    /// Reassembly counters (receiver only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reassembly: Option<ReassemblyStats>,
    /// Clock-offset estimate (receiver only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub clock: Option<ClockReport>,
    /// Loss recovery: FEC (and what it cost).
    #[serde(default)]
    pub recovery: RecoveryReport,
    /// Rate adaptation (sender with `--adapt` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rate: Option<RateReport>,
    /// QUIC connection figures, filled by the shell.
    #[serde(default)]
    pub quic: QuicReport,
}

fn datagram_transport() -> String {
    "datagram".into()
}

/// Rate adaptation: what the sender asked of its source.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RateReport {
    /// The source's own rate, bit/s.
    pub max_bps: u64,
    /// The target at the end, bit/s.
    pub target_bps: u64,
    /// The lowest target, bit/s.
    pub lowest_bps: u64,
    /// Times the target was cut for congestion.
    pub cuts: u64,
    /// The congestion controller's last pacing rate, bit/s (0 if unknown).
    pub pacing_bps: u64,
}

/// Retransmission requests a sender refused, by reason (see [`RecoveryReport::refused`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedRequests {
    /// Frames never sent, or fragment indexes the frame does not have.
    pub invalid: u64,
    /// Frames past their deadline or no longer kept.
    pub expired: u64,
    /// Over the retransmission budget, or asked for too often.
    pub throttled: u64,
    /// Retransmission is off at the sender.
    pub ignored: u64,
    /// Repeats of a request (NACK datagram type 3) for frames already sent again.
    #[serde(default)]
    pub repeated: u64,
}

/// Loss recovery. The sender fills what it sent, the receiver what it received and restored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecoveryReport {
    /// FEC mode (`off`, `auto`, `auto:MAX`, or a fixed overhead such as `25%`; sender).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fec_mode: String,
    /// Fragments restored by FEC that reassembly used (receiver; the sender repeats the
    /// receiver's last report).
    pub fec_recovered: u64,
    /// Parity datagrams sent (sender).
    pub parity_sent: u64,
    /// Parity datagrams received and kept (receiver).
    pub parity_received: u64,
    /// Parity that arrived for groups already whole or decoded (receiver).
    pub parity_unneeded: u64,
    /// Groups decoded (receiver).
    pub fec_decodes: u64,
    /// Retransmission requests (NACK entries: a run of fragments, or a whole frame) the
    /// receiver sent / the sender received.
    pub retransmit_requests: u64,
    /// Request entries sent once more as repeats, in case the first request was lost
    /// (receiver; NACK datagram type 3, which the sender answers only for frames not yet sent
    /// again: the rest are its `refused.repeated`).
    #[serde(default)]
    pub retransmit_repeats: u64,
    /// Fragments sent again (sender) / that arrived after being asked for and were used
    /// (receiver).
    pub retransmitted: u64,
    /// Bytes of the fragments sent again (sender).
    #[serde(default)]
    pub retransmitted_bytes: u64,
    /// Requests the sender refused, by reason: for frames never sent or fragments that do
    /// not exist (`invalid`), already past their deadline or forgotten (`expired`), over the
    /// retransmission budget or asked for too often (`throttled`), with `--nack off`
    /// (`ignored`), or repeats of a request already answered (`repeated`).
    #[serde(default)]
    pub refused: RefusedRequests,
    /// Parity bytes / fragment bytes sent (sender).
    pub fec_overhead_ratio: f64,
    /// Fraction of fragments that did not arrive by themselves (receiver: measured; sender:
    /// as last reported).
    pub loss_before_recovery: f64,
    /// Fraction of frames lost after recovery (receiver).
    pub loss_after_recovery: f64,
}

/// Frame counts. On the receiver, `sent` comes from the sender's goodbye.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrameReport {
    /// Frames the source handed to the sender.
    pub sent: u64,
    /// Frames that got a sequence number and went on the wire (`sent` − dropped by sender).
    pub transmitted: u64,
    /// Frames of which at least one fragment arrived.
    pub received: u64,
    /// Frames reassembled and decompressed.
    pub complete: u64,
    /// Frames played on time.
    pub played: u64,
    /// Frames complete after their playout time (dropped).
    pub late: u64,
    /// Frames that never completed.
    pub lost: u64,
    /// Frames flagged as keyframes (sender: sent; receiver: played).
    pub keyframes: u64,
    /// Frames the sender dropped without sending, by reason.
    pub dropped_by_sender: SenderDrops,
    /// Sender with `--transport stream`: frames whose stream was reset at their deadline
    /// before the receiver had acknowledged all of it (they went on the wire: the receiver
    /// counts them lost or late).
    #[serde(default)]
    pub reset: u64,
    /// Receiver: played frames the output could not take (its consumer fell behind or failed).
    #[serde(default)]
    pub output_dropped: u64,
}

/// Why the sender dropped frames instead of sending them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SenderDrops {
    /// Could not start before its deadline (capture + `--deadline`).
    pub stale: u64,
    /// The send queue was full.
    pub queue_full: u64,
    /// Larger than the frame-size limit.
    pub too_large: u64,
    /// Discarded from the queue at shutdown.
    pub shutdown: u64,
    /// A delta frame shed under congestion: the queue was backing up and a keyframe waited
    /// behind it (the keyframe makes it moot), so it went to let the keyframe out sooner.
    #[serde(default)]
    pub superseded: u64,
    /// All of the above.
    pub total: u64,
}

impl SenderDrops {
    /// Recomputes `total`.
    pub fn with_total(mut self) -> Self {
        self.total =
            self.stale + self.queue_full + self.too_large + self.shutdown + self.superseded;
        self
    }
}

/// Byte counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ByteReport {
    /// Frame bytes before compression.
    pub payload: u64,
    /// Frame bytes after compression (as fragmented).
    pub compressed: u64,
    /// UDP payload bytes this endpoint sent on the connection (QUIC headers, acknowledgements
    /// and the control stream included).
    pub wire: u64,
    /// rtq datagram bytes (headers included) sent (sender) or received (receiver).
    pub datagrams: u64,
}

/// Delay summaries, µs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyReport {
    /// Capture → frame complete at the receiver.
    pub network: LatencySummary,
    /// Frame complete → played.
    pub jitter_buffer: LatencySummary,
    /// Capture → played.
    pub end_to_end: LatencySummary,
    /// Sender only: capture → last fragment handed to QUIC.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub send: Option<LatencySummary>,
}

/// Datagram counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatagramReport {
    /// Datagrams sent (sender).
    pub sent: u64,
    /// Datagrams received (receiver).
    pub received: u64,
    /// Datagrams dropped, by reason (receiver).
    pub dropped: DatagramDrops,
    /// Frames re-cut because the path's datagram size shrank (sender).
    pub recuts: u64,
}

/// Datagrams the receiver dropped, by reason.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatagramDrops {
    /// Shorter than the header.
    pub truncated: u64,
    /// Unknown protocol version.
    pub unknown_version: u64,
    /// Unknown datagram type.
    pub unknown_type: u64,
    /// Reserved flag bits set.
    pub reserved_flags: u64,
    /// Index, count and frame length inconsistent.
    pub bad_geometry: u64,
    /// Fragment length inconsistent with its geometry.
    pub bad_length: u64,
    /// Uncompressed frame with two different lengths.
    pub bad_payload_len: u64,
    /// Fragment already received.
    pub duplicate: u64,
    /// Fragment of a frame given up or too old.
    pub stale: u64,
    /// Sequence number implausibly far ahead.
    pub too_far_ahead: u64,
    /// Frame larger than the limit.
    pub too_large: u64,
    /// Frames (not datagrams) whose decompression failed: corrupt, or a decompression bomb.
    pub decompress_failed: u64,
    /// FEC parity datagrams that failed their checks (`docs/PROTOCOL.md` §3.8).
    #[serde(default)]
    pub bad_parity: u64,
    /// Parity datagrams that came although this receiver declined FEC (`--fec off`).
    #[serde(default)]
    pub parity_declined: u64,
    /// Frame streams (`--transport stream`) given up because their record framing was
    /// invalid (`docs/PROTOCOL.md` §2.1); each counts once.
    #[serde(default)]
    pub bad_stream: u64,
    /// All of the above.
    pub total: u64,
}

impl DatagramDrops {
    /// Counts a parse failure.
    pub fn parse_error(&mut self, e: &DatagramError) {
        match e {
            DatagramError::Truncated(_) => self.truncated += 1,
            DatagramError::UnknownVersion(_) => self.unknown_version += 1,
            DatagramError::UnknownType(_) => self.unknown_type += 1,
            DatagramError::ReservedFlags(_) => self.reserved_flags += 1,
            DatagramError::BadGeometry { .. } => self.bad_geometry += 1,
            DatagramError::BadLength { .. } => self.bad_length += 1,
            DatagramError::BadPayloadLen { .. } => self.bad_payload_len += 1,
        }
        self.total += 1;
    }

    /// Counts a reassembly rejection.
    pub fn rejected(&mut self, r: Rejected) {
        match r {
            Rejected::Duplicate => self.duplicate += 1,
            Rejected::Stale => self.stale += 1,
            Rejected::TooFarAhead => self.too_far_ahead += 1,
            Rejected::TooLarge => self.too_large += 1,
            Rejected::Malformed => self.bad_length += 1,
        }
        self.total += 1;
    }

    /// Counts a parity datagram that failed its checks.
    pub fn bad_parity(&mut self) {
        self.bad_parity += 1;
        self.total += 1;
    }

    /// Counts a parity datagram this receiver declined.
    pub fn parity_declined(&mut self) {
        self.parity_declined += 1;
        self.total += 1;
    }

    /// Counts a frame stream given up for invalid framing.
    pub fn bad_stream(&mut self) {
        self.bad_stream += 1;
        self.total += 1;
    }

    /// Counts a frame that failed to decompress.
    pub fn decompress_failed(&mut self) {
        self.decompress_failed += 1;
        self.total += 1;
    }
}

/// Control messages skipped, by reason.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlDrops {
    /// Unknown message type.
    pub unknown_type: u64,
    /// Longer than the limit.
    pub oversized: u64,
    /// Malformed body.
    pub malformed: u64,
    /// Valid message at a wrong time (e.g. a second hello).
    pub unexpected: u64,
}

impl ControlDrops {
    /// Counts a decoding error.
    pub fn record(&mut self, e: &ControlError) {
        match e {
            ControlError::UnknownType(_) => self.unknown_type += 1,
            ControlError::Oversized { .. } => self.oversized += 1,
            ControlError::Malformed(_) => self.malformed += 1,
        }
    }
}

/// The jitter buffer's state at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JitterReport {
    /// `adaptive` or `fixed:…`.
    pub mode: String,
    /// End-to-end delay targeted at the end, µs.
    pub target_delay_us: i64,
    /// RFC 3550 interarrival jitter of frames, µs.
    pub interarrival_jitter_us: u64,
    /// Frames dropped for lack of room.
    pub overflow: u64,
    /// Frames dropped because they were due beyond the maximum delay (capture time in the
    /// future).
    #[serde(default)]
    pub too_early: u64,
    /// Frames released early at shutdown so that none was lost.
    pub flushed: u64,
}

/// The clock-offset estimate at the end of a session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockReport {
    /// `sync` or `system`.
    pub mode: String,
    /// Offset used to map capture times (sender − receiver), µs.
    pub offset_us: i64,
    /// Offset estimated from ping/pong, µs (reported even when `system` mode uses 0).
    pub estimated_offset_us: Option<i64>,
    /// Round-trip time of the exchange the estimate came from, µs.
    pub rtt_us: Option<u64>,
    /// Exchanges completed.
    pub samples: u64,
}

/// Figures from the QUIC connection.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuicReport {
    /// Smoothed RTT at the end, µs.
    pub rtt_us: u64,
    /// Congestion window at the end, bytes.
    pub cwnd: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// UDP datagrams sent.
    pub udp_tx_datagrams: u64,
    /// UDP datagrams received.
    pub udp_rx_datagrams: u64,
    /// Path MTU at the end, bytes.
    pub mtu: u64,
    /// Times QUIC took losses for an MTU black hole and fell back to 1200-byte packets (it
    /// searches again 5 s later): random or bursty loss of full-size packets can look like
    /// one. Frames are cut into more datagrams meanwhile.
    #[serde(default)]
    pub black_holes: u64,
    /// Largest datagram payload the connection allowed at the end, bytes.
    pub max_datagram: u64,
    /// DATAGRAM frames QUIC received that the session never read (receiver, real-time
    /// shell): dropped from QUIC's receive buffer because the session fell behind, or arrived
    /// after it ended. QUIC drops them without telling; this counts them.
    #[serde(default)]
    pub datagrams_unread: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_count_by_reason_and_total() {
        let mut d = DatagramDrops::default();
        d.parse_error(&DatagramError::Truncated(3));
        d.parse_error(&DatagramError::UnknownVersion(9));
        d.rejected(Rejected::Duplicate);
        d.decompress_failed();
        assert_eq!(
            (
                d.truncated,
                d.unknown_version,
                d.duplicate,
                d.decompress_failed
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(d.total, 4);
    }
}
