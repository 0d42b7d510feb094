//! Two hosts: rtq-send and rtq-recv in network namespaces of their own, joined through a third
//! that runs `rtq-sim proxy`, by veth pairs with addresses of their own. Traffic crosses real
//! interfaces, routes and the kernel's UDP paths, not loopback.
//!
//! ```text
//!  [sender ns] 10.77.1.2 ──veth── 10.77.1.1 [proxy ns] 10.77.2.1 ──veth── 10.77.2.2 [receiver ns]
//!                                 rtq-sim proxy :5000 → 10.77.2.2:4433 (20 ms, 1 % loss)
//! ```
//!
//! Creating namespaces needs root (CAP_SYS_ADMIN) and `ip` (iproute2). Where the machine does
//! not allow it, the test says so on stderr and passes without running.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Proc, num, read_json, wait_listening};

/// The namespaces and links of one run, removed on drop (deleting a namespace deletes its end
/// of each veth pair, and with it the pair).
struct Hosts {
    names: [String; 3],
}

impl Hosts {
    const SENDER: usize = 0;
    const PROXY: usize = 1;
    const RECEIVER: usize = 2;

    /// Sets up the three namespaces, or says why it cannot.
    fn new() -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let names = ["s", "p", "r"].map(|n| format!("rtq{tag}{n}"));
        let hosts = Self { names };
        let [s, p, r] = &hosts.names;
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", p])?;
        ip(&["netns", "add", r])?;
        // Two veth pairs, each end moved into its namespace (names fit IFNAMSIZ).
        let (sv, ps, pr, rv) = (
            format!("rq{tag}a"),
            format!("rq{tag}b"),
            format!("rq{tag}c"),
            format!("rq{tag}d"),
        );
        ip(&[
            "link", "add", &sv, "netns", s, "type", "veth", "peer", "name", &ps, "netns", p,
        ])?;
        ip(&[
            "link", "add", &pr, "netns", p, "type", "veth", "peer", "name", &rv, "netns", r,
        ])?;
        for (ns, dev, addr) in [
            (s, &sv, "10.77.1.2/24"),
            (p, &ps, "10.77.1.1/24"),
            (p, &pr, "10.77.2.1/24"),
            (r, &rv, "10.77.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// `program args` inside namespace `i`.
    fn command(&self, i: usize, program: &PathBuf) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i]]).arg(program);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rtq-send")).with_file_name(name)
}

#[test]
fn sender_and_receiver_in_two_namespaces_through_a_proxy_in_a_third() {
    let sim = bin("rtq-sim");
    if !sim.exists() {
        eprintln!(
            "two_hosts: skipped: {} is not built (the workspace's tests build it: cargo test)",
            sim.display()
        );
        return;
    }
    let hosts = match Hosts::new() {
        Ok(h) => h,
        Err(why) => {
            eprintln!(
                "two_hosts: skipped: this machine does not let the test make network namespaces ({why}); run it as root with iproute2"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (rx_json, tx_json, proxy_json) = (
        dir.path().join("rx.json"),
        dir.path().join("tx.json"),
        dir.path().join("proxy.json"),
    );

    let mut rx = hosts.command(Hosts::RECEIVER, &bin("rtq-recv"));
    rx.args(["--listen", "10.77.2.2:4433", "--once", "--quiet"])
        .args(["--stats-json", rx_json.to_str().unwrap()])
        .stdout(Stdio::null());
    let mut rx = Proc::spawn(rx);
    let (_, fingerprint) = wait_listening(&mut rx);

    let mut proxy = hosts.command(Hosts::PROXY, &sim);
    proxy
        .args([
            "proxy",
            "--listen",
            "10.77.1.1:5000",
            "--to",
            "10.77.2.2:4433",
        ])
        .args(["--delay", "20ms", "--loss", "1%", "--seed", "3", "--quiet"])
        .args(["--stats-json", proxy_json.to_str().unwrap()]);
    let mut proxy = Proc::spawn(proxy);
    proxy.wait_for("relaying");

    let mut tx = hosts.command(Hosts::SENDER, &bin("rtq-send"));
    tx.args(["--connect", "10.77.1.1:5000", "--cert-sha256", &fingerprint])
        .args(["--duration", "3s", "--quiet"])
        .args(["--stats-json", tx_json.to_str().unwrap()]);
    let (status, err) = Proc::spawn(tx).finish();
    assert!(status.success(), "rtq-send:\n{err}");
    let (status, err) = rx.finish();
    assert!(status.success(), "rtq-recv:\n{err}");
    proxy.signal("INT");
    let (status, err) = proxy.finish();
    assert!(status.success(), "rtq-sim proxy:\n{err}");

    // The receiver saw the sender at the proxy's address on its own link: the datagrams
    // crossed both veth pairs.
    let r = read_json(&rx_json);
    let s = &r["sessions"][0];
    assert_eq!(s["end"], "complete", "{s:#}");
    assert!(
        s["peer"].as_str().unwrap().starts_with("10.77.2.1:"),
        "{}",
        s["peer"]
    );
    let sent = num(&read_json(&tx_json), "frames.sent");
    let played = num(s, "frames.played");
    assert!(sent >= 85, "{sent} frames in 3 s at 30 fps");
    eprintln!("two_hosts: receiver frames {:#}", s["frames"]);
    // Through 1 % loss, with the clock offset estimated from scratch (a sender on another
    // address): the first frames can come late while the playout delay settles.
    assert!(
        played * 100 >= sent * 95,
        "{played} of {sent} played through 1 % loss"
    );
    assert_eq!(
        played + num(s, "frames.late") + num(s, "frames.lost"),
        num(s, "frames.transmitted"),
        "{s:#}"
    );
    // The proxy's 20 ms is in the network delay the receiver measured (clocks synchronised
    // over the control stream, as between hosts).
    let p50 = num(s, "latency_us.network.p50");
    assert!((20_000..60_000).contains(&p50), "network p50 {p50} µs");
    let link = read_json(&proxy_json);
    assert!(num(&link["link"], "forward.delivered") > 100, "{link:#}");
    assert!(
        num(&link["link"], "forward.dropped_by.loss") > 0,
        "{link:#}"
    );
}
