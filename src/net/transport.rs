//! QUIC transport settings chosen for low latency.
//!
//! | setting | rtq | quinn default | why |
//! |---|---|---|---|
//! | datagram send buffer | 64 KiB | 1 MiB | Frames waiting for the congestion controller wait in rtq's own queue, where deadlines drop them, not in QUIC's, where they would leave late. 64 KiB still holds a 4K keyframe burst. |
//! | datagram receive buffer | 4 MiB | 1.25 MiB | The receiver reads at once; the buffer only has to outlast a scheduling hiccup. |
//! | UDP socket buffers (SO_RCVBUF, SO_SNDBUF) | 4 MiB asked (`--socket-buffer`) | the system's (208 KiB on Linux) | A burst that arrives while the receiving task is descheduled waits in the kernel instead of being dropped there, unseen by QUIC; [`bind_udp`] warns when the system grants less. |
//! | initial RTT | 100 ms | 333 ms | Loss detection before the first RTT sample reacts three times sooner. |
//! | keep-alive | 1 s | off | Keeps NAT bindings warm and notices a dead path within the idle timeout. |
//! | idle timeout | 10 s | 30 s | A dead peer is given up sooner; `--idle-timeout` changes it. |
//! | streams | 1 bidirectional (control), no unidirectional | 100/100 | Nothing else is accepted. |
//! | congestion control | BBR ([`super::bbr`]: quinn's, with a seedable draw) | CUBIC | Loss-based CUBIC reads random loss and jitter as congestion: across rtq-sim's shipped scenarios it gave 2-10× the end-to-end delay of BBR, and on 40 ms ± 10 ms with 1 % loss it collapsed (51 % of frames on time against 93 %). `--congestion cubic` or `newreno` for comparisons. quinn marks its BBR experimental. |
//! | loss detection: packet threshold | 32 | 3 | Jitter reorders packets of a burst; with 3, every reordering is taken for a loss and the window collapses. Datagrams are never retransmitted, so a later loss verdict only delays the congestion response. |
//! | loss detection: time threshold | 1.5 RTT | 9/8 RTT | Likewise, for delay variation of a third of the RTT. |
//!
//! A sender with `--transport stream` (the reliable baseline) keeps quinn's loss-detection
//! thresholds: see [`stream_loss_detection`].
//!
//! Path MTU discovery stays on (its default): datagrams start at 1200 bytes of UDP payload and
//! grow as probes succeed, and rtq cuts frames at the current size.

use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::{CubicConfig, NewRenoConfig};

use super::bbr::BbrConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Congestion controller choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default: loss-based.
    Cubic,
    /// BBR (quinn's implementation, marked experimental there, with a seedable random draw):
    /// model-based; rtq's default.
    #[default]
    Bbr,
    /// NewReno (RFC 9002 §7).
    Newreno,
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
            Self::Newreno => "newreno",
        })
    }
}

/// Transport options the command line controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportOptions {
    /// Congestion controller.
    pub congestion: Congestion,
    /// Connection closes after this long without packets from the peer.
    pub idle_timeout: Duration,
    /// Bytes of datagrams QUIC may hold waiting to be sent.
    pub datagram_send_buffer: usize,
    /// Seed for the congestion controller's random draws (`None`: from the operating system).
    /// The simulator sets it so that runs repeat exactly.
    pub seed: Option<u64>,
    /// Bytes of UDP socket buffer (receive and send) to ask the kernel for: see [`bind_udp`].
    pub socket_buffer: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            congestion: Congestion::Bbr,
            idle_timeout: Duration::from_secs(10),
            datagram_send_buffer: 64 * 1024,
            seed: None,
            socket_buffer: SOCKET_BUFFER,
        }
    }
}

/// UDP socket buffer size asked for by default: about 10 ms at 3 Gbit/s, or 2800 full-size
/// datagrams.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// What the kernel granted for a socket's buffers (Linux reports twice the usable bytes: its
/// bookkeeping counts the half it keeps for overhead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    /// SO_RCVBUF as read back.
    pub receive: usize,
    /// SO_SNDBUF as read back.
    pub send: usize,
}

/// Binds a UDP socket for a QUIC endpoint at `addr`, asking for `buffer` bytes of receive and
/// send buffer. A kernel that caps the request (Linux: `net.core.rmem_max`, `wmem_max`) is not
/// an error, but it is logged as a warning with the fix, because a small receive buffer drops
/// bursts before QUIC or rtq can see or count them.
pub fn bind_udp(
    addr: std::net::SocketAddr,
    buffer: usize,
) -> std::io::Result<(std::net::UdpSocket, SocketBuffers)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the system allows it, as std's bind does by default on Linux.
        let _ = socket.set_only_v6(false);
    }
    // Failures to enlarge are reported below through what the kernel granted.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    let granted = SocketBuffers {
        receive: socket.recv_buffer_size().unwrap_or(0),
        send: socket.send_buffer_size().unwrap_or(0),
    };
    // What the kernel really set aside for data: Linux reports twice what it granted.
    let usable = |reported: usize| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    };
    if usable(granted.receive) < buffer {
        tracing::warn!(
            "the UDP receive buffer is {} KiB, not the {} KiB asked for: bursts may be dropped by \
             the kernel before rtq sees them; raise the limit with \
             `sysctl -w net.core.rmem_max={}` or pass a smaller --socket-buffer",
            usable(granted.receive) / 1024,
            buffer / 1024,
            buffer
        );
    }
    if usable(granted.send) < buffer {
        tracing::debug!(
            "the UDP send buffer is {} KiB, not {} KiB (net.core.wmem_max)",
            usable(granted.send) / 1024,
            buffer / 1024
        );
    }
    Ok((socket.into(), granted))
}

/// A QUIC endpoint on a socket from [`bind_udp`] (a server when `server` is given).
pub fn endpoint(
    addr: std::net::SocketAddr,
    buffer: usize,
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let (socket, _) = bind_udp(addr, buffer)?;
    quinn::Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime))
}

/// A tokio UDP socket from [`bind_udp`] (must be called inside a tokio runtime).
pub fn tokio_udp(
    addr: std::net::SocketAddr,
    buffer: usize,
) -> std::io::Result<tokio::net::UdpSocket> {
    let (socket, _) = bind_udp(addr, buffer)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Bytes of received datagrams QUIC holds for the application.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 4 << 20;
/// Receive window of the control stream.
const CONTROL_WINDOW: u32 = 256 * 1024;

/// How much sending time a sender lets wait in QUIC's datagram buffer.
pub const QUEUE_BUDGET: Duration = Duration::from_millis(50);

/// Bytes of datagrams a sender lets QUIC hold: what QUIC sends in [`QUEUE_BUDGET`] at a window
/// per round trip, and never less than a window (or four full datagrams). A datagram queued in
/// QUIC cannot be dropped at its frame's deadline; one waiting in the session can.
pub fn queue_allowance(cwnd: u64, rtt: Duration) -> usize {
    let rtt = rtt.max(Duration::from_micros(10));
    let per_budget = cwnd as f64 * (QUEUE_BUDGET.as_secs_f64() / rtt.as_secs_f64());
    (per_budget.max(cwnd as f64).max(4.0 * 1500.0)).min(usize::MAX as f64) as usize
}

/// Loss detection for a sender with `--transport stream`: quinn's defaults (3 packets,
/// 9/8 RTT, RFC 9002's). rtq's larger thresholds suit datagrams, which are never sent again;
/// stream data waits for its retransmission, and detecting a loss sooner sends it sooner (on
/// 40 ms ± 10 ms with 2 % loss, the stream baseline's 99.9th-percentile frame delay was 256 ms
/// with rtq's thresholds and 178 ms with these). The baseline gets the settings that serve it.
pub fn stream_loss_detection(t: &mut TransportConfig) {
    t.packet_threshold(3).time_threshold(9.0 / 8.0);
}

/// How long after quinn takes losses for an MTU black hole (and falls back to 1200-byte
/// packets) path-MTU discovery runs again. quinn's detector counts bursts of lost full-size
/// packets; random and bursty loss, and packets a jittery path reorders past the loss
/// threshold, look like that to it (in virtual time, 200 frames/s of 1316 bytes over 40 ms ±
/// 10 ms with 2 % loss: the MTU fell to 1200 in 5 of 6 seeds and stayed there, each frame cut
/// in two fragments). Probes are padding, not data: searching again costs a few packets, and
/// on a path whose MTU did shrink they fail and the MTU stays down. quinn's default is 60 s.
pub const BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(5);

/// The transport configuration for both ends.
pub fn transport_config(opts: &TransportOptions) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(opts.datagram_send_buffer)
        .initial_rtt(Duration::from_millis(100))
        .keep_alive_interval(Some(Duration::from_secs(1).min(opts.idle_timeout / 2)))
        .max_idle_timeout(IdleTimeout::try_from(opts.idle_timeout).ok())
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(CONTROL_WINDOW))
        .packet_threshold(32)
        .time_threshold(1.5);
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.black_hole_cooldown(BLACK_HOLE_COOLDOWN);
    t.mtu_discovery_config(Some(mtud));
    match opts.congestion {
        Congestion::Cubic => t.congestion_controller_factory(Arc::new(CubicConfig::default())),
        Congestion::Bbr => {
            let mut bbr = BbrConfig::default();
            bbr.seed(opts.seed);
            t.congestion_controller_factory(Arc::new(bbr))
        }
        Congestion::Newreno => t.congestion_controller_factory(Arc::new(NewRenoConfig::default())),
    };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_get_the_buffers_asked_for_within_the_system_limit() {
        let limit = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        let want = 1 << 20;
        let (socket, granted) = bind_udp("127.0.0.1:0".parse().unwrap(), want).unwrap();
        assert_ne!(socket.local_addr().unwrap().port(), 0);
        // Linux grants min(asked, limit) and reports twice that.
        if let Some(max) = limit("rmem_max") {
            assert!(
                granted.receive >= want.min(max),
                "{granted:?}, rmem_max {max}"
            );
        }
        if let Some(max) = limit("wmem_max") {
            assert!(granted.send >= want.min(max), "{granted:?}, wmem_max {max}");
        }
        // A small request gets a small buffer: the size really is set, not left at a default.
        let (_, small) = bind_udp("127.0.0.1:0".parse().unwrap(), 64 << 10).unwrap();
        assert!(
            small.receive < granted.receive || granted.receive < want,
            "{small:?}"
        );
        // Dual-stack or IPv6-only, an IPv6 wildcard binds where IPv6 exists.
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            bind_udp("[::]:0".parse().unwrap(), want).unwrap();
        }
    }

    #[test]
    fn quic_holds_about_fifty_milliseconds_of_sending() {
        // A collapsed window on a long path: one window.
        assert_eq!(queue_allowance(3000, Duration::from_millis(80)), 6000);
        // 12 kB per 80 ms: 50 ms worth is less than a window, so a window.
        assert_eq!(queue_allowance(12_000, Duration::from_millis(80)), 12_000);
        // Loopback: a window per 100 µs is 500 windows in 50 ms.
        assert_eq!(
            queue_allowance(12_000, Duration::from_micros(100)),
            6_000_000
        );
    }
}
