//! Every datagram parser on arbitrary bytes: fragment header, parity header, retransmission
//! request. Whatever parses must emit back to the same value (the emitters and parsers agree).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtq::wire::datagram::{FragmentHeader, HEADER_LEN};
use rtq::wire::nack;
use rtq::wire::parity::ParityHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, body)) = FragmentHeader::parse(data) {
        assert_eq!(body.len(), h.range().len(), "parse checks the geometry");
        let mut again = vec![0u8; HEADER_LEN];
        h.emit(&mut again).expect("room for the header");
        again.extend_from_slice(body);
        let (h2, body2) = FragmentHeader::parse(&again).expect("what parsed re-parses");
        assert_eq!((h, body), (h2, body2));
    }
    if let Ok((p, shard)) = ParityHeader::parse(data) {
        p.validate().expect("parse validates");
        let mut again = Vec::new();
        p.emit(&mut again);
        again.extend_from_slice(shard);
        let (p2, shard2) = ParityHeader::parse(&again).expect("what parsed re-parses");
        assert_eq!((p, shard), (p2, shard2));
    }
    if let Ok(p) = nack::parse(data) {
        let again = if p.repeat {
            nack::encode_repeat(&p.nack)
        } else {
            nack::encode(&p.nack)
        };
        assert_eq!(&again[..], data, "one encoding");
        assert_eq!(nack::parse(&again).expect("re-parses"), p);
    }
});
