//! Decompression of arbitrary input with an arbitrary declared size (the frame header's), and
//! compression round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtq::compress::{CompressLevel, Compressor, Decompressor};

fuzz_target!(|input: (u32, bool, &[u8])| {
    let (declared, fast, data) = input;
    let declared = (declared % (1 << 20)) as usize;
    let mut d = Decompressor::default();
    if let Ok(out) = d.decompress(data, declared) {
        assert_eq!(
            out.len(),
            declared,
            "exactly the declared size, or an error"
        );
    }
    let level = if fast {
        CompressLevel::Fast
    } else {
        CompressLevel::Level(6)
    };
    let mut c = Compressor::new(level);
    if let Some(z) = c.compress(data) {
        let back = d.decompress(&z, data.len()).expect("own output inflates");
        assert_eq!(&back[..], data);
    }
});
