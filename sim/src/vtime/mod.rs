//! Virtual time: the whole run — two quinn-proto endpoints, the rtq sender and receiver
//! sessions, the source and both link paths — driven by one discrete-event loop that jumps
//! from deadline to deadline. Nothing sleeps and nothing reads the clock: a 60 s scenario takes
//! as long as its events take to compute, and the same scenario and seed give the same report,
//! byte for byte ([`determinism`] explains what that takes).
//!
//! The real QUIC stack runs (handshake, congestion control, pacing, loss detection, path-MTU
//! discovery); only the sockets and the clock are replaced. The two application drivers
//! (`SenderApp`, `ReceiverApp`) follow the real-time shells of `rtq::net` step for step: the
//! same session calls, the same limit on what QUIC may hold, the same closing handshake.
//!
//! The loop, at each instant `now`: apply due link-parameter changes; hand every packet the
//! paths release at `now` to its endpoint; let each connection handle its timers and events and
//! its application take a step; collect what the connections send into the paths; then jump to
//! the earliest deadline of all of them.

pub mod determinism;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, Event, ReadError,
    SendDatagramError, StreamEvent, StreamId, Transmit, WriteError,
};
use rtq::clock::ClockAnchor;
use rtq::net::frames::{MAX_FRAME_STREAMS, frame_priority};
use rtq::net::receiver::Receiver;
use rtq::net::sender::{FIRST_BACKOFF, MAX_ATTEMPTS, Reconnect, pump_source, stop_dialling};
use rtq::net::tls::{Trust, client_config};
use rtq::net::transport::{queue_allowance, stream_loss_detection, transport_config};
use rtq::session::{
    End, Footprint, FrameTransport, Outgoing, ReceiverConfig, ReceiverSession, SenderConfig,
    SenderSession,
};
use rtq::source::SyntheticSource;
use rtq::stats::report::SessionReport;
use rtq::wire::stream::{FrameCollector, MAX_RECORD, RECORD_PREFIX, RecordDecoder};

use crate::config::{Direction, LinkConfig};
use crate::link::Path;
use crate::run::{LinkReport, RunOutcome, RunReport, TimelineEntry};
use crate::scenario::Scenario;
use crate::socket::{RECEIVER_ADDR, SENDER_ADDR};

/// Wall-clock time the virtual clock starts at, µs since 1970 (2026-01-01T00:00:00Z): what the
/// sessions stamp on the wire, the same every run.
const VIRTUAL_UNIX_START_US: u64 = 1_767_225_600_000_000;

/// How long the sender waits for the handshake (as `rtq::net::sender`'s connect timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the sender waits for its control stream to be read before closing (as the
/// real-time shell's `ControlPipe::finish`).
const SENDER_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the receiver waits for the sender to close after its goodbye (as the real-time
/// shell's `CLOSE_WAIT`).
const RECEIVER_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Handshakes a server lets run at once (the oldest goes first).
const MAX_PENDING_ACCEPTS: usize = 16;
/// How long each reconnection attempt lasts (rtq-send's default `--connect-timeout`).
const RECONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest control-stream chunk read at once.
const CONTROL_CHUNK: usize = 64 * 1024;
/// Virtual time a run may take beyond the scenario's duration before it is called stuck.
const OVERTIME: Duration = Duration::from_secs(120);
/// Steps at one instant after which the loop is called stuck (a component that keeps asking
/// to be woken now without doing anything).
const MAX_STEPS_PER_INSTANT: u32 = 100_000;
/// How often (virtual time) `progress` is called.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Resolution of the timers that wake the QUIC connections. quinn's connection drivers run on
/// tokio's timers, whose wheel fires at whole milliseconds (a deadline is rounded up to the
/// next tick), so QUIC's pacing delay of 0.3 ms or a loss-detection timer takes effect at the
/// next millisecond. Modelling this is what makes virtual time agree with `--realtime`:
/// without it, QUIC paces packets exactly, which no deployed quinn does. The two applications'
/// wake-ups (frames due from the source, rtq's own pacing, playout) are not rounded: rtq's
/// shells wake on `rtq::net::alarm`, to the microsecond. Nor are packet arrivals (a socket
/// wakes its reader at once) or the link's own events (the links are the simulated network,
/// not rtq).
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// Runs `scenario` in virtual time. `progress(virtual elapsed)` is called now and then;
/// `stop()` is polled as often, and when it returns true both sessions end early, cleanly
/// (as on Ctrl-C in real time).
pub fn run(
    scenario: &Scenario,
    mut progress: impl FnMut(Duration),
    stop: impl Fn() -> bool,
) -> anyhow::Result<RunOutcome> {
    let mut world = World::new(scenario)?;
    let limit = world.epoch + scenario.duration + OVERTIME;
    let mut next_progress = world.epoch;
    let mut same_instant = 0u32;
    let mut stopping = false;
    loop {
        world.step()?;
        if world.finished() {
            break;
        }
        if world.now >= next_progress {
            progress(world.now - world.epoch);
            next_progress = world.now + PROGRESS_EVERY;
            if !stopping && stop() {
                stopping = true;
                world.abort();
                continue;
            }
        }
        let next = world.next_wake().unwrap_or(limit).max(world.now);
        if next > limit {
            anyhow::bail!(
                "the run did not end within {} s of virtual time past its duration (sender: {}, receiver: {})",
                OVERTIME.as_secs(),
                world.sender.describe(),
                world.receiver.describe()
            );
        }
        if next == world.now {
            same_instant += 1;
            if same_instant > MAX_STEPS_PER_INSTANT {
                anyhow::bail!(
                    "virtual time stalled at {:?}: something keeps asking to run at once (sender: {}, receiver: {})",
                    world.now - world.epoch,
                    world.sender.describe(),
                    world.receiver.describe()
                );
            }
        } else {
            same_instant = 0;
            world.now = next;
        }
    }
    progress(world.now - world.epoch);
    world.outcome(scenario)
}

/// One QUIC endpoint and its (at most one) connection.
struct Quic {
    endpoint: Endpoint,
    addr: SocketAddr,
    conn: Option<(ConnectionHandle, quinn_proto::Connection)>,
    /// Client: reconnection attempts in flight (as `rtq::net::sender::reconnect` keeps up to
    /// `MAX_ATTEMPTS`), with when each gives up; the first to complete its handshake becomes
    /// `conn` and the others are dropped. Server: connections whose handshake is under way;
    /// one that completes replaces `conn`.
    attempts: Vec<(ConnectionHandle, quinn_proto::Connection, Instant)>,
    is_client: bool,
    buf: Vec<u8>,
}

impl Quic {
    fn new(endpoint: Endpoint, addr: SocketAddr, is_client: bool) -> Self {
        Self {
            endpoint,
            addr,
            conn: None,
            attempts: Vec::new(),
            is_client,
            buf: Vec::new(),
        }
    }

    /// Starts a reconnection attempt that gives up at `until`; the oldest goes when
    /// [`MAX_ATTEMPTS`] are in flight.
    fn attempt(&mut self, c: (ConnectionHandle, quinn_proto::Connection), until: Instant) {
        if self.attempts.len() >= MAX_ATTEMPTS {
            self.attempts.remove(0);
        }
        self.attempts.push((c.0, c.1, until));
    }

    /// Runs the attempts' timers and sends what they have; the first whose handshake completes
    /// becomes the connection (and its application hears `Connected` in [`drive`]).
    fn drive_attempts(&mut self, now: Instant, out: &mut Path) {
        self.attempts
            .retain(|(_, c, until)| now < *until && !c.is_drained());
        let mut won = None;
        for (i, (ch, conn, _)) in self.attempts.iter_mut().enumerate() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            exchange(&mut self.endpoint, *ch, conn, &mut self.buf, now, out);
            if won.is_none() && !conn.is_handshaking() && !conn.is_closed() {
                won = Some(i);
            }
        }
        if let Some(i) = won {
            let (ch, conn, _) = self.attempts.swap_remove(i);
            if self.is_client {
                self.attempts.clear();
            }
            // Its `Connected` event is still queued: the application takes it in `drive`. A
            // connection it replaces (the server's, from before the sender reconnected) goes.
            self.conn = Some((ch, conn));
        }
    }

    /// Takes a datagram from the link.
    fn receive(&mut self, now: Instant, from: SocketAddr, data: Vec<u8>, out: &mut Path) {
        self.buf.clear();
        let event = self.endpoint.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(&data[..]),
            &mut self.buf,
        );
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                // A new connection while there is one waits beside it until its handshake
                // completes (the sender dialled again after losing it; attempts it gave up
                // never complete and time out), then replaces it: rtq-recv would serve both,
                // the run follows one session at a time, and the receiver's application
                // starts a new one on `Connected`.
                let mut buf = Vec::new();
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok(c) if self.conn.is_none() => self.conn = Some(c),
                    Ok(c) => {
                        self.attempts.push((c.0, c.1, now + CONNECT_TIMEOUT));
                        if self.attempts.len() > MAX_PENDING_ACCEPTS {
                            self.attempts.remove(0);
                        }
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            push_transmit(out, now, &t, &buf);
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some((h, conn)) = self.conn.as_mut()
                    && *h == ch
                {
                    conn.handle_event(ev);
                } else if let Some((_, conn, _)) =
                    self.attempts.iter_mut().find(|(h, _, _)| *h == ch)
                {
                    conn.handle_event(ev);
                }
            }
            Some(DatagramEvent::Response(t)) => {
                let buf = std::mem::take(&mut self.buf);
                push_transmit(out, now, &t, &buf);
                self.buf = buf;
            }
            None => {}
        }
    }

    /// Lets the connection handle its timers and events, its application take a step, and
    /// sends what it has into `out`.
    fn drive(&mut self, now: Instant, app: &mut impl App, out: &mut Path) {
        let Some((ch, conn)) = self.conn.as_mut() else {
            return;
        };
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        while let Some(ev) = conn.poll() {
            app.on_event(now, conn, ev);
        }
        app.step(now, conn);
        exchange(&mut self.endpoint, *ch, conn, &mut self.buf, now, out);
        if conn.is_drained() {
            self.conn = None;
        }
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let attempts = self
            .attempts
            .iter_mut()
            .flat_map(|(_, c, until)| [c.poll_timeout(), Some(*until)])
            .flatten();
        self.conn
            .as_mut()
            .and_then(|(_, c)| c.poll_timeout())
            .into_iter()
            .chain(attempts)
            .min()
    }
}

/// Hands a transmit's datagrams (one, or several of `segment_size`) to the link.
/// Trades events between a connection and its endpoint and sends what the connection has into
/// `out`, until neither has anything more.
fn exchange(
    endpoint: &mut Endpoint,
    ch: ConnectionHandle,
    conn: &mut quinn_proto::Connection,
    buf: &mut Vec<u8>,
    now: Instant,
    out: &mut Path,
) {
    loop {
        let mut busy = false;
        while let Some(ev) = conn.poll_endpoint_events() {
            busy = true;
            if let Some(back) = endpoint.handle_event(ch, ev) {
                conn.handle_event(back);
            }
        }
        buf.clear();
        while let Some(t) = conn.poll_transmit(now, 1, buf) {
            busy = true;
            push_transmit(out, now, &t, buf);
            buf.clear();
        }
        if !busy {
            break;
        }
    }
}

fn push_transmit(out: &mut Path, now: Instant, t: &Transmit, buf: &[u8]) {
    let data = &buf[..t.size.min(buf.len())];
    match t.segment_size {
        Some(seg) if seg > 0 => {
            for d in data.chunks(seg) {
                out.push(now, d.to_vec());
            }
        }
        _ => out.push(now, data.to_vec()),
    }
}

/// What the event loop asks of an application driver.
trait App {
    /// The connection reported `ev`.
    fn on_event(&mut self, now: Instant, conn: &mut quinn_proto::Connection, ev: Event);
    /// Time to do whatever is due.
    fn step(&mut self, now: Instant, conn: &mut quinn_proto::Connection);
}

/// The simulated world.
struct World {
    epoch: Instant,
    now: Instant,
    client: Quic,
    server: Quic,
    /// Sender → receiver.
    forward: Path,
    /// Receiver → sender.
    reverse: Path,
    forward_steps: VecDeque<(Instant, LinkConfig)>,
    reverse_steps: VecDeque<(Instant, LinkConfig)>,
    sender: SenderApp,
    receiver: ReceiverApp,
    timeline: Timeline,
    /// For new connections when the sender reconnects.
    client_cfg: quinn_proto::ClientConfig,
}

/// Counts taken each simulated second for `report.json`'s `timeline`.
struct Timeline {
    epoch: Instant,
    /// Whole seconds closed so far.
    seconds: u64,
    /// Cumulative (sent, played, late, lost) when the last second closed.
    last: [u64; 4],
    /// The receiver's end-to-end histogram when the last second closed.
    last_e2e: rtq::stats::LatencyHistogram,
    /// The most both sessions held at once in the second in progress.
    peak: Footprint,
    entries: Vec<TimelineEntry>,
}

/// What the sender's and the receiver's sessions hold now.
fn footprint((sender, receiver): (&SenderApp, &ReceiverApp)) -> Footprint {
    let s = sender.session.as_ref().map(SenderSession::footprint);
    let r = receiver.session.as_ref().map(ReceiverSession::footprint);
    s.unwrap_or_default() + r.unwrap_or_default()
}

impl Timeline {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            seconds: 0,
            last: [0; 4],
            last_e2e: Default::default(),
            peak: Footprint::default(),
            entries: Vec::new(),
        }
    }

    /// Closes every second that ended at or before `now`, with the counts as they are before
    /// anything due at `now` is handled (a second with no events adds zeros).
    fn sample(&mut self, now: Instant, world: (&SenderApp, &ReceiverApp)) {
        while self.epoch + Duration::from_secs(self.seconds + 1) <= now {
            self.close(world);
        }
        let f = footprint(world);
        self.peak.bytes = self.peak.bytes.max(f.bytes);
        self.peak.entries = self.peak.entries.max(f.entries);
    }

    /// Closes the second in progress (the last, partial one at the end of a run).
    fn close(&mut self, (sender, receiver): (&SenderApp, &ReceiverApp)) {
        let sent = sender.session.as_ref().map_or(0, |s| s.stats().frames_sent);
        let (counts, e2e) = match receiver.totals() {
            Some(([played, late, lost], e2e)) => ([sent, played, late, lost], Some(e2e)),
            None => ([sent, self.last[1], self.last[2], self.last[3]], None),
        };
        let window = e2e
            .as_ref()
            .map(|h| h.since(&self.last_e2e))
            .unwrap_or_default();
        let quantile = |q| (!window.is_empty()).then(|| window.quantile(q));
        // A frame given up as lost that completes after all is counted late instead: the
        // seconds before lose that frame again (from the latest on), so that every column
        // adds up to the session's totals at any time.
        for (i, (&was, &now)) in self.last.iter().zip(&counts).enumerate().skip(1) {
            let mut excess = was.saturating_sub(now);
            for e in self.entries.iter_mut().rev() {
                if excess == 0 {
                    break;
                }
                let v = match i {
                    1 => &mut e.played,
                    2 => &mut e.late,
                    _ => &mut e.lost,
                };
                let take = (*v).min(excess);
                *v -= take;
                excess -= take;
            }
        }
        let d = |i: usize| counts[i].saturating_sub(self.last[i]);
        self.entries.push(TimelineEntry {
            t_s: self.seconds,
            sent: d(0),
            played: d(1),
            late: d(2),
            lost: d(3),
            e2e_p50_us: quantile(0.5),
            e2e_p99_us: quantile(0.99),
            held_bytes: self.peak.bytes as u64,
            held_entries: self.peak.entries as u64,
        });
        self.peak = footprint((sender, receiver));
        self.last = counts;
        if let Some(h) = e2e {
            self.last_e2e = h;
        }
        self.seconds += 1;
    }
}

impl World {
    fn new(scenario: &Scenario) -> anyhow::Result<Self> {
        // Any instant will do: only differences between instants matter, and the sessions
        // map them to wall-clock time through a fixed anchor.
        let epoch = crate::realtime::now();
        let seed = scenario.seed;
        let (fs, rs) = scenario.path_seeds();
        let anchor = ClockAnchor::new(epoch, VIRTUAL_UNIX_START_US);
        let transport = crate::run::transport_options(scenario);
        let ropts = crate::run::receiver_options(scenario);
        let identity = determinism::fixed_identity()?;
        let fingerprint = identity
            .fingerprint()
            .ok_or_else(|| anyhow::anyhow!("the fixed identity has no certificate"))?;
        let mut server_cfg = Receiver::server_config(&ropts, identity)?;
        determinism::seed_server(&mut server_cfg, seed);
        let server = Endpoint::new(
            Arc::new(determinism::endpoint_config(seed, true)),
            Some(Arc::new(server_cfg)),
            true,
            None,
        );

        let mut client_cfg = client_config(Trust::Pin(fingerprint))?;
        let mut client_transport = transport_config(&transport);
        if scenario.transport == FrameTransport::Stream {
            stream_loss_detection(&mut client_transport);
        }
        client_cfg.transport_config(Arc::new(client_transport));
        determinism::seed_client(&mut client_cfg, seed);
        let mut client = Quic::new(
            Endpoint::new(
                Arc::new(determinism::endpoint_config(seed, false)),
                None,
                true,
                None,
            ),
            SENDER_ADDR,
            true,
        );
        let conn = client
            .endpoint
            .connect(epoch, client_cfg.clone(), RECEIVER_ADDR, "localhost")
            .map_err(|e| anyhow::anyhow!("cannot start the QUIC handshake: {e}"))?;
        client.conn = Some(conn);

        let sender = SenderApp::new(
            crate::run::sender_config(scenario),
            scenario,
            anchor,
            transport.datagram_send_buffer,
            epoch,
        );
        let receiver = ReceiverApp::new(ropts.session, anchor);
        Ok(Self {
            epoch,
            now: epoch,
            client,
            server: Quic::new(server, RECEIVER_ADDR, false),
            forward: scenario.forward.build(fs),
            reverse: scenario.reverse.build(rs),
            forward_steps: scenario.steps(Direction::Forward, epoch).into(),
            reverse_steps: scenario.steps(Direction::Reverse, epoch).into(),
            sender,
            receiver,
            timeline: Timeline::new(epoch),
            client_cfg,
        })
    }

    /// Everything due at `now`.
    fn step(&mut self) -> anyhow::Result<()> {
        let now = self.now;
        self.timeline.sample(now, (&self.sender, &self.receiver));
        for (steps, path) in [
            (&mut self.forward_steps, &mut self.forward),
            (&mut self.reverse_steps, &mut self.reverse),
        ] {
            while steps.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((at, cfg)) = steps.pop_front() {
                    path.advance(at);
                    cfg.apply(path);
                }
            }
        }
        while let Some((_, data)) = self.forward.poll(now) {
            self.server
                .receive(now, self.client.addr, data, &mut self.reverse);
        }
        while let Some((_, data)) = self.reverse.poll(now) {
            self.client
                .receive(now, self.server.addr, data, &mut self.forward);
        }
        // A sender whose connection was lost dials again (as rtq::net::sender::reconnect): a
        // new attempt at each backoff step, several in flight, each for the connect timeout.
        if self.sender.attempt_due(now) && self.client.conn.is_none() {
            match self.client.endpoint.connect(
                now,
                self.client_cfg.clone(),
                RECEIVER_ADDR,
                "localhost",
            ) {
                Ok(c) => self.client.attempt(c, now + RECONNECT_ATTEMPT_TIMEOUT),
                Err(e) => self.sender.attempt_failed(&e.to_string()),
            }
        }
        self.client.drive_attempts(now, &mut self.forward);
        self.server.drive_attempts(now, &mut self.reverse);
        self.client.drive(now, &mut self.sender, &mut self.forward);
        self.server
            .drive(now, &mut self.receiver, &mut self.reverse);
        self.sender.pump(now);
        if self.client.conn.is_none() {
            self.sender.connection_gone(now);
        }
        if self.server.conn.is_none() {
            self.receiver.connection_gone(now);
        }
        if let Some(why) = self.sender.failed.take() {
            anyhow::bail!("{why}");
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.sender.report.is_some() && (self.receiver.report.is_some() || !self.receiver.seen)
    }

    fn abort(&mut self) {
        let now = self.now;
        self.sender.abort(now);
        self.receiver.abort(now);
    }

    fn next_wake(&mut self) -> Option<Instant> {
        let quic = [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .map(|t| tick_up(self.epoch, t));
        [
            self.sender.wake(),
            self.receiver.wake(),
            self.forward.poll_timeout(),
            self.reverse.poll_timeout(),
            self.forward_steps.front().map(|(at, _)| *at),
            self.reverse_steps.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .chain(quic)
        .min()
    }

    fn outcome(mut self, scenario: &Scenario) -> anyhow::Result<RunOutcome> {
        if self.timeline.epoch + Duration::from_secs(self.timeline.seconds) < self.now {
            self.timeline.close((&self.sender, &self.receiver));
        }
        let Some(sent) = self.sender.report else {
            anyhow::bail!("the sender did not finish");
        };
        let (Some(mut received), Some(mut delays)) = (self.receiver.report, self.receiver.delays)
        else {
            anyhow::bail!(
                "the receiver saw no session (the handshake never completed through this link)"
            );
        };
        let receiver_sessions = 1 + self.receiver.earlier.len() as u64;
        for (r, d) in &self.receiver.earlier {
            absorb(&mut received, r);
            delays.network.merge(&d.network);
            delays.jitter_buffer.merge(&d.jitter_buffer);
            delays.end_to_end.merge(&d.end_to_end);
        }
        if receiver_sessions > 1 {
            received.latency_us = delays.summaries();
        }
        Ok(RunOutcome {
            report: RunReport {
                scenario: scenario.clone(),
                seed: scenario.seed,
                clock: "virtual",
                sender: sent,
                receiver: received,
                link: LinkReport {
                    forward: self.forward.report(),
                    reverse: self.reverse.report(),
                },
                timeline: self.timeline.entries,
                receiver_sessions,
            },
            delays,
            send_delay: self.sender.send_delay,
        })
    }
}

/// Adds an earlier receiver session's counts to `into` (the run's receiver report covers every
/// connection the sender made).
fn absorb(into: &mut SessionReport, earlier: &SessionReport) {
    let (f, e) = (&mut into.frames, &earlier.frames);
    f.sent += e.sent;
    f.transmitted += e.transmitted;
    f.dropped_by_sender.total += e.dropped_by_sender.total;
    f.received += e.received;
    f.complete += e.complete;
    f.played += e.played;
    f.late += e.late;
    f.lost += e.lost;
    f.keyframes += e.keyframes;
    f.output_dropped += e.output_dropped;
    let (b, e) = (&mut into.bytes, &earlier.bytes);
    b.payload += e.payload;
    b.compressed += e.compressed;
    b.wire += e.wire;
    b.datagrams += e.datagrams;
    into.datagrams.received += earlier.datagrams.received;
    into.duration_s += earlier.duration_s;
}

/// `t` rounded up to the next [`TIMER_TICK`] after `epoch`, as a tokio timer fires.
fn tick_up(epoch: Instant, t: Instant) -> Instant {
    let tick = TIMER_TICK.as_nanos();
    let since = t.saturating_duration_since(epoch).as_nanos();
    let ticks = since.div_ceil(tick);
    let rounded = u64::try_from(ticks * tick).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(rounded)
}

/// Writes what the session has for the control stream, as far as the stream takes it; what it
/// does not take waits in `held` (the session's own backlog is bounded).
fn write_control(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    held: &mut Option<Bytes>,
    mut next: impl FnMut() -> Option<Bytes>,
) {
    loop {
        if held.is_none() {
            *held = next();
        }
        let Some(b) = held.as_mut() else {
            return;
        };
        match conn.send_stream(id).write(b) {
            Ok(n) => {
                b.advance(n);
                if !b.is_empty() {
                    return;
                }
                *held = None;
            }
            Err(WriteError::Blocked) => return,
            Err(_) => {
                // Stopped or closed: nothing more can be written.
                *held = None;
                return;
            }
        }
    }
}

/// Reads what has arrived on the control stream into `take`; returns whether the peer has
/// finished the stream.
fn read_control(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    mut take: impl FnMut(&[u8]),
) -> bool {
    let mut recv = conn.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return true;
    };
    let mut ended = false;
    loop {
        match chunks.next(CONTROL_CHUNK) {
            Ok(Some(c)) => take(&c.bytes),
            Ok(None) => {
                ended = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(_)) => {
                ended = true;
                break;
            }
        }
    }
    // Whether flow-control credit should be sent: the loop polls for transmits anyway.
    let _ = chunks.finalize();
    ended
}

fn explain(e: &ConnectionError) -> String {
    rtq::net::explain(e)
}

fn close(now: Instant, conn: &mut quinn_proto::Connection, end: &End) {
    conn.close(
        now,
        quinn_proto::VarInt::from_u32(end.close_code().code()),
        Bytes::copy_from_slice(end.describe().as_bytes()),
    );
}

/// Completes a session's report with what the shell knows: the peer and, when the connection
/// was still there to ask, its QUIC figures and the bytes it put on the wire.
fn complete_report(
    r: &mut SessionReport,
    peer: SocketAddr,
    quic: Option<(rtq::stats::report::QuicReport, u64)>,
) {
    r.peer = peer.to_string();
    if let Some((q, wire)) = quic {
        r.quic = q;
        r.bytes.wire = wire;
    }
}

/// The QUIC section of a report, and the bytes sent on the wire.
fn quic_report(conn: &mut quinn_proto::Connection) -> (rtq::stats::report::QuicReport, u64) {
    let stats = conn.stats();
    let max = conn.datagrams().max_size();
    (rtq::net::quic_report_of(&stats, max), stats.udp_tx.bytes)
}

/// A frame on its own stream (`--transport stream`).
struct FrameStream {
    id: StreamId,
    /// What QUIC has not taken yet.
    held: Bytes,
    deadline: Instant,
}

/// The sender's frame streams, as `rtq::net::frames::FrameWriter` keeps them: at most
/// [`MAX_FRAME_STREAMS`] frames in flight (opened, or waiting for the receiver to grant a
/// stream), each reset at its deadline unless the receiver acknowledged all of it.
#[derive(Default)]
struct FrameStreams {
    /// The frame whose fragments are being collected.
    collecting: FrameCollector,
    /// Whole frames waiting for a stream.
    waiting: VecDeque<(u64, Bytes, Instant)>,
    open: Vec<FrameStream>,
}

impl FrameStreams {
    fn can_take(&self) -> bool {
        self.collecting.is_collecting()
            || self.open.len() + self.waiting.len() < MAX_FRAME_STREAMS as usize
    }

    fn push(&mut self, out: &Outgoing) {
        let Some(seq) = out.frame else {
            return;
        };
        if let Some(stream) = self.collecting.push(seq, &out.data, out.last_of_frame) {
            self.waiting.push_back((seq, stream, out.deadline));
        }
    }

    /// Opens streams for waiting frames and writes what QUIC takes.
    fn write(&mut self, conn: &mut quinn_proto::Connection) {
        while !self.waiting.is_empty() {
            let Some(id) = conn.streams().open(Dir::Uni) else {
                break;
            };
            if let Some((seq, data, deadline)) = self.waiting.pop_front() {
                let _ = conn.send_stream(id).set_priority(frame_priority(seq));
                self.open.push(FrameStream {
                    id,
                    held: data,
                    deadline,
                });
            }
        }
        for f in self.open.iter_mut().filter(|f| !f.held.is_empty()) {
            let mut send = conn.send_stream(f.id);
            match send.write(&f.held) {
                Ok(n) => {
                    f.held.advance(n);
                    if f.held.is_empty() {
                        let _ = send.finish();
                    }
                }
                Err(WriteError::Blocked) => {}
                Err(_) => f.held = Bytes::new(),
            }
        }
    }

    /// Resets the streams (and drops the waiting frames) whose deadline has passed; returns
    /// how many.
    fn expire(&mut self, now: Instant, conn: &mut quinn_proto::Connection) -> u64 {
        let mut n = 0;
        while self.waiting.front().is_some_and(|(_, _, d)| *d <= now) {
            self.waiting.pop_front();
            n += 1;
        }
        self.open.retain(|f| {
            if f.deadline > now {
                return true;
            }
            // Fails when the stream is already gone (acknowledged in full): not a reset.
            if conn
                .send_stream(f.id)
                .reset(quinn_proto::VarInt::from_u32(0))
                .is_ok()
            {
                n += 1;
            }
            false
        });
        n
    }

    /// The receiver acknowledged all of stream `id` (or stopped it).
    fn acknowledged(&mut self, id: StreamId) {
        self.open.retain(|f| f.id != id);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.open
            .iter()
            .map(|f| f.deadline)
            .chain(self.waiting.front().map(|(_, _, d)| *d))
            .min()
    }
}

/// The sender's side: rtq-send's shell (`rtq::net::sender`), over quinn-proto.
struct SenderApp {
    cfg: SenderConfig,
    kind: rtq::source::SourceKind,
    seed: u64,
    duration: Duration,
    anchor: ClockAnchor,
    datagram_send_buffer: usize,
    connect_by: Instant,
    session: Option<SenderSession>,
    source: Option<SyntheticSource>,
    stop_at: Option<Instant>,
    ctl: Option<StreamId>,
    ctl_held: Option<Bytes>,
    ctl_acked: bool,
    /// A datagram QUIC could not take yet (its buffer was full).
    pending: Option<Outgoing>,
    /// `--transport stream`: frames on their own streams.
    frames: FrameStreams,
    /// When the session is done: close the connection by then at the latest.
    close_by: Option<Instant>,
    closed: bool,
    /// Set when the run cannot go on (the handshake failed).
    failed: Option<String>,
    report: Option<SessionReport>,
    send_delay: rtq::stats::LatencyHistogram,
    /// What to do when the connection is lost (rtq-send's defaults).
    reconnect: Reconnect,
    /// Set while the connection is lost and the sender dials again.
    down: Option<Down>,
    /// Bytes on the wire of the connections before the current one.
    wire_before: u64,
}

/// A sender between connections (as `rtq::net::sender::reconnect`).
#[derive(Debug, Clone)]
struct Down {
    since: Instant,
    why: String,
    next_attempt: Instant,
    backoff: Duration,
}

impl SenderApp {
    fn new(
        cfg: SenderConfig,
        scenario: &Scenario,
        anchor: ClockAnchor,
        datagram_send_buffer: usize,
        epoch: Instant,
    ) -> Self {
        Self {
            cfg,
            kind: scenario.source,
            seed: scenario.seed,
            duration: scenario.duration,
            anchor,
            datagram_send_buffer,
            connect_by: epoch + CONNECT_TIMEOUT,
            session: None,
            source: None,
            stop_at: None,
            ctl: None,
            ctl_held: None,
            ctl_acked: false,
            pending: None,
            frames: FrameStreams::default(),
            close_by: None,
            closed: false,
            failed: None,
            report: None,
            send_delay: rtq::stats::LatencyHistogram::default(),
            reconnect: Reconnect::default(),
            down: None,
            wire_before: 0,
        }
    }

    /// Whether an attempt is due now; if so, the next one is scheduled (an attempt that has
    /// heard back is left to finish instead of being replaced).
    fn attempt_due(&mut self, now: Instant) -> bool {
        match self.down.as_mut() {
            Some(d) if now >= d.next_attempt && self.report.is_none() => {
                d.next_attempt = now + d.backoff;
                d.backoff = self.reconnect.next_backoff(d.backoff);
                true
            }
            _ => false,
        }
    }

    fn attempt_failed(&mut self, why: &str) {
        if let Some(d) = self.down.as_mut() {
            d.why = why.to_string();
        }
    }

    /// Between connections: frames keep coming and the session's timers run (as the
    /// real-time shell does while it dials).
    fn pump(&mut self, now: Instant) {
        if self.down.is_none() {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        pump_source(session, &mut self.source, self.stop_at, now, || now);
        session.handle_timeout(now);
    }

    /// The connection failed and the session goes on over a new one.
    fn link_lost(&mut self, now: Instant, conn: &mut quinn_proto::Connection, why: String) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if let Some(out) = self.pending.take() {
            s.abandon(&out);
        }
        s.link_lost(now, &why);
        self.wire_before += conn.stats().udp_tx.bytes;
        self.ctl = None;
        self.ctl_held = None;
        self.ctl_acked = false;
        self.frames = FrameStreams::default();
        self.close_by = None;
        self.closed = false;
        self.down = Some(Down {
            since: now,
            why,
            next_attempt: now,
            backoff: FIRST_BACKOFF,
        });
    }

    fn describe(&self) -> String {
        match (&self.session, &self.report) {
            (_, Some(_)) => "finished".into(),
            (None, None) => "connecting".into(),
            (Some(_), None) if self.down.is_some() => "reconnecting".into(),
            (Some(s), None) if s.is_done() => "closing".into(),
            (Some(s), None) => format!(
                "streaming, {} frames queued, {} datagram held",
                s.queued_frames(),
                u8::from(self.pending.is_some())
            ),
        }
    }

    fn wake(&self) -> Option<Instant> {
        if self.report.is_some() {
            return None;
        }
        let Some(s) = &self.session else {
            return Some(self.connect_by);
        };
        let running = s.is_running();
        [
            self.down.as_ref().map(|d| d.next_attempt),
            s.poll_timeout(),
            self.source
                .as_ref()
                .filter(|_| running)
                .map(|src| src.next_due()),
            self.stop_at.filter(|_| running),
            self.pending.as_ref().map(|o| o.deadline),
            self.frames.next_deadline(),
            self.close_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn abort(&mut self, now: Instant) {
        if let Some(s) = self.session.as_mut() {
            if let Some(out) = self.pending.take() {
                s.abandon(&out);
            }
            s.abort(now);
        }
    }

    /// The connection is gone (drained, or never made): finish the report.
    fn connection_gone(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        match self.session.as_mut() {
            None => {
                if self.failed.is_none() {
                    self.failed = Some("the handshake failed".into());
                }
            }
            Some(s) => {
                if let Some(d) = &self.down {
                    // Dialling again: give up as rtq::net::sender::reconnect does.
                    let why = match stop_dialling(s, self.stop_at, now) {
                        Some(why) => why,
                        None if now >= d.since + self.reconnect.give_up => {
                            "no new connection in time"
                        }
                        None => return,
                    };
                    let why = format!("{}; {why}", d.why);
                    s.connection_lost(now, &why);
                    self.down = None;
                } else if !s.is_done() {
                    s.connection_lost(now, "the connection ended");
                }
                self.finish_report(now, None);
            }
        }
    }

    fn finish_report(&mut self, now: Instant, quic: Option<(rtq::stats::report::QuicReport, u64)>) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let mut r = s.report(now);
        complete_report(&mut r, RECEIVER_ADDR, quic);
        r.bytes.wire += self.wire_before;
        self.send_delay = s.send_delay().clone();
        self.report = Some(r);
    }

    fn start(&mut self, now: Instant, conn: &mut quinn_proto::Connection) {
        if conn.datagrams().max_size().is_none() {
            self.failed = Some(format!(
                "the receiver at {RECEIVER_ADDR} does not accept QUIC datagrams"
            ));
            return;
        }
        self.session = Some(SenderSession::new(self.cfg.clone(), self.anchor, now));
        self.source = Some(SyntheticSource::new(self.kind, self.seed, now));
        self.stop_at = Some(now + self.duration);
        self.ctl = conn.streams().open(Dir::Bi);
    }
}

impl App for SenderApp {
    fn on_event(&mut self, now: Instant, conn: &mut quinn_proto::Connection, ev: Event) {
        match ev {
            Event::Connected => match self.session.as_mut() {
                None => self.start(now, conn),
                Some(s) if self.down.is_some() => {
                    if conn.datagrams().max_size().is_some() {
                        s.relinked(now);
                        self.down = None;
                        self.ctl = conn.streams().open(Dir::Bi);
                    }
                }
                Some(_) => {}
            },
            Event::ConnectionLost { reason } => match self.session.as_mut() {
                Some(_) if self.down.is_some() => {
                    // An attempt failed; the next one comes at its time.
                    self.attempt_failed(&explain(&reason));
                }
                Some(s) => {
                    if self.reconnect.worth_it(&reason, s) {
                        self.link_lost(now, conn, explain(&reason));
                    } else if !s.is_done() {
                        s.connection_lost(now, &explain(&reason));
                    }
                }
                None => {
                    self.failed = Some(format!(
                        "cannot connect to {RECEIVER_ADDR}: {}",
                        explain(&reason)
                    ));
                }
            },
            Event::Stream(StreamEvent::Available { dir: Dir::Bi })
                if self.ctl.is_none() && self.session.is_some() =>
            {
                self.ctl = conn.streams().open(Dir::Bi);
            }
            Event::Stream(StreamEvent::Readable { id }) if Some(id) == self.ctl => {
                if let Some(s) = self.session.as_mut() {
                    read_control(conn, id, |b| s.handle_control(now, b));
                }
            }
            Event::Stream(StreamEvent::Finished { id }) if Some(id) == self.ctl => {
                self.ctl_acked = true;
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) == self.ctl => {
                self.ctl_acked = true;
            }
            Event::Stream(StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. }) => {
                self.frames.acknowledged(id);
            }
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    if let Some(s) = self.session.as_mut() {
                        s.handle_datagram(now, d);
                    }
                }
            }
            _ => {}
        }
    }

    fn step(&mut self, now: Instant, conn: &mut quinn_proto::Connection) {
        if self.closed || self.down.is_some() {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            if now >= self.connect_by && self.failed.is_none() {
                self.failed = Some(format!(
                    "cannot connect to {RECEIVER_ADDR}: no answer within {} s through this link",
                    CONNECT_TIMEOUT.as_secs()
                ));
            }
            return;
        };
        if session.target_rate_bps().is_some() {
            session.set_pacing_rate(conn.congestion_state().metrics().pacing_rate);
        }
        pump_source(session, &mut self.source, self.stop_at, now, || now);
        if session.is_running() && self.stop_at.is_some_and(|s| now >= s) {
            session.finish(now);
        }
        session.handle_timeout(now);
        if let Some(out) = self.pending.take_if(|o| o.deadline <= now) {
            // Not sent before its frame's deadline: it must not be sent at all.
            session.abandon(&out);
        }
        // A datagram QUIC had no room for goes first, as soon as there is room.
        if let Some(out) = self.pending.take() {
            match conn.datagrams().send(out.data.clone(), false) {
                Ok(()) => {}
                Err(SendDatagramError::Blocked(_)) => self.pending = Some(out),
                Err(_) => session.abandon(&out),
            }
        }
        // The goodbye must not overtake a datagram still waiting for QUIC.
        let hold_control = self.pending.is_some() && session.is_closing();
        if let Some(id) = self.ctl
            && self.close_by.is_none()
            && !hold_control
        {
            write_control(conn, id, &mut self.ctl_held, || session.poll_control());
        }
        if session.transport() == FrameTransport::Stream {
            // As rtq::net::frames: each frame on its own stream, reset at its deadline.
            for _ in 0..self.frames.expire(now, conn) {
                session.stream_reset();
            }
            while self.frames.can_take()
                && let Some(out) = session.poll_outgoing(now, MAX_RECORD)
            {
                self.frames.push(&out);
            }
            self.frames.write(conn);
        }
        // Hand QUIC no more than it sends in the queue budget (see rtq::net::sender).
        let window = queue_allowance(conn.congestion_state().window(), conn.rtt());
        let buffered = |conn: &mut quinn_proto::Connection| {
            self.datagram_send_buffer
                .saturating_sub(conn.datagrams().send_buffer_space())
        };
        if session.transport() == FrameTransport::Datagram
            && self.pending.is_none()
            && buffered(conn) < window
        {
            let max = conn.datagrams().max_size().unwrap_or(0);
            while let Some(out) = session.poll_outgoing(now, max) {
                match conn.datagrams().send(out.data.clone(), false) {
                    Ok(()) => {}
                    Err(SendDatagramError::Blocked(_)) => {
                        self.pending = Some(out);
                        break;
                    }
                    Err(SendDatagramError::TooLarge) => session.abandon(&out),
                    Err(_) => {
                        session.abandon(&out);
                        break;
                    }
                }
                if buffered(conn) >= window {
                    break;
                }
            }
        }
        if session.is_done() && self.close_by.is_none() {
            if let Some(out) = self.pending.take() {
                session.abandon(&out);
            }
            match self.ctl {
                Some(id) => {
                    write_control(conn, id, &mut self.ctl_held, || session.poll_control());
                    let _ = conn.send_stream(id).finish();
                }
                None => self.ctl_acked = true,
            }
            self.close_by = Some(now + SENDER_CLOSE_WAIT);
        }
        if let Some(by) = self.close_by
            && (self.ctl_acked || now >= by)
        {
            let end = session.end().cloned().unwrap_or(End::Complete);
            close(now, conn, &end);
            self.closed = true;
            let quic = quic_report(conn);
            self.finish_report(now, Some(quic));
        }
    }
}

/// The receiver's side: one session of rtq-recv's shell (`rtq::net::receiver`), over
/// quinn-proto.
struct ReceiverApp {
    cfg: ReceiverConfig,
    anchor: ClockAnchor,
    /// A connection got as far as a session.
    seen: bool,
    session: Option<ReceiverSession>,
    ctl: Option<StreamId>,
    ctl_held: Option<Bytes>,
    ctl_ended: bool,
    /// Frame streams being read (`--transport stream`).
    readers: std::collections::HashMap<StreamId, RecordDecoder>,
    /// Once the session is done: wait until then for the sender to close.
    close_by: Option<Instant>,
    conn_lost: bool,
    report: Option<SessionReport>,
    delays: Option<rtq::stats::Delays>,
    /// Sessions of earlier connections (the sender reconnected), with their delays.
    earlier: Vec<(SessionReport, rtq::stats::Delays)>,
}

impl ReceiverApp {
    fn new(cfg: ReceiverConfig, anchor: ClockAnchor) -> Self {
        Self {
            cfg,
            anchor,
            seen: false,
            session: None,
            ctl: None,
            ctl_held: None,
            ctl_ended: false,
            readers: Default::default(),
            close_by: None,
            conn_lost: false,
            report: None,
            delays: None,
            earlier: Vec::new(),
        }
    }

    /// A new connection after an earlier session: that one's report is kept, and a fresh
    /// session starts (as rtq-recv serves a reconnecting sender).
    fn new_session(&mut self, now: Instant) {
        if let Some(s) = self.session.as_mut() {
            if self.report.is_none() {
                if !s.is_done() {
                    s.connection_lost(now, "the sender connected again");
                }
                self.finish_report(now, None);
            }
            if let (Some(r), Some(d)) = (self.report.take(), self.delays.take()) {
                self.earlier.push((r, d));
            }
        }
        self.ctl = None;
        self.ctl_held = None;
        self.ctl_ended = false;
        self.readers.clear();
        self.close_by = None;
        self.conn_lost = false;
        self.seen = true;
        self.session = Some(ReceiverSession::new(self.cfg.clone(), self.anchor, now));
    }

    /// Frames played, late and lost and the end-to-end delays so far, over every session.
    fn totals(&self) -> Option<([u64; 3], rtq::stats::LatencyHistogram)> {
        let current = self.session.as_ref()?;
        let st = current.stats();
        let mut counts = [st.frames_played, st.frames_late, st.frames_lost];
        let mut e2e = current.delays().end_to_end.clone();
        for (r, d) in &self.earlier {
            counts[0] += r.frames.played;
            counts[1] += r.frames.late;
            counts[2] += r.frames.lost;
            e2e.merge(&d.end_to_end);
        }
        Some((counts, e2e))
    }

    fn describe(&self) -> String {
        match (&self.session, &self.report) {
            (_, Some(_)) => "finished".into(),
            (None, None) => "waiting for the handshake".into(),
            (Some(s), None) if s.is_done() => "closing".into(),
            (Some(s), None) => format!("receiving, {} bytes buffered", s.buffered_bytes()),
        }
    }

    fn wake(&self) -> Option<Instant> {
        if self.report.is_some() {
            return None;
        }
        [
            self.session
                .as_ref()
                .and_then(ReceiverSession::poll_timeout),
            self.close_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn abort(&mut self, now: Instant) {
        if let Some(s) = self.session.as_mut() {
            s.abort(now);
        }
    }

    fn connection_gone(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        if let Some(s) = self.session.as_mut() {
            if !s.is_done() {
                s.connection_lost(now, "the connection ended");
            }
            self.finish_report(now, None);
        }
    }

    /// Reads what has arrived on frame stream `id` into the session (as `rtq::net::frames`).
    fn read_frame_stream(
        &mut self,
        now: Instant,
        conn: &mut quinn_proto::Connection,
        id: StreamId,
    ) {
        let Some(dec) = self.readers.get_mut(&id) else {
            return;
        };
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            self.readers.remove(&id);
            return;
        };
        // Whether the stream is over: ended, reset, or given up.
        let mut over = false;
        let mut bad = false;
        loop {
            match chunks.next(MAX_RECORD + RECORD_PREFIX) {
                Ok(Some(c)) => match dec.push(&c.bytes) {
                    Ok(records) => {
                        if let Some(s) = self.session.as_mut() {
                            for r in records {
                                s.handle_stream_record(now, r);
                            }
                        }
                    }
                    Err(_) => {
                        bad = true;
                        over = true;
                        break;
                    }
                },
                Ok(None) => {
                    bad = dec.finish().is_err();
                    over = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(_)) => {
                    over = true;
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if bad {
            let _ = conn.recv_stream(id).stop(quinn_proto::VarInt::from_u32(0));
            if let Some(s) = self.session.as_mut() {
                s.frame_stream_failed();
            }
        }
        if over {
            self.readers.remove(&id);
        }
    }

    fn finish_report(&mut self, now: Instant, quic: Option<(rtq::stats::report::QuicReport, u64)>) {
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let mut r = s.report(now);
        complete_report(&mut r, SENDER_ADDR, quic);
        self.delays = Some(s.delays().clone());
        self.report = Some(r);
    }
}

impl App for ReceiverApp {
    fn on_event(&mut self, now: Instant, conn: &mut quinn_proto::Connection, ev: Event) {
        match ev {
            Event::Connected => self.new_session(now),
            Event::ConnectionLost { reason } => {
                self.conn_lost = true;
                if let Some(s) = self.session.as_mut()
                    && !s.is_done()
                {
                    s.connection_lost(now, &explain(&reason));
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if self.ctl.is_none() => {
                self.ctl = conn.streams().accept(Dir::Bi);
            }
            Event::Stream(StreamEvent::Readable { id }) if Some(id) == self.ctl => {
                if let Some(s) = self.session.as_mut() {
                    self.ctl_ended |= read_control(conn, id, |b| s.handle_control(now, b));
                }
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                while let Some(id) = conn.streams().accept(Dir::Uni) {
                    self.readers.insert(id, RecordDecoder::new());
                    self.read_frame_stream(now, conn, id);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) if self.readers.contains_key(&id) => {
                self.read_frame_stream(now, conn, id);
            }
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    if let Some(s) = self.session.as_mut() {
                        s.handle_datagram(now, d);
                    }
                }
            }
            _ => {}
        }
    }

    fn step(&mut self, now: Instant, conn: &mut quinn_proto::Connection) {
        if self.report.is_some() {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.wants_transport_rtt(now) {
            session.set_transport_rtt(now, conn.rtt());
        }
        session.handle_timeout(now);
        // Played frames go nowhere (as rtq-recv without --output); the session counts them.
        while session.poll_frame(now).is_some() {}
        while let Some(d) = session.poll_datagram() {
            // Retransmission requests (as rtq::net::receiver sends them).
            if let Err(SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) =
                conn.datagrams().send(d, true)
            {
                session.set_nack_datagrams(false);
            }
        }
        if let Some(id) = self.ctl {
            write_control(conn, id, &mut self.ctl_held, || session.poll_control());
        }
        if session.is_done() && self.close_by.is_none() {
            let end = session.end().cloned().unwrap_or(End::Complete);
            if let Some(id) = self.ctl
                && matches!(end, End::Complete | End::Shutdown)
            {
                let _ = conn.send_stream(id).finish();
                self.close_by = Some(now + RECEIVER_CLOSE_WAIT);
            } else {
                self.close_by = Some(now);
            }
        }
        if let Some(by) = self.close_by
            && (self.conn_lost || now >= by)
        {
            let end = session.end().cloned().unwrap_or(End::Complete);
            close(now, conn, &end);
            let quic = quic_report(conn);
            self.finish_report(now, Some(quic));
        }
    }
}
