//! `rtq-recv`: receives rtq sessions, plays their frames out of a jitter buffer, and reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use super::{ReportArgs, TransportArgs, duration_arg, on_off_arg, size_arg};
use crate::jitter::{JitterConfig, JitterMode};
use crate::net::io::Stream;
use crate::net::receiver::{ClockChoice, Receiver, RecvOptions, SessionOutcome};
use crate::net::tls::{DEFAULT_NAMES, Identity, make_cert};
use crate::net::{Shutdown, trigger_on_signals};
use crate::reassemble::ReassemblyLimits;
use crate::session::ReceiverConfig;
use crate::stats::Delays;

/// `rtq-recv --fec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecvFec {
    /// Take the parity the sender sends.
    Auto,
    /// Ask for none.
    Off,
}

/// Receive live frames over QUIC datagrams and play them out at a steady delay.
///
/// Without --cert/--key, a self-signed certificate is made for this run, and the command line
/// that pins it is printed. Status lines and summaries go to stderr.
#[derive(Debug, Parser)]
#[command(name = "rtq-recv", version, after_help = AFTER_HELP)]
pub struct RecvArgs {
    /// Address and UDP port to listen on.
    #[arg(long, default_value = "0.0.0.0:4433", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Certificate chain to present (PEM); needs --key.
    #[arg(long, requires = "key", value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, requires = "cert", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// Write a development cert.pem and key.pem into DIR and exit (the usual DIR is certs).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key", "output", "once"])]
    pub make_cert: Option<PathBuf>,
    /// Names (DNS or IP) the generated certificate covers [default: localhost 127.0.0.1 ::1].
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Write played frames, in order, to a file or - for stdout ({id} in a path: one file per
    /// session); without it frames are discarded.
    #[arg(long, value_name = "PATH|-")]
    pub output: Option<Stream>,
    /// Exit after the first session ends.
    #[arg(long)]
    pub once: bool,
    /// Playout delay: `adaptive` follows the network's delay; `fixed:50ms` plays every frame
    /// 50 ms after capture.
    #[arg(long, default_value = "adaptive", value_name = "MODE")]
    pub jitter: JitterMode,
    /// Longest playout delay; frames that need more are late.
    #[arg(long, value_parser = duration_arg, default_value = "2s", value_name = "DURATION")]
    pub max_delay: Duration,
    /// Adaptive playout: a frame that completes after its playout time, before any later
    /// frame has played (a scheduling hiccup, a delay spike, a repaired burst), raises the
    /// delay to play it when it needs at most this much more: a short stall instead of a
    /// lost frame. `0ms`: never (a retransmitted frame may still wait one recovery round).
    #[arg(long, value_parser = duration_arg, default_value = "50ms", value_name = "DURATION")]
    pub max_stall: Duration,
    /// Forward error correction: `auto` takes the parity the sender chooses to send (its
    /// `--fec` sets how much); `off` asks it for none (in the hello) and drops any that comes.
    #[arg(long, value_enum, default_value_t = RecvFec::Auto, value_name = "auto|off")]
    pub fec: RecvFec,
    /// Ask the sender to send lost fragments again when they can still arrive before their
    /// frame plays; the adaptive playout delay then keeps a round trip of room for it.
    #[arg(long, value_parser = on_off_arg, action = clap::ArgAction::Set, default_value = "on", value_name = "on|off")]
    pub nack: bool,
    /// How sender timestamps map onto this clock: `auto` trusts the clock for senders on this
    /// host and estimates the offset for others.
    #[arg(long, value_enum, default_value_t = ClockChoice::Auto)]
    pub clock: ClockChoice,
    /// Sessions served at once; more are refused.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_sessions: usize,
    /// Largest frame accepted (also the decompression limit).
    #[arg(long, value_parser = size_arg, default_value = "16MiB", value_name = "BYTES")]
    pub max_frame_size: u64,
    /// Partial frames one session holds while their fragments arrive; a new frame past it
    /// evicts the oldest (counted in `reassembly.evicted`).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_partial_frames: usize,
    /// Memory one session's partial frames may take; a new frame past it evicts the oldest
    /// (counted). Must be at least --max-frame-size.
    #[arg(long, value_parser = size_arg, default_value = "64MiB", value_name = "BYTES")]
    pub max_partial_bytes: u64,
    /// Largest control message accepted from a sender (1 KiB to 64 KiB); a larger one is
    /// skipped as its bytes arrive, never buffered, and counted (`control_errors.oversized`).
    #[arg(long, value_parser = size_arg, default_value = "4KiB", value_name = "BYTES")]
    pub max_control_message: u64,
    /// Admit only senders that show the shared secret in this file (16 to 256 bytes; give
    /// rtq-send the same file); others are refused with a reason.
    #[arg(long, value_parser = super::token_file_arg, value_name = "PATH")]
    pub token_file: Option<crate::wire::control::Token>,
    /// Transport settings.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Reports.
    #[command(flatten)]
    pub report: ReportArgs,
}

const AFTER_HELP: &str = "\
Examples:
  rtq-recv --listen 127.0.0.1:4433                 # self-signed; prints the rtq-send command
  rtq-recv --make-cert certs                       # writes certs/cert.pem and certs/key.pem
  rtq-recv --cert certs/cert.pem --key certs/key.pem --output - | ffplay -
  rtq-recv --cert certs/cert.pem --key certs/key.pem --output udp://127.0.0.1:6000   # gateway

The JSON report (--stats-json) is {\"sessions\": [report, ...]}; see README.md for its keys.";

/// Bounds of `--max-control-message`: rtq's own largest message (a full NACK) fits in 1 KiB;
/// the wire's length field stops at 64 KiB.
const MIN_CONTROL_MESSAGE: usize = 1024;
const MAX_CONTROL_MESSAGE: usize = crate::wire::control::MAX_BODY_LEN + 1;

impl RecvArgs {
    /// The session configuration these flags select.
    pub fn session_config(&self) -> Result<ReceiverConfig, String> {
        let max_frame_bytes = u32::try_from(self.max_frame_size)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                format!(
                    "--max-frame-size {}: use 1 byte to 4 GiB",
                    self.max_frame_size
                )
            })?;
        let cfg = ReceiverConfig {
            jitter: JitterConfig {
                mode: self.jitter,
                max_delay: self.max_delay,
                max_stall: self.max_stall,
                ..Default::default()
            },
            reassembly: ReassemblyLimits {
                max_frame_bytes,
                max_frames: self.max_partial_frames,
                max_bytes: usize::try_from(self.max_partial_bytes).unwrap_or(usize::MAX),
                ..Default::default()
            },
            max_control_message: usize::try_from(self.max_control_message)
                .ok()
                .filter(|b| (MIN_CONTROL_MESSAGE..=MAX_CONTROL_MESSAGE).contains(b))
                .ok_or_else(|| {
                    format!(
                        "--max-control-message {}: use 1KiB to 64KiB",
                        self.max_control_message
                    )
                })?,
            nack: self.nack,
            parity: self.fec == RecvFec::Auto,
            token: self.token_file.clone(),
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn names(&self) -> Vec<String> {
        if self.names.is_empty() {
            let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
            let ip = self.listen.ip();
            if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
            names
        } else {
            self.names.clone()
        }
    }
}

/// Entry point of `rtq-recv`.
pub fn main() -> ExitCode {
    let args = RecvArgs::parse();
    super::init_logging();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtq-recv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RecvArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.make_cert {
        let (cert, key, fp) = make_cert(dir, &args.names())?;
        println!("wrote {} and {}", cert.display(), key.display());
        println!("names: {}", args.names().join(", "));
        println!("SHA-256 fingerprint: {fp}");
        println!(
            "receiver: rtq-recv --cert {} --key {}",
            cert.display(),
            key.display()
        );
        println!(
            "sender:   rtq-send --connect HOST:4433 --ca {}",
            cert.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let session = args.session_config().map_err(anyhow::Error::msg)?;
    let transport = args.transport.options().map_err(anyhow::Error::msg)?;
    let (identity, generated) = match (&args.cert, &args.key) {
        (Some(c), Some(k)) => (Identity::load(c, k)?, false),
        _ => (Identity::self_signed(&args.names())?.identity, true),
    };
    let opts = RecvOptions {
        listen: args.listen,
        transport,
        session,
        clock: args.clock,
        output: args.output.clone(),
        once: args.once,
        max_sessions: args.max_sessions.max(1),
        status: !args.report.quiet,
        summaries: true,
    };
    let rt = super::runtime()?;
    let outcomes = rt.block_on(async {
        let receiver = Receiver::bind(opts, identity)?;
        let local = receiver.local_addr().context("reading the bound address")?;
        let fp = receiver
            .fingerprint()
            .map(|f| f.to_string())
            .unwrap_or_default();
        let kind = if generated {
            "self-signed certificate made for this run"
        } else {
            "certificate"
        };
        eprintln!("rtq-recv: listening on {local} ({kind}, SHA-256 {fp})");
        let host = if local.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port())
        } else {
            local
        };
        if generated {
            eprintln!("rtq-recv: send with: rtq-send --connect {host} --cert-sha256 {fp}");
        } else if let Some(c) = &args.cert {
            eprintln!(
                "rtq-recv: send with: rtq-send --connect {host} --ca {}",
                c.display()
            );
        }
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(trigger_on_signals(trigger));
        anyhow::Ok(receiver.run(shutdown).await?)
    })?;
    // Tasks blocked on stdio cannot be cancelled: do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    write_reports(&args.report, &outcomes)?;
    let failed = outcomes
        .iter()
        .any(|o| o.report.end.starts_with("protocol error"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes `--stats-json` and `--hist-out` for the receiver's sessions.
pub fn write_reports(args: &ReportArgs, outcomes: &[SessionOutcome]) -> anyhow::Result<()> {
    if let Some(path) = &args.stats_json {
        // In order of connection, each with its number (`--output`'s `{id}`).
        let mut sessions: Vec<(u64, serde_json::Value)> = outcomes
            .iter()
            .map(|o| {
                let mut v = serde_json::to_value(&o.report)?;
                if let Some(m) = v.as_object_mut() {
                    m.insert("id".into(), o.id.into());
                }
                Ok((o.id, v))
            })
            .collect::<Result<_, serde_json::Error>>()?;
        sessions.sort_by_key(|(id, _)| *id);
        let sessions: Vec<_> = sessions.into_iter().map(|(_, v)| v).collect();
        super::write_json(path, &serde_json::json!({ "sessions": sessions }))?;
    }
    if let Some(prefix) = &args.hist_out {
        let mut all = Delays::default();
        for o in outcomes {
            all.network.merge(&o.delays.network);
            all.jitter_buffer.merge(&o.delays.jitter_buffer);
            all.end_to_end.merge(&o.delays.end_to_end);
        }
        super::write_hgrm(prefix, "network", &all.network)?;
        super::write_hgrm(prefix, "jitter_buffer", &all.jitter_buffer)?;
        super::write_hgrm(prefix, "end_to_end", &all.end_to_end)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        RecvArgs::command().debug_assert();
    }

    #[test]
    fn bad_values_are_named() {
        let e = RecvArgs::try_parse_from(["rtq-recv", "--jitter", "bouncy"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("adaptive"), "{e}");
        let e = RecvArgs::try_parse_from(["rtq-recv", "--max-delay", "soon"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("40ms"), "{e}");
        let e = RecvArgs::try_parse_from(["rtq-recv", "--cert", "a.pem"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--key"), "{e}");
        let a = RecvArgs::try_parse_from(["rtq-recv", "--max-stall", "0ms"]).unwrap();
        assert_eq!(a.session_config().unwrap().jitter.max_stall, Duration::ZERO);
        let a = RecvArgs::try_parse_from(["rtq-recv", "--jitter", "fixed:5s"]).unwrap();
        assert!(a.session_config().unwrap_err().contains("--max-delay"));
    }

    #[test]
    fn memory_limits_reach_the_session_and_bad_ones_are_named() {
        let a = RecvArgs::try_parse_from([
            "rtq-recv",
            "--max-partial-frames",
            "32",
            "--max-partial-bytes",
            "2MiB",
            "--max-frame-size",
            "1MiB",
            "--max-control-message",
            "2KiB",
        ])
        .unwrap();
        let c = a.session_config().unwrap();
        assert_eq!(c.jitter.max_stall, JitterConfig::default().max_stall);
        assert_eq!(c.reassembly.max_frames, 32);
        assert_eq!(c.reassembly.max_bytes, 2 << 20);
        assert_eq!(c.reassembly.max_frame_bytes, 1 << 20);
        assert_eq!(c.max_control_message, 2048);
        let d = RecvArgs::try_parse_from(["rtq-recv"]).unwrap();
        assert_eq!(d.session_config().unwrap(), ReceiverConfig::default());

        let err = |args: &[&str]| {
            let mut all = vec!["rtq-recv"];
            all.extend_from_slice(args);
            RecvArgs::try_parse_from(all)
                .unwrap()
                .session_config()
                .unwrap_err()
        };
        let e = err(&["--max-partial-bytes", "1MiB"]);
        assert!(e.contains("--max-partial-bytes"), "{e}");
        let e = err(&["--max-partial-frames", "0"]);
        assert!(e.contains("--max-partial-frames"), "{e}");
        let e = err(&["--max-control-message", "100"]);
        assert!(e.contains("1KiB to 64KiB"), "{e}");
        let e = err(&["--max-control-message", "1MiB"]);
        assert!(e.contains("--max-control-message"), "{e}");
    }

    #[test]
    fn socket_buffer_reaches_the_transport_and_bad_sizes_are_named() {
        let a = RecvArgs::try_parse_from(["rtq-recv", "--socket-buffer", "8MiB"]).unwrap();
        assert_eq!(a.transport.options().unwrap().socket_buffer, 8 << 20);
        let d = RecvArgs::try_parse_from(["rtq-recv"]).unwrap();
        assert_eq!(
            d.transport.options().unwrap(),
            crate::net::transport::TransportOptions::default()
        );
        for bad in ["1KiB", "1GiB"] {
            let a = RecvArgs::try_parse_from(["rtq-recv", "--socket-buffer", bad]).unwrap();
            let e = a.transport.options().unwrap_err();
            assert!(e.contains("--socket-buffer") && e.contains("4MiB"), "{e}");
        }
    }

    #[test]
    fn token_files_are_trimmed_bounded_and_bad_ones_named() {
        use super::super::token_file_arg;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p.to_str().unwrap().to_string()
        };
        let t = token_file_arg(&write("ok", b"0123456789abcdef\r\n")).unwrap();
        assert_eq!(
            t.as_bytes(),
            b"0123456789abcdef",
            "trailing line break dropped"
        );
        let e = token_file_arg(&write("short", b"1234\n")).unwrap_err();
        assert!(
            e.contains("16 to 256 bytes") && e.contains("urandom"),
            "{e}"
        );
        let e = token_file_arg(&write("long", &[b'x'; 300])).unwrap_err();
        assert!(e.contains("300 bytes"), "{e}");
        // A file far larger than any token is read only as far as the bound.
        let e = token_file_arg(&write("huge", &vec![b'x'; 1 << 20])).unwrap_err();
        assert!(e.contains("1280 bytes"), "{e}");
        let e = token_file_arg(dir.path().join("missing").to_str().unwrap()).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn default_names_include_a_specific_listen_address() {
        let a = RecvArgs::try_parse_from(["rtq-recv", "--listen", "10.1.2.3:4433"]).unwrap();
        assert!(a.names().contains(&"10.1.2.3".to_string()));
        assert!(a.names().contains(&"localhost".to_string()));
    }
}
