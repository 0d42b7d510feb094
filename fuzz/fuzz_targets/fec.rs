//! FEC decoding: a real group (one frame's fragments and their Reed–Solomon parity) with
//! fragments dropped, parity reordered and possibly forged, plus arbitrary stray parity
//! datagrams. The decoder's bounds hold; honest parity restores only real fragments, once, and
//! every lost one when no more are lost than there are parity datagrams.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rtq::fec::{FecDecoder, FecLimits, encode};
use rtq::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN, shard_len, valid_geometry};
use rtq::wire::parity::ParityHeader;

#[derive(Debug, Arbitrary)]
struct Input {
    seq: u8,
    frame_len: u16,
    count: u8,
    parities: u8,
    /// Bit i drops fragment i.
    drop: u32,
    /// Parity datagrams first, or fragments first.
    parity_first: bool,
    /// (parity index, byte offset, xor) changes to parity datagrams.
    forge: Vec<(u8, u16, u8)>,
    /// Stray datagrams offered as parity.
    stray: Vec<Vec<u8>>,
}

const LIMITS: FecLimits = FecLimits {
    max_frames: 8,
    max_bytes: 256 * 1024,
    max_groups: 8,
};

fuzz_target!(|input: Input| {
    let count = u16::from(input.count % 16).max(1);
    let frame_len = u32::from(input.frame_len % 16_384);
    if !valid_geometry(frame_len, count) {
        return;
    }
    let parities = u16::from(input.parities % 4).max(1);
    let seq = u64::from(input.seq);
    let sources: Vec<Bytes> = (0..count)
        .map(|index| {
            let h = FragmentHeader {
                flags: FrameFlags::empty(),
                seq,
                capture_us: 7,
                frame_len,
                payload_len: frame_len,
                index,
                count,
            };
            let mut d = vec![0u8; HEADER_LEN];
            h.emit(&mut d).expect("room");
            d.extend(h.range().map(|i| (i as u8) ^ (index as u8)));
            Bytes::from(d)
        })
        .collect();
    debug_assert!(
        sources
            .iter()
            .all(|s| s.len() <= HEADER_LEN + shard_len(frame_len, count))
    );
    let mut parity: Vec<Vec<u8>> = encode(&sources, seq, 1, parities)
        .expect("a valid group encodes")
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    let forged = !input.forge.is_empty() || !input.stray.is_empty();
    for (i, at, x) in &input.forge {
        let n = parity.len();
        let p = &mut parity[usize::from(*i) % n];
        let at = usize::from(*at) % p.len();
        p[at] ^= x | 1;
    }
    let mut d = FecDecoder::new(LIMITS);
    let mut restored: Vec<Bytes> = Vec::new();
    let offer_parity = |d: &mut FecDecoder, p: &[u8], restored: &mut Vec<Bytes>| {
        if let Ok((h, shard)) = ParityHeader::parse(p) {
            restored.extend(d.on_parity(&h, Bytes::copy_from_slice(shard)));
        }
    };
    for s in &input.stray {
        offer_parity(&mut d, s, &mut restored);
    }
    let lost: Vec<usize> = (0..sources.len())
        .filter(|i| input.drop & (1 << i) != 0)
        .collect();
    if input.parity_first {
        for p in &parity {
            offer_parity(&mut d, p, &mut restored);
        }
    }
    for (i, s) in sources.iter().enumerate() {
        if lost.contains(&i) {
            continue;
        }
        let (h, _) = FragmentHeader::parse(s).expect("own fragments parse");
        restored.extend(d.on_fragment(&h, s.clone()));
        assert!(d.bytes() <= LIMITS.max_bytes);
    }
    if !input.parity_first {
        for p in &parity {
            offer_parity(&mut d, p, &mut restored);
        }
    }
    assert!(d.bytes() <= LIMITS.max_bytes);
    if !forged {
        // Honest parity restores only real fragments, each once (parity that comes first may
        // restore a fragment before it arrives itself), and every lost one when it can.
        for r in &restored {
            assert!(
                sources.contains(r),
                "restored a fragment that was never sent"
            );
        }
        let mut seen = restored.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), restored.len(), "restored a fragment twice");
        if lost.len() <= usize::from(parities) {
            for &i in &lost {
                assert!(
                    restored.contains(&sources[i]),
                    "lost fragment {i} not restored"
                );
            }
        }
    }
});
