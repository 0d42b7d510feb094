//! A whole receiver session driven by a hostile peer: arbitrary datagrams, well-formed
//! fragments with arbitrary fields, arbitrary control-stream bytes and stream records, and time
//! that passes. Nothing panics; every datagram is counted, used or dropped.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtq::clock::ClockAnchor;
use rtq::session::{ReceiverConfig, ReceiverSession};
use rtq::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN};

#[derive(Debug, Arbitrary)]
enum Op {
    /// Any bytes as a datagram.
    Datagram(Vec<u8>),
    /// A fragment whose header parses (the body is sized to it).
    Fragment {
        flags: u8,
        seq: u16,
        capture_ms: u32,
        frame_len: u16,
        payload_len: u16,
        index: u8,
        count: u8,
        fill: u8,
    },
    /// Bytes on the control stream.
    Control(Vec<u8>),
    /// A record from a frame stream.
    Record(Vec<u8>),
    /// Time passes.
    Wait(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let anchor = ClockAnchor::new(start, 1_700_000_000_000_000);
    let mut now = start;
    let mut s = ReceiverSession::new(ReceiverConfig::default(), anchor, now);
    let mut datagrams = 0u64;
    for op in ops {
        // A session that has ended (the peer's goodbye, or silence) takes nothing more.
        let live = !s.is_done();
        match op {
            Op::Datagram(d) => {
                datagrams += u64::from(live);
                s.handle_datagram(now, Bytes::from(d));
            }
            Op::Fragment {
                flags,
                seq,
                capture_ms,
                frame_len,
                payload_len,
                index,
                count,
                fill,
            } => {
                let h = FragmentHeader {
                    flags: FrameFlags::from_bits(flags & 0x03).unwrap_or_default(),
                    seq: u64::from(seq),
                    capture_us: anchor.unix_us + u64::from(capture_ms) * 1000,
                    frame_len: u32::from(frame_len),
                    payload_len: u32::from(payload_len),
                    index: u16::from(index % 8),
                    count: u16::from(count % 8),
                };
                let mut d = vec![0u8; HEADER_LEN];
                h.emit(&mut d).expect("room");
                d.extend(std::iter::repeat_n(fill, h.range().len()));
                datagrams += u64::from(live);
                s.handle_datagram(now, Bytes::from(d));
            }
            Op::Control(c) => s.handle_control(now, &c),
            Op::Record(r) => {
                datagrams += u64::from(live); // a frame stream's record counts as one
                s.handle_stream_record(now, Bytes::from(r));
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(ms % 2000)),
        }
        // A timer that is due is handled by one call; a session that keeps asking for the
        // same past instant would spin its shell.
        for _ in 0..64 {
            if !s.poll_timeout().is_some_and(|t| t <= now) {
                break;
            }
            s.handle_timeout(now);
        }
        while s.poll_frame(now).is_some() {}
        while s.poll_control().is_some() {}
        while s.poll_datagram().is_some() {}
        let st = s.stats();
        assert_eq!(st.datagrams, datagrams, "every datagram counted");
        let d = st.dropped;
        assert!(d.total - d.bad_stream - d.decompress_failed <= st.datagrams);
    }
});
