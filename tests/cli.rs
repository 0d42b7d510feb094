//! Command-line behaviour: certificates, pinning, flags, errors that say what to do, several
//! senders at once, and Ctrl-C/SIGTERM flushing everything.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod common;

use common::*;
use std::process::Stdio;

fn sender(rx: &Recv, trust: &[&str], extra: &[&str]) -> (bool, String) {
    let mut cmd = send_bin();
    cmd.args([
        "--connect",
        &rx.addr,
        "--duration",
        "1s",
        "--quiet",
        "--connect-timeout",
        "5s",
    ])
    .args(trust)
    .args(extra);
    let (status, err) = Proc::spawn(cmd).finish();
    (status.success(), err)
}

#[test]
fn make_cert_then_verify_with_ca_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = recv_bin()
        .args(["--make-cert", certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SHA-256 fingerprint"), "{text}");
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let (ok, err) = sender(&rx, &["--ca", cert.to_str().unwrap()], &[]);
    assert!(ok, "verified by CA and IP 127.0.0.1:\n{err}");
    let (status, _) = rx.proc.finish();
    assert!(status.success());

    // The same certificate does not cover "example.org": refused, with the fix named.
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let (ok, err) = sender(
        &rx,
        &["--ca", cert.to_str().unwrap()],
        &["--server-name", "example.org"],
    );
    assert!(!ok);
    assert!(
        err.contains("does not cover") && err.contains("--server-name"),
        "{err}"
    );
    // ...and "localhost" is covered.
    let (ok, err) = sender(
        &rx,
        &["--ca", cert.to_str().unwrap()],
        &["--server-name", "localhost"],
    );
    assert!(ok, "{err}");
}

#[test]
fn wrong_or_missing_trust_is_refused_with_the_fix() {
    let rx = start_receiver(&["--quiet"]);
    // Wrong pin.
    let wrong = "00".repeat(32);
    let (ok, err) = sender(&rx, &["--cert-sha256", &wrong], &[]);
    assert!(!ok);
    assert!(err.contains("does not match --cert-sha256"), "{err}");
    // No trust flag: the system store does not know a self-signed certificate.
    let (ok, err) = sender(&rx, &[], &[]);
    assert!(!ok);
    assert!(err.contains("not trusted") && err.contains("--ca"), "{err}");
    // Another CA.
    let dir = tempfile::tempdir().unwrap();
    recv_bin()
        .args(["--make-cert", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let other = dir.path().join("cert.pem");
    let (ok, err) = sender(&rx, &["--ca", other.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(err.contains("not trusted"), "{err}");
    // --insecure works, and says how insecure it is.
    let (ok, err) = sender(&rx, &["--insecure"], &[]);
    assert!(ok, "{err}");
    assert!(err.contains("WARNING: --insecure"), "{err}");
}

#[test]
fn port_in_use_and_unreachable_receiver_are_one_line_errors() {
    let rx = start_receiver(&["--quiet"]);
    let out = recv_bin()
        .args(["--listen", &rx.addr, "--quiet"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port is in use"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A port nobody listens on (bound and released by this test).
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = send_bin()
        .args([
            "--connect",
            &free.to_string(),
            "--insecure",
            "--connect-timeout",
            "1s",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer within 1s"), "{err}");
}

#[test]
fn bad_flags_and_files_are_named() {
    let out = send_bin()
        .args(["--connect", "x:1", "--insecure", "--bitrate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("e.g. 2M"));
    let out = recv_bin()
        .args([
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read certificate file") && err.contains("--make-cert"),
        "{err}"
    );
    let out = send_bin()
        .args(["--connect", "nohost.invalid:4433", "--insecure"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));
    let out = send_bin()
        .args(["--loopback", "--input", "/nonexistent/in.ts"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open input"));
}

#[test]
fn one_receiver_serves_several_senders_and_sigint_flushes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rx.json");
    let out = dir.path().join("s{id}.bin");
    let rx = start_receiver(&[
        "--quiet",
        "--stats-json",
        json.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let senders: Vec<_> = (0..3)
        .map(|i| {
            let mut cmd = send_bin();
            cmd.args([
                "--connect",
                &rx.addr,
                "--cert-sha256",
                &rx.fingerprint,
                "--duration",
                "2s",
                "--quiet",
            ])
            .args([
                "--source",
                "fixed",
                "--frame-size",
                &(1000 + i * 100).to_string(),
                "--fps",
                "50",
            ]);
            Proc::spawn(cmd)
        })
        .collect();
    for s in senders {
        let (status, err) = s.finish();
        assert!(status.success(), "{err}");
    }
    rx.proc.signal("INT");
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "{err}");
    let v = read_json(&json);
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{v:#}");
    // Each session wrote its own frames, every one it played: 1000, 1100 or 1200 bytes each.
    let mut frame_sizes: Vec<u64> = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        // Loopback, but a loaded machine can make a frame or two late.
        let played = num(s, "frames.played");
        assert!(played >= 95, "{s:#}");
        assert_eq!(
            played + num(s, "frames.late") + num(s, "frames.lost"),
            100,
            "{s:#}"
        );
        let id = num(s, "id");
        assert_eq!(id, i as u64 + 1, "sessions in order of connection");
        let path = dir.path().join(format!("s{id}.bin"));
        let len = std::fs::metadata(&path).unwrap().len();
        let size = [1000, 1100, 1200]
            .into_iter()
            .find(|&k| len == played * k)
            .unwrap_or_else(|| panic!("s{id}.bin: {len} bytes for {played} frames played"));
        frame_sizes.push(size);
    }
    frame_sizes.sort();
    assert_eq!(frame_sizes, vec![1000, 1100, 1200]);
}

#[test]
fn sigint_mid_run_flushes_the_sender_summary_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let rx_json = dir.path().join("rx.json");
    let tx_json = dir.path().join("tx.json");
    let output = dir.path().join("out.bin");
    let rx = start_receiver(&[
        "--once",
        "--quiet",
        "--stats-json",
        rx_json.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let mut cmd = send_bin();
    cmd.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--stats-json",
        tx_json.to_str().unwrap(),
    ]);
    let mut tx = Proc::spawn(cmd);
    tx.wait_for("sent"); // the first status line: the stream is running
    tx.signal("INT");
    let (status, err) = tx.finish();
    assert!(status.success(), "{err}");
    assert!(err.contains("end-to-end"), "summary printed:\n{err}");
    let t = read_json(&tx_json);
    assert_eq!(t["end"], "shutdown");
    assert!(num(&t, "frames.sent") >= 25);
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "{err}");
    let r = read_json(&rx_json);
    let s = &r["sessions"][0];
    let played = num(s, "frames.played");
    assert!(
        played >= 25
            && played + num(s, "frames.lost") + num(s, "frames.late")
                == num(s, "frames.transmitted"),
        "{s:#}"
    );
    assert!(std::fs::metadata(&output).unwrap().len() > 0);
}

#[test]
fn sigterm_on_the_receiver_flushes_waiting_frames_and_ends_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let rx_json = dir.path().join("rx.json");
    let output = dir.path().join("out.bin");
    // A 2-second playout delay: when the signal comes, frames are waiting in the buffer.
    let rx = start_receiver(&[
        "--stats-json",
        rx_json.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--jitter",
        "fixed:2s",
    ]);
    let mut rx = rx;
    let mut cmd = send_bin();
    cmd.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--quiet",
    ])
    .args(["--source", "fixed", "--frame-size", "500", "--fps", "100"]);
    let tx = Proc::spawn(cmd);
    rx.proc.wait_for("played"); // the receiver's first status line
    rx.proc.signal("TERM");
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "{err}");
    let (status, err) = tx.finish();
    assert!(
        status.success(),
        "the sender ends cleanly when the receiver leaves:\n{err}"
    );
    let r = read_json(&rx_json);
    let s = &r["sessions"][0];
    assert_eq!(s["end"], "shutdown");
    let flushed = num(s, "jitter_buffer.flushed");
    assert!(
        flushed > 0,
        "frames waiting for playout were released, not lost: {s:#}"
    );
    let played = num(s, "frames.played");
    assert_eq!(
        std::fs::metadata(&output).unwrap().len(),
        played * 500,
        "every played frame is in the file"
    );
    // The sender's goodbye came after the receiver's: its counts still reached the report.
    let sent = num(s, "frames.sent");
    assert!(sent >= played, "{s:#}");
    assert_eq!(
        played + num(s, "frames.late") + num(s, "frames.lost"),
        num(s, "frames.transmitted"),
        "{s:#}"
    );
}

#[test]
fn sessions_past_the_limit_are_refused_with_the_reason() {
    let mut rx = start_receiver(&["--max-sessions", "1"]);
    let mut first = send_bin();
    first.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--quiet",
    ]);
    let first = Proc::spawn(first);
    rx.proc.wait_for("[s1"); // the first session's status line: it is being served
    let mut second = send_bin();
    second.args([
        "--connect",
        &rx.addr,
        "--cert-sha256",
        &rx.fingerprint,
        "--quiet",
        "--duration",
        "1s",
    ]);
    let (status, err) = Proc::spawn(second).finish();
    assert!(!status.success());
    assert!(
        err.contains("limit of 1 sessions") && err.contains("--max-sessions"),
        "{err}"
    );
    first.signal("INT");
    let (status, err) = first.finish();
    assert!(status.success(), "{err}");
}

#[test]
fn help_lists_the_documented_flags() {
    let out = send_bin()
        .arg("--help")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--connect",
        "--ca",
        "--cert-sha256",
        "--insecure",
        "--server-name",
        "--duration",
        "--source",
        "--fps",
        "--bitrate",
        "--keyframe-interval",
        "--frame-size",
        "--input",
        "--compress",
        "--deadline",
        "--congestion",
        "--stats-json",
        "--hist-out",
        "--quiet",
        "--loopback",
        "--transport",
        "--pacing",
        "--reconnect",
        "--reconnect-backoff",
        "--reconnect-timeout",
    ] {
        assert!(help.contains(flag), "rtq-send --help lacks {flag}");
    }
    let out = recv_bin()
        .arg("--help")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--cert",
        "--key",
        "--make-cert",
        "--name",
        "--output",
        "--once",
        "--jitter",
        "--max-delay",
        "--clock",
        "--max-sessions",
        "--fec",
        "--nack",
        "--congestion",
        "--stats-json",
        "--hist-out",
        "--quiet",
    ] {
        assert!(help.contains(flag), "rtq-recv --help lacks {flag}");
    }
}

#[test]
fn recovery_and_adaptation_flags_are_checked_before_connecting() {
    for (args, expect) in [
        (&["--adapt", "--source", "audio"][..], "--adapt needs"),
        (&["--fec", "lots"][..], "--fec"),
        (&["--fec", "500%"][..], "out of range"),
        (&["--nack", "maybe"][..], "use on or off"),
        (&["--transport", "tcp"][..], "datagram, stream"),
        (
            &["--transport", "stream", "--fec", "25%"][..],
            "does not apply to --transport stream",
        ),
    ] {
        let out = send_bin()
            .args(["--connect", "127.0.0.1:9", "--insecure", "--quiet"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    // And the good spellings are taken: the sender gets as far as connecting (to nobody).
    let out = send_bin()
        .args(["--connect", "127.0.0.1:9", "--insecure", "--quiet"])
        .args([
            "--nack",
            "off",
            "--fec",
            "25%",
            "--adapt",
            "--connect-timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot connect") || err.contains("no answer"),
        "{err}"
    );
    let out = recv_bin().args(["--nack", "maybe"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("use on or off"));
    let out = recv_bin().args(["--fec", "25%"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("possible values: auto, off"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_sender_reconnects_to_a_restarted_receiver_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = recv_bin()
        .args(["--make-cert", certs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(made.status.success());
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let receiver = |listen: &str, json: &std::path::Path| {
        let mut cmd = recv_bin();
        cmd.args(["--listen", listen, "--once"])
            .args([
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ])
            .args(["--stats-json", json.to_str().unwrap()])
            .stdout(std::process::Stdio::null());
        let mut p = Proc::spawn(cmd);
        let (addr, fingerprint) = wait_listening(&mut p);
        (p, addr, fingerprint)
    };
    let (mut rx1, addr, fingerprint) = receiver("127.0.0.1:0", &dir.path().join("rx1.json"));
    let tx_json = dir.path().join("tx.json");
    let mut cmd = send_bin();
    cmd.args(["--connect", &addr, "--cert-sha256", &fingerprint])
        .args(["--source", "fixed", "--frame-size", "500", "--fps", "100"])
        .args(["--reconnect-backoff", "200ms"])
        .args(["--stats-json", tx_json.to_str().unwrap()]);
    let mut tx = Proc::spawn(cmd);
    rx1.wait_for("played"); // frames flow to the first receiver
    // The receiver dies without a word (as in a crash or a reboot) and comes back on the same
    // address with the same certificate. Its stateless-reset key comes from the certificate's
    // key, so it answers the old connection's packets with a reset the sender recognises: the
    // sender learns at once, not after its 10 s idle timeout.
    rx1.child.kill().unwrap();
    rx1.child.wait().unwrap();
    let rx2_json = dir.path().join("rx2.json");
    let (mut rx2, _, _) = receiver(&addr, &rx2_json);
    let lost = tx.wait_for("connection lost");
    assert!(lost.contains("reset the connection"), "{lost}");
    tx.wait_for("reconnected after");
    rx2.wait_for("played"); // the stream goes on into the new receiver
    tx.signal("INT");
    let (status, err) = tx.finish();
    assert!(status.success(), "{err}");
    let (status, err) = rx2.finish();
    assert!(status.success(), "{err}");
    let s = read_json(&tx_json);
    let s = &s;
    assert_eq!(num(s, "reconnects"), 1, "{s:#}");
    assert_eq!(s["end"], "shutdown", "{s:#}");
    let r = read_json(&rx2_json);
    let r = &r["sessions"][0];
    let played_by_second = num(r, "frames.played");
    assert!(played_by_second > 0, "{r:#}");
    // The sender's report adds the first receiver's last report to the second's goodbye.
    assert!(num(s, "frames.played") > played_by_second, "{s:#}");
}

#[test]
fn a_receiver_with_a_token_admits_only_senders_that_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "c2hhcmVkIHNlY3JldCBmb3IgcnRx\n").unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "bm90IHRoZSBzYW1lIHNlY3JldCBhdCBhbGw=\n").unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "1234\n").unwrap();
    let json = dir.path().join("rx.json");
    let rx = start_receiver(&[
        "--quiet",
        "--token-file",
        token.to_str().unwrap(),
        "--stats-json",
        json.to_str().unwrap(),
    ]);
    let send = |extra: &[&str]| {
        send_bin()
            .args([
                "--connect",
                &rx.addr,
                "--cert-sha256",
                &rx.fingerprint,
                "--duration",
                "1s",
                "--quiet",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    // Without the token, and with another one: refused, with the reason, and no reconnecting.
    for (extra, why) in [
        (vec![], "pass rtq-send --token-file"),
        (vec!["--token-file", other.to_str().unwrap()], "wrong token"),
    ] {
        let out = send(&extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("refused") && err.contains(why), "{err}");
    }
    // With it: the stream goes through.
    let out = send(&["--token-file", token.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // A token too short to be a secret is refused by either tool before anything starts.
    let out = recv_bin()
        .args(["--token-file", short.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("16 to 256 bytes"),
        "{err}"
    );

    rx.proc.signal("INT");
    let (status, err) = rx.proc.finish();
    assert!(status.success(), "{err}");
    let v = read_json(&json);
    let ends: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["end"].as_str().unwrap())
        .collect();
    assert_eq!(ends.len(), 3, "{ends:?}");
    assert_eq!(
        ends.iter().filter(|e| **e == "complete").count(),
        1,
        "{ends:?}"
    );
}
