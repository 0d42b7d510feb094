//! The two sans-IO session state machines: [`SenderSession`] and [`ReceiverSession`].
//!
//! Neither touches a socket or a clock. A shell (the tokio + quinn one in [`crate::net`], or the
//! simulator's virtual-time loop) feeds them input with the current time and drains their
//! output; the same code therefore runs in production, in simulation and in tests.
//!
//! The call order, for both:
//! 1. construct with a config, a [`ClockAnchor`](crate::clock::ClockAnchor) and `now`;
//! 2. whenever something arrives: `handle_control(now, bytes)` for control-stream bytes, and
//!    (receiver) `handle_datagram(now, datagram)`, (sender) `push_frame(now, frame)`;
//! 3. after any input, and whenever `poll_timeout()` passes: (receiver, when
//!    `wants_transport_rtt(now)`) `set_transport_rtt(now, rtt)` with QUIC's round-trip
//!    estimate, then `handle_timeout(now)`, then drain
//!    `poll_control()` (bytes to write to the control stream), (sender) `poll_datagram(now,
//!    max)` and (receiver) `poll_frame(now)`;
//! 4. sleep until `poll_timeout()` or the next input;
//! 5. end with `finish(now)` (sender: after the last frame) or `abort(now)` (shutdown), keep
//!    driving until `is_done()`; `connection_lost(now, why)` if the transport dies first.

mod receiver;
mod sender;

pub use receiver::{ReceiverConfig, ReceiverSession, ReceiverStats};
pub use sender::{FrameRejected, Outgoing, SenderConfig, SenderSession, SenderStats};

use crate::wire::CloseCode;

/// What a session holds in memory: the bytes of the frames, datagrams and messages it buffers,
/// and the entries of its maps and queues. Every part is bounded by the session's
/// configuration; a soak test asserts that neither grows over a long run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    /// Bytes buffered.
    pub bytes: usize,
    /// Entries of its maps and queues.
    pub entries: usize,
}

impl std::ops::Add for Footprint {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            bytes: self.bytes + o.bytes,
            entries: self.entries + o.entries,
        }
    }
}

/// How frames travel from sender to receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FrameTransport {
    /// Fragments in QUIC datagrams (RFC 9221), recovered by FEC and deadline-aware
    /// retransmission: rtq's transport.
    #[default]
    Datagram,
    /// Each frame on its own unidirectional QUIC stream, reset at the frame's deadline (what
    /// moq-lite does): QUIC retransmits every loss. The baseline rtq is compared against; FEC
    /// and rtq's retransmission are off.
    Stream,
}

impl std::fmt::Display for FrameTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Datagram => "datagram",
            Self::Stream => "stream",
        })
    }
}

/// Largest backlog of control bytes a session keeps for its shell to write. Past it, periodic
/// messages (reports, pongs) are dropped rather than queued: a peer that does not read its
/// control stream cannot make us buffer without bound.
pub const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

/// Software name sent in hello messages.
pub const SOFTWARE: &str = concat!("rtq/", env!("CARGO_PKG_VERSION"));

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides exchanged goodbyes.
    Complete,
    /// The peer's goodbye did not come in time.
    Timeout,
    /// This process is shutting down (Ctrl-C, SIGTERM).
    Shutdown,
    /// The connection closed or failed before the goodbye exchange.
    ConnectionLost(String),
    /// The peer broke the protocol; the shell closes the connection with `code`.
    Protocol {
        /// Close code to send.
        code: CloseCode,
        /// What happened.
        reason: String,
    },
}

impl End {
    /// The close code the shell sends when closing the connection.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Complete | Self::ConnectionLost(_) => CloseCode::Done,
            Self::Timeout => CloseCode::Timeout,
            Self::Shutdown => CloseCode::Shutdown,
            Self::Protocol { code, .. } => *code,
        }
    }

    /// The short form reports carry in `end`.
    pub fn describe(&self) -> String {
        match self {
            Self::Complete => "complete".into(),
            Self::Timeout => "timeout waiting for the peer's goodbye".into(),
            Self::Shutdown => "shutdown".into(),
            Self::ConnectionLost(why) => format!("connection lost: {why}"),
            // The receiver's own decision (a sender without its token), not a fault.
            Self::Protocol {
                code: CloseCode::Refused,
                reason,
            } => format!("refused: {reason}"),
            Self::Protocol { reason, .. } => format!("protocol error: {reason}"),
        }
    }
}

/// Appends `msg` to a control backlog unless the backlog is over [`MAX_CONTROL_BACKLOG`]
/// (`essential` messages — hello, goodbye, summary — are always queued). Returns whether it was
/// queued.
pub(crate) fn queue_control(
    out: &mut Vec<u8>,
    msg: &crate::wire::ControlMessage,
    essential: bool,
) -> bool {
    if !essential && out.len() >= MAX_CONTROL_BACKLOG {
        return false;
    }
    msg.encode(out);
    true
}

/// What the handshake makes of one control message (`docs/PROTOCOL.md` §4).
#[derive(Debug)]
pub(crate) enum Handshake {
    /// The peer's first hello, with our version and the opposite role: accept it.
    Hello(crate::wire::Hello),
    /// A second hello: counted and ignored.
    Duplicate,
    /// Any other message after the handshake: handle it.
    Message(crate::wire::ControlMessage),
    /// A violation that ends the session with this code and reason.
    Fail(CloseCode, String),
}

/// Checks `msg` against the handshake rules both sessions share: the peer's first message must
/// be a hello, speaking [`VERSION`](crate::wire::VERSION) and taking role `peer`.
pub(crate) fn handshake(
    have_hello: bool,
    peer: crate::wire::Role,
    msg: crate::wire::ControlMessage,
) -> Handshake {
    use crate::wire::{ControlMessage, Role, VERSION};
    let (peer_name, our_name) = match peer {
        Role::Sender => ("sender", "receiver"),
        Role::Receiver => ("receiver", "sender"),
    };
    match msg {
        ControlMessage::Hello(_) if have_hello => Handshake::Duplicate,
        ControlMessage::Hello(h) if h.version != VERSION => Handshake::Fail(
            CloseCode::VersionMismatch,
            format!(
                "{peer_name} speaks protocol version {}, this {our_name} {VERSION}",
                h.version
            ),
        ),
        ControlMessage::Hello(h) if h.role != peer => Handshake::Fail(
            CloseCode::ProtocolViolation,
            format!("peer claims to be a {our_name} too"),
        ),
        ControlMessage::Hello(h) => Handshake::Hello(h),
        _ if !have_hello => Handshake::Fail(
            CloseCode::ProtocolViolation,
            format!("{peer_name}'s first message was not a hello"),
        ),
        other => Handshake::Message(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ControlMessage, Goodbye, Hello, Role, VERSION};

    fn hello(version: u8, role: Role) -> ControlMessage {
        ControlMessage::Hello(Hello {
            version,
            role,
            clock_us: 0,
            max_frame_bytes: 0,
            software: String::new(),
            no_parity: false,
            token: None,
        })
    }

    #[test]
    fn handshake_accepts_only_a_first_hello_of_the_right_version_and_role() {
        assert!(matches!(
            handshake(false, Role::Sender, hello(VERSION, Role::Sender)),
            Handshake::Hello(h) if h.role == Role::Sender
        ));
        assert!(matches!(
            handshake(true, Role::Sender, hello(VERSION, Role::Sender)),
            Handshake::Duplicate
        ));
        assert!(matches!(
            handshake(false, Role::Receiver, hello(VERSION.wrapping_add(1), Role::Receiver)),
            Handshake::Fail(CloseCode::VersionMismatch, why) if why.contains("receiver speaks protocol version")
        ));
        assert!(matches!(
            handshake(false, Role::Sender, hello(VERSION, Role::Receiver)),
            Handshake::Fail(CloseCode::ProtocolViolation, why) if why == "peer claims to be a receiver too"
        ));
        let goodbye = ControlMessage::Goodbye(Goodbye::default());
        assert!(matches!(
            handshake(false, Role::Receiver, goodbye.clone()),
            Handshake::Fail(CloseCode::ProtocolViolation, why) if why == "receiver's first message was not a hello"
        ));
        assert!(matches!(
            handshake(true, Role::Receiver, goodbye),
            Handshake::Message(ControlMessage::Goodbye(_))
        ));
    }
}
