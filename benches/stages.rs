//! Criterion micro-benchmarks of each stage, with throughput, so that a regression in one stage
//! shows up on its own: wire parse/emit, packetize, reassemble (in order, reordered, with loss),
//! compress/decompress (levels 1 and 6; incompressible, video-like and text-like frames), the
//! jitter buffer, and one sender→receiver session step.
//!
//! `cargo bench --bench stages` (`-- --quick` for a short run). `cargo test --benches` runs each
//! once, so that they never rot.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtq::compress::{CompressLevel, Compressor, Decompressor};
use rtq::jitter::{JitterBuffer, JitterConfig, JitterMode, ReadyFrame};
use rtq::packetize::{Fragments, WireFrame};
use rtq::reassemble::{Accepted, Reassembler};
use rtq::source::{SourceKind, SyntheticSource};
use rtq::wire::datagram::{FragmentHeader, FrameFlags, HEADER_LEN};

#[expect(
    clippy::disallowed_methods,
    reason = "a base instant for the benchmark's virtual times"
)]
fn base() -> Instant {
    Instant::now()
}

fn frame(seq: u64, body: Bytes) -> WireFrame {
    WireFrame {
        seq,
        capture_us: 1_700_000_000_000_000,
        flags: FrameFlags::empty(),
        payload_len: body.len() as u32,
        body,
    }
}

/// Frames of each kind of content.
fn contents(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let t0 = base();
    let video = SyntheticSource::new(
        SourceKind::Fixed {
            fps: 1.0,
            frame_size: len,
        },
        7,
        t0,
    )
    .poll(t0)
    .unwrap()
    .data
    .to_vec();
    let mut x = 0x9e3779b97f4a7c15u64;
    let noise: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let text: Vec<u8> =
        b"GET /live/stream.m3u8 HTTP/1.1 host: example.org accept: */* user-agent: rtq "
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect();
    vec![
        ("incompressible", noise),
        ("video_like", video),
        ("text_like", text),
    ]
}

fn wire(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let h = FragmentHeader {
        flags: FrameFlags::KEYFRAME,
        seq: 9,
        capture_us: 1,
        frame_len: 1000,
        payload_len: 1000,
        index: 0,
        count: 1,
    };
    let mut d = vec![0u8; HEADER_LEN + 1000];
    h.emit(&mut d).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| FragmentHeader::parse(black_box(&d)).unwrap())
    });
    let mut out = [0u8; HEADER_LEN];
    g.bench_function("emit", |b| b.iter(|| black_box(&h).emit(&mut out)));
    g.finish();
}

fn packetize(c: &mut Criterion) {
    let mut g = c.benchmark_group("packetize");
    for len in [1000usize, 50_000] {
        let f = frame(1, Bytes::from(vec![7u8; len]));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &f, |b, f| {
            b.iter(|| {
                Fragments::new(black_box(f), 1414)
                    .unwrap()
                    .for_each(|d| drop(black_box(d)))
            })
        });
    }
    g.finish();
}

fn reassemble(c: &mut Criterion) {
    let mut g = c.benchmark_group("reassemble");
    let now = base();
    let frames: Vec<Vec<Bytes>> = (0..32)
        .map(|s| {
            Fragments::new(&frame(s, Bytes::from(vec![1u8; 50_000])), 1414)
                .unwrap()
                .collect()
        })
        .collect();
    let total: usize = frames.iter().flatten().map(Bytes::len).sum();
    g.throughput(Throughput::Bytes(total as u64));
    let run = |order: &dyn Fn(&[Vec<Bytes>]) -> Vec<Bytes>| {
        let datagrams = order(&frames);
        move || {
            let mut r = Reassembler::default();
            let mut done = 0;
            for d in &datagrams {
                let (h, _) = FragmentHeader::parse(d).unwrap();
                if let Ok(Accepted::Complete { .. }) =
                    r.insert(now, h, d.slice(HEADER_LEN..), now + Duration::from_secs(1))
                {
                    done += 1;
                }
            }
            done
        }
    };
    let in_order = run(&|f| f.iter().flatten().cloned().collect());
    g.bench_function("in_order", |b| b.iter(&in_order));
    let reordered = run(&|f| {
        let mut v: Vec<Bytes> = f.iter().flatten().cloned().collect();
        for pair in v.chunks_mut(7) {
            pair.reverse();
        }
        v
    });
    g.bench_function("reordered", |b| b.iter(&reordered));
    let lossy = run(&|f| {
        f.iter()
            .flatten()
            .enumerate()
            .filter(|(i, _)| i % 50 != 0)
            .map(|(_, d)| d.clone())
            .collect()
    });
    g.bench_function("loss_2pct", |b| b.iter(&lossy));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compress");
    for (name, data) in contents(50_000).into_iter().chain(contents(1000)) {
        for level in [1u8, 6] {
            g.throughput(Throughput::Bytes(data.len() as u64));
            let id = BenchmarkId::new(format!("{name}/level{level}"), data.len());
            if name == "incompressible" {
                // A frame that does not shrink makes a compressor skip the next ones; a fresh
                // compressor per attempt measures the full attempt.
                g.bench_function(id, |b| {
                    b.iter_batched(
                        || Compressor::new(CompressLevel::Level(level)),
                        |mut c| c.compress(black_box(&data)),
                        BatchSize::SmallInput,
                    )
                });
            } else {
                // One compressor reused, as the sender does (its state is reset per frame).
                let mut c = Compressor::new(CompressLevel::Level(level));
                g.bench_function(id, |b| b.iter(|| c.compress(black_box(&data)).unwrap()));
            }
        }
    }
    g.finish();
    let mut g = c.benchmark_group("decompress");
    for (name, data) in contents(50_000).into_iter().chain(contents(1000)) {
        for level in [1u8, 6] {
            let Some(packed) = Compressor::new(CompressLevel::Level(level)).compress(&data) else {
                continue;
            };
            let mut d = Decompressor::default();
            g.throughput(Throughput::Bytes(data.len() as u64));
            g.bench_function(
                BenchmarkId::new(format!("{name}/level{level}"), data.len()),
                |b| b.iter(|| d.decompress(black_box(&packed), data.len()).unwrap()),
            );
        }
    }
    g.finish();
}

fn jitter(c: &mut Criterion) {
    let mut g = c.benchmark_group("jitter");
    g.throughput(Throughput::Elements(1000));
    for (name, mode) in [
        ("adaptive", JitterMode::Adaptive),
        ("fixed", JitterMode::Fixed(Duration::from_millis(50))),
    ] {
        g.bench_function(BenchmarkId::new("insert_release_1000", name), |b| {
            b.iter(|| {
                let mut jb = JitterBuffer::new(JitterConfig {
                    mode,
                    ..Default::default()
                });
                let mut played = 0;
                for seq in 0..1000u64 {
                    let capture = seq * 1000;
                    let arrive = capture + 300 + (seq * 7919) % 500;
                    let f = ReadyFrame {
                        seq,
                        capture_us: capture,
                        flags: FrameFlags::empty(),
                        data: Bytes::new(),
                        complete_us: arrive,
                        retransmitted: false,
                    };
                    jb.insert(arrive, f);
                    while jb.poll(arrive).is_some() {
                        played += 1;
                    }
                }
                played
            })
        });
    }
    g.finish();
}

fn session(c: &mut Criterion) {
    use rtq::clock::ClockAnchor;
    use rtq::session::{ReceiverConfig, ReceiverSession, SenderConfig, SenderSession};
    use rtq::source::SourceFrame;
    let mut g = c.benchmark_group("session");
    for len in [1000usize, 50_000] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("frame_through_both", len), |b| {
            let t0 = base();
            let anchor = ClockAnchor::new(t0, 1_700_000_000_000_000);
            let cfg = SenderConfig {
                compress: CompressLevel::Off,
                ..Default::default()
            };
            let mut tx = SenderSession::new(cfg, anchor, t0);
            let mut rx = ReceiverSession::new(ReceiverConfig::default(), anchor, t0);
            let data = Bytes::from(vec![3u8; len]);
            let mut i = 0u64;
            b.iter(|| {
                // One frame a millisecond of virtual time: push, cut, reassemble, buffer, play.
                i += 1;
                let now = t0 + Duration::from_millis(i);
                tx.push_frame(
                    now,
                    SourceFrame {
                        capture: now,
                        keyframe: false,
                        data: data.clone(),
                    },
                )
                .unwrap();
                while let Some(d) = tx.poll_datagram(now, 1414) {
                    rx.handle_datagram(now, d);
                }
                while rx.poll_frame(now + Duration::from_millis(30)).is_some() {}
            })
        });
    }
    g.finish();
}

/// Reed–Solomon parity for one 50 kB frame (36 fragments) at 10, 25 and 50 % overhead: making
/// it, and restoring the frame with as many fragments lost as there is parity.
fn fec(c: &mut Criterion) {
    use rtq::fec::{FecDecoder, FecLimits, encode};
    use rtq::wire::parity::{PARITY_HEADER_LEN, ParityHeader};
    let mut g = c.benchmark_group("fec");
    let sources: Vec<Bytes> = Fragments::new(&frame(7, Bytes::from(vec![3u8; 50_000])), 1414)
        .unwrap()
        .collect();
    let k = sources.len();
    let bytes: usize = sources.iter().map(Bytes::len).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    for pct in [10usize, 25, 50] {
        let m = (k * pct).div_ceil(100) as u16;
        g.bench_with_input(
            BenchmarkId::new("encode", format!("{pct}%")),
            &m,
            |b, &m| {
                b.iter(|| encode(black_box(&sources), 7, 1, m).unwrap());
            },
        );
        let parity = encode(&sources, 7, 1, m).unwrap();
        g.bench_with_input(
            BenchmarkId::new("decode", format!("{pct}%")),
            &m,
            |b, &m| {
                b.iter(|| {
                    let mut dec = FecDecoder::new(FecLimits::default());
                    // The first m fragments lost; the rest and all the parity arrive.
                    for d in &sources[usize::from(m)..] {
                        let (h, _) = FragmentHeader::parse(d).unwrap();
                        dec.on_fragment(&h, d.clone());
                    }
                    let mut restored = 0;
                    for p in &parity {
                        let (h, _) = ParityHeader::parse(p).unwrap();
                        restored += dec.on_parity(&h, p.slice(PARITY_HEADER_LEN..)).len();
                    }
                    assert_eq!(restored, usize::from(m));
                    restored
                });
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    wire,
    packetize,
    reassemble,
    fec,
    compression,
    jitter,
    session
);
criterion_main!(benches);
