//! The control-stream decoder and the frame-stream record decoder on arbitrary bytes, arriving
//! in arbitrary pieces: bounded buffering, and every decoded message encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtq::wire::control::ControlDecoder;
use rtq::wire::stream::{MAX_RECORD, RECORD_PREFIX, RecordDecoder};

/// The limit the fuzzed decoder runs with (small, so that skipping is exercised).
const LIMIT: usize = 512;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let step = usize::from(step).max(1);
    let mut d = ControlDecoder::new(LIMIT);
    for piece in data.chunks(step) {
        d.push(piece);
        while let Some(m) = d.next_message() {
            if let Ok(m) = m {
                let mut again = ControlDecoder::new(65_535);
                again.push(&m.to_bytes());
                assert_eq!(again.next_message().expect("whole").expect("valid"), m);
                assert!(again.next_message().is_none());
            }
        }
        // One header and one body at most.
        assert!(d.buffered() <= LIMIT + 3, "held {} bytes", d.buffered());
    }
    let mut r = RecordDecoder::new();
    for piece in data.chunks(step) {
        match r.push(piece) {
            Ok(records) => {
                for rec in records {
                    assert!(!rec.is_empty() && rec.len() <= MAX_RECORD);
                }
            }
            Err(_) => break,
        }
        assert!(r.buffered() <= MAX_RECORD + RECORD_PREFIX);
    }
    let _ = r.finish();
});
