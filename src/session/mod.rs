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
//! 3. after any input, and whenever `poll_timeout()` passes: `handle_timeout(now)`, then drain
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
