//! A driver for profiling rtq's sessions under callgrind or perf (`cargo build --release
//! --example profile_sessions`, then e.g. `valgrind --tool=callgrind
//! target/release/examples/profile_sessions goodput 200000`): the sans-IO path of the
//! loopback bench's cases in virtual time, without sockets.
//!
//! - `small N`: N 1000-byte frames, one a millisecond, through both sessions, played 30 ms on;
//! - `goodput N`: N 1100-byte frames pushed while the sender holds under 64 KiB, every
//!   datagram handed to the receiver, frames played as they fall due (as the bench's
//!   `rtq_core` goodput);
//! - `sender N`: the goodput case's sender session alone, one datagram polled per frame
//!   pushed (the work on the bench's sending thread);
//! - `video N`: N 50 000-byte frames, one every 33 ms, through the sender session alone, all
//!   of a frame's datagrams polled at once; prints the time a frame and a datagram take.

#![allow(clippy::unwrap_used, reason = "a profiling driver fails loudly")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtq::clock::ClockAnchor;
use rtq::compress::CompressLevel;
use rtq::session::{ReceiverConfig, ReceiverSession, SenderConfig, SenderSession};
use rtq::source::SourceFrame;

#[expect(
    clippy::disallowed_methods,
    reason = "a base instant for the driver's virtual times"
)]
fn base() -> Instant {
    Instant::now()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "small".into());
    let n: u64 = args.next().map_or(100_000, |s| s.parse().unwrap());
    let t0 = base();
    let anchor = ClockAnchor::new(t0, 1_700_000_000_000_000);
    let cfg = SenderConfig {
        compress: CompressLevel::Off,
        ..Default::default()
    };
    let mut tx = SenderSession::new(cfg, anchor, t0);
    let mut rx = ReceiverSession::new(ReceiverConfig::default(), anchor, t0);
    match mode.as_str() {
        "small" => {
            let data = Bytes::from(vec![3u8; 1000]);
            for i in 1..=n {
                let now = t0 + Duration::from_millis(i);
                let frame = SourceFrame {
                    capture: now,
                    keyframe: false,
                    data: data.clone(),
                };
                tx.push_frame(now, frame).unwrap();
                while let Some(d) = tx.poll_datagram(now, 1414) {
                    rx.handle_datagram(now, d);
                }
                while rx.poll_frame(now + Duration::from_millis(30)).is_some() {}
            }
        }
        "goodput" => {
            // About 3 Gbit/s of 1100-byte frames: one every 3 µs.
            let data = Bytes::from(vec![0x5au8; 1100]);
            let mut pushed = 0;
            let mut now = t0;
            while pushed < n {
                while tx.queued_bytes() < 64 * 1024 {
                    let frame = SourceFrame {
                        capture: now,
                        keyframe: false,
                        data: data.clone(),
                    };
                    tx.push_frame(now, frame).unwrap();
                    pushed += 1;
                }
                while let Some(d) = tx.poll_datagram(now, 1414) {
                    now += Duration::from_micros(3);
                    rx.handle_datagram(now, d);
                    if rx.poll_timeout().is_some_and(|w| w <= now) {
                        rx.handle_timeout(now);
                    }
                    while rx.poll_frame(now).is_some() {}
                }
            }
        }
        "sender" => {
            // The goodput case's sender alone, as the bench's sending thread runs it: a frame
            // in for each datagram out, the clock a little later for each datagram.
            let data = Bytes::from(vec![0x5au8; 1100]);
            let mut pushed = 0;
            let mut now = t0;
            let mut sent = 0u64;
            while pushed < n {
                while tx.queued_bytes() < 64 * 1024 {
                    let frame = SourceFrame {
                        capture: now,
                        keyframe: false,
                        data: data.clone(),
                    };
                    tx.push_frame(now, frame).unwrap();
                    pushed += 1;
                }
                if let Some(d) = tx.poll_datagram(now, 1414) {
                    sent += d.len() as u64;
                }
                now += Duration::from_micros(3);
            }
            println!("{sent} bytes");
        }
        "video" => {
            // The `video` case's sender alone: a 50 000-byte frame every 33 ms, all its
            // datagrams polled at once (and thrown away); the time a frame takes to hand over.
            let data = Bytes::from(vec![0x5au8; 50_000]);
            let mut datagrams = 0u64;
            let started = base();
            for i in 0..n {
                let now = t0 + Duration::from_millis(33 * i);
                let frame = SourceFrame {
                    capture: now,
                    keyframe: false,
                    data: data.clone(),
                };
                tx.push_frame(now, frame).unwrap();
                while tx.poll_datagram(now, 1414).is_some() {
                    datagrams += 1;
                }
            }
            let took = started.elapsed();
            println!(
                "{datagrams} datagrams; {:.2} µs a frame, {:.0} ns a datagram",
                took.as_secs_f64() * 1e6 / n as f64,
                took.as_secs_f64() * 1e9 / datagrams as f64
            );
        }
        other => panic!("mode {other:?}: small, goodput, sender or video"),
    }
    let (ts, rs) = (tx.stats(), rx.stats());
    println!("sender {ts:?}\nreceiver {rs:?}");
}
