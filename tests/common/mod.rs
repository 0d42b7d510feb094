//! Helpers for tests that run the real binaries: start a process, watch its stderr for the
//! lines that say it is ready, and read the reports it writes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// How long a test waits for a process to say something before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running binary whose stderr lines arrive on a channel (and are kept for the failure
/// message).
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

pub fn send_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtq-send"))
}

pub fn recv_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtq-recv"))
}

impl Proc {
    /// Starts `cmd` with stderr captured line by line.
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no `{needle}` within {PATIENCE:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "process ended without `{needle}`; stderr:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for the process to exit (bounded); returns its status and all stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let deadline = rtq::net::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return (status, self.seen.join("\n"));
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
            if rtq::net::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {PATIENCE:?}; stderr:\n{}",
                    self.seen.join("\n")
                );
            }
        }
    }

    /// Sends a signal (SIGINT, SIGTERM) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver started on a free loopback port with a self-signed certificate.
pub struct Recv {
    pub proc: Proc,
    pub addr: String,
    pub fingerprint: String,
}

/// Starts `rtq-recv --listen 127.0.0.1:0 <args>` and waits until it listens.
pub fn start_receiver(args: &[&str]) -> Recv {
    let mut cmd = recv_bin();
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd);
    let (addr, fingerprint) = wait_listening(&mut proc);
    Recv {
        proc,
        addr,
        fingerprint,
    }
}

/// Waits for rtq-recv's `listening on ADDR (… SHA-256 FP)` line; returns the address and the
/// certificate fingerprint.
pub fn wait_listening(proc: &mut Proc) -> (String, String) {
    let line = proc.wait_for("listening on");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("address")
        .to_string();
    let fingerprint = line
        .split("SHA-256 ")
        .nth(1)
        .and_then(|s| s.strip_suffix(')'))
        .expect("fingerprint")
        .to_string();
    (addr, fingerprint)
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// `v[path]` as u64, with a clear failure.
pub fn num(v: &serde_json::Value, path: &str) -> u64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}
