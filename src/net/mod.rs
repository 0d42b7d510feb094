//! The real-time shell: drives the sans-IO sessions with tokio, quinn and the wall clock.
//!
//! One tokio task per connection loops: a datagram, control bytes, an input frame or a timer in
//! → session; session out → `send_datagram` / the control stream / the output; sleep until the
//! session's `poll_timeout()`. The binaries `rtq-send` and `rtq-recv` are thin wrappers over
//! [`sender::run`] and [`receiver::Receiver`].
//!
//! **No silent loss in QUIC's send buffer.** quinn's `send_datagram` drops the oldest queued
//! datagram when its buffer is full. The sender shell uses `send_datagram_wait`, which takes a
//! datagram at once when there is room and otherwise waits; the session's own queue (which
//! drops stale frames on purpose, and counts them) holds the rest, and a datagram still waiting
//! when its frame's deadline passes is abandoned, counted. QUIC is given no more than about
//! 50 ms of sending at its current rate, so frames that cannot leave soon wait where their
//! deadline applies rather than in QUIC's buffer. One loss remains outside rtq's
//! control: when the path MTU shrinks, quinn discards queued datagrams that no longer fit (at
//! most the 64 KiB buffer); those frames are counted lost by the receiver.

pub mod alarm;
pub mod bbr;
pub mod frames;
pub mod io;
pub mod receiver;
pub mod sender;
pub mod tls;
pub mod transport;

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The wall clock, for the shells.
#[expect(
    clippy::disallowed_methods,
    reason = "the shell supplies `now` to the sans-IO core"
)]
pub fn now() -> Instant {
    Instant::now()
}

/// The process's clock anchor (see [`ClockAnchor`](crate::clock::ClockAnchor)), read from the
/// system clock on first use. Every session in a process shares it, so sessions in one process
/// map instants to timestamps identically.
pub fn system_anchor() -> crate::clock::ClockAnchor {
    static ANCHOR: std::sync::OnceLock<crate::clock::ClockAnchor> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(read_system_clock)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the shells' one reading of the wall clock"
)]
fn read_system_clock() -> crate::clock::ClockAnchor {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, crate::clock::whole_micros);
    crate::clock::ClockAnchor::new(Instant::now(), unix_us)
}

/// A shutdown flag: set once (by a signal, or by the program), observed by every task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The setter of a [`Shutdown`] flag.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// Sets the flag.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the flag is set.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }
}

impl Shutdown {
    /// A new flag, unset, and its setter.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once the flag is set (at once if it already is; never if its setter is gone
    /// unset).
    pub async fn wait(&mut self) {
        if self.rx.wait_for(|&v| v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sets `trigger` on the first SIGINT (Ctrl-C) or SIGTERM; exits the process at once with
/// status 130 on a second one. Runs until the process ends.
pub async fn trigger_on_signals(trigger: ShutdownTrigger) {
    let mut first = true;
    loop {
        let got = wait_for_signal().await;
        if first {
            tracing::info!(
                signal = got,
                "shutting down: flushing summaries and outputs (again to force)"
            );
            eprintln!(
                "rtq: {got} received, finishing: flushing summaries and outputs (press Ctrl-C again to quit at once)"
            );
            trigger.trigger();
            first = false;
        } else {
            eprintln!("rtq: {got} received again, quitting at once");
            std::process::exit(130);
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        std::future::pending::<()>().await;
        return "";
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// The control stream, served by two small tasks so that the session loop only waits on
/// channels: one writes what the session produces, one forwards what arrives. The shells use
/// it, and so can a loop of your own that drives the sessions (as the loopback bench's
/// goodput case does): hand [`SenderSession::poll_control`](crate::session::SenderSession::poll_control)'s
/// output to [`try_send`](Self::try_send) and what [`try_recv`](Self::try_recv) or
/// [`recv`](Self::recv) gives to `handle_control`.
#[derive(Debug)]
pub struct ControlPipe {
    tx: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    open: bool,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl ControlPipe {
    /// Chunks waiting in each direction at most.
    const DEPTH: usize = 64;

    /// Starts serving `send` and `recv`. With `await_read`, finishing waits until the peer has
    /// read everything written (so that closing the connection then loses nothing).
    pub fn spawn(
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        await_read: bool,
    ) -> Self {
        let (tx, mut out) = tokio::sync::mpsc::channel::<bytes::Bytes>(Self::DEPTH);
        let (fwd, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(Self::DEPTH);
        let writer = tokio::spawn(async move {
            while let Some(b) = out.recv().await {
                if send.write_all(&b).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
            if await_read {
                let _ = send.stopped().await;
            }
        });
        let reader = tokio::spawn(async move {
            while let Ok(Some(chunk)) = recv.read_chunk(64 * 1024, true).await {
                if fwd.send(chunk.bytes).await.is_err() {
                    break;
                }
            }
        });
        Self {
            tx: Some(tx),
            rx,
            open: true,
            writer,
            reader,
        }
    }

    /// Whether [`try_send`](Self::try_send) would take a chunk now.
    pub fn has_room(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.capacity() > 0)
    }

    /// Queues bytes for the peer if there is room (check [`has_room`](Self::has_room) first:
    /// the session is the only producer, so room stays).
    pub fn try_send(&self, b: bytes::Bytes) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(b);
        }
    }

    /// The next chunk from the peer; `None` once the stream has ended (then [`is_open`](Self::is_open) is
    /// false).
    pub async fn recv(&mut self) -> Option<bytes::Bytes> {
        let chunk = self.rx.recv().await;
        self.open &= chunk.is_some();
        chunk
    }

    /// The next chunk from the peer if one is waiting, without waiting (for a loop that polls
    /// between datagrams); `None` also once the stream has ended (then [`is_open`](Self::is_open) is false).
    pub fn try_recv(&mut self) -> Option<bytes::Bytes> {
        match self.rx.try_recv() {
            Ok(chunk) => Some(chunk),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => None,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                self.open = false;
                None
            }
        }
    }

    /// Whether the peer's side may still send.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Finishes our side and waits (at most `wait`) until it is written, or read by the peer.
    pub async fn finish(mut self, wait: Duration) {
        self.tx = None;
        let _ = tokio::time::timeout(wait, &mut self.writer).await;
        self.reader.abort();
    }

    /// Finishes our side without waiting, handing back the reader for what still arrives.
    pub fn close_write(&mut self) -> tokio::task::JoinHandle<()> {
        self.tx = None;
        std::mem::replace(&mut self.writer, tokio::spawn(async {}))
    }
}

impl Drop for ControlPipe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Interval of status lines.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Figures of a QUIC connection for the report.
pub fn quic_report(conn: &quinn::Connection) -> crate::stats::report::QuicReport {
    quic_report_of(&conn.stats(), conn.max_datagram_size())
}

/// The QUIC section of a session report from a connection's statistics and its current
/// largest datagram (for shells that drive quinn-proto themselves, such as the simulator's).
pub fn quic_report_of(
    s: &quinn::ConnectionStats,
    max_datagram: Option<usize>,
) -> crate::stats::report::QuicReport {
    crate::stats::report::QuicReport {
        rtt_us: crate::clock::whole_micros(s.path.rtt),
        cwnd: s.path.cwnd,
        lost_packets: s.path.lost_packets,
        udp_tx_datagrams: s.udp_tx.datagrams,
        udp_rx_datagrams: s.udp_rx.datagrams,
        mtu: u64::from(s.path.current_mtu),
        black_holes: s.path.black_holes_detected,
        max_datagram: max_datagram.unwrap_or(0) as u64,
        datagrams_unread: 0,
    }
}

/// Whether a connection that ended with `e` failed — silence (idle timeout), a reset, a
/// transport error — rather than being closed by a decision of either end: worth a new one.
pub fn is_failure(e: &quinn::ConnectionError) -> bool {
    use quinn::ConnectionError as E;
    matches!(
        e,
        E::TimedOut | E::Reset | E::ConnectionClosed(_) | E::TransportError(_)
    )
}

/// Explains why a connection ended, in a sentence that says what to do.
pub fn explain(err: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match err {
        E::ApplicationClosed(c) => {
            let code = crate::wire::CloseCode::from_code(c.error_code.into_inner());
            let reason = String::from_utf8_lossy(&c.reason);
            match code {
                Some(crate::wire::CloseCode::Refused) => {
                    format!("the receiver refused the session: {reason}")
                }
                Some(crate::wire::CloseCode::Shutdown) => "the peer shut down".into(),
                Some(crate::wire::CloseCode::VersionMismatch) => {
                    format!("protocol version mismatch: {reason}")
                }
                Some(crate::wire::CloseCode::ProtocolViolation) => {
                    format!("the peer reported a protocol violation: {reason}")
                }
                _ => format!("the peer closed the connection ({reason})"),
            }
        }
        E::ConnectionClosed(c) => format!("the peer closed the connection: {c}"),
        E::TimedOut => "the peer stopped answering (idle timeout)".into(),
        E::Reset => "the peer reset the connection (it restarted or lost its state)".into(),
        E::LocallyClosed => "closed locally".into(),
        E::VersionMismatch => "the peer speaks no QUIC version in common".into(),
        E::TransportError(e) => explain_transport(&e.to_string()),
        E::CidsExhausted => "connection IDs exhausted".into(),
    }
}

fn explain_transport(msg: &str) -> String {
    if let Some(rest) = msg.split("PinMismatch { got: ").nth(1) {
        // rustls shows our verifier's error with Debug formatting; pull the fingerprint out.
        let got = rest.split([' ', '}']).next().unwrap_or("?");
        return format!(
            "the receiver's certificate (SHA-256 {got}) does not match --cert-sha256: it changed, or this is not the receiver you pinned; use the fingerprint rtq-recv prints"
        );
    }
    if ["UnknownIssuer", "unknown issuer", "BadSignature"]
        .iter()
        .any(|m| msg.contains(m))
    {
        return "the receiver's certificate is not trusted: pass --ca certs/cert.pem (the receiver's certificate or its CA), or --cert-sha256 with the fingerprint rtq-recv prints".into();
    }
    if msg.contains("NotValidForName") || msg.contains("not valid for name") {
        return "the receiver's certificate does not cover the host in --connect: use --server-name with a name it covers, or make a certificate for this host (rtq-recv --make-cert DIR --name HOST)".into();
    }
    if msg.contains("Expired") {
        return format!("the receiver's certificate has expired or is not yet valid: {msg}");
    }
    if msg.contains("no application protocol") || msg.contains("NoApplicationProtocol") {
        return "the peer does not speak rtq (ALPN rtq/1 refused)".into();
    }
    format!("QUIC/TLS error: {msg}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;
    use crate::net::tls::{Identity, Trust, client_config, server_config};
    use crate::net::transport::{SOCKET_BUFFER, endpoint};

    /// Two control pipes on one loopback connection: (client's, server's).
    async fn pipes() -> (ControlPipe, ControlPipe, quinn::Endpoint, quinn::Endpoint) {
        let g = Identity::self_signed(&["localhost".into()]).unwrap();
        let pin = g.identity.fingerprint().unwrap();
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = endpoint(
            local,
            SOCKET_BUFFER,
            Default::default(),
            Some(server_config(g.identity).unwrap()),
        )
        .unwrap();
        let mut client = endpoint(local, SOCKET_BUFFER, Default::default(), None).unwrap();
        client.set_default_client_config(client_config(Trust::Pin(pin)).unwrap());
        let addr = server.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(
            async { client.connect(addr, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        let (send, recv) = conn.open_bi().await.unwrap();
        let a = ControlPipe::spawn(send, recv, false);
        // The stream reaches the peer with its first bytes.
        assert!(a.has_room());
        a.try_send(bytes::Bytes::from_static(b"hello"));
        let (send, recv) = accepted.accept_bi().await.unwrap();
        let b = ControlPipe::spawn(send, recv, false);
        (a, b, client, server)
    }

    #[tokio::test]
    async fn control_pipe_carries_chunks_both_ways_and_try_recv_takes_what_waits() {
        let (mut a, mut b, _client, _server) =
            tokio::time::timeout(Duration::from_secs(10), pipes())
                .await
                .unwrap();
        assert_eq!(b.recv().await.unwrap().as_ref(), b"hello");
        assert!(a.try_recv().is_none(), "nothing was sent to a yet");
        assert!(a.is_open());
        b.try_send(bytes::Bytes::from_static(b"report"));
        // Poll as a session loop does between datagrams, yielding to the pipe's tasks.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(c) = a.try_recv() {
                    break c;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(got.as_ref(), b"report");
        // b's side finishes: a's try_recv says the stream ended.
        b.finish(Duration::from_secs(10)).await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while a.is_open() {
                assert!(a.try_recv().is_none());
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }
}
