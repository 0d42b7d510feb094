//! The receiver's real-time shell: accepts connections, runs a [`ReceiverSession`] per
//! connection in its own task, writes played frames to the output, and collects the reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use super::alarm::Alarm;
use super::frames::{FrameReader, MAX_FRAME_STREAMS, StreamItem};
use super::io::{Output, Refused, SessionOutput, Stream};
use super::tls::{Fingerprint, Identity, server_config};
use super::transport::{TransportOptions, transport_config};
use super::{ControlPipe, STATUS_INTERVAL, Shutdown, explain, now, quic_report_of};
use crate::clock::ClockMode;
use crate::session::{End, ReceiverConfig, ReceiverSession};
use crate::stats::Delays;
use crate::stats::report::SessionReport;
use crate::units::format_rate;

/// How the receiver maps capture times (see [`ClockMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClockChoice {
    /// `system` for a sender on this host (a loopback address), `sync` otherwise.
    #[default]
    Auto,
    /// Estimate the sender's clock offset from ping/pong exchanges.
    Sync,
    /// Trust that both hosts' clocks agree (same host, PTP).
    System,
}

impl ClockChoice {
    fn mode_for(self, peer: SocketAddr) -> ClockMode {
        match self {
            Self::Sync => ClockMode::Sync,
            Self::System => ClockMode::System,
            Self::Auto if peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback() => {
                ClockMode::System
            }
            Self::Auto => ClockMode::Sync,
        }
    }
}

/// Everything `rtq-recv` needs.
#[derive(Debug)]
pub struct RecvOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// QUIC settings.
    pub transport: TransportOptions,
    /// Session settings.
    pub session: ReceiverConfig,
    /// Clock mapping.
    pub clock: ClockChoice,
    /// Where played frames go (`None`: discarded).
    pub output: Option<Stream>,
    /// Stop after the first session ends.
    pub once: bool,
    /// Sessions served at once at most; more are refused.
    pub max_sessions: usize,
    /// Print a status line per session every second (to stderr).
    pub status: bool,
    /// Print each session's summary when it ends (to stderr).
    pub summaries: bool,
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
        /// What to do.
        hint: &'static str,
    },
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The output could not be opened or written.
    #[error("output: {0}")]
    Output(std::io::Error),
}

/// One finished session.
#[derive(Debug)]
pub struct SessionOutcome {
    /// Session number (1, 2, …, in order of connection).
    pub id: u64,
    /// Its report.
    pub report: SessionReport,
    /// Its delay histograms.
    pub delays: Delays,
}

/// A bound receiver, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct Receiver {
    endpoint: quinn::Endpoint,
    opts: RecvOptions,
    fingerprint: Option<Fingerprint>,
}

/// The receiver's QUIC endpoint settings, made so that a receiver restarted with the same
/// certificate recognises its predecessor's connections: the stateless-reset key and the key
/// that marks connection IDs as ours are derived from the certificate's private key (one-way:
/// they reveal nothing of it). The restarted receiver answers the old connection's packets
/// with a reset its sender recognises, so the sender learns at once (and reconnects) instead
/// of after its idle timeout. With a certificate made for the run both are new each run, as
/// quinn's defaults.
fn restart_aware(identity: &Identity) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, label);
        ring::hmac::sign(&k, identity.key.secret_der())
    };
    let reset = derive(b"rtq/1 stateless reset key");
    let cid = derive(b"rtq/1 connection ID key");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid.as_ref()[..8]);
    let cid_key = u64::from_be_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

impl Receiver {
    /// Binds the listening socket, presenting `identity`. Must be called inside a tokio
    /// runtime.
    pub fn bind(opts: RecvOptions, identity: Identity) -> Result<Self, RecvError> {
        let fingerprint = identity.fingerprint();
        let endpoint_config = restart_aware(&identity);
        let server = Self::server_config(&opts, identity)?;
        let endpoint = super::transport::endpoint(
            opts.listen,
            opts.transport.socket_buffer,
            endpoint_config,
            Some(server),
        )
            .map_err(|source| {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => " (the port is in use: stop the other program or pick another port with --listen)",
                std::io::ErrorKind::AddrNotAvailable => " (no interface has this address: use 0.0.0.0 or an address of this host)",
                std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: pick a higher port)",
                _ => "",
            };
            RecvError::Bind { addr: opts.listen, source, hint }
        })?;
        Ok(Self {
            endpoint,
            opts,
            fingerprint,
        })
    }

    /// The QUIC server configuration a receiver with `opts` presents `identity` with (for a
    /// caller that makes its own endpoint, such as the simulator).
    pub fn server_config(
        opts: &RecvOptions,
        identity: Identity,
    ) -> Result<quinn::ServerConfig, RecvError> {
        let mut server = server_config(identity)?;
        let mut transport = transport_config(&opts.transport);
        // A sender with `--transport stream` opens one stream per frame in flight.
        transport.max_concurrent_uni_streams(MAX_FRAME_STREAMS.into());
        server.transport_config(Arc::new(transport));
        Ok(server)
    }

    /// A receiver on an endpoint the caller made with [`server_config`](Self::server_config).
    pub fn with_endpoint(
        endpoint: quinn::Endpoint,
        opts: RecvOptions,
        fingerprint: Option<Fingerprint>,
    ) -> Self {
        Self {
            endpoint,
            opts,
            fingerprint,
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// SHA-256 fingerprint of the certificate presented.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.fingerprint
    }

    /// Serves sessions until `shutdown` is set (or, with `once`, the first session ends).
    /// Returns every session's outcome, in the order they ended.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<Vec<SessionOutcome>, RecvError> {
        let Self { endpoint, opts, .. } = self;
        // Before any sender connects: the first session's frames do not wait for it.
        crate::fec::warm_up();
        let output = Output::open(opts.output.as_ref())
            .await
            .map_err(RecvError::Output)?;
        let (local_trigger, local) = Shutdown::new();
        let cfg = Arc::new(opts.session);
        let mut tasks: JoinSet<Option<SessionOutcome>> = JoinSet::new();
        let mut outcomes = Vec::new();
        let mut next_id = 1u64;
        let mut accepting = true;
        let refusing = Arc::new(AtomicUsize::new(0));
        loop {
            if !accepting && tasks.is_empty() {
                break;
            }
            tokio::select! {
                () = shutdown.wait(), if !local_trigger.is_triggered() => {
                    local_trigger.trigger();
                    accepting = false;
                }
                inc = endpoint.accept(), if accepting => match inc {
                    Some(incoming) if tasks.len() >= opts.max_sessions => {
                        warn!(peer = %incoming.remote_address(), max = opts.max_sessions, "session limit reached; connection refused");
                        if refusing.load(Ordering::Relaxed) < MAX_REFUSALS {
                            // Tell the sender why, through a full handshake...
                            refusing.fetch_add(1, Ordering::Relaxed);
                            let refusing = Arc::clone(&refusing);
                            tokio::spawn(async move {
                                refuse(incoming, opts.max_sessions).await;
                                refusing.fetch_sub(1, Ordering::Relaxed);
                            });
                        } else {
                            // ...unless that would be work for a flood: then at the QUIC level.
                            incoming.refuse();
                        }
                    }
                    Some(incoming) => {
                        let id = next_id;
                        next_id += 1;
                        let span = info_span!("receiver", session = id, peer = %incoming.remote_address());
                        let job = serve(id, incoming, Arc::clone(&cfg), opts.clock, Arc::clone(&output), local.clone(), opts.status);
                        tasks.spawn(job.instrument(span));
                    }
                    None => accepting = false,
                },
                r = tasks.join_next(), if !tasks.is_empty() => {
                    match r {
                        Some(Ok(Some(o))) => {
                            if opts.summaries {
                                let title = format!("rtq-recv session {} from {}", o.id, o.report.peer);
                                eprint!("{}", crate::stats::text::summary(&title, &o.report));
                            }
                            outcomes.push(o);
                            if opts.once {
                                accepting = false;
                                local_trigger.trigger();
                            }
                        }
                        Some(Ok(None)) => {}
                        Some(Err(e)) => warn!(%e, "session task failed"),
                        None => {}
                    }
                }
            }
        }
        endpoint.close(
            quinn::VarInt::from_u32(crate::wire::CloseCode::Shutdown.code()),
            b"receiver exiting",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        output.close().await.map_err(RecvError::Output)?;
        Ok(outcomes)
    }
}

/// Refusals explained by a handshake at once at most; more get QUIC's CONNECTION_REFUSED.
const MAX_REFUSALS: usize = 16;

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait, after our goodbye, for the sender to close the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

async fn serve(
    id: u64,
    incoming: quinn::Incoming,
    cfg: Arc<ReceiverConfig>,
    clock: ClockChoice,
    output: Arc<Output>,
    mut shutdown: Shutdown,
    status: bool,
) -> Option<SessionOutcome> {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            debug!(%e, "connection not accepted");
            return None;
        }
    };
    let conn = tokio::select! {
        c = connecting => match c {
            Ok(c) => c,
            Err(e) => {
                warn!(peer = %peer, "handshake failed: {}", explain(&e));
                return None;
            }
        },
        () = tokio::time::sleep(HANDSHAKE_TIMEOUT) => return None,
        () = shutdown.wait() => return None,
    };
    let mut session_cfg = (*cfg).clone();
    session_cfg.clock = clock.mode_for(peer);
    let mut session = ReceiverSession::new(session_cfg, super::system_anchor(), now());
    let mut out = Sink::new(match output.for_session(id).await {
        Ok(o) => o,
        Err(e) => {
            warn!(%e, "cannot open this session's output; its frames are discarded");
            SessionOutput::Discard
        }
    });

    let mut ctl: Option<ControlPipe> = None;
    let mut ctl_accepted = false;
    // Frame streams, should the sender use `--transport stream`.
    let mut frames = FrameReader::spawn(conn.clone());
    let start = now();
    let mut next_status = start + STATUS_INTERVAL;
    let mut last_bytes = 0u64;
    // Lives across iterations: re-arming costs a system call, made only when the wake-up
    // moves earlier.
    // Frames play out to the microsecond, not on tokio's millisecond ticks (see `alarm`).
    let mut alarm = Alarm::new(start + Duration::from_secs(3600));
    // Datagrams read from QUIC: what it received beyond them, it dropped (or still holds).
    let mut read = 0u64;
    loop {
        let t = now();
        if session.wants_transport_rtt(t) {
            session.set_transport_rtt(t, conn.rtt());
        }
        session.handle_timeout(t);
        while let Some(p) = session.poll_frame(t) {
            out.write(p.frame.data);
        }
        // Retransmission requests go as datagrams; to a sender that takes none, on the control
        // stream instead.
        while let Some(d) = session.poll_datagram() {
            if let Err(
                quinn::SendDatagramError::UnsupportedByPeer | quinn::SendDatagramError::Disabled,
            ) = conn.send_datagram(d)
            {
                session.set_nack_datagrams(false);
            }
        }
        // Control output waits in the session (whose backlog is bounded: periodic messages are
        // dropped past it) until the sender has opened the stream and reads it.
        if let Some(c) = &ctl
            && c.has_room()
            && let Some(b) = session.poll_control()
        {
            c.try_send(b);
        }
        if status && t >= next_status {
            let st = session.stats();
            let d = session.delays();
            eprintln!(
                "[s{id} {:6.1}s] played {} late {} lost {} | e2e p50 {:.2} p99 {:.2} ms | target {:.2} ms | {}",
                t.saturating_duration_since(start).as_secs_f64(),
                st.frames_played,
                st.frames_late,
                st.frames_lost,
                d.end_to_end.quantile(0.5) as f64 / 1000.0,
                d.end_to_end.quantile(0.99) as f64 / 1000.0,
                session.target_delay_us().unwrap_or(0) as f64 / 1000.0,
                format_rate(
                    (st.bytes_datagrams - last_bytes) as f64 * 8.0 / STATUS_INTERVAL.as_secs_f64()
                ),
            );
            last_bytes = st.bytes_datagrams;
            while next_status <= t {
                next_status += STATUS_INTERVAL;
            }
        }
        if session.is_done() {
            break;
        }
        let mut wake = session
            .poll_timeout()
            .unwrap_or(t + Duration::from_secs(3600));
        if status {
            wake = wake.min(next_status);
        }
        alarm.reset(wake);
        // Control first: it is little, and a burst of datagrams must not hold back the hello,
        // the pongs (their arrival times are clock samples) or the goodbye.
        tokio::select! {
            biased;
            () = shutdown.wait() => {
                out.flush(session.abort(now())).await;
            }
            bi = conn.accept_bi(), if !ctl_accepted => {
                ctl_accepted = true;
                match bi {
                    // The connection stays open until the sender closes it (or a timeout), so
                    // what is written needs no wait for the sender's reading.
                    Ok((send, recv)) => ctl = Some(ControlPipe::spawn(send, recv, false)),
                    Err(e) => out.flush(session.connection_lost(now(), &explain(&e))).await,
                }
            }
            chunk = async { match ctl.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } }, if ctl.as_ref().is_some_and(ControlPipe::is_open) => {
                if let Some(chunk) = chunk {
                    session.handle_control(now(), &chunk);
                }
            }
            d = conn.read_datagram() => match d {
                Ok(d) => {
                    read += 1;
                    session.handle_datagram(now(), d);
                }
                Err(e) => out.flush(session.connection_lost(now(), &explain(&e))).await,
            },
            item = frames.recv() => match item {
                StreamItem::Record(r) => session.handle_stream_record(now(), r),
                StreamItem::Bad => session.frame_stream_failed(),
            },
            () = alarm.wait() => {}
        }
    }
    // Let the goodbye reach the sender (it closes the connection when it has it), and take the
    // sender's goodbye if it comes after ours (when this side ended first).
    let end = session.end().cloned().unwrap_or(End::Complete);
    if let Some(mut c) = ctl
        && matches!(end, End::Complete | End::Shutdown)
    {
        let writer = c.close_write();
        let _ = tokio::time::timeout(CLOSE_WAIT, writer).await;
        let give_up = tokio::time::sleep(CLOSE_WAIT);
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                _ = conn.closed() => break,
                () = &mut give_up => break,
                chunk = c.recv(), if c.is_open() => {
                    if let Some(chunk) = chunk {
                        session.handle_control(now(), &chunk);
                    }
                }
            }
        }
    }
    conn.close(
        quinn::VarInt::from_u32(end.close_code().code()),
        end.describe().as_bytes(),
    );
    let output_dropped = out.dropped;
    if let Err(e) = out.out.close().await {
        warn!(%e, "output close failed");
    }
    let mut report = session.report(now());
    report.peer = peer.to_string();
    let quic = conn.stats();
    report.quic = quic_report_of(&quic, conn.max_datagram_size());
    report.quic.datagrams_unread = quic.frame_rx.datagram.saturating_sub(read);
    report.bytes.wire = quic.udp_tx.bytes;
    report.frames.output_dropped = output_dropped;
    Some(SessionOutcome {
        id,
        report,
        delays: session.delays().clone(),
    })
}

/// Completes the handshake and closes at once with REFUSED and a reason the sender can print.
async fn refuse(incoming: quinn::Incoming, max: usize) {
    let Ok(connecting) = incoming.accept() else {
        return;
    };
    if let Ok(Ok(conn)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        let reason =
            format!("the receiver is at its limit of {max} sessions (rtq-recv --max-sessions)");
        conn.close(
            quinn::VarInt::from_u32(crate::wire::CloseCode::Refused.code()),
            reason.as_bytes(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
    }
}

/// A session's output, as the session loop uses it.
struct Sink {
    out: SessionOutput,
    failed: bool,
    dropped: u64,
}

/// How long the shutdown flush waits for the consumer, per frame.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

impl Sink {
    fn new(out: SessionOutput) -> Self {
        Self {
            out,
            failed: false,
            dropped: 0,
        }
    }

    /// Hands a played frame to the output without waiting; counts it if the consumer is
    /// behind.
    fn write(&mut self, frame: Bytes) {
        if self.failed {
            self.dropped += 1;
            return;
        }
        match self.out.try_write(frame) {
            Ok(()) => {}
            Err(Refused::Full) => {
                if self.dropped == 0 {
                    warn!(
                        "the output consumer is behind: frames are dropped at the output (counted)"
                    );
                }
                self.dropped += 1;
            }
            Err(Refused::Closed) => self.fail(),
        }
    }

    /// Writes frames released at shutdown, waiting (boundedly) for the consumer: nothing
    /// received is lost to a momentarily slow reader.
    async fn flush(&mut self, frames: Vec<crate::jitter::PlayedFrame>) {
        for p in frames {
            if self.failed {
                self.dropped += 1;
                continue;
            }
            match self.out.write_within(p.frame.data, FLUSH_WAIT).await {
                Ok(()) => {}
                Err(Refused::Full) => self.dropped += 1,
                Err(Refused::Closed) => self.fail(),
            }
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.dropped += 1;
        warn!("output failed; later frames are discarded");
        eprintln!(
            "rtq-recv: output failed (the error follows at exit); later frames are discarded"
        );
    }
}
