//! Human-readable summaries of session reports, for the end of a run.

use std::fmt::Write;

use super::LatencySummary;
use super::report::SessionReport;
use crate::units::format_bytes;
use crate::wire::control::Role;

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn delay_row(out: &mut String, name: &str, s: &LatencySummary) {
    if s.count == 0 {
        let _ = writeln!(out, "    {name:<14} (no samples)");
        return;
    }
    let _ = writeln!(
        out,
        "    {name:<14} {:>8} {:>8} {:>8} {:>8} {:>8}",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.p999),
        ms(s.max)
    );
}

/// A multi-line summary of one session.
pub fn summary(title: &str, r: &SessionReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title} — {} after {:.2} s", r.end, r.duration_s);
    if r.reconnects > 0 {
        let _ = writeln!(
            out,
            "  reconnected {} time{} (frames played, late and lost add up every connection's receiver)",
            r.reconnects,
            if r.reconnects == 1 { "" } else { "s" }
        );
    }
    let f = &r.frames;
    let d = &f.dropped_by_sender;
    match r.role {
        Role::Sender => {
            let _ = writeln!(
                out,
                "  frames    sent {}  transmitted {}  dropped by sender {} (stale {}, superseded {}, queue full {}, too large {}, shutdown {})",
                f.sent,
                f.transmitted,
                d.total,
                d.stale,
                d.superseded,
                d.queue_full,
                d.too_large,
                d.shutdown
            );
            let _ = writeln!(
                out,
                "  receiver  received {}  complete {}  played {}  late {}  lost {}",
                f.received, f.complete, f.played, f.late, f.lost
            );
        }
        Role::Receiver => {
            let _ = writeln!(
                out,
                "  frames    sent {}  received {}  complete {}  played {}  late {}  lost {}  (dropped by sender {})",
                f.sent, f.received, f.complete, f.played, f.late, f.lost, d.total
            );
        }
    }
    if r.transport == "stream" {
        let _ = match r.role {
            Role::Sender => writeln!(
                out,
                "  transport one QUIC stream per frame; {} streams reset at their deadline",
                f.reset
            ),
            Role::Receiver => writeln!(out, "  transport one QUIC stream per frame"),
        };
    }
    let b = &r.bytes;
    let _ = writeln!(
        out,
        "  bytes     payload {}  compressed {} (ratio {:.3})  wire {}",
        format_bytes(b.payload),
        format_bytes(b.compressed),
        r.compression_ratio,
        format_bytes(b.wire)
    );
    if r.frames.output_dropped > 0 {
        let _ = writeln!(
            out,
            "  output    {} played frames dropped: the output consumer fell behind",
            r.frames.output_dropped
        );
    }
    let rec = &r.recovery;
    if rec.parity_sent > 0 || rec.parity_received > 0 || rec.loss_before_recovery > 0.0 {
        let _ = writeln!(
            out,
            "  recovery  loss before {:.2}%  FEC restored {} fragments  parity {} {}{}",
            rec.loss_before_recovery * 100.0,
            rec.fec_recovered,
            if r.role == Role::Sender {
                "sent"
            } else {
                "received"
            },
            if r.role == Role::Sender {
                rec.parity_sent
            } else {
                rec.parity_received
            },
            if r.role == Role::Sender {
                format!(
                    " (overhead {:.1}%, fec {})",
                    rec.fec_overhead_ratio * 100.0,
                    rec.fec_mode
                )
            } else {
                String::new()
            },
        );
    }
    if r.datagrams.dropped.total > 0 {
        let _ = writeln!(
            out,
            "  dropped   {} datagrams (see the JSON report for reasons)",
            r.datagrams.dropped.total
        );
    }
    if r.quic.datagrams_unread > 0 {
        let _ = writeln!(
            out,
            "  dropped   {} datagrams in QUIC's receive buffer, never read: the receiver fell behind",
            r.quic.datagrams_unread
        );
    }
    let by = if r.role == Role::Sender {
        " (as the receiver measured)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  delay ms{by:<20}     p50      p90      p99    p99.9      max"
    );
    let l = &r.latency_us;
    delay_row(&mut out, "network", &l.network);
    delay_row(&mut out, "jitter buffer", &l.jitter_buffer);
    delay_row(&mut out, "end-to-end", &l.end_to_end);
    if let Some(send) = &l.send {
        delay_row(&mut out, "send (local)", send);
    }
    if let Some(j) = &r.jitter_buffer {
        let _ = write!(
            out,
            "  playout   {} target {} ms",
            j.mode,
            ms(j.target_delay_us.max(0).unsigned_abs())
        );
        let _ = write!(
            out,
            ", interarrival jitter {} ms",
            ms(j.interarrival_jitter_us)
        );
        if let Some(c) = &r.clock {
            let est = c
                .estimated_offset_us
                .map_or("n/a".into(), |o| format!("{:+.3} ms", o as f64 / 1000.0));
            let _ = write!(out, "; clock {} (estimated offset {est})", c.mode);
        }
        let _ = writeln!(out);
    }
    if r.quic.rtt_us > 0 {
        let _ = writeln!(
            out,
            "  quic      rtt {} ms  cwnd {}  lost packets {}  mtu {}{}",
            ms(r.quic.rtt_us),
            format_bytes(r.quic.cwnd),
            r.quic.lost_packets,
            r.quic.mtu,
            if r.quic.black_holes > 0 {
                format!(" (fell back to 1200 {} times)", r.quic.black_holes)
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::report::*;

    fn report(role: Role) -> SessionReport {
        SessionReport {
            role,
            duration_s: 10.0,
            peer: "127.0.0.1:1".into(),
            end: "complete".into(),
            transport: "datagram".into(),
            reconnects: 0,
            frames: FrameReport {
                sent: 300,
                played: 299,
                lost: 1,
                ..Default::default()
            },
            bytes: ByteReport {
                payload: 2_500_000,
                compressed: 2_000_000,
                wire: 2_100_000,
                datagrams: 0,
            },
            compression_ratio: 0.8,
            latency_us: LatencyReport {
                end_to_end: LatencySummary {
                    count: 299,
                    p50: 2100,
                    p99: 4000,
                    ..Default::default()
                },
                ..Default::default()
            },
            datagrams: DatagramReport::default(),
            control_errors: ControlDrops::default(),
            jitter_buffer: None,
            reassembly: None,
            clock: None,
            recovery: RecoveryReport::default(),
            rate: None,
            quic: QuicReport::default(),
        }
    }

    #[test]
    fn receiver_summary_shows_counts_and_delays() {
        let text = summary("rtq-recv session 1", &report(Role::Receiver));
        assert!(text.contains("played 299"), "{text}");
        assert!(text.contains("lost 1"));
        assert!(text.contains("end-to-end"));
        assert!(text.contains("2.10"), "p50 in ms: {text}");
        assert!(text.contains("(no samples)"), "empty delays say so");
    }

    #[test]
    fn sender_summary_credits_the_receiver() {
        let text = summary("rtq-send", &report(Role::Sender));
        assert!(text.contains("as the receiver measured"), "{text}");
        assert!(text.contains("receiver  received"));
    }
}
