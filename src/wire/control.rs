//! Messages on the control stream (`docs/PROTOCOL.md` §4).
//!
//! The control stream is the first bidirectional QUIC stream, opened by the sender. Each message
//! is `type: u8, length: u16 (big-endian), body: length bytes`. Unknown types are skipped, so the
//! protocol can grow without a version change; a message longer than the receiver's limit is
//! skipped without being buffered. Hello, report and goodbye bodies are lists of
//! `key: u16, length: u16, value` parameters in which unknown keys are ignored.

use bytes::{Buf, BytesMut};

use super::{Reader, VERSION};

/// Length of a message header (type and length).
pub const MESSAGE_HEADER_LEN: usize = 3;
/// The largest body the encoding can express.
pub const MAX_BODY_LEN: usize = u16::MAX as usize;
/// Default limit on a control message body a decoder accepts (bytes).
pub const DEFAULT_MAX_MESSAGE: usize = 4096;

const T_HELLO: u8 = 0x01;
const T_PING: u8 = 0x02;
const T_PONG: u8 = 0x03;
const T_REPORT: u8 = 0x04;
const T_GOODBYE: u8 = 0x05;
const T_SUMMARY: u8 = 0x06;
const T_NACK: u8 = 0x07;

/// Most entries one NACK message carries.
pub const MAX_NACK_ENTRIES: usize = 64;

const P_CLOCK_US: u16 = 0x0001;
const P_MAX_FRAME_BYTES: u16 = 0x0002;
const P_SOFTWARE: u16 = 0x0003;
const P_NO_PARITY: u16 = 0x0004;
const P_TOKEN: u16 = 0x0005;
const MAX_SOFTWARE_LEN: usize = 64;

/// Which end of a session a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends frames as datagrams.
    Sender,
    /// Receives, reassembles and plays frames.
    Receiver,
}

/// First message each side sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the peer speaks ([`VERSION`]).
    pub version: u8,
    /// The role the peer takes.
    pub role: Role,
    /// The peer's clock when it sent the hello, µs (a first, coarse clock-offset sample; 0 means
    /// not given).
    pub clock_us: u64,
    /// Largest frame (after decompression) the peer sends or accepts, bytes.
    pub max_frame_bytes: u32,
    /// Free-form implementation name and version, at most 64 bytes of UTF-8.
    pub software: String,
    /// Receiver: send no FEC parity (`rtq-recv --fec off`).
    pub no_parity: bool,
    /// Sender: the shared secret the receiver asks for (`--token-file`), if any.
    pub token: Option<Token>,
}

/// A shared secret a sender shows the receiver in its hello (`--token-file` on both): it
/// travels inside TLS, is compared in constant time, and is never printed (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl Token {
    /// Shortest token the command-line tools take (a guessable secret protects nothing).
    pub const MIN_LEN: usize = 16;
    /// Longest token the wire carries.
    pub const MAX_LEN: usize = 256;

    /// A token of 1 to [`MAX_LEN`](Self::MAX_LEN) bytes.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (1..=Self::MAX_LEN)
            .contains(&bytes.len())
            .then_some(Self(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `shown` is this token, in time that does not depend on where they differ.
    pub fn admits(&self, shown: Option<&Token>) -> bool {
        let Some(shown) = shown else { return false };
        let (a, b) = (&self.0, &shown.0);
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} bytes, hidden)", self.0.len())
    }
}

/// Clock-sync request (NTP-style, `docs/PROTOCOL.md` §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Identifies the exchange.
    pub id: u32,
    /// Requester's clock at transmission, µs.
    pub t1_us: u64,
}

/// Clock-sync answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// Echo of [`Ping::id`].
    pub id: u32,
    /// Echo of [`Ping::t1_us`].
    pub t1_us: u64,
    /// Responder's clock when the ping arrived, µs.
    pub t2_us: u64,
    /// Responder's clock when the pong left, µs.
    pub t3_us: u64,
}

macro_rules! counter_message {
    ($(#[$m:meta])* $name:ident { $( $(#[$fm:meta])* $field:ident = $key:literal ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fm])* pub $field: u64, )*
        }

        impl $name {
            fn encode_body(&self, out: &mut Vec<u8>) {
                $( put_u64_param(out, $key, self.$field); )*
            }

            fn decode_body(body: &[u8]) -> Result<Self, ControlError> {
                let mut m = Self::default();
                for param in Params::new(body) {
                    let (key, value) = param?;
                    match key {
                        $( $key => m.$field = u64_param(value)?, )*
                        _ => {}
                    }
                }
                Ok(m)
            }
        }
    };
}

counter_message! {
    /// Periodic receiver report, receiver → sender. Counters are cumulative since session start.
    Report {
        /// Frames of which at least one fragment arrived.
        frames_received = 0x0001,
        /// Frames reassembled (and decompressed) completely.
        frames_complete = 0x0002,
        /// Frames played out of the jitter buffer on time.
        frames_played = 0x0003,
        /// Frames complete too late for their playout time.
        frames_late = 0x0004,
        /// Frames passed by playout without completing.
        frames_lost = 0x0005,
        /// Fragments accepted.
        fragments_received = 0x0006,
        /// Datagrams dropped as malformed or over a limit, plus frames that failed to
        /// decompress.
        datagrams_dropped = 0x0007,
        /// RFC 3550 §6.4.1 interarrival jitter of frames, µs.
        jitter_us = 0x0008,
        /// Clock-sync round-trip time, µs (0 until measured).
        rtt_us = 0x0009,
        /// Current playout delay target of the jitter buffer (end-to-end), µs.
        target_delay_us = 0x000a,
        /// Highest frame sequence number seen plus one.
        next_seq = 0x000b,
        /// Fragments of the frames playout has passed (a frame of which nothing arrived counts
        /// as one).
        fragments_expected = 0x000c,
        /// Of those, fragments that did not arrive by themselves (before FEC or retransmission).
        fragments_missing = 0x000d,
        /// Runs of consecutive missing fragments, in (frame, index) order.
        loss_runs = 0x000e,
        /// Fragments restored by FEC and used.
        fec_recovered = 0x000f,
        /// Retransmission requests sent (NACK entries).
        nack_entries = 0x0010,
        /// Fragments asked for again that then arrived and were used.
        retransmit_recovered = 0x0011,
        /// Queueing delay: smoothed transit of frames above its minimum of the last 10 s, µs.
        queue_delay_us = 0x0012,
        /// Datagram bytes received (cumulative), from which the sender derives the rate the
        /// path delivers.
        bytes_received = 0x0013,
        /// The rate at which the path delivered bursts lately (the largest of the last 10 s,
        /// from the spacing of a frame's fragments sent back to back), bit/s; 0 while unknown.
        burst_rate_bps = 0x0014,
    }
}

counter_message! {
    /// Final counts, sent once by each side when it ends the session.
    ///
    /// The sender fills the `frames_sent`..`bytes_datagrams` keys, the receiver the others.
    Goodbye {
        /// Frames the source handed to the sender.
        frames_sent = 0x0101,
        /// Frames that got a sequence number (at least one fragment transmitted).
        frames_transmitted = 0x0102,
        /// Frames the sender dropped before transmitting any fragment.
        frames_dropped = 0x0103,
        /// Uncompressed payload bytes the source produced.
        bytes_payload = 0x0104,
        /// Frame bytes after compression, as fragmented.
        bytes_compressed = 0x0105,
        /// Datagram bytes handed to QUIC (rtq headers included).
        bytes_datagrams = 0x0106,
        /// Receiver: frames with at least one fragment received.
        frames_received = 0x0001,
        /// Receiver: frames complete.
        frames_complete = 0x0002,
        /// Receiver: frames played on time.
        frames_played = 0x0003,
        /// Receiver: frames complete too late.
        frames_late = 0x0004,
        /// Receiver: frames never complete.
        frames_lost = 0x0005,
    }
}

/// Percentiles of one delay as carried on the wire, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireLatency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean, in tenths of a µs.
    pub mean_tenths: u64,
}

impl WireLatency {
    #[cfg(test)]
    const LEN: usize = 64;

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.count,
            self.min,
            self.p50,
            self.p90,
            self.p99,
            self.p999,
            self.max,
            self.mean_tenths,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            count: r.u64()?,
            min: r.u64()?,
            p50: r.u64()?,
            p90: r.u64()?,
            p99: r.u64()?,
            p999: r.u64()?,
            max: r.u64()?,
            mean_tenths: r.u64()?,
        })
    }
}

/// The receiver's delay summaries, sent just before its goodbye so that the sender can report
/// what its frames went through. Later versions may append fields; decoders ignore extra bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Capture → complete.
    pub network: WireLatency,
    /// Complete → played.
    pub jitter_buffer: WireLatency,
    /// Capture → played.
    pub end_to_end: WireLatency,
}

/// Fragments the receiver asks the sender to send again (receiver → sender).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NackEntry {
    /// The frame.
    pub seq: u64,
    /// First fragment index asked for.
    pub first: u16,
    /// Fragments asked for from `first` on; 0: the whole frame (nothing of it arrived).
    pub count: u16,
}

/// A retransmission request: up to [`MAX_NACK_ENTRIES`] entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nack {
    /// What is asked for.
    pub entries: Vec<NackEntry>,
}

/// Appends a NACK body (`docs/PROTOCOL.md` §4.9): the entry count, then the entries (at most
/// [`MAX_NACK_ENTRIES`]; more are cut).
pub(crate) fn encode_nack_body(n: &Nack, out: &mut Vec<u8>) {
    let entries = &n.entries[..n.entries.len().min(MAX_NACK_ENTRIES)];
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for e in entries {
        out.extend_from_slice(&e.seq.to_be_bytes());
        out.extend_from_slice(&e.first.to_be_bytes());
        out.extend_from_slice(&e.count.to_be_bytes());
    }
}

/// Parses a NACK body: 1 to [`MAX_NACK_ENTRIES`] entries, nothing after them.
pub(crate) fn decode_nack_body(body: &[u8]) -> Option<Nack> {
    let mut r = Reader::new(body);
    let n = usize::from(r.u16()?);
    if n == 0 || n > MAX_NACK_ENTRIES || r.remaining() != n * 12 {
        return None;
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        entries.push(NackEntry {
            seq: r.u64()?,
            first: r.u16()?,
            count: r.u16()?,
        });
    }
    Some(Nack { entries })
}

/// A decoded control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Ping`].
    Ping(Ping),
    /// See [`Pong`].
    Pong(Pong),
    /// See [`Report`].
    Report(Report),
    /// See [`Goodbye`].
    Goodbye(Goodbye),
    /// See [`Summary`].
    Summary(Summary),
    /// See [`Nack`].
    Nack(Nack),
}

/// What was wrong with a control message. The decoder stays in sync after every one of these:
/// the length prefix tells it where the next message starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A message type this implementation does not know (skipped).
    #[error("unknown control message type {0:#04x}")]
    UnknownType(u8),
    /// A message longer than the configured limit (skipped without buffering).
    #[error("control message of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Declared body length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A known message whose body is too short or otherwise malformed.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

impl ControlMessage {
    /// Appends the encoded message (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.type_byte(), 0, 0]);
        match self {
            Self::Hello(h) => {
                out.push(h.version);
                out.push(match h.role {
                    Role::Sender => 0,
                    Role::Receiver => 1,
                });
                put_u64_param(out, P_CLOCK_US, h.clock_us);
                put_param(out, P_MAX_FRAME_BYTES, &h.max_frame_bytes.to_be_bytes());
                let mut software = h.software.as_str();
                while software.len() > MAX_SOFTWARE_LEN {
                    // Cut at a char boundary: pop chars until it fits.
                    let mut chars = software.chars();
                    chars.next_back();
                    software = chars.as_str();
                }
                put_param(out, P_SOFTWARE, software.as_bytes());
                if h.no_parity {
                    put_param(out, P_NO_PARITY, &[]);
                }
                if let Some(t) = &h.token {
                    put_param(out, P_TOKEN, t.as_bytes());
                }
            }
            Self::Ping(p) => {
                out.extend_from_slice(&p.id.to_be_bytes());
                out.extend_from_slice(&p.t1_us.to_be_bytes());
            }
            Self::Pong(p) => {
                out.extend_from_slice(&p.id.to_be_bytes());
                out.extend_from_slice(&p.t1_us.to_be_bytes());
                out.extend_from_slice(&p.t2_us.to_be_bytes());
                out.extend_from_slice(&p.t3_us.to_be_bytes());
            }
            Self::Report(r) => r.encode_body(out),
            Self::Goodbye(g) => g.encode_body(out),
            Self::Summary(m) => {
                m.network.encode(out);
                m.jitter_buffer.encode(out);
                m.end_to_end.encode(out);
            }
            Self::Nack(n) => encode_nack_body(n, out),
        }
        let body_len = out.len() - start - MESSAGE_HEADER_LEN;
        debug_assert!(body_len <= MAX_BODY_LEN, "rtq's own messages are small");
        let len = u16::try_from(body_len).unwrap_or(u16::MAX);
        out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
    }

    /// The message encoded into a fresh buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }

    fn type_byte(&self) -> u8 {
        match self {
            Self::Hello(_) => T_HELLO,
            Self::Ping(_) => T_PING,
            Self::Pong(_) => T_PONG,
            Self::Report(_) => T_REPORT,
            Self::Goodbye(_) => T_GOODBYE,
            Self::Summary(_) => T_SUMMARY,
            Self::Nack(_) => T_NACK,
        }
    }

    /// Decodes one message body of the given type.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Self, ControlError> {
        match kind {
            T_HELLO => decode_hello(body).map(Self::Hello),
            T_PING => {
                let mut r = Reader::new(body);
                let p = Ping {
                    id: r.u32().ok_or(ControlError::Malformed("ping"))?,
                    t1_us: r.u64().ok_or(ControlError::Malformed("ping"))?,
                };
                Ok(Self::Ping(p))
            }
            T_PONG => {
                let mut r = Reader::new(body);
                let bad = ControlError::Malformed("pong");
                let p = Pong {
                    id: r.u32().ok_or_else(|| bad.clone())?,
                    t1_us: r.u64().ok_or_else(|| bad.clone())?,
                    t2_us: r.u64().ok_or_else(|| bad.clone())?,
                    t3_us: r.u64().ok_or(bad)?,
                };
                Ok(Self::Pong(p))
            }
            T_REPORT => Report::decode_body(body).map(Self::Report),
            T_GOODBYE => Goodbye::decode_body(body).map(Self::Goodbye),
            T_SUMMARY => {
                let mut r = Reader::new(body);
                let mut one =
                    || WireLatency::decode(&mut r).ok_or(ControlError::Malformed("summary"));
                let m = Summary {
                    network: one()?,
                    jitter_buffer: one()?,
                    end_to_end: one()?,
                };
                Ok(Self::Summary(m))
            }
            T_NACK => decode_nack_body(body)
                .map(Self::Nack)
                .ok_or(ControlError::Malformed("nack")),
            other => Err(ControlError::UnknownType(other)),
        }
    }
}

fn decode_hello(body: &[u8]) -> Result<Hello, ControlError> {
    let bad = || ControlError::Malformed("hello");
    let mut r = Reader::new(body);
    let version = r.u8().ok_or_else(bad)?;
    let mut hello = Hello {
        version,
        role: Role::Sender,
        clock_us: 0,
        max_frame_bytes: 0,
        software: String::new(),
        no_parity: false,
        token: None,
    };
    if version != VERSION {
        // Everything after the version may mean other things in other versions: the version is
        // all we read, and the session refuses it.
        return Ok(hello);
    }
    hello.role = match r.u8().ok_or_else(bad)? {
        0 => Role::Sender,
        1 => Role::Receiver,
        _ => return Err(bad()),
    };
    for param in Params::new(r.rest()) {
        let (key, value) = param?;
        match key {
            P_CLOCK_US => hello.clock_us = u64_param(value)?,
            P_MAX_FRAME_BYTES => {
                let v: [u8; 4] = value.try_into().map_err(|_| bad())?;
                hello.max_frame_bytes = u32::from_be_bytes(v);
            }
            P_SOFTWARE if value.len() <= MAX_SOFTWARE_LEN => {
                hello.software = String::from_utf8_lossy(value).into_owned();
            }
            P_SOFTWARE => return Err(bad()),
            P_NO_PARITY if value.is_empty() => hello.no_parity = true,
            P_NO_PARITY => return Err(bad()),
            P_TOKEN => hello.token = Some(Token::new(value.to_vec()).ok_or_else(bad)?),
            _ => {}
        }
    }
    Ok(hello)
}

fn put_param(out: &mut Vec<u8>, key: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

fn put_u64_param(out: &mut Vec<u8>, key: u16, value: u64) {
    put_param(out, key, &value.to_be_bytes());
}

fn u64_param(value: &[u8]) -> Result<u64, ControlError> {
    let v: [u8; 8] = value
        .try_into()
        .map_err(|_| ControlError::Malformed("u64 parameter"))?;
    Ok(u64::from_be_bytes(v))
}

/// Iterator over `key: u16, len: u16, value` parameters.
struct Params<'a> {
    r: Reader<'a>,
}

impl<'a> Params<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self {
            r: Reader::new(body),
        }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(u16, &'a [u8]), ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.remaining() == 0 {
            return None;
        }
        let item = (|| {
            let key = self.r.u16()?;
            let len = self.r.u16()?;
            let value = self.r.bytes(usize::from(len))?;
            Some((key, value))
        })();
        match item {
            Some(kv) => Some(Ok(kv)),
            None => {
                self.r = Reader::new(&[]);
                Some(Err(ControlError::Malformed("parameter list")))
            }
        }
    }
}

/// Incremental decoder for the control stream: feed it bytes as they arrive, take messages out.
///
/// Memory is bounded by the message limit: it buffers at most one header and one body of at most
/// `max_message` bytes; longer messages are skipped as their bytes arrive.
#[derive(Debug)]
pub struct ControlDecoder {
    buf: BytesMut,
    skip: usize,
    max_message: usize,
}

impl ControlDecoder {
    /// A decoder that accepts bodies of up to `max_message` bytes (at most 65535).
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            skip: 0,
            max_message: max_message.min(MAX_BODY_LEN),
        }
    }

    /// Adds bytes read from the stream. Call [`next_message`](Self::next_message) until it
    /// returns `None` before adding more, or the buffer may grow past its bound.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held, waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, an error for a message that was skipped or malformed, or
    /// `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<ControlMessage, ControlError>> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        let header: [u8; MESSAGE_HEADER_LEN] =
            self.buf.get(..MESSAGE_HEADER_LEN)?.try_into().ok()?;
        let kind = header[0];
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        if len > self.max_message {
            self.buf.advance(MESSAGE_HEADER_LEN);
            let n = len.min(self.buf.len());
            self.buf.advance(n);
            self.skip = len - n;
            return Some(Err(ControlError::Oversized {
                len,
                max: self.max_message,
            }));
        }
        if self.buf.len() < MESSAGE_HEADER_LEN + len {
            return None;
        }
        self.buf.advance(MESSAGE_HEADER_LEN);
        let body = self.buf.split_to(len);
        Some(ControlMessage::decode(kind, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_token_is_admitted_only_when_equal_and_never_printed() {
        let t = Token::new(b"0123456789abcdef".to_vec()).unwrap();
        assert!(t.admits(Some(&t.clone())));
        assert!(!t.admits(None));
        assert!(!t.admits(Token::new(b"0123456789abcdeF".to_vec()).as_ref()));
        assert!(!t.admits(Token::new(b"0123456789abcde".to_vec()).as_ref()));
        assert!(!t.admits(Token::new(b"0123456789abcdef0".to_vec()).as_ref()));
        assert_eq!(Token::new(Vec::new()), None);
        assert_eq!(Token::new(vec![1; Token::MAX_LEN + 1]), None);
        let shown = format!(
            "{:?}",
            ControlMessage::Hello(Hello {
                token: Some(t),
                ..hello()
            })
        );
        assert!(!shown.contains("0123"), "{shown}");
        assert!(shown.contains("16 bytes, hidden"), "{shown}");
        // On the wire: an empty or overlong token makes the hello malformed.
        for len in [0usize, Token::MAX_LEN + 1] {
            let mut body = vec![VERSION, 0];
            body.extend_from_slice(&P_TOKEN.to_be_bytes());
            body.extend_from_slice(&(len as u16).to_be_bytes());
            body.extend(std::iter::repeat_n(7u8, len));
            assert!(decode_hello(&body).is_err(), "{len}-byte token");
        }
    }

    fn hello() -> Hello {
        Hello {
            version: VERSION,
            role: Role::Sender,
            clock_us: 1,
            max_frame_bytes: 1,
            software: String::new(),
            no_parity: false,
            token: None,
        }
    }

    fn samples() -> Vec<ControlMessage> {
        vec![
            ControlMessage::Hello(Hello {
                version: VERSION,
                role: Role::Sender,
                clock_us: 1_700_000_000_123_456,
                max_frame_bytes: 8 << 20,
                software: "rtq/0.1.0".into(),
                no_parity: false,
                token: None,
            }),
            ControlMessage::Hello(Hello {
                version: VERSION,
                role: Role::Receiver,
                clock_us: 7,
                max_frame_bytes: 1,
                software: String::new(),
                no_parity: true,
                token: None,
            }),
            ControlMessage::Hello(Hello {
                version: VERSION,
                role: Role::Sender,
                clock_us: 7,
                max_frame_bytes: 1,
                software: String::new(),
                no_parity: false,
                token: Token::new(b"sixteen bytes!!!".to_vec()),
            }),
            ControlMessage::Ping(Ping { id: 3, t1_us: 99 }),
            ControlMessage::Pong(Pong {
                id: 3,
                t1_us: 99,
                t2_us: 150,
                t3_us: 151,
            }),
            ControlMessage::Report(Report {
                frames_played: 10,
                jitter_us: 250,
                ..Default::default()
            }),
            ControlMessage::Goodbye(Goodbye {
                frames_sent: 300,
                frames_lost: 2,
                ..Default::default()
            }),
            ControlMessage::Nack(Nack {
                entries: vec![
                    NackEntry {
                        seq: 41,
                        first: 2,
                        count: 3,
                    },
                    NackEntry {
                        seq: 43,
                        first: 0,
                        count: 0,
                    },
                ],
            }),
            ControlMessage::Summary(Summary {
                end_to_end: WireLatency {
                    count: 9,
                    p99: 1234,
                    ..Default::default()
                },
                ..Default::default()
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_through_the_decoder() {
        let mut wire = Vec::new();
        for m in samples() {
            m.encode(&mut wire);
        }
        let mut d = ControlDecoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&wire);
        for m in samples() {
            assert_eq!(d.next_message(), Some(Ok(m)));
        }
        assert_eq!(d.next_message(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn unknown_types_and_keys_are_skipped() {
        let mut wire = vec![0x7f, 0, 2, 0xaa, 0xbb];
        // A report with an unknown key 0x7777 between known ones.
        let mut body = Vec::new();
        put_u64_param(&mut body, 0x0003, 5);
        put_param(&mut body, 0x7777, b"future");
        put_u64_param(&mut body, 0x0004, 1);
        wire.push(T_REPORT);
        wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
        wire.extend_from_slice(&body);
        let mut d = ControlDecoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&wire);
        assert_eq!(d.next_message(), Some(Err(ControlError::UnknownType(0x7f))));
        let expected = Report {
            frames_played: 5,
            frames_late: 1,
            ..Default::default()
        };
        assert_eq!(d.next_message(), Some(Ok(ControlMessage::Report(expected))));
    }

    #[test]
    fn oversized_messages_are_skipped_without_buffering() {
        let mut d = ControlDecoder::new(16);
        d.push(&[T_REPORT, 0x10, 0x00]); // a 4096-byte body
        assert_eq!(
            d.next_message(),
            Some(Err(ControlError::Oversized { len: 4096, max: 16 }))
        );
        for _ in 0..32 {
            d.push(&[0u8; 128]);
            assert_eq!(d.next_message(), None);
            assert_eq!(d.buffered(), 0, "skipped bytes are not kept");
        }
        let ping = ControlMessage::Ping(Ping { id: 1, t1_us: 2 });
        d.push(&ping.to_bytes());
        assert_eq!(
            d.next_message(),
            Some(Ok(ping)),
            "the stream is in sync after the skip"
        );
    }

    #[test]
    fn oversized_skip_resynchronises_across_chunks() {
        let mut d = ControlDecoder::new(12);
        let mut wire = vec![T_GOODBYE, 0, 20];
        wire.extend_from_slice(&[0xee; 20]);
        let ping = ControlMessage::Ping(Ping { id: 9, t1_us: 10 }); // a 12-byte body
        ping.encode(&mut wire);
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(m) = d.next_message() {
                out.push(m);
            }
        }
        assert_eq!(
            out,
            vec![Err(ControlError::Oversized { len: 20, max: 12 }), Ok(ping)]
        );
    }

    #[test]
    fn summary_is_three_fixed_blocks() {
        let bytes = ControlMessage::Summary(Summary::default()).to_bytes();
        assert_eq!(bytes.len(), MESSAGE_HEADER_LEN + 3 * WireLatency::LEN);
        assert_eq!(
            ControlMessage::decode(T_SUMMARY, &bytes[3..100]),
            Err(ControlError::Malformed("summary"))
        );
    }

    #[test]
    fn malformed_bodies_are_named() {
        assert_eq!(
            ControlMessage::decode(T_PING, &[0; 5]),
            Err(ControlError::Malformed("ping"))
        );
        assert_eq!(
            ControlMessage::decode(T_HELLO, &[1, 9]),
            Err(ControlError::Malformed("hello"))
        );
        assert_eq!(
            ControlMessage::decode(T_REPORT, &[0, 1, 0, 8, 1]),
            Err(ControlError::Malformed("parameter list"))
        );
        assert_eq!(
            ControlMessage::decode(T_REPORT, &[0, 1, 0, 2, 1, 2]),
            Err(ControlError::Malformed("u64 parameter"))
        );
    }

    #[test]
    fn nacks_have_between_one_and_64_entries_of_12_bytes() {
        let entry = |seq| NackEntry {
            seq,
            first: 0,
            count: 1,
        };
        let many = Nack {
            entries: (0..100).map(entry).collect(),
        };
        let bytes = ControlMessage::Nack(many).to_bytes();
        assert_eq!(
            bytes.len(),
            MESSAGE_HEADER_LEN + 2 + MAX_NACK_ENTRIES * 12,
            "cut at 64"
        );
        let Ok(ControlMessage::Nack(n)) = ControlMessage::decode(T_NACK, &bytes[3..]) else {
            panic!("nack")
        };
        assert_eq!(n.entries.len(), MAX_NACK_ENTRIES);
        for bad in [
            &[0u8, 0][..],
            &[0, 1, 0, 0],
            &[0, 65],
            &bytes[3..bytes.len() - 1],
        ] {
            assert_eq!(
                ControlMessage::decode(T_NACK, bad),
                Err(ControlError::Malformed("nack"))
            );
        }
    }

    #[test]
    fn hello_of_another_version_still_reports_its_version() {
        let mut body = vec![VERSION + 1, 7]; // 7 is no role in version 1: not even looked at
        body.extend_from_slice(&[0xff; 7]); // parameters of a future layout
        let m = ControlMessage::decode(T_HELLO, &body).unwrap();
        assert!(matches!(m, ControlMessage::Hello(h) if h.version == VERSION + 1));
    }

    #[test]
    fn long_software_names_are_cut_at_a_char_boundary() {
        let hello = Hello {
            version: VERSION,
            role: Role::Receiver,
            clock_us: 1,
            max_frame_bytes: 2,
            software: "é".repeat(40), // 80 bytes
            no_parity: false,
            token: None,
        };
        let bytes = ControlMessage::Hello(hello).to_bytes();
        let mut d = ControlDecoder::new(DEFAULT_MAX_MESSAGE);
        d.push(&bytes);
        let Some(Ok(ControlMessage::Hello(h))) = d.next_message() else {
            panic!("hello")
        };
        assert_eq!(h.software, "é".repeat(32));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_and_stays_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..30),
            max in 0usize..600,
        ) {
            let mut d = ControlDecoder::new(max);
            for c in chunks {
                d.push(&c);
                while d.next_message().is_some() {}
                prop_assert!(d.buffered() < MESSAGE_HEADER_LEN + max.max(1));
            }
        }

        #[test]
        fn split_anywhere_decodes_the_same(cut in proptest::collection::vec(1usize..40, 1..20)) {
            let mut wire = Vec::new();
            for m in samples() {
                m.encode(&mut wire);
            }
            let mut d = ControlDecoder::new(DEFAULT_MAX_MESSAGE);
            let mut out = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cut[i % cut.len()].min(rest.len());
                d.push(&rest[..n]);
                rest = &rest[n..];
                i += 1;
                while let Some(m) = d.next_message() {
                    out.push(m.unwrap());
                }
            }
            prop_assert_eq!(out, samples());
        }

        #[test]
        fn counters_round_trip(a: u64, b: u64, c: u64) {
            let r = Report { frames_received: a, jitter_us: b, next_seq: c, ..Default::default() };
            let bytes = ControlMessage::Report(r).to_bytes();
            let decoded = ControlMessage::decode(bytes[0], &bytes[3..]).unwrap();
            prop_assert_eq!(decoded, ControlMessage::Report(r));
        }
    }
}
