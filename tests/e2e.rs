//! End to end over loopback: the real `rtq-recv` and `rtq-send` binaries as separate processes.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod common;

use common::*;
use std::process::Stdio;

/// A few seconds of the default video source: ≥ 99 % of frames played, plausible delays, and
/// both reports agree.
#[test]
fn video_session_between_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let rx_json = dir.path().join("rx.json");
    let tx_json = dir.path().join("tx.json");
    let hist = dir.path().join("h");
    // A fixed playout delay: this test is about the two processes, their reports and
    // histograms, not playout timing (on a loaded machine, scheduling stalls of debug builds
    // exceed what the adaptive playout stalls for: `--max-stall`).
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--jitter",
        "fixed:200ms",
        "--stats-json",
        rx_json.to_str().unwrap(),
        "--hist-out",
        hist.to_str().unwrap(),
    ]);
    let mut send = send_bin();
    send.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--duration",
        "3s",
        "--quiet",
    ])
    .args(["--stats-json", tx_json.to_str().unwrap()]);
    let (status, err) = Proc::spawn(send).finish();
    assert!(status.success(), "rtq-send failed:\n{err}");
    assert!(
        err.contains("end-to-end"),
        "the sender prints a summary:\n{err}"
    );
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "rtq-recv failed:\n{err}");

    let tx = read_json(&tx_json);
    let rxs = read_json(&rx_json);
    let sessions = rxs["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let r = &sessions[0];
    assert_eq!(r["role"], "receiver");
    assert_eq!(tx["role"], "sender");
    let sent = num(&tx, "frames.sent");
    assert!((85..=95).contains(&sent), "3 s at 30 fps: {sent}");
    assert_eq!(
        num(r, "frames.sent"),
        sent,
        "the receiver learns `sent` from the goodbye"
    );
    let played = num(r, "frames.played");
    assert!(played * 100 >= sent * 99, "played {played} of {sent}");
    assert_eq!(
        num(r, "quic.datagrams_unread"),
        0,
        "QUIC dropped none unread"
    );
    assert_eq!(
        num(r, "frames.played") + num(r, "frames.late") + num(r, "frames.lost"),
        num(r, "frames.transmitted")
    );
    assert_eq!(
        num(&tx, "frames.played"),
        played,
        "the sender learns the outcome from the goodbye"
    );
    for key in ["network", "jitter_buffer", "end_to_end"] {
        for field in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
            assert!(
                r["latency_us"][key][field].is_number(),
                "latency_us.{key}.{field}"
            );
        }
    }
    let net_p50 = num(r, "latency_us.network.p50");
    let e2e_p50 = num(r, "latency_us.end_to_end.p50");
    assert!(
        net_p50 > 0 && net_p50 < 50_000,
        "loopback network p50 {net_p50} µs"
    );
    assert!(
        e2e_p50 >= net_p50 && e2e_p50 < 500_000,
        "end-to-end p50 {e2e_p50} µs"
    );
    assert!(num(r, "bytes.payload") > 0 && num(r, "bytes.compressed") <= num(r, "bytes.payload"));
    assert!(
        num(&tx, "bytes.wire") >= num(&tx, "bytes.compressed"),
        "the wire carries at least the frames"
    );
    // One host: the clock-offset estimate lands within a few hundred microseconds of zero.
    let est = r["clock"]["estimated_offset_us"]
        .as_i64()
        .expect("estimate");
    assert!(est.abs() < 500, "estimated offset {est} µs");
    for name in ["network", "jitter_buffer", "end_to_end"] {
        let text = std::fs::read_to_string(format!("{}-{name}.hgrm", hist.display())).unwrap();
        assert!(text.contains("Total count"), "{name}.hgrm");
    }
}

/// Bytes in, same bytes out: a file through `--input` and `--output`, cut into frames as read.
#[test]
fn input_file_arrives_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let mut data = Vec::new();
    for i in 0u32..150_000 {
        data.extend_from_slice(
            &(i.wrapping_mul(2_654_435_761)).to_le_bytes()[..(i % 4 + 1) as usize],
        );
        if i % 7 == 0 {
            data.extend_from_slice(b"text-like content repeats ");
        }
    }
    std::fs::write(&input, &data).unwrap();
    // A generous fixed playout delay and deadline: this test is about integrity, not timing.
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--jitter",
        "fixed:1s",
        "--output",
        output.to_str().unwrap(),
    ]);
    let mut send = send_bin();
    send.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--quiet",
        "--deadline",
        "5s",
    ])
    .args(["--input", input.to_str().unwrap(), "--frame-size", "4000"]);
    let (status, err) = Proc::spawn(send).finish();
    assert!(status.success(), "rtq-send:\n{err}");
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "rtq-recv:\n{err}");
    let got = std::fs::read(&output).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "output differs from input");
}

/// Standard input to standard output, as in `ffmpeg … | rtq-send --input -` and
/// `rtq-recv --output - | ffplay -`.
#[test]
fn stdin_to_stdout() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut recv = recv_bin();
    recv.args([
        "--listen",
        "127.0.0.1:0",
        "--once",
        "--quiet",
        "--jitter",
        "fixed:1s",
        "--output",
        "-",
    ])
    .stdout(Stdio::piped());
    let mut rx = Proc::spawn(recv);
    let mut stdout = rx.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        out
    });
    let line = rx.wait_for("send with:");
    let args: Vec<&str> = line
        .split("send with: rtq-send ")
        .nth(1)
        .unwrap()
        .split(' ')
        .collect();
    let mut send = send_bin();
    send.args(&args)
        .args(["--quiet", "--deadline", "5s", "--input", "-"])
        .stdin(Stdio::piped());
    let mut cmd = send;
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = data.clone();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &feed).unwrap());
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rtq-send:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, err) = rx.finish();
    assert!(status.success(), "rtq-recv:\n{err}");
    let got = reader.join().unwrap();
    assert!(
        got == data,
        "stdout carried {} of {} bytes, or different ones",
        got.len(),
        data.len()
    );
}

/// `--transport stream`: each frame on its own QUIC stream between two processes; the file
/// arrives whole and both reports say how it travelled.
#[test]
fn stream_transport_carries_a_file_between_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let rx_json = dir.path().join("rx.json");
    let tx_json = dir.path().join("tx.json");
    let data: Vec<u8> = (0u32..400_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--jitter",
        "fixed:1s",
        "--output",
        output.to_str().unwrap(),
        "--stats-json",
        rx_json.to_str().unwrap(),
    ]);
    let mut send = send_bin();
    send.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--deadline",
        "5s",
        "--transport",
        "stream",
    ])
    .args(["--input", input.to_str().unwrap(), "--frame-size", "40000"])
    .args(["--stats-json", tx_json.to_str().unwrap()]);
    let (status, err) = Proc::spawn(send).finish();
    assert!(status.success(), "rtq-send:\n{err}");
    assert!(
        err.contains("one QUIC stream per frame"),
        "the summary names the transport:\n{err}"
    );
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "rtq-recv:\n{err}");
    let got = std::fs::read(&output).unwrap();
    assert!(got == data, "output differs from input");
    let tx = read_json(&tx_json);
    let rxs = read_json(&rx_json);
    let r = &rxs["sessions"][0];
    assert_eq!(tx["transport"], "stream");
    assert_eq!(r["transport"], "stream");
    // Frames of 40 kB: several records (fragments) per stream, none dropped.
    assert_eq!(num(r, "frames.played"), num(&tx, "frames.sent"));
    assert_eq!(num(r, "datagrams.dropped.total"), 0);
    assert_eq!(num(&tx, "recovery.parity_sent"), 0);
}

/// `rtq-recv --fec off`: the receiver's hello asks for no parity, and a sender set to send a
/// fixed overhead stops once it has the hello.
#[test]
fn a_receiver_with_fec_off_gets_no_parity() {
    let dir = tempfile::tempdir().unwrap();
    let tx_json = dir.path().join("tx.json");
    let rx = start_receiver(&["--once", "--quiet", "--fec", "off"]);
    let mut send = send_bin();
    send.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--duration",
        "2s",
        "--quiet",
        "--fec",
        "25%",
    ])
    .args(["--stats-json", tx_json.to_str().unwrap()]);
    let (status, err) = Proc::spawn(send).finish();
    assert!(status.success(), "rtq-send:\n{err}");
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "rtq-recv:\n{err}");
    let tx = read_json(&tx_json);
    assert_eq!(tx["recovery"]["fec_mode"], "off");
    // Only the parity of what left before the receiver's hello arrived (the first keyframe):
    // a small fraction of the 25 % asked for.
    let overhead = tx["recovery"]["fec_overhead_ratio"].as_f64().unwrap();
    assert!(overhead < 0.1, "{:#}", tx["recovery"]);
    assert!(num(&tx, "frames.played") >= 55, "{:#}", tx["frames"]);
}

/// Gateway mode: UDP datagrams in at the sender (`--input udp://`), the same datagrams out
/// of the receiver (`--output udp://`), one frame each, in order.
#[test]
fn udp_gateway_carries_each_datagram_as_a_frame() {
    use std::net::UdpSocket;
    let dir = tempfile::tempdir().unwrap();
    let tx_json = dir.path().join("tx.json");
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let sink_addr = format!("udp://{}", sink.local_addr().unwrap());
    // A fixed playout delay: this checks the gateway (one datagram a frame, in order, none
    // missing), not playout timing, which a loaded machine's scheduling stalls can upset.
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--jitter",
        "fixed:100ms",
        "--output",
        &sink_addr,
    ]);
    // A port for the sender's input: free now, bound by the sender below.
    let input = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut send = send_bin();
    send.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--input",
        &format!("udp://{input}"),
        "--stats-json",
        tx_json.to_str().unwrap(),
    ]);
    let mut tx = Proc::spawn(send);
    tx.wait_for("sent"); // the first status line: connected, the input bound
    let datagram = |i: u32| {
        let mut d = i.to_be_bytes().to_vec();
        d.resize(200 + (i as usize * 37) % 1200, (i % 251) as u8);
        d
    };
    const N: u32 = 300;
    // The sink reads as datagrams come (its socket buffer would not hold them all).
    let sink = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        // Until all came, or none for the read timeout (the check below says what was missed).
        while got.len() < N as usize {
            let Ok((n, _)) = sink.recv_from(&mut buf) else {
                break;
            };
            got.push(buf[..n].to_vec());
        }
        got
    });
    let source = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        source.send_to(&datagram(i), input).unwrap();
        // A live source's pace (about 1000 datagrams/s): a burst would only measure the
        // kernel's socket buffer.
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let got = sink.join().unwrap();
    tx.signal("INT");
    let (status, tx_err) = tx.finish();
    assert!(status.success(), "{tx_err}");
    let (status, rx_err) = rx.proc.finish();
    assert!(status.success(), "{rx_err}");
    assert_eq!(
        got.len(),
        N as usize,
        "the receiver forwards every datagram\nrtq-send:\n{tx_err}\nrtq-recv:\n{rx_err}"
    );
    for (i, d) in got.iter().enumerate() {
        assert!(
            *d == datagram(i as u32),
            "datagram {i} differs or is out of order"
        );
    }
    let t = read_json(&tx_json);
    assert_eq!(num(&t, "frames.sent"), u64::from(N));
}
