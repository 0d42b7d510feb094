//! NACK datagrams (receiver → sender, `docs/PROTOCOL.md` §4.9): a retransmission request
//! carried in a QUIC datagram, so that a lost request delays nothing behind it (on the control
//! stream, one lost packet holds back every later request until QUIC resends it).
//!
//! ```text
//!  0       1       2
//! +-------+-------+--------------------------------+
//! |version| type=2| NACK body (§4.9): n, n entries |
//! +-------+-------+--------------------------------+
//! ```
//!
//! Type 3 carries the same body as a **repeat**: the receiver sends each first request again a
//! little later, since a lost request otherwise costs its frames (it is asked again only once
//! the copies could have come, a round trip later); the sender answers a repeat only for frames
//! it has not sent again yet.

use bytes::Bytes;

use super::VERSION;
use super::control::{Nack, decode_nack_body, encode_nack_body};

/// Datagram type of a retransmission request.
pub const TYPE_NACK: u8 = 2;
/// Datagram type of a repeated retransmission request (answered only for frames not yet sent
/// again).
pub const TYPE_NACK_REPEAT: u8 = 3;

/// Why a NACK datagram was rejected (counted by the sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NackDatagramError {
    /// Not a version-1 NACK datagram.
    #[error("not a NACK datagram of this version")]
    NotNack,
    /// The body breaks §4.9's rules.
    #[error("malformed NACK datagram")]
    Malformed,
}

/// Encodes `nack` (at most 64 entries; more are cut) as a datagram.
pub fn encode(nack: &Nack) -> Bytes {
    encode_typed(nack, TYPE_NACK)
}

/// Encodes `nack` as a repeat of a request sent before (type 3).
pub fn encode_repeat(nack: &Nack) -> Bytes {
    encode_typed(nack, TYPE_NACK_REPEAT)
}

fn encode_typed(nack: &Nack, kind: u8) -> Bytes {
    let mut out = Vec::with_capacity(4 + 12 * nack.entries.len());
    out.push(VERSION);
    out.push(kind);
    encode_nack_body(nack, &mut out);
    out.into()
}

/// A parsed NACK datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackDatagram {
    /// The request.
    pub nack: Nack,
    /// Whether it repeats a request sent before (type 3).
    pub repeat: bool,
}

/// Parses a NACK datagram (type 2, or its repeat, type 3).
pub fn parse(datagram: &[u8]) -> Result<NackDatagram, NackDatagramError> {
    match datagram {
        [v, t, body @ ..] if *v == VERSION && (*t == TYPE_NACK || *t == TYPE_NACK_REPEAT) => {
            decode_nack_body(body)
                .map(|nack| NackDatagram {
                    nack,
                    repeat: *t == TYPE_NACK_REPEAT,
                })
                .ok_or(NackDatagramError::Malformed)
        }
        _ => Err(NackDatagramError::NotNack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::{MAX_NACK_ENTRIES, NackEntry};
    use proptest::prelude::*;

    #[test]
    fn round_trips_and_rejects_what_breaks_the_rules() {
        let n = Nack {
            entries: vec![
                NackEntry {
                    seq: 7,
                    first: 1,
                    count: 2,
                },
                NackEntry {
                    seq: u64::MAX,
                    first: 0,
                    count: 0,
                },
            ],
        };
        let d = encode(&n);
        assert_eq!(d.len(), 2 + 2 + 24);
        assert_eq!(
            parse(&d),
            Ok(NackDatagram {
                nack: n.clone(),
                repeat: false
            })
        );
        // The repeat differs in its type byte only.
        let r = encode_repeat(&n);
        assert_eq!((r[1], &r[2..]), (TYPE_NACK_REPEAT, &d[2..]));
        assert_eq!(
            parse(&r),
            Ok(NackDatagram {
                nack: n,
                repeat: true
            })
        );
        assert_eq!(
            parse(&[VERSION, TYPE_NACK_REPEAT + 1, 0, 1]),
            Err(NackDatagramError::NotNack)
        );
        assert_eq!(parse(&[]), Err(NackDatagramError::NotNack));
        assert_eq!(parse(&[VERSION, 0, 0, 1]), Err(NackDatagramError::NotNack));
        assert_eq!(
            parse(&[VERSION + 1, TYPE_NACK]),
            Err(NackDatagramError::NotNack)
        );
        assert_eq!(
            parse(&[VERSION, TYPE_NACK, 0, 0]),
            Err(NackDatagramError::Malformed),
            "no entries"
        );
        let mut long = d.to_vec();
        long.push(0);
        assert_eq!(
            parse(&long),
            Err(NackDatagramError::Malformed),
            "trailing byte"
        );
        // More than 64 entries are cut when encoding, refused when parsing.
        let many = Nack {
            entries: vec![NackEntry::default(); MAX_NACK_ENTRIES + 5],
        };
        assert_eq!(
            parse(&encode(&many)).unwrap().nack.entries.len(),
            MAX_NACK_ENTRIES
        );
        let mut forged = vec![VERSION, TYPE_NACK];
        forged.extend_from_slice(&65u16.to_be_bytes());
        forged.extend_from_slice(&[0u8; 65 * 12]);
        assert_eq!(parse(&forged), Err(NackDatagramError::Malformed));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..900)) {
            if let Ok(p) = parse(&bytes) {
                let n = &p.nack;
                prop_assert!(!n.entries.is_empty() && n.entries.len() <= MAX_NACK_ENTRIES);
                let again = if p.repeat { encode_repeat(n) } else { encode(n) };
                prop_assert_eq!(&again[..], &bytes[..]);
                prop_assert_eq!(parse(&again), Ok(p));
            }
        }
    }
}
