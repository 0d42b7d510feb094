//! # rtq — real-time QUIC
//!
//! Moves live media frames from a sender to a receiver with the lowest possible delay, over QUIC
//! unreliable datagrams (RFC 9221), with a reliable QUIC stream beside them for control.
//!
//! ## The path of a frame
//! ```text
//! sender                                                    receiver
//! Source → compress → packetize → send queue ║ reassemble → decompress → jitter buffer → Sink
//!  (seq, capture time,   (cut to the path's   ║ (bounded)                (playout at capture
//!   keyframe, bytes)      datagram size)      ║                           time + target delay)
//!          SenderSession ──── datagrams ────▶ ReceiverSession
//!                        ◀── control stream ── (hello, clock sync, reports, goodbye)
//! ```
//!
//! The stages ([`compress`], [`packetize`], [`reassemble`], [`jitter`], [`clock`]) and the two
//! sessions ([`session`]) are sans-IO: they take `now` and bytes, and hand out bytes, deadlines
//! and frames. They never read a clock or touch a socket, so the same code runs over real
//! sockets ([`net`]), in a simulator in virtual time, and in tests. [`wire`] owns every byte
//! layout (specified in `docs/PROTOCOL.md`); [`stats`] the counters, histograms and reports.

pub mod cli;
pub mod clock;
pub mod compress;
pub mod fec;
pub mod jitter;
pub mod loss;
pub mod net;
pub mod pace;
pub mod packetize;
pub mod rate;
pub mod reassemble;
pub mod retransmit;
pub mod seqmap;
pub mod session;
pub mod sorted;
pub mod source;
pub mod stats;
pub mod timer;
pub mod units;
pub mod wire;

/// A base instant for unit tests (their times are offsets from it; its value never matters).
#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests need one base instant")]
pub(crate) fn test_instant() -> std::time::Instant {
    std::time::Instant::now()
}
