//! rtq against SRT, the transport people use for live contribution today, as gateways between a
//! UDP source and a UDP sink, through the same impairment.
//!
//! `cargo bench --bench peers [-- --quick] [-- --json PATH] [-- --only NAME[,NAME]]`
//! (`cargo test --benches` runs a short smoke test; `--only` keeps the conditions — `clean`,
//! `loss2`, `ge2` — and contenders — `rtq`, `srt` — it names, e.g. `--only ge2,rtq`).
//!
//! A source sends 1316-byte datagrams (seven MPEG-TS packets, incompressible bytes) at 200 per
//! second (2.1 Mbit/s), each stamped with a sequence number and its send time; a sink takes
//! what comes out. Between them, each contender's sender gateway, `rtq-sim proxy`'s link
//! (in this process: the same code), and its receiver gateway:
//!
//! - `rtq`: `rtq-send --input udp://…` → proxy → `rtq-recv --output udp://…` (both in this
//!   process, on their own tokio runtime, with their default settings: FEC auto, retransmission
//!   within the deadline, adaptive playout);
//! - `srt`: `srt-live-transmit udp://… srt://…` (caller) → proxy → `srt-live-transmit
//!   srt://…?mode=listener udp://…` (Debian's srt-tools; two processes), at its default
//!   latency of 120 ms and at the smallest latency of a ladder (below 120 ms when that
//!   delivers ≥ 99.9 %, above it when it does not) that still does.
//!
//! rtq also runs with a fixed playout delay (`rtq-recv --jitter fixed:…`), from 140 ms
//! down or up a ladder in the same way, so that both transports are compared at the smallest
//! delay that delivers ≥ 99.9 %, as well as at their defaults.
//!
//! Conditions: `clean` (loopback), `loss2` (40 ms ± 10 ms one way, normal, 2 % random loss each
//! way), `ge2` (40 ms, Gilbert–Elliott 2 % mean loss, mean burst 3). Per contender and
//! condition: the ratio of datagrams delivered (a datagram that comes after the run's grace is
//! not), and the one-way delay of those delivered: p50, p99, max. Source and sink share this
//! process's clock, so the delays are exact. Each run's progress line (stderr) also names the
//! first datagrams that never came, by sequence number: where losses fall (a run's start,
//! singly, in bursts) says more about their cause than their number.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rtq::jitter::JitterMode;
use rtq::net::Shutdown;
use rtq::net::io::Stream;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::{Identity, Trust};
use rtq::net::transport::TransportOptions;
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::stats::LatencyHistogram;
use rtq_sim::proxy::Proxy;
use rtq_sim::scenario::ScenarioFile;

/// Datagram size: seven MPEG-TS packets.
const DATAGRAM: usize = 1316;
/// Datagrams per second.
const RATE: u32 = 200;
/// Sequence number of the probes sent until the path is up (not counted).
const PROBE: u64 = u64::MAX;
/// The delivery SRT's latency is searched for.
const TARGET: f64 = 0.999;
/// srt-live-transmit's default latency, ms.
const DEFAULT_LATENCY: u64 = 120;
/// The fixed playout delay rtq's ladder starts from, ms.
const RTQ_START_PLAYOUT: u64 = 140;

const CONDITIONS: [(&str, &str); 3] = [
    ("clean", ""),
    (
        "loss2",
        "delay = \"40ms\"\njitter = \"10ms\"\njitter_dist = \"normal\"\nloss = \"2%\"\n",
    ),
    (
        "ge2",
        "delay = \"40ms\"\nloss_model = \"ge\"\nloss = \"2%\"\nburst = 3.0\n",
    ),
];

struct Args {
    quick: bool,
    smoke: bool,
    json: Option<String>,
    /// `--only NAME[,NAME]`: conditions (`clean`, `loss2`, `ge2`) and contenders (`rtq`,
    /// `srt`) to run; empty: all.
    only: Vec<String>,
}

impl Args {
    /// Whether `name` (of `of`, the names it is one of) is to run: `--only` names none of
    /// `of`, or names it.
    fn runs(&self, name: &str, of: &[&str]) -> bool {
        !self.only.iter().any(|o| of.contains(&o.as_str())) || self.only.iter().any(|o| o == name)
    }
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        smoke: true,
        json: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run.
            "--bench" => a.smoke = false,
            "--quick" => a.quick = true,
            "--json" => a.json = it.next(),
            "--only" => {
                a.only = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            _ => {}
        }
    }
    a
}

/// What one run delivered.
#[derive(Clone)]
struct Outcome {
    sent: u64,
    delivered: u64,
    delay: LatencyHistogram,
    /// Sequence numbers of the first datagrams that never came (at most `MISSING_SHOWN`).
    missing: Vec<u64>,
}

/// How many missing sequence numbers a progress line names.
const MISSING_SHOWN: usize = 12;

impl Outcome {
    fn ratio(&self) -> f64 {
        self.delivered as f64 / self.sent.max(1) as f64
    }
}

/// One run's progress line on stderr.
fn progress(condition: &str, who: &str, o: &Outcome) {
    let lost = o.sent.saturating_sub(o.delivered);
    let missing = if lost == 0 {
        String::new()
    } else {
        let more = if lost > o.missing.len() as u64 {
            ", …"
        } else {
            ""
        };
        let seqs: Vec<String> = o.missing.iter().map(u64::to_string).collect();
        format!("  missing {lost}: #{}{more}", seqs.join(" #"))
    };
    eprintln!(
        "{condition:<6} {who} delivered {:7.3} %  p50 {:>7} µs  p99 {:>7} µs{missing}",
        o.ratio() * 100.0,
        o.delay.quantile(0.5),
        o.delay.quantile(0.99)
    );
}

/// One row of the JSON report (`{"rows": [...]}`).
#[derive(serde::Serialize)]
struct Row {
    condition: &'static str,
    /// `rtq` or `srt`.
    contender: &'static str,
    /// SRT's latency setting; null for rtq.
    srt_latency_ms: Option<u64>,
    /// rtq's fixed playout delay (end-to-end); null for SRT and for rtq's adaptive playout.
    rtq_playout_ms: Option<u64>,
    delivered: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn row(
    condition: &'static str,
    contender: &'static str,
    (srt_latency_ms, rtq_playout_ms): (Option<u64>, Option<u64>),
    o: &Outcome,
) -> Row {
    Row {
        condition,
        contender,
        srt_latency_ms,
        rtq_playout_ms,
        delivered: o.ratio(),
        p50_us: o.delay.quantile(0.5),
        p99_us: o.delay.quantile(0.99),
        max_us: o.delay.quantile(1.0),
    }
}

fn main() {
    let args = args();
    // Run length, the wait for stragglers, and SRT latencies to try below and above its
    // default when looking for the smallest that delivers the target.
    type Ladder = &'static [u64];
    // The same for rtq's fixed playout delay.
    let (run, grace, down, up): (Duration, Duration, Ladder, Ladder) = if args.smoke {
        (Duration::from_secs(2), Duration::from_secs(1), &[], &[])
    } else if args.quick {
        (
            Duration::from_secs(5),
            Duration::from_secs(1),
            &[80, 40],
            &[300, 1000],
        )
    } else {
        (
            Duration::from_secs(20),
            Duration::from_secs(2),
            &[100, 80, 60, 40, 20],
            &[140, 160, 180, 200, 250, 300, 400, 500, 700, 1000, 1500],
        )
    };
    let (rtq_down, rtq_up): (Ladder, Ladder) = if args.smoke {
        (&[], &[])
    } else if args.quick {
        (&[120, 100], &[200, 300])
    } else {
        // 20 ms steps up to 200 ms, as SRT's ladder.
        (&[120, 100, 80, 60, 40, 20], &[160, 180, 200, 250, 300, 400])
    };
    let srt = srt_available();
    if srt.is_none() {
        eprintln!(
            "peers: srt-live-transmit is not installed (Debian: apt-get install srt-tools): only rtq runs"
        );
    }
    let conditions: &[(&str, &str)] = if args.smoke {
        &CONDITIONS[..1]
    } else {
        &CONDITIONS
    };
    let names: Vec<&str> = CONDITIONS.iter().map(|c| c.0).collect();
    let mut rows = Vec::new();
    for &(name, link) in conditions {
        if !args.runs(name, &names) {
            continue;
        }
        const CONTENDERS: [&str; 2] = ["rtq", "srt"];
        let srt = srt.as_ref().filter(|_| args.runs("srt", &CONTENDERS));
        if args.runs("rtq", &CONTENDERS) {
            let o = run_rtq(link, None, run, grace);
            progress(name, "rtq adaptive     ", &o);
            if args.smoke {
                assert!(o.ratio() > 0.9, "rtq delivered {:.3}", o.ratio());
            }
            rows.push(row(name, "rtq", (None, None), &o));
            if !args.smoke {
                let rtq_run = |ms: u64| {
                    let o = run_rtq(link, Some(ms), run, grace);
                    progress(name, &format!("rtq fixed {ms:>4}   "), &o);
                    o
                };
                let first = rtq_run(RTQ_START_PLAYOUT);
                let (l, o) = smallest(rtq_run, (RTQ_START_PLAYOUT, first), rtq_down, rtq_up);
                rows.push(row(name, "rtq", (None, Some(l)), &o));
            }
        }
        let Some(bin) = srt else { continue };
        let srt_run = |latency: u64| {
            let o = run_srt(bin, link, latency, run, grace);
            progress(name, &format!("srt latency {latency:>4} "), &o);
            o
        };
        // The default first; then the smallest setting that reaches the target.
        let default = srt_run(DEFAULT_LATENCY);
        rows.push(row(name, "srt", (Some(DEFAULT_LATENCY), None), &default));
        let (l, o) = smallest(srt_run, (DEFAULT_LATENCY, default.clone()), down, up);
        // Not repeated when it is the default.
        if l != DEFAULT_LATENCY {
            rows.push(row(name, "srt", (Some(l), None), &o));
        }
    }
    print_table(&rows);
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("wrote {path}");
    }
}

/// The smallest setting of a ladder that delivers [`TARGET`], from `first` (a setting and its
/// run): down the ladder while that reaches it, up it while it does not. Returns the setting
/// and its run (the last one tried when none reaches it).
fn smallest(
    mut run: impl FnMut(u64) -> Outcome,
    first: (u64, Outcome),
    down: &[u64],
    up: &[u64],
) -> (u64, Outcome) {
    let mut best = first;
    if best.1.ratio() >= TARGET {
        for &l in down {
            let o = run(l);
            if o.ratio() < TARGET {
                break;
            }
            best = (l, o);
        }
    } else {
        for &l in up {
            let o = run(l);
            let ok = o.ratio() >= TARGET;
            best = (l, o);
            if ok {
                break;
            }
        }
    }
    best
}

fn print_table(rows: &[Row]) {
    println!(
        "\nUDP source → gateway → impaired link → gateway → UDP sink; {DATAGRAM}-byte datagrams at {RATE}/s"
    );
    println!(
        "{:<6} {:<5} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "cond", "who", "latency", "delivered", "p50 ms", "p99 ms", "max ms"
    );
    for r in rows {
        println!(
            "{:<6} {:<5} {:>10} {:>9.3}% {:>9.1} {:>9.1} {:>9.1}",
            r.condition,
            r.contender,
            match (r.srt_latency_ms, r.rtq_playout_ms) {
                (Some(l), _) => format!("{l} ms"),
                (None, Some(p)) => format!("fixed {p}"),
                (None, None) => "adaptive".into(),
            },
            r.delivered * 100.0,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            r.max_us as f64 / 1000.0,
        );
    }
}

/// `srt-live-transmit`'s path, if it runs here.
fn srt_available() -> Option<String> {
    let bin = "srt-live-transmit".to_string();
    let ok = Command::new(&bin)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    ok.then_some(bin)
}

/// A free UDP port on 127.0.0.1 (free a moment ago).
fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The proxy between the two gateways, relaying to `to` with `link` (a scenario's `[link]`
/// table) in both directions.
fn proxy(link: &str, to: SocketAddr) -> Proxy {
    let file: ScenarioFile = toml::from_str(&format!("seed = 1\n[link]\n{link}")).unwrap();
    let s = file.resolve().unwrap();
    Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        to,
        (s.forward.clone(), Vec::new()),
        (s.reverse.clone(), Vec::new()),
        s.path_seeds(),
    )
    .unwrap()
}

/// Sends probes into `to` until the sink has seen one (the path is up), then `run` of the
/// traffic; returns how many datagrams were sent.
fn source(to: SocketAddr, epoch: Instant, run: Duration, probed: &dyn Fn() -> bool) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Incompressible bytes, as video is.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut payload = vec![0u8; DATAGRAM];
    for b in payload.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    let send = |seq: u64, payload: &mut Vec<u8>| {
        payload[0..8].copy_from_slice(&seq.to_be_bytes());
        let now = epoch.elapsed().as_micros() as u64;
        payload[8..16].copy_from_slice(&now.to_be_bytes());
        let _ = socket.send_to(payload, to);
    };
    // The path is up when a probe comes through: at most 10 s of probes, one per 20 ms.
    let give_up = rtq::net::now() + Duration::from_secs(10);
    while !probed() {
        assert!(rtq::net::now() < give_up, "no probe came through in 10 s");
        send(PROBE, &mut payload);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The traffic, paced against the clock.
    let start = rtq::net::now();
    let period = Duration::from_secs(1) / RATE;
    let total = u64::from(RATE) * run.as_secs(); // as `measure` expects
    for seq in 0..total {
        let due = start + period * seq as u32;
        if let Some(wait) = due.checked_duration_since(rtq::net::now()) {
            std::thread::sleep(wait);
        }
        send(seq, &mut payload);
    }
    total
}

/// Source → `sender` → proxy → `receiver` → sink, where `start(input, proxy, sink)` starts the
/// gateways and returns what stops them.
fn measure(
    link: &str,
    run: Duration,
    grace: Duration,
    start: impl FnOnce(SocketAddr, &Proxy, SocketAddr) -> Box<dyn FnOnce()>,
    receiver_addr: SocketAddr,
) -> Outcome {
    let epoch = rtq::net::now();
    // Large kernel buffers, as the gateways have: the sink measures the transports, not its
    // own thread's scheduling.
    let sink_socket = rtq::net::transport::bind_udp(
        "127.0.0.1:0".parse().unwrap(),
        rtq::net::transport::SOCKET_BUFFER,
    )
    .unwrap()
    .0;
    let sink_addr = sink_socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The sink's thread says when the first probe came through.
    let probe_seen = Arc::new(AtomicBool::new(false));
    // The sink keeps at most one entry per datagram the source sends.
    let total = u64::from(RATE) * run.as_secs();
    let proxy = proxy(link, receiver_addr);
    let input = free_port();
    let stop_gateways = start(input, &proxy, sink_addr);
    let sink = {
        let stop = Arc::clone(&stop);
        let seen = Arc::clone(&probe_seen);
        sink_socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        std::thread::spawn(move || {
            let mut got: HashMap<u64, u64> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = sink_socket.recv_from(&mut buf) else {
                    continue;
                };
                let at = epoch.elapsed().as_micros() as u64;
                if n < 16 {
                    continue;
                }
                let seq = u64::from_be_bytes(buf[0..8].try_into().unwrap());
                let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                if seq == PROBE {
                    seen.store(true, Ordering::Relaxed);
                } else if seq < total {
                    got.entry(seq).or_insert(at.saturating_sub(sent));
                }
            }
            got
        })
    };
    let sent = source(input, epoch, run, &|| probe_seen.load(Ordering::Relaxed));
    std::thread::sleep(grace);
    stop.store(true, Ordering::Relaxed);
    let got = sink.join().unwrap();
    stop_gateways();
    proxy.stop();
    let mut delay = LatencyHistogram::default();
    for &us in got.values() {
        delay.record(i64::try_from(us).unwrap_or(i64::MAX));
    }
    // Which datagrams never came (the first few): where losses fall in a run (at its start,
    // in pairs) says more about their cause than their number.
    let missing = (0..sent)
        .filter(|s| !got.contains_key(s))
        .take(MISSING_SHOWN)
        .collect();
    Outcome {
        sent,
        delivered: got.len() as u64,
        delay,
        missing,
    }
}

/// rtq's gateways, in this process; `fixed_ms`: a fixed playout delay instead of the adaptive
/// one.
fn run_rtq(link: &str, fixed_ms: Option<u64>, run: Duration, grace: Duration) -> Outcome {
    let mut session = ReceiverConfig::default();
    if let Some(ms) = fixed_ms {
        session.jitter.mode = JitterMode::Fixed(Duration::from_millis(ms));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let identity = Identity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let fp = identity.fingerprint().unwrap();
    // The receiver's address must be known before the proxy; its output (the sink) is not yet:
    // bind the receiver once the sink exists, on a port chosen now.
    let receiver_addr = free_port();
    let rt = Arc::new(rt);
    let start = {
        let rt = Arc::clone(&rt);
        move |input: SocketAddr, proxy: &Proxy, sink: SocketAddr| -> Box<dyn FnOnce()> {
            let (rx_trigger, rx_shutdown) = Shutdown::new();
            let (tx_trigger, tx_shutdown) = Shutdown::new();
            let ropts = RecvOptions {
                listen: receiver_addr,
                transport: TransportOptions::default(),
                session: session.clone(),
                clock: ClockChoice::System,
                output: Some(Stream::Udp(sink)),
                once: true,
                max_sessions: 1,
                status: false,
                summaries: false,
            };
            let rx = rt
                .block_on(async { Receiver::bind(ropts, identity) })
                .unwrap();
            let server = rt.spawn(rx.run(rx_shutdown));
            let opts = SendOptions {
                connect: proxy.listen_addr().to_string(),
                server_name: None,
                trust: Trust::Pin(fp),
                transport: TransportOptions::default(),
                session: SenderConfig::default(),
                source: SourceSpec::Input(Stream::Udp(input), DATAGRAM),
                duration: None,
                connect_timeout: Duration::from_secs(5),
                reconnect: Default::default(),
                status: false,
            };
            let sender = rt.spawn(rtq::net::sender::run(opts, tx_shutdown));
            let rt = Arc::clone(&rt);
            Box::new(move || {
                tx_trigger.trigger();
                let _ = rt.block_on(sender);
                rx_trigger.trigger();
                let _ = rt.block_on(server);
            })
        }
    };
    measure(link, run, grace, start, receiver_addr)
}

/// SRT's gateways: two `srt-live-transmit` processes.
fn run_srt(bin: &str, link: &str, latency: u64, run: Duration, grace: Duration) -> Outcome {
    let receiver_addr = free_port();
    let start = |input: SocketAddr, proxy: &Proxy, sink: SocketAddr| -> Box<dyn FnOnce()> {
        let spawn = |args: [String; 2]| -> Child {
            Command::new(bin)
                .args(args)
                .arg("-q")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let listener = spawn([
            format!("srt://{}?mode=listener&latency={latency}", receiver_addr),
            format!("udp://{sink}"),
        ]);
        let caller = spawn([
            format!("udp://{input}"),
            format!("srt://{}?latency={latency}", proxy.listen_addr()),
        ]);
        Box::new(move || {
            for mut c in [caller, listener] {
                let _ = c.kill();
                let _ = c.wait();
            }
        })
    };
    measure(link, run, grace, start, receiver_addr)
}
