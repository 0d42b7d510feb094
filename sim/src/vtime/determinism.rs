//! Everything that makes a virtual-time run repeat byte for byte.
//!
//! quinn-proto, rustls and rtq draw random numbers in several places. Those that can be seeded
//! are seeded here from the scenario's seed: each endpoint's RNG (packet-number skips, key-update
//! intervals, transport-parameter greasing, path challenges), connection IDs, the stateless-reset
//! and token keys, and BBR's gain-cycle offset (rtq's copy of quinn's BBR takes a seed).
//!
//! What cannot be seeded would not change what crosses the link, only bytes inside it: rustls
//! draws its client random, session ID and X25519 key shares from the operating system, all of
//! fixed length. One draw would change sizes: an ECDSA signature's DER length varies with its
//! value (70–72 bytes for P-256). So the receiver presents a fixed Ed25519 certificate
//! (signatures are always 64 bytes), derived here from a constant seed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator, EndpointConfig};
use rtq::net::tls::Identity;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// splitmix64: a well-mixed 64-bit value from a seed and a stream number.
pub fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `N` bytes drawn from `seed` and `stream`.
pub fn bytes<const N: usize>(seed: u64, stream: u64) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = mix(seed, stream.wrapping_mul(1 << 16).wrapping_add(i as u64)).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// Stream numbers of the draws below (distinct so that no two share values).
mod stream {
    pub const CLIENT_RNG: u64 = 1;
    pub const SERVER_RNG: u64 = 2;
    pub const RESET_KEY: u64 = 3;
    pub const TOKEN_KEY: u64 = 4;
    pub const CLIENT_CIDS: u64 = 5;
    pub const SERVER_CIDS: u64 = 6;
    pub const INITIAL_DCIDS: u64 = 7;
    pub const CONGESTION: u64 = 8;
}

/// Connection IDs of 8 bytes, drawn from a seed: the same sequence every run.
#[derive(Debug)]
struct SeededCids {
    seed: u64,
    next: u64,
}

impl ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> ConnectionId {
        self.next += 1;
        ConnectionId::new(&bytes::<8>(self.seed, self.next))
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A quinn-proto endpoint configuration whose every random choice follows `seed`; `server`
/// picks the server's or the client's streams of draws.
pub fn endpoint_config(seed: u64, server: bool) -> EndpointConfig {
    let (rng, cids) = if server {
        (stream::SERVER_RNG, stream::SERVER_CIDS)
    } else {
        (stream::CLIENT_RNG, stream::CLIENT_CIDS)
    };
    let reset = bytes::<64>(seed, stream::RESET_KEY);
    let mut cfg = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &reset,
    )));
    let generators = Arc::new(AtomicU64::new(0));
    let cid_seed = mix(seed, cids);
    cfg.cid_generator(move || {
        // Each generator its own stream: the endpoint may ask for more than one.
        let n = generators.fetch_add(1, Ordering::Relaxed);
        Box::new(SeededCids {
            seed: mix(cid_seed, n),
            next: 0,
        })
    });
    cfg.rng_seed(Some(bytes::<32>(seed, rng)));
    cfg
}

/// Makes a server configuration's handshake-token key follow `seed`.
pub fn seed_server(cfg: &mut quinn::ServerConfig, seed: u64) {
    let master = bytes::<64>(seed, stream::TOKEN_KEY);
    let key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&master);
    cfg.token_key(Arc::new(key));
}

/// Makes a client configuration's initial destination connection IDs follow `seed`.
pub fn seed_client(cfg: &mut quinn::ClientConfig, seed: u64) {
    let dcid_seed = mix(seed, stream::INITIAL_DCIDS);
    let n = AtomicU64::new(0);
    cfg.initial_dst_cid_provider(Arc::new(move || {
        // RFC 9000 §7.2: at least 8 bytes.
        ConnectionId::new(&bytes::<16>(dcid_seed, n.fetch_add(1, Ordering::Relaxed)))
    }));
}

/// The congestion controller's seed.
pub fn congestion_seed(seed: u64) -> u64 {
    mix(seed, stream::CONGESTION)
}

/// The seed of the fixed certificate. Not secret: the simulator's TLS protects nothing.
const IDENTITY_SEED: [u8; 32] = *b"rtq-sim fixed Ed25519 identity!!";

/// A fixed, self-signed Ed25519 certificate for `localhost`: the same bytes every run, and
/// handshake signatures of one length.
pub fn fixed_identity() -> anyhow::Result<Identity> {
    // PKCS#8 v1 for Ed25519 (RFC 8410 §7): a fixed prefix, then the 32-byte seed.
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&IDENTITY_SEED);
    let pkcs8 = PrivatePkcs8KeyDer::from(der);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        certs: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(pkcs8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_the_same_every_time_and_signs_with_ed25519() {
        let a = fixed_identity().unwrap();
        let b = fixed_identity().unwrap();
        assert_eq!(a.certs, b.certs);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // It works as a server identity: rustls accepts the key.
        rtq::net::tls::server_config(a).unwrap();
        // Ed25519's algorithm identifier (1.3.101.112) is in the certificate.
        let der = b.certs[0].as_ref();
        assert!(der.windows(5).any(|w| w == [0x06, 0x03, 0x2b, 0x65, 0x70]));
    }

    #[test]
    fn draws_follow_the_seed_and_the_stream() {
        assert_eq!(bytes::<32>(1, 2), bytes::<32>(1, 2));
        assert_ne!(bytes::<32>(1, 2), bytes::<32>(2, 2));
        assert_ne!(bytes::<32>(1, 2), bytes::<32>(1, 3));
        let mut g = SeededCids { seed: 5, next: 0 };
        let mut h = SeededCids { seed: 5, next: 0 };
        let a: Vec<_> = (0..4).map(|_| g.generate_cid()).collect();
        let b: Vec<_> = (0..4).map(|_| h.generate_cid()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_eq!(a[0].len(), 8);
    }
}
