//! The receiver's real-time shell: accepts connections, runs a [`ReceiverSession`] per
//! connection in its own task, writes played frames to the output, and collects the reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info_span, warn};

use super::io::{Output, SessionOutput, Stream};
use super::tls::{Fingerprint, Identity, server_config};
use super::transport::{TransportOptions, transport_config};
use super::{ControlPipe, STATUS_INTERVAL, Shutdown, explain, now, quic_report};
use crate::clock::{ClockAnchor, ClockMode};
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

impl Receiver {
    /// Binds the listening socket, presenting `identity`. Must be called inside a tokio
    /// runtime.
    pub fn bind(opts: RecvOptions, identity: Identity) -> Result<Self, RecvError> {
        let fingerprint = identity.fingerprint();
        let mut server = server_config(identity)?;
        server.transport_config(Arc::new(transport_config(&opts.transport)));
        let endpoint = quinn::Endpoint::server(server, opts.listen).map_err(|source| {
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
        let output = Output::open(opts.output.as_ref())
            .await
            .map_err(RecvError::Output)?;
        let (local_trigger, local) = Shutdown::new();
        let cfg = Arc::new(opts.session);
        let mut tasks: JoinSet<Option<SessionOutcome>> = JoinSet::new();
        let mut outcomes = Vec::new();
        let mut next_id = 1u64;
        let mut accepting = true;
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
                        tokio::spawn(refuse(incoming, opts.max_sessions));
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
    let mut session = ReceiverSession::new(session_cfg, ClockAnchor::system(), now());
    let mut out = match output.for_session(id).await {
        Ok(o) => o,
        Err(e) => {
            warn!(%e, "cannot open this session's output; its frames are discarded");
            SessionOutput::Discard
        }
    };

    let mut ctl: Option<ControlPipe> = None;
    let mut ctl_accepted = false;
    let mut write_failed = false;
    let start = now();
    let mut next_status = start + STATUS_INTERVAL;
    let mut last_bytes = 0u64;
    // Lives across iterations: re-arming a timer per datagram costs more than checking it.
    let mut armed = start + Duration::from_secs(3600);
    let sleep = tokio::time::sleep_until(armed.into());
    tokio::pin!(sleep);
    loop {
        let t = now();
        session.handle_timeout(t);
        while let Some(p) = session.poll_frame(t) {
            write_failed |= write_frame(&mut out, p.frame.data, write_failed).await;
        }
        // Until the sender opens the control stream, control output waits in the session,
        // whose backlog is bounded (periodic messages are dropped past it).
        if let Some(c) = &ctl {
            while let Some(b) = session.poll_control() {
                c.send(b).await;
            }
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
        if wake != armed {
            armed = wake;
            sleep.as_mut().reset(wake.into());
        }
        tokio::select! {
            biased;
            () = shutdown.wait() => {
                for p in session.abort(now()) {
                    write_failed |= write_frame(&mut out, p.frame.data, write_failed).await;
                }
            }
            d = conn.read_datagram() => match d {
                Ok(d) => session.handle_datagram(now(), d),
                Err(e) => {
                    for p in session.connection_lost(now(), &explain(&e)) {
                        write_failed |= write_frame(&mut out, p.frame.data, write_failed).await;
                    }
                }
            },
            bi = conn.accept_bi(), if !ctl_accepted => {
                ctl_accepted = true;
                match bi {
                    // The connection stays open until the sender closes it (or a timeout), so
                    // what is written needs no wait for the sender's reading.
                    Ok((send, recv)) => ctl = Some(ControlPipe::spawn(send, recv, false)),
                    Err(e) => {
                        for p in session.connection_lost(now(), &explain(&e)) {
                            write_failed |= write_frame(&mut out, p.frame.data, write_failed).await;
                        }
                    }
                }
            }
            chunk = async { match ctl.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } }, if ctl.as_ref().is_some_and(ControlPipe::is_open) => {
                if let Some(chunk) = chunk {
                    session.handle_control(now(), &chunk);
                }
            }
            () = &mut sleep => {}
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
    if let Err(e) = out.close().await {
        warn!(%e, "output close failed");
    }
    let mut report = session.report(now());
    report.peer = peer.to_string();
    report.quic = quic_report(&conn);
    report.bytes.wire = conn.stats().udp_tx.bytes;
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

/// Writes a frame; returns whether writing has failed (reported once).
async fn write_frame(out: &mut SessionOutput, frame: Bytes, failed_before: bool) -> bool {
    if failed_before {
        return true;
    }
    match out.write(frame).await {
        Ok(()) => false,
        Err(e) => {
            warn!(%e, "output failed; later frames are discarded");
            eprintln!("rtq-recv: output failed: {e}");
            true
        }
    }
}
