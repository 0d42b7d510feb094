//! The reassembler fed arbitrary fragment sequences (any order, duplicates, conflicting
//! geometry, jumps, expiry): its bounds hold, and every frame it completes is exactly the frame
//! its first fragment described.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtq::reassemble::{Accepted, Reassembler, ReassemblyLimits};
use rtq::wire::datagram::{FragmentHeader, FrameFlags, valid_geometry};

#[derive(Debug, Arbitrary)]
struct Fragment {
    seq: u16,
    index: u8,
    count: u8,
    frame_len: u16,
    /// Milliseconds that pass before it arrives.
    wait_ms: u8,
}

const LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_frames: 16,
    max_bytes: 64 * 1024,
    max_frame_bytes: 32 * 1024,
    max_jump: 1000,
};

/// Byte `i` of frame `seq`: any mix-up of fragments shows in the completed frame.
fn byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

fuzz_target!(|fragments: Vec<Fragment>| {
    let mut r = Reassembler::new(LIMITS);
    let mut now = Instant::now();
    for f in fragments {
        now += Duration::from_millis(u64::from(f.wait_ms % 32));
        let count = u16::from(f.count % 24);
        let index = u16::from(f.index % 24);
        let frame_len = u32::from(f.frame_len);
        if !valid_geometry(frame_len, count) || index >= count {
            continue; // the parser rejects these before the reassembler sees them
        }
        let h = FragmentHeader {
            flags: FrameFlags::empty(),
            seq: u64::from(f.seq),
            capture_us: 0,
            frame_len,
            payload_len: frame_len,
            index,
            count,
        };
        let body: Bytes = h.range().map(|i| byte(h.seq, i)).collect();
        if let Ok(Accepted::Complete { frame, .. }) =
            r.insert(now, h, body, now + Duration::from_millis(100))
        {
            let len = frame.header.frame_len as usize;
            assert_eq!(frame.body.len(), len);
            assert!(
                frame
                    .body
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == byte(h.seq, i))
            );
        }
        r.expire(now);
        assert!(r.partial_frames() <= LIMITS.max_frames);
        assert!(r.partial_bytes() <= LIMITS.max_bytes);
    }
});
