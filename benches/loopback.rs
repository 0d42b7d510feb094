//! Loopback latency: rtq beside bare quinn datagrams, measured in the same run.
//!
//! `cargo bench --bench loopback [-- --quick] [-- --json PATH] [-- --rounds N] [-- --current-thread]`
//! [-- --only CONTENDER|CASE] (`cargo test --benches` runs it as a short smoke test).
//!
//! Contenders, interleaved round by round so that machine noise hits all of them alike:
//! - `raw_udp`: tokio UDP sockets, no encryption, no congestion control: each frame's pieces
//!   (cut at 1200 bytes) as datagrams with the same (frame id, piece count, send time) header
//!   as `quinn_datagram`; the floor;
//! - `quinn_datagram`: bare quinn, the same TLS and transport settings as rtq, each frame's
//!   fragments sent with `send_datagram_wait` carrying a timestamp; no rtq stages;
//! - `rtq_core`: rtq's sender and receiver sessions (compression off) driven by loops as
//!   minimal as bare quinn's, without control stream or playout: the cost of rtq's stages;
//! - `rtq`: rtq's real shells (`net::sender::run` and `net::receiver::Receiver`), compression off;
//! - `rtq_compressed`: the same with DEFLATE level 1;
//! - `quinn_stream`: bare quinn, one reliable stream, each frame written as (length, send
//!   time, payload): what a TCP-like transport gives.
//!
//! Cases:
//! - `small`: 1000-byte frames at 1000 frames/s; one-way delay from handing the frame to the
//!   transport to the frame complete at the receiver;
//! - `video`: 50 000-byte frames at 30 frames/s; the same delay, i.e. first fragment handed to
//!   the transport → last fragment received (rtq: capture → complete, its *network* delay).
//!
//! - `goodput`: 1100-byte frames (one datagram each, whatever the path MTU) as fast as each contender takes them, with its own
//!   back-pressure (raw UDP: none, the kernel drops; quinn datagrams and rtq:
//!   `send_datagram_wait`; the stream: flow control), for 2 s: Mbit/s of payload that arrived,
//!   and frames sent but not received. rtq here is `rtq_core` (its sessions in a minimal loop).
//!
//! Everything runs in one process on 127.0.0.1; both ends read the same clock. Figures are
//! reported with their ratio to `quinn_datagram` from the same run: absolute times drift from
//! machine to machine and minute to minute, ratios much less.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtq::compress::CompressLevel;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::{Identity, Trust, client_config, server_config};
use rtq::net::transport::{TransportOptions, transport_config};
use rtq::net::{Shutdown, now};
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::source::{SourceKind, SyntheticSource};
use rtq::stats::LatencyHistogram;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Small,
    Video,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Small => "small",
            Case::Video => "video",
        }
    }
    fn frame_size(self) -> usize {
        match self {
            Case::Small => 1000,
            Case::Video => 50_000,
        }
    }
    fn fps(self) -> f64 {
        match self {
            Case::Small => 1000.0,
            Case::Video => 30.0,
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

struct Args {
    quick: bool,
    smoke: bool,
    current_thread: bool,
    json: Option<String>,
    rounds: usize,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        quick: false,
        smoke: true,
        current_thread: false,
        json: None,
        rounds: 5,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // `cargo bench` passes --bench; `cargo test --benches` does not: then a smoke run.
            "--bench" => a.smoke = false,
            "--quick" => a.quick = true,
            "--current-thread" => a.current_thread = true,
            "--json" => a.json = it.next(),
            "--only" => a.only = it.next(),
            "--rounds" => a.rounds = it.next().and_then(|n| n.parse().ok()).unwrap_or(5),
            _ => {}
        }
    }
    if a.quick {
        a.rounds = a.rounds.min(2);
    }
    if a.smoke {
        a.rounds = 1;
    }
    a
}

fn main() {
    let args = args();
    // The binaries' runtime (two workers) by default; --current-thread puts everything on one.
    let rt = if args.current_thread {
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
    };
    let secs = |case: Case| match (case, args.quick, args.smoke) {
        (_, _, true) => 0.3,
        (Case::Small, false, _) => 2.0,
        (Case::Small, true, _) => 1.0,
        (Case::Video, false, _) => 4.0,
        (Case::Video, true, _) => 2.0,
    };
    let contenders = [
        Contender::RawUdp,
        Contender::QuinnDatagram,
        Contender::RtqCore,
        Contender::Rtq,
        Contender::RtqCompressed,
        Contender::QuinnStream,
    ];
    let mut results: BTreeMap<(Case, Contender), LatencyHistogram> = BTreeMap::new();
    let mut per_round: BTreeMap<(Case, Contender), Vec<(u64, u64)>> = BTreeMap::new();
    // Frames each contender was given (its source's count), for `dropped`.
    let mut expected: BTreeMap<(Case, Contender), u64> = BTreeMap::new();
    for round in 0..args.rounds {
        for case in [Case::Small, Case::Video] {
            // Rotate the order each round so that no contender always runs first.
            for i in 0..contenders.len() {
                let c = contenders[(i + round) % contenders.len()];
                if args
                    .only
                    .as_deref()
                    .is_some_and(|o| o != c.name() && o != case.name())
                {
                    continue;
                }
                let d = Duration::from_secs_f64(secs(case));
                let h = rt.block_on(async {
                    match c {
                        Contender::RawUdp => raw_udp(case, d).await,
                        Contender::QuinnDatagram => bare_quinn(case, d).await,
                        Contender::QuinnStream => quinn_stream(case, d).await,
                        Contender::Rtq => rtq(case, d, CompressLevel::Off).await,
                        Contender::RtqCompressed => rtq(case, d, CompressLevel::Fast).await,
                        Contender::RtqCore => rtq_core(case, d).await,
                    }
                });
                eprintln!(
                    "round {} {:<5} {:<15} frames {:>6}  p50 {:>7} µs  p99 {:>7} µs",
                    round + 1,
                    case.name(),
                    c.name(),
                    h.len(),
                    h.quantile(0.5),
                    h.quantile(0.99)
                );
                per_round
                    .entry((case, c))
                    .or_default()
                    .push((h.quantile(0.5), h.quantile(0.99)));
                results.entry((case, c)).or_default().merge(&h);
                *expected.entry((case, c)).or_default() += (d.as_secs_f64() * case.fps()) as u64;
            }
        }
    }
    print_table(&results, &per_round);
    // Goodput: as fast as each contender takes 1100-byte frames, with its own back-pressure.
    let goodput_contenders = [
        Contender::RawUdp,
        Contender::QuinnDatagram,
        Contender::RtqCore,
        Contender::QuinnStream,
    ];
    let mut goodput: BTreeMap<Contender, Vec<Goodput>> = BTreeMap::new();
    let gsecs = if args.smoke {
        0.3
    } else if args.quick {
        1.0
    } else {
        2.0
    };
    for round in 0..args.rounds {
        for i in 0..goodput_contenders.len() {
            let c = goodput_contenders[(i + round) % goodput_contenders.len()];
            if args
                .only
                .as_deref()
                .is_some_and(|o| o != c.name() && o != "goodput")
            {
                continue;
            }
            let d = Duration::from_secs_f64(gsecs);
            let g = rt.block_on(async {
                match c {
                    Contender::RawUdp => goodput_raw_udp(d).await,
                    Contender::QuinnDatagram => goodput_quinn_datagram(d).await,
                    Contender::QuinnStream => goodput_quinn_stream(d).await,
                    _ => goodput_rtq_core(d).await,
                }
            });
            eprintln!(
                "round {} goodput {:<15} {:>8.1} Mbit/s  sent {} received {} dropped {}",
                round + 1,
                c.name(),
                g.mbps(),
                g.sent,
                g.received,
                g.sent - g.received
            );
            goodput.entry(c).or_default().push(g);
        }
    }
    let median_mbps = |v: &[Goodput]| {
        let mut m: Vec<f64> = v.iter().map(Goodput::mbps).collect();
        m.sort_by(f64::total_cmp);
        m.get(m.len() / 2).copied().unwrap_or(0.0)
    };
    println!(
        "\ngoodput on loopback, one process (1100-byte frames, as fast as each takes them; median over rounds)"
    );
    println!(
        "{:<15} {:>10} {:>10} {:>10} {:>10}",
        "contender", "Mbit/s", "/ quinn", "/ raw udp", "dropped"
    );
    let quinn = goodput
        .get(&Contender::QuinnDatagram)
        .map_or(0.0, |v| median_mbps(v));
    let raw = goodput
        .get(&Contender::RawUdp)
        .map_or(0.0, |v| median_mbps(v));
    for (c, v) in &goodput {
        let m = median_mbps(v);
        let dropped: u64 = v.iter().map(|g| g.sent - g.received).sum();
        println!(
            "{:<15} {:>10.1} {:>10.2} {:>10.2} {:>10}",
            c.name(),
            m,
            m / quinn.max(1e-9),
            m / raw.max(1e-9),
            dropped
        );
    }
    if let Some(path) = args.json {
        let goodput_rows: Vec<_> = goodput
            .iter()
            .map(|(c, v)| {
                let m = median_mbps(v);
                serde_json::json!({
                    "case": "goodput", "processes": 1, "contender": c.name(),
                    "p50_us": null, "p90_us": null, "p99_us": null, "p999_us": null,
                    "max_us": null, "goodput_mbps": m,
                    "dropped": v.iter().map(|g| g.sent - g.received).sum::<u64>(),
                    "goodput_ratio_quinn": m / quinn.max(1e-9),
                    "goodput_ratio_raw_udp": m / raw.max(1e-9),
                })
            })
            .collect();
        let rows: Vec<_> = results
            .iter()
            .map(|((case, c), h)| {
                let s = h.summary();
                let (r50, r99) = ratios(&per_round, *case, *c, Contender::QuinnDatagram)
                    .unwrap_or((f64::NAN, f64::NAN));
                let (u50, u99) = ratios(&per_round, *case, *c, Contender::RawUdp)
                    .unwrap_or((f64::NAN, f64::NAN));
                let dropped = expected
                    .get(&(*case, *c))
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(s.count);
                serde_json::json!({
                    "case": case.name(), "processes": 1, "contender": c.name(),
                    "frames": s.count, "p50_us": s.p50, "p90_us": s.p90, "p99_us": s.p99,
                    "p999_us": s.p999, "max_us": s.max, "goodput_mbps": null,
                    "dropped": dropped,
                    "p50_ratio_quinn": r50, "p99_ratio_quinn": r99,
                    "p50_ratio_raw_udp": u50, "p99_ratio_raw_udp": u99,
                })
            })
            .chain(goodput_rows)
            .collect();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).unwrap(),
        )
        .unwrap();
        eprintln!("wrote {path}");
    }
}

/// Median over rounds of `contender / quinn_datagram` measured in the same round, for p50 and
/// p99: a round disturbed by the machine moves the median much less than the merged figures.
fn ratios(
    per_round: &BTreeMap<(Case, Contender), Vec<(u64, u64)>>,
    case: Case,
    c: Contender,
    baseline: Contender,
) -> Option<(f64, f64)> {
    let mine = per_round.get(&(case, c))?;
    let base = per_round.get(&(case, baseline))?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let pairs: Vec<_> = mine
        .iter()
        .zip(base)
        .filter(|(_, b)| b.0 > 0 && b.1 > 0)
        .collect();
    let p50 = median(pairs.iter().map(|(m, b)| m.0 as f64 / b.0 as f64).collect())?;
    let p99 = median(pairs.iter().map(|(m, b)| m.1 as f64 / b.1 as f64).collect())?;
    Some((p50, p99))
}

fn print_table(
    results: &BTreeMap<(Case, Contender), LatencyHistogram>,
    per_round: &BTreeMap<(Case, Contender), Vec<(u64, u64)>>,
) {
    println!(
        "\none-way delay on loopback, one process (µs, all rounds merged); ratios: median over rounds of contender / baseline in the same round (p50/p99)"
    );
    println!(
        "{:<6} {:<15} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11} {:>11}",
        "case", "contender", "frames", "p50", "p90", "p99", "p99.9", "max", "/ quinn", "/ raw udp"
    );
    let fmt =
        |r: Option<(f64, f64)>| r.map_or_else(|| "-".into(), |(a, b)| format!("{a:.2}/{b:.2}"));
    for ((case, c), h) in results {
        let s = h.summary();
        println!(
            "{:<6} {:<15} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>11} {:>11}",
            case.name(),
            c.name(),
            s.count,
            s.p50,
            s.p90,
            s.p99,
            s.p999,
            s.max,
            fmt(ratios(per_round, *case, *c, Contender::QuinnDatagram)),
            fmt(ratios(per_round, *case, *c, Contender::RawUdp)),
        );
    }
}

/// rtq through its real shells, in this process.
async fn rtq(case: Case, duration: Duration, compress: CompressLevel) -> LatencyHistogram {
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
    let addr = rx.local_addr().unwrap();
    let fp = rx.fingerprint().unwrap();
    let (_trigger, shutdown) = Shutdown::new();
    let server = tokio::spawn(rx.run(shutdown.clone()));
    let opts = SendOptions {
        connect: addr.to_string(),
        server_name: None,
        trust: Trust::Pin(fp),
        transport: TransportOptions::default(),
        session: SenderConfig {
            compress,
            ..Default::default()
        },
        source: SourceSpec::Synthetic(
            SourceKind::Fixed {
                fps: case.fps(),
                frame_size: case.frame_size(),
            },
            1,
        ),
        duration: Some(duration),
        connect_timeout: Duration::from_secs(5),
        status: false,
    };
    let out = rtq::net::sender::run(opts, shutdown).await.unwrap();
    assert_eq!(out.report.end, "complete");
    let mut outcomes = server.await.unwrap().unwrap();
    outcomes.pop().unwrap().delays.network
}

/// rtq's sessions (compression off) driven by loops as minimal as bare quinn's: no control
/// stream, no playout task. The difference to `quinn_datagram` is the cost of rtq's stages; the
/// difference to `rtq` is the cost of its shells.
async fn rtq_core(case: Case, duration: Duration) -> LatencyHistogram {
    use rtq::session::{ReceiverSession, SenderSession};
    let (server, addr, client_cfg, transport) = quinn_pair();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut rx =
            ReceiverSession::new(ReceiverConfig::default(), rtq::net::system_anchor(), now());
        while let Ok(d) = conn.read_datagram().await {
            rx.handle_datagram(now(), d);
        }
        rx.delays().network.clone()
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let cfg = SenderConfig {
        compress: CompressLevel::Off,
        ..Default::default()
    };
    let mut tx = SenderSession::new(cfg, rtq::net::system_anchor(), now());
    let mut source = SyntheticSource::new(
        SourceKind::Fixed {
            fps: case.fps(),
            frame_size: case.frame_size(),
        },
        1,
        now(),
    );
    let end = now() + duration;
    while source.next_due() < end {
        tokio::time::sleep_until(source.next_due().into()).await;
        let mut frame = source.poll(now()).unwrap();
        let t = now();
        frame.capture = t; // as the shell does: captured when handed to rtq
        tx.push_frame(t, frame).unwrap();
        let max = conn.max_datagram_size().unwrap();
        while let Some(d) = tx.poll_datagram(t, max) {
            conn.send_datagram_wait(d).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    receiver.await.unwrap()
}

/// A server endpoint, its address, and a client configuration that trusts it.
fn quinn_pair() -> (
    quinn::Endpoint,
    SocketAddr,
    quinn::ClientConfig,
    Arc<quinn::TransportConfig>,
) {
    let g = Identity::self_signed(&["localhost".into()]).unwrap();
    let fp = g.identity.fingerprint().unwrap();
    let mut server_cfg = server_config(g.identity).unwrap();
    let transport = Arc::new(transport_config(&TransportOptions::default()));
    // The same settings, and one unidirectional stream for `quinn_stream`.
    let mut server_transport = transport_config(&TransportOptions::default());
    server_transport.max_concurrent_uni_streams(1u32.into());
    server_cfg.transport_config(Arc::new(server_transport));
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    (
        server,
        addr,
        client_config(Trust::Pin(fp)).unwrap(),
        transport,
    )
}

/// A client endpoint connected to `addr` with `cfg` and `transport`.
async fn connect(
    mut cfg: quinn::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
    addr: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    cfg.transport_config(transport);
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = client
        .connect_with(cfg, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    (client, conn)
}

/// Bare quinn: each frame's fragments as datagrams with (frame id, fragment count, send time).
async fn bare_quinn(case: Case, duration: Duration) -> LatencyHistogram {
    let (server, addr, client_cfg, transport) = quinn_pair();
    let base = now();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut h = LatencyHistogram::default();
        let mut pending: BTreeMap<u64, u32> = BTreeMap::new();
        while let Ok(d) = conn.read_datagram().await {
            let id = u64::from_be_bytes(d[0..8].try_into().unwrap());
            let count = u32::from_be_bytes(d[8..12].try_into().unwrap());
            let sent = u64::from_be_bytes(d[12..20].try_into().unwrap());
            let got = pending.entry(id).or_insert(0);
            *got += 1;
            if *got == count {
                pending.remove(&id);
                let at = now().duration_since(base).as_nanos() as u64;
                h.record(((at - sent) / 1000) as i64);
            }
        }
        h
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let period = Duration::from_secs_f64(1.0 / case.fps());
    let start = now();
    let frames = (duration.as_secs_f64() * case.fps()) as u64;
    let payload = vec![0x5au8; case.frame_size()];
    for id in 0..frames {
        let due = start + period * id as u32;
        tokio::time::sleep_until(due.into()).await;
        let max = conn.max_datagram_size().unwrap();
        let room = max - 20;
        let count = case.frame_size().div_ceil(room) as u32;
        let sent = now().duration_since(base).as_nanos() as u64;
        for chunk in payload.chunks(room) {
            let mut d = BytesMut::with_capacity(20 + chunk.len());
            d.put_u64(id);
            d.put_u32(count);
            d.put_u64(sent);
            d.put_slice(chunk);
            let d: Bytes = d.freeze();
            conn.send_datagram_wait(d).await.unwrap();
        }
    }
    // Let the last frames arrive, then close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    receiver.await.unwrap()
}

/// The frame's header on the raw and bare-quinn contenders: (frame id, pieces, send time).
fn piece_header(id: u64, count: u32, sent: u64) -> BytesMut {
    let mut d = BytesMut::with_capacity(1500);
    d.put_u64(id);
    d.put_u32(count);
    d.put_u64(sent);
    d
}

/// Raw UDP on loopback: the floor every transport is measured against.
async fn raw_udp(case: Case, duration: Duration) -> LatencyHistogram {
    const PIECE: usize = 1200 - 20;
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = rx.local_addr().unwrap();
    let base = now();
    let frames = (duration.as_secs_f64() * case.fps()) as u64;
    let count = case.frame_size().div_ceil(PIECE) as u32;
    let receiver = tokio::spawn(async move {
        let mut h = LatencyHistogram::default();
        let mut pending: BTreeMap<u64, u32> = BTreeMap::new();
        let mut buf = vec![0u8; 65_536];
        let mut done = 0u64;
        // Ends when every frame is in, or when nothing has come for 200 ms (a loss on
        // loopback is possible when the socket buffer overflows; it shows as fewer frames).
        while done < frames {
            let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(200), rx.recv_from(&mut buf)).await
            else {
                break;
            };
            if n < 20 {
                continue;
            }
            let id = u64::from_be_bytes(buf[0..8].try_into().unwrap());
            let count = u32::from_be_bytes(buf[8..12].try_into().unwrap());
            let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap());
            let got = pending.entry(id).or_insert(0);
            *got += 1;
            if *got == count {
                pending.remove(&id);
                done += 1;
                let at = now().duration_since(base).as_nanos() as u64;
                h.record(((at - sent) / 1000) as i64);
            }
        }
        h
    });
    let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let period = Duration::from_secs_f64(1.0 / case.fps());
    let start = now();
    let payload = vec![0x5au8; case.frame_size()];
    for id in 0..frames {
        tokio::time::sleep_until((start + period * id as u32).into()).await;
        let sent = now().duration_since(base).as_nanos() as u64;
        for chunk in payload.chunks(PIECE) {
            let mut d = piece_header(id, count, sent);
            d.put_slice(chunk);
            tx.send_to(&d, addr).await.unwrap();
        }
    }
    receiver.await.unwrap()
}

/// Bare quinn with one reliable stream: each frame as (length u32, send time u64, payload).
async fn quinn_stream(case: Case, duration: Duration) -> LatencyHistogram {
    let (server, addr, client_cfg, transport) = quinn_pair();
    let base = now();
    let receiver = tokio::spawn(async move {
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
            let at = now().duration_since(base).as_nanos() as u64;
            h.record(((at - sent) / 1000) as i64);
        }
        h
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let mut send = conn.open_uni().await.unwrap();
    let period = Duration::from_secs_f64(1.0 / case.fps());
    let start = now();
    let frames = (duration.as_secs_f64() * case.fps()) as u64;
    let payload = vec![0x5au8; case.frame_size()];
    for id in 0..frames {
        tokio::time::sleep_until((start + period * id as u32).into()).await;
        let sent = now().duration_since(base).as_nanos() as u64;
        let mut d = BytesMut::with_capacity(12 + payload.len());
        d.put_u32(payload.len() as u32);
        d.put_u64(sent);
        d.put_slice(&payload);
        send.write_all(&d).await.unwrap();
    }
    send.finish().unwrap();
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    receiver.await.unwrap()
}

/// What a goodput run moved.
struct Goodput {
    /// Frames handed to the transport.
    sent: u64,
    /// Frames that arrived.
    received: u64,
    /// Payload bytes that arrived.
    bytes: u64,
    /// From the first send to the last arrival.
    elapsed: Duration,
}

impl Goodput {
    fn mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Payload of a goodput frame.
const GOODPUT_FRAME: usize = 1100;

/// Raw UDP as fast as `send_to` takes datagrams: the kernel drops what the receiver's socket
/// does not hold (counted).
async fn goodput_raw_udp(duration: Duration) -> Goodput {
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = rx.local_addr().unwrap();
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let (mut n, mut bytes, mut last) = (0u64, 0u64, now());
        while let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(200), rx.recv_from(&mut buf)).await
        {
            n += 1;
            bytes += len as u64;
            last = now();
        }
        (n, bytes, last)
    });
    let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let payload = vec![0x5au8; GOODPUT_FRAME];
    let start = now();
    let mut sent = 0u64;
    while now() < start + duration {
        tx.send_to(&payload, addr).await.unwrap();
        sent += 1;
    }
    let (received, bytes, last) = receiver.await.unwrap();
    Goodput {
        sent,
        received,
        bytes,
        elapsed: last.saturating_duration_since(start),
    }
}

/// Bare quinn datagrams with `send_datagram_wait`'s back-pressure.
async fn goodput_quinn_datagram(duration: Duration) -> Goodput {
    let (server, addr, client_cfg, transport) = quinn_pair();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut n, mut bytes, mut last) = (0u64, 0u64, now());
        while let Ok(d) = conn.read_datagram().await {
            n += 1;
            bytes += d.len() as u64;
            last = now();
        }
        (n, bytes, last)
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let payload = Bytes::from(vec![0x5au8; GOODPUT_FRAME]);
    let start = now();
    let mut sent = 0u64;
    while now() < start + duration {
        conn.send_datagram_wait(payload.clone()).await.unwrap();
        sent += 1;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    let (received, bytes, last) = receiver.await.unwrap();
    Goodput {
        sent,
        received,
        bytes,
        elapsed: last.saturating_duration_since(start),
    }
}

/// Bare quinn, one reliable stream: everything written arrives; goodput is what QUIC's flow
/// and congestion control let through.
async fn goodput_quinn_stream(duration: Duration) -> Goodput {
    let (server, addr, client_cfg, transport) = quinn_pair();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut recv = conn.accept_uni().await.unwrap();
        let (mut bytes, mut last) = (0u64, now());
        while let Ok(Some(c)) = recv.read_chunk(1 << 20, true).await {
            bytes += c.bytes.len() as u64;
            last = now();
        }
        (bytes / GOODPUT_FRAME as u64, bytes, last)
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let mut send = conn.open_uni().await.unwrap();
    let payload = vec![0x5au8; GOODPUT_FRAME];
    let start = now();
    let mut sent = 0u64;
    while now() < start + duration {
        send.write_all(&payload).await.unwrap();
        sent += 1;
    }
    send.finish().unwrap();
    let _ = send.stopped().await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    let (received, bytes, last) = receiver.await.unwrap();
    Goodput {
        sent,
        received,
        bytes,
        elapsed: last.saturating_duration_since(start),
    }
}

/// rtq's sessions (compression off) driven by a minimal loop with `send_datagram_wait`'s
/// back-pressure: frames are pushed while the sender's queue holds less than 64 KiB.
async fn goodput_rtq_core(duration: Duration) -> Goodput {
    use rtq::session::{ReceiverSession, SenderSession};
    use rtq::source::SourceFrame;
    let (server, addr, client_cfg, transport) = quinn_pair();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let mut rx =
            ReceiverSession::new(ReceiverConfig::default(), rtq::net::system_anchor(), now());
        let mut last = now();
        while let Ok(d) = conn.read_datagram().await {
            rx.handle_datagram(now(), d);
            last = now();
        }
        let st = rx.stats();
        (st.frames_complete, st.bytes_payload, last)
    });
    let (client, conn) = connect(client_cfg, transport, addr).await;
    let cfg = SenderConfig {
        compress: CompressLevel::Off,
        ..Default::default()
    };
    let mut tx = SenderSession::new(cfg, rtq::net::system_anchor(), now());
    let payload = Bytes::from(vec![0x5au8; GOODPUT_FRAME]);
    let start = now();
    let mut sent = 0u64;
    while now() < start + duration {
        let t = now();
        while tx.queued_bytes() < 64 * 1024 {
            let frame = SourceFrame {
                capture: t,
                keyframe: false,
                data: payload.clone(),
            };
            tx.push_frame(t, frame).unwrap();
            sent += 1;
        }
        let max = conn.max_datagram_size().unwrap();
        while let Some(d) = tx.poll_datagram(now(), max) {
            conn.send_datagram_wait(d).await.unwrap();
        }
    }
    // What is still queued goes out too.
    let max = conn.max_datagram_size().unwrap();
    while let Some(d) = tx.poll_datagram(now(), max) {
        conn.send_datagram_wait(d).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    let (received, bytes, last) = receiver.await.unwrap();
    // Frames the sender dropped (its deadline) never went out: the rest is what was sent.
    let dropped_by_sender = tx.stats().dropped.total;
    Goodput {
        sent: sent - dropped_by_sender.min(sent),
        received,
        bytes,
        elapsed: last.saturating_duration_since(start),
    }
}
