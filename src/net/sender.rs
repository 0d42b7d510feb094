//! The sender's real-time shell: connects, streams frames from a source through a
//! [`SenderSession`], and returns its report.

use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tracing::{Instrument, debug, info_span, warn};

use super::alarm::Alarm;
use super::frames::FrameWriter;
use super::io::{Input, Stream};
use super::tls::{Trust, client_config};
use super::transport::{
    TransportOptions, queue_allowance, stream_loss_detection, transport_config,
};
use super::{ControlPipe, STATUS_INTERVAL, Shutdown, explain, now, quic_report};
use crate::session::{End, FrameTransport, Outgoing, SenderConfig, SenderSession};
use crate::source::{SourceKind, SyntheticSource};
use crate::stats::LatencyHistogram;
use crate::stats::report::SessionReport;
use crate::units::format_rate;

/// Where the sender's frames come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A synthetic source with a seed.
    Synthetic(SourceKind, u64),
    /// A byte stream cut into frames of at most `chunk` bytes as it arrives.
    Input(Stream, usize),
}

/// Everything `rtq-send` needs.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `HOST:PORT` of the receiver.
    pub connect: String,
    /// Name to check the certificate against (default: the host in `connect`).
    pub server_name: Option<String>,
    /// How to check the certificate.
    pub trust: Trust,
    /// QUIC settings.
    pub transport: TransportOptions,
    /// Session settings.
    pub session: SenderConfig,
    /// The source.
    pub source: SourceSpec,
    /// Stop after this long (unbounded if `None`).
    pub duration: Option<Duration>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// What to do when the connection is lost mid-session.
    pub reconnect: Reconnect,
    /// Print a status line every second (to stderr).
    pub status: bool,
}

/// What the sender does when its connection is lost mid-session (the receiver restarted, the
/// path went dark): the session goes on over a new connection. Frames keep coming from the
/// source meanwhile and wait in the sender's queue, whose deadlines drop (and count) those that
/// wait too long. A receiver that ends the session itself (its goodbye, or a refusal) is not
/// reconnected to, nor is the first connection retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Reconnect at all (`--reconnect on|off`).
    pub enabled: bool,
    /// Longest wait between new attempts (`--reconnect-backoff`): the first comes at once, the
    /// next after 100 ms, doubling up to this. Up to [`MAX_ATTEMPTS`] attempts are in flight
    /// at once, each for up to the connect timeout, so that a path that comes back is found
    /// within one backoff whatever its round trip.
    pub max_backoff: Duration,
    /// Give up after this long without a connection (`--reconnect-timeout`).
    pub give_up: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            enabled: true,
            max_backoff: Duration::from_secs(1),
            give_up: Duration::from_secs(300),
        }
    }
}

impl Reconnect {
    /// The wait after `backoff` before the attempt after next: doubling, up to `max_backoff`.
    pub fn next_backoff(&self, backoff: Duration) -> Duration {
        (backoff * 2).min(self.max_backoff.max(FIRST_BACKOFF))
    }

    /// Whether a connection that ended with `e` is worth a new one: the path or the receiver
    /// failed (silence, a reset, a transport error), not the receiver's decision, and the
    /// session has frames to send.
    pub fn worth_it(&self, e: &quinn::ConnectionError, session: &SenderSession) -> bool {
        self.enabled && !session.is_closing() && !session.is_done() && super::is_failure(e)
    }
}

/// Why a session between connections stops dialling at `t`, if it does: the run's duration
/// ended, or nothing is left to send. (The reconnect timeout is the caller's.)
pub fn stop_dialling(
    session: &SenderSession,
    stop_at: Option<Instant>,
    t: Instant,
) -> Option<&'static str> {
    if stop_at.is_some_and(|s| t >= s) {
        Some("the run's duration ended before a new connection")
    } else if !session.is_running() && session.queued_frames() == 0 {
        Some("nothing left to send")
    } else {
        None
    }
}

/// Connection attempts in flight at once while reconnecting.
pub const MAX_ATTEMPTS: usize = 4;

/// The first wait between reconnection attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Why the sender could not run. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `--connect` could not be resolved.
    #[error("cannot resolve `{addr}`: {why} (use HOST:PORT, e.g. 127.0.0.1:4433)")]
    Resolve {
        /// What was given.
        addr: String,
        /// Why.
        why: String,
    },
    /// The local UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Bind(std::io::Error),
    /// The connection attempt failed.
    #[error("cannot connect to {addr}: {why}")]
    Connect {
        /// The receiver's address.
        addr: SocketAddr,
        /// Why, and what to do.
        why: String,
    },
    /// The receiver does not accept datagrams.
    #[error("the receiver at {0} does not accept QUIC datagrams (is it rtq-recv?)")]
    NoDatagrams(SocketAddr),
    /// The input could not be opened.
    #[error("{0}")]
    Input(std::io::Error),
    /// TLS set-up failed.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

/// Resolves `HOST:PORT`, preferring the first address.
pub fn resolve(addr: &str) -> Result<SocketAddr, SendError> {
    let mut it = addr.to_socket_addrs().map_err(|e| SendError::Resolve {
        addr: addr.into(),
        why: e.to_string(),
    })?;
    it.next().ok_or_else(|| SendError::Resolve {
        addr: addr.into(),
        why: "no address found".into(),
    })
}

fn host_of(addr: &str) -> String {
    // "[::1]:4433" → "::1"; "example.com:4433" → "example.com".
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// How often a sender holding datagrams back for the congestion window looks again.
const HOLD_BACK_POLL: Duration = Duration::from_millis(1);

/// Bytes the sender lets queue in its session before it stops reading input.
const INPUT_QUEUE_LIMIT: usize = 256 * 1024;

/// What a sender run produced.
#[derive(Debug)]
pub struct SendOutcome {
    /// The session report.
    pub report: SessionReport,
    /// Capture → last fragment handed to QUIC, per frame.
    pub send_delay: LatencyHistogram,
}

/// Connects and streams until the source ends, the duration passes, or `shutdown` is set.
pub async fn run(opts: SendOptions, shutdown: Shutdown) -> Result<SendOutcome, SendError> {
    let addr = resolve(&opts.connect)?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| SendError::Bind(std::io::Error::other("bad bind address")))?;
    let endpoint = super::transport::endpoint(
        bind,
        opts.transport.socket_buffer,
        quinn::EndpointConfig::default(),
        None,
    )
    .map_err(SendError::Bind)?;
    run_on(endpoint, addr, opts, shutdown).await
}

/// Like [`run`], from an endpoint the caller made (the simulator's, over a simulated socket),
/// to the receiver at `addr`.
pub async fn run_on(
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    opts: SendOptions,
    mut shutdown: Shutdown,
) -> Result<SendOutcome, SendError> {
    if opts.session.fec != crate::fec::FecMode::Off {
        // Before connecting: the first frames do not wait for it.
        crate::fec::warm_up();
    }
    let server_name = opts
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(&opts.connect));
    let mut client_cfg = client_config(opts.trust.clone())?;
    let mut transport = transport_config(&opts.transport);
    if opts.session.transport == FrameTransport::Stream {
        stream_loss_detection(&mut transport);
    }
    client_cfg.transport_config(Arc::new(transport));
    let connect_err = |why: String| SendError::Connect { addr, why };
    let connecting = endpoint
        .connect_with(client_cfg.clone(), addr, &server_name)
        .map_err(|e| connect_err(e.to_string()))?;
    let mut conn = tokio::select! {
        r = connecting => r.map_err(|e| connect_err(explain(&e)))?,
        () = tokio::time::sleep(opts.connect_timeout) => {
            return Err(connect_err(format!(
                "no answer within {} (is rtq-recv running there, and is UDP port {} open?)",
                crate::units::format_duration(opts.connect_timeout), addr.port()
            )));
        }
        () = shutdown.wait() => return Err(connect_err("interrupted".into())),
    };
    if conn.max_datagram_size().is_none() {
        return Err(SendError::NoDatagrams(addr));
    }
    let input = match &opts.source {
        SourceSpec::Input(stream, chunk) => Some(
            Input::open(stream, *chunk, opts.transport.socket_buffer)
                .await
                .map_err(SendError::Input)?,
        ),
        SourceSpec::Synthetic(..) => None,
    };
    let span = info_span!("sender", peer = %addr);
    let mut run = Run::new(&opts, input);
    // Bytes on the wire over every connection the session used.
    let mut wire = 0;
    loop {
        let ended = drive(&opts, &conn, &mut run, shutdown.clone())
            .instrument(span.clone())
            .await;
        wire += conn.stats().udp_tx.bytes;
        let Ended::LinkLost(why) = ended else {
            break;
        };
        let lost_at = now();
        run.session.link_lost(lost_at, &why);
        warn!(%why, "connection lost; reconnecting");
        if opts.status {
            eprintln!("rtq-send: connection lost ({why}); reconnecting");
        }
        let dial = Dial {
            endpoint: &endpoint,
            cfg: &client_cfg,
            addr,
            server_name: &server_name,
        };
        match reconnect(&opts, &dial, &mut run, &mut shutdown).await {
            Ok(c) => {
                conn = c;
                run.session.relinked(now());
                if opts.status {
                    eprintln!(
                        "rtq-send: reconnected after {:.1} s",
                        now().saturating_duration_since(lost_at).as_secs_f64()
                    );
                }
            }
            Err(give_up) => {
                run.session
                    .connection_lost(now(), &format!("{why}; {give_up}"));
                break;
            }
        }
    }
    let mut report = run.session.report(now());
    report.peer = addr.to_string();
    report.quic = quic_report(&conn);
    report.bytes.wire = wire;
    let send_delay = run.session.send_delay().clone();
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(SendOutcome { report, send_delay })
}

/// How to make a new connection to the receiver.
struct Dial<'a> {
    endpoint: &'a quinn::Endpoint,
    cfg: &'a quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &'a str,
}

/// Makes a new connection for the session after its connection was lost, feeding the session
/// from its source meanwhile. Attempts start at once, then after [`FIRST_BACKOFF`] doubling to
/// the configured maximum, several in flight; the first to complete wins. Gives up (with the
/// reason) at the reconnect timeout, at shutdown, or when the session has nothing left to send.
async fn reconnect(
    opts: &SendOptions,
    dial: &Dial<'_>,
    run: &mut Run,
    shutdown: &mut Shutdown,
) -> Result<quinn::Connection, String> {
    let start = now();
    let give_up_at = start + opts.reconnect.give_up;
    let mut backoff = FIRST_BACKOFF;
    let mut next_attempt = start;
    let mut attempts = tokio::task::JoinSet::new();
    let mut last_error = String::from("no attempt completed");
    loop {
        let t = now();
        run.pump_source(t);
        if let Some(why) = stop_dialling(&run.session, run.stop_at, t) {
            return Err(why.into());
        }
        if t >= give_up_at {
            return Err(format!(
                "no new connection within {} ({last_error})",
                crate::units::format_duration(opts.reconnect.give_up)
            ));
        }
        run.session.handle_timeout(t);
        if t >= next_attempt && attempts.len() < MAX_ATTEMPTS {
            match dial
                .endpoint
                .connect_with(dial.cfg.clone(), dial.addr, dial.server_name)
            {
                Ok(connecting) => {
                    let limit = opts.connect_timeout;
                    attempts.spawn(async move {
                        match tokio::time::timeout(limit, connecting).await {
                            Ok(r) => r.map_err(|e| explain(&e)),
                            Err(_) => Err("no answer".into()),
                        }
                    });
                }
                Err(e) => last_error = e.to_string(),
            }
            next_attempt = t + backoff;
            backoff = opts.reconnect.next_backoff(backoff);
        }
        let mut wake = [
            Some(next_attempt),
            Some(give_up_at),
            run.session.poll_timeout(),
            run.stop_at,
            run.synthetic.as_ref().map(SyntheticSource::next_due),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(give_up_at);
        if wake < t {
            wake = t;
        }
        let want_input = run.wants_input();
        tokio::select! {
            biased;
            () = shutdown.wait() => return Err("interrupted".into()),
            r = attempts.join_next(), if !attempts.is_empty() => match r {
                Some(Ok(Ok(conn))) if conn.max_datagram_size().is_some() => {
                    attempts.abort_all();
                    return Ok(conn);
                }
                Some(Ok(Ok(_))) => last_error = "the receiver takes no datagrams".into(),
                Some(Ok(Err(why))) => last_error = why,
                Some(Err(_)) | None => {}
            },
            f = async { match run.input.as_mut() { Some(i) => i.next().await, None => std::future::pending().await } }, if want_input => {
                run.on_input(f);
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

type PendingSend<'a> = Pin<Box<quinn::SendDatagram<'a>>>;

/// How often a sender with rate adaptation reads its congestion controller's pacing rate.
const PACING_READ_EVERY: Duration = Duration::from_millis(50);

/// What one connection's loop ended with.
enum Ended {
    /// The session ended (finished, shut down, refused, or its connection lost for good).
    Session,
    /// The connection was lost and the session goes on over a new one (`--reconnect`).
    LinkLost(String),
}

/// The session and what feeds it: they outlive the connections that carry them.
struct Run {
    session: SenderSession,
    synthetic: Option<SyntheticSource>,
    input: Option<Input>,
    stop_at: Option<Instant>,
    live_input: bool,
    status: Status,
}

impl Run {
    fn new(opts: &SendOptions, input: Option<Input>) -> Self {
        let start = now();
        Self {
            session: SenderSession::new(opts.session.clone(), super::system_anchor(), start),
            synthetic: match &opts.source {
                SourceSpec::Synthetic(kind, seed) => {
                    Some(SyntheticSource::new(*kind, *seed, start))
                }
                SourceSpec::Input(..) => None,
            },
            input,
            stop_at: opts.duration.map(|d| start + d),
            live_input: matches!(&opts.source, SourceSpec::Input(s, _) if s.is_live()),
            status: Status::new(start),
        }
    }

    fn pump_source(&mut self, t: Instant) {
        pump_source(&mut self.session, &mut self.synthetic, self.stop_at, t, now);
    }

    fn wants_input(&self) -> bool {
        wants_input(&self.session, self.input.is_some(), self.live_input)
    }

    fn on_input(&mut self, f: Option<std::io::Result<crate::source::SourceFrame>>) {
        on_input(&mut self.session, &mut self.input, f);
    }
}

/// Hands the synthetic source's frames due by `t` to the session, each captured at
/// `capture()` (the real-time shell reads the clock: making up a frame's bytes is not
/// transport delay; the simulator gives its virtual `now`).
pub fn pump_source(
    session: &mut SenderSession,
    synthetic: &mut Option<SyntheticSource>,
    stop_at: Option<Instant>,
    t: Instant,
    capture: impl Fn() -> Instant,
) {
    let Some(src) = synthetic.as_mut() else {
        return;
    };
    src.set_target_bitrate(session.target_rate_bps());
    while session.is_running() && src.next_due() <= t && stop_at.is_none_or(|s| src.next_due() < s)
    {
        match src.poll(t) {
            Some(mut f) => {
                f.capture = capture();
                let _ = session.push_frame(f.capture, f);
            }
            None => break,
        }
    }
}

/// Whether to read the input now. A file waits while the queue is long (the network paces
/// it); a live input (UDP) cannot wait: its frames meet the queue's limits and deadlines,
/// which count drops.
fn wants_input(session: &SenderSession, has_input: bool, live: bool) -> bool {
    has_input && session.is_running() && (live || session.queued_bytes() < INPUT_QUEUE_LIMIT)
}

/// What the input gave: a frame, an error, or its end.
fn on_input(
    session: &mut SenderSession,
    input: &mut Option<Input>,
    f: Option<std::io::Result<crate::source::SourceFrame>>,
) {
    match f {
        Some(Ok(frame)) => {
            let _ = session.push_frame(now(), frame);
        }
        Some(Err(e)) => {
            warn!(%e, "input failed; finishing");
            eprintln!("rtq-send: input error: {e}; finishing the session");
            *input = None;
            session.finish(now());
        }
        None => {
            *input = None;
            session.finish(now());
        }
    }
}

async fn drive(
    opts: &SendOptions,
    conn: &quinn::Connection,
    run: &mut Run,
    mut shutdown: Shutdown,
) -> Ended {
    let start = now();
    let Run {
        session,
        synthetic,
        input,
        stop_at,
        live_input,
        status,
    } = run;
    let stop_at = *stop_at;
    let live_input = *live_input;

    // The control stream: opened now (the hello goes first), served by two small tasks.
    let opened = tokio::select! {
        r = conn.open_bi() => r.map_err(|e| explain(&e)),
        () = tokio::time::sleep(opts.connect_timeout) => Err("the receiver grants no control stream (is it rtq-recv?)".into()),
        () = shutdown.wait() => Err("interrupted".into()),
    };
    let mut ctl = match opened {
        Ok((send, recv)) => Some(ControlPipe::spawn(send, recv, true)),
        Err(why) => {
            if let Some(e) = conn.close_reason()
                && opts.reconnect.worth_it(&e, session)
            {
                return Ended::LinkLost(explain(&e));
            }
            session.connection_lost(now(), &why);
            None
        }
    };

    // Futures that live across iterations: re-creating them per datagram would cost a lock or
    // a timer registration each time.
    let closed = conn.closed();
    tokio::pin!(closed);
    // Retransmission requests from the receiver (datagrams): one read waits across iterations,
    // renewed when it completes.
    let mut request = Box::pin(conn.read_datagram());
    // The loop's one wake-up, to the microsecond: a frame due from the source, a paced
    // datagram's release, a session timer (see `alarm` for why not tokio's timer).
    let mut alarm = Alarm::new(start + Duration::from_secs(3600));
    // A datagram QUIC could not take yet, and what the session said about it.
    let mut pending: Option<(PendingSend<'_>, Outgoing)> = None;
    let mut stopping = false;
    let mut datagrams_open = true;
    let mut next_pacing_read = start;
    // `--transport stream`: each frame on a stream of its own instead of datagrams.
    let mut frames =
        (session.transport() == FrameTransport::Stream).then(|| FrameWriter::new(conn.clone()));
    loop {
        let t = now();
        if let Some(w) = &frames {
            for _ in 0..w.take_resets() {
                session.stream_reset();
            }
        }
        if session.target_rate_bps().is_some() && t >= next_pacing_read {
            // A boxed clone of the controller: read it now and then, not per datagram.
            next_pacing_read = t + PACING_READ_EVERY;
            session.set_pacing_rate(conn.congestion_state().metrics().pacing_rate);
        }
        pump_source(session, synthetic, stop_at, t, now);
        if session.is_running() && stop_at.is_some_and(|s| t >= s) {
            session.finish(t);
        }
        session.handle_timeout(t);
        if let Some((_, out)) = pending.take_if(|(_, out)| out.deadline <= t) {
            // Not sent before its frame's deadline: it must not be sent at all.
            session.abandon(&out);
        }
        // The goodbye must not overtake a datagram still waiting for QUIC.
        let hold_control = pending.is_some() && session.is_closing();
        if let Some(c) = &ctl
            && !hold_control
            && c.has_room()
            && let Some(b) = session.poll_control()
        {
            // Never waits: a receiver that stops reading leaves the bytes in the session, whose
            // backlog is bounded.
            c.try_send(b);
        }
        // Hand QUIC no more than it can send within transport::QUEUE_BUDGET at its current rate (a window
        // per round trip): a datagram queued in QUIC cannot be dropped at its frame's deadline;
        // one waiting in the session can. QUIC's state is read only when there is something
        // to hand it, each value once: every read takes the connection's lock, which its
        // driver holds while it sends and receives.
        let mut held_back = false;
        if let Some(w) = frames.as_mut() {
            while w.can_take()
                && let Some(out) = session.poll_outgoing(t, crate::wire::stream::MAX_RECORD)
            {
                w.push(&out);
            }
            held_back = session.has_datagram() && !w.can_take();
        } else if pending.is_none() && session.has_datagram() {
            let quic = conn.stats();
            let window = queue_allowance(quic.path.cwnd, quic.path.rtt);
            let mut room = SendRoom::read(conn, opts.transport.datagram_send_buffer);
            // Read again only when QUIC refuses a datagram as too large.
            let mut max_size = conn.max_datagram_size().unwrap_or(0);
            while room.below(conn, window)
                && let Some(out) = session.poll_outgoing(t, max_size)
            {
                let len = out.data.len();
                if room.fits(len) {
                    // Room for it in QUIC's buffer (which only the driver's sending changes
                    // meanwhile, freeing room): `send_datagram` takes it without dropping an
                    // older one, and costs no future.
                    match conn.send_datagram(out.data.clone()) {
                        Ok(()) => room.sent(len),
                        Err(quinn::SendDatagramError::TooLarge) => {
                            // The path's datagram size shrank since we asked: the session
                            // re-cuts what is left of the frame at the new size.
                            debug!("datagram too large after an MTU change");
                            session.abandon(&out);
                            max_size = conn.max_datagram_size().unwrap_or(0);
                        }
                        Err(e) => {
                            debug!(%e, "send_datagram failed");
                            session.abandon(&out);
                            break;
                        }
                    }
                    continue;
                }
                // Queue it without letting quinn drop an older one: `send_datagram_wait` takes
                // it at once when there is room, and otherwise waits (polled below).
                let mut send = Box::pin(conn.send_datagram_wait(out.data.clone()));
                match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
                    Poll::Ready(Ok(())) => room.sent(len),
                    Poll::Ready(Err(quinn::SendDatagramError::TooLarge)) => {
                        debug!("datagram too large after an MTU change");
                        session.abandon(&out);
                        max_size = conn.max_datagram_size().unwrap_or(0);
                    }
                    Poll::Ready(Err(e)) => {
                        debug!(%e, "send_datagram failed");
                        session.abandon(&out);
                        break;
                    }
                    Poll::Pending => {
                        pending = Some((send, out));
                        break;
                    }
                }
            }
            held_back = pending.is_none() && session.has_datagram() && !room.below(conn, window);
            if room.handed > 0 {
                // Datagrams were handed over, waking the connection's driver into this worker's
                // next slot: let it put them on the wire now, before the rest of this
                // iteration (timers, status, the wait set up below).
                tokio::task::yield_now().await;
            }
        }
        if opts.status && t >= status.next {
            status.print(t, session, conn);
        }
        if session.is_done() {
            break;
        }
        let mut wake = [
            session.poll_timeout(),
            Some(status.next_if(opts.status)),
            stop_at.filter(|_| session.is_running()),
            pending.as_ref().map(|(_, out)| out.deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(src) = synthetic.as_ref()
            && session.is_running()
        {
            wake = Some(wake.map_or(src.next_due(), |w| w.min(src.next_due())));
        }
        if held_back {
            // Held back for the congestion window (or, with frame streams, for streams in
            // flight): QUIC signals no room until it is full, so look again shortly.
            wake = Some(wake.map_or(t + HOLD_BACK_POLL, |w| w.min(t + HOLD_BACK_POLL)));
        }
        alarm.reset(wake.unwrap_or_else(|| t + Duration::from_secs(3600)));
        let want_input = wants_input(session, input.is_some(), live_input);
        tokio::select! {
            biased;
            () = shutdown.wait(), if !stopping => {
                stopping = true;
                if let Some((_, out)) = pending.take() {
                    session.abandon(&out);
                }
                session.abort(now());
            }
            r = async { match pending.as_mut() { Some((p, _)) => p.await, None => std::future::pending().await } }, if pending.is_some() => {
                if let Some((_, out)) = pending.take()
                    && let Err(e) = r
                {
                    debug!(%e, "datagram not sent");
                    session.abandon(&out);
                }
            }
            chunk = async { match ctl.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } }, if ctl.as_ref().is_some_and(ControlPipe::is_open) => {
                if let Some(chunk) = chunk {
                    session.handle_control(now(), &chunk);
                }
            }
            f = async { match input.as_mut() { Some(i) => i.next().await, None => std::future::pending().await } }, if want_input => {
                on_input(session, input, f);
            }
            d = &mut request, if datagrams_open => match d {
                Ok(d) => {
                    request.set(conn.read_datagram());
                    session.handle_datagram(now(), d);
                }
                // The connection is closing: `closed` says why.
                Err(_) => datagrams_open = false,
            },
            e = &mut closed => {
                if opts.reconnect.worth_it(&e, session) {
                    // What QUIC still held for this connection is gone with it.
                    if let Some((_, out)) = pending.take() {
                        session.abandon(&out);
                    }
                    return Ended::LinkLost(explain(&e));
                }
                session.connection_lost(now(), &explain(&e));
            }
            () = alarm.wait() => {}
        }
    }
    if let Some((_, out)) = pending.take() {
        session.abandon(&out);
    }
    if let Some(w) = &frames {
        for _ in 0..w.take_resets() {
            session.stream_reset();
        }
    }
    if let Some(c) = ctl {
        // Our goodbye must be read before the close, or the close would discard it.
        c.finish(Duration::from_secs(1)).await;
    }
    let end = session.end().cloned().unwrap_or(End::Complete);
    let code = end.close_code();
    conn.close(
        quinn::VarInt::from_u32(code.code()),
        end.describe().as_bytes(),
    );
    Ended::Session
}

/// Room in QUIC's datagram send buffer, as the sender loop knows it without taking the
/// connection's lock per datagram: read once, then reduced by what the loop hands over (QUIC's
/// driver only frees room meanwhile, so the known room never exceeds the real one). Read again
/// when the known figure would hold the sender back.
struct SendRoom {
    /// The buffer's size (`TransportOptions::datagram_send_buffer`).
    size: usize,
    /// Bytes free for one more datagram's payload, at least.
    space: usize,
    /// Whether `space` was just read from QUIC.
    fresh: bool,
    /// Datagrams handed over since it was made.
    handed: usize,
}

/// QUIC's bookkeeping per queued datagram, over its payload, at most (quinn counts
/// `size_of::<Datagram>()`, 32 bytes on 64-bit targets).
const DATAGRAM_OVERHEAD: usize = 64;

impl SendRoom {
    fn read(conn: &quinn::Connection, size: usize) -> Self {
        Self {
            size,
            space: conn.datagram_send_buffer_space(),
            fresh: true,
            handed: 0,
        }
    }

    /// Whether a datagram of `len` bytes goes into the buffer without dropping another.
    fn fits(&self, len: usize) -> bool {
        len <= self.space
    }

    /// A datagram of `len` bytes was handed over.
    fn sent(&mut self, len: usize) {
        self.space = self.space.saturating_sub(len + DATAGRAM_OVERHEAD);
        self.fresh = false;
        self.handed += 1;
    }

    /// Whether QUIC holds less than `window` bytes (as the transport options count them:
    /// the buffer's size less its free room). When the known figure says no, QUIC is asked
    /// again, unless it was just asked.
    fn below(&mut self, conn: &quinn::Connection, window: usize) -> bool {
        if self.size.saturating_sub(self.space) < window {
            return true;
        }
        if !self.fresh {
            self.space = conn.datagram_send_buffer_space();
            self.fresh = true;
        }
        self.size.saturating_sub(self.space) < window
    }
}

/// Status line state.
struct Status {
    start: Instant,
    next: Instant,
    last_bytes: u64,
    last_at: Instant,
}

impl Status {
    fn new(start: Instant) -> Self {
        Self {
            start,
            next: start + STATUS_INTERVAL,
            last_bytes: 0,
            last_at: start,
        }
    }

    fn next_if(&self, on: bool) -> Instant {
        if on {
            self.next
        } else {
            self.start + Duration::from_secs(365 * 24 * 3600)
        }
    }

    fn print(&mut self, t: Instant, s: &SenderSession, conn: &quinn::Connection) {
        let st = s.stats();
        let dt = t
            .saturating_duration_since(self.last_at)
            .as_secs_f64()
            .max(1e-3);
        let rate = (st.bytes_datagrams - self.last_bytes) as f64 * 8.0 / dt;
        let rx = s.last_report().copied().unwrap_or_default();
        eprintln!(
            "[{:6.1}s] sent {} frames, {} dropped, {} queued | {} | rtt {:.2} ms | receiver: played {} late {} lost {}",
            t.saturating_duration_since(self.start).as_secs_f64(),
            st.frames_sent,
            st.dropped.total,
            s.queued_frames(),
            format_rate(rate),
            conn.rtt().as_secs_f64() * 1000.0,
            rx.frames_played,
            rx.frames_late,
            rx.frames_lost,
        );
        self.last_bytes = st.bytes_datagrams;
        self.last_at = t;
        while self.next <= t {
            self.next += STATUS_INTERVAL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(host_of("[::1]:4433"), "::1");
        assert_eq!(host_of("example.com:1"), "example.com");
    }

    #[test]
    fn unresolvable_addresses_say_how_to_write_one() {
        let e = resolve("no-port").unwrap_err().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }
}
