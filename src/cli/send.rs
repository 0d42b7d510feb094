//! `rtq-send`: streams live frames to an rtq receiver over QUIC datagrams.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::{ReportArgs, TransportArgs, duration_arg, on_off_arg, rate_arg, size_arg};
use crate::compress::CompressLevel;
use crate::fec::FecMode;
use crate::net::io::Stream;
use crate::net::receiver::{ClockChoice, Receiver, RecvOptions};
use crate::net::sender::{Reconnect, SendOptions, SourceSpec};
use crate::net::tls::{DEFAULT_NAMES, Identity, Trust, load_certs};
use crate::net::{Shutdown, trigger_on_signals};
use crate::session::{End, FrameTransport, ReceiverConfig, SenderConfig};
use crate::source::SourceKind;

/// Stream live frames to an rtq receiver over QUIC datagrams, with the lowest possible delay.
///
/// The receiver's certificate is checked with --ca, pinned with --cert-sha256, or checked
/// against the system's trust store; --insecure skips the check (tests only). Status lines and
/// the summary go to stderr.
#[derive(Debug, Parser)]
#[command(name = "rtq-send", version, after_help = AFTER_HELP)]
pub struct SendArgs {
    /// Receiver to connect to.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "loopback")]
    pub connect: Option<String>,
    /// Run a receiver in this process on 127.0.0.1 (a fresh certificate, pinned) and stream to
    /// it: a self-contained demonstration and measurement; --duration defaults to 10s.
    #[arg(long, conflicts_with_all = ["connect", "ca", "cert_sha256", "insecure", "server_name"])]
    pub loopback: bool,
    /// Name the receiver's certificate must cover [default: the host in --connect].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Trust receivers whose certificate is, or is signed by, one in this PEM file.
    #[arg(long, value_name = "PATH", group = "trust")]
    pub ca: Option<PathBuf>,
    /// Trust exactly the receiver certificate with this SHA-256 fingerprint (hex, colons
    /// optional, as rtq-recv and `openssl x509 -fingerprint -sha256` print it).
    #[arg(long, value_name = "HEX", group = "trust")]
    pub cert_sha256: Option<crate::net::tls::Fingerprint>,
    /// Do not check the receiver's certificate at all. For tests only: anyone on the path can
    /// impersonate the receiver.
    #[arg(long, group = "trust")]
    pub insecure: bool,
    /// Stop after this long [default: until the input ends or Ctrl-C; 10s with --loopback].
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Synthetic source: video-like frames, audio-like frames, or fixed-size frames.
    #[arg(long, value_enum, default_value_t = SourceChoice::Video, conflicts_with = "input")]
    pub source: SourceChoice,
    /// Frames per second (video, fixed).
    #[arg(long, default_value_t = 30.0, value_name = "N")]
    pub fps: f64,
    /// Average bit rate of the video source (2M, 2Mbit, 500k).
    #[arg(long, value_parser = rate_arg, default_value = "2M", value_name = "RATE")]
    pub bitrate: u64,
    /// A keyframe every N frames (video).
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub keyframe_interval: u32,
    /// Frame size: exact for --source fixed [default 1000]; the largest frame cut from --input
    /// [default 1316, seven MPEG-TS packets].
    #[arg(long, value_parser = size_arg, value_name = "BYTES")]
    pub frame_size: Option<u64>,
    /// Send a byte stream instead of a synthetic source: a file, or - for stdin, cut into
    /// frames as it arrives; or udp://HOST:PORT (gateway mode): each UDP datagram received
    /// there is a frame.
    #[arg(long, value_name = "PATH|-|udp://HOST:PORT")]
    pub input: Option<Stream>,
    /// Seed of the synthetic source's random sizes and bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compression: a DEFLATE level 0-9, or off. Frames that do not shrink are sent as they are.
    #[arg(long, default_value = "1", value_name = "0-9|off")]
    pub compress: CompressLevel,
    /// Forward error correction: `auto` (Reed-Solomon parity sized to the loss the receiver
    /// reports, and to 1 % for the first 64 frames until it has; at most 50 % overhead;
    /// `auto:30%` sets the cap), `off`, or a fixed overhead such as `25%`.
    #[arg(long, default_value = "auto", value_name = "auto|off|PERCENT")]
    pub fec: FecMode,
    /// Rate adaptation: the video source shrinks its frames when the path does not carry
    /// --bitrate (the sender backs up, drops frames, or the receiver reports congestive loss),
    /// and grows back when it does. Needs --source video.
    #[arg(long)]
    pub adapt: bool,
    /// Send again the fragments the receiver asks for, while their frames can still play.
    #[arg(long, value_parser = on_off_arg, action = clap::ArgAction::Set, default_value = "on", value_name = "on|off")]
    pub nack: bool,
    /// Pace datagrams at 1.25 × the rate the receiver measures the path delivering bursts at,
    /// once it has: a keyframe sent at once overflows a shallow bottleneck queue, which drops
    /// its tail. Off: each frame's datagrams go as fast as QUIC takes them. Datagram transport
    /// only (a frame stream is QUIC's to pace).
    #[arg(long, value_parser = on_off_arg, action = clap::ArgAction::Set, default_value = "on", value_name = "on|off")]
    pub pacing: bool,
    /// How frames travel: `datagram` (QUIC datagrams with FEC and retransmission within the
    /// deadline) or `stream` (each frame on its own QUIC stream, reset at --deadline; QUIC
    /// retransmits every loss, --fec and --nack do not apply): the reliable baseline, for
    /// comparisons.
    #[arg(
        long = "transport",
        default_value = "datagram",
        value_name = "datagram|stream"
    )]
    pub frame_transport: FrameTransport,
    /// Drop a frame not on the wire this long after capture, instead of sending it late.
    #[arg(long, value_parser = duration_arg, default_value = "500ms", value_name = "DURATION")]
    pub deadline: Duration,
    /// Give up connecting after this long.
    #[arg(long, value_parser = duration_arg, default_value = "5s", value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// When the connection is lost mid-session (the receiver restarted, the path went dark),
    /// carry the session on over a new one; frames keep coming and wait, within their
    /// deadline, meanwhile. A receiver that ends the session itself is not reconnected to.
    #[arg(long, value_parser = on_off_arg, action = clap::ArgAction::Set, default_value = "on", value_name = "on|off")]
    pub reconnect: bool,
    /// Longest wait between reconnection attempts (the first is at once, then 100 ms,
    /// doubling); a path that comes back is found within about this long.
    #[arg(long, value_parser = duration_arg, default_value = "1s", value_name = "DURATION")]
    pub reconnect_backoff: Duration,
    /// Give up reconnecting after this long without a connection.
    #[arg(long, value_parser = duration_arg, default_value = "5m", value_name = "DURATION")]
    pub reconnect_timeout: Duration,
    /// Show the receiver the shared secret in this file (16 to 256 bytes; a receiver started
    /// with --token-file admits only senders that show its token).
    #[arg(long, value_parser = super::token_file_arg, value_name = "PATH")]
    pub token_file: Option<crate::wire::control::Token>,
    /// Transport settings.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Reports.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// `--source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// Video-like: --fps, --bitrate, --keyframe-interval.
    Video,
    /// Audio-like: 50 frames/s of 160 bytes.
    Audio,
    /// Fixed-size: --frame-size at --fps.
    Fixed,
}

const AFTER_HELP: &str = "\
Examples:
  rtq-send --loopback                        # a whole session on this machine
  rtq-send --connect 127.0.0.1:4433 --ca certs/cert.pem --duration 10s
  rtq-send --connect 10.0.0.2:4433 --cert-sha256 AB:CD:...:EF \\
           --source fixed --frame-size 1000 --fps 1000
  ffmpeg -re -i in.mp4 -c copy -f mpegts - | \\
    rtq-send --connect 10.0.0.2:4433 --ca certs/cert.pem --input -
  rtq-send --connect 10.0.0.2:4433 --ca certs/cert.pem --input udp://:5000   # gateway

Status lines and the summary go to stderr; --stats-json writes the report (see README.md).";

/// Frame size cut from --input unless --frame-size says otherwise.
const INPUT_CHUNK: u64 = 1316;

impl SendArgs {
    /// The source these flags select.
    pub fn source(&self) -> Result<SourceSpec, String> {
        if let Some(input) = &self.input {
            let chunk = self.frame_size.unwrap_or(INPUT_CHUNK);
            if chunk == 0 || chunk > 16 << 20 {
                return Err(format!("--frame-size {chunk}: use 1 byte to 16 MiB"));
            }
            return Ok(SourceSpec::Input(input.clone(), chunk as usize));
        }
        let kind = match self.source {
            SourceChoice::Video => SourceKind::Video {
                fps: self.fps,
                bitrate: self.bitrate,
                keyframe_interval: self.keyframe_interval,
            },
            SourceChoice::Audio => SourceKind::Audio,
            SourceChoice::Fixed => SourceKind::Fixed {
                fps: self.fps,
                frame_size: usize::try_from(self.frame_size.unwrap_or(1000)).unwrap_or(usize::MAX),
            },
        };
        kind.validate().map_err(|e| {
            format!(
                "--source {}: {e}",
                clap::ValueEnum::to_possible_value(&self.source)
                    .map_or(String::new(), |v| v.get_name().to_string())
            )
        })?;
        Ok(SourceSpec::Synthetic(kind, self.seed))
    }

    /// The reconnection policy these flags select.
    pub fn reconnect_policy(&self) -> Result<Reconnect, String> {
        if self.reconnect_backoff < Duration::from_millis(10) {
            return Err(format!(
                "--reconnect-backoff {}: use at least 10ms",
                crate::units::format_duration(self.reconnect_backoff)
            ));
        }
        if self.reconnect_timeout.is_zero() {
            return Err("--reconnect-timeout 0: use --reconnect off to never reconnect".into());
        }
        Ok(Reconnect {
            enabled: self.reconnect,
            max_backoff: self.reconnect_backoff,
            give_up: self.reconnect_timeout,
        })
    }

    /// The session configuration these flags select.
    pub fn session_config(&self) -> Result<SenderConfig, String> {
        let adapt = match (self.adapt, self.source, &self.input) {
            (false, _, _) => None,
            (true, SourceChoice::Video, None) => Some(self.bitrate),
            (true, _, _) => {
                return Err(
                    "--adapt needs the synthetic video source (--source video, no --input): other sources cannot change their frame sizes"
                        .into(),
                );
            }
        };
        if self.frame_transport == FrameTransport::Stream && matches!(self.fec, FecMode::Fixed(_)) {
            return Err(
                "--fec PERCENT does not apply to --transport stream (QUIC retransmits stream data): drop one of the two"
                    .into(),
            );
        }
        let cfg = SenderConfig {
            transport: self.frame_transport,
            compress: self.compress,
            fec: self.fec,
            nack: self.nack,
            pacing: self.pacing,
            adapt,
            deadline: self.deadline,
            token: self.token_file.clone(),
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn trust(&self) -> anyhow::Result<Trust> {
        Ok(if let Some(fp) = self.cert_sha256 {
            Trust::Pin(fp)
        } else if let Some(ca) = &self.ca {
            Trust::Ca(load_certs(ca)?)
        } else if self.insecure {
            eprintln!(
                "rtq-send: WARNING: --insecure: the receiver's certificate is not checked; anyone on the path can read and alter this stream"
            );
            Trust::Insecure
        } else {
            Trust::System
        })
    }
}

/// Entry point of `rtq-send`.
pub fn main() -> ExitCode {
    let args = SendArgs::parse();
    super::init_logging();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtq-send: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let source = args.source().map_err(anyhow::Error::msg)?;
    let session = args.session_config().map_err(anyhow::Error::msg)?;
    let reconnect = args.reconnect_policy().map_err(anyhow::Error::msg)?;
    let transport = args.transport.options().map_err(anyhow::Error::msg)?;
    let rt = super::runtime()?;
    let result = rt.block_on(async move {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(trigger_on_signals(trigger));
        let mut opts = SendOptions {
            connect: args.connect.clone().unwrap_or_default(),
            server_name: args.server_name.clone(),
            trust: Trust::Insecure,
            transport,
            session,
            source,
            duration: args.duration,
            connect_timeout: args.connect_timeout,
            reconnect,
            status: !args.report.quiet,
        };
        let receiver = if args.loopback {
            let names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
            let identity = Identity::self_signed(&names)?.identity;
            let ropts = RecvOptions {
                listen: "127.0.0.1:0".parse()?,
                transport,
                session: ReceiverConfig {
                    token: args.token_file.clone(),
                    ..Default::default()
                },
                clock: ClockChoice::Auto,
                output: None,
                once: true,
                max_sessions: 1,
                status: false,
                summaries: true,
            };
            let rx = Receiver::bind(ropts, identity)?;
            let fp = rx
                .fingerprint()
                .ok_or_else(|| anyhow::anyhow!("generated certificate missing"))?;
            opts.connect = rx.local_addr()?.to_string();
            opts.trust = Trust::Pin(fp);
            opts.duration = opts.duration.or(Some(Duration::from_secs(10)));
            eprintln!(
                "rtq-send: loopback: receiver in this process on {}, certificate pinned",
                opts.connect
            );
            Some(tokio::spawn(rx.run(shutdown.clone())))
        } else {
            opts.trust = args.trust()?;
            None
        };
        let outcome = crate::net::sender::run(opts, shutdown).await;
        let rx_outcomes = match receiver {
            Some(task) => Some(task.await??),
            None => None,
        };
        let outcome = outcome?;
        let title = format!("rtq-send to {}", outcome.report.peer);
        eprint!("{}", crate::stats::text::summary(&title, &outcome.report));
        if let Some(path) = &args.report.stats_json {
            super::write_json(path, &outcome.report)?;
        }
        if let Some(prefix) = &args.report.hist_out {
            super::write_hgrm(prefix, "send", &outcome.send_delay)?;
            if let Some(rx) = &rx_outcomes {
                let rx_args = ReportArgs {
                    stats_json: None,
                    ..args.report.clone()
                };
                super::recv::write_reports(&rx_args, rx)?;
            }
        }
        let ok = matches!(
            outcome.report.end.as_str(),
            e if e == End::Complete.describe() || e == End::Shutdown.describe()
        );
        if !ok {
            eprintln!("rtq-send: session did not complete: {}", outcome.report.end);
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    });
    // A task blocked reading stdin cannot be cancelled: do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        SendArgs::command().debug_assert();
    }

    #[test]
    fn trust_flags_exclude_each_other() {
        let e =
            SendArgs::try_parse_from(["rtq-send", "--connect", "a:1", "--ca", "x", "--insecure"]);
        assert!(e.is_err());
        let e = SendArgs::try_parse_from(["rtq-send"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--connect"), "{e}");
        let e = SendArgs::try_parse_from(["rtq-send", "--connect", "a:1", "--cert-sha256", "12"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn sources_are_validated() {
        let a = SendArgs::try_parse_from(["rtq-send", "--loopback", "--fps", "0"]).unwrap();
        assert!(a.source().unwrap_err().contains("frame rate"));
        let a = SendArgs::try_parse_from(["rtq-send", "--loopback", "--input", "-"]).unwrap();
        assert!(matches!(
            a.source(),
            Ok(SourceSpec::Input(Stream::Std, 1316))
        ));
        let e = SendArgs::try_parse_from(["rtq-send", "--loopback", "--bitrate", "fast"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("2M"), "{e}");
        let a = SendArgs::try_parse_from([
            "rtq-send",
            "--loopback",
            "--source",
            "fixed",
            "--frame-size",
            "1KiB",
        ])
        .unwrap();
        assert!(matches!(
            a.source(),
            Ok(SourceSpec::Synthetic(
                SourceKind::Fixed {
                    frame_size: 1024,
                    ..
                },
                1
            ))
        ));
    }

    #[test]
    fn deadline_zero_is_refused() {
        let a = SendArgs::try_parse_from(["rtq-send", "--loopback", "--deadline", "0ms"]).unwrap();
        assert!(a.session_config().unwrap_err().contains("deadline"));
    }
}
