//! Bad input from an authenticated-but-hostile peer.
//!
//! A hostile sender: a quinn client that completes the handshake and then sends malformed and
//! forged datagrams, a decompression bomb, unknown and oversized control messages and thousands
//! of half-finished frames. The receiver counts each by reason, stays within its bounds, and a
//! well-behaved session beside it is unharmed.
//!
//! A hostile receiver: a quinn server that floods rtq-send with retransmission requests (for
//! every frame, for frames never sent, for absurd fragment ranges) and garbage datagrams. The
//! sender's retransmissions stay within their budget, every refusal is counted, and the stream
//! completes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rtq::compress::{CompressLevel, Compressor};
use rtq::jitter::{JitterConfig, JitterMode};
use rtq::net::Shutdown;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions, SessionOutcome};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::{Identity, Trust, client_config};
use rtq::net::transport::TransportOptions;
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::source::SourceKind;
use rtq::wire::VERSION;
use rtq::wire::control::{ControlDecoder, ControlMessage, Goodbye, Hello, Role};
use rtq::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN};

/// Capture time of the hostile frames: now (in the receiver's clock, as on one host).
fn capture_us() -> u64 {
    rtq::net::system_anchor().micros(rtq::net::now())
}

/// The hostile peer's hello, in `role`.
fn hello(role: Role) -> Vec<u8> {
    ControlMessage::Hello(Hello {
        version: VERSION,
        role,
        clock_us: capture_us(),
        max_frame_bytes: 1 << 20,
        software: "hostile".into(),
        no_parity: false,
        token: None,
    })
    .to_bytes()
}

fn fragment(h: FragmentHeader, body_len: usize) -> Bytes {
    let mut d = vec![0u8; HEADER_LEN + body_len];
    h.emit(&mut d).unwrap();
    Bytes::from(d)
}

fn header(seq: u64, frame_len: u32, index: u16, count: u16) -> FragmentHeader {
    FragmentHeader {
        flags: FrameFlags::empty(),
        seq,
        capture_us: capture_us(),
        frame_len,
        payload_len: frame_len,
        index,
        count,
    }
}

async fn start_receiver() -> (
    SocketAddr,
    rtq::net::ShutdownTrigger,
    tokio::task::JoinHandle<Vec<SessionOutcome>>,
) {
    let identity = Identity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let opts = RecvOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: TransportOptions::default(),
        // A fixed playout delay well above the scheduling stalls a loaded test machine adds
        // while the flood is read: the neighbour's frames are judged on arriving, not on the
        // machine's timing.
        session: ReceiverConfig {
            jitter: JitterConfig {
                mode: JitterMode::Fixed(Duration::from_millis(300)),
                ..Default::default()
            },
            ..Default::default()
        },
        clock: ClockChoice::Auto,
        output: None,
        once: false,
        max_sessions: 8,
        status: false,
        summaries: false,
    };
    let rx = Receiver::bind(opts, identity).unwrap();
    let addr = rx.local_addr().unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn(async move { rx.run(shutdown).await.unwrap() });
    (addr, trigger, task)
}

/// Runs the hostile client to the end of its session; returns its local address.
async fn hostile(addr: SocketAddr) -> SocketAddr {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // rtq's own transport settings: datagrams beyond a small send buffer wait in
    // `send_datagram_wait` instead of in QUIC, so the last frame leaves when it is stamped.
    let mut cfg = client_config(Trust::Insecure).unwrap();
    cfg.transport_config(std::sync::Arc::new(rtq::net::transport::transport_config(
        &TransportOptions::default(),
    )));
    let conn = endpoint
        .connect_with(cfg, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let local = endpoint.local_addr().unwrap();
    let (mut ctl, mut ctl_in) = conn.open_bi().await.unwrap();
    ctl.write_all(&hello(Role::Sender)).await.unwrap();

    // Frame streams with broken framing: an empty record, a record over the size limit, and a
    // stream that ends inside a record. Each is given up and counted once.
    for bytes in [
        &[0u8, 0][..],
        &[0xff, 0xff, 1, 2, 3][..],
        &[0x00, 0x40, 1, 2, 3][..],
    ] {
        let mut uni = conn.open_uni().await.unwrap();
        uni.write_all(bytes).await.unwrap();
        uni.finish().unwrap();
    }
    let send = |d: Bytes| conn.send_datagram_wait(d);
    // One of each malformation.
    send(Bytes::from_static(b"short")).await.unwrap(); // truncated
    let good = fragment(header(0, 100, 0, 1), 100);
    let mut d = good.to_vec();
    d[0] = 9;
    send(d.into()).await.unwrap(); // unknown version
    let mut d = good.to_vec();
    d[1] = 7;
    send(d.into()).await.unwrap(); // unknown type
    let mut d = good.to_vec();
    d[2] = 0x80;
    send(d.into()).await.unwrap(); // reserved flag
    let mut d = good.to_vec();
    d[28..30].copy_from_slice(&5u16.to_be_bytes());
    send(d.into()).await.unwrap(); // index past the count
    let mut d = good.to_vec();
    d.truncate(HEADER_LEN + 50);
    send(d.into()).await.unwrap(); // body shorter than the geometry says
    // An absurd size: a 20 MiB frame, over the receiver's 16 MiB limit.
    let h = header(1, 20 << 20, 0, 20_480); // 1 KiB fragments
    let body = h.range().len();
    send(fragment(h, body)).await.unwrap();
    // A decompression bomb: 1 MiB of zeros (one datagram of DEFLATE) claimed to be 1000 bytes.
    let bomb = Compressor::new(CompressLevel::Level(9))
        .compress(&vec![0u8; 1 << 20])
        .unwrap();
    assert!(
        bomb.len() + HEADER_LEN < 1100,
        "fits a first-flight datagram"
    );
    let h = FragmentHeader {
        flags: FrameFlags::COMPRESSED,
        seq: 2,
        capture_us: capture_us(),
        frame_len: bomb.len() as u32,
        payload_len: 1000,
        index: 0,
        count: 1,
    };
    let mut d = vec![0u8; HEADER_LEN];
    h.emit(&mut d).unwrap();
    d.extend_from_slice(&bomb);
    send(d.into()).await.unwrap();
    // Forged fragment counts: a 65535-byte frame in 65535 one-byte fragments, only one sent.
    send(fragment(header(3, 65_535, 0, 65_535), 1))
        .await
        .unwrap();
    // Thousands of half-finished frames.
    for seq in 10..2010 {
        send(fragment(header(seq, 2000, 0, 2), 1000)).await.unwrap();
    }
    // Unknown and oversized control messages.
    ctl.write_all(&[0x7f, 0, 3, 1, 2, 3]).await.unwrap();
    let mut big = vec![0x04, 0x27, 0x10];
    big.extend_from_slice(&[0u8; 10_000]);
    ctl.write_all(&big).await.unwrap();
    // Reads the receiver's control messages until one satisfies `done`.
    let mut dec = ControlDecoder::new(65_535);
    let mut until = async |done: &dyn Fn(&ControlMessage) -> bool| loop {
        while let Some(m) = dec.next_message() {
            if m.as_ref().is_ok_and(done) {
                return;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(30), ctl_in.read_chunk(65_536, true))
            .await
            .expect("the receiver answers within 30 s")
            .unwrap()
            .expect("the receiver says goodbye before closing its stream");
        dec.push(&chunk.bytes);
    };
    // The receiver's periodic report says when it has read the flood (a debug build on a busy
    // machine takes a while): the valid frame is stamped after that, so its playout time
    // measures the receiver's health, not the backlog.
    until(&|m| matches!(m, ControlMessage::Report(r) if r.fragments_received >= 2002)).await;
    send(fragment(header(2010, 100, 0, 1), 100)).await.unwrap();
    let bye = Goodbye {
        frames_sent: 2011,
        frames_transmitted: 2011,
        ..Default::default()
    };
    ctl.write_all(&ControlMessage::Goodbye(bye).to_bytes())
        .await
        .unwrap();
    // Wait for the receiver's goodbye, as a sender would.
    until(&|m| matches!(m, ControlMessage::Goodbye(_))).await;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_counted_bounded_and_harmless_to_neighbours() {
    let (addr, trigger, server) = start_receiver().await;

    let (_keep, never) = Shutdown::new();
    let good = tokio::spawn(rtq::net::sender::run(
        SendOptions {
            connect: addr.to_string(),
            server_name: None,
            trust: Trust::Insecure,
            transport: TransportOptions::default(),
            session: SenderConfig::default(),
            source: SourceSpec::Synthetic(
                SourceKind::Fixed {
                    fps: 100.0,
                    frame_size: 1200,
                },
                1,
            ),
            duration: Some(Duration::from_secs(3)),
            connect_timeout: Duration::from_secs(5),
            reconnect: Default::default(),
            status: false,
        },
        never,
    ));
    let hostile_addr = hostile(addr).await;
    let good = good.await.unwrap().unwrap();
    trigger.trigger();
    let outcomes = server.await.unwrap();
    assert_eq!(outcomes.len(), 2);

    let bad = outcomes
        .iter()
        .find(|o| o.report.peer == hostile_addr.to_string())
        .expect("hostile session");
    let r = &bad.report;
    let d = &r.datagrams.dropped;
    assert_eq!(d.truncated, 1, "{d:?}");
    assert_eq!(d.unknown_version, 1, "{d:?}");
    assert_eq!(d.unknown_type, 1, "{d:?}");
    assert_eq!(d.reserved_flags, 1, "{d:?}");
    assert_eq!(d.bad_geometry, 1, "{d:?}");
    assert_eq!(d.bad_length, 1, "{d:?}");
    assert_eq!(d.too_large, 1, "{d:?}");
    assert_eq!(d.decompress_failed, 1, "{d:?}");
    assert_eq!(d.bad_stream, 3, "{d:?}");
    assert_eq!(r.control_errors.unknown_type, 1);
    assert_eq!(r.control_errors.oversized, 1);
    let re = r.reassembly.expect("reassembly counters");
    assert!(
        re.evicted >= 1000,
        "half-finished frames beyond 256 are evicted: {re:?}"
    );
    assert_eq!(
        r.frames.played,
        1,
        "the one valid frame plays: {}",
        serde_json::to_string(r).unwrap()
    );
    assert_eq!(r.end, "complete");

    let ok = outcomes
        .iter()
        .find(|o| o.report.peer != hostile_addr.to_string())
        .unwrap();
    let f = &ok.report.frames;
    let sent = good.report.frames.sent;
    let json = serde_json::to_string(&ok.report).unwrap();
    assert!(sent >= 290, "{json}");
    assert_eq!(
        (f.received, f.lost),
        (sent, 0),
        "every frame arrives: {json}"
    );
    assert!(
        f.played * 100 >= sent * 99,
        "neighbour played {} of {sent}: {json}",
        f.played
    );
    // None of the hostile session's garbage is counted against the neighbour. (Duplicates
    // are not garbage: a copy answering a request can arrive beside a late original.)
    let d = &ok.report.datagrams.dropped;
    assert_eq!(d.total, d.duplicate, "{json}");
}

/// A receiver that answers rtq-send's hello, then asks for every frame again, many times over,
/// for each datagram it gets, with garbage besides; returns the datagrams it got and the
/// requests it made once the sender says goodbye.
async fn nack_flooder(endpoint: quinn::Endpoint) -> (u64, u64) {
    use rtq::wire::control::{MAX_NACK_ENTRIES, Nack, NackEntry};
    let conn = endpoint.accept().await.unwrap().await.unwrap();
    let (mut ctl, mut ctl_in) = conn.accept_bi().await.unwrap();
    ctl.write_all(&hello(Role::Receiver)).await.unwrap();
    let (mut got, mut asked, mut top) = (0u64, 0u64, 0u64);
    let mut dec = ControlDecoder::new(65_535);
    loop {
        tokio::select! {
            d = conn.read_datagram() => {
                let Ok(d) = d else { break };
                got += 1;
                if let Ok((h, _)) = FragmentHeader::parse(&d) {
                    top = top.max(h.seq);
                }
                // Ten requests of 64 entries for each datagram: whole frames seen, fragments
                // past any frame's end, and frames far beyond anything sent.
                for i in 0..10u64 {
                    let entries = (0..MAX_NACK_ENTRIES as u64)
                        .map(|j| NackEntry {
                            seq: match j % 4 {
                                0 => top + 1000 + i,
                                _ => top.saturating_sub((i * 64 + j) % 50),
                            },
                            first: (j % 5) as u16,
                            count: if j % 2 == 0 { 0 } else { u16::MAX },
                        })
                        .collect();
                    let nack = Nack { entries };
                    asked += MAX_NACK_ENTRIES as u64;
                    if i % 2 == 0 {
                        let _ = conn.send_datagram(rtq::wire::nack::encode(&nack));
                    } else {
                        ctl.write_all(&ControlMessage::Nack(nack).to_bytes()).await.unwrap();
                    }
                }
                let _ = conn.send_datagram(Bytes::from_static(b"\x01\x09garbage"));
            }
            chunk = ctl_in.read_chunk(65_536, true) => {
                let Some(chunk) = chunk.unwrap() else { break };
                dec.push(&chunk.bytes);
                let mut bye = false;
                while let Some(m) = dec.next_message() {
                    bye |= matches!(m, Ok(ControlMessage::Goodbye(_)));
                }
                if bye {
                    let g = Goodbye { frames_played: got, ..Default::default() };
                    ctl.write_all(&ControlMessage::Goodbye(g).to_bytes()).await.unwrap();
                    ctl.finish().unwrap();
                    break;
                }
            }
        }
    }
    conn.closed().await;
    (got, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_flooding_retransmission_requests_gets_bounded_copies_and_is_counted() {
    let identity = Identity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let mut server = rtq::net::tls::server_config(identity).unwrap();
    server.transport_config(std::sync::Arc::new(rtq::net::transport::transport_config(
        &TransportOptions::default(),
    )));
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let flooder = tokio::spawn(nack_flooder(endpoint));

    let (_keep, never) = Shutdown::new();
    let sent = rtq::net::sender::run(
        SendOptions {
            connect: addr.to_string(),
            server_name: None,
            trust: Trust::Insecure,
            transport: TransportOptions::default(),
            session: SenderConfig::default(),
            source: SourceSpec::Synthetic(
                SourceKind::Fixed {
                    fps: 100.0,
                    frame_size: 3000,
                },
                1,
            ),
            duration: Some(Duration::from_secs(2)),
            connect_timeout: Duration::from_secs(5),
            reconnect: Default::default(),
            status: false,
        },
        never,
    )
    .await
    .unwrap();
    let (got, asked) = flooder.await.unwrap();

    let r = &sent.report;
    eprintln!(
        "flood: {asked} requests for {got} datagrams; sender: {} datagrams, {:?}",
        r.datagrams.sent, r.recovery
    );
    assert_eq!(r.end, "complete", "{r:#?}");
    assert!(
        r.frames.sent >= 195,
        "the stream went on: {}",
        r.frames.sent
    );
    let rec = &r.recovery;
    assert!(
        rec.retransmit_requests >= asked / 2,
        "{} of {asked} requests counted",
        rec.retransmit_requests
    );
    // Copies stay within the budget: 64 KiB to start, then half the bytes of the original
    // fragment datagrams; at most three resends of any frame. Parity only for the first
    // frames, on the loss assumed until a report measures it (the flooder sends none): one
    // per frame of three fragments.
    assert!(
        rec.parity_sent <= rtq::fec::START_PARITY_FRAMES,
        "{} parities",
        rec.parity_sent
    );
    let original = r.datagrams.sent - rec.retransmitted - rec.parity_sent;
    let original_bytes = ((r.bytes.datagrams - rec.retransmitted_bytes) as f64
        / (1.0 + rec.fec_overhead_ratio)) as u64;
    assert!(
        rec.retransmitted_bytes <= 65_536 + original_bytes / 2,
        "{} copies ({} bytes) of {original} datagrams ({original_bytes} bytes)",
        rec.retransmitted,
        rec.retransmitted_bytes
    );
    assert!(rec.retransmitted <= 3 * original);
    assert!(
        rec.retransmitted > 0,
        "requests for real frames are answered"
    );
    assert!(rec.refused.invalid > 0, "frames never sent are refused");
    assert!(rec.refused.throttled > 0, "the rest is over budget");
    assert!(
        r.datagrams.dropped.total >= got / 2,
        "garbage counted: {:?}",
        r.datagrams.dropped
    );
}
