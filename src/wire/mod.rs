//! Every byte layout rtq puts on the wire, and nothing else.
//!
//! Two channels share one QUIC connection (ALPN [`ALPN`]):
//! - **Datagrams** (RFC 9221) carry fragments of media frames; [`datagram`] owns their header.
//! - **The control stream**, the first bidirectional stream, opened by the sender, carries
//!   length-prefixed messages in both directions; [`control`] owns them.
//! - **Frame streams** (only with `--transport stream`, the reliable baseline): one
//!   unidirectional stream per frame carries its fragments as length-prefixed records;
//!   [`stream`] owns their framing.
//!
//! Parsers take untrusted bytes and return typed values or an error naming what was wrong; they
//! never panic and never allocate more than the input justifies. `docs/PROTOCOL.md` is the
//! normative description; the code and the tests here follow it.

pub mod control;
pub mod datagram;
pub mod nack;
pub mod parity;
pub mod stream;

pub use control::{
    ControlDecoder, ControlError, ControlMessage, Goodbye, Hello, Nack, NackEntry, Ping, Pong,
    Report, Role, Summary, WireLatency,
};
pub use datagram::{DatagramError, FragmentHeader, FrameFlags};

/// The TLS application protocol name rtq connections negotiate (RFC 9001 §8.1).
pub const ALPN: &[u8] = b"rtq/1";

/// Protocol version carried in every datagram and in the hello messages.
pub const VERSION: u8 = 1;

/// Application error codes used when closing a connection (RFC 9000 §20.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// The session ended normally (after the goodbye exchange).
    Done = 0,
    /// The peer broke the protocol (malformed control stream, wrong first message).
    ProtocolViolation = 1,
    /// The peer speaks a version this endpoint does not.
    VersionMismatch = 2,
    /// The receiver refused the session: a configured limit was reached (e.g. max sessions).
    Refused = 3,
    /// The process is shutting down (Ctrl-C, SIGTERM) before the session finished.
    Shutdown = 4,
    /// The peer's goodbye did not come in time.
    Timeout = 5,
}

impl CloseCode {
    /// The code as sent in a CONNECTION_CLOSE frame.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Maps a received code back, if it is one rtq defines.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Done,
            1 => Self::ProtocolViolation,
            2 => Self::VersionMismatch,
            3 => Self::Refused,
            4 => Self::Shutdown,
            5 => Self::Timeout,
            _ => return None,
        })
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked and returns `None` when the input
/// is too short, so parsers built on it cannot index out of range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_stops_at_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None, "a short read fails without consuming");
        assert_eq!(r.u8(), Some(3));
        assert_eq!(r.u8(), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn close_codes_round_trip() {
        for c in [
            CloseCode::Done,
            CloseCode::ProtocolViolation,
            CloseCode::VersionMismatch,
            CloseCode::Refused,
            CloseCode::Shutdown,
            CloseCode::Timeout,
        ] {
            assert_eq!(CloseCode::from_code(u64::from(c.code())), Some(c));
        }
        assert_eq!(CloseCode::from_code(99), None);
    }
}
