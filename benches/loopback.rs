//! Loopback latency and goodput: rtq beside raw UDP, bare quinn datagrams and a reliable quinn
//! stream, measured in the same run, in one process and in two.
//!
//! `cargo bench --bench loopback [-- --quick] [-- --json PATH] [-- --rounds N]
//! [-- --processes 1|2] [-- --current-thread] [-- --only NAME[,NAME]]`
//! (`--only` keeps the cases and contenders it names, e.g. `--only goodput,rtq_core` or
//! `--only small,raw_udp,quinn_datagram,rtq`: ratios need `quinn_datagram` and `raw_udp`)
//! (`cargo test --benches` runs it as a short smoke test).
//!
//! Contenders, interleaved round by round so that machine noise hits all of them alike:
//! - `raw_udp`: tokio UDP sockets, no encryption, no congestion control: each frame's pieces
//!   (cut at 1200 bytes) as datagrams with the same (frame id, piece count, send time) header
//!   as `quinn_datagram`; the floor;
//! - `quinn_datagram`: bare quinn, the same TLS and transport settings as rtq, each frame's
//!   fragments sent with `send_datagram_wait` carrying a timestamp; no rtq stages;
//! - `rtq_core`: rtq's sender and receiver sessions (compression off) driven by loops as
//!   minimal as bare quinn's, without control stream or playout: the cost of rtq's stages
//!   (for `goodput`, with the control stream and playout, see [`send_goodput_rtq_core`]);
//! - `rtq`: rtq's real shells (`net::sender::run`, as `rtq-send` runs it, and
//!   `net::receiver::Receiver`, as `rtq-recv` runs it), compression off;
//! - `rtq_compressed`: the same with DEFLATE level 1;
//! - `quinn_stream`: bare quinn, one reliable stream, each frame written as (length, send
//!   time, payload): what a TCP-like transport gives.
//!
//! Cases:
//! - `small`: 1000-byte frames at 1000 frames/s; one-way delay from handing the frame to the
//!   transport to the frame complete at the receiver;
//! - `video`: 50 000-byte frames at 30 frames/s; the same delay, i.e. first fragment handed to
//!   the transport → last fragment received (rtq: capture → complete, its *network* delay);
//! - `goodput`: 1100-byte frames (one datagram each, whatever the path MTU) as fast as each
//!   contender takes them, with its own back-pressure (raw UDP: none, the kernel drops; quinn
//!   datagrams and rtq: `send_datagram_wait`; the stream: flow control), for 1 s, three turns
//!   a round (each turn a ratio of its own: goodput swings most with what else the machine
//!   does): Mbit/s of payload that arrived, and frames sent but not received. rtq here is
//!   `rtq_core` (its sessions in a minimal loop; the sender cuts datagrams in batches and
//!   hands them to QUIC back to back) with the control stream the shells have, looked at
//!   every 16 datagrams by the receiver and every batch by the sender: at this rate the
//!   sender must hear the receiver's reports, which bound how long it keeps sent frames for
//!   copies (without them it keeps its whole 8 MiB budget), and the receiver's requests for
//!   what quinn dropped when it fell behind are answered.
//!
//! Every contender's source wakes for a frame on [`rtq::net::alarm::Alarm`] (a Linux timerfd),
//! as rtq's shells do: within tens of microseconds of the frame's due time. On tokio's timer
//! (whole milliseconds, 0.3-1.8 ms late) frames left back to back now and then, the second
//! waiting behind the first, by a share that depended on how busy the sender's runtime was:
//! a measure of the harness's clock, not the transport.
//!
//! Processes: with `processes = 1` sender and receiver run in this process on one tokio
//! runtime; with `processes = 2` the receiver half runs in a child process (this bench binary
//! started again with `--serve`, on a runtime of its own) that announces its address and
//! certificate fingerprint on stdout and prints what it measured when the run ends. Both read
//! the system clock (microseconds since the Unix epoch), so one-way delays compare across the
//! two processes. Everything runs on 127.0.0.1. Figures are reported with their ratio to
//! `quinn_datagram` and to `raw_udp` run the same way in the same round: absolute times drift
//! from machine to machine and minute to minute, ratios much less.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtq::compress::CompressLevel;
use rtq::net::alarm::Alarm;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::{Fingerprint, Identity, Trust, client_config, server_config};
use rtq::net::transport::{SOCKET_BUFFER, TransportOptions, transport_config};
use rtq::net::{ControlPipe, Shutdown, now};
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::source::{SourceKind, SyntheticSource};
use rtq::stats::LatencyHistogram;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Small,
    Video,
    Goodput,
}

impl Case {
    const ALL: [Case; 3] = [Case::Small, Case::Video, Case::Goodput];

    fn name(self) -> &'static str {
        match self {
            Case::Small => "small",
            Case::Video => "video",
            Case::Goodput => "goodput",
        }
    }
    fn frame_size(self) -> usize {
        match self {
            Case::Small => 1000,
            Case::Video => 50_000,
            Case::Goodput => GOODPUT_FRAME,
        }
    }
    /// Frames per second (goodput: as fast as the contender takes them).
    fn fps(self) -> f64 {
        match self {
            Case::Small => 1000.0,
            Case::Video => 30.0,
            Case::Goodput => f64::INFINITY,
        }
    }
    /// The contenders this case runs.
    fn contenders(self) -> &'static [Contender] {
        match self {
            Case::Small | Case::Video => &[
                Contender::RawUdp,
                Contender::QuinnDatagram,
                Contender::RtqCore,
                Contender::Rtq,
                Contender::RtqCompressed,
                Contender::QuinnStream,
            ],
            Case::Goodput => &[
                Contender::RawUdp,
                Contender::QuinnDatagram,
                Contender::RtqCore,
                Contender::QuinnStream,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Contender {
    RawUdp,
    QuinnDatagram,
    RtqCore,
    Rtq,
    RtqCompressed,
    QuinnStream,
}

impl Contender {
    const ALL: [Contender; 6] = [
        Contender::RawUdp,
        Contender::QuinnDatagram,
        Contender::RtqCore,
        Contender::Rtq,
        Contender::RtqCompressed,
        Contender::QuinnStream,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::RawUdp => "raw_udp",
            Contender::QuinnDatagram => "quinn_datagram",
            Contender::QuinnStream => "quinn_stream",
            Contender::RtqCore => "rtq_core",
            Contender::Rtq => "rtq",
            Contender::RtqCompressed => "rtq_compressed",
        }
    }
}

/// One run: a contender on a case for a while.
#[derive(Debug, Clone, Copy)]
struct Job {
    case: Case,
    contender: Contender,
    duration: Duration,
}

impl Job {
    /// Frames the sender is given (latency cases).
    fn frames(&self) -> u64 {
        (self.duration.as_secs_f64() * self.case.fps()) as u64
    }
}

/// What a receiver announces when it is ready for the sender.
#[derive(Debug, Clone, Copy)]
struct Ready {
    addr: SocketAddr,
    /// Its certificate's fingerprint (QUIC contenders).
    fingerprint: Option<Fingerprint>,
}

/// What a receiver measured.
#[derive(Debug)]
enum Measured {
    /// One-way delays of the frames that arrived, µs.
    Delays(LatencyHistogram),
    /// Goodput: frames and payload bytes that arrived, and when the last did (µs since the
    /// Unix epoch).
    Goodput {
        received: u64,
        bytes: u64,
        last_us: u64,
    },
}

impl Measured {
    /// One line for the child's stdout.
    fn encode(&self) -> String {
        match self {
            Measured::Delays(h) => {
                let mut s = String::from("delays");
                for v in h.histogram().iter_recorded() {
                    s += &format!(" {}:{}", v.value_iterated_to(), v.count_at_value());
                }
                s
            }
            Measured::Goodput {
                received,
                bytes,
                last_us,
            } => format!("goodput {received} {bytes} {last_us}"),
        }
    }

    fn decode(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        match words.next()? {
            "delays" => {
                let mut h = LatencyHistogram::default();
                for w in words {
                    let (v, n) = w.split_once(':')?;
                    let (v, n): (i64, u64) = (v.parse().ok()?, n.parse().ok()?);
                    for _ in 0..n {
                        h.record(v);
                    }
                }
                Some(Measured::Delays(h))
            }
            "goodput" => Some(Measured::Goodput {
                received: words.next()?.parse().ok()?,
                bytes: words.next()?.parse().ok()?,
                last_us: words.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// What the sender side did.
#[derive(Debug, Default)]
struct Sent {
    /// Frames handed to the transport (and not dropped by rtq's own sender).
    frames: u64,
    /// When sending began, µs since the Unix epoch.
    start_us: u64,
}

/// The clock both processes read: µs since the Unix epoch.
fn clock_us() -> u64 {
    rtq::net::system_anchor().micros(now())
}

/// `now − sent`, µs.
fn since(sent_us: u64) -> i64 {
    clock_us() as i64 - sent_us as i64
}

struct Args {
    quick: bool,
    smoke: bool,
    current_thread: bool,
    json: Option<String>,
    rounds: usize,
    /// `--only NAME[,NAME]`: cases and contenders to run; empty: all.
    only: Vec<String>,
    processes: Vec<u8>,
    /// `--serve CONTENDER CASE SECONDS`: be the receiver half of a two-process run.
    serve: Option<Job>,
}

impl Args {
    /// Whether the job of `case` and `contender` is to run: `--only` names no case or this
    /// one, and no contender or this one.
    fn runs(&self, case: Case, contender: Contender) -> bool {
        let keeps = |name: &str, names: &[&str]| {
            !self.only.iter().any(|o| names.contains(&o.as_str()))
                || self.only.iter().any(|o| o == name)
        };
        keeps(case.name(), &Case::ALL.map(Case::name))
            && keeps(contender.name(), &Contender::ALL.map(Contender::name))
    }
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        smoke: true,
        current_thread: false,
        json: None,
        rounds: 3,
        only: Vec::new(),
        processes: vec![1, 2],
        serve: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run.
            "--bench" => a.smoke = false,
            "--quick" => a.quick = true,
            "--current-thread" => a.current_thread = true,
            "--json" => a.json = it.next(),
            "--only" => {
                a.only = it
                    .next()
                    .map(|o| o.split(',').map(str::to_owned).collect())
                    .unwrap_or_default()
            }
            "--rounds" => a.rounds = it.next().and_then(|n| n.parse().ok()).unwrap_or(3),
            "--processes" => match it.next().as_deref() {
                Some("1") => a.processes = vec![1],
                Some("2") => a.processes = vec![2],
                other => panic!("--processes {other:?}: use 1 or 2"),
            },
            "--serve" => {
                let c = it.next().unwrap();
                let k = it.next().unwrap();
                let secs: f64 = it.next().unwrap().parse().unwrap();
                a.serve = Some(Job {
                    contender: *Contender::ALL.iter().find(|x| x.name() == c).unwrap(),
                    case: *Case::ALL.iter().find(|x| x.name() == k).unwrap(),
                    duration: Duration::from_secs_f64(secs),
                });
            }
            _ => {}
        }
    }
    if a.quick {
        a.rounds = 1;
    }
    if a.smoke {
        a.rounds = 1;
    }
    a
}

/// The binaries' runtime (two workers) by default; --current-thread puts everything on one.
fn runtime(current_thread: bool) -> tokio::runtime::Runtime {
    if current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }
}

fn main() {
    let args = args();
    let rt = runtime(args.current_thread);
    if let Some(job) = args.serve {
        serve_child(&rt, job);
        return;
    }
    let secs = |case: Case| match (case, args.quick, args.smoke) {
        (_, _, true) => 0.3,
        (Case::Small, false, _) => 2.0,
        (Case::Small, true, _) => 1.0,
        // 240 frames a round: p99 is then the 3rd-slowest, not the 2nd of 120, where the
        // connection's first frame (the server finishing its handshake as it arrives) and one
        // scheduling hiccup of either side made the whole figure.
        (Case::Video, false, _) => 8.0,
        (Case::Video, true, _) => 2.0,
        (Case::Goodput, false, _) => 1.0,
        (Case::Goodput, true, _) => 0.5,
    };
    // Keyed by (case, processes, contender).
    let mut delays: BTreeMap<Key, LatencyHistogram> = BTreeMap::new();
    let mut per_round: BTreeMap<Key, Vec<(u64, u64)>> = BTreeMap::new();
    let mut dropped: BTreeMap<Key, u64> = BTreeMap::new();
    let mut goodput: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &procs in &args.processes {
            for case in Case::ALL {
                let contenders = case.contenders();
                // Goodput swings most with what else the machine does: its contenders take
                // turns several times a round, and each turn is a ratio of its own.
                let turns = if case == Case::Goodput {
                    GOODPUT_TURNS
                } else {
                    1
                };
                // Rotate the order each round (and turn) so that no contender always runs
                // first.
                for i in 0..contenders.len() * turns {
                    let c = contenders[(i + round) % contenders.len()];
                    if !args.runs(case, c) {
                        continue;
                    }
                    let job = Job {
                        case,
                        contender: c,
                        duration: Duration::from_secs_f64(secs(case)),
                    };
                    let (measured, sent) = if procs == 1 {
                        run_in_process(&rt, job)
                    } else {
                        run_in_two_processes(&rt, job, args.current_thread)
                    };
                    let key = (case, procs, c);
                    match measured {
                        Measured::Delays(h) => {
                            let lost = sent.frames.saturating_sub(h.len());
                            eprintln!(
                                "round {} {}p {:<7} {:<15} frames {:>6}  p50 {:>7} µs  p99 {:>7} µs  dropped {lost}",
                                round + 1,
                                procs,
                                case.name(),
                                c.name(),
                                h.len(),
                                h.quantile(0.5),
                                h.quantile(0.99)
                            );
                            per_round
                                .entry(key)
                                .or_default()
                                .push((h.quantile(0.5), h.quantile(0.99)));
                            delays.entry(key).or_default().merge(&h);
                            *dropped.entry(key).or_default() += lost;
                        }
                        Measured::Goodput {
                            received,
                            bytes,
                            last_us,
                        } => {
                            let secs = last_us.saturating_sub(sent.start_us) as f64 / 1e6;
                            let mbps = bytes as f64 * 8.0 / secs.max(1e-9) / 1e6;
                            let lost = sent.frames.saturating_sub(received);
                            eprintln!(
                                "round {} {}p goodput {:<15} {:>8.1} Mbit/s  sent {} received {received} dropped {lost}",
                                round + 1,
                                procs,
                                c.name(),
                                mbps,
                                sent.frames,
                            );
                            goodput.entry(key).or_default().push(mbps);
                            *dropped.entry(key).or_default() += lost;
                        }
                    }
                }
            }
        }
    }
    print_tables(&args, &delays, &per_round, &dropped, &goodput);
    if let Some(path) = &args.json {
        let mut rows = Vec::new();
        for (key, h) in &delays {
            let (case, procs, c) = *key;
            let s = h.summary();
            let (r50, r99) =
                ratios(&per_round, *key, Contender::QuinnDatagram).unwrap_or((f64::NAN, f64::NAN));
            let (u50, u99) =
                ratios(&per_round, *key, Contender::RawUdp).unwrap_or((f64::NAN, f64::NAN));
            rows.push(serde_json::json!({
                "case": case.name(), "processes": procs, "contender": c.name(),
                "frames": s.count, "p50_us": s.p50, "p90_us": s.p90, "p99_us": s.p99,
                "p999_us": s.p999, "max_us": s.max, "goodput_mbps": null,
                "dropped": dropped.get(key).copied().unwrap_or(0),
                "p50_ratio_quinn": r50, "p99_ratio_quinn": r99,
                "p50_ratio_raw_udp": u50, "p99_ratio_raw_udp": u99,
            }));
        }
        for (key, v) in &goodput {
            let (case, procs, c) = *key;
            let m = median(v.clone());
            let of = |base| goodput_ratio(&goodput, *key, base);
            rows.push(serde_json::json!({
                "case": case.name(), "processes": procs, "contender": c.name(),
                "p50_us": null, "p90_us": null, "p99_us": null, "p999_us": null,
                "max_us": null, "goodput_mbps": m,
                "dropped": dropped.get(key).copied().unwrap_or(0),
                "goodput_ratio_quinn": of(Contender::QuinnDatagram),
                "goodput_ratio_raw_udp": of(Contender::RawUdp),
            }));
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap(),
        )
        .unwrap();
        eprintln!("wrote {path}");
    }
}

type Key = (Case, u8, Contender);

/// Times each goodput contender runs per round (for 1 s each; 0.5 s with `--quick`).
const GOODPUT_TURNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `job` with both halves on `rt`.
fn run_in_process(rt: &tokio::runtime::Runtime, job: Job) -> (Measured, Sent) {
    rt.block_on(async {
        let (ready_tx, ready_rx) = oneshot::channel();
        let receiver = tokio::spawn(serve(job, ready_tx));
        let ready = ready_rx.await.unwrap();
        let sent = send(job, ready).await;
        (receiver.await.unwrap(), sent)
    })
}

/// Runs `job`'s receiver half in a child process (this binary with `--serve`) and its sender
/// half on `rt`.
fn run_in_two_processes(
    rt: &tokio::runtime::Runtime,
    job: Job,
    current_thread: bool,
) -> (Measured, Sent) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--serve")
        .arg(job.contender.name())
        .arg(job.case.name())
        .arg(job.duration.as_secs_f64().to_string());
    if current_thread {
        cmd.arg("--current-thread");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ready"), "child said {line:?}");
    let addr = words.next().unwrap().parse().unwrap();
    let fingerprint = words.next().and_then(|f| f.parse().ok());
    let sent = rt.block_on(send(job, Ready { addr, fingerprint }));
    let line = lines.next().unwrap().unwrap();
    let measured = Measured::decode(&line).unwrap();
    assert!(child.wait().unwrap().success());
    (measured, sent)
}

/// The child's side of a two-process run: serve, announce, report.
fn serve_child(rt: &tokio::runtime::Runtime, job: Job) {
    let measured = rt.block_on(async {
        let (ready_tx, ready_rx) = oneshot::channel();
        // Bounded: a sender that never comes (its process died) ends the child too.
        let limit = job.duration + Duration::from_secs(30);
        let receiver = tokio::spawn(tokio::time::timeout(limit, serve(job, ready_tx)));
        let ready = ready_rx.await.unwrap();
        let fp = ready
            .fingerprint
            .map_or_else(|| "-".into(), |f| f.to_string());
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {} {fp}", ready.addr).unwrap();
        out.flush().unwrap();
        receiver.await.unwrap().expect("the sender never finished")
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", measured.encode()).unwrap();
    out.flush().unwrap();
}

/// The receiver half of `job`: binds, says where through `ready`, measures until the sender
/// is done.
async fn serve(job: Job, ready: oneshot::Sender<Ready>) -> Measured {
    match (job.case, job.contender) {
        (Case::Goodput, Contender::RawUdp) => serve_goodput_raw_udp(ready).await,
        (Case::Goodput, Contender::QuinnDatagram) => serve_goodput_quinn_datagram(ready).await,
        (Case::Goodput, Contender::QuinnStream) => serve_goodput_quinn_stream(ready).await,
        (Case::Goodput, _) => serve_goodput_rtq_core(ready).await,
        (_, Contender::RawUdp) => serve_raw_udp(job, ready).await,
        (_, Contender::QuinnDatagram) => serve_quinn_datagram(ready).await,
        (_, Contender::QuinnStream) => serve_quinn_stream(ready).await,
        (_, Contender::RtqCore) => serve_rtq_core(ready).await,
        (_, Contender::Rtq | Contender::RtqCompressed) => serve_rtq(ready).await,
    }
}

/// The sender half of `job`, to the receiver that announced `ready`.
async fn send(job: Job, ready: Ready) -> Sent {
    match (job.case, job.contender) {
        (Case::Goodput, Contender::RawUdp) => send_goodput_raw_udp(job, ready).await,
        (Case::Goodput, Contender::QuinnDatagram) => send_goodput_quinn_datagram(job, ready).await,
        (Case::Goodput, Contender::QuinnStream) => send_goodput_quinn_stream(job, ready).await,
        (Case::Goodput, _) => send_goodput_rtq_core(job, ready).await,
        (_, Contender::RawUdp) => send_raw_udp(job, ready).await,
        (_, Contender::QuinnDatagram) => send_quinn_datagram(job, ready).await,
        (_, Contender::QuinnStream) => send_quinn_stream(job, ready).await,
        (_, Contender::RtqCore) => send_rtq_core(job, ready).await,
        (_, Contender::Rtq) => send_rtq(job, ready, CompressLevel::Off).await,
        (_, Contender::RtqCompressed) => send_rtq(job, ready, CompressLevel::Fast).await,
    }
}

/// Median over rounds of `contender / baseline` measured the same way in the same round, for
/// p50 and p99: a round disturbed by the machine moves the median much less than the merged
/// figures.
fn ratios(
    per_round: &BTreeMap<Key, Vec<(u64, u64)>>,
    key: Key,
    baseline: Contender,
) -> Option<(f64, f64)> {
    let mine = per_round.get(&key)?;
    let base = per_round.get(&(key.0, key.1, baseline))?;
    let pairs: Vec<_> = mine
        .iter()
        .zip(base)
        .filter(|(_, b)| b.0 > 0 && b.1 > 0)
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let p50 = median(pairs.iter().map(|(m, b)| m.0 as f64 / b.0 as f64).collect());
    let p99 = median(pairs.iter().map(|(m, b)| m.1 as f64 / b.1 as f64).collect());
    Some((p50, p99))
}

/// Median over turns of `key`'s goodput / `baseline`'s in the same turn, as [`ratios`] does
/// for delays over rounds: the machine's speed drifts between turns by more than the
/// difference measured.
fn goodput_ratio(goodput: &BTreeMap<Key, Vec<f64>>, key: Key, baseline: Contender) -> f64 {
    let (Some(mine), Some(base)) = (goodput.get(&key), goodput.get(&(key.0, key.1, baseline)))
    else {
        return f64::NAN;
    };
    let per_round: Vec<f64> = mine
        .iter()
        .zip(base)
        .filter(|(_, b)| **b > 0.0)
        .map(|(m, b)| m / b)
        .collect();
    if per_round.is_empty() {
        f64::NAN
    } else {
        median(per_round)
    }
}

fn print_tables(
    args: &Args,
    delays: &BTreeMap<Key, LatencyHistogram>,
    per_round: &BTreeMap<Key, Vec<(u64, u64)>>,
    dropped: &BTreeMap<Key, u64>,
    goodput: &BTreeMap<Key, Vec<f64>>,
) {
    let runtime = if args.current_thread {
        "current-thread runtime"
    } else {
        "multi-thread runtime, 2 workers"
    };
    println!(
        "\none-way delay on loopback ({runtime}; µs, {} round(s) merged); ratios: median over rounds of contender / baseline run the same way in the same round (p50/p99)",
        args.rounds
    );
    println!(
        "{:<6} {:>5} {:<15} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>11} {:>11}",
        "case",
        "procs",
        "contender",
        "frames",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "dropped",
        "/ quinn",
        "/ raw udp"
    );
    let fmt =
        |r: Option<(f64, f64)>| r.map_or_else(|| "-".into(), |(a, b)| format!("{a:.2}/{b:.2}"));
    for (key, h) in delays {
        let (case, procs, c) = *key;
        let s = h.summary();
        println!(
            "{:<6} {:>5} {:<15} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>11} {:>11}",
            case.name(),
            procs,
            c.name(),
            s.count,
            s.p50,
            s.p90,
            s.p99,
            s.p999,
            s.max,
            dropped.get(key).copied().unwrap_or(0),
            fmt(ratios(per_round, *key, Contender::QuinnDatagram)),
            fmt(ratios(per_round, *key, Contender::RawUdp)),
        );
    }
    if goodput.is_empty() {
        return;
    }
    println!(
        "\ngoodput on loopback ({GOODPUT_FRAME}-byte frames, as fast as each takes them; Mbit/s: median over turns, {GOODPUT_TURNS} a round; ratios: median over turns of contender / baseline in the same turn)"
    );
    println!(
        "{:>5} {:<15} {:>10} {:>10} {:>10} {:>10}",
        "procs", "contender", "Mbit/s", "/ quinn", "/ raw udp", "dropped"
    );
    for (key, v) in goodput {
        let (_, procs, c) = *key;
        let m = median(v.clone());
        let of = |base| goodput_ratio(goodput, *key, base);
        println!(
            "{:>5} {:<15} {:>10.1} {:>10.2} {:>10.2} {:>10}",
            procs,
            c.name(),
            m,
            of(Contender::QuinnDatagram),
            of(Contender::RawUdp),
            dropped.get(key).copied().unwrap_or(0)
        );
    }
}

/// rtq's receiver shell (`rtq-recv`'s), one session.
async fn serve_rtq(ready: oneshot::Sender<Ready>) -> Measured {
    let identity = Identity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let ropts = RecvOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: TransportOptions::default(),
        session: ReceiverConfig::default(),
        clock: ClockChoice::System,
        output: None,
        once: true,
        max_sessions: 1,
        status: false,
        summaries: false,
    };
    let rx = Receiver::bind(ropts, identity).unwrap();
    ready
        .send(Ready {
            addr: rx.local_addr().unwrap(),
            fingerprint: rx.fingerprint(),
        })
        .unwrap();
    let (_trigger, shutdown) = Shutdown::new();
    let mut outcomes = rx.run(shutdown).await.unwrap();
    Measured::Delays(outcomes.pop().unwrap().delays.network)
}

/// rtq's sender shell (`rtq-send`'s) with a synthetic source of the case's frames.
async fn send_rtq(job: Job, ready: Ready, compress: CompressLevel) -> Sent {
    let opts = SendOptions {
        connect: ready.addr.to_string(),
        server_name: None,
        trust: Trust::Pin(ready.fingerprint.unwrap()),
        transport: TransportOptions::default(),
        session: SenderConfig {
            compress,
            ..Default::default()
        },
        source: SourceSpec::Synthetic(
            SourceKind::Fixed {
                fps: job.case.fps(),
                frame_size: job.case.frame_size(),
            },
            1,
        ),
        duration: Some(job.duration),
        connect_timeout: Duration::from_secs(5),
        reconnect: Default::default(),
        status: false,
    };
    let start_us = clock_us();
    let (_trigger, shutdown) = Shutdown::new();
    let out = rtq::net::sender::run(opts, shutdown).await.unwrap();
    assert_eq!(out.report.end, "complete");
    Sent {
        frames: out.report.frames.sent,
        start_us,
    }
}

/// rtq's receiver session in a loop as minimal as bare quinn's.
async fn serve_rtq_core(ready: oneshot::Sender<Ready>) -> Measured {
    use rtq::session::ReceiverSession;
    // As the shells do: FEC's tables are built before the sender connects.
    rtq::fec::warm_up();
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut rx = ReceiverSession::new(ReceiverConfig::default(), rtq::net::system_anchor(), now());
    while let Ok(d) = conn.read_datagram().await {
        rx.handle_datagram(now(), d);
    }
    Measured::Delays(rx.delays().network.clone())
}

/// rtq's sender session (compression off) driven by a loop as minimal as bare quinn's: no
/// control stream, no playout. The difference to `quinn_datagram` is the cost of rtq's
/// stages; the difference to `rtq` is the cost of its shells.
async fn send_rtq_core(job: Job, ready: Ready) -> Sent {
    use rtq::session::SenderSession;
    rtq::fec::warm_up();
    let (client, conn) = connect(ready).await;
    let cfg = SenderConfig {
        compress: CompressLevel::Off,
        ..Default::default()
    };
    let mut tx = SenderSession::new(cfg, rtq::net::system_anchor(), now());
    let mut source = SyntheticSource::new(
        SourceKind::Fixed {
            fps: job.case.fps(),
            frame_size: job.case.frame_size(),
        },
        1,
        now(),
    );
    let start_us = clock_us();
    let end = now() + job.duration;
    let mut frames = 0;
    // The harness's clock, the same in every contender: wakes to the microsecond, as rtq's
    // shells do (tokio's timer would wake 0-2 ms late and pair frames up).
    let mut alarm = Alarm::new(source.next_due());
    while source.next_due() < end {
        alarm.reset(source.next_due());
        alarm.wait().await;
        let mut frame = source.poll(now()).unwrap();
        let t = now();
        frame.capture = t; // as the shell does: captured when handed to rtq
        tx.push_frame(t, frame).unwrap();
        frames += 1;
        let max = conn.max_datagram_size().unwrap();
        while let Some(d) = tx.poll_datagram(t, max) {
            conn.send_datagram_wait(d).await.unwrap();
        }
    }
    finish(client, conn).await;
    Sent { frames, start_us }
}

/// A loopback UDP socket for the raw-UDP contender, with the kernel buffers rtq's shells ask
/// for, as every contender has: the same room for bursts.
fn tokio_udp() -> tokio::net::UdpSocket {
    rtq::net::transport::tokio_udp(LOOPBACK, SOCKET_BUFFER).unwrap()
}

/// A quinn endpoint on loopback with those buffers.
fn endpoint(server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    rtq::net::transport::endpoint(LOOPBACK, SOCKET_BUFFER, Default::default(), server).unwrap()
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A quinn server endpoint with a fresh self-signed certificate, announced through `ready`.
fn quinn_server(ready: oneshot::Sender<Ready>) -> quinn::Endpoint {
    let g = Identity::self_signed(&["localhost".into()]).unwrap();
    let fingerprint = g.identity.fingerprint();
    let mut server_cfg = server_config(g.identity).unwrap();
    // rtq's transport settings, and one unidirectional stream for `quinn_stream`.
    let mut transport = transport_config(&TransportOptions::default());
    transport.max_concurrent_uni_streams(1u32.into());
    server_cfg.transport_config(Arc::new(transport));
    let server = endpoint(Some(server_cfg));
    ready
        .send(Ready {
            addr: server.local_addr().unwrap(),
            fingerprint,
        })
        .unwrap();
    server
}

/// A client endpoint connected to the server that announced `ready`, with rtq's settings.
async fn connect(ready: Ready) -> (quinn::Endpoint, quinn::Connection) {
    let mut cfg = client_config(Trust::Pin(ready.fingerprint.unwrap())).unwrap();
    cfg.transport_config(Arc::new(transport_config(&TransportOptions::default())));
    let client = endpoint(None);
    let conn = client
        .connect_with(cfg, ready.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    (client, conn)
}

/// Lets the last datagrams arrive, then closes: the receiver's loop ends with the connection.
async fn finish(client: quinn::Endpoint, conn: quinn::Connection) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
}

/// The frame's header on the raw and bare-quinn contenders: (frame id, pieces, send time µs).
const HEADER: usize = 20;

fn piece_header(id: u64, count: u32, sent_us: u64) -> BytesMut {
    let mut d = BytesMut::with_capacity(1500);
    d.put_u64(id);
    d.put_u32(count);
    d.put_u64(sent_us);
    d
}

/// Collects pieces into frames; records each frame's delay when its last piece is in.
#[derive(Default)]
struct Pieces {
    pending: BTreeMap<u64, u32>,
    delays: LatencyHistogram,
}

impl Pieces {
    /// Takes one piece; whether it completed a frame.
    fn take(&mut self, d: &[u8]) -> bool {
        if d.len() < HEADER {
            return false;
        }
        let id = u64::from_be_bytes(d[0..8].try_into().unwrap());
        let count = u32::from_be_bytes(d[8..12].try_into().unwrap());
        let sent = u64::from_be_bytes(d[12..20].try_into().unwrap());
        let got = self.pending.entry(id).or_insert(0);
        *got += 1;
        if *got == count {
            self.pending.remove(&id);
            self.delays.record(since(sent));
            return true;
        }
        false
    }
}

/// Bare quinn: each frame's fragments as datagrams with (frame id, fragment count, send time).
async fn serve_quinn_datagram(ready: oneshot::Sender<Ready>) -> Measured {
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut pieces = Pieces::default();
    while let Ok(d) = conn.read_datagram().await {
        pieces.take(&d);
    }
    Measured::Delays(pieces.delays)
}

async fn send_quinn_datagram(job: Job, ready: Ready) -> Sent {
    let (client, conn) = connect(ready).await;
    let period = Duration::from_secs_f64(1.0 / job.case.fps());
    let start = now();
    let start_us = clock_us();
    let payload = vec![0x5au8; job.case.frame_size()];
    let mut alarm = Alarm::new(start);
    for id in 0..job.frames() {
        alarm.reset(start + period * id as u32);
        alarm.wait().await;
        let room = conn.max_datagram_size().unwrap() - HEADER;
        let count = payload.len().div_ceil(room) as u32;
        let sent = clock_us();
        for chunk in payload.chunks(room) {
            let mut d = piece_header(id, count, sent);
            d.put_slice(chunk);
            conn.send_datagram_wait(d.freeze()).await.unwrap();
        }
    }
    finish(client, conn).await;
    Sent {
        frames: job.frames(),
        start_us,
    }
}

/// Waits up to 10 s for the first datagram on `rx`, then up to `idle` for each next one.
async fn recv_until_idle(
    rx: &tokio::net::UdpSocket,
    buf: &mut [u8],
    first: &mut bool,
) -> Option<usize> {
    let wait = if *first {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(200)
    };
    *first = false;
    match tokio::time::timeout(wait, rx.recv_from(buf)).await {
        Ok(Ok((n, _))) => Some(n),
        _ => None,
    }
}

/// Raw UDP on loopback: the floor every transport is measured against.
const RAW_PIECE: usize = 1200 - HEADER;

async fn serve_raw_udp(job: Job, ready: oneshot::Sender<Ready>) -> Measured {
    let rx = tokio_udp();
    ready
        .send(Ready {
            addr: rx.local_addr().unwrap(),
            fingerprint: None,
        })
        .unwrap();
    let mut pieces = Pieces::default();
    let mut buf = vec![0u8; 65_536];
    let (mut done, mut first) = (0u64, true);
    // Ends when every frame is in, or when nothing has come for 200 ms (a loss on loopback is
    // possible when the socket buffer overflows; it shows as fewer frames).
    while done < job.frames() {
        let Some(n) = recv_until_idle(&rx, &mut buf, &mut first).await else {
            break;
        };
        if pieces.take(&buf[..n]) {
            done += 1;
        }
    }
    Measured::Delays(pieces.delays)
}

async fn send_raw_udp(job: Job, ready: Ready) -> Sent {
    let tx = tokio_udp();
    let period = Duration::from_secs_f64(1.0 / job.case.fps());
    let count = job.case.frame_size().div_ceil(RAW_PIECE) as u32;
    let start = now();
    let start_us = clock_us();
    let payload = vec![0x5au8; job.case.frame_size()];
    let mut alarm = Alarm::new(start);
    for id in 0..job.frames() {
        alarm.reset(start + period * id as u32);
        alarm.wait().await;
        let sent = clock_us();
        for chunk in payload.chunks(RAW_PIECE) {
            let mut d = piece_header(id, count, sent);
            d.put_slice(chunk);
            tx.send_to(&d, ready.addr).await.unwrap();
        }
    }
    Sent {
        frames: job.frames(),
        start_us,
    }
}

/// Bare quinn with one reliable stream: each frame as (length u32, send time u64, payload).
async fn serve_quinn_stream(ready: oneshot::Sender<Ready>) -> Measured {
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut recv = conn.accept_uni().await.unwrap();
    let mut h = LatencyHistogram::default();
    let mut head = [0u8; 12];
    let mut body = Vec::new();
    while recv.read_exact(&mut head).await.is_ok() {
        let len = u32::from_be_bytes(head[0..4].try_into().unwrap()) as usize;
        let sent = u64::from_be_bytes(head[4..12].try_into().unwrap());
        body.resize(len, 0);
        if recv.read_exact(&mut body).await.is_err() {
            break;
        }
        h.record(since(sent));
    }
    Measured::Delays(h)
}

async fn send_quinn_stream(job: Job, ready: Ready) -> Sent {
    let (client, conn) = connect(ready).await;
    let mut send = conn.open_uni().await.unwrap();
    let period = Duration::from_secs_f64(1.0 / job.case.fps());
    let start = now();
    let start_us = clock_us();
    let payload = vec![0x5au8; job.case.frame_size()];
    let mut alarm = Alarm::new(start);
    for id in 0..job.frames() {
        alarm.reset(start + period * id as u32);
        alarm.wait().await;
        let mut d = BytesMut::with_capacity(12 + payload.len());
        d.put_u32(payload.len() as u32);
        d.put_u64(clock_us());
        d.put_slice(&payload);
        send.write_all(&d).await.unwrap();
    }
    send.finish().unwrap();
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    Sent {
        frames: job.frames(),
        start_us,
    }
}

/// Payload of a goodput frame.
const GOODPUT_FRAME: usize = 1100;

/// Counts what arrives for goodput.
#[derive(Default)]
struct Tally {
    received: u64,
    bytes: u64,
    last_us: u64,
}

impl Tally {
    fn take(&mut self, len: usize) {
        self.received += 1;
        self.bytes += len as u64;
        self.last_us = clock_us();
    }
    fn measured(self) -> Measured {
        Measured::Goodput {
            received: self.received,
            bytes: self.bytes,
            last_us: self.last_us,
        }
    }
}

/// Raw UDP as fast as `send_to` takes datagrams: the kernel drops what the receiver's socket
/// does not hold (counted).
async fn serve_goodput_raw_udp(ready: oneshot::Sender<Ready>) -> Measured {
    let rx = tokio_udp();
    ready
        .send(Ready {
            addr: rx.local_addr().unwrap(),
            fingerprint: None,
        })
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut tally = Tally::default();
    let mut first = true;
    while let Some(n) = recv_until_idle(&rx, &mut buf, &mut first).await {
        tally.take(n);
    }
    tally.measured()
}

async fn send_goodput_raw_udp(job: Job, ready: Ready) -> Sent {
    let tx = tokio_udp();
    let payload = vec![0x5au8; GOODPUT_FRAME];
    let start = now();
    let start_us = clock_us();
    let mut frames = 0u64;
    while now() < start + job.duration {
        tx.send_to(&payload, ready.addr).await.unwrap();
        frames += 1;
    }
    Sent { frames, start_us }
}

/// Bare quinn datagrams with `send_datagram_wait`'s back-pressure.
async fn serve_goodput_quinn_datagram(ready: oneshot::Sender<Ready>) -> Measured {
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut tally = Tally::default();
    while let Ok(d) = conn.read_datagram().await {
        tally.take(d.len());
    }
    tally.measured()
}

async fn send_goodput_quinn_datagram(job: Job, ready: Ready) -> Sent {
    let (client, conn) = connect(ready).await;
    let payload = Bytes::from(vec![0x5au8; GOODPUT_FRAME]);
    let start = now();
    let start_us = clock_us();
    let mut frames = 0u64;
    while now() < start + job.duration {
        conn.send_datagram_wait(payload.clone()).await.unwrap();
        frames += 1;
    }
    finish(client, conn).await;
    Sent { frames, start_us }
}

/// Bare quinn, one reliable stream: everything written arrives; goodput is what QUIC's flow
/// and congestion control let through.
async fn serve_goodput_quinn_stream(ready: oneshot::Sender<Ready>) -> Measured {
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut recv = conn.accept_uni().await.unwrap();
    let mut tally = Tally::default();
    while let Ok(Some(c)) = recv.read_chunk(1 << 20, true).await {
        tally.take(c.bytes.len());
    }
    // Frames are whole writes of GOODPUT_FRAME bytes.
    tally.received = tally.bytes / GOODPUT_FRAME as u64;
    tally.measured()
}

async fn send_goodput_quinn_stream(job: Job, ready: Ready) -> Sent {
    let (client, conn) = connect(ready).await;
    let mut send = conn.open_uni().await.unwrap();
    let payload = vec![0x5au8; GOODPUT_FRAME];
    let start = now();
    let start_us = clock_us();
    let mut frames = 0u64;
    while now() < start + job.duration {
        send.write_all(&payload).await.unwrap();
        frames += 1;
    }
    send.finish().unwrap();
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    Sent { frames, start_us }
}

/// rtq's receiver session counting complete frames, playing them out as they fall due (as
/// the shell does: a jitter buffer that never plays fills up and costs more per frame), with
/// the control stream as the shells have it: its reports tell the sender how long a datagram
/// is worth keeping for a copy, its requests ask for copies of what the receiver lost.
async fn serve_goodput_rtq_core(ready: oneshot::Sender<Ready>) -> Measured {
    use rtq::session::ReceiverSession;
    // As the shells do: FEC's tables are built before the sender connects.
    rtq::fec::warm_up();
    let server = quinn_server(ready);
    let conn = server.accept().await.unwrap().await.unwrap();
    let mut rx = ReceiverSession::new(ReceiverConfig::default(), rtq::net::system_anchor(), now());
    // Requests for copies go on the control stream, which this loop polls anyway.
    rx.set_nack_datagrams(false);
    let mut accept = Some(tokio::spawn({
        let conn = conn.clone();
        async move { conn.accept_bi().await }
    }));
    let mut ctl: Option<ControlPipe> = None;
    // One clock read per datagram, as bare quinn's loop: the last datagram's time, on the
    // system clock, is worked out once at the end.
    let anchor = rtq::net::system_anchor();
    let mut last = now();
    let mut n = 0u64;
    while let Ok(d) = conn.read_datagram().await {
        let t = now();
        last = t;
        rx.handle_datagram(t, d);
        while rx.poll_frame(t).is_some() {}
        // Timers and the control stream every CONTROL_EVERY datagrams: at this rate that is
        // every few tens of µs, and reports and requests come every few ms.
        n += 1;
        if !n.is_multiple_of(CONTROL_EVERY) {
            continue;
        }
        if rx.poll_timeout().is_some_and(|w| w <= t) {
            rx.handle_timeout(t);
        }
        if let Some(a) = accept.take_if(|a| a.is_finished())
            && let Ok(Ok((send, recv))) = a.await
        {
            ctl = Some(ControlPipe::spawn(send, recv, false));
        }
        if let Some(c) = &mut ctl {
            while let Some(chunk) = c.try_recv() {
                rx.handle_control(t, &chunk);
            }
            while c.has_room()
                && let Some(b) = rx.poll_control()
            {
                c.try_send(b);
            }
        }
    }
    let st = rx.stats();
    Measured::Goodput {
        received: st.frames_complete,
        bytes: st.bytes_payload,
        last_us: anchor.micros(last),
    }
}

/// The goodput receiver of `rtq_core` looks at timers and the control stream once per this
/// many datagrams (its sender, once a batch).
const CONTROL_EVERY: u64 = 16;

/// The `rtq_core` goodput sender cuts this many of QUIC's datagram send buffers' worth of
/// datagrams (4 × 64 KiB) before handing them to QUIC back to back. Measured 2026-12-04,
/// 1-process goodput over bare quinn, mean of 2-5 runs of 6-9 turns: batches of about 64 KiB
/// 0.85, 128 KiB 0.88, 256 KiB 0.95, 512 KiB 0.89; one datagram at a time 0.79.
const GOODPUT_BATCH_BUFFERS: usize = 4;

/// Sleeps until `at` (capped by `end`), or yields once when the session names no time.
async fn wait_for(at: Option<std::time::Instant>, end: std::time::Instant) {
    match at {
        Some(at) if at > now() => tokio::time::sleep_until(at.min(end).into()).await,
        _ => tokio::task::yield_now().await,
    }
}

/// rtq's sender session (compression off) driven by a minimal loop with `send_datagram_wait`'s
/// back-pressure: the sender's queue is kept at 64 KiB, a frame pushed for each datagram cut.
/// Datagrams are cut a batch at a time ([`GOODPUT_BATCH_BUFFERS`]) and then handed to QUIC back
/// to back (bare quinn's loop has no per-datagram work to batch). Measured, cause not shown:
/// 250 ns of spinning between bare quinn's sends costs it 25 % of its goodput, while QUIC still
/// sends 9-10 datagrams per `sendmsg` either way; batching the session's work took rtq from
/// 0.79x to about 0.9x. Its control stream is polled between batches.
async fn send_goodput_rtq_core(job: Job, ready: Ready) -> Sent {
    use rtq::session::SenderSession;
    use rtq::source::SourceFrame;
    rtq::fec::warm_up();
    let (client, conn) = connect(ready).await;
    let cfg = SenderConfig {
        compress: CompressLevel::Off,
        ..Default::default()
    };
    let mut tx = SenderSession::new(cfg, rtq::net::system_anchor(), now());
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut ctl = ControlPipe::spawn(send, recv, false);
    let payload = Bytes::from(vec![0x5au8; GOODPUT_FRAME]);
    let start = now();
    let start_us = clock_us();
    let mut frames = 0u64;
    let batch_bytes = GOODPUT_BATCH_BUFFERS * TransportOptions::default().datagram_send_buffer;
    let mut batch = Vec::with_capacity(batch_bytes / GOODPUT_FRAME + 1);
    let end = start + job.duration;
    loop {
        let t = now();
        if t >= end {
            break;
        }
        while let Some(chunk) = ctl.try_recv() {
            tx.handle_control(t, &chunk);
        }
        if tx.poll_timeout().is_some_and(|w| w <= t) {
            tx.handle_timeout(t);
        }
        while ctl.has_room()
            && let Some(b) = tx.poll_control()
        {
            ctl.try_send(b);
        }
        // The path's datagram size takes the connection's lock: read it once a batch.
        let max = conn.max_datagram_size().unwrap();
        let mut cut = 0;
        while cut < batch_bytes {
            while tx.queued_bytes() < 64 * 1024 {
                let frame = SourceFrame {
                    capture: t,
                    keyframe: false,
                    data: payload.clone(),
                };
                tx.push_frame(t, frame).unwrap();
                frames += 1;
            }
            let Some(d) = tx.poll_datagram(t, max) else {
                break;
            };
            cut += d.len();
            batch.push(d);
        }
        if batch.is_empty() {
            // The pacer holds the queue back: wait for it rather than spin.
            wait_for(tx.poll_timeout(), end).await;
        }
        for d in batch.drain(..) {
            conn.send_datagram_wait(d).await.unwrap();
        }
    }
    // What is still queued goes out too, as the pacer lets it, for up to a second (frames past
    // their deadline are dropped by the session; both are taken off what was sent below).
    let drain_end = now() + Duration::from_secs(1);
    while tx.queued_bytes() > 0 && now() < drain_end {
        let t = now();
        if tx.poll_timeout().is_some_and(|w| w <= t) {
            tx.handle_timeout(t);
        }
        let max = conn.max_datagram_size().unwrap();
        match tx.poll_datagram(t, max) {
            Some(d) => conn.send_datagram_wait(d).await.unwrap(),
            None => wait_for(tx.poll_timeout(), drain_end).await,
        }
    }
    finish(client, conn).await;
    // Frames the sender dropped (its deadline) or still holds never went out: the rest is what
    // was sent.
    let unsent = tx.stats().dropped.total + tx.queued_frames() as u64;
    Sent {
        frames: frames - unsent.min(frames),
        start_us,
    }
}
